//! The secrets the proxy adds to requests (server key, admin token), and what it does when a
//! caller sends its own.

use http::header::{HeaderMap, HeaderValue};

use super::headers::{AUTHORIZATION, X_ADMIN_TOKEN, X_SERVER_KEY};
use super::reject::Reject;
use crate::model::config::{CallerSecrets, LoadedApp, RouteClass};

/// The secrets of one generation, ready to be put on requests.
pub(super) struct Secrets {
    server_key: Option<HeaderValue>,
    admin_bearer: Option<HeaderValue>,
    caller_secrets: CallerSecrets,
}

fn secret_header(v: &str) -> Option<HeaderValue> {
    let mut h = HeaderValue::from_str(v).ok()?;
    // Never added to HTTP/2 header compression tables.
    h.set_sensitive(true);
    Some(h)
}

impl Secrets {
    /// The configured server key and admin token, with `caller_secrets`.
    pub(super) fn new(v: &LoadedApp, caller_secrets: CallerSecrets) -> Self {
        Self {
            server_key: v
                .server_key
                .as_ref()
                .and_then(|k| secret_header(k.expose())),
            admin_bearer: v
                .admin_token
                .as_ref()
                .and_then(|t| secret_header(&format!("Bearer {}", t.expose()))),
            caller_secrets,
        }
    }

    /// Puts the proxy's own server key or admin token on the request, dealing with a caller's
    /// as configured; removes a server key from every call but a token call.
    pub(super) fn inject(&self, route: RouteClass, h: &mut HeaderMap) -> Result<(), Reject> {
        // Only the token endpoint takes a server key: a caller's never goes anywhere else.
        if route != RouteClass::AuthToken {
            h.remove(&X_SERVER_KEY);
        }
        let (value, name, caller_sent) = match (route, &self.server_key, &self.admin_bearer) {
            (RouteClass::AuthToken, Some(k), _) => {
                (k, &X_SERVER_KEY, h.contains_key(&X_SERVER_KEY))
            }
            (RouteClass::Admin, _, Some(t)) => (
                t,
                &AUTHORIZATION,
                h.contains_key(&AUTHORIZATION) || h.contains_key(&X_ADMIN_TOKEN),
            ),
            _ => return Ok(()),
        };
        if caller_sent && self.caller_secrets == CallerSecrets::Reject {
            return Err(Reject::CallerSentSecret {
                header: name.clone(),
            });
        }
        h.remove(&X_ADMIN_TOKEN);
        h.insert(name, value.clone());
        Ok(())
    }
}
