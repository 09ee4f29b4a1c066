//! `sinfo`: partitions and nodes as Slurm lists them.

use super::format::{self, Piece};
use crate::client::Client;
use clap::Parser;
use drover_proto::{NodeList, NodeView, PartitionList, PartitionView};

pub const DEFAULT_FORMAT: &str = "%#P %.5a %.10l %.6D %.6t %N";
pub const NODE_FORMAT: &str = "%#N %.6D %#P %6t";
pub const NODE_LONG_FORMAT: &str = "%#N %.6D %.#P %.11T %4c %.8z %.6m %.8d %.6w %.8f %20E";
pub const LONG_FORMAT: &str = "%#P %.5a %.10l %.10s %.4r %.8h %.10g %.6D %.11T %N";
pub const SUMMARY_FORMAT: &str = "%#P %.5a %.10l %.16F  %N";
pub const REASON_FORMAT: &str = "%20E %9u %19H %N";

#[derive(Parser, Debug)]
#[command(name = "sinfo", disable_help_flag = true, disable_version_flag = true)]
pub struct Args {
    #[arg(short = 'h', long = "noheader")]
    noheader: bool,
    #[arg(short = 'o', long = "format")]
    format: Option<String>,
    /// One line per node (and partition).
    #[arg(short = 'N', long = "Node")]
    node: bool,
    #[arg(short = 'l', long = "long")]
    long: bool,
    #[arg(short = 's', long = "summarize")]
    summarize: bool,
    /// Why nodes are down, drained or failing.
    #[arg(short = 'R', long = "list-reasons")]
    reasons: bool,
    #[arg(short = 'p', long = "partition")]
    partition: Option<String>,
    #[arg(short = 'n', long = "nodes")]
    nodes: Option<String>,
    #[arg(short = 't', long = "states")]
    states: Option<String>,
    #[arg(short = 'a', long = "all")]
    all: bool,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    common: super::Common,
}

fn title(code: char) -> &'static str {
    match code {
        'P' | 'R' => "PARTITION",
        'a' => "AVAIL",
        'l' => "TIMELIMIT",
        'L' => "DEFAULTTIME",
        'D' => "NODES",
        't' | 'T' => "STATE",
        'N' => "NODELIST",
        'c' => "CPUS",
        'C' => "CPUS(A/I/O/T)",
        'F' => "NODES(A/I/O/T)",
        'm' => "MEMORY",
        'z' => "S:C:T",
        'd' => "TMP_DISK",
        'w' => "WEIGHT",
        'f' => "AVAIL_FEATURES",
        'E' => "REASON",
        'O' => "CPU_LOAD",
        's' => "JOB_SIZE",
        'r' => "ROOT",
        'h' => "OVERSUBS",
        'g' => "GROUPS",
        'u' => "USER",
        'H' => "TIMESTAMP",
        'G' => "GRES",
        _ => "",
    }
}

/// Slurm's short state names (`%t`) and long ones (`%T`), lower case.
fn state_name(state: &str, short: bool) -> &'static str {
    match (state, short) {
        ("IDLE", _) => "idle",
        ("MIXED", true) => "mix",
        ("MIXED", false) => "mixed",
        ("ALLOCATED", true) => "alloc",
        ("ALLOCATED", false) => "allocated",
        ("DRAINING", true) => "drng",
        ("DRAINING", false) => "draining",
        ("DRAINED", true) => "drain",
        ("DRAINED", false) => "drained",
        ("DOWN", _) => "down",
        ("FAIL", _) => "fail",
        ("COMPLETING", true) => "comp",
        ("COMPLETING", false) => "completing",
        (_, true) => "unk",
        (_, false) => "unknown",
    }
}

/// A line of output: a partition and the nodes it covers (one node with
/// `-N`, else every node of the partition in one state).
struct Group<'a> {
    partition: &'a PartitionView,
    nodes: Vec<&'a NodeView>,
}

fn down(n: &NodeView) -> bool {
    matches!(n.state.as_str(), "DOWN" | "FAIL" | "DRAINED" | "DRAINING" | "UNKNOWN")
}

