//! Protocol sniffing on a plain connection: HTTP/2's prior-knowledge preface, or HTTP/1.

use std::io;
use std::time::Duration;

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

/// Waits for the first bytes of a plain connection and tells HTTP/2's preface from HTTP/1;
/// `None` if the peer closed without sending anything.
pub async fn sniff(s: &TcpStream) -> io::Result<Option<Proto>> {
    let mut buf = [0u8; PREFACE.len()];
    loop {
        let n = s.peek(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        if buf[..n] != PREFACE[..n] {
            return Ok(Some(Proto::Http1));
        }
        if n == PREFACE.len() {
            return Ok(Some(Proto::Http2));
        }
        // A split preface: peek returns the same bytes until more arrive.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
