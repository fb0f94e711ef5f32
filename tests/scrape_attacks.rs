//! Scrapes that cannot hurt the service: the attacks of a scraper (or anyone who reaches the
//! metrics port) against the `/metrics` listener, each with the bound it must keep.
//!
//! - never-reading clients of a large exposition hold one shared body, not one each, and are
//!   disconnected at the request deadline;
//! - 100 concurrent scrapes leave the app's p99 (same process, same runtime) within 2x;
//! - 3,000 connections at the metrics port under a 1,024 file limit leave the app accepting,
//!   its p99 within 2x (the server runs in a child process under `prlimit --nofile=1024`);
//! - a 25,000-series text scrape with `Accept-Encoding: gzip` is at most 150 KB on the wire.
//!
//! The tests take one lock each: they measure memory and latency of this process (or load the
//! 2 cores the child runs on), so they run one at a time. Every loop is bounded in count and
//! time; every socket is on loopback.

use std::io::{BufRead, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use axum::routing::get as route_get;
use axum::Router;
use tower_vitals::prometheus::{self, PrometheusMetrics};
use tower_vitals::{ListenerConfig, MetricNames};

mod support;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

// ---------------------------------------------------------------------------------------------
// The exposition: the layer's metric set for a 5-route app with a 34-value `tenant` label.
// At merge, only `registry` changes if the recorder is built another way.
// ---------------------------------------------------------------------------------------------

/// A small deterministic generator (no dependency, same numbers every run).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 33
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() % 1_000_000) as f64 / 1_000_000.0
    }
}

const ROUTES: [&str; 5] = ["/users/{id}", "/users", "/orders/{id}", "/orders", "/health"];
const ANSWERS: [(&str, &str); 4] =
    [("GET", "200"), ("GET", "404"), ("POST", "201"), ("GET", "500")];

/// A registry of about `series` series (never fewer): label sets of the layer's metric set
/// (requests, duration, application time, output time, bytes and blocks), each label set with
/// a realistic number of requests of realistic latencies and sizes. Returns the handle and the
/// text exposition's length.
fn registry(series: usize) -> (PrometheusMetrics, usize) {
    let recorder = prometheus::builder().build_recorder();
    let metrics = PrometheusMetrics::from_handle(recorder.handle());
    let names = MetricNames::new("http.server");
    let mut rng = Lcg(7);
    let mut label_sets = 0usize;
    let mut per_set = 0usize;
    // Bounded: at most 4 routes x 34 tenants x ... label sets; stops once enough series exist.
    'sets: for tenant in 0..10_000usize {
        for route in ROUTES {
            for (method, status) in ANSWERS {
                metrics::with_local_recorder(&recorder, || {
                    if label_sets == 0 {
                        metrics::describe_histogram!(
                            names.duration.clone(),
                            metrics::Unit::Seconds,
                            "duration"
                        );
                        metrics::describe_histogram!(
                            names.application_time.clone(),
                            metrics::Unit::Seconds,
                            "app"
                        );
                        metrics::describe_histogram!(
                            names.output_time.clone(),
                            metrics::Unit::Seconds,
                            "out"
                        );
                        metrics::describe_histogram!(
                            names.output_bytes.clone(),
                            metrics::Unit::Bytes,
                            "bytes"
                        );
                    }
                    let labels = vec![
                        metrics::Label::new("http.route", route),
                        metrics::Label::new("http.request.method", method),
                        metrics::Label::new("http.response.status_code", status),
                        metrics::Label::new("tenant", format!("tenant-{tenant:03}")),
                    ];
                    let requests = 1 + rng.next() % 300;
                    metrics::counter!(names.requests.clone(), labels.clone()).increment(requests);
                    let application =
                        metrics::histogram!(names.application_time.clone(), labels.clone());
                    let output = metrics::histogram!(names.output_time.clone(), labels.clone());
                    let duration = metrics::histogram!(names.duration.clone(), labels.clone());
                    let bytes = metrics::histogram!(names.output_bytes.clone(), labels.clone());
                    let blocks = metrics::histogram!(names.output_blocks.clone(), labels);
                    for _ in 0..requests {
                        let app = 40e-6 * 2f64.powf(rng.unit() * 12.0);
                        let out = if rng.next() % 4 == 0 {
                            0.0
                        } else {
                            5e-6 * 2f64.powf(rng.unit() * 8.0)
                        };
                        application.record(app);
                        output.record(out);
                        duration.record(app + out);
                        bytes.record((64.0 * 2f64.powf(rng.unit() * 10.0)).round());
                        blocks.record(1.0 + (rng.next() % 3) as f64);
                    }
                });
                label_sets += 1;
                if per_set == 0 {
                    per_set = series_in(&metrics.render());
                }
                if label_sets * per_set >= series {
                    break 'sets;
                }
            }
        }
    }
    let text = metrics.render();
    assert!(series_in(&text) >= series, "{} series", series_in(&text));
    (metrics, text.len())
}

