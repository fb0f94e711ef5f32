//! A hyper server on 127.0.0.1 for `scripts/bench.sh`'s end-to-end pass (not a usage example).
//!
//! ```text
//! cargo run --release --example bench_server -- <variant> [max-seconds]
//! ```
//! `variant`: `bare` (no layer), `vitals` (`VitalsLayer` + the Prometheus recorder, global, with
//! histogram buckets and upkeep every 5 s), `axum_prometheus` (axum-prometheus's layer and its
//! Prometheus recorder), `floor` (the hand-written floor layer of benches/floor + Prometheus).
//!
//! Routes (an axum `Router`, the layer on every route): `GET /small` answers 12 bytes in one
//! frame, `GET /stream` 1000 frames of 128 bytes. A single-threaded tokio runtime serves
//! HTTP/1.1 connections with hyper; the server prints `listening on 127.0.0.1:PORT` and exits
//! on its own after `max-seconds` (default 120), so a crashed script leaves nothing behind.

#[path = "../benches/common/mod.rs"]
mod common;
#[path = "../benches/floor/mod.rs"]
mod floor;

use std::io::Write;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use hyper_util::rt::TokioIo;
use tower::Service;
use tower_vitals::VitalsLayer;

fn app(variant: &str) -> Result<Router, String> {
    let router = Router::new()
        .route(
            "/small",
            get(|| async { axum::body::Body::new(common::Frames::new(common::SMALL)) }),
        )
        .route(
            "/stream",
            get(|| async { axum::body::Body::new(common::Frames::new(common::STREAM)) }),
        );
    let prometheus = || {
        let recorder = common::prometheus_builder().build_recorder();
        let handle = recorder.handle();
        metrics::set_global_recorder(recorder).map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                handle.run_upkeep();
            }
        });
        Ok::<_, String>(())
    };
    // Each layer is built after its recorder is installed.
    let router = match variant {
        "bare" => router,
        "vitals" => {
            prometheus()?;
            router.layer(VitalsLayer::new())
        }
        "axum_prometheus" => {
            prometheus()?;
            router.layer(axum_prometheus::PrometheusMetricLayer::new())
        }
        "floor" => {
            prometheus()?;
            router.layer(floor::FloorLayer::new("/small"))
        }
        other => return Err(format!("unknown variant {other:?}")),
    };
    Ok(router.with_state(()))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let variant = args.next().unwrap_or_else(|| "bare".to_owned());
    let max_secs: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(120);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        let app = app(&variant)?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("listening on {}", listener.local_addr()?);
        std::io::stdout().flush()?;
        let serve = async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let _ = stream.set_nodelay(true);
                let app = app.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| app.clone().call(req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(max_secs), serve).await;
        Ok::<_, Box<dyn std::error::Error>>(())
    })
}
