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
//! Every move of replicas goes through [`transition`]: Deployments that grow are resized first,
//! and those that shrink (or go away) only once the growing ones are available — so the operator
//! never takes availability below the requested replicas by its own hand.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use crate::{
    api::{CheckStatus, Condition, Controls, DeployerSpec, DeployerStatus, Phase, Progress, Step},
    checks::{self, Call, Facts, Gate, Outcome, Verdict},
    replicas::split,
};

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
    /// The Deployments the Deployer owns.
    pub observed: &'a [Observed],
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

/// Tunables of the core.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// How often the remaining-time text of a running wait is refreshed in the status (`None`:
    /// written once when the wait starts).
    pub wait_refresh: Option<Duration>,
    /// The Prometheus for metric checks whose Deployer names none.
    pub prometheus: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Self { wait_refresh: Some(Duration::from_secs(10)), prometheus: None }
    }
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
    /// CamelCase reason.
    pub reason: &'static str,
    /// Human-readable message.
    pub message: String,
}

/// What [`decide`] asks the controller to do, in this order: apply `apply`, delete `delete`,
/// persist `status` (if it changed), publish `notes`, look again after `requeue`. If `calls` is
/// not empty, the controller may first make them and decide again with their answers.
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
}

/// Where a rollout is. Each variant carries exactly the data it needs.
#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    /// Hold the stable at full size, create the canary at 0.
    Init,
    /// Move replicas for step `step` (0-based); the progress deadline counts from `since`.
    Scaling { step: usize, since: DateTime<Utc> },
    /// Step `step` is in place; hold it until `until`.
    Waiting { step: usize, until: DateTime<Utc> },
    /// Make the stable the only version, at full size.
    Finalizing,
    /// One version at full size.
    Done,
    /// Rolled back to the stable during step `step`.
    Aborted { step: usize, reason: AbortReason },
    /// Held at step `step`, with `left` of its wait still to run once resumed (`None`: paused
    /// while scaling, or at a pause step).
    Paused { step: usize, left: Option<TimeDelta>, by: Pauser },
    /// The webhooks of a gate of step `step` run: `Gate::BeforeStep` (the previous step's
    /// replicas in place) or `Gate::AfterStep` (this step's, its wait over).
    Checking { step: usize, gate: Gate },
}

/// Why a rollout was aborted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AbortReason {
    /// The canary did not become available within the progress deadline.
    ProgressDeadlineExceeded,
    /// Someone asked for it (`deploy.example.com/abort`).
    AbortRequested,
    /// A metric or webhook check failed (`status.checkVerdict` says which and why).
    CheckFailed,
}

impl AbortReason {
    fn as_str(self) -> &'static str {
        match self {
            AbortReason::ProgressDeadlineExceeded => "ProgressDeadlineExceeded",
            AbortReason::AbortRequested => "AbortRequested",
            AbortReason::CheckFailed => "CheckFailed",
        }
    }
}

/// Who paused a rollout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pauser {
    /// The `deploy.example.com/paused` annotation: resumes when it goes.
    Annotation,
    /// A step with `pause: true`: resumes when promoted.
    Step,
    /// A check that could not tell (no data): resumes when promoted.
    Check,
}

/// The rollout's memory, as recalled from the status.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Memory {
    /// The version that served before this rollout; `None` until the first deploy completes.
    stable: Option<String>,
    /// The version being rolled out.
    canary: Option<String>,
    /// Fingerprint of the steps the rollout runs.
    plan: String,
    state: State,
    /// Control requests already carried out.
    handled: Controls,
    /// The checks of the current (or last) gate.
    checks: Vec<CheckStatus>,
    /// What a check said when it aborted or paused the rollout.
    verdict: Option<String>,
}

