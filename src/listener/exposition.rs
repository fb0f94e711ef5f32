//! One render, shared: the scrapes of an exposition that arrive together (during a render, or
//! within a short window after it) get the same rendered body, and the same gzip-compressed
//! body when they ask for gzip. At most one render (or compression) runs at a time per
//! exposition, on tokio's blocking pool; a scrape holds a reference to the shared body, never a
//! copy of its own, so clients that do not read cost one body between them.
//!
//! The render itself is opaque: a closure from a [`Format`] to the body's bytes.

use std::io::Write;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode};
use tokio::time::Instant;

/// A format an exposition is rendered in. Scrapes share a body only within one format (and one
/// encoding).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
// Which formats are rendered depends on the recorder and the features.
#[allow(dead_code)]
pub(crate) enum Format {
    /// The Prometheus text format 0.0.4.
    Text,
    /// Length-delimited protobuf `MetricFamily` messages.
    Protobuf,
    /// OpenMetrics text.
    OpenMetrics,
}

impl Format {
    const ALL: usize = 3;

    fn index(self) -> usize {
        match self {
            Format::Text => 0,
            Format::Protobuf => 1,
            Format::OpenMetrics => 2,
        }
    }
}

/// The render closure: the exposition, now, in the given format.
type Render = dyn Fn(Format) -> Bytes + Send + Sync;

/// A body rendered (or compressed) from `started` to `finished`, shared by every scrape it
/// serves.
#[derive(Clone)]
struct Rendered {
    started: Instant,
    finished: Instant,
    body: Bytes,
}

/// The shared render of one exposition. Cheap to clone (one `Arc`).
#[derive(Clone)]
pub(crate) struct Exposition {
    inner: Arc<Inner>,
}

struct Inner {
    render: Box<Render>,
    share_for: Duration,
    /// The latest body of each format, plain (`[0]`) and gzip (`[1]`). Held briefly: a timer
    /// drops each one `share_for` after it was made.
    latest: Mutex<[[Option<Rendered>; 2]; Format::ALL]>,
    /// Held by the one render or compression in progress.
    rendering: Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for Exposition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exposition").field("share_for", &self.inner.share_for).finish()
    }
}

impl Exposition {
    /// An exposition rendered by `render`, its bodies shared for `share_for` after each render.
    pub(crate) fn new(
        render: impl Fn(Format) -> Bytes + Send + Sync + 'static,
        share_for: Duration,
    ) -> Self {
        Exposition {
            inner: Arc::new(Inner {
                render: Box::new(render),
                share_for,
                latest: Mutex::new(Default::default()),
                rendering: Arc::new(tokio::sync::Mutex::new(())),
            }),
        }
    }

    /// The answer to a `GET` or `HEAD` of this exposition in `format`, given the request's
    /// headers: `200` with the shared body (gzip-compressed when `Accept-Encoding` asks for it,
    /// with `Content-Encoding: gzip`), `Content-Type: content_type` and `Vary: Accept-Encoding`;
    /// `500` if the render failed (panicked). Must be called inside a tokio runtime.
    pub(crate) async fn answer(
        &self,
        format: Format,
        content_type: HeaderValue,
        request: &HeaderMap,
    ) -> Response<Bytes> {
        let gzip = accepts_gzip(request.get(header::ACCEPT_ENCODING));
        let Some(body) = self.body(format, gzip).await else {
            let mut response = Response::new(Bytes::new());
            *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            return response;
        };
        let mut response = Response::new(body);
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, content_type);
        headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
        if gzip {
            headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        response
    }

    /// The body of `format` (gzip-compressed if `gzip`), shared with the scrapes around it.
    /// `None` if rendering or compressing panicked.
    pub(crate) async fn body(&self, format: Format, gzip: bool) -> Option<Bytes> {
        let arrived = Instant::now();
        if let Some(body) = self.inner.fresh(format, gzip, arrived) {
            return Some(body);
        }
        // The render runs in a task of its own, holding the lock: a scrape that goes away while
        // it waits does not cut it short, and the next scrape cannot start a second one.
        let rendering = Arc::clone(&self.inner.rendering).lock_owned().await;
        let inner = Arc::clone(&self.inner);
        let task = tokio::spawn(async move {
            let _rendering = rendering;
            // Rendered while this scrape waited for the lock: as fresh as its own would be.
            if let Some(body) = inner.fresh(format, gzip, arrived) {
                return Some(body);
            }
            let plain = match inner.fresh(format, false, arrived) {
                Some(plain) => plain,
                None => inner.make(format, false, None).await?,
            };
            if gzip {
                inner.make(format, true, Some(plain)).await
            } else {
                Some(plain)
            }
        });
        task.await.ok().flatten()
    }
}

