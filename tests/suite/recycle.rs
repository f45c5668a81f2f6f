//! An upstream that recycles its connections: it closes them after a quiet spell (nginx's
//! `keepalive_timeout`, a cloud load balancer's idle timeout) and after a number of requests
//! (nginx's `keepalive_requests`), with GOAWAY. No request may fail for it.

use crate::common;

use std::time::Duration;

use http::StatusCode;

use common::v3;

/// Sends `calls` token calls from `callers` concurrent backends; returns the answers that
/// were not 200.
async fn burst(addr: std::net::SocketAddr, callers: usize, calls: usize) -> Vec<String> {
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..callers {
        set.spawn(async move {
            let mut failed = Vec::new();
            for _ in 0..calls {
                let (status, _, body) = v3(addr).await;
                if status != StatusCode::OK {
                    failed.push(format!("{status}: {}", String::from_utf8_lossy(&body)));
                }
            }
            failed
        });
    }
    let mut failed = Vec::new();
    while let Some(f) = set.join_next().await {
        failed.extend(f.unwrap());
    }
    failed
}

#[tokio::test]
async fn an_upstream_that_recycles_its_connections_fails_no_request() {
    let env = common::Env::new();
    env.client_cert("backend-a");
    let mock = env
        .mock_with(|o| {
            // Few streams per connection and a slow answer: each worker opens several.
            o.max_concurrent_streams = Some(4);
            o.delay = Duration::from_millis(30);
            o.max_requests_per_connection = 60;
            o.idle_timeout = Some(Duration::from_millis(400));
        })
        .await;
    let mut v = env.config(mock.addr, &["backend-a"], "workers: 2\n");
    // Far longer than the upstream's, as a default is against a server that closes sooner.
    v.apps[0].upstream_config.pool_idle_timeout_ms = 60_000;
    let proxy = env.proxy(&v).await;
    let first = burst(proxy.addr, 48, 8).await;
    let after_first = common::handshakes_seen(&mock);
    assert!(
        after_first >= 4,
        "several upstream connections were opened ({after_first})"
    );
    // Every connection the burst left open is closed by the upstream meanwhile.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let lone = v3(proxy.addr).await.0;
    let second = burst(proxy.addr, 48, 8).await;
    assert_eq!(first, Vec::<String>::new(), "failed in the first burst");
    assert_eq!(lone, StatusCode::OK, "the first call after an idle gap");
    assert_eq!(second, Vec::<String>::new(), "failed in the second burst");
    assert!(
        common::handshakes_seen(&mock) > after_first,
        "the upstream's closing was seen"
    );
    proxy.shutdown().await;
    mock.shutdown().await;
}
