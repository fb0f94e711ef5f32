//! A tonic gRPC server wrapped by the layer, called over 127.0.0.1 by a tonic client: a few
//! unary calls (OK, NOT_FOUND, INTERNAL) and server-streaming calls, then what was recorded.
//!
//! ```sh
//! cargo run --example tonic
//! ```
//!
//! The layer goes on the server builder, like any Tower layer; `grpc_routes()` makes the gRPC
//! method path (`/vitals.demo.Demo/Hello`) the `http.route` of each call. The demo service is in
//! `proto/` (generated from `proto/demo.proto` by `scripts/gen-proto.sh`). Metrics go to
//! metrics-util's in-memory `DebuggingRecorder` so that they can be printed here; in a real
//! service install a Prometheus or statsd recorder instead. The example exits by itself.

#[path = "../proto/demo.rs"]
mod demo;
#[path = "support/print.rs"]
mod print;

use std::time::Duration;

use demo::demo_client::DemoClient;
use demo::demo_server::DemoServer;
use demo::{CountRequest, DemoService, HelloRequest};
use metrics_util::debugging::DebuggingRecorder;
use tower_vitals::VitalsLayer;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::set_global_recorder(recorder)?;

    // The server: tonic's builder takes the layer; every RPC is measured.
    let layer = VitalsLayer::builder().grpc_routes().build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .layer(layer.clone())
            .add_service(DemoServer::new(DemoService))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                async {
                    let _ = stopped.await;
                },
            ),
    );

    // The client: a few calls, each bounded in time.
    let calls = async {
        let mut client = DemoClient::connect(format!("http://{addr}")).await?;
        for name in ["vitals", "tower", "missing", "crash"] {
            let answer = client.hello(HelloRequest { name: name.into() }).await;
            match answer {
                Ok(reply) => println!("Hello({name}) -> {:?}", reply.into_inner().message),
                Err(status) => {
                    println!("Hello({name}) -> {:?}: {}", status.code(), status.message())
                }
            }
        }
        for (count, size) in [(8u32, 40_000u32), (100, 10)] {
            let mut stream = client.count(CountRequest { count, size }).await?.into_inner();
            let (mut messages, mut bytes) = (0, 0);
            while let Some(chunk) = stream.message().await? {
                messages += 1;
                bytes += chunk.payload.len();
            }
            println!("Count({count} x {size} B) -> {messages} messages, {bytes} payload bytes");
        }
        Ok::<_, Box<dyn std::error::Error>>(())
    };
    tokio::time::timeout(Duration::from_secs(30), calls).await??;

    // A request is recorded when the server's response body ends: wait (bounded) for the last.
    for _ in 0..200 {
        if layer.active_requests() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(5), server).await???;

    println!("\nRecorded (one line per metric and label set):");
    print::print_snapshot(&snapshotter);
    println!("busy time (request time, summed): {:?}", layer.busy_time());
    Ok(())
}
