//! Soak: exactly once under load and faults, over real hyper on 127.0.0.1.
//!
//! Concurrent clients send a fixed number of requests; a random fraction disconnect mid-body,
//! read slowly, hang up before the head, use hostile paths or an extension method, or hit
//! handlers that answer 500, panic, fail (`Err`), stream an error frame, or hang past the
//! server's timeout. The handlers keep their own record of what happened (the *truth*: how each
//! response body ended, each future that was dropped, each panic and error) independently of
//! the layer. At the end the layer's `requests` counter equals the truth per route and per
//! `error.type`, `active_requests` is back to 0, and `output_bytes` equals the bytes the
//! handlers produced. Meanwhile `/metrics`, served on its own 127.0.0.1 listener, is scraped
//! again and again: every scrape succeeds and parses.
//!
//! One test in this binary: it installs the global recorder (a `Fanout` of metrics-util's
//! `DebuggingRecorder` and the crate's Prometheus recorder), since hyper's connections run on
//! tokio worker threads. Bounded: a fixed request count, every client operation under a
//! timeout, the whole soak under 60 s.

mod support;

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use support::{hostile, prom_text};
use support::{prom_name, NAMES};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame};
use metrics_util::debugging::DebuggingRecorder;
use metrics_util::layers::FanoutBuilder;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::{Layer, Service};
use tower_vitals::prometheus::PrometheusMetrics;
use tower_vitals::{RouteName, VitalsLayer};

/// Requests sent in all (fixed), by this many concurrent clients.
const TOTAL: usize = 4_000;
const CLIENTS: usize = 12;
/// Concurrent `/metrics` scrapers during the soak (each every 100 ms).
const SCRAPERS: usize = 3;
/// The server's own timeout around each request (what cancels `/hang`).
const SERVER_TIMEOUT: Duration = Duration::from_millis(100);
/// Upper bound of the whole soak (the test fails past it).
const SOAK_LIMIT: Duration = Duration::from_secs(50);
const CLIENT_OP_TIMEOUT: Duration = Duration::from_secs(10);
/// SO_SNDBUF of the server's sockets and SO_RCVBUF of the clients' (the kernel doubles it).
const SOCKET_BUFFER: u32 = 16 * 1024;
/// hyper's write buffer on the server.
const HYPER_BUFFER: usize = 32 * 1024;

const ROUTES: [&str; 8] =
    ["/ok", "/stream", "/big", "/error", "/panic", "/svc-error", "/stream-error", "/hang"];
const NONE: &str = "none";

/// What the handlers saw, kept apart from the layer.
#[derive(Default)]
struct Truth {
    /// Requests that reached the server's service, by route.
    saw: Mutex<BTreeMap<String, u64>>,
    /// How each request ended, by (route, error.type or "none").
    outcomes: Mutex<BTreeMap<(String, String), u64>>,
    /// Data bytes the handlers' bodies handed out.
    bytes: AtomicU64,
}

static TRUTH: LazyLock<Truth> = LazyLock::new(Truth::default);

impl Truth {
    fn saw(&self, route: &str) {
        *self.saw.lock().expect("lock").entry(route.to_owned()).or_default() += 1;
    }
    fn ended(&self, route: &str, error_type: &str) {
        let key = (route.to_owned(), error_type.to_owned());
        *self.outcomes.lock().expect("lock").entry(key).or_default() += 1;
    }
    fn settled(&self) -> u64 {
        self.outcomes.lock().expect("lock").values().sum()
    }
    fn seen(&self) -> u64 {
        self.saw.lock().expect("lock").values().sum()
    }
}

fn route_of(path: &str) -> &'static str {
    ROUTES.iter().find(|r| **r == path).copied().unwrap_or(tower_vitals::labels::UNMATCHED)
}

/// A handler's body: chunks (optionally paced), optionally an error frame at the end. It tells
/// the truth how it ended: run to its end, failed, or dropped early.
struct SoakBody {
    route: &'static str,
    status: u16,
    chunks: VecDeque<Bytes>,
    pace: Option<Duration>,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    fail_at_end: bool,
    settled: bool,
}

impl SoakBody {
    fn new(route: &'static str, status: u16, chunks: Vec<Bytes>) -> Self {
        SoakBody {
            route,
            status,
            chunks: chunks.into(),
            pace: None,
            sleep: None,
            fail_at_end: false,
            settled: false,
        }
    }
    fn settle(&mut self, error_type: &str) {
        if !self.settled {
            self.settled = true;
            TRUTH.ended(self.route, error_type);
        }
    }
    fn complete_type(&self) -> String {
        if self.status >= 500 {
            self.status.to_string()
        } else {
            NONE.to_owned()
        }
    }
}