/// Computes the next action of a Deployer's rollout. Pure; see the module documentation.
pub fn decide(input: &Input) -> Decision {
    if let Err(message) =
        validate(input).and_then(|()| checks::validate(input.spec, input.settings.prometheus.as_deref()))
    {
        return halted(input, "InvalidSpec", message);
    }
    let spec = &input.spec.deployment;
    let target = spec.version.as_str();
    let steps = normalized_steps(&input.spec.steps);
    let mut notes = Vec::new();
    let mut mem = recall(input.status, input.now).unwrap_or_else(|| adopt(input.observed, target));

    // 1. Which rollout should be running, given the spec?
    // A first deploy that is superseded once it runs in full is the stable from now on.
    let full = |o: &Observed| o.synced && o.replicas == spec.replicas && o.available >= spec.replicas;
    if mem.stable.is_none()
        && let Some(old) = mem.canary.clone().filter(|old| old != target)
        && input.observed.iter().any(|o| o.version == old && !o.deleting && full(o))
    {
        mem = Memory { stable: Some(old), canary: None, state: State::Done, ..mem };
    }
    match mem.stable.clone() {
        None => {
            if mem.canary.as_deref() != Some(target) {
                if let Some(old) = &mem.canary {
                    notes.push(normal("Superseded", format!("first deploy of {old} superseded by {target}")));
                }
                notes.push(normal(
                    "Deploying",
                    format!("first deploy: {target} with {} replicas", spec.replicas),
                ));
                mem = Memory {
                    stable: None,
                    canary: Some(target.to_string()),
                    plan: fingerprint(&FIRST_DEPLOY),
                    state: State::Scaling { step: 0, since: input.now },
                    handled: mem.handled,
                    checks: Vec::new(),
                    verdict: None,
                };
            }
        }
        Some(stable) if stable == target => {
            if let Some(canary) = mem.canary.take() {
                if !matches!(mem.state, State::Aborted { .. }) {
                    notes.push(normal(
                        "RolledBack",
                        format!("version set back to the stable {stable}: removing canary {canary}"),
                    ));
                }
                mem.state = State::Finalizing;
            }
        }
        Some(stable) => {
            if mem.canary.as_deref() == Some(target) {
                let stepping = matches!(
                    mem.state,
                    State::Scaling { .. }
                        | State::Waiting { .. }
                        | State::Paused { .. }
                        | State::Checking { .. }
                );
                if mem.plan != fingerprint(&steps) && !matches!(mem.state, State::Aborted { .. }) {
                    // Init has not started a step yet: it simply runs the new plan.
                    if stepping {
                        notes.push(normal(
                            "StepsChanged",
                            "spec.steps changed: restarting from step 1".into(),
                        ));
                        mem.state = State::Scaling { step: 0, since: input.now };
                        mem.checks.clear();
                    }
                    mem.plan = fingerprint(&steps);
                }
            } else {
                if let Some(old) = &mem.canary
                    && !matches!(mem.state, State::Aborted { .. })
                {
                    notes.push(normal("Superseded", format!("canary {old} abandoned for {target}")));
                }
                notes.push(normal(
                    "RolloutStarted",
                    format!("rolling out {target} over {stable} in {} steps", steps.len()),
                ));
                mem.canary = Some(target.to_string());
                mem.plan = fingerprint(&steps);
                mem.state = State::Init;
                mem.checks.clear();
            }
        }
    }
    // A first deploy runs one 100% step; it keeps that plan (for display) until the next rollout.
    let first = mem.stable.is_none() || mem.plan == fingerprint(&FIRST_DEPLOY);
    let plan: &[Step] = if first { &FIRST_DEPLOY } else { &steps };

    // 2. Control requests: each new annotation value is carried out once.
    control(input, &mut mem, plan, &mut notes);

    // 3. Advance the state machine as far as the observations allow. A state that is complete
    // hands over to the next; if completing it took moves (a shrink, a delete), those are made
    // and the new state is persisted, and the next reconcile carries on from there. A state left
    // for another reason (a wait ran out, a deadline passed) drops its own moves.
    let replicas = spec.replicas;
    let deadline = TimeDelta::seconds(input.spec.progress_deadline_seconds);
    let image = |version: &str| crate::resources::image(spec, version);
    let mut moves;
    // Each pass moves strictly forward through the plan; the bound is a belt for the braces.
    let mut passes = 5 * plan.len() + 8;
    loop {
        hold_or_resume(input, &mut mem, plan, &mut notes);
        let verdict = gate(input, &mut mem, plan, &mut notes);
        let goal = targets(&mem, plan, replicas);
        // Availability is protected once there is a stable version; a first deploy that never
        // ran in full promised none, so what it superseded goes at once.
        let floor = if mem.stable.is_some() { replicas } else { 0 };
        moves = transition(&goal, input.observed, floor, &image);
        let canary_ready = || {
            let canary = mem.canary.as_deref().unwrap_or_default();
            let want = goal.iter().find(|(v, _)| v == canary).map_or(0, |(_, r)| *r);
            input.observed.iter().any(|o| {
                o.version == canary && !o.deleting && o.synced && o.replicas == want && o.available >= want
            })
        };
        let (next, completed) = match &mem.state {
            State::Init => (moves.reached && canary_ready(), true),
            State::Scaling { .. } if moves.reached && canary_ready() => (true, true),
            State::Scaling { since, .. } => (mem.stable.is_some() && input.now >= *since + deadline, false),
            State::Waiting { until, .. } => match verdict {
                Verdict::Passed => (input.now >= *until, false),
                Verdict::Pending => (false, false),
                Verdict::Failed(_) | Verdict::Inconclusive(_) => (true, false),
            },
            State::Checking { .. } => (verdict != Verdict::Pending, false),
            State::Finalizing => (moves.reached, true),
            State::Done | State::Aborted { .. } | State::Paused { .. } => (false, false),
        };
        if !next {
            break;
        }
        let next = match (&mem.state, verdict) {
            (State::Waiting { step, .. } | State::Checking { step, .. }, Verdict::Failed(why)) => {
                mem.verdict = Some(why);
                State::Aborted { step: *step, reason: AbortReason::CheckFailed }
            }
            (State::Waiting { step, .. } | State::Checking { step, .. }, Verdict::Inconclusive(why)) => {
                mem.verdict = Some(why);
                State::Paused { step: *step, left: None, by: Pauser::Check }
            }
            (State::Checking { step, gate: Gate::BeforeStep }, _) => {
                State::Scaling { step: *step, since: input.now }
            }
            (State::Checking { step, .. }, _) => enter_step(input, &mem, plan, step + 1),
            (State::Waiting { step, .. }, _) if has_checks(input, &mem, plan, *step, Gate::AfterStep) => {
                State::Checking { step: *step, gate: Gate::AfterStep }
            }
            (state, _) => match state {
                State::Init => enter_step(input, &mem, plan, 0),
                State::Scaling { step, .. } if completed && plan[*step].pause && mem.stable.is_some() => {
                    State::Paused { step: *step, left: None, by: Pauser::Step }
                }
                State::Scaling { step, .. } if completed => {
                    State::Waiting { step: *step, until: input.now + secs(plan[*step].sleep) }
                }
                State::Scaling { step, .. } => {
                    State::Aborted { step: *step, reason: AbortReason::ProgressDeadlineExceeded }
                }
                State::Waiting { step, .. } => enter_step(input, &mem, plan, step + 1),
                State::Finalizing
                | State::Done
                | State::Aborted { .. }
                | State::Paused { .. }
                | State::Checking { .. } => State::Done,
            },
        };
        // A first deploy is announced when it starts and when it is done, not step by step.
        if mem.stable.is_some() || next == State::Done {
            notes.push(announce(&mem, &next, plan, replicas, input.spec.progress_deadline_seconds));
        }
        if next == State::Finalizing
            && let Some(canary) = mem.canary.take()
        {
            mem.stable = Some(canary);
        }
        mem.state = next;
        passes -= 1;
        if (completed && !moves.is_empty()) || passes == 0 {
            break;
        }
    }

    // A gate entered on the last pass starts its clocks now.
    enter_gate(input, &mut mem, plan);
    let status = status_of(input, &mem, plan, replicas);
    let live = here(&mem).is_some_and(|(gate, step)| checks::at(&mem.checks, gate, step));
    let calls = if live {
        checks::calls(&mem.checks, input.spec, &facts(input, &mem, plan), input.now)
    } else {
        Vec::new()
    };
    let due = checks::next_due(&mem.checks)
        .filter(|_| live)
        .map(|t| (t - input.now).to_std().unwrap_or(Duration::ZERO));
    let requeue = match (requeue_of(input, &mem.state, deadline), due) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    Decision { apply: moves.apply, delete: moves.delete, status, notes, requeue, calls }
}

