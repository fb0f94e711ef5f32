//! An axum app wrapped by `VitalsLayer`: a few routes (one streaming), some traffic over
//! 127.0.0.1, then what the layer recorded. It also shows the layer's options users ask for
//! most: a health route left out (`skip_routes`), a label from the request (`api.version`, from
//! a header) and one set by the handler (`cache`: `hit` or `miss`).
//!
//! ```sh
//! cargo run --example axum
//! ```
//!
//! Metrics go to metrics-util's `DebuggingRecorder` here so the example prints them itself; in
//! production install a real recorder (see the `prometheus`, `statsd` and `dogstatsd` examples).

#[path = "support/print.rs"]
mod print;

use std::time::Duration;

use axum::body::Body;
use axum::extract::Path;
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use metrics_util::debugging::DebuggingRecorder;
use tower_vitals::{Label, VitalsLayer};

/// Says whether the answer came from a cache, as a label the layer records.
async fn user(Path(id): Path<u32>) -> axum::response::Response {
    let cached = id % 3 != 0;
    let mut res = axum::response::Response::new(Body::from(format!(
        "{{\"id\":{id},\"name\":\"user-{id}\"}}"
    )));
    res.extensions_mut().insert(Label::new("cache", if cached { "hit" } else { "miss" }));
    res
}

async fn healthz() -> &'static str {
    "ok"
}

/// 64 blocks of 1 KiB, streamed.
async fn stream() -> Body {
    let blocks = (0..64).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![b's'; 1024])));
    Body::from_stream(futures_util::stream::iter(blocks))
}

async fn echo(body: Bytes) -> Bytes {
    body
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Set the recorder before the layer records anything (handles are resolved on first use).
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install()?;

    let layer = VitalsLayer::builder()
        // Health checks are not traffic: left out, never counted.
        .skip_routes(["/healthz"])
        // A label from the request head (no allocation: a borrowed str), capped at 32 values.
        .label_from_request("api.version", |req: &http::request::Parts| {
            req.headers.get("x-api-version")?.to_str().ok()
        })?
        // A label handlers set on their response: `Label::new("cache", "hit")`.
        .label("cache")?
        .build();
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/users/{id}", get(user))
        .route("/stream", get(stream))
        .route("/echo", post(echo))
        .layer(layer.clone());

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    println!("serving on http://{addr}; sending traffic ...");

    let client = Client::builder(TokioExecutor::new()).build_http::<Body>();
    let mut requests = 0;
    for i in 0..20u32 {
        let (method, path, body) = match i % 4 {
            0 | 1 => ("GET", format!("/users/{i}"), Body::empty()),
            2 => ("GET", "/stream".to_owned(), Body::empty()),
            _ => ("POST", "/echo".to_owned(), Body::from("ping")),
        };
        let req = http::Request::builder()
            .method(method)
            .uri(format!("http://{addr}{path}"))
            .header("x-api-version", if i < 10 { "1" } else { "2" })
            .body(body)?;
        let res = tokio::time::timeout(Duration::from_secs(5), client.request(req)).await??;
        res.into_body().collect().await?;
        requests += 1;
    }
    // Health checks: answered, but left out of the metrics.
    let mut health_checks = 0;
    for _ in 0..5 {
        let res = client.get(format!("http://{addr}/healthz").parse()?).await?;
        res.into_body().collect().await?;
        health_checks += 1;
    }
    // A path no route matches: recorded with http.route=unmatched, never the raw path.
    let res = client.get(format!("http://{addr}/no/such/{}", 12345).parse()?).await?;
    res.into_body().collect().await?;
    requests += 1;

    // Responses are recorded when their bodies end: wait (bounded) until none is in flight.
    for _ in 0..200 {
        if layer.active_requests() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!(
        "sent {requests} requests and {health_checks} health checks (skipped: no /healthz below); \
         recorded:"
    );
    print::print_snapshot(&snapshotter);
    server.abort();
    Ok(())
}
