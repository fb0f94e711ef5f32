//! Real hyper 1.x connections over 127.0.0.1: a client that disconnects mid-body, a slow
//! reader, an exact Content-Length response. The server runs on this test's current-thread
//! runtime, so the per-test local recorder sees everything it records.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::support::*;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use metrics_util::debugging::DebuggingRecorder;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tower::Layer;
use tower_vitals::{RouteName, VitalsLayer};

const CHUNK: usize = 64 * 1024;
const BIG_CHUNKS: usize = 512; // 32 MiB: far more than loopback socket buffers hold
const SLOW_CHUNKS: usize = 96; // 6 MiB

type BoxBody = http_body_util::combinators::UnsyncBoxBody<Bytes, Infallible>;

fn chunks(n: usize) -> BoxBody {
    let stream = futures_util::stream::iter(
        (0..n).map(|_| Ok::<_, Infallible>(Frame::data(Bytes::from(vec![b'v'; CHUNK])))),
    );
    StreamBody::new(stream).boxed_unsync()
}

async fn app(req: Request<Incoming>) -> Result<Response<BoxBody>, Infallible> {
    let (route, body) = match req.uri().path() {
        "/big" => ("/big", chunks(BIG_CHUNKS)),
        "/slow" => ("/slow", chunks(SLOW_CHUNKS)),
        "/fast" => ("/fast", chunks(SLOW_CHUNKS)),
        _ => ("/exact", Full::new(Bytes::from_static(b"exactly 19 bytes!!!")).boxed_unsync()),
    };
    let mut res = Response::new(body);
    res.extensions_mut().insert(RouteName::new(route));
    Ok(res)
}

/// Serves `layer` over hyper on 127.0.0.1 until the test ends.
async fn serve(layer: VitalsLayer) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1");
    let addr = listener.local_addr().expect("addr");
    tokio::task::spawn_local(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let svc = TowerToHyperService::new(layer.layer(tower::service_fn(app)));
            tokio::task::spawn_local(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

async fn send_get(addr: SocketAddr, path: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await.expect("write request");
    stream
}

/// Reads until EOF (bounded by `limit`), pausing `pause` between reads; returns bytes read.
async fn read_all(stream: &mut TcpStream, pause: Duration, limit: Duration) -> usize {
    let deadline = Instant::now() + limit;
    let mut buf = vec![0u8; 16 * 1024];
    let mut total = 0;
    while Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => total += n,
        }
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
    }
    total
}

/// Waits (bounded) until the layer has nothing in flight.
async fn settle(layer: &VitalsLayer) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while layer.active_requests() != 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(layer.active_requests(), 0, "requests still in flight after 10 s");
}

fn local() -> tokio::task::LocalSet {
    tokio::task::LocalSet::new()
}

#[tokio::test]
async fn client_disconnect_mid_body_is_aborted_and_recorded_once() {
    let recorder = DebuggingRecorder::new();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let layer = VitalsLayer::new();
    local()
        .run_until(async {
            let addr = serve(layer.clone()).await;
            let mut stream = send_get(addr, "/big").await;
            let mut buf = vec![0u8; 256 * 1024];
            let mut got = 0;
            while got < 256 * 1024 {
                let n = stream.read(&mut buf).await.expect("read");
                assert!(n > 0, "server closed early");
                got += n;
            }
            drop(stream); // the client goes away with most of the body unsent
            settle(&layer).await;
        })
        .await;
    let seen = snapshot(&recorder.snapshotter());
    let req = one(&seen, &NAMES.requests);
    assert_eq!(req.counter(), 1);
    assert_eq!(req.label("error.type"), Some("aborted"));
    assert_eq!(req.label("http.route"), Some("/big"));
    assert_eq!(one(&seen, &NAMES.active_requests).gauge(), 0.0);
    let bytes = one(&seen, &NAMES.output_bytes).values()[0];
    assert!(bytes >= (256 * 1024) as f64, "at least what the client read went out: {bytes}");
    assert!(bytes < (BIG_CHUNKS * CHUNK) as f64, "not the whole body: {bytes}");
}

#[tokio::test]
async fn slow_reader_shows_up_as_output_time() {
    let recorder = DebuggingRecorder::new();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let layer = VitalsLayer::new();
    local()
        .run_until(async {
            let addr = serve(layer.clone()).await;
            let mut fast = send_get(addr, "/fast").await;
            let fast_read = read_all(&mut fast, Duration::ZERO, Duration::from_secs(30)).await;
            let mut slow = send_get(addr, "/slow").await;
            // 16 KiB every 2 ms: ~0.8 s for 6 MiB, far slower than the server can write.
            let slow_read =
                read_all(&mut slow, Duration::from_millis(2), Duration::from_secs(30)).await;
            assert!(fast_read > SLOW_CHUNKS * CHUNK && slow_read > SLOW_CHUNKS * CHUNK);
            settle(&layer).await;
        })
        .await;
    let seen = snapshot(&recorder.snapshotter());
    let by_route = |name: &str, route: &str| {
        named(&seen, name)
            .into_iter()
            .find(|s| s.label("http.route") == Some(route))
            .unwrap_or_else(|| panic!("{name} for {route}"))
            .values()[0]
    };
    let (slow_out, slow_total) =
        (by_route(&NAMES.output_time, "/slow"), by_route(&NAMES.duration, "/slow"));
    let fast_out = by_route(&NAMES.output_time, "/fast");
    assert!(slow_out > fast_out, "slow reader {slow_out} s vs fast reader {fast_out} s");
    // The slow client, not the application, held the request: most of it is output time.
    assert!(slow_out > 0.5 * slow_total, "output {slow_out} s of {slow_total} s");
    assert!(slow_out <= slow_total);
    assert_eq!(by_route(&NAMES.output_blocks, "/slow"), SLOW_CHUNKS as f64);
    assert_eq!(by_route(&NAMES.output_bytes, "/slow"), (SLOW_CHUNKS * CHUNK) as f64);
    for s in named(&seen, &NAMES.requests) {
        assert_eq!(s.counter(), 1);
        assert_eq!(s.label("error.type"), None, "{s:?}");
    }
}

#[tokio::test]
async fn exact_content_length_response_is_complete_once() {
    let recorder = DebuggingRecorder::new();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let layer = VitalsLayer::new();
    local()
        .run_until(async {
            let addr = serve(layer.clone()).await;
            let mut stream = send_get(addr, "/exact").await;
            let mut raw = Vec::new();
            tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
                .await
                .expect("response within 10 s")
                .expect("read");
            let text = String::from_utf8_lossy(&raw);
            assert!(text.contains("content-length: 19"), "{text}");
            settle(&layer).await;
        })
        .await;
    let seen = snapshot(&recorder.snapshotter());
    let req = one(&seen, &NAMES.requests);
    assert_eq!((req.counter(), req.label("error.type")), (1, None));
    assert_eq!(req.label("http.response.status_code"), Some("200"));
    assert_eq!(one(&seen, &NAMES.output_bytes).values(), vec![19.0]);
    assert_eq!(one(&seen, &NAMES.output_blocks).values(), vec![1.0]);
    assert_eq!(one(&seen, &NAMES.active_requests).gauge(), 0.0);
}