impl Body for SoakBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        if let Some(sleep) = self.sleep.as_mut() {
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.sleep = None;
        }
        let Some(chunk) = self.chunks.pop_front() else {
            if self.fail_at_end {
                self.settle("body_error");
                return Poll::Ready(Some(Err(std::io::Error::other("stream failed (on purpose)"))));
            }
            let kind = self.complete_type();
            self.settle(&kind);
            return Poll::Ready(None);
        };
        TRUTH.bytes.fetch_add(chunk.len() as u64, Ordering::SeqCst);
        if self.is_end_stream() {
            // The last frame: whoever stops polling now has seen the whole body.
            let kind = self.complete_type();
            self.settle(&kind);
        } else if let Some(pace) = self.pace {
            self.sleep = Some(Box::pin(tokio::time::sleep(pace)));
        }
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty() && !self.fail_at_end
    }
}

impl Drop for SoakBody {
    fn drop(&mut self) {
        if self.is_end_stream() {
            // Nothing left to send (includes a body dropped after its last frame).
            let kind = self.complete_type();
            self.settle(&kind);
        } else {
            self.settle("aborted");
        }
    }
}

/// Lives in the handler's future from `call` on: a future dropped before it settles was
/// cancelled (the server's timeout, or hyper giving up on the connection).
struct HeadGuard {
    route: &'static str,
    settled: bool,
}

impl HeadGuard {
    fn settle(&mut self, error_type: Option<&str>) {
        self.settled = true;
        if let Some(kind) = error_type {
            TRUTH.ended(self.route, kind);
        }
    }
}

impl Drop for HeadGuard {
    fn drop(&mut self) {
        if !self.settled {
            TRUTH.ended(self.route, "cancelled");
        }
    }
}

fn chunks(n: usize, size: usize, fill: u8) -> Vec<Bytes> {
    (0..n).map(|_| Bytes::from(vec![fill; size])).collect()
}

#[derive(Clone)]
struct Handler;

type HandlerFuture =
    Pin<Box<dyn Future<Output = Result<Response<SoakBody>, std::io::Error>> + Send>>;

impl<B> Service<Request<B>> for Handler {
    type Response = Response<SoakBody>;
    type Error = std::io::Error;
    type Future = HandlerFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let route = route_of(req.uri().path());
        // Created here, not in the async block, so a future dropped unpolled still reports.
        let guard = HeadGuard { route, settled: false };
        Box::pin(async move {
            let mut guard = guard;
            let respond = |guard: &mut HeadGuard, body: SoakBody| {
                guard.settle(None);
                let mut res = Response::new(body);
                *res.status_mut() = StatusCode::from_u16(res.body().status).expect("status");
                Ok(res)
            };
            match route {
                "/ok" => respond(&mut guard, SoakBody::new(route, 200, chunks(1, 2048, b'o'))),
                "/stream" => {
                    let mut body = SoakBody::new(route, 200, chunks(20, 1024, b's'));
                    body.pace = Some(Duration::from_millis(1));
                    respond(&mut guard, body)
                }
                "/big" => {
                    respond(&mut guard, SoakBody::new(route, 200, chunks(32, 16 * 1024, b'b')))
                }
                "/error" => respond(&mut guard, SoakBody::new(route, 500, chunks(1, 64, b'e'))),
                "/panic" => {
                    guard.settle(Some("panic"));
                    panic!("handler panicked (on purpose, soak)");
                }
                "/svc-error" => {
                    guard.settle(Some("service_error"));
                    Err(std::io::Error::other("service failed (on purpose)"))
                }
                "/stream-error" => {
                    let mut body = SoakBody::new(route, 200, chunks(3, 512, b'x'));
                    body.fail_at_end = true;
                    respond(&mut guard, body)
                }
                "/hang" => {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    respond(&mut guard, SoakBody::new(route, 200, chunks(1, 1, b'h')))
                }
                _ => respond(&mut guard, SoakBody::new(route, 404, chunks(1, 9, b'n'))),
            }
        })
    }
}