/// The gate the state runs checks at, and its step: a Checking state's gate, a wait's metrics,
/// an abort's rollback webhooks. A first deploy has none (there is nothing to roll back to).
fn here(mem: &Memory) -> Option<(Gate, usize)> {
    mem.stable.as_ref()?;
    match mem.state {
        State::Checking { step, gate } => Some((gate, step)),
        State::Waiting { step, .. } => Some((Gate::Wait, step)),
        State::Aborted { step, .. } => Some((Gate::Rollback, step)),
        _ => None,
    }
}

/// Whether the rollout has checks for `gate` at `step`.
fn has_checks(input: &Input, mem: &Memory, plan: &[Step], step: usize, gate: Gate) -> bool {
    mem.stable.is_some() && checks::any(input.spec, plan.len(), step, gate)
}

/// Where the rollout goes to start step `step`: its `BeforeStep` gate if it has one, else its
/// scaling; past the last step, Finalizing.
fn enter_step(input: &Input, mem: &Memory, plan: &[Step], step: usize) -> State {
    if step >= plan.len() {
        State::Finalizing
    } else if has_checks(input, mem, plan, step, Gate::BeforeStep) {
        State::Checking { step, gate: Gate::BeforeStep }
    } else {
        State::Scaling { step, since: input.now }
    }
}

/// Brings the check states in line with the state (fresh ones when a gate is entered), folds in
/// the answers of this reconcile's calls, and says what the gate's checks say together. A
/// rollback webhook's failure is only told (a Warning): the rollback goes on regardless.
fn gate(input: &Input, mem: &mut Memory, plan: &[Step], notes: &mut Vec<Note>) -> Verdict {
    let Some((gate, _)) = enter_gate(input, mem, plan) else { return Verdict::Passed };
    let failed = checks::fold(&mut mem.checks, input.spec, plan.len(), input.outcomes, input.now);
    if gate == Gate::Rollback {
        for c in failed.iter().map(|&i| &mem.checks[i]) {
            notes.push(Note {
                severity: Severity::Warning,
                reason: "RollbackHookFailed",
                message: format!("{}: {}", c.name, c.last_error.as_deref().unwrap_or("failed")),
            });
        }
        return Verdict::Passed;
    }
    checks::verdict(&mem.checks)
}

/// Fresh check states when the state has just reached a gate that has checks; the gate and step
/// if checks run there. A gate without checks leaves the last gate's results in place (they say
/// why a rollout was aborted or paused).
fn enter_gate(input: &Input, mem: &mut Memory, plan: &[Step]) -> Option<(Gate, usize)> {
    let (gate, step) = here(mem)?;
    if !checks::at(&mem.checks, gate, step) {
        let fresh = checks::enter(input.spec, plan.len(), step, gate, input.now);
        if fresh.is_empty() {
            return None;
        }
        mem.checks = fresh;
    }
    Some((gate, step))
}

