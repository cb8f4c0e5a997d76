//! The `Deployer` custom resource: its spec (what the user asks for), its status (the rollout's
//! persisted memory), and the admission rules the API server enforces through the generated CRD.
//!
//! Everything the operator remembers between reconciles lives in [`DeployerStatus`]; see
//! `docs/design.md` for how the status maps to the rollout state machine in [`crate::rollout`].

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of the `Deployer` resource.
pub const GROUP: &str = "deploy.example.com";
/// Default for `spec.progressDeadlineSeconds`.
pub const DEFAULT_PROGRESS_DEADLINE_SECONDS: i64 = 600;
/// Upper bound on the number of steps; keeps the CEL cost of the step rules bounded.
pub const MAX_STEPS: usize = 100;
/// Upper bound on `spec.progressDeadlineSeconds` and on a step's `sleep`: one year. Every time the
/// operator computes from them stays far inside what its clock arithmetic can hold.
pub const MAX_SECONDS: i64 = 31_536_000;
/// Upper bound on `spec.deployment.replicas`.
pub const MAX_REPLICAS: i32 = 100_000;

/// A canary rollout of one application: one Deployment per version, with replicas moved from the
/// stable version to the new one in percentage steps.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "deploy.example.com",
    version = "v1alpha1",
    kind = "Deployer",
    plural = "deployers",
    singular = "deployer",
    shortname = "dpl",
    category = "all",
    namespaced,
    status = "DeployerStatus",
    derive = "PartialEq",
    doc = "A Deployer rolls an application out version by version as a canary, moving replicas from the stable Deployment to the new one in percentage steps.",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Step", type_ = "string", json_path = ".status.step"),
    printcolumn(name = "Weight", type_ = "integer", json_path = ".status.weight", description = "Percent of replicas on the canary"),
    printcolumn(name = "Stable", type_ = "string", json_path = ".status.stableVersion"),
    printcolumn(name = "Canary", type_ = "string", json_path = ".status.canaryVersion"),
    printcolumn(name = "Stable-Replicas", type_ = "integer", json_path = ".status.stableReplicas", priority = 1),
    printcolumn(name = "Canary-Replicas", type_ = "integer", json_path = ".status.canaryReplicas", priority = 1),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("size(self.metadata.name) <= 63")
        .message("metadata.name must be at most 63 characters: the operator writes it into a label value")
)]
#[serde(rename_all = "camelCase")]
pub struct DeployerSpec {
    /// Rollout strategy. Only `canary` exists; it is the default.
    #[serde(default, rename = "type")]
    pub strategy: Strategy,

    /// The application: which image, which version, how many replicas.
    pub deployment: DeploymentSpec,

    /// The canary steps, in order. Percentages must strictly increase; if the last one is below
    /// 100, a final 100% step is implied.
    #[schemars(length(min = 1, max = 100))]
    #[x_kube(
        validation = Rule::new("self.map(s, s.percent).isSorted() && self.all(s, self.filter(t, t.percent == s.percent).size() == 1)")
            .message("steps: percent must strictly increase from one step to the next")
    )]
    pub steps: Vec<Step>,

    /// Seconds a step may take for the canary's pods to become available before the rollout is
    /// aborted and rolled back. Time spent in a step's sleep does not count.
    #[serde(default = "default_progress_deadline")]
    #[schemars(range(min = 1, max = 31536000))]
    pub progress_deadline_seconds: i64,

    /// Checks for the whole rollout: metrics measured during every step's wait, webhooks called
    /// at their gate points (docs/checks.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<Analysis>,

    /// Where to tell people about the rollout: step started and completed, rollout done, aborted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notifications: Option<Notifications>,
}

fn default_progress_deadline() -> i64 {
    DEFAULT_PROGRESS_DEADLINE_SECONDS
}

/// The rollout strategy.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// Move replicas to the new version in percentage steps.
    #[default]
    Canary,
}

