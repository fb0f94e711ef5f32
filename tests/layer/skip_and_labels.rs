//! Skip rules, labels of the user's own, and the protocol / scheme tags: each skip rule through
//! axum and plain hyper over real loopback connections (a route that is skipped and one that is
//! not), each label source, the per-key caps under 10,000 hostile header values through a real
//! hyper server, key errors, and `network.protocol.version` / `url.scheme` from HTTP/1.0, 1.1
//! and 2 connections.
//!
//! Servers run on the test's current-thread runtime, so the test's local recorder sees
//! everything the layer records.

use crate::support::hostile;
use std::collections::BTreeSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::support::*;
use axum::body::Body;
use axum::extract::Path;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http::request::Parts;
use http::{Request, Response, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tower::{Layer, ServiceExt};
use tower_vitals::labels::{NO_VALUE, OVERFLOW, PROTOCOL_VERSION, ROUTE, URL_SCHEME};
use tower_vitals::{
    Label, LabelError, Labels, ResponseBody, RouteName, VitalsLayer, DEFAULT_LABEL_VALUE_CAP,
    MAX_LABELS,
};

const REQUESTS: &str = "http.server.requests";
const DURATION: &str = "http.server.request.duration";

// ---------------------------------------------------------------- helpers

/// Waits (bounded) until the layer has nothing in flight.
async fn settle<M>(layer: &VitalsLayer<M>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while layer.active_requests() != 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(layer.active_requests(), 0, "requests still in flight after 10 s");
}

/// Serves an axum router on 127.0.0.1 (on this test's runtime: its thread, its recorder).
async fn serve_axum(app: Router) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, task)
}

/// Serves a tower service with plain hyper (HTTP/1.1, or HTTP/2 with prior knowledge).
async fn serve_hyper<S, B>(svc: S, h2: bool) -> (SocketAddr, tokio::task::JoinHandle<()>)
where
    S: tower::Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let svc = TowerToHyperService::new(svc.clone());
            tokio::spawn(async move {
                let io = TokioIo::new(stream);
                if h2 {
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(io, svc)
                        .await;
                } else {
                    let _ =
                        hyper::server::conn::http1::Builder::new().serve_connection(io, svc).await;
                }
            });
        }
    });
    (addr, task)
}

fn client() -> Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

fn h2_client() -> Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).http2_only(true).build_http()
}

