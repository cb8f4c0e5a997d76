//! The reasons of the Events the operator publishes, and of the conditions of a halted Deployer:
//! a closed set, so that the metrics, the notifications and the plugin match on names, not strings.

use crate::api::AbortReason;

/// The reason of an Event (and of a halted Deployer's conditions).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    /// A first deploy started.
    Deploying,
    /// A rollout (or first deploy) was replaced by a newer version.
    Superseded,
    /// The version was set back to the stable one.
    RolledBack,
    /// `spec.steps` changed mid-rollout.
    StepsChanged,
    /// A rollout of a new version started.
    RolloutStarted,
    /// A step's scaling started.
    StepStarted,
    /// A step's replicas are in place.
    StepCompleted,
    /// The canary reached 100%.
    Promoted,
    /// One version runs at full size.
    RolloutComplete,
    /// The canary did not become available in time.
    ProgressDeadlineExceeded,
    /// An abort was requested.
    AbortRequested,
    /// A check failed.
    CheckFailed,
    /// A check could not tell.
    CheckInconclusive,
    /// A gate's checks run.
    GateChecking,
    /// A pause step holds the rollout.
    StepPaused,
    /// The paused annotation holds the rollout.
    Paused,
    /// The paused annotation went.
    Resumed,
    /// A retry was requested.
    RetryRequested,
    /// Promote-full was requested.
    PromoteFullRequested,
    /// Promote was requested.
    PromoteRequested,
    /// A rollback webhook failed (the rollback goes on).
    RollbackHookFailed,
    /// The spec asks for something the operator cannot do.
    InvalidSpec,
    /// The status cannot be interpreted.
    StatusUnreadable,
    /// The Deployer had no status, but owned Deployments: they were adopted.
    StatusLost,
    /// A Deployment of the Deployer's name belongs to someone else.
    NameConflict,
    /// A notification could not be sent.
    NotificationFailed,
    /// The API server refused a write of the operator's (a quota, an admission webhook).
    WriteRefused,
}

impl Reason {
    /// The CamelCase reason as Kubernetes shows it.
    pub fn as_str(self) -> &'static str {
        use Reason::*;
        match self {
            Deploying => "Deploying",
            Superseded => "Superseded",
            RolledBack => "RolledBack",
            StepsChanged => "StepsChanged",
            RolloutStarted => "RolloutStarted",
            StepStarted => "StepStarted",
            StepCompleted => "StepCompleted",
            Promoted => "Promoted",
            RolloutComplete => "RolloutComplete",
            ProgressDeadlineExceeded => "ProgressDeadlineExceeded",
            AbortRequested => "AbortRequested",
            CheckFailed => "CheckFailed",
            CheckInconclusive => "CheckInconclusive",
            GateChecking => "GateChecking",
            StepPaused => "StepPaused",
            Paused => "Paused",
            Resumed => "Resumed",
            RetryRequested => "RetryRequested",
            PromoteFullRequested => "PromoteFullRequested",
            PromoteRequested => "PromoteRequested",
            RollbackHookFailed => "RollbackHookFailed",
            InvalidSpec => "InvalidSpec",
            StatusUnreadable => "StatusUnreadable",
            StatusLost => "StatusLost",
            NameConflict => "NameConflict",
            NotificationFailed => "NotificationFailed",
            WriteRefused => "WriteRefused",
        }
    }

    /// The reason of an abort.
    pub fn of_abort(reason: AbortReason) -> Reason {
        match reason {
            AbortReason::ProgressDeadlineExceeded => Reason::ProgressDeadlineExceeded,
            AbortReason::AbortRequested => Reason::AbortRequested,
            AbortReason::CheckFailed => Reason::CheckFailed,
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
