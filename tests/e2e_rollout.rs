//! End-to-end: canary rollouts by the real operator binary on the local control plane
//! (kube-apiserver, etcd, controller manager, scheduler, kwok nodes). Sleeps are short.

mod harness;
mod support;

use std::time::Duration;

use chrono::{TimeDelta, Utc};
use deployer_operator::api::{Deployer, Phase};
use harness::{
    Recorder, apply, deployer, events, patch_spec, replicas, secs, setup, wait_deployments, wait_phase,
};
use k8s_openapi::api::apps::v1::Deployment;
use kube::{
    Api,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use serde_json::json;

/// The seed's story: 1.7.7 at 10, then 1.7.8 as a canary 1/9 → 3/7 → 6/4 → 10/0, the old
/// Deployment deleted, progress texts and conditions as the seed and DESIGN.md say.
#[tokio::test(flavor = "multi_thread")]
async fn seed_rollout_moves_replicas_step_by_step_and_deletes_the_old_version() {
    let (client, ns, _op) = setup("e2e-seed").await;
    let steps = [(10, 2), (30, 1), (60, 1), (100, 0)];
    apply(&client, &ns, &deployer("nginx", "1.7.7", 10, &steps)).await;

    // First deploy: nginx-1.7.7 with 10 replicas, Ready.
    let st = wait_phase(&client, &ns, "nginx", Phase::Done, secs(60)).await;
    assert_eq!(st.stable_version.as_deref(), Some("1.7.7"));
    assert_eq!(replicas(&client, &ns).await, [("nginx-1.7.7".to_string(), 10)].into());
    let ready = st.condition("Ready").expect("Ready condition");
    assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("True", "Available"));

    let rec = Recorder::start(&client, &ns, "nginx").await;
    let started = Utc::now();
    patch_spec(&client, &ns, "nginx", json!({"deployment": {"version": "1.7.8"}})).await;
    // Mid-rollout the progress block carries the seed's texts, with the wait counting down.
    let waiting = wait_phase(&client, &ns, "nginx", Phase::Waiting, secs(60)).await;
    let progress = waiting.progress.expect("progress");
    assert_eq!(progress.step, "no. 1");
    assert_eq!(progress.percentage, "10% has been deployed");
    assert!(progress.wait.ends_with("s till next step"), "{}", progress.wait);
    assert_eq!(waiting.step.as_deref(), Some("1/4"));
    assert_eq!(waiting.weight, Some(10));

    let done = wait_phase(&client, &ns, "nginx", Phase::Done, secs(90)).await;
    let took = Utc::now() - started;
    // Done is written before the old version is deleted (persist first): the timeline ends once it is gone.
    wait_deployments(&client, &ns, &[("nginx-1.7.8", 10)], secs(30)).await;
    let timeline = rec.stop();

    assert_eq!(
        timeline.waiting_pairs("nginx-1.7.8", "nginx-1.7.7"),
        [(1, 9), (3, 7), (6, 4), (10, 0)],
        "canary/stable replicas at each step; timeline: {timeline:#?}"
    );
    wait_deployments(&client, &ns, &[("nginx-1.7.8", 10)], secs(30)).await;
    assert_eq!(done.stable_version.as_deref(), Some("1.7.8"));
    assert_eq!(done.canary_version, None);
    assert_eq!(done.progress.as_ref().map(|p| p.step.as_str()), Some("no. 4"));
    assert_eq!(done.progress.as_ref().map(|p| p.percentage.as_str()), Some("100% has been deployed"));
    assert_eq!(done.observed_generation, Some(2));
    // The sleeps (2 + 1 + 1 s) ran, and not much more than that besides readiness.
    assert!(took >= TimeDelta::seconds(4), "rollout took {took}");
    assert!(took < TimeDelta::seconds(30), "rollout took {took}");

    harness::assert_no_step_repeated(&harness::counted_events(&client, &ns, "nginx").await);
    let evs = events(&client, &ns, "nginx").await;
    let reasons: Vec<&str> = evs.iter().map(|e| e.1.as_str()).collect();
    for r in ["Deploying", "RolloutStarted", "StepCompleted", "RolloutComplete"] {
        assert!(reasons.contains(&r), "missing Event {r}: {evs:#?}");
    }
    // At most one Event per step, plus the start and the end: the rollout started (step 1 with
    // it), steps 1-3 in place, done (the 100% step with it); and the first deploy's two.
    let count = |r: &str| evs.iter().filter(|e| e.1 == r).count();
    assert_eq!(
        (count("RolloutStarted"), count("StepCompleted"), count("RolloutComplete")),
        (1, 3, 2),
        "{evs:#?}"
    );
    assert_eq!(evs.len(), 7, "Deploying + 2 RolloutComplete + RolloutStarted + 3 StepCompleted: {evs:#?}");
    support::delete_namespace(&client, &ns).await;
}

