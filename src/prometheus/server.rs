//! The standalone `/metrics` listener: hyper 1 (HTTP/1.1) over tokio, graceful stop.

use std::convert::Infallible;
use std::fmt;

use std::net::SocketAddr;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, ToSocketAddrs};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long a stop waits for open scrapes to finish before closing their connections.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// A running `/metrics` listener, from [`PrometheusMetrics::serve`](super::PrometheusMetrics::serve).
///
/// **The listener lives as long as this value.** Dropping it (including `let _ = ...`, or
/// returning from the function that holds it) stops accepting connections at once and lets
/// scrapes in progress finish in the background: the next scrape fails to connect. So either
/// keep it for as long as the app runs (and call [`shutdown`](Self::shutdown) to stop it
/// gracefully), or [`detach`](Self::detach) it to let it run on its own until the tokio
/// runtime stops.
#[derive(Debug)]
#[must_use = "dropping the MetricsServer closes the /metrics listener: keep it, or call .detach()"]
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

    /// Lets the listener run on its own, with no handle to stop it: it serves until the tokio
    /// runtime it was started on shuts down (with `#[tokio::main]`, the life of the process).
    /// Returns the address it listens on.
    ///
    /// ```no_run
    /// # #[tokio::main]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let metrics = tower_vitals::prometheus::install()?;
    /// let addr = metrics.serve("127.0.0.1:9464").await?.detach();
    /// println!("scrape http://{addr}/metrics");
    /// # Ok(())
    /// # }
    /// ```
    pub fn detach(mut self) -> SocketAddr {
        // Dropping the sender without sending is not a stop: see `accept_loop`. Dropping the
        // task's `JoinHandle` detaches the task.
        self.stop.take();
        self.task.take();
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
    addr: impl ToSocketAddrs + fmt::Debug,
) -> std::io::Result<MetricsServer> {
    let listener = TcpListener::bind(&addr).await.map_err(|e| {
        std::io::Error::new(e.kind(), format!("cannot listen for /metrics on {addr:?}: {e}"))
    })?;
    let local_addr = listener.local_addr()?;
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(accept_loop(listener, metrics, stopped));
    Ok(MetricsServer { local_addr, stop: Some(stop), task: Some(task) })
}

async fn accept_loop(
    listener: TcpListener,
    metrics: super::PrometheusMetrics,
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
                    let metrics = metrics.clone();
                    let service = hyper::service::service_fn(move |request: http::Request<_>| {
                        // Rendered on tokio's blocking pool, not on this async worker.
                        let metrics = metrics.clone();
                        let request = http::Request::from_parts(request.into_parts().0, ());
                        let answer = super::off_workers(move || super::answer(&metrics, &request));
                        async move { Ok::<_, Infallible>(answer.await) }
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

    fn metrics() -> crate::prometheus::PrometheusMetrics {
        let recorder = crate::prometheus::builder().build_recorder();
        crate::prometheus::PrometheusMetrics::from_handle(recorder.handle())
    }

    /// Whether `addr` still accepts connections, waiting up to 2 s for it to stop.
    async fn stops_listening(addr: SocketAddr) -> bool {
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(addr).await.is_err() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    #[tokio::test]
    async fn takes_addresses_as_text_and_refuses_a_bad_one_by_name() {
        let metrics = metrics();
        let from_str = metrics.serve("127.0.0.1:0").await.expect("&str");
        let from_string = metrics.serve(String::from("127.0.0.1:0")).await.expect("String");
        let from_tuple = metrics.serve(("127.0.0.1", 0)).await.expect("(host, port)");
        for server in [&from_str, &from_string, &from_tuple] {
            assert!(server.local_addr().ip().is_loopback());
            assert!(get(server.local_addr(), "/metrics").await.starts_with("HTTP/1.1 200"));
        }
        for bad in ["127.0.0.1", "127.0.0.1:http", "not an address"] {
            let err = metrics.serve(bad).await.expect_err(bad);
            let text = err.to_string();
            assert!(text.contains(&format!("{bad:?}")), "{bad}: {text}");
            assert!(text.starts_with("cannot listen for /metrics on"), "{text}");
        }
        // A port in use: the same message, with the OS's reason.
        let taken = from_str.local_addr();
        let err = metrics.serve(taken).await.expect_err("port in use");
        assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse, "{err}");
        assert!(err.to_string().contains(&taken.to_string()), "{err}");
        for server in [from_str, from_string, from_tuple] {
            server.shutdown().await;
        }
    }

    #[tokio::test]
    async fn dropping_the_server_closes_the_listener_and_detach_keeps_it() {
        let metrics = metrics();
        let dropped = metrics.serve("127.0.0.1:0").await.expect("bind");
        let dropped_addr = dropped.local_addr();
        drop(dropped);
        assert!(stops_listening(dropped_addr).await, "a dropped server still listens");

        let detached_addr = metrics.serve("127.0.0.1:0").await.expect("bind").detach();
        // Longer than a dropped server takes to stop: it must still answer, several times.
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let answer = get(detached_addr, "/metrics").await;
            assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        }
    }
}
