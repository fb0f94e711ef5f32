//! The tag vocabulary: the tag keys the layer emits, the values it gives them, how a request
//! ended ([`Outcome`], the `error.type` vocabulary), and the sanitiser every tag value goes
//! through.
//!
//! Keys follow OpenTelemetry's HTTP server conventions; Prometheus shows their dots as
//! underscores (`http.route` → `http_route`). Everything here that touches a string runs when a
//! label set is *first seen*; the request path only carries small integers (a route id, a method
//! index, a status, an outcome).
//!
//! ```
//! use tower_vitals::labels::{self, Outcome};
//! assert_eq!(labels::ROUTE, "http.route");
//! assert_eq!(Outcome::Aborted.error_type(), Some("aborted"));
//! assert_eq!(labels::sanitize_tag_value("/a|b"), "/a_b");
//! ```

use http::Method;

/// Tag key for the route template (OpenTelemetry `http.route`).
pub const ROUTE: &str = "http.route";
/// Tag key for the request method (OpenTelemetry `http.request.method`).
pub const METHOD: &str = "http.request.method";
/// Tag key for the response status code (OpenTelemetry `http.response.status_code`).
pub const STATUS: &str = "http.response.status_code";
/// Tag key for the failure class, present only on failed requests (OpenTelemetry `error.type`).
pub const ERROR_TYPE: &str = "error.type";
/// Tag key for the gRPC status code, present when the response carries `grpc-status`.
pub const GRPC_STATUS: &str = "rpc.grpc.status_code";

/// Tag key for the HTTP version of the request (OpenTelemetry `network.protocol.version`):
/// `1.0`, `1.1`, `2`, `3` (`0.9`). On by default; see
/// [`without_protocol_version`](crate::VitalsLayerBuilder::without_protocol_version).
pub const PROTOCOL_VERSION: &str = "network.protocol.version";
/// Tag key for the URI scheme (OpenTelemetry `url.scheme`): `http` or `https`. On by default;
/// see [`url_scheme`](crate::VitalsLayerBuilder::url_scheme) and
/// [`without_url_scheme`](crate::VitalsLayerBuilder::without_url_scheme).
pub const URL_SCHEME: &str = "url.scheme";

/// Tag key on the request-body metrics (`input_*`): how the service consumed the body:
/// `complete`, `partial`, `unread` or `error` (see [`RequestBody`](crate::RequestBody)).
pub const REQUEST_BODY_STATE: &str = "http.request.body.state";

/// Route value for requests that carry no route name (no `MatchedPath`, no [`RouteName`](crate::RouteName)).
pub const UNMATCHED: &str = "unmatched";
/// Route value for requests whose route name arrived after the route cap was reached.
pub const OVERFLOW: &str = "overflow";
/// Value of a label of the user's own that is missing or empty (the same in every backend).
pub const NO_VALUE: &str = "none";
/// Method value for any method outside the nine standard ones.
pub const OTHER_METHOD: &str = "_OTHER";
/// `rpc.grpc.status_code` value for a `grpc-status` outside the 17 codes gRPC defines.
pub const OTHER_GRPC_STATUS: &str = crate::grpc::OTHER_STATUS;
/// The longest route value kept, in bytes; longer names are cut at a character boundary.
pub const MAX_ROUTE_LEN: usize = 256;

/// How a request ended: the vocabulary of the `error.type` tag.
///
/// One of these is decided, exactly once, for every request, and tagged as
/// [`error_type`](Outcome::error_type) (nothing for [`Outcome::Complete`], unless its status is
/// 5xx or its gRPC status a server failure). The layer decides it; this type is public so that
/// dashboards, alerts and tests can name the values instead of repeating strings.
///
/// ```
/// use tower_vitals::labels::Outcome;
/// let failures: Vec<_> = Outcome::ALL.iter().filter_map(|o| o.error_type()).collect();
/// assert_eq!(failures, ["service_error", "body_error", "aborted", "cancelled", "panic"]);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Outcome {
    /// The response was produced and its body ran to its end (or had none to send).
    Complete,
    /// The inner service returned `Err` instead of a response.
    ServiceError,
    /// The response body yielded an error frame.
    BodyError,
    /// The response body was dropped before its end: usually the client went away.
    Aborted,
    /// The response future was dropped before the head was ready (timeout, client gone).
    Cancelled,
    /// The inner service's future or body panicked while being polled.
    Panic,
}

