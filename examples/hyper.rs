//! A plain hyper 1.x service (no router), wrapped by `VitalsLayer`, naming its routes by hand
//! with `RouteName`, leaving load-balancer probes (`/ping`) out with `skip_if`; some traffic
//! over 127.0.0.1, then what the layer recorded.
//!
//! ```sh
//! cargo run --example hyper
//! ```

#[path = "support/print.rs"]
mod print;

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use metrics_util::debugging::DebuggingRecorder;
use tower::ServiceBuilder;
use tower_vitals::{RouteName, VitalsLayer};

/// Names the route (a template, never the raw path) before the layer sees the request.
fn name_route(mut req: Request<Incoming>) -> Request<Incoming> {
    let path = req.uri().path();
    let route = if path == "/" {
        "/"
    } else if path.starts_with("/items/") {
        "/items/{id}"
    } else {
        return req; // no name: recorded as `unmatched`
    };
    req.extensions_mut().insert(RouteName::new(route));
    req
}

async fn handle(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let res = match req.uri().path() {
        "/" => Response::new(Full::from("home")),
        "/ping" => Response::new(Full::from("pong")),
        p if p.starts_with("/items/") => Response::new(Full::from(format!("item {}", &p[7..]))),
        _ => {
            let mut res = Response::new(Full::from("not found"));
            *res.status_mut() = StatusCode::NOT_FOUND;
            res
        }
    };
    Ok(res)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install()?;

    // Probes are not traffic: a predicate over the request head leaves them out.
    let layer = VitalsLayer::builder()
        .skip_if(|req: &http::request::Parts| req.uri.path() == "/ping")
        .build();
    let service = ServiceBuilder::new()
        .map_request(name_route)
        .layer(layer.clone())
        .service(tower::service_fn(handle));

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let svc = TowerToHyperService::new(service.clone());
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    println!("serving on http://{addr}; sending traffic ...");

    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let paths = ["/", "/ping", "/items/1", "/items/2", "/items/3", "/nope", "/ping", "/"];
    for path in paths {
        let uri = format!("http://{addr}{path}").parse()?;
        let res = tokio::time::timeout(Duration::from_secs(5), client.get(uri)).await??;
        res.into_body().collect().await?;
    }
    // Wait (bounded) until every response has finished and been recorded.
    for _ in 0..200 {
        if layer.active_requests() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!(
        "sent {} requests (2 of them /ping probes: skipped, not below); recorded:",
        paths.len()
    );
    print::print_snapshot(&snapshotter);
    Ok(())
}
