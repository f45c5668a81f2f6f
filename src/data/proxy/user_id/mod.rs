//! The userId of an auth-token call, read where Amity reads it (v3: the query, parsed as
//! Express's `qs` does; v4: the JSON body) and refused when another reader could see another
//! value: a grant is checked, and the audit trail records, exactly what Amity mints for.
//!
//! - `query.rs`: the v3 query, read as `qs` reads it;
//! - `body.rs`: the v4 body: its content type and encoding, then its JSON;
//! - `unique.rs`: the JSON reader that refuses a repeated key at any depth.

mod body;
mod query;
mod unique;

pub use body::from_json_body;
pub use query::from_query;

/// Why a token call's userId cannot be read unambiguously.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserIdError {
    /// More than one query parameter names a userId.
    #[error("the query names userId more than once ({first:?} and {second:?})")]
    RepeatedParameter {
        /// The first parameter's name, as written.
        first: String,
        /// The second parameter's name, as written.
        second: String,
    },
    /// A query parameter that the server reads as userId, spelt otherwise.
    #[error("the query parameter {name:?} is read as userId by the server; write it userId")]
    DisguisedParameter {
        /// The parameter's name, as written.
        name: String,
    },
    /// A userId value that does not decode one way only.
    #[error("the userId {value:?} {reason}")]
    BadValue {
        /// The value: as written in a query, decoded from a JSON body.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A body that is not declared UTF-8 JSON: a form parser, or a JSON parser decoding
    /// another charset, could read another userId from it.
    #[error(
        "a token call's body must be JSON in UTF-8 (content-type application/json, with no parameter but charset=utf-8), not {}",
        describe_content_type(.content_type)
    )]
    NotJson {
        /// The content type sent, if any.
        content_type: Option<String>,
    },
    /// More than one content type: each reader could take another.
    #[error("a token call's body has more than one content-type header")]
    RepeatedContentType,
    /// An encoded body: the server would decode it, the proxy reads it as sent.
    #[error(
        "a token call's body must not be encoded (content-encoding {encoding:?}): the server would read it decoded, the proxy as sent"
    )]
    Encoded {
        /// The content encoding sent.
        encoding: String,
    },
    /// A body that is not one JSON object with unique keys and a string userId.
    #[error("the JSON body is refused: {reason}")]
    BadBody {
        /// What is wrong, with its line and column.
        reason: String,
    },
    /// A v3 call with a body: Amity reads the query, another reader may read the body.
    #[error("a v3 token call carries no body; its userId is in the query")]
    BodyOnV3,
    /// A v4 call naming a userId in the query too: Amity reads the body.
    #[error("a v4 token call names its userId in the body; this one names one in the query too")]
    QueryOnV4,
}

fn describe_content_type(content_type: &Option<String>) -> String {
    match content_type {
        Some(ct) => format!("{ct:?}"),
        None => "a body without one".to_string(),
    }
}

fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

#[cfg(test)]
mod test_util {
    use super::UserIdError;

    pub(super) fn some(s: &str) -> Result<Option<String>, UserIdError> {
        Ok(Some(s.to_string()))
    }

    /// The error's message, for a refusal; the test fails on an accepted input.
    pub(super) fn refusal(read: Result<Option<String>, UserIdError>, input: &str) -> String {
        match read {
            Ok(v) => panic!("{input:?} was accepted as {v:?}"),
            Err(e) => e.to_string(),
        }
    }
}
