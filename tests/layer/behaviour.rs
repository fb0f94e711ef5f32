//! One named test per body shape and end, on a mock clock (exact nanoseconds, no sleeps), with
//! metrics-util's `DebuggingRecorder` set per test (the layer is built after it).

use std::future::Future;
use std::task::Poll;

use crate::support::*;
use http::Request;
use http_body::Body as _;
use metrics_util::debugging::{DebuggingRecorder, Snapshotter};
use tower::{Layer, Service, ServiceExt};
use tower_vitals::{RouteName, VitalsLayer};

struct Harness {
    _guard: metrics::LocalRecorderGuard<'static>,
    snap: Snapshotter,
    mock: tower_vitals::MockClock,
    clock: tower_vitals::Clock,
    layer: VitalsLayer,
}

fn harness() -> Harness {
    let (guard, snap) = local_recorder();
    let (clock, mock) = tower_vitals::Clock::mock();
    let layer = VitalsLayer::builder().clock(clock.clone()).build();
    Harness { _guard: guard, snap, mock, clock, layer }
}

fn req(route: Option<&'static str>) -> Request<String> {
    let mut r = Request::new(String::new());
    if let Some(route) = route {
        r.extensions_mut().insert(RouteName::new(route));
    }
    r
}

fn secs(ns: u64) -> f64 {
    ns as f64 * 1e-9
}

fn assert_close(got: f64, want: f64) {
    assert!((got - want).abs() < 1e-12, "got {got}, want {want}");
}

/// Runs one request through a layered scripted service, draining the body. Returns the snapshot.
fn run(h: &Harness, head: Head, steps: Vec<(u64, Step)>, exact: bool) -> Vec<Seen> {
    let mock = h.mock.clone();
    let svc = h
        .layer
        .layer(scripted(&h.mock, head, move || ScriptBody::new(&mock, steps.clone(), exact)));
    if let Ok(res) = block_on(svc.oneshot(req(Some("/r")))) {
        let mut body = res.into_body();
        drain(&mut body);
    }
    snapshot(&h.snap)
}

fn ok(status: u16) -> Head {
    Head::Respond { pending: 1, status, advance_ns: 1_000 }
}

fn assert_once(seen: &[Seen], error_type: Option<&str>) {
    let req = one(seen, &NAMES.requests);
    assert_eq!(req.counter(), 1);
    assert_eq!(req.label("error.type"), error_type, "{req:?}");
    assert_eq!(one(seen, &NAMES.active_requests).gauge(), 0.0);
}

#[test]
fn exact_content_length_finishes_on_the_last_frame() {
    let h = harness();
    let mock = h.mock.clone();
    let svc = h.layer.layer(scripted(&h.mock, ok(200), move || {
        ScriptBody::new(&mock, vec![(10, Step::Data(3)), (10, Step::Data(4))], true)
    }));
    let res = block_on(svc.oneshot(req(Some("/exact")))).expect("response");
    let mut body = res.into_body();
    assert!(poll_once(&mut body).is_ready());
    assert!(named(&snapshot(&h.snap), &NAMES.requests).is_empty(), "not finished after frame 1");
    assert!(poll_once(&mut body).is_ready());
    assert!(body.is_end_stream());
    // Finished now, before any further poll and before the drop (hyper stops polling here).
    let seen = snapshot(&h.snap);
    assert_once(&seen, None);
    let r = one(&seen, &NAMES.requests);
    assert_eq!(r.label("http.route"), Some("/exact"));
    assert_eq!(r.label("http.request.method"), Some("GET"));
    assert_eq!(r.label("http.response.status_code"), Some("200"));
    assert_eq!(one(&seen, &NAMES.output_blocks).values(), vec![2.0]);
    assert_eq!(one(&seen, &NAMES.output_bytes).values(), vec![7.0]);
    assert_close(one(&seen, &NAMES.duration).values()[0], secs(1_020));
    drop(body);
    assert!(
        named(&snapshot(&h.snap), &NAMES.requests).is_empty(),
        "drop after the end records nothing"
    );
}

