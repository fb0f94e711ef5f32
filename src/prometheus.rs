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
//! exporter's default summary, so `histogram_quantile` works across instances.

use std::convert::Infallible;
use std::fmt;
use std::future::{ready, Ready};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{header, HeaderValue, Method, Request, Response, StatusCode};
pub use metrics_exporter_prometheus::{BuildError, PrometheusBuilder, PrometheusHandle};
use metrics_exporter_prometheus::{Matcher, PrometheusRecorder};

use crate::names::{self, Buckets};

/// Seconds buckets (OpenTelemetry's HTTP duration buckets), for every time histogram.
pub const SECONDS_BUCKETS: &[f64] =
    &[0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0];

/// Byte buckets, for `output_bytes` and `input_bytes`.
pub const BYTES_BUCKETS: &[f64] = &[100.0, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8];

/// Frame-count buckets, for `output_blocks` and `input_blocks`.
pub const FRAMES_BUCKETS: &[f64] =
    &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0, 4096.0];

/// The `Content-Type` of the text exposition format, as Prometheus expects it.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Where [`PrometheusMetrics::serve`] is usually pointed: `127.0.0.1:9464` (loopback only;
/// 9464 is the port OpenTelemetry's Prometheus exporter uses). Bind `0.0.0.0` only on purpose.
pub const DEFAULT_LISTEN_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9464);

/// How long the [`serve`](PrometheusMetrics::serve) listener waits for a request head (and
/// keeps an idle connection) before closing the connection. A scrape sends its head at once;
/// Prometheus reconnects when its kept-alive connection was closed between scrapes.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

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

/// Why [`install`] failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum InstallError {
    /// A global `metrics` recorder was already installed (by this crate or another); the
    /// process keeps that one. Use [`builder`] and a `Fanout` to combine recorders.
    AlreadyInstalled,
    /// The upkeep thread could not be spawned.
    Upkeep(std::io::Error),
}

impl fmt::Display for InstallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InstallError::AlreadyInstalled => {
                f.write_str("a global metrics recorder is already installed in this process")
            }
            InstallError::Upkeep(e) => write!(f, "could not start the upkeep thread: {e}"),
        }
    }
}

impl std::error::Error for InstallError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            InstallError::AlreadyInstalled => None,
            InstallError::Upkeep(e) => Some(e),
        }
    }
}

/// A handle to the installed Prometheus recorder: renders the exposition text and serves it.
/// Cheap to clone.
#[derive(Clone, Debug)]
pub struct PrometheusMetrics {
    handle: PrometheusHandle,
}

impl PrometheusMetrics {
    /// Wraps a handle of a recorder you built and installed yourself (e.g. from
    /// `builder().build_recorder()`). You then run its upkeep: call
    /// [`spawn_upkeep`](Self::spawn_upkeep) or rely on scrapes (each render drains too).
    pub fn from_handle(handle: PrometheusHandle) -> Self {
        PrometheusMetrics { handle }
    }

    /// The exposition text (Prometheus text format 0.0.4) of everything recorded so far.
    pub fn render(&self) -> String {
        self.handle.render()
    }

    /// The exporter's own handle.
    pub fn handle(&self) -> &PrometheusHandle {
        &self.handle
    }

    /// Starts a background thread (`tower-vitals-prometheus-upkeep`) that runs the recorder's
    /// upkeep every `interval`, for the life of the process. [`install`] already did this.
    ///
    /// # Errors
    /// If the thread could not be spawned.
    pub fn spawn_upkeep(&self, interval: Duration) -> std::io::Result<()> {
        let handle = self.handle.clone();
        std::thread::Builder::new().name("tower-vitals-prometheus-upkeep".into()).spawn(
            move || loop {
                std::thread::sleep(interval);
                handle.run_upkeep();
            },
        )?;
        Ok(())
    }

    /// A Tower service answering every request with the exposition text (`200`,
    /// `Content-Type: text/plain; version=0.0.4; charset=utf-8`).
    ///
    /// With axum, route it after the layer: `.route("/metrics", get_service(metrics.service()))`
    /// (`axum::routing::get_service`: `405` for methods other than `GET` and `HEAD`). But prefer
    /// [`serve`](Self::serve): see [where `/metrics` lives](crate::prometheus).
    pub fn service(&self) -> MetricsService {
        MetricsService { handle: self.handle.clone() }
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
        server::serve(self.handle.clone(), addr).await
    }
}

