//! statsd: push the layer's metrics to a statsd server (Etsy statsd, Telegraf, Graphite's
//! statsd, the Datadog agent) over UDP, with tags in the DogStatsD `|#k:v` form.
//!
//! ```no_run
//! # fn main() -> Result<(), tower_vitals::statsd::StatsdError> {
//! // Datadog agent / Telegraf: histograms as `|h` (or `.histograms(HistogramType::Distribution)`).
//! let statsd = tower_vitals::statsd::install("127.0.0.1:8125")?; // the global recorder
//! println!("{} samples dropped so far", statsd.dropped()); // its health, any time later
//! # Ok(())
//! # }
//! ```
//!
//! Two types, two jobs: the [`StatsdRecorder`] is the `metrics` recorder itself (it becomes the
//! global recorder on [`install`], or goes into a `Fanout` after [`StatsdBuilder::build`]); the
//! [`StatsdHandle`] stays with you to read the exporter's health (samples dropped, datagrams
//! sent or lost), like metrics-exporter-prometheus' `PrometheusHandle`.
//!
//! For a classic (Etsy) statsd server, which computes percentiles only for `|ms` timers and
//! sums `|h` and `|d` like counters, send the time histograms as timers, in milliseconds:
//!
//! ```no_run
//! use tower_vitals::statsd::{self, HistogramType};
//! # fn main() -> Result<(), statsd::StatsdError> {
//! let statsd = statsd::builder("127.0.0.1:8125")
//!     .global_prefix("myapp")                   // myapp.http.server.requests, ...
//!     .default_tag("env", "prod")
//!     .classic()                                // times: `|ms`, in milliseconds
//!     .size_histograms(HistogramType::Timer)    // bytes/frames too (percentiles of sizes)
//!     .install()?;
//! # let _ = statsd;
//! # Ok(())
//! # }
//! ```
//!
//! ## Lines
//! `http.server.request.duration:12.5|ms|#http.route:/users/{id},http.request.method:GET,http.response.status_code:200`
//! (classic mode), `http.server.requests:42|c|#…`, `http.server.output_bytes:512|h|#…`,
//! `http.server.active_requests:3|g|#http.request.method:GET`. Tags keep a fixed order (default
//! tags, then the layer's). Names, tag keys and tag values are sanitised once, when a metric is
//! registered: nothing a route contains can break a line.
//!
//! ## Pipelines
//! [`Pipeline::Background`] (the default) keeps the request path to an atomic add per counter
//! and one lock-free queue push per histogram sample; a sender thread formats, packs lines into
//! datagrams of at most [`buffer_size`](StatsdBuilder::buffer_size) bytes and sends them.
//! Counters are summed in-process and sent once per
//! [`flush_interval`](StatsdBuilder::flush_interval) (statsd sums counters anyway); every
//! histogram sample is its own line, so statsd keeps per-sample values for percentiles.
//! [`Pipeline::Inline`] uses `metrics-exporter-statsd` (cadence), which formats each line on the
//! request thread (costs several µs per request; timers rounded down to whole milliseconds).
//! Neither ever blocks or fails a request: when the queue is full, samples are dropped and
//! counted ([`StatsdHandle::dropped`]); when the server is down, datagrams are lost.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};

mod background;
mod inline;
mod line;

pub use line::HistogramType;

/// Default queue size: histogram samples waiting for the sender thread (16 bytes each).
pub const DEFAULT_QUEUE_SIZE: usize = 65_536;
/// Default largest datagram, in bytes (fits a 1500-byte MTU with IP/UDP headers, as the
/// Datadog agent recommends).
pub const DEFAULT_BUFFER_SIZE: usize = crate::names::UDP_DATAGRAM_BYTES;
/// Default interval at which summed counters and changed gauges are sent.
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// How recorded values reach the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Pipeline {
    /// Raw numbers go to a sender thread that formats and sends (default; cheapest per request).
    Background,
    /// `metrics-exporter-statsd`: each sample formatted on the recording thread.
    Inline,
}

