//! `cert new | import | list --app`: with `apps` in the config each app's keys, CSRs and
//! certificates live in certs/APP/, and the console's two-slot limit holds per app. Each test
//! runs the built binary in its own temporary folder; the single-app shape is in cli.rs.

use crate::common;

use std::collections::BTreeMap;
use std::fs;

use common::cli::*;

/// `eu` with one configured certificate, `us` with two (`us-a` preferred by `active`).
const TWO_APPS: &str = "\
listen: 127.0.0.1:8080
apps:
  - name: eu
    upstream: { region: eu }
    client_certs:
      - { name: eu-a, cert: certs/eu/eu-a.crt, key: certs/eu/eu-a.key }
  - name: us
    upstream: { region: us }
    active: us-a
    client_certs:
      - { name: us-a, cert: certs/us/us-a.crt, key: certs/us/us-a.key }
      - { name: us-b, cert: certs/us/us-b.crt, key: certs/us/us-b.key }
";

fn two_apps() -> Cli {
    let env = Cli::new();
    env.write_config(TWO_APPS);
    env
}

/// `cert new --app` + `dev-ca sign` + `cert import --app`, valid for `days`.
fn issue_for(env: &Cli, app: &str, name: &str, days: u32) {
    env.run(&["cert", "new", "--app", app, "--name", name])
        .success();
    let signed = env.dev_sign_csr(&env.path(&format!("certs/{app}/{name}.csr")), days);
    env.run(&[
        "cert",
        "import",
        "--app",
        app,
        "--name",
        name,
        "--cert",
        s(&signed),
    ])
    .success()
    .stdout_has(&[s(&env.path(&format!("certs/{app}/{name}.crt")))]);
}

#[test]
fn cert_new_with_app_writes_into_the_apps_own_folder() {
    let env = two_apps();
    let out = env
        .run(&["cert", "new", "--app", "eu", "--name", "x"])
        .success();
    let key = env.path("certs/eu/x.key");
    let csr = env.path("certs/eu/x.csr");
    assert_eq!(mode(&key), 0o600, "{}", key.display());
    csr_text(&csr);
    out.stdout_has(&[
        s(&key),
        s(&csr),
        "cert import --app eu --name x",
        "console of app eu",
    ]);
    for stray in ["certs/x.key", "certs/x.csr", "certs/us/x.key"] {
        assert!(!env.path(stray).exists(), "{stray} written: {out}");
    }

    // --dir still wins over the per-app folder.
    let dir = env.path("elsewhere");
    env.run(&[
        "cert",
        "new",
        "--app",
        "us",
        "--name",
        "y",
        "--dir",
        s(&dir),
    ])
    .failure()
    .stderr_has(&["third certificate"]);
    env.run(&[
        "cert",
        "new",
        "--app",
        "eu",
        "--name",
        "y",
        "--dir",
        s(&dir),
    ])
    .success();
    assert!(dir.join("y.key").exists());
    assert!(!env.path("certs/eu/y.key").exists());
}

#[test]
fn the_two_slot_limit_holds_per_app() {
    let env = two_apps();
    let out = env
        .run(&["cert", "new", "--app", "us", "--name", "us-c"])
        .failure();
    out.stderr_has(&[
        "app \"us\"",
        "third certificate",
        "us-a, us-b",
        "Amity allows 2",
    ]);
    assert!(
        !out.stderr.contains("eu-a"),
        "eu's certificate counted: {out}"
    );
    assert!(!env.path("certs/us/us-c.key").exists());
    assert!(!env.path("certs/us/us-c.csr").exists());

    // eu has one configured certificate, so its second slot is free.
    env.run(&["cert", "new", "--app", "eu", "--name", "eu-b"])
        .success();
    assert!(env.path("certs/eu/eu-b.key").exists());
    // Re-keying one of us's two configured names stays possible.
    env.run(&["cert", "new", "--app", "us", "--name", "us-a"])
        .success();
    assert!(env.path("certs/us/us-a.key").exists());
}

#[test]
fn an_unknown_or_missing_app_is_refused_naming_the_configured_ones() {
    let env = two_apps();
    let pem = env.path("some.pem");
    fs::write(&pem, "unused\n").unwrap();
    for args in [
        vec!["cert", "new", "--app", "nope", "--name", "x"],
        vec![
            "cert",
            "import",
            "--app",
            "nope",
            "--name",
            "x",
            "--cert",
            s(&pem),
        ],
        vec!["cert", "list", "--app", "nope"],
    ] {
        env.run(&args)
            .failure()
            .stderr_has(&["app \"nope\" is not in", "configured apps: eu, us"]);
    }
    env.run(&["cert", "new", "--app", "../eu", "--name", "x"])
        .failure()
        .stderr_has(&["app name \"../eu\"", "contains '/'"]);

    // With several apps, which one a new key or certificate is for must be said.
    env.run(&["cert", "new", "--name", "x"])
        .failure()
        .stderr_has(&["defines 2 apps (eu, us)", "pass --app"]);
    env.run(&["cert", "import", "--name", "x", "--cert", s(&pem)])
        .failure()
        .stderr_has(&["defines 2 apps (eu, us)", "pass --app"]);
    // One --dir cannot hold several apps' files.
    env.run(&["cert", "list", "--dir", s(&env.path("certs"))])
        .failure()
        .stderr_has(&["pass --app NAME with --dir"]);
    assert!(!env.path("certs").exists(), "a refused command wrote files");
}

