//! The controller: the imperative shell around [`crate::rollout`].
