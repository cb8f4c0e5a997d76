//! `kubectl deployer list`: one line per Deployer, like `kubectl get dpl` with colours.

use chrono::{DateTime, Utc};
use deployer_operator::api::Deployer;
use kube::ResourceExt;

use crate::{
    frame::phase_tone,
    snapshot::chrono_time,
    style::{Cell, Style, Tone, human, table},
};

/// The table of `deployers` at `now` (with a NAMESPACE column for `all_namespaces`), one line per
/// Deployer under a header, without a trailing newline.
pub fn list(deployers: &[Deployer], all_namespaces: bool, now: DateTime<Utc>, style: Style) -> String {
    let mut header = vec!["NAME", "PHASE", "STEP", "WEIGHT", "STABLE", "CANARY", "AGE"];
    if all_namespaces {
        header.insert(0, "NAMESPACE");
    }
    let mut rows = vec![header.into_iter().map(Cell::plain).collect::<Vec<_>>()];
    for d in deployers {
        let status = d.status.clone().unwrap_or_default();
        let phase = match status.phase {
            Some(p) => Cell::toned(p.to_string(), phase_tone(p)),
            None => Cell::toned("Pending", Tone::Warn),
        };
        let mut row = vec![
            Cell::plain(d.name_any()),
            phase,
            Cell::plain(status.step.unwrap_or_default()),
            Cell::plain(status.weight.map(|w| format!("{w}%")).unwrap_or_default()),
            Cell::plain(status.stable_version.unwrap_or_default()),
            Cell::plain(status.canary_version.unwrap_or_default()),
            Cell::plain(d.creation_timestamp().map_or("-".into(), |t| human(now - chrono_time(&t.0)))),
        ];
        if all_namespaces {
            row.insert(0, Cell::plain(d.namespace().unwrap_or_default()));
        }
        rows.push(row);
    }
    let mut lines = table(&rows, style, "");
    lines[0] = style.paint(&lines[0], Tone::Strong);
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::snapshot::fixtures::{deployer, now};

    #[test]
    fn one_line_per_deployer_with_phase_step_weight_versions_and_age() {
        let waiting = deployer(json!({
            "phase": "Waiting", "step": "2/4", "weight": 50, "stableVersion": "1.0.0", "canaryVersion": "2.0.0",
        }));
        let mut done = deployer(json!({"phase": "Done", "step": "4/4", "stableVersion": "1.7.8"}));
        done.metadata.name = Some("nginx".into());
        done.metadata.namespace = Some("web".into());
        let mut fresh = deployer(json!({}));
        fresh.metadata.name = Some("new".into());
        fresh.status = None;
        let deployers = [waiting, done, fresh];
        assert_eq!(
            list(&deployers, false, now(), Style::PLAIN),
            "\
NAME    PHASE     STEP   WEIGHT   STABLE   CANARY   AGE
app     Waiting   2/4    50%      1.0.0    2.0.0    5m
nginx   Done      4/4             1.7.8             5m
new     Pending                                     5m"
        );
        let all = list(&deployers, true, now(), Style::PLAIN);
        assert!(all.starts_with("NAMESPACE   NAME    PHASE"), "{all}");
        assert!(all.contains("\nweb         nginx   Done"), "{all}");
    }
}
