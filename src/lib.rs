//! amity-mtls-proxy: an egress gateway that carries Amity Social Cloud
//! auth-token and admin-token calls over mutual TLS.
//!
//! `main.rs` only parses the command line; every job lives in a module here.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod admin;
pub mod cli;
pub mod config;
pub mod conn;
pub mod demo;
pub mod logwriter;
pub mod metrics;
pub mod mock;
pub mod pki;
pub mod proxy;
pub mod reload;
/// systemd readiness notifications (no-ops outside a `Type=notify` unit).
pub mod sd;
pub mod server;
pub mod status;
pub mod tls;
pub mod upstream;
pub mod workers;

/// Installs the aws-lc-rs crypto provider as rustls' process default.
///
/// Called once by `main` and by tests; later calls are harmless no-ops.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}
