//! Fidelity: what the Grafana panels show is what happened.
//!
//! The demo app and its traffic (`examples/demo/kit`) run for a bounded time, recording through
//! the layer into the crate's Prometheus recorder (classic and native histograms) and into an exact recorder that
//! keeps every sample. Two real Prometheus 2.42 servers scrape the same `/metrics`, one classic,
//! one with `--enable-feature=native-histograms`. When the load is over and both have scraped
//! the final state, the panels' own expressions (from `dashboards/grafana/tower-vitals.json`,
//! with `rate(x[$__rate_interval])` read as the cumulative `x`, so the window is the whole run,
//! as for the exact values) are compared with exact quantiles and means of the same samples.
//!
//! Output time has percentiles on the native server only (the default recorder keeps its
//! `_sum` and `_count`, the panel's mean, for classic scrapes).
//!
//! Prints route × phase × quantile, shown vs exact, per mode; fails beyond the targets:
//! classic median ≤ 20 %, max ≤ 100 %; native median ≤ 5 %, max ≤ 12 %; means ≤ 1 %.
//! Values under 0.05 ms count as 0.05 ms. Only cells with at least 2 samples beyond the
//! quantile are compared.
//!
//! `FIDELITY_SECONDS` (default 12) sets the length of the run; `scripts/fidelity.sh` runs it
//! longer and prints the tables.
#![cfg(feature = "prometheus")]

mod support;

#[allow(dead_code, unreachable_pub)]
#[path = "../examples/demo/kit/mod.rs"]
mod kit;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use metrics::{
    Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};
use metrics_util::layers::FanoutBuilder;
use serde_json::Value;
use support::components::{have, Component, Prometheus};
use tower_vitals::labels::ROUTE;
use tower_vitals::{MetricNames, DEFAULT_PREFIX};

const GRAFANA: &str = include_str!("../dashboards/grafana/tower-vitals.json");

/// Relative errors are computed with values under this (0.05 ms) raised to it.
const FLOOR_SECONDS: f64 = 50e-6;

/// Targets (median, max) per mode.
const CLASSIC_TARGET: (f64, f64) = (0.20, 1.00);
const NATIVE_TARGET: (f64, f64) = (0.05, 0.12);
/// Means are exact in both modes (`_sum / _count`, `histogram_sum / histogram_count`).
const MEAN_TARGET: f64 = 0.01;

const QUANTILES: [f64; 3] = [0.5, 0.95, 0.99];

// ------------------------------------------------------------------------------------------
// The exact recorder: every sample of the three time histograms, per route.

type Samples = Arc<Mutex<BTreeMap<(String, &'static str), Vec<f64>>>>;

#[derive(Clone)]
struct Exact {
    names: Arc<MetricNames>,
    samples: Samples,
}

struct ExactHistogram {
    samples: Samples,
    key: (String, &'static str),
}

impl HistogramFn for ExactHistogram {
    fn record(&self, value: f64) {
        let mut samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        samples.entry(self.key.clone()).or_default().push(value);
    }
}

/// The phases compared, by their panel's title and the layer's metric.
const PHASES: [&str; 3] = ["application", "output", "total"];

impl Recorder for Exact {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, _: &Key, _: &Metadata<'_>) -> Counter {
        Counter::noop()
    }
    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        let n = &self.names;
        let phase = if key.name() == n.duration {
            "total"
        } else if key.name() == n.application_time {
            "application"
        } else if key.name() == n.output_time {
            "output"
        } else {
            return Histogram::noop();
        };
        let route = key
            .labels()
            .find(|l| l.key() == ROUTE)
            .map(|l| l.value().to_owned())
            .unwrap_or_default();
        Histogram::from_arc(Arc::new(ExactHistogram {
            samples: self.samples.clone(),
            key: (route, phase),
        }))
    }
}

// ------------------------------------------------------------------------------------------
// The demo, bounded: serves until told to stop, after its load is over.

