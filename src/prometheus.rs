//! Prometheus: the crate's own recorder, and `/metrics` for every kind of scraper.
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
//!     let metrics = tower_vitals::prometheus::install()?; // the global recorder
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
//! Prometheus' recommended naming, the same in the text and the protobuf exposition: dots
//! become underscores (in label keys too), counters end in `_total`, and the unit declared by
//! the layer is appended. With the default prefix:
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
//! By default, `request.duration` and `application_time` get [`DURATION_BUCKETS`] (powers of
//! two, 15 µs to 32 s), so `histogram_quantile` reads their percentiles within the measured
//! error; `output_time`, `output_bytes`, `output_blocks` and the `input_` histograms get only
//! `+Inf`, `_sum` and `_count` (exact means, `_sum / _count`). With the `requests` counter,
//! that is 60 classic series per response label set. They are real Prometheus histograms
//! (`_bucket{le=…}`), never summaries, so `histogram_quantile` works across instances.
//!
//! | configuration | series per response label set |
//! |---|---|
//! | classic, default | 60 |
//! | classic, [`PrometheusBuilder::all_classic_buckets`] | 119 |
//! | native histograms (protobuf) | 6 |
//!
//! [`builder`]`().all_classic_buckets()` puts [`SECONDS_BUCKETS`] on every time histogram,
//! [`BYTES_BUCKETS`] on every byte histogram and [`FRAMES_BUCKETS`] on every frame-count
//! histogram, whatever the prefix (matched by name suffix). Native histograms make the same
//! data about 20× smaller, with finer buckets: the better choice where Prometheus runs with
//! `--enable-feature=native-histograms`. The layouts were chosen by measuring
//! `histogram_quantile`'s error against exact quantiles (see each constant);
//! [`OTEL_SECONDS_BUCKETS`] keeps OpenTelemetry's advice for those who want it.
//!
//! ## Native histograms
//!
//! Every histogram is also a native histogram (Prometheus schema 3: buckets 2^(1/8) ≈ 9 %
//! wide, one series per label set), from the same record. One `/metrics` answers each scraper
//! in the format it asks for: protobuf, with the native buckets and the classic ones in the
//! same message, to a scraper whose `Accept` names
//! `application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily` (Prometheus
//! started with `--enable-feature=native-histograms`), the text format 0.0.4 with classic `le`
//! buckets to any other. Nothing to enable, no `protoc` at build time: the protobuf types are
//! generated once and shipped with the crate.
//!
//! Native buckets cover a fixed range per family: seconds from 2⁻³⁰ s (0.93 ns, the zero
//! threshold: anything at or under it, a measured zero included, is in the zero bucket) to
//! 2¹² s (68 min); bytes and frames from 0.5 (so 0 is in the zero bucket) to 2⁴⁰ bytes and
//! 2³² frames; other histograms 2⁻³⁰ to 2⁴². A sample above the range counts in the top
//! bucket (its `_sum` stays exact, and the classic `+Inf` bucket holds it as always).
//!
//! ## How it records
//!
//! A sample is one increment of its native bucket (the index comes from the bits of the
//! `f64`: exponent and mantissa, no search) and one add to an exact sum (integer nanoseconds
//! for seconds, whole units for bytes and frames), on cache lines of the recording thread's
//! own stripe (8 stripes per series; a thread picks its stripe once). No lock, no allocation,
//! no stored sample: memory per series depends on how many threads record it and how many
//! native buckets received a sample, never on the request rate. The classic buckets are sums
//! of native buckets, added up at scrape time; `_count` is the sum of the buckets, so
//! `_count` equals the `+Inf` bucket in every scrape, and a sample recorded before a scrape
//! reads is in it. Histograms whose classic bounds are not powers of two (set with
//! [`PrometheusBuilder::set_buckets_for_metric`]) keep classic counters beside the native ones.
//!
//! ## metrics-exporter-prometheus
//!
//! The layer talks only to the `metrics` facade, so a service that already runs
//! metrics-exporter-prometheus keeps it: install that recorder instead and the layer records
//! into it (give its histograms buckets, for example [`SECONDS_BUCKETS`], or they become
//! summaries). This recorder is the one built for the layer's metric set.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{header, HeaderMap, HeaderValue, Request, Response};

