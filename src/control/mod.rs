//! The control plane: changing and watching a running gateway (reload, the admin listener,
//! the status page, systemd notifications).

pub mod admin;
pub mod prove;
pub mod reload;
/// systemd readiness notifications (no-ops outside a `Type=notify` unit).
pub mod sd;
pub mod status;
