//! Exactness of the live summary: requests through the real layer on a mock clock, read back
//! from `/vitals.json` (the text users and the page get), against hdrhistogram over the same
//! samples; and the window's rotation on that clock.
#![cfg(feature = "live")]

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hdrhistogram::Histogram;
use http::{Request, Response};
use http_body::{Body, Frame};
use serde_json::Value;
use tower::{Layer, Service};
use tower_vitals::live::Live;
use tower_vitals::{RouteName, VitalsLayer};

/// A body of one data frame, then the end (never "end of stream" early, so the time between
/// the frame and the next poll is output time).
struct OneFrame(Option<Bytes>);

impl Body for OneFrame {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.take().map(|b| Ok(Frame::data(b))))
    }
}

/// One request: `app_ns` in the handler, one frame of `bytes` held `hold_ns` downstream.
fn request<S>(svc: &mut S, mock: &Mocks, app_ns: u64, hold_ns: u64, bytes: usize, status: u16)
where
    S: Service<Request<()>, Response = Response<tower_vitals::ResponseBody<OneFrame>>>,
    S::Error: std::fmt::Debug,
{
    let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());
    let mut req = Request::new(());
    req.extensions_mut().insert(RouteName::new(if status >= 500 { "/fail" } else { "/r" }));
    let mut fut = std::pin::pin!(svc.call(req));
    mock.advance(Duration::from_nanos(app_ns));
    let Poll::Ready(Ok(res)) = fut.as_mut().poll(&mut cx) else { panic!("ready at once") };
    let mut body = std::pin::pin!(res.into_body());
    let first = body.as_mut().poll_frame(&mut cx);
    assert!(matches!(first, Poll::Ready(Some(Ok(_)))));
    let _ = bytes;
    mock.advance(Duration::from_nanos(hold_ns));
    assert!(matches!(body.as_mut().poll_frame(&mut cx), Poll::Ready(None)));
}

/// The reference: hdrhistogram with the live recorder's documented settings (whole
/// microseconds, 2 significant figures), over the seconds the layer recorded.
fn reference(samples: &[f64]) -> Histogram<u64> {
    let mut h = Histogram::<u64>::new_with_bounds(1, 2, 2).expect("bounds");
    h.auto(true);
    for s in samples {
        h.record((s * 1e6).round() as u64).expect("record");
    }
    h
}

fn check(what: &str, json: &Value, samples: &[f64]) {
    let h = reference(samples);
    assert_eq!(json["count"].as_u64(), Some(samples.len() as u64), "{what}");
    for (q, name) in [(0.5, "p50"), (0.95, "p95"), (0.99, "p99")] {
        let want = h.value_at_quantile(q) as f64 / 1e6;
        assert_eq!(json[name].as_f64(), Some(want), "{what} {name}: {json}");
    }
    assert_eq!(json["max"].as_f64(), Some(h.max() as f64 / 1e6), "{what} max");
    let mean = samples.iter().sum::<f64>() / samples.len() as f64;
    let got = json["mean"].as_f64().expect("mean");
    assert!((got - mean).abs() <= 1e-12 * mean.max(1.0), "{what} mean {got} vs {mean}");
}

/// The mock clock the live recorder and the layer share.
type Mocks = tower_vitals::MockClock;

/// Seconds as the layer computes them from mock nanoseconds.
fn secs(ns: u64) -> f64 {
    ns as f64 * 1e-9
}

struct Phase {
    app: Vec<f64>,
    out: Vec<f64>,
    total: Vec<f64>,
}

