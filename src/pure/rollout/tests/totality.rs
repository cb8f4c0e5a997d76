//! Totality: any spec (at its bounds and beyond), any status (every field random, nonsense
//! included), any observation and any time give a decision — never a panic — and the decision
//! keeps the invariants: nothing below R by the operator's hand, moves only towards the goal, a
//! status the operator can read back, no hot loop, no sleep beyond what a runtime holds.

use chrono::DateTime;
use proptest::{collection::vec, option, prelude::*, sample::select};

use super::*;
use crate::api::{
    AbortReason, Analysis, CheckPhase, CheckStatus, Condition, Gate, HookPoint, MetricCheck, PauseCause,
    Progress, PrometheusSource, WebhookCheck,
};

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 27, 12, 0, 0).single().expect("valid time")
}

/// Times a status may carry: near now, far away, and the ends of the calendar.
fn time() -> impl Strategy<Value = DateTime<Utc>> {
    prop_oneof![
        (-100_000i64..100_000).prop_map(|ms| t0() + TimeDelta::milliseconds(ms)),
        Just(DateTime::<Utc>::MIN_UTC),
        Just(DateTime::<Utc>::MAX_UTC),
        (-1i64..=1).prop_map(|s| t0() + TimeDelta::days(365 * 200_000 * s)),
    ]
}

fn int() -> impl Strategy<Value = i32> {
    prop_oneof![-3i32..12, select(vec![i32::MIN, -1, 0, 1, 100, 101, 100_000, 100_001, i32::MAX])]
}

fn long() -> impl Strategy<Value = i64> {
    prop_oneof![
        -3i64..700,
        select(vec![i64::MIN, -1, 0, 1, 31_536_000, 31_536_001, 9_000_000_000_000, i64::MAX])
    ]
}

fn version() -> impl Strategy<Value = String> {
    select(vec!["1.0.0", "2.0.0", "3.0.0", "", "UPPER", "../x", "a-", "9".repeat(80).leak()])
        .prop_map(String::from)
}

fn text() -> impl Strategy<Value = String> {
    select(vec!["", "x", "10%/5s", "10%/5s,100%/0s", "100%/0s", "100%/pause", "1,2,3,4,5,6,7", "🦀"])
        .prop_map(String::from)
}

fn spec() -> impl Strategy<Value = DeployerSpec> {
    let step = (int(), long(), any::<bool>()).prop_map(|(percent, sleep, pause)| Step {
        percent,
        sleep,
        pause,
        ..Step::default()
    });
    let metric =
        (int(), long(), int(), option::of(-1e300f64..1e300)).prop_map(|(count, interval, limit, max)| {
            MetricCheck {
                name: "m".into(),
                query: "q{{canary}}".into(),
                min: None,
                max: max.or(Some(f64::NAN)),
                interval_seconds: interval,
                count,
                failure_limit: limit,
            }
        });
    let hook = (
        select(vec![
            HookPoint::BeforeStep,
            HookPoint::AfterStep,
            HookPoint::BeforePromotion,
            HookPoint::Rollback,
        ]),
        long(),
        int(),
    )
        .prop_map(|(gate, timeout, retries)| WebhookCheck {
            name: "w".into(),
            gate,
            url: "http://127.0.0.1:1/h".into(),
            timeout_seconds: timeout,
            retries,
            metadata: Default::default(),
        });
    (vec(step, 0..5), int(), long(), version(), option::of((vec(metric, 0..2), vec(hook, 0..3)))).prop_map(
        |(steps, replicas, deadline, v, analysis)| {
            let mut s = seed_spec();
            s.steps = steps;
            s.deployment.replicas = replicas;
            s.deployment.version = v;
            s.progress_deadline_seconds = deadline;
            s.analysis = analysis.map(|(metrics, webhooks)| Analysis {
                prometheus: Some(PrometheusSource { address: "http://127.0.0.1:1".into() }),
                metrics,
                webhooks,
            });
            s
        },
    )
}

