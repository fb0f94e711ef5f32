//! The live page in a real browser: headless Chromium (Debian's `chromium`, installed by
//! scripts/install-components.sh) loads `/vitals` from an app on 127.0.0.1 after a known load,
//! and the rendered DOM is checked against `/vitals.json` and against the load itself.
//!
//! Without `chromium` it is skipped (one line says so); under
//! `TOWER_VITALS_REQUIRE_COMPONENTS=1` (scripts/test.sh, CI) it fails instead.
#![cfg(feature = "live")]

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, get_service};
use axum::{Extension, Router};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tower_vitals::live::Live;
use tower_vitals::{RouteName, VitalsLayer};

use support::components::{have, Component};

/// Route names that would run script if the page ever parsed metric strings as HTML.
/// (No `,` `|` `#` `\\`: the layer's sanitiser would change them, and the payloads must stay
/// valid script.)
const HOSTILE_SCRIPT: &str = "<script>document.documentElement.dataset.pwned=1</script>";
const HOSTILE_IMG: &str = "<img src=x onerror=document.documentElement.dataset.pwned=2>";

/// The known load: (path, times, route the layer names it).
const LOAD: [(&str, u64, &str); 7] = [
    ("/fast", 40, "/fast"),
    ("/slow", 2, "/slow"),
    ("/small-blocks", 5, "/small-blocks"),
    ("/big-blocks", 3, "/big-blocks"),
    ("/fail", 7, "/fail"),
    ("/hostile/script", 3, HOSTILE_SCRIPT),
    ("/hostile/img", 2, HOSTILE_IMG),
];

fn stream(block: usize, blocks: usize) -> Body {
    let chunk = Bytes::from(vec![b'x'; block]);
    Body::from_stream(futures_util::stream::iter(
        (0..blocks).map(move |_| Ok::<_, std::io::Error>(chunk.clone())),
    ))
}

fn app(live: &Live) -> Router {
    Router::new()
        .route("/fast", get(|| async { "ok" }))
        // ~100 ms: a time shown as "100 ms" (a number ending in zeros, formatted right).
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(100)).await;
                "slow"
            }),
        )
        // 1024 blocks of 64 bytes per response: 5 responses pass the 4096-block mark.
        .route("/small-blocks", get(|| async { stream(64, 1024) }))
        .route("/big-blocks", get(|| async { stream(16 * 1024, 8) }))
        .route("/fail", get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "no").into_response() }))
        .route(
            "/hostile/script",
            get(|| async { (Extension(RouteName::new(HOSTILE_SCRIPT)), "x").into_response() }),
        )
        .route(
            "/hostile/img",
            get(|| async { (Extension(RouteName::new(HOSTILE_IMG)), "x").into_response() }),
        )
        .layer(VitalsLayer::builder().exemplars().build())
        .route("/vitals", get_service(live.service()))
        .route("/vitals.json", get_service(live.service()))
}

/// Serves the app on a thread whose local recorder is the live one; returns the address and
/// a stop sender.
fn serve(
    live: Live,
) -> (SocketAddr, tokio::sync::oneshot::Sender<()>, std::thread::JoinHandle<()>) {
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let recorder = live.recorder();
        let _local = metrics::set_default_local_recorder(&recorder);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
            addr_tx.send(listener.local_addr().expect("addr")).expect("send addr");
            axum::serve(listener, app(&live))
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await
                .expect("serve");
        });
    });
    let addr = addr_rx.recv_timeout(Duration::from_secs(10)).expect("server started");
    (addr, stop, thread)
}

async fn get_text(addr: SocketAddr, path: &str) -> (StatusCode, String) {
    get_traced(addr, path, None).await
}

/// The trace id the `i`th request to `/slow` carries in its `traceparent`.
fn slow_trace_id(i: u64) -> String {
    format!("{:032x}", 0x5105_0000_u64 + i)
}

async fn get_traced(addr: SocketAddr, path: &str, trace: Option<&str>) -> (StatusCode, String) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let mut request = hyper::Request::get(format!("http://{addr}{path}"));
    if let Some(trace) = trace {
        request = request.header("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"));
    }
    let request = request.body(Empty::new()).expect("request");
    let response = tokio::time::timeout(Duration::from_secs(10), client.request(request))
        .await
        .expect("in time")
        .expect("response");
    let status = response.status();
    let body = response.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn chromium_dump_dom(url: &str) -> (String, String) {
    let profile = std::env::temp_dir().join(format!("tv-live-chromium-{}", std::process::id()));
    let output = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=3000",
            "--window-size=1280,800",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(["--dump-dom", url])
        .output();
    let _ = std::fs::remove_dir_all(&profile);
    let output = match output {
        Ok(o) => o,
        Err(e) => panic!(
            "headless Chromium is needed for this test and could not be started ({e}): \
             run scripts/install-components.sh (Debian package `chromium`)"
        ),
    };
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "chromium failed: {}\n{stderr}", output.status);
    (String::from_utf8_lossy(&output.stdout).into_owned(), stderr)
}

