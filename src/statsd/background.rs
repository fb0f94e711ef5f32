//! The background pipeline: the request path only hands raw numbers over; a sender thread
//! formats statsd lines, packs them into datagrams and sends them.
//!
//! - Counter increment: one relaxed atomic add. The sender thread emits the sum once per
//!   flush interval (`name:N|c`): statsd sums counters, so the total is the same.
//! - Gauge set/increment/decrement: an atomic store (CAS loop for increments); the last value
//!   goes out once per flush interval, if it changed.
//! - Histogram sample: `try_send((id, value))` on a bounded channel (std's array channel:
//!   lock-free, and never a wake-up syscall because the sender thread polls instead of
//!   sleeping on the channel). Every sample becomes its own line, so statsd keeps per-sample
//!   values for its percentiles. A full queue drops the sample and counts it; nothing blocks.

use std::collections::HashMap;
use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::time::{Duration, Instant};

use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SharedString, Unit,
};
use metrics_util::registry::{Registry, Storage};

use super::line::{is_seconds, Template};
use super::{ExporterStats, HistogramType};

/// How long the sender thread sleeps between two drains of the queue while samples arrive.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(5);
/// The longest sleep when idle (the sleep doubles from [`POLL_INTERVAL`] on each empty drain).
const IDLE_POLL_INTERVAL: Duration = Duration::from_millis(10);

pub(crate) struct Settings {
    pub(crate) prefix: String,
    pub(crate) default_tags: Vec<(String, String)>,
    pub(crate) times: HistogramType,
    pub(crate) sizes: HistogramType,
    pub(crate) queue_size: usize,
    pub(crate) buffer_size: usize,
    pub(crate) flush_interval: Duration,
}

pub(crate) struct CounterCell {
    pending: AtomicU64,
    /// The last absolute value set (`NO_ABSOLUTE` before the first).
    last_absolute: AtomicU64,
    template: Template,
}

/// `last_absolute` before any absolute value was set.
const NO_ABSOLUTE: u64 = u64::MAX;

pub(crate) struct GaugeCell {
    bits: AtomicU64,
    dirty: AtomicBool,
    template: Template,
}

/// Histogram id → its line template (ids index this vector): shared by the storage, which
/// appends, and the sender thread, which reads it when a sample of an unknown id arrives.
type HistogramTemplates = Arc<RwLock<Vec<Arc<Template>>>>;

/// How the registry makes a metric the first time its key is seen: the cell and its line
/// template (names and tags sanitised once, here).
struct Cells {
    settings: Settings,
    /// Units declared by `describe_histogram!`, by metric name (seconds become `|ms` timers).
    units: Mutex<HashMap<String, Unit>>,
    templates: HistogramTemplates,
    queue: SyncSender<(u32, f64)>,
    stats: Arc<ExporterStats>,
}

impl Cells {
    fn template(&self, key: &Key, wire: &str, scale: f64) -> Template {
        Template::new(&self.settings.prefix, key, wire, &self.settings.default_tags, scale)
    }
}

impl Storage<Key> for Cells {
    type Counter = Arc<CounterCell>;
    type Gauge = Arc<GaugeCell>;
    type Histogram = Arc<HistogramHandle>;

    fn counter(&self, key: &Key) -> Arc<CounterCell> {
        Arc::new(CounterCell {
            pending: AtomicU64::new(0),
            last_absolute: AtomicU64::new(NO_ABSOLUTE),
            template: self.template(key, "c", 1.0),
        })
    }

    fn gauge(&self, key: &Key) -> Arc<GaugeCell> {
        Arc::new(GaugeCell {
            bits: AtomicU64::new(0f64.to_bits()),
            dirty: AtomicBool::new(false),
            template: self.template(key, "g", 1.0),
        })
    }

    fn histogram(&self, key: &Key) -> Arc<HistogramHandle> {
        let unit = lock(&self.units).get(key.name()).copied();
        let seconds = is_seconds(key.name(), unit);
        let kind = if seconds { self.settings.times } else { self.settings.sizes };
        let scale = if seconds && kind == HistogramType::Timer { 1000.0 } else { 1.0 };
        let template = Arc::new(self.template(key, kind.wire(), scale));
        let mut all = self.templates.write().unwrap_or_else(PoisonError::into_inner);
        let id = u32::try_from(all.len()).unwrap_or(u32::MAX);
        all.push(template);
        Arc::new(HistogramHandle { id, queue: self.queue.clone(), stats: Arc::clone(&self.stats) })
    }
}

/// The counter and gauge cells, handed to the sender thread when the recorder is dropped so that
/// it sends their last values.
type Handover = Arc<Mutex<Option<(Vec<Arc<CounterCell>>, Vec<Arc<GaugeCell>>)>>>;

