//! Step gates: which checks run where, when each is due, and what their answers mean.
//!
//! Pure, like [`crate::rollout`]: the core lists the calls that are due ([`Call`]), the shell
//! ([`crate::probe`]) makes them and hands the answers back ([`Outcome`]), and the core folds
//! them into the check states persisted in `status.checks`. A check's counts live only there, so
//! a restart neither repeats a passed check nor forgets a failure.
//!
//! Gate points (docs/checks.md):
//! - `BeforeStep` — webhooks before a step's scale-up (and `BeforePromotion` ones before the
//!   final 100% step);
//! - `Wait` — metrics, measured during the step's wait;
//! - `AfterStep` — webhooks after the wait, before the next step;
//! - `Rollback` — webhooks told of an abort (their answer never delays the rollback).

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Value, json};

use crate::api::{CheckPhase, CheckStatus, DeployerSpec, HookPoint, MetricCheck, WebhookCheck};

pub use crate::api::Gate;

/// How long a PromQL query may take.
pub const QUERY_TIMEOUT_SECONDS: i64 = 10;
/// How long past its own timeout an answer is awaited before the call counts as unanswered (the
/// time for the answer to come back through the controller).
pub const ANSWER_GRACE_SECONDS: i64 = 5;
/// Calls of one Deployer in flight at once: a tenant with many checks waits its turn, it cannot
/// occupy the operator's calls.
pub const MAX_IN_FLIGHT: usize = 8;

/// The longest text taken from a call's answer (an error, a value) into the status and Events:
/// the endpoint is the tenant's, its words are not allowed to grow the Deployer without bound.
pub const MAX_TEXT: usize = 256;

/// `text` cut to at most `max` characters, marked with `…` when cut.
pub fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// `t` + `secs` seconds, saturating at the ends of the calendar (a persisted time may be anywhere
/// in it).
pub fn later(t: DateTime<Utc>, secs: i64) -> DateTime<Utc> {
    let d = TimeDelta::try_seconds(secs).unwrap_or(if secs < 0 { TimeDelta::MIN } else { TimeDelta::MAX });
    shift(t, d)
}

/// `t` + `d`, saturating at the ends of the calendar.
pub fn shift(t: DateTime<Utc>, d: TimeDelta) -> DateTime<Utc> {
    t.checked_add_signed(d).unwrap_or(if d < TimeDelta::zero() {
        DateTime::<Utc>::MIN_UTC
    } else {
        DateTime::<Utc>::MAX_UTC
    })
}

/// A check as configured.
#[derive(Clone, Copy, Debug)]
enum Def<'a> {
    Metric(&'a MetricCheck),
    Webhook(&'a WebhookCheck),
}

impl Def<'_> {
    fn name(&self) -> String {
        match self {
            Def::Metric(m) => format!("metric/{}", m.name),
            Def::Webhook(w) => format!("webhook/{}", w.name),
        }
    }
}

/// The checks configured for `gate` at step `step` (0-based) of a plan of `steps` steps: the
/// rollout-wide ones, then the step's own.
fn configured(spec: &DeployerSpec, steps: usize, step: usize, gate: Gate) -> Vec<Def<'_>> {
    let wide = spec.analysis.as_ref();
    let own = spec.steps.get(step).filter(|_| step < steps);
    let last = step + 1 == steps;
    let hooks = |point: &dyn Fn(HookPoint) -> bool| {
        let wide = wide.into_iter().flat_map(|a| &a.webhooks);
        let own = own.into_iter().flat_map(|s| &s.webhooks);
        wide.chain(own).filter(|w| point(w.gate)).map(Def::Webhook).collect::<Vec<_>>()
    };
    match gate {
        Gate::Wait => wide
            .into_iter()
            .flat_map(|a| &a.metrics)
            .chain(own.into_iter().flat_map(|s| &s.metrics))
            .map(Def::Metric)
            .collect(),
        Gate::BeforeStep => {
            hooks(&|p| p == HookPoint::BeforeStep || (last && step > 0 && p == HookPoint::BeforePromotion))
        }
        Gate::AfterStep => hooks(&|p| p == HookPoint::AfterStep),
        Gate::Rollback => hooks(&|p| p == HookPoint::Rollback),
    }
}

