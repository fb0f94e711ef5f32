//! Overhead of `VitalsLayer` against a bare service, against peers, and against a hand-written
//! floor of the same metric set, all in one run. Group names are `scenario/variant`.
//!
//! Scenarios: `plain_1x12B` / `plain_1000x128B` (a `service_fn` answering with 1 frame of 12
//! bytes / 1000 frames of 128 bytes, drained) and `axum_1x12B` / `axum_1000x128B` (the same
//! bodies from a handler inside an axum `Router`, route `/users/{id}`).
//!
//! Variants (each builds its layer after its recorder is set as the thread's local recorder):
//! - `bare`: no layer;
//! - `trace`: tower-http `TraceLayer::new_for_http()`, no subscriber;
//! - `axum_prometheus`: axum-prometheus's layer, with a Prometheus recorder;
//! - `vitals_noop`: `VitalsLayer` with `metrics::NoopRecorder` (the layer's own cost);
//! - `floor_noop`: the floor layer (benches/floor) with the no-op recorder;
//! - `vitals_prometheus` / `floor_prometheus`: with a metrics-exporter-prometheus 0.18 recorder
//!   (histogram buckets, upkeep every second on a thread, as `install` does in production);
//! - `vitals_prometheus_otel`: the same with OpenTelemetry's seconds buckets (the old default),
//!   to show the default buckets cost nothing on the request path;
//! - `vitals_recorder`: the layer recording into the crate's own recorder
//!   (`tower_vitals::prometheus`: classic and native buckets from one record), rendered as text
//!   and protobuf every second on a thread, as scrapes would; `floor_recorder`: the floor with it;
//! - `floor_prometheus_6h`: the floor plus a sixth histogram (what a histogram of body
//!   production time would cost);
//! - `vitals_dogstatsd` / `floor_dogstatsd`: with metrics-exporter-dogstatsd 0.9 sending to a
//!   UDP socket bound here on 127.0.0.1;
//! - `vitals_statsd`: with metrics-exporter-statsd 0.9 sending to a UDP socket bound here;
//! - `vitals_live`: with `tower_vitals::live`'s summary recorder alone (per-route hdrhistograms);
//! - `vitals_recorder_live`: the crate's recorder and the live recorder together (a
//!   metrics-util `Fanout`, as `live::install_with_prometheus` installs them: the README's
//!   setup): compare with `vitals_recorder` for what the live page adds per request;
//! - `vitals_prometheus_live`: the same with metrics-exporter-prometheus instead of the crate's
//!   recorder.
//! - (1-frame scenarios only) `vitals_traced_{noop,recorder,live}` /
//!   `vitals_exemplars_{noop,recorder,live}`: the request carries a valid `traceparent` header;
//!   the layer without / with `exemplars()`, with the no-op recorder / the crate's recorder
//!   (which keeps the exemplars) / the live recorder (which keeps the slowest traced requests):
//!   what exemplars cost, against the same request;
//!   `vitals_skipped`: a layer whose `skip_if` leaves every request
//!   out; `vitals_label1_{noop,prometheus}` / `vitals_label4_{noop,prometheus}`: one / four
//!   labels from `label_from_request` (each function returns a `'static` value, so what is
//!   measured is the layer's work: calling it, the capped value lookup, the wider key).
//!
//! `cargo bench --bench overhead` runs them all. With `OVERHEAD_ONLY=scenario/variant` (and
//! optionally `OVERHEAD_ITERS=N`, default 20000) the binary instead runs N requests of that one
//! variant without criterion and exits: that is the mode to run under
//! `valgrind --tool=callgrind` (scripts/bench.sh's profile step).

#[path = "common/mod.rs"]
mod common;
#[path = "floor/mod.rs"]
mod floor;

use std::convert::Infallible;
use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion};
use http::{Request, Response, Uri};
use http_body::Body;
use metrics::Recorder;
use tower::{Layer, Service};
use tower_vitals::VitalsLayer;

use common::{drive, Frames, Shape, SMALL, STREAM};
use floor::FloorLayer;

// ---------------------------------------------------------------- driving one request

type ReqBody = http_body_util::Empty<Bytes>;

/// The same request for every variant: `GET /users/42`, empty body (no allocation).
fn request() -> Request<ReqBody> {
    Request::get(Uri::from_static("/users/42")).body(http_body_util::Empty::new()).expect("request")
}

