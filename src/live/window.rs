//! One route's numbers: hdrhistograms of the three times over a rotating window (per stripe)
//! and since start (per route), counts by `error.type` and status class, body sums, and a
//! short history ring (per stripe).
//!
//! Pure data, driven by the caller's clock readings (nanoseconds since the recorder started),
//! so that rotation is tested on a mock clock.

use hdrhistogram::{Counter, Histogram as Hdr};

use crate::exemplar::{Sample, TraceId};

/// Times are kept in whole microseconds, 2 significant figures (< 1 % error per value).
pub(crate) const SIGFIG: u8 = 2;
/// Times above one hour are kept as one hour (long-lived streams).
pub(crate) const MAX_MICROS: u64 = 3_600_000_000;
/// Points in the history (sparklines), spread over one window.
pub const HISTORY_POINTS: usize = 30;
/// Distinct `error.type` values kept per route; more fold into [`OTHER_ERROR`].
pub(crate) const MAX_ERROR_TYPES: usize = 64;
/// Where `error.type` values past [`MAX_ERROR_TYPES`] are counted.
pub(crate) const OTHER_ERROR: &str = "_other";

/// Traced requests kept per period as its slowest (by `request.duration`).
pub const SLOWEST: usize = 5;

/// One traced request among the slowest of a period.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Slow {
    /// `request.duration`, seconds (finite, ≥ 0).
    pub(crate) seconds: f64,
    /// The trace id as a number; 0: an empty entry.
    pub(crate) trace: u128,
    /// When the request ended, nanoseconds since the Unix epoch.
    pub(crate) unix_nanos: u64,
}

/// The [`SLOWEST`] slowest traced requests of a period, in a fixed array (no allocation): an
/// offer compares with the fastest entry kept, and replaces it only when slower. Mergeable
/// like the histograms: the slowest of a union are the slowest of the parts' slowest.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Slowest {
    entries: [Slow; SLOWEST],
    /// Index of the entry an offer must beat: an empty one, else the fastest.
    min: usize,
}

impl Slowest {
    /// Keeps `slow` if there is room or it is slower than the fastest entry kept (a tie keeps
    /// the one already there).
    #[inline]
    pub(crate) fn offer(&mut self, slow: Slow) {
        let min = &mut self.entries[self.min];
        if slow.trace == 0 || (min.trace != 0 && slow.seconds <= min.seconds) {
            return;
        }
        *min = slow;
        self.min = self.fastest();
    }

    /// The index of an empty entry, or of the fastest one.
    fn fastest(&self) -> usize {
        let mut at = 0;
        for (i, e) in self.entries.iter().enumerate() {
            if e.trace == 0 {
                return i;
            }
            if e.seconds < self.entries[at].seconds {
                at = i;
            }
        }
        at
    }

    /// Adds `other`'s entries into this one.
    pub(crate) fn merge(&mut self, other: &Slowest) {
        other.entries.iter().for_each(|e| self.offer(*e));
    }

    fn clear(&mut self) {
        *self = Slowest::default();
    }

    /// The entries kept, slowest first (equal durations: the latest first).
    pub(crate) fn sorted(&self) -> Vec<Slow> {
        let mut v: Vec<Slow> = self.entries.iter().copied().filter(|e| e.trace != 0).collect();
        v.sort_by(|a, b| b.seconds.total_cmp(&a.seconds).then(b.unix_nanos.cmp(&a.unix_nanos)));
        v
    }
}

/// The three times, in the order they are kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Time {
    Duration = 0,
    Application = 1,
    Output = 2,
}

/// Heap bytes of one stripe at most: two window halves of three full time histograms (3,328
/// 32-bit counts each).
#[cfg(test)]
pub(crate) const STRIPE_MAX_BYTES: usize = 2 * 3 * 3328 * 4;
/// Heap bytes of a route's since-start histograms at most: three full time histograms with
/// 64-bit counts (plus up to [`MAX_ERROR_TYPES`] `error.type` names).
#[cfg(test)]
pub(crate) const TOTALS_MAX_BYTES: usize = 3 * 3328 * 8;

