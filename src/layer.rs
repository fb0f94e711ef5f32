//! [`VitalsLayer`] and its configuration.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use tower_layer::Layer;

use crate::handles::{HandleCache, MetricNames, DEFAULT_PREFIX};
use crate::labels::RouteTable;
use crate::request_body::{IgnoreRequestBody, MeasureRequestBody};
use crate::service::Vitals;
use crate::utilization::InFlight;

/// The default cap on distinct `http.route` values (see [`VitalsLayer::route_cap`]).
pub const DEFAULT_ROUTE_CAP: usize = 1024;

/// Handle sets cached per route admitted, at most (past it: resolved per request, not cached).
const HANDLE_SETS_PER_ROUTE: usize = 32;

/// A Tower [`Layer`] that measures every request of the service it wraps.
///
/// For each request it records, once, when the response body ends, fails or is dropped:
/// the `requests` counter and the `request.duration`, `application_time`, `output_time`,
/// `output_blocks` and `output_bytes` histograms, tagged with the route template, method,
/// status and (on failure) `error.type`; and it keeps the `active_requests` gauge. See the
/// [crate documentation](crate) for when each value is taken.
///
/// The layer talks only to the [`metrics`] facade: install any recorder (Prometheus, statsd,
/// DogStatsD, or a `Fanout` of several). Handles are resolved through the recorder that is
/// current when a label set is first seen, and cached in this layer (and its clones); two
/// layers never share a cache.
///
/// ```
/// use tower_vitals::VitalsLayer;
/// let layer = VitalsLayer::new()
///     .prefix("myapp.http")     // metric names: myapp.http.requests, ...
///     .route_cap(256);          // at most 256 distinct routes, then `overflow`
/// # let _ = layer;
/// ```
///
/// The type parameter says whether request bodies are measured too; it starts as
/// [`IgnoreRequestBody`] and becomes [`MeasureRequestBody`] with
/// [`measure_request_body`](VitalsLayer::measure_request_body).
pub struct VitalsLayer<M = IgnoreRequestBody> {
    shared: Arc<Shared>,
    mode: PhantomData<fn() -> M>,
}

/// What every service, future and body of one layer share.
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) routes: RouteTable,
    pub(crate) handles: HandleCache,
    pub(crate) in_flight: InFlight,
}

/// The layer's settings.
#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) prefix: String,
    pub(crate) route_cap: usize,
    pub(crate) clock: quanta::Clock,
}

impl Shared {
    fn new(config: Config) -> Self {
        let names = MetricNames::new(&config.prefix);
        let cap = config.route_cap;
        Shared {
            routes: RouteTable::new(cap),
            handles: HandleCache::new(names, (cap + 2).saturating_mul(HANDLE_SETS_PER_ROUTE)),
            in_flight: InFlight::new(),
            config,
        }
    }

    pub(crate) fn names(&self) -> &MetricNames {
        self.handles.names()
    }
}

impl VitalsLayer<IgnoreRequestBody> {
    /// A layer with the defaults: prefix `http.server`, route cap 1024, request bodies not
    /// measured, the system clock (`quanta`).
    pub fn new() -> Self {
        VitalsLayer::from_config(Config {
            prefix: DEFAULT_PREFIX.to_owned(),
            route_cap: DEFAULT_ROUTE_CAP,
            clock: quanta::Clock::new(),
        })
    }
}

impl Default for VitalsLayer<IgnoreRequestBody> {
    fn default() -> Self {
        Self::new()
    }
}

impl<M> VitalsLayer<M> {
    fn from_config(config: Config) -> Self {
        VitalsLayer { shared: Arc::new(Shared::new(config)), mode: PhantomData }
    }

    fn reconfigure(self, change: impl FnOnce(&mut Config)) -> Self {
        let mut config = self.shared.config.clone();
        change(&mut config);
        VitalsLayer::from_config(config)
    }

    /// The metric-name prefix (default `http.server`): names become `{prefix}.requests`,
    /// `{prefix}.request.duration`, ... Characters other than ASCII letters, digits, `_` and `.`
    /// become `_`; an empty prefix falls back to the default. Prometheus shows dots as `_`.
    pub fn prefix(self, prefix: impl AsRef<str>) -> Self {
        let prefix = sanitize_prefix(prefix.as_ref());
        self.reconfigure(|c| c.prefix = prefix)
    }

    /// The most distinct `http.route` values this layer will emit (default 1024). Names seen
    /// after the cap is reached are tagged `overflow`; requests without a name, `unmatched`. So a
    /// layer emits at most `cap + 2` route values, whatever its clients send. A cap of 0 is
    /// allowed (every named route becomes `overflow`).
    pub fn route_cap(self, cap: usize) -> Self {
        self.reconfigure(|c| c.route_cap = cap)
    }

    /// The clock to time with (default: `quanta::Clock::new()`). Tests pass
    /// `quanta::Clock::mock()` to get exact, sleep-free durations.
    pub fn clock(self, clock: quanta::Clock) -> Self {
        self.reconfigure(|c| c.clock = clock)
    }

    /// Also measure request bodies: `input_blocks`, `input_bytes` and `input_time`, from the
    /// frames the service actually reads. The inner service then receives
    /// [`RequestBody<B>`](crate::RequestBody) bodies.
    pub fn measure_request_body(self) -> VitalsLayer<MeasureRequestBody> {
        VitalsLayer { shared: self.shared, mode: PhantomData }
    }

    /// The metric names this layer emits (after the prefix was applied).
    pub fn metric_names(&self) -> &MetricNames {
        self.shared.names()
    }

    /// Distinct route names admitted so far (not counting `unmatched` and `overflow`).
    pub fn routes_seen(&self) -> usize {
        self.shared.routes.len()
    }

    /// Label sets whose handles are cached (a measure of the layer's memory use).
    pub fn cached_label_sets(&self) -> usize {
        self.shared.handles.len()
    }

    /// Requests in flight right now, through this layer and its clones.
    pub fn active_requests(&self) -> i64 {
        self.shared.in_flight.total()
    }
}

fn sanitize_prefix(prefix: &str) -> String {
    let cleaned: String = prefix
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '.' { c } else { '_' })
        .collect();
    let trimmed = cleaned.trim_matches('.');
    if trimmed.is_empty() {
        DEFAULT_PREFIX.to_owned()
    } else {
        trimmed.to_owned()
    }
}

impl<M> Clone for VitalsLayer<M> {
    fn clone(&self) -> Self {
        VitalsLayer { shared: Arc::clone(&self.shared), mode: PhantomData }
    }
}

impl<M> fmt::Debug for VitalsLayer<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VitalsLayer")
            .field("prefix", &self.shared.config.prefix)
            .field("route_cap", &self.shared.config.route_cap)
            .field("mode", &std::any::type_name::<M>())
            .finish()
    }
}

impl<S, M> Layer<S> for VitalsLayer<M> {
    type Service = Vitals<S, M>;

    fn layer(&self, inner: S) -> Self::Service {
        Vitals::new(inner, Arc::clone(&self.shared))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_is_sanitised() {
        assert_eq!(sanitize_prefix("my app.http"), "my_app.http");
        assert_eq!(sanitize_prefix(""), DEFAULT_PREFIX);
        assert_eq!(sanitize_prefix("..."), DEFAULT_PREFIX);
        assert_eq!(sanitize_prefix("a|b:c"), "a_b_c");
        let layer = VitalsLayer::new().prefix("x y");
        assert_eq!(layer.metric_names().requests, "x_y.requests");
    }
}
