//! Bounded under abuse: a caller that never reads its response, an HTTP/2 connection kept
//! busy with PINGs only, warnings under overload, and refusals before routing.

use crate::common;

use std::time::{Duration, Instant};

use amity_mtls_proxy::model::pki::{self, DevCa, Validity};
use common::{proxied, Fleet, Spawned};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An HTTP/2 frame header: length, type, flags, stream id.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

const PING: u8 = 6;
const GOAWAY: u8 = 7;

/// Reads frames until the peer closes; returns the frame types seen and when it closed.
async fn frames_until_closed(mut r: tokio::net::tcp::OwnedReadHalf) -> (Vec<u8>, Instant) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match r.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let closed = Instant::now();
    let mut kinds = Vec::new();
    let mut at = 0;
    while at + 9 <= buf.len() {
        let len = (usize::from(buf[at]) << 16)
            | (usize::from(buf[at + 1]) << 8)
            | usize::from(buf[at + 2]);
        kinds.push(buf[at + 3]);
        at += 9 + len;
    }
    (kinds, closed)
}

/// A client that speaks only in PINGs (and acknowledges nothing, not even the proxy's own
/// PING) is closed with a GOAWAY once `idle_ms` has passed without a request.
#[tokio::test]
async fn pings_do_not_keep_an_idle_http2_connection_open() {
    let (_env, _mock, proxy) = proxied("timeouts:\n  idle_ms: 1000\n").await;
    let tcp = TcpStream::connect(proxy.addr).await.unwrap();
    let (r, mut w) = tcp.into_split();
    let start = Instant::now();
    let reader = tokio::spawn(frames_until_closed(r));
    w.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    w.write_all(&frame(4, 0, 0, &[])).await.unwrap();
    let pinger = tokio::spawn(async move {
        for i in 0u64.. {
            if w.write_all(&frame(PING, 0, 0, &i.to_be_bytes()))
                .await
                .is_err()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let closed = tokio::time::timeout(Duration::from_secs(8), reader).await;
    pinger.abort();
    let (kinds, at) = closed
        .expect("the connection was still open 8 s after idle_ms (1 s), kept open by PINGs")
        .unwrap();
    let after = at - start;
    assert!(
        after < Duration::from_millis(4000),
        "closed only {after:?} after start, with idle_ms 1000"
    );
    assert!(
        kinds.contains(&GOAWAY),
        "no GOAWAY before the close: {kinds:?}"
    );
}

/// The same with a well-behaved HTTP/2 client that acknowledges the proxy's PINGs and
/// sends its own.
#[tokio::test]
async fn an_http2_client_sending_pings_is_closed_after_idle_ms() {
    let (_env, _mock, proxy) = proxied("timeouts:\n  idle_ms: 1000\n").await;
    let tcp = TcpStream::connect(proxy.addr).await.unwrap();
    let (_send, mut conn) = h2::client::handshake(tcp).await.unwrap();
    let mut pings = conn.ping_pong().unwrap();
    let start = Instant::now();
    let conn = tokio::spawn(conn);
    let pinger = tokio::spawn(async move {
        loop {
            if pings.ping(h2::Ping::opaque()).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let ended = tokio::time::timeout(Duration::from_secs(8), conn).await;
    pinger.abort();
    assert!(
        ended.is_ok(),
        "the connection was still open 8 s after idle_ms (1 s), kept open by PINGs"
    );
    assert!(
        start.elapsed() < Duration::from_millis(4000),
        "closed only after {:?}, with idle_ms 1000",
        start.elapsed()
    );
}

/// Log lines of `p` (after the batch writer has flushed) that contain every one of `words`.
async fn lines_with(p: &Spawned, words: &[&str]) -> Vec<String> {
    tokio::time::sleep(Duration::from_millis(300)).await;
    p.log()
        .lines()
        .filter(|l| !l.contains("target=\"access\"") && !l.contains(" access:"))
        .filter(|l| words.iter().all(|w| l.contains(w)))
        .map(str::to_string)
        .collect()
}

/// The log lines naming every one of `words`, once the lines and the counts in their
/// summaries add up to `n` events: the summary of the last second is written when that
/// second ends.
async fn summarised(p: &Spawned, words: &[&str], n: usize) -> Vec<String> {
    let added_up = |lines: &[String]| {
        let summaries = lines.iter().filter(|l| l.contains("suppressed=")).count();
        let suppressed: usize = lines
            .iter()
            .filter_map(|l| l.split("suppressed=").nth(1))
            .filter_map(|v| v.split_whitespace().next()?.parse::<usize>().ok())
            .sum();
        suppressed + lines.len() - summaries
    };
    common::eventually(Duration::from_secs(5), "the summaries", || async {
        let lines = lines_with(p, words).await;
        let events = added_up(&lines);
        (events == n)
            .then_some(())
            .ok_or_else(|| format!("{events} of {n} in:\n{}", lines.join("\n")))
    })
    .await;
    lines_with(p, words).await
}

/// The most log lines a burst that took `took` may write about one kind of event: each
/// second of the throttle gives one line and one summary, and a burst spans at most
/// `took` rounded up, plus one, of those seconds.
fn line_limit(took: Duration) -> usize {
    2 * (took.as_secs() as usize + 2)
}

/// `n` token calls at once, each on a connection of its own; returns their statuses.
async fn burst(addr: std::net::SocketAddr, n: usize) -> Vec<http::StatusCode> {
    let calls: Vec<_> = (0..n)
        .map(|_| tokio::spawn(async move { common::v3(addr).await.0 }))
        .collect();
    let mut out = Vec::new();
    for c in calls {
        out.push(c.await.unwrap());
    }
    out
}

/// Runs `n` calls at once against a proxy configured with `yaml` and the stand-in answering
/// after `delay`; the refusals with `status` must each be counted in the metrics and
/// summarised in the log (lines naming `kind`): a few lines, not one per request.
async fn refusals_are_summarised(yaml: &str, delay: Duration, status: u16, kind: &str) {
    let env = common::Env::new();
    env.client_cert("backend-a");
    let mock = env.mock(delay).await;
    let v = env.config(mock.addr, &["backend-a"], yaml);
    let p = env.spawn(&v).await;
    let t = Instant::now();
    let statuses = burst(p.listen, 300).await;
    let limit = line_limit(t.elapsed());
    let refused = statuses.iter().filter(|s| s.as_u16() == status).count();
    assert!(refused >= 250, "expected most calls refused: {statuses:?}");
    let scrape = common::get_metrics(p.admin).await;
    let counted = common::metric(
        &scrape,
        "amity_proxy_requests_total",
        &[("route", "auth_token"), ("status", &status.to_string())],
    );
    assert_eq!(
        counted,
        Some(refused as f64),
        "the metric must count every {status}"
    );
    let lines = summarised(&p, &[kind], refused).await;
    assert!(
        lines.len() <= limit,
        "{refused} refusals ({status}) wrote {} log lines about it (want at most {limit}):\n{}",
        lines.len(),
        lines[..lines.len().min(6)].join("\n")
    );
}

/// Under overload (503, `limits.max_in_flight`), one line and a summary, not one per request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_warnings_are_summarised_and_counted_exactly() {
    let yaml = "limits:\n  max_in_flight: 1\n";
    refusals_are_summarised(yaml, Duration::from_millis(1500), 503, "overloaded").await;
}

/// Over a caller's rate (429, `limits.rate_limit`): logged, but summarised as well.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_warnings_are_summarised_and_counted_exactly() {
    let yaml = "limits:\n  rate_limit: { per_second: 1, burst: 1 }\n";
    refusals_are_summarised(yaml, Duration::ZERO, 429, "rate_limited").await;
}

/// A caller certificate and key signed by `ca`, valid over `validity`, as rustls takes them.
fn caller(fleet: &Fleet, ca: &DevCa, validity: Validity) -> ClientCert {
    let (crt, key) = fleet.caller(ca, "backend", None, validity);
    (
        pki::read_cert_chain(&crt).unwrap(),
        pki::read_private_key(&key).unwrap(),
    )
}

type ClientCert = (
    Vec<rustls::pki_types::CertificateDer<'static>>,
    rustls::pki_types::PrivateKeyDer<'static>,
);

/// A TLS handshake with the proxy, presenting `cert` if given; whether it completed (the
/// proxy answering a request on it).
async fn handshake(fleet: &Fleet, addr: std::net::SocketAddr, cert: Option<ClientCert>) -> bool {
    let mut roots = rustls::RootCertStore::empty();
    for c in pki::read_cert_chain(&fleet.path("dev-ca.crt")).unwrap() {
        roots.add(c).unwrap();
    }
    let b = rustls::ClientConfig::builder().with_root_certificates(roots);
    let cfg = match cert {
        Some((chain, key)) => b.with_client_auth_cert(chain, key).unwrap(),
        None => b.with_no_client_auth(),
    };
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let Ok(mut tls) = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
        .connect(name, tcp)
        .await
    else {
        return false;
    };
    // With TLS 1.3 the server checks the client's certificate after the client is done:
    // the verdict shows on the first exchange.
    let req = b"GET /api/v3/authentication/token?userId=a HTTP/1.1\r\nhost: x\r\n\r\n";
    let mut buf = [0u8; 16];
    tls.write_all(req).await.is_ok() && matches!(tls.read(&mut buf).await, Ok(n) if n > 0)
}

/// Waits (briefly: the count follows the close the caller sees) until `name{reason}` is `n`.
async fn counted_once(admin: std::net::SocketAddr, name: &str, reason: &str) {
    common::counted(admin, name, &[("reason", reason)], 1.0).await;
}

/// Failed inbound handshakes are counted by reason: no certificate, a certificate from
/// another CA, an expired one, something that is not TLS, and a caller that says nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_inbound_handshakes_are_counted_by_reason() {
    let fleet = Fleet::new();
    let yaml = format!(
        "{}timeouts:\n  inbound_handshake_ms: 500\n",
        fleet.inbound_yaml()
    );
    let (_env, _mock, proxy) = proxied(&yaml).await;
    let (addr, admin) = (proxy.addr, proxy.admin_addr);
    const NAME: &str = "amity_proxy_inbound_handshake_failures_total";

    let good = caller(&fleet, &fleet.ca, Validity::days_from_now(30));
    assert!(
        handshake(&fleet, addr, Some(good)).await,
        "a fleet certificate was refused"
    );

    assert!(!handshake(&fleet, addr, None).await);
    counted_once(admin, NAME, "no_certificate").await;

    let (_dir, other_ca) = common::foreign_ca();
    let foreign = caller(&fleet, &other_ca, Validity::days_from_now(30));
    assert!(!handshake(&fleet, addr, Some(foreign)).await);
    counted_once(admin, NAME, "unknown_ca").await;

    let now = pki::now_unix();
    let old = Validity {
        not_before: now - 20 * 86_400,
        not_after: now - 86_400,
    };
    let expired = caller(&fleet, &fleet.ca, old);
    assert!(!handshake(&fleet, addr, Some(expired)).await);
    counted_once(admin, NAME, "expired").await;

    let mut plain = TcpStream::connect(addr).await.unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let _ = plain.read(&mut [0u8; 64]).await;
    counted_once(admin, NAME, "protocol").await;

    let _silent = TcpStream::connect(addr).await.unwrap();
    counted_once(admin, NAME, "timeout").await;

    drop(TcpStream::connect(addr).await.unwrap());
    counted_once(admin, NAME, "closed").await;
}

/// Requests refused before routing are counted by reason: a malformed request (400), a head
/// over `limits.max_header_bytes` (431), a head not complete within `header_read_ms` (408).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_refused_before_routing_are_counted_by_reason() {
    let (_env, _mock, proxy) = proxied("timeouts:\n  header_read_ms: 500\n").await;
    let (addr, admin) = (proxy.addr, proxy.admin_addr);
    const NAME: &str = "amity_proxy_inbound_refused_total";
    let answer = |head: Vec<u8>| async move {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(&head).await.unwrap();
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut buf)).await;
        String::from_utf8_lossy(&buf)
            .lines()
            .next()
            .unwrap_or("")
            .to_string()
    };

    let status = answer(b"GET /a b c HTTP/1.1\r\n\r\n".to_vec()).await;
    assert!(status.contains(" 400 "), "{status}");
    counted_once(admin, NAME, "bad_request").await;

    let huge = format!(
        "GET / HTTP/1.1\r\nhost: x\r\nx-pad: {}\r\n\r\n",
        "h".repeat(40_000)
    );
    let status = answer(huge.into_bytes()).await;
    assert!(status.contains(" 431 "), "{status}");
    counted_once(admin, NAME, "header_too_large").await;

    let status = answer(b"GET /api/v3/authentication/token HTTP/1.1\r\nhost".to_vec()).await;
    assert_eq!(status, "", "a head cut short is closed without an answer");
    counted_once(admin, NAME, "header_timeout").await;
}

