//! Protocol sniffing on a plain connection: HTTP/2's prior-knowledge preface, or HTTP/1.

use std::io;
use std::time::Duration;

use tokio::io::Interest;
use tokio::net::TcpStream;

/// How the backend speaks on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// HTTP/1.x.
    Http1,
    /// HTTP/2 (ALPN `h2`, or the prior-knowledge preface on plain TCP).
    Http2,
}

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Waits up to `idle` for the first bytes of a plain connection, and up to `head` more for the
/// rest of a preface begun, and tells HTTP/2's preface from HTTP/1; `None` if the peer closed
/// without sending anything or a wait ran out.
pub async fn sniff(s: &TcpStream, idle: Duration, head: Duration) -> io::Result<Option<Proto>> {
    let mut buf = [0u8; PREFACE.len()];
    let Ok(first) = tokio::time::timeout(idle, s.peek(&mut buf)).await else {
        return Ok(None);
    };
    let mut n = first?;
    let deadline = tokio::time::Instant::now() + head;
    loop {
        if n == 0 {
            return Ok(None);
        }
        if buf[..n] != PREFACE[..n] {
            return Ok(Some(Proto::Http1));
        }
        if n == PREFACE.len() {
            return Ok(Some(Proto::Http2));
        }
        // A split preface: peek returns the same bytes until more arrive, and the socket stays
        // readable. Clearing tokio's readiness makes the wait end only when more bytes (or a
        // hang-up) come, not at once in a loop.
        let _ = s.try_io(Interest::READABLE, || {
            Err::<(), _>(io::ErrorKind::WouldBlock.into())
        });
        match tokio::time::timeout_at(deadline, s.readable()).await {
            Ok(ready) => ready?,
            Err(_) => return Ok(None),
        }
        n = s.peek(&mut buf).await?;
    }
}
