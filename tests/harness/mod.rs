//! Helpers for the operator's end-to-end tests: install the CRD, run the real operator binary as a
//! child process (so tests can kill -9 and restart it), write Deployers, and watch what happens.
//!
//! Each test uses its own namespace and its own operator process (`--namespace`), so tests run
//! concurrently without seeing each other's Deployers.

// Each test file compiles this module separately and uses only some helpers.
#![allow(dead_code)]

use std::{
    collections::BTreeMap,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use deployer_operator::api::{Deployer, DeployerStatus, Phase};
use k8s_openapi::{
    api::{apps::v1::Deployment, events::v1::Event},
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, ResourceExt,
    api::{ListParams, Patch, PatchParams},
};
use serde_json::{Value, json};

use crate::support;

/// Installs (server-side applies) the committed CRD, as `make install` does, and waits until the
/// API server serves it.
pub async fn install_crd(client: &Client) {
    let yaml = include_str!("../../crds/deployer.yaml");
    let crd: CustomResourceDefinition = serde_yaml::from_str(yaml).expect("crds/deployer.yaml parses");
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let name = crd.name_any();
    api.patch(&name, &PatchParams::apply("e2e-tests").force(), &Patch::Apply(&crd))
        .await
        .unwrap_or_else(|e| panic!("installing the CRD: {e}"));
    support::wait_crd_established(client, &name).await;
    // Established can precede discovery by a moment: wait until the resource can be listed.
    let probe: Api<Deployer> = Api::all(client.clone());
    support::wait_until("Deployers to be listable", Duration::from_secs(30), || async {
        probe.list(&ListParams::default().limit(1)).await.is_ok()
    })
    .await;
}

/// A running operator process watching one namespace. Killed (SIGKILL) when dropped.
pub struct Operator {
    namespace: String,
    /// The kubeconfig the operator runs with (the admin one unless started with [`Operator::start_as`]).
    kubeconfig: PathBuf,
    child: Option<Child>,
    starts: u32,
    /// Names this operator among several in one namespace (its log file and `POD_NAME`).
    label: Option<String>,
    /// Extra flags (see [`Operator::start_with`]).
    extra: Vec<String>,
    /// Extra environment variables (see [`Operator::start_with_env`]).
    env: Vec<(String, String)>,
    /// Where the log of the current process starts in the log file.
    log_from: u64,
}

impl Operator {
    /// Starts the operator binary for `namespace`, logging to `target/e2e-logs/<namespace>.log`.
    pub fn start(namespace: &str) -> Operator {
        Operator::start_as(namespace, &support::kubeconfig_path())
    }

    /// Starts the operator binary for `namespace` with another identity: `KUBECONFIG=kubeconfig`
    /// (e.g. a ServiceAccount's token, to test its RBAC).
    pub fn start_as(namespace: &str, kubeconfig: &std::path::Path) -> Operator {
        let mut op = Operator {
            namespace: namespace.to_string(),
            kubeconfig: kubeconfig.to_path_buf(),
            child: None,
            starts: 0,
            label: None,
            extra: Vec::new(),
            env: Vec::new(),
            log_from: 0,
        };
        op.spawn();
        op
    }

    /// Starts one of several operators for `namespace`, named `label` (its `POD_NAME`, hence its
    /// identity in a leader-election Lease), with extra flags; logs to
    /// `target/e2e-logs/<namespace>-<label>.log`.
    pub fn start_with(namespace: &str, label: &str, args: &[&str]) -> Operator {
        Operator::start_with_env(namespace, label, args, &[])
    }

    /// [`Operator::start_with`], with extra environment variables (e.g.
    /// `KUBE_RS_DEBUG_IMPERSONATE_USER`, so that the audit log tells this process's requests apart).
    pub fn start_with_env(namespace: &str, label: &str, args: &[&str], env: &[(&str, &str)]) -> Operator {
        let mut op = Operator {
            namespace: namespace.to_string(),
            kubeconfig: support::kubeconfig_path(),
            child: None,
            starts: 0,
            label: Some(label.to_string()),
            extra: args.iter().map(|a| a.to_string()).collect(),
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            log_from: 0,
        };
        op.spawn();
        op
    }

    fn spawn(&mut self) {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("e2e-logs");
        std::fs::create_dir_all(&dir).expect("log dir");
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(self.log_path()).expect("log file");
        self.log_from = log.metadata().map(|m| m.len()).unwrap_or(0);
        let mut command = Command::new(env!("CARGO_BIN_EXE_deployer-operator"));
        // Many operators run at once: each listens on a free port (see `http_addr`).
        command.args(["run", "--namespace", &self.namespace, "--wait-refresh-seconds", "1"]);
        command.args(["--listen", "127.0.0.1:0"]).args(&self.extra);
        if let Some(label) = &self.label {
            command.env("POD_NAME", label);
        }
        let child = command
            .env("KUBECONFIG", &self.kubeconfig)
            .env("RUST_LOG", "info,kube=warn")
            .env("NO_COLOR", "1")
            // Last: they may override the ones above (e.g. KUBECONFIG).
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("the operator binary starts");
        self.child = Some(child);
        self.starts += 1;
    }

    /// kill -9, and wait until the process is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// kill -9, then start again.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Whether the process is still running (it must not have crashed).
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The label the operator was started with (see [`Operator::start_with`]).
    pub fn label(&self) -> String {
        self.label.clone().unwrap_or_default()
    }

    /// Path of the operator's log.
    pub fn log_path(&self) -> PathBuf {
        let file = match &self.label {
            Some(label) => format!("{}-{label}.log", self.namespace),
            None => format!("{}.log", self.namespace),
        };
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("e2e-logs").join(file)
    }

    /// The log of the current process so far.
    pub fn log(&self) -> String {
        let all = std::fs::read(self.log_path()).unwrap_or_default();
        String::from_utf8_lossy(all.get(self.log_from as usize..).unwrap_or_default()).into_owned()
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends `signal` (e.g. `libc::SIGSTOP`, `libc::SIGCONT`) to the process (and returns at once).
    pub fn signal(&self, signal: libc::c_int) {
        let pid = self.pid().expect("a running operator") as libc::pid_t;
        // SAFETY: kill(2) of the child process this harness started (and has not yet reaped).
        let sent = unsafe { libc::kill(pid, signal) };
        assert_eq!(sent, 0, "kill({pid}, {signal}): {}", std::io::Error::last_os_error());
    }

    /// The process's resident set size (`VmRSS` of /proc/PID/status), in KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    /// Sends SIGTERM (and returns at once).
    pub fn sigterm(&self) {
        let pid = self.pid().expect("a running operator");
        let sent = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
        assert!(sent.is_ok_and(|s| s.success()), "kill -TERM {pid}");
    }

    /// Waits up to `timeout` for the process to exit and returns its exit status (`None`: still
    /// running, then killed).
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// The address the operator's HTTP endpoints listen on, from its `listening on <addr>` log
    /// line (waits up to 30 s for it).
    pub async fn http_addr(&self) -> std::net::SocketAddr {
        let mut found = None;
        support::wait_until(
            &format!("{} to log `listening on`", self.log_path().display()),
            secs(30),
            || {
                found = self.log().lines().find_map(|line| {
                    let rest = &line[line.find("listening on ")? + "listening on ".len()..];
                    let addr: String =
                        rest.chars().take_while(|c| c.is_ascii_digit() || matches!(c, '.' | ':')).collect();
                    addr.parse().ok()
                });
                std::future::ready(found.is_some())
            },
        )
        .await;
        found.expect("an address")
    }
}

/// `GET http://<addr><path>`: the status code, the `Content-Type` and the body.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let mut stream =
        tokio::net::TcpStream::connect(addr).await.unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send the request");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read the response");
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let content_type = head
        .lines()
        .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("content-type")))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default();
    (status, content_type, body.to_string())
}

