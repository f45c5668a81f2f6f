//! Bounded under abuse: a caller that never reads its response, an HTTP/2 connection kept
//! busy with PINGs only, warnings under overload, and refusals before routing.

mod common;

use std::time::{Duration, Instant};

use common::proxied;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An HTTP/2 frame header: length, type, flags, stream id.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

const PING: u8 = 6;
const GOAWAY: u8 = 7;

/// Reads frames until the peer closes; returns the frame types seen and when it closed.
async fn frames_until_closed(mut r: tokio::net::tcp::OwnedReadHalf) -> (Vec<u8>, Instant) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match r.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let closed = Instant::now();
    let mut kinds = Vec::new();
    let mut at = 0;
    while at + 9 <= buf.len() {
        let len = (usize::from(buf[at]) << 16)
            | (usize::from(buf[at + 1]) << 8)
            | usize::from(buf[at + 2]);
        kinds.push(buf[at + 3]);
        at += 9 + len;
    }
    (kinds, closed)
}

/// A client that speaks only in PINGs (and acknowledges nothing, not even the proxy's own
/// PING) is closed with a GOAWAY once `idle_ms` has passed without a request.
#[tokio::test]
async fn pings_do_not_keep_an_idle_http2_connection_open() {
    let (_env, _mock, proxy) = proxied("timeouts:\n  idle_ms: 1000\n").await;
    let tcp = TcpStream::connect(proxy.addr).await.unwrap();
    let (r, mut w) = tcp.into_split();
    let start = Instant::now();
    let reader = tokio::spawn(frames_until_closed(r));
    w.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    w.write_all(&frame(4, 0, 0, &[])).await.unwrap();
    let pinger = tokio::spawn(async move {
        for i in 0u64.. {
            if w.write_all(&frame(PING, 0, 0, &i.to_be_bytes()))
                .await
                .is_err()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let closed = tokio::time::timeout(Duration::from_secs(8), reader).await;
    pinger.abort();
    let (kinds, at) = closed
        .expect("the connection was still open 8 s after idle_ms (1 s), kept open by PINGs")
        .unwrap();
    let after = at - start;
    assert!(
        after < Duration::from_millis(4000),
        "closed only {after:?} after start, with idle_ms 1000"
    );
    assert!(
        kinds.contains(&GOAWAY),
        "no GOAWAY before the close: {kinds:?}"
    );
}

/// The same with a well-behaved HTTP/2 client that acknowledges the proxy's PINGs and
/// sends its own.
#[tokio::test]
async fn an_http2_client_sending_pings_is_closed_after_idle_ms() {
    let (_env, _mock, proxy) = proxied("timeouts:\n  idle_ms: 1000\n").await;
    let tcp = TcpStream::connect(proxy.addr).await.unwrap();
    let (_send, mut conn) = h2::client::handshake(tcp).await.unwrap();
    let mut pings = conn.ping_pong().unwrap();
    let start = Instant::now();
    let conn = tokio::spawn(conn);
    let pinger = tokio::spawn(async move {
        loop {
            if pings.ping(h2::Ping::opaque()).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let ended = tokio::time::timeout(Duration::from_secs(8), conn).await;
    pinger.abort();
    assert!(
        ended.is_ok(),
        "the connection was still open 8 s after idle_ms (1 s), kept open by PINGs"
    );
    assert!(
        start.elapsed() < Duration::from_millis(4000),
        "closed only after {:?}, with idle_ms 1000",
        start.elapsed()
    );
}
