//! The dashboards and the demo against real components: two real Prometheus servers (started
//! once for this binary, one classic, one with `--enable-feature=native-histograms`) scraping
//! the same two instances of the demo app (which answer each in the format it asks for), `promtool check rules`, a real Etsy
//! statsd daemon and the DogStatsD wire format for the Datadog dashboard, and the demo's bounded
//! run with its table checked against its own load generator.
#![cfg(all(feature = "prometheus", feature = "statsd", feature = "dogstatsd"))]

mod support;

#[allow(dead_code, unreachable_pub)]
#[path = "../examples/demo/kit/mod.rs"]
mod kit;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use metrics::Recorder;
use metrics_util::layers::FanoutBuilder;
use serde_json::Value;
use support::components::{
    have, http_get, key_name, promtool_check_metrics, Component, Prometheus, Statsd,
};
use tower_vitals::labels::{ERROR_TYPE, GRPC_STATUS, METHOD, ROUTE, STATUS};
use tower_vitals::prometheus::PrometheusMetrics;
use tower_vitals::{MetricNames, DEFAULT_PREFIX};

const GRAFANA: &str = include_str!("../dashboards/grafana/tower-vitals.json");
const DATADOG: &str = include_str!("../dashboards/datadog/tower-vitals.json");

/// Grafana's built-in variables, as the reference checker substitutes them.
const GRAFANA_VARS: &[(&str, &str)] = &[
    ("__rate_interval", "1m"),
    ("__interval", "15s"),
    ("__range", "5m"),
    ("__interval_ms", "15000"),
    ("__range_s", "300"),
];

/// How long each demo instance drives traffic, at most (the fixture lives in a static).
const INSTANCE_LIFETIME: Duration = Duration::from_secs(600);

// ------------------------------------------------------------------------------------------
// Fixture: two demo apps (own threads, own Prometheus recorders, own traffic) and one
// Prometheus scraping both, started once for the whole binary.

struct Instance {
    addr: SocketAddr,
    metrics: PrometheusMetrics,
}

/// Starts the demo app and its load generator on a thread of their own, recording into
/// a Prometheus recorder (classic and native histograms) local to that thread (so two instances keep
/// separate metrics).
fn start_instance(rate: f64) -> Instance {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // Process metrics read at each scrape, as the README sets them up.
        let recorder = tower_vitals::prometheus::builder().process_metrics().build_recorder();
        let metrics = PrometheusMetrics::from_handle(recorder.handle());
        let _local = metrics::set_default_local_recorder(&recorder);
        let runtime =
            tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(async move {
            let server = kit::Server::start(0, &metrics).await.expect("demo app");
            tx.send(Instance { addr: server.addr, metrics: metrics.clone() }).expect("send");
            let load = kit::load::Load::start(server.addr, rate);
            tokio::time::sleep(INSTANCE_LIFETIME).await;
            load.finish().await;
            server.stop().await;
        });
    });
    rx.recv_timeout(Duration::from_secs(20)).expect("demo instance started")
}

struct Fixture {
    a: Instance,
    b: Instance,
    /// Classic: asks for text, stores `le` buckets.
    prometheus: Prometheus,
    /// `--enable-feature=native-histograms`: asks for protobuf, stores native histograms.
    native: Prometheus,
}

/// The flag that makes Prometheus 2.42 ask for protobuf and store native histograms.
const NATIVE_FLAG: &str = "--enable-feature=native-histograms";

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        // Different rates, so the sum of both differs from twice either.
        let a = start_instance(1.0);
        let b = start_instance(0.5);
        let targets = [a.addr, b.addr];
        // Both servers start at once (each waits ~6 s for its first scrape).
        let native = std::thread::spawn(move || Prometheus::start_with(&targets, &[NATIVE_FLAG]));
        let prometheus = Prometheus::start(&targets);
        let native = native.join().expect("native prometheus started");
        // Warm: every route of both instances has a rate (two scrapes with traffic).
        let routes = 8;
        for server in [&prometheus, &native] {
            server.wait_for(
                "count(count by (instance, http_route) (rate(http_server_requests_total[1m]) > 0))",
                Duration::from_secs(40),
                |s| s.first().is_some_and(|s| s.value >= f64::from(2 * routes)),
            );
        }
        Fixture { a, b, prometheus, native }
    })
}

// ------------------------------------------------------------------------------------------
// Dashboard JSON helpers.

fn grafana() -> Value {
    serde_json::from_str(GRAFANA).expect("grafana dashboard is JSON")
}

fn datadog() -> Value {
    serde_json::from_str(DATADOG).expect("datadog dashboard is JSON")
}

/// Every panel, rows' nested panels included.
fn panels(dash: &Value) -> Vec<&Value> {
    fn walk<'a>(list: &'a Value, out: &mut Vec<&'a Value>) {
        for p in list.as_array().into_iter().flatten() {
            out.push(p);
            walk(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dash["panels"], &mut out);
    out
}

/// (where, expr) of every Prometheus target of every panel.
fn panel_exprs(dash: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in panels(dash) {
        for t in p["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = t["expr"].as_str() {
                let place = format!("panel {} {:?} ref {}", p["id"], p["title"], t["refId"]);
                out.push((place, expr.to_owned()));
            }
        }
    }
    out
}

