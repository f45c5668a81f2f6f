//! The audit trail: one JSON line per auth-token mint and admin call, allowed or refused,
//! never a secret; rotated like logrotate does it without losing a record; and, when
//! required, no mint without its record.

use crate::common;

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use common::keepalive::KeepAlive;
use common::{call, get_metrics, json, metric, Env, ADMIN_TOKEN, SERVER_KEY, V3};
use http::{Method, StatusCode};

/// Waits until `audit_records_total{result="written"}` is `n`: the writer counts a batch
/// just after writing it, so the count may trail the file for a moment.
async fn counted_written(admin: std::net::SocketAddr, n: usize) {
    let written = [("result", "written")];
    common::counted(admin, "amity_proxy_audit_records_total", &written, n as f64).await;
}

/// The records in `files`, once they hold `n` lines (the writer thread is asynchronous).
async fn records(files: &[&Path], n: usize) -> Vec<serde_json::Value> {
    let read = || -> Vec<String> {
        files
            .iter()
            .flat_map(|f| {
                let text = std::fs::read_to_string(f).unwrap_or_default();
                text.lines().map(String::from).collect::<Vec<_>>()
            })
            .collect()
    };
    for _ in 0..200 {
        if read().len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let lines = read();
    assert_eq!(lines.len(), n, "records: {lines:#?}");
    for l in &lines {
        assert!(
            !l.contains(SERVER_KEY) && !l.contains(ADMIN_TOKEN),
            "a secret in {l}"
        );
    }
    lines.iter().map(|l| json(l.as_bytes())).collect()
}

#[tokio::test]
async fn every_mint_and_admin_call_is_recorded_once_without_secrets() {
    let env = Env::new();
    env.client_cert("backend-a");
    std::fs::write(env.dir.path().join("key"), SERVER_KEY).unwrap();
    std::fs::write(env.dir.path().join("admin"), ADMIN_TOKEN).unwrap();
    let mock = env.mock(Duration::ZERO).await;
    let v = env.config(
        mock.addr,
        &["backend-a"],
        "server_key_file: key\nadmin_token_file: admin\ncaller_secrets: reject\naudit:\n  path: audit.jsonl\n",
    );
    let proxy = env.proxy(&v).await;
    let (status, h, _) = call(proxy.addr, Method::GET, V3, &[], "").await.unwrap();
    assert_eq!(status, StatusCode::OK);
    let minted_id = h["x-request-id"].to_str().unwrap().to_string();
    let v4 = "/api/v4/authentication/token";
    let ct = [("content-type", "application/json")];
    let (status, _, _) = call(proxy.addr, Method::POST, v4, &ct, r#"{"userId":"bob"}"#)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = call(proxy.addr, Method::GET, "/api/v3/users?limit=1", &[], "")
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    // Refused by the proxy: the caller sent the key the proxy adds.
    let (status, _, _) = call(proxy.addr, Method::GET, V3, &[("x-server-key", "mine")], "")
        .await
        .unwrap();
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, _) = call(
        proxy.addr,
        Method::GET,
        "/api/v3/channels",
        &[("x", "y")],
        "",
    )
    .await
    .unwrap();
    // With the admin token injected, any /api/ path is an admin call: forwarded, and the
    // stand-in does not know this one.
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Not a mint nor an admin call: refused, and not in the audit trail.
    let (status, _, _) = call(proxy.addr, Method::GET, "/healthz", &[], "")
        .await
        .unwrap();
    assert_eq!(status, StatusCode::FORBIDDEN);
    let audit = env.dir.path().join("audit.jsonl");
    let r = records(&[&audit], 5).await;
    assert_eq!(r[0]["app"], "default");
    assert_eq!(r[0]["route"], "auth_token");
    assert_eq!(r[0]["user_id"], "alice");
    assert_eq!(r[0]["decision"], "allowed");
    assert_eq!(r[0]["upstream_status"], 200);
    assert_eq!(r[0]["cert"], "backend-a");
    assert_eq!(
        r[0]["caller"].as_str().unwrap().split(':').next(),
        Some("127.0.0.1")
    );
    assert_eq!(r[0]["request_id"], minted_id.as_str());
    assert!(r[0]["latency_ms"].is_u64() && r[0]["time"].as_str().unwrap().ends_with('Z'));
    assert!(
        r[0].get("method").is_none(),
        "a mint names its user, not a path"
    );
    assert_eq!(r[1]["user_id"], "bob");
    assert_eq!(r[2]["route"], "admin");
    assert_eq!(
        (r[2]["method"].as_str(), r[2]["path"].as_str()),
        (Some("GET"), Some("/api/v3/users"))
    );
    assert!(r[2].get("user_id").is_none());
    assert_eq!(r[3]["decision"], "refused");
    assert_eq!(r[3]["reason"], "caller_sent_secret");
    assert!(r[3].get("upstream_status").is_none());
    assert_eq!(r[4]["path"], "/api/v3/channels");
    assert_eq!(r[4]["upstream_status"], 404);
    counted_written(proxy.admin_addr, 5).await;
    proxy.shutdown().await;
}

/// A token call refused before it is classified as one (no userId, the endpoint's path
/// written otherwise) is recorded; so is a mint whose caller left while Amity had it.
#[tokio::test]
async fn refused_token_calls_and_callers_that_leave_are_recorded() {
    let (env, mock, proxy) = common::proxied("audit:\n  path: audit.jsonl\n").await;
    let token = "/api/v3/authentication/token";
    let status = common::token_status_at(proxy.addr, token, common::WITH_KEY).await;
    assert_eq!(status, Ok(StatusCode::BAD_REQUEST));
    for variant in [
        "/API/v3/authentication/token?userId=alice",
        "/api/v3/authentication/./token?userId=alice",
    ] {
        let status = common::token_status_at(proxy.addr, variant, common::WITH_KEY).await;
        assert_eq!(status, Ok(StatusCode::FORBIDDEN), "{variant}");
    }
    // A caller that hangs up while Amity is answering its mint.
    mock.set_delay(Duration::from_secs(30));
    let mut caller = KeepAlive::open(proxy.addr).await;
    let req = caller.req.replace("userId=alice", "userId=carol");
    caller.send(req.as_bytes()).await;
    common::upstream_saw(&mock, 1).await;
    drop(caller);
    let r = records(&[&env.dir.path().join("audit.jsonl")], 4).await;
    let refused = ["missing_user_id", "token_call_form", "token_call_form"];
    for (i, reason) in refused.iter().enumerate() {
        assert_eq!(
            (&r[i]["route"], &r[i]["decision"], &r[i]["reason"]),
            (&"auth_token".into(), &"refused".into(), &(*reason).into()),
            "{}",
            r[i]
        );
    }
    assert_eq!(
        (&r[3]["user_id"], &r[3]["decision"], &r[3]["reason"]),
        (&"carol".into(), &"allowed".into(), &"caller_gone".into()),
        "{}",
        r[3]
    );
    assert!(r[3].get("upstream_status").is_none(), "{}", r[3]);
    // Shutdown writes what is queued: still one record each.
    proxy.shutdown().await;
    records(&[&env.dir.path().join("audit.jsonl")], 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_mints_a_thousand_at_once_with_a_rotation_leave_exactly_one_record_each() {
    let env = Env::new();
    env.client_cert("backend-a");
    std::fs::write(env.dir.path().join("key"), SERVER_KEY).unwrap();
    let mock = env.mock(Duration::from_millis(2)).await;
    let v = env.config(
        mock.addr,
        &["backend-a"],
        "server_key_file: key\naudit:\n  path: audit.jsonl\nlimits:\n  max_in_flight: 4096\n",
    );
    let proxy = env.spawn(&v).await;
    let (addr, admin) = (proxy.listen, proxy.admin);
    const N: usize = 2000;
    // Over HTTP/2: the calls of a wave all in flight at once, on a few connections.
    let mut clients = Vec::new();
    for _ in 0..16 {
        clients.push(common::h2c(addr).await);
    }
    let mint = |i: usize| {
        let mut tx = clients[i % clients.len()].clone();
        tokio::spawn(async move {
            let req = http::Request::get(format!(
                "http://{addr}/api/v3/authentication/token?userId=user-{i}"
            ))
            .body(Default::default())
            .unwrap();
            tx.ready().await.unwrap();
            tx.send_request(req).await.map(|r| r.status())
        })
    };
    let reloads = || async {
        let m = common::scrape_once(admin).await;
        metric(&m, "amity_proxy_reloads_total", &[("result", "ok")]).unwrap_or(0.0)
    };
    // The first half; once a quarter is on record, rotate as logrotate does: rename, then
    // ask for a reopen. The second half is sent once the reopen is done, while the first
    // may still be answered, so the old file holds at least a quarter and at most a half.
    let mut calls: Vec<_> = (0..N / 2).map(mint).collect();
    let audit = env.dir.path().join("audit.jsonl");
    let rotated = env.dir.path().join("audit.jsonl.1");
    common::eventually(Duration::from_secs(20), "some records written", || async {
        let n = std::fs::read_to_string(&audit)
            .unwrap_or_default()
            .lines()
            .count();
        (n >= N / 4).then_some(()).ok_or(format!("{n} records"))
    })
    .await;
    let before = reloads().await;
    std::fs::rename(&audit, &rotated).unwrap();
    proxy.signal("-HUP");
    common::eventually(Duration::from_secs(20), "the reload on SIGHUP", || async {
        let now = reloads().await;
        (now > before).then_some(()).ok_or(format!("{now} reloads"))
    })
    .await;
    calls.extend((N / 2..N).map(mint));
    let mut answered = 0;
    let mut ok = 0;
    for c in calls {
        if let Ok(Ok(status)) = c.await {
            answered += 1;
            ok += usize::from(status == StatusCode::OK);
        }
    }
    assert_eq!(answered, N, "every call got an answer");
    let r = records(&[&rotated, &audit], N).await;
    let old = std::fs::read_to_string(&rotated).unwrap().lines().count();
    assert!(
        (N / 4..=N / 2).contains(&old),
        "the rotation split the records: {old} in the old file"
    );
    let ids: HashSet<&str> = r
        .iter()
        .map(|x| x["request_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), N, "one record per request");
    let users: HashSet<&str> = r.iter().map(|x| x["user_id"].as_str().unwrap()).collect();
    assert_eq!(users.len(), N);
    let allowed = r.iter().filter(|x| x["upstream_status"] == 200).count();
    assert_eq!(allowed, ok);
    assert_eq!(
        allowed,
        mock.observed.requests().len(),
        "as many as Amity saw"
    );
    let m = get_metrics(admin).await;
    let metric_ok = metric(
        &m,
        "amity_proxy_requests_total",
        &[("route", "auth_token"), ("status", "200")],
    );
    assert_eq!(metric_ok, Some(ok as f64));
    counted_written(admin, N).await;
}

#[tokio::test]
async fn a_required_trail_that_cannot_be_written_refuses_mints_and_readiness() {
    // Every write to /dev/full fails (ENOSPC), as on a full disk.
    let (env, mock, proxy) = common::proxied("audit:\n  path: /dev/full\n  required: true\n").await;
    for _ in 0..3 {
        let (status, _, body) = call(proxy.addr, Method::GET, V3, common::WITH_KEY, "")
            .await
            .unwrap();
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        let body = json(&body);
        assert_eq!(body["data"]["reason"], "audit_unavailable");
    }
    // The first mint was made before the trail was known to fail, and its token withheld;
    // the next ones were never sent.
    assert_eq!(mock.observed.requests().len(), 1);
    let (status, _, body) = call(proxy.admin_addr, Method::GET, "/readyz", &[], "")
        .await
        .unwrap();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        json(&body)["reason"]
            .as_str()
            .unwrap()
            .contains("audit trail (/dev/full) cannot be written"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    // Four records failed: the first call's (allowed, then withheld) and the two refusals'.
    let m = get_metrics(proxy.admin_addr).await;
    assert_eq!(
        metric(
            &m,
            "amity_proxy_audit_records_total",
            &[("result", "failed")]
        ),
        Some(4.0)
    );
    proxy.shutdown().await;

    // Not required: the same failure is counted, and service goes on.
    let v = env.config(mock.addr, &["backend-a"], "audit:\n  path: /dev/full\n");
    let proxy = env.proxy(&v).await;
    let (status, _, _) = call(proxy.addr, Method::GET, V3, common::WITH_KEY, "")
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = call(proxy.admin_addr, Method::GET, "/readyz", &[], "")
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    common::eventually(Duration::from_secs(5), "the failure counted", || async {
        let m = get_metrics(proxy.admin_addr).await;
        let failed = metric(
            &m,
            "amity_proxy_audit_records_total",
            &[("result", "failed")],
        );
        (failed == Some(1.0))
            .then_some(())
            .ok_or(format!("{failed:?}"))
    })
    .await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_trail_that_cannot_be_written_is_logged() {
    let env = Env::new();
    env.client_cert("backend-a");
    let mock = env.mock(Duration::ZERO).await;
    let v = env.config(mock.addr, &["backend-a"], "audit:\n  path: /dev/full\n");
    let proxy = env.spawn(&v).await;
    let (status, _, _) = call(proxy.listen, Method::GET, V3, common::WITH_KEY, "")
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "not required: service goes on");
    proxy
        .wait_for_log(&["audit records could not be written", "/dev/full"])
        .await;
}

/// A required trail on a volume that hangs (a pipe nobody reads): a mint waits at most
/// `audit.write_timeout_ms` for its record, is withheld, `/readyz` says why, and service comes
/// back once the volume does; the withheld mint is on record as withheld.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_required_trail_on_a_hung_volume_bounds_every_mint() {
    let env = Env::new();
    env.client_cert("backend-a");
    let mock = env.mock(Duration::ZERO).await;
    let fifo = env.certs().parent().unwrap().join("audit.pipe");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    // The reader opens once the proxy opens the pipe for writing, and then reads nothing.
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::File::open(fifo).unwrap())
    };
    let v = env.config(
        mock.addr,
        &["backend-a"],
        &format!(
            "audit:\n  path: {}\n  required: true\n  write_timeout_ms: 300\n",
            fifo.display()
        ),
    );
    let proxy = env.proxy(&v).await;
    let mut reader = reader.join().unwrap();
    // Mints fill the pipe's buffer; then the writer hangs in write(2).
    let mut first_refusal = None;
    for n in 0..2000 {
        let t = std::time::Instant::now();
        let (status, _, body) = call(proxy.addr, Method::GET, V3, common::WITH_KEY, "")
            .await
            .unwrap();
        if status != StatusCode::OK {
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(json(&body)["data"]["reason"], "audit_unavailable");
            assert!(
                t.elapsed() < Duration::from_secs(3),
                "call {n} waited {:?}",
                t.elapsed()
            );
            first_refusal = Some(n);
            break;
        }
    }
    let sent = first_refusal.expect("the pipe filled up");
    let (status, _, body) = call(proxy.admin_addr, Method::GET, "/readyz", &[], "")
        .await
        .unwrap();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let reason = json(&body)["reason"].as_str().unwrap().to_string();
    assert!(reason.contains("audit.write_timeout_ms"), "{reason}");
    // While the write hangs, mints are refused before they are sent.
    let (status, _, _) = call(proxy.addr, Method::GET, V3, common::WITH_KEY, "")
        .await
        .unwrap();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(mock.observed.requests().len(), sent + 1);

    // The volume comes back: everything written so far is read.
    let drained = std::thread::spawn(move || {
        let mut text = Vec::new();
        std::io::Read::read_to_end(&mut reader, &mut text).unwrap();
        String::from_utf8(text).unwrap()
    });
    common::eventually(Duration::from_secs(5), "service back", || async {
        let (status, _, _) = call(proxy.addr, Method::GET, V3, common::WITH_KEY, "")
            .await
            .unwrap();
        (status == StatusCode::OK)
            .then_some(())
            .ok_or(format!("{status}"))
    })
    .await;
    proxy.shutdown().await;
    let text = drained.join().unwrap();
    let records: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("every line parses"))
        .collect();
    let withheld: Vec<_> = records
        .iter()
        .filter(|r| r["decision"] == "withheld")
        .collect();
    assert_eq!(withheld.len(), 1, "{withheld:?}");
    assert_eq!(withheld[0]["reason"], "audit_unavailable");
    assert_eq!(withheld[0]["upstream_status"], 200);
}
