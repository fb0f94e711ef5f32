//! Serving `/vitals` (the page) and `/vitals.json` (its data): one Tower service.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};

use super::recorder::Inner;
use super::render::JsonBody;

/// The page: one self-contained HTML file (inline CSS, JS and SVG; no external resource).
pub const PAGE: &str = include_str!("page.html");

/// The page's `Content-Security-Policy`: its own inline script, named by its SHA-256 hash (no
/// other script can run, inline or not), its inline style, `fetch` to the same origin, nothing
/// else (no external script, font, image or frame). The hash is of the page's constant script; a
/// unit test recomputes it from [`PAGE`], so the two cannot drift apart.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; \
    script-src 'sha256-V97CpaL1GX5nwi758H9f4SlzwfG+/NE6VQOmjAV73Kc='; style-src 'unsafe-inline'; connect-src 'self'; img-src 'none'; \
    base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// A response body of the live service: the page, or a `/vitals.json` shared by the requests
/// that asked for it at about the same time (one copy in memory, however many readers).
#[derive(Clone, Debug, Default)]
pub struct LiveBody {
    data: Option<Bytes>,
}

impl LiveBody {
    fn new(data: Bytes) -> Self {
        LiveBody { data: (!data.is_empty()).then_some(data) }
    }

    /// The whole body (empty once it has been polled out).
    pub fn bytes(&self) -> Bytes {
        self.data.clone().unwrap_or_default()
    }
}

impl http_body::Body for LiveBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.get_mut().data.take().map(|d| Ok(http_body::Frame::data(d))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.data.as_ref().map_or(0, |d| d.len() as u64))
    }
}

/// The response to `method` on `path`, with `body`: headers for the JSON when the path ends in
/// `.json`, for the page otherwise.
fn respond(json: bool, body: Bytes) -> Response<LiveBody> {
    let mut r = Response::new(LiveBody::new(body));
    let h = r.headers_mut();
    let content_type = if json { "application/json" } else { "text/html; charset=utf-8" };
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if !json {
        if let Ok(policy) = HeaderValue::from_str(CONTENT_SECURITY_POLICY) {
            h.insert(header::CONTENT_SECURITY_POLICY, policy);
        }
        h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    }
    r
}

/// The answer to `method` on `path`: the JSON when the path ends in `.json` (rendered off the
/// async workers, shared), the page otherwise; `405` with `Allow` for methods other than `GET`
/// and `HEAD`.
pub(crate) fn answer(inner: &Arc<Inner>, method: &Method, path: &str) -> LiveFuture {
    let json = path.ends_with(".json");
    let now = if method != Method::GET && method != Method::HEAD {
        let mut r = Response::new(LiveBody::default());
        *r.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        r.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        r
    } else if method == Method::HEAD {
        respond(json, Bytes::new())
    } else if json {
        return LiveFuture(Answer::Json(JsonBody::new(Arc::clone(inner))));
    } else {
        respond(false, Bytes::from_static(PAGE.as_bytes()))
    };
    LiveFuture(Answer::Now(Some(now)))
}

/// The future of a [`LiveService`] call: ready at once for the page, when the shared render
/// is done for `/vitals.json`.
pub struct LiveFuture(Answer);

enum Answer {
    Now(Option<Response<LiveBody>>),
    Json(JsonBody),
}

impl std::fmt::Debug for LiveFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveFuture").finish_non_exhaustive()
    }
}

impl Future for LiveFuture {
    type Output = Result<Response<LiveBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.get_mut().0 {
            Answer::Now(r) => Poll::Ready(Ok(r.take().unwrap_or_default())),
            Answer::Json(body) => Pin::new(body).poll(cx).map(|b| Ok(respond(true, b))),
        }
    }
}

/// A Tower [`Service`](tower_service::Service) answering with the page, or with the JSON when
/// the request path ends in `.json`. Made by [`Live::service`](super::Live::service); never
/// fails. Route it at both `/vitals` and `/vitals.json` (the page fetches its own path +
/// `.json`): in axum, `.route("/vitals", get_service(live.service()))` and the same for
/// `/vitals.json`, after the layer (so these requests are not measured).
///
/// The JSON is rendered off the async workers (tokio's blocking pool inside a tokio runtime,
/// else a thread of its own), one render at a time, and shared: requests that arrive while a
/// render runs, or within a second after it, get its body.
#[derive(Clone)]
pub struct LiveService {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for LiveService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveService").finish_non_exhaustive()
    }
}