#[test]
fn chunked_body_finishes_on_ready_none() {
    let h = harness();
    let seen =
        run(&h, ok(200), vec![(5, Step::Data(10)), (5, Step::Pending), (5, Step::Data(20))], false);
    assert_once(&seen, None);
    assert_eq!(one(&seen, &NAMES.output_blocks).values(), vec![2.0]);
    assert_eq!(one(&seen, &NAMES.output_bytes).values(), vec![30.0]);
    assert_close(one(&seen, &NAMES.application_time).values()[0], secs(1_000));
    assert_close(one(&seen, &NAMES.duration).values()[0], secs(1_015));
}

#[test]
fn trailers_are_read_not_counted() {
    let h = harness();
    let seen = run(&h, ok(200), vec![(0, Step::Data(5)), (0, Step::Trailers(Some(5)))], false);
    assert_once(&seen, None);
    assert_eq!(one(&seen, &NAMES.output_blocks).values(), vec![1.0]);
    assert_eq!(one(&seen, &NAMES.requests).label("rpc.grpc.status_code"), Some("5"));
}

#[test]
fn empty_body_finishes_at_the_head() {
    let h = harness();
    let mock = h.mock.clone();
    let svc =
        h.layer.layer(scripted(&h.mock, ok(200), move || ScriptBody::new(&mock, vec![], true)));
    let res = block_on(svc.oneshot(req(Some("/empty")))).expect("response");
    let seen = snapshot(&h.snap);
    assert_once(&seen, None);
    assert_eq!(one(&seen, &NAMES.output_blocks).values(), vec![0.0]);
    assert_close(one(&seen, &NAMES.duration).values()[0], secs(1_000));
    drop(res);
    assert!(named(&snapshot(&h.snap), &NAMES.requests).is_empty());
}

#[test]
fn error_frame_is_body_error() {
    let h = harness();
    let seen = run(&h, ok(200), vec![(0, Step::Data(8)), (0, Step::Error)], false);
    assert_once(&seen, Some("body_error"));
    assert_eq!(one(&seen, &NAMES.output_bytes).values(), vec![8.0]);
}

#[test]
fn drop_mid_body_is_aborted() {
    let h = harness();
    let mock = h.mock.clone();
    let svc = h.layer.layer(scripted(&h.mock, ok(200), move || {
        ScriptBody::new(&mock, vec![(0, Step::Data(100)), (0, Step::Data(100))], false)
    }));
    let res = block_on(svc.oneshot(req(Some("/big")))).expect("response");
    let mut body = res.into_body();
    assert!(poll_once(&mut body).is_ready());
    h.mock.advance(std::time::Duration::from_nanos(500u64)); // the frame is held downstream, then the client is gone
    drop(body);
    let seen = snapshot(&h.snap);
    assert_once(&seen, Some("aborted"));
    assert_eq!(one(&seen, &NAMES.output_bytes).values(), vec![100.0]);
    // A frame out when the body drops counts as output time.
    assert_close(one(&seen, &NAMES.output_time).values()[0], secs(500));
}

#[test]
fn drop_before_head_is_cancelled() {
    let h = harness();
    let mock = h.mock.clone();
    let svc = h.layer.layer(scripted(
        &h.mock,
        Head::Respond { pending: 5, status: 200, advance_ns: 0 },
        move || ScriptBody::new(&mock, vec![], false),
    ));
    let mut fut = Box::pin(svc.oneshot(req(Some("/slow"))));
    let waker = futures_util::task::noop_waker();
    assert!(fut.as_mut().poll(&mut std::task::Context::from_waker(&waker)).is_pending());
    h.mock.advance(std::time::Duration::from_nanos(2_000u64));
    drop(fut);
    let seen = snapshot(&h.snap);
    assert_once(&seen, Some("cancelled"));
    let r = one(&seen, &NAMES.requests);
    assert_eq!(r.label("http.response.status_code"), None);
    assert!(named(&seen, &NAMES.application_time).is_empty(), "no head, no application time");
    assert_close(one(&seen, &NAMES.duration).values()[0], secs(2_000));
}

