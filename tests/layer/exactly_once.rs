//! Property test: for any sequence of frames, errors, pendings, panics, drop points and
//! cancellations, a request is recorded exactly once, with the outcome (`error.type`), status
//! and gRPC labels a model of the layer predicts; the caller sees what the service produced (a
//! response, its error, its panic); `active_requests` returns to 0; blocks and bytes equal what
//! passed; and the application, output and total times equal, to the nanosecond, what the mock
//! clock says they were.

use std::future::Future;
use std::task::{Context, Poll};

use crate::support::*;
use metrics_util::debugging::DebuggingRecorder;
use proptest::prelude::*;
use tower::{Layer, ServiceExt};
use tower_vitals::labels::{
    ERROR_TYPE, GRPC_STATUS, METHOD, PROTOCOL_VERSION, ROUTE, STATUS, URL_SCHEME,
};
use tower_vitals::{RouteName, VitalsLayer};

#[derive(Debug, Clone)]
enum HeadCase {
    Respond {
        pending: usize,
        status: u16,
        advance: u64,
    },
    Fail {
        advance: u64,
    },
    Panic,
    /// Poll the future this many times (it stays pending), then drop it.
    CancelAfter(usize),
}

#[derive(Debug, Clone)]
struct Case {
    head: HeadCase,
    steps: Vec<(u64, Step)>,
    exact: bool,
    /// Stop polling the body after this many polls and drop it (None: drain to the end).
    drop_after: Option<usize>,
    /// Clock advance between body polls (time a frame is held downstream).
    hold: u64,
}

fn step() -> impl Strategy<Value = (u64, Step)> {
    let kind = prop_oneof![
        6 => (0usize..300).prop_map(Step::Data),
        2 => Just(Step::Pending),
        1 => proptest::option::of(0u8..20).prop_map(Step::Trailers),
        1 => Just(Step::Error),
        1 => Just(Step::Panic),
    ];
    (0u64..10_000, kind)
}

fn case() -> impl Strategy<Value = Case> {
    let head = prop_oneof![
        6 => (0usize..3, prop::sample::select(vec![200u16, 204, 404, 500, 503]), 0u64..100_000)
            .prop_map(|(pending, status, advance)| HeadCase::Respond { pending, status, advance }),
        1 => (0u64..100_000).prop_map(|advance| HeadCase::Fail { advance }),
        1 => Just(HeadCase::Panic),
        // At least one poll: `oneshot` calls the service on its first poll (before it, no request exists).
        1 => (1usize..4).prop_map(HeadCase::CancelAfter),
    ];
    (
        head,
        prop::collection::vec(step(), 0..24),
        any::<bool>(),
        proptest::option::of(0usize..30),
        0u64..5_000,
    )
        .prop_map(|(head, steps, exact, drop_after, hold)| Case {
            head,
            steps,
            exact,
            drop_after,
            hold,
        })
}

/// How the caller's poll of the response future ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallerSaw {
    /// `Ready(Ok(response))` with this status.
    Response(u16),
    /// `Ready(Err(_))`: the service's error, passed through.
    ServiceErr,
    /// The service future's panic, propagated to the caller.
    Panicked,
    /// Still `Pending` when the caller dropped it.
    StillPending,
}

/// How the consumer's polling of the response body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodySaw {
    /// No body (the future did not produce a response).
    NoBody,
    /// `Ready(None)`.
    End,
    /// An error frame.
    Err,
    /// The body's panic, propagated to the consumer.
    Panicked,
    /// The consumer stopped polling and dropped it before its end.
    Dropped,
}

/// What a run must show: what the caller and the consumer saw, the one label set of the
/// request, and every value, in mock-clock nanoseconds where it is a time.
#[derive(Debug, PartialEq)]
struct Expected {
    caller: CallerSaw,
    body: BodySaw,
    status: Option<String>,
    error_type: Option<String>,
    grpc: Option<String>,
    duration_ns: u64,
    /// `None`: no `application_time` sample (no head and no service error).
    application_ns: Option<u64>,
    /// `(output_time ns, blocks, bytes)`; `None`: no output samples (no response head).
    output: Option<(u64, u64, u64)>,
}

