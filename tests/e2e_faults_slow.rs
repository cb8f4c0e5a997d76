//! End-to-end: the two fault tests that take over 90 s and measure time — a leader frozen past
//! its lease (SIGSTOP) lands nothing it decided; the hanging webhooks of forty tenants do not slow
//! a plain rollout. Not in `make test` (`test = false` in Cargo.toml): `make faults` runs them, one
//! at a time, and `.ci/run` runs `make faults` after `make test`.
#![allow(unused_imports)]

mod faults;
mod gates;
mod harness;
mod support;

use faults::*;
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
