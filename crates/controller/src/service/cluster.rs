//! The cluster as users see it: configuration, partitions, nodes and their
//! drains, who is asking, session tokens, health.

use super::*;

/// The cluster's settings (`scontrol show config`).
pub(super) async fn show_config(
    AxState(app): AxState<App>,
    _caller: Caller,
    Query(fresh): Query<Freshness>,
) -> ApiResult<drover_core::state::Config> {
    app.read_barrier(&fresh).await?;
    Ok(Json(app.ctl.shared.read(|s| s.config().clone())))
}

pub(super) async fn list_partitions(
    AxState(app): AxState<App>,
    _caller: Caller,
    Query(fresh): Query<Freshness>,
) -> ApiResult<PartitionList> {
    app.read_barrier(&fresh).await?;
    Ok(Json(PartitionList {
        partitions: app
            .ctl
            .shared
            .read(|s| s.partitions().iter().map(|p| crate::views::partition_view(s, p)).collect()),
    }))
}

/// Who the request's credential or token says the caller is.
pub(super) async fn whoami(Caller(who): Caller) -> ApiResult<WhoAmI> {
    Ok(Json(WhoAmI { uid: who.uid, user: drover_auth::user_name(who.uid), operator: who.operator }))
}

/// Trades a one-time credential for a session token of the same identity:
/// `drover token`, and the dashboard link `drover up` prints.
pub(super) async fn issue_token(
    AxState(app): AxState<App>,
    headers: HeaderMap,
    Json(req): Json<TokenRequest>,
) -> ApiResult<TokenGrant> {
    let (who, gid) = app.authenticate_credential(&headers)?;
    let lifetime_ms = req.lifetime_s.unwrap_or(8 * 3600).saturating_mul(1000);
    if lifetime_ms == 0 || lifetime_ms > drover_auth::TOKEN_MAX_MS {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("a token lives 1 s to {} days", drover_auth::TOKEN_MAX_MS / 86_400_000),
        ));
    }
    let now = now_ms();
    let token = drover_auth::Token::mint(&app.key, who.uid, gid, lifetime_ms, now)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot mint a token: {e}")))?;
    Ok(Json(TokenGrant { token, uid: who.uid, expires_ms: now + lifetime_ms }))
}

pub(super) async fn list_nodes(
    AxState(app): AxState<App>,
    _caller: Caller,
    Query(fresh): Query<Freshness>,
) -> ApiResult<NodeList> {
    app.read_barrier(&fresh).await?;
    Ok(Json(NodeList {
        nodes: app.ctl.shared.read(|s| (0..s.nodes().len()).map(|i| crate::views::node_view(s, i)).collect()),
    }))
}

pub(super) async fn show_node(
    AxState(app): AxState<App>,
    _caller: Caller,
    Path(name): Path<String>,
    Query(fresh): Query<Freshness>,
) -> ApiResult<NodeView> {
    app.read_barrier(&fresh).await?;
    node_view(&app, &name)
}

pub(super) fn node_view(app: &App, name: &str) -> ApiResult<NodeView> {
    app.ctl
        .shared
        .read(|s| s.node_index(name).map(|i| crate::views::node_view(s, i as usize)))
        .map(Json)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("Invalid node name specified: {name}")))
}

pub(super) async fn node_action(
    app: &App,
    headers: &HeaderMap,
    who: Requester,
    node: String,
    action: NodeAction,
    reason: Option<String>,
) -> ApiResult<NodeView> {
    let cmd = Command::SetNodeState { node: node.clone(), action, reason, by: who, now: now_ms() };
    app.propose_request(headers, cmd).await?;
    node_view(app, &node)
}

/// `POST /api/v1/nodes`: defines cloud nodes (operators), one log entry.
pub(super) async fn define_nodes(
    AxState(app): AxState<App>,
    Caller(who): Caller,
    headers: HeaderMap,
    Json(d): Json<drover_proto::DefineNodes>,
) -> ApiResult<NodeList> {
    let names = drover_core::hostlist::expand(&d.nodes)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("nodes '{}': {e}", d.nodes)))?;
    if names.is_empty() || names.len() > 10_000 {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "define 1 to 10000 nodes at a time"));
    }
    let total = drover_core::Resources::new(d.cpus, d.memory_mb, d.gpus);
    let now = now_ms();
    let cmd = Command::DefineNodes { names: names.clone(), total, features: d.features, by: who, now };
    app.propose_request(&headers, cmd).await?;
    Ok(Json(NodeList {
        nodes: app.ctl.shared.read(|s| {
            names.iter().filter_map(|n| s.node_index(n)).map(|i| crate::views::node_view(s, i as usize)).collect()
        }),
    }))
}

pub(super) async fn drain(
    AxState(app): AxState<App>,
    Caller(who): Caller,
    headers: HeaderMap,
    Path(name): Path<String>,
    Json(d): Json<Drain>,
) -> ApiResult<NodeView> {
    node_action(&app, &headers, who, name, NodeAction::Drain, Some(d.reason)).await
}

pub(super) async fn resume(
    AxState(app): AxState<App>,
    Caller(who): Caller,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> ApiResult<NodeView> {
    node_action(&app, &headers, who, name, NodeAction::Resume, None).await
}

/// `drover chaos stop-instance NODE`: stops the node's machine through the
/// healer's provider, as a failure would, for the healer to notice and
/// repair (operators only, on the leader).
pub(super) async fn stop_machine(
    AxState(app): AxState<App>,
    Caller(who): Caller,
    Path(name): Path<String>,
) -> ApiResult<drover_proto::MachineStopped> {
    if !who.operator {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "stopping a machine needs an operator"));
    }
    app.leader_only()?;
    let _known = node_view(&app, &name)?;
    let healer = app.healer.as_ref().ok_or_else(|| {
        ApiError::new(StatusCode::CONFLICT, "this cluster has no healer (--heal none): no provider to stop machines")
    })?;
    let target = drover_healer::Target { node: name.clone(), token: format!("chaos-{}", now_ms()) };
    let answer = healer
        .provider
        .act(drover_core::node::RepairKind::Suspend, std::slice::from_ref(&target), &serde_json::Value::Null)
        .await;
    match answer.into_iter().next() {
        Some(Ok(detail)) => {
            tracing::warn!(node = %name, provider = healer.provider.name(), detail, "chaos: machine stopped");
            Ok(Json(drover_proto::MachineStopped { node: name, provider: healer.provider.name().into(), detail }))
        }
        Some(Err(e)) => Err(ApiError::new(StatusCode::BAD_GATEWAY, format!("{}: {e}", healer.provider.name()))),
        None => Err(ApiError::new(StatusCode::BAD_GATEWAY, "the provider gave no answer")),
    }
}

pub(super) async fn health(AxState(app): AxState<App>) -> Response {
    let leader = app.ctl.raft.metrics().borrow().current_leader;
    let nodes: Vec<(String, String)> =
        app.ctl.shared.read(|s| s.nodes().iter().map(|n| (n.name.clone(), n.state().name().to_string())).collect());
    let mut problems: Vec<String> = nodes
        .iter()
        .filter(|(_, st)| matches!(st.as_str(), "DOWN" | "FAIL" | "DRAINED" | "DRAINING" | "UNKNOWN"))
        .map(|(n, st)| format!("node {n} is {st}"))
        .collect();
    if leader.is_none() {
        problems.push("no controller is leader".into());
    }
    let ok = problems.is_empty();
    let code = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, Json(Health { ok, leader, nodes, problems })).into_response()
}
