//! gRPC over real loopback: a tonic server wrapped by the layer (`Server::builder().layer(..)`),
//! called by a tonic client on 127.0.0.1. Shows `rpc.grpc.status_code` for OK and error statuses
//! (trailers and trailers-only responses), the method path as the route, and streaming RPCs'
//! frames and bytes.

#[path = "../../proto/demo.rs"]
mod demo;

use std::net::SocketAddr;
use std::time::Duration;

use crate::support::*;
use demo::demo_client::DemoClient;
use demo::demo_server::DemoServer;
use demo::{chunk_wire_len, CountRequest, DemoService, HelloReply, HelloRequest};
use tower_vitals::VitalsLayer;

const HELLO: &str = "/vitals.demo.Demo/Hello";
const COUNT: &str = "/vitals.demo.Demo/Count";

/// A tonic server on 127.0.0.1, stopped when dropped (also when a test fails).
struct Running {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    layer: VitalsLayer,
}

impl Running {
    async fn start(layer: VitalsLayer) -> Running {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tonic::transport::Server::builder()
            .layer(layer.clone())
            .add_service(DemoServer::new(DemoService))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                async {
                    let _ = stopped.await;
                },
            );
        // current_thread runtime: the server runs on this thread, with the local recorder.
        Running { addr, stop: Some(stop), task: tokio::spawn(server), layer }
    }

    async fn client(&self) -> DemoClient<tonic::transport::Channel> {
        let connect = DemoClient::connect(format!("http://{}", self.addr));
        tokio::time::timeout(Duration::from_secs(10), connect)
            .await
            .expect("connect in 10 s")
            .expect("connect")
    }

    /// Waits (at most 5 s) until every request has been recorded: the server finishes a request
    /// when its body ends, which may be just after the client saw the end.
    async fn settle(&self) {
        for _ in 0..1_000 {
            if self.layer.active_requests() == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("requests still in flight after 5 s: {}", self.layer.active_requests());
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.abort();
    }
}

/// The metrics named `name` whose labels include every pair of `labels`.
fn find<'a>(seen: &'a [Seen], name: &str, labels: &[(&str, &str)]) -> Vec<&'a Seen> {
    named(seen, name)
        .into_iter()
        .filter(|s| labels.iter().all(|(k, v)| s.label(k) == Some(*v)))
        .collect()
}

fn only<'a>(seen: &'a [Seen], name: &str, labels: &[(&str, &str)]) -> &'a Seen {
    let found = find(seen, name, labels);
    assert_eq!(found.len(), 1, "one {name} with {labels:?}: {seen:#?}");
    found[0]
}

async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish in 10 s"))
}

#[tokio::test]
async fn unary_calls_carry_the_grpc_status_and_method_route() {
    let (_guard, snap) = local_recorder();
    let server = Running::start(VitalsLayer::builder().grpc_routes().build()).await;
    let mut client = server.client().await;

    let hello = |name: &str| HelloRequest { name: name.to_owned() };
    let ok = within("hello", client.hello(hello("vitals"))).await.expect("OK call");
    assert_eq!(ok.get_ref().message, "hello vitals");
    let missing = within("missing", client.hello(hello("missing"))).await.expect_err("error");
    assert_eq!(missing.code(), tonic::Code::NotFound);
    let crash = within("crash", client.hello(hello("crash"))).await.expect_err("error");
    assert_eq!(crash.code(), tonic::Code::Internal);
    server.settle().await;

    let seen = snapshot(&snap);
    let base = [("http.route", HELLO), ("http.request.method", "POST")];

    // OK: grpc-status 0 from the trailers frame, one data frame with the reply.
    let ok = [&base[..], &[("rpc.grpc.status_code", "0")]].concat();
    let requests = only(&seen, &NAMES.requests, &ok);
    assert_eq!(requests.counter(), 1);
    assert_eq!(requests.label("http.response.status_code"), Some("200"));
    assert_eq!(requests.label("error.type"), None);
    let reply = HelloReply { message: "hello vitals".into() };
    let reply_len = (5 + prost::Message::encoded_len(&reply)) as f64;
    assert_eq!(only(&seen, &NAMES.output_bytes, &ok).values(), vec![reply_len]);
    assert_eq!(only(&seen, &NAMES.output_blocks, &ok).values(), vec![1.0]);

    // NOT_FOUND: a failed call over HTTP 200 (trailers-only: grpc-status in the headers). The
    // caller's error, like a 4xx: no error.type.
    let not_found = [&base[..], &[("rpc.grpc.status_code", "5")]].concat();
    let requests = only(&seen, &NAMES.requests, &not_found);
    assert_eq!(requests.counter(), 1);
    assert_eq!(requests.label("http.response.status_code"), Some("200"));
    assert_eq!(requests.label("error.type"), None);
    assert_eq!(only(&seen, &NAMES.output_blocks, &not_found).values(), vec![0.0]);

    // INTERNAL: the server's failure: error.type names the code.
    let internal = [&base[..], &[("rpc.grpc.status_code", "13")]].concat();
    let requests = only(&seen, &NAMES.requests, &internal);
    assert_eq!(requests.counter(), 1);
    assert_eq!(requests.label("error.type"), Some("INTERNAL"));

    assert_eq!(counter_total(&seen, &NAMES.requests), 3);
}

