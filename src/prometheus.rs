//! Prometheus: install a recorder with this crate's buckets, and serve `/metrics`.
//!
//! **Where `/metrics` lives**: on a listener of its own, bound to loopback
//! ([`DEFAULT_LISTEN_ADDR`], `127.0.0.1:9464`), not on the app's public router. Whoever can
//! reach `/metrics` learns every route template, its traffic, errors and latencies; a separate
//! port is one the firewall, the network policy or the bind address keeps private.
//!
//! ```no_run
//! use axum::{routing::get, Router};
//! use tower_vitals::VitalsLayer;
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let metrics = tower_vitals::prometheus::install()?; // global recorder + buckets + upkeep
//!     // /metrics alone on 127.0.0.1:9464, for the life of the process.
//!     metrics.serve(tower_vitals::prometheus::DEFAULT_LISTEN_ADDR).await?.detach();
//!
//!     let app: Router = Router::new()
//!         .route("/users/{id}", get(|| async { "hello" }))
//!         .layer(VitalsLayer::new());
//!     let listener = tokio::net::TcpListener::bind("0.0.0.0:3000").await?;
//!     axum::serve(listener, app).await?;
//!     Ok(())
//! }
//! ```
//!
//! [`serve`](PrometheusMetrics::serve) takes the address as configuration gives it
//! (`"127.0.0.1:9464"`, a `String`, a `SocketAddr`); the [`MetricsServer`] it returns keeps the
//! listener open while it lives: keep it and [`shutdown`](MetricsServer::shutdown) it, or
//! [`detach`](MetricsServer::detach) it as above.
//!
//! When `/metrics` must share a router (an internal admin router, or behind your
//! authentication middleware), route [`service`](PrometheusMetrics::service) after the layer
//! so scrapes are not measured:
//!
//! ```
//! use axum::routing::{get, get_service};
//! use axum::Router;
//! use tower_vitals::VitalsLayer;
//!
//! # let metrics = tower_vitals::prometheus::PrometheusMetrics::from_handle(
//! #     tower_vitals::prometheus::builder().build_recorder().handle());
//! let admin: Router = Router::new()
//!     .route("/health", get(|| async { "ok" }))
//!     .layer(VitalsLayer::new())
//!     .route("/metrics", get_service(metrics.service())); // after the layer: not measured
//! # let _ = admin;
//! ```
//!
//! ## Names
//!
//! The recorder uses the exporter's recommended naming: dots become underscores, counters end
//! in `_total`, and the unit declared by the layer is appended. With the default prefix:
//!
//! | layer metric | Prometheus series |
//! |---|---|
//! | `http.server.requests` | `http_server_requests_total` |
//! | `http.server.request.duration` | `http_server_request_duration_seconds_bucket` / `_sum` / `_count` |
//! | `http.server.application_time` | `http_server_application_time_seconds_bucket` / … |
//! | `http.server.output_time` | `http_server_output_time_seconds_bucket` / … |
//! | `http.server.output_blocks` | `http_server_output_blocks_bucket` / … |
//! | `http.server.output_bytes` | `http_server_output_bytes_bucket` / … |
//! | `http.server.input_time` / `input_blocks` / `input_bytes` | `http_server_input_time_seconds_bucket`, `http_server_input_blocks_bucket`, `http_server_input_bytes_bucket` |
//! | `http.server.active_requests` | `http_server_active_requests` (gauge) |
//! | `http.server.utilization` | `http_server_utilization` (gauge) |
//!
//! Labels: `http_route`, `http_request_method`, `http_response_status_code`, `error_type`,
//! `rpc_grpc_status_code`. A unit suffix appears once the layer has described its metrics,
//! which it does before its first recording.
//!
//! `output_bytes` (and `output_blocks`) count what the response body handed to the server. For
//! a download the client aborts, that is what the server had taken when the body was dropped,
//! not what the client received: bytes still in socket buffers or in flight are counted too.
//!
//! ## Buckets
//!
//! Every time histogram of the layer gets [`SECONDS_BUCKETS`], every byte histogram
//! [`BYTES_BUCKETS`] and every frame-count histogram [`FRAMES_BUCKETS`], whatever the prefix
//! (matched by name suffix). They are real Prometheus histograms (`_bucket{le=…}`), never the
//! exporter's default summary, so `histogram_quantile` works across instances. The layouts were
//! chosen by measuring `histogram_quantile`'s error against exact quantiles (see each
//! constant); [`OTEL_SECONDS_BUCKETS`] keeps OpenTelemetry's advice for those who want it.
//!
//! ## Native histograms (feature `native-histograms`)
//!
//! `install_native` (or `with_native`) records into a classic and a native recorder and
//! serves both from one `/metrics`: protobuf with native histograms (exponential buckets,
//! `NATIVE_BUCKET_FACTOR`, one series per label set) to a scraper whose `Accept` asks for it
//! (Prometheus with `--enable-feature=native-histograms`), the classic text to any other. The
//! feature needs `protoc` at build time (metrics-exporter-prometheus' `protobuf` feature).

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{header, HeaderValue, Method, Request, Response, StatusCode};
pub use metrics_exporter_prometheus::{BuildError, PrometheusBuilder, PrometheusHandle};
use metrics_exporter_prometheus::{Matcher, PrometheusRecorder};

