//! Chaos: many concurrent rollouts while the operator is killed -9 at random moments, owned
//! Deployments are scaled and deleted by hand, and (in the full run) the apiserver and etcd are
//! restarted mid-rollout. A checker watches every Deployment throughout and fails the test if the
//! ready replicas of one Deployer ever fall below R once it has a stable version; at the end every
//! rollout must be Done (or Aborted where the test made its canary fail) with exactly the right
//! Deployments at R, and no step may have been announced twice.
//!
//! Parameters (environment):
//!
//! | variable | default (the short run of `make test`) | `make chaos` |
//! |---|---|---|
//! | `CHAOS_ROLLOUTS` | 6 | 50 |
//! | `CHAOS_KILLS` (at least) | 6 | 20 |
//! | `CHAOS_CONTROL_PLANE` (restart apiserver and etcd) | 0 | 1 |
//! | `CHAOS_SEED` | from the clock (printed) | |
//!
//! A hostile tenant shares the namespace throughout the waves (both runs): Deployers with every
//! numeric field at its schema bounds (16 metrics and 16 webhooks to endpoints that never answer,
//! 300 s timeouts, 10 retries, 100 steps of a year's sleep, a year's progress deadline; and the
//! lower bounds: 0 and 1 replicas, a 1 s deadline) and hand edits of its own Deployers' statuses
//! through the status subresource (a nonsense `currentStep`, a wiped status, an unknown plan,
//! checks in flight that never were, …). The operator must never exit by itself, and the other
//! rollouts' invariants must hold. (`replicas` stays far below its bound of 100,000: kwok would
//! make that many pods on the shared control plane.)
//!
//! The apiserver and etcd are restarted only when `CHAOS_CONTROL_PLANE=1`: `make test` runs every
//! test binary at once against one shared control plane, and an outage would fail the other tests.
//! `make chaos` runs this binary alone, so it may take the control plane down.

mod harness;
mod support;

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use deployer_operator::api::{Deployer, Phase};
use futures::{StreamExt, stream};
use harness::{Operator, deployer, secs};
use k8s_openapi::api::{apps::v1::Deployment, events::v1::Event};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams},
    runtime::{WatchStreamExt, watcher},
};
use serde_json::json;

/// Replicas of every Deployer (R).
const R: i32 = 4;
/// The label the operator puts on the Deployments it owns; its value is the Deployer's name.
const DEPLOYER_LABEL: &str = "deploy.example.com/deployer";

/// The run's parameters, from the environment.
#[derive(Debug)]
struct Params {
    rollouts: usize,
    kills: u32,
    control_plane: bool,
    seed: u64,
    /// Sleep of each of the two canary steps (25% and 50%), in seconds.
    sleep: i64,
    /// progressDeadlineSeconds of the rollouts made to fail.
    deadline: i64,
    timeout: Duration,
}

impl Params {
    fn from_env() -> Params {
        let var = |name: &str, default: u64| -> u64 {
            std::env::var(name).ok().and_then(|v| v.trim().parse().ok()).unwrap_or(default)
        };
        let rollouts = var("CHAOS_ROLLOUTS", 6).max(1) as usize;
        let clock = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let full = rollouts > 10;
        Params {
            rollouts,
            kills: var("CHAOS_KILLS", 6) as u32,
            control_plane: var("CHAOS_CONTROL_PLANE", 0) == 1,
            seed: var("CHAOS_SEED", (clock as u64) | 1),
            sleep: if full { 2 } else { 1 },
            deadline: if full { 15 } else { 8 },
            timeout: secs(if full { 900 } else { 240 }),
        }
    }
}

/// xorshift64*: reproducible from `CHAOS_SEED`, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `lo..hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo).max(1)
    }
}

/// What one Deployer's rollouts are expected to end with.
#[derive(Clone, Debug)]
struct Expect {
    /// The version that runs at R when the wave is over.
    stable: String,
    /// The version the wave rolls out, and whether it is made to fail (never ready → Aborted).
    target: String,
    fails: bool,
    /// progressDeadlineSeconds of a rollout made to fail.
    deadline: i64,
}

/// A hand edit's exception for one Deployer: its ready replicas may drop below R (the user's doing);
/// the checker then only requires that they come back.
#[derive(Debug)]
struct Excuse {
    at: Instant,
    dropped: bool,
    /// When the Deployer was first seen back at R since it dropped (a recovery is believed once
    /// it has held for [`Checker::settle`]).
    back_at: Option<Instant>,
}

/// The checker's view, updated from one watch of every Deployment in the namespace.
#[derive(Default)]
struct Checker {
    /// Per Deployer: ready replicas of each of its Deployments (see [`kept_ready`]).
    ready: HashMap<String, BTreeMap<String, i32>>,
    /// Deployers that have had a stable at R (from then on the floor applies).
    armed: std::collections::HashSet<String>,
    excused: HashMap<String, Excuse>,
    /// The lowest total of ready replicas of an armed Deployer (not excused) seen.
    min_ready: Option<i32>,
    /// The lowest total seen while excused (after a hand edit), for the summary.
    min_ready_excused: Option<i32>,
    recoveries: Vec<Duration>,
    violations: Vec<String>,
    updates: u64,
    relists: u64,
    /// How long a Deployer must hold at R after a hand edit's drop before the floor applies
    /// again (0: at once).
    settle: Duration,
}

