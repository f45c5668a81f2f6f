//! Telemetry: what the gateway tells about itself (metrics, log lines).

pub mod logthrottle;
pub mod logwriter;
pub mod metrics;
