//! The `utilization` gauge: the busy time (kept by `in_flight`, in the same atomic words as the
//! in-flight counts) turned into a value once per window.
//!
//! The gauge is published per *window*: a window closes at the first *tick* at
//! least `window` after the previous close, and its value is
//! `Δbusy / (capacity × Δt)` (with a capacity) or `Δbusy / Δt`, the average concurrency (without).
//! The windows tile time, so no busy time is lost or counted twice. Ticks are:
//! - the starts and finishes of requests (a clock comparison and a relaxed load when no window is
//!   due);
//! - every publication of the layer gauges (`gauges::publish_gauges`): each render of the
//!   crate's Prometheus recorder and live page, and a background thread once a second for layers
//!   on the system clock. So a quiet service's window closes at the next scrape (or within a
//!   second of being due), and reads 0 after a burst instead of keeping the burst's value;
//! - [`VitalsLayer::publish_utilization`](crate::VitalsLayer::publish_utilization).
//!
//! When a window is due, the thread that ticks takes a `try_lock` (never waits: if another
//! thread is publishing, it goes on) and sets the gauge. The very first tick of a request
//! publishes 0, and so does building the layer, so the gauge exists from the first scrape.
//! Publications on demand use only a gauge a request has resolved (through the recorder current
//! on the request's thread), never resolve one through the publishing thread's recorder.
//!
//! Limits, documented rather than checked on the hot path: times have 1 µs resolution; at most
//! 2^20 − 1 (1 048 575) requests of one method in flight per layer (more would carry into the
//! time sum); one window's busy time must stay under 2^43 request-µs (about 100 request-days: a
//! 10 s window with fewer than 880 000 requests in flight on average).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, Once, OnceLock};
use std::time::Duration;

use metrics::Gauge;

use crate::in_flight::{InFlight, TIME_MASK};

/// Default length of a `utilization` window.
pub(crate) const DEFAULT_WINDOW: Duration = Duration::from_secs(10);

/// The `utilization` publisher.
pub(crate) struct Utilization {
    announced: Once,
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
            publisher: Publisher {
                micros_per_tick: micros_per_tick(&clock),
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

    /// Microseconds since the epoch at raw clock reading `at` (the unit of the busy time).
    #[inline]
    pub(crate) fn micros(&self, at: u64) -> u64 {
        self.publisher.micros(at)
    }

    /// A request started or finished at `now` µs (see [`micros`](Self::micros)): publishes the
    /// window ending now if one is due.
    #[inline]
    pub(crate) fn tick(&self, busy: &InFlight, now: u64) {
        self.publisher.tick(busy, now, false);
    }

    /// Closes the current window at raw reading `at` if it is due and a request has resolved
    /// the gauge (a publication on demand, from any thread): see [`publish`](Self::publish).
    pub(crate) fn publish_resolved(&self, busy: &InFlight, at: u64) -> Option<f64> {
        self.publisher.gauge.get()?;
        self.publish(busy, at)
    }

    /// Busy time so far, in microseconds of request time (modulo 2^44).
    pub(crate) fn busy_micros(&self, busy: &InFlight, at: u64) -> u64 {
        busy.busy_at(self.publisher.micros(at))
    }

    /// Closes the current window at raw reading `at` if it is at least one window long,
    /// publishes it and returns its value.
    pub(crate) fn publish(&self, busy: &InFlight, at: u64) -> Option<f64> {
        let now = self.publisher.micros(at);
        self.publisher.tick(busy, now, true)
    }
}

/// Microseconds per raw tick of `clock`, as `ceil(2^64 × µs per tick)`, so that
/// `ticks × factor >> 64` is a tick count in whole microseconds with one multiply (quanta's own
/// conversion is a 128-bit multiply to nanoseconds, then a division by 1000). quanta scales raw
/// readings linearly (a TSC by its calibrated factor, other clocks by 1 ns), and the factor is
/// read off a span of 2^40 ticks. For nanosecond clocks (the monotonic and mock clocks) the
/// result is exactly `ns / 1000` rounded down, for any span under 555 days: the rounding up of
/// the factor adds less than 0.39 × 2^-64 µs per tick.
fn micros_per_tick(clock: &quanta::Clock) -> u64 {
    const SPAN_BITS: u32 = 40;
    let nanos = u128::from(clock.delta_as_nanos(0, 1 << SPAN_BITS));
    // 2^64 × (nanos / 2^40) / 1000, rounded up.
    let factor = (nanos << (64 - SPAN_BITS)).div_ceil(1_000);
    u64::try_from(factor).unwrap_or(u64::MAX)
}

/// The end of the last published window.
struct Window {
    at_us: u64,
    busy_us: u64,
}

/// Publishes `utilization` once per window.
struct Publisher {
    /// Microseconds per raw tick as a 0.64 fixed-point factor (see [`micros_per_tick`]).
    micros_per_tick: u64,
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
    /// Whole microseconds from the epoch to raw reading `raw` (0 before it): one multiply.
    #[inline]
    fn micros(&self, raw: u64) -> u64 {
        let ticks = raw.saturating_sub(self.epoch);
        ((u128::from(ticks) * u128::from(self.micros_per_tick)) >> 64) as u64
    }

    /// Publishes the window ending at `now` if one is due. `force_event`: a read
    /// ([`Utilization::publish`]), which publishes the first window too.
    #[inline]
    fn tick(&self, busy: &InFlight, now: u64, force_event: bool) -> Option<f64> {
        if now < self.due_at_us.load(Ordering::Relaxed) {
            return None;
        }
        self.close_window(busy, now, force_event)
    }

    /// The rare part of [`tick`](Self::tick): once per window.
    #[cold]
    #[inline(never)]
    fn close_window(&self, busy: &InFlight, now: u64, force_event: bool) -> Option<f64> {
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
        let busy_now = busy.busy_at(now);
        let spent = busy_now.wrapping_sub(last.busy_us) & TIME_MASK;
        if spent > TIME_MASK / 2 {
            // Negative: another thread's later clock reading landed first (see `InFlight::busy_at`).
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
    fn micros_are_whole_microseconds_of_a_nanosecond_clock() {
        let (clock, _mock) = quanta::Clock::mock();
        let utilization =
            Utilization::new(clock, &UtilizationConfig::default(), "u".into(), 1_000_000);
        let at = |ns: u64| utilization.micros(1_000_000 + ns);
        assert_eq!(at(0), 0);
        assert_eq!(at(999), 0);
        assert_eq!(at(1_000), 1);
        assert_eq!(at(2_999), 2);
        assert_eq!(at(3_000), 3);
        let day = 86_400_000_000_000u64;
        for ns in [day - 1, day, 500 * day - 1, 500 * day, 500 * day + 123_456_789] {
            assert_eq!(at(ns), ns / 1_000, "{ns} ns");
        }
        assert_eq!(utilization.micros(5), 0, "before the epoch");
    }

    #[test]
    fn micros_of_the_real_clock_follow_quantas_nanoseconds() {
        let clock = quanta::Clock::new();
        let epoch = clock.raw();
        let utilization =
            Utilization::new(clock.clone(), &UtilizationConfig::default(), "u".into(), epoch);
        for ticks in [1_000u64, 1 << 20, 1 << 30, 1 << 36] {
            let quanta_us = clock.delta_as_nanos(epoch, epoch + ticks) / 1_000;
            let ours = utilization.micros(epoch + ticks);
            assert!(
                ours.abs_diff(quanta_us) <= 1,
                "{ticks} ticks: {ours} us vs quanta's {quanta_us}"
            );
        }
    }
}
