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
//! - with a layer that has [exemplars](crate::VitalsLayerBuilder::exemplars) on, the
//!   [`SLOWEST`] slowest requests that carried a trace id, since start and over the window:
//!   their trace id, exact `request.duration` and end time (`slowest` in the JSON, a short list
//!   on each route card), so a slow p99 leads to the traces that made it. Requests without a
//!   trace id are counted as always and never listed.
//!
//! The window (default [`DEFAULT_WINDOW`], 60 s; see [`LiveBuilder::window`]) is two rotating
//! halves: the current half and the one before it, so it covers between half a window and a
//! whole one (`window.seconds` in the JSON says how much). Rotation happens on the request
//! path and when a snapshot is taken: no background task. The clock is read once per request,
//! when the layer increments `requests` (its first recording of a finished request); the
//! request's histograms, recorded right after on the same thread, go to the same stripe,
//! window slot and history step.
//!
//! The input-side metrics (`input_*`, opt-in in the layer) are not kept.
//!
//! ## Cost and memory
//!
//! Each route is split in **stripes** (by default one per CPU the process may use, at most 16;
//! [`LiveBuilder::stripes`]). A thread picks its stripe once, the first time it records, and
//! writes the window and history of a route only into that stripe, under the stripe's own
//! lock on its own cache line: two threads recording the same route do not write the same
//! memory, and a stripe's lock is contended only while a snapshot reads it (or when more
//! threads record than there are stripes). Since-start figures are kept once per route: a
//! stripe adds its current half-window into them when it rotates (at most twice per window).
//! A snapshot locks a route's stripes, then its totals, and adds them up: every sample counts
//! once, and percentiles are exactly those of one hdrhistogram over all the samples (buckets
//! are added count by count). No lock is shared by all routes on the request path; the
//! registry lock is taken only when a new label set is first seen and when a snapshot is
//! taken. Contended stripe locks are counted (`lock_waits` in the JSON).
//!
//! The slowest traced requests are kept in each stripe's window halves, in a fixed array of
//! [`SLOWEST`] entries (no allocation): a traced request compares its duration with the fastest
//! entry kept, under the stripe lock it already holds, and replaces it only when slower. A
//! snapshot merges the stripes' lists as it merges their histograms. Unless a layer with
//! exemplars on records the same metric names, recordings go through a handle that never looks
//! for a trace id.
//!
//! Memory per route: each time histogram grows with the largest value it has seen, up to
//! 3,328 counts (1 h at 2 significant figures). A stripe holds three times × two window
//! halves with 32-bit counts, at most **79,872 bytes** (43,008 if no request took a second),
//! plus 2.4 KB of history, slowest lists and bookkeeping, and is allocated only when a thread
//! first records into it; the route's since-start histograms (64-bit counts) hold at most
//! another 79,872 bytes, plus up to 64 `error.type` names. So a route holds at most
//! **(1 + stripes used) × 78 KiB**: 234 KiB on a 2-CPU machine, 1.3 MiB with 16 stripes
//! (`heap_bytes` in the JSON gives the live figure). Routes are capped
//! ([`LiveBuilder::max_routes`], default the layer's cap + 2 for
//! `unmatched` and `overflow`); past the cap they fold into one `overflow` route. Worst case
//! (every route, every stripe, an hour-long request): 1,027 routes × (1 + stripes) × 78 KiB,
//! **241 MB with 2 stripes, 1.4 GB with 16**; a service with 20 routes answering within a
//! second holds 2.6 MB with 2 stripes, 15 MB with 16. Fewer stripes trade memory for
//! contention when more threads than stripes record the same route.
//!
//! `/vitals.json` is rendered off the async workers (tokio's blocking pool inside a tokio
//! runtime, else a thread of its own), at most one render at a time; requests that arrive
//! while it runs, or within a second after it, share its body (one copy, however many
//! readers). [`Live::json`] and [`Live::snapshot`] always read now.
//!
//! ## `/vitals.json` (schema `tower-vitals.live/1`)
//!
//! ```text
//! {
//!   "schema": "tower-vitals.live/1",
//!   "uptime_seconds": 12.5,          // since the recorder was made
//!   "window_seconds": 60,            // the window asked for
//!   "history_step_seconds": 2,       // window / 30
//!   "lock_waits": 0,                 // contended stripe-lock acquisitions since start
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
//!   "small_blocks": false,           // see PeriodSnapshot::small_blocks
//!   "slowest": [                     // traced requests only (layer with exemplars on):
//!     {"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",   // 32 lowercase hex digits
//!      "duration": 1.2034,           // request.duration, seconds, exact
//!      "end_unix_ms": 1764856800123} // when it ended, ms since the Unix epoch
//!   ]                                // at most 5, slowest first; [] without trace ids
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
//! per response, blocks per response and bytes per block, with a "small blocks" flag, and the
//! trace ids of the slowest traced requests with their durations and end times. A toggle
//! switches between the window and since start. Every string from the metrics is put in the
//! page as text (never as HTML), and the page's `Content-Security-Policy` (see
//! [`CONTENT_SECURITY_POLICY`]) allows no external resource and runs no script but the page's
//! own, named by its SHA-256 hash. Serve it where you serve `/metrics` (same privacy rules: route names and error
//! rates are for operators), e.g. on a loopback-only listener.
//!
//! [`VitalsLayer`]: crate::VitalsLayer

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

