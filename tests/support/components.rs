//! Real components for integration tests: a Prometheus server, an Etsy statsd daemon, and
//! `promtool check metrics`. Each is started on 127.0.0.1 with free ports, waited for until it
//! is really ready, and stopped (killed and reaped, temp dir removed) on `Drop`.
//!
//! A test that needs one starts with `if !components::have(&[Component::..]) { return; }`:
//! without the component, `cargo test` prints one line (`skipped: needs prometheus (run
//! ./scripts/install-components.sh)`) and the test returns. Under
//! `TOWER_VITALS_REQUIRE_COMPONENTS=1` (set by `scripts/test.sh`, and so by CI) a missing
//! component fails the test instead.
//!
//! The daemons run under a small bash watchdog that also stops them if the test process dies
//! without dropping them (e.g. one kept in a `static OnceLock` for the whole test binary).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::Sample;

const INSTALL: &str = "./scripts/install-components.sh";

fn missing(what: &str) -> ! {
    panic!("{what} is missing: run {INSTALL} (it installs Prometheus, promtool and statsd)")
}

/// The repository root (where `.tools/` lives).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A free TCP port on 127.0.0.1 (bound and released: good enough for a test daemon).
pub fn free_tcp_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

/// A free UDP port on 127.0.0.1.
pub fn free_udp_port() -> u16 {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind udp 127.0.0.1:0");
    socket.local_addr().expect("local addr").port()
}

fn which(binary: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(binary)).find(|p| p.is_file())
}

/// Set to `1` (by `scripts/test.sh`, and so CI): a missing component fails the test that needs
/// it instead of skipping it.
pub const REQUIRE_COMPONENTS: &str = "TOWER_VITALS_REQUIRE_COMPONENTS";

/// A real component some tests need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    /// The `prometheus` server.
    Prometheus,
    /// `promtool` (shipped with Prometheus).
    Promtool,
    /// Etsy statsd: `node` and `.tools/statsd` (installed by the script).
    Statsd,
    /// Headless `chromium`.
    Chromium,
}

impl Component {
    fn name(self) -> &'static str {
        match self {
            Component::Prometheus => "prometheus",
            Component::Promtool => "promtool",
            Component::Statsd => "statsd",
            Component::Chromium => "chromium",
        }
    }

    fn installed(self) -> bool {
        match self {
            Component::Prometheus => which("prometheus").is_some(),
            Component::Promtool => which("promtool").is_some(),
            Component::Statsd => which("node").is_some() && statsd_js().is_file(),
            Component::Chromium => which("chromium").is_some(),
        }
    }
}

/// Whether every component in `needs` is installed, so the calling test can run. If one is
/// missing: under [`REQUIRE_COMPONENTS`]`=1` the test fails here; otherwise one line
/// `skipped: needs X (run ./scripts/install-components.sh)` goes to stderr (written past the
/// test harness's capture, so `cargo test` shows it) and this returns `false`: the test returns.
pub fn have(needs: &[Component]) -> bool {
    let missing: Vec<&str> = needs.iter().filter(|c| !c.installed()).map(|c| c.name()).collect();
    if missing.is_empty() {
        return true;
    }
    let test = std::thread::current().name().unwrap_or("a test").to_owned();
    let needs = missing.join(", ");
    if std::env::var_os(REQUIRE_COMPONENTS).is_some_and(|v| v == "1") {
        panic!("{test} needs {needs}, missing ({REQUIRE_COMPONENTS}=1): run {INSTALL}");
    }
    let line = format!("{test}: skipped: needs {needs} (run {INSTALL})\n");
    let _ = std::io::stderr().write_all(line.as_bytes());
    false
}

fn statsd_js() -> PathBuf {
    repo_root().join(".tools/statsd/node_modules/statsd/stats.js")
}

/// A temp directory removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!(
            "tower-vitals-{tag}-{}-{}-{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process under a bash watchdog: killed (TERM, then reaped) on drop, and by the
