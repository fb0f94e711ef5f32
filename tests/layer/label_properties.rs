//! Property tests of the label sanitiser, the method normaliser and route handling, with
//! arbitrary strings and bytes: they never panic, and what they produce is always a valid
//! DogStatsD tag (a formatted line parses back to the same tags) and a valid Prometheus label
//! (rendered by metrics-exporter-prometheus, parsed back by a strict parser, and, for a hostile
//! corpus, accepted by the real `promtool check metrics`).

use crate::support::components::{have, promtool_check_metrics, Component};
use crate::support::prom_text;
use crate::support::{prom_name, NAMES};
use std::convert::Infallible;

use crate::support::{block_on, drain};
use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::Full;
use proptest::prelude::*;
use tower::{Layer, ServiceExt};
use tower_vitals::labels::{
    sanitize_tag_value, GRPC_STATUS, MAX_ROUTE_LEN, METHOD, OTHER_GRPC_STATUS, OTHER_METHOD,
    OVERFLOW, ROUTE, STATUS, UNMATCHED,
};
use tower_vitals::prometheus::PrometheusRecorder;
use tower_vitals::{RouteName, VitalsLayer};

const STANDARD_METHODS: [&str; 9] =
    ["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"];

/// Characters that are structure in a statsd/DogStatsD line or a Prometheus label value.
fn assert_tag_safe(v: &str) {
    assert!(!v.is_empty(), "empty tag value");
    assert!(v.len() <= MAX_ROUTE_LEN, "{} bytes", v.len());
    for c in v.chars() {
        assert!(!matches!(c, '|' | ',' | '#' | '\\' | '\n' | '\r'), "{c:?} in {v:?}");
        assert!(!c.is_control(), "control {c:?} in {v:?}");
    }
}

