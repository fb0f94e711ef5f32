//! Zero heap allocations per request by the layer, counted (not timed) with a counting global
//! allocator: after warm-up, requests through `VitalsLayer` (no-op recorder) allocate exactly as
//! many times as the same requests through the bare service.
//!
//! The counter is process-wide, so each test holds `SERIAL` while it counts and takes the
//! smallest count of a few tries: another thread (the test harness reporting a result) can only
//! add allocations to a try, while an allocation the layer made per request would add at least
//! `REQUESTS` to every try.

use std::alloc::System;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};

use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body::{Body, Frame, SizeHint};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use tower::{Layer, Service};
use tower_vitals::{Label, Labels, RouteName, VitalsLayer};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

static SERIAL: Mutex<()> = Mutex::new(());

const WARM_UP: usize = 50;
const REQUESTS: usize = 200;
const TRIES: usize = 3;

static DATA: [u8; 64] = [b'x'; 64];

/// `frames` static frames of 64 bytes. `exact`: `is_end_stream` turns true after the last one
/// (a known length: the layer finishes on that frame); otherwise the end is `Ready(None)`
/// (chunked streaming).
struct Chunks {
    left: usize,
    exact: bool,
}

impl Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        self.left -= 1;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&DATA)))))
    }

    fn is_end_stream(&self) -> bool {
        self.exact && self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        if self.exact {
            SizeHint::with_exact((self.left * DATA.len()) as u64)
        } else {
            SizeHint::default()
        }
    }
}

#[derive(Clone, Copy)]
struct Shape {
    frames: usize,
    exact: bool,
}

const SINGLE: Shape = Shape { frames: 1, exact: true };
const STREAMING: Shape = Shape { frames: 16, exact: false };

type Req = Request<http_body_util::Empty<Bytes>>;

fn plain(
    shape: Shape,
) -> impl Service<Req, Response = Response<Chunks>, Error = Infallible> + Clone {
    tower::service_fn(move |_req: Req| {
        std::future::ready(Ok::<_, Infallible>(Response::new(Chunks {
            left: shape.frames,
            exact: shape.exact,
        })))
    })
}

/// The app as a server runs it: `axum::serve` finalises the router with `with_state(())`;
/// without that, axum clones each boxed route layer per request (an allocation for any layer
/// that is not zero-sized), which is not the layer's doing.
fn app(router: Router) -> Router {
    router.with_state(())
}

fn router(shape: Shape) -> Router {
    Router::new().route(
        "/users/{id}",
        get(move || async move {
            axum::body::Body::new(Chunks { left: shape.frames, exact: shape.exact })
        }),
    )
}

/// Requests made before counting, so only the service's own work is counted.
fn requests(n: usize, route_name: bool) -> Vec<Req> {
    (0..n)
        .map(|_| {
            // A header for the request-side labeller and a `traceparent` for exemplars (built
            // before counting, like the rest; layers without them ignore them).
            let mut req = Request::get(Uri::from_static("/users/42"))
                .header("x-api-version", "2")
                .header("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
                .body(http_body_util::Empty::new())
                .expect("request");
            if route_name {
                req.extensions_mut().insert(RouteName::new("/users/{id}"));
            }
            req
        })
        .collect()
}

/// Runs one request to its end as hyper would (head, then frames until the end).
fn drive<S, B>(svc: &mut S, req: Req)
where
    S: Service<Req, Response = Response<B>>,
    B: Body,
{
    let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());
    assert!(matches!(svc.poll_ready(&mut cx), Poll::Ready(Ok(()))));
    let mut fut = std::pin::pin!(svc.call(req));
    let res = loop {
        if let Poll::Ready(res) = fut.as_mut().poll(&mut cx) {
            break res;
        }
    };
    let Ok(res) = res else { panic!("service error") };
    let mut body = std::pin::pin!(res.into_body());
    let mut frames = 0;
    while !body.is_end_stream() {
        match body.as_mut().poll_frame(&mut cx) {
            Poll::Ready(Some(Ok(_))) => frames += 1,
            Poll::Ready(None) => break,
            Poll::Ready(Some(Err(_))) => panic!("body error"),
            Poll::Pending => {}
        }
    }
    assert!(frames > 0);
}

/// Allocations (plus reallocations) made by `REQUESTS` requests through `svc`, after warm-up:
/// the smallest of `TRIES` counts.
fn allocations<S, B>(mut svc: S, route_name: bool) -> usize
where
    S: Service<Req, Response = Response<B>>,
    B: Body,
{
    for req in requests(WARM_UP, route_name) {
        drive(&mut svc, req);
    }
    (0..TRIES)
        .map(|_| {
            let batch = requests(REQUESTS, route_name);
            let region = Region::new(GLOBAL);
            for req in batch {
                drive(&mut svc, req);
            }
            let change = region.change();
            change.allocations + change.reallocations
        })
        .min()
        .expect("at least one try")
}

