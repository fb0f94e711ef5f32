//! Busy time, and the `utilization` gauge computed from it once per window.
//!
//! Busy time is the area under the in-flight curve: `∫ n(t) dt`, in request-seconds. It is kept
//! exactly, without a lock, in one word (split in per-thread shards, see `Busy`), changed by
//! one atomic add per start and per finish:
//! the area up to `now` is the sum over requests of `min(end, now) − start`, that is
//! `(Σ ends − Σ starts) + n × now`, with `n` the number in flight. The word holds
//! `Σ ends − Σ starts` (microseconds since the layer was built, modulo 2^44) in its high 44 bits
//! and `n` in its low 20 bits: a start adds `−t·2^20 + 1`, a finish `t·2^20 − 1`. No
//! compare-and-swap loop (which would retry under contention), no second word to keep in step,
//! and the order in which threads land their adds does not matter: the sum is the same.
//!
//! The `utilization` gauge is published per *window*: a window closes at the first *tick* at
//! least `window` after the previous close, and its value is
//! `Δbusy / (capacity × Δt)` (with a capacity) or `Δbusy / Δt`, the average concurrency (without).
//! The windows tile time, so no busy time is lost or counted twice. Ticks are the starts and
//! finishes of requests (a clock comparison and a relaxed load when no window is due) and
//! [`VitalsLayer::publish_utilization`](crate::VitalsLayer::publish_utilization): no background
//! task, no timer, nothing on the request path but that comparison. When a window is due, the
//! thread that ticks takes a `try_lock` (never waits: if another thread is publishing, it goes
//! on) and sets the gauge. The very first tick (the first request) publishes 0, and so does
//! building the layer, so the gauge exists from the first scrape. Ticking on the request path rather than only on read keeps the gauge
//! fresh for push backends (statsd) that nobody reads; with no traffic at all the gauge keeps its
//! last value until the next request or `publish_utilization` call (call it from a `/metrics`
//! handler or a timer of yours to see idle periods promptly).
//!
//! Limits, documented rather than checked on the hot path: times have 1 µs resolution; at most
//! 2^20 − 1 (1 048 575) requests in flight per layer (more would carry into the time sum); one
//! window's busy time must stay under 2^43 request-µs (about 100 request-days: a 10 s window
//! with fewer than 880 000 requests in flight on average).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, Once, OnceLock};
use std::time::Duration;

use metrics::Gauge;

use crate::in_flight::OwnLine;

/// Default length of a `utilization` window.
pub(crate) const DEFAULT_WINDOW: Duration = Duration::from_secs(10);

const COUNT_BITS: u32 = 20;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;
const TIME_BITS: u32 = 64 - COUNT_BITS;
const TIME_MASK: u64 = (1 << TIME_BITS) - 1;

/// Busy time and the `utilization` publisher.
pub(crate) struct Utilization {
    announced: Once,
    busy: Busy,
    publisher: Publisher,
}

/// What the `utilization` gauge is computed with.
#[derive(Clone, Debug)]
pub(crate) struct UtilizationConfig {
    /// Requests the service can run at once; `None`: publish average concurrency.
    pub(crate) capacity: Option<u32>,
    /// Shortest window between two publications.
    pub(crate) window: Duration,
}

impl Default for UtilizationConfig {
    fn default() -> Self {
        UtilizationConfig { capacity: None, window: DEFAULT_WINDOW }
    }
}

impl Utilization {
    /// `epoch` is the raw clock reading that time 0 of the busy-time integral stands for;
    /// `name` is `{prefix}.utilization`.
    pub(crate) fn new(
        clock: quanta::Clock,
        config: &UtilizationConfig,
        name: String,
        epoch: u64,
    ) -> Self {
        Utilization {
            announced: Once::new(),
            busy: Busy::new(),
            publisher: Publisher {
                clock,
                epoch,
                capacity: config.capacity,
                window_us: u64::try_from(config.window.as_micros()).unwrap_or(u64::MAX).max(1),
                due_at_us: AtomicU64::new(0),
                last: Mutex::new(Window { at_us: 0, busy_us: 0 }),
                gauge: OnceLock::new(),
                name,
            },
        }
    }

    /// Publishes 0 through the current recorder, once (the layer calls it when it wraps a
    /// service, after its configuration is final), so the gauge is there from the first scrape.
    /// Not cached: the gauge used later is resolved at the first request.
    pub(crate) fn announce(&self) {
        self.announced.call_once(|| metrics::gauge!(self.publisher.name.clone()).set(0.0));
    }

    /// A request started at raw clock reading `at`.
    #[inline]
    pub(crate) fn start(&self, at: u64) {
        let now = self.publisher.micros(at);
        self.busy.event(now, 1);
        self.publisher.tick(&self.busy, now, false);
    }