#[test]
fn service_err_is_service_error_and_passes_through() {
    let h = harness();
    let mock = h.mock.clone();
    let svc = h.layer.layer(scripted(&h.mock, Head::Fail { advance_ns: 300 }, move || {
        ScriptBody::new(&mock, vec![], false)
    }));
    let err = block_on(svc.oneshot(req(Some("/fail")))).expect_err("the service fails");
    assert_eq!(err.to_string(), "scripted service error");
    let seen = snapshot(&h.snap);
    assert_once(&seen, Some("service_error"));
    assert_close(one(&seen, &NAMES.application_time).values()[0], secs(300));
    assert!(named(&seen, &NAMES.output_bytes).is_empty(), "no body, no output metrics");
}

#[test]
fn panic_in_the_future_is_recorded_as_panic() {
    let h = harness();
    let mock = h.mock.clone();
    let svc = h
        .layer
        .layer(scripted(&h.mock, Head::Panic, move || ScriptBody::new(&mock, vec![], false)));
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        block_on(svc.oneshot(req(Some("/p"))))
    }));
    assert!(caught.is_err(), "the panic propagates unchanged");
    let seen = snapshot(&h.snap);
    assert_once(&seen, Some("panic"));
}

#[test]
fn panic_in_poll_frame_is_recorded_as_panic() {
    let h = harness();
    let mock = h.mock.clone();
    let svc = h.layer.layer(scripted(&h.mock, ok(200), move || {
        ScriptBody::new(&mock, vec![(0, Step::Data(1)), (0, Step::Panic)], false)
    }));
    let res = block_on(svc.oneshot(req(Some("/p")))).expect("response");
    let mut body = res.into_body();
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drain(&mut body)));
    assert!(caught.is_err());
    drop(body); // tokio and CatchPanic drop the body after catching the unwind
    let seen = snapshot(&h.snap);
    assert_once(&seen, Some("panic"));
    assert_eq!(one(&seen, &NAMES.output_bytes).values(), vec![1.0]);
}

#[test]
fn one_byte_frames_count_every_block() {
    let h = harness();
    let steps = (0..1000).map(|_| (1, Step::Data(1))).collect();
    let seen = run(&h, ok(200), steps, true);
    assert_once(&seen, None);
    assert_eq!(one(&seen, &NAMES.output_blocks).values(), vec![1000.0]);
    assert_eq!(one(&seen, &NAMES.output_bytes).values(), vec![1000.0]);
}

#[test]
fn output_time_sums_the_time_frames_are_held_downstream() {
    let h = harness();
    let mock = h.mock.clone();
    let svc = h.layer.layer(scripted(&h.mock, ok(200), move || {
        ScriptBody::new(
            &mock,
            vec![(7, Step::Data(1)), (7, Step::Data(1)), (7, Step::Data(1))],
            false,
        )
    }));
    let res = block_on(svc.oneshot(req(Some("/slow-reader")))).expect("response");
    let mut body = res.into_body();
    for held in [100u64, 200, 300] {
        assert!(poll_once(&mut body).is_ready());
        h.mock.advance(std::time::Duration::from_nanos(held)); // the server writes the frame to a slow client
    }
    assert!(matches!(poll_once(&mut body), Poll::Ready(None)));
    let seen = snapshot(&h.snap);
    assert_once(&seen, None);
    assert_close(one(&seen, &NAMES.output_time).values()[0], secs(600));
    // application 1000 + producing 3 × 7 + held 600
    assert_close(one(&seen, &NAMES.duration).values()[0], secs(1_621));
}

#[test]
fn server_error_status_is_tagged_with_its_code() {
    let h = harness();
    let seen = run(&h, ok(503), vec![(0, Step::Data(2))], false);
    assert_once(&seen, Some("503"));
    assert_eq!(one(&seen, &NAMES.requests).label("http.response.status_code"), Some("503"));
    let h = harness();
    let seen = run(&h, ok(404), vec![(0, Step::Data(2))], false);
    assert_once(&seen, None);
}

#[test]
fn head_request_dropped_unpolled_is_complete() {
    let h = harness();
    let mock = h.mock.clone();
    let svc = h.layer.layer(scripted(&h.mock, ok(200), move || {
        ScriptBody::new(&mock, vec![(0, Step::Data(5))], true)
    }));
    let mut r = req(Some("/h"));
    *r.method_mut() = http::Method::HEAD;
    let res = block_on(svc.oneshot(r)).expect("response");
    drop(res); // servers send no body for HEAD and drop it unpolled
    let seen = snapshot(&h.snap);
    assert_once(&seen, None);
    assert_eq!(one(&seen, &NAMES.requests).label("http.request.method"), Some("HEAD"));
}

