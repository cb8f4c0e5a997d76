//! The controller: the imperative shell around [`crate::rollout`].
//!
//! A reconcile observes (the Deployer, and the Deployments it owns from a watch cache), decides (one
//! call to the pure core), acts (create, server-side apply, delete), persists the status, publishes
//! the Events and returns when to look again. It never sleeps and keeps no state of its own: the
//! Deployer's status is the rollout's whole memory, so the process can die at any instant.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, SubsecRound, Utc};
use futures::{FutureExt, StreamExt, TryStreamExt, future};
use k8s_openapi::api::{apps::v1::Deployment, core::v1::Pod};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::ListParams,
    runtime::{
        Controller, WatchStreamExt,
        controller::{self, Action},
        events::{Event, EventType, Recorder, Reporter},
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};
use tracing::{debug, info, warn};

use crate::{
    Error, Result,
    api::{Controls, Deployer, DeployerStatus},
    checks::Outcome,
    http::Health,
    metrics::Metrics,
    probe::{self, Prober},
    resources::{self, DEPLOYER_LABEL, MANAGER},
    rollout::{self, Decision, Input, Note, Observed, Reason, Settings, Severity},
    shell::{
        calls::Calls,
        memo::Memo,
        writes::{self, Acted},
    },
    shutdown::Shutdown,
};

/// How long reconciles still running at shutdown may take to finish before they are cancelled
/// (harmless either way: the next reconcile, by whichever replica, starts from the persisted
/// status). Kept short: a standby waits for this before it can take over.
const DRAIN: Duration = Duration::from_millis(500);

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
    /// The Deployers, kept current by their watch (what exists, for pruning `memo`).
    deployers: Store<Deployer>,
    settings: Settings,
    /// What is remembered of each Deployer between reconciles (never rollout state).
    memo: Arc<Memo>,
    metrics: Arc<Metrics>,
    /// Sends notifications.
    prober: Prober,
    /// The checks' calls out, and their answers waiting.
    calls: Arc<Calls>,
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
    let mut memos = Vec::new();
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
        let memo = Arc::new(Memo::default());
        memos.push(memo.clone());
        // The Deployers' watch and cache, without their managedFields and the copy of the spec
        // that a client-side `kubectl apply` leaves in an annotation (nothing here reads either).
        let (deployer_reader, deployer_writer) = reflector::store::<Deployer>();
        let (arrived, owners) = (memo.clone(), deployer_reader.clone());
        let owned = watcher(deployments, watcher::Config::default().labels(DEPLOYER_LABEL))
            .default_backoff()
            // The cache keeps what `resources::observe` and `is_owned_by` read, nothing more.
            .modify(resources::slim)
            .reflect(writer)
            .touched_objects()
            .inspect_ok(move |d: &Deployment| {
                // Only for a Deployer that exists: the garbage collector's deletes of a deleted
                // Deployer's Deployments start no reconcile, so nothing would take them up.
                for owner in d.owner_references().iter().filter(|o| o.kind == "Deployer") {
                    let key =
                        ObjectRef::new(&owner.name).within(d.namespace().as_deref().unwrap_or_default());
                    if owners.get(&key).is_some_and(|o| o.uid().as_deref() == Some(owner.uid.as_str())) {
                        arrived.arrived(&owner.uid);
                    }
                }
            });
        deployment_stores.push(reader.clone());
        // An answer to a check call wakes its Deployer through this channel.
        let (wake, woken) = futures::channel::mpsc::unbounded();
        let prober = Prober::new();
        let ctx = Arc::new(Context {
            client: client.clone(),
            recorder: Recorder::new(client.clone(), Reporter::from(MANAGER)),
            deployments: reader,
            deployers: deployer_reader.clone(),
            settings: config.settings.clone(),
            memo: memo.clone(),
            metrics: metrics.clone(),
            calls: Calls::new(prober.clone(), metrics.clone(), wake),
            prober,
        });
        info!(namespace = scope.as_deref().unwrap_or("<all>"), "starting controller");
        let deployer_events = watcher(deployers, watcher::Config::default())
            .default_backoff()
            .modify(|d| {
                d.metadata.managed_fields = None;
                if let Some(a) = d.metadata.annotations.as_mut() {
                    a.remove("kubectl.kubernetes.io/last-applied-configuration");
                }
            })
            .reflect(deployer_writer)
            .inspect_ok({
                let (memo, listed) = (memo.clone(), deployer_reader.clone());
                move |event| match event {
                    watcher::Event::Delete(d) => d.uid().iter().for_each(|uid| memo.forget(uid)),
                    // A fresh list (start, or a watch that had to list again): what it lacks was
                    // deleted, whether or not its delete was seen.
                    watcher::Event::InitDone => memo.keep(&uids(&listed)),
                    _ => {}
                }
            })
            .applied_objects()
            .inspect_ok(move |d: &Deployer| {
                if let Some(uid) = d.uid() {
                    memo.arrived(&uid);
                }
            });
        let controller = Controller::for_stream(deployer_events, deployer_reader)
            .owns_stream(owned)
            .reconcile_on(woken)
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
    metrics.set_memos(memos);
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
        self.0.set_memos(Vec::new());
        self.0.set_leader(false);
    }
}

