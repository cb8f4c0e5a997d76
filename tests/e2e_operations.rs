//! End-to-end: running the operator — leader election between real operator processes (kill -9
//! and SIGTERM handovers, timed), /metrics, /healthz and /readyz, and flag validation.
//!
//! Each test has its own namespace and its own Lease in it (`--lease-namespace`), so tests run
//! concurrently. Leases are short (4 s, renewed 2 s before expiry) to keep the tests quick; the
//! grace period leaves a leader 1 s (half of it) to see each renewal, even on a loaded machine.

mod harness;
mod support;

use std::{
    process::Command,
    time::{Duration, Instant},
};

use deployer_operator::{api::Phase, metrics::CONTENT_TYPE};
use harness::{
    Operator, Recorder, apply, deployer, http_get, metric, patch_spec, secs, wait_deployments, wait_phase,
};
use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::MicroTime,
};
use kube::{Api, Client};
use serde_json::json;

const LEASE: &str = "deployer-operator";
const LEASE_SECONDS: u64 = 4;

/// Flags of an operator that takes part in the election of `ns`'s Lease.
fn elected(ns: &str) -> Vec<String> {
    let flags = [
        "--leader-elect",
        "--lease-namespace",
        ns,
        "--lease-duration-seconds",
        "4",
        "--lease-grace-seconds",
        "2",
    ];
    // The election's steps in the logs, should a test fail.
    let logs = ["--log-level", "info,kube=warn,deployer_operator::leader=debug,kube_lease_manager=debug"];
    flags.iter().chain(&logs).map(|s| s.to_string()).collect()
}

fn start(ns: &str, label: &str, args: &[String]) -> Operator {
    Operator::start_with(ns, label, &args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// The Lease's holder, by the operator's label (its identity is `<label>_<random>`).
async fn holder(client: &Client, ns: &str) -> Option<String> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), ns);
    let identity = leases.get_opt(LEASE).await.ok().flatten()?.spec?.holder_identity?;
    Some(identity.rsplit_once('_').map_or(identity.clone(), |(label, _)| label.to_string()))
}

/// A time field of the Lease's spec (e.g. `renewTime`).
async fn lease_time<F>(client: &Client, ns: &str, field: F) -> Option<chrono::DateTime<chrono::Utc>>
where
    F: Fn(&LeaseSpec) -> Option<&MicroTime>,
{
    let leases: Api<Lease> = Api::namespaced(client.clone(), ns);
    let spec = leases.get_opt(LEASE).await.ok().flatten()?.spec?;
    let time = field(&spec)?;
    chrono::DateTime::from_timestamp_micros(time.0.as_microsecond())
}

