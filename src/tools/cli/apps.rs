//! Which app a `cert` command works on, its configured certificates and its folder: read from
//! a config that may not fully validate yet.

use std::path::{Path, PathBuf};

use crate::model::config::{self, ClientCertConfig, DEFAULT_APP};
use crate::model::pki::{self, CertEntry};

use super::app_certs_dir;

/// A configured certificate: its console name and its resolved cert and key files.
pub(super) type Configured = (String, PathBuf, PathBuf);

/// One app as these commands see it.
pub(super) struct App {
    /// `default` for the single-app shape.
    pub(super) name: String,
    /// Its `client_certs`: the two-slot limit counts these only, as the console does per app.
    pub(super) certs: Vec<Configured>,
    /// Its `active` setting, to show which certificate is presented first.
    pub(super) active: Option<String>,
}

/// The apps of a config that may not fully validate: these commands run while it is still
/// being written, so only the parts they need have to be right.
pub(super) struct Apps {
    /// The file lists `apps`: each app's files then live in certs/APP/.
    pub(super) named: bool,
    /// In config order; exactly one for the single-app shape.
    pub(super) list: Vec<App>,
    /// The file does not exist (worth saying when `--app` names an app that is not there).
    pub(super) missing: bool,
}

impl Apps {
    /// The configured app names, for error messages.
    pub(super) fn names(&self) -> String {
        self.list
            .iter()
            .map(|a| a.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The app a command works on: `--app`, or else the only app there is.
    pub(super) fn choose(&self, config: &Path, app: Option<&str>) -> Result<&App, String> {
        let Some(name) = app else {
            return match self.list.as_slice() {
                [one] => Ok(one),
                many => Err(format!(
                    "{} defines {} apps ({}); pass --app NAME to say which one",
                    config.display(),
                    many.len(),
                    self.names()
                )),
            };
        };
        config::check_app_name(name)?;
        self.list.iter().find(|a| a.name == name).ok_or_else(|| {
            format!(
                "app {name:?} is not in {}{}; configured apps: {}",
                config.display(),
                if self.missing {
                    " (the file does not exist)"
                } else {
                    ""
                },
                self.names()
            )
        })
    }

    /// Where `app`'s files are: `--dir`, else certs/ for the single-app shape (as before
    /// apps existed), else certs/APP/.
    pub(super) fn dir(&self, config: &Path, dir: Option<PathBuf>, app: &App) -> PathBuf {
        app_certs_dir(config, dir, self.named.then_some(app.name.as_str()))
    }

    /// ` --app NAME` for the commands suggested to the user, when they need it.
    pub(super) fn flag(&self, app: &App) -> String {
        if self.named {
            format!(" --app {}", app.name)
        } else {
            String::new()
        }
    }
}

/// Reads the apps and their configured certificates; a missing file means one app, no certificates.
pub(super) fn read_apps(config: &Path) -> Result<Apps, String> {
    let text = match pki::read_bounded(config).map(|b| String::from_utf8_lossy(&b).into_owned()) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Apps {
                named: false,
                list: vec![App {
                    name: DEFAULT_APP.to_string(),
                    certs: Vec::new(),
                    active: None,
                }],
                missing: true,
            })
        }
        Err(e) => return Err(format!("{}: cannot read: {e}", config.display())),
    };
    let why =
        "(the config is read to see which apps and certificates are configured; fix it or pass -c)";
    let parsed = config::parse(config, &text).map_err(|e| format!("{e}\n{why}"))?;
    let base = config.parent().unwrap_or(Path::new(""));
    let resolve = |certs: &[ClientCertConfig]| -> Vec<Configured> {
        certs
            .iter()
            .map(|c| {
                (
                    c.name.clone(),
                    config::resolve(base, &c.cert),
                    config::resolve(base, &c.key),
                )
            })
            .collect()
    };
    let named = parsed.has_apps();
    // A single-app file without `upstream` yet still names its certificates, and the
    // two-slot limit must hold while it is being written too.
    let apps: Vec<App> = match parsed.app_list() {
        Ok(apps) => apps
            .iter()
            .map(|a| App {
                name: a.name.clone(),
                certs: resolve(&a.settings.client_certs),
                active: a.settings.active.clone(),
            })
            .collect(),
        Err(problems) => {
            return Err(format!(
                "{}: {}\n{why}",
                config.display(),
                problems
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            ))
        }
    };
    // App names become folder names: they must be one safe path component, and two apps
    // sharing a folder would share keys and the two slots.
    if named {
        for (i, a) in apps.iter().enumerate() {
            config::check_app_name(&a.name)
                .map_err(|e| format!("{}: apps[{i}].name: {e}", config.display()))?;
            if apps[..i].iter().any(|o: &App| o.name == a.name) {
                return Err(format!(
                    "{}: apps[{i}].name: {:?} is given to two apps",
                    config.display(),
                    a.name
                ));
            }
        }
    }
    Ok(Apps {
        named,
        list: apps,
        missing: false,
    })
}

/// The certificate the proxy presents first now (see [`pki::preferred`]); `None` when no
/// configured certificate is usable.
pub(super) fn first_presented<'a>(app: &App, entries: &'a [CertEntry]) -> Option<&'a str> {
    let configured: Vec<(&str, &pki::CertInfo)> = entries
        .iter()
        .filter(|e| e.configured)
        .filter_map(|e| Some((e.name.as_str(), e.cert.as_ref()?)))
        .collect();
    let n = pki::preferred(&configured, app.active.as_deref(), pki::now_unix())?;
    Some(configured[n].0)
}
