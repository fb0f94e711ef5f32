//! The standalone `/metrics` listener (the crate's private listener, answering `/metrics` only).

use std::fmt;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode};
use tokio::net::ToSocketAddrs;

use super::MetricsBody;
use crate::listener::exposition::{self, Exposition, Format};
use crate::listener::{self, Listener, ListenerConfig};

/// A running `/metrics` listener, from [`PrometheusMetrics::serve`](super::PrometheusMetrics::serve)
/// or [`serve_with`](super::PrometheusMetrics::serve_with).
///
/// **Bounded**: scrapes that come together share one render (and one gzip-compressed body when
/// they send `Accept-Encoding: gzip`), rendered off the async workers, one at a time; at most
/// 256 connections are open (more are closed at once); an answer not written within 30 s is
/// cut; an idle connection is closed after 5 s. [`ListenerConfig`](crate::ListenerConfig) sets
/// each bound.
///
/// **The listener lives as long as this value.** Dropping it (including `let _ = ...`, or
/// returning from the function that holds it) stops accepting connections at once and lets
/// scrapes in progress finish in the background: the next scrape fails to connect. So either
/// keep it for as long as the app runs (and call [`shutdown`](Self::shutdown) to stop it
/// gracefully), or [`detach`](Self::detach) it to let it run on its own for the life of the
/// process. It runs on a thread of its own (`tower-vitals-listener`) with its own
/// single-threaded runtime: scrapes never take a turn on the application's async workers.
#[derive(Debug)]
#[must_use = "dropping the MetricsServer closes the /metrics listener: keep it, or call .detach()"]
pub struct MetricsServer(Listener);

impl MetricsServer {
    /// The address actually bound (the real port when port 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.0.local_addr()
    }

    /// Lets the listener run on its own, with no handle to stop it: it serves (on its own
    /// thread) for the life of the process. Returns the address it listens on.
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

impl super::PrometheusMetrics {
    /// Like [`serve`](Self::serve), with the listener's bounds set by `config` (connection
    /// cap, request deadline, idle timeout, how long a render is shared).
    ///
    /// ```no_run
    /// # #[tokio::main]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    /// use tower_vitals::ListenerConfig;
    ///
    /// let metrics = tower_vitals::prometheus::install()?;
    /// let config = ListenerConfig::default().max_connections(32);
    /// metrics.serve_with("127.0.0.1:9464", config).await?.detach();
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// As [`serve`](Self::serve).
    pub async fn serve_with(
        &self,
        addr: impl ToSocketAddrs + fmt::Debug,
        config: ListenerConfig,
    ) -> std::io::Result<MetricsServer> {
        serve_configured(self.clone(), addr, config).await
    }
}

/// The format a scrape asks for with its `Accept`: protobuf (native histograms), OpenMetrics
/// (exemplars), else the text format 0.0.4.
fn negotiate(accept: Option<&HeaderValue>) -> Format {
    if accept.is_some_and(super::asks_protobuf) {
        return Format::Protobuf;
    }
    let accept = accept.and_then(|a| a.to_str().ok());
    match super::openmetrics::negotiate(accept, false) {
        super::openmetrics::Format::OpenMetrics => Format::OpenMetrics,
        _ => Format::Text,
    }
}

fn content_type(format: Format) -> HeaderValue {
    HeaderValue::from_static(match format {
        Format::Protobuf => super::PROTOBUF_CONTENT_TYPE,
        Format::OpenMetrics => super::OPENMETRICS_CONTENT_TYPE,
        Format::Text => super::CONTENT_TYPE,
    })
}

/// The exposition in `format`.
fn render(metrics: &super::PrometheusMetrics, format: Format) -> Bytes {
    match format {
        Format::Protobuf => metrics.render_protobuf().into(),
        Format::OpenMetrics => metrics.render_openmetrics().into(),
        Format::Text => metrics.render().into(),
    }
}

pub(super) async fn serve(
    metrics: super::PrometheusMetrics,
    addr: impl ToSocketAddrs + fmt::Debug,
) -> std::io::Result<MetricsServer> {
    serve_configured(metrics, addr, ListenerConfig::default()).await
}

async fn serve_configured(
    metrics: super::PrometheusMetrics,
    addr: impl ToSocketAddrs + fmt::Debug,
    config: ListenerConfig,
) -> std::io::Result<MetricsServer> {
    let endpoint = MetricsEndpoint::new(metrics, config.get_share_render_for());
    let answer = move |request: Request<()>| endpoint.clone().answer(request);
    listener::serve_with(addr, "/metrics", &config, answer).await.map(MetricsServer)
}

/// The exposition served: one render shared by the scrapes that come together (on tokio's
/// blocking pool), gzip when asked. Made once per listener (the `/metrics` one, the live page's)
/// or per [`MetricsService`](super::MetricsService); cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct MetricsEndpoint {
    exposition: Exposition,
}

impl MetricsEndpoint {
    pub(crate) fn new(metrics: super::PrometheusMetrics, share_for: std::time::Duration) -> Self {
        let exposition = Exposition::new(move |format| render(&metrics, format), share_for);
        MetricsEndpoint { exposition }
    }