/// The recorder of the background pipeline: a `metrics-util` registry of this pipeline's cells.
/// The sender thread holds it weakly: the histogram handles in it hold the queue, which must
/// close when the recorder and every handle are gone (that ends the thread).
pub(crate) struct BackgroundRecorder {
    registry: Arc<Registry<Key, Cells>>,
    handover: Handover,
}

impl Drop for BackgroundRecorder {
    fn drop(&mut self) {
        let (mut counters, mut gauges) = (Vec::new(), Vec::new());
        self.registry.visit_counters(|_, cell| counters.push(Arc::clone(cell)));
        self.registry.visit_gauges(|_, cell| gauges.push(Arc::clone(cell)));
        *lock(&self.handover) = Some((counters, gauges));
    }
}

impl BackgroundRecorder {
    pub(crate) fn start(
        settings: Settings,
        socket: UdpSocket,
        stats: Arc<ExporterStats>,
    ) -> std::io::Result<Self> {
        let (queue, samples) = mpsc::sync_channel(settings.queue_size.max(1));
        let templates = HistogramTemplates::default();
        let (buffer_size, flush_interval) = (settings.buffer_size.max(1), settings.flush_interval);
        let registry = Arc::new(Registry::new(Cells {
            settings,
            units: Mutex::new(HashMap::new()),
            templates: Arc::clone(&templates),
            queue,
            stats: Arc::clone(&stats),
        }));
        let handover = Handover::default();
        let sender = Sender {
            socket,
            registry: Arc::downgrade(&registry),
            handover: Arc::clone(&handover),
            counters: Vec::new(),
            gauges: Vec::new(),
            samples,
            stats,
            packet: String::with_capacity(buffer_size),
            line: String::with_capacity(256),
            shared_templates: templates,
            templates: Vec::new(),
            buffer_size,
            flush_interval,
        };
        std::thread::Builder::new()
            .name("tower-vitals-statsd".into())
            .spawn(move || sender.run())?;
        Ok(BackgroundRecorder { registry, handover })
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Recorder for BackgroundRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, _: SharedString) {
        if let Some(unit) = unit {
            lock(&self.registry.storage().units).insert(key.as_str().to_owned(), unit);
        }
    }

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        self.registry.get_or_create_counter(key, |cell| Counter::from_arc(Arc::clone(cell)))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        self.registry.get_or_create_gauge(key, |cell| Gauge::from_arc(Arc::clone(cell)))
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        self.registry.get_or_create_histogram(key, |cell| Histogram::from_arc(Arc::clone(cell)))
    }
}

impl CounterFn for CounterCell {
    fn increment(&self, value: u64) {
        self.pending.fetch_add(value, Ordering::Relaxed);
    }
    /// statsd counters are deltas: an absolute value (a total kept elsewhere, such as the
    /// process's CPU seconds) adds its growth since the previous one. The first only sets the
    /// starting point, so a total built up before it is not sent as one burst.
    fn absolute(&self, value: u64) {
        let previous = self.last_absolute.swap(value, Ordering::Relaxed);
        if previous != NO_ABSOLUTE && value > previous {
            self.pending.fetch_add(value - previous, Ordering::Relaxed);
        }
    }
}

impl GaugeFn for GaugeCell {
    fn increment(&self, value: f64) {
        self.update(|v| v + value);
    }
    fn decrement(&self, value: f64) {
        self.update(|v| v - value);
    }
    fn set(&self, value: f64) {
        self.bits.store(value.to_bits(), Ordering::Relaxed);
        self.dirty.store(true, Ordering::Release);
    }
}

impl GaugeCell {
    fn update(&self, f: impl Fn(f64) -> f64) {
        let _ = self.bits.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
            Some(f(f64::from_bits(bits)).to_bits())
        });
        self.dirty.store(true, Ordering::Release);
    }
}

pub(crate) struct HistogramHandle {
    id: u32,
    queue: SyncSender<(u32, f64)>,
    stats: Arc<ExporterStats>,
}

