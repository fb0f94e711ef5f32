//! [`ResponseBody`]: the output phase: frames, bytes, output time and end detection.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Buf;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::finish::Record;
use crate::labels::Outcome;

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
            record.finish(Outcome::Complete);
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
        let Some(mut record) = this.record.take() else {
            return this.inner.poll_frame(cx);
        };
        record.polled();
        // As in the future: a panic in the inner body drops `record` from this frame, in poll.
        record.set_in_poll(true);
        let polled = this.inner.as_mut().poll_frame(cx);
        record.set_in_poll(false);
        match &polled {
            Poll::Pending => *this.record = Some(record),
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    record.data_frame(data.remaining());
                } else if let Some(trailers) = frame.trailers_ref() {
                    if let Some(code) = grpc_status(trailers) {
                        record.set_grpc_status(code);
                    }
                }
                if this.inner.is_end_stream() {
                    record.finish(Outcome::Complete);
                } else {
                    record.frame_out();
                    *this.record = Some(record);
                }
            }
            Poll::Ready(Some(Err(_))) => record.finish(Outcome::BodyError),
            Poll::Ready(None) => record.finish(Outcome::Complete),
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

/// The `grpc-status` of a header or trailer map, if it has a numeric one.
pub(crate) fn grpc_status(headers: &HeaderMap) -> Option<u8> {
    let value = headers.get("grpc-status")?.as_bytes();
    match value {
        [d] if d.is_ascii_digit() => Some(d - b'0'),
        [a, b] if a.is_ascii_digit() && b.is_ascii_digit() => Some((a - b'0') * 10 + (b - b'0')),
        _ => Some(u8::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_status_parses_codes() {
        let mut h = HeaderMap::new();
        assert_eq!(grpc_status(&h), None);
        h.insert("grpc-status", "0".parse().expect("header"));
        assert_eq!(grpc_status(&h), Some(0));
        h.insert("grpc-status", "16".parse().expect("header"));
        assert_eq!(grpc_status(&h), Some(16));
        h.insert("grpc-status", "x".parse().expect("header"));
        assert_eq!(grpc_status(&h), Some(u8::MAX));
    }
}
