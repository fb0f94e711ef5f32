//! The Prometheus exporter against the real thing: a real Prometheus server scraping an axum
//! app that served known traffic, `promtool check metrics` on the exposition text, and the
//! `/metrics` service, handler and standalone listener.
#![cfg(feature = "prometheus")]

mod support;

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;
use support::{prom_name, NAMES};

use axum::routing::get_service;
use axum::Router;
use support::app::{CHUNK, CHUNKS, HOSTILE};
use support::components::{have, http_get, promtool_check_metrics, Component, Prometheus};
use tower_vitals::prometheus::{self, PrometheusMetrics};

const USERS: u64 = 20;
const BIG: u64 = 5;

/// The global recorder of this test binary, installed once, with every classic bucket (the
/// full set, one builder call away from the default).
fn metrics() -> &'static PrometheusMetrics {
    static METRICS: OnceLock<PrometheusMetrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        prometheus::install_with(prometheus::builder().all_classic_buckets())
            .expect("first recorder of this test binary")
    })
}

/// The shared test app (tests/support/app.rs) with `/metrics` added after the layer, so
/// scrapes are not measured.
fn app(metrics: &PrometheusMetrics) -> Router {
    support::app::app().route("/metrics", get_service(metrics.service()))
}

/// The app, served on 127.0.0.1 by its own runtime thread, with the known traffic already sent.
fn served_app() -> SocketAddr {
    static ADDR: OnceLock<SocketAddr> = OnceLock::new();
    *ADDR.get_or_init(|| {
        let addr = support::app::serve_detached(app(metrics()), 1);
        for id in 0..USERS {
            assert_eq!(http_get(addr, &format!("/users/{id}")).expect("GET").0, 200);
        }
        for _ in 0..BIG {
            let (status, body) = http_get(addr, "/big").expect("GET /big");
            assert_eq!((status, body.len()), (200, CHUNK * CHUNKS));
        }
        assert_eq!(http_get(addr, "/hostile").expect("GET /hostile").0, 200);
        addr
    })
}

