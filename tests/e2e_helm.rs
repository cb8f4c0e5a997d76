//! The Helm chart, deploy/helm/deployer-operator, against the kustomize manifests it mirrors, with
//! the pinned helm CLI (tests/cluster/build.sh helm):
//!
//! - offline: `helm lint --strict`; its CRD is byte for byte crds/deployer.yaml; `helm template`
//!   with the default values renders exactly the objects of `kubectl kustomize deploy/` but the
//!   Namespace, with `watchNamespaces=[<release namespace>]` exactly those of deploy/namespaced/,
//!   and its notification and ServiceMonitor objects are those of deploy/notifications/ and
//!   deploy/monitoring/; the ClusterRole and every Role grant exactly docs/operations.md's list;
//!   bad values are refused;
//! - on the local control plane: `helm install` (cluster-wide, and for one namespace) creates the
//!   objects; the ServiceAccount it creates may do exactly what deploy/'s may (`kubectl auth can-i
//!   --list --as=…` of both) and what docs/operations.md lists; the operator binary, run on this
//!   machine with that ServiceAccount's own token, completes a canary rollout; `helm upgrade`
//!   changes the Deployment and prunes what the new values drop; `helm uninstall` leaves nothing
//!   behind but the CRD.
//!
//! The installed operator's pods land on kwok nodes, which run no container: they are Running on
//! paper only. The rollout is therefore driven by the binary under the release's ServiceAccount,
//! in [`rollout_under_the_release`]; once the local cluster has a real node that runs the image,
//! that function is where the rollout moves to the installed pods themselves (install with the
//! image loaded there, wait for the Deployment, then the same rollout with no local operator).

mod gates;
mod harness;
mod rbac;
mod support;

use std::{collections::BTreeMap, process::Output};

use harness::{Operator, install_crd, secs};
use k8s_openapi::api::apps::v1::Deployment;
use kube::{Api, Client};
use rbac::{
    Rules, assert_log_clean, can_i_list, documented_rules, named, rbac_rules, render, repo,
    rollout_with_a_name_conflict, the, token_kubeconfig, wait_until_authorized, with_operator_log,
};
use serde::Deserialize;
use serde_json::{Value, json};

const CHART: &str = "deploy/helm/deployer-operator";
/// The release name that names every object as deploy/ does.
const RELEASE: &str = "deployer-operator";

// ------------------------------------------------------------------------------------ offline

