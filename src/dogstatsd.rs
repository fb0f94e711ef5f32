//! DogStatsD: push to the Datadog agent with `metrics-exporter-dogstatsd` (the metrics-rs
//! team's exporter), which aggregates in-process and sends histograms as distributions.
//!
//! ```no_run
//! # fn main() -> Result<(), tower_vitals::dogstatsd::BuildError> {
//! tower_vitals::dogstatsd::install("127.0.0.1:8125")?;
//! # Ok(())
//! # }
//! ```
//!
//! With a prefix and tags on every metric:
//!
//! ```no_run
//! use metrics::Label;
//! # fn main() -> Result<(), tower_vitals::dogstatsd::BuildError> {
//! tower_vitals::dogstatsd::builder("127.0.0.1:8125")?
//!     .set_global_prefix("myapp")
//!     .with_global_labels(vec![Label::new("env", "prod")])
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

pub use metrics_exporter_dogstatsd::{
    AggregationMode, BuildError, DogStatsDBuilder, DogStatsDRecorder,
};

/// The largest datagram sent, in bytes (fits a 1500-byte MTU, as the Datadog agent recommends).
pub const MAX_PAYLOAD_LEN: usize = 1432;

/// A builder sending to `addr` (`host:port` over UDP, or `unixgram:///path`), histograms as
/// distributions, datagrams of at most [`MAX_PAYLOAD_LEN`] bytes. Add to it, then `install()`
/// or `build()`.
///
/// # Errors
/// If `addr` is not a valid address.
pub fn builder(addr: &str) -> Result<DogStatsDBuilder, BuildError> {
    DogStatsDBuilder::default()
        .with_remote_address(addr)?
        .send_histograms_as_distributions(true)
        .with_maximum_payload_length(MAX_PAYLOAD_LEN)
}

/// Installs a DogStatsD exporter to `addr` (defaults of [`builder`]) as the global recorder.
///
/// # Errors
/// A bad address, or [`BuildError::FailedToInstall`] if a global recorder already exists.
pub fn install(addr: &str) -> Result<(), BuildError> {
    builder(addr)?.install()
}
