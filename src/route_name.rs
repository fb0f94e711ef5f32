//! [`RouteName`]: the request (or response) extension that names the route of a request.

use std::sync::atomic::{AtomicBool, Ordering};

/// The name of the route that served a request, as a request (or response) extension.
///
/// Use it where no router supplies a template: a plain hyper service, a tower `Steer`, or to
/// override axum's `MatchedPath`. Put a *template* here (`/users/{id}`), never the raw path: the
/// number of distinct values is capped (see [`VitalsLayerBuilder::route_cap`](crate::VitalsLayerBuilder::route_cap)),
/// and values past the cap are all counted as `overflow`.
///
/// The layer reads it from the request's extensions when `call` runs, and from the response's
/// extensions when the head arrives (so a handler or an inner middleware can name its route).
///
/// ```
/// use tower_vitals::RouteName;
/// let mut req = http::Request::new(());
/// req.extensions_mut().insert(RouteName::new("/users/{id}"));
/// let dynamic = RouteName::new(format!("/v{}/items", 2));
/// assert_eq!(dynamic.as_str(), "/v2/items");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RouteName(std::borrow::Cow<'static, str>);

impl RouteName {
    /// A route name from a `&'static str` (no allocation) or a `String`.
    pub fn new(name: impl Into<std::borrow::Cow<'static, str>>) -> Self {
        // A load first: a service that makes a name per request writes the shared flag once.
        if !ROUTE_NAMES_MADE.load(Ordering::Relaxed) {
            ROUTE_NAMES_MADE.store(true, Ordering::Relaxed);
        }
        RouteName(name.into())
    }

    /// The route name as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Whether this process has made any [`RouteName`] (they are made only by [`RouteName::new`]).
static ROUTE_NAMES_MADE: AtomicBool = AtomicBool::new(false);

/// Whether a request or response may carry a [`RouteName`]: false until the first one is made,
/// so that services that never name routes skip that extension lookup (a type-map search per
/// message). A name made on one thread reaches another only through the synchronisation that
/// hands over its request, which also makes the flag's store visible there.
#[inline]
pub(crate) fn route_names_exist() -> bool {
    ROUTE_NAMES_MADE.load(Ordering::Relaxed)
}
