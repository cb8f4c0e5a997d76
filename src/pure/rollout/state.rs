//! Where a rollout is: the phases as an enum carrying their data, the rollout's memory, and the one
//! codec between them and the persisted [`DeployerStatus`].
//!
//! [`read`] is the only place a status is interpreted — by the core, the metrics and the kubectl
//! plugin alike. It never guesses: a status this operator cannot interpret (a hand edit, another
//! version's values, a field missing that its phase needs, a step beyond its plan) is an error
//! that names the field, and the core halts that one Deployer on it instead of acting.

use chrono::{DateTime, TimeDelta, Utc};

use super::{Observed, plan};
use crate::api::{AbortReason, CheckStatus, Controls, DeployerStatus, Gate, MAX_SECONDS, PauseCause, Phase};

/// Where a rollout is. Each variant carries exactly the data it needs; steps are 0-based.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    /// Hold the stable at full size, create the canary at 0.
    Init,
    /// Move replicas for step `step`; the progress deadline counts from `since`.
    Scaling {
        /// The step.
        step: usize,
        /// When its scaling started.
        since: DateTime<Utc>,
    },
    /// Step `step` is in place; hold it until `until`.
    Waiting {
        /// The step.
        step: usize,
        /// When the wait ends.
        until: DateTime<Utc>,
    },
    /// Make the stable the only version, at full size.
    Finalizing,
    /// One version at full size.
    Done,
    /// Rolled back to the stable during step `step`.
    Aborted {
        /// The step.
        step: usize,
        /// Why.
        reason: AbortReason,
    },
    /// Held at step `step`, with `left` of its wait still to run once resumed (`None`: paused
    /// while scaling, or at a pause step).
    Paused {
        /// The step.
        step: usize,
        /// What was left of the wait.
        left: Option<TimeDelta>,
        /// Who paused it.
        by: PauseCause,
    },
    /// The webhooks of a gate of step `step` run: [`Gate::BeforeStep`] (the previous step's
    /// replicas in place) or [`Gate::AfterStep`] (this step's, its wait over).
    Checking {
        /// The step.
        step: usize,
        /// The gate.
        gate: Gate,
    },
}

impl State {
    /// The step the state is at, if it is at one.
    pub fn step(&self) -> Option<usize> {
        match *self {
            State::Scaling { step, .. }
            | State::Waiting { step, .. }
            | State::Aborted { step, .. }
            | State::Paused { step, .. }
            | State::Checking { step, .. } => Some(step),
            State::Init | State::Finalizing | State::Done => None,
        }
    }

    /// The phase persisted for the state.
    pub fn phase(&self) -> Phase {
        match self {
            State::Init => Phase::Init,
            State::Scaling { .. } => Phase::Scaling,
            State::Waiting { .. } => Phase::Waiting,
            State::Finalizing => Phase::Finalizing,
            State::Done => Phase::Done,
            State::Aborted { .. } => Phase::Aborted,
            State::Paused { .. } => Phase::Paused,
            State::Checking { .. } => Phase::Checking,
        }
    }

    /// Whether the state runs the steps of a rollout (requests such as promote and abort apply).
    pub fn stepping(&self) -> bool {
        matches!(
            self,
            State::Init
                | State::Scaling { .. }
                | State::Waiting { .. }
                | State::Paused { .. }
                | State::Checking { .. }
        )
    }
}

/// The rollout's memory: everything the status persists that the machine reads back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Memory {
    /// The version that served before this rollout; `None` until the first deploy completes.
    pub stable: Option<String>,
    /// The version being rolled out.
    pub canary: Option<String>,
    /// Fingerprint of the steps the rollout runs ([`plan::fingerprint`]).
    pub plan: String,
    /// Where the rollout is.
    pub state: State,
    /// Control requests already carried out.
    pub handled: Controls,
    /// The checks of the current (or last) gate.
    pub checks: Vec<CheckStatus>,
    /// What a check said when it aborted or paused the rollout.
    pub verdict: Option<String>,
}

impl Memory {
    /// Whether a rollout of a new version over a stable one is under way (not yet Done,
    /// Finalizing or Aborted): the requests promote and abort apply to it.
    pub fn in_flight(&self) -> bool {
        self.stable.is_some() && self.canary.is_some() && self.state.stepping()
    }
}

