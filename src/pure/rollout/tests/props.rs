//! Property tests: arbitrary sequences of spec edits, observations and clock advances.

use super::*;

// Property tests: arbitrary sequences of spec edits, observations and clock advances.

#[derive(Clone, Debug)]
enum Op {
    Reconcile,
    Settle,
    Advance(u16),
    SetVersion(usize),
    SetReplicas(i32),
    SetSteps(usize),
    Break(usize),
    ScaleByHand(usize, i32),
    DeleteByHand(usize),
    TogglePause,
    /// 0: promote, 1: promote-full, 2: abort, 3: retry.
    Request(usize),
    /// What check `CHECKS[.0]` answers from now on: `answers()[.1]`.
    Answer(usize, usize),
    /// The watch cache of the Deployments stops following them (it lags from now on)…
    Freeze,
    /// … and catches up.
    Thaw,
    /// The operator dies after making the first `.0` of its moves, before writing the status (or
    /// its status write is lost).
    Crash(usize),
    /// A second writer (a leader about to be deposed) decides on what it sees now…
    Capture,
    /// … and its writes land late, through the API server's preconditions.
    Deposed,
    /// A check of the gated rollout is renamed (0) or removed (1) by an edit of the spec.
    EditCheck(usize),
    /// The Deployment controller catches up with the specs, but counts the pods from ReplicaSet
    /// statuses that have not yet caught up with a scale-down: a status can say more pods are
    /// available than are.
    SyncStale,
}

/// The checks of a gated rollout in the property test.
const CHECKS: [&str; 3] = ["metric/errors", "webhook/before", "webhook/undo"];

fn answers() -> Vec<checks::Answer> {
    use checks::Answer;
    vec![
        Answer::Value(0.0),
        Answer::Value(1.0),
        Answer::NoData("no data".into()),
        Answer::Status(200),
        Answer::Status(500),
        Answer::Status(404),
        Answer::Unreachable("timed out".into()),
    ]
}

/// A metric measured during every wait, a webhook before every step and one on rollback.
fn gated() -> crate::api::Analysis {
    use crate::api::{Analysis, HookPoint, MetricCheck, PrometheusSource, WebhookCheck};
    let hook = |name: &str, gate| WebhookCheck {
        name: name.into(),
        gate,
        url: "http://hooks".into(),
        timeout_seconds: 1,
        retries: 1,
        metadata: BTreeMap::new(),
    };
    Analysis {
        prometheus: Some(PrometheusSource { address: "http://prom".into() }),
        metrics: vec![MetricCheck {
            name: "errors".into(),
            query: "errors".into(),
            min: None,
            max: Some(0.5),
            interval_seconds: 5,
            count: 2,
            failure_limit: 0,
        }],
        webhooks: vec![hook("before", HookPoint::BeforeStep), hook("undo", HookPoint::Rollback)],
    }
}

const VERSIONS: [&str; 3] = ["1.0.0", "2.0.0", "3.0.0"];

fn plans() -> Vec<Vec<Step>> {
    vec![
        vec![step(10, 60), step(30, 30), step(60, 30), step(100, 0)],
        vec![step(50, 5)],
        vec![step(1, 0), step(99, 1)],
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => Just(Op::Reconcile),
        4 => Just(Op::Settle),
        3 => (0u16..700).prop_map(Op::Advance),
        1 => (0..VERSIONS.len()).prop_map(Op::SetVersion),
        1 => (0i32..25).prop_map(Op::SetReplicas),
        1 => (0..3usize).prop_map(Op::SetSteps),
        1 => (0..VERSIONS.len()).prop_map(Op::Break),
        1 => ((0..VERSIONS.len()), 0i32..30).prop_map(|(v, n)| Op::ScaleByHand(v, n)),
        1 => (0..VERSIONS.len()).prop_map(Op::DeleteByHand),
        1 => Just(Op::TogglePause),
        1 => (0..4usize).prop_map(Op::Request),
        1 => ((0..CHECKS.len()), (0..answers().len())).prop_map(|(c, a)| Op::Answer(c, a)),
        1 => Just(Op::Freeze),
        1 => Just(Op::Thaw),
        1 => (0..3usize).prop_map(Op::Crash),
        1 => Just(Op::Capture),
        1 => Just(Op::Deposed),
        1 => (0..2usize).prop_map(Op::EditCheck),
        2 => Just(Op::SyncStale),
    ]
}