impl Checker {
    /// Allows `name` to drop below R until it has recovered (a hand edit is about to be made).
    fn excuse(&mut self, name: &str) {
        self.excused.insert(name.to_string(), Excuse { at: Instant::now(), dropped: false, back_at: None });
    }

    /// Re-evaluates the floor of one Deployer after an update.
    fn check(&mut self, name: &str) {
        let total: i32 = self.ready.get(name).map(|m| m.values().sum()).unwrap_or(0);
        self.updates += 1;
        if let Some(excuse) = self.excused.get_mut(name) {
            // Back at R for `settle` already: recovered, and the floor applies to this update.
            let settled = excuse.back_at.is_some_and(|t| t.elapsed() >= self.settle);
            if total < R && !settled {
                excuse.dropped = true;
                excuse.back_at = None;
                self.min_ready_excused = Some(self.min_ready_excused.map_or(total, |m| m.min(total)));
                if excuse.at.elapsed() > secs(120) {
                    self.violations.push(format!("{name}: no recovery 120 s after a hand edit"));
                }
                return;
            }
            if total >= R && excuse.dropped && !settled {
                // Seen back at R: believed once it holds. Right after a hand scale-down the
                // Deployment may still report the ready pods it is removing (its status lags its
                // ReplicaSet's); raised again at once by the operator, min(ready, spec) would
                // count them and look like a recovery for a moment.
                excuse.back_at.get_or_insert_with(Instant::now);
                if self.settle > Duration::ZERO {
                    return;
                }
            }
            // Recovered (or the edit cost no ready pod and 10 s have passed): the floor applies again.
            if excuse.dropped || excuse.at.elapsed() > secs(10) {
                let excuse = self.excused.remove(name).expect("excused");
                if excuse.dropped {
                    // The time it took to be back at R (for good).
                    let back = excuse.back_at.unwrap_or_else(Instant::now);
                    self.recoveries.push(back.duration_since(excuse.at));
                }
            }
            if total >= R || !settled {
                return;
            }
        }
        if total >= R {
            self.armed.insert(name.to_string());
        }
        if self.armed.contains(name) {
            self.min_ready = Some(self.min_ready.map_or(total, |m| m.min(total)));
            if total < R {
                let seen = self.ready.get(name).cloned().unwrap_or_default();
                self.violations.push(format!(
                    "{name}: {total} ready replicas < R = {R} at {} ({seen:?})",
                    chrono::Utc::now().format("%H:%M:%S%.3f")
                ));
            }
        }
    }

    /// At the end (the world settled, no update to come): a Deployer back at R since a hand
    /// edit's drop has recovered, however short ago.
    fn finish(&mut self) {
        let back: Vec<String> = self
            .excused
            .iter()
            .filter(|(name, e)| {
                let total: i32 = self.ready.get(*name).map(|m| m.values().sum()).unwrap_or(0);
                e.dropped && e.back_at.is_some() && total >= R
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in back {
            let excuse = self.excused.remove(&name).expect("excused");
            self.recoveries.push(excuse.back_at.unwrap_or(excuse.at).duration_since(excuse.at));
        }
    }

    /// Applies one Deployment as the watch delivered it (`None`: deleted).
    fn apply(&mut self, d: &Deployment, gone: bool) {
        let Some(owner) = d.labels().get(DEPLOYER_LABEL).filter(|o| o.starts_with("app")).cloned() else {
            return;
        };
        let ready = kept_ready(d);
        let versions = self.ready.entry(owner.clone()).or_default();
        if gone || d.metadata.deletion_timestamp.is_some() {
            versions.remove(&d.name_any());
        } else {
            versions.insert(d.name_any(), ready);
        }
        self.check(&owner);
    }
}

/// The ready replicas of a Deployment that it is still asked to keep: min(status.readyReplicas,
/// spec.replicas). Right after a scale-down the ReplicaSet may still count a pod that is about to
/// go; counting it would let a transient surplus look like a recovery.
fn kept_ready(d: &Deployment) -> i32 {
    let ready = d.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0);
    ready.min(d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1))
}

/// Runs the checker until aborted. A re-list (after a watch error, e.g. an apiserver restart)
/// replaces the whole view at once, so a half-applied snapshot never looks like a drop.
fn start_checker(client: &Client, ns: &str, checker: Arc<Mutex<Checker>>) -> tokio::task::JoinHandle<()> {
    let deps: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let mut events =
        watcher(deps, watcher::Config::default().labels(DEPLOYER_LABEL)).default_backoff().boxed();
    tokio::spawn(async move {
        let mut relist: Option<Vec<Deployment>> = None;
        while let Some(ev) = events.next().await {
            let mut c = checker.lock().expect("lock");
            match ev {
                Ok(watcher::Event::Init) => relist = Some(Vec::new()),
                Ok(watcher::Event::InitApply(d)) => relist.get_or_insert_with(Vec::new).push(d),
                Ok(watcher::Event::InitDone) => {
                    c.relists += 1;
                    let all = relist.take().unwrap_or_default();
                    let names: Vec<String> = c.ready.keys().cloned().collect();
                    c.ready.clear();
                    for d in &all {
                        let Some(owner) =
                            d.labels().get(DEPLOYER_LABEL).filter(|o| o.starts_with("app")).cloned()
                        else {
                            continue;
                        };
                        if d.metadata.deletion_timestamp.is_none() {
                            c.ready.entry(owner).or_default().insert(d.name_any(), kept_ready(d));
                        }
                    }
                    let mut owners: Vec<String> = c.ready.keys().cloned().collect();
                    owners.extend(names);
                    owners.sort();
                    owners.dedup();
                    for owner in owners {
                        c.check(&owner);
                    }
                }
                Ok(watcher::Event::Apply(d)) => c.apply(&d, false),
                Ok(watcher::Event::Delete(d)) => c.apply(&d, true),
                Err(_) => {}
            }
        }
    })
}