/// Whether any check is configured for `gate` at `step`.
pub fn any(spec: &DeployerSpec, steps: usize, step: usize, gate: Gate) -> bool {
    !configured(spec, steps, step, gate).is_empty()
}

/// Whether `checks` are the state of `gate` at `step`.
pub fn at(checks: &[CheckStatus], gate: Gate, step: usize) -> bool {
    checks.first().is_some_and(|c| c.gate == gate && c.step == one_based(step))
}

/// Brings the states of the gate being run in line with the spec as it is now: a check removed
/// (or renamed) by an edit mid-gate is no longer waited for, a check added (or the new name) starts
/// afresh, and the others keep their counts. Without this a removed check would stay Running
/// forever, holding the gate with nothing left to call.
pub fn follow_spec(
    checks: &mut Vec<CheckStatus>,
    spec: &DeployerSpec,
    steps: usize,
    step: usize,
    gate: Gate,
    now: DateTime<Utc>,
) {
    let wanted = configured(spec, steps, step, gate);
    if wanted.len() == checks.len() && wanted.iter().zip(checks.iter()).all(|(d, c)| d.name() == c.name) {
        return;
    }
    let mut kept = std::mem::take(checks);
    *checks = wanted
        .into_iter()
        .map(|def| match kept.iter().position(|c| c.name == def.name()) {
            Some(i) => kept.swap_remove(i),
            None => fresh(def, step, gate, now),
        })
        .collect();
}

/// Fresh states for the checks of `gate` at `step`, entered at `now`: webhooks are due at once,
/// a metric's first measurement one interval later.
pub fn enter(
    spec: &DeployerSpec,
    steps: usize,
    step: usize,
    gate: Gate,
    now: DateTime<Utc>,
) -> Vec<CheckStatus> {
    configured(spec, steps, step, gate).into_iter().map(|def| fresh(def, step, gate, now)).collect()
}

/// The state of a check that has not run yet.
fn fresh(def: Def, step: usize, gate: Gate, now: DateTime<Utc>) -> CheckStatus {
    CheckStatus {
        name: def.name(),
        gate,
        step: one_based(step),
        phase: CheckPhase::Running,
        runs: 0,
        failures: 0,
        last_value: None,
        last_error: None,
        last_at: None,
        next_at: Some(match def {
            Def::Metric(m) => later(now, m.interval_seconds.max(1)),
            Def::Webhook(_) => now,
        }),
        started_at: None,
    }
}

/// What one call answered.
#[derive(Clone, Debug, PartialEq)]
pub enum Answer {
    /// A metric's value.
    Value(f64),
    /// A query that returned no number (no series, NaN), with why.
    NoData(String),
    /// A webhook's HTTP status.
    Status(u16),
    /// No answer: a timeout, a connection error, a query Prometheus refused (with why; URLs and
    /// secrets are never part of it).
    Unreachable(String),
}

/// A call the shell should make, and how to recognise its answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Call {
    /// The check (`metric/<name>` or `webhook/<name>`).
    pub check: String,
    /// Which gate, step and run the answer belongs to.
    pub key: Key,
    /// What to do.
    pub request: Request,
}

/// Identifies one run of one check; an answer is folded only into the run it was made for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Key {
    /// `status.checks[].gate`.
    pub gate: Gate,
    /// 1-based step.
    pub step: i32,
    /// `status.checks[].runs` when the call was made.
    pub run: i32,
}

/// What a call does.
#[derive(Clone, Debug, PartialEq)]
pub enum Request {
    /// An instant PromQL query.
    Query {
        /// Prometheus base URL.
        address: String,
        /// The query, placeholders replaced.
        query: String,
    },
    /// A webhook.
    Post {
        /// Where.
        url: String,
        /// How long to wait for the answer.
        timeout: Duration,
        /// The JSON body.
        payload: Value,
    },
}

/// The answer to a [`Call`].
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    /// The check.
    pub check: String,
    /// The run it answers.
    pub key: Key,
    /// The answer.
    pub answer: Answer,
}

/// What the checks of a gate say together.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Some are still running.
    Pending,
    /// All passed (or there are none).
    Passed,
    /// One failed: abort.
    Failed(String),
    /// One could not tell: pause.
    Inconclusive(String),
}

