//! Contention on one layer: ns per request with 1 thread and with 2 threads driving clones of
//! the SAME `VitalsLayer` service at once (threads not pinned), next to the floor and to the bare
//! service, with the no-op recorder (the layer's own shared state: in-flight counts, busy time,
//! the `Arc` count, route and handle tables) and with one Prometheus recorder shared by both
//! threads (its histogram and counter atomics too): metrics-exporter-prometheus
//! (`*_prometheus`) and the crate's own recorder (`*_recorder`); and with the README's recommended
//! pair, the crate's recorder and the live summary in one `Fanout` as
//! `live::install_with_prometheus` installs them (`vitals_recorder_live`). Rounds interleave every
//! variant; each prints the median over rounds of ns/request and the ratio 2 threads / 1 thread.
//!
//! ```text
//! cargo bench --bench threads                  # ROUNDS=7 REQUESTS=200000 (per thread)
//! ```
//! On a 2-core machine that other work also loads, a second thread may not get a core of its
//! own for the whole run: the bare service's own ratio is printed as the machine's reference.

#[path = "common/mod.rs"]
mod common;
#[path = "floor/mod.rs"]
mod floor;

use std::convert::Infallible;
use std::sync::Barrier;
use std::time::Instant;

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body::Body;
use tower::{Layer, Service};
use tower_vitals::VitalsLayer;

use common::{Frames, SMALL};

type ReqBody = http_body_util::Empty<Bytes>;

/// One request as hyper runs it (see `common::drive`), to `/users/42`.
fn drive_one<S, B>(svc: &mut S)
where
    S: Service<Request<ReqBody>, Response = Response<B>>,
    B: Body,
{
    let req = Request::get(Uri::from_static("/users/42"))
        .body(http_body_util::Empty::new())
        .expect("request");
    common::drive(svc, req);
}

type Plain = tower::util::ServiceFn<
    fn(Request<ReqBody>) -> std::future::Ready<Result<Response<Frames>, Infallible>>,
>;

fn plain() -> Plain {
    fn answer(_: Request<ReqBody>) -> std::future::Ready<Result<Response<Frames>, Infallible>> {
        std::future::ready(Ok(Response::new(Frames::new(SMALL))))
    }
    tower::service_fn(answer as fn(_) -> _)
}

/// CPU time of this thread in ns (`/proc/thread-self/schedstat`: time on a CPU), so that a
/// thread that waits for a core (the machine is shared) is not charged for the wait.
fn thread_cpu_ns() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// One run: ns of CPU per request (mean over threads), and how much of the time both threads
/// were on a CPU at once (sum of CPU times / (threads × wall time); 1.0 = fully concurrent).
struct Run {
    ns: f64,
    overlap: f64,
}