type PlainFuture = std::future::Ready<Result<Response<Frames>, Infallible>>;

fn plain(
    shape: Shape,
) -> tower::util::ServiceFn<impl FnMut(Request<ReqBody>) -> PlainFuture + Clone> {
    tower::service_fn(move |_req: Request<ReqBody>| {
        std::future::ready(Ok::<_, Infallible>(Response::new(Frames::new(shape))))
    })
}

/// The app as a server runs it: `axum::serve` finalises the router with `with_state(())`
/// (without it axum clones each boxed route layer per request).
fn app(router: Router) -> Router {
    router.with_state(())
}

fn router(shape: Shape) -> Router {
    Router::new()
        .route("/users/{id}", get(move || async move { axum::body::Body::new(Frames::new(shape)) }))
}

// ---------------------------------------------------------------- recorders

/// Which recorder a variant runs with.
#[derive(Clone, Copy)]
enum Rec {
    Noop,
    Prometheus,
    PrometheusOtel,
    Recorder,
    Statsd,
    DogStatsd,
    Live,
    RecorderLive,
    PrometheusLive,
}

/// A recorder, with what keeps it honest (upkeep thread, the UDP socket it sends to).
enum Installed {
    Noop(metrics::NoopRecorder),
    Prometheus { recorder: metrics_exporter_prometheus::PrometheusRecorder, _upkeep: Upkeep },
    Recorder { recorder: tower_vitals::prometheus::PrometheusRecorder, _scrapes: Upkeep },
    Statsd { recorder: metrics_exporter_statsd::StatsdRecorder, _sink: UdpSocket },
    DogStatsd { recorder: metrics_exporter_dogstatsd::DogStatsDRecorder, _sink: UdpSocket },
    Live(tower_vitals::live::LiveRecorder),
    RecorderLive { recorder: metrics_util::layers::Fanout, _scrapes: Upkeep },
    PrometheusLive { recorder: metrics_util::layers::Fanout, _upkeep: Upkeep },
}

/// Runs the Prometheus upkeep (draining histogram samples) every second, as in production.
struct Upkeep {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Upkeep {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Upkeep {
    /// Runs `work` every second on a thread (if `on`), until dropped.
    fn start(on: bool, work: impl Fn() + Send + 'static) -> Upkeep {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = on.then(|| {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                // Bounded: stops when the variant ends (Drop), checks every 50 ms.
                let mut ticks = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(50));
                    ticks += 1;
                    if ticks % 20 == 0 {
                        work();
                    }
                }
            })
        });
        Upkeep { stop, thread }
    }
}

fn sink() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").expect("bind a local UDP socket")
}

impl Rec {
    fn install(self, upkeep: bool) -> Installed {
        match self {
            Rec::Noop => Installed::Noop(metrics::NoopRecorder),
            Rec::Live => Installed::Live(tower_vitals::live::Live::new().recorder()),
            Rec::RecorderLive => {
                let Installed::Recorder { recorder, _scrapes } = Rec::Recorder.install(upkeep)
                else {
                    unreachable!("Rec::Recorder installs the crate's recorder")
                };
                let recorder = metrics_util::layers::FanoutBuilder::default()
                    .add_recorder(recorder)
                    .add_recorder(tower_vitals::live::Live::new().recorder())
                    .build();
                Installed::RecorderLive { recorder, _scrapes }
            }
            Rec::PrometheusLive => {
                let Installed::Prometheus { recorder, _upkeep } = Rec::Prometheus.install(upkeep)
                else {
                    unreachable!("Rec::Prometheus installs Prometheus")
                };
                let recorder = metrics_util::layers::FanoutBuilder::default()
                    .add_recorder(recorder)
                    .add_recorder(tower_vitals::live::Live::new().recorder())
                    .build();
                Installed::PrometheusLive { recorder, _upkeep }
            }
            Rec::Prometheus | Rec::PrometheusOtel => {
                let seconds = match self {
                    Rec::PrometheusOtel => tower_vitals::prometheus::OTEL_SECONDS_BUCKETS,
                    _ => common::SECONDS,
                };
                let recorder = common::prometheus_builder_with(seconds).build_recorder();
                let handle = recorder.handle();
                let upkeep = Upkeep::start(upkeep, move || handle.run_upkeep());
                Installed::Prometheus { recorder, _upkeep: upkeep }
            }
            Rec::Recorder => {
                let recorder = tower_vitals::prometheus::builder().build_recorder();
                let handle = recorder.handle();
                // Scrapes in both formats every second (it needs no upkeep).
                let scrapes = Upkeep::start(upkeep, move || {
                    let _ = handle.render();
                    let _ = handle.render_protobuf();
                });
                Installed::Recorder { recorder, _scrapes: scrapes }
            }
            Rec::Statsd => {
                let socket = sink();
                let port = socket.local_addr().expect("addr").port();
                let recorder = metrics_exporter_statsd::StatsdBuilder::from("127.0.0.1", port)
                    .build(None)
                    .expect("statsd recorder");
                Installed::Statsd { recorder, _sink: socket }
            }
            Rec::DogStatsd => {
                let socket = sink();
                let addr = socket.local_addr().expect("addr");
                let recorder = metrics_exporter_dogstatsd::DogStatsDBuilder::default()
                    .with_remote_address(format!("udp://{addr}"))
                    .expect("address")
                    .build()
                    .expect("dogstatsd recorder");
                Installed::DogStatsd { recorder, _sink: socket }
            }
        }
    }
}

