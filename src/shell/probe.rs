//! The I/O of step gates and notifications: PromQL queries, webhook calls, and messages to a
//! Slack incoming webhook or a generic JSON webhook.
//!
//! What a call means is decided in [`crate::checks`]; this module only makes it and reports what
//! came back. Errors are described without their URL: webhook and notification URLs often carry
//! a token, and they are never logged.

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future;
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};
use tracing::{debug, warn};

use crate::{
    api::Deployer,
    checks::{Answer, Call, Outcome, Request},
    rollout::{Note, Reason, Severity},
};

/// How long a PromQL query may take.
const QUERY_TIMEOUT: Duration = Duration::from_secs(crate::checks::QUERY_TIMEOUT_SECONDS as u64);
/// How long a notification may take.
const NOTIFY_TIMEOUT: Duration = Duration::from_secs(10);
/// The most of a Prometheus answer that is read: one number needs a few hundred bytes; an endpoint
/// the tenant names must not make the operator hold more.
pub const MAX_QUERY_BODY: usize = 1 << 20;

/// Makes the calls of checks and sends notifications. Cheap to clone.
#[derive(Clone)]
pub struct Prober {
    http: reqwest::Client,
}

impl Prober {
    /// A prober with its own connection pool.
    pub fn new() -> Self {
        let http = reqwest::Client::builder()
            .user_agent(concat!("deployer-operator/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(5))
            .build()
            .unwrap_or_default();
        Self { http }
    }

    /// Makes `calls` concurrently and returns their answers.
    pub async fn run(&self, calls: &[Call]) -> Vec<Outcome> {
        future::join_all(calls.iter().map(|call| self.call(call))).await
    }

    /// Makes one call and returns its answer.
    pub async fn call(&self, call: &Call) -> Outcome {
        let answer = match &call.request {
            Request::Query { address, query } => self.query(address, query).await,
            Request::Post { url, timeout, payload } => self.post(url, *timeout, payload).await,
        };
        debug!(check = %call.check, step = call.key.step, run = call.key.run, ?answer, "check answered");
        Outcome { check: call.check.clone(), key: call.key.clone(), answer }
    }

    /// An instant query: its one number, or why there is none. At most [`MAX_QUERY_BODY`] bytes
    /// of the answer are read.
    async fn query(&self, address: &str, query: &str) -> Answer {
        let url = format!("{}/api/v1/query", address.trim_end_matches('/'));
        let sent = self.http.get(url).query(&[("query", query)]).timeout(QUERY_TIMEOUT).send().await;
        let mut response = match sent {
            Ok(response) => response,
            Err(err) => return Answer::Unreachable(format!("cannot query Prometheus: {}", describe(err))),
        };
        let mut body = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) if body.len() + chunk.len() > MAX_QUERY_BODY => {
                    return Answer::Unreachable(format!(
                        "Prometheus answered more than {MAX_QUERY_BODY} bytes: not one number"
                    ));
                }
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                Ok(None) => break,
                Err(err) => {
                    return Answer::Unreachable(format!("cannot read Prometheus' answer: {}", describe(err)));
                }
            }
        }
        match serde_json::from_slice::<Value>(&body) {
            Ok(body) => read_query_result(&body),
            Err(err) => Answer::Unreachable(format!("Prometheus answered no JSON: {err}")),
        }
    }

    /// A webhook call: its HTTP status, or why there is none. Its body is never read.
    async fn post(&self, url: &str, timeout: Duration, payload: &Value) -> Answer {
        match self.http.post(url).json(payload).timeout(timeout).send().await {
            Ok(response) => Answer::Status(response.status().as_u16()),
            Err(err) if err.is_timeout() => {
                Answer::Unreachable(format!("no answer within {}s", timeout.as_secs()))
            }
            Err(err) => Answer::Unreachable(describe(err)),
        }
    }

    /// Sends the notes worth telling to the Deployer's notification targets (best effort:
    /// failures are logged and returned, never retried).
    pub async fn notify(&self, client: &Client, dpl: &Deployer, notes: &[Note]) -> Result<usize, String> {
        let Some(config) = &dpl.spec.notifications else { return Ok(0) };
        let notes: Vec<&Note> = notes.iter().filter(|n| worth_telling(n)).collect();
        if notes.is_empty() {
            return Ok(0);
        }
        let ns = dpl.namespace().unwrap_or_default();
        let secret = Api::<Secret>::namespaced(client.clone(), &ns)
            .get(&config.secret_ref.name)
            .await
            .map_err(|err| format!("cannot read Secret {ns}/{}: {err}", config.secret_ref.name))?;
        let key = |k: &str| {
            secret
                .data
                .as_ref()
                .and_then(|d| d.get(k))
                .and_then(|v| String::from_utf8(v.0.clone()).ok())
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let (slack, generic, token) = (key("slackUrl"), key("webhookUrl"), key("webhookToken"));
        if slack.is_none() && generic.is_none() {
            return Err(format!(
                "Secret {ns}/{} has neither slackUrl nor webhookUrl",
                config.secret_ref.name
            ));
        }
        let now = Utc::now();
        let mut sent = 0;
        let mut failed = Vec::new();
        for note in notes {
            if let Some(url) = &slack {
                match self.deliver(url, None, &slack_message(dpl, note)).await {
                    Ok(()) => sent += 1,
                    Err(err) => failed.push(format!("slackUrl: {err}")),
                }
            }
            if let Some(url) = &generic {
                match self.deliver(url, token.as_deref(), &generic_message(dpl, note, now)).await {
                    Ok(()) => sent += 1,
                    Err(err) => failed.push(format!("webhookUrl: {err}")),
                }
            }
        }
        if failed.is_empty() { Ok(sent) } else { Err(failed.join("; ")) }
    }

    async fn deliver(&self, url: &str, token: Option<&str>, body: &Value) -> Result<(), String> {
        let mut request = self.http.post(url).json(body).timeout(NOTIFY_TIMEOUT);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        match request.send().await {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => Err(format!("answered HTTP {}", r.status().as_u16())),
            Err(err) => Err(describe(err)),
        }
    }
}

