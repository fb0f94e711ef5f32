//! The Prometheus handle is never scraped for a long time: with the upkeep that
//! `tower_vitals::prometheus::install` starts (here started by hand on a local recorder), the
//! exporter's memory stays flat however many requests pass; without it, every histogram sample
//! is kept until the next scrape (the control run shows the growth this test would catch).
//!
//! Heap bytes are counted by a global counting allocator (`stats_alloc`), so this binary holds a
//! single test.

mod support;

use std::alloc::System;
use std::convert::Infallible;
use std::time::Duration;
use support::prom_text;
use support::{prom_name, NAMES};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use metrics_exporter_prometheus::PrometheusRecorder;
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

fn requests(recorder: &PrometheusRecorder, layer: &VitalsLayer, n: usize) {
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
fn unscraped_growth(
    recorder: &PrometheusRecorder,
    upkeep: Option<&PrometheusMetrics>,
) -> (i64, i64) {
    let region = Region::new(GLOBAL);
    let layer = VitalsLayer::new();
    requests(recorder, &layer, FIRST);
    settle(upkeep);
    let after_first = retained(&region);
    requests(recorder, &layer, THEN);
    settle(upkeep);
    let after_then = retained(&region);
    (after_first, after_then - after_first)
}

/// With upkeep: wait for one more upkeep pass, so the samples of the last requests are drained
/// into buckets as they would be seconds later.
fn settle(upkeep: Option<&PrometheusMetrics>) {
    if upkeep.is_some() {
        std::thread::sleep(Duration::from_millis(150));
    }
}

#[test]
fn unscraped_prometheus_memory_stays_flat_with_upkeep() {
    // The crate's recorder (its buckets), upkeep every 50 ms instead of every 5 s to keep the
    // test short; never rendered until the end.
    let kept = tower_vitals::prometheus::builder().build_recorder();
    let kept_metrics = PrometheusMetrics::from_handle(kept.handle());
    let upkeep_every = Duration::from_millis(50);
    kept_metrics.spawn_upkeep(upkeep_every).expect("upkeep thread");
    let started = std::time::Instant::now();
    let (base, growth) = unscraped_growth(&kept, Some(&kept_metrics));
    let upkeep_passes = (started.elapsed().as_millis() / upkeep_every.as_millis()) as f64 + 1.0;

    // Control: the same traffic, no upkeep, no scrape.
    let control = tower_vitals::prometheus::builder().build_recorder();
    let (control_base, control_growth) = unscraped_growth(&control, None);

    println!(
        "prometheus unscraped: with upkeep {base} B after {FIRST} requests, then +{growth} B \
         after {THEN} more; without upkeep {control_base} B, then +{control_growth} B"
    );
    // Without upkeep every sample of the 5 histograms is held: >= 8 bytes each.
    assert!(control_growth >= (THEN * 5 * 8) as i64, "control grew only {control_growth} B");
    // With upkeep: flat (buckets are fixed), beyond an upkeep pass in flight.
    assert!(growth < 256 * 1024, "memory grew by {growth} B while never scraped");
    assert!(growth * 20 < control_growth, "upkeep {growth} B vs none {control_growth} B");

    // Nothing was lost by the layer: the first scrape, much later, has every request.
    let samples = prom_text::parse(&kept_metrics.render()).expect("render parses");
    let total = prom_text::total(&samples, &prom_name(&NAMES.requests, "_total"));
    assert_eq!(total, (FIRST + THEN) as f64);
    // Histogram samples: metrics-util's `AtomicBucket` (under the exporter's histograms) can lose
    // a sample pushed while an upkeep pass detaches the bucket (the pusher loaded the old block
    // before the swap and writes into it after the drain read it): seen here once in ~3 runs,
    // 99,999 of 100,000. That is the exporter's, at most one sample per pass that overlaps a
    // push; anything beyond it would be ours. See RELIABILITY.md.
    let counted = prom_text::total(&samples, &prom_name(&NAMES.duration, "_seconds_count"));
    let lost = (FIRST + THEN) as f64 - counted;
    println!(
        "prometheus unscraped: {lost} histogram samples lost in {upkeep_passes} upkeep passes"
    );
    assert!(lost >= 0.0, "more samples than requests: {counted}");
    assert!(lost <= upkeep_passes, "{lost} samples lost in {upkeep_passes} upkeep passes");
}