/// `name` cut to MAX_ROUTE_LEN bytes at a char boundary (how the layer keys route names).
fn cut(name: &str) -> &str {
    let mut end = name.len().min(MAX_ROUTE_LEN);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

/// A DogStatsD line as the protocol defines it: `name:value|type|#k:v,k:v`.
fn dogstatsd_line(name: &str, tags: &[(&str, &str)]) -> String {
    let tags: Vec<String> = tags.iter().map(|(k, v)| format!("{k}:{v}")).collect();
    format!("{name}:1|c|#{}", tags.join(","))
}

/// Parses a DogStatsD line the way the agent does: fields split on `|`, tags on `,`, and each
/// tag at its first `:`. Returns `None` if the line is not one well-formed metric.
fn parse_dogstatsd(line: &str) -> Option<(String, Vec<(String, String)>)> {
    if line.contains('\n') {
        return None;
    }
    let (name, rest) = line.split_once(':')?;
    let mut fields = rest.split('|');
    let _value: f64 = fields.next()?.parse().ok()?;
    if fields.next()? != "c" {
        return None;
    }
    let tags = fields.next()?.strip_prefix('#')?;
    if fields.next().is_some() {
        return None;
    }
    let tags = tags
        .split(',')
        .map(|t| t.split_once(':').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect::<Option<Vec<_>>>()?;
    Some((name.to_owned(), tags))
}

fn hostile_string() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[|,#:\n\r\t\"\\\\{}=/ a-z\u{0}\u{85}\u{2028}é]{0,300}",
        proptest::collection::vec(any::<u8>(), 0..700)
            .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        "[a-z/]{250,260}é{1,4}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn sanitize_never_panics_and_output_is_a_safe_tag(s in hostile_string()) {
        let out = sanitize_tag_value(&s);
        assert_tag_safe(&out);
        // Idempotent, and it only replaces or cuts: a safe input comes back unchanged.
        prop_assert_eq!(sanitize_tag_value(&out), out.clone());
        prop_assert_eq!(out.chars().count() <= s.chars().count().max(1), true);
        // Safe: letters, digits, spaces and ASCII punctuation other than the four a tag cannot
        // hold (no control or Unicode format character, no line or paragraph separator).
        let safe = s.len() <= MAX_ROUTE_LEN && !s.is_empty()
            && s.chars().all(|c| {
                (c.is_alphanumeric() || c == ' ' || c.is_ascii_punctuation())
                    && !matches!(c, '|' | ',' | '#' | '\\')
            });
        if safe {
            prop_assert_eq!(&out, &s);
        }
    }

    #[test]
    fn sanitized_values_round_trip_through_a_dogstatsd_line(
        route in hostile_string(),
        method in hostile_string(),
    ) {
        let (route, method) = (sanitize_tag_value(&route), sanitize_tag_value(&method));
        let line = dogstatsd_line(
            &NAMES.requests,
            &[(ROUTE, &route), (METHOD, &method), (STATUS, "200")],
        );
        let (name, tags) = parse_dogstatsd(&line).expect("one well-formed line");
        prop_assert_eq!(&name, &NAMES.requests);
        let want = vec![
            (ROUTE.to_owned(), route),
            (METHOD.to_owned(), method),
            (STATUS.to_owned(), "200".to_owned()),
        ];
        prop_assert_eq!(tags, want);
    }

    #[test]
    fn any_grpc_status_value_becomes_a_known_code_or_other(
        value in grpc_status_value(),
        in_trailers in any::<bool>(),
    ) {
        // grpc-status comes from the response (an upstream, a proxy): whatever its bytes, the
        // tag is one of the 17 codes or `_OTHER`. Every generated value is a valid header
        // value, so every case reaches the layer.
        let label = one_request_grpc_label(value.clone(), in_trailers);
        // One or two ASCII digits naming a code 0..=16 are that code ("07" is 7); else _OTHER.
        let b = value.as_bytes();
        let code = match b {
            [d] if d.is_ascii_digit() => Some(u32::from(d - b'0')),
            [x, y] if x.is_ascii_digit() && y.is_ascii_digit() => {
                Some(u32::from(x - b'0') * 10 + u32::from(y - b'0'))
            }
            _ => None,
        };
        match code {
            Some(c) if c <= 16 => prop_assert_eq!(label, c.to_string()),
            _ => prop_assert_eq!(label, OTHER_GRPC_STATUS),
        }
    }

    #[test]
    fn any_method_token_becomes_a_standard_method_or_other(method in method()) {
        // Every generated method is a valid token, so every case reaches the layer.
        let label = one_request_method_label(method.clone());
        if STANDARD_METHODS.contains(&method.as_str()) {
            prop_assert_eq!(label, method.as_str());
        } else {
            prop_assert_eq!(label, OTHER_METHOD);
        }
    }
}

/// Bytes a header value may hold (RFC 9110 field-value: HTAB, SP, VCHAR, obs-text).
fn header_value_byte() -> impl Strategy<Value = u8> {
    prop_oneof![Just(b'\t'), 0x20u8..=0x7e, 0x80u8..=0xff]
}

/// Valid `grpc-status` header values: the known codes and their neighbours (digits, leading
/// zeros, signs, spaces) often, arbitrary valid header bytes otherwise. Never rejected.
fn grpc_status_value() -> impl Strategy<Value = http::HeaderValue> {
    prop_oneof![
        3 => (0u32..=20).prop_map(|c| c.to_string().into_bytes()),
        2 => "[0-9]{1,4}".prop_map(String::into_bytes),
        1 => "[ +\\-]?[0-9]{1,2}[ ]?".prop_map(String::into_bytes),
        3 => proptest::collection::vec(header_value_byte(), 0..40),
    ]
    .prop_map(|bytes| {
        http::HeaderValue::from_bytes(&bytes).expect("generated from header-value bytes only")
    })
}

/// Valid methods: the nine standard names, their lower-case spellings (extension methods:
/// methods are case-sensitive), and random RFC 9110 tokens of 1..300 characters. Never rejected.
fn method() -> impl Strategy<Value = Method> {
    let token = prop_oneof![
        3 => prop::sample::select(STANDARD_METHODS.to_vec()).prop_map(str::to_owned),
        1 => prop::sample::select(STANDARD_METHODS.to_vec()).prop_map(str::to_lowercase),
        // tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." / "^" / "_" / "`"
        //       / "|" / "~" / DIGIT / ALPHA
        4 => "[!#$%&'*+\\-.^_`|~0-9A-Za-z]{1,300}",
    ];
    token.prop_map(|t| Method::from_bytes(t.as_bytes()).expect("a token is a valid method"))
}

proptest! {
    // Each case builds a Prometheus recorder and a layer: fewer cases.
    #![proptest_config(ProptestConfig { cases: 96, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_route_names_render_as_valid_prometheus_labels(
        names in proptest::collection::vec(hostile_string(), 1..12),
        cap in 0usize..6,
    ) {
        let recorder = prometheus_recorder();
        let handle = recorder.handle();
        let _guard = metrics::set_default_local_recorder(&recorder);
        let layer = VitalsLayer::builder().route_cap(cap).build();
        let svc = layer.layer(tower::service_fn(|_req: Request<String>| async {
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"body"))))
        }));
        for name in &names {
            let mut req = Request::new(String::new());
            req.extensions_mut().insert(RouteName::new(name.clone()));
            let res = block_on(svc.clone().oneshot(req)).expect("infallible");
            drain(&mut res.into_body());
        }
        let text = handle.render();
        let samples = prom_text::parse(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        let count = prom_text::total(&samples, &prom_name(&NAMES.requests, "_total"));
        prop_assert_eq!(count, names.len() as f64);

        let allowed: Vec<String> = names
            .iter()
            .map(|n| sanitize_tag_value(cut(n)))
            .chain([UNMATCHED.to_owned(), OVERFLOW.to_owned()])
            .collect();
        let mut routes = std::collections::BTreeSet::new();
        for s in &samples {
            for (k, v) in &s.labels {
                prop_assert!(
                    ["http_route", "http_request_method", "http_response_status_code",
                     "error_type", "network_protocol_version", "url_scheme", "le"]
                        .contains(&k.as_str()),
                    "label key {:?}", k
                );
                if k != "le" {
                    assert_tag_safe(v);
                }
            }
            if let Some(route) = s.label("http_route") {
                prop_assert!(allowed.contains(&route.to_owned()), "route {:?} not from {:?}", route, names);
                routes.insert(route.to_owned());
            }
        }
        prop_assert!(routes.len() <= cap + 2);
        prop_assert!(layer.routes_seen() <= cap);
    }
}

