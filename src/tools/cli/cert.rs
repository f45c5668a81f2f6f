//! `cert new | import | list`: keys, CSRs and signed certificates in the certs folder, one
//! folder per app (certs/APP/) when the config lists `apps`.

use std::path::{Path, PathBuf};

use crate::model::pki::{self, CertEntry, CertName, CertStore, CsrRequest};

use super::apps::{first_presented, read_apps, App, Apps};
use super::CertCommand;

pub(super) fn cert(config: &Path, cmd: CertCommand) -> Result<(), String> {
    match cmd {
        CertCommand::New {
            name,
            cn,
            org,
            san,
            key_type,
            force,
            app,
            dir,
        } => {
            let name = CertName::parse(&name).map_err(|e| e.to_string())?;
            let apps = read_apps(config)?;
            let app = apps.choose(config, app.as_deref())?;
            let configured: Vec<String> = app.certs.iter().map(|c| c.0.clone()).collect();
            let store = CertStore::new(apps.dir(config, dir, app));
            let req = CsrRequest {
                name: name.clone(),
                cn,
                org,
                sans: san,
                key_type,
            };
            let new = store.new_csr(&req, force, &configured).map_err(|e| {
                // The limit is per app: say which app's slots are full.
                if apps.named {
                    format!("app {:?}: {e}", app.name)
                } else {
                    e.to_string()
                }
            })?;
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
            if apps.named {
                println!(
                    "Next: in the Amity console of app {} (secure mode on), Settings > Security > +Create Certificate,",
                    app.name
                );
            } else {
                println!("Next: in the Amity console (secure mode on), Settings > Security > +Create Certificate,");
            }
            println!("  Certificate Name: {name}");
            println!("  Certificate Signing Request: paste the CSR above");
            println!("then save the certificate Amity returns and run:");
            println!(
                "  amity-mtls-proxy cert import{} --name {name} --cert <file>",
                apps.flag(app)
            );
            if force && store.path(name.as_str(), "crt").exists() {
                eprintln!("warning: {} belongs to the old key and no longer matches; import the new certificate", store.path(name.as_str(), "crt").display());
            }
            Ok(())
        }
        CertCommand::Import {
            name,
            cert,
            force,
            app,
            dir,
        } => {
            let name = CertName::parse(&name).map_err(|e| e.to_string())?;
            let apps = read_apps(config)?;
            let app = apps.choose(config, app.as_deref())?;
            let store = CertStore::new(apps.dir(config, dir, app));
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
            if !app.certs.iter().any(|c| c.0 == name.as_str()) {
                println!();
                if apps.named {
                    println!(
                        "Next: add it to {} under client_certs of app {}:",
                        config.display(),
                        app.name
                    );
                } else {
                    println!("Next: add it to {} under client_certs:", config.display());
                }
                println!(
                    "  - name: {name}\n    cert: {}\n    key: {}",
                    r.path.display(),
                    store.path(name.as_str(), "key").display()
                );
            }
            Ok(())
        }
        CertCommand::List { json, app, dir } => {
            let apps = read_apps(config)?;
            if !apps.named {
                // The single-app shape: one folder and today's output, unchanged.
                let app = apps.choose(config, app.as_deref())?;
                let store = CertStore::new(apps.dir(config, dir, app));
                let entries = store.list(&app.certs);
                if json {
                    let s = serde_json::to_string_pretty(&entries).map_err(|e| e.to_string())?;
                    println!("{s}");
                } else {
                    print_cert_table(&entries, "");
                }
                return Ok(());
            }
            let chosen: Vec<&App> = match app.as_deref() {
                Some(a) => vec![apps.choose(config, Some(a))?],
                None => apps.list.iter().collect(),
            };
            if dir.is_some() && chosen.len() > 1 {
                return Err(format!(
                    "--dir names one app's folder, and {} defines {} apps ({}); pass --app NAME with --dir",
                    config.display(),
                    chosen.len(),
                    apps.names()
                ));
            }
            list_apps(config, &apps, &chosen, dir, json)
        }
    }
}

/// `cert list` for a config with `apps`: every chosen app's certificates, app by app, each
/// with the certificate its app presents first. JSON: one array, each entry with `app` and
/// `active` added, so that one `jq` filter serves one app or all.
fn list_apps(
    config: &Path,
    apps: &Apps,
    chosen: &[&App],
    dir: Option<PathBuf>,
    json: bool,
) -> Result<(), String> {
    let mut all = Vec::new();
    for (i, app) in chosen.iter().enumerate() {
        let folder = apps.dir(config, dir.clone(), app);
        let entries = CertStore::new(&folder).list(&app.certs);
        let active = first_presented(app, &entries);
        if json {
            for e in &entries {
                let mut v = serde_json::to_value(e).map_err(|e| e.to_string())?;
                if let Some(o) = v.as_object_mut() {
                    o.insert("app".into(), app.name.clone().into());
                    o.insert("active".into(), (Some(e.name.as_str()) == active).into());
                }
                all.push(v);
            }
            continue;
        }
        if i > 0 {
            println!();
        }
        println!(
            "app {} ({}): active {}",
            app.name,
            folder.display(),
            active.unwrap_or("none (no valid configured certificate)")
        );
        print_cert_table(&entries, &apps.flag(app));
    }
    if json {
        let s = serde_json::to_string_pretty(&all).map_err(|e| e.to_string())?;
        println!("{s}");
    }
    Ok(())
}

/// The table of one folder; `app_flag` is ` --app NAME` when the hint needs it.
fn print_cert_table(entries: &[CertEntry], app_flag: &str) {
    if entries.is_empty() {
        println!("no certificates yet; start with `cert new{app_flag} --name NAME`");
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