use crate::names::Buckets;

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

/// The default classic bounds of `request.duration` and `application_time`: powers of two from
/// 2⁻¹⁶ s (15 µs) to 2⁵ s (32 s). 22 boundaries, 25 series per label set (with `+Inf`, `_sum`
/// and `_count`).
///
/// [`SECONDS_BUCKETS`] without the `0` bucket (no request takes no time) and without the two
/// bounds under 15 µs: `scripts/bucket-layouts.py` measures the same `histogram_quantile`
/// error as with them (median 8 %, worst 62 %, counting anything under 0.05 ms as 0.05 ms);
/// a request under 15 µs reads as under 15 µs. Exact in binary floating point, like
/// [`SECONDS_BUCKETS`], and derived from the native buckets at scrape time.
pub const DURATION_BUCKETS: &[f64] = SECONDS_BUCKETS.split_at(3).1;

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

/// The default classic bounds of a histogram of the layer: [`DURATION_BUCKETS`] for
/// `request.duration` and `application_time`, none for the others (`+Inf`, `_sum` and
/// `_count`: exact means; native histograms keep every bucket).
fn budget_buckets(def: &crate::names::MetricDef) -> &'static [f64] {
    use crate::names::{APPLICATION_TIME, DURATION};
    if def.suffix == DURATION.suffix || def.suffix == APPLICATION_TIME.suffix {
        DURATION_BUCKETS
    } else {
        &[]
    }
}

/// The bucket values of a histogram family of the layer (with
/// [`PrometheusBuilder::all_classic_buckets`]).
fn buckets(family: Buckets) -> &'static [f64] {
    match family {
        Buckets::Seconds => SECONDS_BUCKETS,
        Buckets::Bytes => BYTES_BUCKETS,
        Buckets::Frames => FRAMES_BUCKETS,
    }
}

/// A [`PrometheusBuilder`] with this crate's buckets for every time, byte and frame histogram
/// of the layer, under any prefix, and recommended naming (`_total`, unit suffixes).
///
/// Add to it (global labels, buckets for your own histograms), then pass it to
/// [`install_with`], or build the recorder yourself (for a `Fanout`, say).
///
/// ```
/// use tower_vitals::prometheus;
/// let builder = prometheus::builder().add_global_label("service", "users");
/// let recorder = builder.build_recorder(); // not installed: for a Fanout, or a test
/// # let _ = recorder;
/// ```
pub fn builder() -> PrometheusBuilder {
    PrometheusBuilder::new()
}

/// Installs a recorder built by [`builder`] as the global recorder.
///
/// Needs no async runtime and starts no thread. Call it once, before the first request (the
/// layer resolves its handles through the recorder current at a label set's first request).
///
/// # Errors
/// [`InstallError::AlreadyInstalled`] if a global recorder is already installed.
pub fn install() -> Result<PrometheusMetrics, InstallError> {
    install_with(builder())
}

/// Like [`install`], with a builder of your own (start from [`builder`] to keep the buckets).
///
/// # Errors
/// As [`install`].
pub fn install_with(builder: PrometheusBuilder) -> Result<PrometheusMetrics, InstallError> {
    let recorder = builder.build_recorder();
    let metrics = PrometheusMetrics::from_handle(recorder.handle());
    metrics::set_global_recorder(recorder).map_err(|_| InstallError::AlreadyInstalled)?;
    Ok(metrics)
}

/// A handle to the installed recorder: renders the exposition and serves it. Cheap to clone.
///
/// Each scrape gets the format it asks for: protobuf with native histograms (and the classic
/// buckets) when its `Accept` names `application/vnd.google.protobuf` with
/// `proto=io.prometheus.client.MetricFamily` (Prometheus with
/// `--enable-feature=native-histograms`), the text format with classic `le` buckets otherwise.
#[derive(Clone, Debug)]
pub struct PrometheusMetrics {
    handle: PrometheusHandle,
}

impl PrometheusMetrics {
    /// Wraps the handle of a recorder you built and installed yourself (from
    /// `builder().build_recorder()`, say inside a `Fanout`).
    pub fn from_handle(handle: PrometheusHandle) -> Self {
        PrometheusMetrics { handle }
    }

