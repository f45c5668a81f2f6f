//! `cert new | import | list`: keys, CSRs and signed certificates in the certs folder.

use std::path::{Path, PathBuf};

use crate::model::config;
use crate::model::pki::{self, CertName, CertStore, CsrRequest};

use super::{certs_dir, CertCommand};

/// Names and resolved paths of the configured certificates, from a config that may not fully validate.
fn configured_certs(config: &Path) -> Result<Vec<(String, PathBuf, PathBuf)>, String> {
    let text = match pki::read_bounded(config).map(|b| String::from_utf8_lossy(&b).into_owned()) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("{}: cannot read: {e}", config.display())),
    };
    let parsed = config::parse(config, &text).map_err(|e| {
        format!(
            "{e}\n(the config is read to see which certificates are configured; fix it or pass -c)"
        )
    })?;
    let base = config.parent().unwrap_or(Path::new(""));
    Ok(parsed
        .client_certs
        .iter()
        .map(|c| {
            (
                c.name.clone(),
                config::resolve(base, &c.cert),
                config::resolve(base, &c.key),
            )
        })
        .collect())
}

pub(super) fn cert(config: &Path, cmd: CertCommand) -> Result<(), String> {
    match cmd {
        CertCommand::New {
            name,
            cn,
            org,
            san,
            key_type,
            force,
            dir,
        } => {
            let name = CertName::parse(&name).map_err(|e| e.to_string())?;
            let configured: Vec<String> =
                configured_certs(config)?.into_iter().map(|c| c.0).collect();
            let store = CertStore::new(certs_dir(config, dir));
            let req = CsrRequest {
                name: name.clone(),
                cn,
                org,
                sans: san,
                key_type,
            };
            let new = store
                .new_csr(&req, force, &configured)
                .map_err(|e| e.to_string())?;
            let csr_path = store.path(name.as_str(), "csr");
            println!("{}", new.csr_pem.trim_end());
            println!();
            println!(
                "private key: {} (mode 0600; it never leaves this machine)",
                store.path(name.as_str(), "key").display()
            );
            println!("CSR:         {}", csr_path.display());
            println!("CSR SHA-256: {}", new.csr_sha256);
            println!();
            println!("Next: in the Amity console (secure mode on), Settings > Security > +Create Certificate,");
            println!("  Certificate Name: {name}");
            println!("  Certificate Signing Request: paste the CSR above");
            println!("then save the certificate Amity returns and run:");
            println!("  amity-mtls-proxy cert import --name {name} --cert <file>");
            if force && store.path(name.as_str(), "crt").exists() {
                eprintln!("warning: {} belongs to the old key and no longer matches; import the new certificate", store.path(name.as_str(), "crt").display());
            }
            Ok(())
        }
        CertCommand::Import {
            name,
            cert,
            force,
            dir,
        } => {
            let name = CertName::parse(&name).map_err(|e| e.to_string())?;
            let store = CertStore::new(certs_dir(config, dir));
            let r = store
                .import(&name, &cert, force)
                .map_err(|e| e.to_string())?;
            let now = pki::now_unix();
            println!(
                "installed {} ({} certificate(s) in the chain)",
                r.path.display(),
                r.chain_len
            );
            println!("  subject:  {}", r.info.subject);
            println!("  serial:   {}", r.info.serial);
            println!(
                "  valid:    {} .. {} ({} days left)",
                pki::rfc3339(r.info.not_before),
                pki::rfc3339(r.info.not_after),
                r.info.days_left(now)
            );
            println!("  SHA-256:  {}", r.info.sha256);
            for w in &r.warnings {
                eprintln!("warning: {w}");
            }
            let configured = configured_certs(config).unwrap_or_default();
            if !configured.iter().any(|c| c.0 == name.as_str()) {
                println!();
                println!("Next: add it to {} under client_certs:", config.display());
                println!(
                    "  - name: {name}\n    cert: {}\n    key: {}",
                    r.path.display(),
                    store.path(name.as_str(), "key").display()
                );
            }
            Ok(())
        }
        CertCommand::List { json, dir } => {
            let configured = configured_certs(config)?;
            let store = CertStore::new(certs_dir(config, dir));
            let entries = store.list(&configured);
            if json {
                let s = serde_json::to_string_pretty(&entries).map_err(|e| e.to_string())?;
                println!("{s}");
            } else {
                print_cert_table(&entries);
            }
            Ok(())
        }
    }
}

fn print_cert_table(entries: &[pki::CertEntry]) {
    if entries.is_empty() {
        println!("no certificates yet; start with `cert new --name NAME`");
        return;
    }
    let rows: Vec<[String; 9]> = entries
        .iter()
        .map(|e| {
            let c = e.cert.as_ref();
            let date = |t: Option<i64>| t.map(pki::rfc3339).unwrap_or_else(|| "-".into());
            [
                e.name.clone(),
                c.and_then(|c| c.cn.clone()).unwrap_or_else(|| "-".into()),
                c.map(|c| c.serial.clone()).unwrap_or_else(|| "-".into()),
                date(c.map(|c| c.not_before)),
                date(c.map(|c| c.not_after)),
                e.days_left
                    .map(|d| d.to_string())
                    .unwrap_or_else(|| "-".into()),
                e.state.label().to_string(),
                if e.configured { "yes" } else { "no" }.to_string(),
                c.map(|c| c.sha256.clone()).unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let head = [
        "NAME",
        "CN",
        "SERIAL",
        "NOT BEFORE",
        "NOT AFTER",
        "DAYS",
        "STATE",
        "CONFIGURED",
        "SHA-256",
    ];
    let mut widths = head.map(str::len);
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cells: &[String]| {
        cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    println!("{}", line(&head.map(String::from)));
    for r in &rows {
        println!("{}", line(r));
    }
    for e in entries.iter().filter(|e| e.detail.is_some()) {
        println!("{}: {}", e.name, e.detail.as_deref().unwrap_or(""));
    }
}
