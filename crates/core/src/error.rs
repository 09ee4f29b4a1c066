//! The one error type every user-facing parser returns.

use std::fmt;

/// A value a user wrote that Drover cannot accept.
///
/// It always names the option and the value, and for batch scripts the line,
/// so the user can find and fix it without guessing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// The option as the user would write it (`--time`, `-N`), or what was
    /// being parsed (`hostlist`).
    pub option: String,
    /// The offending text, verbatim.
    pub value: String,
    /// Why it is wrong, and where possible what would be right.
    pub reason: String,
    /// 1-based line in a batch script, when the value came from one.
    pub line: Option<usize>,
}

impl ParseError {
    pub fn new(option: impl Into<String>, value: impl Into<String>, reason: impl Into<String>) -> Self {
        ParseError { option: option.into(), value: value.into(), reason: reason.into(), line: None }
    }

    /// Attaches the batch-script line the value came from.
    pub fn at_line(mut self, line: usize) -> Self {
        self.line = Some(line);
        self
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(line) = self.line {
            write!(f, "script line {line}: ")?;
        }
        if self.value.is_empty() {
            write!(f, "{}: {}", self.option, self.reason)
        } else {
            write!(f, "invalid {} '{}': {}", self.option, self.value, self.reason)
        }
    }
}

impl std::error::Error for ParseError {}
