//! Leader election: only the replica that holds a `coordination.k8s.io` Lease reconciles.
//!
//! The lock itself is kube-lease-manager's (server-side apply on the Lease, tolerant of clock
//! skew up to the grace period); this module decides what the operator does around it:
//!
//! - **Standby**: waits for the lease. The crate looks at a held lease only when it would
//!   expire; a watch on the Lease wakes the standby as soon as the holder releases it, so a
//!   graceful handover takes a few round trips instead of up to a lease duration.
//! - **Leader**: runs the controller and keeps renewing; it reads the lease back after each
//!   renewal is due. It stops the controller at once (every reconcile is cancelled at its next
//!   await) if the lease is no longer its own, or if no renewal has been seen by the time the
//!   lease has half its grace period left — a leader cut off from the API server stops before
//!   anyone else may start. It then releases the lease if it may still hold it, and the process
//!   exits with an error; Kubernetes restarts it as a standby. Starting afresh keeps nothing of
//!   the old term (caches, queues, the controller's memory of its own writes) by construction.
//! - **Shutdown** (SIGTERM): the controller stops (in-flight reconciles get a bounded drain),
//!   then the lease is released, then the process exits 0: a standby takes over at once.
//!
//! Nothing needs handing over besides the lease: the whole rollout state lives in each
//! Deployer's status, so the next leader resumes exactly where the last one stopped.

use std::{
    future::Future,
    time::{Duration, Instant, SystemTime},
};

use futures::{StreamExt, future::BoxFuture};
use k8s_openapi::api::coordination::v1::Lease;
use kube::{
    Api, Client,
    runtime::{WatchStreamExt, watcher},
};
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder, LeaseManagerError};
use tokio::{sync::watch, task::JoinHandle};
use tracing::{debug, error, info, warn};

use crate::{
    Error, Result,
    http::Health,
    shutdown::{self, Shutdown},
};

/// How long a release of the lease may take before the process exits anyway.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause before retrying after an API error.
const RETRY: Duration = Duration::from_millis(500);
/// How long after a renewal is due the leader reads the lease to see it, and how often it reads
/// again until it does.
const CHECK_DELAY: Duration = Duration::from_millis(200);
const RECHECK: Duration = Duration::from_millis(100);

/// Which Lease, and how this replica holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseConfig {
    /// The Lease's name.
    pub name: String,
    /// The Lease's namespace.
    pub namespace: String,
    /// This replica's name in `spec.holderIdentity` (unique among the replicas).
    pub identity: String,
    /// How long the lease is valid after each renewal (seconds).
    pub duration_seconds: u64,
    /// How long before expiry the holder renews, and the clock skew tolerated (seconds).
    pub grace_seconds: u64,
}