/// Deterministic log-spread times: 1 µs to ~2 s in the handler, 0 to ~0.5 s held.
fn run_phase<S>(svc: &mut S, mock: &Mocks, seed: u64, n: u64) -> Phase
where
    S: Service<Request<()>, Response = Response<tower_vitals::ResponseBody<OneFrame>>>,
    S::Error: std::fmt::Debug,
{
    let mut x = seed;
    let mut next = || {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        x >> 11
    };
    let mut p = Phase { app: vec![], out: vec![], total: vec![] };
    for _ in 0..n {
        let app_ns = 1_000 * 10u64.pow((next() % 7) as u32) + next() % 1_000_000;
        let hold_ns = if next() % 4 == 0 { 0 } else { next() % 500_000_000 };
        request(svc, mock, app_ns, hold_ns, 100, 200);
        p.app.push(secs(app_ns));
        p.out.push(secs(hold_ns));
        p.total.push(secs(app_ns + hold_ns));
    }
    p
}

fn route<'j>(json: &'j Value, name: &str) -> &'j Value {
    json["services"][0]["routes"]
        .as_array()
        .expect("routes")
        .iter()
        .find(|r| r["route"] == name)
        .unwrap_or_else(|| panic!("{name} in {json}"))
}

#[test]
fn vitals_json_percentiles_equal_hdrhistogram_and_the_window_rotates() {
    let (clock, mock) = tower_vitals::Clock::mock();
    let layer_clock = clock.clone();
    // A one-hour window (two halves of 30 min): each phase below spans a few minutes of mock
    // time (its requests' own durations), well inside one half.
    let live = Live::builder().window(Duration::from_secs(3600)).clock(clock.clone()).build();
    let recorder = live.recorder();
    let _local = metrics::set_default_local_recorder(&recorder);
    let mut svc = VitalsLayer::builder().clock(layer_clock).build().layer(tower::service_fn(
        |req: Request<()>| {
            let status =
                if req.extensions().get::<RouteName>().map(RouteName::as_str) == Some("/fail") {
                    500
                } else {
                    200
                };
            let mut res = Response::new(OneFrame(Some(Bytes::from_static(&[b'x'; 100]))));
            *res.status_mut() = http::StatusCode::from_u16(status).expect("status");
            std::future::ready(Ok::<_, Infallible>(res))
        },
    ));

    // Phase A at t = 0, B in the next half, C in the half after that.
    let a = run_phase(&mut svc, &mock, 1, 600);
    for _ in 0..5 {
        request(&mut svc, &mock, 2_000, 0, 100, 500);
    }
    let json: Value = serde_json::from_str(&live.json()).expect("json");
    let r = route(&json, "/r");
    check("A application", &r["since_start"]["application_time"], &a.app);
    check("A output", &r["since_start"]["output_time"], &a.out);
    check("A total", &r["since_start"]["duration"], &a.total);
    check("A window total", &r["window"]["duration"], &a.total);
    assert_eq!(r["since_start"]["requests"].as_u64(), Some(600));
    assert_eq!(r["since_start"]["bytes_per_block"].as_f64(), Some(100.0));
    let f = route(&json, "/fail");
    assert_eq!(f["since_start"]["errors"]["500"].as_u64(), Some(5));
    assert_eq!(f["since_start"]["status"]["5xx"].as_u64(), Some(5));

    let elapsed = |m: &Mocks, s: u64| m.advance(Duration::from_secs(s));
    elapsed(&mock, 1801);
    let b = run_phase(&mut svc, &mock, 2, 400);
    let json: Value = serde_json::from_str(&live.json()).expect("json");
    let r = route(&json, "/r");
    let ab: Vec<f64> = a.total.iter().chain(&b.total).copied().collect();
    check("A+B window", &r["window"]["duration"], &ab);

    elapsed(&mock, 1801);
    let c = run_phase(&mut svc, &mock, 3, 300);
    let json: Value = serde_json::from_str(&live.json()).expect("json");
    let r = route(&json, "/r");
    let bc: Vec<f64> = b.total.iter().chain(&c.total).copied().collect();
    check("B+C window (A rotated out)", &r["window"]["duration"], &bc);
    check(
        "B+C window application",
        &r["window"]["application_time"],
        &[b.app, c.app.clone()].concat(),
    );
    let abc: Vec<f64> = ab.iter().chain(&c.total).copied().collect();
    check("A+B+C since start", &r["since_start"]["duration"], &abc);
    assert_eq!(r["window"]["requests"].as_u64(), Some(700));
    assert_eq!(r["since_start"]["requests"].as_u64(), Some(1300));
    // The 500s (phase A) have left the window, not the totals.
    let f = route(&json, "/fail");
    assert_eq!(f["window"]["requests"].as_u64(), Some(0));
    assert_eq!(f["since_start"]["requests"].as_u64(), Some(5));

    // A whole window of silence empties the window; history shows the last window's steps.
    elapsed(&mock, 3601);
    let json: Value = serde_json::from_str(&live.json()).expect("json");
    let r = route(&json, "/r");
    assert_eq!(r["window"]["requests"].as_u64(), Some(0));
    assert!(r["window"]["duration"]["p50"].is_null());
    assert_eq!(r["history"]["requests"].as_array().map(Vec::len), Some(30));
    assert_eq!(json["services"][0]["active_requests"].as_f64(), Some(0.0));
    assert!(json["uptime_seconds"].as_f64().expect("uptime") > 7200.0);
    assert_eq!(json["lock_waits"].as_u64(), Some(0), "one thread: never contended");
}

