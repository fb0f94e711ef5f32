//! The packed label-set key: what identifies the label set of a finished request (route,
//! method, status, outcome, gRPC status, protocol, scheme, the user's label values) as one
//! 128-bit integer, the key of the handle cache. A request's record carries the low half as it
//! fills in ([`PackedKey`]); the first request of a label set unpacks it into a [`ResponseKey`].

use crate::grpc::StatusKey;
use crate::labels::{InputState, Outcome};
use crate::user_labels::ValueIds;

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
    pub(crate) fn label_set(self, outcome: Outcome, labels: ValueIds) -> u128 {
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

impl ResponseKey {
    /// The key as one integer: the low half as before labels existed (bits 5..9: protocol and
    /// scheme), the high half the four label value ids (0 without labels).
    pub(crate) fn pack(self) -> u128 {
        PackedKey::new(self.route, self.method, self.protocol, self.scheme)
            .with_status(self.status.min(999))
            .with_grpc(self.grpc)
            .label_set(self.outcome, self.labels)
    }
}

/// The key of a request-body label set (route, method, body state).
pub(crate) fn input_key(route: u32, method: u8, state: InputState) -> u128 {
    // Bit 63 set: never collides with a response key's route field below 2^31.
    u128::from((1 << 63) | (u64::from(route) << 8) | (state.index() << 4) | u64::from(method & 0xf))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::labels;

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
                                assert_eq!(key.label_set(outcome, labels), fields.pack());
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
}