impl LeaseConfig {
    /// Checks what kube-lease-manager would otherwise panic on.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.grace_seconds == 0 {
            return Err("the lease grace period must be at least 1 second".into());
        }
        if self.grace_seconds >= self.duration_seconds {
            return Err(format!(
                "the lease grace period ({}s) must be shorter than the lease duration ({}s)",
                self.grace_seconds, self.duration_seconds
            ));
        }
        if self.identity.is_empty() {
            return Err("the lease identity must not be empty".into());
        }
        Ok(())
    }

    fn object(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// What was last seen of the Lease (by the watch, or a read).
#[derive(Clone, Debug, Default, PartialEq)]
struct LeaseView {
    holder: Option<String>,
    renewed: Option<SystemTime>,
}

impl LeaseView {
    fn of(lease: &Lease) -> LeaseView {
        let spec = lease.spec.as_ref();
        LeaseView {
            holder: spec.and_then(|s| s.holder_identity.clone()),
            renewed: spec.and_then(|s| s.renew_time.as_ref()).map(|t| SystemTime::from(t.0)),
        }
    }
}

/// Takes, keeps and releases the lease for this replica.
pub struct Elector {
    client: Client,
    config: LeaseConfig,
    manager: LeaseManager,
    view: watch::Receiver<Option<LeaseView>>,
    watching: JoinHandle<()>,
}

impl Elector {
    /// Prepares the election: creates the Lease if it does not exist and starts watching it.
    /// Fails when the Lease can be neither read nor created (e.g. missing RBAC).
    pub async fn new(client: Client, config: LeaseConfig) -> Result<Elector> {
        config.validate().map_err(Error::InvalidConfig)?;
        let manager = build(&client, &config).await.map_err(|source| Error::Lease {
            action: "get or create Lease (may the operator get, create and patch leases there?)",
            lease: config.object(),
            source,
        })?;
        let (tx, view) = watch::channel(None);
        let watching =
            tokio::spawn(watch_lease(Api::namespaced(client.clone(), &config.namespace), config.clone(), tx));
        Ok(Elector { client, config, manager, view, watching })
    }

    /// Waits until this replica holds the lease. API errors are logged and retried.
    pub async fn acquire(&mut self) {
        info!(lease = %self.config.object(), identity = %self.config.identity, "standing by for leadership");
        enum Step {
            Changed(std::result::Result<bool, LeaseManagerError>),
            Released,
        }
        loop {
            let step = tokio::select! {
                changed = self.manager.changed() => Step::Changed(changed),
                () = released(&mut self.view) => Step::Released,
            };
            match step {
                Step::Changed(Ok(true)) => {
                    info!(lease = %self.config.object(), identity = %self.config.identity, "acquired leadership");
                    return;
                }
                Step::Changed(Ok(false)) => continue,
                Step::Changed(Err(err)) => {
                    warn!(%err, lease = %self.config.object(), "cannot take the lease; retrying");
                    tokio::time::sleep(RETRY).await;
                }
                // The crate would look again only when the holder's lease would have expired;
                // a fresh manager reads the Lease now and takes it.
                Step::Released => debug!(lease = %self.config.object(), "the lease was released; taking it"),
            }
            self.manager = loop {
                match build(&self.client, &self.config).await {
                    Ok(manager) => break manager,
                    Err(err) => {
                        warn!(%err, lease = %self.config.object(), "cannot read the lease; retrying");
                        tokio::time::sleep(RETRY).await;
                    }
                }
            };
        }
    }

    /// Keeps renewing the lease; returns when leadership is lost, and why.
    ///
    /// The crate renews `grace` seconds before the lease expires but reports only changes of
    /// leadership and errors, not successful renewals; so shortly after each renewal is due,
    /// the lease is read back. A renewal seen moves the deadline on; none seen by the time half
    /// the grace period is left (an API server that fails or hangs) loses leadership, before a
    /// standby may take the lease.
    pub async fn keep(&self) -> Lost {
        let duration = Duration::from_secs(self.config.duration_seconds);
        let grace = Duration::from_secs(self.config.grace_seconds);
        let margin = grace / 2;
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), &self.config.namespace);
        let renew = |pause: Duration| -> BoxFuture<'_, std::result::Result<bool, LeaseManagerError>> {
            Box::pin(async move {
                tokio::time::sleep(pause).await;
                self.manager.changed().await
            })
        };
        let mut renewing = renew(Duration::ZERO);
        // The lease was just taken (or renewed): valid for `duration` from no earlier than now.
        let mut renewed = SystemTime::now();
        let mut check_at = instant_of(renewed + duration - grace) + CHECK_DELAY;
        enum Step {
            Renewing(std::result::Result<bool, LeaseManagerError>),
            Check,
        }
        loop {
            let deadline = instant_of(renewed + duration - margin);
            let step = tokio::select! {
                result = &mut renewing => Step::Renewing(result),
                () = tokio::time::sleep_until(check_at.min(deadline).into()) => Step::Check,
            };
            match step {
                Step::Renewing(Ok(true)) => renewing = renew(Duration::ZERO),
                Step::Renewing(Ok(false)) => return Lost::Taken,
                Step::Renewing(Err(err)) => {
                    warn!(%err, lease = %self.config.object(), "cannot renew the lease; retrying");
                    renewing = renew(RETRY);
                }
                Step::Check => {
                    let read =
                        tokio::time::timeout_at(deadline.into(), leases.get_opt(&self.config.name)).await;
                    match read {
                        Ok(Ok(Some(lease))) => {
                            let seen = LeaseView::of(&lease);
                            if seen.holder.as_deref() != Some(self.config.identity.as_str()) {
                                return Lost::Taken;
                            }
                            if let Some(at) = seen.renewed.filter(|at| *at > renewed) {
                                renewed = at;
                                check_at = instant_of(renewed + duration - grace) + CHECK_DELAY;
                                continue;
                            }
                        }
                        Ok(Ok(None)) => return Lost::Taken,
                        Ok(Err(err)) => debug!(%err, lease = %self.config.object(), "cannot read the lease"),
                        Err(_) => {}
                    }
                    if Instant::now() >= deadline {
                        return Lost::Unrenewed { duration_seconds: self.config.duration_seconds };
                    }
                    check_at = Instant::now() + RECHECK;
                }
            }
        }
    }

    /// Releases the lease if this replica holds it, so that a standby takes over at once (a
    /// no-op otherwise). `leading`: whether it was leading, for the log.
    pub async fn release(&self, leading: bool) {
        match tokio::time::timeout(RELEASE_TIMEOUT, self.manager.release()).await {
            Ok(Ok(())) if leading => info!(lease = %self.config.object(), "released the lease"),
            Ok(Ok(())) => debug!(lease = %self.config.object(), "left the election"),
            Ok(Err(err)) => warn!(%err, lease = %self.config.object(), "could not release the lease"),
            Err(_) => warn!(lease = %self.config.object(), "could not release the lease in time"),
        }
    }
}

