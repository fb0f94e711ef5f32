//! Native histograms next to the classic ones: two recorders fed by one layer (a `Fanout`),
//! one `/metrics` answering each scraper in the format it asks for.
//!
//! metrics-exporter-prometheus 0.18 renders a histogram configured as native only in the
//! protobuf exposition and leaves it out of the text one, so one recorder cannot serve both
//! kinds of scraper. The [`DualRecorder`] keeps a classic recorder (for the text format, with
//! [`SECONDS_BUCKETS`](super::SECONDS_BUCKETS) and friends) and a native one (for protobuf);
//! the cost is a second histogram sample per recording (see BENCHMARKS.md).

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use metrics::{
    Counter, Gauge, Histogram, Key, KeyName, Label, Metadata, Recorder, SharedString, Unit,
};
use metrics_exporter_prometheus::formatting::sanitize_label_key;
use metrics_exporter_prometheus::{Matcher, NativeHistogramConfig, PrometheusBuilder};
use metrics_util::layers::{Fanout, FanoutBuilder};

use super::{InstallError, PrometheusMetrics, UPKEEP_INTERVAL};
use crate::names;

/// Growth factor of the native histograms' buckets: 2^(1/8) ≈ 1.09 (Prometheus schema 3,
/// 8 buckets per doubling). A bucket spans 9 %, so an interpolated quantile is within a few
/// percent of the truth at any scale (measured in `scripts/fidelity.sh`).
pub const NATIVE_BUCKET_FACTOR: f64 = 1.0905077326652577;

/// At most this many buckets per native histogram (the exporter halves the resolution when a
/// histogram would need more: 160 buckets at 9 % cover 20 doublings, 1 µs to 1 s).
pub const NATIVE_MAX_BUCKETS: u32 = 160;

/// Values at or under this (1 ns, or 1e-9 byte / frame) go to the zero bucket: a measured zero
/// reads as zero.
pub const NATIVE_ZERO_THRESHOLD: f64 = 1e-9;

/// A [`PrometheusBuilder`] with recommended naming and native histograms for every time, byte
/// and frame histogram of the layer, under any prefix. Its recorder renders them only in the
/// protobuf exposition: use it through [`with_native`] or [`install_native`], which keep a
/// classic recorder for text scrapers.
pub fn native_builder() -> PrometheusBuilder {
    let config =
        NativeHistogramConfig::new(NATIVE_BUCKET_FACTOR, NATIVE_MAX_BUCKETS, NATIVE_ZERO_THRESHOLD)
            .expect("factor > 1, max buckets > 0 and threshold >= 0 are valid");
    let mut builder = PrometheusBuilder::new().with_recommended_naming(true);
    for def in names::ALL.iter().filter(|def| def.buckets.is_some()) {
        // Both spellings: before and after `NativeNames` appends the unit.
        for name in [format!(".{}", def.suffix), format!(".{}_seconds", def.suffix)] {
            builder =
                builder.set_native_histogram_for_metric(Matcher::Suffix(name), config.clone());
        }
    }
    builder
}

/// Builds the classic recorder from `classic` and the native one from `native` (start from
/// [`builder`](super::builder) and [`native_builder`]), joined in one [`DualRecorder`], and the
/// [`PrometheusMetrics`] that serves both from one `/metrics`. Not installed: install the
/// recorder yourself (alone, or in a `Fanout` of your own), and run the upkeep
/// ([`PrometheusMetrics::spawn_upkeep`]).
///
/// ```
/// let (recorder, metrics) = tower_vitals::prometheus::with_native(
///     tower_vitals::prometheus::builder(),
///     tower_vitals::prometheus::native_builder(),
/// );
/// # let _ = (recorder, metrics);
/// ```
pub fn with_native(
    classic: PrometheusBuilder,
    native: PrometheusBuilder,
) -> (DualRecorder, PrometheusMetrics) {
    let classic = classic.build_recorder();
    let native = native.build_recorder();
    let metrics = PrometheusMetrics { handle: classic.handle(), native: Some(native.handle()) };
    let fanout = FanoutBuilder::default()
        .add_recorder(classic)
        .add_recorder(NativeNames { inner: native, units: Arc::default() })
        .build();
    (DualRecorder { fanout }, metrics)
}