impl Installed {
    fn recorder(&self) -> &dyn Recorder {
        match self {
            Installed::Noop(r) => r,
            Installed::Prometheus { recorder, .. } => recorder,
            Installed::Recorder { recorder, .. } => recorder,
            Installed::Statsd { recorder, .. } => recorder,
            Installed::DogStatsd { recorder, .. } => recorder,
            Installed::Live(recorder) => recorder,
            Installed::RecorderLive { recorder, .. } => recorder,
            Installed::PrometheusLive { recorder, .. } => recorder,
        }
    }
}

// ---------------------------------------------------------------- running variants

/// `request()` with a valid W3C `traceparent` header (the exemplar variants).
fn request_traced() -> Request<ReqBody> {
    let mut req = request();
    req.headers_mut().insert(
        "traceparent",
        http::HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
    );
    req
}

/// Criterion (one group per scenario), or the counting mode for callgrind.
enum Runner<'c> {
    Bench(BenchmarkGroup<'c, WallTime>),
    Count { scenario: String, only: String, iters: u64 },
}

impl Runner<'_> {
    /// Sets `rec` as this thread's recorder, builds the service (so handles resolve through
    /// it), warms it up (first label set resolved and cached), then measures.
    fn run<S, R, B>(
        &mut self,
        variant: &str,
        rec: Rec,
        make_req: fn() -> Request<R>,
        build: impl FnOnce() -> S,
    ) where
        S: Service<Request<R>, Response = Response<B>>,
        B: Body,
    {
        if let Runner::Count { scenario, only, .. } = self {
            if format!("{scenario}/{variant}") != *only {
                return;
            }
        }
        let installed = rec.install(matches!(self, Runner::Bench(_)));
        let _guard = metrics::set_default_local_recorder(installed.recorder());
        let mut svc = build();
        for _ in 0..200 {
            drive(&mut svc, make_req());
        }
        match self {
            Runner::Bench(group) => {
                group.bench_function(variant, |b| b.iter(|| drive(&mut svc, make_req())));
            }
            Runner::Count { iters, .. } => {
                for _ in 0..*iters {
                    drive(&mut svc, make_req());
                }
            }
        }
    }
}