/// Refusals before routing are summarised in the log like other repeated warnings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_before_routing_are_summarised_in_the_log() {
    let env = common::Env::new();
    env.client_cert("backend-a");
    let mock = env.mock(Duration::ZERO).await;
    let v = env.config(mock.addr, &["backend-a"], "");
    let p = env.spawn(&v).await;
    let t = Instant::now();
    for _ in 0..100 {
        let mut s = TcpStream::connect(p.listen).await.unwrap();
        s.write_all(b"GET /a b c HTTP/1.1\r\n\r\n").await.unwrap();
        let _ = s.read_to_end(&mut Vec::new()).await;
    }
    common::counted(
        p.admin,
        "amity_proxy_inbound_refused_total",
        &[("reason", "bad_request")],
        100.0,
    )
    .await;
    let limit = line_limit(t.elapsed());
    let lines = summarised(&p, &["bad_request"], 100).await;
    assert!(
        (1..=limit).contains(&lines.len()),
        "100 refusals wrote {} log lines (want 1 to {limit}):\n{}",
        lines.len(),
        lines.join("\n")
    );
}

/// HTTP/2 calls for a large response on one connection whose stream window is 0: the caller
/// never takes any of it. Returns the connection's task (ends when the proxy closes it).
async fn stalled_readers(
    addr: std::net::SocketAddr,
    n: usize,
) -> tokio::task::JoinHandle<Result<(), h2::Error>> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (send, conn) = h2::client::Builder::new()
        .initial_window_size(0)
        .handshake::<_, bytes::Bytes>(tcp)
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    let mut bodies = Vec::new();
    for _ in 0..n {
        let req = http::Request::get(format!("http://{addr}/api/v3/users"))
            .header("x-admin-token", common::ADMIN_TOKEN)
            .body(())
            .unwrap();
        let mut send = send.clone().ready().await.unwrap();
        let (resp, _) = send.send_request(req, true).unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(5), resp)
            .await
            .expect("no response head")
            .unwrap();
        assert_eq!(resp.status(), http::StatusCode::OK);
        bodies.push(resp.into_body());
    }
    // Held, never read, until the connection ends.
    tokio::spawn(async move {
        let r = conn.await.unwrap();
        drop(bodies);
        r
    })
}

