//! Labels of the user's own: the [`Label`] / [`Labels`] extensions, the rules a key must follow
//! ([`LabelError`]), and the per-key capped value interners.
//!
//! A layer knows its keys when it is built (at most [`MAX_LABELS`]). Per request, each key's
//! value is turned into a small id by that key's interner (lock-free, no allocation once a value
//! was seen); the ids travel in the request's record and become part of the label-set key.
//! Strings are only touched when a value is first seen (sanitised once) and when a label set's
//! handles are resolved.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use http::request::Parts;

use crate::interner::Interner;
use crate::labels;

/// The most label keys of the user's own one layer accepts.
pub const MAX_LABELS: usize = 4;

/// The default cap on distinct values per label key (see
/// [`VitalsLayerBuilder::label_value_cap`](crate::VitalsLayerBuilder::label_value_cap)).
pub const DEFAULT_LABEL_VALUE_CAP: usize = 32;

/// The largest cap on distinct values per label key (see
/// [`VitalsLayerBuilder::label_value_cap`](crate::VitalsLayerBuilder::label_value_cap)): a value
/// travels with the request as a one-byte id, shared with `none` and `overflow`.
pub const MAX_LABEL_VALUE_CAP: usize = 250;

/// The longest label key, in bytes.
const MAX_KEY_LEN: usize = 64;

/// A label of the user's own, as a response (or request) extension: `key` must be one the layer
/// was told about ([`VitalsLayerBuilder::label`](crate::VitalsLayerBuilder::label) or
/// [`label_from_request`](crate::VitalsLayerBuilder::label_from_request)); labels with other
/// keys are ignored.
///
/// A handler says what it did:
///
/// ```
/// use tower_vitals::Label;
/// let mut res = http::Response::new(());
/// res.extensions_mut().insert(Label::new("cache", "hit"));
/// ```
///
/// On the response it wins over every other source of the same key; on the request (set by a
/// middleware in front of the layer) it wins over the key's `label_from_request` function.
/// Values are capped per key and sanitised when first seen; an empty value counts as missing
/// (`none`).
///
/// A message holds one extension per type, so a second `extensions.insert(Label ..)` replaces
/// the first. To set labels from several places (a middleware and the handler), add each with
/// [`add_to`](Label::add_to): the labels gather in one [`Labels`] extension, and a later label of
/// the same key replaces the earlier one.
///
/// ```
/// use tower_vitals::{Label, Labels};
/// let mut res = http::Response::new(());
/// Label::new("cache", "hit").add_to(res.extensions_mut());
/// Label::new("path", "fast").add_to(res.extensions_mut());
/// let labels = res.extensions().get::<Labels>().expect("both labels");
/// assert_eq!(labels.iter().count(), 2);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Label {
    key: Cow<'static, str>,
    value: Cow<'static, str>,
}

impl Label {
    /// A label from `&'static str`s (no allocation) or `String`s.
    pub fn new(key: impl Into<Cow<'static, str>>, value: impl Into<Cow<'static, str>>) -> Self {
        Label { key: key.into(), value: value.into() }
    }

    /// The key, as given.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The value, as given.
    pub fn value(&self) -> &str {
        &self.value
    }

    /// Adds this label to `extensions` next to the labels already there: into their [`Labels`]
    /// extension (made if missing; a plain `Label` extension already there moves into it first).
    /// A label of the same key already there is replaced.
    pub fn add_to(self, extensions: &mut http::Extensions) {
        Labels::from([self]).add_to(extensions);
    }
}

/// Several [`Label`]s as one extension (a message holds one value per extension type).
///
/// ```
/// use tower_vitals::{Label, Labels};
/// let mut res = http::Response::new(());
/// res.extensions_mut().insert(Labels::from([Label::new("cache", "hit"), Label::new("path", "fast")]));
/// ```
///
/// One value per key: adding a label whose key is already here replaces the earlier one
/// ([`with`](Labels::with), [`add_to`](Labels::add_to), and so `from` and `collect` keep the last
/// of a key). When a key appears both here and in a plain [`Label`] extension of the same
/// message, the `Label` wins ([`Label::add_to`] avoids that case by moving it in here).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Labels(Vec<Label>);

impl Labels {
    /// No labels.
    pub fn new() -> Self {
        Labels(Vec::new())
    }

    /// Adds a label, replacing the one of the same key if there is one.
    pub fn with(mut self, label: Label) -> Self {
        self.insert(label);
        self
    }

