//! The standalone `/metrics` listener (the crate's private listener, answering `/metrics` only).

use std::fmt;
use std::net::SocketAddr;

use tokio::net::ToSocketAddrs;

use crate::listener::{self, Listener};

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
pub struct MetricsServer(Listener);

impl MetricsServer {
    /// The address actually bound (the real port when port 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.0.local_addr()
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
    pub fn detach(self) -> SocketAddr {
        self.0.detach()
    }

    /// Stops accepting, lets open scrapes finish (at most 5 s), and returns when done.
    pub async fn shutdown(self) {
        self.0.shutdown().await
    }
}

pub(super) async fn serve(
    metrics: super::PrometheusMetrics,
    addr: impl ToSocketAddrs + fmt::Debug,
) -> std::io::Result<MetricsServer> {
    let answer = move |request: http::Request<()>| {
        // Rendered on tokio's blocking pool, not on an async worker.
        let metrics = metrics.clone();
        super::off_workers(move || super::answer(&metrics, &request))
    };
    listener::serve(addr, "/metrics", answer).await.map(MetricsServer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
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
