//! The data path end to end: proxy and stand-in Amity on loopback, certificates made at test time.

mod common;

use std::time::{Duration, Instant};

use amity_mtls_proxy::data::conn::PARK_AFTER;
use amity_mtls_proxy::model::pki::Validity;
use amity_mtls_proxy::process::server;
use bytes::Bytes;
use common::call;
use common::{
    closed_port, foreign_ca, get_metrics, json, metric, v3, v4, Env, ADMIN_TOKEN, SERVER_KEY, V3,
};
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};

#[tokio::test]
async fn token_and_admin_calls_pass_end_to_end() {
    let env = Env::new();
    let serial = env.client_cert("backend-a");
    let mock = env.mock(Duration::ZERO).await;
    let v = env.config(mock.addr, &["backend-a"], "");
    let proxy = env.proxy(&v).await;

    let (status, headers, body) = call(
        proxy.addr,
        Method::GET,
        V3,
        &[
            ("x-server-key", SERVER_KEY),
            ("x-request-id", "req-123"),
            ("connection", "x-hop"),
            ("x-hop", "must-not-pass"),
        ],
        "",
    )
    .await
    .unwrap();
    assert_eq!(status, StatusCode::OK);
    let token: String = serde_json::from_slice(&body).expect("v3 body is a JSON string");
    assert!(token.len() >= 16);
    assert_eq!(headers["x-request-id"], "req-123");

    let (status, _, body) = v4(proxy.addr, "alice").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.len() > 16);

    let bearer = format!("Bearer {ADMIN_TOKEN}");
    let (status, _, body) = call(
        proxy.addr,
        Method::GET,
        "/api/v3/users",
        &[("authorization", &bearer)],
        "",
    )
    .await
    .unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json(&body)["users"][0]["userId"], "mock-user-1");
    let (status, _, _) = call(
        proxy.addr,
        Method::GET,
        "/api/v3/users",
        &[("x-admin-token", ADMIN_TOKEN)],
        "",
    )
    .await
    .unwrap();
    assert_eq!(status, StatusCode::OK);

    let seen = mock.observed.requests();
    assert_eq!(seen.len(), 4);
    for s in &seen {
        assert_eq!(
            s.client_serial, serial,
            "the configured certificate was presented"
        );
        assert_eq!(s.client_subject, "CN=backend-a");
        assert_eq!(s.authority, mock.addr.to_string(), "Host is the upstream's");
        assert!(
            !s.headers.contains_key("x-hop"),
            "a header named in Connection was forwarded"
        );
        assert!(!s.headers.contains_key("connection"));
    }
    assert_eq!(seen[0].headers["x-request-id"], "req-123");
    assert!(
        seen[1].headers.contains_key("x-request-id"),
        "a request id is generated when absent"
    );
    proxy.shutdown().await;
    mock.shutdown().await;
}

#[tokio::test]
async fn amity_errors_pass_through_unchanged() {
    let (_env, _mock, proxy) = common::proxied("").await;
    let (status, _, body) = call(
        proxy.addr,
        Method::GET,
        V3,
        &[("x-server-key", "wrong")],
        "",
    )
    .await
    .unwrap();
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        json(&body),
        serde_json::json!({"status":"error","code":400300,"message":"Forbidden error."})
    );
    let (status, _, body) = call(
        proxy.addr,
        Method::POST,
        "/api/v4/authentication/token",
        &[],
        r#"{"userId":"a"}"#,
    )
    .await
    .unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(&body[..], b"Unauthorized");
}

#[tokio::test]
async fn denied_calls_never_leave_the_machine() {
    let (_env, mock, proxy) = common::proxied("").await;
    for (method, path, headers) in [
        (Method::GET, "/api/v3/channels", vec![]),
        (Method::POST, "/api/v3/sessions", vec![]),
        (
            Method::GET,
            "/api/v4/authentication/token",
            vec![("x-server-key", SERVER_KEY)],
        ),
        (Method::GET, "/admin", vec![("authorization", "Bearer x")]),
    ] {
        let (status, headers_out, body) = call(proxy.addr, method.clone(), path, &headers, "")
            .await
            .unwrap();
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}");
        assert_eq!(headers_out["content-type"], "application/json");
        let v = json(&body);
        assert_eq!(v["status"], "error");
        assert_eq!(v["code"], 900403);
        assert!(v["message"]
            .as_str()
            .unwrap()
            .starts_with("amity-mtls-proxy:"));
    }
    let (status, _, _) = call(
        proxy.addr,
        Method::GET,
        "/api/v3/authentication/token",
        &[],
        "",
    )
    .await
    .unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST, "v3 without userId");
    assert!(mock.observed.requests().is_empty());
    assert_eq!(common::handshakes_seen(&mock), 0);
    assert_eq!(proxy.state.metrics.handshakes(), 0);
}

