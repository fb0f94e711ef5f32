//! The demo's own traffic: a bounded load generator with a mix of well-behaved and unruly
//! clients, counting what it sent per route and which `error.type` each request must produce.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1;
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpSocket;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};

use super::app::routes;

/// One kind of client request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Fast JSON.
    Fast,
    /// Slow JSON.
    Slow,
    /// `/users/{id}` with a varying id.
    User,
    /// The 8 KiB-block download, read at full speed.
    Download,
    /// The 128-byte-block download.
    SmallBlocks,
    /// The 500.
    Fail,
    /// The stream that fails half-way.
    StreamError,
    /// A path no route matches (404).
    NotFound,
    /// A download the client abandons after 64 KiB (closes the connection).
    Disconnect,
    /// A download read by a slow client (small receive buffer, pauses between reads).
    SlowReader,
}

impl Kind {
    /// The `http.route` the layer will tag this request with.
    pub fn route(self) -> &'static str {
        match self {
            Kind::Fast => routes::FAST,
            Kind::Slow => routes::SLOW,
            Kind::User => routes::USER,
            Kind::Download | Kind::Disconnect | Kind::SlowReader => routes::DOWNLOAD,
            Kind::SmallBlocks => routes::DOWNLOAD_SMALL,
            Kind::Fail => routes::FAIL,
            Kind::StreamError => routes::STREAM_ERROR,
            Kind::NotFound => routes::UNMATCHED,
        }
    }

    /// The `error.type` the layer must record for it, if any.
    pub fn expected_error(self) -> Option<&'static str> {
        match self {
            Kind::Fail => Some("500"),
            Kind::StreamError => Some("body_error"),
            Kind::Disconnect => Some("aborted"),
            _ => None,
        }
    }

    fn path(self, n: u64) -> String {
        match self {
            Kind::User => format!("/users/{}", 1 + n % 500),
            Kind::NotFound => format!("/no/such/page/{}", n % 7),
            other => other.route().to_owned(),
        }
    }
}

/// One round of traffic every [`ROUND`]: (kind, every how many rounds, how many).
const MIX: &[(Kind, u64, u64)] = &[
    (Kind::Fast, 1, 6),
    (Kind::User, 1, 3),
    (Kind::Slow, 1, 1),
    (Kind::Fail, 4, 1),
    (Kind::Download, 5, 1),
    (Kind::NotFound, 10, 1),
    (Kind::SmallBlocks, 10, 1),
    (Kind::StreamError, 10, 1),
    (Kind::Disconnect, 20, 1),
    (Kind::SlowReader, 20, 1),
];

/// Time between rounds (at `rate` 1.0).
pub const ROUND: Duration = Duration::from_millis(100);
/// Requests in flight at most.
const MAX_IN_FLIGHT: usize = 32;
/// The generator stops issuing after this many rounds, whatever the clock says.
const MAX_ROUNDS: u64 = 10_000_000;
/// Bytes the disconnecting client reads before it leaves.
const DISCONNECT_AFTER: usize = 64 * 1024;
/// The slow reader's receive buffer and its pause between reads.
const SLOW_RECV_BUFFER: u32 = 16 * 1024;
const SLOW_PAUSE: Duration = Duration::from_millis(3);
/// A single request gives up after this long (the generator's own bound).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What the generator sent, per route.
#[derive(Default, Clone, Debug)]
pub struct Sent {
    /// Requests sent per `http.route`.
    pub requests: BTreeMap<String, u64>,
    /// Expected `error.type` counts per route.
    pub errors: BTreeMap<String, BTreeMap<String, u64>>,
    /// Requests the client could not even send (connection refused): not counted above.
    pub not_sent: u64,
}

impl Sent {
    /// All requests sent.
    pub fn total(&self) -> u64 {
        self.requests.values().sum()
    }
}

