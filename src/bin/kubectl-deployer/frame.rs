//! The screen of `kubectl deployer get NAME`: a pure function of a [`Snapshot`] and the time, so
//! the live view (`-w`) redraws it and the unit tests below pin it down.

use chrono::{DateTime, SecondsFormat, Utc};
use deployer_operator::{
    api::{CheckPhase, Condition, Deployer, DeployerStatus, PauseCause, Phase},
    rollout::{State, state},
};
use k8s_openapi::api::apps::v1::Deployment;
use kube::ResourceExt;

use crate::{
    controls::pending,
    snapshot::{Snapshot, event_time, replicas},
    style::{Cell, Style, Tone, human, left, table},
};

/// How many Events the screen shows.
pub const EVENTS: usize = 5;
/// Cells of the progress bar.
const BAR: usize = 20;

/// The screen for `snap` at `now`, one line per `\n`, without a trailing newline.
pub fn frame(snap: &Snapshot, now: DateTime<Utc>, style: Style) -> String {
    let Some(d) = &snap.deployer else {
        return format!(
            "deployer/{} not found in namespace {}",
            style.paint(&snap.name, Tone::Strong),
            snap.namespace
        );
    };
    let status = d.status.clone().unwrap_or_default();
    let mut lines = Vec::new();
    let age = d.creation_timestamp().map(|t| human(now - crate::snapshot::chrono_time(&t.0)));
    lines.push(format!(
        "{}   namespace {}   age {}   generation {}",
        style.paint(&format!("deployer/{}", d.name_any()), Tone::Strong),
        snap.namespace,
        age.as_deref().unwrap_or("-"),
        d.metadata.generation.unwrap_or(0),
    ));
    let key = |k: &str| style.paint(&format!("{k:<12}"), Tone::Strong);
    lines.push(format!("{}{}", key("Phase:"), phase_text(d, &status, style)));
    lines.push(format!("{}{}", key("Step:"), step_text(&status, style)));
    lines.push(format!("{}{}", key("Wait:"), wait_text(d, &status, now)));
    if let Some(plan) = &status.plan {
        lines.push(format!("{}{}", key("Plan:"), plan_text(plan, status.current_step, status.phase)));
    }
    for (i, check) in status.checks.iter().enumerate() {
        let label = if i == 0 { "Checks:" } else { "" };
        lines.push(format!("{}{}", key(label), check_text(check, style)));
    }
    lines.push(String::new());
    lines.extend(versions(snap, &status, style));
    lines.push(String::new());
    lines.push(format!("{}{}", key("Conditions:"), conditions_text(&status.conditions, style)));
    if let Some(ready) = status.condition("Ready") {
        lines.push(format!("{}{}", key("Message:"), ready.message));
    }
    lines.push(format!("{}{}", key("Controls:"), controls_text(d, style)));
    lines.push(String::new());
    lines.extend(events(snap, now, style));
    lines.join("\n")
}

/// The phase, with why it is there when that is not obvious (read by the operator's own codec).
fn phase_text(d: &Deployer, status: &DeployerStatus, style: Style) -> String {
    let mem = match state::read(Some(status)) {
        Ok(Some(mem)) => mem,
        Ok(None) => {
            return style.paint("Pending", Tone::Warn) + " (not yet reconciled: is the operator running?)";
        }
        Err(why) => return style.paint("Unreadable", Tone::Bad) + &format!(" ({why})"),
    };
    let phase = mem.state.phase();
    let verdict = mem.verdict.as_deref().unwrap_or("?");
    let mut text = style.paint(&phase.to_string(), phase_tone(phase));
    match mem.state {
        State::Aborted { reason, .. } => {
            text += &format!(" ({reason})");
            if let Some(verdict) = &mem.verdict {
                text += &format!(": {verdict}");
            }
        }
        State::Paused { by: PauseCause::Step, .. } => text += " (at a pause step)",
        State::Paused { by: PauseCause::Check, .. } => {
            text += &format!(" (a check could not tell: {verdict})")
        }
        State::Paused { by: PauseCause::Annotation, .. } => text += " (by the paused annotation)",
        State::Checking { gate, .. } => text += &format!(" ({gate} gate)"),
        _ => {}
    }
    let generation = d.metadata.generation.unwrap_or(0);
    if status.observed_generation.is_some_and(|g| g < generation) {
        text +=
            &style.paint(&format!("   (the operator has not yet seen generation {generation})"), Tone::Warn);
    }
    text
}

