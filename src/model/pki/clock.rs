//! The time, as certificates count it: unix seconds, shown as RFC 3339.

use time::OffsetDateTime;

/// Seconds since the epoch, now.
pub fn now_unix() -> i64 {
    // Called per request (certificate expiry): seconds only, no calendar arithmetic.
    match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(before) => -(before.duration().as_secs() as i64),
    }
}

/// RFC 3339 text for a unix time.
pub fn rfc3339(t: i64) -> String {
    OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| t.to_string())
}
