//! Requests in flight, by method: the `active_requests` gauge and the busy-time integral, kept
//! together in one atomic word per method.
//!
//! The layer counts in-flight requests per method in its own atomics and publishes the count
//! with `Gauge::set`, never `increment`/`decrement`: statsd exporters drop relative gauge updates,
//! and a set of the true count is right on every backend.
//!
//! The same word carries the busy time, the area under the in-flight curve (`∫ n(t) dt`, in
//! request-microseconds, read by `utilization`): the area up to `now` is the sum over requests of
//! `min(end, now) − start`, that is `(Σ ends − Σ starts) + n × now`. A word holds
//! `Σ ends − Σ starts` (microseconds since the layer was built, modulo 2^44) in its high 44 bits
//! and `n` in its low 20 bits: a start adds `−t·2^20 + 1`, a finish `t·2^20 − 1`. So a start or
//! a finish is ONE atomic add, which returns the new count for the gauge and keeps the integral
//! exact: no compare-and-swap loop (which would retry under contention), no second word to keep
//! in step, and the order in which threads land their adds does not matter (the sum is the same).
//! The busy time of the layer is the sum of the methods' words, read once per `utilization`
//! window.
//!
//! Limits, documented rather than checked on the hot path: at most 2^20 − 1 (1 048 575) requests
//! of one method in flight (more would carry into the time sum); times have 1 µs resolution.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use metrics::{Gauge, Label};

use crate::labels::{self, METHOD_COUNT};

const COUNT_BITS: u32 = 20;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;
const TIME_BITS: u32 = 64 - COUNT_BITS;
/// The busy-time field's range: busy times are read modulo `TIME_MASK + 1` µs.
pub(crate) const TIME_MASK: u64 = (1 << TIME_BITS) - 1;

/// Keeps a value written by every request on a cache line of its own (128 bytes: two 64-byte
/// lines, as adjacent-line prefetchers pair them), so that writing it does not take the line of
/// read-mostly data (the clock, the tables, the gauge handles) away from other cores.
#[repr(align(128))]
pub(crate) struct OwnLine<T>(pub(crate) T);

/// In-flight counts and busy time by method, and the count gauges (resolved on first use).
pub(crate) struct InFlight {
    /// `(Σ ends − Σ starts) mod 2^44 << 20 | in flight (20 bits)` per method, times in µs since
    /// the layer's epoch. Written twice per request (start, finish): apart from everything only
    /// read.
    words: OwnLine<[AtomicU64; METHOD_COUNT]>,
    gauges: [OnceLock<Gauge>; METHOD_COUNT],
    /// `{prefix}.active_requests`.
    name: String,
}

impl InFlight {
    pub(crate) fn new(name: String) -> Self {
        InFlight {
            words: OwnLine(std::array::from_fn(|_| AtomicU64::new(0))),
            gauges: std::array::from_fn(|_| OnceLock::new()),
            name,
        }
    }

    /// A request of `method` started at `now` µs since the epoch.
    #[inline]
    pub(crate) fn start(&self, method: u8, now: u64) {
        self.change(method, (now.wrapping_neg() << COUNT_BITS).wrapping_add(1));
    }

    /// A request of `method` finished at `now` µs since the epoch.
    #[inline]
    pub(crate) fn finish(&self, method: u8, now: u64) {
        self.change(method, (now << COUNT_BITS).wrapping_sub(1));
    }

    /// In flight now, all methods.
    pub(crate) fn total(&self) -> i64 {
        self.words.0.iter().map(|w| (w.load(Ordering::Relaxed) & COUNT_MASK) as i64).sum()
    }

    /// Busy time of all methods up to `now` µs, modulo 2^44 µs (only differences are used). A
    /// thread whose clock reading is later than `now` may already have landed its add: a
    /// transient deficit of at most that difference (the `utilization` publisher waits it out).
    pub(crate) fn busy_at(&self, now: u64) -> u64 {
        let word =
            self.words.0.iter().fold(0u64, |sum, w| sum.wrapping_add(w.load(Ordering::Relaxed)));
        let (sum, n) = (word >> COUNT_BITS, word & COUNT_MASK);
        sum.wrapping_add(n.wrapping_mul(now)) & TIME_MASK
    }

