//! `kubectl deployer status`: whether a rollout has finished, and how (a pure [`verdict`]), and
//! the one-line summaries it prints while it waits ([`progress_line`]).

use chrono::{DateTime, Utc};
use deployer_operator::{
    api::{Deployer, PauseCause},
    rollout::{State, state},
};

use crate::{
    controls::pending,
    frame::weight,
    snapshot::{Snapshot, replicas},
    style::left,
};

/// Where a rollout stands, for a CI pipeline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Not finished (why, or what it is doing).
    Pending(String),
    /// Done, `Ready=True`, and the status describes the current spec.
    Done(String),
    /// Aborted, or the operator cannot act on the spec (`InvalidSpec`, `NameConflict`).
    Failed(String),
}

/// The verdict on `d`. A status that describes an older generation of the spec, or a request
/// annotation not yet carried out, is never final: a `set version` or a `retry` just made must
/// not be judged on the state before it.
pub fn verdict(d: &Deployer) -> Verdict {
    let Some(status) = &d.status else {
        return Verdict::Pending("not yet reconciled: is the operator running?".into());
    };
    let generation = d.metadata.generation.unwrap_or(0);
    if status.observed_generation != Some(generation) {
        return Verdict::Pending(format!("the operator has not yet seen generation {generation}"));
    }
    let requests = pending(d);
    if !requests.is_empty() {
        return Verdict::Pending(format!("{} requested, not yet handled", requests.join(", ")));
    }
    let ready = status.condition("Ready");
    let halted = ["InvalidSpec", "NameConflict", "StatusUnreadable"];
    if let Some(c) = ready.filter(|c| c.status == "False" && halted.contains(&c.reason.as_str())) {
        return Verdict::Failed(format!("{}: {}", c.reason, c.message));
    }
    let message = ready.map(|c| c.message.clone()).unwrap_or_default();
    match state::read(Some(status)) {
        Ok(Some(mem)) => match mem.state {
            State::Aborted { reason, .. } => {
                Verdict::Failed(format!("rollout aborted ({reason}): {message}"))
            }
            State::Done if ready.is_some_and(|c| c.status == "True") => Verdict::Done(message),
            State::Done => Verdict::Pending(format!("Done, not yet Ready: {message}")),
            other => Verdict::Pending(other.phase().to_string()),
        },
        Ok(None) => Verdict::Pending("no phase yet".into()),
        Err(why) => Verdict::Failed(format!("status unreadable: {why}")),
    }
}

