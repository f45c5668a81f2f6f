//! `callers`: the fleet identities allowed to call, and their grants: which app, which route
//! classes, and for auth tokens which userIds.

use serde::Deserialize;

use super::apps::{AppConfig, DEFAULT_APP};
use super::error::Problem;
use super::routes::RouteClass;
use super::user_pattern::UserIdPattern;

/// One fleet identity and what it may call.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallerConfig {
    /// A SAN DNS name, a SAN URI (e.g. a SPIFFE ID) or the CN of the caller's certificate.
    pub identity: String,
    /// Route classes it may use, on the single app (the single-app shape only).
    #[serde(default)]
    pub routes: Option<Vec<RouteClass>>,
    /// What it may call, app by app.
    #[serde(default)]
    pub grants: Option<Vec<GrantConfig>>,
}

/// What a caller may call on one app.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantConfig {
    /// The app's name.
    pub app: String,
    /// Route classes it may use there.
    pub routes: Vec<RouteClass>,
    /// Which userIds it may mint auth tokens for (`*` any run of characters, `?` one);
    /// default: any.
    #[serde(default)]
    pub user_ids: Option<Vec<UserIdPattern>>,
}

/// A caller with its grants, whichever shape the file used.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The identity its certificate must carry.
    pub identity: String,
    /// One per app it may call.
    pub grants: Vec<GrantConfig>,
}

/// The callers with their grants, and the problems with their field paths.
pub(super) fn callers(
    listed: &[CallerConfig],
    apps: &[AppConfig],
    has_apps: bool,
) -> (Vec<Caller>, Vec<Problem>) {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    let mut problem = |field: String, reason: String| problems.push(Problem::new(field, reason));
    for (i, c) in listed.iter().enumerate() {
        let field = format!("callers[{i}]");
        if c.identity.trim().is_empty() {
            problem(format!("{field}.identity"), "is empty".into());
        } else if !c.identity.is_ascii() {
            // A certificate's DNS, URI and email names are ASCII (IDNs in their A-label form).
            problem(
                format!("{field}.identity"),
                format!(
                    "{:?} has characters beyond ASCII: no certificate name matches it; write an internationalised domain in its xn-- form",
                    c.identity
                ),
            );
        }
        if listed[..i].iter().any(|o| o.identity == c.identity) {
            problem(
                format!("{field}.identity"),
                format!("{:?} is listed twice; give it one entry", c.identity),
            );
        }
        let grants = match (&c.routes, &c.grants) {
            (Some(routes), None) if !has_apps => vec![GrantConfig {
                app: DEFAULT_APP.to_string(),
                routes: routes.clone(),
                user_ids: None,
            }],
            (Some(_), None) => {
                problem(
                    format!("{field}.routes"),
                    "with apps, name each app under grants: [{app, routes}]".into(),
                );
                continue;
            }
            (None, Some(grants)) => grants.clone(),
            (Some(_), Some(_)) => {
                problem(field, "give routes or grants, not both".into());
                continue;
            }
            (None, None) => {
                problem(field, "give grants (or routes, with one app)".into());
                continue;
            }
        };
        for (j, g) in grants.iter().enumerate() {
            let field = format!("{field}.grants[{j}]");
            if !apps.iter().any(|a| a.name == g.app) {
                let names: Vec<&str> = apps.iter().map(|a| a.name.as_str()).collect();
                problem(
                    format!("{field}.app"),
                    format!("{:?} is not an app; apps: {}", g.app, names.join(", ")),
                );
            }
            if grants[..j].iter().any(|o| o.app == g.app) {
                problem(
                    format!("{field}.app"),
                    format!("{:?} is granted twice; give it one grant", g.app),
                );
            }
            match &g.user_ids {
                Some(ids) if ids.is_empty() => problem(
                    format!("{field}.user_ids"),
                    "is empty, which would allow no mint; leave it out to allow any userId".into(),
                ),
                Some(_) if !g.routes.contains(&RouteClass::AuthToken) => problem(
                    format!("{field}.user_ids"),
                    "limits auth-token calls, but routes does not grant auth_token".into(),
                ),
                _ => {}
            }
        }
        out.push(Caller {
            identity: c.identity.clone(),
            grants,
        });
    }
    (out, problems)
}
