//! End-to-end RBAC: the manifests users install (`deploy/`, and the `deploy/namespaced/` overlay)
//! are applied to the local control plane, then the real operator binary runs on this machine
//! authenticated as the operator's ServiceAccount (a TokenRequest token, nothing else) and
//! completes a canary rollout. A missing permission fails the rollout; an extra or missing one
//! fails the comparison of `kubectl auth can-i --list` with the list in docs/operations.md, which
//! is also what the ClusterRole and the Role must say, so the doc, the manifests and the operator
//! cannot drift apart.
//!
//! The operator's own pod (from deploy/) is scheduled on a kwok node, which never pulls or starts
//! its image: it "runs" only on paper, and nothing here depends on it. Cluster-scoped objects from
//! deploy/ (namespace deployer-system, ClusterRole, ClusterRoleBinding) stay after the tests; they
//! are applied with server-side apply, so running the tests again, or concurrently, is harmless.

mod gates;
mod harness;
mod rbac;
mod support;

use std::{path::PathBuf, process::Stdio};

use deployer_operator::api::Phase;
use harness::{
    Operator, apply, deployer, events, install_crd, patch_spec, secs, wait_deployments, wait_phase,
};
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, api::PostParams};
use rbac::*;
use serde_json::json;

/// The cluster-wide install, as users get it: the operator, run as its ServiceAccount, completes a
/// canary rollout (and meets a name conflict) without a single forbidden request, and the
/// ServiceAccount may do exactly what docs/operations.md lists.
#[tokio::test(flavor = "multi_thread")]
async fn cluster_wide_install_lets_the_service_account_run_a_canary_rollout() {
    let client = support::client().await;
    install_crd(&client).await;
    apply_kustomization(&repo().join("deploy"));
    let ns = support::namespace(&client, "e2e-rbac").await;
    let kubeconfig = token_kubeconfig(&client, INSTALL_NAMESPACE, SERVICE_ACCOUNT, &ns).await;
    let user = format!("system:serviceaccount:{INSTALL_NAMESPACE}:{SERVICE_ACCOUNT}");
    wait_until_authorized(&kubeconfig, &ns, &user).await;

    // The permissions first: a differing list fails here with the exact difference.
    assert_eq!(
        granted_settled(&kubeconfig, &ns, &ns).await,
        documented_rules(),
        "`kubectl auth can-i --list` as {user} (minus what every ServiceAccount may do) differs from \
         the list in docs/operations.md"
    );

    let op = Operator::start_as(&ns, &kubeconfig);
    with_operator_log(&op, &user, rollout_with_a_name_conflict(&client, &ns, &[])).await;
    assert_log_clean(&op, &user);
    drop(op);
    support::delete_namespace(&client, &ns).await;
    let _ = std::fs::remove_file(&kubeconfig);
}

/// The namespace-scoped overlay, installed into a test namespace the way docs/operations.md tells
/// users to (a kustomization with `namespace:` and deploy/namespaced as its resource): a Role
/// with the same list, effective in that namespace and nowhere else, suffices for a rollout.
#[tokio::test(flavor = "multi_thread")]
async fn namespaced_overlay_lets_the_service_account_run_a_canary_rollout_in_its_namespace() {
    let client = support::client().await;
    install_crd(&client).await;
    let ns = support::namespace(&client, "e2e-rbac-ns").await;
    let overlay = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("rbac-overlays").join(&ns);
    std::fs::create_dir_all(&overlay).expect("overlay dir");
    let base = relative_path(&overlay, &repo().join("deploy/namespaced"));
    let kustomization = format!(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: {ns}\nresources:\n  - {}\n",
        base.display()
    );
    std::fs::write(overlay.join("kustomization.yaml"), kustomization).expect("write kustomization");
    apply_kustomization(&overlay);

    let kubeconfig = token_kubeconfig(&client, &ns, SERVICE_ACCOUNT, &ns).await;
    let user = format!("system:serviceaccount:{ns}:{SERVICE_ACCOUNT}");
    wait_until_authorized(&kubeconfig, &ns, &user).await;
    // Installed into the namespace it manages, the overlay's leader-election Role is there too.
    let mut expected = documented_rules();
    expected.insert(
        "leases.coordination.k8s.io".into(),
        ["create", "get", "list", "patch", "watch"].into_iter().map(String::from).collect(),
    );
    assert_eq!(granted_settled(&kubeconfig, &ns, &ns).await, expected, "permissions of {user} in {ns}");
    assert_eq!(granted(&kubeconfig, "default", &ns), Rules::new(), "{user} may do nothing outside {ns}");

    let op = Operator::start_as(&ns, &kubeconfig);
    with_operator_log(&op, &user, async {
        apply(&client, &ns, &deployer("app", "1.0.0", 3, &[(34, 1)])).await;
        wait_phase(&client, &ns, "app", Phase::Done, secs(60)).await;
        patch_spec(&client, &ns, "app", json!({"deployment": {"version": "2.0.0"}})).await;
        wait_stable(&client, &ns, "app", "2.0.0").await;
        // The operator's own (kwok) Deployment lives in this namespace too, and is left alone.
        wait_deployments(&client, &ns, &[("app-2.0.0", 3), ("deployer-operator", 2)], secs(30)).await;
    })
    .await;
    assert_log_clean(&op, &user);
    drop(op);
    support::delete_namespace(&client, &ns).await;
    let _ = std::fs::remove_file(&kubeconfig);
    let _ = std::fs::remove_dir_all(&overlay);
}

