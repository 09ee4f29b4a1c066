//! Node selection: given free resources, which nodes a job gets and how much
//! of each; and whether a job could fit a partition's nodes at all (the
//! submit-time check). The scheduler and the state both use it.

use crate::job::{JobSpec, MemRequest, NodeShare};
use crate::node::Node;
use crate::partition::Partition;
use crate::resources::Resources;

/// How to choose among nodes that fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Select {
    /// The first nodes in partition order: packs jobs, cheapest to compute.
    FirstFit,
    /// The nodes with the fewest free CPUs that still fit: leaves whole
    /// nodes free for wide jobs.
    BestFit,
}

/// The most tasks `node` can take now with `free`, and what one more task
/// costs there; `None` if the node cannot take any.
fn capacity(spec: &JobSpec, node: &Node, free: &Resources) -> u32 {
    let total = &node.total;
    let c = spec.cpus_per_task;
    if spec.exclusive && free != total {
        return 0;
    }
    if free.gpus < spec.gpus_per_node {
        return 0;
    }
    let mut k = free.cpus / c;
    match spec.mem {
        MemRequest::PerNode(0) if free.mem_mb < total.mem_mb => return 0,
        MemRequest::PerNode(m) if free.mem_mb < m => return 0,
        MemRequest::PerNode(_) => {}
        // A zero per-task cost (e.g. a node that reports no memory) puts no
        // limit on tasks: checked_div yields None there.
        MemRequest::PerCpu(m) => {
            if let Some(n) = free.mem_mb.checked_div(u64::from(c).saturating_mul(m)) {
                k = k.min(u32::try_from(n).unwrap_or(u32::MAX));
            }
        }
        MemRequest::Default => {
            let per_task = u64::from(c) * (total.mem_mb / u64::from(total.cpus.max(1)));
            if let Some(n) = free.mem_mb.checked_div(per_task) {
                k = k.min(u32::try_from(n).unwrap_or(u32::MAX));
            }
        }
    }
    match spec.ntasks_per_node {
        Some(t) if k >= t => t,
        Some(_) => 0,
        None => k,
    }
}

/// What `tasks` tasks of `spec` hold on `node`.
fn share_for(spec: &JobSpec, node: &Node, tasks: u32) -> Resources {
    let total = &node.total;
    if spec.exclusive {
        return *total;
    }
    let cpus = tasks * spec.cpus_per_task;
    let mem_mb = match spec.mem {
        MemRequest::PerNode(0) => total.mem_mb,
        MemRequest::PerNode(m) => m,
        MemRequest::PerCpu(m) => u64::from(cpus).saturating_mul(m),
        MemRequest::Default => u64::from(cpus) * (total.mem_mb / u64::from(total.cpus.max(1))),
    };
    Resources { cpus, mem_mb, gpus: spec.gpus_per_node }
}

/// Whether `node` may run `spec` at all (name lists and features).
pub(crate) fn eligible(spec: &JobSpec, node: &Node) -> bool {
    !spec.exclude.iter().any(|x| x == &node.name) && spec.constraint.as_deref().is_none_or(|c| node.satisfies(c))
}

/// Places `spec` on `members` (node indices in preference order) given each
/// node's free resources (`None`: unusable). Required nodes (`--nodelist`)
/// come first and must all be used.
pub(crate) fn place(
    spec: &JobSpec,
    nodes: &[Node],
    members: &[u32],
    free: &dyn Fn(u32) -> Option<Resources>,
    select: Select,
) -> Option<Vec<NodeShare>> {
    if select == Select::BestFit && spec.nodelist.is_empty() && spec.nodes_max == 1 {
        return best_single(spec, nodes, members, free);
    }
    let mut order: Vec<u32>;
    let candidates: &[u32] = if spec.nodelist.is_empty() && select == Select::FirstFit {
        members
    } else {
        order = Vec::with_capacity(members.len());
        for name in &spec.nodelist {
            let i = members.iter().copied().find(|&i| &nodes[i as usize].name == name)?;
            order.push(i);
        }
        let required = order.len();
        let rest: Vec<u32> = members.iter().copied().filter(|i| !order[..required].contains(i)).collect();
        order.extend(rest);
        if select == Select::BestFit {
            order[required..].sort_by_key(|&i| (free(i).map_or(u32::MAX, |f| f.cpus), i));
        }
        &order
    };
    let required = spec.nodelist.len();
    let (min_nodes, max_nodes) = (spec.nodes_min as usize, spec.nodes_max as usize);
    let mut remaining = spec.ntasks;
    let mut shares: Vec<NodeShare> = Vec::new();
    for (pos, &i) in candidates.iter().enumerate() {
        if remaining == 0 && shares.len() >= min_nodes {
            break;
        }
        if shares.len() == max_nodes {
            break;
        }
        let node = &nodes[i as usize];
        let usable = free(i).filter(|_| eligible(spec, node));
        let mut k = usable.map_or(0, |f| capacity(spec, node, &f));
        // Leave at least one task for each node still needed.
        let still_needed = min_nodes.saturating_sub(shares.len() + 1) as u32;
        k = k.min(remaining.saturating_sub(still_needed));
        // `-N 2 -n 4` means two tasks on each, as Slurm infers: spread the
        // tasks evenly over the nodes asked for.
        if spec.nodes_given && spec.ntasks_per_node.is_none() {
            let nodes_left = min_nodes.saturating_sub(shares.len()).max(1) as u32;
            k = k.min(remaining.div_ceil(nodes_left));
        }
        if k == 0 {
            if pos < required {
                return None;
            }
            continue;
        }
        shares.push(NodeShare { node: i, res: share_for(spec, node, k), tasks: k });
        remaining -= k;
    }
    (remaining == 0 && shares.len() >= min_nodes).then_some(shares)
}

