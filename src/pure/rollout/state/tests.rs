//! The codec: every state survives a round trip through the status; what cannot be interpreted is
//! an error naming the field; statuses of earlier versions still read.

use chrono::{TimeZone, Utc};
use serde_json::json;

use super::*;
use crate::api::Deployer;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 27, 12, 0, 0).single().expect("valid time")
}

fn memory(state: State) -> Memory {
    Memory {
        stable: Some("1.0.0".into()),
        canary: Some("2.0.0".into()),
        plan: "10%/60s,30%/pause,100%/0s".into(),
        state,
        handled: Controls { promote: Some("p1".into()), ..Controls::default() },
        checks: Vec::new(),
        verdict: None,
    }
}

#[test]
fn every_state_survives_a_round_trip_through_the_status() {
    let states = [
        State::Init,
        State::Scaling { step: 1, since: t0() },
        State::Waiting { step: 0, until: t0() },
        State::Finalizing,
        State::Done,
        State::Aborted { step: 2, reason: AbortReason::CheckFailed },
        State::Aborted { step: 0, reason: AbortReason::AbortRequested },
        State::Paused { step: 1, left: Some(TimeDelta::milliseconds(1500)), by: PauseCause::Annotation },
        State::Paused { step: 1, left: None, by: PauseCause::Step },
        State::Checking { step: 2, gate: Gate::BeforeStep },
        State::Checking { step: 0, gate: Gate::AfterStep },
    ];
    for state in states {
        let mut mem = memory(state.clone());
        if matches!(state, State::Aborted { reason: AbortReason::CheckFailed, .. }) {
            mem.verdict = Some("metric/errors: 0.5 is above max 0.1".into());
        }
        let status = encode(&mem);
        // Through JSON too, as the API server stores it.
        let stored: DeployerStatus =
            serde_json::from_value(serde_json::to_value(&status).expect("json")).expect("status");
        assert_eq!(read(Some(&stored)), Ok(Some(mem)), "{state:?}");
    }
}

#[test]
fn no_status_or_no_phase_is_no_memory() {
    assert_eq!(read(None), Ok(None));
    assert_eq!(read(Some(&DeployerStatus::default())), Ok(None));
}

/// The error `read` gives for a status whose JSON is `patch` over a valid Scaling status.
fn error_of(patch: serde_json::Value) -> String {
    let mut value =
        serde_json::to_value(encode(&memory(State::Scaling { step: 1, since: t0() }))).expect("json");
    for (k, v) in patch.as_object().expect("an object") {
        if v.is_null() {
            value.as_object_mut().expect("object").remove(k);
        } else {
            value[k] = v.clone();
        }
    }
    let status: DeployerStatus = serde_json::from_value(value).expect("reading a status never fails");
    read(Some(&status)).expect_err("not interpretable")
}

#[test]
fn what_cannot_be_interpreted_is_an_error_that_names_the_field() {
    let cases = [
        (json!({"currentStep": 4}), "status.currentStep 4 is not a step of the plan"),
        (json!({"currentStep": 0}), "status.currentStep 0"),
        (json!({"currentStep": -2147483648_i64}), "status.currentStep -2147483648"),
        (json!({"currentStep": null}), "status.currentStep is missing"),
        (json!({"plan": null}), "not a step of the plan \"\" (0 steps)"),
        (json!({"stepStartedAt": null}), "status.stepStartedAt is missing in phase Scaling"),
        (json!({"phase": "Waiting"}), "status.waitUntil is missing in phase Waiting"),
        (json!({"phase": "Paused"}), "status.pausedBy is missing in phase Paused"),
        (
            json!({"phase": "Paused", "pausedBy": "Step", "pausedWaitMillis": -1}),
            "status.pausedWaitMillis -1",
        ),
        (json!({"phase": "Checking"}), "status.gate is missing in phase Checking"),
        (
            json!({"phase": "Checking", "gate": "Rollback"}),
            "status.gate Rollback is not a gate of phase Checking",
        ),
        (
            json!({"phase": "Aborted", "stableVersion": null}),
            "status.stableVersion is missing in phase Aborted",
        ),
        (json!({"phase": "Init", "stableVersion": null}), "status.stableVersion is missing in phase Init"),
        (json!({"canaryVersion": null}), "status.canaryVersion is missing in phase Scaling"),
        (json!({"stableVersion": null}), "a first deploy (no status.stableVersion) has one step"),
        (json!({"stableVersion": "../../etc"}), "status.stableVersion \"../../etc\" is not a version"),
        (json!({"canaryVersion": "A".repeat(64)}), "is not a version"),
        // What the types themselves refuse: named with their path.
        (json!({"phase": "Rolling"}), "status.phase: unknown variant `Rolling`"),
        (json!({"pausedBy": "Someone"}), "status.pausedBy: unknown variant `Someone`"),
        (json!({"abortReason": 7}), "status.abortReason: invalid type"),
        (json!({"currentStep": 99999999999_i64}), "status.currentStep: invalid value"),
        (json!({"waitUntil": "yesterday"}), "status.waitUntil: input contains invalid characters"),
        (json!({"checks": [{"name": "x"}]}), "status.checks[0]: missing field `gate`"),
        (
            json!({"checks": [{"name": "x", "gate": "Wait", "step": 1, "phase": "Maybe", "runs": 0, "failures": 0}]}),
            "status.checks[0].phase: unknown variant `Maybe`",
        ),
        (json!({"handled": "promote"}), "status.handled: invalid type"),
    ];
    for (patch, want) in cases {
        let got = error_of(patch.clone());
        assert!(got.contains(want), "{patch}: {got:?} does not say {want:?}");
    }
}

