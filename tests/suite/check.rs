//! End-to-end tests of `check` (and of `run` where it warns the same): the built binary in
//! a temporary folder with certificates from its own dev CA (see common/cli.rs).

use crate::common;

use std::fs;
use std::os::unix::fs::PermissionsExt;

use common::cli::*;

#[test]
fn check_accepts_a_good_config() {
    let env = env_with_certs();
    env.write_config(&config_yaml(&[own_entry("svc")]));
    let out = env.run(&["check"]).success();
    out.stdout_has(&[
        "listen:   127.0.0.1:8080",
        "upstream: https://127.0.0.1:9443",
        "svc: CN=svc",
        "days left",
        "OK",
    ]);
    assert!(!out.stderr.contains("problem"), "{out}");
}

#[test]
fn check_rejects_bad_configs_naming_the_field() {
    let env = env_with_certs();
    let good = config_yaml(&[own_entry("svc")]);
    let missing = env.cert_file("missing", "crt");
    let other_key = env.cert_file("other", "key");
    let old_crt = env.cert_file("old", "crt");
    let cases: Vec<(&str, String, Vec<&str>)> = vec![
        (
            "unknown key",
            format!("{good}colour: blue\n"),
            vec!["colour", "line"],
        ),
        (
            "bad region",
            good.replace("url: https://127.0.0.1:9443", "region: mars"),
            vec!["upstream.region", "\"mars\""],
        ),
        (
            "missing cert file",
            config_yaml(&[cert_entry("svc", "missing", "svc")]),
            vec!["client_certs[0].cert", s(&missing)],
        ),
        (
            "YAML syntax error",
            good.replace("listen: 127.0.0.1:8080", "listen: [127.0.0.1:8080"),
            vec!["line", "column"],
        ),
        (
            "key of another cert",
            config_yaml(&[cert_entry("svc", "svc", "other")]),
            vec!["client_certs[0].key", s(&other_key), "does not match"],
        ),
        (
            "three certs",
            config_yaml(&[
                own_entry("svc"),
                own_entry("other"),
                cert_entry("third", "svc", "svc"),
            ]),
            vec!["client_certs", "3 certificates listed", "at most 2"],
        ),
        (
            "expired cert",
            config_yaml(&[own_entry("old")]),
            vec!["client_certs[0].cert", s(&old_crt), "expired on"],
        ),
        (
            "duplicate name",
            config_yaml(&[own_entry("svc"), cert_entry("svc", "other", "other")]),
            vec!["client_certs[1].name", "\"svc\" is listed twice"],
        ),
        (
            "plain http upstream",
            good.replace("https://", "http://"),
            vec!["upstream.url", "must start with https://"],
        ),
        (
            "absurd worker count",
            format!("{good}workers: 100000\n"),
            vec!["workers", "100000 is more than 1024"],
        ),
    ];
    for (label, yaml, needles) in &cases {
        env.write_config(yaml);
        let out = env.run(&["check"]);
        assert_eq!(out.code, 1, "{label}: {out}");
        assert!(!out.stdout.contains("OK"), "{label}: {out}");
        for n in needles {
            assert!(out.stderr.contains(n), "{label}: stderr lacks {n:?}: {out}");
        }
        out.stderr_has(&["check failed"]);
    }
}

/// `inbound_tls` with the dev CA's server certificate for the gateway.
fn inbound_yaml(client_ca: bool) -> String {
    let ca = if client_ca {
        "  client_ca: certs/dev-ca.crt\n"
    } else {
        ""
    };
    format!("inbound_tls:\n  cert: certs/dev-server.crt\n  key: certs/dev-server.key\n{ca}")
}

#[test]
fn check_refuses_an_open_gateway_that_injects_secrets() {
    let env = env_with_certs();
    fs::write(env.path("server-key"), "a-server-key\n").unwrap();
    fs::write(env.path("admin-token"), "an-admin-token\n").unwrap();
    let open = config_yaml(&[own_entry("svc")]).replace("127.0.0.1:8080", "0.0.0.0:8080");
    for secret in [
        "server_key_file: server-key",
        "admin_token_file: admin-token",
    ] {
        env.write_config(&format!("{open}{}{secret}\n", inbound_yaml(false)));
        env.run(&["check"]).failure().stderr_has(&[
            "inbound_tls.client_ca",
            "0.0.0.0:8080",
            secret.split(':').next().unwrap(),
            "allow_unauthenticated_callers: true",
        ]);

        env.write_config(&format!(
            "{open}{}{secret}\nallow_unauthenticated_callers: true\n",
            inbound_yaml(false)
        ));
        env.run(&["check"])
            .success()
            .stderr_has(&["warning: ", "allow_unauthenticated_callers"]);
    }
    // With client_ca, or with no secret to inject, or on loopback, nothing is said.
    let quiet = [
        format!("{open}{}server_key_file: server-key\n", inbound_yaml(true)),
        format!("{open}{}", inbound_yaml(false)),
        format!(
            "{}{}server_key_file: server-key\n",
            config_yaml(&[own_entry("svc")]),
            inbound_yaml(false)
        ),
    ];
    for yaml in &quiet {
        env.write_config(yaml);
        let out = env.run(&["check"]).success();
        assert!(!out.stderr.contains("warning"), "{out}");
    }
}

