//! The node agent: runs job steps on its host and reports how they end.
//!
//! Today this crate holds the step launcher ([`step`]) and its memory
//! containment ([`cgroup`]); registration, heartbeats and the controller
//! stream arrive with the daemon.

pub mod cgroup;
pub mod daemon;
pub mod step;
