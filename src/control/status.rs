//! The status page (`GET /` on the admin listener): what a person looks at during a rotation
//! or an incident. Rendered on the server from what `/readyz`, `/certs` and `/metrics` say,
//! with no script and no external asset, so it works air-gapped and under the strict
//! `Content-Security-Policy` it is served with.

use std::collections::VecDeque;
use std::sync::Mutex;

use maud::{html, Markup, DOCTYPE};

use crate::data::proxy::{CertRole, CertRow};
use crate::model::pki::RENEW_DAYS;
use crate::telemetry::metrics::Traffic;

/// Served with the page: nothing but its own stylesheet may load, nothing may run.
pub const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'none'; \
                       base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The page's stylesheet, served at [`CSS_PATH`]. Readable on a phone: on a narrow screen
/// the certificate and reload tables show each row as a card, each cell named by its column
/// (the header row stays for screen readers); the others scroll sideways.
pub const CSS: &str = "\
body{font:16px/1.45 system-ui,sans-serif;margin:0 auto;max-width:72rem;padding:1rem;color:#1b1b1b}\
h1{font-size:1.4rem;margin:.2rem 0}h2{font-size:1.15rem;margin:1.6rem 0 .4rem}\
.scroll{overflow-x:auto}table{border-collapse:collapse;width:100%}\
th,td{text-align:left;padding:.35rem .6rem;border-bottom:1px solid #ddd;vertical-align:top}\
caption{text-align:left;font-weight:600;padding:.3rem 0}\
.ok{color:#0a6b2d}.bad{color:#a4161a}.warn{color:#8a5a00}\
meter{width:8rem;height:1rem}small{color:#555}\
@media (max-width:40rem){table.cards thead{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0)}\
table.cards tr{display:block;border-bottom:2px solid #ddd;padding:.4rem 0}\
table.cards th[scope=row],table.cards td{display:block;border:0;padding:.15rem .2rem}\
table.cards td::before{content:attr(data-label) \": \";font-weight:600}}";

/// Where the stylesheet is served.
pub const CSS_PATH: &str = "/status.css";

/// Days left under which a certificate's bar turns red (the last week); it turns amber under
/// the renewal guidance, [`RENEW_DAYS`].
const URGENT_DAYS: i64 = 7;

/// Reloads the page lists, newest first.
const RELOADS_KEPT: usize = 10;

/// One reload: when, what asked for it, and how it ended.
#[derive(Debug, Clone)]
pub struct ReloadEvent {
    /// Unix seconds.
    pub at: i64,
    /// SIGHUP, file change or POST /reload.
    pub trigger: &'static str,
    /// `Ok(summary)` or `Err(every problem)`.
    pub outcome: Result<String, String>,
}

/// The last reloads, kept for the status page.
#[derive(Debug, Default)]
pub struct ReloadHistory(Mutex<VecDeque<ReloadEvent>>);

impl ReloadHistory {
    /// Keeps `e`, forgetting the oldest beyond [`RELOADS_KEPT`].
    pub fn record(&self, e: ReloadEvent) {
        if let Ok(mut h) = self.0.lock() {
            if h.len() == RELOADS_KEPT {
                h.pop_back();
            }
            h.push_front(e);
        }
    }

    /// Newest first.
    pub fn recent(&self) -> Vec<ReloadEvent> {
        self.0
            .lock()
            .map(|h| h.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// One Amity app the gateway serves.
#[derive(Debug, Clone)]
pub struct AppView {
    /// The app's name.
    pub name: String,
    /// The upstream's base URL.
    pub upstream: String,
    /// Its certificates, in config order, as `/certs` reports them.
    pub certs: Vec<CertRow>,
}

/// Everything the page shows.
#[derive(Debug, Clone)]
pub struct StatusView {
    /// Unix seconds, when rendered.
    pub now: i64,
    /// `Ok(active certificate)` or `Err(why not ready)`.
    pub ready: Result<String, String>,
    /// The apps served.
    pub apps: Vec<AppView>,
    /// The last reloads, newest first.
    pub reloads: Vec<ReloadEvent>,
    /// The traffic figures, from the series `/metrics` exports.
    pub traffic: Traffic,
}

/// The whole page.
pub fn render(v: &StatusView) -> String {
    let page: Markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "amity-mtls-proxy status" }
                link rel="stylesheet" href=(CSS_PATH);
            }
            body {
                header {
                    h1 { "amity-mtls-proxy " small { "v" (env!("CARGO_PKG_VERSION")) } }
                    p { "As of " time datetime=(crate::model::pki::rfc3339(v.now)) { (crate::model::pki::rfc3339(v.now)) } }
                }
                main {
                    h2 id="readiness" { "Readiness" }
                    @match &v.ready {
                        Ok(cert) => p class="ok" { "Ready: presenting " strong { (cert) } "." },
                        Err(why) => p class="bad" { "Not ready: " (why) },
                    }
                    @for app in &v.apps { (certs(app, v.now)) }
                    (reloads(&v.reloads))
                    (traffic(&v.traffic))
                }
            }
        }
    };
    page.into_string()
}