/// Like [`install`](super::install), with native histograms served to scrapers that ask for
/// protobuf and classic buckets to all others, from the same `/metrics`.
///
/// # Errors
/// As [`install`](super::install).
pub fn install_native() -> Result<PrometheusMetrics, InstallError> {
    let (recorder, metrics) = with_native(super::builder(), native_builder());
    metrics::set_global_recorder(recorder).map_err(|_| InstallError::AlreadyInstalled)?;
    metrics.spawn_upkeep(UPKEEP_INTERVAL).map_err(InstallError::Upkeep)?;
    Ok(metrics)
}

/// The classic and the native Prometheus recorders, fed together. Made by [`with_native`].
pub struct DualRecorder {
    fanout: Fanout,
}

impl std::fmt::Debug for DualRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DualRecorder { classic, native }")
    }
}

impl Recorder for DualRecorder {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.fanout.describe_counter(key, unit, description);
    }
    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.fanout.describe_gauge(key, unit, description);
    }
    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.fanout.describe_histogram(key, unit, description);
    }
    fn register_counter(&self, key: &Key, metadata: &Metadata<'_>) -> Counter {
        self.fanout.register_counter(key, metadata)
    }
    fn register_gauge(&self, key: &Key, metadata: &Metadata<'_>) -> Gauge {
        self.fanout.register_gauge(key, metadata)
    }
    fn register_histogram(&self, key: &Key, metadata: &Metadata<'_>) -> Histogram {
        self.fanout.register_histogram(key, metadata)
    }
}

/// Names in the protobuf exposition as the text format has them. The exporter's protobuf
/// rendering (0.18) leaves out two things its text rendering does:
/// - the unit suffix of histograms (`_seconds`): added here, so the native
///   `http_server_request_duration_seconds` has the classic one's name and one dashboard query
///   fits both. Same rule as the text format: the unit's name is appended unless the name
///   already ends with it, and `Count` adds nothing;
/// - label-key sanitising: `http.route` would go out as is, and Prometheus refuses the whole
///   scrape ("invalid label name"). Keys are sanitised here as the text format does
///   (`http_route`).
///
/// Runs at registration only (the layer registers once per label set and caches the handle).
struct NativeNames<R> {
    inner: R,
    /// Histogram name → unit suffix, from `describe_histogram`.
    units: Arc<RwLock<HashMap<String, &'static str>>>,
}

fn suffix_for(name: &str, unit: Option<Unit>) -> Option<&'static str> {
    let unit = match unit? {
        Unit::Count => return None,
        u => u.as_str(),
    };
    (!name.ends_with(unit)).then_some(unit)
}

/// `key` with sanitised label keys and, if given, the unit suffix appended to its name;
/// `None` when nothing changes (no allocation).
fn renamed(key: &Key, suffix: Option<&str>) -> Option<Key> {
    let bad_labels = key.labels().any(|l| sanitize_label_key(l.key()) != l.key());
    if suffix.is_none() && !bad_labels {
        return None;
    }
    let name = match suffix {
        Some(suffix) => format!("{}_{suffix}", key.name()),
        None => key.name().to_owned(),
    };
    let labels: Vec<Label> = key
        .labels()
        .map(|l| Label::new(sanitize_label_key(l.key()), l.value().to_owned()))
        .collect();
    Some(Key::from_parts(name, labels))
}

