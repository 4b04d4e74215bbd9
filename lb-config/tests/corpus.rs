//! The configuration corpus (`tests/corpus/*.conf`, written the ways operators and
//! tutorials write them): each file read as `lbd -t` reads it (config id `corpus`), its
//! diagnostics and, when it is valid, its model as JSON, compared with `NAME.golden`.
//! After a deliberate change, `UPDATE_GOLDEN=1 cargo test --test corpus` rewrites the
//! golden files; review their diff. `keepalived-verdicts.txt` holds keepalived's verdict on
//! each file, which lbd's must match (or the file says why not).

use std::path::{Path, PathBuf};

use lb_config::{self as config, ConfigError, Interfaces, Options};

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

/// What `lbd -t` and `lbd --dump-config` would say about `path`, with paths relative to
/// the corpus.
fn verdict(path: &Path) -> String {
    // The interfaces of a typical director, so verdicts do not depend on this machine.
    let options = Options {
        config_id: "corpus".into(),
        strict: false,
        interfaces: Interfaces::Given(["lo", "eth0", "eth1"].map(String::from).into()),
        follow_includes: true,
    };
    let (diagnostics, model) = match config::load_with(path, &options) {
        Ok(loaded) => (
            loaded.warnings,
            Some(serde_json::to_string_pretty(&loaded.config).expect("JSON")),
        ),
        Err(ConfigError::Invalid {
            errors, warnings, ..
        }) => {
            let mut all: Vec<_> = errors.into_iter().chain(warnings).collect();
            all.sort_by(|a, b| {
                (a.location.file.as_ref(), a.location.line)
                    .cmp(&(b.location.file.as_ref(), b.location.line))
            });
            (all, None)
        }
        Err(e) => panic!("{}: {e}", path.display()),
    };
    let prefix = format!("{}/", corpus_dir().display());
    let mut text = String::from("# diagnostics\n");
    for diagnostic in diagnostics {
        text.push_str(&diagnostic.to_string().replace(&prefix, ""));
        text.push('\n');
    }
    match model {
        Some(json) => {
            text.push_str("# valid; the model\n");
            text.push_str(&json);
            text.push('\n');
        }
        None => text.push_str("# invalid\n"),
    }
    text
}

#[test]
fn every_corpus_file_reads_as_its_golden_file_says() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus_dir())
        .expect("corpus")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "conf"))
        .collect();
    files.sort();
    assert!(files.len() >= 30, "the corpus lost files: {files:?}");
    let mut differ = Vec::new();
    for file in &files {
        let got = verdict(file);
        let golden = file.with_extension("golden");
        if update {
            std::fs::write(&golden, &got).expect("write golden");
            continue;
        }
        let want = std::fs::read_to_string(&golden)
            .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", golden.display()));
        if got != want {
            differ.push(format!(
                "{}:\n--- golden\n{want}\n--- now\n{got}",
                file.display()
            ));
        }
    }
    assert!(differ.is_empty(), "{}", differ.join("\n"));
}

/// keepalived's recorded verdicts (`keepalived-verdicts.txt`): file, exit status, and how
/// lbd differs where it does.
fn keepalived_verdicts() -> Vec<(String, i32, Option<String>)> {
    let text = std::fs::read_to_string(corpus_dir().join("keepalived-verdicts.txt"))
        .expect("keepalived-verdicts.txt");
    text.lines()
        // keepalived's own samples are checked by lb-tests, where keepalived is installed.
        .filter(|line| !line.starts_with('#') && !line.starts_with("sample:"))
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let mut words = line.splitn(3, ' ');
            let file = words.next().expect("file").to_owned();
            let code = words.next().expect("code").parse().expect("exit status");
            let differs = words.next().map(|rest| {
                rest.strip_prefix("differs: ")
                    .unwrap_or_else(|| panic!("{line}: expected `differs: REASON`"))
                    .to_owned()
            });
            (file, code, differs)
        })
        .collect()
}

/// The exit status `lbd -t` gives `path`: 0 (nothing but notes), 5 (warnings: lbd would
/// run), 4 (errors: lbd would not start).
fn lbd_exit_code(path: &Path) -> i32 {
    let options = Options {
        config_id: "corpus".into(),
        strict: false,
        interfaces: Interfaces::Given(["lo", "eth0", "eth1"].map(String::from).into()),
        follow_includes: true,
    };
    match config::load_with(path, &options) {
        Ok(loaded)
            if loaded
                .warnings
                .iter()
                .all(|w| w.severity == config::Severity::Note) =>
        {
            0
        }
        Ok(_) => 5,
        Err(_) => 4,
    }
}

#[test]
fn lbd_gives_keepalived_verdict_on_every_corpus_file() {
    let verdicts = keepalived_verdicts();
    let mut listed: Vec<&str> = verdicts.iter().map(|(f, _, _)| f.as_str()).collect();
    listed.sort();
    let mut files: Vec<String> = std::fs::read_dir(corpus_dir())
        .expect("corpus")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name.ends_with(".conf"))
        .collect();
    files.sort();
    assert_eq!(
        listed, files,
        "keepalived-verdicts.txt must list every corpus file"
    );
    let mut wrong = Vec::new();
    for (file, code, differs) in &verdicts {
        let lbd = lbd_exit_code(&corpus_dir().join(file));
        match differs {
            None if lbd != *code => {
                wrong.push(format!("{file}: keepalived -t exits {code}, lbd -t {lbd}"))
            }
            Some(reason) if lbd == *code => wrong.push(format!(
                "{file}: recorded as differing ({reason}), but lbd agrees with keepalived now"
            )),
            _ => {}
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
