//! See it without Grafana: an in-process summary recorder and the live `/vitals` page.
//!
//! [`Live`] keeps what the layer records, per route, in hdrhistograms (exact percentiles over
//! a recent window and since start), with counts by `error.type` and status class, body bytes
//! and blocks, a short history, and the service's `active_requests` and `utilization`. It
//! serves one self-contained HTML page (`/vitals`: no CDN, no external font or script) and its
//! data (`/vitals.json`).
//!
//! ```no_run
//! use axum::routing::{get, get_service};
//! use axum::Router;
//! use tower_vitals::VitalsLayer;
//!
//! # fn main() -> Result<(), tower_vitals::live::InstallError> {
//! // Prometheus (with this crate's buckets) and the live recorder, fed by the same layer.
//! let (live, metrics) = tower_vitals::live::install_with_prometheus()?;
//! let app: Router = Router::new()
//!     .route("/users/{id}", get(|| async { "hello" }))
//!     .layer(VitalsLayer::new());
//! // A private router (an admin one, or behind your authentication), added after the layer:
//! // these requests are not measured.
//! let admin: Router = Router::new()
//!     .route("/metrics", get_service(metrics.service()))
//!     .route("/vitals", get_service(live.service()))
//!     .route("/vitals.json", get_service(live.service()));
//! # let _ = (app, admin);
//! # Ok(())
//! # }
//! ```
//!
//! Or keep all three off the public port, on one loopback listener of their own:
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let (live, metrics) = tower_vitals::live::install_with_prometheus()?;
//! // /vitals, /vitals.json and /metrics on 127.0.0.1:9464, for the life of the process.
//! let addr = live.serve("127.0.0.1:9464", Some(&metrics)).await?.detach();
//! println!("open http://{addr}/vitals");
//! # Ok(())
//! # }
//! ```
//!
//! Or alone: [`install`]; or next to any recorder: [`Live::install_with`]; or in your own
//! metrics-util `Fanout`: [`Live::recorder`]. [`Live::service`] is one Tower service answering
//! both paths (axum: `get_service`; hyper; tower). Install before the first request (the layer
//! resolves its handles through the recorder current at a label set's first request).
//!
//! ## What is kept, and the window
//!
//! Per route (`http.route`; one set per metric prefix, so any [`VitalsLayer`] prefix works):
//! - hdrhistograms of `request.duration`, `application_time` and `output_time` (microseconds,
//!   1 µs to 1 h, 2 significant figures), **since start** and over the **window**;
//! - `requests` by `error.type` and by status class (`1xx` … `5xx`, `none` without a head);
//! - sums of `output_bytes` and `output_blocks`, and the responses that recorded them;
//! - a history of [`HISTORY_POINTS`] steps over one window: requests, errors, mean and max
//!   duration per step (the page's sparklines).
//!
//! The window (default [`DEFAULT_WINDOW`], 60 s; see [`LiveBuilder::window`]) is two rotating
//! halves: the current half and the one before it, so it covers between half a window and a
//! whole one (`window.seconds` in the JSON says how much). Rotation happens on the request
//! path and when a snapshot is taken: no background task. The clock is read once per request,
//! when the layer increments `requests` (its first recording of a finished request); the
//! request's histograms, recorded right after, go to the same window slot and history step.
//!
//! The input-side metrics (`input_*`, opt-in in the layer) are not kept.
//!
//! ## Cost and memory
//!
//! Each route has its own lock, taken once per recording (six per request: one counter and
//! five histograms); no lock is shared by all routes on the request path. The registry lock is
//! taken only when a new label set is first seen and when a snapshot is taken. Contended route
//! locks are counted (`lock_waits` in the JSON). BENCHMARKS.md has the per-request cost next to
//! Prometheus alone, measured in the same run (`benches/overhead.rs`, variants `vitals_live`
//! and `vitals_prometheus_live`).
//!
//! Memory per route: each time histogram grows with the largest value it has seen, up to
//! 3,328 counts (1 h at 2 significant figures): 26,624 bytes with 64-bit counts (since start)
//! and 13,312 bytes with 32-bit counts (each window half). Three times × (one since-start + two
//! window halves) makes at most **159,744 bytes (156 KiB) per route**, 86,016 bytes for a route
//! whose slowest request took under a second, plus up to 64 `error.type` names (measured by a
//! unit test; `heap_bytes` in the JSON gives the live figure). Routes are capped
//! ([`LiveBuilder::max_routes`], default the layer's cap + 2 for `unmatched` and `overflow`);
//! past the cap they fold into one `overflow` route. Worst case with the defaults: 1,027 routes
//! × 156 KiB ≈ **164 MB**; a service with 20 routes holds 2–3 MB.
//!
//! ## `/vitals.json` (schema `tower-vitals.live/1`)
//!
//! ```text
//! {
//!   "schema": "tower-vitals.live/1",
//!   "uptime_seconds": 12.5,          // since the recorder was made
//!   "window_seconds": 60,            // the window asked for
//!   "history_step_seconds": 2,       // window / 30
//!   "lock_waits": 0,                 // contended route-lock acquisitions since start
//!   "heap_bytes": 331776,            // heap held by the routes' numbers
//!   "small_block_rule": {"max_bytes_per_block": 512, "min_blocks": 4096},
//!   "services": [{                   // one per metric prefix
//!     "prefix": "http.server",
//!     "active_requests": 3,          // summed over methods
//!     "active_by_method": {"GET": 3},
//!     "utilization": 0.42,           // null before the layer first published it
//!     "routes": [{                   // sorted by route
//!       "route": "/users/{id}",      // raw: escape before showing (the JSON escapes < > &)
//!       "since_start": PERIOD,
//!       "window": PERIOD,
//!       "history": {"requests": [..30], "errors": [..30],
//!                   "mean_duration": [..30 seconds or null], "max_duration": [..]}
//!     }]
//!   }]
//! }
//! PERIOD = {
//!   "seconds": 47.2,                 // how long the period covers
//!   "requests": 1234, "rate_per_second": 26.1,
//!   "errors": {"500": 3, "aborted": 1},          // by error.type
//!   "status": {"2xx": 1230, "5xx": 3, "none": 1},
//!   "duration": TIMES, "application_time": TIMES, "output_time": TIMES,
//!   "responses": 1233,               // requests with a response head (body figures)
//!   "bytes": 40960, "blocks": 1233,  // sums of output_bytes, output_blocks
//!   "bytes_per_response": 33.2, "blocks_per_response": 1.0, "bytes_per_block": 33.2,
//!   "small_blocks": false            // see PeriodSnapshot::small_blocks
//! }
//! TIMES = {"count": 1234, "mean": 0.0012, "p50": 0.00098, "p95": 0.0031, "p99": 0.0079,
//!          "max": 0.012}              // seconds; null without samples
//! ```
//!
//! Numbers are written with the shortest text that parses back to the same `f64`, so the JSON
//! holds exactly what [`Live::snapshot`] returns; ratios are `null` when their divisor is 0.
//!
//! ## The page
//!
//! `/vitals` refreshes itself every 2 s: service tiles (active requests, utilisation, request
//! rate, errors), then one card per route: request rate and count with a sparkline of the
//! window (requests and errors), errors by `error.type` and status classes, p50/p95/p99 of
//! application, output and total time as paired bars on one log axis (1 µs to 10 s), where the
//! mean request's time goes (application + output + body production, the rest), and bytes
//! per response, blocks per response and bytes per block, with a "small blocks" flag. A toggle
//! switches between the window and since start. Every string from the metrics is put in the
//! page as text (never as HTML), and the page's `Content-Security-Policy` allows no external
//! resource. Serve it where you serve `/metrics` (same privacy rules: route names and error
//! rates are for operators), e.g. on a loopback-only listener.
//!
//! [`VitalsLayer`]: crate::VitalsLayer

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