/// A label value as the text format writes it: `\`, `"` and newline escaped.
fn prometheus_escaped(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn one_value(prom: &Prometheus, promql: &str) -> f64 {
    let samples = prom.samples(promql);
    assert_eq!(samples.len(), 1, "{promql}: {samples:?}");
    samples[0].value
}

#[test]
fn real_prometheus_scrapes_counts_quantiles_bytes_and_blocks_per_route() {
    if !have(&[Component::Prometheus]) {
        return;
    }
    let addr = served_app();
    let prom = Prometheus::start(&[addr]);
    let wait = Duration::from_secs(15);

    // Requests per route: exactly the traffic sent (scrapes are not measured).
    let per_route =
        prom.wait_for("sum by (http_route) (http_server_requests_total{job=\"app\"})", wait, |s| {
            s.len() >= 3
        });
    let count = |route: &str| {
        per_route
            .iter()
            .find(|s| s.labels.get("http_route").map(String::as_str) == Some(route))
            .map(|s| s.value)
    };
    assert_eq!(count("/users/{id}"), Some(USERS as f64), "{per_route:?}");
    assert_eq!(count("/big"), Some(BIG as f64), "{per_route:?}");

    // Labels carry method and status.
    let ok = one_value(
        &prom,
        "sum(http_server_requests_total{http_route=\"/users/{id}\",http_request_method=\"GET\",http_response_status_code=\"200\"})",
    );
    assert_eq!(ok, USERS as f64);

    // A finite p95 from the buckets (bucket counts are cumulative: no rate() needed).
    for metric in [
        &prom_name(&NAMES.duration, "_seconds_bucket"),
        &prom_name(&NAMES.application_time, "_seconds_bucket"),
        &prom_name(&NAMES.output_time, "_seconds_bucket"),
    ] {
        let p95 = one_value(
            &prom,
            &format!(
                "histogram_quantile(0.95, sum by (le) ({metric}{{http_route=\"/users/{{id}}\"}}))"
            ),
        );
        if metric.contains("output_time") {
            // A one-frame body has no output time: the measured zero reads as 0 (the `0`
            // bucket), not as half of the first bucket.
            assert_eq!(p95, 0.0, "{metric} p95 = {p95}");
        } else {
            assert!(p95.is_finite() && p95 > 0.0 && p95 <= 10.0, "{metric} p95 = {p95}");
        }
    }
    let buckets = prom.samples(&format!(
        "{}{{http_route=\"/big\"}}",
        prom_name(&NAMES.duration, "_seconds_bucket")
    ));
    assert_eq!(buckets.len(), prometheus::SECONDS_BUCKETS.len() + 1, "{buckets:?}");

    // Bytes and blocks of the streamed route.
    let total = (BIG as usize * CHUNK * CHUNKS) as f64;
    assert_eq!(one_value(&prom, "sum(http_server_output_bytes_sum{http_route=\"/big\"})"), total);
    assert_eq!(
        one_value(&prom, "sum(http_server_output_bytes_count{http_route=\"/big\"})"),
        BIG as f64
    );
    assert_eq!(
        one_value(&prom, "sum(http_server_output_blocks_sum{http_route=\"/big\"})"),
        (BIG as usize * CHUNKS) as f64
    );
    assert_eq!(
        one_value(&prom, "sum(http_server_output_bytes_bucket{http_route=\"/big\",le=\"65536\"})"),
        BIG as f64
    );
    // 40 000 bytes each: none in the bucket below (powers of four, `BYTES_BUCKETS`).
    assert_eq!(
        one_value(&prom, "sum(http_server_output_bytes_bucket{http_route=\"/big\",le=\"16384\"})"),
        0.0
    );

    // The hostile route arrived as one well-formed series, separators replaced.
    let hostile = prom.samples(&format!(
        "{}{{http_route=~\"/a_b_c_d:e_.*\"}}",
        prom_name(&NAMES.requests, "_total")
    ));
    assert_eq!(hostile.len(), 1, "{hostile:?}");
    assert_eq!(hostile[0].value, 1.0);
    assert_eq!(hostile[0].labels["http_route"], tower_vitals::labels::sanitize_tag_value(HOSTILE));

    // The in-flight gauge is back to 0 and the target scraped without error.
    assert_eq!(one_value(&prom, "sum(http_server_active_requests)"), 0.0);
}

#[test]
fn promtool_accepts_the_metrics_endpoint_text() {
    if !have(&[Component::Promtool]) {
        return;
    }
    let addr = served_app();
    let (status, text) = http_get(addr, "/metrics").expect("GET /metrics");
    assert_eq!(status, 200);
    for name in [
        "# TYPE http_server_requests_total counter",
        "# TYPE http_server_request_duration_seconds histogram",
        "# TYPE http_server_application_time_seconds histogram",
        "# TYPE http_server_output_time_seconds histogram",
        "# TYPE http_server_output_bytes histogram",
        "# TYPE http_server_output_blocks histogram",
        "# TYPE http_server_active_requests gauge",
    ] {
        assert!(text.contains(name), "missing {name}:\n{text}");
    }
    assert!(!text.contains("quantile="), "a summary slipped in:\n{text}");
    promtool_check_metrics(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
}

#[test]
fn hostile_route_renders_as_one_escaped_prometheus_label() {
    served_app();
    let text = metrics().render();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| {
            l.starts_with(&format!("{}{{http_route=\"/a_b", prom_name(&NAMES.requests, "_total")))
        })
        .collect();
    assert_eq!(lines.len(), 1, "{text}");
    let line = lines[0];
    let value = line
        .strip_prefix(&format!("{}{{http_route=\"", prom_name(&NAMES.requests, "_total")))
        .and_then(|rest| rest.split("\",http_request_method=").next())
        .expect("route label first");
    assert_eq!(
        value,
        prometheus_escaped(&tower_vitals::labels::sanitize_tag_value(HOSTILE)),
        "{line}"
    );
    assert!(line.ends_with("} 1"), "{line}");
}

#[test]
fn metrics_endpoint_sends_the_text_format_content_type() {
    let addr = served_app();
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    use std::io::{Read, Write};
    stream.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").expect("write");
    let mut raw = String::new();
    stream.read_to_string(&mut raw).expect("read");
    let head = raw.split("\r\n\r\n").next().unwrap_or("").to_ascii_lowercase();
    assert!(head.contains("content-type: text/plain; version=0.0.4; charset=utf-8"), "{head}");
}

#[test]
fn standalone_listener_serves_loopback_port_zero_and_stops() {
    let metrics = metrics().clone();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
    runtime.block_on(async move {
        let server = metrics.serve(SocketAddr::from(([127, 0, 0, 1], 0))).await.expect("bind");
        let addr = server.local_addr();
        assert!(addr.ip().is_loopback() && addr.port() != 0);
        let text = tokio::task::spawn_blocking(move || http_get(addr, "/metrics"))
            .await
            .expect("join")
            .expect("GET");
        assert_eq!(text.0, 200);
        server.shutdown().await;
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    });
}

#[test]
fn second_install_is_a_clear_error() {
    let _ = metrics();
    let err = prometheus::install().expect_err("a recorder is already installed");
    assert!(matches!(err, prometheus::InstallError::AlreadyInstalled));
    assert!(err.to_string().contains("already installed"), "{err}");
}

/// The documented alternative: the layer only talks to the `metrics` facade, so a service that
/// keeps metrics-exporter-prometheus (given the crate's buckets) gets the same series from it.
#[test]
fn the_layer_still_works_with_metrics_exporter_prometheus() {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    use tower::{Layer, ServiceExt};
    let recorder = PrometheusBuilder::new()
        .with_recommended_naming(true)
        .set_buckets_for_metric(Matcher::Suffix("duration".into()), prometheus::SECONDS_BUCKETS)
        .expect("buckets")
        .build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || {
        let svc = tower_vitals::VitalsLayer::new().layer(tower::service_fn(
            |_req: http::Request<String>| async {
                Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
                    bytes::Bytes::from_static(b"hello"),
                )))
            },
        ));
        for _ in 0..3 {
            let mut req = http::Request::new(String::new());
            req.extensions_mut().insert(tower_vitals::RouteName::new("/a"));
            let res = support::block_on(svc.clone().oneshot(req)).expect("infallible");
            support::drain(&mut res.into_body());
        }
    });
    let text = handle.render();
    let samples = support::prom_text::parse(&text).expect("parses");
    let requests = support::prom_text::total(&samples, &prom_name(&NAMES.requests, "_total"));
    assert_eq!(requests, 3.0, "{text}");
    let count = support::prom_text::total(&samples, &prom_name(&NAMES.duration, "_seconds_count"));
    assert_eq!(count, 3.0, "{text}");
    assert!(text.contains("http_route=\"/a\""), "{text}");
    assert!(text.contains("le=\"0.000003814697265625\""), "the crate's buckets:\n{text}");
}