#[test]
fn an_unreadable_status_keeps_its_conditions_and_never_fails_a_list() {
    let list = json!({
        "apiVersion": "deploy.example.com/v1alpha1", "kind": "DeployerList", "metadata": {},
        "items": [
            {"apiVersion": "deploy.example.com/v1alpha1", "kind": "Deployer", "metadata": {"name": "bad"},
             "spec": {"deployment": {"name": "a", "image": "a", "version": "1", "replicas": 1}, "steps": [{"percent": 100}]},
             "status": {"phase": "FromTheFuture", "observedGeneration": 4,
                        "conditions": [{"type": "Ready", "status": "True", "reason": "Available", "message": "m",
                                        "lastTransitionTime": "2026-11-27T12:00:00Z"}]}},
            {"apiVersion": "deploy.example.com/v1alpha1", "kind": "Deployer", "metadata": {"name": "good"},
             "spec": {"deployment": {"name": "b", "image": "b", "version": "1", "replicas": 1}, "steps": [{"percent": 100}]},
             "status": {"phase": "Done", "stableVersion": "1"}},
        ]
    });
    let list: kube::core::ObjectList<Deployer> = serde_json::from_value(list).expect("the list reads");
    let bad = list.items[0].status.clone().expect("a status");
    assert!(
        bad.unreadable
            .as_deref()
            .is_some_and(|w| w.contains("status.phase: unknown variant `FromTheFuture`"))
    );
    assert_eq!((bad.observed_generation, bad.conditions.len()), (Some(4), 1));
    assert!(read(Some(&bad)).is_err());
    let good = list.items[1].status.clone().expect("a status");
    assert_eq!(read(Some(&good)).map(|m| m.map(|m| m.state)), Ok(Some(State::Done)));
    // Never written back: `unreadable` is not part of the status on the wire.
    assert!(!serde_json::to_string(&bad).expect("json").contains("unreadable"));
}

#[test]
fn statuses_of_earlier_versions_still_read() {
    // The first version wrote no abort reason: its only reason was the progress deadline.
    let mut old = encode(&memory(State::Aborted { step: 1, reason: AbortReason::CheckFailed }));
    old.abort_reason = None;
    assert_eq!(
        read(Some(&old)).map(|m| m.map(|m| m.state)),
        Ok(Some(State::Aborted { step: 1, reason: AbortReason::ProgressDeadlineExceeded }))
    );
    // A first deploy waiting (and even paused) with no stable yet.
    let first = Memory {
        stable: None,
        plan: "100%/0s".into(),
        ..memory(State::Paused { step: 0, left: Some(TimeDelta::zero()), by: PauseCause::Annotation })
    };
    assert_eq!(read(Some(&encode(&first))), Ok(Some(first)));
}

#[test]
fn adoption_never_skips_a_step_of_a_rollout_that_was_under_way() {
    let o = |v: &str, replicas, available| Observed {
        version: v.into(),
        replicas,
        available,
        synced: true,
        image: None,
        deleting: false,
    };
    let plan = "10%/5s,100%/0s".to_string();
    // The canary at 1 beside the stable at 9: the rollout starts again from Init, over the stable.
    let (mem, adopted) = adopt(&[o("2", 1, 1), o("1", 9, 9)], "2", plan.clone());
    assert!(adopted);
    assert_eq!(
        (mem.stable.as_deref(), mem.canary.as_deref(), mem.state),
        (Some("1"), Some("2"), State::Init)
    );
    assert_eq!(mem.plan, plan);
    // Only the target: it is the stable.
    let (mem, _) = adopt(&[o("2", 4, 4)], "2", plan.clone());
    assert_eq!((mem.stable.as_deref(), mem.canary, mem.state), (Some("2"), None, State::Done));
    // Only an older version: it is the stable, and the spec's version a new rollout.
    let (mem, _) = adopt(&[o("1", 4, 4), o("0", 1, 0)], "2", plan.clone());
    assert_eq!((mem.stable.as_deref(), mem.canary, mem.state), (Some("1"), None, State::Done));
    // Nothing: nothing adopted.
    let (mem, adopted) = adopt(&[], "2", plan);
    assert!(!adopted);
    assert_eq!((mem.stable, mem.canary), (None, None));
}
