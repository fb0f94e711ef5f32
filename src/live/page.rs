//! Serving `/vitals` (the page) and `/vitals.json` (its data): one Tower service.

use std::convert::Infallible;
use std::future::{ready, Ready};
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{header, HeaderValue, Method, Request, Response, StatusCode};

use super::recorder::Inner;

/// The page: one self-contained HTML file (inline CSS, JS and SVG; no external resource).
pub const PAGE: &str = include_str!("page.html");

/// The page's `Content-Security-Policy`: its own inline script and style, `fetch` to the same
/// origin, nothing else (no external script, font, image or frame).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'unsafe-inline'; \
     style-src 'unsafe-inline'; connect-src 'self'; img-src 'none'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// The answer to `method` on `path`: the JSON when the path ends in `.json`, the page
/// otherwise; `405` for methods other than `GET` and `HEAD`.
pub(crate) fn answer(inner: &Inner, method: &Method, path: &str) -> Response<String> {
    if method != Method::GET && method != Method::HEAD {
        let mut r = Response::new(String::new());
        *r.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        r.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let json = path.ends_with(".json");
    let body = if method == Method::HEAD {
        String::new()
    } else if json {
        super::json::render(&super::snapshot::take(inner))
    } else {
        PAGE.to_owned()
    };
    let mut r = Response::new(body);
    let h = r.headers_mut();
    let content_type = if json { "application/json" } else { "text/html; charset=utf-8" };
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if !json {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        );
        h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    }
    r
}

/// A Tower [`Service`](tower_service::Service) answering with the page, or with the JSON when
/// the request path ends in `.json`. Made by [`Live::service`](super::Live::service); never
/// fails. Route it at both `/vitals` and `/vitals.json` (the page fetches its own path +
/// `.json`): in axum, `.route("/vitals", get_service(live.service()))` and the same for
/// `/vitals.json`, after the layer (so these requests are not measured).
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
    type Response = Response<String>;
    type Error = Infallible;
    type Future = Ready<Result<Response<String>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        ready(Ok(answer(&self.inner, request.method(), request.uri().path())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn inner() -> Inner {
        Inner::new(quanta::Clock::mock().0, Duration::from_secs(60), None, 10)
    }

    #[test]
    fn page_or_json_by_path_and_only_get_or_head() {
        let i = inner();
        let page = answer(&i, &Method::GET, "/vitals");
        assert_eq!(page.status(), StatusCode::OK);
        assert!(page.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap_or("")
            .starts_with("text/html"));
        assert!(page.headers().contains_key(header::CONTENT_SECURITY_POLICY));
        assert_eq!(page.body(), PAGE);
        let json = answer(&i, &Method::GET, "/admin/vitals.json");
        assert_eq!(json.headers()[header::CONTENT_TYPE], "application/json");
        assert!(json.body().starts_with("{\"schema\":\"tower-vitals.live/1\""));
        assert!(answer(&i, &Method::HEAD, "/vitals").body().is_empty());
        assert_eq!(answer(&i, &Method::POST, "/vitals").status(), StatusCode::METHOD_NOT_ALLOWED);
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