struct Run {
    addr: SocketAddr,
    load_done: std::sync::mpsc::Receiver<u64>,
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

fn start_demo(seconds: f64, exact: Exact) -> Run {
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (done_tx, load_done) = std::sync::mpsc::channel();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let dual = tower_vitals::prometheus::builder().build_recorder();
        let metrics = tower_vitals::prometheus::PrometheusMetrics::from_handle(dual.handle());
        let fanout = FanoutBuilder::default().add_recorder(dual).add_recorder(exact).build();
        let _local = metrics::set_default_local_recorder(&fanout);
        let runtime =
            tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(async move {
            let server = kit::Server::start(0, &metrics).await.expect("demo app");
            addr_tx.send(server.addr).expect("send addr");
            let load = kit::load::Load::start(server.addr, 1.0);
            tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
            let sent = load.finish().await;
            assert!(server.settle(Duration::from_secs(10)).await, "requests still in flight");
            done_tx.send(sent.total()).expect("send total");
            // Keep serving /metrics until both Prometheus servers scraped the final state.
            let _ = tokio::time::timeout(Duration::from_secs(120), stopped).await;
            server.stop().await;
        });
    });
    let addr = addr_rx.recv_timeout(Duration::from_secs(20)).expect("demo started");
    Run { addr, load_done, stop, thread }
}

// ------------------------------------------------------------------------------------------
// Panel expressions, read as cumulative over the whole run.

fn panel_targets(title_part: &str) -> Vec<(String, String)> {
    let dash: Value = serde_json::from_str(GRAFANA).expect("dashboard JSON");
    let panel = dash["panels"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["title"].as_str().is_some_and(|t| t.contains(title_part)))
        .unwrap_or_else(|| panic!("no panel titled {title_part:?}"));
    panel["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            let legend = t["legendFormat"].as_str().unwrap_or("").to_owned();
            (legend, cumulative(t["expr"].as_str().expect("expr")))
        })
        .collect()
}

/// `rate(x[$__rate_interval])` → `x` (the whole run), dashboard variables → match-all.
fn cumulative(expr: &str) -> String {
    let mut out = String::new();
    let mut rest = expr;
    while let Some(at) = rest.find("rate(") {
        // Only a bare `rate(`, not `irate(` and the like (the dashboard has none, but be exact).
        let is_call = at == 0 || !rest.as_bytes()[at - 1].is_ascii_alphanumeric();
        let inner = &rest[at + 5..];
        match (is_call, inner.find("[$__rate_interval])")) {
            (true, Some(end)) => {
                out.push_str(&rest[..at]);
                out.push_str(&inner[..end]);
                rest = &inner[end + "[$__rate_interval])".len()..];
            }
            _ => {
                out.push_str(&rest[..at + 5]);
                rest = inner;
            }
        }
    }
    out.push_str(rest);
    for var in ["$job", "$instance", "$route"] {
        out = out.replace(var, ".*");
    }
    assert!(!out.contains('$') && !out.contains("rate("), "left over: {out}");
    out
}

/// route → value of an instant query.
fn by_route(prometheus: &Prometheus, promql: &str) -> BTreeMap<String, f64> {
    prometheus
        .samples(promql)
        .into_iter()
        .map(|s| (s.labels.get("http_route").cloned().unwrap_or_default(), s.value))
        .collect()
}

fn exact_quantile(sorted: &[f64], q: f64) -> f64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).max(1);
    sorted[rank - 1]
}

