//! Exporter faults: the statsd server or the Datadog agent is gone (nothing listens on the port:
//! sends from a connected socket come back refused, the loopback form of "host unreachable";
//! from an unconnected one they vanish), or its socket never reads (the kernel drops what
//! overflows its buffer). Requests still succeed, every one, and
//! keep their latency: p99 with each fault is compared with p99 against a healthy sink **in the
//! same run**, requests interleaved in small batches, as a ratio.
//!
//! In-process (the layer and a trivial handler, polled on this thread), so the comparison sees
//! the request path and nothing else: where a blocking send, a DNS lookup or a full bounded
//! channel would show up.
//!
//! Each fault is shown to have happened: nothing was bound on the "down" port (and the exporter
//! counted refused sends where it counts them: our background sender, metrics-exporter-dogstatsd's
//! telemetry), and the kernel dropped datagrams for the socket that never reads.
//!
//! Before those, memory: requests driven for a few seconds at full speed to a DogStatsD agent on
//! a Unix datagram socket that never reads (and to a statsd server whose UDP socket never
//! reads) leave the process's resident memory where it was, and keep their latency.
//!
//! Last, the same for statsd down over real HTTP (axum apps on 127.0.0.1), by median.
//!
//! One test, running the cases one after the other, alone in its binary: the p99
//! comparison must not share the two cores with other tests, and the dogstatsd exporter reports
//! its telemetry to the global recorder, which this binary installs.

mod support;

use std::convert::Infallible;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use metrics::Recorder;
use support::app::{AppThread, USER_BODY};
use support::{block_on, drain};
use tower::{Layer, ServiceExt};
use tower_vitals::statsd::{self, Pipeline};
use tower_vitals::{RouteName, VitalsLayer};

/// Blocks of rounds of interleaved batches, and requests per batch (per target): each target
/// gets BLOCKS x ROUNDS x BATCH = 9000 timed requests.
const BLOCKS: usize = 9;
const ROUNDS: usize = 20;
const BATCH: usize = 50;
/// The most p99 may grow under a fault. A request path that waited on the network (a blocking
/// send, a connect or DNS timeout, a full bounded channel) would be 10-1000x slower; this only
/// leaves room for the noise of a shared 2-core machine.
const MAX_P99_RATIO: f64 = 3.0;

/// A UDP sink that reads and counts everything (the healthy statsd server / agent).
struct DrainedSink {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    received: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl DrainedSink {
    fn start() -> DrainedSink {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
        socket.set_read_timeout(Some(Duration::from_millis(20))).expect("timeout");
        let addr = socket.local_addr().expect("addr");
        let stop = Arc::new(AtomicBool::new(false));
        let received = Arc::new(AtomicU64::new(0));
        let thread = std::thread::spawn({
            let (stop, received) = (Arc::clone(&stop), Arc::clone(&received));
            move || {
                let mut buf = vec![0u8; 65_536];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(n) = socket.recv(&mut buf) {
                        received.fetch_add(n as u64, Ordering::Relaxed);
                    }
                }
            }
        });
        DrainedSink { addr, stop, received, thread: Some(thread) }
    }
}

impl Drop for DrainedSink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A port nothing listens on (bound, then closed).
fn closed_port() -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket.local_addr().expect("addr")
}

/// The row of /proc/net/udp for the socket bound at local `port`, split into fields.
fn udp_socket_row(port: u16) -> Option<Vec<String>> {
    let table = std::fs::read_to_string("/proc/net/udp").expect("/proc/net/udp (Linux)");
    let wanted = format!(":{port:04X}");
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
        fields.get(1)?.ends_with(&wanted).then_some(fields)
    })
}

/// Datagrams the kernel dropped for the socket bound at `port` (the `drops` column of
/// /proc/net/udp), to show the never-reading socket really overflowed.
fn kernel_drops(port: u16) -> u64 {
    // /proc/net/udp is read in chunks: a socket opened or closed elsewhere between two chunks
    // shifts the table and one row can be skipped in that read. Read again before concluding.
    let row = (0..50)
        .find_map(|attempt| {
            if attempt > 0 {
                std::thread::sleep(Duration::from_millis(2));
            }
            udp_socket_row(port)
        })
        .unwrap_or_else(|| panic!("no UDP socket bound at {port} in 50 reads of /proc/net/udp"));
    row.last().and_then(|d| d.parse().ok()).expect("drops column")
}

