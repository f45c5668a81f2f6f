//! The userId of an auth-token call, read where Amity reads it (v3: the query; v4: the JSON
//! body) and refused when another reader could see another value: a grant is checked, and
//! the audit trail records, exactly what Amity will mint for.

use std::collections::HashSet;
use std::fmt;

use http::HeaderValue;
use percent_encoding::percent_decode_str;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// Why a token call's userId cannot be read unambiguously.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserIdError {
    /// More than one parameter names a userId.
    #[error("the query names userId more than once ({first:?} and {second:?})")]
    RepeatedParameter {
        /// The first, as written.
        first: String,
        /// The second, as written.
        second: String,
    },
    /// A parameter other readers take for userId, spelt otherwise.
    #[error("the query parameter {name:?} is read as userId by some servers; write it userId")]
    DisguisedParameter {
        /// The parameter's name, as written.
        name: String,
    },
    /// The value does not decode one way only.
    #[error("the userId {value:?} {why}")]
    BadValue {
        /// The value, as written.
        value: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The body is not JSON, so that a form parser could read another userId.
    #[error(
        "a token call's body must be JSON (content-type application/json), not {content_type:?}"
    )]
    NotJson {
        /// The content type sent.
        content_type: String,
    },
    /// The body is not a JSON object with unique keys and a string userId.
    #[error("the JSON body {0}")]
    BadBody(String),
    /// A v3 call with a body: Amity reads the query.
    #[error("a v3 token call carries no body; its userId is in the query")]
    BodyOnV3,
    /// A v4 call with a userId in the query too: Amity reads the body.
    #[error("a v4 token call names its userId in the body; this one names one in the query too")]
    QueryOnV4,
}

/// The userId of a v3 token call from its raw query; `None` when no parameter names one.
pub fn from_query(query: Option<&str>) -> Result<Option<String>, UserIdError> {
    let mut found: Option<(&str, &str)> = None;
    for pair in query.unwrap_or_default().split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        // Decoding borrows unless the name holds an escape: no allocation per parameter.
        if !names_user_id(&percent_decode_str(name).decode_utf8_lossy()) {
            continue;
        }
        if let Some((first, _)) = found {
            return Err(UserIdError::RepeatedParameter {
                first: first.to_string(),
                second: name.to_string(),
            });
        }
        if name != "userId" {
            return Err(UserIdError::DisguisedParameter {
                name: name.to_string(),
            });
        }
        found = Some((name, value));
    }
    found.map(|(_, value)| decode_value(value)).transpose()
}

/// Whether a decoded parameter name is read as userId by some server: any case, and
/// `userId[]` or `userId[k]` (an array and an object to Express's query parser).
fn names_user_id(name: &str) -> bool {
    let b = name.as_bytes();
    b.len() >= 6 && b[..6].eq_ignore_ascii_case(b"userid") && (b.len() == 6 || b[6] == b'[')
}

/// A query value, percent-decoded, when it decodes one way only.
fn decode_value(value: &str) -> Result<String, UserIdError> {
    let bad = |why| UserIdError::BadValue {
        value: value.to_string(),
        why,
    };
    if value.contains('+') {
        return Err(bad("holds '+', a space to form decoders and '+' to others"));
    }
    if value.contains(';') {
        return Err(bad("holds ';', a parameter separator to some decoders"));
    }
    let b = value.as_bytes();
    let malformed = b.iter().enumerate().any(|(i, c)| {
        *c == b'%'
            && !b
                .get(i + 1..i + 3)
                .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit))
    });
    if malformed {
        return Err(bad("has a '%' not followed by two hex digits"));
    }
    let decoded = percent_decode_str(value)
        .decode_utf8()
        .map_err(|_| bad("does not decode to UTF-8 text"))?;
    no_control(&decoded).map_err(bad)?;
    Ok(decoded.into_owned())
}

fn no_control(s: &str) -> Result<(), &'static str> {
    match s.chars().any(char::is_control) {
        true => Err("holds a control character"),
        false => Ok(()),
    }
}

/// The userId of a v4 token call from its content type and body; `None` for an empty body
/// or one without a `userId` key.
pub fn from_json_body(
    content_type: Option<&HeaderValue>,
    body: &[u8],
) -> Result<Option<String>, UserIdError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let ct = content_type.and_then(|v| v.to_str().ok()).unwrap_or("");
    if !is_json(ct) {
        return Err(UserIdError::NotJson {
            content_type: ct.to_string(),
        });
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let user_id = TopLevel
        .deserialize(&mut de)
        .and_then(|u| de.end().map(|()| u))
        .map_err(|e| UserIdError::BadBody(e.to_string()))?;
    if let Some(u) = &user_id {
        no_control(u).map_err(|why| UserIdError::BadValue {
            value: u.clone(),
            why,
        })?;
    }
    Ok(user_id)
}

/// `application/json` or `application/<something>+json`, with any parameters.
fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || essence
            .strip_prefix("application/")
            .is_some_and(|s| s.ends_with("+json"))
}

/// The top-level object: its `userId`, if a string; every key unique at every depth.
struct TopLevel;

