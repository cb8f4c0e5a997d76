//! Table and property tests of the rollout state machine, against a small simulated cluster.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use proptest::prelude::*;

use super::*;
use crate::fixtures::{seed_spec, step};

/// A simulated namespace: the owned Deployments by version, and the Deployer's status.
#[derive(Clone, Debug)]
struct World {
    spec: DeployerSpec,
    generation: i64,
    status: Option<DeployerStatus>,
    deployments: BTreeMap<String, Observed>,
    /// Versions whose pods never become available.
    broken: BTreeSet<String>,
    now: DateTime<Utc>,
    notes: Vec<Note>,
    settings: Settings,
    /// The paused annotation.
    paused: bool,
    /// The control request annotations.
    requests: Controls,
    /// What each check answers (by check name), run by run; the last answer repeats.
    answers: BTreeMap<String, Vec<checks::Answer>>,
    /// Every check call made, in order.
    calls: Vec<Call>,
}

impl World {
    fn new(spec: DeployerSpec) -> Self {
        World {
            spec,
            generation: 1,
            status: None,
            deployments: BTreeMap::new(),
            broken: BTreeSet::new(),
            now: Utc.with_ymd_and_hms(2026, 11, 27, 12, 0, 0).single().expect("valid time"),
            notes: Vec::new(),
            settings: Settings::default(),
            paused: false,
            requests: Controls::default(),
            answers: BTreeMap::new(),
            calls: Vec::new(),
        }
    }

    /// The seed sample, already settled at 1.7.7 with 10 replicas.
    fn seed_done() -> Self {
        let mut w = World::new(seed_spec());
        w.converge();
        assert_eq!(w.phase(), Phase::Done);
        w
    }

    fn decide(&self) -> Decision {
        self.decide_with(&[])
    }

    fn decide_with(&self, outcomes: &[Outcome]) -> Decision {
        let observed: Vec<Observed> = self.deployments.values().cloned().collect();
        decide(&Input {
            name: "nginx",
            namespace: "default",
            generation: self.generation,
            spec: &self.spec,
            status: self.status.as_ref(),
            observed: &observed,
            now: self.now,
            settings: &self.settings,
            paused: self.paused,
            requests: &self.requests,
            outcomes,
        })
    }

    /// Answers calls as the checks' scripts say (a check without a script passes).
    fn answer(&mut self, calls: &[Call]) -> Vec<Outcome> {
        self.calls.extend(calls.iter().cloned());
        calls
            .iter()
            .map(|c| {
                let script = self.answers.get(&c.check);
                let run = usize::try_from(c.key.run).unwrap_or(0);
                let fallback = match c.request {
                    checks::Request::Query { .. } => checks::Answer::Value(0.0),
                    checks::Request::Post { .. } => checks::Answer::Status(200),
                };
                let answer = script.and_then(|s| s.get(run).or(s.last()).cloned()).unwrap_or(fallback);
                Outcome { check: c.check.clone(), key: c.key.clone(), answer }
            })
            .collect()
    }

    /// One reconcile: decide, then carry the decision out as the controller would.
    fn reconcile(&mut self) -> Decision {
        let mut d = self.decide();
        let mut outcomes = Vec::new();
        for _ in 0..3 {
            if d.calls.is_empty() {
                break;
            }
            let calls = d.calls.clone();
            outcomes.extend(self.answer(&calls));
            d = self.decide_with(&outcomes);
        }
        for s in &d.apply {
            let image = crate::resources::image(&self.spec.deployment, &s.version);
            let dep = self.deployments.entry(s.version.clone()).or_insert_with(|| Observed {
                version: s.version.clone(),
                replicas: 0,
                available: 0,
                synced: false,
                image: None,
                deleting: false,
            });
            if dep.replicas != s.replicas || dep.image.as_deref() != Some(image.as_str()) {
                dep.synced = false;
            }
            dep.replicas = s.replicas;
            dep.available = dep.available.min(s.replicas);
            dep.image = Some(image);
        }
        for v in &d.delete {
            self.deployments.remove(v);
        }
        self.status = Some(d.status.clone());
        self.notes.extend(d.notes.iter().cloned());
        d
    }

    /// The Deployment controller and kubelets catch up: pods of healthy versions become available.
    fn settle(&mut self) {
        for d in self.deployments.values_mut() {
            d.synced = true;
            if !self.broken.contains(&d.version) {
                d.available = d.replicas;
            }
        }
    }

    /// Reconciles, settles and lets requeued time pass until nothing is left to do.
    fn converge(&mut self) {
        for _ in 0..200 {
            let d = self.reconcile();
            self.settle();
            let again = self.decide();
            let quiet = again.apply.is_empty()
                && again.delete.is_empty()
                && self.status.as_ref() == Some(&again.status);
            if quiet {
                match again.requeue {
                    None => return,
                    Some(t) => self.advance(t.as_secs_f64().max(0.001)),
                }
            }
            let _ = d;
        }
        panic!("did not converge: {:?}", self.status);
    }

    /// Like [`World::converge`], but stops as soon as `done` holds after a reconcile.
    fn converge_until(&mut self, done: impl Fn(&World) -> bool) {
        for _ in 0..200 {
            self.reconcile();
            if done(self) {
                return;
            }
            self.settle();
            let again = self.decide();
            if again.apply.is_empty()
                && again.delete.is_empty()
                && self.status.as_ref() == Some(&again.status)
            {
                match again.requeue {
                    None => panic!("settled before the condition held: {:?}", self.status),
                    Some(t) => self.advance(t.as_secs_f64().max(0.001)),
                }
            }
        }
        panic!("the condition never held: {:?}", self.status);
    }

