//! The metrics the layer emits: one table of definitions (name suffix, kind, unit, help text,
//! bucket family) from which the names, the descriptions, the Prometheus buckets and the statsd
//! units are all derived.

use metrics::Unit;

/// The default metric-name prefix (OpenTelemetry's `http.server`).
pub const DEFAULT_PREFIX: &str = "http.server";

/// The largest statsd / DogStatsD datagram over UDP, in bytes: it fits a 1500-byte MTU with the
/// IP and UDP headers, as the Datadog agent recommends. Both push exporters default to it.
#[cfg(any(feature = "statsd", feature = "dogstatsd"))]
pub(crate) const UDP_DATAGRAM_BYTES: usize = 1432;

/// What kind of metric a definition is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Which bucket layout a histogram gets from an exporter that needs one (Prometheus).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Buckets {
    /// Durations, recorded in seconds.
    Seconds,
    /// Sizes, in bytes.
    Bytes,
    /// Counts of body frames.
    Frames,
}

/// One metric of the layer.
#[derive(Debug)]
pub(crate) struct MetricDef {
    /// Joined to the prefix with a dot: `{prefix}.{suffix}`.
    pub(crate) suffix: &'static str,
    pub(crate) kind: Kind,
    /// The unit declared to the recorder (`describe_*!`); Prometheus appends it to the name.
    pub(crate) unit: Option<Unit>,
    pub(crate) help: &'static str,
    /// Histograms only: the bucket family.
    #[cfg_attr(not(feature = "prometheus"), allow(dead_code))]
    pub(crate) buckets: Option<Buckets>,
}

impl MetricDef {
    /// Whether values are durations in seconds (statsd timers are sent in milliseconds).
    #[cfg_attr(not(feature = "statsd"), allow(dead_code))]
    pub(crate) fn is_seconds(&self) -> bool {
        self.unit == Some(Unit::Seconds)
    }
}

const fn histogram(
    suffix: &'static str,
    unit: Unit,
    buckets: Buckets,
    help: &'static str,
) -> MetricDef {
    MetricDef { suffix, kind: Kind::Histogram, unit: Some(unit), help, buckets: Some(buckets) }
}

pub(crate) const REQUESTS: MetricDef = MetricDef {
    suffix: "requests",
    kind: Kind::Counter,
    unit: None,
    help: "Finished HTTP server requests, counted once when the response body ends, fails or is dropped.",
    buckets: None,
};
pub(crate) const DURATION: MetricDef = histogram(
    "request.duration",
    Unit::Seconds,
    Buckets::Seconds,
    "Time from the service call to the end of the response body (or its failure or drop).",
);
pub(crate) const APPLICATION_TIME: MetricDef = histogram(
    "application_time",
    Unit::Seconds,
    Buckets::Seconds,
    "Time from the service call until the response head was ready.",
);
pub(crate) const OUTPUT_TIME: MetricDef = histogram(
    "output_time",
    Unit::Seconds,
    Buckets::Seconds,
    "Time response body frames were held downstream being written, summed per response.",
);
pub(crate) const OUTPUT_BLOCKS: MetricDef = histogram(
    "output_blocks",
    Unit::Count,
    Buckets::Frames,
    "Data frames (blocks) in the response body.",
);
pub(crate) const OUTPUT_BYTES: MetricDef =
    histogram("output_bytes", Unit::Bytes, Buckets::Bytes, "Bytes in the response body.");
pub(crate) const INPUT_BLOCKS: MetricDef = histogram(
    "input_blocks",
    Unit::Count,
    Buckets::Frames,
    "Data frames (blocks) read from the request body.",
);
pub(crate) const INPUT_BYTES: MetricDef =
    histogram("input_bytes", Unit::Bytes, Buckets::Bytes, "Bytes read from the request body.");
pub(crate) const INPUT_TIME: MetricDef = histogram(
    "input_time",
    Unit::Seconds,
    Buckets::Seconds,
    "Time the service waited on the client for request body frames.",
);
pub(crate) const ACTIVE_REQUESTS: MetricDef = MetricDef {
    suffix: "active_requests",
    kind: Kind::Gauge,
    unit: Some(Unit::Count),
    help: "HTTP server requests in flight, from the service call to the end of the response.",
    buckets: None,
};
pub(crate) const UTILIZATION: MetricDef = MetricDef {
    suffix: "utilization",
    kind: Kind::Gauge,
    unit: None,
    help: "Busy time over capacity times the window (or average concurrency without a capacity).",
    buckets: None,
};

