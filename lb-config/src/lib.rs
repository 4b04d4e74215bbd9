//! keepalived.conf: reading a file into the typed [`model`], the way keepalived reads it.
//!
//! Four stages, so the grammar can grow keyword by keyword: `source` (the text of the file
//! and its includes, without comments, with conditional lines and parameters resolved),
//! `lexer` (lines of tokens with their location; quotes, braces), `tree` (generic
//! `keyword args { block }` statements, as keepalived's own parser sees them), and one
//! builder module per block kind (`top` dispatches to `global_defs`, `vrrp`,
//! `virtual_server` with `checkers`, `local_address`, `addresses`) that turns statements
//! into model types and reports problems with file:line.

mod addresses;
mod advert_int;
mod checkers;
mod diagnostic;
pub mod emit;
mod emit_vrrp;
mod forwarding;
mod global_defs;
mod keywords;
mod lexer;
mod local_address;
pub mod model;
mod source;
mod sync_daemon;
mod top;
mod tree;
mod values;
mod virtual_server;
mod vrrp;

use std::path::{Path, PathBuf};

pub use checkers::CHECKERS;
pub use diagnostic::{Diagnostic, Location, Severity};
pub use keywords::inventory as keyword_inventory;
pub use source::{Interfaces, Options};

use crate::model::Config;

/// A configuration that parsed and validated, with the warnings found on the way.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    /// Warnings and notes.
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

/// Read and validate the configuration at `path` (and what it includes), with the config
/// id of this host.
pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
    load_with(path, &Options::default())
}

/// As `load`, with `options` (the config id).
pub fn load_with(path: &Path, options: &Options) -> Result<Loaded, ConfigError> {
    let mut diagnostics = Vec::new();
    let source = source::read_file(path, options, &mut diagnostics)?;
    build(&source, path, options, diagnostics)
}

/// Parse and validate configuration `text` that came from `path` (used in messages; its
/// directory is where relative includes are found), without looking at this machine's
/// interfaces (for tests and tools).
pub fn parse(text: &str, path: &Path) -> Result<Loaded, ConfigError> {
    let options = Options {
        interfaces: Interfaces::Unchecked,
        ..Options::default()
    };
    parse_with(text, path, &options)
}

/// As `parse`, with `options`.
pub fn parse_with(text: &str, path: &Path, options: &Options) -> Result<Loaded, ConfigError> {
    let mut diagnostics = Vec::new();
    let source = source::read_text(text, path, options, &mut diagnostics);
    build(&source, path, options, diagnostics)
}

/// The model from the source lines; with `options.strict`, warnings are errors (notes stay
/// notes).
fn build(
    source: &[source::SourceLine],
    path: &Path,
    options: &Options,
    mut diagnostics: Vec<Diagnostic>,
) -> Result<Loaded, ConfigError> {
    let strict = options.strict;
    let lines = lexer::tokenize(source, &mut diagnostics);
    let statements = tree::build(lines, &mut diagnostics);
    let config = top::build_config(&statements, options, &mut diagnostics);
    // A block read more than once (a virtual_server of a group, once per member) reports
    // its problems once.
    let mut seen = std::collections::HashSet::new();
    diagnostics.retain(|d| seen.insert(d.to_string()));
    diagnostics.sort_by(|a, b| {
        (a.location.file.as_ref(), a.location.line)
            .cmp(&(b.location.file.as_ref(), b.location.line))
    });
    if strict {
        for diagnostic in &mut diagnostics {
            if diagnostic.severity == Severity::Warning {
                diagnostic.severity = Severity::Error;
            }
        }
    }
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