    /// A request finished at raw clock reading `at`.
    #[inline]
    pub(crate) fn finish(&self, at: u64) {
        let now = self.publisher.micros(at);
        self.busy.event(now, -1);
        self.publisher.tick(&self.busy, now, false);
    }

    /// Busy time so far, in microseconds of request time (modulo 2^44).
    pub(crate) fn busy_micros(&self, at: u64) -> u64 {
        self.busy.at(self.publisher.micros(at))
    }

    /// Closes the current window at raw reading `at` if it is at least one window long,
    /// publishes it and returns its value.
    pub(crate) fn publish(&self, at: u64) -> Option<f64> {
        let now = self.publisher.micros(at);
        self.publisher.tick(&self.busy, now, true)
    }
}

/// Shards of the busy-time word: each thread adds to one (its own cache line), a window sums
/// them. A power of two.
const SHARDS: usize = 16;

/// The busy-time integral: `∫ n(t) dt` in request-microseconds, lock-free.
///
/// The word is a plain sum of the adds of every start and finish, so it can be split: each
/// thread adds to its own shard (a request may start on one thread and finish on another: a
/// shard's own count can go "negative", but only the sum of all shards is ever unpacked, and
/// that sum is exactly the single word's). So a start or finish writes a line that stays in
/// its thread's core cache, instead of one line that every core takes in turn; reading (once
/// per window) sums the shards.
struct Busy {
    /// `(Σ ends − Σ starts) mod 2^44 << 20 | in flight (20 bits)`, times in µs since the epoch,
    /// split over shards.
    shards: [OwnLine<AtomicU64>; SHARDS],
}

thread_local! {
    /// This thread's shard index, given out in turn at its first request.
    static SHARD: std::cell::Cell<usize> = const { std::cell::Cell::new(usize::MAX) };
}

/// The shard of the calling thread.
#[inline]
fn shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    SHARD.with(|s| {
        let mut i = s.get();
        if i == usize::MAX {
            i = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
            s.set(i);
        }
        i
    })
}

impl Busy {
    fn new() -> Self {
        Busy { shards: std::array::from_fn(|_| OwnLine(AtomicU64::new(0))) }
    }

    /// A request starts (`delta` 1) or finishes (`delta` −1) at `now` µs: one atomic add.
    #[inline]
    fn event(&self, now: u64, delta: i8) {
        let add = if delta > 0 {
            (now.wrapping_neg() << COUNT_BITS).wrapping_add(1)
        } else {
            (now << COUNT_BITS).wrapping_sub(1)
        };
        // Relaxed: the word is its own sum; nothing else is published through it.
        if let Some(word) = self.shards.get(shard()) {
            word.0.fetch_add(add, Ordering::Relaxed);
        }
    }

    /// Busy time up to `now`, modulo 2^44 µs (only differences are used). A thread whose clock
    /// reading is later than `now` may already have landed its add: a transient deficit of at
    /// most that difference, which [`Publisher::close_window`] waits out.
    fn at(&self, now: u64) -> u64 {
        let word =
            self.shards.iter().fold(0u64, |sum, w| sum.wrapping_add(w.0.load(Ordering::Relaxed)));
        let (sum, n) = (word >> COUNT_BITS, word & COUNT_MASK);
        sum.wrapping_add(n.wrapping_mul(now)) & TIME_MASK
    }
}

/// The end of the last published window.
struct Window {
    at_us: u64,
    busy_us: u64,
}

/// Publishes `utilization` once per window.
struct Publisher {
    clock: quanta::Clock,
    epoch: u64,
    capacity: Option<u32>,
    window_us: u64,
    /// `last.at_us + window_us` (0 before the first tick), read without the lock to decide
    /// whether a window is due.
    due_at_us: AtomicU64,
    last: Mutex<Window>,
    gauge: OnceLock<Gauge>,
    name: String,
}

impl Publisher {
    #[inline]
    fn micros(&self, raw: u64) -> u64 {
        self.clock.delta_as_nanos(self.epoch, raw) / 1_000
    }

    /// Publishes the window ending at `now` if one is due. `force_event`: a read
    /// ([`Utilization::publish`]), which publishes the first window too.
    #[inline]
    fn tick(&self, busy: &Busy, now: u64, force_event: bool) -> Option<f64> {
        if now < self.due_at_us.load(Ordering::Relaxed) {
            return None;
        }
        self.close_window(busy, now, force_event)
    }