/// Substitutes `$var`, `${var}`, `${var:fmt}` and `[[var]]`: Grafana's built-ins by
/// [`GRAFANA_VARS`], dashboard variables by `vars` (default `.*`, match-all).
fn substitute(expr: &str, vars: &[(&str, &str)]) -> String {
    let value = |name: &str| {
        GRAFANA_VARS
            .iter()
            .chain(vars)
            .find(|(n, _)| *n == name)
            .map_or(".*".to_owned(), |(_, v)| (*v).to_owned())
    };
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = String::new();
    let mut rest = expr;
    while let Some(i) = rest.find(['$', '[']) {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(t) = tail.strip_prefix("${") {
            let end = t.find('}').expect("closed ${");
            let name = t[..end].split(':').next().unwrap_or("");
            out.push_str(&value(name));
            rest = &t[end + 1..];
        } else if let Some(t) = tail.strip_prefix("[[") {
            let end = t.find("]]").expect("closed [[");
            out.push_str(&value(&t[..end]));
            rest = &t[end + 2..];
        } else if let Some(t) = tail.strip_prefix('$') {
            let end = t.find(|c| !ident(c)).unwrap_or(t.len());
            out.push_str(&value(&t[..end]));
            rest = &t[end..];
        } else {
            out.push('[');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

fn url_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `/api/v1/query` at an optional fixed time: the JSON answer, success or not.
fn query_at(prometheus: &Prometheus, promql: &str, time: Option<f64>) -> Value {
    let mut path = format!("/api/v1/query?query={}", url_encode(promql));
    if let Some(t) = time {
        path.push_str(&format!("&time={t:.3}"));
    }
    let (status, body) = http_get(prometheus.addr(), &path).expect("query prometheus");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("HTTP {status}, not JSON ({e}): {body}"))
}

/// label set (sorted `k=v` pairs, `le` included) → value.
fn vector(answer: &Value) -> BTreeMap<String, f64> {
    answer["data"]["result"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let labels = r["metric"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default();
            // A native histogram sample (heatmap panel, native mode) carries `histogram`, not
            // `value`: its count stands for it.
            let value = r["value"][1]
                .as_str()
                .or(r["histogram"][1]["count"].as_str())
                .and_then(|v| v.parse().ok())
                .unwrap_or(f64::NAN);
            (labels, value)
        })
        .collect()
}

/// Histograms the default recorder gives no classic bucket (only `+Inf`, `_sum`, `_count`).
const SUM_AND_COUNT_ONLY: [&str; 6] = [
    "http_server_output_time_seconds_bucket",
    "http_server_output_bytes_bucket",
    "http_server_output_blocks_bucket",
    "http_server_input_time_seconds_bucket",
    "http_server_input_bytes_bucket",
    "http_server_input_blocks_bucket",
];

/// Checks every panel expression once; `Err` lists the failures. Every target answers, except,
/// on a classic server, the percentiles of histograms the default recorder keeps `_sum` and
/// `_count` only for: those answer nothing at all (no `NaN` series) and their panel has
/// another target that answers (the mean).
fn check_panels_once(
    prometheus: &Prometheus,
    dash: &Value,
    classic: bool,
) -> Result<usize, Vec<String>> {
    let mut failures = Vec::new();
    let exprs = panel_exprs(dash);
    let mut answered: BTreeMap<String, bool> = BTreeMap::new();
    for (place, expr) in &exprs {
        let panel = place.split(" ref ").next().unwrap_or(place).to_owned();
        let expr = substitute(expr, &[]);
        let answer = query_at(prometheus, &expr, None);
        if answer["status"] != "success" {
            failures
                .push(format!("{place}: {} {}\n    {expr}", answer["errorType"], answer["error"]));
            continue;
        }
        let values = vector(&answer);
        let has_data = !values.is_empty() && !values.values().all(|v| v.is_nan());
        *answered.entry(panel).or_default() |= has_data;
        let budgeted = expr.contains("histogram_quantile")
            && SUM_AND_COUNT_ONLY.iter().any(|name| expr.contains(name));
        if classic && budgeted {
            if !values.is_empty() {
                failures.push(format!("{place}: classic buckets the default has not: {values:?}"));
            }
        } else if !has_data {
            failures.push(format!("{place}: no data {values:?}\n    {expr}"));
        }
    }
    for (panel, answered) in answered {
        if !answered {
            failures.push(format!("{panel}: no target answers"));
        }
    }
    if failures.is_empty() {
        Ok(exprs.len())
    } else {
        Err(failures)
    }
}

// ------------------------------------------------------------------------------------------
// Names: what the dashboards name, what the crate's constants give, what the backends received.

/// The Prometheus series names of the layer's metrics, from the crate's own constants and the
/// exporter's naming (dots to `_`, counters `_total`, seconds histograms `_seconds`).
fn prometheus_names(n: &MetricNames) -> BTreeSet<String> {
    let s = |name: &str| name.replace('.', "_");
    let mut out = BTreeSet::from([format!("{}_total", s(&n.requests))]);
    let seconds = [&n.duration, &n.application_time, &n.output_time, &n.input_time];
    let sizes = [&n.output_bytes, &n.output_blocks, &n.input_bytes, &n.input_blocks];
    for (base, unit) in seconds.iter().map(|m| (m, "_seconds")).chain(sizes.iter().map(|m| (m, "")))
    {
        // `_bucket`/`_sum`/`_count` of classic histograms; the bare name of native ones.
        for part in ["_bucket", "_sum", "_count", ""] {
            out.insert(format!("{}{unit}{part}", s(base)));
        }
    }
    out.insert(s(&n.active_requests));
    out.insert(s(&n.utilization));
    out
}

fn tag_constants() -> [&'static str; 5] {
    [ROUTE, METHOD, STATUS, ERROR_TYPE, GRPC_STATUS]
}

/// Metric names and label names a Grafana dashboard uses (panel exprs and variable queries).
fn grafana_names(dash: &Value) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut texts: Vec<String> = panel_exprs(dash).into_iter().map(|(_, e)| e).collect();
    for v in dash["templating"]["list"].as_array().into_iter().flatten() {
        let q = v["query"]["query"].as_str().or(v["query"].as_str()).unwrap_or("");
        texts.push(q.to_owned());
    }
    let mut metrics = BTreeSet::new();
    let mut labels = BTreeSet::new();
    for text in &texts {
        let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
        // Metric names: identifiers of the crate's family.
        for token in text.split(|c: char| !word(c)) {
            if token.starts_with("http_server_") {
                metrics.insert(token.to_owned());
            }
        }
        // Labels in selectors: `{a=~"..", b!=".."}` (values never contain `,` here).
        let mut rest = text.as_str();
        while let Some(open) = rest.find('{') {
            let close = rest[open..].find('}').map_or(rest.len(), |c| open + c);
            for matcher in rest[open + 1..close].split(',') {
                let name: String = matcher.trim().chars().take_while(|c| word(*c)).collect();
                if !name.is_empty() {
                    labels.insert(name);
                }
            }
            rest = &rest[close.min(rest.len())..];
            rest = rest.get(1..).unwrap_or("");
        }
        // Grouping: `by (a, b)`.
        let mut rest = text.as_str();
        while let Some(at) = rest.find("by (") {
            let inner = &rest[at + 4..];
            let close = inner.find(')').unwrap_or(inner.len());
            labels.extend(inner[..close].split(',').map(|l| l.trim().to_owned()));
            rest = &inner[close..];
        }
        // `label_values(metric{..}, label)`.
        if let Some(args) = text.strip_prefix("label_values(").and_then(|t| t.strip_suffix(')')) {
            if let Some((_, label)) = args.rsplit_once(',') {
                labels.insert(label.trim().to_owned());
            }
        }
    }
    labels.retain(|l| !l.is_empty());
    (metrics, labels)
}

/// Every query string of a Datadog dashboard (`query` and `q` fields, at any depth).
fn datadog_queries(dash: &Value) -> Vec<String> {
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    match (k.as_str(), x) {
                        ("query" | "q", Value::String(s)) => out.push(s.clone()),
                        _ => walk(x, out),
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(dash, &mut out);
    out
}

/// Metric names and tag keys a Datadog dashboard uses (queries and template variables).
fn datadog_names(dash: &Value) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut metrics = BTreeSet::new();
    let mut tags = BTreeSet::new();
    for q in datadog_queries(dash) {
        // `agg:metric{filters} by {tags}.modifier()`
        let mut rest = q.as_str();
        while let Some(open) = rest.find('{') {
            let head = &rest[..open];
            let name_start = head.rfind(':').map_or(0, |i| i + 1);
            let name = head[name_start..].trim();
            if !name.is_empty() && !head.trim_end().ends_with("by") {
                metrics.insert(name.to_owned());
            }
            let close = rest[open..].find('}').map_or(rest.len(), |c| open + c);
            for part in rest[open + 1..close].split(',') {
                let part = part.trim();
                if part == "*" || part.starts_with('$') || part.is_empty() {
                    continue;
                }
                tags.insert(part.split(':').next().unwrap_or(part).to_owned());
            }
            rest = rest.get(close + 1..).unwrap_or("");
        }
    }
    for v in dash["template_variables"].as_array().into_iter().flatten() {
        if let Some(prefix) = v["prefix"].as_str() {
            tags.insert(prefix.to_owned());
        }
    }
    (metrics, tags)
}

/// The dashboard names missing from `known`, as readable lines.
fn unknown(kind: &str, used: &BTreeSet<String>, known: &BTreeSet<String>) -> Vec<String> {
    used.difference(known).map(|n| format!("{kind} {n:?}")).collect()
}

// ------------------------------------------------------------------------------------------
// Tests against the real Prometheus.

#[test]
fn grafana_every_panel_query_returns_data_from_real_prometheus() {
    if !have(&[Component::Prometheus]) {
        return;
    }
    let f = fixture();
    let dash = grafana();
    // Each server stored one form only: the panels answer from the classic half on one and the
    // native half on the other.
    let classic_buckets = "count(http_server_request_duration_seconds_bucket)";
    let native_histograms = "count(histogram_count(http_server_request_duration_seconds))";
    assert!(!f.prometheus.samples(classic_buckets).is_empty());
    assert!(f.prometheus.samples(native_histograms).is_empty(), "classic server has natives");
    assert!(f.native.samples(classic_buckets).is_empty(), "native server stored classic buckets");
    assert!(!f.native.samples(native_histograms).is_empty(), "native server has no natives");
    for (mode, server) in [("classic", &f.prometheus), ("native", &f.native)] {
        // rate() needs two scrapes, and each error kind must have happened once: retry until
        // every panel answers (bounded), then report what still fails.
        let deadline = Instant::now() + Duration::from_secs(40);
        let checked = loop {
            match check_panels_once(server, &dash, mode == "classic") {
                Ok(n) => break n,
                Err(failures) if Instant::now() > deadline => panic!(
                    "{mode}: {} panel queries failed:\n{}",
                    failures.len(),
                    failures.join("\n")
                ),
                Err(_) => std::thread::sleep(Duration::from_millis(500)),
            }
        };
        assert!(checked >= 20, "{mode}: only {checked} panel expressions found");
    }
    // The template variables' queries answer too (through the series API, as Grafana does).
    for (name, label) in [("job", "job"), ("instance", "instance"), ("route", "http_route")] {
        let path = format!(
            "/api/v1/label/{label}/values?match[]={}",
            url_encode("http_server_requests_total")
        );
        let (_, body) = http_get(f.prometheus.addr(), &path).expect("label values");
        let json: Value = serde_json::from_str(&body).expect("json");
        let values = json["data"].as_array().map_or(0, Vec::len);
        assert!(values >= 1, "variable {name}: no values: {body}");
    }
    // The route variable lists the demo's templates, never raw paths.
    let routes = f.prometheus.samples("count by (http_route) (http_server_requests_total)");
    let routes: BTreeSet<&str> = routes.iter().map(|s| s.labels["http_route"].as_str()).collect();
    assert!(routes.contains("/users/{id}"), "{routes:?}");
    assert!(!routes.iter().any(|r| r.starts_with("/users/") && *r != "/users/{id}"), "{routes:?}");
}

#[test]
fn grafana_queries_pass_promtool_check_rules() {
    if !have(&[Component::Promtool]) {
        return;
    }
    let dir = support::components::TempDir::new("rules");
    let write_rules = |exprs: &[String]| {
        let rules: Vec<Value> = exprs
            .iter()
            .enumerate()
            .map(|(i, e)| serde_json::json!({"record": format!("dash:expr{i}"), "expr": e}))
            .collect();
        let file = dir.path().join("rules.yml");
        let doc = serde_json::json!({"groups": [{"name": "dashboard", "rules": rules}]});
        std::fs::write(&file, doc.to_string()).expect("write rules");
        let out = Command::new("promtool")
            .args(["check", "rules"])
            .arg(&file)
            .output()
            .expect("promtool is missing: run ./scripts/install-components.sh");
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let exprs: Vec<String> =
        panel_exprs(&grafana()).into_iter().map(|(_, e)| substitute(&e, &[])).collect();
    let (ok, out) = write_rules(&exprs);
    assert!(ok, "promtool check rules refused the dashboard's expressions:\n{out}");
    assert!(out.contains(&format!("SUCCESS: {} rules found", exprs.len())), "{out}");
    // The check can fail: a broken expression is refused.
    let (ok, out) = write_rules(&["sum by (http_route (rate(x[1m]))".to_owned()]);
    assert!(!ok, "promtool accepted a broken expression: {out}");
}

/// Prometheus' `histogram_quantile` on cumulative buckets (upper bound → count).
fn bucket_quantile(q: f64, buckets: &BTreeMap<String, f64>) -> f64 {
    let mut b: Vec<(f64, f64)> = buckets
        .iter()
        .map(|(le, c)| (if le == "+Inf" { f64::INFINITY } else { le.parse().expect("le") }, *c))
        .collect();
    b.sort_by(|x, y| x.0.total_cmp(&y.0));
    // As Prometheus does before it interpolates: counts made monotonic by a running maximum.
    // `rate()` extrapolates each `le` series on its own (a series whose first sample in the
    // window is near 0 is extrapolated less), so a lower bucket can come out above a higher one;
    // without this the oracle and `histogram_quantile` disagreed on such windows (seen:
    // 0.0609375 from Prometheus against 0.0567 here, on a route with few requests).
    let mut max = f64::NEG_INFINITY;
    for bucket in &mut b {
        max = max.max(bucket.1);
        bucket.1 = max;
    }
    let total = b.last().expect("buckets").1;
    let rank = q * total;
    let i = b.iter().position(|(_, c)| *c >= rank).expect("rank within total");
    if i == b.len() - 1 {
        return b[b.len() - 2].0;
    }
    let (start, below) = if i == 0 { (0.0, 0.0) } else { b[i - 1] };
    let (end, count) = b[i];
    start + (end - start) * (rank - below) / (count - below)
}

#[test]
fn two_instances_aggregate_by_route_and_the_instance_variable_narrows() {
    if !have(&[Component::Prometheus]) {
        return;
    }
    let f = fixture();
    let dash = grafana();
    let exprs = panel_exprs(&dash);
    let find = |title: &str, quantile: &str| {
        exprs
            .iter()
            .find(|(place, e)| place.contains(title) && e.contains(quantile))
            .map(|(_, e)| e.clone())
            .unwrap_or_else(|| panic!("no panel {title:?} with {quantile:?}"))
    };
    let rate_expr = find("Requests per second by route", "sum by (http_route)");
    let p95_expr = find("Total time (request.duration)", "histogram_quantile(0.95");
    let (a, b) = (f.a.addr.to_string(), f.b.addr.to_string());

    // Both targets scraped, with traffic on both for a few seconds.
    f.prometheus.wait_for(
        "count(rate(http_server_requests_total[1m]) > 0) by (instance)",
        Duration::from_secs(40),
        |s| s.len() == 2,
    );
    std::thread::sleep(Duration::from_secs(2));
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs_f64() - 1.0;
    let eval = |expr: &str, instance: &str| {
        let answer =
            query_at(&f.prometheus, &substitute(expr, &[("instance", instance)]), Some(now));
        assert_eq!(answer["status"], "success", "{answer}");
        vector(&answer)
    };

    // Request rate per route: all instances = the sum of each; each alone is less.
    let (all, only_a, only_b) =
        (eval(&rate_expr, ".*"), eval(&rate_expr, &a), eval(&rate_expr, &b));
    assert!(all.len() >= 8, "routes: {all:?}");
    for (route, total) in &all {
        let (x, y) =
            (only_a.get(route).copied().unwrap_or(0.0), only_b.get(route).copied().unwrap_or(0.0));
        assert!((total - (x + y)).abs() <= 1e-9 * total.max(1.0), "{route}: {total} != {x} + {y}");
        assert!(x > 0.0 && y > 0.0, "{route}: both instances serve it ({x}, {y})");
        assert!(
            x < *total && y < *total,
            "{route}: the instance variable narrows ({x}, {y}, {total})"
        );
    }

    // p95 per route: the panel's value over both instances is the quantile of the summed
    // buckets (not an average of quantiles), and narrows to each instance's own.
    let (p_all, p_a, p_b) = (eval(&p95_expr, ".*"), eval(&p95_expr, &a), eval(&p95_expr, &b));
    let buckets = |instance: &str| {
        let expr = format!(
            "sum by (le, http_route) (rate(http_server_request_duration_seconds_bucket{{instance=\"{instance}\"}}[1m]))"
        );
        let answer = query_at(&f.prometheus, &expr, Some(now));
        let mut out: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
        for r in answer["data"]["result"].as_array().into_iter().flatten() {
            let route = format!("http_route={}", r["metric"]["http_route"].as_str().unwrap_or(""));
            let le = r["metric"]["le"].as_str().unwrap_or("").to_owned();
            let v: f64 = r["value"][1].as_str().and_then(|v| v.parse().ok()).unwrap_or(f64::NAN);
            out.entry(route).or_default().insert(le, v);
        }
        out
    };
    let (ba, bb) = (buckets(&a), buckets(&b));
    let slow = "http_route=/api/slow";
    for (route, p95) in &p_all {
        let mut summed = ba.get(route).cloned().unwrap_or_default();
        for (le, v) in bb.get(route).into_iter().flatten() {
            *summed.entry(le.clone()).or_default() += v;
        }
        let expected = bucket_quantile(0.95, &summed);
        assert!(
            (p95 - expected).abs() <= 1e-9 * expected.max(1e-3),
            "{route}: {p95} vs {expected}"
        );
        for narrowed in [&p_a, &p_b] {
            let own = narrowed.get(route).copied().unwrap_or(f64::NAN);
            let alone = bucket_quantile(
                0.95,
                if std::ptr::eq(narrowed, &p_a) { &ba[route] } else { &bb[route] },
            );
            assert!(
                (own - alone).abs() <= 1e-9 * alone.max(1e-3),
                "{route}: narrowed {own} vs {alone}"
            );
        }
    }
    assert!(p_all[slow] > 0.05, "the slow route's p95 is its sleep: {p_all:?}");
}

#[test]
fn demo_metrics_pass_promtool_check_metrics() {
    if !have(&[Component::Prometheus, Component::Promtool]) {
        return;
    }
    let f = fixture();
    let (status, text) = http_get(f.a.addr, "/metrics").expect("GET /metrics");
    assert_eq!(status, 200);
    assert!(text.contains("http_server_requests_total{"), "{text}");
    promtool_check_metrics(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    // The same text as the handle renders (the route really is the crate's handler).
    assert!(f.a.metrics.render().contains("http_server_output_blocks_bucket"));
}

#[test]
fn grafana_names_exist_in_the_crate_constants_and_in_what_prometheus_scraped() {
    if !have(&[Component::Prometheus]) {
        return;
    }
    let (metrics, labels) = grafana_names(&grafana());
    assert!(metrics.len() >= 8 && labels.len() >= 6, "{metrics:?} {labels:?}");

    // 1. The crate's own constants.
    let names = MetricNames::new(DEFAULT_PREFIX);
    let mut from_constants = prometheus_names(&names);
    from_constants.extend(tower_vitals::process::METRIC_NAMES.map(String::from));
    let mut known_labels: BTreeSet<String> =
        tag_constants().iter().map(|t| t.replace('.', "_")).collect();
    known_labels.extend(["job", "instance", "le"].map(String::from));
    let mut problems = unknown("metric", &metrics, &from_constants);
    problems.extend(unknown("label", &labels, &known_labels));
    assert!(problems.is_empty(), "not in the crate's constants: {problems:?}");

    // 2. What the real Prometheus scraped from the demo.
    let f = fixture();
    f.prometheus.wait_for(
        "count(http_server_requests_total{error_type=\"aborted\"})",
        Duration::from_secs(40),
        |s| !s.is_empty(),
    );
    let (_, body) = http_get(f.prometheus.addr(), "/api/v1/label/__name__/values").expect("names");
    let json: Value = serde_json::from_str(&body).expect("json");
    let scraped: BTreeSet<String> = json["data"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(String::from))
        .collect();
    let path = format!("/api/v1/series?match[]={}", url_encode("{__name__=~\"http_server_.+\"}"));
    let (_, body) = http_get(f.prometheus.addr(), &path).expect("series");
    let json: Value = serde_json::from_str(&body).expect("json");
    let scraped_labels: BTreeSet<String> = json["data"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_object())
        .flat_map(|m| m.keys().cloned())
        .collect();
    // Classic names from the classic server; native (bare histogram) names from the native one.
    let native_scraped = {
        let (_, body) =
            http_get(f.native.addr(), "/api/v1/label/__name__/values").expect("native names");
        let json: Value = serde_json::from_str(&body).expect("json");
        json["data"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(String::from))
            .collect::<BTreeSet<String>>()
    };
    let is_native_name = |m: &str| {
        !m.ends_with("_total")
            && !m.ends_with("_bucket")
            && !m.ends_with("_sum")
            && !m.ends_with("_count")
            && scraped.iter().any(|s| s.strip_suffix("_bucket") == Some(m))
    };
    // Every metric a panel queries, `utilization` included (published at 0 from the start).
    let required: BTreeSet<String> =
        metrics.iter().filter(|m| !is_native_name(m)).cloned().collect();
    let native_required: BTreeSet<String> =
        metrics.iter().filter(|m| is_native_name(m)).cloned().collect();
    assert!(native_required.len() >= 4, "native forms on the dashboard: {native_required:?}");
    let mut problems = unknown("metric", &required, &scraped);
    problems.extend(unknown("native metric", &native_required, &native_scraped));
    let grpc = GRPC_STATUS.replace('.', "_");
    let needed_labels: BTreeSet<String> = labels.iter().filter(|l| **l != grpc).cloned().collect();
    problems.extend(unknown("label", &needed_labels, &scraped_labels));
    assert!(problems.is_empty(), "not scraped from the demo: {problems:?}\nscraped: {scraped:?}");

    // Every response metric the layer emits by default is on the dashboard.
    for emitted in scraped.iter().filter(|n| n.starts_with("http_server_")) {
        let family =
            emitted.trim_end_matches("_bucket").trim_end_matches("_sum").trim_end_matches("_count");
        assert!(metrics.iter().any(|m| m.starts_with(family)), "{emitted} is on no panel");
    }

    // A renamed metric breaks the check: the same comparison on an edited dashboard.
    let renamed = GRAFANA.replace("http_server_output_blocks", "http_server_output_frames");
    let (m2, _) = grafana_names(&serde_json::from_str(&renamed).expect("json"));
    assert!(!unknown("metric", &m2, &from_constants).is_empty());
    assert!(!unknown("metric", &m2, &scraped).is_empty());
    // ... and so does a renamed constant (the names the crate would emit under another prefix).
    assert!(
        !unknown("metric", &metrics, &prometheus_names(&MetricNames::new("http.srv"))).is_empty()
    );
}

// ------------------------------------------------------------------------------------------
// The Datadog dashboard against a real statsd daemon and the DogStatsD wire format.

/// Runs the demo app with `recorder` as its thread's recorder, drives `seconds` of its
/// traffic, then stops it (the recorder is dropped at the end: exporters flush).
fn drive_demo_with<R: Recorder + Send + 'static>(recorder: R, seconds: f64) {
    std::thread::spawn(move || {
        let _local = metrics::set_default_local_recorder(&recorder);
        let runtime =
            tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(async {
            let unused = tower_vitals::prometheus::builder().build_recorder();
            let metrics = PrometheusMetrics::from_handle(unused.handle());
            let server = kit::Server::start(0, &metrics).await.expect("demo app");
            let load = kit::load::Load::start(server.addr, 1.0);
            tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
            load.finish().await;
            server.settle(Duration::from_secs(5)).await;
            server.stop().await;
        });
    })
    .join()
    .expect("demo thread");
}

fn datadog_known() -> (BTreeSet<String>, BTreeSet<String>) {
    let n = MetricNames::new(DEFAULT_PREFIX);
    let metrics = [
        &n.requests,
        &n.duration,
        &n.application_time,
        &n.output_time,
        &n.output_blocks,
        &n.output_bytes,
        &n.input_blocks,
        &n.input_bytes,
        &n.input_time,
        &n.active_requests,
        &n.utilization,
    ]
    .into_iter()
    .cloned()
    .collect();
    (metrics, tag_constants().iter().map(|t| t.to_string()).collect())
}

#[test]
fn datadog_names_exist_in_the_crate_constants_and_in_what_real_statsd_received() {
    if !have(&[Component::Statsd]) {
        return;
    }
    let dash = datadog();
    assert_eq!(dash["layout_type"], "ordered");
    assert_eq!(dash["template_variables"][0]["prefix"], ROUTE);
    let (metrics, tags) = datadog_names(&dash);
    assert!(metrics.len() >= 7 && tags.len() >= 4, "{metrics:?} {tags:?}");
    let (known_metrics, known_tags) = datadog_known();
    let mut problems = unknown("metric", &metrics, &known_metrics);
    problems.extend(unknown("tag", &tags, &known_tags));
    assert!(problems.is_empty(), "not in the crate's constants: {problems:?}");

    // A real Etsy statsd daemon, fed by the crate's statsd exporter behind the demo app.
    let statsd = Statsd::start();
    let (recorder, _exporter) = tower_vitals::statsd::builder(statsd.addr().to_string())
        .flush_interval(Duration::from_millis(200))
        .build()
        .expect("statsd recorder");
    drive_demo_with(recorder, 2.5);
    let flushed = statsd.wait_for(Duration::from_secs(15), |f| {
        f.counters.keys().any(|k| k.contains("error.type=aborted"))
            && f.gauges.keys().any(|k| key_name(k).ends_with("active_requests"))
    });
    let keys: Vec<&String> =
        flushed.counters.keys().chain(flushed.timers.keys()).chain(flushed.gauges.keys()).collect();
    let received: BTreeSet<String> = keys.iter().map(|k| key_name(k).to_owned()).collect();
    let received_tags: BTreeSet<String> = keys
        .iter()
        .flat_map(|k| k.split(';').skip(1).map(|t| t.split('=').next().unwrap_or(t).to_owned()))
        .collect();
    let mut problems = unknown("metric", &metrics, &received);
    problems.extend(unknown("tag", &tags, &received_tags));
    assert!(problems.is_empty(), "not received by statsd: {problems:?}\nkeys: {keys:#?}");
    assert_eq!(flushed.bad_lines, 0.0, "statsd log:\n{}", statsd.log());

    // A renamed metric breaks it.
    let renamed = DATADOG.replace("http.server.output_blocks", "http.server.output_frames");
    let (m2, _) = datadog_names(&serde_json::from_str(&renamed).expect("json"));
    assert!(!unknown("metric", &m2, &received).is_empty());
    assert!(!unknown("metric", &m2, &known_metrics).is_empty());
}

#[test]
fn datadog_names_are_on_the_dogstatsd_wire_as_distributions() {
    let sink = UdpSocket::bind("127.0.0.1:0").expect("bind");
    sink.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
    let recorder = tower_vitals::dogstatsd::builder(sink.local_addr().expect("addr").to_string())
        .flush_interval(Duration::from_millis(200))
        .telemetry(false)
        .build()
        .expect("dogstatsd recorder");
    drive_demo_with(recorder, 1.5);
    let mut lines = Vec::new();
    let mut buf = [0u8; 65536];
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        match sink.recv(&mut buf) {
            Ok(n) => lines.extend(String::from_utf8_lossy(&buf[..n]).lines().map(String::from)),
            Err(_) if !lines.is_empty() => break,
            Err(_) => {}
        }
    }
    // name:v[:v...]|type|#k:v,k:v
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut tags = BTreeSet::new();
    for line in &lines {
        let (name, rest) = line.split_once(':').unwrap_or_else(|| panic!("bad line {line:?}"));
        let mut fields = rest.split('|');
        let _values = fields.next();
        let kind = fields.next().unwrap_or_else(|| panic!("no type in {line:?}"));
        types.insert(name.to_owned(), kind.to_owned());
        for field in fields {
            if let Some(t) = field.strip_prefix('#') {
                tags.extend(t.split(',').map(|kv| kv.split(':').next().unwrap_or(kv).to_owned()));
            }
        }
    }
    let (metrics, dash_tags) = datadog_names(&datadog());
    for m in &metrics {
        assert!(types.contains_key(m), "{m} not on the wire: {types:?}");
    }
    let missing: Vec<&String> = dash_tags.difference(&tags).collect();
    assert!(missing.is_empty(), "tags not on the wire: {missing:?}");
    // The p50/p95/p99 queries need distributions; the rate queries a counter.
    let n = MetricNames::new(DEFAULT_PREFIX);
    assert_eq!(types[&n.duration], "d", "{types:?}");
    assert_eq!(types[&n.output_bytes], "d", "{types:?}");
    assert_eq!(types[&n.requests], "c", "{types:?}");
    assert_eq!(types[&n.active_requests], "g", "{types:?}");
}

// ------------------------------------------------------------------------------------------
// The demo's bounded run.

#[test]
fn demo_bounded_run_prints_a_table_whose_totals_match_its_load() {
    let options =
        kit::Options::parse(["--seconds", "3", "--port", "0", "--every", "1.5"].map(String::from))
            .expect("options");
    assert_eq!(options.seconds, 3.0);
    assert!(kit::Options::parse(["--seconds".to_owned(), "x".to_owned()]).is_err());
    assert!(kit::Options::parse(["--bogus".to_owned()]).is_err());

    let (report, out) = std::thread::spawn(move || {
        let prometheus = tower_vitals::prometheus::builder().build_recorder();
        let metrics = PrometheusMetrics::from_handle(prometheus.handle());
        let live = tower_vitals::live::Live::new();
        let fanout =
            FanoutBuilder::default().add_recorder(prometheus).add_recorder(live.recorder()).build();
        let _local = metrics::set_default_local_recorder(&fanout);
        let runtime =
            tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let mut out = Vec::new();
        let report = runtime.block_on(kit::run(&options, &metrics, &live, &mut out)).expect("run");
        // /metrics saw the same requests.
        let text = metrics.render();
        (report, (String::from_utf8(out).expect("utf-8"), text, live.json()))
    })
    .join()
    .expect("demo thread");
    let (out, exposition, vitals_json) = out;

    // /vitals.json (what the live page shows) counts exactly what the load generator sent.
    let vitals: serde_json::Value = serde_json::from_str(&vitals_json).expect("/vitals.json");
    let mut counted = BTreeMap::new();
    for r in vitals["services"][0]["routes"].as_array().expect("routes") {
        let n = r["since_start"]["requests"].as_u64().expect("requests");
        counted.insert(r["route"].as_str().expect("route").to_owned(), n);
    }
    assert_eq!(counted, report.sent.requests, "/vitals.json vs the load generator");

    assert!(report.matches(), "{report:?}\n{out}");
    assert!(report.sent.total() > 100, "{report:?}");
    assert_eq!(report.sent.not_sent, 0);
    // Every kind of request happened, with its error.type.
    for (route, error) in
        [("/api/fail", "500"), ("/stream-error", "body_error"), ("/download", "aborted")]
    {
        assert!(
            report.errors.get(route).and_then(|e| e.get(error)).copied().unwrap_or(0) > 0,
            "{route} {error}: {report:?}"
        );
    }
    // The printed table: one intermediate and the final one; parse the final rows.
    assert!(out.contains("--- after 2 s") || out.contains("--- after 1 s"), "{out}");
    let final_table = out.split("=== final").nth(1).expect("final table printed");
    let mut rows = BTreeMap::new();
    for line in final_table.lines().skip(2) {
        if line.trim().is_empty() {
            break;
        }
        let cols: Vec<&str> = line.split_whitespace().collect();
        let sent: u64 = cols[1].parse().expect("sent");
        let recorded: u64 = cols[2].parse().expect("recorded");
        rows.insert(cols[0].to_owned(), (sent, recorded, line.to_owned()));
    }
    assert_eq!(rows.len(), report.sent.requests.len(), "{final_table}");
    for (route, sent) in &report.sent.requests {
        let (s, r, line) = &rows[route];
        assert_eq!((s, r), (sent, sent), "{line}");
        for (error, n) in report.sent.errors.get(route).into_iter().flatten() {
            assert!(line.contains(&format!("{error}:{n}")), "{line}");
        }
    }
    assert!(rows["/download/small-blocks"].2.contains("small blocks"), "{final_table}");
    assert!(!rows["/download"].2.contains("small blocks"), "{final_table}");
    assert!(out.contains("check: the layer recorded every request"), "{out}");
    // The final latency table has a row per route with numbers.
    assert!(final_table.contains("application") && final_table.contains("/api/slow"));

    // The Prometheus side of the same run counted the same total.
    let total: f64 = exposition
        .lines()
        .filter(|l| l.starts_with("http_server_requests_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(total, report.sent.total() as f64, "{exposition}");
}

// ------------------------------------------------------------------------------------------
// Structure: what Grafana's and Datadog's importers need, checked without the servers.

#[test]
fn grafana_dashboard_has_what_the_importer_needs() {
    let dash = grafana();
    let inputs = dash["__inputs"].as_array().expect("__inputs");
    assert!(inputs.iter().any(|i| i["name"] == "DS_PROMETHEUS" && i["pluginId"] == "prometheus"));
    let defined: BTreeSet<&str> = dash["templating"]["list"]
        .as_array()
        .expect("templating")
        .iter()
        .map(|v| {
            assert_eq!(v["datasource"]["uid"], "${DS_PROMETHEUS}", "{v}");
            let q = v["query"]["query"].as_str().expect("variable query");
            assert!(q.starts_with("label_values("), "{q}");
            v["name"].as_str().expect("name")
        })
        .collect();
    assert_eq!(defined, BTreeSet::from(["job", "instance", "route"]));

    let all = panels(&dash);
    let ids: Vec<i64> = all.iter().map(|p| p["id"].as_i64().expect("id")).collect();
    assert_eq!(ids.len(), ids.iter().collect::<BTreeSet<_>>().len(), "duplicate ids {ids:?}");
    let rows: Vec<&str> =
        all.iter().filter(|p| p["type"] == "row").filter_map(|p| p["title"].as_str()).collect();
    assert_eq!(rows, ["Traffic", "Errors", "Latency", "Output", "Saturation"]);
    let mut cells = BTreeSet::new();
    for p in &all {
        let g = &p["gridPos"];
        let (x, y, w, h) = (g["x"].as_i64(), g["y"].as_i64(), g["w"].as_i64(), g["h"].as_i64());
        let (Some(x), Some(y), Some(w), Some(h)) = (x, y, w, h) else { panic!("gridPos {p}") };
        assert!(x >= 0 && w > 0 && x + w <= 24 && h > 0, "{}: {g}", p["title"]);
        for cx in x..x + w {
            for cy in y..y + h {
                assert!(cells.insert((cx, cy)), "{} overlaps another panel", p["title"]);
            }
        }
        if p["type"] == "row" {
            continue;
        }
        assert!(p["type"].is_string() && p["title"].is_string(), "{p}");
        assert_eq!(p["datasource"]["uid"], "${DS_PROMETHEUS}", "{}", p["title"]);
        assert!(p["description"].as_str().is_some_and(|d| d.len() > 20), "{}", p["title"]);
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{}", p["title"]);
        for t in targets {
            assert!(t["refId"].is_string() && t["expr"].is_string(), "{t}");
            assert_eq!(t["datasource"]["uid"], "${DS_PROMETHEUS}");
            // Every dashboard variable used is defined; every panel filters by job and instance.
            let expr = t["expr"].as_str().unwrap_or("");
            for var in ["job", "instance"] {
                assert!(expr.contains(&format!("=~\"${var}\"")), "{}: no ${var}", p["title"]);
            }
            let mut rest = expr;
            while let Some(i) = rest.find('$') {
                let name: String = rest[i + 1..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                assert!(
                    name.starts_with("__") || defined.contains(name.as_str()),
                    "{}: ${name} undefined",
                    p["title"]
                );
                rest = &rest[i + 1..];
            }
        }
    }
    // The story the issue asks for, by panel.
    let titles: Vec<&str> = all.iter().filter_map(|p| p["title"].as_str()).collect();
    for wanted in [
        "by route",
        "by status",
        "by error.type",
        "Total time",
        "Application time",
        "Output time",
        "heatmap",
        "Bytes per response",
        "Blocks per response",
        "small-block detector",
        "Active requests",
        "Average concurrency",
        "Utilization",
    ] {
        assert!(titles.iter().any(|t| t.contains(wanted)), "no panel for {wanted:?}: {titles:?}");
    }
}

#[test]
fn datadog_dashboard_has_what_the_importer_needs() {
    let dash = datadog();
    assert!(dash["title"].is_string());
    assert_eq!(dash["layout_type"], "ordered");
    let vars = dash["template_variables"].as_array().expect("template_variables");
    assert_eq!(vars.len(), 1);
    assert_eq!(
        (vars[0]["name"].as_str(), vars[0]["prefix"].as_str()),
        (Some("route"), Some(ROUTE))
    );
    let groups = dash["widgets"].as_array().expect("widgets");
    let titles: Vec<&str> =
        groups.iter().filter_map(|g| g["definition"]["title"].as_str()).collect();
    assert_eq!(titles, ["Traffic", "Errors", "Latency", "Output", "Saturation"]);
    let mut widgets = 0;
    for group in groups {
        assert_eq!(group["definition"]["type"], "group");
        assert_eq!(group["definition"]["layout_type"], "ordered");
        for w in group["definition"]["widgets"].as_array().expect("group widgets") {
            widgets += 1;
            let d = &w["definition"];
            let kind = d["type"].as_str().expect("widget type");
            assert!(["timeseries", "heatmap", "query_table"].contains(&kind), "{kind}");
            for r in d["requests"].as_array().expect("requests") {
                if let Some(queries) = r["queries"].as_array() {
                    let names: BTreeSet<&str> =
                        queries.iter().filter_map(|q| q["name"].as_str()).collect();
                    for q in queries {
                        assert_eq!(q["data_source"], "metrics");
                        let text = q["query"].as_str().expect("query");
                        // Widgets that can be narrowed by route use the template variable.
                        assert!(text.contains("{$route") || text.contains("{*}"), "{text}");
                    }
                    for f in r["formulas"].as_array().expect("formulas") {
                        let formula = f["formula"].as_str().expect("formula");
                        for word in formula.split(|c: char| !c.is_ascii_alphanumeric()) {
                            if word.starts_with("query") {
                                assert!(names.contains(word), "{formula}: no {word}");
                            }
                        }
                    }
                } else {
                    assert!(r["q"].is_string(), "{r}");
                }
            }
        }
    }
    assert!(widgets >= 14, "{widgets} widgets");
}

#[test]
fn route_variable_narrows_to_one_route_raw_or_regex_escaped() {
    if !have(&[Component::Prometheus]) {
        return;
    }
    let f = fixture();
    let expr = panel_exprs(&grafana())
        .into_iter()
        .find(|(place, _)| place.contains("Requests per second by route"))
        .expect("panel")
        .1;
    // Grafana passes one value as is, and a multi-value selection regex-escaped.
    for value in ["/users/{id}", r"/users/\\{id\\}", r"(/users/\\{id\\}|/api/fast)"] {
        let answer = query_at(&f.prometheus, &substitute(&expr, &[("route", value)]), None);
        assert_eq!(answer["status"], "success", "{value}: {answer}");
        let routes: BTreeSet<String> = vector(&answer).into_keys().collect();
        let mut want = BTreeSet::from(["http_route=/users/{id}".to_owned()]);
        if value.contains("fast") {
            want.insert("http_route=/api/fast".to_owned());
        }
        assert_eq!(routes, want, "{value}");
    }
}

#[test]
fn small_block_and_aggregation_panels_give_exact_values_under_promtool_test_rules() {
    if !have(&[Component::Promtool]) {
        return;
    }
    // Synthetic series, two instances: /bytes sends 1 MiB in 128-byte blocks (8192 per
    // response), /kb in 8 KiB blocks (128 per response); each instance finishes one request of
    // each per 15 s step; instance b also serves /kb at twice the rate.
    let exprs = panel_exprs(&grafana());
    let expr = |title: &str| {
        let e = &exprs.iter().find(|(place, _)| place.contains(title)).expect("panel").1;
        substitute(e, &[])
    };
    let per_block = expr("Bytes per block by route");
    let per_response = expr("Blocks per response");
    let rate = expr("Requests per second by route");
    let mut series = String::new();
    for (instance, kb_factor) in [("a:1", 1), ("b:1", 2)] {
        for (route, blocks, n) in [("/bytes", 8192u64, 1u64), ("/kb", 128, kb_factor)] {
            let labels = format!(
                "job=\"app\",instance=\"{instance}\",http_route=\"{route}\",http_request_method=\"GET\",http_response_status_code=\"200\""
            );
            let bytes = 1_048_576 * n;
            for (name, step) in [
                ("http_server_output_bytes_sum", bytes),
                ("http_server_output_bytes_count", n),
                ("http_server_output_blocks_sum", blocks * n),
                ("http_server_output_blocks_count", n),
                ("http_server_requests_total", n),
            ] {
                series.push_str(&format!(
                    "      - series: '{name}{{{labels}}}'\n        values: '0+{step}x40'\n"
                ));
            }
        }
    }
    let test = format!(
        r#"rule_files: []
evaluation_interval: 15s
tests:
  - interval: 15s
    input_series:
{series}    promql_expr_test:
      - expr: '{per_block}'
        eval_time: 5m
        exp_samples:
          - labels: '{{http_route="/bytes"}}'
            value: 128
          - labels: '{{http_route="/kb"}}'
            value: 8192
      - expr: '{per_response}'
        eval_time: 5m
        exp_samples:
          - labels: '{{http_route="/bytes"}}'
            value: 8192
          - labels: '{{http_route="/kb"}}'
            value: 128
      - expr: '{rate}'
        eval_time: 5m
        exp_samples:
          - labels: '{{http_route="/bytes"}}'
            value: {bytes_rate}
          - labels: '{{http_route="/kb"}}'
            value: {kb_rate}
"#,
        bytes_rate = 2.0 / 15.0,
        kb_rate = 3.0 / 15.0,
    );
    let dir = support::components::TempDir::new("promtool-test");
    let file = dir.path().join("test.yml");
    std::fs::write(&file, &test).expect("write test.yml");
    let out = Command::new("promtool")
        .args(["test", "rules"])
        .arg(&file)
        .output()
        .expect("promtool is missing: run ./scripts/install-components.sh");
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains("SUCCESS"), "{text}\n{test}");
}
