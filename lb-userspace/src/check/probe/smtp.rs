//! SMTP_CHECK: the server's `220` greeting, `HELO helo_name` answered with `250`, then
//! `QUIT`.

use std::time::Duration;

use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
    time::timeout,
};

/// The SMTP dialogue on `stream`, each step within `limit`.
pub async fn smtp_check(stream: TcpStream, helo_name: &str, limit: Duration) -> Result<(), String> {
    let mut stream = BufReader::new(stream);
    expect(&mut stream, "220", "greeting", limit).await?;
    send(&mut stream, &format!("HELO {helo_name}\r\n"), limit).await?;
    expect(&mut stream, "250", "HELO", limit).await?;
    // A polite end; the verdict is already in.
    let _ = send(&mut stream, "QUIT\r\n", limit).await;
    Ok(())
}

async fn send(
    stream: &mut BufReader<TcpStream>,
    line: &str,
    limit: Duration,
) -> Result<(), String> {
    timeout(limit, stream.get_mut().write_all(line.as_bytes()))
        .await
        .map_err(|_| format!("SMTP: cannot send within {limit:?}"))?
        .map_err(|e| format!("SMTP: {e}"))
}

/// Read one reply (with its continuation lines, `250-...`); its code must be `code`.
async fn expect(
    stream: &mut BufReader<TcpStream>,
    code: &str,
    step: &str,
    limit: Duration,
) -> Result<(), String> {
    loop {
        let mut line = String::new();
        let read = timeout(limit, stream.read_line(&mut line))
            .await
            .map_err(|_| format!("SMTP {step}: no answer within {limit:?}"))?
            .map_err(|e| format!("SMTP {step}: {e}"))?;
        if read == 0 {
            return Err(format!("SMTP {step}: connection closed"));
        }
        if !line.starts_with(code) {
            return Err(format!("SMTP {step}: `{}`", line.trim_end()));
        }
        // `250-` continues, `250 ` ends the reply.
        if line.as_bytes().get(3) != Some(&b'-') {
            return Ok(());
        }
    }
}
