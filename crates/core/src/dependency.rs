//! `--dependency` specs: `afterok:1:2,afterany:3`, `afterok:1?afternotok:2`,
//! `singleton`, `after:5+10`.

use crate::job::JobRef;
use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DepKind {
    /// The other job has started (or ended), optionally plus some minutes.
    After,
    /// The other job has ended, whatever its outcome.
    AfterAny,
    /// The other job has completed with exit code 0.
    AfterOk,
    /// The other job has ended in failure (non-zero exit, timeout, node fail…).
    AfterNotOk,
    /// Array task K waits for task K of the other array to complete OK.
    AfterCorr,
    /// No other job of the same name and user is running.
    Singleton,
}

impl DepKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DepKind::After => "after",
            DepKind::AfterAny => "afterany",
            DepKind::AfterOk => "afterok",
            DepKind::AfterNotOk => "afternotok",
            DepKind::AfterCorr => "aftercorr",
            DepKind::Singleton => "singleton",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DepCondition {
    pub kind: DepKind,
    /// The job waited on; `None` only for `singleton`.
    pub job: Option<JobRef>,
    /// `after:ID+MIN`: minutes after the other job started.
    pub delay_minutes: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dependency {
    pub conditions: Vec<DepCondition>,
    /// `?`-separated: any one condition suffices. `,`-separated: all must hold.
    pub any: bool,
}

impl Dependency {
    pub fn parse(text: &str) -> Result<Dependency, String> {
        let t = text.trim();
        if t.is_empty() {
            return Err("empty; expected e.g. afterok:123 or singleton".into());
        }
        let (has_all, has_any) = (t.contains(','), t.contains('?'));
        if has_all && has_any {
            return Err("cannot mix ',' (all of) and '?' (any of) in one dependency".into());
        }
        let sep = if has_any { '?' } else { ',' };
        let mut conditions = Vec::new();
        for clause in t.split(sep) {
            let mut parts = clause.split(':');
            let kind_text = parts.next().unwrap_or_default();
            let kind = match kind_text.to_ascii_lowercase().as_str() {
                "after" => DepKind::After,
                "afterany" => DepKind::AfterAny,
                "afterok" => DepKind::AfterOk,
                "afternotok" => DepKind::AfterNotOk,
                "aftercorr" => DepKind::AfterCorr,
                "singleton" => DepKind::Singleton,
                // Slurm accepts a bare job id list as afterany.
                k if k.bytes().all(|b| b.is_ascii_digit() || b == b'_') && !k.is_empty() => {
                    for id in clause.split(':') {
                        conditions.push(DepCondition {
                            kind: DepKind::AfterAny,
                            job: Some(parse_job(id)?),
                            delay_minutes: 0,
                        });
                    }
                    continue;
                }
                other => {
                    return Err(format!(
                        "unknown dependency type '{other}'; use after, afterany, afterok, afternotok, aftercorr or singleton"
                    ))
                }
            };
            let ids: Vec<&str> = parts.collect();
            if kind == DepKind::Singleton {
                if !ids.is_empty() {
                    return Err("singleton takes no job ids".into());
                }
                conditions.push(DepCondition { kind, job: None, delay_minutes: 0 });
                continue;
            }
            if ids.is_empty() {
                return Err(format!("{} needs at least one job id, e.g. {}:123", kind.as_str(), kind.as_str()));
            }
            for id in ids {
                let (id, delay) = match id.split_once('+') {
                    Some((id, d)) if kind == DepKind::After => match d.parse::<u32>() {
                        Ok(m) => (id, m),
                        Err(_) => return Err(format!("'+{d}' must be whole minutes")),
                    },
                    Some(_) => return Err(format!("only 'after' takes a +minutes delay, not {}", kind.as_str())),
                    None => (id, 0),
                };
                conditions.push(DepCondition { kind, job: Some(parse_job(id)?), delay_minutes: delay });
            }
        }
        Ok(Dependency { conditions, any: has_any })
    }
}

fn parse_job(text: &str) -> Result<JobRef, String> {
    JobRef::parse(text).map_err(|_| format!("'{text}' is not a job id"))
}

impl fmt::Display for DepCondition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind.as_str())?;
        if let Some(job) = &self.job {
            write!(f, ":{job}")?;
        }
        if self.delay_minutes > 0 {
            write!(f, "+{}", self.delay_minutes)?;
        }
        Ok(())
    }
}

impl fmt::Display for Dependency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sep = if self.any { "?" } else { "," };
        for (i, c) in self.conditions.iter().enumerate() {
            if i > 0 {
                f.write_str(sep)?;
            }
            write!(f, "{c}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        let d = Dependency::parse("afterok:1:2,afterany:3").unwrap();
        assert_eq!(d.conditions.len(), 3);
        assert!(!d.any);
        assert_eq!(d.to_string(), "afterok:1,afterok:2,afterany:3");
        let d = Dependency::parse("afterok:1?afternotok:2_3").unwrap();
        assert!(d.any);
        assert_eq!(d.conditions[1].job, Some(JobRef { id: 2, task: Some(3) }));
        let d = Dependency::parse("singleton").unwrap();
        assert_eq!(d.conditions[0].kind, DepKind::Singleton);
        let d = Dependency::parse("after:5+10").unwrap();
        assert_eq!(d.conditions[0].delay_minutes, 10);
        assert_eq!(Dependency::parse("7:8").unwrap().conditions.len(), 2);
    }

    #[test]
    fn errors_name_the_problem() {
        assert!(Dependency::parse("afterok").unwrap_err().contains("at least one job id"));
        assert!(Dependency::parse("afterok:1,afterany:2?afterok:3").unwrap_err().contains("mix"));
        assert!(Dependency::parse("afterfoo:1").unwrap_err().contains("unknown dependency type"));
        assert!(Dependency::parse("afterok:x").unwrap_err().contains("not a job id"));
        assert!(Dependency::parse("singleton:3").is_err());
        assert!(Dependency::parse("afterok:3+5").is_err());
    }
}
