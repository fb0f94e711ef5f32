//! Exemplars: the trace id of a request, carried from the layer to a recorder that keeps it
//! next to the histogram bucket (and counter) the request was recorded in.
//!
//! - [`TraceId`]: a W3C trace id (16 bytes, not all zeros), parsed from a `traceparent` header
//!   without allocating, formatted as 32 lowercase hex digits without allocating.
//! - The hand-off: the layer sets the request's [`Sample`] (trace id and wall-clock time) in a
//!   thread-local ([`Scope`]) right before it records the metrics that carry exemplars and
//!   clears it right after. A recorder that knows about exemplars (this crate's Prometheus
//!   recorder, and the live recorder's slowest requests) reads it with [`current`] inside its `record`/`increment`; every other recorder
//!   never looks, so the layer works the same with any recorder. Nothing crosses an `.await`:
//!   the recordings run synchronously on the thread that set it.
//! - [`ExemplarSlot`]: the latest exemplar of one bucket, lock-free and without `unsafe`: a
//!   sequence lock over atomics; a writer that finds the slot busy skips (latest wins, and a
//!   skipped exemplar is never a lost sample: the count and sum are recorded apart).

use std::cell::Cell;
use std::fmt;
use std::num::NonZeroU128;
use std::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

/// A W3C Trace Context trace id: 16 bytes, not all zero.
///
/// Made by [`from_traceparent`](Self::from_traceparent) from a `traceparent` header (what the
/// layer does by default with [`VitalsLayerBuilder::exemplars`](crate::VitalsLayerBuilder::exemplars)), by
/// [`from_hex`](Self::from_hex), or from the 16 bytes or the `u128` your tracing library holds
/// (OpenTelemetry's `TraceId::to_bytes()`). Displayed as 32 lowercase hex digits, as in the
/// header and in Prometheus exemplars.
///
/// ```
/// use tower_vitals::TraceId;
/// let header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
/// let id = TraceId::from_traceparent(header.as_bytes()).expect("a valid header");
/// assert_eq!(id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
/// assert_eq!(TraceId::from_bytes([0; 16]), None); // all zeros is not a trace id
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TraceId(NonZeroU128);

impl TraceId {
    /// The trace id whose big-endian bytes make `id`; `None` for 0 (invalid).
    #[inline]
    pub const fn from_u128(id: u128) -> Option<TraceId> {
        match NonZeroU128::new(id) {
            Some(id) => Some(TraceId(id)),
            None => None,
        }
    }

    /// The trace id of these 16 bytes (in the order the hex form shows them); `None` when they
    /// are all zero (invalid).
    #[inline]
    pub const fn from_bytes(bytes: [u8; 16]) -> Option<TraceId> {
        TraceId::from_u128(u128::from_be_bytes(bytes))
    }

    /// The 16 bytes, in the order the hex form shows them.
    #[inline]
    pub const fn to_bytes(self) -> [u8; 16] {
        self.0.get().to_be_bytes()
    }

    /// The id as one number (the hex form, read as a big-endian integer).
    #[inline]
    pub const fn to_u128(self) -> u128 {
        self.0.get()
    }

    /// The trace id of 32 lowercase hex digits, not all zero. Anything else (other length,
    /// uppercase, other characters) is `None`.
    pub fn from_hex(hex: &str) -> Option<TraceId> {
        let hex: &[u8; 32] = hex.as_bytes().try_into().ok()?;
        TraceId::from_u128(hex_u128(hex)?)
    }

