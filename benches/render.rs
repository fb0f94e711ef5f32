//! Render cost and memory of the crate's Prometheus recorder next to metrics-exporter-prometheus
//! 0.18 (the same buckets), in one run:
//! - render: 210 response label sets of the layer's metric set (one counter, five
//!   histograms, `all_classic_buckets()`: 119 classic series each, 24,990 in all); between renders every histogram gets
//!   one more sample (not timed), so the exporter has samples to drain as in production. Prints
//!   the median ms per text render of each, the ratio, and our protobuf render.
//! - memory: heap bytes per response label set (counted by a global counting allocator), after
//!   registering 1,000 label sets with one request each, then after 10 more requests each
//!   (10x the rate, no scrape in between: flat for the crate's recorder).
//!
//! ```text
//! cargo bench --bench render                  # ROUNDS=15
//! ```

#[path = "common/mod.rs"]
mod common;

use std::alloc::System;
use std::time::Instant;

use metrics::{Key, Label, Recorder};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const HISTOGRAMS: [(&str, f64); 5] = [
    ("http.server.request.duration", 0.000_2),
    ("http.server.application_time", 0.000_1),
    ("http.server.output_time", 0.0),
    ("http.server.output_blocks", 1.0),
    ("http.server.output_bytes", 12.0),
];

fn labels(i: usize) -> Vec<Label> {
    vec![
        Label::new("http.route", format!("/route/{i}")),
        Label::new("http.request.method", "GET"),
        Label::new("http.response.status_code", "200"),
    ]
}

/// The handles of one response label set, as the layer caches them.
struct Set {
    requests: metrics::Counter,
    histograms: Vec<(metrics::Histogram, f64)>,
}

impl Set {
    fn record(&self, n: usize) {
        for _ in 0..n {
            self.requests.increment(1);
            for (h, v) in &self.histograms {
                h.record(*v);
            }
        }
    }
}

fn register(recorder: &dyn Recorder, sets: usize) -> Vec<Set> {
    for (name, _) in &HISTOGRAMS[..3] {
        recorder.describe_histogram((*name).into(), Some(metrics::Unit::Seconds), "time".into());
    }
    recorder.describe_histogram(
        HISTOGRAMS[3].0.into(),
        Some(metrics::Unit::Count),
        "frames".into(),
    );
    recorder.describe_histogram(HISTOGRAMS[4].0.into(), Some(metrics::Unit::Bytes), "bytes".into());
    let metadata = metrics::Metadata::new(module_path!(), metrics::Level::INFO, None);
    (0..sets)
        .map(|i| Set {
            requests: recorder
                .register_counter(&Key::from_parts("http.server.requests", labels(i)), &metadata),
            histograms: HISTOGRAMS
                .iter()
                .map(|(name, v)| {
                    (recorder.register_histogram(&Key::from_parts(*name, labels(i)), &metadata), *v)
                })
                .collect(),
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn time_renders(sets: &[Set], rounds: usize, render: impl Fn() -> usize) -> (f64, usize) {
    let mut times = Vec::new();
    let mut len = 0;
    for _ in 0..rounds {
        for s in sets {
            s.record(1);
        }
        let start = Instant::now();
        len = render();
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    (median(times), len)
}

fn retained(region: &Region<'_, System>) -> i64 {
    let c = region.change();
    c.bytes_allocated as i64 - c.bytes_deallocated as i64
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let rounds = if quick {
        2
    } else {
        std::env::var("ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(15)
    };

    // Render.
    // The same buckets as the exporter: every classic bucket (the default carries 60 of the 119).
    let ours = tower_vitals::prometheus::builder().all_classic_buckets().build_recorder();
    let ours_handle = ours.handle();
    let ours_sets = register(&ours, 210);
    let peer = common::prometheus_builder().with_recommended_naming(true).build_recorder();
    let peer_handle = peer.handle();
    let peer_sets = register(&peer, 210);
    let series =
        ours_handle.render().lines().filter(|l| !l.starts_with('#') && !l.is_empty()).count();
    let (ours_ms, ours_len) = time_renders(&ours_sets, rounds, || ours_handle.render().len());
    let (peer_ms, peer_len) = time_renders(&peer_sets, rounds, || peer_handle.render().len());
    let (proto_ms, proto_len) =
        time_renders(&ours_sets, rounds, || ours_handle.render_protobuf().len());
    println!("render: {series} classic series, {rounds} rounds, median wall ms per render");
    println!("| recorder | text render ms | bytes | protobuf render ms | bytes |");
    println!("|---|---|---|---|---|");
    println!(
        "| tower_vitals::prometheus | {ours_ms:.2} | {ours_len} | {proto_ms:.2} | {proto_len} |"
    );
    println!("| metrics-exporter-prometheus 0.18 | {peer_ms:.2} | {peer_len} | - | - |");
    println!("text render ratio, ours / exporter: {:.2}", ours_ms / peer_ms);

    // Memory per response label set, one recording thread.
    for (name, recorder) in [
        (
            "tower_vitals::prometheus",
            &tower_vitals::prometheus::builder().all_classic_buckets().build_recorder()
                as &dyn Recorder,
        ),
        (
            "metrics-exporter-prometheus 0.18 (no upkeep, no scrape)",
            &common::prometheus_builder().build_recorder(),
        ),
    ] {
        let region = Region::new(GLOBAL);
        let sets = register(recorder, 1000);
        for s in &sets {
            s.record(1);
        }
        let first = retained(&region);
        for s in &sets {
            s.record(10);
        }
        let after = retained(&region);
        println!(
            "memory, {name}: {} B per label set after 1 request each, {} B after 10 more",
            first / 1000,
            after / 1000
        );
        drop(sets);
    }
}
