//! What a [`Live`](super::Live) shows: a snapshot of every route, as plain data.

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use hdrhistogram::Histogram as Hdr;

use super::recorder::{gauge_value, Inner, RouteState, Stripe};
use super::window::{Period, Point, Slow, StripeStats, STATUS_CLASSES};
use crate::exemplar::TraceId;

/// A route is flagged for small blocks when its responses average fewer than this many bytes
/// per block (the layer's [`SmallBlockWarning`](crate::SmallBlockWarning) default) …
pub const SMALL_BLOCK_BYTES: u64 = crate::small_blocks::DEFAULT_MIN_AVERAGE_BYTES;
/// … over at least this many blocks, with at least two blocks per response on average (a
/// response sent in one frame cannot be sent in fewer).
pub const SMALL_BLOCK_MIN_BLOCKS: u64 = crate::small_blocks::DEFAULT_MIN_BLOCKS;

/// Everything at one moment. Made by [`Live::snapshot`](super::Live::snapshot).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Snapshot {
    /// Time since the recorder was made.
    pub uptime: Duration,
    /// The window length asked for (the window covers between half of it and all of it).
    pub window: Duration,
    /// Time between two history points.
    pub history_step: Duration,
    /// Route-lock acquisitions that had to wait, since start (contention on the request path).
    pub lock_waits: u64,
    /// Heap bytes held by the routes' numbers (histogram counts, `error.type` names).
    pub heap_bytes: usize,
    /// One per metric-name prefix seen (one per layer configuration; usually one).
    pub services: Vec<ServiceSnapshot>,
}

/// One prefix: its routes and its service-wide gauges.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct ServiceSnapshot {
    /// The metric-name prefix (`http.server` by default).
    pub prefix: String,
    /// `active_requests`, summed over methods.
    pub active_requests: f64,
    /// `active_requests` by `http.request.method`.
    pub active_by_method: BTreeMap<String, f64>,
    /// The last `utilization` published (`None` before the first).
    pub utilization: Option<f64>,
    /// The routes, by name.
    pub routes: Vec<RouteSnapshot>,
}

/// One route (`http.route`).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct RouteSnapshot {
    /// The route, as the layer tagged it (raw: escape it before showing it in HTML).
    pub route: String,
    /// Everything since the recorder was made.
    pub since_start: PeriodSnapshot,
    /// The recent window.
    pub window: PeriodSnapshot,
    /// Requests per history step, oldest first, ending now.
    pub history: Vec<HistoryPoint>,
}

/// One history step.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct HistoryPoint {
    /// Requests that finished in the step.
    pub requests: u64,
    /// Of which with an `error.type`.
    pub errors: u64,
    /// Mean `request.duration`, seconds (`None` without requests).
    pub mean_duration: Option<f64>,
    /// Largest `request.duration`, seconds (`None` without requests).
    pub max_duration: Option<f64>,
}

/// One period (since start, or the window) of one route.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct PeriodSnapshot {
    /// How long the period covers.
    pub covered: Duration,
    /// Finished requests (`requests` counter).
    pub requests: u64,
    /// Requests per `error.type`.
    pub errors: BTreeMap<String, u64>,
    /// Requests per status class (`1xx` … `5xx`, `none` when no head was produced).
    pub status: BTreeMap<String, u64>,
    /// `request.duration`, seconds.
    pub duration: Percentiles,
    /// `application_time`, seconds.
    pub application_time: Percentiles,
    /// `output_time`, seconds.
    pub output_time: Percentiles,
    /// Responses that produced a head (and so body figures).
    pub responses: u64,
    /// Sum of `output_bytes`.
    pub bytes: u64,
    /// Sum of `output_blocks`.
    pub blocks: u64,
    /// The slowest requests of the period that carried a trace id (a layer with
    /// [`exemplars`](crate::VitalsLayerBuilder::exemplars) on), slowest first: at most
    /// [`SLOWEST`](super::SLOWEST). Empty when no request had a trace id.
    pub slowest: Vec<SlowRequest>,
}

/// One of the slowest traced requests of a period.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct SlowRequest {
    /// The request's trace id.
    pub trace_id: TraceId,
    /// Its `request.duration`, seconds (exact, not bucketed).
    pub duration: f64,
    /// When it ended (the wall clock the layer stamps exemplars with).
    pub ended: std::time::SystemTime,
}