#[test]
fn any_prefix_is_kept_apart_and_the_prefix_filter_keeps_one() {
    let live = Live::new();
    let only = Live::builder().prefix("api").build();
    let fanout = metrics_util::layers::FanoutBuilder::default()
        .add_recorder(live.recorder())
        .add_recorder(only.recorder())
        .build();
    let _local = metrics::set_default_local_recorder(&fanout);
    for prefix in ["api", "http.server"] {
        let mut svc = VitalsLayer::builder().prefix(prefix).build().layer(tower::service_fn(
            |_: Request<()>| std::future::ready(Ok::<_, Infallible>(Response::new(OneFrame(None)))),
        ));
        let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());
        let mut fut = std::pin::pin!(svc.call(Request::new(())));
        let Poll::Ready(Ok(res)) = fut.as_mut().poll(&mut cx) else { panic!("ready") };
        let mut body = std::pin::pin!(res.into_body());
        while let Poll::Ready(Some(_)) = body.as_mut().poll_frame(&mut cx) {}
    }
    let all = live.snapshot();
    let prefixes: Vec<&str> = all.services.iter().map(|s| s.prefix.as_str()).collect();
    assert_eq!(prefixes, ["api", "http.server"]);
    assert!(all.services.iter().all(|s| s.routes[0].since_start.requests == 1));
    let one = only.snapshot();
    assert_eq!(one.services.len(), 1);
    assert_eq!(one.services[0].prefix, "api");
}

/// Two threads record into one route (through their own stripes, or one shared if they picked
/// the same) while a third takes snapshots continuously and the window rotates every
/// millisecond: the last snapshot holds every sample exactly once, and since-start counts never
/// go back.
#[test]
fn two_threads_on_one_route_under_snapshots_and_rotations_lose_nothing() {
    const PER_THREAD: u64 = 20_000;
    let live = Live::builder().window(Duration::from_millis(2)).stripes(2).build();
    let recorder = live.recorder();
    let done = std::sync::atomic::AtomicUsize::new(0);
    let sample = |t: u64, i: u64| ((i % 997) + 1) as f64 * 1e-6 * (t + 1) as f64;
    let snapshots = std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let (mut taken, mut last) = (0u64, 0u64);
            while done.load(std::sync::atomic::Ordering::Acquire) < 2 && taken < 1_000_000 {
                let snap = live.snapshot();
                let n = snap.services.first().and_then(|s| s.routes.first());
                let n = n.map_or(0, |r| r.since_start.requests);
                assert!(n >= last, "since start went back: {last} -> {n}");
                assert!(n <= 2 * PER_THREAD, "counted twice: {n}");
                last = n;
                taken += 1;
            }
            taken
        });
        for t in 0..2u64 {
            let (recorder, done) = (&recorder, &done);
            s.spawn(move || {
                metrics::with_local_recorder(recorder, || {
                    let requests = metrics::counter!("http.server.requests", "http.route" => "/r");
                    let duration =
                        metrics::histogram!("http.server.request.duration", "http.route" => "/r");
                    for i in 0..PER_THREAD {
                        requests.increment(1);
                        duration.record(sample(t, i));
                    }
                });
                done.fetch_add(1, std::sync::atomic::Ordering::Release);
            });
        }
        reader.join().expect("reader")
    });
    let samples: Vec<f64> =
        (0..2).flat_map(|t| (0..PER_THREAD).map(move |i| sample(t, i))).collect();
    let json: Value = serde_json::from_str(&live.json()).expect("json");
    let r = route(&json, "/r");
    assert_eq!(r["since_start"]["requests"].as_u64(), Some(2 * PER_THREAD));
    check("since start duration", &r["since_start"]["duration"], &samples);
    assert!(snapshots > 2, "the reader ran alongside ({snapshots} snapshots)");
}

