//! Step gates in the state machine: metrics during a wait, webhooks before and after a step,
//! before promotion and on rollback, with their answers scripted.

use super::*;
use crate::{
    api::{Analysis, CheckPhase, HookPoint, MetricCheck, PrometheusSource, WebhookCheck},
    checks::{Answer, Request},
};

fn metric(name: &str, max: f64) -> MetricCheck {
    MetricCheck {
        name: name.into(),
        query: "sum(rate(errors{version=\"{{canary}}\",namespace=\"{{namespace}}\"}[1m]))".into(),
        min: None,
        max: Some(max),
        interval_seconds: 10,
        count: 3,
        failure_limit: 0,
    }
}

fn hook(name: &str, gate: HookPoint) -> WebhookCheck {
    WebhookCheck {
        name: name.into(),
        gate,
        url: format!("http://hooks.example/{name}"),
        timeout_seconds: 5,
        retries: 2,
        metadata: BTreeMap::new(),
    }
}

/// R = 4, steps 50%/20s then the implied 100%, settled at 1.7.7, with `analysis`.
fn world(analysis: Analysis) -> World {
    let mut spec = seed_spec();
    spec.deployment.replicas = 4;
    spec.steps = vec![step(50, 20)];
    spec.analysis = Some(Analysis {
        prometheus: Some(PrometheusSource { address: "http://prom:9090".into() }),
        ..analysis
    });
    let mut w = World::new(spec);
    w.converge();
    assert_eq!(w.phase(), Phase::Done);
    assert!(w.calls.is_empty(), "a first deploy runs no checks: {:?}", w.calls);
    w
}

fn start(w: &mut World) {
    w.edit(|s| s.deployment.version = "1.7.8".into());
}

fn status(w: &World) -> &DeployerStatus {
    w.status.as_ref().expect("a status")
}

fn calls_of<'a>(w: &'a World, check: &str) -> Vec<&'a Call> {
    w.calls.iter().filter(|c| c.check == check).collect()
}

#[test]
fn a_healthy_metric_is_measured_count_times_during_each_wait_and_the_rollout_completes() {
    let mut w = world(Analysis { metrics: vec![metric("errors", 0.05)], ..Analysis::default() });
    w.answers.insert("metric/errors".into(), vec![Answer::Value(0.01)]);
    start(&mut w);
    w.converge();
    assert_eq!(w.phase(), Phase::Done);
    assert_eq!(status(&w).stable_version.as_deref(), Some("1.7.8"));
    // Three measurements at each of the two steps (50% and the implied 100%).
    let calls = calls_of(&w, "metric/errors");
    assert_eq!(calls.len(), 6, "{calls:#?}");
    let steps: Vec<i32> = calls.iter().map(|c| c.key.step).collect();
    assert_eq!(steps, [1, 1, 1, 2, 2, 2]);
    let Request::Query { address, query } = &calls[0].request else { panic!("a query") };
    assert_eq!(address, "http://prom:9090");
    assert_eq!(query, "sum(rate(errors{version=\"1.7.8\",namespace=\"default\"}[1m]))");
    assert!(w.reasons().contains(&"RolloutComplete"));
}

#[test]
fn the_wait_lasts_until_the_metrics_are_measured_even_past_its_sleep() {
    let mut w = world(Analysis { metrics: vec![metric("errors", 0.05)], ..Analysis::default() });
    start(&mut w);
    // Reach the 50% wait.
    for _ in 0..10 {
        w.reconcile();
        w.settle();
        if w.phase() == Phase::Waiting {
            break;
        }
    }
    assert_eq!(w.phase(), Phase::Waiting);
    let entered = w.now;
    // Measurements at 10 s and 20 s; the 20 s sleep is over, the third measurement (30 s) is not.
    w.converge_until(|w| w.now >= entered + TimeDelta::seconds(20));
    // The 20 s measurement's answer comes back to the next reconcile.
    w.reconcile();
    assert_eq!(w.phase(), Phase::Waiting, "{:?}", status(&w).checks);
    assert_eq!(status(&w).checks[0].runs, 2);
    let d = w.decide();
    assert_eq!(d.requeue, Some(Duration::from_secs(10)), "woken by the next measurement");
    w.advance(10.0);
    w.reconcile(); // the third measurement goes out…
    w.reconcile(); // … and its answer ends the wait
    assert_ne!(w.phase(), Phase::Waiting);
    assert_eq!(status(&w).current_step, Some(2));
}

