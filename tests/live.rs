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

/// The live recorder's clock (a `quanta` mock) and the layer's ([`tower_vitals::MockClock`]),
/// moved together.
struct Mocks(Arc<quanta::Mock>, tower_vitals::MockClock);

impl Mocks {
    fn advance(&self, by: Duration) {
        self.0.increment(by);
        self.1.advance(by);
    }
}

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
    let (clock, live_mock) = quanta::Clock::mock();
    let (layer_clock, layer_mock) = tower_vitals::Clock::mock();
    let mock = Mocks(live_mock, layer_mock);
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
