//! A stand-in Amity API on loopback, for tests and the demo.
//!
//! It demands a client certificate from the given CA at the handshake, serves
//! the token, session and one admin call with Amity's bodies and error shapes,
//! and, for tests, records which client certificate every request came with.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{stream, StreamExt};
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::data::tls::{self, TlsError};
use crate::model::pki::CertInfo;

/// How long an issued auth token is accepted for a session (Amity: 10 minutes).
const TOKEN_TTL: Duration = Duration::from_secs(600);
/// Tokens kept for sessions at most: under a load test the oldest are forgotten first,
/// so that the stand-in's memory stays bounded.
const MAX_TOKENS: usize = 100_000;

/// Settings of the stand-in.
pub struct MockOptions {
    /// Server certificate chain.
    pub chain: Vec<CertificateDer<'static>>,
    /// Server key.
    pub key: PrivateKeyDer<'static>,
    /// CAs whose client certificates are accepted.
    pub client_ca: Vec<CertificateDer<'static>>,
    /// The application's server key (`x-server-key`).
    pub server_key: String,
    /// The admin token accepted on admin calls.
    pub admin_token: String,
    /// Delay before answering each request (to test timeouts and draining).
    pub delay: Duration,
    /// Offer only HTTP/1.1 by ALPN, as an upstream without HTTP/2 does.
    pub http1_only: bool,
    /// Close each connection gracefully after this many requests (HTTP/2: GOAWAY), as
    /// nginx's `keepalive_requests` does; 0: never.
    pub max_requests_per_connection: u64,
    /// Pause between the two halves of each response body (to test slow bodies); zero: none.
    pub body_pause: Duration,
    /// Keep every request in [`Observed::requests`] (tests); off for a long-running
    /// stand-in, where that list would grow without bound.
    pub record_requests: bool,
    /// Streams allowed at once on one HTTP/2 connection (SETTINGS_MAX_CONCURRENT_STREAMS);
    /// `None`: hyper's default.
    pub max_concurrent_streams: Option<u32>,
    /// Connections served at once at most, as an upstream at its connection limit; those
    /// beyond are closed before the TLS handshake and counted in [`Observed::turned_away`].
    /// `None`: no limit.
    pub max_connections: Option<u64>,
    /// Close a connection gracefully (HTTP/2: GOAWAY) once it has had no request for this
    /// long, as nginx's `keepalive_timeout` and cloud load balancers do; `None`: never.
    pub idle_timeout: Option<Duration>,
    /// Close each connection gracefully (HTTP/2: GOAWAY) this long after it opened, as
    /// servers that recycle their connections on a schedule do; `None`: never.
    pub max_age: Option<Duration>,
    /// Pad the admin call's answer (`GET /api/v3/users`) to at least this many bytes (a
    /// large response, for slow readers); 0: as is.
    pub users_body_bytes: usize,
}

/// One request as the stand-in saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Method.
    pub method: Method,
    /// Path and query.
    pub path: String,
    /// Host header (HTTP/1.1) or :authority (HTTP/2).
    pub authority: String,
    /// Headers as received.
    pub headers: HeaderMap,
    /// Subject of the client certificate presented.
    pub client_subject: String,
    /// Serial (upper-case hex) of the client certificate presented.
    pub client_serial: String,
    /// Whether the request arrived over HTTP/2.
    pub http2: bool,
}

/// What the stand-in observed; shared with tests.
#[derive(Debug, Default)]
pub struct Observed {
    /// Every request, in order.
    pub requests: Mutex<Vec<Seen>>,
    /// TLS handshakes completed.
    pub handshakes: AtomicU64,
    /// TLS handshakes refused (no certificate, unknown CA, ...).
    pub rejected_handshakes: AtomicU64,
    /// Requests being answered now.
    pub in_flight: AtomicU64,
    /// The most requests answered at once so far.
    pub peak_in_flight: AtomicU64,
    /// Connections open now (TLS or not yet).
    pub connections: AtomicU64,
    /// Connections closed unserved, beyond [`MockOptions::max_connections`].
    pub turned_away: AtomicU64,
}

