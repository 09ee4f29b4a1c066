//! `drover top`: the cluster in a terminal, refreshed every second — nodes
//! with their allocation bars, running and pending jobs, recent events.
//! Keys: `u` filter by user, `p` by partition, `c` clear filters, `q` quit.

use crate::client::Client;
use drover_proto::{EventList, EventRecord, JobList, JobView, NodeList, NodeView};
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, List, ListItem, Paragraph, Row, Table};
use ratatui::Frame;
use std::time::{Duration, Instant};

/// What is on screen: the last fetch and the filters.
#[derive(Default)]
pub struct View {
    pub nodes: Vec<NodeView>,
    pub jobs: Vec<JobView>,
    pub events: Vec<EventRecord>,
    pub user: Option<String>,
    pub partition: Option<String>,
    /// Typing a filter: which one, and what so far.
    pub typing: Option<(Filter, String)>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    User,
    Partition,
}

impl View {
    fn shown_jobs(&self) -> impl Iterator<Item = &JobView> {
        self.jobs.iter().filter(|j| {
            self.user.as_ref().is_none_or(|u| &j.user == u)
                && self.partition.as_ref().is_none_or(|p| j.partition.split(',').any(|x| x == p))
        })
    }

    /// Applies a key; false when the user asked to quit.
    pub fn key(&mut self, code: KeyCode, mods: KeyModifiers) -> bool {
        if code == KeyCode::Char('c') && mods.contains(KeyModifiers::CONTROL) {
            return false;
        }
        if let Some((which, text)) = &mut self.typing {
            match code {
                KeyCode::Enter => {
                    let value = Some(text.trim().to_string()).filter(|t| !t.is_empty());
                    match which {
                        Filter::User => self.user = value,
                        Filter::Partition => self.partition = value,
                    }
                    self.typing = None;
                }
                KeyCode::Esc => self.typing = None,
                KeyCode::Backspace => {
                    text.pop();
                }
                KeyCode::Char(ch) => text.push(ch),
                _ => {}
            }
            return true;
        }
        match code {
            KeyCode::Char('q') | KeyCode::Esc => return false,
            KeyCode::Char('u') => self.typing = Some((Filter::User, String::new())),
            KeyCode::Char('p') => self.typing = Some((Filter::Partition, String::new())),
            KeyCode::Char('c') => {
                self.user = None;
                self.partition = None;
            }
            _ => {}
        }
        true
    }
}

fn bar(used: u64, total: u64, width: usize) -> String {
    let filled = (used * width as u64).checked_div(total).map_or(0, |f| f.min(width as u64) as usize);
    format!("{}{}", "█".repeat(filled), "░".repeat(width - filled))
}

fn state_color(state: &str) -> Color {
    match state {
        "IDLE" | "COMPLETED" => Color::Green,
        "MIXED" | "PENDING" => Color::Yellow,
        "ALLOCATED" | "RUNNING" => Color::Blue,
        "DOWN" | "FAIL" | "FAILED" | "TIMEOUT" | "NODE_FAIL" | "OUT_OF_MEMORY" => Color::Red,
        _ => Color::Magenta,
    }
}

fn elapsed(j: &JobView, now_ms: u64) -> String {
    j.start_time.map_or_else(String::new, |s| drover_core::time::format_duration(now_ms.saturating_sub(s) / 1000))
}

/// Draws the whole screen from `v`.
pub fn draw(f: &mut Frame, v: &View, now_ms: u64) {
    let [head, nodes, jobs, events, foot] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length((v.nodes.len() as u16 + 3).min(14)),
        Constraint::Min(6),
        Constraint::Length(8),
        Constraint::Length(1),
    ])
    .areas(f.area());
    let running = v.shown_jobs().filter(|j| j.state == "RUNNING").count();
    let pending = v.shown_jobs().filter(|j| j.state == "PENDING").count();
    let up = v.nodes.iter().filter(|n| !matches!(n.state.as_str(), "DOWN" | "FAIL" | "UNKNOWN")).count();
    let mut title = vec![
        Span::styled("drover top", Style::new().add_modifier(Modifier::BOLD)),
        Span::raw(format!("  nodes {up}/{}  running {running}  pending {pending}", v.nodes.len())),
    ];
    if let Some(u) = &v.user {
        title.push(Span::styled(format!("  user={u}"), Style::new().fg(Color::Cyan)));
    }
    if let Some(p) = &v.partition {
        title.push(Span::styled(format!("  partition={p}"), Style::new().fg(Color::Cyan)));
    }
    f.render_widget(Paragraph::new(Line::from(title)), head);
    draw_nodes(f, nodes, v);
    draw_jobs(f, jobs, v, now_ms);
    let items: Vec<ListItem> = v
        .events
        .iter()
        .rev()
        .take(events.height.saturating_sub(2) as usize)
        .map(|e| ListItem::new(format!("{} {}", crate::ops::clock(e.time_ms), e.text)))
        .collect();
    f.render_widget(List::new(items).block(Block::new().borders(Borders::TOP).title(" recent events ")), events);
    let footer = match (&v.typing, &v.error) {
        (Some((which, text)), _) => format!(
            "{} filter: {text}█  (Enter to apply, Esc to cancel)",
            match which {
                Filter::User => "user",
                Filter::Partition => "partition",
            }
        ),
        (None, Some(e)) => format!("error: {e}"),
        (None, None) => "q quit · u user filter · p partition filter · c clear".to_string(),
    };
    f.render_widget(Paragraph::new(footer).style(Style::new().add_modifier(Modifier::REVERSED)), foot);
}

