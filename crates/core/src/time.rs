//! Slurm's time formats: limits (`-t 1-12:00:00`), begin times (`--begin
//! now+1hour`), and the way Slurm prints durations.

/// Parses a time limit in any of Slurm's forms and returns seconds, or `None`
/// for no limit.
///
/// Accepted: `MM`, `MM:SS`, `HH:MM:SS`, `D-HH`, `D-HH:MM`, `D-HH:MM:SS`, and
/// `UNLIMITED`/`INFINITE` (any case). As in Slurm, `0` also means no limit.
pub fn parse_time_limit(text: &str) -> Result<Option<u64>, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("empty time; use e.g. 30 (minutes), 2:00:00 or 1-00:00:00".into());
    }
    if t.eq_ignore_ascii_case("unlimited") || t.eq_ignore_ascii_case("infinite") {
        return Ok(None);
    }
    let (days, rest) = match t.split_once('-') {
        Some((d, rest)) => (Some(number(d, "days")?), rest),
        None => (None, t),
    };
    let parts: Vec<&str> = rest.split(':').collect();
    let nums = parts.iter().map(|p| number(p, "field")).collect::<Result<Vec<u64>, String>>()?;
    let secs = match (days, nums.as_slice()) {
        (None, [m]) => m * 60,
        (None, [m, s]) => m * 60 + s,
        (None, [h, m, s]) => h * 3600 + m * 60 + s,
        (Some(d), [h]) => d * 86400 + h * 3600,
        (Some(d), [h, m]) => d * 86400 + h * 3600 + m * 60,
        (Some(d), [h, m, s]) => d * 86400 + h * 3600 + m * 60 + s,
        _ => return Err("expected MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS or UNLIMITED".into()),
    };
    // Ten years is far past any sane limit and keeps arithmetic in range.
    if secs > 10 * 366 * 86400 {
        return Err("longer than 10 years; use UNLIMITED for no limit".into());
    }
    Ok(if secs == 0 { None } else { Some(secs) })
}

fn number(text: &str, what: &str) -> Result<u64, String> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "'{text}' is not a number ({what}); expected MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS or UNLIMITED"
        ));
    }
    if text.len() > 9 {
        return Err(format!("'{text}' is too large"));
    }
    text.parse::<u64>().map_err(|e| e.to_string())
}

/// Formats a duration the way squeue and sacct do: `M:SS`, `H:MM:SS`, or
/// `D-HH:MM:SS` once it passes a day.
pub fn format_duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}-{h:02}:{m:02}:{s:02}")
    } else if h > 0 {
        format!("{h}:{m:02}:{s:02}")
    } else {
        format!("{m}:{s:02}")
    }
}

/// Formats a time limit as Slurm's TIMELIMIT column: `infinite`, `30:00`,
/// `1:00:00`, `1-00:00:00`.
pub fn format_limit(limit: Option<u64>) -> String {
    match limit {
        None => "infinite".to_string(),
        Some(s) => format_duration(s),
    }
}

/// Parses `--begin`: `now`, `now+N[seconds|minutes|hours|days|weeks]` (unit
/// prefixes such as `s`, `min`, `h` work), `YYYY-MM-DD[THH:MM[:SS]]`,
/// `HH:MM[:SS]` (today, or tomorrow if already past), or `@EPOCH`. Calendar
/// times are read as UTC. Returns seconds since the epoch.
pub fn parse_begin(text: &str, now_secs: u64) -> Result<u64, String> {
    let t = text.trim();
    let lower = t.to_ascii_lowercase();
    if lower == "now" {
        return Ok(now_secs);
    }
    if let Some(rest) = lower.strip_prefix("now+") {
        let split = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        let n = number(&rest[..split], "count")?;
        let unit = &rest[split..];
        let mult = match unit {
            "" | "s" | "sec" | "secs" | "second" | "seconds" => 1,
            "m" | "min" | "mins" | "minute" | "minutes" => 60,
            "h" | "hour" | "hours" => 3600,
            "d" | "day" | "days" => 86400,
            "w" | "week" | "weeks" => 604800,
            _ => return Err(format!("unknown unit '{unit}'; use seconds, minutes, hours, days or weeks")),
        };
        return Ok(now_secs.saturating_add(n.saturating_mul(mult)));
    }
    if let Some(epoch) = t.strip_prefix('@') {
        // Not `number`: today's epoch seconds have ten digits.
        return match epoch.parse::<u64>() {
            Ok(secs) if epoch.bytes().all(|b| b.is_ascii_digit()) && secs < 253_402_300_800 => Ok(secs),
            _ => Err(format!("'@{epoch}' is not seconds since 1970 before the year 10000")),
        };
    }
    if t.contains('-') {
        let (date, clock) = match t.split_once('T') {
            Some((d, c)) => (d, Some(c)),
            None => (t, None),
        };
        let ymd: Vec<&str> = date.split('-').collect();
        let [y, mo, d] = ymd.as_slice() else {
            return Err("expected YYYY-MM-DD[THH:MM[:SS]]".into());
        };
        let (y, mo, d) = (number(y, "year")?, number(mo, "month")?, number(d, "day")?);
        if !(1970..=9999).contains(&y) || !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo) {
            return Err(format!("{date} is not a calendar date"));
        }
        let secs_of_day = match clock {
            Some(c) => clock_secs(c)?,
            None => 0,
        };
        return Ok(days_from_civil(y, mo, d) * 86400 + secs_of_day);
    }
    if t.contains(':') {
        let s = clock_secs(t)?;
        let today = now_secs - now_secs % 86400;
        let at = today + s;
        return Ok(if at < now_secs { at + 86400 } else { at });
    }
    Err("expected now+N<unit>, YYYY-MM-DD[THH:MM[:SS]], HH:MM[:SS] or @EPOCH".into())
}