/// Which Deployers are not yet where the wave should leave them (by index).
async fn pending(api: &Api<Deployer>, expect: &[Expect]) -> Option<Vec<usize>> {
    let list = api.list(&ListParams::default()).await.ok()?;
    let by_name: HashMap<String, Deployer> = list.items.into_iter().map(|d| (d.name_any(), d)).collect();
    let left = expect
        .iter()
        .enumerate()
        .filter(|(i, e)| {
            let st = by_name.get(&format!("app{i}")).and_then(|d| d.status.clone()).unwrap_or_default();
            let reached = if e.fails {
                st.phase == Some(Phase::Aborted) && st.canary_version.as_deref() == Some(e.target.as_str())
            } else {
                st.phase == Some(Phase::Done) && st.stable_version.as_deref() == Some(e.target.as_str())
            };
            !reached
        })
        .map(|(i, _)| i)
        .collect();
    Some(left)
}

/// Names of the Deployers in the middle of a rollout (Scaling or Waiting), by index.
async fn in_flight(api: &Api<Deployer>) -> Vec<usize> {
    let Ok(list) = api.list(&ListParams::default()).await else { return Vec::new() };
    list.items
        .iter()
        .filter(|d| {
            let phase = d.status.as_ref().and_then(|s| s.phase);
            matches!(phase, Some(Phase::Scaling | Phase::Waiting))
        })
        .filter_map(|d| d.name_any().strip_prefix("app").and_then(|i| i.parse().ok()))
        .collect()
}

/// The step Events of the namespace per Deployer: (type, reason, note) and the series count.
async fn step_events(client: &Client, ns: &str) -> BTreeMap<String, Vec<((String, String, String), i32)>> {
    let api: Api<Event> = Api::namespaced(client.clone(), ns);
    let mut list = api.list(&ListParams::default()).await.expect("listing Events").items;
    list.sort_by_key(|e| e.event_time.as_ref().map(|t| t.0));
    let mut out: BTreeMap<String, Vec<_>> = BTreeMap::new();
    for e in list {
        let Some(name) = e.regarding.as_ref().and_then(|r| r.name.clone()) else { continue };
        let count = e.series.as_ref().map_or(1, |s| s.count);
        let triple = (e.type_.unwrap_or_default(), e.reason.unwrap_or_default(), e.note.unwrap_or_default());
        out.entry(name).or_default().push((triple, count));
    }
    out
}

/// `cluster.sh restart <component>` on the local control plane the tests use.
async fn restart_component(component: &str) -> Duration {
    let started = Instant::now();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/cluster/cluster.sh");
    let out = tokio::process::Command::new("bash")
        .args([script, "restart", component])
        .output()
        .await
        .unwrap_or_else(|e| panic!("running cluster.sh restart {component}: {e}"));
    assert!(
        out.status.success(),
        "cluster.sh restart {component} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    started.elapsed()
}

/// The disturbances of one wave, other than kills, in the order they are made.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Disturbance {
    ScaleDown,
    ScaleUp,
    Delete,
    RestartApiserver,
    RestartEtcd,
}

/// What the run did, for the summary.
#[derive(Default, Debug)]
struct Tally {
    kills: u32,
    exited_during_outage: u32,
    restarts: Vec<(String, Duration)>,
    hand: Vec<String>,
    waves: u32,
}