#[test]
fn a_bad_metric_aborts_and_rolls_back_with_the_value_in_the_verdict() {
    let mut w = world(Analysis { metrics: vec![metric("errors", 0.05)], ..Analysis::default() });
    w.answers.insert("metric/errors".into(), vec![Answer::Value(0.01), Answer::Value(0.2)]);
    start(&mut w);
    w.converge();
    assert_eq!(w.phase(), Phase::Aborted);
    let s = status(&w);
    assert_eq!(s.abort_reason, Some(AbortReason::CheckFailed));
    assert_eq!(s.check_verdict.as_deref(), Some("metric/errors: 0.2 is above max 0.05 (measurement 2 of 3)"));
    assert_eq!(w.pair(), (None, Some(4)), "canary gone, stable back at R");
    let failed = w.notes.iter().find(|n| n.reason == Reason::CheckFailed).expect("a CheckFailed Event");
    assert_eq!(failed.severity, Severity::Warning);
    assert!(failed.message.contains("rolled back to 1.7.7"), "{}", failed.message);
    assert_eq!(calls_of(&w, "metric/errors").len(), 2, "no measurement after the failure");
}

#[test]
fn failures_within_the_limit_pass() {
    let mut m = metric("errors", 0.05);
    m.failure_limit = 1;
    let mut w = world(Analysis { metrics: vec![m], ..Analysis::default() });
    w.answers
        .insert("metric/errors".into(), vec![Answer::Value(0.01), Answer::Value(0.2), Answer::Value(0.01)]);
    start(&mut w);
    w.converge();
    assert_eq!(w.phase(), Phase::Done);
}

#[test]
fn no_data_pauses_with_the_reason_and_promote_goes_on() {
    let mut w = world(Analysis { metrics: vec![metric("errors", 0.05)], ..Analysis::default() });
    w.answers.insert("metric/errors".into(), vec![Answer::NoData("the query returned no data".into())]);
    start(&mut w);
    w.converge();
    assert_eq!(w.phase(), Phase::Paused);
    let s = status(&w);
    assert_eq!(s.paused_by, Some(PauseCause::Check));
    assert_eq!(s.check_verdict.as_deref(), Some("metric/errors: the query returned no data"));
    assert_eq!(s.current_step, Some(1));
    assert_eq!(w.pair(), (Some(2), Some(2)), "the step's replicas stay");
    assert!(w.reasons().contains(&"CheckInconclusive"));
    let ready = s.condition("Ready").expect("Ready");
    assert!(ready.message.contains("could not tell"), "{}", ready.message);
    // Nothing more is measured while paused.
    let made = w.calls.len();
    w.advance(60.0);
    w.converge();
    assert_eq!(w.calls.len(), made);
    // Promote: on to the next step, whose own measurements now pass.
    w.answers.insert("metric/errors".into(), vec![Answer::Value(0.0)]);
    w.requests.promote = Some("1".into());
    w.converge();
    assert_eq!(w.phase(), Phase::Done);
    assert_eq!(w.pair(), (Some(4), None));
}

#[test]
fn a_before_step_webhook_gates_the_scale_up_and_a_500_is_retried_then_aborts() {
    let mut w =
        world(Analysis { webhooks: vec![hook("load", HookPoint::BeforeStep)], ..Analysis::default() });
    w.answers.insert("webhook/load".into(), vec![Answer::Status(500)]);
    start(&mut w);
    w.reconcile();
    w.settle();
    w.reconcile();
    // Init made the canary at 0; the gate holds it there.
    assert_eq!(w.phase(), Phase::Checking);
    assert_eq!(status(&w).gate, Some(Gate::BeforeStep));
    assert_eq!(w.pair(), (Some(0), Some(4)));
    w.converge();
    assert_eq!(w.phase(), Phase::Aborted);
    let calls = calls_of(&w, "webhook/load");
    assert_eq!(calls.len(), 3, "one call and two retries");
    // Without rollback webhooks, the failed check stays in status.checks for all to see.
    let check = &status(&w).checks;
    assert_eq!(check.len(), 1, "{check:?}");
    assert_eq!((check[0].phase, check[0].runs, check[0].failures), (CheckPhase::Failed, 3, 3));
    assert_eq!(status(&w).check_verdict.as_deref(), Some("webhook/load: answered HTTP 500"));
    assert_eq!(w.pair(), (None, Some(4)));
    // The payload says where the rollout is.
    let Request::Post { payload, .. } = &calls[2].request else { panic!("a post") };
    assert_eq!(payload["gate"], "BeforeStep");
    assert_eq!(payload["step"], 1);
    assert_eq!(payload["attempt"], 3);
    assert_eq!(payload["stableVersion"], "1.7.7");
    assert_eq!(payload["canaryVersion"], "1.7.8");
    assert_eq!(payload["percent"], 50);
}