/// The application a Deployer rolls out (the seed's `spec.deployment` block).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("size(self.name) + 1 + size(self.version) <= 253")
    .message("deployment.name + '-' + deployment.version must be at most 253 characters (a Deployment name)"))]
pub struct DeploymentSpec {
    /// Base name: each version's Deployment is `<name>-<version>`; also the container name.
    /// Immutable.
    #[x_kube(
        validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')")
            .message("deployment.name must be a DNS-1123 label: lowercase letters, digits and '-', starting and ending with a letter or digit"),
        validation = Rule::new("self == oldSelf").message("deployment.name is immutable")
    )]
    #[schemars(length(min = 1, max = 63))]
    pub name: String,

    /// Namespace of the Deployments. Optional; if set it must equal the Deployer's own namespace
    /// (owner references cannot cross namespaces).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,

    /// Container image without a tag; the operator runs `<image>:<version>`.
    #[x_kube(
        validation = Rule::new("!self.contains('@') && !self.matches(':[^/]*$')")
            .message("deployment.image must not carry a tag or digest: the tag comes from deployment.version")
    )]
    #[schemars(length(min = 1, max = 512))]
    pub image: String,

    /// Version to run: the image tag, and part of the Deployment name. Must be a string
    /// (quote it in YAML: `version: "1.10"`).
    #[x_kube(
        validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')")
            .message("deployment.version must be lowercase letters, digits, '-' and '.', starting and ending with a letter or digit (it becomes part of a Deployment name)")
    )]
    #[schemars(length(min = 1, max = 63))]
    pub version: String,

    /// Labels for the pods of every version; a Service selecting them spreads traffic over the
    /// versions by replica count. Immutable (they are part of each Deployment's selector).
    #[serde(default)]
    #[schemars(schema_with = "labels_schema")]
    pub labels: BTreeMap<String, String>,

    /// Total replicas the application should run (stable + canary).
    #[schemars(range(min = 0, max = 100000))]
    pub replicas: i32,
}

impl DeploymentSpec {
    /// The container image of one version: `<image>:<version>`.
    pub fn image_for(&self, version: &str) -> String {
        format!("{}:{version}", self.image)
    }
}

/// Schema of `deployment.labels`: bounded sizes keep the CEL rules within the API server's cost
/// budget.
fn labels_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "description": "Labels for the pods of every version; a Service selecting them spreads traffic over the versions by replica count. Immutable (they are part of each Deployment's selector).",
        "type": "object",
        "default": {},
        "maxProperties": 32,
        "additionalProperties": { "type": "string", "maxLength": 63 },
        "x-kubernetes-validations": [
            {
                "rule": "self == oldSelf",
                "message": "deployment.labels are immutable: they are part of each Deployment's selector"
            },
            {
                "rule": "self.all(k, !k.startsWith('deploy.example.com/'))",
                "message": "deployment.labels must not use the reserved prefix deploy.example.com/"
            },
            {
                "rule": "self.all(k, self[k].matches('^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$'))",
                "message": "deployment.labels values must be valid label values: letters, digits, '-', '_' and '.', starting and ending with a letter or digit"
            }
        ]
    })
}

/// One canary step.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(has(self.pause) && self.pause && self.sleep > 0)")
    .message("a step either sleeps or pauses until promoted (pause: true), not both"))]
