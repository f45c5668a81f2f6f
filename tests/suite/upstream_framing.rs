//! Responses from an HTTP/1.1 upstream whose framing a proxy must not pass on as it came.

use crate::common;

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use amity_mtls_proxy::data::tls;

/// An HTTP/1.1-only TLS upstream that answers every request with `response`, as it is.
async fn raw_upstream(env: &common::Env, response: &'static [u8]) -> std::net::SocketAddr {
    let o = env.mock_options();
    let config = tls::server_config(o.chain, o.key, Some(&o.client_ca), &[b"http/1.1"]).unwrap();
    let acceptor = TlsAcceptor::from(Arc::clone(&config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut s) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s.write_all(response).await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_response_with_both_content_length_and_chunked_reaches_the_caller_without_the_length() {
    let env = common::Env::new();
    env.client_cert("backend-a");
    let upstream = raw_upstream(
        &env,
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\
          transfer-encoding: chunked\r\nconnection: close\r\n\r\n4\r\n\"ok\"\r\n0\r\n\r\n",
    )
    .await;
    let proxy = env.proxy(&env.config(upstream, &["backend-a"], "")).await;
    let answer = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        common::call(
            proxy.addr,
            http::Method::GET,
            common::V3,
            common::WITH_KEY,
            "",
        ),
    )
    .await
    .expect("an answer within 5 s");
    let (status, headers, body) = answer.expect("a whole response");
    assert_eq!(status, http::StatusCode::OK);
    assert_eq!(&body[..], b"\"ok\"", "the chunked body, whole");
    // A stale length would make the caller wait for 96 bytes that never come, or read the
    // next response as the rest of this one.
    let length = headers.get(http::header::CONTENT_LENGTH);
    assert!(
        length.is_none_or(|l| l == "4"),
        "content-length passed on: {length:?}"
    );
    proxy.shutdown().await;
}