fn series_in(text: &str) -> usize {
    text.lines().filter(|l| !l.is_empty() && !l.starts_with('#')).count()
}

// ---------------------------------------------------------------------------------------------
// Servers and clients.
// ---------------------------------------------------------------------------------------------

/// A tokio runtime of 2 workers (one per core of the test machine, as `#[tokio::main]` would
/// make) serving an axum app (`/ping`) and `metrics` on the private listener, on its own thread.
/// Returns both addresses and a stop.
struct Servers {
    app: SocketAddr,
    metrics: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Servers {
    fn start(metrics: PrometheusMetrics, config: ListenerConfig) -> Servers {
        let (addrs_tx, addrs_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name(SERVER_THREAD)
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let app = Router::new().route("/ping", route_get(|| async { "pong" }));
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
                let app_addr = listener.local_addr().expect("addr");
                let server = metrics.serve_with("127.0.0.1:0", config).await.expect("serve");
                addrs_tx.send((app_addr, server.local_addr())).expect("send addrs");
                let serve = axum::serve(listener, app).with_graceful_shutdown(async {
                    let _ = stopped.await;
                });
                let _ = tokio::time::timeout(Duration::from_secs(600), serve).await;
                drop(server);
            });
            runtime.shutdown_timeout(Duration::from_secs(1));
        });
        let (app, metrics) = addrs_rx.recv_timeout(Duration::from_secs(30)).expect("started");
        Servers { app, metrics, stop: Some(stop), thread: Some(thread) }
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// An HTTP/1.1 response read off a blocking stream: its status, head (lower case) and body.
fn read_response(stream: &mut TcpStream) -> std::io::Result<(u16, String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65_536];
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let status: u16 = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok((status, head, buf.split_off(head_end)))
}

fn get(addr: SocketAddr, path: &str, extra: &str) -> (u16, String, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n{extra}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).expect("write");
    read_response(&mut stream).expect("response")
}

fn p99(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[(v.len() * 99 / 100).min(v.len() - 1)]
}

/// The p99 over `p99_of` numbers: below `floor` counts as `floor` (the noise of a shared
/// 2-core machine at sub-millisecond latencies is not a stall).
fn ratio(with: Duration, without: Duration, floor: Duration) -> f64 {
    with.max(floor).as_secs_f64() / without.max(floor).as_secs_f64()
}

/// The name of the server runtime's threads (workers and blocking pool).
const SERVER_THREAD: &str = "scrape-server";
/// The metrics listener's thread and its render threads (`tower-vitals-listener`, as Linux
/// keeps it: 15 bytes).
const LISTENER_THREAD: &str = "tower-vitals-li";

/// How many threads of the server runtime exist now (workers and the blocking pool's).
fn server_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|tasks| {
            tasks
                .flatten()
                .filter(|t| {
                    std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| {
                        c.trim_end() == SERVER_THREAD || c.trim_end() == LISTENER_THREAD
                    })
                })
                .count()
        })
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// 1. Clients that never read.
// ---------------------------------------------------------------------------------------------

/// Never-reading clients, the exposition's size, and the deadline the listener gets.
const NEVER_READING: usize = 30;
const BIG_SERIES: usize = 40_000;
const DEADLINE: Duration = Duration::from_secs(4);

