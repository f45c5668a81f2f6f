//! `validate`: every section checked, every file named loaded, and every problem listed
//! at once with its field path.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::apps::{check_app_name, AppConfig, AppSettings};
use super::audit::{self, AuditPath};
use super::callers::{self, Caller};
use super::error::{ConfigError, Problem, Report};
use super::files;
use super::types::Config;
use super::upstream::UpstreamConfig;
use super::validated::{LoadedApp, Validated};

/// More worker threads than this is a typo, not a machine.
const MAX_WORKERS: usize = 1024;

/// Checks every value and loads every file named; lists all problems at once.
pub fn validate(path: &Path, config: Config, base_dir: &Path) -> Result<Validated, ConfigError> {
    let mut r = Report::default();
    let (listen, admin_listen) = listeners(&config, &mut r);
    // With fields left at the top beside `apps`, the apps are still checked: every problem
    // is listed at once.
    let app_configs = config.app_list().unwrap_or_else(|p| {
        r.problems.extend(p);
        config.apps.clone()
    });
    let apps: Vec<LoadedApp> = app_configs
        .iter()
        .enumerate()
        .filter_map(|(i, a)| app(&config, i, a, base_dir, &mut r))
        .collect();
    app_listeners(&app_configs, [listen, admin_listen], &mut r);
    r.problems.extend(config.limits.problems());
    r.problems.extend(config.timeouts.problems());
    if config.workers > MAX_WORKERS {
        r.problem(
            "workers",
            format!("{} is more than {MAX_WORKERS}", config.workers),
        );
    }
    let inbound = files::inbound(&config, base_dir, &mut r);
    exposure(&config, &app_configs, listen, admin_listen, &mut r);
    let callers = callers(&config, &app_configs, &mut r);
    let admin_auth_token = files::admin_auth_token(&config, base_dir, &mut r);
    if let Some(a) = &config.audit {
        r.problems.extend(a.problems());
    }
    let audit = config
        .audit
        .as_ref()
        .and_then(|a| a.target(base_dir).map_err(|p| r.problems.push(p)).ok());
    if let Some(AuditPath::File(file)) = &audit {
        // The folders a running proxy watches: the config's and every named file's.
        let named = config.named_files(base_dir);
        let folders = named
            .iter()
            .filter_map(|f| f.parent().map(Path::to_path_buf));
        let watched: Vec<PathBuf> = std::iter::once(base_dir.to_path_buf())
            .chain(folders)
            .collect();
        r.warnings.extend(audit::in_watched_folder(file, &watched));
    }

    match (listen, admin_listen) {
        (Some(listen), Some(admin_listen))
            if r.problems.is_empty() && apps.len() == app_configs.len() =>
        {
            Ok(Validated {
                path: path.to_path_buf(),
                config,
                listen,
                admin_listen,
                apps,
                callers,
                inbound,
                audit,
                admin_auth_token,
                warnings: r.warnings,
            })
        }
        _ => Err(ConfigError::Invalid {
            path: path.to_path_buf(),
            problems: r.problems,
        }),
    }
}

/// One app: its name, upstream, certificates and secrets, each problem under the app's
/// field path (`apps[<name>].` with apps, none for the single-app shape).
fn app(
    config: &Config,
    i: usize,
    a: &AppConfig,
    base_dir: &Path,
    r: &mut Report,
) -> Option<LoadedApp> {
    let mut own = Report::default();
    let at = if config.has_apps() {
        let named = match check_app_name(&a.name) {
            Err(e) => Err(e),
            Ok(()) if config.apps[..i].iter().any(|o| o.name == a.name) => {
                Err(format!("{:?} is given to two apps", a.name))
            }
            Ok(()) => Ok(format!("apps[{}].", a.name)),
        };
        named.unwrap_or_else(|e| {
            own.problem("name", e);
            format!("apps[{i}].")
        })
    } else {
        String::new()
    };
    let listen = a
        .listen
        .as_deref()
        .and_then(|l| parse_addr(l).map_err(|e| own.problem("listen", e)).ok());
    let s = &a.settings;
    let upstream_config = s.upstream.clone();
    if upstream_config.is_none() {
        let missing = match config.has_apps() {
            true => "is missing: give each app its upstream",
            false => "is missing: give upstream (one app), or apps",
        };
        own.problem("upstream", missing);
    }
    let upstream =
        (upstream_config.as_ref()).and_then(|u| u.target().map_err(|p| own.problems.push(p)).ok());
    let extra_roots = files::upstream_ca(s, base_dir, &mut own);
    let certs = files::client_certs(s, base_dir, &mut own);
    own.problems
        .extend(upstream_config.iter().flat_map(UpstreamConfig::problems));
    own.problems.extend(s.routes.problems());
    own.problems.extend(failover(s));
    let (server_key, admin_token) = files::app_secrets(s, base_dir, &mut own);
    let under = |p: Problem| Problem::new(format!("{at}{}", p.field), p.reason);
    r.problems.extend(own.problems.into_iter().map(under));
    r.warnings.extend(own.warnings.into_iter().map(under));
    Some(LoadedApp {
        config: a.clone(),
        listen,
        upstream: upstream?,
        upstream_config: upstream_config?,
        extra_roots,
        certs,
        server_key,
        admin_token,
    })
}

