//! `/metrics` exposure: served on its own 127.0.0.1 listener, the app's port does not answer it;
//! and what it reveals is the route templates, methods, statuses and timings, never a raw path,
//! query string, Host or header value a client sent.
//!
//! A current-thread tokio runtime on the test thread, so the thread-local recorder set here sees
//! the app's requests; both listeners on 127.0.0.1, port 0.

use crate::support::{hostile, prom_text};
use crate::support::{prom_name, NAMES};
use std::net::SocketAddr;
use std::time::Duration;

use axum::routing::get;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower_vitals::prometheus::PrometheusMetrics;
use tower_vitals::VitalsLayer;

/// One raw HTTP/1.1 request (`Connection: close`); returns (status, body).
async fn fetch(addr: SocketAddr, head: &str) -> (u16, String) {
    let io = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream.write_all(head.as_bytes()).await.expect("write");
        let mut out = Vec::new();
        stream.read_to_end(&mut out).await.expect("read");
        String::from_utf8_lossy(&out).into_owned()
    };
    let raw = tokio::time::timeout(Duration::from_secs(10), io).await.expect("answered in 10 s");
    let status = raw.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

fn get_head(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
}

#[test]
fn metrics_on_its_own_loopback_listener_reveal_templates_never_request_data() {
    let recorder = tower_vitals::prometheus::builder().build_recorder();
    let metrics = PrometheusMetrics::from_handle(recorder.handle());
    let _guard = metrics::set_default_local_recorder(&recorder);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");

    let (app_metrics, metrics_page, other_path, carried) = rt.block_on(async {
        // The app: no /metrics route; every route measured.
        let app = axum::Router::new()
            .route("/users/{id}", get(|| async { "user" }))
            .fallback(|| async { (http::StatusCode::NOT_FOUND, "not found") })
            .layer(VitalsLayer::new());
        let app_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let app_addr = app_listener.local_addr().expect("addr");
        let app_task = tokio::spawn(async move {
            let _ = axum::serve(app_listener, app).await;
        });
        // /metrics: its own listener, loopback only, port 0.
        let server =
            metrics.serve(SocketAddr::from(([127, 0, 0, 1], 0))).await.expect("metrics listener");
        let metrics_addr = server.local_addr();
        assert!(metrics_addr.ip().is_loopback(), "bound to {metrics_addr}");
        assert_ne!(metrics_addr.port(), app_addr.port());

        // Clients send hostile paths, queries, Hosts and headers to the app.
        let mut rng = hostile::Rng::new(0xe4905e);
        let mut carried = Vec::new();
        for i in 0..200 {
            let path = if i % 2 == 0 {
                format!("/users/{}?token=secret{}", rng.below(1_000_000), rng.below(1000))
            } else {
                hostile::path(&mut rng)
            };
            let host = format!("{}.example", rng.string(b"abcdefghijklmnopqrstuvwxyz", 12));
            let header = rng.string(b"abcdefghijklmnopqrstuvwxyz0123456789", 20);
            let head = format!(
                "GET {path} HTTP/1.1\r\nHost: {host}\r\nX-Api-Key: {header}\r\n\
                 Connection: close\r\n\r\n"
            );
            let (status, _) = fetch(app_addr, &head).await;
            assert!(status == 200 || status == 404, "app answered {status} for {path}");
            carried.extend([path, host, header]);
        }

        let app_metrics = fetch(app_addr, &get_head("/metrics")).await;
        let metrics_page = fetch(metrics_addr, &get_head("/metrics")).await;
        let other_path = fetch(metrics_addr, &get_head("/users/1")).await;
        server.shutdown().await;
        app_task.abort();
        (app_metrics, metrics_page, other_path, carried)
    });

    assert_eq!(app_metrics.0, 404, "the app's own port does not serve /metrics");
    assert_eq!(other_path.0, 404, "the metrics listener serves /metrics only");
    let (status, text) = metrics_page;
    assert_eq!(status, 200);
    let samples = prom_text::parse(&text).expect("exposition parses");
    // 200 hostile requests plus the /metrics probe on the app's port.
    assert_eq!(prom_text::total(&samples, &prom_name(&NAMES.requests, "_total")), 201.0);

    // What it reveals: these label keys, and route values that are templates.
    let mut routes = std::collections::BTreeSet::new();
    for s in &samples {
        for (k, v) in &s.labels {
            assert!(
                [
                    "http_route",
                    "http_request_method",
                    "http_response_status_code",
                    "error_type",
                    "network_protocol_version",
                    "url_scheme",
                    "le"
                ]
                .contains(&k.as_str()),
                "label {k}={v:?}"
            );
            if k == "http_route" {
                routes.insert(v.clone());
            }
        }
    }
    assert_eq!(routes, ["/users/{id}", "unmatched"].iter().map(|s| s.to_string()).collect());
    // And never what a client sent.
    for c in &carried {
        // Long enough not to match a template or a metric name by chance.
        let probe = c.split('?').nth(1).unwrap_or(c);
        if probe.len() >= 8 {
            assert!(!text.contains(probe), "client data {probe:?} appears on /metrics");
        }
    }
    assert!(!text.contains("secret") && !text.contains(".example"));
}

#[test]
fn metrics_listener_closes_a_connection_that_never_finishes_its_request_head() {
    // A slowloris client (or a stuck one) must not hold a connection, and its file descriptor,
    // for ever: the listener gives a request head HEADER_READ_TIMEOUT to arrive.
    let recorder = tower_vitals::prometheus::builder().build_recorder();
    let metrics = PrometheusMetrics::from_handle(recorder.handle());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let limit = tower_vitals::prometheus::HEADER_READ_TIMEOUT + Duration::from_secs(10);
    let (closed, waited) = rt.block_on(async {
        let server =
            metrics.serve(SocketAddr::from(([127, 0, 0, 1], 0))).await.expect("metrics listener");
        let mut stream =
            tokio::net::TcpStream::connect(server.local_addr()).await.expect("connect");
        stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n").await.expect("write");
        let started = std::time::Instant::now();
        let mut buf = Vec::new();
        let closed = tokio::time::timeout(limit, stream.read_to_end(&mut buf)).await.is_ok();
        // Scrapes still work meanwhile and after.
        let (status, _) = fetch(server.local_addr(), &get_head("/metrics")).await;
        assert_eq!(status, 200);
        server.shutdown().await;
        (closed, started.elapsed())
    });
    assert!(closed, "the half-sent request was still open after {waited:?}");
    println!("half-sent request head closed after {waited:?}");
}
