//! The statsd exporter against a real Etsy statsd 0.9.0 daemon and on the wire: tags intact,
//! counters and byte sums equal to the traffic, timers in milliseconds, hostile routes, and a
//! full queue. (A server that is down: `tests/exporter_faults.rs`, where timing comparisons run
//! alone.)

use crate::support::NAMES;
use std::net::UdpSocket;
use std::time::{Duration, Instant};
use tower_vitals::DEFAULT_PREFIX;

use crate::support::app::{AppThread, BIG, CHUNK, CHUNKS, USERS, USER_BODY};
use crate::support::components::{have, Component, Flushed, Statsd};
use tower_vitals::statsd::{self, HistogramType, Pipeline};

/// (The test client speaks HTTP/1.0.)
const USERS_KEY: &str = "http.route=/users/{id};http.request.method=GET;\
                         http.response.status_code=200;network.protocol.version=1.0;url.scheme=http";

fn key(name: &str, tags: &str) -> String {
    format!("{DEFAULT_PREFIX}.{name};{tags}")
}

fn expected_bytes() -> f64 {
    (USERS * USER_BODY.len() + BIG * CHUNK * CHUNKS + 1) as f64
}

fn check_flushed(statsd: &Statsd, flushed: &Flushed, timer_values_must_be_whole: bool) {
    let requests = USERS + BIG + 1;
    // Counters sum to the requests sent, per route, with the tags as sent.
    assert_eq!(
        flushed.counters.get(&key("requests", USERS_KEY)),
        Some(&(USERS as f64)),
        "{flushed:#?}"
    );
    assert_eq!(flushed.counter_total(&NAMES.requests), requests as f64);
    // Byte and frame histograms (`|h`: Etsy statsd sums them) sum to what was sent.
    assert_eq!(flushed.counter_total(&NAMES.output_bytes), expected_bytes());
    assert_eq!(flushed.counter_total(&NAMES.output_blocks), (USERS + BIG * CHUNKS + 1) as f64);
    // Time histograms arrive as timers in milliseconds, one value per request.
    for name in ["request.duration", "application_time", "output_time"] {
        let values = flushed.timer_values(&format!("{DEFAULT_PREFIX}.{name}"));
        assert_eq!(values.len(), requests, "{name}: {values:?}");
        assert!(values.iter().all(|v| v.is_finite() && *v >= 0.0 && *v < 10_000.0), "{values:?}");
        if timer_values_must_be_whole {
            assert!(values.iter().all(|v| v.fract() == 0.0), "{values:?}");
        }
    }
    let users_timer = flushed.timers.get(&key("request.duration", USERS_KEY));
    assert_eq!(users_timer.map(Vec::len), Some(USERS), "{flushed:#?}");
    // The hostile route is one well-formed key, separators replaced, and no line was refused.
    let hostile: Vec<&String> =
        flushed.counters.keys().filter(|k| k.contains("http.route=/a_b_c_d:e_")).collect();
    assert_eq!(hostile.len(), 3, "requests, output_bytes, output_blocks: {flushed:#?}");
    let hostile_requests = format!(
        "{};http.route={};http.request.method=GET;http.response.status_code=200;\
         network.protocol.version=1.0;url.scheme=http",
        NAMES.requests,
        crate::support::app::hostile_tag()
    );
    assert_eq!(flushed.counters.get(&hostile_requests), Some(&1.0), "{hostile:?}");
    assert_eq!(flushed.bad_lines, 0.0, "statsd refused lines; log:\n{}", statsd.log());
}

fn wait_for_traffic(statsd: &Statsd) -> Flushed {
    statsd.wait_for(Duration::from_secs(15), |f| {
        f.counter_total(&NAMES.requests) >= (USERS + BIG + 1) as f64
            && f.timer_values(&NAMES.output_time).len() > USERS + BIG
    })
}

#[test]
fn real_statsd_receives_tags_counters_bytes_and_ms_timers_background() {
    if !have(&[Component::Statsd]) {
        return;
    }
    let statsd = Statsd::start();
    let (recorder, exporter) = statsd::builder(statsd.addr().to_string())
        .classic()
        .flush_interval(Duration::from_millis(100))
        .build()
        .expect("build");
    let app = AppThread::start(recorder);
    app.known_traffic();
    let flushed = wait_for_traffic(&statsd);
    check_flushed(&statsd, &flushed, false);
    // Sub-millisecond times keep their fraction (no rounding to whole ms).
    let values = flushed.timer_values(&NAMES.application_time);
    assert!(values.iter().any(|v| v.fract() != 0.0), "{values:?}");
    assert_eq!(exporter.dropped(), 0);
    drop(app);
}

#[test]
fn real_statsd_receives_the_same_totals_inline() {
    if !have(&[Component::Statsd]) {
        return;
    }
    let statsd = Statsd::start();
    let (recorder, exporter) = statsd::builder(statsd.addr().to_string())
        .classic()
        .pipeline(Pipeline::Inline)
        .build()
        .expect("build");
    let app = AppThread::start(recorder);
    app.known_traffic();
    // The exporter's sink (cadence's BufferedUdpMetricSink) sends a datagram only when its
    // buffer is full, or when it is dropped: stop the app to drop the recorder.
    drop(app);
    let flushed = wait_for_traffic(&statsd);
    check_flushed(&statsd, &flushed, true);
    assert_eq!(exporter.dropped(), 0);
}

