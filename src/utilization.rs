//! Busy time, and the `utilization` gauge computed from it once per window.
//!
//! Busy time is the area under the in-flight curve: `∫ n(t) dt`, in request-seconds. It is kept
//! exactly, without a lock, in two words: `state` packs the time of the last start or finish
//! (microseconds since the layer was built, 44 bits) with the number in flight (20 bits), and
//! `busy` sums `n × (t − last)` at each start and finish. A start or finish is one
//! compare-and-swap of `state` and one atomic add; `busy(now) = busy + n × (now − last)`.
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
//! 2^20 − 1 (1 048 575) requests in flight per layer are counted (starts beyond that are not);
//! requests in flight while no request starts or finishes for 2^43 µs (101 days) lose that span.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, Once, OnceLock};
use std::time::Duration;

use metrics::Gauge;

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

    /// Busy time so far, in microseconds of request time (wrapping).
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

/// The busy-time integral: `∫ n(t) dt` in request-microseconds, lock-free.
struct Busy {
    /// `last event time (µs, 44 bits) << 20 | in flight (20 bits)`.
    state: AtomicU64,
    /// Request-microseconds up to the last event (wrapping; only differences are used).
    busy: AtomicU64,
}

impl Busy {
    fn new() -> Self {
        Busy { state: AtomicU64::new(0), busy: AtomicU64::new(0) }
    }

    /// Moves the integral to `now` and changes the in-flight count by `delta` (+1, −1 or 0).
    #[inline]
    fn event(&self, now: u64, delta: i8) {
        let mut current = self.state.load(Ordering::Acquire);
        loop {
            let (last, n) = unpack(current);
            let (elapsed, at) = advance(last, now, n);
            let next_n = match delta {
                1 if n < COUNT_MASK => n + 1,
                -1 => n.saturating_sub(1),
                _ => n,
            };
            match self.state.compare_exchange_weak(
                current,
                pack(at, next_n),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    if n != 0 && elapsed != 0 {
                        self.busy.fetch_add(n.wrapping_mul(elapsed), Ordering::AcqRel);
                    }
                    return;
                }
                Err(seen) => current = seen,
            }
        }
    }

    /// Busy time up to `now` (a read between another thread's swap and add misses that thread's
    /// last slice until its add lands: a transient error, corrected in the next window).
    fn at(&self, now: u64) -> u64 {
        let (last, n) = unpack(self.state.load(Ordering::Acquire));
        let (elapsed, _) = advance(last, now, n);
        self.busy.load(Ordering::Acquire).wrapping_add(n.wrapping_mul(elapsed))
    }
}

fn pack(time: u64, n: u64) -> u64 {
    ((time & TIME_MASK) << COUNT_BITS) | (n & COUNT_MASK)
}

fn unpack(state: u64) -> (u64, u64) {
    (state >> COUNT_BITS, state & COUNT_MASK)
}

/// Microseconds from `last` to `now` modulo 2^44, and the new last time. With requests in
/// flight, a `now` slightly before `last` (another thread's later reading landed first) counts as
/// no time passing; with none, no area is at stake and `now` is taken as is (so an idle gap of
/// any length is fine).
fn advance(last: u64, now: u64, in_flight: u64) -> (u64, u64) {
    let elapsed = now.wrapping_sub(last) & TIME_MASK;
    if in_flight == 0 {
        (0, now & TIME_MASK)
    } else if elapsed > TIME_MASK / 2 {
        (0, last)
    } else {
        (elapsed, now & TIME_MASK)
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

    /// Publishes the window ending at `now` if one is due. `force_event` moves the integral to
    /// `now` first (a read: it keeps the 44-bit clock of the integral fresh while idle).
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
        if force_event {
            busy.event(now, 0);
        }
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
        let spent = busy_now.wrapping_sub(last.busy_us);
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
    fn a_reading_before_the_last_event_counts_no_time() {
        let busy = Busy::new();
        busy.event(1_000, 1);
        busy.event(900, 1); // a thread that read the clock earlier lands later
        assert_eq!(busy.at(1_000), 0);
        assert_eq!(busy.at(2_000), 2_000);
    }

    #[test]
    fn an_idle_gap_of_any_length_is_fine() {
        let busy = Busy::new();
        busy.event(TIME_MASK - 5, 1); // more than half the time field after time 0, idle
        busy.event(TIME_MASK + 5, -1);
        assert_eq!(busy.at(TIME_MASK + 100), 10);
    }

    #[test]
    fn the_time_field_wraps_without_losing_differences() {
        let busy = Busy::new();
        let near = TIME_MASK - 10;
        busy.event(near, 1);
        busy.event(near + 30, -1); // crosses 2^44
        assert_eq!(busy.at(near + 100), 30);
    }
}