/// A running generator.
pub struct Load {
    sent: Arc<Mutex<Sent>>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Load {
    /// Starts sending to `addr`; `rate` scales the number of rounds per second.
    pub fn start(addr: SocketAddr, rate: f64) -> Load {
        let sent = Arc::new(Mutex::new(Sent::default()));
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(generate(addr, rate, Arc::clone(&sent), stopped));
        Load { sent, stop, task }
    }

    /// What was sent so far.
    pub fn sent(&self) -> Sent {
        self.sent.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Stops issuing, waits for every request in flight to end, and returns what was sent.
    pub async fn finish(self) -> Sent {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        let sent = self.sent.lock().unwrap_or_else(PoisonError::into_inner);
        sent.clone()
    }
}

async fn generate(
    addr: SocketAddr,
    rate: f64,
    sent: Arc<Mutex<Sent>>,
    mut stop: watch::Receiver<bool>,
) {
    let period = ROUND.div_f64(rate.clamp(0.01, 100.0));
    let mut tick = tokio::time::interval_at(Instant::now(), period);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let permits = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut tasks = JoinSet::new();
    let mut n = 0u64;
    for round in 0..MAX_ROUNDS {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => break,
        }
        for &(kind, every, count) in MIX {
            if round % every != 0 {
                continue;
            }
            for _ in 0..count {
                n += 1;
                let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else { continue };
                let sent = Arc::clone(&sent);
                let path = kind.path(n);
                let trace = traceparent(n);
                tasks.spawn(async move {
                    let request = one(addr, kind, &path, &trace);
                    let delivered =
                        tokio::time::timeout(REQUEST_TIMEOUT, request).await.unwrap_or(true);
                    let mut sent = sent.lock().unwrap_or_else(PoisonError::into_inner);
                    if delivered {
                        *sent.requests.entry(kind.route().to_owned()).or_default() += 1;
                        if let Some(error) = kind.expected_error() {
                            let errors = sent.errors.entry(kind.route().to_owned()).or_default();
                            *errors.entry(error.to_owned()).or_default() += 1;
                        }
                    } else {
                        sent.not_sent += 1;
                    }
                    drop(permit);
                });
            }
        }
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
}

/// A W3C `traceparent` header for the `n`th request, as a traced client would send it: the
/// trace id is this run's random half and `n`, so exemplars link to distinct requests.
fn traceparent(n: u64) -> String {
    static RUN: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let run = *RUN.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.subsec_nanos());
        u64::from(nanos).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1
    });
    format!("00-{run:016x}{n:016x}-{:016x}-01", n | 1 << 63)
}

/// Sends one request of `kind` with a `traceparent` header; false if it never reached the
/// server (no connection).
async fn one(addr: SocketAddr, kind: Kind, path: &str, traceparent: &str) -> bool {
    let Ok(socket) = TcpSocket::new_v4() else { return false };
    if kind == Kind::SlowReader || kind == Kind::Disconnect {
        let _ = socket.set_recv_buffer_size(SLOW_RECV_BUFFER);
    }
    let Ok(stream) = socket.connect(addr).await else { return false };
    let Ok((mut sender, conn)) = http1::handshake(TokioIo::new(stream)).await else { return false };
    let conn = tokio::spawn(conn);
    let request = Request::get(path)
        .header(hyper::header::HOST, addr.to_string())
        .header("traceparent", traceparent)
        .body(Empty::<Bytes>::new())
        .expect("a valid request");
    if let Ok(response) = sender.send_request(request).await {
        let mut body = response.into_body();
        let mut read = 0usize;
        while let Some(Ok(frame)) = body.frame().await {
            read += frame.data_ref().map_or(0, Bytes::len);
            match kind {
                Kind::Disconnect if read >= DISCONNECT_AFTER => {
                    // Leave mid-download: drop the body and close the socket.
                    drop(body);
                    conn.abort();
                    let _ = conn.await;
                    return true;
                }
                Kind::SlowReader => tokio::time::sleep(SLOW_PAUSE).await,
                _ => {}
            }
        }
    }
    drop(sender);
    let _ = conn.await;
    true
}
