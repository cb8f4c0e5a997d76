//! Replica moves: what each version should run in a state ([`targets`]), and the make-before-break
//! [`transition`] that takes the observed Deployments there without taking availability below R.
//!
//! Observed counts come from the API server and are not trusted to be small: sums are taken in
//! `i64`, so no count, however large, overflows.

use super::{Observed, Scale, state::State};
use crate::{
    api::{Gate, Step},
    replicas::split,
};

/// The replicas each version should run in `state`. With `ends_at_once`, the last step (100%)
/// wants the stable gone rather than at 0: it is deleted once the canary serves R.
pub fn targets(
    state: &State,
    stable: Option<&str>,
    canary: Option<&str>,
    plan: &[Step],
    replicas: i32,
    ends_at_once: bool,
) -> Vec<(String, i32)> {
    // The step whose split holds: `None` before the first step. Before a step (its gate), the
    // previous step's replicas hold; after it, its own.
    let at = match *state {
        State::Init => None,
        State::Checking { step, gate: Gate::BeforeStep } => step.checked_sub(1),
        State::Checking { step, .. }
        | State::Scaling { step, .. }
        | State::Waiting { step, .. }
        | State::Paused { step, .. } => Some(step),
        State::Finalizing | State::Done | State::Aborted { .. } => {
            return stable.map(|stable| (stable.to_string(), replicas)).into_iter().collect();
        }
    };
    let percent = |step: usize| plan.get(step).or(plan.last()).map_or(100, |s| s.percent);
    match (at, stable, canary) {
        (None, Some(stable), Some(canary)) => vec![(stable.into(), replicas), (canary.into(), 0)],
        (Some(step), stable, Some(canary)) => {
            let s = split(replicas, percent(step));
            let mut goal = vec![(canary.to_string(), s.canary)];
            let last = step + 1 >= plan.len() && percent(step) == 100;
            if !(last && ends_at_once) {
                goal.extend(stable.map(|stable| (stable.to_string(), s.stable)));
            }
            goal
        }
        (_, Some(stable), None) => vec![(stable.into(), replicas)],
        (_, None, _) => Vec::new(),
    }
}

/// The moves that take the observed Deployments towards a goal.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Moves {
    /// Deployments to create or resize.
    pub apply: Vec<Scale>,
    /// Versions whose Deployments to delete.
    pub delete: Vec<String>,
    /// Whether the goal is reached once these moves are made: every goal version exists at its
    /// target size and nothing else is left.
    pub reached: bool,
}

impl Moves {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.apply.is_empty() && self.delete.is_empty()
    }
}

/// Make-before-break. Deployments that grow (or are created, or drifted from their template) are
/// changed at once. Removing pods is budgeted: what stays available must be at least `floor` (R
/// once a stable exists) — or, if fewer were available to begin with, no fewer than that. Pods
/// that serve nothing cost nothing (a ReplicaSet removes unavailable pods first), and a Deployment
/// that is no longer wanted is deleted once what it serves can be spared. The operator never takes
/// availability below R by its own hand.
pub fn transition(
    goal: &[(String, i32)],
    observed: &[Observed],
    floor: i32,
    image: &dyn Fn(&str) -> String,
) -> Moves {
    let live: Vec<&Observed> = observed.iter().filter(|o| !o.deleting).collect();
    let size = |o: &Observed| i64::from(o.replicas.max(0));
    let serving = |o: &Observed| i64::from(o.available).clamp(0, size(o));
    let mut moves = Moves { reached: true, ..Moves::default() };
    let mut shrinking = Vec::new();
    for (version, want) in goal {
        let Some(o) = live.iter().find(|o| o.version == *version) else {
            moves.apply.push(Scale { version: version.clone(), replicas: *want, create: true });
            moves.reached = false;
            continue;
        };
        let drifted = o.image.as_deref() != Some(image(version).as_str());
        if o.replicas > *want {
            shrinking.push((*o, i64::from(*want)));
        } else if o.replicas < *want || drifted {
            moves.apply.push(Scale { version: version.clone(), replicas: *want, create: false });
            moves.reached = false;
        }
    }
    let floor = i64::from(floor.max(0));
    let before: i64 = live.iter().map(|o| serving(o)).sum();
    let mut spare = before - before.min(floor);
    for (o, want) in shrinking {
        let idle = size(o) - serving(o);
        // A shrink happens whole when the budget allows; otherwise only a version holding more
        // than R (R was lowered) comes down towards R, so that pods trickling into readiness do
        // not each cost a write.
        let cut = if size(o) - want <= idle + spare {
            size(o) - want
        } else {
            (size(o) - want.max(floor)).clamp(0, idle + spare)
        };
        if cut > 0 {
            spare -= (cut - idle).max(0);
            let replicas = i32::try_from(size(o) - cut).unwrap_or(i32::MAX);
            moves.apply.push(Scale { version: o.version.clone(), replicas, create: false });
        }
        moves.reached &= size(o) - cut == want;
    }
    for o in live.iter().filter(|o| !goal.iter().any(|(v, _)| *v == o.version)) {
        if serving(o) <= spare {
            spare -= serving(o);
            moves.delete.push(o.version.clone());
        } else {
            moves.reached = false;
        }
    }
    moves
}

#[cfg(test)]
mod tests;
