//! # tower-vitals
//!
//! One Tower [`Layer`](tower_layer::Layer), [`VitalsLayer`], that measures how every request of
//! an HTTP or gRPC service really behaves: how long the application took to produce the response
//! head, how long the body's frames were held downstream while the server wrote them out
//! (output time), how many blocks and bytes it sent, and how the request ended. The rest of the
//! total is body production (the body making its frames after the head). It records through the [`metrics`] facade, so any recorder works
//! (Prometheus, statsd, DogStatsD, or several at once).
//!
//! ```
//! use axum::{routing::get, Router};
//! use tower_vitals::VitalsLayer;
//!
//! let app: Router = Router::new()
//!     .route("/users/{id}", get(|| async { "hello" }))
//!     .layer(VitalsLayer::new()); // every route, tagged with its template
//! # let _ = app;
//! ```
//!
//! ## What is measured
//!
//! ```text
//! call(req) ──► ResponseFuture ──(head ready)──► ResponseBody ──frames──► … ──► end / error / drop
//!   t0            application phase          t1       output phase                      t_end
//! ```
//!
//! | metric (prefix `http.server`) | kind | unit | value |
//! |---|---|---|---|
//! | `requests` | counter | | 1 per finished request |
//! | `request.duration` | histogram | s | `t0` → finish |
//! | `application_time` | histogram | s | `t0` → response head (or the service's `Err`) |
//! | `output_time` | histogram | s | sum of the time each body frame was held downstream (a slow reader shows only once the body outgrows the socket's send buffer) |
//! | `output_blocks` | histogram | frames | data frames in the response body |
//! | `output_bytes` | histogram | bytes | bytes in the response body |
//! | `input_blocks`, `input_bytes`, `input_time` | histogram | | request body, opt-in ([`RequestBody`]) |
//! | `active_requests` | gauge | | requests in flight, by method |
//! | `utilization` | gauge | ratio | busy time / (capacity × window); average concurrency without a capacity |
//!
//! Tags: `http.route` (the route template: axum's `MatchedPath` or a [`RouteName`]; else
//! `unmatched`; past the cap, `overflow`), `http.request.method` (`_OTHER` for non-standard
//! methods), `http.response.status_code` (absent when no head was produced), `error.type` (only
//! on failure: the 5xx code, `service_error`, `body_error`, `aborted`, `cancelled` or `panic`),
//! `rpc.grpc.status_code` when the response carries `grpc-status`, and OpenTelemetry's
//! `network.protocol.version` (`1.1`, `2`, ...) and `url.scheme` (`http`, `https`), which
//! [`without_protocol_version`](VitalsLayerBuilder::without_protocol_version) and
//! [`without_url_scheme`](VitalsLayerBuilder::without_url_scheme) turn off.
//!
//! ## Leaving requests out, labels of your own
//!
//! ```
//! use tower_vitals::{Label, VitalsLayer};
//!
//! let layer = VitalsLayer::builder()
//!     .skip_routes(["/healthz", "/metrics"])               // never measured
//!     .skip_if(|req: &http::request::Parts| req.headers.contains_key("x-synthetic"))
//!     .label_from_request("api.version", |req: &http::request::Parts| {
//!         req.headers.get("x-api-version")?.to_str().ok()  // a borrowed value: no allocation
//!     })?
//!     .label("cache")?                                     // set by handlers:
//!     .build();
//! let mut res = http::Response::new(());
//! Label::new("cache", "hit").add_to(res.extensions_mut());
//! # let _ = layer;
//! # Ok::<(), tower_vitals::LabelError>(())
//! ```
//!
//! A skipped request ([`skip_if`](VitalsLayerBuilder::skip_if), [`skip_routes`](VitalsLayerBuilder::skip_routes))
//! passes through untouched: no metric, not in `active_requests` or `utilization`. Labels
//! ([`label`](VitalsLayerBuilder::label), [`label_from_request`](VitalsLayerBuilder::label_from_request),
//! [`Label`], [`Labels`]) go on every response metric; at most [`MAX_LABELS`] keys, each capped
//! at [`label_value_cap`](VitalsLayerBuilder::label_value_cap) distinct values (default
//! [`DEFAULT_LABEL_VALUE_CAP`]) then `overflow`; a missing or empty value is `none`
//! ([`labels::NO_VALUE`]). A key that breaks a rule is a [`LabelError`].
//!
//! ## gRPC, request bodies, utilisation, small blocks
//!
//! - **gRPC** (tonic: `Server::builder().layer(VitalsLayer::builder().grpc_routes().build())`):
//!   [`grpc_routes`](VitalsLayerBuilder::grpc_routes) makes the method path (`/pkg.Service/Method`)
//!   the route of gRPC requests, under the route cap. `grpc-status` is read from the trailers
//!   frame, or from the headers of a trailers-only response, into `rpc.grpc.status_code`; a call
//!   that fails with a server-side code (`UNKNOWN`, `DEADLINE_EXCEEDED`, `UNIMPLEMENTED`,
//!   `INTERNAL`, `UNAVAILABLE`, `DATA_LOSS`: OpenTelemetry's list for servers) gets
//!   `error.type` = the code's name, though its HTTP status is 200. Streaming calls count the
//!   frames and bytes their body yields (tonic packs ready messages into shared frames).
//! - **Request bodies** (opt-in, [`measure_request_body`](VitalsLayerBuilder::measure_request_body)):
//!   see [`RequestBody`]; tagged `http.request.body.state` = `complete`, `partial`, `unread`
//!   or `error`.
//! - **Utilisation**: the layer integrates busy time (requests in flight × time) without a lock
//!   and publishes the `utilization` gauge once per window, at the first request start or
//!   finish, or gauge publication (below), after the window. The gauge is set to 0 when the
//!   layer first wraps a service (and again at the first request, through the recorder current
//!   then), so it is there from the first scrape. See [`capacity`](VitalsLayerBuilder::capacity) and
//!   [`utilization_window`](VitalsLayerBuilder::utilization_window).
//! - **When the gauges are published**: requests count themselves in flight on per-thread
//!   counters and set no gauge; `active_requests` and `utilization` are published by
//!   [`publish_gauges`], which the crate's own `/metrics` render and live page call before they
//!   read (exact at every scrape), and by a background thread once a second (for statsd and
//!   DogStatsD, which are not scraped). A quiet service reads its true count in flight and a
//!   `utilization` of 0 after a burst.
//! - **Exemplars** (opt-in, [`exemplars`](VitalsLayerBuilder::exemplars)): each request's trace id
//!   (from its W3C `traceparent` header, or [`exemplars_from`](VitalsLayerBuilder::exemplars_from) a
//!   function of the request head) goes with its `requests`, `request.duration` and
//!   `application_time` recordings; the crate's Prometheus recorder keeps the latest one per
//!   bucket and serves it in OpenMetrics (and protobuf) to Prometheus, which links a slow
//!   bucket to the trace of a request that was that slow. Other recorders ignore it.
//! - **Live page** (feature `live`, on by default): [`live`] keeps what the layer records in
//!   process (per-route hdrhistograms over a recent window and since start) and serves
//!   `/vitals`, a self-contained page, and `/vitals.json`: see it without Prometheus or Grafana.
//! - **Small blocks**: a route whose multi-block responses average fewer than 512 bytes per
//!   block over 4096 blocks gets one `tracing` warning (at most one per route per hour), naming
//!   the route and the figures. See [`SmallBlockWarning`].
//!
//! ## When metrics are recorded
//!
//! Everything is recorded **once per request**, at the first of these:
//!
//! | event | outcome (`error.type`) |
//! |---|---|
//! | the body returns `Ready(None)` | complete (the 5xx code, if the status is 5xx) |
//! | a data frame after which the inner body says `is_end_stream()` (exact `Content-Length`: hyper stops polling) | complete |
//! | the body is dropped with nothing left to send (empty body, HEAD, 1xx, 204, 304) | complete |
//! | the body yields an error frame | `body_error` |
//! | the body is dropped before its end (client disconnected) | `aborted` |
//! | the inner service returns `Err` | `service_error` |
//! | the response future is dropped before the head (timeout, disconnect) | `cancelled` |
//! | the inner future or body panics while polled | `panic` |
//!
//! The count behind `active_requests` goes up at `call` and down at that same moment, so it
//! cannot leak.
//! A body frame still held downstream when the request ends counts as output time too.
//!
//! ## Cost
//!
//! Per request: three clock reads (`quanta`, TSC where available: at `call`, at the head, at
//! the end), one lock-free route lookup, one lock-free lookup of the cached metric handles and
//! one recording of each metric (with labels of your own: one lock-free value lookup per key). Per body frame: two clock reads (when it is handed out and at
//! the next poll) and integer adds. The layer makes no heap allocation of its own on the steady
//! path and takes no lock there: handles are resolved and cached (under a lock) only the first
//! time a label set is seen, and once per `utilization` window one request thread takes a
//! `try_lock` (it never waits) to publish the gauge. Errors, frames, `size_hint` and
//! `is_end_stream` pass through unchanged.
#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

