//! The Amity API as the stand-in answers it: the token calls, sessions and one admin call,
//! with Amity's bodies and error shapes; and the tokens it issued.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde_json::json;

use super::{Counted, Mock, Seen};

/// How long an issued auth token is accepted for a session (Amity: 10 minutes).
const TOKEN_TTL: Duration = Duration::from_secs(600);
/// Tokens kept for sessions at most: under a load test the oldest are forgotten first,
/// so that the stand-in's memory stays bounded.
const MAX_TOKENS: usize = 100_000;

#[derive(Default)]
pub(super) struct Tokens {
    users: HashMap<String, (String, Instant)>,
    issued: VecDeque<String>,
}

impl Tokens {
    fn insert(&mut self, token: String, user: String) {
        let now = Instant::now();
        while let Some(oldest) = self.issued.front() {
            let expired = self
                .users
                .get(oldest)
                .is_none_or(|(_, at)| now.duration_since(*at) >= TOKEN_TTL);
            if !expired && self.issued.len() < MAX_TOKENS {
                break;
            }
            self.users.remove(oldest);
            self.issued.pop_front();
        }
        self.users.insert(token.clone(), (user, now));
        self.issued.push_back(token);
    }

    fn is_valid(&self, token: &str, user: &str) -> bool {
        self.users
            .get(token)
            .is_some_and(|(u, at)| u == user && at.elapsed() < TOKEN_TTL)
    }
}

