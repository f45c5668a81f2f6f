//! rustls configurations: the upstream client (presenting an Amity client
//! certificate) and servers (the stand-in Amity).

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::model::config::{LoadedCert, LoadedInbound};

/// Errors building a TLS configuration.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A trust root could not be added.
    #[error("trust root #{index} is not a usable CA certificate: {source}")]
    BadRoot {
        /// Position in the file.
        index: usize,
        /// rustls' reason.
        source: rustls::Error,
    },
    /// The certificate and key were refused by rustls.
    #[error("certificate {name:?}: {source}")]
    BadIdentity {
        /// Which certificate.
        name: String,
        /// rustls' reason.
        source: rustls::Error,
    },
    /// The client verifier could not be built.
    #[error("client CA: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// Public web roots plus `extra` (e.g. the dev CA).
pub fn roots(
    extra: &[CertificateDer<'static>],
    with_public: bool,
) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    if with_public {
        store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    for (i, c) in extra.iter().enumerate() {
        store.add(c.clone()).map_err(|source| TlsError::BadRoot {
            index: i + 1,
            source,
        })?;
    }
    Ok(store)
}

/// The upstream client configuration: a fresh one per generation, so no TLS
/// session (and with it no client identity) is resumed across a certificate change.
pub fn upstream_client_config(
    extra_roots: &[CertificateDer<'static>],
    cert: Option<&LoadedCert>,
) -> Result<ClientConfig, TlsError> {
    let builder = ClientConfig::builder().with_root_certificates(roots(extra_roots, true)?);
    match cert {
        Some(c) => builder
            .with_client_auth_cert(c.chain.clone(), c.key.clone_key())
            .map_err(|source| TlsError::BadIdentity {
                name: c.name.clone(),
                source,
            }),
        None => Ok(builder.with_no_client_auth()),
    }
}

/// A server configuration; with `client_roots`, a client certificate from them is required.
pub fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    client_roots: Option<&[CertificateDer<'static>]>,
    alpn: &[&[u8]],
) -> Result<Arc<ServerConfig>, TlsError> {
    let builder = ServerConfig::builder();
    let builder = match client_roots {
        Some(r) => builder.with_client_cert_verifier(
            WebPkiClientVerifier::builder(Arc::new(roots(r, false)?)).build()?,
        ),
        None => builder.with_no_client_auth(),
    };
    let mut cfg = builder
        .with_single_cert(chain, key)
        .map_err(|source| TlsError::BadIdentity {
            name: "server".into(),
            source,
        })?;
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(cfg))
}

/// The backend-facing TLS acceptor: TLS 1.2/1.3, ALPN h2 and http/1.1, and with a
/// fleet CA, a client certificate it issued is required at the handshake.
pub fn inbound_acceptor(t: &LoadedInbound) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
    let cfg = server_config(
        t.chain.clone(),
        t.key.clone_key(),
        t.client_ca.as_deref(),
        &[b"h2", b"http/1.1"],
    )?;
    Ok(tokio_rustls::TlsAcceptor::from(cfg))
}