/// DESIGN.md §4: R = 20 moves 2/18, 6/14, 12/8, 20/0 (the seed lost pods here).
#[tokio::test(flavor = "multi_thread")]
async fn twenty_replicas_move_2_6_12_20() {
    let (client, ns, _op) = setup("e2e-r20").await;
    let steps = [(10, 1), (30, 1), (60, 1)];
    apply(&client, &ns, &deployer("web", "1.0.0", 20, &steps)).await;
    wait_phase(&client, &ns, "web", Phase::Done, secs(60)).await;
    let rec = Recorder::start(&client, &ns, "web").await;
    patch_spec(&client, &ns, "web", json!({"deployment": {"version": "1.1.0"}})).await;
    wait_phase(&client, &ns, "web", Phase::Waiting, secs(60)).await;
    let done = wait_phase(&client, &ns, "web", Phase::Done, secs(90)).await;
    wait_deployments(&client, &ns, &[("web-1.1.0", 20)], secs(30)).await;
    let timeline = rec.stop();
    assert_eq!(done.step.as_deref(), Some("4/4"), "a final 100% step is implied");
    assert_eq!(
        timeline.waiting_pairs("web-1.1.0", "web-1.0.0"),
        [(2, 18), (6, 14), (12, 8), (20, 0)],
        "timeline: {timeline:#?}"
    );
    support::delete_namespace(&client, &ns).await;
}

/// Ownership, not labels: a Deployment that shares the labels (even the deployer label) but is not
/// owned by the Deployer is never scaled or deleted; versions that share a prefix do not collide.
#[tokio::test(flavor = "multi_thread")]
async fn foreign_deployments_are_never_touched_and_prefix_versions_do_not_collide() {
    let (client, ns, _op) = setup("e2e-own").await;
    let deps: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    // Same user labels, and even the deployer label, but no owner reference.
    let labels = json!({"app": "nginx", "operator": "deployer", "deploy.example.com/deployer": "nginx"});
    let foreign: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "nginx-legacy", "labels": labels},
        "spec": {"replicas": 2, "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels},
                "spec": {"containers": [{"name": "nginx", "image": "nginx:1.0"}]}}}
    }))
    .expect("a Deployment");
    deps.create(&PostParams::default(), &foreign).await.expect("create the foreign Deployment");

    let steps = [(50, 1)];
    apply(&client, &ns, &deployer("nginx", "1.7.8", 4, &steps)).await;
    wait_phase(&client, &ns, "nginx", Phase::Done, secs(60)).await;
    patch_spec(&client, &ns, "nginx", json!({"deployment": {"version": "1.7.80"}})).await;
    wait_phase(&client, &ns, "nginx", Phase::Waiting, secs(60)).await;
    let st = wait_phase(&client, &ns, "nginx", Phase::Done, secs(60)).await;
    assert_eq!(st.stable_version.as_deref(), Some("1.7.80"));
    wait_deployments(&client, &ns, &[("nginx-1.7.80", 4), ("nginx-legacy", 2)], secs(30)).await;
    let legacy = deps.get("nginx-legacy").await.expect("the foreign Deployment is still there");
    assert_eq!(legacy.metadata.generation, Some(1), "the foreign Deployment was never written to");
    support::delete_namespace(&client, &ns).await;
}