/// Polls the Lease every 20 ms until the operator labelled `who` holds it; returns the time
/// since `since`.
async fn wait_holder(client: &Client, ns: &str, who: &str, since: Instant, timeout: Duration) -> Duration {
    loop {
        if holder(client, ns).await.as_deref() == Some(who) {
            return since.elapsed();
        }
        assert!(since.elapsed() < timeout, "{who} did not take the lease within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Scrapes /metrics.
async fn scrape(op: &Operator) -> String {
    let (status, content_type, body) = http_get(op.http_addr().await, "/metrics").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(content_type, CONTENT_TYPE);
    body
}

/// Polls /metrics every 50 ms until `pred` holds; returns the time since `since` and the text.
async fn wait_metrics<P>(
    op: &Operator,
    what: &str,
    since: Instant,
    timeout: Duration,
    pred: P,
) -> (Duration, String)
where
    P: Fn(&str) -> bool,
{
    loop {
        let text = scrape(op).await;
        if pred(&text) {
            return (since.elapsed(), text);
        }
        assert!(
            since.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}; metrics:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    metric(text, name, labels).unwrap_or(0.0)
}

/// Waits until /readyz answers 200.
async fn wait_ready(op: &Operator) {
    let addr = op.http_addr().await;
    support::wait_until(&format!("{} to be ready", op.log_path().display()), secs(30), || async move {
        http_get(addr, "/readyz").await.0 == 200
    })
    .await;
}

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

/// kill -9 of the leader while a rollout waits: the standby takes the lease once it expires (a
/// lease duration after the dead leader's last renewal, plus a few round trips) and finishes the
/// rollout; no step is repeated and the canary never goes back. Meanwhile the standby was ready
/// and reconciled nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_standby_takes_over_within_the_lease_duration_when_the_leader_is_killed_mid_rollout() {
    let client = support::client().await;
    harness::install_crd(&client).await;
    let ns = support::namespace(&client, "e2e-ha-kill").await;
    let mut a = start(&ns, "op-a", &elected(&ns));
    wait_holder(&client, &ns, "op-a", Instant::now(), secs(30)).await;
    let b = start(&ns, "op-b", &elected(&ns));
    wait_ready(&b).await;

    apply(&client, &ns, &deployer("app", "1.0.0", 4, &[(25, 4), (50, 2), (75, 2)])).await;
    wait_phase(&client, &ns, "app", Phase::Done, secs(60)).await;
    let rec = Recorder::start(&client, &ns, "app").await;
    patch_spec(&client, &ns, "app", json!({"deployment": {"version": "2.0.0"}})).await;
    let waiting = wait_phase(&client, &ns, "app", Phase::Waiting, secs(60)).await;
    assert_eq!(waiting.current_step, Some(1));

    // Only the leader reconciles.
    let (leader_text, standby_text) = (scrape(&a).await, scrape(&b).await);
    assert_eq!(metric(&leader_text, "deployer_leader", &[]), Some(1.0), "{leader_text}");
    assert!(value(&leader_text, "deployer_reconciles_total", &[]) > 0.0, "{leader_text}");
    assert_eq!(metric(&standby_text, "deployer_leader", &[]), Some(0.0), "{standby_text}");
    assert_eq!(metric(&standby_text, "deployer_reconciles_total", &[]), Some(0.0), "{standby_text}");
    assert!(!standby_text.contains("deployer_deployers{"), "a standby reports no phases:\n{standby_text}");

    let killed = Instant::now();
    a.kill();
    // The dead leader's last renewal: its lease expires LEASE_SECONDS after it.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let renewed = lease_time(&client, &ns, |s| s.renew_time.as_ref()).await.expect("a renewal time");
    let expires = renewed + chrono::TimeDelta::seconds(LEASE_SECONDS as i64);
    let takeover = wait_holder(&client, &ns, "op-b", killed, secs(15)).await;
    let acquired = lease_time(&client, &ns, |s| s.acquire_time.as_ref()).await.expect("an acquire time");
    let (reconciling, _) = wait_metrics(&b, "the new leader to reconcile", killed, secs(15), |t| {
        value(t, "deployer_reconciles_total", &[]) > 0.0
    })
    .await;
    let after_expiry = (acquired - expires).num_milliseconds();
    println!(
        "kill -9 failover: lease taken by the standby {} ms after the kill ({after_expiry} ms after the dead leader's lease expired), first reconcile at {} ms (lease {LEASE_SECONDS} s)",
        takeover.as_millis(),
        reconciling.as_millis()
    );
    // Never while the dead leader's lease was valid; soon after it expired.
    assert!(after_expiry >= 0, "taken {after_expiry} ms before the lease expired");
    // Typically a few hundred ms; 3 s of slack for a loaded 2-core CI machine.
    assert!(after_expiry <= 3000, "taken {after_expiry} ms after the lease expired");
    assert!(
        takeover <= Duration::from_millis(LEASE_SECONDS * 1000 + 3000),
        "took over {takeover:?} after the kill"
    );

    wait_phase(&client, &ns, "app", Phase::Done, secs(60)).await;
    // Done is written before the old version is deleted (persist first): the timeline ends once
    // it is gone.
    wait_deployments(&client, &ns, &[("app-2.0.0", 4)], secs(30)).await;
    let timeline = rec.stop();
    assert_eq!(
        timeline.waiting_pairs("app-2.0.0", "app-1.0.0"),
        [(1, 3), (2, 2), (3, 1), (4, 0)],
        "timeline: {timeline:#?}"
    );
    timeline.assert_only_grew("app-2.0.0");
    harness::assert_no_step_repeated(&harness::counted_events(&client, &ns, "app").await);
    support::delete_namespace(&client, &ns).await;
}

/// SIGTERM of the leader, three times in a row during a rollout: each time the leader stops,
/// releases the lease and exits 0, and the standby holds the lease in under 2 s (the median of
/// three; each under 4 s). The rollout finishes with no step repeated.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_hands_the_lease_to_the_standby_in_under_two_seconds() {
    let client = support::client().await;
    harness::install_crd(&client).await;
    let ns = support::namespace(&client, "e2e-ha-term").await;
    let mut leader = start(&ns, "op-0", &elected(&ns));
    wait_holder(&client, &ns, "op-0", Instant::now(), secs(30)).await;
    let mut standby = start(&ns, "op-1", &elected(&ns));
    wait_ready(&standby).await;

    apply(&client, &ns, &deployer("app", "1.0.0", 4, &[(25, 3), (50, 3), (75, 3)])).await;
    wait_phase(&client, &ns, "app", Phase::Done, secs(60)).await;
    let rec = Recorder::start(&client, &ns, "app").await;
    patch_spec(&client, &ns, "app", json!({"deployment": {"version": "2.0.0"}})).await;
    wait_phase(&client, &ns, "app", Phase::Waiting, secs(60)).await;

    let mut handovers = Vec::new();
    let mut reconciling = Vec::new();
    for round in 1..=3 {
        let next = format!("op-{round}");
        let terminated = Instant::now();
        leader.sigterm();
        let took = wait_holder(&client, &ns, &next, terminated, secs(10)).await;
        let status = leader.wait_exit(secs(10)).await;
        let exited = terminated.elapsed();
        let (first, _) = wait_metrics(&standby, "the new leader to reconcile", terminated, secs(10), |t| {
            value(t, "deployer_reconciles_total", &[]) > 0.0
        })
        .await;
        println!(
            "SIGTERM handover {round}: lease held by {next} after {} ms, old leader exited after {} ms ({status:?}), first reconcile after {} ms",
            took.as_millis(),
            exited.as_millis(),
            first.as_millis()
        );
        assert!(status.is_some_and(|s| s.success()), "the old leader exits 0 on SIGTERM: {status:?}");
        assert!(leader.log().contains("released the lease"), "{}", leader.log());
        handovers.push(took);
        reconciling.push(first);
        leader = standby;
        standby = start(&ns, &format!("op-{}", round + 1), &elected(&ns));
        wait_ready(&standby).await;
    }
    println!(
        "SIGTERM handover: median {} ms (lease), {} ms (first reconcile) over {} runs",
        median(handovers.clone()).as_millis(),
        median(reconciling).as_millis(),
        handovers.len()
    );
    // The claim is the median; each single handover may take up to twice as long on a loaded
    // 2-core CI machine running every test at once.
    assert!(median(handovers.clone()) < secs(2), "SIGTERM handovers: {handovers:?}");
    for took in &handovers {
        assert!(*took < secs(4), "SIGTERM handover took {took:?}: {handovers:?}");
    }

    wait_phase(&client, &ns, "app", Phase::Done, secs(60)).await;
    let timeline = rec.stop();
    timeline.assert_only_grew("app-2.0.0");
    harness::assert_no_step_repeated(&harness::counted_events(&client, &ns, "app").await);
    wait_deployments(&client, &ns, &[("app-2.0.0", 4)], secs(30)).await;
    support::delete_namespace(&client, &ns).await;
}

/// A leader whose lease is taken from it stops reconciling and exits with an error (to restart
/// as a standby), within the lease duration.
#[tokio::test(flavor = "multi_thread")]
async fn a_leader_that_loses_its_lease_stops_and_exits() {
    let client = support::client().await;
    harness::install_crd(&client).await;
    let ns = support::namespace(&client, "e2e-ha-lost").await;
    let mut op = start(&ns, "op", &elected(&ns));
    // Leading: the Lease names it, and it has finished taking it.
    wait_holder(&client, &ns, "op", Instant::now(), secs(30)).await;
    wait_metrics(&op, "leadership", Instant::now(), secs(30), |t| value(t, "deployer_leader", &[]) == 1.0)
        .await;

    // Someone else takes the lease (as a replica would after a network partition).
    let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string();
    let steal = json!({"spec": {"holderIdentity": "intruder", "renewTime": now, "leaseDurationSeconds": 60}});
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let stolen = Instant::now();
    leases
        .patch(LEASE, &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&steal))
        .await
        .expect("take the lease");
    let status = op.wait_exit(secs(LEASE_SECONDS + 2)).await;
    let exited = stolen.elapsed();
    println!("lost lease: the leader stopped and exited {} ms after the lease was taken", exited.as_millis());
    assert_eq!(status.and_then(|s| s.code()), Some(1), "exits with an error: {status:?}\n{}", op.log());
    assert!(op.log().contains("lost leadership"), "{}", op.log());
    assert_eq!(holder(&client, &ns).await.as_deref(), Some("intruder"), "the lease was left to its holder");
    support::delete_namespace(&client, &ns).await;
}

/// /metrics during a rollout: the reconcile counter, the transition counters, the step lateness
/// and the API request counters move; the phase gauge shows Waiting during the rollout, Done
/// after, and Aborted after a canary that never became ready. /healthz and /readyz answer.
#[tokio::test(flavor = "multi_thread")]
async fn metrics_follow_a_rollout_and_an_abort() {
    let client = support::client().await;
    harness::install_crd(&client).await;
    let ns = support::namespace(&client, "e2e-metrics").await;
    let op = start(&ns, "op", &[]);
    let addr = op.http_addr().await;
    assert_eq!(http_get(addr, "/healthz").await.0, 200);
    wait_ready(&op).await;
    let first = scrape(&op).await;
    assert!(first.ends_with("# EOF\n"), "OpenMetrics text ends with # EOF:\n{first}");
    assert_eq!(metric(&first, "deployer_leader", &[]), Some(1.0), "no leader election: it leads\n{first}");

    let mut manifest = deployer("app", "1.0.0", 4, &[(50, 3)]);
    manifest["spec"]["progressDeadlineSeconds"] = json!(3);
    apply(&client, &ns, &manifest).await;
    wait_phase(&client, &ns, "app", Phase::Done, secs(60)).await;
    let completed = |t: &str| value(t, "deployer_transitions_total", &[("reason", "RolloutComplete")]);
    let (_, before) = wait_metrics(&op, "Done = 1", Instant::now(), secs(10), |t| {
        value(t, "deployer_deployers", &[("phase", "Done")]) == 1.0 && completed(t) == 1.0
    })
    .await;

    patch_spec(&client, &ns, "app", json!({"deployment": {"version": "2.0.0"}})).await;
    wait_phase(&client, &ns, "app", Phase::Waiting, secs(60)).await;
    let (_, during) = wait_metrics(&op, "Waiting = 1", Instant::now(), secs(10), |t| {
        value(t, "deployer_deployers", &[("phase", "Waiting")]) == 1.0
    })
    .await;
    assert_eq!(metric(&during, "deployer_deployers", &[("phase", "Done")]), Some(0.0), "{during}");

    wait_phase(&client, &ns, "app", Phase::Done, secs(60)).await;
    // The cache can show Done a moment before the reconcile that wrote it has counted its
    // transitions, and the old version is deleted right after Done is written: wait for all.
    let deleted =
        |t: &str| value(t, "deployer_kube_api_requests_total", &[("verb", "delete"), ("result", "200")]);
    let (_, after) =
        wait_metrics(&op, "Done = 1, Waiting = 0, old version deleted", Instant::now(), secs(10), |t| {
            value(t, "deployer_deployers", &[("phase", "Done")]) == 1.0
                && value(t, "deployer_deployers", &[("phase", "Waiting")]) == 0.0
                && completed(t) > completed(&before)
                && deleted(t) >= 1.0
        })
        .await;
    let grew =
        |name: &str, labels: &[(&str, &str)]| value(&after, name, labels) - value(&before, name, labels);
    assert!(grew("deployer_reconciles_total", &[]) >= 3.0, "{after}");
    assert!(grew("deployer_reconcile_duration_seconds_count", &[]) >= 3.0, "{after}");
    for reason in ["RolloutStarted", "StepCompleted", "RolloutComplete"] {
        assert!(grew("deployer_transitions_total", &[("reason", reason)]) >= 1.0, "{reason}:\n{after}");
    }
    assert_eq!(
        grew("deployer_transitions_total", &[("reason", "StepCompleted")]),
        1.0,
        "50% in place (the 100% step ends with RolloutComplete):\n{after}"
    );
    // The waits (3 s at 50%, 0 s at 100%) ended after their deadlines, and not by much.
    let waits = grew("deployer_step_lateness_seconds_count", &[]);
    assert!(waits >= 1.0, "{after}");
    let late = grew("deployer_step_lateness_seconds_sum", &[]) / waits;
    println!(
        "waits ended {:.0} ms after their deadlines on average ({waits} waits, from /metrics)",
        late * 1000.0
    );
    // Typically tens of ms; up to 2 s on a loaded 2-core CI machine.
    assert!((0.0..2.0).contains(&late), "lateness {late} s");
    for (verb, result) in
        [("create", "201"), ("patch", "200"), ("delete", "200"), ("watch", "200"), ("list", "200")]
    {
        assert!(
            value(&after, "deployer_kube_api_requests_total", &[("verb", verb), ("result", result)]) > 0.0,
            "no {verb} → {result}:\n{after}"
        );
    }
    assert!(!after.contains("deployer_object_phase"), "per-object metrics are off by default");

    patch_spec(&client, &ns, "app", json!({"deployment": {"version": "3.0.0-never-ready"}})).await;
    wait_phase(&client, &ns, "app", Phase::Aborted, secs(60)).await;
    let (_, aborted) =
        wait_metrics(&op, "Aborted = 1 and one abort counted", Instant::now(), secs(10), |t| {
            value(t, "deployer_deployers", &[("phase", "Aborted")]) == 1.0
                && value(t, "deployer_aborts_total", &[("reason", "ProgressDeadlineExceeded")]) == 1.0
        })
        .await;
    assert_eq!(value(&aborted, "deployer_deployers", &[("phase", "Done")]), 0.0, "{aborted}");
    support::delete_namespace(&client, &ns).await;
}

/// Invalid flags and environment variables stop the operator at start, naming what is wrong;
/// --help documents every flag with its environment variable.
#[test]
fn invalid_settings_fail_at_start_with_a_clear_message() {
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let out = Command::new(env!("CARGO_BIN_EXE_deployer-operator"))
            .args(args)
            .envs(env.iter().copied())
            .env("KUBECONFIG", "/nonexistent")
            .output()
            .expect("the binary runs");
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    for (args, env, needle) in [
        (&["run", "--listen", "nowhere"][..], &[][..], "--listen"),
        (&["run"][..], &[("DEPLOYER_LISTEN", "1.2.3.4")][..], "--listen"),
        (&["run", "--log-level", "info,kube=loud"][..], &[][..], "--log-level"),
        (&["run"][..], &[("RUST_LOG", "info,kube=loud")][..], "--log-level"),
        (&["run", "--log-format", "xml"][..], &[][..], "--log-format"),
        (&["run", "--namespace", "Bad_Namespace"][..], &[][..], "--namespace"),
        (&["run"][..], &[("DEPLOYER_LEADER_ELECT", "perhaps")][..], "--leader-elect"),
        (
            &["run", "--lease-grace-seconds", "5", "--lease-duration-seconds", "5"][..],
            &[][..],
            "--lease-grace-seconds",
        ),
        (&["run", "--lease-duration-seconds", "1"][..], &[][..], "--lease-duration-seconds"),
        (&["run", "--concurrency", "many"][..], &[][..], "--concurrency"),
    ] {
        let (code, stderr) = run(args, env);
        assert_eq!(code, Some(2), "{args:?} {env:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?} {env:?}: {stderr}");
    }
    // A listen address that cannot be bound is named too.
    let (code, stderr) = run(&["run", "--listen", "192.0.2.1:1"], &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("cannot listen on 192.0.2.1:1"), "{stderr}");

    let out = Command::new(env!("CARGO_BIN_EXE_deployer-operator")).arg("--help").output().expect("--help");
    let help = String::from_utf8_lossy(&out.stdout);
    for documented in [
        "--namespace",
        "WATCH_NAMESPACE",
        "--concurrency",
        "--log-format",
        "--log-level",
        "RUST_LOG",
        "--listen",
        "DEPLOYER_LISTEN",
        "--leader-elect",
        "DEPLOYER_LEADER_ELECT",
        "--lease-name",
        "--lease-namespace",
        "POD_NAMESPACE",
        "--lease-identity",
        "POD_NAME",
        "--lease-duration-seconds",
        "--lease-grace-seconds",
        "--per-object-metrics",
    ] {
        assert!(help.contains(documented), "--help does not mention {documented}:\n{help}");
    }
}
