//! [`VitalsLayer`] and its configuration.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use tower_layer::Layer;

use crate::clock::Clock;
use crate::exemplar::{TraceId, TraceIdSource};
use crate::names::{MetricNames, DEFAULT_PREFIX};
use crate::request_body::{IgnoreRequestBody, MeasureRequestBody};
use crate::service::Vitals;
use crate::shared::{Config, Leases, Shared, DEFAULT_ROUTE_CAP};
use crate::small_blocks::SmallBlockWarning;
use crate::user_labels::{self, LabelError, LabelKey, DEFAULT_LABEL_VALUE_CAP};
use crate::utilization::UtilizationConfig;

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
/// [`VitalsLayer::new`] is the layer with the defaults; [`VitalsLayer::builder`] configures one:
///
/// ```
/// use tower_vitals::VitalsLayer;
/// let layer = VitalsLayer::builder()
///     .prefix("myapp.http")     // metric names: myapp.http.requests, ...
///     .route_cap(256)           // at most 256 distinct routes, then `overflow`
///     .build();
/// # let _ = layer;
/// ```
///
/// The layer's state (route table, handle cache, in-flight counts) is built once, by
/// [`build`](VitalsLayerBuilder::build); clones of a layer share it.
///
/// The type parameter says whether request bodies are measured too; it is
/// [`IgnoreRequestBody`] unless the builder was told
/// [`measure_request_body`](VitalsLayerBuilder::measure_request_body).
pub struct VitalsLayer<M = IgnoreRequestBody> {
    shared: Arc<Shared>,
    mode: PhantomData<fn() -> M>,
}

/// Configures a [`VitalsLayer`]: made by [`VitalsLayer::builder`], turned into the layer once by
/// [`build`](Self::build).
///
/// Every setting is checked where it is given: the ones that can be wrong
/// ([`label`](Self::label), [`label_from_request`](Self::label_from_request),
/// [`label_value_cap`](Self::label_value_cap)) return a [`LabelError`]; the others are always
/// valid, and `build` cannot fail.
pub struct VitalsLayerBuilder<M = IgnoreRequestBody> {
    config: Config,
    mode: PhantomData<fn() -> M>,
}

impl VitalsLayer<IgnoreRequestBody> {
    /// A layer with the defaults (the same as `VitalsLayer::builder().build()`): prefix
    /// `http.server`, route cap 1024, request bodies not measured, the system [`Clock`],
    /// `utilization` as average concurrency over 10 s windows, gRPC paths not used as routes,
    /// the default [`SmallBlockWarning`].
    pub fn new() -> Self {
        VitalsLayer::builder().build()
    }

    /// A builder with the defaults of [`new`](Self::new), to change some of them.
    pub fn builder() -> VitalsLayerBuilder<IgnoreRequestBody> {
        VitalsLayerBuilder {
            config: Config {
                prefix: DEFAULT_PREFIX.to_owned(),
                route_cap: DEFAULT_ROUTE_CAP,
                clock: Clock::new(),
                utilization: UtilizationConfig::default(),
                grpc_routes: false,
                small_blocks: Some(SmallBlockWarning::default()),
                skip_if: Vec::new(),
                skip_routes: Vec::new(),
                label_keys: Vec::new(),
                label_value_cap: DEFAULT_LABEL_VALUE_CAP,
                protocol_version: true,
                url_scheme: Some("http".to_owned()),
                system_clock: true,
                exemplars: None,
            },
            mode: PhantomData,
        }
    }
}

impl Default for VitalsLayer<IgnoreRequestBody> {
    fn default() -> Self {
        Self::new()
    }
}

impl<M> VitalsLayerBuilder<M> {
    /// Builds the layer: its route table, handle cache and counters, once. Clone the layer to
    /// use it on several services with one set of metrics state.
    pub fn build(self) -> VitalsLayer<M> {
        VitalsLayer { shared: Arc::new(Shared::new(self.config)), mode: PhantomData }
    }

    /// The metric-name prefix (default `http.server`): names become `{prefix}.requests`,
    /// `{prefix}.request.duration`, ... Characters other than ASCII letters, digits, `_` and `.`
    /// become `_`; an empty prefix falls back to the default. Prometheus shows dots as `_`.
    pub fn prefix(mut self, prefix: impl AsRef<str>) -> Self {
        self.config.prefix = sanitize_prefix(prefix.as_ref());
        self
    }