    /// The answer to `request`: the exposition for `GET`/`HEAD /metrics`, `405` for other
    /// methods (the listener adds `Allow`), `404` for other paths.
    pub(crate) async fn answer(self, request: Request<()>) -> Response<MetricsBody> {
        let status = if request.uri().path() != "/metrics" {
            StatusCode::NOT_FOUND
        } else if !exposition::reads(request.method()) {
            StatusCode::METHOD_NOT_ALLOWED
        } else {
            return self.scrape(request.headers()).await;
        };
        let mut response = Response::new(MetricsBody::default());
        *response.status_mut() = status;
        response
    }

    /// The exposition in the format the request's `Accept` asks for, gzip-compressed when its
    /// `Accept-Encoding` asks, whatever its path and method (routing is the caller's). Must be
    /// called inside a tokio runtime.
    pub(crate) async fn scrape(&self, request: &HeaderMap) -> Response<MetricsBody> {
        let format = negotiate(request.get(header::ACCEPT));
        let answer = self.exposition.answer(format, content_type(format), request).await;
        answer.map(MetricsBody::new)
    }
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

    /// The whole answer to `request` (raw HTTP/1.1, `Connection: close`), as bytes.
    async fn exchange(addr: SocketAddr, request: &str) -> Vec<u8> {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut out = Vec::new();
        stream.read_to_end(&mut out).await.expect("read");
        out
    }

    fn split(answer: &[u8]) -> (String, &[u8]) {
        let at = answer.windows(4).position(|w| w == b"\r\n\r\n").expect("a head") + 4;
        (String::from_utf8_lossy(&answer[..at]).into_owned(), &answer[at..])
    }

    #[tokio::test]
    async fn gzip_when_asked_head_answers_right_and_405_names_the_methods() {
        let recorder = crate::prometheus::builder().build_recorder();
        metrics::with_local_recorder(&recorder, || {
            for i in 0..200 {
                metrics::counter!("demo.requests", "route" => format!("/r{i}")).increment(i);
            }
        });
        let metrics = crate::prometheus::PrometheusMetrics::from_handle(recorder.handle());
        // One render for the whole test (the exporter's order of series varies between renders).
        let config = ListenerConfig::default().share_render_for(Duration::from_secs(600));
        let server = metrics.serve_with("127.0.0.1:0", config).await.expect("bind");
        let addr = server.local_addr();
        let req = |method: &str, encoding: &str| {
            format!("{method} /metrics HTTP/1.1\r\nHost: x\r\n{encoding}Connection: close\r\n\r\n")
        };

        let plain = exchange(addr, &req("GET", "")).await;
        let (head, body) = split(&plain);
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(head.contains("vary: accept-encoding\r\n"), "{head}");
        assert!(!head.contains("content-encoding"), "{head}");
        let text = String::from_utf8(body.to_vec()).expect("text");
        assert!(text.contains("demo_requests_total{route=\"/r199\"} 199"), "{text}");

        let gz = exchange(addr, &req("GET", "Accept-Encoding: gzip\r\n")).await;
        let (head, body) = split(&gz);
        assert!(head.contains("content-encoding: gzip\r\n"), "{head}");
        assert!(head.contains("vary: accept-encoding\r\n"), "{head}");
        assert!(head.contains(&format!("content-length: {}\r\n", body.len())), "{head}");
        assert!(body.len() < text.len() / 4, "{} of {}", body.len(), text.len());
        let mut unzipped = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(body), &mut unzipped)
            .expect("gunzip");
        assert_eq!(unzipped, text);

        for refused in ["Accept-Encoding: gzip;q=0\r\n", "Accept-Encoding: identity\r\n"] {
            let answer = exchange(addr, &req("GET", refused)).await;
            let (head, body) = split(&answer);
            assert!(!head.contains("content-encoding"), "{refused}: {head}");
            assert_eq!(body, text.as_bytes(), "{refused}");
        }

        // HEAD: the GET's head (length included), no body.
        for encoding in ["", "Accept-Encoding: gzip\r\n"] {
            let get = exchange(addr, &req("GET", encoding)).await;
            let head_answer = exchange(addr, &req("HEAD", encoding)).await;
            let (get_head, _) = split(&get);
            let (head_head, head_body) = split(&head_answer);
            assert!(head_body.is_empty(), "HEAD with a body");
            let headers = |h: &str| {
                let mut lines: Vec<String> =
                    h.lines().filter(|l| !l.starts_with("date:")).map(String::from).collect();
                lines.sort();
                lines
            };
            assert_eq!(headers(&head_head), headers(&get_head), "{encoding:?}");
        }

        let post = exchange(addr, &req("POST", "")).await;
        let (head, _) = split(&post);
        assert!(head.starts_with("HTTP/1.1 405"), "{head}");
        assert!(head.contains("allow: GET, HEAD\r\n"), "{head}");
        server.shutdown().await;
    }
}