/// The rollout facts a call needs (for placeholders and the webhook payload).
#[derive(Clone, Debug)]
pub struct Facts<'a> {
    /// The Deployer's name and namespace.
    pub deployer: &'a str,
    /// The Deployer's namespace.
    pub namespace: &'a str,
    /// The stable and canary versions.
    pub stable: Option<&'a str>,
    /// The canary version.
    pub canary: Option<&'a str>,
    /// Steps of the plan.
    pub steps: usize,
    /// Percent of the step the gate belongs to.
    pub percent: i32,
    /// The phase the rollout is in (`Checking`, `Waiting`, `Aborted`).
    pub phase: &'static str,
    /// Prometheus to use when the spec names none (the operator's `--prometheus-address`).
    pub prometheus: Option<&'a str>,
}

/// Folds the answers that belong to the current runs of `checks` into them; returns the indices
/// of the checks that failed with this fold.
pub fn fold(
    checks: &mut [CheckStatus],
    spec: &DeployerSpec,
    steps: usize,
    outcomes: &[Outcome],
    now: DateTime<Utc>,
) -> Vec<usize> {
    let mut failed = Vec::new();
    for (i, c) in checks.iter_mut().enumerate().filter(|(_, c)| c.phase == CheckPhase::Running) {
        let Some(o) = outcomes.iter().find(|o| {
            o.check == c.name && o.key.gate == c.gate && o.key.step == c.step && o.key.run == c.runs
        }) else {
            continue;
        };
        let Some(def) = definition(c, spec, steps) else { continue };
        c.runs = c.runs.saturating_add(1);
        c.last_at = Some(now);
        c.started_at = None;
        match def {
            Def::Metric(m) => measure(c, m, &o.answer, now),
            Def::Webhook(w) => hear(c, w, &o.answer, now),
        }
        if c.phase == CheckPhase::Failed {
            failed.push(i);
        }
    }
    failed
}

/// The configuration of a persisted check, if the spec still has it.
fn definition<'a>(c: &CheckStatus, spec: &'a DeployerSpec, steps: usize) -> Option<Def<'a>> {
    let step = usize::try_from(c.step.checked_sub(1)?).ok()?;
    configured(spec, steps, step, c.gate).into_iter().find(|d| d.name() == c.name)
}

fn measure(c: &mut CheckStatus, m: &MetricCheck, answer: &Answer, now: DateTime<Utc>) {
    let v = match answer {
        Answer::Value(v) => *v,
        Answer::NoData(why) | Answer::Unreachable(why) => {
            inconclusive(c, clip(why, MAX_TEXT));
            return;
        }
        Answer::Status(code) => {
            inconclusive(c, format!("unexpected HTTP status {code}"));
            return;
        }
    };
    c.last_value = Some(number(v));
    let low = m.min.filter(|min| v < *min);
    let high = m.max.filter(|max| v > *max);
    c.last_error = match (low, high) {
        (Some(min), _) => Some(format!("{} is below min {}", number(v), number(min))),
        (_, Some(max)) => Some(format!("{} is above max {}", number(v), number(max))),
        _ => None,
    }
    .map(|e| format!("{e} (measurement {} of {})", c.runs, m.count));
    if c.last_error.is_some() {
        c.failures = c.failures.saturating_add(1);
    }
    if c.failures > m.failure_limit {
        c.phase = CheckPhase::Failed;
    } else if c.runs >= m.count {
        c.phase = CheckPhase::Passed;
    }
    c.next_at = (c.phase == CheckPhase::Running).then(|| later(now, m.interval_seconds.max(1)));
}

/// A measurement that gave no number: the check can no longer tell, and the rollout pauses.
fn inconclusive(c: &mut CheckStatus, why: String) {
    c.last_value = None;
    c.last_error = Some(why);
    c.phase = CheckPhase::Inconclusive;
    c.next_at = None;
}

