//! Job arrays: the `--array` spec and the compact set of task ids that lets a
//! 100 000-task array cost a few bytes until its tasks actually start.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The largest task id accepted, as Slurm's hard MaxArraySize ceiling.
pub const MAX_TASK_ID: u32 = 4_000_000;

/// `start, start+step, …, end` (inclusive; `end` is always reached exactly).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRun {
    pub start: u32,
    pub end: u32,
    pub step: u32,
}

impl TaskRun {
    fn len(&self) -> u64 {
        u64::from((self.end - self.start) / self.step) + 1
    }

    fn contains(&self, task: u32) -> bool {
        task >= self.start && task <= self.end && (task - self.start) % self.step == 0
    }
}

/// An ordered set of array task ids stored as strided runs.
///
/// Runs are sorted by start and never overlap, so membership is a binary
/// search and popping the lowest task is O(1) amortised.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSet {
    runs: Vec<TaskRun>,
}

impl TaskSet {
    /// Builds a set from possibly overlapping, unordered runs.
    pub fn from_runs(mut runs: Vec<TaskRun>) -> TaskSet {
        runs.sort_by_key(|r| (r.start, r.end));
        let overlapping = runs.windows(2).any(|w| w[1].start <= w[0].end);
        if !overlapping {
            return TaskSet { runs };
        }
        // Rare: ranges like `1-9,4`. Expand once, then re-compress.
        let mut ids: Vec<u32> = runs.iter().flat_map(|r| (r.start..=r.end).step_by(r.step as usize)).collect();
        ids.sort_unstable();
        ids.dedup();
        TaskSet::from_sorted_ids(&ids)
    }

    /// Compresses sorted, deduplicated ids into runs of equal stride.
    pub fn from_sorted_ids(ids: &[u32]) -> TaskSet {
        let mut runs: Vec<TaskRun> = Vec::new();
        let mut i = 0;
        while i < ids.len() {
            let start = ids[i];
            if i + 1 == ids.len() {
                runs.push(TaskRun { start, end: start, step: 1 });
                break;
            }
            let step = ids[i + 1] - start;
            let mut j = i + 1;
            while j + 1 < ids.len() && ids[j + 1] - ids[j] == step {
                j += 1;
            }
            if j == i + 1 && step != 1 {
                // Two lone ids are clearer as singletons than as a stride.
                runs.push(TaskRun { start, end: start, step: 1 });
                i += 1;
            } else {
                runs.push(TaskRun { start, end: ids[j], step });
                i = j + 1;
            }
        }
        TaskSet { runs }
    }

    /// Runs as they came, unchecked: what a JSON body can hold. Tests use
    /// it to build the sets no parser makes; [`TaskSet::check`] refuses them.
    #[doc(hidden)]
    pub fn from_raw_runs(runs: Vec<TaskRun>) -> TaskSet {
        TaskSet { runs }
    }

    /// Whether the runs are what the parsers make: each with a positive
    /// step, running forwards, ending on its stride, within [`MAX_TASK_ID`],
    /// sorted and apart. Every method here relies on it; a set read from a
    /// request is checked before anything else touches it.
    pub fn check(&self) -> Result<(), String> {
        for r in &self.runs {
            if r.step == 0 || r.start > r.end || (r.end - r.start) % r.step != 0 {
                return Err(format!("array run {}-{}:{} is malformed", r.start, r.end, r.step));
            }
            if r.end > MAX_TASK_ID {
                return Err(format!("array task id {} is above the maximum {MAX_TASK_ID}", r.end));
            }
        }
        if self.runs.windows(2).any(|w| w[1].start <= w[0].end) {
            return Err("array runs overlap or are out of order".into());
        }
        Ok(())
    }

    pub fn len(&self) -> u64 {
        self.runs.iter().map(TaskRun::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    pub fn first(&self) -> Option<u32> {
        self.runs.first().map(|r| r.start)
    }

    pub fn last(&self) -> Option<u32> {
        self.runs.last().map(|r| r.end)
    }

    pub fn contains(&self, task: u32) -> bool {
        self.run_index(task).is_some()
    }

    fn run_index(&self, task: u32) -> Option<usize> {
        let idx = self.runs.partition_point(|r| r.start <= task);
        if idx == 0 {
            return None;
        }
        self.runs[idx - 1].contains(task).then_some(idx - 1)
    }

    /// Removes and returns the lowest task id.
    pub fn pop_first(&mut self) -> Option<u32> {
        let first = self.runs.first_mut()?;
        let task = first.start;
        if first.start == first.end {
            self.runs.remove(0);
        } else {
            first.start += first.step;
        }
        Some(task)
    }

    /// Removes one task id; returns whether it was present.
    pub fn remove(&mut self, task: u32) -> bool {
        let Some(idx) = self.run_index(task) else {
            return false;
        };
        let run = self.runs[idx];
        let mut replacement = Vec::with_capacity(2);
        if task > run.start {
            replacement.push(TaskRun { start: run.start, end: task - run.step, step: run.step });
        }
        if task < run.end {
            replacement.push(TaskRun { start: task + run.step, end: run.end, step: run.step });
        }
        self.runs.splice(idx..=idx, replacement);
        true
    }

    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.runs.iter().flat_map(|r| (r.start..=r.end).step_by(r.step as usize))
    }
}

/// Prints like Slurm's array expressions: `1-5,7,9-99:3`.
impl fmt::Display for TaskSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.runs.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            match (r.start == r.end, r.step) {
                (true, _) => write!(f, "{}", r.start)?,
                (false, 1) => write!(f, "{}-{}", r.start, r.end)?,
                (false, s) => write!(f, "{}-{}:{}", r.start, r.end, s)?,
            }
        }
        Ok(())
    }
}