    fn insert(&mut self, label: Label) {
        match self.0.iter_mut().find(|l| l.key == label.key) {
            Some(same_key) => *same_key = label,
            None => self.0.push(label),
        }
    }

    /// Adds these labels to `extensions`, merged with the labels already there (see
    /// [`Label::add_to`]): a second `extensions.insert(Labels ..)` would replace the first.
    pub fn add_to(self, extensions: &mut http::Extensions) {
        let plain = extensions.remove::<Label>();
        let merged = extensions.get_or_insert_with(Labels::new);
        if let Some(label) = plain {
            merged.insert(label);
        }
        for label in self.0 {
            merged.insert(label);
        }
    }

    /// The labels, in the order given.
    pub fn iter(&self) -> std::slice::Iter<'_, Label> {
        self.0.iter()
    }
}

impl<const N: usize> From<[Label; N]> for Labels {
    fn from(labels: [Label; N]) -> Self {
        labels.into_iter().collect()
    }
}

impl FromIterator<Label> for Labels {
    fn from_iter<I: IntoIterator<Item = Label>>(iter: I) -> Self {
        let mut labels = Labels::new();
        for label in iter {
            labels.insert(label);
        }
        labels
    }
}

/// Why a label setting was refused by
/// [`VitalsLayerBuilder::label`](crate::VitalsLayerBuilder::label),
/// [`label_from_request`](crate::VitalsLayerBuilder::label_from_request) or
/// [`label_value_cap`](crate::VitalsLayerBuilder::label_value_cap).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LabelError {
    /// The layer already has [`MAX_LABELS`] keys.
    TooMany {
        /// The most keys a layer accepts ([`MAX_LABELS`]).
        max: usize,
    },
    /// The key is one of the layer's own (`http.route`, `error.type`, ...) or one Prometheus
    /// reserves (`le`, `quantile`), compared as Prometheus shows keys (`.` as `_`).
    Reserved {
        /// The key given.
        key: String,
        /// The key it collides with.
        with: &'static str,
    },
    /// The key (as Prometheus shows it) is already a label key of this layer.
    Duplicate {
        /// The key given.
        key: String,
    },
    /// The key is empty, too long, or has characters other than ASCII letters, digits, `_` and
    /// `.` (or starts with a digit or `__`).
    InvalidKey {
        /// The key given.
        key: String,
    },
    /// The cap on distinct values per key is above [`MAX_LABEL_VALUE_CAP`].
    ValueCapTooLarge {
        /// The cap given.
        cap: usize,
        /// The largest cap allowed ([`MAX_LABEL_VALUE_CAP`]).
        max: usize,
    },
}

impl fmt::Display for LabelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LabelError::TooMany { max } => {
                write!(f, "too many label keys: a layer takes at most {max} of the user's own")
            }
            LabelError::Reserved { key, with } => write!(
                f,
                "label key {key:?} is reserved: it collides with {with:?}, a key the layer \
                 (or Prometheus) already uses"
            ),
            LabelError::Duplicate { key } => write!(
                f,
                "label key {key:?} is already a label key of this layer (Prometheus shows `.` as \
                 `_`, so `a.b` and `a_b` are the same key)"
            ),
            LabelError::InvalidKey { key } => write!(
                f,
                "invalid label key {key:?}: use 1 to {MAX_KEY_LEN} ASCII letters, digits, `_` or \
                 `.`, not starting with a digit or `__`"
            ),
            LabelError::ValueCapTooLarge { cap, max } => write!(
                f,
                "label value cap {cap} is too large: each key keeps at most {max} distinct values"
            ),
        }
    }
}

impl std::error::Error for LabelError {}

/// Keys the layer itself emits, and keys Prometheus reserves.
const RESERVED: [&str; 10] = [
    labels::ROUTE,
    labels::METHOD,
    labels::STATUS,
    labels::ERROR_TYPE,
    labels::GRPC_STATUS,
    labels::REQUEST_BODY_STATE,
    labels::PROTOCOL_VERSION,
    labels::URL_SCHEME,
    "le",
    "quantile",
];

/// A key as Prometheus shows it (dots as underscores), for comparisons.
fn prometheus_form(key: &str) -> String {
    key.replace('.', "_")
}

