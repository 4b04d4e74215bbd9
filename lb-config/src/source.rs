//! The configuration's text as keepalived reads it before parsing: lines from the main
//! file and its `include`s, without comments, with conditional lines resolved and
//! parameters substituted; each line keeps the file and line it came from.
//!
//! - `include FILE`, and `includer`/`includem`/`includew`/`includeb`/`includea`: glob
//!   patterns with csh braces (the C library's glob, as keepalived uses), relative paths
//!   from the including file's directory. Plain `include` tolerates a pattern that
//!   matches nothing (a warning); the variants make it an error, as their checks do.
//!   Include lines are recognised after conditionals and parameters, as in keepalived
//!   (`@lb1 include lb1.conf`, `include ${DIR}/*.conf`); paths are compared canonical, so
//!   an include cycle is found however it is spelt.
//! - Comments: from `#` or `!` outside double quotes to the end of the line; `\#` and
//!   `\!` are the characters themselves.
//! - `@ID line` keeps the line only when ID is the config id (`-i`, else the host name up
//!   to its first dot); `@^ID line` only when it is not.
//! - `$NAME=value` defines a parameter (a value ending in `\` continues on the next lines;
//!   such a multi-line parameter expands to its lines when used alone on a line);
//!   `${NAME}` anywhere and `$NAME` before a blank, `,`, `)` or the end of the line are
//!   replaced; unknown names stay as written. Built-ins: `${_PWD}` (the file's
//!   directory), `${_INSTANCE}` (the config id), `${_HASH}` (`#`), `${_BANG}` (`!`),
//!   `${_ENV NAME}`.
//! - CR line ends are read as plain line ends (with one warning per file).

use std::{
    collections::BTreeMap,
    ffi::{CStr, CString},
    path::{Path, PathBuf},
    sync::Arc,
};

use super::{ConfigError, Diagnostic, Location};

/// One line of configuration text, ready for the lexer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceLine {
    pub text: String,
    pub location: Location,
}

/// How a configuration is read.
#[derive(Clone, Debug)]
pub struct Options {
    /// keepalived's config id (`-i`/`--config-id`), which `@ID` lines are matched against.
    pub config_id: String,
    /// Every warning is an error (`lbd --strict`).
    pub strict: bool,
    /// Which interfaces exist (VRRP instances must name existing ones).
    pub interfaces: Interfaces,
    /// Whether `include` lines are followed. Off for text from an untrusted source (the
    /// fuzzer, a control API): an include is then an error instead of a file read.
    pub follow_includes: bool,
}

/// Where the interfaces named in the configuration are looked up.
#[derive(Clone, Debug)]
pub enum Interfaces {
    /// In this machine's network namespace (what `lbd` and `lbd -t` do).
    Kernel,
    /// These (tests, and checking a file for another machine).
    Given(std::collections::BTreeSet<String>),
    /// Not checked.
    Unchecked,
}

impl Default for Options {
    /// The config id keepalived uses by default: the host name up to its first dot.
    fn default() -> Self {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let id = host.trim().split('.').next().unwrap_or_default();
        Self {
            config_id: if id.is_empty() { "localhost" } else { id }.to_owned(),
            strict: false,
            interfaces: Interfaces::Kernel,
            follow_includes: true,
        }
    }
}

/// Read `path` and everything it includes.
pub fn read_file(
    path: &Path,
    options: &Options,
    diagnostics: &mut Vec<Diagnostic>,
) -> Result<Vec<SourceLine>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    Ok(read_text(&text, path, options, diagnostics))
}

/// Lines of `text`, which came from `path` (named in locations; its directory is where
/// relative includes are found).
pub fn read_text(
    text: &str,
    path: &Path,
    options: &Options,
    diagnostics: &mut Vec<Diagnostic>,
) -> Vec<SourceLine> {
    let mut reader = Reader {
        options,
        parameters: BTreeMap::new(),
        lines: Vec::new(),
        open: Vec::new(),
        too_many_lines: false,
        diagnostics,
    };
    reader.file(text, path);
    reader.lines
}

/// Nested includes deeper than this are an error (a file that includes itself).
const MAX_INCLUDE_DEPTH: usize = 16;
/// Substitutions within substitutions deeper than this stop (a parameter using itself).
const MAX_EXPANSION_DEPTH: usize = 16;
/// A line longer than this after substitution is an error (parameters that double
/// themselves), as is a file that expands to more lines.
const MAX_LINE_LEN: usize = 64 * 1024;
const MAX_LINES: usize = 1_000_000;

