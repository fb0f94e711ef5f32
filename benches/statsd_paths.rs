//! What recording one request costs with each statsd option, on the request path and in all.
//!
//! A request, as the layer records it at finish on cached handles: one counter increment, five
//! histogram samples (duration, application time, output time, blocks, bytes), and the two
//! `active_requests` gauge sets (at call and at finish).
//!
//! - `noop`: handles of no recorder (the floor).
//! - `background`: `tower_vitals::statsd`, default pipeline (atomics + lock-free queue; a sender
//!   thread formats and sends).
//! - `inline`: `tower_vitals::statsd` with `Pipeline::Inline` (metrics-exporter-statsd: one line
//!   formatted per sample on the recording thread, queued to cadence's sender thread).
//! - `dogstatsd`: `tower_vitals::dogstatsd` (metrics-exporter-dogstatsd: in-process aggregation,
//!   histograms in a reservoir of 256 samples per flush).
//! - `dogstatsd_every_sample`: the same with `.keep_every_sample()` (every histogram sample held
//!   until the flush).
//!
//! Requests are recorded in chunks of 4096 with a 20 ms pause between chunks (not timed), so the
//! queues drain and what is measured is the steady path, not the drop path (the drop counts are
//! printed). Datagrams go to a bound 127.0.0.1 socket nobody reads (the kernel drops them).
//!
//! After criterion's request-path numbers, the bench prints the CPU time of the whole process
//! (every thread: the sender threads included) per request, from `/proc/self/stat`.
//!
//! ```sh
//! cargo bench --bench statsd_paths --features statsd,dogstatsd
//! ```

use std::hint::black_box;
use std::net::UdpSocket;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use metrics::{Counter, Gauge, Histogram, Label, Recorder};
use tower_vitals::statsd::{self, Pipeline, StatsdHandle};

const CHUNK: u64 = 4096;
const PAUSE: Duration = Duration::from_millis(20);

/// The handles of one label set, resolved once (as the layer caches them).
struct Handles {
    requests: Counter,
    histograms: [Histogram; 5],
    active: Gauge,
}

impl Handles {
    fn resolve(recorder: &dyn Recorder) -> Handles {
        metrics::with_local_recorder(recorder, || {
            let names = tower_vitals::MetricNames::new(tower_vitals::DEFAULT_PREFIX);
            metrics::describe_histogram!(names.duration.clone(), metrics::Unit::Seconds, "d");
            metrics::describe_histogram!(
                names.application_time.clone(),
                metrics::Unit::Seconds,
                "a"
            );
            metrics::describe_histogram!(names.output_time.clone(), metrics::Unit::Seconds, "o");
            let labels = [
                Label::new("http.route", "/users/{id}"),
                Label::new("http.request.method", "GET"),
                Label::new("http.response.status_code", "200"),
            ];
            Handles {
                requests: metrics::counter!(names.requests.clone(), labels.iter()),
                histograms: [
                    metrics::histogram!(names.duration.clone(), labels.iter()),
                    metrics::histogram!(names.application_time.clone(), labels.iter()),
                    metrics::histogram!(names.output_time.clone(), labels.iter()),
                    metrics::histogram!(names.output_blocks.clone(), labels.iter()),
                    metrics::histogram!(names.output_bytes.clone(), labels.iter()),
                ],
                active: metrics::gauge!(names.active_requests.clone(), "http.request.method" => "GET"),
            }
        })
    }

    fn record(&self, i: u64) {
        let t = black_box(0.000_250 + (i % 64) as f64 * 1e-6);
        self.active.set(1.0);
        self.requests.increment(1);
        self.histograms[0].record(t);
        self.histograms[1].record(t * 0.6);
        self.histograms[2].record(t * 0.3);
        self.histograms[3].record(1.0);
        self.histograms[4].record(512.0);
        self.active.set(0.0);
    }

    /// Times `iters` requests, in chunks with untimed pauses between them.
    fn time(&self, iters: u64) -> Duration {
        let mut timed = Duration::ZERO;
        let mut done = 0;
        while done < iters {
            let n = CHUNK.min(iters - done);
            let started = Instant::now();
            for i in done..done + n {
                self.record(i);
            }
            timed += started.elapsed();
            done += n;
            if done < iters {
                std::thread::sleep(PAUSE);
            }
        }
        timed
    }
}

struct Candidate {
    name: &'static str,
    handles: Handles,
    exporter: Option<StatsdHandle>,
    _recorder: Box<dyn Recorder>,
}