    fn advance(&mut self, secs: f64) {
        self.now += TimeDelta::milliseconds((secs * 1000.0) as i64);
    }

    fn edit(&mut self, f: impl FnOnce(&mut DeployerSpec)) {
        f(&mut self.spec);
        self.generation += 1;
    }

    fn phase(&self) -> Phase {
        self.status.as_ref().and_then(|s| s.phase).expect("a phase")
    }

    fn replicas(&self, version: &str) -> Option<i32> {
        self.deployments.get(version).map(|d| d.replicas)
    }

    fn pair(&self) -> (Option<i32>, Option<i32>) {
        (self.replicas("1.7.8"), self.replicas("1.7.7"))
    }

    fn reasons(&self) -> Vec<&'static str> {
        self.notes.iter().map(|n| n.reason).collect()
    }
}

fn scales(d: &Decision) -> Vec<(&str, i32)> {
    d.apply.iter().map(|s| (s.version.as_str(), s.replicas)).collect()
}

#[test]
fn first_deploy_creates_the_version_at_full_size_then_is_done() {
    let mut w = World::new(seed_spec());
    let d = w.reconcile();
    assert_eq!(d.apply, vec![Scale { version: "1.7.7".into(), replicas: 10, create: true }]);
    assert_eq!(w.phase(), Phase::Scaling);
    assert_eq!(w.reasons(), ["Deploying"]);
    // Nothing more happens until the pods are available.
    let again = w.reconcile();
    assert!(again.apply.is_empty() && again.delete.is_empty());
    w.converge();
    let s = w.status.as_ref().expect("status");
    assert_eq!(
        (s.phase, s.stable_version.as_deref(), s.canary_version.as_deref()),
        (Some(Phase::Done), Some("1.7.7"), None)
    );
    assert_eq!(s.condition("Ready").map(|c| c.status.as_str()), Some("True"));
    assert_eq!(s.step.as_deref(), Some("1/1"));
    assert_eq!(w.deployments.len(), 1);
}

#[test]
fn seed_rollout_moves_1_9_3_7_6_4_10_0_with_the_sleeps_between() {
    let mut w = World::seed_done();
    let start = w.now;
    w.edit(|s| s.deployment.version = "1.7.8".into());

    // Init: the canary is created at 0 while the stable stays at 10.
    let d = w.reconcile();
    assert_eq!(scales(&d), [("1.7.8", 0)]);
    assert_eq!(w.phase(), Phase::Init);
    w.settle();

    let mut seen = Vec::new();
    let mut waits = Vec::new();
    for _ in 0..100 {
        let d = w.reconcile();
        w.settle();
        let s = w.status.clone().expect("status");
        if s.phase == Some(Phase::Waiting) && seen.last() != Some(&w.pair()) {
            seen.push(w.pair());
            waits.push((
                s.progress.clone().expect("progress"),
                (s.wait_until.expect("until") - w.now).num_seconds(),
            ));
        }
        if s.phase == Some(Phase::Done) {
            break;
        }
        if d.apply.is_empty()
            && d.delete.is_empty()
            && let Some(t) = d.requeue
        {
            w.advance(t.as_secs_f64());
        }
    }
    assert_eq!(
        seen,
        [(Some(1), Some(9)), (Some(3), Some(7)), (Some(6), Some(4)), (Some(10), Some(0))],
        "canary/stable pairs at each step"
    );
    assert_eq!(waits.iter().map(|w| w.1).collect::<Vec<_>>(), [60, 30, 30, 0]);
    assert_eq!(waits[2].0.step, "no. 3");
    assert_eq!(waits[2].0.percentage, "60% has been deployed");
    assert_eq!(waits[2].0.wait, "30s till next step");
    assert_eq!(w.phase(), Phase::Done);
    assert_eq!(w.deployments.keys().collect::<Vec<_>>(), ["1.7.8"]);
    assert_eq!(w.replicas("1.7.8"), Some(10));
    let s = w.status.as_ref().expect("status");
    assert_eq!(s.stable_version.as_deref(), Some("1.7.8"));
    assert_eq!(s.progress.as_ref().map(|p| p.step.as_str()), Some("no. 4"));
    // The sleeps ran in full: 60 + 30 + 30 seconds.
    assert!(w.now - start >= TimeDelta::seconds(120), "rollout took {}", w.now - start);
    assert!(w.now - start < TimeDelta::seconds(122), "rollout took {}", w.now - start);
    // One Event per transition, none repeated.
    let reasons = w.reasons();
    let starts = reasons.iter().filter(|r| **r == "StepStarted").count();
    let completes = reasons.iter().filter(|r| **r == "StepCompleted").count();
    assert_eq!((starts, completes), (4, 4), "{reasons:?}");
    assert_eq!(reasons.iter().filter(|r| **r == "RolloutComplete").count(), 2, "first deploy + rollout");
}

#[test]
fn a_step_raises_the_canary_first_and_lowers_the_stable_only_once_it_is_available() {
    let mut w = World::seed_done();
    w.edit(|s| s.deployment.version = "1.7.8".into());
    w.reconcile();
    w.settle();
    let d = w.reconcile();
    assert_eq!(scales(&d), [("1.7.8", 1)], "canary up, stable untouched");
    assert_eq!(w.phase(), Phase::Scaling);
    // Not available yet: nothing else moves, however often we look.
    for _ in 0..3 {
        let d = w.reconcile();
        assert!(d.apply.is_empty() && d.delete.is_empty());
    }
    assert_eq!(w.replicas("1.7.7"), Some(10));
    w.settle();
    let d = w.reconcile();
    assert_eq!(scales(&d), [("1.7.7", 9)]);
    assert_eq!(w.phase(), Phase::Waiting);
}

