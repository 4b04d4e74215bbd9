//! Splits the configuration's lines (after `source`: comments, includes, conditionals
//! and parameters are done) into tokens, the way keepalived reads them: whitespace-separated
//! words, `"quoted strings"`, and `{` and `}` as tokens of their own even when written
//! against a word. Unicode spaces (non-breaking, full-width; typical of text copied from
//! web pages) count as whitespace, with a warning that names the line.

use super::{Diagnostic, Location, source::SourceLine};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenKind {
    Word,
    Quoted,
    Open,
    Close,
}

#[derive(Clone, Debug)]
pub struct Token {
    pub kind: TokenKind,
    pub text: String,
    pub location: Location,
}

/// Tokens of one source line (lines without tokens are left out).
#[derive(Debug)]
pub struct Line {
    pub tokens: Vec<Token>,
}

pub fn tokenize(source: &[SourceLine], diagnostics: &mut Vec<Diagnostic>) -> Vec<Line> {
    source
        .iter()
        .map(|line| tokenize_line(&line.text, &line.location, diagnostics))
        .filter(|tokens| !tokens.is_empty())
        .map(|tokens| Line { tokens })
        .collect()
}

fn tokenize_line(raw: &str, location: &Location, diagnostics: &mut Vec<Diagnostic>) -> Vec<Token> {
    if raw.chars().any(|c| c.is_whitespace() && !c.is_ascii()) {
        diagnostics.push(Diagnostic::warning(
            location,
            "non-ASCII whitespace (e.g. a non-breaking space copied from a web page) read as a space",
        ));
    }
    let token = |kind, text: String| Token {
        kind,
        text,
        location: location.clone(),
    };
    let mut tokens = Vec::new();
    let mut chars = raw.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '{' | '}' => {
                chars.next();
                let kind = if c == '{' {
                    TokenKind::Open
                } else {
                    TokenKind::Close
                };
                tokens.push(token(kind, c.to_string()));
            }
            '"' => {
                chars.next();
                let mut text = String::new();
                let mut closed = false;
                for c in chars.by_ref() {
                    if c == '"' {
                        closed = true;
                        break;
                    }
                    text.push(c);
                }
                if !closed {
                    diagnostics.push(Diagnostic::error(location, "unterminated quoted string"));
                }
                tokens.push(token(TokenKind::Quoted, text));
            }
            _ => {
                let mut text = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() || matches!(c, '{' | '}' | '"') {
                        break;
                    }
                    text.push(c);
                    chars.next();
                }
                tokens.push(token(TokenKind::Word, text));
            }
        }
    }
    tokens
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn lines(texts: &[&str]) -> Vec<SourceLine> {
        texts
            .iter()
            .enumerate()
            .map(|(i, text)| SourceLine {
                text: (*text).to_owned(),
                location: Location {
                    file: Arc::from("t.conf"),
                    line: i as u32 + 1,
                },
            })
            .collect()
    }

    fn words(texts: &[&str]) -> Vec<Vec<String>> {
        let mut diagnostics = Vec::new();
        tokenize(&lines(texts), &mut diagnostics)
            .into_iter()
            .map(|line| line.tokens.into_iter().map(|t| t.text).collect())
            .collect()
    }

    #[test]
    fn quotes_and_braces() {
        assert_eq!(
            // (Comments are gone before the lexer: `#` here is what `${_HASH}` made.)
            words(&["a b{", "\"x y\" }c", "hash ab#c"]),
            vec![
                vec!["a", "b", "{"],
                vec!["x y", "}", "c"],
                vec!["hash", "ab#c"],
            ]
        );
    }

    #[test]
    fn unicode_spaces_are_whitespace_with_a_warning() {
        let mut diagnostics = Vec::new();
        let tokens = tokenize(&lines(&["weight\u{a0}2", "x\u{3000}y"]), &mut diagnostics);
        let texts: Vec<Vec<&str>> = tokens
            .iter()
            .map(|l| l.tokens.iter().map(|t| t.text.as_str()).collect())
            .collect();
        assert_eq!(texts, vec![vec!["weight", "2"], vec!["x", "y"]]);
        assert_eq!(diagnostics.len(), 2);
        assert_eq!(diagnostics[1].location.line, 2);
    }

    #[test]
    fn unterminated_quote_is_an_error() {
        let mut diagnostics = Vec::new();
        tokenize(&lines(&["a \"b"]), &mut diagnostics);
        assert_eq!(diagnostics.len(), 1);
        assert!(diagnostics[0].to_string().starts_with("t.conf:1: error:"));
    }
}
