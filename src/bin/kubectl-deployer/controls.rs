//! The rollout controls as annotation patches, and the one line the plugin prints for each.
//!
//! The operator reads them in `deployer_operator::resources::requests`: `paused: "true"` holds the
//! rollout while it is set; each of promote, promote-full, abort and retry is carried out once per
//! new value, then recorded in `status.handled`.

use chrono::{DateTime, SecondsFormat, Utc};
use deployer_operator::api::{
    ABORT_ANNOTATION, Deployer, PAUSED_ANNOTATION, PROMOTE_ANNOTATION, PROMOTE_FULL_ANNOTATION, Phase,
    RETRY_ANNOTATION,
};
use kube::ResourceExt;
use serde_json::{Value, json};

/// What a user can ask of a rollout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    /// End the current wait or pause and go to the next step.
    Promote,
    /// Go to 100% now.
    PromoteFull,
    /// Roll back to the stable version.
    Abort,
    /// Restart an aborted rollout from step 1.
    Retry,
    /// Hold the rollout where it is.
    Pause,
    /// Let a paused rollout go on.
    Resume,
}

impl Control {
    /// The annotation that carries it.
    pub fn annotation(self) -> &'static str {
        match self {
            Control::Promote => PROMOTE_ANNOTATION,
            Control::PromoteFull => PROMOTE_FULL_ANNOTATION,
            Control::Abort => ABORT_ANNOTATION,
            Control::Retry => RETRY_ANNOTATION,
            Control::Pause | Control::Resume => PAUSED_ANNOTATION,
        }
    }

    /// Its name in messages.
    pub fn name(self) -> &'static str {
        match self {
            Control::Promote => "promote",
            Control::PromoteFull => "promote-full",
            Control::Abort => "abort",
            Control::Retry => "retry",
            Control::Pause => "pause",
            Control::Resume => "resume",
        }
    }

    /// The merge patch that asks for it: a new unique value for a request, `"true"` for pause,
    /// the annotation's removal (`null`) for resume.
    pub fn patch(self, token: &str) -> Value {
        let value = match self {
            Control::Pause => json!("true"),
            Control::Resume => Value::Null,
            _ => json!(token),
        };
        json!({ "metadata": { "annotations": { self.annotation(): value } } })
    }
}

/// A request value unique to this instant: the time in RFC 3339 with nanoseconds (what
/// `kubectl annotate … "$(date -Ins)"` gives, in UTC). Never the value already set.
pub fn token(now: DateTime<Utc>, current: Option<&str>) -> String {
    let t = now.to_rfc3339_opts(SecondsFormat::Nanos, true);
    if current == Some(t.as_str()) { format!("{t}-1") } else { t }
}

/// The names of the requests set on `d` that the operator has not carried out yet, in order
/// of precedence.
pub fn pending(d: &Deployer) -> Vec<&'static str> {
    let (_, asked) = deployer_operator::resources::requests(d);
    let handled = d.status.as_ref().map(|s| s.handled.clone()).unwrap_or_default();
    deployer_operator::rollout::control::pending(&asked, &handled).into_iter().map(|r| r.name()).collect()
}

