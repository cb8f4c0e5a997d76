//! The functional core: decisions from inputs, with no client, no clock and no I/O.

pub mod checks;
pub mod replicas;
pub mod resources;
pub mod rollout;
