//! The cache of resolved handle sets, per layer.
//!
//! A *handle set* is the counter and histograms of one label set (route, method, status,
//! outcome, gRPC status). It is resolved through the `metrics` facade the first time that label
//! set finishes a request, and kept in a per-layer cache: later requests with the same labels
//! record through the cached handles, with no string work, no registry lookup and no lock.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once};

use arc_swap::ArcSwap;
use metrics::{Counter, Histogram, Label};

use crate::grpc::StatusKey;
use crate::labels::{self, InputState, Outcome};
use crate::names::MetricNames;
use crate::routes::RouteTable;
use crate::slots::{Probe, Slot, Slots};
use crate::user_labels::{LabelTables, ValueIds};

/// The handles of one response label set.
pub(crate) struct ResponseHandles {
    pub(crate) requests: Counter,
    pub(crate) duration: Histogram,
    pub(crate) application_time: Histogram,
    pub(crate) output_time: Histogram,
    pub(crate) output_blocks: Histogram,
    pub(crate) output_bytes: Histogram,
}

/// The handles of one request-body label set.
pub(crate) struct InputHandles {
    pub(crate) blocks: Histogram,
    pub(crate) bytes: Histogram,
    pub(crate) time: Histogram,
}

/// What identifies a response label set, packed into one integer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct ResponseKey {
    pub(crate) route: u32,
    pub(crate) method: u8,
    /// 0 when no head was produced.
    pub(crate) status: u16,
    pub(crate) outcome: Outcome,
    pub(crate) grpc: StatusKey,
    /// `labels::protocol_index` of the request (ignored when the tag is off).
    pub(crate) protocol: u8,
    /// `labels::scheme_index` of the request (ignored when the tag is off).
    pub(crate) scheme: u8,
    /// Value ids of the user's label keys, by key position.
    pub(crate) labels: ValueIds,
}

/// The low half of a packed [`ResponseKey`] without its outcome, as a request's record carries
/// it (one word instead of six fields, set as the request goes: route, method, protocol and
/// scheme at `call`, the status at the head, `grpc-status` when seen; the outcome and labels are
/// added at the end). Bits: route 32..64, method 28..32, status (up to 999) 18..28, outcome
/// 14..18, scheme 8..10, protocol 5..8, `grpc-status` key 0..5.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PackedKey(u64);

impl PackedKey {
    const STATUS: u64 = 0x3ff << 18;
    const GRPC: u64 = 0x1f;

    #[inline]
    pub(crate) fn new(route: u32, method: u8, protocol: u8, scheme: u8) -> Self {
        PackedKey(
            (u64::from(route) << 32)
                | (u64::from(method & 0xf) << 28)
                | (u64::from(scheme & 0x3) << 8)
                | (u64::from(protocol & 0x7) << 5),
        )
    }

    /// Sets the status, once: its bits must still be 0 (the head comes once). HTTP statuses
    /// are 100..=999, so 10 bits hold them.
    #[inline]
    pub(crate) fn with_status(self, status: u16) -> Self {
        debug_assert_eq!(self.0 & Self::STATUS, 0, "the status is set once");
        PackedKey(self.0 | (u64::from(status & 0x3ff) << 18))
    }

    #[inline]
    pub(crate) fn with_grpc(self, grpc: StatusKey) -> Self {
        PackedKey((self.0 & !Self::GRPC) | u64::from(grpc.bits() & 0x1f))
    }

    #[inline]
    pub(crate) fn with_route(self, route: u32) -> Self {
        PackedKey((self.0 & 0xffff_ffff) | (u64::from(route) << 32))
    }

    #[inline]
    pub(crate) fn route(self) -> u32 {
        (self.0 >> 32) as u32
    }

    #[inline]
    pub(crate) fn method(self) -> u8 {
        ((self.0 >> 28) & 0xf) as u8
    }