/// The chart's crds/ holds the generated CRD, unchanged (`make crds` writes both).
#[test]
fn the_chart_carries_the_generated_crd_unchanged() {
    let generated = std::fs::read_to_string(repo().join("crds/deployer.yaml")).expect("crds/deployer.yaml");
    let in_chart =
        std::fs::read_to_string(repo().join(CHART).join("crds/deployer.yaml")).expect("the chart's CRD");
    assert!(
        generated == in_chart,
        "{CHART}/crds/deployer.yaml differs from crds/deployer.yaml: run `make crds`"
    );
    let files: Vec<String> = std::fs::read_dir(repo().join(CHART).join("crds"))
        .expect("the chart's crds/")
        .map(|e| e.expect("an entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files, ["deployer.yaml"], "the chart's crds/ holds the one CRD");
}

/// `helm lint --strict` passes with the default values and with every optional part switched on.
#[test]
fn helm_lint_passes_with_the_defaults_and_every_variant() {
    for sets in [
        &[][..],
        &["watchNamespaces={team-a,team-b}"],
        &["replicas=1", "leaderElection.enabled=false"],
        &[
            "metrics.serviceMonitor.enabled=true",
            "notifications.secretAccess[0].namespace=apps",
            "notifications.secretAccess[0].secretNames={rollout-notify}",
        ],
        &["image.digest=sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"],
    ] {
        let mut args = vec!["lint", "--strict", CHART];
        for set in sets {
            args.extend(["--set", set]);
        }
        let (stdout, _) = helm(&args);
        assert!(stdout.contains("1 chart(s) linted, 0 chart(s) failed"), "helm {args:?}:\n{stdout}");
    }
}

/// The defaults render deploy/'s objects exactly, but for the Namespace: a chart installs into the
/// release's namespace, which Helm needs before it installs anything (it keeps the release
/// there), so the chart cannot create it. Nothing else differs: same names, labels, rules,
/// Deployment; Helm's own label and annotations are added at install time, not rendered.
#[test]
fn the_default_render_equals_kustomize_deploy_but_for_the_namespace() {
    let chart = by_key(template(RELEASE, "deployer-system", &[]));
    let mut kustomize = by_key(render("deploy"));
    let namespace = kustomize.remove(&key_of("Namespace", "", "deployer-system"));
    assert!(namespace.is_some(), "deploy/ has the Namespace deployer-system");
    assert_same_objects(&chart, &kustomize, "helm template (defaults)", "kubectl kustomize deploy/");
}

/// For one namespace, the release's own, the render is exactly deploy/namespaced/'s.
#[test]
fn the_release_namespace_render_equals_the_namespaced_overlay() {
    let chart = by_key(template(RELEASE, "default", &["watchNamespaces={default}"]));
    let kustomize = by_key(render("deploy/namespaced"));
    assert_same_objects(&chart, &kustomize, "helm template watchNamespaces={default}", "deploy/namespaced/");
}

/// notifications.secretAccess renders deploy/notifications/secret-reader.yaml (applied in the
/// namespace named); metrics.serviceMonitor.enabled renders deploy/monitoring's ServiceMonitor.
#[test]
fn notification_and_monitoring_values_render_the_optional_manifests() {
    let chart = by_key(template(
        RELEASE,
        "deployer-system",
        &[
            "notifications.secretAccess[0].namespace=apps",
            "notifications.secretAccess[0].secretNames={rollout-notify}",
            "metrics.serviceMonitor.enabled=true",
        ],
    ));
    let reader = std::fs::read_to_string(repo().join("deploy/notifications/secret-reader.yaml"))
        .expect("secret-reader.yaml");
    let mut expected = BTreeMap::new();
    for mut object in parse_yaml(&reader) {
        object["metadata"]["namespace"] = json!("apps");
        expected.insert(key(&object), object);
    }
    let monitoring = render("deploy/monitoring");
    let monitor = the(&monitoring, "ServiceMonitor").clone();
    expected.insert(key(&monitor), monitor);
    let got: BTreeMap<String, Value> = chart.into_iter().filter(|(k, _)| expected.contains_key(k)).collect();
    assert_same_objects(&got, &expected, "helm template (notifications, ServiceMonitor)", "deploy/");

    // Several Secrets in several namespaces: one Role each, naming only those Secrets.
    let objects = template(
        RELEASE,
        "deployer-system",
        &[
            "notifications.secretAccess[0].namespace=a",
            "notifications.secretAccess[0].secretNames={s1,s2}",
            "notifications.secretAccess[1].namespace=b",
            "notifications.secretAccess[1].secretNames={s3}",
        ],
    );
    let roles: Vec<(Value, Value)> = objects
        .iter()
        .filter(|o| o["kind"] == "Role" && o["metadata"]["name"] == "deployer-operator-notifications")
        .map(|o| (o["metadata"]["namespace"].clone(), o["rules"].clone()))
        .collect();
    let rule = |names: Value| json!([{"apiGroups": [""], "resources": ["secrets"], "resourceNames": names, "verbs": ["get"]}]);
    assert_eq!(roles, [(json!("a"), rule(json!(["s1", "s2"]))), (json!("b"), rule(json!(["s3"])))]);
}

/// The ClusterRole (no watchNamespaces) and each Role (watchNamespaces) grant exactly the list in
/// docs/operations.md, bound to the release's ServiceAccount; the operator watches what the Roles
/// cover; leader election adds its Role in the release's namespace only, and only when on.
#[test]
fn cluster_role_and_roles_grant_the_documented_permissions() {
    let documented = documented_rules();
    let subject = json!([{"kind": "ServiceAccount", "name": "deployer-operator", "namespace": "ops"}]);

    let cluster = template(RELEASE, "ops", &[]);
    assert_eq!(rbac_rules(the(&cluster, "ClusterRole")), documented, "the ClusterRole");
    assert_eq!(the(&cluster, "ClusterRoleBinding")["subjects"], subject);
    assert!(!cluster.iter().any(|o| o["kind"] == "Role" && o["metadata"]["name"] == "deployer-operator"));
    assert_eq!(watch_namespace(&cluster), None, "cluster-wide: every namespace");

    let namespaced = template(RELEASE, "ops", &["watchNamespaces={team-a,team-b,team-a}"]);
    for kind in ["ClusterRole", "ClusterRoleBinding"] {
        assert!(!namespaced.iter().any(|o| o["kind"] == kind), "watchNamespaces: no {kind}");
    }
    let roles: Vec<&Value> = namespaced
        .iter()
        .filter(|o| o["kind"] == "Role" && o["metadata"]["name"] == "deployer-operator")
        .collect();
    let role_namespaces: Vec<&Value> = roles.iter().map(|r| &r["metadata"]["namespace"]).collect();
    assert_eq!(role_namespaces, [&json!("team-a"), &json!("team-b")], "one Role per watched namespace");
    for role in roles {
        assert_eq!(rbac_rules(role), documented, "Role in {}", role["metadata"]["namespace"]);
    }
    for ns in ["team-a", "team-b"] {
        let binding = namespaced
            .iter()
            .find(|o| o["kind"] == "RoleBinding" && o["metadata"]["namespace"] == ns)
            .unwrap_or_else(|| panic!("no RoleBinding in {ns}"));
        assert_eq!(
            binding["roleRef"],
            json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
            "name": "deployer-operator"})
        );
        assert_eq!(binding["subjects"], subject);
    }
    assert_eq!(
        watch_namespace(&namespaced),
        Some(json!({"name": "WATCH_NAMESPACE", "value": "team-a,team-b"}))
    );

    let leases = json!([{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                         "verbs": ["get", "list", "watch", "create", "patch"]}]);
    let lease_role = named(&cluster, "Role", "deployer-operator-leader-election");
    assert_eq!(lease_role["metadata"]["namespace"], "ops");
    assert_eq!(lease_role["rules"], leases);
    let single = template(RELEASE, "ops", &["replicas=1", "leaderElection.enabled=false"]);
    assert!(!single.iter().any(|o| o["metadata"]["name"] == "deployer-operator-leader-election"));
    let deployment = the(&single, "Deployment");
    assert_eq!(deployment["spec"]["replicas"], 1);
    assert_eq!(deployment["spec"]["template"]["spec"]["containers"][0]["args"], json!(["run"]));
}

