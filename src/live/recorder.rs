//! The summary recorder: a `metrics::Recorder` that understands the layer's metric names under
//! any prefix and keeps them per route, in stripes: each recording thread writes its own
//! stripe's numbers under that stripe's lock, and snapshots merge the stripes.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError};
use std::time::Duration;

use metrics::{
    Counter, CounterFn, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SharedString, Unit,
};

use crossbeam_utils::CachePadded;

use super::window::{self, RouteTotals, StripeStats, Time, HISTORY_POINTS};
use crate::labels::{ERROR_TYPE, METHOD, OVERFLOW, ROUTE, STATUS, UNMATCHED};
use crate::MetricNames;

/// What a metric name is, once its prefix is taken off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Requests,
    Time(Time),
    Bytes,
    Blocks,
    Active,
    Utilization,
}

/// The layer's names with an empty prefix: `.requests`, `.request.duration`, …
fn suffixes() -> [(String, Kind); 8] {
    let n = MetricNames::new("");
    [
        (n.requests, Kind::Requests),
        (n.duration, Kind::Time(Time::Duration)),
        (n.application_time, Kind::Time(Time::Application)),
        (n.output_time, Kind::Time(Time::Output)),
        (n.output_bytes, Kind::Bytes),
        (n.output_blocks, Kind::Blocks),
        (n.active_requests, Kind::Active),
        (n.utilization, Kind::Utilization),
    ]
}

/// The gauge value held by `gauge` (metrics' `GaugeFn for AtomicU64` keeps an `f64`'s bits).
pub(crate) fn gauge_value(gauge: &AtomicU64) -> f64 {
    f64::from_bits(gauge.load(Ordering::Relaxed))
}

/// The stripe index of the calling thread, picked once per thread: threads take consecutive
/// numbers as they first record, so the workers of a runtime land on different stripes.
fn thread_stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static STRIPE: usize = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    STRIPE.with(|s| *s)
}

/// Makes the numbers of a stripe no thread has recorded into yet (once per stripe: out of the
/// recording path, whose frame would otherwise hold a `StripeStats` in the making).
#[cold]
#[inline(never)]
fn new_stripe(slot: &mut Option<Box<StripeStats>>) -> &mut StripeStats {
    slot.insert(Box::new(StripeStats::new()))
}

/// One stripe of a route: its own lock on its own cache line, its numbers allocated when a
/// thread first records into it.
pub(crate) type Stripe = CachePadded<Mutex<Option<Box<StripeStats>>>>;

/// One route: one stripe per group of recording threads (a thread's stripe lock is contended
/// only by a snapshot, or by another thread that picked the same stripe), and the totals kept
/// once per route.
pub(crate) struct RouteState {
    pub(crate) stripes: Box<[Stripe]>,
    pub(crate) totals: Mutex<RouteTotals>,
}

impl RouteState {
    fn new(stripes: usize) -> Self {
        RouteState {
            stripes: (0..stripes).map(|_| CachePadded::new(Mutex::new(None))).collect(),
            totals: Mutex::new(RouteTotals::new()),
        }
    }

    pub(crate) fn totals(&self) -> MutexGuard<'_, RouteTotals> {
        self.totals.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One prefix (one layer, usually).
#[derive(Default)]
pub(crate) struct Service {
    pub(crate) routes: BTreeMap<String, Arc<RouteState>>,
    /// `active_requests` by method.
    pub(crate) active: BTreeMap<String, Arc<AtomicU64>>,
    /// `utilization` (NaN until set).
    pub(crate) utilization: Option<Arc<AtomicU64>>,
}

/// Everything a [`Live`](super::Live) holds.
pub(crate) struct Inner {
    pub(crate) clock: quanta::Clock,
    /// The clock's raw reading when the recorder was made.
    start: u64,
    pub(crate) window: Duration,
    /// Half the window, in nanoseconds (at least 1).
    slot_nanos: u64,
    /// One history step, in nanoseconds (at least 1).
    step_nanos: u64,
    pub(crate) prefix: Option<String>,
    pub(crate) max_routes: usize,
    /// Stripes per route.
    pub(crate) stripes: usize,
    suffixes: [(String, Kind); 8],
    /// Taken only to register a new label set and to take a snapshot, never per request.
    pub(crate) services: Mutex<BTreeMap<String, Service>>,
    /// Stripe-lock acquisitions that found the lock taken (contention, since start).
    pub(crate) lock_waits: AtomicU64,
    /// The last `/vitals.json` body and the render in progress.
    pub(crate) json: super::render::SharedJson,
}

impl Inner {
    pub(crate) fn new(
        clock: quanta::Clock,
        window: Duration,
        prefix: Option<String>,
        max_routes: usize,
        stripes: usize,
    ) -> Self {
        let start = clock.raw();
        let window_nanos = u64::try_from(window.as_nanos()).unwrap_or(u64::MAX);
        Inner {
            clock,
            start,
            window,
            slot_nanos: (window_nanos / 2).max(1),
            step_nanos: (window_nanos / HISTORY_POINTS as u64).max(1),
            prefix,
            max_routes: max_routes.max(1),
            stripes: stripes.max(1),
            suffixes: suffixes(),
            services: Mutex::new(BTreeMap::new()),
            lock_waits: AtomicU64::new(0),
            json: super::render::SharedJson::default(),
        }
    }