fn draw_nodes(f: &mut Frame, area: Rect, v: &View) {
    let rows = v.nodes.iter().map(|n| {
        Row::new(vec![
            Cell::from(n.name.clone()),
            Cell::from(format!("{}{}", n.state, n.power_mark())).style(Style::new().fg(state_color(&n.state))),
            Cell::from(format!(
                "{} {:>3}/{:<3}",
                bar(n.alloc.cpus.into(), n.total.cpus.into(), 12),
                n.alloc.cpus,
                n.total.cpus
            )),
            Cell::from(format!(
                "{} {:>4}/{}",
                bar(n.alloc.mem_mb, n.total.mem_mb, 12),
                drover_core::memory::format_mb(n.alloc.mem_mb),
                drover_core::memory::format_mb(n.total.mem_mb)
            )),
            Cell::from(n.jobs.to_string()),
            Cell::from(n.reason.clone().unwrap_or_default()),
        ])
    });
    let widths = [
        Constraint::Length(12),
        Constraint::Length(10),
        Constraint::Length(22),
        Constraint::Length(26),
        Constraint::Length(5),
        Constraint::Min(10),
    ];
    let table = Table::new(rows, widths)
        .header(
            Row::new(["NODE", "STATE", "CPUS", "MEMORY", "JOBS", "REASON"])
                .style(Style::new().add_modifier(Modifier::BOLD)),
        )
        .block(Block::new().borders(Borders::TOP).title(" nodes "));
    f.render_widget(table, area);
}

fn draw_jobs(f: &mut Frame, area: Rect, v: &View, now_ms: u64) {
    // Running first, then pending, each in id order.
    let mut jobs: Vec<&JobView> = v.shown_jobs().collect();
    jobs.sort_by_key(|j| (j.state != "RUNNING", j.job_id));
    let rows = jobs.into_iter().map(|j| {
        let whereabouts = if j.state == "PENDING" { format!("({})", j.reason) } else { j.nodes.clone() };
        Row::new(vec![
            Cell::from(j.id.clone()),
            Cell::from(j.partition.clone()),
            Cell::from(j.name.clone()),
            Cell::from(j.user.clone()),
            Cell::from(j.state_code.clone()).style(Style::new().fg(state_color(&j.state))),
            Cell::from(elapsed(j, now_ms)),
            Cell::from(j.num_cpus.to_string()),
            Cell::from(whereabouts),
        ])
    });
    let widths = [
        Constraint::Length(12),
        Constraint::Length(10),
        Constraint::Length(16),
        Constraint::Length(10),
        Constraint::Length(3),
        Constraint::Length(11),
        Constraint::Length(5),
        Constraint::Min(12),
    ];
    let table = Table::new(rows, widths)
        .header(
            Row::new(["JOBID", "PARTITION", "NAME", "USER", "ST", "TIME", "CPUS", "NODELIST(REASON)"])
                .style(Style::new().add_modifier(Modifier::BOLD)),
        )
        .block(Block::new().borders(Borders::TOP).title(" jobs "));
    f.render_widget(table, area);
}

async fn refresh(client: &Client, v: &mut View) {
    let fetched = async {
        let nodes: NodeList = client.get("/api/v1/nodes", &[]).await?;
        let jobs: JobList = client.get("/api/v1/jobs", &[]).await?;
        let after = v.events.last().map_or(0, |e| e.seq);
        let events: EventList = client.get("/api/v1/events", &[("after", after.to_string())]).await?;
        Ok::<_, String>((nodes, jobs, events))
    };
    match fetched.await {
        Ok((nodes, jobs, events)) => {
            v.nodes = nodes.nodes;
            v.jobs = jobs.jobs;
            v.events.extend(events.events);
            let excess = v.events.len().saturating_sub(200);
            v.events.drain(..excess);
            v.error = None;
        }
        Err(e) => v.error = Some(e),
    }
}

