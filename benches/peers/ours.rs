//! Our operator as a [`Controller`]: the release binary with the flags of the rest of `make bench`
//! (`--concurrency 64`, everything else at its default), Deployers written by server-side apply.

use std::sync::{Arc, Mutex};

use chrono::Utc;
use deployer_operator::api::{Deployer, Phase};
use futures::{StreamExt, stream};
use k8s_openapi::api::apps::v1::Deployment;
use kube::{
    Api, Client, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{WatchStreamExt, watcher},
};
use serde_json::{Value, json};

use super::{Controller, Pause, R, STEPS, Seen};
use crate::{
    common::{CONCURRENCY, Op},
    harness,
};

#[derive(Default)]
pub struct Ours {
    /// The operator process and the namespace it runs for.
    op: Option<(Op, String)>,
}

/// The version of a pod template's first container (`nginx:2.0.0` → `2.0.0`).
pub fn image_version(image: &str) -> String {
    image.rsplit_once(':').map(|(_, v)| v.to_string()).unwrap_or_default()
}

impl Controller for Ours {
    fn name(&self) -> &'static str {
        "deployer-operator"
    }

    fn user_agent(&self) -> &'static str {
        "deployer-operator/"
    }

    fn settings(&self) -> Value {
        json!({
            "build": "release (cargo bench)",
            "flags": ["run", "--namespace", "<ns>", "--listen", "127.0.0.1:0", "--concurrency", CONCURRENCY],
            "client_rate_limit": "none (kube-rs has no client-side QPS limit)",
            "leader_election": "off (default)",
            "wait_refresh_s": 0,
        })
    }

    async fn install(&self, client: &Client) {
        harness::install_crd(client).await;
    }

    async fn start(&mut self, ns: &str) {
        match &mut self.op {
            Some((op, of)) if of == ns => op.spawn(),
            _ => self.op = Some((Op::start(ns), ns.to_string())),
        }
    }

    fn pid(&self) -> Option<u32> {
        self.op.as_ref().map(|(op, _)| op.pid())
    }

    fn kill(&mut self) {
        if let Some((op, _)) = &mut self.op {
            op.kill();
        }
    }

    async fn apply(&self, client: &Client, ns: &str, name: &str, version: &str) {
        let api: Api<Deployer> = Api::namespaced(client.clone(), ns);
        let m = harness::deployer(name, version, R, &STEPS);
        api.patch(name, &PatchParams::apply("bench").force(), &Patch::Apply(&m)).await.expect("apply");
    }

    fn watch(&self, client: Client, ns: String, seen: Arc<Mutex<Seen>>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let deps: Api<Deployment> = Api::namespaced(client.clone(), &ns);
            let dpls: Api<Deployer> = Api::namespaced(client, &ns);
            let d = watcher(deps, watcher::Config::default().labels("deploy.example.com/deployer"))
                .default_backoff()
                .applied_objects()
                .map(|d| (Some(d), None));
            let p = watcher(dpls, watcher::Config::default())
                .default_backoff()
                .applied_objects()
                .map(|p| (None, Some(p)));
            let mut events = stream::select(d, p).boxed();
            while let Some(ev) = events.next().await {
                let now = Utc::now();
                match ev {
                    (Some(Ok(d)), _) => {
                        let object =
                            d.labels().get("deploy.example.com/deployer").cloned().unwrap_or_default();
                        let image = d
                            .spec
                            .as_ref()
                            .and_then(|s| s.template.spec.as_ref())
                            .and_then(|p| p.containers.first())
                            .and_then(|c| c.image.clone())
                            .unwrap_or_default();
                        let replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
                        let ready = d.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0);
                        seen.lock().expect("lock").workload(
                            now,
                            &object,
                            &image_version(&image),
                            replicas,
                            ready,
                        );
                    }
                    (_, Some(Ok(p))) => {
                        let Some(st) = &p.status else { continue };
                        let name = p.name_any();
                        let version = p.spec.deployment.version.clone();
                        let pause = match (st.phase, st.current_step, st.wait_until) {
                            (Some(Phase::Waiting), Some(step), Some(deadline))
                                if step >= 1 && (step as usize) <= STEPS.len() =>
                            {
                                Some(Pause { step: step as usize - 1, deadline })
                            }
                            _ => None,
                        };
                        let done = st.phase == Some(Phase::Done)
                            && st.stable_version.as_deref() == Some(version.as_str());
                        seen.lock().expect("lock").status(now, &name, &version, pause, done);
                    }
                    _ => {}
                }
            }
        })
    }
}