/// What the calls of a gate need to know of the rollout.
fn facts<'a>(input: &'a Input, mem: &'a Memory, plan: &[Step]) -> Facts<'a> {
    let (step, phase) = match mem.state {
        State::Checking { step, .. } => (step, "Checking"),
        State::Waiting { step, .. } => (step, "Waiting"),
        State::Aborted { step, .. } => (step, "Aborted"),
        _ => (0, "Scaling"),
    };
    Facts {
        deployer: input.name,
        namespace: input.namespace,
        stable: mem.stable.as_deref(),
        canary: mem.canary.as_deref(),
        steps: plan.len(),
        percent: plan.get(step).map_or(0, |s| s.percent),
        phase,
        prometheus: input.settings.prometheus.as_deref(),
    }
}

/// Carries out new control requests (annotation values not yet in `status.handled`), at most one
/// per reconcile, in order of precedence: abort, retry, promote-full, promote. The others that
/// arrived at the same time are recorded as handled and have no effect. On a rollout that is not
/// in progress (Done, Finalizing, a first deploy) promote and abort do nothing.
fn control(input: &Input, mem: &mut Memory, plan: &[Step], notes: &mut Vec<Note>) {
    let req = input.requests;
    let new = |asked: &Option<String>, done: &Option<String>| asked.is_some() && asked != done;
    let abort = new(&req.abort, &mem.handled.abort);
    let retry = new(&req.retry, &mem.handled.retry);
    let full = new(&req.promote_full, &mem.handled.promote_full);
    let promote = new(&req.promote, &mem.handled.promote);
    // Init prepares the rollout (the stable back at R, an abandoned canary removed): a promote
    // that arrives then waits for step 1 rather than skip that.
    let deferred = matches!(mem.state, State::Init) && (full || promote);
    let handled = Controls {
        promote: if deferred { mem.handled.promote.clone() } else { req.promote.clone() },
        promote_full: if deferred { mem.handled.promote_full.clone() } else { req.promote_full.clone() },
        ..req.clone()
    };
    mem.handled = handled;
    let (full, promote) = (full && !deferred, promote && !deferred);
    let (replicas, deadline) = (input.spec.deployment.replicas, input.spec.progress_deadline_seconds);
    let last = plan.len() - 1;
    let step = match mem.state {
        State::Init => Some(0),
        State::Scaling { step, .. }
        | State::Waiting { step, .. }
        | State::Paused { step, .. }
        | State::Checking { step, .. } => Some(step),
        _ => None,
    };
    let in_flight = mem.stable.is_some() && mem.canary.is_some();
    let canary = mem.canary.clone().unwrap_or_default();
    match step.filter(|_| in_flight) {
        Some(step) if abort => {
            let next = State::Aborted { step, reason: AbortReason::AbortRequested };
            notes.push(announce(mem, &next, plan, replicas, deadline));
            mem.state = next;
        }
        _ if abort => {}
        _ if retry && in_flight && matches!(mem.state, State::Aborted { .. }) => {
            notes.push(normal("RetryRequested", format!("retrying {canary} from step 1")));
            mem.state = State::Init;
            mem.checks.clear();
        }
        _ if retry => {}
        Some(_) if full => {
            notes.push(normal("PromoteFullRequested", format!("promoting {canary} to 100% now")));
            let next = State::Scaling { step: last, since: input.now };
            notes.push(announce(mem, &next, plan, replicas, deadline));
            mem.state = next;
        }
        Some(step) if promote => {
            // Promote ends what holds the rollout now (a wait, a pause, a gate's checks); the gates
            // of later steps still apply.
            let next = match mem.state {
                State::Checking { step, gate: Gate::BeforeStep } => {
                    notes.push(normal(
                        "PromoteRequested",
                        format!("promoting {canary}: skipping the checks before step {}", step + 1),
                    ));
                    State::Scaling { step, since: input.now }
                }
                _ => {
                    notes.push(normal(
                        "PromoteRequested",
                        format!("promoting {canary} past step {}", step + 1),
                    ));
                    enter_step(input, mem, plan, step + 1)
                }
            };
            notes.push(announce(mem, &next, plan, replicas, deadline));
            if next == State::Finalizing {
                mem.stable = mem.canary.take();
            }
            mem.state = next;
        }
        _ => {}
    }
}

/// Pauses a stepping rollout while the paused annotation is set (a running wait keeps what it had
/// left), and resumes an annotation pause once it is gone.
fn hold_or_resume(input: &Input, mem: &mut Memory, plan: &[Step], notes: &mut Vec<Note>) {
    let next = match (&mem.state, input.paused) {
        (State::Scaling { step, .. }, true) if mem.stable.is_some() => {
            State::Paused { step: *step, left: None, by: Pauser::Annotation }
        }
        (State::Waiting { step, until }, true) => {
            let left = (*until - input.now).max(TimeDelta::zero());
            State::Paused { step: *step, left: Some(left), by: Pauser::Annotation }
        }
        (State::Paused { step, left, by: Pauser::Annotation }, false) => {
            notes.push(normal("Resumed", format!("resumed at step {}/{}", step + 1, plan.len())));
            match left {
                Some(left) => State::Waiting { step: *step, until: input.now + *left },
                None => State::Scaling { step: *step, since: input.now },
            }
        }
        _ => return,
    };
    if matches!(next, State::Paused { .. }) {
        notes.push(announce(
            mem,
            &next,
            plan,
            input.spec.deployment.replicas,
            input.spec.progress_deadline_seconds,
        ));
    }
    mem.state = next;
}

