//! DogStatsD: push to the Datadog agent with `metrics-exporter-dogstatsd` (the metrics-rs
//! team's exporter), which aggregates in-process and sends histograms as distributions.
//!
//! ```no_run
//! # fn main() -> Result<(), tower_vitals::dogstatsd::DogstatsdError> {
//! tower_vitals::dogstatsd::install("127.0.0.1:8125")?; // or "unixgram:///var/run/datadog/dsd.socket"
//! # Ok(())
//! # }
//! ```
//!
//! With a prefix and tags on every metric:
//!
//! ```no_run
//! # fn main() -> Result<(), tower_vitals::dogstatsd::DogstatsdError> {
//! tower_vitals::dogstatsd::builder("127.0.0.1:8125")
//!     .global_prefix("myapp")          // myapp.http.server.requests, ...
//!     .default_tag("env", "prod")
//!     .install()?;
//! # Ok(())
//! # }
//! ```
//!
//! ## When to pick it over [`statsd`](crate::statsd)
//! For the Datadog agent, at any rate: counters and gauges are aggregated in-process and
//! flushed every few seconds (3 s by default), histogram samples are packed several to a line
//! (`name:0.012:0.013:…|d|#tags`), so the request path does a few atomic operations and the
//! network carries a handful of datagrams per flush instead of one line per sample. Percentiles
//! are computed by Datadog from the distributions, across hosts. Pick
//! [`statsd`](crate::statsd) for servers that only speak classic statsd (Etsy statsd, Graphite,
//! Telegraf's statsd input): they do not understand multi-value lines or `|d`.
//!
//! Lines look like `http.server.requests:42|c|#http.route:/users/{id},http.request.method:GET,http.response.status_code:200`
//! and `http.server.request.duration:0.0021:0.0019|d|#http.route:/users/{id},…`
//! (seconds, as recorded). Tag values come sanitised from the layer.
//!
//! ## An agent that stops reading
//! Memory stays bounded whatever the agent does. Each histogram keeps at most
//! [`DEFAULT_HISTOGRAM_RESERVOIR`] samples per flush (reservoir sampling: below that many
//! requests per flush and label set every sample is sent, above it a uniform sample goes out with
//! its `@rate`, so the agent's counts stay right). The reservoir is allocated with the histogram:
//! 16 bytes per slot, about 4 KB per histogram label set at the default, 20 KB per response label
//! set of the layer (five histograms). Each datagram
//! waits at most [`DEFAULT_WRITE_TIMEOUT`] for room in the socket before it is dropped. A Unix
//! socket agent that never reads therefore costs a fixed amount of memory and a sender thread that
//! mostly sleeps; the request path never waits on it. [`DogstatsdBuilder::keep_every_sample`]
//! turns sampling off: every sample is then held until it is sent, so a stalled agent makes
//! memory grow with the request rate.

use std::fmt;
use std::time::Duration;

use metrics::{
    Counter, Gauge, Histogram, Key, KeyName, Label, Metadata, Recorder, SharedString, Unit,
};
use metrics_exporter_dogstatsd::{AggregationMode, BuildError, DogStatsDBuilder};

/// The largest datagram sent over UDP by default, in bytes (fits a 1500-byte MTU, as the Datadog
/// agent recommends). Unix sockets default to 8192 bytes, the agent's own buffer size.
pub const MAX_PAYLOAD_LEN: usize = crate::names::UDP_DATAGRAM_BYTES;

/// Default number of samples each histogram keeps per flush (reservoir sampling).
pub const DEFAULT_HISTOGRAM_RESERVOIR: usize = 256;

/// Default longest wait for room in the socket before a datagram is dropped (what Datadog's own
/// clients use for Unix sockets).
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_millis(100);

/// Configuration of the DogStatsD exporter. Start with [`builder`].
#[derive(Debug, Clone)]
pub struct DogstatsdBuilder {
    addr: String,
    global_prefix: Option<String>,
    default_tags: Vec<(String, String)>,
    flush_interval: Option<Duration>,
    write_timeout: Duration,
    max_payload_len: Option<usize>,
    reservoir: Option<usize>,
    distributions: bool,
    timestamped: bool,
    telemetry: bool,
}

/// A builder sending to `addr`: `host:port` or `udp://host:port` over UDP, `unixgram:///path`
/// (datagrams) or `unix:///path` (stream) to the agent's Unix socket. Histograms go out as
/// distributions, at most [`DEFAULT_HISTOGRAM_RESERVOIR`] samples per histogram and flush, with a
/// write timeout of [`DEFAULT_WRITE_TIMEOUT`]; UDP datagrams of at most [`MAX_PAYLOAD_LEN`] bytes.
/// The address is checked by [`build`](DogstatsdBuilder::build).
pub fn builder(addr: impl Into<String>) -> DogstatsdBuilder {
    DogstatsdBuilder {
        addr: addr.into(),
        global_prefix: None,
        default_tags: Vec::new(),
        flush_interval: None,
        write_timeout: DEFAULT_WRITE_TIMEOUT,
        max_payload_len: None,
        reservoir: Some(DEFAULT_HISTOGRAM_RESERVOIR),
        distributions: true,
        timestamped: false,
        telemetry: true,
    }
}

