//! Table tests of the machine: the seed rollout, make-before-break, deadlines, edits mid-rollout.

use super::*;

#[test]
fn first_deploy_creates_the_version_at_full_size_then_is_done() {
    let mut w = World::new(seed_spec());
    let d = w.reconcile();
    assert_eq!(d.apply, vec![Scale { version: "1.7.7".into(), replicas: 10, create: true }]);
    assert_eq!(w.phase(), Phase::Scaling);
    assert_eq!(w.reasons(), ["Deploying"]);
    // Nothing more happens until the pods are available.
    let again = w.reconcile();
    assert!(again.apply.is_empty() && again.delete.is_empty());
    w.converge();
    let s = w.status.as_ref().expect("status");
    assert_eq!(
        (s.phase, s.stable_version.as_deref(), s.canary_version.as_deref()),
        (Some(Phase::Done), Some("1.7.7"), None)
    );
    assert_eq!(s.condition("Ready").map(|c| c.status.as_str()), Some("True"));
    assert_eq!(s.step.as_deref(), Some("1/1"));
    assert_eq!(w.deployments.len(), 1);
}

#[test]
fn seed_rollout_moves_1_9_3_7_6_4_10_0_with_the_sleeps_between() {
    let mut w = World::seed_done();
    let start = w.now;
    w.edit(|s| s.deployment.version = "1.7.8".into());

    // Step 1 starts at once: the canary is created at its size while the stable stays at 10.
    let d = w.reconcile();
    assert_eq!(d.apply, vec![Scale { version: "1.7.8".into(), replicas: 1, create: true }]);
    assert_eq!(w.phase(), Phase::Scaling);
    w.settle();

    // The status is written once per step, when the step is in place (its wait's deadline).
    let mut seen = Vec::new();
    let mut waits = Vec::new();
    let mut writes = 1;
    for _ in 0..100 {
        let before = w.status.clone();
        let d = w.reconcile();
        w.settle();
        let s = w.status.clone().expect("status");
        if before.as_ref() != Some(&s) {
            writes += 1;
        }
        if s.phase == Some(Phase::Waiting) && before.as_ref() != Some(&s) {
            seen.push(w.pair());
            waits.push((
                s.progress.clone().expect("progress"),
                (s.wait_until.expect("until") - w.now).num_seconds(),
            ));
        }
        if s.phase == Some(Phase::Done) {
            seen.push(w.pair());
            break;
        }
        if d.apply.is_empty()
            && d.delete.is_empty()
            && let Some(t) = d.requeue
        {
            w.advance(t.as_secs_f64());
        }
    }
    assert_eq!(
        seen,
        [(Some(1), Some(9)), (Some(3), Some(7)), (Some(6), Some(4)), (Some(10), None)],
        "canary/stable pairs at each step; at 100% the stable is deleted once the canary serves R"
    );
    assert_eq!(writes, 5, "one status write per step (the last one is Done), and one at the start");
    assert_eq!(waits.iter().map(|w| w.1).collect::<Vec<_>>(), [60, 30, 30]);
    assert_eq!(waits[2].0.step, "no. 3");
    assert_eq!(waits[2].0.percentage, "60% has been deployed");
    assert_eq!(waits[2].0.wait, "30s till next step");
    assert_eq!(w.phase(), Phase::Done);
    assert_eq!(w.deployments.keys().collect::<Vec<_>>(), ["1.7.8"]);
    assert_eq!(w.replicas("1.7.8"), Some(10));
    let s = w.status.as_ref().expect("status");
    assert_eq!(s.stable_version.as_deref(), Some("1.7.8"));
    // The sleeps ran in full: 60 + 30 + 30 seconds.
    assert!(w.now - start >= TimeDelta::seconds(120), "rollout took {}", w.now - start);
    assert!(w.now - start < TimeDelta::seconds(122), "rollout took {}", w.now - start);
    // One Event per step at most, plus the start and the end; none repeated.
    let reasons = w.reasons();
    let count = |r: &str| reasons.iter().filter(|x| **x == r).count();
    assert_eq!(
        (count("RolloutStarted"), count("StepStarted"), count("StepCompleted")),
        (1, 0, 3),
        "{reasons:?}"
    );
    assert_eq!(count("RolloutComplete"), 2, "first deploy + rollout: {reasons:?}");
}