fn plain_scenario(r: &mut Runner<'_>, shape: Shape) {
    let req = request as fn() -> Request<ReqBody>;
    r.run("bare", Rec::Noop, req, || plain(shape));
    r.run("trace", Rec::Noop, req, || {
        tower_http::trace::TraceLayer::new_for_http().layer(plain(shape))
    });
    r.run("axum_prometheus", Rec::Prometheus, req, || {
        axum_prometheus::PrometheusMetricLayer::new().layer(plain(shape))
    });
    r.run("vitals_noop", Rec::Noop, req, || VitalsLayer::new().layer(plain(shape)));
    r.run("floor_noop", Rec::Noop, req, || FloorLayer::new("unmatched").layer(plain(shape)));
    r.run("vitals_prometheus", Rec::Prometheus, req, || VitalsLayer::new().layer(plain(shape)));
    r.run("floor_prometheus", Rec::Prometheus, req, || {
        FloorLayer::new("unmatched").layer(plain(shape))
    });
    r.run("vitals_prometheus_otel", Rec::PrometheusOtel, req, || {
        VitalsLayer::new().layer(plain(shape))
    });
    r.run("vitals_recorder", Rec::Recorder, req, || VitalsLayer::new().layer(plain(shape)));
    r.run("floor_recorder", Rec::Recorder, req, || {
        FloorLayer::new("unmatched").layer(plain(shape))
    });
    r.run("floor_prometheus_6h", Rec::Prometheus, req, || {
        FloorLayer::with_sixth_histogram("unmatched").layer(plain(shape))
    });
    r.run("vitals_dogstatsd", Rec::DogStatsd, req, || VitalsLayer::new().layer(plain(shape)));
    r.run("floor_dogstatsd", Rec::DogStatsd, req, || {
        FloorLayer::new("unmatched").layer(plain(shape))
    });
    r.run("vitals_statsd", Rec::Statsd, req, || VitalsLayer::new().layer(plain(shape)));
    r.run("vitals_live", Rec::Live, req, || VitalsLayer::new().layer(plain(shape)));
    r.run("vitals_recorder_live", Rec::RecorderLive, req, || {
        VitalsLayer::new().layer(plain(shape))
    });
    r.run("vitals_prometheus_live", Rec::PrometheusLive, req, || {
        VitalsLayer::new().layer(plain(shape))
    });
    if shape.frames == 1 {
        let traced = request_traced as fn() -> Request<ReqBody>;
        r.run("vitals_traced_noop", Rec::Noop, traced, || VitalsLayer::new().layer(plain(shape)));
        r.run("vitals_exemplars_noop", Rec::Noop, traced, || {
            VitalsLayer::builder().exemplars().build().layer(plain(shape))
        });
        r.run("vitals_traced_recorder", Rec::Recorder, traced, || {
            VitalsLayer::new().layer(plain(shape))
        });
        r.run("vitals_exemplars_recorder", Rec::Recorder, traced, || {
            VitalsLayer::builder().exemplars().build().layer(plain(shape))
        });
        r.run("vitals_traced_live", Rec::Live, traced, || VitalsLayer::new().layer(plain(shape)));
        r.run("vitals_exemplars_live", Rec::Live, traced, || {
            VitalsLayer::builder().exemplars().build().layer(plain(shape))
        });
        r.run("vitals_skipped", Rec::Noop, req, || skipping().layer(plain(shape)));
        for (variant, rec, keys) in LABEL_VARIANTS {
            r.run(variant, rec, req, || labelled(keys).layer(plain(shape)));
        }
    }
}

/// The labelled variants: name, recorder, number of label keys.
const LABEL_VARIANTS: [(&str, Rec, usize); 4] = [
    ("vitals_label1_noop", Rec::Noop, 1),
    ("vitals_label4_noop", Rec::Noop, 4),
    ("vitals_label1_prometheus", Rec::Prometheus, 1),
    ("vitals_label4_prometheus", Rec::Prometheus, 4),
];

/// A layer that leaves every request out.
fn skipping() -> VitalsLayer {
    VitalsLayer::builder().skip_if(|_: &http::request::Parts| true).build()
}

/// A layer with `keys` labels from the request (each a `'static` value).
fn labelled(keys: usize) -> VitalsLayer {
    const KEYS: [(&str, &str); 4] =
        [("api.version", "2"), ("client", "web"), ("tier", "gold"), ("region", "eu")];
    let mut builder = VitalsLayer::builder();
    for (key, value) in KEYS.into_iter().take(keys) {
        builder = builder
            .label_from_request(key, move |_: &http::request::Parts| Some(value))
            .expect("valid label key");
    }
    builder.build()
}

