//! Pieces shared by `benches/overhead.rs` and `examples/bench_server.rs`: the response body the
//! trivial services send, and the Prometheus recorder configured with DESIGN.md's buckets.
#![allow(dead_code)]

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use tower::Service;

/// Seconds buckets: the crate's default (`tower_vitals::prometheus::SECONDS_BUCKETS`).
pub const SECONDS: &[f64] = tower_vitals::prometheus::SECONDS_BUCKETS;
/// Byte buckets: the crate's default.
pub const BYTES: &[f64] = tower_vitals::prometheus::BYTES_BUCKETS;
/// Frame buckets: the crate's default.
pub const FRAMES: &[f64] = tower_vitals::prometheus::FRAMES_BUCKETS;

/// A Prometheus exporter builder with histogram buckets (never summaries) for the layer's
/// metrics, the floor's (same names) and axum-prometheus's duration histogram.
pub fn prometheus_builder() -> PrometheusBuilder {
    prometheus_builder_with(SECONDS)
}

/// [`prometheus_builder`] with other seconds buckets (OpenTelemetry's, to compare).
pub fn prometheus_builder_with(seconds: &[f64]) -> PrometheusBuilder {
    let set = |b: PrometheusBuilder, m: Matcher, v: &[f64]| {
        b.set_buckets_for_metric(m, v).expect("non-empty buckets")
    };
    let b = PrometheusBuilder::new();
    let b = set(b, Matcher::Suffix("duration".into()), seconds);
    let b = set(b, Matcher::Suffix("_time".into()), seconds);
    let b = set(b, Matcher::Suffix("_bytes".into()), BYTES);
    let b = set(b, Matcher::Suffix("_blocks".into()), FRAMES);
    set(b, Matcher::Full(axum_prometheus::AXUM_HTTP_REQUESTS_DURATION_SECONDS.into()), seconds)
}

/// The shape of a response body: `frames` data frames of `size` bytes each.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub frames: usize,
    pub size: usize,
}

/// 1 frame of 12 bytes (a small JSON answer).
pub const SMALL: Shape = Shape { frames: 1, size: 12 };
/// 1000 frames of 128 bytes (a streamed body).
pub const STREAM: Shape = Shape { frames: 1000, size: 128 };

static DATA: [u8; 128] = [b'x'; 128];

/// A body of `frames` static frames: no allocation per frame, `is_end_stream` exact (as a body
/// with a known length: hyper stops polling after the last frame).
#[derive(Debug)]
pub struct Frames {
    left: usize,
    chunk: Bytes,
}

impl Frames {
    pub fn new(shape: Shape) -> Self {
        Frames { left: shape.frames, chunk: Bytes::from_static(&DATA[..shape.size.min(128)]) }
    }
}

impl Body for Frames {
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
        Poll::Ready(Some(Ok(Frame::data(self.chunk.clone()))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact((self.left * self.chunk.len()) as u64)
    }
}

// ---------------------------------------------------------------- driving one request

/// One request as hyper would run it: `poll_ready`, `call`, poll the future to the head, then
/// poll frames until the body says it ended. Every future here is ready at once. Never inlined:
/// scripts/bench-callgrind.sh counts the instructions executed inside it
/// (`overhead::common::drive`). Shared by `overhead` and `threads`.
#[inline(never)]
pub fn drive<S, R, B>(svc: &mut S, req: Request<R>)
where
    S: Service<Request<R>, Response = Response<B>>,
    B: Body,
{
    let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());
    assert!(matches!(svc.poll_ready(&mut cx), Poll::Ready(Ok(()))), "service not ready");
    let mut fut = std::pin::pin!(svc.call(req));
    let res = loop {
        if let Poll::Ready(res) = fut.as_mut().poll(&mut cx) {
            break res;
        }
    };
    let Ok(res) = res else { panic!("service error") };
    let mut body = std::pin::pin!(res.into_body());
    while !body.is_end_stream() {
        match body.as_mut().poll_frame(&mut cx) {
            Poll::Ready(Some(Ok(frame))) => {
                std::hint::black_box(frame);
            }
            Poll::Ready(None) => break,
            Poll::Ready(Some(Err(_))) => panic!("body error"),
            Poll::Pending => {}
        }
    }
}
