//! The upstream side of the data path: pooled connections, stream limits, HTTP/1.1
//! upstreams, recycled and idle connections, and failures that are 502 or 504 in bounded time.

use crate::common;

use std::time::{Duration, Instant};

use common::{closed_port, get_metrics, json, metric, v3, v4, Env};
use http::StatusCode;

#[tokio::test]
async fn pool_reuses_connections() {
    let (_env, mock, proxy) = common::proxied("").await;
    for _ in 0..100 {
        let (status, _, _) = v3(proxy.addr).await;
        assert_eq!(status, StatusCode::OK);
    }
    let (requests, handshakes) = proxy.state.current.load().apps[0].upstream_counts();
    assert_eq!(requests, 100);
    // One pooled connection per worker thread at most.
    let workers = amity_mtls_proxy::data::workers::resolve(0) as u64;
    assert!(
        handshakes <= workers,
        "{handshakes} handshakes for 100 requests and {workers} workers"
    );
    assert_eq!(
        common::handshakes_seen(&mock),
        handshakes,
        "the stand-in counted the same handshakes"
    );
    // The stand-in offers h2 by ALPN, so the pool speaks HTTP/2 to it.
    assert!(mock.observed.requests().iter().all(|s| s.http2));
}

/// A slow upstream that allows few streams per connection must not cap the calls in flight
/// at that limit: while every connection is full, the worker opens another.
#[tokio::test]
async fn calls_beyond_the_upstreams_stream_limit_go_out_on_more_connections() {
    let (_env, mock, proxy) =
        common::proxied_with(|o| o.max_concurrent_streams = Some(4), "workers: 1\n").await;
    // The first connection, with the stand-in's SETTINGS read.
    assert_eq!(v3(proxy.addr).await.0, StatusCode::OK);
    // Long enough for all 12 to be sent, with two more handshakes, before the first answer.
    mock.set_delay(Duration::from_secs(3));
    let calls: Vec<_> = (0..12).map(|_| tokio::spawn(v3(proxy.addr))).collect();
    for call in calls {
        assert_eq!(call.await.unwrap().0, StatusCode::OK);
    }
    assert_eq!(
        mock.observed
            .peak_in_flight
            .load(std::sync::atomic::Ordering::Relaxed),
        12,
        "the stand-in answered all 12 calls at once"
    );
    assert_eq!(
        common::handshakes_seen(&mock),
        3,
        "12 streams at once, 4 allowed per connection"
    );
}