#[test]
fn a_step_raises_the_canary_first_and_lowers_the_stable_only_once_it_is_available() {
    let mut w = World::seed_done();
    w.edit(|s| s.deployment.version = "1.7.8".into());
    let d = w.reconcile();
    assert_eq!(scales(&d), [("1.7.8", 1)], "canary up, stable untouched");
    assert_eq!(w.phase(), Phase::Scaling);
    // Not available yet: nothing else moves, however often we look.
    for _ in 0..3 {
        let d = w.reconcile();
        assert!(d.apply.is_empty() && d.delete.is_empty());
    }
    assert_eq!(w.replicas("1.7.7"), Some(10));
    w.settle();
    let d = w.reconcile();
    assert_eq!(scales(&d), [("1.7.7", 9)]);
    assert_eq!(w.phase(), Phase::Waiting);
}

#[test]
fn reconciling_a_settled_state_again_changes_nothing() {
    let mut w = World::seed_done();
    let d = w.decide();
    assert!(d.apply.is_empty() && d.delete.is_empty() && d.notes.is_empty());
    assert_eq!(Some(&d.status), w.status.as_ref());
    assert_eq!(d.requeue, None);

    // Mid-wait too: same inputs, same decision, no write.
    w.edit(|s| s.deployment.version = "1.7.8".into());
    for _ in 0..3 {
        w.reconcile();
        w.settle();
    }
    assert_eq!(w.phase(), Phase::Waiting);
    let d = w.decide();
    assert!(d.apply.is_empty() && d.delete.is_empty() && d.notes.is_empty());
    assert_eq!(Some(&d.status), w.status.as_ref());
}

#[test]
fn a_wait_ends_at_its_persisted_deadline_not_earlier_not_later() {
    let mut w = seed_waiting();
    let until = w.status.as_ref().and_then(|s| s.wait_until).expect("waiting");
    // A "restarted" operator knows nothing but the status: one second early, it still waits.
    w.now = until - TimeDelta::seconds(1);
    let before = w.status.clone();
    let d = w.reconcile();
    assert_eq!(w.phase(), Phase::Waiting);
    assert_eq!(d.requeue, Some(Duration::from_secs(1)));
    assert_eq!(w.status.as_ref().and_then(|s| s.wait_until), Some(until), "deadline not reset");
    // Without a wait refresh the seed's text is the step's sleep, written once: no write for a
    // countdown.
    assert_eq!(w.status, before, "the status was rewritten in the middle of the wait");
    assert_eq!(
        w.status.as_ref().and_then(|s| s.progress.as_ref()).map(|p| p.wait.as_str()),
        Some("60s till next step")
    );
    w.now = until;
    let stored = w.status.clone();
    let d = w.reconcile();
    assert_eq!(scales(&d), [("1.7.8", 3)]);
    // Step 2's scaling is implied by the wait's deadline: no status write, no Event.
    assert_eq!(w.status, stored);
    assert!(d.notes.is_empty(), "{:?}", d.notes);
    assert_eq!(d.goal, [("1.7.8".to_string(), 3), ("1.7.7".to_string(), 7)]);
}

#[test]
fn the_wait_text_counts_down_and_requeues_for_refresh() {
    let mut w = seed_waiting();
    // Written once per wait by default; every 10 s with a refresh.
    assert_eq!(w.decide().requeue, Some(Duration::from_secs(60)));
    w.settings.wait_refresh = Some(Duration::from_secs(10));
    let wait = |w: &World| w.status.as_ref().and_then(|s| s.progress.as_ref()).map(|p| p.wait.clone());
    assert_eq!(wait(&w).as_deref(), Some("60s till next step"));
    let d = w.decide();
    assert_eq!(d.requeue, Some(Duration::from_secs(10)));
    w.advance(10.0);
    w.reconcile();
    assert_eq!(wait(&w).as_deref(), Some("50s till next step"));
}

