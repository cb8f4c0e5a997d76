//! Smoke tests of the local control plane (`make cluster-up`): the things the operator's e2e tests
//! rely on. Each test works in its own namespace, so they run concurrently. No test skips: without a
//! cluster they fail (see `support::client`).

mod support;

use std::time::Duration;

use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        authentication::v1::{SelfSubjectReview, TokenRequest, TokenRequestSpec},
        core::v1::{Node, Pod, Secret, ServiceAccount},
        rbac::v1::{Role, RoleBinding},
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams},
    config::AuthInfo,
};
use serde_json::{Value, json};
use support::{delete_namespace, namespace, wait_until};

const TIMEOUT: Duration = Duration::from_secs(60);

/// A Deployment `name` (pods labelled app=<name>) with extra pod-template labels.
fn deployment(name: &str, replicas: i32, image: &str, pod_labels: Value) -> Deployment {
    let mut labels = json!({ "app": name });
    labels.as_object_mut().unwrap().extend(pod_labels.as_object().cloned().unwrap_or_default());
    serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": name },
        "spec": {
            "replicas": replicas,
            "selector": { "matchLabels": { "app": name } },
            "template": {
                "metadata": { "labels": labels },
                "spec": { "containers": [{ "name": "app", "image": image }] }
            }
        }
    }))
    .unwrap()
}

async fn pods(client: &Client, ns: &str, app: &str) -> Vec<Pod> {
    Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .map(|l| l.items)
        .unwrap_or_default()
}

fn phase(p: &Pod) -> &str {
    p.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("")
}

fn pod_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn restart_count(p: &Pod) -> i32 {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.first())
        .map_or(0, |c| c.restart_count)
}

async fn deployment_status(deps: &Api<Deployment>, name: &str) -> (i32, i32, i32) {
    let s = deps.get(name).await.ok().and_then(|d| d.status).unwrap_or_default();
    (s.replicas.unwrap_or(0), s.ready_replicas.unwrap_or(0), s.available_replicas.unwrap_or(0))
}

/// (a) A normal Deployment gets all replicas scheduled on kwok nodes, Running with an IP, and Ready.
#[tokio::test]
async fn deployment_reaches_ready_replicas() {
    let c = support::client().await;
    let ns = namespace(&c, "smoke-ready").await;
    let deps = Api::<Deployment>::namespaced(c.clone(), &ns);
    deps.create(&PostParams::default(), &deployment("web", 3, "nginx:1.27", json!({}))).await.unwrap();

    wait_until("Deployment web: 3 ready and available replicas", TIMEOUT, || async {
        deployment_status(&deps, "web").await == (3, 3, 3)
    })
    .await;

    let pods = pods(&c, &ns, "web").await;
    assert_eq!(pods.len(), 3, "exactly 3 pods");
    for p in &pods {
        let spec = p.spec.as_ref().unwrap();
        let status = p.status.as_ref().unwrap();
        assert!(
            spec.node_name.as_deref().unwrap_or("").starts_with("kwok-node-"),
            "scheduled on a kwok node"
        );
        assert_eq!(phase(p), "Running");
        assert!(pod_ready(p));
        assert!(
            status.pod_ip.as_deref().unwrap_or("").starts_with("10.244."),
            "pod IP from kwok's CIDR: {status:?}"
        );
    }
    delete_namespace(&c, &ns).await;
}

/// (b) Pods whose image tag ends in `-never-ready` run but never become Ready.
#[tokio::test]
async fn never_ready_pods_stay_unready() {
    let c = support::client().await;
    let ns = namespace(&c, "smoke-never-ready").await;
    let deps = Api::<Deployment>::namespaced(c.clone(), &ns);
    deps.create(&PostParams::default(), &deployment("stuck", 2, "nginx:1.27-never-ready", json!({})))
        .await
        .unwrap();

    wait_until("2 Running pods of Deployment stuck", TIMEOUT, || async {
        let pods = pods(&c, &ns, "stuck").await;
        pods.len() == 2 && pods.iter().all(|p| phase(p) == "Running")
    })
    .await;
    wait_until("Deployment stuck counts its 2 replicas", TIMEOUT, || async {
        deployment_status(&deps, "stuck").await.0 == 2
    })
    .await;
    // Longer than the default delay of the `slow` behaviour: a mis-selected stage would show by now.
    tokio::time::sleep(Duration::from_secs(4)).await;

    assert_eq!(deployment_status(&deps, "stuck").await, (2, 0, 0), "(replicas, ready, available)");
    let pods = pods(&c, &ns, "stuck").await;
    assert_eq!(pods.len(), 2);
    for p in &pods {
        assert_eq!(phase(p), "Running");
        assert!(!pod_ready(p), "pod {:?} must not be Ready", p.metadata.name);
    }
    delete_namespace(&c, &ns).await;
}

