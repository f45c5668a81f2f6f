//! One raw HTTP/1.1 keep-alive connection to the proxy, and waiting for it to be parked.

use std::time::{Duration, Instant};

use amity_mtls_proxy::data::conn::PARK_AFTER;
use amity_mtls_proxy::process::server;

use super::{SERVER_KEY, V3};

/// One raw HTTP/1.1 keep-alive connection to the proxy, for tests that need to control what
/// is sent when: the v3 token call, whole, in parts or pipelined.
pub struct KeepAlive {
    s: tokio::net::TcpStream,
    buf: Vec<u8>,
    /// The v3 token call with the server key.
    pub req: String,
}

impl KeepAlive {
    pub async fn open(addr: std::net::SocketAddr) -> Self {
        Self {
            s: tokio::net::TcpStream::connect(addr).await.unwrap(),
            buf: Vec::new(),
            req: format!("GET {V3} HTTP/1.1\r\nHost: x\r\nx-server-key: {SERVER_KEY}\r\n\r\n"),
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        use tokio::io::AsyncWriteExt;
        self.s.write_all(bytes).await.unwrap();
    }

    /// Sends the token call and returns its response's status.
    pub async fn call(&mut self) -> u16 {
        let req = self.req.clone();
        self.send(req.as_bytes()).await;
        self.response().await
    }

    /// Reads one response with a Content-Length body; returns its status.
    pub async fn response(&mut self) -> u16 {
        use tokio::io::AsyncReadExt;
        loop {
            let buf = &mut self.buf;
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map(|v| v.trim().parse().unwrap())
                    .unwrap_or(0);
                if buf.len() >= end + 4 + len {
                    let status = head[9..12].parse().unwrap();
                    buf.drain(..end + 4 + len);
                    return status;
                }
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(Duration::from_secs(5), self.s.read(&mut chunk))
                .await
                .expect("a response within 5 s")
                .unwrap();
            assert!(n > 0, "the proxy closed the connection");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// How long until the proxy closes the connection, waiting at most `limit`.
    pub async fn closed_within(&mut self, limit: Duration) -> Option<Duration> {
        use tokio::io::AsyncReadExt;
        let t = Instant::now();
        let mut byte = [0u8; 1];
        match tokio::time::timeout(limit, self.s.read(&mut byte)).await {
            Ok(Ok(0) | Err(_)) => Some(t.elapsed()),
            Ok(Ok(_)) => panic!("the proxy sent something unasked"),
            Err(_) => None,
        }
    }
}

/// Waits until `n` connections are parked.
pub async fn parked(proxy: &server::Running, n: i64) {
    let t = Instant::now();
    while proxy.state.metrics.connections_parked.get() != n {
        assert!(t.elapsed() < PARK_AFTER * 6, "never {n} parked");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
