//! What every service, future and body of one layer share: its settings and its state; and
//! the [`Lease`]s through which requests hold it.
//!
//! A request must own a reference to its layer's [`Shared`] (its body outlives the service that
//! made it). One `Arc<Shared>` count written by every request would be a cache line that every
//! core takes from the others, twice per request. So a request holds a [`Lease`] instead: an
//! `Arc` of one of the layer's *stripes* (one per thread index, see `in_flight::thread_stripe`),
//! each on cache lines of its own and holding one reference to `Shared`. A request clones the
//! stripe of the thread that calls the service and drops it wherever it ends: the threads of a
//! busy server each write only their own stripe's count. `Shared`'s own count moves only when a
//! service is built, cloned or dropped, and when the gauges are published.
//!
//! What a dropped layer keeps alive: [`Leases`] (the stripes) live as long as any service of the
//! layer (a [`Vitals`](crate::Vitals)) does, and each stripe as long as a request on it; then
//! `Shared` goes with the last of them. Nothing is kept per thread, and the gauge registry holds
//! weak references only.

use std::sync::{Arc, Mutex, PoisonError, Weak};

use crossbeam_utils::CachePadded;

use crate::gauges;

use crate::clock::Clock;
use crate::exemplar::{self, TraceId, TraceIdSource};
use crate::handles::{HandleCache, TagSources};
use crate::in_flight::{self, InFlight};
use crate::names::MetricNames;
use crate::routes::RouteTable;
use crate::small_blocks::{SmallBlockWarning, SmallBlocks};
use crate::user_labels::{LabelKey, LabelTables};
use crate::utilization::{Utilization, UtilizationConfig};

/// The default cap on distinct `http.route` values (see
/// [`VitalsLayerBuilder::route_cap`](crate::VitalsLayerBuilder::route_cap)).
pub const DEFAULT_ROUTE_CAP: usize = 1024;

/// Handle sets cached per route admitted, at most (past it: resolved per request, not cached).
const HANDLE_SETS_PER_ROUTE: usize = 32;

/// What every service, future and body of one layer share.
///
/// Aligned to 128 bytes, so that in its `Arc` the reference counts (written when a service is
/// cloned or dropped) sit on a line of their own, not on the settings' line that every request
/// and frame reads (the clock).
#[repr(align(128))]
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) routes: RouteTable,
    pub(crate) handles: HandleCache,
    /// The user's label keys and their capped value interners.
    pub(crate) labels: LabelTables,
    /// Whether `call` must look at the request head (a skip predicate or a label function).
    pub(crate) needs_head: bool,
    /// No skip predicate, no label key, no gRPC routes and no trace-id function: `call` takes
    /// its short path (the route from the extensions, the trace id from `traceparent`).
    pub(crate) simple: bool,
    /// Exemplars on, trace ids from the `traceparent` header.
    pub(crate) traceparent: bool,
    pub(crate) in_flight: InFlight,
    pub(crate) utilization: Utilization,
    /// Per-route block sums for the small-block warning (`None`: turned off).
    pub(crate) small_blocks: Option<SmallBlocks>,
    /// Raw clock reading when the layer was built: time 0 of the utilisation and warning clocks.
    pub(crate) epoch: u64,
    /// Seconds per raw clock tick (see [`seconds_per_tick`]).
    pub(crate) seconds_per_tick: f64,
    /// The stripes the services of this layer lease from (weak: the services own them), and
    /// whether the layer is in the gauge registry yet.
    leases: Mutex<(Weak<Leases>, bool)>,
    /// Wall-clock time at `epoch`, in nanoseconds since the Unix epoch (exemplar timestamps).
    pub(crate) unix_nanos_at_epoch: u64,
}

/// Seconds per raw tick of `clock`: quanta scales raw readings linearly (a TSC by its calibrated
/// factor, other clocks by 1 ns), so a duration is `ticks × this` (one multiply instead of
/// quanta's 128-bit scaling per conversion; exact for nanosecond clocks, within 1e-12 of quanta's
/// integer nanoseconds for a TSC).
pub(crate) fn seconds_per_tick(clock: &Clock) -> f64 {
    const SPAN: u64 = 1 << 40;
    clock.delta_as_nanos(0, SPAN) as f64 / SPAN as f64 * 1e-9
}