use crate::names::{self, Buckets};

pub use crate::install::InstallError;

/// Seconds buckets for every time histogram of the layer: `0`, then powers of two from
/// 2⁻¹⁸ s (3.8 µs) to 2⁵ s (32 s). 25 boundaries, 28 series per label set (with `+Inf`, `_sum`
/// and `_count`).
///
/// Chosen by measurement (`scripts/bucket-layouts.py`: `histogram_quantile`'s linear
/// interpolation against exact quantiles of 70 latency distributions from 5 µs to 30 s):
/// median error 8 %, worst 62 %, the fewest series among the layouts that stay within 2× of
/// the truth everywhere. A measured zero (a one-frame body's output time) lands in the `0`
/// bucket and reads as exactly 0; anything under 3.8 µs reads as under 3.8 µs. Powers of two
/// are exact in binary floating point, so the `le` labels never carry rounding noise.
pub const SECONDS_BUCKETS: &[f64] = &[
    0.0,
    0.000003814697265625, // 2^-18 s, 3.8 us
    0.00000762939453125,
    0.0000152587890625,
    0.000030517578125,
    0.00006103515625,
    0.0001220703125,
    0.000244140625,
    0.00048828125,
    0.0009765625, // 2^-10 s, 0.98 ms
    0.001953125,
    0.00390625,
    0.0078125,
    0.015625,
    0.03125,
    0.0625,
    0.125,
    0.25,
    0.5,
    1.0,
    2.0,
    4.0,
    8.0,
    16.0,
    32.0,
];

/// OpenTelemetry's advice for HTTP durations (5 ms to 10 s, 14 boundaries, 17 series per
/// label set), for services whose requests take milliseconds or more and that want the series
/// count low. Measured with `scripts/bucket-layouts.py`: a 40 µs handler reads as 2.5 ms
/// (60× off) and a zero as 2.5 ms, because everything under 5 ms is interpolated inside the
/// first bucket. Pass it with `builder().set_buckets_for_metric(..)` if you want it.
pub const OTEL_SECONDS_BUCKETS: &[f64] =
    &[0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0];

/// Byte buckets, for `output_bytes` and `input_bytes`: `0` (an empty body), then powers of four
/// from 16 B to 4 GiB. 16 boundaries, 19 series per label set. A 12-byte JSON body reads as
/// 8-16 B and a 1 GiB download as 0.6-1 GiB (median error 38 %, worst 171 % in
/// `scripts/bucket-layouts.py`); the dashboards' byte panels use exact means
/// (`_sum / _count`), and native histograms give percent precision.
pub const BYTES_BUCKETS: &[f64] = &[
    0.0,
    16.0,
    64.0,
    256.0,
    1024.0,
    4096.0,
    16384.0,
    65536.0,
    262144.0,
    1048576.0,
    4194304.0,
    16777216.0,
    67108864.0,
    268435456.0,
    1073741824.0,
    4294967296.0,
];

