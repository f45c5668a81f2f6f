//! `Secret`: a server key or token, which no log line or error may show.

use std::fmt;
use std::path::Path;

use crate::model::pki;

/// A secret value: Debug and Display print `[redacted]`, so it cannot reach a log line by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value; refuses one that is empty or not a valid header value.
    pub fn new(value: String) -> Result<Self, String> {
        let v = value.trim().to_string();
        if v.is_empty() {
            return Err("is empty".into());
        }
        if http::HeaderValue::from_str(&v).is_err() {
            return Err("contains characters that cannot go in an HTTP header".into());
        }
        Ok(Self(v))
    }

    /// Reads a secret file (surrounding whitespace and a final newline are dropped).
    pub fn from_file(path: &Path) -> Result<Self, String> {
        let text = pki::read_bounded(path)
            .and_then(|b| String::from_utf8(b).map_err(|_| std::io::Error::other("not UTF-8 text")))
            .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        Self::new(text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The value, for the one place that puts it in a header.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}
