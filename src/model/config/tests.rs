use std::path::Path;

use super::error::{looks_like_config, pem_kind};
use super::*;

fn parse_str(s: &str) -> Result<Config, ConfigError> {
    parse(Path::new("t.yaml"), s)
}

#[test]
fn secrets_never_print() {
    let s = Secret::new("top-secret\n".into()).unwrap();
    assert_eq!(s.expose(), "top-secret");
    assert_eq!(format!("{s} {s:?}"), "[redacted] [redacted]");
    assert!(Secret::new("  ".into()).is_err());
    assert!(Secret::new("a\u{1}b".into()).is_err());
}

#[test]
fn regions_name_the_hosts_of_amitys_current_documentation() {
    for (region, host) in [
        ("eu", "apix.eu.amity.co"),
        ("sg", "apix.sg.amity.co"),
        ("us", "apix.us.amity.co"),
    ] {
        let u = UpstreamConfig {
            region: Some(region.into()),
            ..Default::default()
        };
        let t = u.target().unwrap();
        assert_eq!((t.host.as_str(), t.port), (host, 443), "region {region}");
        assert_eq!(t.path_prefix, "", "region {region}");
    }
}

#[test]
fn region_and_url_resolve() {
    let u = UpstreamConfig {
        region: Some("eu".into()),
        ..Default::default()
    };
    let t = u.target().unwrap();
    assert_eq!(t.host, "apix.eu.amity.co");
    assert_eq!(t.port, 443);
    let u = UpstreamConfig {
        url: Some("https://127.0.0.1:9443/".into()),
        ..Default::default()
    };
    let t = u.target().unwrap();
    assert_eq!(
        (t.host.as_str(), t.port, t.path_prefix.as_str()),
        ("127.0.0.1", 9443, "")
    );
    let u = UpstreamConfig {
        url: Some("http://127.0.0.1:9443".into()),
        ..Default::default()
    };
    assert!(u.target().unwrap_err().reason.contains("https://"));
}

#[test]
fn cert_rejected_answers_default_to_nginx_and_are_checked() {
    let c = parse_str("listen: 127.0.0.1:1\nupstream: {region: sg}\n").unwrap();
    assert_eq!(
        c.upstream.cert_rejected_answers,
        CertRejectedAnswers::default()
    );
    assert_eq!(c.upstream.cert_rejected_answers.0[0].status, 400);
    assert!(c.upstream.cert_rejected_answers.problems().is_empty());
    let c =
        parse_str("listen: 127.0.0.1:1\nupstream:\n  region: sg\n  cert_rejected_answers: []\n")
            .unwrap();
    assert!(c.upstream.cert_rejected_answers.0.is_empty());
    let c = parse_str(&format!(
        "listen: 127.0.0.1:1\nupstream:\n  region: sg\n  cert_rejected_answers:\n    - {{status: 403, body_contains: denied}}\n    - {{status: 200, body_contains: ' '}}\n    - {{status: 495, body_contains: {}}}\n",
        "x".repeat(300)
    ))
    .unwrap();
    let problems = c.upstream.cert_rejected_answers.problems();
    let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "upstream.cert_rejected_answers[1].status",
            "upstream.cert_rejected_answers[1].body_contains",
            "upstream.cert_rejected_answers[2].body_contains",
        ]
    );
    assert!(
        problems[0].reason.contains("200 is not an error status"),
        "{problems:?}"
    );
    let e = parse_str("listen: 127.0.0.1:1\nupstream:\n  region: sg\n  cert_rejected_answers:\n    - {status: 403}\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("body_contains"), "{e}");
}

#[test]
fn pem_files_are_named_by_kind() {
    let cert = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    let key = "-----BEGIN EC PRIVATE KEY-----\nMHcC\n-----END EC PRIVATE KEY-----\n";
    assert_eq!(pem_kind(cert).as_deref(), Some("PEM data (CERTIFICATE)"));
    let both = format!("{cert}{key}");
    assert_eq!(
        pem_kind(&both).as_deref(),
        Some("a PEM private key (EC PRIVATE KEY)")
    );
    let config = "# the client PRIVATE KEY path goes under client_certs\nlisten: 127.0.0.1:1\n";
    assert_eq!(pem_kind(config), None);
    assert!(looks_like_config(config));
    assert!(!looks_like_config("sk-0123:abc\neyJhbGciOi.x.y\n"));
}

#[test]
fn unknown_key_is_rejected_with_position() {
    let e = parse_str("listen: 127.0.0.1:1\nupstream: {region: sg}\nlisten_typo: 1\n").unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("listen_typo"), "{msg}");
    assert!(msg.contains("line 3") || msg.contains("3:"), "{msg}");
}