    /// The trace-id field of a W3C `traceparent` header value
    /// (`version-traceid-parentid-flags`, e.g.
    /// `00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01`), if the value is valid:
    /// every field lowercase hex of its length, the version not `ff`, the trace id and the
    /// parent id not all zeros; version `00` exactly 55 characters, a later version at least
    /// 55 with a `-` after the flags if longer (the spec's rule for versions it does not know
    /// yet). Anything else is `None`: never an error, never an allocation.
    pub fn from_traceparent(value: &[u8]) -> Option<TraceId> {
        let head: &[u8; 55] = value.get(..55)?.try_into().ok()?;
        if head[2] != b'-' || head[35] != b'-' || head[52] != b'-' {
            return None;
        }
        let version = hex_u8([head[0], head[1]])?;
        match version {
            0xff => return None,
            0 if value.len() != 55 => return None,
            _ if value.len() > 55 && value[55] != b'-' => return None,
            _ => {}
        }
        hex_u8([head[53], head[54]])?; // the flags
                                       // Eight digits per word; every word checked before any is decoded (one branch).
        let word = |at: usize| {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&head[at..at + 8]);
            u64::from_le_bytes(bytes)
        };
        let (t0, t1, t2, t3) = (word(3), word(11), word(19), word(27));
        let (p0, p1) = (word(36), word(44));
        let bad = not_hex(t0) | not_hex(t1) | not_hex(t2) | not_hex(t3) | not_hex(p0) | not_hex(p1);
        const ZEROS: u64 = u64::from_le_bytes(*b"00000000");
        if bad != 0 || (p0 == ZEROS && p1 == ZEROS) {
            return None;
        }
        let high = u64::from(hex_value(t0)) << 32 | u64::from(hex_value(t1));
        let low = u64::from(hex_value(t2)) << 32 | u64::from(hex_value(t3));
        let id = u128::from(high) << 64 | u128::from(low);
        TraceId::from_u128(id)
    }

    /// The 32 lowercase hex digits, on the stack.
    #[inline]
    pub fn to_hex(self) -> [u8; 32] {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let id = self.0.get();
        let mut out = [0u8; 32];
        for (i, digit) in out.iter_mut().enumerate() {
            *digit = DIGITS[((id >> (124 - 4 * i)) & 0xf) as usize];
        }
        out
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hex = self.to_hex();
        // Hex digits are ASCII: the conversion cannot fail.
        f.write_str(std::str::from_utf8(&hex).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceId({self})")
    }
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// For eight ASCII bytes in a word: the high bit of each byte that is >= `bound`. (Adding
/// `0x80 - bound` sets a byte's high bit iff the byte is >= bound, with no carry into the next
/// byte: 0x7f + 0x50 < 0x100. Non-ASCII bytes may carry: `not_hex` rejects them apart.)
#[inline(always)]
fn at_least(x: u64, bound: u8) -> u64 {
    x.wrapping_add(ONES * u64::from(0x80 - bound)) & HIGH
}

/// Non-zero iff one of the eight bytes of `x` is not a lowercase hex digit (`0-9`, `a-f`).
/// All eight at once in one `u64` (SWAR): the layer runs this for each request that carries a
/// `traceparent`.
#[inline(always)]
fn not_hex(x: u64) -> u64 {
    let digit = at_least(x, b'0') & !at_least(x, b'9' + 1);
    let letter = at_least(x, b'a') & !at_least(x, b'f' + 1);
    (x & HIGH) | ((digit | letter) ^ HIGH)
}

/// The value of eight lowercase hex digits (the first one the most significant), once
/// [`not_hex`] said they are.
#[inline(always)]
fn hex_value(x: u64) -> u32 {
    // '0'..'9' are 0x30..0x39, 'a'..'f' are 0x61..0x66: the low nibble, plus 9 for letters
    // (the bytes with bit 0x40).
    let nibbles = (x & (ONES * 0x0f)) + ((x >> 6) & ONES) * 9;
    // First digit in the most significant byte, then pairs of nibbles into bytes, bytes into
    // 16-bit halves, halves into the word.
    let n = nibbles.swap_bytes();
    let n = (n | n >> 4) & 0x00ff_00ff_00ff_00ff;
    let n = (n | n >> 8) & 0x0000_ffff_0000_ffff;
    let n = (n | n >> 16) & 0x0000_0000_ffff_ffff;
    n as u32
}

/// Eight lowercase hex digits as a number, or `None`.
#[inline]
fn hex_u32(digits: [u8; 8]) -> Option<u32> {
    let x = u64::from_le_bytes(digits);
    (not_hex(x) == 0).then(|| hex_value(x))
}

/// 32 lowercase hex digits as a number.
fn hex_u128(digits: &[u8; 32]) -> Option<u128> {
    let mut id = 0u128;
    for chunk in digits.chunks_exact(8) {
        let word = hex_u32(chunk.try_into().ok()?)?;
        id = id << 32 | u128::from(word);
    }
    Some(id)
}

/// Two lowercase hex digits.
#[inline]
fn hex_u8(digits: [u8; 2]) -> Option<u8> {
    let digit = |b: u8| match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    };
    Some(digit(digits[0])? << 4 | digit(digits[1])?)
}

