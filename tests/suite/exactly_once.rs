//! A request is sent again only when the upstream cannot have seen it. An upstream that reads a
//! request and then breaks the connection (bytes that are not TLS, a close without TLS's
//! close_notify) gets it exactly once, over HTTP/2 and HTTP/1.1, for GET and POST.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::common::{self, json, Env};

/// How the upstream breaks the connection once it has read a request.
#[derive(Clone, Copy, Debug)]
enum Break {
    /// Writes bytes that are not a TLS record: the client's TLS fails.
    Garbage,
    /// Closes the TCP connection without TLS's close_notify.
    Close,
}

fn break_it(raw: &std::net::TcpStream, how: Break) {
    use std::io::Write;
    let mut raw = raw;
    match how {
        // An application-data record header with a body that cannot decrypt.
        Break::Garbage => {
            let _ = raw.write_all(&[0x17, 0x03, 0x03, 0x00, 0x20]);
            let _ = raw.write_all(&[0x5a; 32]);
        }
        Break::Close => {
            let _ = raw.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// An upstream with the stand-in's certificate, demanding client certificates from the dev
/// CA, that counts each request it reads (its body too) and then breaks its connection.
async fn breaking_upstream(env: &Env, http2: bool, how: Break) -> (SocketAddr, Arc<AtomicUsize>) {
    let opts = env.mock_options();
    let alpn: &[&[u8]] = if http2 { &[b"h2"] } else { &[b"http/1.1"] };
    let tls = amity_mtls_proxy::data::tls::server_config(
        opts.chain.clone(),
        opts.key.clone_key(),
        Some(&opts.client_ca),
        alpn,
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let counted = seen.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let std_tcp = tcp.into_std().unwrap();
            let raw = Arc::new(std_tcp.try_clone().unwrap());
            let tcp = tokio::net::TcpStream::from_std(std_tcp).unwrap();
            let (acceptor, seen) = (acceptor.clone(), counted.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                if http2 {
                    serve_h2(tls, raw, seen, how).await;
                } else {
                    serve_h1(tls, raw, seen, how).await;
                }
            });
        }
    });
    (addr, seen)
}

async fn serve_h2(
    tls: tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    raw: Arc<std::net::TcpStream>,
    seen: Arc<AtomicUsize>,
    how: Break,
) {
    let Ok(mut conn) = h2::server::handshake(tls).await else {
        return;
    };
    while let Some(Ok((req, _respond))) = conn.accept().await {
        let (raw, seen) = (raw.clone(), seen.clone());
        tokio::spawn(async move {
            let mut body = req.into_body();
            while let Some(Ok(_)) = body.data().await {}
            seen.fetch_add(1, Ordering::SeqCst);
            break_it(&raw, how);
        });
    }
}

async fn serve_h1(
    tls: tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    raw: Arc<std::net::TcpStream>,
    seen: Arc<AtomicUsize>,
    how: Break,
) {
    let service = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let (raw, seen) = (raw.clone(), seen.clone());
        async move {
            let _ = req.into_body().collect().await;
            seen.fetch_add(1, Ordering::SeqCst);
            break_it(&raw, how);
            // No answer: the connection is broken.
            std::future::pending::<Result<http::Response<Empty<Bytes>>, std::io::Error>>().await
        }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(tls), service)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_the_upstream_read_before_its_connection_broke_is_sent_once() {
    for http2 in [true, false] {
        for how in [Break::Garbage, Break::Close] {
            let env = Env::new();
            env.client_cert("backend-a");
            let (addr, seen) = breaking_upstream(&env, http2, how).await;
            let proxy = env
                .proxy(&env.config(addr, &["backend-a"], "workers: 1\n"))
                .await;
            let case = format!("HTTP/{} {how:?}", if http2 { "2" } else { "1.1" });
            let (status, _, body) = common::v3(proxy.addr).await;
            assert_eq!(status, StatusCode::BAD_GATEWAY, "{case} GET");
            assert_eq!(json(&body)["status"], "error", "{case} GET");
            assert_eq!(
                seen.load(Ordering::SeqCst),
                1,
                "{case}: the GET arrived once"
            );
            let (status, _, _) = common::v4(proxy.addr, "alice").await;
            assert_eq!(status, StatusCode::BAD_GATEWAY, "{case} POST");
            assert_eq!(
                seen.load(Ordering::SeqCst),
                2,
                "{case}: the POST arrived once"
            );
            proxy.shutdown().await;
        }
    }
}
