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

use http::Request;

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
pub(crate) fn method_path<B>(req: &Request<B>) -> Option<&str> {
    let content_type = req.headers().get(http::header::CONTENT_TYPE)?.as_bytes();
    if !content_type.starts_with(b"application/grpc") {
        return None;
    }
    let path = req.uri().path();
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    let valid = |s: &str| {
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
    };
    (valid(service) && valid(method)).then_some(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grpc(path: &str, content_type: &str) -> Request<()> {
        Request::post(path).header("content-type", content_type).body(()).expect("request")
    }

    #[test]
    fn method_path_needs_grpc_and_the_shape() {
        let ok = grpc("/vitals.demo.Demo/Hello", "application/grpc");
        assert_eq!(method_path(&ok), Some("/vitals.demo.Demo/Hello"));
        let proto = grpc("/a.B/C", "application/grpc+proto");
        assert_eq!(method_path(&proto), Some("/a.B/C"));
        assert_eq!(method_path(&grpc("/a.B/C", "application/json")), None);
        assert_eq!(method_path(&grpc("/a.B/C/D", "application/grpc")), None);
        assert_eq!(method_path(&grpc("/a.B/", "application/grpc")), None);
        assert_eq!(method_path(&grpc("//C", "application/grpc")), None);
        assert_eq!(method_path(&grpc("/a%20B/C", "application/grpc")), None);
        let plain = Request::post("/a.B/C").body(()).expect("request");
        assert_eq!(method_path(&plain), None, "no content-type: plain HTTP");
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
