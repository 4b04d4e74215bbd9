//! The control socket in lbd: accepts connections, reads one request line each, hands it
//! to lbd's main loop (which owns the controller) and writes the answer back. The socket
//! is created with mode 0600 in a directory of mode 0700: only root talks to lbd.

use std::{
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
};

use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    net::{UnixListener, UnixStream},
    sync::{mpsc, oneshot},
};
use tracing::{debug, warn};

use super::{MAX_REQUEST_BYTES, Request, Response};

/// A request with the way back to its client.
pub type Call = (Request, oneshot::Sender<Response>);

/// The listening socket; removed when dropped.
pub struct ControlSocket {
    path: PathBuf,
    pub calls: mpsc::Receiver<Call>,
    task: tokio::task::JoinHandle<()>,
}

impl ControlSocket {
    /// Listen on `path` (a stale socket of an earlier run is replaced). Inside a tokio
    /// runtime.
    pub fn bind(path: &Path) -> std::io::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let listener = UnixListener::bind(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        let (sender, calls) = mpsc::channel(16);
        let task = tokio::spawn(accept(listener, sender));
        Ok(Self {
            path: path.to_owned(),
            calls,
            task,
        })
    }

    /// The next request (never, once the socket failed).
    pub async fn next(&mut self) -> Call {
        match self.calls.recv().await {
            Some(call) => call,
            None => std::future::pending().await,
        }
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn accept(listener: UnixListener, calls: mpsc::Sender<Call>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(serve(stream, calls.clone()));
            }
            Err(e) => {
                warn!("control socket: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

/// One connection: requests one per line until the client closes.
async fn serve(stream: UnixStream, calls: mpsc::Sender<Call>) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    let mut line = String::new();
    loop {
        line.clear();
        let mut limited = (&mut lines).take(MAX_REQUEST_BYTES as u64 + 1);
        match limited.read_line(&mut line).await {
            Ok(0) => return,
            Ok(n) if n > MAX_REQUEST_BYTES => {
                let _ = reply(&mut write, &refused("request longer than 64 KiB")).await;
                return;
            }
            Ok(_) => {}
            Err(e) => {
                debug!("control socket: {e}");
                return;
            }
        }
        let response = match serde_json::from_str::<Request>(line.trim_end()) {
            Ok(request) => {
                let (answer, answered) = oneshot::channel();
                if calls.send((request, answer)).await.is_err() {
                    return;
                }
                answered
                    .await
                    .unwrap_or_else(|_| refused("lbd is stopping"))
            }
            Err(e) => refused(&format!("not a request: {e}")),
        };
        if reply(&mut write, &response).await.is_err() {
            return;
        }
    }
}

fn refused(error: &str) -> Response {
    Response::Refused {
        error: error.to_owned(),
    }
}

async fn reply(
    write: &mut tokio::net::unix::OwnedWriteHalf,
    response: &Response,
) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(response).map_err(std::io::Error::other)?;
    line.push(b'\n');
    write.write_all(&line).await
}