pub struct Step {
    /// Percent of the replicas the new version runs at this step (1..=100).
    #[schemars(range(min = 1, max = 100))]
    pub percent: i32,
    /// Seconds to hold this step once its replicas are available.
    #[serde(default)]
    #[schemars(range(min = 0, max = 31536000))]
    pub sleep: i64,
    /// Hold this step, once its replicas are available, until the rollout is promoted.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pause: bool,
    /// Metrics measured during this step's wait only (in addition to `analysis.metrics`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[x_kube(validation = Rule::new("self.all(m, self.filter(n, n.name == m.name).size() == 1)")
        .message("steps[].metrics: names must be unique"))]
    pub metrics: Vec<MetricCheck>,
    /// Webhooks of this step only: `BeforeStep` or `AfterStep`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[x_kube(
        validation = Rule::new("self.all(w, self.filter(n, n.name == w.name).size() == 1)")
            .message("steps[].webhooks: names must be unique"),
        validation = Rule::new("self.all(w, !has(w.type) || w.type == 'BeforeStep' || w.type == 'AfterStep')")
            .message("steps[].webhooks: a step's webhook is BeforeStep or AfterStep; BeforePromotion and Rollback belong in spec.analysis.webhooks")
    )]
    pub webhooks: Vec<WebhookCheck>,
}

/// Checks for the whole rollout (`spec.analysis`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Analysis {
    /// The Prometheus the metrics are queried from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<PrometheusSource>,
    /// Metrics measured during every step's wait.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[x_kube(validation = Rule::new("self.all(m, self.filter(n, n.name == m.name).size() == 1)")
        .message("analysis.metrics: names must be unique"))]
    pub metrics: Vec<MetricCheck>,
    /// Webhooks called at their gate points, for every step.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[x_kube(validation = Rule::new("self.all(w, self.filter(n, n.name == w.name).size() == 1)")
        .message("analysis.webhooks: names must be unique"))]
    pub webhooks: Vec<WebhookCheck>,
}

/// A Prometheus server.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PrometheusSource {
    /// Base URL, e.g. `http://prometheus.monitoring:9090`.
    #[x_kube(validation = Rule::new("self.matches('^https?://[^/?#]+(/.*)?$')")
        .message("analysis.prometheus.address must be an http:// or https:// URL"))]
    #[schemars(length(min = 1, max = 2048))]
    pub address: String,
}

/// A PromQL query measured `count` times, `intervalSeconds` apart, during a step's wait. Each
/// result must be a single number within `min..=max`. `{{canary}}`, `{{stable}}`,
/// `{{deployment}}`, `{{namespace}}` and `{{deployer}}` in the query are replaced first.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.min) || has(self.max)")
        .message("a metric needs a success condition: min, max or both"),
    validation = Rule::new("!has(self.min) || !has(self.max) || self.min <= self.max")
        .message("a metric's min must not exceed its max")
)]
pub struct MetricCheck {
    /// Name, unique among the checks of a step (used in status, Events and notifications).
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')")
        .message("metrics[].name must be lowercase letters, digits and '-'"))]
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// The PromQL query; it must return one number (a scalar, or a vector of one sample).
    #[schemars(length(min = 1, max = 4096))]
    pub query: String,
    /// A measurement passes when its value is at least this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// A measurement passes when its value is at most this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// Seconds between measurements; the first is taken one interval into the wait.
    #[serde(default = "default_interval")]
    #[schemars(range(min = 1, max = 3600))]
    pub interval_seconds: i64,
    /// Measurements to take; the check passes once all are taken within the failure limit.
    #[serde(default = "default_count")]
    #[schemars(range(min = 1, max = 100))]
    pub count: i32,
    /// Failed measurements tolerated; one more aborts the rollout.
    #[serde(default)]
    #[schemars(range(min = 0, max = 100))]
    pub failure_limit: i32,
}

fn default_interval() -> i64 {
    10
}

fn default_count() -> i32 {
    3
}

