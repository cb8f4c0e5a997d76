//! The rollout state machine: the functional core of the operator.
//!
//! [`decide`] takes what the operator knows — the Deployer's spec, its persisted status, what it
//! observes of the Deployments it owns, and the time — and returns what to do: which Deployments
//! to create or resize, which to delete, the next status, the Events to emit and when to look
//! again. It has no client, no clock and no I/O, so every behaviour is a table test away.
//!
//! The state persisted in the status is the only memory. One call advances the machine as far as
//! the observations allow and stops where it must wait for the world (pods becoming available,
//! a sleep running out). Calling it again with the same inputs gives the same decision, which
//! makes every reconcile idempotent and a restart at any instant harmless.
//!
//! ```text
//!  new version ─► Init ─► Scaling{1} ─► Waiting{1, until} ─► Scaling{2} ─► … ─► Finalizing ─► Done
//!                            │                                    │
//!                            └── progress deadline exceeded ──────┴──► Aborted (stable back at R)
//! ```
//!
//! It is total: any spec the API server admits and any status — hand-edited, truncated, written
//! by another version — gives a decision, never a panic. What it cannot interpret halts that one
//! Deployer with a condition and a Warning Event, and nothing moves.
//!
//! The rooms, in the order a decision passes through them:
//! - [`validate`]: what the schema cannot check of the spec;
//! - [`state`]: the phases as an enum, and the one codec between it and the status;
//! - [`retarget`]: which rollout the spec asks for;
//! - [`control`]: pause, resume and the one-shot requests;
//! - [`advance`]: the phases, as far as the world allows, with [`gates`] for the checks;
//! - [`moves`]: the make-before-break replica moves;
//! - [`report`]: Events, conditions and the status texts; [`plan`]: the steps.

mod advance;
pub mod control;
mod gates;
pub mod moves;
pub mod plan;
mod reason;
pub mod report;
mod retarget;
pub mod state;
mod validate;

use std::time::Duration;

use chrono::{DateTime, Utc};

pub use self::{
    control::Request,
    report::{Note, Reason, Severity},
    state::{Memory, State},
};
use crate::{
    api::{Controls, DeployerSpec, DeployerStatus, Step},
    checks::{Call, Outcome, later},
};

/// The longest the core asks to sleep before looking again: a long wait is looked at hourly
/// (costing nothing when nothing changed), and no timer is ever asked beyond what a runtime holds.
pub const MAX_REQUEUE: Duration = Duration::from_secs(3600);

/// What the operator observes of one Deployment it owns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    /// The version it runs (its version label).
    pub version: String,
    /// Its `spec.replicas`.
    pub replicas: i32,
    /// Its `status.availableReplicas`.
    pub available: i32,
    /// Whether its status describes its current spec (`observedGeneration >= generation`).
    pub synced: bool,
    /// The image of its first container.
    pub image: Option<String>,
    /// Whether it is being deleted.
    pub deleting: bool,
}

/// Everything [`decide`] looks at.
#[derive(Clone, Debug)]
pub struct Input<'a> {
    /// The Deployer's name (for messages).
    pub name: &'a str,
    /// The Deployer's namespace.
    pub namespace: &'a str,
    /// The Deployer's `metadata.generation`.
    pub generation: i64,
    /// The Deployer's spec.
    pub spec: &'a DeployerSpec,
    /// The Deployer's status as last persisted.
    pub status: Option<&'a DeployerStatus>,
    /// The Deployments the Deployer owns, one per version (a version observed twice counts
    /// once: its first).
    pub observed: &'a [Observed],
    /// Names of Deployments the rollout needs that exist and belong to someone else.
    pub conflicts: &'a [String],
    /// What the API server said when it refused a write of this decision (a quota, an admission
    /// webhook): the decision then says so in its conditions.
    pub refused: Option<&'a str>,
    /// The time of this decision.
    pub now: DateTime<Utc>,
    /// Tunables that are not part of the API.
    pub settings: &'a Settings,
    /// Whether the `deploy.example.com/paused` annotation asks for a pause.
    pub paused: bool,
    /// The control request annotations' values (promote, promote-full, abort, retry).
    pub requests: &'a Controls,
    /// Answers to the check calls of an earlier [`Decision`] of this reconcile.
    pub outcomes: &'a [Outcome],
}

/// Tunables of the core (by default: the wait's text written once, no fallback Prometheus).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// How often the remaining-time text of a running wait is refreshed in the status (`None`:
    /// written once when the wait starts).
    pub wait_refresh: Option<Duration>,
    /// The Prometheus for metric checks whose Deployer names none.
    pub prometheus: Option<String>,
}

/// A Deployment the operator wants to exist at a given size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scale {
    /// The version (the Deployment is `<name>-<version>`).
    pub version: String,
    /// Its `spec.replicas`.
    pub replicas: i32,
    /// Whether it must be created (it was not observed).
    pub create: bool,
}

