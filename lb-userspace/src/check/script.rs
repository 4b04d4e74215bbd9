//! Running the configuration's commands (MISC_CHECK, notify and quorum scripts): through
//! `/bin/sh -c` as written, in a process group of their own so that a command over its
//! time is killed with everything it started, and with its output in the log.

use std::{process::Stdio, time::Duration};

use tokio::{io::AsyncReadExt, process::Command};

/// Run `command`; its exit code, or why there is none (could not start, killed after
/// `limit`, ended by a signal).
pub async fn run(command: &str, limit: Duration) -> Result<u8, String> {
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("`{command}` cannot start: {e}"))?;
    let group = child.id().and_then(|id| i32::try_from(id).ok());
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let output = async {
        let mut text = Vec::new();
        if let Some(out) = stdout.as_mut() {
            let _ = out.take(64 * 1024).read_to_end(&mut text).await;
        }
        if let Some(err) = stderr.as_mut() {
            let _ = err.take(64 * 1024).read_to_end(&mut text).await;
        }
        text
    };
    let waited = tokio::time::timeout(limit, async {
        let text = output.await;
        (child.wait().await, text)
    })
    .await;
    match waited {
        Ok((Ok(status), text)) => {
            let text = String::from_utf8_lossy(&text);
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                tracing::info!("`{command}`: {line}");
            }
            match status.code() {
                Some(code) => Ok(u8::try_from(code).unwrap_or(u8::MAX)),
                None => Err(format!("`{command}` ended by a signal")),
            }
        }
        Ok((Err(e), _)) => Err(format!("`{command}`: {e}")),
        Err(_) => {
            if let Some(group) = group {
                // SAFETY: kill has no memory effects; the group is the one the child leads.
                unsafe { libc::kill(-group, libc::SIGKILL) };
            }
            let _ = child.wait().await;
            Err(format!("`{command}` killed after {limit:?}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn exit_codes_come_back() {
        assert_eq!(block_on(run("exit 0", Duration::from_secs(5))), Ok(0));
        assert_eq!(block_on(run("exit 7", Duration::from_secs(5))), Ok(7));
        assert!(block_on(run("/nonexistent/x", Duration::from_secs(5))).is_ok_and(|c| c == 127));
    }

    #[test]
    fn a_command_over_its_time_is_killed_with_its_children() {
        let marker = std::env::temp_dir().join(format!("lbd-script-{}", std::process::id()));
        let _ = std::fs::remove_file(&marker);
        // The background child would write the marker after 2 s if it survived.
        let command = format!("(sleep 2; touch {}) & sleep 10", marker.display());
        let started = std::time::Instant::now();
        let result = block_on(run(&command, Duration::from_millis(300)));
        assert!(result.unwrap_err().contains("killed after"));
        assert!(started.elapsed() < Duration::from_secs(2));
        std::thread::sleep(Duration::from_millis(2500));
        assert!(!marker.exists(), "a child of the command outlived it");
    }
}