/// Counts `bare` and `layered` (built after the no-op recorder is set), and compares.
fn assert_same<S1, B1, S2, B2>(case: &str, route_name: bool, bare: S1, layered: impl FnOnce() -> S2)
where
    S1: Service<Req, Response = Response<B1>>,
    B1: Body,
    S2: Service<Req, Response = Response<B2>>,
    B2: Body,
{
    assert_same_with(&metrics::NoopRecorder, case, route_name, bare, layered);
}

/// Counts `bare` and `layered` (built after `recorder` is set as the thread's recorder), and
/// compares.
fn assert_same_with<S1, B1, S2, B2>(
    recorder: &dyn metrics::Recorder,
    case: &str,
    route_name: bool,
    bare: S1,
    layered: impl FnOnce() -> S2,
) where
    S1: Service<Req, Response = Response<B1>>,
    B1: Body,
    S2: Service<Req, Response = Response<B2>>,
    B2: Body,
{
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let _local = metrics::set_default_local_recorder(recorder);
    let bare = allocations(bare, route_name);
    let layered = allocations(layered(), route_name);
    assert_eq!(
        layered,
        bare,
        "{case}: {REQUESTS} requests allocated {layered} times through VitalsLayer, {bare} times \
         without it ({} per request by the layer)",
        (layered as f64 - bare as f64) / REQUESTS as f64
    );
}

#[test]
fn single_frame_unmatched_allocates_nothing_more() {
    assert_same("single frame, no route", false, plain(SINGLE), || {
        VitalsLayer::new().layer(plain(SINGLE))
    });
}

#[test]
fn streaming_unmatched_allocates_nothing_more() {
    assert_same("streaming, no route", false, plain(STREAMING), || {
        VitalsLayer::new().layer(plain(STREAMING))
    });
}

#[test]
fn single_frame_with_route_name_allocates_nothing_more() {
    assert_same("single frame, RouteName", true, plain(SINGLE), || {
        VitalsLayer::new().layer(plain(SINGLE))
    });
}

/// A clock that stands still, for the cases with a real recorder: every request then takes the
/// same time and lands in the same buckets. A recorder allocates a bucket line, or an exemplar
/// slot, the first time a sample lands in it; with the system clock a request that happens to
/// be slower after the warm-up (the machine is shared) touches a new bucket and allocates once,
/// which is memory per series, not per request. The no-op cases keep the system clock.
fn still() -> tower_vitals::Clock {
    tower_vitals::Clock::mock().0
}

/// The crate's Prometheus recorder installed (not the no-op): recording, its histograms' native
/// and classic buckets and its counters allocate nothing per request either.
#[test]
fn with_the_crate_recorder_allocates_nothing_more() {
    let recorder = tower_vitals::prometheus::builder().build_recorder();
    assert_same_with(&recorder, "single frame, RouteName, recorder", true, plain(SINGLE), || {
        VitalsLayer::builder().clock(still()).build().layer(plain(SINGLE))
    });
    assert_same_with(&recorder, "streaming, RouteName, recorder", true, plain(STREAMING), || {
        VitalsLayer::builder().clock(still()).build().layer(plain(STREAMING))
    });
    // The samples did land in the recorder (this is not a no-op by mistake).
    let text = recorder.handle().render();
    assert!(text.contains("_request_duration_seconds_count"), "{text}");
}

/// Exemplars on, with the crate's recorder keeping them: the trace id is parsed, handed over
/// and stored in the bucket's slot without an allocation per request (the slots of a series
/// are allocated with its first exemplar, during the warm-up).
#[test]
fn exemplars_allocate_nothing_more() {
    let recorder = tower_vitals::prometheus::builder().build_recorder();
    assert_same_with(&recorder, "single frame, exemplars, recorder", true, plain(SINGLE), || {
        VitalsLayer::builder().exemplars().clock(still()).build().layer(plain(SINGLE))
    });
    assert_same_with(&recorder, "streaming, exemplars, recorder", true, plain(STREAMING), || {
        VitalsLayer::builder().exemplars().clock(still()).build().layer(plain(STREAMING))
    });
    let text = recorder.handle().render_openmetrics();
    assert!(text.contains("# {trace_id=\"4bf92f3577b34da6a3ce929d0e0e4736\"}"), "{text}");
}

/// Exemplars on, into the live recorder: each traced request is offered to its stripe's
/// slowest (a fixed array) without an allocation per request.
#[cfg(feature = "live")]
#[test]
fn exemplars_into_the_live_recorder_allocate_nothing_more() {
    let live = tower_vitals::live::Live::new();
    let recorder = live.recorder();
    assert_same_with(&recorder, "single frame, exemplars, live", true, plain(SINGLE), || {
        VitalsLayer::builder().exemplars().clock(still()).build().layer(plain(SINGLE))
    });
    assert_same_with(&recorder, "streaming, exemplars, live", true, plain(STREAMING), || {
        VitalsLayer::builder().exemplars().clock(still()).build().layer(plain(STREAMING))
    });
    // The trace ids did land in the slowest lists (this is not a no-op by mistake). Read under
    // `SERIAL`: a snapshot publishes the gauges of every live layer, another test's too.
    let json = {
        let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        live.json()
    };
    assert!(json.contains("\"trace_id\":\"4bf92f3577b34da6a3ce929d0e0e4736\""), "{json}");
}