#[test]
fn replica_pairs_for_r_20_are_2_18_6_14_12_8_20_0() {
    let mut spec = seed_spec();
    spec.deployment.replicas = 20;
    let mut w = World::new(spec);
    w.converge();
    w.edit(|s| s.deployment.version = "1.7.8".into());
    let mut seen = Vec::new();
    for _ in 0..200 {
        let before = w.status.clone();
        w.reconcile();
        w.settle();
        if before != w.status && matches!(w.phase(), Phase::Waiting | Phase::Done) {
            seen.push(w.pair());
        }
        if w.phase() == Phase::Done {
            break;
        }
        if let Some(t) = w.decide().requeue {
            w.advance(t.as_secs_f64());
        }
    }
    assert_eq!(seen, [(Some(2), Some(18)), (Some(6), Some(14)), (Some(12), Some(8)), (Some(20), None)]);
}

#[test]
fn a_canary_that_never_becomes_available_is_rolled_back_after_the_deadline() {
    let mut w = World::seed_done();
    w.broken.insert("1.7.8".into());
    w.edit(|s| s.deployment.version = "1.7.8".into());
    w.reconcile();
    w.settle();
    w.reconcile();
    assert_eq!(w.phase(), Phase::Scaling);
    let since = w.status.as_ref().and_then(|s| s.step_started_at).expect("since");
    assert_eq!(w.decide().requeue, Some(Duration::from_secs(600)));
    w.now = since + TimeDelta::seconds(599);
    w.reconcile();
    assert_eq!(w.phase(), Phase::Scaling);
    w.now = since + TimeDelta::seconds(600);
    w.reconcile();
    assert_eq!(w.phase(), Phase::Aborted);
    assert!(
        w.notes
            .iter()
            .any(|n| n.severity == Severity::Warning && n.reason == Reason::ProgressDeadlineExceeded)
    );
    w.converge();
    assert_eq!(w.phase(), Phase::Aborted);
    assert_eq!(w.deployments.keys().collect::<Vec<_>>(), ["1.7.7"]);
    assert_eq!(w.replicas("1.7.7"), Some(10));
    let s = w.status.as_ref().expect("status");
    assert_eq!(s.condition("Progressing").map(|c| c.reason.as_str()), Some("ProgressDeadlineExceeded"));
    assert_eq!(s.condition("Ready").map(|c| c.status.as_str()), Some("False"));
    // It stays aborted: the failed version is not retried by itself.
    w.advance(3600.0);
    w.converge();
    assert_eq!(w.phase(), Phase::Aborted);
    // A new version starts a new rollout.
    w.edit(|s| s.deployment.version = "1.7.9".into());
    w.converge();
    assert_eq!(w.phase(), Phase::Done);
    assert_eq!(w.deployments.keys().collect::<Vec<_>>(), ["1.7.9"]);
}

#[test]
fn an_abort_restores_the_stable_before_removing_the_canary() {
    let mut w = World::seed_done();
    w.edit(|s| s.deployment.version = "1.7.8".into());
    // Step 1 completes (1/9); step 2's canary pods never become available.
    for _ in 0..3 {
        w.reconcile();
        w.settle();
    }
    w.broken.insert("1.7.8".into());
    w.advance(60.0);
    w.reconcile(); // Scaling step 2: canary to 3
    w.advance(600.0);
    let d = w.reconcile();
    assert_eq!(w.phase(), Phase::Aborted);
    assert_eq!(scales(&d), [("1.7.7", 10)]);
    assert!(d.delete.is_empty(), "canary kept until the stable is back");
    w.settle();
    let d = w.reconcile();
    assert_eq!(d.delete, ["1.7.8"]);
}

#[test]
fn a_third_version_mid_rollout_restarts_from_step_1_against_the_same_stable() {
    let mut w = seed_waiting();
    w.advance(60.0);
    w.reconcile();
    w.settle();
    w.reconcile();
    assert_eq!(w.pair(), (Some(3), Some(7)));
    w.edit(|s| s.deployment.version = "1.7.9".into());
    let d = w.reconcile();
    assert_eq!(w.phase(), Phase::Scaling);
    assert_eq!(
        scales(&d),
        [("1.7.9", 1), ("1.7.7", 9)],
        "new canary at step 1, stable up to step 1's size first"
    );
    assert!(d.delete.is_empty(), "abandoned canary kept until what it serves can be spared");
    w.settle();
    let d = w.reconcile();
    assert_eq!(d.delete, ["1.7.8"]);
    let s = w.status.as_ref().expect("status");
    assert_eq!((s.stable_version.as_deref(), s.canary_version.as_deref()), (Some("1.7.7"), Some("1.7.9")));
    assert!(w.reasons().contains(&"Superseded"));
    w.converge();
    assert_eq!(w.deployments.keys().collect::<Vec<_>>(), ["1.7.9"]);
}