/// Frame-count buckets, for `output_blocks` and `input_blocks`: `0` (an empty body), then
/// powers of four from 1 to 4¹⁰ = 1 048 576 frames (a 1 GiB download in 1 KiB frames).
/// 12 boundaries, 15 series per label set.
pub const FRAMES_BUCKETS: &[f64] =
    &[0.0, 1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0];

/// The `Content-Type` of the text exposition format, as Prometheus expects it.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Where [`PrometheusMetrics::serve`] is usually pointed: `127.0.0.1:9464` (loopback only;
/// 9464 is the port OpenTelemetry's Prometheus exporter uses). Bind `0.0.0.0` only on purpose.
pub const DEFAULT_LISTEN_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9464);

/// How long the [`serve`](PrometheusMetrics::serve) listener waits for a request head (and
/// keeps an idle connection) before closing the connection. A scrape sends its head at once;
/// Prometheus reconnects when its kept-alive connection was closed between scrapes.
pub const HEADER_READ_TIMEOUT: Duration = crate::listener::HEADER_READ_TIMEOUT;

/// How often [`install`] runs the exporter's upkeep (draining histograms into buckets).
pub const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// The bucket values of a histogram family of the layer.
fn buckets(family: Buckets) -> &'static [f64] {
    match family {
        Buckets::Seconds => SECONDS_BUCKETS,
        Buckets::Bytes => BYTES_BUCKETS,
        Buckets::Frames => FRAMES_BUCKETS,
    }
}

/// A [`PrometheusBuilder`] with recommended naming (`_total`, unit suffixes) and this crate's
/// buckets for every time, byte and frame histogram of the layer, under any prefix.
///
/// Add to it (global labels, buckets for your own histograms, an idle timeout), then pass it to
/// [`install_with`], or build the recorder yourself (for a `Fanout`, say).
///
/// ```
/// use tower_vitals::prometheus;
/// let builder = prometheus::builder().add_global_label("service", "users");
/// let recorder = builder.build_recorder(); // not installed: for a Fanout, or a test
/// # let _ = recorder;
/// ```
pub fn builder() -> PrometheusBuilder {
    let mut builder = PrometheusBuilder::new().with_recommended_naming(true);
    for def in names::ALL {
        let Some(family) = def.buckets else { continue };
        // `.request.duration` → matches `<anything>_request_duration` once sanitised.
        let matcher = Matcher::Suffix(format!(".{}", def.suffix));
        builder = builder
            .set_buckets_for_metric(matcher, buckets(family))
            .expect("only an empty bucket list is refused; ours are non-empty constants");
    }
    builder
}

/// Installs a Prometheus recorder built by [`builder`] as the global recorder, and starts a
/// background thread that runs its upkeep every [`UPKEEP_INTERVAL`].
///
/// Needs no async runtime. Call it once, before the first request (the layer resolves its
/// handles through the recorder current at a label set's first request).
///
/// # Errors
/// [`InstallError::AlreadyInstalled`] if a global recorder is already installed;
/// [`InstallError::Upkeep`] if the upkeep thread could not be started.
pub fn install() -> Result<PrometheusMetrics, InstallError> {
    install_with(builder())
}

/// Like [`install`], with a builder of your own (start from [`builder`] to keep the buckets).
///
/// # Errors
/// As [`install`].
pub fn install_with(builder: PrometheusBuilder) -> Result<PrometheusMetrics, InstallError> {
    let recorder: PrometheusRecorder = builder.build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).map_err(|_| InstallError::AlreadyInstalled)?;
    let metrics = PrometheusMetrics::from_handle(handle);
    metrics.spawn_upkeep(UPKEEP_INTERVAL).map_err(InstallError::Upkeep)?;
    Ok(metrics)
}

