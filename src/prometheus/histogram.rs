//! Pre-bucketed, striped histogram storage: one record is one native-bucket increment and one
//! sum add on the recording thread's own cache lines; the classic `le` buckets are derived from
//! the native ones at scrape time (or counted beside them when their bounds are not powers of
//! two). No per-sample storage, no lock, no allocation per record.
//!
//! Native buckets follow Prometheus schema 3: bucket `i` holds `(2^((i-1)/8), 2^(i/8)]`. Each
//! layout has a fixed range `(2^min_exp, 2^max_exp]`: a positive value at or under
//! `2^min_exp` (the zero threshold) counts in the zero bucket, a value over `2^max_exp` in the
//! top bucket (its sum stays exact; classic `+Inf` holds it as it should).

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::OnceLock;

use crossbeam_utils::CachePadded;

use crate::exemplar::{self, Exemplar, ExemplarSlot};

/// Native histogram schema: 2^3 = 8 buckets per power of two, each 2^(1/8) ≈ 1.09 wide.
pub(crate) const SCHEMA: i32 = 3;
const PER_OCTAVE: i32 = 1 << SCHEMA;

/// Counters per cache line (the padded line is 128 bytes on x86_64: two 64-byte lines, which
/// also keeps the adjacent-line prefetcher from pairing stripes).
const LINE: usize = 16;
type Line = CachePadded<[AtomicU64; LINE]>;

fn new_line() -> Box<Line> {
    Box::new(CachePadded::new(std::array::from_fn(|_| AtomicU64::new(0))))
}

/// How many stripes a series has: threads take stripe `n mod STRIPES` in the order they first
/// record, so up to this many threads never share a written cache line.
pub(crate) const STRIPES: usize = 8;

static NEXT_STRIPE: AtomicUsize = AtomicUsize::new(0);
thread_local! {
    /// The thread's stripe, `STRIPES` until it first records.
    static STRIPE: Cell<usize> = const { Cell::new(STRIPES) };
}

/// The calling thread's stripe, below [`STRIPES`] (0 while its thread-locals are being
/// destroyed).
#[inline]
pub(crate) fn stripe_index() -> usize {
    const _: () = assert!(STRIPES.is_power_of_two());
    let i = STRIPE
        .try_with(|s| {
            let i = s.get();
            if i < STRIPES {
                return i;
            }
            let i = NEXT_STRIPE.fetch_add(1, Relaxed) % STRIPES;
            s.set(i);
            i
        })
        .unwrap_or(0);
    i & (STRIPES - 1)
}

const MANTISSA: u64 = (1 << 52) - 1;
/// Mantissa bits of 2^(k/8), k = 0..=7 (the bucket boundaries inside one power of two), and a
/// sentinel above every mantissa.
const BOUNDARY: [u64; 9] = [
    0x0,
    0x172b83c7d517b,
    0x306fe0a31b715,
    0x4bfdad5362a27,
    0x6a09e667f3bcd,
    0x8ace5422aa0db,
    0xae89f995ad3ad,
    0xd5818dcfba487,
    u64::MAX,
];
/// For the top 8 mantissa bits `t`: how many boundaries `k >= 1` lie below `t << 44`. At most
/// one boundary lies inside a 1/256 slice (they are 9 % apart), so one compare finishes.
const BELOW: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut t = 0;
    while t < 256 {
        let mut k = 1;
        while k < 8 && BOUNDARY[k] < ((t as u64) << 44) {
            k += 1;
        }
        table[t] = (k - 1) as u8;
        t += 1;
    }
    table
};
/// For the top 8 mantissa bits `t`: the next boundary at or above `t << 44` (the one compare).
const NEXT: [u64; 256] = {
    let mut table = [0u64; 256];
    let mut t = 0;
    while t < 256 {
        table[t] = BOUNDARY[BELOW[t] as usize + 1];
        t += 1;
    }
    table
};

/// The schema-3 bucket index of a positive `v`: `i` with `2^((i-1)/8) < v <= 2^(i/8)`, from the
/// bits of the float (exponent, then a 256-entry table and one compare on the mantissa).
/// Subnormals get a very low index, `+inf` a very high one; callers clamp.
#[inline]
pub(crate) fn native_index(v: f64) -> i32 {
    let bits = v.to_bits();
    let exp = ((bits >> 52) & 0x7ff) as i32 - 1023;
    let m = bits & MANTISSA;
    if m == 0 {
        return exp * PER_OCTAVE;
    }
    let t = (m >> 44) as usize;
    let j = i32::from(BELOW[t]) + i32::from(NEXT[t] < m);
    exp * PER_OCTAVE + j + 1
}