#[test]
fn size_hint_and_is_end_stream_pass_through() {
    let h = harness();
    let mock = h.mock.clone();
    let svc = h.layer.layer(scripted(&h.mock, ok(200), move || {
        ScriptBody::new(&mock, vec![(0, Step::Data(5))], true)
    }));
    let res = block_on(svc.oneshot(req(None))).expect("response");
    let body = res.into_body();
    assert_eq!(body.size_hint().exact(), Some(7));
    assert!(!body.is_end_stream());
}

#[test]
fn unknown_method_and_missing_route_use_fixed_values() {
    let h = harness();
    let mock = h.mock.clone();
    let svc =
        h.layer.layer(scripted(&h.mock, ok(200), move || ScriptBody::new(&mock, vec![], true)));
    let mut r = req(None);
    *r.method_mut() = http::Method::from_bytes(b"BREW").expect("token");
    block_on(svc.oneshot(r)).expect("response");
    let seen = snapshot(&h.snap);
    let r = one(&seen, &NAMES.requests);
    assert_eq!(r.label("http.request.method"), Some("_OTHER"));
    assert_eq!(r.label("http.route"), Some("unmatched"));
}

#[test]
fn route_cap_sends_new_names_to_overflow() {
    let h = harness();
    let layer = VitalsLayer::builder().clock(h.clock.clone()).route_cap(2).build();
    let mock = h.mock.clone();
    let svc = layer.layer(scripted(&h.mock, ok(200), move || ScriptBody::new(&mock, vec![], true)));
    for name in ["/a", "/b", "/c", "/d", "/a"] {
        let mut r = req(None);
        r.extensions_mut().insert(RouteName::new(name.to_string()));
        block_on(svc.clone().oneshot(r)).expect("response");
    }
    let seen = snapshot(&h.snap);
    let mut routes: Vec<(String, u64)> = named(&seen, &NAMES.requests)
        .iter()
        .map(|s| (s.label("http.route").unwrap_or_default().to_owned(), s.counter()))
        .collect();
    routes.sort();
    assert_eq!(routes, vec![("/a".into(), 2), ("/b".into(), 1), ("overflow".into(), 2)]);
    assert_eq!(layer.routes_seen(), 2);
}

#[test]
fn route_name_on_the_response_overrides_the_request() {
    let h = harness();
    let svc = h.layer.layer(tower::service_fn(|_req: Request<String>| async {
        let mut res =
            http::Response::new(http_body_util::Full::new(bytes::Bytes::from_static(b"hi")));
        res.extensions_mut().insert(RouteName::new("/from-handler"));
        Ok::<_, std::convert::Infallible>(res)
    }));
    let res = block_on(svc.oneshot(req(Some("/from-request")))).expect("response");
    let mut body = res.into_body();
    drain(&mut body);
    let seen = snapshot(&h.snap);
    assert_eq!(one(&seen, &NAMES.requests).label("http.route"), Some("/from-handler"));
}

#[test]
fn active_requests_counts_in_flight_and_returns_to_zero() {
    let h = harness();
    let mock = h.mock.clone();
    let mut svc = h.layer.layer(scripted(&h.mock, ok(200), move || {
        ScriptBody::new(&mock, vec![(0, Step::Data(1))], false)
    }));
    let a = block_on(svc.call(req(Some("/a")))).expect("a");
    let b = block_on(svc.call(req(Some("/b")))).expect("b");
    assert_eq!(h.layer.active_requests(), 2);
    assert_eq!(one(&snapshot(&h.snap), &NAMES.active_requests).gauge(), 2.0);
    drop(a);
    let mut b = b.into_body();
    drain(&mut b);
    assert_eq!(h.layer.active_requests(), 0);
    let seen = snapshot(&h.snap);
    assert_eq!(one(&seen, &NAMES.active_requests).gauge(), 0.0);
    assert_eq!(one(&seen, &NAMES.active_requests).label("http.request.method"), Some("GET"));
    assert_eq!(counter_total(&seen, &NAMES.requests), 2);
}