/// Values that would make a broken or unsafe install are refused with a message.
#[test]
fn the_chart_refuses_values_that_cannot_work() {
    for (sets, message) in [
        (&["image.tag=latest"][..], "image.tag must be an explicit tag"),
        (&["image.tag="], "image.tag must be an explicit tag"),
        (&["image.digest=md5:00"], "image.digest must look like sha256"),
        (&["leaderElection.enabled=false"], "replicas > 1 needs leaderElection.enabled"),
        (
            &["metrics.service.enabled=false", "metrics.serviceMonitor.enabled=true"],
            "needs metrics.service.enabled",
        ),
        (&["notifications.secretAccess[0].namespace=apps"], "needs a namespace and secretNames"),
    ] {
        let mut args = vec!["template", RELEASE, CHART, "-n", "ops"];
        for set in sets {
            args.extend(["--set", set]);
        }
        let out = helm_output(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "helm {args:?} rendered:\n{}", String::from_utf8_lossy(&out.stdout));
        assert!(stderr.contains(message), "helm {args:?}: expected {message:?} in:\n{stderr}");
    }
    // A digest wins over the tag.
    let digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let set = format!("image.digest={digest}");
    let objects =
        template(RELEASE, "ops", &["image.repository=registry.example.com/deployer-operator", &set]);
    assert_eq!(
        the(&objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]["image"],
        format!("registry.example.com/deployer-operator@{digest}")
    );
}

