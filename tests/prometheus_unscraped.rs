//! The Prometheus handle is never scraped for a long time: the crate's recorder keeps no
//! sample (pre-bucketed histograms), so its memory stays flat however many requests pass, and
//! the first scrape, much later, has every one. The control run, metrics-exporter-prometheus
//! without upkeep, keeps every histogram sample until the next scrape: the growth this test
//! would catch.
//!
//! Heap bytes are counted by a global counting allocator (`stats_alloc`), so this binary holds a
//! single test.

mod support;

use std::alloc::System;
use std::convert::Infallible;
use support::prom_text;
use support::{prom_name, NAMES};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use metrics::Recorder;
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use support::{block_on, drain};
use tower::{Layer, ServiceExt};
use tower_vitals::prometheus::PrometheusMetrics;
use tower_vitals::{RouteName, VitalsLayer};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const FIRST: usize = 20_000;
const THEN: usize = 80_000;

fn retained(region: &Region<'_, System>) -> i64 {
    let c = region.change();
    c.bytes_allocated as i64 - c.bytes_deallocated as i64
}

fn requests(recorder: &dyn Recorder, layer: &VitalsLayer, n: usize) {
    metrics::with_local_recorder(recorder, || {
        let svc = layer.layer(tower::service_fn(|_req: Request<String>| async {
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"hello"))))
        }));
        for i in 0..n {
            let mut req = Request::new(String::new());
            let route = if i % 2 == 0 { "/users/{id}" } else { "/orders/{id}" };
            req.extensions_mut().insert(RouteName::new(route));
            let res = block_on(svc.clone().oneshot(req)).expect("infallible");
            drain(&mut res.into_body());
        }
    });
}

/// Retained bytes after FIRST requests and after THEN more, never rendering in between.
fn unscraped_growth(recorder: &dyn Recorder) -> (i64, i64) {
    let region = Region::new(GLOBAL);
    let layer = VitalsLayer::new();
    requests(recorder, &layer, FIRST);
    let after_first = retained(&region);
    requests(recorder, &layer, THEN);
    let after_then = retained(&region);
    (after_first, after_then - after_first)
}

#[test]
fn unscraped_prometheus_memory_stays_flat() {
    // The crate's recorder, never rendered until the end.
    let kept = tower_vitals::prometheus::builder().build_recorder();
    let kept_metrics = PrometheusMetrics::from_handle(kept.handle());
    let (base, growth) = unscraped_growth(&kept);

    // Control: metrics-exporter-prometheus, the same traffic, no upkeep, no scrape.
    let control = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let (control_base, control_growth) = unscraped_growth(&control);

    println!(
        "prometheus unscraped: {base} B after {FIRST} requests, then +{growth} B after {THEN} \
         more; metrics-exporter-prometheus without upkeep {control_base} B, then \
         +{control_growth} B"
    );
    // The exporter without upkeep holds every sample of the 5 histograms: >= 8 bytes each.
    assert!(control_growth >= (THEN * 5 * 8) as i64, "control grew only {control_growth} B");
    // Ours: flat (4x the requests, the same buckets: nothing may grow per request).
    assert!(growth < 4 * 1024, "memory grew by {growth} B while never scraped");

    // Nothing was lost: the first scrape, much later, has every request and every sample.
    let samples = prom_text::parse(&kept_metrics.render()).expect("render parses");
    let total = prom_text::total(&samples, &prom_name(&NAMES.requests, "_total"));
    assert_eq!(total, (FIRST + THEN) as f64);
    let counted = prom_text::total(&samples, &prom_name(&NAMES.duration, "_seconds_count"));
    assert_eq!(counted, (FIRST + THEN) as f64);
}
