//! Request bodies (opt-in): blocks and bytes actually read, time waited on the client, and how
//! the body was consumed (`http.request.body.state`). Exact values on a mock clock, then a slow
//! chunked upload from a real client over real hyper on 127.0.0.1.

use std::time::Duration;

use crate::support::*;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty};
use metrics_util::debugging::Snapshotter;
use tower::{Layer, ServiceExt};
use tower_vitals::{RequestBody, RouteName, VitalsLayer};

const STATE: &str = "http.request.body.state";

struct Harness {
    _guard: metrics::LocalRecorderGuard<'static>,
    snap: Snapshotter,
    mock: tower_vitals::MockClock,
    layer: VitalsLayer<tower_vitals::MeasureRequestBody>,
}

fn harness() -> Harness {
    let (guard, snap) = local_recorder();
    let (clock, mock) = tower_vitals::Clock::mock();
    Harness {
        _guard: guard,
        snap,
        mock,
        layer: VitalsLayer::builder().clock(clock).measure_request_body().build(),
    }
}

/// How the handler treats the request body.
#[derive(Clone, Copy)]
enum Read {
    All,
    FirstFrame,
    Nothing,
}

/// Sends one request whose body plays `steps` to a handler that reads it as `read` says.
fn upload(h: &Harness, steps: Vec<(u64, Step)>, read: Read) -> Vec<Seen> {
    let svc = h.layer.layer(tower::service_fn(move |req: Request<RequestBody<ScriptBody>>| {
        let mut body = req.into_body();
        match read {
            Read::All => {
                drain(&mut body);
            }
            Read::FirstFrame => while poll_once(&mut body).is_pending() {},
            Read::Nothing => {}
        }
        drop(body);
        async { Ok::<_, std::io::Error>(Response::new(Empty::<Bytes>::new())) }
    }));
    let mut req = Request::new(ScriptBody::new(&h.mock, steps, false));
    req.extensions_mut().insert(RouteName::new("/upload"));
    block_on(svc.oneshot(req)).expect("response");
    snapshot(&h.snap)
}

fn secs(ns: u64) -> f64 {
    ns as f64 * 1e-9
}

#[test]
fn input_time_is_the_time_spent_waiting_on_the_client() {
    let h = harness();
    let steps = vec![
        (100, Step::Data(100)), // ready at once: the 100 ns are not waiting
        (0, Step::Pending),     // the client is slow: waiting starts
        (5_000, Step::Data(200)),
        (0, Step::Pending),
        (7_000, Step::Data(300)),
        (0, Step::Pending),
        (1_000, Step::Trailers(None)), // trailers: waited for, not counted as a block
    ];
    let seen = upload(&h, steps, Read::All);
    let blocks = one(&seen, &NAMES.input_blocks);
    assert_eq!(blocks.values(), vec![3.0]);
    assert_eq!(blocks.label(STATE), Some("complete"));
    assert_eq!(blocks.label("http.route"), Some("/upload"));
    assert_eq!(blocks.label("http.request.method"), Some("GET"));
    assert_eq!(one(&seen, &NAMES.input_bytes).values(), vec![600.0]);
    assert_eq!(one(&seen, &NAMES.input_time).values(), vec![secs(13_000)]);
}

#[test]
fn a_body_the_handler_never_reads_is_recorded_as_unread() {
    let h = harness();
    let seen = upload(&h, vec![(0, Step::Data(1_000))], Read::Nothing);
    let blocks = one(&seen, &NAMES.input_blocks);
    assert_eq!(blocks.label(STATE), Some("unread"));
    assert_eq!(blocks.values(), vec![0.0]);
    assert_eq!(one(&seen, &NAMES.input_bytes).values(), vec![0.0]);
    assert_eq!(one(&seen, &NAMES.input_time).values(), vec![0.0]);
}

#[test]
fn a_body_dropped_half_read_is_partial() {
    let h = harness();
    let steps = vec![(0, Step::Pending), (2_000, Step::Data(10)), (0, Step::Data(10))];
    let seen = upload(&h, steps, Read::FirstFrame);
    let blocks = one(&seen, &NAMES.input_blocks);
    assert_eq!(blocks.label(STATE), Some("partial"));
    assert_eq!(blocks.values(), vec![1.0]);
    assert_eq!(one(&seen, &NAMES.input_time).values(), vec![secs(2_000)]);
}

#[test]
fn a_failing_body_is_error() {
    let h = harness();
    let steps = vec![(0, Step::Data(10)), (0, Step::Pending), (3_000, Step::Error)];
    let seen = upload(&h, steps, Read::All);
    let blocks = one(&seen, &NAMES.input_blocks);
    assert_eq!(blocks.label(STATE), Some("error"));
    assert_eq!(blocks.values(), vec![1.0]);
    assert_eq!(
        one(&seen, &NAMES.input_time).values(),
        vec![secs(3_000)],
        "waiting until the error counts"
    );
}