/// `24s`: a duration as whole seconds, rounded up.
fn seconds_text(d: TimeDelta) -> String {
    format!("{}s", (d.num_milliseconds().max(0) + 999) / 1000)
}

/// The implied final step of a rollout, and the single step of a first deploy.
const FIRST_DEPLOY: [Step; 1] =
    [Step { percent: 100, sleep: 0, pause: false, metrics: Vec::new(), webhooks: Vec::new() }];

/// The spec's steps with a final 100% step appended when the last one is below 100.
pub fn normalized_steps(steps: &[Step]) -> Vec<Step> {
    let mut out = steps.to_vec();
    if out.last().is_none_or(|s| s.percent < 100) {
        out.push(Step { percent: 100, ..Step::default() });
    }
    out
}

/// A readable fingerprint of a plan, persisted so that a change of `spec.steps` is noticed.
fn fingerprint(steps: &[Step]) -> String {
    steps.iter().map(|s| format!("{}%/{}s", s.percent, s.sleep)).collect::<Vec<_>>().join(",")
}

fn secs(s: i64) -> TimeDelta {
    TimeDelta::seconds(s.max(0))
}

/// Checks what the API server's schema cannot (and, defensively, what it should have).
fn validate(input: &Input) -> Result<(), String> {
    let spec = input.spec;
    let d = &spec.deployment;
    if let Some(ns) = &d.namespace
        && ns != input.namespace
    {
        {
            return Err(format!(
                "spec.deployment.namespace {ns:?} must equal the Deployer's namespace {:?}: owner references cannot cross namespaces",
                input.namespace
            ));
        }
    }
    if spec.steps.is_empty() {
        return Err("spec.steps must list at least one step".into());
    }
    let mut last = 0;
    for (i, s) in spec.steps.iter().enumerate() {
        if !(1..=100).contains(&s.percent) {
            return Err(format!("spec.steps[{i}].percent must be within 1..100, not {}", s.percent));
        }
        if s.percent <= last {
            return Err(format!("spec.steps[{i}].percent must be greater than the step before it"));
        }
        if s.sleep < 0 {
            return Err(format!("spec.steps[{i}].sleep must not be negative"));
        }
        last = s.percent;
    }
    if d.replicas < 0 {
        return Err("spec.deployment.replicas must not be negative".into());
    }
    if spec.progress_deadline_seconds < 1 {
        return Err("spec.progressDeadlineSeconds must be at least 1".into());
    }
    Ok(())
}

/// The decision when the operator cannot act (an invalid spec, a name taken by someone else):
/// nothing moves; `Ready` and `Progressing` say why, with a Warning Event the first time.
pub fn halted(input: &Input, reason: &'static str, message: String) -> Decision {
    let mut status = input.status.cloned().unwrap_or_default();
    let already = status.condition("Ready").is_some_and(|c| c.reason == reason && c.message == message);
    set_condition(&mut status.conditions, input, "Ready", "False", reason, &message);
    set_condition(&mut status.conditions, input, "Progressing", "False", reason, &message);
    status.observed_generation = Some(input.generation);
    let notes =
        if already { Vec::new() } else { vec![Note { severity: Severity::Warning, reason, message }] };
    Decision { apply: Vec::new(), delete: Vec::new(), status, notes, requeue: None, calls: Vec::new() }
}

/// The memory persisted in `status`, or `None` if there is none (a new or wiped status).
fn recall(status: Option<&DeployerStatus>, now: DateTime<Utc>) -> Option<Memory> {
    let status = status?;
    let step = usize::try_from(status.current_step.unwrap_or(1).max(1) - 1).unwrap_or(0);
    let state = match status.phase? {
        Phase::Init => State::Init,
        // A missing timestamp (a hand-edited status) is read as "now": the step re-arms its
        // deadline, the wait ends at once.
        Phase::Scaling => State::Scaling { step, since: status.step_started_at.unwrap_or(now) },
        Phase::Waiting => State::Waiting { step, until: status.wait_until.unwrap_or(now) },
        Phase::Finalizing => State::Finalizing,
        Phase::Done => State::Done,
        Phase::Aborted => State::Aborted {
            step,
            reason: match status.abort_reason.as_deref() {
                Some("AbortRequested") => AbortReason::AbortRequested,
                Some("CheckFailed") => AbortReason::CheckFailed,
                _ => AbortReason::ProgressDeadlineExceeded,
            },
        },
        Phase::Paused => State::Paused {
            step,
            left: status.paused_wait_millis.map(TimeDelta::milliseconds),
            by: match status.paused_by.as_deref() {
                Some("Step") => Pauser::Step,
                Some("Check") => Pauser::Check,
                _ => Pauser::Annotation,
            },
        },
        Phase::Checking => State::Checking {
            step,
            gate: match status.gate.as_deref() {
                Some("BeforeStep") => Gate::BeforeStep,
                _ => Gate::AfterStep,
            },
        },
    };
    Some(Memory {
        stable: status.stable_version.clone(),
        canary: status.canary_version.clone(),
        plan: status.plan.clone().unwrap_or_default(),
        state,
        handled: status.handled.clone(),
        checks: status.checks.clone(),
        verdict: status.check_verdict.clone(),
    })
}