    /// The status (0 until the head).
    #[inline]
    pub(crate) fn status(self) -> u16 {
        ((self.0 & Self::STATUS) >> 18) as u16
    }

    /// The whole key of the request's label set, with its outcome and label value ids.
    #[inline]
    pub(crate) fn finish(self, outcome: Outcome, labels: ValueIds) -> u128 {
        let high = u64::from(u32::from_le_bytes(labels));
        (u128::from(high) << 64) | u128::from(self.0 | (outcome.index() << 14))
    }

    /// The fields back (for the first request of a label set, which resolves its tags).
    pub(crate) fn unpack(self, outcome: Outcome, labels: ValueIds) -> ResponseKey {
        ResponseKey {
            route: self.route(),
            method: self.method(),
            status: self.status(),
            outcome,
            grpc: StatusKey::from_bits((self.0 & Self::GRPC) as u8),
            protocol: ((self.0 >> 5) & 0x7) as u8,
            scheme: ((self.0 >> 8) & 0x3) as u8,
            labels,
        }
    }
}

/// What turns a [`ResponseKey`] into tags: the tables and the tag switches of a layer.
pub(crate) struct TagSources<'a> {
    pub(crate) routes: &'a RouteTable,
    pub(crate) protocol: bool,
    /// The `url.scheme` of requests whose URI has none (`None`: the tag is off).
    pub(crate) scheme: Option<&'a str>,
    pub(crate) user: &'a LabelTables,
}

impl ResponseKey {
    /// The key as one integer: the low half as before labels existed (bits 5..9: protocol and
    /// scheme), the high half the four label value ids (0 without labels).
    fn pack(self) -> u128 {
        PackedKey::new(self.route, self.method, self.protocol, self.scheme)
            .with_status(self.status.min(999))
            .with_grpc(self.grpc)
            .finish(self.outcome, self.labels)
    }

    fn labels(self, tags: &TagSources<'_>) -> Vec<Label> {
        let mut out = Vec::with_capacity(11);
        out.push(Label::new(labels::ROUTE, tags.routes.value(self.route).to_string()));
        out.push(Label::new(labels::METHOD, labels::method_label(self.method)));
        if self.status != 0 {
            out.push(Label::new(labels::STATUS, self.status.to_string()));
        }
        if let Some(kind) = labels::error_type(self.outcome, self.status, self.grpc.code()) {
            out.push(Label::new(labels::ERROR_TYPE, kind));
        }
        if let Some(code) = self.grpc.tag_value() {
            out.push(Label::new(labels::GRPC_STATUS, code));
        }
        if tags.protocol {
            out.push(Label::new(labels::PROTOCOL_VERSION, labels::protocol_label(self.protocol)));
        }
        if let Some(default) = tags.scheme {
            let scheme = match self.scheme {
                1 => "http".to_owned(),
                2 => "https".to_owned(),
                _ => default.to_owned(),
            };
            out.push(Label::new(labels::URL_SCHEME, scheme));
        }
        for (key, value) in tags.user.tags(&self.labels) {
            out.push(Label::new(key.to_string(), value.to_string()));
        }
        out
    }
}

fn input_key(route: u32, method: u8, state: InputState) -> u128 {
    // Bit 63 set: never collides with a response key's route field below 2^31.
    u128::from((1 << 63) | (u64::from(route) << 8) | (state.index() << 4) | u64::from(method & 0xf))
}

/// A multiply-xorshift mix for keys that are already small integers (SplitMix64's finaliser).
#[derive(Default)]
pub(crate) struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        let mut z = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
    fn write_u128(&mut self, n: u128) {
        self.0 = fold(n);
    }
}