/// Runs until `q`. The terminal is restored however it ends.
pub async fn run(
    client: &Client,
    user: Option<String>,
    partition: Option<String>,
    every: Duration,
) -> Result<i32, String> {
    let mut v = View { user, partition, ..View::default() };
    let mut terminal = ratatui::try_init().map_err(|e| format!("cannot open the terminal: {e}"))?;
    let result = async {
        loop {
            refresh(client, &mut v).await;
            let next = Instant::now() + every;
            loop {
                terminal.draw(|f| draw(f, &v, crate::jobs::now_ms())).map_err(|e| e.to_string())?;
                let left = next.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                if event::poll(left).map_err(|e| e.to_string())? {
                    if let Event::Key(k) = event::read().map_err(|e| e.to_string())? {
                        if k.kind == KeyEventKind::Press && !v.key(k.code, k.modifiers) {
                            return Ok(0);
                        }
                    }
                }
            }
        }
    }
    .await;
    ratatui::restore();
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use drover_core::Resources;
    use ratatui::backend::TestBackend;
    use ratatui::Terminal;

    fn node(name: &str, state: &str, cpus: u32) -> NodeView {
        NodeView {
            name: name.into(),
            state: state.into(),
            reason: None,
            partitions: vec!["debug".into()],
            total: Resources::new(4, 2048, 0),
            alloc: Resources::new(cpus, 512 * u64::from(cpus), 0),
            features: vec![],
            jobs: cpus,
            last_heartbeat: 0,
            addr: String::new(),
            power: "ON".into(),
            repair: None,
        }
    }

    fn job(id: u64, user: &str, state: &str) -> JobView {
        let mut j: JobView = serde_json::from_value(serde_json::json!({
            "id": id.to_string(), "job_id": id, "array_job_id": null, "array_task": null, "name": format!("job{id}"),
            "user": user, "uid": 1000, "account": null, "partition": "debug", "state": state,
            "state_code": if state == "RUNNING" { "R" } else { "PD" }, "reason": "Resources", "nodes": "node1",
            "num_nodes": 1, "num_cpus": 1, "time_limit": null, "submit_time": 0, "start_time": 1000, "end_time": null,
            "exit_code": null, "restart_count": 0, "work_dir": "/", "stdout": "", "stderr": "", "terminal": false
        }))
        .unwrap();
        j.start_time = (state == "RUNNING").then_some(1000);
        j
    }

    fn screen(v: &View) -> String {
        let mut t = Terminal::new(TestBackend::new(110, 30)).unwrap();
        t.draw(|f| draw(f, v, 66_000)).unwrap();
        let buf = t.backend().buffer().clone();
        (0..buf.area.height)
            .map(|y| (0..buf.area.width).map(|x| buf[(x, y)].symbol().to_string()).collect::<String>() + "\n")
            .collect()
    }

    #[test]
    fn nodes_jobs_and_filters_on_screen() {
        let mut v = View {
            nodes: vec![node("node1", "MIXED", 2), node("node2", "IDLE", 0)],
            jobs: vec![job(7, "alice", "RUNNING"), job(8, "bob", "PENDING")],
            ..View::default()
        };
        let s = screen(&v);
        assert!(s.contains("nodes 2/2  running 1  pending 1"), "{s}");
        assert!(s.contains("██████░░░░░░   2/4"), "half the CPUs of node1 in use: {s}");
        assert!(s.contains("job7") && s.contains("1:05") && s.contains("(Resources)"), "{s}");
        for key in [KeyCode::Char('u'), KeyCode::Char('b'), KeyCode::Char('o'), KeyCode::Char('b')] {
            assert!(v.key(key, KeyModifiers::NONE));
        }
        assert!(screen(&v).contains("user filter: bob"), "typing shows in the footer");
        v.key(KeyCode::Enter, KeyModifiers::NONE);
        let s = screen(&v);
        assert!(s.contains("user=bob") && s.contains("job8") && !s.contains("job7"), "{s}");
        v.key(KeyCode::Char('c'), KeyModifiers::NONE);
        assert!(screen(&v).contains("job7"));
        assert!(!v.key(KeyCode::Char('q'), KeyModifiers::NONE), "q quits");
    }
}
