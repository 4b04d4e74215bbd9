//! lbctl's side of the control socket: one request, one answer, with a time limit.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::net::UnixStream,
    path::Path,
    time::Duration,
};

use super::{Request, Response};

/// How long lbctl waits for lbd.
const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach lbd at {path}: {source} (is lbd running with this --name?)")]
    Connect {
        path: String,
        source: std::io::Error,
    },
    #[error("talking to lbd at {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("lbd's answer is not understood: {reason}")]
    Answer { reason: String },
}

/// Send `request` to the lbd listening on `path` and return its answer.
pub fn call(path: &Path, request: &Request) -> Result<Response, ClientError> {
    let io = |source| ClientError::Io {
        path: path.display().to_string(),
        source,
    };
    let mut stream = UnixStream::connect(path).map_err(|source| ClientError::Connect {
        path: path.display().to_string(),
        source,
    })?;
    stream.set_read_timeout(Some(TIMEOUT)).map_err(io)?;
    stream.set_write_timeout(Some(TIMEOUT)).map_err(io)?;
    let mut line = serde_json::to_vec(request).map_err(|e| ClientError::Answer {
        reason: e.to_string(),
    })?;
    line.push(b'\n');
    stream.write_all(&line).map_err(io)?;
    let mut answer = String::new();
    BufReader::new(&stream).read_line(&mut answer).map_err(io)?;
    serde_json::from_str(answer.trim_end()).map_err(|e| ClientError::Answer {
        reason: format!("{e}: {answer:?}"),
    })
}