/// A 128-bit key folded to 64 bits before the mix (the high half holds label value ids, 0
/// without labels: such keys hash as they did as 64-bit keys).
#[inline]
fn fold(key: u128) -> u64 {
    (key as u64) ^ ((key >> 64) as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// The slot of a key: one multiply (Fibonacci hashing), the product's high half. Keys are
/// packed small integers; a collision costs only a probe.
#[inline]
fn slot_hash(key: u128) -> usize {
    (fold(key).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as usize
}

type KeyMap<V> = HashMap<u128, Arc<V>, BuildHasherDefault<KeyHasher>>;

/// Slots in the write-once table of each cache (a power of two; 16 bytes each, per layer).
const SLOTS: usize = 1024;
/// Slots probed for one key before falling back to the copy-on-write map.
const PROBES: usize = 8;

/// Resolved values by packed key: a fixed table of write-once slots in front of a copy-on-write
/// map. A hit in the table is a hash and plain loads (no atomic read-modify-write, no reference
/// count); a label set that finds no free slot among its probes lives in the map (an `ArcSwap`
/// load and a hash lookup). Both are filled only the first time a key is seen.
struct Cache<V> {
    slots: Slots<(u128, V)>,
    /// Entries in `slots` and `map` together, never above `limit`.
    len: AtomicUsize,
    map: ArcSwap<KeyMap<V>>,
    write: Mutex<()>,
    limit: usize,
}

impl<V> Cache<V> {
    fn new(limit: usize) -> Self {
        Cache {
            slots: Slots::new(SLOTS, PROBES),
            len: AtomicUsize::new(0),
            map: ArcSwap::from_pointee(KeyMap::default()),
            write: Mutex::new(()),
            limit,
        }
    }

    /// Calls `f` with the cached value of `key`, resolving and caching it on a miss. Past
    /// `limit` entries a miss is resolved but not cached (correct, slower, memory bounded).
    fn with<R>(&self, key: u128, resolve: impl Fn() -> V, f: impl FnOnce(&V) -> R) -> R {
        match self.probe(key) {
            Probe::Found(entry) => return f(&entry.1),
            // Slots fill in probe order and are never emptied: the key is in none of them, nor
            // in the map (it would only be there if all its slots had been taken before it).
            Probe::Free(_) => {}
            Probe::Full => {
                if let Some(found) = self.map.load().get(&key) {
                    return f(found);
                }
            }
        }
        self.miss(key, resolve, f)
    }

    /// The cached value of `key` if it sits in the slot table (the common case: no call, no
    /// closure); `None` sends the caller to [`with`](Self::with).
    #[inline]
    fn get(&self, key: u128) -> Option<&V> {
        match self.probe(key) {
            Probe::Found(entry) => Some(&entry.1),
            Probe::Free(_) | Probe::Full => None,
        }
    }

    #[inline]
    fn probe(&self, key: u128) -> Probe<'_, (u128, V)> {
        self.slots.probe(slot_hash(key), |entry| entry.0 == key)
    }

    #[cold]
    fn miss<R>(&self, key: u128, resolve: impl Fn() -> V, f: impl FnOnce(&V) -> R) -> R {
        // One writer at a time: each key is resolved and admitted once, and `len` stays exact.
        let _guard = self.write.lock().unwrap_or_else(|poison| poison.into_inner());
        let free: Option<&Slot<(u128, V)>> = match self.probe(key) {
            Probe::Found(entry) => return f(&entry.1),
            Probe::Free(slot) => Some(slot),
            Probe::Full => None,
        };
        let current = self.map.load_full();
        if let Some(found) = current.get(&key) {
            return f(found);
        }
        if self.len.load(Ordering::Relaxed) >= self.limit {
            return f(&resolve());
        }
        self.len.fetch_add(1, Ordering::Relaxed);
        if let Some(slot) = free {
            // Slots are only filled under `write`: this one is still empty.
            let entry = slot.get_or_init(|| Box::new((key, resolve())));
            return f(&entry.1);
        }
        let value = Arc::new(resolve());
        let mut next = KeyMap::clone(&current);
        next.insert(key, Arc::clone(&value));
        self.map.store(Arc::new(next));
        f(&value)
    }

    fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }
}

/// The per-layer cache of resolved handles.
pub(crate) struct HandleCache {
    names: MetricNames,
    described: Once,
    responses: Cache<ResponseHandles>,
    inputs: Cache<Arc<InputHandles>>,
}

impl HandleCache {
    pub(crate) fn new(names: MetricNames, limit: usize) -> Self {
        HandleCache {
            names,
            described: Once::new(),
            responses: Cache::new(limit),
            inputs: Cache::new(limit),
        }
    }

    pub(crate) fn names(&self) -> &MetricNames {
        &self.names
    }

    /// Describes the metrics once per layer, to the recorder current at the first request.
    pub(crate) fn describe_once(&self) {
        self.described.call_once(|| self.names.describe());
    }

    /// The handles of the packed key `key` ([`PackedKey::finish`]) if they are cached in the slot
    /// table (every label set after its first request, unless the table is crowded); else
    /// [`with_response`](Self::with_response).
    #[inline]
    pub(crate) fn response(&self, key: u128) -> Option<&ResponseHandles> {
        self.responses.get(key)
    }

    /// Calls `f` with the handles of `key` (resolved through the current recorder the first
    /// time the label set is seen).
    #[cold]
    pub(crate) fn with_response<R>(
        &self,
        key: ResponseKey,
        tags: &TagSources<'_>,
        f: impl FnOnce(&ResponseHandles) -> R,
    ) -> R {
        let resolve = || {
            self.describe_once();
            let labels = key.labels(tags);
            let n = &self.names;
            ResponseHandles {
                requests: metrics::counter!(n.requests.clone(), labels.iter()),
                duration: metrics::histogram!(n.duration.clone(), labels.iter()),
                application_time: metrics::histogram!(n.application_time.clone(), labels.iter()),
                output_time: metrics::histogram!(n.output_time.clone(), labels.iter()),
                output_blocks: metrics::histogram!(n.output_blocks.clone(), labels.iter()),
                output_bytes: metrics::histogram!(n.output_bytes.clone(), labels.iter()),
            }
        };
        self.responses.with(key.pack(), resolve, f)
    }

    /// The request-body handles of `route` and `method` (once per request body, opt-in).
    pub(crate) fn input(
        &self,
        route: u32,
        method: u8,
        state: InputState,
        routes: &RouteTable,
    ) -> Arc<InputHandles> {
        let resolve = || {
            self.describe_once();
            let labels = [
                Label::new(labels::ROUTE, routes.value(route).to_string()),
                Label::new(labels::METHOD, labels::method_label(method)),
                Label::new(labels::REQUEST_BODY_STATE, state.as_str()),
            ];
            let n = &self.names;
            Arc::new(InputHandles {
                blocks: metrics::histogram!(n.input_blocks.clone(), labels.iter()),
                bytes: metrics::histogram!(n.input_bytes.clone(), labels.iter()),
                time: metrics::histogram!(n.input_time.clone(), labels.iter()),
            })
        };
        self.inputs.with(input_key(route, method, state), resolve, Arc::clone)
    }

    /// Cached label sets (responses + request bodies).
    pub(crate) fn len(&self) -> usize {
        self.responses.len() + self.inputs.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_keys_are_distinct_per_field() {
        let base = ResponseKey {
            route: 3,
            method: 0,
            status: 200,
            outcome: Outcome::Complete,
            grpc: StatusKey::NONE,
            protocol: 2,
            scheme: 0,
            labels: [0; 4],
        };
        let variants = [
            ResponseKey { route: 4, ..base },
            ResponseKey { method: 9, ..base },
            ResponseKey { status: 500, ..base },
            ResponseKey { outcome: Outcome::Panic, ..base },
            ResponseKey { grpc: StatusKey::of(u8::MAX), ..base },
            ResponseKey { protocol: 4, ..base },
            ResponseKey { scheme: 2, ..base },
            ResponseKey { labels: [1, 0, 0, 0], ..base },
            ResponseKey { labels: [0, 0, 0, 250], ..base },
        ];
        let mut packed: Vec<u128> = variants.iter().map(|v| v.pack()).collect();
        packed.push(base.pack());
        packed.sort_unstable();
        packed.dedup();
        assert_eq!(packed.len(), variants.len() + 1, "every field changes the key");
        assert_ne!(input_key(3, 0, InputState::Complete), base.pack());
        assert_ne!(input_key(3, 0, InputState::Complete), input_key(3, 0, InputState::Unread));
    }

    #[test]
    fn a_key_built_as_the_request_goes_packs_and_unpacks_like_the_fields() {
        // Every route, method, status, outcome, gRPC code, protocol and scheme the layer makes
        // (statuses 100..=999, codes 0..=16 and an unknown one), in any order of setting.
        let mut n = 0;
        for route in [0, 1, 2, 77, u32::MAX >> 1] {
            for method in 0..labels::METHOD_COUNT as u8 {
                for status in [0, 100, 200, 204, 304, 404, 500, 599, 999] {
                    for grpc in [None, Some(0), Some(14), Some(16), Some(200)] {
                        for (protocol, scheme) in [(0, 0), (2, 1), (4, 2), (7, 3)] {
                            for outcome in Outcome::ALL {
                                let labels = [route as u8, method, 0, 250];
                                let grpc_key = grpc.map_or(StatusKey::NONE, StatusKey::of);
                                let fields = ResponseKey {
                                    route,
                                    method,
                                    status,
                                    outcome,
                                    grpc: grpc_key,
                                    protocol,
                                    scheme,
                                    labels,
                                };
                                let mut key = PackedKey::new(7, method, protocol, scheme);
                                if let Some(code) = grpc {
                                    key = key.with_grpc(StatusKey::of(code));
                                }
                                key = key.with_status(status).with_route(route);
                                assert_eq!(key.route(), route);
                                assert_eq!(key.method(), method);
                                assert_eq!(key.status(), status);
                                assert_eq!(key.finish(outcome, labels), fields.pack());
                                assert_eq!(key.unpack(outcome, labels), fields);
                                n += 1;
                            }
                        }
                    }
                }
            }
        }
        assert_eq!(n, 5 * labels::METHOD_COUNT * 9 * 5 * 4 * 6);
    }

    #[test]
    fn cache_resolves_each_key_once_in_slots_or_map_and_keeps_its_limit() {
        use std::sync::atomic::AtomicU64;
        let resolved = AtomicU64::new(0);
        let limit = SLOTS * 2;
        let cache: Cache<u128> = Cache::new(limit);
        let resolved = &resolved;
        let resolve = |key: u128| {
            move || {
                resolved.fetch_add(1, Ordering::Relaxed);
                key * 3
            }
        };
        // More keys than slots: some must spill into the copy-on-write map.
        for round in 0..2 {
            for key in 0..(SLOTS as u128 + 500) {
                assert_eq!(cache.with(key, resolve(key), |v| *v), key * 3, "round {round}");
            }
        }
        assert_eq!(resolved.load(Ordering::Relaxed), SLOTS as u64 + 500);
        assert!(!cache.map.load().is_empty());
        assert_eq!(cache.len(), SLOTS + 500);
        // Past the limit: still the right value, resolved every time, never cached.
        for key in 10_000..(10_000 + limit as u128) {
            cache.with(key, resolve(key), |_| ());
        }
        assert_eq!(cache.len(), limit);
        let before = resolved.load(Ordering::Relaxed);
        assert_eq!(cache.with(99_999, resolve(99_999), |v| *v), 99_999 * 3);
        assert_eq!(cache.with(99_999, resolve(99_999), |v| *v), 99_999 * 3);
        assert_eq!(resolved.load(Ordering::Relaxed), before + 2);
    }
}