/// kill -9 during a wait: after the restart the wait ends at its original deadline (never before
/// it, at most 3 s after it on a loaded machine), and no step is repeated.
#[tokio::test(flavor = "multi_thread")]
async fn a_wait_survives_kill_9_and_ends_at_its_original_deadline() {
    let (client, ns, mut op) = setup("e2e-killwait").await;
    apply(&client, &ns, &deployer("app", "1.0.0", 4, &[(50, 6)])).await;
    wait_phase(&client, &ns, "app", Phase::Done, secs(60)).await;
    let rec = Recorder::start(&client, &ns, "app").await;
    patch_spec(&client, &ns, "app", json!({"deployment": {"version": "2.0.0"}})).await;
    let waiting = wait_phase(&client, &ns, "app", Phase::Waiting, secs(60)).await;
    let until = waiting.wait_until.expect("a persisted deadline");

    tokio::time::sleep(Duration::from_millis(1500)).await;
    op.kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    op.restart();

    wait_phase(&client, &ns, "app", Phase::Done, secs(60)).await;
    let timeline = rec.stop();
    let next_step = timeline.first_at("app-2.0.0", 4).expect("the canary reached 100%");
    let late = next_step - until;
    println!(
        "wait deadline {until}, next step observed at {next_step}: {} ms after",
        late.num_milliseconds()
    );
    assert!(late >= TimeDelta::zero(), "the wait ended {late} early");
    // Typically under 100 ms; 3 s leaves room for a loaded 2-core CI machine running every test
    // at once (a restarted operator must sync its caches, then reconcile, scale, and be watched).
    assert!(late <= TimeDelta::seconds(3), "the wait ended {late} late");
    // The deadline itself was never rewritten.
    let untils: Vec<_> =
        timeline.samples.iter().filter(|s| s.step == Some(1)).filter_map(|s| s.wait_until).collect();
    assert!(untils.iter().all(|u| *u == until), "deadline changed: {untils:?}");
    harness::assert_no_step_repeated(&harness::counted_events(&client, &ns, "app").await);
    assert!(op.is_running(), "the restarted operator is still running");
    support::delete_namespace(&client, &ns).await;
}

/// kill -9 while a step is Scaling (the canary's pods are slow to become ready) and again at
/// random moments through a whole rollout: the outcome is the same and no step is repeated.
#[tokio::test(flavor = "multi_thread")]
async fn kill_9_during_scaling_and_at_random_moments_does_not_change_the_outcome() {
    let (client, ns, mut op) = setup("e2e-killscale").await;
    apply(&client, &ns, &deployer("app", "1.0.0", 6, &[(30, 1), (60, 1)])).await;
    wait_phase(&client, &ns, "app", Phase::Done, secs(60)).await;

    // The "-slow" suffix makes kwok take 3 s to mark the canary's pods ready.
    let rec = Recorder::start(&client, &ns, "app").await;
    patch_spec(&client, &ns, "app", json!({"deployment": {"version": "2.0.0-slow"}})).await;
    wait_phase(&client, &ns, "app", Phase::Scaling, secs(60)).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    op.kill();
    tokio::time::sleep(Duration::from_secs(1)).await;
    op.restart();
    // Then keep killing it every 0.4–1.2 s until the rollout is done.
    let start = std::time::Instant::now();
    let mut kills = 1;
    loop {
        let st = harness::status(&client, &ns, "app").await;
        if st.as_ref().and_then(|s| s.phase) == Some(Phase::Done)
            && st.as_ref().and_then(|s| s.stable_version.as_deref().map(str::to_string)).as_deref()
                == Some("2.0.0-slow")
        {
            break;
        }
        assert!(start.elapsed() < secs(120), "rollout did not finish under kills: {st:?}");
        let pause = 400 + (kills * 263) % 800;
        tokio::time::sleep(Duration::from_millis(pause)).await;
        op.restart();
        kills += 1;
    }
    let timeline = rec.stop();
    println!("operator killed {kills} times during the rollout");
    wait_deployments(&client, &ns, &[("app-2.0.0-slow", 6)], secs(30)).await;
    // The canary only ever grew: no step ran twice in a way anyone could see.
    timeline.assert_only_grew("app-2.0.0-slow");
    harness::assert_no_step_repeated(&harness::counted_events(&client, &ns, "app").await);
    support::delete_namespace(&client, &ns).await;
}