/// Serves the layered handler over hyper HTTP/1.1 on 127.0.0.1, one task per connection.
async fn serve(layer: VitalsLayer) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    // Small socket buffers on both sides (accepted sockets inherit the listener's), so a client
    // that stops reading really holds the server back, and one that hangs up mid-body is seen.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_send_buffer_size(SOCKET_BUFFER).expect("SO_SNDBUF");
    socket.bind(SocketAddr::from(([127, 0, 0, 1], 0))).expect("bind");
    let listener = socket.listen(256).expect("listen");
    let addr = listener.local_addr().expect("addr");
    let svc = layer.layer(Handler);
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let svc = svc.clone();
            tokio::spawn(async move {
                let hyper_svc =
                    hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
                        let route = route_of(req.uri().path());
                        TRUTH.saw(route);
                        if route != tower_vitals::labels::UNMATCHED {
                            req.extensions_mut().insert(RouteName::new(route));
                        }
                        // Handler is always ready: call at once, so every request the server saw
                        // reached the layer.
                        let fut = svc.clone().call(req);
                        async move {
                            match tokio::time::timeout(SERVER_TIMEOUT, fut).await {
                                Ok(result) => result,
                                Err(_) => Err(std::io::Error::other("server timeout")),
                            }
                        }
                    });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new()
                    // hyper's write buffer holds ~400 KiB by default: a body that fits is
                    // handed over whole before the client can push back. Keep it small.
                    .max_buf_size(HYPER_BUFFER)
                    .serve_connection(io, hyper_svc)
                    .await;
            });
        }
    });
    (addr, task)
}

/// What a client does with its request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Behaviour {
    /// Reads the whole response.
    Normal,
    /// Reads this many bytes, then closes the connection.
    DisconnectAfter(usize),
    /// Reads 8 KiB at a time with a pause between reads.
    SlowReader,
    /// Closes the connection this many ms after sending, before the head comes.
    HangUpAfterMs(u64),
}

impl Behaviour {
    fn kind(self) -> &'static str {
        match self {
            Behaviour::Normal => "reads all",
            Behaviour::DisconnectAfter(_) => "disconnects mid-body",
            Behaviour::SlowReader => "slow reader",
            Behaviour::HangUpAfterMs(_) => "hangs up before the head",
        }
    }
}

/// A request line for `path` with a hostile Host and header, `Connection: close`.
fn request_text(method: &str, path: &str, rng: &mut hostile::Rng) -> String {
    let host = rng.string(b"abcdefghijklmnopqrstuvwxyz0123456789", 10);
    let junk = rng.string(hostile::TOKEN_CHARS, 16);
    format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}.example\r\nX-Junk: {junk}\r\n\
         Connection: close\r\n\r\n"
    )
}

async fn client_request(
    addr: SocketAddr,
    text: String,
    behaviour: Behaviour,
) -> std::io::Result<()> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_recv_buffer_size(SOCKET_BUFFER)?;
    let mut stream = socket.connect(addr).await?;
    stream.write_all(text.as_bytes()).await?;
    let mut buf = vec![0u8; 64 * 1024];
    match behaviour {
        Behaviour::Normal => {
            let mut out = Vec::new();
            stream.read_to_end(&mut out).await?;
        }
        Behaviour::DisconnectAfter(limit) => {
            let mut got = 0;
            while got < limit {
                let n = stream.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                got += n;
            }
        }
        Behaviour::SlowReader => loop {
            let n = stream.read(&mut buf[..8192]).await?;
            if n == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        },
        Behaviour::HangUpAfterMs(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
    }
    Ok(())
}

/// Picks a route, method and behaviour for one request (the fault mix of the soak).
fn scenario(rng: &mut hostile::Rng) -> (String, &'static str, Behaviour) {
    let r = rng.below(100);
    let (path, behaviour) = match r {
        0..=24 => ("/ok".to_owned(), Behaviour::Normal),
        25..=34 => ("/stream".to_owned(), Behaviour::Normal),
        35..=44 => {
            ("/stream".to_owned(), Behaviour::DisconnectAfter(300 + rng.below(3000) as usize))
        }
        45..=51 => ("/big".to_owned(), Behaviour::SlowReader),
        52..=56 => {
            ("/big".to_owned(), Behaviour::DisconnectAfter(1 + rng.below(128 * 1024) as usize))
        }
        57..=64 => ("/error".to_owned(), Behaviour::Normal),
        65..=69 => ("/panic".to_owned(), Behaviour::Normal),
        70..=74 => ("/svc-error".to_owned(), Behaviour::Normal),
        75..=81 => ("/stream-error".to_owned(), Behaviour::Normal),
        82..=85 => ("/hang".to_owned(), Behaviour::Normal),
        86..=89 => ("/hang".to_owned(), Behaviour::HangUpAfterMs(5 + rng.below(40))),
        _ => (hostile::path(rng), Behaviour::Normal),
    };
    let method = if rng.chance(1, 30) { "FOO" } else { "GET" };
    (path, method, behaviour)
}

