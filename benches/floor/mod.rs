//! The "floor": a hand-written layer that records the same metric set as `VitalsLayer` in the
//! cheapest way this design allows, to measure the layer against.
//!
//! - `quanta` raw clock reads: one at call, one at the head, two per frame, one at the end;
//! - integer adds per frame (blocks, bytes, held time);
//! - handles resolved ONCE, when the layer is built, for the one label set the bench sends
//!   (so no route lookup, no handle-cache lookup, no outcome logic, no drop handling);
//! - `active_requests` kept in an atomic and published with `Gauge::set` at call and at the end;
//! - at the end: one counter increment and five histogram recordings.
//!
//! It is a bench fixture, not a layer to use: it records nothing for an aborted, failed or
//! cancelled request.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use metrics::{Counter, Gauge, Histogram};
use tower::{Layer, Service};

struct Handles {
    clock: quanta::Clock,
    in_flight: AtomicI64,
    active: Gauge,
    requests: Counter,
    duration: Histogram,
    application_time: Histogram,
    output_time: Histogram,
    output_blocks: Histogram,
    output_bytes: Histogram,
    /// A sixth histogram (what a body-production-time histogram would cost), if asked for.
    extra: Option<Histogram>,
}

/// The floor layer. Build it AFTER installing the recorder it should record to.
#[derive(Clone)]
pub struct FloorLayer(Arc<Handles>);

impl FloorLayer {
    /// Resolves the handles of `route`, `GET`, `200` through the current recorder.
    pub fn new(route: &'static str) -> Self {
        let labels = [
            ("http.route", route),
            ("http.request.method", "GET"),
            ("http.response.status_code", "200"),
        ];
        FloorLayer(Arc::new(Handles {
            clock: quanta::Clock::new(),
            in_flight: AtomicI64::new(0),
            active: metrics::gauge!("http.server.active_requests", "http.request.method" => "GET"),
            requests: metrics::counter!("http.server.requests", &labels),
            duration: metrics::histogram!("http.server.request.duration", &labels),
            application_time: metrics::histogram!("http.server.application_time", &labels),
            output_time: metrics::histogram!("http.server.output_time", &labels),
            output_blocks: metrics::histogram!("http.server.output_blocks", &labels),
            output_bytes: metrics::histogram!("http.server.output_bytes", &labels),
            extra: None,
        }))
    }

    /// The floor plus one more histogram recorded per request (`http.server.body_time`, in
    /// seconds): the cost a histogram of body production time would add. (Used by
    /// benches/overhead.rs only, not by examples/bench_server.rs.)
    #[allow(dead_code)]
    pub fn with_sixth_histogram(route: &'static str) -> Self {
        let labels = [
            ("http.route", route),
            ("http.request.method", "GET"),
            ("http.response.status_code", "200"),
        ];
        let mut layer = FloorLayer::new(route);
        if let Some(h) = Arc::get_mut(&mut layer.0) {
            h.extra = Some(metrics::histogram!("http.server.body_time", &labels));
        }
        layer
    }
}

impl<S> Layer<S> for FloorLayer {
    type Service = Floor<S>;
    fn layer(&self, inner: S) -> Floor<S> {
        Floor { inner, h: Arc::clone(&self.0) }
    }
}

#[derive(Clone)]
pub struct Floor<S> {
    inner: S,
    h: Arc<Handles>,
}

impl<S, R, B> Service<Request<R>> for Floor<S>
where
    S: Service<Request<R>, Response = Response<B>>,
    B: Body,
{
    type Response = Response<FloorBody<B>>;
    type Error = S::Error;
    type Future = FloorFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<R>) -> Self::Future {
        let t0 = self.h.clock.raw();
        let n = self.h.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        self.h.active.set(n as f64);
        FloorFuture { inner: self.inner.call(req), h: Some(Arc::clone(&self.h)), t0 }
    }
}

pin_project_lite::pin_project! {
    pub struct FloorFuture<F> {
        #[pin]
        inner: F,
        h: Option<Arc<Handles>>,
        t0: u64,
    }
}

impl<F, B, E> Future for FloorFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<FloorBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let res = std::task::ready!(this.inner.poll(cx))?;
        let h = this.h.take().expect("polled once after ready");
        let t1 = h.clock.raw();
        let t0 = *this.t0;
        Poll::Ready(Ok(res.map(|inner| FloorBody {
            inner,
            h: Some(h),
            t0,
            t1,
            blocks: 0,
            bytes: 0,
            held: 0,
            out_since: 0,
        })))
    }
}

pin_project_lite::pin_project! {
    pub struct FloorBody<B> {
        #[pin]
        inner: B,
        h: Option<Arc<Handles>>,
        t0: u64,
        t1: u64,
        blocks: u64,
        bytes: u64,
        held: u64,
        out_since: u64,
    }
}

impl<B: Body> Body for FloorBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        use bytes::Buf;
        let mut this = self.project();
        let Some(h) = this.h.as_ref() else { return this.inner.poll_frame(cx) };
        if *this.out_since != 0 {
            *this.held += h.clock.raw().wrapping_sub(*this.out_since);
            *this.out_since = 0;
        }
        let polled = this.inner.as_mut().poll_frame(cx);
        let end = match &polled {
            Poll::Pending => return polled,
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    *this.blocks += 1;
                    *this.bytes += data.remaining() as u64;
                }
                this.inner.is_end_stream()
            }
            Poll::Ready(_) => true,
        };
        let now = h.clock.raw();
        if !end {
            *this.out_since = now;
            return polled;
        }
        let secs = |raw: u64| h.clock.delta_as_nanos(0, raw) as f64 * 1e-9;
        h.requests.increment(1);
        h.duration.record(secs(now.wrapping_sub(*this.t0)));
        h.application_time.record(secs(this.t1.wrapping_sub(*this.t0)));
        h.output_time.record(secs(*this.held));
        h.output_blocks.record(*this.blocks as f64);
        h.output_bytes.record(*this.bytes as f64);
        if let Some(extra) = &h.extra {
            extra.record(secs(now.wrapping_sub(*this.t1).saturating_sub(*this.held)));
        }
        let n = h.in_flight.fetch_sub(1, Ordering::Relaxed) - 1;
        h.active.set(n as f64);
        *this.h = None;
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