/// Configuration of the statsd exporter. Start with [`builder`].
#[derive(Debug, Clone)]
pub struct StatsdBuilder {
    addr: String,
    global_prefix: Option<String>,
    default_tags: Vec<(String, String)>,
    times: HistogramType,
    sizes: HistogramType,
    queue_size: usize,
    buffer_size: usize,
    flush_interval: Duration,
    pipeline: Pipeline,
}

/// A builder sending to `addr` (`host:port`, e.g. `127.0.0.1:8125`), with histograms as `|h`,
/// a queue of [`DEFAULT_QUEUE_SIZE`] samples and datagrams of at most [`DEFAULT_BUFFER_SIZE`]
/// bytes.
pub fn builder(addr: impl Into<String>) -> StatsdBuilder {
    StatsdBuilder {
        addr: addr.into(),
        global_prefix: None,
        default_tags: Vec::new(),
        times: HistogramType::Histogram,
        sizes: HistogramType::Histogram,
        queue_size: DEFAULT_QUEUE_SIZE,
        buffer_size: DEFAULT_BUFFER_SIZE,
        flush_interval: DEFAULT_FLUSH_INTERVAL,
        pipeline: Pipeline::Background,
    }
}

/// Installs a statsd exporter to `addr` with the defaults of [`builder`] as the global recorder.
///
/// # Errors
/// See [`StatsdError`].
pub fn install(addr: impl Into<String>) -> Result<StatsdHandle, StatsdError> {
    builder(addr).install()
}