impl Inner {
    fn latest(&self) -> std::sync::MutexGuard<'_, [[Option<Rendered>; 2]; Format::ALL]> {
        // The guarded data is a plain cache: a panic elsewhere cannot leave it inconsistent.
        self.latest.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The latest body of `format`/`gzip` if it was finished within `share_for` (a scrape that
    /// waited for a long render gets it, however long it took), or began after `arrived`.
    fn fresh(&self, format: Format, gzip: bool, arrived: Instant) -> Option<Bytes> {
        let latest = self.latest();
        let rendered = latest[format.index()][usize::from(gzip)].as_ref()?;
        let recent = rendered.finished.elapsed() <= self.share_for;
        (recent || rendered.started >= arrived).then(|| rendered.body.clone())
    }

    /// Renders `format` (or compresses `plain`) on the blocking pool, keeps the result for
    /// `share_for`, and returns it. `None` if the render panicked.
    async fn make(
        self: &Arc<Self>,
        format: Format,
        gzip: bool,
        plain: Option<Bytes>,
    ) -> Option<Bytes> {
        let started = Instant::now();
        let inner = Arc::clone(self);
        let body = tokio::task::spawn_blocking(move || match plain {
            Some(plain) => compress(&plain),
            None => (inner.render)(format),
        })
        .await
        .ok()?;
        let slot = (format.index(), usize::from(gzip));
        let finished = Instant::now();
        self.latest()[slot.0][slot.1] = Some(Rendered { started, finished, body: body.clone() });
        // Let the body go once nobody can share it any more: an exposition nobody scrapes holds
        // no memory.
        let inner = Arc::clone(self);
        tokio::spawn(async move {
            tokio::time::sleep(inner.share_for).await;
            let mut latest = inner.latest();
            if latest[slot.0][slot.1].as_ref().is_some_and(|r| r.started == started) {
                latest[slot.0][slot.1] = None;
            }
        });
        Some(body)
    }
}

/// `body`, gzip-compressed (the default level: the body is compressed once and shared, and a
/// smaller body is what a scraper pays for on the wire).
fn compress(body: &[u8]) -> Bytes {
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 16 + 64),
        flate2::Compression::default(),
    );
    // Writing to a `Vec` cannot fail.
    let _ = encoder.write_all(body);
    Bytes::from(encoder.finish().unwrap_or_default())
}

/// Whether `Accept-Encoding` asks for gzip (RFC 9110 §12.5.3): `gzip` (or `x-gzip`, or `*`
/// when gzip is not named) with a `q` above 0, and not less wanted than `identity` when
/// `identity` is named. Absent or unreadable: no.
pub(crate) fn accepts_gzip(accept_encoding: Option<&HeaderValue>) -> bool {
    let Some(value) = accept_encoding.and_then(|v| v.to_str().ok()) else { return false };
    let mut gzip: Option<f32> = None;
    let mut star: Option<f32> = None;
    let mut identity: Option<f32> = None;
    for coding in value.split(',') {
        let mut parts = coding.split(';').map(str::trim);
        let name = parts.next().unwrap_or("");
        let mut q = 1.0;
        for param in parts {
            if let Some((k, v)) = param.split_once('=') {
                if k.trim().eq_ignore_ascii_case("q") {
                    // An unreadable weight is no weight: the coding is not acceptable.
                    q = v.trim().parse::<f32>().ok().filter(|q| q.is_finite()).unwrap_or(0.0);
                }
            }
        }
        let slot = if name.eq_ignore_ascii_case("gzip") || name.eq_ignore_ascii_case("x-gzip") {
            &mut gzip
        } else if name == "*" {
            &mut star
        } else if name.eq_ignore_ascii_case("identity") {
            &mut identity
        } else {
            continue;
        };
        // A coding named twice: the highest weight counts.
        *slot = Some(slot.map_or(q, |old: f32| old.max(q)));
    }
    let gzip = gzip.or(star).unwrap_or(0.0);
    gzip > 0.0 && !identity.is_some_and(|identity| gzip < identity)
}

