//! Job listings (`GET /api/v1/jobs`): which jobs a query selects, and how
//! they go out — full JSON views, the compact TSV rows other front ends
//! read, or `drover queue`'s table. The filter and the TSV rows read the
//! state directly: building a full view per job cost more than everything
//! else in a 10 000-job listing. The table comes from a [`TableIndex`] of
//! rows kept rendered beside the state.

use drover_core::changes::Changes;
use drover_core::job::{Job, JobRef};
use drover_core::state::ArrayJob;
use drover_core::{hostlist, JobId, JobState, State, Time};
use drover_proto::{JobRow, JobView, JOB_ROW_HEADER};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};

#[derive(Deserialize, Default)]
pub struct JobQuery {
    pub user: Option<String>,
    pub state: Option<String>,
    pub id: Option<String>,
    pub partition: Option<String>,
    pub name: Option<String>,
    /// Include finished jobs.
    pub all: Option<bool>,
    /// Full views, with each job's output paths (`scontrol show job`).
    pub detail: Option<bool>,
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
    detail: bool,
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
        // As squeue: naming a job does not show it once it has finished
        // (scripts wait for it to leave the listing); asking for a finished
        // state, or for all, does.
        let all = q.all.unwrap_or(false) || states.iter().any(|s| s.is_terminal());
        Ok(Filter {
            users: list(&q.user),
            partitions: list(&q.partition),
            names: list(&q.name),
            states,
            ids,
            all,
            detail: q.detail.unwrap_or(false),
        })
    }

    /// No condition beyond live-or-all, which [`select`] applies itself.
    fn keeps_all(&self) -> bool {
        let Filter { users, partitions, names, states, ids, all: _, detail: _ } = self;
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

    fn view(&self, s: &State, detail: bool) -> JobView {
        match self {
            Listed::Job(j) if detail => crate::views::job_view(s, j),
            Listed::Job(j) => crate::views::job_summary(s, j),
            Listed::Array(a) if detail => crate::views::array_view_full(s, a),
            Listed::Array(a) => crate::views::array_view(s, a),
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
                let (text, _) = crate::views::pending_tasks_id(a);
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
    if !f.ids.is_empty() {
        return by_ids(s, f);
    }
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

/// The jobs `f` names by id, looked up rather than searched for: an array's
/// id names its pending rest and every task split off from it.
fn by_ids<'s>(s: &'s State, f: &Filter) -> Vec<Listed<'s>> {
    let mut out = Vec::new();
    for r in &f.ids {
        if let Some(a) = s.array(r.id) {
            if s.arrays_pending().contains(&a.id) {
                out.push(Listed::Array(a));
            }
            out.extend(a.split_ids.iter().filter_map(|&id| s.job(id)).map(Listed::Job));
        } else if let Some(j) = s.job(r.id) {
            out.push(Listed::Job(j));
        }
    }
    let default = default_partition(s);
    let live = |l: &Listed| l.state() == JobState::Pending || l.state().is_active();
    out.retain(|l| (f.all || live(l)) && f.keep(l, default));
    let key = |l: &Listed| (l.order(), matches!(l, Listed::Array(_)));
    out.sort_by_key(key);
    out.dedup_by_key(|l| key(l));
    out
}

/// The selected jobs as full views.
pub fn views(s: &State, f: &Filter) -> Vec<JobView> {
    select(s, f).iter().map(|l| l.view(s, f.detail)).collect()
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

/// `drover queue`'s table rows, kept rendered beside the state. A listing
/// copies them instead of visiting every job, its spec and their strings:
/// those were four cache misses a job and most of a 10 000-job listing.
/// The state's change list ([`State::take_changes`]) says which rows to
/// redo; they are redone when a listing next asks, so commands pay only
/// for noting ids.
#[derive(Default)]
pub struct TableIndex {
    rows: BTreeMap<RowKey, Row>,
    /// Array tasks' keys, by job id: a task's key names its array, which a
    /// removed task's id alone does not tell.
    task_keys: HashMap<JobId, RowKey>,
    stale_jobs: Vec<JobId>,
    stale_arrays: Vec<JobId>,
    /// Redo every row (a new index, a restored state, a partition change).
    stale_all: bool,
    users: Names,
    partitions: Names,
}

/// Where a row sorts: [`Listed::order`], then jobs before an array's
/// pending row.
type RowKey = (u64, u64, bool);

struct Row {
    /// The whole line; for a running job, the line without its TIME
    /// column, which goes in at `live`'s byte offset, counted from its
    /// start time.
    text: Box<str>,
    live: Option<(usize, Time)>,
    state: JobState,
    user: u32,
    partition: u32,
}

/// Interned names (users, partitions: a few for thousands of rows), so a
/// filter compares numbers.
#[derive(Default)]
struct Names {
    ids: HashMap<String, u32>,
}

impl Names {
    fn id(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        let id = self.ids.len() as u32;
        self.ids.insert(name.to_string(), id);
        id
    }

    /// The ids of `names` this index has seen (an unseen name matches no row).
    fn ids_of(&self, names: &Option<Vec<&str>>) -> Option<Vec<u32>> {
        names.as_ref().map(|names| names.iter().filter_map(|n| self.ids.get(*n).copied()).collect())
    }
}

impl TableIndex {
    /// An index that renders every row at its first listing.
    pub fn new() -> TableIndex {
        TableIndex { stale_all: true, ..TableIndex::default() }
    }

    /// Notes what commands changed; the rows are redone at the next listing.
    pub fn note(&mut self, c: Changes) {
        if self.stale_all || c.all {
            self.stale_all = true;
            self.stale_jobs.clear();
            self.stale_arrays.clear();
            return;
        }
        self.stale_jobs.extend(c.jobs);
        self.stale_arrays.extend(c.arrays);
        // Nobody listing for days must not make this grow without bound.
        let limit = 2 * self.rows.len() + 4096;
        if self.stale_jobs.len() + self.stale_arrays.len() > limit {
            for ids in [&mut self.stale_jobs, &mut self.stale_arrays] {
                ids.sort_unstable();
                ids.dedup();
            }
            if self.stale_jobs.len() + self.stale_arrays.len() > limit {
                self.note(Changes { all: true, ..Changes::default() });
            }
        }
    }

    /// Brings the rows up to date with `s`.
    fn refresh(&mut self, s: &State) {
        let default = default_partition(s);
        let mut id = String::new();
        if std::mem::take(&mut self.stale_all) {
            self.rows.clear();
            self.task_keys.clear();
            self.stale_jobs.clear();
            self.stale_arrays.clear();
            for j in s.jobs().values() {
                self.insert(s, default, &mut id, Listed::Job(j));
            }
            for a in s.arrays_pending() {
                self.insert(s, default, &mut id, Listed::Array(&s.arrays()[a]));
            }
            return;
        }
        let mut jobs = std::mem::take(&mut self.stale_jobs);
        jobs.sort_unstable();
        jobs.dedup();
        for job in jobs {
            let key = self.task_keys.remove(&job).unwrap_or((job, job, false));
            self.rows.remove(&key);
            if let Some(j) = s.job(job) {
                self.insert(s, default, &mut id, Listed::Job(j));
            }
        }
        let mut arrays = std::mem::take(&mut self.stale_arrays);
        arrays.sort_unstable();
        arrays.dedup();
        for array in arrays {
            self.rows.remove(&(array, array, true));
            if s.arrays_pending().contains(&array) {
                self.insert(s, default, &mut id, Listed::Array(&s.arrays()[&array]));
            }
        }
    }

    fn insert(&mut self, s: &State, default: &str, id: &mut String, l: Listed) {
        let (order, within) = l.order();
        let key = (order, within, matches!(l, Listed::Array(_)));
        if let Listed::Job(j) = l {
            if j.array.is_some() {
                self.task_keys.insert(j.id, key);
            }
        }
        let user = self.users.id(&l.spec().user);
        let partition = self.partitions.id(l.partition(default));
        let mut text = String::new();
        let mut live = None;
        l.with_row(s, default, id, |row| {
            row.push_table_head(&mut text);
            if row.time_is_live() {
                live = row.start_time.map(|start| (text.len(), start));
            } else {
                row.push_table_time(&mut text, 0);
            }
            row.push_table_tail(&mut text);
        });
        self.rows.insert(key, Row { text: text.into_boxed_str(), live, state: l.state(), user, partition });
    }

    /// `drover queue`'s table for `f`, or `None` when `f` selects by
    /// something the rows do not carry (ids, names), which
    /// [`table`] answers from the state.
    fn table(&self, f: &Filter, now_ms: u64) -> Option<String> {
        if !f.ids.is_empty() || f.names.is_some() {
            return None;
        }
        let users = self.users.ids_of(&f.users);
        let partitions = self.partitions.ids_of(&f.partitions);
        let keep = |r: &Row| {
            (f.all || r.state == JobState::Pending || r.state.is_active())
                && users.as_ref().is_none_or(|u| u.contains(&r.user))
                && partitions.as_ref().is_none_or(|p| p.contains(&r.partition))
                && (f.states.is_empty() || f.states.contains(&r.state))
        };
        let mut out = drover_proto::queue_table_header();
        out.reserve(self.rows.values().map(|r| r.text.len() + 1).sum::<usize>() + 16 * 4);
        for r in self.rows.values().filter(|r| keep(r)) {
            match r.live {
                None => out.push_str(&r.text),
                Some((at, start)) => {
                    out.push_str(&r.text[..at]);
                    drover_proto::push_table_elapsed(&mut out, now_ms.saturating_sub(start) / 1000);
                    out.push_str(&r.text[at..]);
                }
            }
        }
        Some(out)
    }
}

/// `drover queue`'s table for `f`, from the index where it can answer.
pub fn table_indexed(s: &State, index: &std::sync::Mutex<TableIndex>, f: &Filter, now_ms: u64) -> String {
    let mut index = index.lock().expect("table index lock poisoned");
    index.refresh(s);
    index.table(f, now_ms).unwrap_or_else(|| table(s, f, now_ms))
}

#[cfg(test)]
mod tests {
    use super::*;
    use drover_core::array::ArraySpec;
    use drover_core::partition::PartitionSpec;
    use drover_core::sched::{self, SchedConfig};
    use drover_core::state::{CancelFilter, Requester, StepOutcome};
    use drover_core::{Command, JobSpec, Resources};
    use std::sync::Arc;

    /// The listing as it was before any index: every job visited.
    fn by_walk(s: &State, f: &Filter, now: u64) -> String {
        let mut all: Vec<Listed> = s.jobs().values().map(Listed::Job).collect();
        all.extend(s.arrays_pending().iter().map(|id| Listed::Array(&s.arrays()[id])));
        let default = default_partition(s);
        all.retain(|l| (f.all || l.state() == JobState::Pending || l.state().is_active()) && f.keep(l, default));
        all.sort_by_key(Listed::order);
        let mut out = drover_proto::queue_table_header();
        let mut id = String::new();
        for l in &all {
            l.with_row(s, default, &mut id, |row| row.push_table_line(&mut out, now));
        }
        out
    }

    fn query(pairs: &[(&str, &str)]) -> JobQuery {
        let get = |k: &str| pairs.iter().find(|(key, _)| *key == k).map(|(_, v)| v.to_string());
        JobQuery {
            user: get("user"),
            state: get("state"),
            id: get("id"),
            partition: get("partition"),
            name: get("name"),
            all: get("all").map(|v| v == "true"),
            detail: get("detail").map(|v| v == "true"),
            format: None,
        }
    }

    /// A small deterministic generator: the same sequence on every run.
    struct Dice(u64);
    impl Dice {
        fn roll(&mut self, n: u64) -> u64 {
            self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (self.0 >> 33) % n
        }
    }

    fn apply(s: &mut State, cmd: Command) {
        let _ = s.apply(cmd);
    }

    /// Drives a state through submissions, plans, ends, cancels, holds and
    /// a partition change, and after every step compares the indexed table
    /// (kept up to date from the change lists) with a walk over every job,
    /// for a spread of filters, and the id lookups with the walk too.
    #[test]
    fn the_indexed_table_matches_a_walk_over_every_job() {
        let mut s = State::default();
        s.track_changes();
        apply(
            &mut s,
            Command::SetPartition(PartitionSpec { is_default: true, ..PartitionSpec::new("debug", "n[1-2]") }),
        );
        apply(&mut s, Command::SetPartition(PartitionSpec::new("big", "n3")));
        for n in 1..=3 {
            apply(
                &mut s,
                Command::RegisterNode {
                    name: format!("n{n}"),
                    addr: String::new(),
                    total: Resources::new(4, 8192, 0),
                    features: vec![],
                    known_steps: vec![],
                    now: 0,
                },
            );
        }
        let index = std::sync::Mutex::new(TableIndex::new());
        let queries: Vec<Vec<(&str, &str)>> = vec![
            vec![],
            vec![("all", "true")],
            vec![("user", "ann")],
            vec![("user", "bob,nobody"), ("all", "true")],
            vec![("state", "R")],
            vec![("state", "PD,CD")],
            vec![("partition", "big")],
            vec![("partition", "debug,big"), ("user", "ann")],
            vec![("name", "long-name-job")],
        ];
        let mut dice = Dice(7);
        let mut now = 1_000;
        for step in 0..400 {
            now += 700;
            let next = s.next_job_id().max(2);
            let pick = |d: &mut Dice| 1 + d.roll(next - 1);
            match dice.roll(10) {
                0..=2 => {
                    let user = ["ann", "bob", "cy"][dice.roll(3) as usize];
                    let mut spec = JobSpec::simple(user, "true");
                    spec.name = ["a", "long-name-job", "naïve-ünïcode"][dice.roll(3) as usize].into();
                    if dice.roll(3) == 0 {
                        spec.partition = Some("big".into());
                    }
                    if dice.roll(4) == 0 {
                        spec.array = Some(ArraySpec::parse("0-5").unwrap());
                    }
                    spec.hold = dice.roll(6) == 0;
                    apply(&mut s, Command::Submit { spec: Arc::new(spec), now });
                }
                3 | 4 => {
                    let plan = sched::schedule(&s, now, &SchedConfig::default());
                    apply(&mut s, Command::Allocate { plan, now, term: 0 });
                }
                5 | 6 => {
                    let outcome = [StepOutcome::Exited(0), StepOutcome::Exited(1)][dice.roll(2) as usize];
                    let job = pick(&mut dice);
                    let attempt = s.job(job).map_or(0, |j| j.restart_count);
                    apply(&mut s, Command::step_finished(job, attempt, outcome, now));
                }
                7 => {
                    let filter = CancelFilter { jobs: vec![JobRef::job(pick(&mut dice))], ..Default::default() };
                    apply(&mut s, Command::Cancel { filter, by: Requester::ROOT, now });
                }
                8 => {
                    let job = JobRef::job(pick(&mut dice));
                    let cmd = if dice.roll(2) == 0 {
                        Command::Hold { job, by: Requester::ROOT, now }
                    } else {
                        Command::Release { job, by: Requester::ROOT, now }
                    };
                    apply(&mut s, cmd);
                }
                _ => {
                    // Moving the default changes what a job without a
                    // partition shows.
                    let default_is_big = dice.roll(2) == 0;
                    for (name, nodes, default) in [("debug", "n[1-2]", !default_is_big), ("big", "n3", default_is_big)]
                    {
                        let spec = PartitionSpec { is_default: default, ..PartitionSpec::new(name, nodes) };
                        apply(&mut s, Command::SetPartition(spec));
                    }
                }
            }
            index.lock().unwrap().note(s.take_changes());
            // Not every step: a listing refreshes the index, and changes
            // piling up between listings must be handled as well.
            if dice.roll(3) != 0 {
                continue;
            }
            let listed_at = now + 1_500;
            for q in &queries {
                let jq = query(q);
                let f = Filter::new(&jq).unwrap();
                let want = by_walk(&s, &f, listed_at);
                assert_eq!(table_indexed(&s, &index, &f, listed_at), want, "step {step}, query {q:?}");
            }
            let mut ids_of = |n: usize, task: bool| {
                let ids: Vec<String> = (0..n)
                    .map(|i| if task { format!("{}_{}", pick(&mut dice), i + 2) } else { pick(&mut dice).to_string() })
                    .collect();
                ids.join(",")
            };
            for ids in [ids_of(1, false), ids_of(3, false), ids_of(2, true)] {
                let jq = query(&[("id", &ids)]);
                let f = Filter::new(&jq).unwrap();
                assert_eq!(table(&s, &f, listed_at), by_walk(&s, &f, listed_at), "step {step}, ids {ids}");
            }
        }
        let listed = table_indexed(&s, &index, &Filter::new(&query(&[("all", "true")])).unwrap(), now);
        assert!(listed.lines().count() > 100, "the run listed too little to prove anything:\n{listed}");
        assert!(listed.contains(" R "), "no running job was listed:\n{listed}");
    }
}