#[test]
fn an_empty_body_never_read_is_complete() {
    let h = harness();
    let svc = h.layer.layer(tower::service_fn(|_: Request<RequestBody<Empty<Bytes>>>| async {
        Ok::<_, std::io::Error>(Response::new(Empty::<Bytes>::new()))
    }));
    block_on(svc.oneshot(Request::new(Empty::<Bytes>::new()))).expect("response");
    let seen = snapshot(&h.snap);
    assert_eq!(one(&seen, &NAMES.input_blocks).label(STATE), Some("complete"));
    assert_eq!(one(&seen, &NAMES.input_blocks).values(), vec![0.0]);
}

#[test]
fn exact_length_body_completes_on_its_last_frame() {
    let h = harness();
    let svc = h.layer.layer(tower::service_fn(
        |req: Request<RequestBody<http_body_util::Full<Bytes>>>| {
            let mut body = req.into_body();
            // Read the one frame, then stop: the body said it was at its end.
            assert!(poll_once(&mut body).is_ready());
            assert!(http_body::Body::is_end_stream(&body));
            async { Ok::<_, std::io::Error>(Response::new(Empty::<Bytes>::new())) }
        },
    ));
    let req = Request::new(http_body_util::Full::new(Bytes::from_static(b"12345")));
    block_on(svc.oneshot(req)).expect("response");
    let seen = snapshot(&h.snap);
    assert_eq!(one(&seen, &NAMES.input_blocks).label(STATE), Some("complete"));
    assert_eq!(one(&seen, &NAMES.input_bytes).values(), vec![5.0]);
}

/// Over real hyper on 127.0.0.1: a client that sends a chunked upload in five 1 KiB chunks,
/// 30 ms apart, through a raw socket (so the chunks really are apart on the wire).
#[tokio::test]
async fn slow_chunked_upload_over_real_hyper() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let (_guard, snap) = local_recorder();
    let layer = VitalsLayer::builder().measure_request_body().build();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server_layer = layer.clone();
    // current_thread runtime: the server task runs on this thread, with the local recorder.
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.expect("accept");
        let svc = tower::ServiceBuilder::new()
            .map_request(|mut req: Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(RouteName::new("/upload"));
                req
            })
            .layer(server_layer)
            .service_fn(|req: Request<RequestBody<hyper::body::Incoming>>| async move {
                let bytes = req.into_body().collect().await?.to_bytes();
                Ok::<_, hyper::Error>(Response::new(http_body_util::Full::new(Bytes::from(
                    bytes.len().to_string(),
                ))))
            });
        hyper::server::conn::http1::Builder::new()
            .serve_connection(
                hyper_util::rt::TokioIo::new(stream),
                hyper_util::service::TowerToHyperService::new(svc),
            )
            .await
    });

    let client = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream
            .write_all(
                b"POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\
                  Connection: close\r\n\r\n",
            )
            .await
            .expect("head");
        let chunk = [b'a'; 1024];
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_millis(30)).await;
            let mut frame = b"400\r\n".to_vec();
            frame.extend_from_slice(&chunk);
            frame.extend_from_slice(b"\r\n");
            stream.write_all(&frame).await.expect("chunk");
        }
        stream.write_all(b"0\r\n\r\n").await.expect("last chunk");
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.expect("response");
        String::from_utf8(answer).expect("utf-8")
    };
    let answer = tokio::time::timeout(Duration::from_secs(10), client).await.expect("in 10 s");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("5120"), "the handler read 5120 bytes: {answer}");
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("server ends in 10 s")
        .expect("server task")
        .expect("connection");

    let seen = snapshot(&snap);
    let blocks = one(&seen, &NAMES.input_blocks);
    assert_eq!(blocks.label(STATE), Some("complete"));
    assert_eq!(blocks.label("http.route"), Some("/upload"));
    assert_eq!(blocks.label("http.request.method"), Some("POST"));
    assert_eq!(blocks.values(), vec![5.0], "one block per chunk, apart on the wire");
    assert_eq!(
        one(&seen, &NAMES.input_bytes).values(),
        vec![5120.0],
        "bytes read, not a Content-Length"
    );
    let waited = one(&seen, &NAMES.input_time).values()[0];
    let duration = one(&seen, &NAMES.duration).values()[0];
    println!("input_time {waited:.4} s of request.duration {duration:.4} s");
    // The handler waited for chunks sent 30 ms apart: some of that is waiting (a loose lower
    // bound: a busy machine may deliver two chunks at once), and never more than the request.
    assert!(waited >= 0.02, "input_time {waited}");
    assert!(waited <= duration, "input_time {waited} > duration {duration}");
    assert_eq!(layer.active_requests(), 0);
}