fn certs(app: &AppView, now: i64) -> Markup {
    html! {
        h2 { "Certificates of " (app.name) }
        p { "Upstream: " code { (app.upstream) } }
        div class="scroll" {
            table class="cards" {
                caption { "Client certificates of app " (app.name) ", as registered in the Amity console" }
                thead { tr {
                    th scope="col" { "Name" } th scope="col" { "Role" } th scope="col" { "Serial" }
                    th scope="col" { "Not after" } th scope="col" { "Days left" }
                    th scope="col" { "Last handshake" }
                } }
                tbody {
                    @if app.certs.is_empty() {
                        tr { td colspan="6" { "No client certificate is configured." } }
                    }
                    @for c in &app.certs {
                        @let days = c.seconds_left.div_euclid(86_400);
                        tr {
                            th scope="row" { (c.name) }
                            td data-label="Role" class=(role_class(c.role)) { (role_text(c.role)) }
                            td data-label="Serial" { code { (c.serial) } }
                            td data-label="Not after" { (c.not_after) }
                            td data-label="Days left" {
                                // A meter is coloured by the browser from low/high/optimum,
                                // and screen readers read its value.
                                meter min="0" max="90" low=(URGENT_DAYS) high=(RENEW_DAYS) optimum="90"
                                    value=(days.clamp(0, 90)) aria-label=(format!("{days} days left")) {}
                                " " span class=(days_class(days)) { (days) " days" }
                            }
                            td data-label="Last handshake" {
                                @match &c.last_handshake {
                                    None => "not presented yet",
                                    Some(h) => {
                                        span class=(if h.accepted { "ok" } else { "bad" }) {
                                            (if h.accepted { "accepted" } else { "refused" })
                                        }
                                        " " small { (ago(now - h.at)) }
                                        @if !h.accepted { br; small { (h.detail) } }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn reloads(events: &[ReloadEvent]) -> Markup {
    let last_failure = events.iter().find(|e| e.outcome.is_err());
    html! {
        h2 { "Reloads" }
        @if let Some(Err(why)) = last_failure.map(|e| &e.outcome) {
            p class="bad" { "Last failed reload: " (why) " " small { "(the previous configuration kept serving)" } }
        }
        div class="scroll" {
            table class="cards" {
                caption { "The last reloads, newest first" }
                thead { tr { th scope="col" { "When" } th scope="col" { "Asked by" } th scope="col" { "Result" } } }
                tbody {
                    @if events.is_empty() { tr { td colspan="3" { "No reload since start." } } }
                    @for e in events {
                        tr {
                            td data-label="When" { (crate::model::pki::rfc3339(e.at)) }
                            td data-label="Asked by" { (e.trigger) }
                            @match &e.outcome {
                                Ok(msg) => td data-label="Result" class="ok" { "ok: " (msg) },
                                Err(why) => td data-label="Result" class="bad" { "failed: " (why) },
                            }
                        }
                    }
                }
            }
        }
    }
}

fn traffic(m: &Traffic) -> Markup {
    let (p50, p99) = (quantile(0.5, &m.latency), quantile(0.99, &m.latency));
    html! {
        h2 { "Traffic" }
        div class="scroll" {
            table {
                caption { "Requests answered since start, by route and status" }
                thead { tr { th scope="col" { "Route" } th scope="col" { "Status" } th scope="col" { "Requests" } } }
                tbody {
                    @if m.requests.is_empty() { tr { td colspan="3" { "No request yet." } } }
                    @for ((route, status), n) in &m.requests {
                        tr { td { (route) } td { (status) } td { (n) } }
                    }
                }
            }
        }
        div class="scroll" {
            table {
                caption { "Upstream" }
                tbody {
                    tr { th scope="row" { "Latency p50" } td { (ms(p50)) } }
                    tr { th scope="row" { "Latency p99" } td { (ms(p99)) } }
                    tr { th scope="row" { "Requests sent" } td { (m.upstream_requests) } }
                    tr { th scope="row" { "TLS handshakes" } td { (m.handshakes) } }
                    tr { th scope="row" { "Requests per connection (pool reuse)" } td {
                        @if m.handshakes > 0 {
                            (format!("{:.1}", m.upstream_requests as f64 / m.handshakes as f64))
                        } @else { "-" }
                    } }
                }
            }
        }
    }
}

fn role_text(role: CertRole) -> &'static str {
    match role {
        CertRole::Active => "active",
        CertRole::Standby => "standby",
        CertRole::Expired => "expired",
        CertRole::NotYetValid => "pending (not yet valid)",
    }
}

fn role_class(role: CertRole) -> &'static str {
    match role {
        CertRole::Active => "ok",
        CertRole::Expired => "bad",
        CertRole::Standby | CertRole::NotYetValid => "",
    }
}

fn days_class(days: i64) -> &'static str {
    if days < URGENT_DAYS {
        "bad"
    } else if days < RENEW_DAYS {
        "warn"
    } else {
        "ok"
    }
}

fn ago(secs: i64) -> String {
    match secs.max(0) {
        s if s < 120 => format!("{s} s ago"),
        s if s < 7_200 => format!("{} min ago", s / 60),
        s => format!("{} h ago", s / 3_600),
    }
}

fn ms(secs: Option<f64>) -> String {
    secs.map_or_else(|| "-".into(), |s| format!("{:.1} ms", s * 1e3))
}

/// The `q` quantile of cumulative buckets `(upper bound, count)`, interpolated within the
/// bucket it falls in, as Prometheus' `histogram_quantile` does; `None` without samples.
fn quantile(q: f64, buckets: &[(f64, u64)]) -> Option<f64> {
    let total = buckets.last()?.1;
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let (mut lower, mut below) = (0.0, 0.0);
    for &(upper, count) in buckets {
        let count = count as f64;
        if count >= rank {
            if upper.is_infinite() {
                return Some(lower);
            }
            let within = count - below;
            let frac = if within > 0.0 {
                (rank - below) / within
            } else {
                1.0
            };
            return Some(lower + (upper - lower) * frac);
        }
        (lower, below) = (upper, count);
    }
    Some(lower)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(name: &str, days: i64, role: CertRole) -> CertRow {
        CertRow {
            app: "default".into(),
            last_handshake: None,
            name: name.into(),
            not_after: "2027-01-01T00:00:00Z".into(),
            not_before: "2026-01-01T00:00:00Z".into(),
            role,
            seconds_left: days * 86_400 + 60,
            serial: "0A1B".into(),
            sha256: String::new(),
            subject: "CN=x".into(),
        }
    }

    #[test]
    fn quantiles_interpolate_within_the_bucket() {
        let b = [(0.01, 50), (0.1, 90), (1.0, 100), (f64::INFINITY, 100)];
        assert_eq!(quantile(0.5, &b), Some(0.01));
        let p99 = quantile(0.99, &b).unwrap();
        assert!((p99 - 0.91).abs() < 1e-9, "{p99}");
        assert_eq!(quantile(0.5, &[(0.1, 0), (f64::INFINITY, 0)]), None);
    }

    #[test]
    fn the_summary_adds_up_every_apps_requests_and_latency() {
        let m = crate::telemetry::metrics::Metrics::new();
        let (eu, us) = (m.app("eu"), m.app("us"));
        for _ in 0..9 {
            eu.upstream_latency.observe(0.001);
            eu.count_request(Some(crate::model::config::RouteClass::AuthToken), 200);
        }
        us.upstream_latency.observe(3.0);
        us.count_request(Some(crate::model::config::RouteClass::AuthToken), 200);
        let t = m.traffic();
        assert_eq!(t.requests.get(&("auth_token", 200)), Some(&10));
        // Nine of ten answers took 1 ms: the median is in the first bucket.
        let (p50, p99) = (quantile(0.5, &t.latency), quantile(0.99, &t.latency));
        assert!(p50.is_some_and(|p| p <= 0.001), "{p50:?}");
        assert!(p99.is_some_and(|p| p > 2.0), "{p99:?}");
    }

    #[test]
    fn text_from_the_config_is_escaped() {
        let v = StatusView {
            now: 0,
            ready: Err("<script>alert(1)</script>".into()),
            apps: vec![AppView {
                name: "default".into(),
                upstream: "https://x".into(),
                certs: vec![cert("a<b", 5, CertRole::Active)],
            }],
            reloads: vec![],
            traffic: Traffic::default(),
        };
        let page = render(&v);
        assert!(!page.contains("<script"), "{page}");
        assert!(page.contains("&lt;script&gt;"));
        assert!(page.contains("a&lt;b"));
    }

    #[test]
    fn days_left_turn_amber_at_thirty_and_red_at_seven() {
        assert_eq!(days_class(90), "ok");
        assert_eq!(days_class(30), "ok");
        assert_eq!(days_class(29), "warn");
        assert_eq!(days_class(7), "warn");
        assert_eq!(days_class(6), "bad");
    }
}