/// The layer's settings.
#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) prefix: String,
    pub(crate) route_cap: usize,
    pub(crate) clock: Clock,
    pub(crate) utilization: UtilizationConfig,
    pub(crate) grpc_routes: bool,
    pub(crate) small_blocks: Option<SmallBlockWarning>,
    /// Requests for which any of these is true are left out.
    pub(crate) skip_if: Vec<SkipFn>,
    /// Route names left out.
    pub(crate) skip_routes: Vec<String>,
    pub(crate) label_keys: Vec<LabelKey>,
    pub(crate) label_value_cap: usize,
    pub(crate) protocol_version: bool,
    /// `url.scheme` of requests whose URI has none (`None`: the tag is off).
    pub(crate) url_scheme: Option<String>,
    /// `clock` is the system clock (not one the user gave): the background thread publishes
    /// the layer's gauges once a second. A clock of the user's own (a test's mock) moves only
    /// when its owner moves it, so its gauges are published on demand only.
    pub(crate) system_clock: bool,
    /// Exemplars: where each request's trace id comes from (`None`: off).
    pub(crate) exemplars: Option<TraceIdSource>,
}

/// A skip predicate over the request head.
pub(crate) type SkipFn = Arc<dyn Fn(&http::request::Parts) -> bool + Send + Sync>;

impl Shared {
    pub(crate) fn new(config: Config) -> Self {
        let names = MetricNames::new(&config.prefix);
        if config.exemplars.is_some() {
            exemplar::want([
                names.requests.as_str(),
                names.duration.as_str(),
                names.application_time.as_str(),
            ]);
        }
        let cap = config.route_cap;
        let epoch = config.clock.raw();
        let in_flight = InFlight::new(names.active_requests.clone());
        let utilization = Utilization::new(
            config.clock.quanta().clone(),
            &config.utilization,
            names.utilization.clone(),
            epoch,
        );
        let labels = LabelTables::new(&config.label_keys, config.label_value_cap);
        // Room for the label sets the protocol and the user's labels multiply a route into.
        let per_route = HANDLE_SETS_PER_ROUTE * 2 * (1 + 2 * config.label_keys.len());
        let needs_head = !config.skip_if.is_empty()
            || labels.has_request_functions()
            || matches!(config.exemplars, Some(TraceIdSource::Function(_)));
        let unix_nanos_at_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| u64::try_from(since.as_nanos()).unwrap_or(u64::MAX));
        Shared {
            routes: RouteTable::new(cap, &config.skip_routes),
            simple: !needs_head
                && labels.is_empty()
                && !config.grpc_routes
                && matches!(config.exemplars, None | Some(TraceIdSource::Traceparent)),
            traceparent: matches!(config.exemplars, Some(TraceIdSource::Traceparent)),
            handles: HandleCache::new(names, (cap + 2).saturating_mul(per_route)),
            needs_head,
            labels,
            in_flight,
            utilization,
            small_blocks: config.small_blocks.map(|s| SmallBlocks::new(s, cap)),
            epoch,
            seconds_per_tick: seconds_per_tick(&config.clock),
            leases: Mutex::new((Weak::new(), false)),
            unix_nanos_at_epoch,
            config,
        }
    }

    /// A request of `method` that started on `stripe` leaves `active_requests` and the busy time
    /// at raw reading `end`.
    #[inline]
    pub(crate) fn leave(&self, stripe: usize, method: u8, end: u64) {
        let now = self.utilization.micros(end);
        self.in_flight.finish(stripe, method, now);
        self.utilization.tick(&self.in_flight, now);
    }

    /// A request of `method` enters `active_requests` and the busy time at raw reading `t0`, on
    /// `stripe`.
    #[inline]
    pub(crate) fn enter(&self, stripe: usize, method: u8, t0: u64) {
        let now = self.utilization.micros(t0);
        self.in_flight.start(stripe, method, now);
        self.utilization.tick(&self.in_flight, now);
    }

    /// Nanoseconds on the layer's clock from its epoch to the raw reading `raw`.
    pub(crate) fn nanos_since_epoch(&self, raw: u64) -> u64 {
        self.config.clock.delta_as_nanos(self.epoch, raw)
    }

    pub(crate) fn names(&self) -> &MetricNames {
        self.handles.names()
    }

    /// What turns a label-set key into tags.
    pub(crate) fn tag_sources(&self) -> TagSources<'_> {
        TagSources {
            routes: &self.routes,
            protocol: self.config.protocol_version,
            scheme: self.config.url_scheme.as_deref(),
            user: &self.labels,
        }
    }

    /// The trace id of a request, from its head (exemplars on; `None` when off).
    #[inline]
    pub(crate) fn trace_id(&self, head: &http::request::Parts) -> Option<TraceId> {
        match self.config.exemplars.as_ref()? {
            TraceIdSource::Traceparent => exemplar::from_headers(&head.headers),
            TraceIdSource::Function(f) => f(head),
        }
    }

    /// The trace id of a request from its headers (exemplars on from `traceparent`; `None`
    /// otherwise: a function of the head needs the head, see [`trace_id`](Self::trace_id)).
    #[inline]
    pub(crate) fn trace_id_from_headers(&self, headers: &http::HeaderMap) -> Option<TraceId> {
        if self.traceparent {
            exemplar::from_headers(headers)
        } else {
            None
        }
    }

    /// Wall-clock nanoseconds since the Unix epoch at the raw reading `raw`.
    pub(crate) fn unix_nanos(&self, raw: u64) -> u64 {
        self.unix_nanos_at_epoch.saturating_add(self.nanos_since_epoch(raw))
    }

    /// Whether any skip predicate leaves this request out.
    #[inline]
    pub(crate) fn skip_by_head(&self, head: &http::request::Parts) -> bool {
        self.config.skip_if.iter().any(|skip| skip(head))
    }
}