struct Reader<'a> {
    options: &'a Options,
    parameters: BTreeMap<String, Parameter>,
    lines: Vec<SourceLine>,
    /// Files being read (canonical paths), outermost first.
    open: Vec<PathBuf>,
    /// Whether the line cap was reported (once).
    too_many_lines: bool,
    diagnostics: &'a mut Vec<Diagnostic>,
}

#[derive(Clone, Debug)]
enum Parameter {
    Line(String),
    /// A value spread over lines, each with where it was written.
    Lines(Vec<SourceLine>),
}

impl Reader<'_> {
    fn file(&mut self, text: &str, path: &Path) {
        let file: Arc<str> = path.display().to_string().into();
        // Absolute, as keepalived's (it changes to the file's directory): `${_PWD}` and
        // relative includes.
        let parent = path.parent().unwrap_or(Path::new(""));
        let dir = std::fs::canonicalize(if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        })
        .unwrap_or_else(|_| parent.to_owned());
        self.open
            .push(std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned()));
        let mut crlf_warned = false;
        // A multi-line parameter being defined: its name and lines so far.
        let mut defining: Option<(String, Vec<SourceLine>)> = None;
        for (index, raw) in text.split('\n').enumerate() {
            let location = Location {
                file: file.clone(),
                line: index as u32 + 1,
            };
            let raw = match raw.strip_suffix('\r') {
                Some(stripped) => {
                    if !crlf_warned {
                        crlf_warned = true;
                        self.diagnostics.push(Diagnostic::warning(
                            &location,
                            "CRLF (Windows) line ends read as plain line ends",
                        ));
                    }
                    stripped
                }
                None => raw,
            };
            let line = strip_comment(raw);
            // ASCII blanks only: other whitespace (a non-breaking space pasted from a web
            // page) is the lexer's to read as a space and to warn about.
            let line = line.trim_matches(|c: char| c.is_ascii_whitespace());
            if let Some((name, mut body)) = defining.take() {
                // A blank line ends a multi-line definition; a comment-only one does not.
                if raw
                    .trim_matches(|c: char| c.is_ascii_whitespace())
                    .is_empty()
                {
                    self.parameters.insert(name, Parameter::Lines(body));
                    continue;
                }
                if line.is_empty() {
                    defining = Some((name, body));
                    continue;
                }
                let (text, more) = continued(line);
                body.push(SourceLine {
                    text: text.to_owned(),
                    location,
                });
                if more {
                    defining = Some((name, body));
                } else {
                    self.parameters.insert(name, Parameter::Lines(body));
                }
                continue;
            }
            if line.is_empty() {
                continue;
            }
            defining = self.line(line, &location, &dir, 0);
        }
        if let Some((name, body)) = defining {
            self.parameters.insert(name, Parameter::Lines(body));
        }
        self.open.pop();
    }

    /// One line after comments: conditional, definition, or text (substituted). Returns
    /// a multi-line definition that continues on the next lines.
    fn line(
        &mut self,
        line: &str,
        location: &Location,
        dir: &Path,
        depth: usize,
    ) -> Option<(String, Vec<SourceLine>)> {
        let line = self.conditional(line)?;
        if let Some((name, value)) = definition(line) {
            let (first, more) = continued(value);
            if more {
                let mut body = Vec::new();
                if !first.is_empty() {
                    body.push(SourceLine {
                        text: first.to_owned(),
                        location: location.clone(),
                    });
                }
                return Some((name.to_owned(), body));
            }
            self.parameters
                .insert(name.to_owned(), Parameter::Line(first.to_owned()));
            return None;
        }
        // A multi-line parameter alone on a line: its lines, each read as a line here.
        if let Some(Parameter::Lines(body)) = whole_line_parameter(line)
            .and_then(|name| self.parameters.get(name))
            .cloned()
        {
            if depth >= MAX_EXPANSION_DEPTH {
                self.diagnostics.push(Diagnostic::error(
                    location,
                    "parameters nested too deep (does one use itself?)",
                ));
                return None;
            }
            for entry in body {
                if let Some((name, _)) = self.line(&entry.text, &entry.location, dir, depth + 1) {
                    self.diagnostics.push(Diagnostic::error(
                        &entry.location,
                        format!("multi-line parameter `{name}` defined inside another one"),
                    ));
                }
            }
            return None;
        }
        let text = self.substitute(line, location, dir);
        if text.len() > MAX_LINE_LEN {
            self.diagnostics.push(Diagnostic::error(
                location,
                format!("longer than {MAX_LINE_LEN} bytes after parameter substitution"),
            ));
            return None;
        }
        if let Some((variant, pattern)) = include(&text) {
            self.include(variant, pattern, dir, location);
            return None;
        }
        if self.lines.len() >= MAX_LINES {
            if !self.too_many_lines {
                self.too_many_lines = true;
                self.diagnostics.push(Diagnostic::error(
                    location,
                    format!("the configuration expands to more than {MAX_LINES} lines"),
                ));
            }
            return None;
        }
        self.lines.push(SourceLine {
            text,
            location: location.clone(),
        });
        None
    }

    /// The line without its `@ID` prefix if it applies here; `None` if it does not.
    fn conditional<'l>(&self, line: &'l str) -> Option<&'l str> {
        let Some(rest) = line.strip_prefix('@') else {
            return Some(line);
        };
        let (id, text) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
        let (negated, id) = match id.strip_prefix('^') {
            Some(id) => (true, id),
            None => (false, id),
        };
        ((id == self.options.config_id) != negated)
            .then(|| text.trim_start())
            .filter(|t| !t.is_empty())
    }

    /// `line` with every known parameter replaced.
    fn substitute(&mut self, line: &str, location: &Location, dir: &Path) -> String {
        let mut text = line.to_owned();
        for _ in 0..MAX_EXPANSION_DEPTH {
            let (next, replaced) = self.substitute_once(&text, dir);
            if !replaced || next.len() > MAX_LINE_LEN {
                return next;
            }
            text = next;
        }
        self.diagnostics.push(Diagnostic::error(
            location,
            "parameters nested too deep (does one use itself?)",
        ));
        text
    }

    /// One pass of replacements; whether anything was replaced.
    fn substitute_once(&self, text: &str, dir: &Path) -> (String, bool) {
        let mut out = String::with_capacity(text.len());
        let mut replaced = false;
        let mut rest = text;
        while let Some(at) = rest.find('$') {
            out.push_str(&rest[..at]);
            let after = &rest[at + 1..];
            if let Some(inner) = after.strip_prefix('{')
                && let Some(end) = inner.find('}')
                && let Some(value) = self.value(&inner[..end], dir)
            {
                out.push_str(&value);
                replaced = true;
                rest = &inner[end + 1..];
                continue;
            }
            let name_len = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            let (name, tail) = after.split_at(name_len);
            let ends_well = tail.is_empty() || tail.starts_with([' ', '\t', ',', ')']);
            if !name.is_empty()
                && ends_well
                && let Some(value) = self.value(name, dir)
            {
                out.push_str(&value);
                replaced = true;
                rest = tail;
                continue;
            }
            out.push('$');
            rest = after;
        }
        out.push_str(rest);
        (out, replaced)
    }

    /// The value of parameter or built-in `name` (with its arguments for `_ENV`).
    fn value(&self, name: &str, dir: &Path) -> Option<String> {
        let mut words = name.split_whitespace();
        match words.next()? {
            "_PWD" => Some(dir.display().to_string()),
            "_INSTANCE" => Some(self.options.config_id.clone()),
            "_HASH" => Some("#".to_owned()),
            "_BANG" => Some("!".to_owned()),
            "_ENV" => Some(std::env::var(words.next()?).unwrap_or_default()),
            // A multi-line parameter within a line stays as written, as in keepalived.
            plain if !name.contains(char::is_whitespace) => match self.parameters.get(plain)? {
                Parameter::Line(value) => Some(value.clone()),
                Parameter::Lines(_) => None,
            },
            _ => None,
        }
    }

    fn include(&mut self, variant: &str, pattern: &str, dir: &Path, at: &Location) {
        if !self.options.follow_includes {
            self.diagnostics.push(Diagnostic::error(
                at,
                format!("{variant} {pattern}: includes are not followed in this text"),
            ));
            return;
        }
        if self.open.len() >= MAX_INCLUDE_DEPTH {
            self.diagnostics.push(Diagnostic::error(
                at,
                format!(
                    "includes nested deeper than {MAX_INCLUDE_DEPTH} (does a file include itself?)"
                ),
            ));
            return;
        }
        let pattern_path = if Path::new(pattern).is_absolute() {
            PathBuf::from(pattern)
        } else {
            dir.join(pattern)
        };
        let files = match glob(&pattern_path) {
            Ok(files) => files,
            Err(reason) => {
                self.diagnostics.push(Diagnostic::error(
                    at,
                    format!("{variant} {pattern}: {reason}"),
                ));
                return;
            }
        };
        let files: Vec<PathBuf> = files.into_iter().filter(|f| f.is_file()).collect();
        if files.is_empty() {
            // keepalived's include checks: `match` (includem, includeb, includew, includea)
            // for a name without wildcards, `wildcard_match` (includew, includea) for a
            // pattern with them.
            let wildcard = pattern.contains(['*', '?', '[']);
            let checked = match variant {
                "includew" | "includea" => true,
                "includem" | "includeb" => !wildcard,
                _ => false,
            };
            let message = format!("{variant} {pattern}: no file matches");
            // keepalived logs "Config files missing" for the unchecked variants, and its
            // `-t` passes.
            self.diagnostics.push(if checked {
                Diagnostic::error(at, message)
            } else {
                Diagnostic::note(at, message)
            });
            return;
        }
        for file in files {
            let canonical = std::fs::canonicalize(&file).unwrap_or_else(|_| file.clone());
            if self.open.contains(&canonical) {
                self.diagnostics.push(Diagnostic::error(
                    at,
                    format!("{} includes itself", file.display()),
                ));
                continue;
            }
            match std::fs::read_to_string(&file) {
                Ok(text) => self.file(&text, &file),
                // keepalived's `read` check: every variant but plain `include`.
                Err(e) => {
                    let message = format!("{variant}: cannot read {}: {e}", file.display());
                    self.diagnostics.push(if variant == "include" {
                        Diagnostic::warning(at, message)
                    } else {
                        Diagnostic::error(at, message)
                    });
                }
            }
        }
    }
}

