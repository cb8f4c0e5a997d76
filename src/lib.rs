//! deployer-operator: restart-safe canary rollouts for Kubernetes through a `Deployer` resource.
//!
//! - [`api`]: the custom resource (spec, status, admission rules);
//! - [`replicas`]: the replica arithmetic of a step;
//! - [`rollout`]: the pure state machine that decides every action;
//! - [`checks`]: the pure part of step gates (metric and webhook checks);
//! - [`probe`]: the calls of the checks and the notifications (HTTP);
//! - [`resources`]: pure builders of the Deployments the operator owns;
//! - [`controller`]: the thin shell that observes, calls the core, acts and persists;
//! - [`leader`]: leader election on a Lease, so that only one replica reconciles;
//! - [`metrics`], [`http`], [`telemetry`]: what operators of the operator see (metrics, probes, logs);
//! - [`shutdown`]: the stop signal shared by the controller, leader election and SIGTERM.

pub mod api;
pub mod checks;
pub mod controller;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod probe;
pub mod replicas;
pub mod resources;
pub mod rollout;
pub mod shutdown;
pub mod telemetry;

#[cfg(test)]
pub mod fixtures;

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
    /// A Deployment the operator must create exists and is not owned by the Deployer.
    #[error("Deployment {0} exists and is not owned by this Deployer; rename or delete it")]
    NameConflict(String),
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

/// Result with the operator's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
