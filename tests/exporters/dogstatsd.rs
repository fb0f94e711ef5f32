//! The DogStatsD exporter on the wire: datagrams captured on a local UDP socket are checked
//! against the DogStatsD protocol (name, values, type, tags), and their totals against the
//! traffic sent.

use crate::support::NAMES;
use std::collections::BTreeMap;
use std::net::UdpSocket;
use std::time::{Duration, Instant};

use crate::support::app::{AppThread, BIG, CHUNK, CHUNKS, USERS, USER_BODY};

/// One DogStatsD line, checked against the protocol:
/// `<name>:<value>[:<value>…]|<type>[|@<rate>][|#<tag>[,<tag>…]][|T<ts>][|c:<container>]`.
#[derive(Debug)]
struct Line {
    name: String,
    values: Vec<f64>,
    kind: String,
    tags: Vec<String>,
}

fn parse(line: &str) -> Line {
    let mut fields = line.split('|');
    let head = fields.next().unwrap_or_default();
    let (name, values) = head.split_once(':').unwrap_or_else(|| panic!("no ':' in {line:?}"));
    assert!(!name.is_empty(), "empty name in {line:?}");
    assert!(
        name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)),
        "name {name:?} in {line:?}"
    );
    let values: Vec<f64> = values
        .split(':')
        .map(|v| v.parse().unwrap_or_else(|_| panic!("value {v:?} in {line:?}")))
        .collect();
    assert!(values.iter().all(|v| v.is_finite()), "{line:?}");
    let kind = fields.next().unwrap_or_else(|| panic!("no type in {line:?}")).to_string();
    assert!(["c", "g", "h", "d", "ms", "s"].contains(&kind.as_str()), "type in {line:?}");
    if values.len() > 1 {
        assert!(["h", "d", "ms"].contains(&kind.as_str()), "multi-value {kind} in {line:?}");
    }
    let mut tags = Vec::new();
    for field in fields {
        match field.chars().next() {
            Some('@') => assert!(field[1..].parse::<f64>().is_ok(), "rate in {line:?}"),
            Some('#') => {
                for tag in field[1..].split(',') {
                    assert!(!tag.is_empty() && !tag.contains(['|', '#', '\n']), "tag in {line:?}");
                    tags.push(tag.to_string());
                }
            }
            Some('T') => assert!(field[1..].parse::<u64>().is_ok(), "timestamp in {line:?}"),
            Some('c') if field.starts_with("c:") => {}
            _ => panic!("unexpected field {field:?} in {line:?}"),
        }
    }
    Line { name: name.to_string(), values, kind, tags }
}

/// Every line received on `socket` until `done` accepts them (at most 10 s).
fn capture_until(socket: &UdpSocket, done: impl Fn(&[Line]) -> bool) -> Vec<Line> {
    socket.set_read_timeout(Some(Duration::from_millis(50))).expect("timeout");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut lines = Vec::new();
    let mut buf = vec![0u8; 65_536];
    while !done(&lines) {
        assert!(Instant::now() < deadline, "incomplete after 10 s: {lines:#?}");
        if let Ok(n) = socket.recv(&mut buf) {
            assert!(n <= tower_vitals::dogstatsd::MAX_PAYLOAD_LEN, "datagram of {n} bytes");
            let text = std::str::from_utf8(&buf[..n]).expect("UTF-8 datagram");
            lines.extend(text.lines().filter(|l| !l.is_empty()).map(parse));
        }
    }
    lines
}

fn total(lines: &[Line], name: &str, tag: Option<&str>) -> (usize, f64) {
    let mut count = 0;
    let mut sum = 0.0;
    for line in lines.iter().filter(|l| l.name == name) {
        if tag.is_some_and(|t| !line.tags.iter().any(|x| x == t)) {
            continue;
        }
        count += line.values.len();
        sum += line.values.iter().sum::<f64>();
    }
    (count, sum)
}

