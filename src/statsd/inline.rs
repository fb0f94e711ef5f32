//! The inline pipeline: `metrics-exporter-statsd` (cadence), which formats one line per sample on
//! the recording thread and queues it for its own sender thread. This wrapper picks the
//! histogram type per metric (timers only for times) and sanitises names and tags once, when a
//! metric is registered.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use metrics::{
    Counter, Gauge, Histogram, Key, KeyName, Label, Metadata, Recorder, SharedString, Unit,
};

use super::line::{is_seconds, sanitize_name};
use super::HistogramType;

/// The label `metrics-exporter-statsd` reads (and strips) to choose a histogram's type.
const HINT: &str = "histogram";

pub(crate) struct InlineRecorder {
    inner: metrics_exporter_statsd::StatsdRecorder,
    times: HistogramType,
    sizes: HistogramType,
    units: Mutex<HashMap<String, Unit>>,
}

impl InlineRecorder {
    pub(crate) fn new(
        inner: metrics_exporter_statsd::StatsdRecorder,
        times: HistogramType,
        sizes: HistogramType,
    ) -> Self {
        InlineRecorder { inner, times, sizes, units: Mutex::new(HashMap::new()) }
    }

    fn clean(key: &Key, hint: Option<&'static str>) -> Key {
        let mut labels: Vec<Label> = key
            .labels()
            .filter(|l| l.key() != HINT)
            .map(|l| {
                Label::new(sanitize_name(l.key()), crate::labels::sanitize_tag_value(l.value()))
            })
            .collect();
        if let Some(hint) = hint {
            labels.push(Label::new(HINT, hint));
        }
        Key::from_parts(sanitize_name(key.name()), labels)
    }
}

impl Recorder for InlineRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, _: SharedString) {
        if let Some(unit) = unit {
            let mut units = self.units.lock().unwrap_or_else(PoisonError::into_inner);
            units.insert(key.as_str().to_owned(), unit);
        }
    }

    fn register_counter(&self, key: &Key, metadata: &Metadata<'_>) -> Counter {
        self.inner.register_counter(&Self::clean(key, None), metadata)
    }

    fn register_gauge(&self, key: &Key, metadata: &Metadata<'_>) -> Gauge {
        self.inner.register_gauge(&Self::clean(key, None), metadata)
    }

    fn register_histogram(&self, key: &Key, metadata: &Metadata<'_>) -> Histogram {
        let unit = {
            let units = self.units.lock().unwrap_or_else(PoisonError::into_inner);
            units.get(key.name()).copied()
        };
        let seconds = is_seconds(key.name(), unit);
        let hint = match (seconds, if seconds { self.times } else { self.sizes }) {
            // The exporter sends timers as whole milliseconds of a value in seconds.
            (true, HistogramType::Timer) => "timer",
            (_, HistogramType::Distribution) => "distribution",
            // A non-time timer would be scaled by 1000 by the exporter: send it as `|h`.
            _ => "histogram",
        };
        self.inner.register_histogram(&Self::clean(key, Some(hint)), metadata)
    }
}
