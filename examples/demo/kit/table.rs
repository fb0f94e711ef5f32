//! The demo's per-route table: a `metrics` recorder that keeps what the layer records in
//! hdrhistograms (installed next to the Prometheus recorder with a `Fanout`), and its rendering.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, PoisonError};

use hdrhistogram::Histogram as Hdr;
use metrics::{
    Counter, CounterFn, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SharedString, Unit,
};
use tower_vitals::labels::{ERROR_TYPE, ROUTE};
use tower_vitals::{MetricNames, DEFAULT_PREFIX};

/// Below this many bytes per block, over [`SMALL_BLOCK_MIN_BLOCKS`] blocks per response, a route
/// is flagged: each block is one write and (chunked) one chunk header.
pub const SMALL_BLOCK_BYTES: f64 = 1024.0;
/// Flag only routes that send many blocks per response (one small JSON block is fine).
pub const SMALL_BLOCK_MIN_BLOCKS: f64 = 16.0;

/// The histograms of the table, in the order they are kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Total,
    Application,
    Output,
    Bytes,
    Blocks,
}

const KINDS: usize = 5;

impl Kind {
    /// Times are kept in microseconds, counts as they are.
    fn scale(self) -> f64 {
        match self {
            Kind::Total | Kind::Application | Kind::Output => 1e6,
            Kind::Bytes | Kind::Blocks => 1.0,
        }
    }
}

/// What the layer recorded for one route.
pub struct RouteStats {
    /// `requests` counter total.
    pub requests: u64,
    /// `requests` by `error.type`.
    pub errors: BTreeMap<String, u64>,
    hists: [Hdr<u64>; KINDS],
    sums: [f64; KINDS],
}

impl RouteStats {
    fn new() -> Self {
        let hdr = || Hdr::<u64>::new(3).expect("3 significant figures is a valid hdrhistogram");
        RouteStats {
            requests: 0,
            errors: BTreeMap::new(),
            hists: std::array::from_fn(|_| hdr()),
            sums: [0.0; KINDS],
        }
    }

    fn quantile_ms(&self, kind: Kind, q: f64) -> f64 {
        self.hists[kind as usize].value_at_quantile(q) as f64 / 1e3
    }

    fn mean(&self, kind: Kind) -> f64 {
        let n = self.hists[kind as usize].len();
        if n == 0 {
            0.0
        } else {
            self.sums[kind as usize] / n as f64
        }
    }

    /// Total bytes over total blocks (`None` without blocks).
    pub fn bytes_per_block(&self) -> Option<f64> {
        let blocks = self.sums[Kind::Blocks as usize];
        (blocks > 0.0).then(|| self.sums[Kind::Bytes as usize] / blocks)
    }

    /// Whether this route writes its bodies in many small blocks.
    pub fn small_blocks(&self) -> bool {
        self.bytes_per_block().is_some_and(|b| b < SMALL_BLOCK_BYTES)
            && self.mean(Kind::Blocks) >= SMALL_BLOCK_MIN_BLOCKS
    }
}

type State = Arc<Mutex<BTreeMap<String, RouteStats>>>;

/// A recorder that feeds the table. Clone it: clones share the same data.
#[derive(Clone)]
pub struct TableRecorder {
    names: Arc<MetricNames>,
    state: State,
}

impl Default for TableRecorder {
    fn default() -> Self {
        Self::new()
    }
}

impl TableRecorder {
    /// A recorder for the layer's default names (prefix `http.server`).
    pub fn new() -> Self {
        TableRecorder { names: Arc::new(MetricNames::new(DEFAULT_PREFIX)), state: State::default() }
    }

    /// Runs `f` on the per-route data.
    pub fn with<R>(&self, f: impl FnOnce(&BTreeMap<String, RouteStats>) -> R) -> R {
        f(&self.state.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn kind(&self, name: &str) -> Option<Kind> {
        let n = &self.names;
        [
            (&n.duration, Kind::Total),
            (&n.application_time, Kind::Application),
            (&n.output_time, Kind::Output),
            (&n.output_bytes, Kind::Bytes),
            (&n.output_blocks, Kind::Blocks),
        ]
        .into_iter()
        .find_map(|(metric, kind)| (metric.as_str() == name).then_some(kind))
    }
}

fn label(key: &Key, name: &str) -> Option<String> {
    key.labels().find(|l| l.key() == name).map(|l| l.value().to_owned())
}

struct RouteCounter {
    state: State,
    route: String,
    error: Option<String>,
}

impl CounterFn for RouteCounter {
    fn increment(&self, value: u64) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let stats = state.entry(self.route.clone()).or_insert_with(RouteStats::new);
        stats.requests += value;
        if let Some(error) = &self.error {
            *stats.errors.entry(error.clone()).or_default() += value;
        }
    }
    fn absolute(&self, _value: u64) {}
}

struct RouteHistogram {
    state: State,
    route: String,
    kind: Kind,
}

impl HistogramFn for RouteHistogram {
    fn record(&self, value: f64) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let stats = state.entry(self.route.clone()).or_insert_with(RouteStats::new);
        let i = self.kind as usize;
        let scaled = (value.max(0.0) * self.kind.scale()).round() as u64;
        // Auto-resizing histogram: recording cannot fail for a u64.
        let _ = stats.hists[i].record(scaled);
        stats.sums[i] += value.max(0.0);
    }
}