    #[inline]
    fn change(&self, method: u8, add: u64) {
        let i = usize::from(method).min(METHOD_COUNT - 1);
        let (Some(word), Some(gauge)) = (self.words.0.get(i), self.gauges.get(i)) else {
            return;
        };
        // SeqCst: the re-read in `publish` must see every add ordered before its own.
        let count = word.fetch_add(add, Ordering::SeqCst).wrapping_add(add) & COUNT_MASK;
        let gauge = gauge.get_or_init(|| self.gauge(method));
        gauge.set(count as f64);
        // Publish until what we set is still the count after setting it. Whichever thread sets
        // last re-reads the final count, so when requests stop the gauge equals the count; two
        // racing threads can otherwise leave a stale value behind for good.
        let now = word.load(Ordering::SeqCst) & COUNT_MASK;
        if now != count {
            republish(word, gauge, now);
        }
    }

    #[cold]
    fn gauge(&self, method: u8) -> Gauge {
        let labels = [Label::new(labels::METHOD, labels::method_label(method))];
        metrics::gauge!(self.name.clone(), labels.iter())
    }
}

/// The count changed while it was being published (another request of the method started or
/// finished): set again until the value set is the count after setting it.
#[cold]
#[inline(never)]
fn republish(word: &AtomicU64, gauge: &Gauge, mut seen: u64) {
    loop {
        gauge.set(seen as f64);
        let now = word.load(Ordering::SeqCst) & COUNT_MASK;
        if now == seen {
            return;
        }
        seen = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GET: u8 = 0;
    const POST: u8 = 2;

    /// A gauge that keeps the last value set (as every recorder does), and often yields inside
    /// `set`, so that other threads change the count between a thread's add and its set.
    #[derive(Default)]
    struct LastSet {
        bits: AtomicU64,
        sets: AtomicU64,
    }

    impl metrics::GaugeFn for LastSet {
        fn increment(&self, _: f64) {
            unreachable!("the layer only sets")
        }
        fn decrement(&self, _: f64) {
            unreachable!("the layer only sets")
        }
        fn set(&self, value: f64) {
            if self.sets.fetch_add(1, Ordering::Relaxed) % 4 == 0 {
                std::thread::yield_now();
            }
            self.bits.store(value.to_bits(), Ordering::SeqCst);
        }
    }

    #[test]
    fn the_gauge_ends_at_the_count_however_threads_race_to_set_it() {
        // Rounds of racing threads: in each, every thread starts and finishes requests at once,
        // then all stop and the gauge must show the count (0). A set that lands after a later
        // count's set would leave a stale value (what the re-read after each set prevents).
        const THREADS: usize = 3;
        const ROUNDS: usize = 2_000;
        let in_flight = std::sync::Arc::new(InFlight::new("t".into()));
        let last = std::sync::Arc::new(LastSet::default());
        let gauge = Gauge::from_arc(std::sync::Arc::clone(&last));
        assert!(in_flight.gauges[usize::from(GET)].set(gauge).is_ok());
        let go = std::sync::Arc::new(std::sync::Barrier::new(THREADS + 1));
        let done = std::sync::Arc::new(std::sync::Barrier::new(THREADS + 1));
        let threads: Vec<_> = (0..THREADS)
            .map(|_| {
                let (in_flight, go, done) = (in_flight.clone(), go.clone(), done.clone());
                std::thread::spawn(move || {
                    for round in 0..ROUNDS as u64 {
                        go.wait();
                        in_flight.start(GET, round * 10);
                        in_flight.start(GET, round * 10 + 1);
                        in_flight.finish(GET, round * 10 + 2);
                        in_flight.finish(GET, round * 10 + 3);
                        done.wait();
                    }
                })
            })
            .collect();
        let mut stale = 0;
        for _ in 0..ROUNDS {
            go.wait();
            done.wait();
            assert_eq!(in_flight.total(), 0);
            if f64::from_bits(last.bits.load(Ordering::SeqCst)) != 0.0 {
                stale += 1;
                // Put the gauge right for the next round.
                last.bits.store(0f64.to_bits(), Ordering::SeqCst);
            }
        }
        for t in threads {
            t.join().expect("thread");
        }
        assert_eq!(stale, 0, "rounds that left the gauge at a stale count: {stale} of {ROUNDS}");
    }

    #[test]
    fn busy_time_is_the_area_under_the_in_flight_curve() {
        let busy = InFlight::new("t".into());
        busy.start(GET, 0); // A starts
        busy.start(POST, 2_000); // B starts
        assert_eq!(busy.total(), 2);
        assert_eq!(busy.busy_at(4_000), 4_000 + 2_000);
        busy.finish(GET, 6_000); // A ends after 6 ms
        busy.finish(POST, 10_000); // B ends after 8 ms
        assert_eq!(busy.busy_at(10_000), 14_000);
        assert_eq!(busy.busy_at(50_000), 14_000, "nothing in flight: no busy time");
        assert_eq!(busy.total(), 0);
    }

    #[test]
    fn the_order_in_which_threads_land_their_events_does_not_matter() {
        let busy = InFlight::new("t".into());
        busy.start(GET, 1_000);
        busy.start(GET, 900); // a thread that read the clock earlier lands later
        assert_eq!(busy.busy_at(1_000), 100, "the second request started at 900");
        assert_eq!(busy.busy_at(2_000), 2_100);
        busy.finish(GET, 2_500);
        busy.finish(GET, 2_400); // again out of order
        assert_eq!(busy.busy_at(3_000), 1_500 + 1_500);
    }

    #[test]
    fn an_idle_gap_of_any_length_is_fine() {
        let busy = InFlight::new("t".into());
        busy.start(GET, 5);
        busy.finish(GET, 15);
        let later = TIME_MASK * 3 + 12_345; // many wraps of the time field later
        busy.start(POST, later);
        busy.finish(POST, later + 7);
        assert_eq!(busy.busy_at(later + 100), 17);
    }

    #[test]
    fn the_time_field_wraps_without_losing_differences() {
        let busy = InFlight::new("t".into());
        let near = TIME_MASK - 10;
        let before = busy.busy_at(near);
        busy.start(GET, near);
        busy.finish(GET, near + 30); // crosses 2^44
        assert_eq!(busy.busy_at(near + 100).wrapping_sub(before) & TIME_MASK, 30);
    }

    #[test]
    fn a_request_may_start_on_one_thread_and_finish_on_another() {
        let busy = std::sync::Arc::new(InFlight::new("t".into()));
        let on_thread = |f: Box<dyn FnOnce(&InFlight) + Send>| {
            let busy = std::sync::Arc::clone(&busy);
            std::thread::spawn(move || f(&busy)).join().expect("thread");
        };
        on_thread(Box::new(|b| b.start(GET, 1_000)));
        on_thread(Box::new(|b| b.start(GET, 1_500)));
        on_thread(Box::new(|b| b.finish(GET, 4_000)));
        assert_eq!(busy.busy_at(5_000), 3_000 + 3_500, "one still in flight");
        assert_eq!(busy.total(), 1);
        on_thread(Box::new(|b| b.finish(GET, 6_000)));
        assert_eq!(busy.busy_at(9_000), 3_000 + 4_500);
    }

    #[test]
    fn threads_adding_at_once_lose_nothing() {
        let busy = std::sync::Arc::new(InFlight::new("t".into()));
        let threads: Vec<_> = (0..4u64)
            .map(|k| {
                let busy = std::sync::Arc::clone(&busy);
                std::thread::spawn(move || {
                    let method = (k % 2) as u8 * POST;
                    for i in 0..10_000u64 {
                        let t = k * 1_000_000 + i * 10;
                        busy.start(method, t);
                        busy.finish(method, t + 3);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        assert_eq!(busy.busy_at(123), 40_000 * 3, "4 threads x 10,000 requests of 3 us");
        assert_eq!(busy.total(), 0);
    }
}