/// HTML attribute / text unescaping, for what Chromium's serializer escapes.
fn unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&#39;", "'")
        .replace("&nbsp;", "\u{a0}")
        .replace("&amp;", "&")
}

fn attr<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let start = tag.find(&format!(" {name}=\""))? + name.len() + 3;
    let end = start + tag[start..].find('"')?;
    Some(&tag[start..end])
}

/// Per route card: (route, {data-field: data-value}, card html).
fn cards(dom: &str) -> Vec<(String, BTreeMap<String, String>, String)> {
    let mut out = Vec::new();
    let marker = "<section class=\"route\"";
    let mut rest = dom;
    while let Some(at) = rest.find(marker) {
        let card_start = &rest[at..];
        let end =
            card_start[marker.len()..].find(marker).map_or(card_start.len(), |e| e + marker.len());
        let card = &card_start[..end];
        let head = &card[..card.find('>').expect("tag end")];
        let route = unescape(attr(head, "data-route").expect("data-route"));
        let mut fields = BTreeMap::new();
        for piece in card.split('<').skip(1) {
            let tag = &piece[..piece.find('>').unwrap_or(piece.len())];
            if let Some(field) = attr(tag, "data-field") {
                let value = attr(tag, "data-value").map(unescape).unwrap_or_default();
                let shown = unescape(piece.get(tag.len() + 1..).unwrap_or(""));
                fields.insert(format!("{}#shown", unescape(field)), shown);
                fields.insert(unescape(field), value);
            }
        }
        out.push((route, fields, card.to_owned()));
        rest = &card_start[end..];
    }
    out
}

/// The shown text of a time (`950 ms`, `1.2 µs`, `0`) in seconds.
fn shown_seconds(text: &str) -> Option<f64> {
    let text = text.trim();
    if text == "0" {
        return Some(0.0);
    }
    let (n, unit) = text.split_once(' ')?;
    let scale = match unit {
        "µs" => 1e-6,
        "ms" => 1e-3,
        "s" => 1.0,
        _ => return None,
    };
    Some(n.parse::<f64>().ok()? * scale)
}

fn same_number(page: &str, json: &Value, what: &str) {
    match json.as_f64() {
        Some(j) => {
            let p: f64 = page.parse().unwrap_or_else(|_| panic!("{what}: page shows {page:?}"));
            assert_eq!(p, j, "{what}: page {page} vs /vitals.json {j}");
        }
        None => assert_eq!(page, "null", "{what}: page {page} vs /vitals.json null"),
    }
}