/// 100 concurrent `/vitals.json` at the route cap, served by the app's own runtime (an admin
/// route of the app's router): the app's requests keep their pace. Measured as a ratio in one
/// run (no absolute time): the app's p99 while the 100 are in flight, over its p99 while 100
/// readers fetch a static body of the same size, sent to all of them at once (the cost of
/// moving those bytes, which the JSON cannot avoid), median of three rounds. App requests are
/// due at a fixed pace and timed from when they were due, so a stalled worker shows as many
/// slow requests. The target is 2× (0.4–1.1× measured on the shared 2-core machine); the bound
/// asserted is 3×, because there one round's p99 swings by several times with the other load.
/// Rendered on the async workers, one render per request, the app's requests wait for seconds
/// (p99 33.8 s against 25.7 ms).
#[test]
fn concurrent_vitals_json_at_the_route_cap_do_not_stall_the_app() {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::Instant;
    const EVERY: Duration = Duration::from_micros(500);

    let live = Live::new();
    metrics::with_local_recorder(&live.recorder(), || {
        for r in 0..1100 {
            let route = format!("/api/v1/resource-{r}/{{id}}/items");
            let labels =
                [("http.route", route.clone()), ("http.response.status_code", "200".into())];
            metrics::counter!("http.server.requests", &labels).increment(1);
            for name in ["request.duration", "application_time", "output_time"] {
                let name = format!("http.server.{name}");
                metrics::histogram!(name, "http.route" => route.clone()).record(0.0123);
            }
            metrics::histogram!("http.server.output_bytes", "http.route" => route.clone())
                .record(512.0);
            metrics::histogram!("http.server.output_blocks", "http.route" => route).record(1.0);
        }
    });
    let render = Instant::now();
    let size = live.json().len();
    let render = render.elapsed();
    assert!(size > 1_000_000, "the route cap's JSON is megabytes: {size} bytes");

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let same_size = Bytes::from(vec![b' '; size]);
    // The static bodies leave together once all 100 have been asked for, as the shared JSON
    // does when its render is done.
    let together = Arc::new(tokio::sync::Barrier::new(100));
    let app = axum::Router::new()
        .route("/hello", axum::routing::get(|| async { "hello" }))
        .route(
            "/same-size",
            axum::routing::get(move || {
                let (together, body) = (Arc::clone(&together), same_size.clone());
                async move {
                    together.wait().await;
                    body
                }
            }),
        )
        .route("/vitals.json", axum::routing::get_service(live.service()));
    let listener =
        runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).expect("bind loopback");
    let addr = listener.local_addr().expect("addr");
    runtime.spawn(async move { axum::serve(listener, app).await });

    let connect = || {
        let s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(120))).expect("timeout");
        s.set_nodelay(true).expect("nodelay");
        s
    };
    let mut probe = connect();
    let mut buf = vec![0u8; 4096];
    // One app request on a kept-alive connection, due at `due`: the time from `due` to its
    // answer (a request held up delays the next ones, and they count that wait: a stalled app
    // shows as many slow requests, not as one).
    let mut hello = |due: Instant| {
        probe.write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n").expect("write");
        let mut got = Vec::new();
        while !got.ends_with(b"\r\n\r\nhello") {
            let n = probe.read(&mut buf).expect("an app request answered within 120 s");
            assert!(n > 0, "closed");
            got.extend_from_slice(&buf[..n]);
        }
        due.elapsed()
    };
    // The app's p99 while 100 readers fetch `path` at once: an app request due every EVERY for
    // at least 2 s (enough samples for a p99 that the machine's other load does not swing) and
    // until every reader is done.
    let mut p99_during = |path: &str| {
        let finished = std::sync::atomic::AtomicUsize::new(0);
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let (mut times, bodies) = std::thread::scope(|s| {
            let readers: Vec<_> = (0..100)
                .map(|_| {
                    let (finished, request) = (&finished, &request);
                    s.spawn(move || {
                        let mut c = connect();
                        c.write_all(request.as_bytes()).expect("write");
                        let (mut buf, mut total) = (vec![0u8; 64 * 1024], 0);
                        loop {
                            match c.read(&mut buf) {
                                Ok(0) => break,
                                Ok(n) => total += n,
                                Err(e) => panic!("reading {path}: {e}"),
                            }
                        }
                        finished.fetch_add(1, std::sync::atomic::Ordering::Release);
                        total
                    })
                })
                .collect();
            let mut times = Vec::new();
            let start = Instant::now();
            while (finished.load(std::sync::atomic::Ordering::Acquire) < 100
                || start.elapsed() < Duration::from_secs(2))
                && start.elapsed() < Duration::from_secs(120)
            {
                let due = start + EVERY * times.len() as u32;
                if let Some(early) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(early);
                }
                times.push(hello(due));
            }
            let bodies: Vec<usize> =
                readers.into_iter().map(|r| r.join().expect("reader")).collect();
            (times, bodies)
        });
        assert!(bodies.iter().all(|&n| n > size), "every reader got the whole body: {bodies:?}");
        times.sort();
        (times[(times.len() * 99 / 100).min(times.len() - 1)], times.len())
    };
    p99_during("/same-size"); // warm up: connections, buffers
                              // Three rounds, each measured both ways back to back; the medians compared (the machine's
                              // load moves between rounds).
    let (mut bytes_only, mut json): (Vec<_>, Vec<_>) =
        (0..3).map(|_| (p99_during("/same-size"), p99_during("/vitals.json"))).unzip();
    eprintln!(
        "app (p99, requests) per round: {bytes_only:?} with 100 static bodies, {json:?} with \
         100 /vitals.json ({size} bytes, one render {render:?})"
    );
    bytes_only.sort();
    json.sort();
    let (bytes_only, json) = (bytes_only[1].0, json[1].0);
    assert!(
        json <= bytes_only * 3,
        "the app's p99 went from {bytes_only:?} to {json:?} with 100 concurrent /vitals.json"
    );
}

