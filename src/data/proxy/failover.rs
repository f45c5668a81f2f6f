//! Which client certificate is presented first, and when to switch to another: after
//! `failover_after` consecutive rejections of the active one. No I/O here; the exchange that
//! uses it is in `send.rs`.

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use crate::model::pki::{preferred, Candidate};

/// The active certificate (an index into a generation's list) and its rejections in a row.
pub(super) struct Failover {
    active: AtomicUsize,
    rejections: AtomicU32,
    after: u32,
}

impl Failover {
    /// Starts on the [`preferred`] certificate; switches after `after` rejections in a row.
    pub(super) fn new<C: Candidate>(ids: &[C], active: Option<&str>, after: u32, now: i64) -> Self {
        Self {
            active: AtomicUsize::new(preferred(ids, active, now).unwrap_or(0)),
            rejections: AtomicU32::new(0),
            after,
        }
    }

    /// The index of the active certificate (which may be unusable now).
    pub(super) fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// Usable certificates of `ids` (valid now), the active one first; no allocation per request.
    pub(super) fn usable<'a, C: Candidate>(
        &self,
        ids: &'a [C],
        now: i64,
    ) -> impl Iterator<Item = (usize, &'a C)> + 'a {
        let active = self.active();
        let valid = move |n: usize| ids.get(n).filter(|i| i.usable_at(now)).map(|i| (n, i));
        valid(active).into_iter().chain(
            (0..ids.len())
                .filter(move |n| *n != active)
                .filter_map(valid),
        )
    }

    /// Certificate `n` was accepted: the active one's count starts again.
    pub(super) fn accepted(&self, n: usize) {
        // Read first: a store on every request would bounce the line between workers.
        if n == self.active() && self.rejections.load(Ordering::Relaxed) != 0 {
            self.rejections.store(0, Ordering::Relaxed);
        }
    }

    /// Certificate `from` was rejected and `to` is tried instead. After `after` consecutive
    /// rejections of the active one, `to` becomes active: returns the count when it switched.
    pub(super) fn rejected(&self, from: usize, to: usize) -> Option<u32> {
        if from != self.active() {
            return None;
        }
        let n = self.rejections.fetch_add(1, Ordering::Relaxed) + 1;
        let switched = n >= self.after
            && self
                .active
                .compare_exchange(from, to, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok();
        if !switched {
            return None;
        }
        self.rejections.store(0, Ordering::Relaxed);
        Some(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::pki::CertInfo;

    const NOW: i64 = 1_800_000_000;
    const DAY: i64 = 86_400;

    struct Cert(&'static str, CertInfo);

    impl Candidate for Cert {
        fn name(&self) -> &str {
            self.0
        }
        fn info(&self) -> &CertInfo {
            &self.1
        }
    }

    /// A certificate valid from `from` to `to` days from now.
    fn cert(name: &'static str, from: i64, to: i64) -> Cert {
        Cert(
            name,
            CertInfo {
                subject: format!("CN={name}"),
                cn: Some(name.into()),
                issuer: "CN=test".into(),
                serial: name.to_uppercase(),
                not_before: NOW + from * DAY,
                not_after: NOW + to * DAY,
                sha256: String::new(),
                client_auth: Some(true),
                spki: Vec::new(),
            },
        )
    }

    fn names<'a>(f: &Failover, ids: &'a [Cert]) -> Vec<&'a str> {
        f.usable(ids, NOW).map(|(_, c)| c.0).collect()
    }

    #[test]
    fn the_configured_active_certificate_is_preferred_while_valid() {
        let ids = [cert("a", -10, 20), cert("b", -10, 90)];
        assert_eq!(preferred(&ids, Some("a"), NOW), Some(0));
        assert_eq!(preferred(&ids, Some("b"), NOW), Some(1));
        // Not configured, or unknown: the valid one that expires last.
        assert_eq!(preferred(&ids, None, NOW), Some(1));
        assert_eq!(preferred(&ids, Some("c"), NOW), Some(1));
    }

    #[test]
    fn an_invalid_active_certificate_gives_way_to_a_valid_one() {
        let ids = [
            cert("expired", -90, -1),
            cert("soon", -10, 5),
            cert("future", 1, 400),
        ];
        assert_eq!(preferred(&ids, Some("expired"), NOW), Some(1));
        assert_eq!(preferred(&ids, Some("future"), NOW), Some(1));
        assert_eq!(preferred(&[cert("old", -90, -1)], None, NOW), None);
    }

    #[test]
    fn expired_and_not_yet_valid_certificates_are_never_presented() {
        let ids = [
            cert("expired", -90, -1),
            cert("b", -10, 30),
            cert("future", 1, 400),
            cert("c", -10, 60),
        ];
        let f = Failover::new(&ids, Some("b"), 1, NOW);
        assert_eq!(names(&f, &ids), ["b", "c"]);
        let none = [cert("expired", -90, -1)];
        assert_eq!(
            Failover::new(&none, None, 1, NOW)
                .usable(&none, NOW)
                .count(),
            0
        );
    }

    #[test]
    fn the_active_certificate_is_tried_first_then_the_others_in_order() {
        let ids = [cert("a", -1, 30), cert("b", -1, 90), cert("c", -1, 60)];
        let f = Failover::new(&ids, Some("c"), 1, NOW);
        assert_eq!(names(&f, &ids), ["c", "a", "b"]);
    }

    #[test]
    fn after_n_rejections_in_a_row_the_other_takes_over() {
        let ids = [cert("a", -1, 30), cert("b", -1, 90)];
        let f = Failover::new(&ids, Some("a"), 3, NOW);
        assert_eq!(f.rejected(0, 1), None);
        assert_eq!(f.rejected(0, 1), None);
        assert_eq!(f.active(), 0);
        assert_eq!(f.rejected(0, 1), Some(3));
        assert_eq!(f.active(), 1);
        assert_eq!(names(&f, &ids), ["b", "a"]);
        // The count starts again for the new active one.
        assert_eq!(f.rejected(1, 0), None);
        assert_eq!(f.active(), 1);
    }

    #[test]
    fn a_success_resets_the_count() {
        let ids = [cert("a", -1, 30), cert("b", -1, 90)];
        let f = Failover::new(&ids, Some("a"), 2, NOW);
        assert_eq!(f.rejected(0, 1), None);
        f.accepted(0);
        assert_eq!(f.rejected(0, 1), None);
        assert_eq!(f.active(), 0, "one rejection since the last success");
        assert_eq!(f.rejected(0, 1), Some(2));
        assert_eq!(f.active(), 1);
    }

    #[test]
    fn rejections_of_a_standby_certificate_do_not_count() {
        let ids = [cert("a", -1, 30), cert("b", -1, 90)];
        let f = Failover::new(&ids, Some("a"), 1, NOW);
        assert_eq!(f.rejected(1, 0), None);
        assert_eq!(f.active(), 0);
        assert_eq!(
            f.rejected(0, 1),
            Some(1),
            "failover_after: 1 switches at once"
        );
    }
}
