//! The pooled, mutually authenticated TLS client towards Amity.
//!
//! One job per file: [`Upstream`] sends a request (client), over the worker's HTTP/2
//! connections (multiplex) or a pool of HTTP/1.1 ones; `watched` records the TLS errors those
//! connections meet, [`UpstreamError`] says what went wrong (error), [`UpstreamBody`] carries
//! the response back (body), and [`probe`] serves `check --live`.

use std::error::Error as StdError;

mod body;
mod client;
mod error;
mod multiplex;
mod probe;
mod retry;
mod watched;

pub use body::{BodyStart, UpstreamBody};
pub use client::{upstream_path, Outgoing, Upstream};
pub use error::{alert_name, error_chain, is_cert_alert, UpstreamError};
pub use multiplex::RecvBody;
pub use probe::{probe, Proof};
pub use retry::{decide, Failure, Retry, Seen, Unanswered};

/// The error type of response bodies and connectors.
pub type BoxError = Box<dyn StdError + Send + Sync>;