/// How a histogram keeps its sum: exactly, as integers, whenever the unit allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SumKind {
    /// Seconds kept as integer nanoseconds (each sample rounded to the nanosecond).
    Nanos,
    /// Whole units (bytes, frames), each sample rounded to an integer.
    Units,
    /// Any other value: an `f64` (a compare-and-swap loop on the thread's own stripe).
    Float,
}

impl SumKind {
    /// `scaled` rounded to an integer (half away from zero). One sample adds at most 2^53
    /// units (104 days in nanoseconds, 9 PB in bytes), so no sum of realistic samples wraps;
    /// two's complement, so negative samples subtract.
    #[inline]
    fn fixed(scaled: f64) -> u64 {
        const MAX: f64 = (1u64 << 53) as f64;
        let x = scaled.clamp(-MAX, MAX);
        let rounded = if x >= 0.0 { x + 0.5 } else { x - 0.5 };
        rounded as i64 as u64
    }

    /// [`fixed`](Self::fixed) of a positive `scaled` (or `+inf`): the same result, without
    /// the lower clamp and the sign test.
    #[inline]
    fn fixed_positive(scaled: f64) -> u64 {
        const MAX: f64 = (1u64 << 53) as f64;
        (scaled.min(MAX) + 0.5) as i64 as u64
    }

    /// What a sample is multiplied by before it is rounded into an integer sum (`Float`: not
    /// used).
    fn scale(self) -> f64 {
        match self {
            SumKind::Nanos => 1e9,
            SumKind::Units | SumKind::Float => 1.0,
        }
    }

    fn value(self, raw: u64) -> f64 {
        match self {
            SumKind::Nanos => raw as i64 as f64 / 1e9,
            SumKind::Units => raw as i64 as f64,
            SumKind::Float => f64::from_bits(raw),
        }
    }
}

/// The bucket layout of a histogram: classic bounds and the native range.
#[derive(Clone, Debug)]
pub(crate) struct Layout {
    /// Classic upper bounds (without `+Inf`), strictly increasing.
    pub(crate) classic: Box<[f64]>,
    /// Whether every classic bound is `0` or a power of two inside the native range (then the
    /// classic counts are sums of native buckets and need no counters of their own).
    derived: bool,
    /// Zero threshold `2^min_exp` (the top native bucket ends at `2^max_exp`).
    pub(crate) min_exp: i32,
    pub(crate) sum: SumKind,
    /// `sum.scale()`, read by every record (one multiply instead of a match on `sum`).
    scale: f64,
    /// Index of native slot 0, and the last slot.
    first: i32,
    top: usize,
}

/// Slots of a stripe's head line.
const SUM: usize = 0;
/// Samples `<= 0` (classic `le="0"`; native zero bucket).
const NON_POSITIVE: usize = 1;
/// Samples in `(0, zero threshold]` (native zero bucket).
const TINY: usize = 2;

impl Layout {
    pub(crate) fn new(classic: &[f64], min_exp: i32, max_exp: i32, sum: SumKind) -> Layout {
        let derived = classic.iter().all(|&b| {
            b == 0.0
                || (b > 0.0
                    && b.to_bits() & MANTISSA == 0
                    && (min_exp..max_exp).contains(&(native_index(b) / PER_OCTAVE)))
        });
        let first = min_exp * PER_OCTAVE + 1;
        let top = ((max_exp - min_exp) * PER_OCTAVE) as usize - 1;
        Layout { classic: classic.into(), derived, min_exp, sum, scale: sum.scale(), first, top }
    }

    /// The zero threshold (`2^min_exp`): positive samples at or under it are in the zero bucket.
    pub(crate) fn zero_threshold(&self) -> f64 {
        2f64.powi(self.min_exp)
    }

    /// Index of the lowest native bucket kept.
    pub(crate) fn first_native(&self) -> i32 {
        self.first
    }

    fn native_len(&self) -> usize {
        self.top + 1
    }

    /// Classic counters a stripe keeps (none when they are derived from native buckets).
    fn counted_len(&self) -> usize {
        if self.derived {
            0
        } else {
            self.classic.len() + 1
        }
    }
}

/// One thread's share of a series: the sum and zero counts on a padded line of their own, the
/// classic counters (if counted) on padded lines, the native buckets in 16-bucket lines
/// allocated the first time a sample lands in them.
struct Stripe {
    head: Line,
    counted: Box<[Line]>,
    native: Box<[OnceLock<Box<Line>>]>,
}

