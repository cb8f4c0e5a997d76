//! End-to-end: step gates and notifications against a real Prometheus (the pinned build of
//! tests/cluster/build.sh, started on loopback and scraping an exporter the test drives), a local
//! HTTP receiver for webhooks and notifications, and the real control plane.

mod gates;
mod harness;
mod support;

use std::time::{Duration, Instant};

use deployer_operator::api::{AbortReason, CheckPhase, DeployerStatus, Gate, PauseCause, Phase};
use gates::{Exporter, Prometheus, Receiver, SUCCESS_RATE};
use harness::{
    apply, assert_no_step_repeated, counted_events, deployer, events, patch_spec, secs, setup,
    wait_deployments, wait_phase, wait_status,
};
use k8s_openapi::{ByteString, api::core::v1::Secret};
use kube::{Api, Client, api::PostParams};
use serde_json::{Value, json};

/// `app` settled at 1.0.0 with 2 replicas and `spec`'s analysis, then asked for 2.0.0 with steps
/// 50% sleep 2 s (and the implied 100%).
async fn roll(client: &Client, ns: &str, analysis: Value, extra: Value) {
    let mut manifest = deployer("app", "1.0.0", 2, &[(50, 2)]);
    manifest["spec"]["analysis"] = analysis;
    if let (Some(spec), Some(extra)) = (manifest["spec"].as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    apply(client, ns, &manifest).await;
    wait_phase(client, ns, "app", Phase::Done, secs(60)).await;
    wait_deployments(client, ns, &[("app-1.0.0", 2)], secs(30)).await;
    patch_spec(client, ns, "app", json!({"deployment": {"version": "2.0.0"}})).await;
}

fn success_rate(prometheus: &Prometheus, count: i32) -> Value {
    json!({
        "prometheus": { "address": prometheus.address },
        "metrics": [{
            "name": "success-rate",
            "query": SUCCESS_RATE,
            "min": 0.95,
            "intervalSeconds": 2,
            "count": count,
        }]
    })
}

fn check<'a>(s: &'a DeployerStatus, name: &str) -> Option<&'a deployer_operator::api::CheckStatus> {
    s.checks.iter().find(|c| c.name == name)
}

#[tokio::test]
async fn a_healthy_canary_passes_its_metric_checks_at_every_step() {
    let (client, ns, _op) = setup("gate-healthy").await;
    let exporter = Exporter::start().await;
    exporter.set_rate("2.0.0", "200", 50.0);
    exporter.set_rate("2.0.0", "500", 0.5);
    let prometheus = Prometheus::start(&ns, &[exporter.addr]).await;
    roll(&client, &ns, success_rate(&prometheus, 2), json!({})).await;

    let waiting = wait_status(&client, &ns, "app", "measuring step 1", secs(60), |s| {
        s.phase == Some(Phase::Waiting) && check(s, "metric/success-rate").is_some_and(|c| c.runs >= 1)
    })
    .await;
    let c = check(&waiting, "metric/success-rate").expect("the check");
    let value: f64 = c.last_value.as_deref().and_then(|v| v.parse().ok()).expect("a value");
    assert!((0.95..=1.0).contains(&value), "success rate {value}: {c:?}");
    assert_eq!((c.gate, c.step), (Gate::Wait, 1));

    let done = wait_phase(&client, &ns, "app", Phase::Done, secs(90)).await;
    assert_eq!(done.stable_version.as_deref(), Some("2.0.0"));
    let last = check(&done, "metric/success-rate").expect("the last gate's check");
    assert_eq!((last.step, last.phase, last.runs, last.failures), (2, CheckPhase::Passed, 2, 0));
    wait_deployments(&client, &ns, &[("app-2.0.0", 2)], secs(30)).await;
    assert_no_step_repeated(&counted_events(&client, &ns, "app").await);
}

