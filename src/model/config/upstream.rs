//! `upstream`: where calls go, and how the upstream says it refused our certificate.

use std::path::PathBuf;

use serde::Deserialize;

use super::error::Problem;
use super::nulls::null_as_default;

/// The upstream Amity API host.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Amity region: `eu`, `sg` or `us`. Exactly one of `region` and `url`.
    #[serde(default)]
    pub region: Option<String>,
    /// A full `https://` base URL, e.g. a local stand-in Amity.
    #[serde(default)]
    pub url: Option<String>,
    /// Extra trust roots (PEM) added to the public web roots; for local testing.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// How long an upstream connection is kept without a request, in milliseconds. The
    /// default is below the usual server idle timeouts (nginx 75 s, cloud load balancers
    /// 60 s), so the proxy closes a quiet connection before the server does.
    #[serde(default = "default_pool_idle_ms")]
    pub pool_idle_timeout_ms: u64,
    /// How many idle connections the pool keeps per upstream host; HTTP/1.1 upstreams only
    /// (with HTTP/2 each worker keeps one connection, more only while each is full).
    #[serde(default = "default_pool_max_idle")]
    pub pool_max_idle: usize,
    /// The front server's error pages by which the upstream says, after the handshake, that it
    /// refused our client certificate; such an answer counts as a rejection (failover). Default:
    /// nginx's.
    #[serde(default, deserialize_with = "null_as_default")]
    pub cert_rejected_answers: CertRejectedAnswers,
    /// A reload first presents each new or changed certificate to the upstream, and keeps the
    /// serving configuration if the upstream refuses it (an unreachable upstream is only said).
    #[serde(default = "yes")]
    pub prove_certs_on_reload: bool,
}

fn yes() -> bool {
    true
}

fn default_pool_idle_ms() -> u64 {
    30_000
}

fn default_pool_max_idle() -> usize {
    // As many as may be in flight: an HTTP/1.1 upstream needs a connection per
    // concurrent request, and a smaller pool would close and re-handshake them.
    super::limits::default_max_in_flight()
}

/// How much of an answer's body is read to find a refusal page's `<title>`: such a page is small.
pub const CERT_REJECTED_BODY_BYTES: usize = 8192;

/// An HTTP answer that says the upstream refused our client certificate: the front server's
/// own HTML error page, recognised by its status and its `<title>`. Amity's answers are JSON
/// and may repeat what the caller sent, so a JSON body, or text anywhere but the title of an
/// HTML page, never matches: a caller cannot make the gateway switch certificates.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertRejectedAnswer {
    /// The status, 400 to 599 (a success is never read).
    pub status: u16,
    /// Text (case-sensitive) in the `<title>` element of a `text/html` answer, within the
    /// first [`CERT_REJECTED_BODY_BYTES`] of the body.
    pub title_contains: String,
}

/// `upstream.cert_rejected_answers`; a list given replaces the default, `[]` recognises none.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct CertRejectedAnswers(pub Vec<CertRejectedAnswer>);

impl Default for CertRejectedAnswers {
    /// nginx with `ssl_verify_client on` completes the handshake, then answers 400 with these
    /// pages: a certificate it cannot verify (its internal 495), none at all (496).
    fn default() -> Self {
        let nginx = |text: &str| CertRejectedAnswer {
            status: 400,
            title_contains: text.to_string(),
        };
        Self(vec![
            nginx("The SSL certificate error"),
            nginx("No required SSL certificate was sent"),
        ])
    }
}

impl CertRejectedAnswers {
    /// Longest `title_contains` accepted.
    const MAX_TEXT: usize = 256;

    /// Whether an answer with `status` may be a refusal, so that its body must be read.
    pub fn names(&self, status: u16) -> bool {
        self.0.iter().any(|a| a.status == status)
    }

    /// The rule that an answer with `status`, `content_type` and a body starting with `start`
    /// matches, if any.
    pub fn refusal(
        &self,
        status: u16,
        content_type: Option<&[u8]>,
        start: &[u8],
    ) -> Option<&CertRejectedAnswer> {
        if !self.names(status) || !content_type.is_some_and(is_html) {
            return None;
        }
        let title = html_title(start)?;
        self.0.iter().find(|r| {
            let text = r.title_contains.as_bytes();
            r.status == status && !text.is_empty() && title.windows(text.len()).any(|w| w == text)
        })
    }