impl<'de> DeserializeSeed<'de> for TopLevel {
    type Value = Option<String>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for TopLevel {
    type Value = Option<String>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut keys = HashSet::new();
        let mut user_id = None;
        while let Some(key) = map.next_key::<String>()? {
            if !keys.insert(key.clone()) {
                return Err(de::Error::custom(format!("repeats the key {key:?}")));
            }
            if key == "userId" {
                let value: serde_json::Value = map.next_value_seed(Unique)?;
                match value {
                    serde_json::Value::String(s) => user_id = Some(s),
                    other => {
                        return Err(de::Error::custom(format!(
                            "has a userId that is not a string: {other}"
                        )))
                    }
                }
            } else {
                map.next_value_seed(Unique)?;
            }
        }
        Ok(user_id)
    }
}

/// Any JSON value, refusing a repeated key in any object within it; a string or number is
/// kept (for `userId`), anything else is checked and dropped.
struct Unique;

impl<'de> DeserializeSeed<'de> for Unique {
    type Value = serde_json::Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Unique {
    type Value = serde_json::Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element_seed(Unique)?.is_some() {}
        Ok(serde_json::Value::Array(Vec::new()))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut keys = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !keys.insert(key.clone()) {
                return Err(de::Error::custom(format!("repeats the key {key:?}")));
            }
            map.next_value_seed(Unique)?;
        }
        Ok(serde_json::Value::Object(serde_json::Map::new()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(query: &str) -> Result<Option<String>, UserIdError> {
        from_query(Some(query))
    }

    fn body(text: &str) -> Result<Option<String>, UserIdError> {
        from_json_body(
            Some(&HeaderValue::from_static("application/json")),
            text.as_bytes(),
        )
    }

    #[test]
    fn the_query_gives_the_decoded_user_id() {
        assert_eq!(q("userId=bot-7"), Ok(Some("bot-7".into())));
        assert_eq!(q("userId=bot%2D7"), Ok(Some("bot-7".into())));
        assert_eq!(q("other=1&userId=x"), Ok(Some("x".into())));
        assert_eq!(q("userId=caf%C3%A9"), Ok(Some("café".into())));
        assert_eq!(q("userId"), Ok(Some(String::new())));
        assert_eq!(q("other=1"), Ok(None));
        assert_eq!(from_query(None), Ok(None));
    }

    #[test]
    fn a_query_read_two_ways_is_refused() {
        for refused in [
            "userId=alice&userId=bot-7",
            "userId=bot-7&USERID=alice",
            "user%49d=alice",
            "userid=alice",
            "userId[]=alice",
            "userId[0]=alice",
            "userId=a+b",
            "userId=a;b",
            "userId=%zz",
            "userId=abc%2",
            "userId=%00x",
            "userId=%0Ax",
            "userId=%FF",
        ] {
            assert!(q(refused).is_err(), "{refused} was accepted");
        }
        let e = q("userId=alice&userId=bot-7").unwrap_err().to_string();
        assert!(e.contains("more than once"), "{e}");
    }

    #[test]
    fn the_body_gives_a_string_user_id() {
        assert_eq!(body(r#"{"userId":"bot-7"}"#), Ok(Some("bot-7".into())));
        assert_eq!(
            body(r#"{"user\u0049d":"bot-7","x":{"a":[1,{"b":2}]}}"#),
            Ok(Some("bot-7".into()))
        );
        assert_eq!(body(r#"{"other":"x"}"#), Ok(None));
        assert_eq!(body(" "), Ok(None));
        let ct = HeaderValue::from_static("application/vnd.api+json; charset=utf-8");
        assert_eq!(
            from_json_body(Some(&ct), br#"{"userId":"a"}"#),
            Ok(Some("a".into()))
        );
    }

    #[test]
    fn a_body_read_two_ways_is_refused() {
        for refused in [
            r#"{"userId":"a","userId":"b"}"#,
            r#"{"user\u0049d":"a","userId":"b"}"#,
            r#"{"a":{"k":1,"k":2},"userId":"x"}"#,
            r#"{"userId":7}"#,
            r#"{"userId":null}"#,
            r#"{"userId":["a"]}"#,
            r#"{"userId":{"a":1}}"#,
            r#"{"userId":"a\u0000"}"#,
            r#"["userId","a"]"#,
            r#""a""#,
            r#"{"userId":"a"} {"userId":"b"}"#,
            r#"{"userId":"a""#,
        ] {
            assert!(body(refused).is_err(), "{refused} was accepted");
        }
        let e = body(r#"{"userId":"a","userId":"b"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("repeats the key \"userId\""), "{e}");
        let form = HeaderValue::from_static("application/x-www-form-urlencoded");
        assert!(matches!(
            from_json_body(Some(&form), b"userId=a"),
            Err(UserIdError::NotJson { .. })
        ));
        assert!(from_json_body(None, br#"{"userId":"a"}"#).is_err());
    }

    #[test]
    fn a_deeply_nested_body_is_refused_without_a_crash() {
        let deep = format!("{{\"x\":{}{}}}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(body(&deep).is_err());
    }
}