/// Where a layer with exemplars on takes each request's trace id from.
#[derive(Clone)]
pub(crate) enum TraceIdSource {
    /// The `traceparent` request header.
    Traceparent,
    /// The user's function of the request head.
    Function(TraceIdFn),
}

/// A user function that finds a request's trace id in its head.
pub(crate) type TraceIdFn =
    std::sync::Arc<dyn Fn(&http::request::Parts) -> Option<TraceId> + Send + Sync>;

/// The `traceparent` header's trace id, if present and valid.
#[inline]
pub(crate) fn from_headers(headers: &http::HeaderMap) -> Option<TraceId> {
    let value = headers.get(TRACEPARENT)?;
    TraceId::from_traceparent(value.as_bytes())
}

/// The W3C Trace Context request header.
const TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");

/// What the layer hands to the recorder with a recording: the request's trace id and when
/// the request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Sample {
    pub(crate) trace: TraceId,
    /// Nanoseconds since the Unix epoch.
    pub(crate) unix_nanos: u64,
}

thread_local! {
    /// The sample of the recordings running on this thread (set by [`Scope`]).
    static CURRENT: Cell<Option<Sample>> = const { Cell::new(None) };
}

/// The trace id and time of the request whose metrics are being recorded on this thread right
/// now, if the layer has exemplars on and the request had a trace id. Recorders call this in
/// `record`/`increment`; it is `None` everywhere else.
#[cfg_attr(not(any(feature = "prometheus", feature = "live")), allow(dead_code))]
#[inline]
pub(crate) fn current() -> Option<Sample> {
    CURRENT.with(Cell::get)
}

/// While alive, [`current`] returns its sample on this thread (cleared on drop, also when a
/// recorder panics).
pub(crate) struct Scope(());

impl Scope {
    #[inline]
    pub(crate) fn enter(sample: Sample) -> Scope {
        CURRENT.with(|current| current.set(Some(sample)));
        Scope(())
    }
}

impl Drop for Scope {
    #[inline]
    fn drop(&mut self) {
        CURRENT.with(|current| current.set(None));
    }
}

/// Names of the metrics that layers with exemplars on record with a trace id (see [`want`]).
static WANTED: Mutex<Vec<Box<str>>> = Mutex::new(Vec::new());
/// Whether [`WANTED`] has any name (a recorder registering a metric skips the lock otherwise).
static ANY_WANTED: AtomicBool = AtomicBool::new(false);

/// Declares that the metrics named `names` (as given to the `metrics` facade) may be recorded
/// with a trace id: a recorder that keeps exemplars registers them with an exemplar store
/// ([`wanted`]), and every other metric pays nothing for exemplars. Called when a layer with
/// exemplars on is built, before it resolves any handle.
pub(crate) fn want<'a>(names: impl IntoIterator<Item = &'a str>) {
    let mut wanted = WANTED.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    for name in names {
        if !wanted.iter().any(|w| **w == *name) {
            wanted.push(name.into());
        }
    }
    ANY_WANTED.store(true, Ordering::Release);
}

/// Whether a layer with exemplars on records the metric `name` with trace ids (see [`want`]).
/// For recorders, at registration (it takes a lock when any layer has exemplars on).
#[cfg_attr(not(any(feature = "prometheus", feature = "live")), allow(dead_code))]
pub(crate) fn wanted(name: &str) -> bool {
    ANY_WANTED.load(Ordering::Acquire)
        && WANTED
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .any(|w| **w == *name)
}

