//! When the layer gauges (`active_requests`, `utilization`) are published: at read, and once a
//! second in the background.
//!
//! Requests count themselves in flight on their thread's stripe (see `in_flight`) and set no
//! gauge: a gauge shows the sum of every stripe, which only a reader should pay for. So the
//! gauges of every live layer are published:
//! - by [`publish_gauges`]: the crate's own renders (the Prometheus `/metrics` and the live
//!   page's snapshot) call it before they read, so a scrape reads the exact count in flight
//!   and a `utilization` window that is due closes at the scrape;
//! - once a second by one background thread (`tower-vitals-gauges`), for recorders that push
//!   rather than being read (statsd, DogStatsD, a user's own): started when the first layer on
//!   the system clock wraps a service, it ends by itself once no such layer is left (a layer
//!   given its own clock, such as a test's mock, is published only on demand: its time moves
//!   when its owner moves it);
//! - the first request of a method publishes that method's gauge (so the series exists from
//!   the first request on).
//!
//! The registry holds weak references only: it never keeps a dropped layer alive, and it is
//! read only when publishing (a lock taken once per publication, never by a request).

use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

/// How often the background thread publishes the gauges of layers on the system clock.
pub(crate) const PUBLISH_PERIOD: Duration = Duration::from_secs(1);

/// A layer whose gauges can be published.
pub(crate) trait Publish: Send + Sync {
    /// Sets `active_requests` of every method seen to the count in flight now, and closes the
    /// `utilization` window if one is due. Uses only gauges already resolved by requests (never
    /// resolves one through the publishing thread's recorder).
    fn publish(&self);
    /// Whether the background thread publishes this layer (its clock is the system's).
    fn timed(&self) -> bool;
}

struct Registry {
    layers: Vec<Weak<dyn Publish>>,
    /// The background thread is running (or being started).
    timer: bool,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry { layers: Vec::new(), timer: false });

fn registry() -> std::sync::MutexGuard<'static, Registry> {
    // A panic while publishing (a recorder's) leaves the list itself intact.
    REGISTRY.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Adds a layer (when it first wraps a service). Drops entries of layers gone since, and
/// starts the background thread if the layer is timed and the thread is not running.
pub(crate) fn register(layer: Weak<dyn Publish>, timed: bool) {
    let mut registry = registry();
    registry.layers.retain(|l| l.strong_count() > 0);
    registry.layers.push(layer);
    if timed && !registry.timer {
        let started = std::thread::Builder::new()
            .name("tower-vitals-gauges".into())
            .spawn(|| background(PUBLISH_PERIOD));
        // No thread (a platform without threads, or out of resources): the gauges are still
        // published at every read; push backends then see them only when a render reads.
        registry.timer = started.is_ok();
    }
}

/// The live layers (strong references taken under the lock, published outside it).
fn live(only_timed: bool) -> Vec<Arc<dyn Publish>> {
    let mut registry = registry();
    registry.layers.retain(|l| l.strong_count() > 0);
    registry.layers.iter().filter_map(Weak::upgrade).filter(|l| !only_timed || l.timed()).collect()
}

/// Publishes `active_requests` and `utilization` of every live layer now.
///
/// The crate's own Prometheus render and live snapshot call this before reading, so what they
/// show is exact; a background thread also calls it once a second, for push exporters. Call it
/// yourself before reading the gauges from another recorder (metrics-exporter-prometheus, or
/// metrics-util's `DebuggingRecorder` in tests) when you need the count in flight at that very
/// moment rather than up to a second ago.
///
/// `active_requests` is set to the requests in flight (the sum of the layer's per-thread
/// counts); the `utilization` window closes if it is at least one window long (see
/// [`VitalsLayerBuilder::utilization_window`](crate::VitalsLayerBuilder::utilization_window)). Gauges are set
/// through the recorder each was first resolved with (by a request), whatever the recorder of
/// the calling thread. Publications of one layer are serialised, so the last value set is the
/// last one read.
pub fn publish_gauges() {
    for layer in live(false) {
        layer.publish();
    }
}

/// The background thread: publishes timed layers every `period`, ends when none is left.
fn background(period: Duration) {
    loop {
        std::thread::sleep(period);
        let layers = live(true);
        if layers.is_empty() {
            let mut registry = registry();
            // Re-check under the lock: a layer registered since then finds the timer running
            // and does not start another.
            if !registry.layers.iter().any(|l| l.upgrade().is_some_and(|l| l.timed())) {
                registry.timer = false;
                return;
            }
            continue;
        }
        for layer in layers {
            layer.publish();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Counting(AtomicUsize, bool);

    impl Publish for Counting {
        fn publish(&self) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
        fn timed(&self) -> bool {
            self.1
        }
    }

    #[test]
    fn the_registry_publishes_live_layers_and_forgets_dropped_ones() {
        let kept = Arc::new(Counting(AtomicUsize::new(0), false));
        let dropped = Arc::new(Counting(AtomicUsize::new(0), false));
        let weak: Weak<dyn Publish> = Arc::downgrade(&kept) as Weak<dyn Publish>;
        register(weak, false);
        let weak: Weak<dyn Publish> = Arc::downgrade(&dropped) as Weak<dyn Publish>;
        register(weak, false);
        publish_gauges();
        assert!(kept.0.load(Ordering::Relaxed) >= 1);
        assert!(dropped.0.load(Ordering::Relaxed) >= 1);
        let probe = Arc::downgrade(&dropped);
        drop(dropped);
        assert!(probe.upgrade().is_none(), "the registry holds no strong reference");
        publish_gauges();
        assert!(
            registry().layers.iter().all(|l| l.strong_count() > 0),
            "dropped layers are removed at the next publication"
        );
    }
}