/// GET `path` with `headers`; returns the status and the body as text.
async fn fetch(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let mut req = Request::get(format!("http://{addr}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(Bytes::new())).expect("request");
    let res = tokio::time::timeout(Duration::from_secs(10), client.request(req))
        .await
        .expect("answered within 10 s")
        .expect("response");
    let status = res.status().as_u16();
    let body = res.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn routes_recorded(seen: &[Seen]) -> BTreeSet<String> {
    named(seen, REQUESTS).iter().filter_map(|s| s.label(ROUTE)).map(str::to_owned).collect()
}

/// The total of `requests` over the series whose `key` is `value`.
fn count_where(seen: &[Seen], key: &str, value: &str) -> u64 {
    named(seen, REQUESTS).iter().filter(|s| s.label(key) == Some(value)).map(|s| s.counter()).sum()
}

// ---------------------------------------------------------------- skip rules

/// The answer of a handler: how many requests the layer had in flight while it ran.
fn in_flight_app(layer: VitalsLayer) -> Router {
    let probe = layer.clone();
    let in_flight = move || {
        let probe = probe.clone();
        async move { probe.active_requests().to_string() }
    };
    Router::new()
        .route("/healthz", get(in_flight.clone()))
        .route("/static/{*file}", get(in_flight.clone()))
        .route("/users/{id}", get(in_flight))
}

#[tokio::test]
async fn skip_routes_through_axum_leaves_the_route_out_and_measures_the_others() {
    let (_guard, snap) = local_recorder();
    let layer = VitalsLayer::builder().skip_routes(["/healthz"]).build();
    let (addr, server) = serve_axum(in_flight_app(layer.clone()).layer(layer.clone())).await;
    let client = client();
    for _ in 0..5 {
        // Skipped: not in active_requests while its handler runs.
        assert_eq!(fetch(&client, addr, "/healthz", &[]).await, (200, "0".to_owned()));
    }
    for i in 0..3 {
        assert_eq!(fetch(&client, addr, &format!("/users/{i}"), &[]).await, (200, "1".to_owned()));
    }
    settle(&layer).await;
    server.abort();

    let seen = snapshot(&snap);
    assert_eq!(routes_recorded(&seen), BTreeSet::from(["/users/{id}".to_owned()]));
    assert_eq!(counter_total(&seen, REQUESTS), 3, "only the measured requests count");
    assert!(seen.iter().all(|s| s.label(ROUTE) != Some("/healthz")), "{seen:#?}");
    assert_eq!(layer.routes_seen(), 1, "a skipped route takes no place under the cap");
}

#[tokio::test]
async fn skip_if_through_axum_uses_the_request_head() {
    let (_guard, snap) = local_recorder();
    let layer = VitalsLayer::builder()
        .skip_if(|req: &Parts| req.uri.path().starts_with("/static/"))
        .skip_if(|req: &Parts| req.headers.contains_key("x-synthetic"))
        .build();
    let (addr, server) = serve_axum(in_flight_app(layer.clone()).layer(layer.clone())).await;
    let client = client();
    assert_eq!(fetch(&client, addr, "/static/app.js", &[]).await, (200, "0".to_owned()));
    assert_eq!(fetch(&client, addr, "/users/1", &[("x-synthetic", "1")]).await.1, "0");
    assert_eq!(fetch(&client, addr, "/users/2", &[]).await.1, "1");
    assert_eq!(fetch(&client, addr, "/healthz", &[]).await.1, "1");
    settle(&layer).await;
    server.abort();

    let seen = snapshot(&snap);
    assert_eq!(
        routes_recorded(&seen),
        BTreeSet::from(["/users/{id}".to_owned(), "/healthz".to_owned()])
    );
    assert_eq!(counter_total(&seen, REQUESTS), 2);
    assert_eq!(count_where(&seen, ROUTE, "/users/{id}"), 1, "the synthetic request is skipped");
}

#[tokio::test]
async fn skip_unmatched_leaves_out_requests_without_a_route() {
    let (_guard, snap) = local_recorder();
    let layer = VitalsLayer::builder().skip_routes([tower_vitals::labels::UNMATCHED]).build();
    let app = Router::new().route("/users/{id}", get(|| async { "u" })).layer(layer.clone());
    let (addr, server) = serve_axum(app).await;
    let client = client();
    for i in 0..20 {
        assert_eq!(fetch(&client, addr, &format!("/no/such/{i}"), &[]).await.0, 404);
    }
    assert_eq!(fetch(&client, addr, "/users/1", &[]).await.0, 200);
    settle(&layer).await;
    server.abort();
    let seen = snapshot(&snap);
    assert_eq!(routes_recorded(&seen), BTreeSet::from(["/users/{id}".to_owned()]));
    assert_eq!(counter_total(&seen, REQUESTS), 1);
}

/// A plain hyper service: names its route on the request (a middleware in front of the layer
/// would) or on the response, by path.
async fn plain_app(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_owned();
    let mut res = Response::new(Full::new(Bytes::from(path.clone())));
    if path == "/late-health" {
        // Named on the response only: dropped from the metrics when the head arrives.
        res.extensions_mut().insert(RouteName::new("/healthz"));
    }
    Ok(res)
}

fn name_route_on_request(mut req: Request<Incoming>) -> Request<Incoming> {
    let name = match req.uri().path() {
        "/healthz" => "/healthz",
        "/work" => "/work",
        _ => return req,
    };
    req.extensions_mut().insert(RouteName::new(name));
    req
}

#[tokio::test]
async fn skip_rules_through_plain_hyper() {
    let (_guard, snap) = local_recorder();
    let layer = VitalsLayer::builder()
        .skip_routes(["/healthz"])
        .skip_if(|req: &Parts| req.uri.path() == "/ping")
        .build();
    let svc = tower::ServiceBuilder::new()
        .map_request(name_route_on_request)
        .layer(layer.clone())
        .service(tower::service_fn(plain_app));
    let (addr, server) = serve_hyper(svc, false).await;
    let client = client();
    for path in ["/healthz", "/ping", "/late-health", "/work", "/work", "/other"] {
        assert_eq!(fetch(&client, addr, path, &[]).await, (200, path.to_owned()));
    }
    settle(&layer).await;
    server.abort();
    let seen = snapshot(&snap);
    assert_eq!(
        routes_recorded(&seen),
        BTreeSet::from(["/work".to_owned(), tower_vitals::labels::UNMATCHED.to_owned()])
    );
    assert_eq!(count_where(&seen, ROUTE, "/work"), 2);
    assert_eq!(counter_total(&seen, REQUESTS), 3, "/healthz, /ping and /late-health left out");
    assert!(seen.iter().all(|s| s.label(ROUTE) != Some("/healthz")), "{seen:#?}");
}

#[test]
fn skipped_request_passes_through_as_a_response_body_and_adds_no_busy_time() {
    let (_guard, snap) = local_recorder();
    let (clock, mock) = tower_vitals::Clock::mock();
    let layer = VitalsLayer::builder()
        .clock(clock)
        .skip_if(|req: &Parts| req.uri.path() == "/skip")
        .build();
    let svc_mock = mock.clone();
    let svc = layer.layer(tower::service_fn(move |_req: Request<String>| {
        svc_mock.advance(Duration::from_millis(250));
        std::future::ready(Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
            b"twelve bytes",
        )))))
    }));
    let req = Request::get("/skip").body(String::new()).expect("request");
    let res: Response<ResponseBody<Full<Bytes>>> =
        block_on(svc.clone().oneshot(req)).expect("infallible");
    let (blocks, bytes, _) = drain(&mut res.into_body());
    assert_eq!((blocks, bytes), (1, 12), "frames pass through untouched");
    assert_eq!(layer.busy_time(), Duration::ZERO, "a skipped request is not busy time");
    assert_eq!(layer.active_requests(), 0);
    assert!(snapshot(&snap).iter().all(|s| s.name != REQUESTS), "nothing recorded");

    let req = Request::get("/measured").body(String::new()).expect("request");
    let res = block_on(svc.oneshot(req)).expect("infallible");
    drain(&mut res.into_body());
    assert!(layer.busy_time() >= Duration::from_millis(250), "{:?}", layer.busy_time());
    assert_eq!(counter_total(&snapshot(&snap), REQUESTS), 1);
}

