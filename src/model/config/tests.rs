use std::path::Path;
use std::time::Duration;

use super::error::{looks_like_config, pem_kind};
use super::*;

fn parse_str(s: &str) -> Result<Config, ConfigError> {
    parse(Path::new("t.yaml"), s)
}

#[test]
fn secrets_never_print() {
    let s = Secret::new("top-secret\n".into()).unwrap();
    assert_eq!(s.expose(), "top-secret");
    assert_eq!(format!("{s} {s:?}"), "[redacted] [redacted]");
    assert!(Secret::new("  ".into()).is_err());
    assert!(Secret::new("a\u{1}b".into()).is_err());
}

#[test]
fn regions_name_the_hosts_of_amitys_current_documentation() {
    for (region, host) in [
        ("eu", "apix.eu.amity.co"),
        ("sg", "apix.sg.amity.co"),
        ("us", "apix.us.amity.co"),
    ] {
        let u = UpstreamConfig {
            region: Some(region.into()),
            ..Default::default()
        };
        let t = u.target().unwrap();
        assert_eq!((t.host.as_str(), t.port), (host, 443), "region {region}");
        assert_eq!(t.path_prefix, "", "region {region}");
    }
}

#[test]
fn region_and_url_resolve() {
    let u = UpstreamConfig {
        region: Some("eu".into()),
        ..Default::default()
    };
    let t = u.target().unwrap();
    assert_eq!(t.host, "apix.eu.amity.co");
    assert_eq!(t.port, 443);
    let u = UpstreamConfig {
        url: Some("https://127.0.0.1:9443/".into()),
        ..Default::default()
    };
    let t = u.target().unwrap();
    assert_eq!(
        (t.host.as_str(), t.port, t.path_prefix.as_str()),
        ("127.0.0.1", 9443, "")
    );
    let u = UpstreamConfig {
        url: Some("http://127.0.0.1:9443".into()),
        ..Default::default()
    };
    assert!(u.target().unwrap_err().reason.contains("https://"));
}