/// The value of the sample `name{labels…}` in a metrics text (`None`: no such sample). The
/// sample's labels must include every pair of `labels`.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (metric, label_text) = match series.split_once('{') {
            Some((m, rest)) => (m, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        let all_match =
            labels.iter().all(|(k, v)| label_text.split(',').any(|kv| kv == format!("{k}=\"{v}\"")));
        (metric == name && all_match).then(|| value.parse().ok()).flatten()
    })
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A Deployer manifest in the seed's shape.
pub fn deployer(name: &str, version: &str, replicas: i32, steps: &[(i32, i64)]) -> Value {
    json!({
        "apiVersion": "deploy.example.com/v1alpha1",
        "kind": "Deployer",
        "metadata": { "name": name },
        "spec": {
            "type": "canary",
            "deployment": {
                "name": name,
                "image": "nginx",
                "version": version,
                "labels": { "app": name, "operator": "deployer" },
                "replicas": replicas,
            },
            "steps": steps.iter().map(|(p, s)| json!({ "percent": p, "sleep": s })).collect::<Vec<_>>(),
        }
    })
}

/// Server-side applies a Deployer manifest as a user would.
pub async fn apply(client: &Client, ns: &str, manifest: &Value) {
    let api: Api<Deployer> = Api::namespaced(client.clone(), ns);
    let name = manifest["metadata"]["name"].as_str().expect("a name");
    api.patch(name, &PatchParams::apply("e2e-user").force(), &Patch::Apply(manifest))
        .await
        .unwrap_or_else(|e| panic!("applying Deployer {ns}/{name}: {e}"));
}