/// Best fit for a one-node job: a single scan for the node that fits with
/// the fewest CPUs left over (lowest index on ties), no sorting.
fn best_single(
    spec: &JobSpec,
    nodes: &[Node],
    members: &[u32],
    free: &dyn Fn(u32) -> Option<Resources>,
) -> Option<Vec<NodeShare>> {
    let mut best: Option<(u32, u32)> = None;
    for &i in members {
        let node = &nodes[i as usize];
        let Some(f) = free(i).filter(|_| eligible(spec, node)) else { continue };
        if capacity(spec, node, &f) < spec.ntasks {
            continue;
        }
        let left = f.cpus - spec.ntasks * spec.cpus_per_task;
        if best.is_none_or(|(_, b)| left < b) {
            best = Some((i, left));
        }
    }
    let (i, _) = best?;
    let node = &nodes[i as usize];
    Some(vec![NodeShare { node: i, res: share_for(spec, node, spec.ntasks), tasks: spec.ntasks }])
}

/// Whether any node of `part` could hold `spec` if it were empty — the
/// submit-time check that refuses requests no node can ever satisfy.
pub fn place_on_empty(nodes: &[Node], spec: &JobSpec, part: &Partition) -> Option<Vec<NodeShare>> {
    let known = |i: u32| nodes[i as usize].described().then(|| nodes[i as usize].total);
    place(spec, nodes, &part.members, &known, Select::FirstFit)
}

/// Says why `spec` fits no node of `part`, with the numbers.
pub fn describe_misfit(nodes: &[Node], spec: &JobSpec, part: &Partition) -> String {
    let per_node_tasks = spec.ntasks.div_ceil(spec.nodes_max.max(1)).max(spec.ntasks_per_node.unwrap_or(0));
    let cpus = per_node_tasks * spec.cpus_per_task;
    let mem = match spec.mem {
        MemRequest::Default => String::new(),
        MemRequest::PerNode(0) => ", all memory".to_string(),
        MemRequest::PerNode(m) => format!(", {} memory", crate::memory::format_mb(m)),
        MemRequest::PerCpu(m) => format!(", {} memory", crate::memory::format_mb(m * u64::from(cpus))),
    };
    let gpus = if spec.gpus_per_node > 0 { format!(", {} GPUs", spec.gpus_per_node) } else { String::new() };
    let members: Vec<_> = part.members.iter().map(|&i| &nodes[i as usize]).filter(|n| n.described()).collect();
    if let Some(c) = &spec.constraint {
        let with = members.iter().filter(|n| n.satisfies(c)).count();
        if with < spec.nodes_min as usize {
            return format!(
                "asked for {} node(s) with features '{c}'; partition {} has {with} such node(s)",
                spec.nodes_min,
                part.name()
            );
        }
    }
    let wanted = u64::from(spec.ntasks) * u64::from(spec.cpus_per_task);
    let total: u64 = members.iter().map(|n| u64::from(n.total.cpus)).sum();
    if wanted > total {
        return format!(
            "asked for {wanted} CPUs in all; partition {} has {total} CPUs on {} node(s)",
            part.name(),
            members.len()
        );
    }
    let best = members.iter().map(|n| n.total).fold(Resources::ZERO, |acc, t| Resources {
        cpus: acc.cpus.max(t.cpus),
        mem_mb: acc.mem_mb.max(t.mem_mb),
        gpus: acc.gpus.max(t.gpus),
    });
    format!(
        "asked for {} node(s) with {cpus} CPUs{mem}{gpus} each; partition {} has {} node(s), the largest with {} CPUs, {} memory, {} GPUs",
        spec.nodes_min,
        part.name(),
        members.len(),
        best.cpus,
        crate::memory::format_mb(best.mem_mb),
        best.gpus,
    )
}
