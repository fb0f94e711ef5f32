//! The small-block warning: a `tracing` warning for routes whose responses are cut into many
//! small body frames.
//!
//! Each response body frame costs a poll, a framing header (HTTP/1 chunk size line, HTTP/2 DATA
//! frame header) and often a write of its own, whatever its size. A body streamed in tiny frames
//! (a 1 MB file sent a byte at a time, a serializer flushing per field) spends most of its output
//! time on that overhead. The layer already counts blocks and bytes; this module adds them up per
//! route and warns once when a route's average is below a threshold.
//!
//! Only responses of two blocks or more are counted: a response sent in one frame cannot be sent
//! in fewer, however small it is. Each route's blocks and bytes are summed in two atomics (two
//! relaxed adds per finished response, no lock, no allocation); when a route has gathered
//! `min_blocks` blocks, the thread that crosses the mark takes the sums, resets them, and warns if
//! their average is below `min_average_bytes`, at most once per route per `interval`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::routes::RouteTable;

/// Settings of the small-block warning (see
/// [`VitalsLayerBuilder::small_block_warning`](crate::VitalsLayerBuilder::small_block_warning)).
///
/// The defaults: warn when a route's multi-block responses average fewer than **512 bytes per
/// block** over at least **4096 blocks**, at most once per route every **hour**.
///
/// Why these: a frame costs a poll, a framing header (5–12 bytes for an HTTP/1 chunk, 9 for an
/// HTTP/2 DATA frame, 5 more for a gRPC message) and often a write; below 512 bytes that fixed cost
/// is of the order of the cost of the data itself, while well-behaved streams (8–64 KiB frames
/// from files, `Bytes` buffers, tonic's 8 KiB encoder) are far above it. 4096 blocks is enough to
/// call it a pattern (one 1 MB body in 256-byte frames) and few enough that a route warns within
/// its first few slow responses. One warning per route per hour keeps logs readable.
///
/// ```
/// use std::time::Duration;
/// use tower_vitals::{SmallBlockWarning, VitalsLayer};
/// let warning = SmallBlockWarning::default()
///     .min_average_bytes(1024)
///     .min_blocks(10_000)
///     .interval(Duration::from_secs(600));
/// let layer = VitalsLayer::builder().small_block_warning(warning).build();
/// # let _ = layer;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SmallBlockWarning {
    min_average_bytes: u64,
    min_blocks: u64,
    interval: Duration,
}

/// The default of [`SmallBlockWarning::min_average_bytes`] (the live page's threshold too).
pub(crate) const DEFAULT_MIN_AVERAGE_BYTES: u64 = 512;
/// The default of [`SmallBlockWarning::min_blocks`] (the live page's threshold too).
pub(crate) const DEFAULT_MIN_BLOCKS: u64 = 4096;
/// The default of [`SmallBlockWarning::interval`].
const DEFAULT_INTERVAL: Duration = Duration::from_secs(3600);

impl Default for SmallBlockWarning {
    fn default() -> Self {
        SmallBlockWarning {
            min_average_bytes: DEFAULT_MIN_AVERAGE_BYTES,
            min_blocks: DEFAULT_MIN_BLOCKS,
            interval: DEFAULT_INTERVAL,
        }
    }
}

impl SmallBlockWarning {
    /// Warn when the average block is smaller than this many bytes (default 512).
    pub fn min_average_bytes(mut self, bytes: u64) -> Self {
        self.min_average_bytes = bytes;
        self
    }

    /// Judge a route only once it has sent this many blocks in multi-block responses since it
    /// was last judged (default 4096; at least 1).
    pub fn min_blocks(mut self, blocks: u64) -> Self {
        self.min_blocks = blocks.max(1);
        self
    }

    /// At most one warning per route per `interval` (default one hour).
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }
}

/// Routes tracked at most (ids past it, possible only with a route cap above it, are not judged).
const MAX_TRACKED_ROUTES: usize = 65_536;

/// Per-route sums, indexed by route id.
pub(crate) struct SmallBlocks {
    settings: SmallBlockWarning,
    routes: Box<[RouteBlocks]>,
    interval_ns: u64,
}

#[derive(Default)]
struct RouteBlocks {
    blocks: AtomicU64,
    bytes: AtomicU64,
    /// Clock reading (ns since the layer's epoch) of the last warning, plus one; 0: never.
    warned_at: AtomicU64,
}

/// What a judgement found (also what the warning says).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Verdict {
    pub(crate) blocks: u64,
    pub(crate) bytes: u64,
}

