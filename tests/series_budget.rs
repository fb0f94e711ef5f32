//! The series budget, measured on a newcomer's app: 5 axum routes behind the layer, one user
//! label `tenant` (34 values, plus `none` and `overflow`), every route answered for every
//! tenant value, scraped with the default recorder and with `all_classic_buckets()`.
//!
//! Prints series and bytes per scrape (text, text + gzip, protobuf) for both, and fails if
//! the default carries more than 60 classic series per response label set or does not shrink
//! the scrape. `cargo test --all-features --test series_budget -- --nocapture` prints the table.
#![cfg(all(feature = "axum", feature = "prometheus"))]

use std::io::Write as _;

use axum::routing::get;
use axum::Router;
use http::Request;
use http_body_util::BodyExt;
use tower::ServiceExt;
use tower_vitals::prometheus::{self, PrometheusBuilder, PrometheusMetrics};
use tower_vitals::VitalsLayer;

const TENANTS: usize = 34;

/// What one scrape of the newcomer's app carries.
#[derive(Debug)]
struct Scrape {
    label_sets: usize,
    classic_series: usize,
    /// Classic series of the response label sets (those with a `tenant`), gauges left out.
    response_series: usize,
    native_series: usize,
    text: usize,
    gzip: usize,
    protobuf: usize,
    protobuf_gzip: usize,
}

fn series(text: &str) -> usize {
    text.lines().filter(|l| !l.is_empty() && !l.starts_with('#')).count()
}

fn gzip(bytes: &[u8]) -> usize {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).expect("gzip");
    encoder.finish().expect("gzip").len()
}

/// Metric families' series in a protobuf exposition (one per label set and metric: native
/// histograms are one series each).
fn protobuf_series(mut bytes: &[u8]) -> usize {
    let mut n = 0;
    while !bytes.is_empty() {
        // Length-delimited MetricFamily messages: count `metric` fields (field 4).
        let (len, used) = varint(bytes);
        let mut message = &bytes[used..used + len as usize];
        bytes = &bytes[used + len as usize..];
        while !message.is_empty() {
            let (tag, used) = varint(message);
            message = &message[used..];
            match tag & 7 {
                0 => message = &message[varint(message).1..],
                2 => {
                    let (len, used) = varint(message);
                    if tag >> 3 == 4 {
                        n += 1;
                    }
                    message = &message[used + len as usize..];
                }
                other => panic!("unexpected wire type {other}"),
            }
        }
    }
    n
}

fn varint(bytes: &[u8]) -> (u64, usize) {
    let mut value = 0u64;
    for (i, b) in bytes.iter().enumerate().take(10) {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return (value, i + 1);
        }
    }
    panic!("bad varint");
}

async fn newcomer(builder: PrometheusBuilder) -> Scrape {
    let recorder = builder.build_recorder();
    let metrics = PrometheusMetrics::from_handle(recorder.handle());
    let _local = metrics::set_default_local_recorder(&recorder);
    let layer = VitalsLayer::builder()
        .label_from_request("tenant", |req: &http::request::Parts| {
            req.headers.get("x-tenant")?.to_str().ok()
        })
        .expect("label key")
        .label_value_cap(TENANTS)
        .expect("cap")
        .build();
    let app = Router::new()
        .route("/users", get(|| async { "[{\"id\":1,\"name\":\"a\"}]" }))
        .route("/users/{id}", get(|| async { "{\"id\":1,\"name\":\"a\"}" }))
        .route(
            "/orders",
            get(|| async { "[]" }).post(|| async { (http::StatusCode::CREATED, "{}") }),
        )
        .route("/orders/{id}", get(|| async { "{\"id\":7}" }))
        .route("/health", get(|| async { "ok" }))
        .layer(layer);
    // 34 tenants, 2 more than the cap admits (`overflow`), and no header (`none`).
    let tenants: Vec<Option<String>> =
        (0..TENANTS + 2).map(|t| Some(format!("tenant-{t:02}"))).chain([None]).collect();
    let mut requests = 0;
    for tenant in &tenants {
        for (method, path) in [
            ("GET", "/users"),
            ("GET", "/users/42"),
            ("GET", "/orders"),
            ("POST", "/orders"),
            ("GET", "/orders/7"),
            ("GET", "/health"),
        ] {
            let mut request = Request::builder().method(method).uri(path);
            if let Some(tenant) = tenant {
                request = request.header("x-tenant", tenant);
            }
            let request = request.body(axum::body::Body::empty()).expect("request");
            let response = app.clone().oneshot(request).await.expect("response");
            assert!(response.status().is_success(), "{method} {path}");
            response.into_body().collect().await.expect("body");
            requests += 1;
        }
    }
    let text = metrics.render();
    let protobuf = recorder.handle().render_protobuf();
    let label_sets = text.lines().filter(|l| l.starts_with("http_server_requests_total{")).count();
    let total: f64 = text
        .lines()
        .filter(|l| l.starts_with("http_server_requests_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(total, f64::from(requests), "every request counted");
    Scrape {
        label_sets,
        classic_series: series(&text),
        response_series: text
            .lines()
            .filter(|l| !l.starts_with('#') && l.contains("tenant=\""))
            .count(),
        native_series: protobuf_series(&protobuf),
        text: text.len(),
        gzip: gzip(text.as_bytes()),
        protobuf: protobuf.len(),
        protobuf_gzip: gzip(&protobuf),
    }
}

#[tokio::test]
async fn the_default_carries_at_most_60_classic_series_per_response_label_set() {
    let before = newcomer(prometheus::builder().all_classic_buckets()).await;
    let after = newcomer(prometheus::builder()).await;
    let kb = |b: usize| format!("{:.1} KB", b as f64 / 1000.0);
    println!(
        "newcomer's app: 5 routes, tenant = 34 values + none + overflow, {} response label sets\n\
         | configuration | classic series | per label set | text | text + gzip | protobuf (native + classic) | protobuf + gzip | native series |\n\
         |---|---|---|---|---|---|---|---|",
        after.label_sets
    );
    for (name, s) in [("all classic buckets (before)", &before), ("default (after)", &after)] {
        println!(
            "| {name} | {} | {:.1} | {} | {} | {} | {} | {} |",
            s.classic_series,
            s.response_series as f64 / s.label_sets as f64,
            kb(s.text),
            kb(s.gzip),
            kb(s.protobuf),
            kb(s.protobuf_gzip),
            s.native_series
        );
    }
    assert_eq!(before.label_sets, after.label_sets);
    // 5 routes (6 method/route pairs) x 37 tenant values, minus the ones the cap folds.
    assert!(after.label_sets >= 5 * (TENANTS + 2), "{after:?}");
    let per_set = after.response_series as f64 / after.label_sets as f64;
    assert!(per_set <= 60.0, "{per_set} classic series per response label set: {after:?}");
    let full = before.response_series as f64 / before.label_sets as f64;
    assert!(full >= 119.0, "all_classic_buckets() is the full set: {full} per label set");
    assert!(after.text * 2 <= before.text + before.text / 10, "{before:?} -> {after:?}");
    assert_eq!(before.native_series, after.native_series, "native histograms unchanged");
}
