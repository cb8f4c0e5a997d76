//! What a decision tells people: the Events (their reasons as an enum), the status texts of the
//! seed's progress block, and the `Ready`/`Progressing` conditions.

use chrono::TimeDelta;

pub use super::reason::Reason;
use super::{Input, Run, state::State};
use crate::{
    api::{AbortReason, Condition, DeployerStatus, Gate, PauseCause, Progress},
    checks,
    replicas::split,
};

/// Severity of an Event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    /// Progress as planned.
    Normal,
    /// Something needs a person's attention.
    Warning,
}

/// An Event to publish about the Deployer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    /// Normal or Warning.
    pub severity: Severity,
    /// Why.
    pub reason: Reason,
    /// Human-readable message.
    pub message: String,
}

impl Note {
    /// A Normal Event.
    pub fn normal(reason: Reason, message: String) -> Note {
        Note { severity: Severity::Normal, reason, message }
    }

    /// A Warning Event.
    pub fn warning(reason: Reason, message: String) -> Note {
        Note { severity: Severity::Warning, reason, message }
    }
}

/// The Event that announces entering `next` from the run's current state.
pub fn announce(run: &Run, next: &State) -> Note {
    let mem = &run.mem;
    let n = run.plan.len();
    let canary = mem.canary.as_deref().unwrap_or("?");
    let pair = |step: usize| pair(run, step);
    match *next {
        State::Scaling { step, .. } => Note::normal(
            Reason::StepStarted,
            format!("step {}/{n}: {}% — scaling to {}", step + 1, percent(run, step), pair(step)),
        ),
        State::Waiting { step, .. } => Note::normal(
            Reason::StepCompleted,
            format!(
                "step {}/{n} in place ({}); waiting {}s",
                step + 1,
                pair(step),
                run.plan.get(step).map_or(0, |s| s.sleep)
            ),
        ),
        State::Finalizing => {
            Note::normal(Reason::Promoted, format!("{canary} is at 100%: removing the old versions"))
        }
        State::Done => Note::normal(
            Reason::RolloutComplete,
            format!(
                "{} runs {} replicas",
                mem.stable.as_deref().unwrap_or(canary),
                run.input.spec.deployment.replicas
            ),
        ),
        State::Aborted { step, reason } => {
            Note::warning(Reason::of_abort(reason), aborted(run, step, reason))
        }
        State::Checking { step, gate: Gate::BeforeStep } => Note::normal(
            Reason::GateChecking,
            format!("step {}/{n}: running the checks before scaling to {}", step + 1, pair(step)),
        ),
        State::Checking { step, .. } => Note::normal(
            Reason::GateChecking,
            format!("step {}/{n}: running the checks after the wait", step + 1),
        ),
        State::Paused { step, left, by } => paused(run, step, left, by),
        State::Init => Note::normal(Reason::RolloutStarted, format!("rolling out {canary}")),
    }
}

/// The percent of a step of the plan (the implied 100% past its end).
fn percent(run: &Run, step: usize) -> i32 {
    run.plan.get(step).map_or(100, |s| s.percent)
}

/// `2.0.0=3, 1.0.0=7`: what each version runs at a step.
fn pair(run: &Run, step: usize) -> String {
    let s = split(run.input.spec.deployment.replicas, percent(run, step));
    let canary = run.mem.canary.as_deref().unwrap_or("?");
    match run.mem.stable.as_deref() {
        Some(stable) => format!("{canary}={}, {stable}={}", s.canary, s.stable),
        None => format!("{canary}={}", s.canary),
    }
}

/// What an abort's Event says.
fn aborted(run: &Run, step: usize, reason: AbortReason) -> String {
    let (n, back_to) = (run.plan.len(), run.mem.stable.as_deref().unwrap_or("?"));
    let canary = run.mem.canary.as_deref().unwrap_or("?");
    match reason {
        AbortReason::ProgressDeadlineExceeded => format!(
            "step {}/{n}: {canary} not available within {}s; rolled back to {back_to}",
            step + 1,
            run.input.spec.progress_deadline_seconds
        ),
        AbortReason::AbortRequested => {
            format!("abort requested at step {}/{n}: rolling back to {back_to}", step + 1)
        }
        AbortReason::CheckFailed => format!(
            "step {}/{n}: {}; rolled back to {back_to}",
            step + 1,
            run.mem.verdict.as_deref().unwrap_or("a check failed")
        ),
    }
}

