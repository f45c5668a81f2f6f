//! `limits`: how much a backend may send and how many requests may wait.

use serde::Deserialize;

use super::error::Problem;

/// Limits on requests from backends.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest request body accepted, in bytes (413 beyond).
    #[serde(default = "default_body_limit")]
    pub max_request_body_bytes: usize,
    /// Largest request head accepted, in bytes (431 beyond). Read at start only.
    #[serde(default = "default_header_limit")]
    pub max_header_bytes: usize,
    /// Open backend connections at most; further ones wait in the kernel's accept queue.
    /// Each HTTP/1 connection holds two file descriptors (see `LimitNOFILE` under systemd).
    /// Read at start only.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Requests in flight to the upstream at most; beyond it: 503 with Retry-After.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Per-caller token bucket (caller identity with mTLS, else client IP); none when absent.
    #[serde(default)]
    pub rate_limit: Option<RateLimitConfig>,
}

/// A token bucket.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Sustained requests per second.
    pub per_second: u32,
    /// Requests allowed in a burst.
    pub burst: u32,
}

/// The smallest `max_header_bytes`: hyper's HTTP/1 read buffer cannot be smaller.
const MIN_HEADER_BYTES: usize = 8192;

fn default_body_limit() -> usize {
    64 * 1024
}
fn default_header_limit() -> usize {
    16 * 1024
}
fn default_max_connections() -> usize {
    20_000
}
pub(super) fn default_max_in_flight() -> usize {
    1_024
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_request_body_bytes: default_body_limit(),
            max_header_bytes: default_header_limit(),
            max_connections: default_max_connections(),
            max_in_flight: default_max_in_flight(),
            rate_limit: None,
        }
    }
}

impl LimitsConfig {
    /// Problems with their field paths.
    pub(super) fn problems(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        for (field, v) in [
            ("limits.max_request_body_bytes", self.max_request_body_bytes),
            ("limits.max_header_bytes", self.max_header_bytes),
            ("limits.max_connections", self.max_connections),
            ("limits.max_in_flight", self.max_in_flight),
        ] {
            if v == 0 {
                out.push(Problem::new(field, "must be greater than 0"));
            }
        }
        if self.max_header_bytes < MIN_HEADER_BYTES {
            out.push(Problem::new(
                "limits.max_header_bytes",
                format!(
                    "{} is below the smallest supported value, {MIN_HEADER_BYTES}",
                    self.max_header_bytes
                ),
            ));
        }
        if let Some(rl) = &self.rate_limit {
            if rl.per_second == 0 || rl.burst == 0 {
                out.push(Problem::new(
                    "limits.rate_limit",
                    "per_second and burst must be greater than 0",
                ));
            }
        }
        out
    }
}
