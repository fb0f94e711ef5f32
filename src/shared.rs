//! What every service, future and body of one layer share: its settings and its state.

use crate::handles::HandleCache;
use crate::in_flight::InFlight;
use crate::names::MetricNames;
use crate::routes::RouteTable;
use crate::small_blocks::{SmallBlockWarning, SmallBlocks};
use crate::utilization::{Utilization, UtilizationConfig};

/// The default cap on distinct `http.route` values (see
/// [`VitalsLayer::route_cap`](crate::VitalsLayer::route_cap)).
pub const DEFAULT_ROUTE_CAP: usize = 1024;

/// Handle sets cached per route admitted, at most (past it: resolved per request, not cached).
const HANDLE_SETS_PER_ROUTE: usize = 32;

/// What every service, future and body of one layer share.
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) routes: RouteTable,
    pub(crate) handles: HandleCache,
    pub(crate) in_flight: InFlight,
    pub(crate) utilization: Utilization,
    /// Per-route block sums for the small-block warning (`None`: turned off).
    pub(crate) small_blocks: Option<SmallBlocks>,
    /// Raw clock reading when the layer was built: time 0 of the utilisation and warning clocks.
    pub(crate) epoch: u64,
}

/// The layer's settings.
#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) prefix: String,
    pub(crate) route_cap: usize,
    pub(crate) clock: quanta::Clock,
    pub(crate) utilization: UtilizationConfig,
    pub(crate) grpc_routes: bool,
    pub(crate) small_blocks: Option<SmallBlockWarning>,
}

impl Shared {
    pub(crate) fn new(config: Config) -> Self {
        let names = MetricNames::new(&config.prefix);
        let cap = config.route_cap;
        let epoch = config.clock.raw();
        let in_flight = InFlight::new(names.active_requests.clone());
        let utilization = Utilization::new(
            config.clock.clone(),
            &config.utilization,
            names.utilization.clone(),
            epoch,
        );
        Shared {
            routes: RouteTable::new(cap),
            handles: HandleCache::new(names, (cap + 2).saturating_mul(HANDLE_SETS_PER_ROUTE)),
            in_flight,
            utilization,
            small_blocks: config.small_blocks.map(|s| SmallBlocks::new(s, cap)),
            epoch,
            config,
        }
    }

    /// Nanoseconds on the layer's clock from its epoch to the raw reading `raw`.
    pub(crate) fn nanos_since_epoch(&self, raw: u64) -> u64 {
        self.config.clock.delta_as_nanos(self.epoch, raw)
    }

    pub(crate) fn names(&self) -> &MetricNames {
        self.handles.names()
    }
}
