//! How many backend connections the open-file limit has room for. Each HTTP/1 backend
//! connection holds two descriptors (the second watches for a caller hanging up), and the admin
//! listener, the upstream connections and the files need theirs: backend connections are held
//! back first (they wait in the kernel's accept queue), so that `/healthz` and `/metrics` still
//! answer when the fleet holds as many connections as it may.

/// Descriptors per backend connection, at most.
const PER_CONNECTION: u64 = 2;

/// `max_connections`, or fewer when the open-file limit `nofile` leaves room for fewer; with
/// the reason when fewer.
pub fn connection_cap(max_connections: usize, nofile: u64) -> (usize, Option<String>) {
    // Kept for the admin listener, upstream connections, the audit file, logs and reloads.
    let reserve = (nofile / 8).clamp(32, 1024);
    let room = (nofile.saturating_sub(reserve) / PER_CONNECTION).max(1);
    match (max_connections as u64) <= room {
        true => (max_connections, None),
        false => (
            room as usize,
            Some(format!(
                "the open-file limit ({nofile}) has room for {room} backend connections at {PER_CONNECTION} descriptors each, with {reserve} kept for the admin listener, upstream connections and files; accepting at most {room} (limits.max_connections: {max_connections}); raise LimitNOFILE or --ulimit nofile for more"
            )),
        ),
    }
}

/// The soft open-file limit now.
pub fn nofile() -> u64 {
    rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(u64::MAX, |(soft, _)| soft)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_connections_leave_descriptors_for_the_rest() {
        assert_eq!(connection_cap(100, 1_048_576), (100, None));
        let (cap, why) = connection_cap(20_000, 1024);
        assert_eq!(cap, (1024 - 128) / 2);
        assert!(why.unwrap().contains("accepting at most 448"));
        // A tiny limit still serves, and keeps its reserve.
        assert_eq!(connection_cap(20_000, 256).0, (256 - 32) / 2);
        assert_eq!(connection_cap(20_000, 10).0, 1);
    }
}
