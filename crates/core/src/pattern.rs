//! Output file name patterns (`sbatch -o`, `srun -e`, …): the one place
//! where `%j`, `%3a` and friends become names, for the batch step and for
//! srun's tasks alike, by the rules of Slurm's `sbatch(1)` man page.

use crate::job::JobId;

/// What output file patterns may refer to.
pub struct PatternInput<'a> {
    pub job_id: JobId,
    pub array_job_id: Option<JobId>,
    pub array_task: Option<u32>,
    pub name: &'a str,
    pub user: &'a str,
    /// `%N`: the batch step's node, or the node of an srun task.
    pub first_node: &'a str,
    /// srun's step (`%s`, `%J`); `None` for the batch step.
    pub step: Option<u32>,
    /// srun's task rank (`%t`) and its node's place in the step (`%n`); 0
    /// for the batch step.
    pub task: u32,
    pub node_index: u32,
}

/// What Slurm writes for `%a` in a job that is not part of an array
/// (its `NO_VAL`), so scripts that glob for it still match.
const NOT_AN_ARRAY_TASK: u64 = 4_294_967_294;

/// The widest zero padding honoured; Slurm's own limit is a single digit's
/// worth, and a wider one would only let a pattern ask for a huge name.
const MAX_WIDTH: usize = 10;

/// Expands a pattern:
///
/// | code | becomes |
/// |------|---------|
/// | `%%` | `%` |
/// | `%A` | the array's job id (the job id outside an array) |
/// | `%a` | the array task index (4294967294 outside an array) |
/// | `%J` | `JOB.STEP` for an srun step, the job id for the batch script |
/// | `%j` | the job id |
/// | `%N` | the node's short name |
/// | `%n` | the node's place in the step (0 for the batch script) |
/// | `%s` | the step id (`batch` for the batch script) |
/// | `%t` | the task rank (0 for the batch script) |
/// | `%u` | the user name |
/// | `%x` | the job name |
///
/// A number between `%` and the code zero-pads a numeric value (`%4j` →
/// `0128`) and is ignored for names. A pattern that contains a backslash
/// is not expanded at all; its backslashes are removed (`\\`: "do not
/// process any of the replacement symbols"). Unknown codes stay as written.
pub fn expand_pattern(pattern: &str, p: &PatternInput<'_>) -> String {
    if pattern.contains('\\') {
        return pattern.replace('\\', "");
    }
    let mut out = String::with_capacity(pattern.len() + 16);
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut width = String::new();
        while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
            width.push(*d);
            chars.next();
        }
        let w: usize = width.parse().unwrap_or(0).min(MAX_WIDTH);
        let num = |n: u64| format!("{n:0w$}");
        match chars.next() {
            Some('j') => out.push_str(&num(p.job_id)),
            Some('A') => out.push_str(&num(p.array_job_id.unwrap_or(p.job_id))),
            Some('a') => out.push_str(&num(p.array_task.map_or(NOT_AN_ARRAY_TASK, u64::from))),
            Some('x') => out.push_str(p.name),
            Some('u') => out.push_str(p.user),
            Some('N') => out.push_str(p.first_node),
            Some('J') => {
                out.push_str(&num(p.job_id));
                // The batch script is the job id alone, as Slurm writes it
                // (dask-jobqueue's `-o dask-worker-%J.out`).
                if let Some(s) = p.step {
                    out.push_str(&format!(".{s}"));
                }
            }
            Some('s') => match p.step {
                Some(s) => out.push_str(&num(u64::from(s))),
                None => out.push_str("batch"),
            },
            Some('t') => out.push_str(&num(u64::from(p.task))),
            Some('n') => out.push_str(&num(u64::from(p.node_index))),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push_str(&width);
                out.push(other);
            }
            None => {
                out.push('%');
                out.push_str(&width);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Job 128, not an array, run by alice on n1 as `sim`.
    fn batch() -> PatternInput<'static> {
        PatternInput {
            job_id: 128,
            array_job_id: None,
            array_task: None,
            name: "sim",
            user: "alice",
            first_node: "n1",
            step: None,
            task: 0,
            node_index: 0,
        }
    }

    fn step(step: u32, task: u32, node_index: u32) -> PatternInput<'static> {
        PatternInput { step: Some(step), task, node_index, ..batch() }
    }

    /// The examples of sbatch(1)/srun(1), "filename pattern", for job 128.
    #[test]
    fn the_man_page_examples() {
        assert_eq!(expand_pattern("job%J.out", &step(0, 0, 0)), "job128.0.out");
        assert_eq!(expand_pattern("job%4j.out", &batch()), "job0128.out");
        assert_eq!(expand_pattern("job%2j-%2t.out", &step(0, 0, 0)), "job128-00.out");
        assert_eq!(expand_pattern("job%2j-%2t.out", &step(0, 1, 0)), "job128-01.out");
    }

    #[test]
    fn every_code() {
        let array = PatternInput { job_id: 42, array_job_id: Some(40), array_task: Some(2), ..batch() };
        assert_eq!(expand_pattern("%A_%a", &array), "40_2");
        assert_eq!(expand_pattern("%A_%3a", &array), "40_002");
        assert_eq!(expand_pattern("%A_%a", &batch()), "128_4294967294");
        assert_eq!(expand_pattern("%J", &batch()), "128");
        assert_eq!(expand_pattern("%J", &step(3, 0, 0)), "128.3");
        assert_eq!(expand_pattern("%6J", &step(3, 0, 0)), "000128.3");
        assert_eq!(expand_pattern("%j", &batch()), "128");
        assert_eq!(expand_pattern("%N", &batch()), "n1");
        assert_eq!(expand_pattern("%n-%t", &step(1, 5, 2)), "2-5");
        assert_eq!(expand_pattern("%s", &step(7, 0, 0)), "7");
        assert_eq!(expand_pattern("%s", &batch()), "batch");
        assert_eq!(expand_pattern("%t", &batch()), "0");
        assert_eq!(expand_pattern("%u-%x", &batch()), "alice-sim");
        assert_eq!(expand_pattern("100%%", &batch()), "100%");
    }

    #[test]
    fn widths_pad_numbers_only() {
        assert_eq!(expand_pattern("%5x-%5u-%5N", &batch()), "sim-alice-n1");
        assert_eq!(expand_pattern("%99j", &batch()).len(), MAX_WIDTH);
    }

    #[test]
    fn a_backslash_turns_expansion_off() {
        assert_eq!(expand_pattern("out\\%j.txt", &batch()), "out%j.txt");
        assert_eq!(expand_pattern("a\\\\b%x", &batch()), "ab%x");
    }

    #[test]
    fn unknown_and_dangling_codes_stay() {
        assert_eq!(expand_pattern("%q-%3q-%", &batch()), "%q-%3q-%");
        assert_eq!(expand_pattern("end%4", &batch()), "end%4");
    }
}