#[tokio::test]
async fn calls_queue_on_a_full_connection_when_the_upstream_takes_no_other() {
    let (_env, mock, proxy) = common::proxied_with(
        |o| {
            o.max_concurrent_streams = Some(2);
            o.max_connections = Some(1);
        },
        "workers: 1\n",
    )
    .await;
    assert_eq!(v3(proxy.addr).await.0, StatusCode::OK);
    mock.set_delay(Duration::from_millis(300));
    let calls: Vec<_> = (0..6).map(|_| tokio::spawn(v3(proxy.addr))).collect();
    for call in calls {
        assert_eq!(call.await.unwrap().0, StatusCode::OK);
    }
    let seen = |n: &std::sync::atomic::AtomicU64| n.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(
        seen(&mock.observed.peak_in_flight),
        2,
        "two streams at a time"
    );
    assert_eq!(common::handshakes_seen(&mock), 1);
    // One attempt at another connection; the calls after it queue without trying again.
    assert_eq!(
        seen(&mock.observed.turned_away),
        1,
        "connections turned away"
    );
    // Counted once, as what it was: the upstream closed the connection in the handshake.
    let m = get_metrics(proxy.admin_addr).await;
    let failures: Vec<_> = m
        .samples
        .iter()
        .filter(|s| s.metric == "amity_proxy_upstream_handshake_failures_total")
        .map(|s| s.labels.get("reason").unwrap_or_default())
        .collect();
    assert_eq!(failures, ["upstream_connect_failed"]);
    assert_eq!(
        metric(
            &m,
            "amity_proxy_upstream_handshake_failures_total",
            &[("reason", "upstream_connect_failed")]
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn an_upstream_without_http2_is_served_over_pooled_http1() {
    let (_env, mock, proxy) = common::proxied_with(|o| o.http1_only = true, "").await;
    for _ in 0..20 {
        let (status, _, _) = v3(proxy.addr).await;
        assert_eq!(status, StatusCode::OK);
    }
    let (status, _, body) = v4(proxy.addr, "alice").await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let seen = mock.observed.requests();
    assert_eq!(seen.len(), 21);
    assert!(seen.iter().all(|s| !s.http2), "all over HTTP/1.1");
    // The first connection learns the ALPN choice; then one pooled connection per worker.
    let workers = amity_mtls_proxy::data::workers::resolve(0) as u64;
    let handshakes = proxy.state.current.load().apps[0].upstream_counts().1;
    assert!(
        handshakes <= workers + 1,
        "{handshakes} handshakes for 21 sequential requests and {workers} workers"
    );
    proxy.shutdown().await;
    mock.shutdown().await;
}

#[tokio::test]
async fn connections_the_upstream_closes_lose_no_request() {
    // Like nginx's keepalive_requests: GOAWAY after every 5 requests on a connection.
    let (_env, mock, proxy) = common::proxied_with(|o| o.max_requests_per_connection = 5, "").await;
    let addr = proxy.addr;
    let mut callers = tokio::task::JoinSet::new();
    for _ in 0..8 {
        callers.spawn(async move {
            let mut statuses = Vec::new();
            for _ in 0..25 {
                statuses.push(v3(addr).await.0);
            }
            statuses
        });
    }
    let mut answered = 0;
    while let Some(statuses) = callers.join_next().await {
        for status in statuses.unwrap() {
            assert_eq!(status, StatusCode::OK);
            answered += 1;
        }
    }
    assert_eq!(answered, 200);
    let handshakes = common::handshakes_seen(&mock);
    // A connection takes 5 requests, and up to 7 more already in flight from the other callers
    // when its GOAWAY comes: 200 requests took at least 17.
    assert!(
        handshakes >= 200 / 12,
        "the stand-in closed its connections ({handshakes} handshakes for 200 requests)"
    );
    proxy.shutdown().await;
    mock.shutdown().await;
}

#[tokio::test]
async fn an_idle_upstream_connection_is_let_go_after_the_idle_timeout() {
    let env = Env::new();
    env.client_cert("backend-a");
    let mock = env.mock(Duration::ZERO).await;
    let mut v = env.config(mock.addr, &["backend-a"], "");
    // Long enough that the second call, made right after the first, finds the connection.
    v.apps[0].upstream_config.pool_idle_timeout_ms = 1000;
    // One worker: one upstream connection whatever thread accepts the calls.
    v.config.workers = 1;
    let proxy = env.proxy(&v).await;
    let handshakes = || common::handshakes_seen(&mock);
    assert_eq!(v3(proxy.addr).await.0, StatusCode::OK);
    assert_eq!(v3(proxy.addr).await.0, StatusCode::OK);
    assert_eq!(handshakes(), 1, "the second request reused the connection");
    // Let go between one and two idle timeouts after the last request.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(v3(proxy.addr).await.0, StatusCode::OK);
    assert_eq!(handshakes(), 2, "the idle connection was replaced");
    proxy.shutdown().await;
    mock.shutdown().await;
}

#[tokio::test]
async fn upstream_down_is_502_fast() {
    let env = Env::new();
    env.client_cert("backend-a");
    let proxy = env
        .proxy(&env.config(closed_port(), &["backend-a"], ""))
        .await;
    let t = Instant::now();
    let (status, _, body) = v3(proxy.addr).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "took {:?}",
        t.elapsed()
    );
    let v = json(&body);
    assert_eq!(v["data"]["reason"], "upstream_refused");
    assert!(v["message"]
        .as_str()
        .unwrap()
        .contains("refused the connection"));
}

#[tokio::test]
async fn an_upstream_closing_in_the_handshake_is_a_connection_failure() {
    let (_env, mock, proxy) = common::proxied_with(|o| o.max_connections = Some(0), "").await;
    let (status, _, body) = v3(proxy.addr).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    let v = json(&body);
    assert_eq!(v["data"]["reason"], "upstream_connect_failed");
    let message = v["message"].as_str().unwrap();
    assert!(
        message.contains(&mock.addr.to_string()) && message.contains("tls handshake eof"),
        "{message}"
    );
    let m = get_metrics(proxy.admin_addr).await;
    assert!(
        metric(
            &m,
            "amity_proxy_upstream_handshake_failures_total",
            &[("reason", "upstream_connect_failed")]
        )
        .is_some_and(|n| n >= 1.0),
        "counted as a failed handshake"
    );
}

#[tokio::test]
async fn upstream_stall_is_504_within_the_timeout() {
    let env = Env::new();
    env.client_cert("backend-a");
    let mock = env.mock(Duration::from_secs(5)).await;
    let v = env.config(mock.addr, &["backend-a"], "timeouts:\n  response_ms: 400\n");
    let proxy = env.proxy(&v).await;
    let t = Instant::now();
    let (status, _, body) = v3(proxy.addr).await;
    let took = t.elapsed();
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_millis(1500),
        "took {took:?}"
    );
    assert_eq!(json(&body)["data"]["reason"], "upstream_response_timeout");
    let message = json(&body)["message"].as_str().unwrap().to_string();
    assert!(
        message.contains("400 ms (timeouts.response_ms)"),
        "{message}"
    );
}

#[tokio::test]
async fn a_silent_upstream_handshake_is_bounded() {
    let env = Env::new();
    env.client_cert("backend-a");
    // Accepts TCP and never answers the TLS ClientHello.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let v = env.config(
        addr,
        &["backend-a"],
        "timeouts:\n  handshake_ms: 300\n  connect_ms: 300\n",
    );
    let proxy = env.proxy(&v).await;
    let t = Instant::now();
    let (status, _, body) = v3(proxy.addr).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "took {:?}",
        t.elapsed()
    );
    assert_eq!(json(&body)["data"]["reason"], "upstream_handshake_timeout");
    hold.abort();
}

