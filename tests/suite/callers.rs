//! The caller side of the data path: body and header limits, h2c, slow bodies, the in-flight
//! and rate limits, callers that hang up, and kept-alive connections, parked while idle.

use crate::common;

use std::time::{Duration, Instant};

use amity_mtls_proxy::data::conn::PARK_AFTER;
use bytes::Bytes;
use common::keepalive::{parked, KeepAlive};
use common::{call, json, v3, Env, SERVER_KEY, V3};
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

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
    let mut tx = common::h2c(proxy.addr).await;
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
        assert!(common::is_issued_token(&token), "{token}");
    }
    proxy.shutdown().await;
    mock.shutdown().await;
}

#[tokio::test]
async fn over_the_in_flight_limit_is_503_not_a_queue() {
    let env = Env::new();
    env.client_cert("backend-a");
    let mock = env.mock(Duration::from_millis(2500)).await;
    let v = env.config(mock.addr, &["backend-a"], "limits:\n  max_in_flight: 1\n");
    let proxy = env.proxy(&v).await;
    let addr = proxy.addr;
    let first = tokio::spawn(async move {
        call(addr, Method::GET, V3, &[("x-server-key", SERVER_KEY)], "").await
    });
    common::upstream_saw(&mock, 1).await;
    let t = Instant::now();
    let (status, headers, body) = v3(addr).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        t.elapsed() < Duration::from_millis(1000),
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

/// A caller sends a request that Amity is slow to answer (20 s), maybe `more` bytes after
/// 1.2 s, then closes: its `max_in_flight` slot must be free well before that answer.
async fn hang_up_frees_the_slot(more: Option<&[u8]>) {
    let (_env, mock, proxy) = common::proxied_with(
        |o| o.delay = Duration::from_secs(20),
        "limits:\n  max_in_flight: 1\n",
    )
    .await;
    let mut caller = KeepAlive::open(proxy.addr).await;
    let req = caller.req.clone();
    caller.send(req.as_bytes()).await;
    common::upstream_saw(&mock, 1).await;
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
        Duration::from_secs(8),
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

/// POST /reload, which must succeed.
async fn reload(admin: std::net::SocketAddr) {
    let (status, _, body) = call(admin, Method::POST, "/reload", &[], "").await.unwrap();
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
}

/// A reload hands no caller a fresh burst, a changed limit applies to the count so far, and the
/// requests in flight on the old generation count against the new one's `max_in_flight`.
#[tokio::test]
async fn the_rate_and_in_flight_limits_hold_across_reloads() {
    let env = Env::new();
    env.client_cert("backend-a");
    let mock = env.mock(Duration::ZERO).await;
    let limits = |burst: u32| {
        format!("limits:\n  max_in_flight: 1\n  rate_limit: {{ per_second: 1, burst: {burst} }}\n")
    };
    let v = env.config(mock.addr, &["backend-a"], &limits(3));
    let proxy = env.proxy(&v).await;
    let statuses = |n| async move {
        let mut out = Vec::new();
        for _ in 0..n {
            out.push(v3(proxy.addr).await.0.as_u16());
        }
        out
    };
    assert_eq!(statuses(4).await, [200, 200, 200, 429]);
    reload(proxy.admin_addr).await;
    assert_eq!(statuses(1).await, [429], "the reload gave no fresh burst");
    env.config(mock.addr, &["backend-a"], &limits(5));
    reload(proxy.admin_addr).await;
    // 3 of 5 used (less what a second refilled): at most 2 or 3 more, never 5.
    let more = statuses(6).await;
    let passed = more.iter().filter(|s| **s == 200).count();
    assert!((2..=3).contains(&passed), "{more:?}");

    // A call held by the old generation fills the new one's single slot.
    env.config(mock.addr, &["backend-a"], "limits:\n  max_in_flight: 1\n");
    reload(proxy.admin_addr).await;
    mock.set_delay(Duration::from_millis(2000));
    let addr = proxy.addr;
    let held = tokio::spawn(async move { v3(addr).await.0 });
    common::upstream_saw(&mock, 1 + 3 + passed).await;
    reload(proxy.admin_addr).await;
    let (status, _, body) = v3(proxy.addr).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(json(&body)["data"]["reason"], "overloaded");
    assert_eq!(held.await.unwrap(), StatusCode::OK);
}