/// Status classes: `1xx` … `5xx`, and `none` (no response head: cancelled, service error).
pub(crate) const STATUS_CLASSES: [&str; 6] = ["none", "1xx", "2xx", "3xx", "4xx", "5xx"];

/// The class index of a `http.response.status_code` label value (absent or odd: `none`).
pub(crate) fn status_class(code: Option<&str>) -> u8 {
    match code.and_then(|c| c.parse::<u16>().ok()) {
        Some(c @ 100..=599) => (c / 100) as u8,
        _ => 0,
    }
}

/// The largest time kept, in seconds (one hour).
const MAX_SECONDS: f64 = MAX_MICROS as f64 / 1e6;

/// Seconds (as the layer records them) to the whole microseconds kept, clamped.
#[cfg(test)]
pub(crate) fn micros(seconds: f64) -> u64 {
    if positive(seconds) {
        positive_micros(seconds)
    } else {
        0
    }
}

/// [`micros`] of finite positive `seconds`: `(seconds * 1e6).round()` (half away from zero)
/// clamped to [`MAX_MICROS`], without a call to libm's `round`. Below the clamp the product is
/// under 2^53, so its integer part and fraction are exact and the comparison with one half
/// is `round`'s own.
#[inline]
fn positive_micros(seconds: f64) -> u64 {
    let x = seconds * 1e6;
    if x >= MAX_MICROS as f64 {
        return MAX_MICROS;
    }
    // 0 < x < 2^32: `i64` converts both ways in one instruction each.
    let whole = x as i64;
    (whole + i64::from(x - whole as f64 >= 0.5)) as u64
}

/// Whether `x` is finite and above zero, in one comparison of its bits: positive finite
/// values are the bit patterns from 1 (the smallest subnormal) to just below +inf's; zero,
/// negatives, infinities and NaN all fall outside.
#[inline]
fn positive(x: f64) -> bool {
    x.to_bits().wrapping_sub(1) < f64::INFINITY.to_bits() - 1
}

/// A count the layer recorded as `f64` (bytes, frames), as a whole number: 0 for anything
/// not finite or not positive (`as` already gives 0 for NaN and negatives).
#[inline]
fn whole(value: f64) -> u64 {
    if value < f64::INFINITY {
        value as u64
    } else {
        0
    }
}

/// An empty time histogram (1 µs to 1 h, auto-growing up to that: memory follows the
/// largest value seen).
pub(crate) fn time_histogram<C: Counter>() -> Hdr<C> {
    let mut h = Hdr::new_with_bounds(1, 2, SIGFIG).expect("1..2 at 2 significant figures is valid");
    h.auto(true);
    h
}

/// What one period (since start, or one window slot) holds.
pub(crate) struct Period<C: Counter> {
    pub(crate) requests: u64,
    /// By error index (see [`RouteStats::error_index`]).
    pub(crate) errors: Vec<u64>,
    pub(crate) status: [u64; 6],
    pub(crate) times: [Hdr<C>; 3],
    /// Exact sums of the times, in seconds.
    pub(crate) time_sums: [f64; 3],
    /// Responses that recorded body figures (a head was produced).
    pub(crate) bodies: u64,
    pub(crate) bytes: u64,
    pub(crate) blocks: u64,
    /// The slowest traced requests.
    pub(crate) slowest: Slowest,
}

impl<C: Counter> Period<C> {
    pub(crate) fn new() -> Self {
        Period {
            requests: 0,
            errors: Vec::new(),
            status: [0; 6],
            times: std::array::from_fn(|_| time_histogram()),
            time_sums: [0.0; 3],
            bodies: 0,
            bytes: 0,
            blocks: 0,
            slowest: Slowest::default(),
        }
    }

    fn clear(&mut self) {
        self.requests = 0;
        self.errors.iter_mut().for_each(|e| *e = 0);
        self.status = [0; 6];
        self.times.iter_mut().for_each(Hdr::reset);
        self.time_sums = [0.0; 3];
        self.bodies = 0;
        self.bytes = 0;
        self.blocks = 0;
        self.slowest.clear();
    }

