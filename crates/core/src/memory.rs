//! Memory sizes as Slurm users write them.

/// Parses `500M`, `4G`, `1T`, `512K` or a bare number (megabytes, as in Slurm)
/// into whole megabytes, rounding kilobytes up.
pub fn parse_memory_mb(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let t = t.strip_suffix(['b', 'B']).unwrap_or(t);
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    if digits.is_empty() {
        return Err("expected a size such as 500M, 4G or 1T (a bare number is megabytes)".into());
    }
    if digits.len() > 15 {
        return Err("too large".into());
    }
    let n: u64 = digits.parse().map_err(|_| "not a number".to_string())?;
    let mb = match unit {
        "" | "M" | "m" => Some(n),
        "K" | "k" => Some(n.div_ceil(1024)),
        "G" | "g" => n.checked_mul(1024),
        "T" | "t" => n.checked_mul(1024 * 1024),
        "P" | "p" => n.checked_mul(1024 * 1024 * 1024),
        _ => return Err(format!("unknown unit '{unit}'; use K, M, G or T (a bare number is megabytes)")),
    };
    match mb {
        Some(mb) if mb <= 1 << 40 => Ok(mb),
        _ => Err("larger than any machine".into()),
    }
}

/// Formats megabytes the way Slurm prints ReqMem and MinMemory: `500M`, `4G`.
pub fn format_mb(mb: u64) -> String {
    if mb >= 1024 * 1024 && mb % (1024 * 1024) == 0 {
        format!("{}T", mb / (1024 * 1024))
    } else if mb >= 1024 && mb % 1024 == 0 {
        format!("{}G", mb / 1024)
    } else {
        format!("{mb}M")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse_memory_mb("500M"), Ok(500));
        assert_eq!(parse_memory_mb("500"), Ok(500));
        assert_eq!(parse_memory_mb("4G"), Ok(4096));
        assert_eq!(parse_memory_mb("4gb"), Ok(4096));
        assert_eq!(parse_memory_mb("1T"), Ok(1048576));
        assert_eq!(parse_memory_mb("1500K"), Ok(2));
        assert_eq!(parse_memory_mb("0"), Ok(0));
        assert!(parse_memory_mb("4X").unwrap_err().contains("unknown unit"));
        assert!(parse_memory_mb("G").is_err());
        assert!(parse_memory_mb("99999999999P").is_err());
        assert_eq!(format_mb(4096), "4G");
        assert_eq!(format_mb(500), "500M");
    }
}
