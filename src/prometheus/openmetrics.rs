//! What the OpenMetrics text format (`application/openmetrics-text; version=1.0.0`) needs
//! beyond the Prometheus text format 0.0.4: which format a scraper asks for, family names
//! (a counter's `# TYPE` and `# HELP` name it without `_total`), `# UNIT`, exemplars after a
//! sample, and `# EOF`.
//!
//! ```text
//! # TYPE http_server_request_duration_seconds histogram
//! # UNIT http_server_request_duration_seconds seconds
//! http_server_request_duration_seconds_bucket{le="0.5"} 12 # {trace_id="4bf9…4736"} 0.43 1733325600.123
//! # TYPE http_server_requests counter
//! http_server_requests_total 12 # {trace_id="4bf9…4736"} 1 1733325600.123
//! # EOF
//! ```

use std::fmt::Write as _;

use crate::exemplar::Exemplar;

/// The `Content-Type` of an OpenMetrics response.
pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The last line of every OpenMetrics exposition.
pub(crate) const EOF: &str = "# EOF\n";

/// A format a scraper can be answered in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    /// Prometheus text 0.0.4: anyone who asks for nothing better.
    Text,
    /// OpenMetrics text 1.0.0 (with exemplars).
    OpenMetrics,
    /// Prometheus protobuf (`io.prometheus.client.MetricFamily`, delimited).
    Protobuf,
}

/// The format to answer an `Accept` header with: the media range with the highest `q` among
/// those this server speaks (earlier wins a tie, as Prometheus lists them in its order of
/// preference), text when nothing matches or the header is absent. `protobuf`: whether the
/// server offers protobuf at all.
pub(crate) fn negotiate(accept: Option<&str>, protobuf: bool) -> Format {
    let Some(accept) = accept else { return Format::Text };
    let mut best = (Format::Text, 0.0f32);
    for range in accept.split(',') {
        let mut params = range.split(';').map(str::trim);
        let media = params.next().unwrap_or_default().to_ascii_lowercase();
        let mut q = 1.0f32;
        let mut version = None;
        let mut proto = None;
        let mut encoding = None;
        for param in params {
            let Some((name, value)) = param.split_once('=') else { continue };
            let value = value.trim().trim_matches('"');
            match name.trim().to_ascii_lowercase().as_str() {
                "q" => q = value.parse().unwrap_or(0.0),
                "version" => version = Some(value.to_owned()),
                "proto" => proto = Some(value.to_owned()),
                "encoding" => encoding = Some(value.to_owned()),
                _ => {}
            }
        }
        let format = match media.as_str() {
            "application/openmetrics-text"
                if matches!(version.as_deref(), None | Some("1.0.0") | Some("0.0.1")) =>
            {
                Format::OpenMetrics
            }
            "application/vnd.google.protobuf"
                if protobuf
                    && proto.as_deref() == Some("io.prometheus.client.MetricFamily")
                    && matches!(encoding.as_deref(), None | Some("delimited")) =>
            {
                Format::Protobuf
            }
            "text/plain" | "text/*" | "*/*" => Format::Text,
            _ => continue,
        };
        if q > best.1 {
            best = (format, q);
        }
    }
    best.0
}

/// The family name of a metric in `# TYPE`, `# HELP` and `# UNIT` lines: a counter's name
/// without its `_total` (its samples keep it).
pub(crate) fn family_name(name: &str, counter: bool) -> &str {
    if counter {
        name.strip_suffix("_total").unwrap_or(name)
    } else {
        name
    }
}

/// Writes the `# UNIT` line of a family, if the family's name ends with `_<unit>` as
/// OpenMetrics requires (otherwise no line: the unit is optional).
pub(crate) fn write_unit(out: &mut String, family: &str, unit: &str) {
    if unit.is_empty() {
        return;
    }
    let suffixed = family.strip_suffix(unit).is_some_and(|rest| rest.ends_with('_'));
    if suffixed {
        let _ = writeln!(out, "# UNIT {family} {unit}");
    }
}