impl Observed {
    /// A copy of the requests seen so far.
    pub fn requests(&self) -> Vec<Seen> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

struct Mock {
    opts: MockOptions,
    /// `opts.delay` until [`MockHandle::set_delay`] changes it, in ms.
    delay_ms: Arc<AtomicU64>,
    observed: Arc<Observed>,
    tokens: Mutex<Tokens>,
}

/// Counts one out of a gauge of [`Observed`] (a request being answered, a connection
/// open) however it ends.
struct Counted<'a>(&'a AtomicU64);

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Issued auth tokens: the user and issue time of each, and the order they were issued in,
/// which is also the order they expire in.
#[derive(Default)]
struct Tokens {
    users: HashMap<String, (String, Instant)>,
    issued: VecDeque<String>,
}

impl Tokens {
    fn insert(&mut self, token: String, user: String) {
        let now = Instant::now();
        while let Some(oldest) = self.issued.front() {
            let expired = self
                .users
                .get(oldest)
                .is_none_or(|(_, at)| now.duration_since(*at) >= TOKEN_TTL);
            if !expired && self.issued.len() < MAX_TOKENS {
                break;
            }
            self.users.remove(oldest);
            self.issued.pop_front();
        }
        self.users.insert(token.clone(), (user, now));
        self.issued.push_back(token);
    }

    fn is_valid(&self, token: &str, user: &str) -> bool {
        self.users
            .get(token)
            .is_some_and(|(u, at)| u == user && at.elapsed() < TOKEN_TTL)
    }
}

/// A stand-in running in this process.
pub struct MockHandle {
    /// Bound address.
    pub addr: SocketAddr,
    /// What it saw.
    pub observed: Arc<Observed>,
    delay_ms: Arc<AtomicU64>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl MockHandle {
    /// Delays the answers to requests that arrive from now on by `delay`.
    pub fn set_delay(&self, delay: Duration) {
        self.delay_ms
            .store(delay.as_millis() as u64, Ordering::Relaxed);
    }

    /// Stops accepting and waits for the accept loop to end.
    pub async fn shutdown(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = (&mut self.task).await;
    }

    /// Runs until the process ends.
    pub async fn wait(mut self) {
        let _ = (&mut self.task).await;
    }
}

/// Binds `listen` and serves the stand-in in the background.
pub async fn start(listen: SocketAddr, opts: MockOptions) -> Result<MockHandle, MockError> {
    let tls = tls::server_config(
        opts.chain.clone(),
        opts.key.clone_key(),
        Some(&opts.client_ca),
        if opts.http1_only {
            &[b"http/1.1"]
        } else {
            &[b"h2", b"http/1.1"]
        },
    )?;
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|source| MockError::Bind {
            addr: listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| MockError::Bind {
        addr: listen,
        source,
    })?;
    let observed = Arc::new(Observed::default());
    let delay_ms = Arc::new(AtomicU64::new(opts.delay.as_millis() as u64));
    let mock = Arc::new(Mock {
        opts,
        delay_ms: delay_ms.clone(),
        observed: observed.clone(),
        tokens: Mutex::default(),
    });
    let (tx, rx) = oneshot::channel();
    let task = tokio::spawn(accept_loop(listener, TlsAcceptor::from(tls), mock, rx));
    Ok(MockHandle {
        addr,
        observed,
        delay_ms,
        stop: Some(tx),
        task,
    })
}

/// Why the stand-in could not start.
#[derive(Debug, thiserror::Error)]
pub enum MockError {
    /// TLS setup failed.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The address is taken or not allowed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    mock: Arc<Mock>,
    mut stop: oneshot::Receiver<()>,
) {
    loop {
        let (tcp, peer) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(_) => { tokio::time::sleep(Duration::from_millis(50)).await; continue; }
            },
            _ = &mut stop => return,
        };
        // Without it, small h2 frames wait on delayed ACKs: about 40 ms per proxied call.
        let _ = tcp.set_nodelay(true);
        // Counted here, in the one accepting task, and counted out by the connection's task.
        let open = &mock.observed.connections;
        if mock
            .opts
            .max_connections
            .is_some_and(|max| open.load(Ordering::Relaxed) >= max)
        {
            mock.observed.turned_away.fetch_add(1, Ordering::Relaxed);
            // With a FIN, not a reset: dropped with the client's hello unread, the socket would
            // answer with a reset, and the client would see that or an end of stream by timing.
            tokio::spawn(lingering_close(tcp));
            continue;
        }
        open.fetch_add(1, Ordering::Relaxed);
        let acceptor = acceptor.clone();
        let mock = mock.clone();
        tokio::spawn(async move {
            let observed = mock.observed.clone();
            let _open = Counted(&observed.connections);
            let accepting = acceptor.accept(tcp).into_fallible();
            let tls = match tokio::time::timeout(Duration::from_secs(10), accepting).await {
                Ok(Ok(t)) => t,
                Ok(Err((e, tcp))) => {
                    mock.observed
                        .rejected_handshakes
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::info!(target: "mock_amity", %peer, error = %e, "handshake refused");
                    lingering_close(tcp).await;
                    return;
                }
                Err(_) => {
                    mock.observed
                        .rejected_handshakes
                        .fetch_add(1, Ordering::Relaxed);
                    return;
                }
            };
            mock.observed.handshakes.fetch_add(1, Ordering::Relaxed);
            let (subject, serial) = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| CertInfo::from_der(c).ok())
                .map(|i| (i.subject, i.serial))
                .unwrap_or_default();
            let limit = mock.opts.max_requests_per_connection;
            let streams = mock.opts.max_concurrent_streams;
            let idle = mock.opts.idle_timeout;
            let max_age = mock.opts.max_age;
            let counted = Arc::new(AtomicU64::new(0));
            let enough = Arc::new(tokio::sync::Notify::new());
            let reached = enough.clone();
            let activity = Arc::new(ConnActivity::default());
            let active = activity.clone();
            let svc = service_fn(move |req| {
                let mock = mock.clone();
                let (subject, serial) = (subject.clone(), serial.clone());
                if counted.fetch_add(1, Ordering::Relaxed) + 1 == limit {
                    reached.notify_one();
                }
                let busy = active.begin();
                async move {
                    let pause = mock.opts.body_pause;
                    let resp = paced(mock.handle(req, subject, serial).await, pause).await;
                    drop(busy);
                    Ok::<_, Infallible>(resp)
                }
            });
            let mut builder = auto::Builder::new(TokioExecutor::new());
            if let Some(n) = streams {
                builder.http2().max_concurrent_streams(n);
            }
            let conn = builder.serve_connection(TokioIo::new(tls), svc);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => return,
                _ = enough.notified() => conn.as_mut().graceful_shutdown(),
                _ = activity.idle_for(idle) => conn.as_mut().graceful_shutdown(),
                _ = until(max_age) => conn.as_mut().graceful_shutdown(),
            }
            let _ = conn.await;
        });
    }
}

