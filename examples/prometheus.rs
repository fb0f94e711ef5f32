//! An axum app with `VitalsLayer` and Prometheus: `/metrics` on a listener of its own
//! (loopback), never on the app's router; some traffic, then the exposition text it serves.
//!
//! ```sh
//! cargo run --example prometheus            # traffic, prints the http_server_* series, exits
//! cargo run --example prometheus -- --serve # keeps serving until Ctrl-C:
//!                                           #   the app on 127.0.0.1:3000,
//!                                           #   /metrics alone on 127.0.0.1:9464
//! ```
//! Scrape it with Prometheus (`targets: ['127.0.0.1:9464']`), or lint it:
//! `curl -s 127.0.0.1:9464/metrics | promtool check metrics`.

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Path;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower_vitals::prometheus::{self, DEFAULT_LISTEN_ADDR};
use tower_vitals::VitalsLayer;

async fn user(Path(id): Path<u32>) -> String {
    format!("{{\"id\":{id}}}")
}

/// 16 blocks of 4 KiB, streamed.
async fn stream() -> Body {
    let blocks = (0..16).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![b's'; 4096])));
    Body::from_stream(futures_util::stream::iter(blocks))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let serve = std::env::args().any(|a| a == "--serve");
    // Global recorder with the crate's buckets, and its upkeep thread: before the first request.
    let metrics = prometheus::install()?;

    let layer = VitalsLayer::new();
    let app: Router = Router::new()
        .route("/users/{id}", get(user))
        .route("/stream", get(stream))
        .layer(layer.clone());

    let (app_addr, own_addr) = if serve {
        (SocketAddr::from(([127, 0, 0, 1], 3000)), DEFAULT_LISTEN_ADDR)
    } else {
        (SocketAddr::from(([127, 0, 0, 1], 0)), SocketAddr::from(([127, 0, 0, 1], 0)))
    };
    let listener = tokio::net::TcpListener::bind(app_addr).await?;
    let app_addr = listener.local_addr()?;
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    // `/metrics` alone, on its own loopback listener (keep it off the public port). It listens
    // while `metrics_server` lives: shut down below (or `.detach()` to keep it for good).
    let metrics_server = metrics.serve(own_addr).await?;
    println!(
        "app on http://{app_addr}; /metrics alone on http://{}/metrics",
        metrics_server.local_addr()
    );

    let client = Client::builder(TokioExecutor::new()).build_http::<Body>();
    for i in 0..30u32 {
        let path = if i % 3 == 0 { "/stream".to_owned() } else { format!("/users/{i}") };
        let res = tokio::time::timeout(
            Duration::from_secs(5),
            client.get(format!("http://{app_addr}{path}").parse()?),
        )
        .await??;
        res.into_body().collect().await?;
    }
    for _ in 0..200 {
        if layer.active_requests() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    if serve {
        println!("sent 30 requests; serving until Ctrl-C");
        tokio::signal::ctrl_c().await?;
    } else {
        let url = format!("http://{}/metrics", metrics_server.local_addr());
        let res = client.get(url.parse()?).await?;
        let content_type = res.headers().get(http::header::CONTENT_TYPE).cloned();
        let text = String::from_utf8(res.into_body().collect().await?.to_bytes().to_vec())?;
        println!("GET {url} -> Content-Type: {content_type:?}");
        // The TYPE lines, and the series of one route (the full text has every bucket).
        for line in text.lines() {
            let shown = line.starts_with("# TYPE")
                || (line.contains("/users/{id}") && !line.contains("_bucket"))
                || line.contains("le=\"0.005\"") && line.contains("/users/{id}");
            if shown {
                println!("{line}");
            }
        }
        println!("({} lines in all)", text.lines().count());
    }
    metrics_server.shutdown().await;
    server.abort();
    Ok(())
}
