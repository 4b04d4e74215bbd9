//! A running `lbd` in a namespace: started with a config, reloaded with SIGHUP, stopped
//! with SIGTERM. Its log goes to a file (so it can outlive this process with `lab --keep`),
//! which a thread follows, copying it to stderr and keeping it for assertions. Dropping
//! the handle stops lbd and removes its pinned maps.

use std::{
    fs::File,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Output, Stdio},
    sync::{
        Arc, Condvar, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use lb_userspace::dataplane::xdp::pin_dir;

use crate::netns::{Netns, command_in};

/// The `lbd` binary: `$LBD_BIN`, else next to the running executable (target/<profile>/ for
/// binaries, its parent for test executables in target/<profile>/deps/).
pub fn binary() -> anyhow::Result<PathBuf> {
    sibling("lbd", "LBD_BIN")
}

/// The `lbctl` binary: `$LBCTL_BIN`, else found as `binary` finds lbd.
pub fn lbctl_binary() -> anyhow::Result<PathBuf> {
    sibling("lbctl", "LBCTL_BIN")
}

/// Run lbctl for instance `name` with `args`, in namespace `ns` when given (IPVS is per
/// namespace; the pinned maps are not), and echo what it printed.
pub fn lbctl_in(ns: Option<&Netns>, name: &str, args: &[&str]) -> Output {
    let binary = lbctl_binary().expect("lbctl");
    let mut command = match ns {
        Some(ns) => command_in(ns.name(), binary).expect("lbctl in the namespace"),
        None => Command::new(binary),
    };
    let output = command
        .args(["--name", name])
        .args(args)
        .output()
        .expect("run lbctl");
    eprintln!(
        "$ lbctl {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// As `lbctl_in`; lbctl must succeed: its standard output.
pub fn lbctl_ok_in(ns: Option<&Netns>, name: &str, args: &[&str]) -> String {
    let output = lbctl_in(ns, name, args);
    assert!(output.status.success(), "lbctl {args:?} failed");
    String::from_utf8(output.stdout).expect("utf-8")
}

fn sibling(name: &str, variable: &str) -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os(variable) {
        return Ok(path.into());
    }
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("executable has no directory")?;
    for candidate in [dir.join(name), dir.join("..").join(name)] {
        if candidate.exists() {
            return Ok(candidate);
        }
    }
    bail!(
        "{name} not found next to {}; build it first (`cargo build --bins`; `cargo xtask test` does) or set {variable}",
        exe.display()
    )
}

type Log = Arc<(Mutex<Vec<String>>, Condvar)>;

pub struct Lbd {
    child: Child,
    launch: Launch,
    log: Log,
    stop_following: Arc<AtomicBool>,
}

/// How lbd was started, to start it again.
struct Launch {
    netns: String,
    config: PathBuf,
    /// `--interface IFACE` (balancer), `--decap IFACE` (real server), or nothing (the
    /// balancer on the reals' interfaces).
    attach: Vec<String>,
    name: String,
    log_file: PathBuf,
    extra_args: Vec<String>,
}

impl Launch {
    /// Where lbd writes keepalived's dump files: the log's directory.
    fn dump_dir(&self) -> PathBuf {
        match self.log_file.parent() {
            Some(dir) if dir.is_absolute() => dir.to_owned(),
            _ => std::env::temp_dir(),
        }
    }

    fn spawn(&self) -> anyhow::Result<Child> {
        let binary = binary()?;
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log_file)
            .with_context(|| format!("open {}", self.log_file.display()))?;
        command_in(&self.netns, &binary)?
            .arg("-f")
            .arg(&self.config)
            .args(&self.attach)
            .args(["--name", &self.name])
            .args(&self.extra_args)
            .env("RUST_LOG", "info")
            // keepalived's dump files (SIGUSR1, SIGUSR2, SIGRTMIN+2) go next to the log.
            .env("TMPDIR", self.dump_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("start {}", binary.display()))
    }
}

impl Lbd {
    /// Start lbd as instance `name` in `ns`, attached to `interface`, logging to
    /// `log_file`, and wait until it reports ready.
    pub fn start(
        ns: &Netns,
        config: &Path,
        interface: &str,
        name: &str,
        log_file: &Path,
        extra_args: &[&str],
    ) -> anyhow::Result<Self> {
        Self::launch(
            ns,
            config,
            &["--interface", interface],
            name,
            log_file,
            extra_args,
        )
    }

    /// Start lbd as a keepalived unit would: no `--interface` (it attaches where the reals
    /// are reached), with `args` such as `-n -l -p FILE`.
    pub fn start_like_keepalived(
        ns: &Netns,
        config: &Path,
        name: &str,
        log_file: &Path,
        args: &[&str],
    ) -> anyhow::Result<Self> {
        Self::launch(ns, config, &[], name, log_file, args)
    }

    /// Start `lbd -P` (VRRP only) in `ns` running `config`, in a directory of its own
    /// (emptied first) under the temporary directory, named after the namespace, with
    /// the configuration, the log and the pid file; the instance is `NS-lbd`.
    pub fn start_vrrp_only(ns: &Netns, config: &str) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(ns.name());
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("lbd.conf");
        std::fs::write(&path, config)?;
        let pid = dir.join("lbd.pid").display().to_string();
        Self::start_like_keepalived(
            ns,
            &path,
            &format!("{}-lbd", ns.name()),
            &dir.join("lbd.log"),
            &["-P", "-p", &pid],
        )
    }

    /// Start `lbd --decap interface` (a real server of TUN services) in `ns`.
    pub fn start_decap(
        ns: &Netns,
        config: &Path,
        interface: &str,
        name: &str,
        log_file: &Path,
    ) -> anyhow::Result<Self> {
        Self::launch(ns, config, &["--decap", interface], name, log_file, &[])
    }

    fn launch(
        ns: &Netns,
        config: &Path,
        attach: &[&str],
        name: &str,
        log_file: &Path,
        extra_args: &[&str],
    ) -> anyhow::Result<Self> {
        let _ = std::fs::remove_dir_all(pin_dir(name));
        File::create(log_file).with_context(|| format!("create {}", log_file.display()))?;
        let launch = Launch {
            netns: ns.name().to_owned(),
            config: config.to_owned(),
            attach: attach.iter().map(|a| a.to_string()).collect(),
            name: name.to_owned(),
            log_file: log_file.to_owned(),
            extra_args: extra_args.iter().map(|a| a.to_string()).collect(),
        };
        // Everything fallible before the spawn: the child must not be orphaned.
        let log_reader = File::open(log_file)?;
        let child = launch.spawn()?;
        let log: Log = Arc::default();
        let stop_following = Arc::new(AtomicBool::new(false));
        follow(log_reader, name, log.clone(), stop_following.clone());
        let mut lbd = Self {
            child,
            launch,
            log,
            stop_following,
        };
        lbd.wait_for("ready:", 1, Duration::from_secs(30))?;
        Ok(lbd)
    }

    /// Stop lbd (SIGTERM) and start it again with the same arguments and pinned maps.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        let status = self.stop()?;
        if !status.success() {
            bail!("lbd exited with {status} on SIGTERM");
        }
        let ready = self.count("ready:");
        self.child = self.launch.spawn()?;
        self.wait_for("ready:", ready + 1, Duration::from_secs(30))
    }

    /// Start lbd again with the same arguments and pinned maps, once it has exited (killed,
    /// or stopped with `stop`).
    pub fn start_again(&mut self) -> anyhow::Result<()> {
        if self.child.try_wait()?.is_none() {
            bail!("lbd is still running");
        }
        let ready = self.count("ready:");
        self.child = self.launch.spawn()?;
        self.wait_for("ready:", ready + 1, Duration::from_secs(30))
    }

    /// lbd's run directory (control socket, status file).
    pub fn run_dir(&self) -> PathBuf {
        lb_userspace::status::run_dir(&self.launch.name)
    }

    pub fn pin_dir(&self) -> PathBuf {
        pin_dir(&self.launch.name)
    }

    /// Where it writes keepalived's dump files (its `TMPDIR`).
    pub fn dump_dir(&self) -> PathBuf {
        self.launch.dump_dir()
    }

    /// Lines logged so far.
    pub fn log(&self) -> Vec<String> {
        self.log.0.lock().expect("log lock").clone()
    }

    fn count(&self, needle: &str) -> usize {
        self.log().iter().filter(|l| l.contains(needle)).count()
    }

    /// Wait until `needle` has been logged `times` times (or lbd exits, or time runs out).
    pub fn wait_for(
        &mut self,
        needle: &str,
        times: usize,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let (lines, changed) = &*self.log;
        let mut guard = lines.lock().expect("log lock");
        loop {
            if guard.iter().filter(|l| l.contains(needle)).count() >= times {
                return Ok(());
            }
            let now = Instant::now();
            if now >= deadline {
                bail!(
                    "lbd did not log {needle:?} within {timeout:?}; log:\n{}",
                    guard.join("\n")
                );
            }
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "lbd exited ({status}) before logging {needle:?}; log:\n{}",
                    guard.join("\n")
                );
            }
            guard = changed
                .wait_timeout(guard, (deadline - now).min(Duration::from_millis(200)))
                .expect("log lock")
                .0;
        }
    }

    /// SIGHUP, then wait until lbd reports the reload applied.
    pub fn reload(&mut self) -> anyhow::Result<()> {
        let done = self.count("reload applied");
        self.signal(libc::SIGHUP)?;
        self.wait_for("reload applied", done + 1, Duration::from_secs(30))
    }

    /// SIGHUP with a file lbd must refuse, then wait until it says the running
    /// configuration stays.
    pub fn reload_rejected(&mut self) -> anyhow::Result<()> {
        let done = self.count("reload rejected");
        self.signal(libc::SIGHUP)?;
        self.wait_for("reload rejected", done + 1, Duration::from_secs(30))
    }

    /// The process id of the running lbd.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM and wait (bounded) for the exit status.
    pub fn stop(&mut self) -> anyhow::Result<ExitStatus> {
        self.signal(libc::SIGTERM)?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        bail!("lbd did not exit within 10 s of SIGTERM; killed")
    }

    /// SIGKILL, as a crash would (no handover), and wait for it.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        self.signal(libc::SIGKILL)?;
        self.child.wait()?;
        Ok(())
    }

    /// Send lbd `signal`.
    pub fn signal(&self, signal: libc::c_int) -> anyhow::Result<()> {
        // SAFETY: plain syscall on our own child's pid.
        if unsafe { libc::kill(self.child.id() as libc::pid_t, signal) } != 0 {
            return Err(std::io::Error::last_os_error()).context("signal lbd");
        }
        Ok(())
    }

    /// Leave lbd running when the handle drops (`lab --keep`).
    pub fn keep(self) {
        self.stop_following.store(true, Ordering::Relaxed);
        std::mem::forget(self);
    }
}

impl Drop for Lbd {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.stop();
        }
        self.stop_following.store(true, Ordering::Relaxed);
        let _ = std::fs::remove_dir_all(self.pin_dir());
        let _ = std::fs::remove_dir_all(self.run_dir());
    }
}

/// Follow the log file like `tail -f`: copy each line to stderr and into `log`.
fn follow(file: File, tag: &str, log: Log, stop: Arc<AtomicBool>) {
    let tag = tag.to_owned();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(file);
        let mut line = String::new();
        while !stop.load(Ordering::Relaxed) {
            match reader.read_line(&mut line) {
                Ok(0) => std::thread::sleep(Duration::from_millis(20)),
                Ok(_) if line.ends_with('\n') => {
                    let text = line.trim_end().to_owned();
                    line.clear();
                    eprintln!("[lbd {tag}] {text}");
                    let (lines, changed) = &*log;
                    lines.lock().expect("log lock").push(text);
                    changed.notify_all();
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
}