// ---------------------------------------------------------------- labels: sources

async fn labelled_user(Path(id): Path<u32>) -> Response<Body> {
    let mut res = Response::new(Body::from("u"));
    match id % 3 {
        0 => {
            res.extensions_mut().insert(Label::new("cache", "hit"));
        }
        1 => {
            res.extensions_mut().insert(Label::new("cache", String::from("miss")));
        }
        // No label: the value is `none`.
        _ => {}
    }
    res
}

#[tokio::test]
async fn labels_from_the_request_head_and_from_the_handler_reach_the_metrics() {
    let (_guard, snap) = local_recorder();
    let layer = VitalsLayer::builder()
        .label_from_request("api.version", |req: &Parts| {
            req.headers.get("x-api-version")?.to_str().ok()
        })
        .expect("a valid key")
        .label("cache")
        .expect("a valid key")
        .build();
    let app = Router::new().route("/users/{id}", get(labelled_user)).layer(layer.clone());
    let (addr, server) = serve_axum(app).await;
    let client = client();
    for id in 0..9u32 {
        let headers: &[(&str, &str)] = match id % 3 {
            0 => &[("x-api-version", "2")],
            1 => &[("x-api-version", "")], // empty: `none`
            _ => &[],                      // missing: `none`
        };
        assert_eq!(fetch(&client, addr, &format!("/users/{id}"), headers).await.0, 200);
    }
    settle(&layer).await;
    server.abort();

    let seen = snapshot(&snap);
    assert_eq!(count_where(&seen, "cache", "hit"), 3);
    assert_eq!(count_where(&seen, "cache", "miss"), 3);
    assert_eq!(count_where(&seen, "cache", NO_VALUE), 3);
    assert_eq!(count_where(&seen, "api.version", "2"), 3);
    assert_eq!(count_where(&seen, "api.version", NO_VALUE), 6);
    // Every response metric carries both keys; the gauges do not.
    for s in &seen {
        let labelled = s.label("cache").is_some() && s.label("api.version").is_some();
        let gauge = ["http.server.active_requests", "http.server.utilization"].contains(&&*s.name);
        assert_eq!(labelled, !gauge, "{s:?}");
    }
    // The label splits the histograms too.
    let hit_durations: usize = named(&seen, DURATION)
        .iter()
        .filter(|s| s.label("cache") == Some("hit"))
        .map(|s| s.values().len())
        .sum();
    assert_eq!(hit_durations, 3);
}