/// Whether a request method reads an exposition (`GET`, `HEAD`).
pub(crate) fn reads(method: &Method) -> bool {
    method == Method::GET || method == Method::HEAD
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn header(value: &str) -> Option<HeaderValue> {
        Some(HeaderValue::from_str(value).expect("header value"))
    }

    #[test]
    fn gzip_is_chosen_only_when_asked() {
        for (value, gzip) in [
            ("gzip", true),
            ("GZIP", true),
            ("x-gzip", true),
            ("gzip, deflate, br", true),
            ("deflate, gzip;q=0.5", true),
            ("br;q=1.0, gzip;q=0.8, *;q=0.1", true),
            ("*", true),
            ("identity;q=0, *", true),
            ("gzip;q=0", false),
            ("gzip; q=0.000", false),
            ("*;q=0", false),
            ("gzip;q=0, *", false),
            ("identity", false),
            ("deflate, br", false),
            ("gzip;q=0.5, identity", false),
            ("gzip;q=nonsense", false),
            ("", false),
        ] {
            assert_eq!(accepts_gzip(header(value).as_ref()), gzip, "{value:?}");
        }
        assert!(!accepts_gzip(None));
        let not_text = HeaderValue::from_bytes(b"gzip\xff").expect("opaque bytes");
        assert!(!accepts_gzip(Some(&not_text)));
    }

    #[test]
    fn compress_round_trips() {
        let body: Vec<u8> = (0..100_000u32)
            .flat_map(|i| format!("x{{i=\"{}\"}} 1\n", i % 97).into_bytes())
            .collect();
        let gz = compress(&body);
        assert!(gz.len() < body.len() / 10, "{} of {}", gz.len(), body.len());
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&gz[..]).read_to_end(&mut out).expect("gunzip");
        assert_eq!(out, body);
    }

    fn counting(renders: &Arc<AtomicUsize>) -> Exposition {
        let renders = Arc::clone(renders);
        Exposition::new(
            move |format| {
                let n = renders.fetch_add(1, Ordering::SeqCst) + 1;
                Bytes::from(format!("{format:?} render {n}\n").repeat(100))
            },
            Duration::from_secs(60),
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_scrapes_share_one_render_and_one_body() {
        let renders = Arc::new(AtomicUsize::new(0));
        let exposition = counting(&renders);
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let exposition = exposition.clone();
                tokio::spawn(async move { exposition.body(Format::Text, false).await })
            })
            .collect();
        let mut bodies = vec![];
        for task in tasks {
            bodies.push(task.await.expect("task").expect("rendered"));
        }
        assert_eq!(renders.load(Ordering::SeqCst), 1, "one render for 50 scrapes");
        // The same allocation, not equal copies.
        assert!(bodies.iter().all(|b| b.as_ptr() == bodies[0].as_ptr()));
        // Another format is another render; gzip of a rendered format is no render.
        let proto = exposition.body(Format::Protobuf, false).await.expect("rendered");
        assert!(proto.starts_with(b"Protobuf render 2"));
        let gz = exposition.body(Format::Text, true).await.expect("compressed");
        assert_eq!(renders.load(Ordering::SeqCst), 2);
        let gz_again = exposition.body(Format::Text, true).await.expect("compressed");
        assert_eq!(gz.as_ptr(), gz_again.as_ptr(), "one compression, shared");
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&gz[..]).read_to_end(&mut out).expect("gunzip");
        assert_eq!(out, bodies[0]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn scrapes_that_waited_for_a_render_longer_than_the_window_share_it() {
        let renders = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&renders);
        let exposition = Exposition::new(
            move |_| {
                counted.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(600));
                Bytes::from_static(b"slow")
            },
            Duration::from_millis(400),
        );
        let first = {
            let exposition = exposition.clone();
            tokio::spawn(async move { exposition.body(Format::Text, false).await })
        };
        // The others arrive while the first render runs (it takes 600 ms).
        tokio::time::sleep(Duration::from_millis(50)).await;
        let others: Vec<_> = (0..10)
            .map(|_| {
                let exposition = exposition.clone();
                tokio::spawn(async move { exposition.body(Format::Text, false).await })
            })
            .collect();
        assert!(first.await.expect("task").is_some());
        for other in others {
            assert!(other.await.expect("task").is_some());
        }
        assert_eq!(renders.load(Ordering::SeqCst), 1, "the waiters rendered again");
    }

    #[tokio::test]
    async fn a_body_is_dropped_once_its_window_closes() {
        let renders = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&renders);
        let exposition = Exposition::new(
            move |_| Bytes::from(format!("{}", counted.fetch_add(1, Ordering::SeqCst))),
            Duration::from_millis(50),
        );
        let first = exposition.body(Format::Text, false).await.expect("rendered");
        assert_eq!(&first[..], b"0");
        // Poll until the window's timer has let the body go (bounded: 5 s).
        let mut gone = false;
        for _ in 0..500 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            if exposition.inner.latest()[0][0].is_none() {
                gone = true;
                break;
            }
        }
        assert!(gone, "the body is still held after its window");
        let second = exposition.body(Format::Text, false).await.expect("rendered");
        assert_eq!(&second[..], b"1", "a new render after the window");
    }

    #[tokio::test]
    async fn a_panicking_render_is_a_500_and_the_next_scrape_renders_again() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&calls);
        let exposition = Exposition::new(
            move |_| {
                if counted.fetch_add(1, Ordering::SeqCst) == 0 {
                    panic!("render failed");
                }
                Bytes::from_static(b"ok")
            },
            Duration::from_secs(60),
        );
        let headers = HeaderMap::new();
        let ct = HeaderValue::from_static("text/plain");
        let failed = exposition.answer(Format::Text, ct.clone(), &headers).await;
        assert_eq!(failed.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let answered = exposition.answer(Format::Text, ct, &headers).await;
        assert_eq!(answered.status(), StatusCode::OK);
        assert_eq!(answered.body(), &Bytes::from_static(b"ok"));
        assert!(!answered.headers().contains_key(header::CONTENT_ENCODING));
        assert_eq!(answered.headers()[header::VARY], "accept-encoding");
    }

    #[test]
    fn only_get_and_head_read() {
        assert!(reads(&Method::GET) && reads(&Method::HEAD));
        assert!(!reads(&Method::POST) && !reads(&Method::OPTIONS));
    }
}
