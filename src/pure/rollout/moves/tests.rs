//! The make-before-break table: what `transition` does for each shape of the world, including the
//! rounding and surge edges where availability is easiest to lose.

use super::*;

/// (version, replicas, available) of an observed Deployment, image current.
fn seen(version: &str, replicas: i32, available: i32) -> Observed {
    Observed {
        version: version.into(),
        replicas,
        available,
        synced: true,
        image: Some(format!("app:{version}")),
        deleting: false,
    }
}

fn image(version: &str) -> String {
    format!("app:{version}")
}

/// The moves as `(version, replicas)` pairs, deletes and whether the goal is reached.
fn run(goal: &[(&str, i32)], observed: &[Observed], floor: i32) -> (Vec<(String, i32)>, Vec<String>, bool) {
    let goal: Vec<(String, i32)> = goal.iter().map(|(v, r)| (v.to_string(), *r)).collect();
    let m = transition(&goal, observed, floor, &image);
    (m.apply.into_iter().map(|s| (s.version, s.replicas)).collect(), m.delete, m.reached)
}

fn pairs(p: &[(&str, i32)]) -> Vec<(String, i32)> {
    p.iter().map(|(v, r)| (v.to_string(), *r)).collect()
}

struct Case {
    what: &'static str,
    goal: &'static [(&'static str, i32)],
    observed: Vec<Observed>,
    floor: i32,
    apply: &'static [(&'static str, i32)],
    delete: &'static [&'static str],
    reached: bool,
}

#[test]
fn make_before_break_table() {
    let cases = [
        Case {
            what: "a missing canary is created at its target",
            goal: &[("2", 1), ("1", 9)],
            observed: vec![seen("1", 10, 10)],
            floor: 10,
            apply: &[("2", 1)],
            delete: &[],
            reached: false,
        },
        Case {
            what: "the canary grows first; the stable waits for it (the budget is 0)",
            goal: &[("2", 3), ("1", 7)],
            observed: vec![seen("2", 1, 1), seen("1", 9, 9)],
            floor: 10,
            apply: &[("2", 3)],
            delete: &[],
            reached: false,
        },
        Case {
            what: "once the canary is available the stable shrinks whole",
            goal: &[("2", 3), ("1", 7)],
            observed: vec![seen("2", 3, 3), seen("1", 9, 9)],
            floor: 10,
            apply: &[("1", 7)],
            delete: &[],
            reached: true,
        },
        Case {
            what: "a partly available canary does not trickle the stable down pod by pod",
            goal: &[("2", 3), ("1", 7)],
            observed: vec![seen("2", 3, 2), seen("1", 9, 9)],
            floor: 10,
            apply: &[],
            delete: &[],
            reached: false,
        },
        Case {
            what: "pods that serve nothing cost nothing",
            goal: &[("2", 3), ("1", 7)],
            observed: vec![seen("2", 3, 3), seen("1", 9, 5)],
            floor: 10,
            apply: &[("1", 7)],
            delete: &[],
            reached: true,
        },
        Case {
            what: "a lowered R comes down towards R within the budget, not below it",
            goal: &[("1", 7)],
            observed: vec![seen("1", 12, 12)],
            floor: 10,
            apply: &[("1", 10)],
            delete: &[],
            reached: false,
        },
        Case {
            what: "a version out of the goal is deleted once what it serves can be spared",
            goal: &[("2", 10)],
            observed: vec![seen("2", 10, 10), seen("1", 0, 0)],
            floor: 10,
            apply: &[],
            delete: &["1"],
            reached: true,
        },
        Case {
            what: "and not before",
            goal: &[("2", 10)],
            observed: vec![seen("2", 10, 8), seen("1", 2, 2)],
            floor: 10,
            apply: &[],
            delete: &[],
            reached: false,
        },
        Case {
            what: "R = 1 at p < 100: one surge pod, the stable keeps its one",
            goal: &[("2", 1), ("1", 1)],
            observed: vec![seen("2", 0, 0), seen("1", 1, 1)],
            floor: 1,
            apply: &[("2", 1)],
            delete: &[],
            reached: false,
        },
        Case {
            what: "R = 0: everything goes, no floor to keep",
            goal: &[("2", 0), ("1", 0)],
            observed: vec![seen("2", 0, 0), seen("1", 3, 3)],
            floor: 0,
            apply: &[("1", 0)],
            delete: &[],
            reached: true,
        },
        Case {
            what: "a Deployment being deleted is neither counted nor touched",
            goal: &[("1", 4)],
            observed: vec![seen("1", 4, 4), Observed { deleting: true, ..seen("2", 4, 4) }],
            floor: 4,
            apply: &[],
            delete: &[],
            reached: true,
        },
        Case {
            what: "a drifted template is re-applied at the same size",
            goal: &[("1", 4)],
            observed: vec![Observed { image: Some("other:1".into()), ..seen("1", 4, 4) }],
            floor: 4,
            apply: &[("1", 4)],
            delete: &[],
            reached: false,
        },
        Case {
            what: "a canary scaled up by hand comes back down within the budget",
            goal: &[("2", 2), ("1", 2)],
            observed: vec![seen("2", 5, 2), seen("1", 2, 2)],
            floor: 4,
            apply: &[("2", 2)],
            delete: &[],
            reached: true,
        },
        Case {
            what: "counts beyond any real cluster neither overflow nor move anything below the floor",
            goal: &[("2", 100_000), ("1", 0)],
            observed: vec![seen("2", i32::MAX, i32::MAX), seen("1", i32::MAX, i32::MAX)],
            floor: 100_000,
            apply: &[("2", 100_000), ("1", 0)],
            delete: &[],
            reached: true,
        },
        Case {
            what: "negative counts (nonsense) serve nothing",
            goal: &[("1", 3)],
            observed: vec![seen("1", -5, -7)],
            floor: 3,
            apply: &[("1", 3)],
            delete: &[],
            reached: false,
        },
    ];
    for c in cases {
        let (apply, delete, reached) = run(c.goal, &c.observed, c.floor);
        assert_eq!(apply, pairs(c.apply), "{}: apply", c.what);
        assert_eq!(delete, c.delete.iter().map(|v| v.to_string()).collect::<Vec<_>>(), "{}: delete", c.what);
        assert_eq!(reached, c.reached, "{}: reached", c.what);
    }
}