/// Notifications need `get` on their Secret, which the operator's ClusterRole does not grant:
/// without deploy/notifications/secret-reader.yaml in the Deployer's namespace the rollout goes on
/// and a Warning Event says what is missing; with it, the operator reads that one Secret (and
/// still no other) and the notifications arrive.
#[tokio::test(flavor = "multi_thread")]
async fn notifications_need_get_on_their_secret_and_nothing_more() {
    let client = support::client().await;
    install_crd(&client).await;
    apply_kustomization(&repo().join("deploy"));
    let ns = support::namespace(&client, "e2e-rbac-notify").await;
    let kubeconfig = token_kubeconfig(&client, INSTALL_NAMESPACE, SERVICE_ACCOUNT, &ns).await;
    let user = format!("system:serviceaccount:{INSTALL_NAMESPACE}:{SERVICE_ACCOUNT}");
    wait_until_authorized(&kubeconfig, &ns, &user).await;
    let receiver = gates::Receiver::start().await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    for name in ["rollout-notify", "other"] {
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": name},
            "stringData": {"webhookUrl": receiver.url("/events")}
        }))
        .expect("a Secret");
        secrets.create(&PostParams::default(), &secret).await.expect("create the Secret");
    }
    let can_get = |name: &str| {
        support::kubectl()
            .args(["auth", "can-i", "get", &format!("secrets/{name}"), "-n", &ns])
            .env("KUBECONFIG", &kubeconfig)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    assert!(!can_get("rollout-notify"), "{user} may read Secrets without the Role");

    let op = Operator::start_as(&ns, &kubeconfig);
    let mut manifest = deployer("app", "1.0.0", 2, &[(50, 1)]);
    manifest["spec"]["notifications"] = json!({"secretRef": {"name": "rollout-notify"}});
    apply(&client, &ns, &manifest).await;
    wait_phase(&client, &ns, "app", Phase::Done, secs(60)).await;
    support::wait_until("a NotificationFailed Warning", secs(30), || async {
        events(&client, &ns, "app").await.iter().any(|(t, r, note)| {
            t == "Warning"
                && r == "NotificationFailed"
                && note.contains("rollout-notify")
                && note.contains("forbidden")
        })
    })
    .await;
    assert!(receiver.at("/events").is_empty());

    kubectl(
        &support::kubeconfig_path(),
        &["apply", "-n", &ns, "-f", "deploy/notifications/secret-reader.yaml"],
    );
    support::wait_until("the Role to reach the authorizer", secs(20), || {
        std::future::ready(can_get("rollout-notify"))
    })
    .await;
    assert!(!can_get("other"), "{user} may read another Secret");
    patch_spec(&client, &ns, "app", json!({"deployment": {"version": "2.0.0"}})).await;
    wait_stable(&client, &ns, "app", "2.0.0").await;
    support::wait_until("the RolloutComplete notification", secs(30), || async {
        receiver
            .at("/events")
            .iter()
            .any(|r| r.body["reason"] == "RolloutComplete" && r.body["version"] == "2.0.0")
    })
    .await;
    drop(op);
    support::delete_namespace(&client, &ns).await;
    let _ = std::fs::remove_file(&kubeconfig);
}

/// `kubectl apply -k deploy/ --dry-run=server` (and the same for the overlay) is clean: no error,
/// and no warning — the namespace enforces and warns about the "restricted" Pod Security
/// Standard, so a pod template that breaks it would show up here as a warning.
///
/// A server-side dry run of deploy/ needs its namespace to exist already (the dry run does not
/// create it), so the namespace is applied for real first.
#[tokio::test(flavor = "multi_thread")]
async fn deploy_and_overlay_pass_a_server_side_dry_run_without_warnings() {
    let kubeconfig = support::kubeconfig_path();
    support::client().await; // fails with the "run make cluster-up" hint when there is no cluster
    let namespace_yaml = repo().join("deploy/namespace.yaml");
    kubectl(&kubeconfig, &["apply", "--server-side", "--force-conflicts", "-f", &path_str(&namespace_yaml)]);
    for dir in ["deploy", "deploy/namespaced"] {
        let (stdout, stderr) = kubectl(
            &kubeconfig,
            &["apply", "--server-side", "--force-conflicts", "--dry-run=server", "-k", dir],
        );
        let warnings: Vec<&str> = stderr.lines().filter(|l| l.starts_with("Warning:")).collect();
        assert!(warnings.is_empty(), "dry run of {dir} warned:\n{stderr}");
        for kind in ["serviceaccount/", "deployment.apps/", "service/"] {
            assert!(stdout.contains(kind), "dry run of {dir} did not apply a {kind}:\n{stdout}");
        }
    }
}

