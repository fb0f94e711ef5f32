//! Cardinality: whatever clients send (random paths, queries, Host values, headers, extension
//! methods up to 4 KiB long) and however many route names the application sets, the layer emits
//! at most `cap + 2` `http.route` values, a bounded number of series, and no label taken from the
//! request. In-process (no network), through the layer and through an axum `Router`, on
//! metrics-util's `DebuggingRecorder` (one per test, thread-local).

use crate::support::hostile;
use std::collections::{BTreeSet, HashSet};
use std::convert::Infallible;

use crate::support::*;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use metrics_util::debugging::DebuggingRecorder;
use tower::{Layer, ServiceExt};
use tower_vitals::labels::{
    ERROR_TYPE, METHOD, OTHER_METHOD, OVERFLOW, PROTOCOL_VERSION, ROUTE, STATUS, UNMATCHED,
    URL_SCHEME,
};
use tower_vitals::{RouteName, VitalsLayer, DEFAULT_ROUTE_CAP};

const SEED: u64 = 0x7e57_6a11;
const STANDARD_METHODS: [&str; 10] =
    ["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", OTHER_METHOD];
const STATUSES: [u16; 3] = [200, 404, 500];
/// Metrics recorded per finished request (requests + 5 histograms).
const RESPONSE_METRICS: usize = 6;

/// A service whose status depends on the path (so several statuses mix with every route).
fn status_for(path: &str) -> u16 {
    STATUSES[path.len() % STATUSES.len()]
}

fn answer(req: Request<String>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut res = Response::new(Full::new(Bytes::from_static(b"ok")));
    *res.status_mut() = StatusCode::from_u16(status_for(req.uri().path())).expect("status");
    Ok(res)
}

/// Every label key/value pair of a snapshot, checked against what the layer may emit.
fn assert_labels_are_ours(seen: &[Seen], carried: &HashSet<String>, routes: &BTreeSet<String>) {
    for s in seen {
        for (k, v) in &s.labels {
            assert!(
                [ROUTE, METHOD, STATUS, ERROR_TYPE, PROTOCOL_VERSION, URL_SCHEME]
                    .contains(&k.as_str()),
                "unexpected label key {k:?} on {}",
                s.name
            );
            assert!(!carried.contains(v), "a request-controlled string became a label: {k}={v:?}");
            assert!(!v.contains(".example"), "a Host value leaked into {k}={v:?}");
            match k.as_str() {
                METHOD => assert!(STANDARD_METHODS.contains(&v.as_str()), "method label {v:?}"),
                STATUS => assert!(STATUSES.iter().any(|c| c.to_string() == *v), "status {v:?}"),
                ERROR_TYPE => assert_eq!(v, "500"),
                ROUTE => assert!(routes.contains(v), "route label {v:?} was never a route name"),
                PROTOCOL_VERSION => assert_eq!(v, "1.1"),
                URL_SCHEME => assert_eq!(v, "http"),
                _ => {}
            }
        }
    }
}

fn route_values(seen: &[Seen]) -> BTreeSet<String> {
    seen.iter().filter_map(|s| s.label(ROUTE)).map(str::to_owned).collect()
}