fn options(sink: &UdpSocket) -> Vec<Candidate> {
    let addr = sink.local_addr().expect("sink addr").to_string();
    let mut out = Vec::new();
    let noop: Box<dyn Recorder> = Box::new(metrics::NoopRecorder);
    out.push(Candidate {
        name: "noop",
        handles: Handles::resolve(&*noop),
        exporter: None,
        _recorder: noop,
    });
    for (name, pipeline) in [("background", Pipeline::Background), ("inline", Pipeline::Inline)] {
        let (recorder, exporter) =
            statsd::builder(addr.clone()).classic().pipeline(pipeline).build().expect("statsd");
        let recorder: Box<dyn Recorder> = Box::new(recorder);
        out.push(Candidate {
            name,
            handles: Handles::resolve(&*recorder),
            exporter: Some(exporter),
            _recorder: recorder,
        });
    }
    let every_sample = tower_vitals::dogstatsd::builder(&addr).keep_every_sample();
    for (name, builder) in [
        ("dogstatsd", tower_vitals::dogstatsd::builder(&addr)),
        ("dogstatsd_every_sample", every_sample),
    ] {
        let dog: Box<dyn Recorder> = Box::new(builder.build().expect("dogstatsd"));
        out.push(Candidate {
            name,
            handles: Handles::resolve(&*dog),
            exporter: None,
            _recorder: dog,
        });
    }
    out
}

/// CPU time of the whole process (all threads), from /proc/self/stat (utime + stime, in
/// 1/100 s ticks: Linux's USER_HZ).
fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after_comm = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
}

fn request_path(c: &mut Criterion) {
    let sink = UdpSocket::bind("127.0.0.1:0").expect("bind sink");
    let options = options(&sink);
    let mut group = c.benchmark_group("statsd_request_path");
    for option in &options {
        group.bench_function(option.name, |b| b.iter_custom(|iters| option.handles.time(iters)));
    }
    group.finish();

    // All threads' CPU per request, at a paced rate the sender threads can keep up with.
    const REQUESTS: u64 = 1_000_000;
    println!("\nCPU per request, all threads ({REQUESTS} requests in chunks of {CHUNK}):");
    // The floor first and last: the spread of its two lines is the noise of this measure.
    let order = (0..options.len()).chain(std::iter::once(0)).map(|i| &options[i]);
    for option in order {
        std::thread::sleep(Duration::from_millis(200)); // let the previous option's threads settle
        let (Some(cpu0), started) = (process_cpu(), Instant::now()) else { return };
        let path = option.handles.time(REQUESTS);
        std::thread::sleep(Duration::from_millis(100)); // the sender drains the last chunk
        let wall = started.elapsed();
        let cpu = process_cpu().map_or(Duration::ZERO, |c| c - cpu0);
        let per = |d: Duration| d.as_nanos() as f64 / REQUESTS as f64;
        let dropped = option.exporter.as_ref().map_or(0, StatsdHandle::dropped);
        println!(
            "  {:<10} request path {:>7.0} ns/req   all threads {:>7.0} ns/req   (wall {:.2?}, dropped {dropped})",
            option.name,
            per(path),
            per(cpu),
            wall
        );
    }
    sender_throughput(&sink);
}

/// How fast the background sender drains: queue a burst (no drops: the queue holds it all),
/// then time until the last datagram went out.
fn sender_throughput(sink: &UdpSocket) {
    const REQUESTS: u64 = 200_000;
    let addr = sink.local_addr().expect("sink addr").to_string();
    let (recorder, exporter) =
        statsd::builder(addr).classic().queue_size(8 * REQUESTS as usize).build().expect("statsd");
    let handles = Handles::resolve(&recorder);
    let cpu0 = process_cpu();
    let started = Instant::now();
    for i in 0..REQUESTS {
        handles.record(i);
    }
    let queued = started.elapsed();
    // Done when no datagram went out for 50 ms (bounded: 60 s).
    let (mut last, mut last_change) = (exporter.packets_sent(), Instant::now());
    while last_change.elapsed() < Duration::from_millis(50)
        && started.elapsed() < Duration::from_secs(60)
    {
        std::thread::sleep(Duration::from_millis(2));
        let now = exporter.packets_sent();
        if now != last {
            (last, last_change) = (now, Instant::now());
        }
    }
    let drained = last_change - started;
    let cpu = match (cpu0, process_cpu()) {
        (Some(a), Some(b)) => b - a,
        _ => Duration::ZERO,
    };
    println!(
        "\nbackground sender: {REQUESTS} requests ({} lines) queued in {queued:.2?}, sent in {drained:.2?} \
         as {last} datagrams: {:.0} requests/s, {:.0} lines/s; process CPU {cpu:.2?}; dropped {}",
        REQUESTS * 5,
        REQUESTS as f64 / drained.as_secs_f64(),
        (REQUESTS * 5) as f64 / drained.as_secs_f64(),
        exporter.dropped()
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = request_path
}
criterion_main!(benches);
