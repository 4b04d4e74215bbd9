//! Splits keepalived.conf text into lines of tokens, the way keepalived reads it:
//! whitespace-separated words, `"quoted strings"`, `{` and `}` as tokens of their own even
//! when written against a word, and comments from a `!` or `#` that starts a token to the
//! end of the line. Unicode spaces (non-breaking, full-width; typical of text copied from
//! web pages) and CR line ends count as whitespace; the former get a warning.

use std::sync::Arc;

use super::{Diagnostic, Location};

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

pub fn tokenize(text: &str, file: &Arc<str>, diagnostics: &mut Vec<Diagnostic>) -> Vec<Line> {
    let mut lines = Vec::new();
    for (index, raw) in text.split('\n').enumerate() {
        let location = Location {
            file: file.clone(),
            line: index as u32 + 1,
        };
        let tokens = tokenize_line(raw, &location, diagnostics);
        if !tokens.is_empty() {
            lines.push(Line { tokens });
        }
    }
    lines
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
            '!' | '#' => break,
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
    use super::*;

    fn words(text: &str) -> Vec<Vec<String>> {
        let mut diagnostics = Vec::new();
        tokenize(text, &Arc::from("t.conf"), &mut diagnostics)
            .into_iter()
            .map(|line| line.tokens.into_iter().map(|t| t.text).collect())
            .collect()
    }

    #[test]
    fn comments_quotes_and_braces() {
        assert_eq!(
            words("a b{ # comment\n! whole line\n\"x y\" }c\r\nauth_pass ab#c\n"),
            vec![
                vec!["a", "b", "{"],
                vec!["x y", "}", "c"],
                vec!["auth_pass", "ab#c"],
            ]
        );
    }

    #[test]
    fn unicode_spaces_are_whitespace_with_a_warning() {
        let mut diagnostics = Vec::new();
        let lines = tokenize(
            "weight\u{a0}2\nx\u{3000}y",
            &Arc::from("t.conf"),
            &mut diagnostics,
        );
        let texts: Vec<Vec<&str>> = lines
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
        tokenize("a \"b", &Arc::from("t.conf"), &mut diagnostics);
        assert_eq!(diagnostics.len(), 1);
        assert!(diagnostics[0].to_string().starts_with("t.conf:1: error:"));
    }
}
