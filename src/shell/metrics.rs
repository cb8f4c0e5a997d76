//! The operator's Prometheus metrics, encoded as OpenMetrics text for `/metrics`.
//!
//! Every series is low-cardinality: labels are phases, Event reasons, error kinds, HTTP verbs
//! and status codes — never an object's name — unless per-object metrics are explicitly enabled
//! (`--per-object-metrics`). What each metric means is listed in `docs/observability.md`.
//!
//! The controller feeds it through a few hooks: a drop-guard timer per reconcile, the error
//! policy, and [`Metrics::decided`] after a reconcile persisted its decision. The Kubernetes API
//! requests are counted by a tower layer on the client ([`Metrics::kube_api_layer`]). The
//! phase gauges are computed at scrape time from the controller's Deployer caches, so they are
//! always exactly what the leader sees.

use std::{
    collections::BTreeMap,
    fmt,
    future::Future,
    pin::Pin,
    sync::{Arc, RwLock},
    task::{Context, Poll},
    time::Instant,
};

use chrono::{DateTime, Utc};
use kube::runtime::reflector::Store;
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, text::encode},
    metrics::{
        MetricType,
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::{Registry, Unit},
};

use crate::{
    Error,
    api::{Deployer, DeployerStatus, Phase},
    rollout::{Note, Severity},
    shell::memo::Memo,
};

/// The `Content-Type` of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Label of a count by reason (an Event reason or an error kind).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

/// Label of a Kubernetes API request: its verb and result.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    verb: &'static str,
    result: String,
}

/// Labels of a check call: the kind of check and what came back.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CheckLabels {
    kind: &'static str,
    answer: &'static str,
}

/// All the operator's metrics, and the registry that encodes them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    reconciles: Counter,
    reconcile_duration: Histogram,
    reaction_queue: Histogram,
    reaction: Histogram,
    reconcile_errors: Family<ReasonLabels, Counter>,
    transitions: Family<ReasonLabels, Counter>,
    aborts: Family<ReasonLabels, Counter>,
    lateness: Histogram,
    leader: Gauge,
    remembered: Arc<Remembered>,
    calls_out: Gauge,
    requests: Family<RequestLabels, Counter>,
    checks: Family<CheckLabels, Counter>,
    notifications: Family<ReasonLabels, Counter>,
    deployers: Arc<DeployerGauges>,
}