/// (c) Pods labelled testenv/behavior=crashloop report CrashLoopBackOff with a growing restartCount.
#[tokio::test]
async fn crashloop_pods_report_restarts() {
    let c = support::client().await;
    let ns = namespace(&c, "smoke-crashloop").await;
    let deps = Api::<Deployment>::namespaced(c.clone(), &ns);
    let d = deployment("crashy", 1, "nginx:1.27", json!({ "testenv/behavior": "crashloop" }));
    deps.create(&PostParams::default(), &d).await.unwrap();

    wait_until("crashy pod in CrashLoopBackOff with restartCount >= 1", TIMEOUT, || async {
        pods(&c, &ns, "crashy").await.iter().any(|p| {
            let waiting = p
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .and_then(|cs| cs.first())
                .and_then(|cs| cs.state.as_ref())
                .and_then(|s| s.waiting.as_ref())
                .and_then(|w| w.reason.clone());
            restart_count(p) >= 1 && waiting.as_deref() == Some("CrashLoopBackOff")
        })
    })
    .await;
    let first = restart_count(&pods(&c, &ns, "crashy").await[0]);
    wait_until(&format!("restartCount to grow beyond {first}"), Duration::from_secs(20), || async {
        pods(&c, &ns, "crashy").await.first().is_some_and(|p| restart_count(p) > first)
    })
    .await;
    let p = &pods(&c, &ns, "crashy").await[0];
    assert_eq!(phase(p), "Running");
    assert!(!pod_ready(p));
    assert_eq!(deployment_status(&deps, "crashy").await.1, 0, "no ready replica");
    delete_namespace(&c, &ns).await;
}

/// (d) Server-side apply and the status subresource on a CRD: spec writes ignore status, status
/// writes ignore spec, only spec changes bump the generation, and SSA reports field conflicts.
#[tokio::test]
async fn crd_server_side_apply_and_status_subresource() {
    let c = support::client().await;
    let crds = Api::<CustomResourceDefinition>::all(c.clone());
    let crd = json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": { "name": "widgets.smoke.example.com" },
        "spec": {
            "group": "smoke.example.com",
            "scope": "Namespaced",
            "names": { "plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList" },
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "subresources": { "status": {} },
                "schema": { "openAPIV3Schema": { "type": "object", "properties": {
                    "spec": { "type": "object", "properties": {
                        "size": { "type": "integer" }, "color": { "type": "string" } } },
                    "status": { "type": "object", "properties": {
                        "observed": { "type": "integer" }, "message": { "type": "string" } } }
                } } }
            }]
        }
    });
    crds.patch("widgets.smoke.example.com", &PatchParams::apply("smoke-test").force(), &Patch::Apply(&crd))
        .await
        .unwrap();
    support::wait_crd_established(&c, "widgets.smoke.example.com").await;

    let ns = namespace(&c, "smoke-crd").await;
    let gvk = GroupVersionKind::gvk("smoke.example.com", "v1", "Widget");
    let widgets = Api::<DynamicObject>::namespaced_with(
        c.clone(),
        &ns,
        &ApiResource::from_gvk_with_plural(&gvk, "widgets"),
    );
    let apply = |body: Value| Patch::Apply(body);
    let widget = |spec: Value, status: Option<Value>| {
        let mut w = json!({ "apiVersion": "smoke.example.com/v1", "kind": "Widget", "metadata": { "name": "w1" }, "spec": spec });
        if let Some(s) = status {
            w["status"] = s;
        }
        w
    };

    // Create by SSA (retried: the new resource may take a moment to be served after Established).
    wait_until("SSA create of Widget w1", TIMEOUT, || async {
        widgets
            .patch(
                "w1",
                &PatchParams::apply("smoke-test"),
                &apply(widget(json!({ "size": 1, "color": "red" }), None)),
            )
            .await
            .is_ok()
    })
    .await;
    let w = widgets.get("w1").await.unwrap();
    assert_eq!(w.data["spec"], json!({ "size": 1, "color": "red" }));
    assert_eq!(w.metadata.generation, Some(1));
    let managers: Vec<_> =
        w.metadata.managed_fields.iter().flatten().filter_map(|m| m.manager.as_deref()).collect();
    assert!(managers.contains(&"smoke-test"), "managedFields records the SSA manager: {managers:?}");

    // Status by SSA on the status subresource, as a second field manager.
    let status_apply = json!({ "apiVersion": "smoke.example.com/v1", "kind": "Widget", "metadata": { "name": "w1" },
                               "status": { "observed": 1, "message": "ok" } });
    let w = widgets
        .patch_status("w1", &PatchParams::apply("smoke-status"), &Patch::Apply(&status_apply))
        .await
        .unwrap();
    assert_eq!(w.data["status"], json!({ "observed": 1, "message": "ok" }));
    assert_eq!(w.metadata.generation, Some(1), "a status write does not bump the generation");

    // A spec write carrying a status: the status part is ignored, the generation bumps.
    widgets
        .patch(
            "w1",
            &PatchParams::apply("smoke-test"),
            &apply(widget(
                json!({ "size": 2, "color": "red" }),
                Some(json!({ "observed": 99, "message": "bogus" })),
            )),
        )
        .await
        .unwrap();
    let w = widgets.get("w1").await.unwrap();
    assert_eq!(w.data["spec"]["size"], 2);
    assert_eq!(
        w.data["status"],
        json!({ "observed": 1, "message": "ok" }),
        "spec write must not change status"
    );
    assert_eq!(w.metadata.generation, Some(2));

    // A status write carrying a spec: the spec part is ignored.
    let w = widgets
        .patch_status(
            "w1",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "size": 7 }, "status": { "observed": 2 } })),
        )
        .await
        .unwrap();
    assert_eq!(w.data["status"]["observed"], 2);
    assert_eq!(w.data["spec"]["size"], 2, "status write must not change spec");
    assert_eq!(w.metadata.generation, Some(2));

    // SSA ownership: another manager may not take over spec.size without force.
    let err = widgets
        .patch("w1", &PatchParams::apply("smoke-intruder"), &apply(widget(json!({ "size": 3 }), None)))
        .await
        .expect_err("conflicting apply without force must fail");
    match err {
        kube::Error::Api(s) => assert_eq!(s.code, 409, "conflict expected: {s:?}"),
        e => panic!("expected a 409 conflict, got {e}"),
    }
    delete_namespace(&c, &ns).await;
}

