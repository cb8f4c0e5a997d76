//! `make bench`: N Deployers (R = 2; steps 50% with a 5 s sleep, then the implied 100%) rolled out
//! at once on the local control plane, with the release build of the operator at its defaults
//! (wait refresh 10 s) and `--concurrency 64`. Prints a table, saves JSON under `target/bench/`
//! (`rollouts-N.json` per size, `rollouts.json` for all); `scripts/bench-plot.py` draws the plot.
//! Figures, not assertions: the machine is shared and noisy.
//!
//! `BENCH_SIZES=10,100,1000` chooses the sizes (that is the default).
//!
//! Per size: first deploys (not measured); the measured rollout 1.0.0 → 2.0.0 (reaction, lateness,
//! rollout time against the ideal, operator CPU and RSS, API requests from the audit log); a no-op
//! (kill -9 and restart of the operator with every Deployer settled: writes made); restart recovery
//! (3.0.0 rolled out, kill -9 with the rollouts in flight, restart: time to every rollout resumed,
//! deadlines kept).

#[path = "../tests/harness/mod.rs"]
mod harness;
#[path = "../tests/support/mod.rs"]
mod support;

mod common;
mod peers;

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use chrono::{DateTime, TimeDelta, Utc};
use deployer_operator::api::{Deployer, Phase};
use futures::{StreamExt, stream};
use k8s_openapi::api::apps::v1::Deployment;
use kube::{
    Api, Client, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{WatchStreamExt, watcher},
};
use serde_json::{Value, json};

use common::*;

const SLEEP: i64 = 5;
const R: i32 = 2;
const STEPS: f64 = 2.0;
/// A moved deadline counts as kept when the step moved at most this late (and never early).
const KEPT_MS: i64 = 1000;
/// The user agent of the operator's API requests (audit log).
const OUR_AGENT: &str = "deployer-operator/";