// Modules (rustfmt keeps them sorted by name). Their dependency order, bottom-up, is the
// `ORDER` list of the `layering` unit test below and the table of ARCHITECTURE.md: each module
// imports only modules before it there.
mod body;
mod clock;
#[cfg(feature = "dogstatsd")]
pub mod dogstatsd;
mod exemplar;
mod future;
mod gauges;
mod grpc;
mod handles;
mod hash;
mod in_flight;
#[cfg(any(feature = "prometheus", feature = "live"))]
mod install;
mod interner;
pub mod labels;
mod layer;
#[cfg(feature = "prometheus")]
mod listener;
#[cfg(feature = "live")]
pub mod live;
mod names;
mod packed_key;
#[cfg(feature = "process")]
pub mod process;
#[cfg(feature = "prometheus")]
pub mod prometheus;
mod record;
mod request_body;
mod route_name;
mod routes;
mod service;
mod shared;
mod small_blocks;
#[cfg(feature = "statsd")]
pub mod statsd;
mod user_labels;
mod utilization;
mod write_once;

pub use body::ResponseBody;
pub use clock::{Clock, MockClock};
pub use exemplar::TraceId;
pub use future::ResponseFuture;
pub use gauges::publish_gauges;
pub use layer::{VitalsLayer, VitalsLayerBuilder};
#[cfg(feature = "prometheus")]
pub use listener::ListenerConfig;
pub use names::{MetricNames, DEFAULT_PREFIX};
pub use request_body::{IgnoreRequestBody, MeasureRequestBody, RequestBody, RequestBodyMode};
pub use route_name::RouteName;
pub use service::Vitals;
pub use shared::DEFAULT_ROUTE_CAP;
pub use small_blocks::SmallBlockWarning;
pub use user_labels::{
    label_fn, Label, LabelError, Labels, DEFAULT_LABEL_VALUE_CAP, MAX_LABELS, MAX_LABEL_VALUE_CAP,
};

