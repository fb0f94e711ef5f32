//! Route names: the [`RouteName`] extension, and the capped interner that turns a name into a
//! small id once, so the request path carries an integer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use crate::labels::{sanitize_tag_value, MAX_ROUTE_LEN, OVERFLOW, UNMATCHED};
use crate::slots::{Probe, Slots};

/// The name of the route that served a request, as a request (or response) extension.
///
/// Use it where no router supplies a template: a plain hyper service, a tower `Steer`, or to
/// override axum's `MatchedPath`. Put a *template* here (`/users/{id}`), never the raw path: the
/// number of distinct values is capped (see [`VitalsLayerBuilder::route_cap`](crate::VitalsLayerBuilder::route_cap)),
/// and values past the cap are all counted as `overflow`.
///
/// The layer reads it from the request's extensions when `call` runs, and from the response's
/// extensions when the head arrives (so a handler or an inner middleware can name its route).
///
/// ```
/// use tower_vitals::RouteName;
/// let mut req = http::Request::new(());
/// req.extensions_mut().insert(RouteName::new("/users/{id}"));
/// let dynamic = RouteName::new(format!("/v{}/items", 2));
/// assert_eq!(dynamic.as_str(), "/v2/items");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RouteName(std::borrow::Cow<'static, str>);

impl RouteName {
    /// A route name from a `&'static str` (no allocation) or a `String`.
    pub fn new(name: impl Into<std::borrow::Cow<'static, str>>) -> Self {
        // A load first: a service that makes a name per request writes the shared flag once.
        if !ROUTE_NAMES_MADE.load(Ordering::Relaxed) {
            ROUTE_NAMES_MADE.store(true, Ordering::Relaxed);
        }
        RouteName(name.into())
    }

