//! What `drover up` started a local cluster with, kept beside it in
//! `STATE/up.settings`, so that `drover up` run again can tell "start what
//! died" from "run something else": it restarts the first, adds nodes for a
//! larger `--nodes`, and refuses anything else with what is running and how
//! to change it, instead of reporting settings it did not apply.

use std::path::Path;

const FILE: &str = "up.settings";

/// Flag and value pairs, in the order `drover up` prints them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings(pub Vec<(&'static str, String)>);

/// Every flag a running cluster keeps, in order: a file naming others (a
/// later version's) still compares on these.
const FLAGS: &[&str] = &[
    "--nodes",
    "--cpus-per-node",
    "--mem-per-node",
    "--port",
    "--controllers",
    "--tls",
    "--node-timeout",
    "--heartbeat",
    "--kill-grace",
    "--health-check",
    "--health-interval",
    "controller flags",
];

impl Settings {
    pub fn get(&self, flag: &str) -> Option<&str> {
        self.0.iter().find(|(f, _)| *f == flag).map(|(_, v)| v.as_str())
    }

    /// The settings of the cluster that runs from `state`, if it wrote them.
    pub fn read(state: &Path) -> Option<Settings> {
        let text = std::fs::read_to_string(state.join(FILE)).ok()?;
        let pairs = text
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .filter_map(|(flag, value)| FLAGS.iter().find(|f| **f == flag).map(|f| (*f, value.to_string())))
            .collect();
        Some(Settings(pairs))
    }

    pub fn write(&self, state: &Path) -> Result<(), String> {
        let text: String = self.0.iter().map(|(f, v)| format!("{f}\t{}\n", v.replace(['\n', '\t'], " "))).collect();
        let path = state.join(FILE);
        std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
    }

    /// What `self` (wanted) asks for that `running` does not have, as
    /// `--flag WANTED (running: VALUE)` lines. A larger `--nodes` is not a
    /// difference: `up` starts the nodes that are missing.
    pub fn differences(&self, running: &Settings) -> Vec<String> {
        let mut out = Vec::new();
        for (flag, want) in &self.0 {
            let Some(have) = running.get(flag) else { continue };
            if want == have {
                continue;
            }
            if *flag == "--nodes" && want.parse::<u32>().ok() > have.parse::<u32>().ok() {
                continue;
            }
            let shown = |v: &str| if v.is_empty() { "(none)".to_string() } else { v.to_string() };
            out.push(format!("  {flag} {} (running: {})", shown(want), shown(have)));
        }
        out
    }
}

/// The refusal for a cluster that runs with other settings.
pub fn refusal(state: &Path, differences: &[String]) -> String {
    format!(
        "a cluster is already running from {dir} with other settings:\n{list}\n\
         To change them, stop it and start it again with the new flags:\n  \
         drover down --state-dir {dir} && drover up …\n\
         Its jobs and history are kept in {dir}. (A larger --nodes alone adds nodes to the running cluster.)",
        dir = state.display(),
        list = differences.join("\n"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(nodes: u32, controllers: u16) -> Settings {
        Settings(vec![
            ("--nodes", nodes.to_string()),
            ("--cpus-per-node", "4".into()),
            ("--controllers", controllers.to_string()),
            ("--health-check", String::new()),
        ])
    }

    #[test]
    fn more_nodes_is_no_difference_fewer_or_other_flags_are() {
        let running = settings(2, 1);
        assert!(settings(2, 1).differences(&running).is_empty());
        assert!(settings(5, 1).differences(&running).is_empty());
        assert_eq!(settings(1, 1).differences(&running), ["  --nodes 1 (running: 2)"]);
        assert_eq!(settings(2, 3).differences(&running), ["  --controllers 3 (running: 1)"]);
        let mut checked = settings(2, 1);
        checked.0[3].1 = "true".into();
        assert_eq!(checked.differences(&running), ["  --health-check true (running: (none))"]);
    }

    #[test]
    fn settings_read_back_as_written() {
        let dir = std::env::temp_dir().join(format!("drover-up-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let s = Settings(vec![("--nodes", "3".into()), ("--health-check", "a\tb\nc".into())]);
        s.write(&dir).unwrap();
        let back = Settings::read(&dir).unwrap();
        assert_eq!(back.get("--nodes"), Some("3"));
        assert_eq!(back.get("--health-check"), Some("a b c"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
