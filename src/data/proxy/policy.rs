//! The allow-list: which requests pass, as which route class. Deny by default.

use http::header::{self, HeaderMap};
use http::{Method, Uri};

use super::headers::X_ADMIN_TOKEN;
use super::reject::Reject;
use crate::model::config::{PathRule, RouteClass, RoutesConfig};

enum PathMatch {
    Exact(String),
    Prefix(String),
}

/// The allow-list, built once per generation.
pub struct Policy {
    admin_injected: bool,
    v3: bool,
    v4: bool,
    admin: bool,
    admin_prefixes: Vec<String>,
    extra: Vec<(Option<Method>, PathMatch)>,
}

const V3_TOKEN: &str = "/api/v3/authentication/token";
const V4_TOKEN: &str = "/api/v4/authentication/token";

impl Policy {
    /// From the `routes` section (already validated). With `admin_injected`, the proxy
    /// holds the admin token, so admin calls are recognised by path alone.
    pub fn new(r: &RoutesConfig, admin_injected: bool) -> Self {
        Self {
            admin_injected,
            v3: r.auth_token_v3,
            v4: r.auth_token_v4,
            admin: r.admin,
            admin_prefixes: r.admin_prefixes.clone(),
            extra: r
                .extra
                .iter()
                .filter_map(|e| {
                    let p = match e.rule()? {
                        PathRule::Exact(p) => PathMatch::Exact(p.to_string()),
                        PathRule::Prefix(p) => PathMatch::Prefix(p.to_string()),
                    };
                    Some((e.method.clone(), p))
                })
                .collect(),
        }
    }

    /// Allows a request as one route class, or says why not.
    pub fn classify(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
    ) -> Result<RouteClass, Reject> {
        let path = uri.path();
        if !is_canonical(path) {
            // Dot segments, doubled or escaped separators: a router that resolves them could
            // still read a token call, which is then refused (and audited) as one.
            if names_token_endpoint(&resolved(path)) {
                return Err(Reject::TokenCallForm {
                    method: method.clone(),
                    path: path.to_string(),
                });
            }
            return Err(Reject::PathNotCanonical);
        }
        if self.v3 && method == Method::GET && path == V3_TOKEN {
            if !has_query_param(uri.query(), "userId") {
                return Err(Reject::MissingUserId);
            }
            return Ok(RouteClass::AuthToken);
        }
        if self.v4 && method == Method::POST && path == V4_TOKEN {
            return Ok(RouteClass::AuthToken);
        }
        // Amity's router ignores case and a trailing '/', and decodes escapes: any other
        // form of the token endpoint's path would go out unchecked as an admin or extra call.
        if names_token_endpoint(path) {
            return Err(Reject::TokenCallForm {
                method: method.clone(),
                path: path.to_string(),
            });
        }
        if self.admin
            && (self.admin_injected || has_admin_token(headers))
            && self
                .admin_prefixes
                .iter()
                .any(|p| path.starts_with(p.as_str()))
        {
            return Ok(RouteClass::Admin);
        }
        for (m, p) in &self.extra {
            let method_ok = m.as_ref().is_none_or(|m| m == method);
            let path_ok = match p {
                PathMatch::Exact(e) => path == e,
                PathMatch::Prefix(pre) => path.starts_with(pre.as_str()),
            };
            if method_ok && path_ok {
                return Ok(RouteClass::Extra);
            }
        }
        Err(Reject::RouteDenied {
            method: method.clone(),
            path: path.to_string(),
        })
    }
}

fn is_canonical(path: &str) -> bool {
    let b = path.as_bytes();
    if b.first() != Some(&b'/') {
        return false;
    }
    // One pass over the bytes, no allocation: this runs for every request.
    let mut segment = 1;
    for i in 1..=b.len() {
        let c = b.get(i).copied();
        match c {
            Some(b'\\') => return false,
            Some(b'%') => {
                let hex = b
                    .get(i + 1..i + 3)
                    .map(|h| [h[0].to_ascii_lowercase(), h[1].to_ascii_lowercase()]);
                // Encoded '.', '/', '\' or NUL could make the upstream see another path.
                if matches!(hex, Some([b'2', b'e' | b'f'] | [b'5', b'c'] | [b'0', b'0'])) {
                    return false;
                }
            }
            Some(b'/') | None => {
                let s = &b[segment..i];
                // An empty segment is allowed last only (a trailing '/').
                if s == b"." || s == b".." || (s.is_empty() && c.is_some()) {
                    return false;
                }
                segment = i + 1;
            }
            Some(_) => {}
        }
    }
    true
}

