//! An axum app with `VitalsLayer` pushing to the Datadog agent over DogStatsD: counters
//! aggregated in-process, histograms as distributions (several values per line), in seconds.
//!
//! ```sh
//! cargo run --example dogstatsd --features dogstatsd                        # to a local UDP
//!                                                                           # socket that prints
//! cargo run --example dogstatsd --features dogstatsd -- --to 127.0.0.1:8125 # to your agent
//! ```

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use axum::extract::Path;
use axum::routing::get;
use axum::Router;
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use metrics::Label;
use tower_vitals::VitalsLayer;

async fn user(Path(id): Path<u32>) -> String {
    format!("{{\"id\":{id}}}")
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let to = args.iter().position(|a| a == "--to").and_then(|i| args.get(i + 1)).cloned();
    let sink = match &to {
        Some(_) => None,
        None => Some(UdpSocket::bind("127.0.0.1:0")?),
    };
    let target = match (&to, &sink) {
        (Some(to), _) => to.clone(),
        (None, Some(sink)) => sink.local_addr()?.to_string(),
        (None, None) => unreachable!("a sink exists when no target is given"),
    };

    tower_vitals::dogstatsd::builder(&target)?
        .with_global_labels(vec![Label::new("env", "dev")])
        .with_flush_interval(Duration::from_millis(500))
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

    if let Some(sink) = sink {
        sink.set_read_timeout(Some(Duration::from_millis(100)))?;
        let deadline = Instant::now() + Duration::from_millis(1500);
        let mut buf = vec![0u8; 65_536];
        while Instant::now() < deadline {
            if let Ok(n) = sink.recv(&mut buf) {
                for line in String::from_utf8_lossy(&buf[..n]).lines() {
                    println!("  {line}");
                }
            }
        }
    } else {
        tokio::time::sleep(Duration::from_millis(1000)).await; // one flush
    }
    server.abort();
    Ok(())
}