/// The uids of the Deployers in `store` (what exists, for pruning what is kept of the others).
fn uids(store: &Store<Deployer>) -> std::collections::HashSet<String> {
    store.state().iter().filter_map(|d| d.uid()).collect()
}

/// Fails with a clear message when the Deployer CRD is not installed.
async fn check_crd(deployers: &Api<Deployer>) -> Result<()> {
    deployers.list(&ListParams::default().limit(1)).await.map(|_| ()).map_err(|source| Error::Kube {
        action: "list Deployers (is the CRD installed? run `make install`)",
        object: "deployers.deploy.example.com".into(),
        source,
    })
}

/// One reconcile of one Deployer, in named stages: observe → decide → confirm → persist → call
/// checks → publish → act. The status is persisted before anything is acted on, on the
/// resourceVersion it was decided from: a stale reconcile (a deposed leader, a lagging cache)
/// writes nothing and moves nothing.
#[tracing::instrument(skip_all, fields(deployer = %format!("{}/{}", dpl.namespace().unwrap_or_default(), dpl.name_any())))]
async fn reconcile(dpl: Arc<Deployer>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_started();
    let world = match observe(&ctx, dpl).await? {
        Observation::Ready(world) => *world,
        Observation::Later(action) => return Ok(action),
    };
    let arrived = arrival(&ctx, &world);
    let outcomes = ctx.calls.answers(&world.uid);
    // A write refused before is taken as still refused until one goes through: the status keeps
    // saying so (no write, hence no watch event that would retry at once), and the retry comes
    // on the backoff. Once a write goes through, the status stops saying so.
    let refused = ctx.memo.refusal(&world.uid);
    let decision = rollout::decide(&world.input(&[], refused.as_deref(), &ctx.settings, &outcomes));
    let (world, decision) = confirm(&ctx, world, decision, refused.as_deref(), &outcomes).await?;
    reacted(&ctx, &world, &decision, arrived);
    let version =
        persist(&ctx, &world, world.dpl.resource_version(), world.dpl.status.as_ref(), &decision).await?;
    call_checks(&ctx, &world, &decision, &outcomes);
    publish(&ctx, &world, world.dpl.status.as_ref(), &decision).await;
    let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), &world.ns);
    let mut landed = writes::Landed::default();
    let acted = writes::act(&api, &world.dpl, &world.owned, &decision, &mut landed).await;
    ctx.memo.landed(&world.uid, landed);
    let acted = acted?;
    settle(&ctx, &world, &decision, acted, Written { version, refused, outcomes: &outcomes }).await
}

/// What a reconcile wrote and knew before it acted.
struct Written<'a> {
    /// The Deployer's resourceVersion after the status write (`None`: nothing written).
    version: Option<String>,
    /// The refusal the Deployer's status said before this reconcile.
    refused: Option<String>,
    /// The check answers the decision took in.
    outcomes: &'a [Outcome],
}

