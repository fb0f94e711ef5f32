//! Write-once tables: [`WriteOnceMap`], the capped map behind the name interner (route names,
//! label values) and the handle cache (label sets), and the fixed table of write-once [`Slots`]
//! in front of it.
//!
//! Entries are added, never changed or removed, and at most `limit` of them: each key is made
//! once, under a lock, the first time it is seen, and read lock-free ever after. A slot is set
//! at most once and never emptied, so a reader finds an entry with a hash and plain loads: no
//! lock, no atomic read-modify-write, no reference count. An entry that finds no free slot among
//! its probes lives in a copy-on-write map instead (slower, still lock-free to read).

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use arc_swap::ArcSwap;

/// One slot: empty, or an entry set once.
pub(crate) type Slot<E> = OnceLock<Box<E>>;

/// Where a probe sequence ended.
pub(crate) enum Probe<'a, E> {
    /// An entry for which the predicate held.
    Found(&'a E),
    /// The first empty slot: the entry is in none of the slots (they fill in probe order).
    Free(&'a Slot<E>),
    /// Every probed slot holds another entry.
    Full,
}

/// `len` write-once slots (a power of two), probed `probes` at a time from a hash.
pub(crate) struct Slots<E> {
    slots: Box<[Slot<E>]>,
    probes: usize,
}

impl<E> Slots<E> {
    /// `len` must be a power of two.
    pub(crate) fn new(len: usize, probes: usize) -> Self {
        debug_assert!(len.is_power_of_two());
        Slots { slots: (0..len).map(|_| OnceLock::new()).collect(), probes }
    }

    /// Looks for the entry `is` accepts, from slot `hash` on.
    #[inline]
    pub(crate) fn probe(&self, hash: usize, is: impl Fn(&E) -> bool) -> Probe<'_, E> {
        let mask = self.slots.len() - 1;
        for i in 0..self.probes {
            let Some(slot) = self.slots.get(hash.wrapping_add(i) & mask) else {
                return Probe::Full;
            };
            match slot.get() {
                Some(entry) if is(entry) => return Probe::Found(entry),
                Some(_) => {}
                None => return Probe::Free(slot),
            }
        }
        Probe::Full
    }
}

/// A capped map filled once per key: [`Slots`] in front of a copy-on-write `HashMap`.
///
/// `hash` arguments are the caller's hash of the key (the slot sequence starts there); the map
/// uses `S`.
pub(crate) struct WriteOnceMap<K, V, S> {
    slots: Slots<(K, V)>,
    map: ArcSwap<HashMap<K, Arc<V>, S>>,
    /// Entries in `slots` and `map` together, never above `limit`.
    len: AtomicUsize,
    /// One writer at a time: each key is made and admitted once, and `len` stays exact.
    write: Mutex<()>,
    limit: usize,
}