    /// The exposition text (Prometheus text format 0.0.4) of everything recorded so far, with
    /// classic `le` buckets.
    pub fn render(&self) -> String {
        self.handle.render()
    }

    /// The OpenMetrics text exposition ([`OPENMETRICS_CONTENT_TYPE`]): the samples of
    /// [`render`](Self::render) with the exemplars of a layer with
    /// [`exemplars`](crate::VitalsLayerBuilder::exemplars) on (`# {trace_id="…"} value timestamp`
    /// after a bucket or counter sample), ending with `# EOF`.
    pub fn render_openmetrics(&self) -> String {
        self.handle.render_openmetrics()
    }

    /// The protobuf exposition (length-delimited `io.prometheus.client.MetricFamily`
    /// messages): native histograms with their classic buckets, counters and gauges.
    pub fn render_protobuf(&self) -> Vec<u8> {
        self.handle.render_protobuf()
    }

    /// The recorder's handle.
    pub fn handle(&self) -> &PrometheusHandle {
        &self.handle
    }

    /// A Tower service answering every request with the exposition (`200`; text with
    /// `Content-Type: text/plain; version=0.0.4; charset=utf-8`, protobuf or OpenMetrics when
    /// the request's `Accept` asks for it), gzip-compressed when its `Accept-Encoding` asks.
    ///
    /// Bounded as the private listener's `/metrics` is: inside a tokio runtime it renders on the
    /// blocking pool, not on the async worker that serves the scrape, one render at a time;
    /// scrapes that come together, or within 1 s of a render, share its body (and its gzip
    /// body), so a hundred concurrent scrapes cost one render and hold one copy. The service and
    /// its clones share one exposition; each call of `service()` makes a new one. Outside a
    /// tokio runtime each request renders on the calling thread, uncompressed.
    ///
    /// With axum, route it after the layer: `.route("/metrics", get_service(metrics.service()))`
    /// (`axum::routing::get_service`: `405` for methods other than `GET` and `HEAD`). But prefer
    /// [`serve`](Self::serve): see [where `/metrics` lives](crate::prometheus).
    pub fn service(&self) -> MetricsService {
        let share_for = crate::ListenerConfig::default().get_share_render_for();
        MetricsService {
            metrics: self.clone(),
            endpoint: MetricsEndpoint::new(self.clone(), share_for),
        }
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
        let openmetrics = || {
            let accept = accept.and_then(|a| a.to_str().ok());
            openmetrics::negotiate(accept, false) == openmetrics::Format::OpenMetrics
        };
        let (body, content_type) = if accept.is_some_and(asks_protobuf) {
            (self.render_protobuf().into(), PROTOBUF_CONTENT_TYPE)
        } else if openmetrics() {
            (self.render_openmetrics().into(), OPENMETRICS_CONTENT_TYPE)
        } else {
            (self.render().into(), CONTENT_TYPE)
        };
        let mut response = Response::new(MetricsBody::new(body));
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        response
    }
}

/// The `Content-Type` of the OpenMetrics text exposition, the first choice of a Prometheus
/// without native histograms (it carries exemplars).
pub const OPENMETRICS_CONTENT_TYPE: &str = openmetrics::CONTENT_TYPE;

/// The `Content-Type` of the protobuf exposition (length-delimited `MetricFamily` messages), as
/// Prometheus asks for it with `--enable-feature=native-histograms`.
pub const PROTOBUF_CONTENT_TYPE: &str =
    "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited";

/// Whether an `Accept` header asks for the protobuf exposition: one of its media ranges is
/// `application/vnd.google.protobuf` with `proto=io.prometheus.client.MetricFamily` and a
/// non-zero `q`. Anything unreadable means "no" (the text format is the safe answer).
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

#[allow(unreachable_pub)]
mod client_model;
mod histogram;
mod openmetrics;
mod protobuf;
mod recorder;
mod text;
pub use recorder::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

mod server;
pub(crate) use server::MetricsEndpoint;
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