impl Outcome {
    /// Every outcome, in the order above.
    pub const ALL: [Outcome; 6] = [
        Outcome::Complete,
        Outcome::ServiceError,
        Outcome::BodyError,
        Outcome::Aborted,
        Outcome::Cancelled,
        Outcome::Panic,
    ];

    /// The `error.type` value of this outcome, or `None` for [`Outcome::Complete`].
    /// (A complete response with a 5xx status is tagged with its status code instead.)
    pub fn error_type(self) -> Option<&'static str> {
        match self {
            Outcome::Complete => None,
            Outcome::ServiceError => Some("service_error"),
            Outcome::BodyError => Some("body_error"),
            Outcome::Aborted => Some("aborted"),
            Outcome::Cancelled => Some("cancelled"),
            Outcome::Panic => Some("panic"),
        }
    }

    pub(crate) fn index(self) -> u64 {
        match self {
            Outcome::Complete => 0,
            Outcome::ServiceError => 1,
            Outcome::BodyError => 2,
            Outcome::Aborted => 3,
            Outcome::Cancelled => 4,
            Outcome::Panic => 5,
        }
    }
}

/// How the service consumed a request body: the `http.request.body.state` tag of the `input_*`
/// metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum InputState {
    /// Read to its end (or had nothing to read).
    Complete,
    /// Read in part, then dropped before its end.
    Partial,
    /// Dropped without a single poll: the service never read it.
    Unread,
    /// Reading it failed (the client went away mid-upload, a malformed chunk, a size limit).
    Error,
}

impl InputState {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            InputState::Complete => "complete",
            InputState::Partial => "partial",
            InputState::Unread => "unread",
            InputState::Error => "error",
        }
    }

    pub(crate) fn index(self) -> u64 {
        match self {
            InputState::Complete => 0,
            InputState::Partial => 1,
            InputState::Unread => 2,
            InputState::Error => 3,
        }
    }
}

/// The `error.type` value for a finished request, if it failed: the outcome's, else a 5xx
/// status, else a gRPC status that is a server failure (`grpc`: the `grpc-status` code, if any).
pub(crate) fn error_type(
    outcome: Outcome,
    status: u16,
    grpc: Option<u8>,
) -> Option<std::borrow::Cow<'static, str>> {
    match outcome.error_type() {
        Some(kind) => Some(kind.into()),
        None if status >= 500 => Some(status.to_string().into()),
        None => grpc.and_then(crate::grpc::server_error).map(Into::into),
    }
}

/// Index of a request method: 0..=8 for the standard methods, 9 for anything else.
pub(crate) const METHOD_COUNT: usize = 10;

const METHODS: [&str; METHOD_COUNT] =
    ["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", OTHER_METHOD];

pub(crate) const HEAD_METHOD: u8 = 1;

/// The method index of `method`. Extension methods collapse into `_OTHER`.
#[inline]
pub(crate) fn method_index(method: &Method) -> u8 {
    match *method {
        Method::GET => 0,
        Method::HEAD => 1,
        Method::POST => 2,
        Method::PUT => 3,
        Method::DELETE => 4,
        Method::CONNECT => 5,
        Method::OPTIONS => 6,
        Method::TRACE => 7,
        Method::PATCH => 8,
        _ => 9,
    }
}

/// The tag value of a method index.
pub(crate) fn method_label(index: u8) -> &'static str {
    METHODS.get(index as usize).copied().unwrap_or(OTHER_METHOD)
}