impl<K, V, S> WriteOnceMap<K, V, S>
where
    K: Eq + Hash + Clone,
    S: BuildHasher + Default + Clone,
{
    /// An empty map of `slots` slots (a power of two) probed `probes` at a time, holding at most
    /// `limit` entries.
    pub(crate) fn new(slots: usize, probes: usize, limit: usize) -> Self {
        WriteOnceMap {
            slots: Slots::new(slots, probes),
            map: ArcSwap::from_pointee(HashMap::default()),
            len: AtomicUsize::new(0),
            write: Mutex::new(()),
            limit,
        }
    }

    /// Changes the limit (while the owner is being built).
    pub(crate) fn set_limit(&mut self, limit: usize) {
        self.limit = limit;
    }

    /// The slot table only: the common case of a lookup, inline at the caller (`is` is the
    /// caller's fastest key compare). `Free` and `Full` send it to [`with`](Self::with).
    #[inline]
    pub(crate) fn probe(&self, hash: usize, is: impl Fn(&K) -> bool) -> Probe<'_, (K, V)> {
        self.slots.probe(hash, |entry| is(&entry.0))
    }

    /// Calls `f` with the value of `key`, made by `make` (under the lock, once per key) if it is
    /// new and there is room; past `limit` entries `f` gets `full()` instead (nothing is
    /// stored, no lock is taken).
    pub(crate) fn with<Q, R>(
        &self,
        hash: usize,
        key: &Q,
        make: impl FnOnce() -> (K, V),
        full: impl FnOnce() -> V,
        f: impl FnOnce(&V) -> R,
    ) -> R
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        match self.probe(hash, |k| k.borrow() == key) {
            Probe::Found(entry) => return f(&entry.1),
            // Slots fill in probe order and are never emptied: the key is in none of them, nor
            // in the map (it would only be there if all its slots had been taken before it).
            Probe::Free(_) => {}
            Probe::Full => {
                if let Some(found) = self.map.load().get(key) {
                    return f(found);
                }
            }
        }
        if self.len.load(Ordering::Relaxed) >= self.limit {
            return f(&full());
        }
        self.insert(hash, key, make, full, f)
    }

    #[cold]
    #[inline(never)]
    fn insert<Q, R>(
        &self,
        hash: usize,
        key: &Q,
        make: impl FnOnce() -> (K, V),
        full: impl FnOnce() -> V,
        f: impl FnOnce(&V) -> R,
    ) -> R
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        // A poisoned lock only means another thread panicked while holding `()`: nothing to repair.
        let _guard = self.write.lock().unwrap_or_else(|poison| poison.into_inner());
        let free = match self.probe(hash, |k| k.borrow() == key) {
            Probe::Found(entry) => return f(&entry.1),
            Probe::Free(slot) => Some(slot),
            Probe::Full => None,
        };
        let current = self.map.load_full();
        if let Some(found) = current.get(key) {
            return f(found);
        }
        if self.len.load(Ordering::Relaxed) >= self.limit {
            return f(&full());
        }
        self.len.fetch_add(1, Ordering::Relaxed);
        if let Some(slot) = free {
            // Slots are only set under `write`: this one is still empty.
            let entry = slot.get_or_init(|| Box::new(make()));
            return f(&entry.1);
        }
        let (key, value) = make();
        let value = Arc::new(value);
        let mut next = HashMap::clone(&current);
        next.insert(key, Arc::clone(&value));
        self.map.store(Arc::new(next));
        f(&value)
    }

    /// Entries so far.
    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// Whether the copy-on-write map holds any entry (some key found no free slot).
    #[cfg(test)]
    pub(crate) fn spilled(&self) -> bool {
        !self.map.load().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_found_where_they_were_set_and_full_sequences_say_so() {
        let slots: Slots<(u64, u64)> = Slots::new(4, 2);
        match slots.probe(1, |e| e.0 == 7) {
            Probe::Free(slot) => assert!(slot.set(Box::new((7, 70))).is_ok()),
            _ => panic!("an empty table has a free slot"),
        }
        assert!(matches!(slots.probe(1, |e| e.0 == 7), Probe::Found((7, 70))));
        match slots.probe(1, |e| e.0 == 8) {
            Probe::Free(slot) => assert!(slot.set(Box::new((8, 80))).is_ok()),
            _ => panic!("the second probe is free"),
        }
        assert!(matches!(slots.probe(1, |e| e.0 == 9), Probe::Full));
        assert!(matches!(slots.probe(2, |e| e.0 == 8), Probe::Found((8, 80))));
    }
}

#[cfg(test)]
mod map_tests {
    use std::hash::BuildHasherDefault;

    use super::*;
    use crate::hash::{key_slot, KeyHasher};

    type Map = WriteOnceMap<u128, u128, BuildHasherDefault<KeyHasher>>;

    #[test]
    fn each_key_is_made_once_in_slots_or_map_and_the_limit_holds() {
        const SLOTS: usize = 64;
        let made = AtomicUsize::new(0);
        let limit = SLOTS * 4;
        let map = Map::new(SLOTS, 8, limit);
        let get = |key: u128| {
            let made = &made;
            map.with(
                key_slot(key),
                &key,
                || {
                    made.fetch_add(1, Ordering::Relaxed);
                    (key, key * 3)
                },
                || u128::MAX,
                |v| *v,
            )
        };
        // More keys than slots: some must spill into the copy-on-write map.
        for round in 0..2 {
            for key in 0..(SLOTS as u128 * 2) {
                assert_eq!(get(key), key * 3, "round {round}");
            }
        }
        assert_eq!(made.load(Ordering::Relaxed), SLOTS * 2);
        assert!(map.spilled());
        assert_eq!(map.len(), SLOTS * 2);
        // Past the limit: `full()`, never stored, never made.
        for key in 10_000..(10_000 + limit as u128) {
            get(key);
        }
        assert_eq!(map.len(), limit);
        let before = made.load(Ordering::Relaxed);
        assert_eq!(get(99_999), u128::MAX);
        assert_eq!(get(99_999), u128::MAX);
        assert_eq!(made.load(Ordering::Relaxed), before);
    }
}
