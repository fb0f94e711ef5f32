//! [`Clock`]: the clock the layer times requests with, and its mock for tests.
//!
//! The layer reads the clock a few times per request and frame, so the reading must be cheap:
//! it uses `quanta` (the TSC where the CPU has a stable one, else the OS's monotonic clock).
//! This type wraps it so that `quanta` is not part of this crate's public API.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// The clock a [`VitalsLayer`](crate::VitalsLayer) times requests with.
///
/// [`Clock::new`] (the default) is the system's monotonic clock. [`Clock::mock`] is a clock that
/// only moves when a test moves it: timing tests get exact durations and never sleep.
///
/// ```
/// use std::time::Duration;
/// use tower_vitals::{Clock, VitalsLayer};
///
/// let (clock, mock) = Clock::mock();
/// let layer = VitalsLayer::builder().clock(clock).build();
/// mock.advance(Duration::from_millis(5)); // every request in flight is now 5 ms older
/// # let _ = layer;
/// ```
#[derive(Clone)]
pub struct Clock(quanta::Clock);

/// The handle of a [`Clock::mock`]: moves that clock (and its clones) forward.
#[derive(Clone)]
pub struct MockClock(Arc<quanta::Mock>);

impl Clock {
    /// The system's monotonic clock (the TSC where it is stable, else the OS clock).
    pub fn new() -> Self {
        Clock(quanta::Clock::new())
    }

    /// A clock that stands still until the returned [`MockClock`] moves it.
    pub fn mock() -> (Clock, MockClock) {
        let (clock, mock) = quanta::Clock::mock();
        (Clock(clock), MockClock(mock))
    }

    /// A raw reading (ticks of the underlying source, not nanoseconds).
    #[inline]
    pub(crate) fn raw(&self) -> u64 {
        self.0.raw()
    }

    /// Nanoseconds between two raw readings.
    pub(crate) fn delta_as_nanos(&self, start: u64, end: u64) -> u64 {
        self.0.delta_as_nanos(start, end)
    }

    /// The wrapped `quanta` clock, for the modules that keep their own (utilisation, live).
    pub(crate) fn quanta(&self) -> &quanta::Clock {
        &self.0
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Clock").finish_non_exhaustive()
    }
}

impl MockClock {
    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        self.0.increment(by);
    }

    /// How far the clock was moved since [`Clock::mock`] made it.
    pub fn elapsed(&self) -> Duration {
        Duration::from_nanos(self.0.value())
    }
}

impl fmt::Debug for MockClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockClock").field("elapsed", &self.elapsed()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mock_moves_only_when_advanced() {
        let (clock, mock) = Clock::mock();
        let start = clock.raw();
        assert_eq!(clock.raw(), start);
        mock.advance(Duration::from_micros(1500));
        assert_eq!(clock.delta_as_nanos(start, clock.raw()), 1_500_000);
        assert_eq!(mock.elapsed(), Duration::from_micros(1500));
    }
}
