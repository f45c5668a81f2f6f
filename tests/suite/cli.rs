//! End-to-end tests of the certificate commands (`cert new`, `cert import`, `cert list`,
//! `dev-ca`): each runs the built binary in its own temporary folder with
//! `-c <tmp>/config.yaml`, and cross-checks the files with `openssl`. `check` is in check.rs.

use crate::common;

use std::collections::BTreeMap;
use std::fs;

use common::cli::*;

#[test]
fn cert_new_writes_a_private_key_and_a_verifiable_csr() {
    let env = Cli::new();
    let out = env
        .run(&[
            "cert",
            "new",
            "--name",
            "svc",
            "--cn",
            "svc.example",
            "--org",
            "Acme Ltd",
            "--san",
            "svc.internal",
            "--san",
            "127.0.0.1",
        ])
        .success();
    let key = env.cert_file("svc", "key");
    let csr = env.cert_file("svc", "csr");
    assert_eq!(mode(&key), 0o600, "{}", key.display());
    let csr_pem = fs::read_to_string(&csr).expect("read the CSR");
    assert!(csr_pem.starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
    out.stdout_has(&[csr_pem.trim_end(), s(&key)]);

    let der = env.path("svc.csr.der");
    openssl(&["req", "-in", s(&csr), "-outform", "DER", "-out", s(&der)]);
    let digest = openssl(&["dgst", "-sha256", "-c", s(&der)]);
    let digest = digest.trim().rsplit("= ").next().unwrap().to_uppercase();
    out.stdout_has(&[&format!("CSR SHA-256: {digest}")]);

    let text = csr_text(&csr);
    for want in [
        "CN=svc.example",
        "O=Acme Ltd",
        "DNS:svc.internal",
        "IP Address:127.0.0.1",
        "prime256v1",
    ] {
        assert!(text.contains(want), "CSR lacks {want:?}:\n{text}");
    }

    env.cert_new("plain");
    let text = csr_text(&env.cert_file("plain", "csr"));
    assert!(text.contains("Subject: CN=plain\n"), "{text}");
}

#[test]
fn cert_new_rsa_key_in_another_dir() {
    let env = Cli::new();
    let dir = env.path("elsewhere");
    env.run(&[
        "cert",
        "new",
        "--name",
        "rsa",
        "--key-type",
        "rsa2048",
        "--dir",
        s(&dir),
    ])
    .success();
    assert_eq!(mode(&dir.join("rsa.key")), 0o600);
    assert!(!env.path("certs").exists(), "--dir ignored");
    let text = csr_text(&dir.join("rsa.csr"));
    assert!(text.contains("rsaEncryption"), "{text}");
    assert!(text.contains("2048 bit"), "{text}");
}

#[test]
fn cert_import_accepts_a_chain_from_an_independent_ca() {
    let env = Cli::new();
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-subj",
        "/CN=Independent Test CA",
        "-days",
        "365",
        "-keyout",
        s(&env.path("ca.key")),
        "-out",
        s(&env.path("ca.crt")),
    ]);
    env.cert_new("svc");
    let leaf = env.openssl_sign("svc", "ca", "clientAuth", "svc.pem");
    let chain = env.path("chain.pem");
    fs::write(&chain, [read(&leaf), read(&env.path("ca.crt"))].concat()).unwrap();

    env.run(&["cert", "import", "--name", "svc", "--cert", s(&chain)])
        .success()
        .stdout_has(&["2 certificate(s) in the chain"]);
    assert_eq!(read(&env.cert_file("svc", "crt")), read(&chain));

    let list = env.run(&["cert", "list", "--json"]).success().json();
    let entry = &list[0];
    assert_eq!(entry["name"], "svc", "{list}");
    assert_eq!(entry["state"], "installed", "{list}");
    let days = entry["days_left"].as_i64().expect("days_left");
    assert!((59..=60).contains(&days), "days_left {days}");
    let serial = openssl(&["x509", "-in", s(&leaf), "-noout", "-serial"]);
    let serial = serial.trim().trim_start_matches("serial=");
    assert_eq!(entry["cert"]["serial"], serial, "{list}");
    assert_eq!(entry["cert"]["issuer"], "CN=Independent Test CA", "{list}");
}