#[test]
fn dogstatsd_datagrams_follow_the_protocol_and_add_up() {
    let sink = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let addr = sink.local_addr().expect("addr").to_string();
    let recorder = tower_vitals::dogstatsd::builder(&addr)
        .flush_interval(Duration::from_millis(100))
        .build()
        .expect("build");
    let app = AppThread::start(recorder);
    app.known_traffic();
    let requests = (USERS + BIG + 1) as f64;
    // Wait for every histogram, not just some: one flush spans several datagrams, in the
    // exporter's hash-map order, which differs from process to process.
    let histograms = [
        NAMES.duration.as_str(),
        NAMES.application_time.as_str(),
        NAMES.output_time.as_str(),
        NAMES.output_bytes.as_str(),
        NAMES.output_blocks.as_str(),
    ];
    let lines = capture_until(&sink, |lines| {
        total(lines, &NAMES.requests, None).1 >= requests
            && histograms.iter().all(|name| total(lines, name, None).0 > USERS + BIG)
    });
    drop(app);

    let users = Some("http.route:/users/{id}");
    assert_eq!(total(&lines, &NAMES.requests, None).1, requests);
    assert_eq!(total(&lines, &NAMES.requests, users).1, USERS as f64);
    // Histograms go out as distributions, one value per request, in seconds.
    let mut kinds = BTreeMap::new();
    for line in &lines {
        kinds.insert(line.name.as_str(), line.kind.as_str());
    }
    for name in histograms {
        assert_eq!(kinds.get(name), Some(&"d"), "{name}: {kinds:?}");
        assert_eq!(total(&lines, name, users).0, USERS, "{name}");
    }
    assert_eq!(kinds.get(NAMES.requests.as_str()), Some(&"c"));
    let (n, seconds) = total(&lines, &NAMES.duration, None);
    assert_eq!(n, USERS + BIG + 1);
    assert!(seconds > 0.0 && seconds < 10.0 * n as f64, "{seconds}");
    let bytes = (USERS * USER_BODY.len() + BIG * CHUNK * CHUNKS + 1) as f64;
    assert_eq!(total(&lines, &NAMES.output_bytes, None).1, bytes);
    assert_eq!(
        total(&lines, &NAMES.output_blocks, Some("http.route:/big")).1,
        (BIG * CHUNKS) as f64
    );
    // Tags: fixed keys, the route template intact, the hostile route safe.
    let user_line = lines
        .iter()
        .find(|l| l.name == NAMES.requests && l.tags.iter().any(|t| t == "http.route:/users/{id}"))
        .expect("users line");
    // (The test client speaks HTTP/1.0.)
    assert_eq!(
        user_line.tags,
        [
            "http.route:/users/{id}",
            "http.request.method:GET",
            "http.response.status_code:200",
            "network.protocol.version:1.0",
            "url.scheme:http"
        ]
    );
    let hostile = format!("http.route:{}", crate::support::app::hostile_tag());
    assert_eq!(total(&lines, &NAMES.requests, Some(&hostile)).1, 1.0);
}

#[test]
fn dogstatsd_builder_refuses_a_bad_address() {
    let refused = tower_vitals::dogstatsd::builder("not an address").build();
    assert!(
        matches!(refused, Err(tower_vitals::dogstatsd::DogstatsdError::Address(_))),
        "{refused:?}"
    );
}

/// Values and sample rate of every `name` line received on `socket` until `count` values
/// (scaled by their rates) have arrived (at most 10 s).
fn sampled_lines(socket: &UdpSocket, name: &str, count: f64) -> Vec<(usize, f64)> {
    socket.set_read_timeout(Some(Duration::from_millis(50))).expect("timeout");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    let mut buf = vec![0u8; 65_536];
    let scaled = |seen: &[(usize, f64)]| seen.iter().map(|(n, r)| *n as f64 / r).sum::<f64>();
    while scaled(&seen) < count - 0.5 {
        assert!(Instant::now() < deadline, "{} of {count} after 10 s: {seen:?}", scaled(&seen));
        let Ok(n) = socket.recv(&mut buf) else { continue };
        let text = std::str::from_utf8(&buf[..n]).expect("UTF-8 datagram");
        for line in text.lines().filter(|l| l.starts_with(&format!("{name}:"))) {
            parse(line); // well formed
            let values = line.split('|').next().unwrap_or_default().split(':').count() - 1;
            let rate = line
                .split('|')
                .find_map(|f| f.strip_prefix('@'))
                .map_or(1.0, |r| r.parse().expect("rate"));
            seen.push((values, rate));
        }
    }
    seen
}

/// Records SAMPLES values into one histogram of a DogStatsD recorder made by `configure` (one
/// flush holds them all) and returns what arrived: (values, rate) per line.
fn record_samples(
    configure: impl Fn(
        tower_vitals::dogstatsd::DogstatsdBuilder,
    ) -> tower_vitals::dogstatsd::DogstatsdBuilder,
) -> Vec<(usize, f64)> {
    let sink = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let builder = tower_vitals::dogstatsd::builder(sink.local_addr().expect("addr").to_string())
        .flush_interval(Duration::from_millis(300))
        .telemetry(false);
    let recorder = configure(builder).build().expect("build");
    let histogram = metrics::with_local_recorder(&recorder, || metrics::histogram!("x"));
    for i in 0..SAMPLES {
        histogram.record(i as f64);
    }
    sampled_lines(&sink, "x", SAMPLES as f64)
}

const SAMPLES: usize = 2_000;

#[test]
fn a_histogram_past_its_reservoir_goes_out_sampled_with_its_rate_and_counts_right() {
    let sampled = record_samples(|b| b.histogram_reservoir(100));
    let sent: usize = sampled.iter().map(|(n, _)| n).sum();
    let scaled: f64 = sampled.iter().map(|(n, r)| *n as f64 / r).sum();
    assert!(sent <= 100 * sampled.len() && sent < SAMPLES, "{sampled:?}");
    assert!(sampled.iter().any(|(_, r)| *r < 1.0), "no line carries a sample rate: {sampled:?}");
    assert!((scaled - SAMPLES as f64).abs() < 1.0, "scaled count {scaled}: {sampled:?}");

    // Sampling off: every value goes out, at rate 1.
    let every = record_samples(|b| b.keep_every_sample());
    assert_eq!(every.iter().map(|(n, _)| n).sum::<usize>(), SAMPLES, "{every:?}");
    assert!(every.iter().all(|(_, r)| *r == 1.0), "{every:?}");
}