    fn count(&mut self, n: u64, error: Option<usize>, class: u8) {
        self.requests = self.requests.saturating_add(n);
        if let Some(e) = error {
            if self.errors.len() <= e {
                self.errors.resize(e + 1, 0);
            }
            self.errors[e] = self.errors[e].saturating_add(n);
        }
        let class = usize::from(class).min(5);
        self.status[class] = self.status[class].saturating_add(n);
    }

    /// One time: `micros` as kept in the histogram, `seconds` (finite, ≥ 0, clamped) for the sum.
    #[inline(always)]
    fn time(&mut self, which: Time, micros: u64, seconds: f64) {
        let i = which as usize;
        // Auto-resizing up to MAX_MICROS (micros clamps): recording cannot fail.
        let _ = self.times[i].record(micros);
        self.time_sums[i] += seconds;
    }

    /// Adds this period into `into` (64-bit counts).
    pub(crate) fn add_into(&self, into: &mut Period<u64>) {
        into.requests = into.requests.saturating_add(self.requests);
        if into.errors.len() < self.errors.len() {
            into.errors.resize(self.errors.len(), 0);
        }
        for (i, e) in self.errors.iter().enumerate() {
            into.errors[i] = into.errors[i].saturating_add(*e);
        }
        for c in 0..6 {
            into.status[c] = into.status[c].saturating_add(self.status[c]);
        }
        for t in 0..3 {
            for v in self.times[t].iter_recorded() {
                let n = v.count_at_value().as_u64();
                // Auto-resizing up to MAX_MICROS (values were clamped): adding cannot fail.
                let _ = into.times[t].record_n(v.value_iterated_to(), n);
            }
            into.time_sums[t] += self.time_sums[t];
        }
        into.bodies = into.bodies.saturating_add(self.bodies);
        into.bytes = into.bytes.saturating_add(self.bytes);
        into.blocks = into.blocks.saturating_add(self.blocks);
        into.slowest.merge(&self.slowest);
    }

    /// Bytes of heap held by the histograms.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.times.iter().map(|h| h.distinct_values() * std::mem::size_of::<C>()).sum::<usize>()
            + self.errors.capacity() * 8
    }
}

/// One point of the history ring: what finished during one step.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Point {
    step: u64,
    pub(crate) requests: u64,
    pub(crate) errors: u64,
    pub(crate) duration_sum: f64,
    pub(crate) duration_max: f64,
}

impl Point {
    /// Adds `other` (the same step, from another stripe) into this point.
    pub(crate) fn add(&mut self, other: &Point) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.duration_sum += other.duration_sum;
        self.duration_max = self.duration_max.max(other.duration_max);
    }
}

/// What a route keeps once, beside its stripes: everything since start that has left the
/// stripes' current slots, and the `error.type` names. Guarded by the route's own lock, taken
/// when a stripe rotates (twice per window at most), when a label set is registered, and by
/// snapshots.
pub(crate) struct RouteTotals {
    /// `error.type` names, by index.
    pub(crate) error_names: Vec<String>,
    /// Since start, except what the stripes' current slots hold.
    pub(crate) total: Period<u64>,
}

impl RouteTotals {
    pub(crate) fn new() -> Self {
        RouteTotals { error_names: Vec::new(), total: Period::new() }
    }

    /// The index of `error.type` value `name`, adding it if new (past the cap: `_other`).
    pub(crate) fn error_index(&mut self, name: &str) -> usize {
        if let Some(i) = self.error_names.iter().position(|n| n == name) {
            return i;
        }
        if self.error_names.len() >= MAX_ERROR_TYPES {
            return self.error_index_other();
        }
        self.error_names.push(name.to_owned());
        self.error_names.len() - 1
    }

    fn error_index_other(&mut self) -> usize {
        match self.error_names.iter().position(|n| n == OTHER_ERROR) {
            Some(i) => i,
            None => {
                self.error_names.push(OTHER_ERROR.to_owned());
                self.error_names.len() - 1
            }
        }
    }

