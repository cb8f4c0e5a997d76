//! Argo Rollouts as a [`Controller`]: its controller binary built from its Go module by
//! `benches/peers/argo/build.sh` (the Makefile passes `ARGO_BIN` and `ARGO_CRDS`), its CRDs applied
//! from the module's `manifests/crds`, one `Rollout` per object: a basic canary (no traffic
//! routing, replica ratio) with steps setWeight 10 / pause 6 s / setWeight 30 / pause 3 s /
//! setWeight 60 / pause 3 s, then 100 %.
//!
//! How it runs (all recorded in the JSON): in a network namespace of its own ([`super::netns`]),
//! so that its hard-coded 0.0.0.0 listeners are loopback-only and it can reach nothing but the
//! apiserver; `--namespaced --namespace <ns>` (it watches the benchmark's namespace only, as ours
//! does); `--leader-elect=false`; `POD_NAMESPACE=<ns>`, where there is no `argo-rollouts-config`
//! ConfigMap (so no plugin is downloaded) and no notification ConfigMap or Secret (so no
//! notification is sent); client QPS and burst raised (`ARGO_QPS`, `ARGO_BURST`, default 10000 /
//! 20000: kube-rs has no client-side limit, so neither should the peer) and `--rollout-threads`
//! (`ARGO_THREADS`, default 64, as our `--concurrency 64`).

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
};

use chrono::{DateTime, TimeDelta, Utc};
use futures::{StreamExt, stream};
use k8s_openapi::{
    api::apps::v1::ReplicaSet,
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, ResourceExt,
    api::{ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams},
    runtime::{WatchStreamExt, watcher},
};
use serde_json::{Value, json};

use super::{Controller, Pause, R, STEPS, Seen, netns, ours::image_version};
use crate::{common::out_dir, support};

pub struct Argo {
    bin: PathBuf,
    crds: PathBuf,
    version: String,
    qps: String,
    burst: String,
    threads: String,
    ns: String,
    process: Option<netns::Isolated>,
}

fn rollouts() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("argoproj.io", "v1alpha1", "Rollout"),
        "rollouts",
    )
}

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key).ok().filter(|v| !v.is_empty()).unwrap_or_else(|| default.to_string())
}

impl Argo {
    /// From `ARGO_BIN`, `ARGO_CRDS` (what `benches/peers/argo/build.sh` prints; `make bench
    /// PEERS=argo` sets them) and the optional `ARGO_QPS`, `ARGO_BURST`, `ARGO_THREADS`.
    pub fn from_env() -> Argo {
        let need = |k: &str| {
            std::env::var(k).unwrap_or_else(|_| {
                panic!("{k} is not set: run `make bench PEERS=argo` (or eval \"$(bash benches/peers/argo/build.sh)\")")
            })
        };
        Argo {
            bin: need("ARGO_BIN").into(),
            crds: need("ARGO_CRDS").into(),
            version: env_or("ARGO_VERSION", "?"),
            qps: env_or("ARGO_QPS", "10000"),
            burst: env_or("ARGO_BURST", "20000"),
            threads: env_or("ARGO_THREADS", "64"),
            ns: String::new(),
            process: None,
        }
    }

    fn args(&self) -> Vec<String> {
        [
            "--kubeconfig",
            &support::kubeconfig_path().to_string_lossy(),
            "--namespaced",
            "--namespace",
            &self.ns,
            "--leader-elect=false",
            "--qps",
            &self.qps,
            "--burst",
            &self.burst,
            "--rollout-threads",
            &self.threads,
            "--loglevel",
            "warn",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }
}

impl Controller for Argo {
    fn name(&self) -> &'static str {
        "argo-rollouts"
    }

