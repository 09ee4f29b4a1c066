//! A daemon's long-lived tasks, supervised.
//!
//! The controller and the agent each run a dozen loops beside their
//! listeners: the scheduler, the order dispatcher, the accounting writer,
//! heartbeats, report senders. Spawned and forgotten, a loop that panicked
//! would leave its daemon answering requests while nothing schedules, and
//! nobody would know. Here every task is spawned into one [`Supervisor`];
//! the daemon waits on [`Supervisor::death`] beside its listener, logs
//! which task died and why, and exits non-zero, so that what supervises
//! the daemon (systemd, `drover up`, a container runtime) starts it again
//! from its durable state. Mini-redis's shutdown is the model: every task
//! accounted for, the end of the process a value rather than an accident.
//!
//! For tests of exactly that, `DROVER_FAULT_PANIC=NAME` makes the task of
//! that name panic as it starts.

use std::collections::HashMap;
use std::future::Future;
use tokio::task::{Id, JoinSet};

/// The environment variable naming a task to panic at its start.
pub const FAULT_VARIABLE: &str = "DROVER_FAULT_PANIC";

/// The tasks of one daemon.
#[derive(Default)]
pub struct Supervisor {
    set: JoinSet<Result<(), String>>,
    names: HashMap<Id, &'static str>,
}

/// A task that died: which, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Died {
    pub task: &'static str,
    pub cause: String,
}

impl std::fmt::Display for Died {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the {} task died: {}", self.task, self.cause)
    }
}

impl Supervisor {
    pub fn new() -> Supervisor {
        Supervisor::default()
    }

    /// A task meant to run as long as the daemon: ending at all, by a
    /// panic or by returning, is its death.
    pub fn spawn_loop(&mut self, name: &'static str, task: impl Future<Output = ()> + Send + 'static) {
        self.spawn(name, async move {
            task.await;
            Err("it returned, and it should run as long as the daemon".to_string())
        });
    }

    /// A task that may finish once its work is done (joining a group, say):
    /// only a panic is its death.
    pub fn spawn_task(&mut self, name: &'static str, task: impl Future<Output = ()> + Send + 'static) {
        self.spawn(name, async move {
            task.await;
            Ok(())
        });
    }

    fn spawn(&mut self, name: &'static str, task: impl Future<Output = Result<(), String>> + Send + 'static) {
        let injected = std::env::var(FAULT_VARIABLE).is_ok_and(|v| v == name);
        let handle = self.set.spawn(async move {
            if injected {
                panic!("a fault injected with {FAULT_VARIABLE}={name}");
            }
            task.await
        });
        self.names.insert(handle.id(), name);
    }

    /// Waits until a task dies and says which and why; never resolves
    /// while they all live (or when none is left).
    pub async fn death(&mut self) -> Died {
        loop {
            let Some(ended) = self.set.join_next_with_id().await else {
                return std::future::pending().await;
            };
            let (id, cause) = match ended {
                Ok((_, Ok(()))) => continue,
                Ok((id, Err(cause))) => (id, cause),
                Err(e) if e.is_cancelled() => continue,
                Err(e) => {
                    let id = e.id();
                    (id, format!("it panicked: {}", panic_text(e.into_panic())))
                }
            };
            let task = self.names.remove(&id).unwrap_or("unnamed");
            return Died { task, cause };
        }
    }

    /// Stops every task (the daemon is ending).
    pub fn abort_all(&mut self) {
        self.set.abort_all();
    }
}

fn panic_text(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(payload) => {
            payload.downcast::<&'static str>().map(|s| s.to_string()).unwrap_or_else(|_| "(no message)".into())
        }
    }
}

/// Logs a death the way both daemons do, and gives the error their `run`
/// returns, so that the process exits non-zero.
pub fn fatal(daemon: &str, died: &Died) -> String {
    tracing::error!(task = died.task, cause = %died.cause, "{died}; the {daemon} exits so that its supervisor starts it again");
    format!("{died}; the {daemon} exits so that its supervisor (systemd, a container runtime, or drover up run again) starts it again")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_panic_or_a_returning_loop_is_a_death_a_finished_task_is_not() {
        let mut s = Supervisor::new();
        s.spawn_task("joiner", async {});
        s.spawn_loop("forever", std::future::pending());
        s.spawn_loop("scheduler", async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            panic!("out of cheese");
        });
        let died = s.death().await;
        assert_eq!(died, Died { task: "scheduler", cause: "it panicked: out of cheese".into() });

        s.spawn_loop("dispatcher", async {});
        let died = s.death().await;
        assert_eq!(died.task, "dispatcher");
        assert!(died.cause.contains("returned"), "{died}");
        assert!(fatal("controller", &died).starts_with("the dispatcher task died: it returned"));

        // Only the pending loop is left: no death comes.
        let none = tokio::time::timeout(Duration::from_millis(50), s.death()).await;
        assert!(none.is_err());
        s.abort_all();
        let none = tokio::time::timeout(Duration::from_millis(50), s.death()).await;
        assert!(none.is_err(), "aborted tasks are not deaths");
    }
}
