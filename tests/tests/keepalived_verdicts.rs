//! `lbd -t` against keepalived itself: in a network namespace with `lo`, `eth0` and `eth1`
//! (the interfaces the corpus names), run `keepalived -t` (Debian's 2.2.7) and `lbd -t` on
//! every file of the configuration corpus. keepalived's exit status must be the one
//! recorded in `lb-config/tests/corpus/keepalived-verdicts.txt` (so the record, which the
//! unprivileged corpus test uses, is current), and lbd's exit status must be keepalived's,
//! except on the files the record says lbd differs on, and why. Needs root and
//! keepalived (`cargo xtask setup` installs it).
//!
//! keepalived's own sample configurations, read where the package installs them, are
//! held to more: lbd's exit status must be keepalived's, and `lbd --dump-config` must
//! take each.

use std::{
    os::unix::process::ExitStatusExt,
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use lb_tests::{keepalived, lbd, netns::Netns, privilege::require_root};

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../lb-config/tests/corpus")
}

/// Where Debian's keepalived package puts keepalived's own sample configurations.
const SAMPLES: &str = "/usr/share/doc/keepalived/samples";

/// The record of the corpus (`sample` false) or of keepalived's samples (`sample` true):
/// file, keepalived's exit status, whether lbd is recorded as differing.
fn record(sample: bool) -> Vec<(String, i32, bool)> {
    std::fs::read_to_string(corpus_dir().join("keepalived-verdicts.txt"))
        .expect("keepalived-verdicts.txt")
        .lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| match line.strip_prefix("sample:") {
            Some(rest) if sample => Some(rest),
            None if !sample => Some(line),
            _ => None,
        })
        .map(|line| {
            let words: Vec<&str> = line.splitn(3, ' ').collect();
            let code = words[1].parse().expect("exit status");
            (words[0].to_owned(), code, words.len() == 3)
        })
        .collect()
}

/// Run `command` with a time limit; its exit status as a shell shows it (128 + signal).
fn exit_code(mut command: Command) -> i32 {
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status: ExitStatus = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{command:?} did not finish within 20 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    status
        .code()
        .or_else(|| status.signal().map(|signal| 128 + signal))
        .expect("exit status or signal")
}

#[test]
fn lbd_and_keepalived_give_the_recorded_verdicts() {
    if !require_root("lbd_and_keepalived_give_the_recorded_verdicts") {
        return;
    }
    if !keepalived::available("lbd_and_keepalived_give_the_recorded_verdicts") {
        return;
    }
    let ns = Netns::create("lbt-kav").expect("netns");
    ns.ip(&[
        "link", "add", "eth0", "type", "veth", "peer", "name", "eth1",
    ])
    .expect("veth");
    for interface in ["eth0", "eth1"] {
        ns.ip(&["link", "set", interface, "up"]).expect("up");
    }
    let lbd = lbd::binary().expect("lbd");
    let mut wrong = Vec::new();
    for (file, recorded, differs) in record(false) {
        let path = corpus_dir().join(&file);
        let run = |program: &Path| {
            let mut command = ns.command(program).expect("command");
            command
                .current_dir(corpus_dir())
                .arg("-t")
                .arg("-f")
                .arg(&path)
                .args(["-i", "corpus"]);
            exit_code(command)
        };
        let keepalived = run(Path::new(keepalived::BINARY));
        let lbd = run(&lbd);
        if keepalived != recorded {
            wrong.push(format!(
                "{file}: keepalived exits {keepalived}, the record says {recorded}"
            ));
        }
        if lbd != keepalived && !differs {
            wrong.push(format!(
                "{file}: keepalived exits {keepalived}, lbd exits {lbd}"
            ));
        }
        if lbd == keepalived && differs {
            wrong.push(format!(
                "{file}: recorded as differing, but lbd (exit {lbd}) agrees with keepalived (exit {keepalived})"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn lbd_gives_keepalived_exit_status_on_keepalived_own_samples() {
    let test = "lbd_gives_keepalived_exit_status_on_keepalived_own_samples";
    if !require_root(test) {
        return;
    }
    // The samples come with the package.
    if !keepalived::available(test) {
        return;
    }
    assert!(
        Path::new(SAMPLES).exists(),
        "keepalived is installed without {SAMPLES}"
    );
    // lo and eth0, as on a typical director; the samples name eth1-eth3 too.
    let ns = Netns::create("lbt-kas").expect("netns");
    ns.ip(&[
        "link", "add", "eth0", "type", "veth", "peer", "name", "lbt-peer",
    ])
    .expect("veth");
    for interface in ["lo", "eth0"] {
        ns.ip(&["link", "set", interface, "up"]).expect("up");
    }
    let record = record(true);
    let mut installed: Vec<String> = std::fs::read_dir(SAMPLES)
        .expect("samples")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name.starts_with("keepalived.conf"))
        .collect();
    installed.sort();
    let mut recorded: Vec<String> = record.iter().map(|(f, _, _)| f.clone()).collect();
    recorded.sort();
    assert_eq!(
        installed, recorded,
        "keepalived-verdicts.txt must list every sample"
    );
    let lbd = lbd::binary().expect("lbd");
    let mut wrong = Vec::new();
    let mut equal = 0;
    for (file, status, differs) in &record {
        let path = Path::new(SAMPLES).join(file);
        let run = |program: &Path, args: &[&str]| {
            let mut command = ns.command(program).expect("command");
            command.args(args).arg("-f").arg(&path);
            exit_code(command)
        };
        let keepalived = run(Path::new(keepalived::BINARY), &["-t"]);
        let ours = run(&lbd, &["-t"]);
        if keepalived != *status {
            wrong.push(format!(
                "{file}: keepalived exits {keepalived}, the record says {status}"
            ));
        }
        match (ours == keepalived, differs) {
            (true, false) => equal += 1,
            (false, false) => wrong.push(format!(
                "{file}: keepalived exits {keepalived}, lbd -t exits {ours}"
            )),
            (true, true) => wrong.push(format!(
                "{file}: recorded as differing, but lbd -t exits {ours} as keepalived does"
            )),
            (false, true) => {}
        }
        let dumped = run(&lbd, &["--dump-config"]);
        if dumped != 0 {
            wrong.push(format!("{file}: lbd --dump-config exits {dumped}"));
        }
    }
    eprintln!(
        "{equal} of {} samples: lbd -t exits as keepalived -t does",
        record.len()
    );
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
