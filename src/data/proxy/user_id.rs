//! The userId of an auth-token call, read where Amity reads it (v3: the query, parsed as
//! Express's `qs` does; v4: the JSON body) and refused when another reader could see another
//! value: a grant is checked, and the audit trail records, exactly what Amity mints for.

use std::collections::HashSet;
use std::fmt;

use http::header::{HeaderMap, HeaderValue, CONTENT_ENCODING, CONTENT_TYPE};
use percent_encoding::percent_decode_str;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

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

/// The userId of `GET /api/v3/authentication/token?...` from its raw query; `None` when no
/// parameter names one.
pub fn from_query(query: Option<&str>) -> Result<Option<String>, UserIdError> {
    let mut found: Option<(&str, &str)> = None;
    for pair in query.unwrap_or_default().split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if !names_user_id(name) {
            continue;
        }
        if let Some((first, _)) = found {
            return Err(UserIdError::RepeatedParameter {
                first: first.to_string(),
                second: name.to_string(),
            });
        }
        found = Some((name, value));
    }
    let Some((name, value)) = found else {
        return Ok(None);
    };
    if name != "userId" {
        return Err(UserIdError::DisguisedParameter {
            name: name.to_string(),
        });
    }
    decode_value(value).map(Some)
}

/// Whether some server reads this parameter as userId. `qs` decodes names; reads `userId[]`,
/// `userId[0]` and `userId[k]` as an array or object under userId; and takes a leading
/// bracket pair for the name (`[userId]=a` is userId). Other frameworks ignore case.
fn names_user_id(name: &str) -> bool {
    // Decoding borrows unless the name holds an escape: no allocation per parameter.
    let decoded = percent_decode_str(name).decode_utf8_lossy();
    let b = decoded.as_bytes();
    let bare = b.strip_prefix(b"[").unwrap_or(b);
    bare.len() >= 6
        && bare[..6].eq_ignore_ascii_case(b"userid")
        && matches!(bare.get(6), None | Some(b'[' | b']'))
}

/// A query value, percent-decoded, when every decoder reads it the same way.
fn decode_value(value: &str) -> Result<String, UserIdError> {
    let bad = |reason| UserIdError::BadValue {
        value: value.to_string(),
        reason,
    };
    // Raw bytes past ASCII are UTF-8 to the proxy and may be Latin-1 to the server.
    if !value.is_ascii() {
        return Err(bad("holds bytes that are not ASCII: percent-encode them"));
    }
    if value.contains('+') {
        return Err(bad(
            "holds a '+': a space to form decoders, a '+' to others",
        ));
    }
    if value.contains(';') {
        return Err(bad("holds a ';': a parameter separator to some decoders"));
    }
    // `qs` splits a parameter at "]=" before it looks for the first '=', so it reads
    // `userId=a]=b` as a parameter named `userId=a]`.
    if value.contains("]=") {
        return Err(bad("holds \"]=\": the end of a parameter's name to qs"));
    }
    let b = value.as_bytes();
    let malformed = b.iter().enumerate().any(|(i, c)| {
        *c == b'%'
            && !b
                .get(i + 1..i + 3)
                .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit))
    });
    // percent-encoding keeps such a '%' as it is; decodeURIComponent throws (and qs then keeps
    // the whole value undecoded).
    if malformed {
        return Err(bad("has a '%' not followed by two hex digits"));
    }
    let decoded = percent_decode_str(value)
        .decode_utf8()
        .map_err(|_| bad("does not decode to UTF-8 text"))?;
    if has_control(&decoded) {
        return Err(bad("decodes to a control character"));
    }
    Ok(decoded.into_owned())
}

fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

