//! The builder and the findings of the first users: the layer's state is built once and shared
//! by its clones; long route names to skip are compared whole; a label function stored in a
//! variable; labels added from several places merge; a label value cap out of range is an error.

use std::convert::Infallible;

use bytes::Bytes;
use http::request::Parts;
use http::{Request, Response};
use http_body_util::Full;
use tower::{Layer, ServiceExt};
use tower_vitals::labels::ROUTE;
use tower_vitals::{
    label_fn, Label, LabelError, Labels, RouteName, VitalsLayer, MAX_LABEL_VALUE_CAP,
};

use crate::support::*;

const REQUESTS: &str = "http.server.requests";

fn ok_service(
) -> impl tower::Service<Request<String>, Response = Response<Full<Bytes>>, Error = Infallible> + Clone
{
    tower::service_fn(|_req: Request<String>| {
        std::future::ready(Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok")))))
    })
}

fn send<S>(svc: &S, req: Request<String>)
where
    S: tower::Service<Request<String>, Error = Infallible> + Clone,
    S::Response: IntoBody,
{
    let res = block_on(svc.clone().oneshot(req)).expect("infallible");
    res.drain();
}

/// Reads a response body to its end (what a server does).
trait IntoBody {
    fn drain(self);
}

impl<B: http_body::Body + Unpin> IntoBody for Response<B>
where
    B::Data: bytes::Buf,
{
    fn drain(self) {
        drain(&mut self.into_body());
    }
}

fn named_route(route: &str) -> Request<String> {
    let mut req = Request::get("/").body(String::new()).expect("request");
    req.extensions_mut().insert(RouteName::new(route.to_owned()));
    req
}

/// The total of `requests` over the series whose `key` is `value`.
fn count_where(seen: &[Seen], key: &str, value: &str) -> u64 {
    named(seen, REQUESTS).iter().filter(|s| s.label(key) == Some(value)).map(|s| s.counter()).sum()
}

#[test]
fn clones_of_a_built_layer_share_its_state() {
    let layer = VitalsLayer::builder().route_cap(8).build();
    let clone = layer.clone();
    let svc = clone.layer(ok_service());
    send(&svc, named_route("/a"));
    send(&svc, named_route("/b"));
    assert_eq!(layer.routes_seen(), 2, "one route table for the layer and its clones");
    assert_eq!(VitalsLayer::new().routes_seen(), 0);
}

#[test]
fn skipping_a_long_route_name_skips_that_name_only() {
    let (_guard, snap) = local_recorder();
    let common = "x".repeat(300);
    let (skipped, kept) = (format!("/{common}/health"), format!("/{common}/users"));
    let layer = VitalsLayer::builder().skip_routes([skipped.clone()]).build();
    let svc = layer.layer(ok_service());
    send(&svc, named_route(&skipped));
    send(&svc, named_route(&kept));
    send(&svc, named_route("/short"));
    let seen = snapshot(&snap);
    let total: u64 = named(&seen, REQUESTS).iter().map(|s| s.counter()).sum();
    assert_eq!(total, 2, "the skipped name only is left out: {seen:#?}");
    assert_eq!(count_where(&seen, ROUTE, "/short"), 1);
    assert_eq!(layer.routes_seen(), 2);
}

#[test]
fn a_label_function_stored_in_a_variable() {
    let (_guard, snap) = local_recorder();
    let tier = label_fn(|req: &Parts| req.headers.get("x-tier")?.to_str().ok());
    let layer =
        VitalsLayer::builder().label_from_request("tier", tier).expect("a valid key").build();
    let svc = layer.layer(ok_service());
    send(&svc, Request::get("/").header("x-tier", "gold").body(String::new()).expect("request"));
    assert_eq!(count_where(&snapshot(&snap), "tier", "gold"), 1);
}

#[test]
fn labels_added_from_several_places_merge() {
    let (_guard, snap) = local_recorder();
    let layer = VitalsLayer::builder()
        .label("cache")
        .and_then(|b| b.label("path"))
        .and_then(|b| b.label("shard"))
        .expect("keys")
        .build();
    // An inner middleware labels the response, then the handler adds its own labels.
    let svc = layer.layer(tower::service_fn(|_req: Request<String>| {
        let mut res = Response::new(Full::new(Bytes::from_static(b"ok")));
        res.extensions_mut().insert(Label::new("shard", "7")); // a plain insert, first
        Label::new("cache", "miss").add_to(res.extensions_mut());
        Label::new("path", "fast").add_to(res.extensions_mut());
        Labels::from([Label::new("cache", "hit")]).add_to(res.extensions_mut()); // later wins
        std::future::ready(Ok::<_, Infallible>(res))
    }));
    send(&svc, Request::get("/").body(String::new()).expect("request"));
    let seen = snapshot(&snap);
    assert_eq!(count_where(&seen, "shard", "7"), 1, "{seen:#?}");
    assert_eq!(count_where(&seen, "path", "fast"), 1, "{seen:#?}");
    assert_eq!(count_where(&seen, "cache", "hit"), 1, "{seen:#?}");

    // `Labels` keeps one value per key, the last given.
    let labels = Labels::new().with(Label::new("a", "1")).with(Label::new("a", "2"));
    let values: Vec<&str> = labels.iter().map(Label::value).collect();
    assert_eq!(values, ["2"]);
}

#[test]
fn a_label_value_cap_out_of_range_is_an_error() {
    let err = VitalsLayer::builder().label_value_cap(1000).expect_err("1000 > 250");
    assert_eq!(err, LabelError::ValueCapTooLarge { cap: 1000, max: MAX_LABEL_VALUE_CAP });
    assert!(err.to_string().contains("250"), "{err}");
    assert!(VitalsLayer::builder().label_value_cap(MAX_LABEL_VALUE_CAP).is_ok());
}
