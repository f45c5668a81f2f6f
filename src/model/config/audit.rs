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
}

/// Where audit records go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditPath {
    /// Standard error.
    Stderr,
    /// A file, resolved against the config file's folder.
    File(PathBuf),
}

impl AuditPath {
    /// For people: the file's path, or `standard error`.
    pub fn describe(&self) -> String {
        match self {
            Self::Stderr => "standard error".into(),
            Self::File(p) => p.display().to_string(),
        }
    }
}

impl AuditConfig {
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
        let dir = file.parent().unwrap_or(Path::new("/"));
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