/// Settle: what acting came to. Done: the backoff starts afresh (and a refusal the status said
/// is over). A name taken by someone else, or a write refused: the Deployer says so (a condition
/// and a Warning) on top of the status just written — only what that adds is published — and a
/// refusal is retried on its backoff.
async fn settle(
    ctx: &Context,
    world: &World,
    decision: &Decision,
    acted: Acted,
    w: Written<'_>,
) -> Result<Action> {
    let follow_up = |conflicts: &[String], refused: Option<&str>| {
        rollout::decide(&world.input(conflicts, refused, &ctx.settings, w.outcomes))
    };
    let version = w.version.or(world.dpl.resource_version());
    let (mut after, refusal) = match acted {
        Acted::Done => {
            ctx.memo.succeeded(&world.uid);
            if w.refused.is_none() {
                return Ok(next_look(decision));
            }
            let after = follow_up(&[], None);
            persist(ctx, world, version, Some(&decision.status), &after).await?;
            return Ok(next_look(&after));
        }
        Acted::Stale => return Ok(Action::requeue(STALE_RETRY)),
        // Decided again once the watch shows it (its labels are back).
        Acted::Unseen => return Ok(Action::requeue(Duration::from_secs(1))),
        Acted::Taken(name) => (follow_up(&[name], None), None),
        Acted::Refused(why) => (follow_up(&[], Some(&why)), Some(why)),
    };
    persist(ctx, world, version, Some(&decision.status), &after).await?;
    after.notes.retain(|n| !decision.notes.contains(n));
    publish(ctx, world, Some(&decision.status), &after).await;
    Ok(match (&refusal, after.status.condition("Progressing")) {
        (Some(why), Some(c)) if c.reason == "WriteRefused" => {
            Action::requeue(ctx.memo.refused(&world.uid, why))
        }
        _ => next_look(&after),
    })
}

/// The arrival of the watch event this reconcile takes up, if one is waiting; how long it waited
/// is the reconcile's queueing time.
fn arrival(ctx: &Context, world: &World) -> Option<std::time::Instant> {
    let arrived = ctx.memo.take_arrival(&world.uid);
    if let Some(at) = arrived {
        ctx.metrics.queued(at.elapsed());
    }
    arrived
}

/// The operator's own reaction time: from a watch event's arrival to the first write of the
/// reconcile that takes it up (now, as the writes start).
fn reacted(ctx: &Context, world: &World, decision: &Decision, arrived: Option<std::time::Instant>) {
    let writes = world.dpl.status.as_ref() != Some(&decision.status)
        || !decision.apply.is_empty()
        || !decision.delete.is_empty();
    if let Some(at) = arrived.filter(|_| writes) {
        ctx.metrics.reacted(at.elapsed());
    }
}

/// How soon a reconcile that met a changed object decides again (the watch usually brings the
/// change sooner).
const STALE_RETRY: Duration = Duration::from_millis(500);

/// When to look again, as the decision asks.
fn next_look(decision: &Decision) -> Action {
    match decision.requeue {
        Some(after) => Action::requeue(after),
        None => Action::await_change(),
    }
}

/// What a reconcile observed: the Deployer (as of our last write at least), the Deployments it
/// owns, the requests on it, and the time.
struct World {
    dpl: Arc<Deployer>,
    name: String,
    ns: String,
    uid: String,
    owned: Vec<Arc<Deployment>>,
    observed: Vec<Observed>,
    paused: bool,
    requests: Controls,
    now: DateTime<Utc>,
}

impl World {
    /// The core's input, with the names found taken by others, a refusal of the API server, and
    /// the checks' answers so far.
    fn input<'a>(
        &'a self,
        conflicts: &'a [String],
        refused: Option<&'a str>,
        settings: &'a Settings,
        outcomes: &'a [Outcome],
    ) -> Input<'a> {
        Input {
            name: &self.name,
            namespace: &self.ns,
            generation: self.dpl.meta().generation.unwrap_or(0),
            spec: &self.dpl.spec,
            status: self.dpl.status.as_ref(),
            observed: &self.observed,
            conflicts,
            refused,
            now: self.now,
            settings,
            paused: self.paused,
            requests: &self.requests,
            outcomes,
        }
    }
}

/// The outcome of [`observe`]: a world to decide on, or when to look again.
enum Observation {
    Ready(Box<World>),
    Later(Action),
}

