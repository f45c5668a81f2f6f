//! Prometheus metrics (prometheus-client), shared by every generation.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

pub use super::labels::{
    AppLabels, AppName, AppReason, CertLabels, FixedReason, RequestLabels, ResultLabels,
};
use super::traffic::{self, latency_histogram, AppSeries, Requests};
pub use super::traffic::{Latency, Traffic, LATENCY_BOUNDS};
use crate::model::config::RouteClass;

/// Every metric the proxy exports.
pub struct Metrics {
    registry: Registry,
    /// Requests answered, by app, route class and status.
    requests: Requests,
    /// Time from forwarding to the upstream's response head, in seconds, by app: the buckets
    /// of [`LATENCY_BOUNDS`].
    pub upstream_latency: Family<AppLabels, Histogram, fn() -> Histogram>,
    /// Requests sent upstream (retries included), by app.
    pub upstream_requests: Family<AppLabels, Counter>,
    /// New upstream connections (TCP + TLS handshake each), by app.
    pub handshakes: Family<AppLabels, Counter>,
    /// Failed upstream handshakes, by app and reason.
    pub handshake_failures: Family<AppReason, Counter>,
    /// Reloads, by result.
    pub reloads: Family<ResultLabels, Counter>,
    /// Unix time of the last successful (re)load.
    pub last_reload_success: Gauge,
    /// Not-after of each configured certificate, unix time.
    pub cert_expiry: Family<CertLabels, Gauge>,
    /// 1 for the certificate presented now, 0 for the others.
    pub cert_active: Family<CertLabels, Gauge>,
    /// Requests retried with the other certificate after a rejection, by app.
    pub failovers: Family<AppLabels, Counter>,
    /// Upstream response bodies cut off for a gap longer than `timeouts.upstream_body_gap_ms`.
    pub body_stalls: Family<AppLabels, Counter>,
    /// Audit records, by result: written, failed (not written).
    pub audit_records: Family<ResultLabels, Counter>,
    /// Open backend connections.
    pub connections: Gauge,
    /// Idle HTTP/1 backend connections that hold no buffers (see `conn`).
    pub connections_parked: Gauge,
    /// Failed inbound TLS handshakes (`inbound_tls`), by reason.
    pub inbound_handshake_failures: Family<FixedReason, Counter>,
    /// Backend requests refused before routing (malformed, head too large, head too slow).
    pub inbound_refused: Family<FixedReason, Counter>,
    /// Responses dropped as not taken by the backend within `timeouts.send_ms`.
    pub send_timeouts: Counter,
    /// Held while the certificate series change, so that a generation being replaced cannot
    /// write them back.
    pub cert_series: Mutex<()>,
    /// Every app's series that [`Metrics::traffic`] adds up, by name: a family cannot be
    /// iterated.
    apps: Mutex<HashMap<AppName, AppSeries>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("amity_proxy");
        let m = Self {
            requests: Requests::default(),
            upstream_latency: Family::new_with_constructor(latency_histogram),
            upstream_requests: Family::default(),
            handshakes: Family::default(),
            handshake_failures: Family::default(),
            reloads: Family::default(),
            last_reload_success: Gauge::default(),
            cert_expiry: Family::default(),
            cert_active: Family::default(),
            failovers: Family::default(),
            body_stalls: Family::default(),
            audit_records: Family::default(),
            connections: Gauge::default(),
            connections_parked: Gauge::default(),
            inbound_handshake_failures: Family::default(),
            inbound_refused: Family::default(),
            send_timeouts: Counter::default(),
            cert_series: Mutex::new(()),
            apps: Mutex::default(),
            registry: Registry::default(),
        };
        registry.register(
            "requests",
            "Requests answered, by route class and status",
            m.requests.family.clone(),
        );
        registry.register(
            "upstream_latency_seconds",
            "Time from forwarding a request to the upstream's response head",
            m.upstream_latency.clone(),
        );
        registry.register(
            "upstream_requests",
            "Requests sent upstream, retries included",
            m.upstream_requests.clone(),
        );
        registry.register(
            "upstream_handshakes",
            "New upstream connections, one TLS handshake each; compare with upstream_requests for pool reuse",
            m.handshakes.clone(),
        );
        registry.register(
            "upstream_handshake_failures",
            "Upstream connections or TLS sessions that failed, by reason",
            m.handshake_failures.clone(),
        );
        registry.register(
            "reloads",
            "Configuration reloads, by result",
            m.reloads.clone(),
        );
        registry.register(
            "last_reload_success_timestamp_seconds",
            "Unix time of the last successful load or reload",
            m.last_reload_success.clone(),
        );
        registry.register(
            "cert_expiry_timestamp_seconds",
            "Not-after of each configured client certificate, unix time",
            m.cert_expiry.clone(),
        );
        registry.register(
            "cert_active",
            "1 for the client certificate presented now, 0 for the others",
            m.cert_active.clone(),
        );
        registry.register(
            "failovers",
            "Requests retried with the other client certificate after a rejection",
            m.failovers.clone(),
        );
        registry.register(
            "upstream_body_stalls",
            "Upstream response bodies cut off (the caller's response ends with an error) for a gap between data longer than timeouts.upstream_body_gap_ms",
            m.body_stalls.clone(),
        );
        registry.register(
            "audit_records",
            "Audit records, by result: written, or failed (could not be written)",
            m.audit_records.clone(),
        );
        registry.register(
            "connections",
            "Open backend connections",
            m.connections.clone(),
        );
        registry.register(
            "connections_parked",
            "Idle HTTP/1 backend connections parked without buffers, until their next request",
            m.connections_parked.clone(),
        );
        registry.register(
            "inbound_handshake_failures",
            "Backend TLS handshakes that failed, by reason: no_certificate, unknown_ca, expired, bad_certificate, caller_alert, protocol, timeout, closed",
            m.inbound_handshake_failures.clone(),
        );
        registry.register(
            "inbound_refused",
            "Backend requests refused before routing, by reason: bad_request (400), header_too_large (431), header_timeout (408: head not complete within timeouts.header_read_ms)",
            m.inbound_refused.clone(),
        );
        registry.register(
            "send_timeouts",
            "Responses dropped because the backend did not take them within timeouts.send_ms (its connection is then closed)",
            m.send_timeouts.clone(),
        );
        let m = Self { registry, ..m };
        // Exported at zero from the start, so that an alert on their increase sees the first.
        m.audit_counters();
        m
    }

    /// The metrics of one app, resolved once: its requests answered 200 and its certificates'
    /// upstream counters are exported from then on, at zero before traffic.
    pub fn app(&self, name: &str) -> AppMetrics {
        let app = AppName(Arc::from(name));
        let labels = AppLabels { app: app.clone() };
        let ok = RouteClass::NAMES.map(|route| {
            self.requests.counter(RequestLabels {
                app: app.clone(),
                route,
                status: 200,
            })
        });
        let series = self
            .apps
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(app.clone())
            .or_insert_with(|| AppSeries {
                upstream_requests: self.upstream_requests.get_or_create_owned(&labels),
                handshakes: self.handshakes.get_or_create_owned(&labels),
                latency: Latency::new(self.upstream_latency.get_or_create_owned(&labels)),
            })
            .clone();
        AppMetrics {
            upstream_requests: series.upstream_requests,
            handshakes: series.handshakes,
            failovers: self.failovers.get_or_create(&labels).clone(),
            body_stalls: self.body_stalls.get_or_create(&labels).clone(),
            upstream_latency: series.latency,
            handshake_failures: self.handshake_failures.clone(),
            requests: self.requests.clone(),
            ok,
            app,
        }
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// The Prometheus text exposition in the classic format (0.0.4), for clients that
    /// do not ask for OpenMetrics (`promtool check metrics`, a plain `curl`).
    pub fn encode_classic(&self) -> String {
        to_classic_text(&self.encode())
    }

    /// Counts a request refused before an app was chosen (route `denied`, app empty).
    pub fn count_unrouted(&self, status: u16) {
        let (app, route) = (AppName::none(), "denied");
        self.requests.inc(RequestLabels { app, route, status });
    }

    /// The figures of the status page, read from the series `/metrics` exports (the latency
    /// from the same observations).
    pub fn traffic(&self) -> Traffic {
        traffic::sum(&self.requests, &self.apps)
    }

    /// The counters of audit records, exported at zero from then on.
    pub fn audit_counters(&self) -> AuditCounters {
        let counter = |result: &str| {
            let result = result.to_string();
            self.audit_records
                .get_or_create(&ResultLabels { result })
                .clone()
        };
        AuditCounters {
            written: counter("written"),
            failed: counter("failed"),
        }
    }

    /// Counts a failed inbound TLS handshake.
    pub fn inbound_handshake_failed(&self, reason: &'static str) {
        self.inbound_handshake_failures
            .get_or_create(&FixedReason { reason })
            .inc();
    }

    /// Counts a request refused before routing.
    pub fn refused(&self, reason: &'static str) {
        self.inbound_refused
            .get_or_create(&FixedReason { reason })
            .inc();
    }

    /// Counts a reload.
    pub fn reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "failed" }.to_string();
        self.reloads.get_or_create(&ResultLabels { result }).inc();
        if ok {
            self.last_reload_success.set(crate::model::pki::now_unix());
        }
    }
}

