//! A request as the phases carry it to the audit trail and the log: the call as the backend
//! sent it, and what came of it.

use std::time::Duration;

use super::app::App;
use super::caller::ConnInfo;
use crate::model::config::RouteClass;

/// What one request did, for the log line, the metrics and the audit trail.
#[derive(Default)]
pub(super) struct Outcome<'a> {
    pub(super) app: Option<&'a App>,
    pub(super) route: Option<RouteClass>,
    pub(super) upstream: Option<Duration>,
    pub(super) cert: Option<&'a str>,
    /// The `callers` identity the request was admitted as.
    pub(super) caller: Option<&'a String>,
    /// The userId of a token call, when read.
    pub(super) user_id: Option<String>,
    /// Whether it was sent upstream.
    pub(super) sent: bool,
}

/// The request as the backend sent it, for the audit trail.
#[derive(Clone, Copy)]
pub(super) struct Call<'a> {
    pub(super) method: &'a http::Method,
    pub(super) uri: &'a http::Uri,
    pub(super) id: &'a str,
    pub(super) conn: &'a ConnInfo,
}