#[test]
fn two_layers_with_two_recorders_never_mix() {
    let first = DebuggingRecorder::new();
    let second = DebuggingRecorder::new();
    let run_one = |recorder: &DebuggingRecorder, route: &'static str| {
        let _g = metrics::set_default_local_recorder(recorder);
        let svc = VitalsLayer::new().layer(tower::service_fn(|_r: Request<String>| async {
            Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Empty::<
                bytes::Bytes,
            >::new()))
        }));
        block_on(svc.oneshot(req(Some(route)))).expect("response");
    };
    run_one(&first, "/first");
    run_one(&second, "/second");
    let a = snapshot(&first.snapshotter());
    let b = snapshot(&second.snapshotter());
    assert_eq!(one(&a, &NAMES.requests).label("http.route"), Some("/first"));
    assert_eq!(one(&b, &NAMES.requests).label("http.route"), Some("/second"));
}

#[test]
fn metrics_are_described_with_units() {
    let recorder = DebuggingRecorder::new();
    let _g = metrics::set_default_local_recorder(&recorder);
    let svc = VitalsLayer::new().layer(tower::service_fn(|_r: Request<String>| async {
        Ok::<_, std::convert::Infallible>(http::Response::new(
            http_body_util::Empty::<bytes::Bytes>::new(),
        ))
    }));
    block_on(svc.oneshot(req(Some("/d")))).expect("response");
    let described: Vec<_> = recorder.snapshotter().snapshot().into_vec();
    let unit_of = |name: &str| {
        described.iter().find(|(ck, ..)| ck.key().name() == name).and_then(|(_, unit, desc, _)| {
            assert!(desc.is_some(), "{name} has help text");
            *unit
        })
    };
    assert_eq!(unit_of(&NAMES.duration), Some(metrics::Unit::Seconds));
    assert_eq!(unit_of(&NAMES.output_bytes), Some(metrics::Unit::Bytes));
    assert_eq!(unit_of(&NAMES.output_blocks), Some(metrics::Unit::Count));
}

#[test]
fn request_body_is_measured_when_asked() {
    let h = harness();
    let layer = VitalsLayer::builder().clock(h.clock.clone()).measure_request_body().build();
    let svc = layer.layer(tower::service_fn(
        |r: Request<tower_vitals::RequestBody<http_body_util::Full<bytes::Bytes>>>| async move {
            let mut body = r.into_body();
            let (frames, bytes, _) = drain(&mut body);
            assert_eq!((frames, bytes), (1, 11));
            Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Empty::<
                bytes::Bytes,
            >::new()))
        },
    ));
    let mut r = Request::new(http_body_util::Full::new(bytes::Bytes::from_static(b"hello world")));
    r.extensions_mut().insert(RouteName::new("/upload"));
    block_on(svc.oneshot(r)).expect("response");
    let seen = snapshot(&h.snap);
    assert_eq!(one(&seen, &NAMES.input_bytes).values(), vec![11.0]);
    assert_eq!(one(&seen, &NAMES.input_blocks).values(), vec![1.0]);
    assert_eq!(one(&seen, &NAMES.input_bytes).label("http.route"), Some("/upload"));
}

#[test]
fn layer_types_are_send_sync_and_clone_as_servers_require() {
    fn send_sync_clone<T: Send + Sync + Clone + 'static>(_: &T) {}
    fn send<T: Send + 'static>(_: &T) {}
    type Inner = tower::util::BoxCloneSyncService<
        Request<String>,
        http::Response<http_body_util::Full<bytes::Bytes>>,
        std::io::Error,
    >;
    let layer = VitalsLayer::new();
    send_sync_clone(&layer);
    let svc = layer.layer(Inner::new(tower::service_fn(|_r: Request<String>| async {
        Ok::<_, std::io::Error>(http::Response::new(http_body_util::Full::new(bytes::Bytes::new())))
    })));
    send_sync_clone(&svc);
    let mut svc2 = svc.clone();
    let fut = svc2.call(req(None));
    send(&fut);
    let res = block_on(fut).expect("response");
    send(&res);
    let measured = VitalsLayer::builder().measure_request_body().build();
    send_sync_clone(&measured);
}
