//! The queue's rows as text: the compact TSV listing other front ends read,
//! and the table `drover queue` prints as the controller renders it.

/// One line of `GET /api/v1/jobs?format=tsv`: the columns a queue listing
/// shows, tab-separated, without JSON's cost (a 10 000-job listing is
/// ~0.4 MB of text instead of ~4 MB of JSON, and decoding it allocates
/// nothing). Tabs and newlines inside values are sent as spaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRow<'a> {
    pub id: &'a str,
    pub partition: &'a str,
    pub name: &'a str,
    pub user: &'a str,
    pub state_code: &'a str,
    pub start_time: Option<u64>,
    pub end_time: Option<u64>,
    pub num_nodes: u32,
    /// The node list once started; the pending reason while pending.
    pub where_: &'a str,
}

/// The first line of a TSV listing.
pub const JOB_ROW_HEADER: &str = "id\tpartition\tname\tuser\tst\tstart_ms\tend_ms\tnodes\twhere";

/// The header line of `drover queue`'s table: squeue's default columns.
pub fn queue_table_header() -> String {
    format!(
        "{:>18} {:>9} {:>8} {:>8} {:>2} {:>10} {:>6} NODELIST(REASON)\n",
        "JOBID", "PARTITION", "NAME", "USER", "ST", "TIME", "NODES"
    )
}

/// `s` right-aligned in `width` columns and a space, padded by hand: the
/// formatter's padding cost more than the rest of a 10 000-line listing
/// together.
fn right(out: &mut String, s: &str, width: usize) {
    const SPACES: &str = "                  ";
    let n = if s.is_ascii() { s.len() } else { s.chars().count() };
    out.push_str(&SPACES[..width.saturating_sub(n).min(SPACES.len())]);
    out.push_str(s);
    out.push(' ');
}

/// The queue table's TIME column for `elapsed` seconds.
pub fn push_table_elapsed(out: &mut String, elapsed: u64) {
    // Most of a long queue is pending: spare them the formatting.
    if elapsed == 0 {
        right(out, "0:00", 10);
    } else {
        right(out, &drover_core::time::format_duration(elapsed), 10);
    }
}

/// `n` in decimal, in `digits`, without the formatter (listings write
/// thousands of numbers).
fn decimal(mut n: u64, digits: &mut [u8; 20]) -> &str {
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    std::str::from_utf8(&digits[i..]).unwrap_or("0")
}

fn push_number(out: &mut String, n: u64) {
    out.push_str(decimal(n, &mut [0; 20]));
}

impl<'a> JobRow<'a> {
    /// One TSV line; tabs and line ends inside fields become spaces.
    pub fn push_tsv(&self, out: &mut String) {
        fn text(out: &mut String, s: &str) {
            if s.bytes().any(|b| matches!(b, b'\t' | b'\n' | b'\r')) {
                out.extend(s.chars().map(|c| if matches!(c, '\t' | '\n' | '\r') { ' ' } else { c }));
            } else {
                out.push_str(s);
            }
        }
        fn time(out: &mut String, t: Option<u64>) {
            match t {
                Some(t) => push_number(out, t),
                None => out.push('-'),
            }
        }
        for field in [self.id, self.partition, self.name, self.user, self.state_code] {
            text(out, field);
            out.push('\t');
        }
        time(out, self.start_time);
        out.push('\t');
        time(out, self.end_time);
        out.push('\t');
        push_number(out, u64::from(self.num_nodes));
        out.push('\t');
        text(out, self.where_);
        out.push('\n');
    }

    /// One line of `drover queue`'s table, as squeue pads it by default:
    /// fields cut to their column and right-aligned, the elapsed time as of
    /// `now_ms`, a pending job's reason in parentheses.
    pub fn push_table_line(&self, out: &mut String, now_ms: u64) {
        self.push_table_head(out);
        self.push_table_time(out, now_ms);
        self.push_table_tail(out);
    }

    /// Whether the line's TIME column moves with the clock (a job running).
    pub fn time_is_live(&self) -> bool {
        self.start_time.is_some() && self.end_time.is_none()
    }