// ------------------------------------------------------------------------ on the control plane

/// `helm install` with the default values (cluster-wide) into a fresh namespace: the objects are
/// created and the Deployment becomes available (on kwok nodes); the release's ServiceAccount may
/// do exactly what deploy/'s may, which is docs/operations.md's list; the operator, run with its
/// token, completes a rollout; `helm upgrade` switches leader election off and prunes its Role;
/// `helm uninstall` removes every object it created.
#[tokio::test(flavor = "multi_thread")]
async fn helm_install_cluster_wide_grants_what_kustomize_grants_and_uninstalls_cleanly() {
    let client = support::client().await;
    install_crd(&client).await;
    // The kustomize install to compare with (server-side apply: idempotent, shared with e2e_rbac).
    rbac::apply_kustomization(&repo().join("deploy"));
    let ns = support::namespace(&client, "e2e-helm").await;
    let apps = support::namespace(&client, "e2e-helm-apps").await;
    // A release named after its namespace: cluster-scoped names (<release>-deployer-operator) are
    // unique to this test.
    let release = ns.clone();
    let fullname = format!("{release}-deployer-operator");
    let installed = helm_install(&release, &ns, &[]);
    assert_installed(&client, &ns, &installed, &fullname).await;
    assert_eq!(the(&installed, "ClusterRole")["metadata"]["name"], fullname);

    let helm_user = format!("system:serviceaccount:{ns}:{fullname}");
    let kustomize_user = "system:serviceaccount:deployer-system:deployer-operator";
    let mut with_leases = documented_rules();
    with_leases
        .insert("leases.coordination.k8s.io".into(), set(&["create", "get", "list", "patch", "watch"]));
    // In a namespace of applications both may do the documented list, and nothing else.
    assert_eq!(
        granted_as(&helm_user, &apps, &documented_rules()).await,
        documented_rules(),
        "{helm_user} in {apps}"
    );
    assert_eq!(
        granted_as(kustomize_user, &apps, &documented_rules()).await,
        documented_rules(),
        "{kustomize_user}"
    );
    // In its own namespace each may also hold the leader-election Lease.
    assert_eq!(granted_as(&helm_user, &ns, &with_leases).await, with_leases, "{helm_user} in {ns}");
    assert_eq!(granted_as(kustomize_user, "deployer-system", &with_leases).await, with_leases);

    rollout_under_the_release(&client, &ns, &fullname, &apps, &[]).await;

    // An upgrade to one replica without leader election: the Deployment follows, the Lease Role goes.
    let upgraded = helm(&[
        "upgrade",
        &release,
        CHART,
        "-n",
        &ns,
        "--reuse-values",
        "--set",
        "replicas=1",
        "--set",
        "leaderElection.enabled=false",
        "--wait",
        "--timeout",
        "120s",
    ]);
    eprintln!("{}", upgraded.0);
    let deployment = kubectl_json(&["get", "deployment", &fullname, "-n", &ns]);
    assert_eq!(deployment["spec"]["replicas"], 1);
    assert_eq!(deployment["spec"]["template"]["spec"]["containers"][0]["args"], json!(["run"]));
    assert!(
        !exists("role", &format!("{fullname}-leader-election"), Some(&ns)),
        "the upgrade pruned the Role"
    );

    helm_uninstall_leaves_nothing(&release, &ns, &installed).await;
    support::delete_namespace(&client, &apps).await;
    support::delete_namespace(&client, &ns).await;
}

