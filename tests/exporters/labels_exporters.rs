//! Labels of the user's own with hostile characters reach every backend intact and harmless:
//! well-formed statsd lines (both pipelines), well-formed DogStatsD lines, and exposition text
//! that `promtool check metrics` accepts, with the `none` default the same everywhere.
#![cfg(all(feature = "prometheus", feature = "statsd", feature = "dogstatsd"))]

use std::convert::Infallible;
use std::net::UdpSocket;
use std::time::{Duration, Instant};

use crate::support::components::{have, promtool_check_metrics, Component};
use crate::support::*;
use bytes::Bytes;
use http::request::Parts;
use http::{Request, Response};
use http_body_util::Full;
use tower::{Layer, ServiceExt};
use tower_vitals::labels::{sanitize_tag_value, NO_VALUE};
use tower_vitals::statsd::{self, Pipeline};
use tower_vitals::{Label, VitalsLayer};

/// Every statsd and DogStatsD separator, a newline, quotes, a backslash, braces, `=`, a space.
const HOSTILE: &str = "a|b,c#d:e\nf\"g\\h{i}=j k";

/// Drives three requests through a labelled layer on the current local recorder: a hostile
/// request label and a hostile handler label, a plain one, and one with neither (`none`).
fn traffic() {
    let layer = VitalsLayer::builder()
        .label_from_request("client.kind", |req: &Parts| req.headers.get("x-client")?.to_str().ok())
        .expect("key")
        .label("cache")
        .expect("key")
        .build();
    let svc = layer.layer(tower::service_fn(|req: Request<String>| {
        let mut res = Response::new(Full::new(Bytes::from_static(b"ok")));
        let value = match req.uri().path() {
            "/hostile" => Some(HOSTILE),
            "/plain" => Some("hit"),
            _ => None,
        };
        if let Some(value) = value {
            res.extensions_mut().insert(Label::new("cache", value));
        }
        std::future::ready(Ok::<_, Infallible>(res))
    }));
    // A header value cannot hold a newline: the rest of the hostile set goes through.
    let header = HOSTILE.replace('\n', " ");
    for (path, client) in
        [("/hostile", Some(header.as_str())), ("/plain", Some("cli")), ("/none", None)]
    {
        let mut req = Request::get(path).body(String::new()).expect("request");
        if let Some(client) = client {
            req.headers_mut().insert("x-client", client.parse().expect("visible ASCII header"));
        }
        drain(&mut block_on(svc.clone().oneshot(req)).expect("infallible").into_body());
    }
    assert_eq!(layer.active_requests(), 0);
}

fn expected_cache_values() -> Vec<String> {
    vec![sanitize_tag_value(HOSTILE), "hit".to_owned(), NO_VALUE.to_owned()]
}

/// Reads every datagram arriving on `socket` for `window`.
fn capture(socket: &UdpSocket, window: Duration) -> Vec<String> {
    socket.set_read_timeout(Some(Duration::from_millis(50))).expect("timeout");
    let deadline = Instant::now() + window;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 65_536];
    while Instant::now() < deadline {
        if let Ok(n) = socket.recv(&mut buf) {
            out.push(String::from_utf8(buf[..n].to_vec()).expect("UTF-8 datagram"));
        }
    }
    out
}

/// Checks one (Dog)StatsD line: `name:value[:value…]|type`, then only `|@rate`, `|#tags` or
/// `|T…`/`|c:` fields; each tag `key:value` with a non-empty key and value. Returns the tags.
fn tags_of(line: &str) -> Vec<(String, String)> {
    let (name, rest) = line.split_once(':').unwrap_or_else(|| panic!("no ':' in {line:?}"));
    assert!(!name.is_empty() && !name.contains(['|', '#', ',', '@', ' ']), "name in {line:?}");
    let mut fields = rest.split('|');
    let values = fields.next().unwrap_or_else(|| panic!("values in {line:?}"));
    for v in values.split(':') {
        v.parse::<f64>().unwrap_or_else(|_| panic!("value {v:?} in {line:?}"));
    }
    let kind = fields.next().unwrap_or_else(|| panic!("type in {line:?}"));
    assert!(["c", "g", "ms", "h", "d"].contains(&kind), "type {kind} in {line:?}");
    let mut tags = Vec::new();
    for field in fields {
        if let Some(list) = field.strip_prefix('#') {
            for tag in list.split(',') {
                let (k, v) =
                    tag.split_once(':').unwrap_or_else(|| panic!("tag {tag:?} in {line:?}"));
                assert!(!k.is_empty() && !v.is_empty(), "tag {tag:?} in {line:?}");
                tags.push((k.to_owned(), v.to_owned()));
            }
        } else {
            assert!(
                field.starts_with('@') || field.starts_with('T') || field.starts_with("c:"),
                "unexpected field {field:?} in {line:?}"
            );
        }
    }
    tags
}