fn check() -> impl Strategy<Value = CheckStatus> {
    (
        select(vec!["metric/m", "webhook/w", "webhook/gone"]),
        select(vec![Gate::BeforeStep, Gate::Wait, Gate::AfterStep, Gate::Rollback]),
        int(),
        select(vec![CheckPhase::Running, CheckPhase::Passed, CheckPhase::Failed, CheckPhase::Inconclusive]),
        (int(), int()),
        (option::of(time()), option::of(time())),
    )
        .prop_map(|(name, gate, step, phase, (runs, failures), (next_at, started_at))| CheckStatus {
            name: name.into(),
            gate,
            step,
            phase,
            runs,
            failures,
            last_value: None,
            last_error: None,
            last_at: None,
            next_at,
            started_at,
        })
}

fn status() -> impl Strategy<Value = DeployerStatus> {
    let phase = option::of(select(vec![
        Phase::Init,
        Phase::Scaling,
        Phase::Waiting,
        Phase::Finalizing,
        Phase::Done,
        Phase::Aborted,
        Phase::Paused,
        Phase::Checking,
    ]));
    let enums = (
        option::of(select(vec![PauseCause::Annotation, PauseCause::Step, PauseCause::Check])),
        option::of(select(vec![
            AbortReason::ProgressDeadlineExceeded,
            AbortReason::AbortRequested,
            AbortReason::CheckFailed,
        ])),
        option::of(select(vec![Gate::BeforeStep, Gate::Wait, Gate::AfterStep, Gate::Rollback])),
    );
    let times = (option::of(time()), option::of(time()), option::of(long()));
    let versions = (option::of(version()), option::of(version()), option::of(text()));
    (phase, option::of(int()), enums, times, versions, vec(check(), 0..3), option::of(text())).prop_map(
        |(
            phase,
            current_step,
            (paused_by, abort_reason, gate),
            (since, until, left),
            (stable, canary, plan),
            checks,
            handled,
        )| {
            DeployerStatus {
                phase,
                current_step,
                stable_version: stable,
                canary_version: canary,
                plan,
                step_started_at: since,
                wait_until: until,
                paused_by,
                paused_wait_millis: left,
                abort_reason,
                gate,
                check_verdict: Some("v".into()),
                checks,
                handled: Controls { promote: handled, ..Controls::default() },
                progress: Some(Progress::default()),
                conditions: vec![Condition {
                    type_: "Ready".into(),
                    status: "Maybe".into(),
                    reason: String::new(),
                    message: String::new(),
                    last_transition_time: DateTime::<Utc>::MIN_UTC,
                    observed_generation: Some(i64::MIN),
                }],
                ..DeployerStatus::default()
            }
        },
    )
}

fn observed() -> impl Strategy<Value = Vec<Observed>> {
    vec((version(), int(), int(), any::<bool>(), any::<bool>()), 0..4).prop_map(|ds| {
        ds.into_iter()
            .map(|(version, replicas, available, synced, deleting)| Observed {
                image: Some(format!("nginx:{version}")),
                version,
                replicas,
                available,
                synced,
                deleting,
            })
            .collect()
    })
}

fn outcomes() -> impl Strategy<Value = Vec<checks::Outcome>> {
    use checks::{Answer, Key, Outcome};
    let answer = prop_oneof![
        (-1e300f64..1e300).prop_map(Answer::Value),
        Just(Answer::Value(f64::NAN)),
        Just(Answer::Value(f64::INFINITY)),
        any::<u16>().prop_map(Answer::Status),
        Just(Answer::NoData("x".repeat(5000))),
        Just(Answer::Unreachable("timed out".into())),
    ];
    vec(
        (
            select(vec!["metric/m", "webhook/w"]),
            select(vec![Gate::BeforeStep, Gate::Wait, Gate::AfterStep, Gate::Rollback]),
            int(),
            int(),
            answer,
        ),
        0..3,
    )
    .prop_map(|os| {
        os.into_iter()
            .map(|(check, gate, step, run, answer)| Outcome {
                check: check.into(),
                key: Key { gate, step, run },
                answer,
            })
            .collect()
    })
}