#[test]
fn setting_the_version_back_to_the_stable_is_a_fast_rollback() {
    let mut w = seed_waiting();
    w.advance(60.0);
    w.reconcile();
    w.settle();
    w.reconcile();
    assert_eq!(w.pair(), (Some(3), Some(7)));
    w.edit(|s| s.deployment.version = "1.7.7".into());
    let d = w.reconcile();
    assert_eq!(w.phase(), Phase::Finalizing);
    assert_eq!(scales(&d), [("1.7.7", 10)]);
    assert!(d.delete.is_empty());
    w.settle();
    let d = w.reconcile();
    assert_eq!(d.delete, ["1.7.8"]);
    assert_eq!(w.phase(), Phase::Done);
    assert!(w.reasons().contains(&"RolledBack"));
    assert_eq!(w.status.as_ref().and_then(|s| s.stable_version.clone()).as_deref(), Some("1.7.7"));
}

#[test]
fn a_replicas_change_mid_rollout_recomputes_the_current_step() {
    let mut w = World::seed_done();
    w.edit(|s| s.deployment.version = "1.7.8".into());
    for _ in 0..4 {
        w.reconcile();
        w.settle();
    }
    assert_eq!((w.phase(), w.pair()), (Phase::Waiting, (Some(1), Some(9))));
    let until = w.status.as_ref().and_then(|s| s.wait_until);
    w.edit(|s| s.deployment.replicas = 20);
    w.reconcile();
    w.settle();
    w.reconcile();
    assert_eq!((w.phase(), w.pair()), (Phase::Waiting, (Some(2), Some(18))));
    assert_eq!(w.status.as_ref().and_then(|s| s.wait_until), until, "the wait keeps its deadline");
}

#[test]
fn a_steps_change_mid_rollout_restarts_from_step_1() {
    let mut w = seed_waiting();
    w.advance(60.0);
    w.reconcile();
    w.settle();
    w.reconcile();
    assert_eq!(w.status.as_ref().and_then(|s| s.current_step), Some(2));
    w.edit(|s| s.steps = vec![step(20, 5), step(50, 5)]);
    let d = w.reconcile();
    assert_eq!(w.status.as_ref().and_then(|s| s.current_step), Some(1));
    assert_eq!(w.status.as_ref().and_then(|s| s.step.clone()).as_deref(), Some("1/3"));
    // 20% of 10 = 2: the stable goes back up to 8 first, then the canary down to 2.
    assert_eq!(scales(&d), [("1.7.7", 8)]);
    w.settle();
    let d = w.reconcile();
    assert_eq!(scales(&d), [("1.7.8", 2)]);
    assert!(w.reasons().contains(&"StepsChanged"));
}

#[test]
fn drift_is_repaired_by_the_next_reconcile() {
    let mut w = seed_waiting();
    assert_eq!((w.phase(), w.pair()), (Phase::Waiting, (Some(1), Some(9))));
    // Someone scales the stable down by hand.
    let stable = w.deployments.get_mut("1.7.7").expect("stable");
    stable.replicas = 2;
    stable.available = 2;
    assert_eq!(scales(&w.reconcile()), [("1.7.7", 9)]);
    // Someone deletes the canary by hand.
    w.settle();
    w.deployments.remove("1.7.8");
    let d = w.reconcile();
    assert_eq!(d.apply, vec![Scale { version: "1.7.8".into(), replicas: 1, create: true }]);
    assert_eq!(w.phase(), Phase::Waiting, "the wait goes on");
    // And in Done, a deleted stable comes back at full size.
    w.converge();
    w.deployments.clear();
    let d = w.reconcile();
    assert_eq!(d.apply, vec![Scale { version: "1.7.8".into(), replicas: 10, create: true }]);
}

