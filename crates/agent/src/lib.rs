//! The node agent: runs jobs on its host and reports how they end.
//!
//! Three things here could be called a step; each has its own name. A job's
//! *batch step* (its script) is [`batch`]'s; srun's *ranks* on this node are
//! [`tasks`]'; the cluster's record of an srun step is the core's `JobStep`.
//!
//! [`daemon`] talks to the controller (registration, heartbeats, the order
//! stream, reports); [`batch`] launches and supervises one batch step, with
//! `child` preparing what its process does before it execs, [`spawn`]
//! starting it, [`cgroup`] containing its memory and
//! [`ready`] keeping a child waiting in a fresh cgroup for the next step;
//! [`watchdog`] fences the node's steps when the agent itself goes silent.

pub mod batch;
pub mod cgroup;
mod child;
pub mod daemon;
pub mod metrics;
pub mod ready;
pub mod spawn;
pub mod spool;
pub mod tasks;
pub mod watchdog;
