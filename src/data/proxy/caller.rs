//! Who is calling, and whether they may: the `callers` list and the per-caller rate limit.

use std::sync::Arc;

use super::rate::RateLimit;
use super::reject::Reject;
use crate::model::config::{Caller, RouteClass, UserIdPattern, Validated};

/// Who is calling, as the listener saw it.
#[derive(Debug)]
pub struct ConnInfo {
    /// The TCP peer.
    pub peer: std::net::SocketAddr,
    /// Identities in the caller's client certificate, with mTLS (see [`crate::model::pki::identities`]).
    pub caller: Option<Vec<String>>,
    /// The app of the listener it came to, when that listener is an app's own.
    pub app: Option<Arc<str>>,
    name: String,
}

impl ConnInfo {
    /// A connection from `peer`, with the identities of its client certificate if any.
    pub fn new(
        peer: std::net::SocketAddr,
        caller: Option<Vec<String>>,
        app: Option<Arc<str>>,
    ) -> Self {
        let name = match caller.as_ref().and_then(|c| c.first()) {
            Some(id) => id.clone(),
            None => peer.ip().to_string(),
        };
        Self {
            peer,
            caller,
            app,
            name,
        }
    }

    /// The caller's name until `callers` matched one: its first identity, else its IP.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Caller admission of one generation.
pub(super) struct Admission {
    /// `callers` with their grants; empty allows every fleet certificate everything.
    callers: Vec<Caller>,
    rate: Option<RateLimit>,
}

/// A caller let in: the `callers` identity it matched (its name from then on), and the
/// userIds it may mint for.
#[derive(Default)]
pub(super) struct Admitted<'g> {
    pub(super) identity: Option<&'g String>,
    pub(super) user_ids: Option<&'g [UserIdPattern]>,
}

impl Admission {
    /// From `callers` and `limits.rate_limit`; the callers' rates go on from `previous`'s.
    pub(super) fn new(v: &Validated, previous: Option<&Admission>) -> Self {
        let previous_rate = previous.and_then(|p| p.rate.as_ref());
        Self {
            callers: v.callers.clone(),
            rate: (v.config.limits.rate_limit.as_ref())
                .and_then(|r| RateLimit::new(r, previous_rate)),
        }
    }

    /// Refuses a caller not granted this app (403) or route class (403), or over its rate
    /// (429).
    pub(super) fn admit(
        &self,
        conn: &ConnInfo,
        app: &str,
        route: RouteClass,
    ) -> Result<Admitted<'_>, Reject> {
        let mut admitted = Admitted::default();
        if !self.callers.is_empty() {
            let ids = conn.caller.as_deref().unwrap_or_default();
            let Some(caller) = self.callers.iter().find(|c| ids.contains(&c.identity)) else {
                return Err(Reject::CallerUnknown {
                    caller: conn.name().to_string(),
                });
            };
            let Some(grant) = caller.grants.iter().find(|g| g.app == app) else {
                return Err(Reject::CallerAppDenied {
                    caller: caller.identity.clone(),
                    app: app.to_string(),
                });
            };
            if !grant.routes.contains(&route) {
                return Err(Reject::CallerRouteDenied {
                    caller: caller.identity.clone(),
                    route: route.as_str(),
                });
            }
            admitted = Admitted {
                identity: Some(&caller.identity),
                user_ids: grant.user_ids.as_deref(),
            };
        }
        if let Some(rate) = &self.rate {
            let name = admitted.identity.unwrap_or(&conn.name);
            if let Err(wait) = rate.check(name) {
                return Err(Reject::RateLimited {
                    caller: name.clone(),
                    retry_after: wait.as_secs().max(1),
                });
            }
        }
        Ok(admitted)
    }
}
