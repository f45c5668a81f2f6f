//! Placeholder.
use http::HeaderValue;

/// Why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserIdError {
    /// v3 with a body.
    #[error("a v3 token call carries no body")]
    BodyOnV3,
    /// v4 with a query userId.
    #[error("a v4 token call names its userId in the body, and this one has one in the query too")]
    QueryOnV4,
    /// Other.
    #[error("{0}")]
    Other(String),
}

/// From the query.
pub fn from_query(query: Option<&str>) -> Result<Option<String>, UserIdError> {
    let mut found = None;
    for p in query.unwrap_or("").split('&') {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        if k.eq_ignore_ascii_case("userid") {
            if found.is_some() {
                return Err(UserIdError::Other("repeated".into()));
            }
            found = Some(v.to_string());
        }
    }
    Ok(found)
}

/// From the body.
pub fn from_json_body(
    _ct: Option<&HeaderValue>,
    body: &[u8],
) -> Result<Option<String>, UserIdError> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| UserIdError::Other(e.to_string()))?;
    Ok(v["userId"].as_str().map(str::to_string))
}
