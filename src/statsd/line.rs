//! The statsd line: `name:value|type|#tag:value,tag:value`, and what keeps it well formed.

use std::fmt::Write;

use metrics::{Key, Unit};

use crate::names;

/// How a histogram goes out on the statsd wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HistogramType {
    /// `|h`: DogStatsD/Telegraf histograms. Etsy statsd sums these as counters.
    Histogram,
    /// `|d`: Datadog distributions (global percentiles). Etsy statsd sums these as counters.
    Distribution,
    /// `|ms`: timers, the only type Etsy statsd computes percentiles for. Time histograms
    /// (recorded in seconds) are sent in **milliseconds**; other values as they are.
    Timer,
}

impl HistogramType {
    pub(crate) fn wire(self) -> &'static str {
        match self {
            HistogramType::Histogram => "h",
            HistogramType::Distribution => "d",
            HistogramType::Timer => "ms",
        }
    }
}

/// Whether a histogram holds a time in seconds: declared so (`describe_histogram!` with
/// `Unit::Seconds`, which the layer does), or named like one of the layer's time histograms.
pub(crate) fn is_seconds(name: &str, unit: Option<Unit>) -> bool {
    match unit {
        Some(Unit::Seconds) => true,
        Some(_) => false,
        None => names::find(name).is_some_and(names::MetricDef::is_seconds),
    }
}

/// Replaces what would break a statsd line in a metric name or a tag key: `:` `|` `@` `#` `,`,
/// whitespace and control characters become `_`.
pub(crate) fn sanitize_name(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| match c {
            ':' | '|' | '@' | '#' | ',' => '_',
            c if c.is_control() || c.is_whitespace() => '_',
            c => c,
        })
        .collect();
    if out.is_empty() {
        out.push('_');
    }
    out
}

/// The constant parts of every line of one metric: `"{prefix}{name}:"` and
/// `"|{type}|#{tags}"`, built once when the metric is registered.
#[derive(Debug)]
pub(crate) struct Template {
    pub(crate) head: String,
    pub(crate) tail: String,
    /// Multiplier applied to each value (1000 for seconds sent as `|ms`).
    pub(crate) scale: f64,
}

impl Template {
    pub(crate) fn new(
        prefix: &str,
        key: &Key,
        wire: &str,
        default_tags: &[(String, String)],
        scale: f64,
    ) -> Self {
        let mut head = String::with_capacity(prefix.len() + key.name().len() + 1);
        head.push_str(prefix);
        head.push_str(&sanitize_name(key.name()));
        head.push(':');
        let mut tail = String::with_capacity(64);
        tail.push('|');
        tail.push_str(wire);
        let mut first = true;
        let tags = default_tags
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .chain(key.labels().map(|l| (l.key(), l.value())));
        for (k, v) in tags {
            tail.push_str(if first { "|#" } else { "," });
            first = false;
            tail.push_str(&sanitize_name(k));
            tail.push(':');
            tail.push_str(&crate::labels::sanitize_tag_value(v));
        }
        Template { head, tail, scale }
    }

    /// Appends one line (with its `\n`) for `value` to `out`.
    pub(crate) fn write(&self, value: f64, out: &mut String) {
        out.push_str(&self.head);
        let value = if self.scale == 1.0 {
            value
        } else {
            // Seconds to milliseconds, kept to the nanosecond (no `0.020408000000000003`).
            (value * self.scale * 1e6).round() / 1e6
        };
        write_number(value, out);
        out.push_str(&self.tail);
        out.push('\n');
    }

    /// Appends one counter line for `value`.
    pub(crate) fn write_count(&self, value: u64, out: &mut String) {
        out.push_str(&self.head);
        let _ = write!(out, "{value}");
        out.push_str(&self.tail);
        out.push('\n');
    }
}

/// A finite number in plain decimal (never an exponent, never `NaN`/`inf`: those become 0).
fn write_number(value: f64, out: &mut String) {
    let value = if value.is_finite() { value } else { 0.0 };
    if value.fract() == 0.0 && value.abs() < 9.0e15 {
        let _ = write!(out, "{}", value as i64);
    } else {
        let _ = write!(out, "{value}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics::Label;

    #[test]
    fn hostile_names_tags_and_values_stay_one_line() {
        let key = Key::from_parts(
            "a:b|c@d#e,f g\nh",
            vec![Label::new("k|:#,\n", "/a|b,c#d:e\n"), Label::new("method", "GET")],
        );
        let t = Template::new("p.", &key, "ms", &[("env".into(), "x,y".into())], 1000.0);
        let mut line = String::new();
        t.write(0.0125, &mut line);
        let mut noisy = String::new();
        t.write(0.000020408, &mut noisy);
        assert!(noisy.starts_with("p.a_b_c_d_e_f_g_h:0.020408|ms"), "{noisy}");
        assert_eq!(line, "p.a_b_c_d_e_f_g_h:12.5|ms|#env:x_y,k_____:/a_b_c_d:e_,method:GET\n");
    }

    #[test]
    fn numbers_are_plain_decimals() {
        let key = Key::from_name("n");
        let t = Template::new("", &key, "h", &[], 1.0);
        let mut out = String::new();
        for v in [512.0, 1e-7, 1e20, f64::NAN, -3.5] {
            t.write(v, &mut out);
        }
        assert_eq!(out, "n:512|h\nn:0.0000001|h\nn:100000000000000000000|h\nn:0|h\nn:-3.5|h\n");
    }

    #[test]
    fn seconds_by_unit_or_by_layer_name() {
        assert!(is_seconds("x", Some(Unit::Seconds)));
        assert!(!is_seconds("http.server.request.duration", Some(Unit::Bytes)));
        assert!(is_seconds("http.server.request.duration", None));
        assert!(is_seconds("api.output_time", None));
        assert!(!is_seconds("api.output_bytes", None));
        assert!(!is_seconds("api.xoutput_time", None));
    }
}