impl Stripe {
    fn new(layout: &Layout) -> Stripe {
        let counted = (0..layout.counted_len().div_ceil(LINE)).map(|_| *new_line()).collect();
        let native = (0..layout.native_len().div_ceil(LINE)).map(|_| OnceLock::new()).collect();
        Stripe { head: *new_line(), counted, native }
    }

    #[inline]
    fn counted(&self, k: usize) -> &AtomicU64 {
        &self.counted[k / LINE][k % LINE]
    }

    #[inline]
    fn native(&self, n: usize) -> &AtomicU64 {
        &self.native[n / LINE].get_or_init(new_line)[n % LINE]
    }
}

/// A histogram series' storage. Memory: a few pointers until a thread records, then per
/// recording thread (up to [`STRIPES`]) one 128-byte line of fixed slots plus one 128-byte line
/// per 16 native buckets that received a sample; independent of the request rate.
pub(crate) struct HistogramCore {
    layout: Layout,
    stripes: [OnceLock<Box<Stripe>>; STRIPES],
    /// The latest exemplar of each classic bucket (the last one is `+Inf`), allocated with the
    /// first exemplar: only series recorded through [`WithExemplars`] ever have one.
    exemplars: OnceLock<Box<[ExemplarSlot]>>,
}

impl std::fmt::Debug for HistogramCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HistogramCore").field("layout", &self.layout).finish_non_exhaustive()
    }
}

impl HistogramCore {
    pub(crate) fn new(layout: Layout) -> HistogramCore {
        HistogramCore {
            layout,
            stripes: std::array::from_fn(|_| OnceLock::new()),
            exemplars: OnceLock::new(),
        }
    }

    pub(crate) fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Records one sample: one bucket increment and one sum add on the calling thread's stripe
    /// (plus one classic increment if the classic bounds are not powers of two). `NaN` is not
    /// a measurement and is ignored; a zero adds nothing to the sum, so it skips the add.
    ///
    /// The common case (the thread's stripe and the sample's native line exist) calls nothing:
    /// the first sample of a stripe or of a native line goes through
    /// [`record_first`](Self::record_first), out of line, which makes them and records.
    #[inline(always)]
    pub(crate) fn record(&self, v: f64) {
        let layout = &self.layout;
        let Some(stripe) = self.stripes[stripe_index()].get() else {
            return self.record_first(v);
        };
        if v > 0.0 {
            let n = native_index(v) - layout.first;
            if n >= 0 {
                let n = (n as usize).min(layout.top);
                let Some(line) = stripe.native.get(n / LINE).and_then(OnceLock::get) else {
                    return self.record_first(v);
                };
                line[n % LINE].fetch_add(1, Relaxed);
            } else {
                stripe.head[TINY].fetch_add(1, Relaxed);
            }
            self.count_classic(stripe, v);
            self.add_to_sum(stripe, v, SumKind::fixed_positive);
        } else if v <= 0.0 {
            stripe.head[NON_POSITIVE].fetch_add(1, Relaxed);
            self.count_classic(stripe, v);
            if v != 0.0 {
                // (A zero adds nothing to the sum.)
                self.add_to_sum(stripe, v, SumKind::fixed);
            }
        }
        // Else `NaN`: nothing.
    }

    /// The classic counter of `v`, when classic counts are not derived from native buckets.
    #[inline(always)]
    fn count_classic(&self, stripe: &Stripe, v: f64) {
        let layout = &self.layout;
        if !layout.derived {
            let k = layout.classic.partition_point(|&b| b < v);
            stripe.counted(k).fetch_add(1, Relaxed);
        }
    }

    /// Adds `v` to the stripe's sum: scaled and rounded by `fixed` into the integer sum, or
    /// added to the float sum.
    #[inline(always)]
    fn add_to_sum(&self, stripe: &Stripe, v: f64, fixed: impl Fn(f64) -> u64) {
        let layout = &self.layout;
        let sum = &stripe.head[SUM];
        if layout.sum == SumKind::Float {
            let _ =
                sum.fetch_update(Relaxed, Relaxed, |old| Some((f64::from_bits(old) + v).to_bits()));
        } else {
            sum.fetch_add(fixed(v * layout.scale), Relaxed);
        }
    }