/// Whether a datagram waits unread in `socket`'s receive queue. A non-blocking peek: it looks
/// without taking, so the socket still never reads. This asks the socket itself, not
/// /proc/net/udp, whose chunked reads can skip a row while other tests open and close sockets.
fn holds_unread_datagram(socket: &UdpSocket) -> bool {
    socket.set_nonblocking(true).expect("non-blocking");
    let mut byte = [0u8; 1];
    let held = match socket.peek(&mut byte) {
        Ok(_) => true,
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
        // A truncated peek is still a datagram; any other error is the test's to report.
        Err(e) => panic!("peek on the never-reading socket: {e}"),
    };
    socket.set_nonblocking(false).expect("blocking");
    held
}

/// The kernel's count of UDP datagrams that arrived for a port with no socket (`NoPorts` in
/// /proc/net/snmp, for this network namespace).
fn udp_no_ports() -> u64 {
    let snmp = std::fs::read_to_string("/proc/net/snmp").expect("/proc/net/snmp (Linux)");
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (names, values) = (udp.next().expect("Udp header"), udp.next().expect("Udp values"));
    let column = names.split_whitespace().position(|n| n == "NoPorts").expect("NoPorts");
    values.split_whitespace().nth(column).and_then(|v| v.parse().ok()).expect("NoPorts value")
}

/// The two faults of one exporter, and the checks that they really happened.
struct Faults {
    /// Where the "down" exporter sends: nothing is bound there.
    closed: SocketAddr,
    /// The socket that never reads.
    deaf: UdpSocket,
}

impl Faults {
    fn new() -> Faults {
        Faults { closed: closed_port(), deaf: UdpSocket::bind("127.0.0.1:0").expect("bind") }
    }

    fn deaf_addr(&self) -> SocketAddr {
        self.deaf.local_addr().expect("addr")
    }

    /// Nothing was bound on the "down" port (a healthy target would show a socket there), and
    /// datagrams reached the never-reading socket: they wait unread in its queue (once it is
    /// full the kernel drops the rest, and the queue stays full: it is never read).
    fn assert_happened(&self, exporter: &str) {
        assert!(
            udp_socket_row(self.closed.port()).is_none(),
            "{exporter}: a socket is bound at the 'down' target {}: the fault was not real",
            self.closed
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        while !holds_unread_datagram(&self.deaf) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20)); // let the exporter flush
        }
        assert!(
            holds_unread_datagram(&self.deaf),
            "{exporter}: the never-reading socket holds no datagram: did the exporter send to it?"
        );
    }
}

/// Polls `value` until it is above 0 (at most 5 s: exporters flush on their own schedule).
fn wait_positive(value: impl Fn() -> u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(5);
    while value() == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    value()
}

/// One target of the comparison: a recorder, a layer whose handles were resolved through it,
/// and the latencies measured.
struct Target {
    name: &'static str,
    recorder: Box<dyn Recorder>,
    layer: VitalsLayer,
    times: Vec<Duration>,
    /// p99 of each block of ROUNDS rounds.
    block_p99: Vec<Duration>,
    failures: u64,
}

impl Target {
    fn new(name: &'static str, recorder: impl Recorder + 'static) -> Target {
        Target {
            name,
            recorder: Box::new(recorder),
            layer: VitalsLayer::new(),
            times: Vec::new(),
            block_p99: Vec::new(),
            failures: 0,
        }
    }

    /// `n` requests through the layer with this target's recorder current; records each
    /// request's time (call to the end of the drained body) and any failure.
    fn batch(&mut self, n: usize, keep: bool) {
        let layer = self.layer.clone();
        let (times, failures) = (&mut self.times, &mut self.failures);
        metrics::with_local_recorder(&*self.recorder, || {
            let svc = layer.layer(tower::service_fn(|_req: Request<String>| async {
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"hello"))))
            }));
            for _ in 0..n {
                let mut req = Request::new(String::new());
                req.extensions_mut().insert(RouteName::new("/users/{id}"));
                let started = Instant::now();
                let ok = match block_on(svc.clone().oneshot(req)) {
                    Ok(res) => res.status() == 200 && drain(&mut res.into_body()) == (1, 5, false),
                    Err(never) => match never {},
                };
                let took = started.elapsed();
                if !ok {
                    *failures += 1;
                }
                if keep {
                    times.push(took);
                }
            }
        });
    }

    fn quantile(&self, q: f64) -> Duration {
        quantile(&self.times, q)
    }
}