/// Memory for a Deployer without a status: a fresh one, or one whose status was lost. Owned
/// Deployments are adopted: the target version if it runs, else the one with most available pods.
fn adopt(observed: &[Observed], target: &str) -> Memory {
    let live = || observed.iter().filter(|o| !o.deleting);
    let stable = if live().any(|o| o.version == target) {
        Some(target.to_string())
    } else {
        live().max_by_key(|o| (o.available, o.replicas)).map(|o| o.version.clone())
    };
    let state = if stable.is_some() { State::Done } else { State::Init };
    Memory {
        stable,
        canary: None,
        plan: String::new(),
        state,
        handled: Controls::default(),
        checks: Vec::new(),
        verdict: None,
    }
}

/// The replicas each version should run in the memory's current state.
fn targets(mem: &Memory, plan: &[Step], replicas: i32) -> Vec<(String, i32)> {
    // The step whose split holds: `None` before the first step. Before a step (its gate), the
    // previous step's replicas hold; after it, its own.
    let at = match mem.state {
        State::Init => None,
        State::Checking { step, gate: Gate::BeforeStep } => step.checked_sub(1),
        State::Checking { step, .. }
        | State::Scaling { step, .. }
        | State::Waiting { step, .. }
        | State::Paused { step, .. } => Some(step),
        State::Finalizing | State::Done | State::Aborted { .. } => {
            return mem.stable.iter().map(|stable| (stable.clone(), replicas)).collect();
        }
    };
    let mut goal = Vec::with_capacity(2);
    match (at, &mem.stable, &mem.canary) {
        (None, Some(stable), Some(canary)) => {
            goal.push((stable.clone(), replicas));
            goal.push((canary.clone(), 0));
        }
        (Some(step), stable, Some(canary)) => {
            let s = split(replicas, plan[step.min(plan.len() - 1)].percent);
            goal.push((canary.clone(), s.canary));
            if let Some(stable) = stable {
                goal.push((stable.clone(), s.stable));
            }
        }
        (_, Some(stable), None) => goal.push((stable.clone(), replicas)),
        (_, None, _) => {}
    }
    goal
}

/// The moves that take the observed Deployments towards a goal.
#[derive(Debug, Default)]
struct Moves {
    apply: Vec<Scale>,
    delete: Vec<String>,
    /// Whether the goal is reached once these moves are made: every goal version exists at its
    /// target size and nothing else is left.
    reached: bool,
}

impl Moves {
    fn is_empty(&self) -> bool {
        self.apply.is_empty() && self.delete.is_empty()
    }
}