/// (e) RBAC is enforced: a fresh ServiceAccount's token authenticates, may not list Secrets (403)
/// until a Role grants it, and then only in that namespace.
#[tokio::test]
async fn rbac_denies_service_account_without_role() {
    let c = support::client().await;
    let ns = namespace(&c, "smoke-rbac").await;
    let sa: ServiceAccount = serde_json::from_value(json!({ "metadata": { "name": "reader" } })).unwrap();
    let sas = Api::<ServiceAccount>::namespaced(c.clone(), &ns);
    sas.create(&PostParams::default(), &sa).await.unwrap();
    let tr = TokenRequest {
        spec: TokenRequestSpec { expiration_seconds: Some(600), ..Default::default() },
        ..Default::default()
    };
    let token = sas
        .create_token_request("reader", &PostParams::default(), &tr)
        .await
        .unwrap()
        .status
        .expect("TokenRequest status")
        .token;

    // Same server and CA as the admin kubeconfig, but only the bearer token as identity.
    let mut cfg = support::config().await;
    cfg.auth_info = AuthInfo { token: Some(token.into()), ..Default::default() };
    let sa_client = Client::try_from(cfg).unwrap();

    let review = Api::<SelfSubjectReview>::all(sa_client.clone())
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .unwrap();
    let user = review.status.and_then(|s| s.user_info).and_then(|u| u.username);
    assert_eq!(user.as_deref(), Some(format!("system:serviceaccount:{ns}:reader").as_str()));

    let secrets = Api::<Secret>::namespaced(sa_client.clone(), &ns);
    match secrets.list(&ListParams::default()).await {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 403, "forbidden expected: {s:?}"),
        Ok(_) => panic!("a ServiceAccount without any Role must not list secrets"),
        Err(e) => panic!("expected 403, got {e}"),
    }

    // Grant list on secrets in this namespace: allowed here, still forbidden cluster-wide.
    let role: Role = serde_json::from_value(json!({
        "metadata": { "name": "secret-reader" },
        "rules": [{ "apiGroups": [""], "resources": ["secrets"], "verbs": ["list"] }]
    }))
    .unwrap();
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": { "name": "reader-secret-reader" },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "secret-reader" },
        "subjects": [{ "kind": "ServiceAccount", "name": "reader", "namespace": ns }]
    }))
    .unwrap();
    Api::<Role>::namespaced(c.clone(), &ns).create(&PostParams::default(), &role).await.unwrap();
    Api::<RoleBinding>::namespaced(c.clone(), &ns).create(&PostParams::default(), &binding).await.unwrap();
    wait_until("the RoleBinding to allow listing secrets", Duration::from_secs(30), || async {
        secrets.list(&ListParams::default()).await.is_ok()
    })
    .await;
    match Api::<Secret>::all(sa_client).list(&ListParams::default()).await {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 403),
        other => panic!("cluster-wide list must stay forbidden, got {other:?}"),
    }
    delete_namespace(&c, &ns).await;
}

/// (f) At least 3 kwok nodes exist and are Ready.
#[tokio::test]
async fn kwok_nodes_are_ready() {
    let c = support::client().await;
    let nodes = Api::<Node>::all(c).list(&ListParams::default().labels("type=kwok")).await.unwrap().items;
    let ready: Vec<_> = nodes
        .iter()
        .filter(|n| {
            n.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .filter_map(|n| n.metadata.name.clone())
        .collect();
    assert!(ready.len() >= 3, "at least 3 Ready kwok nodes, got {ready:?}");
    for i in 0..3 {
        assert!(ready.contains(&format!("kwok-node-{i}")), "kwok-node-{i} Ready: {ready:?}");
    }
}
