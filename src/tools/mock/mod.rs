//! A stand-in Amity API on loopback, for tests and the demo.
//!
//! It demands a client certificate from the given CA at the handshake, serves
//! the token, session and one admin call with Amity's bodies and error shapes,
//! and, for tests, records which client certificate every request came with.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{HeaderMap, Method};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::data::tls::{self, TlsError};

mod api;
mod connection;

use api::Tokens;
use connection::accept_loop;

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
    /// As the proxy forwarded it.
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
