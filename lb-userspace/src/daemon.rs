//! What a daemon started the way keepalived is started owes its supervisor: pid files
//! (keepalived's `-p`, `-r`, `-c`), removed at exit, and systemd's readiness
//! notification (`Type=notify` units), so that a unit or script written for keepalived
//! runs lbd unchanged.

use std::{
    io,
    os::{linux::net::SocketAddrExt, unix::net::UnixDatagram},
    path::{Path, PathBuf},
};

/// Pid files holding this process's id, removed when dropped.
pub struct PidFiles {
    paths: Vec<PathBuf>,
}

impl PidFiles {
    /// Write this process's id to each of `paths`.
    pub fn write(paths: impl IntoIterator<Item = PathBuf>) -> io::Result<Self> {
        let pid = format!("{}\n", std::process::id());
        let mut written = Self { paths: Vec::new() };
        for path in paths {
            std::fs::write(&path, &pid).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("writing pid file {}: {e}", path.display()),
                )
            })?;
            written.paths.push(path);
        }
        Ok(written)
    }
}

impl Drop for PidFiles {
    fn drop(&mut self) {
        for path in &self.paths {
            // Only our own: another instance may have taken the file over.
            let ours = std::fs::read_to_string(path)
                .is_ok_and(|text| text.trim() == std::process::id().to_string());
            if ours {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

/// Tell systemd (`$NOTIFY_SOCKET`, set for `Type=notify` units) `state`, such as
/// `READY=1`, `RELOADING=1` or `STOPPING=1`. Without the variable, nothing happens.
pub fn notify(state: &str) -> io::Result<()> {
    match std::env::var_os("NOTIFY_SOCKET") {
        Some(socket) => notify_to(Path::new(&socket), state),
        None => Ok(()),
    }
}

/// Send `state` to the notify socket at `target` (`@NAME`: an abstract name).
fn notify_to(target: &Path, state: &str) -> io::Result<()> {
    let datagram = UnixDatagram::unbound()?;
    match target.as_os_str().as_encoded_bytes().strip_prefix(b"@") {
        // An abstract socket name.
        Some(name) => {
            let address = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            datagram.send_to_addr(state.as_bytes(), &address)?;
        }
        None => {
            datagram.send_to(state.as_bytes(), target)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_files_hold_our_id_and_go_with_us() {
        let dir = std::env::temp_dir().join(format!("lbd-pid-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (main, vrrp) = (dir.join("keepalived.pid"), dir.join("vrrp.pid"));
        let files = PidFiles::write([main.clone(), vrrp.clone()]).unwrap();
        let pid = std::process::id().to_string();
        assert_eq!(std::fs::read_to_string(&main).unwrap().trim(), pid);
        assert_eq!(std::fs::read_to_string(&vrrp).unwrap().trim(), pid);
        drop(files);
        assert!(!main.exists() && !vrrp.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn readiness_reaches_the_notify_socket() {
        let dir = std::env::temp_dir().join(format!("lbd-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        notify_to(&path, "READY=1").unwrap();
        let mut buf = [0; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
