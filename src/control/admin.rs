//! The admin listener: `/healthz`, `/readyz`, `/certs`, `/metrics`, `POST /reload`.
//!
//! It resists browsers: a page open on the same machine can send requests to it, and
//! through DNS rebinding read the answers. So state-changing requests that carry an
//! `Origin` are refused, and so is every request but the probes whose `Host` names
//! something other than this listener (a rebinding attack always uses a name). With
//! `admin_auth_token_file`, all but the probes also need the bearer token.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use arc_swap::ArcSwapOption;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};

use crate::control::reload::{ReloadRequest, Trigger};
use crate::control::status::{self, AppView, ReloadHistory, StatusView};
use crate::data::proxy::{Generation, ProxyState, Reject};
use crate::model::config::Secret;
use crate::model::pki;

/// What the admin endpoints read and where reloads go.
#[derive(Clone)]
pub struct Admin {
    /// The proxy's state.
    pub state: Arc<ProxyState>,
    /// The reload queue.
    pub reload: mpsc::Sender<ReloadRequest>,
    /// The last reloads, for the status page.
    pub history: Arc<ReloadHistory>,
    /// The bearer token every endpoint but the probes requires, when configured;
    /// replaced on reload.
    pub auth: Arc<ArcSwapOption<Secret>>,
}

fn reply(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    r
}

fn json(status: StatusCode, v: impl serde::Serialize) -> Response<Full<Bytes>> {
    match serde_json::to_string(&v) {
        Ok(body) => reply(status, "application/json", body),
        // Only a type whose Serialize fails could: none of ours does.
        Err(e) => {
            tracing::error!(error = %e, "an admin answer does not encode as JSON");
            reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                "the answer does not encode as JSON\n",
            )
        }
    }
}

/// A refusal in the proxy's Amity-shaped error body.
fn refusal(reject: Reject) -> Response<Full<Bytes>> {
    let status = reject.status();
    let mut r = reply(status, "application/json", reject.body("-"));
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
    }
    r
}

/// Whether `host` (a Host header) names this listener: `localhost`, an address it is bound
/// to or was reached on, or, when bound to every address, any IP literal.
fn host_allowed(host: &str, bound: SocketAddr, reached: SocketAddr) -> bool {
    let Ok(authority) = host.parse::<http::uri::Authority>() else {
        return false;
    };
    let name = authority.host();
    if name.eq_ignore_ascii_case("localhost") {
        return true;
    }
    let Ok(ip) = name
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    else {
        return false;
    };
    bound.ip().is_unspecified() || ip == bound.ip() || ip == reached.ip() || ip.is_loopback()
}

/// Where a connection came in: the listener's bound address and the address it reached.
#[derive(Debug, Clone, Copy)]
struct Local {
    bound: SocketAddr,
    reached: SocketAddr,
}

impl Admin {
    /// Refuses what a browser page or a rebinding attack could send, and requests without
    /// the token when one is configured; the probes are never refused, so that the kubelet
    /// (which sends its own Host) keeps working.
    fn admit<B>(&self, req: &Request<B>, local: Local) -> Result<(), Reject> {
        if matches!(req.uri().path(), "/healthz" | "/readyz") {
            return Ok(());
        }
        let headers = req.headers();
        let host = headers
            .get(header::HOST)
            .map(|h| h.to_str().unwrap_or("(not text)"));
        if let Some(host) = host.filter(|h| !host_allowed(h, local.bound, local.reached)) {
            return Err(Reject::AdminHostRefused {
                host: host.to_string(),
            });
        }
        let safe = matches!(*req.method(), Method::GET | Method::HEAD);
        if !safe && headers.contains_key(header::ORIGIN) {
            return Err(Reject::AdminOriginRefused {
                method: req.method().clone(),
                path: req.uri().path().to_string(),
            });
        }
        if let Some(token) = self.auth.load().as_deref() {
            let given = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
                .unwrap_or_default();
            let expected = token.expose().as_bytes();
            if aws_lc_rs::constant_time::verify_slices_are_equal(given, expected).is_err() {
                return Err(Reject::AdminTokenRequired);
            }
        }
        Ok(())
    }