/// A handle to the installed Prometheus recorder(s): renders the exposition and serves it.
/// Cheap to clone.
///
/// With native histograms ([`install_native`], feature `native-histograms`) it holds two
/// recorders' handles and answers each scrape in the format the scraper asks for: protobuf with
/// native histograms when its `Accept` names `application/vnd.google.protobuf` (Prometheus with
/// `--enable-feature=native-histograms`), the classic text with `le` buckets otherwise.
#[derive(Clone, Debug)]
pub struct PrometheusMetrics {
    handle: PrometheusHandle,
    #[cfg(feature = "native-histograms")]
    native: Option<PrometheusHandle>,
}

impl PrometheusMetrics {
    /// Wraps a handle of a recorder you built and installed yourself (e.g. from
    /// `builder().build_recorder()`). You then run its upkeep: call
    /// [`spawn_upkeep`](Self::spawn_upkeep) or rely on scrapes (each render drains too).
    pub fn from_handle(handle: PrometheusHandle) -> Self {
        PrometheusMetrics {
            handle,
            #[cfg(feature = "native-histograms")]
            native: None,
        }
    }

    /// The exposition text (Prometheus text format 0.0.4) of everything recorded so far, with
    /// classic `le` buckets.
    pub fn render(&self) -> String {
        self.handle.render()
    }

    /// The protobuf exposition (length-delimited `MetricFamily` messages) with native
    /// histograms, if this handle has a native recorder ([`install_native`]).
    #[cfg(feature = "native-histograms")]
    pub fn render_protobuf(&self) -> Option<Vec<u8>> {
        self.native.as_ref().map(PrometheusHandle::render_protobuf)
    }

    /// The exporter's own handle (of the classic recorder).
    pub fn handle(&self) -> &PrometheusHandle {
        &self.handle
    }

    /// Starts a background thread (`tower-vitals-prometheus-upkeep`) that runs the recorder's
    /// upkeep every `interval`, for the life of the process. [`install`] already did this.
    ///
    /// # Errors
    /// If the thread could not be spawned.
    pub fn spawn_upkeep(&self, interval: Duration) -> std::io::Result<()> {
        let metrics = self.clone();
        std::thread::Builder::new().name("tower-vitals-prometheus-upkeep".into()).spawn(
            move || loop {
                std::thread::sleep(interval);
                metrics.run_upkeep();
            },
        )?;
        Ok(())
    }

    fn run_upkeep(&self) {
        self.handle.run_upkeep();
        #[cfg(feature = "native-histograms")]
        if let Some(native) = &self.native {
            native.run_upkeep();
        }
    }

    /// A Tower service answering every request with the exposition (`200`; text with
    /// `Content-Type: text/plain; version=0.0.4; charset=utf-8`, or protobuf when native
    /// histograms are on and the request's `Accept` asks for it). Inside a tokio runtime it
    /// renders on the blocking pool, not on the async worker that serves the scrape.
    ///
    /// With axum, route it after the layer: `.route("/metrics", get_service(metrics.service()))`
    /// (`axum::routing::get_service`: `405` for methods other than `GET` and `HEAD`). But prefer
    /// [`serve`](Self::serve): see [where `/metrics` lives](crate::prometheus).
    pub fn service(&self) -> MetricsService {
        MetricsService { metrics: self.clone() }
    }

