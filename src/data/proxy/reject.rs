//! The responses the proxy makes itself, in Amity's error shape: one enum, each variant
//! declaring its status, machine reason and message together.

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode};

use super::body::{full, ProxyBody};
use super::failure::UpstreamFailure;

/// Declares [`Reject`] and its `status`, `reason` and `message`, from one entry per variant:
/// `Variant { fields } => STATUS, reason, "message with {fields}";`.
macro_rules! rejects {
    ($(
        $(#[doc = $doc:literal])*
        $name:ident $({ $($(#[doc = $fdoc:literal])* $field:ident: $ty:ty),* $(,)? })?
            => $status:ident, $reason:expr, $message:literal;
    )*) => {
        /// A response the proxy makes itself, in Amity's error shape.
        #[derive(Debug, Clone)]
        pub enum Reject {
            $(
                $(#[doc = $doc])*
                $name $({ $($(#[doc = $fdoc])* $field: $ty),* })?,
            )*
        }

        impl Reject {
            /// HTTP status.
            pub fn status(&self) -> StatusCode {
                match self {
                    $(Self::$name { .. } => StatusCode::$status,)*
                }
            }

            /// Machine-readable reason, e.g. `route_denied`.
            #[allow(unused_variables)]
            pub fn reason(&self) -> &'static str {
                match self {
                    $(Self::$name { $($($field),*)? } => $reason,)*
                }
            }

            /// What happened, for people.
            #[allow(unused_variables)]
            pub fn message(&self) -> String {
                match self {
                    $(Self::$name { $($($field),*)? } => format!($message),)*
                }
            }
        }
    };
}

rejects! {
    /// The path could make the upstream see another one.
    PathNotCanonical => BAD_REQUEST, "path_not_canonical",
        "the request path has empty, '.' or '..' segments or encoded separators";
    /// A v3 token call without its user.
    MissingUserId => BAD_REQUEST, "missing_user_id",
        "GET /api/v3/authentication/token needs a non-empty userId query parameter";
    /// The shared listener serves several apps and the path names none.
    AppNotNamed => NOT_FOUND, "app_not_named",
        "this listener serves several Amity apps: begin the path with /apps/<name>/";
    /// The path or listener names an app that is not configured.
    UnknownApp {
        /// The name given.
        app: String,
    } => NOT_FOUND, "unknown_app", "no app is named {app:?} here";
    /// The userId of a token call cannot be read unambiguously.
    UserIdAmbiguous {
        /// Why.
        error: String,
    } => BAD_REQUEST, "user_id_ambiguous", "the userId cannot be read unambiguously: {error}";
    /// The caller may mint tokens only for some userIds, and this request names none.
    UserIdMissing {
        /// The `callers` identity matched.
        caller: String,
    } => FORBIDDEN, "user_id_denied", "caller {caller} may mint tokens only for some userIds, and this request names none";
    /// The caller may not mint a token for this userId.
    UserIdDenied {
        /// The `callers` identity matched.
        caller: String,
        /// The userId asked for.
        user_id: String,
    } => FORBIDDEN, "user_id_denied", "caller {caller} may not mint tokens for userId {user_id:?}";
    /// `audit.required` is set and the audit trail cannot be written.
    AuditUnavailable {
        /// Where the records go.
        path: String,
    } => SERVICE_UNAVAILABLE, "audit_unavailable",
        "the audit trail ({path}) cannot be written and audit.required is set; no call is made until it can";
    /// The token endpoint's path, written or called otherwise than the allowed token calls.
    TokenCallForm {
        /// The request's method.
        method: Method,
        /// The request's path.
        path: String,
    } => FORBIDDEN, "token_call_form",
        "{method} {path} names the token endpoint: only GET /api/v3/authentication/token and POST /api/v4/authentication/token, written so, are forwarded (when enabled)";
    /// Not on the allow-list.
    RouteDenied {
        /// The request's method.
        method: Method,
        /// The request's path.
        path: String,
    } => FORBIDDEN, "route_denied",
        "{method} {path} is not an Amity auth-token or admin-token call; the proxy only forwards those";
    /// `callers` is in use and names none of the caller's identities.
    CallerUnknown {
        /// The caller's name (its first identity, else its IP).
        caller: String,
    } => FORBIDDEN, "caller_unknown", "caller {caller} is not listed under callers";
    /// The caller has no grant on this app.
    CallerAppDenied {
        /// The `callers` identity matched.
        caller: String,
        /// The app's name.
        app: String,
    } => FORBIDDEN, "caller_app_denied", "caller {caller} may not call app {app}";
    /// The caller may not make calls of this route class.
    CallerRouteDenied {
        /// The `callers` identity matched.
        caller: String,
        /// The route class's name.
        route: &'static str,
    } => FORBIDDEN, "caller_route_denied", "caller {caller} may not make {route} calls";
    /// The caller is over `limits.rate_limit`.
    RateLimited {
        /// The caller's name.
        caller: String,
        /// Seconds until it may call again.
        retry_after: u64,
    } => TOO_MANY_REQUESTS, "rate_limited", "caller {caller} is over its rate limit";
    /// The caller sent a secret the proxy adds, with `caller_secrets: reject`.
    CallerSentSecret {
        /// The secret's header.
        header: HeaderName,
    } => FORBIDDEN, "caller_sent_secret", "callers must not send {header}: the proxy adds it";
    /// The body is over `limits.max_request_body_bytes`.
    BodyTooLarge {
        /// The limit, in bytes.
        limit: usize,
    } => PAYLOAD_TOO_LARGE, "body_too_large", "request body is over the {limit}-byte limit";
    /// The body did not arrive in time.
    BodyReadTimeout {
        /// The timeout, in milliseconds.
        ms: u128,
    } => REQUEST_TIMEOUT, "body_read_timeout", "the request body did not arrive within {ms} ms";
    /// The body could not be read.
    BodyReadFailed {
        /// Why.
        error: String,
    } => BAD_REQUEST, "body_read_failed", "could not read the request body: {error}";
    /// The path cannot be put under the upstream's prefix.
    BadPath {
        /// Why.
        error: String,
    } => BAD_REQUEST, "bad_path", "{error}";
    /// `limits.max_in_flight` requests are waiting for the upstream already.
    Overloaded {
        /// The limit.
        max_in_flight: usize,
    } => SERVICE_UNAVAILABLE, "overloaded",
        "{max_in_flight} requests are already in flight to Amity; try again shortly";
    /// No configured certificate is valid now.
    NoUsableCert {
        /// Each certificate's state.
        why: String,
    } => BAD_GATEWAY, "no_usable_cert", "{why}";
    /// The upstream did not answer in time.
    UpstreamTimeout {
        /// Machine-readable reason of the failure.
        kind: &'static str,
        /// The failure.
        error: String,
    } => GATEWAY_TIMEOUT, *kind, "{error}";
    /// Connecting, TLS or HTTP to the upstream failed, or it refused our certificate.
    Upstream {
        /// Machine-readable reason of the failure.
        kind: &'static str,
        /// The failure.
        error: String,
    } => BAD_GATEWAY, *kind, "{error}";
    /// Admin listener: a Host that is not the listener's.
    AdminHostRefused {
        /// The Host header.
        host: String,
    } => FORBIDDEN, "admin_host_refused",
        "Host {host:?} is neither this admin listener's address nor localhost";
    /// Admin listener: a state-changing request from a web page.
    AdminOriginRefused {
        /// The request's method.
        method: Method,
        /// The request's path.
        path: String,
    } => FORBIDDEN, "admin_origin_refused",
        "{method} {path} from a web page (it carries Origin) is refused";
    /// Admin listener: the token is missing or wrong.
    AdminTokenRequired => UNAUTHORIZED, "admin_token_required",
        "this admin endpoint needs Authorization: Bearer with the token in admin_auth_token_file";
}

impl Reject {
    /// Whether the refused request was a call of the token endpoint, refused before it was
    /// classified as one.
    pub fn names_token_call(&self) -> bool {
        matches!(self, Self::MissingUserId | Self::TokenCallForm { .. })
    }

    /// Seconds for a `Retry-After` header.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            Self::RateLimited { retry_after, .. } => Some(*retry_after),
            Self::Overloaded { .. } => Some(1),
            _ => None,
        }
    }

    /// The proxy's own error code: 900000 plus the HTTP status, apart from Amity's 6-digit codes.
    pub fn code(&self) -> u32 {
        900_000 + u32::from(self.status().as_u16())
    }

    /// `{"status":"error","code":..,"message":..,"data":{..}}`.
    pub fn body(&self, request_id: &str) -> Bytes {
        let v = serde_json::json!({
            "status": "error",
            "code": self.code(),
            "message": format!("amity-mtls-proxy: {}", self.message()),
            "data": { "source": "proxy", "reason": self.reason(), "requestId": request_id },
        });
        Bytes::from(v.to_string())
    }

    /// The response, with `Retry-After` when the caller may try again later.
    pub(super) fn into_response(self, request_id: &str) -> Response<ProxyBody> {
        let mut resp = Response::new(full(self.body(request_id)));
        *resp.status_mut() = self.status();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(secs) = self.retry_after() {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

/// The refusal for a failed exchange with the upstream; when the upstream refused our
/// certificate, it names the one presented (`cert`).
pub(super) fn upstream_reject(e: &UpstreamFailure, cert: Option<&str>) -> Reject {
    let error = match (e.is_cert_rejection(), cert) {
        (true, None) => format!("{e}; no client certificate is configured (see `cert list`)"),
        (true, Some(name)) => format!(
            "{e}; certificate {name:?} was presented: check it is registered in the Amity console and not expired"
        ),
        _ => e.to_string(),
    };
    match e {
        UpstreamFailure::Upstream(u) if u.error.is_timeout() => Reject::UpstreamTimeout {
            kind: u.error.kind(),
            error,
        },
        UpstreamFailure::Upstream(u) => Reject::Upstream {
            kind: u.error.kind(),
            error,
        },
        UpstreamFailure::CertRefused { .. } => Reject::Upstream {
            kind: "client_cert_rejected",
            error,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_errors_have_amity_shape() {
        let r = Reject::BodyTooLarge { limit: 10 };
        let v: serde_json::Value = serde_json::from_slice(&r.body("rid1")).unwrap();
        assert_eq!(v["status"], "error");
        assert_eq!(v["code"], 900413);
        assert_eq!(
            v["message"],
            "amity-mtls-proxy: request body is over the 10-byte limit"
        );
        assert_eq!(v["data"]["source"], "proxy");
        assert_eq!(v["data"]["reason"], "body_too_large");
        assert_eq!(v["data"]["requestId"], "rid1");
    }

    #[test]
    fn each_refusal_carries_its_status_reason_and_message() {
        let denied = Reject::RouteDenied {
            method: Method::POST,
            path: "/api/v3/sessions".into(),
        };
        assert_eq!(denied.status(), StatusCode::FORBIDDEN);
        assert_eq!(denied.reason(), "route_denied");
        assert_eq!(
            denied.message(),
            "POST /api/v3/sessions is not an Amity auth-token or admin-token call; the proxy only forwards those"
        );
        let limited = Reject::RateLimited {
            caller: "backend-a".into(),
            retry_after: 3,
        };
        let resp = limited.into_response("r");
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "3");
        let busy = Reject::Overloaded { max_in_flight: 5 }.into_response("r");
        assert_eq!(busy.headers()[header::RETRY_AFTER], "1");
        let timeout = Reject::UpstreamTimeout {
            kind: "response_timeout",
            error: "slow".into(),
        };
        assert_eq!(
            (timeout.status(), timeout.reason()),
            (StatusCode::GATEWAY_TIMEOUT, "response_timeout")
        );
        let sent = Reject::CallerSentSecret {
            header: HeaderName::from_static("x-server-key"),
        };
        assert_eq!(
            sent.message(),
            "callers must not send x-server-key: the proxy adds it"
        );
        assert!(Reject::PathNotCanonical
            .into_response("r")
            .headers()
            .get(header::RETRY_AFTER)
            .is_none());
    }
}
