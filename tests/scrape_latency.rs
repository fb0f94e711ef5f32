//! `/metrics` rendering does not stall the requests of the runtime that serves it.
//!
//! One single-threaded tokio runtime serves an axum app (a `/ping` route under `VitalsLayer`,
//! and `PrometheusMetrics::service` at `/metrics`) and the standalone listener
//! (`PrometheusMetrics::serve`), with a registry of 10,000 series (rendering it takes
//! milliseconds). A client times `/ping` requests over loopback in blocks, alternately without
//! scrapes and with a scraper fetching `/metrics` (from both listeners) all the time. Rendered on
//! the async worker, every scrape would hold up the pings behind it for the whole render; off
//! the worker (tokio's blocking pool), the p99 must stay within 2x of the p99 without scrapes:
//! the ratio of the medians over blocks, measured in this run.
//!
//! This binary has ONE test on purpose: another test running beside it would load the same
//! 2 cores and blur the comparison.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::{get, get_service};
use axum::Router;
use tower_vitals::prometheus::{self, PrometheusMetrics};
use tower_vitals::VitalsLayer;

/// Series in the registry.
const SERIES: usize = 10_000;
/// Pairs of blocks (without scrapes, with scrapes), timed pings per block and their interval.
const BLOCKS: usize = 7;
const PINGS: usize = 1_000;
const INTERVAL: Duration = Duration::from_micros(500);
/// Each of the two scrapers (one per listener) waits this long between its scrapes.
const PAUSE: Duration = Duration::from_millis(200);
/// The most the p99 may grow while scrapes run.
const MAX_P99_RATIO: f64 = 2.0;

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

/// One block of `PINGS` `/ping` requests on one keep-alive connection, one every `INTERVAL`
/// (open loop: a request held up by the server delays the ones scheduled after it, and their
/// latency counts from when they were due, so a stall of the worker shows in every request it
/// held up, not only in the one that was in flight); returns the p99.
fn ping_block(addr: SocketAddr) -> Duration {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let mut buf = Vec::new();
    for _ in 0..50 {
        // Warm the connection up.
        stream.write_all(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n").expect("write");
        assert_eq!(read_response(&mut stream, &mut buf).0, 200);
    }
    let mut times = Vec::with_capacity(PINGS);
    let start = Instant::now();
    let mut free_at = start;
    for i in 0..PINGS {
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

/// Scrapes `/metrics` at `target` until `stop`, one connection per scrape, `PAUSE` between.
fn scraper(target: SocketAddr, stop: Arc<AtomicBool>, scrapes: Arc<AtomicUsize>) {
    let mut buf = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        let mut stream = TcpStream::connect(target).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .expect("write");
        let (status, len) = read_response(&mut stream, &mut buf);
        assert_eq!(status, 200);
        assert!(len > SERIES * 20, "a scrape of {len} bytes is not the full registry");
        scrapes.fetch_add(1, Ordering::Relaxed);
        std::thread::sleep(PAUSE);
    }
}

#[test]
fn scrapes_of_a_large_registry_do_not_stall_requests_on_the_same_runtime() {
    let recorder = prometheus::builder().build_recorder();
    let metrics = PrometheusMetrics::from_handle(recorder.handle());
    metrics::set_global_recorder(recorder).expect("the only recorder of this binary");
    for i in 0..SERIES {
        metrics::counter!("app.items", "id" => i.to_string()).increment(1);
    }
    let t = Instant::now();
    let text = metrics.render();
    let render_time = t.elapsed();
    assert!(text.lines().filter(|l| l.starts_with("app_items")).count() >= SERIES);

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
    let total_scrapes = Arc::new(AtomicUsize::new(0));
    for _ in 0..BLOCKS {
        let without = ping_block(app_addr);
        let stop = Arc::new(AtomicBool::new(false));
        let scrapes = Arc::new(AtomicUsize::new(0));
        let threads = [app_addr, standalone_addr].map(|target| {
            let (stop, scrapes) = (Arc::clone(&stop), Arc::clone(&scrapes));
            std::thread::spawn(move || scraper(target, stop, scrapes))
        });
        while scrapes.load(Ordering::Relaxed) == 0 && !threads.iter().any(|t| t.is_finished()) {
            std::thread::sleep(Duration::from_millis(1)); // scrapes are under way
        }
        let with = ping_block(app_addr);
        stop.store(true, Ordering::Relaxed);
        for thread in threads {
            thread.join().expect("scraper");
        }
        total_scrapes.fetch_add(scrapes.load(Ordering::Relaxed), Ordering::Relaxed);
        quiet.push(without.as_secs_f64());
        scraped.push(with.as_secs_f64());
        ratios.push(with.as_secs_f64() / without.as_secs_f64());
    }
    let _ = stop_tx.send(());
    server.join().expect("server thread");

    let ratio = median(scraped.clone()) / median(quiet.clone());
    let us = |v: &[f64]| v.iter().map(|s| format!("{:.0}", s * 1e6)).collect::<Vec<_>>().join(" ");
    let report = format!(
        "render of {SERIES} series: {render_time:?}; {} scrapes during the pings\n\
         p99 without scrapes (us): {}\np99 with scrapes    (us): {}\n\
         per-block ratios: {:.2?}\nratio of medians: {ratio:.2} (limit {MAX_P99_RATIO})",
        total_scrapes.load(Ordering::Relaxed),
        us(&quiet),
        us(&scraped),
        ratios,
    );
    eprintln!("{report}");
    assert!(ratio <= MAX_P99_RATIO, "scrapes stall the runtime's requests:\n{report}");
}
