//! gRPC: the method path as a route, and which status codes are server failures.
//!
//! A gRPC call is an HTTP/2 POST to `/{package.Service}/{Method}` with `content-type:
//! application/grpc` (or `application/grpc+proto`, ...). Its outcome is the `grpc-status` of the
//! trailers (or of the headers of a trailers-only response), while the HTTP status is 200 even for
//! a failed call. The layer tags that code as `rpc.grpc.status_code`, and follows OpenTelemetry's
//! gRPC conventions for servers to decide whether the call *failed*: `UNKNOWN` (2),
//! `DEADLINE_EXCEEDED` (4), `UNIMPLEMENTED` (12), `INTERNAL` (13), `UNAVAILABLE` (14) and
//! `DATA_LOSS` (15) are the server's failures and add `error.type` = the code's name (for example
//! `error.type="INTERNAL"`); the other codes (`NOT_FOUND`, `INVALID_ARGUMENT`, `CANCELLED`, ...)
//! describe the caller's request, like HTTP 4xx, and add no `error.type`.

use std::borrow::Cow;

use http::{HeaderMap, HeaderName, Uri};

/// The `rpc.grpc.status_code` value for a `grpc-status` outside the 17 codes gRPC defines.
pub(crate) const OTHER_STATUS: &str = "_OTHER";

/// The code names of gRPC, by code.
const NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// The `error.type` of a finished call with gRPC status `code`: its name if it is a server
/// failure (OpenTelemetry's list for servers), else `None`.
pub(crate) fn server_error(code: u8) -> Option<&'static str> {
    match code {
        2 | 4 | 12 | 13 | 14 | 15 => NAMES.get(usize::from(code)).copied(),
        _ => None,
    }
}

/// The method path of a gRPC request (`/pkg.Service/Method`), if the request is gRPC
/// (`content-type` starts with `application/grpc`) and its path has that shape: two non-empty
/// segments of ASCII letters, digits, `_` and `.`. Anything else: `None`.
pub(crate) fn method_path<'a>(headers: &HeaderMap, uri: &'a Uri) -> Option<&'a str> {
    let content_type = headers.get(http::header::CONTENT_TYPE)?.as_bytes();
    if !content_type.starts_with(b"application/grpc") {
        return None;
    }
    let path = uri.path();
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    let valid = |s: &str| {
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
    };
    (valid(service) && valid(method)).then_some(path)
}

/// `grpc-status`, parsed once at compile time: a lookup by `&str` would parse and lower-case
/// the name on every call.
const GRPC_STATUS_HEADER: HeaderName = HeaderName::from_static("grpc-status");

/// The `grpc-status` of a header or trailer map, if it has one: its code, or `u8::MAX` for a
/// value that is not one or two digits.
#[inline]
pub(crate) fn status(headers: &HeaderMap) -> Option<u8> {
    if headers.is_empty() {
        return None;
    }
    status_in(headers)
}

/// [`status`] of a map with headers: out of line (most responses are not gRPC).
#[inline(never)]
fn status_in(headers: &HeaderMap) -> Option<u8> {
    let value = headers.get(&GRPC_STATUS_HEADER)?.as_bytes();
    match value {
        [d] if d.is_ascii_digit() => Some(d - b'0'),
        [a, b] if a.is_ascii_digit() && b.is_ascii_digit() => Some((a - b'0') * 10 + (b - b'0')),
        _ => Some(u8::MAX),
    }
}

/// A `grpc-status` as one small integer for a label-set key: 0 when the response carried none,
/// `code + 1` for the 17 codes gRPC defines (1..=17), 18 for anything else.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub(crate) struct StatusKey(u8);

impl StatusKey {
    /// No `grpc-status` (yet): the key of a packed key whose bits are 0.
    #[cfg(test)]
    pub(crate) const NONE: StatusKey = StatusKey(0);

    /// The key of a parsed `grpc-status` (see [`status`]).
    pub(crate) fn of(code: u8) -> Self {
        StatusKey(code.min(17).saturating_add(1))
    }