/// The memory persisted in `status`: `Ok(None)` if there is none (no status, or one without a
/// phase — new, or wiped), an error naming the field if it cannot be interpreted.
pub fn read(status: Option<&DeployerStatus>) -> Result<Option<Memory>, String> {
    let Some(status) = status else { return Ok(None) };
    if let Some(why) = &status.unreadable {
        return Err(why.clone());
    }
    let Some(phase) = status.phase else { return Ok(None) };
    let mem = Memory {
        stable: status.stable_version.clone(),
        canary: status.canary_version.clone(),
        plan: status.plan.clone().unwrap_or_default(),
        state: state_of(status, phase)?,
        handled: status.handled.clone(),
        checks: status.checks.clone(),
        verdict: status.check_verdict.clone(),
    };
    consistent(&mem).map(|()| Some(mem))
}

/// The state a status in `phase` records, with the data the phase needs.
fn state_of(status: &DeployerStatus, phase: Phase) -> Result<State, String> {
    let plan = status.plan.as_deref().unwrap_or_default();
    let steps = plan::len(plan);
    let step = || -> Result<usize, String> {
        let n = status.current_step.ok_or("status.currentStep is missing")?;
        match usize::try_from(n) {
            Ok(n) if (1..=steps).contains(&n) => Ok(n - 1),
            _ => Err(format!("status.currentStep {n} is not a step of the plan {plan:?} ({steps} steps)")),
        }
    };
    let missing = |field: &str| format!("status.{field} is missing in phase {phase}");
    Ok(match phase {
        Phase::Init => State::Init,
        Phase::Scaling => State::Scaling {
            step: step()?,
            since: status.step_started_at.ok_or_else(|| missing("stepStartedAt"))?,
        },
        Phase::Waiting => {
            State::Waiting { step: step()?, until: status.wait_until.ok_or_else(|| missing("waitUntil"))? }
        }
        Phase::Finalizing => State::Finalizing,
        Phase::Done => State::Done,
        // The first operator version wrote no abort reason: its only reason was the deadline.
        Phase::Aborted => State::Aborted {
            step: step()?,
            reason: status.abort_reason.unwrap_or(AbortReason::ProgressDeadlineExceeded),
        },
        Phase::Paused => State::Paused {
            step: step()?,
            left: match status.paused_wait_millis {
                None => None,
                Some(ms) if (0..=MAX_SECONDS.saturating_mul(1000)).contains(&ms) => {
                    Some(TimeDelta::milliseconds(ms))
                }
                Some(ms) => {
                    return Err(format!("status.pausedWaitMillis {ms} is not a wait this operator runs"));
                }
            },
            by: status.paused_by.ok_or_else(|| missing("pausedBy"))?,
        },
        Phase::Checking => State::Checking {
            step: step()?,
            gate: match status.gate {
                Some(gate @ (Gate::BeforeStep | Gate::AfterStep)) => gate,
                Some(other) => return Err(format!("status.gate {other} is not a gate of phase Checking")),
                None => return Err(missing("gate")),
            },
        },
    })
}

/// The status fields that persist `mem` — the codec's other half. The display fields (`step`,
/// `weight`, `progress`, conditions, replicas) are filled in by the report.
pub fn encode(mem: &Memory) -> DeployerStatus {
    let state = &mem.state;
    DeployerStatus {
        phase: Some(state.phase()),
        current_step: state.step().map(|s| i32::try_from(s + 1).unwrap_or(i32::MAX)),
        stable_version: mem.stable.clone(),
        canary_version: mem.canary.clone(),
        plan: Some(mem.plan.clone()),
        step_started_at: match *state {
            State::Scaling { since, .. } => Some(since),
            _ => None,
        },
        wait_until: match *state {
            State::Waiting { until, .. } => Some(until),
            _ => None,
        },
        paused_by: match *state {
            State::Paused { by, .. } => Some(by),
            _ => None,
        },
        paused_wait_millis: match *state {
            State::Paused { left: Some(left), .. } => Some(left.num_milliseconds()),
            _ => None,
        },
        abort_reason: match *state {
            State::Aborted { reason, .. } => Some(reason),
            _ => None,
        },
        gate: match *state {
            State::Checking { gate, .. } => Some(gate),
            _ => None,
        },
        check_verdict: match *state {
            State::Aborted { reason: AbortReason::CheckFailed, .. }
            | State::Paused { by: PauseCause::Check, .. } => mem.verdict.clone(),
            _ => None,
        },
        checks: mem.checks.clone(),
        handled: mem.handled.clone(),
        ..DeployerStatus::default()
    }
}