#[test]
fn check_warns_about_an_admin_listener_off_loopback() {
    let env = env_with_certs();
    let yaml = config_yaml(&[own_entry("svc")]);
    env.write_config(&format!("{yaml}admin_listen: 0.0.0.0:9901\n"));
    env.run(&["check"]).success().stderr_has(&[
        "warning: admin_listen",
        "0.0.0.0:9901",
        "NetworkPolicy",
    ]);
    env.write_config(&format!("{yaml}admin_listen: 127.0.0.1:9901\n"));
    let out = env.run(&["check"]).success();
    assert!(!out.stderr.contains("warning"), "{out}");
}

#[test]
fn check_describes_a_tls_listener_and_refuses_its_expired_certificate() {
    let env = env_with_certs();
    let yaml = config_yaml(&[own_entry("svc")]);
    env.write_config(&format!("{yaml}{}", inbound_yaml(true)));
    let out = env.run(&["check"]).success();
    out.stdout_has(&["listen:   127.0.0.1:8080 (TLS, callers need a certificate from"]);
    assert!(!out.stdout.contains("plain HTTP"), "{out}");
    env.write_config(&format!("{yaml}{}", inbound_yaml(false)));
    env.run(&["check"])
        .success()
        .stdout_has(&["listen:   127.0.0.1:8080 (TLS, no client certificate asked)"]);
    env.write_config(&yaml);
    env.run(&["check"])
        .success()
        .stdout_has(&["listen:   127.0.0.1:8080 (plain HTTP)"]);

    env.cert_new("gateway");
    let expired = env.expired_cert("gateway");
    let inbound = format!(
        "inbound_tls:\n  cert: {}\n  key: certs/gateway.key\n  client_ca: certs/dev-ca.crt\n",
        s(&expired)
    );
    env.write_config(&format!("{yaml}{inbound}"));
    env.run(&["check"])
        .failure()
        .stderr_has(&["inbound_tls.cert", s(&expired), "expired on"]);
}

#[tokio::test]
async fn check_and_run_warn_about_a_private_key_others_can_read() {
    let env = env_with_certs();
    let key = env.cert_file("svc", "key");
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
    // Ports nothing listens on, so that `run` can start.
    let (listen, admin) = (common::closed_port(), common::closed_port());
    env.write_config(&format!(
        "{}admin_listen: {admin}\n",
        config_yaml(&[own_entry("svc")]).replace("127.0.0.1:8080", &listen.to_string()),
    ));
    let needles = [s(&key), "mode 0644", "chmod 600"];
    env.run(&["check"])
        .success()
        .stderr_has(&needles)
        .stderr_has(&["warning: client_certs[0].key"]);

    let mut run = common::Spawned::serve(&env.path("config.yaml"), listen, admin, |_| {}).await;
    run.signal("-TERM");
    run.exits_within(std::time::Duration::from_secs(15)).await;
    let log = run.log();
    for n in needles {
        assert!(log.contains(n), "the log at start lacks {n:?}:\n{log}");
    }

    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
    let out = env.run(&["check"]).success();
    assert!(!out.stderr.contains("warning"), "{out}");
}

#[test]
fn check_summarises_each_app_and_names_the_app_of_a_problem() {
    let env = env_with_certs();
    let app = |name: &str, cert: &str| {
        format!(
            "  - name: {name}\n    upstream: {{ url: \"https://127.0.0.1:9443\", ca: certs/dev-ca.crt }}\n    client_certs:\n{}",
            own_entry(cert).replace("  - ", "      - ").replace("\n    ", "\n        ")
        )
    };
    let two = format!(
        "listen: 127.0.0.1:8080\napps:\n{}{}",
        app("eu", "svc"),
        app("us", "other")
    );
    env.write_config(&two);
    env.run(&["check"]).success().stdout_has(&[
        "app eu (at /apps/eu/",
        "app us (at /apps/us/",
        "svc: CN=svc",
        "other: CN=other",
        "OK",
    ]);
    // An expired certificate in one app fails the check, naming that app's field.
    env.write_config(&format!(
        "listen: 127.0.0.1:8080\napps:\n{}{}",
        app("eu", "svc"),
        app("us", "old")
    ));
    env.run(&["check"])
        .failure()
        .stderr_has(&["apps[us].client_certs[0].cert", "expired"]);
}
