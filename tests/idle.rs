//! An idle wait costs no CPU, and an idle connection no more than its socket. In a test binary
//! of its own, its tests one at a time: the CPU time and descriptors it reads are the whole
//! process's, which other tests running beside it would add to.

mod common;

use std::time::Duration;

use common::keepalive::{parked, KeepAlive};

/// Held by each test: the CPU time and descriptors read are the whole process's.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// CPU time (user + system) this process has used, from /proc/self/stat.
fn cpu_used() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // The fields after the command name, which is in parentheses and may contain spaces.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // USER_HZ is 100 on Linux.
    Duration::from_millis(ticks * 10)
}

#[tokio::test]
async fn waiting_for_a_slow_upstream_costs_no_cpu() {
    let _alone = ONE_AT_A_TIME.lock().await;
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

/// Plaintext callers that send part of HTTP/2's preface and stop cost no CPU while they wait,
/// and are let go after the head bound.
#[tokio::test]
async fn callers_stopping_inside_the_http2_preface_cost_no_cpu() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let (_env, _mock, proxy) = common::proxied("timeouts:\n  header_read_ms: 2500\n").await;
    let mut callers = Vec::new();
    for _ in 0..400 {
        let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut s, b"PRI * HTTP/2.0\r\n")
            .await
            .unwrap();
        callers.push(s);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = cpu_used();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let used = cpu_used() - before;
    assert!(
        used < Duration::from_millis(100),
        "{used:?} of CPU in 1 s for 400 callers waiting inside the preface"
    );
    // Let go after header_read_ms: each connection is closed by the proxy.
    for mut s in callers {
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::io::AsyncReadExt::read(&mut s, &mut buf),
        )
        .await;
        assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
    }
}

/// Descriptors this process holds now.
fn descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// An idle keep-alive connection, once parked, holds one descriptor (its socket), not two.
#[tokio::test]
async fn a_parked_connection_holds_one_descriptor() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let (_env, _mock, proxy) = common::proxied("").await;
    let before = descriptors();
    let mut callers = Vec::new();
    for _ in 0..50 {
        let mut c = KeepAlive::open(proxy.addr).await;
        assert_eq!(c.call().await, 200);
        callers.push(c);
    }
    parked(&proxy, 50).await;
    // Each: the test's end and the proxy's socket.
    let held = descriptors() - before;
    assert!(
        held <= 50 * 2 + 8,
        "{held} descriptors for 50 parked connections"
    );
    // Woken, each serves again.
    for c in &mut callers {
        assert_eq!(c.call().await, 200);
    }
}