    fn user_agent(&self) -> &'static str {
        // client-go's default: the binary's name, then its version.
        "rollouts-controller/"
    }

    fn settings(&self) -> Value {
        let mut args = self.args();
        if let Some(i) = args.iter().position(|a| a == "--namespace") {
            args[i + 1] = "<ns>".into();
        }
        if let Some(i) = args.iter().position(|a| a == "--kubeconfig") {
            args[i + 1] = "<kubeconfig>".into();
        }
        json!({
            "version": self.version,
            "build": "go build -trimpath -ldflags '-s -w' of cmd/rollouts-controller (benches/peers/argo/build.sh)",
            "flags": args,
            "env": {"POD_NAMESPACE": "<ns>"},
            "client_rate_limit": format!("qps {} / burst {} (Argo's default: 40 / 80)", self.qps, self.burst),
            "workers": format!("--rollout-threads {} (Argo's default: 10)", self.threads),
            "leader_election": "off (--leader-elect=false)",
            "network": "own network namespace with only lo; apiserver spliced in (listeners 0.0.0.0:8080/8090 unreachable from outside it)",
            "strategy": "canary, no traffic routing; maxSurge/maxUnavailable at Argo's defaults (25% / 25%)",
        })
    }

    async fn install(&self, client: &Client) {
        let api: Api<CustomResourceDefinition> = Api::all(client.clone());
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.crds)
            .unwrap_or_else(|e| panic!("ARGO_CRDS {}: {e}", self.crds.display()))
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "yaml") && !p.ends_with("kustomization.yaml"))
            .collect();
        files.sort();
        for file in files {
            let text = std::fs::read_to_string(&file).expect("read CRD");
            let crd: CustomResourceDefinition =
                serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            let name = crd.name_any();
            api.patch(&name, &PatchParams::apply("bench").force(), &Patch::Apply(&crd))
                .await
                .unwrap_or_else(|e| panic!("applying {name}: {e}"));
            support::wait_crd_established(client, &name).await;
        }
        let probe: Api<DynamicObject> = Api::all_with(client.clone(), &rollouts());
        support::wait_until("Rollouts to be listable", std::time::Duration::from_secs(30), || async {
            probe.list(&ListParams::default().limit(1)).await.is_ok()
        })
        .await;
    }

    async fn start(&mut self, ns: &str) {
        self.ns = ns.to_string();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(out_dir().join(format!("{ns}.log")))
            .expect("log file");
        let port = support::config().await.cluster_url.port_u16().expect("the apiserver's port");
        let env = [("POD_NAMESPACE", ns.to_string()), ("HOME", env_or("HOME", "/root"))];
        self.process = Some(netns::spawn(&self.bin, &self.args(), &env, log, port).await);
    }

    fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(netns::Isolated::pid)
    }

    fn kill(&mut self) {
        if let Some(p) = self.process.take() {
            p.kill();
        }
    }

    async fn apply(&self, client: &Client, ns: &str, name: &str, version: &str) {
        let mut steps = Vec::new();
        for (weight, pause) in STEPS {
            steps.push(json!({"setWeight": weight}));
            steps.push(json!({"pause": {"duration": pause}}));
        }
        let m = json!({
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "Rollout",
            "metadata": {"name": name},
            "spec": {
                "replicas": R,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name, "operator": "argo"}},
                    "spec": {"containers": [{
                        "name": name,
                        "image": format!("nginx:{version}"),
                        "ports": [{"name": "http", "containerPort": 80}],
                    }]},
                },
                "strategy": {"canary": {"steps": steps}},
            },
        });
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &rollouts());
        api.patch(name, &PatchParams::apply("bench").force(), &Patch::Apply(&m))
            .await
            .expect("apply Rollout");
    }

    fn watch(&self, client: Client, ns: String, seen: Arc<Mutex<Seen>>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let rss: Api<ReplicaSet> = Api::namespaced(client.clone(), &ns);
            let ros: Api<DynamicObject> = Api::namespaced_with(client, &ns, &rollouts());
            let r = watcher(rss, watcher::Config::default().labels("rollouts-pod-template-hash"))
                .default_backoff()
                .applied_objects()
                .map(|r| (Some(r), None));
            let o = watcher(ros, watcher::Config::default())
                .default_backoff()
                .applied_objects()
                .map(|o| (None, Some(o)));
            let mut events = stream::select(r, o).boxed();
            while let Some(ev) = events.next().await {
                let now = Utc::now();
                match ev {
                    (Some(Ok(rs)), _) => {
                        let Some(owner) = rs.owner_references().iter().find(|o| o.kind == "Rollout") else {
                            continue;
                        };
                        let image = rs
                            .spec
                            .as_ref()
                            .and_then(|s| s.template.as_ref())
                            .and_then(|t| t.spec.as_ref())
                            .and_then(|p| p.containers.first())
                            .and_then(|c| c.image.clone())
                            .unwrap_or_default();
                        let replicas = rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
                        let ready = rs.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0);
                        seen.lock().expect("lock").workload(
                            now,
                            &owner.name,
                            &image_version(&image),
                            replicas,
                            ready,
                        );
                    }
                    (_, Some(Ok(ro))) => {
                        let (version, pause, done) = rollout_state(&ro);
                        seen.lock().expect("lock").status(now, &ro.name_any(), &version, pause, done);
                    }
                    _ => {}
                }
            }
        })
    }
}

/// A Rollout's version (its template's image tag), the pause it holds, and whether it finished:
/// observed its latest generation, Healthy, and the stable ReplicaSet is the current one.
fn rollout_state(ro: &DynamicObject) -> (String, Option<Pause>, bool) {
    let d = &ro.data;
    let image = d["spec"]["template"]["spec"]["containers"][0]["image"].as_str().unwrap_or("");
    let st = &d["status"];
    let index = st["currentStepIndex"].as_u64();
    let start = st["pauseConditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["reason"] == "CanaryPauseStep")
        .and_then(|c| c["startTime"].as_str())
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc));
    // Steps alternate setWeight (even index) and pause (odd): pause k sits at index 2k + 1.
    let pause = match (index, start) {
        (Some(i), Some(start)) if i % 2 == 1 && ((i - 1) / 2) < STEPS.len() as u64 => {
            let step = ((i - 1) / 2) as usize;
            Some(Pause { step, deadline: start + TimeDelta::seconds(STEPS[step].1) })
        }
        _ => None,
    };
    let generation = ro.metadata.generation.map(|g| g.to_string());
    let done = st["observedGeneration"].as_str().map(String::from) == generation
        && st["phase"] == "Healthy"
        && st["stableRS"].is_string()
        && st["stableRS"] == st["currentPodHash"];
    (image_version(image), pause, done)
}
