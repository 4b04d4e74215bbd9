//! Generic statement tree: `keyword args...` optionally followed by a `{ ... }` block whose
//! opening brace is on the same line or the next one. Knows nothing about keywords.

use std::iter::Peekable;

use super::{
    Diagnostic, Location,
    lexer::{Line, Token, TokenKind},
};

#[derive(Debug)]
pub struct Statement {
    pub keyword: Token,
    pub args: Vec<Token>,
    pub block: Option<Vec<Statement>>,
}

impl Statement {
    pub fn location(&self) -> &Location {
        &self.keyword.location
    }

    pub fn name(&self) -> &str {
        &self.keyword.text
    }
}

/// Deeper blocks are an error (and skipped): keepalived's own grammar nests four deep, and
/// the parser must not exhaust the stack on hostile input.
const MAX_DEPTH: usize = 16;

pub fn build(lines: Vec<Line>, diagnostics: &mut Vec<Diagnostic>) -> Vec<Statement> {
    let mut tokens = lines
        .into_iter()
        .flat_map(|line| line.tokens.into_iter())
        .peekable();
    parse_block(&mut tokens, None, 0, diagnostics)
}

/// Statements up to the `}` that closes the block opened at `opened_at` (or to the end).
fn parse_block(
    tokens: &mut Peekable<impl Iterator<Item = Token>>,
    opened_at: Option<&Location>,
    depth: usize,
    diagnostics: &mut Vec<Diagnostic>,
) -> Vec<Statement> {
    let mut statements = Vec::new();
    while let Some(token) = tokens.next() {
        match token.kind {
            TokenKind::Close => match opened_at {
                Some(_) => return statements,
                None => diagnostics.push(Diagnostic::error(&token.location, "unmatched `}`")),
            },
            TokenKind::Open => {
                diagnostics.push(Diagnostic::error(
                    &token.location,
                    "`{` without a keyword before it",
                ));
                nested_block(tokens, &token.location, depth, diagnostics);
            }
            TokenKind::Word | TokenKind::Quoted => {
                let line = token.location.line;
                let mut args = Vec::new();
                while let Some(next) = tokens.next_if(|t| {
                    t.location.line == line && matches!(t.kind, TokenKind::Word | TokenKind::Quoted)
                }) {
                    args.push(next);
                }
                // The block may open on this line or as the first token of the next one.
                let block = tokens
                    .next_if(|t| t.kind == TokenKind::Open)
                    .map(|open| nested_block(tokens, &open.location, depth, diagnostics));
                statements.push(Statement {
                    keyword: token,
                    args,
                    block,
                });
            }
        }
    }
    if let Some(location) = opened_at {
        diagnostics.push(Diagnostic::error(
            location,
            "block opened here is never closed with `}`",
        ));
    }
    statements
}

/// The block opened at `open` inside a block at `depth`; beyond `MAX_DEPTH` an error, and
/// the block is skipped without recursion.
fn nested_block(
    tokens: &mut Peekable<impl Iterator<Item = Token>>,
    open: &Location,
    depth: usize,
    diagnostics: &mut Vec<Diagnostic>,
) -> Vec<Statement> {
    if depth < MAX_DEPTH {
        return parse_block(tokens, Some(open), depth + 1, diagnostics);
    }
    diagnostics.push(Diagnostic::error(
        open,
        format!("blocks nested deeper than {MAX_DEPTH} levels"),
    ));
    let mut open_blocks = 1usize;
    for token in tokens.by_ref() {
        match token.kind {
            TokenKind::Open => open_blocks += 1,
            TokenKind::Close => {
                open_blocks -= 1;
                if open_blocks == 0 {
                    return Vec::new();
                }
            }
            TokenKind::Word | TokenKind::Quoted => {}
        }
    }
    diagnostics.push(Diagnostic::error(
        open,
        "block opened here is never closed with `}`",
    ));
    Vec::new()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::{
        lexer::tokenize,
        source::{Interfaces, Options, read_text},
    };

    fn parse(text: &str) -> (Vec<Statement>, Vec<Diagnostic>) {
        let mut diagnostics = Vec::new();
        let options = Options {
            config_id: "t".into(),
            strict: false,
            interfaces: Interfaces::Unchecked,
            follow_includes: true,
        };
        let source = read_text(text, Path::new("t.conf"), &options, &mut diagnostics);
        let lines = tokenize(&source, &mut diagnostics);
        (build(lines, &mut diagnostics), diagnostics)
    }

    #[test]
    fn braces_on_same_or_next_line() {
        let (statements, diagnostics) = parse("a 1 {\n b 2\n}\nc\n{\n d\n}\ne { f } g\n");
        assert!(diagnostics.is_empty(), "{diagnostics:?}");
        let names: Vec<_> = statements.iter().map(Statement::name).collect();
        assert_eq!(names, ["a", "c", "e", "g"]);
        assert_eq!(statements[0].args[0].text, "1");
        assert_eq!(statements[0].block.as_ref().unwrap()[0].name(), "b");
        assert_eq!(statements[1].block.as_ref().unwrap()[0].name(), "d");
        assert_eq!(statements[2].block.as_ref().unwrap()[0].name(), "f");
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let depth = 100_000;
        let text = format!(
            "a {}\nb\n{}\nc\n",
            "x {\n".repeat(depth),
            "}\n".repeat(depth)
        );
        let (statements, diagnostics) = parse(&text);
        assert_eq!(diagnostics.len(), 1, "{diagnostics:?}");
        assert!(diagnostics[0].message.contains("nested deeper"));
        // Parsing goes on after the skipped block.
        assert_eq!(statements.last().map(Statement::name), Some("c"));
    }

    #[test]
    fn unbalanced_braces_are_errors_with_lines() {
        let (_, diagnostics) = parse("a {\n b\n");
        assert_eq!(diagnostics.len(), 1);
        assert_eq!(diagnostics[0].location.line, 1);
        let (_, diagnostics) = parse("a\n}\n");
        assert_eq!(diagnostics[0].location.line, 2);
    }
}
