//! The controller: the imperative shell around [`crate::rollout`].
//!
//! A reconcile observes (the Deployer, and the Deployments it owns from a watch cache), decides (one
//! call to the pure core), acts (create, server-side apply, delete), persists the status, publishes
//! the Events and returns when to look again. It never sleeps and keeps no state of its own: the
//! Deployer's status is the rollout's whole memory, so the process can die at any instant.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use chrono::{SubsecRound, Utc};
use futures::{FutureExt, StreamExt, future};
use k8s_openapi::api::apps::v1::Deployment;
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions, PropagationPolicy},
    runtime::{
        Controller, WatchStreamExt,
        controller::{self, Action},
        events::{Event, EventType, Recorder, Reporter},
        reflector::{self, Store},
        watcher,
    },
};
use serde_json::json;
use tracing::{debug, info, warn};

use crate::{
    Error, Result,
    api::{Deployer, DeployerStatus},
    http::Health,
    metrics::Metrics,
    probe::{self, Prober},
    resources::{self, DEPLOYER_LABEL, MANAGER},
    rollout::{self, Decision, Input, Observed, Scale, Settings, Severity},
    shutdown::Shutdown,
};

/// How long reconciles still running at shutdown may take to finish before they are cancelled
/// (harmless either way: the next reconcile, by whichever replica, starts from the persisted
/// status). Kept short: a standby waits for this before it can take over.
const DRAIN: Duration = Duration::from_millis(500);

/// Rounds of check calls in one reconcile.
const CALL_ROUNDS: usize = 3;

/// How the controller runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// Watch only these namespaces (empty: all namespaces).
    pub namespaces: Vec<String>,
    /// Deployers reconciled at once (per watched namespace).
    pub concurrency: u16,
    /// Tunables of the rollout core.
    pub settings: Settings,
}

/// What every reconcile shares.
pub struct Context {
    client: Client,
    recorder: Recorder,
    /// The Deployments labelled as owned by some Deployer, kept current by a watch.
    deployments: Store<Deployment>,
    settings: Settings,
    /// The resourceVersion each Deployer (by uid) had after our last status write, and that
    /// status; lets a reconcile notice that the watch cache has not caught up with that write yet.
    written: Mutex<HashMap<String, (String, DeployerStatus)>>,
    metrics: Arc<Metrics>,
    /// Makes the checks' calls and sends notifications.
    prober: Prober,
}

/// Runs the controller until `shutdown`, then lets the reconciles in flight finish (for at most
/// [`DRAIN`]). With several namespaces, one controller runs per namespace. Marks `health` synced
/// once every cache has its initial list, and reports the Deployer caches and leadership to
/// `metrics` meanwhile.
pub async fn run(
    client: Client,
    config: Config,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    shutdown: Shutdown,
) -> Result<()> {
    let scopes: Vec<Option<String>> = if config.namespaces.is_empty() {
        vec![None]
    } else {
        config.namespaces.iter().cloned().map(Some).collect()
    };
    let mut controllers = Vec::new();
    let mut deployer_stores = Vec::new();
    let mut deployment_stores = Vec::new();
    for scope in scopes {
        let (deployers, deployments): (Api<Deployer>, Api<Deployment>) = match &scope {
            Some(ns) => (Api::namespaced(client.clone(), ns), Api::namespaced(client.clone(), ns)),
            None => (Api::all(client.clone()), Api::all(client.clone())),
        };
        check_crd(&deployers).await?;

        // One watch of the Deployments we label, shared by the reconciler (as its cache) and the
        // controller (as the trigger that maps a Deployment to its owning Deployer).
        let (reader, writer) = reflector::store();
        let owned = watcher(deployments, watcher::Config::default().labels(DEPLOYER_LABEL))
            .default_backoff()
            // The cache keeps what `resources::observe` and `is_owned_by` read; managedFields are
            // the largest part of a Deployment and nothing here reads them.
            .modify(|d| d.metadata.managed_fields = None)
            .reflect(writer)
            .touched_objects();
        deployment_stores.push(reader.clone());
        let ctx = Arc::new(Context {
            client: client.clone(),
            recorder: Recorder::new(client.clone(), Reporter::from(MANAGER)),
            deployments: reader,
            settings: config.settings.clone(),
            written: Mutex::new(HashMap::new()),
            metrics: metrics.clone(),
            prober: Prober::new(),
        });
        info!(namespace = scope.as_deref().unwrap_or("<all>"), "starting controller");
        // The Deployers' watch and cache, without their managedFields (as for the Deployments).
        let (deployer_reader, deployer_writer) = reflector::store();
        let deployer_events = watcher(deployers, watcher::Config::default())
            .default_backoff()
            .modify(|d| d.metadata.managed_fields = None)
            .reflect(deployer_writer)
            .applied_objects();
        let controller = Controller::for_stream(deployer_events, deployer_reader)
            .owns_stream(owned)
            .with_config(controller::Config::default().concurrency(config.concurrency))
            .graceful_shutdown_on(shutdown.clone());
        deployer_stores.push(controller.store());
        controllers.push(controller.run(reconcile, error_policy, ctx).for_each(|res| async move {
            match res {
                Ok((obj, action)) => debug!(%obj, ?action, "reconciled"),
                Err(err) => warn!(%err, "reconcile failed"),
            }
        }));
    }
    metrics.set_leader(true);
    metrics.set_deployer_stores(deployer_stores.clone());
    let _reported = Reported(&metrics, &health);
    let synced = async {
        for store in &deployer_stores {
            let _ = store.wait_until_ready().await;
        }
        for store in &deployment_stores {
            let _ = store.wait_until_ready().await;
        }
        health.set_synced(true);
        info!("caches synced");
    };
    let running = future::join(future::join_all(controllers), synced);
    let drained = async {
        shutdown.await;
        tokio::time::sleep(DRAIN).await;
    };
    tokio::select! {
        _ = running => {}
        () = drained => warn!("reconciles still running {DRAIN:?} after shutdown: cancelled"),
    }
    info!("controller stopped");
    Ok(())
}