#[test]
fn label_sources_precedence_response_then_request_extension_then_function() {
    let (_guard, snap) = local_recorder();
    let layer = VitalsLayer::builder()
        .label_from_request("tier", |req: &Parts| {
            req.headers.get("x-tier").and_then(|v| v.to_str().ok())
        })
        .expect("key")
        .label("cache")
        .expect("key")
        .label("path")
        .expect("key")
        .build();
    let svc = layer.layer(tower::service_fn(|req: Request<String>| {
        let mut res = Response::new(Full::new(Bytes::from_static(b"ok")));
        match req.uri().path() {
            // Several keys at once, one of them overriding the request's `tier`.
            "/several" => {
                res.extensions_mut().insert(Labels::from([
                    Label::new("cache", "hit"),
                    Label::new("path", "fast"),
                    Label::new("tier", "gold"),
                ]));
            }
            // A key the layer was not told about: ignored.
            "/unknown" => {
                res.extensions_mut().insert(Label::new("nope", "x"));
            }
            _ => {}
        }
        std::future::ready(Ok::<_, Infallible>(res))
    }));
    let send = |path: &str, tier: Option<&str>, ext: Option<Label>| {
        let mut req = Request::get(path).body(String::new()).expect("request");
        if let Some(tier) = tier {
            req.headers_mut().insert("x-tier", tier.parse().expect("header"));
        }
        if let Some(ext) = ext {
            req.extensions_mut().insert(ext);
        }
        let res = block_on(svc.clone().oneshot(req)).expect("infallible");
        drain(&mut res.into_body());
    };
    send("/plain", Some("silver"), None); // function
    send("/plain", Some("silver"), Some(Label::new("tier", "bronze"))); // request extension wins
    send("/several", Some("silver"), Some(Label::new("tier", "bronze"))); // response wins
    send("/unknown", None, None);

    let seen = snapshot(&snap);
    assert_eq!(count_where(&seen, "tier", "silver"), 1);
    assert_eq!(count_where(&seen, "tier", "bronze"), 1);
    assert_eq!(count_where(&seen, "tier", "gold"), 1);
    assert_eq!(count_where(&seen, "tier", NO_VALUE), 1);
    assert_eq!(count_where(&seen, "cache", "hit"), 1);
    assert_eq!(count_where(&seen, "path", "fast"), 1);
    assert_eq!(count_where(&seen, "cache", NO_VALUE), 3);
    assert!(seen.iter().all(|s| s.label("nope").is_none()), "undeclared keys are ignored");
}

// ---------------------------------------------------------------- labels: caps

/// Echoes the `x-echo` header into a handler-set label (the handler allocates; that is its
/// business), so both label sources face the same hostile values.
async fn echo_label(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut res = Response::new(Full::new(Bytes::from_static(b"ok")));
    if let Some(value) = req.headers().get("x-echo").and_then(|v| v.to_str().ok()) {
        res.extensions_mut().insert(Label::new("echo", value.to_owned()));
    }
    Ok(res)
}

