//! One backend connection: protocol choice, idle watchdog, and parking of idle HTTP/1 connections.
//!
//! hyper keeps a read buffer (8 to 16 KiB) and a write buffer (8 KiB) for as long as an HTTP/1
//! connection lives, and a fleet keeps many keep-alive connections open and mostly quiet. After
//! [`PARK_AFTER`] without a request, `park` answers hyper's next read with end-of-stream instead
//! of "not ready": hyper ends that connection cleanly without shutting the socket down, its
//! buffers are freed, and the bare socket waits for the next byte. The next request starts a
//! fresh hyper connection on the same socket, so the backend sees one keep-alive connection.
//!
//! One job per file: [`Activity`] keeps a connection's bookkeeping, [`Tracked`] watches a
//! response body the backend is slow to take, `park` gives hyper's buffers back on quiet HTTP/1
//! connections, `hangup` notices a caller leaving mid-request, [`sniff`] tells HTTP/2 from
//! HTTP/1, and [`serve`] drives the connection through all of them.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

mod activity;
mod driver;
mod hangup;
mod park;
mod sniff;
mod tracked;

pub use activity::{Activity, Busy};
pub use driver::{serve, Bounds, Builders};
pub use sniff::{sniff, Proto};
pub use tracked::{SendTimeout, Tracked};

/// Quiet time after which an HTTP/1 connection gives back hyper's buffers.
pub const PARK_AFTER: Duration = Duration::from_millis(500);

/// A backend stream and the TCP socket under it.
pub trait Socket: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// The TCP socket, for readiness (parking) and the hang-up probe.
    fn tcp(&self) -> &TcpStream;
}

impl Socket for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
}

impl Socket for Box<tokio_rustls::server::TlsStream<TcpStream>> {
    // Parking happens only after a read found rustls' plaintext buffer empty, so new input
    // can only arrive through the socket.
    fn tcp(&self) -> &TcpStream {
        self.get_ref().0
    }
}
