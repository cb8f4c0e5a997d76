//! Controls: pause, resume, promote, promote-full, abort, retry, pause steps.

use super::*;

// Controls: pause, resume, promote, promote-full, abort, retry, pause steps.

#[test]
fn a_pause_freezes_a_wait_and_a_resume_gives_back_the_time_it_had_left() {
    let mut w = seed_waiting();
    w.advance(20.0);
    w.paused = true;
    w.reconcile();
    let s = w.status.clone().expect("status");
    assert_eq!(s.phase, Some(Phase::Paused));
    assert_eq!(s.paused_wait_millis, Some(40_000));
    assert_eq!(s.progress.as_ref().map(|p| p.wait.as_str()), Some("paused, 40s till next step once resumed"));
    assert_eq!(
        s.condition("Progressing").map(|c| (c.status.as_str(), c.reason.as_str())),
        Some(("Unknown", "Paused"))
    );
    assert_eq!(w.decide().requeue, None, "no timer while paused");
    // An hour later (or after any number of restarts) it is still paused, at the same step.
    w.advance(3600.0);
    let d = w.reconcile();
    assert!(d.apply.is_empty() && d.notes.is_empty());
    assert_eq!((w.phase(), w.pair()), (Phase::Paused, (Some(1), Some(9))));
    // Resumed: the wait runs for the 40 s it had left.
    w.paused = false;
    w.reconcile();
    let s = w.status.clone().expect("status");
    assert_eq!(s.phase, Some(Phase::Waiting));
    assert_eq!(s.wait_until, Some(w.now + TimeDelta::seconds(40)));
    assert!(w.reasons().contains(&"Paused") && w.reasons().contains(&"Resumed"));
}

#[test]
fn a_pause_during_scaling_holds_the_step_until_resumed() {
    let mut w = World::seed_done();
    w.edit(|s| s.deployment.version = "1.7.8".into());
    w.reconcile();
    w.settle();
    w.reconcile(); // Scaling step 1: canary to 1
    w.paused = true;
    w.reconcile();
    assert_eq!(w.phase(), Phase::Paused);
    w.settle();
    for _ in 0..3 {
        w.advance(1000.0);
        w.reconcile();
    }
    assert_eq!(w.phase(), Phase::Paused, "no progress deadline and no next step while paused");
    // The paused step's own replicas are held (its scaling completes); nothing moves beyond it.
    assert_eq!(w.pair(), (Some(1), Some(9)));
    w.paused = false;
    w.reconcile();
    assert_eq!((w.phase(), w.pair()), (Phase::Waiting, (Some(1), Some(9))));
}

#[test]
fn a_pause_step_waits_until_promoted() {
    let mut w = World::seed_done();
    w.edit(|s| {
        s.deployment.version = "1.7.8".into();
        s.steps = vec![Step { percent: 50, sleep: 0, pause: true, ..Step::default() }];
    });
    for _ in 0..3 {
        w.reconcile();
        w.settle();
    }
    let s = w.status.clone().expect("status");
    assert_eq!((s.phase, s.paused_by), (Some(Phase::Paused), Some(PauseCause::Step)));
    assert_eq!(s.progress.as_ref().map(|p| p.wait.as_str()), Some("paused until promoted"));
    assert_eq!(w.pair(), (Some(5), Some(5)));
    w.advance(10_000.0);
    w.reconcile();
    assert_eq!(w.phase(), Phase::Paused);
    // The paused annotation coming and going does not end a pause step: only promote does.
    w.paused = true;
    w.reconcile();
    w.paused = false;
    w.reconcile();
    assert_eq!(w.phase(), Phase::Paused);
    request(&mut w, |r, t| r.promote = Some(t));
    w.converge();
    assert_eq!(w.phase(), Phase::Done);
    assert_eq!(w.deployments.keys().collect::<Vec<_>>(), ["1.7.8"]);
}

#[test]
fn promote_ends_the_wait_and_goes_to_the_next_step_once_per_request() {
    let mut w = seed_waiting();
    request(&mut w, |r, t| r.promote = Some(t));
    let d = w.reconcile();
    assert_eq!(scales(&d), [("1.7.8", 3)], "step 2: the canary goes up first");
    assert_eq!(w.status.as_ref().and_then(|s| s.current_step), Some(2));
    assert!(w.reasons().contains(&"PromoteRequested"));
    // The same request is not carried out twice.
    w.settle();
    w.reconcile();
    w.settle();
    w.reconcile();
    assert_eq!((w.phase(), w.status.as_ref().and_then(|s| s.current_step)), (Phase::Waiting, Some(2)));
}

