//! `timeouts`: a bound on every wait. The fields keep their `_ms` names (they are what
//! users write); code reads them as [`Duration`]s.

use std::time::Duration;

use serde::Deserialize;

use super::error::Problem;

/// Timeouts, all in milliseconds.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsConfig {
    /// TCP connect to the upstream.
    #[serde(default = "default_connect_ms")]
    pub connect_ms: u64,
    /// TLS handshake with the upstream.
    #[serde(default = "default_handshake_ms")]
    pub handshake_ms: u64,
    /// From forwarding a request to receiving the response head, connecting included
    /// when no pooled connection is free.
    #[serde(default = "default_response_ms")]
    pub response_ms: u64,
    /// The longest an upstream may leave a response body without data once its head came;
    /// then its stream is reset and the backend's response ends with an error.
    #[serde(default = "default_upstream_body_gap_ms")]
    pub upstream_body_gap_ms: u64,
    /// Time a backend has to send a complete HTTP/1 request head from its first byte, and
    /// then the request body (HTTP/1 and HTTP/2). The wait before a head is `idle_ms`.
    /// The head bound is read at start only; the body bound reloads.
    #[serde(default = "default_header_read_ms")]
    pub header_read_ms: u64,
    /// A backend connection with no traffic and no request in flight for this long is
    /// closed. Read at start only.
    #[serde(default = "default_idle_ms")]
    pub idle_ms: u64,
    /// A response body the backend does not take for this long (an HTTP/2 caller that keeps
    /// its window closed, an HTTP/1 caller that does not read) is dropped: its upstream stream
    /// is reset, freeing the upstream connection's window, and the backend connection is
    /// closed once its other requests are done. Read at start only.
    #[serde(default = "default_send_ms")]
    pub send_ms: u64,
    /// TLS handshake with a backend (with `inbound_tls`). Read at start only.
    #[serde(default = "default_inbound_handshake_ms")]
    pub inbound_handshake_ms: u64,
    /// On SIGTERM/SIGINT, how long in-flight requests may take to finish. Read at start only.
    #[serde(default = "default_grace_ms")]
    pub shutdown_grace_ms: u64,
}

fn default_connect_ms() -> u64 {
    3_000
}
fn default_handshake_ms() -> u64 {
    5_000
}
fn default_response_ms() -> u64 {
    15_000
}
fn default_upstream_body_gap_ms() -> u64 {
    10_000
}
fn default_header_read_ms() -> u64 {
    10_000
}
fn default_idle_ms() -> u64 {
    60_000
}
fn default_send_ms() -> u64 {
    10_000
}
fn default_inbound_handshake_ms() -> u64 {
    5_000
}
fn default_grace_ms() -> u64 {
    10_000
}

impl Default for TimeoutsConfig {
    fn default() -> Self {
        Self {
            connect_ms: default_connect_ms(),
            handshake_ms: default_handshake_ms(),
            response_ms: default_response_ms(),
            upstream_body_gap_ms: default_upstream_body_gap_ms(),
            header_read_ms: default_header_read_ms(),
            idle_ms: default_idle_ms(),
            send_ms: default_send_ms(),
            inbound_handshake_ms: default_inbound_handshake_ms(),
            shutdown_grace_ms: default_grace_ms(),
        }
    }
}

impl TimeoutsConfig {
    /// TCP connect bound.
    pub fn connect(&self) -> Duration {
        Duration::from_millis(self.connect_ms)
    }
    /// TLS handshake bound.
    pub fn handshake(&self) -> Duration {
        Duration::from_millis(self.handshake_ms)
    }
    /// Response head bound.
    pub fn response(&self) -> Duration {
        Duration::from_millis(self.response_ms)
    }
    /// Bound on a gap in an upstream response body.
    pub fn upstream_body_gap(&self) -> Duration {
        Duration::from_millis(self.upstream_body_gap_ms)
    }
    /// Request head read bound.
    pub fn header_read(&self) -> Duration {
        Duration::from_millis(self.header_read_ms)
    }
    /// Idle backend connection bound.
    pub fn idle(&self) -> Duration {
        Duration::from_millis(self.idle_ms)
    }
    /// Bound on a response body the backend does not take.
    pub fn send(&self) -> Duration {
        Duration::from_millis(self.send_ms)
    }
    /// Inbound TLS handshake bound.
    pub fn inbound_handshake(&self) -> Duration {
        Duration::from_millis(self.inbound_handshake_ms)
    }
    /// Graceful shutdown bound.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }

    /// Every bound, with its field path.
    fn fields(&self) -> [(&'static str, u64); 9] {
        [
            ("timeouts.connect_ms", self.connect_ms),
            ("timeouts.handshake_ms", self.handshake_ms),
            ("timeouts.response_ms", self.response_ms),
            ("timeouts.upstream_body_gap_ms", self.upstream_body_gap_ms),
            ("timeouts.header_read_ms", self.header_read_ms),
            ("timeouts.idle_ms", self.idle_ms),
            ("timeouts.send_ms", self.send_ms),
            ("timeouts.inbound_handshake_ms", self.inbound_handshake_ms),
            ("timeouts.shutdown_grace_ms", self.shutdown_grace_ms),
        ]
    }

    /// Problems with their field paths: every bound but the grace period must be above 0, and
    /// none may pass [`MAX_MS`].
    pub(super) fn problems(&self) -> Vec<Problem> {
        let fields = self.fields();
        let mut out: Vec<Problem> = fields
            .iter()
            .filter(|(field, v)| *v == 0 && *field != "timeouts.shutdown_grace_ms")
            .map(|(field, _)| Problem::new(*field, "must be greater than 0"))
            .collect();
        out.extend(too_long(&fields));
        out
    }
}

/// The longest bound any duration field takes: a day. Longer ones would be no bound at all, and
/// far longer ones would overflow the clock.
pub const MAX_MS: u64 = 86_400_000;

/// Problems for the fields of `fields` past [`MAX_MS`].
pub(super) fn too_long(fields: &[(&str, u64)]) -> Vec<Problem> {
    fields
        .iter()
        .filter(|(_, v)| *v > MAX_MS)
        .map(|(field, v)| Problem::new(*field, format!("{v} ms is over a day; at most {MAX_MS}")))
        .collect()
}