#[test]
fn cert_rejected_answers_default_to_nginx_and_are_checked() {
    let upstream = |c: Config| c.single.unwrap().upstream.unwrap();
    let c = upstream(parse_str("listen: 127.0.0.1:1\nupstream: {region: sg}\n").unwrap());
    assert_eq!(c.cert_rejected_answers, CertRejectedAnswers::default());
    assert_eq!(c.cert_rejected_answers.0[0].status, 400);
    assert!(c.cert_rejected_answers.problems().is_empty());
    let c = upstream(
        parse_str("listen: 127.0.0.1:1\nupstream:\n  region: sg\n  cert_rejected_answers: []\n")
            .unwrap(),
    );
    assert!(c.cert_rejected_answers.0.is_empty());
    let c = upstream(parse_str(&format!(
        "listen: 127.0.0.1:1\nupstream:\n  region: sg\n  cert_rejected_answers:\n    - {{status: 403, title_contains: denied}}\n    - {{status: 200, title_contains: ' '}}\n    - {{status: 495, title_contains: {}}}\n",
        "x".repeat(300)
    ))
    .unwrap());
    let problems = c.cert_rejected_answers.problems();
    let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "upstream.cert_rejected_answers[1].status",
            "upstream.cert_rejected_answers[1].title_contains",
            "upstream.cert_rejected_answers[2].title_contains",
        ]
    );
    assert!(
        problems[0].reason.contains("200 is not an error status"),
        "{problems:?}"
    );
    let e = parse_str("listen: 127.0.0.1:1\nupstream:\n  region: sg\n  cert_rejected_answers:\n    - {status: 403}\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("title_contains"), "{e}");
    // The old rule's field, which matched text anywhere in any body, is an error naming it.
    let e = parse_str("listen: 127.0.0.1:1\nupstream:\n  region: sg\n  cert_rejected_answers:\n    - {status: 400, body_contains: x}\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("body_contains"), "{e}");
}

#[test]
fn a_refusal_is_the_front_servers_html_page_never_a_body_the_caller_shapes() {
    let rules = CertRejectedAnswers::default();
    let html = Some(&b"text/html"[..]);
    // nginx 1.22's pages for its internal 495 and 496, as sent.
    let page = |text: &str| {
        format!("<html>\r\n<head><title>400 {text}</title></head>\r\n<body>\r\n<center><h1>400 Bad Request</h1></center>\r\n<center>{text}</center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n")
    };
    let unverified = page("The SSL certificate error");
    let missing = page("No required SSL certificate was sent");
    let says = |status, ct: Option<&[u8]>, body: &[u8]| {
        rules
            .refusal(status, ct, body)
            .map(|r| r.title_contains.clone())
    };
    assert_eq!(
        says(400, html, unverified.as_bytes()).as_deref(),
        Some("The SSL certificate error")
    );
    assert_eq!(
        says(400, Some(b"Text/HTML; charset=utf-8"), missing.as_bytes()).as_deref(),
        Some("No required SSL certificate was sent")
    );
    // Another status, another content type, or no content type: no refusal.
    assert_eq!(says(403, html, unverified.as_bytes()), None);
    assert_eq!(says(200, html, unverified.as_bytes()), None);
    assert_eq!(says(400, None, unverified.as_bytes()), None);
    assert_eq!(says(400, Some(b"text/plain"), unverified.as_bytes()), None);
    // Amity's validation error repeating the caller's userId: JSON, so never a refusal, even
    // when the userId spells the whole page.
    let echoed = format!(
        r#"{{"status":"error","code":400000,"message":"invalid userId: {}"}}"#,
        unverified.replace('"', "\\\"")
    );
    assert_eq!(
        says(400, Some(b"application/json"), echoed.as_bytes()),
        None
    );
    // In an HTML page, the text outside the title is not looked at; nor is a missing title.
    assert_eq!(
        says(
            400,
            html,
            b"<html><body><p>echo The SSL certificate error</p></body></html>"
        ),
        None
    );
    assert_eq!(
        says(400, html, b"<html><TITLE>The SSL certificate error"),
        None,
        "a title that never closes"
    );
    assert_eq!(
        says(
            400,
            html,
            b"<HTML><HEAD><TITLE>The SSL certificate error</TITLE>"
        )
        .as_deref(),
        Some("The SSL certificate error")
    );
    // Case-sensitive: the rule names the text as the server writes it.
    assert_eq!(
        says(400, html, b"<title>the ssl certificate error</title>"),
        None
    );
    let edge = CertRejectedAnswers(vec![CertRejectedAnswer {
        status: 403,
        title_contains: "client certificate".into(),
    }]);
    assert!(edge
        .refusal(403, html, b"<title>bad client certificate</title>")
        .is_some());
    assert!(CertRejectedAnswers(vec![])
        .refusal(400, html, unverified.as_bytes())
        .is_none());
}

#[test]
fn pem_files_are_named_by_kind() {
    let cert = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    let key = "-----BEGIN EC PRIVATE KEY-----\nMHcC\n-----END EC PRIVATE KEY-----\n";
    assert_eq!(pem_kind(cert).as_deref(), Some("PEM data (CERTIFICATE)"));
    let both = format!("{cert}{key}");
    assert_eq!(
        pem_kind(&both).as_deref(),
        Some("a PEM private key (EC PRIVATE KEY)")
    );
    let config = "# the client PRIVATE KEY path goes under client_certs\nlisten: 127.0.0.1:1\n";
    assert_eq!(pem_kind(config), None);
    assert!(looks_like_config(config));
    assert!(!looks_like_config("sk-0123:abc\neyJhbGciOi.x.y\n"));
}

#[test]
fn unknown_key_is_rejected_with_position() {
    let e = parse_str("listen: 127.0.0.1:1\nupstream: {region: sg}\nlisten_typo: 1\n").unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("listen_typo"), "{msg}");
    assert!(msg.contains("line 3") || msg.contains("3:"), "{msg}");
}

#[test]
fn route_classes_are_named_once_and_parse_by_that_name() {
    for c in RouteClass::ALL {
        assert_eq!(RouteClass::from_name(c.as_str()), Some(c));
    }
    let c = parse_str(
        "listen: 127.0.0.1:1\nupstream: {region: sg}\ncallers:\n  - {identity: a, routes: [auth_token, admin, extra]}\n",
    )
    .unwrap();
    assert_eq!(c.callers[0].routes.as_deref(), Some(&RouteClass::ALL[..]));
}

