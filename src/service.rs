//! [`Vitals`]: the service; stamps `t0` and resolves the route and method of each request.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower_service::Service;

use crate::body::ResponseBody;
use crate::finish::Record;
use crate::future::ResponseFuture;
use crate::labels;
use crate::request_body::{RequestBodyMode, RequestContext};
use crate::routes::{self, RouteName};
use crate::shared::Shared;

/// The service made by [`VitalsLayer`](crate::VitalsLayer): measures each request of `S`.
///
/// `M` says whether request bodies are measured ([`IgnoreRequestBody`](crate::IgnoreRequestBody)
/// by default). Errors of `S` pass through unchanged.
pub struct Vitals<S, M = crate::request_body::IgnoreRequestBody> {
    inner: S,
    shared: Arc<Shared>,
    mode: PhantomData<fn() -> M>,
}

impl<S, M> Vitals<S, M> {
    pub(crate) fn new(inner: S, shared: Arc<Shared>) -> Self {
        Vitals { inner, shared, mode: PhantomData }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, M> Clone for Vitals<S, M> {
    fn clone(&self) -> Self {
        Vitals { inner: self.inner.clone(), shared: Arc::clone(&self.shared), mode: PhantomData }
    }
}

impl<S: fmt::Debug, M> fmt::Debug for Vitals<S, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vitals").field("inner", &self.inner).finish_non_exhaustive()
    }
}

impl<S, M, ReqBody, ResBody> Service<Request<ReqBody>> for Vitals<S, M>
where
    M: RequestBodyMode<ReqBody>,
    S: Service<Request<M::Body>, Response = Response<ResBody>>,
    ResBody: http_body::Body,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let t0 = self.shared.config.clock.raw();
        let method = labels::method_index(req.method());
        let route = route_of(&self.shared, &req);
        let record = Record::start(Arc::clone(&self.shared), t0, route, method);
        let ctx = RequestContext { shared: &self.shared, route, method };
        let req = M::wrap(req, ctx);
        ResponseFuture::new(self.inner.call(req), record)
    }
}

/// The route id of a request: its [`RouteName`], else axum's `MatchedPath`, else (with
/// `grpc_routes`) the gRPC method path, else `unmatched`.
pub(crate) fn route_of<B>(shared: &Shared, req: &Request<B>) -> u32 {
    let extensions = req.extensions();
    if let Some(name) = extensions.get::<RouteName>() {
        return shared.routes.intern(name.as_str());
    }
    #[cfg(feature = "axum")]
    if let Some(path) = extensions.get::<axum::extract::MatchedPath>() {
        return shared.routes.intern(path.as_str());
    }
    if shared.config.grpc_routes {
        if let Some(path) = crate::grpc::method_path(req) {
            return shared.routes.intern(path);
        }
    }
    routes::UNMATCHED_ID
}
