//! The exporters on the wire, one test binary: each app runs on a thread of its own with its
//! own local recorder (`support::app::AppThread`), so no global recorder is installed and the
//! modules share a process. The Prometheus exporter's own tests install the global recorder
//! (`prometheus::install`) and have a binary of their own (`tests/prometheus.rs`).
//!
//! - `statsd`: against a real Etsy statsd daemon and on the wire
//! - `dogstatsd`: datagrams captured on a local UDP socket
//! - `utilization_exporters`: the `utilization` gauge through the real exporters

#[path = "../support/mod.rs"]
mod support;

mod dogstatsd;
mod labels_exporters;
mod statsd;
mod utilization_exporters;