/// Withdraws what [`run`] reports (leadership, caches, readiness) when it ends, however it ends:
/// a lost lease drops it mid-way.
struct Reported<'a>(&'a Metrics, &'a Health);

impl Drop for Reported<'_> {
    fn drop(&mut self) {
        self.1.set_synced(false);
        self.0.set_deployer_stores(Vec::new());
        self.0.set_leader(false);
    }
}

/// Fails with a clear message when the Deployer CRD is not installed.
async fn check_crd(deployers: &Api<Deployer>) -> Result<()> {
    deployers.list(&ListParams::default().limit(1)).await.map(|_| ()).map_err(|source| Error::Kube {
        action: "list Deployers (is the CRD installed? run `make install`)",
        object: "deployers.deploy.example.com".into(),
        source,
    })
}

/// One reconcile of one Deployer: observe → decide → act → persist → publish.
#[tracing::instrument(skip_all, fields(deployer = %format!("{}/{}", dpl.namespace().unwrap_or_default(), dpl.name_any())))]
async fn reconcile(dpl: Arc<Deployer>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_started();
    let (Some(ns), Some(uid)) = (dpl.namespace(), dpl.uid()) else {
        return Err(Error::MissingMetadata(dpl.name_any()));
    };
    // Right after a start the Deployments cache may still be filling: deciding from it would take
    // owned Deployments for missing ones.
    // The cache is filled by the same controller that runs this reconcile, so never block on it.
    if ctx.deployments.wait_until_ready().now_or_never().is_none() {
        return Ok(Action::requeue(Duration::from_millis(100)));
    }
    let dpl = fresh(&ctx, dpl, &ns, &uid).await?;
    if dpl.meta().deletion_timestamp.is_some() {
        // Garbage collection removes the owned Deployments; nothing is created meanwhile.
        return Ok(Action::await_change());
    }
    let name = dpl.name_any();
    let owned: Vec<Arc<Deployment>> = ctx
        .deployments
        .state()
        .into_iter()
        .filter(|d| d.namespace().as_deref() == Some(ns.as_str()) && resources::is_owned_by(d, &dpl))
        .collect();
    let observed: Vec<Observed> = owned.iter().filter_map(|d| resources::observe(d)).collect();
    let (paused, requests) = resources::requests(&dpl);
    let input = Input {
        name: &name,
        namespace: &ns,
        generation: dpl.meta().generation.unwrap_or(0),
        spec: &dpl.spec,
        status: dpl.status.as_ref(),
        observed: &observed,
        now: Utc::now().trunc_subsecs(3),
        settings: &ctx.settings,
        paused,
        requests: &requests,
        outcomes: &[],
    };
    let mut decision = rollout::decide(&input);
    // Checks due now (a query, a webhook): make the calls and decide again with their answers. A
    // passed gate may open the next one at once, hence a few rounds; what is still due after
    // them is taken up by the next reconcile.
    let mut outcomes = Vec::new();
    for _ in 0..CALL_ROUNDS {
        if decision.calls.is_empty() {
            break;
        }
        let answered = ctx.prober.run(&decision.calls).await;
        ctx.metrics.checked(&answered);
        outcomes.extend(answered);
        decision = rollout::decide(&Input { outcomes: &outcomes, ..input.clone() });
    }
    if !decision.calls.is_empty() {
        decision.requeue = Some(Duration::ZERO);
    }

    let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ns);
    let acted = act(&api, &dpl, &owned, &decision).await;
    let decision = match acted {
        Err(Error::NameConflict(taken)) => rollout::halted(
            &input,
            "NameConflict",
            format!("Deployment {taken} exists and is not owned by this Deployer; rename or delete it"),
        ),
        other => {
            other?;
            decision
        }
    };
    if let Some(version) = persist(&dpl, &ctx.client, &decision.status).await? {
        ctx.written.lock().unwrap_or_else(|e| e.into_inner()).insert(uid, (version, decision.status.clone()));
    }
    ctx.metrics.decided(dpl.status.as_ref(), &decision.status, &decision.notes, input.now);
    for note in &decision.notes {
        publish(&ctx.recorder, &dpl, note).await;
    }
    if dpl.spec.notifications.is_some() && !decision.notes.is_empty() {
        // Like Events, notifications follow the status write: lost on a crash, never repeated.
        let (prober, client, recorder, notes, metrics) = (
            ctx.prober.clone(),
            ctx.client.clone(),
            ctx.recorder.clone(),
            decision.notes.clone(),
            ctx.metrics.clone(),
        );
        let dpl = dpl.clone();
        tokio::spawn(async move {
            let result = prober.notify(&client, &dpl, &notes).await;
            if !matches!(result, Ok(0)) {
                metrics.notified(result.is_ok());
            }
            if let Err(err) = &result {
                let note = rollout::Note {
                    severity: Severity::Warning,
                    reason: "NotificationFailed",
                    message: err.clone(),
                };
                publish(&recorder, &dpl, &note).await;
            }
            probe::report(&dpl, result);
        });
    }
    Ok(match decision.requeue {
        Some(after) => Action::requeue(after),
        None if decision.status.condition("Ready").is_some_and(|c| c.reason == "NameConflict") => {
            Action::requeue(Duration::from_secs(30))
        }
        None => Action::await_change(),
    })
}

