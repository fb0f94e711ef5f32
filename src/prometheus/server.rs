//! The standalone `/metrics` listener: hyper 1 (HTTP/1.1) over tokio, graceful stop.

use std::convert::Infallible;
use std::future::ready;
use std::net::SocketAddr;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long a stop waits for open scrapes to finish before closing their connections.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// A running `/metrics` listener, from [`PrometheusMetrics::serve`](super::PrometheusMetrics::serve).
///
/// Dropping it stops accepting connections at once and lets scrapes in progress finish in the
/// background; [`shutdown`](Self::shutdown) does the same and waits for them.
#[derive(Debug)]
pub struct MetricsServer {
    local_addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// The address actually bound (the real port when port 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, lets open scrapes finish (at most 5 s), and returns when done.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub(super) async fn serve(
    metrics: super::PrometheusMetrics,
    addr: SocketAddr,
) -> std::io::Result<MetricsServer> {
    let listener = TcpListener::bind(addr).await?;
    let local_addr = listener.local_addr()?;
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(accept_loop(listener, metrics, stopped));
    Ok(MetricsServer { local_addr, stop: Some(stop), task: Some(task) })
}

async fn accept_loop(
    listener: TcpListener,
    metrics: super::PrometheusMetrics,
    mut stopped: oneshot::Receiver<()>,
) {
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    let metrics = metrics.clone();
                    let service = hyper::service::service_fn(move |request| {
                        ready(Ok::<_, Infallible>(super::answer(&metrics, &request)))
                    });
                    // A timer, so hyper enforces the request-head timeout: a client that never
                    // finishes its request head (or an idle keep-alive) cannot hold a connection
                    // and its file descriptor for ever.
                    let connection = hyper::server::conn::http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(super::HEADER_READ_TIMEOUT)
                        .serve_connection(TokioIo::new(stream), service);
                    let connection = graceful.watch(connection);
                    tokio::spawn(async move {
                        // A client that goes away mid-scrape is not our error to report.
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

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut out = String::new();
        stream.read_to_string(&mut out).await.expect("read");
        out
    }

    #[tokio::test]
    async fn serves_metrics_on_a_free_loopback_port_and_stops() {
        let recorder = crate::prometheus::builder().build_recorder();
        metrics::with_local_recorder(&recorder, || {
            metrics::counter!("demo.requests").increment(3);
        });
        let metrics = crate::prometheus::PrometheusMetrics::from_handle(recorder.handle());
        let server =
            metrics.serve(SocketAddr::from(([127, 0, 0, 1], 0))).await.expect("bind port 0");
        let addr = server.local_addr();
        assert_ne!(addr.port(), 0);
        let answer = get(addr, "/metrics").await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(
            answer.contains("content-type: text/plain; version=0.0.4; charset=utf-8"),
            "{answer}"
        );
        assert!(answer.contains("demo_requests_total 3"), "{answer}");
        assert!(get(addr, "/nope").await.starts_with("HTTP/1.1 404"));
        server.shutdown().await;
        assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "still listening");
    }
}
