//! Drover's pure core: the job model, the parsers users meet (batch directives,
//! times, memory sizes, arrays, dependencies, hostlists), the cluster state
//! machine and the scheduler.
//!
//! Nothing here does I/O, spawns tasks or reads a clock: time is always an
//! argument. That is what lets the controller replicate the state machine
//! through Raft, lets golden scripts pin its behaviour down as text, and lets
//! the simulator drive the very same scheduler in virtual time.

pub mod array;
pub mod changes;
pub mod credentials;
pub mod dependency;
pub mod error;
pub mod hostlist;
pub mod job;
pub mod launch;
pub mod limits;
pub mod memory;
pub mod node;
pub mod options;
pub mod partition;
pub mod pattern;
pub mod place;
pub mod plan;
pub mod resources;
pub mod sched;
pub mod script;
pub mod state;
pub mod step;
pub mod time;

pub use error::ParseError;
pub use job::{JobId, JobSpec, JobState, PendingReason};
pub use node::{NodeState, NodeStatus};
pub use resources::Resources;
pub use state::{Command, CommandError, Event, State};

/// Milliseconds since the Unix epoch. The state machine never reads a clock:
/// every command that needs "now" carries it.
pub type Time = u64;

/// Converts whole seconds to [`Time`] milliseconds without overflow.
pub fn secs(s: u64) -> Time {
    s.saturating_mul(1000)
}