#[tokio::test]
async fn server_streaming_counts_frames_and_bytes() {
    let (_guard, snap) = local_recorder();
    let server = Running::start(VitalsLayer::builder().grpc_routes().build()).await;
    let mut client = server.client().await;

    // 8 messages of 40 000 bytes: each is past tonic's 32 KiB yield threshold, one frame each.
    let request = CountRequest { count: 8, size: 40_000 };
    let mut stream = within("count", client.count(request)).await.expect("stream").into_inner();
    let mut received = 0;
    while let Some(chunk) = within("message", stream.message()).await.expect("message") {
        assert_eq!(chunk.payload.len(), 40_000);
        received += 1;
    }
    assert_eq!(received, 8);
    server.settle().await;

    let seen = snapshot(&snap);
    let labels = [("http.route", COUNT), ("rpc.grpc.status_code", "0")];
    assert_eq!(only(&seen, &NAMES.requests, &labels).counter(), 1);
    assert_eq!(only(&seen, &NAMES.requests, &labels).label("error.type"), None);
    let wire: u64 = (0..8).map(|i| chunk_wire_len(i, 40_000)).sum();
    assert_eq!(only(&seen, &NAMES.output_bytes, &labels).values(), vec![wire as f64]);
    assert_eq!(only(&seen, &NAMES.output_blocks, &labels).values(), vec![8.0]);
}

#[tokio::test]
async fn small_streamed_messages_are_coalesced_by_tonic_and_bytes_stay_exact() {
    let (_guard, snap) = local_recorder();
    let server = Running::start(VitalsLayer::builder().grpc_routes().build()).await;
    let mut client = server.client().await;

    let request = CountRequest { count: 100, size: 10 };
    let mut stream = within("count", client.count(request)).await.expect("stream").into_inner();
    let mut received = 0;
    while within("message", stream.message()).await.expect("message").is_some() {
        received += 1;
    }
    assert_eq!(received, 100);
    server.settle().await;

    let seen = snapshot(&snap);
    let labels = [("http.route", COUNT), ("rpc.grpc.status_code", "0")];
    let wire: u64 = (0..100).map(|i| chunk_wire_len(i, 10)).sum();
    assert_eq!(only(&seen, &NAMES.output_bytes, &labels).values(), vec![wire as f64]);
    // Frames are what the body yields: tonic packs messages that are ready together into one
    // buffer, so 100 small messages leave in far fewer frames than 100.
    let frames = only(&seen, &NAMES.output_blocks, &labels).values()[0];
    println!("100 messages of 10 bytes: {frames} frame(s), {wire} bytes");
    assert!((1.0..100.0).contains(&frames), "{frames} frames");
}

#[tokio::test]
async fn a_stream_the_client_cancels_is_aborted() {
    let (_guard, snap) = local_recorder();
    let server = Running::start(VitalsLayer::builder().grpc_routes().build()).await;
    let mut client = server.client().await;

    // 10 000 messages of 40 000 bytes (400 MB): far more than flow control lets through before
    // the client stops reading after two messages and drops the call.
    let request = CountRequest { count: 10_000, size: 40_000 };
    let mut stream = within("count", client.count(request)).await.expect("stream").into_inner();
    for _ in 0..2 {
        within("message", stream.message()).await.expect("message").expect("a message");
    }
    drop(stream);
    server.settle().await;

    let seen = snapshot(&snap);
    let requests = only(&seen, &NAMES.requests, &[("http.route", COUNT)]);
    assert_eq!(requests.label("error.type"), Some("aborted"));
    assert_eq!(requests.label("rpc.grpc.status_code"), None, "no trailers were sent");
    let frames = only(&seen, &NAMES.output_blocks, &[("http.route", COUNT)]).values()[0];
    assert!((2.0..10_000.0).contains(&frames), "{frames} frames before the cancel");
}

#[tokio::test]
async fn without_grpc_routes_the_path_is_never_a_route() {
    let (_guard, snap) = local_recorder();
    let server = Running::start(VitalsLayer::new()).await;
    let mut client = server.client().await;
    let request = HelloRequest { name: "x".into() };
    within("hello", client.hello(request)).await.expect("OK call");
    server.settle().await;
    let seen = snapshot(&snap);
    let requests = only(&seen, &NAMES.requests, &[("rpc.grpc.status_code", "0")]);
    assert_eq!(requests.label("http.route"), Some("unmatched"));
}

#[tokio::test]
async fn grpc_routes_stay_under_the_route_cap() {
    let (_guard, snap) = local_recorder();
    let server = Running::start(VitalsLayer::builder().grpc_routes().route_cap(1).build()).await;
    let mut client = server.client().await;
    within("hello", client.hello(HelloRequest { name: "x".into() })).await.expect("OK call");
    let mut stream = within("count", client.count(CountRequest { count: 1, size: 1 }))
        .await
        .expect("stream")
        .into_inner();
    while within("message", stream.message()).await.expect("message").is_some() {}
    server.settle().await;
    let seen = snapshot(&snap);
    assert_eq!(only(&seen, &NAMES.requests, &[("http.route", HELLO)]).counter(), 1);
    assert_eq!(only(&seen, &NAMES.requests, &[("http.route", "overflow")]).counter(), 1);
}
