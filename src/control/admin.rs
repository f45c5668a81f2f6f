//! The admin listener: `/healthz`, `/readyz`, `/certs`, `/metrics`, `POST /reload`.

use std::convert::Infallible;
use std::sync::Arc;

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
use crate::data::proxy::ProxyState;
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

fn json(status: StatusCode, v: serde_json::Value) -> Response<Full<Bytes>> {
    reply(status, "application/json", v.to_string())
}

impl Admin {
    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let now = pki::now_unix();
        let generation = self.state.current.load();
        match (req.method(), req.uri().path()) {
            (&Method::GET, "/") => {
                let page = status::render(&self.status_view(now));
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
            (&Method::GET, "/readyz") => match generation.readiness(now) {
                Ok(cert) => json(
                    StatusCode::OK,
                    serde_json::json!({"ready": true, "cert": cert}),
                ),
                Err(reason) => json(
                    StatusCode::SERVICE_UNAVAILABLE,
                    serde_json::json!({"ready": false, "reason": reason}),
                ),
            },
            (&Method::GET, "/certs") => json(
                StatusCode::OK,
                serde_json::json!(generation.cert_report(now)),
            ),
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
    fn status_view(&self, now: i64) -> StatusView {
        let generation = self.state.current.load();
        generation.publish_active();
        let certs = generation
            .cert_report(now)
            .into_iter()
            .filter_map(|c| serde_json::from_value(c).ok())
            .collect();
        StatusView {
            now,
            ready: generation.readiness(now),
            apps: vec![AppView {
                name: "default".into(),
                upstream: generation.upstream_base().to_string(),
                certs,
            }],
            reloads: self.history.recent(),
            metrics: self.state.metrics.encode_classic(),
        }
    }
}

/// Serves the admin endpoints until `stop` turns true.
pub async fn serve(listener: TcpListener, admin: Admin, mut stop: watch::Receiver<bool>) {
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
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let admin = admin.clone();
                async move { Ok::<_, Infallible>(admin.handle(req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
