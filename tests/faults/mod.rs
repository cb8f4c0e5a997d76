//! Shared by the fault tests (`tests/e2e_faults.rs`, fast, in `make test`; `tests/e2e_faults_slow.rs`,
//! the two that measure time over 90 s, in `make faults`): elected operators behind a proxy the
//! test controls, the Lease, /metrics, the audit log, and the checker of fencing violations.
#![allow(dead_code, unused_imports)]

use super::{harness, support};
use std::{
    collections::BTreeMap,
    path::PathBuf,
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use deployer_operator::{
    api::{DeployerStatus, Phase},
    replicas::split,
};
use harness::{Change, Changed, Counted, Operator, apply, deployer, metric, patch_spec, secs};
use k8s_openapi::api::coordination::v1::Lease;
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};
use serde_json::{Value, json};

// ------------------------------------------------------------------------------------ helpers

pub const LEASE: &str = "deployer-operator";
pub const LEASE_SECONDS: i64 = 4;

/// Flags of an operator that takes part in the election of `ns`'s Lease: 4 s leases renewed 2 s
/// before they expire (as tests/e2e_operations.rs), and the controller's debug lines, which say
/// when a write met a conflict ("stale view").
pub fn elected(ns: &str) -> Vec<String> {
    let flags = [
        "--leader-elect",
        "--lease-namespace",
        ns,
        "--lease-duration-seconds",
        "4",
        "--lease-grace-seconds",
        "2",
        "--log-level",
        "info,kube=warn,deployer_operator::shell::controller=debug,deployer_operator::shell::leader=debug",
    ];
    flags.iter().map(|s| s.to_string()).collect()
}

/// The user an operator of `label` impersonates in namespace `ns`: its requests are its own in
/// the API server's audit log.
pub fn user_of(ns: &str, label: &str) -> String {
    format!("{ns}-{label}")
}

/// A TCP proxy on loopback between one operator process and the API server. What the operator
/// sends can be held — not forwarded — and released later, as a stalled network, or a process
/// paused right after its writes left, leaves requests in flight. TLS passes through untouched
/// (the API server's certificate is for 127.0.0.1, whatever the port).
pub struct Proxy {
    pub addr: std::net::SocketAddr,
    pub hold: tokio::sync::watch::Sender<bool>,
    pub task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: std::net::SocketAddr) -> Proxy {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a free port");
        let addr = listener.local_addr().expect("an address");
        let (hold, held) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(upstream).await else { continue };
                let (mut from_client, mut to_server) = (client.into_split(), server.into_split());
                let mut held = held.clone();
                // Operator → API server: each chunk waits while held.
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n) = from_client.0.read(&mut buf).await {
                        if n == 0 || held.wait_for(|h| !*h).await.is_err() {
                            break;
                        }
                        if to_server.1.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    let _ = to_server.1.shutdown().await;
                });
                // API server → operator: always.
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut to_server.0, &mut from_client.1).await;
                });
            }
        });
        Proxy { addr, hold, task }
    }

    /// Holds what the operator sends from now on (tests/e2e_faults_slow.rs).
    pub fn hold(&self) {
        self.hold.send_replace(true);
    }

    /// Forwards what was held, and everything after it (tests/e2e_faults_slow.rs).
    pub fn release(&self) {
        self.hold.send_replace(false);
    }

    /// A copy of the tests' kubeconfig that goes through this proxy.
    fn kubeconfig(&self, name: &str) -> PathBuf {
        let text = std::fs::read_to_string(support::kubeconfig_path()).expect("the kubeconfig");
        let mut config: Value = serde_yaml::from_str(&text).expect("a kubeconfig");
        for cluster in config["clusters"].as_array_mut().expect("clusters") {
            cluster["cluster"]["server"] = json!(format!("https://{}", self.addr));
        }
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("e2e-logs");
        std::fs::create_dir_all(&dir).expect("log dir");
        let path = dir.join(format!("{name}.kubeconfig"));
        std::fs::write(&path, serde_yaml::to_string(&config).expect("yaml")).expect("write the kubeconfig");
        path
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The API server's address, from the tests' kubeconfig.
pub async fn apiserver() -> std::net::SocketAddr {
    let url = support::config().await.cluster_url;
    let host = url.host().expect("a host").trim_matches(|c| c == '[' || c == ']').to_string();
    let port = url.port_u16().unwrap_or(443);
    tokio::net::lookup_host((host.as_str(), port)).await.expect("resolve").next().expect("an address")
}

/// Starts an elected operator behind a proxy of its own, impersonating a user of its own (in
/// `system:masters`, so it may do what the admin kubeconfig may) so that the audit log tells its
/// requests apart.
pub async fn start_elected(ns: &str, label: &str) -> (Operator, Proxy) {
    let proxy = Proxy::start(apiserver().await).await;
    let kubeconfig = proxy.kubeconfig(&format!("{ns}-{label}"));
    let args = elected(ns);
    let user = user_of(ns, label);
    let op = Operator::start_with_env(
        ns,
        label,
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        &[
            ("KUBECONFIG", kubeconfig.to_str().expect("a UTF-8 path")),
            ("KUBE_RS_DEBUG_IMPERSONATE_USER", &user),
            ("KUBE_RS_DEBUG_IMPERSONATE_GROUP", "system:masters"),
        ],
    );
    (op, proxy)
}

/// The Lease's holder (by label: identities are `<label>_<random>`), its renewal and its
/// acquisition time.
pub async fn lease(
    client: &Client,
    ns: &str,
) -> (Option<String>, Option<DateTime<Utc>>, Option<DateTime<Utc>>) {
    let leases: Api<Lease> = Api::namespaced(client.clone(), ns);
    let Some(spec) = leases.get_opt(LEASE).await.ok().flatten().and_then(|l| l.spec) else {
        return (None, None, None);
    };
    let holder =
        spec.holder_identity.map(|id| id.rsplit_once('_').map_or(id.clone(), |(l, _)| l.to_string()));
    let time = |t: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime>| {
        t.and_then(|t| DateTime::from_timestamp_micros(t.0.as_microsecond()))
    };
    (holder, time(spec.renew_time), time(spec.acquire_time))
}

/// Waits until the operator labelled `who` holds the Lease.
pub async fn wait_holder(client: &Client, ns: &str, who: &str, timeout: Duration) {
    support::wait_until(&format!("{who} to hold the lease"), timeout, || async {
        lease(client, ns).await.0.as_deref() == Some(who)
    })
    .await;
}

/// `GET /metrics`, or `None` if the process does not answer within 300 ms.
pub async fn try_scrape(addr: std::net::SocketAddr) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        let request = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await.ok()?;
        let (head, body) = response.split_once("\r\n\r\n")?;
        head.starts_with("HTTP/1.1 200").then(|| body.to_string())
    };
    tokio::time::timeout(Duration::from_millis(300), exchange).await.ok().flatten()
}