#[test]
fn reconciling_a_settled_state_again_changes_nothing() {
    let mut w = World::seed_done();
    let d = w.decide();
    assert!(d.apply.is_empty() && d.delete.is_empty() && d.notes.is_empty());
    assert_eq!(Some(&d.status), w.status.as_ref());
    assert_eq!(d.requeue, None);

    // Mid-wait too: same inputs, same decision, no write.
    w.edit(|s| s.deployment.version = "1.7.8".into());
    for _ in 0..3 {
        w.reconcile();
        w.settle();
    }
    assert_eq!(w.phase(), Phase::Waiting);
    let d = w.decide();
    assert!(d.apply.is_empty() && d.delete.is_empty() && d.notes.is_empty());
    assert_eq!(Some(&d.status), w.status.as_ref());
}

#[test]
fn a_wait_ends_at_its_persisted_deadline_not_earlier_not_later() {
    let mut w = seed_waiting();
    let until = w.status.as_ref().and_then(|s| s.wait_until).expect("waiting");
    // A "restarted" operator knows nothing but the status: one second early, it still waits.
    w.now = until - TimeDelta::seconds(1);
    let d = w.reconcile();
    assert_eq!(w.phase(), Phase::Waiting);
    assert_eq!(d.requeue, Some(Duration::from_secs(1)));
    assert_eq!(w.status.as_ref().and_then(|s| s.wait_until), Some(until), "deadline not reset");
    assert_eq!(
        w.status.as_ref().and_then(|s| s.progress.as_ref()).map(|p| p.wait.as_str()),
        Some("1s till next step")
    );
    w.now = until;
    let d = w.reconcile();
    assert_eq!(w.phase(), Phase::Scaling);
    assert_eq!(scales(&d), [("1.7.8", 3)]);
}

#[test]
fn the_wait_text_counts_down_and_requeues_for_refresh() {
    let mut w = seed_waiting();
    let wait = |w: &World| w.status.as_ref().and_then(|s| s.progress.as_ref()).map(|p| p.wait.clone());
    assert_eq!(wait(&w).as_deref(), Some("60s till next step"));
    let d = w.decide();
    assert_eq!(d.requeue, Some(Duration::from_secs(10)));
    w.advance(10.0);
    w.reconcile();
    assert_eq!(wait(&w).as_deref(), Some("50s till next step"));
}

#[test]
fn replica_pairs_for_r_20_are_2_18_6_14_12_8_20_0() {
    let mut spec = seed_spec();
    spec.deployment.replicas = 20;
    let mut w = World::new(spec);
    w.converge();
    w.edit(|s| s.deployment.version = "1.7.8".into());
    let mut seen = Vec::new();
    for _ in 0..200 {
        w.reconcile();
        w.settle();
        if w.phase() == Phase::Waiting && seen.last() != Some(&w.pair()) {
            seen.push(w.pair());
        }
        if w.phase() == Phase::Done {
            break;
        }
        if let Some(t) = w.decide().requeue {
            w.advance(t.as_secs_f64());
        }
    }
    assert_eq!(seen, [(Some(2), Some(18)), (Some(6), Some(14)), (Some(12), Some(8)), (Some(20), Some(0))]);
}

#[test]
fn a_canary_that_never_becomes_available_is_rolled_back_after_the_deadline() {
    let mut w = World::seed_done();
    w.broken.insert("1.7.8".into());
    w.edit(|s| s.deployment.version = "1.7.8".into());
    w.reconcile();
    w.settle();
    w.reconcile();
    assert_eq!(w.phase(), Phase::Scaling);
    let since = w.status.as_ref().and_then(|s| s.step_started_at).expect("since");
    assert_eq!(w.decide().requeue, Some(Duration::from_secs(600)));
    w.now = since + TimeDelta::seconds(599);
    w.reconcile();
    assert_eq!(w.phase(), Phase::Scaling);
    w.now = since + TimeDelta::seconds(600);
    w.reconcile();
    assert_eq!(w.phase(), Phase::Aborted);
    assert!(
        w.notes.iter().any(|n| n.severity == Severity::Warning && n.reason == "ProgressDeadlineExceeded")
    );
    w.converge();
    assert_eq!(w.phase(), Phase::Aborted);
    assert_eq!(w.deployments.keys().collect::<Vec<_>>(), ["1.7.7"]);
    assert_eq!(w.replicas("1.7.7"), Some(10));
    let s = w.status.as_ref().expect("status");
    assert_eq!(s.condition("Progressing").map(|c| c.reason.as_str()), Some("ProgressDeadlineExceeded"));
    assert_eq!(s.condition("Ready").map(|c| c.status.as_str()), Some("False"));
    // It stays aborted: the failed version is not retried by itself.
    w.advance(3600.0);
    w.converge();
    assert_eq!(w.phase(), Phase::Aborted);
    // A new version starts a new rollout.
    w.edit(|s| s.deployment.version = "1.7.9".into());
    w.converge();
    assert_eq!(w.phase(), Phase::Done);
    assert_eq!(w.deployments.keys().collect::<Vec<_>>(), ["1.7.9"]);
}

