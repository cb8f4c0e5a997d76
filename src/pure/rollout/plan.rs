//! The steps a rollout runs, and the fingerprint persisted with it so that a change of
//! `spec.steps` is noticed.

use crate::api::Step;

/// The single step of a first deploy (and the implied final step of every plan).
pub const FIRST_DEPLOY: [Step; 1] =
    [Step { percent: 100, sleep: 0, pause: false, metrics: Vec::new(), webhooks: Vec::new() }];

/// The spec's steps with a final 100% step appended when the last one is below 100.
pub fn normalized_steps(steps: &[Step]) -> Vec<Step> {
    let mut out = steps.to_vec();
    if out.last().is_none_or(|s| s.percent < 100) {
        out.push(Step { percent: 100, ..Step::default() });
    }
    out
}

/// A readable fingerprint of a plan: `percent%/sleeps` per step, `percent%/pause` for a pause
/// step (a step either sleeps or pauses).
pub fn fingerprint(steps: &[Step]) -> String {
    join(steps, |s| {
        if s.pause { format!("{}%/pause", s.percent) } else { format!("{}%/{}s", s.percent, s.sleep) }
    })
}

/// Whether a persisted fingerprint is that of `steps`. Operators before 0.2 wrote a pause step as
/// `percent%/0s`; their fingerprints still match, so an upgrade mid-rollout does not restart it.
pub fn matches(stored: &str, steps: &[Step]) -> bool {
    stored == fingerprint(steps) || stored == join(steps, |s| format!("{}%/{}s", s.percent, s.sleep))
}

/// Whether a persisted fingerprint is that of a first deploy's single step.
pub fn is_first_deploy(stored: &str) -> bool {
    stored == fingerprint(&FIRST_DEPLOY)
}

/// The number of steps of a persisted fingerprint.
pub fn len(stored: &str) -> usize {
    if stored.is_empty() { 0 } else { stored.split(',').count() }
}

fn join(steps: &[Step], item: impl Fn(&Step) -> String) -> String {
    steps.iter().map(item).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::step;

    #[test]
    fn steps_below_100_get_an_implied_final_step() {
        assert_eq!(normalized_steps(&[step(10, 5), step(50, 5)]), [step(10, 5), step(50, 5), step(100, 0)]);
        assert_eq!(normalized_steps(&[step(10, 5), step(100, 7)]), [step(10, 5), step(100, 7)]);
    }

    #[test]
    fn a_single_pause_step_is_not_a_first_deploy_and_old_fingerprints_still_match() {
        let pause = [Step { percent: 100, pause: true, ..Step::default() }];
        assert_eq!(fingerprint(&pause), "100%/pause");
        assert!(!is_first_deploy(&fingerprint(&pause)));
        assert!(matches("100%/0s", &pause), "an older operator's fingerprint");
        assert!(matches("100%/pause", &pause));
        assert!(!matches("100%/pause", &[step(100, 0)]));
        assert_eq!((len(""), len("10%/5s"), len("10%/5s,100%/0s")), (0, 1, 2));
    }
}