/// What [`decide`] asks the controller to do: apply `apply`, delete `delete`, persist `status`
/// (if it changed), publish `notes`, look again after `requeue`. If `calls` is not empty, the
/// controller makes them and decides again with their answers.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// Deployments to create or resize (to the spec's template).
    pub apply: Vec<Scale>,
    /// Versions whose Deployments to delete.
    pub delete: Vec<String>,
    /// The status to persist.
    pub status: DeployerStatus,
    /// Events to publish.
    pub notes: Vec<Note>,
    /// When to reconcile again even if nothing changes (`None`: on the next change only).
    pub requeue: Option<Duration>,
    /// Check calls due now (a PromQL query, a webhook).
    pub calls: Vec<Call>,
    /// What each version should run in the state the machine is in — the one the status
    /// records, or implies (a step's scaling after a wait that is over).
    pub goal: Vec<(String, i32)>,
    /// The deadline of a wait this decision ended at its deadline (not early, by a promote or an
    /// abort, nor held by its metrics): how late it ended is the operator's step lateness.
    /// Decisions made again before the next step is written say it again.
    pub wait_ended: Option<DateTime<Utc>>,
}

impl Decision {
    /// Whether the decision takes pods away from what `observed` shows: a shrink or a delete. The
    /// shell confirms such a decision on a fresh read of the Deployments before it acts, so that
    /// a watch cache lagging behind a write (ours or a person's) never lets it break what it
    /// believes was made: the availability the budget counts on is read, not remembered.
    pub fn breaks(&self, observed: &[Observed]) -> bool {
        !self.delete.is_empty()
            || self.apply.iter().any(|s| {
                observed.iter().any(|o| o.version == s.version && !o.deleting && s.replicas < o.replicas)
            })
    }
}

/// One decision in the making: the input, the plan the rollout runs, the memory as the stages
/// change it, and the Events they announce.
pub struct Run<'a> {
    input: &'a Input<'a>,
    /// The spec's steps, normalized.
    steps: Vec<Step>,
    /// The steps the rollout runs (a first deploy's single step, or `steps`).
    plan: Vec<Step>,
    mem: Memory,
    notes: Vec<Note>,
    /// The deadline of the wait this decision ended at its deadline.
    wait_ended: Option<DateTime<Utc>>,
}

impl Run<'_> {
    /// When a step whose scaling started at `since` has run out of time.
    fn deadline_of(&self, since: DateTime<Utc>) -> DateTime<Utc> {
        later(since, self.input.spec.progress_deadline_seconds)
    }
}

/// Computes the next action of a Deployer's rollout. Pure; see the module documentation.
pub fn decide(input: &Input) -> Decision {
    let mut seen = std::collections::HashSet::new();
    if !input.observed.iter().all(|o| seen.insert(o.version.as_str())) {
        let mut seen = std::collections::HashSet::new();
        let unique: Vec<Observed> =
            input.observed.iter().filter(|o| seen.insert(o.version.clone())).cloned().collect();
        return decide(&Input { observed: &unique, ..input.clone() });
    }
    if let Err(why) = validate::spec(input) {
        return halted(input, Reason::InvalidSpec, why);
    }
    if let Some(taken) = input.conflicts.first() {
        let why = format!("Deployment {taken} exists and is not owned by this Deployer; rename or delete it");
        return halted(input, Reason::NameConflict, why);
    }
    let steps = plan::normalized_steps(&input.spec.steps);
    let mut notes = Vec::new();
    let mem = match state::read(input.status) {
        Ok(Some(mem)) => mem,
        Ok(None) => {
            let (mem, adopted) =
                state::adopt(input.observed, &input.spec.deployment.version, plan::fingerprint(&steps));
            if adopted {
                notes.push(Note::warning(Reason::StatusLost, lost_status(&mem)));
            }
            mem
        }
        Err(why) => return halted(input, Reason::StatusUnreadable, unreadable(&why)),
    };
    let mut run = Run { input, steps, plan: Vec::new(), mem, notes, wait_ended: None };
    retarget::follow_spec(&mut run);
    control::carry_out(&mut run);
    let moves = advance::advance(&mut run);
    let (calls, due) = gates::due(&mut run);
    let requeue = requeue(&run, due);
    let status = record(&run);
    let goal = advance::goal(&run);
    if let Some(why) = input.refused {
        // Told once per refusal: the condition already saying it means it was told.
        let told = input
            .status
            .and_then(|s| s.condition("Progressing"))
            .is_some_and(|c| c.reason == "WriteRefused" && c.message == report::clip(why));
        if !told {
            run.notes.push(Note::warning(Reason::WriteRefused, report::clip(why)));
        }
    }
    // Events follow status writes: a decision that writes nothing announces nothing (its
    // transitions were announced when they were written), and one that writes says it in one
    // Event of progress.
    let notes = if input.status == Some(&status) { Vec::new() } else { report::condense(run.notes) };
    let wait_ended = run.wait_ended;
    Decision { apply: moves.apply, delete: moves.delete, status, notes, requeue, calls, goal, wait_ended }
}