fn hear(c: &mut CheckStatus, w: &WebhookCheck, answer: &Answer, now: DateTime<Utc>) {
    let retryable = match answer {
        Answer::Status(code) if (200..300).contains(code) => {
            c.last_value = Some(code.to_string());
            c.last_error = None;
            c.phase = CheckPhase::Passed;
            c.next_at = None;
            return;
        }
        Answer::Status(code) => {
            c.last_value = Some(code.to_string());
            c.last_error = Some(format!("answered HTTP {code}"));
            *code >= 500
        }
        Answer::Unreachable(why) | Answer::NoData(why) => {
            c.last_value = None;
            c.last_error = Some(clip(why, MAX_TEXT));
            true
        }
        Answer::Value(_) => false,
    };
    c.failures = c.failures.saturating_add(1);
    if retryable && c.runs <= w.retries {
        // 1 s, 2 s, 4 s … between attempts, at most 30 s.
        let backoff = 1i64 << c.runs.saturating_sub(1).clamp(0, 5);
        c.next_at = Some(later(now, backoff.min(30)));
    } else {
        c.phase = CheckPhase::Failed;
        c.next_at = None;
    }
}

/// What the checks of a gate say together: the first failure, else the first inconclusive one,
/// else pending while any runs.
pub fn verdict(checks: &[CheckStatus]) -> Verdict {
    let say = |c: &CheckStatus| format!("{}: {}", c.name, c.last_error.as_deref().unwrap_or("failed"));
    if let Some(c) = checks.iter().find(|c| c.phase == CheckPhase::Failed) {
        return Verdict::Failed(say(c));
    }
    if let Some(c) = checks.iter().find(|c| c.phase == CheckPhase::Inconclusive) {
        return Verdict::Inconclusive(say(c));
    }
    if checks.iter().any(|c| c.phase == CheckPhase::Running) { Verdict::Pending } else { Verdict::Passed }
}

/// The calls due at `now` for the running checks of `checks` that are not in flight, at most
/// [`MAX_IN_FLIGHT`] in flight in all.
pub fn calls(checks: &[CheckStatus], spec: &DeployerSpec, facts: &Facts, now: DateTime<Utc>) -> Vec<Call> {
    let room = MAX_IN_FLIGHT.saturating_sub(checks.iter().filter(|c| c.started_at.is_some()).count());
    let mut out = Vec::new();
    let due = |c: &&CheckStatus| {
        c.phase == CheckPhase::Running && c.started_at.is_none() && c.next_at.is_none_or(|t| t <= now)
    };
    for c in checks.iter().filter(due).take(room) {
        let Some(def) = definition(c, spec, facts.steps) else { continue };
        let key = Key { gate: c.gate, step: c.step, run: c.runs };
        let request = match def {
            Def::Metric(m) => {
                let address = spec
                    .analysis
                    .as_ref()
                    .and_then(|a| a.prometheus.as_ref())
                    .map(|p| p.address.clone())
                    .or_else(|| facts.prometheus.map(str::to_string))
                    .unwrap_or_default();
                Request::Query { address, query: expand(&m.query, spec, facts) }
            }
            Def::Webhook(w) => Request::Post {
                url: w.url.clone(),
                timeout: Duration::from_secs(u64::try_from(w.timeout_seconds.clamp(1, 300)).unwrap_or(10)),
                payload: payload(w, c, spec, facts),
            },
        };
        out.push(Call { check: c.name.clone(), key, request });
    }
    out
}

/// Marks the checks of `calls` as in flight since `now` (persisted before the calls go out).
pub fn launch(checks: &mut [CheckStatus], calls: &[Call], now: DateTime<Utc>) {
    for c in checks.iter_mut() {
        if calls.iter().any(|call| call.check == c.name && call.key.gate == c.gate && call.key.step == c.step)
        {
            c.started_at = Some(now);
        }
    }
}

/// When the answer of a call in flight stops being awaited: its timeout and a grace.
fn deadline(c: &CheckStatus, spec: &DeployerSpec, steps: usize, since: DateTime<Utc>) -> DateTime<Utc> {
    let timeout = match definition(c, spec, steps) {
        Some(Def::Webhook(w)) => w.timeout_seconds.clamp(1, 300),
        _ => QUERY_TIMEOUT_SECONDS,
    };
    later(since, timeout.saturating_add(ANSWER_GRACE_SECONDS))
}

