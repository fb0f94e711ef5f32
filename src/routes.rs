//! [`RouteTable`]: the route names of one layer as small ids, under the route cap: the capped
//! [`Interner`], the names to leave out, and axum's `MatchedPath` found by address.

#[cfg(feature = "axum")]
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
#[cfg(feature = "axum")]
use std::sync::Mutex;

#[cfg(feature = "axum")]
use crate::hash::addr_slot;
use crate::interner::{self, Interner};
use crate::labels::{MAX_ROUTE_LEN, OVERFLOW, UNMATCHED};
#[cfg(feature = "axum")]
use crate::write_once::{Probe, Slots};

/// Route id 0: no route name (`unmatched`).
pub(crate) const UNMATCHED_ID: u32 = interner::FIRST_ID;

/// Names at least this long may be cut to a key of the same length or shorter (the interner
/// keeps the first [`MAX_ROUTE_LEN`] bytes, cut back to a character boundary: at most 3 bytes
/// back). Names to skip of this length are compared whole, not through the interner, so that
/// skipping one long name never skips another that shares its first bytes.
const LONG_NAME: usize = MAX_ROUTE_LEN - 3;

/// The route names of a layer: at most `cap` of them, each a small id.
///
/// Reads (one per request) are lock-free; a new name is added once, under a lock, at most `cap`
/// times in the life of the layer; once the cap is reached, unknown names map to `overflow`
/// without taking the lock.
pub(crate) struct RouteTable {
    names: Interner,
    /// Whether id 0 (no name: `unmatched`) is left out too.
    skip_first: bool,
    /// Every skipped id is below this (0: nothing is skipped, one compare per request). Ids from
    /// 2 below it are names to leave out (given at construction; not under the cap).
    skip_below: u32,
    /// Names to leave out of at least [`LONG_NAME`] bytes, compared whole, with their ids.
    long_skips: Box<[(Box<str>, u32)]>,
    /// Names interned to be left out (they take no place under the cap).
    interned_skips: usize,
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
/// takes the hashing path as before, without the lock.
#[cfg(feature = "axum")]
struct PathCache {
    slots: Slots<PathEntry>,
    /// Set when a path found no free slot among its probes: nothing more is remembered.
    full: AtomicBool,
    write: Mutex<()>,
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

impl RouteTable {
    /// A route table: id 0 `unmatched`, id 1 `overflow`, at most `cap` names; `skip` names are
    /// admitted first (ids from 2, not under the cap) and reported by
    /// [`is_skipped`](Self::is_skipped).
    pub(crate) fn new(cap: usize, skip: &[String]) -> Self {
        let mut names = Interner::new(usize::MAX, UNMATCHED, OVERFLOW);
        let mut long_skips: Vec<(Box<str>, u32)> = Vec::new();
        let mut skip_end = 2;
        let mut skip_first = false;
        for name in skip {
            if name == UNMATCHED {
                skip_first = true;
            }
            let id = if name.len() >= LONG_NAME {
                match long_skips.iter().find(|(n, _)| **n == **name) {
                    Some(&(_, id)) => id,
                    None => {
                        let id = names.reserve(name);
                        long_skips.push((Box::from(name.as_str()), id));
                        id
                    }
                }
            } else {
                names.intern(name)
            };
            skip_end = skip_end.max(id.saturating_add(1));
        }
        let interned_skips = names.len();
        names.set_cap(cap.saturating_add(interned_skips));
        let skip_below = match (skip_end > 2, skip_first) {
            (true, _) => skip_end,
            (false, true) => UNMATCHED_ID + 1,
            (false, false) => 0,
        };
        RouteTable {
            names,
            skip_first,
            skip_below,
            long_skips: long_skips.into(),
            interned_skips,
            #[cfg(feature = "axum")]
            paths: PathCache {
                slots: Slots::new(PATH_SLOTS, PATH_PROBES),
                full: AtomicBool::new(false),
                write: Mutex::new(()),
            },
        }
    }

    /// Whether requests with route `id` are left out (a name given to skip, or no name when
    /// `unmatched` was given).
    #[inline]
    pub(crate) fn is_skipped(&self, id: u32) -> bool {
        // Below `skip_below` every id from 2 is a skipped name (it is `skip_end` when names are
        // given, else at most 1); 0 is skipped if `unmatched` was given; 1 (overflow) never.
        id < self.skip_below && (id >= 2 || (id == UNMATCHED_ID && self.skip_first))
    }

    /// The id of `name`, adding it if there is room; `overflow` past the cap.
    #[inline]
    pub(crate) fn intern(&self, name: &str) -> u32 {
        if name.len() >= LONG_NAME && !self.long_skips.is_empty() {
            if let Some(&(_, id)) = self.long_skips.iter().find(|(n, _)| **n == *name) {
                return id;
            }
        }
        self.names.intern(name)
    }

    /// The id of axum's `MatchedPath` (as [`intern`](Self::intern) of its text), found by the
    /// address of its text when this table has seen it before (see [`PathCache`]).
    #[cfg(feature = "axum")]
    pub(crate) fn intern_matched_path(&self, path: &axum::extract::MatchedPath) -> u32 {
        let text = path.as_str();
        let (addr, len) = (text.as_ptr() as usize, text.len());
        let start = addr_slot(addr);
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
        let _guard = self.paths.write.lock().unwrap_or_else(|poison| poison.into_inner());
        match self.paths.slots.probe(start, |e| e.addr == addr && e.len == len) {
            Probe::Found(_) => {}
            Probe::Free(slot) => {
                let _ = slot.set(Box::new(PathEntry { addr, len, id, _held: path.clone() }));
            }
            Probe::Full => self.paths.full.store(true, Ordering::Relaxed),
        }
    }

    /// The tag value of a route id (`unmatched` for an id this table never gave out).
    pub(crate) fn value(&self, id: u32) -> Arc<str> {
        self.names.value(id)
    }

    /// How many distinct route names were admitted (not counting `unmatched`, `overflow` and
    /// the names to leave out).
    pub(crate) fn len(&self) -> usize {
        self.names.len() - self.interned_skips
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interner::OVERFLOW_ID;

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
    fn long_names_to_skip_are_compared_whole() {
        let prefix = "x".repeat(MAX_ROUTE_LEN);
        let (skipped, kept) = (format!("/{prefix}/a"), format!("/{prefix}/b"));
        // A name of exactly the length the interner cuts long names back to.
        let edge = format!("/{}", "y".repeat(MAX_ROUTE_LEN - 1));
        let edge_longer = format!("{edge}z");
        let table = RouteTable::new(8, &[skipped.clone(), edge.clone()]);
        assert!(table.is_skipped(table.intern(&skipped)));
        assert!(table.is_skipped(table.intern(&edge)));
        let kept_id = table.intern(&kept);
        assert!(!table.is_skipped(kept_id), "a name sharing the first bytes is measured");
        assert!(!table.is_skipped(table.intern(&edge_longer)));
        assert_eq!(table.len(), 2, "the kept names, under the cap");
        assert!(table.value(kept_id).len() <= MAX_ROUTE_LEN);
    }
}