#[test]
fn dev_ca_signs_verifiable_client_and_server_certs_and_is_not_replaced() {
    let env = Cli::new();
    env.dev_ca_init();
    let ca = env.cert_file("dev-ca", "crt");
    let ca_key = env.cert_file("dev-ca", "key");
    let server = env.cert_file("dev-server", "crt");
    assert_eq!(mode(&ca_key), 0o600);
    assert_eq!(mode(&env.cert_file("dev-server", "key")), 0o600);

    env.cert_new("svc");
    let out = env
        .run(&["dev-ca", "sign", "--csr", s(&env.cert_file("svc", "csr"))])
        .success();
    let client = env.path("svc.pem");
    fs::write(&client, &out.stdout).unwrap();
    openssl(&[
        "verify",
        "-CAfile",
        s(&ca),
        "-purpose",
        "sslclient",
        s(&client),
    ]);
    openssl(&[
        "verify",
        "-CAfile",
        s(&ca),
        "-purpose",
        "sslserver",
        "-verify_ip",
        "127.0.0.1",
        "-verify_hostname",
        "localhost",
        s(&server),
    ]);
    let sans = openssl(&[
        "x509",
        "-in",
        s(&server),
        "-noout",
        "-ext",
        "subjectAltName",
    ]);
    assert!(sans.contains("IP Address:127.0.0.1"), "{sans}");

    let files = [
        ca.clone(),
        ca_key,
        server,
        env.cert_file("dev-server", "key"),
    ];
    let before: Vec<_> = files.iter().map(|f| read(f)).collect();
    env.run(&["dev-ca", "init"])
        .failure()
        .stderr_has(&["already exists", "--force"]);
    let after: Vec<_> = files.iter().map(|f| read(f)).collect();
    assert!(before == after, "a refused dev-ca init changed files");

    env.run(&["dev-ca", "init", "--force"]).success();
    assert_ne!(read(&ca), before[0], "--force kept the old CA");
    assert!(
        openssl_fails(&["verify", "-CAfile", s(&ca), s(&client)]),
        "a certificate from the replaced CA still verifies"
    );
}

#[test]
fn cert_new_refuses_bad_names_and_writes_nothing() {
    let env = Cli::new();
    let long = "a".repeat(31);
    for (name, rule) in [
        (
            long.as_str(),
            "is 31 characters; the Amity console allows at most 30",
        ),
        ("../x", "contains '/'; use only letters, digits"),
        ("", "is empty"),
        ("a b", "contains ' '; use only letters, digits"),
        ("é", "contains 'é'; use only letters, digits"),
    ] {
        env.run(&["cert", "new", "--name", name])
            .failure()
            .stderr_has(&[&format!("certificate name {name:?}"), rule]);
    }
    let written: Vec<_> = fs::read_dir(env.root()).unwrap().collect();
    assert!(written.is_empty(), "refused names wrote {written:?}");

    let thirty = "b".repeat(30);
    env.cert_new(&thirty);
    assert!(env.cert_file(&thirty, "key").exists());
}

#[test]
fn cert_new_keeps_an_existing_name_unless_forced() {
    let env = Cli::new();
    env.dev_ca_init();
    env.issue("svc", 90);
    let files = ["key", "csr", "crt"].map(|ext| env.cert_file("svc", ext));
    let before = files.each_ref().map(|f| read(f));

    env.run(&["cert", "new", "--name", "svc"])
        .failure()
        .stderr_has(&["\"svc\" already exists", "--force"]);
    assert!(files.each_ref().map(|f| read(f)) == before, "files changed");

    let out = env
        .run(&["cert", "new", "--name", "svc", "--force"])
        .success();
    // The old certificate stays but no longer matches, and the user is told so.
    out.stderr_has(&["warning", s(&files[2])]);
    assert_ne!(read(&files[0]), before[0], "key not replaced");
    assert_ne!(read(&files[1]), before[1], "CSR not replaced");
    assert_eq!(mode(&files[0]), 0o600);
    let csr = fs::read_to_string(&files[1]).unwrap();
    out.stdout_has(&[csr.trim_end()]);
    let list = env.run(&["cert", "list", "--json"]).success().json();
    assert_eq!(list[0]["state"], "key_mismatch", "{list}");
}

#[test]
fn cert_new_refuses_a_third_configured_cert() {
    let env = Cli::new();
    env.dev_ca_init();
    env.issue("first", 90);
    env.issue("second", 90);
    env.write_config(&config_yaml(&[own_entry("first"), own_entry("second")]));
    env.run(&["check"]).success();

    let out = env.run(&["cert", "new", "--name", "third"]).failure();
    out.stderr_has(&["third certificate", "first, second", "Amity allows 2"]);
    assert_eq!(out.stderr.trim_end().lines().count(), 1, "{out}");
    assert!(!env.cert_file("third", "key").exists());
    assert!(!env.cert_file("third", "csr").exists());

    // Re-keying one of the two configured names stays possible.
    env.run(&["cert", "new", "--name", "first", "--force"])
        .success();
}

#[test]
fn cert_import_refuses_bad_certificates_and_writes_nothing() {
    let env = Cli::new();
    env.dev_ca_init();
    env.issue("svc", 90);
    env.cert_new("fresh");
    env.cert_new("other");
    let not_pem = env.path("not-pem.txt");
    fs::write(&not_pem, "this is not a certificate\n").unwrap();
    let foreign = env.dev_sign("other", 90);

    for name in ["svc", "fresh"] {
        let crt = env.cert_file(name, "crt");
        let before = crt.exists().then(|| read(&crt));
        let key = env.cert_file(name, "key");
        let expired = env.expired_cert(name);
        let server_only = env.openssl_sign(
            name,
            "certs/dev-ca",
            "serverAuth",
            &format!("{name}-srv.pem"),
        );
        for (file, reason) in [
            (&not_pem, "not a PEM certificate"),
            (&foreign, "does not match"),
            (&expired, "the certificate expired on"),
            (&server_only, "does not allow TLS client authentication"),
        ] {
            let out = env
                .run(&[
                    "cert",
                    "import",
                    "--name",
                    name,
                    "--cert",
                    s(file),
                    "--force",
                ])
                .failure();
            out.stderr_has(&[&format!("{}: ", file.display()), reason]);
            if reason == "does not match" {
                out.stderr_has(&[s(&key)]);
            }
            assert_eq!(crt.exists().then(|| read(&crt)), before, "{out}");
        }
    }
}

