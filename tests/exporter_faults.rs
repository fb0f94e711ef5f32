//! Exporter faults: the statsd server or the Datadog agent is gone (nothing listens on the port:
//! every send comes back refused, the loopback form of "host unreachable"), or its socket never
//! reads (the kernel drops what overflows its buffer). Requests still succeed, every one, and
//! keep their latency: p99 with each fault is compared with p99 against a healthy sink **in the
//! same run**, requests interleaved in small batches, as a ratio.
//!
//! In-process (the layer and a trivial handler, polled on this thread), so the comparison sees
//! the request path and nothing else: where a blocking send, a DNS lookup or a full bounded
//! channel would show up.

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

/// Datagrams the kernel dropped for the socket bound at `port` (the `drops` column of
/// /proc/net/udp), to show the never-reading socket really overflowed.
fn kernel_drops(port: u16) -> Option<u64> {
    let table = std::fs::read_to_string("/proc/net/udp").ok()?;
    let wanted = format!(":{port:04X}");
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.get(1)?.ends_with(&wanted)).then(|| fields.last()?.parse().ok())?
    })
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

fn statsd_targets(
    pipeline: Pipeline,
) -> (Vec<Target>, DrainedSink, UdpSocket, statsd::StatsdHandle) {
    let build = |addr: SocketAddr| {
        statsd::builder(addr.to_string())
            .flush_interval(Duration::from_millis(20))
            .pipeline(pipeline)
            .build()
            .expect("build")
    };
    let sink = DrainedSink::start();
    let deaf = UdpSocket::bind("127.0.0.1:0").expect("bind"); // never read
    let (healthy, _) = build(sink.addr);
    let (refused, refused_exporter) = build(closed_port());
    let (never_read, _) = build(deaf.local_addr().expect("addr"));
    let targets = vec![
        Target::new("healthy (server reads)", healthy),
        Target::new("down (port closed)", refused),
        Target::new("socket never reads", never_read),
    ];
    (targets, sink, deaf, refused_exporter)
}

#[test]
fn statsd_down_or_deaf_keeps_request_latency_and_never_fails_a_request_background() {
    let (mut targets, sink, deaf, refused) = statsd_targets(Pipeline::Background);
    compare("statsd (background)", &mut targets);
    // The faults were real: sends were refused, the deaf socket overflowed.
    let deadline = Instant::now() + Duration::from_secs(5);
    while refused.send_errors() == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(refused.send_errors() > 0, "no send was refused: was the port really closed?");
    assert!(sink.received.load(Ordering::Relaxed) > 0, "the healthy sink got nothing");
    let port = deaf.local_addr().expect("addr").port();
    std::thread::sleep(Duration::from_millis(100)); // let the sender flush
    assert!(kernel_drops(port).unwrap_or(0) > 0, "the never-read socket never overflowed");
}

#[test]
fn statsd_down_or_deaf_keeps_request_latency_and_never_fails_a_request_inline() {
    // metrics-exporter-statsd (cadence) formats and sends on the request thread: the path most
    // exposed to a dead server.
    let (mut targets, sink, _deaf, _) = statsd_targets(Pipeline::Inline);
    compare("statsd (inline)", &mut targets);
    assert!(sink.received.load(Ordering::Relaxed) > 0, "the healthy sink got nothing");
}

#[test]
fn dogstatsd_agent_missing_or_deaf_keeps_request_latency_and_never_fails_a_request() {
    let build = |addr: SocketAddr| {
        tower_vitals::dogstatsd::builder(&addr.to_string())
            .expect("address")
            .with_flush_interval(Duration::from_millis(50))
            .build()
            .expect("build")
    };
    let sink = DrainedSink::start();
    let deaf = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let mut targets = vec![
        Target::new("healthy (agent reads)", build(sink.addr)),
        Target::new("agent missing (port closed)", build(closed_port())),
        Target::new("agent socket never reads", build(deaf.local_addr().expect("addr"))),
    ];
    compare("dogstatsd", &mut targets);
    let deadline = Instant::now() + Duration::from_secs(5);
    while sink.received.load(Ordering::Relaxed) == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(sink.received.load(Ordering::Relaxed) > 0, "the healthy agent got nothing");
}