/// One request on `route` taking `ns` in the handler, with a `traceparent` header if given.
fn traced_request<S>(svc: &mut S, mock: &Mocks, route: &'static str, traceparent: &str, ns: u64)
where
    S: Service<Request<()>, Response = Response<tower_vitals::ResponseBody<OneFrame>>>,
    S::Error: std::fmt::Debug,
{
    let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());
    let mut req = Request::new(());
    req.extensions_mut().insert(RouteName::new(route));
    if !traceparent.is_empty() {
        req.headers_mut().insert("traceparent", traceparent.parse().expect("header value"));
    }
    let mut fut = std::pin::pin!(svc.call(req));
    mock.advance(Duration::from_nanos(ns));
    let Poll::Ready(Ok(res)) = fut.as_mut().poll(&mut cx) else { panic!("ready at once") };
    let mut body = std::pin::pin!(res.into_body());
    while let Poll::Ready(Some(_)) = body.as_mut().poll_frame(&mut cx) {}
}

/// The `slowest` list of a period as (trace id, duration) pairs.
fn slowest(period: &Value) -> Vec<(String, f64)> {
    period["slowest"]
        .as_array()
        .unwrap_or_else(|| panic!("a slowest list in {period}"))
        .iter()
        .map(|s| {
            assert!(s["end_unix_ms"].as_u64().is_some(), "end_unix_ms in {s}");
            let id = s["trace_id"].as_str().expect("trace_id").to_owned();
            (id, s["duration"].as_f64().expect("duration"))
        })
        .collect()
}

