//! The node agent: runs job steps on its host and reports how they end.
//!
//! [`daemon`] talks to the controller (registration, heartbeats, the order
//! stream, reports); [`step`] launches and supervises one batch step, with
//! `child` preparing what its process does before it execs, [`spawn`]
//! starting it, [`cgroup`] containing its memory and
//! [`ready`] keeping a child waiting in a fresh cgroup for the next step;
//! [`watchdog`] fences the node's steps when the agent itself goes silent.

pub mod cgroup;
mod child;
pub mod daemon;
pub mod metrics;
pub mod ready;
pub mod spawn;
pub mod spool;
pub mod step;
pub mod tasks;
pub mod watchdog;
