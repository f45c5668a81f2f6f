//! Which app a request is for: the app of the listener it came to, else `/apps/<name>/`
//! before the path (removed before forwarding), else the only app.

use http::uri::PathAndQuery;
use http::Uri;

use super::app::App;
use super::caller::ConnInfo;
use super::generation::Generation;
use super::reject::Reject;

/// The prefix that names an app on the shared listener.
const APPS: &str = "/apps/";

/// Longest app name echoed in a refusal.
const ECHOED: usize = 64;

/// The request's app; `uri` loses the `/apps/<name>` prefix when it had one.
pub(super) fn select<'g>(
    g: &'g Generation,
    conn: &ConnInfo,
    uri: &mut Uri,
) -> Result<&'g App, Reject> {
    let unknown = |name: &str| Reject::UnknownApp {
        app: name.chars().take(ECHOED).collect(),
    };
    if let Some(name) = &conn.app {
        return g.app(name).ok_or_else(|| unknown(name));
    }
    let Some(rest) = uri.path().strip_prefix(APPS) else {
        return match g.apps.as_slice() {
            [only] => Ok(only),
            _ => Err(Reject::AppNotNamed),
        };
    };
    let (name, tail) = rest.split_once('/').unwrap_or((rest, ""));
    let app = g.app(name).ok_or_else(|| unknown(name))?;
    let query = uri.query().map_or(String::new(), |q| format!("?{q}"));
    let path = PathAndQuery::try_from(format!("/{tail}{query}")).map_err(|e| Reject::BadPath {
        error: e.to_string(),
    })?;
    *uri = Uri::from(path);
    Ok(app)
}
