//! The exactly-once guard: the per-request record, and the only place that records metrics.
//!
//! A [`Record`] is created in `Vitals::call`, moves into the `ResponseFuture`, then into the
//! `ResponseBody`. It is finished by value ([`Record::end`]) at the end of the request, or by
//! its `Drop` if it is dropped unfinished (cancellation, client gone, unwinding). Either way,
//! the recording runs once: `end` consumes the record, and `Drop` does nothing for a record
//! that was finished.

use crate::exemplar::{Sample, Scope, TraceId};
use crate::grpc::StatusKey;
use crate::handles::ResponseHandles;
use crate::labels::{self, Outcome};
use crate::packed_key::PackedKey;
use crate::route_name::{self, RouteName};
use crate::shared::Lease;
use crate::user_labels::ValueIds;

/// What `call` learned about a request, for its label set.
#[derive(Clone, Copy)]
pub(crate) struct RequestTags {
    pub(crate) route: u32,
    pub(crate) method: u8,
    /// `labels::protocol_index`.
    pub(crate) protocol: u8,
    /// `labels::scheme_index`.
    pub(crate) scheme: u8,
    /// Value ids of the user's label keys.
    pub(crate) labels: ValueIds,
    /// The request's trace id (exemplars on, and the request had one).
    pub(crate) trace: Option<TraceId>,
}

/// What one request has measured so far. Only integers: no allocation, no lock.
pub(crate) struct Record {
    /// The layer's state, through the stripe of the thread that called the service.
    shared: Lease,
    /// Raw clock reading at `call`.
    t0: u64,
    /// Raw clock reading when the head (or the service's `Err`) arrived, if `HEAD` is set.
    head_at: u64,
    /// Route, method, protocol, scheme, status (0 until the head) and `grpc-status` of the
    /// request's label set, packed as the handle cache looks them up.
    key: PackedKey,
    labels: ValueIds,
    /// The request's trace id as two words (`[0, 0]`: none; an `Option<TraceId>` would align
    /// the record to 16 bytes).
    trace: [u64; 2],
    blocks: u64,
    bytes: u64,
    /// Sum of raw clock deltas during which a frame was held downstream. While a frame is out
    /// (`out`), minus the reading when it was handed out, so that adding the next poll's reading
    /// completes the sum (no separate `out_since` word: the record stays within 64 bytes).
    held: u64,
    /// True while the inner future or body is being polled: a drop in that state is a panic.
    /// (Its own byte, like `out`: they change at every frame, and a plain store is cheaper
    /// than a read-modify-write of `flags`.)
    in_poll: bool,
    /// A frame was handed out and the next poll has not come yet (`held` holds minus its time).
    out: bool,
    /// `FINISHED`, `HEAD`, `TRACE` (one byte: the record stays within 64 bytes, eight words per move from
    /// `call` to the future to the body).
    flags: u8,
}

/// Recorded (or discarded): nothing more to do.
const FINISHED: u8 = 1;
/// `head_at` is set.
const HEAD: u8 = 2;
/// `trace` holds the request's trace id.
const TRACE: u8 = 4;

impl Record {
    /// Starts a request: stamps nothing itself (the caller read `t0`), counts it in flight.
    #[inline(always)]
    pub(crate) fn start(shared: Lease, t0: u64, tags: RequestTags) -> Self {
        shared.enter(shared.stripe(), tags.method, t0);
        Record {
            shared,
            t0,
            head_at: 0,
            key: PackedKey::new(tags.route, tags.method, tags.protocol, tags.scheme),
            labels: tags.labels,
            trace: tags.trace.map_or([0; 2], |id| {
                let id = id.to_u128();
                [(id >> 64) as u64, id as u64]
            }),
            blocks: 0,
            bytes: 0,
            held: 0,
            in_poll: false,
            out: false,
            flags: if tags.trace.is_some() { TRACE } else { 0 },
        }
    }

    #[inline]
    pub(crate) fn now(&self) -> u64 {
        self.shared.config.clock.raw()
    }

    /// The request's method index.
    pub(crate) fn method(&self) -> u8 {
        self.key.method()
    }

    /// The response's status (0 before the head, or when the service failed).
    fn status(&self) -> u16 {
        self.key.status()
    }

    /// The response head arrived (or the service failed) at `now`.
    pub(crate) fn head(&mut self, now: u64, status: u16) {
        self.head_at = now;
        self.flags |= HEAD;
        self.key = self.key.with_status(status);
    }

