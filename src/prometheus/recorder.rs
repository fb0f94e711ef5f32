//! The crate's `metrics::Recorder` for Prometheus: a registry of pre-bucketed series (a lock
//! taken only when a series is registered and when a scrape reads the list), its builder, and
//! the handle that renders it.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};

use super::histogram::{CounterCore, GaugeCore, HistogramCore, Layout, SumKind, WithExemplars};
use crate::exemplar;
use crate::names::{self, Buckets};

/// Which metric names a bucket layout set with
/// [`set_buckets_for_metric`](PrometheusBuilder::set_buckets_for_metric) applies to, matched
/// against the name the metric is recorded under (`http.server.request.duration`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Matcher {
    /// The whole name.
    Full(String),
    /// Names starting with this.
    Prefix(String),
    /// Names ending with this.
    Suffix(String),
}

impl Matcher {
    fn matches(&self, name: &str) -> bool {
        match self {
            Matcher::Full(full) => name == full,
            Matcher::Prefix(prefix) => name.starts_with(prefix.as_str()),
            Matcher::Suffix(suffix) => name.ends_with(suffix.as_str()),
        }
    }
}

/// Why a [`PrometheusBuilder`] setting was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BuildError {
    /// A bucket list was empty, not strictly increasing, or held a `NaN` or an infinity.
    InvalidBuckets,
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::InvalidBuckets => {
                f.write_str("bucket bounds must be finite, strictly increasing and at least one")
            }
        }
    }
}

impl std::error::Error for BuildError {}

/// Configures a [`PrometheusRecorder`]: global labels and classic bucket bounds. Start from
/// [`builder`](super::builder), which knows the layer's metrics.
#[derive(Clone, Debug, Default)]
pub struct PrometheusBuilder {
    global_labels: Vec<(String, String)>,
    buckets: Vec<(Matcher, Vec<f64>)>,
    /// Classic buckets on every histogram of the layer, not only the two latency ones.
    all_classic: bool,
    /// Read the process's figures at each render.
    #[cfg(feature = "process")]
    process: bool,
}

/// Default classic bounds of histograms that are not the layer's (Prometheus' own defaults).
const DEFAULT_BUCKETS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Native range (powers of two) of each family: zero threshold and top bucket.
/// Seconds: 0.93 ns .. 68 min; bytes: 0.5 .. 1 TiB; frames: 0.5 .. 2^32; others: 2^-30 .. 2^42.
fn native_range(family: Option<Buckets>) -> (i32, i32) {
    match family {
        Some(Buckets::Seconds) => (-30, 12),
        Some(Buckets::Bytes) => (-1, 40),
        Some(Buckets::Frames) => (-1, 32),
        None => (-30, 42),
    }
}

impl PrometheusBuilder {
    /// A builder with no global labels and the default layouts (matched by name suffix, under
    /// any prefix): `request.duration` and `application_time` get
    /// [`DURATION_BUCKETS`](super::DURATION_BUCKETS); the layer's other histograms
    /// (`output_time`, `output_bytes`, `output_blocks` and their `input_` twins) get no classic
    /// bound, only `+Inf`, `_sum` and `_count` (exact means; their native histograms keep every
    /// bucket); any other histogram gets Prometheus' default bounds (5 ms to 10 s). 60 classic
    /// series per response label set; [`all_classic_buckets`](Self::all_classic_buckets) gives
    /// all 119.
    pub fn new() -> Self {
        PrometheusBuilder::default()
    }

    /// Classic buckets on every histogram of the layer:
    /// [`SECONDS_BUCKETS`](super::SECONDS_BUCKETS) on every time histogram (`0` and 3.8 µs to
    /// 32 s), [`BYTES_BUCKETS`](super::BYTES_BUCKETS) and
    /// [`FRAMES_BUCKETS`](super::FRAMES_BUCKETS) on the byte and frame histograms, so
    /// `histogram_quantile` works on output time, sizes and frames of a classic scrape too:
    /// 119 classic series per response label set instead of 60. Native histograms carry all of
    /// it in one series per histogram (about 20× smaller): prefer them where Prometheus has
    /// `--enable-feature=native-histograms`. Bounds set with
    /// [`set_buckets_for_metric`](Self::set_buckets_for_metric) still win.
    #[must_use]
    pub fn all_classic_buckets(mut self) -> Self {
        self.all_classic = true;
        self
    }