    /// Serves `/metrics` on its own listener at `addr` (HTTP/1.1, hyper over tokio), for as long
    /// as the returned [`MetricsServer`] lives (see there: keep it, or
    /// [`detach`](MetricsServer::detach) it). Other paths answer `404`, methods other than
    /// `GET`/`HEAD` `405`.
    ///
    /// `addr` is anything tokio can resolve: `"127.0.0.1:9464"`, a `String` read from
    /// configuration, `("localhost", 9464)`, a `SocketAddr` such as [`DEFAULT_LISTEN_ADDR`].
    /// Port 0 picks a free port ([`MetricsServer::local_addr`] tells which). Binding `0.0.0.0`
    /// exposes your metrics to the network: do it only on purpose.
    ///
    /// Must be called inside a tokio runtime.
    ///
    /// # Errors
    /// If `addr` is not an address (`"127.0.0.1"` without a port, a name that does not
    /// resolve) or cannot be bound (port in use, permission); the message names `addr`:
    /// `cannot listen for /metrics on "127.0.0.1": invalid socket address`.
    pub async fn serve(
        &self,
        addr: impl tokio::net::ToSocketAddrs + fmt::Debug,
    ) -> std::io::Result<MetricsServer> {
        server::serve(self.clone(), addr).await
    }

    /// A `200` response with the exposition in the format `accept` asks for (see the type's
    /// docs).
    fn exposition(&self, accept: Option<&HeaderValue>) -> Response<MetricsBody> {
        #[cfg(feature = "native-histograms")]
        if let Some(native) = self.native.as_ref().filter(|_| accept.is_some_and(asks_protobuf)) {
            let mut response = Response::new(MetricsBody::new(native.render_protobuf().into()));
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROTOBUF_CONTENT_TYPE));
            return response;
        }
        #[cfg(not(feature = "native-histograms"))]
        let _ = accept;
        let mut response = Response::new(MetricsBody::new(self.handle.render().into()));
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        response
    }
}

/// The `Content-Type` of the protobuf exposition (length-delimited `MetricFamily` messages), as
/// Prometheus asks for it with `--enable-feature=native-histograms`.
#[cfg(feature = "native-histograms")]
pub const PROTOBUF_CONTENT_TYPE: &str =
    "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited";

/// Whether an `Accept` header asks for the protobuf exposition: one of its media ranges is
/// `application/vnd.google.protobuf` with `proto=io.prometheus.client.MetricFamily` and a
/// non-zero `q`. Anything unreadable means "no" (the text format is the safe answer).
#[cfg(feature = "native-histograms")]
fn asks_protobuf(accept: &HeaderValue) -> bool {
    let Ok(accept) = accept.to_str() else { return false };
    accept.split(',').any(|range| {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("");
        if !media.eq_ignore_ascii_case("application/vnd.google.protobuf") {
            return false;
        }
        let mut proto_ok = false;
        let mut q_ok = true;
        for param in parts {
            let (k, v) = param.split_once('=').unwrap_or((param, ""));
            match k.trim().to_ascii_lowercase().as_str() {
                "proto" => proto_ok = v.trim() == "io.prometheus.client.MetricFamily",
                "q" => q_ok = v.trim().parse::<f32>().is_ok_and(|q| q > 0.0),
                _ => {}
            }
        }
        proto_ok && q_ok
    })
}

mod server;
pub use server::MetricsServer;

/// The body of a `/metrics` answer: the whole exposition (text or protobuf) in one frame.
#[derive(Debug, Default)]
pub struct MetricsBody {
    data: Option<bytes::Bytes>,
}

impl MetricsBody {
    pub(crate) fn new(data: bytes::Bytes) -> Self {
        MetricsBody { data: (!data.is_empty()).then_some(data) }
    }

    /// The bytes not yet sent (all of them until the body is polled).
    pub fn bytes(&self) -> &[u8] {
        self.data.as_deref().unwrap_or_default()
    }
}

impl http_body::Body for MetricsBody {
    type Data = bytes::Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, Infallible>>> {
        Poll::Ready(self.data.take().map(|d| Ok(http_body::Frame::data(d))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.data.as_ref().map_or(0, |d| d.len() as u64))
    }
}

/// Runs `render` where it cannot stall requests: on tokio's blocking pool inside a tokio runtime
/// (a registry of 10,000 series takes milliseconds to render; on an async worker that would
/// delay every request the worker serves meanwhile), on the calling thread outside one. `500`
/// if the rendering thread failed.
pub(crate) async fn off_workers<F>(render: F) -> Response<MetricsBody>
where
    F: FnOnce() -> Response<MetricsBody> + Send + 'static,
{
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => runtime.spawn_blocking(render).await.unwrap_or_else(|_| {
            let mut response = Response::new(MetricsBody::default());
            *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            response
        }),
        Err(_) => render(),
    }
}