/// `line` without its comment: from a `#` or `!` outside double quotes. A backslash
/// escapes the next character (an escaped quote neither opens nor closes a string);
/// `\#` and `\!` outside quotes stand for the characters.
fn strip_comment(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut quoted = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(next @ ('#' | '!')) if !quoted => out.push(next),
                Some(next) => {
                    out.push(c);
                    out.push(next);
                }
                None => out.push(c),
            },
            '"' => {
                quoted = !quoted;
                out.push(c);
            }
            '#' | '!' if !quoted => break,
            _ => out.push(c),
        }
    }
    out
}

/// `include` or a variant, and its pattern.
fn include(line: &str) -> Option<(&str, &str)> {
    let (word, rest) = line.split_once(char::is_whitespace)?;
    matches!(
        word,
        "include" | "includer" | "includem" | "includew" | "includeb" | "includea"
    )
    .then(|| (word, rest.trim()))
}

/// `$NAME=value`: the name and the value (blanks after `=` skipped).
fn definition(line: &str) -> Option<(&str, &str)> {
    let rest = line.strip_prefix('$')?;
    let (name, value) = rest.split_once('=')?;
    let valid = !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    valid.then(|| (name, value.trim_start()))
}

/// A value without its trailing `\`, and whether it continues on the next line.
fn continued(value: &str) -> (&str, bool) {
    match value.strip_suffix('\\') {
        Some(text) => (text.trim_end(), true),
        None => (value, false),
    }
}