    /// Adds a label to every series (a series' own label of the same key wins).
    #[must_use]
    pub fn add_global_label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        let key = sanitize_label_key(&key.into());
        self.global_labels.retain(|(k, _)| *k != key);
        self.global_labels.push((key, value.into()));
        self
    }

    /// Sets the classic bucket bounds (without `+Inf`) of the histograms `matcher` selects; the
    /// latest matching setting wins. Native buckets are unaffected.
    ///
    /// # Errors
    /// [`BuildError::InvalidBuckets`] if `bounds` is empty, not strictly increasing or not
    /// finite.
    pub fn set_buckets_for_metric(
        mut self,
        matcher: Matcher,
        bounds: &[f64],
    ) -> Result<Self, BuildError> {
        let valid = !bounds.is_empty()
            && bounds.iter().all(|b| b.is_finite())
            && bounds.windows(2).all(|w| w[0] < w[1]);
        if !valid {
            return Err(BuildError::InvalidBuckets);
        }
        self.buckets.push((matcher, bounds.to_vec()));
        Ok(self)
    }

    /// Reads the process's CPU time, resident memory, open files and threads at every render
    /// (the `process_*` names of Prometheus' client libraries, read by `metrics-process`), so
    /// each scrape carries them as of that scrape. Off by default.
    #[cfg(feature = "process")]
    #[must_use]
    pub fn process_metrics(mut self) -> Self {
        self.process = true;
        self
    }

    /// Builds the recorder (not installed: install it with `metrics::set_global_recorder`,
    /// put it in a `Fanout`, or use it as a local recorder in a test).
    pub fn build_recorder(self) -> PrometheusRecorder {
        PrometheusRecorder { inner: Arc::new(Inner { config: self, registry: RwLock::default() }) }
    }

    fn layout(&self, name: &str) -> Layout {
        let def = names::find(name);
        let family = def.and_then(|def| def.buckets);
        let (min_exp, max_exp) = native_range(family);
        let sum = match family {
            Some(Buckets::Seconds) => SumKind::Nanos,
            Some(Buckets::Bytes | Buckets::Frames) => SumKind::Units,
            None => SumKind::Float,
        };
        let configured =
            self.buckets.iter().rev().find(|(m, _)| m.matches(name)).map(|(_, b)| b.as_slice());
        let classic = configured.unwrap_or(match (def, family) {
            (_, Some(family)) if self.all_classic => super::buckets(family),
            (Some(def), Some(_)) => super::budget_buckets(def),
            _ => DEFAULT_BUCKETS,
        });
        Layout::new(classic, min_exp, max_exp, sum)
    }
}

/// The kind of a metric family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One series as the encoders see it: its labels, ready to write, and its storage.
pub(crate) struct Series<T> {
    /// `k="v",k2="v2"` (sanitised keys, escaped values, global labels last), empty if none.
    pub(crate) labels_text: Box<str>,
    /// The same pairs, unescaped, for protobuf.
    pub(crate) labels: Box<[(String, String)]>,
    pub(crate) core: Arc<T>,
}

impl<T> Clone for Series<T> {
    fn clone(&self) -> Self {
        Series {
            labels_text: self.labels_text.clone(),
            labels: self.labels.clone(),
            core: Arc::clone(&self.core),
        }
    }
}

/// Series of one name, in registration order.
pub(crate) enum Family {
    Counter(Vec<Series<CounterCore>>),
    Gauge(Vec<Series<GaugeCore>>),
    Histogram(Vec<Series<HistogramCore>>),
}

#[derive(Default)]
struct Registry {
    counters: HashMap<Key, Arc<CounterCore>>,
    gauges: HashMap<Key, Arc<GaugeCore>>,
    histograms: HashMap<Key, Arc<HistogramCore>>,
    /// (kind, sanitised name) → series; sorted, so every render lists families in one order.
    families: BTreeMap<(String, Kind), Family>,
    /// Sanitised name → unit and help.
    descriptions: HashMap<String, (Option<Unit>, SharedString)>,
}

struct Inner {
    config: PrometheusBuilder,
    registry: RwLock<Registry>,
}