/// watchdog within ~0.5 s if this test process goes away first.
struct Daemon {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn spawn(name: &'static str, program: &Path, args: &[String], dir: &Path) -> Daemon {
        let log = dir.join("daemon.log");
        // $1 = test pid, $2 = temp dir, $3.. = program and args.
        let script = r#"
            parent=$1; dir=$2; shift 2
            "$@" > "$dir/daemon.log" 2>&1 &
            p=$!
            trap 'kill $p 2>/dev/null; wait $p 2>/dev/null; exit 0' TERM INT
            while kill -0 "$parent" 2>/dev/null && kill -0 "$p" 2>/dev/null; do sleep 0.5 & wait $!; done
            kill $p 2>/dev/null; wait $p 2>/dev/null
            # the test process is gone (a daemon kept in a static): clean its temp dir too
            kill -0 "$parent" 2>/dev/null || rm -rf "$dir"
        "#;
        let child = Command::new("bash")
            .arg("-c")
            .arg(script)
            .arg("watchdog")
            .arg(std::process::id().to_string())
            .arg(dir)
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} under bash: {e}"));
        Daemon { name, child, log }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    fn check_alive(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("{} exited early ({status}); its log:\n{}", self.name, self.log_tail());
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // SIGTERM to the watchdog: its trap stops the daemon and waits for it.
        let _ = Command::new("kill").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() > deadline => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
}

/// Percent-encodes a query-string value.
pub fn url_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len() * 3);
    for b in value.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// A plain HTTP/1.0 GET (no chunking, connection closes): (status, body).
