//! Prometheus' classic text format from OpenMetrics text.

/// OpenMetrics text (what `prometheus-client` writes) as Prometheus' classic
/// text format, which `promtool check metrics` and every Prometheus read: a
/// counter's family is named with its `_total` suffix, as its samples are,
/// and there is no `# EOF`.
pub fn classic_metrics_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ").and_then(|l| l.strip_suffix(" counter")))
        .collect();
    let mut out = String::with_capacity(openmetrics.len() + 8 * counters.len());
    for line in openmetrics.lines().filter(|l| *l != "# EOF" && !l.starts_with("# UNIT ")) {
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let (name, tail) = line.strip_prefix(prefix)?.split_once(' ')?;
            counters.contains(name).then(|| format!("{prefix}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod metrics_text_tests {
    #[test]
    fn counters_get_total_names_and_eof_goes() {
        let text = super::classic_metrics_text(
            "# HELP x_bytes X.\n# TYPE x_bytes counter\n# UNIT x_bytes bytes\nx_bytes_total{device=\"sda\"} 5\n# HELP g G.\n# TYPE g gauge\ng 1\n# EOF\n",
        );
        assert_eq!(
            text,
            "# HELP x_bytes_total X.\n# TYPE x_bytes_total counter\nx_bytes_total{device=\"sda\"} 5\n# HELP g G.\n# TYPE g gauge\ng 1\n"
        );
    }
}