/// The `cache` values on the `requests` lines, checked line by line.
fn cache_values_on_the_wire(datagrams: &[String], counter: &str) -> Vec<String> {
    let mut values = Vec::new();
    for line in datagrams.iter().flat_map(|d| d.lines()).filter(|l| !l.is_empty()) {
        let tags = tags_of(line);
        let keys: Vec<&str> = tags.iter().map(|(k, _)| k.as_str()).collect();
        if line.starts_with(counter) {
            assert!(keys.contains(&"client.kind") && keys.contains(&"cache"), "{line}");
            let cache = tags.iter().find(|(k, _)| k == "cache").map(|(_, v)| v.clone());
            values.extend(cache);
        }
    }
    values.sort();
    values.dedup();
    values
}

#[test]
fn hostile_labels_give_well_formed_statsd_lines_in_both_pipelines() {
    for pipeline in [Pipeline::Background, Pipeline::Inline] {
        let sink = UdpSocket::bind("127.0.0.1:0").expect("bind sink");
        let (recorder, _exporter) = statsd::builder(sink.local_addr().expect("addr").to_string())
            .classic()
            .flush_interval(Duration::from_millis(50))
            .pipeline(pipeline)
            .build()
            .expect("build");
        {
            let _local = metrics::set_default_local_recorder(&recorder);
            traffic();
        }
        drop(recorder); // the background sender flushes what is left and exits
        let datagrams = capture(&sink, Duration::from_millis(1500));
        let mut expected = expected_cache_values();
        expected.sort();
        assert_eq!(
            cache_values_on_the_wire(&datagrams, "http.server.requests:"),
            expected,
            "{pipeline:?}: {datagrams:#?}"
        );
    }
}

#[test]
fn hostile_labels_give_well_formed_dogstatsd_lines() {
    let sink = UdpSocket::bind("127.0.0.1:0").expect("bind sink");
    let addr = sink.local_addr().expect("addr").to_string();
    let recorder = tower_vitals::dogstatsd::builder(&addr)
        .flush_interval(Duration::from_millis(100))
        .build()
        .expect("build");
    {
        let _local = metrics::set_default_local_recorder(&recorder);
        traffic();
    }
    let datagrams = capture(&sink, Duration::from_millis(1500));
    drop(recorder);
    let mut expected = expected_cache_values();
    expected.sort();
    assert_eq!(
        cache_values_on_the_wire(&datagrams, "http.server.requests:"),
        expected,
        "{datagrams:#?}"
    );
}

#[test]
fn hostile_labels_give_promtool_clean_text() {
    if !have(&[Component::Promtool]) {
        return;
    }
    let recorder = tower_vitals::prometheus::builder().build_recorder();
    let handle = recorder.handle();
    {
        let _local = metrics::set_default_local_recorder(&recorder);
        traffic();
    }
    let text = handle.render();
    promtool_check_metrics(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let requests: Vec<&str> =
        text.lines().filter(|l| l.starts_with("http_server_requests_total{")).collect();
    assert_eq!(requests.len(), 3, "{text}");
    for line in &requests {
        assert!(line.contains("client_kind=\"") && line.contains("cache=\""), "{line}");
        assert!(line.contains("network_protocol_version=\"1.1\""), "{line}");
        assert!(line.contains("url_scheme=\"http\""), "{line}");
    }
    assert!(requests
        .iter()
        .any(|l| l.contains("cache=\"none\",") || l.contains("cache=\"none\"}")));
    assert!(requests.iter().any(|l| l.contains("cache=\"hit\"")));
}
