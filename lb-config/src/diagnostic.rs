//! Problems found in a configuration, each with the file and line it is about.

use std::{fmt, sync::Arc};

/// Where in the configuration something was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    pub file: Arc<str>,
    /// 1-based.
    pub line: u32,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    /// Worth knowing, not a problem: keepalived logs it and its `-t` passes (an `include`
    /// that matches no file). `--strict` leaves it alone.
    Note,
    Warning,
    Error,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub location: Location,
    pub message: String,
}

impl Diagnostic {
    pub fn error(location: &Location, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Error,
            location: location.clone(),
            message: message.into(),
        }
    }

    pub fn note(location: &Location, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Note,
            location: location.clone(),
            message: message.into(),
        }
    }

    pub fn warning(location: &Location, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Warning,
            location: location.clone(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let severity = match self.severity {
            Severity::Note => "note",
            Severity::Warning => "warning",
            Severity::Error => "error",
        };
        write!(f, "{}: {severity}: {}", self.location, self.message)
    }
}

/// One diagnostic per line.
pub fn render(diagnostics: &[Diagnostic]) -> String {
    diagnostics
        .iter()
        .map(|d| format!("  {d}"))
        .collect::<Vec<_>>()
        .join("\n")
}