impl SmallBlocks {
    /// Sums for `route_cap + 2` routes (the two reserved ids included), at most 65 538.
    pub(crate) fn new(settings: SmallBlockWarning, route_cap: usize) -> Self {
        let len = route_cap.min(MAX_TRACKED_ROUTES) + 2;
        SmallBlocks {
            settings,
            routes: (0..len).map(|_| RouteBlocks::default()).collect(),
            interval_ns: u64::try_from(settings.interval.as_nanos()).unwrap_or(u64::MAX),
        }
    }

    /// A response of `route` finished with `blocks` data frames and `bytes` bytes, `now_ns`
    /// after the layer was built. Warns (naming the route from `routes`) if this completes a run
    /// of small blocks.
    #[inline(never)]
    pub(crate) fn add(
        &self,
        route: u32,
        blocks: u64,
        bytes: u64,
        now_ns: u64,
        routes: &RouteTable,
    ) {
        if let Some(verdict) = self.account(route, blocks, bytes, now_ns) {
            self.warn(route, verdict, routes);
        }
    }

    /// The warning itself: rare (at most once per route per interval), kept off the hot path.
    #[cold]
    #[inline(never)]
    fn warn(&self, route: u32, verdict: Verdict, names: &RouteTable) {
        let name = names.value(route);
        let average = verdict.bytes / verdict.blocks.max(1);
        tracing::warn!(
            target: "tower_vitals::small_blocks",
            route = %name,
            blocks = verdict.blocks,
            bytes = verdict.bytes,
            average_bytes_per_block = average,
            min_average_bytes = self.settings.min_average_bytes,
            "responses of route {name} average {average} bytes per block over {} blocks \
             ({} bytes): each block costs a poll, a frame header and often a write; send \
             larger chunks (buffer the body, or batch small messages) unless the stream is \
             small events on purpose (then lower SmallBlockWarning::min_average_bytes, or turn \
             the warning off)",
            verdict.blocks,
            verdict.bytes,
        );
    }

    /// The accounting of [`add`](Self::add), without the warning: `Some` when a warning is due.
    pub(crate) fn account(
        &self,
        route: u32,
        blocks: u64,
        bytes: u64,
        now_ns: u64,
    ) -> Option<Verdict> {
        if blocks < 2 {
            return None;
        }
        let slot = self.routes.get(route as usize)?;
        slot.bytes.fetch_add(bytes, Ordering::Relaxed);
        let total = slot.blocks.fetch_add(blocks, Ordering::Relaxed).saturating_add(blocks);
        if total < self.settings.min_blocks {
            return None;
        }
        // This thread crossed the mark: take the run. A thread that takes less than the mark
        // (another took the run first) gives its part back.
        let taken = slot.blocks.swap(0, Ordering::Relaxed);
        if taken < self.settings.min_blocks {
            slot.blocks.fetch_add(taken, Ordering::Relaxed);
            return None;
        }
        let bytes = slot.bytes.swap(0, Ordering::Relaxed);
        if bytes / taken >= self.settings.min_average_bytes {
            return None;
        }
        let warned = slot.warned_at.load(Ordering::Relaxed);
        let stamp = now_ns.saturating_add(1);
        if warned != 0 && stamp.saturating_sub(warned) < self.interval_ns {
            return None;
        }
        slot.warned_at
            .compare_exchange(warned, stamp, Ordering::Relaxed, Ordering::Relaxed)
            .ok()
            .map(|_| Verdict { blocks: taken, bytes })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracker() -> SmallBlocks {
        SmallBlocks::new(SmallBlockWarning::default(), 4)
    }

    #[test]
    fn one_megabyte_in_one_byte_blocks_is_due() {
        let t = tracker();
        let verdict = t.account(2, 1_000_000, 1_000_000, 0);
        assert_eq!(verdict, Some(Verdict { blocks: 1_000_000, bytes: 1_000_000 }));
    }

    #[test]
    fn one_megabyte_in_8k_blocks_is_never_due() {
        let t = tracker();
        for i in 0..1_000 {
            assert_eq!(t.account(2, 128, 1 << 20, i), None);
        }
    }

    #[test]
    fn single_block_responses_are_not_counted() {
        let t = tracker();
        for i in 0..10_000 {
            assert_eq!(t.account(2, 1, 10, i), None);
        }
    }

    #[test]
    fn a_route_warns_once_per_interval() {
        let t = tracker();
        let hour = 3_600_000_000_000;
        assert!(t.account(2, 5_000, 5_000, 10).is_some());
        assert!(t.account(2, 5_000, 5_000, 20).is_none(), "rate limited");
        assert!(t.account(3, 5_000, 5_000, 20).is_some(), "another route has its own limit");
        assert!(t.account(2, 5_000, 5_000, 10 + hour).is_some(), "one interval later");
    }

    #[test]
    fn unknown_route_ids_are_ignored() {
        let t = tracker();
        assert_eq!(t.account(99, 1_000_000, 1, 0), None);
    }
}