/// The module order above is the dependency order: a module may import only modules listed
/// before it. This test reads the sources and fails on any `crate::` path that points down.
#[cfg(test)]
mod layering {
    const ORDER: &[&str] = &[
        "clock",
        "grpc",
        "labels",
        "names",
        "hash",
        "write_once",
        "interner",
        "route_name",
        "routes",
        "user_labels",
        "packed_key",
        "handles",
        "in_flight",
        "utilization",
        "gauges",
        "small_blocks",
        "exemplar",
        "shared",
        "record",
        "request_body",
        "body",
        "future",
        "service",
        "layer",
        "process",
        "install",
        "listener",
        "prometheus",
        "statsd",
        "dogstatsd",
        "live",
    ];

    fn sources(module: &str) -> Vec<(String, String)> {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = vec![];
        let file = src.join(format!("{module}.rs"));
        if let Ok(text) = std::fs::read_to_string(&file) {
            files.push((file.display().to_string(), text));
        }
        if let Ok(dir) = std::fs::read_dir(src.join(module)) {
            for entry in dir.flatten() {
                let path = entry.path();
                if let Ok(text) = std::fs::read_to_string(&path) {
                    files.push((path.display().to_string(), text));
                }
            }
        }
        files
    }

    /// The module each root re-export comes from, read from this file's `pub use` items
    /// (`crate::VitalsLayer` is `layer`'s): (item, module).
    fn root_reexports() -> Vec<(String, String)> {
        let lib = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs");
        let text = std::fs::read_to_string(lib).expect("src/lib.rs");
        let mut items = vec![];
        let mut statement = String::new();
        for line in text.lines() {
            let line = line.split("//").next().unwrap_or_default().trim();
            if statement.is_empty() && !line.starts_with("pub use ") {
                continue;
            }
            statement.push_str(line);
            statement.push(' ');
            if !line.ends_with(';') {
                continue;
            }
            let path = statement.trim().trim_start_matches("pub use ").trim_end_matches(';');
            if let Some((module, names)) = path.split_once("::") {
                let names = names.trim().trim_start_matches('{').trim_end_matches('}');
                for name in names.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                    let name = name.rsplit(" as ").next().unwrap_or(name);
                    let name = name.rsplit("::").next().unwrap_or(name);
                    items.push((name.to_owned(), module.trim().to_owned()));
                }
            }
            statement.clear();
        }
        items
    }

    /// The `crate::` paths of `text` (a source of `module`) that point at a module above it in
    /// [`ORDER`], directly or through a root re-export: one message each.
    fn downward_imports(
        module: &str,
        path: &str,
        text: &str,
        root: &[(String, String)],
    ) -> Vec<String> {
        let rank = ORDER.iter().position(|m| *m == module).expect("module in ORDER");
        let mut found = vec![];
        for (line_no, line) in text.lines().enumerate() {
            // Comments, docs and `crate::X` links in docs do not create dependencies.
            let code = line.split("//").next().unwrap_or_default();
            for (at, _) in code.match_indices("crate::") {
                let rest = &code[at + "crate::".len()..];
                let name: String =
                    rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                // A module, or an item the crate root re-exports from one (`crate::VitalsLayer`).
                let (target, via) = match ORDER.iter().position(|m| *m == name) {
                    Some(target) => (target, name.clone()),
                    None => match root.iter().find(|(item, _)| *item == name) {
                        Some((_, from)) => match ORDER.iter().position(|m| m == from) {
                            Some(target) => (target, format!("{from} (as crate::{name})")),
                            None => continue,
                        },
                        None => continue, // `{`, a macro, or a module outside the order
                    },
                };
                if target > rank {
                    found.push(format!(
                        "{path}:{}: `{module}` imports `{via}`, which is above it",
                        line_no + 1
                    ));
                }
            }
        }
        found
    }

    #[test]
    fn every_module_imports_only_modules_below_it() {
        let root = root_reexports();
        let mut checked = 0;
        let mut found = vec![];
        for module in ORDER {
            let files = sources(module);
            assert!(!files.is_empty(), "no source for module {module}");
            for (path, text) in files {
                checked += 1;
                found.extend(downward_imports(module, &path, &text, &root));
            }
        }
        assert!(found.is_empty(), "{}", found.join("\n"));
        assert!(checked >= ORDER.len());
    }

    #[test]
    fn root_reexports_count_as_imports_of_their_module() {
        let root = root_reexports();
        let from = |item: &str| root.iter().find(|(i, _)| i == item).map(|(_, m)| m.as_str());
        assert_eq!(from("VitalsLayer"), Some("layer"));
        assert_eq!(from("RouteName"), Some("route_name"));
        assert_eq!(from("MAX_LABELS"), Some("user_labels"));
        // `service` is below `layer`: naming the layer through the root is caught.
        let found = downward_imports("service", "service.rs", "use crate::VitalsLayer;", &root);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("layer (as crate::VitalsLayer)"), "{found:?}");
        let fine = downward_imports("service", "service.rs", "use crate::RouteName;", &root);
        assert!(fine.is_empty(), "{fine:?}");
    }

    #[test]
    fn every_module_of_src_has_a_place_in_the_order() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut modules: Vec<String> = std::fs::read_dir(&src)
            .expect("src/")
            .flatten()
            .filter_map(|entry| {
                let name = entry.file_name().into_string().ok()?;
                let module = name.strip_suffix(".rs").unwrap_or(&name).to_owned();
                let is_module = name.ends_with(".rs") || entry.path().is_dir();
                (is_module && module != "lib").then_some(module)
            })
            .collect();
        modules.sort();
        modules.dedup();
        for module in &modules {
            assert!(ORDER.contains(&module.as_str()), "src/{module}: not in the layering ORDER");
        }
        assert_eq!(modules.len(), ORDER.len(), "{modules:?}");
    }
}

// Every Rust code block of README.md, compiled (and run unless marked `no_run`) as a doctest by
// `cargo test --doc --all-features`: the README's examples use every exporter.
#[cfg(all(
    doctest,
    feature = "axum",
    feature = "prometheus",
    feature = "statsd",
    feature = "dogstatsd"
))]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