impl Metrics {
    /// All metrics at zero. With `per_object`, the Deployers' phases and weights are also
    /// reported one series per Deployer.
    pub fn new(per_object: bool) -> Metrics {
        let mut registry = Registry::with_prefix("deployer");
        let reconciles = Counter::default();
        registry.register("reconciles", "Reconciles started", reconciles.clone());
        // 1 ms … ~33 s.
        // The operator's own latency, apart from the API server's: from a watch event's arrival to
        // the reconcile that takes it up (queueing), and to the first write of that reconcile.
        // Buckets from 0.5 ms, ×1.5: about ±20 % on a quantile.
        let reaction_queue = Histogram::new(exponential_buckets(0.0005, 1.5, 30));
        registry.register_with_unit(
            "reaction_queue",
            "From a watch event's arrival (a Deployer's, or one of its Deployments') to the start of the reconcile that takes it up",
            Unit::Seconds,
            reaction_queue.clone(),
        );
        let reaction = Histogram::new(exponential_buckets(0.0005, 1.5, 30));
        registry.register_with_unit(
            "reaction",
            "From a watch event's arrival to the first write of the reconcile that takes it up (reconciles that write)",
            Unit::Seconds,
            reaction.clone(),
        );
        let reconcile_duration = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register_with_unit(
            "reconcile_duration",
            "How long a reconcile took, errors included",
            Unit::Seconds,
            reconcile_duration.clone(),
        );
        let reconcile_errors = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Reconciles that failed, by kind of error (kube, name_conflict, missing_metadata, …)",
            reconcile_errors.clone(),
        );
        let transitions = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "transitions",
            "Rollout transitions, by the reason of the Event announcing them (StepStarted, StepCompleted, Promoted, RolloutComplete, ProgressDeadlineExceeded, …)",
            transitions.clone(),
        );
        let aborts = Family::<ReasonLabels, Counter>::default();
        registry.register("aborts", "Rollouts that entered the Aborted phase, by reason", aborts.clone());
        // 5 ms … ~80 s.
        let lateness = Histogram::new(exponential_buckets(0.005, 2.0, 15));
        registry.register_with_unit(
            "step_lateness",
            "How long after its persisted deadline (status.waitUntil) a wait was ended",
            Unit::Seconds,
            lateness.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this process runs the controller (it holds the lease, or leader election is off)",
            leader.clone(),
        );
        // Read at each scrape from the running controllers' memos: a Deployer forgotten between
        // two writes (deleted) leaves the count at once.
        let remembered = Arc::new(Remembered::default());
        registry.register_collector(Box::new(remembered.clone()));
        let calls_out = Gauge::default();
        registry.register(
            "check_calls_out",
            "Check calls made and not yet answered (each waits at most its own timeout, outside the reconcile)",
            calls_out.clone(),
        );
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "kube_api_requests",
            "Requests to the Kubernetes API, by verb and result (HTTP status code, or `error` when no response came)",
            requests.clone(),
        );
        let checks = Family::<CheckLabels, Counter>::default();
        registry.register(
            "check_calls",
            "Calls made by step gates, by kind (metric, webhook) and answer (value, no_data, http_2xx, http_4xx, http_5xx, http_other, unreachable)",
            checks.clone(),
        );
        let notifications = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "notifications",
            "Notification batches of a reconcile, by result (sent, failed)",
            notifications.clone(),
        );
        let deployers =
            Arc::new(DeployerGauges { stores: RwLock::default(), phases: known_phases(), per_object });
        registry.register_collector(Box::new(deployers.clone()));
        Metrics {
            registry,
            reconciles,
            reconcile_duration,
            reaction_queue,
            reaction,
            reconcile_errors,
            transitions,
            aborts,
            lateness,
            leader,
            remembered,
            calls_out,
            requests,
            checks,
            notifications,
            deployers,
        }
    }

    /// Counts the answers of check calls.
    pub fn checked(&self, outcomes: &[crate::checks::Outcome]) {
        use crate::checks::Answer;
        for o in outcomes {
            let kind = if o.check.starts_with("metric/") { "metric" } else { "webhook" };
            let answer = match o.answer {
                Answer::Value(_) => "value",
                Answer::NoData(_) => "no_data",
                Answer::Status(200..=299) => "http_2xx",
                Answer::Status(400..=499) => "http_4xx",
                Answer::Status(500..=599) => "http_5xx",
                Answer::Status(_) => "http_other",
                Answer::Unreachable(_) => "unreachable",
            };
            self.checks.get_or_create(&CheckLabels { kind, answer }).inc();
        }
    }

    /// Counts a batch of notifications.
    pub fn notified(&self, sent: bool) {
        let reason = if sent { "sent" } else { "failed" };
        self.notifications.get_or_create(&ReasonLabels { reason: reason.into() }).inc();
    }

    /// The metrics in the OpenMetrics text format ([`CONTENT_TYPE`]).
    pub fn encode(&self) -> Result<String, fmt::Error> {
        let mut out = String::new();
        encode(&mut out, &self.registry)?;
        Ok(out)
    }

    /// Counts a reconcile and measures it until the returned guard is dropped.
    pub fn reconcile_started(&self) -> ReconcileTimer<'_> {
        self.reconciles.inc();
        ReconcileTimer { histogram: &self.reconcile_duration, start: Instant::now() }
    }

    /// Records how long a watch event waited for its reconcile to start.
    pub fn queued(&self, waited: std::time::Duration) {
        self.reaction_queue.observe(waited.as_secs_f64());
    }

    /// Records how long after a watch event its reconcile's first write left.
    pub fn reacted(&self, took: std::time::Duration) {
        self.reaction.observe(took.as_secs_f64());
    }

    /// Counts a failed reconcile by the kind of its error.
    pub fn reconcile_failed(&self, err: &Error) {
        self.reconcile_errors.get_or_create(&ReasonLabels { reason: error_kind(err) }).inc();
    }

    /// Records what a reconcile decided, once its status is persisted: the transitions it
    /// announces, an abort, and — when it ended a wait at its deadline `wait_ended` (the shell
    /// passes each deadline once) — how late after it that was. `now` is the time the decision
    /// was made at.
    pub fn decided(
        &self,
        before: Option<&DeployerStatus>,
        after: &DeployerStatus,
        notes: &[Note],
        wait_ended: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) {
        for note in notes {
            self.transitions.get_or_create(&ReasonLabels { reason: note.reason.as_str().to_string() }).inc();
        }
        let phase = |s: Option<&DeployerStatus>| s.and_then(|s| s.phase);
        if phase(Some(after)) == Some(Phase::Aborted) && phase(before) != Some(Phase::Aborted) {
            let reason = notes
                .iter()
                .find(|n| n.severity == Severity::Warning)
                .or(notes.first())
                .map_or("Unknown", |n| n.reason.as_str());
            self.aborts.get_or_create(&ReasonLabels { reason: reason.to_string() }).inc();
        }
        if let Some(until) = wait_ended.filter(|until| *until <= now) {
            self.lateness.observe((now - until).num_microseconds().unwrap_or(i64::MAX) as f64 / 1e6);
        }
    }

    /// Sets whether this process runs the controller.
    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// Sets how many check calls are out.
    pub fn set_calls_out(&self, n: usize) {
        self.calls_out.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// The memos of the running controllers, counted at each scrape (empty: none runs).
    pub fn set_memos(&self, memos: Vec<Arc<Memo>>) {
        *self.remembered.memos.write().unwrap_or_else(|e| e.into_inner()) = memos;
    }

    /// The Deployer caches of the running controllers, read at each scrape for the phase gauges
    /// (empty: this process does not reconcile, and reports no phases).
    pub fn set_deployer_stores(&self, stores: Vec<Store<Deployer>>) {
        *self.deployers.stores.write().unwrap_or_else(|e| e.into_inner()) = stores;
    }

    /// A tower layer for the Kubernetes client that counts its requests by verb and result.
    pub fn kube_api_layer(&self) -> KubeApiLayer {
        KubeApiLayer { requests: self.requests.clone() }
    }
}