#[test]
fn hundred_thousand_hostile_requests_yield_at_most_cap_plus_two_routes() {
    const N: usize = 100_000;
    let recorder = DebuggingRecorder::new();
    let snap = recorder.snapshotter();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let layer = VitalsLayer::new(); // the default cap, as users get it
    let svc = layer.layer(tower::service_fn(|req| async move { answer(req) }));

    let mut rng = hostile::Rng::new(SEED);
    let legit: Vec<String> = (0..8).map(|i| format!("/api/v1/thing{i}/{{id}}")).collect();
    // Names the application could set: the legit ones, then a fresh one per request.
    let mut allowed_routes: BTreeSet<String> =
        legit.iter().cloned().chain([UNMATCHED.to_owned(), OVERFLOW.to_owned()]).collect();
    let mut carried = HashSet::new();
    let mut fresh = 0u64;
    for i in 0..N {
        let (mut req, strings) = hostile::request(&mut rng, String::new());
        carried.extend(strings);
        match (i < legit.len(), rng.below(3)) {
            (true, _) => {
                req.extensions_mut().insert(RouteName::new(legit[i].clone()));
            }
            (false, 0) => {}
            (false, 1) => {
                let name = legit[rng.below(legit.len() as u64) as usize].clone();
                req.extensions_mut().insert(RouteName::new(name));
            }
            (false, _) => {
                fresh += 1;
                let name = format!("/r/{fresh}/{{id}}");
                allowed_routes.insert(name.clone());
                req.extensions_mut().insert(RouteName::new(name));
            }
        }
        let res = block_on(svc.clone().oneshot(req)).expect("infallible");
        drain(&mut res.into_body());
    }

    let seen = snapshot(&snap);
    assert_eq!(counter_total(&seen, &NAMES.requests), N as u64, "every request counted once");
    assert_eq!(layer.active_requests(), 0);
    assert!(fresh as usize > DEFAULT_ROUTE_CAP * 10, "the test must go far past the cap");

    let routes = route_values(&seen);
    assert!(routes.len() <= DEFAULT_ROUTE_CAP + 2, "{} route values", routes.len());
    assert!(routes.contains(UNMATCHED) && routes.contains(OVERFLOW));
    assert!(legit.iter().all(|r| routes.contains(r)), "names set before the cap keep their value");
    assert_eq!(layer.routes_seen(), DEFAULT_ROUTE_CAP);
    assert_labels_are_ours(&seen, &carried, &allowed_routes);

    // Series: each response label set is (route, method, status [, error.type = status]; the
    // protocol and scheme, one value each here); plus one active_requests gauge per method, and
    // the utilization gauge (published at 0 when the layer wraps its service).
    let label_sets: HashSet<Vec<(String, String)>> =
        named(&seen, &NAMES.requests).iter().map(|s| s.labels.clone()).collect();
    let max_sets = (DEFAULT_ROUTE_CAP + 2) * STANDARD_METHODS.len() * STATUSES.len();
    assert!(label_sets.len() <= max_sets);
    let series = seen.len();
    assert_eq!(named(&seen, &NAMES.utilization).len(), 1, "one layer-wide utilization series");
    assert!(series <= label_sets.len() * RESPONSE_METRICS + STANDARD_METHODS.len() + 1);
    assert_eq!(layer.cached_label_sets(), label_sets.len(), "one cached handle set per label set");
    println!(
        "cardinality: {N} requests, {fresh} distinct route names set, {} carried request strings; \
         {} route values (cap {DEFAULT_ROUTE_CAP} + 2), {} label sets, {series} series, {} cached",
        carried.len(),
        routes.len(),
        label_sets.len(),
        layer.cached_label_sets()
    );
}

#[test]
fn route_cap_zero_and_one_still_bound_routes_at_cap_plus_two() {
    for cap in [0usize, 1, 7] {
        let recorder = DebuggingRecorder::new();
        let snap = recorder.snapshotter();
        let _guard = metrics::set_default_local_recorder(&recorder);
        let layer = VitalsLayer::builder().route_cap(cap).build();
        let svc = layer.layer(tower::service_fn(|req| async move { answer(req) }));
        let mut rng = hostile::Rng::new(SEED ^ cap as u64);
        for i in 0..2_000 {
            let (mut req, _) = hostile::request(&mut rng, String::new());
            if i % 3 != 0 {
                req.extensions_mut().insert(RouteName::new(format!("/n/{i}")));
            }
            let res = block_on(svc.clone().oneshot(req)).expect("infallible");
            drain(&mut res.into_body());
        }
        let seen = snapshot(&snap);
        let routes = route_values(&seen);
        assert!(routes.len() <= cap + 2, "cap {cap}: {routes:?}");
        assert_eq!(layer.routes_seen(), cap);
        assert_eq!(counter_total(&seen, &NAMES.requests), 2_000);
    }
}

