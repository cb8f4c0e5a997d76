//! Advancing the machine as far as the observations allow.
//!
//! A state that is complete hands over to the next; if completing it took a resize (the stable
//! lowered once the canary is available), that is made and the new state is persisted, and the
//! next reconcile carries on from there — a delete of a version no state wants any more does not
//! hold the machine. A state left for another reason (a wait ran out, a deadline passed) drops
//! its own moves.

use super::{
    Run, control, gates,
    moves::{self, Moves},
    report,
    state::State,
};
use crate::{
    api::{AbortReason, Gate, PauseCause},
    checks::{Verdict, later},
};

/// Runs the machine from the remembered state to the one it must stop in, and returns the moves
/// to make now.
pub fn advance(run: &mut Run) -> Moves {
    // Each pass moves strictly forward through the plan; the bound is a belt for the braces.
    let mut passes = 5 * run.plan.len() + 8;
    loop {
        control::hold_or_resume(run);
        rearm(run);
        let verdict = gates::verdict(run);
        let goal = goal(run);
        let moves = moves::transition(&goal, run.input.observed, floor(run), &|v| {
            run.input.spec.deployment.image_for(v)
        });
        let Some(completed) = over(run, &moves, &goal, &verdict) else { return moves };
        if let State::Waiting { step, until } = run.mem.state
            && verdict == Verdict::Passed
            && !gates::has_checks(run, step, Gate::Wait)
        {
            run.wait_ended = Some(until);
        }
        let next = successor(run, verdict, completed);
        // A first deploy is announced when it starts and when it is done, not step by step.
        if run.mem.stable.is_some() || next == State::Done {
            let note = report::announce(run, &next);
            run.notes.push(note);
        }
        if next == State::Finalizing
            && let Some(canary) = run.mem.canary.take()
        {
            run.mem.stable = Some(canary);
        }
        run.mem.state = next;
        passes -= 1;
        if (completed && !moves.apply.is_empty()) || passes == 0 {
            return moves;
        }
    }
}

/// A step's scaling whose progress deadline passed before its canary was even raised — the
/// operator was down when the wait before it ended — gets its deadline from now: an outage of the
/// operator is not a slow canary.
fn rearm(run: &mut Run) {
    let State::Scaling { step, since } = run.mem.state else { return };
    if run.mem.stable.is_none() || run.input.now < run.deadline_of(since) {
        return;
    }
    let canary = run.mem.canary.as_deref().unwrap_or_default();
    let want = goal(run).into_iter().find(|(v, _)| v == canary).map_or(0, |(_, r)| r);
    let raised = run.input.observed.iter().any(|o| o.version == canary && !o.deleting && o.replicas >= want);
    if !raised {
        run.mem.state = State::Scaling { step, since: run.input.now };
    }
}

/// The replicas each version should run in the current state.
pub fn goal(run: &Run) -> Vec<(String, i32)> {
    let mem = &run.mem;
    let replicas = run.input.spec.deployment.replicas;
    moves::targets(
        &mem.state,
        mem.stable.as_deref(),
        mem.canary.as_deref(),
        &run.plan,
        replicas,
        ends_at_once(run),
    )
}

/// Whether the last step, once in place, ends the rollout at once (no sleep, no pause, no checks
/// after it): then the stable is deleted as soon as the canary serves R, rather than first
/// lowered to 0 and deleted a reconcile later.
fn ends_at_once(run: &Run) -> bool {
    let Some(last) = run.plan.len().checked_sub(1) else { return false };
    let step = &run.plan[last];
    step.sleep == 0
        && !step.pause
        && !gates::has_checks(run, last, Gate::Wait)
        && !gates::has_checks(run, last, Gate::AfterStep)
}

/// Availability is protected once there is a stable version; a first deploy that never ran in
/// full promised none, so what it superseded goes at once.
fn floor(run: &Run) -> i32 {
    if run.mem.stable.is_some() { run.input.spec.deployment.replicas } else { 0 }
}

/// Whether the current state is over: `None` if it holds; `Some(true)` if it is complete (its
/// goal reached), `Some(false)` if it is left for another reason (a wait ran out, a deadline
/// passed, a check decided).
fn over(run: &Run, moves: &Moves, goal: &[(String, i32)], verdict: &Verdict) -> Option<bool> {
    let now = run.input.now;
    let canary_ready = || {
        let canary = run.mem.canary.as_deref().unwrap_or_default();
        let want = goal.iter().find(|(v, _)| v == canary).map_or(0, |(_, r)| *r);
        run.input.observed.iter().any(|o| {
            o.version == canary && !o.deleting && o.synced && o.replicas == want && o.available >= want
        })
    };
    let (next, completed) = match &run.mem.state {
        // Init (an older operator's first state of a rollout) hands over to step 1 at once.
        State::Init => (true, false),
        State::Scaling { .. } if moves.reached && canary_ready() => (true, true),
        State::Scaling { since, .. } => (run.mem.stable.is_some() && now >= run.deadline_of(*since), false),
        State::Waiting { until, .. } => match verdict {
            Verdict::Passed => (now >= *until, false),
            Verdict::Pending => (false, false),
            Verdict::Failed(_) | Verdict::Inconclusive(_) => (true, false),
        },
        State::Checking { .. } => (*verdict != Verdict::Pending, false),
        State::Finalizing => (moves.reached, true),
        State::Done | State::Aborted { .. } | State::Paused { .. } => (false, false),
    };
    next.then_some(completed)
}

/// The state that follows the current one, once it is over.
fn successor(run: &mut Run, verdict: Verdict, completed: bool) -> State {
    let now = run.input.now;
    let step_of = |step: usize| run.plan.get(step).cloned().unwrap_or_default();
    match (run.mem.state.clone(), verdict) {
        (State::Waiting { step, .. } | State::Checking { step, .. }, Verdict::Failed(why)) => {
            run.mem.verdict = Some(report::clip(&why));
            State::Aborted { step, reason: AbortReason::CheckFailed }
        }
        (State::Waiting { step, .. } | State::Checking { step, .. }, Verdict::Inconclusive(why)) => {
            run.mem.verdict = Some(report::clip(&why));
            State::Paused { step, left: None, by: PauseCause::Check }
        }
        (State::Checking { step, gate: Gate::BeforeStep }, _) => State::Scaling { step, since: now },
        (State::Checking { step, .. }, _) => gates::enter_step(run, step + 1, now),
        (State::Waiting { step, .. }, _) if gates::has_checks(run, step, Gate::AfterStep) => {
            State::Checking { step, gate: Gate::AfterStep }
        }
        // The next step starts when the wait ends: its start is implied by the wait's deadline,
        // so it needs no status write of its own (one write per step, when it is in place).
        (State::Waiting { step, until }, _) => gates::enter_step(run, step + 1, until),
        (State::Init, _) => gates::enter_step(run, 0, now),
        (State::Scaling { step, .. }, _) if completed && step_of(step).pause && run.mem.stable.is_some() => {
            State::Paused { step, left: None, by: PauseCause::Step }
        }
        (State::Scaling { step, .. }, _) if completed => {
            State::Waiting { step, until: later(now, step_of(step).sleep.max(0)) }
        }
        (State::Scaling { step, .. }, _) => {
            State::Aborted { step, reason: AbortReason::ProgressDeadlineExceeded }
        }
        (State::Finalizing | State::Done | State::Aborted { .. } | State::Paused { .. }, _) => State::Done,
    }
}
