//! Pure builders for the objects the operator owns: names, labels, the Deployment of one version,
//! and the reading of an owned Deployment back into what the rollout core observes.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        apps::v1::{Deployment, DeploymentSpec as K8sDeploymentSpec},
        core::v1::{Container, ContainerPort, Pod, PodSpec, PodTemplateSpec},
    },
    apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference},
};
use kube::{Resource, ResourceExt};

use crate::{
    api::{
        ABORT_ANNOTATION, Controls, Deployer, DeploymentSpec, PAUSED_ANNOTATION, PROMOTE_ANNOTATION,
        PROMOTE_FULL_ANNOTATION, RETRY_ANNOTATION,
    },
    rollout::Observed,
};

/// Label naming the Deployer that owns a Deployment (and its pods).
pub const DEPLOYER_LABEL: &str = "deploy.example.com/deployer";
/// Label naming the version a Deployment (and its pods) runs.
pub const VERSION_LABEL: &str = "deploy.example.com/version";
/// Field manager of every write the operator makes.
pub const MANAGER: &str = "deployer-operator";

/// Name of the Deployment that runs `version`: `<deployment.name>-<version>`.
pub fn deployment_name(spec: &DeploymentSpec, version: &str) -> String {
    format!("{}-{}", spec.name, version)
}

/// Pod labels of one version: the user's labels plus the deployer and version labels. The
/// Deployment's selector uses all of them, so two versions never share a pod.
pub fn pod_labels(deployer: &str, spec: &DeploymentSpec, version: &str) -> BTreeMap<String, String> {
    let mut labels = spec.labels.clone();
    labels.insert(DEPLOYER_LABEL.into(), deployer.into());
    labels.insert(VERSION_LABEL.into(), version.into());
    labels
}

/// The Deployment that runs `version` of `deployer` at `replicas`, owned by the Deployer
/// (controller reference, so deleting the Deployer garbage-collects it).
///
/// Returns `None` only if the Deployer has no name or uid (never the case for an object read
/// from the API server).
pub fn deployment(deployer: &Deployer, version: &str, replicas: i32) -> Option<Deployment> {
    let owner: OwnerReference = deployer.controller_owner_ref(&())?;
    let spec = &deployer.spec.deployment;
    let labels = pod_labels(&deployer.name_any(), spec, version);
    Some(Deployment {
        metadata: ObjectMeta {
            name: Some(deployment_name(spec, version)),
            namespace: deployer.namespace(),
            labels: Some(labels.clone()),
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        spec: Some(K8sDeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector { match_labels: Some(labels.clone()), ..LabelSelector::default() },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(labels), ..ObjectMeta::default() }),
                spec: Some(PodSpec {
                    containers: vec![Container {
                        name: spec.name.clone(),
                        image: Some(spec.image_for(version)),
                        ports: Some(vec![ContainerPort {
                            name: Some("http".into()),
                            container_port: 80,
                            protocol: Some("TCP".into()),
                            ..ContainerPort::default()
                        }]),
                        ..Container::default()
                    }],
                    ..PodSpec::default()
                }),
            },
            ..K8sDeploymentSpec::default()
        }),
        status: None,
    })
}

/// The control requests a user made with annotations: whether the rollout should be paused, and
/// the values of the one-shot requests (promote, promote-full, abort, retry).
pub fn requests(deployer: &Deployer) -> (bool, Controls) {
    let a = deployer.annotations();
    let get = |key: &str| a.get(key).filter(|v| !v.is_empty()).cloned();
    let paused = a.get(PAUSED_ANNOTATION).is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let controls = Controls {
        promote: get(PROMOTE_ANNOTATION),
        promote_full: get(PROMOTE_FULL_ANNOTATION),
        abort: get(ABORT_ANNOTATION),
        retry: get(RETRY_ANNOTATION),
    };
    (paused, controls)
}

/// Whether `d` belongs to `deployer`: a controller owner reference to its uid. Labels alone never
/// make a Deployment ours, and a label a person removed does not make it someone else's (the
/// operator puts it back).
pub fn is_owned_by(d: &Deployment, deployer: &Deployer) -> bool {
    let Some(uid) = deployer.uid() else { return false };
    d.owner_references().iter().any(|o| o.uid == uid && o.controller == Some(true))
}

/// What the rollout core needs to know of an owned Deployment of `spec`. `None` if it has no
/// version label, or one that does not match its name (`<name>-<version>`): then it is not one the
/// operator made, whatever its owner — and one version is never observed twice.
pub fn observe(spec: &DeploymentSpec, d: &Deployment) -> Option<Observed> {
    let version = d.labels().get(VERSION_LABEL)?.clone();
    if d.metadata.name.as_deref() != Some(deployment_name(spec, &version).as_str()) {
        return None;
    }
    let spec = d.spec.as_ref();
    let status = d.status.as_ref();
    let generation = d.metadata.generation.unwrap_or(0);
    let observed_generation = status.and_then(|s| s.observed_generation).unwrap_or(0);
    Some(Observed {
        version,
        replicas: spec.and_then(|s| s.replicas).unwrap_or(1),
        available: status.and_then(|s| s.available_replicas).unwrap_or(0),
        synced: observed_generation >= generation,
        image: spec
            .and_then(|s| s.template.spec.as_ref())
            .and_then(|p| p.containers.first())
            .and_then(|c| c.image.clone()),
        deleting: d.metadata.deletion_timestamp.is_some(),
    })
}