    /// Nanoseconds since the recorder was made.
    pub(crate) fn elapsed_nanos(&self) -> u64 {
        self.clock.delta_as_nanos(self.start, self.clock.raw())
    }

    /// Length of one of the window's two slots, in nanoseconds (at least 1).
    pub(crate) fn slot_nanos(&self) -> u64 {
        self.slot_nanos
    }

    /// Length of one history step, in nanoseconds (at least 1).
    pub(crate) fn step_nanos(&self) -> u64 {
        self.step_nanos
    }

    pub(crate) fn services(&self) -> MutexGuard<'_, BTreeMap<String, Service>> {
        self.services.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Locks the calling thread's stripe of `route`, counting a wait if it was taken, and
    /// makes its numbers if it has none yet.
    fn with_stripe<R>(&self, route: &RouteState, f: impl FnOnce(&mut StripeStats) -> R) -> R {
        let stripe = &route.stripes[thread_stripe() % route.stripes.len()];
        let mut guard = match stripe.try_lock() {
            Ok(guard) => guard,
            Err(TryLockError::WouldBlock) => {
                self.lock_waits.fetch_add(1, Ordering::Relaxed);
                stripe.lock().unwrap_or_else(PoisonError::into_inner)
            }
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
        };
        match guard.as_deref_mut() {
            Some(stats) => f(stats),
            None => f(new_stripe(&mut guard)),
        }
    }

    /// Reads the clock, locks the thread's stripe of `route`, rotates its window to now, and
    /// runs `f` with the current history step (kept as the stripe's step for the recordings
    /// that follow).
    fn with_route_now<R>(
        &self,
        route: &RouteState,
        f: impl FnOnce(&mut StripeStats, u64) -> R,
    ) -> R {
        let now = self.elapsed_nanos();
        self.with_stripe(route, |stats| {
            let epoch = now / self.slot_nanos();
            if stats.behind(epoch) {
                // Lock order: a stripe, then the route's totals (snapshots take the same order).
                stats.rotate(epoch, &mut route.totals().total);
            }
            let step = now / self.step_nanos();
            stats.step = stats.step.max(step);
            f(stats, step)
        })
    }

    /// Locks the thread's stripe of `route` and runs `f` with the stripe's last step, without
    /// reading the clock: the layer increments `requests` (which reads it and rotates) just
    /// before it records the histograms of the same request on the same thread, so they land
    /// in the same stripe, window slot and history step.
    fn with_route<R>(&self, route: &RouteState, f: impl FnOnce(&mut StripeStats, u64) -> R) -> R {
        self.with_stripe(route, |stats| {
            let step = stats.step;
            f(stats, step)
        })
    }

    /// The layer metric `name` is, and its prefix; `None` for anything else.
    fn parse<'n>(&self, name: &'n str) -> Option<(&'n str, Kind)> {
        let (prefix, kind) = self.suffixes.iter().find_map(|(suffix, kind)| {
            let prefix = name.strip_suffix(suffix.as_str())?;
            (!prefix.is_empty()).then_some((prefix, *kind))
        })?;
        match &self.prefix {
            Some(only) if only != prefix => None,
            _ => Some((prefix, kind)),
        }
    }

    /// The state of `route` under `prefix`, made if new; past the route cap, `overflow`'s.
    fn route(&self, prefix: &str, route: &str) -> Arc<RouteState> {
        let mut services = self.services();
        let total: usize = services.values().map(|s| s.routes.len()).sum();
        let service = services.entry(prefix.to_owned()).or_default();
        if let Some(r) = service.routes.get(route) {
            return Arc::clone(r);
        }
        let name = if total >= self.max_routes { OVERFLOW } else { route };
        Arc::clone(
            service
                .routes
                .entry(name.to_owned())
                .or_insert_with(|| Arc::new(RouteState::new(self.stripes))),
        )
    }
}

fn label<'k>(key: &'k Key, name: &str) -> Option<&'k str> {
    key.labels().find(|l| l.key() == name).map(|l| l.value())
}

