//! SMTP servers for the alert tests, inside a test's namespace: a real one (Debian's
//! python3-aiosmtpd, a maintained SMTP server, writing what it receives to a Maildir)
//! and a stalled one (accepts connections and never answers).

use std::{
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

use crate::netns::Netns;

const PYTHON: &str = "/usr/bin/python3";

/// Whether aiosmtpd is installed; in CI it must be (`cargo xtask setup` installs it).
pub fn available(test: &str) -> bool {
    let installed = Command::new(PYTHON)
        .args(["-c", "import aiosmtpd"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !installed {
        let reason = "python3-aiosmtpd is not installed (`cargo xtask setup` installs it)";
        assert!(std::env::var_os("CI").is_none(), "{test}: {reason}");
        eprintln!("SKIPPED {test}: {reason}");
    }
    installed
}

/// aiosmtpd listening on `addr` in a namespace; stopped when dropped.
pub struct SmtpSink {
    child: Child,
    maildir: PathBuf,
}

impl SmtpSink {
    /// Start it in `ns` on `addr`, storing mail under `maildir` (emptied first).
    pub fn start(ns: &Netns, addr: SocketAddr, maildir: &Path) -> anyhow::Result<Self> {
        let _ = std::fs::remove_dir_all(maildir);
        std::fs::create_dir_all(maildir.parent().unwrap_or(Path::new("/")))?;
        let child = ns
            .command(PYTHON)?
            .args(["-m", "aiosmtpd", "-n", "-l", &addr.to_string()])
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(maildir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start aiosmtpd")?;
        let sink = Self {
            child,
            maildir: maildir.to_owned(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while ns
            .run(move || {
                Ok(TcpStream::connect_timeout(
                    &addr,
                    Duration::from_millis(200),
                )?)
            })
            .is_err()
        {
            if Instant::now() > deadline {
                bail!("aiosmtpd did not listen on {addr} within 10 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(sink)
    }

    /// Every mail received so far, as text.
    pub fn mails(&self) -> Vec<String> {
        let mut mails = Vec::new();
        for dir in ["new", "cur"] {
            let Ok(entries) = std::fs::read_dir(self.maildir.join(dir)) else {
                continue;
            };
            for entry in entries.flatten() {
                if let Ok(text) = std::fs::read_to_string(entry.path()) {
                    mails.push(text);
                }
            }
        }
        mails
    }

    /// Wait for a mail whose subject is `subject`; its text.
    pub fn wait_for(&self, subject: &str, timeout: Duration) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        let line = format!("Subject: {subject}\n");
        loop {
            if let Some(mail) = self.mails().into_iter().find(|m| m.contains(&line)) {
                return Ok(mail);
            }
            if Instant::now() > deadline {
                bail!(
                    "no mail `{subject}` within {timeout:?}; received:\n{}",
                    self.mails().join("\n----\n")
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A server that accepts connections in a namespace and never says a word; stopped
/// when dropped.
pub struct StalledSmtp {
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicUsize>,
}

impl StalledSmtp {
    pub fn start(ns: &Netns, addr: SocketAddr) -> anyhow::Result<Self> {
        let listener = ns.run(move || Ok(TcpListener::bind(addr)?))?;
        listener.set_nonblocking(true)?;
        let (stop, accepted) = (Arc::new(AtomicBool::new(false)), Arc::default());
        let (stopping, counting): (_, Arc<AtomicUsize>) = (stop.clone(), Arc::clone(&accepted));
        std::thread::spawn(move || {
            let mut held = Vec::new();
            while !stopping.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        counting.fetch_add(1, Ordering::Relaxed);
                        held.push(stream);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Ok(Self { stop, accepted })
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for StalledSmtp {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