/// `helm install --set watchNamespaces={<its namespace>}`: a Role, no cluster-wide object; the
/// ServiceAccount may do the documented list (and hold its Lease) there and nothing elsewhere; the
/// operator with its token completes a rollout there; `helm uninstall` is clean.
#[tokio::test(flavor = "multi_thread")]
async fn helm_install_for_one_namespace_grants_only_there_and_uninstalls_cleanly() {
    let client = support::client().await;
    install_crd(&client).await;
    let ns = support::namespace(&client, "e2e-helm-ns").await;
    let release = ns.clone();
    let fullname = format!("{release}-deployer-operator");
    let set = format!("watchNamespaces={{{ns}}}");
    let installed = helm_install(&release, &ns, &[&set]);
    assert_installed(&client, &ns, &installed, &fullname).await;
    for kind in ["ClusterRole", "ClusterRoleBinding"] {
        assert!(!installed.iter().any(|o| o["kind"] == kind), "watchNamespaces installed a {kind}");
    }

    let user = format!("system:serviceaccount:{ns}:{fullname}");
    let mut with_leases = documented_rules();
    with_leases
        .insert("leases.coordination.k8s.io".into(), self::set(&["create", "get", "list", "patch", "watch"]));
    assert_eq!(granted_as(&user, &ns, &with_leases).await, with_leases, "{user} in {ns}");
    assert_eq!(granted_as(&user, "default", &Rules::new()).await, Rules::new(), "{user} outside {ns}");

    rollout_under_the_release(&client, &ns, &fullname, &ns, &[(fullname.as_str(), 2)]).await;
    helm_uninstall_leaves_nothing(&release, &ns, &installed).await;
    support::delete_namespace(&client, &ns).await;
}

/// A canary rollout (with a name conflict) of Deployers in `apps`, reconciled under the release's
/// ServiceAccount `ns/sa` with nothing but its own token: a missing permission fails it, and the
/// operator's log must show no forbidden request. `others`: the Deployments already in `apps`
/// (the release's own, when `apps` is its namespace), which must stay as they are.
///
/// Today the operator runs here as a local process (the release's pods are on kwok nodes, which
/// run nothing). Once the local cluster has a real node running the image, this is the place to
/// drive the same rollout through the installed pods instead.
async fn rollout_under_the_release(client: &Client, ns: &str, sa: &str, apps: &str, others: &[(&str, i32)]) {
    let kubeconfig = token_kubeconfig(client, ns, sa, apps).await;
    let user = format!("system:serviceaccount:{ns}:{sa}");
    wait_until_authorized(&kubeconfig, apps, &user).await;
    let op = Operator::start_as(apps, &kubeconfig);
    with_operator_log(&op, &user, rollout_with_a_name_conflict(client, apps, others)).await;
    assert_log_clean(&op, &user);
    drop(op);
    let _ = std::fs::remove_file(&kubeconfig);
}

/// Installs the chart as `release` into `ns` (which exists) with `--set`s and waits until its
/// Deployment is available; returns the objects Helm installed (`helm get manifest`).
fn helm_install(release: &str, ns: &str, sets: &[&str]) -> Vec<Value> {
    let mut args = vec!["install", release, CHART, "-n", ns, "--wait", "--timeout", "120s"];
    for set in sets {
        args.extend(["--set", set]);
    }
    let (stdout, _) = helm(&args);
    assert!(stdout.contains("STATUS: deployed"), "helm install:\n{stdout}");
    let (manifest, _) = helm(&["get", "manifest", release, "-n", ns]);
    let objects = parse_yaml(&manifest);
    assert!(!objects.is_empty(), "helm get manifest {release}: nothing installed");
    objects
}