/// The `metrics` recorder of a [`Live`](super::Live): made by
/// [`Live::recorder`](super::Live::recorder). Install it (alone, or in a `Fanout` with your
/// exporter), then build the layer. Cheap to clone: clones feed the same numbers.
///
/// It keeps the layer's `requests`, `request.duration`, `application_time`, `output_time`,
/// `output_bytes`, `output_blocks`, `active_requests` and `utilization` under any prefix (or
/// the one prefix set with [`LiveBuilder::prefix`](super::LiveBuilder::prefix)); every other
/// metric gets a no-op handle.
#[derive(Clone)]
pub struct LiveRecorder {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for LiveRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveRecorder").field("window", &self.inner.window).finish_non_exhaustive()
    }
}

struct RequestsHandle {
    inner: Arc<Inner>,
    route: Arc<RouteState>,
    error: Option<usize>,
    class: u8,
}

impl CounterFn for RequestsHandle {
    fn increment(&self, value: u64) {
        self.inner
            .with_route_now(&self.route, |s, step| s.count(step, value, self.error, self.class));
    }
    fn absolute(&self, _value: u64) {}
}

struct HistogramHandle {
    inner: Arc<Inner>,
    route: Arc<RouteState>,
}

/// A time histogram's handle.
struct TimeHandle(HistogramHandle, Time);

impl HistogramFn for TimeHandle {
    fn record(&self, value: f64) {
        let (h, which) = (&self.0, self.1);
        h.inner.with_route(&h.route, |s, step| s.time(step, which, value));
    }
}

/// `output_bytes`' handle.
struct BytesHandle(HistogramHandle);

impl HistogramFn for BytesHandle {
    fn record(&self, value: f64) {
        let h = &self.0;
        h.inner.with_route(&h.route, |s, _| s.bytes(value));
    }
}

/// `output_blocks`' handle.
struct BlocksHandle(HistogramHandle);

impl HistogramFn for BlocksHandle {
    fn record(&self, value: f64) {
        let h = &self.0;
        h.inner.with_route(&h.route, |s, _| s.blocks(value));
    }
}

/// The `request.duration` handle of a route that a layer with exemplars on records into
/// (`exemplar::want`): records as its [`TimeHandle`] does and, when the recording carries a
/// trace id (`exemplar::current`), offers it to the stripe's slowest, under the same lock.
/// Metric names no layer with exemplars records get the plain handle and pay nothing for this.
struct TracedDurationHandle(HistogramHandle);

impl HistogramFn for TracedDurationHandle {
    fn record(&self, value: f64) {
        let h = &self.0;
        let sample = crate::exemplar::current();
        h.inner.with_route(&h.route, |s, step| {
            s.time(step, Time::Duration, value);
            if let Some(sample) = sample {
                s.traced(value, sample);
            }
        });
    }
}

