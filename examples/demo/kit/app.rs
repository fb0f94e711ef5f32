//! The demo service: an axum app whose handlers show what the layer is for.

use std::io;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, get_service};
use axum::Router;
use futures_util::stream;
use tower_vitals::live::Live;
use tower_vitals::prometheus::PrometheusMetrics;
use tower_vitals::{Label, VitalsLayer};

/// Size of the downloadable file.
pub const FILE_SIZE: usize = 1 << 20;
/// Block size of the well-behaved download.
pub const BIG_BLOCK: usize = 8 * 1024;
/// Block size of the pathological download (the same file).
pub const SMALL_BLOCK: usize = 128;
/// The label `/users/{id}` sets on its responses: `hit` (even ids) or `miss` (odd ids), as a
/// cache would say (declared on the layer with `.label(CACHE)`).
pub const CACHE: &str = "cache";
/// Blocks sent by `/stream-error` before its stream fails.
pub const BLOCKS_BEFORE_ERROR: usize = 4;

/// The routes, as the layer names them (`http.route`).
pub mod routes {
    /// Fast JSON.
    pub const FAST: &str = "/api/fast";
    /// JSON after 20-120 ms of "work".
    pub const SLOW: &str = "/api/slow";
    /// A path parameter.
    pub const USER: &str = "/users/{id}";
    /// 1 MiB in 8 KiB blocks.
    pub const DOWNLOAD: &str = "/download";
    /// The same 1 MiB in 128-byte blocks.
    pub const DOWNLOAD_SMALL: &str = "/download/small-blocks";
    /// Always 500.
    pub const FAIL: &str = "/api/fail";
    /// A stream that fails half-way.
    pub const STREAM_ERROR: &str = "/stream-error";
    /// What the layer calls a request no route matched.
    pub const UNMATCHED: &str = tower_vitals::labels::UNMATCHED;
}

fn json(body: String) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn fast() -> Response {
    json(r#"{"status":"ok","items":[1,2,3]}"#.to_owned())
}

/// Deterministic pseudo-random "work" time per request, 20-120 ms.
async fn slow() -> Response {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let ms = 20 + (n.wrapping_mul(2_654_435_761) >> 7) % 100;
    tokio::time::sleep(Duration::from_millis(ms)).await;
    json(format!(r#"{{"status":"ok","worked_ms":{ms}}}"#))
}

async fn user(Path(id): Path<u64>) -> Response {
    let mut res = json(format!(r#"{{"id":{id},"name":"user-{id}"}}"#));
    let cached = if id % 2 == 0 { "hit" } else { "miss" };
    res.extensions_mut().insert(Label::new(CACHE, cached));
    res
}

async fn fail() -> Response {
    (StatusCode::INTERNAL_SERVER_ERROR, "database unavailable").into_response()
}

/// The file, cut in `block`-sized slices (no copy), as a stream body of unknown length.
fn blocks(file: &Bytes, block: usize) -> impl Iterator<Item = Bytes> + Send + 'static {
    let file = file.clone();
    (0..file.len()).step_by(block).map(move |at| file.slice(at..(at + block).min(file.len())))
}

fn download(file: &Bytes, block: usize) -> Response {
    let body = Body::from_stream(stream::iter(blocks(file, block).map(Ok::<_, io::Error>)));
    ([(header::CONTENT_TYPE, "application/octet-stream")], body).into_response()
}

fn stream_error(file: &Bytes) -> Response {
    let good = blocks(file, BIG_BLOCK).take(BLOCKS_BEFORE_ERROR).map(Ok);
    let bad = std::iter::once(Err(io::Error::other("storage read failed half-way")));
    Body::from_stream(stream::iter(good.chain(bad))).into_response()
}

/// The app: every route wrapped by `layer`, and `/metrics`, `/vitals` and `/vitals.json` added
/// after it (not measured).
///
/// They share the app's router here because the demo listens on 127.0.0.1 only. A service
/// reachable from outside serves them on a listener of their own instead
/// (`Live::serve` / `PrometheusMetrics::serve`, see the README).
pub fn router(layer: VitalsLayer, metrics: &PrometheusMetrics, live: &Live) -> Router {
    routes()
        .layer(layer)
        .route("/metrics", get_service(metrics.service()))
        .route("/vitals", get_service(live.service()))
        .route("/vitals.json", get_service(live.service()))
}

/// The app's routes without a layer and without `/metrics` or `/vitals` (also served bare by
/// `examples/bench_server.rs`, to measure the layer on this app).
pub fn routes() -> Router {
    let file: Bytes = (0..FILE_SIZE).map(|i| b"tower-vitals "[i % 13]).collect::<Vec<u8>>().into();
    let (f1, f2, f3) = (file.clone(), file.clone(), file);
    Router::new()
        .route(routes::FAST, get(fast))
        .route(routes::SLOW, get(slow))
        .route(routes::USER, get(user))
        .route(routes::DOWNLOAD, get(move || async move { download(&f1, BIG_BLOCK) }))
        .route(routes::DOWNLOAD_SMALL, get(move || async move { download(&f2, SMALL_BLOCK) }))
        .route(routes::FAIL, get(fail))
        .route(routes::STREAM_ERROR, get(move || async move { stream_error(&f3) }))
}
