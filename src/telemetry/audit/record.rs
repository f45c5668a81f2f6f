//! One audit record and its JSON line.

use serde::Serialize;

/// Whether the gateway let the call through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// Forwarded upstream.
    Allowed,
    /// Refused locally; it never left the machine.
    Refused,
    /// Forwarded, and Amity answered, but the answer was held back: its record (the
    /// `allowed` one before this) could not be written in time and `audit.required` is set.
    Withheld,
}

/// One audit record, serialised as one JSON object per line with the fields in this order and
/// absent ones left out. It never holds a token, server key or admin token: there is no field
/// for one.
#[derive(Debug, Serialize)]
pub struct AuditRecord<'a> {
    /// When the call was decided, RFC 3339 UTC with milliseconds (see [`now_rfc3339`]).
    pub time: String,
    /// The app the call was for.
    pub app: &'a str,
    /// The caller's matched identity, or its peer address without inbound mTLS.
    pub caller: &'a str,
    /// Route class: `auth_token` or `admin`.
    pub route: &'a str,
    /// The userId a token was asked for (token calls).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<&'a str>,
    /// HTTP method (admin calls).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<&'a str>,
    /// Request path (admin calls).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<&'a str>,
    /// Allowed or refused.
    pub decision: Decision,
    /// Why it was refused (or anything notable about an allowed call).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'a str>,
    /// The upstream's status, when the call was forwarded and answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_status: Option<u16>,
    /// Time spent upstream, in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    /// Name of the client certificate presented upstream.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert: Option<&'a str>,
    /// The request id, as in the access log.
    pub request_id: &'a str,
}

impl AuditRecord<'_> {
    /// The record as one JSON line, newline included. JSON escapes control characters, so no
    /// field value (a userId holding a newline, say) can split or forge a line.
    pub fn to_line(&self) -> Vec<u8> {
        // Only strings, integers and a unit enum: serialising cannot fail.
        let mut line = serde_json::to_vec(self).unwrap_or_default();
        line.push(b'\n');
        line
    }
}

/// The time now as RFC 3339 UTC with milliseconds, e.g. `2026-12-06T12:00:00.123Z`.
pub fn now_rfc3339() -> String {
    rfc3339(time::OffsetDateTime::now_utc())
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    // Formatting fails only for years beyond four digits, which `now_utc` does not give.
    t.to_offset(time::UtcOffset::UTC)
        .format(format)
        .unwrap_or_default()
}

#[cfg(test)]
impl<'a> AuditRecord<'a> {
    /// An allowed mint for `user_id`, for the audit trail's tests.
    pub(crate) fn example(user_id: &'a str, request_id: &'a str) -> Self {
        AuditRecord {
            time: now_rfc3339(),
            app: "prod-eu",
            caller: "spiffe://fleet.example/payments",
            route: "auth_token",
            user_id: Some(user_id),
            method: None,
            path: None,
            decision: Decision::Allowed,
            reason: None,
            upstream_status: Some(200),
            latency_ms: Some(12),
            cert: Some("eu-a"),
            request_id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_line_lists_fields_in_order_and_leaves_out_absent_ones() {
        let token = AuditRecord {
            time: "2026-12-06T12:00:00.123Z".into(),
            app: "prod-eu",
            caller: "spiffe://fleet.example/payments",
            route: "auth_token",
            user_id: Some("bot-7"),
            method: None,
            path: None,
            decision: Decision::Allowed,
            reason: None,
            upstream_status: Some(200),
            latency_ms: Some(41),
            cert: Some("eu-2026"),
            request_id: "r1",
        };
        assert_eq!(
            String::from_utf8(token.to_line()).unwrap(),
            concat!(
                r#"{"time":"2026-12-06T12:00:00.123Z","app":"prod-eu","#,
                r#""caller":"spiffe://fleet.example/payments","route":"auth_token","#,
                r#""user_id":"bot-7","decision":"allowed","upstream_status":200,"#,
                r#""latency_ms":41,"cert":"eu-2026","request_id":"r1"}"#,
                "\n"
            )
        );
        let admin = AuditRecord {
            time: "2026-12-06T12:00:01.000Z".into(),
            app: "default",
            caller: "10.0.0.7:51234",
            route: "admin",
            user_id: None,
            method: Some("DELETE"),
            path: Some("/api/v4/users/u1"),
            decision: Decision::Refused,
            reason: Some("route not granted"),
            upstream_status: None,
            latency_ms: None,
            cert: None,
            request_id: "r2",
        };
        assert_eq!(
            String::from_utf8(admin.to_line()).unwrap(),
            concat!(
                r#"{"time":"2026-12-06T12:00:01.000Z","app":"default","caller":"10.0.0.7:51234","#,
                r#""route":"admin","method":"DELETE","path":"/api/v4/users/u1","#,
                r#""decision":"refused","reason":"route not granted","request_id":"r2"}"#,
                "\n"
            )
        );
    }

    #[test]
    fn a_user_id_with_a_newline_stays_on_one_line() {
        let forged = "alice\n{\"decision\":\"allowed\"}";
        let line = AuditRecord::example(forged, "r").to_line();
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
        let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["user_id"], forged);
    }

    #[test]
    fn time_is_rfc3339_utc_with_milliseconds() {
        use time::macros::datetime;
        assert_eq!(
            rfc3339(datetime!(2026-12-06 12:00:00.123456 UTC)),
            "2026-12-06T12:00:00.123Z"
        );
        assert_eq!(
            rfc3339(datetime!(2026-12-06 13:00:00.5 +1)),
            "2026-12-06T12:00:00.500Z"
        );
        let now = now_rfc3339();
        let shape: String = now
            .chars()
            .map(|c| if c.is_ascii_digit() { '0' } else { c })
            .collect();
        assert_eq!(shape, "0000-00-00T00:00:00.000Z", "{now}");
    }
}