/// A canary whose pods never become ready is rolled back after the progress deadline: the canary
/// is removed, the stable is at R again, phase Aborted, a Warning Event and the conditions say why.
#[tokio::test(flavor = "multi_thread")]
async fn a_canary_that_never_becomes_ready_is_rolled_back_after_the_deadline() {
    let (client, ns, _op) = setup("e2e-abort").await;
    let mut manifest = deployer("app", "1.0.0", 4, &[(50, 1)]);
    manifest["spec"]["progressDeadlineSeconds"] = json!(4);
    apply(&client, &ns, &manifest).await;
    wait_phase(&client, &ns, "app", Phase::Done, secs(60)).await;
    patch_spec(&client, &ns, "app", json!({"deployment": {"version": "2.0.0-never-ready"}})).await;
    wait_phase(&client, &ns, "app", Phase::Scaling, secs(30)).await;
    let st = wait_phase(&client, &ns, "app", Phase::Aborted, secs(30)).await;
    assert_eq!(st.stable_version.as_deref(), Some("1.0.0"));
    assert_eq!(st.canary_version.as_deref(), Some("2.0.0-never-ready"));
    let progressing = st.condition("Progressing").expect("Progressing");
    assert_eq!(
        (progressing.status.as_str(), progressing.reason.as_str()),
        ("False", "ProgressDeadlineExceeded")
    );
    assert_eq!(st.condition("Ready").map(|c| c.status.as_str()), Some("False"));
    wait_deployments(&client, &ns, &[("app-1.0.0", 4)], secs(30)).await;
    let evs = events(&client, &ns, "app").await;
    assert!(
        evs.iter().any(|(t, r, _)| t == "Warning" && r == "ProgressDeadlineExceeded"),
        "no Warning Event: {evs:#?}"
    );
    // It stays aborted.
    harness::assert_holds("the rollback holds", secs(3), || async {
        replicas(&client, &ns).await == [("app-1.0.0".to_string(), 4)].into()
    })
    .await;
    support::delete_namespace(&client, &ns).await;
}

/// A third version mid-rollout restarts the canary from step 1 against the same stable; setting
/// the version back to the stable mid-rollout is a fast rollback.
#[tokio::test(flavor = "multi_thread")]
async fn a_third_version_restarts_and_a_revert_rolls_back_fast() {
    let (client, ns, _op) = setup("e2e-change").await;
    apply(&client, &ns, &deployer("app", "1.0.0", 4, &[(25, 30), (50, 30)])).await;
    wait_phase(&client, &ns, "app", Phase::Done, secs(60)).await;

    patch_spec(&client, &ns, "app", json!({"deployment": {"version": "2.0.0"}})).await;
    wait_phase(&client, &ns, "app", Phase::Waiting, secs(60)).await;
    wait_deployments(&client, &ns, &[("app-1.0.0", 3), ("app-2.0.0", 1)], secs(30)).await;

    patch_spec(&client, &ns, "app", json!({"deployment": {"version": "3.0.0"}})).await;
    let st = harness::wait_status(&client, &ns, "app", "waiting on 3.0.0", secs(60), |s| {
        s.phase == Some(Phase::Waiting) && s.canary_version.as_deref() == Some("3.0.0")
    })
    .await;
    assert_eq!((st.stable_version.as_deref(), st.canary_version.as_deref()), (Some("1.0.0"), Some("3.0.0")));
    assert_eq!(st.current_step, Some(1), "the new canary starts from step 1");
    wait_deployments(&client, &ns, &[("app-1.0.0", 3), ("app-3.0.0", 1)], secs(30)).await;

    patch_spec(&client, &ns, "app", json!({"deployment": {"version": "1.0.0"}})).await;
    let st = harness::wait_status(&client, &ns, "app", "back on 1.0.0", secs(30), |s| {
        s.phase == Some(Phase::Done) && s.canary_version.is_none()
    })
    .await;
    assert_eq!((st.stable_version.as_deref(), st.canary_version.as_deref()), (Some("1.0.0"), None));
    wait_deployments(&client, &ns, &[("app-1.0.0", 4)], secs(30)).await;
    let reasons: Vec<String> = events(&client, &ns, "app").await.into_iter().map(|e| e.1).collect();
    assert!(
        reasons.contains(&"Superseded".to_string()) && reasons.contains(&"RolledBack".to_string()),
        "{reasons:?}"
    );
    support::delete_namespace(&client, &ns).await;
}