    /// The key packed into 5 bits (0..=18).
    pub(crate) fn bits(self) -> u8 {
        self.0
    }

    /// The key of [`bits`](Self::bits) (a value above 18 counts as an unknown code).
    pub(crate) fn from_bits(bits: u8) -> Self {
        StatusKey(bits.min(18))
    }

    /// The code, if it is one of the 17 gRPC defines.
    pub(crate) fn code(self) -> Option<u8> {
        match self.0 {
            code @ 1..=17 => Some(code - 1),
            _ => None,
        }
    }

    /// The `rpc.grpc.status_code` tag value: the code, [`OTHER_STATUS`], or none.
    pub(crate) fn tag_value(self) -> Option<Cow<'static, str>> {
        match self.0 {
            0 => None,
            code @ 1..=17 => Some((code - 1).to_string().into()),
            _ => Some(OTHER_STATUS.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_parses_codes() {
        let mut h = HeaderMap::new();
        assert_eq!(status(&h), None);
        h.insert("grpc-status", "0".parse().expect("header"));
        assert_eq!(status(&h), Some(0));
        h.insert("grpc-status", "16".parse().expect("header"));
        assert_eq!(status(&h), Some(16));
        h.insert("grpc-status", "x".parse().expect("header"));
        assert_eq!(status(&h), Some(u8::MAX));
    }

    #[test]
    fn status_keys_encode_known_codes_and_other() {
        assert_eq!(StatusKey::NONE.tag_value(), None);
        assert_eq!(StatusKey::of(0).tag_value().as_deref(), Some("0"));
        assert_eq!(StatusKey::of(16).tag_value().as_deref(), Some("16"));
        assert_eq!(StatusKey::of(17).tag_value().as_deref(), Some(OTHER_STATUS));
        assert_eq!(StatusKey::of(u8::MAX).tag_value().as_deref(), Some(OTHER_STATUS));
        assert_eq!(StatusKey::of(13).code(), Some(13));
        assert_eq!(StatusKey::of(u8::MAX).code(), None);
        assert!(StatusKey::of(u8::MAX).bits() < 32);
    }

    fn grpc(path: &str, content_type: &str) -> http::Request<()> {
        http::Request::post(path).header("content-type", content_type).body(()).expect("request")
    }

    fn path_of(req: &http::Request<()>) -> Option<&str> {
        method_path(req.headers(), req.uri())
    }

    #[test]
    fn method_path_needs_grpc_and_the_shape() {
        let ok = grpc("/vitals.demo.Demo/Hello", "application/grpc");
        assert_eq!(method_path(ok.headers(), ok.uri()), Some("/vitals.demo.Demo/Hello"));
        let proto = grpc("/a.B/C", "application/grpc+proto");
        assert_eq!(method_path(proto.headers(), proto.uri()), Some("/a.B/C"));
        assert_eq!(path_of(&grpc("/a.B/C", "application/json")), None);
        assert_eq!(path_of(&grpc("/a.B/C/D", "application/grpc")), None);
        assert_eq!(path_of(&grpc("/a.B/", "application/grpc")), None);
        assert_eq!(path_of(&grpc("//C", "application/grpc")), None);
        assert_eq!(path_of(&grpc("/a%20B/C", "application/grpc")), None);
        let plain = http::Request::post("/a.B/C").body(()).expect("request");
        assert_eq!(method_path(plain.headers(), plain.uri()), None, "no content-type: plain HTTP");
    }

    #[test]
    fn only_server_codes_are_errors() {
        assert_eq!(server_error(0), None);
        assert_eq!(server_error(5), None, "NOT_FOUND is the caller's");
        assert_eq!(server_error(13), Some("INTERNAL"));
        assert_eq!(server_error(4), Some("DEADLINE_EXCEEDED"));
        assert_eq!(server_error(17), None);
        assert_eq!(server_error(u8::MAX), None);
    }
}
