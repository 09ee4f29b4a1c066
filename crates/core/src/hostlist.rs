//! Hostlist expressions, both ways: `node[01-04,7],gpu1` ⇄ a list of names.

/// Expansion stops here: a typo like `n[1-999999999]` must not eat memory.
pub const MAX_HOSTS: usize = 1_000_000;

/// Expands a hostlist expression into host names, in written order.
///
/// Several bracket groups multiply out (`r[1-2]n[1-2]` gives r1n1 r1n2 r2n1
/// r2n2). Leading zeros set the width per range, as in Slurm.
pub fn expand(expr: &str) -> Result<Vec<String>, String> {
    let mut hosts = Vec::new();
    for item in split_top_level(expr)? {
        if item.is_empty() {
            return Err("empty host name between commas".into());
        }
        expand_item(item, &mut hosts)?;
    }
    Ok(hosts)
}

/// Splits on commas that are not inside brackets.
fn split_top_level(expr: &str) -> Result<Vec<&str>, String> {
    let mut items = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in expr.char_indices() {
        match c {
            '[' if depth == 0 => depth = 1,
            '[' => return Err("nested '[' is not allowed".into()),
            ']' if depth == 1 => depth = 0,
            ']' => return Err("']' without a matching '['".into()),
            ',' if depth == 0 => {
                items.push(expr[start..i].trim());
                start = i + 1;
            }
            c if c.is_whitespace() && depth == 0 => {
                return Err("host names cannot contain spaces".into());
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err("'[' is never closed".into());
    }
    items.push(expr[start..].trim());
    Ok(items)
}

fn expand_item(item: &str, out: &mut Vec<String>) -> Result<(), String> {
    let Some(open) = item.find('[') else {
        if item.contains(']') {
            return Err("']' without a matching '['".into());
        }
        out.push(item.to_string());
        return check_len(out.len());
    };
    let close = open + item[open..].find(']').ok_or("'[' is never closed")?;
    let prefix = &item[..open];
    let ranges = &item[open + 1..close];
    let rest = &item[close + 1..];
    if ranges.is_empty() {
        return Err("empty brackets '[]'".into());
    }
    let mut tails = Vec::new();
    expand_item_or_empty(rest, &mut tails)?;
    for range in ranges.split(',') {
        let (lo, hi) = range.split_once('-').unwrap_or((range, range));
        if lo.is_empty() || hi.is_empty() || !lo.bytes().chain(hi.bytes()).all(|b| b.is_ascii_digit()) {
            return Err(format!("'{range}' is not a number or a range like 1-4"));
        }
        if lo.len() > 9 || hi.len() > 9 {
            return Err(format!("'{range}' has numbers that are too large"));
        }
        let (a, b): (u64, u64) = (lo.parse().unwrap_or(0), hi.parse().unwrap_or(0));
        if a > b {
            return Err(format!("range {range} runs backwards"));
        }
        let width = if lo.len() > 1 && lo.starts_with('0') { lo.len() } else { 0 };
        if out.len() as u64 + (b - a + 1) * tails.len() as u64 > MAX_HOSTS as u64 {
            return Err(format!("expands to more than {MAX_HOSTS} hosts"));
        }
        for n in a..=b {
            for tail in &tails {
                out.push(format!("{prefix}{n:0width$}{tail}"));
            }
        }
    }
    check_len(out.len())
}

fn expand_item_or_empty(rest: &str, out: &mut Vec<String>) -> Result<(), String> {
    if rest.is_empty() {
        out.push(String::new());
        Ok(())
    } else {
        expand_item(rest, out)
    }
}

fn check_len(n: usize) -> Result<(), String> {
    if n > MAX_HOSTS {
        Err(format!("expands to more than {MAX_HOSTS} hosts"))
    } else {
        Ok(())
    }
}

/// The order hostlists print in: by prefix, then by number (`node2` before
/// `node10`), then by name.
pub fn order(a: &str, b: &str) -> std::cmp::Ordering {
    let split = |h: &str| {
        let at = h.trim_end_matches(|c: char| c.is_ascii_digit()).len();
        (h[..at].to_string(), h[at..].parse::<u64>().ok())
    };
    split(a).cmp(&split(b)).then_with(|| a.cmp(b))
}

/// Compresses host names into the shortest common hostlist form, sorted:
/// `[node1, node2, node3, gpu1]` → `gpu1,node[1-3]`.
pub fn compress<S: AsRef<str>>(hosts: &[S]) -> String {
    // (prefix, zero-pad width, number) for names ending in digits.
    let mut numbered: Vec<(&str, usize, u64)> = Vec::new();
    let mut plain: Vec<&str> = Vec::new();
    for h in hosts {
        let h = h.as_ref();
        let digits_at = h.trim_end_matches(|c: char| c.is_ascii_digit()).len();
        let digits = &h[digits_at..];
        if digits.is_empty() || digits.len() > 18 {
            plain.push(h);
            continue;
        }
        let width = if digits.len() > 1 && digits.starts_with('0') { digits.len() } else { 0 };
        numbered.push((&h[..digits_at], width, digits.parse().unwrap_or(0)));
    }
    // `node10` prints the same padded to two digits: let it join `node[01-09]`.
    let padded: Vec<(&str, usize)> = numbered.iter().filter(|n| n.1 > 0).map(|n| (n.0, n.1)).collect();
    for n in &mut numbered {
        if n.1 == 0 && padded.contains(&(n.0, n.2.to_string().len())) {
            n.1 = n.2.to_string().len();
        }
    }
    numbered.sort_unstable();
    numbered.dedup();
    plain.sort_unstable();
    plain.dedup();

    let mut groups: Vec<(String, String)> = plain.iter().map(|p| (p.to_string(), p.to_string())).collect();
    let mut i = 0;
    while i < numbered.len() {
        let (prefix, width, _) = numbered[i];
        let mut ranges: Vec<(u64, u64)> = Vec::new();
        while i < numbered.len() && numbered[i].0 == prefix && numbered[i].1 == width {
            let n = numbered[i].2;
            match ranges.last_mut() {
                Some((_, hi)) if *hi + 1 == n => *hi = n,
                _ => ranges.push((n, n)),
            }
            i += 1;
        }
        let text = if ranges.len() == 1 && ranges[0].0 == ranges[0].1 {
            format!("{prefix}{:0width$}", ranges[0].0)
        } else {
            let inner: Vec<String> = ranges
                .iter()
                .map(|&(a, b)| if a == b { format!("{a:0width$}") } else { format!("{a:0width$}-{b:0width$}") })
                .collect();
            format!("{prefix}[{}]", inner.join(","))
        };
        groups.push((prefix.to_string(), text));
    }
    groups.sort();
    groups.into_iter().map(|(_, t)| t).collect::<Vec<_>>().join(",")
}

/// Node names as events carry them: a list, in allocation order, for the
/// code that acts on each node; a hostlist (`node[1-3]`) for people and on
/// the wire. No code has to parse a hostlist back to find the nodes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeSet(Vec<String>);

impl NodeSet {
    pub fn new(names: Vec<String>) -> NodeSet {
        NodeSet(names)
    }

    pub fn names(&self) -> &[String] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Display for NodeSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&compress(&self.0))
    }
}