/// Makes one hand edit on a Deployer in flight (if any); returns what was done.
async fn hand_edit(
    client: &Client,
    ns: &str,
    kind: Disturbance,
    rng: &mut Rng,
    checker: &Arc<Mutex<Checker>>,
) -> Option<String> {
    let dpls: Api<Deployer> = Api::namespaced(client.clone(), ns);
    let candidates = in_flight(&dpls).await;
    let i = *candidates.get(rng.range(0, candidates.len() as u64) as usize)?;
    let name = format!("app{i}");
    let deps: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let owned = deps.list(&ListParams::default().labels(&format!("{DEPLOYER_LABEL}={name}"))).await.ok()?;
    // The Deployment with the most replicas: the one whose loss hurts most.
    let target = owned
        .items
        .iter()
        .filter(|d| d.metadata.deletion_timestamp.is_none())
        .max_by_key(|d| d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0))?;
    let dep = target.name_any();
    let replicas = target.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
    let scale = |n: i32| Patch::Merge(json!({"spec": {"replicas": n}}));
    let done = match kind {
        Disturbance::ScaleDown => {
            checker.lock().expect("lock").excuse(&name);
            deps.patch(&dep, &PatchParams::default(), &scale(0)).await.ok()?;
            format!("scaled {dep} {replicas} → 0 by hand")
        }
        // More pods than asked for: the operator must bring it back without going below R.
        Disturbance::ScaleUp => {
            deps.patch(&dep, &PatchParams::default(), &scale(replicas + 3)).await.ok()?;
            format!("scaled {dep} {replicas} → {} by hand", replicas + 3)
        }
        Disturbance::Delete => {
            checker.lock().expect("lock").excuse(&name);
            deps.delete(&dep, &DeleteParams::default()).await.ok()?;
            format!("deleted {dep} ({replicas} replicas) by hand")
        }
        Disturbance::RestartApiserver | Disturbance::RestartEtcd => unreachable!("not a hand edit"),
    };
    Some(done)
}

/// Starts a wave: every Deployer to its target version, at once.
async fn roll_out(client: &Client, ns: &str, expect: &[Expect]) {
    let api: Api<Deployer> = Api::namespaced(client.clone(), ns);
    stream::iter(expect.iter().enumerate())
        .for_each_concurrent(16, |(i, e)| {
            let api = api.clone();
            async move {
                // Only the rollouts made to fail get a short progress deadline: the others must
                // ride out a control-plane outage (a canary cannot become ready meanwhile).
                let deadline = if e.fails { e.deadline } else { 600 };
                let body = json!({"spec": {"deployment": {"version": e.target}, "progressDeadlineSeconds": deadline}});
                // The apiserver may be restarting: retry for a while.
                for _ in 0..100 {
                    if api
                        .patch(&format!("app{i}"), &PatchParams::default(), &Patch::Merge(&body))
                        .await
                        .is_ok()
                    {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                panic!("could not patch app{i} to {}", e.target);
            }
        })
        .await;
}

/// Waits until every Deployer of the namespace is where `expect` says and its Deployments are
/// exactly the stable one at R; returns the Deployments seen.
async fn assert_settled(client: &Client, ns: &str, expect: &[Expect]) {
    let api: Api<Deployer> = Api::namespaced(client.clone(), ns);
    support::wait_until("every rollout of the wave to end", secs(120), || async {
        pending(&api, expect).await.is_some_and(|p| p.is_empty())
    })
    .await;
    let want: Vec<(String, i32)> =
        expect.iter().enumerate().map(|(i, e)| (format!("app{i}-{}", e.stable), R)).collect();
    // The rollouts' Deployments (the hostile tenant's live beside them).
    let want: BTreeMap<String, i32> = want.into_iter().collect();
    support::wait_until(&format!("the app Deployments in {ns} to be {want:?}"), secs(60), || async {
        let mut now = harness::replicas(client, ns).await;
        now.retain(|name, _| name.starts_with("app"));
        now == want
    })
    .await;
    for (i, e) in expect.iter().enumerate() {
        let st = harness::status(client, ns, &format!("app{i}")).await.expect("status");
        assert_eq!(st.stable_version.as_deref(), Some(e.stable.as_str()), "app{i}: {st:?}");
        let phase = if e.fails { Phase::Aborted } else { Phase::Done };
        assert_eq!(st.phase, Some(phase), "app{i}: {st:?}");
    }
}

/// The version Deployer `i` rolls out in wave `wave` (1, 2, …): some canaries are slow to become
/// ready (kill -9 lands in Scaling), and in wave 1 every tenth is made to fail.
fn target(i: usize, wave: u32) -> (String, bool) {
    let v = wave + 1;
    if wave == 1 && i % 10 == 3 {
        (format!("{v}.0.0-never-ready"), true)
    } else if i % 5 == 1 {
        (format!("{v}.0.0-slow"), false)
    } else {
        (format!("{v}.0.0"), false)
    }
}

// ------------------------------------------------------------------------ the hostile tenant

/// An endpoint that never answers: accepts every connection and holds it (5 minutes).
async fn black_hole() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a free port");
    let addr = listener.local_addr().expect("an address");
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                tokio::time::sleep(secs(300)).await;
                drop(socket);
            });
        }
    });
    addr
}

/// A DNS-label of `len` characters (a version or a name at its length bound).
fn long_label(prefix: &str, len: usize) -> String {
    let mut s = prefix.to_string();
    while s.len() < len {
        s.push(char::from(b'a' + (s.len() % 26) as u8));
    }
    s.truncate(len);
    s
}

