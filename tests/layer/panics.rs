//! Panics: a handler that panics, with tower-http's `CatchPanicLayer` absent, inside our layer or
//! outside it, is recorded exactly once with the right `error.type`, `active_requests` returns
//! to 0, and the process (and the server) carries on: nothing in the layer panics while a panic
//! unwinds (which would abort the process).
//!
//! In-process cases use a `DebuggingRecorder` set for the test thread; the real-hyper case runs
//! a current-thread tokio runtime on that same thread, so the local recorder sees everything.

use std::convert::Infallible;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::support::*;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::Full;
use metrics_util::debugging::Snapshotter;
use tower::{Layer, Service, ServiceBuilder, ServiceExt};
use tower_http::catch_panic::CatchPanicLayer;
use tower_vitals::{RouteName, VitalsLayer};

struct Local {
    _guard: metrics::LocalRecorderGuard<'static>,
    snap: Snapshotter,
}

fn local_recorder() -> Local {
    quiet_intended_panics();
    let (guard, snap) = crate::support::local_recorder();
    Local { _guard: guard, snap }
}

fn named_req() -> Request<String> {
    let mut req = Request::new(String::new());
    req.extensions_mut().insert(RouteName::new("/boom"));
    req
}

async fn panicking_handler(_req: Request<String>) -> Result<Response<Full<Bytes>>, Infallible> {
    panic!("handler panicked (on purpose)")
}

/// Exactly one `requests` increment with this `error.type` and status, gauges back to 0.
fn assert_once(seen: &[Seen], error_type: &str, status: Option<&str>) {
    let req = one(seen, &NAMES.requests);
    assert_eq!(req.counter(), 1);
    assert_eq!(req.label("error.type"), Some(error_type), "{req:?}");
    assert_eq!(req.label("http.response.status_code"), status, "{req:?}");
    assert_eq!(req.label("http.route"), Some("/boom"));
    for gauge in named(seen, &NAMES.active_requests) {
        assert_eq!(gauge.gauge(), 0.0, "active_requests back to 0");
    }
}

#[test]
fn handler_panic_without_catch_panic_is_recorded_once_as_panic_and_propagates() {
    let local = local_recorder();
    let layer = VitalsLayer::new();
    let svc = layer.layer(tower::service_fn(panicking_handler));
    let caught = catch_unwind(AssertUnwindSafe(|| block_on(svc.oneshot(named_req()))));
    assert!(caught.is_err(), "our layer lets the panic through unchanged");
    assert_once(&snapshot(&local.snap), "panic", None);
    assert_eq!(layer.active_requests(), 0);
}

#[test]
fn catch_panic_inside_our_layer_is_recorded_once_as_its_500() {
    let local = local_recorder();
    let layer = VitalsLayer::new();
    let svc = ServiceBuilder::new()
        .layer(layer.clone())
        .layer(CatchPanicLayer::new())
        .service_fn(panicking_handler);
    let res = block_on(svc.oneshot(named_req())).expect("CatchPanic answers");
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    drain(&mut res.into_body());
    // We saw a 500 response, not a panic: it is tagged with its status code.
    assert_once(&snapshot(&local.snap), "500", Some("500"));
    assert_eq!(layer.active_requests(), 0);
}

#[test]
fn catch_panic_outside_our_layer_is_recorded_once_as_panic_and_the_client_gets_500() {
    let local = local_recorder();
    let layer = VitalsLayer::new();
    let svc = ServiceBuilder::new()
        .layer(CatchPanicLayer::new())
        .layer(layer.clone())
        .service_fn(panicking_handler);
    let res = block_on(svc.oneshot(named_req())).expect("CatchPanic answers");
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    drain(&mut res.into_body());
    // The panic went through our future: no head, so no status tag.
    assert_once(&snapshot(&local.snap), "panic", None);
    assert_eq!(layer.active_requests(), 0);
}

/// A service whose `call` itself panics (before any future exists).
#[derive(Clone)]
struct PanicsInCall;

impl Service<Request<String>> for PanicsInCall {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, _req: Request<String>) -> Self::Future {
        panic!("call panicked (on purpose)")
    }
}

#[test]
fn panic_in_the_inner_call_is_recorded_once_as_panic_with_and_without_catch_panic() {
    {
        let local = local_recorder();
        let layer = VitalsLayer::new();
        let svc = layer.layer(PanicsInCall);
        let caught = catch_unwind(AssertUnwindSafe(|| block_on(svc.oneshot(named_req()))));
        assert!(caught.is_err());
        assert_once(&snapshot(&local.snap), "panic", None);
        assert_eq!(layer.active_requests(), 0);
    }
    {
        let local = local_recorder();
        let layer = VitalsLayer::new();
        let svc = ServiceBuilder::new()
            .layer(CatchPanicLayer::new())
            .layer(layer.clone())
            .service(PanicsInCall);
        let res = block_on(svc.oneshot(named_req())).expect("CatchPanic answers");
        assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_once(&snapshot(&local.snap), "panic", None);
        assert_eq!(layer.active_requests(), 0);
    }
}