/// Scrapes /metrics until `pred` holds; returns the text.
pub async fn wait_metrics(
    op: &Operator,
    what: &str,
    timeout: Duration,
    pred: impl Fn(&str) -> bool,
) -> String {
    let addr = op.http_addr().await;
    let start = Instant::now();
    loop {
        let text = try_scrape(addr).await.unwrap_or_default();
        if pred(&text) {
            return text;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}; metrics:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    metric(text, name, labels).unwrap_or(0.0)
}

/// One request in the API server's audit log.
#[derive(Clone, Debug)]
pub struct Audited {
    pub at: DateTime<Utc>,
    pub verb: String,
    /// `deployers/status`, `deployments`, `leases`, …
    pub resource: String,
    pub code: u16,
}

/// The audit log of the local control plane (`$CLUSTER_DIR/logs/audit.log`, beside the
/// kubeconfig), if the tests run on it.
pub fn audit_log() -> Option<PathBuf> {
    let path = support::kubeconfig_path().parent()?.join("logs/audit.log");
    path.is_file().then_some(path)
}

/// The completed requests of `user` (impersonated) in namespace `ns`, oldest first.
pub fn audited(log: &std::path::Path, ns: &str, user: &str) -> Vec<Audited> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut out: Vec<Audited> = text
        .lines()
        .filter(|l| l.contains(user) && l.contains(ns))
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["stage"] == "ResponseComplete" && e["impersonatedUser"]["username"] == user)
        .filter_map(|e| {
            let o = &e["objectRef"];
            let mut resource = o["resource"].as_str()?.to_string();
            if let Some(sub) = o["subresource"].as_str() {
                resource = format!("{resource}/{sub}");
            }
            Some(Audited {
                at: e["requestReceivedTimestamp"].as_str()?.parse().ok()?,
                verb: e["verb"].as_str()?.to_string(),
                resource,
                code: e["responseStatus"]["code"].as_u64().unwrap_or(0) as u16,
            })
        })
        .collect();
    out.sort_by_key(|a| a.at);
    out
}

/// Whether a request writes.
pub fn writes(a: &Audited) -> bool {
    matches!(a.verb.as_str(), "create" | "update" | "patch" | "delete")
}