/// The userId of `POST /api/v4/authentication/token` from its headers and body; `None` for
/// an empty body or one without a `userId` key.
pub fn from_json_body(headers: &HeaderMap, body: &[u8]) -> Result<Option<String>, UserIdError> {
    if body
        .iter()
        .all(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
    {
        return Ok(None);
    }
    let text = |v: &HeaderValue| String::from_utf8_lossy(v.as_bytes()).into_owned();
    if let Some(e) = headers
        .get_all(CONTENT_ENCODING)
        .iter()
        .find(|e| !e.as_bytes().trim_ascii().eq_ignore_ascii_case(b"identity"))
    {
        return Err(UserIdError::Encoded { encoding: text(e) });
    }
    let mut types = headers.get_all(CONTENT_TYPE).iter();
    let content_type = types.next().map(text);
    if types.next().is_some() {
        return Err(UserIdError::RepeatedContentType);
    }
    if !content_type.as_deref().is_some_and(is_utf8_json) {
        return Err(UserIdError::NotJson { content_type });
    }
    // serde_json's recursion limit (128) stays on: a deeply nested body is an error, not a
    // stack overflow.
    let mut de = serde_json::Deserializer::from_slice(body);
    let user_id = TopLevel
        .deserialize(&mut de)
        .and_then(|u| de.end().map(|()| u))
        .map_err(|e| UserIdError::BadBody {
            reason: e.to_string(),
        })?;
    match user_id {
        Some(u) if has_control(&u) => Err(UserIdError::BadValue {
            value: u,
            reason: "holds a control character",
        }),
        user_id => Ok(user_id),
    }
}

/// `application/json` or `application/<subtype>+json`, any case, with no parameter but
/// `charset=utf-8`: a server decodes a body in the charset it names (UTF-7 can spell a
/// second "userId" key that UTF-8 reads as another).
fn is_utf8_json(content_type: &str) -> bool {
    let mut parts = content_type.split(';');
    let essence = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
    let json = essence == "application/json"
        || essence
            .strip_prefix("application/")
            .and_then(|s| s.strip_suffix("+json"))
            .is_some_and(|subtype| !subtype.is_empty());
    json && parts.all(|p| {
        p.trim().is_empty()
            || p.split_once('=').is_some_and(|(k, v)| {
                k.trim().eq_ignore_ascii_case("charset")
                    && v.trim().trim_matches('"').eq_ignore_ascii_case("utf-8")
            })
    })
}

/// The top-level object: its `userId` (which must be a string), every key unique.
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
            let is_user_id = key == "userId";
            insert_unique(&mut keys, key)?;
            let value = map.next_value_seed(Unique)?;
            match value {
                Node::Text(s) if is_user_id => user_id = Some(s),
                Node::Other(kind) if is_user_id => {
                    return Err(de::Error::custom(format!("userId is {kind}, not a string")))
                }
                _ => {}
            }
        }
        Ok(user_id)
    }
}

/// Adds an object's key to those seen in it; a repeated one is an error, since JSON.parse
/// keeps the last of them and other parsers the first.
fn insert_unique<E: de::Error>(keys: &mut HashSet<String>, key: String) -> Result<(), E> {
    if keys.contains(&key) {
        return Err(E::custom(format!("the key {key:?} is repeated")));
    }
    keys.insert(key);
    Ok(())
}