fn quantile(times: &[Duration], q: f64) -> Duration {
    let mut t = times.to_vec();
    t.sort();
    t[((t.len() - 1) as f64 * q).round() as usize]
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Runs the targets interleaved (warm-up, then BLOCKS x ROUNDS x BATCH each), checks that no
/// request failed, and that each fault's p99 is within MAX_P99_RATIO of the first (healthy)
/// target's. The ratio is the median over blocks of the per-block p99 ratio, so one burst of
/// outside noise (another process on the 2 cores) cannot decide it.
fn compare(exporter: &str, targets: &mut [Target]) -> Vec<(String, f64)> {
    for t in targets.iter_mut() {
        t.batch(200, false);
    }
    let n = targets.len();
    for _ in 0..BLOCKS {
        let start = targets[0].times.len();
        for round in 0..ROUNDS {
            // Rotate the order each round so no target always runs first or last.
            for i in 0..n {
                targets[(i + round) % n].batch(BATCH, true);
            }
        }
        for t in targets.iter_mut() {
            let p99 = quantile(&t.times[start..], 0.99);
            t.block_p99.push(p99);
        }
    }
    let mut ratios = Vec::new();
    for t in targets.iter() {
        assert_eq!(t.failures, 0, "{exporter} / {}: requests failed", t.name);
        assert_eq!(t.layer.active_requests(), 0);
        let ratio = median(
            t.block_p99
                .iter()
                .zip(&targets[0].block_p99)
                .map(|(f, h)| f.as_secs_f64() / h.as_secs_f64())
                .collect(),
        );
        println!(
            "{exporter:>20} | {:<28} | {:>5} requests | p50 {:>8.1?} | p99 {:>8.1?} | p99 ratio {ratio:.2}",
            t.name,
            t.times.len(),
            t.quantile(0.5),
            t.quantile(0.99)
        );
        ratios.push((t.name.to_owned(), ratio));
    }
    for (name, ratio) in &ratios {
        assert!(
            *ratio <= MAX_P99_RATIO,
            "{exporter} / {name}: p99 {ratio:.2}x the healthy p99 (limit {MAX_P99_RATIO}x)"
        );
    }
    ratios
}

/// The healthy sink, the faults, and the three targets of one statsd pipeline; the exporter
/// handle of the "down" target.
fn statsd_targets(pipeline: Pipeline) -> (Vec<Target>, DrainedSink, Faults, statsd::StatsdHandle) {
    let build = |addr: SocketAddr| {
        statsd::builder(addr.to_string())
            .flush_interval(Duration::from_millis(20))
            .pipeline(pipeline)
            .build()
            .expect("build")
    };
    let sink = DrainedSink::start();
    let faults = Faults::new();
    let (healthy, _) = build(sink.addr);
    let (refused, refused_exporter) = build(faults.closed);
    let (never_read, _) = build(faults.deaf_addr());
    let targets = vec![
        Target::new("healthy (server reads)", healthy),
        Target::new("down (port closed)", refused),
        Target::new("socket never reads", never_read),
    ];
    (targets, sink, faults, refused_exporter)
}

fn statsd_background() {
    let (mut targets, sink, faults, refused) = statsd_targets(Pipeline::Background);
    compare("statsd (background)", &mut targets);
    drop(targets); // the senders flush what is left and stop
    assert!(
        wait_positive(|| refused.send_errors()) > 0,
        "no send was refused: was the port really closed?"
    );
    assert!(sink.received.load(Ordering::Relaxed) > 0, "the healthy sink got nothing");
    faults.assert_happened("statsd (background)");
}

fn statsd_inline() {
    // metrics-exporter-statsd (cadence) formats and sends on the request thread: the path most
    // exposed to a dead server. It counts no send errors (its socket is not connected, so the
    // kernel reports no refusal to it): datagrams reaching a port with no socket are counted by
    // the kernel instead (per network namespace, so this only shows some arrived).
    let no_ports = udp_no_ports();
    let (mut targets, sink, faults, _) = statsd_targets(Pipeline::Inline);
    compare("statsd (inline)", &mut targets);
    drop(targets);
    assert!(sink.received.load(Ordering::Relaxed) > 0, "the healthy sink got nothing");
    assert!(
        wait_positive(|| udp_no_ports() - no_ports) > 0,
        "no datagram reached a closed port: did the 'down' exporter send?"
    );
    faults.assert_happened("statsd (inline)");
}

fn dogstatsd() {
    let build = |addr: SocketAddr| {
        tower_vitals::dogstatsd::builder(addr.to_string())
            .flush_interval(Duration::from_millis(50))
            .build()
            .expect("build")
    };
    let sink = DrainedSink::start();
    let faults = Faults::new();
    let mut targets = vec![
        Target::new("healthy (agent reads)", build(sink.addr)),
        Target::new("agent missing (port closed)", build(faults.closed)),
        Target::new("agent socket never reads", build(faults.deaf_addr())),
    ];
    compare("dogstatsd", &mut targets);
    let received = wait_positive(|| sink.received.load(Ordering::Relaxed));
    assert!(received > 0, "the healthy agent got nothing");
    // metrics-exporter-dogstatsd's telemetry (sent to the global recorder, from its forwarder
    // threads): only the target with no agent can fail a send (the others' sends succeed; the
    // deaf socket's kernel drops them on arrival).
    let send_failures = wait_positive(|| telemetry(DOGSTATSD_SEND_FAILURES));
    assert!(send_failures > 0, "no send failed: was the agent really missing?");
    assert!(telemetry(DOGSTATSD_PACKETS_SENT) > 0, "the exporter sent nothing");
    drop(targets);
    faults.assert_happened("dogstatsd");
}

/// How long each deaf-agent memory check drives requests, and the most the process's resident
/// memory may grow meanwhile. The exporters' own buffers are fixed (dogstatsd: a reservoir of
/// 256 samples per histogram; statsd: a queue of 65,536 samples allocated when built): with
/// every sample held until a stalled agent reads, the same run grows by several MB (each request
/// holds 5 histogram samples, 8 bytes each).
const DEAF_SECS: u64 = 10;
const MAX_RSS_GROWTH: u64 = 3 << 20;

/// Drives requests for DEAF_SECS through a healthy target and one whose agent never reads,
/// interleaved in batches, and checks that resident memory stays within MAX_RSS_GROWTH of where
/// it started (the peak, sampled after every block) and that the deaf target's requests keep
/// their latency (median over blocks of the per-block p99 ratio). Returns the deaf target's
/// request count.
fn deaf_agent_memory(
    exporter: &str,
    healthy: impl Recorder + 'static,
    deaf: impl Recorder + 'static,
) -> usize {
    let mut targets =
        [Target::new("healthy agent", healthy), Target::new("agent never reads", deaf)];
    for t in targets.iter_mut() {
        t.times.reserve(ROUNDS * BATCH);
        t.batch(2_000, false); // handles, histogram storage, the first flushes
    }
    std::thread::sleep(Duration::from_millis(500));
    let before = support::rss_bytes();
    let mut peak = before;
    let (mut ratios, mut requests) = (Vec::with_capacity(1_000), 0);
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(DEAF_SECS) {
        for t in targets.iter_mut() {
            t.times.clear(); // capacity kept: the test itself does not grow
        }
        for round in 0..ROUNDS {
            for i in 0..2 {
                targets[(i + round) % 2].batch(BATCH, true);
            }
        }
        requests += ROUNDS * BATCH;
        let (h, d) = (targets[0].quantile(0.99), targets[1].quantile(0.99));
        ratios.push(d.as_secs_f64() / h.as_secs_f64());
        peak = peak.max(support::rss_bytes());
    }
    let after = support::rss_bytes();
    let growth = peak.saturating_sub(before);
    let ratio = median(ratios);
    println!(
        "{exporter:>20} | agent never reads | {requests} requests each in {:.1?} | RSS {:.1} MB -> peak {:.1} MB (end {:.1} MB), growth {:.2} MB | p99 ratio {ratio:.2}",
        started.elapsed(),
        before as f64 / 1e6,
        peak as f64 / 1e6,
        after as f64 / 1e6,
        growth as f64 / 1e6
    );
    for t in &targets {
        assert_eq!(t.failures, 0, "{exporter} / {}: requests failed", t.name);
        assert_eq!(t.layer.active_requests(), 0);
    }
    assert!(
        growth <= MAX_RSS_GROWTH,
        "{exporter}: resident memory grew {:.2} MB in {DEAF_SECS} s with an agent that never reads (limit {:.2} MB)",
        growth as f64 / 1e6,
        MAX_RSS_GROWTH as f64 / 1e6
    );
    assert!(
        ratio <= MAX_P99_RATIO,
        "{exporter}: p99 {ratio:.2}x the healthy p99 with an agent that never reads (limit {MAX_P99_RATIO}x)"
    );
    requests
}

/// A Unix datagram socket bound by the test: `read` keeps a thread draining it (the healthy
/// agent); otherwise nothing ever reads it, and once its queue is full every send waits.
struct UnixAgent {
    path: std::path::PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    _socket: Option<std::os::unix::net::UnixDatagram>,
}

impl UnixAgent {
    fn bind(name: &str, read: bool) -> UnixAgent {
        let dir = std::env::temp_dir().join(format!("tower-vitals-faults-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join(name);
        let _ = std::fs::remove_file(&path);
        let socket = std::os::unix::net::UnixDatagram::bind(&path).expect("bind unix socket");
        let stop = Arc::new(AtomicBool::new(false));
        if !read {
            return UnixAgent { path, stop, thread: None, _socket: Some(socket) };
        }
        socket.set_read_timeout(Some(Duration::from_millis(20))).expect("timeout");
        let thread = std::thread::spawn({
            let stop = Arc::clone(&stop);
            move || {
                let mut buf = vec![0u8; 65_536];
                while !stop.load(Ordering::Relaxed) {
                    let _ = socket.recv(&mut buf);
                }
            }
        });
        UnixAgent { path, stop, thread: Some(thread), _socket: None }
    }

    fn url(&self) -> String {
        format!("unixgram://{}", self.path.display())
    }
}

impl Drop for UnixAgent {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The Datadog agent on a Unix datagram socket that never reads (the socket's queue fills, each
/// send then waits for the write timeout): memory stays bounded, requests keep their latency,
/// and the exporter really did fail to send.
fn dogstatsd_deaf_unix_agent() {
    let healthy = UnixAgent::bind("agent.sock", true);
    let deaf = UnixAgent::bind("deaf.sock", false);
    let build = |url: String| {
        tower_vitals::dogstatsd::builder(url)
            .flush_interval(Duration::from_millis(200))
            .build()
            .expect("build")
    };
    let failures_before = telemetry(DOGSTATSD_SEND_FAILURES);
    deaf_agent_memory("dogstatsd (unixgram)", build(healthy.url()), build(deaf.url()));
    assert!(
        telemetry(DOGSTATSD_SEND_FAILURES) > failures_before,
        "no send to the deaf Unix socket failed: did its queue really fill?"
    );
}

/// The same for the statsd background sender and a UDP server whose socket never reads (the
/// kernel drops what overflows it; the sender's queue is bounded and its socket non-blocking).
fn statsd_background_deaf_server() {
    let sink = DrainedSink::start();
    let faults = Faults::new();
    let build = |addr: SocketAddr| {
        statsd::builder(addr.to_string())
            .flush_interval(Duration::from_millis(20))
            .build()
            .expect("build")
            .0
    };
    deaf_agent_memory("statsd (background)", build(sink.addr), build(faults.deaf_addr()));
    let port = faults.deaf_addr().port();
    assert!(kernel_drops(port) > 0, "the never-reading socket dropped nothing");
}

/// metrics-exporter-dogstatsd's telemetry: payloads its writer failed to send, payloads sent.
const DOGSTATSD_SEND_FAILURES: &str = "datadog.dogstatsd.client.packets_dropped_writer";
const DOGSTATSD_PACKETS_SENT: &str = "datadog.dogstatsd.client.packets_sent";

/// The global recorder of this binary: it receives the dogstatsd exporter's telemetry (the
/// layer under test records through each target's recorder, set for its thread).
static GLOBAL: std::sync::OnceLock<metrics_util::debugging::Snapshotter> =
    std::sync::OnceLock::new();

/// Running totals of the global recorder's counters (a snapshot drains them).
static TOTALS: std::sync::Mutex<Vec<(String, u64)>> = std::sync::Mutex::new(Vec::new());

fn telemetry(name: &str) -> u64 {
    let snapshotter = GLOBAL.get().expect("global recorder installed");
    let mut totals = TOTALS.lock().expect("totals");
    for seen in support::snapshot(snapshotter) {
        if let metrics_util::debugging::DebugValue::Counter(c) = seen.value {
            match totals.iter_mut().find(|(n, _)| *n == seen.name) {
                Some((_, total)) => *total += c,
                None => totals.push((seen.name.clone(), c)),
            }
        }
    }
    totals.iter().filter(|(n, _)| n == name).map(|(_, c)| c).sum()
}

/// Times `count` rounds of one request to each app, interleaved; returns each app's median.
fn interleaved_medians(apps: &[&AppThread], count: usize) -> Vec<Duration> {
    let mut times = vec![Vec::with_capacity(count); apps.len()];
    for round in 0..count {
        for (i, app) in apps.iter().enumerate() {
            let started = Instant::now();
            assert_eq!(app.get(&format!("/users/{round}")), (200, USER_BODY.len()));
            times[i].push(started.elapsed());
        }
    }
    times
        .into_iter()
        .map(|mut t| {
            t.sort();
            t[t.len() / 2]
        })
        .collect()
}

/// Over real HTTP (axum apps on 127.0.0.1, each on its own thread and recorder): statsd down,
/// background or inline, adds no latency a client sees (median of interleaved requests, as a
/// ratio to a live sink's in the same run), and the background exporter counted its refusals.
fn statsd_down_over_real_http() {
    let live_sink = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let build = |addr: SocketAddr, pipeline| {
        statsd::builder(addr.to_string())
            .classic()
            .flush_interval(Duration::from_millis(20))
            .pipeline(pipeline)
            .build()
            .expect("build")
    };
    let (live, _) = build(live_sink.local_addr().expect("addr"), Pipeline::Background);
    let (down, down_exporter) = build(closed_port(), Pipeline::Background);
    let (down_inline, _) = build(closed_port(), Pipeline::Inline);
    let live = AppThread::start(live);
    let down = AppThread::start(down);
    let down_inline = AppThread::start(down_inline);
    // Warm up (connections, handle caches), then compare in one run.
    interleaved_medians(&[&live, &down, &down_inline], 20);
    let medians = interleaved_medians(&[&live, &down, &down_inline], 300);
    let (live_m, down_m, inline_m) = (medians[0], medians[1], medians[2]);
    println!(
        "median request time: statsd up {live_m:?}, down {down_m:?}, down (inline) {inline_m:?}"
    );
    assert!(down_m <= live_m * 2, "statsd down: median {down_m:?} vs up {live_m:?}");
    assert!(inline_m <= live_m * 2, "statsd down (inline): median {inline_m:?} vs up {live_m:?}");
    // The exporter did try, and its failures stayed inside it.
    assert!(
        wait_positive(|| down_exporter.send_errors()) > 0,
        "no send error seen: was the port closed?"
    );
}

#[test]
fn statsd_and_dogstatsd_down_or_deaf_keep_request_latency_and_never_fail_a_request() {
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    GLOBAL.set(recorder.snapshotter()).expect("first and only test");
    metrics::set_global_recorder(recorder).expect("the only recorder of this test binary");
    dogstatsd_deaf_unix_agent();
    statsd_background_deaf_server();
    statsd_background();
    statsd_inline();
    dogstatsd();
    statsd_down_over_real_http();
}
