//! An axum app with `VitalsLayer` pushing to the Datadog agent over DogStatsD: counters
//! aggregated in-process, histograms as distributions (several values per line), in seconds.
//!
//! ```sh
//! cargo run --example dogstatsd --features dogstatsd                        # to a local UDP
//!                                                                           # socket that prints
//! cargo run --example dogstatsd --features dogstatsd -- --to 127.0.0.1:8125 # to your agent
//! ```

#[path = "support/udp_target.rs"]
mod udp_target;

use std::time::Duration;

use axum::extract::Path;
use axum::routing::get;
use axum::Router;
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower_vitals::VitalsLayer;
use udp_target::UdpTarget;

async fn user(Path(id): Path<u32>) -> String {
    format!("{{\"id\":{id}}}")
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Without --to: a local socket plays the server and prints what it receives.
    let udp = UdpTarget::from_args()?;
    let target = udp.addr.clone();

    tower_vitals::dogstatsd::builder(&target)
        .default_tag("env", "dev")
        .flush_interval(Duration::from_millis(500))
        .install()?;
    println!("sending DogStatsD to {target}");

    let layer = VitalsLayer::new();
    let app = Router::new().route("/users/{id}", get(user)).layer(layer.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let client = Client::builder(TokioExecutor::new()).build_http::<axum::body::Body>();
    for i in 0..20u32 {
        let uri = format!("http://{addr}/users/{i}").parse()?;
        let res = tokio::time::timeout(Duration::from_secs(5), client.get(uri)).await??;
        res.into_body().collect().await?;
    }
    println!("sent 20 requests");

    if udp.print_received(Duration::from_millis(1500))?.is_none() {
        tokio::time::sleep(Duration::from_millis(1000)).await; // one flush
    }
    server.abort();
    Ok(())
}