/// Callers that never take their large responses do not hold up other callers' responses
/// on the same upstream connection; their streams are dropped after `timeouts.send_ms`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_never_reads_does_not_stall_the_others() {
    let (_env, _mock, proxy) = common::proxied_with(
        |o| o.users_body_bytes = 4 << 20,
        "workers: 1\ntimeouts:\n  send_ms: 1500\n",
    )
    .await;
    let addr = proxy.addr;
    assert_eq!(common::v3(addr).await.0, http::StatusCode::OK);
    let stalled = stalled_readers(addr, 3).await;
    let start = Instant::now();
    let mut slowest = Duration::ZERO;
    while start.elapsed() < Duration::from_secs(3) {
        let t = Instant::now();
        let call = tokio::time::timeout(Duration::from_secs(2), common::v3(addr)).await;
        let status = call.map(|r| r.0);
        assert_eq!(
            status,
            Ok(http::StatusCode::OK),
            "a token call got no full answer within 2 s while 3 callers left their responses unread"
        );
        slowest = slowest.max(t.elapsed());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        slowest < Duration::from_millis(1000),
        "the slowest token call took {slowest:?} while others left their responses unread"
    );
    // send_ms after the last frame taken, the unread responses are dropped (counted) and the
    // stalled caller's connection is closed.
    let closed = tokio::time::timeout(Duration::from_secs(5), stalled).await;
    assert!(
        closed.is_ok(),
        "the connection of the caller that never read was still open 5 s after the token calls (send_ms 1.5 s)"
    );
    let s = common::get_metrics(proxy.admin_addr).await;
    assert_eq!(
        common::metric(&s, "amity_proxy_send_timeouts_total", &[]),
        Some(3.0)
    );
    assert_eq!(common::v3(addr).await.0, http::StatusCode::OK);
}

