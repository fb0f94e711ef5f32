//! [`ResponseBody`]: the output phase: frames, bytes, output time and end detection.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Buf;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::grpc;
use crate::labels::Outcome;
use crate::record::{Polling, Record};

pin_project! {
    /// The response body of [`Vitals`](crate::Vitals): the inner body, measured frame by frame.
    ///
    /// Each data frame adds one block and its bytes. The time between handing a frame out and
    /// being polled for the next one is *output time*: the server holding the frame to write it
    /// (a slow client shows up here). Trailers are read (for `grpc-status`), not counted.
    ///
    /// The request is finished, once, at the first of: the end of the stream (`Ready(None)`, or
    /// a data frame after which the inner body reports `is_end_stream`); an error frame
    /// (`error.type = body_error`); or the drop of this body before its end (`aborted`; `panic`
    /// if the inner body panicked while polled; a normal end for HEAD, 1xx, 204 and 304
    /// responses and for a body that had nothing left to send).
    ///
    /// Blocks and bytes are those handed to the server: for a request that ends `aborted`
    /// (client gone mid-download) they include frames the server took but the client may never
    /// have received (kernel buffers, a proxy), so they are an upper bound on what was delivered.
    ///
    /// Frames, errors, `size_hint` and `is_end_stream` pass through unchanged.
    pub struct ResponseBody<B> {
        #[pin]
        inner: B,
        record: Option<Record>,
    }
}

impl<B: Body> ResponseBody<B> {
    /// Starts the output phase. A body with nothing to send finishes the request at once.
    pub(crate) fn new(inner: B, record: Record) -> Self {
        if inner.is_end_stream() {
            record.end(Outcome::Complete);
            return ResponseBody { inner, record: None };
        }
        ResponseBody { inner, record: Some(record) }
    }
}

impl<B: std::fmt::Debug> std::fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody")
            .field("inner", &self.inner)
            .field("measured", &self.record.is_some())
            .finish()
    }
}

impl<B> ResponseBody<B> {
    /// A body that is passed through without measurement (a future polled after completion).
    pub(crate) fn unmeasured(inner: B) -> Self {
        ResponseBody { inner, record: None }
    }

    /// The wrapped body.
    pub fn get_ref(&self) -> &B {
        &self.inner
    }
}

impl<B: Body> Body for ResponseBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        let Some(record) = this.record.as_mut() else {
            return this.inner.poll_frame(cx);
        };
        record.polled();
        // The record stays in place (no move per frame); if the inner body panics, the guard
        // finishes it as `panic`.
        let mut guard = Polling::start(this.record);
        let polled = this.inner.as_mut().poll_frame(cx);
        let Some(record) = guard.done() else {
            return polled;
        };
        match &polled {
            Poll::Pending => {}
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    record.data_frame(data.remaining());
                } else if let Some(trailers) = frame.trailers_ref() {
                    if let Some(code) = grpc::status(trailers) {
                        record.set_grpc_status(code);
                    }
                }
                if this.inner.is_end_stream() {
                    guard.end(Outcome::Complete);
                } else {
                    record.frame_out();
                }
            }
            Poll::Ready(Some(Err(_))) => guard.end(Outcome::BodyError),
            Poll::Ready(None) => guard.end(Outcome::Complete),
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