impl Recorder for LiveRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let Some((prefix, Kind::Requests)) = self.inner.parse(key.name()) else {
            return Counter::noop();
        };
        let route = self.inner.route(prefix, label(key, ROUTE).unwrap_or(UNMATCHED));
        let error = label(key, ERROR_TYPE).map(|e| route.totals().error_index(e));
        let class = window::status_class(label(key, STATUS));
        Counter::from_arc(Arc::new(RequestsHandle {
            inner: Arc::clone(&self.inner),
            route,
            error,
            class,
        }))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        let Some((prefix, kind)) = self.inner.parse(key.name()) else { return Gauge::noop() };
        let mut services = self.inner.services();
        let service = services.entry(prefix.to_owned()).or_default();
        match kind {
            Kind::Active => {
                let method = label(key, METHOD).unwrap_or("").to_owned();
                let gauge = service
                    .active
                    .entry(method)
                    .or_insert_with(|| Arc::new(AtomicU64::new(0.0f64.to_bits())));
                Gauge::from_arc(Arc::clone(gauge))
            }
            Kind::Utilization => {
                let gauge = service
                    .utilization
                    .get_or_insert_with(|| Arc::new(AtomicU64::new(f64::NAN.to_bits())));
                Gauge::from_arc(Arc::clone(gauge))
            }
            _ => Gauge::noop(),
        }
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        let Some((prefix, kind)) = self.inner.parse(key.name()) else {
            return Histogram::noop();
        };
        if !matches!(kind, Kind::Time(_) | Kind::Bytes | Kind::Blocks) {
            return Histogram::noop();
        }
        let route = self.inner.route(prefix, label(key, ROUTE).unwrap_or(UNMATCHED));
        let handle = HistogramHandle { inner: Arc::clone(&self.inner), route };
        match kind {
            Kind::Time(Time::Duration) if crate::exemplar::wanted(key.name()) => {
                Histogram::from_arc(Arc::new(TracedDurationHandle(handle)))
            }
            Kind::Time(which) => Histogram::from_arc(Arc::new(TimeHandle(handle, which))),
            Kind::Bytes => Histogram::from_arc(Arc::new(BytesHandle(handle))),
            _ => Histogram::from_arc(Arc::new(BlocksHandle(handle))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inner(prefix: Option<&str>) -> Inner {
        Inner::new(quanta::Clock::mock().0, Duration::from_secs(60), prefix.map(Into::into), 3, 2)
    }

    #[test]
    fn names_are_understood_under_any_prefix() {
        let i = inner(None);
        assert_eq!(i.parse("http.server.requests"), Some(("http.server", Kind::Requests)));
        assert_eq!(
            i.parse("my.api.request.duration"),
            Some(("my.api", Kind::Time(Time::Duration)))
        );
        assert_eq!(i.parse("x.utilization"), Some(("x", Kind::Utilization)));
        assert_eq!(i.parse(".requests"), None, "no prefix");
        assert_eq!(i.parse("x.input_bytes"), None, "input metrics are not kept");
        assert_eq!(i.parse("something_else"), None);
        let only = inner(Some("api"));
        assert_eq!(only.parse("api.requests"), Some(("api", Kind::Requests)));
        assert_eq!(only.parse("http.server.requests"), None);
    }

    /// Random durations, a third of them untraced, from three threads a phase (so through
    /// several stripes), four phases half a window apart on a mock clock: after each phase,
    /// the window's and since start's slowest are the first [`SLOWEST`](super::super::SLOWEST)
    /// of the traced requests of those periods sorted by duration.
    #[test]
    fn the_slowest_traced_requests_match_a_sorted_reference() {
        use crate::exemplar::{Sample, Scope, TraceId};
        const SLOWEST: usize = super::super::SLOWEST;
        crate::exemplar::want(["t.request.duration"]);
        let (clock, mock) = quanta::Clock::mock();
        let inner = Arc::new(Inner::new(clock, Duration::from_secs(60), None, 10, 3));
        let recorder = LiveRecorder { inner: Arc::clone(&inner) };
        let meta = Metadata::new("test", metrics::Level::INFO, None);
        let labels = || vec![metrics::Label::new(ROUTE, "/r")];
        let requests = recorder.register_counter(&Key::from_parts("t.requests", labels()), &meta);
        let duration =
            recorder.register_histogram(&Key::from_parts("t.request.duration", labels()), &meta);
        // (phase, seconds, trace id) of every traced request.
        let mut sent: Vec<(u64, f64, u128)> = Vec::new();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            x >> 11
        };
        let expect = |sent: &[(u64, f64, u128)], phases: std::ops::RangeInclusive<u64>| {
            let mut v: Vec<(f64, u128)> =
                sent.iter().filter(|s| phases.contains(&s.0)).map(|s| (s.1, s.2)).collect();
            v.sort_by(|a, b| b.0.total_cmp(&a.0));
            v.truncate(SLOWEST);
            v
        };
        let got = |list: &[super::super::SlowRequest]| -> Vec<(f64, u128)> {
            list.iter().map(|s| (s.duration, s.trace_id.to_u128())).collect()
        };
        for phase in 0..4u64 {
            if phase > 0 {
                mock.increment(Duration::from_secs(31));
            }
            // Per thread: (seconds, trace id or 0 for untraced).
            let batches: Vec<Vec<(f64, u128)>> = (0..3)
                .map(|_| {
                    (0..300)
                        .map(|_| {
                            let seconds = (next() % 1_000_000_000_000 + 1) as f64 * 1e-11;
                            let trace = if next() % 3 == 0 { 0 } else { u128::from(next()) + 1 };
                            (seconds, trace)
                        })
                        .collect()
                })
                .collect();
            std::thread::scope(|s| {
                for batch in &batches {
                    let (requests, duration) = (&requests, &duration);
                    s.spawn(move || {
                        for &(seconds, trace) in batch {
                            let _scope = TraceId::from_u128(trace)
                                .map(|trace| Scope::enter(Sample { trace, unix_nanos: 1 }));
                            requests.increment(1);
                            duration.record(seconds);
                        }
                    });
                }
            });
            for batch in &batches {
                sent.extend(batch.iter().filter(|b| b.1 != 0).map(|b| (phase, b.0, b.1)));
            }
            let snap = super::super::snapshot::take(&inner);
            let r = &snap.services[0].routes[0];
            assert_eq!(r.window.slowest.len(), SLOWEST);
            let first = phase.saturating_sub(1);
            assert_eq!(got(&r.window.slowest), expect(&sent, first..=phase), "window {phase}");
            assert_eq!(got(&r.since_start.slowest), expect(&sent, 0..=phase), "since {phase}");
        }
    }

    #[test]
    fn routes_past_the_cap_fold_into_overflow() {
        let i = inner(None);
        for r in ["/a", "/b", "/c", "/d", "/e"] {
            i.route("p", r);
        }
        let services = i.services();
        let names: Vec<&String> = services["p"].routes.keys().collect();
        assert_eq!(names, ["/a", "/b", "/c", "overflow"]);
    }
}
