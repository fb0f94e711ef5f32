//! `utilization` and busy time on a mock clock: exact expected values, no sleeps.

use std::sync::Arc;
use std::time::Duration;

use crate::support::*;
use http::Request;
use metrics_util::debugging::Snapshotter;
use tower::{Layer, Service};
use tower_vitals::{ResponseBody, VitalsLayer};

const SECOND: u64 = 1_000_000_000;

struct Bench {
    _guard: metrics::LocalRecorderGuard<'static>,
    snap: Snapshotter,
    mock: tower_vitals::MockClock,
}

fn bench() -> (Bench, tower_vitals::Clock) {
    let (guard, snap) = local_recorder();
    let (clock, mock) = tower_vitals::Clock::mock();
    (Bench { _guard: guard, snap, mock }, clock)
}

/// A service whose responses have one data frame, after which they end: a request starts at
/// `call` and finishes when its body is polled once.
fn service(
    b: &Bench,
    layer: &VitalsLayer,
) -> impl Service<
    Request<String>,
    Response = http::Response<ResponseBody<ScriptBody>>,
    Error = std::io::Error,
    Future = tower_vitals::ResponseFuture<HeadFuture>,
> {
    let mock = b.mock.clone();
    layer.layer(scripted(
        &b.mock,
        Head::Respond { pending: 0, status: 200, advance_ns: 0 },
        move || ScriptBody::new(&mock, vec![(0, Step::Data(1))], true),
    ))
}

fn start<S>(svc: &mut S) -> ResponseBody<ScriptBody>
where
    S: Service<
        Request<String>,
        Response = http::Response<ResponseBody<ScriptBody>>,
        Error = std::io::Error,
    >,
{
    block_on(svc.call(Request::new(String::new()))).expect("response").into_body()
}

fn finish(mut body: ResponseBody<ScriptBody>) {
    assert!(poll_once(&mut body).is_ready());
}

/// The gauge's value if it was registered (DebuggingRecorder's snapshot resets gauges to 0, so
/// read it once per publication).
fn gauge(b: &Bench) -> Option<f64> {
    named(&snapshot(&b.snap), &NAMES.utilization).first().map(|s| s.gauge())
}

fn at(b: &Bench, seconds: u64) {
    let now = b.mock.elapsed();
    b.mock.advance(std::time::Duration::from_nanos(seconds * SECOND) - now);
}

/// Two overlapping requests, 0–6 s and 2–10 s: 14 request-seconds in the first 10 s window.
fn first_window(b: &Bench, layer: &VitalsLayer) {
    let mut svc = service(b, layer);
    let a = start(&mut svc);
    at(b, 2);
    let second = start(&mut svc);
    at(b, 6);
    finish(a);
    assert_eq!(gauge(b), Some(0.0), "no window closed before 10 s: the gauge shows 0");
    assert_eq!(layer.busy_time(), Duration::from_secs(6 + 4));
    at(b, 10);
    finish(second); // the finish at 10 s is the tick that closes the window [0, 10 s]
    assert_eq!(layer.busy_time(), Duration::from_secs(14));
}

#[test]
fn utilization_is_busy_time_over_capacity_times_window() {
    let (b, clock) = bench();
    let layer = VitalsLayer::builder()
        .clock(clock)
        .capacity(4)
        .utilization_window(Duration::from_secs(10))
        .build();
    first_window(&b, &layer);
    assert_eq!(gauge(&b), Some(14.0 / (4.0 * 10.0)));

    // A request in flight across windows counts in each for the time it spent in it.
    let mut svc = service(&b, &layer);
    at(&b, 12);
    let c = start(&mut svc);
    at(&b, 15);
    assert_eq!(layer.publish_utilization(), None, "5 s is not a window yet");
    at(&b, 25);
    assert_eq!(layer.busy_time(), Duration::from_secs(14 + 13));
    assert_eq!(layer.publish_utilization(), Some(13.0 / (4.0 * 15.0)), "window [10, 25 s]");
    assert_eq!(gauge(&b), Some(13.0 / (4.0 * 15.0)));
    at(&b, 30);
    finish(c); // 5 s after the last close: no tick (the next window proves it: [25, 45 s])
    at(&b, 45);
    assert_eq!(layer.publish_utilization(), Some(5.0 / (4.0 * 20.0)), "window [25, 45 s]");
    assert_eq!(gauge(&b), Some(5.0 / (4.0 * 20.0)));
    at(&b, 60);
    assert_eq!(layer.publish_utilization(), Some(0.0), "idle window [45, 60 s]");
    assert_eq!(layer.busy_time(), Duration::from_secs(14 + 18));
}

#[test]
fn without_a_capacity_utilization_is_average_concurrency() {
    let (b, clock) = bench();
    let layer =
        VitalsLayer::builder().clock(clock).utilization_window(Duration::from_secs(10)).build();
    first_window(&b, &layer);
    assert_eq!(gauge(&b), Some(1.4));
    let seen = snapshot(&b.snap);
    let g = one(&seen, &NAMES.utilization);
    assert!(g.labels.is_empty(), "utilization is one layer-wide series: {:?}", g.labels);
}

