//! Header rules: hop-by-hop headers never pass, and every request carries an id.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::LazyLock;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Header carrying the request id both ways.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

// Statics, so that `inject` can lend either secret's name; a name given as a string would be
// parsed at every lookup.
pub(super) static X_SERVER_KEY: HeaderName = HeaderName::from_static("x-server-key");
pub(super) static X_ADMIN_TOKEN: HeaderName = HeaderName::from_static("x-admin-token");
pub(super) static AUTHORIZATION: HeaderName = header::AUTHORIZATION;

/// Hop-by-hop headers (RFC 9110 section 7.6.1) plus the legacy ones proxies also drop.
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
    header::PROXY_AUTHENTICATE,
];

/// Removes hop-by-hop headers, including those `Connection` names.
pub fn strip_hop_by_hop(h: &mut HeaderMap) {
    // Most requests carry none: one pass over the names instead of ten removals by hash
    // (measured: benches/README.md, "Hop-by-hop headers").
    if !h.keys().any(|n| HOP_BY_HOP.contains(n)) {
        return;
    }
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    // A message with both is framed by Transfer-Encoding (RFC 9112 section 6.3); the length
    // is stale once the chunked coding is removed, and passed on it would misframe the body.
    if h.contains_key(header::TRANSFER_ENCODING) {
        h.remove(header::CONTENT_LENGTH);
    }
    for n in named.iter().chain(HOP_BY_HOP.iter()) {
        h.remove(n);
    }
}

/// The caller's `x-request-id` when it is sane, else a new one: 24 hex digits, a random
/// prefix drawn once per process and a counter, unique without a random draw per request.
pub(super) fn request_id(h: &HeaderMap) -> HeaderValue {
    if let Some(v) = h.get(&REQUEST_ID) {
        if !v.is_empty() && v.len() <= 128 && v.as_bytes().iter().all(u8::is_ascii_graphic) {
            return v.clone();
        }
    }
    static PREFIX: LazyLock<String> = LazyLock::new(|| {
        let mut b = [0u8; 8];
        let _ = aws_lc_rs::rand::fill(&mut b);
        b.iter().map(|byte| format!("{byte:02x}")).collect()
    });
    static NEXT: AtomicU64 = AtomicU64::new(0);
    // 8 hex digits of the counter: it wraps after 2^32 ids, well past any request's lifetime.
    let n = NEXT.fetch_add(1, Ordering::Relaxed) as u32;
    HeaderValue::from_str(&format!("{}{n:08x}", *PREFIX))
        .unwrap_or_else(|_| HeaderValue::from_static("-"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_request_ids_are_distinct_across_threads() {
        let make = || {
            (0..1000)
                .map(|_| request_id(&HeaderMap::new()))
                .collect::<Vec<_>>()
        };
        let other = std::thread::spawn(make).join().unwrap();
        let mut all: Vec<HeaderValue> = make();
        all.extend(other);
        assert!(all
            .iter()
            .all(|v| v.len() == 24 && v.as_bytes().iter().all(u8::is_ascii_hexdigit)));
        let distinct: std::collections::HashSet<&[u8]> = all.iter().map(|v| v.as_bytes()).collect();
        assert_eq!(distinct.len(), 2000);
        let mut kept = HeaderMap::new();
        kept.insert(REQUEST_ID, HeaderValue::from_static("req-1"));
        assert_eq!(request_id(&kept), "req-1");
    }

    #[test]
    fn hop_by_hop_headers_are_dropped() {
        let mut h = HeaderMap::new();
        h.insert("connection", "close, x-secret-hop".parse().unwrap());
        h.insert("x-secret-hop", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("te", "trailers".parse().unwrap());
        h.insert("x-server-key", "k".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-server-key"));
    }

    #[test]
    fn a_length_beside_chunked_coding_is_dropped_with_it() {
        let mut h = HeaderMap::new();
        h.insert("content-length", "100".parse().unwrap());
        h.insert("transfer-encoding", "chunked".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert!(h.is_empty(), "{h:?}");
        let mut h = HeaderMap::new();
        h.insert("content-length", "100".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h["content-length"], "100", "a length alone stays");
    }
}
