//! The controllers: membership, metrics and service discovery, and Raft's
//! RPCs between members.

use super::*;

pub(super) async fn controllers(AxState(app): AxState<App>) -> Json<Controllers> {
    Json(controllers_view(&app))
}

/// Prometheus' scrape (no credential, like /health): OpenMetrics when the
/// scraper asks for it, the classic text format otherwise.
pub(super) async fn metrics(AxState(app): AxState<App>, headers: HeaderMap) -> Response {
    use crate::metrics::{wants_openmetrics, OPENMETRICS_FORMAT, TEXT_FORMAT};
    let openmetrics = wants_openmetrics(headers.get("accept").and_then(|v| v.to_str().ok()));
    let raft = controllers_view(&app);
    let heartbeats = if app.ctl.is_leader() { app.liveness.ages() } else { Vec::new() };
    let text = app.metrics.scrape(|refresh| app.ctl.shared.read(refresh), &raft, &heartbeats, openmetrics);
    ([("content-type", if openmetrics { OPENMETRICS_FORMAT } else { TEXT_FORMAT })], text).into_response()
}

/// Prometheus HTTP service discovery (`http_sd_configs`): the controllers,
/// and every agent that registered a metrics address. No credential, like
/// `/metrics`: it names hosts and ports, nothing more. Labels are `__meta_`
/// ones, for relabelling: a node's state must not become part of its
/// series' identity.
pub(super) async fn prometheus_targets(AxState(app): AxState<App>) -> Response {
    use serde_json::json;
    let raft = controllers_view(&app);
    let mut groups: Vec<serde_json::Value> = raft
        .members
        .iter()
        .map(|m| json!({"targets": [m.addr], "labels": {"__meta_drover_role": "controller", "__meta_drover_controller": m.id.to_string()}}))
        .collect();
    app.ctl.shared.read(|s| {
        for n in s.nodes().iter().filter(|n| n.addr.contains(':')) {
            groups.push(json!({
                "targets": [n.addr],
                "labels": {"__meta_drover_role": "agent", "__meta_drover_node": n.name, "__meta_drover_node_state": n.state().name()}
            }));
        }
    });
    Json(groups).into_response()
}

pub(super) fn controllers_view(app: &App) -> Controllers {
    let m = app.ctl.raft.metrics().borrow().clone();
    let leader_last = m.last_log_index;
    let replication = m.replication.clone().unwrap_or_default();
    let membership = m.membership_config.membership();
    let members = membership
        .nodes()
        .map(|(id, node)| {
            let matched = replication.get(id).map(|l| l.map_or(0, |l| l.index));
            Member {
                id: *id,
                addr: node.addr.clone(),
                voter: membership.voter_ids().any(|v| v == *id),
                matched_index: matched,
                lag: matched.map(|i| leader_last.unwrap_or(0).saturating_sub(i)),
            }
        })
        .collect::<Vec<Member>>();
    let leading = m.current_leader == Some(app.ctl.id);
    let committed_index = if leading {
        // The highest index a majority of voters holds.
        let mut held: Vec<u64> = members.iter().filter(|m| m.voter).map(|m| m.matched_index.unwrap_or(0)).collect();
        held.sort_unstable_by(|a, b| b.cmp(a));
        held.get(held.len() / 2).copied()
    } else {
        m.last_applied.map(|l| l.index)
    };
    Controllers {
        this: app.ctl.id,
        committed_index,
        leader: m.current_leader,
        term: m.current_term,
        role: format!("{:?}", m.state),
        last_log_index: m.last_log_index,
        applied_index: m.last_applied.map(|l| l.index),
        snapshot_index: m.snapshot.map(|l| l.index),
        purged_index: m.purged.map(|l| l.index),
        members,
    }
}

pub(super) fn membership_error<E: std::fmt::Display>(app: &App, e: openraft::error::RaftError<u64, E>) -> ApiError {
    if app.ctl.is_leader() {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, format!("membership change failed: {e}"))
    } else {
        app.not_leader()
    }
}

/// Adds a controller: first as a learner, which receives the log (or a
/// snapshot) until it has caught up, then as a voter.
pub(super) async fn join_controller(
    AxState(app): AxState<App>,
    headers: HeaderMap,
    Json(j): Json<JoinController>,
) -> ApiResult<Controllers> {
    app.authenticate_operator(&headers)?;
    if j.addr.parse::<SocketAddr>().is_err() {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, format!("invalid controller address '{}'", j.addr)));
    }
    app.leader_only()?;
    let node = openraft::BasicNode { addr: j.addr.clone() };
    app.ctl.raft.add_learner(j.id, node, true).await.map_err(|e| membership_error(&app, e))?;
    let mut voters = app.ctl.voters();
    voters.insert(j.id);
    app.ctl.raft.change_membership(voters, false).await.map_err(|e| membership_error(&app, e))?;
    Ok(controllers(AxState(app)).await)
}

/// Removes a controller from the group (it stops receiving the log).
pub(super) async fn remove_controller(
    AxState(app): AxState<App>,
    headers: HeaderMap,
    Path(id): Path<u64>,
) -> ApiResult<Controllers> {
    app.authenticate_operator(&headers)?;
    app.leader_only()?;
    let mut voters = app.ctl.voters();
    if !voters.remove(&id) {
        return Err(ApiError::new(StatusCode::NOT_FOUND, format!("controller {id} is not a voting member")));
    }
    if voters.is_empty() {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "cannot remove the last controller"));
    }
    app.ctl.raft.change_membership(voters, false).await.map_err(|e| membership_error(&app, e))?;
    Ok(controllers(AxState(app)).await)
}

/// One Raft RPC from another controller (signed with the cluster key); the
/// answer is openraft's `Result`, which the peer unwraps.
pub(super) async fn raft_rpc<Resp: serde::Serialize, F: std::future::Future<Output = Resp>>(
    app: &App,
    headers: &HeaderMap,
    call: impl FnOnce(Raft) -> F,
) -> Response {
    match app.authenticate_agent(headers) {
        Ok(()) => Json(call(app.ctl.raft.clone()).await).into_response(),
        Err(e) => e.into_response(),
    }
}

pub(super) type Raft = openraft::Raft<crate::TypeConfig>;

pub(super) async fn raft_append(
    AxState(app): AxState<App>,
    headers: HeaderMap,
    Json(req): Json<openraft::raft::AppendEntriesRequest<crate::TypeConfig>>,
) -> Response {
    raft_rpc(&app, &headers, |raft: Raft| async move { raft.append_entries(req).await }).await
}

pub(super) async fn raft_vote(
    AxState(app): AxState<App>,
    headers: HeaderMap,
    Json(req): Json<openraft::raft::VoteRequest<u64>>,
) -> Response {
    raft_rpc(&app, &headers, |raft: Raft| async move { raft.vote(req).await }).await
}

pub(super) async fn raft_snapshot(
    AxState(app): AxState<App>,
    headers: HeaderMap,
    Json(req): Json<openraft::raft::InstallSnapshotRequest<crate::TypeConfig>>,
) -> Response {
    raft_rpc(&app, &headers, |raft: Raft| async move { raft.install_snapshot(req).await }).await
}