    /// The columns before TIME.
    pub fn push_table_head(&self, out: &mut String) {
        let cut = |s: &'a str, n: usize| s.char_indices().nth(n).map_or(s, |(i, _)| &s[..i]);
        right(out, self.id, 18);
        right(out, cut(self.partition, 9), 9);
        right(out, cut(self.name, 8), 8);
        right(out, cut(self.user, 8), 8);
        right(out, self.state_code, 2);
    }

    /// The TIME column as of `now_ms`.
    pub fn push_table_time(&self, out: &mut String, now_ms: u64) {
        let elapsed = match (self.start_time, self.end_time) {
            (Some(s), Some(e)) => e.saturating_sub(s) / 1000,
            (Some(s), None) => now_ms.saturating_sub(s) / 1000,
            _ => 0,
        };
        push_table_elapsed(out, elapsed);
    }

    /// The columns after TIME, and the line's end.
    pub fn push_table_tail(&self, out: &mut String) {
        right(out, decimal(u64::from(self.num_nodes), &mut [0; 20]), 6);
        if self.state_code == "PD" {
            out.push('(');
            out.push_str(self.where_);
            out.push_str(")\n");
        } else {
            out.push_str(self.where_);
            out.push('\n');
        }
    }

    pub fn parse_tsv(line: &'a str) -> Option<JobRow<'a>> {
        let mut f = line.split('\t');
        let mut next = || f.next();
        let time = |s: &str| if s == "-" { Some(None) } else { s.parse().ok().map(Some) };
        Some(JobRow {
            id: next()?,
            partition: next()?,
            name: next()?,
            user: next()?,
            state_code: next()?,
            start_time: time(next()?)?,
            end_time: time(next()?)?,
            num_nodes: next()?.parse().ok()?,
            where_: next()?,
        })
    }
}

#[cfg(test)]
mod tsv_tests {
    use super::*;

    #[test]
    fn numbers_and_table_lines_as_squeue_pads_them() {
        assert_eq!(decimal(0, &mut [0; 20]), "0");
        assert_eq!(decimal(u64::MAX, &mut [0; 20]), u64::MAX.to_string());
        let header = queue_table_header();
        assert_eq!(header, "             JOBID PARTITION     NAME     USER ST       TIME  NODES NODELIST(REASON)\n");
        let pending = JobRow {
            id: "1000_[3-9]",
            partition: "a-very-long-partition",
            name: "train",
            user: "ann",
            state_code: "PD",
            start_time: None,
            end_time: None,
            num_nodes: 2,
            where_: "Resources",
        };
        let running = JobRow { id: "77", state_code: "R", start_time: Some(0), where_: "n[1-2]", ..pending };
        let mut out = String::new();
        pending.push_table_line(&mut out, 3_725_000);
        running.push_table_line(&mut out, 3_725_000);
        assert_eq!(
            out,
            concat!(
                "        1000_[3-9] a-very-lo    train      ann PD       0:00      2 (Resources)\n",
                "                77 a-very-lo    train      ann  R    1:02:05      2 n[1-2]\n",
            )
        );
        // Every line lines up under the header.
        assert!(out.lines().all(|l| l.find(" (").or(l.find(" n[")) == header.find(" NODELIST")));
    }

    #[test]
    fn rows_go_through_tsv_unchanged_and_tabs_in_names_become_spaces() {
        let row = JobRow {
            id: "12_3",
            partition: "debug",
            name: "a\tb",
            user: "ann",
            state_code: "R",
            start_time: Some(5),
            end_time: None,
            num_nodes: 2,
            where_: "n[1-2]",
        };
        let mut text = String::new();
        row.push_tsv(&mut text);
        assert_eq!(text, "12_3\tdebug\ta b\tann\tR\t5\t-\t2\tn[1-2]\n");
        let back = JobRow::parse_tsv(text.trim_end()).unwrap();
        assert_eq!(back, JobRow { name: "a b", ..row });
        assert_eq!(JobRow::parse_tsv("too\tfew"), None);
    }
}
