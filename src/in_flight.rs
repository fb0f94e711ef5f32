//! Requests in flight, by method: the `active_requests` gauge and the busy-time integral, kept
//! together in one atomic word per method and stripe.
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
//! a finish is ONE atomic add: no compare-and-swap loop (which would retry under contention), no
//! second word to keep in step, and the order in which adds land does not matter.
//!
//! **Stripes.** The words are kept once per *stripe*, each stripe on a cache line of its own;
//! a thread uses the stripe of its thread index (see [`thread_stripe`]), and a request finishes
//! on the stripe it started on (whatever thread ends it). So the requests of one thread write
//! only that thread's line, and threads on different cores never take a line from each other
//! on the request path. Because every change is an addition modulo 2^64, the wrapping sum of
//! the stripes' words is exactly the word a single shared counter would hold: the count in
//! flight and the busy time are read as that sum, by the readers only (a gauge publication, a
//! `utilization` window, [`InFlight::total`]).
//!
//! **Publication.** A request sets no gauge (a gauge shows the sum of all stripes, which only a
//! reader should pay for): [`InFlight::publish`] sets every method's gauge to its sum, called by
//! `gauges::publish_gauges` (each render of the crate's recorders, and a background thread once
//! a second). Only the first request of a method in a layer publishes (cold: it resolves the
//! gauge through its recorder). Publications are serialised by a lock taken by publishers only,
//! so the last value set is the last sum read: when requests stop, the next publication shows
//! the true count, and a gauge can never be left behind at a stale count. (While requests run,
//! a sum read stripe by stripe may count a request that starts or ends during the read on one
//! side of it or the other, as any read of a changing count does.)
//!
//! Limits, documented rather than checked on the hot path: at most 2^20 − 1 (1 048 575) requests
//! of one method in flight (more would carry into the time sum); times have 1 µs resolution.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};

use crossbeam_utils::CachePadded;
use metrics::{Gauge, Label};

use crate::labels::{self, METHOD_COUNT};

const COUNT_BITS: u32 = 20;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;
const TIME_BITS: u32 = 64 - COUNT_BITS;
/// The busy-time field's range: busy times are read modulo `TIME_MASK + 1` µs.
pub(crate) const TIME_MASK: u64 = (1 << TIME_BITS) - 1;

/// Stripes per layer: twice the cores (rounded up to a power of two, 2 to 256), so that the
/// worker threads of a runtime, numbered in the order they first measure a request, each get
/// a stripe of their own.
pub(crate) fn stripe_count() -> usize {
    static STRIPES: OnceLock<usize> = OnceLock::new();
    *STRIPES.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        cores.saturating_mul(2).next_power_of_two().clamp(2, 256)
    })
}

/// This thread's stripe among `stripes` (a power of two): the thread's index, given in the
/// order threads first ask, modulo `stripes`. One thread-local read.
#[inline]
pub(crate) fn thread_stripe(stripes: usize) -> usize {
    thread_local! {
        static INDEX: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    let index = INDEX.with(|i| {
        let index = i.get();
        if index != usize::MAX {
            return index;
        }
        let index = next_thread_index();
        i.set(index);
        index
    });
    index & stripes.wrapping_sub(1)
}

#[cold]
fn next_thread_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed) & (usize::MAX >> 1)
}

/// One stripe: a word per method (80 bytes), alone on its (128-byte) line.
type Stripe = CachePadded<[AtomicU64; METHOD_COUNT]>;

/// In-flight counts and busy time by method and stripe, and the count gauges (resolved on first
/// use).
pub(crate) struct InFlight {
    /// `(Σ ends − Σ starts) mod 2^44 << 20 | in flight (20 bits)` per method, times in µs since
    /// the layer's epoch, per stripe (a power of two of them).
    stripes: Box<[Stripe]>,
    gauges: [OnceLock<Gauge>; METHOD_COUNT],
    /// Held while publishing: publications of this layer happen one at a time.
    publishing: Mutex<()>,
    /// `{prefix}.active_requests`.
    name: String,
}

impl InFlight {
    pub(crate) fn new(name: String) -> Self {
        InFlight::with_stripes(name, stripe_count())
    }

    fn with_stripes(name: String, stripes: usize) -> Self {
        InFlight {
            stripes: (0..stripes.max(1))
                .map(|_| CachePadded::new(std::array::from_fn(|_| AtomicU64::new(0))))
                .collect(),
            gauges: std::array::from_fn(|_| OnceLock::new()),
            publishing: Mutex::new(()),
            name,
        }
    }