/// Observe: the Deployer as of our last status write at least, and the Deployments it owns from
/// the watch cache.
async fn observe(ctx: &Context, dpl: Arc<Deployer>) -> Result<Observation> {
    let (Some(ns), Some(uid)) = (dpl.namespace(), dpl.uid()) else {
        return Err(Error::MissingMetadata(dpl.name_any()));
    };
    // Right after a start the Deployments cache may still be filling: deciding from it would take
    // owned Deployments for missing ones. The cache is filled by the same controller that runs
    // this reconcile, so never block on it.
    if ctx.deployments.wait_until_ready().now_or_never().is_none() {
        return Ok(Observation::Later(Action::requeue(Duration::from_millis(100))));
    }
    let dpl = fresh(ctx, dpl, &ns, &uid).await?;
    if dpl.meta().deletion_timestamp.is_some() {
        // Garbage collection removes the owned Deployments; nothing is created meanwhile.
        return Ok(Observation::Later(Action::await_change()));
    }
    let mut owned: Vec<Arc<Deployment>> = ctx
        .deployments
        .state()
        .into_iter()
        .filter(|d| d.namespace().as_deref() == Some(ns.as_str()) && resources::is_owned_by(d, &dpl))
        .collect();
    // Read our own writes: a Deployment we created that the watch has not brought yet is decided
    // on as the API server answered the create, not created again (a 409 and a GET each time), and
    // one we deleted that the watch still shows is gone, not deleted again (a 404).
    let unseen = ctx.memo.unseen(&uid, &owned, std::time::Instant::now());
    owned.retain(|d| d.uid().is_none_or(|u| !unseen.deleted.contains(&u)));
    owned.extend(unseen.created.into_iter().filter(|d| resources::is_owned_by(d, &dpl)));
    let observed = owned.iter().filter_map(|d| resources::observe(&dpl.spec.deployment, d)).collect();
    let (paused, requests) = resources::requests(&dpl);
    let name = dpl.name_any();
    let now = Utc::now().trunc_subsecs(3);
    Ok(Observation::Ready(Box::new(World { dpl, name, ns, uid, owned, observed, paused, requests, now })))
}

/// Call checks: the answers folded into the status just written leave the mailbox, and the calls
/// the decision marked in flight go out — in the background: a reconcile never waits for a
/// tenant's endpoint.
fn call_checks(ctx: &Context, world: &World, decision: &Decision, taken: &[Outcome]) {
    ctx.calls.taken(&world.uid, taken, || uids(&ctx.deployers));
    if !decision.calls.is_empty() {
        ctx.calls.launch(ObjectRef::from_obj(&*world.dpl), &world.uid, &decision.calls);
    }
}

/// Confirm: a decision that takes pods away (a shrink, a delete) was made on the watch cache,
/// which may lag behind a write — ours or someone else's — and on Deployment statuses, which may
/// still count pods a scale-down removed. Its Deployments and their pods are read afresh, each
/// Deployment counting no more available pods than are ready and not terminating, and if that
/// differs the decision is made again: the availability the budget counts on is read, never
/// remembered.
async fn confirm(
    ctx: &Context,
    mut world: World,
    decision: Decision,
    refused: Option<&str>,
    outcomes: &[Outcome],
) -> Result<(World, Decision)> {
    if !decision.breaks(&world.observed) {
        return Ok((world, decision));
    }
    let selector = format!("{DEPLOYER_LABEL}={}", world.name);
    let params = ListParams::default().labels(&selector);
    let failed = |what: &'static str| {
        let object = format!("{}/{selector}", world.ns);
        move |source| Error::Kube { action: what, object, source }
    };
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &world.ns);
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &world.ns);
    let listed = deployments.list(&params).await.map_err(failed("list Deployments"))?;
    let pods = pods.list(&params).await.map_err(failed("list Pods"))?;
    let owned: Vec<Arc<Deployment>> =
        listed.items.into_iter().filter(|d| resources::is_owned_by(d, &world.dpl)).map(Arc::new).collect();
    let observed: Vec<Observed> = owned
        .iter()
        .filter_map(|d| resources::observe(&world.dpl.spec.deployment, d))
        .map(|o| Observed { available: o.available.min(resources::ready_pods(&pods.items, &o.version)), ..o })
        .collect();
    if observed == world.observed {
        return Ok((world, decision));
    }
    debug!(cached = ?world.observed, fresh = ?observed, "deciding again on a fresh read");
    world.owned = owned;
    world.observed = observed;
    let decision = rollout::decide(&world.input(&[], refused, &ctx.settings, outcomes));
    Ok((world, decision))
}

/// The Deployer as of our last status write at least. The watch cache can lag behind our own
/// write; deciding from a status older than the one we wrote would replay a transition, so in
/// that case the object is read from the API server instead.
async fn fresh(ctx: &Context, dpl: Arc<Deployer>, ns: &str, uid: &str) -> Result<Arc<Deployer>> {
    match ctx.memo.written(uid) {
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
                ctx.memo.forget_written(uid);
            }
            Ok(Arc::new(latest))
        }
        _ => Ok(dpl),
    }
}

