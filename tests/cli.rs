//! End-to-end tests of the command line: each test runs the built binary in its own
//! temporary folder with `-c <tmp>/config.yaml`, and cross-checks the files with `openssl`.

mod common;

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use amity_mtls_proxy::model::pki::{self, DevCa, Validity};
use serde_json::Value;

/// What one run of the binary did.
struct Out {
    args: Vec<String>,
    code: i32,
    stdout: String,
    stderr: String,
}

impl fmt::Display for Out {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} exited with {}\n--- stdout\n{}\n--- stderr\n{}",
            self.args, self.code, self.stdout, self.stderr
        )
    }
}

impl Out {
    fn success(self) -> Self {
        assert_eq!(self.code, 0, "expected success: {self}");
        self
    }

    /// A refusal: exit code 1 (clap's usage errors exit 2, so this also proves the
    /// arguments were accepted and the command itself said no).
    fn failure(self) -> Self {
        assert_eq!(self.code, 1, "expected exit code 1: {self}");
        self
    }

    fn stderr_has(&self, needles: &[&str]) -> &Self {
        for n in needles {
            assert!(self.stderr.contains(n), "stderr lacks {n:?}: {self}");
        }
        self
    }

    fn stdout_has(&self, needles: &[&str]) -> &Self {
        for n in needles {
            assert!(self.stdout.contains(n), "stdout lacks {n:?}: {self}");
        }
        self
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {self}"))
    }
}

/// A temporary folder holding config.yaml and certs/.
struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("create a temporary folder"),
        }
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root().join(rel)
    }

    /// `certs/NAME.EXT`, the default certificate folder beside the config.
    fn cert_file(&self, name: &str, ext: &str) -> PathBuf {
        self.path(&format!("certs/{name}.{ext}"))
    }

    fn run(&self, args: &[&str]) -> Out {
        let out = Command::new(common::BIN)
            .arg("-c")
            .arg(self.path("config.yaml"))
            .args(args)
            .current_dir(self.root())
            .output()
            .expect("run amity-mtls-proxy");
        let out = Out {
            args: args.iter().map(|a| a.to_string()).collect(),
            code: out
                .status
                .code()
                .unwrap_or_else(|| panic!("{args:?} killed by a signal: {:?}", out.status)),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        assert!(!out.stderr.contains("panicked"), "panic: {out}");
        out
    }

    fn write_config(&self, yaml: &str) {
        fs::write(self.path("config.yaml"), yaml).expect("write config.yaml");
    }

    fn cert_new(&self, name: &str) -> Out {
        self.run(&["cert", "new", "--name", name]).success()
    }

    fn dev_ca_init(&self) {
        self.run(&["dev-ca", "init"]).success();
    }

    /// Signs `certs/NAME.csr` with the dev CA through the CLI; returns the certificate file.
    fn dev_sign(&self, name: &str, days: u32) -> PathBuf {
        let out = self.path(&format!("{name}-{days}d.pem"));
        let csr = self.cert_file(name, "csr");
        self.run(&[
            "dev-ca",
            "sign",
            "--csr",
            s(&csr),
            "--days",
            &days.to_string(),
            "--out",
            s(&out),
        ])
        .success();
        out
    }

    /// `cert new` + `dev-ca sign` + `cert import`; returns the import's output.
    fn issue(&self, name: &str, days: u32) -> Out {
        self.cert_new(name);
        let signed = self.dev_sign(name, days);
        self.run(&["cert", "import", "--name", name, "--cert", s(&signed)])
            .success()
    }

    /// A certificate for `certs/NAME.csr` from the dev CA that expired yesterday;
    /// the CLI refuses to issue one, so this goes through the library.
    fn expired_cert(&self, name: &str) -> PathBuf {
        amity_mtls_proxy::install_crypto_provider();
        let ca = DevCa::load(&self.path("certs")).expect("load the dev CA");
        let csr = fs::read_to_string(self.cert_file(name, "csr")).expect("read the CSR");
        let now = pki::now_unix();
        let pem = ca
            .sign_csr(
                &csr,
                Validity {
                    not_before: now - 2 * 86_400,
                    not_after: now - 86_400,
                },
            )
            .expect("sign an expired certificate");
        let out = self.path(&format!("{name}-expired.pem"));
        fs::write(&out, pem).expect("write the expired certificate");
        out
    }

    /// Signs `certs/NAME.csr` with openssl and an arbitrary CA, with the given extendedKeyUsage.
    fn openssl_sign(&self, name: &str, ca: &str, eku: &str, out: &str) -> PathBuf {
        let ext = self.path(&format!("{out}.ext"));
        fs::write(&ext, format!("extendedKeyUsage={eku}\n")).expect("write the extfile");
        let out = self.path(out);
        openssl(&[
            "x509",
            "-req",
            "-in",
            s(&self.cert_file(name, "csr")),
            "-CA",
            s(&self.path(&format!("{ca}.crt"))),
            "-CAkey",
            s(&self.path(&format!("{ca}.key"))),
            "-days",
            "60",
            "-extfile",
            s(&ext),
            "-out",
            s(&out),
        ]);
        out
    }
}

