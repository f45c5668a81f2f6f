//! Service-manager notifications (the sd_notify protocol): ready, reloading,
//! stopping. They let a systemd unit use `Type=notify`, so that `systemctl
//! start` and `systemctl reload` return when the proxy is really serving.
//!
//! Every call is a no-op when `NOTIFY_SOCKET` is unset, as it is outside such a
//! unit (a shell, a container, a test).

use sd_notify::NotifyState;

/// READY=1: serving (after start, and after each reload).
pub fn ready() {
    send(&[NotifyState::Ready]);
}

/// STOPPING=1: shutting down, draining in-flight requests.
pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

/// RELOADING=1 now, with MONOTONIC_USEC as `Type=notify-reload` requires;
/// READY=1 when the returned guard drops, whatever the reload's outcome (a
/// failed reload leaves the previous configuration serving).
#[must_use = "READY=1 is sent when the guard drops"]
pub fn reloading() -> Reloading {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
    Reloading(())
}

/// Sends READY=1 when dropped; see [`reloading`].
#[derive(Debug)]
pub struct Reloading(());

impl Drop for Reloading {
    fn drop(&mut self) {
        ready();
    }
}

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot notify the service manager (NOTIFY_SOCKET)");
    }
}