/// The recorder users get from `tower_vitals::prometheus` (its naming and buckets).
fn prometheus_recorder() -> PrometheusRecorder {
    tower_vitals::prometheus::builder().build_recorder()
}

/// Runs one request with `method` through a layer on a fresh recorder; returns its method label.
fn one_request_method_label(method: Method) -> String {
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    let snap = recorder.snapshotter();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let layer = VitalsLayer::new();
    let svc = layer.layer(tower::service_fn(|_req: Request<String>| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"x"))))
    }));
    let req = Request::builder().method(method).body(String::new()).expect("request");
    let res = block_on(svc.oneshot(req)).expect("infallible");
    drain(&mut res.into_body());
    let seen = crate::support::snapshot(&snap);
    let req = crate::support::one(&seen, &NAMES.requests);
    req.label(METHOD).expect("method label").to_owned()
}

/// Runs one request whose response carries `grpc-status: value` (in the headers or in the
/// trailers); returns its `rpc.grpc.status_code` label.
fn one_request_grpc_label(value: http::HeaderValue, in_trailers: bool) -> String {
    use http_body_util::BodyExt as _;
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    let snap = recorder.snapshotter();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let layer = VitalsLayer::new();
    let svc = layer.layer(tower::service_fn(move |_req: Request<String>| {
        let value = value.clone();
        async move {
            let mut trailers = http::HeaderMap::new();
            let for_trailers = value.clone();
            let mut res = Response::new(
                Full::new(Bytes::from_static(b"x"))
                    .with_trailers(async move {
                        if in_trailers {
                            trailers.insert("grpc-status", for_trailers);
                            Some(Ok(trailers))
                        } else {
                            None
                        }
                    })
                    .boxed(),
            );
            if !in_trailers {
                res.headers_mut().insert("grpc-status", value);
            }
            Ok::<_, Infallible>(res)
        }
    }));
    let res = block_on(svc.oneshot(Request::new(String::new()))).expect("infallible");
    drain(&mut res.into_body());
    let seen = crate::support::snapshot(&snap);
    let req = crate::support::one(&seen, &NAMES.requests);
    req.label(GRPC_STATUS).expect("grpc label").to_owned()
}

/// Route names built to break an exposition or a statsd line, and long or odd unicode ones.
fn hostile_corpus() -> Vec<String> {
    let mut corpus: Vec<String> = [
        "/a|b",
        "/a,b",
        "/a#b",
        "/a:b",
        "/a\nb",
        "/a\r\nb",
        "/q\"uote",
        "/back\\slash",
        "/brace{x}=\"y\"",
        "/tab\tx",
        "/nul\u{0}x",
        "/c1\u{85}x",
        "/ls\u{2028}x",
        "",
        " ",
        "/é/ü/日本",
        "/emoji/🦀",
        "}",
        "{",
        "=",
        "\"",
        "\\",
        "\\\"",
        "# HELP x y",
        "x 1\ny 2",
        "/%0A%0D",
        "/../../etc/passwd",
        "/';DROP TABLE--",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    corpus.push("/long/".repeat(100));
    corpus.push("é".repeat(200));
    corpus.push(format!("{}\u{85}", "a".repeat(255)));
    corpus
}

#[test]
fn hostile_route_values_pass_promtool_check_metrics() {
    if !have(&[Component::Promtool]) {
        return;
    }
    let recorder = prometheus_recorder();
    let handle = recorder.handle();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let corpus = hostile_corpus();
    let layer = VitalsLayer::new();
    let svc = layer.layer(tower::service_fn(|_req: Request<String>| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"body"))))
    }));
    for name in &corpus {
        let mut req = Request::new(String::new());
        req.extensions_mut().insert(RouteName::new(name.clone()));
        let res = block_on(svc.clone().oneshot(req)).expect("infallible");
        drain(&mut res.into_body());
    }
    let text = handle.render();
    let samples = prom_text::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(
        prom_text::total(&samples, &prom_name(&NAMES.requests, "_total")),
        corpus.len() as f64
    );

    // rc 1 = parse error (what this test is about); rc 3 = lint findings, also refused.
    if let Err(e) = promtool_check_metrics(&text) {
        panic!("{e}\n{text}");
    }
}