/// Every object of the release exists, carries Helm's ownership marks, and equals what
/// `helm template` renders for the same values in its spec; the Deployment is available.
async fn assert_installed(client: &Client, ns: &str, installed: &[Value], fullname: &str) {
    let kinds: Vec<&str> = installed.iter().filter_map(|o| o["kind"].as_str()).collect();
    for kind in ["ServiceAccount", "Deployment", "Service", "Role", "RoleBinding"] {
        assert!(kinds.contains(&kind), "the release has no {kind}: {kinds:?}");
    }
    for object in installed {
        let kind = object["kind"].as_str().expect("a kind");
        let name = object["metadata"]["name"].as_str().expect("a name");
        let namespace = object["metadata"]["namespace"].as_str();
        let mut args = vec!["get", kind, name];
        if let Some(n) = namespace {
            args.extend(["-n", n]);
        }
        let live = kubectl_json(&args);
        assert_eq!(live["metadata"]["labels"]["app.kubernetes.io/managed-by"], "Helm", "{kind}/{name}");
        assert_eq!(live["metadata"]["annotations"]["meta.helm.sh/release-namespace"], ns, "{kind}/{name}");
        for (k, v) in object["metadata"]["labels"].as_object().expect("labels") {
            assert_eq!(&live["metadata"]["labels"][k], v, "{kind}/{name}: label {k}");
        }
        for field in ["rules", "roleRef", "subjects"] {
            if !object[field].is_null() {
                assert_eq!(live[field], object[field], "{kind}/{name}: {field}");
            }
        }
    }
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let deployment = deployments.get(fullname).await.expect("the operator's Deployment");
    let want = deployment.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let available = deployment.status.as_ref().and_then(|s| s.available_replicas).unwrap_or(0);
    assert_eq!(available, want, "helm install --wait returned before the Deployment was available");
    let sa = deployment.spec.and_then(|s| s.template.spec).and_then(|p| p.service_account_name);
    assert_eq!(sa.as_deref(), Some(fullname));
}

/// `helm uninstall`: the release and every object it installed are gone (the CRD stays: Helm never
/// deletes crds/).
async fn helm_uninstall_leaves_nothing(release: &str, ns: &str, installed: &[Value]) {
    let (stdout, _) = helm(&["uninstall", release, "-n", ns, "--wait", "--timeout", "120s"]);
    assert!(stdout.contains("uninstalled"), "helm uninstall:\n{stdout}");
    let mut left = Vec::new();
    support::wait_until("the release's objects to be deleted", secs(60), || {
        left = installed
            .iter()
            .filter(|o| {
                exists(
                    o["kind"].as_str().expect("a kind"),
                    o["metadata"]["name"].as_str().expect("a name"),
                    o["metadata"]["namespace"].as_str(),
                )
            })
            .map(|o| {
                format!(
                    "{}/{}",
                    o["kind"].as_str().unwrap_or(""),
                    o["metadata"]["name"].as_str().unwrap_or("")
                )
            })
            .collect();
        std::future::ready(left.is_empty())
    })
    .await;
    let every_state =
        ["--deployed", "--failed", "--pending", "--superseded", "--uninstalled", "--uninstalling"];
    let mut args = vec!["list", "-n", ns, "-q"];
    args.extend(every_state);
    let (list, _) = helm(&args);
    assert_eq!(list.trim(), "", "helm list after uninstall");
    let secrets = kubectl_json(&["get", "secrets", "-n", ns, "-l", "owner=helm"]);
    assert_eq!(secrets["items"], json!([]), "the release's history is gone");
    assert!(exists("crd", "deployers.deploy.example.com", None), "the CRD stays");
}