/// Persist: writes the decision's status if it differs from `before`, on resourceVersion
/// `version`, and remembers what it wrote. Returns the new resourceVersion.
async fn persist(
    ctx: &Context,
    world: &World,
    version: Option<String>,
    before: Option<&DeployerStatus>,
    decision: &Decision,
) -> Result<Option<String>> {
    let api: Api<Deployer> = Api::namespaced(ctx.client.clone(), &world.ns);
    let written = writes::status(&api, &world.name, version.as_deref(), before, &decision.status).await?;
    if let Some(version) = &written {
        ctx.memo.wrote(&world.uid, version.clone(), decision.status.clone(), ctx.deployers.len(), || {
            uids(&ctx.deployers)
        });
    }
    Ok(written)
}

/// Publish: the metrics of the decision (the change from `before`), its Events and (in the
/// background) its notifications. Like Events, notifications follow the status write: lost on a
/// crash, never repeated.
async fn publish(ctx: &Context, world: &World, before: Option<&DeployerStatus>, decision: &Decision) {
    let dpl = &world.dpl;
    let wait_ended = decision.wait_ended.filter(|until| ctx.memo.first_end_of(&world.uid, *until));
    ctx.metrics.decided(before, &decision.status, &decision.notes, wait_ended, world.now);
    for note in &decision.notes {
        publish_event(&ctx.recorder, dpl, note).await;
    }
    if dpl.spec.notifications.is_none() || decision.notes.is_empty() {
        return;
    }
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
            let note = Note::warning(Reason::NotificationFailed, err.clone());
            publish_event(&recorder, &dpl, &note).await;
        }
        probe::report(&dpl, result);
    });
}

/// Publishes an Event; a failure is logged, never fatal (Events are best effort).
async fn publish_event(recorder: &Recorder, dpl: &Deployer, note: &Note) {
    let event = Event {
        type_: match note.severity {
            Severity::Normal => EventType::Normal,
            Severity::Warning => EventType::Warning,
        },
        reason: note.reason.as_str().into(),
        note: Some(cut(&note.message, MAX_NOTE_BYTES)),
        // The recorder folds Events with the same reason and action into one series; the message
        // as the action keeps each step its own line in `kubectl describe`.
        action: cut(&note.message, MAX_ACTION_BYTES),
        secondary: None,
    };
    match note.severity {
        Severity::Normal => info!(reason = %note.reason, "{}", note.message),
        Severity::Warning => warn!(reason = %note.reason, "{}", note.message),
    }
    if let Err(err) = recorder.publish(&event, &dpl.object_ref(&())).await {
        warn!(%err, reason = %note.reason, "could not publish event");
    }
}

/// The longest `action` and `note` of an Event the API server takes, in bytes (not characters:
/// an Event whose action has 128 characters, some of them beyond ASCII, is refused, and lost).
const MAX_ACTION_BYTES: usize = 128;
const MAX_NOTE_BYTES: usize = 1024;

/// `text` cut, at a character boundary, to at most `max` bytes.
fn cut(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

/// On failure: look again — soon after a stale view (the change that made it stale is on its
/// way), else after a backoff per Deployer that doubles with each failure in a row (1 s … 60 s).
/// Whatever was not written starts the next attempt from the same persisted state.
fn error_policy(dpl: Arc<Deployer>, err: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.reconcile_failed(err);
    if let Error::Stale(what) = err {
        debug!(deployer = %dpl.name_any(), %what, "stale view; deciding again");
        return Action::requeue(STALE_RETRY);
    }
    let wait = ctx.memo.failed(&dpl.uid().unwrap_or_default());
    warn!(deployer = %dpl.name_any(), %err, "reconcile failed; retrying in {wait:?}");
    Action::requeue(wait)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_events_action_and_note_are_cut_to_their_byte_limits_at_a_character_boundary() {
        let short = "step 1/4: 25% — scaling to 2.0.0=1";
        assert_eq!(cut(short, MAX_ACTION_BYTES), short);
        let action = cut(&"é".repeat(5000), MAX_ACTION_BYTES);
        assert_eq!((action.len(), action.chars().count()), (128, 64));
        // A character across the limit is left out whole.
        let action = cut(&format!("a{}", "—".repeat(100)), MAX_ACTION_BYTES);
        assert_eq!(action.len(), 1 + 3 * 42);
        let note = cut(&format!("ab{}", "𝄞".repeat(300)), MAX_NOTE_BYTES);
        assert_eq!(note.len(), 2 + 4 * 255);
        assert_eq!(cut("", MAX_NOTE_BYTES), "");
    }
}
