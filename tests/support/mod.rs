//! Test support, one module for every test binary: a scripted body and service on a mock
//! clock, a readable metrics snapshot, the metric names (from the crate, never spelled here),
//! and the submodules: `app` (a known axum app for exporter tests), `components` (real
//! Prometheus, statsd, promtool), `hostile` (hostile request material), `prom_text` (a strict
//! parser of the Prometheus text format).
#![allow(dead_code)]

pub mod app;
pub mod components;
pub mod hostile;
pub mod prom_text;

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::LazyLock;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame, SizeHint};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use tower_vitals::MockClock;
use tower_vitals::{MetricNames, DEFAULT_PREFIX};

/// The layer's metric names under the default prefix, as the crate defines them.
pub static NAMES: LazyLock<MetricNames> = LazyLock::new(|| MetricNames::new(DEFAULT_PREFIX));

/// The Prometheus name of the metric `name` (dots become underscores) followed by `suffix`
/// (`_total`, `_seconds_bucket`, ...), as metrics-exporter-prometheus renders it.
pub fn prom_name(name: &str, suffix: &str) -> String {
    format!("{}{suffix}", name.replace('.', "_"))
}

/// One sample of Prometheus data: a line of an exposition ([`prom_text::parse`]) or an element
/// of a PromQL instant-vector result ([`components::Prometheus::samples`]; `name` from
/// `__name__`, empty for an aggregate).
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.get(key).map(String::as_str)
    }
}

/// One step of a scripted response body. Each step first advances the mock clock by `advance`.
#[derive(Debug, Clone)]
pub enum Step {
    /// A data frame of `n` bytes.
    Data(usize),
    /// A trailers frame (optionally with `grpc-status`).
    Trailers(Option<u8>),
    /// `Pending` once (the waker is woken at once).
    Pending,
    /// An error frame.
    Error,
    /// A panic inside `poll_frame`.
    Panic,
}

/// A body that plays a script; `exact` makes `is_end_stream` true once the script is empty.
#[derive(Debug)]
pub struct ScriptBody {
    pub steps: VecDeque<(Duration, Step)>,
    pub exact: bool,
    pub mock: MockClock,
}

impl ScriptBody {
    pub fn new(
        mock: &MockClock,
        steps: impl IntoIterator<Item = (u64, Step)>,
        exact: bool,
    ) -> Self {
        ScriptBody {
            steps: steps.into_iter().map(|(ns, s)| (Duration::from_nanos(ns), s)).collect(),
            exact,
            mock: mock.clone(),
        }
    }
}

impl Body for ScriptBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let Some((advance, step)) = self.steps.pop_front() else {
            return Poll::Ready(None);
        };
        self.mock.advance(advance);
        match step {
            Step::Data(n) => Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![b'x'; n]))))),
            Step::Trailers(code) => {
                let mut h = HeaderMap::new();
                if let Some(code) = code {
                    h.insert("grpc-status", code.to_string().parse().expect("header value"));
                }
                Poll::Ready(Some(Ok(Frame::trailers(h))))
            }
            Step::Pending => {
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            Step::Error => Poll::Ready(Some(Err(std::io::Error::other("scripted body error")))),
            Step::Panic => panic!("scripted panic in poll_frame"),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.exact && self.steps.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(7)
    }
}

/// How the scripted service's future behaves.
#[derive(Clone)]
pub enum Head {
    /// `Pending` `pending` times, then a response with `status` and the body.
    Respond { pending: usize, status: u16, advance_ns: u64 },
    /// `Err` after `advance_ns`.
    Fail { advance_ns: u64 },
    /// Panics in `poll`.
    Panic,
}

pub struct HeadFuture {
    head: Head,
    body: Option<ScriptBody>,
    mock: MockClock,
}

impl Future for HeadFuture {
    type Output = Result<Response<ScriptBody>, std::io::Error>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.head {
            Head::Respond { pending, .. } if *pending > 0 => {
                *pending -= 1;
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            Head::Respond { status, advance_ns, .. } => {
                let (status, advance) = (*status, *advance_ns);
                self.mock.advance(std::time::Duration::from_nanos(advance));
                let body = self.body.take().expect("polled after completion");
                let mut res = Response::new(body);
                *res.status_mut() = http::StatusCode::from_u16(status).expect("status");
                Poll::Ready(Ok(res))
            }
            Head::Fail { advance_ns } => {
                let advance = *advance_ns;
                self.mock.advance(std::time::Duration::from_nanos(advance));
                Poll::Ready(Err(std::io::Error::other("scripted service error")))
            }
            Head::Panic => panic!("scripted panic in the service future"),
        }
    }
}

/// A service answering every request with the same scripted head and body.
pub fn scripted(
    mock: &MockClock,
    head: Head,
    body: impl Fn() -> ScriptBody + Clone,
) -> impl tower::Service<
    Request<String>,
    Response = Response<ScriptBody>,
    Error = std::io::Error,
    Future = HeadFuture,
> + Clone {
    let mock = mock.clone();
    tower::service_fn(move |_req: Request<String>| HeadFuture {
        head: head.clone(),
        body: Some(body()),
        mock: mock.clone(),
    })
}

