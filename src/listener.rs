//! The private listener behind `prometheus::MetricsServer` and `LiveServer`: HTTP/1.1 with hyper
//! over tokio, bound with an error that names the address, and bounded so that no client can
//! hurt the service beside it: a connection cap (connections beyond it are closed at once), a
//! deadline per request (a response not written by then is closed), a short idle keep-alive and
//! request-head timeout, a graceful stop, and a way to let it run on its own. It runs on a
//! thread of its own with its own single-threaded runtime: accepting, reading heads and writing
//! expositions never take a turn on the application's async workers.
//! [`exposition`] shares one render (and one gzip) among the scrapes that come together.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{header, HeaderValue, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, ToSocketAddrs};
use tokio::sync::{oneshot, Semaphore};
use tokio::time::Instant;

pub(crate) mod exposition;

/// The name of a listener's thread and of its runtime's blocking threads (renders).
const THREAD_NAME: &str = "tower-vitals-listener";

/// How long a client may take to send a request head (and keep an idle connection) before the
/// listener closes the connection.
pub(crate) const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a stop waits for open requests to finish before closing their connections.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// The settings of the private listener that `prometheus::PrometheusMetrics::serve_with`
/// starts.
/// Every field has a safe default ([`ListenerConfig::default`]); each method sets one.
///
/// ```
/// use std::time::Duration;
/// use tower_vitals::ListenerConfig;
///
/// let config = ListenerConfig::default()
///     .max_connections(64)
///     .request_deadline(Duration::from_secs(10));
/// assert_eq!(config.get_max_connections(), 64);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerConfig {
    max_connections: usize,
    request_deadline: Duration,
    idle_timeout: Duration,
    share_render_for: Duration,
}

impl ListenerConfig {
    /// The default cap on open connections: 256.
    pub const DEFAULT_MAX_CONNECTIONS: usize = 256;
    /// The default deadline of a request, from its head to the last byte of its answer: 30 s.
    pub const DEFAULT_REQUEST_DEADLINE: Duration = Duration::from_secs(30);
    /// The default idle keep-alive and request-head timeout: 5 s.
    pub const DEFAULT_IDLE_TIMEOUT: Duration = HEADER_READ_TIMEOUT;
    /// How long a rendered exposition is reused by default: 1 s.
    pub const DEFAULT_SHARE_RENDER_FOR: Duration = Duration::from_secs(1);

    /// The defaults (same as [`ListenerConfig::default`]).
    pub const fn new() -> Self {
        ListenerConfig {
            max_connections: Self::DEFAULT_MAX_CONNECTIONS,
            request_deadline: Self::DEFAULT_REQUEST_DEADLINE,
            idle_timeout: Self::DEFAULT_IDLE_TIMEOUT,
            share_render_for: Self::DEFAULT_SHARE_RENDER_FOR,
        }
    }

    /// At most `max` connections open at once (at least 1; default 256). A connection accepted
    /// beyond the cap is closed at once, before anything is read from it or allocated for it:
    /// a flood of connections cannot take the file descriptors the application needs.
    pub const fn max_connections(mut self, max: usize) -> Self {
        self.max_connections = if max == 0 { 1 } else { max };
        self
    }

    /// A request must be answered, to its last byte, within `deadline` of its head (default
    /// 30 s): a client that stops reading is disconnected then, and what it held is freed.
    pub const fn request_deadline(mut self, deadline: Duration) -> Self {
        self.request_deadline = deadline;
        self
    }

    /// How long a connection may stay idle between requests, or take to send a request head,
    /// before it is closed (default 5 s).
    pub const fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// Scrapes of the same format (and compression) that arrive within `window` of a render
    /// get that render (default 1 s); scrapes that arrive during a render wait for it and share
    /// it too. `Duration::ZERO` shares only among scrapes that arrive while a render runs.
    pub const fn share_render_for(mut self, window: Duration) -> Self {
        self.share_render_for = window;
        self
    }

    /// The connection cap.
    pub const fn get_max_connections(&self) -> usize {
        self.max_connections
    }

    /// The request deadline.
    pub const fn get_request_deadline(&self) -> Duration {
        self.request_deadline
    }

    /// The idle keep-alive and request-head timeout.
    pub const fn get_idle_timeout(&self) -> Duration {
        self.idle_timeout
    }

    /// How long a render is shared.
    pub const fn get_share_render_for(&self) -> Duration {
        self.share_render_for
    }
}

impl Default for ListenerConfig {
    fn default() -> Self {
        Self::new()
    }
}

/// A running listener. Dropping it stops accepting at once (requests in progress finish in the
/// background); [`detach`](Self::detach) lets it run for the life of the process.
#[derive(Debug)]
pub(crate) struct Listener {
    local_addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    /// Sent (or dropped) by the listener's thread when its accept loop has ended.
    done: Option<oneshot::Receiver<()>>,
}

impl Listener {
    /// The address actually bound (the real port when port 0 was asked for).
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// No stop from now on: the listener runs for the life of the process.
    pub(crate) fn detach(mut self) -> SocketAddr {
        // Dropping the sender without sending is not a stop (see `accept_loop`).
        self.stop.take();
        self.done.take();
        self.local_addr
    }