#[tokio::test]
async fn a_bad_metric_aborts_and_rolls_back() {
    let (client, ns, _op) = setup("gate-bad").await;
    let exporter = Exporter::start().await;
    exporter.set_rate("2.0.0", "200", 10.0);
    exporter.set_rate("2.0.0", "503", 10.0);
    let prometheus = Prometheus::start(&ns, &[exporter.addr]).await;
    roll(&client, &ns, success_rate(&prometheus, 3), json!({})).await;

    let aborted = wait_phase(&client, &ns, "app", Phase::Aborted, secs(60)).await;
    assert_eq!(aborted.abort_reason, Some(AbortReason::CheckFailed));
    let verdict = aborted.check_verdict.clone().expect("a verdict");
    assert!(
        verdict.starts_with("metric/success-rate: 0.") && verdict.contains("is below min 0.95"),
        "{verdict}"
    );
    wait_deployments(&client, &ns, &[("app-1.0.0", 2)], secs(30)).await;
    let events = events(&client, &ns, "app").await;
    let failed =
        events.iter().find(|(t, r, _)| t == "Warning" && r == "CheckFailed").expect("a CheckFailed Warning");
    assert!(failed.2.contains("rolled back to 1.0.0"), "{failed:?}");
}

#[tokio::test]
async fn no_data_pauses_the_rollout_with_the_reason() {
    let (client, ns, _op) = setup("gate-nodata").await;
    // The canary serves no traffic: its series do not exist.
    let exporter = Exporter::start().await;
    exporter.set_rate("1.0.0", "200", 10.0);
    let prometheus = Prometheus::start(&ns, &[exporter.addr]).await;
    roll(&client, &ns, success_rate(&prometheus, 2), json!({})).await;

    let paused = wait_phase(&client, &ns, "app", Phase::Paused, secs(60)).await;
    assert_eq!(paused.paused_by, Some(PauseCause::Check));
    assert_eq!(paused.check_verdict.as_deref(), Some("metric/success-rate: the query returned no data"));
    let ready = paused.condition("Ready").expect("Ready");
    assert!(ready.message.contains("could not tell"), "{ready:?}");
    // It stays paused with the step's replicas (nothing passes by default).
    tokio::time::sleep(secs(4)).await;
    let s = harness::status(&client, &ns, "app").await.expect("status");
    assert_eq!((s.phase, s.current_step), (Some(Phase::Paused), Some(1)));
    wait_deployments(&client, &ns, &[("app-1.0.0", 1), ("app-2.0.0", 1)], secs(5)).await;
    assert!(
        events(&client, &ns, "app").await.iter().any(|(t, r, _)| t == "Warning" && r == "CheckInconclusive")
    );
}

#[tokio::test]
async fn a_webhook_500_aborts_after_its_retries_and_the_payload_is_documented() {
    let (client, ns, op) = setup("gate-500").await;
    let receiver = Receiver::start().await;
    receiver.reply("/gate", 500, Duration::ZERO);
    let analysis = json!({ "webhooks": [
        {
            "name": "load-test", "type": "BeforeStep", "url": receiver.url("/gate"),
            "timeoutSeconds": 2, "retries": 1, "metadata": { "team": "shop" }
        },
        { "name": "undo", "type": "Rollback", "url": receiver.url("/undo") }
    ]});
    roll(&client, &ns, analysis, json!({})).await;

    let aborted = wait_phase(&client, &ns, "app", Phase::Aborted, secs(60)).await;
    assert_eq!(aborted.abort_reason, Some(AbortReason::CheckFailed));
    assert_eq!(aborted.check_verdict.as_deref(), Some("webhook/load-test: answered HTTP 500"));
    wait_deployments(&client, &ns, &[("app-1.0.0", 2)], secs(30)).await;
    let calls = receiver.at("/gate");
    assert_eq!(calls.len(), 2, "one call and one retry: {calls:#?}");
    let body = &calls[0].body;
    for key in [
        "deployer",
        "namespace",
        "check",
        "gate",
        "step",
        "steps",
        "percent",
        "stableVersion",
        "canaryVersion",
        "phase",
        "attempt",
        "metadata",
    ] {
        assert!(body.get(key).is_some(), "payload lacks {key}: {body}");
    }
    assert_eq!(
        (&body["deployer"], &body["namespace"], &body["gate"], &body["step"], &body["phase"]),
        (&json!("app"), &json!(ns), &json!("BeforeStep"), &json!(1), &json!("Checking"))
    );
    assert_eq!((&body["stableVersion"], &body["canaryVersion"]), (&json!("1.0.0"), &json!("2.0.0")));
    assert_eq!((&calls[1].body["attempt"], &body["metadata"]["team"]), (&json!(2), &json!("shop")));
    // The rollback webhook was told, once.
    support::wait_until("the rollback webhook", secs(10), || {
        std::future::ready(!receiver.at("/undo").is_empty())
    })
    .await;
    let undo = receiver.at("/undo");
    assert_eq!(undo.len(), 1);
    assert_eq!((&undo[0].body["gate"], &undo[0].body["phase"]), (&json!("Rollback"), &json!("Aborted")));
    // The operator counts the calls by answer.
    let (_, _, text) = harness::http_get(op.http_addr().await, "/metrics").await;
    let count = |kind: &str, answer: &str| {
        harness::metric(&text, "deployer_check_calls_total", &[("kind", kind), ("answer", answer)])
    };
    assert_eq!(
        (count("webhook", "http_5xx"), count("webhook", "http_2xx")),
        (Some(2.0), Some(1.0)),
        "{text}"
    );
    // The retry came about a second later (backoff 1 s), not at once.
    let gap = calls[1].at - calls[0].at;
    assert!(gap >= Duration::from_millis(900), "retry after {gap:?}");
}