mod json;
mod page;
mod recorder;
#[cfg(feature = "prometheus")]
mod server;
mod snapshot;
mod window;

pub use json::SCHEMA;
pub use page::{LiveService, CONTENT_SECURITY_POLICY, PAGE};
pub use recorder::LiveRecorder;
#[cfg(feature = "prometheus")]
pub use server::LiveServer;
pub use snapshot::{
    HistoryPoint, Percentiles, PeriodSnapshot, RouteSnapshot, ServiceSnapshot, Snapshot,
    SMALL_BLOCK_BYTES, SMALL_BLOCK_MIN_BLOCKS,
};
pub use window::HISTORY_POINTS;

use recorder::Inner;

pub use crate::install::InstallError;

/// The default window: 60 s (two rotating halves of 30 s).
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(60);

/// The live summary: its recorder, its snapshots, and the page that shows them. Cheap to
/// clone: clones share the same numbers.
#[derive(Clone)]
pub struct Live {
    inner: Arc<Inner>,
}

impl fmt::Debug for Live {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Live").field("window", &self.inner.window).finish_non_exhaustive()
    }
}

impl Default for Live {
    fn default() -> Self {
        Live::new()
    }
}

impl Live {
    /// A live summary with the defaults (window 60 s, any prefix, routes capped at the layer's
    /// cap + 2).
    pub fn new() -> Self {
        LiveBuilder::default().build()
    }

    /// Settings: window, prefix, route cap, clock.
    pub fn builder() -> LiveBuilder {
        LiveBuilder::default()
    }

    /// The `metrics` recorder feeding this summary (for a `Fanout`, or a local recorder).
    pub fn recorder(&self) -> LiveRecorder {
        LiveRecorder { inner: Arc::clone(&self.inner) }
    }

    /// Installs this summary's recorder as the global `metrics` recorder (alone).
    ///
    /// # Errors
    /// [`InstallError::AlreadyInstalled`] if a global recorder is already installed.
    pub fn install(&self) -> Result<(), InstallError> {
        metrics::set_global_recorder(self.recorder()).map_err(|_| InstallError::AlreadyInstalled)
    }