/// A Tower [`Service`](tower_service::Service) that answers any request with the Prometheus
/// exposition, shared and compressed as [`PrometheusMetrics::service`] says. Made by
/// [`PrometheusMetrics::service`]; never fails.
#[derive(Clone, Debug)]
pub struct MetricsService {
    metrics: PrometheusMetrics,
    endpoint: MetricsEndpoint,
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
        let (metrics, endpoint) = (self.metrics.clone(), self.endpoint.clone());
        // Only what the answer depends on: the request (and its body) is let go at once.
        let mut asks = HeaderMap::new();
        for name in [header::ACCEPT, header::ACCEPT_ENCODING] {
            if let Some(value) = request.headers().get(&name) {
                asks.insert(name, value.clone());
            }
        }
        Box::pin(async move {
            Ok(match tokio::runtime::Handle::try_current() {
                Ok(_) => endpoint.scrape(&asks).await,
                Err(_) => metrics.exposition(asks.get(header::ACCEPT)),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;
    use metrics::{Label, Recorder};

    fn recorder() -> PrometheusRecorder {
        builder().build_recorder()
    }

    #[test]
    fn every_layer_histogram_gets_its_buckets_under_any_prefix() {
        let rec = builder().all_classic_buckets().build_recorder();
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

    /// The classic series of one response label set (what one request records: the counter,
    /// duration, application and output time, bytes and blocks), in the text format, and the
    /// metric families of the protobuf format.
    fn one_response_label_set(builder: PrometheusBuilder) -> (usize, usize, String) {
        let rec = builder.build_recorder();
        metrics::with_local_recorder(&rec, || {
            let names = crate::names::MetricNames::new("http.server");
            names.describe();
            let labels = [
                Label::new("http.route", "/users/{id}"),
                Label::new("http.request.method", "GET"),
                Label::new("http.response.status_code", "200"),
            ];
            metrics::counter!(names.requests.clone(), labels.iter()).increment(1);
            for (name, v) in [
                (&names.duration, 0.000_3),
                (&names.application_time, 0.000_2),
                (&names.output_time, 0.000_1),
                (&names.output_bytes, 1500.0),
                (&names.output_blocks, 2.0),
            ] {
                metrics::histogram!(name.clone(), labels.iter()).record(v);
            }
        });
        let text = rec.handle().render();
        let series = text.lines().filter(|l| !l.is_empty() && !l.starts_with('#')).count();
        let families = decode(&rec.handle().render_protobuf());
        let native = families.iter().map(|f| f.metric.len()).sum();
        (series, native, text)
    }

    #[test]
    fn the_default_keeps_at_most_60_classic_series_per_response_label_set() {
        let (series, native, text) = one_response_label_set(builder());
        assert!(series <= 60, "{series} classic series per response label set:\n{text}");
        assert_eq!(series, 60, "{text}");
        assert_eq!(native, 6, "one series per metric in protobuf");
        // Percentiles of the two latencies, means of everything else.
        for name in ["request_duration_seconds", "application_time_seconds"] {
            let buckets = text.matches(&format!("http_server_{name}_bucket{{")).count();
            assert_eq!(buckets, DURATION_BUCKETS.len() + 1, "{name}:\n{text}");
        }
        for name in ["output_time_seconds", "output_bytes", "output_blocks"] {
            for part in ["_bucket{", "_sum{", "_count{"] {
                let n = text.matches(&format!("http_server_{name}{part}")).count();
                assert_eq!(n, 1, "{name}{part}:\n{text}");
            }
        }
        assert!(text.contains("http_server_output_bytes_sum{http_route=\"/users/{id}\",http_request_method=\"GET\",http_response_status_code=\"200\"} 1500\n"), "{text}");

        let (series, native, text) = one_response_label_set(builder().all_classic_buckets());
        assert_eq!(series, 119, "all classic buckets:\n{text}");
        assert_eq!(native, 6);
        assert!(text.contains("le=\"4294967296\""), "{text}");
    }

    #[test]
    fn a_measured_zero_reads_as_zero() {
        let rec = builder().all_classic_buckets().build_recorder();
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
        assert_eq!(DURATION_BUCKETS.len(), 22);
        assert!(DURATION_BUCKETS.windows(2).all(|w| w[1] == 2.0 * w[0]));
        assert_eq!(DURATION_BUCKETS, &SECONDS_BUCKETS[3..]);
        assert_eq!(DURATION_BUCKETS.first(), Some(&2f64.powi(-16)));
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
        let runtime =
            tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
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

    /// The service is bounded as the private listener is: concurrent scrapes share one body
    /// (the same bytes, not equal copies), gzip when asked, each format its own.
    #[test]
    fn service_scrapes_share_one_render_and_gzip_when_asked() {
        let rec = recorder();
        metrics::with_local_recorder(&rec, || {
            for i in 0..500 {
                metrics::counter!("svc.requests", "route" => format!("/r{i}")).increment(i);
            }
        });
        let svc = PrometheusMetrics::from_handle(rec.handle()).service();
        let scrape = |encoding: Option<&'static str>| {
            let mut svc = svc.clone();
            let mut request = Request::builder();
            if let Some(encoding) = encoding {
                request = request.header(header::ACCEPT_ENCODING, encoding);
            }
            let request = request.body(()).expect("request");
            async move {
                let response = tower_service::Service::call(&mut svc, request)
                    .await
                    .unwrap_or_else(|never| match never {});
                let encoding = response.headers().get(header::CONTENT_ENCODING).cloned();
                let body = response.into_body();
                (encoding, body.bytes().as_ptr() as usize, body.bytes().to_vec())
            }
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let answers = runtime.block_on(async {
            let tasks: Vec<_> = (0..20).map(|_| tokio::spawn(scrape(None))).collect();
            let mut answers = vec![];
            for task in tasks {
                answers.push(task.await.expect("scrape"));
            }
            answers
        });
        let (_, first_at, text) = &answers[0];
        assert!(String::from_utf8_lossy(text).contains("svc_requests_total{route=\"/r499\"} 499"));
        for (encoding, at, _) in &answers {
            assert_eq!(encoding, &None);
            assert_eq!(at, first_at, "20 concurrent scrapes rendered more than once");
        }
        let (encoding, _, gz) = runtime.block_on(scrape(Some("gzip")));
        assert_eq!(encoding.as_ref().map(|e| e.as_bytes()), Some(&b"gzip"[..]));
        assert!(gz.len() < text.len() / 4, "{} of {}", gz.len(), text.len());
        let mut unzipped = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut unzipped)
            .expect("gunzip");
        assert_eq!(&unzipped, text, "the gzip body is the shared text body");
    }

    fn record_one_of_each(recorder: &PrometheusRecorder) {
        metrics::with_local_recorder(recorder, || {
            let names = crate::MetricNames::new("http.server");
            names.describe();
            let labels = [Label::new("http.route", "/a")];
            metrics::histogram!(names.duration.clone(), labels.iter()).record(0.000_040);
            metrics::histogram!(names.duration.clone(), labels.iter()).record(0.000_041);
            metrics::histogram!(names.duration.clone(), labels.iter()).record(0.5);
            metrics::histogram!(names.output_time.clone(), labels.iter()).record(0.0);
            metrics::histogram!(names.output_bytes.clone(), labels.iter()).record(12.0);
            metrics::counter!(names.requests.clone(), labels.iter()).increment(1);
            metrics::gauge!(names.active_requests.clone()).set(2.0);
        });
    }

    fn decode(mut bytes: &[u8]) -> Vec<client_model::MetricFamily> {
        use prost::Message;
        let mut out = Vec::new();
        while !bytes.is_empty() {
            out.push(
                client_model::MetricFamily::decode_length_delimited(&mut bytes).expect("decodes"),
            );
        }
        out
    }

    #[test]
    fn protobuf_has_native_and_classic_buckets_with_the_text_names() {
        let rec = builder().add_global_label("service", "users").build_recorder();
        record_one_of_each(&rec);
        let families = decode(&rec.handle().render_protobuf());
        let names: Vec<&str> = families.iter().filter_map(|f| f.name.as_deref()).collect();
        for name in [
            "http_server_request_duration_seconds",
            "http_server_output_time_seconds",
            "http_server_output_bytes",
            "http_server_requests_total",
            "http_server_active_requests",
        ] {
            assert!(names.contains(&name), "{name} missing from {names:?}");
        }
        let duration = families
            .iter()
            .find(|f| f.name.as_deref() == Some("http_server_request_duration_seconds"))
            .expect("duration");
        let metric = &duration.metric[0];
        let labels: Vec<(&str, &str)> = metric
            .label
            .iter()
            .map(|l| (l.name.as_deref().unwrap_or(""), l.value.as_deref().unwrap_or("")))
            .collect();
        assert_eq!(labels, [("http_route", "/a"), ("service", "users")]);
        let h = metric.histogram.as_ref().expect("histogram");
        assert_eq!(h.sample_count, Some(3));
        assert!((h.sample_sum.unwrap_or(0.0) - 0.500_081).abs() < 1e-12);
        assert_eq!(h.schema, Some(3));
        assert_eq!(h.zero_count, Some(0));
        // 40 us and 41 us share a bucket (9 % wide), 0.5 s is 2^-1: bucket index -8.
        let buckets: i64 = h
            .positive_delta
            .iter()
            .scan(0, |c, d| {
                *c += d;
                Some(*c)
            })
            .sum();
        assert_eq!(buckets, 3);
        assert_eq!(h.positive_delta.len(), 2, "{h:?}");
        let last = h.positive_span.iter().map(|s| s.offset.unwrap_or(0)).sum::<i32>()
            + h.positive_span.iter().map(|s| s.length.unwrap_or(0) as i32).sum::<i32>()
            - 1;
        assert_eq!(last, -8, "{h:?}");
        assert_eq!(h.bucket.len(), DURATION_BUCKETS.len());
        assert_eq!(h.bucket.last().and_then(|b| b.cumulative_count), Some(3));
        assert_eq!(h.bucket[0].cumulative_count, Some(0));

        let output = families
            .iter()
            .find(|f| f.name.as_deref() == Some("http_server_output_time_seconds"))
            .and_then(|f| f.metric[0].histogram.clone())
            .expect("output time");
        assert_eq!(output.zero_count, Some(1), "a measured zero is in the zero bucket");
        assert!(output.bucket.is_empty(), "no classic bound by default: {output:?}");

        let rec = builder().all_classic_buckets().build_recorder();
        record_one_of_each(&rec);
        let families = decode(&rec.handle().render_protobuf());
        let output = families
            .iter()
            .find(|f| f.name.as_deref() == Some("http_server_output_time_seconds"))
            .and_then(|f| f.metric[0].histogram.clone())
            .expect("output time");
        assert_eq!(output.zero_count, Some(1));
        assert_eq!(output.bucket[0].cumulative_count, Some(1), "and in le=0");
    }

    #[test]
    fn text_count_equals_the_inf_bucket_and_labels_are_sanitised() {
        let rec = recorder();
        record_one_of_each(&rec);
        let text = rec.handle().render();
        assert!(text.contains("# TYPE http_server_request_duration_seconds histogram\n"), "{text}");
        assert!(text.contains(
            "http_server_request_duration_seconds_bucket{http_route=\"/a\",le=\"+Inf\"} 3\n"
        ));
        assert!(text.contains("http_server_request_duration_seconds_count{http_route=\"/a\"} 3\n"));
        assert!(
            text.contains("http_server_request_duration_seconds_sum{http_route=\"/a\"} 0.500081\n")
        );
        assert!(text.contains("http_server_requests_total{http_route=\"/a\"} 1\n"));
        assert!(text.contains("http_server_active_requests 2\n"));
        assert!(!text.contains("http.route"));
    }

    #[test]
    fn label_values_and_help_are_escaped() {
        let rec = recorder();
        rec.describe_counter("x".into(), None, "a \\ b\nc".into());
        metrics::with_local_recorder(&rec, || {
            metrics::counter!("x", "k" => "q\"uote\\back\nline").increment(1);
        });
        let text = rec.handle().render();
        assert!(text.contains("# HELP x_total a \\\\ b\\nc\n"), "{text}");
        assert!(text.contains("x_total{k=\"q\\\"uote\\\\back\\nline\"} 1\n"), "{text}");
    }

    #[test]
    fn each_scraper_gets_the_format_it_asks_for() {
        let rec = recorder();
        record_one_of_each(&rec);
        let metrics = PrometheusMetrics::from_handle(rec.handle());
        let ask = |accept: Option<&'static str>| {
            let mut req = Request::builder().uri("/metrics");
            if let Some(a) = accept {
                req = req.header(header::ACCEPT, a);
            }
            let response =
                metrics.exposition(req.body(()).expect("request").headers().get(header::ACCEPT));
            (response.headers()[header::CONTENT_TYPE].clone(), response.into_body())
        };
        let prometheus_native = "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited,application/openmetrics-text;version=1.0.0;q=0.8,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        let (ct, body) = ask(Some(prometheus_native));
        assert_eq!(ct, HeaderValue::from_static(PROTOBUF_CONTENT_TYPE));
        assert_eq!(decode(body.bytes()).len(), 5);
        for accept in [
            None,
            Some("text/plain;version=0.0.4;q=0.5,*/*;q=0.1"),
            Some("application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;q=0"),
            Some("application/vnd.google.protobuf;proto=other"),
        ] {
            let (ct, body) = ask(accept);
            assert_eq!(ct, HeaderValue::from_static(CONTENT_TYPE), "{accept:?}");
            assert!(body.bytes().starts_with(b"# "), "{accept:?}");
        }
    }

    /// OpenMetrics: counter families without `_total`, `# UNIT` for a suffixed name, the
    /// latest exemplar on the bucket and counter lines of series a layer wants exemplars for
    /// (none on others, none in the text format), no blank line, `# EOF`; and the service
    /// answers it to Prometheus' default `Accept`.
    #[test]
    fn openmetrics_carries_exemplars_and_the_text_format_does_not() {
        use crate::exemplar::{Sample, Scope, TraceId};
        crate::exemplar::want(["om.requests", "om.duration"]);
        let rec = recorder();
        rec.describe_histogram("om.duration".into(), Some(metrics::Unit::Seconds), "d".into());
        rec.describe_counter("om.requests".into(), None, "r \"quoted\"".into());
        let trace = TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").expect("valid");
        metrics::with_local_recorder(&rec, || {
            let _scope = Scope::enter(Sample { trace, unix_nanos: 1_733_325_600_123_000_000 });
            metrics::counter!("om.requests", "route" => "/a").increment(1);
            metrics::histogram!("om.duration", "route" => "/a").record(0.3);
            metrics::histogram!("om.other", "route" => "/a").record(0.3);
        });
        metrics::with_local_recorder(&rec, || {
            // Outside a scope: counted, no exemplar.
            metrics::histogram!("om.duration", "route" => "/a").record(2.0);
        });
        let om = rec.handle().render_openmetrics();
        let ex = "# {trace_id=\"4bf92f3577b34da6a3ce929d0e0e4736\"}";
        assert!(om.contains("# TYPE om_requests counter\n"), "{om}");
        assert!(om.contains("# HELP om_requests r \\\"quoted\\\"\n"), "{om}");
        assert!(
            om.contains(&format!("om_requests_total{{route=\"/a\"}} 1 {ex} 1 1733325600.123\n"))
        );
        assert!(om.contains("# UNIT om_duration_seconds seconds\n"), "{om}");
        assert!(
            om.contains(&format!(
                "om_duration_seconds_bucket{{route=\"/a\",le=\"0.5\"}} 1 {ex} 0.3 1733325600.123\n"
            )),
            "{om}"
        );
        assert!(om.contains("om_duration_seconds_bucket{route=\"/a\",le=\"2.5\"} 2\n"), "{om}");
        assert_eq!(om.matches("trace_id").count(), 2, "only the wanted series: {om}");
        assert!(!om.contains("\n\n") && om.ends_with("\n# EOF\n"), "{om}");
        let text = rec.handle().render();
        assert!(!text.contains("trace_id") && !text.contains("# EOF"), "{text}");
        assert!(text.contains("# TYPE om_requests_total counter\n"), "{text}");

        let metrics = PrometheusMetrics::from_handle(rec.handle());
        let accept = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        let response = metrics.exposition(Some(&HeaderValue::from_static(accept)));
        assert_eq!(response.headers()[header::CONTENT_TYPE], OPENMETRICS_CONTENT_TYPE);
    }
}
