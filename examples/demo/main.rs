//! `cargo run --example demo`: what tower-vitals shows about a real-looking service.
//!
//! An axum app on 127.0.0.1 wrapped in `VitalsLayer` (fast and slow JSON handlers, a path
//! parameter, a 1 MiB download in 8 KiB blocks and the same file in 128-byte blocks, a 500, a
//! stream that fails half-way), serving `/metrics` for Prometheus, and driving its own traffic
//! (including a client that leaves mid-download and a slow reader). Every few seconds and at
//! the end it prints a per-route table of what the layer recorded (percentiles from
//! hdrhistogram), next to what its load generator sent.
//!
//! ```text
//! cargo run --example demo                      # 15 s, then the final table
//! cargo run --example demo -- --forever         # until Ctrl-C; scrape /metrics meanwhile
//! cargo run --example demo -- --seconds 60 --port 3001
//! ```

mod kit;

use std::process::ExitCode;
use std::time::Duration;

use metrics_util::layers::FanoutBuilder;
use tower_vitals::prometheus::{self, PrometheusMetrics};

fn main() -> ExitCode {
    let options = match kit::Options::parse(std::env::args().skip(1)) {
        Ok(o) => o,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    // Two recorders fed by the same layer: Prometheus (with tower-vitals' buckets) for
    // /metrics, and the hdrhistogram table printed here.
    let recorder = prometheus::builder().build_recorder();
    let metrics = PrometheusMetrics::from_handle(recorder.handle());
    let table = kit::table::TableRecorder::new();
    let fanout =
        FanoutBuilder::default().add_recorder(recorder).add_recorder(table.clone()).build();
    if metrics::set_global_recorder(fanout).is_err() {
        eprintln!("a metrics recorder was already installed");
        return ExitCode::FAILURE;
    }
    if let Err(e) = metrics.spawn_upkeep(Duration::from_secs(5)) {
        eprintln!("could not start the Prometheus upkeep thread: {e}");
        return ExitCode::FAILURE;
    }
    let runtime =
        match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("could not start the runtime: {e}");
                return ExitCode::FAILURE;
            }
        };
    let mut stdout = std::io::stdout();
    match runtime.block_on(kit::run(&options, &metrics, &table, &mut stdout)) {
        Ok(report) if report.matches() => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("demo failed: {e}");
            ExitCode::FAILURE
        }
    }
}
