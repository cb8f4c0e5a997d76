//! Test fixtures: builders for Deployers, statuses and observations.

use std::collections::BTreeMap;

use kube::api::ObjectMeta;

use crate::api::{Deployer, DeployerSpec, DeploymentSpec, Step, Strategy};

/// The seed's sample Deployer (nginx 1.7.7, 10 replicas, steps 10/60, 30/30, 60/30, 100), with the
/// metadata the API server would have given it.
pub fn seed_deployer() -> Deployer {
    let mut d = Deployer::new("nginx", seed_spec());
    d.metadata = ObjectMeta {
        name: Some("nginx".into()),
        namespace: Some("default".into()),
        uid: Some("6f1c1c1e-0000-4000-8000-000000000001".into()),
        generation: Some(1),
        ..ObjectMeta::default()
    };
    d
}

/// The seed sample's spec.
pub fn seed_spec() -> DeployerSpec {
    DeployerSpec {
        strategy: Strategy::Canary,
        deployment: DeploymentSpec {
            name: "nginx".into(),
            namespace: Some("default".into()),
            image: "nginx".into(),
            version: "1.7.7".into(),
            labels: BTreeMap::from([("app".into(), "nginx".into()), ("operator".into(), "deployer".into())]),
            replicas: 10,
        },
        steps: vec![step(10, 60), step(30, 30), step(60, 30), step(100, 0)],
        progress_deadline_seconds: 600,
        analysis: None,
        notifications: None,
    }
}

/// A step.
pub fn step(percent: i32, sleep: i64) -> Step {
    Step { percent, sleep, ..Step::default() }
}