/// Every metric of the layer, in the order of [`MetricNames`]' fields.
pub(crate) const ALL: [&MetricDef; 11] = [
    &REQUESTS,
    &DURATION,
    &APPLICATION_TIME,
    &OUTPUT_TIME,
    &OUTPUT_BLOCKS,
    &OUTPUT_BYTES,
    &INPUT_BLOCKS,
    &INPUT_BYTES,
    &INPUT_TIME,
    &ACTIVE_REQUESTS,
    &UTILIZATION,
];

/// The definition whose name ends in `.{suffix}` (or is exactly `suffix`), if `name` is one
/// of the layer's metrics under any prefix.
#[cfg_attr(not(feature = "statsd"), allow(dead_code))]
pub(crate) fn find(name: &str) -> Option<&'static MetricDef> {
    ALL.iter().copied().find(|def| {
        name.strip_suffix(def.suffix).is_some_and(|head| head.is_empty() || head.ends_with('.'))
    })
}

/// The full metric names for one prefix, built once when the layer is configured.
///
/// ```
/// let names = tower_vitals::MetricNames::new("api");
/// assert_eq!(names.requests, "api.requests");
/// assert_eq!(names.duration, "api.request.duration");
/// ```
#[derive(Debug, Clone)]
pub struct MetricNames {
    /// `{prefix}.requests`
    pub requests: String,
    /// `{prefix}.request.duration`
    pub duration: String,
    /// `{prefix}.application_time`
    pub application_time: String,
    /// `{prefix}.output_time`
    pub output_time: String,
    /// `{prefix}.output_blocks`
    pub output_blocks: String,
    /// `{prefix}.output_bytes`
    pub output_bytes: String,
    /// `{prefix}.input_blocks`
    pub input_blocks: String,
    /// `{prefix}.input_bytes`
    pub input_bytes: String,
    /// `{prefix}.input_time`
    pub input_time: String,
    /// `{prefix}.active_requests`
    pub active_requests: String,
    /// `{prefix}.utilization`
    pub utilization: String,
}

impl MetricNames {
    /// The names under `prefix`, joined with a dot. The layer sanitises the prefix it is
    /// given ([`VitalsLayerBuilder::prefix`](crate::VitalsLayerBuilder::prefix)); this function takes it as is.
    pub fn new(prefix: &str) -> Self {
        let name = |def: &MetricDef| format!("{prefix}.{}", def.suffix);
        MetricNames {
            requests: name(&REQUESTS),
            duration: name(&DURATION),
            application_time: name(&APPLICATION_TIME),
            output_time: name(&OUTPUT_TIME),
            output_blocks: name(&OUTPUT_BLOCKS),
            output_bytes: name(&OUTPUT_BYTES),
            input_blocks: name(&INPUT_BLOCKS),
            input_bytes: name(&INPUT_BYTES),
            input_time: name(&INPUT_TIME),
            active_requests: name(&ACTIVE_REQUESTS),
            utilization: name(&UTILIZATION),
        }
    }

    /// Every name with its definition, in the order of [`ALL`].
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&'static MetricDef, &str)> {
        let names = [
            &self.requests,
            &self.duration,
            &self.application_time,
            &self.output_time,
            &self.output_blocks,
            &self.output_bytes,
            &self.input_blocks,
            &self.input_bytes,
            &self.input_time,
            &self.active_requests,
            &self.utilization,
        ];
        ALL.into_iter().zip(names).map(|(def, name)| (def, name.as_str()))
    }

    /// Describes every metric (unit and help text) to the current recorder.
    pub(crate) fn describe(&self) {
        for (def, name) in self.iter() {
            let name = metrics::KeyName::from(name.to_owned());
            let help = metrics::SharedString::const_str(def.help);
            metrics::with_recorder(|recorder| match def.kind {
                Kind::Counter => recorder.describe_counter(name, def.unit, help),
                Kind::Gauge => recorder.describe_gauge(name, def.unit, help),
                Kind::Histogram => recorder.describe_histogram(name, def.unit, help),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_prefix_and_the_table() {
        let n = MetricNames::new("api");
        assert_eq!(n.requests, "api.requests");
        assert_eq!(n.duration, "api.request.duration");
        assert_eq!(n.active_requests, "api.active_requests");
        for (def, name) in n.iter() {
            assert_eq!(name, format!("api.{}", def.suffix));
            assert_eq!(find(name).map(|d| d.suffix), Some(def.suffix));
            assert_eq!(def.kind == Kind::Histogram, def.buckets.is_some(), "{name}");
        }
    }

    #[test]
    fn find_needs_a_whole_suffix() {
        assert!(find("http.server.output_time").is_some_and(MetricDef::is_seconds));
        assert!(find("api.xoutput_time").is_none());
        assert!(find("output_bytes").is_some_and(|d| !d.is_seconds()));
        assert!(find("http.server.other").is_none());
    }
}