/// A second writer's decision, made on `then` (break confirmed on a fresh read, as the shell
/// does), with the Deployments it was made on (what its writes' preconditions hold).
struct Captured {
    then: World,
    decision: Decision,
    basis: Vec<Observed>,
}

/// (stable, canary): which rollout a status describes.
type RolloutId = (Option<String>, Option<String>);

fn total(w: &World) -> i32 {
    w.deployments.values().map(|d| d.replicas).sum()
}

/// What must hold after the operator acted on a decision `d` (whether or not its status was then
/// written): availability never below R by its hand, each Deployment moved only towards what the
/// decision's status asks of it, and — left alone by people, and seen through a cache that keeps
/// up — no more than R plus the canary's surge (a lagging cache hides what it created, which it
/// removes once it sees it).
fn acted(
    before: &World,
    w: &World,
    d: &Decision,
    tampered: bool,
    last_replicas: i32,
) -> Result<(), TestCaseError> {
    let r = w.spec.deployment.replicas;
    let had_stable = before.status.as_ref().and_then(|s| s.stable_version.as_ref()).is_some();
    // (If availability was already below R, the operator takes none away.)
    if had_stable {
        prop_assert!(
            available(w) >= available(before).min(r),
            "availability {} -> {} (R = {r}) by {:?}",
            available(before),
            available(w),
            d
        );
    }
    let stable = d.status.stable_version.clone();
    let target = |v: &str| d.goal.iter().find(|(g, _)| g == v).map(|(_, r)| *r);
    for (v, after) in &w.deployments {
        let was = before.deployments.get(v).map_or(0, |o| o.replicas);
        let want = target(v);
        match want {
            Some(t) => prop_assert!(
                after.replicas >= was.min(t) && after.replicas <= was.max(t),
                "{v}: {was} -> {} overshoots target {t}",
                after.replicas
            ),
            None => prop_assert_eq!(after.replicas, was, "{} resized outside the goal", v),
        }
    }
    if !tampered && before.cache.is_none() {
        let canary = d.status.canary_version.as_ref();
        let canary_before = canary.and_then(|v| before.deployments.get(v)).map_or(0, |o| o.replicas);
        let canary_target = canary.map(String::as_str).and_then(target).unwrap_or(0);
        // A canary given up for a newer one keeps serving until the pods that replace it do: it
        // stays beside the new canary, never growing.
        let abandoned: i32 = before
            .deployments
            .values()
            .filter(|o| Some(&o.version) != stable.as_ref() && Some(&o.version) != canary)
            .map(|o| o.replicas)
            .sum();
        // While a change of R is carried out, the old R may still stand: in the stable, until
        // the canary can take over from it.
        let stable_before = stable.as_ref().and_then(|v| before.deployments.get(v)).map_or(0, |o| o.replicas);
        let r_max = r.max(last_replicas).max(stable_before);
        let bound = (r_max + canary_target.max(canary_before) + abandoned).max(total(before));
        prop_assert!(total(w) <= bound, "total {} > bound {bound}: {:?}", total(w), d);
    }
    for v in &d.delete {
        prop_assert!(!d.apply.iter().any(|a| &a.version == v));
    }
    Ok(())
}