/// Merge-patches the Deployer's spec (e.g. `json!({"deployment": {"version": "1.7.8"}})`).
pub async fn patch_spec(client: &Client, ns: &str, name: &str, spec: Value) {
    let api: Api<Deployer> = Api::namespaced(client.clone(), ns);
    api.patch(name, &PatchParams::default(), &Patch::Merge(json!({ "spec": spec })))
        .await
        .unwrap_or_else(|e| panic!("patching Deployer {ns}/{name}: {e}"));
}

/// The Deployer's status.
pub async fn status(client: &Client, ns: &str, name: &str) -> Option<DeployerStatus> {
    let api: Api<Deployer> = Api::namespaced(client.clone(), ns);
    api.get_opt(name).await.ok().flatten().and_then(|d| d.status)
}

/// `spec.replicas` of every Deployment in the namespace, by name.
pub async fn replicas(client: &Client, ns: &str) -> BTreeMap<String, i32> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let list = api.list(&ListParams::default()).await.unwrap_or_else(|e| panic!("listing Deployments: {e}"));
    list.items
        .iter()
        .filter(|d| d.metadata.deletion_timestamp.is_none())
        .map(|d| (d.name_any(), d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)))
        .collect()
}

/// Waits until the Deployer reaches `phase` and returns its status.
pub async fn wait_phase(
    client: &Client,
    ns: &str,
    name: &str,
    phase: Phase,
    timeout: Duration,
) -> DeployerStatus {
    let what = format!("Deployer {ns}/{name} to reach phase {phase}");
    let found = Arc::new(Mutex::new(None));
    support::wait_until(&what, timeout, || {
        let found = found.clone();
        async move {
            let s = status(client, ns, name).await;
            let done = s.as_ref().is_some_and(|s| s.phase == Some(phase));
            if done {
                *found.lock().expect("lock") = s;
            }
            done
        }
    })
    .await;
    found.lock().expect("lock").take().expect("status")
}