#[test]
fn never_reading_clients_hold_one_shared_exposition_and_are_cut_at_the_deadline() {
    let _one = one_at_a_time();
    let (metrics, size) = registry(BIG_SERIES);
    let config = ListenerConfig::default().request_deadline(DEADLINE);
    let servers = Servers::start(metrics, config);
    // Warm up (threads of the blocking pool, the allocator's arenas), then let the shared body
    // go (1 s window) before the baseline.
    for _ in 0..2 {
        assert_eq!(get(servers.metrics, "/metrics", "").2.len(), size);
    }
    std::thread::sleep(Duration::from_millis(1_500));
    let before = support::rss_bytes() as usize;

    let started = Instant::now();
    let mut clients = Vec::with_capacity(NEVER_READING);
    for _ in 0..NEVER_READING {
        let mut stream = TcpStream::connect(servers.metrics).expect("connect");
        stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").expect("write");
        clients.push(stream);
    }
    // The answers are rendered and stuck in the sockets: take the highest RSS while they are.
    let mut held = before;
    while started.elapsed() < DEADLINE - Duration::from_millis(1_500) {
        std::thread::sleep(Duration::from_millis(100));
        held = held.max(support::rss_bytes() as usize);
    }
    let growth = held.saturating_sub(before);
    println!(
        "{NEVER_READING} never-reading clients of a {:.1} MB exposition: RSS {:.1} -> {:.1} MB \
         (+{:.1} MB, {:.2}x one exposition)",
        size as f64 / 1e6,
        before as f64 / 1e6,
        held as f64 / 1e6,
        growth as f64 / 1e6,
        growth as f64 / size as f64
    );
    assert!(growth <= 2 * size, "RSS grew by {growth} bytes, more than 2x {size}");

    // Past the deadline, every one of them is disconnected: reading shows the end of what the
    // server had written, then EOF (or a reset). Bounded by 15 s in all.
    let until = Instant::now() + DEADLINE + Duration::from_secs(15);
    let mut open = 0;
    for mut client in clients {
        let mut buf = vec![0u8; 1 << 20];
        let closed = loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break false;
            }
            client.set_read_timeout(Some(left)).expect("timeout");
            match client.read(&mut buf) {
                Ok(0) => break true,
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    break false
                }
                Err(_) => break true,
            }
        };
        open += usize::from(!closed);
    }
    assert_eq!(open, 0, "{open} of {NEVER_READING} clients still connected after the deadline");
}

// ---------------------------------------------------------------------------------------------
// 2. 100 concurrent scrapes.
// ---------------------------------------------------------------------------------------------

const CONCURRENT: usize = 100;
const SCRAPED_SERIES: usize = 40_000;
const PINGS: usize = 400;
const INTERVAL: Duration = Duration::from_millis(1);
const P99_FLOOR: Duration = Duration::from_millis(1);
const MAX_RATIO: f64 = 2.0;
const ROUNDS: usize = 5;
/// Blocking-pool threads the server may use at once: the render or compression in progress,
/// and threads the pool keeps from earlier work.
const MAX_BLOCKING: usize = 4;