/// One line for a CI log:
/// `Waiting    step 2/4  50%  canary 2.0.0 1/2 available  stable 1.0.0 2/2 available  24s left`.
pub fn progress_line(snap: &Snapshot, now: DateTime<Utc>) -> String {
    let Some(d) = &snap.deployer else {
        return format!("deployer/{} not found in namespace {}", snap.name, snap.namespace);
    };
    let status = d.status.clone().unwrap_or_default();
    let phase = status.phase.map_or("Pending".to_string(), |p| p.to_string());
    let mut line =
        format!("{phase:<10} step {:<5} {:>3}%", status.step.as_deref().unwrap_or("-"), weight(&status));
    for (role, version) in [("canary", &status.canary_version), ("stable", &status.stable_version)] {
        let Some(version) = version else { continue };
        match snap.deployment(version).map(replicas) {
            Some(r) => line += &format!("  {role} {version} {}/{} available", r.available, r.desired),
            None => line += &format!("  {role} {version} (no Deployment)"),
        }
    }
    let wait = match state::read(Some(&status)).ok().flatten().map(|m| m.state) {
        Some(State::Waiting { until, .. }) => Some(format!("{} left", left(until - now))),
        Some(State::Paused { by, left: held, .. }) => Some(match (by, held) {
            (PauseCause::Step, _) => "paused until promoted".to_string(),
            (PauseCause::Check, _) => "paused by an inconclusive check until promoted".to_string(),
            (PauseCause::Annotation, Some(held)) => format!("paused with {} left", left(held)),
            (PauseCause::Annotation, None) => "paused".to_string(),
        }),
        _ => None,
    };
    if let Some(wait) = wait {
        line += &format!("  {wait}");
    }
    line
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::snapshot::fixtures::*;

    fn ready(status: &str, reason: &str, message: &str) -> serde_json::Value {
        json!({"type": "Ready", "status": status, "reason": reason, "message": message, "lastTransitionTime": at(0)})
    }

    #[test]
    fn done_needs_ready_true_and_the_current_generation() {
        let done = deployer(json!({
            "observedGeneration": 3, "phase": "Done", "conditions": [ready("True", "Available", "2.0.0 runs 4 available replicas")],
        }));
        assert_eq!(verdict(&done), Verdict::Done("2.0.0 runs 4 available replicas".into()));
        let mut stale = done.clone();
        stale.metadata.generation = Some(4);
        assert_eq!(verdict(&stale), Verdict::Pending("the operator has not yet seen generation 4".into()));
        let unavailable = deployer(json!({
            "observedGeneration": 3, "phase": "Done", "conditions": [ready("False", "Unavailable", "short")],
        }));
        assert!(matches!(verdict(&unavailable), Verdict::Pending(_)));
        let mut fresh = done;
        fresh.status = None;
        assert!(matches!(verdict(&fresh), Verdict::Pending(_)));
    }

    #[test]
    fn aborted_and_specs_the_operator_cannot_act_on_fail() {
        let aborted = deployer(json!({
            "observedGeneration": 3, "phase": "Aborted", "abortReason": "AbortRequested",
            "conditions": [ready("False", "Aborted", "abort requested at step 2/4; rolled back to 1.0.0")],
        }));
        assert_eq!(
            verdict(&aborted),
            Verdict::Failed(
                "rollout aborted (AbortRequested): abort requested at step 2/4; rolled back to 1.0.0".into()
            )
        );
        let conflict = deployer(json!({
            "observedGeneration": 3, "phase": "Done",
            "conditions": [ready("False", "NameConflict", "Deployment app-2.0.0 exists and is not owned")],
        }));
        assert_eq!(
            verdict(&conflict),
            Verdict::Failed("NameConflict: Deployment app-2.0.0 exists and is not owned".into())
        );
    }

    #[test]
    fn a_request_not_yet_handled_keeps_an_aborted_rollout_pending() {
        let mut retried = deployer(json!({
            "observedGeneration": 3, "phase": "Aborted", "handled": {"retry": "t1"},
            "conditions": [ready("False", "Aborted", "rolled back")],
        }));
        retried.metadata.annotations =
            Some([("deploy.example.com/retry".to_string(), "t2".to_string())].into());
        assert_eq!(verdict(&retried), Verdict::Pending("retry requested, not yet handled".into()));
    }

    #[test]
    fn progress_lines_summarise_phase_step_versions_and_wait() {
        let d = deployer(json!({
            "observedGeneration": 3, "phase": "Waiting", "step": "2/4", "weight": 50, "waitUntil": at(24),
            "stableVersion": "1.0.0", "canaryVersion": "2.0.0",
        }));
        let snap = snapshot(d, vec![deployment("1.0.0", 2, 2, 2), deployment("2.0.0", 2, 1, 1)], vec![]);
        assert_eq!(
            progress_line(&snap, now()),
            "Waiting    step 2/4    50%  canary 2.0.0 1/2 available  stable 1.0.0 2/2 available  24s left"
        );
        let paused = deployer(json!({
            "phase": "Paused", "step": "1/4", "weight": 25, "pausedBy": "Step", "stableVersion": "1.0.0",
            "canaryVersion": "2.0.0",
        }));
        assert_eq!(
            progress_line(&snapshot(paused, vec![], vec![]), now()),
            "Paused     step 1/4    25%  canary 2.0.0 (no Deployment)  stable 1.0.0 (no Deployment)  paused until promoted"
        );
    }
}