impl Default for Prober {
    fn default() -> Self {
        Self::new()
    }
}

/// An HTTP error in words, without its URL.
fn describe(err: reqwest::Error) -> String {
    let kind = if err.is_timeout() {
        "timed out"
    } else if err.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    let err = err.without_url();
    let mut text = format!("{kind}: {err}");
    let mut source = std::error::Error::source(&err);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// The one number of a Prometheus query answer, or why there is none.
pub fn read_query_result(body: &Value) -> Answer {
    if body["status"] != "success" {
        let kind = body["errorType"].as_str().unwrap_or("error");
        let error = body["error"].as_str().unwrap_or("no detail");
        return Answer::Unreachable(format!("Prometheus refused the query ({kind}): {error}"));
    }
    let data = &body["data"];
    let sample = match data["resultType"].as_str() {
        Some("scalar") => &data["result"],
        Some("vector") => match data["result"].as_array().map(Vec::as_slice) {
            Some([]) | None => return Answer::NoData("the query returned no data".into()),
            Some([one]) => &one["value"],
            Some(many) => {
                return Answer::NoData(format!(
                    "the query returned {} series; it must return one number (aggregate it, e.g. with sum)",
                    many.len()
                ));
            }
        },
        other => {
            return Answer::NoData(format!(
                "the query returned a {}; it must return one number",
                other.unwrap_or("nothing")
            ));
        }
    };
    match sample[1].as_str().map(str::parse::<f64>) {
        Some(Ok(v)) if v.is_finite() => Answer::Value(v),
        Some(Ok(v)) => Answer::NoData(format!("the query returned {v}")),
        _ => Answer::NoData("the query returned no number".into()),
    }
}

/// The Events worth a notification: a rollout starting, its steps in place, the rollout done, an
/// abort and a pause by a check.
fn worth_telling(note: &Note) -> bool {
    matches!(
        note.reason,
        Reason::RolloutStarted
            | Reason::StepStarted
            | Reason::StepCompleted
            | Reason::StepPaused
            | Reason::RolloutComplete
            | Reason::RolledBack
    ) || note.severity == Severity::Warning
}

/// A Slack incoming-webhook message: `text` (also the notification's fallback) and one section
/// block with a context line.
pub fn slack_message(dpl: &Deployer, note: &Note) -> Value {
    let ns = dpl.namespace().unwrap_or_default();
    let name = dpl.name_any();
    let icon = match (note.severity, note.reason) {
        (Severity::Warning, _) => ":warning:",
        (_, Reason::RolloutComplete) => ":white_check_mark:",
        _ => ":arrow_forward:",
    };
    let status = dpl.status.clone().unwrap_or_default();
    let text = format!("{icon} *{ns}/{name}* {}: {}", note.reason, escape(&note.message));
    let context = format!(
        "stable {} · canary {} · step {}",
        status.stable_version.as_deref().unwrap_or("-"),
        status.canary_version.as_deref().unwrap_or(&dpl.spec.deployment.version),
        status.step.as_deref().unwrap_or("-"),
    );
    json!({
        "text": text,
        "blocks": [
            { "type": "section", "text": { "type": "mrkdwn", "text": text } },
            { "type": "context", "elements": [ { "type": "mrkdwn", "text": escape(&context) } ] }
        ]
    })
}

/// Slack's three control characters, escaped.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// The generic notification (docs/checks.md).
pub fn generic_message(dpl: &Deployer, note: &Note, at: DateTime<Utc>) -> Value {
    let status = dpl.status.clone().unwrap_or_default();
    json!({
        "deployer": dpl.name_any(),
        "namespace": dpl.namespace(),
        "reason": note.reason.as_str(),
        "type": match note.severity { Severity::Normal => "Normal", Severity::Warning => "Warning" },
        "message": note.message,
        "version": dpl.spec.deployment.version,
        "stableVersion": status.stable_version,
        "canaryVersion": status.canary_version,
        "time": at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    })
}

/// Logs a notification failure (never with a URL: `err` was built without them).
pub fn report(dpl: &Deployer, result: Result<usize, String>) {
    match result {
        Ok(0) => {}
        Ok(sent) => debug!(deployer = %dpl.name_any(), sent, "notified"),
        Err(err) => warn!(deployer = %dpl.name_any(), %err, "notification failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::seed_deployer;

    #[test]
    fn a_vector_of_one_sample_is_its_value() {
        let body = json!({"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1.0,"0.995"]}]}});
        assert_eq!(read_query_result(&body), Answer::Value(0.995));
    }

    #[test]
    fn a_scalar_is_its_value() {
        let body = json!({"status":"success","data":{"resultType":"scalar","result":[1.0,"3"]}});
        assert_eq!(read_query_result(&body), Answer::Value(3.0));
    }

    #[test]
    fn no_series_nan_or_many_series_are_no_data() {
        let empty = json!({"status":"success","data":{"resultType":"vector","result":[]}});
        assert!(matches!(read_query_result(&empty), Answer::NoData(why) if why.contains("no data")));
        let nan = json!({"status":"success","data":{"resultType":"vector","result":[{"value":[1.0,"NaN"]}]}});
        assert!(matches!(read_query_result(&nan), Answer::NoData(why) if why.contains("NaN")));
        let two = json!({"status":"success","data":{"resultType":"vector","result":[{"value":[1,"1"]},{"value":[1,"2"]}]}});
        assert!(matches!(read_query_result(&two), Answer::NoData(why) if why.contains("2 series")));
        let matrix = json!({"status":"success","data":{"resultType":"matrix","result":[]}});
        assert!(matches!(read_query_result(&matrix), Answer::NoData(why) if why.contains("matrix")));
    }

    #[test]
    fn a_refused_query_says_why() {
        let body = json!({"status":"error","errorType":"bad_data","error":"parse error at char 4"});
        assert_eq!(
            read_query_result(&body),
            Answer::Unreachable("Prometheus refused the query (bad_data): parse error at char 4".into())
        );
    }

    #[test]
    fn the_slack_message_has_text_and_escaped_blocks() {
        let dpl = seed_deployer();
        let note = Note {
            severity: Severity::Warning,
            reason: Reason::CheckFailed,
            message: "x < 1 & y > 2".into(),
        };
        let m = slack_message(&dpl, &note);
        assert_eq!(m["text"], ":warning: *default/nginx* CheckFailed: x &lt; 1 &amp; y &gt; 2");
        assert_eq!(m["blocks"][0]["type"], "section");
        assert_eq!(m["blocks"][0]["text"]["type"], "mrkdwn");
        assert_eq!(m["blocks"][1]["type"], "context");
    }

    #[test]
    fn only_progress_and_warnings_are_told() {
        let note = |severity, reason| Note { severity, reason, message: String::new() };
        assert!(worth_telling(&note(Severity::Normal, Reason::RolloutStarted)));
        assert!(worth_telling(&note(Severity::Normal, Reason::StepStarted)));
        assert!(worth_telling(&note(Severity::Normal, Reason::RolloutComplete)));
        assert!(worth_telling(&note(Severity::Warning, Reason::CheckFailed)));
        assert!(!worth_telling(&note(Severity::Normal, Reason::Resumed)));
        assert!(!worth_telling(&note(Severity::Normal, Reason::GateChecking)));
    }
}
