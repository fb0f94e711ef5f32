//! The demo, as a library the example's `main` and the dashboard tests share: the app, its
//! traffic, the per-route table, and the run loop that ties them together.

pub mod app;
pub mod load;
pub mod table;

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket};
use tokio::time::Instant;
use tower_vitals::live::Live;
use tower_vitals::prometheus::PrometheusMetrics;
use tower_vitals::VitalsLayer;

use load::{Load, Sent};

/// Command-line options.
#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    /// How long to run (ignored with `forever`).
    pub seconds: f64,
    /// Run until Ctrl-C.
    pub forever: bool,
    /// Port on 127.0.0.1 (0: any free port). If taken, a free port is used instead.
    pub port: u16,
    /// Seconds between tables.
    pub every: f64,
    /// Scales the load generator's rate (1.0: about 110 requests per second).
    pub rate: f64,
    /// Also send to a classic statsd server here (feature `statsd`).
    pub statsd: Option<String>,
    /// Also send to a Datadog agent here (feature `dogstatsd`).
    pub dogstatsd: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            seconds: 15.0,
            forever: false,
            port: 3000,
            every: 5.0,
            rate: 1.0,
            statsd: None,
            dogstatsd: None,
        }
    }
}

/// The usage text.
pub const USAGE: &str = "\
usage: cargo run --example demo [-- OPTIONS]
  --seconds N   run for N seconds, then print the final table and exit (default 15)
  --forever     run until Ctrl-C
  --port P      listen on 127.0.0.1:P (default 3000; a free port if 3000 is taken; 0: any)
  --every N     print the table every N seconds (default 5)
  --rate X      scale the built-in traffic (default 1.0, about 110 requests/s)
  --statsd HOST:PORT     also send to a statsd server (Etsy statsd, Telegraf: times as ms
                         timers); build with --features statsd
  --dogstatsd HOST:PORT  also send to a Datadog agent (distributions, for
                         dashboards/datadog/tower-vitals.json); build with --features dogstatsd
  --help        this text";

impl Options {
    /// Parses the arguments after the program name.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Options, String> {
        let mut o = Options::default();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let mut value =
                |name: &str| args.next().ok_or_else(|| format!("{name} needs a value\n{USAGE}"));
            match arg.as_str() {
                "--seconds" => o.seconds = number(&value("--seconds")?, "--seconds")?,
                "--every" => o.every = number(&value("--every")?, "--every")?,
                "--rate" => o.rate = number(&value("--rate")?, "--rate")?,
                "--port" => {
                    o.port = value("--port")?.parse().map_err(|e| format!("--port: {e}"))?
                }
                "--statsd" => o.statsd = Some(value("--statsd")?),
                "--dogstatsd" => o.dogstatsd = Some(value("--dogstatsd")?),
                "--forever" => o.forever = true,
                "--help" | "-h" => return Err(USAGE.to_owned()),
                other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
            }
        }
        Ok(o)
    }
}

fn number(s: &str, name: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("{name}: expected a positive number, got {s:?}")),
    }
}

/// What a run ended with.
#[derive(Debug)]
pub struct Report {
    /// What the load generator sent.
    pub sent: Sent,
    /// Requests the layer recorded, per route.
    pub recorded: BTreeMap<String, u64>,
    /// `error.type` counts the layer recorded, per route.
    pub errors: BTreeMap<String, BTreeMap<String, u64>>,
    /// Where the app listened.
    pub addr: SocketAddr,
}

impl Report {
    /// Every route's recorded count and errors equal what the generator sent and expected.
    pub fn matches(&self) -> bool {
        self.recorded == self.sent.requests && self.errors == self.sent.errors
    }
}

/// A started app: its address and the layer (for the in-flight count).
pub struct Server {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The layer wrapping it.
    pub layer: VitalsLayer,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<io::Result<()>>,
}

impl Server {
    /// Binds 127.0.0.1:`port` (a free port if taken or 0) and serves the demo app, with
    /// `/metrics` from `metrics` (and `/vitals` from a live summary nobody feeds: use
    /// [`start_live`](Self::start_live) for the real one). Used by the tests that share the kit.
    #[allow(dead_code)]
    pub async fn start(port: u16, metrics: &PrometheusMetrics) -> io::Result<Server> {
        Server::start_live(port, metrics, &Live::new()).await
    }

