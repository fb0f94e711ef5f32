//! A hyper server on 127.0.0.1 for `scripts/bench.sh`'s end-to-end pass and
//! `scripts/bench-server-callgrind.sh`'s profile (not a usage example).
//!
//! ```text
//! cargo run --release --example bench_server -- <variant> [max-seconds]
//! ```
//! `variant` is `[plain_|app_]<layer>`, `layer` one of: `bare` (no layer), `vitals`
//! (`VitalsLayer` + metrics-exporter-prometheus's recorder, global, with histogram buckets and
//! upkeep every 5 s, or `BENCH_UPKEEP_SECS`), `vitals_recorder` (`VitalsLayer` + the crate's own
//! recorder, `tower_vitals::prometheus`, global, rendered as text and protobuf every 5 s, or
//! `BENCH_UPKEEP_SECS`, as scrapes would), `axum_prometheus` (axum-prometheus's layer and its
//! Prometheus recorder), `floor` / `floor_recorder` (the hand-written floor layer of
//! benches/floor + metrics-exporter-prometheus / + the crate's recorder).
//!
//! Contexts:
//! - no prefix: an axum `Router`, the layer on every route: `GET /small` answers 12 bytes in one
//!   frame, `GET /stream` 1000 frames of 128 bytes;
//! - `plain_`: the same two answers from a `tower::service_fn` that looks at the path itself,
//!   the layer directly around it (no `Router`, so no `MatchedPath`);
//! - `app_`: the demo's app (`examples/demo/kit/app.rs`: JSON handlers, a path parameter, a
//!   500, a streamed 1 MiB download), the layer on all its routes.
//!
//! A single-threaded tokio runtime serves HTTP/1.1 connections with hyper; the server prints
//! `listening on 127.0.0.1:PORT` and exits on its own after `max-seconds` (default 120), so a
//! crashed script leaves nothing behind.

#[path = "../benches/common/mod.rs"]
mod common;
#[path = "demo/kit/app.rs"]
#[allow(dead_code)] // the demo's route names and `router` are not used here
mod demo_app;
#[path = "../benches/floor/mod.rs"]
mod floor;

use std::convert::Infallible;
use std::future::Ready;
use std::io::Write;
use std::time::Duration;

use axum::body::Body;
use axum::routing::get;
use axum::Router;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tower::{Layer, Service};
use tower_vitals::VitalsLayer;

/// Seconds between two upkeeps (metrics-exporter-prometheus) or two scrapes (the crate's
/// recorder). BENCH_UPKEEP_SECS: scripts/bench-server-callgrind.sh sets it past its run, so that
/// no upkeep (thousands of atomic operations at once) falls into a counted window.
fn upkeep_secs() -> u64 {
    std::env::var("BENCH_UPKEEP_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(5)
}

/// metrics-exporter-prometheus as the global recorder, with its upkeep task.
fn prometheus() -> Result<(), String> {
    let recorder = common::prometheus_builder().build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).map_err(|e| e.to_string())?;
    let every = upkeep_secs();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(every)).await;
            handle.run_upkeep();
        }
    });
    Ok(())
}

/// The crate's own recorder as the global recorder (it needs no upkeep), rendered in both
/// formats on the same schedule, as a scraper would ask.
fn recorder() -> Result<(), String> {
    let metrics = tower_vitals::prometheus::install().map_err(|e| e.to_string())?;
    let every = upkeep_secs();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(every)).await;
            let _ = metrics.render();
            let _ = metrics.render_protobuf();
        }
    });
    Ok(())
}

fn frames(path: &str) -> Body {
    let shape = if path == "/stream" { common::STREAM } else { common::SMALL };
    Body::new(common::Frames::new(shape))
}

type Answer = fn(Request<Incoming>) -> Ready<Result<Response<Body>, Infallible>>;

/// The plain context's service: answers by path, no router.
fn plain() -> tower::util::ServiceFn<Answer> {
    fn answer(req: Request<Incoming>) -> Ready<Result<Response<Body>, Infallible>> {
        std::future::ready(Ok(Response::new(frames(req.uri().path()))))
    }
    tower::service_fn(answer as Answer)
}

/// Serves `svc` on `listener` (HTTP/1.1, one task per connection, the service cloned per
/// request as `axum::serve` does) until `max_secs` have passed.
async fn serve<S, B>(listener: TcpListener, svc: S, max_secs: u64)
where
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let serve = async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let _ = stream.set_nodelay(true);
            let svc = svc.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| svc.clone().call(req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(max_secs), serve).await;
}

async fn run(variant: &str, max_secs: u64) -> Result<(), String> {
    let (context, layer) = match variant.split_once('_') {
        Some((c @ ("plain" | "app"), l)) => (c, l),
        _ => ("axum", variant),
    };
    let router = || match context {
        "app" => demo_app::routes(),
        _ => Router::new()
            .route("/small", get(|| async { frames("/small") }))
            .route("/stream", get(|| async { frames("/stream") })),
    };
    if !matches!(
        layer,
        "bare" | "vitals" | "vitals_recorder" | "axum_prometheus" | "floor" | "floor_recorder"
    ) || (context == "plain" && layer == "axum_prometheus")
    {
        return Err(format!("unknown variant {variant:?}"));
    }
    // Each layer is built after its recorder is installed.
    match layer {
        "bare" => {}
        "vitals_recorder" | "floor_recorder" => recorder()?,
        _ => prometheus()?,
    }
    let layer = layer.strip_suffix("_recorder").unwrap_or(layer);
    let listener = TcpListener::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
    println!("listening on {}", listener.local_addr().map_err(|e| e.to_string())?);
    std::io::stdout().flush().map_err(|e| e.to_string())?;
    let s = max_secs;
    match (context, layer) {
        ("plain", "bare") => serve(listener, plain(), s).await,
        ("plain", "vitals") => serve(listener, VitalsLayer::new().layer(plain()), s).await,
        ("plain", _) => serve(listener, floor::FloorLayer::new("/small").layer(plain()), s).await,
        (_, "bare") => serve(listener, router().with_state(()), s).await,
        (_, "vitals") => {
            serve(listener, router().layer(VitalsLayer::new()).with_state(()), s).await
        }
        (_, "axum_prometheus") => {
            let layer = axum_prometheus::PrometheusMetricLayer::new();
            serve(listener, router().layer(layer).with_state(()), s).await
        }
        _ => {
            let layer = floor::FloorLayer::new("/small");
            serve(listener, router().layer(layer).with_state(()), s).await
        }
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let variant = args.next().unwrap_or_else(|| "bare".to_owned());
    let max_secs: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(120);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(run(&variant, max_secs))?;
    Ok(())
}
