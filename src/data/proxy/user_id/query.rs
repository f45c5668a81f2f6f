//! The userId of a v3 token call, from its query, as Express's `qs` reads it.

use percent_encoding::percent_decode_str;

use super::{has_control, UserIdError};

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

#[cfg(test)]
mod tests {
    use super::super::test_util::{refusal, some};
    use super::*;

    fn q(query: &str) -> Result<Option<String>, UserIdError> {
        from_query(Some(query))
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
}