/// The hostile tenant's Deployer with every numeric field at its upper bound (replicas aside):
/// 100 steps of a year's sleep, a year's progress deadline, 16 metrics (count 100, failure
/// limit 100, an hour apart, the widest min/max) and 16 webhooks (300 s, 10 retries) at every
/// step, all to endpoints that never answer, a 4,096-character query, names and a version at
/// their length bounds.
fn hostile_max(hole: std::net::SocketAddr, version: &str) -> serde_json::Value {
    let year = 31_536_000i64;
    let metric = |i: usize| {
        json!({
            "name": long_label(&format!("m{i:03}-"), 63),
            "query": format!("sum(up{{job=\"{}\"}})", "x".repeat(4096 - 18)),
            "min": -1.7976931348623157e308, "max": 1.7976931348623157e308,
            "count": 100, "failureLimit": 100, "intervalSeconds": 3600,
        })
    };
    let webhook = |i: usize, gate: &str| {
        json!({
            "name": long_label(&format!("w{i:03}-"), 63), "type": gate,
            "url": format!("http://{hole}/{}", "p".repeat(2048 - 30)),
            "timeoutSeconds": 300, "retries": 10, "metadata": {"tenant": "hostile"},
        })
    };
    let gates = ["BeforeStep", "AfterStep", "BeforePromotion", "Rollback"];
    let steps: Vec<serde_json::Value> = (1..=100)
        .map(|p| {
            let mut step = json!({"percent": p, "sleep": if p == 100 { 0 } else { year }});
            // The first step's own checks too (all 100 would pass the object's size limit).
            if p == 1 {
                // Named apart from the rollout-wide ones (the operator refuses a name twice).
                step["webhooks"] = json!((100..116).map(|i| webhook(i, "BeforeStep")).collect::<Vec<_>>());
                step["metrics"] = json!((100..116).map(metric).collect::<Vec<_>>());
            }
            step
        })
        .collect();
    json!({
        "apiVersion": "deploy.example.com/v1alpha1",
        "kind": "Deployer",
        "metadata": {"name": "hostile-max"},
        "spec": {
            "deployment": {
                "name": "hostile-max", "image": "nginx", "version": version, "replicas": 3,
                "labels": {"app": "hostile-max"},
            },
            "progressDeadlineSeconds": year,
            "steps": steps,
            "analysis": {
                "prometheus": {"address": format!("http://{hole}")},
                "metrics": (0..16).map(metric).collect::<Vec<_>>(),
                "webhooks": (0..16).map(|i| webhook(i, gates[i % 4])).collect::<Vec<_>>(),
            },
        }
    })
}

/// The hostile tenant's Deployers at the lower bounds: `replicas` 0 (and 1), a 1 s progress
/// deadline, one 1% step of no sleep, checks of 1 s timeouts, no retries, one measurement a
/// second.
fn hostile_min(name: &str, replicas: i32, hole: std::net::SocketAddr, version: &str) -> serde_json::Value {
    json!({
        "apiVersion": "deploy.example.com/v1alpha1",
        "kind": "Deployer",
        "metadata": {"name": name},
        "spec": {
            "deployment": {"name": name, "image": "nginx", "version": version, "replicas": replicas,
                "labels": {"app": name}},
            "progressDeadlineSeconds": 1,
            "steps": [{"percent": 1, "sleep": 0}],
            "analysis": {
                "prometheus": {"address": format!("http://{hole}")},
                "metrics": [{"name": "m", "query": "1", "min": 0, "count": 1, "failureLimit": 0, "intervalSeconds": 1}],
                "webhooks": [{"name": "w", "type": "BeforeStep", "url": format!("http://{hole}/"), "timeoutSeconds": 1, "retries": 0}],
            },
        }
    })
}

/// The hand edits the hostile tenant makes to its own Deployers' statuses (merge patches of the
/// status subresource). Some the API server refuses (an unknown phase): counted, not an error.
fn status_edit(k: u64) -> (&'static str, serde_json::Value) {
    match k % 8 {
        0 => ("nonsense currentStep", json!({"status": {"currentStep": 9999}})),
        1 => ("negative currentStep", json!({"status": {"currentStep": -7, "phase": "Waiting"}})),
        2 => ("wiped status", json!({"status": null})),
        3 => ("unknown plan", json!({"status": {"plan": "13%/-5s,garbage,200%/x"}})),
        4 => ("unknown phase", json!({"status": {"phase": "Exploding"}})),
        5 => (
            "a wait at the end of time",
            json!({"status": {"phase": "Waiting", "currentStep": 1, "waitUntil": "9999-12-31T23:59:59Z"}}),
        ),
        6 => (
            "checks in flight that never were",
            json!({"status": {"checks": [{"name": "webhook/ghost", "gate": "BeforeStep", "step": 500,
                "phase": "Running", "runs": -3, "failures": 2147483647,
                "startedAt": "1970-01-01T00:00:00Z", "lastError": "x".repeat(10_000)}]}}),
        ),
        _ => (
            "versions that are not versions",
            json!({"status": {"stableVersion": "../../etc", "canaryVersion": "", "handled": {"promote": "x".repeat(5000)}}}),
        ),
    }
}

/// What the hostile tenant did.
#[derive(Debug, Default)]
struct HostileTally {
    edits: BTreeMap<&'static str, (u32, u32)>,
    version_bumps: u32,
    api_errors: u32,
}

