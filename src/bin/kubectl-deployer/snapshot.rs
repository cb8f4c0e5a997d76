//! What the plugin knows of one Deployer at an instant: the object, the Deployments it owns and
//! the Events about it. Every view is a pure function of a [`Snapshot`] and the time.

use chrono::{DateTime, Utc};
use deployer_operator::{
    api::{Deployer, Phase},
    resources::{VERSION_LABEL, deployment_name},
};
use k8s_openapi::{
    api::{apps::v1::Deployment, events::v1::Event},
    jiff::Timestamp,
};
use kube::ResourceExt;

/// One Deployer and what belongs to it, as read at one instant.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    /// The namespace asked for.
    pub namespace: String,
    /// The Deployer's name.
    pub name: String,
    /// The Deployer; `None` if there is none of that name (never created, or deleted).
    pub deployer: Option<Deployer>,
    /// The Deployments it owns (controller owner reference and deployer label).
    pub deployments: Vec<Deployment>,
    /// The Events about it (`regarding` names it), in any order.
    pub events: Vec<Event>,
}

/// The replica counts of one Deployment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Replicas {
    /// `spec.replicas`: what it is asked to run.
    pub desired: i32,
    /// `status.readyReplicas`.
    pub ready: i32,
    /// `status.availableReplicas`.
    pub available: i32,
}

impl Snapshot {
    /// The Deployment that runs `version`: `<deployment.name>-<version>`, or failing that, the
    /// one whose version label says so.
    pub fn deployment(&self, version: &str) -> Option<&Deployment> {
        let name = self.deployer.as_ref().map(|d| deployment_name(&d.spec.deployment, version));
        self.deployments.iter().find(|d| Some(d.name_any()) == name).or_else(|| {
            self.deployments
                .iter()
                .find(|d| d.labels().get(VERSION_LABEL).map(String::as_str) == Some(version))
        })
    }

    /// The `n` most recent Events, oldest first.
    pub fn recent_events(&self, n: usize) -> Vec<&Event> {
        let mut events: Vec<&Event> = self.events.iter().collect();
        events.sort_by_key(|e| (event_time(e), e.metadata.name.clone()));
        let skip = events.len().saturating_sub(n);
        events.into_iter().skip(skip).collect()
    }

    /// The Deployer's phase, if it has a status.
    pub fn phase(&self) -> Option<Phase> {
        self.deployer.as_ref().and_then(|d| d.status.as_ref()).and_then(|s| s.phase)
    }
}

/// The replica counts of a Deployment.
pub fn replicas(d: &Deployment) -> Replicas {
    let status = d.status.as_ref();
    Replicas {
        desired: d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
        ready: status.and_then(|s| s.ready_replicas).unwrap_or(0),
        available: status.and_then(|s| s.available_replicas).unwrap_or(0),
    }
}

/// When an Event last happened: its series' last observation, its event time, or (for Events
/// written through the old API) its last timestamp or creation time.
pub fn event_time(e: &Event) -> Option<DateTime<Utc>> {
    e.series
        .as_ref()
        .map(|s| &s.last_observed_time.0)
        .or(e.event_time.as_ref().map(|t| &t.0))
        .or(e.deprecated_last_timestamp.as_ref().map(|t| &t.0))
        .or(e.metadata.creation_timestamp.as_ref().map(|t| &t.0))
        .map(chrono_time)
}

/// A Kubernetes timestamp as a chrono time.
pub fn chrono_time(t: &Timestamp) -> DateTime<Utc> {
    let nanos = i64::try_from(t.as_nanosecond()).unwrap_or(i64::MAX);
    DateTime::from_timestamp_nanos(nanos)
}

/// Builders of objects for the unit tests of the views.
#[cfg(test)]
pub mod fixtures {
    use chrono::{DateTime, TimeDelta, Utc};
    use deployer_operator::api::Deployer;
    use k8s_openapi::api::{apps::v1::Deployment, events::v1::Event};
    use serde_json::{Value, json};

    use super::Snapshot;

