//! A private listener for `/vitals`, `/vitals.json` and (optionally) `/metrics`: the crate's
//! private listener (as for [`MetricsServer`](crate::prometheus::MetricsServer): bind loopback,
//! head-read timeout, other paths `404`), with `/metrics` rendered off the async workers.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use http::{Request, Response, StatusCode};
use tokio::net::ToSocketAddrs;

use super::recorder::Inner;
use crate::listener::{self, Listener, ListenerConfig};
use crate::prometheus::{MetricsBody, MetricsEndpoint, PrometheusMetrics};

/// A running listener, from [`Live::serve`](super::Live::serve).
///
/// **The listener lives as long as this value**, as a
/// [`MetricsServer`](crate::prometheus::MetricsServer): dropping it stops accepting
/// connections at once (requests in progress finish in the background). Keep it for as long as
/// the app runs (and call [`shutdown`](Self::shutdown) to stop it gracefully), or
/// [`detach`](Self::detach) it.
#[derive(Debug)]
#[must_use = "dropping the LiveServer closes the /vitals listener: keep it, or call .detach()"]
pub struct LiveServer(Listener);

impl LiveServer {
    /// The address actually bound (the real port when port 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.0.local_addr()
    }

    /// Lets the listener run on its own (on its own thread) for the life of the process.
    /// Returns the address it listens on.
    pub fn detach(self) -> SocketAddr {
        self.0.detach()
    }

    /// Stops accepting, lets open requests finish (at most 5 s), and returns when done.
    pub async fn shutdown(self) {
        self.0.shutdown().await
    }
}

type Answer = Pin<Box<dyn Future<Output = Response<MetricsBody>> + Send>>;

/// The answer of the listener: `/vitals`, `/vitals.json`, and `/metrics` when given (the same
/// answer as the `/metrics` listener's: the format `Accept` asks for, one render shared by the
/// scrapes that come together, rendered off the workers, gzip when asked).
fn answer(inner: &Arc<Inner>, metrics: Option<&MetricsEndpoint>, request: Request<()>) -> Answer {
    let path = request.uri().path();
    match (path, metrics) {
        ("/vitals" | "/vitals.json", _) => {
            let page = super::page::answer(inner, request.method(), path);
            Box::pin(async move {
                let page = page.await.unwrap_or_else(|never| match never {});
                page.map(|body| MetricsBody::new(body.bytes()))
            })
        }
        ("/metrics", Some(metrics)) => Box::pin(metrics.clone().answer(request)),
        _ => {
            let mut r = Response::new(MetricsBody::default());
            *r.status_mut() = StatusCode::NOT_FOUND;
            Box::pin(std::future::ready(r))
        }
    }
}

pub(super) async fn serve(
    inner: Arc<Inner>,
    metrics: Option<PrometheusMetrics>,
    addr: impl ToSocketAddrs + fmt::Debug,
) -> std::io::Result<LiveServer> {
    let config = ListenerConfig::default();
    let share_for = config.get_share_render_for();
    let metrics = metrics.map(|metrics| MetricsEndpoint::new(metrics, share_for));
    let answer = move |request: Request<()>| answer(&inner, metrics.as_ref(), request);
    listener::serve_with(addr, "/vitals", &config, answer).await.map(LiveServer)
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
        // The /metrics listener's answer: gzip when asked, one body shared.
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let request = "GET /metrics HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n";
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut gz = Vec::new();
        stream.read_to_end(&mut gz).await.expect("read");
        let head = String::from_utf8_lossy(&gz[..gz.len().min(400)]).to_ascii_lowercase();
        assert!(head.contains("content-encoding: gzip\r\n"), "{head}");
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
