//! Hostile or careless backends: slowloris, 10,000 idle connections, oversized
//! requests and an HTTP/2 rapid-reset burst. Normal requests keep being served,
//! memory stays bounded, and each abuse gets its status or a closed connection.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{call, v3, Env, Spawned, V3};
use http::{Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const IDLE_CONNECTIONS: usize = 10_000;

/// A normal call, answered well within `header_read_ms` (2 s): one that waited for the
/// attackers to be cut off would fail.
async fn healthy(addr: SocketAddr, what: &str) {
    let t = Instant::now();
    let (status, _, _) = v3(addr).await;
    assert_eq!(status, StatusCode::OK, "a normal request failed {what}");
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "a normal request took {:?} {what}",
        t.elapsed()
    );
}

/// Waits until the peer closes the connection; returns how long that took.
async fn closed_within(s: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let t = Instant::now();
    let mut buf = [0u8; 1024];
    tokio::time::timeout(limit, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return t.elapsed(),
                Ok(_) => {}
            }
        }
    })
    .await
    .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abuse_is_contained_while_normal_requests_are_served() {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let env = Env::new();
    env.client_cert("backend-a");
    let mock = env.mock(Duration::ZERO).await;
    let v = env.config(
        mock.addr,
        &["backend-a"],
        "timeouts:\n  header_read_ms: 2000\n  idle_ms: 4000\nlimits:\n  max_request_body_bytes: 4096\n",
    );
    let proxy = Spawned::run_with(&v, |c| {
        c.env("RUST_LOG", "warn");
    })
    .await;
    let listen = proxy.listen;
    healthy(listen, "at start").await;
    let rss_start = proxy.rss_kib();

    // Slowloris: request heads trickled one byte a second are cut at header_read_ms.
    let mut slow = Vec::new();
    for _ in 0..20 {
        slow.push(TcpStream::connect(listen).await.unwrap());
    }
    let trickle = tokio::spawn(async move {
        let head = b"GET /api/v3/authentication/token?userId=slow HTTP/1.1\r\nHost: x\r\n";
        let mut closed_after = Vec::new();
        for s in &mut slow {
            let _ = s.write_all(&head[..1]).await;
        }
        let start = Instant::now();
        for i in 1..head.len() {
            tokio::time::sleep(Duration::from_secs(1)).await;
            for s in &mut slow {
                let _ = s.write_all(&head[i..i + 1]).await;
            }
            if start.elapsed() > Duration::from_secs(4) {
                break;
            }
        }
        for s in &mut slow {
            closed_after.push(closed_within(s, Duration::from_secs(1)).await);
        }
        closed_after
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    healthy(listen, "during slowloris").await;
    let closed = trickle.await.unwrap();
    assert!(
        closed.iter().all(Option::is_some),
        "slowloris connections were left open: {closed:?}"
    );

    // 10,000 idle connections: served around, then closed after idle_ms.
    let mut idle = Vec::with_capacity(IDLE_CONNECTIONS);
    for _ in 0..IDLE_CONNECTIONS {
        idle.push(TcpStream::connect(listen).await.expect("connect"));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    healthy(listen, "with 10,000 idle connections open").await;
    let rss_idle = proxy.rss_kib();
    eprintln!(
        "RSS: {rss_start} KiB at start, {rss_idle} KiB with {IDLE_CONNECTIONS} idle connections"
    );
    assert!(
        rss_idle < rss_start + 200 * 1024,
        "RSS grew by more than 200 MiB for idle connections: {rss_idle} KiB"
    );
    let mut sample = idle.split_off(IDLE_CONNECTIONS - 20);
    drop(idle);
    for s in &mut sample {
        assert!(
            closed_within(s, Duration::from_secs(10)).await.is_some(),
            "an idle connection outlived idle_ms"
        );
    }

    // Oversized head and body.
    let huge = "h".repeat(20_000);
    let (status, _, _) = call(listen, Method::GET, V3, &[("x-pad", &huge)], "")
        .await
        .unwrap();
    assert_eq!(status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    let (status, _, _) = call(
        listen,
        Method::POST,
        "/api/v4/authentication/token",
        &[],
        &"b".repeat(10_000),
    )
    .await
    .unwrap();
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);

    // HTTP/2 rapid reset: open and cancel streams as fast as possible.
    let tcp = TcpStream::connect(listen).await.unwrap();
    let (mut h2, conn) = h2::client::handshake(tcp).await.unwrap();
    let conn_task = tokio::spawn(conn);
    let mut sent = 0;
    let burst = tokio::time::timeout(Duration::from_secs(20), async {
        for _ in 0..5_000 {
            let req = http::Request::get(format!("http://{listen}{V3}"))
                .body(())
                .unwrap();
            let ready = match h2.clone().ready().await {
                Ok(r) => r,
                Err(e) => return Err(e),
            };
            h2 = ready;
            match h2.send_request(req, true) {
                Ok((_, mut stream)) => stream.send_reset(h2::Reason::CANCEL),
                Err(e) => return Err(e),
            }
            sent += 1;
        }
        Ok(())
    })
    .await;
    let verdict = tokio::time::timeout(Duration::from_secs(5), conn_task).await;
    eprintln!(
        "rapid reset: {sent} streams opened and reset; burst {burst:?}; connection {verdict:?}"
    );
    assert!(
        matches!(burst, Ok(Err(_))) || matches!(verdict, Ok(Ok(Err(_)))),
        "the proxy kept accepting reset streams without closing the connection"
    );
    healthy(listen, "after a rapid-reset burst").await;
    let rss_end = proxy.rss_kib();
    eprintln!("RSS after all abuse: {rss_end} KiB");
    assert!(
        rss_end < rss_start + 200 * 1024,
        "RSS did not come back down: {rss_end} KiB"
    );
}

/// Under a low open-file limit (a container started with a low `--ulimit`), backends holding
/// as many connections as they can never starve the admin listener: `/healthz` and `/metrics`
/// answer, and the connections past what the limit has room for wait in the kernel's queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backends_holding_connections_under_a_low_descriptor_limit_leave_the_admin_listener_room() {
    let env = Env::new();
    env.client_cert("backend-a");
    let mock = env.mock(Duration::ZERO).await;
    let v = env.config(mock.addr, &["backend-a"], "");
    let (listen, admin) = common::spawned::pin_ports(&v.path);
    let mut cmd = std::process::Command::new("sh");
    cmd.env("RUST_LOG", "info").args([
        "-c",
        "ulimit -n 256 && exec \"$0\" run -c \"$1\"",
        common::BIN,
        &v.path.display().to_string(),
    ]);
    let mut p = Spawned::spawn(cmd, v.path.with_file_name("proxy.log"), listen, admin);
    p.wait_listening(&[listen, admin]).await;
    // 200 keep-alive callers, each with a request sent: more than 256 descriptors' worth.
    let mut callers = Vec::new();
    for _ in 0..200 {
        let mut s = TcpStream::connect(listen).await.unwrap();
        s.write_all(
            format!(
                "GET {V3} HTTP/1.1\r\nhost: x\r\nx-server-key: {}\r\n\r\n",
                common::SERVER_KEY
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        callers.push(s);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for path in ["/healthz", "/metrics"] {
        let answer = tokio::time::timeout(
            Duration::from_secs(3),
            call(admin, Method::GET, path, &[], ""),
        )
        .await;
        assert!(
            matches!(answer, Ok(Ok((StatusCode::OK, _, _)))),
            "{path}: {answer:?}\n{}",
            p.log()
        );
    }
    let log = p.log();
    assert!(log.contains("accepting at most 112"), "{log}");
    assert!(!log.contains("Too many open files"), "{log}");
    // The callers accepted were answered.
    let mut answered = 0;
    for s in callers.iter_mut().take(50) {
        let mut buf = [0u8; 12];
        if tokio::time::timeout(Duration::from_secs(3), s.read_exact(&mut buf))
            .await
            .is_ok_and(|r| r.is_ok())
        {
            answered += usize::from(&buf == b"HTTP/1.1 200");
        }
    }
    assert_eq!(
        answered, 50,
        "the first 50 callers are within the 112 accepted"
    );
}