/// What a JSON value is: a string is kept (it may be the userId), anything else is checked
/// for repeated keys and named.
enum Node {
    Text(String),
    Other(&'static str),
}

/// Any JSON value, refusing a repeated key in any object within it.
struct Unique;

impl<'de> DeserializeSeed<'de> for Unique {
    type Value = Node;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Unique {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Node, E> {
        Ok(Node::Other("a boolean"))
    }
    fn visit_i64<E>(self, _: i64) -> Result<Node, E> {
        Ok(Node::Other("a number"))
    }
    fn visit_u64<E>(self, _: u64) -> Result<Node, E> {
        Ok(Node::Other("a number"))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Node, E> {
        Ok(Node::Other("a number"))
    }
    fn visit_str<E>(self, v: &str) -> Result<Node, E> {
        Ok(Node::Text(v.to_string()))
    }
    fn visit_unit<E>(self) -> Result<Node, E> {
        Ok(Node::Other("null"))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        while seq.next_element_seed(Unique)?.is_some() {}
        Ok(Node::Other("an array"))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut keys = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            insert_unique(&mut keys, key)?;
            map.next_value_seed(Unique)?;
        }
        Ok(Node::Other("an object"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(query: &str) -> Result<Option<String>, UserIdError> {
        from_query(Some(query))
    }

    /// Headers with these content types and encodings.
    fn headers(types: &[&'static str], encodings: &[&'static str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for t in types {
            h.append(CONTENT_TYPE, HeaderValue::from_static(t));
        }
        for e in encodings {
            h.append(CONTENT_ENCODING, HeaderValue::from_static(e));
        }
        h
    }

    fn typed(ct: &'static str) -> HeaderMap {
        headers(&[ct], &[])
    }

    fn json(body: &str) -> Result<Option<String>, UserIdError> {
        from_json_body(&typed("application/json"), body.as_bytes())
    }

    fn some(s: &str) -> Result<Option<String>, UserIdError> {
        Ok(Some(s.to_string()))
    }

    /// The error's message, for a refusal; the test fails on an accepted input.
    fn refusal(read: Result<Option<String>, UserIdError>, input: &str) -> String {
        match read {
            Ok(v) => panic!("{input:?} was accepted as {v:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn the_query_gives_the_user_id() {
        assert_eq!(q("userId=bot-7"), some("bot-7"));
        assert_eq!(q("other=1&userId=x"), some("x"));
        assert_eq!(q("&&userId=x&"), some("x"));
        assert_eq!(q("userId=a=b"), some("a=b"));
    }

    #[test]
    fn the_query_value_is_percent_decoded() {
        assert_eq!(q("userId=bot%2D7"), some("bot-7"));
        assert_eq!(q("userId=caf%C3%A9"), some("café"));
        assert_eq!(q("userId=a%2Bb%3Bc%26d%20e"), some("a+b;c&d e"));
    }

    #[test]
    fn a_query_without_user_id_gives_none() {
        assert_eq!(from_query(None), Ok(None));
        assert_eq!(q(""), Ok(None));
        assert_eq!(q("other=1"), Ok(None));
        assert_eq!(
            q("userIdx=a&xuserId=b&user_id=c&user+Id=d&x[userId]=e&userId%5F=f"),
            Ok(None)
        );
    }

    #[test]
    fn a_user_id_without_a_value_is_empty() {
        assert_eq!(q("userId"), some(""));
        assert_eq!(q("userId="), some(""));
        assert_eq!(q("other=1&userId"), some(""));
    }

    #[test]
    fn other_parameters_are_not_checked() {
        assert_eq!(q("x=%zz&y=a+b;c&z=%00&userId=bot-7"), some("bot-7"));
    }

    #[test]
    fn a_repeated_user_id_parameter_is_refused() {
        assert_eq!(
            q("userId=alice&userId=bot-7"),
            Err(UserIdError::RepeatedParameter {
                first: "userId".into(),
                second: "userId".into()
            })
        );
        let e = refusal(q("userId=bot-7&USERID=alice"), "USERID");
        assert!(
            e.contains("more than once") && e.contains("\"USERID\""),
            "{e}"
        );
        for query in [
            "userId=a&userId",
            "userId=a&userId[]=b",
            "user%49d=a&userId=b",
            "[userId]=alice&userId=bot-7",
            "userId=a&x=1&userid=a",
        ] {
            assert!(
                matches!(q(query), Err(UserIdError::RepeatedParameter { .. })),
                "{query}: {:?}",
                q(query)
            );
        }
    }

    #[test]
    fn a_user_id_parameter_spelt_otherwise_is_refused() {
        for name in [
            "user%49d",
            "userid",
            "USERID",
            "userId[]",
            "userId[0]",
            "userId[x]",
            "userId%5B%5D",
            "userId[",
            "[userId]",
            "%5BuserId%5D",
            "[userId][x]",
        ] {
            let read = q(&format!("{name}=alice"));
            assert_eq!(
                read,
                Err(UserIdError::DisguisedParameter { name: name.into() })
            );
            let e = refusal(read, name);
            assert!(e.contains(&format!("{name:?}")), "{e}");
        }
    }

    #[test]
    fn a_plus_semicolon_or_bracket_equals_in_the_value_is_refused() {
        for (query, value) in [
            ("userId=a+b", "a+b"),
            ("userId=+", "+"),
            ("userId=a;b", "a;b"),
            ("userId=a]=b", "a]=b"),
        ] {
            let e = refusal(q(query), query);
            assert!(e.contains(&format!("the userId {value:?} holds")), "{e}");
        }
    }

    #[test]
    fn a_malformed_escape_is_refused() {
        for query in [
            "userId=%zz",
            "userId=abc%2",
            "userId=%",
            "userId=%g0",
            "userId=a%%41",
        ] {
            let e = refusal(q(query), query);
            assert!(e.contains("not followed by two hex digits"), "{e}");
        }
    }

    #[test]
    fn a_value_that_is_not_utf8_is_refused() {
        for query in ["userId=%FF", "userId=caf%C3", "userId=%C3%28"] {
            let e = refusal(q(query), query);
            assert!(e.contains("UTF-8"), "{e}");
        }
    }

    #[test]
    fn raw_bytes_past_ascii_in_the_value_are_refused() {
        let e = refusal(q("userId=bot-\u{e9}"), "raw é");
        assert!(e.contains("not ASCII"), "{e}");
        assert_eq!(q("userId=bot-%C3%A9"), some("bot-\u{e9}"));
    }

    #[test]
    fn a_control_character_in_the_value_is_refused() {
        for query in ["userId=%00x", "userId=a%0A", "userId=%7F", "userId=%C2%85"] {
            let e = refusal(q(query), query);
            assert!(e.contains("control character"), "{e}");
        }
    }

    #[test]
    fn the_body_gives_a_string_user_id() {
        assert_eq!(json(r#"{"userId":"bot-7"}"#), some("bot-7"));
        assert_eq!(json("\n { \"userId\" : \"bot-7\" }\r\n"), some("bot-7"));
        assert_eq!(json(r#"{"user\u0049d":"bot\u002d7"}"#), some("bot-7"));
        assert_eq!(
            json(r#"{"x":{"a":[1,{"b":2},[{"b":3}]],"userId":9},"userId":"bot-7","n":null}"#),
            some("bot-7")
        );
    }

    #[test]
    fn an_empty_body_or_no_user_id_key_gives_none() {
        assert_eq!(json(""), Ok(None));
        assert_eq!(json(" \t\r\n"), Ok(None));
        assert_eq!(from_json_body(&HeaderMap::new(), b""), Ok(None));
        assert_eq!(json("{}"), Ok(None));
        assert_eq!(
            json(r#"{"userid":"a","UserId":"b","user":{"userId":"c"}}"#),
            Ok(None)
        );
    }

    #[test]
    fn json_content_types_are_accepted() {
        for ct in [
            "application/json; charset=utf-8",
            "Application/JSON",
            " application/json ;charset=UTF-8",
            "application/vnd.api+json",
            "application/merge-patch+JSON; charset=\"utf-8\";",
        ] {
            assert_eq!(
                from_json_body(&typed(ct), br#"{"userId":"a"}"#),
                some("a"),
                "{ct:?}"
            );
        }
        let identity = headers(&["application/json"], &["identity"]);
        assert_eq!(from_json_body(&identity, br#"{"userId":"a"}"#), some("a"));
    }

    #[test]
    fn a_charset_or_parameter_other_than_utf8_is_refused() {
        // In UTF-7, "+AHU-" is "u": the server would read a second userId key, and keep it.
        let body = br#"{"userId":"bot-1","+AHU-serId":"alice"}"#;
        for ct in [
            "application/json; charset=utf-7",
            "application/json; charset=UTF-16",
            "application/json; charset=utf-8; charset=utf-7",
            "application/json; x=y",
            "application/json; charset",
        ] {
            let e = refusal(from_json_body(&typed(ct), body), ct);
            assert!(e.contains("no parameter but charset=utf-8"), "{e}");
        }
    }

    #[test]
    fn two_content_types_or_an_encoded_body_are_refused() {
        let body = br#"{"userId":"a"}"#;
        let two = headers(&["application/json", "text/plain"], &[]);
        assert_eq!(
            from_json_body(&two, body),
            Err(UserIdError::RepeatedContentType)
        );
        for encoding in ["gzip", "br", "identity, gzip"] {
            let h = headers(&["application/json"], &["identity", encoding]);
            assert_eq!(
                from_json_body(&h, body),
                Err(UserIdError::Encoded {
                    encoding: encoding.into()
                })
            );
        }
    }

    #[test]
    fn a_body_not_typed_json_is_refused() {
        for ct in [
            "application/x-www-form-urlencoded",
            "text/plain",
            "text/json",
            "application/jsonx",
            "application/+json",
            "multipart/form-data; boundary=x",
        ] {
            let read = from_json_body(&typed(ct), b"userId=a");
            assert_eq!(
                read,
                Err(UserIdError::NotJson {
                    content_type: Some(ct.into())
                })
            );
            let e = refusal(read, ct);
            assert!(e.contains(&format!("not {ct:?}")), "{e}");
        }
        let e = refusal(
            from_json_body(&HeaderMap::new(), br#"{"userId":"a"}"#),
            "no type",
        );
        assert!(e.contains("not a body without one"), "{e}");
    }

    #[test]
    fn a_repeated_key_anywhere_is_refused() {
        for (body, key) in [
            (r#"{"userId":"a","userId":"b"}"#, "userId"),
            (r#"{"user\u0049d":"a","userId":"b"}"#, "userId"),
            (r#"{"userId":"a","x":1,"x":2}"#, "x"),
            (r#"{"a":{"k":1,"k":2},"userId":"x"}"#, "k"),
            (r#"{"userId":"x","a":[0,[{"k":1,"\u006b":2}]]}"#, "k"),
        ] {
            let e = refusal(json(body), body);
            assert!(e.contains(&format!("the key {key:?} is repeated")), "{e}");
        }
    }

    #[test]
    fn a_user_id_that_is_not_a_string_is_refused() {
        for (body, kind) in [
            (r#"{"userId":7}"#, "a number"),
            (r#"{"userId":-7.5}"#, "a number"),
            (r#"{"userId":null}"#, "null"),
            (r#"{"userId":true}"#, "a boolean"),
            (r#"{"userId":["a"]}"#, "an array"),
            (r#"{"userId":{"a":"b"}}"#, "an object"),
        ] {
            let e = refusal(json(body), body);
            assert!(
                e.contains(&format!("userId is {kind}, not a string")),
                "{e}"
            );
        }
    }

    #[test]
    fn a_body_that_is_not_an_object_is_refused() {
        for body in [r#"["userId","a"]"#, r#""a""#, "7", "null"] {
            let e = refusal(json(body), body);
            assert!(e.contains("expected a JSON object"), "{e}");
        }
    }

    #[test]
    fn invalid_json_is_refused_with_its_position() {
        for body in [
            r#"{"userId":"a""#,
            r#"{"userId":"a"} {"userId":"b"}"#,
            "{'userId':'a'}",
            r#"{"userId":"a",}"#,
            "\u{feff}{\"userId\":\"a\"}",
        ] {
            let e = refusal(json(body), body);
            assert!(
                e.starts_with("the JSON body is refused: ") && e.contains("line 1"),
                "{e}"
            );
        }
        let e = refusal(
            from_json_body(&typed("application/json"), b"{\"userId\":\"\xff\"}"),
            "\\xff",
        );
        assert!(e.contains("invalid unicode"), "{e}");
    }

    #[test]
    fn a_control_character_in_the_body_user_id_is_refused() {
        for body in [
            r#"{"userId":"a\u0000"}"#,
            r#"{"userId":"a\n"}"#,
            r#"{"userId":"\u007f"}"#,
        ] {
            let e = refusal(json(body), body);
            assert!(e.contains("holds a control character"), "{e}");
        }
    }

    #[test]
    fn a_deeply_nested_body_is_refused_without_a_crash() {
        let deep = |open: &str, close: &str, n: usize| {
            format!(
                "{{\"userId\":\"x\",\"a\":{}{}}}",
                open.repeat(n),
                close.repeat(n)
            )
        };
        let e = refusal(json(&deep("[", "]", 10_000)), "deep arrays");
        assert!(e.contains("recursion limit exceeded"), "{e}");
        let e = refusal(json(&deep("{\"a\":", "}", 10_000)), "deep objects");
        assert!(e.contains("recursion limit exceeded"), "{e}");
        // At the top, an array is refused before its depth is read.
        let top = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        let e = refusal(json(&top), "deep top-level array");
        assert!(e.contains("expected a JSON object"), "{e}");
        assert_eq!(json(&deep("[", "]", 100)), some("x"));
    }
}