impl serde::Serialize for NodeSet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&compress(&self.0))
    }
}

impl<'de> serde::Deserialize<'de> for NodeSet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<NodeSet, D::Error> {
        let text = String::deserialize(d)?;
        if text.is_empty() {
            return Ok(NodeSet::default());
        }
        expand(&text).map(NodeSet).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_sort_by_number_not_text() {
        let mut hosts = vec!["node10", "gpu1", "node2", "node1"];
        hosts.sort_by(|a, b| order(a, b));
        assert_eq!(hosts, ["gpu1", "node1", "node2", "node10"]);
    }

    #[test]
    fn expands() {
        assert_eq!(
            expand("node[01-04,7],gpu1").unwrap(),
            vec!["node01", "node02", "node03", "node04", "node7", "gpu1"]
        );
        assert_eq!(expand("r[1-2]n[1-2]").unwrap(), vec!["r1n1", "r1n2", "r2n1", "r2n2"]);
        assert_eq!(expand("a").unwrap(), vec!["a"]);
        assert_eq!(expand("n[8-10]").unwrap(), vec!["n8", "n9", "n10"]);
    }

    #[test]
    fn bad_expressions() {
        for bad in ["n[1-", "n]", "n[]", "n[a-b]", "n[3-1]", "a,,b", "n[[1]]", "n[1-99999999]", "a b"] {
            assert!(expand(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn compresses() {
        let hosts = ["node1", "node2", "node3", "gpu1", "node7"];
        assert_eq!(compress(&hosts), "gpu1,node[1-3,7]");
        assert_eq!(compress(&["node01", "node02", "node10"]), "node[01-02,10]");
        assert_eq!(compress(&["login"]), "login");
        assert_eq!(compress::<&str>(&[]), "");
        assert_eq!(compress(&["n5"]), "n5");
    }

    #[test]
    fn round_trip() {
        let e = "node[01-04,7],gpu1";
        let mut hosts = expand(e).unwrap();
        let c = compress(&hosts);
        let mut back = expand(&c).unwrap();
        hosts.sort();
        back.sort();
        assert_eq!(hosts, back);
    }

    #[test]
    fn a_node_set_is_a_list_in_memory_and_a_hostlist_on_the_wire() {
        let set = super::NodeSet::new(vec!["n2".into(), "n1".into(), "n3".into()]);
        assert_eq!(set.names(), ["n2", "n1", "n3"], "allocation order kept");
        let json = serde_json::to_string(&set).unwrap();
        assert_eq!(json, format!("\"{set}\""));
        let back: super::NodeSet = serde_json::from_str(&json).unwrap();
        assert_eq!(back.names().len(), 3);
        assert!(serde_json::from_str::<super::NodeSet>("\"\"").unwrap().is_empty());
        assert!(serde_json::from_str::<super::NodeSet>("\"n[3-\"").is_err());
    }
}
