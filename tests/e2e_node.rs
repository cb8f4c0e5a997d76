//! End-to-end on real nodes (`make test-node`, which runs `make deploy` first): the image `make
//! image` built and `scripts/image-test.py` checked runs as the operator's two pods on the local
//! control plane's real nodes (kubelet + containerd + runc, `cluster.sh node up`), installed from
//! deploy/ with the deploy/local/ patches.
//!
//! - `a_…`: the nodes, the pods (which image, which user, which sockets), the probes answered
//!   through the kubelet, the ServiceAccount token the pods authenticate with, the RBAC they act
//!   under, the Lease, and `kubectl logs` through the apiserver → kubelet path.
//! - `b_…`: the seed sample's rollout; `kubectl delete pod` of the leader during a wait (the
//!   handover is timed, and the step still moves on at its persisted deadline); `kubectl rollout
//!   restart` of the operator during a later wait (the leader is replaced before the rollout ends);
//!   no step is repeated, the canary only grows.
//!
//! Not part of `cargo test --tests` (Cargo.toml: `test = false`): it needs root, the real nodes and
//! the deployment, and it owns the namespace deployer-system while it runs. It fails, never skips,
//! when any of that is missing. Run with `--test-threads=1` (the tests run in name order).

mod harness;
mod support;

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use chrono::Utc;
use deployer_operator::api::{Deployer, Phase};
use harness::{Recorder, secs, wait_deployments, wait_phase, wait_status};
use k8s_openapi::api::{
    apps::v1::Deployment,
    authentication::v1::{TokenReview, TokenReviewSpec},
    coordination::v1::Lease,
    core::v1::{Node, Pod},
    events::v1::Event,
};
use kube::{
    Api, Client, ResourceExt,
    api::{ListParams, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};

const NS: &str = "deployer-system";
const NAME: &str = "deployer-operator";
const REAL: &str = "deployer-operator.local/node=real";
const TAINT: &str = "deployer-operator.local/real-node";
const POD_SELECTOR: &str = "app.kubernetes.io/name=deployer-operator,app.kubernetes.io/component=controller";
const SA_USER: &str = "system:serviceaccount:deployer-system:deployer-operator";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn cluster_dir() -> PathBuf {
    match std::env::var_os("CLUSTER_DIR") {
        Some(d) if !d.is_empty() => {
            let d = PathBuf::from(d);
            if d.is_absolute() { d } else { repo().join(d) }
        }
        _ => repo().join(".cluster"),
    }
}

/// The archive `make image` wrote and the manifest digest it recorded.
fn archive_digest() -> String {
    let path = repo().join("target/image/deployer-operator.oci.tar.digest");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run make image, or make test-node)", path.display()))
        .trim()
        .to_string()
}

fn kubectl(args: &[&str]) -> String {
    support::run_tool("kubectl", args).0
}

async fn real_nodes(client: &Client) -> Vec<Node> {
    Api::<Node>::all(client.clone()).list(&ListParams::default().labels(REAL)).await.expect("nodes").items
}

fn node_ip(node: &Node) -> String {
    let addresses = node.status.as_ref().and_then(|s| s.addresses.clone()).unwrap_or_default();
    addresses.iter().find(|a| a.type_ == "InternalIP").map(|a| a.address.clone()).unwrap_or_default()
}

/// The operator's pods that are not being deleted.
async fn operator_pods(client: &Client) -> Vec<Pod> {
    Api::<Pod>::namespaced(client.clone(), NS)
        .list(&ListParams::default().labels(POD_SELECTOR))
        .await
        .expect("pods")
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect()
}

fn pod_ready(p: &Pod) -> bool {
    let conditions = p.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
    conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True")
}

/// Waits until the operator's Deployment has rolled out: 2 updated, ready pods and no other.
async fn wait_operator_rolled_out(client: &Client, timeout: Duration) {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NS);
    support::wait_until("the operator's Deployment to roll out (2 ready pods)", timeout, || async {
        let Ok(d) = deployments.get(NAME).await else { return false };
        let generation = d.metadata.generation;
        let s = d.status.unwrap_or_default();
        s.observed_generation == generation
            && s.updated_replicas == Some(2)
            && s.ready_replicas == Some(2)
            && s.replicas == Some(2)
            && operator_pods(client).await.iter().filter(|p| pod_ready(p)).count() == 2
    })
    .await;
}