#[test]
fn an_abort_restores_the_stable_before_removing_the_canary() {
    let mut w = World::seed_done();
    w.edit(|s| s.deployment.version = "1.7.8".into());
    // Step 1 completes (1/9); step 2's canary pods never become available.
    for _ in 0..3 {
        w.reconcile();
        w.settle();
    }
    w.broken.insert("1.7.8".into());
    w.advance(60.0);
    w.reconcile(); // Scaling step 2: canary to 3
    w.advance(600.0);
    let d = w.reconcile();
    assert_eq!(w.phase(), Phase::Aborted);
    assert_eq!(scales(&d), [("1.7.7", 10)]);
    assert!(d.delete.is_empty(), "canary kept until the stable is back");
    w.settle();
    let d = w.reconcile();
    assert_eq!(d.delete, ["1.7.8"]);
}

#[test]
fn a_third_version_mid_rollout_restarts_from_step_1_against_the_same_stable() {
    let mut w = seed_waiting();
    w.advance(60.0);
    w.reconcile();
    w.settle();
    w.reconcile();
    assert_eq!(w.pair(), (Some(3), Some(7)));
    w.edit(|s| s.deployment.version = "1.7.9".into());
    let d = w.reconcile();
    assert_eq!(w.phase(), Phase::Init);
    assert_eq!(scales(&d), [("1.7.7", 10), ("1.7.9", 0)], "stable restored first, new canary created");
    assert!(d.delete.is_empty(), "abandoned canary kept until the stable is back");
    w.settle();
    let d = w.reconcile();
    assert_eq!(d.delete, ["1.7.8"]);
    let s = w.status.as_ref().expect("status");
    assert_eq!((s.stable_version.as_deref(), s.canary_version.as_deref()), (Some("1.7.7"), Some("1.7.9")));
    assert!(w.reasons().contains(&"Superseded"));
    w.converge();
    assert_eq!(w.deployments.keys().collect::<Vec<_>>(), ["1.7.9"]);
}

#[test]
fn setting_the_version_back_to_the_stable_is_a_fast_rollback() {
    let mut w = seed_waiting();
    w.advance(60.0);
    w.reconcile();
    w.settle();
    w.reconcile();
    assert_eq!(w.pair(), (Some(3), Some(7)));
    w.edit(|s| s.deployment.version = "1.7.7".into());
    let d = w.reconcile();
    assert_eq!(w.phase(), Phase::Finalizing);
    assert_eq!(scales(&d), [("1.7.7", 10)]);
    assert!(d.delete.is_empty());
    w.settle();
    let d = w.reconcile();
    assert_eq!(d.delete, ["1.7.8"]);
    assert_eq!(w.phase(), Phase::Done);
    assert!(w.reasons().contains(&"RolledBack"));
    assert_eq!(w.status.as_ref().and_then(|s| s.stable_version.clone()).as_deref(), Some("1.7.7"));
}

#[test]
fn a_replicas_change_mid_rollout_recomputes_the_current_step() {
    let mut w = World::seed_done();
    w.edit(|s| s.deployment.version = "1.7.8".into());
    for _ in 0..4 {
        w.reconcile();
        w.settle();
    }
    assert_eq!((w.phase(), w.pair()), (Phase::Waiting, (Some(1), Some(9))));
    let until = w.status.as_ref().and_then(|s| s.wait_until);
    w.edit(|s| s.deployment.replicas = 20);
    w.reconcile();
    w.settle();
    w.reconcile();
    assert_eq!((w.phase(), w.pair()), (Phase::Waiting, (Some(2), Some(18))));
    assert_eq!(w.status.as_ref().and_then(|s| s.wait_until), until, "the wait keeps its deadline");
}

#[test]
fn a_steps_change_mid_rollout_restarts_from_step_1() {
    let mut w = seed_waiting();
    w.advance(60.0);
    w.reconcile();
    w.settle();
    w.reconcile();
    assert_eq!(w.status.as_ref().and_then(|s| s.current_step), Some(2));
    w.edit(|s| s.steps = vec![step(20, 5), step(50, 5)]);
    let d = w.reconcile();
    assert_eq!(w.status.as_ref().and_then(|s| s.current_step), Some(1));
    assert_eq!(w.status.as_ref().and_then(|s| s.step.clone()).as_deref(), Some("1/3"));
    // 20% of 10 = 2: the stable goes back up to 8 first, then the canary down to 2.
    assert_eq!(scales(&d), [("1.7.7", 8)]);
    w.settle();
    let d = w.reconcile();
    assert_eq!(scales(&d), [("1.7.8", 2)]);
    assert!(w.reasons().contains(&"StepsChanged"));
}

#[test]
fn drift_is_repaired_by_the_next_reconcile() {
    let mut w = seed_waiting();
    assert_eq!((w.phase(), w.pair()), (Phase::Waiting, (Some(1), Some(9))));
    // Someone scales the stable down by hand.
    let stable = w.deployments.get_mut("1.7.7").expect("stable");
    stable.replicas = 2;
    stable.available = 2;
    assert_eq!(scales(&w.reconcile()), [("1.7.7", 9)]);
    // Someone deletes the canary by hand.
    w.settle();
    w.deployments.remove("1.7.8");
    let d = w.reconcile();
    assert_eq!(d.apply, vec![Scale { version: "1.7.8".into(), replicas: 1, create: true }]);
    assert_eq!(w.phase(), Phase::Waiting, "the wait goes on");
    // And in Done, a deleted stable comes back at full size.
    w.converge();
    w.deployments.clear();
    let d = w.reconcile();
    assert_eq!(d.apply, vec![Scale { version: "1.7.8".into(), replicas: 10, create: true }]);
}