impl SlowRequest {
    fn of(s: Slow) -> Option<Self> {
        Some(SlowRequest {
            trace_id: TraceId::from_u128(s.trace)?,
            duration: s.seconds,
            ended: std::time::UNIX_EPOCH
                .checked_add(Duration::from_nanos(s.unix_nanos))
                .unwrap_or(std::time::UNIX_EPOCH),
        })
    }

    /// [`ended`](Self::ended) in whole milliseconds since the Unix epoch (0 before it).
    pub fn ended_unix_ms(&self) -> u64 {
        self.ended
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

/// Percentiles of one time histogram, in seconds (hdrhistogram, 1 µs to 1 h, 2 significant
/// figures: each value is the highest of its bucket, within 1 % of the samples').
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct Percentiles {
    /// Samples.
    pub count: u64,
    /// Exact mean of the samples (`None` without samples).
    pub mean: Option<f64>,
    /// Median.
    pub p50: Option<f64>,
    /// 95th percentile.
    pub p95: Option<f64>,
    /// 99th percentile.
    pub p99: Option<f64>,
    /// Largest sample (its bucket's highest value).
    pub max: Option<f64>,
}

impl Percentiles {
    /// The percentiles of `h` (microseconds) with the exact sum `sum` (seconds).
    pub(crate) fn of(h: &Hdr<u64>, sum: f64) -> Self {
        let n = h.len();
        if n == 0 {
            return Percentiles::default();
        }
        let at = |q: f64| Some(h.value_at_quantile(q) as f64 / 1e6);
        Percentiles {
            count: n,
            mean: Some(sum / n as f64),
            p50: at(0.5),
            p95: at(0.95),
            p99: at(0.99),
            max: Some(h.max() as f64 / 1e6),
        }
    }
}

impl PeriodSnapshot {
    fn of(p: &Period<u64>, error_names: &[String], covered: Duration) -> Self {
        let errors = p
            .errors
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .filter_map(|(i, n)| Some((error_names.get(i)?.clone(), *n)))
            .collect();
        let status = STATUS_CLASSES
            .iter()
            .zip(p.status)
            .filter(|(_, n)| *n > 0)
            .map(|(c, n)| ((*c).to_owned(), n))
            .collect();
        PeriodSnapshot {
            covered,
            requests: p.requests,
            errors,
            status,
            duration: Percentiles::of(&p.times[0], p.time_sums[0]),
            application_time: Percentiles::of(&p.times[1], p.time_sums[1]),
            output_time: Percentiles::of(&p.times[2], p.time_sums[2]),
            responses: p.bodies,
            bytes: p.bytes,
            blocks: p.blocks,
            slowest: p.slowest.sorted().into_iter().filter_map(SlowRequest::of).collect(),
        }
    }

    /// Requests per second over the period (`None` for an empty period).
    pub fn rate(&self) -> Option<f64> {
        let s = self.covered.as_secs_f64();
        (s > 0.0).then(|| self.requests as f64 / s)
    }

    /// Mean bytes per response.
    pub fn bytes_per_response(&self) -> Option<f64> {
        (self.responses > 0).then(|| self.bytes as f64 / self.responses as f64)
    }

    /// Mean blocks (data frames) per response.
    pub fn blocks_per_response(&self) -> Option<f64> {
        (self.responses > 0).then(|| self.blocks as f64 / self.responses as f64)
    }

    /// Total bytes over total blocks.
    pub fn bytes_per_block(&self) -> Option<f64> {
        (self.blocks > 0).then(|| self.bytes as f64 / self.blocks as f64)
    }

    /// Whether the period's bodies were cut in small blocks: fewer than
    /// [`SMALL_BLOCK_BYTES`] bytes per block over at least [`SMALL_BLOCK_MIN_BLOCKS`] blocks,
    /// with at least two blocks per response.
    pub fn small_blocks(&self) -> bool {
        self.blocks >= SMALL_BLOCK_MIN_BLOCKS
            && self.blocks >= 2 * self.responses
            && self.bytes < SMALL_BLOCK_BYTES.saturating_mul(self.blocks)
    }
}

pub(crate) fn take(inner: &Inner) -> Snapshot {
    // Copy the route list, then read each route on its own (never two routes' locks at once).
    let listed: Vec<(String, RouteList, ServiceGauges)> = {
        let services = inner.services();
        services
            .iter()
            .map(|(prefix, s)| {
                let routes = s.routes.iter().map(|(n, r)| (n.clone(), Arc::clone(r))).collect();
                let gauges = ServiceGauges {
                    active: s.active.iter().map(|(m, g)| (m.clone(), gauge_value(g))).collect(),
                    utilization: s
                        .utilization
                        .as_ref()
                        .map(|g| gauge_value(g))
                        .filter(|u| !u.is_nan()),
                };
                (prefix.clone(), routes, gauges)
            })
            .collect()
    };
    let now = inner.elapsed_nanos();
    let clock = Now { nanos: now, slot: inner.slot_nanos(), step: inner.step_nanos() };
    let uptime = Duration::from_nanos(now);
    let mut heap_bytes = 0;
    let services = listed
        .into_iter()
        .map(|(prefix, routes, gauges)| ServiceSnapshot {
            prefix,
            active_requests: gauges.active.values().sum(),
            active_by_method: gauges.active,
            utilization: gauges.utilization,
            routes: routes
                .into_iter()
                .map(|(route, state)| read_route(route, &state, &clock, uptime, &mut heap_bytes))
                .collect(),
        })
        .collect();
    Snapshot {
        uptime,
        window: inner.window,
        history_step: Duration::from_nanos(clock.step),
        lock_waits: inner.lock_waits.load(std::sync::atomic::Ordering::Relaxed),
        heap_bytes,
        services,
    }
}

/// The moment of a snapshot: nanoseconds since start, and the slot and step lengths.
struct Now {
    nanos: u64,
    slot: u64,
    step: u64,
}

/// One route, its stripes merged. Holds every stripe's lock, then the route's totals (the
/// request path's order: a stripe, then the totals), so each sample is counted exactly once:
/// either in the totals or in its stripe's current slot.
fn read_route(
    route: String,
    state: &RouteState,
    now: &Now,
    uptime: Duration,
    heap_bytes: &mut usize,
) -> RouteSnapshot {
    let mut stripes: Vec<_> =
        state.stripes.iter().map(|s| s.lock().unwrap_or_else(PoisonError::into_inner)).collect();
    let mut totals = state.totals();
    let epoch = now.nanos / now.slot;
    let mut since_start = Period::<u64>::new();
    let mut window = Period::<u64>::new();
    let mut history: Vec<Point> = Vec::new();
    let mut window_start = epoch.saturating_mul(now.slot);
    for stats in stripes.iter_mut().filter_map(|g| g.as_deref_mut()) {
        stats.rotate(epoch, &mut totals.total);
    }
    totals.total.add_into(&mut since_start);
    *heap_bytes += totals.heap_bytes() + stripes.len() * std::mem::size_of::<Stripe>();
    for stats in stripes.iter().filter_map(|g| g.as_deref()) {
        stats.add_into(&mut since_start, &mut window);
        window_start = window_start.min(stats.window_start(now.slot));
        *heap_bytes += stats.heap_bytes() + std::mem::size_of::<StripeStats>();
        let points = stats.history(now.nanos / now.step);
        if history.is_empty() {
            history = points;
        } else {
            history.iter_mut().zip(&points).for_each(|(h, p)| h.add(p));
        }
    }
    if history.is_empty() {
        history = StripeStats::new().history(now.nanos / now.step);
    }
    let names = totals.error_names.clone();
    drop(totals);
    drop(stripes);
    let covered = Duration::from_nanos(now.nanos.saturating_sub(window_start));
    RouteSnapshot {
        route,
        since_start: PeriodSnapshot::of(&since_start, &names, uptime),
        window: PeriodSnapshot::of(&window, &names, covered),
        history: history.into_iter().map(point).collect(),
    }
}

/// A service's routes, copied out of the registry (names and their states).
type RouteList = Vec<(String, Arc<RouteState>)>;

struct ServiceGauges {
    active: BTreeMap<String, f64>,
    utilization: Option<f64>,
}

fn point(p: Point) -> HistoryPoint {
    let some = p.requests > 0;
    HistoryPoint {
        requests: p.requests,
        errors: p.errors,
        mean_duration: some.then(|| p.duration_sum / p.requests as f64),
        max_duration: some.then_some(p.duration_max),
    }
}
