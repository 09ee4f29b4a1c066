//! Partitions: named sets of nodes with limits, as in Slurm.

use crate::hostlist;
use serde::{Deserialize, Serialize};

/// A partition as configured. Nodes match by name, so a node that registers
/// later joins every partition whose node list names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionSpec {
    pub name: String,
    /// A hostlist expression, or `ALL`.
    pub nodes: String,
    pub is_default: bool,
    /// Seconds; `None` for no maximum.
    pub max_time: Option<u64>,
    /// Seconds; a job without `--time` gets this (else `max_time`).
    pub default_time: Option<u64>,
    pub up: bool,
}

impl PartitionSpec {
    pub fn new(name: &str, nodes: &str) -> PartitionSpec {
        PartitionSpec {
            name: name.to_string(),
            nodes: nodes.to_string(),
            is_default: false,
            max_time: None,
            default_time: None,
            up: true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Partition {
    pub spec: PartitionSpec,
    /// Expanded names, sorted, or `None` for `ALL`.
    pub(crate) names: Option<Vec<String>>,
    /// Member node indices in registration order.
    pub members: Vec<u32>,
}

impl Partition {
    pub fn new(spec: PartitionSpec) -> Result<Partition, String> {
        if spec.name.is_empty() || !spec.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            return Err(format!("partition name '{}' must be letters, digits, '_' or '-'", spec.name));
        }
        let names = if spec.nodes.eq_ignore_ascii_case("all") {
            None
        } else {
            let mut n = hostlist::expand(&spec.nodes)?;
            n.sort();
            n.dedup();
            Some(n)
        };
        Ok(Partition { spec, names, members: Vec::new() })
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    pub fn includes(&self, node_name: &str) -> bool {
        match &self.names {
            None => true,
            Some(names) => names.binary_search_by(|n| n.as_str().cmp(node_name)).is_ok(),
        }
    }

    /// The limit a job runs under: its own, else the partition's default,
    /// else the partition's maximum.
    pub fn effective_limit(&self, requested: Option<u64>) -> Option<u64> {
        requested.or(self.spec.default_time).or(self.spec.max_time)
    }
}