/// A parsed `--array` value: which task ids, and how many may run at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArraySpec {
    pub tasks: TaskSet,
    /// The `%N` throttle: at most N tasks running at the same time.
    pub max_running: Option<u32>,
}

impl ArraySpec {
    /// Parses `0-15`, `1,3,5-9`, `0-99:3`, each optionally followed by `%N`.
    pub fn parse(text: &str) -> Result<ArraySpec, String> {
        let t = text.trim();
        let (list, throttle) = match t.split_once('%') {
            Some((l, th)) => (l, Some(th)),
            None => (t, None),
        };
        let max_running = match throttle {
            None => None,
            Some(th) => match th.parse::<u32>() {
                Ok(n) if n > 0 => Some(n),
                _ => return Err(format!("throttle '%{th}' must be a positive whole number")),
            },
        };
        if list.is_empty() {
            return Err("no task ids; expected e.g. 0-15, 1,3,5-9 or 0-99:3".into());
        }
        let mut runs = Vec::new();
        for part in list.split(',') {
            runs.push(parse_run(part)?);
        }
        Ok(ArraySpec { tasks: TaskSet::from_runs(runs), max_running })
    }
}

impl fmt::Display for ArraySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.tasks)?;
        if let Some(n) = self.max_running {
            write!(f, "%{n}")?;
        }
        Ok(())
    }
}

fn parse_run(part: &str) -> Result<TaskRun, String> {
    let id = |s: &str| -> Result<u32, String> {
        match s.parse::<u32>() {
            Ok(n) if n <= MAX_TASK_ID && s.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
            Ok(_) => Err(format!("task id {s} is above the maximum {MAX_TASK_ID}")),
            Err(_) => Err(format!("'{s}' is not a task id; expected e.g. 0-15, 1,3,5-9 or 0-99:3")),
        }
    };
    let (range, step) = match part.split_once(':') {
        Some((r, s)) => (r, Some(s)),
        None => (part, None),
    };
    let step = match step {
        None => 1,
        Some(s) => match s.parse::<u32>() {
            Ok(n) if n > 0 => n,
            _ => return Err(format!("step ':{s}' must be a positive whole number")),
        },
    };
    let (start, end) = match range.split_once('-') {
        Some((a, b)) => (id(a)?, id(b)?),
        None => {
            let n = id(range)?;
            (n, n)
        }
    };
    if start > end {
        return Err(format!("range {start}-{end} runs backwards"));
    }
    // Land `end` on the stride so every run's end is a member.
    let end = start + (end - start) / step * step;
    Ok(TaskRun { start, end, step })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_forms() {
        let a = ArraySpec::parse("0-15").unwrap();
        assert_eq!(a.tasks.len(), 16);
        let a = ArraySpec::parse("1,3,5-9").unwrap();
        assert_eq!(a.tasks.iter().collect::<Vec<_>>(), vec![1, 3, 5, 6, 7, 8, 9]);
        assert_eq!(a.to_string(), "1,3,5-9");
        let a = ArraySpec::parse("0-99:3%4").unwrap();
        assert_eq!(a.tasks.len(), 34);
        assert_eq!(a.tasks.last(), Some(99));
        assert_eq!(a.max_running, Some(4));
        assert_eq!(a.to_string(), "0-99:3%4");
        let a = ArraySpec::parse("0-10:4").unwrap();
        assert_eq!(a.tasks.to_string(), "0-8:4");
    }

    #[test]
    fn overlaps_merge() {
        let a = ArraySpec::parse("5-9,1-6,20").unwrap();
        assert_eq!(a.tasks.to_string(), "1-9,20");
    }

    #[test]
    fn bad_specs() {
        for bad in ["", "a", "5-1", "1-", "0-10:0", "1%0", "1%x", "4000001", "1,,2"] {
            assert!(ArraySpec::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn big_arrays_are_small() {
        let a = ArraySpec::parse("0-99999").unwrap();
        assert_eq!(a.tasks.len(), 100_000);
        assert_eq!(a.tasks.runs.len(), 1);
    }

    #[test]
    fn pop_and_remove() {
        let mut s = ArraySpec::parse("0-9").unwrap().tasks;
        assert_eq!(s.pop_first(), Some(0));
        assert!(s.remove(5));
        assert!(!s.remove(5));
        assert!(!s.contains(5));
        assert_eq!(s.to_string(), "1-4,6-9");
        assert!(s.remove(9));
        assert!(s.remove(1));
        assert_eq!(s.to_string(), "2-4,6-8");
        assert_eq!(s.len(), 6);
    }
}
