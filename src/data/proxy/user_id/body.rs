//! The userId of a v4 token call, from its body: UTF-8 JSON as sent, one object, every key
//! unique, the userId a string.

use http::header::{HeaderMap, HeaderValue, CONTENT_ENCODING, CONTENT_TYPE};
use serde::de::DeserializeSeed;

use super::unique::TopLevel;
use super::{has_control, UserIdError};

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

#[cfg(test)]
mod tests {
    use super::super::test_util::{refusal, some};
    use super::*;

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