/// Waits until the Deployments in the namespace are exactly `expected` (name → spec.replicas).
pub async fn wait_deployments(client: &Client, ns: &str, expected: &[(&str, i32)], timeout: Duration) {
    let want: BTreeMap<String, i32> = expected.iter().map(|(n, r)| (n.to_string(), *r)).collect();
    let what = format!("Deployments in {ns} to be {want:?}");
    support::wait_until(&what, timeout, || async { replicas(client, ns).await == want }).await;
}

/// The Events about a Deployer, oldest first, as (type, reason, note).
pub async fn events(client: &Client, ns: &str, name: &str) -> Vec<(String, String, String)> {
    let api: Api<Event> = Api::namespaced(client.clone(), ns);
    let mut list: Vec<Event> = api
        .list(&ListParams::default())
        .await
        .unwrap_or_else(|e| panic!("listing Events: {e}"))
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .collect();
    list.sort_by_key(|e| e.event_time.as_ref().map(|t| t.0));
    list.into_iter()
        .map(|e| (e.type_.unwrap_or_default(), e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
        .collect()
}

/// What the watches saw of one Deployer and its namespace's Deployments: each distinct state, in
/// the order the API server made the changes (by resourceVersion), with the time it was seen.
#[derive(Clone, Debug, Default)]
pub struct Timeline {
    pub samples: Vec<Sample>,
}

/// One observation.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub at: DateTime<Utc>,
    pub phase: Option<Phase>,
    pub step: Option<i32>,
    pub wait_until: Option<DateTime<Utc>>,
    pub replicas: BTreeMap<String, i32>,
}

impl Timeline {
    /// Folds a [`History`] (one Deployer's, or filtered to `name`) into the distinct states.
    pub fn of(changes: &[Change], name: &str) -> Timeline {
        let mut samples: Vec<Sample> = Vec::new();
        let mut status: Option<DeployerStatus> = None;
        let mut replicas: BTreeMap<String, i32> = BTreeMap::new();
        for change in changes {
            match &change.what {
                Changed::Deployer { name: n, status: s } if n == name => status = s.as_deref().cloned(),
                Changed::Deployer { .. } => continue,
                Changed::Deployment { name, replicas: Some(r), .. } => {
                    replicas.insert(name.clone(), *r);
                }
                Changed::Deployment { name, replicas: None, .. } => {
                    replicas.remove(name);
                }
            }
            let sample = Sample {
                at: change.at,
                phase: status.as_ref().and_then(|s| s.phase),
                step: status.as_ref().and_then(|s| s.current_step),
                wait_until: status.as_ref().and_then(|s| s.wait_until),
                replicas: replicas.clone(),
            };
            if samples.last().is_none_or(|l| {
                (l.phase, l.step, l.wait_until, &l.replicas)
                    != (sample.phase, sample.step, sample.wait_until, &sample.replicas)
            }) {
                samples.push(sample);
            }
        }
        Timeline { samples }
    }

    /// For each step the Deployer waited at, the (canary, stable) replicas it settled at in its
    /// wait, and where it ended once Done (a last step with nothing after it is not waited at:
    /// Done is written as it is in place).
    pub fn waiting_pairs(&self, canary: &str, stable: &str) -> Vec<(i32, i32)> {
        // Per step, the last pair seen in its wait while the canary still had the size it
        // entered the wait with: the status is written first (persist first), so the stable may
        // be lowered a moment later — or, when the leader dies in between, only once the standby
        // has taken over; and once the wait is over the next step's canary growth comes before
        // the status says so (it is implied by the deadline).
        let mut out: Vec<(i32, (i32, i32))> = Vec::new();
        for s in &self.samples {
            let (Some(Phase::Waiting), Some(step)) = (s.phase, s.step) else { continue };
            let pair = (*s.replicas.get(canary).unwrap_or(&0), *s.replicas.get(stable).unwrap_or(&0));
            match out.last_mut() {
                Some(last) if last.0 == step => {
                    if pair.0 == last.1.0 {
                        last.1 = pair;
                    }
                }
                _ => out.push((step, pair)),
            }
        }
        if let Some(last) = self.samples.last()
            && last.phase == Some(Phase::Done)
            && let Some(step) = last.step
            && out.last().is_none_or(|o| o.0 != step)
        {
            let pair = (*last.replicas.get(canary).unwrap_or(&0), *last.replicas.get(stable).unwrap_or(&0));
            out.push((step, pair));
        }
        out.into_iter().map(|(_, pair)| pair).collect()
    }

    /// Asserts `deployment`'s replicas only ever grew: no step ran twice in a way anyone could see.
    pub fn assert_only_grew(&self, deployment: &str) {
        let seen: Vec<i32> =
            self.samples.iter().filter_map(|s| s.replicas.get(deployment).copied()).collect();
        assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{deployment} replicas went back: {seen:?}");
    }

    /// When `deployment` was first seen at `replicas`.
    pub fn first_at(&self, deployment: &str, replicas: i32) -> Option<DateTime<Utc>> {
        self.samples.iter().find(|s| s.replicas.get(deployment) == Some(&replicas)).map(|s| s.at)
    }
}

/// One change a [`History`] saw: its resourceVersion, when the watch delivered it, and what.
#[derive(Clone, Debug)]
pub struct Change {
    pub rv: u64,
    pub at: DateTime<Utc>,
    pub what: Changed,
}

/// What changed.
#[derive(Clone, Debug)]
pub enum Changed {
    /// A Deployer's new version (`status: None` once it is deleted or has no status).
    Deployer { name: String, status: Option<Box<DeployerStatus>> },
    /// A Deployment's `spec.replicas` (`None`: deleted, or being deleted), and its owner (the
    /// `deploy.example.com/deployer` label).
    Deployment { name: String, owner: Option<String>, replicas: Option<i32> },
}

/// What one of the two watches of a [`History`] delivered.
enum Seen {
    Change(u64, Changed),
    /// Watch 0 (Deployers) or 1 (Deployments) delivered its initial list.
    Synced(usize),
    Nothing,
}

/// Records every version of the Deployers (all, or one) and of the Deployments of a namespace
/// from two watches, so that no state, however brief, is missed. resourceVersions come from one
/// etcd revision counter: sorted by them, the changes of both kinds are in the order the API
/// server made them, whatever order the two watches delivered them in.
pub struct History {
    changes: Arc<Mutex<Vec<Change>>>,
    task: tokio::task::JoinHandle<()>,
}

impl History {
    /// Starts recording; returns once both watches have delivered their initial state.
    pub async fn start(client: &Client, ns: &str, deployer: Option<&str>) -> History {
        use futures::StreamExt;
        use kube::runtime::{WatchStreamExt, watcher};

        let changes = Arc::new(Mutex::new(Vec::new()));
        let dpls: Api<Deployer> = Api::namespaced(client.clone(), ns);
        let deps: Api<Deployment> = Api::namespaced(client.clone(), ns);
        let config = match deployer {
            Some(name) => watcher::Config::default().fields(&format!("metadata.name={name}")),
            None => watcher::Config::default(),
        };
        let rv = |meta: &kube::api::ObjectMeta| {
            meta.resource_version.as_deref().and_then(|v| v.parse().ok()).unwrap_or(u64::MAX)
        };
        let deployer_events = watcher(dpls, config).default_backoff().map(move |e| match e {
            Ok(watcher::Event::Apply(d) | watcher::Event::InitApply(d)) => Seen::Change(
                rv(&d.metadata),
                Changed::Deployer { name: d.name_any(), status: d.status.map(Box::new) },
            ),
            Ok(watcher::Event::Delete(d)) => {
                Seen::Change(rv(&d.metadata), Changed::Deployer { name: d.name_any(), status: None })
            }
            Ok(watcher::Event::InitDone) => Seen::Synced(0),
            _ => Seen::Nothing,
        });
        let deployment_events =
            watcher(deps, watcher::Config::default()).default_backoff().map(move |e| match e {
                Ok(watcher::Event::Apply(d) | watcher::Event::InitApply(d)) => {
                    let gone = d.metadata.deletion_timestamp.is_some();
                    let replicas = if gone { None } else { d.spec.as_ref().and_then(|s| s.replicas) };
                    let owner = d.labels().get("deploy.example.com/deployer").cloned();
                    Seen::Change(rv(&d.metadata), Changed::Deployment { name: d.name_any(), owner, replicas })
                }
                Ok(watcher::Event::Delete(d)) => {
                    let owner = d.labels().get("deploy.example.com/deployer").cloned();
                    Seen::Change(
                        rv(&d.metadata),
                        Changed::Deployment { name: d.name_any(), owner, replicas: None },
                    )
                }
                Ok(watcher::Event::InitDone) => Seen::Synced(1),
                _ => Seen::Nothing,
            });
        let mut events = futures::stream::select(deployer_events, deployment_events).boxed();
        let c = changes.clone();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            let mut synced = [false; 2];
            while let Some(seen) = events.next().await {
                match seen {
                    Seen::Change(rv, what) => {
                        c.lock().expect("lock").push(Change { rv, at: Utc::now(), what })
                    }
                    Seen::Synced(i) => synced[i] = true,
                    Seen::Nothing => {}
                }
                if synced == [true; 2]
                    && let Some(tx) = ready.take()
                {
                    let _ = tx.send(());
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(30), ready_rx)
            .await
            .unwrap_or_else(|_| panic!("the watches of {ns} did not sync within 30 s"))
            .expect("the recording task runs");
        History { changes, task }
    }

    /// The changes so far, in the API server's order.
    pub fn snapshot(&self) -> Vec<Change> {
        let mut all = self.changes.lock().expect("lock").clone();
        // A stable sort: changes of equal resourceVersion (a re-list) keep their arrival order.
        all.sort_by_key(|c| c.rv);
        all
    }

    /// Stops recording and returns what was seen, in the API server's order.
    pub fn stop(self) -> Vec<Change> {
        self.task.abort();
        self.snapshot()
    }
}

/// Records a [`Timeline`] of one Deployer and its namespace's Deployments.
pub struct Recorder {
    name: String,
    history: History,
}

impl Recorder {
    /// Starts recording; returns once both watches have delivered their initial state.
    pub async fn start(client: &Client, ns: &str, name: &str) -> Recorder {
        Recorder { name: name.to_string(), history: History::start(client, ns, Some(name)).await }
    }

    /// Stops recording and returns what was seen.
    pub fn stop(self) -> Timeline {
        Timeline::of(&self.history.stop(), &self.name)
    }
}

/// Waits until the Deployer's status satisfies `pred` and returns it.
pub async fn wait_status<P>(
    client: &Client,
    ns: &str,
    name: &str,
    what: &str,
    timeout: Duration,
    pred: P,
) -> DeployerStatus
where
    P: Fn(&DeployerStatus) -> bool,
{
    let found = Arc::new(Mutex::new(None));
    let pred = &pred;
    support::wait_until(&format!("Deployer {ns}/{name}: {what}"), timeout, || {
        let found = found.clone();
        async move {
            let s = status(client, ns, name).await;
            let ok = s.as_ref().is_some_and(pred);
            if ok {
                *found.lock().expect("lock") = s;
            }
            ok
        }
    })
    .await;
    found.lock().expect("lock").take().expect("status")
}

/// Sets up a test: a client, the CRD, a fresh namespace, and an operator watching it.
pub async fn setup(prefix: &str) -> (Client, String, Operator) {
    let client = support::client().await;
    install_crd(&client).await;
    let ns = support::namespace(&client, prefix).await;
    let op = Operator::start(&ns);
    (client, ns, op)
}

/// Elapsed-time helper for readable timeouts.
pub fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// An Event object as the API server keeps it: (type, reason, note), and how many occurrences its
/// series counts (1 without a series). The operator's recorder folds an Event that one process
/// publishes again into the series of the first, so a step announced twice by one process is one
/// object with a count of 2: only the counts tell.
pub type Counted = ((String, String, String), i32);

/// The Events about a Deployer with their series counts, oldest first.
pub async fn counted_events(client: &Client, ns: &str, name: &str) -> Vec<Counted> {
    let api: Api<Event> = Api::namespaced(client.clone(), ns);
    let mut list: Vec<Event> = api
        .list(&ListParams::default())
        .await
        .unwrap_or_else(|e| panic!("listing Events: {e}"))
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .collect();
    list.sort_by_key(|e| e.event_time.as_ref().map(|t| t.0));
    list.into_iter()
        .map(|e| {
            let count = e.series.as_ref().map_or(1, |s| s.count);
            ((e.type_.unwrap_or_default(), e.reason.unwrap_or_default(), e.note.unwrap_or_default()), count)
        })
        .collect()
}

/// The reasons that announce a step. Each is counted on its own: a core may announce a step with
/// both (started, then in place) or with one of them only.
pub const STEP_REASONS: [&str; 2] = ["StepStarted", "StepCompleted"];

/// Reasons whose Event begins a new run of a rollout: after one, step 1 may be announced again (a
/// retry after an abort, a steps change, a new version over the same stable).
const RUN_STARTS: [&str; 6] =
    ["Deploying", "RolloutStarted", "StepsChanged", "RetryRequested", "Superseded", "RolledBack"];

/// What one step announcement is about: the run of the rollout (counted by the Events that begin
/// one), the versions its note names (`2.0.0=1, 1.0.0=3` → `2.0.0>1.0.0`), the step (`2/4`) and
/// the reason.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Announced {
    pub run: u32,
    pub rollout: String,
    pub step: String,
    pub reason: String,
}

/// How many times each step was announced, per (run, rollout, step) and per reason, counting
/// every occurrence of an Event series. `events`: one Deployer's, oldest first.
pub fn step_announcements(events: &[Counted]) -> BTreeMap<Announced, i32> {
    let mut run = 0;
    let mut out = BTreeMap::new();
    for ((_, reason, note), count) in events {
        if RUN_STARTS.contains(&reason.as_str()) {
            run += 1;
        }
        if !STEP_REASONS.contains(&reason.as_str()) {
            continue;
        }
        // `step 2/4: 50% — scaling to …` / `step 2/4 in place (…)`: the step is `2/4`.
        let step = note
            .strip_prefix("step ")
            .map(|rest| rest.chars().take_while(|c| c.is_ascii_digit() || *c == '/').collect::<String>())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| note.clone());
        // The versions of `name=replicas` pairs, in order.
        let versions: Vec<&str> = note
            .split(|c: char| c == ',' || c == '(' || c == ')' || c.is_whitespace())
            .filter_map(|token| token.split_once('='))
            .filter(|(_, n)| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
            .map(|(version, _)| version)
            .collect();
        let key = Announced { run, rollout: versions.join(">"), step, reason: reason.clone() };
        *out.entry(key).or_insert(0) += *count;
    }
    out
}

/// Asserts each step was announced at most once per reason within one run of a rollout, counting
/// Event series (a step is never started twice). `events`: one Deployer's, from
/// [`counted_events`].
pub fn assert_no_step_repeated(events: &[Counted]) {
    let repeated: Vec<_> = step_announcements(events).into_iter().filter(|(_, n)| *n > 1).collect();
    assert!(repeated.is_empty(), "steps announced more than once: {repeated:#?}\nall events: {events:#?}");
}

/// Fails unless `f` holds for `hold` (checked every 100 ms).
pub async fn assert_holds<F, Fut>(what: &str, hold: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < hold {
        assert!(f().await, "expected to hold for {hold:?}: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