/// The layer as DESIGN.md specifies it, replayed over the case on a model clock that advances
/// exactly as the run's mock clock does (3 ns before each poll of the future, each step's own
/// advance inside the body's poll, `hold` after each frame the consumer receives).
fn expected(case: &Case) -> Expected {
    const POLL_NS: u64 = 3;
    let t0 = POLL_NS; // `oneshot` calls the service in its first poll
    let failed = |caller, end: u64, app: Option<u64>, kind: &str| Expected {
        caller,
        body: BodySaw::NoBody,
        status: None,
        error_type: Some(kind.to_owned()),
        grpc: None,
        duration_ns: end - t0,
        application_ns: app,
        output: None,
    };
    let (status, head_at) = match case.head {
        HeadCase::Respond { pending, status, advance } => {
            (status, t0 + POLL_NS * pending as u64 + advance)
        }
        HeadCase::Fail { advance } => {
            return failed(CallerSaw::ServiceErr, t0 + advance, Some(advance), "service_error")
        }
        HeadCase::Panic => return failed(CallerSaw::Panicked, t0, None, "panic"),
        HeadCase::CancelAfter(polls) => {
            return failed(CallerSaw::StillPending, POLL_NS * polls as u64, None, "cancelled")
        }
    };

    let mut now = head_at;
    let mut steps: std::collections::VecDeque<_> = case.steps.iter().cloned().collect();
    let (mut held, mut blocks, mut bytes, mut grpc) = (0u64, 0u64, 0u64, None::<u8>);
    let mut out_since: Option<u64> = None;
    // (outcome's error.type or "" for complete, end time, what the consumer saw)
    let mut finished: Option<(&str, u64)> = None;
    let mut body = BodySaw::Dropped;
    if case.exact && steps.is_empty() {
        // Nothing to send: finished when the body is created; the consumer then sees the end.
        finished = Some(("", now));
        if case.drop_after != Some(0) {
            body = BodySaw::End;
        }
    } else {
        for _ in 0..case.drop_after.unwrap_or(10_000) {
            if let Some(since) = out_since.take() {
                held += now - since;
            }
            let Some((advance, step)) = steps.pop_front() else {
                finished.get_or_insert(("", now));
                body = BodySaw::End;
                break;
            };
            now += advance;
            let frame = match step {
                Step::Data(n) => {
                    blocks += 1;
                    bytes += n as u64;
                    true
                }
                Step::Trailers(code) => {
                    grpc = code.or(grpc);
                    true
                }
                Step::Pending => false,
                Step::Error => {
                    finished = Some(("body_error", now));
                    body = BodySaw::Err;
                    break;
                }
                Step::Panic => {
                    finished = Some(("panic", now));
                    body = BodySaw::Panicked;
                    break;
                }
            };
            if frame {
                if case.exact && steps.is_empty() {
                    finished.get_or_insert(("", now));
                } else {
                    out_since = Some(now);
                }
                now += case.hold;
            }
        }
    }
    let (outcome, end) = finished.unwrap_or_else(|| {
        // Dropped before its end: a frame still out counts as output time to the drop. A 204
        // body is never sent, so dropping it is its normal end (the request is a GET).
        if let Some(since) = out_since {
            held += now - since;
        }
        (if status == 204 { "" } else { "aborted" }, now)
    });
    const GRPC_SERVER_ERRORS: [(u8, &str); 6] = [
        (2, "UNKNOWN"),
        (4, "DEADLINE_EXCEEDED"),
        (12, "UNIMPLEMENTED"),
        (13, "INTERNAL"),
        (14, "UNAVAILABLE"),
        (15, "DATA_LOSS"),
    ];
    let error_type = if !outcome.is_empty() {
        Some(outcome.to_owned())
    } else if status >= 500 {
        Some(status.to_string())
    } else {
        let code = grpc.unwrap_or(u8::MAX);
        GRPC_SERVER_ERRORS.iter().find(|(c, _)| *c == code).map(|(_, name)| (*name).to_owned())
    };
    Expected {
        caller: CallerSaw::Response(status),
        body,
        status: Some(status.to_string()),
        error_type,
        grpc: grpc.map(|c| if c <= 16 { c.to_string() } else { "_OTHER".to_owned() }),
        duration_ns: end - t0,
        application_ns: Some(head_at - t0),
        output: Some((held, blocks, bytes)),
    }
}

/// Seconds as the layer records them from a mock-clock nanosecond count.
fn seconds(ns: u64) -> f64 {
    ns as f64 * 1e-9
}

/// The single sample of histogram `name` (failing if it is missing or has several label sets
/// or samples), checked to carry the request's labels.
fn sample(seen: &[Seen], name: &str, labels: &[(String, String)]) -> Result<f64, TestCaseError> {
    let found = named(seen, name);
    prop_assert_eq!(found.len(), 1, "expected one label set of {}: {:#?}", name, seen);
    let values = found[0].values();
    prop_assert_eq!(values.len(), 1, "expected one sample of {}: {:?}", name, values);
    prop_assert_eq!(&found[0].labels, labels, "labels of {}", name);
    Ok(values[0])
}

/// Equal to within a thousandth of a nanosecond (the layer may compute seconds its own way).
fn assert_seconds(name: &str, got: f64, want_ns: u64) -> Result<(), TestCaseError> {
    let want = seconds(want_ns);
    prop_assert!(
        (got - want).abs() <= 1e-12 + want * 1e-12,
        "{}: recorded {} s, the mock clock says {} ns",
        name,
        got,
        want_ns
    );
    Ok(())
}

