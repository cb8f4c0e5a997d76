//! `make bench PEERS=argo`: the same canary workload on our operator and on a peer controller,
//! one controller at a time on the same local control plane, with one table of both.
//!
//! The workload (issue 15): N objects × [`R`] replicas, canary 10 % / sleep 6 s, 30 % / 3 s,
//! 60 % / 3 s, then 100 %. First deploys at 1.0.0 (not measured), then every object is bumped to
//! 2.0.0 at once (measured: wall, per-object rollout time against its ideal, the controller's CPU
//! and peak RSS, its API writes per object from the audit log), then to 3.0.0 with a kill -9 of
//! the controller in the middle of the first pause (what becomes of the pause).
//!
//! Each controller is a [`Controller`]: how it is started and killed, how its objects are written,
//! and a watch that reports what the benchmark measures in one shape ([`Seen`]), whatever the
//! controller's own resources are (our Deployer + Deployments; Argo's Rollout + ReplicaSets).

pub mod argo;
pub mod netns;
pub mod ours;

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use chrono::{DateTime, TimeDelta, Utc};
use futures::{StreamExt, stream};
use kube::Client;
use serde_json::{Value, json};

use crate::{common::*, support};

/// Replicas per object.
pub const R: i32 = 10;
/// The canary steps (percent, sleep seconds); a final 100 % step follows.
pub const STEPS: [(i32, i64); 3] = [(10, 6), (30, 3), (60, 3)];
/// The canary's replicas at each step, 100 % included (both controllers agree: 1, 3, 6, 10).
pub const TARGETS: [i32; 4] = [1, 3, 6, 10];
/// How long the controller stays down between the kill -9 and the restart.
pub const DOWN: Duration = Duration::from_secs(2);
/// A pause that ended at most this long after its persisted deadline ended on time.
pub const KEPT_MS: f64 = 1000.0;

/// The workload's sleeps, in total.
pub fn sleeps() -> f64 {
    STEPS.iter().map(|(_, s)| *s as f64).sum()
}

/// A controller under test. Its process runs the benchmark's namespace only.
pub trait Controller {
    /// Its name, as the table's column header.
    fn name(&self) -> &'static str;
    /// The prefix of the user agent of its API requests (to count them in the audit log).
    fn user_agent(&self) -> &'static str;
    /// How it is run (build, flags), for the table and the JSON.
    fn settings(&self) -> Value;
    /// Installs its CRDs.
    async fn install(&self, client: &Client);
    /// Starts its process for `ns` (again, after [`Controller::kill`]).
    async fn start(&mut self, ns: &str);
    /// Its process id while it runs.
    fn pid(&self) -> Option<u32>;
    /// kill -9.
    fn kill(&mut self);
    /// Creates or updates (server-side apply) object `name` at `version`.
    async fn apply(&self, client: &Client, ns: &str, name: &str, version: &str);
    /// Watches `ns` and reports into `seen` until the task is aborted.
    fn watch(&self, client: Client, ns: String, seen: Arc<Mutex<Seen>>) -> tokio::task::JoinHandle<()>;
}

/// A pause as the controller persisted it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pause {
    /// Which pause: 0 after the first step (10 %), 1 after the second, 2 after the third.
    pub step: usize,
    /// When it ends, as persisted (ours: `status.waitUntil`; Argo: the pause condition's
    /// `startTime` + the step's duration).
    pub deadline: DateTime<Utc>,
}

/// (object, version, pause) → every distinct deadline persisted for that pause, with when it was
/// first seen.
pub type Deadlines = HashMap<(String, String, usize), Vec<(DateTime<Utc>, DateTime<Utc>)>>;

/// What the watches saw, per object (`app<i>`) and version.
#[derive(Default)]
pub struct Seen {
    /// (object, version, replicas) → first seen with the canary's spec.replicas at that count.
    pub scaled: HashMap<(String, String, i32), DateTime<Utc>>,
    /// (object, version, ready) → first seen with that many ready canary replicas.
    pub ready: HashMap<(String, String, i32), DateTime<Utc>>,
    /// (object, version) → first seen finished (the version stable at full size, nothing left).
    pub done: HashMap<(String, String), DateTime<Utc>>,
    /// Every pause deadline persisted.
    pub deadlines: Deadlines,
    /// object → (version, pause) as of the latest status seen; None when not pausing.
    pub pausing: HashMap<String, (String, Option<Pause>)>,
    /// object → version → (spec.replicas, ready replicas) of its workloads, as last seen.
    pub current: HashMap<String, HashMap<String, (i32, i32)>>,
    /// object → the lowest number of serving replicas seen while `tracking`: the sum over its
    /// versions of min(ready, spec.replicas) (a pod being scaled away serves no more).
    pub min_serving: HashMap<String, i32>,
    /// Whether `min_serving` is being recorded (during the measured rollout).
    pub tracking: bool,
}

