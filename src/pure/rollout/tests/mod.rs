//! Table and property tests of the rollout state machine, against a small simulated cluster.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use proptest::prelude::*;

use super::*;
use crate::{
    api::{AbortReason, Gate, PauseCause, Phase},
    checks,
    fixtures::{seed_spec, step},
};

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
    /// A watch cache of the Deployments lagging behind them: while set, the operator decides on
    /// it, and neither its own writes nor anyone else's show in it.
    cache: Option<BTreeMap<String, Observed>>,
    /// Whether the shell confirms a break on a fresh read (as the controller does).
    confirm: bool,
    /// Answers of calls made and not yet taken in by a reconcile (the controller's mailbox).
    mailbox: Vec<Outcome>,
    /// The truth of the pods: how many of each version's are ready. A Deployment's status
    /// (`Observed::available`) follows it only when the Deployment controller catches up
    /// ([`World::settle`]), and can say more than there is after a scale-down.
    ready: BTreeMap<String, i32>,
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
            cache: None,
            confirm: true,
            ready: BTreeMap::new(),
            mailbox: Vec::new(),
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
        self.decide_with(&self.mailbox)
    }

    fn decide_with(&self, outcomes: &[Outcome]) -> Decision {
        self.decide_on(&self.seen(), outcomes)
    }

    /// What the operator observes: the lagging cache if there is one, else the Deployments.
    fn seen(&self) -> Vec<Observed> {
        self.cache.as_ref().unwrap_or(&self.deployments).values().cloned().collect()
    }

    fn decide_on(&self, observed: &[Observed], outcomes: &[Outcome]) -> Decision {
        decide(&Input {
            name: "nginx",
            namespace: "default",
            generation: self.generation,
            spec: &self.spec,
            status: self.status.as_ref(),
            observed,
            conflicts: &[],
            refused: None,
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

    /// One reconcile, as the controller makes it: decide, persist the status, then make the
    /// moves, each on what was observed of its Deployment.
    fn reconcile(&mut self) -> Decision {
        let (d, basis) = self.decision();
        self.persist(&d);
        self.carry_out(&d, &basis, usize::MAX);
        d
    }

    /// The decision of one reconcile, on the answers that came back since the last one, and the
    /// Deployments it was made on (what each write's precondition holds). A break is confirmed on
    /// a fresh read: decided again on the Deployments as they are and their ready pods.
    fn decision(&mut self) -> (Decision, Vec<Observed>) {
        let seen = self.seen();
        let d = self.decide_on(&seen, &self.mailbox);
        if self.confirm && d.breaks(&seen) {
            return (
                self.decide_on(&self.fresh(), &self.mailbox),
                self.deployments.values().cloned().collect(),
            );
        }
        (d, seen)
    }

    /// What the shell's fresh read sees: the Deployments as they are, each counting no more
    /// available pods than are ready.
    fn fresh(&self) -> Vec<Observed> {
        let ready = |v: &str| self.ready.get(v).copied().unwrap_or(0);
        self.deployments
            .values()
            .map(|o| Observed { available: o.available.min(ready(&o.version)), ..o.clone() })
            .collect()
    }

    /// Makes at most `limit` of the decision's writes — resizes first, deletes after — as the API
    /// server would: each on what `basis` observed of its Deployment. A write whose Deployment
    /// changed since (or went, or exists when it was to be created) is refused, and so is
    /// everything after it (the shell decides again). Returns the writes made.
    fn carry_out(&mut self, d: &Decision, basis: &[Observed], limit: usize) -> usize {
        let unchanged = |w: &World, v: &str| basis.iter().find(|o| o.version == v) == w.deployments.get(v);
        let mut made = 0;
        for s in &d.apply {
            let fenced = if s.create {
                self.deployments.contains_key(&s.version)
            } else {
                !unchanged(self, &s.version)
            };
            if made >= limit || fenced || (!s.create && !self.deployments.contains_key(&s.version)) {
                return made;
            }
            made += 1;
            let image = self.spec.deployment.image_for(&s.version);
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
            dep.image = Some(image);
            // The ReplicaSet removes pods at once (unready ones first); the Deployment's status
            // says so only once the Deployment controller catches up.
            let ready = self.ready.entry(s.version.clone()).or_insert(0);
            *ready = (*ready).min(s.replicas);
        }
        for v in &d.delete {
            if made >= limit || !unchanged(self, v) {
                return made;
            }
            made += 1;
            self.deployments.remove(v);
            self.ready.remove(v);
        }
        made
    }

    /// Writes the decision's status and publishes its Events (they follow the status write);
    /// then the calls it marked in flight go out, and their answers wait for the next reconcile.
    fn persist(&mut self, d: &Decision) {
        self.status = Some(d.status.clone());
        self.notes.extend(d.notes.iter().cloned());
        let calls = d.calls.clone();
        self.mailbox = self.answer(&calls);
    }

    /// The Deployment controller and kubelets catch up: pods of healthy versions become ready,
    /// and every Deployment's status says how many are.
    fn settle(&mut self) {
        for d in self.deployments.values_mut() {
            let ready = self.ready.entry(d.version.clone()).or_insert(0);
            if !self.broken.contains(&d.version) {
                *ready = d.replicas;
            }
            *ready = (*ready).min(d.replicas);
            d.synced = true;
            d.available = *ready;
        }
    }

    /// A person scales a Deployment by hand: the ReplicaSet follows, its status does not yet.
    fn scale_by_hand(&mut self, version: &str, replicas: i32) {
        if let Some(d) = self.deployments.get_mut(version) {
            d.replicas = replicas;
            d.synced = false;
            let ready = self.ready.entry(version.to_string()).or_insert(0);
            *ready = (*ready).min(replicas);
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
        self.notes.iter().map(|n| n.reason.as_str()).collect()
    }
}

/// Pods serving, in truth: Σ ready pods over the Deployments.
fn available(w: &World) -> i32 {
    w.deployments.keys().map(|v| w.ready.get(v).copied().unwrap_or(0)).sum()
}

fn scales(d: &Decision) -> Vec<(&str, i32)> {
    d.apply.iter().map(|s| (s.version.as_str(), s.replicas)).collect()
}

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

mod controls;
mod gates;
mod props;
mod regressions;
mod table;
mod totality;
