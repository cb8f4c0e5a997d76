//! deployer-operator: restart-safe canary rollouts for Kubernetes through a `Deployer` resource.
//!
//! The folders are the architecture: a functional core that decides, and an imperative shell
//! that observes and acts.
//!
//! - [`api`]: the custom resource (spec, status, admission rules);
//! - `pure/` — no client, no clock, no I/O; tables and properties test it:
//!   - [`rollout`]: the state machine that decides every action, and the one codec of the status;
//!   - [`checks`]: step gates (metric and webhook checks): what is due, what answers mean;
//!   - [`replicas`]: the replica arithmetic of a step;
//!   - [`resources`]: the Deployments the operator owns, built and read back;
//! - `shell/` — talks to the world:
//!   - [`controller`]: observe → decide → call checks → confirm → act → persist → publish;
//!   - [`probe`]: the checks' HTTP calls and the notifications;
//!   - [`leader`]: leader election on a Lease, so that only one replica reconciles;
//!   - [`metrics`], [`http`], [`telemetry`]: what operators of the operator see;
//!   - [`shutdown`]: the stop signal shared by the controller, leader election and SIGTERM.

pub mod api;
#[cfg(test)]
pub mod fixtures;
mod pure;
mod shell;

pub use pure::{checks, replicas, resources, rollout};
pub use shell::{controller, http, leader, metrics, probe, shutdown, telemetry};

/// Everything that can fail in the operator, with the object and the stage it failed at.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the Kubernetes API failed.
    #[error("{action} {object}: {source}")]
    Kube {
        /// What was being done (e.g. "create Deployment").
        action: &'static str,
        /// `namespace/name` of the object.
        object: String,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
    /// A write was refused because the object changed since it was read (a conflict on its
    /// resourceVersion): the view it was decided on is stale. Decided again, soon.
    #[error("{0} changed since it was read; deciding again")]
    Stale(String),
    /// The Deployer lacks what an object read from the API server always has.
    #[error("Deployer {0} has no name, namespace or uid")]
    MissingMetadata(String),
    /// A setting is invalid (the message names it).
    #[error("{0}")]
    InvalidConfig(String),
    /// The HTTP endpoints cannot listen on the address asked for.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// Why not.
        #[source]
        source: std::io::Error,
    },
    /// A call to the leader-election Lease failed.
    #[error("{action} {lease}: {source}")]
    Lease {
        /// What was being done.
        action: &'static str,
        /// `namespace/name` of the Lease.
        lease: String,
        /// The lease manager's error.
        #[source]
        source: kube_lease_manager::LeaseManagerError,
    },
    /// This replica lost the lease and stopped reconciling; it exits so that it restarts as a
    /// standby.
    #[error("lost leadership ({0}); exiting to restart as a standby")]
    LeadershipLost(String),
}

impl Error {
    /// The error's kind as a metric label: low-cardinality whatever the error carries.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube { .. } => "kube",
            Error::Stale(_) => "stale",
            Error::MissingMetadata(_) => "missing_metadata",
            Error::InvalidConfig(_) => "invalid_config",
            Error::Listen { .. } => "listen",
            Error::Lease { .. } => "lease",
            Error::LeadershipLost(_) => "leadership_lost",
        }
    }
}

/// Result with the operator's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