/// `threads` threads each send `n` requests through clones of `svc` at once.
fn run<S, B>(svc: &S, threads: usize, n: usize, recorder: &(dyn metrics::Recorder + Sync)) -> Run
where
    S: Service<Request<ReqBody>, Response = Response<B>> + Clone + Send,
    B: Body,
{
    let barrier = Barrier::new(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let (mut svc, barrier) = (svc.clone(), &barrier);
                scope.spawn(move || {
                    metrics::with_local_recorder(recorder, || {
                        for _ in 0..1_000 {
                            drive_one(&mut svc); // warm-up
                        }
                        barrier.wait();
                        let (t, cpu) = (Instant::now(), thread_cpu_ns());
                        for _ in 0..n {
                            drive_one(&mut svc);
                        }
                        let wall = t.elapsed().as_nanos() as f64;
                        let cpu = match (cpu, thread_cpu_ns()) {
                            (Some(a), Some(b)) => (b - a) as f64,
                            _ => wall,
                        };
                        (cpu, wall)
                    })
                })
            })
            .collect();
        let per: Vec<(f64, f64)> = handles.into_iter().map(|h| h.join().expect("thread")).collect();
        let cpu: f64 = per.iter().map(|p| p.0).sum();
        let wall = per.iter().map(|p| p.1).fold(0.0, f64::max);
        Run { ns: cpu / (threads * n) as f64, overlap: cpu / (threads as f64 * wall) }
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs it briefly.
    let quick = !std::env::args().any(|a| a == "--bench");
    let rounds = if quick { 1 } else { env("ROUNDS", 7) };
    let n = if quick { 2_000 } else { env("REQUESTS", 200_000) };
    let noop = metrics::NoopRecorder;
    let prometheus = common::prometheus_builder().build_recorder();
    // Layers are built with their recorder current (handles resolve through it).
    let vitals_noop = metrics::with_local_recorder(&noop, || VitalsLayer::new().layer(plain()));
    let floor_noop =
        metrics::with_local_recorder(&noop, || floor::FloorLayer::new("/users/42").layer(plain()));
    let vitals_prom =
        metrics::with_local_recorder(&prometheus, || VitalsLayer::new().layer(plain()));
    let floor_prom = metrics::with_local_recorder(&prometheus, || {
        floor::FloorLayer::new("/users/42").layer(plain())
    });
    // The crate's own recorder (tower_vitals::prometheus), one shared by both threads.
    let recorder = tower_vitals::prometheus::builder().build_recorder();
    let vitals_rec = metrics::with_local_recorder(&recorder, || VitalsLayer::new().layer(plain()));
    let floor_rec = metrics::with_local_recorder(&recorder, || {
        floor::FloorLayer::new("/users/42").layer(plain())
    });
    // The README's recommended recorders: the crate's recorder and a `Live` summary, fanned out
    // as `live::install_with_prometheus` installs them (built by hand: that one sets the global).
    let live = tower_vitals::live::Live::new();
    let recorder_live = metrics_util::layers::FanoutBuilder::default()
        .add_recorder(tower_vitals::prometheus::builder().build_recorder())
        .add_recorder(live.recorder())
        .build();
    let vitals_rec_live =
        metrics::with_local_recorder(&recorder_live, || VitalsLayer::new().layer(plain()));
    let names = [
        "bare",
        "vitals_noop",
        "floor_noop",
        "vitals_prometheus",
        "floor_prometheus",
        "vitals_recorder",
        "floor_recorder",
        "vitals_recorder_live",
    ];
    let mut results = vec![[Vec::new(), Vec::new()]; names.len()];
    let mut overlap = Vec::new();
    for _ in 0..rounds {
        for (threads_i, threads) in [1usize, 2].into_iter().enumerate() {
            let runs = [
                run(&plain(), threads, n, &noop),
                run(&vitals_noop, threads, n, &noop),
                run(&floor_noop, threads, n, &noop),
                run(&vitals_prom, threads, n, &prometheus),
                run(&floor_prom, threads, n, &prometheus),
                run(&vitals_rec, threads, n, &recorder),
                run(&floor_rec, threads, n, &recorder),
                run(&vitals_rec_live, threads, n, &recorder_live),
            ];
            for (i, r) in runs.iter().enumerate() {
                results[i][threads_i].push(r.ns);
                if threads == 2 {
                    overlap.push(r.overlap);
                }
            }
        }
    }
    println!(
        "threads: {rounds} rounds x {n} requests per thread, plain service, 1 frame of 12 B; \
         medians of CPU ns/request (thread CPU time, not wall time); ratio = 2 threads / 1 \
         thread, per round, median. Two threads were on a CPU at once {:.0}% of the time \
         (median; 100% = a core each throughout).",
        median(overlap) * 100.0
    );
    println!(
        "| variant | 1 thread | 2 threads | ratio 2/1 | over bare: 1 thread | 2 threads | ratio |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (i, name) in names.iter().enumerate() {
        let [one, two] = &results[i];
        let ratio = median(one.iter().zip(two).map(|(a, b)| b / a).collect());
        let over = |t: usize| -> Vec<f64> {
            results[i][t].iter().zip(&results[0][t]).map(|(v, b)| v - b).collect()
        };
        let (o1, o2) = (over(0), over(1));
        let over_ratio = median(o1.iter().zip(&o2).map(|(a, b)| b / a).collect());
        if i == 0 {
            println!(
                "| {name} | {:.0} | {:.0} | {ratio:.2} | - | - | - |",
                median(one.clone()),
                median(two.clone())
            );
        } else {
            println!(
                "| {name} | {:.0} | {:.0} | {ratio:.2} | {:+.0} | {:+.0} | {over_ratio:.2} |",
                median(one.clone()),
                median(two.clone()),
                median(o1),
                median(o2)
            );
        }
    }
}
