//! Prints what a `DebuggingRecorder` holds, one line per metric and label set (shared by the
//! `axum` and `hyper` examples).

use metrics_util::debugging::{DebugValue, Snapshotter};

/// Prints every metric, sorted by name and labels: counters and gauges with their value,
/// histograms with count, sum, min and max.
pub fn print_snapshot(snapshotter: &Snapshotter) {
    let mut lines: Vec<String> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter_map(|(key, _unit, _desc, value)| {
            let (_, key) = key.into_parts();
            let labels: Vec<String> =
                key.labels().map(|l| format!("{}={}", l.key(), l.value())).collect();
            let name = format!("{}{{{}}}", key.name(), labels.join(", "));
            match value {
                DebugValue::Counter(0) => None,
                DebugValue::Counter(c) => Some(format!("{name} = {c}")),
                DebugValue::Gauge(g) => Some(format!("{name} = {g}")),
                DebugValue::Histogram(v) if v.is_empty() => None,
                DebugValue::Histogram(v) => {
                    let values: Vec<f64> = v.iter().map(|f| f.into_inner()).collect();
                    let sum: f64 = values.iter().sum();
                    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
                    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    Some(format!(
                        "{name}: count={} sum={} min={} max={}",
                        values.len(),
                        short(sum),
                        short(min),
                        short(max)
                    ))
                }
            }
        })
        .collect();
    lines.sort();
    for line in lines {
        println!("  {line}");
    }
}

fn short(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v}")
    } else {
        format!("{v:.6}")
    }
}
