//! [`Interner`]: the capped table that turns a name (a route, a label value) into a small id
//! once, so that the request path carries an integer, and gives back its tag value.

use std::collections::hash_map::RandomState;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::hash::str_hash;
use crate::labels::{sanitize_tag_value, MAX_ROUTE_LEN};
use crate::write_once::{Probe, WriteOnceMap};

/// Id 0: the reserved first value (`unmatched` for routes, `none` for label values).
pub(crate) const FIRST_ID: u32 = 0;
/// Id 1: `overflow`, for names past the cap.
pub(crate) const OVERFLOW_ID: u32 = 1;

/// Slots in an interner's read cache (a power of two; 16 bytes each).
const SLOTS: usize = 512;
/// Slots probed for one name.
const PROBES: usize = 8;

/// A capped set of names, each with a small id and its sanitised tag value.
///
/// Ids 0 and 1 are reserved (a first value and `overflow`); names get ids from 2 in the order
/// they are first seen, at most `cap` of them; past the cap every new name is `overflow`. Reads
/// are lock-free (a slot probe, or an `ArcSwap` load and a hash lookup); a new name is added once,
/// under a lock. Names are keyed by their first [`MAX_ROUTE_LEN`] bytes (the tag value keeps no
/// more), so the table holds at most `cap` keys of at most that length, however long the names.
pub(crate) struct Interner {
    names: WriteOnceMap<Box<str>, u32, RandomState>,
    /// Tag value by id (written under the map's lock, when a name is added).
    values: ArcSwap<Vec<Arc<str>>>,
}

impl Interner {
    /// An interner whose ids 0 and 1 are tagged `first` and `overflow`, for at most `cap` names.
    pub(crate) fn new(cap: usize, first: &str, overflow: &str) -> Self {
        Interner {
            names: WriteOnceMap::new(SLOTS, PROBES, cap),
            values: ArcSwap::from_pointee(vec![Arc::from(first), Arc::from(overflow)]),
        }
    }

    /// Changes the cap (while the owner is being built).
    pub(crate) fn set_cap(&mut self, cap: usize) {
        self.names.set_limit(cap);
    }

    /// The id of `name`, adding it if there is room; `overflow` past the cap.
    #[inline]
    pub(crate) fn intern(&self, name: &str) -> u32 {
        let name = cut(name);
        let hash = str_hash(name);
        if let Probe::Found(entry) = self.names.probe(hash, |k| same(k.as_bytes(), name.as_bytes()))
        {
            return entry.1;
        }
        self.intern_slow(name, hash)
    }

    #[cold]
    #[inline(never)]
    fn intern_slow(&self, name: &str, hash: usize) -> u32 {
        let make = || (Box::from(name), self.push(sanitize_tag_value(name)));
        self.names.with(hash, name, make, || OVERFLOW_ID, |id| *id)
    }

    /// Adds a tag value that no name maps to (a name the owner compares itself) and returns its
    /// id. Only while the owner is being built, before any name is interned after it.
    pub(crate) fn reserve(&mut self, value: &str) -> u32 {
        self.push(sanitize_tag_value(value))
    }

    /// Appends a tag value: its id. Called under the map's lock (or while building).
    fn push(&self, value: String) -> u32 {
        let current = self.values.load_full();
        // Ids are u32: a table can never hand out more (a cap past that is memory-bound anyway).
        let Ok(id) = u32::try_from(current.len()) else {
            return OVERFLOW_ID;
        };
        let mut next = Vec::clone(&current);
        next.push(Arc::from(value));
        self.values.store(Arc::new(next));
        id
    }

    /// The tag value of `id` (the first value for an id this table never gave out).
    pub(crate) fn value(&self, id: u32) -> Arc<str> {
        let values = self.values.load();
        values.get(id as usize).or_else(|| values.first()).cloned().unwrap_or_else(|| Arc::from(""))
    }

    /// Names interned so far.
    pub(crate) fn len(&self) -> usize {
        self.names.len()
    }
}

/// `name` cut to at most [`MAX_ROUTE_LEN`] bytes, at a character boundary (no allocation).
pub(crate) fn cut(name: &str) -> &str {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_and_reuses_ids() {
        let table = Interner::new(2, "unmatched", "overflow");
        let a = table.intern("/a");
        assert_eq!(table.intern("/a"), a);
        let b = table.intern("/b");
        assert_ne!(a, b);
        assert_eq!(table.intern("/c"), OVERFLOW_ID);
        assert_eq!(table.len(), 2);
        assert_eq!(&*table.value(a), "/a");
        assert_eq!(&*table.value(OVERFLOW_ID), "overflow");
        assert_eq!(&*table.value(999), "unmatched");
    }

    #[test]
    fn read_cache_and_map_agree_for_many_names() {
        // More names than cache slots: some are found through the map only.
        let table = Interner::new(2000, "unmatched", "overflow");
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
    }

    #[test]
    fn hostile_name_is_sanitised_once_and_stays_distinct() {
        let table = Interner::new(8, "unmatched", "overflow");
        let id = table.intern("/a|b,c#d:e\n");
        assert_eq!(&*table.value(id), "/a_b_c_d:e_");
        assert_ne!(table.intern("/a_b_c_d:e_"), id);
    }

    #[test]
    fn long_names_are_stored_cut_to_the_tag_length() {
        let table = Interner::new(4, "unmatched", "overflow");
        let long_a = format!("/{}a", "é".repeat(100_000));
        let long_b = format!("/{}b", "é".repeat(100_000));
        let id = table.intern(&long_a);
        // Same first MAX_ROUTE_LEN bytes: same id (their tag values would be equal anyway).
        assert_eq!(table.intern(&long_b), id);
        assert_eq!(table.len(), 1);
        assert!(table.value(id).len() <= MAX_ROUTE_LEN);
        assert!(cut(&long_a).len() <= MAX_ROUTE_LEN && long_a.starts_with(cut(&long_a)));
    }
}