impl Seen {
    /// A canary workload (our Deployment, Argo's ReplicaSet) of `object` at `version`.
    pub fn workload(&mut self, now: DateTime<Utc>, object: &str, version: &str, replicas: i32, ready: i32) {
        self.scaled.entry((object.into(), version.into(), replicas)).or_insert(now);
        self.ready.entry((object.into(), version.into(), ready)).or_insert(now);
        let versions = self.current.entry(object.into()).or_default();
        versions.insert(version.into(), (replicas, ready));
        if self.tracking {
            let serving = versions.values().map(|(spec, ready)| (*spec).min(*ready)).sum::<i32>();
            let min = self.min_serving.entry(object.into()).or_insert(serving);
            *min = (*min).min(serving);
        }
    }

    /// The object's status: the version it rolls out, the pause it holds (if any), finished or not.
    pub fn status(
        &mut self,
        now: DateTime<Utc>,
        object: &str,
        version: &str,
        pause: Option<Pause>,
        done: bool,
    ) {
        if let Some(p) = pause {
            let v = self.deadlines.entry((object.into(), version.into(), p.step)).or_default();
            if !v.iter().any(|(d, _)| *d == p.deadline) {
                v.push((p.deadline, now));
            }
        }
        self.pausing.insert(object.into(), (version.into(), pause));
        if done {
            self.done.entry((object.into(), version.into())).or_insert(now);
        }
    }

    fn done_count(&self, version: &str) -> usize {
        self.done.keys().filter(|(_, v)| v == version).count()
    }

    /// When the canary of `object` at `version` was first seen at `replicas` or more.
    fn scaled_to(&self, object: &str, version: &str, replicas: i32) -> Option<DateTime<Utc>> {
        self.scaled
            .iter()
            .filter(|((o, v, r), _)| o == object && v == version && *r >= replicas)
            .map(|(_, t)| *t)
            .min()
    }

    /// When the canary of `object` at `version` was first seen with `ready` or more ready replicas.
    fn ready_to(&self, object: &str, version: &str, ready: i32) -> Option<DateTime<Utc>> {
        self.ready
            .iter()
            .filter(|((o, v, r), _)| o == object && v == version && *r >= ready)
            .map(|(_, t)| *t)
            .min()
    }
}

fn name(i: usize) -> String {
    format!("app{i}")
}

async fn apply_all<C: Controller>(
    c: &C,
    client: &Client,
    ns: &str,
    n: usize,
    version: &str,
) -> HashMap<String, DateTime<Utc>> {
    stream::iter(0..n)
        .map(|i| async move {
            let at = Utc::now();
            c.apply(client, ns, &name(i), version).await;
            (name(i), at)
        })
        .buffer_unordered(32)
        .collect()
        .await
}