/// `webhook/smoke  AfterStep 2  Passed  1 run, 0 failed  last 200`.
fn check_text(c: &deployer_operator::api::CheckStatus, style: Style) -> String {
    let tone = match c.phase {
        CheckPhase::Passed => Tone::Good,
        CheckPhase::Failed => Tone::Bad,
        CheckPhase::Inconclusive => Tone::Warn,
        CheckPhase::Running => Tone::Busy,
    };
    let mut text = format!(
        "{:<24}{:<11}step {:<4}{}  {} run(s), {} failed",
        c.name,
        c.gate.to_string(),
        c.step,
        style.paint(&format!("{:<13}", c.phase.to_string()), tone),
        c.runs,
        c.failures
    );
    if let Some(value) = &c.last_value {
        text += &format!("  last {value}");
    }
    if let Some(error) = &c.last_error {
        text += &format!("  ({error})");
    }
    text
}

/// The colour of a phase.
pub fn phase_tone(phase: Phase) -> Tone {
    match phase {
        Phase::Done => Tone::Good,
        Phase::Aborted => Tone::Bad,
        Phase::Paused => Tone::Warn,
        Phase::Init | Phase::Scaling | Phase::Waiting | Phase::Finalizing | Phase::Checking => Tone::Busy,
    }
}

/// The percent of the replicas on the new version, for the bar.
pub fn weight(status: &DeployerStatus) -> i32 {
    match status.phase {
        Some(Phase::Done) => 100,
        Some(Phase::Aborted) | None => 0,
        Some(_) => status.weight.unwrap_or(0),
    }
}

/// `2/4  [######--------------]  30% on the canary`.
fn step_text(status: &DeployerStatus, style: Style) -> String {
    let step = status.step.as_deref().unwrap_or("-");
    let w = weight(status);
    let tone = status.phase.map_or(Tone::Dim, phase_tone);
    let what = match (status.phase, &status.stable_version) {
        (Some(Phase::Done), Some(stable)) => format!("100% on {stable}"),
        (Some(Phase::Aborted), Some(stable)) => format!("rolled back: 100% on {stable}"),
        _ => format!("{w}% on the canary"),
    };
    format!("{step:<6}{}  {what}", style.bar(w, BAR, tone))
}

/// The time left in the current wait, or what the rollout waits for.
fn wait_text(d: &Deployer, status: &DeployerStatus, now: DateTime<Utc>) -> String {
    let Ok(Some(mem)) = state::read(Some(status)) else { return "-".into() };
    match mem.state {
        State::Waiting { until, .. } => format!(
            "{} left (until {} UTC)",
            left(until - now),
            until.to_rfc3339_opts(SecondsFormat::Secs, true).get(11..19).unwrap_or("?")
        ),
        State::Paused { by: PauseCause::Step | PauseCause::Check, .. } => {
            "until promoted: kubectl deployer promote NAME".replace("NAME", &d.name_any())
        }
        State::Paused { left: Some(held), .. } => {
            format!("held with {} of the wait left; resumes when the paused annotation goes", left(held))
        }
        State::Paused { .. } => "held while scaling; resumes when the paused annotation goes".into(),
        State::Scaling { since, .. } => {
            let deadline = deployer_operator::checks::later(since, d.spec.progress_deadline_seconds);
            format!("for the canary's pods (progress deadline in {})", left(deadline - now))
        }
        State::Init => "for the canary's Deployment".into(),
        State::Checking { .. } => "for the gate's checks (see Checks)".into(),
        State::Finalizing => "for the old version's Deployment to go".into(),
        State::Done | State::Aborted { .. } => "-".into(),
    }
}

/// The plan with the current step in brackets: `25%/30s  [50%/30s]  75%/30s  100%/0s`.
fn plan_text(plan: &str, current: Option<i32>, phase: Option<Phase>) -> String {
    let marked = match phase {
        Some(Phase::Scaling | Phase::Waiting | Phase::Paused | Phase::Aborted | Phase::Checking) => current,
        _ => None,
    };
    plan.split(',')
        .enumerate()
        .map(|(i, s)| match marked {
            Some(n) if usize::try_from(n).is_ok_and(|n| n == i + 1) => format!("[{s}]"),
            _ => s.to_string(),
        })
        .collect::<Vec<_>>()
        .join("  ")
}