/// Index of an HTTP version: 0 `0.9`, 1 `1.0`, 2 `1.1`, 3 `2`, 4 `3`.
#[inline]
pub(crate) fn protocol_index(version: http::Version) -> u8 {
    match version {
        http::Version::HTTP_09 => 0,
        http::Version::HTTP_10 => 1,
        http::Version::HTTP_2 => 3,
        http::Version::HTTP_3 => 4,
        // HTTP/1.1, and any version a later `http` adds (reported as the common case).
        _ => 2,
    }
}

/// The `network.protocol.version` value of a protocol index.
pub(crate) fn protocol_label(index: u8) -> &'static str {
    ["0.9", "1.0", "1.1", "2", "3"].get(index as usize).copied().unwrap_or("1.1")
}

/// Index of a request's URI scheme: 1 `http`, 2 `https`, 0 none or another (the layer's
/// configured scheme is used).
#[inline]
pub(crate) fn scheme_index(uri: &http::Uri) -> u8 {
    match uri.scheme_str() {
        Some("http") => 1,
        Some("https") => 2,
        _ => 0,
    }
}

/// Makes a tag value safe for every backend: statsd and DogStatsD lines (`|`, `,`, `#` and line
/// breaks are structure there; a `:` inside a tag *value* is not, since a tag splits at its first
/// colon, so `:` is kept) and Prometheus label values (the exporter escapes quotes; control
/// characters and backslashes are replaced here: metrics-exporter-prometheus reads a backslash
/// before `\` or `"` as an escape, so `\"` would reach Prometheus as `"` but statsd as `\"`).
/// Invisible characters that change how a value reads are replaced too: Unicode format
/// characters (general category `Cf`: bidirectional overrides such as U+202E, zero-width spaces
/// and joiners, U+FEFF) and the line and paragraph separators U+2028 and U+2029, so that a
/// dashboard never shows a route spelled backwards or two values that look the same.
/// Each such character becomes `_`; the result is cut to [`MAX_ROUTE_LEN`] bytes at a character
/// boundary; an empty value becomes `_`.
///
/// ```
/// use tower_vitals::labels::sanitize_tag_value;
/// assert_eq!(sanitize_tag_value("/a|b,c#d:e\n"), "/a_b_c_d:e_");
/// assert_eq!(sanitize_tag_value("/users/{id}"), "/users/{id}");
/// assert_eq!(sanitize_tag_value(r#"/a\"b"#), r#"/a_"b"#);
/// assert_eq!(sanitize_tag_value("/a\u{202e}b\u{200b}"), "/a_b_");
/// ```
pub fn sanitize_tag_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len().min(MAX_ROUTE_LEN));
    for c in value.chars() {
        if out.len() + c.len_utf8() > MAX_ROUTE_LEN {
            break;
        }
        let safe = match c {
            '|' | ',' | '#' | '\\' => '_',
            c if c.is_control() || is_invisible(c) => '_',
            c => c,
        };
        out.push(safe);
    }
    if out.is_empty() {
        out.push('_');
    }
    out
}

/// Unicode general category `Cf` (format), as of Unicode 16.0.0 (`DerivedGeneralCategory.txt`),
/// sorted ranges.
const FORMAT_CHARS: [(char, char); 21] = [
    ('\u{ad}', '\u{ad}'),
    ('\u{600}', '\u{605}'),
    ('\u{61c}', '\u{61c}'),
    ('\u{6dd}', '\u{6dd}'),
    ('\u{70f}', '\u{70f}'),
    ('\u{890}', '\u{891}'),
    ('\u{8e2}', '\u{8e2}'),
    ('\u{180e}', '\u{180e}'),
    ('\u{200b}', '\u{200f}'),
    ('\u{202a}', '\u{202e}'),
    ('\u{2060}', '\u{2064}'),
    ('\u{2066}', '\u{206f}'),
    ('\u{feff}', '\u{feff}'),
    ('\u{fff9}', '\u{fffb}'),
    ('\u{110bd}', '\u{110bd}'),
    ('\u{110cd}', '\u{110cd}'),
    ('\u{13430}', '\u{1343f}'),
    ('\u{1bca0}', '\u{1bca3}'),
    ('\u{1d173}', '\u{1d17a}'),
    ('\u{e0001}', '\u{e0001}'),
    ('\u{e0020}', '\u{e007f}'),
];