#[test]
fn a_namespace_mismatch_is_an_invalid_spec_that_touches_nothing() {
    let mut w = World::seed_done();
    w.edit(|s| {
        s.deployment.namespace = Some("elsewhere".into());
        s.deployment.version = "1.7.8".into();
    });
    let d = w.reconcile();
    assert!(d.apply.is_empty() && d.delete.is_empty());
    let s = w.status.as_ref().expect("status");
    assert_eq!(s.phase, Some(Phase::Done), "the persisted state is kept");
    let ready = s.condition("Ready").expect("Ready");
    assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "InvalidSpec"));
    assert!(ready.message.contains("spec.deployment.namespace"));
    assert_eq!(d.notes.len(), 1);
    assert_eq!(d.notes[0].severity, Severity::Warning);
    // The Warning is emitted once, not on every reconcile.
    assert!(w.reconcile().notes.is_empty());
    // Fixing the spec resumes.
    w.edit(|s| s.deployment.namespace = None);
    w.converge();
    assert_eq!(w.deployments.keys().collect::<Vec<_>>(), ["1.7.8"]);
}

#[test]
fn a_lost_status_adopts_the_owned_deployments_without_disruption() {
    let mut w = World::seed_done();
    w.status = None;
    let d = w.reconcile();
    assert!(d.apply.is_empty() && d.delete.is_empty());
    assert_eq!(w.phase(), Phase::Done);
    assert_eq!(w.status.as_ref().and_then(|s| s.stable_version.clone()).as_deref(), Some("1.7.7"));
}

#[test]
fn zero_replicas_roll_out_without_pods() {
    let mut spec = seed_spec();
    spec.deployment.replicas = 0;
    let mut w = World::new(spec);
    w.converge();
    w.edit(|s| s.deployment.version = "1.7.8".into());
    w.converge();
    assert_eq!(w.phase(), Phase::Done);
    assert_eq!(w.deployments.keys().collect::<Vec<_>>(), ["1.7.8"]);
    assert_eq!(w.replicas("1.7.8"), Some(0));
}

#[test]
fn steps_below_100_get_an_implied_final_step() {
    assert_eq!(normalized_steps(&[step(10, 5), step(50, 5)]), [step(10, 5), step(50, 5), step(100, 0)]);
    assert_eq!(normalized_steps(&[step(10, 5), step(100, 7)]), [step(10, 5), step(100, 7)]);
}

// ---------------------------------------------------------------------------------------------
// Property tests: arbitrary sequences of spec edits, observations and clock advances.

#[derive(Clone, Debug)]
enum Op {
    Reconcile,
    Settle,
    Advance(u16),
    SetVersion(usize),
    SetReplicas(i32),
    SetSteps(usize),
    Break(usize),
    ScaleByHand(usize, i32),
    DeleteByHand(usize),
    TogglePause,
    /// 0: promote, 1: promote-full, 2: abort, 3: retry.
    Request(usize),
    /// What check `CHECKS[.0]` answers from now on: `answers()[.1]`.
    Answer(usize, usize),
}

/// The checks of a gated rollout in the property test.
const CHECKS: [&str; 3] = ["metric/errors", "webhook/before", "webhook/undo"];

fn answers() -> Vec<checks::Answer> {
    use checks::Answer;
    vec![
        Answer::Value(0.0),
        Answer::Value(1.0),
        Answer::NoData("no data".into()),
        Answer::Status(200),
        Answer::Status(500),
        Answer::Status(404),
        Answer::Unreachable("timed out".into()),
    ]
}

/// A metric measured during every wait, a webhook before every step and one on rollback.
fn gated() -> crate::api::Analysis {
    use crate::api::{Analysis, HookPoint, MetricCheck, PrometheusSource, WebhookCheck};
    let hook = |name: &str, gate| WebhookCheck {
        name: name.into(),
        gate,
        url: "http://hooks".into(),
        timeout_seconds: 1,
        retries: 1,
        metadata: BTreeMap::new(),
    };
    Analysis {
        prometheus: Some(PrometheusSource { address: "http://prom".into() }),
        metrics: vec![MetricCheck {
            name: "errors".into(),
            query: "errors".into(),
            min: None,
            max: Some(0.5),
            interval_seconds: 5,
            count: 2,
            failure_limit: 0,
        }],
        webhooks: vec![hook("before", HookPoint::BeforeStep), hook("undo", HookPoint::Rollback)],
    }
}

const VERSIONS: [&str; 3] = ["1.0.0", "2.0.0", "3.0.0"];

fn plans() -> Vec<Vec<Step>> {
    vec![
        vec![step(10, 60), step(30, 30), step(60, 30), step(100, 0)],
        vec![step(50, 5)],
        vec![step(1, 0), step(99, 1)],
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => Just(Op::Reconcile),
        4 => Just(Op::Settle),
        3 => (0u16..700).prop_map(Op::Advance),
        1 => (0..VERSIONS.len()).prop_map(Op::SetVersion),
        1 => (0i32..25).prop_map(Op::SetReplicas),
        1 => (0..3usize).prop_map(Op::SetSteps),
        1 => (0..VERSIONS.len()).prop_map(Op::Break),
        1 => ((0..VERSIONS.len()), 0i32..30).prop_map(|(v, n)| Op::ScaleByHand(v, n)),
        1 => (0..VERSIONS.len()).prop_map(Op::DeleteByHand),
        1 => Just(Op::TogglePause),
        1 => (0..4usize).prop_map(Op::Request),
        1 => ((0..CHECKS.len()), (0..answers().len())).prop_map(|(c, a)| Op::Answer(c, a)),
    ]
}