    /// The most distinct `http.route` values the layer will emit (default 1024). Names seen
    /// after the cap is reached are tagged `overflow`; requests without a name, `unmatched`. So a
    /// layer emits at most `cap + 2` route values, whatever its clients send. A cap of 0 is
    /// allowed (every named route becomes `overflow`).
    pub fn route_cap(mut self, cap: usize) -> Self {
        self.config.route_cap = cap;
        self
    }

    /// The clock to time with (default: [`Clock::new`], the system clock). Tests pass a
    /// [`Clock::mock`] to get exact, sleep-free durations. The background thread that publishes
    /// the gauges once a second leaves a layer with a clock of its own alone (its time moves when
    /// you move it): publish with [`publish_gauges`](crate::publish_gauges).
    pub fn clock(mut self, clock: Clock) -> Self {
        self.config.clock = clock;
        self.config.system_clock = false;
        self
    }

    /// Also measure request bodies: `input_blocks`, `input_bytes` and `input_time`, from the
    /// frames the service actually reads. The inner service then receives
    /// [`RequestBody<B>`](crate::RequestBody) bodies.
    pub fn measure_request_body(self) -> VitalsLayerBuilder<MeasureRequestBody> {
        VitalsLayerBuilder { config: self.config, mode: PhantomData }
    }

    /// The number of requests the service can run at once (the concurrency limit it runs with,
    /// e.g. `tower::limit::ConcurrencyLimitLayer`'s, or worker threads for blocking handlers).
    /// With it, the `utilization` gauge is busy time / (`capacity` × window): 1.0 means every
    /// slot was busy the whole window. Without it (the default), `utilization` is the average
    /// number of requests in flight over the window. A capacity of 0 counts as 1.
    ///
    /// See [`utilization_window`](Self::utilization_window) for when the gauge is updated.
    pub fn capacity(mut self, capacity: u32) -> Self {
        self.config.utilization.capacity = Some(capacity);
        self
    }

    /// The shortest window `utilization` is computed over (default 10 s, statsd's default flush
    /// interval; at least 1 µs). A window closes at the first request start or finish, gauge
    /// publication ([`publish_gauges`](crate::publish_gauges): every render of the crate's
    /// `/metrics` and live page, and a background thread once a second) or
    /// [`publish_utilization`](VitalsLayer::publish_utilization) call, at least this long after
    /// the previous close; the gauge is then set to the window's value. So with no traffic the
    /// next window still closes (at the next scrape, or within a second of being due) and reads
    /// 0. A layer with a [`clock`](Self::clock) of your own is published on demand only.
    pub fn utilization_window(mut self, window: std::time::Duration) -> Self {
        self.config.utilization.window = window;
        self
    }

    /// Use the request path as the route of gRPC requests (`content-type: application/grpc...`)
    /// that carry no route name: `/pkg.Service/Method`, as gRPC defines it. Off by default.
    ///
    /// Only paths of that shape count (two non-empty segments of ASCII letters, digits, `_` and
    /// `.`; anything else is `unmatched`), and they are admitted under the same
    /// [`route_cap`](Self::route_cap) as every route. Plain HTTP requests never use their path.
    /// Turn it on for a tonic server
    /// (`Server::builder().layer(VitalsLayer::builder().grpc_routes().build())`): the layer sits
    /// outside tonic's router, so no route template is known there otherwise.
    pub fn grpc_routes(mut self) -> Self {
        self.config.grpc_routes = true;
        self
    }

    /// The small-block warning's settings (on by default with [`SmallBlockWarning::default`]).
    pub fn small_block_warning(mut self, warning: SmallBlockWarning) -> Self {
        self.config.small_blocks = Some(warning);
        self
    }

    /// Turns the small-block warning off (no per-route sums are kept).
    pub fn without_small_block_warning(mut self) -> Self {
        self.config.small_blocks = None;
        self
    }

    /// Leaves out the requests for which `skip` returns `true`: they pass through untouched and
    /// unmeasured (no metric, not in `active_requests` or `utilization`; the body is still a
    /// [`ResponseBody`](crate::ResponseBody), passed through). `skip` sees the request head
    /// (method, URI, version, headers, extensions) when `call` runs, before anything is measured.
    /// With several predicates, any `true` skips.
    ///
    /// ```
    /// use tower_vitals::VitalsLayer;
    /// let layer = VitalsLayer::builder()
    ///     .skip_if(|req: &http::request::Parts| req.uri.path().starts_with("/static/"))
    ///     .build();
    /// # let _ = layer;
    /// ```
    pub fn skip_if<F>(mut self, skip: F) -> Self
    where
        F: Fn(&http::request::Parts) -> bool + Send + Sync + 'static,
    {
        self.config.skip_if.push(Arc::new(skip));
        self
    }