/// The Lease's holder: the pod name part of its identity (`<pod>_<random>`).
async fn lease_holder(client: &Client) -> Option<String> {
    let lease = Api::<Lease>::namespaced(client.clone(), NS).get_opt(NAME).await.ok().flatten()?;
    let identity = lease.spec?.holder_identity?;
    Some(identity.rsplit_once('_').map_or(identity.clone(), |(pod, _)| pod.to_string()))
}

/// A host process of the operator (by PID): /proc/<pid>/cmdline is the image's entrypoint + args.
fn operator_pids() -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc") {
        let Ok(entry) = entry else { continue };
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else { continue };
        if cmdline == b"/deployer-operator\0run\0--leader-elect\0" {
            pids.push(pid);
        }
    }
    pids
}

fn proc_status(pid: u32) -> BTreeMap<String, String> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(':').map(|(k, v)| (k.to_string(), v.trim().to_string())))
        .collect()
}

fn environ(pid: u32) -> BTreeMap<String, String> {
    std::fs::read(format!("/proc/{pid}/environ"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .filter_map(|kv| {
            String::from_utf8_lossy(kv).split_once('=').map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect()
}

/// Socket inodes a process holds.
fn socket_inodes(pid: u32) -> BTreeSet<String> {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return BTreeSet::new() };
    fds.filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter_map(|l| l.to_string_lossy().strip_prefix("socket:[")?.strip_suffix(']').map(str::to_string))
        .collect()
}

/// Listening TCP sockets of the host network namespace: inode -> "addr:port".
fn tcp_listeners() -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (file, v6) in [("/proc/net/tcp", false), ("/proc/net/tcp6", true)] {
        let Ok(text) = std::fs::read_to_string(file) else { continue };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 || f[3] != "0A" {
                continue;
            }
            let (addr, port) = f[1].split_once(':').expect("addr:port");
            let port = u16::from_str_radix(port, 16).expect("port");
            let ip = if v6 {
                let b: Vec<u8> =
                    (0..16).map(|i| u8::from_str_radix(&addr[2 * i..2 * i + 2], 16).unwrap()).collect();
                // /proc shows each 32-bit word in host (little-endian) order.
                let mut o = [0u8; 16];
                for w in 0..4 {
                    for k in 0..4 {
                        o[4 * w + k] = b[4 * w + 3 - k];
                    }
                }
                std::net::IpAddr::from(o).to_string()
            } else {
                let n = u32::from_str_radix(addr, 16).expect("ip");
                std::net::Ipv4Addr::from(n.swap_bytes()).to_string()
            };
            out.insert(f[9].to_string(), format!("{ip}:{port}"));
        }
    }
    out
}

fn recorded_pid(name: &str) -> u32 {
    let path = cluster_dir().join("pids").join(format!("{name}.pid"));
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (are the real nodes up? make node-up)", path.display()))
        .trim()
        .parse()
        .expect("a pid")
}

/// Nodes, pods, image, user, sockets, probes, token, RBAC, Lease, logs.
#[tokio::test(flavor = "multi_thread")]
async fn a_the_tested_image_runs_as_two_pods_on_the_real_nodes() {
    let client = support::client().await;

    // The real nodes: Ready, on loopback addresses, the pinned kubelet and containerd, tainted.
    let nodes = real_nodes(&client).await;
    assert_eq!(nodes.len(), 2, "want 2 real nodes ({REAL}); run make node-up");
    let mut node_ips = BTreeMap::new();
    for n in &nodes {
        let status = n.status.clone().unwrap_or_default();
        let info = status.node_info.clone().expect("nodeInfo");
        let ready =
            status.conditions.unwrap_or_default().iter().any(|c| c.type_ == "Ready" && c.status == "True");
        assert!(ready, "node {} is not Ready", n.name_any());
        let ip = node_ip(n);
        assert!(ip.starts_with("127.") && ip == n.name_any(), "node {} InternalIP {ip}", n.name_any());
        assert_eq!(info.kubelet_version, "v1.36.3", "kubelet of {}", n.name_any());
        assert_eq!(info.container_runtime_version, "containerd://2.3.7", "runtime of {}", n.name_any());
        let taints = n.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default();
        assert!(
            taints.iter().any(|t| t.key == TAINT && t.effect == "NoSchedule"),
            "{} taints {taints:?}",
            n.name_any()
        );
        node_ips.insert(n.name_any(), ip.clone());
        println!(
            "node {}: InternalIP {ip}, kubelet {}, {}, kernel {}, cgroup driver from the CRI",
            n.name_any(),
            info.kubelet_version,
            info.container_runtime_version,
            info.kernel_version
        );
    }
    // The kwok nodes stay untainted: ordinary pods land there.
    let all =
        Api::<Node>::all(client.clone()).list(&ListParams::default().labels("type=kwok")).await.unwrap();
    assert!(!all.items.is_empty(), "no kwok nodes");
    for n in all.items {
        assert!(n.spec.and_then(|s| s.taints).unwrap_or_default().is_empty(), "kwok node tainted");
    }

    wait_operator_rolled_out(&client, secs(180)).await;
    let pods = operator_pods(&client).await;
    assert_eq!(pods.len(), 2, "want the Deployment's 2 pods");
    let digest = archive_digest();
    let mut on_nodes = BTreeSet::new();
    for p in &pods {
        let spec = p.spec.clone().expect("spec");
        let status = p.status.clone().expect("status");
        let node = spec.node_name.clone().expect("scheduled");
        assert!(node_ips.contains_key(&node), "pod {} on {node}, not a real node", p.name_any());
        on_nodes.insert(node.clone());
        assert_eq!(spec.host_network, Some(true));
        assert_eq!(status.pod_ip.as_deref(), Some(node_ips[&node].as_str()), "pod IP = its node's address");
        let c = &status.container_statuses.clone().expect("container statuses")[0];
        assert!(c.ready, "container of {} not ready (readiness probe through the kubelet)", p.name_any());
        assert!(
            c.image_id.ends_with(&digest),
            "pod {} runs image {} ({}), not the archive's {digest}",
            p.name_any(),
            c.image,
            c.image_id
        );
        println!(
            "pod {} on node {node}: ready, image {}, restarts {}",
            p.name_any(),
            c.image_id,
            c.restart_count
        );
    }
    assert_eq!(on_nodes.len(), 2, "one pod per real node");

    // The processes on this machine: the image's entrypoint, as the pod's security context says.
    let pids = operator_pids();
    assert_eq!(pids.len(), 2, "want 2 operator processes on this machine, found {pids:?}");
    let listeners = tcp_listeners();
    for pid in &pids {
        let s = proc_status(*pid);
        assert!(s["Uid"].split_whitespace().all(|u| u == "65532"), "pid {pid} Uid {}", s["Uid"]);
        assert!(s["Gid"].split_whitespace().all(|g| g == "65532"), "pid {pid} Gid {}", s["Gid"]);
        assert_eq!(s["NoNewPrivs"], "1", "pid {pid} NoNewPrivs");
        assert_eq!(s["CapEff"], "0000000000000000", "pid {pid} capabilities");
        assert_eq!(s["CapBnd"], "0000000000000000", "pid {pid} bounding set");
        assert_eq!(s["Seccomp"], "2", "pid {pid}: RuntimeDefault seccomp filter");
        let mounts = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).expect("mountinfo");
        let root = mounts.lines().find(|l| l.split_whitespace().nth(4) == Some("/")).expect("root mount");
        assert!(
            root.split_whitespace().nth(5).unwrap().split(',').any(|o| o == "ro"),
            "root not read-only: {root}"
        );
        let env = environ(*pid);
        assert_eq!(env.get("KUBERNETES_SERVICE_HOST").map(String::as_str), Some("127.0.0.1"));
        assert!(!env.contains_key("KUBECONFIG"), "in-cluster configuration expected");
        // The projected ServiceAccount token, where in-cluster configuration reads it; the apiserver
        // itself says whose it is.
        let token = std::fs::read_to_string(format!(
            "/proc/{pid}/root/var/run/secrets/kubernetes.io/serviceaccount/token"
        ))
        .expect("the pod's ServiceAccount token");
        let review = Api::<TokenReview>::all(client.clone())
            .create(
                &PostParams::default(),
                &TokenReview {
                    spec: TokenReviewSpec { token: Some(token), ..Default::default() },
                    ..Default::default()
                },
            )
            .await
            .expect("TokenReview");
        let st = review.status.expect("review status");
        assert_eq!(st.authenticated, Some(true), "the pod's token does not authenticate: {:?}", st.error);
        let user = st.user.expect("user");
        assert_eq!(user.username.as_deref(), Some(SA_USER));
        let bound_pod = user.extra.unwrap_or_default().get("authentication.kubernetes.io/pod-name").cloned();
        // Every socket the operator listens on is on its node's loopback address.
        let own: Vec<&String> = socket_inodes(*pid).iter().filter_map(|i| listeners.get(i)).collect();
        assert!(!own.is_empty(), "pid {pid} listens on nothing");
        assert!(own.iter().all(|a| a.starts_with("127.")), "pid {pid} listens on {own:?}");
        println!(
            "pid {pid}: uid/gid 65532, NoNewPrivs, no capabilities, seccomp filter, read-only root; \
             token authenticates as {SA_USER} bound to pod {bound_pod:?}; listens on {own:?}"
        );
    }
    // The node's own servers listen on loopback only too (kubelet, containerd).
    for name in ["kubelet-0", "kubelet-1", "containerd-0", "containerd-1"] {
        let pid = recorded_pid(name);
        let own: Vec<&String> = socket_inodes(pid).iter().filter_map(|i| listeners.get(i)).collect();
        assert!(own.iter().all(|a| a.starts_with("127.")), "{name} (pid {pid}) listens on {own:?}");
        println!("{name} (pid {pid}) listens on {own:?}");
    }

    // Probes: answered by the pods on their node address (the kubelet probes the same URL).
    for (node, ip) in &node_ips {
        for path in ["/healthz", "/readyz"] {
            let (code, _, body) = harness::http_get(format!("{ip}:8080").parse().unwrap(), path).await;
            assert_eq!(code, 200, "{path} on {node}: {body}");
        }
    }

    // One holds the Lease; the leader says so in its metrics.
    let holder = lease_holder(&client).await.expect("a Lease holder");
    assert!(pods.iter().any(|p| p.name_any() == holder), "Lease held by {holder}, not one of the pods");
    for p in &pods {
        let ip = p.status.as_ref().and_then(|s| s.pod_ip.clone()).unwrap();
        let (_, _, metrics) = harness::http_get(format!("{ip}:8080").parse().unwrap(), "/metrics").await;
        let leader = harness::metric(&metrics, "deployer_leader", &[]);
        assert_eq!(
            leader,
            Some(if p.name_any() == holder { 1.0 } else { 0.0 }),
            "{} deployer_leader",
            p.name_any()
        );
    }
    println!("Lease {NS}/{NAME} held by {holder}");

    // kubectl logs: apiserver -> kubelet on 127.0.0.x, with the apiserver's kubelet client certificate.
    let logs = kubectl(&["-n", NS, "logs", &holder]);
    assert!(logs.contains("listening on 127.0.0."), "leader log:\n{logs}");
    assert!(logs.contains("acquired leadership"), "leader log:\n{logs}");
    let rbac_denials: Vec<&str> =
        logs.lines().filter(|l| l.contains(SA_USER) && l.contains(" cannot ")).collect();
    assert!(rbac_denials.is_empty(), "the leader's log shows RBAC denials: {rbac_denials:#?}");

    // The apiserver's audit log: these pods' requests (the pod name their bound token carries),
    // authenticated as the ServiceAccount, all from loopback addresses, none denied by RBAC
    // (decision "forbid"). Earlier pods are left out: `make undeploy` deletes the RBAC while the
    // last pods still release the Lease.
    let names: BTreeSet<String> = pods.iter().map(|p| p.name_any()).collect();
    let audit = std::fs::read_to_string(cluster_dir().join("logs/audit.log")).expect("the audit log");
    let (mut requests, mut agents, mut sources, mut denied) =
        (0, BTreeSet::new(), BTreeSet::new(), Vec::new());
    for line in audit.lines() {
        let Ok(e) = serde_json::from_str::<Value>(line) else { continue };
        let pod = e["user"]["extra"]["authentication.kubernetes.io/pod-name"][0].as_str().unwrap_or_default();
        if e["user"]["username"] != SA_USER || !names.contains(pod) {
            continue;
        }
        requests += 1;
        agents.insert(
            e["userAgent"].as_str().unwrap_or_default().split('/').next().unwrap_or_default().to_string(),
        );
        for ip in e["sourceIPs"].as_array().into_iter().flatten() {
            sources.insert(ip.as_str().unwrap_or_default().to_string());
        }
        if e["annotations"]["authorization.k8s.io/decision"] == "forbid" {
            denied.push(format!("{} {}", e["verb"], e["requestURI"]));
        }
    }
    assert!(requests > 0, "no request of {SA_USER} from {names:?} in the audit log");
    assert!(sources.iter().all(|ip| ip.starts_with("127.")), "requests from {sources:?}");
    assert!(denied.is_empty(), "RBAC denied the operator: {denied:#?}");
    println!(
        "audit log: {requests} requests of {names:?} as {SA_USER} (user agents {agents:?}) from {sources:?}, none denied"
    );
}

