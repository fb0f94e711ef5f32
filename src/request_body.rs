//! [`RequestBody`]: the opt-in input phase: frames and bytes read, time spent waiting on them.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Buf;
use http::Request;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::labels::InputState;
use crate::shared::{Lease, Leases};

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
    pub(crate) shared: &'a Leases,
    pub(crate) route: u32,
    pub(crate) method: u8,
    /// False for a request left out by a skip rule: its body passes through unmeasured.
    pub(crate) measured: bool,
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
/// (see [`VitalsLayerBuilder::measure_request_body`](crate::VitalsLayerBuilder::measure_request_body)).
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

impl<B: Body> RequestBodyMode<B> for MeasureRequestBody {
    type Body = RequestBody<B>;

    fn wrap(req: Request<B>, ctx: RequestContext<'_>) -> Request<RequestBody<B>> {
        req.map(|inner| {
            let input = InputRecord {
                shared: ctx.shared.lease(),
                route: ctx.route,
                method: ctx.method,
                blocks: 0,
                bytes: 0,
                waited: 0,
                waiting_since: None,
                polled: false,
                // Nothing to read (GET, an empty body): never reading it is reading it all.
                empty: inner.is_end_stream(),
                // A skipped request's body is born finished: nothing is ever recorded.
                finished: !ctx.measured,
            };
            RequestBody { inner, input }
        })
    }
}

pin_project! {
    /// A request body measured on its way to the service (opt-in, see
    /// [`VitalsLayerBuilder::measure_request_body`](crate::VitalsLayerBuilder::measure_request_body)).
    ///
    /// - `input_blocks` and `input_bytes`: the data frames the service actually read, and their
    ///   bytes (not `Content-Length`).
    /// - `input_time`: the time the service waited on the client: from a poll that found no frame
    ///   ready (`Pending`) to the frame, end or error that followed, summed. Frames that were
    ///   already buffered add nothing, so a fast client shows ~0 and a slow upload its gaps.
    /// - `http.request.body.state`, with `http.route` and `http.request.method`: `complete` (read
    ///   to its end, or nothing to read), `partial` (read in part, then dropped), `unread` (dropped
    ///   without a single poll: the handler never read the body; blocks and bytes are 0) or
    ///   `error` (the body failed: client gone mid-upload, bad chunk, size limit).
    ///
    /// Recorded once per request: at the end of the body (`Ready(None)`, or a data frame after
    /// which the body says `is_end_stream`, as with an exact `Content-Length`), at an error frame,
    /// or when the body is dropped. A body the service keeps after responding is recorded when it
    /// drops it. Frames, errors, `size_hint` and `is_end_stream` pass through unchanged.
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
    shared: Lease,
    route: u32,
    method: u8,
    blocks: u64,
    bytes: u64,
    /// Raw clock ticks spent waiting on the client.
    waited: u64,
    /// Raw reading of the poll that returned `Pending`, until a frame or the end arrives.
    waiting_since: Option<u64>,
    polled: bool,
    empty: bool,
    finished: bool,
}

impl InputRecord {
    fn finish(&mut self, state: InputState) {
        if self.finished {
            return;
        }
        self.finished = true;
        let shared = &*self.shared;
        let clock = &shared.config.clock;
        if let Some(since) = self.waiting_since.take() {
            self.waited += clock.raw().saturating_sub(since);
        }
        let handles = shared.handles.input(self.route, self.method, state, &shared.routes);
        handles.blocks.record(self.blocks as f64);
        handles.bytes.record(self.bytes as f64);
        handles.time.record(clock.delta_as_nanos(0, self.waited) as f64 * 1e-9);
    }
}

impl Drop for InputRecord {
    fn drop(&mut self) {
        let state = if self.empty {
            InputState::Complete
        } else if self.polled {
            InputState::Partial
        } else {
            InputState::Unread
        };
        self.finish(state);
    }
}

impl<B: Body> Body for RequestBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        let input = this.input;
        if input.finished {
            return this.inner.poll_frame(cx);
        }
        input.polled = true;
        let polled = this.inner.as_mut().poll_frame(cx);
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
                        if this.inner.is_end_stream() {
                            input.finish(InputState::Complete);
                        }
                    }
                    Some(Err(_)) => input.finish(InputState::Error),
                    None => input.finish(InputState::Complete),
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