/// What `user` may do in `ns` beyond every ServiceAccount (kubectl auth can-i --list --as=…, as the
/// admin), once it equals `expected` or after 10 s (a fresh binding takes a moment to reach the
/// authorizer).
async fn granted_as(user: &str, ns: &str, expected: &Rules) -> Rules {
    let admin = support::kubeconfig_path();
    let baseline = can_i_list(&admin, ns, Some("system:serviceaccount:default:rbac-baseline"));
    let start = std::time::Instant::now();
    loop {
        let mut rules = can_i_list(&admin, ns, Some(user));
        for (resource, verbs) in &baseline {
            if let Some(mine) = rules.get_mut(resource) {
                mine.retain(|v| !verbs.contains(v));
            }
        }
        rules.retain(|_, verbs| !verbs.is_empty());
        if &rules == expected || start.elapsed() > secs(10) {
            return rules;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

// ------------------------------------------------------------------------------------ helpers

/// Runs the pinned helm with its own config, cache and data directories under target/ and the
/// tests' kubeconfig; panics unless it succeeds. Returns (stdout, stderr).
fn helm(args: &[&str]) -> (String, String) {
    support::run_tool("helm", args)
}

fn helm_output(args: &[&str]) -> Output {
    support::tool_command("helm").args(args).output().unwrap_or_else(|e| panic!("running helm: {e}"))
}

/// `helm template <release> CHART -n <ns> --set …`: the objects.
fn template(release: &str, ns: &str, sets: &[&str]) -> Vec<Value> {
    let mut args = vec!["template", release, CHART, "-n", ns];
    for set in sets {
        args.extend(["--set", set]);
    }
    let (yaml, _) = helm(&args);
    parse_yaml(&yaml)
}

/// The objects of a multi-document YAML stream (documents that are only comments are skipped).
fn parse_yaml(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("bad YAML: {e}\n{yaml}")))
        .filter(|v| !v.is_null())
        .collect()
}

fn key_of(kind: &str, namespace: &str, name: &str) -> String {
    format!("{kind} {namespace}/{name}")
}

fn key(object: &Value) -> String {
    key_of(
        object["kind"].as_str().unwrap_or_default(),
        object["metadata"]["namespace"].as_str().unwrap_or_default(),
        object["metadata"]["name"].as_str().unwrap_or_default(),
    )
}

fn by_key(objects: Vec<Value>) -> BTreeMap<String, Value> {
    let mut map = BTreeMap::new();
    for object in objects {
        let k = key(&object);
        assert!(map.insert(k.clone(), object).is_none(), "{k} twice");
    }
    map
}

/// The two sets of objects are the same: same keys, and each object equal as parsed data.
fn assert_same_objects(
    got: &BTreeMap<String, Value>,
    want: &BTreeMap<String, Value>,
    got_name: &str,
    want_name: &str,
) {
    let got_keys: Vec<&String> = got.keys().collect();
    let want_keys: Vec<&String> = want.keys().collect();
    assert_eq!(got_keys, want_keys, "{got_name} vs {want_name}: different objects");
    for (k, object) in got {
        assert!(
            object == &want[k],
            "{got_name} vs {want_name}: {k} differs\n--- {got_name}\n{}\n--- {want_name}\n{}",
            serde_yaml::to_string(object).unwrap_or_default(),
            serde_yaml::to_string(&want[k]).unwrap_or_default()
        );
    }
}

/// The Deployment's WATCH_NAMESPACE variable, if any.
fn watch_namespace(objects: &[Value]) -> Option<Value> {
    let env = &the(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"];
    env.as_array()?.iter().find(|e| e["name"] == "WATCH_NAMESPACE").cloned()
}

fn set(verbs: &[&str]) -> std::collections::BTreeSet<String> {
    verbs.iter().map(|v| v.to_string()).collect()
}

/// `kubectl <args> -o json` as the admin, parsed; panics unless it succeeds.
fn kubectl_json(args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    let (stdout, _) = rbac::kubectl(&support::kubeconfig_path(), &all);
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("kubectl {args:?}: {e}"))
}

/// Whether `kind/name` (in `namespace`) exists and is not being deleted.
fn exists(kind: &str, name: &str, namespace: Option<&str>) -> bool {
    let mut args = vec!["get", kind, name, "--ignore-not-found", "-o", "json"];
    if let Some(n) = namespace {
        args.extend(["-n", n]);
    }
    let out = support::tool_command("kubectl").args(&args).output().expect("kubectl runs");
    assert!(out.status.success(), "kubectl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    if text.trim().is_empty() {
        return false;
    }
    let object: Value = serde_json::from_str(&text).expect("JSON");
    object["metadata"]["deletionTimestamp"].is_null()
}