/// A stand-in running in this process.
fn json_response(status: StatusCode, v: serde_json::Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn amity_error(status: StatusCode, code: u32, message: &str) -> Response<Full<Bytes>> {
    json_response(
        status,
        json!({"status": "error", "code": code, "message": message}),
    )
}

fn random_token() -> String {
    let mut b = [0u8; 24];
    let _ = aws_lc_rs::rand::fill(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn header_str<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

impl Mock {
    pub(super) async fn handle(
        &self,
        req: Request<Incoming>,
        subject: String,
        serial: String,
    ) -> Response<Full<Bytes>> {
        let (parts, body) = req.into_parts();
        tracing::info!(target: "mock_amity", method = %parts.method, path = %parts.uri.path(), client_subject = %subject, client_serial = %serial, "request");
        if self.opts.record_requests {
            self.record(&parts, &subject, &serial);
        }
        let now = self.observed.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        self.observed
            .peak_in_flight
            .fetch_max(now, Ordering::Relaxed);
        let _answered = Counted(&self.observed.in_flight);
        let delay = self.delay_ms.load(Ordering::Relaxed);
        if delay != 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        let body = match Limited::new(body, 64 * 1024).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => return amity_error(StatusCode::BAD_REQUEST, 400000, "Bad request."),
        };
        let mut resp = self.route(&parts.method, &parts.uri, &parts.headers, &body);
        for (k, v) in [
            ("x-mock-client-subject", subject),
            ("x-mock-client-serial", serial),
        ] {
            if let Ok(v) = HeaderValue::from_str(&v) {
                resp.headers_mut().insert(k, v);
            }
        }
        resp
    }

    fn record(&self, parts: &http::request::Parts, subject: &str, serial: &str) {
        let Ok(mut seen) = self.observed.requests.lock() else {
            return;
        };
        let authority = parts
            .uri
            .authority()
            .map(|a| a.to_string())
            .or_else(|| header_str(&parts.headers, "host").map(str::to_string))
            .unwrap_or_default();
        seen.push(Seen {
            method: parts.method.clone(),
            path: parts
                .uri
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_string(),
            authority,
            headers: parts.headers.clone(),
            client_subject: subject.to_string(),
            client_serial: serial.to_string(),
            http2: parts.version == http::Version::HTTP_2,
        });
    }

    fn route(
        &self,
        method: &Method,
        uri: &http::Uri,
        h: &HeaderMap,
        body: &Bytes,
    ) -> Response<Full<Bytes>> {
        let server_key_ok = header_str(h, "x-server-key") == Some(self.opts.server_key.as_str());
        match (method, uri.path()) {
            (&Method::GET, "/api/v3/authentication/token") => {
                if !server_key_ok {
                    return amity_error(StatusCode::FORBIDDEN, 400300, "Forbidden error.");
                }
                let user = uri.query().and_then(|q| {
                    q.split('&')
                        .filter_map(|kv| kv.split_once('='))
                        .find(|(k, v)| *k == "userId" && !v.is_empty())
                        .map(|(_, v)| v.to_string())
                });
                match user {
                    Some(u) => json_response(StatusCode::OK, json!(self.issue(u))),
                    None => json_response(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        json!({"status":"error","code":500000,"message":"Parameters error.",
                               "data":{"detail":[{"message":"\"userId\" is required","path":["userId"]}]}}),
                    ),
                }
            }
            (&Method::POST, "/api/v4/authentication/token") => {
                if !server_key_ok {
                    let mut r = Response::new(Full::new(Bytes::from_static(b"Unauthorized")));
                    *r.status_mut() = StatusCode::UNAUTHORIZED;
                    r.headers_mut()
                        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
                    return r;
                }
                let user = serde_json::from_slice::<serde_json::Value>(body)
                    .ok()
                    .and_then(|v| v.get("userId").and_then(|u| u.as_str()).map(str::to_string))
                    .filter(|u| !u.is_empty());
                match user {
                    // Amity's validation errors repeat the value they refuse.
                    Some(u) if u.contains(char::is_whitespace) => json_response(
                        StatusCode::BAD_REQUEST,
                        json!({"status":"error","code":400000,"message":"Validation error.",
                               "data":{"detail":[{"message":format!("\"userId\" must not contain spaces: {u}"),"path":["userId"]}]}}),
                    ),
                    Some(u) => {
                        let mut r =
                            Response::new(Full::new(Bytes::from(format!("\"{}\"", self.issue(u)))));
                        r.headers_mut()
                            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
                        r
                    }
                    None => json_response(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        json!({"status":"error","code":400000,"message":"Validation error.",
                               "data":{"detail":[{"message":"\"userId\" is required","path":["userId"]}]}}),
                    ),
                }
            }
            (&Method::POST, "/api/v3/sessions") => self.session(h, body),
            (&Method::GET, "/api/v3/users") => {
                let bearer = header_str(h, "authorization").and_then(|v| {
                    v.strip_prefix("Bearer ")
                        .or_else(|| v.strip_prefix("bearer "))
                });
                let token = bearer.or_else(|| header_str(h, "x-admin-token"));
                if token != Some(self.opts.admin_token.as_str()) {
                    return amity_error(StatusCode::UNAUTHORIZED, 400100, "Unauthorized.");
                }
                let mut users = json!({"users":[{"userId":"mock-user-1","displayName":"Mock User"}],"paging":{}});
                if self.opts.users_body_bytes > 0 {
                    users["pad"] = "x".repeat(self.opts.users_body_bytes).into();
                }
                json_response(StatusCode::OK, users)
            }
            _ => amity_error(StatusCode::NOT_FOUND, 400400, "Resource Not Found."),
        }
    }

    fn issue(&self, user: String) -> String {
        let token = random_token();
        if let Ok(mut t) = self.tokens.lock() {
            t.insert(token.clone(), user);
        }
        token
    }

    fn session(&self, h: &HeaderMap, body: &Bytes) -> Response<Full<Bytes>> {
        if header_str(h, "x-api-key").is_none_or(str::is_empty) {
            return amity_error(StatusCode::UNAUTHORIZED, 400100, "Unauthorized.");
        }
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
            return amity_error(StatusCode::BAD_REQUEST, 400000, "Bad request.");
        };
        let field = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string();
        let (user, device, token) = (field("userId"), field("deviceId"), field("authToken"));
        if user.is_empty() || device.is_empty() {
            return amity_error(StatusCode::BAD_REQUEST, 400000, "Bad request.");
        }
        let valid = self.tokens.lock().is_ok_and(|t| t.is_valid(&token, &user));
        if !valid {
            // Secure mode: a session needs an auth token issued for this user.
            return amity_error(StatusCode::FORBIDDEN, 400300, "Forbidden error.");
        }
        let display = Some(field("displayName"))
            .filter(|d| !d.is_empty())
            .unwrap_or(user.clone());
        json_response(
            StatusCode::OK,
            json!({
                "accessToken": random_token(),
                "refreshToken": random_token(),
                "users": [{"userId": user, "displayName": display}],
                "userStatus": "active",
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_expire_and_the_oldest_go_first_beyond_the_cap() {
        let mut t = Tokens::default();
        let long_ago = Instant::now().checked_sub(TOKEN_TTL).unwrap();
        t.users.insert("old".into(), ("u0".into(), long_ago));
        t.issued.push_back("old".into());
        t.insert("first".into(), "u1".into());
        assert!(!t.users.contains_key("old"), "an expired token is dropped");
        assert!(t.is_valid("first", "u1"));
        assert!(
            !t.is_valid("first", "u2"),
            "a token is valid for its own user only"
        );

        for i in 0..MAX_TOKENS {
            t.insert(format!("t{i}"), "u1".into());
        }
        assert_eq!(t.users.len(), MAX_TOKENS);
        assert_eq!(t.issued.len(), MAX_TOKENS);
        assert!(!t.is_valid("first", "u1"), "the oldest goes beyond the cap");
        assert!(t.is_valid("t0", "u1") && t.is_valid(&format!("t{}", MAX_TOKENS - 1), "u1"));
    }
}
