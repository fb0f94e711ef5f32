//! `/metrics` rendering does not stall the requests of the runtime that serves it.
//!
//! One single-threaded tokio runtime serves an axum app (a `/ping` route under `VitalsLayer`,
//! and `PrometheusMetrics::service` at `/metrics`) and the standalone listener
//! (`PrometheusMetrics::serve`), with a registry of 10,000 series (rendering it takes
//! milliseconds). A client times `/ping` requests over loopback in blocks, alternately without
//! a scrape and with two scrapes of `/metrics` (one from each listener, one after the other)
//! while the pings run.
//! Rendered on the async worker, the scrape would hold up every ping due during the render
//! (tens of ms: several % of a block); off the worker (tokio's blocking pool), the p99 must stay
//! within 2x of the p99 without scrapes: the ratio of the medians over blocks, in this run.
//! Two scrapes per block, not a scraper looping: on 2 cores, a render thread that never stops
//! would starve the worker of CPU, which is a different question (capacity, not stalls).
//!
//! This binary has ONE test on purpose: another test running beside it would load the same
//! 2 cores and blur the comparison.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use axum::routing::{get, get_service};
use axum::Router;
use tower_vitals::prometheus::{self, PrometheusMetrics};
use tower_vitals::VitalsLayer;

/// Series in the registry.
const SERIES: usize = 10_000;
/// Pairs of blocks (without scrapes, with scrapes), the fewest timed pings per block, and their
/// interval. A block lasts at least 1000 pings and 30 renders, so the two renders of a block
/// take at most a fifteenth of it: rendered on the worker, they would hold up more than 1 % of
/// the pings (the p99 shows it); off the worker, what stays on it per scrape (writing the
/// answer, ~400 KB, to the socket: under a millisecond) holds up fewer than 1 %, and the
/// rendering thread leaves the worker most of a core.
const BLOCKS: usize = 7;
const MIN_PINGS: usize = 1_000;
const INTERVAL: Duration = Duration::from_millis(1);
/// When, after a block's pings start, its first scrape starts (and the second, after the first).
const SCRAPE_AT: Duration = Duration::from_millis(100);
/// The most the p99 may grow while scrapes run.
const MAX_P99_RATIO: f64 = 2.0;
/// A p99 below this counts as this much in the ratio: on a quiet machine the p99 without
/// scrapes is ~0.2 ms, where a scraper thread reading 400 KB and a render thread busy on the
/// second of 2 cores move it by tenths of a millisecond (scheduling, not a stall of the worker).
/// A render on the worker holds it up for the whole render (~10 ms, and more in a large
/// registry): still 10x this floor.
const P99_FLOOR_SECS: f64 = 0.001;

/// An HTTP/1.1 response read off a blocking stream: its status line's code and body length.
fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> (u16, usize) {
    buf.clear();
    let mut chunk = [0u8; 65_536];
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = stream.read(&mut chunk).expect("read response head");
        assert!(n > 0, "connection closed before the response head");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let status: u16 = head[9..12].parse().expect("status code");
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map(|v| v.trim().parse().expect("content-length"))
        .expect("a content-length (no chunked bodies here)");
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk).expect("read response body");
        assert!(n > 0, "connection closed mid-body");
        buf.extend_from_slice(&chunk[..n]);
    }
    (status, length)
}

