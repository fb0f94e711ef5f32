//! `/vitals.json`: a [`Snapshot`] as JSON (schema in the module docs of [`live`](super)).
//!
//! Written by hand (no serde): every string is escaped, and `<`, `>`, `&` are written as
//! `\u003c`, `\u003e`, `\u0026` so the text is inert even if pasted into HTML.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::snapshot::{
    HistoryPoint, Percentiles, PeriodSnapshot, RouteSnapshot, ServiceSnapshot, SlowRequest,
    Snapshot, SMALL_BLOCK_BYTES, SMALL_BLOCK_MIN_BLOCKS,
};

/// The `schema` field: bumped on any incompatible change.
pub const SCHEMA: &str = "tower-vitals.live/1";

/// Appends `s` as a JSON string literal.
pub(crate) fn string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A number, or `null` when absent or not finite. Rust's `Display` of an `f64` is the shortest
/// text that parses back to the same value, so readers get the exact number.
fn number(out: &mut String, v: Option<f64>) {
    match v {
        Some(v) if v.is_finite() => {
            let _ = write!(out, "{v}");
        }
        _ => out.push_str("null"),
    }
}

fn key(out: &mut String, k: &str) {
    string(out, k);
    out.push(':');
}

fn counts(out: &mut String, map: &BTreeMap<String, u64>) {
    out.push('{');
    for (i, (k, v)) in map.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        key(out, k);
        let _ = write!(out, "{v}");
    }
    out.push('}');
}

fn percentiles(out: &mut String, p: &Percentiles) {
    let _ = write!(out, "{{\"count\":{},\"mean\":", p.count);
    number(out, p.mean);
    for (name, v) in [("p50", p.p50), ("p95", p.p95), ("p99", p.p99), ("max", p.max)] {
        out.push(',');
        key(out, name);
        number(out, v);
    }
    out.push('}');
}

fn period(out: &mut String, p: &PeriodSnapshot) {
    out.push_str("{\"seconds\":");
    number(out, Some(p.covered.as_secs_f64()));
    let _ = write!(out, ",\"requests\":{},\"rate_per_second\":", p.requests);
    number(out, p.rate());
    out.push_str(",\"errors\":");
    counts(out, &p.errors);
    out.push_str(",\"status\":");
    counts(out, &p.status);
    for (name, v) in [
        ("duration", &p.duration),
        ("application_time", &p.application_time),
        ("output_time", &p.output_time),
    ] {
        out.push(',');
        key(out, name);
        percentiles(out, v);
    }
    let _ = write!(
        out,
        ",\"responses\":{},\"bytes\":{},\"blocks\":{},\"bytes_per_response\":",
        p.responses, p.bytes, p.blocks
    );
    number(out, p.bytes_per_response());
    out.push_str(",\"blocks_per_response\":");
    number(out, p.blocks_per_response());
    out.push_str(",\"bytes_per_block\":");
    number(out, p.bytes_per_block());
    let _ = write!(out, ",\"small_blocks\":{},\"slowest\":", p.small_blocks());
    slowest(out, &p.slowest);
    out.push('}');
}

/// `[{"trace_id": "…", "duration": 1.2, "end_unix_ms": 1733325600123}, …]`.
fn slowest(out: &mut String, list: &[SlowRequest]) {
    out.push('[');
    for (i, s) in list.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        // 32 lowercase hex digits: nothing to escape.
        let _ = write!(out, "{{\"trace_id\":\"{}\",\"duration\":", s.trace_id);
        number(out, Some(s.duration));
        let _ = write!(out, ",\"end_unix_ms\":{}}}", s.ended_unix_ms());
    }
    out.push(']');
}

fn history(out: &mut String, h: &[HistoryPoint]) {
    out.push_str("{\"requests\":[");
    for (i, p) in h.iter().enumerate() {
        let _ = write!(out, "{}{}", if i > 0 { "," } else { "" }, p.requests);
    }
    out.push_str("],\"errors\":[");
    for (i, p) in h.iter().enumerate() {
        let _ = write!(out, "{}{}", if i > 0 { "," } else { "" }, p.errors);
    }
    for (name, get) in [
        ("mean_duration", (|p: &HistoryPoint| p.mean_duration) as fn(&HistoryPoint) -> _),
        ("max_duration", |p: &HistoryPoint| p.max_duration),
    ] {
        out.push_str("],");
        key(out, name);
        out.push('[');
        for (i, p) in h.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            number(out, get(p));
        }
    }
    out.push_str("]}");
}

fn route(out: &mut String, r: &RouteSnapshot) {
    out.push('{');
    key(out, "route");
    string(out, &r.route);
    out.push_str(",\"since_start\":");
    period(out, &r.since_start);
    out.push_str(",\"window\":");
    period(out, &r.window);
    out.push_str(",\"history\":");
    history(out, &r.history);
    out.push('}');
}

fn service(out: &mut String, s: &ServiceSnapshot) {
    out.push('{');
    key(out, "prefix");
    string(out, &s.prefix);
    out.push_str(",\"active_requests\":");
    number(out, Some(s.active_requests));
    out.push_str(",\"active_by_method\":{");
    for (i, (m, v)) in s.active_by_method.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        key(out, m);
        number(out, Some(*v));
    }
    out.push_str("},\"utilization\":");
    number(out, s.utilization);
    out.push_str(",\"routes\":[");
    for (i, r) in s.routes.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        route(out, r);
    }
    out.push_str("]}");
}

/// The whole snapshot as one JSON object.
pub(crate) fn render(s: &Snapshot) -> String {
    let mut out = String::with_capacity(4096);
    out.push('{');
    key(&mut out, "schema");
    string(&mut out, SCHEMA);
    out.push_str(",\"uptime_seconds\":");
    number(&mut out, Some(s.uptime.as_secs_f64()));
    out.push_str(",\"window_seconds\":");
    number(&mut out, Some(s.window.as_secs_f64()));
    out.push_str(",\"history_step_seconds\":");
    number(&mut out, Some(s.history_step.as_secs_f64()));
    let _ = write!(
        out,
        ",\"lock_waits\":{},\"heap_bytes\":{},\"small_block_rule\":{{\"max_bytes_per_block\":{},\"min_blocks\":{}}}",
        s.lock_waits, s.heap_bytes, SMALL_BLOCK_BYTES, SMALL_BLOCK_MIN_BLOCKS
    );
    out.push_str(",\"services\":[");
    for (i, svc) in s.services.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        service(&mut out, svc);
    }
    out.push_str("]}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped_and_inert_in_html() {
        let mut out = String::new();
        string(&mut out, "<script>\"a\\b\"\n\u{1}&</script>");
        assert_eq!(out, r#""\u003cscript\u003e\"a\\b\"\n\u0001\u0026\u003c/script\u003e""#);
    }

    #[test]
    fn numbers_round_trip_and_non_finite_is_null() {
        let mut out = String::new();
        number(&mut out, Some(0.1 + 0.2));
        assert_eq!(out.parse::<f64>().ok(), Some(0.1 + 0.2));
        let mut out = String::new();
        number(&mut out, Some(f64::NAN));
        number(&mut out, None);
        assert_eq!(out, "nullnull");
    }
}
