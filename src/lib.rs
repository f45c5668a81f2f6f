//! amity-mtls-proxy: an egress gateway that carries Amity Social Cloud
//! auth-token and admin-token calls over mutual TLS.
//!
//! `main.rs` only parses the command line. The library is in layers, one folder each, and a
//! module imports only from its own layer and the layers listed before it
//! (`scripts/layers.py` checks it; `ARCHITECTURE.md` is the map).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

// From the bottom layer up.
pub mod model;

pub mod telemetry;

pub mod data;

pub mod control;

pub mod process;

pub mod tools;

/// Installs the aws-lc-rs crypto provider as rustls' process default.
///
/// Called once by `main` and by tests; later calls are harmless no-ops.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}