/// The status that records the run's memory — or the stored one, unchanged, when it already
/// implies where the machine is (see [`implied`]).
fn record(run: &Run) -> DeployerStatus {
    if run.input.refused.is_none()
        && let Some(stored) = implied(run)
    {
        return stored.clone();
    }
    let mem = &run.mem;
    let goal = advance::goal(run);
    let want =
        |v: &Option<String>| v.as_ref().and_then(|v| goal.iter().find(|(g, _)| g == v)).map(|(_, r)| *r);
    let mut status = state::encode(mem);
    status.observed_generation = Some(run.input.generation);
    status.stable_replicas = want(&mem.stable);
    status.canary_replicas = want(&mem.canary);
    report::describe(run, &mut status);
    if let Some(why) = run.input.refused {
        // Against the condition as persisted, not the one `describe` just set: a refusal told
        // again keeps its lastTransitionTime, so the status does not change (and is not written)
        // each time the write is retried.
        let persisted = run.input.status.and_then(|s| s.condition("Progressing")).cloned();
        if let (Some(before), Some(now)) =
            (persisted, status.conditions.iter_mut().find(|c| c.type_ == "Progressing"))
        {
            *now = before;
        }
        report::set_condition(
            &mut status.conditions,
            run.input,
            "Progressing",
            "False",
            "WriteRefused",
            &report::clip(why),
        );
    }
    status
}

/// The stored status, if it implies the run's state: a wait that is over implies the next step's
/// scaling, started at the wait's deadline. A step is then written once, when it is in place
/// (with its wait's deadline), not also when it starts: the scaling between is what the deadline
/// already says, and a restart derives it again from the same status.
fn implied<'a>(run: &Run<'a>) -> Option<&'a DeployerStatus> {
    let stored = run.input.status?;
    let old = state::read(Some(stored)).ok()??;
    let State::Waiting { step, until } = old.state else { return None };
    let mem = &run.mem;
    let same = mem.state == (State::Scaling { step: step + 1, since: until })
        && stored.observed_generation == Some(run.input.generation)
        && (&mem.stable, &mem.canary, &mem.plan, &mem.handled, &mem.checks)
            == (&old.stable, &old.canary, &old.plan, &old.handled, &old.checks);
    same.then_some(stored)
}

/// When to look again without a change: at a wait's end (or its next remaining-time refresh), at
/// a step's progress deadline, or when a check falls due — never later than [`MAX_REQUEUE`].
fn requeue(run: &Run, due: Option<Duration>) -> Option<Duration> {
    let now = run.input.now;
    let until = |t: DateTime<Utc>| (t - now).to_std().unwrap_or(Duration::ZERO);
    let own = match run.mem.state {
        // Past its end, a wait holds only for its metrics: their next measurement wakes it.
        State::Waiting { until: end, .. } if end <= now => None,
        State::Waiting { until: end, .. } => Some(match run.input.settings.wait_refresh {
            Some(tick) if !tick.is_zero() => until(end).min(tick),
            _ => until(end),
        }),
        State::Scaling { since, .. } if now < run.deadline_of(since) => Some(until(run.deadline_of(since))),
        _ => None,
    };
    let next = match (own, due) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    next.map(|d| d.min(MAX_REQUEUE))
}

/// The Warning that a Deployer without a status had Deployments, and what the core made of them.
fn lost_status(mem: &Memory) -> String {
    let stable = mem.stable.as_deref().unwrap_or("?");
    match &mem.canary {
        Some(canary) => format!(
            "status was empty while {canary} ran beside {stable}: rolling {canary} out again from step 1 over {stable}"
        ),
        None => format!("status was empty: adopted the running {stable} as the stable version"),
    }
}

/// The message of an unreadable status: what is wrong, and the way out.
fn unreadable(why: &str) -> String {
    format!(
        "cannot interpret the status ({why}); nothing is moved until it is fixed, or removed \
         (kubectl patch deployer NAME --subresource=status --type=merge -p '{{\"status\":null}}') \
         for the operator to adopt the running Deployments again"
    )
}

/// The decision when the operator cannot act (an invalid spec, a status it cannot interpret, a
/// name taken by someone else): nothing moves; `Ready` and `Progressing` say why, with a Warning
/// Event the first time. A name conflict is looked at again every 30 s (it clears with no change
/// to the Deployer); the others when the Deployer changes.
pub fn halted(input: &Input, reason: Reason, message: String) -> Decision {
    let message = report::clip(&message);
    let mut status = input.status.cloned().unwrap_or_default();
    let already =
        status.condition("Ready").is_some_and(|c| c.reason == reason.as_str() && c.message == message);
    report::set_condition(&mut status.conditions, input, "Ready", "False", reason.as_str(), &message);
    report::set_condition(&mut status.conditions, input, "Progressing", "False", reason.as_str(), &message);
    status.observed_generation = Some(input.generation);
    let notes = if already { Vec::new() } else { vec![Note::warning(reason, message)] };
    let requeue = (reason == Reason::NameConflict).then_some(Duration::from_secs(30));
    Decision {
        apply: Vec::new(),
        delete: Vec::new(),
        status,
        notes,
        requeue,
        calls: Vec::new(),
        goal: Vec::new(),
        wait_ended: None,
    }
}

#[cfg(test)]
mod tests;