/// Checks `key` against the rules and the keys already taken.
pub(crate) fn check_key(key: &str, taken: &[LabelKey]) -> Result<(), LabelError> {
    let valid = !key.is_empty()
        && key.len() <= MAX_KEY_LEN
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
        && !key.as_bytes()[0].is_ascii_digit()
        && !key.starts_with("__");
    if !valid {
        return Err(LabelError::InvalidKey { key: key.to_owned() });
    }
    let form = prometheus_form(key);
    if let Some(with) = RESERVED.iter().find(|r| prometheus_form(r) == form) {
        return Err(LabelError::Reserved { key: key.to_owned(), with });
    }
    if taken.iter().any(|k| prometheus_form(&k.name) == form) {
        return Err(LabelError::Duplicate { key: key.to_owned() });
    }
    if taken.len() >= MAX_LABELS {
        return Err(LabelError::TooMany { max: MAX_LABELS });
    }
    Ok(())
}

/// Checks a cap on distinct values per key.
pub(crate) fn check_value_cap(cap: usize) -> Result<(), LabelError> {
    if cap > MAX_LABEL_VALUE_CAP {
        return Err(LabelError::ValueCapTooLarge { cap, max: MAX_LABEL_VALUE_CAP });
    }
    Ok(())
}

/// Gives a label function its signature, so that it can be stored in a variable before it is
/// passed to [`label_from_request`](crate::VitalsLayerBuilder::label_from_request).
///
/// A closure that returns a value borrowed from the request head must be declared for every
/// lifetime of that head (`for<'a> Fn(&'a Parts) -> Option<&'a str>`). Rust infers that only for
/// a closure written where such a function is expected; `let f = |req: &Parts| ...` alone gets
/// one lifetime and does not compile. `label_fn` is such a place, and returns the closure as is.
///
/// ```
/// use http::request::Parts;
/// use tower_vitals::{label_fn, VitalsLayer};
///
/// let api_version = label_fn(|req: &Parts| req.headers.get("x-api-version")?.to_str().ok());
/// let layer = VitalsLayer::builder().label_from_request("api.version", api_version)?.build();
/// # let _ = layer;
/// # Ok::<(), tower_vitals::LabelError>(())
/// ```
pub fn label_fn<F>(f: F) -> F
where
    F: for<'a> Fn(&'a Parts) -> Option<&'a str> + Send + Sync + 'static,
{
    f
}

/// A label value function: the request head in, a borrowed (or `'static`) value out.
pub(crate) type FromRequest = Arc<dyn for<'a> Fn(&'a Parts) -> Option<&'a str> + Send + Sync>;

/// One label key of a layer, as configured.
#[derive(Clone)]
pub(crate) struct LabelKey {
    pub(crate) name: Arc<str>,
    /// Where the value comes from when no [`Label`] extension gives one.
    pub(crate) from_request: Option<FromRequest>,
}

/// Value id 0: no value (missing or empty), tagged [`labels::NO_VALUE`].
pub(crate) const NO_VALUE_ID: u8 = 0;

/// The label value ids of one request, by key position (unused positions stay 0).
pub(crate) type ValueIds = [u8; MAX_LABELS];

/// The keys of a layer and one capped value interner per key.
pub(crate) struct LabelTables {
    keys: Box<[LabelKey]>,
    values: Box<[Interner]>,
    /// Some key has a `label_from_request` function.
    from_request: bool,
}

impl LabelTables {
    pub(crate) fn new(keys: &[LabelKey], cap: usize) -> Self {
        let cap = cap.min(MAX_LABEL_VALUE_CAP);
        LabelTables {
            keys: keys.into(),
            values: keys
                .iter()
                .map(|_| Interner::new(cap, labels::NO_VALUE, labels::OVERFLOW))
                .collect(),
            from_request: keys.iter().any(|k| k.from_request.is_some()),
        }
    }

    /// Whether the layer has label keys at all (nothing to do per request otherwise).
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub(crate) fn has_request_functions(&self) -> bool {
        self.from_request
    }

    /// The value id of `value` for the key at `index` (`none` for an empty value; `overflow`
    /// past the cap).
    fn intern(&self, index: usize, value: &str) -> u8 {
        if value.is_empty() {
            return NO_VALUE_ID;
        }
        let id = self.values[index].intern(value);
        // Ids are below the cap + 2 (at most MAX_LABEL_VALUE_CAP + 2): they fit; else overflow.
        u8::try_from(id).unwrap_or(1)
    }

    /// The position of `key` among this layer's keys.
    fn position(&self, key: &str) -> Option<usize> {
        self.keys.iter().position(|k| &*k.name == key)
    }