impl gauges::Publish for Shared {
    fn publish(&self) {
        self.in_flight.publish();
        self.utilization.publish_resolved(&self.in_flight, self.config.clock.raw());
    }

    fn timed(&self) -> bool {
        self.config.system_clock
    }
}

/// One stripe: a reference to the layer's `Shared`, and the stripe's index. Cache-padded, so
/// that in its `Arc` the counts (written by the requests of the stripe's threads) share no line
/// with another stripe's, nor with the pointer every request reads.
struct Stripe {
    shared: Arc<Shared>,
    index: usize,
}

/// A request's reference to its layer's [`Shared`]: a clone of its thread's stripe (see the
/// module docs). Cloning or dropping it writes only that stripe's count.
pub(crate) struct Lease(Arc<CachePadded<Stripe>>);

impl Lease {
    /// The stripe's index (the stripe of `in_flight` the request counts itself on).
    #[inline]
    pub(crate) fn stripe(&self) -> usize {
        self.0.index
    }
}

impl Clone for Lease {
    #[inline]
    fn clone(&self) -> Self {
        Lease(Arc::clone(&self.0))
    }
}

impl std::ops::Deref for Lease {
    type Target = Shared;

    #[inline]
    fn deref(&self) -> &Shared {
        &self.0.shared
    }
}

/// The stripes of a layer, held by its services: requests lease from them.
pub(crate) struct Leases {
    shared: Arc<Shared>,
    stripes: Box<[Lease]>,
}

impl Leases {
    /// The leases of `shared`'s layer: the ones its live services use, or new ones. The first
    /// time, the layer joins the gauge registry (see `gauges`).
    pub(crate) fn of(shared: &Arc<Shared>) -> Arc<Leases> {
        let mut slot = shared.leases.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(leases) = slot.0.upgrade() {
            return leases;
        }
        let stripes = shared.in_flight.stripes();
        let leases = Arc::new(Leases {
            shared: Arc::clone(shared),
            stripes: (0..stripes)
                .map(|index| {
                    Lease(Arc::new(CachePadded::new(Stripe { shared: Arc::clone(shared), index })))
                })
                .collect(),
        });
        slot.0 = Arc::downgrade(&leases);
        if !slot.1 {
            slot.1 = true;
            let weak: Weak<dyn gauges::Publish> =
                Arc::downgrade(shared) as Weak<dyn gauges::Publish>;
            gauges::register(weak, shared.config.system_clock);
        }
        leases
    }

    /// The layer's `Shared`.
    #[inline]
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// A lease of the calling thread's stripe.
    #[inline]
    pub(crate) fn lease(&self) -> Lease {
        let stripe = in_flight::thread_stripe(self.stripes.len());
        match self.stripes.get(stripe) {
            Some(lease) => lease.clone(),
            // (The stripe count is a power of two, so the index is always in range.)
            None => self.lease_of_first(),
        }
    }

    #[cold]
    fn lease_of_first(&self) -> Lease {
        match self.stripes.first() {
            Some(lease) => lease.clone(),
            None => Lease(Arc::new(CachePadded::new(Stripe {
                shared: Arc::clone(&self.shared),
                index: 0,
            }))),
        }
    }
}
