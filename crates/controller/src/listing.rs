//! Job listings (`GET /api/v1/jobs`): which jobs a query selects, and how
//! they go out — full JSON views, or the compact TSV rows a queue listing
//! needs. The filter and the TSV rows read the state directly: building a
//! full view per job cost more than everything else in a 10 000-job listing.

use drover_core::job::{Job, JobRef};
use drover_core::state::ArrayJob;
use drover_core::{hostlist, JobState, State};
use drover_proto::{JobRow, JobView, JOB_ROW_HEADER};
use serde::Deserialize;

#[derive(Deserialize, Default)]
pub struct JobQuery {
    pub user: Option<String>,
    pub state: Option<String>,
    pub id: Option<String>,
    pub partition: Option<String>,
    pub name: Option<String>,
    /// Include finished jobs.
    pub all: Option<bool>,
    /// `tsv`: the compact listing ([`JobRow`] lines) instead of JSON;
    /// `table`: `drover queue`'s table itself, ready to print.
    pub format: Option<String>,
}

/// A query, parsed.
pub struct Filter<'q> {
    users: Option<Vec<&'q str>>,
    partitions: Option<Vec<&'q str>>,
    names: Option<Vec<&'q str>>,
    states: Vec<JobState>,
    ids: Vec<JobRef>,
    all: bool,
}

fn list(v: &Option<String>) -> Option<Vec<&str>> {
    v.as_deref().map(|v| v.split(',').collect())
}

fn parsed<T>(v: &Option<String>, parse: impl Fn(&str) -> Result<T, String>) -> Result<Vec<T>, String> {
    v.as_deref().map_or(Ok(Vec::new()), |v| v.split(',').map(parse).collect())
}

impl<'q> Filter<'q> {
    pub fn new(q: &'q JobQuery) -> Result<Filter<'q>, String> {
        let states = parsed(&q.state, JobState::parse)?;
        let ids = parsed(&q.id, JobRef::parse)?;
        let all = q.all.unwrap_or(false) || !ids.is_empty() || states.iter().any(|s| s.is_terminal());
        Ok(Filter { users: list(&q.user), partitions: list(&q.partition), names: list(&q.name), states, ids, all })
    }

    /// No condition beyond live-or-all, which [`select`] applies itself.
    fn keeps_all(&self) -> bool {
        let Filter { users, partitions, names, states, ids, all: _ } = self;
        users.is_none() && partitions.is_none() && names.is_none() && states.is_empty() && ids.is_empty()
    }

    fn keep(&self, l: &Listed, default_partition: &str) -> bool {
        let spec = l.spec();
        let one_of = |set: &Option<Vec<&str>>, v: &str| set.as_ref().is_none_or(|set| set.contains(&v));
        one_of(&self.users, &spec.user)
            && one_of(&self.names, &spec.name)
            && one_of(&self.partitions, l.partition(default_partition))
            && (self.states.is_empty() || self.states.contains(&l.state()))
            && (self.ids.is_empty() || self.ids.iter().any(|r| l.is(r)))
    }
}

/// One line of a listing: a job, or the not-yet-started tasks of an array.
enum Listed<'s> {
    Job(&'s Job),
    Array(&'s ArrayJob),
}

impl<'s> Listed<'s> {
    fn spec(&self) -> &'s drover_core::JobSpec {
        match self {
            Listed::Job(j) => &j.spec,
            Listed::Array(a) => &a.spec,
        }
    }

    fn state(&self) -> JobState {
        match self {
            Listed::Job(j) => j.state,
            Listed::Array(_) => JobState::Pending,
        }
    }

    /// Where it runs, or will: `default` is the default partition's name,
    /// looked up once per listing.
    fn partition(&self, default: &'s str) -> &'s str {
        match self {
            Listed::Job(Job { alloc: Some(a), .. }) => &a.partition,
            _ => self.spec().partition.as_deref().unwrap_or(default),
        }
    }

    fn is(&self, r: &JobRef) -> bool {
        match self {
            Listed::Job(j) => match j.array {
                Some(t) => (r.id == j.id || r.id == t.array_id) && r.task.is_none_or(|want| want == t.task),
                None => r.id == j.id && r.task.is_none(),
            },
            Listed::Array(a) => r.id == a.id && r.task.is_none_or(|t| a.pending.contains(t)),
        }
    }

    /// Array jobs sort with their array, in task order.
    fn order(&self) -> (u64, u64) {
        match self {
            Listed::Job(j) => (j.array.map_or(j.id, |t| t.array_id), j.id),
            Listed::Array(a) => (a.id, a.id),
        }
    }

    fn view(&self, s: &State) -> JobView {
        match self {
            Listed::Job(j) => JobView::summary(s, j),
            Listed::Array(a) => JobView::of_array(s, a),
        }
    }

    /// Its listing row, handed to `use_row`; `id` is scratch space for the
    /// row's id, so that a listing allocates no string per job.
    fn with_row(&self, s: &State, default_partition: &str, id: &mut String, use_row: impl FnOnce(&JobRow)) {
        use std::fmt::Write;
        let spec = self.spec();
        let partition = self.partition(default_partition);
        let state_code = self.state().code();
        let row = |id, num_nodes, start_time, end_time, where_| JobRow {
            id,
            partition,
            name: &spec.name,
            user: &spec.user,
            state_code,
            start_time,
            end_time,
            num_nodes,
            where_,
        };
        id.clear();
        match self {
            Listed::Job(j) => {
                let nodes = j.alloc.as_ref().map_or(j.spec.nodes_min, |a| a.shares.len() as u32);
                let _ = write!(id, "{}", Id(j));
                match &j.alloc {
                    Some(a) if j.state != JobState::Pending => {
                        let names: Vec<&str> =
                            a.shares.iter().map(|sh| s.nodes()[sh.node as usize].name.as_str()).collect();
                        let where_ = hostlist::compress(&names);
                        use_row(&row(id, nodes, j.start_time, j.end_time, &where_));
                    }
                    _ => use_row(&row(id, nodes, None, None, j.reason.name())),
                }
            }
            Listed::Array(a) => {
                let (text, _) = drover_proto::pending_tasks_id(a);
                use_row(&row(&text, spec.nodes_min, None, None, a.reason.name()));
            }
        }
    }
}

/// A job's id as users see it (`1234`, `1234_7`), printed in place.
struct Id<'j>(&'j Job);

impl std::fmt::Display for Id<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.array {
            Some(a) => write!(f, "{}_{}", a.array_id, a.task),
            None => write!(f, "{}", self.0.id),
        }
    }
}

