//! Listening sockets handed over by systemd's socket activation (`LISTEN_FDS`, named by
//! `LISTEN_FDNAMES`): while the socket unit holds them, a restart refuses no connection; those
//! that come meanwhile wait in the kernel's queue for the next process.

use std::net::{SocketAddr, TcpListener};

/// The sockets this process was given, not yet taken.
#[derive(Default)]
pub struct Inherited {
    sockets: Vec<(String, TcpListener)>,
}

impl Inherited {
    /// The sockets of `LISTEN_FDS`, once per process (the variables are removed); none without
    /// socket activation. A descriptor that is not a listening TCP socket is said and left.
    pub fn from_env() -> Self {
        let names: Vec<String> = std::env::var("LISTEN_FDNAMES")
            .unwrap_or_default()
            .split(':')
            .map(str::to_string)
            .collect();
        let mut fds = listenfd::ListenFd::from_env();
        let mut sockets = Vec::new();
        for i in 0..fds.len() {
            let name = names.get(i).cloned().unwrap_or_default();
            match fds.take_tcp_listener(i) {
                Ok(Some(l)) => sockets.push((name, l)),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(fd = i + 3, name, error = %e, "an inherited descriptor is not a TCP listener; left alone")
                }
            }
        }
        Self { sockets }
    }

    /// The socket for the listener `name` (`listen`, `admin` or `app-NAME`) configured at
    /// `addr`: the one of that name, else the one bound to that address.
    pub fn take(&mut self, name: &str, addr: SocketAddr) -> Option<TcpListener> {
        let at = self
            .sockets
            .iter()
            .position(|(n, _)| n == name)
            .or_else(|| {
                self.sockets
                    .iter()
                    .position(|(_, l)| l.local_addr().is_ok_and(|a| a == addr))
            })?;
        Some(self.sockets.swap_remove(at).1)
    }

    /// Names (or addresses) of the sockets no listener took.
    pub fn unused(&self) -> Vec<String> {
        self.sockets
            .iter()
            .map(|(n, l)| match l.local_addr() {
                Ok(a) => format!("{n} ({a})"),
                Err(_) => n.clone(),
            })
            .collect()
    }
}
