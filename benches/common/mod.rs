//! Measuring helpers shared by the benchmark's parts (`benches/rollouts.rs` and `benches/peers/`):
//! process CPU and RSS from /proc, the control plane's CPU, API requests from the audit log,
//! distributions.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use chrono::{DateTime, TimeDelta, Utc};
use k8s_openapi::api::core::v1::Namespace;
use kube::{Api, Client};
use serde_json::{Value, json};

use crate::support;

/// Where the benchmark writes its figures and the controllers' logs.
pub fn out_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench")
}

pub fn percentile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v[((p / 100.0) * (v.len() - 1) as f64).round() as usize]
}

pub fn dist(v: &[f64]) -> Value {
    json!({"n": v.len(), "p50": percentile(v, 50.0), "p99": percentile(v, 99.0), "max": percentile(v, 100.0)})
}

pub fn ms(d: TimeDelta) -> f64 {
    d.num_microseconds().unwrap_or(0) as f64 / 1000.0
}

/// CPU seconds (user + system) and peak RSS (KiB) of a process, from /proc.
pub fn proc_stats(pid: u32) -> (f64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(") ").next().unwrap_or("").split_whitespace().collect();
    let ticks: f64 = fields.get(11).and_then(|u| u.parse::<f64>().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|k| k.parse::<u64>().ok())
        .unwrap_or(0);
    (ticks / 100.0, hwm)
}

pub fn cluster_dir() -> PathBuf {
    let dir = std::env::var("CLUSTER_DIR").unwrap_or_else(|_| ".cluster".into());
    let dir = PathBuf::from(dir);
    if dir.is_absolute() { dir } else { PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(dir) }
}

/// CPU seconds of each control-plane component (from `$CLUSTER_DIR/pids`): who is busy.
pub fn control_plane_cpu() -> BTreeMap<String, f64> {
    let pids = cluster_dir().join("pids");
    ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok"]
        .iter()
        .filter_map(|c| {
            let pid = std::fs::read_to_string(pids.join(format!("{c}.pid"))).ok()?;
            Some((c.to_string(), proc_stats(pid.trim().parse().ok()?).0))
        })
        .collect()
}

pub fn cpu_delta(a: &BTreeMap<String, f64>, b: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    b.iter().map(|(k, v)| (k.clone(), ((v - a.get(k).unwrap_or(&0.0)) * 10.0).round() / 10.0)).collect()
}

/// API requests in [since, until) of the clients whose user agent starts with `agent` (e.g.
/// `deployer-operator/`), from the apiserver's audit log (and its rotated files), by
/// "verb resource[/subresource]".
pub fn audit_counts(agent: &str, since: DateTime<Utc>, until: DateTime<Utc>) -> BTreeMap<String, u64> {
    audit_scan(agent, since, until).into_iter().map(|(k, (all, _))| (k, all)).collect()
}

/// Like [`audit_counts`], with each count split: (all requests, those the apiserver refused with a
/// status code of 400 or more, e.g. 409 Conflict on a stale update).
pub fn audit_scan(agent: &str, since: DateTime<Utc>, until: DateTime<Utc>) -> BTreeMap<String, (u64, u64)> {
    let logs = cluster_dir().join("logs");
    let (since, until) = (
        since.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        until.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
    );
    let needle = format!("\"userAgent\":\"{agent}");
    let mut out: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let files = std::fs::read_dir(&logs)
        .map(|d| d.flatten().map(|e| e.path()).collect::<Vec<_>>())
        .unwrap_or_default();
    for file in
        files.iter().filter(|p| p.file_name().is_some_and(|f| f.to_string_lossy().starts_with("audit")))
    {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        for line in text.lines().filter(|l| l.contains(&needle)) {
            let Ok(ev) = serde_json::from_str::<Value>(line) else { continue };
            let at = ev["requestReceivedTimestamp"].as_str().unwrap_or("");
            if at < since.as_str() || at >= until.as_str() {
                continue;
            }
            let mut key = format!(
                "{} {}",
                ev["verb"].as_str().unwrap_or("?"),
                ev["objectRef"]["resource"].as_str().unwrap_or("?")
            );
            if let Some(sub) = ev["objectRef"]["subresource"].as_str() {
                key = format!("{key}/{sub}");
            }
            let refused = ev["responseStatus"]["code"].as_u64().is_some_and(|c| c >= 400);
            let e = out.entry(key).or_insert((0, 0));
            e.0 += 1;
            e.1 += u64::from(refused);
        }
    }
    out
}