    /// Like [`start`](Self::start), with `/vitals` from `live`.
    pub async fn start_live(
        port: u16,
        metrics: &PrometheusMetrics,
        live: &Live,
    ) -> io::Result<Server> {
        let listener = match listen(port) {
            Ok(l) => l,
            Err(e) if port != 0 && e.kind() == io::ErrorKind::AddrInUse => listen(0)?,
            Err(e) => return Err(e),
        };
        let addr = listener.local_addr()?;
        let layer =
            VitalsLayer::builder().exemplars().label(app::CACHE).map_err(io::Error::other)?.build();
        let app = app::router(layer.clone(), metrics, live);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await
        });
        Ok(Server { addr, layer, stop, task })
    }

    /// Waits (at most `limit`) until no request is in flight through the layer.
    pub async fn settle(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while self.layer.active_requests() != 0 {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }

    /// Stops accepting and waits (at most 5 s) for open connections to close.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
    }
}

/// Per-connection socket send buffer of the app (inherited by accepted sockets). Fixed and
/// small, as on a server holding many connections, so a slow client's backpressure reaches the
/// app within the 1 MiB download instead of vanishing into megabytes of kernel buffer.
pub const SEND_BUFFER: u32 = 64 * 1024;

fn listen(port: u16) -> io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.set_send_buffer_size(SEND_BUFFER)?;
    socket.bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))?;
    socket.listen(1024)
}

fn banner(addr: SocketAddr, o: &Options) -> String {
    let push = match (&o.statsd, &o.dogstatsd) {
        (None, None) => {
            "  statsd / Datadog: add --statsd HOST:PORT (build with --features statsd) or\n      \
             --dogstatsd HOST:PORT (--features dogstatsd; dashboards/datadog/tower-vitals.json)\n"
                .to_owned()
        }
        (statsd, dogstatsd) => {
            let mut s = String::new();
            if let Some(a) = statsd {
                s.push_str(&format!("  statsd: also sending to {a} (times as ms timers)\n"));
            }
            if let Some(a) = dogstatsd {
                s.push_str(&format!(
                    "  DogStatsD: also sending to {a} (import dashboards/datadog/tower-vitals.json)\n"
                ));
            }
            s
        }
    };
    let how_long = if o.forever {
        "until Ctrl-C".to_owned()
    } else {
        format!("for {} s (--forever: until Ctrl-C)", o.seconds)
    };
    format!(
        "\
live page: http://{addr}/vitals   (its data: http://{addr}/vitals.json)
tower-vitals demo: an axum app on http://{addr}, wrapped in VitalsLayer, driving its own traffic {how_long}.
  routes: /api/fast  /api/slow  /users/{{id}}  /download (1 MiB in 8 KiB blocks)
          /download/small-blocks (the same 1 MiB in 128-byte blocks)  /api/fail (500)
          /stream-error (the body fails half-way); clients that leave mid-download and read slowly
          (socket send buffers are {SEND_BUFFER} bytes, so slow readers hold the server's writes)
  Prometheus: curl http://{addr}/metrics   or scrape it:
      scrape_configs: [{{job_name: tower-vitals-demo, scrape_interval: 5s, static_configs: [{{targets: ['{addr}']}}]}}]
      one /metrics for every scraper: native histograms to `prometheus --enable-feature=native-histograms`,
      exemplars (the load sends traceparent headers) to `--enable-feature=exemplar-storage`
  Grafana: import dashboards/grafana/tower-vitals.json (pick that Prometheus as DS_PROMETHEUS)
{push}"
    )
}

/// Runs the demo: serve, drive traffic, print the table every `every` seconds and at the end.
///
/// `live`'s recorder must be fed by the same recorder the layer records into (a `Fanout` of it
/// and the Prometheus recorder behind `metrics`): the table and `/vitals` read from it.
pub async fn run(
    o: &Options,
    metrics: &PrometheusMetrics,
    live: &Live,
    out: &mut dyn Write,
) -> io::Result<Report> {
    let server = Server::start_live(o.port, metrics, live).await?;
    let addr = server.addr;
    writeln!(out, "{}", banner(addr, o))?;
    if o.port != 0 && addr.port() != o.port {
        writeln!(out, "(port {} is taken: using {} instead)", o.port, addr.port())?;
    }
    out.flush()?;

    let started = Instant::now();
    let load = Load::start(addr, o.rate);
    let end = (!o.forever).then(|| started + Duration::from_secs_f64(o.seconds));
    let every = Duration::from_secs_f64(o.every);
    let mut next = started + every;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let wake = end.map_or(next, |e| e.min(next));
        tokio::select! {
            _ = tokio::time::sleep_until(wake) => {}
            _ = &mut ctrl_c => { writeln!(out, "\nCtrl-C: stopping")?; break; }
        }
        if end.is_some_and(|e| Instant::now() >= e) {
            break;
        }
        if Instant::now() >= next {
            let sent = load.sent();
            writeln!(
                out,
                "--- after {:.0} s: {} requests sent so far (in flight: {})",
                started.elapsed().as_secs_f64(),
                sent.total(),
                server.layer.active_requests()
            )?;
            writeln!(out, "{}", table::render(live, &sent.requests))?;
            out.flush()?;
            next += every;
        }
    }

    let sent = load.finish().await;
    let settled = server.settle(Duration::from_secs(5)).await;
    let routes = table::routes(live);
    let recorded = routes.iter().map(|(k, v)| (k.clone(), v.requests)).collect();
    let errors = routes
        .iter()
        .filter(|(_, v)| !v.errors.is_empty())
        .map(|(k, v)| (k.clone(), v.errors.clone()))
        .collect();
    let report = Report { sent, recorded, errors, addr };
    writeln!(
        out,
        "=== final, after {:.1} s: {} requests sent by the load generator to {}",
        started.elapsed().as_secs_f64(),
        report.sent.total(),
        report.addr
    )?;
    writeln!(out, "{}", table::render(live, &report.sent.requests))?;
    writeln!(out, "{}", render_time_split(live))?;
    writeln!(out, "{}", render_label_split(&metrics.render()))?;
    if !settled {
        writeln!(out, "warning: requests still in flight after 5 s")?;
    }
    if report.matches() {
        writeln!(
            out,
            "check: the layer recorded every request the load generator sent, once ({} of {}), \
             with the expected error.type for each failure",
            report.recorded.values().sum::<u64>(),
            report.sent.total()
        )?;
    } else {
        writeln!(
            out,
            "check FAILED: sent {:?} / expected errors {:?}, recorded {:?} / errors {:?}",
            report.sent.requests, report.sent.errors, report.recorded, report.errors
        )?;
    }
    let small: Vec<String> =
        routes.iter().filter(|(_, r)| r.small_blocks()).map(|(k, _)| k.clone()).collect();
    if !small.is_empty() {
        writeln!(
            out,
            "small blocks: {} writes its body in blocks under {} bytes: one write and one chunk \
             header per block. Send bigger blocks (buffer, or one Bytes for the whole body).",
            small.join(", "),
            tower_vitals::live::SMALL_BLOCK_BYTES
        )?;
    }
    for (route, output, application) in table::delivery_bound(live) {
        writeln!(
            out,
            "output time: {route} p99 {output:.0} ms writing its body vs {application:.2} ms in \
             the handler: delivery is the slow part (slow readers, big bodies, tiny blocks)."
        )?;
    }
    out.flush()?;
    server.stop().await;
    Ok(report)
}

