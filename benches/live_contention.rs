//! Contention in the live recorder: requests through `VitalsLayer` into `tower_vitals::live`
//! (installed as the global recorder), from 1 thread, from 2 threads on the same route, and
//! from 2 threads on different routes. Each thread records into its own stripe of a route, so
//! the same-route case should cost what the different-routes case does.
//!
//! `cargo bench --bench live_contention` prints, per case, the wall time per request on each
//! thread, the CPU time per request (each thread's own, from Linux's
//! `/proc/thread-self/schedstat`: what a request costs whatever else runs on the machine), and
//! the lock acquisitions that had to wait (`lock_waits`, counted by the recorder
//! itself), as a share of all acquisitions (6 per request: one per recording). Bounded:
//! 200,000 requests per thread (`LIVE_CONTENTION_ITERS` to change).

use std::convert::Infallible;
use std::future::Future;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use http_body_util::Full;
use tower::{Layer, Service};
use tower_vitals::live::Live;
use tower_vitals::{RouteName, VitalsLayer};

fn drive<S, B>(svc: &mut S, route: &'static str)
where
    S: Service<Request<()>, Response = Response<B>>,
    B: Body,
{
    let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());
    let mut req = Request::new(());
    req.extensions_mut().insert(RouteName::new(route));
    let mut fut = std::pin::pin!(svc.call(req));
    let Poll::Ready(Ok(res)) = fut.as_mut().poll(&mut cx) else { panic!("ready at once") };
    let mut body = std::pin::pin!(res.into_body());
    while let Poll::Ready(Some(frame)) = body.as_mut().poll_frame(&mut cx) {
        std::hint::black_box(frame.is_ok());
    }
}

/// Nanoseconds the calling thread has run on a CPU (Linux), if known.
fn thread_cpu_ns() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// Wall ns per request per thread, mean CPU ns per request per thread, lock waits.
fn case(
    live: &Live,
    layer: &VitalsLayer,
    routes: &[&'static str],
    iters: u64,
) -> (f64, Option<f64>, u64) {
    let waits_before = live.snapshot().lock_waits;
    let start = Instant::now();
    let cpu: Vec<Option<u64>> = std::thread::scope(|s| {
        let threads: Vec<_> = routes
            .iter()
            .map(|&route| {
                let layer = layer.clone();
                s.spawn(move || {
                    let cpu_start = thread_cpu_ns();
                    let mut svc = layer.layer(tower::service_fn(|_req: Request<()>| {
                        std::future::ready(Ok::<_, Infallible>(Response::new(Full::new(
                            Bytes::from_static(b"hello world!"),
                        ))))
                    }));
                    for _ in 0..iters {
                        drive(&mut svc, route);
                    }
                    Some(thread_cpu_ns()? - cpu_start?)
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().expect("bench thread")).collect()
    });
    let ns = start.elapsed().as_nanos() as f64 / iters as f64;
    let cpu: Option<u64> = cpu.into_iter().sum();
    let cpu = cpu.map(|c| c as f64 / (iters * routes.len() as u64) as f64);
    (ns, cpu, live.snapshot().lock_waits - waits_before)
}

fn main() {
    let iters: u64 =
        std::env::var("LIVE_CONTENTION_ITERS").ok().and_then(|s| s.parse().ok()).unwrap_or(200_000);
    let live = Live::new();
    if live.install().is_err() {
        eprintln!("a global recorder was already installed");
        std::process::exit(1);
    }
    let layer = VitalsLayer::new();
    // Warm up: resolve and cache every label set.
    case(&live, &layer, &["/a", "/b"], 1_000);
    println!("live recorder ({iters} requests per thread; 6 lock acquisitions per request)");
    for (name, routes) in [
        ("1 thread", &["/a"][..]),
        ("2 threads, same route", &["/a", "/a"][..]),
        ("2 threads, different routes", &["/a", "/b"][..]),
    ] {
        let (ns, cpu, waits) = case(&live, &layer, routes, iters);
        let share = waits as f64 / (6 * iters * routes.len() as u64) as f64;
        let cpu = cpu.map_or("n/a".to_owned(), |c| format!("{c:.0}"));
        println!(
            "{name:<28} {ns:>6.0} ns/request per thread (wall)  {cpu:>6} ns CPU/request   \
             lock_waits {waits:>7} ({:.2} % of acquisitions)",
            share * 100.0
        );
    }
}
