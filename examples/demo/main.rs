//! `cargo run --example demo`: what tower-vitals shows about a real-looking service.
//!
//! An axum app on 127.0.0.1 wrapped in `VitalsLayer` (fast and slow JSON handlers, a path
//! parameter, a 1 MiB download in 8 KiB blocks and the same file in 128-byte blocks, a 500, a
//! stream that fails half-way), serving `/metrics` for Prometheus, and driving its own traffic
//! (including a client that leaves mid-download and a slow reader). It prints the URL of its
//! live page (`/vitals`, from `tower_vitals::live`) first; every few seconds and at the end it
//! prints a per-route table of what the layer recorded, read from the same live recorder
//! (percentiles from hdrhistogram), next to what its load generator sent.
//!
//! ```text
//! cargo run --example demo                      # 15 s, then the final table
//! cargo run --example demo -- --forever         # until Ctrl-C; open /vitals, scrape /metrics
//! cargo run --example demo -- --seconds 60 --port 3001
//! cargo run --example demo --features statsd -- --statsd 127.0.0.1:8125
//! cargo run --example demo --features dogstatsd -- --dogstatsd 127.0.0.1:8125
//! ```

mod kit;

use std::process::ExitCode;
use std::time::Duration;

use metrics_util::layers::FanoutBuilder;
use tower_vitals::live::Live;
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
    // /metrics, and the live summary for /vitals and the table printed here.
    let (recorder, metrics) = prometheus_recorder();
    let live = Live::new();
    let fanout = FanoutBuilder::default().add_recorder(recorder).add_recorder(live.recorder());
    let fanout = match push_recorders(fanout, &options) {
        Ok(f) => f.build(),
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    if metrics::set_global_recorder(fanout).is_err() {
        eprintln!("a metrics recorder was already installed");
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
    let result = runtime.block_on(kit::run(&options, &metrics, &live, &mut stdout));
    if options.statsd.is_some() || options.dogstatsd.is_some() {
        std::thread::sleep(PUSH_FLUSH + Duration::from_millis(500)); // the exporters' last flush
    }
    match result {
        Ok(report) if report.matches() => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("demo failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The Prometheus recorder behind `/metrics`: native histograms (protobuf) to a Prometheus
/// started with `--enable-feature=native-histograms`, classic buckets to every other scraper,
/// from the same `/metrics`: the scraper chooses, so there is nothing to configure. Built with
/// the `process` feature, each scrape also carries the process's CPU, memory, files and threads.
fn prometheus_recorder() -> (prometheus::PrometheusRecorder, PrometheusMetrics) {
    let builder = prometheus::builder();
    #[cfg(feature = "process")]
    let builder = builder.process_metrics();
    let recorder = builder.build_recorder();
    let metrics = PrometheusMetrics::from_handle(recorder.handle());
    (recorder, metrics)
}

/// How often the statsd / DogStatsD exporters flush; the demo waits a bit longer than this
/// before exiting, so the last samples arrive.
const PUSH_FLUSH: Duration = Duration::from_secs(1);

/// Adds the statsd / DogStatsD recorders asked for on the command line (when built with the
/// feature), so the same layer also pushes to a statsd server or a Datadog agent.
#[allow(unused_mut)] // without the statsd features there is nothing to add
fn push_recorders(
    mut fanout: FanoutBuilder,
    options: &kit::Options,
) -> Result<FanoutBuilder, String> {
    if let Some(addr) = &options.statsd {
        #[cfg(feature = "statsd")]
        {
            let (recorder, _stats) = tower_vitals::statsd::builder(addr.clone())
                .classic()
                .flush_interval(PUSH_FLUSH)
                .build()
                .map_err(|e| format!("--statsd {addr}: {e}"))?;
            fanout = fanout.add_recorder(recorder);
        }
        #[cfg(not(feature = "statsd"))]
        return Err(format!(
            "--statsd needs the statsd feature: cargo run --example demo --features statsd -- --statsd {addr}"
        ));
    }
    if let Some(addr) = &options.dogstatsd {
        #[cfg(feature = "dogstatsd")]
        {
            let recorder = tower_vitals::dogstatsd::builder(addr)
                .flush_interval(PUSH_FLUSH)
                .build()
                .map_err(|e| format!("--dogstatsd {addr}: {e}"))?;
            fanout = fanout.add_recorder(recorder);
        }
        #[cfg(not(feature = "dogstatsd"))]
        return Err(format!(
            "--dogstatsd needs the dogstatsd feature: cargo run --example demo --features dogstatsd -- --dogstatsd {addr}"
        ));
    }
    Ok(fanout)
}
