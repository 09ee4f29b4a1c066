//! The healer: restores capacity, and saves power, through a provider.
//!
//! It is a leader duty of the controller (see `docs/architecture.md`):
//! the controller's loop (`drover-controller`'s `healing.rs`) asks the
//! provider what it knows of the machines, calls [`decide`] with the state
//! and the policy, records each repair's intent in the replicated log,
//! calls the provider, and records its answer. This crate holds the pure
//! part (what to do, and when to give up) and the providers.

pub mod command;
pub mod decide;
pub mod local;
pub mod policy;
pub mod provider;

pub use decide::{decide, Decision, Observed};
pub use policy::Policy;
pub use provider::{Machine, MachineState, Provider, Target};