impl Recorder for TableRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        if key.name() != self.names.requests {
            return Counter::noop();
        }
        let route = label(key, ROUTE).unwrap_or_default();
        let error = label(key, ERROR_TYPE);
        Counter::from_arc(Arc::new(RouteCounter { state: self.state.clone(), route, error }))
    }

    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        let Some(kind) = self.kind(key.name()) else { return Histogram::noop() };
        let route = label(key, ROUTE).unwrap_or_default();
        Histogram::from_arc(Arc::new(RouteHistogram { state: self.state.clone(), route, kind }))
    }
}

/// Routes whose p99 output time is at least 50 ms and 10x their p99 application time:
/// (route, output p99 ms, application p99 ms). Their time goes to delivery, not the handler.
pub fn delivery_bound(table: &TableRecorder) -> Vec<(String, f64, f64)> {
    table.with(|routes| {
        routes
            .iter()
            .map(|(name, r)| {
                let (out, app) =
                    (r.quantile_ms(Kind::Output, 0.99), r.quantile_ms(Kind::Application, 0.99));
                (name.clone(), out, app)
            })
            .filter(|(_, out, app)| *out >= 50.0 && *out >= 10.0 * app)
            .collect()
    })
}

const LATENCY: &str = "ms: p50 p95 p99";

/// The table, as text. `sent` is what the load generator sent per route (shown beside what the
/// layer recorded).
pub fn render(table: &TableRecorder, sent: &BTreeMap<String, u64>) -> String {
    table.with(|routes| {
        let mut names: Vec<&String> = routes.keys().chain(sent.keys()).collect();
        names.sort();
        names.dedup();
        let width = names.iter().map(|n| n.len()).max().unwrap_or(0).max(LATENCY.len());
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{:<width$}  {:>6}  {:>8}  {:<24}  {:>10}  {:>11}  {:>11}",
            "route",
            "sent",
            "recorded",
            "errors (error.type)",
            "bytes/resp",
            "blocks/resp",
            "bytes/block"
        );
        let empty = RouteStats::new();
        for name in &names {
            let r = routes.get(*name).unwrap_or(&empty);
            let errors = if r.errors.is_empty() {
                "-".to_owned()
            } else {
                r.errors.iter().map(|(k, v)| format!("{k}:{v}")).collect::<Vec<_>>().join(" ")
            };
            let per_block = r.bytes_per_block().map_or("-".to_owned(), |b| format!("{b:.0}"));
            let flag = if r.small_blocks() { "  <-- small blocks" } else { "" };
            let _ = writeln!(
                s,
                "{:<width$}  {:>6}  {:>8}  {:<24}  {:>10.0}  {:>11.1}  {:>11}{flag}",
                name,
                sent.get(*name).copied().unwrap_or(0),
                r.requests,
                errors,
                r.mean(Kind::Bytes),
                r.mean(Kind::Blocks),
                per_block,
            );
        }
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "{:<width$}  {:>26}  {:>26}  {:>26}",
            LATENCY, "application", "output", "total"
        );
        for name in &names {
            let Some(r) = routes.get(*name) else { continue };
            let q = |kind| {
                format!(
                    "{:>8.2} {:>8.2} {:>8.2}",
                    r.quantile_ms(kind, 0.5),
                    r.quantile_ms(kind, 0.95),
                    r.quantile_ms(kind, 0.99)
                )
            };
            let _ = writeln!(
                s,
                "{:<width$}  {:>26}  {:>26}  {:>26}",
                name,
                q(Kind::Application),
                q(Kind::Output),
                q(Kind::Total)
            );
        }
        s
    })
}

/// Where each route's time went, as exact means in ms: (route, total, application, output,
/// body production). Body production is what is left: the time the body took to produce its
/// frames after the head (a stream pausing, a slow generator), `total - application - output`.
pub fn time_split(table: &TableRecorder) -> Vec<(String, f64, f64, f64, f64)> {
    table.with(|routes| {
        routes
            .iter()
            .filter(|(_, r)| !r.hists[Kind::Total as usize].is_empty())
            .map(|(name, r)| {
                let (total, app, out) = (
                    r.mean(Kind::Total) * 1e3,
                    r.mean(Kind::Application) * 1e3,
                    r.mean(Kind::Output) * 1e3,
                );
                (name.clone(), total, app, out, (total - app - out).max(0.0))
            })
            .collect()
    })
}