/// The answer of the standalone listener: `/metrics` only, `GET` or `HEAD`.
pub(crate) fn answer<B>(
    metrics: &PrometheusMetrics,
    request: &Request<B>,
) -> Response<MetricsBody> {
    let status = if request.uri().path() != "/metrics" {
        StatusCode::NOT_FOUND
    } else if request.method() != Method::GET && request.method() != Method::HEAD {
        StatusCode::METHOD_NOT_ALLOWED
    } else {
        return metrics.exposition(request.headers().get(header::ACCEPT));
    };
    let mut response = Response::new(MetricsBody::default());
    *response.status_mut() = status;
    response
}

/// A Tower [`Service`](tower_service::Service) that answers any request with the Prometheus
/// exposition. Made by [`PrometheusMetrics::service`]; never fails.
#[derive(Clone, Debug)]
pub struct MetricsService {
    metrics: PrometheusMetrics,
}

impl<B> tower_service::Service<Request<B>> for MetricsService {
    type Response = Response<MetricsBody>;
    type Error = Infallible;
    /// Boxed: rendering runs on tokio's blocking pool (see [`PrometheusMetrics::service`]).
    type Future = Pin<Box<dyn Future<Output = Result<Response<MetricsBody>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let metrics = self.metrics.clone();
        let accept = request.headers().get(header::ACCEPT).cloned();
        Box::pin(async move { Ok(off_workers(move || metrics.exposition(accept.as_ref())).await) })
    }
}

#[cfg(feature = "native-histograms")]
mod native;
// Wired into the exposition once the crate's own recorder renders (Phase 2).
#[allow(dead_code)]
mod openmetrics;
#[cfg(feature = "native-histograms")]
pub use native::{
    install_native, native_builder, with_native, DualRecorder, NATIVE_BUCKET_FACTOR,
    NATIVE_MAX_BUCKETS, NATIVE_ZERO_THRESHOLD,
};

#[cfg(test)]
mod tests {
    use super::*;
    use metrics::{Label, Recorder};

    fn recorder() -> PrometheusRecorder {
        builder().build_recorder()
    }

    #[test]
    fn every_layer_histogram_gets_its_buckets_under_any_prefix() {
        let rec = recorder();
        let handle = rec.handle();
        metrics::with_local_recorder(&rec, || {
            let names = crate::names::MetricNames::new("my.app");
            names.describe();
            let labels = [Label::new("http.route", "/a")];
            for name in [
                &names.duration,
                &names.application_time,
                &names.output_time,
                &names.input_time,
                &names.output_bytes,
                &names.input_bytes,
                &names.output_blocks,
                &names.input_blocks,
            ] {
                metrics::histogram!(name.clone(), labels.iter()).record(0.02);
            }
            metrics::counter!(names.requests.clone(), labels.iter()).increment(1);
        });
        let text = handle.render();
        assert!(!text.contains("quantile="), "summary found:\n{text}");
        for series in [
            "my_app_request_duration_seconds_bucket{http_route=\"/a\",le=\"0.03125\"} 1",
            "my_app_request_duration_seconds_bucket{http_route=\"/a\",le=\"0.015625\"} 0",
            "my_app_application_time_seconds_bucket{http_route=\"/a\",le=\"32\"} 1",
            "my_app_output_time_seconds_bucket{http_route=\"/a\",le=\"0\"} 0",
            "my_app_input_time_seconds_bucket{http_route=\"/a\",le=\"0.03125\"} 1",
            "my_app_output_bytes_bucket{http_route=\"/a\",le=\"16\"} 1",
            "my_app_input_bytes_bucket{http_route=\"/a\",le=\"4294967296\"} 1",
            "my_app_output_blocks_bucket{http_route=\"/a\",le=\"1048576\"} 1",
            "my_app_input_blocks_bucket{http_route=\"/a\",le=\"1\"} 1",
            "my_app_requests_total{http_route=\"/a\"} 1",
        ] {
            assert!(text.contains(series), "missing {series}:\n{text}");
        }
        assert_eq!(text.matches("le=\"0.0625\"").count(), 4, "4 time histograms:\n{text}");
        assert_eq!(text.matches("le=\"4294967296\"").count(), 2, "2 byte histograms:\n{text}");
        assert_eq!(text.matches("le=\"1048576\"").count(), 4, "2 byte + 2 frame:\n{text}");
    }

