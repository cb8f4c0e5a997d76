//! What the controller remembers of each Deployer between two reconciles. Never the rollout's
//! state — the status holds all of that, and a restart loses nothing when this is lost — only
//! what makes the next reconcile cheaper or gentler: the status it wrote last (to notice a watch
//! cache that has not caught up with it), the failures in a row (for the backoff) and the last
//! refusal of a write (so that a refused write is retried on that backoff, not on the watch
//! event of the status that reports it).
//!
//! Bounded by the Deployers that exist: a Deployer's entry goes when its watch reports it deleted,
//! entries of Deployers missing from a fresh list go when the watch lists again (a delete it
//! missed), and, as a last resort, entries of Deployers no longer in the cache are pruned as the
//! map grows. Memory follows the number of Deployers, not their history.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use k8s_openapi::api::apps::v1::Deployment;
use kube::ResourceExt;

use super::writes::Landed;
use crate::api::DeployerStatus;

/// The first retry after a failure, doubled per failure in a row up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// The longest wait between two retries of a failing Deployer: also how long a refusal that has
/// gone (a quota raised) can take to be noticed.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// How long our own create or delete of a Deployment stands in for the watch cache's view of it.
/// The watch brings it within milliseconds; if it never does (someone deleted what we created at
/// once), the cache is believed again after this.
pub const CREATED_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
struct Entry {
    /// The resourceVersion after our last status write, and that status.
    written: Option<(String, DeployerStatus)>,
    /// Reconciles that failed in a row.
    failures: u32,
    /// The deadline of the last wait whose end was measured.
    waited: Option<chrono::DateTime<chrono::Utc>>,
    /// When the earliest watch event not yet taken up by a reconcile arrived.
    arrived: Option<std::time::Instant>,
    /// What the API server said when it last refused one of this Deployer's writes, until a write
    /// goes through.
    refusal: Option<String>,
    /// Deployments we created that the watch cache did not show yet: the API server's answer to
    /// the create, and when it came.
    created: Vec<(Arc<Deployment>, Instant)>,
    /// The uids of Deployments we deleted that the watch cache still showed, and when.
    deleted: Vec<(String, Instant)>,
}

impl Entry {
    fn is_empty(&self) -> bool {
        self.written.is_none()
            && self.failures == 0
            && self.waited.is_none()
            && self.arrived.is_none()
            && self.refusal.is_none()
            && self.created.is_empty()
            && self.deleted.is_empty()
    }
}

/// Per-Deployer memory of one controller, by uid.
#[derive(Debug, Default)]
pub struct Memo {
    entries: Mutex<HashMap<String, Entry>>,
}