    /// Leaves out the requests whose route is one of `routes`, compared with the route value
    /// the layer would tag (axum's `MatchedPath`, a [`RouteName`](crate::RouteName) request
    /// extension, the gRPC method path with [`grpc_routes`](Self::grpc_routes)), whole and as
    /// given, before sanitising. [`UNMATCHED`](crate::labels::UNMATCHED) leaves out requests with
    /// no route. These names take no place under the [`route_cap`](Self::route_cap).
    ///
    /// A `RouteName` set on the *response* that names one of them drops the request from the
    /// metrics when the head arrives (it was counted in `active_requests` until then).
    ///
    /// ```
    /// use tower_vitals::VitalsLayer;
    /// let layer = VitalsLayer::builder().skip_routes(["/healthz", "/metrics"]).build();
    /// # let _ = layer;
    /// ```
    pub fn skip_routes<I>(mut self, routes: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.config.skip_routes.extend(routes.into_iter().map(Into::into));
        self
    }

    /// Adds the label `key`, whose value comes from a [`Label`](crate::Label) (or
    /// [`Labels`](crate::Labels)) extension: on the response (set by the handler), else on the
    /// request (set by a middleware in front of the layer), else `none`
    /// ([`NO_VALUE`](crate::labels::NO_VALUE)).
    ///
    /// ```
    /// use tower_vitals::{Label, VitalsLayer};
    /// let layer = VitalsLayer::builder().label("cache")?.build();
    /// // in the handler:
    /// let mut res = http::Response::new(());
    /// Label::new("cache", "hit").add_to(res.extensions_mut());
    /// # let _ = layer;
    /// # Ok::<(), tower_vitals::LabelError>(())
    /// ```
    ///
    /// Each key keeps at most [`label_value_cap`](Self::label_value_cap) distinct values (32 by
    /// default), then `overflow`; values are sanitised once, when first seen.
    ///
    /// # Errors
    /// [`LabelError`] if the layer already has [`MAX_LABELS`](crate::MAX_LABELS) keys, if `key`
    /// is one of the layer's own tag keys (or `le`, `quantile`), is already a key of this layer,
    /// or is not made of ASCII letters, digits, `_` and `.`.
    pub fn label(self, key: impl Into<String>) -> Result<Self, LabelError> {
        self.add_label(key.into(), None)
    }