/// Why leadership was lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lost {
    /// Another replica holds the lease (or it was released or deleted by someone else).
    Taken,
    /// No renewal was seen before the lease would expire (e.g. the API server is unreachable).
    Unrenewed {
        /// The lease duration.
        duration_seconds: u64,
    },
}

impl std::fmt::Display for Lost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Lost::Taken => write!(f, "the lease is no longer this replica's"),
            Lost::Unrenewed { duration_seconds } => write!(
                f,
                "no renewal of the lease was seen in time (it expires {duration_seconds}s after the last one)"
            ),
        }
    }
}

impl Drop for Elector {
    fn drop(&mut self) {
        self.watching.abort();
    }
}

/// Runs `work` only while this replica holds the lease, until `shutdown`:
/// waits as a standby (ready, not reconciling); once leader, starts `work` with a stop signal
/// of its own; on `shutdown`, fires it and waits for `work` to return (it bounds its own
/// drain); on a lost lease, drops `work` at once. Releases the lease on the way out, unless
/// another replica holds it.
/// Returns `work`'s result after a shutdown, and [`Error::LeadershipLost`] after a loss.
pub async fn run<W, F>(mut elector: Elector, health: &Health, mut shutdown: Shutdown, work: W) -> Result<()>
where
    W: FnOnce(Shutdown) -> F,
    F: Future<Output = Result<()>>,
{
    health.set_standby(true);
    let standing_by = tokio::select! {
        () = elector.acquire() => false,
        () = &mut shutdown => true,
    };
    health.set_standby(false);
    if standing_by {
        // Should the lease have been taken just as the signal came, free it.
        elector.release(false).await;
        return Ok(());
    }
    enum Outcome {
        Ended(Result<()>),
        Lost(Lost),
    }
    let (stop, stopped) = shutdown::channel();
    let mut stop = Some(stop);
    let mut work = Box::pin(work(stopped));
    let outcome = {
        let mut keeping = Box::pin(elector.keep());
        loop {
            tokio::select! {
                result = &mut work => break Outcome::Ended(result),
                reason = &mut keeping => break Outcome::Lost(reason),
                () = &mut shutdown, if stop.is_some() => {
                    if let Some(stop) = stop.take() {
                        stop.fire();
                    }
                }
            }
        }
    };
    // On a lost lease, this cancels every reconcile in flight.
    drop(work);
    match outcome {
        Outcome::Ended(result) => {
            elector.release(true).await;
            result
        }
        Outcome::Lost(lost) => {
            error!(lease = %elector.config.object(), reason = %lost, "lost leadership: stopped reconciling");
            if lost != Lost::Taken {
                // Possibly still ours on the server: free it for a standby.
                elector.release(true).await;
            }
            Err(Error::LeadershipLost(lost.to_string()))
        }
    }
}

async fn build(
    client: &Client,
    config: &LeaseConfig,
) -> std::result::Result<LeaseManager, LeaseManagerError> {
    LeaseManagerBuilder::new(client.clone(), &config.name)
        .with_namespace(&config.namespace)
        .with_identity(&config.identity)
        // Readable in the Lease's managedFields (the crate would pick a random name).
        .with_field_manager(format!("deployer-operator-{}", config.identity))
        .with_duration(config.duration_seconds)
        .with_grace(config.grace_seconds)
        .build()
        .await
}