#[tokio::test]
async fn ten_thousand_hostile_header_values_give_at_most_cap_plus_one_values_per_key() {
    const N: usize = 10_000;
    let (_guard, snap) = local_recorder();
    let layer = VitalsLayer::builder()
        .label_from_request("tenant", |req: &Parts| req.headers.get("x-tenant")?.to_str().ok())
        .expect("key")
        .label("echo")
        .expect("key")
        .build();
    let (addr, server) = serve_hyper(layer.layer(tower::service_fn(echo_label)), false).await;
    let client = client();
    let mut rng = hostile::Rng::new(0x001a_be15);
    let mut sent = Vec::with_capacity(N);
    for _ in 0..N {
        // Visible ASCII (every statsd separator, quotes, backslashes, braces), 1..=80 bytes.
        let len = 1 + rng.below(80) as usize;
        let value = rng.string(&hostile::HEADER_VALUE_CHARS[2..], len);
        let req = Request::get(format!("http://{addr}/t"))
            .header("x-tenant", value.as_str())
            .header("x-echo", value.as_str())
            .body(Full::new(Bytes::new()))
            .expect("request");
        let res = client.request(req).await.expect("response");
        res.into_body().collect().await.expect("body");
        sent.push(value);
    }
    settle(&layer).await;
    server.abort();

    let seen = snapshot(&snap);
    assert_eq!(counter_total(&seen, REQUESTS), N as u64, "every request counted once");
    let admitted: BTreeSet<String> = {
        let mut first = Vec::new();
        for v in &sent {
            if !first.contains(v) {
                first.push(v.clone());
            }
            if first.len() == DEFAULT_LABEL_VALUE_CAP {
                break;
            }
        }
        first.iter().map(|v| tower_vitals::labels::sanitize_tag_value(v)).collect()
    };
    for key in ["tenant", "echo"] {
        let values: BTreeSet<&str> = seen.iter().filter_map(|s| s.label(key)).collect();
        assert!(values.len() <= DEFAULT_LABEL_VALUE_CAP + 1, "{key}: {} values", values.len());
        assert!(values.contains(OVERFLOW), "{key}: the test must pass the cap");
        for v in &values {
            assert!(*v == OVERFLOW || admitted.contains(*v), "{key}: {v:?} was never admitted");
            assert!(!v.contains(['|', ',', '#', '\\']) && !v.chars().any(char::is_control));
        }
        println!("{key}: {N} hostile values sent, {} label values emitted", values.len());
    }
}

#[test]
fn label_value_cap_is_per_key_and_configurable() {
    let (_guard, snap) = local_recorder();
    let layer = VitalsLayer::builder()
        .label_value_cap(2)
        .expect("cap")
        .label_from_request("a", |req: &Parts| req.headers.get("a")?.to_str().ok())
        .expect("key")
        .label_from_request("b", |req: &Parts| req.headers.get("b")?.to_str().ok())
        .expect("key")
        .build();
    let svc = layer.layer(tower::service_fn(|_req: Request<String>| {
        std::future::ready(Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"k")))))
    }));
    for (a, b) in [("1", "x"), ("2", "x"), ("3", "y"), ("1", "z"), ("4", "y")] {
        let req =
            Request::get("/").header("a", a).header("b", b).body(String::new()).expect("request");
        drain(&mut block_on(svc.clone().oneshot(req)).expect("infallible").into_body());
    }
    let seen = snapshot(&snap);
    let values = |key: &str| -> BTreeSet<String> {
        seen.iter().filter_map(|s| s.label(key)).map(str::to_owned).collect()
    };
    assert_eq!(values("a"), BTreeSet::from(["1".into(), "2".into(), OVERFLOW.into()]));
    assert_eq!(values("b"), BTreeSet::from(["x".into(), "y".into(), OVERFLOW.into()]));
    assert_eq!(count_where(&seen, "a", OVERFLOW), 2);
    assert_eq!(count_where(&seen, "b", OVERFLOW), 1);
}

// ---------------------------------------------------------------- labels: key errors

#[test]
fn label_keys_are_checked_when_the_layer_is_built() {
    let reserved = [
        "http.route",
        "http_route",
        "error.type",
        "http.request.method",
        "http.response.status_code",
        "rpc.grpc.status_code",
        "network.protocol.version",
        "url.scheme",
        "url_scheme",
        "le",
        "quantile",
    ];
    for key in reserved {
        let err = VitalsLayer::builder().label(key).expect_err(key);
        assert!(matches!(err, LabelError::Reserved { .. }), "{key}: {err:?}");
        let text = err.to_string();
        assert!(text.contains(key) && text.contains("reserved"), "{text}");
    }
    for key in ["", "1abc", "a b", "__x", "a|b", "a:b", "é", &"k".repeat(65)] {
        let err = VitalsLayer::builder().label(key).expect_err(key);
        assert!(matches!(err, LabelError::InvalidKey { .. }), "{key:?}: {err:?}");
    }
    // Two keys Prometheus would show as one.
    let err = VitalsLayer::builder()
        .label("api.version")
        .and_then(|l| l.label_from_request("api_version", |_: &Parts| None))
        .expect_err("duplicate");
    assert!(matches!(err, LabelError::Duplicate { .. }), "{err:?}");
    assert!(err.to_string().contains("api_version"), "{err}");

    // At most MAX_LABELS keys: the next one is an error that says so.
    let mut builder = VitalsLayer::builder();
    for i in 0..MAX_LABELS {
        builder = builder.label(format!("k{i}")).expect("within the limit");
    }
    let err = builder.label("one_more").expect_err("too many");
    assert!(matches!(err, LabelError::TooMany { max: MAX_LABELS }), "{err:?}");
    assert!(err.to_string().contains(&MAX_LABELS.to_string()), "{err}");
    // Fine keys pass, and the error type is a std error.
    let ok: Result<_, Box<dyn std::error::Error>> =
        VitalsLayer::builder().label("tenant.tier").map_err(Into::into);
    assert!(ok.is_ok());
}

