//! The model: what the gateway is configured with, and what certificates are.
//! It knows nothing of requests, connections or the running process.

pub mod config;
pub mod pki;
