//! What a certificate says: subject, issuer, serial, validity, fingerprint, identities.

use std::fmt::Write as _;

use serde::Serialize;

use super::RENEW_DAYS;

/// SHA-256 of `bytes` as colon-separated upper-case hex, as `openssl -fingerprint` prints it.
pub fn sha256_fingerprint(bytes: &[u8]) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    hex(d.as_ref(), ":")
}

fn hex(bytes: &[u8], sep: &str) -> String {
    let mut s = String::with_capacity(bytes.len() * 3);
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 {
            s.push_str(sep);
        }
        let _ = write!(s, "{b:02X}");
    }
    s
}

/// A DER INTEGER's bytes as hex without the sign-padding zero, as `openssl x509 -serial` prints it.
fn serial_hex(raw: &[u8]) -> String {
    match raw {
        [0, rest @ ..] if rest.first().is_some_and(|b| b & 0x80 != 0) => hex(rest, ""),
        _ => hex(raw, ""),
    }
}

/// What a certificate says, as users and the admin endpoints show it.
#[derive(Debug, Clone, Serialize)]
pub struct CertInfo {
    /// Full subject DN.
    pub subject: String,
    /// Subject common name, if any.
    pub cn: Option<String>,
    /// Issuer DN.
    pub issuer: String,
    /// Serial number, upper-case hex.
    pub serial: String,
    /// Start of validity, unix seconds.
    pub not_before: i64,
    /// End of validity, unix seconds.
    pub not_after: i64,
    /// SHA-256 of the DER certificate.
    pub sha256: String,
    /// `Some(true)` when an EKU allows client auth, `Some(false)` when an EKU forbids it, `None` without EKU.
    pub client_auth: Option<bool>,
    /// DER SubjectPublicKeyInfo, to match against a private key.
    #[serde(skip)]
    pub spki: Vec<u8>,
}

impl CertInfo {
    /// Parses a DER certificate.
    pub fn from_der(der: &[u8]) -> Result<Self, String> {
        let (_, x) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| format!("not a valid X.509 certificate: {e}"))?;
        let cn = x
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_string);
        let client_auth = match x.extended_key_usage() {
            Ok(Some(eku)) => Some(eku.value.client_auth || eku.value.any),
            Ok(None) => None,
            Err(e) => return Err(format!("bad extended key usage extension: {e}")),
        };
        Ok(Self {
            subject: x.subject().to_string(),
            cn,
            issuer: x.issuer().to_string(),
            serial: serial_hex(x.raw_serial()),
            not_before: x.validity().not_before.timestamp(),
            not_after: x.validity().not_after.timestamp(),
            sha256: sha256_fingerprint(der),
            client_auth,
            spki: x.public_key().raw.to_vec(),
        })
    }

    /// Whole days of validity left at `now` (negative once expired).
    pub fn days_left(&self, now: i64) -> i64 {
        (self.not_after - now).div_euclid(86_400)
    }

    /// Where the certificate stands at `now`: the one place that decides it. Both ends of the
    /// validity period count as valid (RFC 5280 section 4.1.2.5); past `not_after` wins over
    /// before `not_before`, so a certificate that ends before it starts is expired.
    pub fn state(&self, now: i64) -> CertState {
        if now > self.not_after {
            CertState::Expired
        } else if now < self.not_before {
            CertState::NotYetValid
        } else {
            match self.days_left(now) {
                days_left if days_left < RENEW_DAYS => CertState::Expiring { days_left },
                _ => CertState::Valid,
            }
        }
    }
}

/// Where a certificate stands in its validity period at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertState {
    /// Before its not-before.
    NotYetValid,
    /// Valid, with at least [`RENEW_DAYS`] whole days left.
    Valid,
    /// Valid, with fewer than [`RENEW_DAYS`] whole days left: time to renew.
    Expiring {
        /// Whole days left (0 on the last day).
        days_left: i64,
    },
    /// Past its not-after.
    Expired,
}

impl CertState {
    /// Whether the certificate may be presented: valid, expiring or not.
    pub fn is_usable(self) -> bool {
        matches!(self, CertState::Valid | CertState::Expiring { .. })
    }
}