/// Writes ` # {trace_id="…"} value timestamp` after a sample (before its newline). Nothing for
/// a value that OpenMetrics cannot carry as an exemplar value (not finite).
pub(crate) fn write_exemplar(out: &mut String, exemplar: &Exemplar) {
    if !exemplar.value.is_finite() {
        return;
    }
    let hex = exemplar.trace.to_hex();
    out.push_str(" # {trace_id=\"");
    // Hex digits are ASCII.
    out.extend(hex.iter().map(|&b| char::from(b)));
    let seconds = exemplar.unix_nanos / 1_000_000_000;
    let millis = exemplar.unix_nanos % 1_000_000_000 / 1_000_000;
    let _ = write!(out, "\"}} {} {seconds}.{millis:03}", exemplar.value);
}

/// Escapes a `# HELP` text for OpenMetrics (`\`, newline and `"`).
pub(crate) fn escape_help(help: &str, out: &mut String) {
    for c in help.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exemplar::TraceId;

    /// What Prometheus 2.42 sends (captured; see the reference notes): without and with
    /// `--enable-feature=native-histograms`.
    const PROMETHEUS: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    const PROMETHEUS_NATIVE: &str = "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited,application/openmetrics-text;version=1.0.0;q=0.8,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

    #[test]
    fn negotiation_follows_the_scrapers_preferences() {
        assert_eq!(negotiate(None, true), Format::Text);
        assert_eq!(negotiate(Some(PROMETHEUS), true), Format::OpenMetrics);
        assert_eq!(negotiate(Some(PROMETHEUS_NATIVE), true), Format::Protobuf);
        assert_eq!(negotiate(Some(PROMETHEUS_NATIVE), false), Format::OpenMetrics);
        assert_eq!(negotiate(Some("text/plain;version=0.0.4"), true), Format::Text);
        assert_eq!(negotiate(Some("*/*"), true), Format::Text);
        assert_eq!(negotiate(Some("application/json"), true), Format::Text);
        assert_eq!(
            negotiate(Some("application/openmetrics-text;version=2.0.0"), true),
            Format::Text
        );
        assert_eq!(
            negotiate(Some("text/plain;q=0.9, application/openmetrics-text; q=0.5"), true),
            Format::Text
        );
        assert_eq!(negotiate(Some("Application/OpenMetrics-Text"), true), Format::OpenMetrics);
        assert_eq!(negotiate(Some("application/openmetrics-text;q=0"), true), Format::Text);
    }

    #[test]
    fn names_units_and_exemplars() {
        assert_eq!(family_name("http_server_requests_total", true), "http_server_requests");
        assert_eq!(family_name("x_total", false), "x_total");
        let mut out = String::new();
        write_unit(&mut out, "http_server_request_duration_seconds", "seconds");
        write_unit(&mut out, "http_server_output_blocks", "seconds");
        write_unit(&mut out, "xseconds", "seconds");
        assert_eq!(out, "# UNIT http_server_request_duration_seconds seconds\n");

        let trace = TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").expect("valid");
        let mut out = String::from("x_bucket{le=\"0.5\"} 12");
        let exemplar = Exemplar { value: 0.43, trace, unix_nanos: 1_733_325_600_123_456_789 };
        write_exemplar(&mut out, &exemplar);
        assert_eq!(
            out,
            "x_bucket{le=\"0.5\"} 12 # {trace_id=\"4bf92f3577b34da6a3ce929d0e0e4736\"} 0.43 1733325600.123"
        );
        let mut out = String::new();
        write_exemplar(&mut out, &Exemplar { value: f64::NAN, ..exemplar });
        assert_eq!(out, "");
        let mut out = String::new();
        escape_help("a \"b\"\\\nc", &mut out);
        assert_eq!(out, "a \\\"b\\\"\\\\\\nc");
    }
}
