//! Requests in flight: the `active_requests` gauge, by method.
//!
//! The layer counts in-flight requests per method in its own atomics and publishes the count
//! with `Gauge::set`, never `increment`/`decrement`: statsd exporters drop relative gauge updates,
//! and a set of the true count is right on every backend.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::OnceLock;

use metrics::{Gauge, Label};

use crate::labels::{self, METHOD_COUNT};

/// Keeps a value written by every request on a cache line of its own (128 bytes: two 64-byte
/// lines, as adjacent-line prefetchers pair them), so that writing it does not take the line of
/// read-mostly data (the clock, the tables, the gauge handles) away from other cores.
#[repr(align(128))]
pub(crate) struct OwnLine<T>(pub(crate) T);

/// In-flight counts by method, and their gauges (resolved on first use).
pub(crate) struct InFlight {
    /// Written twice per request (start, finish): apart from everything only read.
    counts: OwnLine<[AtomicI64; METHOD_COUNT]>,
    gauges: [OnceLock<Gauge>; METHOD_COUNT],
    /// `{prefix}.active_requests`.
    name: String,
}

impl InFlight {
    pub(crate) fn new(name: String) -> Self {
        InFlight {
            counts: OwnLine(std::array::from_fn(|_| AtomicI64::new(0))),
            gauges: std::array::from_fn(|_| OnceLock::new()),
            name,
        }
    }

    /// A request of `method` started.
    #[inline]
    pub(crate) fn start(&self, method: u8) {
        self.change(method, 1);
    }

    /// A request of `method` finished.
    #[inline]
    pub(crate) fn finish(&self, method: u8) {
        self.change(method, -1);
    }

    /// In flight now, all methods.
    pub(crate) fn total(&self) -> i64 {
        self.counts.0.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    fn change(&self, method: u8, delta: i64) {
        let i = usize::from(method).min(METHOD_COUNT - 1);
        let (Some(count), Some(gauge)) = (self.counts.0.get(i), self.gauges.get(i)) else {
            return;
        };
        count.fetch_add(delta, Ordering::SeqCst);
        let gauge = gauge.get_or_init(|| {
            let labels = [Label::new(labels::METHOD, labels::method_label(method))];
            metrics::gauge!(self.name.clone(), labels.iter())
        });
        // Publish until what we set is still the count after setting it. Whichever thread sets
        // last re-reads the final count, so when requests stop the gauge equals the count; two
        // racing threads can otherwise leave a stale value behind for good.
        let mut seen = count.load(Ordering::SeqCst);
        loop {
            gauge.set(seen as f64);
            let now = count.load(Ordering::SeqCst);
            if now == seen {
                break;
            }
            seen = now;
        }
    }
}
