//! End-to-end: the operator under the faults production operators meet (issue 13) — a leader
//! frozen past its lease (SIGSTOP), tenants whose endpoints hang, a quota that refuses a write,
//! labels removed by hand, Deployers created and deleted by the hundred — each on the real local
//! control plane, each with the figures the issue asks for printed (`--nocapture` shows them).
//!
//! Every test has its own namespace and operator processes, so they run beside the others of
//! `make test` — but two: the frozen leader and the 40 hanging webhooks take over 90 s each and
//! measure time, so `make test` lists them as ignored and `make faults` (which `.ci/run` runs
//! after `make test`) runs them, one at a time: `cargo test --test e2e_faults -- --ignored`.

mod gates;
mod harness;
mod support;

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

const LEASE: &str = "deployer-operator";
const LEASE_SECONDS: i64 = 4;

/// Flags of an operator that takes part in the election of `ns`'s Lease: 4 s leases renewed 2 s
/// before they expire (as tests/e2e_operations.rs), and the controller's debug lines, which say
/// when a write met a conflict ("stale view").
fn elected(ns: &str) -> Vec<String> {
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
fn user_of(ns: &str, label: &str) -> String {
    format!("{ns}-{label}")
}

/// A TCP proxy on loopback between one operator process and the API server. What the operator
/// sends can be held — not forwarded — and released later, as a stalled network, or a process
/// paused right after its writes left, leaves requests in flight. TLS passes through untouched
/// (the API server's certificate is for 127.0.0.1, whatever the port).
struct Proxy {
    addr: std::net::SocketAddr,
    hold: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
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

    /// Holds what the operator sends from now on.
    fn hold(&self) {
        self.hold.send_replace(true);
    }

    /// Forwards what was held, and everything after it.
    fn release(&self) {
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
async fn apiserver() -> std::net::SocketAddr {
    let url = support::config().await.cluster_url;
    let host = url.host().expect("a host").trim_matches(|c| c == '[' || c == ']').to_string();
    let port = url.port_u16().unwrap_or(443);
    tokio::net::lookup_host((host.as_str(), port)).await.expect("resolve").next().expect("an address")
}

/// Starts an elected operator behind a proxy of its own, impersonating a user of its own (in
/// `system:masters`, so it may do what the admin kubeconfig may) so that the audit log tells its
/// requests apart.
async fn start_elected(ns: &str, label: &str) -> (Operator, Proxy) {
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
async fn lease(client: &Client, ns: &str) -> (Option<String>, Option<DateTime<Utc>>, Option<DateTime<Utc>>) {
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
async fn wait_holder(client: &Client, ns: &str, who: &str, timeout: Duration) {
    support::wait_until(&format!("{who} to hold the lease"), timeout, || async {
        lease(client, ns).await.0.as_deref() == Some(who)
    })
    .await;
}

/// `GET /metrics`, or `None` if the process does not answer within 300 ms.
async fn try_scrape(addr: std::net::SocketAddr) -> Option<String> {
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
async fn wait_metrics(op: &Operator, what: &str, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
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

fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    metric(text, name, labels).unwrap_or(0.0)
}

/// One request in the API server's audit log.
#[derive(Clone, Debug)]
struct Audited {
    at: DateTime<Utc>,
    verb: String,
    /// `deployers/status`, `deployments`, `leases`, …
    resource: String,
    code: u16,
}

/// The audit log of the local control plane (`$CLUSTER_DIR/logs/audit.log`, beside the
/// kubeconfig), if the tests run on it.
fn audit_log() -> Option<PathBuf> {
    let path = support::kubeconfig_path().parent()?.join("logs/audit.log");
    path.is_file().then_some(path)
}

/// The completed requests of `user` (impersonated) in namespace `ns`, oldest first.
fn audited(log: &std::path::Path, ns: &str, user: &str) -> Vec<Audited> {
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
fn writes(a: &Audited) -> bool {
    matches!(a.verb.as_str(), "create" | "update" | "patch" | "delete")
}

/// Merge-patches an annotation onto a Deployer (a control request, as the plugin makes it).
async fn annotate(client: &Client, ns: &str, name: &str, key: &str, value: &str) {
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
fn fencing_violations(changes: &[Change], r: i32, percents: &[i32]) -> Vec<String> {
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
                let target = split(r, percent(st.current_step.unwrap_or(1)));
                let is_canary = st.canary_version.as_deref() == Some(version);
                let is_stable = st.stable_version.as_deref() == Some(version);
                let at = format!("at rv {} (status: {:?} step {:?})", change.rv, st.phase, st.current_step);
                if is_canary && rolling {
                    if before.is_some_and(|b| *now < b) {
                        out.push(format!("{name}: canary went down {before:?} → {now} {at}"));
                    }
                    if *now > target.canary {
                        out.push(format!("{name}: canary {now} past its target {} {at}", target.canary));
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

/// The fencing invariants hold on a made-up history, and each kind of violation is caught (the
/// checker itself, no cluster).
#[test]
fn the_fencing_checker_catches_a_status_or_a_deployment_going_back() {
    let status = |step: i32, phase: Phase, promote: Option<&str>| -> Changed {
        let mut st = DeployerStatus {
            phase: Some(phase),
            current_step: Some(step),
            stable_version: Some("1.0.0".into()),
            canary_version: Some("2.0.0".into()),
            ..DeployerStatus::default()
        };
        st.handled.promote = promote.map(str::to_string);
        Changed::Deployer { name: "app".into(), status: Some(Box::new(st)) }
    };
    let dep = |version: &str, n: i32| Changed::Deployment {
        name: format!("app-{version}"),
        owner: Some("app".into()),
        replicas: Some(n),
    };
    let history = |whats: Vec<Changed>| -> Vec<Change> {
        whats
            .into_iter()
            .enumerate()
            .map(|(i, what)| Change { rv: i as u64 + 1, at: Utc::now(), what })
            .collect()
    };
    let percents = [10, 20, 30];
    let good = vec![
        dep("1.0.0", 10),
        status(1, Phase::Scaling, None),
        dep("2.0.0", 1),
        dep("1.0.0", 9),
        status(1, Phase::Waiting, None),
        status(2, Phase::Scaling, Some("p1")),
        dep("2.0.0", 2),
        dep("1.0.0", 8),
    ];
    assert_eq!(fencing_violations(&history(good.clone()), 10, &percents), Vec::<String>::new());

    // A stale leader's status lands after the new leader's: the step and the promote go back.
    let mut stale = good.clone();
    stale.push(status(1, Phase::Waiting, None));
    let found = fencing_violations(&history(stale), 10, &percents);
    assert!(found.iter().any(|v| v.contains("step went back 2 → 1")), "{found:?}");
    assert!(found.iter().any(|v| v.contains("handled.promote went back")), "{found:?}");

    // A stale leader's Deployment write lands: the canary goes down, the stable up.
    let mut stale = good.clone();
    stale.push(dep("2.0.0", 1));
    stale.push(dep("1.0.0", 9));
    let found = fencing_violations(&history(stale), 10, &percents);
    assert!(found.iter().any(|v| v.contains("canary went down")), "{found:?}");
    assert!(found.iter().any(|v| v.contains("stable went up")), "{found:?}");

    // A canary moved past what the current status asks.
    let mut early = good;
    early.push(dep("2.0.0", 3));
    let found = fencing_violations(&history(early), 10, &percents);
    assert!(found.iter().any(|v| v.contains("past its target 2")), "{found:?}");
}

/// The harness's count of step announcements (no cluster): per run of a rollout, step and reason;
/// an Event series counts its occurrences; a core that announces a step with one reason only, or
/// with both, is counted the same way; a retry starts a new run.
#[test]
fn step_announcements_count_series_per_step_and_reason() {
    let ev = |reason: &str, note: &str, count: i32| -> Counted {
        (("Normal".to_string(), reason.to_string(), note.to_string()), count)
    };
    let once = vec![
        ev("RolloutStarted", "rolling out 2.0.0", 1),
        ev("StepStarted", "step 1/2: 50% — scaling to 2.0.0=2, 1.0.0=2", 1),
        ev("StepCompleted", "step 1/2 in place (2.0.0=2, 1.0.0=2); waiting 5s", 1),
        ev("StepCompleted", "step 2/2 in place (2.0.0=4, 1.0.0=0); waiting 0s", 1),
        ev("RetryRequested", "retry requested", 1),
        ev("StepStarted", "step 1/2: 50% — scaling to 2.0.0=2, 1.0.0=2", 1),
    ];
    let counted = harness::step_announcements(&once);
    assert_eq!(counted.len(), 4, "{counted:#?}");
    assert!(counted.values().all(|n| *n == 1), "{counted:#?}");
    let first = counted.keys().next().expect("one");
    assert_eq!((first.rollout.as_str(), first.step.as_str()), ("2.0.0>1.0.0", "1/2"));
    harness::assert_no_step_repeated(&once);

    // The same step started twice by one process: one Event whose series counts 2.
    let mut twice = once.clone();
    twice[1].1 = 2;
    let repeated = std::panic::catch_unwind(|| harness::assert_no_step_repeated(&twice));
    assert!(repeated.is_err(), "a series of 2 is a step announced twice");
    // Or two Events of one run (two processes).
    let mut again = once.clone();
    again.insert(3, ev("StepCompleted", "step 1/2 in place (2.0.0=2, 1.0.0=2); waiting 5s", 1));
    assert!(std::panic::catch_unwind(|| harness::assert_no_step_repeated(&again)).is_err());
}

/// How a freeze is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Freeze {
    /// SIGSTOP at whatever instant it lands.
    Plain,
    /// What the leader sends is held from 1 s before the SIGSTOP until the standby has moved the
    /// rollouts on, then delivered: the leader is frozen with decisions in flight, and they land
    /// late — deterministically, not only when the SIGSTOP happens to land mid-reconcile.
    Held,
}

/// One freeze of the leader, as the test saw it.
#[derive(Debug)]
struct Frozen {
    how: Freeze,
    frozen: String,
    took_over: String,
    stopped_at: DateTime<Utc>,
    lease_expired: Option<DateTime<Utc>>,
    taken_at: Option<DateTime<Utc>>,
    promoted_at: DateTime<Utc>,
    /// When its held requests were delivered (a `Held` freeze).
    delivered_at: Option<DateTime<Utc>>,
    resumed_at: DateTime<Utc>,
    exited_after: Option<Duration>,
    exit: Option<std::process::ExitStatus>,
    /// The stale leader's /metrics between its resume and its exit, if a scrape made it.
    metrics: Option<String>,
    /// What its log says after the resume.
    log: String,
}

/// SIGSTOP of the leader beyond its lease, mid-rollout: the standby takes the lease once it
/// expires and moves the rollouts on (their waits end during the freeze; some are promoted
/// meanwhile, so `status.handled` changes), then the frozen leader gets SIGCONT. Twice:
///
/// 1. a plain SIGSTOP: on resume the frozen leader's timers are long due (with
///    `--wait-refresh-seconds 1` every waiting Deployer's is), but it sees first that its lease
///    is gone and stops before any reconcile starts — time fencing;
/// 2. a SIGSTOP with requests in flight (`Freeze::Held`): what the leader decided just before
///    the freeze — status writes of ten waiting Deployers, on the view it had — reaches the API
///    server after the new leader has moved on. Only the resourceVersion preconditions stop it.
///
/// Every status version and every Deployment change is recorded by watches and checked in the
/// API server's order (`fencing_violations`), and no step may be announced twice (Events, series
/// counted). The report of each freeze says what the stale leader's writes got (audit log).
///
/// What this catches without fencing (demonstrated by removing the status write's
/// resourceVersion precondition in src/shell/writes.rs): the held status writes land — forced
/// server-side apply — over the new leader's; the step goes back, a handled promote goes back (to
/// be carried out again), and the new leader announces steps again: the test fails on each.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "slow (> 90 s) and timing-sensitive: `make faults` runs it, one test at a time"]
async fn a_leader_frozen_past_its_lease_lands_nothing_it_decided() {
    const N: usize = 10;
    const R: i32 = 10;
    let percents: Vec<i32> = (1..=9).map(|i| i * 10).collect();
    let client = support::client().await;
    harness::install_crd(&client).await;
    let ns = support::namespace(&client, "e2e-fence").await;
    let (mut leader, mut leader_proxy) = start_elected(&ns, "op-a").await;
    wait_holder(&client, &ns, "op-a", secs(30)).await;
    let (mut standby, mut standby_proxy) = start_elected(&ns, "op-b").await;
    wait_metrics(&standby, "op-b ready as a standby", secs(30), |t| {
        metric(t, "deployer_leader", &[]) == Some(0.0)
    })
    .await;

    // Waits of 3–5 s per step (most of a rollout is spent waiting, its status refreshed every
    // second): every freeze (≥ 6 s) outlasts some of them.
    let names: Vec<String> = (0..N).map(|i| format!("app{i}")).collect();
    for (i, name) in names.iter().enumerate() {
        let steps: Vec<(i32, i64)> = percents.iter().map(|p| (*p, 3 + (i as i64 % 3))).collect();
        apply(&client, &ns, &deployer(name, "1.0.0", R, &steps)).await;
    }
    for name in &names {
        harness::wait_phase(&client, &ns, name, Phase::Done, secs(90)).await;
    }
    let history = harness::History::start(&client, &ns, None).await;
    for name in &names {
        patch_spec(&client, &ns, name, json!({"deployment": {"version": "2.0.0"}})).await;
    }
    for name in &names {
        harness::wait_phase(&client, &ns, name, Phase::Waiting, secs(60)).await;
    }

    let mut freezes = Vec::new();
    for (round, how) in [Freeze::Plain, Freeze::Held].into_iter().enumerate() {
        let (frozen, next) = (leader.label(), standby.label());
        let addr = leader.http_addr().await;
        if how == Freeze::Held {
            // Right after a renewal (and the leader's read-back of it, 200 ms later): the next
            // renewal is due 2 s after it, and the leader would give up 3 s after it, so a 1 s
            // hold ends in the freeze before the leader can notice it.
            let (_, before, _) = lease(&client, &ns).await;
            support::wait_until("a renewal of the lease", secs(10), || async {
                lease(&client, &ns).await.1 != before
            })
            .await;
            tokio::time::sleep(Duration::from_millis(300)).await;
            leader_proxy.hold();
            tokio::time::sleep(secs(1)).await;
        }
        let stopped_at = Utc::now();
        leader.signal(libc::SIGSTOP);
        let (_, renewed, _) = lease(&client, &ns).await;
        wait_holder(&client, &ns, &next, secs(30)).await;
        let (_, _, taken_at) = lease(&client, &ns).await;
        // The new leader moves the rollouts on, and carries out promotes the frozen one never saw.
        wait_metrics(&standby, "the new leader to reconcile", secs(30), |t| {
            value(t, "deployer_reconciles_total", &[]) > 0.0
        })
        .await;
        let promoted_at = Utc::now();
        let token = format!("fence-{round}-{}", promoted_at.timestamp_millis());
        let promoted: Vec<&String> = names.iter().skip(round).step_by(3).collect();
        for name in &promoted {
            annotate(&client, &ns, name, "deploy.example.com/promote", &token).await;
        }
        for name in &promoted {
            harness::wait_status(&client, &ns, name, "the promote handled", secs(30), |s| {
                s.handled.promote.as_deref() == Some(token.as_str()) || s.phase == Some(Phase::Done)
            })
            .await;
        }
        // Frozen for at least 2 s past the lease: every waiting Deployer's next look is long due
        // and the new leader has written every waiting Deployer's status since.
        let frozen_for = Utc::now() - stopped_at;
        let least = chrono::TimeDelta::seconds(LEASE_SECONDS + 2);
        if frozen_for < least {
            tokio::time::sleep((least - frozen_for).to_std().unwrap_or_default()).await;
        }
        let delivered_at = (how == Freeze::Held).then(|| {
            leader_proxy.release();
            Utc::now()
        });
        if delivered_at.is_some() {
            // The held requests reach the API server while their sender is still frozen.
            tokio::time::sleep(secs(2)).await;
        }
        let log_from = leader.log().len();
        let resumed_at = Utc::now();
        let resumed = Instant::now();
        leader.signal(libc::SIGCONT);
        // Its /metrics between the resume and its exit (best effort: it exits at once).
        let mut metrics = None;
        while resumed.elapsed() < secs(15) && leader.is_running() {
            if let Some(text) = try_scrape(addr).await {
                metrics = Some(text);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let log = leader.log().get(log_from..).unwrap_or_default().to_string();
        let exit = leader.wait_exit(secs(15)).await;
        let exited_after = Some(resumed.elapsed()).filter(|_| exit.is_some());
        // The deposed leader exits with an error (Kubernetes would restart it as a standby).
        assert_eq!(exit.and_then(|s| s.code()), Some(1), "{frozen} after SIGCONT: {exit:?}\n{log}");
        assert!(log.contains("lost leadership"), "{frozen} after SIGCONT:\n{log}");
        freezes.push(Frozen {
            how,
            frozen: frozen.clone(),
            took_over: next.clone(),
            stopped_at,
            lease_expired: renewed.map(|r| r + chrono::TimeDelta::seconds(LEASE_SECONDS)),
            taken_at,
            promoted_at,
            delivered_at,
            resumed_at,
            exited_after,
            exit,
            metrics,
            log,
        });
        (leader, leader_proxy) = (standby, standby_proxy);
        (standby, standby_proxy) = start_elected(&ns, &format!("op-{}", ["c", "d"][round])).await;
        wait_metrics(&standby, "a new standby", secs(30), |t| metric(t, "deployer_leader", &[]) == Some(0.0))
            .await;
    }

    for name in &names {
        harness::wait_status(&client, &ns, name, "Done on 2.0.0", secs(180), |s| {
            s.phase == Some(Phase::Done) && s.stable_version.as_deref() == Some("2.0.0")
        })
        .await;
    }
    let changes = history.stop();

    // The report: each freeze's timeline, and what the stale leader's writes got.
    tokio::time::sleep(secs(1)).await; // the audit log is written as requests complete
    let audit = audit_log();
    // Every failure at once: a fencing bug shows in several of them.
    let mut problems: Vec<String> = Vec::new();
    for (i, f) in freezes.iter().enumerate() {
        let ms = |t: Option<DateTime<Utc>>| t.map(|t| (t - f.stopped_at).num_milliseconds());
        // Its writes that reached the API server after the standby took over.
        let since = f.taken_at.unwrap_or(f.stopped_at);
        let (mut refused, mut landed) = (BTreeMap::new(), BTreeMap::new());
        if let Some(log) = &audit {
            for a in audited(log, &ns, &user_of(&ns, &f.frozen)).iter().filter(|a| a.at >= since && writes(a))
            {
                let key = format!("{} {}", a.verb, a.resource);
                if a.code == 409 {
                    *refused.entry(key).or_insert(0) += 1;
                } else {
                    *landed.entry(format!("{key} → {}", a.code)).or_insert(0) += 1;
                }
            }
        }
        let stale_lines = f.log.matches("stale view").count();
        let conflicts = f.metrics.as_deref().map(|t| {
            (
                value(t, "deployer_kube_api_requests_total", &[("result", "409")]),
                value(t, "deployer_reconcile_errors_total", &[("reason", "stale")]),
            )
        });
        println!(
            "freeze {} ({:?}): SIGSTOP {} at 0 ms; its lease expired at {:?} ms; {} took the lease at {:?} ms; \
             promotes at {} ms; its held requests delivered at {:?} ms; SIGCONT at {} ms; it exited {:?} later ({:?}). \
             Its writes after the takeover (audit log{}): refused with 409 {refused:?}, others {landed:?}; \
             its log after the resume: {stale_lines} \"stale view\" lines; its /metrics after the resume: {}",
            i + 1,
            f.how,
            f.frozen,
            ms(f.lease_expired),
            f.took_over,
            ms(f.taken_at),
            (f.promoted_at - f.stopped_at).num_milliseconds(),
            ms(f.delivered_at),
            (f.resumed_at - f.stopped_at).num_milliseconds(),
            f.exited_after,
            f.exit,
            if audit.is_some() { "" } else { " not available: not the local control plane" },
            conflicts.map_or("not scraped before it exited".to_string(), |(c, s)| format!(
                "kube_api_requests_total{{result=\"409\"}} {c}, reconcile_errors_total{{reason=\"stale\"}} {s} (whole term)"
            )),
        );
        // Never while its lease was valid.
        if let (Some(expired), Some(taken)) = (f.lease_expired, f.taken_at)
            && taken < expired
        {
            problems.push(format!("freeze {}: the lease was taken before it expired: {f:?}", i + 1));
        }
        // The held round must have put stale status writes on the wire, or it proved nothing.
        if f.how == Freeze::Held && audit.is_some() {
            let stale: i32 =
                refused.iter().filter(|(k, _)| k.contains("deployers/status")).map(|(_, n)| n).sum();
            if stale == 0 {
                problems.push(format!(
                    "freeze {}: no stale status write was refused (refused {refused:?}, others {landed:?})",
                    i + 1
                ));
            }
        }
    }

    problems.extend(fencing_violations(&changes, R, &percents));
    let mut announced = 0;
    for name in &names {
        let events: Vec<Counted> = harness::counted_events(&client, &ns, name).await;
        announced += harness::step_announcements(&events).len();
        let repeated: Vec<_> =
            harness::step_announcements(&events).into_iter().filter(|(_, n)| *n > 1).collect();
        if !repeated.is_empty() {
            problems.push(format!("{name}: steps announced more than once: {repeated:?}"));
        }
    }
    assert!(problems.is_empty(), "fencing failed:\n{}", problems.join("\n"));
    println!(
        "fencing: {} status versions and Deployment changes recorded for {N} rollouts, none against its status; \
         {announced} step announcements, none repeated",
        changes.len()
    );
    drop((leader, standby, leader_proxy, standby_proxy));
    support::delete_namespace(&client, &ns).await;
}

// ------------------------------------------------------------------- 2. starvation and limits

/// A tenant's endpoint that hangs: accepts every connection and never answers (each is held for
/// 60 s, then closed). Returns its address and the number of connections it holds now.
async fn hanging_server() -> (std::net::SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a free port");
    let addr = listener.local_addr().expect("an address");
    let held = Arc::new(AtomicUsize::new(0));
    let count = held.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let count = count.clone();
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                tokio::time::sleep(secs(60)).await;
                drop(socket);
                count.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    (addr, held)
}

/// Rolls `name` to `version` and returns how long it took to be Done on it.
async fn timed_rollout(client: &Client, ns: &str, name: &str, version: &str) -> Duration {
    let started = Instant::now();
    patch_spec(client, ns, name, json!({"deployment": {"version": version}})).await;
    harness::wait_status(client, ns, name, &format!("Done on {version}"), secs(120), |s| {
        s.phase == Some(Phase::Done) && s.stable_version.as_deref() == Some(version)
    })
    .await;
    started.elapsed()
}

/// Waits until every hooked Deployer has aborted its rollout to `version` (after the retry
/// `retry`, if any) because its webhook timed out, and returns, per Deployer, how long its call
/// was out (from `checks[].startedAt`, first seen while Checking, to `lastAt`).
async fn wait_hung_up(
    client: &Client,
    ns: &str,
    hooked: &[String],
    version: &str,
    retry: Option<&str>,
) -> Vec<Duration> {
    let api: Api<deployer_operator::api::Deployer> = Api::namespaced(client.clone(), ns);
    let mut started: BTreeMap<String, DateTime<Utc>> = BTreeMap::new();
    let mut out: BTreeMap<String, Duration> = BTreeMap::new();
    let begin = Instant::now();
    while out.len() < hooked.len() {
        assert!(
            begin.elapsed() < secs(120),
            "hooked rollouts still not aborted after 120 s: {:?}",
            hooked.iter().filter(|n| !out.contains_key(*n)).collect::<Vec<_>>()
        );
        let list = api.list(&Default::default()).await.expect("list Deployers");
        for d in list.items {
            let name = kube::ResourceExt::name_any(&d);
            let Some(st) = d.status.filter(|_| hooked.contains(&name)) else { continue };
            if st.canary_version.as_deref() != Some(version) || st.handled.retry.as_deref() != retry {
                continue;
            }
            let check = st.checks.iter().find(|c| c.name == "webhook/hang");
            if let Some(at) = check.and_then(|c| c.started_at) {
                started.entry(name.clone()).or_insert(at);
            }
            if st.phase == Some(Phase::Aborted) && !out.contains_key(&name) {
                let c = check.unwrap_or_else(|| panic!("{name}: aborted without its check: {st:?}"));
                assert_eq!(
                    st.abort_reason,
                    Some(deployer_operator::api::AbortReason::CheckFailed),
                    "{name}: {st:?}"
                );
                assert_eq!(
                    st.check_verdict.as_deref(),
                    Some("webhook/hang: no answer within 20s"),
                    "{name}: {st:?}"
                );
                assert_eq!((c.runs, c.failures), (1, 1), "{name}: one call, no retry: {c:?}");
                let from =
                    started.get(&name).copied().unwrap_or_else(|| panic!("{name}: never seen in flight"));
                let out_for = (c.last_at.expect("lastAt") - from).to_std().unwrap_or_default();
                out.insert(name, out_for);
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    out.into_values().collect()
}

/// 40 Deployers whose BeforeStep webhook hangs (accepted, never answered; `timeoutSeconds` 20,
/// `retries` 0) roll out at the same time as one plain Deployer (which starts once their 40 calls
/// are out, and ends before any of them times out), under the default
/// `--concurrency` (16). The plain rollout takes as long as without them, and each hanging one
/// ends as its timeout says: Aborted, CheckFailed, "no answer within 20s", its call out 20 s.
///
/// Were the calls made inside the reconcile (as before issue 13), the 40 hanging calls would hold
/// all 16 workers for 20 s each and the plain rollout would wait 20 s or more for one. Margins
/// for a loaded 2-core machine: two rollouts each way, their means compared, within 20 % plus 3 s
/// (the 40 neighbours' own writes at the start cost a little CPU; starvation costs ≥ 20 s).
#[tokio::test(flavor = "multi_thread")]
#[ignore = "slow (> 90 s) and timing-sensitive: `make faults` runs it, one test at a time"]
async fn hanging_webhooks_of_forty_tenants_do_not_slow_a_plain_rollout() {
    use std::sync::atomic::Ordering;
    const HOOKED: usize = 40;
    let (client, ns, op) = harness::setup("e2e-starve").await;
    let (hang, held) = hanging_server().await;
    let url = format!("http://{hang}/gate");
    apply(&client, &ns, &deployer("plain", "1.0.0", 4, &[(25, 2), (50, 2), (75, 2)])).await;
    let hooked: Vec<String> = (0..HOOKED).map(|i| format!("hooked{i}")).collect();
    for name in &hooked {
        let mut manifest = deployer(name, "1.0.0", 1, &[(50, 0)]);
        manifest["spec"]["analysis"] = json!({"webhooks": [
            {"name": "hang", "type": "BeforeStep", "url": url, "timeoutSeconds": 20, "retries": 0}
        ]});
        apply(&client, &ns, &manifest).await;
    }
    for name in hooked.iter().chain(["plain".to_string()].iter()) {
        harness::wait_phase(&client, &ns, name, Phase::Done, secs(120)).await;
    }

    // Alone.
    let mut alone = vec![timed_rollout(&client, &ns, "plain", "2.0.0").await];
    // Beside 40 hanging webhooks (the first deploys ran none: there was nothing to roll back to).
    let mut beside = Vec::new();
    let mut hung = Vec::new();
    let mut calls_out = Vec::new();
    for (round, version) in ["3.0.0", "4.0.0"].into_iter().enumerate() {
        let token = format!("retry-{round}");
        // Round 0: a new version for all; round 1: the aborted rollouts retried.
        for name in &hooked {
            if round == 0 {
                patch_spec(&client, &ns, name, json!({"deployment": {"version": "2.0.0"}})).await;
            } else {
                annotate(&client, &ns, name, "deploy.example.com/retry", &token).await;
            }
        }
        // Every hanging call out (and the neighbours' own writes made) before the plain rollout
        // starts: it runs entirely while 40 calls hang.
        support::wait_until("every hanging call out", secs(30), || {
            std::future::ready(held.load(Ordering::SeqCst) >= HOOKED)
        })
        .await;
        let hung_at = Instant::now();
        beside.push(timed_rollout(&client, &ns, "plain", version).await);
        // While the plain one finished, every hanging call was still out.
        let metrics = harness::http_get(op.http_addr().await, "/metrics").await.2;
        calls_out.push((held.load(Ordering::SeqCst), value(&metrics, "deployer_check_calls_out", &[])));
        assert!(hung_at.elapsed() < secs(18), "the plain rollout outlasted the hanging calls: {beside:?}");
        let retried = (round == 1).then(|| format!("retry-{round}"));
        hung.extend(wait_hung_up(&client, &ns, &hooked, "2.0.0", retried.as_deref()).await);
    }
    alone.push(timed_rollout(&client, &ns, "plain", "5.0.0").await);

    let mean = |xs: &[Duration]| xs.iter().sum::<Duration>() / xs.len() as u32;
    let (alone_mean, beside_mean) = (mean(&alone), mean(&beside));
    let (min_hung, max_hung) = (hung.iter().min().copied(), hung.iter().max().copied());
    println!(
        "starvation: a plain rollout (R 4, 3 waits of 2 s) took {alone:?} alone (mean {alone_mean:?}) and {beside:?} \
         beside {HOOKED} hanging webhooks (mean {beside_mean:?}, {:+.0} %); connections held by the hanging server and \
         deployer_check_calls_out when it finished: {calls_out:?}; the {} hanging calls were out {min_hung:?} … {max_hung:?} \
         before their Deployers aborted (timeoutSeconds 20)",
        (beside_mean.as_secs_f64() / alone_mean.as_secs_f64() - 1.0) * 100.0,
        hung.len(),
    );
    assert!(
        beside_mean <= alone_mean.mul_f64(1.2) + secs(3),
        "a plain rollout took {beside:?} beside hanging webhooks, {alone:?} alone"
    );
    for (held_now, gauge) in &calls_out {
        assert!(
            *held_now >= HOOKED && *gauge >= HOOKED as f64,
            "calls out while the plain one finished: {calls_out:?}"
        );
    }
    assert_eq!(hung.len(), 2 * HOOKED);
    for d in &hung {
        assert!(*d >= secs(20) && *d <= secs(30), "a hanging call was out {d:?} (timeout 20 s): {hung:?}");
    }
    support::delete_namespace(&client, &ns).await;
}

/// What a tenant's endpoint can cost is bounded: a Prometheus answer over 1 MiB is not read
/// past 1 MiB and makes the check inconclusive, saying so; an error text of 5,000 characters is
/// clipped to 256 in the status (and its Warning, within the API server's 1 KiB, is published); a
/// webhook's body is never read (one that never ends passes at once).
#[tokio::test(flavor = "multi_thread")]
async fn tenant_endpoints_cost_at_most_their_limits() {
    use axum::{Router, body::Body, routing::get, routing::post};
    let (client, ns, _op) = harness::setup("e2e-limits").await;
    let huge = format!(
        "{{\"status\":\"success\",\"data\":{{\"resultType\":\"vector\",\"result\":[{{\"metric\":{{\"pad\":\"{}\"}},\"value\":[0,\"1\"]}}]}}}}",
        "x".repeat(2 << 20)
    );
    // 5,000 characters of 4 bytes each: 256 of them are over 1 KiB, an Event note's limit.
    let wordy = json!({"status": "error", "errorType": "bad_data", "error": "𝄞".repeat(5000)}).to_string();
    let router = Router::new()
        .route("/huge/api/v1/query", get(move || std::future::ready(huge.clone())))
        .route("/wordy/api/v1/query", get(move || std::future::ready(wordy.clone())))
        .route(
            "/endless",
            post(|| async {
                let chunk = bytes_of(64 * 1024);
                Body::from_stream(futures::stream::repeat_with(move || {
                    Ok::<_, std::io::Error>(chunk.clone())
                }))
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a free port");
    let addr = listener.local_addr().expect("an address");
    tokio::spawn(async move { axum::serve(listener, router).await });

    let metric_of = |path: &str| {
        json!({
            "prometheus": {"address": format!("http://{addr}/{path}")},
            "metrics": [{"name": "rate", "query": "up", "min": 0.5, "intervalSeconds": 1, "count": 2}]
        })
    };
    for (name, analysis) in [
        ("huge", metric_of("huge")),
        ("wordy", metric_of("wordy")),
        (
            "endless",
            json!({"webhooks": [{"name": "gate", "type": "BeforeStep", "url": format!("http://{addr}/endless"), "timeoutSeconds": 5, "retries": 0}]}),
        ),
    ] {
        let mut manifest = deployer(name, "1.0.0", 2, &[(50, 1)]);
        manifest["spec"]["analysis"] = analysis;
        apply(&client, &ns, &manifest).await;
    }
    for name in ["huge", "wordy", "endless"] {
        harness::wait_phase(&client, &ns, name, Phase::Done, secs(60)).await;
        patch_spec(&client, &ns, name, json!({"deployment": {"version": "2.0.0"}})).await;
    }

    let huge = harness::wait_phase(&client, &ns, "huge", Phase::Paused, secs(60)).await;
    assert_eq!(
        huge.check_verdict.as_deref(),
        Some("metric/rate: Prometheus answered more than 1048576 bytes: not one number"),
        "{huge:?}"
    );
    let wordy = harness::wait_phase(&client, &ns, "wordy", Phase::Paused, secs(60)).await;
    let error = wordy.checks.first().and_then(|c| c.last_error.clone()).expect("an error");
    assert_eq!(error.chars().count(), 256, "{error}");
    assert!(
        error.starts_with("Prometheus refused the query (bad_data): 𝄞𝄞") && error.ends_with('…'),
        "{error}"
    );
    // The Warning says it too, within what the API server takes of an Event (1 KiB).
    support::wait_until("a CheckInconclusive Warning", secs(30), || async {
        let events = harness::events(&client, &ns, "wordy").await;
        events.iter().any(|(t, r, _)| t == "Warning" && r == "CheckInconclusive")
    })
    .await;
    let events = harness::events(&client, &ns, "wordy").await;
    let inconclusive = events.into_iter().find(|(t, r, _)| t == "Warning" && r == "CheckInconclusive");
    let (_, _, note) = inconclusive.expect("the Warning");
    assert!(note.contains("metric/rate: Prometheus refused the query (bad_data): 𝄞𝄞𝄞"), "{note}");
    assert!(note.len() <= 1024, "{} bytes: {note}", note.len());
    let started = Instant::now();
    let endless = harness::wait_status(&client, &ns, "endless", "Done on 2.0.0", secs(60), |s| {
        s.phase == Some(Phase::Done) && s.stable_version.as_deref() == Some("2.0.0")
    })
    .await;
    let gate = endless.checks.iter().find(|c| c.name == "webhook/gate").expect("the webhook's result");
    assert_eq!((gate.runs, gate.last_value.as_deref()), (1, Some("200")), "{gate:?}");
    println!(
        "limits: a 2 MiB Prometheus answer: {:?}; a 5,000-character error kept as {} characters; a webhook with an endless \
         body passed ({} call) and the rollout ended {:?} after the others paused",
        huge.check_verdict,
        error.chars().count(),
        gate.runs,
        started.elapsed()
    );
    support::delete_namespace(&client, &ns).await;
}

fn bytes_of(n: usize) -> axum::body::Bytes {
    axum::body::Bytes::from(vec![b'x'; n])
}

// ------------------------------------------------------------------------- 3. refused writes

/// Times of the operator's log lines that contain every one of `needles`.
fn log_times(log: &str, needles: &[&str]) -> Vec<DateTime<Utc>> {
    log.lines()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect()
}

/// A ResourceQuota (`count/deployments.apps: 1`) refuses the canary's creation: the Deployer says
/// so — `Progressing=False`, reason `WriteRefused`, with the API server's words — with exactly
/// one Warning Event however often it retries, and the retries back off (1 s, 2 s, 4 s …, from
/// the operator's `applying … create=true` log lines). Once the quota is raised the rollout
/// completes, within the backoff's wait (at most 60 s) and the rollout's own time.
#[tokio::test(flavor = "multi_thread")]
async fn a_write_refused_by_a_quota_is_visible_backs_off_and_recovers() {
    use k8s_openapi::api::core::v1::ResourceQuota;
    let (client, ns, op) = harness::setup("e2e-quota").await;
    apply(&client, &ns, &deployer("app", "1.0.0", 2, &[(50, 1)])).await;
    harness::wait_phase(&client, &ns, "app", Phase::Done, secs(60)).await;
    let quotas: Api<ResourceQuota> = Api::namespaced(client.clone(), &ns);
    let quota = |n: &str| {
        json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "deployments"},
        "spec": {"hard": {"count/deployments.apps": n}}})
    };
    quotas
        .patch("deployments", &PatchParams::apply("e2e-test"), &Patch::Apply(quota("1")))
        .await
        .expect("create the quota");
    // Enforced once the quota controller has counted what is there.
    support::wait_until("the quota to count the Deployments", secs(60), || async {
        let used = quotas.get("deployments").await.ok().and_then(|q| q.status).and_then(|s| s.used);
        used.and_then(|u| u.get("count/deployments.apps").map(|q| q.0.clone())).as_deref() == Some("1")
    })
    .await;

    let patched = Utc::now();
    patch_spec(&client, &ns, "app", json!({"deployment": {"version": "2.0.0"}})).await;
    let refused =
        harness::wait_status(&client, &ns, "app", "Progressing=False WriteRefused", secs(60), |s| {
            s.condition("Progressing").is_some_and(|c| c.status == "False" && c.reason == "WriteRefused")
        })
        .await;
    let message = refused.condition("Progressing").map(|c| c.message.clone()).unwrap_or_default();
    assert!(
        message.contains("create Deployment")
            && message.contains("app-2.0.0")
            && message.contains("exceeded quota"),
        "{message}"
    );
    // Let it retry for a while: attempts at about 0, 1, 3, 7 and 15 s.
    let attempts = |log: &str| log_times(log, &["applying", "deployment=app-2.0.0", "create=true"]);
    support::wait_until("five refused attempts", secs(60), || {
        std::future::ready(attempts(&op.log()).len() >= 5)
    })
    .await;
    let refused_attempts = attempts(&op.log());
    let raised = Utc::now();
    quotas
        .patch("deployments", &PatchParams::apply("e2e-test"), &Patch::Apply(quota("2")))
        .await
        .expect("raise the quota");
    harness::wait_status(&client, &ns, "app", "Done on 2.0.0", secs(120), |s| {
        s.phase == Some(Phase::Done) && s.stable_version.as_deref() == Some("2.0.0")
    })
    .await;
    let recovered = Utc::now() - raised;
    let all = attempts(&op.log());
    let intervals: Vec<f64> =
        all.windows(2).map(|w| (w[1] - w[0]).num_milliseconds() as f64 / 1000.0).collect();
    let events = harness::counted_events(&client, &ns, "app").await;
    let warnings: i32 =
        events.iter().filter(|((t, r, _), _)| t == "Warning" && r == "WriteRefused").map(|(_, n)| n).sum();
    // Nothing told twice: the rollout's own Events are not published again with the refusal.
    let twice: Vec<_> = events.iter().filter(|(_, n)| *n > 1).collect();
    assert!(twice.is_empty(), "Events published more than once: {twice:#?}");
    harness::assert_no_step_repeated(&events);
    println!(
        "quota: refused {} ms after the patch: {message:?}; attempts to create app-2.0.0 at {:?} s after the patch \
         (intervals {intervals:?} s); {warnings} WriteRefused Warning; quota raised after {} attempts, the rollout \
         Done {} ms later",
        (refused_attempts[0] - patched).num_milliseconds(),
        all.iter().map(|t| (*t - patched).num_milliseconds() as f64 / 1000.0).collect::<Vec<_>>(),
        refused_attempts.len(),
        recovered.num_milliseconds(),
    );
    assert_eq!(warnings, 1, "one Warning for one refusal, however often retried");
    // Backing off: each wait at least the one before (less 0.3 s of jitter), the fourth ≥ 7 s.
    let waits = &intervals[..refused_attempts.len() - 1];
    assert!(waits.windows(2).all(|w| w[1] >= w[0] - 0.3), "retries do not back off: {intervals:?}");
    assert!(waits.len() >= 4 && waits[3] >= 7.0, "retries do not back off: {intervals:?}");
    // The wait after the last refusal (at most 60 s), plus the rollout.
    assert!(recovered <= chrono::TimeDelta::seconds(90), "recovered {recovered} after the quota was raised");
    let st = harness::status(&client, &ns, "app").await.expect("status");
    assert!(st.condition("Progressing").is_some_and(|c| c.reason != "WriteRefused"), "{st:?}");
    support::delete_namespace(&client, &ns).await;
}

// ------------------------------------------------------------------------------- 4. repairs

/// Whether a Deployment carries the deployer label naming `owner`.
async fn labelled(client: &Client, ns: &str, name: &str, owner: &str) -> bool {
    let api: Api<k8s_openapi::api::apps::v1::Deployment> = Api::namespaced(client.clone(), ns);
    api.get_opt(name).await.ok().flatten().is_some_and(|d| {
        kube::ResourceExt::labels(&d).get("deploy.example.com/deployer").map(String::as_str) == Some(owner)
    })
}

/// Removes the deployer label from a Deployment, as a person would (`kubectl label … -`); returns
/// its generation.
async fn unlabel(client: &Client, ns: &str, name: &str) -> Option<i64> {
    let api: Api<k8s_openapi::api::apps::v1::Deployment> = Api::namespaced(client.clone(), ns);
    let patch = json!({"metadata": {"labels": {"deploy.example.com/deployer": null}}});
    let d = api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.expect("remove the label");
    assert!(!kube::ResourceExt::labels(&d).contains_key("deploy.example.com/deployer"));
    d.metadata.generation
}

/// The deployer label removed by hand — from a settled stable, and from a canary mid-rollout —
/// takes the Deployment out of the operator's label-filtered watch. The operator finds it again
/// (its create meets the name, and the owner reference says it is its own), puts the label back,
/// and carries on: no NameConflict, the stable not resized, the rollout completes with no step
/// repeated and the canary never going back.
#[tokio::test(flavor = "multi_thread")]
async fn a_removed_deployer_label_is_put_back_and_the_rollout_completes() {
    let (client, ns, _op) = harness::setup("e2e-repair").await;
    apply(&client, &ns, &deployer("app", "1.0.0", 4, &[(25, 3), (50, 3), (75, 3)])).await;
    harness::wait_phase(&client, &ns, "app", Phase::Done, secs(60)).await;
    let history = harness::History::start(&client, &ns, Some("app")).await;

    // A settled stable.
    let removed = Instant::now();
    let generation = unlabel(&client, &ns, "app-1.0.0").await;
    support::wait_until("the stable's label back", secs(30), || labelled(&client, &ns, "app-1.0.0", "app"))
        .await;
    let stable_back = removed.elapsed();
    let api: Api<k8s_openapi::api::apps::v1::Deployment> = Api::namespaced(client.clone(), &ns);
    let stable = api.get("app-1.0.0").await.expect("the stable");
    assert_eq!(stable.metadata.generation, generation, "the stable was resized or changed: {stable:?}");
    assert_eq!(stable.spec.as_ref().and_then(|s| s.replicas), Some(4));
    let st = harness::status(&client, &ns, "app").await.expect("status");
    assert_eq!(st.phase, Some(Phase::Done), "{st:?}");

    // A canary mid-rollout.
    patch_spec(&client, &ns, "app", json!({"deployment": {"version": "2.0.0"}})).await;
    harness::wait_phase(&client, &ns, "app", Phase::Waiting, secs(60)).await;
    let removed = Instant::now();
    unlabel(&client, &ns, "app-2.0.0").await;
    support::wait_until("the canary's label back", secs(30), || labelled(&client, &ns, "app-2.0.0", "app"))
        .await;
    let canary_back = removed.elapsed();
    harness::wait_status(&client, &ns, "app", "Done on 2.0.0", secs(90), |s| {
        s.phase == Some(Phase::Done) && s.stable_version.as_deref() == Some("2.0.0")
    })
    .await;
    harness::wait_deployments(&client, &ns, &[("app-2.0.0", 4)], secs(30)).await;

    let changes = history.stop();
    let conflicts: Vec<_> = changes
        .iter()
        .filter_map(|c| match &c.what {
            Changed::Deployer { status: Some(st), .. } => {
                st.conditions.iter().find(|c| c.reason == "NameConflict").map(|c| c.message.clone())
            }
            _ => None,
        })
        .collect();
    assert!(conflicts.is_empty(), "a NameConflict was reported: {conflicts:?}");
    let violations = fencing_violations(&changes, 4, &[25, 50, 75]);
    assert!(violations.is_empty(), "{}", violations.join("\n"));
    harness::Timeline::of(&changes, "app").assert_only_grew("app-2.0.0");
    let events = harness::counted_events(&client, &ns, "app").await;
    harness::assert_no_step_repeated(&events);
    assert!(!events.iter().any(|((_, r, _), _)| r == "NameConflict"), "{events:#?}");
    println!(
        "repair: the deployer label removed by hand was back on the settled stable after {stable_back:?} and on the \
         canary mid-rollout after {canary_back:?}; no NameConflict, the stable not resized, the rollout completed"
    );
    support::delete_namespace(&client, &ns).await;
}

// -------------------------------------------------------------------------------- 5. memory

/// Waits until the namespace holds exactly `n` Deployers, all Done (`n` = 0: none at all).
async fn wait_all_done(client: &Client, ns: &str, n: usize, timeout: Duration) {
    let api: Api<deployer_operator::api::Deployer> = Api::namespaced(client.clone(), ns);
    support::wait_until(&format!("{n} Deployers Done in {ns}"), timeout, || async {
        let Ok(list) = api.list(&Default::default()).await else { return false };
        list.items.len() == n
            && list.items.iter().all(|d| d.status.as_ref().and_then(|s| s.phase) == Some(Phase::Done))
    })
    .await;
}

/// N Deployers created and deleted with the operator running (four rounds of 50): what the
/// controller remembers follows the Deployers that exist — `deployer_controller_remembered_deployers`
/// stays within twice the live ones plus 64, and once they are all gone it falls back to the one
/// left — and the process's memory (VmRSS) comes back to about where it started.
#[tokio::test(flavor = "multi_thread")]
async fn memory_follows_the_deployers_that_exist_through_200_created_and_deleted() {
    const BATCH: usize = 50;
    const ROUNDS: usize = 4;
    let (client, ns, op) = harness::setup("e2e-memory").await;
    let api: Api<deployer_operator::api::Deployer> = Api::namespaced(client.clone(), &ns);
    let remembered = |text: &str| value(text, "deployer_controller_remembered_deployers", &[]);
    let create = |prefix: String| {
        let (client, ns) = (client.clone(), ns.clone());
        async move {
            futures::future::join_all((0..BATCH).map(|i| {
                let (client, ns, name) = (client.clone(), ns.clone(), format!("{prefix}{i}"));
                async move { apply(&client, &ns, &deployer(&name, "1.0.0", 0, &[(100, 0)])).await }
            }))
            .await;
        }
    };
    let delete_all = || async {
        api.delete_collection(&Default::default(), &Default::default()).await.expect("delete the Deployers");
        wait_all_done(&client, &ns, 0, secs(60)).await;
    };
    // A first round warms the caches and the allocator up.
    create("warm".into()).await;
    wait_all_done(&client, &ns, BATCH, secs(120)).await;
    delete_all().await;
    tokio::time::sleep(secs(2)).await;
    let rss_before = op.rss_kib().expect("the operator's VmRSS");
    let text =
        wait_metrics(&op, "the remembered gauge", secs(30), |t| t.contains("remembered_deployers")).await;
    let before = remembered(&text);

    let mut peaks = Vec::new();
    for round in 0..ROUNDS {
        create(format!("r{round}-")).await;
        wait_all_done(&client, &ns, BATCH, secs(120)).await;
        let text = wait_metrics(&op, "the gauge", secs(30), |t| t.contains("remembered_deployers")).await;
        peaks.push(remembered(&text));
        delete_all().await;
    }
    // One Deployer left, whose writes prune the rest.
    apply(&client, &ns, &deployer("last", "1.0.0", 0, &[(100, 0)])).await;
    wait_all_done(&client, &ns, 1, secs(60)).await;
    let text = wait_metrics(&op, "the gauge to fall", secs(30), |t| remembered(t) <= 2.0).await;
    let after = remembered(&text);
    tokio::time::sleep(secs(2)).await;
    let rss_after = op.rss_kib().expect("the operator's VmRSS");
    println!(
        "memory: {} Deployers created and deleted ({ROUNDS} rounds of {BATCH}, after a warm-up round): remembered \
         {before} before, at most {peaks:?} with {BATCH} live, {after} after (one live); VmRSS {:.1} MiB before, \
         {:.1} MiB after",
        ROUNDS * BATCH,
        rss_before as f64 / 1024.0,
        rss_after as f64 / 1024.0,
    );
    for peak in &peaks {
        assert!(*peak <= (2 * BATCH + 64 + 1) as f64, "remembered {peak} with {BATCH} live: {peaks:?}");
    }
    assert!(
        rss_after <= rss_before + 32 * 1024,
        "VmRSS grew from {rss_before} KiB to {rss_after} KiB over {} Deployers created and deleted",
        ROUNDS * BATCH
    );
    support::delete_namespace(&client, &ns).await;
}