    /// Values from the request: `Label` / `Labels` extensions first, then the functions.
    pub(crate) fn read_request(&self, parts: &Parts, ids: &mut ValueIds) {
        let mut set = self.read_extensions(&parts.extensions, ids, [false; MAX_LABELS]);
        for (index, key) in self.keys.iter().enumerate() {
            if set[index] {
                continue;
            }
            if let Some(f) = &key.from_request {
                if let Some(value) = f(parts) {
                    ids[index] = self.intern(index, value);
                    set[index] = true;
                }
            }
        }
    }

    /// Values from the extensions of a request without functions (no need to split it).
    pub(crate) fn read_request_extensions(
        &self,
        extensions: &http::Extensions,
        ids: &mut ValueIds,
    ) {
        self.read_extensions(extensions, ids, [false; MAX_LABELS]);
    }

    /// Values from a response's extensions: they override the request's.
    pub(crate) fn read_response(&self, extensions: &http::Extensions, ids: &mut ValueIds) {
        self.read_extensions(extensions, ids, [false; MAX_LABELS]);
    }

    /// Reads `Label` (first) and `Labels` from `extensions` into `ids`; `set` marks keys that
    /// were already given a value by this message. Returns the marks.
    fn read_extensions(
        &self,
        extensions: &http::Extensions,
        ids: &mut ValueIds,
        mut set: [bool; MAX_LABELS],
    ) -> [bool; MAX_LABELS] {
        if let Some(label) = extensions.get::<Label>() {
            if let Some(index) = self.position(label.key()) {
                ids[index] = self.intern(index, label.value());
                set[index] = true;
            }
        }
        if let Some(several) = extensions.get::<Labels>() {
            for label in several.iter() {
                if let Some(index) = self.position(label.key()) {
                    if !set[index] {
                        ids[index] = self.intern(index, label.value());
                        set[index] = true;
                    }
                }
            }
        }
        set
    }

    /// The (key, value) tags of `ids`, for resolving a label set's handles.
    pub(crate) fn tags<'a>(
        &'a self,
        ids: &'a ValueIds,
    ) -> impl Iterator<Item = (Arc<str>, Arc<str>)> + 'a {
        self.keys
            .iter()
            .zip(self.values.iter())
            .zip(ids.iter())
            .map(|((key, values), id)| (Arc::clone(&key.name), values.value(u32::from(*id))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> LabelKey {
        LabelKey { name: Arc::from(name), from_request: None }
    }

    #[test]
    fn keys_follow_the_rules() {
        assert!(check_key("cache", &[]).is_ok());
        assert!(check_key("api.version", &[]).is_ok());
        assert!(matches!(check_key("http_route", &[]), Err(LabelError::Reserved { .. })));
        assert!(matches!(check_key("le", &[]), Err(LabelError::Reserved { .. })));
        assert!(matches!(check_key("9x", &[]), Err(LabelError::InvalidKey { .. })));
        assert!(matches!(check_key("a-b", &[]), Err(LabelError::InvalidKey { .. })));
        assert!(matches!(check_key("a_b", &[key("a.b")]), Err(LabelError::Duplicate { .. })));
        let four = [key("a"), key("b"), key("c"), key("d")];
        assert_eq!(check_key("e", &four), Err(LabelError::TooMany { max: MAX_LABELS }));
    }

    #[test]
    fn values_are_capped_per_key_and_empty_is_none() {
        let tables = LabelTables::new(&[key("a"), key("b")], 2);
        let ids: Vec<u8> = ["x", "y", "z", "x", ""].iter().map(|v| tables.intern(0, v)).collect();
        assert_eq!(ids[0], ids[3]);
        assert_eq!(ids[2], 1, "past the cap: overflow");
        assert_eq!(ids[4], NO_VALUE_ID);
        assert_ne!(tables.intern(1, "z"), 1, "the other key has its own cap");
        let tags: Vec<(String, String)> = tables
            .tags(&[ids[0], ids[2], 0, 0])
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(tags, [("a".into(), "x".into()), ("b".into(), labels::OVERFLOW.into())]);
    }

    #[test]
    fn response_labels_override_and_label_wins_over_labels() {
        let tables = LabelTables::new(&[key("cache"), key("path")], 8);
        let mut ids = [0; MAX_LABELS];
        let mut ext = http::Extensions::new();
        ext.insert(Label::new("cache", "hit"));
        ext.insert(Labels::from([Label::new("cache", "miss"), Label::new("path", "fast")]));
        tables.read_response(&ext, &mut ids);
        let tags: Vec<String> = tables.tags(&ids).map(|(_, v)| v.to_string()).collect();
        assert_eq!(tags, ["hit", "fast"]);
    }
}