/// What the watches saw, per name.
#[derive(Default)]
struct Seen {
    /// When each Deployment was first seen (name → time).
    created: HashMap<String, DateTime<Utc>>,
    /// When each Deployment was first seen at a given spec.replicas ((name, replicas) → time).
    scaled: HashMap<(String, i32), DateTime<Utc>>,
    /// When each Deployment was first seen with a given number of ready replicas.
    ready: HashMap<(String, i32), DateTime<Utc>>,
    /// Every waitUntil a Deployer persisted (name → deadlines).
    deadlines: HashMap<String, Vec<DateTime<Utc>>>,
    /// When each Deployer was first seen Done with a given stable version.
    done: HashMap<(String, String), DateTime<Utc>>,
    /// Each Deployer's latest (phase, waitUntil).
    phase: HashMap<String, (Option<Phase>, Option<DateTime<Utc>>)>,
    /// Every time something of a Deployer moved (its status, or the spec of one of its
    /// Deployments): Deployer name → times.
    moves: HashMap<String, Vec<DateTime<Utc>>>,
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
    let mut last_status: HashMap<String, String> = HashMap::new();
    let mut last_replicas: HashMap<String, i32> = HashMap::new();
    while let Some(ev) = events.next().await {
        let now = Utc::now();
        let mut s = seen.lock().expect("lock");
        match ev {
            (Some(Ok(d)), _) => {
                let name = d.name_any();
                let owner = d.labels().get("deploy.example.com/deployer").cloned().unwrap_or_default();
                s.created.entry(name.clone()).or_insert(now);
                let r = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
                if last_replicas.insert(name.clone(), r) != Some(r) {
                    s.moves.entry(owner).or_default().push(now);
                }
                s.scaled.entry((name.clone(), r)).or_insert(now);
                let ready = d.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0);
                s.ready.entry((name, ready)).or_insert(now);
            }
            (_, Some(Ok(p))) => {
                let name = p.name_any();
                let Some(st) = &p.status else { continue };
                let text = serde_json::to_string(st).unwrap_or_default();
                if last_status.insert(name.clone(), text.clone()) != Some(text) {
                    s.moves.entry(name.clone()).or_default().push(now);
                }
                s.phase.insert(name.clone(), (st.phase, st.wait_until));
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

/// Requests grouped by what they touch (deployments, deployers/status, deployers, events, other)
/// and verb, plus the write totals.
fn by_kind(calls: &BTreeMap<String, u64>) -> Value {
    let mut kinds: BTreeMap<&str, BTreeMap<String, u64>> = BTreeMap::new();
    let (mut writes, mut writes_no_events) = (0, 0);
    for (key, n) in calls {
        let (verb, resource) = key.split_once(' ').unwrap_or((key, ""));
        let kind = match resource {
            "deployments" => "deployments",
            "deployers/status" => "deployers/status",
            "deployers" => "deployers",
            "events" => "events",
            _ => "other",
        };
        *kinds.entry(kind).or_default().entry(verb.to_string()).or_insert(0) += n;
        if is_write(verb) {
            writes += n;
            if kind != "events" {
                writes_no_events += n;
            }
        }
    }
    json!({"by_kind": kinds, "writes": writes, "writes_without_events": writes_no_events})
}

async fn run(n: usize) -> Value {
    let client = support::client().await;
    harness::install_crd(&client).await;
    let ns = support::namespace(&client, &format!("bench-{n}")).await;
    let mut op = Op::start(&ns);
    let seen = Arc::new(Mutex::new(Seen::default()));
    tokio::spawn(watch_all(client.clone(), ns.clone(), seen.clone()));
    tokio::time::sleep(Duration::from_millis(500)).await;

    // First deploys (not measured), all at once.
    let first = Instant::now();
    let api: Api<Deployer> = Api::namespaced(client.clone(), &ns);
    stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            async move {
                let m = harness::deployer(&format!("app{i}"), "1.0.0", R, &[(50, SLEEP)]);
                api.patch(&format!("app{i}"), &PatchParams::apply("bench").force(), &Patch::Apply(&m))
                    .await
                    .expect("apply");
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    assert!(wait_done(&seen, n, "1.0.0", Duration::from_secs(900)).await, "first deploys did not finish");
    let first_s = first.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;

    // The measured rollout: every Deployer to 2.0.0 at once.
    let metrics0 = op.metrics().await;
    let (cpu0, _) = proc_stats(op.pid());
    let cp0 = control_plane_cpu();
    let t0 = Utc::now();
    let patched = patch_all(&client, &ns, n, "2.0.0").await;
    let ok = wait_done(&seen, n, "2.0.0", Duration::from_secs(1200)).await;
    let t1 = Utc::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (cpu1, hwm_kib) = proc_stats(op.pid());
    let metrics1 = op.metrics().await;
    let own_latency = json!({
        "queue_ms": common::histogram_delta(&metrics0, &metrics1, "deployer_reaction_queue_seconds"),
        "first_write_ms": common::histogram_delta(&metrics0, &metrics1, "deployer_reaction_seconds"),
    });
    let cp = cpu_delta(&cp0, &control_plane_cpu());

    let (mut reaction, mut lateness, mut total, mut ideal) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    {
        let s = seen.lock().expect("lock");
        for (name, at) in &patched {
            let canary = format!("{name}-2.0.0");
            if let Some(c) = s.created.get(&canary) {
                reaction.push(ms(*c - *at));
            }
            // The step-2 transition: the canary scaled from 1 to 2, against the persisted deadline.
            let deadline = s.deadlines.get(name).and_then(|v| v.iter().copied().filter(|u| *u > *at).min());
            let moved = s.scaled.get(&(canary.clone(), 2));
            if let (Some(u), Some(moved)) = (deadline, moved) {
                lateness.push(ms(*moved - u));
            }
            if let Some(d) = s.done.get(&(name.clone(), "2.0.0".to_string())) {
                total.push(ms(*d - *at) / 1000.0);
            }
            // The ideal: the sleep plus the time the pods themselves took to become ready after
            // each scale (the control plane's share, which no operator can save).
            let readiness = [1, 2].iter().try_fold(0.0, |acc, r| {
                let up = s.scaled.get(&(canary.clone(), *r))?;
                let ready = s.ready.get(&(canary.clone(), *r))?;
                Some(acc + ms(*ready - *up).max(0.0))
            });
            if let Some(readiness) = readiness {
                ideal.push(SLEEP as f64 + readiness / 1000.0);
            }
        }
    }
    let calls = audit_counts(OUR_AGENT, t0, t1 + TimeDelta::seconds(2));
    let kinds = by_kind(&calls);
    let writes = kinds["writes"].as_u64().unwrap_or(0) as f64;
    let writes_no_events = kinds["writes_without_events"].as_u64().unwrap_or(0) as f64;

    // No-op: every Deployer settled; a restarted operator reconciles each once and must write nothing.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let noop_at = op.restart();
    tokio::time::sleep(Duration::from_secs(if n >= 1000 { 20 } else { 8 })).await;
    let noop_calls = audit_counts(OUR_AGENT, noop_at, Utc::now());
    let noop = by_kind(&noop_calls);

    // Restart recovery: roll out 3.0.0, kill -9 the operator with every rollout in flight (most
    // Scaling or Waiting at step 1), restart it at once, and time how long until each rollout
    // moved again; deadlines that fell after the restart count as kept if met within KEPT_MS.
    let patched3 = patch_all(&client, &ns, n, "3.0.0").await;
    let in_flight_wait = Instant::now();
    // Kill once half of them wait at step 1 (their deadlines then fall after the restart).
    loop {
        let waiting = {
            let s = seen.lock().expect("lock");
            patched3
                .iter()
                .filter(|(name, at)| {
                    s.phase
                        .get(*name)
                        .is_some_and(|(p, u)| *p == Some(Phase::Waiting) && u.is_some_and(|u| u > **at))
                })
                .count()
        };
        if waiting * 2 >= n || in_flight_wait.elapsed() > Duration::from_secs(120) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let at_kill: HashMap<String, (Option<Phase>, Option<DateTime<Utc>>)> =
        seen.lock().expect("lock").phase.clone();
    let mut phases_at_kill: BTreeMap<String, usize> = BTreeMap::new();
    for (phase, _) in at_kill.values() {
        *phases_at_kill.entry(phase.map_or("-".into(), |p| p.to_string())).or_default() += 1;
    }
    let (_, hwm_before_kill) = proc_stats(op.pid());
    let restarted = op.restart();
    let resumed_ok = wait_done(&seen, n, "3.0.0", Duration::from_secs(1200)).await;
    let mut resume = Vec::new();
    let (mut kept, mut missed, mut early, mut due_in_outage, mut restart_lateness) = (0, 0, 0, 0, Vec::new());
    {
        let s = seen.lock().expect("lock");
        for (name, patched_at) in &patched3 {
            let Some(next) =
                s.moves.get(name).and_then(|m| m.iter().copied().filter(|t| *t >= restarted).min())
            else {
                continue;
            };
            let waiting =
                at_kill.get(name).and_then(|(p, u)| (*p == Some(Phase::Waiting)).then_some(*u).flatten());
            let deadline =
                s.deadlines.get(name).and_then(|v| v.iter().copied().filter(|u| *u > *patched_at).min());
            match (waiting, deadline) {
                // Waiting at the kill: its deadline must hold.
                (Some(_), Some(u)) => {
                    let Some(moved) = s.scaled.get(&(format!("{name}-3.0.0"), 2)) else { continue };
                    let late = (*moved - u).num_milliseconds();
                    if u < restarted {
                        // It fell due while the operator was down: it can only be met on resume.
                        due_in_outage += 1;
                        resume.push(ms(*moved - restarted) / 1000.0);
                    } else if late < 0 {
                        early += 1;
                    } else if late <= KEPT_MS {
                        kept += 1;
                        restart_lateness.push(late as f64);
                    } else {
                        missed += 1;
                        restart_lateness.push(late as f64);
                    }
                }
                // In Init or Scaling at the kill: resumed at its next move.
                _ => resume.push(ms(next - restarted) / 1000.0),
            }
        }
    }
    let (cpu_after, hwm_after) = proc_stats(op.pid());
    op.kill();
    delete_and_wait(&client, &ns).await;

    let out = json!({
        "n": n,
        "replicas": R,
        "steps": "50% sleep 5s, 100%",
        "operator": {"build": "release", "concurrency": CONCURRENCY.parse::<u32>().unwrap_or(0), "wait_refresh_s": 0},
        "completed": ok,
        "first_deploys_s": first_s,
        "reaction_ms": dist(&reaction),
        "own_latency": own_latency,
        "lateness_ms": dist(&lateness),
        "rollout_s": dist(&total),
        "ideal_s": dist(&ideal),
        "wall_s": ms(t1 - t0) / 1000.0,
        "operator_cpu_s": cpu1 - cpu0,
        "operator_peak_rss_mib": hwm_kib as f64 / 1024.0,
        "control_plane_cpu_s": cp,
        "api_calls": calls,
        "api": kinds,
        "writes_per_rollout": writes / n as f64,
        "writes_per_step": writes / n as f64 / STEPS,
        "writes_per_step_without_events": writes_no_events / n as f64 / STEPS,
        "minimum_writes_per_step": 3,
        "noop": {"api_calls": noop_calls, "writes": noop["writes"]},
        "restart": {
            "all_resumed": resumed_ok,
            "phases_at_kill": phases_at_kill,
            "resume_s": dist(&resume),
            "deadlines_kept": kept,
            "deadlines_missed": missed,
            "deadlines_early": early,
            "deadlines_due_during_restart": due_in_outage,
            "lateness_ms": dist(&restart_lateness),
            "peak_rss_mib_before_kill": hwm_before_kill as f64 / 1024.0,
            "peak_rss_mib_after_restart": hwm_after as f64 / 1024.0,
            "cpu_s_after_restart": cpu_after,
        },
    });
    print_row(&out);
    out
}

fn f(v: &Value, path: &[&str]) -> f64 {
    path.iter().fold(v, |v, k| &v[*k]).as_f64().unwrap_or(f64::NAN)
}

fn print_header() {
    println!(
        "{:>5} | {:>15} | {:>17} | {:>21} | {:>13} | {:>6} | {:>6} | {:>15} | {:>6} | {:>17} | deadlines kept",
        "N",
        "reaction p50/99",
        "own q/write p99",
        "lateness p50/p99/max",
        "rollout/ideal",
        "cpu s",
        "rss MB",
        "writes/step(ev)",
        "no-op",
        "resume p50/max s",
    );
}

fn print_row(o: &Value) {
    let r = &o["restart"];
    println!(
        "{:>5} | {:>7.1}/{:>7.1} | {:>7.1}/{:>7.1}ms | {:>6.1}/{:>6.1}/{:>7.1} | {:>5.1}s/{:>5.1}s | {:>6.1} | {:>6.1} | {:>6.2} ({:>5.2}) | {:>6} | {:>7.2}/{:>7.2} | {}/{} (missed {}, early {}, due while down {})",
        o["n"],
        f(o, &["reaction_ms", "p50"]),
        f(o, &["reaction_ms", "p99"]),
        f(o, &["own_latency", "queue_ms", "p99"]),
        f(o, &["own_latency", "first_write_ms", "p99"]),
        f(o, &["lateness_ms", "p50"]),
        f(o, &["lateness_ms", "p99"]),
        f(o, &["lateness_ms", "max"]),
        f(o, &["rollout_s", "p50"]),
        f(o, &["ideal_s", "p50"]),
        f(o, &["operator_cpu_s"]),
        f(o, &["operator_peak_rss_mib"]),
        f(o, &["writes_per_step_without_events"]),
        f(o, &["writes_per_step"]),
        o["noop"]["writes"],
        f(r, &["resume_s", "p50"]),
        f(r, &["resume_s", "max"]),
        r["deadlines_kept"],
        r["deadlines_kept"].as_u64().unwrap_or(0)
            + r["deadlines_missed"].as_u64().unwrap_or(0)
            + r["deadlines_early"].as_u64().unwrap_or(0),
        r["deadlines_missed"],
        r["deadlines_early"],
        r["deadlines_due_during_restart"],
    );
}

#[tokio::main]
async fn main() {
    let sizes: Vec<usize> = std::env::var("BENCH_SIZES")
        .unwrap_or_else(|_| "10,100,1000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let dir = out_dir();
    std::fs::create_dir_all(&dir).expect("target/bench");
    // BENCH_OWN=0: only the side-by-side comparison (with PEERS set).
    if std::env::var("BENCH_OWN").map_or(true, |v| v != "0") {
        own(&sizes).await;
    }
    let peers = peers::requested();
    if !peers.is_empty() {
        peers::compare(&sizes, &peers).await;
    }
}

/// The operator's own figures (the workload at the top of this file), per size.
async fn own(sizes: &[usize]) {
    let dir = out_dir();
    let mut all = Vec::new();
    for &n in sizes {
        if all.is_empty() {
            print_header();
        }
        let r = run(n).await;
        std::fs::write(
            dir.join(format!("rollouts-{n}.json")),
            serde_json::to_string_pretty(&r).expect("json"),
        )
        .expect("write");
        all.push(r);
    }
    println!();
    print_header();
    all.iter().for_each(print_row);
    let summary = json!({
        "at": Utc::now().to_rfc3339(),
        "machine": machine(),
        "runs": all,
    });
    std::fs::write(dir.join("rollouts.json"), serde_json::to_string_pretty(&summary).expect("json"))
        .expect("write");
    println!("saved {}", dir.join("rollouts.json").display());
}