    /// [`record`](Self::record) of a sample whose stripe or native line does not exist yet:
    /// makes them, then records.
    #[cold]
    #[inline(never)]
    fn record_first(&self, v: f64) {
        let layout = &self.layout;
        let stripe = self.stripes[stripe_index()].get_or_init(|| Box::new(Stripe::new(layout)));
        if v > 0.0 {
            let n = native_index(v) - layout.first;
            if n >= 0 {
                let _ = stripe.native((n as usize).min(layout.top));
            }
        }
        self.record(v);
    }

    /// Keeps `v`, recorded under `sample`, as the exemplar of its classic bucket (latest wins;
    /// see [`ExemplarSlot`]).
    #[inline(never)]
    pub(crate) fn offer_exemplar(&self, v: f64, sample: exemplar::Sample) {
        if v.is_nan() {
            return;
        }
        let classic = &self.layout.classic;
        let slots = self
            .exemplars
            .get_or_init(|| (0..=classic.len()).map(|_| ExemplarSlot::default()).collect());
        slots[classic.partition_point(|&b| b < v)].offer(v, sample);
    }

    /// The exemplar of classic bucket `k` (`k == classic.len()`: `+Inf`), if any.
    pub(crate) fn exemplar(&self, k: usize) -> Option<Exemplar> {
        self.exemplars.get()?.get(k)?.read()
    }

    /// Reads every stripe: the buckets first, the sum last, and the count as the sum of the
    /// buckets, so `_count` equals the `+Inf` bucket and the native buckets in every scrape.
    /// Counts only grow: a sample recorded before this call is in the snapshot.
    pub(crate) fn snapshot(&self) -> Snapshot {
        let layout = &self.layout;
        let mut native = vec![0u64; layout.native_len()];
        let mut non_positive = 0;
        let mut tiny = 0;
        let mut counted = vec![0u64; layout.counted_len()];
        let stripes: Vec<&Stripe> =
            self.stripes.iter().filter_map(|s| s.get()).map(|s| &**s).collect();
        for stripe in &stripes {
            non_positive += stripe.head[NON_POSITIVE].load(Relaxed);
            tiny += stripe.head[TINY].load(Relaxed);
            for (cell, counts) in stripe.native.iter().zip(native.chunks_mut(LINE)) {
                if let Some(line) = cell.get() {
                    for (count, slot) in counts.iter_mut().zip(line.iter()) {
                        *count += slot.load(Relaxed);
                    }
                }
            }
            for (k, count) in counted.iter_mut().enumerate() {
                *count += stripe.counted(k).load(Relaxed);
            }
        }
        let mut sum_raw: u64 = 0;
        let mut sum_float = 0.0;
        for stripe in &stripes {
            let raw = stripe.head[SUM].load(Relaxed);
            match layout.sum {
                SumKind::Float => sum_float += f64::from_bits(raw),
                _ => sum_raw = sum_raw.wrapping_add(raw),
            }
        }
        let sum = match layout.sum {
            SumKind::Float => sum_float,
            kind => kind.value(sum_raw),
        };
        let native_total: u64 = native.iter().sum();
        let count = non_positive + tiny + native_total;

        // Classic cumulative counts (without +Inf), derived or counted.
        let classic = if layout.derived {
            let first = layout.first_native();
            let mut cumulative = Vec::with_capacity(layout.classic.len());
            let mut acc = non_positive + tiny;
            let mut next = 0usize; // next native slot not yet added
            for &bound in layout.classic.iter() {
                if bound == 0.0 {
                    cumulative.push(non_positive);
                    continue;
                }
                let upto = (native_index(bound) - first + 1) as usize;
                while next < upto {
                    acc += native[next];
                    next += 1;
                }
                cumulative.push(acc);
            }
            cumulative
        } else {
            let mut acc = 0;
            counted[..layout.classic.len()]
                .iter()
                .map(|c| {
                    acc += c;
                    acc
                })
                .collect()
        };
        // Counted classic buckets: the count is theirs (equal at rest; a record in progress
        // may have reached one array and not the other).
        let count = if layout.derived { count } else { counted.iter().sum() };
        Snapshot { classic, count, sum, zero_count: non_positive + tiny, native }
    }
}

/// One histogram series as read by a scrape.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Snapshot {
    /// Cumulative counts for each classic bound (the `+Inf` bucket is `count`).
    pub(crate) classic: Vec<u64>,
    pub(crate) count: u64,
    pub(crate) sum: f64,
    /// Native zero bucket (samples at or under the zero threshold).
    pub(crate) zero_count: u64,
    /// Native bucket counts (not cumulative), slot `n` is bucket `first_native() + n`.
    pub(crate) native: Vec<u64>,
}