fn value(g: &Group, code: char) -> String {
    let p = g.partition;
    let first = g.nodes.first();
    let names: Vec<String> = g.nodes.iter().map(|n| n.name.clone()).collect();
    let sum = |f: &dyn Fn(&NodeView) -> u64| g.nodes.iter().map(|n| f(n)).sum::<u64>();
    match code {
        'P' => format!("{}{}", p.name, if p.is_default { "*" } else { "" }),
        'R' => p.name.clone(),
        'a' => if p.up { "up" } else { "down" }.into(),
        'l' => drover_core::time::format_limit(p.max_time),
        'L' => p.default_time.map_or_else(|| "n/a".into(), drover_core::time::format_duration),
        'D' => g.nodes.len().to_string(),
        't' | 'T' => first.map_or("n/a".into(), |n| format!("{}{}", state_name(&n.state, code == 't'), n.power_mark())),
        'N' => drover_core::hostlist::compress(&names),
        'c' => first.map_or(0, |n| n.total.cpus).to_string(),
        'C' => {
            let total = sum(&|n| n.total.cpus.into());
            let alloc = sum(&|n| n.alloc.cpus.into());
            let other = sum(&|n| if down(n) { u64::from(n.total.cpus - n.alloc.cpus) } else { 0 });
            format!("{alloc}/{}/{other}/{total}", total - alloc - other)
        }
        'F' => {
            let alloc = g.nodes.iter().filter(|n| matches!(n.state.as_str(), "ALLOCATED" | "MIXED")).count();
            let other = g.nodes.iter().filter(|n| down(n)).count();
            format!("{alloc}/{}/{other}/{}", g.nodes.len() - alloc - other, g.nodes.len())
        }
        'm' => first.map_or(0, |n| n.total.mem_mb).to_string(),
        'z' => first.map_or_else(|| "1:1:1".into(), |n| format!("1:{}:1", n.total.cpus)),
        'd' => "0".into(),
        'w' => "1".into(),
        'f' => first.filter(|n| !n.features.is_empty()).map_or_else(|| "(null)".into(), |n| n.features.join(",")),
        'E' => first.and_then(|n| n.reason.clone()).unwrap_or_else(|| "none".into()),
        'O' => "N/A".into(),
        's' => "1-infinite".into(),
        'r' => "no".into(),
        'h' => "NO".into(),
        'g' => "all".into(),
        'u' => "root".into(),
        'H' => "Unknown".into(),
        'G' => "(null)".into(),
        _ => String::new(),
    }
}

/// How a listing groups each partition's nodes into lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grouping {
    /// Nodes in the same state together (sinfo's default).
    State,
    /// Each node on its own line (`-N`, `-R`).
    Node,
    /// One line per partition, whatever its nodes' states (`-s`).
    Partition,
}

/// The groups a listing shows: per partition (in configuration order), its
/// nodes grouped as `grouping` says.
fn groups<'a>(partitions: &'a [PartitionView], nodes: &'a [NodeView], grouping: Grouping) -> Vec<Group<'a>> {
    let by_node = grouping == Grouping::Node;
    let mut out: Vec<Group> = Vec::new();
    for p in partitions {
        let mut members: Vec<&NodeView> =
            p.nodes.iter().filter_map(|name| nodes.iter().find(|n| &n.name == name)).collect();
        // By name, numbers as numbers (node2 before node10), as Slurm's configuration order usually is.
        members.sort_by_key(|n| natural(&n.name));
        if members.is_empty() && !by_node {
            out.push(Group { partition: p, nodes: Vec::new() });
        }
        let start = out.len();
        for n in members {
            let together = |g: &&mut Group| match grouping {
                Grouping::State => g.nodes[0].state == n.state && g.nodes[0].power == n.power,
                Grouping::Node => false,
                Grouping::Partition => true,
            };
            match out[start..].iter_mut().find(together) {
                Some(g) => g.nodes.push(n),
                None => out.push(Group { partition: p, nodes: vec![n] }),
            }
        }
    }
    out
}

fn natural(name: &str) -> (&str, u64, &str) {
    let digits = name.len() - name.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    let (stem, number) = name.split_at(name.len() - digits);
    (stem, number.parse().unwrap_or(0), name)
}