#[test]
fn real_statsd_gets_percentiles_of_sizes_when_asked() {
    if !have(&[Component::Statsd]) {
        return;
    }
    let statsd = Statsd::start();
    let (recorder, _exporter) = statsd::builder(statsd.addr().to_string())
        .global_prefix("svc")
        .default_tag("env", "test")
        .classic()
        .size_histograms(HistogramType::Timer)
        .flush_interval(Duration::from_millis(100))
        .build()
        .expect("build");
    let app = AppThread::start(recorder);
    for _ in 0..BIG {
        assert_eq!(app.get("/big"), (200, CHUNK * CHUNKS));
    }
    let flushed = statsd.wait_for(Duration::from_secs(15), |f| {
        f.timer_values("svc.http.server.output_bytes").len() >= BIG
    });
    let bytes = flushed.timer_values("svc.http.server.output_bytes");
    assert_eq!(bytes, vec![(CHUNK * CHUNKS) as f64; BIG]);
    let blocks = flushed.timer_values("svc.http.server.output_blocks");
    assert_eq!(blocks, vec![CHUNKS as f64; BIG]);
    let tagged = "svc.http.server.requests;env=test;http.route=/big;http.request.method=GET;\
                  http.response.status_code=200;network.protocol.version=1.0;url.scheme=http";
    assert_eq!(flushed.counters.get(tagged), Some(&(BIG as f64)), "{flushed:#?}");
}

/// Reads every datagram arriving on `socket` for `window`.
fn capture(socket: &UdpSocket, window: Duration) -> Vec<String> {
    socket.set_read_timeout(Some(Duration::from_millis(50))).expect("timeout");
    let deadline = Instant::now() + window;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 65_536];
    while Instant::now() < deadline {
        if let Ok(n) = socket.recv(&mut buf) {
            out.push(String::from_utf8(buf[..n].to_vec()).expect("UTF-8 datagram"));
        }
    }
    out
}

/// Checks one statsd line: `name:value|type` then optional `|@rate` and `|#k:v,…`, nothing
/// else; returns (name, value, type, tags).
fn parse_statsd_line(line: &str) -> (String, f64, String, Vec<(String, String)>) {
    let (name, rest) = line.split_once(':').unwrap_or_else(|| panic!("no ':' in {line:?}"));
    assert!(!name.is_empty() && !name.contains(['|', '#', ',', '@', ' ']), "name in {line:?}");
    let mut fields = rest.split('|');
    let value: f64 =
        fields.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("value in {line:?}"));
    let kind = fields.next().unwrap_or_else(|| panic!("type in {line:?}")).to_string();
    assert!(["c", "g", "ms", "h", "d"].contains(&kind.as_str()), "type {kind} in {line:?}");
    let mut tags = Vec::new();
    for field in fields {
        if let Some(list) = field.strip_prefix('#') {
            for tag in list.split(',') {
                let (k, v) =
                    tag.split_once(':').unwrap_or_else(|| panic!("tag {tag:?} in {line:?}"));
                assert!(!k.is_empty() && !v.is_empty(), "tag {tag:?} in {line:?}");
                tags.push((k.to_string(), v.to_string()));
            }
        } else {
            panic!("unexpected field {field:?} in {line:?}");
        }
    }
    (name.to_string(), value, kind, tags)
}

#[test]
fn lines_on_the_wire_are_well_formed_for_hostile_routes_both_pipelines() {
    for pipeline in [Pipeline::Background, Pipeline::Inline] {
        let sink = UdpSocket::bind("127.0.0.1:0").expect("bind sink");
        let (recorder, _exporter) = statsd::builder(sink.local_addr().expect("addr").to_string())
            .classic()
            .default_tag("a|b", "c,d#e\nf")
            .flush_interval(Duration::from_millis(50))
            .pipeline(pipeline)
            .build()
            .expect("build");
        let app = AppThread::start(recorder);
        assert_eq!(app.get("/hostile").0, 200);
        assert_eq!(app.get("/users/7"), (200, USER_BODY.len()));
        drop(app); // stops the server; the background sender flushes on its way out
        let datagrams = capture(&sink, Duration::from_millis(1500));
        let lines: Vec<&str> = datagrams.iter().flat_map(|d| d.lines()).collect();
        let mut names = std::collections::BTreeSet::new();
        for line in &lines {
            let (name, _, kind, tags) = parse_statsd_line(line);
            assert_eq!(tags[0], ("a_b".to_string(), "c_d_e_f".to_string()), "{line}");
            let route = tags.iter().find(|(k, _)| k == "http.route").map(|(_, v)| v.as_str());
            if let Some(route) = route {
                assert!(
                    route == "/users/{id}" || route == crate::support::app::hostile_tag(),
                    "{line}"
                );
            }
            if name.ends_with("duration") || name.ends_with("_time") {
                assert_eq!(kind, "ms", "{line}");
            }
            names.insert(name);
        }
        for expected in [
            &NAMES.requests,
            &NAMES.duration,
            &NAMES.application_time,
            &NAMES.output_time,
            &NAMES.output_blocks,
            &NAMES.output_bytes,
        ] {
            assert!(names.contains(expected), "{pipeline:?}: no {expected} in {lines:#?}");
        }
    }
}

#[test]
fn full_queue_drops_and_counts_without_blocking() {
    let sink = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let (recorder, exporter) = statsd::builder(sink.local_addr().expect("addr").to_string())
        .queue_size(4)
        .build()
        .expect("build");
    let histogram = metrics::with_local_recorder(
        &recorder,
        || metrics::histogram!("x.output_bytes", "http.route" => "/r"),
    );
    // Far more samples than the queue holds, faster than the sender thread drains (every 5 ms).
    for i in 0..10_000 {
        histogram.record(f64::from(i));
    }
    assert!(exporter.dropped() > 0, "nothing dropped");
    assert!(exporter.dropped() < 10_000, "nothing queued");
}
