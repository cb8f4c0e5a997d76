//! The imperative shell: the Kubernetes client, HTTP, signals and time, around the core.

mod calls;
pub mod controller;
pub mod http;
pub mod leader;
mod memo;
pub mod metrics;
pub mod probe;
pub mod shutdown;
pub mod telemetry;
mod writes;