/// A body that yields one frame, then panics.
struct PanickingBody(bool);

impl Body for PanickingBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.0 {
            panic!("body panicked (on purpose)");
        }
        self.0 = true;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"first")))))
    }
}

#[test]
fn panic_in_the_body_is_recorded_once_as_panic_even_with_catch_panic_outside() {
    // CatchPanic only guards the future; a body panic unwinds through our poll_frame.
    let local = local_recorder();
    let layer = VitalsLayer::new();
    let svc = ServiceBuilder::new().layer(CatchPanicLayer::new()).layer(layer.clone()).service_fn(
        |_req: Request<String>| async { Ok::<_, Infallible>(Response::new(PanickingBody(false))) },
    );
    let res = block_on(svc.oneshot(named_req())).expect("head");
    assert_eq!(res.status(), StatusCode::OK);
    let mut body = res.into_body();
    let caught = catch_unwind(AssertUnwindSafe(|| drain(&mut body)));
    assert!(caught.is_err(), "the body panic propagates");
    drop(body);
    let seen = snapshot(&local.snap);
    assert_once(&seen, "panic", Some("200"));
    assert_eq!(hist_sum(&seen, &NAMES.output_bytes), 5.0, "the frame before the panic");
    assert_eq!(layer.active_requests(), 0);
}

/// Serves `svc` over real hyper HTTP/1.1 on 127.0.0.1 (port 0) on the current runtime.
async fn serve<S, B>(svc: S) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>)
where
    S: Service<Request<String>, Response = Response<B>, Error = Infallible> + Clone + 'static,
    S::Future: 'static,
    B: Body<Data = Bytes> + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    use http_body_util::BodyExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::task::spawn_local(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let svc = svc.clone();
            // Each connection on its own task: a panic there ends that task only (tokio catches
            // it), as in a real server.
            tokio::task::spawn_local(async move {
                let hyper_svc =
                    hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let svc = svc.clone();
                        async move {
                            let (parts, body) = req.into_parts();
                            let bytes =
                                body.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
                            let mut req = Request::from_parts(
                                parts,
                                String::from_utf8_lossy(&bytes).into_owned(),
                            );
                            req.extensions_mut().insert(RouteName::new("/boom"));
                            svc.oneshot(req).await
                        }
                    });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, hyper_svc)
                    .await;
            });
        }
    });
    (addr, task)
}

/// One `GET / HTTP/1.1` with `Connection: close`; returns the raw response (empty if the server
/// dropped the connection without answering).
async fn get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), stream.read_to_end(&mut out))
        .await;
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn handler_panics_over_real_hyper_never_take_the_server_down() {
    let local = local_recorder();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let local_set = tokio::task::LocalSet::new();
    let layer = VitalsLayer::new();
    // Panics unless the path is /ok.
    let handler = |req: Request<String>| async move {
        if req.uri().path() != "/ok" {
            panic!("handler panicked (on purpose)");
        }
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"fine"))))
    };
    let bare = layer.clone().layer(tower::service_fn(handler));
    let inside = ServiceBuilder::new()
        .layer(layer.clone())
        .layer(CatchPanicLayer::new())
        .service_fn(handler);
    let outside = ServiceBuilder::new()
        .layer(CatchPanicLayer::new())
        .layer(layer.clone())
        .service_fn(handler);

    let responses = local_set.block_on(&rt, async move {
        let (a, ta) = serve(bare).await;
        let (b, tb) = serve(inside).await;
        let (c, tc) = serve(outside).await;
        let mut out = Vec::new();
        for addr in [a, b, c] {
            out.push(get(addr, "/panic").await);
            out.push(get(addr, "/ok").await); // the server still serves after the panic
        }
        for t in [ta, tb, tc] {
            t.abort();
        }
        out
    });
    drop(rt);

    assert_eq!(responses[0], "", "no CatchPanic: hyper's connection task died, no answer");
    for (i, r) in responses.iter().enumerate() {
        match i {
            0 => {}
            2 | 4 => assert!(r.starts_with("HTTP/1.1 500"), "CatchPanic answers 500: {r:?}"),
            _ => assert!(r.starts_with("HTTP/1.1 200") && r.ends_with("fine"), "{r:?}"),
        }
    }
    let seen = snapshot(&local.snap);
    let by_error = |e: Option<&str>| -> u64 {
        named(&seen, &NAMES.requests)
            .iter()
            .filter(|s| s.label("error.type") == e)
            .map(|s| s.counter())
            .sum()
    };
    assert_eq!(counter_total(&seen, &NAMES.requests), 6, "six requests, each counted once");
    assert_eq!(by_error(Some("panic")), 2, "bare and CatchPanic-outside record the panic");
    assert_eq!(by_error(Some("500")), 1, "CatchPanic-inside shows us its 500");
    assert_eq!(by_error(None), 3);
    assert_eq!(layer.active_requests(), 0);
}