async fn wait_done(seen: &Arc<Mutex<Seen>>, n: usize, version: &str, timeout: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if seen.lock().expect("lock").done_count(version) >= n {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// API requests by "verb resource", per object, and the write totals per object (all attempts,
/// and those the apiserver refused, e.g. 409 Conflict).
fn per_object(calls: &BTreeMap<String, (u64, u64)>, n: usize) -> Value {
    let (mut writes, mut without_events, mut refused) = (0, 0, 0);
    let mut by: BTreeMap<String, f64> = BTreeMap::new();
    for (key, (count, failed)) in calls {
        let (verb, resource) = key.split_once(' ').unwrap_or((key, ""));
        by.insert(key.clone(), *count as f64 / n as f64);
        if is_write(verb) {
            writes += count;
            refused += failed;
            if resource != "events" {
                without_events += count;
            }
        }
    }
    json!({
        "by_verb_resource": by,
        "writes": writes as f64 / n as f64,
        "writes_without_events": without_events as f64 / n as f64,
        "writes_refused": refused as f64 / n as f64,
        "requests": calls.values().map(|(c, _)| c).sum::<u64>() as f64 / n as f64,
    })
}

/// One controller, one size: first deploys, the measured rollout, the kill -9 mid-pause.
pub async fn measure<C: Controller>(c: &mut C, n: usize) -> Value {
    let client = support::client().await;
    c.install(&client).await;
    let ns = support::namespace(&client, &format!("peer-{}-{n}", c.name())).await;
    c.start(&ns).await;
    let seen = Arc::new(Mutex::new(Seen::default()));
    let watch = c.watch(client.clone(), ns.clone(), seen.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;

    // First deploys (not measured).
    let first = Instant::now();
    apply_all(c, &client, &ns, n, "1.0.0").await;
    let first_ok = wait_done(&seen, n, "1.0.0", Duration::from_secs(900)).await;
    let first_s = first.elapsed().as_secs_f64();
    assert!(first_ok, "{}: the first deploys did not finish; see target/bench/{ns}.log", c.name());
    tokio::time::sleep(Duration::from_secs(2)).await;

    // The measured rollout.
    let pid = c.pid().expect("running");
    let (cpu0, _) = proc_stats(pid);
    let cp0 = control_plane_cpu();
    let t0 = Utc::now();
    seen.lock().expect("lock").tracking = true;
    let bumped = apply_all(c, &client, &ns, n, "2.0.0").await;
    let ok = wait_done(&seen, n, "2.0.0", Duration::from_secs(1800)).await;
    let t1 = Utc::now();
    seen.lock().expect("lock").tracking = false;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (cpu1, hwm_kib) = proc_stats(pid);
    let cp = cpu_delta(&cp0, &control_plane_cpu());
    let scanned = audit_scan(c.user_agent(), t0, t1 + TimeDelta::seconds(2));
    let calls: BTreeMap<String, u64> = scanned.iter().map(|(k, (all, _))| (k.clone(), *all)).collect();

    let (mut rollout, mut ideal, mut lateness, mut after_ready) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut last_done = t0;
    {
        let s = seen.lock().expect("lock");
        for (name, at) in &bumped {
            let v = "2.0.0";
            if let Some(d) = s.done.get(&(name.clone(), v.to_string())) {
                rollout.push(ms(*d - *at) / 1000.0);
                last_done = last_done.max(*d);
            }
            // Ideal: the sleeps plus the time the canary's pods themselves took to become ready
            // after each scale-up (the control plane's share, which no controller can save).
            let readiness = TARGETS.iter().try_fold(0.0, |acc, r| {
                let up = s.scaled_to(name, v, *r)?;
                let ready = s.ready_to(name, v, *r)?;
                Some(acc + ms(ready - up).max(0.0))
            });
            if let Some(readiness) = readiness {
                ideal.push(sleeps() + readiness / 1000.0);
            }
            for (i, _) in STEPS.iter().enumerate() {
                let Some(ds) = s.deadlines.get(&(name.clone(), v.to_string(), i)) else { continue };
                let Some((deadline, _)) = ds.first() else { continue };
                // Lateness: the next step's scale-up against the persisted deadline.
                if let Some(moved) = s.scaled_to(name, v, TARGETS[i + 1]) {
                    lateness.push(ms(moved - *deadline));
                }
                // When the pause started, against the canary becoming ready at the step's size.
                if let Some(ready) = s.ready_to(name, v, TARGETS[i]) {
                    let start = *deadline - TimeDelta::seconds(STEPS[i].1);
                    after_ready.push(ms(start - ready));
                }
            }
        }
    }
    let wall = ms(last_done - t0) / 1000.0;
    let serving: Vec<f64> = seen.lock().expect("lock").min_serving.values().map(|m| *m as f64).collect();
    let dipped = serving.iter().filter(|m| **m < R as f64).count();

    let restart = kill_mid_pause(c, &client, &ns, n, &seen).await;
    c.kill();
    watch.abort();
    delete_and_wait(&client, &ns).await;

    json!({
        "controller": c.name(),
        "settings": c.settings(),
        "n": n,
        "replicas": R,
        "steps": "10% sleep 6s, 30% sleep 3s, 60% sleep 3s, 100%",
        "first_deploys_ok": first_ok,
        "first_deploys_s": first_s,
        "completed": ok,
        "wall_s": wall,
        "rollout_s": dist(&rollout),
        "ideal_s": dist(&ideal),
        "lateness_ms": dist(&lateness),
        "pause_start_after_ready_ms": dist(&after_ready),
        "min_serving_replicas": dist(&serving),
        "objects_below_r": dipped,
        "lowest_serving_replicas": serving.iter().copied().fold(f64::NAN, f64::min),
        "cpu_s": cpu1 - cpu0,
        "peak_rss_mib": hwm_kib as f64 / 1024.0,
        "control_plane_cpu_s": cp,
        "api_calls": calls,
        "per_object": per_object(&scanned, n),
        "kill_mid_pause": restart,
    })
}

/// Bumps every object to 3.0.0; once half of them hold their first pause, kill -9 the controller,
/// leave it down for [`DOWN`], start it again, and see what became of each pause that was held
/// at the kill: ended at its deadline (kept), later (late), with a new deadline persisted after
/// the restart (restarted), before its deadline (skipped), or due while the controller was down.
async fn kill_mid_pause<C: Controller>(
    c: &mut C,
    client: &Client,
    ns: &str,
    n: usize,
    seen: &Arc<Mutex<Seen>>,
) -> Value {
    let v = "3.0.0";
    apply_all(c, client, ns, n, v).await;
    // Kill once half of the objects have entered their first pause (under load they do not all
    // hold it at the same moment); the pauses held at that instant are the ones followed.
    let waiting = Instant::now();
    loop {
        let entered =
            seen.lock().expect("lock").deadlines.keys().filter(|(_, ver, p)| ver == v && *p == 0).count();
        if entered * 2 >= n || waiting.elapsed() > Duration::from_secs(600) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let killed = Utc::now();
    let held: HashMap<String, Pause> = seen
        .lock()
        .expect("lock")
        .pausing
        .iter()
        .filter_map(|(o, (ver, p))| (ver == v).then_some((o.clone(), (*p)?)))
        .filter(|(_, p)| p.step == 0 && p.deadline > killed)
        .collect();
    c.kill();
    tokio::time::sleep(DOWN).await;
    let restarted = Utc::now();
    c.start(ns).await;
    let all_done = wait_done(seen, n, v, Duration::from_secs(1800)).await;

    let (mut kept, mut late, mut restarted_n, mut skipped, mut due_down) = (0, 0, 0, 0, 0);
    let (mut lateness, mut resume, mut end_after_deadline) = (Vec::new(), Vec::new(), Vec::new());
    let s = seen.lock().expect("lock");
    for (name, p) in &held {
        let Some(moved) = s.scaled_to(name, v, TARGETS[1]) else { continue };
        let late_ms = ms(moved - p.deadline);
        end_after_deadline.push(late_ms);
        let renewed = s
            .deadlines
            .get(&(name.clone(), v.to_string(), 0))
            .is_some_and(|ds| ds.iter().any(|(d, first)| *d != p.deadline && *first >= restarted));
        if renewed {
            restarted_n += 1;
        } else if late_ms < 0.0 {
            skipped += 1;
        } else if p.deadline < restarted {
            due_down += 1;
            resume.push(ms(moved - restarted) / 1000.0);
        } else if late_ms <= KEPT_MS {
            kept += 1;
            lateness.push(late_ms);
        } else {
            late += 1;
            lateness.push(late_ms);
        }
    }
    json!({
        "held_at_kill": held.len(),
        "killed_at": killed.to_rfc3339(),
        "down_s": DOWN.as_secs_f64(),
        "kept": kept,
        "late": late,
        "restarted": restarted_n,
        "skipped": skipped,
        "due_while_down": due_down,
        "lateness_ms": dist(&lateness),
        "end_minus_deadline_ms": dist(&end_after_deadline),
        "resume_s": dist(&resume),
        "all_done": all_done,
    })
}

fn f(v: &Value, path: &[&str]) -> f64 {
    path.iter().fold(v, |v, k| &v[*k]).as_f64().unwrap_or(f64::NAN)
}

/// The median over repeated runs of one figure.
fn median(runs: &[Value], path: &[&str]) -> f64 {
    let v: Vec<f64> = runs.iter().map(|r| f(r, path)).filter(|x| !x.is_nan()).collect();
    percentile(&v, 50.0)
}

/// peer / ours, where that means something (both positive).
fn ratio(peer: f64, ours: f64) -> String {
    if ours.is_nan() || peer.is_nan() || ours <= 0.0 || peer <= 0.0 {
        "-".into()
    } else {
        format!("×{:.2}", peer / ours)
    }
}

/// The side-by-side table of one size, as Markdown: ours first, then each peer with its ratio to
/// ours. Each figure is the median over the runs.
pub fn table(n: usize, columns: &[(&str, Vec<Value>)]) -> String {
    let mut out = String::new();
    let mut header = format!("| N = {n} |");
    let mut rule = "|---|".to_string();
    for (i, (name, runs)) in columns.iter().enumerate() {
        header += &format!(" {name} ({} run{}) |", runs.len(), if runs.len() == 1 { "" } else { "s" });
        rule += "---:|";
        if i > 0 {
            header += &format!(" {name} / {} |", columns[0].0);
            rule += "---:|";
        }
    }
    out += &format!("{header}\n{rule}\n");
    let rows: Vec<(&str, Vec<&str>, &str)> = vec![
        ("wall, bump → all finished (s)", vec!["wall_s"], "{:.1}"),
        ("rollout p50 per object (s)", vec!["rollout_s", "p50"], "{:.1}"),
        ("ideal p50: sleeps + pod readiness (s)", vec!["ideal_s", "p50"], "{:.1}"),
        ("rollout p50 − ideal p50 (s)", vec![], "{:.1}"),
        ("step lateness p50 (ms)", vec!["lateness_ms", "p50"], "{:.0}"),
        ("step lateness p99 (ms)", vec!["lateness_ms", "p99"], "{:.0}"),
        ("pause start − canary ready, p50 (ms)", vec!["pause_start_after_ready_ms", "p50"], "{:.0}"),
        ("objects whose serving replicas dipped below R = 10", vec!["objects_below_r"], "{:.0}"),
        ("lowest serving replicas of any object", vec!["lowest_serving_replicas"], "{:.0}"),
        ("controller CPU (s)", vec!["cpu_s"], "{:.1}"),
        ("controller peak RSS (MiB)", vec!["peak_rss_mib"], "{:.1}"),
        ("kube-apiserver CPU (s)", vec!["control_plane_cpu_s", "kube-apiserver"], "{:.1}"),
        ("writes per object, with Events", vec!["per_object", "writes"], "{:.1}"),
        ("writes per object, without Events", vec!["per_object", "writes_without_events"], "{:.1}"),
        ("· of the writes, refused by the apiserver (409 …)", vec!["per_object", "writes_refused"], "{:.1}"),
        ("requests per object, all verbs", vec!["per_object", "requests"], "{:.1}"),
    ];
    let value = |runs: &[Value], path: &[&str]| -> f64 {
        if path.is_empty() {
            median(runs, &["rollout_s", "p50"]) - median(runs, &["ideal_s", "p50"])
        } else {
            median(runs, path)
        }
    };
    let fmt = |x: f64, spec: &str| -> String {
        if x.is_nan() {
            "-".into()
        } else if spec == "{:.0}" {
            format!("{x:.0}")
        } else {
            format!("{x:.1}")
        }
    };
    for (label, path, spec) in &rows {
        let ours = value(&columns[0].1, path);
        let mut line = format!("| {label} |");
        // A ratio of differences of times means nothing.
        let no_ratio = label.contains(" − ");
        for (i, (_, runs)) in columns.iter().enumerate() {
            let x = value(runs, path);
            line += &format!(" {} |", fmt(x, spec));
            if i > 0 {
                line += &format!(" {} |", if no_ratio { "-".into() } else { ratio(x, ours) });
            }
        }
        out += &format!("{line}\n");
    }
    // Requests per object by verb and resource (the union over the controllers).
    let mut keys: Vec<String> = columns
        .iter()
        .flat_map(|(_, runs)| runs.iter())
        .filter_map(|r| r["per_object"]["by_verb_resource"].as_object())
        .flat_map(|m| m.keys().cloned())
        .collect();
    keys.sort();
    keys.dedup();
    for key in keys.iter().filter(|k| is_write(k.split(' ').next().unwrap_or(""))) {
        let mut line = format!("| · {key} per object |");
        let ours = median(&columns[0].1, &["per_object", "by_verb_resource", key]);
        for (i, (_, runs)) in columns.iter().enumerate() {
            let x = median(runs, &["per_object", "by_verb_resource", key]);
            let x = if x.is_nan() { 0.0 } else { x };
            line += &format!(" {x:.2} |");
            if i > 0 {
                line += &format!(" {} |", ratio(x, if ours.is_nan() { 0.0 } else { ours }));
            }
        }
        out += &format!("{line}\n");
    }
    // kill -9 mid-pause: counts summed over the runs, for each controller.
    let mut line =
        "| kill -9 in the first pause: kept / late / restarted / skipped / due while down (of held; all runs) |"
            .to_string();
    for (i, (_, runs)) in columns.iter().enumerate() {
        let sum = |k: &str| runs.iter().map(|r| r["kill_mid_pause"][k].as_u64().unwrap_or(0)).sum::<u64>();
        line += &format!(
            " {} / {} / {} / {} / {} ({}) |",
            sum("kept"),
            sum("late"),
            sum("restarted"),
            sum("skipped"),
            sum("due_while_down"),
            sum("held_at_kill")
        );
        if i > 0 {
            line += " |";
        }
    }
    out += &format!("{line}\n");
    let mut line = "| kill -9: pause end − original deadline, p50 / max (ms) |".to_string();
    for (i, (_, runs)) in columns.iter().enumerate() {
        line += &format!(
            " {} / {} |",
            fmt(median(runs, &["kill_mid_pause", "end_minus_deadline_ms", "p50"]), "{:.0}"),
            fmt(median(runs, &["kill_mid_pause", "end_minus_deadline_ms", "max"]), "{:.0}")
        );
        if i > 0 {
            line += " |";
        }
    }
    out += &format!("{line}\n");
    out
}

/// Which peers `PEERS` names (comma-separated; `argo` is the one there is).
pub fn requested() -> Vec<String> {
    std::env::var("PEERS")
        .unwrap_or_default()
        .split(',')
        .map(|s| s.trim().to_lowercase())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Runs the side-by-side comparison for every size: per size and run, ours then each peer, one
/// at a time. `PEER_RUNS` (default 1) repeats each pair; the table shows medians over the runs.
/// Writes `target/bench/peers-N.json` and `target/bench/peers.json`, and prints the tables.
pub async fn compare(sizes: &[usize], peers: &[String]) {
    let runs: usize = std::env::var("PEER_RUNS").ok().and_then(|r| r.parse().ok()).unwrap_or(1).max(1);
    let mut argo = if peers.iter().any(|p| p == "argo") { Some(argo::Argo::from_env()) } else { None };
    if let Some(unknown) = peers.iter().find(|p| *p != "argo") {
        panic!("PEERS: unknown peer {unknown:?} (known: argo)");
    }
    let mut ours = ours::Ours::default();
    let mut all = Vec::new();
    let mut tables = String::new();
    for &n in sizes {
        let (mut ours_runs, mut argo_runs) = (Vec::new(), Vec::new());
        for run in 0..runs {
            println!("peers: N = {n}, run {}/{runs}: {}", run + 1, ours.name());
            ours_runs.push(measure(&mut ours, n).await);
            if let Some(a) = argo.as_mut() {
                println!("peers: N = {n}, run {}/{runs}: {}", run + 1, a.name());
                argo_runs.push(measure(a, n).await);
            }
        }
        let mut columns = vec![(ours.name(), ours_runs.clone())];
        if let Some(a) = &argo {
            columns.push((a.name(), argo_runs.clone()));
        }
        let t = table(n, &columns);
        println!("\n{t}");
        tables += &t;
        tables += "\n";
        let entry = json!({"n": n, "runs": runs, "ours": ours_runs, "argo": argo_runs, "table": t});
        std::fs::write(
            out_dir().join(format!("peers-{n}.json")),
            serde_json::to_string_pretty(&entry).expect("json"),
        )
        .expect("write");
        all.push(entry);
    }
    let settings: Value = json!({
        "ours": ours.settings(),
        "argo": argo.as_ref().map(|a| a.settings()),
    });
    println!("settings: {settings}");
    let summary = json!({
        "at": Utc::now().to_rfc3339(),
        "machine": machine(),
        "settings": settings,
        "sizes": all,
    });
    std::fs::write(out_dir().join("peers.json"), serde_json::to_string_pretty(&summary).expect("json"))
        .expect("write");
    std::fs::write(out_dir().join("peers.md"), tables).expect("write");
    println!("saved {}", out_dir().join("peers.json").display());
}