/// Starts the hostile tenant in `ns`: its Deployers at the bounds, and a task that keeps
/// editing their statuses (and rolling them on) until `stop` is set.
async fn start_hostile(
    client: &Client,
    ns: &str,
    seed: u64,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<HostileTally> {
    let hole = black_hole().await;
    let v = |n: u32| long_label(&format!("{n}.0.0-"), 63);
    harness::apply(client, ns, &hostile_max(hole, &v(1))).await;
    harness::apply(client, ns, &hostile_min("hostile-min0", 0, hole, "1.0.0")).await;
    harness::apply(client, ns, &hostile_min("hostile-min1", 1, hole, "1.0.0")).await;
    for i in 0..3 {
        harness::apply(client, ns, &deployer(&format!("hostile-edit{i}"), "1.0.0", 2, &[(50, 1)])).await;
    }
    let (client, ns) = (client.clone(), ns.to_string());
    tokio::spawn(async move {
        use std::sync::atomic::Ordering;
        let api: Api<Deployer> = Api::namespaced(client.clone(), &ns);
        let mut tally = HostileTally::default();
        let mut rng = Rng(seed ^ 0x0005_eed0_f405_711e);
        let names = [
            "hostile-max",
            "hostile-min0",
            "hostile-min1",
            "hostile-edit0",
            "hostile-edit1",
            "hostile-edit2",
        ];
        let mut round = 0u32;
        while !stop.load(Ordering::SeqCst) {
            round += 1;
            // Every few edits, a new version for all (the bounded one into its 100 steps).
            if round % 8 == 1 {
                let n = round / 8 + 2;
                let max = hostile_max(hole, &v(n));
                let mut ok = api
                    .patch("hostile-max", &PatchParams::apply("hostile").force(), &Patch::Apply(&max))
                    .await
                    .is_ok();
                for name in &names[1..] {
                    let body = json!({"spec": {"deployment": {"version": format!("{n}.0.0")}}});
                    ok &= api.patch(name, &PatchParams::default(), &Patch::Merge(&body)).await.is_ok();
                }
                if ok {
                    tally.version_bumps += 1;
                } else {
                    tally.api_errors += 1;
                }
            }
            // The bounded Deployer only loses its status now and then (any other edit halts it
            // with StatusUnreadable, and it should get to its gates); the others get everything.
            let (name, (kind, body)) = if round % 10 == 5 {
                ("hostile-max", status_edit(2))
            } else {
                (names[rng.range(1, names.len() as u64) as usize], status_edit(rng.next()))
            };
            let entry = tally.edits.entry(kind).or_default();
            match api.patch_status(name, &PatchParams::default(), &Patch::Merge(&body)).await {
                Ok(_) => entry.0 += 1,
                Err(kube::Error::Api(e)) if e.code == 422 || e.code == 400 => entry.1 += 1,
                Err(_) => tally.api_errors += 1,
            }
            tokio::time::sleep(Duration::from_millis(rng.range(150, 600))).await;
        }
        tally
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn rollouts_survive_kills_hand_edits_and_control_plane_restarts() {
    let p = Params::from_env();
    println!("chaos: {p:?} (set CHAOS_SEED={} to replay the same choices)", p.seed);
    let mut rng = Rng(p.seed);
    let started = Instant::now();
    let client = support::client().await;
    if p.control_plane {
        let dir = std::env::var("CLUSTER_DIR").unwrap_or_else(|_| ".cluster".into());
        let ours = std::path::Path::new(&dir).join("kubeconfig");
        let ours = std::fs::canonicalize(&ours).unwrap_or(ours);
        let used = support::kubeconfig_path();
        assert_eq!(
            std::fs::canonicalize(&used).unwrap_or(used),
            ours,
            "CHAOS_CONTROL_PLANE=1 restarts the local control plane of CLUSTER_DIR: KUBECONFIG must be its kubeconfig"
        );
    }
    harness::install_crd(&client).await;
    let ns = support::namespace(&client, "chaos").await;
    let mut op = Operator::start(&ns);
    let api: Api<Deployer> = Api::namespaced(client.clone(), &ns);

    // First deploys (no chaos yet: there is no stable to protect).
    let steps = [(25, p.sleep), (50, p.sleep)];
    stream::iter(0..p.rollouts)
        .for_each_concurrent(16, |i| {
            let client = client.clone();
            let ns = ns.clone();
            async move {
                harness::apply(&client, &ns, &deployer(&format!("app{i}"), "1.0.0", R, &steps)).await;
            }
        })
        .await;
    let mut expect: Vec<Expect> = (0..p.rollouts)
        .map(|_| Expect {
            stable: "1.0.0".into(),
            target: "1.0.0".into(),
            fails: false,
            deadline: p.deadline,
        })
        .collect();
    assert_settled(&client, &ns, &expect).await;

    let checker = Arc::new(Mutex::new(Checker { settle: secs(2), ..Checker::default() }));
    let watch = start_checker(&client, &ns, checker.clone());
    support::wait_until("the checker to see every Deployer at R", secs(30), || {
        let n = checker.lock().expect("lock").armed.len();
        std::future::ready(n == p.rollouts)
    })
    .await;

    let stop_hostile = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hostile = start_hostile(&client, &ns, p.seed, stop_hostile.clone()).await;

    let mut tally = Tally::default();
    let mut control_plane =
        if p.control_plane { vec![Disturbance::RestartApiserver, Disturbance::RestartEtcd] } else { vec![] };
    let per_wave = if p.rollouts > 10 { 3 } else { 1 };
    while tally.waves < 2 || tally.kills < p.kills || !control_plane.is_empty() {
        tally.waves += 1;
        let wave = tally.waves;
        for (i, e) in expect.iter_mut().enumerate() {
            let (version, fails) = target(i, wave);
            e.target = version;
            e.fails = fails;
        }
        roll_out(&client, &ns, &expect).await;
        // This wave's disturbances, each after a random number of kills.
        let mut plan: Vec<(u32, Disturbance)> = Vec::new();
        for kind in [Disturbance::ScaleDown, Disturbance::Delete, Disturbance::ScaleUp] {
            for _ in 0..per_wave {
                plan.push((rng.range(1, 8) as u32, kind));
            }
        }
        if let Some(kind) = control_plane.pop() {
            plan.push((rng.range(2, 6) as u32, kind));
        }
        plan.sort_by_key(|(at, _)| *at);
        let mut kills_in_wave = 0;
        loop {
            if started.elapsed() > p.timeout {
                let left = pending(&api, &expect).await.unwrap_or_default();
                let left: Vec<_> = left.iter().map(|i| (format!("app{i}"), expect[*i].clone())).collect();
                panic!("chaos run did not finish in {:?}: {tally:?}\nnot settled: {left:?}", p.timeout);
            }
            tokio::time::sleep(Duration::from_millis(rng.range(200, 2500))).await;
            assert!(op.is_running(), "the operator exited by itself (see {})", op.log_path().display());
            op.restart();
            tally.kills += 1;
            kills_in_wave += 1;
            while plan.first().is_some_and(|(at, _)| *at <= kills_in_wave) {
                let (_, kind) = plan.remove(0);
                match kind {
                    Disturbance::RestartApiserver | Disturbance::RestartEtcd => {
                        let component = if kind == Disturbance::RestartEtcd { "etcd" } else { "apiserver" };
                        let took = restart_component(component).await;
                        println!("chaos: restarted {component} in {took:?}");
                        tally.restarts.push((component.to_string(), took));
                        // An operator that starts while the apiserver is away exits at once (by
                        // design); one that was running must have ridden the outage out.
                        if !op.is_running() {
                            tally.exited_during_outage += 1;
                            op.restart();
                        }
                    }
                    _ => {
                        if let Some(done) = hand_edit(&client, &ns, kind, &mut rng, &checker).await {
                            println!("chaos: {done}");
                            tally.hand.push(done);
                        }
                    }
                }
            }
            if plan.is_empty() && pending(&api, &expect).await.is_some_and(|p| p.is_empty()) {
                break;
            }
        }
        for e in expect.iter_mut() {
            if !e.fails {
                e.stable = e.target.clone();
            }
        }
        assert_settled(&client, &ns, &expect).await;
        println!("chaos: wave {wave} settled after {kills_in_wave} kills ({:?} so far)", started.elapsed());
        // The rollouts made to fail were rolled back for the right reason (from the status: the
        // Event may be lost to a kill between the status write and its publication, by design).
        for (i, _) in expect.iter().enumerate().filter(|(_, e)| e.fails) {
            let st = harness::status(&client, &ns, &format!("app{i}")).await.expect("status");
            let progressing = st.condition("Progressing").map(|c| (c.status.clone(), c.reason.clone()));
            assert_eq!(
                progressing,
                Some(("False".to_string(), "ProgressDeadlineExceeded".to_string())),
                "app{i}: {st:?}"
            );
        }
    }
    // Let the checker see the settled world, then stop it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    watch.abort();
    stop_hostile.store(true, std::sync::atomic::Ordering::SeqCst);
    let hostile = hostile.await.expect("the hostile tenant's task");
    // The hostile tenant's Deployers are still reconciled after its edits: a last look, alive.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(op.is_running(), "the operator exited by itself (see {})", op.log_path().display());
    let log = std::fs::read_to_string(op.log_path()).unwrap_or_default();
    assert!(!log.contains("panicked"), "the operator panicked (see {})", op.log_path().display());
    let hostile_phases: Vec<(String, String)> = api
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|d| d.name_any().starts_with("hostile"))
        .map(|d| {
            let name = d.name_any();
            let st = d.status.unwrap_or_default();
            let why = st.condition("Ready").map(|c| c.reason.clone()).unwrap_or_default();
            (name, format!("{:?}/{why}", st.phase))
        })
        .collect();

    let events = step_events(&client, &ns).await;
    let mut steps_announced = 0;
    for i in 0..p.rollouts {
        let name = format!("app{i}");
        let evs = events.get(&name).cloned().unwrap_or_default();
        // Steps announced (by StepStarted, StepCompleted or both), each counted once.
        let announced = harness::step_announcements(&evs);
        let mut steps: Vec<_> = announced.keys().map(|a| (a.run, &a.rollout, &a.step)).collect();
        steps.dedup();
        steps_announced += steps.len();
        // Counts Event series: a step published twice by one process is one object of count 2.
        harness::assert_no_step_repeated(&evs);
    }

    // Events are best effort (one may be lost to a kill), but most must be there for the check above
    // to mean anything: every rollout of every wave announces at least one step.
    assert!(
        steps_announced >= p.rollouts * tally.waves as usize / 2,
        "only {steps_announced} steps announced for {} rollouts",
        p.rollouts * tally.waves as usize
    );
    let mut c = std::mem::take(&mut *checker.lock().expect("lock"));
    c.finish();
    let mean_recovery = if c.recoveries.is_empty() {
        Duration::ZERO
    } else {
        c.recoveries.iter().sum::<Duration>() / c.recoveries.len() as u32
    };
    println!(
        "chaos summary: {} rollouts × {} waves, R = {R}; {} kill -9 of the operator; control plane restarts {:?}; \
         {} hand edits; operator exits during an outage {}; {steps_announced} steps announced, none twice; checker: {} updates, {} re-lists, min ready {:?} (R = {R}), \
         min ready after a hand edit {:?}, {} recoveries (mean {:?}); duration {:?}; seed {}; \
         hostile tenant: status edits (accepted, refused by the API server) {:?}, {} version bumps, {} API errors, \
         its Deployers at the end {:?}; operator exits not caused by the test: 0",
        p.rollouts,
        tally.waves,
        tally.kills,
        tally.restarts,
        tally.hand.len(),
        tally.exited_during_outage,
        c.updates,
        c.relists,
        c.min_ready,
        c.min_ready_excused,
        c.recoveries.len(),
        mean_recovery,
        started.elapsed(),
        p.seed,
        hostile.edits,
        hostile.version_bumps,
        hostile.api_errors,
        hostile_phases,
    );
    assert!(c.violations.is_empty(), "ready replicas fell below R:\n{}", c.violations.join("\n"));
    assert!(c.excused.values().all(|e| !e.dropped), "not recovered after a hand edit: {:?}", c.excused);
    assert!(tally.kills >= p.kills, "only {} kills", tally.kills);
    assert!(c.min_ready.is_some_and(|m| m >= R), "the checker saw nothing: {:?}", c.min_ready);
    support::delete_namespace(&client, &ns).await;
}

/// The checker itself (no cluster): a drop below R is a violation once the Deployer has had R
/// ready; after a hand edit a drop is excused until the Deployer is back at R, and not after.
#[test]
fn the_checker_flags_a_drop_below_r_and_excuses_a_hand_edit_only_until_recovery() {
    let dep = |name: &str, ready: i32| -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {DEPLOYER_LABEL: "app"}},
            "spec": {"replicas": ready, "selector": {}, "template": {}},
            "status": {"readyReplicas": ready},
        }))
        .expect("a Deployment")
    };
    let mut c = Checker::default();
    c.apply(&dep("app-1", 2), false); // first deploy, not yet at R: no floor yet
    assert!(c.violations.is_empty() && c.armed.is_empty());
    c.apply(&dep("app-1", R), false);
    c.apply(&dep("app-2", 1), false);
    c.apply(&dep("app-1", R - 1), false); // canary first, then stable down: still R in all
    assert!(c.violations.is_empty(), "{:?}", c.violations);
    assert_eq!(c.min_ready, Some(R));

    c.excuse("app");
    c.apply(&dep("app-1", 0), false); // deleted or scaled down by hand
    c.apply(&dep("app-1", 0), true);
    assert!(c.violations.is_empty(), "a hand edit is excused: {:?}", c.violations);
    c.apply(&dep("app-1", R - 1), false); // repaired
    assert!(c.excused.is_empty() && c.recoveries.len() == 1);

    c.apply(&dep("app-2", 0), false); // the operator's own doing: a violation
    assert_eq!(c.violations.len(), 1, "{:?}", c.violations);
    assert_eq!(c.min_ready, Some(R - 1));

    // With a settle time, a moment back at R does not end the excuse (a stale status can show
    // one right after a hand scale-down); holding there for the settle time does.
    let mut c = Checker { settle: secs(2), ..Checker::default() };
    c.apply(&dep("app-1", R), false);
    c.excuse("app");
    c.apply(&dep("app-1", 0), false);
    c.apply(&dep("app-1", R), false); // a stale status, for a moment
    c.apply(&dep("app-1", 0), false); // the truth
    assert!(c.violations.is_empty() && c.recoveries.is_empty(), "{:?}", c.violations);
    c.apply(&dep("app-1", R), false); // repaired
    c.excused.get_mut("app").expect("still excused").back_at = Some(Instant::now() - secs(3));
    c.apply(&dep("app-1", R), false);
    assert!(c.excused.is_empty() && c.recoveries.len() == 1);
    c.apply(&dep("app-1", 1), false); // and from then on the floor applies
    assert_eq!(c.violations.len(), 1, "{:?}", c.violations);
    // A drop after the settle time, with no update in between, is a violation too.
    c.excuse("app");
    c.apply(&dep("app-1", 0), false);
    c.apply(&dep("app-1", R), false);
    c.excused.get_mut("app").expect("excused").back_at = Some(Instant::now() - secs(3));
    c.apply(&dep("app-1", 2), false);
    assert_eq!(c.violations.len(), 2, "{:?}", c.violations);

    // A pod that is still ready but already scaled away does not count.
    let mut shrinking = dep("app-2", 1);
    shrinking.spec.as_mut().expect("spec").replicas = Some(0);
    assert_eq!(kept_ready(&shrinking), 0);
}