fn s(p: &Path) -> &str {
    p.to_str().expect("temporary paths are UTF-8")
}

fn read(p: &Path) -> Vec<u8> {
    fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o777
}

/// Runs `openssl` from PATH; a missing openssl is a test failure, not a skip.
fn openssl(args: &[&str]) -> String {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `openssl` from PATH, which these tests need: {e}"));
    assert!(
        out.status.success(),
        "openssl {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn openssl_fails(args: &[&str]) -> bool {
    !Command::new("openssl")
        .args(args)
        .output()
        .expect("run openssl")
        .status
        .success()
}

/// Checks the CSR's self-signature, then returns `openssl req -text` with RFC 2253
/// names (`CN=x`), a format that does not vary between openssl versions.
fn csr_text(csr: &Path) -> String {
    openssl(&["req", "-in", s(csr), "-noout", "-verify"]);
    openssl(&[
        "req",
        "-in",
        s(csr),
        "-noout",
        "-text",
        "-nameopt",
        "RFC2253",
    ])
}

/// A valid config naming the dev CA as extra trust root, with the given `client_certs` entries.
fn config_yaml(certs: &[String]) -> String {
    format!(
        "listen: 127.0.0.1:8080\nupstream:\n  url: https://127.0.0.1:9443\n  ca: certs/dev-ca.crt\nclient_certs:\n{}",
        certs.concat()
    )
}

fn cert_entry(name: &str, cert: &str, key: &str) -> String {
    format!("  - name: {name}\n    cert: certs/{cert}.crt\n    key: certs/{key}.key\n")
}

fn own_entry(name: &str) -> String {
    cert_entry(name, name, name)
}

#[test]
fn cert_new_writes_a_private_key_and_a_verifiable_csr() {
    let env = Env::new();
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
    let env = Env::new();
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
    let env = Env::new();
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
    let env = Env::new();
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
    let env = Env::new();
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
    let env = Env::new();
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
    let env = Env::new();
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
    let env = Env::new();
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
    let env = Env::new();
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
    let env = Env::new();
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
    let env = Env::new();
    env.dev_ca_init();
    let healthy = env.issue("long", 90);
    assert!(!healthy.stderr.contains("warning"), "{healthy}");

    env.issue("short", 10)
        .stderr_has(&["warning: only ", " days left", "renew at least 30 days"]);
    assert!(env.cert_file("short", "crt").exists());
}

#[test]
fn cert_list_shows_each_state() {
    let env = Env::new();
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

/// A dev CA and three certificates: `svc` and `other` installed, `old` expired.
fn env_with_certs() -> Env {
    let env = Env::new();
    env.dev_ca_init();
    env.issue("svc", 90);
    env.issue("other", 90);
    env.cert_new("old");
    fs::copy(env.expired_cert("old"), env.cert_file("old", "crt")).unwrap();
    env
}

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