/// One exemplar as a scrape reads it.
#[cfg_attr(not(feature = "prometheus"), allow(dead_code))]
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Exemplar {
    /// The recorded value (seconds for durations, 1 for a counter increment).
    pub(crate) value: f64,
    pub(crate) trace: TraceId,
    /// When the request ended, in nanoseconds since the Unix epoch.
    pub(crate) unix_nanos: u64,
}

/// The shortest time between two exemplars written to one slot, in nanoseconds: a slot holds
/// the latest exemplar at most this old when a newer one was offered. It bounds the writes to
/// a bucket's slot to 1,000 per second whatever the request rate, so threads recording into the
/// same bucket share its cache line read-only almost all the time; a scrape (seconds apart)
/// sees no difference.
#[cfg_attr(not(feature = "prometheus"), allow(dead_code))]
pub(crate) const MIN_INTERVAL_NANOS: u64 = 1_000_000;

/// The latest exemplar of one bucket: a sequence lock over atomics (no lock, no `unsafe`).
///
/// A writer takes the sequence from even to odd, writes, and makes it even again; a writer that
/// finds it odd (or loses the race to take it) skips: latest wins, and exemplars are samples of
/// requests, not data a scrape must add up. A reader retries a few times if a write overlapped
/// its read, then gives up for this scrape. Timestamps in a slot only grow (a write older than
/// the slot's exemplar, or within [`MIN_INTERVAL_NANOS`] of it, is skipped), as Prometheus
/// requires of the exemplars of one series.
#[cfg_attr(not(feature = "prometheus"), allow(dead_code))]
#[derive(Debug, Default)]
pub(crate) struct ExemplarSlot {
    seq: AtomicU64,
    value: AtomicU64,
    trace_high: AtomicU64,
    trace_low: AtomicU64,
    /// 0: empty.
    unix_nanos: AtomicU64,
}

#[cfg_attr(not(feature = "prometheus"), allow(dead_code))]
impl ExemplarSlot {
    /// Offers `value` recorded under `sample`: kept unless the slot holds one less than
    /// [`MIN_INTERVAL_NANOS`] older or a write is in progress.
    #[inline]
    pub(crate) fn offer(&self, value: f64, sample: Sample) {
        let seq = self.seq.load(Ordering::Acquire);
        let last = self.unix_nanos.load(Ordering::Relaxed);
        if seq & 1 != 0
            || (last != 0 && sample.unix_nanos < last.saturating_add(MIN_INTERVAL_NANOS))
        {
            return;
        }
        // From the even `seq` read above: no write came in between, so `last` was the latest.
        if self.seq.compare_exchange(seq, seq + 1, Ordering::Acquire, Ordering::Relaxed).is_err() {
            return;
        }
        fence(Ordering::Release);
        let trace = sample.trace.to_u128();
        self.value.store(value.to_bits(), Ordering::Relaxed);
        self.trace_high.store((trace >> 64) as u64, Ordering::Relaxed);
        self.trace_low.store(trace as u64, Ordering::Relaxed);
        self.unix_nanos.store(sample.unix_nanos, Ordering::Relaxed);
        self.seq.store(seq + 2, Ordering::Release);
    }