/// The line printed once `control` was asked of `d` (as it was before the patch): what was
/// requested and, if the operator will not act on it, why.
pub fn message(control: Control, d: &Deployer) -> String {
    let who = format!("deployer/{}", d.name_any());
    let status = d.status.clone().unwrap_or_default();
    let phase = status.phase;
    let at = match (&status.step, phase) {
        (Some(step), Some(phase)) => format!("at step {step} ({phase})"),
        _ => "before its first reconcile".into(),
    };
    let memory = deployer_operator::rollout::state::read(Some(&status)).ok().flatten();
    let stepping = memory.as_ref().is_some_and(|m| m.in_flight());
    let finished = |what: &str| {
        let phase = phase.map_or("not started".to_string(), |p| p.to_string());
        format!(
            "{who}: {what} requested, but no rollout is in progress ({phase}): the operator will ignore it"
        )
    };
    let (paused, _) = deployer_operator::resources::requests(d);
    let canary = status.canary_version.as_deref().unwrap_or("the new version");
    let stable = status.stable_version.as_deref().unwrap_or("the stable version");
    match control {
        Control::Promote if stepping => format!("{who}: promote requested {at}"),
        Control::PromoteFull if stepping => {
            format!("{who}: promote-full requested {at}: {canary} goes to 100%")
        }
        Control::Abort if stepping => format!("{who}: abort requested {at}: rolling back to {stable}"),
        Control::Promote | Control::PromoteFull | Control::Abort => finished(control.name()),
        Control::Retry if phase == Some(Phase::Aborted) => {
            format!("{who}: retry requested: {canary} starts again from step 1")
        }
        Control::Retry => {
            let phase = phase.map_or("not started".to_string(), |p| p.to_string());
            format!(
                "{who}: retry requested, but the rollout is not Aborted ({phase}): the operator will ignore it"
            )
        }
        Control::Pause if paused => format!("{who}: already paused ({PAUSED_ANNOTATION}=true)"),
        Control::Pause => format!("{who}: pause requested {at} ({PAUSED_ANNOTATION}=true)"),
        Control::Resume if paused => format!("{who}: resume requested ({PAUSED_ANNOTATION} removed)"),
        Control::Resume => format!("{who}: was not paused ({PAUSED_ANNOTATION} not set); nothing to resume"),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::snapshot::fixtures::{deployer, now};

    fn waiting() -> Deployer {
        deployer(json!({
            "phase": "Waiting", "step": "2/4", "currentStep": 2, "stableVersion": "1.0.0", "canaryVersion": "2.0.0",
        }))
    }

    #[test]
    fn patches_set_a_unique_value_or_remove_the_paused_annotation() {
        let t = token(now(), None);
        assert_eq!(t, "2025-06-01T12:00:00.000000000Z");
        assert_eq!(token(now(), Some(&t)), format!("{t}-1"));
        assert_eq!(
            Control::Promote.patch(&t),
            json!({"metadata": {"annotations": {"deploy.example.com/promote": t}}})
        );
        assert_eq!(
            Control::PromoteFull.patch("x"),
            json!({"metadata": {"annotations": {"deploy.example.com/promote-full": "x"}}})
        );
        assert_eq!(
            Control::Abort.patch("x"),
            json!({"metadata": {"annotations": {"deploy.example.com/abort": "x"}}})
        );
        assert_eq!(
            Control::Retry.patch("x"),
            json!({"metadata": {"annotations": {"deploy.example.com/retry": "x"}}})
        );
        assert_eq!(
            Control::Pause.patch("x"),
            json!({"metadata": {"annotations": {"deploy.example.com/paused": "true"}}})
        );
        assert_eq!(
            Control::Resume.patch("x"),
            json!({"metadata": {"annotations": {"deploy.example.com/paused": null}}})
        );
    }

    #[test]
    fn messages_say_what_was_requested_and_when_it_will_be_ignored() {
        let d = waiting();
        assert_eq!(message(Control::Promote, &d), "deployer/app: promote requested at step 2/4 (Waiting)");
        assert_eq!(
            message(Control::PromoteFull, &d),
            "deployer/app: promote-full requested at step 2/4 (Waiting): 2.0.0 goes to 100%"
        );
        assert_eq!(
            message(Control::Abort, &d),
            "deployer/app: abort requested at step 2/4 (Waiting): rolling back to 1.0.0"
        );
        assert_eq!(
            message(Control::Retry, &d),
            "deployer/app: retry requested, but the rollout is not Aborted (Waiting): the operator will ignore it"
        );
        assert_eq!(
            message(Control::Pause, &d),
            "deployer/app: pause requested at step 2/4 (Waiting) (deploy.example.com/paused=true)"
        );
        assert_eq!(
            message(Control::Resume, &d),
            "deployer/app: was not paused (deploy.example.com/paused not set); nothing to resume"
        );
        let done = deployer(json!({"phase": "Done", "step": "4/4", "stableVersion": "2.0.0"}));
        assert_eq!(
            message(Control::Promote, &done),
            "deployer/app: promote requested, but no rollout is in progress (Done): the operator will ignore it"
        );
        let aborted = deployer(
            json!({"phase": "Aborted", "step": "2/4", "stableVersion": "1.0.0", "canaryVersion": "2.0.0"}),
        );
        assert_eq!(
            message(Control::Retry, &aborted),
            "deployer/app: retry requested: 2.0.0 starts again from step 1"
        );
        let mut paused = waiting();
        paused.metadata.annotations = Some([(PAUSED_ANNOTATION.to_string(), "true".to_string())].into());
        assert_eq!(
            message(Control::Pause, &paused),
            "deployer/app: already paused (deploy.example.com/paused=true)"
        );
        assert_eq!(
            message(Control::Resume, &paused),
            "deployer/app: resume requested (deploy.example.com/paused removed)"
        );
    }

    #[test]
    fn pending_lists_new_request_values_in_order_of_precedence() {
        let mut d = deployer(json!({"phase": "Waiting", "handled": {"promote": "a", "abort": "old"}}));
        d.metadata.annotations = Some(
            [
                (PROMOTE_ANNOTATION.to_string(), "b".to_string()),
                (ABORT_ANNOTATION.to_string(), "old".to_string()),
                (RETRY_ANNOTATION.to_string(), "r".to_string()),
                (PROMOTE_FULL_ANNOTATION.to_string(), String::new()),
            ]
            .into(),
        );
        assert_eq!(pending(&d), ["retry", "promote"]);
        d.status.as_mut().expect("status").handled.promote = Some("b".into());
        d.status.as_mut().expect("status").handled.retry = Some("r".into());
        assert!(pending(&d).is_empty());
    }
}