/// The Event of a pause, by who paused.
fn paused(run: &Run, step: usize, left: Option<TimeDelta>, by: PauseCause) -> Note {
    let n = run.plan.len();
    match (by, left) {
        (PauseCause::Check, _) => Note::warning(
            Reason::CheckInconclusive,
            format!(
                "step {}/{n}: {}; paused until promoted (or aborted)",
                step + 1,
                run.mem.verdict.as_deref().unwrap_or("a check could not tell")
            ),
        ),
        (PauseCause::Step, _) => Note::normal(
            Reason::StepPaused,
            format!("step {}/{n} in place ({}); paused until promoted", step + 1, pair(run, step)),
        ),
        (PauseCause::Annotation, Some(left)) => Note::normal(
            Reason::Paused,
            format!("paused at step {}/{n} with {} of the wait left", step + 1, seconds_text(left)),
        ),
        (PauseCause::Annotation, None) => {
            Note::normal(Reason::Paused, format!("paused at step {}/{n}", step + 1))
        }
    }
}

/// The Events of one decision, condensed: the progress it made (a start, steps, the end) in one
/// Event — the start's reason if it started a rollout, else the last — and every other Event
/// (a Warning, a request carried out) as it is.
pub fn condense(notes: Vec<Note>) -> Vec<Note> {
    let progress = |n: &Note| {
        n.severity == Severity::Normal
            && matches!(
                n.reason,
                Reason::Deploying
                    | Reason::RolloutStarted
                    | Reason::StepStarted
                    | Reason::StepCompleted
                    | Reason::Promoted
                    | Reason::RolloutComplete
                    | Reason::GateChecking
                    | Reason::StepPaused
            )
    };
    let (steps, mut out): (Vec<Note>, Vec<Note>) = notes.into_iter().partition(progress);
    let start = steps.iter().find(|n| matches!(n.reason, Reason::Deploying | Reason::RolloutStarted));
    match (start, steps.last()) {
        (Some(start), Some(last)) if start != last => {
            out.push(Note { message: format!("{}; {}", start.message, last.message), ..start.clone() })
        }
        (_, Some(last)) => out.push(last.clone()),
        (_, None) => {}
    }
    out
}

/// `24s`: a duration as whole seconds, rounded up.
pub fn seconds_text(d: TimeDelta) -> String {
    format!("{}s", (d.num_milliseconds().max(0) + 999) / 1000)
}

/// Fills the display fields of a recorded status: `step` (`N/M`), the canary's weight, the seed's
/// progress block and the conditions.
pub fn describe(run: &Run, status: &mut DeployerStatus) {
    let old = run.input.status.cloned().unwrap_or_default();
    let n = run.plan.len();
    let (current, weight) = match run.mem.state {
        State::Init => (0, Some(0)),
        State::Finalizing => (n, Some(100)),
        State::Done => (n, None),
        State::Aborted { step, .. } => (step + 1, Some(0)),
        // The canary's share of what runs now: the previous step's before the gate opens.
        State::Checking { step, gate: Gate::BeforeStep } => {
            (step + 1, Some(step.checked_sub(1).map_or(0, |s| percent(run, s))))
        }
        State::Scaling { step, .. }
        | State::Waiting { step, .. }
        | State::Paused { step, .. }
        | State::Checking { step, .. } => (step + 1, Some(percent(run, step))),
    };
    status.step = Some(format!("{current}/{n}"));
    status.current_step = Some(i32::try_from(current).unwrap_or(i32::MAX));
    status.weight = weight;
    // Once the last step is in place (Finalizing, Done) the seed's block shows it; an abort
    // keeps the block of the step it was aborted at.
    let last = n.checked_sub(1).map(|step| Progress {
        step: format!("no. {n}"),
        percentage: format!("{}% has been deployed", percent(run, step)),
        wait: "0s till next step".to_string(),
    });
    status.progress = progress(run).or(match run.mem.state {
        State::Finalizing | State::Done => last,
        State::Aborted { .. } => old.progress,
        _ => None,
    });
    status.conditions = old.conditions;
    conditions(run, status);
}

/// The seed's progress block of a state at a step: `no. 2`, `30% has been deployed`, and what the
/// step waits for (`24s till next step` in a wait).
fn progress(run: &Run) -> Option<Progress> {
    let sleep = |step: usize| run.plan.get(step).map_or(0, |s| s.sleep);
    let (step, wait) = match run.mem.state {
        State::Scaling { step, .. } => (step, format!("{}s till next step", sleep(step))),
        // The time left, when the wait text is refreshed (`--wait-refresh-seconds`); otherwise the
        // step's sleep, as the seed wrote it, once: a reconcile in the middle of the wait (a
        // Deployment's status changing) must not rewrite the status for a countdown.
        State::Waiting { step, until } => match run.input.settings.wait_refresh {
            Some(_) => (step, format!("{} till next step", seconds_text(until - run.input.now))),
            None => (step, format!("{}s till next step", sleep(step))),
        },
        State::Paused { step, left: Some(left), .. } => {
            (step, format!("paused, {} till next step once resumed", seconds_text(left)))
        }
        State::Paused { step, left: None, .. } => (step, "paused until promoted".to_string()),
        State::Checking { step, gate: Gate::BeforeStep } => {
            (step, "checks before the step running".to_string())
        }
        State::Checking { step, .. } => (step, "checks after the step running".to_string()),
        State::Init | State::Finalizing | State::Done | State::Aborted { .. } => return None,
    };
    Some(Progress {
        step: format!("no. {}", step + 1),
        percentage: format!("{}% has been deployed", percent(run, step)),
        wait,
    })
}

