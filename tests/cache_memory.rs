//! Memory: the layer's route table and handle cache stop growing once the route cap is reached,
//! even when the application sets route names that are huge and all different.
//!
//! Heap bytes are counted by a global counting allocator (`stats_alloc`), so this binary holds a
//! single test: nothing else allocates while it measures. No recorder is installed (the `metrics`
//! no-op recorder), so every retained byte measured belongs to the layer, not to a recorder.

mod support;

use std::alloc::System;
use std::convert::Infallible;
use support::hostile;

use bytes::Bytes;
use http::Response;
use http_body_util::Full;
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use support::{block_on, drain};
use tower::{Layer, ServiceExt};
use tower_vitals::{RouteName, VitalsLayer, DEFAULT_ROUTE_CAP};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Heap bytes still allocated since `region` started.
fn retained(region: &Region<'_, System>) -> i64 {
    let c = region.change();
    // stats_alloc already counts a realloc's growth or shrink in these two.
    c.bytes_allocated as i64 - c.bytes_deallocated as i64
}

/// `n` hostile requests; every other one names a fresh route, one in 4 of those 64 KiB long.
fn hammer<S>(svc: &S, rng: &mut hostile::Rng, n: usize, next_name: &mut u64)
where
    S: tower::Service<
            http::Request<String>,
            Response = Response<tower_vitals::ResponseBody<Full<Bytes>>>,
            Error = Infallible,
        > + Clone,
{
    for _ in 0..n {
        let (mut req, _) = hostile::request(rng, String::new());
        if rng.chance(1, 2) {
            *next_name += 1;
            let name = if rng.chance(1, 4) {
                format!("/huge/{next_name}/{}", "x".repeat(64 * 1024))
            } else {
                format!("/r/{next_name}/{{id}}")
            };
            req.extensions_mut().insert(RouteName::new(name));
        }
        let res = block_on(svc.clone().oneshot(req)).expect("infallible");
        drain(&mut res.into_body());
    }
}

#[test]
fn handle_cache_memory_stops_growing_once_the_route_cap_is_reached() {
    let region = Region::new(GLOBAL);
    let layer = VitalsLayer::new();
    let svc = layer.layer(tower::service_fn(|_req: http::Request<String>| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
    }));
    let mut rng = hostile::Rng::new(0x05ee_d0fa_110c);
    let mut names = 0u64;

    // Phase A: fill the cap (each fresh name is admitted until DEFAULT_ROUTE_CAP).
    hammer(&svc, &mut rng, 20_000, &mut names);
    assert_eq!(layer.routes_seen(), DEFAULT_ROUTE_CAP);
    let after_fill = retained(&region);
    let sets_after_fill = layer.cached_label_sets();

    // Phase B: four times as many requests, all route names new (so all `overflow`).
    let names_before_b = names;
    hammer(&svc, &mut rng, 80_000, &mut names);
    let after_flood = retained(&region);
    let growth = after_flood - after_fill;

    println!(
        "cache memory: after {} names (cap {DEFAULT_ROUTE_CAP}) {after_fill} B retained, {} label \
         sets ({} B per admitted route); after {} more names and 80000 more requests: {after_flood} \
         B (growth {growth} B), {} label sets",
        names_before_b,
        sets_after_fill,
        after_fill / DEFAULT_ROUTE_CAP as i64,
        names - names_before_b,
        layer.cached_label_sets()
    );
    assert_eq!(layer.routes_seen(), DEFAULT_ROUTE_CAP);
    assert_eq!(layer.active_requests(), 0);
    // Flat: past the cap, new names cost nothing. The only growth allowed is a new label set for
    // an already admitted route (a method/status pair first seen in phase B), one entry each.
    let new_sets = (layer.cached_label_sets() - sets_after_fill) as i64;
    assert!(
        growth <= new_sets * 1024 + 4096,
        "memory grew by {growth} B past the cap ({new_sets} new label sets)"
    );
    // Bounded: each admitted route keeps a key and a tag value of at most MAX_ROUTE_LEN bytes
    // (the 64 KiB names are cut), plus map entries and its handle sets: 2 KiB per route is a wide
    // margin (about 350 B measured), and a quarter of the names kept whole would need 16 MiB.
    assert!(
        after_flood < (DEFAULT_ROUTE_CAP as i64 + 2) * 2 * 1024,
        "{after_flood} B retained by the layer"
    );
    drop(svc);
    drop(layer);
}
