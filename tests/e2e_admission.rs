//! End-to-end: bad Deployer manifests are refused by `kubectl apply` against the real API server
//! (the CRD's structural schema and CEL rules), with a message naming the field, and nothing is
//! created. The seed's sample applies unchanged.

mod harness;
mod support;

use std::io::Write;

use deployer_operator::api::Deployer;
use kube::{Api, api::ListParams};

/// The seed's sample with one line replaced.
fn seed_with(from: &str, to: &str) -> String {
    let sample = include_str!("../examples/nginx-deployer.yaml");
    assert!(sample.contains(from), "the sample has {from:?}");
    sample.replacen(from, to, 1)
}

/// Runs `kubectl apply -f -` with `manifest`; returns (success, stdout + stderr).
fn kubectl_apply(ns: &str, manifest: &str) -> (bool, String) {
    let mut child = support::kubectl()
        .args(["apply", "-n", ns, "-f", "-"])
        .env("KUBECONFIG", support::kubeconfig_path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the pinned kubectl runs");
    child.stdin.take().expect("stdin").write_all(manifest.as_bytes()).expect("write manifest");
    let out = child.wait_with_output().expect("kubectl finishes");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_manifests_are_refused_with_the_field_named_and_nothing_is_created() {
    let client = support::client().await;
    harness::install_crd(&client).await;
    let ns = support::namespace(&client, "e2e-admission").await;
    // The seed's own sample names namespace "default"; this test applies into its own namespace.
    let seed =
        |from: &str, to: &str| seed_with(from, to).replace("namespace: default", &format!("namespace: {ns}"));

    let steps_as_map = seed(
        "  steps:\n    - percent: 10\n      sleep: 60\n    - percent: 30\n      sleep: 30\n    - percent: 60\n      sleep: 30\n    - percent: 100\n",
        "  steps:\n    first: {percent: 10, sleep: 60}\n",
    );
    let cases: Vec<(&str, String, &[&str])> = vec![
        ("steps as a map", steps_as_map, &["spec.steps"]),
        ("percent 0", seed("percent: 10", "percent: 0"), &["spec.steps[0].percent"]),
        ("percent 101", seed("percent: 100", "percent: 101"), &["spec.steps[3].percent"]),
        ("decreasing percents", seed("percent: 30", "percent: 5"), &["spec.steps", "strictly increase"]),
        ("equal percents", seed("percent: 30", "percent: 10"), &["spec.steps", "strictly increase"]),
        (
            "empty steps",
            seed(
                "  steps:\n    - percent: 10\n      sleep: 60\n    - percent: 30\n      sleep: 30\n    - percent: 60\n      sleep: 30\n    - percent: 100\n",
                "  steps: []\n",
            ),
            &["spec.steps"],
        ),
        ("negative sleep", seed("sleep: 60", "sleep: -1"), &["spec.steps[0].sleep"]),
        ("negative replicas", seed("replicas: 10", "replicas: -1"), &["spec.deployment.replicas"]),
        ("a float version", seed("version: 1.7.7", "version: 1.10"), &["spec.deployment.version", "string"]),
        ("an uppercase version", seed("version: 1.7.7", "version: V1"), &["spec.deployment.version"]),
        ("a version with '_'", seed("version: 1.7.7", "version: 1_7"), &["spec.deployment.version"]),
        (
            "a name that is no DNS label",
            seed("    name: nginx\n", "    name: Nginx_App\n"),
            &["spec.deployment.name"],
        ),
        ("an unknown type", seed("type: canary", "type: bluegreen"), &["spec.type", "canary"]),
        ("an image with a tag", seed("image: nginx", "image: nginx:latest"), &["spec.deployment.image"]),
        (
            "a reserved label",
            seed("app: nginx", "deploy.example.com/version: x"),
            &["spec.deployment.labels"],
        ),
        (
            "a metric without a success condition",
            seed(
                "    - percent: 100\n",
                "    - percent: 100\n  analysis:\n    metrics:\n      - {name: m, query: up}\n",
            ),
            &["spec.analysis.metrics[0]", "min, max or both"],
        ),
        (
            "a metric whose min exceeds its max",
            seed(
                "    - percent: 100\n",
                "    - percent: 100\n  analysis:\n    metrics:\n      - {name: m, query: up, min: 2, max: 1}\n",
            ),
            &["spec.analysis.metrics[0]", "min must not exceed its max"],
        ),
        (
            "two metrics of one name",
            seed(
                "    - percent: 100\n",
                "    - percent: 100\n  analysis:\n    metrics:\n      - {name: m, query: up, min: 1}\n      - {name: m, query: up, min: 1}\n",
            ),
            &["spec.analysis.metrics", "names must be unique"],
        ),
        (
            "a webhook without http(s)",
            seed(
                "    - percent: 100\n",
                "    - percent: 100\n  analysis:\n    webhooks:\n      - {name: w, url: 'ftp://x'}\n",
            ),
            &["spec.analysis.webhooks[0].url"],
        ),
        (
            "a step webhook on rollback",
            seed(
                "    - percent: 100\n",
                "    - percent: 100\n      webhooks:\n        - {name: w, url: 'http://x', type: Rollback}\n",
            ),
            &["spec.steps[3].webhooks", "BeforeStep or AfterStep"],
        ),
        (
            "an unknown gate",
            seed(
                "    - percent: 100\n",
                "    - percent: 100\n  analysis:\n    webhooks:\n      - {name: w, url: 'http://x', type: Sometimes}\n",
            ),
            &["spec.analysis.webhooks[0].type"],
        ),
        (
            "notifications without a Secret",
            seed("    - percent: 100\n", "    - percent: 100\n  notifications: {}\n"),
            &["spec.notifications.secretRef"],
        ),
        (
            "a Deployer name too long for a label",
            seed("  name: nginx\nspec", &format!("  name: {}\nspec", "n".repeat(70))),
            &["metadata.name"],
        ),
    ];

    let mut failures = Vec::new();
    for (what, manifest, expected) in &cases {
        let (ok, out) = kubectl_apply(&ns, manifest);
        let named = expected.iter().all(|e| out.contains(e));
        println!("{what}: refused={} named={named}\n  {}", !ok, out.trim().replace('\n', "\n  "));
        if ok || !named {
            failures.push(format!("{what}: accepted={ok}, expected {expected:?} in: {out}"));
        }
    }
    let dpls: Api<Deployer> = Api::namespaced(client.clone(), &ns);
    let created = dpls.list(&ListParams::default()).await.expect("list Deployers").items.len();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(created, 0, "a refused manifest left a Deployer behind");

    // And the seed's sample itself applies unchanged (into its own namespace here).
    let (ok, out) = kubectl_apply(&ns, &seed("type: canary", "type: canary"));
    assert!(ok, "the seed sample is refused: {out}");
    // Labels are immutable once set.
    let (ok, out) = kubectl_apply(&ns, &seed("app: nginx", "app: other"));
    assert!(!ok && out.contains("spec.deployment.labels") && out.contains("immutable"), "{out}");
    support::delete_namespace(&client, &ns).await;
}
