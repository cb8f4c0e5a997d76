//! Replica arithmetic of a canary step (DESIGN.md §4): how many pods each version runs.

/// Replicas of the canary and the stable version at one step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Split {
    /// Pods of the new version.
    pub canary: i32,
    /// Pods of the old version.
    pub stable: i32,
}

/// Splits `replicas` (R) between canary and stable for a step of `percent` (p, 1..=100).
///
/// - p = 100: the canary runs R, the stable 0;
/// - R = 0: nothing runs;
/// - R = 1, p < 100: one pod each (a surge pod, so that both versions serve during the canary);
/// - otherwise the canary runs round-half-up(R·p/100), clamped to 1..=R−1, and the stable the rest.
///
/// Out-of-range inputs are clamped rather than trusted: negative R counts as 0, p as 1..=100.
pub fn split(replicas: i32, percent: i32) -> Split {
    let r = replicas.max(0);
    let p = percent.clamp(1, 100);
    if p == 100 {
        return Split { canary: r, stable: 0 };
    }
    match r {
        0 => Split { canary: 0, stable: 0 },
        1 => Split { canary: 1, stable: 1 },
        _ => {
            // round_half_up(r * p / 100) in integers; i64 so that r * p cannot overflow.
            let exact = (i64::from(r) * i64::from(p) * 2 + 100) / 200;
            let canary = (exact as i32).clamp(1, r - 1);
            Split { canary, stable: r - canary }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// (R, p, canary, stable): the table DESIGN.md §4 and the issue ask for.
    const TABLE: &[(i32, i32, i32, i32)] = &[
        // R = 0: nothing at any step.
        (0, 10, 0, 0),
        (0, 50, 0, 0),
        (0, 100, 0, 0),
        // R = 1: one surge pod during the canary.
        (1, 1, 1, 1),
        (1, 50, 1, 1),
        (1, 99, 1, 1),
        (1, 100, 1, 0),
        // R = 2: never 0 on either side before 100%.
        (2, 1, 1, 1),
        (2, 10, 1, 1),
        (2, 50, 1, 1),
        (2, 99, 1, 1),
        (2, 100, 2, 0),
        // R = 3: 50% rounds half up to 2.
        (3, 10, 1, 2),
        (3, 50, 2, 1),
        (3, 66, 2, 1),
        (3, 90, 2, 1),
        (3, 100, 3, 0),
        // The seed sample: R = 10, 10/30/60/100.
        (10, 10, 1, 9),
        (10, 30, 3, 7),
        (10, 60, 6, 4),
        (10, 100, 10, 0),
        (10, 5, 1, 9),
        (10, 15, 2, 8),
        (10, 25, 3, 7),
        (10, 99, 9, 1),
        // R = 20 (the seed lost pods here).
        (20, 10, 2, 18),
        (20, 30, 6, 14),
        (20, 60, 12, 8),
        (20, 100, 20, 0),
        // R = 100.
        (100, 1, 1, 99),
        (100, 10, 10, 90),
        (100, 30, 30, 70),
        (100, 60, 60, 40),
        (100, 99, 99, 1),
        (100, 100, 100, 0),
    ];

    #[test]
    fn split_matches_the_design_table() {
        for &(r, p, canary, stable) in TABLE {
            assert_eq!(split(r, p), Split { canary, stable }, "R = {r}, p = {p}");
        }
    }

    #[test]
    fn out_of_range_inputs_are_clamped() {
        assert_eq!(split(-5, 50), Split { canary: 0, stable: 0 });
        assert_eq!(split(10, 0), split(10, 1));
        assert_eq!(split(10, 150), split(10, 100));
        assert_eq!(split(i32::MAX, 99).canary + split(i32::MAX, 99).stable, i32::MAX);
    }

    proptest! {
        #[test]
        fn split_keeps_the_total_and_both_versions_serving(r in 0i32..100_000, p in 1i32..=100) {
            let s = split(r, p);
            prop_assert!(s.canary >= 0 && s.stable >= 0);
            if p == 100 {
                prop_assert_eq!(s, Split { canary: r, stable: 0 });
            } else if r == 1 {
                prop_assert_eq!(s, Split { canary: 1, stable: 1 });
            } else {
                prop_assert_eq!(s.canary + s.stable, r);
                if r >= 2 {
                    prop_assert!(s.canary >= 1 && s.stable >= 1);
                }
            }
        }

        #[test]
        fn canary_grows_with_percent(r in 0i32..10_000, p in 1i32..100) {
            prop_assert!(split(r, p).canary <= split(r, p + 1).canary);
        }

        #[test]
        fn both_sides_grow_with_replicas(r in 2i32..10_000, p in 1i32..100) {
            let (a, b) = (split(r, p), split(r + 1, p));
            prop_assert!(a.canary <= b.canary && a.stable <= b.stable);
        }
    }
}