#[test]
fn the_page_in_chromium_shows_what_vitals_json_says() {
    if !have(&[Component::Chromium]) {
        return;
    }
    let live = Live::builder().window(Duration::from_secs(3600)).build();
    let (addr, stop, server) = serve(live.clone());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");

    // The known load, sequential: every request has finished (and was recorded) when its
    // body has been read.
    rt.block_on(async {
        for (path, times, _) in LOAD {
            for i in 0..times {
                // Only the requests to /slow carry a trace id.
                let trace = (path == "/slow").then(|| slow_trace_id(i));
                get_traced(addr, path, trace.as_deref()).await;
            }
        }
    });

    let (dom, stderr) = chromium_dump_dom(&format!("http://{addr}/vitals"));
    let (status, json) = rt.block_on(get_text(addr, "/vitals.json"));
    assert_eq!(status, StatusCode::OK);
    let _ = stop.send(());
    server.join().expect("server thread");

    // The page's script ran to a render, without an error or any console message.
    let html_at = dom.find("<html").expect("html element");
    let html_tag = &dom[html_at..html_at + dom[html_at..].find('>').expect("html tag end")];
    assert!(
        attr(html_tag, "data-renders").and_then(|n| n.parse::<u32>().ok()).unwrap_or(0) >= 1,
        "the page never rendered: {html_tag}\n{stderr}"
    );
    assert!(attr(html_tag, "data-script-error").is_none(), "script error: {html_tag}");
    let console: Vec<&str> = stderr.lines().filter(|l| l.contains(":CONSOLE")).collect();
    assert!(console.is_empty(), "console messages: {console:#?}");

    // The hostile route names are text, and ran no script.
    assert!(attr(html_tag, "data-pwned").is_none(), "a route name ran as script: {html_tag}");
    assert_eq!(dom.matches("<script").count(), 1, "only the page's own script element");
    assert!(!dom.contains("<img"), "a route name became an element");
    assert!(dom.contains("&lt;script&gt;document.documentElement"), "hostile name shown as text");
    assert!(dom.contains("&lt;img src=x onerror="), "hostile name shown as text");

    // Every route of the load: on the page, with the numbers of /vitals.json and the load's counts.
    let json: Value = serde_json::from_str(&json).expect("valid JSON");
    let routes = json["services"][0]["routes"].as_array().expect("routes");
    let cards = cards(&dom);
    assert_eq!(
        cards.len(),
        LOAD.len(),
        "one card per route: {:?}",
        cards.iter().map(|c| &c.0).collect::<Vec<_>>()
    );
    for (_, times, route) in LOAD {
        let (_, fields, card) = cards.iter().find(|c| c.0 == route).unwrap_or_else(|| {
            panic!("{route} not on the page: {:?}", cards.iter().map(|c| &c.0).collect::<Vec<_>>())
        });
        let r = routes.iter().find(|r| r["route"] == route).expect("route in JSON");
        let w = &r["window"];
        assert_eq!(w["requests"].as_u64(), Some(times), "{route}: JSON count vs load");
        assert_eq!(r["since_start"]["requests"].as_u64(), Some(times), "{route}");
        same_number(&fields["requests"], &w["requests"], &format!("{route} requests"));
        for time in ["application_time", "output_time", "duration"] {
            for q in ["p50", "p95", "p99"] {
                let field = format!("{time}.{q}");
                same_number(&fields[&field], &w[time][q], &format!("{route} {field}"));
                // The text a person reads says the same, to its 3 significant digits.
                let text = &fields[&format!("{field}#shown")];
                let exact = w[time][q].as_f64().expect("a percentile");
                let shown =
                    shown_seconds(text).unwrap_or_else(|| panic!("{route} {field}: {text:?}"));
                assert!(
                    (shown - exact).abs() <= 0.005 * exact,
                    "{route} {field}: shows {text:?}, /vitals.json says {exact}"
                );
            }
        }
        // Where the time goes: the page's means are /vitals.json's, body production the rest.
        let mean = |t: &str| w[t]["mean"].as_f64().unwrap_or(0.0);
        same_number(&fields["mean.duration"], &w["duration"]["mean"], &format!("{route} mean"));
        for t in ["application_time", "output_time"] {
            same_number(&fields[&format!("mean.{t}")], &w[t]["mean"], &format!("{route} mean {t}"));
        }
        let production: f64 = fields["mean.body_production"].parse().expect("production");
        let want = (mean("duration") - mean("application_time") - mean("output_time")).max(0.0);
        assert!(
            (production - want).abs() <= 1e-12,
            "{route}: body production {production} vs {want}"
        );
        for f in ["bytes_per_response", "blocks_per_response", "bytes_per_block"] {
            same_number(&fields[f], &w[f], &format!("{route} {f}"));
        }
        let errors = w["errors"].as_object().expect("errors");
        for (k, v) in errors {
            same_number(&fields[&format!("errors.{k}")], v, &format!("{route} errors.{k}"));
        }
        let flagged = fields.contains_key("small_blocks");
        assert_eq!(flagged, w["small_blocks"] == true, "{route}: flag on page vs JSON");
        assert_eq!(
            flagged,
            route == "/small-blocks",
            "{route}: only /small-blocks is flagged\n{card}"
        );
    }
    // The slowest traced requests: the two /slow ones, on its card as text, in the JSON's
    // order, with the JSON's durations; no other route lists any.
    for (_, _, route) in LOAD {
        let (_, fields, card) = cards.iter().find(|c| c.0 == route).expect("card");
        let r = routes.iter().find(|r| r["route"] == route).expect("route in JSON");
        let listed = r["window"]["slowest"].as_array().expect("slowest in JSON");
        let shown: Vec<&str> = card
            .split("data-field=\"slowest.trace_id\">")
            .skip(1)
            .map(|s| &s[..s.find('<').expect("text end")])
            .collect();
        let ids: Vec<&str> = listed.iter().map(|s| s["trace_id"].as_str().expect("id")).collect();
        assert_eq!(shown, ids, "{route}: trace ids on the page vs /vitals.json");
        if route == "/slow" {
            let mut want = vec![slow_trace_id(0), slow_trace_id(1)];
            want.sort_by_key(|id| ids.iter().position(|i| i == id));
            assert_eq!(ids, want, "/slow lists both traced requests");
            same_number(&fields["slowest.duration"], &listed[1]["duration"], "/slow slowest");
            assert!(listed.iter().all(|s| s["duration"].as_f64() >= Some(0.1)), "{listed:?}");
        } else {
            assert!(ids.is_empty(), "{route}: untraced, yet lists {ids:?}");
        }
    }
    let fail = routes.iter().find(|r| r["route"] == "/fail").expect("/fail");
    assert_eq!(fail["window"]["errors"]["500"].as_u64(), Some(7));
    assert_eq!(fail["window"]["status"]["5xx"].as_u64(), Some(7));
}
