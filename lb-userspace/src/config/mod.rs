//! keepalived.conf: reading a file into the typed [`model`](crate::model).
//!
//! Three stages, so the grammar can grow keyword by keyword: `lexer` (lines of tokens with
//! their location; comments, quotes, braces), `tree` (generic `keyword args { block }`
//! statements, as keepalived's own parser sees them), and one builder module per block kind
//! (`virtual_server`, `global_defs`, `local_address` for now) that turns statements into model types and
//! reports problems with file:line.

mod diagnostic;
mod global_defs;
mod lexer;
mod local_address;
mod tree;
mod virtual_server;

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

pub use diagnostic::{Diagnostic, Location, Severity};

use crate::model::Config;

/// A configuration that parsed and validated, with the warnings found on the way.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<Diagnostic>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {} error(s):\n{}", errors.len(), diagnostic::render(errors))]
    Invalid {
        path: PathBuf,
        /// Every error found, in file order.
        errors: Vec<Diagnostic>,
        /// Warnings found along the way.
        warnings: Vec<Diagnostic>,
    },
}

/// Read and validate the configuration at `path`.
pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(&text, path)
}

/// Parse and validate configuration `text` that came from `path` (used in messages).
pub fn parse(text: &str, path: &Path) -> Result<Loaded, ConfigError> {
    let file: Arc<str> = path.display().to_string().into();
    let mut diagnostics = Vec::new();
    let lines = lexer::tokenize(text, &file, &mut diagnostics);
    let statements = tree::build(lines, &mut diagnostics);
    let config = virtual_server::build_config(&statements, &mut diagnostics);
    diagnostics.sort_by_key(|d| d.location.line);
    let (errors, warnings): (Vec<_>, Vec<_>) = diagnostics
        .into_iter()
        .partition(|d| d.severity == Severity::Error);
    if errors.is_empty() {
        Ok(Loaded { config, warnings })
    } else {
        Err(ConfigError::Invalid {
            path: path.to_owned(),
            errors,
            warnings,
        })
    }
}