    /// Heap bytes held (the since-start histograms and the `error.type` names).
    pub(crate) fn heap_bytes(&self) -> usize {
        self.total.heap_bytes() + self.error_names.iter().map(|n| n.capacity() + 24).sum::<usize>()
    }
}

/// What one stripe of a route records: the window's two slots and the history ring. The
/// threads that picked this stripe record into it, under the stripe's own lock; since-start
/// figures are the route's [`RouteTotals`] plus every stripe's current slot.
pub(crate) struct StripeStats {
    /// The window: the previous slot and the current one (each half a window long).
    slots: [Period<u32>; 2],
    /// Index of the current slot in `slots`.
    current: usize,
    /// Slot number (elapsed / slot length) of the current slot.
    epoch: u64,
    /// Whether the previous slot holds the slot just before `epoch` (not an older one).
    previous_valid: bool,
    /// The history step of the last `requests` increment (histograms record into it).
    pub(crate) step: u64,
    history: [Point; HISTORY_POINTS],
}

impl StripeStats {
    pub(crate) fn new() -> Self {
        StripeStats {
            slots: [Period::new(), Period::new()],
            current: 0,
            epoch: 0,
            previous_valid: false,
            step: 0,
            history: [Point::default(); HISTORY_POINTS],
        }
    }

    /// Whether [`rotate`](Self::rotate) to `epoch` has anything to do.
    pub(crate) fn behind(&self, epoch: u64) -> bool {
        epoch > self.epoch
    }

    /// Moves the window to slot `epoch`: the current slot is added to `totals` (it leaves the
    /// stripe's since-start share) and becomes the previous one if it is the slot just before,
    /// else both are cleared.
    pub(crate) fn rotate(&mut self, epoch: u64, totals: &mut Period<u64>) {
        if epoch <= self.epoch {
            return;
        }
        self.slots[self.current].add_into(totals);
        if epoch == self.epoch + 1 {
            self.current ^= 1;
            self.previous_valid = true;
        } else {
            self.slots[self.current ^ 1].clear();
            self.previous_valid = false;
        }
        self.slots[self.current].clear();
        self.epoch = epoch;
    }

    fn point(&mut self, step: u64) -> &mut Point {
        let p = &mut self.history[(step % HISTORY_POINTS as u64) as usize];
        if p.step != step {
            *p = Point { step, ..Point::default() };
        }
        p
    }

    /// `n` finished requests (the `requests` counter).
    pub(crate) fn count(&mut self, step: u64, n: u64, error: Option<usize>, class: u8) {
        self.slots[self.current].count(n, error, class);
        let p = self.point(step);
        p.requests = p.requests.saturating_add(n);
        if error.is_some() {
            p.errors = p.errors.saturating_add(n);
        }
    }

    /// One time sample, in seconds.
    pub(crate) fn time(&mut self, step: u64, which: Time, seconds: f64) {
        let positive = positive(seconds);
        let (us, seconds) =
            if positive { (positive_micros(seconds), seconds.min(MAX_SECONDS)) } else { (0, 0.0) };
        self.slots[self.current].time(which, us, seconds);
        if which == Time::Duration && positive {
            let p = self.point(step);
            p.duration_sum += seconds;
            p.duration_max = p.duration_max.max(seconds);
        }
    }

    /// One traced request's `request.duration`, in seconds (recorded apart with
    /// [`time`](Self::time)): kept if among the current slot's slowest.
    pub(crate) fn traced(&mut self, seconds: f64, sample: Sample) {
        let seconds = if positive(seconds) { seconds.min(MAX_SECONDS) } else { 0.0 };
        let trace = TraceId::to_u128(sample.trace);
        let slow = Slow { seconds, trace, unix_nanos: sample.unix_nanos };
        self.slots[self.current].slowest.offer(slow);
    }

    /// One response's body bytes (`output_bytes`); counts the response.
    pub(crate) fn bytes(&mut self, value: f64) {
        let v = whole(value);
        let slot = &mut self.slots[self.current];
        slot.bytes = slot.bytes.saturating_add(v);
        slot.bodies += 1;
    }