/// (stable, canary): which rollout a status describes.
type RolloutId = (Option<String>, Option<String>);

fn available(w: &World) -> i32 {
    w.deployments.values().map(|d| d.available.min(d.replicas)).sum()
}

fn total(w: &World) -> i32 {
    w.deployments.values().map(|d| d.replicas).sum()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn rollouts_keep_their_invariants_under_arbitrary_edits_and_observations(
        replicas in 0i32..25,
        plan in 0..3usize,
        with_checks in any::<bool>(),
        ops in prop::collection::vec(op(), 1..60),
    ) {
        let mut spec = seed_spec();
        spec.deployment.version = VERSIONS[0].into();
        spec.deployment.replicas = replicas;
        spec.steps = plans()[plan].clone();
        spec.analysis = with_checks.then(gated);
        let mut w = World::new(spec);
        // (rollout identity, step) of the last reconcile, for the monotonicity check.
        let mut last_step: Option<(RolloutId, i64, i32)> = None;
        // Whether someone resized a Deployment by hand.
        let mut tampered = false;
        let mut last_replicas = replicas;
        let mut requests = 0;

        for op in ops {
            match op {
                Op::Reconcile => {
                    let before = w.clone();
                    let d = w.reconcile();
                    let r = w.spec.deployment.replicas;
                    let had_stable = before.status.as_ref().and_then(|s| s.stable_version.as_ref()).is_some();
                    // Availability never falls below R by the operator's own hand (and if it was
                    // already below, the operator takes none away).
                    if had_stable {
                        prop_assert!(
                            available(&w) >= available(&before).min(r),
                            "availability {} -> {} (R = {r}) by {:?}", available(&before), available(&w), d
                        );
                    }
                    // Each Deployment moves only towards what the phase asks of it, never past it.
                    let stable = d.status.stable_version.clone();
                    let canary = d.status.canary_version.clone();
                    for (v, after) in &w.deployments {
                        let was = before.deployments.get(v).map_or(0, |o| o.replicas);
                        let want = if Some(v) == stable.as_ref() {
                            d.status.stable_replicas
                        } else if Some(v) == canary.as_ref() {
                            d.status.canary_replicas
                        } else {
                            None
                        };
                        match want {
                            Some(t) => prop_assert!(
                                after.replicas >= was.min(t) && after.replicas <= was.max(t),
                                "{v}: {was} -> {} overshoots target {t}", after.replicas
                            ),
                            None => prop_assert_eq!(after.replicas, was, "{} resized outside the goal", v),
                        }
                    }
                    // Left alone by people, total replicas stay within R plus the canary's surge
                    // (the current canary's target, or an abandoned canary's size).
                    if !tampered {
                        let surge_before = before.deployments.values()
                            .filter(|o| Some(&o.version) != stable.as_ref()).map(|o| o.replicas).max().unwrap_or(0);
                        let canary_target = d.status.canary_replicas.unwrap_or(0);
                        // While a change of R is carried out, the old R may still stand.
                        let r_max = r.max(last_replicas);
                        let bound = (r_max + canary_target.max(surge_before)).max(total(&before));
                        prop_assert!(total(&w) <= bound, "total {} > bound {bound}: {:?}", total(&w), d);
                    }
                    // Within one rollout the step never goes back.
                    let s = &d.status;
                    let id = (s.stable_version.clone(), s.canary_version.clone());
                    let step = s.current_step.unwrap_or(0);
                    if let Some((last_id, last_generation, last)) = &last_step
                        && *last_id == id
                        && *last_generation == w.generation
                        && s.phase != Some(Phase::Init)
                    {
                        prop_assert!(step >= *last, "step went back {last} -> {step}: {:?}", s);
                    }
                    last_step = Some((id, w.generation, step));
                    last_replicas = r;
                    // Nothing is both applied and deleted.
                    for v in &d.delete {
                        prop_assert!(!d.apply.iter().any(|a| &a.version == v));
                    }
                }
                Op::Settle => w.settle(),
                Op::Advance(s) => w.advance(f64::from(s)),
                Op::SetVersion(i) => w.edit(|s| s.deployment.version = VERSIONS[i].into()),
                Op::SetReplicas(n) => w.edit(|s| s.deployment.replicas = n),
                Op::SetSteps(i) => w.edit(|s| s.steps = plans()[i].clone()),
                Op::Break(i) => { w.broken.insert(VERSIONS[i].into()); }
                Op::ScaleByHand(i, n) => {
                    tampered = true;
                    if let Some(d) = w.deployments.get_mut(VERSIONS[i]) {
                        d.replicas = n;
                        d.available = d.available.min(n);
                        d.synced = false;
                    }
                }
                Op::DeleteByHand(i) => { w.deployments.remove(VERSIONS[i]); }
                Op::TogglePause => w.paused = !w.paused,
                Op::Answer(c, a) => { w.answers.insert(CHECKS[c].into(), vec![answers()[a].clone()]); }
                Op::Request(kind) => {
                    requests += 1;
                    let token = Some(format!("r{requests}"));
                    match kind {
                        0 => w.requests.promote = token,
                        1 => w.requests.promote_full = token,
                        2 => w.requests.abort = token,
                        _ => {
                            w.requests.retry = token;
                            // A retry restarts the rollout from step 1 on purpose.
                            last_step = None;
                        }
                    }
                }
            }
        }

        // However it got here, left alone the rollout ends with exactly one Deployment at R:
        // the target version when Done, the stable when Aborted (once unpaused and, at a pause
        // step, promoted). The one exception is a stable
        // whose own pods are unavailable: the operator then keeps the pods that still serve
        // rather than delete them, and the rollout waits (documented in docs/design.md).
        w.paused = false;
        w.converge();
        for i in 0..10 {
            if w.phase() != Phase::Paused {
                break;
            }
            w.requests.promote = Some(format!("final{i}"));
            w.converge();
        }
        let s = w.status.clone().expect("status");
        let r = w.spec.deployment.replicas;
        let target = w.spec.deployment.version.clone();
        let stable_broken = s.stable_version.as_ref().is_some_and(|v| w.broken.contains(v));
        let versions: Vec<String> = w.deployments.keys().cloned().collect();
        match s.phase {
            Some(Phase::Done) => {
                prop_assert_eq!(s.stable_version.as_deref(), Some(target.as_str()));
                if !stable_broken {
                    prop_assert_eq!(&versions, &vec![target.clone()]);
                }
                prop_assert_eq!(w.replicas(&target), Some(r), "{:?} {:?}", s, w.deployments);
            }
            Some(Phase::Aborted) => {
                let stable = s.stable_version.clone().expect("an aborted rollout has a stable");
                if !stable_broken {
                    prop_assert_eq!(&versions, &vec![stable.clone()]);
                }
                prop_assert_eq!(w.replicas(&stable), Some(r), "{:?} {:?}", s, w.deployments);
            }
            Some(Phase::Scaling) if s.stable_version.is_none() => {
                // A first deploy of a broken version waits (there is nothing to roll back to).
                prop_assert!(w.broken.contains(&target), "{:?}", s);
                prop_assert_eq!(&versions, &vec![target.clone()]);
            }
            other => prop_assert!(stable_broken, "unsettled phase {:?}: {:?} {:?}", other, s, w.deployments),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Controls: pause, resume, promote, promote-full, abort, retry, pause steps.

/// The seed, rolling out 1.7.8 and waiting at step 1 (1/9) with 60 s to go.
fn seed_waiting() -> World {
    let mut w = World::seed_done();
    w.edit(|s| s.deployment.version = "1.7.8".into());
    for _ in 0..3 {
        w.reconcile();
        w.settle();
    }
    assert_eq!((w.phase(), w.pair()), (Phase::Waiting, (Some(1), Some(9))));
    w
}

fn request(w: &mut World, f: impl FnOnce(&mut Controls, String)) {
    let token = format!("t{}", w.now.timestamp_millis());
    f(&mut w.requests, token);
}

#[test]
fn a_pause_freezes_a_wait_and_a_resume_gives_back_the_time_it_had_left() {
    let mut w = seed_waiting();
    w.advance(20.0);
    w.paused = true;
    w.reconcile();
    let s = w.status.clone().expect("status");
    assert_eq!(s.phase, Some(Phase::Paused));
    assert_eq!(s.paused_wait_millis, Some(40_000));
    assert_eq!(s.progress.as_ref().map(|p| p.wait.as_str()), Some("paused, 40s till next step once resumed"));
    assert_eq!(
        s.condition("Progressing").map(|c| (c.status.as_str(), c.reason.as_str())),
        Some(("Unknown", "Paused"))
    );
    assert_eq!(w.decide().requeue, None, "no timer while paused");
    // An hour later (or after any number of restarts) it is still paused, at the same step.
    w.advance(3600.0);
    let d = w.reconcile();
    assert!(d.apply.is_empty() && d.notes.is_empty());
    assert_eq!((w.phase(), w.pair()), (Phase::Paused, (Some(1), Some(9))));
    // Resumed: the wait runs for the 40 s it had left.
    w.paused = false;
    w.reconcile();
    let s = w.status.clone().expect("status");
    assert_eq!(s.phase, Some(Phase::Waiting));
    assert_eq!(s.wait_until, Some(w.now + TimeDelta::seconds(40)));
    assert!(w.reasons().contains(&"Paused") && w.reasons().contains(&"Resumed"));
}

#[test]
fn a_pause_during_scaling_holds_the_step_until_resumed() {
    let mut w = World::seed_done();
    w.edit(|s| s.deployment.version = "1.7.8".into());
    w.reconcile();
    w.settle();
    w.reconcile(); // Scaling step 1: canary to 1
    w.paused = true;
    w.reconcile();
    assert_eq!(w.phase(), Phase::Paused);
    w.settle();
    for _ in 0..3 {
        w.advance(1000.0);
        w.reconcile();
    }
    assert_eq!(w.phase(), Phase::Paused, "no progress deadline and no next step while paused");
    // The paused step's own replicas are held (its scaling completes); nothing moves beyond it.
    assert_eq!(w.pair(), (Some(1), Some(9)));
    w.paused = false;
    w.reconcile();
    assert_eq!((w.phase(), w.pair()), (Phase::Waiting, (Some(1), Some(9))));
}

#[test]
fn a_pause_step_waits_until_promoted() {
    let mut w = World::seed_done();
    w.edit(|s| {
        s.deployment.version = "1.7.8".into();
        s.steps = vec![Step { percent: 50, sleep: 0, pause: true, ..Step::default() }];
    });
    for _ in 0..3 {
        w.reconcile();
        w.settle();
    }
    let s = w.status.clone().expect("status");
    assert_eq!((s.phase, s.paused_by.as_deref()), (Some(Phase::Paused), Some("Step")));
    assert_eq!(s.progress.as_ref().map(|p| p.wait.as_str()), Some("paused until promoted"));
    assert_eq!(w.pair(), (Some(5), Some(5)));
    w.advance(10_000.0);
    w.reconcile();
    assert_eq!(w.phase(), Phase::Paused);
    // The paused annotation coming and going does not end a pause step: only promote does.
    w.paused = true;
    w.reconcile();
    w.paused = false;
    w.reconcile();
    assert_eq!(w.phase(), Phase::Paused);
    request(&mut w, |r, t| r.promote = Some(t));
    w.converge();
    assert_eq!(w.phase(), Phase::Done);
    assert_eq!(w.deployments.keys().collect::<Vec<_>>(), ["1.7.8"]);
}

#[test]
fn promote_ends_the_wait_and_goes_to_the_next_step_once_per_request() {
    let mut w = seed_waiting();
    request(&mut w, |r, t| r.promote = Some(t));
    let d = w.reconcile();
    assert_eq!(scales(&d), [("1.7.8", 3)], "step 2: the canary goes up first");
    assert_eq!(w.status.as_ref().and_then(|s| s.current_step), Some(2));
    assert!(w.reasons().contains(&"PromoteRequested"));
    // The same request is not carried out twice.
    w.settle();
    w.reconcile();
    w.settle();
    w.reconcile();
    assert_eq!((w.phase(), w.status.as_ref().and_then(|s| s.current_step)), (Phase::Waiting, Some(2)));
}

#[test]
fn promote_during_scaling_moves_on_to_the_next_step() {
    let mut w = World::seed_done();
    w.edit(|s| s.deployment.version = "1.7.8".into());
    w.reconcile();
    w.settle();
    w.reconcile();
    assert_eq!(w.phase(), Phase::Scaling);
    request(&mut w, |r, t| r.promote = Some(t));
    let d = w.reconcile();
    assert_eq!(w.status.as_ref().and_then(|s| s.current_step), Some(2));
    assert_eq!(scales(&d), [("1.7.8", 3)]);
}

#[test]
fn promote_full_goes_to_100_percent_surge_first() {
    let mut w = seed_waiting();
    request(&mut w, |r, t| r.promote_full = Some(t));
    let d = w.reconcile();
    assert_eq!(scales(&d), [("1.7.8", 10)], "the canary goes to 10 before the stable comes down");
    assert_eq!(w.status.as_ref().and_then(|s| s.step.clone()).as_deref(), Some("4/4"));
    w.settle();
    let d = w.reconcile();
    assert_eq!(scales(&d), [("1.7.7", 0)]);
    w.converge();
    assert_eq!(w.deployments.keys().collect::<Vec<_>>(), ["1.7.8"]);
}

#[test]
fn abort_rolls_back_and_retry_restarts_from_step_1() {
    let mut w = seed_waiting();
    w.advance(60.0);
    w.reconcile();
    w.settle();
    w.reconcile();
    assert_eq!(w.pair(), (Some(3), Some(7)));
    request(&mut w, |r, t| r.abort = Some(t));
    let d = w.reconcile();
    let s = w.status.clone().expect("status");
    assert_eq!((s.phase, s.abort_reason.as_deref()), (Some(Phase::Aborted), Some("AbortRequested")));
    assert_eq!(s.condition("Progressing").map(|c| c.reason.as_str()), Some("AbortRequested"));
    assert_eq!(scales(&d), [("1.7.7", 10)], "the stable comes back first");
    assert!(d.delete.is_empty());
    w.converge();
    assert_eq!(w.deployments.keys().collect::<Vec<_>>(), ["1.7.7"]);
    assert!(w.notes.iter().any(|n| n.reason == "AbortRequested" && n.severity == Severity::Warning));

    request(&mut w, |r, t| r.retry = Some(t));
    w.reconcile();
    assert_eq!(w.phase(), Phase::Init);
    w.settle();
    w.reconcile();
    assert_eq!(w.status.as_ref().and_then(|s| s.current_step), Some(1));
    w.converge();
    assert_eq!(w.deployments.keys().collect::<Vec<_>>(), ["1.7.8"]);
}

#[test]
fn a_finished_rollout_ignores_promote_and_abort_and_records_them() {
    let mut w = World::seed_done();
    request(&mut w, |r, t| {
        r.promote = Some(t.clone());
        r.abort = Some(t);
    });
    let d = w.reconcile();
    assert!(d.apply.is_empty() && d.delete.is_empty() && d.notes.is_empty());
    assert_eq!(w.phase(), Phase::Done);
    assert_eq!(w.status.as_ref().map(|s| s.handled.clone()), Some(w.requests.clone()));
    // A later rollout does not replay those old requests.
    w.edit(|s| s.deployment.version = "1.7.8".into());
    w.converge();
    assert_eq!(w.phase(), Phase::Done);
    assert_eq!(w.deployments.keys().collect::<Vec<_>>(), ["1.7.8"]);
}

#[test]
fn abort_takes_precedence_over_promote() {
    let mut w = seed_waiting();
    request(&mut w, |r, t| {
        r.promote_full = Some(t.clone());
        r.promote = Some(t.clone());
        r.abort = Some(t);
    });
    w.reconcile();
    assert_eq!(w.phase(), Phase::Aborted);
}

/// Step gates: metric and webhook checks in the state machine.
mod gates;
