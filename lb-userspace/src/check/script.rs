//! Running the configuration's commands (MISC_CHECK, notify and quorum scripts): through
//! `/bin/sh -c` as written, as the user keepalived would run them as (`script_user`, a
//! MISC_CHECK's `user`, else `keepalived_script` if it exists, else root), in a process
//! group of their own so that a command over its time is killed with everything it
//! started, and with its output in the log. Under `enable_script_security` a command
//! that would run as root from a path a non-root user can change is refused.

use std::{
    ffi::CString, os::unix::fs::MetadataExt as _, path::Path, process::Stdio, time::Duration,
};

use tokio::{io::AsyncReadExt, process::Command};

/// Who runs scripts, from global_defs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// `script_user USER [GROUP]`.
    pub user: Option<(String, Option<String>)>,
    /// `enable_script_security`.
    pub secure: bool,
}

impl Policy {
    pub fn of(config: &crate::model::Config) -> Self {
        Self {
            user: config.script_user.clone(),
            secure: config.script_security,
        }
    }
}

/// A user's uid and (primary, or `group`'s) gid.
fn identity(user: &str, group: Option<&str>) -> Result<(u32, u32), String> {
    let name = CString::new(user).map_err(|_| format!("user `{user}`"))?;
    // SAFETY: getpwnam with a valid C string; the result is read before any other call.
    let entry = unsafe { libc::getpwnam(name.as_ptr()) };
    if entry.is_null() {
        return Err(format!("no user `{user}`"));
    }
    // SAFETY: non-null, from getpwnam just now.
    let (uid, mut gid) = unsafe { ((*entry).pw_uid, (*entry).pw_gid) };
    if let Some(group) = group {
        let name = CString::new(group).map_err(|_| format!("group `{group}`"))?;
        // SAFETY: getgrnam with a valid C string; read at once.
        let entry = unsafe { libc::getgrnam(name.as_ptr()) };
        if entry.is_null() {
            return Err(format!("no group `{group}`"));
        }
        // SAFETY: non-null, from getgrnam just now.
        gid = unsafe { (*entry).gr_gid };
    }
    Ok((uid, gid))
}

/// Whether a non-root user could change `path` or a directory above it.
fn changeable_by_others(path: &Path) -> bool {
    path.ancestors().any(|part| match std::fs::metadata(part) {
        Ok(meta) => meta.uid() != 0 || meta.mode() & 0o022 != 0 && meta.mode() & 0o1000 == 0,
        Err(_) => false,
    })
}

/// The uid and gid a command runs as under `policy` (`user` first: a MISC_CHECK's own),
/// after keepalived's script security check.
fn run_as(command: &str, policy: &Policy, user: Option<&str>) -> Result<(u32, u32), String> {
    let (uid, gid) = match (user, &policy.user) {
        (Some(user), _) => identity(user, None)?,
        (None, Some((user, group))) => identity(user, group.as_deref())?,
        (None, None) => identity("keepalived_script", None).unwrap_or((0, 0)),
    };
    if policy.secure && uid == 0 {
        let program = command.split_whitespace().next().unwrap_or_default();
        let path = Path::new(program);
        let insecure = if path.is_absolute() {
            changeable_by_others(path)
        } else {
            // Found through PATH: every directory of PATH holding it counts.
            std::env::var_os("PATH").is_none_or(|dirs| {
                std::env::split_paths(&dirs)
                    .map(|dir| dir.join(program))
                    .filter(|candidate| candidate.exists())
                    .any(|candidate| changeable_by_others(&candidate))
            })
        };
        if insecure {
            return Err(format!(
                "`{command}` would run as root from a path a non-root user can change; refused (enable_script_security)"
            ));
        }
    }
    Ok((uid, gid))
}

/// Run `command` under `policy` (a MISC_CHECK's own `user` first); its exit code, or why
/// there is none (refused, could not start, killed after `limit`, ended by a signal).
pub async fn run_with(
    command: &str,
    limit: Duration,
    policy: &Policy,
    user: Option<&str>,
) -> Result<u8, String> {
    let (uid, gid) = run_as(command, policy, user)?;
    run_ids(command, limit, uid, gid).await
}

/// Run `command` as root (tests, and callers without a policy).
pub async fn run(command: &str, limit: Duration) -> Result<u8, String> {
    run_ids(command, limit, 0, 0).await
}

async fn run_ids(command: &str, limit: Duration, uid: u32, gid: u32) -> Result<u8, String> {
    let mut builder = Command::new("/bin/sh");
    builder.arg("-c").arg(command);
    // SAFETY: geteuid has no preconditions.
    if uid != unsafe { libc::geteuid() } {
        builder.uid(uid).gid(gid);
    }
    let mut child = builder
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

    /// Whether this test may run as root; skipped with a reason outside CI otherwise.
    fn root(test: &str) -> bool {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            return true;
        }
        assert!(std::env::var_os("CI").is_none(), "{test} needs root in CI");
        eprintln!("SKIPPED {test}: needs root (setuid)");
        false
    }

    #[test]
    fn scripts_run_as_the_configured_user() {
        if !root("scripts_run_as_the_configured_user") {
            return;
        }
        let nobody = Policy {
            user: Some(("nobody".into(), None)),
            secure: false,
        };
        let uid = identity("nobody", None).unwrap().0;
        let check = format!("test \"$(id -u)\" = {uid}");
        assert_eq!(
            block_on(run_with(&check, Duration::from_secs(5), &nobody, None)),
            Ok(0)
        );
        // A MISC_CHECK's own user wins over script_user.
        let root_check = "test \"$(id -u)\" = 0";
        assert_eq!(
            block_on(run_with(
                root_check,
                Duration::from_secs(5),
                &nobody,
                Some("root")
            )),
            Ok(0)
        );
        assert!(
            block_on(run_with(
                "true",
                Duration::from_secs(5),
                &Policy {
                    user: Some(("no-such-user-here".into(), None)),
                    secure: false
                },
                None
            ))
            .unwrap_err()
            .contains("no user")
        );
    }

    #[test]
    fn script_security_refuses_root_scripts_others_can_change() {
        if !root("script_security_refuses_root_scripts_others_can_change") {
            return;
        }
        let secure = Policy {
            user: Some(("root".into(), None)),
            secure: true,
        };
        // A system binary is fine.
        assert_eq!(
            block_on(run_with("/bin/true", Duration::from_secs(5), &secure, None)),
            Ok(0)
        );
        // A script in a world-writable directory is not.
        let dir = std::env::temp_dir().join(format!("lbd-secure-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let script = dir.join("check.sh");
        std::fs::write(&script, "#!/bin/sh\nexit 0\n").unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let refused = block_on(run_with(
            &script.display().to_string(),
            Duration::from_secs(5),
            &secure,
            None,
        ));
        assert!(refused.unwrap_err().contains("refused"));
        // Without script security it runs.
        let open = Policy {
            secure: false,
            ..secure
        };
        assert_eq!(
            block_on(run_with(
                &script.display().to_string(),
                Duration::from_secs(5),
                &open,
                None
            )),
            Ok(0)
        );
        std::fs::remove_dir_all(&dir).unwrap();
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
