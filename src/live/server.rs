//! A private listener for `/vitals`, `/vitals.json` and (optionally) `/metrics`: hyper 1
//! (HTTP/1.1) over tokio, graceful stop. The same rules as the Prometheus listener: bind
//! loopback, head-read timeout, other paths `404`.

use std::convert::Infallible;
use std::fmt;
use std::future::ready;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, ToSocketAddrs};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::recorder::Inner;
use crate::prometheus::{PrometheusMetrics, HEADER_READ_TIMEOUT};

/// How long a stop waits for open requests to finish before closing their connections.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// A running listener, from [`Live::serve`](super::Live::serve).
///
/// **The listener lives as long as this value**, as a
/// [`MetricsServer`](crate::prometheus::MetricsServer): dropping it stops accepting
/// connections at once (requests in progress finish in the background). Keep it for as long as
/// the app runs (and call [`shutdown`](Self::shutdown) to stop it gracefully), or
/// [`detach`](Self::detach) it.
#[derive(Debug)]
#[must_use = "dropping the LiveServer closes the /vitals listener: keep it, or call .detach()"]
pub struct LiveServer {
    local_addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl LiveServer {
    /// The address actually bound (the real port when port 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Lets the listener run on its own until the tokio runtime it was started on shuts down.
    /// Returns the address it listens on.
    pub fn detach(mut self) -> SocketAddr {
        // Dropping the sender without sending is not a stop (see `accept_loop`); dropping the
        // task's `JoinHandle` detaches the task.
        self.stop.take();
        self.task.take();
        self.local_addr
    }

    /// Stops accepting, lets open requests finish (at most 5 s), and returns when done.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for LiveServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The answer of the listener: `/vitals`, `/vitals.json`, and `/metrics` when given.
fn answer<B>(
    inner: &Inner,
    metrics: Option<&PrometheusMetrics>,
    request: &Request<B>,
) -> Response<String> {
    let path = request.uri().path();
    match (path, metrics) {
        ("/vitals" | "/vitals.json", _) => super::page::answer(inner, request.method(), path),
        ("/metrics", Some(m))
            if request.method() == Method::GET || request.method() == Method::HEAD =>
        {
            let mut r = Response::new(m.render());
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static(crate::prometheus::CONTENT_TYPE),
            );
            r
        }
        ("/metrics", Some(_)) => {
            let mut r = Response::new(String::new());
            *r.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
            r
        }
        _ => {
            let mut r = Response::new(String::new());
            *r.status_mut() = StatusCode::NOT_FOUND;
            r
        }
    }
}

pub(super) async fn serve(
    inner: Arc<Inner>,
    metrics: Option<PrometheusMetrics>,
    addr: impl ToSocketAddrs + fmt::Debug,
) -> std::io::Result<LiveServer> {
    let listener = TcpListener::bind(&addr).await.map_err(|e| {
        std::io::Error::new(e.kind(), format!("cannot listen for /vitals on {addr:?}: {e}"))
    })?;
    let local_addr = listener.local_addr()?;
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(accept_loop(listener, inner, metrics, stopped));
    Ok(LiveServer { local_addr, stop: Some(stop), task: Some(task) })
}

async fn accept_loop(
    listener: TcpListener,
    inner: Arc<Inner>,
    metrics: Option<PrometheusMetrics>,
    stopped: oneshot::Receiver<()>,
) {
    // A stop is a message: the sender dropped without sending (`detach`) never stops us.
    let stopped = async move {
        if stopped.await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    tokio::pin!(stopped);
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    let (inner, metrics) = (Arc::clone(&inner), metrics.clone());
                    let service = hyper::service::service_fn(move |request| {
                        ready(Ok::<_, Infallible>(answer(&inner, metrics.as_ref(), &request)))
                    });
                    // A head-read timeout: a client that never finishes its request head (or an
                    // idle keep-alive) cannot hold a connection for ever.
                    let connection = hyper::server::conn::http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(HEADER_READ_TIMEOUT)
                        .serve_connection(TokioIo::new(stream), service);
                    let connection = graceful.watch(connection);
                    tokio::spawn(async move {
                        let _ = connection.await;
                    });
                }
                // Out of file descriptors and the like: back off instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            },
            _ = &mut stopped => break,
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown()).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: SocketAddr, method: &str, path: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let request = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut out = String::new();
        stream.read_to_string(&mut out).await.expect("read");
        out
    }

    #[tokio::test]
    async fn serves_vitals_and_metrics_on_a_loopback_port_and_stops() {
        let recorder = crate::prometheus::builder().build_recorder();
        metrics::with_local_recorder(&recorder, || {
            metrics::counter!("demo.requests").increment(3);
        });
        let metrics = PrometheusMetrics::from_handle(recorder.handle());
        let live = super::super::Live::new();
        let server = live.serve("127.0.0.1:0", Some(&metrics)).await.expect("bind port 0");
        let addr = server.local_addr();
        let page = get(addr, "GET", "/vitals").await;
        assert!(page.starts_with("HTTP/1.1 200"), "{page}");
        assert!(page.contains("content-security-policy:"), "{page}");
        let json = get(addr, "GET", "/vitals.json").await;
        assert!(json.contains("\"schema\":\"tower-vitals.live/1\""), "{json}");
        assert!(get(addr, "GET", "/metrics").await.contains("demo_requests_total 3"));
        assert!(get(addr, "POST", "/metrics").await.starts_with("HTTP/1.1 405"));
        assert!(get(addr, "GET", "/other").await.starts_with("HTTP/1.1 404"));
        server.shutdown().await;
        assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "still listening");

        let alone = live.serve(SocketAddr::from(([127, 0, 0, 1], 0)), None).await.expect("bind");
        let addr = alone.detach();
        assert!(get(addr, "GET", "/metrics").await.starts_with("HTTP/1.1 404"), "no /metrics");
        assert!(get(addr, "GET", "/vitals.json").await.starts_with("HTTP/1.1 200"), "detached");
        let bad = live.serve("127.0.0.1", None).await.expect_err("no port");
        assert!(bad.to_string().contains("cannot listen for /vitals on \"127.0.0.1\""), "{bad}");
    }
}