#[test]
fn targets_hold_the_previous_step_before_a_gate_and_the_stable_alone_at_the_end() {
    let plan =
        crate::rollout::plan::normalized_steps(&[crate::fixtures::step(10, 5), crate::fixtures::step(50, 5)]);
    let t = |state: State| targets(&state, Some("1"), Some("2"), &plan, 10, false);
    assert_eq!(t(State::Init), pairs(&[("1", 10), ("2", 0)]));
    assert_eq!(t(State::Checking { step: 0, gate: Gate::BeforeStep }), pairs(&[("1", 10), ("2", 0)]));
    assert_eq!(t(State::Checking { step: 1, gate: Gate::BeforeStep }), pairs(&[("2", 1), ("1", 9)]));
    assert_eq!(t(State::Checking { step: 1, gate: Gate::AfterStep }), pairs(&[("2", 5), ("1", 5)]));
    assert_eq!(t(State::Done), pairs(&[("1", 10)]));
    // A last step that ends the rollout at once wants the stable gone, not at 0.
    assert_eq!(
        targets(
            &State::Scaling { step: 2, since: chrono::Utc::now() },
            Some("1"),
            Some("2"),
            &plan,
            10,
            true
        ),
        pairs(&[("2", 10)])
    );
    // A step beyond the plan (never produced by the codec) holds the last step's split.
    assert_eq!(
        t(State::Paused { step: 99, left: None, by: crate::api::PauseCause::Step }),
        pairs(&[("2", 10), ("1", 0)])
    );
}
