//! The demo's per-route table: what the library's live summary recorder
//! (`tower_vitals::live`, the same numbers `/vitals` shows) holds since start, as text.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use tower_vitals::live::{Live, Percentiles, PeriodSnapshot, RouteSnapshot};

/// Routes (since start) of every prefix, by name.
pub fn routes(live: &Live) -> BTreeMap<String, PeriodSnapshot> {
    let snapshot = live.snapshot();
    let mut out = BTreeMap::new();
    for service in snapshot.services {
        for RouteSnapshot { route, since_start, .. } in service.routes {
            out.insert(route, since_start);
        }
    }
    out
}

fn ms(p: Option<f64>) -> f64 {
    p.unwrap_or(0.0) * 1e3
}

/// Routes whose p99 output time is at least 50 ms and 10x their p99 application time:
/// (route, output p99 ms, application p99 ms). Their time goes to delivery, not the handler.
pub fn delivery_bound(live: &Live) -> Vec<(String, f64, f64)> {
    routes(live)
        .into_iter()
        .map(|(name, r)| (name, ms(r.output_time.p99), ms(r.application_time.p99)))
        .filter(|(_, out, app)| *out >= 50.0 && *out >= 10.0 * app)
        .collect()
}

const LATENCY: &str = "ms: p50 p95 p99";

/// The table, as text. `sent` is what the load generator sent per route (shown beside what the
/// layer recorded).
pub fn render(live: &Live, sent: &BTreeMap<String, u64>) -> String {
    let routes = routes(live);
    let mut names: Vec<&String> = routes.keys().chain(sent.keys()).collect();
    names.sort();
    names.dedup();
    let width = names.iter().map(|n| n.len()).max().unwrap_or(0).max(LATENCY.len());
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<width$}  {:>6}  {:>8}  {:<24}  {:>10}  {:>11}  {:>11}",
        "route",
        "sent",
        "recorded",
        "errors (error.type)",
        "bytes/resp",
        "blocks/resp",
        "bytes/block"
    );
    for name in &names {
        let r = routes.get(*name);
        let errors = match r {
            Some(r) if !r.errors.is_empty() => {
                r.errors.iter().map(|(k, v)| format!("{k}:{v}")).collect::<Vec<_>>().join(" ")
            }
            _ => "-".to_owned(),
        };
        let per_block = r
            .and_then(PeriodSnapshot::bytes_per_block)
            .map_or("-".to_owned(), |b| format!("{b:.0}"));
        let flag =
            if r.is_some_and(PeriodSnapshot::small_blocks) { "  <-- small blocks" } else { "" };
        let _ = writeln!(
            s,
            "{:<width$}  {:>6}  {:>8}  {:<24}  {:>10.0}  {:>11.1}  {:>11}{flag}",
            name,
            sent.get(*name).copied().unwrap_or(0),
            r.map_or(0, |r| r.requests),
            errors,
            r.and_then(PeriodSnapshot::bytes_per_response).unwrap_or(0.0),
            r.and_then(PeriodSnapshot::blocks_per_response).unwrap_or(0.0),
            per_block,
        );
    }
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "{:<width$}  {:>26}  {:>26}  {:>26}",
        LATENCY, "application", "output", "total"
    );
    for name in &names {
        let Some(r) = routes.get(*name) else { continue };
        let q =
            |p: &Percentiles| format!("{:>8.2} {:>8.2} {:>8.2}", ms(p.p50), ms(p.p95), ms(p.p99));
        let _ = writeln!(
            s,
            "{:<width$}  {:>26}  {:>26}  {:>26}",
            name,
            q(&r.application_time),
            q(&r.output_time),
            q(&r.duration)
        );
    }
    s
}

/// Where each route's time went, as exact means in ms: (route, total, application, output,
/// body production). Body production is what is left: the time the body took to produce its
/// frames after the head (a stream pausing, a slow generator), `total - application - output`.
pub fn time_split(live: &Live) -> Vec<(String, f64, f64, f64, f64)> {
    routes(live)
        .into_iter()
        .filter(|(_, r)| r.duration.count > 0)
        .map(|(name, r)| {
            let mean = |p: &Percentiles| p.mean.unwrap_or(0.0) * 1e3;
            let (total, app, out) =
                (mean(&r.duration), mean(&r.application_time), mean(&r.output_time));
            (name, total, app, out, (total - app - out).max(0.0))
        })
        .collect()
}