/// Whether `path` reads as a token endpoint's to a router that ignores case and a trailing
/// '/' and decodes escapes. Without an escape (nearly every path), no allocation.
fn names_token_endpoint(path: &str) -> bool {
    let same = |p: &str| {
        let p = p.strip_suffix('/').unwrap_or(p);
        [V3_TOKEN, V4_TOKEN]
            .iter()
            .any(|t| p.eq_ignore_ascii_case(t))
    };
    if path.contains('%') {
        same(&percent_encoding::percent_decode_str(path).decode_utf8_lossy())
    } else {
        same(path)
    }
}

/// `path` with its escapes decoded and its `.`, `..`, empty segments and `\` resolved.
fn resolved(path: &str) -> String {
    let decoded = percent_encoding::percent_decode_str(path).decode_utf8_lossy();
    let mut segments = Vec::new();
    for s in decoded.split(['/', '\\']) {
        match s {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    format!("/{}", segments.join("/"))
}

fn has_query_param(query: Option<&str>, name: &str) -> bool {
    let name = name.as_bytes();
    // `name=` followed by at least one byte; a byte scan, as it runs per token call.
    query.is_some_and(|q| {
        q.as_bytes()
            .split(|&b| b == b'&')
            .any(|kv| kv.len() > name.len() + 1 && kv.starts_with(name) && kv[name.len()] == b'=')
    })
}

fn has_admin_token(h: &HeaderMap) -> bool {
    let bearer = h
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.len() > 7 && v[..7].eq_ignore_ascii_case("bearer ") && !v[7..].trim().is_empty()
        });
    bearer
        || h.get(&X_ADMIN_TOKEN)
            .is_some_and(|v| !v.as_bytes().iter().all(u8::is_ascii_whitespace))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::HeaderName;

    fn header_map(headers: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.insert(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn req(method: Method, uri: &str, headers: &[(&str, &str)]) -> (Method, Uri, HeaderMap) {
        (method, uri.parse().unwrap(), header_map(headers))
    }

    fn classify(p: &Policy, r: (Method, Uri, HeaderMap)) -> Result<RouteClass, u16> {
        p.classify(&r.0, &r.1, &r.2)
            .map_err(|e| e.status().as_u16())
    }

    #[test]
    fn canonical_paths() {
        for ok in ["/", "/a", "/a/b/", "/a/..b", "/a/.b/c", "/a%41", "/a%"] {
            assert!(is_canonical(ok), "{ok}");
        }
        for bad in [
            "", "a", "//", "//a", "/a//b", "/./a", "/a/.", "/a/..", "/a/../b", "/a%2e", "/a%2F",
            "/a%5cb", "/a%00", "/a\\b",
        ] {
            assert!(!is_canonical(bad), "{bad}");
        }
    }

    #[test]
    fn the_user_id_parameter_must_be_present_and_non_empty() {
        let has = |q: &str| has_query_param(Some(q), "userId");
        assert!(has("userId=u1"));
        assert!(has("a=1&userId=u&b"));
        assert!(!has("userId="));
        assert!(!has("userId"));
        assert!(!has("userIdx=1"));
        assert!(!has("xuserId=1"));
        assert!(!has("userId=&a=1"));
        assert!(!has_query_param(None, "userId"));
    }

    #[test]
    fn default_policy_allows_only_token_and_admin_calls() {
        let p = Policy::new(&RoutesConfig::default(), false);
        let ok = |r| classify(&p, r);
        assert_eq!(
            ok(req(
                Method::GET,
                "/api/v3/authentication/token?userId=u1",
                &[]
            )),
            Ok(RouteClass::AuthToken)
        );
        assert_eq!(
            ok(req(Method::GET, "/api/v3/authentication/token", &[])),
            Err(400)
        );
        assert_eq!(
            ok(req(
                Method::GET,
                "/api/v3/authentication/token?userId=",
                &[]
            )),
            Err(400)
        );
        assert_eq!(
            ok(req(Method::POST, "/api/v4/authentication/token", &[])),
            Ok(RouteClass::AuthToken)
        );
        assert_eq!(
            ok(req(Method::GET, "/api/v4/authentication/token", &[])),
            Err(403)
        );
        assert_eq!(
            ok(req(
                Method::GET,
                "/api/v3/users",
                &[("authorization", "Bearer abc")]
            )),
            Ok(RouteClass::Admin)
        );
        assert_eq!(
            ok(req(
                Method::GET,
                "/api/v3/users",
                &[("x-admin-token", "abc")]
            )),
            Ok(RouteClass::Admin)
        );
        assert_eq!(
            ok(req(
                Method::GET,
                "/api/v3/users",
                &[("authorization", "Bearer ")]
            )),
            Err(403)
        );
        assert_eq!(
            ok(req(
                Method::GET,
                "/api/v3/users",
                &[("authorization", "Basic abc")]
            )),
            Err(403)
        );
        assert_eq!(ok(req(Method::POST, "/api/v3/sessions", &[])), Err(403));
        assert_eq!(
            ok(req(
                Method::GET,
                "/healthz",
                &[("authorization", "Bearer abc")]
            )),
            Err(403)
        );
        assert_eq!(
            ok(req(
                Method::GET,
                "/api/v3/users/../../x",
                &[("authorization", "Bearer abc")]
            )),
            Err(400)
        );
        assert_eq!(
            ok(req(
                Method::GET,
                "/api/v3/users/%2e%2e/x",
                &[("authorization", "Bearer abc")]
            )),
            Err(400)
        );
    }

    #[test]
    fn the_token_endpoint_written_otherwise_is_never_an_admin_call() {
        let p = Policy::new(&RoutesConfig::default(), true);
        let bearer = [("authorization", "Bearer abc")];
        for (method, uri) in [
            (Method::POST, "/api/v4/authentication/token/"),
            (Method::GET, "/API/v3/authentication/token?userId=alice"),
            (Method::GET, "/api/v3/authentication/Token/?userId=alice"),
            (Method::GET, "/api/v3/authentication/t%6Fken?userId=alice"),
            (Method::HEAD, "/api/v3/authentication/token?userId=alice"),
            (Method::POST, "/api/v3/authentication/token?userId=alice"),
            (Method::GET, "/api/v4/authentication/token"),
            (
                Method::from_bytes(b"get").unwrap(),
                "/api/v3/authentication/token?userId=alice",
            ),
        ] {
            let r = p.classify(&method, &uri.parse().unwrap(), &header_map(&bearer));
            assert!(
                matches!(r, Err(Reject::TokenCallForm { .. })),
                "{method} {uri}: {r:?}"
            );
        }
        // Forms that are not canonical: refused either way, but as token calls.
        for uri in [
            "/api/v3/authentication/./token?userId=alice",
            "/api/v3//authentication/token?userId=alice",
            "/api/v3/x/../authentication/token?userId=alice",
            "/api/v3/authentication%2Ftoken?userId=alice",
            "/api/v3/authentication\\token?userId=alice",
            "/api/v4/authentication/token/.",
        ] {
            let r = p.classify(&Method::GET, &uri.parse().unwrap(), &header_map(&bearer));
            assert!(
                matches!(r, Err(Reject::TokenCallForm { .. })),
                "{uri}: {r:?}"
            );
        }
        let r = p.classify(
            &Method::GET,
            &"/api/v3/users/../sessions".parse().unwrap(),
            &header_map(&bearer),
        );
        assert!(matches!(r, Err(Reject::PathNotCanonical)), "{r:?}");
        // The allowed forms, and paths that only begin like the token endpoint's.
        assert_eq!(
            classify(&p, req(Method::POST, "/api/v4/authentication/token", &[])),
            Ok(RouteClass::AuthToken)
        );
        assert_eq!(
            classify(
                &p,
                req(Method::GET, "/api/v3/authentication/tokens", &bearer)
            ),
            Ok(RouteClass::Admin)
        );
    }

    #[test]
    fn config_narrows_and_extends() {
        let r = RoutesConfig {
            auth_token_v3: false,
            admin_prefixes: vec!["/api/v3/users".into()],
            extra: vec![crate::model::config::ExtraRoute {
                method: Some(Method::GET),
                path: None,
                prefix: Some("/api/v3/network-settings".into()),
            }],
            ..RoutesConfig::default()
        };
        let p = Policy::new(&r, false);
        assert_eq!(
            classify(
                &p,
                req(Method::GET, "/api/v3/authentication/token?userId=u", &[])
            ),
            Err(403)
        );
        assert_eq!(
            classify(
                &p,
                req(Method::GET, "/api/v3/channels", &[("x-admin-token", "t")])
            ),
            Err(403)
        );
        assert_eq!(
            classify(
                &p,
                req(Method::GET, "/api/v3/users/1", &[("x-admin-token", "t")])
            ),
            Ok(RouteClass::Admin)
        );
        assert_eq!(
            classify(&p, req(Method::GET, "/api/v3/network-settings/x", &[])),
            Ok(RouteClass::Extra)
        );
        assert_eq!(
            classify(&p, req(Method::POST, "/api/v3/network-settings/x", &[])),
            Err(403)
        );
    }
}
