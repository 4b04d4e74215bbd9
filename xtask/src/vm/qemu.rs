//! Running the guest: `qemu-system-x86_64` under TCG (KVM does not work on the project's
//! machines) with three serial ports, each a pipe read here: the console (ttyS0; kept for
//! error messages, scanned for the init's `lb-vm:` lines, kernel messages printed while
//! the command runs), the command's stdout (ttyS1) and its stderr (ttyS2), copied to ours.
//! The host's root is shared read-only over 9p, the run's directory writable.

use std::{
    collections::VecDeque,
    io::{BufRead as _, BufReader, PipeReader, Read, Write},
    os::{fd::AsRawFd as _, unix::process::CommandExt as _},
    path::Path,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use super::kernel::Kernel;

const MEMORY_MIB: u32 = 2048;
const CPUS: u32 = 2;
/// Console lines kept for error messages.
const TAIL: usize = 40;

/// One boot of the guest.
pub struct Guest<'a> {
    pub kernel: &'a Kernel,
    pub initramfs: &'a Path,
    /// The writable share (`results`): the job in, the exit status out.
    pub share: &'a Path,
    pub timeout: Duration,
}

/// How a boot ended.
pub struct Ended {
    /// The console's last lines (those not printed while the command ran).
    pub console: Console,
    /// qemu's own exit status.
    pub qemu: std::process::ExitStatus,
}

impl Guest<'_> {
    /// Boot, copy the guest's output until qemu exits; an error on timeout.
    pub fn run(&self) -> anyhow::Result<Ended> {
        let (console_r, console_w) = std::io::pipe()?;
        let (out_r, out_w) = std::io::pipe()?;
        let (err_r, err_w) = std::io::pipe()?;
        let fds = [console_w.as_raw_fd(), out_w.as_raw_fd(), err_w.as_raw_fd()];

        let mut command = Command::new("qemu-system-x86_64");
        command
            .args(["-accel", "tcg", "-nodefaults", "-nographic", "-no-reboot"])
            .args(["-m", &MEMORY_MIB.to_string(), "-smp", &CPUS.to_string()])
            .arg("-kernel")
            .arg(&self.kernel.vmlinux)
            .arg("-initrd")
            .arg(self.initramfs)
            .args([
                "-append",
                "console=ttyS0 quiet panic=-1 mitigations=off nokaslr",
            ]);
        for (id, fd) in ["console", "out", "err"].into_iter().zip(fds) {
            command
                .arg("-chardev")
                .arg(format!("file,id={id},path=/dev/fd/{fd}"))
                .arg("-serial")
                .arg(format!("chardev:{id}"));
        }
        command
            .arg("-virtfs")
            .arg("local,path=/,mount_tag=host,security_model=none,readonly=on,multidevs=remap");
        command.arg("-virtfs").arg(format!(
            "local,path={},mount_tag=results,security_model=none",
            self.share.display()
        ));
        command.stdin(Stdio::null());
        // SAFETY: between fork and exec only prctl and fcntl, which are async-signal-safe;
        // the descriptors are open in the child (qemu opens them as /dev/fd/N).
        unsafe {
            command.pre_exec(move || {
                // qemu ends with us (killed, interrupted), not with the guest's command.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                for fd in fds {
                    if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let started = Instant::now();
        let mut qemu = command
            .spawn()
            .context("cannot run qemu-system-x86_64 (package qemu-system-x86)")?;
        // Ours closed, the pipes end when qemu does.
        drop((console_w, out_w, err_w));

        let console = thread::spawn(move || watch_console(console_r, started));
        let out = thread::spawn(move || copy(out_r, &mut std::io::stdout()));
        let err = thread::spawn(move || copy(err_r, &mut std::io::stderr()));

        let deadline = started + self.timeout;
        let status = loop {
            if let Some(status) = qemu.try_wait()? {
                break Some(status);
            }
            if Instant::now() >= deadline {
                let _ = qemu.kill();
                let _ = qemu.wait();
                break None;
            }
            thread::sleep(Duration::from_millis(50));
        };
        let console = console.join().expect("console thread");
        let _ = out.join();
        let _ = err.join();
        match status {
            Some(qemu) => Ok(Ended { console, qemu }),
            None => bail!(
                "the guest did not finish within {} s: killed qemu; {console}",
                self.timeout.as_secs(),
            ),
        }
    }
}

/// Copy until end of file, flushing each chunk (the output of a running command). If
/// ours is closed, the rest is read and dropped: qemu must not block on a full pipe.
fn copy(mut from: PipeReader, to: &mut dyn Write) {
    let mut buffer = [0u8; 8192];
    let mut open = true;
    while let Ok(n @ 1..) = from.read(&mut buffer) {
        if open {
            open = to.write_all(&buffer[..n]).and_then(|()| to.flush()).is_ok();
        }
    }
}

/// What the console showed: whether lines were printed while the command ran, and the
/// last of the others.
pub struct Console {
    printed: bool,
    tail: Vec<String>,
}

impl std::fmt::Display for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.printed {
            return write!(f, "see the console lines above");
        }
        write!(f, "last console lines:")?;
        for line in &self.tail {
            write!(f, "\n  {line}")?;
        }
        Ok(())
    }
}

/// Read the console to its end: report the boot time at the init's `lb-vm: started`,
/// print kernel messages from then until `lb-vm: finished`, keep the last lines of the
/// rest.
fn watch_console(console: PipeReader, started: Instant) -> Console {
    let mut tail = VecDeque::with_capacity(TAIL);
    let mut printed = false;
    let mut running = false;
    let mut reader = BufReader::new(console);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let text = printable(&String::from_utf8_lossy(&line));
        // The firmware leaves its last line open: the marker may end it.
        if text.ends_with("lb-vm: started") {
            running = true;
            eprintln!("vm: booted in {:.1} s", started.elapsed().as_secs_f64());
            continue;
        } else if text.starts_with("lb-vm: ") {
            running = false;
        } else if running {
            if !text.is_empty() {
                eprintln!("vm console: {text}");
                printed = true;
            }
            continue;
        }
        if tail.len() == TAIL {
            tail.pop_front();
        }
        tail.push_back(text);
    }
    Console {
        printed,
        tail: tail.into(),
    }
}

/// The line without its end and without terminal control sequences (the firmware
/// clears the screen).
fn printable(line: &str) -> String {
    let mut text = String::new();
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            // ESC [ parameters final-byte, or ESC and one character.
            '\x1b' => {
                if chars.next() == Some('[') {
                    while chars.next_if(|c| !('@'..='~').contains(c)).is_some() {}
                    chars.next();
                }
            }
            c if c.is_control() => {}
            c => text.push(c),
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_sequences_are_dropped() {
        assert_eq!(
            printable("\x1bc\x1b[?7l\x1b[2J\x1b[0mSeaBIOS (version 1)\r\n"),
            "SeaBIOS (version 1)"
        );
    }
}