impl<B> tower_service::Service<Request<B>> for LiveService {
    type Response = Response<LiveBody>;
    type Error = Infallible;
    type Future = LiveFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        answer(&self.inner, request.method(), request.uri().path())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn inner() -> Arc<Inner> {
        Arc::new(Inner::new(quanta::Clock::mock().0, Duration::from_secs(60), None, 10, 2))
    }

    fn block_on<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().build().expect("runtime").block_on(f)
    }

    fn get(i: &Arc<Inner>, method: Method, path: &str) -> Response<LiveBody> {
        block_on(answer(i, &method, path)).unwrap_or_else(|e| match e {})
    }

    #[test]
    fn page_or_json_by_path_and_only_get_or_head() {
        let i = inner();
        let page = get(&i, Method::GET, "/vitals");
        assert_eq!(page.status(), StatusCode::OK);
        assert!(page.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap_or("")
            .starts_with("text/html"));
        assert_eq!(page.headers()[header::CONTENT_SECURITY_POLICY], CONTENT_SECURITY_POLICY);
        assert_eq!(page.body().bytes(), PAGE.as_bytes());
        let json = get(&i, Method::GET, "/admin/vitals.json");
        assert_eq!(json.headers()[header::CONTENT_TYPE], "application/json");
        assert!(json.body().bytes().starts_with(b"{\"schema\":\"tower-vitals.live/1\""));
        assert!(get(&i, Method::HEAD, "/vitals").body().bytes().is_empty());
        let post = get(&i, Method::POST, "/vitals");
        assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(post.headers()[header::ALLOW], "GET, HEAD");
    }

    #[test]
    fn concurrent_json_requests_share_one_render() {
        let i = inner();
        // All 50 polled before the first render can finish (they wait together).
        let all = (0..50).map(|_| answer(&i, &Method::GET, "/vitals.json"));
        let bodies: Vec<Bytes> = block_on(futures_util::future::join_all(all))
            .into_iter()
            .map(|r| r.unwrap_or_else(|e| match e {}).body().bytes())
            .collect();
        assert_eq!(i.json.renders(), 1, "50 requests at once, one render");
        assert!(bodies.iter().all(|b| b.as_ptr() == bodies[0].as_ptr()), "one shared copy");
    }

    #[test]
    fn the_policy_names_the_page_script_by_its_hash_and_allows_no_inline_script() {
        let policy = CONTENT_SECURITY_POLICY;
        let script_src = policy
            .split(';')
            .map(str::trim)
            .find(|d| d.starts_with("script-src "))
            .expect("a script-src directive");
        assert!(!script_src.contains("unsafe"), "{script_src}");
        // The script as the browser sees it: the text of the one <script> element, found here
        // without the helper that the policy is computed from.
        let script = PAGE.split("<script>").nth(1).and_then(|s| s.split("</script>").next());
        let script = script.expect("the page's script");
        assert!(script.len() > 1000 && script.contains("refresh()"), "the whole script");
        use base64::Engine as _;
        use sha2::Digest as _;
        let hash = base64::engine::general_purpose::STANDARD
            .encode(sha2::Sha256::digest(script.as_bytes()));
        assert_eq!(script_src, format!("script-src 'sha256-{hash}'"));
    }

    #[test]
    fn the_page_loads_nothing_from_elsewhere_and_never_uses_inner_html() {
        for needle in [
            "http://",
            "https://",
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
        ] {
            let hits: Vec<&str> = PAGE.lines().filter(|l| l.contains(needle)).collect();
            // The SVG namespace URI is an identifier, not a fetch.
            let hits: Vec<&&str> =
                hits.iter().filter(|l| !l.contains("http://www.w3.org/2000/svg")).collect();
            assert!(hits.is_empty(), "{needle}: {hits:?}");
        }
        assert_eq!(PAGE.matches("<script").count(), 1);
    }
}
