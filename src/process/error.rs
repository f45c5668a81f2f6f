//! Why the proxy could not start.

use std::net::SocketAddr;

use crate::data::proxy::BuildError;
use crate::model::config::ConfigError;

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The configuration is not valid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A TLS configuration or the audit file could not be set up.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// A worker thread or its runtime could not start.
    #[error("cannot start a worker: {0}")]
    Runtime(std::io::Error),
    /// A listener could not bind.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}
