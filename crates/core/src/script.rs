//! Batch scripts: the `#SBATCH` / `#DROVER` directives at their top.

use crate::error::ParseError;
use crate::options::SubmitRequest;

/// One directive line, split into arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    /// 1-based line number in the script.
    pub line: usize,
    pub args: Vec<String>,
}

/// Finds the directives of a batch script.
///
/// As in Slurm, they are read from the top and stop at the first line that is
/// neither blank nor a comment; `#SBATCH` and `#DROVER` mean the same. A `#`
/// that starts a word ends the directive (an inline comment).
pub fn directives(script: &str) -> Result<Vec<Directive>, ParseError> {
    let mut out = Vec::new();
    for (i, raw) in script.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || (i == 0 && line.starts_with("#!")) {
            continue;
        }
        if !line.starts_with('#') {
            break;
        }
        let rest = line.strip_prefix("#SBATCH").or_else(|| line.strip_prefix("#DROVER"));
        let Some(rest) = rest else { continue };
        if !rest.is_empty() && !rest.starts_with(char::is_whitespace) {
            // `#SBATCHX` is just a comment.
            continue;
        }
        let args =
            split_words(rest).map_err(|reason| ParseError::new("directive", rest.trim(), reason).at_line(i + 1))?;
        if !args.is_empty() {
            out.push(Directive { line: i + 1, args });
        }
    }
    Ok(out)
}

/// Splits like a shell would for the simple cases: whitespace, single and
/// double quotes, backslash escapes; stops at a word starting with `#`.
fn split_words(text: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '#' if !in_word => break,
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(ch) => cur.push(ch),
                        None => return Err("unclosed single quote".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(ch) => cur.push(ch),
                            None => return Err("unclosed double quote".into()),
                        },
                        Some(ch) => cur.push(ch),
                        None => return Err("unclosed double quote".into()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(ch) = chars.next() {
                    cur.push(ch);
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

/// Applies a script's directives to a request; errors carry the line.
pub fn apply_directives(script: &str, req: &mut SubmitRequest) -> Result<(), ParseError> {
    for d in directives(script)? {
        let rest = req.apply_args(&d.args).map_err(|e| e.at_line(d.line))?;
        if let Some(word) = rest.first() {
            return Err(ParseError::new("directive", word.clone(), "is not an option (options start with - or --)")
                .at_line(d.line));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_until_first_command() {
        let script = "#!/bin/bash\n#SBATCH -J hello\n\n# plain comment\n#DROVER --time=5 # five minutes\n#SBATCH --comment \"two words\"\necho hi\n#SBATCH -n 4\n";
        let d = directives(script).unwrap();
        assert_eq!(d.len(), 3);
        assert_eq!(d[0], Directive { line: 2, args: vec!["-J".into(), "hello".into()] });
        assert_eq!(d[1].args, vec!["--time=5"]);
        assert_eq!(d[2].args, vec!["--comment", "two words"]);
        let mut r = SubmitRequest::default();
        apply_directives(script, &mut r).unwrap();
        assert_eq!(r.ntasks, None, "directives after the first command are ignored");
        assert_eq!(r.time, Some(Some(300)));
    }

    #[test]
    fn errors_carry_line_numbers() {
        let script = "#!/bin/sh\n#SBATCH -N 1\n#SBATCH --time=forever\ntrue\n";
        let mut r = SubmitRequest::default();
        let e = apply_directives(script, &mut r).unwrap_err();
        assert_eq!(e.line, Some(3));
        assert_eq!(e.to_string(), "script line 3: invalid --time 'forever': 'forever' is not a number (field); expected MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS or UNLIMITED");
        let e = apply_directives("#SBATCH oops\n", &mut r).unwrap_err();
        assert_eq!(e.line, Some(1));
        let e = apply_directives("#SBATCH --comment 'open\n", &mut r).unwrap_err();
        assert!(e.to_string().contains("unclosed"));
    }

    #[test]
    fn lookalikes_are_comments() {
        assert!(directives("#SBATCHX -n 2\n# SBATCH -n 3\n").unwrap().is_empty());
    }
}