    /// The rare part of [`tick`](Self::tick): once per window.
    #[cold]
    #[inline(never)]
    fn close_window(&self, busy: &Busy, now: u64, force_event: bool) -> Option<f64> {
        // Never wait: if another thread is publishing this window, it will have published it.
        let mut last = self.last.try_lock().ok()?;
        if self.gauge.get().is_none() {
            // The first tick: resolve the gauge through the recorder current now and show 0
            // until the first window closes.
            self.gauge.get_or_init(|| metrics::gauge!(self.name.clone())).set(0.0);
            self.due_at_us.store(last.at_us.saturating_add(self.window_us), Ordering::Relaxed);
            if !force_event {
                return None;
            }
        }
        let span = now.checked_sub(last.at_us).filter(|span| *span >= self.window_us)?;
        let busy_now = busy.at(now);
        let spent = busy_now.wrapping_sub(last.busy_us) & TIME_MASK;
        if spent > TIME_MASK / 2 {
            // Negative: another thread's later clock reading landed first (see `Busy::at`).
            // Leave the window open; the next tick closes it.
            return None;
        }
        let concurrency = spent as f64 / span as f64;
        let value = match self.capacity {
            Some(capacity) => concurrency / f64::from(capacity.max(1)),
            None => concurrency,
        };
        *last = Window { at_us: now, busy_us: busy_now };
        self.due_at_us.store(now.saturating_add(self.window_us), Ordering::Relaxed);
        drop(last);
        let gauge = self.gauge.get_or_init(|| metrics::gauge!(self.name.clone()));
        gauge.set(value);
        Some(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_time_is_the_area_under_the_in_flight_curve() {
        let busy = Busy::new();
        busy.event(0, 1); // A starts
        busy.event(2_000, 1); // B starts
        assert_eq!(busy.at(4_000), 4_000 + 2_000);
        busy.event(6_000, -1); // A ends after 6 ms
        busy.event(10_000, -1); // B ends after 8 ms
        assert_eq!(busy.at(10_000), 14_000);
        assert_eq!(busy.at(50_000), 14_000, "nothing in flight: no busy time");
    }

    #[test]
    fn the_order_in_which_threads_land_their_events_does_not_matter() {
        let busy = Busy::new();
        busy.event(1_000, 1);
        busy.event(900, 1); // a thread that read the clock earlier lands later
        assert_eq!(busy.at(1_000), 100, "the second request started at 900");
        assert_eq!(busy.at(2_000), 2_100);
        busy.event(2_500, -1);
        busy.event(2_400, -1); // again out of order
        assert_eq!(busy.at(3_000), 1_500 + 1_500);
    }

    #[test]
    fn an_idle_gap_of_any_length_is_fine() {
        let busy = Busy::new();
        busy.event(5, 1);
        busy.event(15, -1);
        let later = TIME_MASK * 3 + 12_345; // many wraps of the time field later
        busy.event(later, 1);
        busy.event(later + 7, -1);
        assert_eq!(busy.at(later + 100), 17);
    }

    #[test]
    fn the_time_field_wraps_without_losing_differences() {
        let busy = Busy::new();
        let near = TIME_MASK - 10;
        let before = busy.at(near);
        busy.event(near, 1);
        busy.event(near + 30, -1); // crosses 2^44
        assert_eq!(busy.at(near + 100).wrapping_sub(before) & TIME_MASK, 30);
    }

    #[test]
    fn a_request_may_start_on_one_thread_and_finish_on_another() {
        let busy = std::sync::Arc::new(Busy::new());
        let on_thread = |f: Box<dyn FnOnce(&Busy) + Send>| {
            let busy = std::sync::Arc::clone(&busy);
            std::thread::spawn(move || f(&busy)).join().expect("thread");
        };
        // Each event on a new thread: new shards, the starts and finishes on different ones.
        on_thread(Box::new(|b| b.event(1_000, 1)));
        on_thread(Box::new(|b| b.event(1_500, 1)));
        on_thread(Box::new(|b| b.event(4_000, -1)));
        assert_eq!(busy.at(5_000), 3_000 + 3_500, "one still in flight");
        on_thread(Box::new(|b| b.event(6_000, -1)));
        assert_eq!(busy.at(9_000), 3_000 + 4_500);
    }

    #[test]
    fn threads_adding_at_once_lose_nothing() {
        let busy = std::sync::Arc::new(Busy::new());
        let threads: Vec<_> = (0..4)
            .map(|k| {
                let busy = std::sync::Arc::clone(&busy);
                std::thread::spawn(move || {
                    for i in 0..10_000u64 {
                        let t = k * 1_000_000 + i * 10;
                        busy.event(t, 1);
                        busy.event(t + 3, -1);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        assert_eq!(busy.at(123), 40_000 * 3, "4 threads x 10,000 requests of 3 us");
    }
}