/// The versions table: canary and stable with their Deployments' replicas, then any other
/// Deployment the Deployer owns (an abandoned canary on its way out).
fn versions(snap: &Snapshot, status: &DeployerStatus, style: Style) -> Vec<String> {
    let mut rows =
        vec![["ROLE", "VERSION", "DEPLOYMENT", "DESIRED", "READY", "AVAILABLE"].map(Cell::plain).to_vec()];
    let mut shown = Vec::new();
    let roles = [("canary", &status.canary_version), ("stable", &status.stable_version)];
    for (role, version) in roles.iter().filter_map(|(r, v)| v.as_ref().map(|v| (*r, v))) {
        let dep = snap.deployment(version);
        if let Some(dep) = dep {
            shown.push(dep.name_any());
        }
        rows.push(version_row(role, version, dep));
    }
    for dep in snap.deployments.iter().filter(|d| !shown.contains(&d.name_any())) {
        let version =
            dep.labels().get(deployer_operator::resources::VERSION_LABEL).cloned().unwrap_or_default();
        rows.push(version_row("old", &version, Some(dep)));
    }
    if rows.len() == 1 {
        return vec![style.paint("No versions yet.", Tone::Dim)];
    }
    let mut lines = table(&rows, style, "");
    lines[0] = style.paint(&lines[0], Tone::Strong);
    lines
}

/// One row of the versions table.
fn version_row(role: &str, version: &str, dep: Option<&Deployment>) -> Vec<Cell> {
    let Some(dep) = dep else {
        return vec![
            Cell::plain(role),
            Cell::plain(version),
            Cell::toned("(none)", Tone::Dim),
            Cell::plain("-"),
            Cell::plain("-"),
            Cell::plain("-"),
        ];
    };
    let r = replicas(dep);
    let tone = |n: i32| {
        if r.desired == 0 {
            Tone::Dim
        } else if n >= r.desired {
            Tone::Good
        } else {
            Tone::Warn
        }
    };
    vec![
        Cell::plain(role),
        Cell::plain(version),
        Cell::plain(dep.name_any()),
        Cell::plain(r.desired.to_string()),
        Cell::toned(r.ready.to_string(), tone(r.ready)),
        Cell::toned(r.available.to_string(), tone(r.available)),
    ]
}

/// `Ready=False (RolloutInProgress)   Progressing=True (RolloutInProgress)`.
fn conditions_text(conditions: &[Condition], style: Style) -> String {
    if conditions.is_empty() {
        return "-".into();
    }
    conditions
        .iter()
        .map(|c| {
            let tone = match (c.type_.as_str(), c.status.as_str(), c.reason.as_str()) {
                ("Ready", "True", _) => Tone::Good,
                (_, "False", "Aborted" | "InvalidSpec" | "NameConflict" | "ProgressDeadlineExceeded") => {
                    Tone::Bad
                }
                ("Progressing", "True", _) => Tone::Busy,
                ("Progressing", "False", "Complete") => Tone::Good,
                _ => Tone::Warn,
            };
            style.paint(&format!("{}={} ({})", c.type_, c.status, c.reason), tone)
        })
        .collect::<Vec<_>>()
        .join("   ")
}

/// The paused annotation and the requests the operator has not carried out yet.
fn controls_text(d: &Deployer, style: Style) -> String {
    let (paused, _) = deployer_operator::resources::requests(d);
    let mut parts = Vec::new();
    if paused {
        parts.push(style.paint("paused (annotation set)", Tone::Warn));
    }
    for request in pending(d) {
        parts.push(style.paint(&format!("{request} requested, not yet handled"), Tone::Warn));
    }
    if parts.is_empty() { "-".into() } else { parts.join("   ") }
}

