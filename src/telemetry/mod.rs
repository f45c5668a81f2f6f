//! Telemetry: what the gateway tells about itself (metrics, log lines).

pub mod logwriter;
pub mod metrics;