    #[test]
    fn a_measured_zero_reads_as_zero() {
        let rec = recorder();
        let handle = rec.handle();
        metrics::with_local_recorder(&rec, || {
            let names = crate::MetricNames::new("z");
            names.describe();
            metrics::histogram!(names.output_time.clone()).record(0.0);
        });
        let text = handle.render();
        assert!(text.contains("z_output_time_seconds_bucket{le=\"0\"} 1"), "{text}");
    }

    #[test]
    fn buckets_match_the_design() {
        assert_eq!(SECONDS_BUCKETS.len(), 25);
        assert_eq!(OTEL_SECONDS_BUCKETS.len(), 14);
        for buckets in [SECONDS_BUCKETS, OTEL_SECONDS_BUCKETS, BYTES_BUCKETS, FRAMES_BUCKETS] {
            assert!(buckets.windows(2).all(|w| w[0] < w[1]));
        }
        // A measured zero has a bucket of its own; seconds resolve 3.8 us to 32 s by doubling.
        for buckets in [SECONDS_BUCKETS, BYTES_BUCKETS, FRAMES_BUCKETS] {
            assert_eq!(buckets[0], 0.0);
        }
        assert!(SECONDS_BUCKETS[1] < 4e-6 && *SECONDS_BUCKETS.last().unwrap_or(&0.0) >= 30.0);
        assert!(SECONDS_BUCKETS[1..].windows(2).all(|w| w[1] == 2.0 * w[0]));
        assert!(*BYTES_BUCKETS.last().unwrap_or(&0.0) >= (1u64 << 30) as f64);
        assert!(BYTES_BUCKETS[1] <= 16.0);
        assert!(DEFAULT_LISTEN_ADDR.ip().is_loopback());
    }

    #[test]
    fn service_answers_with_the_text_format_content_type() {
        let rec = recorder();
        rec.describe_counter("x.requests".into(), None, "help".into());
        let metrics = PrometheusMetrics::from_handle(rec.handle());
        let mut svc = metrics.service();
        let fut = tower_service::Service::call(&mut svc, Request::new(()));
        let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        let response = runtime.block_on(fut).unwrap_or_else(|never| match never {});
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[header::CONTENT_TYPE], CONTENT_TYPE);
        // Outside a runtime, the render runs inline: the first poll completes.
        let fut = tower_service::Service::call(&mut svc, Request::new(()));
        let response = futures_util::FutureExt::now_or_never(fut)
            .expect("renders inline without a runtime")
            .unwrap_or_else(|never| match never {});
        assert_eq!(response.headers()[header::CONTENT_TYPE], CONTENT_TYPE);
    }

    #[test]
    fn standalone_answer_is_metrics_only() {
        let metrics = PrometheusMetrics::from_handle(recorder().handle());
        let get = |path: &str, method: Method| {
            let req = Request::builder().uri(path).method(method).body(()).expect("request");
            answer(&metrics, &req).status()
        };
        assert_eq!(get("/metrics", Method::GET), StatusCode::OK);
        assert_eq!(get("/metrics", Method::HEAD), StatusCode::OK);
        assert_eq!(get("/other", Method::GET), StatusCode::NOT_FOUND);
        assert_eq!(get("/metrics", Method::POST), StatusCode::METHOD_NOT_ALLOWED);
    }
}