/// Hands off: a Deployment scaled or deleted by hand is restored to what the phase calls for; a
/// settled Deployer makes no write, even after an operator restart.
#[tokio::test(flavor = "multi_thread")]
async fn manual_scale_and_delete_are_repaired_and_a_settled_deployer_is_left_alone() {
    let (client, ns, mut op) = setup("e2e-drift").await;
    apply(&client, &ns, &deployer("app", "1.0.0", 3, &[(50, 1)])).await;
    wait_phase(&client, &ns, "app", Phase::Done, secs(60)).await;
    let deps: Api<Deployment> = Api::namespaced(client.clone(), &ns);

    deps.patch("app-1.0.0", &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": 1}})))
        .await
        .expect("scale by hand");
    wait_deployments(&client, &ns, &[("app-1.0.0", 3)], secs(30)).await;

    deps.delete("app-1.0.0", &DeleteParams::default()).await.expect("delete by hand");
    wait_deployments(&client, &ns, &[("app-1.0.0", 3)], secs(30)).await;
    wait_phase(&client, &ns, "app", Phase::Done, secs(30)).await;
    support::wait_until("Ready again", secs(30), || async {
        harness::status(&client, &ns, "app")
            .await
            .and_then(|s| s.condition("Ready").map(|c| c.status == "True"))
            .unwrap_or(false)
    })
    .await;

    // Settled: a restarted operator reconciles everything once and writes nothing.
    let dpls: Api<Deployer> = Api::namespaced(client.clone(), &ns);
    let versions = || async {
        (
            dpls.get("app").await.expect("deployer").metadata.resource_version,
            deps.get("app-1.0.0").await.expect("deployment").metadata.generation,
        )
    };
    // Let the repair settle: nothing changes for two seconds (within 60 s).
    let mut before = versions().await;
    let settling = std::time::Instant::now();
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let now = versions().await;
        if now == before {
            break;
        }
        assert!(settling.elapsed() < secs(60), "still changing 60 s after the repair: {before:?} → {now:?}");
        before = now;
    }
    op.restart();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(before, versions().await, "a settled Deployer was written to");
    support::delete_namespace(&client, &ns).await;
}

/// Deleting the Deployer removes its Deployments (owner references; the garbage collector of the
/// real controller manager does it).
#[tokio::test(flavor = "multi_thread")]
async fn deleting_the_deployer_removes_its_deployments() {
    let (client, ns, _op) = setup("e2e-gc").await;
    apply(&client, &ns, &deployer("app", "1.0.0", 2, &[(50, 1)])).await;
    wait_phase(&client, &ns, "app", Phase::Done, secs(60)).await;
    assert_eq!(replicas(&client, &ns).await.len(), 1);
    let dpls: Api<Deployer> = Api::namespaced(client.clone(), &ns);
    dpls.delete("app", &DeleteParams::default()).await.expect("delete the Deployer");
    wait_deployments(&client, &ns, &[], secs(60)).await;
    support::delete_namespace(&client, &ns).await;
}

/// What only the operator can check (the namespace of the Deployments) becomes Ready=False with
/// reason InvalidSpec and a Warning Event; nothing is created.
#[tokio::test(flavor = "multi_thread")]
async fn a_namespace_mismatch_is_reported_and_nothing_is_created() {
    let (client, ns, _op) = setup("e2e-invalid").await;
    let mut manifest = deployer("app", "1.0.0", 2, &[(50, 1)]);
    manifest["spec"]["deployment"]["namespace"] = json!("somewhere-else");
    apply(&client, &ns, &manifest).await;
    support::wait_until("an InvalidSpec condition", secs(30), || async {
        harness::status(&client, &ns, "app")
            .await
            .and_then(|s| s.condition("Ready").map(|c| c.reason == "InvalidSpec" && c.status == "False"))
            .unwrap_or(false)
    })
    .await;
    let st = harness::status(&client, &ns, "app").await.expect("status");
    assert!(st.condition("Ready").expect("Ready").message.contains("spec.deployment.namespace"));
    // The Warning follows the status write (persist first, then publish).
    support::wait_until("the InvalidSpec Warning", secs(10), || async {
        events(&client, &ns, "app").await.iter().any(|(t, r, _)| t == "Warning" && r == "InvalidSpec")
    })
    .await;
    harness::assert_holds("nothing is created", secs(2), || async {
        replicas(&client, &ns).await.is_empty()
    })
    .await;
    support::delete_namespace(&client, &ns).await;
}