/// A format character (`Cf`) or a line / paragraph separator (U+2028, U+2029: `Zl`, `Zp`).
fn is_invisible(c: char) -> bool {
    // Every one of them is past U+00AC: ASCII and Latin-1 letters stay one compare.
    if c < '\u{ad}' {
        return false;
    }
    if c == '\u{2028}' || c == '\u{2029}' {
        return true;
    }
    FORMAT_CHARS
        .binary_search_by(|&(lo, hi)| {
            if hi < c {
                std::cmp::Ordering::Less
            } else if lo > c {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        })
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_characters_and_separators_become_underscores() {
        for c in ['\u{202e}', '\u{200b}', '\u{feff}', '\u{2028}', '\u{2029}', '\u{ad}', '\u{e0041}']
        {
            assert_eq!(sanitize_tag_value(&format!("/a{c}b")), "/a_b", "U+{:04X}", c as u32);
        }
        // Neighbours of the ranges, and visible non-ASCII text, are kept.
        for kept in
            ['\u{ac}', '\u{200a}', '\u{2027}', '\u{202f}', '\u{2065}', 'é', '日', '\u{1f600}']
        {
            assert_eq!(sanitize_tag_value(&format!("/a{kept}b")), format!("/a{kept}b"));
        }
        assert!(FORMAT_CHARS.windows(2).all(|w| w[0].1 < w[1].0), "sorted, disjoint");
    }

    #[test]
    fn sanitize_cuts_long_values_at_a_char_boundary() {
        let long = "é".repeat(400);
        let out = sanitize_tag_value(&long);
        assert!(out.len() <= MAX_ROUTE_LEN);
        assert!(out.chars().all(|c| c == 'é'));
        assert_eq!(sanitize_tag_value(""), "_");
    }

    #[test]
    fn protocol_and_scheme_indexes() {
        use http::Version;
        let versions = [
            Version::HTTP_09,
            Version::HTTP_10,
            Version::HTTP_11,
            Version::HTTP_2,
            Version::HTTP_3,
        ];
        let labels: Vec<_> = versions.iter().map(|v| protocol_label(protocol_index(*v))).collect();
        assert_eq!(labels, ["0.9", "1.0", "1.1", "2", "3"]);
        assert_eq!(scheme_index(&"/a".parse().expect("uri")), 0);
        assert_eq!(scheme_index(&"http://h/a".parse().expect("uri")), 1);
        assert_eq!(scheme_index(&"https://h/a".parse().expect("uri")), 2);
        assert_eq!(scheme_index(&"ws://h/a".parse().expect("uri")), 0);
    }

    #[test]
    fn methods_collapse_to_other() {
        assert_eq!(method_label(method_index(&Method::GET)), "GET");
        assert_eq!(method_label(method_index(&Method::PATCH)), "PATCH");
        let foo = Method::from_bytes(b"FOO").expect("valid token");
        assert_eq!(method_label(method_index(&foo)), OTHER_METHOD);
    }

    #[test]
    fn error_type_prefers_the_outcome_over_the_status() {
        assert_eq!(error_type(Outcome::Complete, 200, None), None);
        assert_eq!(error_type(Outcome::Complete, 503, None).as_deref(), Some("503"));
        assert_eq!(error_type(Outcome::Aborted, 503, None).as_deref(), Some("aborted"));
        assert_eq!(error_type(Outcome::ServiceError, 0, None).as_deref(), Some("service_error"));
        assert_eq!(error_type(Outcome::Complete, 200, Some(13)).as_deref(), Some("INTERNAL"));
        assert_eq!(error_type(Outcome::Complete, 200, Some(5)), None);
        assert_eq!(error_type(Outcome::Aborted, 200, Some(13)).as_deref(), Some("aborted"));
    }
}