/// Merge-patches an annotation onto a Deployer (a control request, as the plugin makes it).
pub async fn annotate(client: &Client, ns: &str, name: &str, key: &str, value: &str) {
    let api: Api<deployer_operator::api::Deployer> = Api::namespaced(client.clone(), ns);
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {key: value}}})),
    )
    .await
    .unwrap_or_else(|e| panic!("annotating {ns}/{name}: {e}"));
}

// ------------------------------------------------------------------------ 1. fencing (SIGSTOP)

/// What a recorded history breaks of the fencing invariants, per rollout of `R` replicas over
/// `percents` (the implied 100% last): empty if nothing.
///
/// 1. `status.handled` never goes back: a value once replaced never comes back, and never goes
///    (a stale status would replay a promote or an abort);
/// 2. within one rollout (same canary) the step never goes back;
/// 3. each Deployment moves only towards what the status current at that instant asks (by
///    resourceVersion, the API server's order): the canary only grows, never past the current
///    step's target; the stable only shrinks, never below it.
pub fn fencing_violations(changes: &[Change], r: i32, percents: &[i32]) -> Vec<String> {
    let mut out = Vec::new();
    let percent = |step: i32| -> i32 {
        usize::try_from(step - 1).ok().and_then(|i| percents.get(i)).copied().unwrap_or(100)
    };
    let mut statuses: BTreeMap<String, DeployerStatus> = BTreeMap::new();
    let mut handled: BTreeMap<(String, &'static str), Vec<Option<String>>> = BTreeMap::new();
    let mut replicas: BTreeMap<String, i32> = BTreeMap::new();
    for change in changes {
        match &change.what {
            Changed::Deployer { name, status: Some(st) } => {
                if let Some(before) = statuses.get(name) {
                    let same_rollout = before.canary_version.is_some()
                        && before.canary_version == st.canary_version
                        && before.stable_version == st.stable_version;
                    let (a, b) = (before.current_step.unwrap_or(0), st.current_step.unwrap_or(0));
                    if same_rollout && b < a {
                        out.push(format!("{name}: step went back {a} → {b} at rv {}", change.rv));
                    }
                }
                let h = &st.handled;
                let fields = [
                    ("promote", h.promote.clone()),
                    ("promoteFull", h.promote_full.clone()),
                    ("abort", h.abort.clone()),
                    ("retry", h.retry.clone()),
                ];
                for (field, now) in fields {
                    let seen = handled.entry((name.clone(), field)).or_default();
                    if seen.last() != Some(&now) {
                        if seen.contains(&now) || (now.is_none() && !seen.is_empty()) {
                            out.push(format!(
                                "{name}: handled.{field} went back to {now:?} at rv {} (seen {seen:?})",
                                change.rv
                            ));
                        }
                        seen.push(now);
                    }
                }
                statuses.insert(name.clone(), (**st).clone());
            }
            Changed::Deployer { .. } => {}
            Changed::Deployment { name, owner: Some(owner), replicas: Some(now) } => {
                let before = replicas.insert(name.clone(), *now);
                let Some(st) = statuses.get(owner) else { continue };
                let version = name.strip_prefix(&format!("{owner}-")).unwrap_or_default();
                let rolling = matches!(
                    st.phase,
                    Some(Phase::Scaling | Phase::Waiting | Phase::Paused | Phase::Checking)
                );
                let step = st.current_step.unwrap_or(1);
                let target = split(r, percent(step));
                // A wait that has ended implies the next step's scaling, written only once that
                // step is in place (docs/design.md, "One status write per step"): from then on
                // the canary may grow to the next step's size.
                let ended = st.phase == Some(Phase::Waiting) && st.wait_until.is_some_and(|u| change.at >= u);
                let canary_target = if ended { split(r, percent(step + 1)).canary } else { target.canary };
                let is_canary = st.canary_version.as_deref() == Some(version);
                let is_stable = st.stable_version.as_deref() == Some(version);
                let at = format!("at rv {} (status: {:?} step {:?})", change.rv, st.phase, st.current_step);
                if is_canary && rolling {
                    if before.is_some_and(|b| *now < b) {
                        out.push(format!("{name}: canary went down {before:?} → {now} {at}"));
                    }
                    if *now > canary_target {
                        out.push(format!("{name}: canary {now} past its target {canary_target} {at}"));
                    }
                }
                if is_stable && rolling && st.canary_version.is_some() {
                    if before.is_some_and(|b| *now > b) {
                        out.push(format!("{name}: stable went up {before:?} → {now} {at}"));
                    }
                    if *now < target.stable {
                        out.push(format!("{name}: stable {now} below its target {} {at}", target.stable));
                    }
                }
            }
            Changed::Deployment { name, .. } => {
                replicas.remove(name);
            }
        }
    }
    out
}
