//! Property test: for any sequence of frames, errors, pendings, panics, drop points and
//! cancellations, a request is recorded exactly once, `active_requests` returns to 0, blocks and
//! bytes equal what passed, and the phases never exceed the total.

mod support;

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};

use metrics_util::debugging::DebuggingRecorder;
use proptest::prelude::*;
use support::*;
use tower::{Layer, ServiceExt};
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

/// What the consumer saw pass through the body.
#[derive(Default, Debug)]
struct Passed {
    blocks: u64,
    bytes: u64,
}

fn run_case(case: &Case) -> Result<(), TestCaseError> {
    let recorder = DebuggingRecorder::new();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let (clock, mock) = quanta::Clock::mock();
    let layer = VitalsLayer::new().clock(clock);

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
    let body_mock = Arc::clone(&mock);
    let svc = layer
        .layer(scripted(&mock, head, move || ScriptBody::new(&body_mock, steps.clone(), exact)));
    let mut req = http::Request::new(String::new());
    req.extensions_mut().insert(RouteName::new("/p"));

    let mut passed = Passed::default();
    let waker = futures_util::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    let mut fut = Box::pin(svc.oneshot(req));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let limit = match case.head {
            HeadCase::CancelAfter(n) => n,
            _ => 1_000,
        };
        for _ in 0..limit {
            mock.increment(3u64);
            if let Poll::Ready(res) = fut.as_mut().poll(&mut cx) {
                return Some(res);
            }
        }
        None
    }));
    drop(fut);
    if let Ok(Some(Ok(res))) = result {
        let mut body = res.into_body();
        let polls = case.drop_after.unwrap_or(10_000);
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            for _ in 0..polls {
                match poll_once(&mut body) {
                    Poll::Ready(Some(Ok(frame))) => {
                        if let Some(d) = frame.data_ref() {
                            passed.blocks += 1;
                            passed.bytes += d.len() as u64;
                        }
                        mock.increment(case.hold);
                    }
                    Poll::Ready(Some(Err(_))) | Poll::Ready(None) => break,
                    Poll::Pending => {}
                }
            }
        }));
        drop(body);
    }

    let seen = snapshot(&recorder.snapshotter());
    prop_assert_eq!(counter_total(&seen, "http.server.requests"), 1, "{:#?}", seen);
    prop_assert_eq!(one(&seen, "http.server.active_requests").gauge(), 0.0);
    let blocks = hist_sum(&seen, "http.server.output_blocks");
    let bytes = hist_sum(&seen, "http.server.output_bytes");
    prop_assert_eq!(blocks, passed.blocks as f64);
    prop_assert_eq!(bytes, passed.bytes as f64);
    let duration = hist_sum(&seen, "http.server.request.duration");
    prop_assert!(hist_sum(&seen, "http.server.application_time") <= duration);
    prop_assert!(hist_sum(&seen, "http.server.output_time") <= duration);
    Ok(())
}

/// Scripted panics are expected here: keep their messages out of the output, and only theirs.
fn quiet_scripted_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let scripted = info
                .payload()
                .downcast_ref::<&str>()
                .is_some_and(|m| m.starts_with("scripted panic"));
            if !scripted {
                default(info);
            }
        }));
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn every_request_is_recorded_exactly_once(case in case()) {
        quiet_scripted_panics();
        run_case(&case)?;
    }
}