/// The answers of the calls in flight whose answer is no longer awaited: the call was lost (the
/// operator restarted while it was out), or its answer never came back. They count as
/// unanswered — a failed attempt, retried as the check says — and the call is not made twice.
pub fn expired(
    checks: &[CheckStatus],
    spec: &DeployerSpec,
    steps: usize,
    now: DateTime<Utc>,
) -> Vec<Outcome> {
    checks
        .iter()
        .filter(|c| c.phase == CheckPhase::Running)
        .filter_map(|c| {
            let since = c.started_at?;
            (now >= deadline(c, spec, steps, since)).then(|| Outcome {
                check: c.name.clone(),
                key: Key { gate: c.gate, step: c.step, run: c.runs },
                answer: Answer::Unreachable(
                    "no answer came back (the call was lost, or never answered)".into(),
                ),
            })
        })
        .collect()
}

/// The earliest time a running check is due: the next call of one that waits, or the end of the
/// wait for the answer of one in flight (a check without a time is due at once).
pub fn next_due(
    checks: &[CheckStatus],
    spec: &DeployerSpec,
    steps: usize,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    checks
        .iter()
        .filter(|c| c.phase == CheckPhase::Running)
        .map(|c| match c.started_at {
            Some(since) => deadline(c, spec, steps, since),
            None => c.next_at.unwrap_or(now),
        })
        .min()
}

/// The JSON a webhook receives (documented in docs/checks.md).
fn payload(w: &WebhookCheck, c: &CheckStatus, spec: &DeployerSpec, facts: &Facts) -> Value {
    json!({
        "deployer": facts.deployer,
        "namespace": facts.namespace,
        "deployment": spec.deployment.name,
        "check": w.name,
        "gate": match w.gate {
            HookPoint::BeforePromotion => "BeforePromotion".to_string(),
            _ => c.gate.to_string(),
        },
        "step": c.step,
        "steps": facts.steps,
        "percent": facts.percent,
        "stableVersion": facts.stable,
        "canaryVersion": facts.canary,
        "phase": facts.phase,
        "attempt": c.runs + 1,
        "metadata": w.metadata,
    })
}

/// Replaces the placeholders of a query.
fn expand(query: &str, spec: &DeployerSpec, facts: &Facts) -> String {
    query
        .replace("{{canary}}", facts.canary.unwrap_or_default())
        .replace("{{stable}}", facts.stable.unwrap_or_default())
        .replace("{{deployment}}", &spec.deployment.name)
        .replace("{{namespace}}", facts.namespace)
        .replace("{{deployer}}", facts.deployer)
}

/// A number as people write it, to at most 6 decimals: `0.97`, `12`, `0.998006`.
fn number(v: f64) -> String {
    if !v.is_finite() || v.abs() >= 1e15 {
        return format!("{v:e}");
    }
    let text = format!("{v:.6}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "-0" { "0".into() } else { text.into() }
}

fn one_based(step: usize) -> i32 {
    i32::try_from(step + 1).unwrap_or(i32::MAX)
}

/// Checks what the schema cannot: a metric needs a Prometheus, and a step's check must not take a
/// rollout-wide check's name.
pub fn validate(spec: &DeployerSpec, fallback_prometheus: Option<&str>) -> Result<(), String> {
    let wide = spec.analysis.as_ref();
    let any_metric =
        wide.is_some_and(|a| !a.metrics.is_empty()) || spec.steps.iter().any(|s| !s.metrics.is_empty());
    let address =
        wide.and_then(|a| a.prometheus.as_ref()).map(|p| p.address.as_str()).or(fallback_prometheus);
    if any_metric && address.is_none() {
        return Err("metrics need a Prometheus: set spec.analysis.prometheus.address (or run the operator with --prometheus-address)".into());
    }
    for (i, s) in spec.steps.iter().enumerate() {
        for m in &s.metrics {
            if wide.is_some_and(|a| a.metrics.iter().any(|n| n.name == m.name)) {
                return Err(format!(
                    "spec.steps[{i}].metrics: {:?} is already a name in spec.analysis.metrics",
                    m.name
                ));
            }
        }
        for w in &s.webhooks {
            if wide.is_some_and(|a| a.webhooks.iter().any(|n| n.name == w.name)) {
                return Err(format!(
                    "spec.steps[{i}].webhooks: {:?} is already a name in spec.analysis.webhooks",
                    w.name
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
