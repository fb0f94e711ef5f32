//! The cache of resolved handle sets, per layer.
//!
//! A *handle set* is the counter and histograms of one label set (route, method, status,
//! outcome, gRPC status). It is resolved through the `metrics` facade the first time that label
//! set finishes a request, and kept in a per-layer cache: later requests with the same labels
//! record through the cached handles, with no string work, no registry lookup and no lock.

use std::hash::BuildHasherDefault;
use std::sync::{Arc, Once};

use metrics::{Counter, Histogram, Label};

use crate::hash::{key_slot, KeyHasher};
use crate::labels::{self, InputState};
use crate::names::MetricNames;
use crate::packed_key::{input_key, ResponseKey};
use crate::routes::RouteTable;
use crate::user_labels::LabelTables;
use crate::write_once::{Probe, WriteOnceMap};

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

/// What turns a [`ResponseKey`] into tags: the tables and the tag switches of a layer.
pub(crate) struct TagSources<'a> {
    pub(crate) routes: &'a RouteTable,
    pub(crate) protocol: bool,
    /// The `url.scheme` of requests whose URI has none (`None`: the tag is off).
    pub(crate) scheme: Option<&'a str>,
    pub(crate) user: &'a LabelTables,
}

/// The tags of a label set.
fn tags_of(key: ResponseKey, tags: &TagSources<'_>) -> Vec<Label> {
    let mut out = Vec::with_capacity(11);
    out.push(Label::new(labels::ROUTE, tags.routes.value(key.route).to_string()));
    out.push(Label::new(labels::METHOD, labels::method_label(key.method)));
    if key.status != 0 {
        out.push(Label::new(labels::STATUS, key.status.to_string()));
    }
    if let Some(kind) = labels::error_type(key.outcome, key.status, key.grpc.code()) {
        out.push(Label::new(labels::ERROR_TYPE, kind));
    }
    if let Some(code) = key.grpc.tag_value() {
        out.push(Label::new(labels::GRPC_STATUS, code));
    }
    if tags.protocol {
        out.push(Label::new(labels::PROTOCOL_VERSION, labels::protocol_label(key.protocol)));
    }
    if let Some(default) = tags.scheme {
        let scheme = match key.scheme {
            1 => "http".to_owned(),
            2 => "https".to_owned(),
            _ => default.to_owned(),
        };
        out.push(Label::new(labels::URL_SCHEME, scheme));
    }
    for (key, value) in tags.user.tags(&key.labels) {
        out.push(Label::new(key.to_string(), value.to_string()));
    }
    out
}

/// Slots in the write-once table of each cache (a power of two; 16 bytes each, per layer).
const SLOTS: usize = 1024;
/// Slots probed for one key before falling back to the copy-on-write map.
const PROBES: usize = 8;

/// Resolved values by packed key (see [`WriteOnceMap`]): a hit in the slot table is a hash and
/// plain loads; past its limit a label set is resolved per request, not cached (correct, slower,
/// memory bounded).
type Cache<V> = WriteOnceMap<u128, V, BuildHasherDefault<KeyHasher>>;

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
            responses: Cache::new(SLOTS, PROBES, limit),
            inputs: Cache::new(SLOTS, PROBES, limit),
        }
    }

    pub(crate) fn names(&self) -> &MetricNames {
        &self.names
    }

    /// Describes the metrics once per layer, to the recorder current at the first request.
    pub(crate) fn describe_once(&self) {
        self.described.call_once(|| self.names.describe());
    }

    /// The handles of the packed key `key` ([`PackedKey::label_set`]) if they are cached in the
    /// slot table (every label set after its first request, unless the table is crowded); else
    /// [`with_response`](Self::with_response).
    ///
    /// [`PackedKey::label_set`]: crate::packed_key::PackedKey::label_set
    #[inline]
    pub(crate) fn response(&self, key: u128) -> Option<&ResponseHandles> {
        match self.responses.probe(key_slot(key), |k| *k == key) {
            Probe::Found(entry) => Some(&entry.1),
            Probe::Free(_) | Probe::Full => None,
        }
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
            let labels = tags_of(key, tags);
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
        let packed = key.pack();
        self.responses.with(key_slot(packed), &packed, || (packed, resolve()), &resolve, f)
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
        let key = input_key(route, method, state);
        self.inputs.with(key_slot(key), &key, || (key, resolve()), &resolve, Arc::clone)
    }

    /// Cached label sets (responses + request bodies).
    pub(crate) fn len(&self) -> usize {
        self.responses.len() + self.inputs.len()
    }
}
