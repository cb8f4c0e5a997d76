//! End-to-end: the rollout controls (pause, resume, promote, promote-full, abort, retry, pause
//! steps) through their annotations, on the real control plane, including operator restarts.

mod harness;
mod support;

use std::time::Duration;

use chrono::{TimeDelta, Utc};
use deployer_operator::api::{AbortReason, Deployer, PauseCause, Phase};
use harness::{apply, deployer, events, patch_spec, secs, setup, wait_deployments, wait_phase, wait_status};
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};
use serde_json::{Value, json};

/// Sets (or with `None` removes) an annotation on the Deployer, as `kubectl annotate` does.
async fn annotate(client: &Client, ns: &str, name: &str, key: &str, value: Option<&str>) {
    let api: Api<Deployer> = Api::namespaced(client.clone(), ns);
    let value = value.map_or(Value::Null, |v| json!(v));
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {key: value}}})),
    )
    .await
    .unwrap_or_else(|e| panic!("annotating {ns}/{name}: {e}"));
}

/// A request annotation's value: unique per call, as the plugin makes them.
fn token() -> String {
    Utc::now().to_rfc3339()
}

/// A rollout of `app` from 1.0.0 to `version` with `steps`, waited into `phase`.
async fn rolling(client: &Client, ns: &str, version: &str, steps: Value, phase: Phase) {
    let mut manifest = deployer("app", "1.0.0", 4, &[]);
    manifest["spec"]["steps"] = steps;
    apply(client, ns, &manifest).await;
    wait_phase(client, ns, "app", Phase::Done, secs(60)).await;
    patch_spec(client, ns, "app", json!({"deployment": {"version": version}})).await;
    wait_phase(client, ns, "app", phase, secs(60)).await;
}

/// Pause freezes a running wait; the pause survives a kill -9 of the operator with the time the
/// wait had left; resume gives that time back.
#[tokio::test(flavor = "multi_thread")]
async fn a_pause_holds_across_an_operator_restart_and_resume_keeps_the_remaining_wait() {
    let (client, ns, mut op) = setup("e2e-pause").await;
    rolling(&client, &ns, "2.0.0", json!([{"percent": 50, "sleep": 8}]), Phase::Waiting).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    annotate(&client, &ns, "app", "deploy.example.com/paused", Some("true")).await;
    let paused = wait_phase(&client, &ns, "app", Phase::Paused, secs(30)).await;
    let left = paused.paused_wait_millis.expect("the remaining wait is kept");
    assert!((4_000..=7_000).contains(&left), "left {left} ms of an 8 s wait after ~2 s");
    assert_eq!(paused.condition("Progressing").map(|c| c.status.as_str()), Some("Unknown"));
    // Events follow the status write and are best effort: a kill between the two loses one. Kill
    // once the Paused Event is out, so that the test below is about the pause, not that race.
    support::wait_until("the Paused Event", secs(10), || async {
        events(&client, &ns, "app").await.iter().any(|e| e.1 == "Paused")
    })
    .await;

    op.kill();
    tokio::time::sleep(Duration::from_secs(3)).await;
    op.restart();
    // Longer than the wait itself: the pause holds, and the remaining time is unchanged.
    tokio::time::sleep(Duration::from_secs(9)).await;
    let still = harness::status(&client, &ns, "app").await.expect("status");
    assert_eq!(still.phase, Some(Phase::Paused));
    assert_eq!(still.paused_wait_millis, Some(left));
    wait_deployments(&client, &ns, &[("app-1.0.0", 2), ("app-2.0.0", 2)], secs(10)).await;

    let resumed_at = Utc::now();
    annotate(&client, &ns, "app", "deploy.example.com/paused", None).await;
    let waiting = wait_phase(&client, &ns, "app", Phase::Waiting, secs(30)).await;
    let until = waiting.wait_until.expect("a deadline again");
    let expected = resumed_at + TimeDelta::milliseconds(left);
    assert!(
        (until - expected).num_milliseconds().abs() < 1_500,
        "resumed wait ends {until}, expected ~{expected}"
    );
    wait_phase(&client, &ns, "app", Phase::Done, secs(30)).await;
    let reasons: Vec<String> = events(&client, &ns, "app").await.into_iter().map(|e| e.1).collect();
    assert!(reasons.contains(&"Paused".into()) && reasons.contains(&"Resumed".into()), "{reasons:?}");
    support::delete_namespace(&client, &ns).await;
}

