//! The command line's one-shot commands (`cert`, `dev-ca`, `check`), each run of the built
//! binary in a temporary folder with `-c <tmp>/config.yaml`, and `openssl` to cross-check
//! the files.

use std::fmt;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use amity_mtls_proxy::model::pki::{self, DevCa, Validity};
use serde_json::Value;

/// What one run of the binary did.
pub struct Out {
    /// The arguments after `-c <config>`.
    pub args: Vec<String>,
    /// The exit code.
    pub code: i32,
    /// What it printed.
    pub stdout: String,
    /// What it logged.
    pub stderr: String,
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
    pub fn success(self) -> Self {
        assert_eq!(self.code, 0, "expected success: {self}");
        self
    }

    /// A refusal: exit code 1 (clap's usage errors exit 2, so this also proves the
    /// arguments were accepted and the command itself said no).
    pub fn failure(self) -> Self {
        assert_eq!(self.code, 1, "expected exit code 1: {self}");
        self
    }

    pub fn stderr_has(&self, needles: &[&str]) -> &Self {
        for n in needles {
            assert!(self.stderr.contains(n), "stderr lacks {n:?}: {self}");
        }
        self
    }

    pub fn stdout_has(&self, needles: &[&str]) -> &Self {
        for n in needles {
            assert!(self.stdout.contains(n), "stdout lacks {n:?}: {self}");
        }
        self
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {self}"))
    }
}

/// A temporary folder holding config.yaml and certs/.
pub struct Cli {
    /// Removed with the `Cli`.
    pub dir: tempfile::TempDir,
}

impl Cli {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("create a temporary folder"),
        }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root().join(rel)
    }

    /// `certs/NAME.EXT`, the default certificate folder beside the config.
    pub fn cert_file(&self, name: &str, ext: &str) -> PathBuf {
        self.path(&format!("certs/{name}.{ext}"))
    }

    pub fn run(&self, args: &[&str]) -> Out {
        let out = Command::new(super::BIN)
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

    pub fn write_config(&self, yaml: &str) {
        fs::write(self.path("config.yaml"), yaml).expect("write config.yaml");
    }

    pub fn cert_new(&self, name: &str) -> Out {
        self.run(&["cert", "new", "--name", name]).success()
    }

    pub fn dev_ca_init(&self) {
        self.run(&["dev-ca", "init"]).success();
    }

    /// Signs `certs/NAME.csr` with the dev CA through the CLI; returns the certificate file.
    pub fn dev_sign(&self, name: &str, days: u32) -> PathBuf {
        self.dev_sign_csr(&self.cert_file(name, "csr"), days)
    }

    /// Signs the CSR at `csr` with the dev CA through the CLI, valid `days`; returns the
    /// certificate file.
    pub fn dev_sign_csr(&self, csr: &Path, days: u32) -> PathBuf {
        // Named after the CSR's place under the root: certs/eu/x.csr gives certs-eu-x-90d.pem.
        let rel = csr
            .strip_prefix(self.root())
            .unwrap_or(csr)
            .with_extension("");
        let flat = rel.display().to_string().replace('/', "-");
        let out = self.path(&format!("{flat}-{days}d.pem"));
        self.run(&[
            "dev-ca",
            "sign",
            "--csr",
            s(csr),
            "--days",
            &days.to_string(),
            "--out",
            s(&out),
        ])
        .success();
        out
    }

    /// `cert new` + `dev-ca sign` + `cert import`; returns the import's output.
    pub fn issue(&self, name: &str, days: u32) -> Out {
        self.cert_new(name);
        let signed = self.dev_sign(name, days);
        self.run(&["cert", "import", "--name", name, "--cert", s(&signed)])
            .success()
    }

    /// A certificate for `certs/NAME.csr` from the dev CA that expired yesterday;
    /// the CLI refuses to issue one, so this goes through the library.
    pub fn expired_cert(&self, name: &str) -> PathBuf {
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
    pub fn openssl_sign(&self, name: &str, ca: &str, eku: &str, out: &str) -> PathBuf {
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

pub fn s(p: &Path) -> &str {
    p.to_str().expect("temporary paths are UTF-8")
}

pub fn read(p: &Path) -> Vec<u8> {
    fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

pub fn mode(p: &Path) -> u32 {
    fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o777
}

/// Runs `openssl` from PATH; a missing openssl is a test failure, not a skip.
pub fn openssl(args: &[&str]) -> String {
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

pub fn openssl_fails(args: &[&str]) -> bool {
    !Command::new("openssl")
        .args(args)
        .output()
        .expect("run openssl")
        .status
        .success()
}

/// Checks the CSR's self-signature, then returns `openssl req -text` with RFC 2253
/// names (`CN=x`), a format that does not vary between openssl versions.
pub fn csr_text(csr: &Path) -> String {
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
pub fn config_yaml(certs: &[String]) -> String {
    format!(
        "listen: 127.0.0.1:8080\nupstream:\n  url: https://127.0.0.1:9443\n  ca: certs/dev-ca.crt\nclient_certs:\n{}",
        certs.concat()
    )
}

pub fn cert_entry(name: &str, cert: &str, key: &str) -> String {
    format!("  - name: {name}\n    cert: certs/{cert}.crt\n    key: certs/{key}.key\n")
}

pub fn own_entry(name: &str) -> String {
    cert_entry(name, name, name)
}

/// A dev CA and three certificates: `svc` and `other` installed, `old` expired.
pub fn env_with_certs() -> Cli {
    let env = Cli::new();
    env.dev_ca_init();
    env.issue("svc", 90);
    env.issue("other", 90);
    env.cert_new("old");
    fs::copy(env.expired_cert("old"), env.cert_file("old", "crt")).unwrap();
    env
}

/// `check --live -c <config>`, run off the test's runtime: (exit code, stdout, stderr).
pub async fn check_live(config: PathBuf) -> (Option<i32>, String, String) {
    let out = tokio::task::spawn_blocking(move || {
        Command::new(super::BIN)
            .args(["check", "--live", "-c"])
            .arg(&config)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