/// `/ping` on one keep-alive connection, one every `INTERVAL` (open loop: a request held up
/// delays the ones due after it, and their latency counts from when they were due), at least
/// `min` of them and until `until` says stop (bounded: 20 s); returns the latencies.
fn pings(addr: SocketAddr, min: usize, until: impl Fn() -> bool) -> Vec<Duration> {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    stream.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    for _ in 0..20 {
        stream.write_all(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n").expect("write");
        assert_eq!(read_response(&mut stream).expect("pong").0, 200);
    }
    let mut times = Vec::with_capacity(min * 4);
    let start = Instant::now();
    let mut free_at = start;
    for i in 0..100_000u32 {
        if (times.len() >= min && until()) || start.elapsed() > Duration::from_secs(20) {
            break;
        }
        let due = start + INTERVAL * i;
        let from = if free_at <= due {
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            Instant::now()
        } else {
            due
        };
        stream.write_all(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n").expect("write");
        assert_eq!(read_response(&mut stream).expect("pong").0, 200);
        free_at = Instant::now();
        times.push(free_at - from);
    }
    times
}

#[test]
fn hundred_concurrent_scrapes_keep_the_app_p99_within_2x() {
    let _one = one_at_a_time();
    let (metrics, size) = registry(SCRAPED_SERIES);
    let servers = Servers::start(metrics, ListenerConfig::default());
    let mut ratios = vec![];
    for _ in 0..ROUNDS {
        let without = p99(pings(servers.app, PINGS, || true));
        // Past the share window of the last round's render: this round renders anew.
        std::thread::sleep(Duration::from_millis(1_200));
        let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let barrier = Arc::new(Barrier::new(CONCURRENT));
        let scrapers: Vec<_> = (0..CONCURRENT)
            .map(|_| {
                let (done, barrier, target) =
                    (Arc::clone(&done), Arc::clone(&barrier), servers.metrics);
                std::thread::spawn(move || {
                    barrier.wait();
                    // As Prometheus asks.
                    let (status, _, body) = get(target, "/metrics", "Accept-Encoding: gzip\r\n");
                    done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    (status, body.len())
                })
            })
            .collect();
        let finished = Arc::clone(&done);
        let peak = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let sampled = Arc::clone(&peak);
        let with = p99(pings(servers.app, PINGS, move || {
            sampled.fetch_max(server_threads(), std::sync::atomic::Ordering::SeqCst);
            finished.load(std::sync::atomic::Ordering::SeqCst) == CONCURRENT
        }));
        let threads = peak.load(std::sync::atomic::Ordering::SeqCst);
        for scraper in scrapers {
            let (status, len) = scraper.join().expect("scraper");
            assert_eq!(status, 200);
            assert!(len > 1000, "a {len}-byte scrape");
        }
        let r = ratio(with, without, P99_FLOOR);
        println!(
            "{CONCURRENT} concurrent scrapes of {SCRAPED_SERIES} series ({:.1} MB): app p99 \
             {without:?} without, {with:?} with: {r:.2}x; server threads at most {threads}",
            size as f64 / 1e6
        );
        // One render (and one compression) at a time: the app's 2 workers, the listener's
        // thread and a few blocking threads, never one per scrape.
        assert!(threads <= 3 + MAX_BLOCKING, "{threads} server threads for {CONCURRENT} scrapes");
        ratios.push(r);
        if r <= MAX_RATIO {
            return;
        }
    }
    panic!("the app's p99 grew more than {MAX_RATIO}x in every round: {ratios:?}");
}

// ---------------------------------------------------------------------------------------------
// 3. 3,000 connections under a 1,024 file limit.
// ---------------------------------------------------------------------------------------------

const FLOOD: usize = 3_000;
const FILE_LIMIT: usize = 1_024;
const APP_INTERVAL: Duration = Duration::from_millis(10);
const APP_WINDOW: Duration = Duration::from_secs(6);
const APP_REQUESTS: usize = 600;
const CHILD: &str = "TOWER_VITALS_SCRAPE_ATTACKS_CHILD";
const FLOOD_TEST: &str =
    "connection_flood_at_the_metrics_port_under_a_file_limit_leaves_the_app_accepting";

/// Requests to the app's `/ping`, each on a new connection (what the flood would starve: the
/// app's accept loop), one due every `APP_INTERVAL` for `APP_WINDOW` (open loop: a request held
/// up delays the ones due after it, and their latency counts from when they were due); one
/// that fails counts as `APP_WINDOW`. Returns the p99. Bounded: `APP_WINDOW` plus at most one
/// request's 5 s timeout.
fn fresh_connection_p99(app: SocketAddr) -> Duration {
    let start = Instant::now();
    let mut times = Vec::with_capacity(APP_REQUESTS);
    let mut free_at = start;
    for i in 0..APP_REQUESTS as u32 {
        let due = start + APP_INTERVAL * i;
        if Instant::now() > start + APP_WINDOW + Duration::from_secs(5) {
            times.push(APP_WINDOW);
            continue;
        }
        let from = if free_at <= due {
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            Instant::now()
        } else {
            due
        };
        let timeout = Duration::from_secs(5);
        let answered = TcpStream::connect_timeout(&app, timeout).and_then(|mut s| {
            s.set_read_timeout(Some(timeout))?;
            s.write_all(b"GET /ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
            read_response(&mut s)
        });
        free_at = Instant::now();
        times.push(match answered {
            Ok((200, _, _)) => free_at - from,
            _ => APP_WINDOW,
        });
    }
    p99(times)
}

/// Holds `FLOOD` connections to `target` from 8 threads until `stop`: opens them (each connect
/// within 500 ms), then keeps replacing the oldest by a new one every 20 ms per thread, as an
/// attacker keeps its connections up when the server closes them. Bounded: 30 s.
fn flood(
    target: SocketAddr,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let start = Instant::now();
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || {
                    let mut held = std::collections::VecDeque::new();
                    let mut opened = 0;
                    while !stop.load(std::sync::atomic::Ordering::SeqCst)
                        && start.elapsed() < Duration::from_secs(30)
                    {
                        if held.len() >= FLOOD / 8 {
                            held.pop_front();
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        if let Ok(s) =
                            TcpStream::connect_timeout(&target, Duration::from_millis(500))
                        {
                            held.push_back(s);
                            opened += 1;
                        }
                    }
                    opened
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().expect("flooder")).sum()
    })
}
/// The child: the app and the metrics listener (default settings) in one process whose file
/// limit is `FILE_LIMIT`. Prints their ports, then serves until its stdin closes (at most
/// 120 s).
fn child() {
    let (metrics, _) = registry(1_000);
    let servers = Servers::start(metrics, ListenerConfig::default());
    println!("ports {} {}", servers.app, servers.metrics);
    std::io::stdout().flush().expect("flush");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        let _ = tx.send(());
    });
    let _ = rx.recv_timeout(Duration::from_secs(120));
}

