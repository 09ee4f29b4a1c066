//! Slurm's `%` output formats (`squeue -o`, `sinfo -o`): `%[.][WIDTH]CODE`
//! between literal text. A width pads the value to that many characters
//! and cuts a longer one; `.` pads on the left (right-justified). Without a
//! width a value is printed whole.

/// One piece of a format: literal text or a field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Text(String),
    Field { code: char, width: Option<usize>, right: bool },
}

/// Parses a `%` format. `known` says which codes the command offers.
pub fn parse(format: &str, known: impl Fn(char) -> bool) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut text = String::new();
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            text.push(c);
            continue;
        }
        if chars.peek() == Some(&'%') {
            chars.next();
            text.push('%');
            continue;
        }
        let right = chars.next_if_eq(&'.').is_some();
        let mut digits = String::new();
        while let Some(d) = chars.next_if(|d| d.is_ascii_digit()) {
            digits.push(d);
        }
        let code = chars.next().ok_or_else(|| format!("format '{format}' ends in the middle of a field"))?;
        if !known(code) {
            return Err(format!("invalid field '%{code}' in format '{format}'"));
        }
        if !text.is_empty() {
            pieces.push(Piece::Text(std::mem::take(&mut text)));
        }
        let width = if digits.is_empty() { None } else { digits.parse().ok() };
        pieces.push(Piece::Field { code, width, right });
    }
    if !text.is_empty() {
        pieces.push(Piece::Text(text));
    }
    Ok(pieces)
}

/// `value` fitted to a field's width.
pub fn fit(value: &str, width: Option<usize>, right: bool) -> String {
    let Some(w) = width else { return value.to_string() };
    let cut: String = value.chars().take(w).collect();
    if right {
        format!("{cut:>w$}")
    } else {
        format!("{cut:<w$}")
    }
}

/// One line: each field's value from `value`, fitted.
pub fn line(pieces: &[Piece], mut value: impl FnMut(char) -> String) -> String {
    let mut out = String::new();
    for p in pieces {
        match p {
            Piece::Text(t) => out.push_str(t),
            Piece::Field { code, width, right } => out.push_str(&fit(&value(*code), *width, *right)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widths_justification_and_literals() {
        let p = parse("%.18i %9P|%j %%", |c| "iPj".contains(c)).unwrap();
        assert_eq!(p.len(), 6, "{p:?}");
        let out = line(&p, |c| match c {
            'i' => "42".into(),
            'P' => "debug".into(),
            _ => "a-rather-long-name".into(),
        });
        assert_eq!(out, "                42 debug    |a-rather-long-name %");
        assert_eq!(fit("probe_fail", Some(8), true), "probe_fa");
        assert_eq!(fit("ab", Some(4), false), "ab  ");
        assert!(parse("%Z", |c| c == 'i').unwrap_err().contains("invalid field '%Z'"));
        assert!(parse("%.1", |_| true).is_err());
    }
}