async fn expect_cert_rejection(
    v: amity_mtls_proxy::model::config::Validated,
    mock: &amity_mtls_proxy::tools::mock::MockHandle,
    needle: &str,
) {
    let env_proxy = common::proxy(&v).await;
    let (status, _, body) = v3(env_proxy.addr).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    let v = json(&body);
    let msg = v["message"].as_str().unwrap();
    assert!(
        msg.contains("upstream rejected our client certificate"),
        "{msg}"
    );
    assert!(msg.contains(needle), "{msg}");
    assert_eq!(v["data"]["reason"], "client_cert_rejected");
    assert!(
        mock.observed.requests().is_empty(),
        "the stand-in served a request without a valid cert"
    );
    // One handshake failure is retried once on a new connection, no more.
    assert_eq!(env_proxy.state.metrics.handshakes(), 2);
    assert_eq!(
        mock.observed
            .rejected_handshakes
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
    env_proxy.shutdown().await;
}

#[tokio::test]
async fn no_client_cert_is_refused_by_amity_and_reported() {
    let env = Env::new();
    let mock = env.mock(Duration::ZERO).await;
    let v = env.config(mock.addr, &[], "");
    expect_cert_rejection(v, &mock, "no client certificate is configured").await;
}

#[tokio::test]
async fn foreign_ca_cert_is_refused_by_amity_and_reported() {
    let env = Env::new();
    let (_d, other) = foreign_ca();
    env.client_cert_from(&other, "foreign", Validity::days_from_now(30));
    let mock = env.mock(Duration::ZERO).await;
    let v = env.config(mock.addr, &["foreign"], "");
    expect_cert_rejection(v, &mock, "\"foreign\" was presented").await;
}

#[tokio::test]
async fn pool_reuses_connections() {
    let (_env, mock, proxy) = common::proxied("").await;
    for _ in 0..100 {
        let (status, _, _) = v3(proxy.addr).await;
        assert_eq!(status, StatusCode::OK);
    }
    let stats = &proxy.state.metrics;
    assert_eq!(stats.requests(), 100);
    // One pooled connection per worker thread at most.
    let workers = amity_mtls_proxy::data::workers::resolve(0) as u64;
    assert!(
        stats.handshakes() <= workers,
        "{} handshakes for 100 requests and {workers} workers",
        stats.handshakes()
    );
    assert_eq!(
        common::handshakes_seen(&mock),
        stats.handshakes(),
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
    mock.set_delay(Duration::from_secs(1));
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
    let handshakes = proxy.state.metrics.handshakes();
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
    assert!(
        handshakes > 10,
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
    v.config.upstream.pool_idle_timeout_ms = 100;
    // One worker: one upstream connection whatever thread accepts the calls.
    v.config.workers = 1;
    let proxy = env.proxy(&v).await;
    let handshakes = || common::handshakes_seen(&mock);
    assert_eq!(v3(proxy.addr).await.0, StatusCode::OK);
    assert_eq!(v3(proxy.addr).await.0, StatusCode::OK);
    assert_eq!(handshakes(), 1, "the second request reused the connection");
    // Let go between one and two idle timeouts after the last request.
    tokio::time::sleep(Duration::from_millis(500)).await;
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
        t.elapsed() < Duration::from_secs(1),
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

#[tokio::test]
async fn body_and_header_limits() {
    let env = Env::new();
    env.client_cert("backend-a");
    let mock = env.mock(Duration::ZERO).await;
    let proxy = env
        .proxy(&env.config(
            mock.addr,
            &["backend-a"],
            "limits:\n  max_request_body_bytes: 1024\n",
        ))
        .await;
    let big = format!(r#"{{"userId":"{}"}}"#, "x".repeat(2000));
    let (status, _, body) = call(
        proxy.addr,
        Method::POST,
        "/api/v4/authentication/token",
        &[("x-server-key", SERVER_KEY)],
        &big,
    )
    .await
    .unwrap();
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(json(&body)["code"], 900413);

    // Chunked (no Content-Length): the limit still holds while reading.
    let stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let chunks = futures_util::stream::iter((0..4).map(|_| {
        Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(Bytes::from(vec![b'a'; 600])))
    }));
    let req = http::Request::post("/api/v4/authentication/token")
        .header("host", "x")
        .body(http_body_util::StreamBody::new(chunks))
        .unwrap();
    let resp = tx.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);

    let huge = "h".repeat(20_000);
    let (status, _, _) = call(proxy.addr, Method::GET, V3, &[("x-big", &huge)], "")
        .await
        .unwrap();
    assert_eq!(status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert!(mock.observed.requests().is_empty());
}

#[tokio::test]
async fn h2c_from_backends_is_served() {
    let (_env, _mock, proxy) = common::proxied("").await;
    let stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let (mut tx, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get(format!("http://{}{V3}", proxy.addr))
        .header("x-server-key", SERVER_KEY)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = tx.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(serde_json::from_slice::<String>(&body).is_ok());
}

#[tokio::test]
async fn a_slow_response_body_arrives_whole_and_the_connection_lives_on() {
    // Longer than the quiet time after which an idle connection parks.
    let pause = PARK_AFTER * 2;
    let (_env, mock, proxy) = common::proxied_with(|o| o.body_pause = pause, "").await;
    let stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    // The second request goes on the same connection: it must have survived the first.
    for _ in 0..2 {
        let req = http::Request::get(V3)
            .header("host", "gateway")
            .header("x-server-key", SERVER_KEY)
            .body(Full::new(Bytes::new()))
            .unwrap();
        let started = Instant::now();
        let resp = tx.send_request(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert!(started.elapsed() >= pause, "the body was paced");
        let token: String = serde_json::from_slice(&body).expect("the whole JSON body");
        assert!(token.len() >= 16);
    }
    proxy.shutdown().await;
    mock.shutdown().await;
}

#[tokio::test]
async fn over_the_in_flight_limit_is_503_not_a_queue() {
    let env = Env::new();
    env.client_cert("backend-a");
    let mock = env.mock(Duration::from_millis(800)).await;
    let v = env.config(mock.addr, &["backend-a"], "limits:\n  max_in_flight: 1\n");
    let proxy = env.proxy(&v).await;
    let addr = proxy.addr;
    let first = tokio::spawn(async move {
        call(addr, Method::GET, V3, &[("x-server-key", SERVER_KEY)], "").await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t = Instant::now();
    let (status, headers, body) = v3(addr).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        t.elapsed() < Duration::from_millis(300),
        "the second request waited instead of being refused"
    );
    assert_eq!(headers["retry-after"], "1");
    assert_eq!(json(&body)["data"]["reason"], "overloaded");
    assert_eq!(first.await.unwrap().unwrap().0, StatusCode::OK);
}

#[tokio::test]
async fn a_caller_that_hangs_up_mid_request_frees_its_in_flight_slot() {
    hang_up_frees_the_slot(None).await;
}

#[tokio::test]
async fn a_caller_that_sends_more_before_hanging_up_frees_its_in_flight_slot() {
    // Bytes ahead of the FIN, once the hang-up watch has begun (after 0.5 s of waiting):
    // a pipelined request's start here, curl's TLS close_notify alert over mTLS.
    hang_up_frees_the_slot(Some(b"GET /api/v3/authentication/token")).await;
}

/// A caller sends a request that Amity is slow to answer (6 s), maybe `more` bytes after
/// 1.2 s, then closes: its `max_in_flight` slot must be free well before that answer.
async fn hang_up_frees_the_slot(more: Option<&[u8]>) {
    let (_env, mock, proxy) = common::proxied_with(
        |o| o.delay = Duration::from_secs(6),
        "limits:\n  max_in_flight: 1\n",
    )
    .await;
    let mut caller = KeepAlive::open(proxy.addr).await;
    let req = caller.req.clone();
    caller.send(req.as_bytes()).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, _, body) = v3(proxy.addr).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "the slot is taken");
    assert_eq!(json(&body)["data"]["reason"], "overloaded");
    if let Some(more) = more {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        caller.send(more).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(caller);
    mock.set_delay(Duration::ZERO);
    common::eventually(
        Duration::from_millis(2500),
        "the slot freed after the caller hung up",
        || async {
            match v3(proxy.addr).await.0 {
                StatusCode::OK => Ok(()),
                s => Err(s.to_string()),
            }
        },
    )
    .await;
    proxy.shutdown().await;
    mock.shutdown().await;
}

#[tokio::test]
async fn the_rate_limit_answers_429_with_retry_after() {
    let (_env, mock, proxy) =
        common::proxied("limits:\n  rate_limit:\n    per_second: 1\n    burst: 2\n").await;
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let (status, headers, body) = v3(proxy.addr).await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(json(&body)["data"]["reason"], "rate_limited");
            assert!(
                headers["retry-after"]
                    .to_str()
                    .unwrap()
                    .parse::<u64>()
                    .unwrap()
                    >= 1
            );
        }
        statuses.push(status.as_u16());
    }
    assert_eq!(statuses, [200, 200, 429]);
    assert_eq!(mock.observed.requests().len(), 2);
}

#[tokio::test]
async fn a_body_that_never_finishes_is_408() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let env = Env::new();
    env.client_cert("backend-a");
    let mock = env.mock(Duration::ZERO).await;
    let v = env.config(
        mock.addr,
        &["backend-a"],
        "timeouts:\n  header_read_ms: 300\n",
    );
    let proxy = env.proxy(&v).await;
    let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let head = "POST /api/v4/authentication/token HTTP/1.1\r\nHost: x\r\ncontent-length: 100\r\n\r\n{\"userId\"";
    s.write_all(head.as_bytes()).await.unwrap();
    let t = Instant::now();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "took {:?}",
        t.elapsed()
    );
    assert!(mock.observed.requests().is_empty());
}

/// One raw HTTP/1.1 keep-alive connection to the proxy, for tests that need to control what
/// is sent when: the v3 token call, whole, in parts or pipelined.
struct KeepAlive {
    s: tokio::net::TcpStream,
    buf: Vec<u8>,
    /// The v3 token call with the server key.
    req: String,
}

impl KeepAlive {
    async fn open(addr: std::net::SocketAddr) -> Self {
        Self {
            s: tokio::net::TcpStream::connect(addr).await.unwrap(),
            buf: Vec::new(),
            req: format!("GET {V3} HTTP/1.1\r\nHost: x\r\nx-server-key: {SERVER_KEY}\r\n\r\n"),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        use tokio::io::AsyncWriteExt;
        self.s.write_all(bytes).await.unwrap();
    }

    /// Sends the token call and returns its response's status.
    async fn call(&mut self) -> u16 {
        let req = self.req.clone();
        self.send(req.as_bytes()).await;
        self.response().await
    }

    /// Reads one response with a Content-Length body; returns its status.
    async fn response(&mut self) -> u16 {
        use tokio::io::AsyncReadExt;
        loop {
            let buf = &mut self.buf;
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map(|v| v.trim().parse().unwrap())
                    .unwrap_or(0);
                if buf.len() >= end + 4 + len {
                    let status = head[9..12].parse().unwrap();
                    buf.drain(..end + 4 + len);
                    return status;
                }
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(Duration::from_secs(5), self.s.read(&mut chunk))
                .await
                .expect("a response within 5 s")
                .unwrap();
            assert!(n > 0, "the proxy closed the connection");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// How long until the proxy closes the connection, waiting at most `limit`.
    async fn closed_within(&mut self, limit: Duration) -> Option<Duration> {
        use tokio::io::AsyncReadExt;
        let t = Instant::now();
        let mut byte = [0u8; 1];
        match tokio::time::timeout(limit, self.s.read(&mut byte)).await {
            Ok(Ok(0) | Err(_)) => Some(t.elapsed()),
            Ok(Ok(_)) => panic!("the proxy sent something unasked"),
            Err(_) => None,
        }
    }
}

#[tokio::test]
async fn each_request_on_a_kept_alive_connection_gets_the_whole_response_timeout() {
    let (_env, mock, proxy) = common::proxied("timeouts:\n  response_ms: 400\n").await;
    let mut c = KeepAlive::open(proxy.addr).await;
    // On one connection: answered, stalled, answered, stalled. Each stall is cut at 400 ms
    // from its own start, whether the connection's previous request was answered or cut.
    for (stall, round) in [false, true, false, true].into_iter().zip(1..) {
        mock.set_delay(if stall {
            Duration::from_secs(5)
        } else {
            Duration::ZERO
        });
        let t = Instant::now();
        let status = c.call().await;
        let took = t.elapsed();
        if stall {
            assert_eq!(status, 504, "request {round}");
            assert!(
                took >= Duration::from_millis(400) && took < Duration::from_millis(1500),
                "request {round} took {took:?}"
            );
        } else {
            assert_eq!(status, 200, "request {round}");
        }
    }
    assert_eq!(mock.observed.requests().len(), 4);
}

/// CPU time (user + system) this process has used, from /proc/self/stat.
fn cpu_used() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // The fields after the command name, which is in parentheses and may contain spaces.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // USER_HZ is 100 on Linux.
    Duration::from_millis(ticks * 10)
}

/// Waits until `n` connections are parked.
async fn parked(proxy: &server::Running, n: i64) {
    let t = Instant::now();
    while proxy.state.metrics.connections_parked.get() != n {
        assert!(t.elapsed() < PARK_AFTER * 6, "never {n} parked");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn waiting_for_a_slow_upstream_costs_no_cpu() {
    let (_env, mock, proxy) = common::proxied("").await;
    let mut c = KeepAlive::open(proxy.addr).await;
    assert_eq!(c.call().await, 200);
    // A connection quiet for a while (parked), then a request the upstream takes 1.5 s over.
    parked(&proxy, 1).await;
    mock.set_delay(Duration::from_millis(1500));
    let before = cpu_used();
    assert_eq!(c.call().await, 200);
    let used = cpu_used() - before;
    assert!(
        used < Duration::from_millis(300),
        "{used:?} of CPU while waiting 1.5 s"
    );
}

#[tokio::test]
async fn a_request_head_is_bounded_from_its_first_byte_not_from_the_last_response() {
    let (_env, _mock, proxy) =
        common::proxied("timeouts:\n  header_read_ms: 600\n  idle_ms: 10000\n").await;
    let mut c = KeepAlive::open(proxy.addr).await;
    assert_eq!(c.call().await, 200);
    // Quiet for twice header_read_ms: the wait for the next head is idle_ms.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(c.call().await, 200);
    // Right after a response (the connection not parked yet), a head that stops halfway.
    let half = c.req.as_bytes()[..20].to_vec();
    c.send(&half).await;
    let closed = c.closed_within(Duration::from_secs(5)).await;
    assert!(
        closed.is_some_and(|t| t >= Duration::from_millis(550) && t < Duration::from_millis(1500)),
        "closed after {closed:?}, not at header_read_ms"
    );
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_parked_and_serves_the_next_request() {
    let (_env, mock, proxy) = common::proxied("").await;
    let metrics = proxy.state.metrics.clone();
    let mut c = KeepAlive::open(proxy.addr).await;
    assert_eq!(c.call().await, 200);
    assert_eq!(metrics.connections.get(), 1);

    // Quiet for longer than PARK_AFTER: parked, not closed.
    parked(&proxy, 1).await;
    assert_eq!(metrics.connections.get(), 1);
    assert_eq!(c.call().await, 200);
    assert_eq!(metrics.connections_parked.get(), 0);

    // A request whose head arrives in two parts across the park delay is not cut.
    let req = c.req.clone();
    let (first, rest) = req.split_at(20);
    c.send(first.as_bytes()).await;
    tokio::time::sleep(PARK_AFTER * 3).await;
    assert_eq!(metrics.connections_parked.get(), 0);
    c.send(rest.as_bytes()).await;
    assert_eq!(c.response().await, 200);

    // Pipelined requests after a park are all answered, in order.
    parked(&proxy, 1).await;
    c.send(format!("{req}{req}").as_bytes()).await;
    assert_eq!(c.response().await, 200);
    assert_eq!(c.response().await, 200);
    assert_eq!(mock.observed.requests().len(), 5);
    drop(c);
    let t = Instant::now();
    while metrics.connections.get() != 0 {
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "closed connection still counted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