impl<R: Recorder> Recorder for NativeNames<R> {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner.describe_counter(key, unit, description);
    }
    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner.describe_gauge(key, unit, description);
    }
    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        match suffix_for(key.as_str(), unit) {
            Some(suffix) => {
                let renamed = format!("{}_{suffix}", key.as_str());
                self.units
                    .write()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(key.as_str().to_owned(), suffix);
                self.inner.describe_histogram(KeyName::from(renamed), unit, description);
            }
            None => self.inner.describe_histogram(key, unit, description),
        }
    }
    fn register_counter(&self, key: &Key, metadata: &Metadata<'_>) -> Counter {
        match renamed(key, None) {
            Some(key) => self.inner.register_counter(&key, metadata),
            None => self.inner.register_counter(key, metadata),
        }
    }
    fn register_gauge(&self, key: &Key, metadata: &Metadata<'_>) -> Gauge {
        match renamed(key, None) {
            Some(key) => self.inner.register_gauge(&key, metadata),
            None => self.inner.register_gauge(key, metadata),
        }
    }
    fn register_histogram(&self, key: &Key, metadata: &Metadata<'_>) -> Histogram {
        let suffix =
            self.units.read().unwrap_or_else(PoisonError::into_inner).get(key.name()).copied();
        match renamed(key, suffix) {
            Some(key) => self.inner.register_histogram(&key, metadata),
            None => self.inner.register_histogram(key, metadata),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{header, HeaderValue, Request};

    fn record_one_of_each(recorder: &DualRecorder) {
        metrics::with_local_recorder(recorder, || {
            let names = crate::MetricNames::new("http.server");
            names.describe();
            let labels = [metrics::Label::new("http.route", "/a")];
            metrics::histogram!(names.duration.clone(), labels.iter()).record(0.000_040);
            metrics::histogram!(names.output_time.clone(), labels.iter()).record(0.0);
            metrics::histogram!(names.output_bytes.clone(), labels.iter()).record(12.0);
            metrics::counter!(names.requests.clone(), labels.iter()).increment(1);
        });
    }

    #[test]
    fn text_scrapers_get_classic_buckets_protobuf_scrapers_get_native_histograms() {
        let (recorder, metrics) = with_native(super::super::builder(), native_builder());
        record_one_of_each(&recorder);

        let text = metrics.render();
        assert!(
            text.contains(
                "http_server_request_duration_seconds_bucket{http_route=\"/a\",le=\"0.00006103515625\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("http_server_output_time_seconds_bucket{http_route=\"/a\",le=\"0\"} 1")
        );

        let proto = metrics.render_protobuf().expect("native recorder");
        let proto_text = String::from_utf8_lossy(&proto);
        for name in [
            "http_server_request_duration_seconds",
            "http_server_output_time_seconds",
            "http_server_output_bytes",
            "http_server_requests_total",
        ] {
            assert!(proto_text.contains(name), "{name} missing from the protobuf exposition");
        }
        assert!(proto_text.contains("http_route") && !proto_text.contains("http.route"));

        let ask = |accept: Option<&'static str>| {
            let mut req = Request::builder().uri("/metrics");
            if let Some(a) = accept {
                req = req.header(header::ACCEPT, a);
            }
            let response = super::super::answer(&metrics, &req.body(()).expect("request"));
            (response.headers()[header::CONTENT_TYPE].clone(), response.into_body())
        };
        let prometheus_native = "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited,application/openmetrics-text;version=1.0.0;q=0.8,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        let (ct, body) = ask(Some(prometheus_native));
        assert_eq!(ct, HeaderValue::from_static(super::super::PROTOBUF_CONTENT_TYPE));
        assert_eq!(body.bytes(), proto.as_slice());
        for accept in [
            None,
            Some("text/plain;version=0.0.4;q=0.5,*/*;q=0.1"),
            Some("application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;q=0"),
        ] {
            let (ct, body) = ask(accept);
            assert_eq!(ct, HeaderValue::from_static(super::super::CONTENT_TYPE), "{accept:?}");
            assert!(body.bytes().starts_with(b"# "), "{accept:?}");
        }
    }

    #[test]
    fn unit_suffix_rule_matches_the_text_format() {
        assert_eq!(
            suffix_for("http.server.request.duration", Some(Unit::Seconds)),
            Some("seconds")
        );
        assert_eq!(suffix_for("http.server.output_bytes", Some(Unit::Bytes)), None);
        assert_eq!(suffix_for("http.server.output_blocks", Some(Unit::Count)), None);
        assert_eq!(suffix_for("x", None), None);
    }
}
