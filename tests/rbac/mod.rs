//! RBAC helpers shared by tests/e2e_rbac.rs (the kustomize manifests) and tests/e2e_helm.rs (the
//! chart): what docs/operations.md grants, what a Role says, what `kubectl auth can-i --list`
//! shows for a ServiceAccount's own token, and a rollout run by the operator binary under it.

#![allow(dead_code)]

use std::{
    collections::{BTreeMap, BTreeSet},
    panic::AssertUnwindSafe,
    path::{Component, Path, PathBuf},
    process::Stdio,
};

use deployer_operator::api::{Deployer, Phase};
use futures::FutureExt;
use k8s_openapi::api::{
    apps::v1::Deployment,
    authentication::v1::{SelfSubjectReview, TokenRequest, TokenRequestSpec},
    core::v1::ServiceAccount,
};
use kube::{
    Api, Client,
    api::{ListParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{
    harness::{self, Operator, apply, deployer, events, patch_spec, secs, wait_deployments, wait_phase},
    support,
};

/// Where deploy/ installs the operator, and its ServiceAccount there.
pub const INSTALL_NAMESPACE: &str = "deployer-system";
pub const SERVICE_ACCOUNT: &str = "deployer-operator";

/// Permissions as `kubectl auth can-i --list` names them: `resource.group[/subresource]` → verbs.
pub type Rules = BTreeMap<String, BTreeSet<String>>;

/// First deploy, a foreign Deployment in the way of a second Deployer (create → 409 → get →
/// NameConflict), then a version bump rolled out step by step until the old version is gone.
/// `others`: Deployments that live in `ns` besides the test's (e.g. the operator's own), untouched.
pub async fn rollout_with_a_name_conflict(client: &Client, ns: &str, others: &[(&str, i32)]) {
    apply(client, ns, &deployer("app", "1.0.0", 4, &[(50, 1)])).await;
    let st = wait_phase(client, ns, "app", Phase::Done, secs(60)).await;
    assert_eq!(st.stable_version.as_deref(), Some("1.0.0"));

    let labels = json!({"app": "clash"});
    let foreign: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "clash-1.0.0", "labels": labels},
        "spec": {"replicas": 1, "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels},
                "spec": {"containers": [{"name": "clash", "image": "nginx:1.0"}]}}}
    }))
    .expect("a Deployment");
    let deployments = Api::<Deployment>::namespaced(client.clone(), ns);
    let created =
        deployments.create(&PostParams::default(), &foreign).await.expect("create the foreign Deployment");
    apply(client, ns, &deployer("clash", "1.0.0", 1, &[(100, 0)])).await;
    harness::wait_status(client, ns, "clash", "Ready=False NameConflict", secs(60), |s| {
        s.condition("Ready").is_some_and(|c| c.reason == "NameConflict")
    })
    .await;
    // Reported, not taken over: the foreign Deployment is exactly as its owner left it.
    let untouched = |d: &Deployment| {
        (
            d.metadata.uid.clone(),
            d.metadata.generation,
            d.metadata.owner_references.clone(),
            d.metadata.labels.clone(),
            d.spec.as_ref().and_then(|s| s.replicas),
        )
    };
    let expected = untouched(&created);
    assert_eq!(expected.2, None, "the foreign Deployment has no owner");
    let check = || async {
        let now = deployments.get("clash-1.0.0").await.expect("the foreign Deployment is still there");
        assert_eq!(untouched(&now), expected, "the operator touched a Deployment it does not own");
    };
    check().await;

    patch_spec(client, ns, "app", json!({"deployment": {"version": "2.0.0"}})).await;
    wait_phase(client, ns, "app", Phase::Waiting, secs(60)).await;
    wait_stable(client, ns, "app", "2.0.0").await;
    let mut expected = vec![("app-2.0.0", 4), ("clash-1.0.0", 1)];
    expected.extend_from_slice(others);
    wait_deployments(client, ns, &expected, secs(30)).await;
    // Still untouched after the operator reconciled the conflicting Deployer all that time.
    check().await;
    let reasons: Vec<String> = events(client, ns, "app").await.into_iter().map(|e| e.1).collect();
    for r in ["RolloutStarted", "StepCompleted", "RolloutComplete"] {
        assert!(reasons.contains(&r.to_string()), "no {r} Event (events.k8s.io create): {reasons:?}");
    }
}

