//! Shared helpers for the end-to-end tests in `tests/*.rs` (each test file does `mod support;`).
//!
//! The tests run against the local control plane of `tests/cluster/cluster.sh` (`make cluster-up`):
//! real kube-apiserver, etcd, controller manager and scheduler, with kwok faking nodes and pods.
//! They never skip: without a reachable cluster every test fails with a message saying what to run.
//!
//! TLS: kube is built with rustls + ring only, so rustls picks ring as its process-wide provider by
//! itself; no explicit `install_default()` (and no direct rustls dependency) is needed.

// Each test file compiles this module separately and uses only some helpers; the rest would warn.
#![allow(dead_code)]

use std::{
    future::Future,
    path::PathBuf,
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::{
    Api, Client, Config,
    api::{DeleteParams, ObjectMeta, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
};

/// Path of the kubeconfig the tests use: `$KUBECONFIG` if set, else `<repo>/.cluster/kubeconfig`
/// (where `make cluster-up` writes it).
pub fn kubeconfig_path() -> PathBuf {
    match std::env::var_os("KUBECONFIG") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".cluster/kubeconfig"),
    }
}

/// The pinned `name` (see [`tool`]) as a command run from the repository, on the tests'
/// kubeconfig, with no stdin; helm keeps its config, cache and data under target/.
pub fn tool_command(name: &str) -> std::process::Command {
    let helm_home = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("helm-home");
    let mut command = std::process::Command::new(tool(name));
    command
        .env("KUBECONFIG", kubeconfig_path())
        .env("HELM_CONFIG_HOME", helm_home.join("config"))
        .env("HELM_CACHE_HOME", helm_home.join("cache"))
        .env("HELM_DATA_HOME", helm_home.join("data"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(std::process::Stdio::null());
    command
}

/// Runs the pinned `name` with `args` (as [`tool_command`]); panics unless it succeeds. Returns
/// (stdout, stderr).
pub fn run_tool(name: &str, args: &[&str]) -> (String, String) {
    let out = tool_command(name).args(args).output().unwrap_or_else(|e| panic!("running {name}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{name} {} failed ({}):\n{stdout}\n{stderr}", args.join(" "), out.status);
    (stdout, stderr)
}

/// The pinned build of a tool the tests run: `kubectl`, `helm` or `prometheus`. The path comes from
/// the environment variable of its name in capitals (`KUBECTL`, `HELM`, `PROMETHEUS`; the Makefile
/// sets them), else it is the cache path `tests/cluster/build.sh` builds it into, at the version
/// pinned in `tests/cluster/versions.env`. Never the one on `PATH`: the tests run what `make test`
/// built, whatever the machine has. Panics, saying what to run, when the binary is missing.
pub fn tool(name: &str) -> PathBuf {
    let var = name.to_uppercase();
    let path = match std::env::var_os(&var) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => pinned_tool(name),
    };
    if !path.is_file() {
        panic!(
            "{name} not found at {} ({var} or the pinned cache path): run `make tools` \
             (tests/cluster/build.sh kubectl helm prometheus), which `make test` runs first",
            path.display()
        );
    }
    path
}

/// Where `tests/cluster/build.sh` puts `name`: `$DEPLOYER_CACHE` (default
/// `~/.cache/deployer-operator`), then `k8s-<K8S_VERSION>/kubectl`, `helm-<HELM_VERSION>/helm` or
/// `prometheus-<PROMETHEUS_VERSION>/prometheus`.
fn pinned_tool(name: &str) -> PathBuf {
    let versions = include_str!("../cluster/versions.env");
    let version = |key: &str| -> String {
        versions
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .unwrap_or_else(|| panic!("tests/cluster/versions.env has no {key}"))
            .trim()
            .to_string()
    };
    let dir = match name {
        "kubectl" => format!("k8s-{}", version("K8S_VERSION")),
        "helm" => format!("helm-{}", version("HELM_VERSION")),
        "prometheus" => format!("prometheus-{}", version("PROMETHEUS_VERSION")),
        other => panic!("no pinned build of {other}"),
    };
    let cache = match std::env::var_os("DEPLOYER_CACHE") {
        Some(c) if !c.is_empty() => PathBuf::from(c),
        _ => PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/deployer-operator"),
    };
    cache.join(dir).join(name)
}

/// A `Command` for the pinned kubectl (see [`tool`]).
pub fn kubectl() -> std::process::Command {
    std::process::Command::new(tool("kubectl"))
}

/// The admin client configuration of the local cluster. Panics if the kubeconfig is missing or
/// unusable.
pub async fn config() -> Config {
    let path = kubeconfig_path();
    let hint = format!("local control plane not reachable at {}: run `make cluster-up`", path.display());
    if !path.is_file() {
        panic!("{hint} (kubeconfig file missing)");
    }
    let kubeconfig = Kubeconfig::read_from(&path).unwrap_or_else(|e| panic!("{hint} (bad kubeconfig: {e})"));
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{hint} (bad kubeconfig: {e})"));
    // kube takes HTTPS_PROXY from the environment (and ignores NO_PROXY without its proxy
    // features); a loopback apiserver is never reached through a proxy.
    if matches!(config.cluster_url.host(), Some("127.0.0.1" | "localhost" | "[::1]")) {
        config.proxy_url = None;
    }
    config
}

/// An admin client for the local cluster. Panics (never skips) if the kubeconfig is missing or the
/// apiserver does not answer within 10 s.
pub async fn client() -> Client {
    let path = kubeconfig_path();
    let hint = format!("local control plane not reachable at {}: run `make cluster-up`", path.display());
    let client = Client::try_from(config().await).unwrap_or_else(|e| panic!("{hint} ({e})"));
    match tokio::time::timeout(Duration::from_secs(10), client.apiserver_version()).await {
        Ok(Ok(_)) => client,
        Ok(Err(e)) => panic!("{hint} ({e})"),
        Err(_) => panic!("{hint} (no answer within 10s)"),
    }
}

/// A name unique across tests, test processes and runs: `<prefix>-<pid>-<counter><time>`, with the
/// prefix shortened if needed so that the name fits a DNS label (63 characters).
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let t = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() % 1_000_000;
    let suffix = format!("-{:x}-{n}{t:05}", std::process::id());
    let keep = 63usize.saturating_sub(suffix.len()).min(prefix.len());
    format!("{}{suffix}", prefix[..keep].trim_end_matches('-'))
}

/// Creates a fresh, uniquely named namespace (`<prefix>-…`) and waits until its `default`
/// ServiceAccount exists (Pods are rejected before that). Returns its name.
pub async fn namespace(client: &Client, prefix: &str) -> String {
    let name = unique_name(prefix);
    let ns = Namespace {
        metadata: ObjectMeta { name: Some(name.clone()), ..Default::default() },
        ..Default::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
    let sas = Api::<ServiceAccount>::namespaced(client.clone(), &name);
    wait_until(&format!("ServiceAccount {name}/default"), Duration::from_secs(30), || async {
        sas.get_opt("default").await.ok().flatten().is_some()
    })
    .await;
    name
}

/// Deletes a namespace (best effort; kwok deletes its pods, the controller manager the rest).
pub async fn delete_namespace(client: &Client, name: &str) {
    let _ = Api::<Namespace>::all(client.clone()).delete(name, &DeleteParams::default()).await;
}

/// Polls `f` every 100 ms until it returns true; panics with `what` after `timeout`.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if f().await {
            return;
        }
        if start.elapsed() >= timeout {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the CustomResourceDefinition `name` is Established.
pub async fn wait_crd_established(client: &Client, name: &str) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    wait_until(&format!("CRD {name} Established"), Duration::from_secs(30), || async {
        crds.get(name)
            .await
            .ok()
            .and_then(|c| c.status)
            .and_then(|s| s.conditions)
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Established" && c.status == "True"))
    })
    .await;
}
