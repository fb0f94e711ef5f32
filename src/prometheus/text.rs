//! The text exposition format 0.0.4: classic histograms (`_bucket{le}`, `_sum`, `_count`),
//! counters and gauges.

use std::fmt::Write;

use super::recorder::{exposed_name, Family, FamilyView, Kind, PrometheusHandle};

/// Renders every series of `handle` in the text format.
pub(crate) fn render(handle: &PrometheusHandle) -> String {
    let families = handle.families();
    let mut out = String::with_capacity(families.len() * 256);
    for view in &families {
        render_family(&mut out, view);
    }
    out
}

fn render_family(out: &mut String, view: &FamilyView) {
    let (kind, type_name) = match view.family {
        Family::Counter(_) => (Kind::Counter, "counter"),
        Family::Gauge(_) => (Kind::Gauge, "gauge"),
        Family::Histogram(_) => (Kind::Histogram, "histogram"),
    };
    let name = exposed_name(&view.name, view.unit, kind);
    if let Some(help) = &view.help {
        let _ = write!(out, "# HELP {name} ");
        for c in help.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('\n');
    }
    let _ = writeln!(out, "# TYPE {name} {type_name}");
    match &view.family {
        Family::Counter(series) => {
            for s in series {
                sample(out, &name, "", &s.labels_text, None);
                let _ = writeln!(out, " {}", s.core.value());
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
                for (bound, cumulative) in layout.classic.iter().zip(&snapshot.classic) {
                    sample(out, &name, "_bucket", &s.labels_text, Some(*bound));
                    let _ = writeln!(out, " {cumulative}");
                }
                sample(out, &name, "_bucket", &s.labels_text, Some(f64::INFINITY));
                let _ = writeln!(out, " {}", snapshot.count);
                sample(out, &name, "_sum", &s.labels_text, None);
                out.push(' ');
                float(out, snapshot.sum);
                out.push('\n');
                sample(out, &name, "_count", &s.labels_text, None);
                let _ = writeln!(out, " {}", snapshot.count);
            }
        }
    }
    out.push('\n');
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