/// Makes the decision's Deployment moves: creates and resizes first, deletes after.
async fn act(
    api: &Api<Deployment>,
    dpl: &Deployer,
    owned: &[Arc<Deployment>],
    decision: &Decision,
) -> Result<()> {
    for scale in &decision.apply {
        apply(api, dpl, scale).await?;
    }
    for version in &decision.delete {
        let name = resources::deployment_name(&dpl.spec.deployment, version);
        let Some(uid) = owned.iter().find(|d| d.name_any() == name).and_then(|d| d.uid()) else { continue };
        info!(deployment = %name, "deleting");
        // The uid precondition makes sure only the Deployment we observed (ours) is deleted.
        let params = DeleteParams {
            preconditions: Some(Preconditions { uid: Some(uid), resource_version: None }),
            propagation_policy: Some(PropagationPolicy::Background),
            ..DeleteParams::default()
        };
        match api.delete(&name, &params).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(source) => return Err(kube_error("delete Deployment", api, &name, source)),
        }
    }
    Ok(())
}

/// Creates or resizes one version's Deployment.
async fn apply(api: &Api<Deployment>, dpl: &Deployer, scale: &Scale) -> Result<()> {
    let desired = resources::deployment(dpl, &scale.version, scale.replicas)
        .ok_or_else(|| Error::MissingMetadata(dpl.name_any()))?;
    let name = desired.name_any();
    info!(deployment = %name, replicas = scale.replicas, create = scale.create, "applying");
    if scale.create {
        // POST, not apply: an existing Deployment of that name is never taken over.
        let params = PostParams { field_manager: Some(MANAGER.into()), ..PostParams::default() };
        match api.create(&params, &desired).await {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => {
                let existing =
                    api.get(&name).await.map_err(|e| kube_error("get Deployment", api, &name, e))?;
                if !resources::is_owned_by(&existing, dpl) {
                    return Err(Error::NameConflict(name));
                }
                // Ours, just not in the cache yet: fall through to a resize.
            }
            Err(source) => return Err(kube_error("create Deployment", api, &name, source)),
        }
    }
    api.patch(&name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&desired))
        .await
        .map(|_| ())
        .map_err(|source| kube_error("apply Deployment", api, &name, source))
}