/// An HTTP POST of the rollout's state (docs/checks.md has the payload); a 2xx answer passes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookCheck {
    /// Name, unique among the webhooks of its list.
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')")
        .message("webhooks[].name must be lowercase letters, digits and '-'"))]
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// The gate point it guards (default `AfterStep`).
    #[serde(default, rename = "type")]
    pub gate: HookPoint,
    /// Where to POST.
    #[x_kube(validation = Rule::new("self.matches('^https?://[^/?#]+([/?#].*)?$')")
        .message("webhooks[].url must be an http:// or https:// URL"))]
    #[schemars(length(min = 1, max = 2048))]
    pub url: String,
    /// Seconds to wait for an answer.
    #[serde(default = "default_timeout")]
    #[schemars(range(min = 1, max = 300))]
    pub timeout_seconds: i64,
    /// Further attempts after a timeout, a connection error or a 5xx answer (a 4xx is final).
    #[serde(default = "default_retries")]
    #[schemars(range(min = 0, max = 10))]
    pub retries: i32,
    /// Sent as `metadata` in the payload.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 32))]
    pub metadata: BTreeMap<String, String>,
}

fn default_timeout() -> i64 {
    10
}

fn default_retries() -> i32 {
    2
}

/// Where a webhook is called.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, JsonSchema)]
pub enum HookPoint {
    /// Before a step's scale-up (its failure aborts).
    BeforeStep,
    /// After a step's wait, before the next step (its failure aborts).
    #[default]
    AfterStep,
    /// Before the scale-up of the final 100% step (its failure aborts).
    BeforePromotion,
    /// When the rollout is aborted; told, not asked: it never delays the rollback.
    Rollback,
}

/// Notifications (`spec.notifications`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Notifications {
    /// The Secret, in the Deployer's namespace, with the URLs: `slackUrl` (a Slack incoming
    /// webhook), `webhookUrl` (a generic JSON webhook) and optionally `webhookToken` (sent as a
    /// bearer token). The operator needs `get` on this Secret only (docs/checks.md).
    pub secret_ref: SecretRef,
}

/// A Secret in the Deployer's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    /// The Secret's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Phases of a rollout, as persisted in `status.phase`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Phase {
    /// A new version was asked for: the stable is held at full size and the canary created at 0.
    Init,
    /// The current step's replicas are being moved (new version up first, then the old down).
    Scaling,
    /// The current step's replicas are in place; holding until `status.waitUntil`.
    Waiting,
    /// The new version is at 100%: the old versions are being deleted.
    Finalizing,
    /// One version runs at full size; nothing to do.
    Done,
    /// The rollout was rolled back to the stable version.
    Aborted,
    /// Held at the current step: by the `deploy.example.com/paused` annotation, by a step with
    /// `pause: true` until promoted, or by an inconclusive check.
    Paused,
    /// A gate's webhooks run: before a step's scale-up, or after its wait.
    Checking,
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

/// Who paused a rollout (`status.pausedBy`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum PauseCause {
    /// The `deploy.example.com/paused` annotation: resumes when it goes.
    Annotation,
    /// A step with `pause: true`: resumes when promoted.
    Step,
    /// A check that could not tell (no data): resumes when promoted.
    Check,
}

/// Why a rollout was aborted (`status.abortReason`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum AbortReason {
    /// The canary did not become available within the progress deadline.
    ProgressDeadlineExceeded,
    /// Someone asked for it (`deploy.example.com/abort`).
    AbortRequested,
    /// A metric or webhook check failed (`status.checkVerdict` says which and why).
    CheckFailed,
}

/// Where checks run (`status.gate`, `status.checks[].gate`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum Gate {
    /// Before a step's scale-up (webhooks).
    BeforeStep,
    /// During a step's wait (metrics).
    Wait,
    /// After a step's wait (webhooks).
    AfterStep,
    /// On an abort (webhooks, told rather than asked).
    Rollback,
}

/// What a check says (`status.checks[].phase`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum CheckPhase {
    /// More measurements or calls are due.
    Running,
    /// Every measurement passed (within the failure limit), or the webhook answered 2xx.
    Passed,
    /// Too many measurements failed, or the webhook failed for good.
    Failed,
    /// A measurement gave no number.
    Inconclusive,
}

