//! The text exposition format 0.0.4: classic histograms (`_bucket{le}`, `_sum`, `_count`),
//! counters and gauges; and, from the same loop, OpenMetrics text 1.0.0 with exemplars.

use std::fmt::Write;

use super::openmetrics;
use super::recorder::{exposed_name, Family, FamilyView, Kind, PrometheusHandle};
use crate::exemplar::Exemplar;

/// Renders every series of `handle` in the text format.
pub(crate) fn render(handle: &PrometheusHandle) -> String {
    render_as(handle, false)
}

/// Renders every series of `handle` in the OpenMetrics text format: the text format's samples,
/// counter families named without `_total`, `# UNIT` where the name ends with the unit, the
/// latest exemplar of each classic bucket and counter, no blank lines, `# EOF`.
pub(crate) fn render_openmetrics(handle: &PrometheusHandle) -> String {
    render_as(handle, true)
}

fn render_as(handle: &PrometheusHandle, om: bool) -> String {
    let families = handle.families();
    let mut out = String::with_capacity(families.len() * 256);
    for view in &families {
        render_family(&mut out, view, om);
    }
    if om {
        out.push_str(openmetrics::EOF);
    }
    out
}

/// Ends a sample line: its exemplar (OpenMetrics only), the newline.
fn end_line(out: &mut String, om: bool, exemplar: impl FnOnce() -> Option<Exemplar>) {
    if om {
        if let Some(exemplar) = exemplar() {
            openmetrics::write_exemplar(out, &exemplar);
        }
    }
    out.push('\n');
}

fn render_family(out: &mut String, view: &FamilyView, om: bool) {
    let (kind, type_name) = match view.family {
        Family::Counter(_) => (Kind::Counter, "counter"),
        Family::Gauge(_) => (Kind::Gauge, "gauge"),
        Family::Histogram(_) => (Kind::Histogram, "histogram"),
    };
    let name = exposed_name(&view.name, view.unit, kind);
    // OpenMetrics names a counter's family without `_total` (its samples keep it).
    let family = if om { openmetrics::family_name(&name, kind == Kind::Counter) } else { &name };
    if let Some(help) = &view.help {
        let _ = write!(out, "# HELP {family} ");
        if om {
            openmetrics::escape_help(help, out);
        } else {
            for c in help.chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    c => out.push(c),
                }
            }
        }
        out.push('\n');
    }
    let _ = writeln!(out, "# TYPE {family} {type_name}");
    if om {
        if let Some(unit) = exposed_unit(view.unit) {
            openmetrics::write_unit(out, family, unit);
        }
    }
    match &view.family {
        Family::Counter(series) => {
            for s in series {
                sample(out, &name, "", &s.labels_text, None);
                let _ = write!(out, " {}", s.core.value());
                end_line(out, om, || s.core.exemplar());
            }
        }
        Family::Gauge(series) => {
            for s in series {
                sample(out, &name, "", &s.labels_text, None);
                out.push(' ');
                float(out, s.core.value());
                out.push('\n');
            }
        }
        Family::Histogram(series) => {
            for s in series {
                let snapshot = s.core.snapshot();
                let layout = s.core.layout();
                for (k, (bound, cumulative)) in
                    layout.classic.iter().zip(&snapshot.classic).enumerate()
                {
                    sample(out, &name, "_bucket", &s.labels_text, Some(*bound));
                    let _ = write!(out, " {cumulative}");
                    end_line(out, om, || s.core.exemplar(k));
                }
                sample(out, &name, "_bucket", &s.labels_text, Some(f64::INFINITY));
                let _ = write!(out, " {}", snapshot.count);
                end_line(out, om, || s.core.exemplar(layout.classic.len()));
                sample(out, &name, "_sum", &s.labels_text, None);
                out.push(' ');
                float(out, snapshot.sum);
                out.push('\n');
                sample(out, &name, "_count", &s.labels_text, None);
                let _ = writeln!(out, " {}", snapshot.count);
            }
        }
    }
    if !om {
        out.push('\n'); // OpenMetrics allows no blank line
    }
}

/// The unit suffix `exposed_name` gives a metric (none for counts).
fn exposed_unit(unit: Option<metrics::Unit>) -> Option<&'static str> {
    match unit {
        None | Some(metrics::Unit::Count) => None,
        Some(metrics::Unit::Percent) => Some("ratio"),
        Some(unit) => Some(unit.as_str()),
    }
}

/// `name{suffix}{labels,le="bound"}` (braces only when there is a label).
fn sample(out: &mut String, name: &str, suffix: &str, labels: &str, le: Option<f64>) {
    out.push_str(name);
    out.push_str(suffix);
    if labels.is_empty() && le.is_none() {
        return;
    }
    out.push('{');
    out.push_str(labels);
    if let Some(le) = le {
        if !labels.is_empty() {
            out.push(',');
        }
        out.push_str("le=\"");
        float(out, le);
        out.push('"');
    }
    out.push('}');
}

/// A float as Prometheus reads it: shortest round-trip decimal, `+Inf`, `-Inf`, `NaN`.
pub(crate) fn float(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v == f64::INFINITY {
        out.push_str("+Inf");
    } else if v == f64::NEG_INFINITY {
        out.push_str("-Inf");
    } else {
        let _ = write!(out, "{v}");
    }
}
