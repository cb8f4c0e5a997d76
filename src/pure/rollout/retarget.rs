//! Which rollout the spec asks for, given the one the status remembers: a first deploy, a new
//! canary over the stable, a rollback to the stable (the version set back), or the same rollout
//! with new steps.

use super::{
    Observed, Run,
    plan::{self, FIRST_DEPLOY},
    report::{Note, Reason},
    state::{Memory, State},
};

/// Points the memory at the rollout the spec asks for, and fixes the plan it runs.
pub fn follow_spec(run: &mut Run) {
    let input = run.input;
    let spec = &input.spec.deployment;
    let target = spec.version.as_str();
    // A first deploy that is superseded once it runs in full is the stable from now on.
    let full = |o: &Observed| o.synced && o.replicas == spec.replicas && o.available >= spec.replicas;
    let mem = &mut run.mem;
    if mem.stable.is_none()
        && let Some(old) = mem.canary.clone().filter(|old| old != target)
        && input.observed.iter().any(|o| o.version == old && !o.deleting && full(o))
    {
        *mem = Memory { stable: Some(old), canary: None, state: State::Done, ..mem.clone() };
    }
    match run.mem.stable.clone() {
        None if run.mem.canary.as_deref() != Some(target) => first_deploy(run),
        None => {}
        Some(stable) if stable == target => roll_back(run, &stable),
        Some(_) if run.mem.canary.as_deref() == Some(target) => follow_steps(run),
        Some(stable) => new_rollout(run, &stable),
    }
    // A first deploy runs one 100% step; it keeps that plan (for display) until the next rollout.
    let mem = &run.mem;
    let first = mem.stable.is_none() || (mem.canary.is_none() && plan::is_first_deploy(&mem.plan));
    run.plan = if first { FIRST_DEPLOY.to_vec() } else { run.steps.clone() };
}

/// A first deploy of the spec's version (superseding one that never ran in full).
fn first_deploy(run: &mut Run) {
    let spec = &run.input.spec.deployment;
    let target = spec.version.as_str();
    if let Some(old) = &run.mem.canary {
        run.notes
            .push(Note::normal(Reason::Superseded, format!("first deploy of {old} superseded by {target}")));
    }
    run.notes.push(Note::normal(
        Reason::Deploying,
        format!("first deploy: {target} with {} replicas", spec.replicas),
    ));
    run.mem = Memory {
        stable: None,
        canary: Some(target.to_string()),
        plan: plan::fingerprint(&FIRST_DEPLOY),
        state: State::Scaling { step: 0, since: run.input.now },
        handled: run.mem.handled.clone(),
        checks: Vec::new(),
        verdict: None,
    };
}

/// The version was set back to the stable one: the canary goes, no steps.
fn roll_back(run: &mut Run, stable: &str) {
    let Some(canary) = run.mem.canary.take() else { return };
    if !matches!(run.mem.state, State::Aborted { .. }) {
        run.notes.push(Note::normal(
            Reason::RolledBack,
            format!("version set back to the stable {stable}: removing canary {canary}"),
        ));
    }
    run.mem.state = State::Finalizing;
}

/// The same rollout: a change of its steps restarts it from step 1 (Init has not started a step
/// yet: it simply runs the new plan).
fn follow_steps(run: &mut Run) {
    let mem = &mut run.mem;
    if plan::matches(&mem.plan, &run.steps) || matches!(mem.state, State::Aborted { .. }) {
        return;
    }
    if mem.state.stepping() && mem.state != State::Init {
        run.notes
            .push(Note::normal(Reason::StepsChanged, "spec.steps changed: restarting from step 1".into()));
        mem.state = State::Scaling { step: 0, since: run.input.now };
        mem.checks.clear();
    }
    mem.plan = plan::fingerprint(&run.steps);
}

/// A new version over the stable (abandoning the canary of a rollout under way).
fn new_rollout(run: &mut Run, stable: &str) {
    let target = run.input.spec.deployment.version.clone();
    let mem = &mut run.mem;
    if let Some(old) = &mem.canary
        && !matches!(mem.state, State::Aborted { .. })
    {
        run.notes.push(Note::normal(Reason::Superseded, format!("canary {old} abandoned for {target}")));
    }
    run.notes.push(Note::normal(
        Reason::RolloutStarted,
        format!("rolling out {target} over {stable} in {} steps", run.steps.len()),
    ));
    mem.canary = Some(target);
    mem.plan = plan::fingerprint(&run.steps);
    mem.state = State::Init;
    mem.checks.clear();
}
