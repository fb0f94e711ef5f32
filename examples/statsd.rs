//! An axum app with `VitalsLayer` pushing to statsd, in the classic (Etsy statsd) mode: time
//! histograms as `|ms` timers in milliseconds, sizes as `|h`, counters summed in-process.
//!
//! ```sh
//! cargo run --example statsd --features statsd                       # to a local UDP socket
//!                                                                    # that prints what arrives
//! cargo run --example statsd --features statsd -- --to 127.0.0.1:8125 # to your statsd server
//! ```

#[path = "support/udp_target.rs"]
mod udp_target;

use std::time::Duration;

use axum::body::Body;
use axum::extract::Path;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower_vitals::statsd;
use tower_vitals::VitalsLayer;
use udp_target::UdpTarget;

async fn user(Path(id): Path<u32>) -> String {
    format!("{{\"id\":{id}}}")
}

async fn stream() -> Body {
    let blocks = (0..8).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![b's'; 1024])));
    Body::from_stream(futures_util::stream::iter(blocks))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Without --to: a local socket plays the server and prints what it receives.
    let udp = UdpTarget::from_args()?;
    let target = udp.addr.clone();

    let exporter = statsd::builder(target.clone())
        .global_prefix("example")
        .default_tag("env", "dev")
        .classic() // Etsy statsd: percentiles only for |ms timers
        .queue_size(65_536) // histogram samples waiting for the sender thread
        .buffer_size(1432) // bytes per datagram
        .flush_interval(Duration::from_millis(200))
        .install()?;
    println!("sending statsd lines to {target}");

    let layer = VitalsLayer::new();
    let app = Router::new()
        .route("/users/{id}", get(user))
        .route("/stream", get(stream))
        .layer(layer.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let client = Client::builder(TokioExecutor::new()).build_http::<Body>();
    for i in 0..10u32 {
        let path = if i % 5 == 0 { "/stream".to_owned() } else { format!("/users/{i}") };
        let uri = format!("http://{addr}{path}").parse()?;
        let res = tokio::time::timeout(Duration::from_secs(5), client.get(uri)).await??;
        res.into_body().collect().await?;
    }
    println!("sent 10 requests");

    // Counters go out on the next flush (200 ms here): read for a second.
    if let Some(lines) = udp.print_received(Duration::from_secs(1))? {
        println!("{lines} lines in {} datagrams", exporter.packets_sent());
    } else {
        tokio::time::sleep(Duration::from_millis(500)).await; // let the last flush go out
        println!("{} datagrams sent", exporter.packets_sent());
    }
    println!("dropped samples: {}, send errors: {}", exporter.dropped(), exporter.send_errors());
    server.abort();
    Ok(())
}