/// `audit_records` by result.
#[derive(Clone, Debug, Default)]
pub struct AuditCounters {
    /// Records written.
    pub written: Counter,
    /// Records that could not be written.
    pub failed: Counter,
}

/// One app's metrics, resolved when its generation is built.
#[derive(Clone)]
pub struct AppMetrics {
    /// The app's label value.
    pub app: AppName,
    /// Requests sent upstream.
    pub upstream_requests: Counter,
    /// New upstream connections.
    pub handshakes: Counter,
    /// Requests retried with the other certificate.
    pub failovers: Counter,
    /// Response bodies cut off for a gap in their data.
    pub body_stalls: Counter,
    /// Time to the upstream's response head.
    pub upstream_latency: Latency,
    handshake_failures: Family<AppReason, Counter>,
    requests: Requests,
    /// `requests` answered 200, by route class: the common case, counted without a lookup.
    ok: [Counter; 3],
}

impl AppMetrics {
    /// Counts a failed upstream connection.
    pub fn handshake_failed(&self, reason: &'static str) {
        let app = self.app.clone();
        self.handshake_failures
            .get_or_create(&AppReason { app, reason })
            .inc();
    }

    /// Counts a request answered with `status` as `route` (`None`: refused before routing).
    pub fn count_request(&self, route: Option<RouteClass>, status: u16) {
        match route {
            Some(r) if status == 200 => {
                self.ok[r as usize].inc();
            }
            _ => {
                let (app, route) = (self.app.clone(), route.map_or("denied", RouteClass::as_str));
                self.requests.inc(RequestLabels { app, route, status });
            }
        }
    }
}

