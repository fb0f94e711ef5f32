//! The private listener behind `prometheus::MetricsServer` and
//! `LiveServer`: HTTP/1.1 with hyper over tokio, bound with an error that names the address, a
//! request-head timeout, a graceful stop, and a way to let it run on its own.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use http::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, ToSocketAddrs};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long a client may take to send a request head (and keep an idle connection) before the
/// listener closes the connection.
pub(crate) const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a stop waits for open requests to finish before closing their connections.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// A running listener. Dropping it stops accepting at once (requests in progress finish in the
/// background); [`detach`](Self::detach) lets it run until its runtime shuts down.
#[derive(Debug)]
pub(crate) struct Listener {
    local_addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Listener {
    /// The address actually bound (the real port when port 0 was asked for).
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// No stop from now on: the accept loop runs until the runtime shuts down.
    pub(crate) fn detach(mut self) -> SocketAddr {
        // Dropping the sender without sending is not a stop (see `accept_loop`); dropping the
        // task's `JoinHandle` detaches the task.
        self.stop.take();
        self.task.take();
        self.local_addr
    }

    /// Stops accepting, lets open requests finish (at most 5 s), and returns when done.
    pub(crate) async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
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
/// head with `answer` (the request body is never read). Must be called inside a tokio runtime.
pub(crate) async fn serve<A, F, Fut, B>(addr: A, what: &str, answer: F) -> std::io::Result<Listener>
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
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(accept_loop(listener, answer, stopped));
    Ok(Listener { local_addr, stop: Some(stop), task: Some(task) })
}

async fn accept_loop<F, Fut, B>(listener: TcpListener, answer: F, stopped: oneshot::Receiver<()>)
where
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
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    let answer = answer.clone();
                    let service = hyper::service::service_fn(move |request: Request<_>| {
                        let head = Request::from_parts(request.into_parts().0, ());
                        let answered = answer(head);
                        async move { Ok::<_, Infallible>(answered.await) }
                    });
                    // A timer, so hyper enforces the request-head timeout: a client that never
                    // finishes its request head (or an idle keep-alive) cannot hold a connection
                    // and its file descriptor for ever.
                    let connection = hyper::server::conn::http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(HEADER_READ_TIMEOUT)
                        .serve_connection(TokioIo::new(stream), service);
                    let connection = graceful.watch(connection);
                    tokio::spawn(async move {
                        // A client that goes away mid-answer is not our error to report.
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