pub fn http_get(addr: SocketAddr, path_and_query: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "GET {path_and_query} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut raw = String::new();
    stream.read_to_string(&mut raw)?;
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((raw.as_str(), ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    Ok((status, body.to_string()))
}

/// A Prometheus 2.x server on 127.0.0.1 scraping `targets` every second.
pub struct Prometheus {
    addr: SocketAddr,
    daemon: Daemon,
    dir: TempDir,
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` (`/metrics`, 1 s interval, job `app`), and waits for
    /// `/-/ready` and then `up == 1` for every target (the first scrape takes 5-6 s).
    pub fn start(targets: &[SocketAddr]) -> Prometheus {
        Prometheus::start_with(targets, &[])
    }

    /// [`start`](Self::start) with extra command-line flags (e.g.
    /// `--enable-feature=native-histograms`).
    pub fn start_with(targets: &[SocketAddr], flags: &[&str]) -> Prometheus {
        let binary = which("prometheus").unwrap_or_else(|| missing("prometheus"));
        let dir = TempDir::new("prometheus");
        let port = free_tcp_port();
        let list: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: app\n    scrape_interval: 1s\n    scrape_timeout: 1s\n    static_configs:\n      - targets: [{}]\n",
            list.join(", ")
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).expect("write prometheus.yml");
        let mut args = vec![
            format!("--config.file={}", config_path.display()),
            format!("--storage.tsdb.path={}", dir.path().join("data").display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
        ];
        args.extend(flags.iter().map(|f| (*f).to_owned()));
        let daemon = Daemon::spawn("prometheus", &binary, &args, dir.path());
        let mut prometheus =
            Prometheus { addr: SocketAddr::from(([127, 0, 0, 1], port)), daemon, dir };
        prometheus.wait_ready(targets.len());
        prometheus
    }

    fn wait_ready(&mut self, targets: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !matches!(http_get(self.addr, "/-/ready"), Ok((200, _))) {
            self.daemon.check_alive();
            assert!(
                Instant::now() < deadline,
                "prometheus not ready in 30 s:\n{}",
                self.daemon.log_tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        loop {
            self.daemon.check_alive();
            let up = self.try_query("up == 1").map(|s| s.len()).unwrap_or(0);
            if up >= targets {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "prometheus: {up} of {targets} targets up after 30 s; targets: {:?}",
                http_get(self.addr, "/api/v1/targets").map(|(_, b)| b)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The server's whole log so far (stdout and stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.daemon.log).unwrap_or_default()
    }

    /// Where the server's HTTP API listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The raw JSON answer of `/api/v1/query` (panics on a transport or API error).
    pub fn query(&self, promql: &str) -> Value {
        let path = format!("/api/v1/query?query={}", url_encode(promql));
        let (status, body) =
            http_get(self.addr, &path).unwrap_or_else(|e| panic!("query {promql}: {e}"));
        let json: Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("query {promql}: HTTP {status}, not JSON ({e}): {body}"));
        assert_eq!(json["status"], "success", "query {promql}: {json}");
        json
    }

    fn try_query(&self, promql: &str) -> Option<Vec<Sample>> {
        let path = format!("/api/v1/query?query={}", url_encode(promql));
        let (_, body) = http_get(self.addr, &path).ok()?;
        let json: Value = serde_json::from_str(&body).ok()?;
        (json["status"] == "success").then(|| samples(&json))
    }

    /// An instant-vector query's samples.
    pub fn samples(&self, promql: &str) -> Vec<Sample> {
        samples(&self.query(promql))
    }

    /// Polls `promql` (every 250 ms, at most `timeout`) until `done` accepts its samples;
    /// returns them, or panics with the last answer.
    pub fn wait_for(
        &self,
        promql: &str,
        timeout: Duration,
        done: impl Fn(&[Sample]) -> bool,
    ) -> Vec<Sample> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.samples(promql);
            if done(&got) {
                return got;
            }
            assert!(Instant::now() < deadline, "{promql}: still {got:?} after {timeout:?}");
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

fn samples(json: &Value) -> Vec<Sample> {
    let Some(result) = json["data"]["result"].as_array() else { return Vec::new() };
    result
        .iter()
        .map(|r| {
            let mut labels: BTreeMap<String, String> = r["metric"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                        .collect()
                })
                .unwrap_or_default();
            Sample {
                name: labels.remove("__name__").unwrap_or_default(),
                labels,
                // A native-histogram sample carries `histogram` instead of `value`: its count.
                value: r["value"][1]
                    .as_str()
                    .or(r["histogram"][1]["count"].as_str())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(f64::NAN),
            }
        })
        .collect()
}

/// `promtool check metrics` on `text`: `Ok` only for exit 0 with nothing on stderr.
pub fn promtool_check_metrics(text: &str) -> Result<(), String> {
    let binary = which("promtool").unwrap_or_else(|| missing("promtool"));
    let mut child = Command::new(binary)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn promtool");
    child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("write to promtool");
    let out = child.wait_with_output().expect("promtool output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success() && stderr.trim().is_empty() {
        Ok(())
    } else {
        Err(format!("promtool check metrics: {} stderr: {stderr}", out.status))
    }
}

/// What an Etsy statsd daemon flushed, summed over flushes (its own `statsd.*` keys left out).
#[derive(Debug, Default, Clone)]
pub struct Flushed {
    /// Key (`name;tag=value;…`) → sum of the counter over all flushes.
    pub counters: BTreeMap<String, f64>,
    /// Key → every timer value received (in flush order).
    pub timers: BTreeMap<String, Vec<f64>>,
    /// Key → last gauge value.
    pub gauges: BTreeMap<String, f64>,
    /// Lines statsd could not parse (its own `statsd.bad_lines_seen`, summed).
    pub bad_lines: f64,
    /// Key → statsd's own timer statistics (`mean`, `upper_90`, `count`, …) of each flush.
    pub timer_data: BTreeMap<String, Vec<Value>>,
}

impl Flushed {
    /// Sum of the counters whose key starts with `name` (`name;…` tags included).
    pub fn counter_total(&self, name: &str) -> f64 {
        self.counters.iter().filter(|(k, _)| key_name(k) == name).map(|(_, v)| v).sum()
    }
    /// Every timer value of `name`, all tag sets together.
    pub fn timer_values(&self, name: &str) -> Vec<f64> {
        self.timers
            .iter()
            .filter(|(k, _)| key_name(k) == name)
            .flat_map(|(_, v)| v.clone())
            .collect()
    }
}

/// The metric name of a statsd key (`name;tag=value` → `name`).
pub fn key_name(key: &str) -> &str {
    key.split(';').next().unwrap_or(key)
}

/// Etsy statsd 0.9.0 (from `.tools/statsd`) on 127.0.0.1 UDP, flushing every second into a
/// JSON-lines file, with `keyNameSanitize: false` (tags arrive as sent).
pub struct Statsd {
    addr: SocketAddr,
    daemon: Daemon,
    flushes: PathBuf,
    dir: TempDir,
}

const JSONL_BACKEND: &str = r#"
const fs = require('fs');
exports.init = function (startupTime, config, events) {
  const file = config.jsonl.file;
  events.on('flush', function (timestamp, m) {
    const line = JSON.stringify({ timestamp: timestamp, counters: m.counters,
      gauges: m.gauges, timers: m.timers, timer_data: m.timer_data }) + '\n';
    fs.appendFileSync(file, line);
  });
  return true;
};
"#;

impl Statsd {
    /// Starts statsd and waits for `health: up` on its management port.
    pub fn start() -> Statsd {
        Statsd::start_with(1000, 95)
    }

    /// [`start`](Self::start) with another flush interval and timer percentile
    /// (`percentThreshold`).
    pub fn start_with(flush_interval_ms: u64, percent: u32) -> Statsd {
        let node = which("node").unwrap_or_else(|| missing("node (for statsd)"));
        let stats_js = statsd_js();
        if !stats_js.is_file() {
            missing(&format!("statsd ({})", stats_js.display()));
        }
        let dir = TempDir::new("statsd");
        let port = free_udp_port();
        let mgmt = free_tcp_port();
        let backend = dir.path().join("jsonl-backend.js");
        std::fs::write(&backend, JSONL_BACKEND).expect("write backend");
        let flushes = dir.path().join("flushes.jsonl");
        let config = format!(
            "{{\n  address: \"127.0.0.1\", port: {port},\n  mgmt_address: \"127.0.0.1\", mgmt_port: {mgmt},\n  flushInterval: {flush_interval_ms},\n  deleteIdleStats: true,\n  keyNameSanitize: false,\n  automaticConfigReload: false,\n  percentThreshold: [{percent}],\n  backends: [{:?}],\n  jsonl: {{ file: {:?} }}\n}}\n",
            backend.display().to_string(),
            flushes.display().to_string()
        );
        let config_path = dir.path().join("config.js");
        std::fs::write(&config_path, config).expect("write config.js");
        let args = vec![stats_js.display().to_string(), config_path.display().to_string()];
        let daemon = Daemon::spawn("statsd", &node, &args, dir.path());
        let mut statsd =
            Statsd { addr: SocketAddr::from(([127, 0, 0, 1], port)), daemon, flushes, dir };
        statsd.wait_healthy(mgmt);
        statsd
    }

    fn wait_healthy(&mut self, mgmt: u16) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            self.daemon.check_alive();
            if health(mgmt).unwrap_or(false) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "statsd not healthy in 20 s:\n{}",
                self.daemon.log_tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The UDP address to send statsd lines to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Everything flushed so far.
    pub fn flushed(&self) -> Flushed {
        let text = std::fs::read_to_string(&self.flushes).unwrap_or_default();
        let mut out = Flushed::default();
        for line in text.lines() {
            let Ok(flush) = serde_json::from_str::<Value>(line) else { continue };
            let ours = |k: &String| !k.starts_with("statsd.");
            out.bad_lines += flush["counters"]["statsd.bad_lines_seen"].as_f64().unwrap_or(0.0);
            if let Some(counters) = flush["counters"].as_object() {
                for (k, v) in counters.iter().filter(|(k, _)| ours(k)) {
                    *out.counters.entry(k.clone()).or_default() += v.as_f64().unwrap_or(0.0);
                }
            }
            if let Some(timers) = flush["timers"].as_object() {
                for (k, v) in timers.iter().filter(|(k, _)| ours(k)) {
                    let values = v.as_array().map(|a| a.iter().filter_map(Value::as_f64).collect());
                    out.timers
                        .entry(k.clone())
                        .or_default()
                        .extend(values.unwrap_or_else(Vec::new));
                }
            }
            if let Some(data) = flush["timer_data"].as_object() {
                for (k, v) in data.iter().filter(|(k, _)| ours(k)) {
                    out.timer_data.entry(k.clone()).or_default().push(v.clone());
                }
            }
            if let Some(gauges) = flush["gauges"].as_object() {
                for (k, v) in gauges.iter().filter(|(k, _)| ours(k)) {
                    out.gauges.insert(k.clone(), v.as_f64().unwrap_or(f64::NAN));
                }
            }
        }
        out
    }

    /// Polls the flushes (every 200 ms, at most `timeout`) until `done` accepts them.
    pub fn wait_for(&self, timeout: Duration, done: impl Fn(&Flushed) -> bool) -> Flushed {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.flushed();
            if done(&got) {
                return got;
            }
            assert!(Instant::now() < deadline, "statsd: still {got:#?} after {timeout:?}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// statsd's own log (with `dumpMessages` off: start-up and bad-line reports).
    pub fn log(&self) -> String {
        self.daemon.log_tail()
    }
}

fn health(mgmt: u16) -> std::io::Result<bool> {
    let mut stream = TcpStream::connect(("127.0.0.1", mgmt))?;
    stream.set_read_timeout(Some(Duration::from_millis(500)))?;
    stream.write_all(b"health\n")?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line)?;
    Ok(line.contains("health: up"))
}
