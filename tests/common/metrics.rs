//! Reading the admin listener's /metrics.

use std::net::SocketAddr;
use std::time::Duration;

use amity_mtls_proxy::tools::kit::call;

/// Parses Prometheus text, failing the test if any sample line was not read.
pub fn scrape(text: &str) -> prometheus_parse::Scrape {
    // prometheus-parse skips lines it cannot read; insist that every sample line was read.
    let sample_lines = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .count();
    let s = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
    let parsed: usize = s
        .samples
        .iter()
        .map(|s| match &s.value {
            prometheus_parse::Value::Histogram(b) => b.len(), // _sum and _count come as samples of their own
            _ => 1,
        })
        .sum();
    assert_eq!(
        parsed, sample_lines,
        "some metric lines did not parse:\n{text}"
    );
    s
}

/// The value of the first sample of `name` with these labels.
pub fn metric(s: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    s.samples
        .iter()
        .find(|x| x.metric == name && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map(|x| match x.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
}

/// The `/metrics` text as served for `accept`, checked to be 200 with `content_type`.
async fn fetch(admin: SocketAddr, accept: &[(&str, &str)], content_type: &str) -> String {
    let (status, headers, body) = call(admin, http::Method::GET, "/metrics", accept, "")
        .await
        .unwrap();
    assert_eq!(status, http::StatusCode::OK);
    let served = headers["content-type"].to_str().unwrap();
    assert!(served.starts_with(content_type), "content-type {served}");
    String::from_utf8(body.to_vec()).unwrap()
}

const CLASSIC: &str = "text/plain; version=0.0.4";

/// One scrape in the classic text format (when a count may change between two scrapes).
pub async fn scrape_once(admin: SocketAddr) -> prometheus_parse::Scrape {
    scrape(&fetch(admin, &[], CLASSIC).await)
}

/// Scrapes both formats: OpenMetrics when asked for (as Prometheus asks), the
/// classic text otherwise; both must parse to the same samples.
pub async fn get_metrics(admin: SocketAddr) -> prometheus_parse::Scrape {
    let accept = [("accept", "application/openmetrics-text; version=1.0.0")];
    let om = fetch(admin, &accept, "application/openmetrics-text").await;
    assert!(
        om.ends_with("# EOF\n"),
        "OpenMetrics text must end with # EOF"
    );
    let classic = scrape(&fetch(admin, &[], CLASSIC).await);
    assert_eq!(scrape(&om).samples.len(), classic.samples.len());
    classic
}

/// Waits (up to 5 s) until `name` with `labels` reads `n`. One scrape per try:
/// [`get_metrics`] takes two and compares them, and a count may change between them.
pub async fn counted(admin: SocketAddr, name: &str, labels: &[(&str, &str)], n: f64) {
    let what = format!("{name}{labels:?} = {n}");
    super::eventually(Duration::from_secs(5), &what, || async {
        match metric(&scrape_once(admin).await, name, labels) {
            Some(v) if v == n => Ok(()),
            v => Err(format!("{v:?}")),
        }
    })
    .await;
}
