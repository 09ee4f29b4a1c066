//! Turns applied events into orders for agents, queued per node until the
//! node's agent collects them over its order stream.

use crate::machine::Shared;
use drover_core::launch::LaunchOrder;
use drover_core::Event;
use drover_proto::Order;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

#[derive(Default)]
struct Queue {
    orders: VecDeque<Order>,
    ready: Arc<Notify>,
}

/// Orders waiting for each node's agent. Only the leader's dispatcher is
/// active: followers apply the same events but give no orders.
#[derive(Default)]
pub struct Dispatcher {
    queues: Mutex<HashMap<String, Queue>>,
    active: AtomicBool,
}

impl Dispatcher {
    /// Opens (on gaining leadership) or closes the dispatcher. Closing drops
    /// every queued order and wakes the order streams, which then end: their
    /// agents re-register with the new leader, naming the steps they run,
    /// and the new leader reconciles.
    pub fn set_active(&self, active: bool) {
        let mut queues = self.queues.lock().expect("dispatch lock");
        self.active.store(active, Ordering::SeqCst);
        if !active {
            for q in queues.values_mut() {
                q.orders.clear();
                q.ready.notify_one();
            }
        }
    }

    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::SeqCst)
    }

    pub fn push(&self, node: &str, order: Order) {
        let mut queues = self.queues.lock().expect("dispatch lock");
        if !self.active.load(Ordering::SeqCst) {
            return;
        }
        let q = queues.entry(node.to_string()).or_default();
        q.orders.push_back(order);
        q.ready.notify_one();
    }

    /// Takes every queued order for `node`, and a handle to wait for more.
    pub fn take(&self, node: &str) -> (Vec<Order>, Arc<Notify>) {
        let mut queues = self.queues.lock().expect("dispatch lock");
        let q = queues.entry(node.to_string()).or_default();
        (q.orders.drain(..).collect(), q.ready.clone())
    }

    /// Follows applied events for the life of the controller.
    pub async fn run(self: Arc<Self>, shared: Arc<Shared>) {
        let mut events = shared.subscribe();
        while let Some((_, event)) = events.recv().await {
            match event {
                Event::JobStarted { job, .. } => {
                    let orders: Vec<(String, LaunchOrder)> = shared.read(|s| {
                        let Some(alloc) = s.job(job).and_then(|j| j.alloc.as_ref()) else { return vec![] };
                        // The batch step runs on the first node; the others are
                        // held for the job's own tasks (srun, MPI).
                        alloc
                            .shares
                            .first()
                            .and_then(|share| LaunchOrder::for_job(s, job, share.node))
                            .map(|o| (o.node_name.clone(), o))
                            .into_iter()
                            .collect()
                    });
                    for (node, order) in orders {
                        self.push(&node, Order::Launch(Box::new(order)));
                    }
                }
                Event::JobKill { job, attempt, nodes } => {
                    for node in nodes.names() {
                        self.push(node, Order::Kill { job, attempt });
                    }
                }
                Event::JobSignal { job, attempt, nodes, signal } => {
                    for node in nodes.names() {
                        self.push(node, Order::Signal { job, attempt, signal });
                    }
                }
                Event::JobTimeLimit { job, attempt, nodes, limit } => {
                    for node in nodes.names() {
                        self.push(node, Order::TimeLimit { job, attempt, limit });
                    }
                }
                Event::StaleStep { job, attempt, node } if !node.is_empty() => {
                    for node in node.names() {
                        self.push(node, Order::Kill { job, attempt });
                    }
                }
                _ => {}
            }
        }
    }
}