/// Installs a DogStatsD exporter to `addr` (defaults of [`builder`]) as the global recorder.
///
/// # Errors
/// See [`DogstatsdError`].
pub fn install(addr: impl Into<String>) -> Result<(), DogstatsdError> {
    builder(addr).install()
}

impl DogstatsdBuilder {
    /// A prefix put before every metric name, joined with a dot: `.global_prefix("myapp")`
    /// sends `myapp.http.server.requests`.
    pub fn global_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.global_prefix = Some(prefix.into());
        self
    }

    /// A tag added to every metric.
    pub fn default_tag(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.default_tags.push((key.into(), value.into()));
        self
    }

    /// How often aggregated metrics are sent (default 3 s, 10 s when
    /// [`timestamped`](Self::timestamped)). Zero is refused by [`build`](Self::build).
    pub fn flush_interval(mut self, interval: Duration) -> Self {
        self.flush_interval = Some(interval);
        self
    }

    /// The longest a datagram waits for room in the socket before it is dropped (default
    /// [`DEFAULT_WRITE_TIMEOUT`]). Only the exporter's sender thread ever waits. Zero is refused
    /// by [`build`](Self::build) (the socket would refuse it at every send).
    pub fn write_timeout(mut self, timeout: Duration) -> Self {
        self.write_timeout = timeout;
        self
    }

    /// The largest payload sent, in bytes (default [`MAX_PAYLOAD_LEN`] over UDP, 8192 over a Unix
    /// socket). Keep it at or below the agent's `dogstatsd_buffer_size`. Checked by
    /// [`build`](Self::build).
    pub fn max_payload_len(mut self, bytes: usize) -> Self {
        self.max_payload_len = Some(bytes);
        self
    }

    /// The most samples each histogram keeps per flush (default
    /// [`DEFAULT_HISTOGRAM_RESERVOIR`], at least 1). Past it, a uniform sample is sent with its
    /// sample rate. Memory: 16 bytes per slot and histogram label set, allocated with the
    /// histogram.
    pub fn histogram_reservoir(mut self, samples: usize) -> Self {
        self.reservoir = Some(samples.max(1));
        self
    }

    /// Sends every histogram sample (no sampling). Memory then grows with the number of
    /// samples waiting to be sent, which is unbounded while the agent does not read.
    pub fn keep_every_sample(mut self) -> Self {
        self.reservoir = None;
        self
    }

    /// `true` (default): histograms as Datadog distributions (`|d`, percentiles computed by
    /// Datadog across hosts); `false`: agent-side histograms (`|h`).
    pub fn distributions(mut self, distributions: bool) -> Self {
        self.distributions = distributions;
        self
    }

    /// Sends counters and gauges with a timestamp, so the agent passes them through without
    /// aggregating them again (the exporter's "aggressive" mode). Only when each agent receives
    /// from one instance of the application, or Origin Detection is on: otherwise points with the
    /// same timestamp overwrite each other.
    pub fn timestamped(mut self, timestamped: bool) -> Self {
        self.timestamped = timestamped;
        self
    }

    /// Whether the exporter reports its own health (`datadog.dogstatsd.client.*`: payloads sent
    /// and dropped, bytes...) through the global recorder (default `true`).
    pub fn telemetry(mut self, telemetry: bool) -> Self {
        self.telemetry = telemetry;
        self
    }

    /// Builds the recorder and starts its sender thread, without installing it: for a `Fanout`,
    /// or a local recorder in tests.
    ///
    /// # Errors
    /// A bad address ([`DogstatsdError::Address`]), a zero flush interval or write timeout or a
    /// payload size the transport cannot carry ([`DogstatsdError::Config`]), or no thread
    /// ([`DogstatsdError::Thread`]).
    pub fn build(self) -> Result<DogstatsdRecorder, DogstatsdError> {
        if self.write_timeout.is_zero() {
            return Err(DogstatsdError::Config("write timeout of zero".into()));
        }
        if self.flush_interval.is_some_and(|i| i.is_zero()) {
            return Err(DogstatsdError::Config("flush interval of zero".into()));
        }
        let is_unix = self.addr.starts_with("unix://") || self.addr.starts_with("unixgram://");
        let mut builder = DogStatsDBuilder::default()
            .with_remote_address(&self.addr)
            .map_err(|e| DogstatsdError::from_exporter(e, &self.addr))?
            .with_write_timeout(self.write_timeout)
            .send_histograms_as_distributions(self.distributions)
            .with_telemetry(self.telemetry)
            .with_histogram_sampling(self.reservoir.is_some())
            .with_histogram_reservoir_size(self.reservoir.unwrap_or(DEFAULT_HISTOGRAM_RESERVOIR));
        let payload = match (self.max_payload_len, is_unix) {
            (Some(bytes), _) => Some(bytes),
            (None, false) => Some(MAX_PAYLOAD_LEN),
            (None, true) => None, // the exporter's Unix-socket default
        };
        if let Some(bytes) = payload {
            builder = builder
                .with_maximum_payload_length(bytes)
                .map_err(|e| DogstatsdError::from_exporter(e, &self.addr))?;
        }
        if self.timestamped {
            builder = builder.with_aggregation_mode(AggregationMode::Aggressive);
        }
        if let Some(interval) = self.flush_interval {
            builder = builder.with_flush_interval(interval);
        }
        if let Some(prefix) = self.global_prefix {
            builder = builder.set_global_prefix(prefix);
        }
        if !self.default_tags.is_empty() {
            let labels = self
                .default_tags
                .into_iter()
                .map(|(k, v)| Label::new(k, crate::labels::sanitize_tag_value(&v)))
                .collect();
            builder = builder.with_global_labels(labels);
        }
        let inner = builder.build().map_err(|e| DogstatsdError::from_exporter(e, &self.addr))?;
        Ok(DogstatsdRecorder { inner })
    }

    /// Builds and installs the recorder as the global recorder.
    ///
    /// # Errors
    /// As [`build`](Self::build), and [`DogstatsdError::AlreadyInstalled`].
    pub fn install(self) -> Result<(), DogstatsdError> {
        let recorder = self.build()?;
        metrics::set_global_recorder(recorder).map_err(|_| DogstatsdError::AlreadyInstalled)
    }
}