/// The Deployer as of our last status write at least. The watch cache can lag behind our own
/// write; deciding from a status older than the one we wrote would replay a transition, so in
/// that case the object is read from the API server instead.
async fn fresh(ctx: &Context, dpl: Arc<Deployer>, ns: &str, uid: &str) -> Result<Arc<Deployer>> {
    let written = ctx.written.lock().unwrap_or_else(|e| e.into_inner()).get(uid).cloned();
    match written {
        // An object that carries the status we wrote last is not behind our write: deciding from
        // it replays nothing. This is the common case of a user's edit after our write (a newer
        // resourceVersion, our status), and it saves a GET on the path of every reaction.
        Some((_, status)) if dpl.status.as_ref() == Some(&status) => Ok(dpl),
        Some((version, _)) if dpl.resource_version().as_deref() != Some(version.as_str()) => {
            let api: Api<Deployer> = Api::namespaced(ctx.client.clone(), ns);
            let name = dpl.name_any();
            let latest = api.get(&name).await.map_err(|source| Error::Kube {
                action: "get Deployer",
                object: format!("{ns}/{name}"),
                source,
            })?;
            if latest.resource_version() == dpl.resource_version() {
                // The cache holds the latest object (someone else wrote after us): trust it again.
                ctx.written.lock().unwrap_or_else(|e| e.into_inner()).remove(uid);
            }
            Ok(Arc::new(latest))
        }
        _ => Ok(dpl),
    }
}

/// Writes the status if it changed (server-side apply of the status subresource); returns the
/// Deployer's new resourceVersion when it wrote.
async fn persist(dpl: &Deployer, client: &Client, status: &DeployerStatus) -> Result<Option<String>> {
    if dpl.status.as_ref() == Some(status) {
        return Ok(None);
    }
    let ns = dpl.namespace().unwrap_or_default();
    let api: Api<Deployer> = Api::namespaced(client.clone(), &ns);
    let body = json!({
        "apiVersion": Deployer::api_version(&()),
        "kind": Deployer::kind(&()),
        "status": status,
    });
    api.patch_status(&dpl.name_any(), &PatchParams::apply(MANAGER).force(), &Patch::Apply(&body))
        .await
        .map(|written| written.resource_version())
        .map_err(|source| Error::Kube {
            action: "write status of Deployer",
            object: format!("{ns}/{}", dpl.name_any()),
            source,
        })
}

/// Publishes an Event; a failure is logged, never fatal (Events are best effort).
async fn publish(recorder: &Recorder, dpl: &Deployer, note: &rollout::Note) {
    let event = Event {
        type_: match note.severity {
            Severity::Normal => EventType::Normal,
            Severity::Warning => EventType::Warning,
        },
        reason: note.reason.into(),
        note: Some(note.message.clone()),
        // The recorder folds Events with the same reason and action into one series; the message
        // as the action keeps each step its own line in `kubectl describe`.
        action: note.message.chars().take(128).collect(),
        secondary: None,
    };
    match note.severity {
        Severity::Normal => info!(reason = note.reason, "{}", note.message),
        Severity::Warning => warn!(reason = note.reason, "{}", note.message),
    }
    if let Err(err) = recorder.publish(&event, &dpl.object_ref(&())).await {
        warn!(%err, reason = note.reason, "could not publish event");
    }
}

fn kube_error(action: &'static str, api: &Api<Deployment>, name: &str, source: kube::Error) -> Error {
    let ns = api.namespace().unwrap_or_default();
    Error::Kube { action, object: format!("{ns}/{name}"), source }
}

/// On failure: log and look again soon. The status was not written, so the next attempt starts
/// from the same persisted state.
fn error_policy(dpl: Arc<Deployer>, err: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.reconcile_failed(err);
    warn!(deployer = %dpl.name_any(), %err, "reconcile failed; retrying in 2s");
    Action::requeue(Duration::from_secs(2))
}