    /// Problems with their field paths.
    pub(super) fn problems(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        for (i, a) in self.0.iter().enumerate() {
            let field = format!("upstream.cert_rejected_answers[{i}]");
            if !(400..=599).contains(&a.status) {
                out.push(Problem::new(
                    format!("{field}.status"),
                    format!("{} is not an error status (400 to 599)", a.status),
                ));
            }
            if a.title_contains.trim().is_empty() {
                out.push(Problem::new(
                    format!("{field}.title_contains"),
                    "is empty: name text the refusal page's <title> holds, so that the upstream's other answers with this status pass",
                ));
            } else if a.title_contains.len() > Self::MAX_TEXT {
                out.push(Problem::new(
                    format!("{field}.title_contains"),
                    format!(
                        "is {} bytes long; at most {}",
                        a.title_contains.len(),
                        Self::MAX_TEXT
                    ),
                ));
            }
        }
        out
    }
}

/// Whether a `content-type` value is HTML (`text/html`, any parameters).
fn is_html(content_type: &[u8]) -> bool {
    let media = content_type
        .split(|&b| b == b';')
        .next()
        .unwrap_or_default();
    media.trim_ascii().eq_ignore_ascii_case(b"text/html")
}

/// The text of the first `<title>` element of an HTML page (tag names in any case).
fn html_title(page: &[u8]) -> Option<&[u8]> {
    let lower = page.to_ascii_lowercase();
    let open = find(&lower, b"<title")?;
    let text_start = open + find(&lower[open..], b">")? + 1;
    let len = find(&lower[text_start..], b"</title")?;
    Some(&page[text_start..text_start + len])
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Where calls go: scheme is always https.
#[derive(Debug, Clone)]
pub struct UpstreamTarget {
    /// Base URL without a trailing slash, e.g. `https://apix.sg.amity.co`.
    pub base: String,
    /// Host name (or IP) used for SNI and the Host header.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// `host[:port]` as sent in Host / :authority.
    pub authority: http::uri::Authority,
    /// Path prefix of the base URL (usually empty).
    pub path_prefix: String,
}

/// The base URL of an Amity region: the `apix` hosts of Amity's current documentation
/// (older pages name `api.<region>.amity.co`, reachable through `upstream.url`).
pub fn region_url(region: &str) -> Option<&'static str> {
    match region {
        "eu" => Some("https://apix.eu.amity.co"),
        "sg" => Some("https://apix.sg.amity.co"),
        "us" => Some("https://apix.us.amity.co"),
        _ => None,
    }
}

impl UpstreamConfig {
    /// Problems with their field paths, apart from `ca` (a file, read by validation).
    pub(super) fn problems(&self) -> Vec<Problem> {
        let mut out = self.cert_rejected_answers.problems();
        if self.pool_idle_timeout_ms == 0 {
            out.push(Problem::new(
                "upstream.pool_idle_timeout_ms",
                "must be greater than 0",
            ));
        }
        out.extend(super::timeouts::too_long(&[(
            "upstream.pool_idle_timeout_ms",
            self.pool_idle_timeout_ms,
        )]));
        out
    }

    /// Where calls go, from `region` or `url`; an error names the field.
    pub(super) fn target(&self) -> Result<UpstreamTarget, Problem> {
        let (field, url) = match (&self.region, &self.url) {
            (Some(r), None) => match region_url(r) {
                Some(url) => ("upstream.region", url.to_string()),
                None => {
                    return Err(Problem::new(
                        "upstream.region",
                        format!("{r:?} is not an Amity region; use eu, sg or us (or upstream.url)"),
                    ))
                }
            },
            (None, Some(url)) => ("upstream.url", url.clone()),
            (Some(_), Some(_)) => {
                return Err(Problem::new("upstream", "give region or url, not both"));
            }
            (None, None) => {
                return Err(Problem::new("upstream", "give region (eu, sg, us) or url"))
            }
        };
        let bad = |reason: String| Problem::new(field, reason);
        let uri: http::Uri = url
            .parse()
            .map_err(|e| bad(format!("{url:?} is not a URL: {e}")))?;
        if uri.scheme_str() != Some("https") {
            return Err(bad(format!("{url:?} must start with https://")));
        }
        if uri.query().is_some() {
            return Err(bad(format!("{url:?} must not have a query")));
        }
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| bad(format!("{url:?} has no host")))?;
        if authority.as_str().contains('@') {
            return Err(bad(format!("{url:?} must not carry credentials")));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = authority.port_u16().unwrap_or(443);
        let path_prefix = uri.path().trim_end_matches('/').to_string();
        Ok(UpstreamTarget {
            base: format!("https://{}{}", authority, path_prefix),
            host,
            port,
            authority,
            path_prefix,
        })
    }
}
