//! Process metrics: CPU time, resident and virtual memory, open file descriptors and their limit,
//! threads and start time of this process, in the names Prometheus' own clients use, read by the
//! [`metrics-process`](https://docs.rs/metrics-process) crate (Linux, macOS, Windows, FreeBSD,
//! OpenBSD; elsewhere nothing is recorded).
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // After the recorder is installed:
//! tower_vitals::process::describe(); // units and help text, once
//! tower_vitals::process::collect(); // one reading; call it before each scrape or push
//! # Ok(())
//! # }
//! ```
//!
//! A reading is a handful of system calls (on Linux: `/proc/self/stat`, `/proc/self/limits` and
//! a count of `/proc/self/fd`), so take it when the values are wanted, before a scrape, rather
//! than on a timer of your own.
//!
//! | series (Prometheus) | kind | meaning |
//! |---|---|---|
//! | `process_cpu_seconds_total` | counter | user + system CPU time, in whole seconds (`metrics` counters are integers: read it with `rate(...[1m])` or wider) |
//! | `process_resident_memory_bytes` | gauge | resident set size |
//! | `process_virtual_memory_bytes` | gauge | virtual memory size |
//! | `process_virtual_memory_max_bytes` | gauge | address-space limit (0: unlimited; not on Windows) |
//! | `process_open_fds` | gauge | open file descriptors (handles on Windows) |
//! | `process_max_fds` | gauge | their limit (0: unlimited) |
//! | `process_threads` | gauge | OS threads (not on Windows) |
//! | `process_start_time_seconds` | gauge | start time, seconds since the Unix epoch |
//!
//! statsd and DogStatsD receive the same names (`process_threads:12|g`): call [`collect`] on the
//! exporter's flush interval or slower. The CPU counter goes out as its growth since the previous
//! reading (statsd counters are deltas); the statsd `Pipeline::Inline` exporter drops it
//! (metrics-exporter-statsd ignores absolute counter values).

use std::sync::OnceLock;

use metrics::Recorder;
use metrics_process::Collector;

/// Every metric name this module records, as the `metrics` facade sees them (and Prometheus
/// shows them: they are already in its form).
pub const METRIC_NAMES: [&str; 8] = [
    "process_cpu_seconds_total",
    "process_open_fds",
    "process_max_fds",
    "process_virtual_memory_bytes",
    "process_virtual_memory_max_bytes",
    "process_resident_memory_bytes",
    "process_start_time_seconds",
    "process_threads",
];

fn collector() -> &'static Collector {
    static COLLECTOR: OnceLock<Collector> = OnceLock::new();
    COLLECTOR.get_or_init(Collector::default)
}

/// Declares the process metrics (unit and help text) to the current recorder: the thread's
/// local one if set, else the global one. Call it once, after installing the recorder.
pub fn describe() {
    collector().describe();
}

/// Reads the process's figures now and records them into the current recorder (the thread's
/// local one if set, else the global one): the counter's absolute value, the gauges set.
pub fn collect() {
    collector().collect();
}

/// [`describe`] and [`collect`] into `recorder`, whichever recorder is current on this thread:
/// the hook a scrape calls, with the recorder it is about to render.
#[cfg_attr(not(feature = "prometheus"), allow(dead_code))] // the Prometheus render's hook
pub(crate) fn collect_into(recorder: &dyn Recorder) {
    metrics::with_local_recorder(recorder, || {
        describe();
        collect();
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    #[test]
    fn a_reading_records_every_figure_of_this_process() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let big = vec![1u8; 8 << 20]; // 8 MiB touched: resident memory is at least that
        std::hint::black_box(&big);
        let threads: Vec<_> = (0..3)
            .map(|_| {
                std::thread::spawn(|| std::thread::park_timeout(std::time::Duration::from_secs(5)))
            })
            .collect();
        collect_into(&recorder);
        let seen: Vec<(String, f64, Option<metrics::Unit>)> = snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .map(|(key, unit, _, value)| {
                let v = match value {
                    DebugValue::Counter(c) => c as f64,
                    DebugValue::Gauge(g) => g.into_inner(),
                    DebugValue::Histogram(_) => f64::NAN,
                };
                (key.key().name().to_owned(), v, unit)
            })
            .collect();
        for t in &threads {
            t.thread().unpark();
        }
        for t in threads {
            t.join().expect("thread");
        }
        let get = |name: &str| {
            seen.iter()
                .find(|(n, _, _)| n == name)
                .map(|(_, v, _)| *v)
                .unwrap_or_else(|| panic!("{name} not recorded: {seen:?}"))
        };
        if cfg!(target_os = "linux") {
            for name in METRIC_NAMES {
                get(name);
            }
            assert!(get("process_resident_memory_bytes") >= (8 << 20) as f64, "{seen:?}");
            assert!(get("process_threads") >= 4.0, "{seen:?}"); // this one and the three above
            assert!(get("process_open_fds") >= 3.0, "{seen:?}"); // stdin, stdout, stderr at least
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock")
                .as_secs_f64();
            let started = get("process_start_time_seconds");
            assert!(started <= now + 1.0 && started > now - 86_400.0, "start {started}, now {now}");
            let unit = seen.iter().find(|(n, _, _)| n == "process_resident_memory_bytes");
            assert_eq!(unit.and_then(|(_, _, u)| *u), Some(metrics::Unit::Bytes));
        }
    }
}