/// A body the upstream itself is slow to send is not given up on: the bound is on the
/// caller taking it, not on the upstream producing it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_upstream_body_is_not_cut_by_send_ms() {
    let (_env, _mock, proxy) = common::proxied_with(
        |o| o.body_pause = Duration::from_millis(1500),
        "timeouts:\n  send_ms: 300\n",
    )
    .await;
    let (status, _, body) = common::v3(proxy.addr).await;
    assert_eq!(status, http::StatusCode::OK);
    assert!(
        common::json(&body).is_string(),
        "the token came cut short: {body:?}"
    );
}

/// With a certificate the upstream refuses, every call fails: each is retried and answered
/// 502, and both the retry and the 502 are summarised, not logged per call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_failure_warnings_are_summarised() {
    let env = common::Env::new();
    let (_dir, other) = common::foreign_ca();
    env.client_cert_from(&other, "refused", Validity::days_from_now(30));
    let mock = env.mock(Duration::ZERO).await;
    let v = env.config(mock.addr, &["refused"], "");
    let p = env.spawn(&v).await;
    let t = Instant::now();
    let statuses = burst(p.listen, 100).await;
    let limit = line_limit(t.elapsed());
    assert!(
        statuses.iter().all(|s| *s == http::StatusCode::BAD_GATEWAY),
        "{statuses:?}"
    );
    tokio::time::sleep(Duration::from_millis(1200)).await;
    for what in ["retrying", "client_cert_rejected"] {
        let lines = lines_with(&p, &["WARN", what]).await;
        assert!(
            (1..=limit).contains(&lines.len()),
            "100 failed calls wrote {} warnings with {what:?} (want 1 to {limit}):\n{}",
            lines.len(),
            lines[..lines.len().min(6)].join("\n")
        );
    }
}

/// A response body that stalls after its head holds the caller no longer than
/// `timeouts.upstream_body_gap_ms`: the response ends with an error, counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_body_that_stalls_after_its_head_is_cut_off() {
    let (_env, _mock, proxy) = common::proxied_with(
        |o| o.body_pause = Duration::from_secs(20),
        "timeouts:\n  upstream_body_gap_ms: 400\n",
    )
    .await;
    let t = Instant::now();
    let answer = common::call(
        proxy.addr,
        http::Method::GET,
        common::V3,
        common::WITH_KEY,
        "",
    )
    .await;
    let waited = t.elapsed();
    assert!(
        answer.is_err(),
        "a cut body must not read as whole: {answer:?}"
    );
    assert!(
        waited >= Duration::from_millis(400) && waited < Duration::from_secs(5),
        "the caller waited {waited:?}"
    );
    common::counted(
        proxy.admin_addr,
        "amity_proxy_upstream_body_stalls_total",
        &[],
        1.0,
    )
    .await;
}