/// Identities in a certificate, as `callers` matches them: SAN URIs, then SAN DNS names; the
/// CN only when there are neither (RFC 6125 section 6.4.4: beside SANs, a CN names no one, and
/// a CA that checks SANs may let any CN through).
pub fn identities(der: &[u8]) -> Vec<String> {
    let Ok((_, x)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    let mut uris = Vec::new();
    let mut dns = Vec::new();
    if let Ok(Some(san)) = x.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                x509_parser::extensions::GeneralName::URI(u) => uris.push(u.to_string()),
                x509_parser::extensions::GeneralName::DNSName(d) => dns.push(d.to_string()),
                _ => {}
            }
        }
    }
    if !uris.is_empty() || !dns.is_empty() {
        uris.append(&mut dns);
        return uris;
    }
    x.subject()
        .iter_common_name()
        .filter_map(|c| c.as_str().ok().map(str::to_string))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, KeyPair};

    #[test]
    fn serials_print_as_openssl_does() {
        assert_eq!(serial_hex(&[0x00, 0x8A, 0x01]), "8A01");
        assert_eq!(serial_hex(&[0x00, 0x7A]), "007A");
        assert_eq!(serial_hex(&[0x12, 0x34]), "1234");
    }

    #[test]
    fn the_cn_is_an_identity_only_without_sans() {
        use rcgen::SanType;
        let cert = |sans: Vec<SanType>| {
            let mut p = CertificateParams::default();
            p.distinguished_name.push(DnType::CommonName, "listed-cn");
            p.subject_alt_names = sans;
            let key = KeyPair::generate().unwrap();
            identities(p.self_signed(&key).unwrap().der())
        };
        assert_eq!(cert(vec![]), ["listed-cn"]);
        assert_eq!(
            cert(vec![
                SanType::DnsName("svc.fleet".try_into().unwrap()),
                SanType::URI("spiffe://fleet/svc".try_into().unwrap()),
            ]),
            ["spiffe://fleet/svc", "svc.fleet"]
        );
        assert_eq!(
            cert(vec![SanType::IpAddress([127, 0, 0, 1].into())]),
            ["listed-cn"],
            "an IP SAN is no identity, so the CN still is"
        );
    }

    /// A certificate valid for `days` days from unix time 1,000,000.
    fn valid_for(days: i64) -> (CertInfo, i64, i64) {
        let (nb, na) = (1_000_000, 1_000_000 + days * 86_400);
        let info = CertInfo {
            subject: "CN=t".into(),
            cn: Some("t".into()),
            issuer: "CN=ca".into(),
            serial: "01".into(),
            not_before: nb,
            not_after: na,
            sha256: String::new(),
            client_auth: Some(true),
            spki: Vec::new(),
        };
        (info, nb, na)
    }

    #[test]
    fn validity_starts_at_not_before_and_ends_after_not_after() {
        let (c, nb, na) = valid_for(90);
        assert_eq!(c.state(nb - 1), CertState::NotYetValid);
        assert_eq!(c.state(nb), CertState::Valid);
        assert!(c.state(nb).is_usable());
        assert_eq!(c.state(na), CertState::Expiring { days_left: 0 });
        assert!(c.state(na).is_usable(), "the last second still counts");
        assert_eq!(c.state(na + 1), CertState::Expired);
        assert!(!c.state(na + 1).is_usable());
        assert!(!c.state(nb - 1).is_usable());
    }

    #[test]
    fn renewal_is_due_under_thirty_whole_days() {
        let (c, _, na) = valid_for(90);
        let day = 86_400;
        assert_eq!(c.state(na - RENEW_DAYS * day), CertState::Valid);
        assert_eq!(
            c.state(na - RENEW_DAYS * day + 1),
            CertState::Expiring { days_left: 29 }
        );
        assert_eq!(c.state(na - 7 * day), CertState::Expiring { days_left: 7 });
        assert_eq!(c.state(na - 1), CertState::Expiring { days_left: 0 });
    }

    #[test]
    fn a_short_certificate_is_expiring_from_its_first_second() {
        let (c, nb, _) = valid_for(10);
        assert_eq!(c.state(nb), CertState::Expiring { days_left: 10 });
        assert_eq!(c.state(nb - 1), CertState::NotYetValid);
    }

    #[test]
    fn a_certificate_ending_before_it_starts_is_expired() {
        let (mut c, nb, _) = valid_for(1);
        c.not_after = nb - 10;
        assert_eq!(c.state(nb), CertState::Expired);
        assert_eq!(c.state(nb - 5), CertState::Expired);
    }
}