impl Memo {
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, Entry>) -> T) -> T {
        f(&mut self.entries.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// The resourceVersion and status of our last status write to `uid`.
    pub fn written(&self, uid: &str) -> Option<(String, DeployerStatus)> {
        self.with(|m| m.get(uid).and_then(|e| e.written.clone()))
    }

    /// Remembers a status write; prunes the Deployers for which `alive` says no once the map
    /// holds more than twice `live` entries (plus some slack).
    pub fn wrote(
        &self,
        uid: &str,
        version: String,
        status: DeployerStatus,
        live: usize,
        alive: impl FnOnce() -> HashSet<String>,
    ) {
        self.with(|m| {
            m.entry(uid.to_string()).or_default().written = Some((version, status));
            if m.len() > 2 * live + 64 {
                let alive = alive();
                m.retain(|uid, _| alive.contains(uid));
            }
        });
    }

    /// Forgets everything of `uid` (the Deployer was deleted).
    pub fn forget(&self, uid: &str) {
        self.with(|m| m.remove(uid));
    }

    /// Keeps only the Deployers in `alive` (the watch listed them again).
    pub fn keep(&self, alive: &HashSet<String>) {
        self.with(|m| m.retain(|uid, _| alive.contains(uid)));
    }

    /// Forgets the status write to `uid` (the cache holds the latest object again).
    pub fn forget_written(&self, uid: &str) {
        self.with(|m| {
            if let Some(e) = m.get_mut(uid) {
                e.written = None;
                if e.is_empty() {
                    m.remove(uid);
                }
            }
        });
    }

    /// Counts a failure of `uid` and returns how long to wait before the next attempt: 1 s,
    /// 2 s, 4 s … up to [`MAX_BACKOFF`].
    pub fn failed(&self, uid: &str) -> Duration {
        let n = self.with(|m| {
            let e = m.entry(uid.to_string()).or_default();
            e.failures = e.failures.saturating_add(1);
            e.failures
        });
        FIRST_BACKOFF.saturating_mul(1u32 << n.saturating_sub(1).min(16)).min(MAX_BACKOFF)
    }

    /// Whether the end of the wait with deadline `until` is new for `uid` (each is measured once,
    /// though every reconcile until the next step is written derives it again).
    pub fn first_end_of(&self, uid: &str, until: chrono::DateTime<chrono::Utc>) -> bool {
        self.with(|m| {
            let e = m.entry(uid.to_string()).or_default();
            let new = e.waited != Some(until);
            e.waited = Some(until);
            new
        })
    }

    /// A watch event about the Deployer `uid` arrived now (the earliest one waiting counts).
    pub fn arrived(&self, uid: &str) {
        self.with(|m| {
            m.entry(uid.to_string()).or_default().arrived.get_or_insert_with(std::time::Instant::now);
        });
    }

    /// Takes the arrival time of the earliest watch event about `uid` not yet taken up.
    pub fn take_arrival(&self, uid: &str) -> Option<std::time::Instant> {
        self.with(|m| {
            let e = m.get_mut(uid)?;
            let at = e.arrived.take();
            if e.is_empty() {
                m.remove(uid);
            }
            at
        })
    }

    /// A reconcile of `uid` succeeded: its backoff starts afresh, and a refusal is over.
    pub fn succeeded(&self, uid: &str) {
        self.with(|m| {
            if let Some(e) = m.get_mut(uid) {
                e.failures = 0;
                e.refusal = None;
                if e.is_empty() {
                    m.remove(uid);
                }
            }
        });
    }

    /// Counts a write of `uid` the API server refused with `why` (as [`Memo::failed`]) and
    /// remembers `why` until a write goes through; returns how long to wait before the next
    /// attempt.
    pub fn refused(&self, uid: &str, why: &str) -> Duration {
        self.with(|m| m.entry(uid.to_string()).or_default().refusal = Some(why.to_string()));
        self.failed(uid)
    }

    /// What the API server said when it last refused a write of `uid`, if no write went through
    /// since.
    pub fn refusal(&self, uid: &str) -> Option<String> {
        self.with(|m| m.get(uid).and_then(|e| e.refusal.clone()))
    }

    /// Our creates and deletes of `uid`'s Deployments went through (`landed`).
    pub fn landed(&self, uid: &str, landed: Landed) {
        if landed.created.is_empty() && landed.deleted.is_empty() {
            return;
        }
        let now = Instant::now();
        self.with(|m| {
            let e = m.entry(uid.to_string()).or_default();
            for d in landed.created {
                e.created.retain(|(c, _)| c.name_any() != d.name_any());
                e.created.push((d, now));
            }
            e.deleted.extend(landed.deleted.into_iter().map(|gone| (gone, now)));
        });
    }

    /// Our writes of `uid`'s Deployments that the watch cache (`cached`) does not show yet, as of
    /// `now`: a reconcile decides on them as the API server answered, instead of creating again
    /// what it created (a 409 and a GET) or deleting again what it deleted (a 404). Those the
    /// cache has caught up with, and those older than [`CREATED_GRACE`], are forgotten.
    pub fn unseen(&self, uid: &str, cached: &[Arc<Deployment>], now: Instant) -> Landed {
        self.with(|m| {
            let Some(e) = m.get_mut(uid) else { return Landed::default() };
            let fresh = |at: &Instant| now.saturating_duration_since(*at) < CREATED_GRACE;
            e.created.retain(|(d, at)| fresh(at) && !cached.iter().any(|c| c.name_any() == d.name_any()));
            e.deleted.retain(|(gone, at)| fresh(at) && cached.iter().any(|c| c.uid().as_ref() == Some(gone)));
            let unseen = Landed {
                created: e.created.iter().map(|(d, _)| d.clone()).collect(),
                deleted: e.deleted.iter().map(|(gone, _)| gone.clone()).collect(),
            };
            if e.is_empty() {
                m.remove(uid);
            }
            unseen
        })
    }

    /// How many Deployers are remembered.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.with(|m| m.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_up_to_its_cap_and_starts_afresh_after_a_success() {
        let memo = Memo::default();
        let waits: Vec<u64> = (0..9).map(|_| memo.failed("a").as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        memo.succeeded("a");
        assert_eq!(memo.failed("a"), FIRST_BACKOFF);
        // A thousand failures in a row never overflow.
        (0..1000).for_each(|_| {
            memo.failed("b");
        });
        assert_eq!(memo.failed("b"), MAX_BACKOFF);
    }

    #[test]
    fn memory_follows_the_deployers_that_exist_not_their_history() {
        let memo = Memo::default();
        for i in 0..10_000 {
            // Each Deployer is written once and deleted at once: none stays alive.
            memo.wrote(&format!("uid-{i}"), "1".into(), DeployerStatus::default(), 1, || {
                HashSet::from(["uid-9999".to_string()])
            });
        }
        assert!(memo.len() <= 2 + 64 + 1, "{} entries for 1 live Deployer", memo.len());
        assert!(memo.written("uid-9999").is_some(), "the live one is kept");
        // A Deployer whose backoff ended and whose write was caught up with leaves no entry.
        memo.failed("x");
        memo.succeeded("x");
        assert!(memo.written("x").is_none() && memo.len() <= 67);
    }

    #[test]
    fn a_deleted_deployer_is_forgotten_whatever_it_left() {
        let memo = Memo::default();
        memo.wrote("a", "1".into(), DeployerStatus::default(), 2, || panic!("no prune below the bound"));
        memo.first_end_of("a", chrono::DateTime::UNIX_EPOCH);
        memo.arrived("a");
        memo.refused("b", "quota");
        memo.arrived("c");
        memo.forget("a");
        assert!(memo.written("a").is_none() && memo.len() == 2);
        // A fresh list that holds only `c`: `b` was deleted while the watch was away.
        memo.keep(&HashSet::from(["c".to_string()]));
        assert!(memo.refusal("b").is_none() && memo.len() == 1);
        memo.landed("c", Landed { created: vec![Arc::new(Deployment::default())], deleted: vec![] });
        memo.forget("c");
        assert_eq!(memo.len(), 0, "a remembered create goes with its Deployer");
    }

    #[test]
    fn our_creates_and_deletes_stand_in_for_the_cache_until_it_shows_them_or_their_grace_ends() {
        let memo = Memo::default();
        let named = |name: &str, uid: &str| {
            let mut d = Deployment::default();
            d.metadata.name = Some(name.into());
            d.metadata.uid = Some(uid.into());
            Arc::new(d)
        };
        let names = |u: Landed| u.created.iter().map(|d| d.name_any()).collect::<Vec<_>>();
        let t0 = Instant::now();
        let (stable, canary) = (named("app-1.0.0", "u1"), named("app-2.0.0", "u2"));
        let created = |d: &Arc<Deployment>| Landed { created: vec![d.clone()], deleted: vec![] };
        let deleted = |uid: &str| Landed { created: vec![], deleted: vec![uid.to_string()] };
        memo.landed("a", created(&canary));
        assert_eq!(names(memo.unseen("a", std::slice::from_ref(&stable), t0)), ["app-2.0.0"]);
        assert!(memo.unseen("b", &[], t0).created.is_empty(), "another Deployer's");
        // The cache shows it: forgotten, and the entry goes.
        assert!(memo.unseen("a", &[stable.clone(), canary.clone()], t0).created.is_empty());
        assert!(memo.unseen("a", std::slice::from_ref(&stable), t0).created.is_empty());
        assert_eq!(memo.len(), 0);
        // We deleted the stable; the cache still shows it, then no longer does.
        memo.landed("a", deleted("u1"));
        assert_eq!(memo.unseen("a", &[stable.clone(), canary.clone()], t0).deleted, ["u1"]);
        assert!(memo.unseen("a", std::slice::from_ref(&canary), t0).deleted.is_empty());
        assert_eq!(memo.len(), 0);
        // A Deployment of the same name but another uid (created again since) is not the deleted one.
        memo.landed("a", deleted("u1"));
        assert!(memo.unseen("a", &[named("app-1.0.0", "u3")], t0).deleted.is_empty());
        // Never shown: forgotten once the grace is over.
        memo.landed("a", created(&named("app-3.0.0", "u4")));
        memo.landed("a", deleted("u2"));
        let late = Instant::now() + CREATED_GRACE;
        let unseen = memo.unseen("a", &[canary], late);
        assert!(unseen.created.is_empty() && unseen.deleted.is_empty());
        assert_eq!(memo.len(), 0);
    }

    #[test]
    fn a_refusal_is_remembered_and_backs_off_until_a_write_goes_through() {
        let memo = Memo::default();
        assert_eq!(memo.refused("a", "exceeded quota"), FIRST_BACKOFF);
        assert_eq!(memo.refused("a", "exceeded quota"), FIRST_BACKOFF * 2);
        assert_eq!(memo.refusal("a").as_deref(), Some("exceeded quota"));
        memo.succeeded("a");
        assert_eq!((memo.refusal("a"), memo.len()), (None, 0));
    }
}
