//! Check calls off the reconcile path.
//!
//! A reconcile never waits for a tenant's endpoint. The core marks the calls it wants in the
//! status (`checks[].startedAt`), the status is written, and only then do the calls go out, each
//! in a task of its own. An answer lands in a mailbox and wakes its Deployer; the next reconcile
//! takes it in. So a webhook that hangs for minutes holds one task and one connection, never one
//! of the controller's reconcile workers, and other Deployers are not slowed by it. A restart
//! loses the calls in flight, not their record: the core waits for them until their timeout, then
//! counts them unanswered — a call is never made twice.
//!
//! What one endpoint can cost is bounded: its own timeout (at most 300 s), [`MAX_CALLS`] calls
//! out in all, [`crate::checks::MAX_IN_FLIGHT`] per Deployer (the core's), and the probe's body limits.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
};

use futures::channel::mpsc::UnboundedSender;
use kube::runtime::reflector::ObjectRef;
use tokio::sync::Semaphore;

use crate::{
    api::{Deployer, Gate},
    checks::{Call, Outcome},
    metrics::Metrics,
    probe::Prober,
};

/// Calls out at once, for all Deployers: a bound on tasks and connections, far above what
/// [`crate::checks::MAX_IN_FLIGHT`] lets one Deployer use.
pub const MAX_CALLS: usize = 1024;

/// One call: the Deployer (uid), the check, and the run it is for.
type CallId = (String, String, Gate, i32, i32);

/// The calls out and the answers waiting, of one controller.
pub struct Calls {
    prober: Prober,
    metrics: Arc<Metrics>,
    /// Answers not yet taken in, by Deployer uid.
    mailbox: Mutex<HashMap<String, Vec<Outcome>>>,
    /// Calls out now.
    out: Mutex<HashSet<CallId>>,
    permits: Arc<Semaphore>,
    /// Wakes the Deployer an answer is for.
    wake: UnboundedSender<ObjectRef<Deployer>>,
}

impl Calls {
    /// Calls made with `prober`, counted in `metrics`; answers wake their Deployer through `wake`.
    pub fn new(
        prober: Prober,
        metrics: Arc<Metrics>,
        wake: UnboundedSender<ObjectRef<Deployer>>,
    ) -> Arc<Self> {
        Arc::new(Calls {
            prober,
            metrics,
            mailbox: Mutex::default(),
            out: Mutex::default(),
            permits: Arc::new(Semaphore::new(MAX_CALLS)),
            wake,
        })
    }

    /// The answers that came back for the Deployer `uid` and are not yet taken in.
    pub fn answers(&self, uid: &str) -> Vec<Outcome> {
        lock(&self.mailbox).get(uid).cloned().unwrap_or_default()
    }

    /// `taken` were folded into a status that was written (or are no longer wanted): they leave
    /// the mailbox. Once more than 64 Deployers have one, mailboxes of Deployers not in `alive()`
    /// go too.
    pub fn taken(&self, uid: &str, taken: &[Outcome], alive: impl FnOnce() -> HashSet<String>) {
        let mut mailbox = lock(&self.mailbox);
        if let Some(waiting) = mailbox.get_mut(uid) {
            waiting.retain(|o| !taken.contains(o));
            if waiting.is_empty() {
                mailbox.remove(uid);
            }
        }
        if mailbox.len() > 64 {
            let alive = alive();
            mailbox.retain(|uid, _| alive.contains(uid));
        }
    }

    /// Makes `calls` for the Deployer `dpl` (uid `uid`) — each in a task of its own, unless it
    /// is already out.
    pub fn launch(self: &Arc<Self>, dpl: ObjectRef<Deployer>, uid: &str, calls: &[Call]) {
        for call in calls {
            let id: CallId =
                (uid.to_string(), call.check.clone(), call.key.gate, call.key.step, call.key.run);
            if !lock(&self.out).insert(id.clone()) {
                continue;
            }
            self.metrics.set_calls_out(self.out());
            let (this, call, dpl) = (self.clone(), call.clone(), dpl.clone());
            tokio::spawn(async move {
                let Ok(_permit) = this.permits.clone().acquire_owned().await else { return };
                let outcome = this.prober.call(&call).await;
                this.metrics.checked(std::slice::from_ref(&outcome));
                lock(&this.mailbox).entry(id.0.clone()).or_default().push(outcome);
                lock(&this.out).remove(&id);
                this.metrics.set_calls_out(this.out());
                // Nobody to wake once the controller stopped: the answer is lost with the process,
                // and the core counts the call unanswered after its timeout.
                let _ = this.wake.unbounded_send(dpl);
            });
        }
    }

    /// Calls out now.
    pub fn out(&self) -> usize {
        lock(&self.out).len()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures::StreamExt;
    use serde_json::json;

    use super::*;
    use crate::checks::{Answer, Key, Request};

    fn post(url: String) -> Call {
        Call {
            check: "webhook/w".into(),
            key: Key { gate: Gate::BeforeStep, step: 1, run: 0 },
            request: Request::Post { url, timeout: Duration::from_secs(2), payload: json!({}) },
        }
    }

    #[tokio::test]
    async fn an_answer_lands_in_the_mailbox_wakes_its_deployer_and_a_call_out_is_not_made_twice() {
        // A webhook that answers 204 after 300 ms, on loopback, counting its calls.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
        let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = hits.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move || {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                async {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    axum::http::StatusCode::NO_CONTENT
                }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });

        let (wake, mut woken) = futures::channel::mpsc::unbounded();
        let calls = Calls::new(Prober::new(), Arc::new(Metrics::new(false)), wake);
        let dpl = ObjectRef::<Deployer>::new("app").within("ns");
        calls.launch(dpl.clone(), "uid-1", &[post(url.clone())]);
        calls.launch(dpl.clone(), "uid-1", &[post(url)]);
        assert_eq!(calls.out(), 1, "the same call, out once");
        assert!(calls.answers("uid-1").is_empty(), "launching does not wait for the answer");
        let woke = tokio::time::timeout(Duration::from_secs(5), woken.next()).await.expect("woken");
        assert_eq!(woke, Some(dpl));
        let answers = calls.answers("uid-1");
        assert_eq!(answers.iter().map(|o| &o.answer).collect::<Vec<_>>(), [&Answer::Status(204)]);
        assert_eq!((hits.load(std::sync::atomic::Ordering::SeqCst), calls.out()), (1, 0));
        calls.taken("uid-1", &answers, HashSet::new);
        assert!(calls.answers("uid-1").is_empty());
    }
}