mod json;
mod page;
mod recorder;
mod render;
#[cfg(feature = "prometheus")]
mod server;
mod snapshot;
mod window;

pub use json::SCHEMA;
pub use page::{LiveBody, LiveFuture, LiveService, CONTENT_SECURITY_POLICY, PAGE};
pub use recorder::LiveRecorder;
#[cfg(feature = "prometheus")]
pub use server::LiveServer;
pub use snapshot::{
    HistoryPoint, Percentiles, PeriodSnapshot, RouteSnapshot, ServiceSnapshot, SlowRequest,
    Snapshot, SMALL_BLOCK_BYTES, SMALL_BLOCK_MIN_BLOCKS,
};
pub use window::{HISTORY_POINTS, SLOWEST};

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

    /// Settings: window, prefix, route cap, stripes, clock.
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

    /// Everything, now (the layer gauges published first, so `active_requests` is the count in
    /// flight now).
    pub fn snapshot(&self) -> Snapshot {
        crate::gauges::publish_gauges();
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
    stripes: usize,
    clock: quanta::Clock,
}

/// The most stripes per route [`LiveBuilder::stripes`] accepts.
pub const MAX_STRIPES: usize = 256;

/// The default stripes per route: the threads that can run at once, at most 16.
fn default_stripes() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get()).min(16)
}

impl Default for LiveBuilder {
    fn default() -> Self {
        LiveBuilder {
            window: DEFAULT_WINDOW,
            prefix: None,
            max_routes: crate::DEFAULT_ROUTE_CAP + 2,
            stripes: default_stripes(),
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

    /// Stripes per route (default: the threads that can run at once, at most 16; clamped to
    /// 1..=[`MAX_STRIPES`]). Each recording thread writes to one stripe of a route (picked once
    /// per thread), so threads on different stripes never wait for each other; more stripes than
    /// threads only costs memory (see "Cost and memory" in the [module docs](self)).
    pub fn stripes(mut self, stripes: usize) -> Self {
        self.stripes = stripes.clamp(1, MAX_STRIPES);
        self
    }

    /// The clock windows and uptime are measured with (default: the system clock; a
    /// [`Clock::mock`](crate::Clock::mock) in tests).
    pub fn clock(mut self, clock: crate::Clock) -> Self {
        self.clock = clock.quanta().clone();
        self
    }

    /// The summary.
    pub fn build(self) -> Live {
        let inner = Inner::new(self.clock, self.window, self.prefix, self.max_routes, self.stripes);
        Live { inner: Arc::new(inner) }
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
