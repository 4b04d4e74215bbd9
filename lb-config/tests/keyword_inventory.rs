//! The keyword inventory: each of keepalived 2.2's keywords, put in its block of a small
//! file, is either read by lbd or reported "not supported yet" as a warning (never an
//! error). The README's table of not-yet keywords must be exactly the set found so.
//! After a change, the failure message prints the table to paste.

use std::{collections::BTreeMap, path::Path};

use lb_config::{CHECKERS, ConfigError, Diagnostic, Severity, keyword_inventory, parse};

/// A small file with `keyword` in `block` (the checkers: in each checker kind, and in a
/// url for `url`).
fn files_with(block: &str, keyword: &str) -> Vec<String> {
    let service = |inside_vs: &str, inside_real: &str| {
        format!(
            "virtual_server 192.0.2.1 80 {{\n protocol TCP\n lb_kind DR\n{inside_vs}\n real_server 192.0.2.2 80 {{\n{inside_real}\n }}\n}}\n"
        )
    };
    let instance = |inside: &str| {
        format!(
            "vrrp_instance V {{\n interface lo\n virtual_router_id 1\n{inside}\n virtual_ipaddress {{\n  192.0.2.9\n }}\n}}\n"
        )
    };
    match block {
        "top level" => vec![format!("{keyword}\n")],
        "global_defs" => vec![format!("global_defs {{\n {keyword}\n}}\n")],
        "virtual_server" => vec![service(&format!(" {keyword}"), "")],
        "real_server" => vec![service("", &format!("  {keyword}"))],
        "vrrp_instance" => vec![instance(&format!(" {keyword}"))],
        "vrrp_script" => vec![format!(
            "vrrp_script S {{\n script /bin/true\n {keyword}\n}}\n"
        )],
        "vrrp_sync_group" => vec![format!(
            "{}vrrp_sync_group G {{\n group {{\n  V\n }}\n {keyword}\n}}\n",
            instance("")
        )],
        "authentication" => vec![instance(&format!(" authentication {{\n  {keyword}\n }}"))],
        "checkers" => CHECKERS
            .iter()
            .map(|kind| service("", &format!("  {kind} {{\n   {keyword}\n  }}")))
            .collect(),
        "url" => vec![service(
            "",
            &format!("  HTTP_GET {{\n   url {{\n    path /\n    {keyword}\n   }}\n  }}"),
        )],
        other => panic!("no file for block {other}"),
    }
}

fn diagnostics(text: &str) -> Vec<Diagnostic> {
    match parse(text, Path::new("k.conf")) {
        Ok(loaded) => loaded.warnings,
        Err(ConfigError::Invalid {
            errors, warnings, ..
        }) => errors.into_iter().chain(warnings).collect(),
        Err(e) => panic!("{e}"),
    }
}

/// The keywords lbd reports as not supported yet, by block.
fn not_yet() -> BTreeMap<&'static str, Vec<&'static str>> {
    let mut found: BTreeMap<&'static str, Vec<&'static str>> = BTreeMap::new();
    let mut errors = Vec::new();
    for (block, keywords) in keyword_inventory() {
        for keyword in keywords {
            let needle = format!("`{keyword}` is not supported yet");
            let said: Vec<Vec<Diagnostic>> = files_with(block, keyword)
                .iter()
                .map(|text| diagnostics(text))
                .collect();
            // Not yet: every file that has it says so (for the checkers, no kind reads it).
            let not_supported = said
                .iter()
                .all(|d| d.iter().any(|d| d.message.contains(&needle)));
            if !not_supported {
                continue;
            }
            for diagnostic in said.iter().flatten() {
                if diagnostic.message.contains(&needle) && diagnostic.severity == Severity::Error {
                    errors.push(format!("{block} {keyword}: {}", diagnostic.message));
                }
            }
            found.entry(block).or_default().push(keyword);
        }
    }
    assert!(errors.is_empty(), "not yet must be a warning: {errors:#?}");
    found
}

/// The README's table, as it must read.
fn table(not_yet: &BTreeMap<&'static str, Vec<&'static str>>) -> String {
    let mut text =
        String::from("| block | keywords lbd reports as not supported yet |\n| --- | --- |\n");
    for (block, _) in keyword_inventory() {
        if let Some(keywords) = not_yet.get(block) {
            let words: Vec<String> = keywords.iter().map(|k| format!("`{k}`")).collect();
            text.push_str(&format!("| {block} | {} |\n", words.join(", ")));
        }
    }
    text
}

#[test]
fn every_keepalived_keyword_is_read_or_a_not_yet_warning_listed_in_the_readme() {
    let want = table(&not_yet());
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .expect("README.md");
    let begin = "<!-- not-yet keywords: begin -->\n";
    let end = "<!-- not-yet keywords: end -->";
    let got = readme
        .split_once(begin)
        .and_then(|(_, rest)| rest.split_once(end))
        .map(|(table, _)| table)
        .unwrap_or_default();
    assert_eq!(
        got,
        want,
        "README.md's not-yet table (between `{}` and `{end}`) must read:\n{want}",
        begin.trim()
    );
}