#[test]
fn every_section_reports_its_problems_with_field_paths() {
    let yaml = "listen: nowhere\nupstream:\n  region: mars\n  pool_idle_timeout_ms: 0\n  cert_rejected_answers: [{status: 200, title_contains: x}]\nactive: gone\nfailover_after: 0\nworkers: 5000\ncallers: [{identity: ' ', routes: [admin]}]\nroutes:\n  admin_prefixes: [/x]\n  extra: [{path: a}, {method: GET}]\nlimits:\n  max_header_bytes: 100\n  max_in_flight: 0\n  rate_limit: {per_second: 0, burst: 1}\ntimeouts:\n  idle_ms: 0\n  send_ms: 0\n";
    let config = parse_str(yaml).unwrap();
    let Err(ConfigError::Invalid { problems, .. }) =
        validate(Path::new("t.yaml"), config, Path::new("/nonexistent"))
    else {
        panic!("not invalid");
    };
    let mut fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
    fields.sort_unstable();
    assert_eq!(
        fields,
        [
            "active",
            "callers",
            "callers[0].identity",
            "failover_after",
            "limits.max_header_bytes",
            "limits.max_in_flight",
            "limits.rate_limit",
            "listen",
            "routes.admin_prefixes[0]",
            "routes.extra[0]",
            "routes.extra[1]",
            "timeouts.idle_ms",
            "timeouts.send_ms",
            "upstream.cert_rejected_answers[0].status",
            "upstream.pool_idle_timeout_ms",
            "upstream.region",
            "workers",
        ],
        "{problems:#?}"
    );
}

/// A running `StartOnly` with one app listener, of `app`.
fn start_only_sample(app: &str) -> StartOnly {
    StartOnly {
        listen: "127.0.0.1:8080".parse().unwrap(),
        app_listeners: vec![(app.into(), "127.0.0.1:8081".parse().unwrap())],
        admin_listen: "127.0.0.1:9901".parse().unwrap(),
        workers: 2,
        max_connections: 100,
        max_header_bytes: 16384,
        header_read: Duration::from_secs(10),
        idle: Duration::from_secs(60),
        send: Duration::from_secs(10),
        inbound_handshake: Duration::from_secs(5),
        shutdown_grace: Duration::from_secs(10),
    }
}

#[test]
fn start_only_changes_name_each_field_with_both_values() {
    let running = start_only_sample("eu");
    assert_eq!(running.changes(&running.clone()), []);
    let configured = StartOnly {
        admin_listen: "127.0.0.1:9902".parse().unwrap(),
        idle: Duration::from_millis(1500),
        app_listeners: vec![("us".into(), "127.0.0.1:8082".parse().unwrap())],
        ..running.clone()
    };
    let change = |field: &str, running: &str, configured: &str| StartOnlyChange {
        field: field.into(),
        running: running.into(),
        configured: configured.into(),
    };
    assert_eq!(
        running.changes(&configured),
        [
            change("admin_listen", "127.0.0.1:9901", "127.0.0.1:9902"),
            change("timeouts.idle_ms", "60000", "1500"),
            change("apps[eu].listen", "127.0.0.1:8081", "none"),
            change("apps[us].listen", "none", "127.0.0.1:8082"),
        ]
    );
}

#[test]
fn the_apps_shape_reports_its_problems_naming_the_app() {
    let yaml = "listen: 127.0.0.1:8080\nupstream: {region: eu}\nroutes: {admin: false}\napps:\n  - {name: eu, listen: 127.0.0.1:8080, upstream: {region: eu}, failover_after: 0}\n  - {name: eu, upstream: {region: mars}}\n  - {name: 'a/b', upstream: {region: us}}\n";
    let config = parse_str(yaml).unwrap();
    let Err(ConfigError::Invalid { problems, .. }) =
        validate(Path::new("t.yaml"), config, Path::new("/nonexistent"))
    else {
        panic!("not invalid");
    };
    let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
    for want in [
        "upstream",
        "routes",
        "apps[eu].failover_after",
        "apps[1].name",
        "apps[1].upstream.region",
        "apps[2].name",
        "apps[eu].listen",
    ] {
        assert!(fields.contains(&want), "{want} not in {problems:#?}");
    }
    let top = problems.iter().find(|p| p.field == "upstream").unwrap();
    assert!(top.reason.contains("under each of apps[]"), "{top}");
}