/// The last [`EVENTS`] Events, as a table.
fn events(snap: &Snapshot, now: DateTime<Utc>, style: Style) -> Vec<String> {
    let recent = snap.recent_events(EVENTS);
    if recent.is_empty() {
        return vec![format!("{}<none>", style.paint(&format!("{:<12}", "Events:"), Tone::Strong))];
    }
    let mut rows = vec![["AGE", "TYPE", "REASON", "MESSAGE"].map(Cell::plain).to_vec()];
    for e in recent {
        let type_ = e.type_.clone().unwrap_or_default();
        let tone = if type_ == "Warning" { Tone::Warn } else { Tone::Plain };
        let count = e.series.as_ref().map_or(1, |s| s.count);
        let reason = e.reason.clone().unwrap_or_default();
        rows.push(vec![
            Cell::plain(event_time(e).map_or("-".into(), |t| human(now - t))),
            Cell::toned(type_, tone),
            Cell::toned(if count > 1 { format!("{reason} (x{count})") } else { reason }, tone),
            Cell::plain(e.note.clone().unwrap_or_default().replace('\n', " ")),
        ]);
    }
    let mut lines = vec![style.paint("Events:", Tone::Strong)];
    let body = table(&rows, style, "  ");
    lines.push(style.paint(&body[0], Tone::Strong));
    lines.extend(body.into_iter().skip(1));
    lines
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;
    use serde_json::json;

    use super::*;
    use crate::snapshot::fixtures::*;

    fn waiting() -> Snapshot {
        let mut d = deployer(json!({
            "observedGeneration": 3, "phase": "Waiting", "step": "2/4", "currentStep": 2, "weight": 50,
            "stableVersion": "1.0.0", "canaryVersion": "2.0.0", "stableReplicas": 2, "canaryReplicas": 2,
            "plan": "25%/30s,50%/30s,75%/30s,100%/0s", "waitUntil": at(24),
            "conditions": [
                {"type": "Ready", "status": "False", "reason": "RolloutInProgress",
                 "message": "rolling out 2.0.0 at step 2/4", "lastTransitionTime": at(-60)},
                {"type": "Progressing", "status": "True", "reason": "RolloutInProgress",
                 "message": "rolling out 2.0.0 at step 2/4", "lastTransitionTime": at(-60)},
            ],
        }));
        d.metadata.annotations = Some([("deploy.example.com/promote".to_string(), "t1".to_string())].into());
        snapshot(
            d,
            vec![deployment("1.0.0", 2, 2, 2), deployment("2.0.0", 2, 1, 1)],
            vec![
                event(90, "Normal", "RolloutStarted", "rolling out 2.0.0 over 1.0.0 in 4 steps"),
                event(80, "Normal", "StepStarted", "step 1/4: 25% — scaling to 2.0.0=1, 1.0.0=3"),
                event(6, "Normal", "StepStarted", "step 2/4: 50% — scaling to 2.0.0=2, 1.0.0=2"),
            ],
        )
    }

    #[test]
    fn a_waiting_rollout_shows_phase_step_wait_versions_conditions_and_events() {
        let text = frame(&waiting(), now(), Style::PLAIN);
        let expected = "\
deployer/app   namespace demo   age 5m   generation 3
Phase:      Waiting
Step:       2/4   [##########----------]  50% on the canary
Wait:       24s left (until 12:00:24 UTC)
Plan:       25%/30s  [50%/30s]  75%/30s  100%/0s

ROLE     VERSION   DEPLOYMENT   DESIRED   READY   AVAILABLE
canary   2.0.0     app-2.0.0    2         1       1
stable   1.0.0     app-1.0.0    2         2       2

Conditions: Ready=False (RolloutInProgress)   Progressing=True (RolloutInProgress)
Message:    rolling out 2.0.0 at step 2/4
Controls:   promote requested, not yet handled

Events:
  AGE   TYPE     REASON           MESSAGE
  90s   Normal   RolloutStarted   rolling out 2.0.0 over 1.0.0 in 4 steps
  80s   Normal   StepStarted      step 1/4: 25% — scaling to 2.0.0=1, 1.0.0=3
  6s    Normal   StepStarted      step 2/4: 50% — scaling to 2.0.0=2, 1.0.0=2";
        assert_eq!(text, expected, "\n{text}");
    }

    #[test]
    fn the_time_left_counts_down_with_now() {
        let snap = waiting();
        let later = frame(&snap, now() + TimeDelta::seconds(10), Style::PLAIN);
        assert!(later.contains("Wait:       14s left (until 12:00:24 UTC)"), "{later}");
        let over = frame(&snap, now() + TimeDelta::seconds(40), Style::PLAIN);
        assert!(over.contains("Wait:       0s left"), "{over}");
    }

    #[test]
    fn a_pause_shows_the_wait_it_keeps_or_that_it_waits_for_promote() {
        let paused = deployer(json!({
            "observedGeneration": 3, "phase": "Paused", "step": "1/4", "currentStep": 1, "weight": 25,
            "stableVersion": "1.0.0", "canaryVersion": "2.0.0", "pausedBy": "Annotation", "pausedWaitMillis": 6200,
        }));
        let text = frame(&snapshot(paused, vec![], vec![]), now(), Style::PLAIN);
        assert!(text.contains("Phase:      Paused (by the paused annotation)"), "{text}");
        assert!(text.contains("Wait:       held with 7s of the wait left"), "{text}");
        assert!(text.contains("canary   2.0.0     (none)"), "{text}");
        let step =
            deployer(json!({"observedGeneration": 3, "phase": "Paused", "pausedBy": "Step", "step": "1/4"}));
        let text = frame(&snapshot(step, vec![], vec![]), now(), Style::PLAIN);
        assert!(text.contains("Phase:      Paused (at a pause step)"), "{text}");
        assert!(text.contains("Wait:       until promoted: kubectl deployer promote app"), "{text}");
    }

    #[test]
    fn done_and_aborted_fill_the_bar_for_the_version_that_serves() {
        let done = deployer(json!({
            "observedGeneration": 3, "phase": "Done", "step": "4/4", "currentStep": 4, "stableVersion": "2.0.0",
            "plan": "25%/30s,50%/30s,75%/30s,100%/0s",
        }));
        let text = frame(&snapshot(done, vec![deployment("2.0.0", 4, 4, 4)], vec![]), now(), Style::PLAIN);
        assert!(text.contains("Step:       4/4   [####################]  100% on 2.0.0"), "{text}");
        assert!(text.contains("Plan:       25%/30s  50%/30s  75%/30s  100%/0s"), "{text}");
        assert!(text.contains("stable   2.0.0     app-2.0.0    4         4       4"), "{text}");
        assert!(!text.contains("canary   "), "{text}");
        let aborted = deployer(json!({
            "observedGeneration": 3, "phase": "Aborted", "step": "2/4", "currentStep": 2, "weight": 0,
            "stableVersion": "1.0.0", "canaryVersion": "2.0.0", "abortReason": "AbortRequested",
        }));
        let text = frame(&snapshot(aborted, vec![deployment("1.0.0", 4, 4, 4)], vec![]), now(), Style::PLAIN);
        assert!(text.contains("Phase:      Aborted (AbortRequested)"), "{text}");
        assert!(text.contains("[--------------------]  rolled back: 100% on 1.0.0"), "{text}");
    }

    #[test]
    fn a_status_behind_the_spec_and_a_missing_status_say_so() {
        let mut behind =
            deployer(json!({"observedGeneration": 2, "phase": "Done", "stableVersion": "1.0.0"}));
        behind.metadata.generation = Some(3);
        let text = frame(&snapshot(behind, vec![], vec![]), now(), Style::PLAIN);
        assert!(text.contains("(the operator has not yet seen generation 3)"), "{text}");
        let mut fresh = deployer(json!({}));
        fresh.status = None;
        let text = frame(&snapshot(fresh, vec![], vec![]), now(), Style::PLAIN);
        assert!(text.contains("Phase:      Pending (not yet reconciled"), "{text}");
        assert!(text.contains("No versions yet."), "{text}");
        assert!(text.contains("Events:     <none>"), "{text}");
    }

    #[test]
    fn scaling_shows_the_progress_deadline_and_warnings_stand_out() {
        let mut snap = waiting();
        let status = snap.deployer.as_mut().and_then(|d| d.status.as_mut()).expect("status");
        status.phase = Some(Phase::Scaling);
        status.wait_until = None;
        status.step_started_at = Some(now() - TimeDelta::seconds(100));
        snap.events.push(event(1, "Warning", "ProgressDeadlineExceeded", "too slow"));
        let text = frame(&snap, now(), Style::PLAIN);
        assert!(text.contains("Wait:       for the canary's pods (progress deadline in 8m20s)"), "{text}");
        let coloured = frame(&snap, now(), Style { color: true, unicode: true });
        assert!(coloured.contains('\x1b') && coloured.contains('█'), "{coloured}");
        // Colours change no letter and no alignment.
        let glyphs = frame(&snap, now(), Style { color: false, unicode: true });
        assert_eq!(strip(&coloured), glyphs);
    }

    /// `text` without its escape sequences.
    fn strip(text: &str) -> String {
        let mut out = String::new();
        let mut escape = false;
        for c in text.chars() {
            match (escape, c) {
                (false, '\x1b') => escape = true,
                (false, c) => out.push(c),
                (true, c) if c.is_ascii_alphabetic() => escape = false,
                (true, _) => {}
            }
        }
        out
    }

    #[test]
    fn a_deleted_deployer_is_one_line() {
        let snap = Snapshot { namespace: "demo".into(), name: "app".into(), ..Snapshot::default() };
        assert_eq!(frame(&snap, now(), Style::PLAIN), "deployer/app not found in namespace demo");
    }
}
