//! Exemplars against the real thing: an axum app with `VitalsLayer::builder().exemplars()` and the
//! crate's recorder, requests carrying known `traceparent` headers (one route deliberately
//! slow) and hostile ones, scraped by a real Prometheus 2.42 with
//! `--enable-feature=exemplar-storage` (OpenMetrics text), then with native histograms too
//! (protobuf). `/api/v1/query_exemplars` must return the slow request's trace id on the slow
//! bucket of its route, and never anything but the valid trace ids sent.
#![cfg(all(feature = "prometheus", feature = "axum"))]

mod support;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use axum::routing::{get, get_service};
use axum::Router;
use serde_json::Value;
use support::components::{
    have, http_get, promtool_check_metrics, url_encode, Component, Prometheus,
};
use tower_vitals::prometheus;
use tower_vitals::VitalsLayer;

/// How long `/slow` takes: inside the `(0.25, 0.5]` bucket of the seconds buckets.
const SLOW: Duration = Duration::from_millis(300);
/// The slow request's trace id.
const SLOW_TRACE: &str = "5a0e0000000000000000000000000005";

/// A `traceparent` header value for `trace` (32 lowercase hex digits).
fn traceparent(trace: &str) -> String {
    format!("00-{trace}-00f067aa0ba902b7-01")
}

/// `traceparent` values that must be ignored, each built around a trace id that would be valid
/// (lowercased, trimmed) if the parser were lenient: if one leaked, its id would show up.
fn hostile() -> Vec<String> {
    let id = "4bf92f3577b34da6a3ce929d0e0e4736";
    vec![
        format!("00-{}-00f067aa0ba902b7-01", &id[..31]), // short trace id
        format!("00-{id}0-00f067aa0ba902b7-01"),         // long trace id
        format!("00-{}-00f067aa0ba902b7-01", id.to_uppercase()), // uppercase
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01".into(), // all zeros
        format!("00-{}g-00f067aa0ba902b7-01", &id[..31]), // non-hex
        format!("ff-{id}-00f067aa0ba902b7-01"),          // version ff
        format!("00-{id}-0000000000000000-01"),          // zero parent id
        format!("00-{id}-00f067aa0ba902b7-01-extra"),    // version 00, too long
        format!("00-{id}-00f067aa0ba902b7-0x"),          // non-hex flags
        format!("00-{id}-00f067aa0ba902b7+01"),          // wrong separator
    ]
}

/// GET `path` over HTTP/1.0 with extra headers; the status.
fn get_with(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> u16 {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let mut request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).expect("write");
    let mut raw = String::new();
    stream.read_to_string(&mut raw).expect("read");
    raw.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// The app on 127.0.0.1, on its own runtime thread.
fn serve(router: Router) -> SocketAddr {
    support::app::serve_detached(router, 2)
}

/// `/api/v1/query_exemplars` over the last ten minutes: `data`, a list of
/// `{seriesLabels, exemplars: [{labels, value, timestamp}]}`.
fn query_exemplars(prometheus: &Prometheus, selector: &str) -> Vec<Value> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let path = format!(
        "/api/v1/query_exemplars?query={}&start={}&end={}",
        url_encode(selector),
        now - 600,
        now + 60
    );
    let (status, body) = http_get(prometheus.addr(), &path).expect("query_exemplars");
    let json: Value = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("query_exemplars: HTTP {status}, not JSON ({e}): {body}"));
    assert_eq!(json["status"], "success", "{json}");
    json["data"].as_array().cloned().unwrap_or_default()
}

/// Every (series labels, trace id, value) in a `query_exemplars` answer.
fn exemplars(data: &[Value]) -> Vec<(Value, String, f64)> {
    let mut out = Vec::new();
    for series in data {
        for e in series["exemplars"].as_array().into_iter().flatten() {
            let trace = e["labels"]["trace_id"].as_str().unwrap_or("<none>").to_owned();
            let value = e["value"].as_str().and_then(|v| v.parse().ok()).unwrap_or(f64::NAN);
            out.push((series["seriesLabels"].clone(), trace, value));
        }
    }
    out
}