    /// Adds the label `key`, whose value `value` takes from the request head when `call` runs
    /// (return a value borrowed from the head, or a `'static` str: no allocation). A
    /// [`Label`](crate::Label) extension with the same key, on the request or the response,
    /// wins over it. `None` or an empty value: `none` ([`NO_VALUE`](crate::labels::NO_VALUE)).
    ///
    /// ```
    /// use tower_vitals::VitalsLayer;
    /// let layer = VitalsLayer::builder()
    ///     .label_from_request("api.version", |req: &http::request::Parts| {
    ///         req.headers.get("x-api-version")?.to_str().ok()
    ///     })?
    ///     .build();
    /// # let _ = layer;
    /// # Ok::<(), tower_vitals::LabelError>(())
    /// ```
    ///
    /// A closure written in place, as above, gets the right signature. To store one in a
    /// variable first, wrap it in [`label_fn`](crate::label_fn).
    ///
    /// # Errors
    /// As [`label`](Self::label).
    pub fn label_from_request<F>(self, key: impl Into<String>, value: F) -> Result<Self, LabelError>
    where
        F: for<'a> Fn(&'a http::request::Parts) -> Option<&'a str> + Send + Sync + 'static,
    {
        self.add_label(key.into(), Some(Arc::new(value)))
    }

    fn add_label(
        mut self,
        key: String,
        from_request: Option<user_labels::FromRequest>,
    ) -> Result<Self, LabelError> {
        user_labels::check_key(&key, &self.config.label_keys)?;
        self.config.label_keys.push(LabelKey { name: Arc::from(key), from_request });
        Ok(self)
    }

    /// The most distinct values each label key of the user's own keeps (default 32, at most
    /// [`MAX_LABEL_VALUE_CAP`](crate::MAX_LABEL_VALUE_CAP)). Values seen after the cap are tagged
    /// `overflow`, so a key has at most `cap + 2` values (with `none` and `overflow`).
    ///
    /// # Errors
    /// [`LabelError::ValueCapTooLarge`] for a cap above
    /// [`MAX_LABEL_VALUE_CAP`](crate::MAX_LABEL_VALUE_CAP).
    pub fn label_value_cap(mut self, cap: usize) -> Result<Self, LabelError> {
        user_labels::check_value_cap(cap)?;
        self.config.label_value_cap = cap;
        Ok(self)
    }

    /// Stops emitting the `network.protocol.version` tag (on by default).
    pub fn without_protocol_version(mut self) -> Self {
        self.config.protocol_version = false;
        self
    }

    /// Stops emitting the `url.scheme` tag (on by default).
    pub fn without_url_scheme(mut self) -> Self {
        self.config.url_scheme = None;
        self
    }

    /// The `url.scheme` of requests whose URI carries no `http`/`https` scheme (HTTP/1 servers
    /// see origin-form URIs; HTTP/2 servers set the scheme): default `http`. Behind a proxy that
    /// terminates TLS, pass `http::uri::Scheme::HTTPS`. Turns the tag on if it was off.
    pub fn url_scheme(mut self, scheme: http::uri::Scheme) -> Self {
        self.config.url_scheme = Some(crate::labels::sanitize_tag_value(scheme.as_str()));
        self
    }

    /// Turns exemplars on: each request's trace id, from its W3C `traceparent` header, goes
    /// with its `requests`, `request.duration` and `application_time` recordings, so that a
    /// recorder that keeps exemplars (this crate's Prometheus recorder) can show, on the bucket
    /// a request landed in, the trace of a request that was that slow. Headers that are not a
    /// valid `traceparent` (wrong length, uppercase, all-zero ids, ...) are ignored. Other
    /// recorders see no difference. Off by default; see
    /// [`exemplars_from`](Self::exemplars_from) to take the trace id from elsewhere.
    ///
    /// ```
    /// use tower_vitals::VitalsLayer;
    /// let layer = VitalsLayer::builder().exemplars().build();
    /// # let _ = layer;
    /// ```
    pub fn exemplars(mut self) -> Self {
        self.config.exemplars = Some(TraceIdSource::Traceparent);
        self
    }

    /// Turns exemplars on (see [`exemplars`](Self::exemplars)) with each request's trace id
    /// from `trace_id`, a function of the request head called when `call` runs: for example
    /// the trace id of the current OpenTelemetry span, or a header of your own.
    ///
    /// ```
    /// use tower_vitals::{TraceId, VitalsLayer};
    /// let layer = VitalsLayer::builder()
    ///     .exemplars_from(|req: &http::request::Parts| {
    ///         TraceId::from_hex(req.headers.get("x-trace-id")?.to_str().ok()?)
    ///     })
    ///     .build();
    /// # let _ = layer;
    /// ```
    pub fn exemplars_from<F>(mut self, trace_id: F) -> Self
    where
        F: Fn(&http::request::Parts) -> Option<TraceId> + Send + Sync + 'static,
    {
        self.config.exemplars = Some(TraceIdSource::Function(Arc::new(trace_id)));
        self
    }
}

impl Default for VitalsLayerBuilder<IgnoreRequestBody> {
    fn default() -> Self {
        VitalsLayer::builder()
    }
}

impl<M> Clone for VitalsLayerBuilder<M> {
    fn clone(&self) -> Self {
        VitalsLayerBuilder { config: self.config.clone(), mode: PhantomData }
    }
}

impl<M> fmt::Debug for VitalsLayerBuilder<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VitalsLayerBuilder")
            .field("prefix", &self.config.prefix)
            .field("route_cap", &self.config.route_cap)
            .field("mode", &std::any::type_name::<M>())
            .finish_non_exhaustive()
    }
}

impl<M> VitalsLayer<M> {
    /// Closes the current `utilization` window now, if it is at least one window long: sets the
    /// gauge and returns its value (`None`: the window is not due yet, or another thread is
    /// publishing it). [`publish_gauges`](crate::publish_gauges) does this for every layer (and
    /// publishes `active_requests`); this call is for reading one layer's value.
    pub fn publish_utilization(&self) -> Option<f64> {
        self.shared.utilization.publish(&self.shared.in_flight, self.shared.config.clock.raw())
    }

    /// Busy time so far (the integral of requests in flight over time), through this layer and
    /// its clones, at 1 µs resolution.
    pub fn busy_time(&self) -> std::time::Duration {
        let micros = self
            .shared
            .utilization
            .busy_micros(&self.shared.in_flight, self.shared.config.clock.raw());
        std::time::Duration::from_micros(micros)
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

    /// Requests in flight right now, through this layer and its clones (the sum of the
    /// per-thread counts, exact when read).
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
        self.shared.utilization.announce();
        Vitals::new(inner, Leases::of(&self.shared))
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
        let layer = VitalsLayer::builder().prefix("x y").build();
        assert_eq!(layer.metric_names().requests, "x_y.requests");
    }
}
