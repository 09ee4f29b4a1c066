//! `GET /metrics`: the Raft group's state in Prometheus' text format, from
//! the same view as `GET /api/v1/controllers`. The observability issue
//! adds the cluster's job and node metrics beside these.

use drover_proto::Controllers;
use std::fmt::Write;

fn gauge(out: &mut String, name: &str, help: &str, samples: &[(String, u64)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} gauge");
    for (labels, value) in samples {
        let _ = writeln!(out, "{name}{labels} {value}");
    }
}

/// The exposition text for one controller's view of its group.
pub fn raft_text(c: &Controllers) -> String {
    let mut out = String::new();
    let one = |v: u64| vec![(String::new(), v)];
    gauge(&mut out, "drover_raft_term", "The current Raft term.", &one(c.term));
    gauge(
        &mut out,
        "drover_raft_is_leader",
        "1 on the controller that leads, 0 elsewhere.",
        &one(u64::from(c.leader == Some(c.this) && c.role == "Leader")),
    );
    gauge(
        &mut out,
        "drover_raft_leader_id",
        "The leader's id as this controller knows it (0: none).",
        &one(c.leader.unwrap_or(0)),
    );
    gauge(
        &mut out,
        "drover_raft_last_log_index",
        "The last index in this controller's log.",
        &one(c.last_log_index.unwrap_or(0)),
    );
    gauge(
        &mut out,
        "drover_raft_applied_index",
        "The last index applied to the state.",
        &one(c.applied_index.unwrap_or(0)),
    );
    gauge(
        &mut out,
        "drover_raft_snapshot_index",
        "The last index the snapshot covers.",
        &one(c.snapshot_index.unwrap_or(0)),
    );
    gauge(
        &mut out,
        "drover_raft_log_entries",
        "Entries kept in the log (last index minus the compacted ones).",
        &one(c.last_log_index.unwrap_or(0).saturating_sub(c.purged_index.unwrap_or(0))),
    );
    let voters = c.members.iter().filter(|m| m.voter).count() as u64;
    gauge(&mut out, "drover_raft_voters", "Voting members of the group.", &one(voters));
    let lags: Vec<(String, u64)> =
        c.members.iter().filter_map(|m| Some((format!("{{member=\"{}\"}}", m.id), m.lag?))).collect();
    gauge(&mut out, "drover_raft_member_lag_entries", "On the leader: entries each member is behind it.", &lags);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use drover_proto::Member;

    #[test]
    fn a_leaders_view_in_exposition_format() {
        let member = |id, lag| Member { id, addr: format!("10.0.0.{id}:6817"), voter: true, matched_index: lag, lag };
        let c = Controllers {
            this: 2,
            leader: Some(2),
            term: 7,
            role: "Leader".into(),
            last_log_index: Some(1200),
            applied_index: Some(1200),
            snapshot_index: Some(1000),
            purged_index: Some(900),
            members: vec![member(1, Some(3)), member(2, Some(0)), member(3, None)],
        };
        let text = raft_text(&c);
        assert!(text.contains("# TYPE drover_raft_term gauge\ndrover_raft_term 7\n"), "{text}");
        assert!(text.contains("drover_raft_is_leader 1\n"));
        assert!(text.contains("drover_raft_log_entries 300\n"));
        assert!(text.contains("drover_raft_member_lag_entries{member=\"1\"} 3\n"));
        assert!(!text.contains("member=\"3\""), "no lag known for member 3: {text}");
        // Every sample line is `name{labels} value`, after its HELP and TYPE.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (name, value) = line.rsplit_once(' ').unwrap();
            assert!(value.parse::<u64>().is_ok() && name.starts_with("drover_raft_"), "{line}");
        }
    }
}
