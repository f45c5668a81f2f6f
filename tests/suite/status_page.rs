//! The status page in a real browser: Debian's Chromium, headless, loads `GET /` from a
//! running proxy with one certificate expiring in 4.5 days, one healthy, and one failed
//! reload; the test reads what the DOM shows. A screenshot, as a phone shows the page, is
//! saved to `target/artifacts/status-page.png`.

use crate::common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use amity_mtls_proxy::model::pki::Validity;
use common::call;
use http::{Method, StatusCode};

fn chromium() -> &'static str {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("chromium is not installed: `bash scripts/deps.sh` installs it")
}

/// Chromium, headless and without any network of its own, on `url`; `extra` says what to
/// produce.
fn browse(url: &str, profile: &std::path::Path, extra: &[&str]) -> std::process::Output {
    Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(url)
        .output()
        .expect("chromium runs")
}

/// The table row whose header cell is `name`.
fn row<'a>(dom: &'a str, name: &str) -> &'a str {
    let start = dom
        .find(&format!("<th scope=\"row\">{name}</th>"))
        .unwrap_or_else(|| panic!("no row for {name} in:\n{dom}"));
    let end = dom[start..].find("</tr>").map_or(dom.len(), |e| start + e);
    &dom[start..end]
}

/// Valid from a minute ago until `days` from now.
fn ending_in_days(days: f64) -> Validity {
    let mut v = Validity::days_from_now(0);
    v.not_after += (days * 86_400.0) as i64;
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_certificates_reloads_and_traffic_in_a_real_browser() {
    let env = common::Env::new();
    // Both end half a day past a whole day, so the days left the page shows do not depend
    // on whether it is drawn in the second the certificates were made.
    env.client_cert_from(&env.ca, "expiring", ending_in_days(4.5));
    env.client_cert_from(&env.ca, "healthy", ending_in_days(89.5));
    let key_file = env.dir.path().join("server.key");
    std::fs::write(&key_file, common::SERVER_KEY).unwrap();
    let mock = env.mock(Duration::ZERO).await;
    let v = env.config(
        mock.addr,
        &["expiring", "healthy"],
        &format!("server_key_file: {}\n", key_file.display()),
    );
    let proxy = env.proxy(&v).await;
    let (status, _, _) = call(proxy.addr, Method::GET, common::V3, &[], "")
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    // A reload that fails: the file no longer parses.
    let good = std::fs::read_to_string(&v.path).unwrap();
    std::fs::write(&v.path, format!("{good}listen: [\n")).unwrap();
    let (status, _, _) = call(proxy.admin_addr, Method::POST, "/reload", &[], "")
        .await
        .unwrap();
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    let (status, headers, body) = call(proxy.admin_addr, Method::GET, "/", &[], "")
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    let html = String::from_utf8_lossy(&body);
    assert!(!html.contains("<script"), "no script on the page");
    assert!(
        !html.contains(common::SERVER_KEY),
        "the server key is on the page"
    );

    let profile = tempfile::tempdir().unwrap();
    let url = format!("http://{}/", proxy.admin_addr);
    let out = tokio::task::spawn_blocking({
        let (url, p) = (url.clone(), profile.path().to_path_buf());
        move || browse(&url, &p, &["--dump-dom"])
    })
    .await
    .unwrap();
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        dom.contains("Certificates of default"),
        "the page did not load in chromium: {}\n{dom}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        dom.contains("Ready: presenting <strong>healthy</strong>"),
        "{dom}"
    );
    let expiring = row(&dom, "expiring");
    assert!(expiring.contains("standby"), "{expiring}");
    assert!(
        expiring.contains("value=\"4\"") && expiring.contains("4 days"),
        "{expiring}"
    );
    assert!(
        expiring.contains("class=\"bad\""),
        "red under 7 days: {expiring}"
    );
    let healthy = row(&dom, "healthy");
    assert!(healthy.contains(">active<"), "{healthy}");
    assert!(
        healthy.contains("89 days") && healthy.contains("accepted"),
        "{healthy}"
    );
    // The reason names the file and where it broke, without the file's lines.
    let failure = &dom[dom
        .find("Last failed reload:")
        .expect("the failed reload is shown")..];
    let failure = &failure[..failure.find("</p>").unwrap_or(failure.len())];
    assert!(
        failure.contains(&v.path.display().to_string()) && failure.contains("line 14"),
        "{failure}"
    );
    assert!(
        !failure.contains("listen: ["),
        "a line of the file: {failure}"
    );
    assert!(row(&dom, "Requests sent").contains("<td>1</td>"), "{dom}");
    assert!(
        dom.contains("<td>auth_token</td><td>200</td><td>1</td>"),
        "{dom}"
    );
    assert!(!dom.contains(common::SERVER_KEY));

    // The picture a person on a phone would see; kept as a build artifact.
    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("../artifacts")
        .join("status-page.png");
    std::fs::create_dir_all(shot.parent().unwrap()).unwrap();
    let out = tokio::task::spawn_blocking({
        let (p, arg) = (
            profile.path().to_path_buf(),
            format!("--screenshot={}", shot.display()),
        );
        move || browse(&url, &p, &[&arg, "--window-size=412,1400"])
    })
    .await
    .unwrap();
    assert!(
        shot.metadata().is_ok_and(|m| m.len() > 1000),
        "no screenshot: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    proxy.shutdown().await;
    mock.shutdown().await;
}