/// Make-before-break. Deployments that grow (or are created, or drifted from their template) are
/// changed at once. Removing pods is budgeted: what stays available must be at least `floor` (R once
/// a stable exists) — or, if fewer were available to begin with, no fewer than that. Pods that
/// serve nothing cost nothing (a ReplicaSet removes unavailable pods first), and a Deployment that
/// is no longer wanted is deleted once what it serves can be spared. The operator never takes availability below R by its own hand.
fn transition(
    goal: &[(String, i32)],
    observed: &[Observed],
    floor: i32,
    image: &dyn Fn(&str) -> String,
) -> Moves {
    let live: Vec<&Observed> = observed.iter().filter(|o| !o.deleting).collect();
    let serving = |o: &Observed| o.available.clamp(0, o.replicas.max(0));
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
            shrinking.push((*o, *want));
        } else if o.replicas < *want || drifted {
            moves.apply.push(Scale { version: version.clone(), replicas: *want, create: false });
            moves.reached = false;
        }
    }
    let before: i32 = live.iter().map(|o| serving(o)).sum();
    let mut spare = before - before.min(floor);
    for (o, want) in shrinking {
        let idle = o.replicas - serving(o);
        // A shrink happens whole when the budget allows; otherwise only a version holding more
        // than R (R was lowered) comes down towards R, so that pods trickling into readiness do
        // not each cost a write.
        let cut = if o.replicas - want <= idle + spare {
            o.replicas - want
        } else {
            (o.replicas - want.max(floor)).clamp(0, idle + spare)
        };
        if cut > 0 {
            spare -= (cut - idle).max(0);
            moves.apply.push(Scale { version: o.version.clone(), replicas: o.replicas - cut, create: false });
        }
        moves.reached &= o.replicas - cut == want;
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

/// The Event that announces entering `next` from the memory's current state.
fn announce(mem: &Memory, next: &State, plan: &[Step], replicas: i32, deadline: i64) -> Note {
    let canary = mem.canary.as_deref().unwrap_or("?");
    let stable = mem.stable.as_deref();
    let n = plan.len();
    let pair = |step: usize| {
        let s = split(replicas, plan[step].percent);
        match stable {
            Some(stable) => format!("{canary}={}, {stable}={}", s.canary, s.stable),
            None => format!("{canary}={}", s.canary),
        }
    };
    match next {
        State::Scaling { step, .. } => normal(
            "StepStarted",
            format!("step {}/{n}: {}% — scaling to {}", step + 1, plan[*step].percent, pair(*step)),
        ),
        State::Waiting { step, .. } => normal(
            "StepCompleted",
            format!("step {}/{n} in place ({}); waiting {}s", step + 1, pair(*step), plan[*step].sleep),
        ),
        State::Finalizing => normal("Promoted", format!("{canary} is at 100%: removing the old versions")),
        State::Done => {
            normal("RolloutComplete", format!("{} runs {replicas} replicas", stable.unwrap_or(canary)))
        }
        State::Aborted { step, reason: AbortReason::ProgressDeadlineExceeded } => Note {
            severity: Severity::Warning,
            reason: "ProgressDeadlineExceeded",
            message: format!(
                "step {}/{n}: {canary} not available within {deadline}s; rolled back to {}",
                step + 1,
                stable.unwrap_or("?")
            ),
        },
        State::Aborted { step, reason: AbortReason::AbortRequested } => Note {
            severity: Severity::Warning,
            reason: "AbortRequested",
            message: format!(
                "abort requested at step {}/{n}: rolling back to {}",
                step + 1,
                stable.unwrap_or("?")
            ),
        },
        State::Aborted { step, reason: AbortReason::CheckFailed } => Note {
            severity: Severity::Warning,
            reason: "CheckFailed",
            message: format!(
                "step {}/{n}: {}; rolled back to {}",
                step + 1,
                mem.verdict.as_deref().unwrap_or("a check failed"),
                stable.unwrap_or("?")
            ),
        },
        State::Paused { step, by: Pauser::Check, .. } => Note {
            severity: Severity::Warning,
            reason: "CheckInconclusive",
            message: format!(
                "step {}/{n}: {}; paused until promoted (or aborted)",
                step + 1,
                mem.verdict.as_deref().unwrap_or("a check could not tell")
            ),
        },
        State::Checking { step, gate: Gate::BeforeStep } => normal(
            "GateChecking",
            format!("step {}/{n}: running the checks before scaling to {}", step + 1, pair(*step)),
        ),
        State::Checking { step, .. } => {
            normal("GateChecking", format!("step {}/{n}: running the checks after the wait", step + 1))
        }
        State::Paused { step, by: Pauser::Step, .. } => normal(
            "StepPaused",
            format!("step {}/{n} in place ({}); paused until promoted", step + 1, pair(*step)),
        ),
        State::Paused { step, left, by: Pauser::Annotation } => normal(
            "Paused",
            match left {
                Some(left) => {
                    format!("paused at step {}/{n} with {} of the wait left", step + 1, seconds_text(*left))
                }
                None => format!("paused at step {}/{n}", step + 1),
            },
        ),
        State::Init => normal("RolloutStarted", format!("rolling out {canary}")),
    }
}

fn normal(reason: &'static str, message: String) -> Note {
    Note { severity: Severity::Normal, reason, message }
}

/// The status that records `mem`.
fn status_of(input: &Input, mem: &Memory, plan: &[Step], replicas: i32) -> DeployerStatus {
    let old = input.status.cloned().unwrap_or_default();
    let n = plan.len();
    let goal = targets(mem, plan, replicas);
    let want =
        |v: &Option<String>| v.as_ref().and_then(|v| goal.iter().find(|(g, _)| g == v)).map(|(_, r)| *r);
    let progress_of = |step: usize, wait: String| Progress {
        step: format!("no. {}", step + 1),
        percentage: format!("{}% has been deployed", plan[step].percent),
        wait,
    };
    let (phase, current, weight, progress) = match &mem.state {
        State::Init => (Phase::Init, 0, Some(0), None),
        State::Scaling { step, .. } => (
            Phase::Scaling,
            step + 1,
            Some(plan[*step].percent),
            Some(progress_of(*step, format!("{}s till next step", plan[*step].sleep))),
        ),
        State::Waiting { step, until } => {
            let left = (*until - input.now).num_milliseconds().max(0);
            let left = (left + 999) / 1000;
            (
                Phase::Waiting,
                step + 1,
                Some(plan[*step].percent),
                Some(progress_of(*step, format!("{left}s till next step"))),
            )
        }
        State::Finalizing => (Phase::Finalizing, n, Some(100), old.progress.clone()),
        State::Done => (Phase::Done, n, None, old.progress.clone()),
        State::Aborted { step, .. } => (Phase::Aborted, step + 1, Some(0), old.progress.clone()),
        State::Paused { step, left, .. } => (
            Phase::Paused,
            step + 1,
            Some(plan[*step].percent),
            Some(progress_of(
                *step,
                match left {
                    Some(left) => format!("paused, {} till next step once resumed", seconds_text(*left)),
                    None => "paused until promoted".to_string(),
                },
            )),
        ),
        State::Checking { step, gate } => (
            Phase::Checking,
            step + 1,
            // The canary's share of what runs now: the previous step's before the gate opens.
            Some(match (gate, step.checked_sub(1)) {
                (Gate::BeforeStep, None) => 0,
                (Gate::BeforeStep, Some(before)) => plan[before].percent,
                _ => plan[*step].percent,
            }),
            Some(progress_of(
                *step,
                match gate {
                    Gate::BeforeStep => "checks before the step running".to_string(),
                    _ => "checks after the step running".to_string(),
                },
            )),
        ),
    };
    let mut status = DeployerStatus {
        observed_generation: Some(input.generation),
        phase: Some(phase),
        step: Some(format!("{current}/{n}")),
        current_step: Some(i32::try_from(current).unwrap_or(i32::MAX)),
        weight,
        stable_version: mem.stable.clone(),
        canary_version: mem.canary.clone(),
        stable_replicas: want(&mem.stable),
        canary_replicas: want(&mem.canary),
        plan: Some(mem.plan.clone()),
        step_started_at: match mem.state {
            State::Scaling { since, .. } => Some(since),
            _ => None,
        },
        wait_until: match mem.state {
            State::Waiting { until, .. } => Some(until),
            _ => None,
        },
        paused_by: match mem.state {
            State::Paused { by: Pauser::Step, .. } => Some("Step".into()),
            State::Paused { by: Pauser::Check, .. } => Some("Check".into()),
            State::Paused { by: Pauser::Annotation, .. } => Some("Annotation".into()),
            _ => None,
        },
        paused_wait_millis: match mem.state {
            State::Paused { left: Some(left), .. } => Some(left.num_milliseconds()),
            _ => None,
        },
        abort_reason: match mem.state {
            State::Aborted { reason, .. } => Some(reason.as_str().to_string()),
            _ => None,
        },
        gate: match mem.state {
            State::Checking { gate, .. } => Some(gate.as_str().to_string()),
            _ => None,
        },
        check_verdict: match mem.state {
            State::Aborted { reason: AbortReason::CheckFailed, .. }
            | State::Paused { by: Pauser::Check, .. } => mem.verdict.clone(),
            _ => None,
        },
        checks: mem.checks.clone(),
        handled: mem.handled.clone(),
        progress,
        conditions: old.conditions.clone(),
    };
    conditions(input, mem, &mut status, n);
    status
}

/// Sets `Ready` and `Progressing` from the state.
fn conditions(input: &Input, mem: &Memory, status: &mut DeployerStatus, n: usize) {
    let canary = mem.canary.as_deref().unwrap_or("?");
    let stable = mem.stable.as_deref().unwrap_or("?");
    let replicas = input.spec.deployment.replicas;
    let step_text = status.step.clone().unwrap_or_default();
    let (ready, progressing): ((&str, &str, String), (&str, &str, String)) = match &mem.state {
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
                AbortReason::ProgressDeadlineExceeded => format!(
                    "{canary} was not available in time at step {}/{n}; rolled back to {stable}",
                    step + 1
                ),
                AbortReason::AbortRequested => {
                    format!("abort requested at step {}/{n}; rolled back to {stable}", step + 1)
                }
                AbortReason::CheckFailed => format!(
                    "a check failed at step {}/{n} ({}); rolled back to {stable}",
                    step + 1,
                    mem.verdict.as_deref().unwrap_or("?")
                ),
            };
            (("False", "Aborted", msg.clone()), ("False", reason.as_str(), msg))
        }
        State::Paused { step, by, .. } => {
            let msg = match by {
                Pauser::Step => format!("{canary} paused at step {}/{n} until promoted", step + 1),
                Pauser::Annotation => {
                    format!("{canary} paused at step {}/{n} by deploy.example.com/paused", step + 1)
                }
                Pauser::Check => format!(
                    "{canary} paused at step {}/{n}: a check could not tell ({}); promote to go on, or abort",
                    step + 1,
                    mem.verdict.as_deref().unwrap_or("?")
                ),
            };
            (("False", "Paused", msg.clone()), ("Unknown", "Paused", msg))
        }
        State::Scaling { since, .. }
            if mem.stable.is_none()
                && input.now >= *since + TimeDelta::seconds(input.spec.progress_deadline_seconds) =>
        {
            let msg =
                format!("{canary} has not become available within {}s", input.spec.progress_deadline_seconds);
            (("False", "RolloutInProgress", msg.clone()), ("False", "ProgressDeadlineExceeded", msg))
        }
        _ => {
            let msg = match &mem.stable {
                None => format!("deploying {canary}"),
                Some(_) if mem.canary.is_none() => format!("settling on {stable}"),
                Some(_) => format!("rolling out {canary} over {stable}: step {step_text}"),
            };
            (("False", "RolloutInProgress", msg.clone()), ("True", "RolloutInProgress", msg))
        }
    };
    set_condition(&mut status.conditions, input, "Ready", ready.0, ready.1, &ready.2);
    set_condition(&mut status.conditions, input, "Progressing", progressing.0, progressing.1, &progressing.2);
}

/// Sets a condition (status `True`, `False` or `Unknown`), keeping its `lastTransitionTime`
/// unless its status flips.
fn set_condition(
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

/// When to look again without a change: at a wait's end (or its next remaining-time refresh), or
/// at a step's progress deadline.
fn requeue_of(input: &Input, state: &State, deadline: TimeDelta) -> Option<Duration> {
    let until = |t: DateTime<Utc>| (t - input.now).to_std().unwrap_or(Duration::ZERO);
    match state {
        // Past its end, a wait holds only for its metrics: their next measurement wakes it.
        State::Waiting { until: end, .. } if *end <= input.now => None,
        State::Waiting { until: end, .. } => {
            let left = until(*end);
            Some(match input.settings.wait_refresh {
                Some(tick) if !tick.is_zero() => left.min(tick),
                _ => left,
            })
        }
        State::Scaling { since, .. } if input.now < *since + deadline => Some(until(*since + deadline)),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