/// Observes a reconcile's duration when dropped.
pub struct ReconcileTimer<'a> {
    histogram: &'a Histogram,
    start: Instant,
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        self.histogram.observe(self.start.elapsed().as_secs_f64());
    }
}

fn error_kind(err: &Error) -> String {
    err.metric_label().to_string()
}

/// Every phase of the API, from its schema: the phase gauge reports each, zeros included, so a
/// phase that empties shows as 0 rather than vanishing.
fn known_phases() -> Vec<String> {
    fn collect(value: &serde_json::Value, out: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, v) in map {
                    match (key.as_str(), v) {
                        ("const", serde_json::Value::String(s)) => out.push(s.clone()),
                        ("enum", serde_json::Value::Array(items)) => {
                            out.extend(items.iter().filter_map(|i| i.as_str().map(str::to_string)))
                        }
                        _ => collect(v, out),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|i| collect(i, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    collect(schemars::schema_for!(Phase).as_value(), &mut out);
    out.sort_unstable();
    out.dedup();
    out
}

/// The scrape-time gauges computed from the Deployer caches.
#[derive(Debug)]
struct DeployerGauges {
    stores: RwLock<Vec<Store<Deployer>>>,
    phases: Vec<String>,
    per_object: bool,
}

impl Collector for DeployerGauges {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let deployers: Vec<Arc<Deployer>> = {
            let stores = self.stores.read().unwrap_or_else(|e| e.into_inner());
            if stores.is_empty() {
                return Ok(());
            }
            stores.iter().flat_map(|s| s.state()).collect()
        };
        let phase_of = |d: &Deployer| {
            d.status.as_ref().and_then(|s| s.phase).map_or_else(|| "Unknown".to_string(), |p| p.to_string())
        };
        let mut counts: BTreeMap<String, i64> = self.phases.iter().map(|p| (p.clone(), 0)).collect();
        for d in &deployers {
            *counts.entry(phase_of(d)).or_default() += 1;
        }
        {
            let mut metric = encoder.encode_descriptor(
                "deployers",
                "Deployers by the phase of their rollout (Unknown: no status yet); reported by the leader only.",
                None,
                MetricType::Gauge,
            )?;
            for (phase, n) in &counts {
                metric.encode_family(&[("phase", phase.as_str())])?.encode_gauge(n)?;
            }
        }
        if !self.per_object {
            return Ok(());
        }
        let named: Vec<(String, String, &Deployer)> = deployers
            .iter()
            .map(|d| {
                (
                    d.metadata.namespace.clone().unwrap_or_default(),
                    d.metadata.name.clone().unwrap_or_default(),
                    &**d,
                )
            })
            .collect();
        {
            let mut metric = encoder.encode_descriptor(
                "object_phase",
                "1 for each Deployer, labelled with its phase (--per-object-metrics).",
                None,
                MetricType::Gauge,
            )?;
            for (ns, name, d) in &named {
                let phase = phase_of(d);
                let labels = [("namespace", ns.as_str()), ("name", name.as_str()), ("phase", phase.as_str())];
                metric.encode_family(&labels)?.encode_gauge(&1i64)?;
            }
        }
        let mut metric = encoder.encode_descriptor(
            "object_weight_percent",
            "Percent of each Deployer's replicas the canary runs at its current step (--per-object-metrics).",
            None,
            MetricType::Gauge,
        )?;
        for (ns, name, d) in &named {
            let weight = i64::from(d.status.as_ref().and_then(|s| s.weight).unwrap_or(0));
            metric
                .encode_family(&[("namespace", ns.as_str()), ("name", name.as_str())])?
                .encode_gauge(&weight)?;
        }
        Ok(())
    }
}

/// The scrape-time count of the Deployers the controllers remember something of.
#[derive(Debug, Default)]
struct Remembered {
    memos: RwLock<Vec<Arc<Memo>>>,
}

impl Collector for Remembered {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let n: usize = self.memos.read().unwrap_or_else(|e| e.into_inner()).iter().map(|m| m.len()).sum();
        encoder
            .encode_descriptor(
                "controller_remembered_deployers",
                "Deployers the controller keeps something of between reconciles (its last status write, a backoff); bounded by the Deployers that exist.",
                None,
                MetricType::Gauge,
            )?
            .encode_gauge(&i64::try_from(n).unwrap_or(i64::MAX))
    }
}

/// Counts the requests of the service it wraps; see [`Metrics::kube_api_layer`].
#[derive(Clone, Debug)]
pub struct KubeApiLayer {
    requests: Family<RequestLabels, Counter>,
}

impl<S> tower::Layer<S> for KubeApiLayer {
    type Service = KubeApiService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        KubeApiService { inner, requests: self.requests.clone() }
    }
}