    /// Number of stripes (a power of two).
    pub(crate) fn stripes(&self) -> usize {
        self.stripes.len()
    }

    /// A request of `method` started at `now` µs since the epoch, on `stripe`.
    #[inline]
    pub(crate) fn start(&self, stripe: usize, method: u8, now: u64) {
        let i = usize::from(method).min(METHOD_COUNT - 1);
        self.change(stripe, i, (now.wrapping_neg() << COUNT_BITS).wrapping_add(1));
        if let Some(gauge) = self.gauges.get(i) {
            if gauge.get().is_none() {
                self.first_of_method(i);
            }
        }
    }

    /// A request of `method` that started on `stripe` finished at `now` µs since the epoch.
    #[inline]
    pub(crate) fn finish(&self, stripe: usize, method: u8, now: u64) {
        let i = usize::from(method).min(METHOD_COUNT - 1);
        self.change(stripe, i, (now << COUNT_BITS).wrapping_sub(1));
    }

    #[inline]
    fn change(&self, stripe: usize, method: usize, add: u64) {
        let stripe = stripe & (self.stripes.len() - 1);
        if let Some(word) = self.stripes.get(stripe).and_then(|s| s.get(method)) {
            word.fetch_add(add, Ordering::Relaxed);
        }
    }

    /// The word of `method` summed over the stripes: what one shared word would hold.
    fn word(&self, method: usize) -> u64 {
        self.stripes.iter().fold(0u64, |sum, stripe| {
            sum.wrapping_add(stripe.get(method).map_or(0, |w| w.load(Ordering::Relaxed)))
        })
    }

    /// In flight now of the method at index `method`.
    fn count(&self, method: usize) -> u64 {
        self.word(method) & COUNT_MASK
    }

    /// In flight now, all methods.
    pub(crate) fn total(&self) -> i64 {
        (0..METHOD_COUNT).map(|m| self.count(m) as i64).sum()
    }

    /// Busy time of all methods up to `now` µs, modulo 2^44 µs (only differences are used). A
    /// thread whose clock reading is later than `now` may already have landed its add: a
    /// transient deficit of at most that difference (the `utilization` publisher waits it out).
    pub(crate) fn busy_at(&self, now: u64) -> u64 {
        let word = (0..METHOD_COUNT).fold(0u64, |sum, m| sum.wrapping_add(self.word(m)));
        let (sum, n) = (word >> COUNT_BITS, word & COUNT_MASK);
        sum.wrapping_add(n.wrapping_mul(now)) & TIME_MASK
    }

    /// Sets the gauge of every method seen so far to its count in flight now.
    pub(crate) fn publish(&self) {
        let _one_at_a_time = self.publishing.lock().unwrap_or_else(PoisonError::into_inner);
        for (method, gauge) in self.gauges.iter().enumerate() {
            if let Some(gauge) = gauge.get() {
                gauge.set(self.count(method) as f64);
            }
        }
    }