/// The name of a parameter written alone on a line (`$NAME` or `${NAME}`).
fn whole_line_parameter(line: &str) -> Option<&str> {
    let rest = line.strip_prefix('$')?;
    let name = match rest.strip_prefix('{') {
        Some(inner) => inner.strip_suffix('}')?,
        None => rest,
    };
    (!name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .then_some(name)
}

/// The files matching `pattern` (glob(3) with braces, sorted), or why not.
fn glob(pattern: &Path) -> Result<Vec<PathBuf>, String> {
    let pattern = CString::new(pattern.as_os_str().as_encoded_bytes())
        .map_err(|_| "a pattern with a NUL byte".to_owned())?;
    // SAFETY: glob_t is plain data; glob() fills it and globfree() releases what it
    // allocated; the paths are copied out before that.
    unsafe {
        let mut found: libc::glob_t = std::mem::zeroed();
        let rc = libc::glob(pattern.as_ptr(), libc::GLOB_BRACE, None, &mut found);
        let paths = match rc {
            0 => Ok((0..found.gl_pathc)
                .map(|i| *found.gl_pathv.add(i))
                .filter(|p| !p.is_null())
                .map(|p| {
                    PathBuf::from(std::ffi::OsStr::from_encoded_bytes_unchecked(
                        CStr::from_ptr(p).to_bytes(),
                    ))
                })
                .collect()),
            libc::GLOB_NOMATCH => Ok(Vec::new()),
            libc::GLOB_NOSPACE => Err("out of memory".to_owned()),
            _ => Err("cannot read a directory of the pattern".to_owned()),
        };
        libc::globfree(&mut found);
        paths
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str, config_id: &str) -> (Vec<String>, Vec<String>) {
        let mut diagnostics = Vec::new();
        let options = Options {
            config_id: config_id.to_owned(),
            strict: false,
            interfaces: Interfaces::Unchecked,
            follow_includes: true,
        };
        let lines = read_text(
            text,
            Path::new("/nonexistent/k.conf"),
            &options,
            &mut diagnostics,
        );
        (
            lines
                .iter()
                .map(|l| format!("{}: {}", l.location.line, l.text))
                .collect(),
            diagnostics.iter().map(|d| d.to_string()).collect(),
        )
    }

    #[test]
    fn comments_end_lines_outside_quotes() {
        let (lines, _) = read(
            "router_id R1#main\nauth_pass \"a#b\" ! c\nx \\#y\n  ! whole\n",
            "lb1",
        );
        assert_eq!(
            lines,
            ["1: router_id R1", "2: auth_pass \"a#b\"", "3: x #y"]
        );
    }

    #[test]
    fn includes_can_be_refused_however_spelt() {
        let mut diagnostics = Vec::new();
        let options = Options {
            config_id: "x".into(),
            strict: false,
            interfaces: Interfaces::Unchecked,
            follow_includes: false,
        };
        let lines = read_text(
            "$A=inc\n${A}lude /etc/passwd\nkept 1\n",
            Path::new("/nonexistent/k.conf"),
            &options,
            &mut diagnostics,
        );
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert_eq!(diagnostics.len(), 1, "{diagnostics:?}");
        assert_eq!(
            diagnostics[0].message,
            "include /etc/passwd: includes are not followed in this text"
        );
    }

    #[test]
    fn conditional_lines_follow_the_config_id() {
        let text = "@lb1 priority 150\n@lb2 priority 100\n@^lb1 state BACKUP\n@^lb2 state MASTER\n";
        assert_eq!(read(text, "lb1").0, ["1: priority 150", "4: state MASTER"]);
        assert_eq!(read(text, "lb2").0, ["2: priority 100", "3: state BACKUP"]);
    }

    #[test]
    fn parameters_are_substituted() {
        let (lines, _) = read(
            "$IF=eth0\n$PRIO= 150\ninterface $IF\npriority ${PRIO}0\nx $IFX $UNKNOWN ${_HASH}${_BANG} ${_INSTANCE}\n@lb1 $P=1\n@lb2 $P=2\np $P,\n",
            "lb1",
        );
        assert_eq!(
            lines,
            [
                "3: interface eth0",
                "4: priority 1500",
                "5: x $IFX $UNKNOWN #! lb1",
                "8: p 1,"
            ]
        );
    }

    #[test]
    fn multi_line_parameters_expand_to_their_lines() {
        let (lines, _) = read(
            "$VIPS=10.0.0.1 \\\n  10.0.0.2 \\\n  @lb2 10.0.0.3\nvirtual_ipaddress {\n$VIPS\n}\n",
            "lb1",
        );
        assert_eq!(
            lines,
            [
                "4: virtual_ipaddress {",
                "1: 10.0.0.1",
                "2: 10.0.0.2",
                "6: }"
            ]
        );
    }

    #[test]
    fn parameters_using_themselves_stop_with_an_error() {
        let (_, diagnostics) = read("$A=x $A\ny $A\n", "lb1");
        assert_eq!(
            diagnostics,
            ["/nonexistent/k.conf:2: error: parameters nested too deep (does one use itself?)"]
        );
    }

    #[test]
    fn crlf_is_read_as_line_ends_with_one_warning() {
        let (lines, diagnostics) = read("a 1\r\nb 2\r\n", "lb1");
        assert_eq!(lines, ["1: a 1", "2: b 2"]);
        assert_eq!(
            diagnostics,
            ["/nonexistent/k.conf:1: warning: CRLF (Windows) line ends read as plain line ends"]
        );
    }

    #[test]
    fn includes_glob_relative_to_the_including_file() {
        let dir = std::env::temp_dir().join(format!("lbd-include-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("conf.d/sub")).unwrap();
        std::fs::write(dir.join("conf.d/b.conf"), "b 1\ninclude sub/*.conf\n").unwrap();
        std::fs::write(dir.join("conf.d/a.conf"), "a 1\n").unwrap();
        std::fs::write(dir.join("conf.d/sub/c.conf"), "c 1\n").unwrap();
        std::fs::write(dir.join("conf.d/self.inc"), "include self.inc\n").unwrap();
        let main = dir.join("keepalived.conf");
        let text = "include conf.d/{a,b}.conf\nincludew missing/*.conf\ninclude missing.conf\ninclude conf.d/self.inc\nincluder none/*.conf\nz 1\n";
        std::fs::write(&main, text).unwrap();
        let mut diagnostics = Vec::new();
        let lines = read_file(
            &main,
            &Options {
                config_id: "x".into(),
                strict: false,
                interfaces: Interfaces::Unchecked,
                follow_includes: true,
            },
            &mut diagnostics,
        )
        .unwrap();
        let texts: Vec<String> = lines
            .iter()
            .map(|l| {
                let file = Path::new(&*l.location.file)
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                format!("{file}:{}: {}", l.location.line, l.text)
            })
            .collect();
        assert_eq!(
            texts,
            [
                "a.conf:1: a 1",
                "b.conf:1: b 1",
                "c.conf:1: c 1",
                "keepalived.conf:6: z 1"
            ]
        );
        let messages: Vec<String> = diagnostics
            .iter()
            .map(|d| format!("{:?} {}: {}", d.severity, d.location.line, d.message))
            .collect();
        assert_eq!(messages.len(), 4, "{messages:?}");
        assert!(messages[0].starts_with("Error 2: includew missing/*.conf: no file matches"));
        assert!(messages[1].starts_with("Note 3: include missing.conf: no file matches"));
        assert!(messages[2].contains("includes itself"), "{messages:?}");
        assert!(
            messages[3].starts_with("Note 5: includer none/*.conf"),
            "{messages:?}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn doubling_parameters_stop_with_an_error_not_exhausting_memory() {
        let mut text = String::from("$P0=xxxxxxxx\n");
        for level in 1..14 {
            let previous = format!("${{P{}}}", level - 1);
            text.push_str(&format!("$P{level}={}\n", previous.repeat(8)));
        }
        text.push_str("y $P13\n");
        let (lines, diagnostics) = read(&text, "lb1");
        assert!(lines.is_empty(), "{lines:?}");
        assert_eq!(diagnostics.len(), 1, "{diagnostics:?}");
        assert!(
            diagnostics[0].contains("after parameter substitution"),
            "{diagnostics:?}"
        );
    }

    #[test]
    fn escapes_and_comment_lines_inside_definitions() {
        let (lines, _) = read(
            "misc_path \"/bin/sh -c \\\"echo # x\\\"\" # comment\n$D=a \\\n# a comment line\n  b\nuse $D\nwhole\n$D\n",
            "lb1",
        );
        assert_eq!(
            lines,
            [
                "1: misc_path \"/bin/sh -c \\\"echo # x\\\"\"",
                "5: use $D",
                "6: whole",
                "2: a",
                "4: b"
            ]
        );
    }

    #[test]
    fn includes_follow_conditionals_and_parameters_and_cycles_are_found_however_spelt() {
        let dir = std::env::temp_dir().join(format!("lbd-include2-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("d")).unwrap();
        std::fs::write(dir.join("d/lb1.conf"), "lb1 1\n").unwrap();
        std::fs::write(dir.join("d/lb2.conf"), "lb2 1\n").unwrap();
        std::fs::write(dir.join("d/loop.conf"), "include ../d/loop.conf\n").unwrap();
        let main = dir.join("k.conf");
        std::fs::write(
            &main,
            "$DIR=d\n@lb1 include ${DIR}/lb1.conf\n@lb2 include $DIR/lb2.conf\ninclude d/loop.conf\npwd ${_PWD}\n",
        )
        .unwrap();
        let mut diagnostics = Vec::new();
        let options = Options {
            config_id: "lb1".into(),
            strict: false,
            interfaces: Interfaces::Unchecked,
            follow_includes: true,
        };
        let lines = read_file(&main, &options, &mut diagnostics).unwrap();
        let texts: Vec<&str> = lines.iter().map(|l| l.text.as_str()).collect();
        let canonical = std::fs::canonicalize(&dir).unwrap();
        assert_eq!(
            texts,
            ["lb1 1".to_owned(), format!("pwd {}", canonical.display())]
        );
        assert_eq!(diagnostics.len(), 1, "{diagnostics:?}");
        assert!(
            diagnostics[0].message.contains("includes itself"),
            "{diagnostics:?}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
