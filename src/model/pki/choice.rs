//! Which configured client certificate is presented first: the one rule the proxy serves by
//! and `cert list` reports.

use super::CertInfo;

/// A certificate the choice can fall on.
pub trait Candidate {
    /// Console name.
    fn name(&self) -> &str;
    /// What the certificate says.
    fn info(&self) -> &CertInfo;

    /// Whether it may be presented at `now`: an expired or not yet valid one never is.
    fn usable_at(&self, now: i64) -> bool {
        self.info().state(now).is_usable()
    }
}

impl Candidate for (&str, &CertInfo) {
    fn name(&self) -> &str {
        self.0
    }

    fn info(&self) -> &CertInfo {
        self.1
    }
}

/// The certificate to present first: `active` if it is valid now, else the valid one that
/// expires last; `None` when none is valid now.
pub fn preferred<C: Candidate>(ids: &[C], active: Option<&str>, now: i64) -> Option<usize> {
    if let Some(n) = active.and_then(|a| ids.iter().position(|i| i.name() == a && i.usable_at(now)))
    {
        return Some(n);
    }
    ids.iter()
        .enumerate()
        .filter(|(_, i)| i.usable_at(now))
        .max_by_key(|(_, i)| i.info().not_after)
        .map(|(n, _)| n)
}