#[test]
fn streaming_with_route_name_allocates_nothing_more() {
    assert_same("streaming, RouteName", true, plain(STREAMING), || {
        VitalsLayer::new().layer(plain(STREAMING))
    });
}

/// A layer that only wraps the response body in a new type, doing nothing else: the baseline
/// inside axum, because axum boxes every response body whose type is not its own `Body` (one
/// allocation per request for any body-wrapping middleware, tower-http's included).
#[derive(Clone)]
struct PassBodyLayer;

impl<S> Layer<S> for PassBodyLayer {
    type Service = tower::util::MapResponse<S, fn(Response<axum::body::Body>) -> Response<Pass>>;
    fn layer(&self, inner: S) -> Self::Service {
        tower::util::MapResponse::new(inner, |res: Response<axum::body::Body>| res.map(Pass))
    }
}

struct Pass(axum::body::Body);

impl Body for Pass {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.0).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.0.size_hint()
    }
}

#[test]
fn axum_matched_path_single_frame_allocates_nothing_more() {
    assert_same(
        "axum MatchedPath, single frame",
        false,
        app(router(SINGLE).layer(PassBodyLayer)),
        || app(router(SINGLE).layer(VitalsLayer::new())),
    );
}

#[test]
fn axum_matched_path_streaming_allocates_nothing_more() {
    assert_same(
        "axum MatchedPath, streaming",
        false,
        app(router(STREAMING).layer(PassBodyLayer)),
        || app(router(STREAMING).layer(VitalsLayer::new())),
    );
}

#[test]
fn axum_route_name_overrides_matched_path_without_allocating() {
    assert_same(
        "axum RouteName + MatchedPath",
        true,
        app(router(SINGLE).layer(PassBodyLayer)),
        || app(router(SINGLE).layer(VitalsLayer::new())),
    );
}

// ---------------------------------------------------------------- skip rules and labels

fn api_version(req: &http::request::Parts) -> Option<&str> {
    req.headers.get("x-api-version")?.to_str().ok()
}

/// The plain service, whose responses carry handler labels (`Label`, or `Labels` for several):
/// its own allocations (the extension map) are the same with and without the layer.
fn labelled(
    shape: Shape,
    several: bool,
) -> impl Service<Req, Response = Response<Chunks>, Error = Infallible> + Clone {
    tower::service_fn(move |_req: Req| {
        let mut res = Response::new(Chunks { left: shape.frames, exact: shape.exact });
        if several {
            res.extensions_mut()
                .insert(Labels::from([Label::new("cache", "hit"), Label::new("path", "fast")]));
        } else {
            res.extensions_mut().insert(Label::new("cache", "hit"));
        }
        std::future::ready(Ok::<_, Infallible>(res))
    })
}

#[test]
fn request_label_allocates_nothing_more() {
    assert_same("single frame, label from the request", false, plain(SINGLE), || {
        VitalsLayer::builder()
            .label_from_request("api.version", api_version)
            .expect("key")
            .build()
            .layer(plain(SINGLE))
    });
}

#[test]
fn handler_label_allocates_nothing_more() {
    assert_same("streaming, label from the handler", true, labelled(STREAMING, false), || {
        VitalsLayer::builder()
            .label("cache")
            .expect("key")
            .build()
            .layer(labelled(STREAMING, false))
    });
}

#[test]
fn four_labels_from_both_sides_allocate_nothing_more() {
    assert_same("single frame, four labels", true, labelled(SINGLE, true), || {
        VitalsLayer::builder()
            .label_from_request("api.version", api_version)
            .and_then(|l| l.label_from_request("client", |_: &http::request::Parts| Some("cli")))
            .and_then(|l| l.label("cache"))
            .and_then(|l| l.label("path"))
            .expect("four keys")
            .build()
            .layer(labelled(SINGLE, true))
    });
}

#[test]
fn skipped_requests_allocate_nothing_more() {
    assert_same("single frame, skipped by skip_if", false, plain(SINGLE), || {
        VitalsLayer::builder().skip_if(|_: &http::request::Parts| true).build().layer(plain(SINGLE))
    });
    assert_same("streaming, skipped by skip_routes", true, plain(STREAMING), || {
        VitalsLayer::builder().skip_routes(["/users/{id}"]).build().layer(plain(STREAMING))
    });
}

#[test]
fn axum_handler_label_allocates_nothing_more() {
    let router = |shape: Shape| {
        Router::new().route(
            "/users/{id}",
            get(move || async move {
                let mut res = axum::response::Response::new(axum::body::Body::new(Chunks {
                    left: shape.frames,
                    exact: shape.exact,
                }));
                res.extensions_mut().insert(Label::new("cache", "hit"));
                res
            }),
        )
    };
    assert_same(
        "axum, labels from the request and the handler",
        false,
        app(router(SINGLE).layer(PassBodyLayer)),
        || {
            let layer = VitalsLayer::builder()
                .label_from_request("api.version", api_version)
                .and_then(|l| l.label("cache"))
                .expect("keys")
                .build();
            app(router(SINGLE).layer(layer))
        },
    );
}