fn rel_error(shown: f64, exact: f64) -> f64 {
    let (s, e) = (shown.max(FLOOR_SECONDS), exact.max(FLOOR_SECONDS));
    (s - e).abs() / e
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

fn ms(v: f64) -> String {
    if v.is_nan() {
        "-".to_owned()
    } else {
        format!("{:.3}", v * 1e3)
    }
}

#[test]
fn grafana_percentiles_and_means_match_exact_values_in_classic_and_native_mode() {
    if !have(&[Component::Prometheus]) {
        return;
    }
    let seconds: f64 =
        std::env::var("FIDELITY_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(12.0);
    let exact =
        Exact { names: Arc::new(MetricNames::new(DEFAULT_PREFIX)), samples: Samples::default() };
    let run = start_demo(seconds, exact.clone());
    let targets = [run.addr];
    let native = std::thread::spawn(move || {
        Prometheus::start_with(&targets, &["--enable-feature=native-histograms"])
    });
    let classic = Prometheus::start(&targets);
    let native = native.join().expect("native prometheus");
    let modes = [("classic", &classic), ("native", &native)];

    let total = run.load_done.recv_timeout(Duration::from_secs_f64(seconds + 60.0)).expect("load");
    let samples = exact.samples.lock().unwrap_or_else(PoisonError::into_inner).clone();
    let recorded: usize =
        samples.iter().filter(|((_, p), _)| *p == "total").map(|(_, v)| v.len()).sum();
    assert_eq!(recorded as u64, total, "the exact recorder saw every request");
    // Both servers have scraped the final state: their request count is the exact one.
    for (mode, server) in modes {
        server.wait_for("sum(http_server_requests_total)", Duration::from_secs(20), |s| {
            s.first().is_some_and(|s| s.value == total as f64)
        });
        let _ = mode;
    }

    // Percentiles: the three latency panels.
    let mut table = String::new();
    let _ = writeln!(
        table,
        "{:<24} {:<12} {:>4} {:>6} {:>10} {:>10} {:>7} {:>10} {:>7}",
        "route", "phase", "q", "n", "exact ms", "classic", "error", "native", "error"
    );
    let mut errors: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    // The same errors over the cells whose exact value is at least 0.05 ms (the floor cannot
    // help them).
    let mut above_floor: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let panels = [
        ("application", "Application time p50"),
        ("output", "Output time p50"),
        ("total", "Total time (request.duration)"),
    ];
    let mut shown: BTreeMap<(&str, &str, String), BTreeMap<String, f64>> = BTreeMap::new();
    for (phase, title) in panels {
        for (legend, expr) in panel_targets(title) {
            let q = legend.split_whitespace().next().unwrap_or("").to_owned();
            for (mode, server) in modes {
                shown.insert((phase, mode, q.clone()), by_route(server, &expr));
            }
        }
    }
    for ((route, phase), values) in &samples {
        let mut sorted = values.clone();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        for q in QUANTILES {
            // At least 2 samples beyond the quantile, or the cell is not compared.
            if (n as f64) * (1.0 - q) < 2.0 {
                continue;
            }
            let label = format!("p{}", q * 100.0);
            let exact_v = exact_quantile(&sorted, q);
            let mut row =
                format!("{:<24} {:<12} {:>4} {:>6} {:>10}", route, phase, label, n, ms(exact_v));
            for (mode, _) in modes {
                if mode == "classic" && *phase == "output" {
                    // The default recorder keeps output time's `_sum` and `_count` only: the
                    // panel's percentiles are native-only (its mean is compared below), and
                    // the classic server must show none (no NaN lines either).
                    let classic = shown.get(&(*phase, mode, label.clone()));
                    assert!(classic.is_some_and(BTreeMap::is_empty), "{classic:?}");
                    let _ = write!(row, " {:>10} {:>7}", "-", "");
                    continue;
                }
                let v = shown
                    .get(&(*phase, mode, label.clone()))
                    .and_then(|m| m.get(route))
                    .copied()
                    .unwrap_or(f64::NAN);
                let e = rel_error(v, exact_v);
                let e = if e.is_nan() { f64::INFINITY } else { e };
                errors.entry(mode).or_default().push(e);
                if exact_v >= FLOOR_SECONDS {
                    above_floor.entry(mode).or_default().push(e);
                }
                let _ = write!(row, " {:>10} {:>6.1}%", ms(v), e * 100.0);
            }
            let _ = writeln!(table, "{row}");
        }
    }
    assert!(
        PHASES.iter().all(|p| samples.keys().any(|(_, phase)| phase == p)),
        "every phase recorded"
    );

    // Means: the "where the time goes" panel (application, output, body production).
    let mut means = String::new();
    let _ = writeln!(
        means,
        "{:<24} {:<16} {:>10} {:>10} {:>7} {:>10} {:>7}",
        "route", "mean", "exact ms", "classic", "error", "native", "error"
    );
    let mut mean_errors = Vec::new();
    let mean = |route: &str, phase: &str| {
        let v = &samples[&(route.to_owned(), phase_key(phase))];
        v.iter().sum::<f64>() / v.len() as f64
    };
    let where_time_goes = panel_targets("Where the time goes");
    assert_eq!(where_time_goes.len(), 3, "application, output, body production");
    for (legend, expr) in &where_time_goes {
        let part = legend.split(" {{").next().unwrap_or("").to_owned();
        let per_mode: Vec<BTreeMap<String, f64>> =
            modes.iter().map(|(_, server)| by_route(server, expr)).collect();
        for (route, phase) in samples.keys().filter(|(_, p)| *p == "total") {
            let _ = phase;
            let exact_v = match part.as_str() {
                "application" => mean(route, "application"),
                "output" => mean(route, "output"),
                "body production" => {
                    mean(route, "total") - mean(route, "application") - mean(route, "output")
                }
                other => panic!("unexpected legend {other:?}"),
            };
            let mut row = format!("{:<24} {:<16} {:>10}", route, part, ms(exact_v));
            for values in &per_mode {
                let v = values.get(route).copied().unwrap_or(f64::NAN);
                let e = rel_error(v, exact_v);
                mean_errors.push(if e.is_nan() { f64::INFINITY } else { e });
                let _ = write!(row, " {:>10} {:>6.2}%", ms(v), e * 100.0);
            }
            let _ = writeln!(means, "{row}");
        }
    }

    let mut summary = String::new();
    let mut failures = Vec::new();
    for (mode, (median_target, max_target)) in
        [("classic", CLASSIC_TARGET), ("native", NATIVE_TARGET)]
    {
        let e = &errors[mode];
        let (med, max) = (median(e), e.iter().copied().fold(0.0, f64::max));
        let _ = writeln!(
            summary,
            "{mode:<8} {} cells: median error {:.1} % (target <= {:.0} %), max {:.1} % (target <= {:.0} %)",
            e.len(),
            med * 100.0,
            median_target * 100.0,
            max * 100.0,
            max_target * 100.0
        );
        let a = above_floor.get(mode).cloned().unwrap_or_default();
        let _ = writeln!(
            summary,
            "{:<8} {} cells with exact >= 0.05 ms: median error {:.1} %, max {:.1} %",
            "",
            a.len(),
            median(&a) * 100.0,
            a.iter().copied().fold(0.0, f64::max) * 100.0
        );
        if !(med <= median_target && max <= max_target) {
            failures.push(format!("{mode}: median {med:.3}, max {max:.3}"));
        }
    }
    let mean_max = mean_errors.iter().copied().fold(0.0, f64::max);
    let _ = writeln!(
        summary,
        "means    {} cells: max error {:.2} % (target <= {:.0} %)",
        mean_errors.len(),
        mean_max * 100.0,
        MEAN_TARGET * 100.0
    );
    if mean_max > MEAN_TARGET {
        failures.push(format!("means: max {mean_max:.4}"));
    }
    println!(
        "fidelity: {seconds} s of demo traffic, {total} requests; Prometheus 2.42 classic and \
         native, panel queries over the whole run\n\n{table}\n{means}\n{summary}"
    );

    let _ = run.stop.send(());
    run.thread.join().expect("demo thread");
    // Classic: two phases with percentiles (total, application); native: all three.
    assert!(errors["classic"].len() >= 20, "too few cells compared: {}", errors["classic"].len());
    assert!(errors["native"].len() >= 30, "too few cells compared: {}", errors["native"].len());
    assert!(failures.is_empty(), "beyond the targets: {failures:?}\n{table}\n{means}\n{summary}");
}

fn phase_key(phase: &str) -> &'static str {
    match phase {
        "application" => "application",
        "output" => "output",
        _ => "total",
    }
}

#[test]
fn cumulative_reads_the_panel_expression_over_the_whole_run() {
    assert_eq!(
        cumulative("histogram_quantile(0.5, sum by (le) (rate(x_bucket{a=~\"$route\"}[$__rate_interval])))"),
        "histogram_quantile(0.5, sum by (le) (x_bucket{a=~\".*\"}))"
    );
    assert_eq!(cumulative("histogram_sum(rate(x[$__rate_interval]))"), "histogram_sum(x)");
}

// ------------------------------------------------------------------------------------------
// statsd: Etsy statsd's own timer statistics vs exact, over the same samples.

/// Every `request.duration` sample, keyed by its whole tag set (`k=v` sorted, `;`-joined), in
/// milliseconds as the statsd exporter sends them.
#[cfg(feature = "statsd")]
#[derive(Clone, Default)]
struct ExactByTags {
    samples: Arc<Mutex<BTreeMap<String, Vec<f64>>>>,
}

#[cfg(feature = "statsd")]
struct ExactTagged {
    samples: Arc<Mutex<BTreeMap<String, Vec<f64>>>>,
    key: String,
}

#[cfg(feature = "statsd")]
impl HistogramFn for ExactTagged {
    fn record(&self, value: f64) {
        let mut samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        samples.entry(self.key.clone()).or_default().push(value * 1e3);
    }
}

#[cfg(feature = "statsd")]
fn tag_key<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    let mut tags: Vec<String> = pairs.map(|(k, v)| format!("{k}={v}")).collect();
    tags.sort();
    tags.join(";")
}

