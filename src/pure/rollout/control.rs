//! People's hands on a rollout: the paused annotation (hold and resume) and the one-shot requests
//! (promote, promote-full, abort, retry), each carried out once.

use chrono::TimeDelta;

use super::{
    Run, gates,
    report::{self, Note, Reason},
    state::State,
};
use crate::{
    api::{AbortReason, Controls, PauseCause},
    checks::shift,
};

/// A one-shot request, in order of precedence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    /// Roll back to the stable version.
    Abort,
    /// Restart an aborted rollout from step 1.
    Retry,
    /// Go to 100% now.
    PromoteFull,
    /// End the current wait, pause or gate and go on.
    Promote,
}

impl Request {
    /// The request's name (`promote-full`, …).
    pub fn name(self) -> &'static str {
        match self {
            Request::Abort => "abort",
            Request::Retry => "retry",
            Request::PromoteFull => "promote-full",
            Request::Promote => "promote",
        }
    }
}

/// The requests asked for (annotation values) that are not yet carried out (recorded in
/// `status.handled`), in order of precedence.
pub fn pending(asked: &Controls, handled: &Controls) -> Vec<Request> {
    let new = |a: &Option<String>, h: &Option<String>| a.is_some() && a != h;
    [
        (Request::Abort, new(&asked.abort, &handled.abort)),
        (Request::Retry, new(&asked.retry, &handled.retry)),
        (Request::PromoteFull, new(&asked.promote_full, &handled.promote_full)),
        (Request::Promote, new(&asked.promote, &handled.promote)),
    ]
    .into_iter()
    .filter_map(|(r, new)| new.then_some(r))
    .collect()
}

/// Carries out new control requests, at most one per reconcile, in order of precedence. The
/// others that arrived at the same time are recorded as handled and have no effect. On a rollout
/// that is not in progress (Done, Finalizing, a first deploy) promote and abort do nothing.
pub fn carry_out(run: &mut Run) {
    let Some(request) = take(run) else { return };
    let canary = run.mem.canary.clone().unwrap_or_default();
    let step = match run.mem.state {
        State::Init => Some(0),
        ref s => s.step().filter(|_| s.stepping()),
    };
    let last = run.plan.len().saturating_sub(1);
    // Promote-full at the last step is a promote: the step is not started (and announced) again.
    let request = match (request, step) {
        (Request::PromoteFull, Some(step)) if step == last => Request::Promote,
        (request, _) => request,
    };
    let next = match (request, step.filter(|_| run.mem.in_flight())) {
        (Request::Abort, Some(step)) => State::Aborted { step, reason: AbortReason::AbortRequested },
        (Request::Retry, _) if in_flight_aborted(run) => {
            run.notes.push(Note::normal(Reason::RetryRequested, format!("retrying {canary} from step 1")));
            run.mem.state = State::Init;
            run.mem.checks.clear();
            return;
        }
        (Request::PromoteFull, Some(_)) => {
            run.notes
                .push(Note::normal(Reason::PromoteFullRequested, format!("promoting {canary} to 100% now")));
            State::Scaling { step: last, since: run.input.now }
        }
        (Request::Promote, Some(step)) => promoted(run, step),
        _ => return,
    };
    let note = report::announce(run, &next);
    run.notes.push(note);
    if next == State::Finalizing {
        run.mem.stable = run.mem.canary.take();
    }
    run.mem.state = next;
}

/// Records the requests asked for as handled, and returns the one to carry out now, if any. Init
/// prepares the rollout (the stable back at R, an abandoned canary removed): a promote that
/// arrives then waits for step 1 rather than skip that.
fn take(run: &mut Run) -> Option<Request> {
    let asked = run.input.requests;
    let mem = &mut run.mem;
    let new = pending(asked, &mem.handled);
    let promoting = |r: &Request| matches!(r, Request::Promote | Request::PromoteFull);
    let deferred = matches!(mem.state, State::Init) && new.iter().any(promoting);
    mem.handled = Controls {
        promote: if deferred { mem.handled.promote.clone() } else { asked.promote.clone() },
        promote_full: if deferred { mem.handled.promote_full.clone() } else { asked.promote_full.clone() },
        ..asked.clone()
    };
    new.into_iter().find(|r| !(deferred && promoting(r)))
}

/// Where a promote at `step` goes: it ends what holds the rollout now (a wait, a pause, a gate's
/// checks); the gates of later steps still apply.
fn promoted(run: &mut Run, step: usize) -> State {
    let canary = run.mem.canary.clone().unwrap_or_default();
    if let State::Checking { step, gate: crate::api::Gate::BeforeStep } = run.mem.state {
        run.notes.push(Note::normal(
            Reason::PromoteRequested,
            format!("promoting {canary}: skipping the checks before step {}", step + 1),
        ));
        return State::Scaling { step, since: run.input.now };
    }
    run.notes
        .push(Note::normal(Reason::PromoteRequested, format!("promoting {canary} past step {}", step + 1)));
    gates::enter_step(run, step + 1, run.input.now)
}

/// Whether the rollout is an aborted one that a retry can restart.
fn in_flight_aborted(run: &Run) -> bool {
    let mem = &run.mem;
    mem.stable.is_some() && mem.canary.is_some() && matches!(mem.state, State::Aborted { .. })
}

/// Pauses a stepping rollout while the paused annotation is set (a running wait keeps what it had
/// left), and resumes an annotation pause once it is gone.
pub fn hold_or_resume(run: &mut Run) {
    let now = run.input.now;
    let next = match (&run.mem.state, run.input.paused) {
        (State::Scaling { step, .. }, true) if run.mem.stable.is_some() => {
            State::Paused { step: *step, left: None, by: PauseCause::Annotation }
        }
        (State::Waiting { step, until }, true) => {
            let left = (*until - now).clamp(TimeDelta::zero(), max_wait());
            State::Paused { step: *step, left: Some(left), by: PauseCause::Annotation }
        }
        (State::Paused { step, left, by: PauseCause::Annotation }, false) => {
            let n = run.plan.len();
            run.notes.push(Note::normal(Reason::Resumed, format!("resumed at step {}/{n}", step + 1)));
            match left {
                Some(left) => State::Waiting { step: *step, until: shift(now, *left) },
                None => State::Scaling { step: *step, since: now },
            }
        }
        _ => return,
    };
    if matches!(next, State::Paused { .. }) {
        let note = report::announce(run, &next);
        run.notes.push(note);
    }
    run.mem.state = next;
}

/// The longest wait a pause can hold over (the longest sleep a step can have).
fn max_wait() -> TimeDelta {
    TimeDelta::seconds(crate::api::MAX_SECONDS)
}
