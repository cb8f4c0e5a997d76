//! `make bench`: N Deployers (R = 2; steps 50% with a 5 s sleep, then the implied 100%) rolled out
//! at once on the local control plane, with the release build of the operator. Prints a table,
//! saves JSON under `target/bench/`. Figures, not assertions: the machine is shared and noisy.
//!
//! `BENCH_SIZES=10,100,1000` chooses the sizes (default 10,100).

#[path = "../tests/harness/mod.rs"]
mod harness;
#[path = "../tests/support/mod.rs"]
mod support;

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use deployer_operator::api::{Deployer, Phase};
use futures::{StreamExt, stream};
use k8s_openapi::api::apps::v1::Deployment;
use kube::{
    Api, Client, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{WatchStreamExt, watcher},
};
use serde_json::json;

const SLEEP: i64 = 5;

/// What the watches saw, per Deployer name.
#[derive(Default)]
struct Seen {
    /// When each Deployment was first seen (name → time).
    created: HashMap<String, DateTime<Utc>>,
    /// When each Deployment was first seen at a given spec.replicas ((name, replicas) → time).
    scaled: HashMap<(String, i32), DateTime<Utc>>,
    /// Every waitUntil a Deployer persisted (name → deadlines).
    deadlines: HashMap<String, Vec<DateTime<Utc>>>,
    /// When each Deployer was first seen Done with a given stable version.
    done: HashMap<(String, String), DateTime<Utc>>,
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
    v[i]
}

fn proc_stats(pid: u32) -> (f64, u64) {
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

async fn watch_all(client: Client, ns: String, seen: Arc<Mutex<Seen>>) {
    let deps: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let dpls: Api<Deployer> = Api::namespaced(client, &ns);
    let d = watcher(deps, watcher::Config::default())
        .default_backoff()
        .applied_objects()
        .map(|d| (Some(d), None));
    let p = watcher(dpls, watcher::Config::default())
        .default_backoff()
        .applied_objects()
        .map(|p| (None, Some(p)));
    let mut events = stream::select(d, p).boxed();
    while let Some(ev) = events.next().await {
        let now = Utc::now();
        let mut s = seen.lock().expect("lock");
        match ev {
            (Some(Ok(d)), _) => {
                let name = d.name_any();
                s.created.entry(name.clone()).or_insert(now);
                let r = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
                s.scaled.entry((name, r)).or_insert(now);
            }
            (_, Some(Ok(p))) => {
                let name = p.name_any();
                if let Some(st) = &p.status {
                    if let Some(u) = st.wait_until {
                        let v = s.deadlines.entry(name.clone()).or_default();
                        if !v.contains(&u) {
                            v.push(u);
                        }
                    }
                    if st.phase == Some(Phase::Done)
                        && let Some(stable) = &st.stable_version
                    {
                        s.done.entry((name, stable.clone())).or_insert(now);
                    }
                }
            }
            _ => {}
        }
    }
}

async fn patch_all(client: &Client, ns: &str, n: usize, version: &str) -> HashMap<String, DateTime<Utc>> {
    let api: Api<Deployer> = Api::namespaced(client.clone(), ns);
    stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            async move {
                let name = format!("app{i}");
                let body = json!({"spec": {"deployment": {"version": version}}});
                let at = Utc::now();
                api.patch(&name, &PatchParams::default(), &Patch::Merge(body)).await.expect("patch");
                (name, at)
            }
        })
        .buffer_unordered(32)
        .collect()
        .await
}