    /// Installs this summary's recorder and `other` together (a metrics-util `Fanout`) as the
    /// global recorder: every metric goes to both.
    ///
    /// # Errors
    /// [`InstallError::AlreadyInstalled`] if a global recorder is already installed.
    pub fn install_with<R>(&self, other: R) -> Result<(), InstallError>
    where
        R: metrics::Recorder + Send + Sync + 'static,
    {
        let fanout = metrics_util::layers::FanoutBuilder::default()
            .add_recorder(other)
            .add_recorder(self.recorder())
            .build();
        metrics::set_global_recorder(fanout).map_err(|_| InstallError::AlreadyInstalled)
    }

    /// Everything, now.
    pub fn snapshot(&self) -> Snapshot {
        snapshot::take(&self.inner)
    }

    /// [`snapshot`](Self::snapshot) as the `/vitals.json` text.
    pub fn json(&self) -> String {
        json::render(&self.snapshot())
    }

    /// A Tower service answering with the page, or the JSON for paths ending in `.json`, for a
    /// router that is already private: in axum,
    /// `.route("/vitals", get_service(live.service())).route("/vitals.json", get_service(live.service()))`.
    pub fn service(&self) -> LiveService {
        LiveService { inner: Arc::clone(&self.inner) }
    }

    /// Serves `/vitals`, `/vitals.json` and, given `metrics`, `/metrics` on a listener of its
    /// own at `addr` (HTTP/1.1, hyper over tokio), until the returned [`LiveServer`] is shut
    /// down or dropped: the private listener, as
    /// [`PrometheusMetrics::serve`](crate::prometheus::PrometheusMetrics::serve) is for
    /// `/metrics` alone. Other paths answer `404`. `addr` as for that one: `"127.0.0.1:9464"`,
    /// a `String`, a `SocketAddr` ([`DEFAULT_LISTEN_ADDR`](crate::prometheus::DEFAULT_LISTEN_ADDR));
    /// bind loopback (port 0: a free port). Keep the returned [`LiveServer`] or `detach()` it.
    ///
    /// Must be called inside a tokio runtime.
    ///
    /// # Errors
    /// If the address is invalid or cannot be bound (the error names it).
    #[cfg(feature = "prometheus")]
    pub async fn serve(
        &self,
        addr: impl tokio::net::ToSocketAddrs + fmt::Debug,
        metrics: Option<&crate::prometheus::PrometheusMetrics>,
    ) -> std::io::Result<LiveServer> {
        server::serve(Arc::clone(&self.inner), metrics.cloned(), addr).await
    }
}

/// Settings of a [`Live`].
#[derive(Clone, Debug)]
pub struct LiveBuilder {
    window: Duration,
    prefix: Option<String>,
    max_routes: usize,
    clock: quanta::Clock,
}

impl Default for LiveBuilder {
    fn default() -> Self {
        LiveBuilder {
            window: DEFAULT_WINDOW,
            prefix: None,
            max_routes: crate::DEFAULT_ROUTE_CAP + 2,
            clock: quanta::Clock::new(),
        }
    }
}

impl LiveBuilder {
    /// The recent window (default 60 s; at least 2 ms). It rotates in two halves.
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window.max(Duration::from_millis(2));
        self
    }

    /// Keep only the layer metrics under this prefix (default: any prefix, each kept apart).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = Some(prefix.into());
        self
    }

    /// Routes kept (summed over prefixes) before new ones fold into `overflow` (default the
    /// layer's cap + 2: `unmatched` and the layer's own `overflow`).
    pub fn max_routes(mut self, max_routes: usize) -> Self {
        self.max_routes = max_routes;
        self
    }

    /// The clock windows and uptime are measured with (a `quanta::Clock::mock()` in tests).
    pub fn clock(mut self, clock: quanta::Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The summary.
    pub fn build(self) -> Live {
        Live { inner: Arc::new(Inner::new(self.clock, self.window, self.prefix, self.max_routes)) }
    }
}

/// Installs a [`Live`] with the defaults as the global `metrics` recorder (alone).
///
/// # Errors
/// [`InstallError::AlreadyInstalled`] if a global recorder is already installed.
pub fn install() -> Result<Live, InstallError> {
    let live = Live::new();
    live.install()?;
    Ok(live)
}

/// Installs the crate's Prometheus recorder ([`builder`](crate::prometheus::builder)) and a
/// [`Live`] together as the global recorder: `/metrics` (classic and native histograms) and
/// `/vitals` show the same requests.
///
/// ```no_run
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let (live, metrics) = tower_vitals::live::install_with_prometheus()?;
/// metrics.serve("127.0.0.1:9464").await?.detach();
/// # let _ = live;
/// # Ok(())
/// # }
/// ```
///
/// # Errors
/// [`InstallError::AlreadyInstalled`] if a global recorder is already installed.
#[cfg(feature = "prometheus")]
pub fn install_with_prometheus(
) -> Result<(Live, crate::prometheus::PrometheusMetrics), InstallError> {
    let recorder = crate::prometheus::builder().build_recorder();
    let metrics = crate::prometheus::PrometheusMetrics::from_handle(recorder.handle());
    let live = Live::new();
    live.install_with(recorder)?;
    Ok((live, metrics))
}