/// A service counting each request by verb and result once its response (or error) arrives.
#[derive(Clone, Debug)]
pub struct KubeApiService<S> {
    inner: S,
    requests: Family<RequestLabels, Counter>,
}

impl<S, B, R> tower::Service<http::Request<B>> for KubeApiService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;
    type Response = S::Response;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let verb = verb(request.method(), request.uri());
        let requests = self.requests.clone();
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await;
            let result = match &response {
                Ok(r) => r.status().as_str().to_string(),
                Err(_) => "error".to_string(),
            };
            requests.get_or_create(&RequestLabels { verb, result }).inc();
            response
        })
    }
}

/// The Kubernetes verb of a request: `get`, `list`, `watch`, `create`, `update`, `patch`,
/// `delete` (`deletecollection` counts as `delete`); discovery and `/version` are `get`.
fn verb(method: &http::Method, uri: &http::Uri) -> &'static str {
    match *method {
        http::Method::POST => "create",
        http::Method::PUT => "update",
        http::Method::PATCH => "patch",
        http::Method::DELETE => "delete",
        http::Method::GET => {
            let watching =
                uri.query().is_some_and(|q| q.split('&').any(|kv| kv == "watch=true" || kv == "watch=1"));
            if watching {
                "watch"
            } else if is_collection(uri.path()) {
                "list"
            } else {
                "get"
            }
        }
        _ => "other",
    }
}

