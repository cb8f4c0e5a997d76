//! Unit tests of the check rules: which checks a gate has, how answers count, what is due.

use chrono::TimeZone;

use super::*;
use crate::{
    api::{Analysis, PrometheusSource},
    fixtures::{seed_spec, step},
};

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 27, 12, 0, 0).single().expect("valid time")
}

fn metric(min: Option<f64>, max: Option<f64>) -> MetricCheck {
    MetricCheck {
        name: "rate".into(),
        query: "q".into(),
        min,
        max,
        interval_seconds: 10,
        count: 2,
        failure_limit: 0,
    }
}

fn hook(name: &str, gate: HookPoint) -> WebhookCheck {
    WebhookCheck {
        name: name.into(),
        gate,
        url: "http://h".into(),
        timeout_seconds: 3,
        retries: 3,
        metadata: Default::default(),
    }
}

fn spec() -> DeployerSpec {
    let mut spec = seed_spec();
    spec.steps = vec![step(20, 5), step(60, 5)];
    spec.steps[1].webhooks = vec![hook("own", HookPoint::BeforeStep)];
    spec.analysis = Some(Analysis {
        prometheus: Some(PrometheusSource { address: "http://p".into() }),
        metrics: vec![metric(Some(0.9), None)],
        webhooks: vec![
            hook("every", HookPoint::BeforeStep),
            hook("promo", HookPoint::BeforePromotion),
            hook("after", HookPoint::AfterStep),
            hook("undo", HookPoint::Rollback),
        ],
    });
    spec
}

fn names(spec: &DeployerSpec, step: usize, gate: Gate) -> Vec<String> {
    enter(spec, 3, step, gate, t0()).into_iter().map(|c| c.name).collect()
}

#[test]
fn each_gate_has_the_checks_of_its_point_wide_ones_first() {
    let s = spec();
    assert_eq!(names(&s, 0, Gate::BeforeStep), ["webhook/every"]);
    assert_eq!(names(&s, 1, Gate::BeforeStep), ["webhook/every", "webhook/own"]);
    assert_eq!(names(&s, 2, Gate::BeforeStep), ["webhook/every", "webhook/promo"], "the implied 100% step");
    assert_eq!(names(&s, 1, Gate::AfterStep), ["webhook/after"]);
    assert_eq!(names(&s, 2, Gate::Wait), ["metric/rate"]);
    assert_eq!(names(&s, 0, Gate::Rollback), ["webhook/undo"]);
}

#[test]
fn webhooks_are_due_at_once_and_metrics_one_interval_later() {
    let s = spec();
    let c = enter(&s, 3, 0, Gate::BeforeStep, t0());
    assert_eq!(c[0].next_at, Some(t0()));
    let m = enter(&s, 3, 0, Gate::Wait, t0());
    assert_eq!(m[0].next_at, Some(t0() + TimeDelta::seconds(10)));
    assert!(at(&m, Gate::Wait, 0));
    assert!(!at(&m, Gate::Wait, 1));
    assert!(!at(&[], Gate::Wait, 0));
}

fn answer(c: &mut [CheckStatus], s: &DeployerSpec, answer: Answer, now: DateTime<Utc>) {
    let key = Key { gate: c[0].gate, step: c[0].step, run: c[0].runs };
    fold(c, s, 3, &[Outcome { check: c[0].name.clone(), key, answer }], now);
}

#[test]
fn a_value_below_min_fails_and_the_verdict_names_it() {
    let s = spec();
    let mut c = enter(&s, 3, 0, Gate::Wait, t0());
    answer(&mut c, &s, Answer::Value(0.95), t0());
    assert_eq!((c[0].runs, c[0].failures, c[0].phase), (1, 0, CheckPhase::Running));
    assert_eq!(verdict(&c), Verdict::Pending);
    answer(&mut c, &s, Answer::Value(0.5), t0());
    assert_eq!(verdict(&c), Verdict::Failed("metric/rate: 0.5 is below min 0.9 (measurement 2 of 2)".into()));
}

#[test]
fn webhook_retries_back_off_and_end_after_retries() {
    let s = spec();
    let mut c = enter(&s, 3, 0, Gate::BeforeStep, t0());
    let mut gaps = Vec::new();
    for _ in 0..4 {
        answer(&mut c, &s, Answer::Status(503), t0());
        gaps.push(c[0].next_at.map(|t| (t - t0()).num_seconds()));
    }
    assert_eq!(gaps, [Some(1), Some(2), Some(4), None]);
    assert_eq!(verdict(&c), Verdict::Failed("webhook/every: answered HTTP 503".into()));
    assert_eq!(c[0].failures, 4);
}

#[test]
fn only_due_running_checks_are_called() {
    let s = spec();
    let facts = Facts {
        deployer: "d",
        namespace: "ns",
        stable: Some("1"),
        canary: Some("2"),
        steps: 3,
        percent: 20,
        phase: "Waiting",
        prometheus: None,
    };
    let c = enter(&s, 3, 0, Gate::Wait, t0());
    assert!(calls(&c, &s, &facts, t0()).is_empty());
    assert_eq!(next_due(&c, &s, 3, t0()), Some(t0() + TimeDelta::seconds(10)));
    let due = calls(&c, &s, &facts, t0() + TimeDelta::seconds(10));
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].request, Request::Query { address: "http://p".into(), query: "q".into() });
}

#[test]
fn validation_wants_a_prometheus_and_distinct_names() {
    let mut s = spec();
    assert_eq!(validate(&s, None), Ok(()));
    s.analysis.as_mut().expect("analysis").prometheus = None;
    assert!(validate(&s, None).is_err_and(|e| e.contains("--prometheus-address")));
    assert_eq!(validate(&s, Some("http://fallback")), Ok(()));
    s.steps[0].metrics = vec![metric(None, Some(1.0))];
    assert_eq!(
        validate(&s, Some("http://fallback")),
        Err("spec.steps[0].metrics: \"rate\" is already a name in spec.analysis.metrics".into())
    );
}