    async fn handle(&self, req: Request<Incoming>, local: Local) -> Response<Full<Bytes>> {
        if let Err(refused) = self.admit(&req, local) {
            return refusal(refused);
        }
        let now = pki::now_unix();
        let generation = self.state.current.load();
        match (req.method(), req.uri().path()) {
            (&Method::GET, "/") => {
                let page = status::render(&self.status_view(&generation, now));
                let mut r = reply(StatusCode::OK, "text/html; charset=utf-8", page);
                let h = r.headers_mut();
                h.insert(
                    "content-security-policy",
                    header::HeaderValue::from_static(status::CSP),
                );
                h.insert(
                    "x-content-type-options",
                    header::HeaderValue::from_static("nosniff"),
                );
                h.insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
                r
            }
            (&Method::GET, status::CSS_PATH) => reply(StatusCode::OK, "text/css", status::CSS),
            (&Method::GET, "/healthz") => reply(StatusCode::OK, "text/plain", "ok\n"),
            (&Method::GET, "/readyz") => {
                let readiness = generation.readiness(now);
                let status = match readiness.answer {
                    Ok(_) => StatusCode::OK,
                    Err(_) => StatusCode::SERVICE_UNAVAILABLE,
                };
                json(status, readiness.to_json())
            }
            (&Method::GET, "/certs") => {
                let rows: Vec<_> = generation
                    .apps
                    .iter()
                    .flat_map(|a| a.cert_report(now))
                    .collect();
                json(StatusCode::OK, &rows)
            }
            (&Method::GET, "/metrics") => {
                generation.publish_active();
                let openmetrics = req
                    .headers()
                    .get_all(header::ACCEPT)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .any(|v| v.contains("application/openmetrics-text"));
                if openmetrics {
                    reply(
                        StatusCode::OK,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        self.state.metrics.encode(),
                    )
                } else {
                    reply(
                        StatusCode::OK,
                        "text/plain; version=0.0.4; charset=utf-8",
                        self.state.metrics.encode_classic(),
                    )
                }
            }
            (&Method::POST, "/reload") => {
                let (tx, rx) = oneshot::channel();
                let req = ReloadRequest {
                    trigger: Trigger::Admin,
                    reply: Some(tx),
                };
                let outcome = match self.reload.send(req).await {
                    Ok(()) => rx
                        .await
                        .unwrap_or_else(|_| Err("reload task stopped".into())),
                    Err(_) => Err("reload task stopped".into()),
                };
                match outcome {
                    Ok(msg) => json(
                        StatusCode::OK,
                        serde_json::json!({"status": "ok", "message": msg}),
                    ),
                    Err(msg) => json(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        serde_json::json!({"status": "error", "message": msg, "kept": "the previous configuration is still serving"}),
                    ),
                }
            }
            (_, "/" | "/healthz" | "/readyz" | "/certs" | "/metrics" | "/reload") => reply(
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain",
                "method not allowed\n",
            ),
            _ => reply(
                StatusCode::NOT_FOUND,
                "text/plain",
                "not found; try / (status page), /healthz /readyz /certs /metrics or POST /reload\n",
            ),
        }
    }
}

impl Admin {
    /// What the status page shows now.
    fn status_view(&self, generation: &Generation, now: i64) -> StatusView {
        let apps = generation
            .apps
            .iter()
            .map(|app| AppView {
                name: app.name.to_string(),
                upstream: app.upstream_base().to_string(),
                certs: app.cert_report(now),
            })
            .collect();
        StatusView {
            now,
            ready: generation.readiness(now).answer,
            apps,
            reloads: self.history.recent(),
            traffic: self.state.metrics.traffic(),
        }
    }
}

/// Serves the admin endpoints until `stop` turns true.
pub async fn serve(listener: TcpListener, admin: Admin, mut stop: watch::Receiver<bool>) {
    let Ok(bound) = listener.local_addr() else {
        return tracing::error!("the admin listener has no local address; not serving it");
    };
    loop {
        let (stream, _) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(_) => {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let admin = admin.clone();
        let local = Local {
            bound,
            reached: stream.local_addr().unwrap_or(bound),
        };
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let admin = admin.clone();
                async move { Ok::<_, Infallible>(admin.handle(req, local).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::host_allowed;

    #[test]
    fn host_names_this_listener_or_is_refused() {
        let at = |s: &str| s.parse().unwrap();
        let (pod, other_pod) = ("10.1.2.3:9901", "10.9.9.9:9901");
        // Bound to every address (a pod): the kubelet and Prometheus use the pod's IP.
        let any = at("0.0.0.0:9901");
        for host in [
            pod,
            other_pod,
            "[fd00::1]:9901",
            "localhost:8001",
            "127.0.0.1",
        ] {
            assert!(host_allowed(host, any, at(pod)), "{host}");
        }
        // Bound to one address: that address (any port: a port-forward changes it) and loopback.
        let one = at(pod);
        for host in [pod, "10.1.2.3", "localhost", "[::1]:9901"] {
            assert!(host_allowed(host, one, one), "{host}");
        }
        assert!(!host_allowed(other_pod, one, one));
        // A name is what DNS rebinding needs; none is accepted but localhost.
        for host in [
            "evil.example",
            "localhost.evil.example",
            "10.1.2.3.nip.io",
            "",
            "a b",
        ] {
            assert!(!host_allowed(host, any, at(pod)), "{host}");
        }
    }
}
