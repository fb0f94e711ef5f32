//! [`RequestBody`]: the opt-in input phase: frames and bytes read, time spent waiting on them.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Buf;
use http::Request;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::layer::Shared;

/// Whether [`Vitals`](crate::Vitals) measures request bodies; chosen on the layer, sealed.
pub trait RequestBodyMode<B>: sealed::Sealed {
    /// The request body type the inner service receives.
    type Body;

    #[doc(hidden)]
    fn wrap(req: Request<B>, ctx: RequestContext<'_>) -> Request<Self::Body>;
}

/// What a request body needs to know about its request (internal).
#[doc(hidden)]
pub struct RequestContext<'a> {
    pub(crate) shared: &'a Arc<Shared>,
    pub(crate) route: u32,
    pub(crate) method: u8,
}

impl fmt::Debug for RequestContext<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestContext").finish_non_exhaustive()
    }
}

/// Request bodies pass to the inner service untouched (the default).
#[derive(Debug, Clone, Copy, Default)]
pub struct IgnoreRequestBody;

/// Request bodies are wrapped in [`RequestBody`] and measured
/// (see [`VitalsLayer::measure_request_body`](crate::VitalsLayer::measure_request_body)).
#[derive(Debug, Clone, Copy, Default)]
pub struct MeasureRequestBody;

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::IgnoreRequestBody {}
    impl Sealed for super::MeasureRequestBody {}
}

impl<B> RequestBodyMode<B> for IgnoreRequestBody {
    type Body = B;

    fn wrap(req: Request<B>, _: RequestContext<'_>) -> Request<B> {
        req
    }
}

impl<B> RequestBodyMode<B> for MeasureRequestBody {
    type Body = RequestBody<B>;

    fn wrap(req: Request<B>, ctx: RequestContext<'_>) -> Request<RequestBody<B>> {
        let input = InputRecord {
            shared: Arc::clone(ctx.shared),
            route: ctx.route,
            method: ctx.method,
            blocks: 0,
            bytes: 0,
            waited: 0,
            waiting_since: None,
            finished: false,
        };
        req.map(|inner| RequestBody { inner, input })
    }
}

pin_project! {
    /// A request body measured on its way to the service: `input_blocks` and `input_bytes` count
    /// the data frames the service actually read (not `Content-Length`), and `input_time` the time
    /// between a poll that found no frame ready (`Pending`) and the frame that followed: the
    /// service waiting on the client. Recorded once, tagged with route and method, when the body
    /// ends, errors, or is dropped (a body never read records 0 blocks and 0 bytes).
    pub struct RequestBody<B> {
        #[pin]
        inner: B,
        input: InputRecord,
    }
}

impl<B> RequestBody<B> {
    /// The wrapped body.
    pub fn get_ref(&self) -> &B {
        &self.inner
    }
}

impl<B: fmt::Debug> fmt::Debug for RequestBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestBody").field("inner", &self.inner).finish_non_exhaustive()
    }
}

struct InputRecord {
    shared: Arc<Shared>,
    route: u32,
    method: u8,
    blocks: u64,
    bytes: u64,
    waited: u64,
    waiting_since: Option<u64>,
    finished: bool,
}

impl InputRecord {
    fn finish(&mut self) {
        if self.finished {
            return;
        }
        self.finished = true;
        let shared = &*self.shared;
        let clock = &shared.config.clock;
        if let Some(since) = self.waiting_since.take() {
            self.waited += clock.raw().saturating_sub(since);
        }
        let handles = shared.handles.input(self.route, self.method, &shared.routes);
        handles.blocks.record(self.blocks as f64);
        handles.bytes.record(self.bytes as f64);
        handles.time.record(clock.delta_as_nanos(0, self.waited) as f64 * 1e-9);
    }
}

impl Drop for InputRecord {
    fn drop(&mut self) {
        self.finish();
    }
}

impl<B: Body> Body for RequestBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let input = this.input;
        if input.finished {
            return this.inner.poll_frame(cx);
        }
        let polled = this.inner.poll_frame(cx);
        match &polled {
            Poll::Pending => {
                if input.waiting_since.is_none() {
                    input.waiting_since = Some(input.shared.config.clock.raw());
                }
            }
            Poll::Ready(ready) => {
                if let Some(since) = input.waiting_since.take() {
                    input.waited += input.shared.config.clock.raw().saturating_sub(since);
                }
                match ready {
                    Some(Ok(frame)) => {
                        if let Some(data) = frame.data_ref() {
                            input.blocks += 1;
                            input.bytes += data.remaining() as u64;
                        }
                    }
                    Some(Err(_)) | None => input.finish(),
                }
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