/// Waits until the Deployer is Done on `version`.
pub async fn wait_stable(client: &Client, ns: &str, name: &str, version: &str) {
    harness::wait_status(client, ns, name, &format!("Done on {version}"), secs(60), |s| {
        s.phase == Some(Phase::Done) && s.stable_version.as_deref() == Some(version)
    })
    .await;
}

/// Runs `steps`; if they fail, fails again with the operator's log, which says what was forbidden.
pub async fn with_operator_log(op: &Operator, user: &str, steps: impl std::future::Future<Output = ()>) {
    if let Err(panic) = AssertUnwindSafe(steps).catch_unwind().await {
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        panic!("{message}\n--- operator log (running as {user}) ---\n{}", log_tail(op, 60));
    }
}

/// The operator ran, and never met a forbidden request or failed to publish an Event.
pub fn assert_log_clean(op: &Operator, user: &str) {
    let log = std::fs::read_to_string(op.log_path()).unwrap_or_default();
    assert!(log.contains("starting controller"), "the operator did not start:\n{log}");
    let lower = log.to_lowercase();
    for bad in ["forbidden", "code: 403", "could not publish event"] {
        assert!(!lower.contains(bad), "operator log (as {user}) contains {bad:?}:\n{log}");
    }
}

pub fn log_tail(op: &Operator, lines: usize) -> String {
    let log = std::fs::read_to_string(op.log_path()).unwrap_or_default();
    let all: Vec<&str> = log.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn path_str(p: &Path) -> String {
    p.to_str().expect("a UTF-8 path").to_string()
}

/// Runs kubectl in the repository with `KUBECONFIG=kubeconfig`; panics unless it succeeds.
/// Returns (stdout, stderr).
pub fn kubectl(kubeconfig: &Path, args: &[&str]) -> (String, String) {
    let out = support::kubectl()
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .current_dir(repo())
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running kubectl: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "kubectl {} failed ({}):\n{stdout}\n{stderr}", args.join(" "), out.status);
    (stdout, stderr)
}

/// Server-side applies a kustomization as an admin, as `make deploy` does; idempotent.
pub fn apply_kustomization(dir: &Path) {
    let (_, stderr) = kubectl(
        &support::kubeconfig_path(),
        &["apply", "--server-side", "--force-conflicts", "-k", &path_str(dir)],
    );
    let warnings: Vec<&str> = stderr.lines().filter(|l| l.starts_with("Warning:")).collect();
    assert!(warnings.is_empty(), "applying {} warned:\n{stderr}", dir.display());
}

/// The objects a kustomization renders to (`kubectl kustomize`; no cluster needed).
pub fn render(dir: &str) -> Vec<Value> {
    let (yaml, _) = kubectl(&support::kubeconfig_path(), &["kustomize", dir]);
    serde_yaml::Deserializer::from_str(&yaml)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("{dir} renders to bad YAML: {e}")))
        .collect()
}

/// The one object of `kind`.
pub fn the<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<&Value> = objects.iter().filter(|o| o["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "expected exactly one {kind}");
    found[0]
}

/// The object of `kind` named `name`.
pub fn named<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

/// The `runAsUser` the Dockerfile's runtime stage declares (`USER uid:gid`).
pub fn dockerfile_uid() -> Value {
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).expect("Dockerfile");
    let user = dockerfile.lines().rev().find_map(|l| l.strip_prefix("USER ")).expect("a USER line");
    let uid: u64 = user.trim().split(':').next().and_then(|u| u.parse().ok()).expect("a numeric USER");
    json!(uid)
}

