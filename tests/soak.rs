//! A soak of the built binary: token calls at a steady rate through an upstream that recycles
//! its connections on a schedule and after a number of requests, with reloads meanwhile.
//! Long, so not part of the test command; run it with
//! `cargo test --release --test soak -- --ignored --nocapture` (`SOAK_SECS`, default 600;
//! `SOAK_RATE` calls per second, default 200).

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{call, Env, Spawned};
use http::{Method, StatusCode};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "ten minutes; run by hand"]
async fn a_long_run_through_a_recycling_upstream_with_reloads_fails_nothing() {
    let secs = env_u64("SOAK_SECS", 600);
    let rate = env_u64("SOAK_RATE", 200).max(1);
    let env = Env::new();
    env.client_cert("backend-a");
    env.client_cert("backend-b");
    let mock = env
        .mock_with(|o| {
            o.record_requests = false;
            o.max_age = Some(Duration::from_secs(15));
            o.max_requests_per_connection = 500;
        })
        .await;
    let v = env.config(mock.addr, &["backend-a", "backend-b"], "");
    let (listen, admin) = common::pin_ports(&v.path);
    let base = std::fs::read_to_string(&v.path).unwrap();
    let with_active = |name: &str| format!("{base}active: {name}\n");
    std::fs::write(&v.path, with_active("backend-a")).unwrap();
    let mut proxy = Spawned::serve(&v.path, listen, admin, |c| {
        c.args(["--log-format", "json"]).env("RUST_LOG", "warn");
    })
    .await;
    let pid = proxy.pid();

    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let started = Instant::now();
    let end = started + Duration::from_secs(secs);
    let load = {
        let (ok, failed) = (ok.clone(), failed.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
            let mut calls = tokio::task::JoinSet::new();
            while Instant::now() < end {
                tick.tick().await;
                let (ok, failed) = (ok.clone(), failed.clone());
                calls.spawn(async move {
                    let r = call(listen, Method::GET, common::V3, common::WITH_KEY, "").await;
                    match r {
                        Ok((StatusCode::OK, _, _)) => ok.fetch_add(1, Ordering::Relaxed),
                        other => {
                            eprintln!("failed: {other:?}");
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                });
                while calls.try_join_next().is_some() {}
            }
            while calls.join_next().await.is_some() {}
        })
    };

    let mut rss = Vec::new();
    let mut reloads = 0u32;
    let mut next_reload = started + Duration::from_secs(30);
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_secs(5)).await;
        rss.push((
            started.elapsed().as_secs(),
            common::spawned::rss_kib(pid).unwrap_or(0),
        ));
        if Instant::now() >= next_reload {
            reloads += 1;
            next_reload += Duration::from_secs(30);
            let even = reloads.is_multiple_of(2);
            let active = if even { "backend-a" } else { "backend-b" };
            // Alternately by the file watch (the config changes) and by POST /reload.
            std::fs::write(&v.path, with_active(active)).unwrap();
            if even {
                let r = call(admin, Method::POST, "/reload", &[], "").await;
                assert!(matches!(r, Ok((StatusCode::OK, _, _))), "{r:?}");
            }
        }
    }
    load.await.unwrap();
    let metrics = call(admin, Method::GET, "/metrics", &[], "")
        .await
        .unwrap()
        .2;
    let m = common::scrape(std::str::from_utf8(&metrics).unwrap());
    proxy.signal("-TERM");
    let _ = proxy.exits_within(Duration::from_secs(30)).await;

    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    let reloaded = common::metric(&m, "amity_proxy_reloads_total", &[("result", "ok")]);
    let handshakes = common::handshakes_seen(&mock);
    let minute = |from: u64| {
        let w: Vec<u64> = rss
            .iter()
            .filter(|(t, _)| *t >= from && *t < from + 60)
            .map(|r| r.1)
            .collect();
        w.iter().sum::<u64>() / w.len().max(1) as u64
    };
    let last_minute = secs.saturating_sub(60);
    let peak = rss.iter().map(|r| r.1).max().unwrap_or(0);
    println!(
        "soak: {secs} s at {rate}/s: {ok} ok, {failed} failed; {reloads} config changes, \
         reloads ok {reloaded:?}; {handshakes} upstream handshakes; RSS KiB: first minute {}, \
         last minute {}, peak {peak}",
        minute(0),
        minute(last_minute),
    );
    println!("rss samples (s, KiB): {rss:?}");
    assert_eq!(failed, 0, "failed requests");
    assert!(ok > 0);
}
