//! The controller: owns the cluster state and keeps it durable and
//! replicated.
//!
//! Every change is a core [`Command`](drover_core::Command) appended to a Raft
//! log (openraft) stored in redb under the controller's state directory; a
//! command is applied to the core state machine only once committed, and a
//! client hears "ok" only after that. One controller is a one-member Raft
//! group — the same code path as HA, which only adds members.

pub mod accounting;
pub mod admission;
mod connections;
mod dispatch;
mod events;
pub mod healing;
mod holds;
pub mod leadership;
mod listing;
pub mod log_store;
mod loops;
pub mod machine;
mod metrics;
pub mod openapi;
mod output;
mod peers;
pub mod raft;
pub mod service;
mod views;
mod web;

pub use raft::{Controller, Membership, ProposeError, Timing, TypeConfig};
