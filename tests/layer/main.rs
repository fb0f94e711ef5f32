//! The layer's behaviour, one test binary: everything here records through a `metrics`
//! recorder set for its own thread (never the global one) and uses the system allocator, so
//! the modules share a process (one link instead of one per file). Tests that install a global
//! recorder or allocator have binaries of their own (`tests/*.rs`).
//!
//! - `behaviour`: one named test per body shape and end, on a mock clock
//! - `builder`: the builder, and the findings of the first users (skips, labels, caps)
//! - `exactly_once`: the exactly-once property against a model of the layer
//! - `label_properties`: sanitiser, method and `grpc-status` normalisation, route labels
//! - `cardinality`: hostile traffic keeps the series count bounded
//! - `skip_and_labels`, `exactly_once_skip_labels`: skip rules, user labels, protocol and scheme
//! - `panics`, `request_body`, `small_blocks`, `utilization`: one concern each
//! - `real_hyper`, `grpc`, `metrics_exposure`: over real hyper / tonic on 127.0.0.1

#[path = "../support/mod.rs"]
mod support;

mod behaviour;
mod builder;
mod cardinality;
mod exactly_once;
mod exactly_once_skip_labels;
mod grpc;
mod label_properties;
mod metrics_exposure;
mod panics;
mod real_hyper;
mod request_body;
mod skip_and_labels;
mod small_blocks;
mod utilization;