fn clock_secs(text: &str) -> Result<u64, String> {
    let parts: Vec<&str> = text.split(':').collect();
    let (h, m, s) = match parts.as_slice() {
        [h, m] => (number(h, "hour")?, number(m, "minute")?, 0),
        [h, m, s] => (number(h, "hour")?, number(m, "minute")?, number(s, "second")?),
        _ => return Err(format!("'{text}' is not HH:MM or HH:MM:SS")),
    };
    if h > 23 || m > 59 || s > 59 {
        return Err(format!("'{text}' is not a time of day"));
    }
    Ok(h * 3600 + m * 60 + s)
}

fn is_leap(y: u64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: u64, m: u64) -> u64 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if is_leap(y) => 29,
        _ => 28,
    }
}

/// Days since 1970-01-01 for a proleptic Gregorian date (y >= 1970).
fn days_from_civil(y: u64, m: u64, d: u64) -> u64 {
    let mut days = 0;
    for year in 1970..y {
        days += if is_leap(year) { 366 } else { 365 };
    }
    for month in 1..m {
        days += days_in_month(y, month);
    }
    days + d - 1
}

/// Formats epoch seconds as `YYYY-MM-DDTHH:MM:SS` (UTC), Slurm's timestamp
/// shape.
pub fn format_timestamp(epoch_secs: u64) -> String {
    let mut days = epoch_secs / 86400;
    let rem = epoch_secs % 86400;
    let mut y = 1970;
    loop {
        let len = if is_leap(y) { 366 } else { 365 };
        if days < len {
            break;
        }
        days -= len;
        y += 1;
    }
    let mut m = 1;
    while days >= days_in_month(y, m) {
        days -= days_in_month(y, m);
        m += 1;
    }
    format!("{y:04}-{m:02}-{:02}T{:02}:{:02}:{:02}", days + 1, rem / 3600, rem / 60 % 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_slurm_time_form() {
        assert_eq!(parse_time_limit("30"), Ok(Some(1800)));
        assert_eq!(parse_time_limit("30:15"), Ok(Some(1815)));
        assert_eq!(parse_time_limit("2:00:00"), Ok(Some(7200)));
        assert_eq!(parse_time_limit("1-12"), Ok(Some(86400 + 12 * 3600)));
        assert_eq!(parse_time_limit("1-12:30"), Ok(Some(86400 + 12 * 3600 + 1800)));
        assert_eq!(parse_time_limit("2-00:00:01"), Ok(Some(2 * 86400 + 1)));
        assert_eq!(parse_time_limit("UNLIMITED"), Ok(None));
        assert_eq!(parse_time_limit("infinite"), Ok(None));
        assert_eq!(parse_time_limit("0"), Ok(None));
    }

    #[test]
    fn bad_times_say_what_is_expected() {
        for bad in ["", "abc", "1:2:3:4", "1-2:3:4:5", "-5", "1-", ":30", "99999999999"] {
            let err = parse_time_limit(bad).unwrap_err();
            assert!(!err.is_empty(), "{bad}");
        }
        assert!(parse_time_limit("1:2:3:4").unwrap_err().contains("HH:MM:SS"));
    }

    #[test]
    fn durations_print_like_squeue() {
        assert_eq!(format_duration(0), "0:00");
        assert_eq!(format_duration(65), "1:05");
        assert_eq!(format_duration(3600), "1:00:00");
        assert_eq!(format_duration(86400 + 61), "1-00:01:01");
        assert_eq!(format_limit(None), "infinite");
    }

    #[test]
    fn begin_times() {
        let now = 1_700_000_000; // 2023-11-14T22:13:20Z
        assert_eq!(parse_begin("now", now), Ok(now));
        assert_eq!(parse_begin("now+1hour", now), Ok(now + 3600));
        assert_eq!(parse_begin("@1795381653", now), Ok(1_795_381_653), "a current epoch has ten digits");
        assert!(parse_begin("@-5", now).is_err() && parse_begin("@99999999999999", now).is_err());
        assert_eq!(parse_begin("now+90", now), Ok(now + 90));
        assert_eq!(parse_begin("now+2days", now), Ok(now + 2 * 86400));
        assert_eq!(parse_begin("2023-11-15", now), Ok(1_700_006_400));
        assert_eq!(parse_begin("2023-11-15T01:00", now), Ok(1_700_010_000));
        assert_eq!(parse_begin("23:00", now), Ok(1_700_002_800));
        assert_eq!(parse_begin("21:00", now), Ok(1_700_002_800 - 7200 + 86400));
        assert!(parse_begin("2023-02-30", now).is_err());
        assert!(parse_begin("now+3fortnights", now).unwrap_err().contains("unit"));
        assert_eq!(format_timestamp(1_700_000_000), "2023-11-14T22:13:20");
    }
}
