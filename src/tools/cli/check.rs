//! `check`: everything `run` would load, validated and summarised, like `nginx -t`.

use std::path::Path;
use std::process::ExitCode;

use crate::model::config::{self, ConfigError, LoadedApp, Validated};
use crate::model::pki::{self, CertState};

use super::runtime;

/// The problem with a certificate that is expired or not yet valid at `now`.
fn out_of_validity(field: &str, path: &Path, info: &pki::CertInfo, now: i64) -> Option<String> {
    let path = path.display();
    match info.state(now) {
        CertState::Expired => Some(format!(
            "{field}: {path} expired on {}",
            pki::rfc3339(info.not_after)
        )),
        CertState::NotYetValid => Some(format!(
            "{field}: {path} is not valid before {}",
            pki::rfc3339(info.not_before)
        )),
        CertState::Valid | CertState::Expiring { .. } => None,
    }
}

/// `check`: validate everything a `run` would load and print a summary;
/// with `live`, also try each certificate against the upstream.
pub fn check(config: &Path, live: bool) -> ExitCode {
    let v = match config::load(config) {
        Ok(v) => v,
        Err(e) => {
            match &e {
                ConfigError::Invalid { path, problems } => {
                    eprintln!("{}: {} problem(s):", path.display(), problems.len());
                    for p in problems {
                        eprintln!("  - {p}");
                    }
                }
                other => eprintln!("{other}"),
            }
            eprintln!("check failed");
            return ExitCode::FAILURE;
        }
    };
    let now = pki::now_unix();
    let mut problems = Vec::new();
    println!("config:   {}", v.path.display());
    let listener = match (&v.inbound, &v.config.inbound_tls) {
        (Some(_), Some(t)) => match &t.client_ca {
            Some(ca) => format!("TLS, callers need a certificate from {}", ca.display()),
            None => "TLS, no client certificate asked".to_string(),
        },
        _ => "plain HTTP".to_string(),
    };
    println!("listen:   {} ({listener})", v.listen);
    println!("admin:    {}", v.admin_listen);
    for app in &v.apps {
        problems.extend(app_summary(&v, app, now));
    }
    if let Some(t) = &v.inbound {
        println!(
            "inbound certificate: CN={} expires {} ({} days left)",
            t.info.cn.as_deref().unwrap_or("-"),
            pki::rfc3339(t.info.not_after),
            t.info.days_left(now)
        );
        problems.extend(out_of_validity(
            "inbound_tls.cert",
            &t.cert_path,
            &t.info,
            now,
        ));
    }
    for w in &v.warnings {
        eprintln!("warning: {w}");
    }
    if live {
        match runtime() {
            Ok(rt) => {
                for app in v.apps.iter().filter(|a| !a.certs.is_empty()) {
                    problems.extend(rt.block_on(live_check(&v, app)));
                }
            }
            Err(e) => problems.push(e),
        }
    }
    if problems.is_empty() {
        println!("OK");
        ExitCode::SUCCESS
    } else {
        eprintln!("{}: {} problem(s):", v.path.display(), problems.len());
        for p in &problems {
            eprintln!("  - {p}");
        }
        eprintln!("check failed");
        ExitCode::FAILURE
    }
}

/// Where an app's fields are: nothing for the single-app shape, else `apps[<name>].`.
fn field_of(v: &Validated, app: &LoadedApp) -> String {
    match v.config.has_apps() {
        true => format!("apps[{}].", app.name()),
        false => String::new(),
    }
}

/// Prints an app's upstream and certificates; returns its problems.
fn app_summary(v: &Validated, app: &LoadedApp, now: i64) -> Vec<String> {
    let at = field_of(v, app);
    let indent = if v.config.has_apps() {
        let own = app
            .listen
            .map(|l| format!(", own listener {l}"))
            .unwrap_or_default();
        println!("app {} (at /apps/{}/{own}):", app.name(), app.name());
        "  "
    } else {
        ""
    };
    let mut problems = Vec::new();
    println!(
        "{indent}upstream: {}{}",
        app.upstream.base,
        app.upstream_config
            .ca
            .as_ref()
            .map(|c| format!(" (extra trust roots: {})", c.display()))
            .unwrap_or_default()
    );
    println!(
        "{indent}client certificates: {} of {}",
        app.certs.len(),
        pki::MAX_CERTS
    );
    for (i, c) in app.certs.iter().enumerate() {
        println!(
            "{indent}  {}: CN={} serial={} expires {} ({} days left)",
            c.name,
            c.info.cn.as_deref().unwrap_or("-"),
            c.info.serial,
            pki::rfc3339(c.info.not_after),
            c.info.days_left(now)
        );
        let field = format!("{at}client_certs[{i}].cert");
        if let Some(p) = out_of_validity(&field, &c.cert_path, &c.info, now) {
            problems.push(p);
        } else if let CertState::Expiring { days_left: days } = c.info.state(now) {
            eprintln!(
                "warning: {at}{}: {days} days left; renew at least {} days before expiry",
                c.name,
                pki::RENEW_DAYS
            );
        }
        if c.info.client_auth == Some(false) {
            problems.push(format!(
                "{field}: {} does not allow TLS client authentication",
                c.cert_path.display()
            ));
        }
    }
    if app.certs.is_empty() {
        problems.push(format!(
            "{at}client_certs: none configured; Amity's mTLS check will refuse every call"
        ));
    }
    problems
}

/// `check --live` for one app: each certificate presented to its upstream.
async fn live_check(v: &Validated, app: &LoadedApp) -> Vec<String> {
    let at = field_of(v, app);
    println!("live mTLS handshake with {}:", app.upstream.base);
    let mut problems = Vec::new();
    for (i, c) in app.certs.iter().enumerate() {
        let proof = crate::data::upstream::probe(app, c, &v.config.timeouts).await;
        println!("  {}: {proof}", c.name);
        if !proof.accepted() {
            problems.push(format!("{at}client_certs[{i}] ({}): {proof}", c.name));
        }
    }
    problems
}