/// What every phase needs of the versions: a stable to return to once the rollout can end or
/// roll back, a canary while steps run. Without them the goal of the phase would be empty — and
/// an empty goal deletes what runs.
fn consistent(mem: &Memory) -> Result<(), String> {
    for (field, version) in [("stableVersion", &mem.stable), ("canaryVersion", &mem.canary)] {
        if let Some(v) = version.as_deref().filter(|v| !is_version(v)) {
            return Err(format!(
                "status.{field} {v:?} is not a version (lowercase letters, digits, '-' and '.')"
            ));
        }
    }
    let phase = mem.state.phase();
    let needs_stable = match mem.state {
        State::Init | State::Finalizing | State::Done | State::Aborted { .. } => true,
        State::Checking { .. } => true,
        // A first deploy scales and waits (and may be held by the paused annotation) with no
        // stable yet.
        State::Scaling { .. } | State::Waiting { .. } | State::Paused { .. } => false,
    };
    if needs_stable && mem.stable.is_none() {
        return Err(format!("status.stableVersion is missing in phase {phase}"));
    }
    if mem.state.stepping() && mem.canary.is_none() {
        return Err(format!("status.canaryVersion is missing in phase {phase}"));
    }
    if mem.stable.is_none() && mem.state.step() != Some(0) && mem.state.stepping() {
        return Err(format!(
            "a first deploy (no status.stableVersion) has one step, not phase {phase} at a later one"
        ));
    }
    Ok(())
}

/// A version as `spec.deployment.version` admits it: dot-separated DNS labels, at most 63
/// characters (it is part of a Deployment name and a label value).
pub fn is_version(v: &str) -> bool {
    let label = |l: &str| {
        !l.is_empty()
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    v.len() <= 63 && v.split('.').all(label)
}

/// Memory for a Deployer whose status holds none: a new one, or one whose status was lost. The
/// Deployments it owns say what was going on, and nothing they hold is given up:
/// - none: nothing was deployed yet;
/// - only the target version: it is the stable (a finished rollout, or a first deploy);
/// - the target beside others: a rollout was under way. The version serving most is the stable
///   and the rollout starts again from step 1 — never later: a lost status must not skip a step
///   or a check;
/// - only other versions: the one serving most is the stable, and the spec's version a new
///   rollout.
///
/// Returns the memory, and whether Deployments were adopted (the caller warns about it).
pub fn adopt(observed: &[Observed], target: &str, plan: String) -> (Memory, bool) {
    // A version label a person made nonsense of names no version to return to.
    let live: Vec<&Observed> = observed.iter().filter(|o| !o.deleting && is_version(&o.version)).collect();
    let serving =
        |o: &&&Observed| (i64::from(o.available.clamp(0, o.replicas.max(0))), i64::from(o.replicas));
    let other = live.iter().filter(|o| o.version != target).max_by_key(serving).map(|o| o.version.clone());
    let has_target = live.iter().any(|o| o.version == target);
    let (stable, canary, state) = match (has_target, other) {
        (true, Some(other)) => (Some(other), Some(target.to_string()), State::Init),
        (true, None) => (Some(target.to_string()), None, State::Done),
        (false, Some(other)) => (Some(other), None, State::Done),
        (false, None) => (None, None, State::Done),
    };
    let plan = if canary.is_some() { plan } else { String::new() };
    let memory = Memory {
        stable,
        canary,
        plan,
        state,
        handled: Controls::default(),
        checks: Vec::new(),
        verdict: None,
    };
    (memory, !live.is_empty())
}

#[cfg(test)]
mod tests;
