//! Step gates in the machine: which gate a state runs checks at, entering it (fresh check
//! states), folding answers in, what the gate's checks say together, and the calls due now.

use std::time::Duration;

use super::{Run, report, state::State};
use crate::{
    api::Gate,
    checks::{self, Call, Facts, Verdict},
};

/// The gate the state runs checks at, and its step: a Checking state's gate, a wait's metrics,
/// an abort's rollback webhooks. A first deploy has none (there is nothing to roll back to).
fn here(run: &Run) -> Option<(Gate, usize)> {
    run.mem.stable.as_ref()?;
    match run.mem.state {
        State::Checking { step, gate } => Some((gate, step)),
        State::Waiting { step, .. } => Some((Gate::Wait, step)),
        State::Aborted { step, .. } => Some((Gate::Rollback, step)),
        _ => None,
    }
}

/// Whether the rollout has checks for `gate` at `step`.
pub fn has_checks(run: &Run, step: usize, gate: Gate) -> bool {
    run.mem.stable.is_some() && checks::any(run.input.spec, run.plan.len(), step, gate)
}

/// Where the rollout goes to start step `step` at `since`: its `BeforeStep` gate if it has one,
/// else its scaling; past the last step, Finalizing.
pub fn enter_step(run: &Run, step: usize, since: chrono::DateTime<chrono::Utc>) -> State {
    if step >= run.plan.len() {
        State::Finalizing
    } else if has_checks(run, step, Gate::BeforeStep) {
        State::Checking { step, gate: Gate::BeforeStep }
    } else {
        State::Scaling { step, since }
    }
}

/// Brings the check states in line with the state and the spec, folds in the answers of this
/// reconcile's calls, and says what the gate's checks say together. A rollback webhook's failure
/// is only told (a Warning): the rollback goes on regardless.
pub fn verdict(run: &mut Run) -> Verdict {
    let Some((gate, _)) = enter(run) else { return Verdict::Passed };
    let (input, steps) = (run.input, run.plan.len());
    let mut outcomes = checks::expired(&run.mem.checks, input.spec, steps, input.now);
    outcomes.extend(input.outcomes.iter().cloned());
    let failed = checks::fold(&mut run.mem.checks, input.spec, steps, &outcomes, input.now);
    if gate == Gate::Rollback {
        for i in failed {
            let note = report::rollback_hook_failed(&run.mem.checks[i]);
            run.notes.push(note);
        }
        return Verdict::Passed;
    }
    checks::verdict(&run.mem.checks)
}

/// Fresh check states when the state has just reached a gate that has checks (a gate without
/// checks leaves the last gate's results in place: they say why a rollout was aborted or paused);
/// the states of the gate being run follow edits of the spec. Returns the gate and step if checks
/// run there.
pub fn enter(run: &mut Run) -> Option<(Gate, usize)> {
    let (gate, step) = here(run)?;
    let (spec, steps, now) = (run.input.spec, run.plan.len(), run.input.now);
    if checks::at(&run.mem.checks, gate, step) {
        checks::follow_spec(&mut run.mem.checks, spec, steps, step, gate, now);
    } else {
        let fresh = checks::enter(spec, steps, step, gate, now);
        if fresh.is_empty() {
            return None;
        }
        run.mem.checks = fresh;
    }
    Some((gate, step))
}

/// The calls due now at the gate the rollout is at — marked in flight in the memory, which is
/// persisted before they go out — and when the next one falls due (or an answer stops being
/// awaited).
pub fn due(run: &mut Run) -> (Vec<Call>, Option<Duration>) {
    // A gate entered on the last pass of the machine starts its clocks now.
    let Some((gate, step)) = enter(run) else { return (Vec::new(), None) };
    if !checks::at(&run.mem.checks, gate, step) {
        return (Vec::new(), None);
    }
    let (now, spec, steps) = (run.input.now, run.input.spec, run.plan.len());
    let calls = checks::calls(&run.mem.checks, spec, &facts(run), now);
    checks::launch(&mut run.mem.checks, &calls, now);
    let next = checks::next_due(&run.mem.checks, spec, steps, now)
        .map(|t| (t - now).to_std().unwrap_or(Duration::ZERO));
    (calls, next)
}

/// What the calls of a gate need to know of the rollout.
fn facts<'a>(run: &'a Run) -> Facts<'a> {
    let (step, phase) = match run.mem.state {
        State::Checking { step, .. } => (step, "Checking"),
        State::Waiting { step, .. } => (step, "Waiting"),
        State::Aborted { step, .. } => (step, "Aborted"),
        _ => (0, "Scaling"),
    };
    Facts {
        deployer: run.input.name,
        namespace: run.input.namespace,
        stable: run.mem.stable.as_deref(),
        canary: run.mem.canary.as_deref(),
        steps: run.plan.len(),
        percent: run.plan.get(step).map_or(0, |s| s.percent),
        phase,
        prometheus: run.input.settings.prometheus.as_deref(),
    }
}