impl Snapshot {
    /// Native buckets as Prometheus spans and deltas: `(offset, length)` per run of non-empty
    /// buckets, and each bucket's count minus the previous one's.
    pub(crate) fn spans(&self, first: i32) -> (Vec<(i32, u32)>, Vec<i64>) {
        let mut spans: Vec<(i32, u32)> = Vec::new();
        let mut deltas = Vec::new();
        let mut previous_count = 0i64;
        let mut last_index: Option<i32> = None;
        for (n, &count) in self.native.iter().enumerate() {
            if count == 0 {
                continue;
            }
            let index = first + n as i32;
            match last_index {
                Some(last) if index == last + 1 => {
                    if let Some(span) = spans.last_mut() {
                        span.1 += 1;
                    }
                }
                Some(last) => spans.push((index - last - 1, 1)),
                None => spans.push((index, 1)),
            }
            deltas.push(count as i64 - previous_count);
            previous_count = count as i64;
            last_index = Some(index);
        }
        (spans, deltas)
    }
}

/// A counter series: one padded word per stripe, summed at scrape.
pub(crate) struct CounterCore {
    stripes: [CachePadded<AtomicU64>; STRIPES],
    /// The latest exemplar (only counters recorded through [`WithExemplars`] have one).
    exemplar: OnceLock<Box<ExemplarSlot>>,
}

impl CounterCore {
    pub(crate) fn new() -> CounterCore {
        CounterCore {
            stripes: std::array::from_fn(|_| CachePadded::new(AtomicU64::new(0))),
            exemplar: OnceLock::new(),
        }
    }

    /// The counter's exemplar, if any.
    pub(crate) fn exemplar(&self) -> Option<Exemplar> {
        self.exemplar.get()?.read()
    }

    pub(crate) fn value(&self) -> u64 {
        self.stripes.iter().fold(0u64, |acc, s| acc.wrapping_add(s.load(Relaxed)))
    }
}

impl metrics::CounterFn for CounterCore {
    #[inline]
    fn increment(&self, value: u64) {
        self.stripes[stripe_index()].fetch_add(value, Relaxed);
    }

    /// Raises the counter to `value` if it is higher (a counter never goes down).
    fn absolute(&self, value: u64) {
        let current = self.value();
        if value > current {
            self.stripes[stripe_index()].fetch_add(value - current, Relaxed);
        }
    }
}

impl metrics::HistogramFn for HistogramCore {
    #[inline(always)]
    fn record(&self, value: f64) {
        HistogramCore::record(self, value);
    }
}

/// The handle of a series that layers with exemplars on record with a trace id (see
/// `exemplar::want`): records as the series does, then keeps the request's trace id as the
/// exemplar when one is set for this recording (`exemplar::current`). Other series are
/// registered without it, and pay nothing for exemplars.
pub(crate) struct WithExemplars<T>(pub(crate) std::sync::Arc<T>);

impl metrics::HistogramFn for WithExemplars<HistogramCore> {
    #[inline]
    fn record(&self, value: f64) {
        self.0.record(value);
        if let Some(sample) = exemplar::current() {
            self.0.offer_exemplar(value, sample);
        }
    }
}

impl metrics::CounterFn for WithExemplars<CounterCore> {
    #[inline]
    fn increment(&self, value: u64) {
        metrics::CounterFn::increment(&*self.0, value);
        if let Some(sample) = exemplar::current() {
            self.0.exemplar.get_or_init(Box::default).offer(value as f64, sample);
        }
    }

    fn absolute(&self, value: u64) {
        metrics::CounterFn::absolute(&*self.0, value);
    }
}

/// A gauge series: one `f64` (gauges are set when read or changed, not per sample).
pub(crate) struct GaugeCore(AtomicU64);

impl GaugeCore {
    pub(crate) fn new() -> GaugeCore {
        GaugeCore(AtomicU64::new(0f64.to_bits()))
    }

    pub(crate) fn value(&self) -> f64 {
        f64::from_bits(self.0.load(Relaxed))
    }

    fn update(&self, f: impl Fn(f64) -> f64) {
        let _ = self.0.fetch_update(Relaxed, Relaxed, |old| Some(f(f64::from_bits(old)).to_bits()));
    }
}

