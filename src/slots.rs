//! A fixed table of write-once slots: the read cache in front of both interners (route names
//! in `routes`, label sets in `handles`).
//!
//! A slot is set at most once, under its owner's write lock, and never emptied, so a reader
//! finds an entry with a hash and plain loads: no lock, no atomic read-modify-write, no reference
//! count. An entry that finds no free slot among its probes lives in the owner's copy-on-write
//! map instead (slower, still lock-free to read).

use std::sync::OnceLock;

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