/// The step Events of a Deployer with their series counts.
async fn step_events(client: &Client, ns: &str, name: &str) -> Vec<((String, String, String), i32)> {
    let mut list =
        Api::<Event>::namespaced(client.clone(), ns).list(&ListParams::default()).await.unwrap().items;
    list.sort_by_key(|e| e.event_time.as_ref().map(|t| t.0));
    list.into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .map(|e| {
            let count = e.series.as_ref().map_or(1, |s| s.count);
            ((e.type_.unwrap_or_default(), e.reason.unwrap_or_default(), e.note.unwrap_or_default()), count)
        })
        .collect()
}

/// How late each wait ended: for every persisted deadline, the first state after it.
fn lateness(timeline: &harness::Timeline) -> Vec<(i32, f64)> {
    let mut out = Vec::new();
    for (i, s) in timeline.samples.iter().enumerate() {
        let (Some(Phase::Waiting), Some(until), Some(step)) = (s.phase, s.wait_until, s.step) else {
            continue;
        };
        if out.iter().any(|(st, _)| *st == step) {
            continue;
        }
        if let Some(next) =
            timeline.samples[i..].iter().find(|n| n.step != Some(step) || n.phase != Some(Phase::Waiting))
        {
            out.push((step, (next.at - until).num_milliseconds() as f64 / 1000.0));
        }
    }
    out
}

