//! The `utilization` gauge through the real exporters: metrics-exporter-prometheus's text
//! exposition, and metrics-exporter-statsd's UDP lines received on a 127.0.0.1 socket. A window
//! of exactly known busy time on a mock clock, so the values are exact.

use crate::support::{prom_name, NAMES};
use std::net::UdpSocket;
use std::time::{Duration, Instant};

use http::Request;
use tower::{Layer, Service};
use tower_vitals::VitalsLayer;

const SECOND: u64 = 1_000_000_000;

/// One request in flight from 0 to 6 s, another from 2 s to 10 s: 14 request-seconds over the
/// 10 s window; with a capacity of 4, utilization = 14 / 40 = 0.35. The finish at 10 s publishes.
fn one_window() -> VitalsLayer {
    let (clock, mock) = tower_vitals::Clock::mock();
    let layer = VitalsLayer::builder()
        .clock(clock)
        .capacity(4)
        .utilization_window(Duration::from_secs(10))
        .build();
    let mut svc = layer.layer(tower::service_fn(|_: Request<String>| async {
        Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
            bytes::Bytes::from_static(b"x"),
        )))
    }));
    let mut call = || {
        let res = futures_util::FutureExt::now_or_never(svc.call(Request::new(String::new())))
            .expect("ready")
            .expect("response");
        res.into_body()
    };
    let finish = |mut body: tower_vitals::ResponseBody<http_body_util::Full<bytes::Bytes>>| {
        let waker = futures_util::task::noop_waker();
        let mut cx = std::task::Context::from_waker(&waker);
        let polled = http_body::Body::poll_frame(std::pin::Pin::new(&mut body), &mut cx);
        assert!(polled.is_ready());
    };
    let set = |mock: &tower_vitals::MockClock, s: u64| {
        mock.advance(std::time::Duration::from_nanos(s * SECOND) - mock.elapsed())
    };
    let a = call();
    set(&mock, 2);
    let b = call();
    set(&mock, 6);
    finish(a);
    set(&mock, 10);
    finish(b);
    layer
}

#[test]
fn prometheus_exposes_utilization_as_a_gauge() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    {
        let _guard = metrics::set_default_local_recorder(&recorder);
        one_window();
    }
    let text = handle.render();
    assert!(text.contains("# TYPE http_server_utilization gauge"), "{text}");
    assert!(
        text.lines().any(|l| *l == format!("{} 0.35", prom_name(&NAMES.utilization, ""))),
        "{text}"
    );
}

#[test]
fn statsd_receives_utilization_as_a_gauge_set() {
    let server = UdpSocket::bind("127.0.0.1:0").expect("bind a loopback UDP socket");
    server.set_read_timeout(Some(Duration::from_millis(100))).expect("timeout");
    let port = server.local_addr().expect("addr").port();
    // A buffer of 1 byte: every line leaves at once (no flush interval to wait for).
    let recorder = metrics_exporter_statsd::StatsdBuilder::from("127.0.0.1", port)
        .with_buffer_size(1)
        .build(None)
        .expect("statsd recorder");
    {
        let _guard = metrics::set_default_local_recorder(&recorder);
        one_window();
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut lines = Vec::new();
    let mut buf = [0u8; 2048];
    while Instant::now() < deadline {
        if let Ok(n) = server.recv(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            lines.extend(text.lines().map(str::to_owned));
            let zero = format!("{}:0|g", NAMES.utilization);
            if lines.iter().any(|l| l.starts_with(&format!("{}:", NAMES.utilization)) && *l != zero)
            {
                break;
            }
        }
    }
    let sets: Vec<&String> =
        lines.iter().filter(|l| l.starts_with(&format!("{}:", NAMES.utilization))).collect();
    // 0 when the layer wrapped its service and at the first request, then the window's value.
    let (last, first) =
        sets.split_last().unwrap_or_else(|| panic!("no utilization line: {lines:#?}"));
    assert!(!first.is_empty(), "the gauge is published at 0 before the first window: {sets:?}");
    assert!(first.iter().all(|l| **l == format!("{}:0|g", NAMES.utilization)), "{sets:?}");
    assert_eq!(**last, format!("{}:0.35|g", NAMES.utilization));
}
