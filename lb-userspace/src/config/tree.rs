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

pub fn build(lines: Vec<Line>, diagnostics: &mut Vec<Diagnostic>) -> Vec<Statement> {
    let mut tokens = lines
        .into_iter()
        .flat_map(|line| line.tokens.into_iter())
        .peekable();
    parse_block(&mut tokens, None, diagnostics)
}

/// Statements up to the `}` that closes the block opened at `opened_at` (or to the end).
fn parse_block(
    tokens: &mut Peekable<impl Iterator<Item = Token>>,
    opened_at: Option<&Location>,
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
                parse_block(tokens, Some(&token.location), diagnostics);
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
                    .map(|open| parse_block(tokens, Some(&open.location), diagnostics));
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::lexer::tokenize;

    fn parse(text: &str) -> (Vec<Statement>, Vec<Diagnostic>) {
        let mut diagnostics = Vec::new();
        let lines = tokenize(text, &Arc::from("t.conf"), &mut diagnostics);
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
    fn unbalanced_braces_are_errors_with_lines() {
        let (_, diagnostics) = parse("a {\n b\n");
        assert_eq!(diagnostics.len(), 1);
        assert_eq!(diagnostics[0].location.line, 1);
        let (_, diagnostics) = parse("a\n}\n");
        assert_eq!(diagnostics[0].location.line, 2);
    }
}