    /// The slot's exemplar, if it holds one and no write kept overlapping the read.
    pub(crate) fn read(&self) -> Option<Exemplar> {
        for _ in 0..8 {
            let before = self.seq.load(Ordering::Acquire);
            if before & 1 != 0 {
                std::hint::spin_loop();
                continue;
            }
            let value = self.value.load(Ordering::Relaxed);
            let high = self.trace_high.load(Ordering::Relaxed);
            let low = self.trace_low.load(Ordering::Relaxed);
            let unix_nanos = self.unix_nanos.load(Ordering::Relaxed);
            fence(Ordering::Acquire);
            if self.seq.load(Ordering::Relaxed) != before {
                continue;
            }
            if unix_nanos == 0 {
                return None;
            }
            let trace = TraceId::from_u128(u128::from(high) << 64 | u128::from(low))?;
            return Some(Exemplar { value: f64::from_bits(value), trace, unix_nanos });
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The obvious parser, byte by byte: what the SWAR one must agree with.
    fn reference(value: &[u8]) -> Option<u128> {
        let s = std::str::from_utf8(value).ok()?;
        let hex = |part: &str, len: usize| {
            (part.len() == len && part.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
                .then(|| u128::from_str_radix(part, 16).ok())
                .flatten()
        };
        if s.len() < 55 {
            return None;
        }
        let (head, rest) = s.split_at(55);
        let parts: Vec<&str> = head.split('-').collect();
        if parts.len() != 4 {
            return None;
        }
        let version = hex(parts[0], 2)?;
        let trace = hex(parts[1], 32)?;
        let parent = hex(parts[2], 16)?;
        hex(parts[3], 2)?;
        let tail_ok =
            if version == 0 { rest.is_empty() } else { rest.is_empty() || rest.starts_with('-') };
        (version != 0xff && trace != 0 && parent != 0 && tail_ok).then_some(trace)
    }

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn the_spec_example_parses() {
        let id = TraceId::from_traceparent(VALID.as_bytes()).expect("valid");
        assert_eq!(id.to_u128(), 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736"), Some(id));
        assert_eq!(TraceId::from_bytes(id.to_bytes()), Some(id));
    }

    #[test]
    fn hostile_values_are_ignored() {
        let cases = [
            "",
            "00",
            // wrong lengths
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e47366-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01 ",
            // uppercase
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01",
            "0A-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            // all zeros
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            // non-hex, wrong separators, invalid version
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e47:6-00f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-\u{e9}",
        ];
        for case in cases {
            assert_eq!(TraceId::from_traceparent(case.as_bytes()), None, "{case:?}");
            assert_eq!(reference(case.as_bytes()), None, "reference disagrees on {case:?}");
        }
        // A later version may carry more fields after a '-'.
        let later =
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-brings";
        assert!(TraceId::from_traceparent(later.as_bytes()).is_some());
        assert_eq!(TraceId::from_hex("4BF92F3577B34DA6A3CE929D0E0E4736"), None);
        assert_eq!(TraceId::from_hex("00000000000000000000000000000000"), None);
        assert_eq!(TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e473"), None);
    }

    /// A header that is valid except where a strategy changes it.
    fn header(version: u8, trace: u128, parent: u64, flags: u8) -> String {
        format!("{version:02x}-{trace:032x}-{parent:016x}-{flags:02x}")
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn valid_headers_give_their_trace_id(trace in 1u128.., parent in 1u64.., flags: u8, version in 0u8..0xff) {
            let value = header(version, trace, parent, flags);
            prop_assert_eq!(TraceId::from_traceparent(value.as_bytes()).map(TraceId::to_u128), Some(trace));
            let id = TraceId::from_u128(trace).expect("non-zero");
            prop_assert_eq!(id.to_string(), format!("{trace:032x}"));
            prop_assert_eq!(TraceId::from_hex(&id.to_string()), Some(id));
        }

        #[test]
        fn any_bytes_parse_as_the_reference_says(value in proptest::collection::vec(any::<u8>(), 0..70)) {
            prop_assert_eq!(TraceId::from_traceparent(&value).map(TraceId::to_u128), reference(&value));
        }

        /// Valid headers with one byte replaced by anything: only valid ids ever come out.
        #[test]
        fn one_changed_byte_never_yields_an_invalid_id(
            trace in 1u128.., parent in 1u64.., at in 0usize..55, byte: u8, upper: bool
        ) {
            let mut value = header(0, trace, parent, 1).into_bytes();
            if upper {
                value[at] = value[at].to_ascii_uppercase();
            } else {
                value[at] = byte;
            }
            let parsed = TraceId::from_traceparent(&value).map(TraceId::to_u128);
            prop_assert_eq!(parsed, reference(&value));
            if let Some(id) = parsed {
                let hex = format!("{id:032x}");
                prop_assert_eq!(&value[3..35], hex.as_bytes());
            }
        }

        /// Hex-ish strings of every length near 55 (digits, letters on both sides of a-f,
        /// dashes, zeros): the same answer as the reference.
        #[test]
        fn near_misses_agree_with_the_reference(value in "[0-9a-hA-H\\-]{50,60}") {
            prop_assert_eq!(TraceId::from_traceparent(value.as_bytes()).map(TraceId::to_u128), reference(value.as_bytes()));
        }
    }

    #[test]
    fn every_byte_value_in_every_digit_position() {
        let base = *b"0123456789abcdef";
        for pos in 0..8 {
            for byte in 0..=255u8 {
                let mut digits = [b'0'; 8];
                digits[..].copy_from_slice(&base[pos..pos + 8]);
                digits[pos % 8] = byte;
                let expected = std::str::from_utf8(&digits)
                    .ok()
                    .filter(|s| s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
                    .and_then(|s| u32::from_str_radix(s, 16).ok());
                assert_eq!(hex_u32(digits), expected, "{digits:?}");
            }
        }
    }

    fn sample(trace: u128, unix_nanos: u64) -> Sample {
        Sample { trace: TraceId::from_u128(trace).expect("non-zero"), unix_nanos }
    }

    #[test]
    fn a_slot_keeps_the_latest_exemplar_at_most_one_interval_old() {
        let slot = ExemplarSlot::default();
        assert_eq!(slot.read(), None);
        slot.offer(0.5, sample(1, 10_000_000_000));
        let first = slot.read().expect("written");
        assert_eq!(
            (first.value, first.trace.to_u128(), first.unix_nanos),
            (0.5, 1, 10_000_000_000)
        );
        // Within the interval: kept as it was; older: never written back.
        slot.offer(0.7, sample(2, 10_000_000_000 + MIN_INTERVAL_NANOS - 1));
        slot.offer(0.7, sample(3, 9_000_000_000));
        assert_eq!(slot.read(), Some(first));
        slot.offer(0.25, sample(4, 10_000_000_000 + MIN_INTERVAL_NANOS));
        let second = slot.read().expect("written");
        assert_eq!((second.value, second.trace.to_u128()), (0.25, 4));
    }

    #[test]
    fn the_thread_local_is_set_only_inside_a_scope() {
        assert_eq!(current(), None);
        let s = sample(7, 1);
        {
            let _scope = Scope::enter(s);
            assert_eq!(current(), Some(s));
            std::thread::spawn(|| assert_eq!(current(), None)).join().expect("thread");
        }
        assert_eq!(current(), None);
        let result = std::panic::catch_unwind(|| {
            let _scope = Scope::enter(s);
            panic!("a recorder panicked");
        });
        assert!(result.is_err());
        assert_eq!(current(), None, "cleared while unwinding");
    }

    /// Writers on two threads, a reader on a third: every read is one whole write (its value,
    /// trace id and time belong together) and times never go back.
    #[test]
    fn concurrent_reads_never_see_a_torn_exemplar() {
        let slot = std::sync::Arc::new(ExemplarSlot::default());
        // The reader starts with the writers (an optimised build writes 200,000 times in
        // about a millisecond: without it the writers could be done before the first read).
        let start = std::sync::Arc::new(std::sync::Barrier::new(3));
        let writers: Vec<_> = (0..2u64)
            .map(|w| {
                let (slot, start) = (slot.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    for i in 1..=200_000u64 {
                        let t = i * MIN_INTERVAL_NANOS + w;
                        // The value and both halves of the trace id derive from the time.
                        let trace = u128::from(t) << 64 | u128::from(t ^ 0xdead_beef);
                        slot.offer(t as f64, sample(trace, t));
                    }
                })
            })
            .collect();
        let mut last = 0;
        let mut seen = 0;
        start.wait();
        loop {
            let running = writers.iter().any(|w| !w.is_finished());
            if let Some(e) = slot.read() {
                let t = e.unix_nanos;
                assert_eq!(e.value, t as f64);
                assert_eq!(e.trace.to_u128(), u128::from(t) << 64 | u128::from(t ^ 0xdead_beef));
                assert!(t >= last, "time went back: {t} < {last}");
                last = t;
                seen += 1;
            }
            if !running {
                break;
            }
        }
        for w in writers {
            w.join().expect("writer");
        }
        assert!(seen > 0);
        assert!(slot.read().expect("written").unix_nanos >= 200_000 * MIN_INTERVAL_NANOS);
    }
}