/// OpenMetrics text to the classic Prometheus format: a counter family's HELP and
/// TYPE lines take the `_total` name its samples carry, and the `# EOF` marker goes.
pub fn to_classic_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len() + 256);
    for line in openmetrics.lines().filter(|l| *l != "# EOF") {
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let (name, rest) = line.strip_prefix(prefix)?.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {rest}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classic_text_names_counters_with_total() {
        let m = Metrics::new();
        m.app("default").failovers.inc();
        let text = m.encode_classic();
        assert!(
            text.contains("# HELP amity_proxy_failovers_total Requests retried"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE amity_proxy_failovers_total counter"),
            "{text}"
        );
        assert!(
            text.contains("\namity_proxy_failovers_total{app=\"default\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("# TYPE amity_proxy_upstream_latency_seconds histogram"));
        assert!(!text.contains("# EOF"));
    }

    #[test]
    fn latency_buckets_are_inclusive_upper_bounds_doubling_from_a_millisecond() {
        let m = Metrics::new();
        let app = m.app("eu");
        for ms in [0.0, 1.0, 2.0, 3.0, 40_000.0] {
            app.upstream_latency.observe(ms / 1e3);
        }
        let text = m.encode_classic();
        let bucket = |le: &str| {
            let line =
                format!("amity_proxy_upstream_latency_seconds_bucket{{le=\"{le}\",app=\"eu\"}} ");
            text.lines()
                .find_map(|l| l.strip_prefix(&line))
                .unwrap_or_else(|| panic!("no bucket {le}:\n{text}"))
                .parse::<u64>()
                .unwrap()
        };
        // Cumulative: 0 and 1 ms in le=0.001, 2 ms in le=0.002, 3 ms in le=0.004, 40 s only in +Inf.
        assert_eq!(bucket("0.001"), 2);
        assert_eq!(bucket("0.002"), 3);
        assert_eq!(bucket("0.004"), 4);
        assert_eq!(bucket("32.768"), 4);
        assert_eq!(bucket("+Inf"), 5);
        assert!(
            text.contains("\namity_proxy_upstream_latency_seconds_count{app=\"eu\"} 5\n"),
            "{text}"
        );
        let sum = text
            .lines()
            .find_map(|l| l.strip_prefix("amity_proxy_upstream_latency_seconds_sum{app=\"eu\"} "))
            .unwrap();
        assert!((sum.parse::<f64>().unwrap() - 40.006).abs() < 1e-9, "{sum}");
        // The status page's buckets count the same.
        let latency = m.traffic().latency;
        assert_eq!(latency.len(), 17);
        for (upper, n) in latency {
            let le = if upper.is_infinite() {
                "+Inf".to_string()
            } else {
                upper.to_string()
            };
            assert_eq!(bucket(&le), n, "le={le}");
        }
    }

    #[test]
    fn traffic_adds_up_every_apps_series_and_each_once() {
        let m = Metrics::new();
        let eu = m.app("eu");
        // A reload resolves the app again: the same series, counted once.
        let eu_again = m.app("eu");
        let us = m.app("us");
        eu.count_request(Some(RouteClass::AuthToken), 200);
        eu_again.count_request(Some(RouteClass::AuthToken), 200);
        us.count_request(Some(RouteClass::Admin), 502);
        us.count_request(Some(RouteClass::Admin), 502);
        us.count_request(None, 403);
        m.count_unrouted(403);
        eu.upstream_requests.inc();
        us.upstream_requests.inc_by(2);
        eu_again.handshakes.inc();
        eu.upstream_latency.observe(0.003);
        let t = m.traffic();
        let expected = [
            (("admin", 200), 0),
            (("admin", 502), 2),
            (("auth_token", 200), 2),
            (("denied", 403), 2),
            (("extra", 200), 0),
        ];
        assert_eq!(t.requests.into_iter().collect::<Vec<_>>(), expected);
        assert_eq!((t.upstream_requests, t.handshakes), (3, 1));
        assert_eq!(t.latency[1], (0.002, 0));
        assert_eq!(t.latency[2], (0.004, 1));
        assert_eq!(t.latency.last(), Some(&(f64::INFINITY, 1)));
    }

    #[test]
    fn successful_requests_are_exported_at_zero_before_traffic() {
        let m = Metrics::new();
        let _app = m.app("eu");
        let text = m.encode_classic();
        for route in ["auth_token", "admin", "extra"] {
            let line = format!(
                "amity_proxy_requests_total{{app=\"eu\",route=\"{route}\",status=\"200\"}} 0\n"
            );
            assert!(text.contains(&line), "{line} not in:\n{text}");
        }
    }
}
