//! [`ResponseFuture`]: the application phase, from `call` to the response head.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::Response;
use pin_project_lite::pin_project;

use crate::body::ResponseBody;
use crate::grpc;
use crate::labels::Outcome;
use crate::record::{Polling, Record};

pin_project! {
    /// The future of [`Vitals`](crate::Vitals): the inner future, timed until the head.
    ///
    /// When it resolves to a response, `application_time` ends and the measurement moves into
    /// the [`ResponseBody`]. When it resolves to the inner service's error, the request is
    /// recorded with `error.type = service_error` and the error is returned unchanged. When it is
    /// dropped before either, the request is recorded as `cancelled` (or `panic`, if the inner
    /// future panicked).
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        record: Option<Record>,
    }
}

impl<F> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").field("measured", &self.record.is_some()).finish()
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(inner: F, record: Record) -> Self {
        ResponseFuture { inner, record: Some(record) }
    }

    /// The future of a request left out by a skip rule: passed through, measuring nothing.
    pub(crate) fn unmeasured(inner: F) -> Self {
        ResponseFuture { inner, record: None }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: http_body::Body,
{
    type Output = Result<Response<ResponseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if this.record.is_none() {
            // Unmeasured, or polled after completion: pass through, measuring nothing more.
            let result = ready!(this.inner.poll(cx));
            return Poll::Ready(result.map(|res| res.map(ResponseBody::unmeasured)));
        }
        // The record stays in place while the inner future runs (no move per poll); if that
        // panics, the guard finishes it as `panic`.
        let mut guard = Polling::start(this.record);
        let result = this.inner.poll(cx);
        let (Some(record), Poll::Ready(result)) = (guard.done(), result) else {
            return Poll::Pending;
        };
        let now = record.now();
        match result {
            Ok(res) => {
                record.head(now, res.status().as_u16());
                if !res.extensions().is_empty() && !record.response_extensions(res.extensions()) {
                    guard.discard();
                    return Poll::Ready(Ok(res.map(ResponseBody::unmeasured)));
                }
                if let Some(code) = grpc::status(res.headers()) {
                    record.set_grpc_status(code);
                }
                match guard.0.take() {
                    Some(record) => {
                        Poll::Ready(Ok(res.map(|body| ResponseBody::new(body, record))))
                    }
                    None => Poll::Ready(Ok(res.map(ResponseBody::unmeasured))),
                }
            }
            Err(err) => {
                record.head(now, 0);
                guard.end(Outcome::ServiceError);
                Poll::Ready(Err(err))
            }
        }
    }
}