    /// What the response's extensions say (out of line: most responses carry none). A
    /// [`RouteName`] overrides the route found on the request, [`Label`](crate::Label) values
    /// override the request's. Returns `false` when the response names a route to leave out.
    #[inline(never)]
    pub(crate) fn response_extensions(&mut self, extensions: &http::Extensions) -> bool {
        if let Some(name) =
            route_name::route_names_exist().then(|| extensions.get::<RouteName>()).flatten()
        {
            let route = self.shared.routes.intern(name.as_str());
            if self.shared.routes.is_skipped(route) {
                return false;
            }
            self.key = self.key.with_route(route);
        }
        let labels = &self.shared.labels;
        if !labels.is_empty() {
            labels.read_response(extensions, &mut self.labels);
        }
        true
    }

    /// Leaves the request out after all (its response named a skipped route): it leaves
    /// `active_requests` and `utilization` now, and nothing is recorded.
    #[cold]
    fn discard(&mut self) {
        self.flags |= FINISHED;
        let end = self.now();
        self.shared.leave(self.shared.stripe(), self.method(), end);
    }

    /// `grpc-status` as read from headers or trailers (see `grpc::status`).
    pub(crate) fn set_grpc_status(&mut self, code: u8) {
        self.key = self.key.with_grpc(StatusKey::of(code));
    }

    /// Whether a drop of the unfinished body is a normal end (no body is sent for HEAD, 1xx,
    /// 204 and 304 responses: servers drop such bodies unpolled).
    fn bodyless(&self) -> bool {
        self.method() == labels::HEAD_METHOD || matches!(self.status(), 100..=199 | 204 | 304)
    }

    /// Whether the inner future or body is being polled (set around each poll).
    pub(crate) fn in_poll(&self) -> bool {
        self.in_poll
    }

    /// Call around every poll of the inner future or body.
    #[inline]
    pub(crate) fn set_in_poll(&mut self, in_poll: bool) {
        self.in_poll = in_poll;
    }

    /// Being polled again: the time since the last frame was handed out was output time.
    #[inline]
    pub(crate) fn polled(&mut self) {
        if self.out {
            self.out = false;
            self.held = self.held.wrapping_add(self.now());
        }
    }

    /// A data frame of `len` bytes is being handed out.
    #[inline]
    pub(crate) fn data_frame(&mut self, len: usize) {
        self.blocks += 1;
        self.bytes += len as u64;
    }

    /// A frame is being handed out now; its hold time runs until the next poll or the end.
    #[inline]
    pub(crate) fn frame_out(&mut self) {
        self.held = self.held.wrapping_sub(self.now());
        self.out = true;
    }

    /// The output time so far, once no frame is out: the sum of non-negative hold times (a
    /// clock that stepped back, which quanta's monotonic sources do not, could leave a
    /// "negative" sum: it counts as 0).
    fn held(&self) -> u64 {
        if (self.held as i64) < 0 {
            0
        } else {
            self.held
        }
    }

    /// Ends the request with `outcome` and records every metric, once.
    pub(crate) fn end(mut self, outcome: Outcome) {
        self.record(outcome);
    }

    /// Ends the request with `outcome` in place (no move of the record): a later drop of the
    /// record does nothing but release its lease.
    pub(crate) fn record(&mut self, outcome: Outcome) {
        if self.flags & FINISHED != 0 {
            return;
        }
        self.flags |= FINISHED;
        let end = self.now();
        if self.out {
            self.out = false;
            self.held = self.held.wrapping_add(end);
        }
        self.shared.leave(self.shared.stripe(), self.method(), end);
        // The common case straight from the slot table; the first request of a label set (or a
        // crowded table) through the cache's slow path. The fields are read where they are (no
        // copy of the key or the times to keep across the calls).
        match self.shared.handles.response(self.key.label_set(outcome, self.labels)) {
            Some(handles) => self.record_into(handles, end),
            None => self.record_first(outcome, end),
        }
        // (Two blocks or more: a body was streamed, so there was a head.)
        if self.blocks >= 2 {
            if let Some(small_blocks) = &self.shared.small_blocks {
                let now_ns = self.shared.nanos_since_epoch(end);
                let route = self.key.route();
                small_blocks.add(route, self.blocks, self.bytes, now_ns, &self.shared.routes);
            }
        }
    }

    /// [`record_into`](Self::record_into) the handles of a label set not in the slot table yet.
    #[cold]
    #[inline(never)]
    fn record_first(&self, outcome: Outcome, end: u64) {
        let shared = &*self.shared;
        let key = self.key.unpack(outcome, self.labels);
        shared
            .handles
            .with_response(key, &shared.tag_sources(), |handles| self.record_into(handles, end));
    }

    /// One recording per metric of the request's label set.
    #[inline]
    fn record_into(&self, handles: &ResponseHandles, end: u64) {
        let seconds_per_tick = self.shared.seconds_per_tick;
        if self.flags & TRACE != 0 {
            self.record_with_trace(handles, end, seconds_per_tick);
        } else {
            self.record_request(handles, end, seconds_per_tick);
        }
        if self.status() != 0 {
            handles.output_time.record(self.held() as i64 as f64 * seconds_per_tick);
            handles.output_blocks.record(count(self.blocks));
            handles.output_bytes.record(count(self.bytes));
        }
    }