#[test]
fn retries_back_off_and_a_timeout_then_success_passes() {
    let mut w =
        world(Analysis { webhooks: vec![hook("smoke", HookPoint::AfterStep)], ..Analysis::default() });
    w.answers.insert(
        "webhook/smoke".into(),
        vec![Answer::Unreachable("no answer within 5s".into()), Answer::Status(204)],
    );
    start(&mut w);
    w.converge();
    assert_eq!(w.phase(), Phase::Done);
    let calls = calls_of(&w, "webhook/smoke");
    // Step 1: a timeout, then 204; step 2: the same script restarts for the new gate.
    assert_eq!(
        calls.iter().map(|c| (c.key.step, c.key.run)).collect::<Vec<_>>(),
        [(1, 0), (1, 1), (2, 0), (2, 1)]
    );
}

#[test]
fn a_4xx_is_final() {
    let mut w =
        world(Analysis { webhooks: vec![hook("smoke", HookPoint::AfterStep)], ..Analysis::default() });
    w.answers.insert("webhook/smoke".into(), vec![Answer::Status(403)]);
    start(&mut w);
    w.converge();
    assert_eq!(w.phase(), Phase::Aborted);
    assert_eq!(calls_of(&w, "webhook/smoke").len(), 1);
}

#[test]
fn before_promotion_runs_only_before_the_final_step_and_rollback_hooks_are_told() {
    let mut w = world(Analysis {
        webhooks: vec![hook("promo", HookPoint::BeforePromotion), hook("undo", HookPoint::Rollback)],
        ..Analysis::default()
    });
    w.answers.insert("webhook/promo".into(), vec![Answer::Status(409)]);
    w.answers.insert("webhook/undo".into(), vec![Answer::Status(500)]);
    start(&mut w);
    w.converge();
    assert_eq!(w.phase(), Phase::Aborted);
    let promo = calls_of(&w, "webhook/promo");
    assert_eq!(promo.len(), 1);
    assert_eq!(promo[0].key.step, 2, "before the 100% step only");
    let Request::Post { payload, .. } = &promo[0].request else { panic!("a post") };
    assert_eq!(payload["gate"], "BeforePromotion");
    // The rollback hook failed three times; the rollback went on regardless.
    assert_eq!(calls_of(&w, "webhook/undo").len(), 3);
    assert_eq!(w.pair(), (None, Some(4)));
    assert_eq!(w.reasons().iter().filter(|r| **r == "RollbackHookFailed").count(), 1);
    let undo = &status(&w).checks[0];
    assert_eq!(
        (undo.name.as_str(), undo.phase, undo.gate),
        ("webhook/undo", CheckPhase::Failed, Gate::Rollback)
    );
}

#[test]
fn a_passed_check_is_not_repeated_and_a_failure_count_survives_a_restart() {
    let mut m = metric("errors", 0.05);
    m.failure_limit = 1;
    let mut w = world(Analysis {
        metrics: vec![m],
        webhooks: vec![hook("load", HookPoint::BeforeStep)],
        ..Analysis::default()
    });
    w.answers.insert("metric/errors".into(), vec![Answer::Value(0.5)]);
    start(&mut w);
    // Through the gate and into the wait, up to the first (failed) measurement.
    w.converge_until(|w| status(w).checks.first().is_some_and(|c| c.name == "metric/errors" && c.runs == 1));
    assert_eq!(calls_of(&w, "webhook/load").len(), 1);
    assert_eq!(status(&w).checks[0].failures, 1);
    // A restart: everything but the persisted status and the cluster is forgotten.
    let mut again = World { calls: Vec::new(), notes: Vec::new(), ..w.clone() };
    again.converge();
    assert_eq!(again.phase(), Phase::Aborted, "the second failure is over the limit");
    assert!(calls_of(&again, "webhook/load").is_empty(), "the passed gate is not called again");
    assert_eq!(calls_of(&again, "metric/errors").len(), 1);
}

#[test]
fn an_answer_for_another_run_is_ignored() {
    let mut w =
        world(Analysis { webhooks: vec![hook("load", HookPoint::BeforeStep)], ..Analysis::default() });
    start(&mut w);
    w.reconcile(); // the gate: its call goes out
    w.mailbox.clear();
    assert_eq!(w.decide().status.phase, Some(Phase::Checking));
    let call = w.calls.last().cloned().expect("a call");
    let mut stale = w.answer(&[call]);
    stale[0].key.run = 7;
    stale[0].answer = Answer::Status(500);
    let d = w.decide_with(&stale);
    assert_eq!(d.status.checks[0].runs, 0);
    assert_eq!(d.status.phase, Some(Phase::Checking));
}