/// Sets `Ready` and `Progressing` from the state.
fn conditions(run: &Run, status: &mut DeployerStatus) {
    let (mem, input) = (&run.mem, run.input);
    let n = run.plan.len();
    let canary = mem.canary.as_deref().unwrap_or("?");
    let stable = mem.stable.as_deref().unwrap_or("?");
    let replicas = input.spec.deployment.replicas;
    let (ready, progressing): ((&str, &str, String), (&str, &str, String)) = match mem.state {
        State::Done => {
            let available = input
                .observed
                .iter()
                .find(|o| o.version == stable && !o.deleting)
                .is_some_and(|o| o.synced && o.replicas == replicas && o.available >= replicas);
            let ready = if available {
                ("True", "Available", format!("{stable} runs {replicas} available replicas"))
            } else {
                ("False", "Unavailable", format!("{stable} has fewer than {replicas} available replicas"))
            };
            (ready, ("False", "Complete", format!("{stable} is rolled out")))
        }
        State::Aborted { step, reason } => {
            let msg = match reason {
                AbortReason::ProgressDeadlineExceeded => {
                    format!(
                        "{canary} was not available in time at step {}/{n}; rolled back to {stable}",
                        step + 1
                    )
                }
                AbortReason::AbortRequested => {
                    format!("abort requested at step {}/{n}; rolled back to {stable}", step + 1)
                }
                AbortReason::CheckFailed => format!(
                    "a check failed at step {}/{n} ({}); rolled back to {stable}",
                    step + 1,
                    mem.verdict.as_deref().unwrap_or("?")
                ),
            };
            (("False", "Aborted", msg.clone()), ("False", Reason::of_abort(reason).as_str(), msg))
        }
        State::Paused { step, by, .. } => {
            let msg = held(run, step, by);
            (("False", "Paused", msg.clone()), ("Unknown", "Paused", msg))
        }
        State::Scaling { since, .. } if mem.stable.is_none() && input.now >= run.deadline_of(since) => {
            let msg =
                format!("{canary} has not become available within {}s", input.spec.progress_deadline_seconds);
            (("False", "RolloutInProgress", msg.clone()), ("False", "ProgressDeadlineExceeded", msg))
        }
        _ => {
            let msg = match &mem.stable {
                None => format!("deploying {canary}"),
                Some(_) if mem.canary.is_none() => format!("settling on {stable}"),
                Some(_) => format!(
                    "rolling out {canary} over {stable}: step {}",
                    status.step.as_deref().unwrap_or("?")
                ),
            };
            (("False", "RolloutInProgress", msg.clone()), ("True", "RolloutInProgress", msg))
        }
    };
    set_condition(&mut status.conditions, input, "Ready", ready.0, ready.1, &ready.2);
    set_condition(&mut status.conditions, input, "Progressing", progressing.0, progressing.1, &progressing.2);
}

/// Why a paused rollout is held, for its conditions.
fn held(run: &Run, step: usize, by: PauseCause) -> String {
    let (n, canary) = (run.plan.len(), run.mem.canary.as_deref().unwrap_or("?"));
    match by {
        PauseCause::Step => format!("{canary} paused at step {}/{n} until promoted", step + 1),
        PauseCause::Annotation => {
            format!("{canary} paused at step {}/{n} by deploy.example.com/paused", step + 1)
        }
        PauseCause::Check => format!(
            "{canary} paused at step {}/{n}: a check could not tell ({}); promote to go on, or abort",
            step + 1,
            run.mem.verdict.as_deref().unwrap_or("?")
        ),
    }
}

/// Sets a condition (status `True`, `False` or `Unknown`), keeping its `lastTransitionTime`
/// unless its status flips.
pub fn set_condition(
    conds: &mut Vec<Condition>,
    input: &Input,
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
) {
    let next = Condition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message: message.to_string(),
        last_transition_time: input.now,
        observed_generation: Some(input.generation),
    };
    match conds.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            let since = if c.status == status { c.last_transition_time } else { input.now };
            *c = Condition { last_transition_time: since, ..next };
        }
        None => conds.push(next),
    }
}

/// A rollback webhook's failure, told as a Warning (the rollback goes on regardless).
pub fn rollback_hook_failed(check: &crate::api::CheckStatus) -> Note {
    Note::warning(
        Reason::RollbackHookFailed,
        format!("{}: {}", check.name, check.last_error.as_deref().unwrap_or("failed")),
    )
}

/// The longest message a condition or Event carries from text the operator does not control.
pub const MAX_MESSAGE: usize = 1024;

/// `message` cut to what a condition or Event carries.
pub fn clip(message: &str) -> String {
    checks::clip(message, MAX_MESSAGE)
}