/// Requests of `/users/{id}` per value of the `cache` label its handler sets, read from the
/// Prometheus exposition (`/metrics`): the user's labels reach the backend.
pub fn render_label_split(exposition: &str) -> String {
    let mut split = BTreeMap::<String, f64>::new();
    let route = format!("http_route=\"{}\"", app::routes::USER);
    let key = format!("{}=\"", app::CACHE);
    for line in exposition.lines().filter(|l| l.starts_with("http_server_requests_total{")) {
        let (Some(at), true) = (line.find(&key), line.contains(&route)) else { continue };
        let value = line[at + key.len()..].split('"').next().unwrap_or_default();
        let count: f64 = line.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
        *split.entry(value.to_owned()).or_default() += count;
    }
    let parts: Vec<String> = split.iter().map(|(value, n)| format!("{value} {n}")).collect();
    format!(
        "label {} on {} (set by its handler; from /metrics): {}",
        app::CACHE,
        app::routes::USER,
        parts.join(", ")
    )
}

/// "Where the time goes": per route, the mean total split into application (to the head),
/// output (frames held downstream) and body production (the rest: the body making its frames).
pub fn render_time_split(live: &Live) -> String {
    let rows = table::time_split(live);
    let width = rows.iter().map(|r| r.0.len()).max().unwrap_or(0).max(24);
    let mut s = format!(
        "{:<width$}  {:>9}  {:>11}  {:>9}  {:>15}\n",
        "where the time goes (ms)", "mean total", "application", "output", "body production"
    );
    for (route, total, app, output, body) in rows {
        s.push_str(&format!(
            "{route:<width$}  {total:>9.3}  {app:>11.3}  {output:>9.3}  {body:>15.3}\n"
        ));
    }
    s
}