pub fn is_write(verb: &str) -> bool {
    ["create", "patch", "update", "delete"].contains(&verb)
}

/// Deletes the namespace and waits (up to 5 min) until it is gone, so that its garbage collection
/// does not load the control plane during the next measurement.
pub async fn delete_and_wait(client: &Client, ns: &str) {
    support::delete_namespace(client, ns).await;
    let api: Api<Namespace> = Api::all(client.clone());
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(300) {
        if api.get_opt(ns).await.ok().flatten().is_none() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// `--concurrency` of our operator in every benchmark.
pub const CONCURRENCY: &str = "64";

/// The operator binary (release, as `cargo bench` builds it) with its default flags, except the
/// ones a benchmark needs. The harness's `Operator` pins `--wait-refresh-seconds 1` for tests;
/// the benchmark measures the defaults.
pub struct Op {
    ns: String,
    child: Option<Child>,
    started: Instant,
    /// Where its `/metrics` listens (127.0.0.1, a port free when it started).
    listen: std::net::SocketAddr,
}

impl Op {
    pub fn start(ns: &str) -> Op {
        let listen = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port on 127.0.0.1");
        let mut op = Op { ns: ns.to_string(), child: None, started: Instant::now(), listen };
        op.spawn();
        op
    }

    /// Its `/metrics` (OpenMetrics text), or an empty text when it cannot be read.
    pub async fn metrics(&self) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let Ok(mut conn) = tokio::net::TcpStream::connect(self.listen).await else { return String::new() };
        let request = format!("GET /metrics HTTP/1.0\r\nHost: {}\r\n\r\n", self.listen);
        if conn.write_all(request.as_bytes()).await.is_err() {
            return String::new();
        }
        let mut body = String::new();
        let _ = conn.read_to_string(&mut body).await;
        body.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default()
    }

    /// Starts the process (again, after [`Op::kill`]).
    pub fn spawn(&mut self) {
        let dir = out_dir();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(format!("{}.log", self.ns)))
            .expect("log file");
        self.started = Instant::now();
        let child = Command::new(env!("CARGO_BIN_EXE_deployer-operator"))
            .args(["run", "--namespace", &self.ns, "--concurrency", CONCURRENCY])
            .args(["--listen", &self.listen.to_string()])
            .env("KUBECONFIG", support::kubeconfig_path())
            .env("RUST_LOG", "warn")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("the operator starts");
        self.child = Some(child);
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).expect("running")
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// kill -9, start again; returns the new process's start time.
    pub fn restart(&mut self) -> DateTime<Utc> {
        self.kill();
        let at = Utc::now();
        self.spawn();
        at
    }
}

impl Drop for Op {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Quantiles of what a histogram of `/metrics` counted between two scrapes: `(p50, p99, count)` in
/// milliseconds, by linear interpolation inside the bucket a quantile falls in (its bounds are the
/// error: about ±20 % with the operator's ×1.5 buckets).
pub fn histogram_delta(before: &str, after: &str, name: &str) -> Value {
    let buckets = |text: &str| -> Vec<(f64, f64)> {
        let prefix = format!("{name}_bucket{{le=\"");
        text.lines()
            .filter_map(|l| l.strip_prefix(prefix.as_str()))
            .filter_map(|rest| {
                let (le, value) = rest.split_once("\"} ")?;
                let le = if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? };
                Some((le, value.split_whitespace().next()?.parse().ok()?))
            })
            .collect()
    };
    let (b0, b1) = (buckets(before), buckets(after));
    let delta: Vec<(f64, f64)> = b1
        .iter()
        .map(|(le, n)| (*le, n - b0.iter().find(|(l, _)| l == le).map_or(0.0, |(_, m)| *m)))
        .collect();
    let total = delta.last().map_or(0.0, |(_, n)| *n);
    let quantile = |q: f64| {
        let want = q * total;
        let mut lower = (0.0, 0.0);
        for (le, n) in &delta {
            if *n >= want && total > 0.0 {
                let upper = if le.is_finite() { *le } else { lower.0 * 1.5 };
                let span = (n - lower.1).max(f64::MIN_POSITIVE);
                return (lower.0 + (upper - lower.0) * (want - lower.1) / span) * 1000.0;
            }
            lower = (*le, *n);
        }
        f64::NAN
    };
    json!({"p50": quantile(0.5), "p99": quantile(0.99), "n": total})
}

/// The machine, for the JSON summaries.
pub fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|c| {
        c.lines()
            .find(|l| l.starts_with("model name"))
            .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
    });
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    json!({
        "cpu": cpu,
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "loadavg_at_end": load.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
    })
}