#[test]
fn cert_list_groups_every_app_and_shows_each_apps_active_certificate() {
    let env = two_apps();
    env.dev_ca_init();
    issue_for(&env, "eu", "eu-a", 90);
    issue_for(&env, "us", "us-a", 40);
    // us-b expires last, but us's config makes us-a the active one while it is valid.
    issue_for(&env, "us", "us-b", 90);
    env.run(&["cert", "new", "--app", "eu", "--name", "eu-next"])
        .success();

    let table = env.run(&["cert", "list"]).success();
    table.stdout_has(&[
        &format!("app eu ({}): active eu-a", s(&env.path("certs/eu"))),
        &format!("app us ({}): active us-a", s(&env.path("certs/us"))),
    ]);
    // Each row under its app's heading, with its state and whether that app configures it.
    let mut app = "";
    let mut rows: BTreeMap<(String, String), String> = BTreeMap::new();
    for line in table.stdout.lines() {
        if let Some(rest) = line.strip_prefix("app ") {
            app = rest.split_whitespace().next().unwrap();
        } else if let Some(name) = line.split_whitespace().next() {
            if name != "NAME" {
                rows.insert((app.to_string(), name.to_string()), line.to_string());
            }
        }
    }
    let keys: Vec<_> = rows.keys().map(|(a, n)| format!("{a}/{n}")).collect();
    assert_eq!(
        keys,
        ["eu/eu-a", "eu/eu-next", "us/us-a", "us/us-b"],
        "{table}"
    );
    assert!(rows[&("eu".into(), "eu-next".into())].contains("pending CSR"));
    for (a, n) in [("eu", "eu-a"), ("us", "us-a"), ("us", "us-b")] {
        let row = &rows[&(a.to_string(), n.to_string())];
        assert!(row.contains("installed") && row.contains("yes"), "{row}");
    }

    let list = env.run(&["cert", "list", "--json"]).success().json();
    let got: BTreeMap<(String, String), (String, bool)> = list
        .as_array()
        .expect("a JSON array")
        .iter()
        .map(|e| {
            (
                (
                    e["app"].as_str().unwrap().into(),
                    e["name"].as_str().unwrap().into(),
                ),
                (
                    e["state"].as_str().unwrap().into(),
                    e["active"].as_bool().unwrap(),
                ),
            )
        })
        .collect();
    let want = BTreeMap::from([
        (("eu".into(), "eu-a".into()), ("installed".into(), true)),
        (
            ("eu".into(), "eu-next".into()),
            ("pending_csr".into(), false),
        ),
        (("us".into(), "us-a".into()), ("installed".into(), true)),
        (("us".into(), "us-b".into()), ("installed".into(), false)),
    ]);
    assert_eq!(got, want, "{list}");

    let us = env.run(&["cert", "list", "--app", "us"]).success();
    us.stdout_has(&["active us-a", "us-b"]);
    assert!(!us.stdout.contains("eu-a"), "--app us listed eu: {us}");
}

#[test]
fn a_single_app_config_keeps_its_files_in_certs_with_or_without_app_default() {
    let env = Cli::new();
    env.write_config(&config_yaml(&[own_entry("first"), own_entry("second")]));
    env.run(&["cert", "new", "--name", "third"])
        .failure()
        .stderr_has(&["third certificate", "first, second"]);
    env.run(&["cert", "new", "--name", "first", "--force"])
        .success()
        .stdout_has(&["cert import --name first"]);
    env.run(&["cert", "new", "--app", "default", "--name", "second"])
        .success();
    assert!(env.cert_file("first", "key").exists());
    assert!(env.cert_file("second", "key").exists());
    assert!(
        !env.path("certs/default").exists(),
        "a per-app folder for `default`"
    );

    env.run(&["cert", "new", "--app", "eu", "--name", "x"])
        .failure()
        .stderr_has(&["app \"eu\" is not in", "configured apps: default"]);

    let table = env.run(&["cert", "list"]).success();
    assert!(table.stdout.starts_with("NAME"), "{table}");
    let list = env.run(&["cert", "list", "--json"]).success().json();
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .all(|e| e.get("app").is_none()),
        "the single-app JSON changed: {list}"
    );
}