mod server;
pub use server::MetricsServer;

/// A `200` response with the exposition text.
fn exposition(handle: &PrometheusHandle) -> Response<String> {
    let mut response = Response::new(handle.render());
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    response
}

/// The answer of the standalone listener: `/metrics` only, `GET` or `HEAD`.
pub(crate) fn answer<B>(handle: &PrometheusHandle, request: &Request<B>) -> Response<String> {
    let status = if request.uri().path() != "/metrics" {
        StatusCode::NOT_FOUND
    } else if request.method() != Method::GET && request.method() != Method::HEAD {
        StatusCode::METHOD_NOT_ALLOWED
    } else {
        return exposition(handle);
    };
    let mut response = Response::new(String::new());
    *response.status_mut() = status;
    response
}

/// A Tower [`Service`](tower_service::Service) that answers any request with the Prometheus
/// exposition text. Made by [`PrometheusMetrics::service`]; never fails.
#[derive(Clone, Debug)]
pub struct MetricsService {
    handle: PrometheusHandle,
}

impl<B> tower_service::Service<Request<B>> for MetricsService {
    type Response = Response<String>;
    type Error = Infallible;
    type Future = Ready<Result<Response<String>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _request: Request<B>) -> Self::Future {
        ready(Ok(exposition(&self.handle)))
    }
}

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
            "my_app_request_duration_seconds_bucket{http_route=\"/a\",le=\"0.025\"} 1",
            "my_app_application_time_seconds_bucket{http_route=\"/a\",le=\"10\"} 1",
            "my_app_output_time_seconds_bucket{http_route=\"/a\",le=\"0.005\"} 0",
            "my_app_input_time_seconds_bucket{http_route=\"/a\",le=\"7.5\"} 1",
            "my_app_output_bytes_bucket{http_route=\"/a\",le=\"100\"} 1",
            "my_app_input_bytes_bucket{http_route=\"/a\",le=\"100000000\"} 1",
            "my_app_output_blocks_bucket{http_route=\"/a\",le=\"4096\"} 1",
            "my_app_input_blocks_bucket{http_route=\"/a\",le=\"1\"} 1",
            "my_app_requests_total{http_route=\"/a\"} 1",
        ] {
            assert!(text.contains(series), "missing {series}:\n{text}");
        }
        assert_eq!(text.matches("le=\"0.075\"").count(), 4, "4 time histograms:\n{text}");
        assert_eq!(text.matches("le=\"1000000\"").count(), 2, "2 byte histograms:\n{text}");
        assert_eq!(text.matches("le=\"1024\"").count(), 2, "2 frame histograms:\n{text}");
    }

    #[test]
    fn buckets_match_the_design() {
        assert_eq!(SECONDS_BUCKETS.len(), 14);
        assert!(SECONDS_BUCKETS.windows(2).all(|w| w[0] < w[1]));
        assert!(BYTES_BUCKETS.windows(2).all(|w| w[0] < w[1]));
        assert!(FRAMES_BUCKETS.windows(2).all(|w| w[0] < w[1]));
        assert!(DEFAULT_LISTEN_ADDR.ip().is_loopback());
    }

    #[test]
    fn service_answers_with_the_text_format_content_type() {
        let rec = recorder();
        rec.describe_counter("x.requests".into(), None, "help".into());
        let metrics = PrometheusMetrics::from_handle(rec.handle());
        let mut svc = metrics.service();
        let fut = tower_service::Service::call(&mut svc, Request::new(()));
        let response = futures_now(fut);
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[header::CONTENT_TYPE], CONTENT_TYPE);
    }

    #[test]
    fn standalone_answer_is_metrics_only() {
        let metrics = PrometheusMetrics::from_handle(recorder().handle());
        let get = |path: &str, method: Method| {
            let req = Request::builder().uri(path).method(method).body(()).expect("request");
            answer(metrics.handle(), &req).status()
        };
        assert_eq!(get("/metrics", Method::GET), StatusCode::OK);
        assert_eq!(get("/metrics", Method::HEAD), StatusCode::OK);
        assert_eq!(get("/other", Method::GET), StatusCode::NOT_FOUND);
        assert_eq!(get("/metrics", Method::POST), StatusCode::METHOD_NOT_ALLOWED);
    }

    fn futures_now<T>(fut: Ready<Result<T, Infallible>>) -> T {
        match fut.into_inner() {
            Ok(v) => v,
            Err(never) => match never {},
        }
    }
}