async fn wait_done(seen: &Arc<Mutex<Seen>>, n: usize, version: &str, timeout: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        let done = seen.lock().expect("lock").done.keys().filter(|(_, v)| v == version).count();
        if done >= n {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

async fn audit_counts(since: DateTime<Utc>, until: DateTime<Utc>) -> BTreeMap<String, u64> {
    let log =
        std::env::var("CLUSTER_DIR").unwrap_or_else(|_| format!("{}/.cluster", env!("CARGO_MANIFEST_DIR")));
    let text = std::fs::read_to_string(format!("{log}/logs/audit.log")).unwrap_or_default();
    let (since, until) = (since.to_rfc3339(), until.to_rfc3339());
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Ok(ev) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        if !ev["userAgent"].as_str().unwrap_or("").starts_with("deployer-operator/") {
            continue;
        }
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
        *out.entry(key).or_insert(0) += 1;
    }
    out
}

async fn run(n: usize) -> serde_json::Value {
    let client = support::client().await;
    harness::install_crd(&client).await;
    let ns = support::namespace(&client, &format!("bench-{n}")).await;
    let mut op = harness::Operator::start_with(&ns, "bench", &["--concurrency", "64"]);
    let pid = op.pid().expect("operator pid");
    let seen = Arc::new(Mutex::new(Seen::default()));
    tokio::spawn(watch_all(client.clone(), ns.clone(), seen.clone()));
    tokio::time::sleep(Duration::from_millis(500)).await;

    // First deploys (not measured), all at once.
    let api: Api<Deployer> = Api::namespaced(client.clone(), &ns);
    stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            async move {
                let m = harness::deployer(&format!("app{i}"), "1.0.0", 2, &[(50, SLEEP)]);
                api.patch(&format!("app{i}"), &PatchParams::apply("bench").force(), &Patch::Apply(&m))
                    .await
                    .expect("apply");
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    assert!(wait_done(&seen, n, "1.0.0", Duration::from_secs(600)).await, "first deploys did not finish");
    tokio::time::sleep(Duration::from_secs(2)).await;

    // The measured rollout: every Deployer to 2.0.0 at once.
    let (cpu0, _) = proc_stats(pid);
    let t0 = Utc::now();
    let patched = patch_all(&client, &ns, n, "2.0.0").await;
    let ok = wait_done(&seen, n, "2.0.0", Duration::from_secs(900)).await;
    let t1 = Utc::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (cpu1, hwm_kib) = proc_stats(pid);

    let (mut reaction, mut lateness, mut total) = (Vec::new(), Vec::new(), Vec::new());
    {
        let s = seen.lock().expect("lock");
        for (name, at) in &patched {
            if let Some(c) = s.created.get(&format!("{name}-2.0.0")) {
                reaction.push((*c - *at).num_microseconds().unwrap_or(0) as f64 / 1000.0);
            }
            // The step-2 transition: the canary scaled from 1 to 2, against the persisted deadline.
            let deadline = s.deadlines.get(name).and_then(|v| v.iter().copied().filter(|u| *u > *at).min());
            if let (Some(u), Some(moved)) = (deadline, s.scaled.get(&(format!("{name}-2.0.0"), 2))) {
                lateness.push((*moved - u).num_microseconds().unwrap_or(0) as f64 / 1000.0);
            }
            if let Some(d) = s.done.get(&(name.clone(), "2.0.0".to_string())) {
                total.push((*d - *at).num_milliseconds() as f64 / 1000.0);
            }
        }
    }
    let api_calls = audit_counts(t0, t1 + chrono::TimeDelta::seconds(2)).await;
    let writes: u64 = api_calls
        .iter()
        .filter(|(k, _)| ["create", "patch", "update", "delete"].iter().any(|v| k.starts_with(v)))
        .map(|(_, v)| v)
        .sum();

    // Restart recovery: roll out 3.0.0, kill -9 the operator while every rollout waits at step 1,
    // restart it, and time how long until every rollout moved on; count the deadlines kept.
    patch_all(&client, &ns, n, "3.0.0").await;
    let waiting_start = Instant::now();
    loop {
        let waiting = {
            let s = seen.lock().expect("lock");
            (0..n).filter(|i| s.scaled.contains_key(&(format!("app{i}-3.0.0"), 1))).count()
        };
        if waiting >= n || waiting_start.elapsed() > Duration::from_secs(300) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    op.kill();
    let restarted = Utc::now();
    op.restart();
    let resumed_ok = wait_done(&seen, n, "3.0.0", Duration::from_secs(900)).await;
    let (mut kept, mut resume_after) = (0, Vec::new());
    {
        let s = seen.lock().expect("lock");
        for i in 0..n {
            let name = format!("app{i}");
            let deadline = s.deadlines.get(&name).and_then(|v| v.iter().copied().max());
            if let (Some(u), Some(moved)) = (deadline, s.scaled.get(&(format!("{name}-3.0.0"), 2))) {
                let late = (*moved - u).num_milliseconds();
                if late <= 1000 {
                    kept += 1;
                }
                resume_after.push(((*moved).max(restarted) - restarted).num_milliseconds() as f64 / 1000.0);
            }
        }
    }
    support::delete_namespace(&client, &ns).await;

    let ideal = SLEEP as f64;
    let out = json!({
        "n": n,
        "completed": ok,
        "reaction_ms": {"p50": percentile(&mut reaction.clone(), 50.0), "p99": percentile(&mut reaction, 99.0)},
        "lateness_ms": {
            "p50": percentile(&mut lateness.clone(), 50.0),
            "p99": percentile(&mut lateness.clone(), 99.0),
            "max": percentile(&mut lateness, 100.0),
        },
        "rollout_s": {"p50": percentile(&mut total.clone(), 50.0), "p99": percentile(&mut total, 99.0), "ideal_sleep": ideal},
        "wall_s": (t1 - t0).num_milliseconds() as f64 / 1000.0,
        "operator_cpu_s": cpu1 - cpu0,
        "operator_peak_rss_mib": hwm_kib as f64 / 1024.0,
        "api_calls": api_calls,
        "writes_per_rollout": writes as f64 / n as f64,
        "writes_per_step": writes as f64 / n as f64 / 2.0,
        "restart": {
            "all_resumed": resumed_ok,
            "deadlines_kept": kept,
            "resume_s_max": percentile(&mut resume_after, 100.0),
        },
    });
    println!(
        "N={n:5}  reaction p50/p99 {:7.1}/{:7.1} ms  lateness p50/p99/max {:7.1}/{:7.1}/{:7.1} ms  rollout p50 {:5.1}s (sleep {SLEEP}s)  cpu {:5.1}s  rss {:5.1} MiB  writes/rollout {:4.1}  restart: {kept}/{n} deadlines kept, all resumed {:5.1}s after restart",
        out["reaction_ms"]["p50"].as_f64().unwrap_or(f64::NAN),
        out["reaction_ms"]["p99"].as_f64().unwrap_or(f64::NAN),
        out["lateness_ms"]["p50"].as_f64().unwrap_or(f64::NAN),
        out["lateness_ms"]["p99"].as_f64().unwrap_or(f64::NAN),
        out["lateness_ms"]["max"].as_f64().unwrap_or(f64::NAN),
        out["rollout_s"]["p50"].as_f64().unwrap_or(f64::NAN),
        out["operator_cpu_s"].as_f64().unwrap_or(f64::NAN),
        out["operator_peak_rss_mib"].as_f64().unwrap_or(f64::NAN),
        out["writes_per_rollout"].as_f64().unwrap_or(f64::NAN),
        out["restart"]["resume_s_max"].as_f64().unwrap_or(f64::NAN),
    );
    out
}

#[tokio::main]
async fn main() {
    let sizes: Vec<usize> = std::env::var("BENCH_SIZES")
        .unwrap_or_else(|_| "10,100".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&dir).expect("target/bench");
    let mut all = Vec::new();
    for n in sizes {
        let r = run(n).await;
        std::fs::write(
            dir.join(format!("rollouts-{n}.json")),
            serde_json::to_string_pretty(&r).expect("json"),
        )
        .expect("write");
        all.push(r);
    }
    let summary = json!({"at": Utc::now().to_rfc3339(), "machine": std::fs::read_to_string("/proc/cpuinfo").ok()
        .and_then(|c| c.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())),
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0), "runs": all});
    std::fs::write(dir.join("rollouts.json"), serde_json::to_string_pretty(&summary).expect("json"))
        .expect("write");
    println!("saved {}", dir.join("rollouts.json").display());
}