    /// The route name as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Whether this process has made any [`RouteName`] (they are made only by [`RouteName::new`]).
static ROUTE_NAMES_MADE: AtomicBool = AtomicBool::new(false);

/// Whether a request or response may carry a [`RouteName`]: false until the first one is made,
/// so that services that never name routes skip that extension lookup (about 40 instructions per
/// message). A name made on one thread reaches another only through the synchronisation that
/// hands over its request, which also makes the flag's store visible there.
#[inline]
pub(crate) fn route_names_exist() -> bool {
    ROUTE_NAMES_MADE.load(Ordering::Relaxed)
}

/// `name` cut to at most [`MAX_ROUTE_LEN`] bytes, at a character boundary (no allocation).
fn route_key(name: &str) -> &str {
    if name.len() <= MAX_ROUTE_LEN {
        return name;
    }
    let mut end = MAX_ROUTE_LEN;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name.get(..end).unwrap_or_default()
}

/// `a == b`, inline for the short names routes are (word compares, the last word overlapping
/// the one before; `==` on slices calls `memcmp`, which costs more than the hash here).
#[inline]
fn same(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    let word = |s: &[u8], i: usize| {
        s.get(i..i + 8).and_then(|w| w.try_into().ok()).map(u64::from_le_bytes)
    };
    if n > 32 {
        return a == b;
    }
    if n >= 8 {
        let mut i = 0;
        while i + 8 < n {
            if word(a, i) != word(b, i) {
                return false;
            }
            i += 8;
        }
        return word(a, n - 8) == word(b, n - 8);
    }
    a == b
}

/// Route ids 0 and 1 are reserved for these two.
pub(crate) const UNMATCHED_ID: u32 = 0;
pub(crate) const OVERFLOW_ID: u32 = 1;

/// An interned, capped set of route names.
///
/// Reads (one per request) are lock-free: an `ArcSwap` load and one hash lookup. A new name is
/// added under a mutex by copying the table, which happens at most `cap` times in the life of
/// the layer; once the cap is reached, unknown names map to `overflow` without taking the lock.
pub(crate) struct RouteTable {
    /// Read cache of admitted names: write-once slots, found by a fast hash of the name, so a
    /// hit is a hash, plain loads and one string compare (no atomic read-modify-write). Names
    /// that find no free slot are still found through `table`.
    fast: Slots<(Box<str>, u32)>,
    table: ArcSwap<RouteSnapshot>,
    write: Mutex<()>,
    cap: usize,
    /// Ids `2..skip_end` are names to leave out (given at construction; not under the cap).
    skip_end: u32,
    /// Whether id 0 (no name: `unmatched`) is left out too.
    skip_first: bool,
    /// Every skipped id is below this (0: nothing is skipped, one compare per request).
    skip_below: u32,
    /// Ids of axum's `MatchedPath` values by the address of their text.
    #[cfg(feature = "axum")]
    paths: PathCache,
}

/// Route ids by the address of a `MatchedPath`'s text, so that the common case does not hash
/// the text at all.
///
/// An axum `Router` keeps one `Arc<str>` per route and clones it into the `MatchedPath` of each
/// request it routes there, so the text of a route sits at one address for the router's life.
/// Each entry holds a clone of the `MatchedPath` it was made from: its text cannot be freed while
/// the entry exists, so no other text can be at that address, and an equal address and length
/// mean the same text (no unsafe code, no string compare). Paths axum builds per request (nested
/// services) have a new address each time: they fill the bounded table once, then every path
/// takes the hashing path as before, without the write lock.
#[cfg(feature = "axum")]
struct PathCache {
    slots: Slots<PathEntry>,
    /// Set when a path found no free slot among its probes: nothing more is remembered.
    full: AtomicBool,
}

#[cfg(feature = "axum")]
struct PathEntry {
    addr: usize,
    len: usize,
    id: u32,
    /// Keeps the text at `addr` alive (see [`PathCache`]).
    _held: axum::extract::MatchedPath,
}

/// Slots in the `MatchedPath` cache (a power of two), and how many one path probes.
#[cfg(feature = "axum")]
const PATH_SLOTS: usize = 256;
#[cfg(feature = "axum")]
const PATH_PROBES: usize = 4;

/// Slots in a route table's read cache (a power of two; 16 bytes each, per layer).
const ROUTE_SLOTS: usize = 512;
/// Slots probed for one name.
const ROUTE_PROBES: usize = 8;

/// A fast, non-cryptographic hash of a route name: every byte, read 8 (or 4) at a time with
/// the last word overlapping the one before (no byte loop), then a final mix. The names it sees
/// are bounded by the cap, so collisions can only cost probes, never memory.
fn route_hash(name: &str) -> usize {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let b = name.as_bytes();
    let n = b.len();
    let word =
        |i: usize| b.get(i..i + 8).and_then(|w| w.try_into().ok()).map_or(0, u64::from_le_bytes);
    let half =
        |i: usize| b.get(i..i + 4).and_then(|w| w.try_into().ok()).map_or(0, u32::from_le_bytes);
    let mut h = (n as u64).wrapping_mul(K);
    if n >= 8 {
        let mut i = 0;
        while i + 8 < n {
            h = (h ^ word(i)).wrapping_mul(K).rotate_left(29);
            i += 8;
        }
        h = (h ^ word(n - 8)).wrapping_mul(K);
    } else if n >= 4 {
        h = (h ^ (u64::from(half(0)) << 32 | u64::from(half(n - 4)))).wrapping_mul(K);
    } else if let (Some(&first), Some(&mid), Some(&last)) = (b.first(), b.get(n / 2), b.last()) {
        h = (h ^ (u64::from(first) << 16 | u64::from(mid) << 8 | u64::from(last))).wrapping_mul(K);
    }
    h = (h ^ (h >> 29)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    (h ^ (h >> 32)) as usize
}

#[derive(Clone)]
struct RouteSnapshot {
    by_name: HashMap<Arc<str>, u32>,
    /// Sanitised tag value by route id.
    values: Vec<Arc<str>>,
}

impl RouteTable {
    /// A route table: id 0 `unmatched`, id 1 `overflow`, at most `cap` names; `skip` names are
    /// admitted first (ids from 2, not under the cap) and reported by [`is_skipped`](Self::is_skipped).
    pub(crate) fn new(cap: usize, skip: &[String]) -> Self {
        RouteTable::with_reserved(cap, UNMATCHED, OVERFLOW, skip)
    }

    /// A capped interner whose ids 0 and 1 are tagged `first` and `overflow`.
    pub(crate) fn with_reserved(cap: usize, first: &str, overflow: &str, skip: &[String]) -> Self {
        let values = vec![Arc::from(first), Arc::from(overflow)];
        let mut table = RouteTable {
            fast: Slots::new(ROUTE_SLOTS, ROUTE_PROBES),
            table: ArcSwap::from_pointee(RouteSnapshot { by_name: HashMap::new(), values }),
            write: Mutex::new(()),
            cap,
            skip_end: 2,
            skip_first: false,
            skip_below: 0,
            #[cfg(feature = "axum")]
            paths: PathCache {
                slots: Slots::new(PATH_SLOTS, PATH_PROBES),
                full: AtomicBool::new(false),
            },
        };
        // Admitted like any name, before the cap applies.
        table.cap = usize::MAX;
        for name in skip {
            let id = table.intern(name);
            table.skip_end = table.skip_end.max(id.saturating_add(1));
            table.skip_first |= route_key(name) == first;
        }
        table.cap = cap;
        table.skip_below = match (table.skip_end > 2, table.skip_first) {
            (true, _) => table.skip_end,
            (false, true) => UNMATCHED_ID + 1,
            (false, false) => 0,
        };
        table
    }

    /// Whether requests with route `id` are left out (a name given to skip, or no name when
    /// `unmatched` was given).
    #[inline]
    pub(crate) fn is_skipped(&self, id: u32) -> bool {
        // Below `skip_below` every id from 2 is a skipped name (it is `skip_end` when names are
        // given, else at most 1); 0 is skipped if `unmatched` was given; 1 (overflow) never.
        id < self.skip_below && (id >= 2 || (id == UNMATCHED_ID && self.skip_first))
    }

    /// Names admitted to be left out (they take no place under the cap).
    fn skipped_names(&self) -> usize {
        (self.skip_end - 2) as usize
    }

    /// The id of `name`, adding it if there is room; `overflow` past the cap.
    ///
    /// Names are keyed by their first [`MAX_ROUTE_LEN`] bytes (the tag value keeps no more), so
    /// the table holds at most `cap` keys of at most that length, however long the names are.
    pub(crate) fn intern(&self, name: &str) -> u32 {
        // Names are keyed by what their tag value keeps (the first MAX_ROUTE_LEN bytes).
        let name = route_key(name);
        let start = route_hash(name);
        if let Probe::Found(entry) =
            self.fast.probe(start, |e| same(e.0.as_bytes(), name.as_bytes()))
        {
            return entry.1;
        }
        self.intern_slow(name, start)
    }

    /// The id of axum's `MatchedPath` (as [`intern`](Self::intern) of its text), found by the
    /// address of its text when this table has seen it before (see [`PathCache`]).
    #[cfg(feature = "axum")]
    pub(crate) fn intern_matched_path(&self, path: &axum::extract::MatchedPath) -> u32 {
        let text = path.as_str();
        let (addr, len) = (text.as_ptr() as usize, text.len());
        let start = ((addr as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as usize;
        if let Probe::Found(entry) =
            self.paths.slots.probe(start, |e| e.addr == addr && e.len == len)
        {
            return entry.id;
        }
        let id = self.intern(text);
        if !self.paths.full.load(Ordering::Relaxed) {
            self.remember_path(path, start, id);
        }
        id
    }

    /// Keeps `path`'s id by the address of its text, if its probe sequence has a free slot.
    #[cfg(feature = "axum")]
    #[cold]
    fn remember_path(&self, path: &axum::extract::MatchedPath, start: usize, id: u32) {
        let text = path.as_str();
        let (addr, len) = (text.as_ptr() as usize, text.len());
        let _guard = self.write.lock().unwrap_or_else(|poison| poison.into_inner());
        match self.paths.slots.probe(start, |e| e.addr == addr && e.len == len) {
            Probe::Found(_) => {}
            Probe::Free(slot) => {
                let _ = slot.set(Box::new(PathEntry { addr, len, id, _held: path.clone() }));
            }
            Probe::Full => self.paths.full.store(true, Ordering::Relaxed),
        }
    }

    /// Not in the read cache: the snapshot (and, for a new name, the write lock). `name` is
    /// already cut to its key.
    #[cold]
    fn intern_slow(&self, name: &str, start: usize) -> u32 {
        {
            let snapshot = self.table.load();
            if let Some(&id) = snapshot.by_name.get(name) {
                return id;
            }
            if snapshot.by_name.len() >= self.cap.saturating_add(self.skipped_names()) {
                return OVERFLOW_ID;
            }
        }
        // A poisoned lock only means another thread panicked while holding `()`: nothing to repair.
        let _guard = self.write.lock().unwrap_or_else(|poison| poison.into_inner());
        let current = self.table.load_full();
        if let Some(&id) = current.by_name.get(name) {
            return id;
        }
        if current.by_name.len() >= self.cap.saturating_add(self.skipped_names()) {
            return OVERFLOW_ID;
        }
        // Ids are u32: a table can never hand out more (a cap past that is memory-bound anyway).
        let Ok(id) = u32::try_from(current.values.len()) else {
            return OVERFLOW_ID;
        };
        let mut next = RouteSnapshot::clone(&current);
        next.by_name.insert(Arc::from(name), id);
        next.values.push(Arc::from(sanitize_tag_value(name)));
        self.table.store(Arc::new(next));
        // Admitted once, under the lock: cache it in the first free slot of its probe sequence.
        if let Probe::Free(slot) = self.fast.probe(start, |e| same(e.0.as_bytes(), name.as_bytes()))
        {
            let _ = slot.set(Box::new((Box::from(name), id)));
        }
        id
    }

    /// The tag value of a route id (`unmatched` for an id this table never gave out).
    pub(crate) fn value(&self, id: u32) -> Arc<str> {
        let snapshot = self.table.load();
        snapshot.values.get(id as usize).cloned().unwrap_or_else(|| Arc::from(UNMATCHED))
    }

    /// How many distinct route names were admitted (not counting `unmatched` and `overflow`).
    pub(crate) fn len(&self) -> usize {
        self.table.load().by_name.len() - self.skipped_names()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_table_caps_and_reuses_ids() {
        let table = RouteTable::new(2, &[]);
        let a = table.intern("/a");
        assert_eq!(table.intern("/a"), a);
        let b = table.intern("/b");
        assert_ne!(a, b);
        assert_eq!(table.intern("/c"), OVERFLOW_ID);
        assert_eq!(table.len(), 2);
        assert_eq!(&*table.value(a), "/a");
        assert_eq!(&*table.value(OVERFLOW_ID), OVERFLOW);
        assert_eq!(&*table.value(999), UNMATCHED);
    }

    #[test]
    fn read_cache_and_snapshot_agree_for_many_names() {
        // More names than cache slots: some are found through the snapshot only.
        let table = RouteTable::new(2000, &[]);
        let ids: Vec<u32> = (0..1500).map(|i| table.intern(&format!("/r/{i}"))).collect();
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(table.intern(&format!("/r/{i}")), *id);
            assert_eq!(&*table.value(*id), format!("/r/{i}"));
        }
        assert_eq!(table.len(), 1500);
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 1500, "ids are distinct");
        assert_ne!(route_hash("/a"), route_hash("/b"));
        assert_ne!(route_hash("/users/{id}/x"), route_hash("/users/{id}/y"));
    }

    #[test]
    fn skipped_names_take_no_place_under_the_cap() {
        let skip = ["/healthz".to_owned(), "/metrics".to_owned(), "/healthz".to_owned()];
        let table = RouteTable::new(1, &skip);
        assert!(table.is_skipped(table.intern("/healthz")));
        assert!(table.is_skipped(table.intern("/metrics")));
        assert!(!table.is_skipped(UNMATCHED_ID));
        let a = table.intern("/a");
        assert!(!table.is_skipped(a) && a != OVERFLOW_ID);
        assert_eq!(table.intern("/b"), OVERFLOW_ID);
        assert!(!table.is_skipped(OVERFLOW_ID));
        assert_eq!(table.len(), 1);
        let table = RouteTable::new(4, &[UNMATCHED.to_owned()]);
        assert!(table.is_skipped(UNMATCHED_ID));
        assert!(table.is_skipped(table.intern(UNMATCHED)));
        assert!(!table.is_skipped(OVERFLOW_ID));
        assert!(!table.is_skipped(table.intern("/a")));
        // Names and `unmatched` together; and nothing to skip at all.
        let table = RouteTable::new(4, &["/healthz".to_owned(), UNMATCHED.to_owned()]);
        assert!(table.is_skipped(table.intern("/healthz")) && table.is_skipped(UNMATCHED_ID));
        assert!(!table.is_skipped(OVERFLOW_ID) && !table.is_skipped(table.intern("/a")));
        let table = RouteTable::new(4, &[]);
        for id in [UNMATCHED_ID, OVERFLOW_ID, table.intern("/a"), table.intern("/b")] {
            assert!(!table.is_skipped(id), "{id}");
        }
    }

    #[test]
    fn hostile_route_is_sanitised_once_and_stays_distinct() {
        let table = RouteTable::new(8, &[]);
        let id = table.intern("/a|b,c#d:e\n");
        assert_eq!(&*table.value(id), "/a_b_c_d:e_");
    }

    #[test]
    fn long_route_names_are_stored_cut_to_the_tag_length() {
        let table = RouteTable::new(4, &[]);
        let long_a = format!("/{}a", "é".repeat(100_000));
        let long_b = format!("/{}b", "é".repeat(100_000));
        let id = table.intern(&long_a);
        // Same first MAX_ROUTE_LEN bytes: same route (their tag values would be equal anyway).
        assert_eq!(table.intern(&long_b), id);
        assert_eq!(table.len(), 1);
        let snapshot = table.table.load();
        assert!(snapshot.by_name.keys().all(|k| k.len() <= MAX_ROUTE_LEN));
        assert!(table.value(id).len() <= MAX_ROUTE_LEN);
    }
}