/// Σ pods serving once the moves are made, as a ReplicaSet makes them (unavailable pods go first).
/// One Deployment per version, as the shell observes them (a version seen twice counts once).
fn serving_after(observed: &[Observed], d: &Decision) -> i64 {
    unique(observed)
        .iter()
        .filter(|o| !o.deleting && !d.delete.contains(&o.version))
        .map(|o| {
            let available = i64::from(o.available).clamp(0, i64::from(o.replicas.max(0)));
            match d.apply.iter().find(|s| s.version == o.version) {
                Some(s) => available.min(i64::from(s.replicas.max(0))),
                None => available,
            }
        })
        .sum()
}

/// The first observation of each version.
fn unique(observed: &[Observed]) -> Vec<Observed> {
    let mut seen = std::collections::HashSet::new();
    observed.iter().filter(|o| seen.insert(o.version.clone())).cloned().collect()
}

proptest! {
    // TOTALITY_CASES=50000 for a longer search; 3,000 in `make test`.
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("TOTALITY_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(3000)
    ))]

    #[test]
    fn any_spec_status_observation_and_time_gives_a_decision_that_keeps_the_invariants(
        spec in spec(),
        status in option::of(status()),
        observed in observed(),
        outcomes in outcomes(),
        now in time(),
        paused in any::<bool>(),
        abort in any::<bool>(),
    ) {
        let settings = Settings::default();
        let requests = Controls { abort: abort.then(|| "a".into()), promote: Some("p".into()), ..Controls::default() };
        let input = Input {
            name: "nginx",
            namespace: "default",
            generation: 1,
            spec: &spec,
            status: status.as_ref(),
            observed: &observed,
            conflicts: &[],
            refused: None,
            now,
            settings: &settings,
            paused,
            requests: &requests,
            outcomes: &outcomes,
        };
        let d = decide(&input);
        // Nothing below R by the operator's hand (once a stable exists), nor below what served.
        let before: i64 = unique(&observed).iter().filter(|o| !o.deleting)
            .map(|o| i64::from(o.available).clamp(0, i64::from(o.replicas.max(0)))).sum();
        let r = i64::from(spec.deployment.replicas.max(0));
        if d.status.stable_version.is_some() {
            prop_assert!(serving_after(&observed, &d) >= before.min(r), "availability {before} -> {} (R = {r}): {d:?}", serving_after(&observed, &d));
        }
        // Moves only towards the goal the status announces; nothing both applied and deleted.
        for s in &d.apply {
            prop_assert!(s.replicas >= 0);
            let want = d.goal.iter().find(|(v, _)| *v == s.version).map(|(_, r)| *r);
            prop_assert!(want.is_some(), "{} moved outside the goal: {d:?}", s.version);
            prop_assert!(!d.delete.contains(&s.version));
        }
        // What it writes, it can read back: a readable status (or none) never becomes unreadable.
        if state::read(status.as_ref()).is_ok() {
            let json = serde_json::to_value(&d.status).expect("a status serializes");
            let back: DeployerStatus = serde_json::from_value(json).expect("and deserializes");
            prop_assert!(state::read(Some(&back)).is_ok(), "{:?} unreadable: {d:?}", state::read(Some(&back)));
        }
        // No hot loop, no timer beyond what a runtime holds.
        if let Some(after) = d.requeue {
            prop_assert!(after <= MAX_REQUEUE);
            prop_assert!(!after.is_zero() || !d.calls.is_empty(), "requeue 0 with nothing to call: {d:?}");
        }
        // The same input decides the same (idempotence).
        prop_assert_eq!(decide(&input), d);
    }
}