#[test]
fn clones_of_a_layer_share_one_integral() {
    let (b, clock) = bench();
    let layer = VitalsLayer::builder()
        .clock(clock)
        .capacity(2)
        .utilization_window(Duration::from_secs(4))
        .build();
    let mut one_svc = service(&b, &layer);
    let mut other_svc = service(&b, &layer.clone());
    let x = start(&mut one_svc);
    let y = start(&mut other_svc);
    at(&b, 4);
    finish(x);
    finish(y);
    assert_eq!(gauge(&b), Some(8.0 / (2.0 * 4.0)), "both slots busy the whole window");
}

#[test]
fn a_capacity_of_zero_counts_as_one() {
    let (b, clock) = bench();
    let layer = VitalsLayer::builder()
        .clock(clock)
        .capacity(0)
        .utilization_window(Duration::from_secs(1))
        .build();
    let mut svc = service(&b, &layer);
    let x = start(&mut svc);
    at(&b, 2);
    finish(x);
    assert_eq!(gauge(&b), Some(1.0));
}

#[test]
fn concurrent_starts_and_finishes_integrate_exactly() {
    // 4 threads × 250 requests all in flight together for exactly 3 s of mock time: the
    // lock-free integral must come out at 1 000 × 3 s, whatever the interleaving of the CASes.
    let (clock, mock) = tower_vitals::Clock::mock();
    let layer =
        VitalsLayer::builder().clock(clock).utilization_window(Duration::from_secs(3600)).build();
    let started = Arc::new(std::sync::Barrier::new(5));
    let advanced = Arc::new(std::sync::Barrier::new(5));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (layer, mock) = (layer.clone(), mock.clone());
            let (started, advanced) = (Arc::clone(&started), Arc::clone(&advanced));
            std::thread::spawn(move || {
                let (guard, snap) = local_recorder();
                let b = Bench { _guard: guard, snap, mock };
                let mut svc = service(&b, &layer);
                let bodies: Vec<_> = (0..250).map(|_| start(&mut svc)).collect();
                started.wait();
                advanced.wait();
                bodies.into_iter().for_each(finish);
            })
        })
        .collect();
    started.wait();
    assert_eq!(layer.active_requests(), 1_000);
    mock.advance(std::time::Duration::from_nanos(3 * SECOND));
    advanced.wait();
    for t in threads {
        t.join().expect("thread");
    }
    assert_eq!(layer.active_requests(), 0);
    assert_eq!(layer.busy_time(), Duration::from_secs(3_000));
}

#[test]
fn a_quiet_service_reads_zero_at_the_next_publication_after_a_burst() {
    // A burst (one request busy from 0 to 8 s), then silence: no request ticks the windows
    // any more, so only a publication (a scrape, the live page, the background thread for
    // layers on the system clock) can close them.
    let (b, clock) = bench();
    let layer =
        VitalsLayer::builder().clock(clock).utilization_window(Duration::from_secs(10)).build();
    let mut svc = service(&b, &layer);
    let x = start(&mut svc);
    at(&b, 8);
    finish(x);
    at(&b, 9);
    tower_vitals::publish_gauges();
    assert_eq!(gauge(&b), Some(0.0), "9 s: no window is due yet");
    at(&b, 12);
    tower_vitals::publish_gauges();
    assert_eq!(gauge(&b), Some(8.0 / 12.0), "the burst's window [0, 12 s], closed at a read");
    at(&b, 25);
    tower_vitals::publish_gauges();
    assert_eq!(gauge(&b), Some(0.0), "the quiet window [12, 25 s] reads 0");
}

#[test]
fn active_requests_is_exact_when_read_after_requests_on_several_threads_end() {
    // Each thread counts its requests on its own stripe; a read sums them. The gauge is
    // resolved by a first request on this thread (through its recorder), then 4 threads start
    // 250 requests each and finish all but one.
    let (b, clock) = bench();
    let layer =
        VitalsLayer::builder().clock(clock).utilization_window(Duration::from_secs(3600)).build();
    let mut svc = service(&b, &layer);
    finish(start(&mut svc));
    let active = |b: &Bench| one(&snapshot(&b.snap), &NAMES.active_requests).gauge();
    assert_eq!(active(&b), 0.0);
    let started = Arc::new(std::sync::Barrier::new(5));
    let read = Arc::new(std::sync::Barrier::new(5));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (layer, mock) = (layer.clone(), b.mock.clone());
            let (started, read) = (Arc::clone(&started), Arc::clone(&read));
            std::thread::spawn(move || {
                let (guard, snap) = local_recorder();
                let b = Bench { _guard: guard, snap, mock };
                let mut svc = service(&b, &layer);
                let mut bodies: Vec<_> = (0..250).map(|_| start(&mut svc)).collect();
                started.wait();
                read.wait();
                let last = bodies.pop().expect("a body");
                bodies.into_iter().for_each(finish);
                last
            })
        })
        .collect();
    started.wait();
    assert_eq!(active(&b), 1_000.0, "all 1 000 in flight, read while the threads wait");
    read.wait();
    let left: Vec<_> = threads.into_iter().map(|t| t.join().expect("thread")).collect();
    assert_eq!(active(&b), 4.0, "one request of each thread still in flight");
    assert_eq!(layer.active_requests(), 4);
    left.into_iter().for_each(finish);
    assert_eq!(active(&b), 0.0, "back to 0 once the last ones end, on another thread");
}
