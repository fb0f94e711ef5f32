//! Property test: exactly-once holds with skip rules and labels in play. For any batch of
//! requests through one layer, some skipped (by `skip_if` or by `skip_routes`), each with or
//! without a request label, a handler label or a hostile value, ending normally, with a body
//! error, a service error or an early drop: every measured request is counted once under the
//! labels it was given, no skipped request is counted, `active_requests` returns to 0, and the
//! bytes and blocks recorded are those that passed through the measured bodies.

use std::collections::BTreeMap;
use std::task::Poll;

use crate::support::*;
use http::request::Parts;
use http::Response;
use metrics_util::debugging::DebuggingRecorder;
use proptest::prelude::*;
use tower::{Layer, ServiceExt};
use tower_vitals::labels::{sanitize_tag_value, NO_VALUE, ROUTE};
use tower_vitals::{Label, RouteName, VitalsLayer};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Skip {
    No,
    ByPredicate,
    ByRoute,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum End {
    Drain,
    /// Stop after this many polls and drop the body.
    DropAfter(usize),
    ServiceError,
}

#[derive(Debug, Clone)]
struct Req {
    skip: Skip,
    /// `x-tier` header (request label); `None`: no header.
    tier: Option<&'static str>,
    /// Handler label `cache`.
    cache: Option<&'static str>,
    steps: Vec<Step>,
    end: End,
}

const TIERS: [&str; 4] = ["gold", "", "a|b,c#d\"e\\", "silver"];
const CACHE: [&str; 3] = ["hit", "miss", "x\ny:z"];

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (0usize..200).prop_map(Step::Data),
        2 => Just(Step::Pending),
        1 => Just(Step::Error),
    ]
}

fn req() -> impl Strategy<Value = Req> {
    (
        prop::sample::select(vec![Skip::No, Skip::No, Skip::ByPredicate, Skip::ByRoute]),
        proptest::option::of(prop::sample::select(TIERS.to_vec())),
        proptest::option::of(prop::sample::select(CACHE.to_vec())),
        prop::collection::vec(step(), 0..8),
        prop_oneof![
            4 => Just(End::Drain),
            2 => (0usize..6).prop_map(End::DropAfter),
            1 => Just(End::ServiceError),
        ],
    )
        .prop_map(|(skip, tier, cache, steps, end)| Req { skip, tier, cache, steps, end })
}

/// What the test expects the metrics to say.
#[derive(Default, Debug)]
struct Expected {
    requests: u64,
    blocks: u64,
    bytes: u64,
    by_tier: BTreeMap<String, u64>,
    by_cache: BTreeMap<String, u64>,
}

fn run(batch: &[Req]) -> Result<(), TestCaseError> {
    let recorder = DebuggingRecorder::new();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let (clock, mock) = tower_vitals::Clock::mock();
    let layer = VitalsLayer::builder()
        .clock(clock)
        .skip_if(|req: &Parts| req.headers.contains_key("x-skip"))
        .skip_routes(["/healthz"])
        .label_from_request("tier", |req: &Parts| req.headers.get("x-tier")?.to_str().ok())
        .expect("key")
        .label("cache")
        .expect("key")
        .build();

    let mut expected = Expected::default();
    for r in batch {
        let steps: Vec<(u64, Step)> = r.steps.iter().cloned().map(|s| (100, s)).collect();
        let body_mock = mock.clone();
        let (cache, fail) = (r.cache, r.end == End::ServiceError);
        let svc = layer.layer(tower::service_fn(move |_req: http::Request<String>| {
            let body = ScriptBody::new(&body_mock, steps.clone(), false);
            let result = if fail {
                Err(std::io::Error::other("scripted service error"))
            } else {
                let mut res = Response::new(body);
                if let Some(cache) = cache {
                    res.extensions_mut().insert(Label::new("cache", cache));
                }
                Ok(res)
            };
            std::future::ready(result)
        }));
        let mut req = http::Request::get("/p").body(String::new()).expect("request");
        match r.skip {
            Skip::No => {
                req.extensions_mut().insert(RouteName::new("/p"));
            }
            Skip::ByPredicate => {
                req.headers_mut().insert("x-skip", "1".parse().expect("header"));
            }
            Skip::ByRoute => {
                req.extensions_mut().insert(RouteName::new("/healthz"));
            }
        }
        if let Some(tier) = r.tier {
            req.headers_mut().insert("x-tier", tier.parse().expect("visible ASCII"));
        }

        let (mut blocks, mut bytes) = (0u64, 0u64);
        if let Ok(res) = block_on(svc.oneshot(req)) {
            let mut body = res.into_body();
            let polls = match r.end {
                End::DropAfter(n) => n,
                _ => 10_000,
            };
            for _ in 0..polls {
                match poll_once(&mut body) {
                    Poll::Ready(Some(Ok(frame))) => {
                        if let Some(d) = frame.data_ref() {
                            blocks += 1;
                            bytes += d.len() as u64;
                        }
                    }
                    Poll::Ready(Some(Err(_))) | Poll::Ready(None) => break,
                    Poll::Pending => {}
                }
            }
        }
        if r.skip == Skip::No {
            expected.requests += 1;
            expected.blocks += blocks;
            expected.bytes += bytes;
            let tier = match r.tier {
                None | Some("") => NO_VALUE.to_owned(),
                Some(t) => sanitize_tag_value(t),
            };
            *expected.by_tier.entry(tier).or_default() += 1;
            let cache = match (r.cache, r.end) {
                (Some(c), end) if end != End::ServiceError => sanitize_tag_value(c),
                _ => NO_VALUE.to_owned(),
            };
            *expected.by_cache.entry(cache).or_default() += 1;
        }
        prop_assert_eq!(layer.active_requests(), 0);
    }

    let seen = snapshot(&recorder.snapshotter());
    prop_assert_eq!(counter_total(&seen, "http.server.requests"), expected.requests, "{:#?}", seen);
    prop_assert_eq!(hist_sum(&seen, "http.server.output_blocks"), expected.blocks as f64);
    prop_assert_eq!(hist_sum(&seen, "http.server.output_bytes"), expected.bytes as f64);
    prop_assert!(seen.iter().all(|s| s.label(ROUTE) != Some("/healthz")));
    let by = |key: &str| -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for s in named(&seen, "http.server.requests") {
            let value = s.label(key).expect("every series carries the key").to_owned();
            *out.entry(value).or_default() += s.counter();
        }
        out
    };
    prop_assert_eq!(by("tier"), expected.by_tier);
    prop_assert_eq!(by("cache"), expected.by_cache);
    if expected.requests > 0 {
        prop_assert_eq!(one(&seen, "http.server.active_requests").gauge(), 0.0);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn skipped_and_labelled_requests_are_recorded_exactly_once(
        batch in prop::collection::vec(req(), 1..12)
    ) {
        run(&batch)?;
    }
}