fn axum_scenario(r: &mut Runner<'_>, shape: Shape) {
    let req = request as fn() -> Request<ReqBody>;
    const ROUTE: &str = "/users/{id}";
    r.run("bare", Rec::Noop, req, || app(router(shape)));
    r.run("trace", Rec::Noop, req, || {
        app(router(shape).layer(tower_http::trace::TraceLayer::new_for_http()))
    });
    r.run("axum_prometheus", Rec::Prometheus, req, || {
        app(router(shape).layer(axum_prometheus::PrometheusMetricLayer::new()))
    });
    r.run("vitals_noop", Rec::Noop, req, || app(router(shape).layer(VitalsLayer::new())));
    r.run("floor_noop", Rec::Noop, req, || app(router(shape).layer(FloorLayer::new(ROUTE))));
    r.run("vitals_prometheus", Rec::Prometheus, req, || {
        app(router(shape).layer(VitalsLayer::new()))
    });
    r.run("floor_prometheus", Rec::Prometheus, req, || {
        app(router(shape).layer(FloorLayer::new(ROUTE)))
    });
    r.run("vitals_prometheus_otel", Rec::PrometheusOtel, req, || {
        app(router(shape).layer(VitalsLayer::new()))
    });
    r.run("vitals_recorder", Rec::Recorder, req, || app(router(shape).layer(VitalsLayer::new())));
    r.run(
        "floor_recorder",
        Rec::Recorder,
        req,
        || app(router(shape).layer(FloorLayer::new(ROUTE))),
    );
    r.run("floor_prometheus_6h", Rec::Prometheus, req, || {
        app(router(shape).layer(FloorLayer::with_sixth_histogram(ROUTE)))
    });
    r.run("vitals_dogstatsd", Rec::DogStatsd, req, || app(router(shape).layer(VitalsLayer::new())));
    r.run("floor_dogstatsd", Rec::DogStatsd, req, || {
        app(router(shape).layer(FloorLayer::new(ROUTE)))
    });
    r.run("vitals_statsd", Rec::Statsd, req, || app(router(shape).layer(VitalsLayer::new())));
    r.run("vitals_live", Rec::Live, req, || app(router(shape).layer(VitalsLayer::new())));
    r.run("vitals_recorder_live", Rec::RecorderLive, req, || {
        app(router(shape).layer(VitalsLayer::new()))
    });
    r.run("vitals_prometheus_live", Rec::PrometheusLive, req, || {
        app(router(shape).layer(VitalsLayer::new()))
    });
    if shape.frames == 1 {
        let traced = request_traced as fn() -> Request<ReqBody>;
        r.run("vitals_traced_noop", Rec::Noop, traced, || {
            app(router(shape).layer(VitalsLayer::new()))
        });
        r.run("vitals_exemplars_noop", Rec::Noop, traced, || {
            app(router(shape).layer(VitalsLayer::builder().exemplars().build()))
        });
        r.run("vitals_traced_recorder", Rec::Recorder, traced, || {
            app(router(shape).layer(VitalsLayer::new()))
        });
        r.run("vitals_exemplars_recorder", Rec::Recorder, traced, || {
            app(router(shape).layer(VitalsLayer::builder().exemplars().build()))
        });
        r.run("vitals_skipped", Rec::Noop, req, || app(router(shape).layer(skipping())));
        for (variant, rec, keys) in LABEL_VARIANTS {
            r.run(variant, rec, req, || app(router(shape).layer(labelled(keys))));
        }
    }
}

type Scenario = (&'static str, fn(&mut Runner<'_>, Shape), Shape);

const SCENARIOS: [Scenario; 4] = [
    ("plain_1x12B", plain_scenario, SMALL),
    ("plain_1000x128B", plain_scenario, STREAM),
    ("axum_1x12B", axum_scenario, SMALL),
    ("axum_1000x128B", axum_scenario, STREAM),
];

fn main() {
    if let Ok(only) = std::env::var("OVERHEAD_ONLY") {
        let iters = std::env::var("OVERHEAD_ITERS").ok().and_then(|s| s.parse().ok());
        for (name, scenario, shape) in SCENARIOS {
            let mut r = Runner::Count {
                scenario: name.to_owned(),
                only: only.clone(),
                iters: iters.unwrap_or(20_000),
            };
            scenario(&mut r, shape);
        }
        return;
    }
    // Short by default: the machine is small and shared. Command-line flags
    // (--warm-up-time, --measurement-time, --sample-size) override these.
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30)
        .configure_from_args();
    for (name, scenario, shape) in SCENARIOS {
        let mut group = c.benchmark_group(name);
        if shape.frames > 1 {
            group.throughput(criterion::Throughput::Elements(shape.frames as u64));
        }
        let mut r = Runner::Bench(group);
        scenario(&mut r, shape);
        if let Runner::Bench(group) = r {
            group.finish();
        }
    }
    c.final_summary();
}