/// The wire name of a closed-set value: the same string serde writes (`Display` of these enums).
macro_rules! wire_names {
    ($($t:ty),*) => {$(
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                std::fmt::Debug::fmt(self, f)
            }
        }
    )*};
}
wire_names!(PauseCause, AbortReason, Gate, CheckPhase);

/// The Deployer's status: the rollout's only memory. Written by the operator alone.
//
// Reading it never fails: a status this operator cannot read (written by hand through the status
// subresource, or by another version with values this one does not know) deserializes with
// `unreadable` set to the reason, its conditions kept where they parse. The rollout core then
// halts that one Deployer with a condition and a Warning Event instead of acting on a guess — and
// a list of Deployers never fails because of one of them.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", remote = "Self")]
pub struct DeployerStatus {
    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Where the rollout is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// The current step as `N/M` (for display).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// The current step, 1-based, of the rollout's plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_step: Option<i32>,
    /// Percent of the replicas the canary runs at the current step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<i32>,
    /// The version serving before the rollout; the one an abort returns to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_version: Option<String>,
    /// The version being rolled out (kept after an abort: the version that failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_version: Option<String>,
    /// Replicas the current phase asks of the stable version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_replicas: Option<i32>,
    /// Replicas the current phase asks of the canary version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_replicas: Option<i32>,
    /// The steps this rollout runs, as `percent%/sleeps` (or `percent%/pause`) items; a change of
    /// `spec.steps` restarts the rollout from step 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
    /// When the current step's scaling started (its progress deadline counts from here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_started_at: Option<DateTime<Utc>>,
    /// When the current step's wait ends (an absolute time: survives restarts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_until: Option<DateTime<Utc>>,
    /// Who paused the rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_by: Option<PauseCause>,
    /// What was left of the current step's wait when the rollout was paused (milliseconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_wait_millis: Option<i64>,
    /// Why the rollout was aborted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort_reason: Option<AbortReason>,
    /// In phase Checking, the gate point: `BeforeStep` or `AfterStep`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<Gate>,
    /// What a check said when it aborted or paused the rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_verdict: Option<String>,
    /// The checks of the current (or last) gate: counts, last result, last error.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<CheckStatus>,
    /// The control requests (annotation values) already carried out, so each is acted on once.
    #[serde(default, skip_serializing_if = "Controls::is_empty")]
    pub handled: Controls,
    /// The seed's progress block.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
    /// Standard conditions: `Ready` and `Progressing`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Why the stored status could not be read (`None`: it was read). Never written.
    #[serde(skip)]
    #[schemars(skip)]
    pub unreadable: Option<String>,
}

impl Serialize for DeployerStatus {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        DeployerStatus::serialize(self, serializer)
    }
}

impl<'de> Deserialize<'de> for DeployerStatus {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = serde_json::Value::deserialize(deserializer)?;
        Ok(DeployerStatus::read(&raw))
    }
}

impl DeployerStatus {
    /// Reads a stored status; what cannot be read is an [`unreadable`](Self::unreadable) status
    /// that names the field and why.
    fn read(raw: &serde_json::Value) -> DeployerStatus {
        let mut track = serde_path_to_error::Track::new();
        let de = serde_path_to_error::Deserializer::new(raw, &mut track);
        match DeployerStatus::deserialize(de) {
            Ok(status) => status,
            Err(err) => {
                let path = track.path().to_string();
                let field = if path == "." { "status".to_string() } else { format!("status.{path}") };
                let field_of = |key: &str| raw.get(key).cloned().unwrap_or_default();
                DeployerStatus {
                    observed_generation: serde_json::from_value(field_of("observedGeneration")).ok(),
                    conditions: serde_json::from_value(field_of("conditions")).unwrap_or_default(),
                    unreadable: Some(format!("{field}: {err}")),
                    ..DeployerStatus::default()
                }
            }
        }
    }
}