/// Fields written `%#X` take the width of their widest value (or header);
/// a node list as wide as the list of every node would be (Slurm sizes it
/// so, whether it lists nodes one by one or not).
fn resolve_widths(pieces: &mut [Piece], hash_fields: &[char], groups: &[Group]) {
    let every: Vec<String> = groups.iter().flat_map(|g| g.nodes.iter().map(|n| n.name.clone())).collect();
    let all_nodes = drover_core::hostlist::compress(&every).len();
    for p in pieces.iter_mut() {
        if let Piece::Field { code, width, .. } = p {
            if hash_fields.contains(code) {
                let mut widest = groups.iter().map(|g| value(g, *code).len()).max().unwrap_or(0);
                if *code == 'N' {
                    widest = widest.max(all_nodes);
                }
                *width = Some(widest.max(title(*code).len()));
            }
        }
    }
}

/// Parses a format, noting which fields asked for `#` (fit the widest).
fn parse(format: &str) -> Result<(Vec<Piece>, Vec<char>), String> {
    let mut hash = Vec::new();
    let mut plain = String::new();
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        plain.push(c);
        if c == '%' {
            if let Some('.') = chars.peek() {
                plain.push(chars.next().unwrap_or('.'));
            }
            if chars.next_if_eq(&'#').is_some() {
                if let Some(code) = chars.peek() {
                    hash.push(*code);
                }
            }
        }
    }
    Ok((format::parse(&plain, |c| !title(c).is_empty())?, hash))
}

pub fn render(
    format: &str,
    partitions: &[PartitionView],
    nodes: &[NodeView],
    grouping: Grouping,
    noheader: bool,
) -> Result<String, String> {
    let (mut pieces, hash) = parse(format)?;
    let groups = groups(partitions, nodes, grouping);
    resolve_widths(&mut pieces, &hash, &groups);
    let mut out = String::new();
    if !noheader {
        out.push_str(&format::line(&pieces, |c| title(c).to_string()));
        out.push('\n');
    }
    for g in &groups {
        out.push_str(&format::line(&pieces, |c| value(g, c)));
        out.push('\n');
    }
    Ok(out)
}