/// The crate's Prometheus recorder: counters, gauges and pre-bucketed histograms (classic
/// `le` buckets and native schema-3 buckets from one record), striped per thread, no sample
/// stored. Send + Sync + 'static: install it globally, or in a `Fanout` beside another
/// recorder. Made by [`PrometheusBuilder::build_recorder`].
#[derive(Clone)]
pub struct PrometheusRecorder {
    inner: Arc<Inner>,
}

impl fmt::Debug for PrometheusRecorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrometheusRecorder").finish_non_exhaustive()
    }
}

/// A handle to a [`PrometheusRecorder`]'s series: what a render reads. Cheap to clone.
#[derive(Clone)]
pub struct PrometheusHandle {
    inner: Arc<Inner>,
}

impl fmt::Debug for PrometheusHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrometheusHandle").finish_non_exhaustive()
    }
}

impl PrometheusRecorder {
    /// The handle that renders this recorder's series.
    pub fn handle(&self) -> PrometheusHandle {
        PrometheusHandle { inner: Arc::clone(&self.inner) }
    }
}

/// What a render reads: each family's name (sanitised, before unit and `_total`), kind, unit,
/// help and series, in a stable order.
pub(crate) struct FamilyView {
    pub(crate) name: String,
    pub(crate) unit: Option<Unit>,
    pub(crate) help: Option<SharedString>,
    pub(crate) family: Family,
}

impl PrometheusHandle {
    /// The text exposition (format 0.0.4, classic `le` buckets) of every series.
    pub fn render(&self) -> String {
        self.before_render();
        super::text::render(self)
    }

    /// The OpenMetrics text exposition (1.0.0: classic `le` buckets, the latest exemplar of
    /// each bucket and counter recorded by a layer with exemplars on, `# EOF`) of every series.
    pub fn render_openmetrics(&self) -> String {
        self.before_render();
        super::text::render_openmetrics(self)
    }

    /// The protobuf exposition (length-delimited `io.prometheus.client.MetricFamily`
    /// messages, native and classic buckets in each histogram) of every series.
    pub fn render_protobuf(&self) -> Vec<u8> {
        self.before_render();
        super::protobuf::render(self)
    }

    /// Runs at the start of every render (text and protobuf), before any series is read: the
    /// layers' gauges are published (`active_requests` and `utilization` as of this scrape) and,
    /// when asked for, the process's figures are read into this recorder.
    fn before_render(&self) {
        crate::gauges::publish_gauges();
        #[cfg(feature = "process")]
        if self.inner.config.process {
            let recorder = PrometheusRecorder { inner: Arc::clone(&self.inner) };
            crate::process::collect_into(&recorder);
        }
    }

    /// The families to render: a copy of the series list (handles, not values) taken under the
    /// registry's read lock, which is released before any value is read.
    pub(crate) fn families(&self) -> Vec<FamilyView> {
        let registry = self.inner.registry.read().unwrap_or_else(PoisonError::into_inner);
        registry
            .families
            .iter()
            .map(|((name, _), family)| {
                let description = registry.descriptions.get(name);
                FamilyView {
                    name: name.clone(),
                    unit: description.and_then(|d| d.0),
                    help: description.map(|d| d.1.clone()),
                    family: match family {
                        Family::Counter(s) => Family::Counter(s.clone()),
                        Family::Gauge(s) => Family::Gauge(s.clone()),
                        Family::Histogram(s) => Family::Histogram(s.clone()),
                    },
                }
            })
            .collect()
    }
}

impl Inner {
    fn describe(&self, key: KeyName, unit: Option<Unit>, help: SharedString) {
        let name = sanitize_metric_name(key.as_str());
        let mut registry = self.registry.write().unwrap_or_else(PoisonError::into_inner);
        registry.descriptions.insert(name, (unit, help));
    }

    fn labels(&self, key: &Key) -> (Box<str>, Box<[(String, String)]>) {
        let mut labels: Vec<(String, String)> =
            key.labels().map(|l| (sanitize_label_key(l.key()), l.value().to_owned())).collect();
        for (k, v) in &self.config.global_labels {
            if !labels.iter().any(|(key, _)| key == k) {
                labels.push((k.clone(), v.clone()));
            }
        }
        let mut text = String::new();
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                text.push(',');
            }
            text.push_str(k);
            text.push_str("=\"");
            escape_label_value(&mut text, v);
            text.push('"');
        }
        (text.into(), labels.into())
    }
}