/// A Role's or ClusterRole's rules in `kubectl auth can-i --list` terms; panics on wildcards,
/// resourceNames or nonResourceURLs (none are needed).
pub fn rbac_rules(role: &Value) -> Rules {
    let mut rules = Rules::new();
    for rule in role["rules"].as_array().expect("rules") {
        assert!(rule.get("resourceNames").is_none() && rule.get("nonResourceURLs").is_none(), "{rule}");
        let strings = |field: &str| -> Vec<String> {
            let list = rule[field].as_array().unwrap_or_else(|| panic!("{field} in {rule}"));
            let list: Vec<String> = list.iter().map(|v| v.as_str().expect("a string").to_string()).collect();
            assert!(!list.iter().any(|s| s.contains('*')), "wildcard in {rule}");
            list
        };
        let verbs = strings("verbs");
        for group in strings("apiGroups") {
            for resource in strings("resources") {
                let (base, sub) = match resource.split_once('/') {
                    Some((b, s)) => (b.to_string(), format!("/{s}")),
                    None => (resource.clone(), String::new()),
                };
                let name =
                    if group.is_empty() { format!("{base}{sub}") } else { format!("{base}.{group}{sub}") };
                rules.entry(name).or_default().extend(verbs.iter().cloned());
            }
        }
    }
    rules
}

/// The fenced ```` ```rbac ```` block of docs/operations.md: lines `resource verb verb …`.
pub fn documented_rules() -> Rules {
    let doc = std::fs::read_to_string(repo().join("docs/operations.md")).expect("docs/operations.md");
    let block: Vec<&str> =
        doc.lines().skip_while(|l| l.trim() != "```rbac").skip(1).take_while(|l| l.trim() != "```").collect();
    assert!(!block.is_empty(), "docs/operations.md has no ```rbac block");
    block
        .iter()
        .map(|l| l.trim())
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let mut words = l.split_whitespace();
            let resource = words.next().expect("a resource").to_string();
            (resource, words.map(str::to_string).collect())
        })
        .collect()
}

/// `kubectl auth can-i --list -n ns`, as the identity of `kubeconfig` or impersonating `as_user`:
/// the resource rows (resource → verbs; rows with resource names are keyed `resource[names]`).
pub fn can_i_list(kubeconfig: &Path, ns: &str, as_user: Option<&str>) -> Rules {
    let as_flag = as_user.map(|u| format!("--as={u}"));
    let mut args = vec!["auth", "can-i", "--list", "-n", ns];
    args.extend(as_flag.as_deref());
    let (table, _) = kubectl(kubeconfig, &args);
    let mut rules = Rules::new();
    // Columns: Resources, Non-Resource URLs, Resource Names, Verbs; non-resource rows start blank.
    for line in table.lines().skip(1).filter(|l| !l.starts_with(char::is_whitespace) && !l.is_empty()) {
        let resource = line.split_whitespace().next().expect("a resource");
        let groups: Vec<&str> =
            line.split('[').skip(1).map(|g| g.split(']').next().unwrap_or_default()).collect();
        let [_, names, verbs] = groups[..] else { panic!("unexpected `can-i --list` row: {line}") };
        let key = if names.is_empty() { resource.to_string() } else { format!("{resource}[{names}]") };
        rules.entry(key).or_default().extend(verbs.split_whitespace().map(str::to_string));
    }
    rules
}

/// What the identity of `kubeconfig` may do in `ns` beyond what every ServiceAccount may do
/// (self-reviews, discovery): the rules of `system:serviceaccount:<test_ns>:rbac-baseline`, a
/// ServiceAccount name nothing is bound to (impersonation does not need it to exist).
pub fn granted(kubeconfig: &Path, ns: &str, test_ns: &str) -> Rules {
    let baseline_user = format!("system:serviceaccount:{test_ns}:rbac-baseline");
    let baseline = can_i_list(&support::kubeconfig_path(), ns, Some(&baseline_user));
    let mut rules = can_i_list(kubeconfig, ns, None);
    for (resource, verbs) in &baseline {
        if let Some(mine) = rules.get_mut(resource) {
            mine.retain(|v| !verbs.contains(v));
        }
    }
    rules.retain(|_, verbs| !verbs.is_empty());
    rules
}

