//! `routes` and the route classes: which calls may pass.

use http::Method;
use serde::{de, Deserialize, Deserializer};

use super::error::Problem;

/// Which kind of allowed call a request is; `callers[].routes` names them, and logs and
/// metrics label requests with them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteClass {
    /// v3 or v4 authentication token.
    AuthToken,
    /// A call carrying an admin token.
    Admin,
    /// A route from `routes.extra`.
    Extra,
}

impl RouteClass {
    /// Every class, in the order of [`RouteClass::NAMES`].
    pub const ALL: [RouteClass; 3] = [RouteClass::AuthToken, RouteClass::Admin, RouteClass::Extra];
    /// Their names in the config, logs and metrics: the one place they are written.
    pub const NAMES: [&'static str; 3] = ["auth_token", "admin", "extra"];

    /// Name used in the config, logs and metrics.
    pub fn as_str(self) -> &'static str {
        Self::NAMES[self as usize]
    }

    /// The class of that name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == name)
    }
}

impl<'de> Deserialize<'de> for RouteClass {
    /// By name, refusing an unknown one with the field, the value and the names allowed
    /// (serde's own message would not name the field).
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        Self::from_name(&name).ok_or_else(|| {
            de::Error::custom(format!(
                "callers[].routes: {name:?} is not a route class; use {}",
                Self::NAMES.join(", ")
            ))
        })
    }
}

/// Which calls the proxy lets through.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutesConfig {
    /// `GET /api/v3/authentication/token?userId=...`.
    #[serde(default = "yes")]
    pub auth_token_v3: bool,
    /// `POST /api/v4/authentication/token`.
    #[serde(default = "yes")]
    pub auth_token_v4: bool,
    /// Calls that carry an admin token (`Authorization: Bearer` or `x-admin-token`).
    #[serde(default = "yes")]
    pub admin: bool,
    /// Path prefixes admin-token calls may use; narrow it to allow fewer.
    #[serde(default = "default_admin_prefixes")]
    pub admin_prefixes: Vec<String>,
    /// Further calls to allow, by method and exact path or prefix.
    #[serde(default)]
    pub extra: Vec<ExtraRoute>,
}

/// An extra allowed call: a method (or any) and an exact path or a prefix.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtraRoute {
    /// HTTP method, e.g. `GET`; any method when absent.
    #[serde(default, deserialize_with = "method")]
    pub method: Option<Method>,
    /// Exact path to allow.
    #[serde(default)]
    pub path: Option<String>,
    /// Path prefix to allow.
    #[serde(default)]
    pub prefix: Option<String>,
}

/// What an extra route matches a path by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathRule<'a> {
    /// The path is exactly this.
    Exact(&'a str),
    /// The path starts with this.
    Prefix(&'a str),
}

impl ExtraRoute {
    /// Its path rule; `None` unless exactly one of `path` and `prefix` is given (which
    /// validation ensures).
    pub fn rule(&self) -> Option<PathRule<'_>> {
        match (&self.path, &self.prefix) {
            (Some(p), None) => Some(PathRule::Exact(p)),
            (None, Some(p)) => Some(PathRule::Prefix(p)),
            _ => None,
        }
    }
}

fn method<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Method>, D::Error> {
    let Some(m) = Option::<String>::deserialize(d)? else {
        return Ok(None);
    };
    Method::from_bytes(m.as_bytes()).map(Some).map_err(|_| {
        de::Error::custom(format!(
            "routes.extra[].method: {m:?} is not an HTTP method"
        ))
    })
}

fn yes() -> bool {
    true
}

fn default_admin_prefixes() -> Vec<String> {
    vec!["/api/".to_string()]
}

impl Default for RoutesConfig {
    fn default() -> Self {
        Self {
            auth_token_v3: true,
            auth_token_v4: true,
            admin: true,
            admin_prefixes: default_admin_prefixes(),
            extra: Vec::new(),
        }
    }
}

impl RoutesConfig {
    /// Problems with their field paths.
    pub(super) fn problems(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        for (i, p) in self.admin_prefixes.iter().enumerate() {
            if !p.starts_with("/api/") {
                out.push(Problem::new(
                    format!("routes.admin_prefixes[{i}]"),
                    format!("{p:?} must start with /api/"),
                ));
            }
        }
        for (i, r) in self.extra.iter().enumerate() {
            let field = format!("routes.extra[{i}]");
            match r.rule() {
                Some(PathRule::Exact(p) | PathRule::Prefix(p)) => {
                    if !p.starts_with('/') {
                        out.push(Problem::new(field, format!("{p:?} must start with /")));
                    }
                }
                None => out.push(Problem::new(field, "give exactly one of path and prefix")),
            }
        }
        out
    }
}
