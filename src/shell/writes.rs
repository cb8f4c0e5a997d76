//! Every write the controller makes, fenced by the API server's optimistic concurrency.
//!
//! - The status is written first (server-side apply of the status subresource) on the
//!   resourceVersion the decision was made from: a stale writer — a leader deposed while it was
//!   frozen, a reconcile on a cache that lagged — gets a conflict and acts on nothing.
//! - Each Deployment is shrunk on the resourceVersion it was observed at, and deleted on its uid
//!   and resourceVersion: a change the decision did not see refuses the write. (A growth is not
//!   fenced: more pods never cost availability.)
//! - Deployments are created with POST, never taken over; one that exists and is ours but was not
//!   seen (its labels removed by hand) gets its labels back and is decided on once it is seen.
//!
//! Clocks play no part: correctness between two writers comes from these preconditions.

use std::sync::Arc;

use k8s_openapi::api::apps::v1::Deployment;
use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions, PropagationPolicy},
};
use serde_json::json;
use tracing::info;

use crate::{
    Error, Result,
    api::{Deployer, DeployerStatus},
    resources::{self, DEPLOYER_LABEL, MANAGER, VERSION_LABEL},
    rollout::{Decision, Scale},
};

/// What became of a decision's Deployment moves.
#[derive(Debug, PartialEq, Eq)]
pub enum Acted {
    /// All made.
    Done,
    /// A Deployment changed since it was observed (or went): nothing more was moved.
    Stale,
    /// A Deployment the rollout needs exists and is not ours.
    Taken(String),
    /// A Deployment the decision did not see exists and is ours: its labels were restored.
    Unseen,
    /// The API server refused a write (a quota, an admission webhook): what it said.
    Refused(String),
}

/// Writes `status` to the Deployer if it differs from `before`, on resourceVersion `version`.
/// Returns the new resourceVersion (`None`: nothing to write). A status the operator could not
/// read is never overwritten: only its conditions are merged in, for a person to fix the rest.
pub async fn status(
    api: &Api<Deployer>,
    name: &str,
    version: Option<&str>,
    before: Option<&DeployerStatus>,
    status: &DeployerStatus,
) -> Result<Option<String>> {
    if before == Some(status) {
        return Ok(None);
    }
    let object = || format!("{}/{name}", api.namespace().unwrap_or_default());
    let written = if status.unreadable.is_some() {
        let body = json!({
            "metadata": {"resourceVersion": version},
            "status": {"conditions": status.conditions, "observedGeneration": status.observed_generation},
        });
        api.patch_status(name, &PatchParams::default(), &Patch::Merge(&body)).await
    } else {
        let body = json!({
            "apiVersion": Deployer::api_version(&()),
            "kind": Deployer::kind(&()),
            "metadata": {"resourceVersion": version},
            "status": status,
        });
        api.patch_status(name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&body)).await
    };
    match written {
        Ok(written) => Ok(written.resource_version()),
        Err(kube::Error::Api(s)) if s.code == 409 => {
            Err(Error::Stale(format!("status of Deployer {}", object())))
        }
        Err(source) => Err(Error::Kube { action: "write status of Deployer", object: object(), source }),
    }
}

/// Creates and deletes of Deployments the API server accepted, which the watch may not show yet.
#[derive(Debug, Default)]
pub struct Landed {
    /// The API server's answers to our creates, slimmed as the cache keeps them.
    pub created: Vec<Arc<Deployment>>,
    /// The uids of the Deployments we deleted.
    pub deleted: Vec<String>,
}

/// Makes the decision's Deployment moves: creates and resizes first, deletes after, each on what
/// was observed of it (`owned`). What it created and deleted goes to `landed` (even when a later
/// move fails).
pub async fn act(
    api: &Api<Deployment>,
    dpl: &Deployer,
    owned: &[Arc<Deployment>],
    decision: &Decision,
    landed: &mut Landed,
) -> Result<Acted> {
    for scale in &decision.apply {
        let acted = apply(api, dpl, owned, scale, &mut landed.created).await?;
        if acted != Acted::Done {
            return Ok(acted);
        }
    }
    for version in &decision.delete {
        let name = resources::deployment_name(&dpl.spec.deployment, version);
        let Some(seen) = owned.iter().find(|d| d.name_any() == name) else { continue };
        info!(deployment = %name, "deleting");
        let params = DeleteParams {
            preconditions: Some(Preconditions { uid: seen.uid(), resource_version: seen.resource_version() }),
            propagation_policy: Some(PropagationPolicy::Background),
            ..DeleteParams::default()
        };
        match api.delete(&name, &params).await {
            Ok(_) => landed.deleted.extend(seen.uid()),
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(err) => return refusal("delete Deployment", api, &name, err),
        }
    }
    Ok(Acted::Done)
}