/// `apps[].listen`: each its own address, none of them `listen` or `admin_listen`.
fn app_listeners(apps: &[AppConfig], shared: [Option<SocketAddr>; 2], r: &mut Report) {
    let mut taken: Vec<SocketAddr> = shared.into_iter().flatten().collect();
    for a in apps {
        let Some(addr) = a.listen.as_deref().and_then(|l| parse_addr(l).ok()) else {
            continue;
        };
        if taken.iter().any(|t| overlap(*t, addr)) {
            r.problem(
                format!("apps[{}].listen", a.name),
                format!("{addr} overlaps listen, admin_listen or another app's listen: they cannot all be bound"),
            );
        }
        taken.push(addr);
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
        if overlap(l, a) {
            r.problem(
                "admin_listen",
                format!("{a} and the listen address {l} cannot both be bound"),
            );
        }
    }
    (listen, admin_listen)
}

/// Whether two listeners cannot both be bound: the same port (not 0), and the same address or
/// one that covers the other (`0.0.0.0` every IPv4 address, `::` every address, IPv4 too on a
/// dual-stack host).
fn overlap(a: SocketAddr, b: SocketAddr) -> bool {
    let covers = |x: std::net::IpAddr, y: std::net::IpAddr| {
        x.is_unspecified() && (x.is_ipv6() || y.is_ipv4())
    };
    a.port() != 0
        && a.port() == b.port()
        && (a.ip() == b.ip() || covers(a.ip(), b.ip()) || covers(b.ip(), a.ip()))
}

fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse::<SocketAddr>().map_err(|_| {
        format!("{s:?} is not an address with a port, e.g. 127.0.0.1:8080 or [::1]:8080")
    })
}

/// `active` and `failover_after`.
fn failover(config: &AppSettings) -> Vec<Problem> {
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
    apps: &[AppConfig],
    listen: Option<SocketAddr>,
    admin_listen: Option<SocketAddr>,
    r: &mut Report,
) {
    let app_listens = apps
        .iter()
        .filter_map(|a| a.listen.as_deref().and_then(|l| parse_addr(l).ok()));
    let exposed = listen
        .into_iter()
        .chain(app_listens)
        .find(|l| !l.ip().is_loopback());
    if let Some(l) = exposed {
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
        let mut injected: Vec<&str> = apps.iter().flat_map(|a| a.settings.injected()).collect();
        injected.sort_unstable();
        injected.dedup();
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

/// `callers`: told apart by client certificate, so they need `inbound_tls.client_ca`; their
/// grants name apps that exist.
fn callers(config: &Config, apps: &[AppConfig], r: &mut Report) -> Vec<Caller> {
    let has_client_ca = config
        .inbound_tls
        .as_ref()
        .is_some_and(|t| t.client_ca.is_some());
    if !config.callers.is_empty() && !has_client_ca {
        r.problem(
            "callers",
            "needs inbound_tls.client_ca: callers are told apart by their client certificates",
        );
    }
    let (callers, problems) = callers::callers(&config.callers, apps, config.has_apps());
    r.problems.extend(problems);
    callers
}