/// The manifests themselves (no cluster needed): both variants grant exactly the documented list
/// without wildcards; the namespaced one is really namespaced; the operator's Deployment is one
/// non-root replica with a read-only root filesystem, resources, and an image that is not :latest;
/// the CRD is not duplicated in deploy/.
#[test]
fn manifests_grant_the_documented_permissions_and_run_the_operator_locked_down() {
    let documented = documented_rules();
    for want in ["deployers.deploy.example.com", "deployments.apps", "events.events.k8s.io"] {
        assert!(documented.contains_key(want), "docs/operations.md lists no {want}: {documented:?}");
    }

    let cluster = render("deploy");
    let namespaced = render("deploy/namespaced");
    assert_eq!(rbac_rules(the(&cluster, "ClusterRole")), documented, "deploy/cluster_role.yaml");
    assert_eq!(
        rbac_rules(named(&namespaced, "Role", SERVICE_ACCOUNT)),
        documented,
        "deploy/namespaced/role.yaml"
    );
    // Leader election: leases in the operator's own namespace, nothing else.
    for objects in [&cluster, &namespaced] {
        let lease_role = named(objects, "Role", "deployer-operator-leader-election");
        assert_eq!(
            lease_role["rules"],
            json!([{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                    "verbs": ["get", "list", "watch", "create", "patch"]}])
        );
    }

    let binding = the(&cluster, "ClusterRoleBinding");
    assert_eq!(binding["roleRef"]["name"], the(&cluster, "ClusterRole")["metadata"]["name"]);
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": INSTALL_NAMESPACE}])
    );
    let role_binding = named(&namespaced, "RoleBinding", SERVICE_ACCOUNT);
    assert_eq!(role_binding["roleRef"]["kind"], "Role");
    let ns = role_binding["metadata"]["namespace"].clone();
    assert_eq!(
        role_binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": ns}])
    );

    for (variant, objects) in [("deploy", &cluster), ("deploy/namespaced", &namespaced)] {
        let kinds: Vec<&str> = objects.iter().filter_map(|o| o["kind"].as_str()).collect();
        assert!(!kinds.contains(&"CustomResourceDefinition"), "{variant} duplicates the CRD (make install)");
        assert!(!kinds.contains(&"Secret"), "{variant}: {kinds:?}");
        let deployment = the(objects, "Deployment");
        let pod = &deployment["spec"]["template"]["spec"];
        // Two replicas only with leader election on; never more than one reconciling.
        assert_eq!(deployment["spec"]["replicas"], 2, "{variant}");
        let args = pod["containers"][0]["args"].as_array().expect("args");
        assert!(args.iter().any(|a| a == "--leader-elect"), "{variant}: two replicas need --leader-elect");
        assert_eq!(pod["serviceAccountName"], SERVICE_ACCOUNT, "{variant}");
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{variant}");
        assert_eq!(pod["securityContext"]["runAsUser"], dockerfile_uid(), "{variant}: the image's USER");
        assert_eq!(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault", "{variant}");
        let containers = pod["containers"].as_array().expect("containers");
        assert_eq!(containers.len(), 1, "{variant}");
        let c = &containers[0];
        let image = c["image"].as_str().expect("image");
        let tag = image.rsplit('/').next().and_then(|n| n.split_once(':')).map(|(_, t)| t);
        assert!(
            tag.is_some_and(|t| !t.is_empty() && t != "latest"),
            "{variant}: image {image} needs a tag, not :latest"
        );
        assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true, "{variant}");
        assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false, "{variant}");
        assert_eq!(c["securityContext"]["capabilities"]["drop"], json!(["ALL"]), "{variant}");
        for field in ["requests", "limits"] {
            assert!(c["resources"][field]["memory"].is_string(), "{variant}: resources.{field}.memory");
        }
        assert_eq!(c["ports"], json!([{"name": "metrics", "containerPort": 8080, "protocol": "TCP"}]));
        let service = the(objects, "Service");
        assert_eq!(service["spec"]["ports"][0]["targetPort"], "metrics", "{variant}");
        let watch = c["env"].as_array().into_iter().flatten().find(|e| e["name"] == "WATCH_NAMESPACE");
        match variant {
            "deploy" => {
                assert!(watch.is_none(), "the cluster-wide operator watches every namespace");
                assert!(kinds.contains(&"Namespace"), "{kinds:?}");
            }
            _ => {
                let watch = watch.expect("the namespaced operator sets WATCH_NAMESPACE");
                assert_eq!(watch["valueFrom"]["fieldRef"]["fieldPath"], "metadata.namespace");
                for kind in ["Namespace", "ClusterRole", "ClusterRoleBinding"] {
                    assert!(!kinds.contains(&kind), "deploy/namespaced must not carry a {kind}");
                }
            }
        }
    }
}