/// Requests with a valid `traceparent`, through a layer with exemplars on: the route's window
/// lists the trace ids of its five slowest, slowest first, with their durations; requests
/// without one (or with a hostile one) never appear, and a route that had none lists nothing.
/// The window forgets them when it rotates; since start keeps them.
#[test]
fn the_slowest_traced_requests_are_listed_per_route() {
    let (clock, mock) = tower_vitals::Clock::mock();
    let live = Live::builder().window(Duration::from_secs(3600)).clock(clock.clone()).build();
    let recorder = live.recorder();
    let _local = metrics::set_default_local_recorder(&recorder);
    let mut svc = VitalsLayer::builder().clock(clock).exemplars().build().layer(tower::service_fn(
        |_: Request<()>| std::future::ready(Ok::<_, Infallible>(Response::new(OneFrame(None)))),
    ));
    let header = |i: u64| format!("00-{:032x}-00f067aa0ba902b7-01", 0xabc0_0000 + i);
    // Twenty traced requests on /t, durations out of order (1..=20 ms, shuffled by 7 mod 20).
    let mut sent = Vec::new();
    for i in 0..20u64 {
        let ms = (i * 7) % 20 + 1;
        traced_request(&mut svc, &mock, "/t", &header(i), ms * 1_000_000);
        sent.push((format!("{:032x}", 0xabc0_0000 + i), secs(ms * 1_000_000)));
    }
    // Slower than all of them, but untraced or with hostile headers: never listed.
    for bad in [
        "",
        "00-ABC00000000000000000000000000001-00f067aa0ba902b7-01",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-abc0000000000000000000000000001-00f067aa0ba902b7-01",
    ] {
        traced_request(&mut svc, &mock, "/t", bad, 500_000_000);
    }
    for _ in 0..10 {
        traced_request(&mut svc, &mock, "/u", "", 900_000_000);
    }
    sent.sort_by(|a, b| b.1.total_cmp(&a.1));
    let want: Vec<(String, f64)> = sent[..5].to_vec();
    let json: Value = serde_json::from_str(&live.json()).expect("json");
    let t = route(&json, "/t");
    assert_eq!(t["window"]["requests"].as_u64(), Some(24));
    assert_eq!(slowest(&t["window"]), want, "window of /t");
    assert_eq!(slowest(&t["since_start"]), want, "since start of /t");
    let u = route(&json, "/u");
    assert_eq!(slowest(&u["window"]), [], "untraced requests list nothing");
    assert_eq!(slowest(&u["since_start"]), []);

    // Two half-windows later the window has forgotten them; since start has not.
    mock.advance(Duration::from_secs(3601));
    traced_request(&mut svc, &mock, "/t", &header(99), 1_000);
    let json: Value = serde_json::from_str(&live.json()).expect("json");
    let t = route(&json, "/t");
    assert_eq!(slowest(&t["window"]), [(format!("{:032x}", 0xabc0_0000u64 + 99), secs(1_000))]);
    assert_eq!(slowest(&t["since_start"]), want);
}