/// An upstream certificate that does not verify (a TLS-inspecting middlebox) will not verify on
/// another connection either: one handshake per call, not two.
#[tokio::test]
async fn an_untrusted_upstream_certificate_is_not_tried_twice() {
    let env = Env::new();
    env.client_cert("backend-a");
    let mock = env.mock(Duration::ZERO).await;
    let (other_dir, _other) = common::foreign_ca();
    let (other_ca, _) = amity_mtls_proxy::model::pki::DevCa::paths(other_dir.path());
    let v = env.config(mock.addr, &["backend-a"], "");
    let text = std::fs::read_to_string(&v.path).unwrap().replace(
        "ca: certs/dev-ca.crt",
        &format!("ca: {}", other_ca.display()),
    );
    let proxy = env.proxy(&env.config_text(&text)).await;
    for _ in 0..3 {
        let (status, _, body) = v3(proxy.addr).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY);
        assert_eq!(json(&body)["data"]["reason"], "upstream_cert_untrusted");
    }
    let m = get_metrics(proxy.admin_addr).await;
    assert_eq!(
        metric(
            &m,
            "amity_proxy_upstream_handshake_failures_total",
            &[("reason", "upstream_cert_untrusted")]
        ),
        Some(3.0),
        "one handshake per call"
    );
    assert_eq!(proxy.state.current.load().apps[0].upstream_counts().1, 3);
}

/// The connection on which an HTTP/1.1-only upstream answers ALPN serves the first call: one
/// handshake, after the start and after each reload.
#[tokio::test]
async fn the_connection_that_learns_http1_serves_the_first_call() {
    let (_env, mock, proxy) = common::proxied_with(|o| o.http1_only = true, "workers: 1\n").await;
    for _ in 0..3 {
        assert_eq!(v3(proxy.addr).await.0, StatusCode::OK);
    }
    assert_eq!(proxy.state.current.load().apps[0].upstream_counts().1, 1);
    assert_eq!(common::handshakes_seen(&mock), 1);
    let (status, _, body) = common::call(proxy.admin_addr, http::Method::POST, "/reload", &[], "")
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert_eq!(v3(proxy.addr).await.0, StatusCode::OK);
    // The app's counters go on across generations.
    assert_eq!(proxy.state.current.load().apps[0].upstream_counts().1, 2);
    assert_eq!(common::handshakes_seen(&mock), 2);
    proxy.shutdown().await;
    mock.shutdown().await;
}