/// Keeps the panics tests cause on purpose (messages starting with "scripted panic" or
/// containing "(on purpose") from printing a message and backtrace each; any other panic still
/// reports as usual. The hook is process-wide: installed once, whichever test comes first.
pub fn quiet_intended_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let payload = info.payload();
            let message = payload
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
                .unwrap_or("");
            if !(message.starts_with("scripted panic") || message.contains("(on purpose")) {
                default(info);
            }
        }));
    });
}

/// Polls a future to completion on this thread (scripts wake at once; bounded).
pub fn block_on<F: Future>(fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    let waker = futures_util::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    for _ in 0..10_000 {
        if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return out;
        }
    }
    panic!("future did not complete in 10 000 polls");
}

/// What one `poll_frame` returns.
pub type Polled<B> = Poll<Option<Result<Frame<<B as Body>::Data>, <B as Body>::Error>>>;

/// Polls a body once.
pub fn poll_once<B: Body + Unpin>(body: &mut B) -> Polled<B> {
    let waker = futures_util::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    Pin::new(body).poll_frame(&mut cx)
}

/// Drains a body to its end (bounded); returns (frames, bytes, errored).
pub fn drain<B: Body + Unpin>(body: &mut B) -> (u64, u64, bool)
where
    B::Data: bytes::Buf,
{
    use bytes::Buf;
    let (mut frames, mut bytes) = (0, 0);
    for _ in 0..100_000 {
        match poll_once(body) {
            Poll::Ready(Some(Ok(f))) => {
                if let Some(d) = f.data_ref() {
                    frames += 1;
                    bytes += d.remaining() as u64;
                }
            }
            Poll::Ready(Some(Err(_))) => return (frames, bytes, true),
            Poll::Ready(None) => return (frames, bytes, false),
            Poll::Pending => {}
        }
    }
    panic!("body did not end in 100 000 polls");
}

/// One metric from a snapshot, by name and its labels.
#[derive(Debug)]
pub struct Seen {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: DebugValue,
}

impl Seen {
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
    pub fn counter(&self) -> u64 {
        match &self.value {
            DebugValue::Counter(c) => *c,
            other => panic!("{} is not a counter: {other:?}", self.name),
        }
    }
    pub fn gauge(&self) -> f64 {
        match &self.value {
            DebugValue::Gauge(g) => g.into_inner(),
            other => panic!("{} is not a gauge: {other:?}", self.name),
        }
    }
    pub fn values(&self) -> Vec<f64> {
        match &self.value {
            DebugValue::Histogram(v) => v.iter().map(|f| f.into_inner()).collect(),
            other => panic!("{} is not a histogram: {other:?}", self.name),
        }
    }
}

/// A fresh `DebuggingRecorder`, set as this thread's recorder until the guard drops, and its
/// snapshotter. Leaked (one small recorder per test) so the guard can live in a test's struct.
pub fn local_recorder() -> (metrics::LocalRecorderGuard<'static>, Snapshotter) {
    let recorder: &'static DebuggingRecorder = Box::leak(Box::new(DebuggingRecorder::new()));
    (metrics::set_default_local_recorder(recorder), recorder.snapshotter())
}

/// Everything recorded since the last snapshot (the snapshotter drains counters and histograms;
/// handles registered but not recorded to since are left out, gauges are kept). Like every
/// reader of the layer gauges, it publishes them first (`tower_vitals::publish_gauges`: the
/// crate's own renders do the same).
pub fn snapshot(snapshotter: &Snapshotter) -> Vec<Seen> {
    tower_vitals::publish_gauges();
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(_, _, _, value)| match value {
            DebugValue::Counter(c) => *c != 0,
            DebugValue::Histogram(v) => !v.is_empty(),
            DebugValue::Gauge(_) => true,
        })
        .map(|(ck, _, _, value)| {
            let (_, key) = ck.into_parts();
            let (name, labels) = key.into_parts();
            Seen {
                name: name.as_str().to_owned(),
                labels: labels
                    .into_iter()
                    .map(|l| {
                        let (k, v) = l.into_parts();
                        (k.to_string(), v.to_string())
                    })
                    .collect(),
                value,
            }
        })
        .collect()
}

/// The metrics named `name` (all label sets).
pub fn named<'a>(seen: &'a [Seen], name: &str) -> Vec<&'a Seen> {
    seen.iter().filter(|s| s.name == name).collect()
}

/// The single metric named `name`, failing if there are zero or several label sets.
pub fn one<'a>(seen: &'a [Seen], name: &str) -> &'a Seen {
    let found = named(seen, name);
    assert_eq!(found.len(), 1, "expected one {name}, found {found:#?}");
    found[0]
}

/// The sum of a histogram's values over all its label sets.
pub fn hist_sum(seen: &[Seen], name: &str) -> f64 {
    named(seen, name).iter().flat_map(|s| s.values()).sum()
}

/// The total of a counter over all its label sets.
pub fn counter_total(seen: &[Seen], name: &str) -> u64 {
    named(seen, name).iter().map(|s| s.counter()).sum()
}

/// Resident memory of this process, in bytes (`VmRSS` of /proc/self/status; Linux).
pub fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status (Linux)");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kb * 1024
}