#[tokio::test]
async fn a_webhook_timeout_is_retried_then_aborts() {
    let (client, ns, _op) = setup("gate-timeout").await;
    let receiver = Receiver::start().await;
    receiver.reply("/slow", 200, Duration::from_secs(5));
    let analysis = json!({ "webhooks": [{
        "name": "smoke", "type": "AfterStep", "url": receiver.url("/slow"), "timeoutSeconds": 1, "retries": 2
    }]});
    roll(&client, &ns, analysis, json!({})).await;

    let aborted = wait_phase(&client, &ns, "app", Phase::Aborted, secs(60)).await;
    assert_eq!(aborted.check_verdict.as_deref(), Some("webhook/smoke: no answer within 1s"));
    assert_eq!(receiver.at("/slow").len(), 3, "one call and two retries");
    wait_deployments(&client, &ns, &[("app-1.0.0", 2)], secs(30)).await;
}

#[tokio::test]
async fn an_operator_restart_mid_check_neither_repeats_nor_forgets() {
    let (client, ns, mut op) = setup("gate-restart").await;
    let exporter = Exporter::start().await;
    exporter.set_rate("2.0.0", "200", 20.0);
    let prometheus = Prometheus::start(&ns, &[exporter.addr]).await;
    let receiver = Receiver::start().await;
    let mut analysis = success_rate(&prometheus, 4);
    analysis["webhooks"] =
        json!([{ "name": "before", "type": "BeforeStep", "url": receiver.url("/before") }]);
    roll(&client, &ns, analysis, json!({})).await;

    // Record every status: the measurement count of a gate must never go back.
    let watcher = {
        let (client, ns) = (client.clone(), ns.clone());
        tokio::spawn(async move {
            let mut seen = Vec::new();
            let start = Instant::now();
            while start.elapsed() < secs(90) {
                if let Some(s) = harness::status(&client, &ns, "app").await {
                    if let Some(c) = check(&s, "metric/success-rate") {
                        seen.push((c.step, c.runs));
                    }
                    if s.phase == Some(Phase::Done) && s.stable_version.as_deref() == Some("2.0.0") {
                        break;
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            seen
        })
    };
    let mid = wait_status(&client, &ns, "app", "two measurements at step 1", secs(60), |s| {
        check(s, "metric/success-rate").is_some_and(|c| c.step == 1 && c.runs == 2)
    })
    .await;
    assert_eq!(mid.phase, Some(Phase::Waiting));
    op.kill();
    tokio::time::sleep(secs(3)).await;
    op.restart();

    let done = wait_phase(&client, &ns, "app", Phase::Done, secs(90)).await;
    assert_eq!(done.stable_version.as_deref(), Some("2.0.0"));
    let seen = watcher.await.expect("the watcher");
    for pair in seen.windows(2) {
        assert!(pair[1] >= pair[0], "a measurement count went back: {pair:?} in {seen:?}");
    }
    assert!(seen.contains(&(1, 4)) || seen.iter().any(|(step, _)| *step == 2), "{seen:?}");
    // The passed gate before step 1 was not called again after the restart: one call per step.
    let steps: Vec<Value> = receiver.at("/before").iter().map(|r| r.body["step"].clone()).collect();
    assert_eq!(steps, [json!(1), json!(2)]);
    assert_no_step_repeated(&counted_events(&client, &ns, "app").await);
}

#[tokio::test]
async fn notifications_reach_slack_and_a_generic_webhook_without_leaking_their_urls() {
    let (client, ns, op) = setup("notify").await;
    let receiver = Receiver::start().await;
    let slack_path = "/services/T0001/B0001/s3cretslackpath";
    let secret = Secret {
        metadata: kube::api::ObjectMeta { name: Some("rollout-notify".into()), ..Default::default() },
        data: Some(
            [
                ("slackUrl", receiver.url(slack_path)),
                ("webhookUrl", receiver.url("/events")),
                ("webhookToken", "t0ken-never-logged".to_string()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), ByteString(v.into_bytes())))
            .collect(),
        ),
        ..Default::default()
    };
    Api::<Secret>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &secret)
        .await
        .expect("the Secret");
    roll(&client, &ns, json!({}), json!({"notifications": {"secretRef": {"name": "rollout-notify"}}})).await;
    wait_phase(&client, &ns, "app", Phase::Done, secs(60)).await;
    support::wait_until("the RolloutComplete notification", secs(30), || async {
        receiver.at("/events").iter().filter(|r| r.body["reason"] == "RolloutComplete").count() >= 2
    })
    .await;

    // Generic: one message for the start, each step in place and the end, with the bearer token.
    let generic = receiver.at("/events");
    let reasons: Vec<&str> = generic.iter().filter_map(|r| r.body["reason"].as_str()).collect();
    for reason in ["RolloutStarted", "StepCompleted", "RolloutComplete"] {
        assert!(reasons.contains(&reason), "{reason} missing from {reasons:?}");
    }
    assert!(generic.iter().all(|r| r.authorization.as_deref() == Some("Bearer t0ken-never-logged")));
    let started =
        generic.iter().find(|r| r.body["reason"] == "RolloutStarted" && r.body["version"] == "2.0.0");
    let started = started.expect("a RolloutStarted of the rollout");
    assert_eq!(
        (&started.body["deployer"], &started.body["namespace"], &started.body["type"]),
        (&json!("app"), &json!(ns), &json!("Normal"))
    );

    // Slack: a valid incoming-webhook message for each.
    let slack = receiver.at(slack_path);
    assert_eq!(slack.len(), generic.len(), "the same notes to both");
    for m in &slack {
        assert_valid_slack_message(&m.body);
        assert!(m.authorization.is_none(), "no token to Slack");
    }
    assert!(
        slack.iter().any(|m| m.body["text"].as_str().is_some_and(|t| t.contains(&format!("*{ns}/app*"))))
    );

    // Neither URL nor token is ever logged.
    let log = op.log();
    for secret in [slack_path, "t0ken-never-logged", "/events"] {
        assert!(!log.contains(secret), "{secret} appears in the operator's log");
    }
}

/// The shape Slack's incoming webhooks accept: a non-empty `text` and, if present, `blocks` of
/// known types with mrkdwn text within Slack's limits.
fn assert_valid_slack_message(m: &Value) {
    let text = m["text"].as_str().expect("text is a string");
    assert!(!text.is_empty() && text.len() <= 40_000, "{m}");
    let blocks = m["blocks"].as_array().expect("blocks is an array");
    assert!(!blocks.is_empty() && blocks.len() <= 50, "{m}");
    for b in blocks {
        match b["type"].as_str() {
            Some("section") => {
                assert_eq!(b["text"]["type"], "mrkdwn", "{b}");
                let t = b["text"]["text"].as_str().expect("section text");
                assert!(!t.is_empty() && t.len() <= 3000, "{b}");
            }
            Some("context") => {
                let elements = b["elements"].as_array().expect("context elements");
                assert!(!elements.is_empty() && elements.len() <= 10, "{b}");
                assert!(elements.iter().all(|e| e["type"] == "mrkdwn" && e["text"].is_string()), "{b}");
            }
            other => panic!("unknown block type {other:?}: {b}"),
        }
    }
    let allowed = ["text", "blocks"];
    let keys: Vec<&String> = m.as_object().expect("an object").keys().collect();
    assert!(keys.iter().all(|k| allowed.contains(&k.as_str())), "unexpected keys {keys:?}");
}
