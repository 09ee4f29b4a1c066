//! The event stream, and what accounting remembers (history, usage).

use super::*;

#[derive(Deserialize)]
pub(super) struct EventQuery {
    #[serde(default)]
    after: u64,
    /// Wait up to this many seconds for a first new event (long poll).
    #[serde(default)]
    wait: u64,
    /// A session token, for clients that cannot set headers (a browser's
    /// `EventSource`).
    token: Option<String>,
}

/// Recent events as JSON (`after`, long-polled with `wait`), or, when the
/// client accepts `text/event-stream`, as server-sent events that go on
/// until it hangs up, resumed after `Last-Event-ID`.
pub(super) async fn list_events(
    AxState(app): AxState<App>,
    headers: HeaderMap,
    Query(q): Query<EventQuery>,
    Query(fresh): Query<Freshness>,
) -> Result<Response, ApiError> {
    match &q.token {
        Some(token) => app.authenticate_token(token)?.0,
        None => app.authenticate(&headers)?,
    };
    app.read_barrier(&fresh).await?;
    let accept = headers.get("accept").and_then(|v| v.to_str().ok()).unwrap_or_default();
    if accept.contains("text/event-stream") {
        let resume = headers.get("last-event-id").and_then(|v| v.to_str().ok()?.trim().parse().ok());
        return Ok(event_stream(app, resume.unwrap_or(q.after)));
    }
    let added = app.events.added.notified();
    let mut events = app.events.since(q.after, 10_000);
    if events.is_empty() && q.wait > 0 {
        let _ = tokio::time::timeout(Duration::from_secs(q.wait.min(60)), added).await;
        events = app.events.since(q.after, 10_000);
    }
    Ok(Json(EventList { events }).into_response())
}

/// Server-sent events: each event as `id: SEQ`, `event: KIND` and its JSON
/// record; a comment every 15 s keeps proxies from closing a quiet stream.
pub(super) fn event_stream(app: App, after: u64) -> Response {
    let stream = futures_util::stream::unfold((app, after), |(app, mut after)| async move {
        let mut events = {
            let added = app.events.added.notified();
            let events = app.events.since(after, 1000);
            if events.is_empty() {
                let _ = tokio::time::timeout(Duration::from_secs(15), added).await;
            }
            events
        };
        if events.is_empty() {
            events = app.events.since(after, 1000);
        }
        let mut chunk = String::new();
        for e in &events {
            after = e.seq;
            let data = serde_json::to_string(e).unwrap_or_default();
            chunk.push_str(&format!("id: {}\nevent: {}\ndata: {data}\n\n", e.seq, e.kind));
        }
        if chunk.is_empty() {
            chunk.push_str(": keep-alive\n\n");
        }
        Some((Ok::<_, std::convert::Infallible>(axum::body::Bytes::from(chunk)), (app, after)))
    });
    Response::builder()
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(Body::from_stream(stream))
        .unwrap_or_default()
}

#[derive(Deserialize)]
pub(super) struct HistoryParams {
    user: Option<String>,
    account: Option<String>,
    state: Option<String>,
    partition: Option<String>,
    id: Option<String>,
    /// Epoch milliseconds: jobs that ended at or after it.
    since: Option<u64>,
    /// Epoch milliseconds: jobs submitted at or before it.
    until: Option<u64>,
    limit: Option<u32>,
    /// `END_MS:JOB_ID`, the `next` of the previous page.
    after: Option<String>,
    /// `true`: requeued jobs' earlier runs too.
    #[serde(default)]
    attempts: bool,
}

/// Finished jobs from the accounting database, oldest end first, a page at
/// a time.
pub(super) async fn history(
    AxState(app): AxState<App>,
    _caller: Caller,
    Query(p): Query<HistoryParams>,
) -> ApiResult<HistoryPage> {
    let Some(sink) = &app.accounting else {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "this controller keeps no accounting (--accounting none)"));
    };
    let list = |v: &Option<String>| -> Vec<String> {
        v.as_deref().unwrap_or("").split(',').filter(|s| !s.is_empty()).map(str::to_string).collect()
    };
    let bad = |e: String| ApiError::new(StatusCode::BAD_REQUEST, e);
    let jobs = list(&p.id)
        .iter()
        .map(|j| j.split('_').next().unwrap_or(j).parse::<u64>().map_err(|_| bad(format!("'{j}' is not a job id"))))
        .collect::<Result<Vec<u64>, ApiError>>()?;
    let after = p
        .after
        .as_deref()
        .map(|a| {
            a.split_once(':')
                .and_then(|(e, i)| Some((e.parse().ok()?, i.parse().ok()?)))
                .ok_or_else(|| bad(format!("after='{a}': expected END_MS:JOB_ID from the previous page's next")))
        })
        .transpose()?;
    let q = drover_accounting::HistoryQuery {
        users: list(&p.user),
        accounts: list(&p.account),
        states: list(&p.state),
        partitions: list(&p.partition),
        jobs,
        since_ms: p.since,
        until_ms: p.until,
        limit: p.limit,
        after,
        all_attempts: p.attempts,
    };
    let (jobs, next) = sink
        .history(&q)
        .await
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, format!("accounting database: {e}")))?;
    Ok(Json(HistoryPage { jobs, next: next.map(|(e, i)| format!("{e}:{i}")) }))
}

#[derive(Deserialize)]
pub(super) struct UsageParams {
    /// Epoch milliseconds; default: a week before `until`.
    since: Option<u64>,
    /// Epoch milliseconds; default: now.
    until: Option<u64>,
}

/// Use per user and account over a window, from accounting (`drover usage`).
pub(super) async fn usage(
    AxState(app): AxState<App>,
    _caller: Caller,
    Query(p): Query<UsageParams>,
) -> ApiResult<UsageReport> {
    let Some(sink) = &app.accounting else {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "this controller keeps no accounting (--accounting none)"));
    };
    let until = p.until.unwrap_or_else(now_ms);
    let since = p.since.unwrap_or(until.saturating_sub(7 * 86_400_000));
    if since >= until {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("since ({since}) must come before until ({until})"),
        ));
    }
    let unavailable = |e: String| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, format!("accounting database: {e}"));
    let db = sink.db().await.map_err(unavailable)?;
    let rows = db.usage(since, until).await.map_err(|e| unavailable(e.to_string()))?;
    Ok(Json(UsageReport { since, until, rows }))
}