macro_rules! register {
    ($self:ident, $key:ident, $map:ident, $variant:ident, $new:expr) => {{
        let inner = &$self.inner;
        if let Some(core) =
            inner.registry.read().unwrap_or_else(PoisonError::into_inner).$map.get($key)
        {
            return Arc::clone(core);
        }
        let mut registry = inner.registry.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(core) = registry.$map.get($key) {
            return Arc::clone(core);
        }
        let core = Arc::new($new);
        registry.$map.insert($key.clone(), Arc::clone(&core));
        let (labels_text, labels) = inner.labels($key);
        let series = Series { labels_text, labels, core: Arc::clone(&core) };
        let name = sanitize_metric_name($key.name());
        match registry
            .families
            .entry((name, Kind::$variant))
            .or_insert_with(|| Family::$variant(Vec::new()))
        {
            Family::$variant(list) => list.push(series),
            _ => unreachable!("families are keyed by kind"),
        }
        core
    }};
}

impl PrometheusRecorder {
    fn counter_core(&self, key: &Key) -> Arc<CounterCore> {
        register!(self, key, counters, Counter, CounterCore::new())
    }
    fn gauge_core(&self, key: &Key) -> Arc<GaugeCore> {
        register!(self, key, gauges, Gauge, GaugeCore::new())
    }
    fn histogram_core(&self, key: &Key) -> Arc<HistogramCore> {
        register!(self, key, histograms, Histogram, {
            HistogramCore::new(self.inner.config.layout(key.name()))
        })
    }
}

impl Recorder for PrometheusRecorder {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner.describe(key, unit, description);
    }
    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner.describe(key, unit, description);
    }
    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner.describe(key, unit, description);
    }
    fn register_counter(&self, key: &Key, _metadata: &Metadata<'_>) -> Counter {
        let core = self.counter_core(key);
        if exemplar::wanted(key.name()) {
            return Counter::from_arc(Arc::new(WithExemplars(core)));
        }
        Counter::from_arc(core)
    }
    fn register_gauge(&self, key: &Key, _metadata: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.gauge_core(key))
    }
    fn register_histogram(&self, key: &Key, _metadata: &Metadata<'_>) -> Histogram {
        let core = self.histogram_core(key);
        if exemplar::wanted(key.name()) {
            return Histogram::from_arc(Arc::new(WithExemplars(core)));
        }
        Histogram::from_arc(core)
    }
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`: anything else becomes `_` (`http.server.requests` →
/// `http_server_requests`).
pub(crate) fn sanitize_metric_name(name: &str) -> String {
    name.chars()
        .enumerate()
        .map(|(i, c)| {
            let ok =
                c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit());
            if ok {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`: anything else becomes `_` (`http.route` → `http_route`), in both
/// encodings.
pub(crate) fn sanitize_label_key(key: &str) -> String {
    key.chars()
        .enumerate()
        .map(|(i, c)| {
            let ok = c.is_ascii_alphabetic() || c == '_' || (i > 0 && c.is_ascii_digit());
            if ok {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Label values in the text format: `\`, `"` and line feeds escaped.
pub(crate) fn escape_label_value(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// The name a family is exposed under: the unit appended unless the name already ends with it
/// (`Count` adds nothing, `Percent` is `ratio`), then `_total` for counters.
pub(crate) fn exposed_name(name: &str, unit: Option<Unit>, kind: Kind) -> String {
    let mut out = name.to_owned();
    let unit = match unit {
        None | Some(Unit::Count) => None,
        Some(Unit::Percent) => Some("ratio"),
        Some(unit) => Some(unit.as_str()),
    };
    if let Some(unit) = unit {
        let base = out.strip_suffix("_total").unwrap_or(&out);
        if !base.ends_with(unit) {
            let total = out.len() != base.len();
            let base = base.to_owned();
            out = format!("{base}_{unit}{}", if total { "_total" } else { "" });
        }
    }
    if kind == Kind::Counter && !out.ends_with("_total") {
        out.push_str("_total");
    }
    out
}