/// What the controller's cache keeps of a Deployment: what [`observe`] and [`is_owned_by`] read,
/// and its identity (the resourceVersion a write's precondition carries). The rest — the pod
/// template but its image, the selector, the status' conditions, managedFields, annotations — is
/// most of the object and nothing reads it: memory follows the number of Deployments, at a few
/// hundred bytes each.
pub fn slim(d: &mut Deployment) {
    let meta = &mut d.metadata;
    meta.managed_fields = None;
    meta.annotations = None;
    meta.finalizers = None;
    if let Some(labels) = meta.labels.as_mut() {
        labels.retain(|k, _| k == DEPLOYER_LABEL || k == VERSION_LABEL);
    }
    if let Some(spec) = d.spec.as_mut() {
        let image =
            spec.template.spec.as_ref().and_then(|p| p.containers.first()).and_then(|c| c.image.clone());
        spec.selector = LabelSelector::default();
        spec.strategy = None;
        spec.template = PodTemplateSpec {
            metadata: None,
            spec: Some(PodSpec {
                containers: vec![Container { image, ..Container::default() }],
                ..PodSpec::default()
            }),
        };
    }
    if let Some(status) = d.status.as_mut() {
        status.conditions = None;
        status.collision_count = None;
    }
}

/// How many of `pods` run `version` and are ready, and not on their way out: what really serves,
/// whatever a Deployment's status (which can lag a scale-down) still counts.
pub fn ready_pods(pods: &[Pod], version: &str) -> i32 {
    let ready = |p: &&Pod| {
        p.metadata.deletion_timestamp.is_none()
            && p.labels().get(VERSION_LABEL).map(String::as_str) == Some(version)
            && p.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    };
    i32::try_from(pods.iter().filter(ready).count()).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::seed_deployer;

    #[test]
    fn deployment_carries_the_version_in_name_image_labels_and_selector() {
        let dpl = seed_deployer();
        let d = deployment(&dpl, "1.7.8", 3).expect("fixture has name and uid");
        assert_eq!(d.metadata.name.as_deref(), Some("nginx-1.7.8"));
        assert_eq!(d.metadata.namespace.as_deref(), Some("default"));
        let spec = d.spec.as_ref().expect("spec");
        assert_eq!(spec.replicas, Some(3));
        let selector = spec.selector.match_labels.as_ref().expect("selector");
        assert_eq!(selector.get("app").map(String::as_str), Some("nginx"));
        assert_eq!(selector.get("operator").map(String::as_str), Some("deployer"));
        assert_eq!(selector.get(DEPLOYER_LABEL).map(String::as_str), Some("nginx"));
        assert_eq!(selector.get(VERSION_LABEL).map(String::as_str), Some("1.7.8"));
        let pod = spec.template.spec.as_ref().expect("pod spec");
        assert_eq!(pod.containers[0].name, "nginx");
        assert_eq!(pod.containers[0].image.as_deref(), Some("nginx:1.7.8"));
        let port = &pod.containers[0].ports.as_ref().expect("ports")[0];
        assert_eq!((port.name.as_deref(), port.container_port), (Some("http"), 80));
        let owner = &d.metadata.owner_references.as_ref().expect("owner")[0];
        assert_eq!((owner.kind.as_str(), owner.controller), ("Deployer", Some(true)));
    }

    #[test]
    fn versions_that_share_a_prefix_get_distinct_names_and_selectors() {
        let dpl = seed_deployer();
        let a = deployment(&dpl, "1.7.8", 1).expect("a");
        let b = deployment(&dpl, "1.7.80", 1).expect("b");
        assert_ne!(a.metadata.name, b.metadata.name);
        assert_ne!(a.spec.map(|s| s.selector), b.spec.map(|s| s.selector));
    }

    #[test]
    fn a_slim_deployment_is_observed_and_owned_as_the_full_one() {
        let dpl = seed_deployer();
        let mut d = deployment(&dpl, "1.7.8", 3).expect("d");
        d.metadata.annotations =
            Some([("kubectl.kubernetes.io/last-applied-configuration".into(), "x".repeat(4000))].into());
        let before = (observe(&dpl.spec.deployment, &d), is_owned_by(&d, &dpl));
        let size = serde_json::to_vec(&d).expect("json").len();
        slim(&mut d);
        assert_eq!((observe(&dpl.spec.deployment, &d), is_owned_by(&d, &dpl)), before);
        let slimmed = serde_json::to_vec(&d).expect("json").len();
        assert!(slimmed * 4 < size, "{slimmed} bytes of {size}");
    }

    #[test]
    fn a_deployment_that_only_shares_the_labels_is_not_owned() {
        let dpl = seed_deployer();
        let mut d = deployment(&dpl, "1.7.7", 1).expect("d");
        assert!(is_owned_by(&d, &dpl));
        d.metadata.owner_references = None;
        assert!(!is_owned_by(&d, &dpl), "labels alone must not make a Deployment ours");
        let mut relabelled = deployment(&dpl, "1.7.7", 1).expect("d");
        relabelled.metadata.labels = None;
        assert!(is_owned_by(&relabelled, &dpl), "ownership is the owner reference, not a label");
        let mut foreign = deployment(&dpl, "1.7.7", 1).expect("d");
        foreign.metadata.owner_references.as_mut().expect("owner")[0].uid = "someone-else".into();
        assert!(!is_owned_by(&foreign, &dpl));
    }
}