#[test]
fn promote_skips_a_gate_but_not_the_next_ones() {
    let mut w =
        world(Analysis { webhooks: vec![hook("load", HookPoint::BeforeStep)], ..Analysis::default() });
    // The hook never answers in time: each call is retried later.
    w.answers.insert("webhook/load".into(), vec![Answer::Unreachable("connection refused".into())]);
    if let Some(a) = w.spec.analysis.as_mut() {
        a.webhooks[0].retries = 10;
    }
    start(&mut w);
    w.reconcile();
    w.settle();
    w.reconcile();
    assert_eq!(w.phase(), Phase::Checking);
    w.requests.promote = Some("1".into());
    w.reconcile();
    assert_eq!(w.phase(), Phase::Scaling, "the gate before step 1 is skipped");
    for _ in 0..20 {
        w.settle();
        w.reconcile();
        if w.phase() == Phase::Checking {
            break;
        }
        w.advance(5.0);
    }
    assert_eq!(w.phase(), Phase::Checking, "the gate before step 2 still holds");
    assert_eq!(status(&w).current_step, Some(2));
}

#[test]
fn metrics_without_a_prometheus_are_an_invalid_spec() {
    let mut w = world(Analysis::default());
    w.edit(|s| {
        s.analysis = Some(Analysis { metrics: vec![metric("errors", 1.0)], ..Analysis::default() });
        s.deployment.version = "1.7.8".into();
    });
    let d = w.reconcile();
    assert!(d.apply.is_empty());
    let ready = d.status.condition("Ready").expect("Ready");
    assert_eq!(ready.reason, "InvalidSpec");
    assert!(ready.message.contains("spec.analysis.prometheus.address"), "{}", ready.message);
    // The operator's --prometheus-address makes it valid.
    w.settings.prometheus = Some("http://prom:9090".into());
    w.converge();
    assert_eq!(w.phase(), Phase::Done);
    let Request::Query { address, .. } = &w.calls[0].request else { panic!("a query") };
    assert_eq!(address, "http://prom:9090");
}

#[test]
fn a_retry_runs_the_checks_afresh() {
    let mut w = world(Analysis { metrics: vec![metric("errors", 0.05)], ..Analysis::default() });
    w.answers.insert("metric/errors".into(), vec![Answer::Value(0.2)]);
    start(&mut w);
    w.converge();
    assert_eq!(w.phase(), Phase::Aborted);
    assert_eq!(status(&w).checks[0].phase, CheckPhase::Failed, "the failure stays visible");
    // The canary is fixed; a retry starts over and measures again rather than reuse the failure.
    w.answers.insert("metric/errors".into(), vec![Answer::Value(0.0)]);
    w.requests.retry = Some("1".into());
    w.converge();
    assert_eq!(w.phase(), Phase::Done);
    assert_eq!(calls_of(&w, "metric/errors").len(), 1 + 6);
}

#[test]
fn a_call_in_flight_is_not_made_again_and_a_lost_one_counts_as_unanswered_after_its_timeout() {
    let mut w =
        world(Analysis { webhooks: vec![hook("gate", HookPoint::BeforeStep)], ..Analysis::default() });
    start(&mut w);
    w.reconcile(); // the BeforeStep gate: the call goes out, marked in flight in the status
    assert_eq!(calls_of(&w, "webhook/gate").len(), 1);
    assert!(status(&w).checks[0].started_at.is_some());
    // The operator restarts before the answer comes back: the answer is lost.
    w.mailbox.clear();
    let d = w.decide();
    assert!(d.calls.is_empty(), "the call in flight is not made again: {d:?}");
    assert_eq!(d.requeue, Some(Duration::from_secs(5 + checks::ANSWER_GRACE_SECONDS as u64)));
    // Past its timeout (5 s) and the grace, it counts as a failed attempt and is retried.
    w.advance(10.0);
    w.reconcile();
    let c = &status(&w).checks[0];
    assert_eq!((c.runs, c.failures, c.started_at), (1, 1, None), "{c:?}");
    assert!(c.last_error.as_deref().is_some_and(|e| e.contains("no answer came back")), "{c:?}");
    w.converge();
    assert_eq!(
        calls_of(&w, "webhook/gate").len(),
        3,
        "the lost call, one retry, and step 2's gate: no duplicate"
    );
    assert_eq!(w.phase(), Phase::Done);
}

#[test]
fn no_more_than_eight_calls_of_one_deployer_are_in_flight() {
    let hooks = (0..16).map(|i| hook(&format!("h{i}"), HookPoint::BeforeStep)).collect();
    let mut w = world(Analysis { webhooks: hooks, ..Analysis::default() });
    start(&mut w);
    let d = w.reconcile();
    assert_eq!(d.calls.len(), checks::MAX_IN_FLIGHT);
    let d = w.reconcile(); // the first eight answered, the next eight go out
    assert_eq!(d.calls.len(), checks::MAX_IN_FLIGHT);
    w.converge();
    assert_eq!(w.phase(), Phase::Done);
    assert_eq!(w.calls.len(), 16 * 2, "each webhook once at each of the two steps");
}