/// Waits (at most 30 s) until `selector` has an exemplar with the slow trace id.
fn wait_for_slow(prometheus: &Prometheus, selector: &str) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let data = query_exemplars(prometheus, selector);
        if exemplars(&data).iter().any(|(_, trace, _)| trace == SLOW_TRACE) {
            return data;
        }
        assert!(
            Instant::now() < deadline,
            "no exemplar {SLOW_TRACE} on {selector} after 30 s: {data:?}\nlog:\n{}",
            prometheus.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The scrape is healthy: `up`, no scrape error, nothing about parsing or exemplars in the log.
fn assert_healthy(prometheus: &Prometheus) {
    let up = prometheus.samples("up");
    assert!(up.len() == 1 && up[0].value == 1.0, "up: {up:?}");
    let (_, targets) = http_get(prometheus.addr(), "/api/v1/targets").expect("targets");
    let targets: Value = serde_json::from_str(&targets).expect("targets JSON");
    for target in targets["data"]["activeTargets"].as_array().into_iter().flatten() {
        assert_eq!(target["health"], "up", "{target}");
        assert_eq!(target["lastError"], "", "{target}");
    }
    let log = prometheus.log();
    for line in log.lines() {
        let lower = line.to_ascii_lowercase();
        let bad = lower.contains("level=error")
            || (lower.contains("level=warn")
                && (lower.contains("scrape")
                    || lower.contains("exemplar")
                    || lower.contains("pars")));
        assert!(!bad, "prometheus log: {line}\n{log}");
    }
}

#[test]
fn prometheus_stores_the_slow_requests_trace_id_and_only_valid_ones() {
    if !have(&[Component::Prometheus, Component::Promtool]) {
        return;
    }
    let metrics = prometheus::install().expect("first recorder of this test binary");
    let router = Router::new()
        .route("/fast", get(|| async { "fast" }))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(SLOW).await;
                "slow"
            }),
        )
        .layer(VitalsLayer::builder().exemplars().build())
        .route("/metrics", get_service(metrics.service()));
    let addr = serve(router);

    // Known traffic: valid ids on /fast, hostile headers on both routes, then the slow request
    // with its id, then hostile slow requests (had they been taken, they would replace it).
    let mut valid = BTreeSet::new();
    for i in 1..=20u32 {
        let trace = format!("{i:032x}");
        assert_eq!(get_with(addr, "/fast", &[("traceparent", &traceparent(&trace))]), 200);
        valid.insert(trace);
    }
    for header in hostile() {
        assert_eq!(get_with(addr, "/fast", &[("traceparent", &header)]), 200);
    }
    assert_eq!(get_with(addr, "/slow", &[("traceparent", &traceparent(SLOW_TRACE))]), 200);
    valid.insert(SLOW_TRACE.to_owned());
    for header in hostile().into_iter().take(4) {
        assert_eq!(get_with(addr, "/slow", &[("traceparent", &header)]), 200);
    }

    // The text format is what it was for a scraper that does not ask for OpenMetrics: no
    // exemplar, no `# EOF`, promtool clean. OpenMetrics when asked, ending with `# EOF`.
    let (status, text) = http_get(addr, "/metrics").expect("GET /metrics");
    assert_eq!(status, 200);
    assert!(!text.contains("# EOF") && !text.contains(" # {"), "{text}");
    promtool_check_metrics(&text).expect("promtool check metrics");
    let openmetrics = metrics.render_openmetrics();
    assert!(openmetrics.ends_with("# EOF\n"), "{openmetrics}");
    assert!(openmetrics.contains(&format!("# {{trace_id=\"{SLOW_TRACE}\"}} 0.3")), "{openmetrics}");

    // OpenMetrics text (the default Accept of Prometheus 2.42), then protobuf with native
    // histograms (its exemplars on the classic buckets).
    for flags in [
        &["--enable-feature=exemplar-storage"][..],
        &["--enable-feature=exemplar-storage,native-histograms"][..],
    ] {
        let native = flags[0].contains("native");
        let prometheus = Prometheus::start_with(&[addr], flags);
        let duration = if native {
            r#"http_server_request_duration_seconds{http_route="/slow"}"#
        } else {
            r#"http_server_request_duration_seconds_bucket{http_route="/slow"}"#
        };
        let data = wait_for_slow(&prometheus, duration);
        for (series, trace, value) in exemplars(&data) {
            if trace == SLOW_TRACE {
                assert!((0.3..0.5).contains(&value), "{flags:?}: {value} {series}");
                if !native {
                    assert_eq!(series["le"], "0.5", "{series}");
                }
            }
        }
        if !native {
            let app_time = r#"http_server_application_time_seconds_bucket{http_route="/slow"}"#;
            let data = wait_for_slow(&prometheus, app_time);
            assert!(exemplars(&data).iter().any(|(s, t, _)| t == SLOW_TRACE && s["le"] == "0.5"));
            wait_for_slow(&prometheus, r#"http_server_requests_total{http_route="/slow"}"#);
        }

        // Every exemplar Prometheus holds carries one of the valid ids sent.
        let all = exemplars(&query_exemplars(&prometheus, r#"{job="app"}"#));
        assert!(!all.is_empty());
        for (series, trace, _) in &all {
            assert!(valid.contains(trace), "{flags:?}: unexpected trace id {trace} on {series}");
        }
        assert_healthy(&prometheus);
        eprintln!("{flags:?}: {} exemplars, all valid", all.len());
    }
}
