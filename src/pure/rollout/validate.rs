//! What the API server's schema cannot check of a spec — and, defensively, what it should have:
//! an older CRD, or a Deployer stored before a bound existed, must not reach the arithmetic.

use super::Input;
use crate::{
    api::{MAX_REPLICAS, MAX_SECONDS, MAX_STEPS},
    checks,
};

/// `Ok` if the rollout core can act on the spec; else why not, naming the field.
pub fn spec(input: &Input) -> Result<(), String> {
    let spec = input.spec;
    let d = &spec.deployment;
    if let Some(ns) = &d.namespace
        && ns != input.namespace
    {
        return Err(format!(
            "spec.deployment.namespace {ns:?} must equal the Deployer's namespace {:?}: owner references cannot cross namespaces",
            input.namespace
        ));
    }
    if spec.steps.is_empty() || spec.steps.len() > MAX_STEPS {
        return Err(format!("spec.steps must list 1 to {MAX_STEPS} steps, not {}", spec.steps.len()));
    }
    let mut last = 0;
    for (i, s) in spec.steps.iter().enumerate() {
        if !(1..=100).contains(&s.percent) {
            return Err(format!("spec.steps[{i}].percent must be within 1..100, not {}", s.percent));
        }
        if s.percent <= last {
            return Err(format!("spec.steps[{i}].percent must be greater than the step before it"));
        }
        if !(0..=MAX_SECONDS).contains(&s.sleep) {
            return Err(format!(
                "spec.steps[{i}].sleep must be within 0..{MAX_SECONDS} seconds, not {}",
                s.sleep
            ));
        }
        last = s.percent;
    }
    if !(0..=MAX_REPLICAS).contains(&d.replicas) {
        return Err(format!("spec.deployment.replicas must be within 0..{MAX_REPLICAS}, not {}", d.replicas));
    }
    if !(1..=MAX_SECONDS).contains(&spec.progress_deadline_seconds) {
        return Err(format!(
            "spec.progressDeadlineSeconds must be within 1..{MAX_SECONDS}, not {}",
            spec.progress_deadline_seconds
        ));
    }
    if !super::state::is_version(&d.version) {
        return Err(format!("spec.deployment.version {:?} is not a version", d.version));
    }
    checks::validate(spec, input.settings.prometheus.as_deref())
}