fn p99(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[(v.len() * 99 / 100).min(v.len() - 1)]
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// One block of `pings` `/ping` requests on one keep-alive connection, one every `INTERVAL`
/// (open loop: a request held up by the server delays the ones scheduled after it, and their
/// latency counts from when they were due, so a stall of the worker shows in every request it
/// held up, not only in the one that was in flight); returns the p99.
fn ping_block(addr: SocketAddr, pings: usize) -> Duration {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let mut buf = Vec::new();
    for _ in 0..50 {
        // Warm the connection up.
        stream.write_all(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n").expect("write");
        assert_eq!(read_response(&mut stream, &mut buf).0, 200);
    }
    let mut times = Vec::with_capacity(pings);
    let start = Instant::now();
    let mut free_at = start;
    for i in 0..pings {
        let due = start + INTERVAL * i as u32;
        // On time: wait for the due time, and time from the send (a late wake-up of this
        // thread is not the server's doing). Behind (the last answer came after this was due):
        // send now and time from the due time.
        let from = if free_at <= due {
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            Instant::now()
        } else {
            due
        };
        stream.write_all(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n").expect("write");
        assert_eq!(read_response(&mut stream, &mut buf).0, 200);
        free_at = Instant::now();
        times.push(free_at - from);
    }
    p99(times)
}

/// Scrapes `/metrics` at `target` once, `SCRAPE_AT` from now; returns when it started and ended.
fn scrape(target: SocketAddr) -> (Instant, Instant) {
    std::thread::sleep(SCRAPE_AT);
    let start = Instant::now();
    let mut stream = TcpStream::connect(target).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("write");
    let mut buf = Vec::new();
    let (status, len) = read_response(&mut stream, &mut buf);
    assert_eq!(status, 200);
    assert!(len > SERIES * 20, "a scrape of {len} bytes is not the full registry");
    (start, Instant::now())
}

#[test]
fn scrapes_of_a_large_registry_do_not_stall_requests_on_the_same_runtime() {
    let recorder = prometheus::builder().build_recorder();
    let metrics = PrometheusMetrics::from_handle(recorder.handle());
    metrics::set_global_recorder(recorder).expect("the only recorder of this binary");
    for i in 0..SERIES {
        metrics::counter!("app.items", "id" => i.to_string()).increment(1);
    }
    let mut render_time = Duration::MAX;
    for _ in 0..2 {
        let t = Instant::now();
        let text = metrics.render();
        render_time = render_time.min(t.elapsed());
        assert!(text.lines().filter(|l| l.starts_with("app_items")).count() >= SERIES);
    }
    let pings =
        MIN_PINGS.max((render_time * 30).as_micros() as usize / INTERVAL.as_micros() as usize);

    // The server: one runtime, one worker thread, both listeners on it.
    let (addrs_tx, addrs_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = std::thread::spawn({
        let metrics = metrics.clone();
        move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let app = Router::new()
                    .route("/ping", get(|| async { "pong" }))
                    .layer(VitalsLayer::new())
                    .route("/metrics", get_service(metrics.service()));
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
                let app_addr = listener.local_addr().expect("addr");
                let standalone =
                    metrics.serve(SocketAddr::from(([127, 0, 0, 1], 0))).await.expect("serve");
                addrs_tx.send((app_addr, standalone.local_addr())).expect("send addrs");
                let serve = axum::serve(listener, app).with_graceful_shutdown(async {
                    let _ = stop_rx.await;
                });
                let _ = tokio::time::timeout(Duration::from_secs(300), serve).await;
                standalone.shutdown().await;
            });
        }
    });
    let (app_addr, standalone_addr) =
        addrs_rx.recv_timeout(Duration::from_secs(30)).expect("server started");

    let (mut quiet, mut scraped, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    let mut scrape_times = Vec::new();
    for block in 0..BLOCKS {
        let without = ping_block(app_addr, pings);
        let targets =
            if block % 2 == 0 { [app_addr, standalone_addr] } else { [standalone_addr, app_addr] };
        let scraper = std::thread::spawn(move || targets.map(scrape));
        let pings_start = Instant::now();
        let with = ping_block(app_addr, pings);
        let pings_end = Instant::now();
        for (start, end) in scraper.join().expect("scraper") {
            assert!(
                start > pings_start && start < pings_end,
                "a scrape did not start while the pings ran"
            );
            scrape_times.push(end - start);
        }
        quiet.push(without.as_secs_f64());
        scraped.push(with.as_secs_f64());
        ratios.push(with.as_secs_f64() / without.as_secs_f64());
    }
    let _ = stop_tx.send(());
    server.join().expect("server thread");

    let ratio =
        median(scraped.clone()).max(P99_FLOOR_SECS) / median(quiet.clone()).max(P99_FLOOR_SECS);
    let us = |v: &[f64]| v.iter().map(|s| format!("{:.0}", s * 1e6)).collect::<Vec<_>>().join(" ");
    let report = format!(
        "render of {SERIES} series: {render_time:?}; {pings} pings per block; scrapes took {scrape_times:.1?}\n\
         p99 without scrapes (us): {}\np99 with scrapes    (us): {}\n\
         per-block ratios: {:.2?}\nratio of medians (each at least {P99_FLOOR_SECS} s): {ratio:.2} (limit {MAX_P99_RATIO})",
        us(&quiet),
        us(&scraped),
        ratios,
    );
    eprintln!("{report}");
    assert!(ratio <= MAX_P99_RATIO, "scrapes stall the runtime's requests:\n{report}");
}
