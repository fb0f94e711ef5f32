//! The protobuf exposition (length-delimited `io.prometheus.client.MetricFamily` messages):
//! every histogram carries its native buckets (schema 3) and its classic buckets in the same
//! message, so a Prometheus with `--enable-feature=native-histograms` stores the native one and
//! any other protobuf reader still finds the `le` buckets.

use prost::Message;

use super::client_model as pb;
use super::histogram::{HistogramCore, SCHEMA};
use super::recorder::{exposed_name, Family, Kind, PrometheusHandle};
use crate::exemplar::Exemplar;

/// Renders every series of `handle` as length-delimited `MetricFamily` messages.
pub(crate) fn render(handle: &PrometheusHandle) -> Vec<u8> {
    let mut out = Vec::new();
    for view in handle.families() {
        let (kind, metric_type) = match view.family {
            Family::Counter(_) => (Kind::Counter, pb::MetricType::Counter),
            Family::Gauge(_) => (Kind::Gauge, pb::MetricType::Gauge),
            Family::Histogram(_) => (Kind::Histogram, pb::MetricType::Histogram),
        };
        let metric = match &view.family {
            Family::Counter(series) => series
                .iter()
                .map(|s| pb::Metric {
                    label: labels(&s.labels),
                    counter: Some(pb::Counter {
                        value: Some(s.core.value() as f64),
                        exemplar: s.core.exemplar().as_ref().map(exemplar),
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .collect(),
            Family::Gauge(series) => series
                .iter()
                .map(|s| pb::Metric {
                    label: labels(&s.labels),
                    gauge: Some(pb::Gauge { value: Some(s.core.value()) }),
                    ..Default::default()
                })
                .collect(),
            Family::Histogram(series) => series
                .iter()
                .map(|s| pb::Metric {
                    label: labels(&s.labels),
                    histogram: Some(histogram(&s.core)),
                    ..Default::default()
                })
                .collect(),
        };
        let family = pb::MetricFamily {
            name: Some(exposed_name(&view.name, view.unit, kind)),
            help: view.help.as_ref().map(|h| h.to_string()),
            r#type: Some(metric_type as i32),
            metric,
            unit: None,
        };
        // Writing into a Vec cannot fail.
        let _ = family.encode_length_delimited(&mut out);
    }
    out
}

fn labels(pairs: &[(String, String)]) -> Vec<pb::LabelPair> {
    pairs
        .iter()
        .map(|(k, v)| pb::LabelPair { name: Some(k.clone()), value: Some(v.clone()) })
        .collect()
}

/// An exemplar as protobuf carries it: the `trace_id` label, the value, the time.
fn exemplar(e: &Exemplar) -> pb::Exemplar {
    pb::Exemplar {
        label: vec![pb::LabelPair {
            name: Some("trace_id".to_owned()),
            value: Some(e.trace.to_string()),
        }],
        value: Some(e.value),
        timestamp: Some(pb::Timestamp {
            seconds: Some((e.unix_nanos / 1_000_000_000) as i64),
            nanos: Some((e.unix_nanos % 1_000_000_000) as i32),
        }),
    }
}

/// One histogram series: count, sum, classic cumulative buckets, and the native part (schema,
/// zero bucket, spans and deltas).
///
/// Exemplars: Prometheus 2.42 reads a native histogram's exemplars from its classic buckets and
/// stores them all in the one native series, whose exemplars must come in time order: so only
/// the newest exemplar of the series goes out, on its bucket (the `+Inf` bucket has no message
/// here: its exemplar is left out). A scrape that repeats it is ignored as a duplicate.
pub(crate) fn histogram(core: &HistogramCore) -> pb::Histogram {
    let snapshot = core.snapshot();
    let layout = core.layout();
    let (spans, deltas) = snapshot.spans(layout.first_native());
    let newest = (0..layout.classic.len())
        .filter_map(|k| Some((k, core.exemplar(k)?)))
        .max_by_key(|(_, e)| e.unix_nanos);
    let mut bucket: Vec<pb::Bucket> = layout
        .classic
        .iter()
        .zip(&snapshot.classic)
        .map(|(&bound, &cumulative)| pb::Bucket {
            cumulative_count: Some(cumulative),
            upper_bound: Some(bound),
            ..Default::default()
        })
        .collect();
    if let Some((k, e)) = newest {
        bucket[k].exemplar = Some(exemplar(&e));
    }
    pb::Histogram {
        sample_count: Some(snapshot.count),
        sample_sum: Some(snapshot.sum),
        bucket,
        schema: Some(SCHEMA),
        zero_threshold: Some(layout.zero_threshold()),
        zero_count: Some(snapshot.zero_count),
        positive_span: spans
            .into_iter()
            .map(|(offset, length)| pb::BucketSpan { offset: Some(offset), length: Some(length) })
            .collect(),
        positive_delta: deltas,
        ..Default::default()
    }
}