pub async fn run(client: &Client, a: Args) -> Result<i32, String> {
    if a.common.answered("Usage: sinfo [-h] [-N] [-l] [-s] [-R] [-o FORMAT] [-p PARTITIONS] [-n NODES] [-t STATES]") {
        return Ok(0);
    }
    let mut partitions = client.get::<PartitionList>("/api/v1/partitions", &[]).await?.partitions;
    let mut nodes = client.get::<NodeList>("/api/v1/nodes", &[]).await?.nodes;
    if let Some(want) = &a.partition {
        let want: Vec<&str> = want.split(',').collect();
        partitions.retain(|p| want.contains(&p.name.as_str()));
    }
    if let Some(expr) = &a.nodes {
        let want = drover_core::hostlist::expand(expr).map_err(|e| format!("invalid --nodes '{expr}': {e}"))?;
        nodes.retain(|n| want.contains(&n.name));
        partitions.iter_mut().for_each(|p| p.nodes.retain(|n| want.contains(n)));
    }
    if let Some(states) = &a.states {
        let want: Vec<String> = states.split(',').map(|s| s.to_ascii_lowercase()).collect();
        nodes.retain(|n| want.iter().any(|w| w == state_name(&n.state, true) || w == state_name(&n.state, false)));
        partitions.iter_mut().for_each(|p| p.nodes.retain(|name| nodes.iter().any(|n| &n.name == name)));
    }
    if a.reasons {
        nodes.retain(down);
    }
    if a.json {
        println!("{}", super::json::nodes(&nodes));
        return Ok(0);
    }
    let format = match &a.format {
        Some(f) => f.as_str(),
        None if a.reasons => REASON_FORMAT,
        None if a.summarize => SUMMARY_FORMAT,
        None if a.node && a.long => NODE_LONG_FORMAT,
        None if a.node => NODE_FORMAT,
        None if a.long => LONG_FORMAT,
        None => DEFAULT_FORMAT,
    };
    let grouping = if a.node || (a.reasons && a.format.is_none()) {
        Grouping::Node
    } else if a.summarize {
        Grouping::Partition
    } else {
        Grouping::State
    };
    let mut text = String::new();
    if a.long && a.format.is_none() {
        text.push_str(&super::ctime_now());
        text.push('\n');
    }
    text.push_str(&render(format, &partitions, &nodes, grouping, a.noheader)?);
    use std::io::Write;
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slurm::fixture;

    /// The probe cluster: one default partition `debug` of two idle 4-CPU,
    /// 4096 MB nodes.
    fn probe() -> (Vec<PartitionView>, Vec<NodeView>) {
        let node = crate::slurm::probe_node;
        (vec![crate::slurm::probe_partition()], vec![node("node1"), node("node2")])
    }

    #[test]
    fn the_default_listing_matches_slurms() {
        let (p, n) = probe();
        assert_eq!(render(DEFAULT_FORMAT, &p, &n, Grouping::State, false).unwrap(), fixture("02-sinfo"));
    }

    #[test]
    fn the_long_node_listing_matches_slurms_below_its_date_line() {
        let (p, n) = probe();
        let theirs = fixture("03-sinfo_Nl");
        let below = theirs.split_once('\n').unwrap().1;
        assert_eq!(render(NODE_LONG_FORMAT, &p, &n, Grouping::Node, false).unwrap(), below);
    }

    #[test]
    fn a_custom_format_matches_slurms_but_for_the_load_we_do_not_know() {
        let (p, n) = probe();
        let ours = render("%N|%t|%c|%m|%C|%O", &p, &n, Grouping::Node, true).unwrap();
        assert_eq!(ours, fixture("04-sinfo_fmt").replace("0.87", "N/A"));
    }

    #[test]
    fn states_group_and_drained_nodes_count_as_other() {
        let (p, mut n) = probe();
        n[1].state = "DRAINED".into();
        n[1].reason = Some("disk".into());
        let out = render("%P %t %D %N %C %F", &p, &n, Grouping::State, true).unwrap();
        assert_eq!(out, "debug* idle 1 node1 0/4/0/4 0/1/0/1\ndebug* drain 1 node2 0/0/4/4 0/0/1/1\n");
    }

    /// Power saving's marks, as Slurm prints them: powered down `~`,
    /// powering up `#`; a powered-down node is a group of its own.
    #[test]
    fn powered_down_nodes_carry_slurm_s_marks() {
        let (p, mut n) = probe();
        n[1].power = "POWERED_DOWN".into();
        let out = render("%P %t %D %N", &p, &n, Grouping::State, true).unwrap();
        assert_eq!(out, "debug* idle 1 node1\ndebug* idle~ 1 node2\n");
        n[1].power = "POWERING_UP".into();
        let out = render("%N %T", &p, &n, Grouping::Node, true).unwrap();
        assert_eq!(out, "node1 idle\nnode2 idle#\n");
    }

    /// Issue #20 item 7: `sinfo -s` is one line per partition, however
    /// many states its nodes are in.
    #[test]
    fn the_summary_is_one_line_per_partition() {
        let (mut p, mut n) = probe();
        n.push(crate::slurm::probe_node("node3"));
        n[1].state = "DRAINED".into();
        n[2].state = "ALLOCATED".into();
        p[0].nodes.push("node3".into());
        let mut gpu = crate::slurm::probe_partition();
        gpu.name = "gpu".into();
        gpu.is_default = false;
        gpu.nodes = vec!["node3".into()];
        p.push(gpu);
        let out = render(SUMMARY_FORMAT, &p, &n, Grouping::Partition, false).unwrap();
        assert_eq!(
            out,
            "PARTITION AVAIL  TIMELIMIT   NODES(A/I/O/T)  NODELIST\n\
             debug*       up   infinite          1/1/1/3  node[1-3]\n\
             gpu          up   infinite          1/0/0/1  node3\n"
        );
        let by_state = render(SUMMARY_FORMAT, &p, &n, Grouping::State, true).unwrap();
        assert_eq!(by_state.lines().count(), 4, "{by_state}");
    }
}