    /// One response's body blocks (`output_blocks`).
    pub(crate) fn blocks(&mut self, value: f64) {
        let v = whole(value);
        let slot = &mut self.slots[self.current];
        slot.blocks = slot.blocks.saturating_add(v);
    }

    /// Adds what this stripe holds since start and not yet in the route's totals (its current
    /// slot) into `since_start`, and its window (previous slot only if it is the one just
    /// before) into `window`.
    pub(crate) fn add_into(&self, since_start: &mut Period<u64>, window: &mut Period<u64>) {
        let cur = &self.slots[self.current];
        cur.add_into(since_start);
        if self.previous_valid {
            self.slots[self.current ^ 1].add_into(window);
        }
        cur.add_into(window);
    }

    /// When the window starts, in nanoseconds since the recorder started.
    pub(crate) fn window_start(&self, slot_nanos: u64) -> u64 {
        let first = if self.previous_valid { self.epoch.saturating_sub(1) } else { self.epoch };
        first.saturating_mul(slot_nanos)
    }

    /// The history, oldest first, ending at step `now_step` (steps with nothing are zero).
    pub(crate) fn history(&self, now_step: u64) -> Vec<Point> {
        let first = (now_step + 1).saturating_sub(HISTORY_POINTS as u64);
        (first..=now_step)
            .map(|step| {
                let p = self.history[(step % HISTORY_POINTS as u64) as usize];
                if p.step == step {
                    p
                } else {
                    Point { step, ..Point::default() }
                }
            })
            .collect()
    }