impl StatsdBuilder {
    /// A prefix put before every metric name, joined with a dot: `.global_prefix("myapp")`
    /// sends `myapp.http.server.requests`. It adds to the layer's own prefix
    /// ([`VitalsLayerBuilder::prefix`](crate::VitalsLayerBuilder::prefix), `http.server` by default, which
    /// replaces); metrics-exporter-dogstatsd calls the same setting `set_global_prefix`.
    pub fn global_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.global_prefix = Some(prefix.into());
        self
    }

    /// A tag added to every line, before the metric's own tags.
    pub fn default_tag(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.default_tags.push((key.into(), value.into()));
        self
    }

    /// The type of every histogram (times and sizes).
    pub fn histograms(mut self, kind: HistogramType) -> Self {
        self.times = kind;
        self.sizes = kind;
        self
    }

    /// The type of time histograms (those in seconds). [`HistogramType::Timer`] sends them
    /// as `|ms` in milliseconds.
    pub fn time_histograms(mut self, kind: HistogramType) -> Self {
        self.times = kind;
        self
    }

    /// The type of the other histograms (bytes, frames). [`HistogramType::Timer`] sends the raw
    /// values as `|ms`, so that Etsy statsd computes their percentiles too (background pipeline
    /// only; the inline one sends them as `|h`).
    pub fn size_histograms(mut self, kind: HistogramType) -> Self {
        self.sizes = kind;
        self
    }

    /// Classic (Etsy) statsd: time histograms as `|ms` timers in milliseconds. Sizes keep their
    /// type (`|h`, which Etsy statsd sums: the total bytes per interval).
    pub fn classic(self) -> Self {
        self.time_histograms(HistogramType::Timer)
    }

    /// Histogram samples that may wait for the sender thread (background), or lines in the
    /// exporter's queue (inline). Past it, samples are dropped and counted. At least 1 (0 is
    /// taken as 1). The background queue is allocated when the exporter is built: 24 bytes per
    /// sample, 1.5 MB at the default.
    pub fn queue_size(mut self, samples: usize) -> Self {
        self.queue_size = samples.max(1);
        self
    }

    /// The largest datagram sent, in bytes; lines are packed up to it (a longer line goes alone).
    /// At least 1 (0 is taken as 1).
    pub fn buffer_size(mut self, bytes: usize) -> Self {
        self.buffer_size = bytes.max(1);
        self
    }

    /// How often summed counters and changed gauges are sent (background pipeline; at least
    /// 10 ms).
    pub fn flush_interval(mut self, interval: Duration) -> Self {
        self.flush_interval = interval.max(Duration::from_millis(10));
        self
    }

    /// Which pipeline formats and sends (default [`Pipeline::Background`]).
    pub fn pipeline(mut self, pipeline: Pipeline) -> Self {
        self.pipeline = pipeline;
        self
    }

    /// Builds the recorder (and starts its sender thread) without installing it: for a
    /// `Fanout`, or a local recorder in tests. The [`StatsdHandle`] reads its health.
    ///
    /// # Errors
    /// If `addr` does not resolve, the local socket cannot be opened, or the thread not started.
    pub fn build(self) -> Result<(StatsdRecorder, StatsdHandle), StatsdError> {
        let target = resolve(&self.addr)?;
        let stats = Arc::new(ExporterStats::default());
        let prefix = self.global_prefix.as_deref().map(|p| format!("{p}.")).unwrap_or_default();
        let recorder = match self.pipeline {
            Pipeline::Background => {
                let local: SocketAddr = match (target.is_ipv6(), target.ip().is_loopback()) {
                    (false, true) => (Ipv4Addr::LOCALHOST, 0).into(),
                    (false, false) => (Ipv4Addr::UNSPECIFIED, 0).into(),
                    (true, true) => (Ipv6Addr::LOCALHOST, 0).into(),
                    (true, false) => (Ipv6Addr::UNSPECIFIED, 0).into(),
                };
                let socket = UdpSocket::bind(local).map_err(StatsdError::Socket)?;
                socket.connect(target).map_err(StatsdError::Socket)?;
                socket.set_nonblocking(true).map_err(StatsdError::Socket)?;
                let settings = background::Settings {
                    prefix,
                    default_tags: self.default_tags,
                    times: self.times,
                    sizes: self.sizes,
                    queue_size: self.queue_size,
                    buffer_size: self.buffer_size,
                    flush_interval: self.flush_interval,
                };
                let recorder =
                    background::BackgroundRecorder::start(settings, socket, Arc::clone(&stats))
                        .map_err(StatsdError::Thread)?;
                Inner::Background(recorder)
            }
            Pipeline::Inline => {
                let mut builder = metrics_exporter_statsd::StatsdBuilder::from(
                    target.ip().to_string(),
                    target.port(),
                )
                .with_queue_size(self.queue_size)
                .with_buffer_size(self.buffer_size);
                if target.ip().is_loopback() {
                    builder = builder.with_client_udp_host("127.0.0.1");
                }
                for (k, v) in &self.default_tags {
                    let (k, v) = (line::sanitize_name(k), crate::labels::sanitize_tag_value(v));
                    builder = builder.with_default_tag(k, v);
                }
                let prefix = self.global_prefix.as_deref();
                let inner =
                    builder.build(prefix).map_err(|e| StatsdError::Exporter(e.to_string()))?;
                Inner::Inline(inline::InlineRecorder::new(inner, self.times, self.sizes))
            }
        };
        Ok((StatsdRecorder { inner: recorder }, StatsdHandle { target, stats }))
    }

    /// Builds and installs the recorder as the global recorder; returns the [`StatsdHandle`]
    /// that reads its health.
    ///
    /// # Errors
    /// As [`build`](Self::build), and [`StatsdError::AlreadyInstalled`].
    pub fn install(self) -> Result<StatsdHandle, StatsdError> {
        let (recorder, exporter) = self.build()?;
        metrics::set_global_recorder(recorder).map_err(|_| StatsdError::AlreadyInstalled)?;
        Ok(exporter)
    }
}

fn resolve(addr: &str) -> Result<SocketAddr, StatsdError> {
    let mut addrs =
        addr.to_socket_addrs().map_err(|e| StatsdError::Address(format!("{addr}: {e}")))?;
    addrs.next().ok_or_else(|| StatsdError::Address(format!("{addr}: no address")))
}

