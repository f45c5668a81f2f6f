//! Who is calling, and whether they may: the `callers` list and the per-caller rate limit.

use std::num::NonZeroU32;

use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

use super::reject::Reject;
use crate::model::config::{RouteClass, Validated};

/// Who is calling, as the listener saw it.
#[derive(Debug)]
pub struct ConnInfo {
    /// The TCP peer.
    pub peer: std::net::SocketAddr,
    /// Identities in the caller's client certificate, with mTLS (see [`crate::model::pki::identities`]).
    pub caller: Option<Vec<String>>,
    name: String,
}

impl ConnInfo {
    /// A connection from `peer`, with the identities of its client certificate if any.
    pub fn new(peer: std::net::SocketAddr, caller: Option<Vec<String>>) -> Self {
        let name = match caller.as_ref().and_then(|c| c.first()) {
            Some(id) => id.clone(),
            None => peer.ip().to_string(),
        };
        Self { peer, caller, name }
    }

    /// The caller's name until `callers` matched one: its first identity, else its IP.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Caller admission of one generation.
pub(super) struct Admission {
    /// `callers`: identity and allowed route classes; empty allows every fleet certificate.
    callers: Vec<(String, Vec<RouteClass>)>,
    rate: Option<RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock>>,
}

impl Admission {
    /// From `callers` and `limits.rate_limit`.
    pub(super) fn new(v: &Validated) -> Self {
        Self {
            callers: v
                .config
                .callers
                .iter()
                .map(|c| (c.identity.clone(), c.routes.clone()))
                .collect(),
            rate: v.config.limits.rate_limit.as_ref().and_then(|r| {
                let quota = Quota::per_second(NonZeroU32::new(r.per_second)?)
                    .allow_burst(NonZeroU32::new(r.burst)?);
                Some(RateLimiter::keyed(quota))
            }),
        }
    }

    /// Refuses a caller not allowed this route class (403) or over its rate (429). Returns
    /// the `callers` identity it matched, if the list is in use: the caller's name from then on.
    pub(super) fn admit(
        &self,
        conn: &ConnInfo,
        route: RouteClass,
    ) -> Result<Option<&String>, Reject> {
        let mut matched = None;
        if !self.callers.is_empty() {
            let ids = conn.caller.as_deref().unwrap_or_default();
            let entry = self.callers.iter().find(|(id, _)| ids.contains(id));
            match entry {
                None => {
                    return Err(Reject::CallerUnknown {
                        caller: conn.name().to_string(),
                    })
                }
                Some((id, routes)) if !routes.contains(&route) => {
                    return Err(Reject::CallerRouteDenied {
                        caller: id.clone(),
                        route: route.as_str(),
                    })
                }
                Some((id, _)) => matched = Some(id),
            }
        }
        if let Some(rate) = &self.rate {
            let name = matched.unwrap_or(&conn.name);
            if let Err(not_until) = rate.check_key(name) {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                return Err(Reject::RateLimited {
                    caller: name.clone(),
                    retry_after: wait.as_secs().max(1),
                });
            }
            if rate.len() > 10_000 {
                rate.retain_recent();
            }
        }
        Ok(matched)
    }
}