    /// The first request of a method: resolves its gauge through the current recorder and
    /// publishes the count, so the series exists from the first request on.
    #[cold]
    #[inline(never)]
    fn first_of_method(&self, method: usize) {
        let _one_at_a_time = self.publishing.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(slot) = self.gauges.get(method) {
            let gauge = slot.get_or_init(|| {
                let labels = [Label::new(labels::METHOD, labels::method_label(method as u8))];
                metrics::gauge!(self.name.clone(), labels.iter())
            });
            gauge.set(self.count(method) as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GET: u8 = 0;
    const POST: u8 = 2;

    /// A gauge that keeps the last value set (as every recorder does), and often yields inside
    /// `set`, so that other threads change the count between a publisher's read and its set.
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

    fn with_gauge(in_flight: &InFlight, method: u8) -> std::sync::Arc<LastSet> {
        let last = std::sync::Arc::new(LastSet::default());
        let gauge = Gauge::from_arc(std::sync::Arc::clone(&last));
        assert!(in_flight.gauges[usize::from(method)].set(gauge).is_ok());
        last
    }

    fn value(last: &LastSet) -> f64 {
        f64::from_bits(last.bits.load(Ordering::SeqCst))
    }

    #[test]
    fn the_gauge_is_exact_when_published_after_threads_on_several_stripes_end() {
        // Rounds of racing threads, each on its own stripe (and one pair sharing a stripe), all
        // starting and finishing requests while two publishers publish; when they stop, one
        // more publication must show the count, and the count must be what is in flight.
        const THREADS: usize = 4;
        const ROUNDS: usize = 500;
        let in_flight = std::sync::Arc::new(InFlight::with_stripes("t".into(), 4));
        let last = with_gauge(&in_flight, GET);
        let go = std::sync::Arc::new(std::sync::Barrier::new(THREADS + 2));
        let done = std::sync::Arc::new(std::sync::Barrier::new(THREADS + 2));
        let mut threads: Vec<_> = (0..THREADS)
            .map(|k| {
                let (in_flight, go, done) = (in_flight.clone(), go.clone(), done.clone());
                std::thread::spawn(move || {
                    let stripe = k.min(2); // threads 2 and 3 share a stripe
                    for round in 0..ROUNDS as u64 {
                        go.wait();
                        in_flight.start(stripe, GET, round * 10);
                        in_flight.start(stripe, GET, round * 10 + 1);
                        in_flight.finish(stripe, GET, round * 10 + 2);
                        if k == 0 && round % 2 == 0 {
                            // One request left in flight every even round.
                            done.wait();
                            continue;
                        }
                        in_flight.finish(stripe, GET, round * 10 + 3);
                        done.wait();
                    }
                })
            })
            .collect();
        let publisher = {
            let (in_flight, go, done) = (in_flight.clone(), go.clone(), done.clone());
            std::thread::spawn(move || {
                for _ in 0..ROUNDS {
                    go.wait();
                    for _ in 0..3 {
                        in_flight.publish();
                    }
                    done.wait();
                }
            })
        };
        let mut wrong = 0;
        let mut in_flight_now = 0;
        for round in 0..ROUNDS {
            go.wait();
            in_flight.publish();
            done.wait();
            // Everyone stopped: the count is what was left in flight (thread 0 leaves one
            // request in flight every even round), and one publication shows it.
            if round % 2 == 0 {
                in_flight_now += 1;
            }
            assert_eq!(in_flight.total(), in_flight_now);
            in_flight.publish();
            if value(&last) != in_flight_now as f64 {
                wrong += 1;
            }
        }
        threads.push(publisher);
        for t in threads {
            t.join().expect("thread");
        }
        assert_eq!(
            wrong, 0,
            "rounds whose publication did not show the count: {wrong} of {ROUNDS}"
        );
    }

    #[test]
    fn the_first_request_of_a_method_publishes_and_later_ones_do_not() {
        let recorder = metrics_util::debugging::DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let in_flight = metrics::with_local_recorder(&recorder, || {
            let in_flight = InFlight::with_stripes("t".into(), 2);
            in_flight.start(0, POST, 1);
            in_flight.start(1, POST, 2);
            in_flight
        });
        let gauge = || {
            snapshotter.snapshot().into_vec().into_iter().find_map(|(key, _, _, value)| match value
            {
                metrics_util::debugging::DebugValue::Gauge(g) if key.key().name() == "t" => {
                    Some(g.into_inner())
                }
                _ => None,
            })
        };
        assert_eq!(gauge(), Some(1.0), "set once, by the first request");
        in_flight.finish(0, POST, 3);
        in_flight.finish(1, POST, 4);
        assert_eq!(in_flight.total(), 0);
        in_flight.publish();
        assert_eq!(gauge(), Some(0.0), "published on demand, through the first recorder");
    }

    #[test]
    fn stripes_sum_to_what_one_word_would_hold() {
        // A request may even finish on another stripe than the one it started on: the sums
        // are additions modulo 2^64, so the total is the same.
        let busy = InFlight::with_stripes("t".into(), 4);
        busy.start(0, GET, 1_000);
        busy.start(3, GET, 1_500);
        busy.finish(1, GET, 4_000); // started on stripe 0
        assert_eq!(busy.total(), 1);
        assert_eq!(busy.busy_at(5_000), 3_000 + 3_500);
        busy.finish(2, GET, 6_000); // started on stripe 3
        assert_eq!(busy.total(), 0);
        assert_eq!(busy.busy_at(9_000), 3_000 + 4_500);
    }

    #[test]
    fn a_thread_keeps_its_stripe_and_threads_get_different_ones() {
        let stripes = 8;
        let mine = thread_stripe(stripes);
        assert_eq!(thread_stripe(stripes), mine);
        let others: Vec<usize> = (0..3)
            .map(|_| std::thread::spawn(move || thread_stripe(stripes)).join().expect("thread"))
            .collect();
        assert!(others.iter().all(|&s| s < stripes));
        assert!(
            others.windows(2).all(|w| w[0] != w[1]),
            "threads that start one after another get different stripes: {others:?}"
        );
        assert!(stripe_count().is_power_of_two() && stripe_count() >= 2);
    }

    #[test]
    fn busy_time_is_the_area_under_the_in_flight_curve() {
        let busy = InFlight::new("t".into());
        busy.start(0, GET, 0); // A starts
        busy.start(1, POST, 2_000); // B starts
        assert_eq!(busy.total(), 2);
        assert_eq!(busy.busy_at(4_000), 4_000 + 2_000);
        busy.finish(0, GET, 6_000); // A ends after 6 ms
        busy.finish(1, POST, 10_000); // B ends after 8 ms
        assert_eq!(busy.busy_at(10_000), 14_000);
        assert_eq!(busy.busy_at(50_000), 14_000, "nothing in flight: no busy time");
        assert_eq!(busy.total(), 0);
    }

    #[test]
    fn the_order_in_which_threads_land_their_events_does_not_matter() {
        let busy = InFlight::new("t".into());
        busy.start(0, GET, 1_000);
        busy.start(1, GET, 900); // a thread that read the clock earlier lands later
        assert_eq!(busy.busy_at(1_000), 100, "the second request started at 900");
        assert_eq!(busy.busy_at(2_000), 2_100);
        busy.finish(0, GET, 2_500);
        busy.finish(1, GET, 2_400); // again out of order
        assert_eq!(busy.busy_at(3_000), 1_500 + 1_500);
    }

    #[test]
    fn an_idle_gap_of_any_length_is_fine() {
        let busy = InFlight::new("t".into());
        busy.start(0, GET, 5);
        busy.finish(0, GET, 15);
        let later = TIME_MASK * 3 + 12_345; // many wraps of the time field later
        busy.start(1, POST, later);
        busy.finish(1, POST, later + 7);
        assert_eq!(busy.busy_at(later + 100), 17);
    }

    #[test]
    fn the_time_field_wraps_without_losing_differences() {
        let busy = InFlight::new("t".into());
        let near = TIME_MASK - 10;
        let before = busy.busy_at(near);
        busy.start(0, GET, near);
        busy.finish(0, GET, near + 30); // crosses 2^44
        assert_eq!(busy.busy_at(near + 100).wrapping_sub(before) & TIME_MASK, 30);
    }

    #[test]
    fn a_request_may_start_on_one_thread_and_finish_on_another() {
        let busy = std::sync::Arc::new(InFlight::new("t".into()));
        let on_thread = |f: Box<dyn FnOnce(&InFlight) + Send>| {
            let busy = std::sync::Arc::clone(&busy);
            std::thread::spawn(move || f(&busy)).join().expect("thread");
        };
        // A request finishes on the stripe it started on, whatever thread ends it.
        on_thread(Box::new(|b| b.start(1, GET, 1_000)));
        on_thread(Box::new(|b| b.start(0, GET, 1_500)));
        on_thread(Box::new(|b| b.finish(1, GET, 4_000)));
        assert_eq!(busy.busy_at(5_000), 3_000 + 3_500, "one still in flight");
        assert_eq!(busy.total(), 1);
        on_thread(Box::new(|b| b.finish(0, GET, 6_000)));
        assert_eq!(busy.busy_at(9_000), 3_000 + 4_500);
    }

    #[test]
    fn threads_adding_at_once_lose_nothing() {
        let busy = std::sync::Arc::new(InFlight::with_stripes("t".into(), 2));
        let threads: Vec<_> = (0..4u64)
            .map(|k| {
                let busy = std::sync::Arc::clone(&busy);
                std::thread::spawn(move || {
                    let method = (k % 2) as u8 * POST;
                    // Two threads per stripe: adds on one line from two threads land too.
                    let stripe = (k / 2) as usize;
                    for i in 0..10_000u64 {
                        let t = k * 1_000_000 + i * 10;
                        busy.start(stripe, method, t);
                        busy.finish(stripe, method, t + 3);
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