/// No step is announced twice within one run of a rollout (a new version, a steps change, a retry,
/// a lost status, a rollback or a first deploy start a new run).
fn announced(d: &Decision, heard: &mut BTreeSet<(Reason, String)>) -> Result<(), TestCaseError> {
    for n in &d.notes {
        match n.reason {
            Reason::RolloutStarted
            | Reason::StepsChanged
            | Reason::RetryRequested
            | Reason::Superseded
            | Reason::StatusLost
            | Reason::Deploying
            | Reason::RolledBack => heard.clear(),
            Reason::StepStarted | Reason::StepCompleted => {
                let step: String = n
                    .message
                    .split(':')
                    .next()
                    .unwrap_or_default()
                    .split(" in place")
                    .next()
                    .unwrap_or_default()
                    .into();
                prop_assert!(heard.insert((n.reason, step)), "announced twice: {:?} in {:?}", n, d.notes);
            }
            _ => {}
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn rollouts_keep_their_invariants_under_arbitrary_edits_and_observations(
        replicas in 0i32..25,
        plan in 0..3usize,
        with_checks in any::<bool>(),
        ops in prop::collection::vec(op(), 1..60),
    ) {
        let mut spec = seed_spec();
        spec.deployment.version = VERSIONS[0].into();
        spec.deployment.replicas = replicas;
        spec.steps = plans()[plan].clone();
        spec.analysis = with_checks.then(gated);
        let mut w = World::new(spec);
        // (rollout identity, step) of the last reconcile, for the monotonicity check.
        let mut last_step: Option<(RolloutId, i64, i32)> = None;
        // Whether someone resized a Deployment by hand.
        let mut tampered = false;
        let mut last_replicas = replicas;
        let mut requests = 0;
        // A second writer's decision (made, break confirmed, on the world as it was then), and
        // whether anything but the operator has changed the Deployments or their pods since.
        let mut captured: Option<Captured> = None;
        let mut changed_since_capture = false;
        let mut heard = BTreeSet::new();

        for op in ops {
            match op {
                Op::Reconcile => {
                    let before = w.clone();
                    let d = w.reconcile();
                    acted(&before, &w, &d, tampered, last_replicas)?;
                    announced(&d, &mut heard)?;
                    let s = &d.status;
                    let id = (s.stable_version.clone(), s.canary_version.clone());
                    let step = s.current_step.unwrap_or(0);
                    // Within one rollout the step never goes back.
                    if let Some((last_id, last_generation, last)) = &last_step
                        && *last_id == id
                        && *last_generation == w.generation
                        && s.phase != Some(Phase::Init)
                        && !d.notes.iter().any(|n| n.reason == Reason::StatusLost)
                    {
                        prop_assert!(step >= *last, "step went back {last} -> {step}: {:?}", s);
                    }
                    last_step = Some((id, w.generation, step));
                    last_replicas = w.spec.deployment.replicas;
                }
                Op::Crash(k) => {
                    // The status is written, then the operator dies after `k` of its moves (or
                    // the status write is lost, with `k` = 0 moves made).
                    let before = w.clone();
                    let (d, basis) = w.decision();
                    if k > 0 {
                        w.persist(&d);
                        w.mailbox.clear();
                        w.carry_out(&d, &basis, k - 1);
                        announced(&d, &mut heard)?;
                    }
                    acted(&before, &w, &d, tampered, last_replicas)?;
                }
                Op::Capture => {
                    let then = w.clone();
                    let (decision, basis) = then.clone().decision();
                    captured = Some(Captured { then, decision, basis });
                    changed_since_capture = false;
                }
                Op::Deposed => {
                    let Some(Captured { then, decision: d, basis }) = captured.take() else { continue };
                    // Persist first, on the resourceVersion it read: refused if the Deployer
                    // changed since (a new status, a new spec, an annotation).
                    if then.status != w.status
                        || then.generation != w.generation
                        || then.paused != w.paused
                        || then.requests != w.requests
                    {
                        continue;
                    }
                    // On the world it was made on, the decision keeps every invariant.
                    let mut there = then.clone();
                    there.persist(&d);
                    there.carry_out(&d, &basis, usize::MAX);
                    acted(&then, &there, &d, tampered, last_replicas)?;
                    let before = w.clone();
                    w.persist(&d);
                    // Each Deployment write carries the resourceVersion it read: refused (and the
                    // rest with it) once that Deployment changed. A person's change to another
                    // Deployment, or pods failing, since the decision are not fenced: no
                    // precondition of the API server spans two objects, so a shrink confirmed
                    // on a canary that a person then scales down lands (as it would for a leader
                    // that was never deposed, in the instant between its read and its write).
                    w.carry_out(&d, &basis, usize::MAX);
                    if !changed_since_capture {
                        acted(&before, &w, &d, tampered, last_replicas)?;
                    }
                    announced(&d, &mut heard)?;
                }
                Op::Freeze => w.cache = Some(w.deployments.clone()),
                Op::Thaw => w.cache = None,
                Op::EditCheck(kind) => w.edit(|s| {
                    if let Some(a) = s.analysis.as_mut() {
                        match kind {
                            0 => a.webhooks.iter_mut().for_each(|h| h.name = format!("{}-renamed", h.name)),
                            _ => { a.webhooks.pop(); a.metrics.pop(); }
                        }
                    }
                }),
                Op::Settle => w.settle(),
                Op::Advance(s) => w.advance(f64::from(s)),
                Op::SetVersion(i) => w.edit(|s| s.deployment.version = VERSIONS[i].into()),
                Op::SetReplicas(n) => w.edit(|s| s.deployment.replicas = n),
                Op::SetSteps(i) => w.edit(|s| s.steps = plans()[i].clone()),
                Op::Break(i) => {
                    changed_since_capture = true;
                    w.broken.insert(VERSIONS[i].into());
                }
                Op::ScaleByHand(i, n) => {
                    tampered = true;
                    changed_since_capture = true;
                    w.scale_by_hand(VERSIONS[i], n);
                }
                Op::DeleteByHand(i) => {
                    changed_since_capture = true;
                    w.deployments.remove(VERSIONS[i]);
                    w.ready.remove(VERSIONS[i]);
                }
                Op::SyncStale => w.deployments.values_mut().for_each(|d| d.synced = true),
                Op::TogglePause => w.paused = !w.paused,
                Op::Answer(c, a) => { w.answers.insert(CHECKS[c].into(), vec![answers()[a].clone()]); }
                Op::Request(kind) => {
                    requests += 1;
                    let token = Some(format!("r{requests}"));
                    match kind {
                        0 => w.requests.promote = token,
                        1 => w.requests.promote_full = token,
                        2 => w.requests.abort = token,
                        _ => {
                            w.requests.retry = token;
                            // A retry restarts the rollout from step 1 on purpose.
                            last_step = None;
                        }
                    }
                }
            }
        }

        // However it got here, left alone the rollout ends with exactly one Deployment at R:
        // the target version when Done, the stable when Aborted (once unpaused and, at a pause
        // step, promoted). The one exception is a stable
        // whose own pods are unavailable: the operator then keeps the pods that still serve
        // rather than delete them, and the rollout waits (documented in docs/design.md).
        w.paused = false;
        w.cache = None;
        w.converge();
        for i in 0..10 {
            if w.phase() != Phase::Paused {
                break;
            }
            w.requests.promote = Some(format!("final{i}"));
            w.converge();
        }
        let s = w.status.clone().expect("status");
        let r = w.spec.deployment.replicas;
        let target = w.spec.deployment.version.clone();
        let stable_broken = s.stable_version.as_ref().is_some_and(|v| w.broken.contains(v));
        let versions: Vec<String> = w.deployments.keys().cloned().collect();
        match s.phase {
            Some(Phase::Done) => {
                prop_assert_eq!(s.stable_version.as_deref(), Some(target.as_str()));
                if !stable_broken {
                    prop_assert_eq!(&versions, &vec![target.clone()]);
                }
                prop_assert_eq!(w.replicas(&target), Some(r), "{:?} {:?}", s, w.deployments);
            }
            Some(Phase::Aborted) => {
                let stable = s.stable_version.clone().expect("an aborted rollout has a stable");
                if !stable_broken {
                    prop_assert_eq!(&versions, &vec![stable.clone()]);
                }
                prop_assert_eq!(w.replicas(&stable), Some(r), "{:?} {:?}", s, w.deployments);
            }
            Some(Phase::Scaling) if s.stable_version.is_none() => {
                // A first deploy of a broken version waits (there is nothing to roll back to).
                prop_assert!(w.broken.contains(&target), "{:?}", s);
                prop_assert_eq!(&versions, &vec![target.clone()]);
            }
            other => prop_assert!(stable_broken, "unsettled phase {:?}: {:?} {:?}", other, s, w.deployments),
        }
    }
}