/// The seed sample rolled out by the pods; the leader deleted during a wait; the operator
/// restarted (`kubectl rollout restart`) during a later wait.
#[tokio::test(flavor = "multi_thread")]
async fn b_the_pods_roll_out_the_seed_sample_through_a_leader_deletion_and_a_restart() {
    let client = support::client().await;
    wait_operator_rolled_out(&client, secs(180)).await;
    let ns = support::namespace(&client, "e2e-node").await;

    apply_seed_sample(&client, &ns, secs(60)).await;

    // 1.7.8 with 8 s waits: the leader is deleted during the first, the operator restarted
    // during the third.
    let recorder = Recorder::start(&client, &ns, "nginx").await;
    let steps = json!([{"percent": 10, "sleep": 8}, {"percent": 30, "sleep": 8}, {"percent": 60, "sleep": 10}, {"percent": 100}]);
    harness::patch_spec(&client, &ns, "nginx", json!({"deployment": {"version": "1.7.8"}, "steps": steps}))
        .await;

    let first = wait_status(&client, &ns, "nginx", "waiting at the first step", secs(60), |s| {
        s.phase == Some(Phase::Waiting) && s.wait_until.is_some() && s.canary_replicas == Some(1)
    })
    .await;
    let leader = lease_holder(&client).await.expect("a leader");
    let deleted_at = Instant::now();
    let deleted_utc = Utc::now();
    kubectl(&["-n", NS, "delete", "pod", &leader, "--wait=false"]);
    let new_leader = loop {
        if let Some(h) = lease_holder(&client).await
            && h != leader
        {
            break h;
        }
        assert!(deleted_at.elapsed() < secs(60), "no other pod took the Lease from {leader} within 60 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let handover = deleted_at.elapsed();
    let until = first.wait_until.unwrap();
    println!(
        "leader {leader} deleted {:.1} s before the wait's deadline; {new_leader} held the Lease {:.2} s after the delete",
        (until - deleted_utc).num_milliseconds() as f64 / 1000.0,
        handover.as_secs_f64()
    );

    let third = wait_status(&client, &ns, "nginx", "waiting at the third step", secs(90), |s| {
        s.phase == Some(Phase::Waiting) && s.canary_replicas == Some(6)
    })
    .await;
    let leader_before_restart = lease_holder(&client).await.expect("a leader");
    let restarted_utc = Utc::now();
    kubectl(&["-n", NS, "rollout", "restart", &format!("deployment/{NAME}")]);
    println!(
        "kubectl rollout restart {:.1} s before the third wait's deadline",
        (third.wait_until.unwrap() - restarted_utc).num_milliseconds() as f64 / 1000.0
    );

    wait_phase(&client, &ns, "nginx", Phase::Done, secs(180)).await;
    // The restart reached the leader before the rollout ended: another pod finished it.
    let leader_at_done = lease_holder(&client).await.expect("a leader");
    assert_ne!(leader_at_done, leader_before_restart, "the restart did not replace the leader before Done");
    wait_deployments(&client, &ns, &[("nginx-1.7.8", 10)], secs(60)).await;
    wait_operator_rolled_out(&client, secs(180)).await;
    let timeline = recorder.stop();

    // No step repeated: each step Event once, no Event series (a step published twice by one process).
    let events = step_events(&client, &ns, "nginx").await;
    let folded: Vec<_> = events
        .iter()
        .filter(|((_, r, _), n)| (r == "StepStarted" || r == "StepCompleted") && *n > 1)
        .collect();
    assert!(folded.is_empty(), "step Events repeated within one process: {folded:#?}");
    harness::assert_no_step_repeated(&events);
    timeline.assert_only_grew("nginx-1.7.8");
    assert_eq!(
        timeline.waiting_pairs("nginx-1.7.8", "nginx-1.7.7"),
        vec![(1, 9), (3, 7), (6, 4), (10, 0)],
        "canary/stable replicas at each step"
    );

    // Every wait ended at its persisted deadline, late only by the handover or restart.
    // Three waits: the 100% step ends the rollout at once, with no wait persisted (one status
    // write per step, docs/design.md).
    let late = lateness(&timeline);
    assert_eq!(late.len(), 3, "three waits, saw {late:?}");
    for (step, l) in &late {
        assert!(*l >= 0.0, "step {step} ended {l} s before its deadline");
        assert!(*l < 15.0, "step {step} ended {l} s after its deadline");
    }
    println!("waits ended after their deadlines by (step, s): {late:?}");
    let restarts: Vec<String> = operator_pods(&client).await.iter().map(|p| p.name_any()).collect();
    assert!(!restarts.contains(&leader), "the deleted leader {leader} is back?");
    println!("after the restart: pods {restarts:?}, Lease held by {:?}", lease_holder(&client).await);
    support::delete_namespace(&client, &ns).await;
}

/// The Helm chart on the real nodes (issue 14.3): the kustomize install steps aside (scaled to 0:
/// two operators must never act on the same Deployers), `helm install` of deploy/helm with the
/// tested image by digest, host networking and the in-cluster address of the API server on
/// loopback, watching one namespace of applications; its two pods become Ready on the real nodes
/// and one holds the release's Lease; the seed sample rolls out there, driven by those pods alone
/// (the audit log shows the release's ServiceAccount writing the Deployer's status); `helm
/// uninstall`; the kustomize install comes back.
#[tokio::test(flavor = "multi_thread")]
async fn c_the_helm_chart_runs_on_the_real_nodes_and_rolls_out_the_seed_sample() {
    let client = support::client().await;
    wait_operator_rolled_out(&client, secs(180)).await;
    kubectl(&["-n", NS, "scale", &format!("deployment/{NAME}"), "--replicas=0"]);
    let all_pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    support::wait_until("the kustomize install's pods to be gone", secs(120), || async {
        all_pods.list(&ListParams::default().labels(POD_SELECTOR)).await.is_ok_and(|l| l.items.is_empty())
    })
    .await;

    let ns = support::namespace(&client, "e2e-node-helm").await;
    let apps = support::namespace(&client, "e2e-node-helm-apps").await;
    let release = "deployer-operator";
    // Whatever happens below, the release and its namespaces go and the kustomize install comes
    // back (its pods need the nodes' port the release's pods hold).
    let _cleanup = Cleanup(
        vec![
            vec![
                "helm",
                "uninstall",
                release,
                "-n",
                &ns,
                "--wait",
                "--timeout",
                "120s",
                "--ignore-not-found",
            ],
            vec!["kubectl", "delete", "namespace", &apps, &ns, "--ignore-not-found", "--wait=false"],
            vec!["kubectl", "-n", NS, "scale", "deployment", NAME, "--replicas=2"],
        ]
        .into_iter()
        .map(|c| c.into_iter().map(str::to_string).collect())
        .collect(),
    );
    let ports = std::fs::read_to_string(cluster_dir().join("ports.env")).expect("ports.env");
    let port = ports.lines().find_map(|l| l.strip_prefix("APISERVER_PORT=")).expect("APISERVER_PORT").trim();
    let archive_ref = std::fs::read_to_string(repo().join("target/image/deployer-operator.oci.tar.ref"))
        .expect("the archive's .ref (make image)");
    let repository = archive_ref.trim().rsplit_once(':').map_or(archive_ref.trim(), |(r, _)| r).to_string();
    let values = json!({
        "image": {"repository": repository, "digest": archive_digest(), "pullPolicy": "Never"},
        "watchNamespaces": [apps],
        "hostNetwork": true,
        "dnsPolicy": "Default",
        "nodeSelector": {"deployer-operator.local/node": "real"},
        "tolerations": [{"key": TAINT, "operator": "Exists", "effect": "NoSchedule"}],
        "extraEnv": [
            {"name": "KUBERNETES_SERVICE_HOST", "value": "127.0.0.1"},
            {"name": "KUBERNETES_SERVICE_PORT", "value": port},
            {"name": "HOST_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}},
            {"name": "DEPLOYER_LISTEN", "value": "$(HOST_IP):8080"},
        ],
    });
    let values_file = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{ns}-values.yaml"));
    std::fs::write(&values_file, serde_yaml::to_string(&values).unwrap()).unwrap();
    let started = Instant::now();
    helm(&[
        "install",
        release,
        "deploy/helm/deployer-operator",
        "-n",
        &ns,
        "-f",
        values_file.to_str().unwrap(),
        "--wait",
        "--timeout",
        "180s",
    ]);
    println!("helm install --wait: {:.1} s", started.elapsed().as_secs_f64());

    // Two Ready pods, one on each real node, running the tested image; one holds the Lease.
    let pods =
        Api::<Pod>::namespaced(client.clone(), &ns).list(&ListParams::default().labels(POD_SELECTOR)).await;
    let pods = pods.expect("the release's pods").items;
    assert_eq!(pods.len(), 2, "two pods: {:?}", pods.iter().map(ResourceExt::name_any).collect::<Vec<_>>());
    let mut on = BTreeSet::new();
    for p in &pods {
        assert!(pod_ready(p), "pod {} not Ready", p.name_any());
        let spec = p.spec.clone().unwrap_or_default();
        on.insert(spec.node_name.clone().unwrap_or_default());
        let image = &spec.containers[0].image;
        assert_eq!(image.as_deref(), Some(format!("{repository}@{}", archive_digest()).as_str()));
    }
    let real: BTreeSet<String> = real_nodes(&client).await.iter().map(ResourceExt::name_any).collect();
    assert_eq!(on, real, "one pod on each real node");
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let holder = || async {
        leases.get_opt("deployer-operator").await.ok().flatten().and_then(|l| l.spec?.holder_identity)
    };
    support::wait_until("a pod of the release to hold its Lease", secs(60), || async {
        holder().await.is_some()
    })
    .await;
    println!("the release's Lease is held by {}", holder().await.unwrap_or_default());

    // The seed sample, then 1.7.8 in four steps, rolled out by the release's pods.
    apply_seed_sample(&client, &apps, secs(90)).await;
    let recorder = Recorder::start(&client, &apps, "nginx").await;
    let steps = json!([{"percent": 10, "sleep": 3}, {"percent": 30, "sleep": 3}, {"percent": 60, "sleep": 3}, {"percent": 100}]);
    harness::patch_spec(&client, &apps, "nginx", json!({"deployment": {"version": "1.7.8"}, "steps": steps}))
        .await;
    wait_phase(&client, &apps, "nginx", Phase::Done, secs(120)).await;
    wait_deployments(&client, &apps, &[("nginx-1.7.8", 10)], secs(60)).await;
    let timeline = recorder.stop();
    timeline.assert_only_grew("nginx-1.7.8");
    assert_eq!(
        timeline.waiting_pairs("nginx-1.7.8", "nginx-1.7.7"),
        vec![(1, 9), (3, 7), (6, 4), (10, 0)],
        "canary/stable replicas at each step"
    );
    let events = step_events(&client, &apps, "nginx").await;
    harness::assert_no_step_repeated(&events);

    // Who wrote the Deployer's status: the release's ServiceAccount, and no one else.
    let audit = std::fs::read_to_string(cluster_dir().join("logs/audit.log")).expect("the audit log");
    let writers: BTreeSet<String> = audit
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| {
            let o = &e["objectRef"];
            o["resource"] == "deployers" && o["subresource"] == "status" && o["namespace"] == apps.as_str()
        })
        .filter(|e| e["verb"] == "patch" || e["verb"] == "update")
        .filter_map(|e| e["user"]["username"].as_str().map(str::to_string))
        .collect();
    let sa = format!("system:serviceaccount:{ns}:{release}");
    assert_eq!(writers, BTreeSet::from([sa.clone()]), "the Deployer's status writers");
    println!("the Deployer's status was written by {sa} only");

    drop(_cleanup);
    wait_operator_rolled_out(&client, secs(180)).await;
}

/// The seed's sample as the README applies it (its namespace set to `ns`), rolled out: Done
/// within `timeout`, with nginx-1.7.7 at its 10 replicas.
async fn apply_seed_sample(client: &Client, ns: &str, timeout: Duration) {
    let deployers: Api<Deployer> = Api::namespaced(client.clone(), ns);
    let sample = std::fs::read_to_string(repo().join("examples/nginx-deployer.yaml")).unwrap();
    let sample: Value =
        serde_yaml::from_str(&sample.replace("namespace: default", &format!("namespace: {ns}"))).unwrap();
    deployers.patch("nginx", &PatchParams::apply("e2e-node").force(), &Patch::Apply(&sample)).await.unwrap();
    wait_phase(client, ns, "nginx", Phase::Done, timeout).await;
    wait_deployments(client, ns, &[("nginx-1.7.7", 10)], secs(30)).await;
}

/// Commands run when dropped (at the end of a test, or when it fails), each best effort: `helm …`
/// runs the pinned helm, `kubectl …` the pinned kubectl.
struct Cleanup(Vec<Vec<String>>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for command in &self.0 {
            let status = support::tool_command(&command[0]).args(&command[1..]).status();
            if !status.as_ref().is_ok_and(|s| s.success()) {
                eprintln!("cleanup: {} failed: {status:?}", command.join(" "));
            }
        }
    }
}

/// Runs the pinned helm (tests/cluster/build.sh helm) with its own directories and the tests'
/// kubeconfig, from the repository; panics unless it succeeds.
fn helm(args: &[&str]) -> String {
    support::run_tool("helm", args).0
}