/// Why the DogStatsD exporter could not be built or installed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DogstatsdError {
    /// The address did not parse or resolve (`host:port`, `udp://`, `unix://`, `unixgram://`).
    Address(String),
    /// A setting that cannot work: a zero flush interval or write timeout, a payload larger than
    /// a UDP datagram.
    Config(String),
    /// The sender thread could not be started.
    Thread,
    /// A global `metrics` recorder was already installed.
    AlreadyInstalled,
}

impl DogstatsdError {
    fn from_exporter(e: BuildError, addr: &str) -> Self {
        match e {
            BuildError::InvalidRemoteAddress { reason } => {
                DogstatsdError::Address(format!("{addr}: {reason}"))
            }
            BuildError::InvalidConfiguration { reason } => DogstatsdError::Config(reason),
            BuildError::Backend => DogstatsdError::Thread,
            BuildError::FailedToInstall => DogstatsdError::AlreadyInstalled,
        }
    }
}

impl fmt::Display for DogstatsdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DogstatsdError::Address(e) => write!(f, "bad DogStatsD address {e}"),
            DogstatsdError::Config(e) => write!(f, "DogStatsD exporter: {e}"),
            DogstatsdError::Thread => f.write_str("could not start the DogStatsD sender thread"),
            DogstatsdError::AlreadyInstalled => {
                f.write_str("a global metrics recorder is already installed in this process")
            }
        }
    }
}

impl std::error::Error for DogstatsdError {}

/// The DogStatsD recorder, a [`metrics::Recorder`]: what the layer records into. Made by
/// [`DogstatsdBuilder::build`] to install yourself or put in a `Fanout` ([`install`] installs
/// it for you).
pub struct DogstatsdRecorder {
    inner: metrics_exporter_dogstatsd::DogStatsDRecorder,
}

impl fmt::Debug for DogstatsdRecorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DogstatsdRecorder").finish_non_exhaustive()
    }
}

impl Recorder for DogstatsdRecorder {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner.describe_counter(key, unit, description);
    }
    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner.describe_gauge(key, unit, description);
    }
    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner.describe_histogram(key, unit, description);
    }
    fn register_counter(&self, key: &Key, metadata: &Metadata<'_>) -> Counter {
        self.inner.register_counter(key, metadata)
    }
    fn register_gauge(&self, key: &Key, metadata: &Metadata<'_>) -> Gauge {
        self.inner.register_gauge(key, metadata)
    }
    fn register_histogram(&self, key: &Key, metadata: &Metadata<'_>) -> Histogram {
        self.inner.register_histogram(key, metadata)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_this_crates_own() {
        assert!(matches!(builder("not an address").build(), Err(DogstatsdError::Address(_))));
        let too_big = builder("127.0.0.1:8125").max_payload_len(70_000).build();
        assert!(matches!(too_big, Err(DogstatsdError::Config(_))), "{too_big:?}");
        let zero = builder("127.0.0.1:8125").write_timeout(Duration::ZERO).build();
        assert!(matches!(zero, Err(DogstatsdError::Config(_))), "{zero:?}");
        let zero = builder("127.0.0.1:8125").flush_interval(Duration::ZERO).build();
        assert!(matches!(zero, Err(DogstatsdError::Config(_))), "{zero:?}");
        // A Unix socket path need not exist yet: the exporter connects when it sends.
        assert!(builder("unixgram:///nonexistent/dsd.socket").build().is_ok());
    }
}
