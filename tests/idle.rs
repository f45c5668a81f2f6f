//! An idle wait costs no CPU. In a test binary of its own: the CPU time it reads is the
//! whole process's, which other tests running beside it would add to.

mod common;

use std::time::Duration;

use common::keepalive::{parked, KeepAlive};

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