/// Creates or resizes one version's Deployment.
async fn apply(
    api: &Api<Deployment>,
    dpl: &Deployer,
    owned: &[Arc<Deployment>],
    scale: &Scale,
    created: &mut Vec<Arc<Deployment>>,
) -> Result<Acted> {
    let mut desired = resources::deployment(dpl, &scale.version, scale.replicas)
        .ok_or_else(|| Error::MissingMetadata(dpl.name_any()))?;
    let name = desired.name_any();
    info!(deployment = %name, replicas = scale.replicas, create = scale.create, "applying");
    let seen = owned.iter().find(|d| d.name_any() == name);
    if scale.create || seen.is_none() {
        // POST, not apply: an existing Deployment of that name is never taken over.
        let params = PostParams { field_manager: Some(MANAGER.into()), ..PostParams::default() };
        return match api.create(&params, &desired).await {
            Ok(mut d) => {
                resources::slim(&mut d);
                created.push(Arc::new(d));
                Ok(Acted::Done)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => claim(api, dpl, &name, &scale.version).await,
            Err(err) => refusal("create Deployment", api, &name, err),
        };
    }
    // A shrink is made only on the Deployment as it was observed (a change since refuses it); a
    // growth needs no such fence — more pods never cost availability, and a Deployment whose
    // status the controller manager keeps updating would otherwise refuse it again and again.
    let shrinks = seen.and_then(|d| d.spec.as_ref()?.replicas).is_some_and(|r| scale.replicas < r);
    if shrinks {
        desired.metadata.resource_version = seen.and_then(|d| d.resource_version());
    }
    match api.patch(&name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&desired)).await {
        Ok(_) => Ok(Acted::Done),
        Err(err) => refusal("apply Deployment", api, &name, err),
    }
}

/// A Deployment of the name the rollout needs exists: ours (by controller owner reference to this
/// Deployer's uid), its identity labels are put back — a person may have removed them, taking it
/// out of the watch — and it is decided on once the watch sees it; anyone else's, it is taken.
async fn claim(api: &Api<Deployment>, dpl: &Deployer, name: &str, version: &str) -> Result<Acted> {
    let existing = match api.get(name).await {
        Ok(d) => d,
        Err(kube::Error::Api(s)) if s.code == 404 => return Ok(Acted::Stale),
        Err(source) => return Err(kube_error("get Deployment", api, name, source)),
    };
    if !resources::is_owned_by(&existing, dpl) {
        return Ok(Acted::Taken(name.to_string()));
    }
    let labels = existing.labels();
    if labels.get(DEPLOYER_LABEL) != Some(&dpl.name_any())
        || labels.get(VERSION_LABEL).map(String::as_str) != Some(version)
    {
        info!(deployment = %name, "restoring the labels of an owned Deployment");
        let body = json!({
            "metadata": {
                "resourceVersion": existing.resource_version(),
                "labels": {DEPLOYER_LABEL: dpl.name_any(), VERSION_LABEL: version},
            }
        });
        if let Err(err) = api.patch(name, &PatchParams::default(), &Patch::Merge(&body)).await {
            return refusal("restore the labels of Deployment", api, name, err);
        }
    }
    Ok(Acted::Unseen)
}

/// What a failed Deployment write means: a conflict or a vanished object is a stale view (decide
/// again); a refusal with a reason (a quota, an admission webhook, a validation) is for people to
/// see; anything else (the API server unreachable) fails the reconcile.
fn refusal(action: &'static str, api: &Api<Deployment>, name: &str, err: kube::Error) -> Result<Acted> {
    match err {
        kube::Error::Api(s) if s.code == 409 || s.code == 404 => Ok(Acted::Stale),
        kube::Error::Api(s) if (400..500).contains(&s.code) => {
            let ns = api.namespace().unwrap_or_default();
            Ok(Acted::Refused(format!("{action} {ns}/{name} refused: {}", s.message)))
        }
        source => Err(kube_error(action, api, name, source)),
    }
}

fn kube_error(action: &'static str, api: &Api<Deployment>, name: &str, source: kube::Error) -> Error {
    let ns = api.namespace().unwrap_or_default();
    Error::Kube { action, object: format!("{ns}/{name}"), source }
}