fn default_partition(s: &State) -> &str {
    s.default_partition().map_or("", |p| p.name())
}

fn select<'s>(s: &'s State, f: &Filter) -> Vec<Listed<'s>> {
    let live = s.active_ids().len() + s.pending_ids().len();
    let mut out: Vec<Listed> = Vec::with_capacity(live + s.arrays_pending().len());
    if f.all {
        out.extend(s.jobs().values().map(Listed::Job));
    } else if live * 4 >= s.jobs().len() {
        // Mostly live jobs: one walk in order costs less than a tree
        // lookup per id.
        let is_live = |j: &&Job| j.state == JobState::Pending || j.state.is_active();
        out.extend(s.jobs().values().filter(is_live).map(Listed::Job));
    } else {
        out.extend(s.active_ids().iter().chain(s.pending_ids()).map(|id| Listed::Job(&s.jobs()[id])));
    }
    out.extend(s.arrays_pending().iter().map(|id| Listed::Array(&s.arrays()[id])));
    if !f.keeps_all() {
        let default = default_partition(s);
        out.retain(|l| f.keep(l, default));
    }
    out.sort_by_key(Listed::order);
    out
}

/// The selected jobs as full views.
pub fn views(s: &State, f: &Filter) -> Vec<JobView> {
    select(s, f).iter().map(|l| l.view(s)).collect()
}

/// The selected jobs as a TSV listing, header first.
pub fn tsv(s: &State, f: &Filter) -> String {
    let selected = select(s, f);
    let default = default_partition(s);
    let mut out = String::with_capacity(64 * (selected.len() + 1));
    out.push_str(JOB_ROW_HEADER);
    out.push('\n');
    let mut id = String::new();
    for l in &selected {
        l.with_row(s, default, &mut id, |row| row.push_tsv(&mut out));
    }
    out
}

/// The selected jobs as `drover queue` prints them, header first: the
/// client only copies it out, so a long listing costs it nothing.
pub fn table(s: &State, f: &Filter, now_ms: u64) -> String {
    let selected = select(s, f);
    let default = default_partition(s);
    let mut out = String::with_capacity(96 * (selected.len() + 1));
    out.push_str(&drover_proto::queue_table_header());
    let mut id = String::new();
    for l in &selected {
        l.with_row(s, default, &mut id, |row| row.push_table_line(&mut out, now_ms));
    }
    out
}