/// One scrape of `/metrics` over a fresh connection: the status and the body.
async fn scrape(addr: SocketAddr) -> Result<String, String> {
    let fetch = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .await
            .map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        stream.read_to_end(&mut out).await.map_err(|e| e.to_string())?;
        String::from_utf8(out).map_err(|e| e.to_string())
    };
    let raw = tokio::time::timeout(CLIENT_OP_TIMEOUT, fetch)
        .await
        .map_err(|_| "timeout".to_owned())??;
    let (head, body) = raw.split_once("\r\n\r\n").ok_or("no head")?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!("status: {head}"));
    }
    // A close-delimited or content-length body: both are the rest of the stream.
    Ok(body.to_owned())
}

#[test]
fn soak_over_real_hyper_counts_every_request_exactly_once_under_faults() {
    support::quiet_intended_panics();
    let debugging = DebuggingRecorder::new();
    let snapshotter = debugging.snapshotter();
    let prometheus = tower_vitals::prometheus::builder().build_recorder();
    let metrics = PrometheusMetrics::from_handle(prometheus.handle());
    let fanout = FanoutBuilder::default().add_recorder(debugging).add_recorder(prometheus).build();
    metrics::set_global_recorder(fanout).expect("the only recorder of this test binary");

    let layer = VitalsLayer::new();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let started = Instant::now();
    let sent = Arc::new(AtomicUsize::new(0));
    let intents: Arc<Mutex<BTreeMap<(String, &'static str), u64>>> = Arc::default();

    let (scrapes, scrape_failures, client_errors, mut scrape_times) = rt.block_on({
        let layer = layer.clone();
        let sent = Arc::clone(&sent);
        let intents = Arc::clone(&intents);
        let metrics = metrics.clone();
        async move {
            let (addr, server) = serve(layer.clone()).await;
            let metrics_server = metrics
                .serve(SocketAddr::from(([127, 0, 0, 1], 0)))
                .await
                .expect("metrics listener");
            let metrics_addr = metrics_server.local_addr();

            let mut clients = Vec::new();
            for c in 0..CLIENTS {
                let sent = Arc::clone(&sent);
                let intents = Arc::clone(&intents);
                clients.push(tokio::spawn(async move {
                    let mut rng = hostile::Rng::new(0x50a6 + c as u64);
                    let mut errors = 0u64;
                    while sent.fetch_add(1, Ordering::SeqCst) < TOTAL {
                        let (path, method, behaviour) = scenario(&mut rng);
                        let kind = route_of(path.split('?').next().unwrap_or("")).to_owned();
                        *intents
                            .lock()
                            .expect("lock")
                            .entry((kind, behaviour.kind()))
                            .or_default() += 1;
                        let text = request_text(method, &path, &mut rng);
                        let op = client_request(addr, text, behaviour);
                        // Errors (reset by a panicking handler, a failed stream...) are expected.
                        if !matches!(tokio::time::timeout(CLIENT_OP_TIMEOUT, op).await, Ok(Ok(())))
                        {
                            errors += 1;
                        }
                    }
                    errors
                }));
            }
            let scrapers: Vec<_> = (0..SCRAPERS)
                .map(|_| {
                    let sent = Arc::clone(&sent);
                    tokio::spawn(async move {
                        let (mut ok, mut failed, mut times) = (0u64, Vec::new(), Vec::new());
                        let mut last_total = 0.0;
                        let until = Instant::now() + SOAK_LIMIT;
                        while sent.load(Ordering::SeqCst) < TOTAL + CLIENTS
                            && Instant::now() < until
                        {
                            let asked = Instant::now();
                            let fetched = scrape(metrics_addr).await;
                            times.push(asked.elapsed());
                            match fetched.and_then(|text| prom_text::parse(&text)) {
                                Ok(samples) => {
                                    let total = prom_text::total(
                                        &samples,
                                        &prom_name(&NAMES.requests, "_total"),
                                    );
                                    if total < last_total {
                                        failed.push(format!(
                                            "requests went down: {last_total} -> {total}"
                                        ));
                                    }
                                    last_total = total;
                                    ok += 1;
                                }
                                Err(e) => failed.push(e),
                            }
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        (ok, failed, times)
                    })
                })
                .collect();
            let mut client_errors = 0;
            for c in clients {
                client_errors += c.await.expect("client task");
            }
            let (mut scrapes, mut scrape_failures, mut scrape_times) = (0, Vec::new(), Vec::new());
            for scraper in scrapers {
                let (ok, failed, times) = scraper.await.expect("scraper task");
                scrapes += ok;
                scrape_failures.extend(failed);
                scrape_times.extend(times);
            }
            // Let the server finish what it saw: every request settles (bounded).
            let until = Instant::now() + Duration::from_secs(10);
            while (TRUTH.settled() < TRUTH.seen() || layer.active_requests() != 0)
                && Instant::now() < until
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            server.abort();
            metrics_server.shutdown().await;
            (scrapes, scrape_failures, client_errors, scrape_times)
        }
    });
    drop(rt);
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(60), "soak took {elapsed:?}");

    // --- The layer against the truth.
    let seen = support::snapshot(&snapshotter);
    let saw = TRUTH.saw.lock().expect("lock").clone();
    let truth = TRUTH.outcomes.lock().expect("lock").clone();
    let mut measured: BTreeMap<(String, String), u64> = BTreeMap::new();
    for s in support::named(&seen, &NAMES.requests) {
        let route = s.label("http.route").expect("route").to_owned();
        let kind = s.label("error.type").unwrap_or(NONE).to_owned();
        *measured.entry((route, kind)).or_default() += s.counter();
    }
    let seen_total: u64 = saw.values().sum();
    assert_eq!(seen_total, TOTAL as u64, "the server saw every request sent");
    assert_eq!(measured, truth, "requests per (route, error.type): layer vs handlers");
    for (route, n) in &saw {
        let by_layer: u64 = measured.iter().filter(|((r, _), _)| r == route).map(|(_, v)| v).sum();
        assert_eq!(by_layer, *n, "route {route}: requests the server saw");
    }
    assert_eq!(layer.active_requests(), 0, "in flight after the soak");
    for gauge in support::named(&seen, &NAMES.active_requests) {
        assert_eq!(gauge.gauge(), 0.0, "active_requests gauge {:?}", gauge.labels);
    }
    let bytes = support::hist_sum(&seen, &NAMES.output_bytes);
    assert_eq!(bytes, TRUTH.bytes.load(Ordering::SeqCst) as f64, "output_bytes vs bytes produced");

    // --- Prometheus saw the same.
    assert!(
        scrape_failures.is_empty(),
        "{} failed scrapes: {:?}",
        scrape_failures.len(),
        scrape_failures
    );
    assert!(scrapes >= 10, "only {scrapes} scrapes during the soak");
    let samples = prom_text::parse(&metrics.render()).expect("final render parses");
    let mut prom: BTreeMap<(String, String), u64> = BTreeMap::new();
    for s in samples.iter().filter(|s| s.name == prom_name(&NAMES.requests, "_total")) {
        let route = s.label("http_route").expect("route").to_owned();
        let kind = s.label("error_type").unwrap_or(NONE).to_owned();
        *prom.entry((route, kind)).or_default() += s.value as u64;
    }
    assert_eq!(prom, truth, "Prometheus counters vs handlers");

    let intents = intents.lock().expect("lock").clone();
    // Faults: every request whose client misbehaves or whose handler fails, hangs or panics.
    let faulty = |route: &str, kind: &str| {
        kind != "reads all"
            || !["/ok", "/stream", "/big", tower_vitals::labels::UNMATCHED].contains(&route)
    };
    let faults: u64 = intents.iter().filter(|((r, k), _)| faulty(r, k)).map(|(_, n)| n).sum();
    scrape_times.sort();
    let scrape_p50 = scrape_times.get(scrape_times.len() / 2).copied().unwrap_or_default();
    let scrape_max = scrape_times.last().copied().unwrap_or_default();
    println!(
        "soak: {TOTAL} requests by {CLIENTS} clients in {:.1} s; faults injected: \
         {faults}; (route, client) -> n: {intents:?}; client errors seen: {client_errors}; outcomes (route, \
         error.type) -> n: {truth:?}; output bytes {bytes}; {scrapes} /metrics scrapes by {SCRAPERS} concurrent scrapers, all parsed \
         (scrape time p50 {scrape_p50:?}, max {scrape_max:?})",
        elapsed.as_secs_f64()
    );
}