/// Why the statsd exporter could not be built or installed.
#[derive(Debug)]
#[non_exhaustive]
pub enum StatsdError {
    /// The address did not parse or resolve to a socket address.
    Address(String),
    /// The local UDP socket could not be opened or connected.
    Socket(std::io::Error),
    /// The sender thread could not be started.
    Thread(std::io::Error),
    /// `metrics-exporter-statsd` refused the configuration (inline pipeline).
    Exporter(String),
    /// A global `metrics` recorder was already installed.
    AlreadyInstalled,
}

impl std::fmt::Display for StatsdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StatsdError::Address(e) => write!(f, "bad statsd address {e}"),
            StatsdError::Socket(e) => write!(f, "statsd UDP socket: {e}"),
            StatsdError::Thread(e) => write!(f, "could not start the statsd sender thread: {e}"),
            StatsdError::Exporter(e) => write!(f, "metrics-exporter-statsd: {e}"),
            StatsdError::AlreadyInstalled => {
                f.write_str("a global metrics recorder is already installed in this process")
            }
        }
    }
}

impl std::error::Error for StatsdError {}

/// Counters of the exporter's own health (background pipeline; the inline exporter reports
/// none, so they stay 0 there).
#[derive(Debug, Default)]
pub(crate) struct ExporterStats {
    pub(crate) dropped: AtomicU64,
    pub(crate) packets: AtomicU64,
    pub(crate) send_errors: AtomicU64,
}

/// A handle on a running statsd exporter, kept by the application: where it sends, what it
/// sent and what it lost. Returned by [`install`], [`StatsdBuilder::install`] and
/// [`StatsdBuilder::build`]; cheap to clone; reads the same counters as the recorder writes,
/// whether or not that recorder is still installed. It does not record anything: the
/// [`StatsdRecorder`] does.
#[derive(Debug, Clone)]
pub struct StatsdHandle {
    target: SocketAddr,
    stats: Arc<ExporterStats>,
}

impl StatsdHandle {
    /// The server address datagrams go to.
    pub fn target(&self) -> SocketAddr {
        self.target
    }
    /// Histogram samples dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.stats.dropped.load(Ordering::Relaxed)
    }
    /// Datagrams sent.
    pub fn packets_sent(&self) -> u64 {
        self.stats.packets.load(Ordering::Relaxed)
    }
    /// Datagrams that could not be sent (no server listening, buffer full, network down).
    pub fn send_errors(&self) -> u64 {
        self.stats.send_errors.load(Ordering::Relaxed)
    }
}

enum Inner {
    Background(background::BackgroundRecorder),
    Inline(inline::InlineRecorder),
}

/// The statsd recorder, a [`metrics::Recorder`]: what the layer records into. Made by
/// [`StatsdBuilder::build`] to install yourself or put in a `Fanout` ([`install`] installs it
/// for you). Its health is read through the [`StatsdHandle`] returned next to it.
pub struct StatsdRecorder {
    inner: Inner,
}

impl std::fmt::Debug for StatsdRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pipeline = match self.inner {
            Inner::Background(_) => Pipeline::Background,
            Inner::Inline(_) => Pipeline::Inline,
        };
        f.debug_struct("StatsdRecorder").field("pipeline", &pipeline).finish()
    }
}

impl StatsdRecorder {
    fn recorder(&self) -> &dyn Recorder {
        match &self.inner {
            Inner::Background(r) => r,
            Inner::Inline(r) => r,
        }
    }
}

impl Recorder for StatsdRecorder {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.recorder().describe_counter(key, unit, description);
    }
    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.recorder().describe_gauge(key, unit, description);
    }
    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.recorder().describe_histogram(key, unit, description);
    }
    fn register_counter(&self, key: &Key, metadata: &Metadata<'_>) -> Counter {
        self.recorder().register_counter(key, metadata)
    }
    fn register_gauge(&self, key: &Key, metadata: &Metadata<'_>) -> Gauge {
        self.recorder().register_gauge(key, metadata)
    }
    fn register_histogram(&self, key: &Key, metadata: &Metadata<'_>) -> Histogram {
        self.recorder().register_histogram(key, metadata)
    }
}