    /// Heap bytes held (the window slots' histogram counts and error vectors).
    pub(crate) fn heap_bytes(&self) -> usize {
        self.slots.iter().map(Period::heap_bytes).sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stripe's window and its since-start share added to the route's totals.
    fn read(r: &StripeStats, totals: &Period<u64>) -> (Period<u64>, Period<u64>) {
        let mut since = Period::new();
        totals.add_into(&mut since);
        let mut window = Period::new();
        r.add_into(&mut since, &mut window);
        (since, window)
    }

    #[test]
    fn rotation_keeps_the_previous_slot_and_drops_older_ones() {
        let mut totals = Period::new();
        let mut r = StripeStats::new();
        r.count(0, 1, None, 2);
        r.time(0, Time::Duration, 0.001);
        r.rotate(1, &mut totals);
        r.count(0, 2, None, 2);
        assert_eq!(read(&r, &totals).1.requests, 3, "previous slot + current slot");
        assert_eq!(read(&r, &totals).1.times[0].len(), 1);
        r.rotate(2, &mut totals);
        assert_eq!(read(&r, &totals).1.requests, 2, "slot 0 left the window");
        r.rotate(5, &mut totals);
        assert_eq!(read(&r, &totals).1.requests, 0, "a gap clears both");
        let (since, _) = read(&r, &totals);
        assert_eq!(since.requests, 3, "since start keeps everything");
        assert_eq!(since.times[0].len(), 1);
        assert_eq!(r.window_start(10), 50);
    }

    #[test]
    fn since_start_counts_each_sample_once_across_rotations() {
        let mut totals = Period::new();
        let mut r = StripeStats::new();
        for epoch in 0..10 {
            r.rotate(epoch, &mut totals);
            r.count(0, 1, None, 2);
            r.time(0, Time::Duration, 0.002);
            r.bytes(10.0);
            let (since, _) = read(&r, &totals);
            assert_eq!(since.requests, epoch + 1);
            assert_eq!(since.times[0].len(), epoch + 1);
            assert_eq!(since.bytes, 10 * (epoch + 1));
        }
    }

    #[test]
    fn memory_per_route_is_bounded() {
        let fill = |seconds: f64| {
            let mut totals = Period::new();
            let mut r = StripeStats::new();
            for epoch in 0..3 {
                r.rotate(epoch, &mut totals);
                for t in [Time::Duration, Time::Application, Time::Output] {
                    r.time(0, t, seconds);
                }
            }
            (r.heap_bytes(), totals.heap_bytes())
        };
        let counts = time_histogram::<u64>();
        let mut full = counts.clone();
        let _ = full.record(MAX_MICROS);
        assert_eq!(full.distinct_values(), 3328, "counts of a full time histogram");
        // Clamped to 1 h: the largest each histogram can grow.
        let (stripe, totals) = fill(1e9);
        let (small_stripe, small_totals) = fill(0.9);
        eprintln!(
            "heap per stripe: full {stripe} B, under 1 s {small_stripe} B, + {} B of struct; \
             per route's totals: full {totals} B, under 1 s {small_totals} B",
            std::mem::size_of::<StripeStats>()
        );
        assert_eq!(stripe, 2 * 3 * 3328 * 4, "two window halves, 32-bit counts");
        assert_eq!(totals, 3 * 3328 * 8, "since start, 64-bit counts");
        assert_eq!(stripe, STRIPE_MAX_BYTES);
        assert_eq!(totals, TOTALS_MAX_BYTES);
        assert!(small_stripe < 44 * 1024 && small_totals < 44 * 1024);
    }

    #[test]
    fn status_classes_and_micros() {
        assert_eq!(status_class(Some("200")), 2);
        assert_eq!(status_class(Some("503")), 5);
        assert_eq!(status_class(Some("600")), 0);
        assert_eq!(status_class(None), 0);
        assert_eq!(micros(0.0000004), 0);
        assert_eq!(micros(0.0015), 1500);
        assert_eq!(micros(f64::NAN), 0);
        assert_eq!(micros(1e9), MAX_MICROS);
        assert_eq!(micros(f64::INFINITY), 0);
        assert_eq!(micros(-1.0), 0);
        assert_eq!(whole(f64::INFINITY), 0);
        assert_eq!(whole(f64::NEG_INFINITY), 0);
        assert_eq!(whole(f64::NAN), 0);
        assert_eq!(whole(-3.0), 0);
        assert_eq!(whole(12.9), 12);
        for x in [f64::MIN_POSITIVE / 4.0, f64::MIN_POSITIVE, 1e-300, 0.5, 1.0, f64::MAX] {
            assert!(positive(x), "{x:e}");
        }
        for x in [0.0, -0.0, -1e-300, -1.0, f64::INFINITY, f64::NEG_INFINITY, f64::NAN, -f64::NAN] {
            assert!(!positive(x), "{x:e}");
        }
    }

    /// `micros` is `(seconds * 1e6).round()` clamped, on random values, halves and their
    /// neighbours, and values around the clamp.
    #[test]
    fn micros_rounds_as_f64_round() {
        let reference = |s: f64| ((s * 1e6).round() as u64).min(MAX_MICROS);
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut values = vec![0.5e-6, 1.5e-6, 2.5e-6, 0.4999999e-6, 3599.9999995, 3600.0, 3600.1];
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let s = (x >> 11) as f64 / (1u64 << 53) as f64 * 10f64.powi((x % 12) as i32 - 7);
            values.push(s);
            let half = ((x % 10_000_000) as f64 + 0.5) / 1e6;
            values.extend([
                half,
                f64::from_bits(half.to_bits() + 1),
                f64::from_bits(half.to_bits() - 1),
            ]);
        }
        for s in values {
            assert_eq!(micros(s), reference(s), "{s:e}");
        }
    }

    #[test]
    fn error_types_are_capped() {
        let mut r = RouteTotals::new();
        for i in 0..(MAX_ERROR_TYPES + 10) {
            r.error_index(&format!("e{i}"));
        }
        assert_eq!(r.error_names.len(), MAX_ERROR_TYPES + 1);
        assert_eq!(r.error_names.last().map(String::as_str), Some(OTHER_ERROR));
    }

    #[test]
    fn history_ring_forgets_old_steps() {
        let mut r = StripeStats::new();
        r.count(3, 1, Some(0), 5);
        r.count(3 + HISTORY_POINTS as u64, 4, None, 2);
        let h = r.history(3 + HISTORY_POINTS as u64);
        assert_eq!(h.len(), HISTORY_POINTS);
        assert_eq!(h.iter().map(|p| p.requests).sum::<u64>(), 4);
        assert_eq!(h.last().map(|p| p.requests), Some(4));
    }
}