fn run_case(case: &Case) -> Result<(), TestCaseError> {
    let recorder = DebuggingRecorder::new();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let (clock, mock) = tower_vitals::Clock::mock();
    let layer = VitalsLayer::builder().clock(clock).build();

    let head = match &case.head {
        HeadCase::Respond { pending, status, advance } => {
            Head::Respond { pending: *pending, status: *status, advance_ns: *advance }
        }
        HeadCase::Fail { advance } => Head::Fail { advance_ns: *advance },
        HeadCase::Panic => Head::Panic,
        HeadCase::CancelAfter(_) => {
            Head::Respond { pending: usize::MAX, status: 200, advance_ns: 0 }
        }
    };
    let steps = case.steps.clone();
    let exact = case.exact;
    let body_mock = mock.clone();
    let svc = layer
        .layer(scripted(&mock, head, move || ScriptBody::new(&body_mock, steps.clone(), exact)));
    let mut req = http::Request::new(String::new());
    req.extensions_mut().insert(RouteName::new("/p"));

    let waker = futures_util::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    let mut fut = Box::pin(svc.oneshot(req));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let limit = match case.head {
            HeadCase::CancelAfter(n) => n,
            _ => 1_000,
        };
        for _ in 0..limit {
            mock.advance(std::time::Duration::from_nanos(3u64));
            if let Poll::Ready(res) = fut.as_mut().poll(&mut cx) {
                return Some(res);
            }
        }
        None
    }));
    drop(fut);
    let (mut blocks, mut bytes) = (0u64, 0u64);
    let (caller, body_saw) = match result {
        Err(_) => (CallerSaw::Panicked, BodySaw::NoBody),
        Ok(None) => (CallerSaw::StillPending, BodySaw::NoBody),
        Ok(Some(Err(_))) => (CallerSaw::ServiceErr, BodySaw::NoBody),
        Ok(Some(Ok(res))) => {
            let caller = CallerSaw::Response(res.status().as_u16());
            let mut body = res.into_body();
            let polls = case.drop_after.unwrap_or(10_000);
            let polled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                for _ in 0..polls {
                    match poll_once(&mut body) {
                        Poll::Ready(Some(Ok(frame))) => {
                            if let Some(d) = frame.data_ref() {
                                blocks += 1;
                                bytes += d.len() as u64;
                            }
                            mock.advance(std::time::Duration::from_nanos(case.hold));
                        }
                        Poll::Ready(Some(Err(_))) => return BodySaw::Err,
                        Poll::Ready(None) => return BodySaw::End,
                        Poll::Pending => {}
                    }
                }
                BodySaw::Dropped
            }));
            drop(body);
            (caller, polled.unwrap_or(BodySaw::Panicked))
        }
    };

    let want = expected(case);
    prop_assert_eq!(caller, want.caller, "what the caller saw");
    prop_assert_eq!(body_saw, want.body, "what the body's consumer saw");

    let seen = snapshot(&recorder.snapshotter());
    let requests = named(&seen, &NAMES.requests);
    prop_assert_eq!(requests.len(), 1, "one label set of requests: {:#?}", seen);
    let request = requests[0];
    prop_assert_eq!(request.counter(), 1, "recorded exactly once");
    prop_assert_eq!(request.label(ROUTE), Some("/p"));
    prop_assert_eq!(request.label(METHOD), Some("GET"));
    // On by default: the request's HTTP version and scheme (`Request::new`: HTTP/1.1, no scheme).
    prop_assert_eq!(request.label(PROTOCOL_VERSION), Some("1.1"));
    prop_assert_eq!(request.label(URL_SCHEME), Some("http"));
    prop_assert_eq!(request.label(STATUS), want.status.as_deref(), "status label");
    prop_assert_eq!(request.label(ERROR_TYPE), want.error_type.as_deref(), "error.type");
    prop_assert_eq!(request.label(GRPC_STATUS), want.grpc.as_deref(), "grpc status label");
    prop_assert_eq!(
        request.labels.len(),
        4 + [&want.status, &want.error_type, &want.grpc].iter().filter(|l| l.is_some()).count()
    );
    prop_assert_eq!(one(&seen, &NAMES.active_requests).gauge(), 0.0);

    let labels = &request.labels;
    let duration = sample(&seen, &NAMES.duration, labels)?;
    assert_seconds("request.duration", duration, want.duration_ns)?;
    match want.application_ns {
        Some(ns) => {
            let application = sample(&seen, &NAMES.application_time, labels)?;
            assert_seconds("application_time", application, ns)?;
        }
        None => prop_assert!(named(&seen, &NAMES.application_time).is_empty()),
    }
    match want.output {
        Some((held_ns, want_blocks, want_bytes)) => {
            let output = sample(&seen, &NAMES.output_time, labels)?;
            assert_seconds("output_time", output, held_ns)?;
            // What the layer counted is what passed through to the consumer, and the model.
            prop_assert_eq!(sample(&seen, &NAMES.output_blocks, labels)?, blocks as f64);
            prop_assert_eq!(sample(&seen, &NAMES.output_bytes, labels)?, bytes as f64);
            prop_assert_eq!((blocks, bytes), (want_blocks, want_bytes));
        }
        None => {
            for name in [&NAMES.output_time, &NAMES.output_blocks, &NAMES.output_bytes] {
                prop_assert!(named(&seen, name).is_empty(), "{} without a response", name);
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn every_request_is_recorded_exactly_once(case in case()) {
        quiet_intended_panics();
        run_case(&case)?;
    }
}