#[test]
fn a_namespace_mismatch_is_an_invalid_spec_that_touches_nothing() {
    let mut w = World::seed_done();
    w.edit(|s| {
        s.deployment.namespace = Some("elsewhere".into());
        s.deployment.version = "1.7.8".into();
    });
    let d = w.reconcile();
    assert!(d.apply.is_empty() && d.delete.is_empty());
    let s = w.status.as_ref().expect("status");
    assert_eq!(s.phase, Some(Phase::Done), "the persisted state is kept");
    let ready = s.condition("Ready").expect("Ready");
    assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "InvalidSpec"));
    assert!(ready.message.contains("spec.deployment.namespace"));
    assert_eq!(d.notes.len(), 1);
    assert_eq!(d.notes[0].severity, Severity::Warning);
    // The Warning is emitted once, not on every reconcile.
    assert!(w.reconcile().notes.is_empty());
    // Fixing the spec resumes.
    w.edit(|s| s.deployment.namespace = None);
    w.converge();
    assert_eq!(w.deployments.keys().collect::<Vec<_>>(), ["1.7.8"]);
}

#[test]
fn a_write_refused_again_is_told_once_and_leaves_the_status_as_it_is() {
    let mut w = World::seed_done();
    w.edit(|s| s.deployment.version = "1.7.8".into());
    let refused = |w: &World, why: Option<&str>| {
        decide(&Input {
            name: "nginx",
            namespace: "default",
            generation: w.generation,
            spec: &w.spec,
            status: w.status.as_ref(),
            observed: &w.seen(),
            conflicts: &[],
            refused: why,
            now: w.now,
            settings: &w.settings,
            paused: w.paused,
            requests: &w.requests,
            outcomes: &[],
        })
    };
    let why = "create Deployment default/nginx-1.7.8 refused: exceeded quota";
    let first = refused(&w, Some(why));
    let c = first.status.condition("Progressing").expect("Progressing").clone();
    assert_eq!((c.status.as_str(), c.reason.as_str(), c.message.as_str()), ("False", "WriteRefused", why));
    assert_eq!(first.notes.iter().filter(|n| n.reason == Reason::WriteRefused).count(), 1);
    w.persist(&first);
    // Retried later and refused again: the same status (its lastTransitionTime included), so
    // nothing to write, and no second Warning.
    w.advance(5.0);
    let again = refused(&w, Some(why));
    assert_eq!(Some(&again.status), w.status.as_ref());
    assert!(again.notes.iter().all(|n| n.reason != Reason::WriteRefused), "{:?}", again.notes);
    // Another refusal is told, and moves the condition's time only if its status changes.
    let other = refused(&w, Some("create Deployment default/nginx-1.7.8 refused: denied by a webhook"));
    assert_eq!(other.notes.iter().filter(|n| n.reason == Reason::WriteRefused).count(), 1);
    let c2 = other.status.condition("Progressing").expect("Progressing");
    assert_eq!(c2.last_transition_time, c.last_transition_time);
    // Once the write goes through, the condition says the rollout progresses again.
    let through = refused(&w, None);
    let c3 = through.status.condition("Progressing").expect("Progressing");
    assert_eq!((c3.status.as_str(), c3.last_transition_time), ("True", w.now));
}

#[test]
fn a_lost_status_adopts_the_owned_deployments_without_disruption() {
    let mut w = World::seed_done();
    w.status = None;
    let d = w.reconcile();
    assert!(d.apply.is_empty() && d.delete.is_empty());
    assert_eq!(w.phase(), Phase::Done);
    assert_eq!(w.status.as_ref().and_then(|s| s.stable_version.clone()).as_deref(), Some("1.7.7"));
}

#[test]
fn zero_replicas_roll_out_without_pods() {
    let mut spec = seed_spec();
    spec.deployment.replicas = 0;
    let mut w = World::new(spec);
    w.converge();
    w.edit(|s| s.deployment.version = "1.7.8".into());
    w.converge();
    assert_eq!(w.phase(), Phase::Done);
    assert_eq!(w.deployments.keys().collect::<Vec<_>>(), ["1.7.8"]);
    assert_eq!(w.replicas("1.7.8"), Some(0));
}
