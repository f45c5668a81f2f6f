//! `validate`: every section checked, every file named loaded, and every problem listed
//! at once with its field path.

use std::net::SocketAddr;
use std::path::Path;

use super::error::{ConfigError, Problem};
use super::files;
use super::types::Config;
use super::validated::Validated;

/// More worker threads than this is a typo, not a machine.
const MAX_WORKERS: usize = 1024;

/// Problems (which make a configuration invalid) and warnings (allowed but unsafe).
#[derive(Debug, Default)]
pub(super) struct Report {
    pub(super) problems: Vec<Problem>,
    pub(super) warnings: Vec<Problem>,
}

impl Report {
    /// Records a problem with `field`.
    pub(super) fn problem(&mut self, field: impl Into<String>, reason: impl Into<String>) {
        self.problems.push(Problem::new(field, reason));
    }

    fn warning(&mut self, field: impl Into<String>, reason: impl Into<String>) {
        self.warnings.push(Problem::new(field, reason));
    }
}

/// Checks every value and loads every file named; lists all problems at once.
pub fn validate(path: &Path, config: Config, base_dir: &Path) -> Result<Validated, ConfigError> {
    let mut r = Report::default();
    let (listen, admin_listen) = listeners(&config, &mut r);
    let upstream = config
        .upstream
        .target()
        .map_err(|p| r.problems.push(p))
        .ok();
    let extra_roots = files::upstream_ca(&config, base_dir, &mut r);
    let certs = files::client_certs(&config, base_dir, &mut r);
    r.problems.extend(config.limits.problems());
    r.problems.extend(config.timeouts.problems());
    r.problems.extend(config.upstream.problems());
    r.problems.extend(config.routes.problems());
    r.problems.extend(failover(&config));
    if config.workers > MAX_WORKERS {
        r.problem(
            "workers",
            format!("{} is more than {MAX_WORKERS}", config.workers),
        );
    }
    let inbound = files::inbound(&config, base_dir, &mut r);
    exposure(&config, listen, admin_listen, &mut r);
    r.problems.extend(callers(&config));
    let secrets = files::secrets(&config, base_dir, &mut r);

    match (listen, admin_listen, upstream) {
        (Some(listen), Some(admin_listen), Some(upstream)) if r.problems.is_empty() => {
            Ok(Validated {
                path: path.to_path_buf(),
                config,
                listen,
                admin_listen,
                upstream,
                extra_roots,
                certs,
                inbound,
                server_key: secrets.server_key,
                admin_token: secrets.admin_token,
                admin_auth_token: secrets.admin_auth_token,
                warnings: r.warnings,
            })
        }
        _ => Err(ConfigError::Invalid {
            path: path.to_path_buf(),
            problems: r.problems,
        }),
    }
}

/// `listen` and `admin_listen`: addresses with a port, not the same one.
fn listeners(config: &Config, r: &mut Report) -> (Option<SocketAddr>, Option<SocketAddr>) {
    let listen = parse_addr(&config.listen)
        .map_err(|e| r.problem("listen", e))
        .ok();
    let admin_listen = parse_addr(&config.admin_listen)
        .map_err(|e| r.problem("admin_listen", e))
        .ok();
    if let (Some(l), Some(a)) = (listen, admin_listen) {
        if l == a && l.port() != 0 {
            r.problem("admin_listen", format!("{a} is also the listen address"));
        }
    }
    (listen, admin_listen)
}

fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse::<SocketAddr>().map_err(|_| {
        format!("{s:?} is not an address with a port, e.g. 127.0.0.1:8080 or [::1]:8080")
    })
}

/// `active` and `failover_after`.
fn failover(config: &Config) -> Vec<Problem> {
    let mut out = Vec::new();
    if let Some(a) = &config.active {
        if !config.client_certs.iter().any(|c| &c.name == a) {
            out.push(Problem::new(
                "active",
                format!("{a:?} is not the name of a certificate under client_certs"),
            ));
        }
    }
    if config.failover_after == 0 {
        out.push(Problem::new("failover_after", "must be greater than 0"));
    }
    out
}

/// Who can reach the listeners: plain HTTP or TLS without caller certificates on a
/// non-loopback address is refused unless explicitly allowed (then a warning), and a
/// non-loopback admin listener is warned about.
fn exposure(
    config: &Config,
    listen: Option<SocketAddr>,
    admin_listen: Option<SocketAddr>,
    r: &mut Report,
) {
    if let Some(l) = listen.filter(|l| !l.ip().is_loopback()) {
        if config.inbound_tls.is_none() {
            if config.allow_plaintext_non_loopback {
                r.warning(
                    "allow_plaintext_non_loopback",
                    format!("plain HTTP on {l}, which is not a loopback address: anyone who reaches it can use the proxy's certificates"),
                );
            } else {
                r.problem(
                    "listen",
                    format!("{l} is not a loopback address and inbound_tls is not set: anyone who reaches it could use the proxy's keys; set inbound_tls (with client_ca), or allow_plaintext_non_loopback: true"),
                );
            }
        }
        let injected: Vec<&str> = [
            ("server_key_file", config.server_key_file.is_some()),
            ("server_key_env", config.server_key_env.is_some()),
            ("admin_token_file", config.admin_token_file.is_some()),
        ]
        .into_iter()
        .filter_map(|(f, set)| set.then_some(f))
        .collect();
        let no_client_ca = config
            .inbound_tls
            .as_ref()
            .is_some_and(|t| t.client_ca.is_none());
        if no_client_ca && !injected.is_empty() {
            let injected = injected.join(" and ");
            if config.allow_unauthenticated_callers {
                r.warning(
                    "allow_unauthenticated_callers",
                    format!("inbound_tls has no client_ca on {l}, which is not a loopback address, and the proxy injects {injected}: anyone who reaches it can mint tokens"),
                );
            } else {
                r.problem(
                    "inbound_tls.client_ca",
                    format!("is not set, but listen {l} is not a loopback address and the proxy injects {injected}: anyone who reaches it could mint tokens; set inbound_tls.client_ca, or allow_unauthenticated_callers: true"),
                );
            }
        }
    }
    if let Some(a) = admin_listen.filter(|a| !a.ip().is_loopback()) {
        let token = match config.admin_auth_token_file {
            Some(_) => "",
            None => " and consider admin_auth_token_file",
        };
        r.warning(
            "admin_listen",
            format!("{a} is not a loopback address: whoever reaches it can read /certs and /metrics and ask for reloads; let only probes and scrapers reach it (on Kubernetes, the NetworkPolicy in deploy/kubernetes){token}"),
        );
    }
}

/// `callers`: told apart by client certificate, so they need `inbound_tls.client_ca`; the
/// route classes are checked as they are parsed.
fn callers(config: &Config) -> Vec<Problem> {
    let mut out = Vec::new();
    let has_client_ca = config
        .inbound_tls
        .as_ref()
        .is_some_and(|t| t.client_ca.is_some());
    if !config.callers.is_empty() && !has_client_ca {
        out.push(Problem::new(
            "callers",
            "needs inbound_tls.client_ca: callers are told apart by their client certificates",
        ));
    }
    for (i, c) in config.callers.iter().enumerate() {
        if c.identity.trim().is_empty() {
            out.push(Problem::new(format!("callers[{i}].identity"), "is empty"));
        }
    }
    out
}