/// The persisted state of one check at one gate.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckStatus {
    /// `metric/<name>` or `webhook/<name>`.
    pub name: String,
    /// Where it runs.
    pub gate: Gate,
    /// The step (1-based) it runs for.
    pub step: i32,
    /// Where the check is.
    pub phase: CheckPhase,
    /// Measurements taken (a metric) or calls made (a webhook).
    pub runs: i32,
    /// Measurements that failed (a metric) or failed calls (a webhook).
    pub failures: i32,
    /// The last value (a metric) or HTTP status (a webhook).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_value: Option<String>,
    /// The last error or failed condition, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When it last ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_at: Option<DateTime<Utc>>,
    /// When it runs next (while `Running`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_at: Option<DateTime<Utc>>,
    /// When the call of this run was made, while its answer is awaited: persisted before the
    /// call goes out, so that a restart waits for it (or counts it as unanswered once its timeout
    /// has passed) instead of making it again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
}

/// Annotation that pauses a rollout while its value is `"true"`.
pub const PAUSED_ANNOTATION: &str = "deploy.example.com/paused";
/// Annotation whose new value asks to end the current wait or pause and go to the next step.
pub const PROMOTE_ANNOTATION: &str = "deploy.example.com/promote";
/// Annotation whose new value asks to go to 100% now (new version up first, as always).
pub const PROMOTE_FULL_ANNOTATION: &str = "deploy.example.com/promote-full";
/// Annotation whose new value asks to roll back to the stable version.
pub const ABORT_ANNOTATION: &str = "deploy.example.com/abort";
/// Annotation whose new value asks to restart an aborted rollout from step 1.
pub const RETRY_ANNOTATION: &str = "deploy.example.com/retry";

/// One-shot control requests: the value of each request annotation. A request is carried out
/// when its value differs from the one recorded in `status.handled`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Controls {
    /// `deploy.example.com/promote`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promote: Option<String>,
    /// `deploy.example.com/promote-full`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promote_full: Option<String>,
    /// `deploy.example.com/abort`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<String>,
    /// `deploy.example.com/retry`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<String>,
}

impl Controls {
    /// Whether no request is recorded.
    pub fn is_empty(&self) -> bool {
        *self == Controls::default()
    }
}

/// The seed operator's human-readable progress block (same texts).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    /// `no. <step>`.
    pub step: String,
    /// `<percent>% has been deployed`.
    pub percentage: String,
    /// `<seconds>s till next step`: the time left in the current wait.
    pub wait: String,
}

/// A condition in the Kubernetes convention (same fields as `metav1.Condition`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// `Ready` or `Progressing`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// CamelCase reason.
    pub reason: String,
    /// Human-readable detail.
    pub message: String,
    /// When `status` last changed.
    pub last_transition_time: DateTime<Utc>,
    /// The generation the condition was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

impl DeployerStatus {
    /// The condition of the given type, if set.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }
}

#[cfg(test)]
mod tests {
    use kube::CustomResourceExt;

    use super::*;

    #[test]
    fn the_committed_crd_matches_the_rust_types() {
        let generated = serde_yaml::to_string(&Deployer::crd()).expect("CRD renders");
        let committed = include_str!("../crds/deployer.yaml");
        assert!(
            generated == committed,
            "crds/deployer.yaml is stale: run `make crds` (cargo run -- crd > crds/deployer.yaml)"
        );
    }

    #[test]
    fn the_seed_sample_parses_unchanged_with_defaults() {
        let sample = include_str!("../examples/nginx-deployer.yaml");
        let d: Deployer = serde_yaml::from_str(sample).expect("the seed sample parses");
        assert_eq!(d.spec.strategy, Strategy::Canary);
        assert_eq!(d.spec.deployment.version, "1.7.7");
        assert_eq!(d.spec.steps.len(), 4);
        assert_eq!(d.spec.steps[3], Step { percent: 100, ..Step::default() });
        assert_eq!(d.spec.progress_deadline_seconds, DEFAULT_PROGRESS_DEADLINE_SECONDS);
    }
}