#[test]
fn connection_flood_at_the_metrics_port_under_a_file_limit_leaves_the_app_accepting() {
    if std::env::var_os(CHILD).is_some() {
        return child();
    }
    let _one = one_at_a_time();
    let exe = std::env::current_exe().expect("test binary");
    let mut server = std::process::Command::new("prlimit")
        .arg(format!("--nofile={FILE_LIMIT}:{FILE_LIMIT}"))
        .arg(&exe)
        .args([FLOOD_TEST, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("prlimit (util-linux) runs the server child");
    let mut lines = std::io::BufReader::new(server.stdout.take().expect("stdout")).lines();
    let ports = lines
        .by_ref()
        .take(50)
        .map_while(Result::ok)
        // The harness may print `test <name> ... ` before it on the same line.
        .find_map(|l| l.split_once("ports ").map(|(_, ports)| ports.trim().to_string()))
        .expect("the child's ports");
    let mut ports = ports.split(' ').map(|p| p.parse::<SocketAddr>().expect("address"));
    let (app, metrics) = (ports.next().expect("app"), ports.next().expect("metrics"));

    let mut ratios = vec![];
    for _ in 0..3 {
        let without = fresh_connection_p99(app);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flooder = flood(metrics, Arc::clone(&stop));
        // The first 3,000 connections are made (or waiting in the backlog) by then.
        std::thread::sleep(Duration::from_secs(3));
        let with = fresh_connection_p99(app);
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let opened = flooder.join().expect("flood");
        let r = ratio(with, without, P99_FLOOR);
        println!(
            "{FLOOD} connections held at the metrics port ({opened} opened in all; file limit \
             {FILE_LIMIT}): app p99 {without:?} before, {with:?} during: {r:.2}x"
        );
        ratios.push(r);
        if r <= MAX_RATIO {
            break;
        }
        // Let the child's listener time its idle connections out before the next round.
        std::thread::sleep(Duration::from_secs(6));
    }
    drop(server.stdin.take());
    let _ = server.wait();
    assert!(
        ratios.iter().any(|r| *r <= MAX_RATIO),
        "the app's p99 grew more than {MAX_RATIO}x in every round: {ratios:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// 4. gzip.
// ---------------------------------------------------------------------------------------------

const GZIP_SERIES: usize = 25_000;
const MAX_GZIP_BYTES: usize = 150_000;

#[test]
fn a_25k_series_scrape_with_gzip_is_at_most_150_kb_on_the_wire() {
    let _one = one_at_a_time();
    let (metrics, size) = registry(GZIP_SERIES);
    let servers = Servers::start(metrics, ListenerConfig::default());
    let (status, head, body) = get(servers.metrics, "/metrics", "Accept-Encoding: gzip\r\n");
    assert_eq!(status, 200);
    assert!(head.contains("content-encoding: gzip\r\n"), "{head}");
    assert!(head.contains("vary: accept-encoding\r\n"), "{head}");
    let mut text = String::new();
    flate2::read::GzDecoder::new(&body[..]).read_to_string(&mut text).expect("gunzip");
    assert_eq!(text.len(), size);
    assert!(series_in(&text) >= GZIP_SERIES);
    println!(
        "{} series: {:.2} MB of text, {:.1} KB with gzip",
        series_in(&text),
        size as f64 / 1e6,
        body.len() as f64 / 1e3
    );
    assert!(body.len() <= MAX_GZIP_BYTES, "{} bytes on the wire", body.len());
}