/// An abort requested while the operator is down is carried out when it is back; retry then
/// restarts the rollout from step 1.
#[tokio::test(flavor = "multi_thread")]
async fn an_abort_requested_while_the_operator_is_down_is_carried_out_after_restart() {
    let (client, ns, mut op) = setup("e2e-abort-req").await;
    rolling(&client, &ns, "2.0.0", json!([{"percent": 50, "sleep": 60}]), Phase::Waiting).await;
    op.kill();
    annotate(&client, &ns, "app", "deploy.example.com/abort", Some(&token())).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(harness::status(&client, &ns, "app").await.and_then(|s| s.phase), Some(Phase::Waiting));
    op.restart();
    let st = wait_phase(&client, &ns, "app", Phase::Aborted, secs(30)).await;
    assert_eq!(st.abort_reason, Some(AbortReason::AbortRequested));
    wait_deployments(&client, &ns, &[("app-1.0.0", 4)], secs(30)).await;
    let evs = events(&client, &ns, "app").await;
    assert!(evs.iter().any(|(t, r, _)| t == "Warning" && r == "AbortRequested"), "{evs:#?}");

    annotate(&client, &ns, "app", "deploy.example.com/retry", Some(&token())).await;
    let st = wait_status(&client, &ns, "app", "retried to step 1", secs(30), |s| {
        s.phase == Some(Phase::Waiting) && s.current_step == Some(1)
    })
    .await;
    assert_eq!(st.canary_version.as_deref(), Some("2.0.0"));
    wait_deployments(&client, &ns, &[("app-1.0.0", 2), ("app-2.0.0", 2)], secs(30)).await;
    support::delete_namespace(&client, &ns).await;
}

/// Promote during Scaling moves on to the next step; promote during a wait ends it; promote-full
/// goes to 100% (new version up first).
#[tokio::test(flavor = "multi_thread")]
async fn promote_during_scaling_and_waiting_and_promote_full() {
    let (client, ns, _op) = setup("e2e-promote").await;
    // "-slow": kwok makes the canary's pods ready only after 3 s, so Scaling lasts a while.
    let steps =
        json!([{"percent": 25, "sleep": 60}, {"percent": 50, "sleep": 60}, {"percent": 75, "sleep": 60}]);
    rolling(&client, &ns, "2.0.0-slow", steps, Phase::Scaling).await;
    annotate(&client, &ns, "app", "deploy.example.com/promote", Some(&token())).await;
    let st = wait_status(&client, &ns, "app", "at step 2", secs(30), |s| s.current_step == Some(2)).await;
    assert_ne!(st.phase, Some(Phase::Aborted));
    let st = wait_status(&client, &ns, "app", "waiting at step 2", secs(30), |s| {
        s.phase == Some(Phase::Waiting) && s.current_step == Some(2)
    })
    .await;
    assert!(st.wait_until.expect("until") > Utc::now() + TimeDelta::seconds(30), "a 60 s wait");
    wait_deployments(&client, &ns, &[("app-1.0.0", 2), ("app-2.0.0-slow", 2)], secs(30)).await;

    annotate(&client, &ns, "app", "deploy.example.com/promote", Some(&token())).await;
    wait_status(&client, &ns, "app", "waiting at step 3", secs(30), |s| {
        s.phase == Some(Phase::Waiting) && s.current_step == Some(3)
    })
    .await;
    annotate(&client, &ns, "app", "deploy.example.com/promote-full", Some(&token())).await;
    let done = wait_phase(&client, &ns, "app", Phase::Done, secs(30)).await;
    assert_eq!(done.stable_version.as_deref(), Some("2.0.0-slow"));
    wait_deployments(&client, &ns, &[("app-2.0.0-slow", 4)], secs(30)).await;
    let reasons: Vec<String> = events(&client, &ns, "app").await.into_iter().map(|e| e.1).collect();
    assert!(reasons.contains(&"PromoteRequested".into()) && reasons.contains(&"PromoteFullRequested".into()));
    harness::assert_no_step_repeated(&harness::counted_events(&client, &ns, "app").await);
    support::delete_namespace(&client, &ns).await;
}

/// A step with `pause: true` holds until promoted; on a finished rollout promote and abort change
/// nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_pause_step_waits_for_promote_and_a_finished_rollout_ignores_controls() {
    let (client, ns, _op) = setup("e2e-pausestep").await;
    rolling(&client, &ns, "2.0.0", json!([{"percent": 50, "pause": true}]), Phase::Paused).await;
    let st = harness::status(&client, &ns, "app").await.expect("status");
    assert_eq!(st.paused_by, Some(PauseCause::Step));
    assert_eq!(st.progress.as_ref().map(|p| p.wait.as_str()), Some("paused until promoted"));
    harness::assert_holds("the pause step holds", secs(3), || async {
        harness::status(&client, &ns, "app").await.and_then(|s| s.phase) == Some(Phase::Paused)
    })
    .await;
    annotate(&client, &ns, "app", "deploy.example.com/promote", Some(&token())).await;
    wait_phase(&client, &ns, "app", Phase::Done, secs(30)).await;
    wait_deployments(&client, &ns, &[("app-2.0.0", 4)], secs(30)).await;

    let dpls: Api<Deployer> = Api::namespaced(client.clone(), &ns);
    annotate(&client, &ns, "app", "deploy.example.com/abort", Some(&token())).await;
    annotate(&client, &ns, "app", "deploy.example.com/promote", Some(&token())).await;
    support::wait_until("the requests recorded as handled", secs(30), || async {
        harness::status(&client, &ns, "app").await.is_some_and(|s| s.handled.abort.is_some())
    })
    .await;
    let st = harness::status(&client, &ns, "app").await.expect("status");
    assert_eq!(st.phase, Some(Phase::Done));
    assert!(dpls.get("app").await.is_ok());
    wait_deployments(&client, &ns, &[("app-2.0.0", 4)], secs(5)).await;
    support::delete_namespace(&client, &ns).await;
}