#[test]
fn cert_import_without_a_key_says_to_run_cert_new() {
    let env = Cli::new();
    env.dev_ca_init();
    env.cert_new("svc");
    let signed = env.dev_sign("svc", 90);
    env.run(&["cert", "import", "--name", "ghost", "--cert", s(&signed)])
        .failure()
        .stderr_has(&["no private key", "run `cert new --name ghost` first"]);
    assert!(!env.cert_file("ghost", "crt").exists());
}

#[test]
fn cert_import_replaces_an_installed_cert_only_when_forced() {
    let env = Cli::new();
    env.dev_ca_init();
    env.issue("svc", 90);
    let crt = env.cert_file("svc", "crt");
    let before = read(&crt);
    let renewed = env.dev_sign("svc", 80);

    env.run(&["cert", "import", "--name", "svc", "--cert", s(&renewed)])
        .failure()
        .stderr_has(&[s(&crt), "already exists", "--force"]);
    assert_eq!(read(&crt), before);

    env.run(&[
        "cert",
        "import",
        "--name",
        "svc",
        "--cert",
        s(&renewed),
        "--force",
    ])
    .success();
    assert_eq!(read(&crt), read(&renewed));
}

#[test]
fn cert_import_warns_when_few_days_are_left() {
    let env = Cli::new();
    env.dev_ca_init();
    let healthy = env.issue("long", 90);
    assert!(!healthy.stderr.contains("warning"), "{healthy}");

    env.issue("short", 10)
        .stderr_has(&["warning: only ", " days left", "renew at least 30 days"]);
    assert!(env.cert_file("short", "crt").exists());
}

#[test]
fn cert_list_shows_each_state() {
    let env = Cli::new();
    env.dev_ca_init();
    env.cert_new("pending");
    env.issue("good", 90);
    env.cert_new("mismatch");
    fs::copy(
        env.cert_file("good", "crt"),
        env.cert_file("mismatch", "crt"),
    )
    .unwrap();
    env.cert_new("old");
    fs::copy(env.expired_cert("old"), env.cert_file("old", "crt")).unwrap();
    env.write_config(&config_yaml(&[own_entry("good")]));

    let table = env.run(&["cert", "list"]).success();
    let mut lines = table.stdout.lines();
    let head: Vec<_> = lines.next().unwrap().split("  ").map(str::trim).collect();
    for col in ["NAME", "STATE", "DAYS", "SHA-256"] {
        assert!(head.contains(&col), "no {col} column: {table}");
    }
    let rows: BTreeMap<&str, &str> = lines
        .filter_map(|l| Some((l.split_whitespace().next()?, l)))
        .collect();
    for (name, label) in [
        ("pending", "pending CSR"),
        ("good", "installed"),
        ("mismatch", "key mismatch"),
        ("old", "expired"),
    ] {
        let row = rows
            .get(name)
            .unwrap_or_else(|| panic!("no {name} row: {table}"));
        assert!(row.contains(label), "{name} is not {label:?}: {table}");
    }

    let list = env.run(&["cert", "list", "--json"]).success().json();
    let entries = list.as_array().expect("a JSON array");
    let states: BTreeMap<&str, &str> = entries
        .iter()
        .map(|e| (e["name"].as_str().unwrap(), e["state"].as_str().unwrap()))
        .collect();
    let want = BTreeMap::from([
        ("good", "installed"),
        ("mismatch", "key_mismatch"),
        ("old", "expired"),
        ("pending", "pending_csr"),
    ]);
    assert_eq!(states, want, "the dev CA must not be listed either");
    let good = entries.iter().find(|e| e["name"] == "good").unwrap();
    assert_eq!(good["configured"], true);
    assert!(
        (89..=90).contains(&good["days_left"].as_i64().unwrap()),
        "{good}"
    );
    let fp = openssl(&[
        "x509",
        "-in",
        s(&env.cert_file("good", "crt")),
        "-noout",
        "-fingerprint",
        "-sha256",
    ]);
    assert_eq!(
        fp.trim(),
        format!(
            "sha256 Fingerprint={}",
            good["cert"]["sha256"].as_str().unwrap()
        )
    );
    assert!(entries
        .iter()
        .filter(|e| e["name"] != "good")
        .all(|e| e["configured"] == false));
}