#[cfg(feature = "statsd")]
impl Recorder for ExactByTags {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, _: &Key, _: &Metadata<'_>) -> Counter {
        Counter::noop()
    }
    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        if key.name() != MetricNames::new(DEFAULT_PREFIX).duration {
            return Histogram::noop();
        }
        let key = tag_key(key.labels().map(|l| (l.key(), l.value())));
        Histogram::from_arc(Arc::new(ExactTagged { samples: self.samples.clone(), key }))
    }
}

/// Etsy statsd's `upper_<pct>`: the largest of the lowest `round(pct % of n)` values.
#[cfg(feature = "statsd")]
fn etsy_upper(sorted: &[f64], pct: f64) -> f64 {
    let n = ((pct / 100.0) * sorted.len() as f64).round() as usize;
    sorted[n.max(1) - 1]
}

#[cfg(feature = "statsd")]
#[test]
fn etsy_statsd_mean_and_upper_90_match_exact_values() {
    if !have(&[Component::Statsd]) {
        return;
    }
    use support::components::{key_name, Statsd};
    // Shorter by default than the Prometheus comparison: it waits for statsd's one flush.
    let seconds: f64 =
        std::env::var("FIDELITY_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(8.0);
    // One statsd flush covers the whole run (the first flush comes `flush` after the start), so
    // statsd's statistics and the exact ones are over the same samples. Etsy statsd computes
    // them exactly from the `|ms` values of each flush; a normal flush interval (10 s) gives
    // the same numbers per 10 s.
    let flush = Duration::from_secs_f64(seconds + 8.0);
    let statsd = Statsd::start_with(flush.as_millis() as u64, 90);
    let started = std::time::Instant::now();
    let exact = ExactByTags::default();
    let statsd_addr = statsd.addr().to_string();
    let exact_in_demo = exact.clone();
    std::thread::spawn(move || {
        // The demo's `--statsd` set-up: classic statsd, `|ms` timers, 1 s flushes.
        let (recorder, _stats) = tower_vitals::statsd::builder(statsd_addr)
            .classic()
            .flush_interval(Duration::from_secs(1))
            .build()
            .expect("statsd recorder");
        let fanout =
            FanoutBuilder::default().add_recorder(recorder).add_recorder(exact_in_demo).build();
        let _local = metrics::set_default_local_recorder(&fanout);
        let runtime =
            tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(async {
            let unused = tower_vitals::prometheus::builder().build_recorder();
            let metrics = tower_vitals::prometheus::PrometheusMetrics::from_handle(unused.handle());
            let server = kit::Server::start(0, &metrics).await.expect("demo app");
            let load = kit::load::Load::start(server.addr, 1.0);
            tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
            load.finish().await;
            server.settle(Duration::from_secs(10)).await;
            server.stop().await;
        });
        // Dropping the recorder flushes the exporter's last lines.
    })
    .join()
    .expect("demo thread");
    assert!(started.elapsed() + Duration::from_secs(2) < flush, "the run outlasted the flush");

    let duration = MetricNames::new(DEFAULT_PREFIX).duration;
    let flushed = statsd.wait_for(flush + Duration::from_secs(10), |f| {
        f.timer_data.keys().any(|k| key_name(k) == duration)
    });
    let exact = exact.samples.lock().unwrap_or_else(PoisonError::into_inner).clone();
    let mut table = format!(
        "{:<100} {:>6} {:>10} {:>10} {:>7} {:>10} {:>10} {:>7}\n",
        "statsd key (tags)", "n", "mean ms", "statsd", "error", "upper_90", "statsd", "error"
    );
    let mut worst: f64 = 0.0;
    let mut compared = 0;
    for (key, data) in flushed.timer_data.iter().filter(|(k, _)| key_name(k) == duration) {
        assert_eq!(data.len(), 1, "{key}: one flush over the whole run, got {}", data.len());
        let data = &data[0];
        let tags = tag_key(key.split(';').skip(1).filter_map(|t| t.split_once('=')));
        let mut values = exact.get(&tags).cloned().unwrap_or_else(|| panic!("no exact {tags}"));
        values.sort_by(f64::total_cmp);
        let count = data["count"].as_f64().unwrap_or(f64::NAN);
        assert_eq!(count, values.len() as f64, "{key}: statsd received every sample");
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        let upper = etsy_upper(&values, 90.0);
        let (s_mean, s_upper) = (
            data["mean"].as_f64().unwrap_or(f64::NAN),
            data["upper_90"].as_f64().unwrap_or(f64::NAN),
        );
        // Milliseconds here: the 0.05 ms floor is 0.05.
        let err = |s: f64, e: f64| (s.max(0.05) - e.max(0.05)).abs() / e.max(0.05);
        let (e_mean, e_upper) = (err(s_mean, mean), err(s_upper, upper));
        worst = worst.max(if e_mean.is_nan() { 1.0 } else { e_mean });
        worst = worst.max(if e_upper.is_nan() { 1.0 } else { e_upper });
        compared += 1;
        table.push_str(&format!(
            "{:<100} {:>6} {:>10.4} {:>10.4} {:>6.2}% {:>10.4} {:>10.4} {:>6.2}%\n",
            tags,
            values.len(),
            mean,
            s_mean,
            e_mean * 100.0,
            upper,
            s_upper,
            e_upper * 100.0
        ));
    }
    println!("Etsy statsd 0.9 (|ms timers) vs exact, {seconds} s of demo traffic\n{table}max error {:.3} %", worst * 100.0);
    assert!(compared >= 8, "tag sets compared: {compared}\n{table}");
    assert!(worst <= 0.05, "statsd's numbers are more than 5 % off:\n{table}");
}