    /// Stops accepting, lets open requests finish (at most 5 s), and returns when done.
    pub(crate) async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(done) = self.done.take() {
            let _ = done.await;
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Binds `addr` (an error naming it and `what` is served if it cannot) and answers every request
/// head with `answer` (the request body is never read), within the bounds of `config`. A `405`
/// answer gets `Allow: GET, HEAD` if it has no `Allow`. Must be called inside a tokio runtime (to
/// bind); the listener then runs on a thread of its own (`tower-vitals-listener`), with a
/// single-threaded runtime, so that a flood of scrapes or connections competes with the
/// application for CPU time only through the OS scheduler, never for a turn on its async workers.
pub(crate) async fn serve_with<A, F, Fut, B>(
    addr: A,
    what: &str,
    config: &ListenerConfig,
    answer: F,
) -> std::io::Result<Listener>
where
    A: ToSocketAddrs + fmt::Debug,
    F: Fn(Request<()>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let listener = TcpListener::bind(&addr).await.map_err(|e| {
        std::io::Error::new(e.kind(), format!("cannot listen for {what} on {addr:?}: {e}"))
    })?;
    let local_addr = listener.local_addr()?;
    // A listener belongs to the runtime that registered it: hand the socket over as a std one.
    let listener = listener.into_std()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .thread_name(THREAD_NAME)
        .enable_all()
        .build()?;
    let (stop, stopped) = oneshot::channel();
    let (done, finished) = oneshot::channel::<()>();
    let config = config.clone();
    std::thread::Builder::new().name(THREAD_NAME.into()).spawn(move || {
        runtime.block_on(async move {
            // `from_std` fails only outside a runtime with I/O enabled; this one has it.
            if let Ok(listener) = TcpListener::from_std(listener) {
                accept_loop(listener, config, answer, stopped).await;
            }
        });
        // Connections still open after the drain are closed with the runtime.
        runtime.shutdown_timeout(Duration::from_millis(100));
        let _ = done.send(());
    })?;
    Ok(Listener { local_addr, stop: Some(stop), done: Some(finished) })
}

/// The deadline of a connection's current request, in milliseconds after `start`: set when a
/// request head arrives, read by the task that drives the connection.
struct Deadline {
    start: Instant,
    millis: AtomicU64,
}

impl Deadline {
    fn new(start: Instant, after: Duration) -> Self {
        let deadline = Deadline { start, millis: AtomicU64::new(0) };
        deadline.set(after);
        deadline
    }

    /// The deadline is now `after` from now.
    fn set(&self, after: Duration) {
        let at = self.start.elapsed().saturating_add(after);
        self.millis.store(u64::try_from(at.as_millis()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    fn at(&self) -> Instant {
        let millis = self.millis.load(Ordering::Relaxed);
        self.start.checked_add(Duration::from_millis(millis)).unwrap_or_else(far_future)
    }
}

/// An instant no connection reaches (about 30 years from now).
fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365 * 30)
}

async fn accept_loop<F, Fut, B>(
    listener: TcpListener,
    config: ListenerConfig,
    answer: F,
    stopped: oneshot::Receiver<()>,
) where
    F: Fn(Request<()>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    // A stop is a message: the sender dropped without sending (`detach`) never stops us.
    let stopped = async move {
        if stopped.await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    tokio::pin!(stopped);
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(config.max_connections));
    let request_deadline = config.request_deadline;
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    // Over the cap: closed at once (the stream drops here), no task, no buffer.
                    let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else { continue };
                    let deadline = Arc::new(Deadline::new(Instant::now(), request_deadline));
                    let answer = answer.clone();
                    let on_request = Arc::clone(&deadline);
                    let service = hyper::service::service_fn(move |request: Request<_>| {
                        on_request.set(request_deadline);
                        let head = Request::from_parts(request.into_parts().0, ());
                        let answered = answer(head);
                        async move { Ok::<_, Infallible>(with_allow(answered.await)) }
                    });
                    // A timer, so hyper enforces the request-head timeout: a client that never
                    // finishes its request head (or an idle keep-alive) cannot hold a connection
                    // and its file descriptor for ever.
                    let connection = hyper::server::conn::http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(config.idle_timeout)
                        .serve_connection(TokioIo::new(stream), service);
                    let connection = graceful.watch(connection);
                    tokio::spawn(async move {
                        let _slot = slot;
                        tokio::pin!(connection);
                        // Bounded: each turn either ends the connection or waits for a later
                        // deadline, which only a new request head sets.
                        loop {
                            tokio::select! {
                                // A client that goes away mid-answer is not our error to report.
                                _ = &mut connection => break,
                                _ = tokio::time::sleep_until(deadline.at()) => {
                                    if deadline.at() <= Instant::now() {
                                        // Past the deadline: dropping the connection closes it
                                        // and frees the answer it was writing.
                                        break;
                                    }
                                }
                            }
                        }
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

/// A `405` without `Allow` gets `Allow: GET, HEAD` (RFC 9110 §15.5.6: a 405 must name the
/// methods the resource supports; the listener's resources support these two).
fn with_allow<B>(mut response: Response<B>) -> Response<B> {
    if response.status() == StatusCode::METHOD_NOT_ALLOWED
        && !response.headers().contains_key(header::ALLOW)
    {
        response.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn ok_answer(_: Request<()>) -> std::future::Ready<Response<String>> {
        std::future::ready(Response::new(String::from("ok")))
    }

    #[test]
    fn config_defaults_and_setters() {
        let config = ListenerConfig::default();
        assert_eq!(config, ListenerConfig::new());
        assert_eq!(config.get_max_connections(), 256);
        assert_eq!(config.get_request_deadline(), Duration::from_secs(30));
        assert_eq!(config.get_idle_timeout(), HEADER_READ_TIMEOUT);
        assert_eq!(config.get_share_render_for(), Duration::from_secs(1));
        let config = config
            .max_connections(0)
            .request_deadline(Duration::from_secs(2))
            .idle_timeout(Duration::from_secs(1))
            .share_render_for(Duration::ZERO);
        assert_eq!(config.get_max_connections(), 1, "a cap of 0 would refuse every scrape");
        assert_eq!(config.get_request_deadline(), Duration::from_secs(2));
        assert_eq!(config.get_idle_timeout(), Duration::from_secs(1));
        assert_eq!(config.get_share_render_for(), Duration::ZERO);
    }

    #[test]
    fn a_405_gets_allow_and_other_answers_do_not() {
        let mut response = Response::new(());
        *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        assert_eq!(with_allow(response).headers()[header::ALLOW], "GET, HEAD");
        let mut response = Response::new(());
        *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        response.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET"));
        assert_eq!(with_allow(response).headers()[header::ALLOW], "GET", "kept as answered");
        assert!(!with_allow(Response::new(())).headers().contains_key(header::ALLOW));
    }

    /// Whether the server closed `stream` (EOF or reset), waiting at most `within`.
    async fn closed_within(stream: &mut tokio::net::TcpStream, within: Duration) -> bool {
        let mut buf = [0u8; 1024];
        let until = Instant::now() + within;
        // Bounded by `within`: each read either ends the loop or returns data before it.
        while let Ok(read) = tokio::time::timeout_at(until, stream.read(&mut buf)).await {
            match read {
                Ok(0) | Err(_) => return true,
                Ok(_) => {}
            }
        }
        false
    }

    #[tokio::test]
    async fn connections_beyond_the_cap_are_closed_at_once() {
        let config = ListenerConfig::default().max_connections(2);
        let server =
            serve_with("127.0.0.1:0", "test", &config, ok_answer).await.expect("bind port 0");
        let addr = server.local_addr();
        let mut held = vec![];
        for _ in 0..2 {
            let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
            // A request answered proves the connection holds a slot (it was accepted and served).
            stream.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.expect("write");
            let mut buf = [0u8; 256];
            let n = stream.read(&mut buf).await.expect("read");
            assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
            held.push(stream);
        }
        let mut third = tokio::net::TcpStream::connect(addr).await.expect("connect");
        assert!(closed_within(&mut third, Duration::from_secs(2)).await, "third not closed");
        // A slot freed is a slot for the next connection.
        drop(held.pop());
        let mut answered = false;
        for _ in 0..100 {
            let mut next = tokio::net::TcpStream::connect(addr).await.expect("connect");
            let _ = next.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
            let mut out = Vec::new();
            let _ = next.read_to_end(&mut out).await;
            if out.starts_with(b"HTTP/1.1 200") {
                answered = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(answered, "the freed slot was never given to a new connection");
        server.shutdown().await;
    }

    #[tokio::test]
    async fn a_request_not_answered_by_its_deadline_is_closed() {
        let config = ListenerConfig::default().request_deadline(Duration::from_millis(200));
        let never = |_: Request<()>| async {
            std::future::pending::<()>().await;
            Response::new(String::new())
        };
        let server = serve_with("127.0.0.1:0", "test", &config, never).await.expect("bind");
        let mut stream = tokio::net::TcpStream::connect(server.local_addr()).await.expect("conn");
        stream.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.expect("write");
        assert!(closed_within(&mut stream, Duration::from_secs(5)).await, "still open");
        server.shutdown().await;
    }

    #[tokio::test]
    async fn a_405_over_the_wire_carries_allow() {
        let not_allowed = |_: Request<()>| async {
            let mut response = Response::new(String::new());
            *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
            response
        };
        let server = serve_with("127.0.0.1:0", "test", &ListenerConfig::default(), not_allowed)
            .await
            .expect("bind");
        let mut stream = tokio::net::TcpStream::connect(server.local_addr()).await.expect("conn");
        stream
            .write_all(b"POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .expect("w");
        let mut out = String::new();
        stream.read_to_string(&mut out).await.expect("read");
        assert!(out.starts_with("HTTP/1.1 405"), "{out}");
        assert!(out.contains("allow: GET, HEAD\r\n"), "{out}");
        server.shutdown().await;
    }
}