#[test]
fn promote_during_scaling_moves_on_to_the_next_step() {
    let mut w = World::seed_done();
    w.edit(|s| s.deployment.version = "1.7.8".into());
    w.reconcile();
    assert_eq!(w.phase(), Phase::Scaling);
    request(&mut w, |r, t| r.promote = Some(t));
    let d = w.reconcile();
    assert_eq!(w.status.as_ref().and_then(|s| s.current_step), Some(2));
    assert_eq!(scales(&d), [("1.7.8", 3)]);
}

#[test]
fn promote_full_goes_to_100_percent_surge_first() {
    let mut w = seed_waiting();
    request(&mut w, |r, t| r.promote_full = Some(t));
    let d = w.reconcile();
    assert_eq!(scales(&d), [("1.7.8", 10)], "the canary goes to 10 before the stable comes down");
    assert_eq!(w.status.as_ref().and_then(|s| s.step.clone()).as_deref(), Some("4/4"));
    w.settle();
    let d = w.reconcile();
    assert_eq!(d.delete, ["1.7.7"], "once the canary serves R, the stable goes");
    assert_eq!(w.phase(), Phase::Done);
    assert_eq!(w.deployments.keys().collect::<Vec<_>>(), ["1.7.8"]);
}

#[test]
fn abort_rolls_back_and_retry_restarts_from_step_1() {
    let mut w = seed_waiting();
    w.advance(60.0);
    w.reconcile();
    w.settle();
    w.reconcile();
    assert_eq!(w.pair(), (Some(3), Some(7)));
    request(&mut w, |r, t| r.abort = Some(t));
    let d = w.reconcile();
    let s = w.status.clone().expect("status");
    assert_eq!((s.phase, s.abort_reason), (Some(Phase::Aborted), Some(AbortReason::AbortRequested)));
    assert_eq!(s.condition("Progressing").map(|c| c.reason.as_str()), Some("AbortRequested"));
    assert_eq!(scales(&d), [("1.7.7", 10)], "the stable comes back first");
    assert!(d.delete.is_empty());
    w.converge();
    assert_eq!(w.deployments.keys().collect::<Vec<_>>(), ["1.7.7"]);
    assert!(w.notes.iter().any(|n| n.reason == Reason::AbortRequested && n.severity == Severity::Warning));

    request(&mut w, |r, t| r.retry = Some(t));
    let d = w.reconcile();
    assert_eq!(w.phase(), Phase::Scaling);
    assert_eq!(w.status.as_ref().and_then(|s| s.current_step), Some(1));
    assert_eq!(scales(&d), [("1.7.8", 1)], "the canary created again at step 1's size");
    w.converge();
    assert_eq!(w.deployments.keys().collect::<Vec<_>>(), ["1.7.8"]);
}

#[test]
fn a_finished_rollout_ignores_promote_and_abort_and_records_them() {
    let mut w = World::seed_done();
    request(&mut w, |r, t| {
        r.promote = Some(t.clone());
        r.abort = Some(t);
    });
    let d = w.reconcile();
    assert!(d.apply.is_empty() && d.delete.is_empty() && d.notes.is_empty());
    assert_eq!(w.phase(), Phase::Done);
    assert_eq!(w.status.as_ref().map(|s| s.handled.clone()), Some(w.requests.clone()));
    // A later rollout does not replay those old requests.
    w.edit(|s| s.deployment.version = "1.7.8".into());
    w.converge();
    assert_eq!(w.phase(), Phase::Done);
    assert_eq!(w.deployments.keys().collect::<Vec<_>>(), ["1.7.8"]);
}

#[test]
fn abort_takes_precedence_over_promote() {
    let mut w = seed_waiting();
    request(&mut w, |r, t| {
        r.promote_full = Some(t.clone());
        r.promote = Some(t.clone());
        r.abort = Some(t);
    });
    w.reconcile();
    assert_eq!(w.phase(), Phase::Aborted);
}