/// When a connection last started or finished a request, and how many it has in flight.
struct ConnActivity {
    start: Instant,
    last_ms: AtomicU64,
    in_flight: AtomicU64,
}

impl Default for ConnActivity {
    fn default() -> Self {
        Self {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
        }
    }
}

/// A request in flight on a connection; on drop, the connection's last activity.
struct Busy(Arc<ConnActivity>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl ConnActivity {
    fn touch(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn begin(self: &Arc<Self>) -> Busy {
        self.touch();
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        Busy(self.clone())
    }

    /// Resolves once the connection has had no request for `limit`; never without one.
    async fn idle_for(&self, limit: Option<Duration>) {
        let Some(limit) = limit else {
            return std::future::pending().await;
        };
        loop {
            let last = self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            if self.in_flight.load(Ordering::Relaxed) == 0 && last.elapsed() >= limit {
                return;
            }
            tokio::time::sleep_until((last + limit).max(Instant::now() + limit / 8).into()).await;
        }
    }
}

/// Resolves after `d`; never without one.
async fn until(d: Option<Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

/// Closes as careful servers do: FIN after the alert, then read what the client
/// already sent, so the kernel does not answer it with a reset that can destroy the alert.
async fn lingering_close(mut tcp: tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = tcp.shutdown().await;
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while matches!(tcp.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
}

/// The response with its body sent in two halves `pause` apart (at once when zero).
async fn paced(
    resp: Response<Full<Bytes>>,
    pause: Duration,
) -> Response<UnsyncBoxBody<Bytes, Infallible>> {
    if pause.is_zero() {
        return resp.map(BodyExt::boxed_unsync);
    }
    let (parts, body) = resp.into_parts();
    let whole = match body.collect().await {
        Ok(c) => c.to_bytes(),
        Err(never) => match never {},
    };
    let second = whole.slice(whole.len() / 2..);
    let first = whole.slice(..whole.len() / 2);
    let later = async move {
        tokio::time::sleep(pause).await;
        second
    };
    let frames = stream::once(std::future::ready(first))
        .chain(stream::once(later))
        .map(|b| Ok::<_, Infallible>(Frame::data(b)));
    Response::from_parts(parts, StreamBody::new(frames).boxed_unsync())
}

fn json_response(status: StatusCode, v: serde_json::Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn amity_error(status: StatusCode, code: u32, message: &str) -> Response<Full<Bytes>> {
    json_response(
        status,
        json!({"status": "error", "code": code, "message": message}),
    )
}

fn random_token() -> String {
    let mut b = [0u8; 24];
    let _ = aws_lc_rs::rand::fill(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn header_str<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

impl Mock {
    async fn handle(
        &self,
        req: Request<Incoming>,
        subject: String,
        serial: String,
    ) -> Response<Full<Bytes>> {
        let (parts, body) = req.into_parts();
        tracing::info!(target: "mock_amity", method = %parts.method, path = %parts.uri.path(), client_subject = %subject, client_serial = %serial, "request");
        if self.opts.record_requests {
            self.record(&parts, &subject, &serial);
        }
        let now = self.observed.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        self.observed
            .peak_in_flight
            .fetch_max(now, Ordering::Relaxed);
        let _answered = Counted(&self.observed.in_flight);
        let delay = self.delay_ms.load(Ordering::Relaxed);
        if delay != 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        let body = match Limited::new(body, 64 * 1024).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => return amity_error(StatusCode::BAD_REQUEST, 400000, "Bad request."),
        };
        let mut resp = self.route(&parts.method, &parts.uri, &parts.headers, &body);
        for (k, v) in [
            ("x-mock-client-subject", subject),
            ("x-mock-client-serial", serial),
        ] {
            if let Ok(v) = HeaderValue::from_str(&v) {
                resp.headers_mut().insert(k, v);
            }
        }
        resp
    }

    fn record(&self, parts: &http::request::Parts, subject: &str, serial: &str) {
        let Ok(mut seen) = self.observed.requests.lock() else {
            return;
        };
        let authority = parts
            .uri
            .authority()
            .map(|a| a.to_string())
            .or_else(|| header_str(&parts.headers, "host").map(str::to_string))
            .unwrap_or_default();
        seen.push(Seen {
            method: parts.method.clone(),
            path: parts
                .uri
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_string(),
            authority,
            headers: parts.headers.clone(),
            client_subject: subject.to_string(),
            client_serial: serial.to_string(),
            http2: parts.version == http::Version::HTTP_2,
        });
    }

    fn route(
        &self,
        method: &Method,
        uri: &http::Uri,
        h: &HeaderMap,
        body: &Bytes,
    ) -> Response<Full<Bytes>> {
        let server_key_ok = header_str(h, "x-server-key") == Some(self.opts.server_key.as_str());
        match (method, uri.path()) {
            (&Method::GET, "/api/v3/authentication/token") => {
                if !server_key_ok {
                    return amity_error(StatusCode::FORBIDDEN, 400300, "Forbidden error.");
                }
                let user = uri.query().and_then(|q| {
                    q.split('&')
                        .filter_map(|kv| kv.split_once('='))
                        .find(|(k, v)| *k == "userId" && !v.is_empty())
                        .map(|(_, v)| v.to_string())
                });
                match user {
                    Some(u) => json_response(StatusCode::OK, json!(self.issue(u))),
                    None => json_response(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        json!({"status":"error","code":500000,"message":"Parameters error.",
                               "data":{"detail":[{"message":"\"userId\" is required","path":["userId"]}]}}),
                    ),
                }
            }
            (&Method::POST, "/api/v4/authentication/token") => {
                if !server_key_ok {
                    let mut r = Response::new(Full::new(Bytes::from_static(b"Unauthorized")));
                    *r.status_mut() = StatusCode::UNAUTHORIZED;
                    r.headers_mut()
                        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
                    return r;
                }
                let user = serde_json::from_slice::<serde_json::Value>(body)
                    .ok()
                    .and_then(|v| v.get("userId").and_then(|u| u.as_str()).map(str::to_string))
                    .filter(|u| !u.is_empty());
                match user {
                    Some(u) => {
                        let mut r =
                            Response::new(Full::new(Bytes::from(format!("\"{}\"", self.issue(u)))));
                        r.headers_mut()
                            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
                        r
                    }
                    None => json_response(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        json!({"status":"error","code":400000,"message":"Validation error.",
                               "data":{"detail":[{"message":"\"userId\" is required","path":["userId"]}]}}),
                    ),
                }
            }
            (&Method::POST, "/api/v3/sessions") => self.session(h, body),
            (&Method::GET, "/api/v3/users") => {
                let bearer = header_str(h, "authorization").and_then(|v| {
                    v.strip_prefix("Bearer ")
                        .or_else(|| v.strip_prefix("bearer "))
                });
                let token = bearer.or_else(|| header_str(h, "x-admin-token"));
                if token != Some(self.opts.admin_token.as_str()) {
                    return amity_error(StatusCode::UNAUTHORIZED, 400100, "Unauthorized.");
                }
                let mut users = json!({"users":[{"userId":"mock-user-1","displayName":"Mock User"}],"paging":{}});
                if self.opts.users_body_bytes > 0 {
                    users["pad"] = "x".repeat(self.opts.users_body_bytes).into();
                }
                json_response(StatusCode::OK, users)
            }
            _ => amity_error(StatusCode::NOT_FOUND, 400400, "Resource Not Found."),
        }
    }

    fn issue(&self, user: String) -> String {
        let token = random_token();
        if let Ok(mut t) = self.tokens.lock() {
            t.insert(token.clone(), user);
        }
        token
    }

    fn session(&self, h: &HeaderMap, body: &Bytes) -> Response<Full<Bytes>> {
        if header_str(h, "x-api-key").is_none_or(str::is_empty) {
            return amity_error(StatusCode::UNAUTHORIZED, 400100, "Unauthorized.");
        }
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
            return amity_error(StatusCode::BAD_REQUEST, 400000, "Bad request.");
        };
        let field = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string();
        let (user, device, token) = (field("userId"), field("deviceId"), field("authToken"));
        if user.is_empty() || device.is_empty() {
            return amity_error(StatusCode::BAD_REQUEST, 400000, "Bad request.");
        }
        let valid = self.tokens.lock().is_ok_and(|t| t.is_valid(&token, &user));
        if !valid {
            // Secure mode: a session needs an auth token issued for this user.
            return amity_error(StatusCode::FORBIDDEN, 400300, "Forbidden error.");
        }
        let display = Some(field("displayName"))
            .filter(|d| !d.is_empty())
            .unwrap_or(user.clone());
        json_response(
            StatusCode::OK,
            json!({
                "accessToken": random_token(),
                "refreshToken": random_token(),
                "users": [{"userId": user, "displayName": display}],
                "userStatus": "active",
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_expire_and_the_oldest_go_first_beyond_the_cap() {
        let mut t = Tokens::default();
        let long_ago = Instant::now().checked_sub(TOKEN_TTL).unwrap();
        t.users.insert("old".into(), ("u0".into(), long_ago));
        t.issued.push_back("old".into());
        t.insert("first".into(), "u1".into());
        assert!(!t.users.contains_key("old"), "an expired token is dropped");
        assert!(t.is_valid("first", "u1"));
        assert!(
            !t.is_valid("first", "u2"),
            "a token is valid for its own user only"
        );

        for i in 0..MAX_TOKENS {
            t.insert(format!("t{i}"), "u1".into());
        }
        assert_eq!(t.users.len(), MAX_TOKENS);
        assert_eq!(t.issued.len(), MAX_TOKENS);
        assert!(!t.is_valid("first", "u1"), "the oldest goes beyond the cap");
        assert!(t.is_valid("t0", "u1") && t.is_valid(&format!("t{}", MAX_TOKENS - 1), "u1"));
    }
}