impl metrics::GaugeFn for GaugeCore {
    fn increment(&self, value: f64) {
        self.update(|v| v + value);
    }
    fn decrement(&self, value: f64) {
        self.update(|v| v - value);
    }
    fn set(&self, value: f64) {
        self.0.store(value.to_bits(), Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The index Prometheus defines, computed the slow way.
    fn reference_index(v: f64) -> i32 {
        let i = (v.log2() * 8.0).ceil() as i32;
        // Correct floating-point error at boundaries: i is the least with v <= 2^(i/8).
        let bound = |i: i32| 2f64.powf(f64::from(i) / 8.0);
        let mut i = i;
        while v > bound(i) {
            i += 1;
        }
        while i > i32::MIN + 1 && v <= bound(i - 1) {
            i -= 1;
        }
        i
    }

    #[test]
    fn native_index_matches_the_schema_definition() {
        let mut v = 1e-9;
        while v < 1e12 {
            for x in [v, v * 1.0000001, v * 0.9999999] {
                assert_eq!(native_index(x), reference_index(x), "{x}");
            }
            v *= 1.013;
        }
        for k in -80..80 {
            let b = 2f64.powf(f64::from(k) / 8.0);
            assert_eq!(native_index(b), reference_index(b), "boundary {k}: {b}");
        }
        assert_eq!(native_index(1.0), 0);
        assert_eq!(native_index(2.0), 8);
        assert_eq!(native_index(1.05), 1);
        assert_eq!(native_index(0.5), -8);
    }

    fn seconds() -> Layout {
        Layout::new(crate::prometheus::SECONDS_BUCKETS, -30, 12, SumKind::Nanos)
    }

    #[test]
    fn classic_counts_are_derived_from_native_buckets() {
        let layout = seconds();
        assert!(layout.derived);
        let h = HistogramCore::new(layout.clone());
        for v in [0.0, 0.0, 1e-12, 0.000_040, 0.02, 0.03125, 0.04, 33.0, 1e9, f64::INFINITY] {
            h.record(v);
        }
        h.record(f64::NAN);
        let s = h.snapshot();
        assert_eq!(s.count, 10);
        assert_eq!(s.zero_count, 3);
        assert_eq!(s.native.iter().sum::<u64>(), 7);
        let at = |b: f64| s.classic[layout.classic.iter().position(|&x| x == b).expect("bound")];
        assert_eq!(at(0.0), 2);
        assert_eq!(at(0.000003814697265625), 3);
        assert_eq!(at(0.00006103515625), 4);
        assert_eq!(at(0.015625), 4);
        assert_eq!(at(0.03125), 6, "le is inclusive");
        assert_eq!(at(32.0), 7);
        assert!(s.sum.is_finite() && s.sum > 1e7, "huge samples are clamped, not wrapped");
    }

    #[test]
    fn counted_classic_buckets_when_bounds_are_not_powers_of_two() {
        let layout = Layout::new(crate::prometheus::OTEL_SECONDS_BUCKETS, -30, 12, SumKind::Nanos);
        assert!(!layout.derived);
        let h = HistogramCore::new(layout);
        for v in [0.001, 0.005, 0.006, 20.0] {
            h.record(v);
        }
        let s = h.snapshot();
        assert_eq!(s.count, 4);
        assert_eq!(s.classic[0], 2, "le=0.005 holds 0.001 and 0.005");
        assert_eq!(s.classic[1], 3);
        assert_eq!(*s.classic.last().expect("bounds"), 3, "20 s is over 10 s");
        assert!((s.sum - 20.012).abs() < 1e-12);
    }

    #[test]
    fn sums_are_exact_in_nanoseconds_and_units() {
        let h = HistogramCore::new(seconds());
        for _ in 0..1000 {
            h.record(0.000_001);
        }
        assert_eq!(h.snapshot().sum, 0.001);
        let b = HistogramCore::new(Layout::new(
            crate::prometheus::BYTES_BUCKETS,
            -1,
            40,
            SumKind::Units,
        ));
        b.record(12.0);
        b.record(0.0);
        b.record(1e12);
        let s = b.snapshot();
        assert_eq!(s.sum, 1e12 + 12.0);
        assert_eq!(s.classic[0], 1);
        assert_eq!(s.classic[1], 2, "12 B in le=16");
        assert_eq!(s.count, 3);
    }

    #[test]
    fn spans_and_deltas() {
        let s = Snapshot {
            classic: vec![],
            count: 6,
            sum: 0.0,
            zero_count: 0,
            native: vec![0, 2, 3, 0, 0, 1, 0],
        };
        let (spans, deltas) = s.spans(-5);
        assert_eq!(spans, vec![(-4, 2), (2, 1)]);
        assert_eq!(deltas, vec![2, 1, -2]);
    }
}
