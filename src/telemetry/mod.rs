//! Telemetry: what the gateway tells about itself (metrics, log lines, the audit trail).

pub mod audit;
pub mod group;
mod labels;
pub mod logthrottle;
pub mod logwriter;
pub mod metrics;
mod traffic;