/// Whether a resource path names a collection (`…/deployments`) rather than an object
/// (`…/deployments/web`, `…/deployers/web/status`).
fn is_collection(path: &str) -> bool {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    // /api/v1/… or /apis/<group>/<version>/…
    let rest = match segments.first() {
        Some(&"api") if segments.len() >= 2 => &segments[2..],
        Some(&"apis") if segments.len() >= 3 => &segments[3..],
        _ => return false,
    };
    let rest = match rest {
        ["namespaces", _, more @ ..] if !more.is_empty() => more,
        other => other,
    };
    rest.len() == 1
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;
    use http::Method;

    use super::*;

    /// A status of a two-step rollout of 2.0.0 over 1.0.0, as the operator writes it.
    fn status(phase: Phase, step: i32, wait_until: Option<DateTime<Utc>>) -> DeployerStatus {
        DeployerStatus {
            phase: Some(phase),
            current_step: Some(step),
            wait_until,
            step_started_at: (phase == Phase::Scaling).then(Utc::now),
            stable_version: Some("1.0.0".into()),
            canary_version: Some("2.0.0".into()),
            plan: Some("10%/5s,100%/0s".into()),
            ..Default::default()
        }
    }

    #[test]
    fn requests_are_named_by_their_kubernetes_verb() {
        let cases = [
            (Method::GET, "/api/v1/namespaces", "list"),
            (Method::GET, "/api/v1/namespaces/default", "get"),
            (Method::GET, "/apis/apps/v1/namespaces/ns/deployments?labelSelector=x", "list"),
            (Method::GET, "/apis/apps/v1/deployments?watch=true&resourceVersion=1", "watch"),
            (Method::GET, "/apis/apps/v1/namespaces/ns/deployments/web", "get"),
            (Method::GET, "/apis/deploy.example.com/v1alpha1/namespaces/ns/deployers/web/status", "get"),
            (Method::GET, "/apis/deploy.example.com/v1alpha1/deployers?limit=1", "list"),
            (Method::GET, "/version", "get"),
            (Method::GET, "/apis/coordination.k8s.io/v1", "get"),
            (Method::POST, "/apis/apps/v1/namespaces/ns/deployments", "create"),
            (Method::PATCH, "/apis/deploy.example.com/v1alpha1/namespaces/ns/deployers/web/status", "patch"),
            (Method::PUT, "/apis/coordination.k8s.io/v1/namespaces/ns/leases/l", "update"),
            (Method::DELETE, "/apis/apps/v1/namespaces/ns/deployments/web", "delete"),
        ];
        for (method, uri, want) in cases {
            let uri: http::Uri = uri.parse().expect("a URI");
            assert_eq!(verb(&method, &uri), want, "{method} {uri}");
        }
    }

    #[test]
    fn error_kinds_are_snake_case_labels() {
        assert_eq!(error_kind(&Error::InvalidConfig("--concurrency 0".into())), "invalid_config");
        assert_eq!(error_kind(&Error::MissingMetadata("web".into())), "missing_metadata");
    }

    #[test]
    fn a_wait_ended_after_its_deadline_is_late_by_the_difference_and_early_is_not_late() {
        let metrics = Metrics::new(false);
        let until = Utc::now();
        let waiting = status(Phase::Waiting, 1, Some(until));
        metrics.decided(Some(&waiting), &waiting, &[], Some(until), until + TimeDelta::milliseconds(250));
        metrics.decided(Some(&waiting), &waiting, &[], Some(until), until - TimeDelta::seconds(1));
        metrics.decided(Some(&waiting), &waiting, &[], None, until + TimeDelta::seconds(9));
        let text = metrics.encode().expect("encodes");
        assert!(text.lines().any(|l| l == "deployer_step_lateness_seconds_count 1"), "{text}");
        assert!(text.lines().any(|l| l == "deployer_step_lateness_seconds_sum 0.25"), "{text}");
    }

    #[test]
    fn every_phase_of_the_api_is_known() {
        let phases = known_phases();
        for p in [Phase::Init, Phase::Scaling, Phase::Waiting, Phase::Finalizing, Phase::Done, Phase::Aborted]
        {
            assert!(phases.contains(&p.to_string()), "{p} missing from {phases:?}");
        }
    }

    #[test]
    fn an_abort_and_the_transitions_are_counted_and_encoded_as_openmetrics() {
        let metrics = Metrics::new(false);
        let before = status(Phase::Scaling, 1, None);
        let after = status(Phase::Aborted, 1, None);
        let notes = [Note {
            severity: Severity::Warning,
            reason: crate::rollout::Reason::ProgressDeadlineExceeded,
            message: "too slow".into(),
        }];
        metrics.decided(Some(&before), &after, &notes, None, Utc::now());
        // The same status again (e.g. a refresh) is no second abort.
        metrics.decided(Some(&after), &after, &[], None, Utc::now());
        metrics.reconcile_failed(&Error::MissingMetadata("x".into()));
        drop(metrics.reconcile_started());
        metrics.set_leader(true);
        let text = metrics.encode().expect("encodes");
        for line in [
            "deployer_aborts_total{reason=\"ProgressDeadlineExceeded\"} 1",
            "deployer_transitions_total{reason=\"ProgressDeadlineExceeded\"} 1",
            "deployer_reconcile_errors_total{reason=\"missing_metadata\"} 1",
            "deployer_reconciles_total 1",
            "deployer_reconcile_duration_seconds_count 1",
            "deployer_leader 1",
            "# UNIT deployer_step_lateness_seconds seconds",
        ] {
            assert!(text.lines().any(|l| l == line), "no line {line:?} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
        // Not leading: no phase series at all.
        assert!(!text.contains("deployer_deployers"), "{text}");
    }

    #[test]
    fn the_phase_gauge_counts_the_cached_deployers_with_zeros_for_empty_phases() {
        use kube::runtime::{reflector, watcher};
        let metrics = Metrics::new(true);
        let (reader, mut writer) = reflector::store::<Deployer>();
        let mut dpl = crate::fixtures::seed_deployer();
        dpl.status = Some(DeployerStatus { weight: Some(50), ..status(Phase::Waiting, 1, None) });
        writer.apply_watcher_event(&watcher::Event::Apply(dpl));
        metrics.set_deployer_stores(vec![reader]);
        let text = metrics.encode().expect("encodes");
        for line in [
            "deployer_deployers{phase=\"Waiting\"} 1",
            "deployer_deployers{phase=\"Done\"} 0",
            "deployer_object_phase{namespace=\"default\",name=\"nginx\",phase=\"Waiting\"} 1",
            "deployer_object_weight_percent{namespace=\"default\",name=\"nginx\"} 50",
        ] {
            assert!(text.lines().any(|l| l == line), "no line {line:?} in\n{text}");
        }
    }
}