/// Publishes what a watch sees of the Lease.
async fn watch_lease(api: Api<Lease>, config: LeaseConfig, tx: watch::Sender<Option<LeaseView>>) {
    let by_name = watcher::Config::default().fields(&format!("metadata.name={}", config.name));
    let mut events = watcher(api, by_name).default_backoff().boxed();
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Apply(lease) | watcher::Event::InitApply(lease)) => {
                tx.send_replace(Some(LeaseView::of(&lease)));
            }
            Ok(watcher::Event::Delete(_)) => {
                tx.send_replace(Some(LeaseView::default()));
            }
            Ok(_) => {}
            // Without the watch, a standby still takes over when the lease expires.
            Err(err) => {
                warn!(%err, lease = %config.object(), "cannot watch the lease (may the operator list and watch leases?)")
            }
        }
    }
}

/// The next view of the Lease the watch publishes (never, if the watch has ended).
async fn next_view(view: &mut watch::Receiver<Option<LeaseView>>) -> LeaseView {
    loop {
        if view.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
        if let Some(seen) = view.borrow_and_update().clone() {
            return seen;
        }
    }
}

/// Resolves when the watch sees the Lease without a holder (released, or deleted).
async fn released(view: &mut watch::Receiver<Option<LeaseView>>) {
    while next_view(view).await.holder.is_some() {}
}

/// `time` on the monotonic clock.
fn instant_of(time: SystemTime) -> Instant {
    let now = Instant::now();
    match time.duration_since(SystemTime::now()) {
        Ok(ahead) => now + ahead,
        Err(behind) => now.checked_sub(behind.duration()).unwrap_or(now),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(duration_seconds: u64, grace_seconds: u64) -> LeaseConfig {
        LeaseConfig {
            name: "deployer-operator".into(),
            namespace: "ops".into(),
            identity: "pod-a".into(),
            duration_seconds,
            grace_seconds,
        }
    }

    #[test]
    fn the_grace_period_must_be_positive_and_shorter_than_the_lease() {
        assert!(config(15, 5).validate().is_ok());
        assert!(config(2, 1).validate().is_ok());
        assert!(config(5, 5).validate().unwrap_err().contains("shorter than the lease duration"));
        assert!(config(5, 0).validate().unwrap_err().contains("at least 1 second"));
        let nameless = LeaseConfig { identity: String::new(), ..config(15, 5) };
        assert!(nameless.validate().is_err());
    }

    #[test]
    fn a_lease_view_reads_the_holder_and_the_renewal_time() {
        let lease: Lease = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "deployer-operator"},
            "spec": {"holderIdentity": "pod-a", "renewTime": "2026-01-02T03:04:05.000000Z", "leaseDurationSeconds": 15}
        }))
        .expect("a Lease");
        let view = LeaseView::of(&lease);
        assert_eq!(view.holder.as_deref(), Some("pod-a"));
        let renewed = view.renewed.expect("a renewal time");
        assert_eq!(
            renewed.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).ok(),
            Some(1_767_323_045)
        );
        let released: Lease =
            serde_json::from_value(serde_json::json!({"metadata": {"name": "x"}, "spec": {}}))
                .expect("a Lease");
        assert_eq!(LeaseView::of(&released), LeaseView::default());
    }

    #[tokio::test]
    async fn released_waits_for_a_view_without_holder() {
        let (tx, mut rx) = watch::channel(None);
        let waiter = tokio::spawn(async move { released(&mut rx).await });
        tx.send_replace(Some(LeaseView { holder: Some("pod-a".into()), renewed: None }));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "held: keep waiting");
        tx.send_replace(Some(LeaseView::default()));
        tokio::time::timeout(Duration::from_secs(1), waiter).await.expect("resolves").expect("no panic");
    }

    #[test]
    fn instants_follow_the_wall_clock() {
        let later = instant_of(SystemTime::now() + Duration::from_secs(10));
        let wait = later.saturating_duration_since(Instant::now());
        assert!(wait > Duration::from_secs(9) && wait <= Duration::from_secs(10), "{wait:?}");
        assert!(instant_of(SystemTime::now() - Duration::from_secs(10)) <= Instant::now());
    }
}
