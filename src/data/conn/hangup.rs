//! The hang-up watch: notices a caller that leaves while its request waits on Amity.

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use tokio::io::Interest;
use tokio::net::TcpStream;

/// Notices a caller that closes its HTTP/1 connection while its request waits on Amity.
///
/// Why a second descriptor: it is registered with the runtime on its own, so its readiness is
/// its own. Clearing it (bytes ahead of the FIN: a TLS close_notify, a pipelined request) leaves
/// hyper's registration of the socket as it was; on one shared registration, hyper would then
/// wait for bytes that already came. It exists only while a connection is not parked.
///
/// hyper is told to allow half-closed connections: otherwise it reads the socket once more
/// while each request is in flight, only to see whether the caller left, and as the request
/// still holds hyper's read buffer, that read takes a fresh 8 KiB buffer every time. Instead,
/// once a request has waited [`PARK_AFTER`](super::PARK_AFTER), a second descriptor of the
/// same socket is registered and watched for the caller's FIN; when it comes, the connection
/// ends and the dropped request resets its upstream stream and frees its in-flight slot.
pub(super) struct HangUp {
    /// The second descriptor, made when the connection starts (later, hyper owns the socket).
    fd: Option<OwnedFd>,
    /// `fd`, registered with the runtime while a long request is watched (then `fd` is
    /// `None`). Boxed, as is the wait on it: rarely used, they would otherwise enlarge every
    /// connection's task.
    watching: Option<Box<TcpStream>>,
}

impl HangUp {
    pub(super) fn new(tcp: &TcpStream) -> Self {
        Self {
            fd: tcp.as_fd().try_clone_to_owned().ok(),
            watching: None,
        }
    }

    /// Closes the second descriptor: a parked connection has no request to watch.
    pub(super) fn release(&mut self) {
        self.fd = None;
        self.watching = None;
    }

    /// Watches for a hang-up until [`HangUp::stop`]; already watching, carries on.
    pub(super) fn watch(&mut self) {
        if let Some(fd) = self.fd.take() {
            match TcpStream::from_std(std::net::TcpStream::from(fd)) {
                Ok(s) => self.watching = Some(Box::new(s)),
                Err(e) => tracing::debug!(error = %e, "cannot watch the caller's connection"),
            }
        }
    }

    pub(super) fn stop(&mut self) {
        if let Some(s) = self.watching.take() {
            self.fd = s.into_std().ok().map(OwnedFd::from);
        }
    }

    /// Resolves, while watching, once the caller has closed its side. Bytes that come
    /// first (a TLS close_notify alert ahead of the FIN, a pipelined request) are left for
    /// hyper to read: their readiness is cleared, never the closed state, which tokio keeps.
    pub(super) async fn closed(&self) {
        let Some(s) = &self.watching else {
            return std::future::pending().await;
        };
        Box::pin(async {
            loop {
                match s.ready(Interest::READABLE).await {
                    Ok(r) if !r.is_read_closed() => {
                        let _ = s.try_io(Interest::READABLE, || {
                            Err::<(), _>(io::ErrorKind::WouldBlock.into())
                        });
                    }
                    _ => return,
                }
            }
        })
        .await
    }
}