#[test]
fn axum_router_maps_random_paths_to_templates_or_unmatched() {
    use axum::routing::get;
    const N: usize = 20_000;
    let recorder = DebuggingRecorder::new();
    let snap = recorder.snapshotter();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let layer = VitalsLayer::new();
    let app: axum::Router = axum::Router::new()
        .route("/users/{id}", get(|| async { "user" }))
        .route("/health", get(|| async { "ok" }))
        .fallback(|| async { (StatusCode::NOT_FOUND, "no such page") })
        .layer(layer.clone());

    let mut rng = hostile::Rng::new(SEED + 1);
    let mut carried = HashSet::new();
    for i in 0..N {
        let (mut req, strings) = hostile::request(&mut rng, axum::body::Body::empty());
        // A third of the requests hit a real template with a random id (and query).
        if i % 3 == 0 {
            let len = 1 + rng.below(30) as usize;
            let id = rng.string(b"0123456789abcdef", len);
            *req.uri_mut() =
                format!("/users/{id}?q={}", rng.below(1_000_000)).parse().expect("uri");
            carried.insert(format!("/users/{id}"));
        }
        if i % 7 == 0 {
            *req.uri_mut() = "/health".parse().expect("uri");
        }
        carried.extend(strings);
        let res = block_on(app.clone().oneshot(req)).expect("infallible");
        drain(&mut res.into_body());
    }

    let seen = snapshot(&snap);
    assert_eq!(
        counter_total(&seen, &NAMES.requests),
        N as u64,
        "fallback requests are counted too"
    );
    let routes = route_values(&seen);
    let allowed: BTreeSet<String> =
        ["/users/{id}", "/health", UNMATCHED].iter().map(|s| s.to_string()).collect();
    assert!(routes.is_subset(&allowed), "{routes:?}");
    assert!(routes.contains(UNMATCHED) && routes.contains("/users/{id}"));
    assert_eq!(layer.routes_seen(), 2, "only the router's templates were admitted");
    for s in &seen {
        for (k, v) in &s.labels {
            let ours = [ROUTE, METHOD, STATUS, ERROR_TYPE, PROTOCOL_VERSION, URL_SCHEME];
            assert!(ours.contains(&k.as_str()), "{k}");
            assert!(!carried.contains(v), "a request-controlled string became a label: {k}={v:?}");
            if k == METHOD {
                assert!(STANDARD_METHODS.contains(&v.as_str()), "method label {v:?}");
            }
        }
    }
    println!(
        "axum cardinality: {N} requests, {} carried strings -> routes {routes:?}, {} series",
        carried.len(),
        seen.len()
    );
}

/// Requests per `http.route` value of the `requests` counter.
fn requests_by_route(seen: &[Seen]) -> std::collections::BTreeMap<String, u64> {
    let mut by_route = std::collections::BTreeMap::new();
    for s in named(seen, &NAMES.requests) {
        *by_route.entry(s.label(ROUTE).unwrap_or("?").to_owned()).or_default() += s.counter();
    }
    by_route
}

#[test]
fn matched_paths_keep_their_templates_across_routers_nested_services_and_a_full_address_cache() {
    // The layer finds axum's `MatchedPath` by the address of its text (one `Arc<str>` per route
    // of a router). Here: routers built one after the other, each dropped before the next (a
    // new router's texts land where the old one's were freed: same lengths, other routes),
    // then a nested service whose paths axum builds anew for every request (a new address each
    // time: they fill the address cache), then more routes than the cache has slots.
    use axum::routing::get;
    const ROUTES: usize = 100;
    const ROUTERS: usize = 4;
    let recorder = DebuggingRecorder::new();
    let snap = recorder.snapshotter();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let layer = VitalsLayer::new();
    let send = |app: &axum::Router, path: String| {
        let req = Request::get(path).body(axum::body::Body::empty()).expect("request");
        let res = block_on(app.clone().oneshot(req)).expect("infallible");
        assert_eq!(res.status(), StatusCode::OK);
        drain(&mut res.into_body());
    };
    let router = |prefix: char, routes: usize| {
        let mut app = axum::Router::new();
        for i in 0..routes {
            app = app.route(&format!("/{prefix}{i:03}/{{id}}"), get(|| async { "r" }));
        }
        app.layer(layer.clone())
    };

    let mut expected = std::collections::BTreeMap::new();
    for (k, prefix) in ['a', 'b', 'c', 'd'].into_iter().enumerate().take(ROUTERS) {
        let app = router(prefix, ROUTES);
        for round in 0..=k {
            for i in 0..ROUTES {
                send(&app, format!("/{prefix}{i:03}/{round}"));
            }
        }
        for i in 0..ROUTES {
            expected.insert(format!("/{prefix}{i:03}/{{id}}"), k as u64 + 1);
        }
    }
    let inner =
        axum::Router::new().route("/items/{id}", get(|| async { "item" })).layer(layer.clone());
    let nested = axum::Router::new().nest_service("/api", inner);
    for n in 0..600 {
        send(&nested, format!("/api/items/{n}"));
    }
    expected.insert("/api/items/{id}".to_owned(), 600);
    let many = router('e', 300);
    for i in 0..300 {
        send(&many, format!("/e{i:03}/x"));
        expected.insert(format!("/e{i:03}/{{id}}"), 1);
    }

    let by_route = requests_by_route(&snapshot(&snap));
    let wrong: Vec<_> = expected
        .iter()
        .filter(|(route, n)| by_route.get(*route) != Some(n))
        .map(|(route, n)| format!("{route}: {:?} of {n}", by_route.get(route)))
        .collect();
    assert!(wrong.is_empty(), "requests by route differ: {wrong:?}");
    assert_eq!(by_route.len(), expected.len(), "no other route value: {by_route:?}");
    assert_eq!(layer.routes_seen(), expected.len());
}
