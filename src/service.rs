//! [`Vitals`]: the service; stamps `t0` and resolves the route and method of each request.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower_service::Service;

use crate::body::ResponseBody;
use crate::exemplar::TraceId;
use crate::future::ResponseFuture;
use crate::labels;
use crate::record::{Record, RequestTags};
use crate::request_body::{RequestBodyMode, RequestContext};
use crate::route_name::{self, RouteName};
use crate::routes;
use crate::shared::{Leases, Shared};
use crate::user_labels::{ValueIds, MAX_LABELS};

/// The service made by [`VitalsLayer`](crate::VitalsLayer): measures each request of `S`.
///
/// `M` says whether request bodies are measured ([`IgnoreRequestBody`](crate::IgnoreRequestBody)
/// by default). Errors of `S` pass through unchanged.
pub struct Vitals<S, M = crate::IgnoreRequestBody> {
    inner: S,
    shared: Arc<Leases>,
    mode: PhantomData<fn() -> M>,
}

impl<S, M> Vitals<S, M> {
    pub(crate) fn new(inner: S, shared: Arc<Leases>) -> Self {
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
        let shared = &**self.shared.shared();
        if !shared.simple {
            return self.call_with_options(req);
        }
        // No skip predicate, label, gRPC route or trace-id function: the route comes from the extensions only, and
        // the request is never split or moved before the inner service gets it.
        let route = if req.extensions().is_empty() {
            routes::UNMATCHED_ID
        } else {
            find_route(shared, req.extensions(), req.headers(), req.uri())
        };
        if shared.routes.is_skipped(route) {
            return self.pass_through(req);
        }
        // The request goes straight to the inner service (no move through a helper: each is a
        // copy of the whole head).
        let trace = shared.trace_id_from_headers(req.headers());
        let record = start(&self.shared, &req, route, [0; MAX_LABELS], trace);
        let ctx =
            RequestContext { shared: &self.shared, route, method: record.method(), measured: true };
        ResponseFuture::new(self.inner.call(M::wrap(req, ctx)), record)
    }
}

impl<S, M> Vitals<S, M> {
    /// `call` for a layer with skip predicates, labels or gRPC routes (out of line, so that
    /// `call` without them stays small). Skip predicates and label functions see the head.
    /// Each branch ends in its own call of the inner service: joining them (the request moved
    /// out of the branch in a tuple) would copy the whole request head once more.
    #[inline(never)]
    fn call_with_options<ReqBody, ResBody>(
        &mut self,
        req: Request<ReqBody>,
    ) -> ResponseFuture<S::Future>
    where
        M: RequestBodyMode<ReqBody>,
        S: Service<Request<M::Body>, Response = Response<ResBody>>,
    {
        let shared = &**self.shared.shared();
        let mut labels: ValueIds = [0; MAX_LABELS];
        if shared.needs_head {
            let (head, body) = req.into_parts();
            if shared.skip_by_head(&head) {
                return self.pass_through(Request::from_parts(head, body));
            }
            let route = route_of(shared, &head.extensions, &head.headers, &head.uri);
            if shared.routes.is_skipped(route) {
                return self.pass_through(Request::from_parts(head, body));
            }
            shared.labels.read_request(&head, &mut labels);
            let trace = shared.trace_id(&head);
            let req = Request::from_parts(head, body);
            let record = start(&self.shared, &req, route, labels, trace);
            let ctx = RequestContext {
                shared: &self.shared,
                route,
                method: record.method(),
                measured: true,
            };
            return ResponseFuture::new(self.inner.call(M::wrap(req, ctx)), record);
        }
        let route = route_of(shared, req.extensions(), req.headers(), req.uri());
        if shared.routes.is_skipped(route) {
            return self.pass_through(req);
        }
        if !shared.labels.is_empty() {
            shared.labels.read_request_extensions(req.extensions(), &mut labels);
        }
        let trace = shared.trace_id_from_headers(req.headers());
        let record = start(&self.shared, &req, route, labels, trace);
        let ctx =
            RequestContext { shared: &self.shared, route, method: record.method(), measured: true };
        ResponseFuture::new(self.inner.call(M::wrap(req, ctx)), record)
    }

    /// A request left out by a skip rule: passed to the inner service untouched, unmeasured.
    #[cold]
    fn pass_through<ReqBody, ResBody>(&mut self, req: Request<ReqBody>) -> ResponseFuture<S::Future>
    where
        M: RequestBodyMode<ReqBody>,
        S: Service<Request<M::Body>, Response = Response<ResBody>>,
    {
        let ctx = RequestContext { shared: &self.shared, route: 0, method: 0, measured: false };
        ResponseFuture::unmeasured(self.inner.call(M::wrap(req, ctx)))
    }
}

/// Starts measuring a request that no skip rule left out: `t0`, its tags, its record (with a
/// lease of the calling thread's stripe).
#[inline(always)]
fn start<B>(
    leases: &Leases,
    req: &Request<B>,
    route: u32,
    labels: ValueIds,
    trace: Option<TraceId>,
) -> Record {
    let shared = leases.shared();
    let t0 = shared.config.clock.raw();
    let tags = RequestTags {
        route,
        method: labels::method_index(req.method()),
        protocol: labels::protocol_index(req.version()),
        scheme: labels::scheme_index(req.uri()),
        labels,
        trace,
    };
    Record::start(leases.lease(), t0, tags)
}

/// The route id of a request: its [`RouteName`], else axum's `MatchedPath`, else (with
/// `grpc_routes`) the gRPC method path, else `unmatched`.
#[inline]
pub(crate) fn route_of(
    shared: &Shared,
    extensions: &http::Extensions,
    headers: &http::HeaderMap,
    uri: &http::Uri,
) -> u32 {
    if extensions.is_empty() && !shared.config.grpc_routes {
        return routes::UNMATCHED_ID;
    }
    find_route(shared, extensions, headers, uri)
}

/// [`route_of`] for a request that carries extensions (or with `grpc_routes`): one
/// non-generic copy, out of line.
#[inline(never)]
fn find_route(
    shared: &Shared,
    extensions: &http::Extensions,
    headers: &http::HeaderMap,
    uri: &http::Uri,
) -> u32 {
    if route_name::route_names_exist() {
        if let Some(name) = extensions.get::<RouteName>() {
            return shared.routes.intern(name.as_str());
        }
    }
    #[cfg(feature = "axum")]
    if let Some(path) = extensions.get::<axum::extract::MatchedPath>() {
        return shared.routes.intern_matched_path(path);
    }
    if shared.config.grpc_routes {
        if let Some(path) = crate::grpc::method_path(headers, uri) {
            return shared.routes.intern(path);
        }
    }
    routes::UNMATCHED_ID
}