/// [`granted`], once it equals the documented list or after 10 s: a Role changed a moment ago may
/// take a moment to reach the authorizer's cache.
pub async fn granted_settled(kubeconfig: &Path, ns: &str, test_ns: &str) -> Rules {
    let documented = documented_rules();
    let start = std::time::Instant::now();
    loop {
        let rules = granted(kubeconfig, ns, test_ns);
        if rules == documented || start.elapsed() > secs(10) {
            return rules;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// A TokenRequest token of `ns/sa` (1 h), written into a kubeconfig next to the test logs with
/// the admin kubeconfig's server and CA and nothing else (no client certificate). Returns its path.
pub async fn token_kubeconfig(client: &Client, ns: &str, sa: &str, test_ns: &str) -> PathBuf {
    let sas = Api::<ServiceAccount>::namespaced(client.clone(), ns);
    support::wait_until(&format!("ServiceAccount {ns}/{sa}"), secs(30), || async {
        sas.get_opt(sa).await.ok().flatten().is_some()
    })
    .await;
    let request = TokenRequest {
        spec: TokenRequestSpec { expiration_seconds: Some(3600), ..Default::default() },
        ..Default::default()
    };
    let token = sas
        .create_token_request(sa, &PostParams::default(), &request)
        .await
        .unwrap_or_else(|e| panic!("TokenRequest for {ns}/{sa}: {e}"))
        .status
        .expect("TokenRequest status")
        .token;

    let admin = Kubeconfig::read_from(support::kubeconfig_path()).expect("the admin kubeconfig");
    let context_name = admin.current_context.clone().expect("a current context");
    let context = admin
        .contexts
        .iter()
        .find(|c| c.name == context_name)
        .and_then(|c| c.context.clone())
        .expect("the current context");
    let cluster = admin.clusters.iter().find(|c| c.name == context.cluster).expect("the context's cluster");
    let user = format!("{ns}-{sa}");
    let kubeconfig = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [serde_json::to_value(cluster).expect("cluster")],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": user, "context": {"cluster": cluster.name, "user": user, "namespace": test_ns}}],
        "current-context": user,
    });
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("rbac-kubeconfigs");
    std::fs::create_dir_all(&dir).expect("kubeconfig dir");
    let path = dir.join(format!("{test_ns}.kubeconfig"));
    let yaml = serde_yaml::to_string(&kubeconfig).expect("kubeconfig YAML");
    {
        use std::{io::Write, os::unix::fs::OpenOptionsExt};
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .expect("kubeconfig file");
        file.write_all(yaml.as_bytes()).expect("write kubeconfig");
    }
    path
}

/// Waits until the token of `kubeconfig` authenticates as `user` and RBAC lets it list Deployers
/// and Deployments in `ns` (a fresh binding takes a moment to reach the authorizer's cache).
pub async fn wait_until_authorized(kubeconfig: &Path, ns: &str, user: &str) {
    let kc = Kubeconfig::read_from(kubeconfig).expect("the token kubeconfig");
    let mut config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("a config from the token kubeconfig");
    if matches!(config.cluster_url.host(), Some("127.0.0.1" | "localhost" | "[::1]")) {
        config.proxy_url = None;
    }
    let client = Client::try_from(config).expect("a client");
    let review = Api::<SelfSubjectReview>::all(client.clone())
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .expect("SelfSubjectReview with the token");
    let me = review.status.and_then(|s| s.user_info).and_then(|u| u.username);
    assert_eq!(me.as_deref(), Some(user), "the token authenticates as the ServiceAccount");
    let deployers = Api::<Deployer>::namespaced(client.clone(), ns);
    let deployments = Api::<Deployment>::namespaced(client, ns);
    let one = ListParams::default().limit(1);
    support::wait_until(
        &format!("RBAC to let {user} list Deployers and Deployments in {ns}"),
        secs(30),
        || async { deployers.list(&one).await.is_ok() && deployments.list(&one).await.is_ok() },
    )
    .await;
}

/// `to` relative to the directory `from` (kustomize refuses absolute resource paths).
pub fn relative_path(from: &Path, to: &Path) -> PathBuf {
    let from = from.canonicalize().expect("canonical from");
    let to = to.canonicalize().expect("canonical to");
    let (f, t): (Vec<Component>, Vec<Component>) = (from.components().collect(), to.components().collect());
    let common = f.iter().zip(&t).take_while(|(a, b)| a == b).count();
    let mut rel = PathBuf::new();
    for _ in common..f.len() {
        rel.push("..");
    }
    for c in &t[common..] {
        rel.push(c);
    }
    rel
}