    /// The recordings that can carry an exemplar: `requests`, `request.duration` and, once the
    /// head was ready, `application_time`.
    #[inline(always)]
    fn record_request(&self, handles: &ResponseHandles, end: u64, seconds_per_tick: f64) {
        handles.requests.increment(1);
        handles.duration.record(ticks_between(self.t0, end) * seconds_per_tick);
        if self.flags & HEAD != 0 {
            handles
                .application_time
                .record(ticks_between(self.t0, self.head_at) * seconds_per_tick);
        }
    }
}

impl Record {
    /// [`record_request`](Self::record_request) with the request's trace id and end time set for
    /// the recorder (see `exemplar::current`). Only a valid id is kept under `TRACE`; were one
    /// not, the request would still be recorded, without an exemplar.
    #[inline(never)]
    fn record_with_trace(&self, handles: &ResponseHandles, end: u64, seconds_per_tick: f64) {
        let trace = u128::from(self.trace[0]) << 64 | u128::from(self.trace[1]);
        let _scope = TraceId::from_u128(trace)
            .map(|trace| Scope::enter(Sample { trace, unix_nanos: self.shared.unix_nanos(end) }));
        self.record_request(handles, end, seconds_per_tick);
    }
}

/// The raw ticks from `from` to `to` as a float, 0 if `to` is earlier (a clock that stepped
/// back). Converted as a signed integer (one instruction; an unsigned one takes six): a span
/// of 2^63 ticks (centuries on any clock) or more also reads as 0.
#[inline]
fn ticks_between(from: u64, to: u64) -> f64 {
    (to.wrapping_sub(from) as i64).max(0) as f64
}

/// A count as a float, converted as a signed integer (counts of 2^63 or more, which no body
/// reaches, read as 2^63).
#[inline]
fn count(n: u64) -> f64 {
    n.min(i64::MAX as u64) as i64 as f64
}

impl Drop for Record {
    #[inline]
    fn drop(&mut self) {
        if self.flags & FINISHED == 0 {
            self.drop_unfinished();
        }
    }
}

impl Record {
    /// A record dropped before its end (cancellation, client gone, unwinding): the rare path,
    /// out of line so that the drop of a finished record is a flag test.
    #[cold]
    #[inline(never)]
    fn drop_unfinished(&mut self) {
        let outcome = if self.in_poll() || std::thread::panicking() {
            Outcome::Panic
        } else if self.flags & HEAD != 0 {
            // Servers drop the bodies of HEAD, 1xx, 204 and 304 responses unpolled.
            if self.bodyless() {
                Outcome::Complete
            } else {
                Outcome::Aborted
            }
        } else {
            Outcome::Cancelled
        };
        self.record(outcome);
    }
}

/// The record of a future or body while its inner future or body is polled, kept in place (no
/// move per poll). Dropped in the normal way, it does nothing (the record is no longer
/// `in_poll`); dropped by a panic's unwinding, it drops the record right there, which finishes
/// it as `panic` (as if the record had sat on the panicking stack frame).
pub(crate) struct Polling<'a>(pub(crate) &'a mut Option<Record>);

impl Polling<'_> {
    /// Marks the record polled and guards it for the duration of the inner poll.
    #[inline]
    pub(crate) fn start(slot: &mut Option<Record>) -> Polling<'_> {
        if let Some(record) = slot.as_mut() {
            record.set_in_poll(true);
        }
        Polling(slot)
    }

    /// The inner poll returned: the record, no longer `in_poll`.
    #[inline]
    pub(crate) fn done(&mut self) -> Option<&mut Record> {
        let record = self.0.as_mut()?;
        record.set_in_poll(false);
        Some(record)
    }

    /// Leaves the request out after all (see [`Record::discard`]); the slot is empty afterwards.
    pub(crate) fn discard(&mut self) {
        if let Some(record) = self.0.as_mut() {
            record.discard();
        }
        *self.0 = None;
    }

    /// Ends the request with `outcome` in place; the slot is empty afterwards.
    #[inline]
    pub(crate) fn end(&mut self, outcome: Outcome) {
        if let Some(record) = self.0.as_mut() {
            record.record(outcome);
        }
        *self.0 = None;
    }
}

impl Drop for Polling<'_> {
    #[inline]
    fn drop(&mut self) {
        if self.0.as_ref().is_some_and(Record::in_poll) {
            *self.0 = None;
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_record_stays_small() {
        // The record moves from `call` to the future to the body: each move copies it, and a
        // larger record turns those copies into `memcpy` calls. 64 bytes of measurements, 16 of
        // trace id (exemplars).
        let size = std::mem::size_of::<super::Record>();
        assert!(size <= 80, "Record is {size} bytes");
    }
}