    /// The fixed "now" of the tests.
    pub fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2025-06-01T12:00:00Z").expect("time").to_utc()
    }

    /// `now() + seconds`, as an RFC 3339 string.
    pub fn at(seconds: i64) -> String {
        (now() + TimeDelta::seconds(seconds)).to_rfc3339()
    }

    /// A Deployer `app` in `demo` (4 replicas, steps 25/50/75 with 30 s sleeps, generation 3),
    /// with `status` as given.
    pub fn deployer(mut status: Value) -> Deployer {
        complete(&mut status);
        serde_json::from_value(json!({
            "apiVersion": "deploy.example.com/v1alpha1",
            "kind": "Deployer",
            "metadata": {
                "name": "app", "namespace": "demo", "uid": "u-1", "generation": 3,
                "creationTimestamp": at(-300),
            },
            "spec": {
                "deployment": {"name": "app", "image": "nginx", "version": "2.0.0", "replicas": 4},
                "steps": [{"percent": 25, "sleep": 30}, {"percent": 50, "sleep": 30}, {"percent": 75, "sleep": 30}],
            },
            "status": status,
        }))
        .expect("a Deployer")
    }

    /// Fills in what the operator always writes beside a phase, where a test leaves it out: the
    /// plan, the versions, the step number, and the times of Scaling and Waiting (the operator's
    /// codec reads nothing less).
    fn complete(status: &mut Value) {
        let Some(fields) = status.as_object_mut() else { return };
        let Some(phase) = fields.get("phase").and_then(Value::as_str).map(str::to_string) else { return };
        let done = matches!(phase.as_str(), "Done" | "Finalizing");
        fields.entry("plan").or_insert(json!("25%/30s,50%/30s,75%/30s,100%/0s"));
        fields.entry("stableVersion").or_insert(json!(if done { "2.0.0" } else { "1.0.0" }));
        if !done {
            fields.entry("canaryVersion").or_insert(json!("2.0.0"));
        }
        let step =
            fields.get("step").and_then(Value::as_str).and_then(|s| s.split('/').next()?.parse::<i64>().ok());
        fields.entry("currentStep").or_insert(json!(step.unwrap_or(1)));
        match phase.as_str() {
            "Scaling" => fields.entry("stepStartedAt").or_insert(json!(at(0))),
            "Waiting" => fields.entry("waitUntil").or_insert(json!(at(30))),
            _ => return,
        };
    }

    /// An owned Deployment `app-<version>`.
    pub fn deployment(version: &str, desired: i32, ready: i32, available: i32) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {
                "name": format!("app-{version}"), "namespace": "demo",
                "labels": {"deploy.example.com/deployer": "app", "deploy.example.com/version": version},
            },
            "spec": {
                "replicas": desired,
                "selector": {"matchLabels": {"deploy.example.com/version": version}},
                "template": {"spec": {"containers": [{"name": "app"}]}},
            },
            "status": {"replicas": desired, "readyReplicas": ready, "availableReplicas": available},
        }))
        .expect("a Deployment")
    }

    /// An Event about `app`, `ago` seconds before now.
    pub fn event(ago: i64, type_: &str, reason: &str, note: &str) -> Event {
        serde_json::from_value(json!({
            "metadata": {"name": format!("app.{ago}"), "namespace": "demo"},
            "eventTime": (now() - TimeDelta::seconds(ago)).to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            "type": type_, "reason": reason, "note": note,
            "regarding": {"kind": "Deployer", "name": "app", "namespace": "demo"},
        }))
        .expect("an Event")
    }

    /// A snapshot of `app` with its Deployments and Events.
    pub fn snapshot(deployer: Deployer, deployments: Vec<Deployment>, events: Vec<Event>) -> Snapshot {
        Snapshot {
            namespace: "demo".into(),
            name: "app".into(),
            deployer: Some(deployer),
            deployments,
            events,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{fixtures::*, *};

    #[test]
    fn recent_events_are_the_last_ones_oldest_first() {
        let events = (1..=7).rev().map(|ago| event(ago * 10, "Normal", &format!("R{ago}"), "")).collect();
        let snap = snapshot(deployer(json!({})), vec![], events);
        let reasons: Vec<_> =
            snap.recent_events(5).iter().map(|e| e.reason.clone().unwrap_or_default()).collect();
        assert_eq!(reasons, ["R5", "R4", "R3", "R2", "R1"]);
    }

    #[test]
    fn a_version_finds_its_deployment_by_name() {
        let snap = snapshot(
            deployer(json!({})),
            vec![deployment("1.0.0", 3, 3, 3), deployment("2.0.0", 1, 0, 0)],
            vec![],
        );
        assert_eq!(
            snap.deployment("2.0.0").map(replicas),
            Some(Replicas { desired: 1, ready: 0, available: 0 })
        );
        assert!(snap.deployment("3.0.0").is_none());
    }

    #[test]
    fn kubernetes_times_convert_exactly() {
        let t: Timestamp = "2025-06-01T12:00:00.123456Z".parse().expect("time");
        assert_eq!(chrono_time(&t).to_rfc3339(), "2025-06-01T12:00:00.123456+00:00");
    }
}
