//! `audit`: where the audit trail goes, and whether a mint may go unrecorded.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::error::Problem;
use super::resolve;

/// The audit trail: one JSON line per auth-token mint and admin call, allowed or refused.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// A file (appended to; reopened on reload, for log rotation), or `-` for standard error.
    pub path: String,
    /// Refuse a mint or admin call whose record cannot be written (fail closed).
    #[serde(default)]
    pub required: bool,
    /// With `required`: how long a call waits for its record to be written, and how long a
    /// write may hang (a stuck volume) before the trail counts as failing and `/readyz` says so.
    #[serde(default = "default_write_timeout_ms")]
    pub write_timeout_ms: u64,
}

fn default_write_timeout_ms() -> u64 {
    2_000
}

/// Where audit records go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditPath {
    /// Standard error.
    Stderr,
    /// A file, resolved against the config file's folder.
    File(PathBuf),
}

/// For people: the file's path, or `standard error`.
impl std::fmt::Display for AuditPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Stderr => f.write_str("standard error"),
            Self::File(p) => write!(f, "{}", p.display()),
        }
    }
}

impl AuditConfig {
    /// Problems with `write_timeout_ms`.
    pub(super) fn problems(&self) -> Vec<Problem> {
        let field = "audit.write_timeout_ms";
        let mut out = super::timeouts::too_long(&[(field, self.write_timeout_ms)]);
        if self.write_timeout_ms == 0 {
            out.push(Problem::new(field, "must be greater than 0"));
        }
        out
    }

    /// The resolved path; a problem when it is empty or its folder does not exist.
    pub(super) fn target(&self, base_dir: &Path) -> Result<AuditPath, Problem> {
        let path = self.path.trim();
        if path == "-" {
            return Ok(AuditPath::Stderr);
        }
        if path.is_empty() {
            return Err(Problem::new(
                "audit.path",
                "is empty; give a file, or - for standard error",
            ));
        }
        let file = resolve(base_dir, Path::new(path));
        // A bare file name beside a config named by a bare file name has an empty parent: `.`.
        let dir = match file.parent() {
            Some(d) if d.as_os_str().is_empty() => Path::new("."),
            Some(d) => d,
            None => Path::new("/"),
        };
        if file.is_dir() {
            return Err(Problem::new(
                "audit.path",
                format!("{} is a folder; name a file in it", file.display()),
            ));
        }
        if !dir.is_dir() {
            return Err(Problem::new(
                "audit.path",
                format!(
                    "{}: the folder {} does not exist",
                    file.display(),
                    dir.display()
                ),
            ));
        }
        Ok(AuditPath::File(file))
    }
}

/// A warning when the audit file is in a folder the proxy watches for configuration changes:
/// each record written there would wake the watcher.
pub(super) fn in_watched_folder(file: &Path, watched: &[PathBuf]) -> Option<Problem> {
    let folder = file.parent()?;
    let same = |w: &PathBuf| {
        let real = |p: &Path| p.canonicalize().ok();
        w.as_path() == folder || real(w).is_some_and(|w| real(folder) == Some(w))
    };
    watched.iter().any(same).then(|| {
        Problem::new(
            "audit.path",
            format!(
                "{} is in {}, a folder the proxy watches for configuration and certificate changes: every record written there wakes the watcher; put it in a folder of its own (e.g. /var/log/amity-mtls-proxy/)",
                file.display(),
                folder.display()
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn audit(path: &str) -> AuditConfig {
        AuditConfig {
            path: path.into(),
            required: false,
            write_timeout_ms: default_write_timeout_ms(),
        }
    }

    #[test]
    fn a_bare_file_name_is_in_the_config_files_folder() {
        // `run -c config.yaml`: the config's folder is the empty path.
        let t = audit("audit.jsonl").target(Path::new("")).unwrap();
        assert_eq!(t, AuditPath::File("audit.jsonl".into()));
        let dir = std::env::temp_dir();
        let t = audit("audit.jsonl").target(&dir).unwrap();
        assert_eq!(t, AuditPath::File(dir.join("audit.jsonl")));
        assert_eq!(audit("-").target(Path::new("")).unwrap(), AuditPath::Stderr);
    }

    #[test]
    fn a_missing_folder_or_a_folder_is_refused_by_name() {
        let e = audit("/nonexistent-dir/audit.jsonl")
            .target(Path::new(""))
            .unwrap_err();
        assert_eq!(e.field, "audit.path");
        assert!(e.reason.contains("/nonexistent-dir does not exist"), "{e}");
        let e = audit("/tmp").target(Path::new("")).unwrap_err();
        assert!(e.reason.contains("is a folder"), "{e}");
        assert!(audit(" ").target(Path::new("")).is_err());
    }

    #[test]
    fn an_audit_file_in_a_watched_folder_is_warned_about() {
        let watched = [
            PathBuf::from("/etc/amity"),
            PathBuf::from("/etc/amity/certs"),
        ];
        let w = in_watched_folder(Path::new("/etc/amity/audit.jsonl"), &watched).unwrap();
        assert!(w.reason.contains("wakes the watcher"), "{w}");
        assert!(in_watched_folder(Path::new("/var/log/amity/audit.jsonl"), &watched).is_none());
    }
}
