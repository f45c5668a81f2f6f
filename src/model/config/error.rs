//! What can be wrong with a configuration, and how it is shown: a parse error with the
//! lines around it only for a file that looks like a configuration, a PEM file named by
//! its kind and never echoed, and every validation problem with its field path.

use std::fmt;
use std::path::{Path, PathBuf};

/// One thing wrong with a configuration: where, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The field, e.g. `client_certs[1].key`.
    pub field: String,
    /// What is wrong, naming the value or file.
    pub reason: String,
}

impl Problem {
    /// A problem with `field`.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: cannot read: {source}")]
    Read {
        /// The config file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The YAML did not parse or did not fit the schema (unknown key, wrong type).
    #[error("{path}: {message}{}", snippet.as_deref().map(|s| format!("\n{s}")).unwrap_or_default())]
    Parse {
        /// The config file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
        /// The lines around the error, only for a file that looks like a configuration
        /// (never for one that may be a secret); never sent over HTTP.
        snippet: Option<String>,
    },
    /// The file holds PEM data, e.g. a private key: reported by kind, its content never shown.
    #[error("{path}: holds {kind}, not a YAML configuration; its content is not shown (does -c name the right file?)")]
    NotConfig {
        /// The file.
        path: PathBuf,
        /// What it holds, e.g. `a PEM private key (EC PRIVATE KEY)`.
        kind: String,
    },
    /// The YAML parsed but the values are wrong; every problem is listed.
    #[error("{path}: {} problem(s):\n{}", problems.len(), problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid {
        /// The config file.
        path: PathBuf,
        /// Every problem found.
        problems: Vec<Problem>,
    },
}

impl ConfigError {
    /// The error without the file's lines, for answers that leave the machine (`POST /reload`).
    pub fn without_snippet(&self) -> String {
        match self {
            ConfigError::Parse { path, message, .. } => format!("{}: {message}", path.display()),
            other => other.to_string(),
        }
    }

    /// A file holding PEM data, refused before it is parsed.
    pub(super) fn pem(path: &Path, text: &str) -> Option<Self> {
        pem_kind(text).map(|kind| ConfigError::NotConfig {
            path: path.to_path_buf(),
            kind,
        })
    }

    /// A parse error of `text`; its lines are shown only if it looks like a configuration.
    pub(super) fn parse(path: &Path, text: &str, e: &serde_saphyr::Error) -> Self {
        let (message, snippet) = if looks_like_config(text) {
            let name = path.display().to_string();
            let mut options = serde_saphyr::RenderOptions::default();
            options.source_name = Some(&name);
            // The first line repeats the message; the lines around the error follow.
            let full = e.render_with_options(options);
            let snippet = full.split_once('\n').map(|(_, s)| s.trim_end().to_string());
            (
                e.without_snippet().to_string(),
                snippet.filter(|s| !s.is_empty()),
            )
        } else {
            let at = e
                .location()
                .map(|l| format!(" (line {} column {})", l.line(), l.column()))
                .unwrap_or_default();
            let message = format!(
                "does not look like a configuration (no line starts with a key such as listen:){at}; its content is not shown (does -c name the right file?)"
            );
            (message, None)
        };
        ConfigError::Parse {
            path: path.to_path_buf(),
            message,
            snippet,
        }
    }
}

/// What PEM data `text` holds, if any: `a PEM private key (EC PRIVATE KEY)`,
/// `PEM data (CERTIFICATE)`. A config file holds none.
pub(super) fn pem_kind(text: &str) -> Option<String> {
    let labels: Vec<String> = text
        .split("-----BEGIN ")
        .skip(1)
        .map(|rest| {
            let label = rest.split_once("-----").map_or("", |(l, _)| l);
            label.chars().take(40).collect()
        })
        .collect();
    // A key may follow a certificate in one file: any key block decides the kind.
    match labels.iter().find(|l| l.contains("PRIVATE KEY")) {
        Some(key) => Some(format!("a PEM private key ({key})")),
        None => labels.first().map(|l| format!("PEM data ({l})")),
    }
}

/// Whether a line starts with a mapping key (`listen:`), as every config does and a
/// one-line secret (a server key, an admin token) does not.
pub(super) fn looks_like_config(text: &str) -> bool {
    text.lines().any(|l| {
        l.split_once(':').is_some_and(|(key, rest)| {
            key.starts_with(|c: char| c.is_ascii_alphabetic())
                && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && (rest.is_empty() || rest.starts_with([' ', '\t']))
        })
    })
}

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

    pub(super) fn warning(&mut self, field: impl Into<String>, reason: impl Into<String>) {
        self.warnings.push(Problem::new(field, reason));
    }
}