impl HistogramFn for HistogramHandle {
    fn record(&self, value: f64) {
        match self.queue.try_send((self.id, value)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// The sender thread's state.
struct Sender {
    socket: UdpSocket,
    /// Gone once the recorder is dropped: the cells it handed over are then flushed.
    registry: Weak<Registry<Key, Cells>>,
    handover: Handover,
    /// The counter and gauge cells as of the last flush (refreshed from the registry each time).
    counters: Vec<Arc<CounterCell>>,
    gauges: Vec<Arc<GaugeCell>>,
    samples: Receiver<(u32, f64)>,
    stats: Arc<ExporterStats>,
    packet: String,
    line: String,
    shared_templates: HistogramTemplates,
    /// Local copy of the histogram templates (refreshed when an unknown id arrives).
    templates: Vec<Arc<Template>>,
    buffer_size: usize,
    flush_interval: Duration,
}

impl Sender {
    fn run(mut self) {
        let mut next_flush = Instant::now() + self.flush_interval;
        let mut sleep = POLL_INTERVAL;
        loop {
            let (open, drained) = self.drain_samples();
            sleep = if drained > 0 { POLL_INTERVAL } else { (sleep * 2).min(IDLE_POLL_INTERVAL) };
            let now = Instant::now();
            if now >= next_flush || !open {
                self.flush_aggregates();
                next_flush = now + self.flush_interval;
            }
            self.send_packet();
            if !open {
                return; // the recorder and every handle are gone
            }
            std::thread::sleep(sleep.min(next_flush.saturating_duration_since(Instant::now())));
        }
    }

    /// Formats every queued sample: (channel still open, samples drained).
    fn drain_samples(&mut self) -> (bool, usize) {
        let mut drained = 0;
        loop {
            match self.samples.try_recv() {
                Ok((id, value)) => {
                    drained += 1;
                    let Some(template) = self.histogram_template(id) else { continue };
                    self.line.clear();
                    template.write(value, &mut self.line);
                    self.push_line();
                }
                Err(TryRecvError::Empty) => return (true, drained),
                Err(TryRecvError::Disconnected) => return (false, drained),
            }
        }
    }

    fn histogram_template(&mut self, id: u32) -> Option<Arc<Template>> {
        let index = id as usize;
        if index >= self.templates.len() {
            let all = self.shared_templates.read().unwrap_or_else(PoisonError::into_inner);
            self.templates.clone_from(&all);
        }
        self.templates.get(index).cloned()
    }

    fn flush_aggregates(&mut self) {
        if let Some(registry) = self.registry.upgrade() {
            self.counters.clear();
            registry.visit_counters(|_, cell| self.counters.push(Arc::clone(cell)));
            self.gauges.clear();
            registry.visit_gauges(|_, cell| self.gauges.push(Arc::clone(cell)));
        } else if let Some((counters, gauges)) = lock(&self.handover).take() {
            (self.counters, self.gauges) = (counters, gauges);
        }
        let counters = std::mem::take(&mut self.counters);
        for cell in &counters {
            let n = cell.pending.swap(0, Ordering::Relaxed);
            if n > 0 {
                self.line.clear();
                cell.template.write_count(n, &mut self.line);
                self.push_line();
            }
        }
        self.counters = counters;
        let gauges = std::mem::take(&mut self.gauges);
        for cell in &gauges {
            if cell.dirty.swap(false, Ordering::Acquire) {
                let value = f64::from_bits(cell.bits.load(Ordering::Relaxed));
                self.line.clear();
                cell.template.write(value, &mut self.line);
                self.push_line();
            }
        }
        self.gauges = gauges;
    }

    /// Appends the current line to the packet, sending the packet first if it would overflow.
    fn push_line(&mut self) {
        if !self.packet.is_empty() && self.packet.len() + self.line.len() > self.buffer_size {
            self.send_packet();
        }
        self.packet.push_str(&self.line);
    }

    fn send_packet(&mut self) {
        let payload = self.packet.trim_end_matches('\n');
        if payload.is_empty() {
            return;
        }
        match self.socket.send(payload.as_bytes()) {
            Ok(_) => {
                self.stats.packets.fetch_add(1, Ordering::Relaxed);
            }
            // Nobody listening (ICMP port unreachable), buffer full, network down: drop it.
            Err(_) => {
                self.stats.send_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.packet.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_counter_values_are_sent_as_their_growth() {
        let cell = CounterCell {
            pending: AtomicU64::new(0),
            last_absolute: AtomicU64::new(NO_ABSOLUTE),
            template: Template::new("", &Key::from_name("cpu"), "c", &[], 1.0),
        };
        let pending = || cell.pending.load(Ordering::Relaxed);
        cell.absolute(100); // the starting point: not a burst of 100
        assert_eq!(pending(), 0);
        cell.absolute(103);
        assert_eq!(pending(), 3);
        cell.increment(2);
        assert_eq!(pending(), 5);
        cell.absolute(103); // unchanged
        assert_eq!(pending(), 5);
        cell.absolute(90); // went back (a reset): nothing negative
        assert_eq!(pending(), 5);
        cell.absolute(95);
        assert_eq!(pending(), 10);
    }
}