// ---------------------------------------------------------------- protocol and scheme

#[tokio::test]
async fn protocol_version_and_scheme_over_http1_http10_and_http2() {
    let (_guard, snap) = local_recorder();
    let layer = VitalsLayer::new();
    let ok = |_req: Request<Incoming>| {
        std::future::ready(Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok")))))
    };
    let (addr1, s1) = serve_hyper(layer.layer(tower::service_fn(ok)), false).await;
    let (addr2, s2) = serve_hyper(layer.layer(tower::service_fn(ok)), true).await;
    assert_eq!(fetch(&client(), addr1, "/a", &[]).await.0, 200);
    assert_eq!(fetch(&client(), addr1, "/a", &[]).await.0, 200);
    assert_eq!(fetch(&h2_client(), addr2, "/a", &[]).await.0, 200);
    // HTTP/1.0, by hand.
    let mut stream = TcpStream::connect(addr1).await.expect("connect");
    stream.write_all(b"GET /a HTTP/1.0\r\n\r\n").await.expect("write");
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .expect("answered")
        .expect("read");
    assert!(raw.starts_with(b"HTTP/1.0 200"), "{}", String::from_utf8_lossy(&raw));
    settle(&layer).await;
    s1.abort();
    s2.abort();

    let seen = snapshot(&snap);
    assert_eq!(count_where(&seen, PROTOCOL_VERSION, "1.1"), 2);
    assert_eq!(count_where(&seen, PROTOCOL_VERSION, "2"), 1);
    assert_eq!(count_where(&seen, PROTOCOL_VERSION, "1.0"), 1);
    assert_eq!(count_where(&seen, URL_SCHEME, "http"), 4);
}

#[test]
fn scheme_from_the_uri_else_the_layer_and_both_tags_can_be_turned_off() {
    let ok = |_req: Request<String>| {
        std::future::ready(Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok")))))
    };
    let send = |svc: &tower_vitals::Vitals<_>, uri: &str, version: Version| {
        let req = Request::get(uri).version(version).body(String::new()).expect("request");
        drain(&mut block_on(svc.clone().oneshot(req)).expect("infallible").into_body());
    };

    let (guard, snap) = local_recorder();
    let behind_tls = VitalsLayer::builder()
        .url_scheme(http::uri::Scheme::HTTPS)
        .build()
        .layer(tower::service_fn(ok));
    send(&behind_tls, "/origin-form", Version::HTTP_11);
    send(&behind_tls, "http://example.com/absolute", Version::HTTP_2);
    send(&behind_tls, "https://example.com/absolute", Version::HTTP_3);
    let seen = snapshot(&snap);
    assert_eq!(count_where(&seen, URL_SCHEME, "https"), 2);
    assert_eq!(count_where(&seen, URL_SCHEME, "http"), 1);
    assert_eq!(count_where(&seen, PROTOCOL_VERSION, "3"), 1);
    drop(guard);

    let (_guard, snap) = local_recorder();
    let off = VitalsLayer::builder()
        .without_protocol_version()
        .without_url_scheme()
        .build()
        .layer(tower::service_fn(ok));
    send(&off, "https://example.com/", Version::HTTP_2);
    let seen = snapshot(&snap);
    assert_eq!(counter_total(&seen, REQUESTS), 1);
    assert!(
        seen.iter().all(|s| s.label(PROTOCOL_VERSION).is_none() && s.label(URL_SCHEME).is_none()),
        "{seen:#?}"
    );
}