#[test]
fn the_single_app_shape_is_one_app_named_default() {
    let c = parse_str("listen: 127.0.0.1:1\nupstream: {region: sg}\nfailover_after: 5\n").unwrap();
    let apps = c.app_list().unwrap();
    assert_eq!(apps.len(), 1);
    assert_eq!(apps[0].name, DEFAULT_APP);
    assert_eq!(apps[0].settings.failover_after, 5);
    assert!(
        apps[0].settings.routes.auth_token_v3,
        "routes default as before"
    );
    let none = parse_str("listen: 127.0.0.1:1\n").unwrap();
    let Err(ConfigError::Invalid { problems, .. }) =
        validate(Path::new("t.yaml"), none, Path::new("/nonexistent"))
    else {
        panic!("valid without an upstream");
    };
    let missing = problems.iter().find(|p| p.field == "upstream").unwrap();
    assert!(missing.reason.contains("is missing"), "{missing}");
}

#[test]
fn what_check_passes_can_run_bounds_listeners_and_identities() {
    let problems = |yaml: &str| -> Vec<(String, String)> {
        let config = parse_str(yaml).unwrap();
        match validate(Path::new("t.yaml"), config, Path::new("/nonexistent")) {
            Err(ConfigError::Invalid { problems, .. }) => problems
                .into_iter()
                .filter(|p| !p.field.starts_with("client_certs") && p.field != "upstream.ca")
                .map(|p| (p.field, p.reason))
                .collect(),
            Err(e) => panic!("{e}"),
            Ok(_) => Vec::new(),
        }
    };
    let base = "upstream: {region: sg}\nclient_certs: []\n";
    // A bound so long it would overflow the clock on every request.
    let p = problems(&format!(
        "listen: 127.0.0.1:1\n{base}timeouts:\n  response_ms: 18446744073709551615\n  shutdown_grace_ms: 90000000\naudit:\n  path: '-'\n  write_timeout_ms: 0\n"
    ));
    let fields: Vec<&str> = p.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(
        fields,
        [
            "timeouts.response_ms",
            "timeouts.shutdown_grace_ms",
            "audit.write_timeout_ms"
        ],
        "{p:?}"
    );
    assert!(p[0].1.contains("at most 86400000"), "{p:?}");
    // 0.0.0.0:X covers 127.0.0.1:X, and [::]:X every address: they cannot both be bound.
    for (listen, admin) in [
        ("0.0.0.0:9000", "127.0.0.1:9000"),
        ("127.0.0.1:9000", "0.0.0.0:9000"),
        ("'[::]:9000'", "127.0.0.1:9000"),
    ] {
        let p = problems(&format!("listen: {listen}\nadmin_listen: {admin}\n{base}"));
        assert!(
            p.iter()
                .any(|(f, r)| f == "admin_listen" && r.contains("cannot both be bound")),
            "{listen} {admin}: {p:?}"
        );
    }
    let p = problems(&format!(
        "listen: 127.0.0.1:9000\nadmin_listen: '[::1]:9000'\n{base}"
    ));
    assert!(p.is_empty(), "different addresses, one port: {p:?}");
    let apps = "listen: 0.0.0.0:9000\nadmin_listen: 127.0.0.1:9001\napps:\n  - name: eu\n    listen: 127.0.0.1:9000\n    upstream: {region: eu}\n    client_certs: []\n";
    let p = problems(apps);
    assert!(
        p.iter().any(|(f, _)| f == "apps[eu].listen"),
        "an app's listener inside listen's: {p:?}"
    );
    // A caller identity no certificate name can carry.
    let p = problems(&format!(
        "listen: 127.0.0.1:1\n{base}callers:\n  - {{identity: bücher.example, routes: [auth_token]}}\n"
    ));
    let identity: Vec<_> = p
        .iter()
        .filter(|(f, _)| f == "callers[0].identity")
        .collect();
    assert_eq!(identity.len(), 1, "{p:?}");
    assert!(identity[0].1.contains("xn--"), "{p:?}");
}

#[test]
fn the_readmes_reload_column_names_exactly_the_start_only_fields() {
    let readme = include_str!("../../../README.md");
    let mut restart: Vec<String> = readme
        .lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let field = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
            cells
                .get(3)?
                .starts_with("restart")
                .then(|| field.to_string())
        })
        .collect();
    restart.sort_unstable();
    let running = start_only_sample("NAME");
    let mut fields: Vec<String> = running
        .fields()
        .into_iter()
        .map(|(f, _)| f.replace("[NAME]", "[]"))
        .collect();
    fields.sort_unstable();
    assert_eq!(restart, fields, "README's `restart` rows against StartOnly");
}
