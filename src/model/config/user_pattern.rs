//! `callers[].grants[].user_ids`: which userIds a caller may mint auth tokens for.
//!
//! Only `*` and `?` are wildcards. `[` and `]` are refused rather than read as a class or
//! as a literal: shells and other glob dialects read `bot-[0-9]*` as a class, so a pattern
//! that matched otherwise here would surprise. Everything else is literal.

use serde::{de, Deserialize, Deserializer};

/// Why a `user_ids` pattern is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserIdPatternError {
    /// An empty pattern (or only spaces).
    #[error("the user_ids pattern {pattern:?} is empty; write \"*\" for any userId")]
    Empty {
        /// The pattern, as written.
        pattern: String,
    },
    /// A `[` or `]`, a character class in other glob dialects.
    #[error(
        "the user_ids pattern {pattern:?} holds {found:?}: only '*' (any run of characters) \
         and '?' (one character) are wildcards, and character classes are not supported"
    )]
    Class {
        /// The pattern, as written.
        pattern: String,
        /// The bracket found.
        found: char,
    },
    /// A pattern the glob crate does not accept.
    #[error("the user_ids pattern {pattern:?} is invalid: {reason}")]
    Invalid {
        /// The pattern, as written.
        pattern: String,
        /// The glob crate's reason.
        reason: String,
    },
}

/// One `user_ids` pattern: `*` any run of characters, `?` one character; anything else literal.
#[derive(Debug, Clone)]
pub struct UserIdPattern {
    text: String,
    glob: glob::Pattern,
}

/// Plain strings, not paths: `*` and `?` match '/' and a leading '.' too; case counts, as it
/// does for Amity's userIds.
const STRING_MATCH: glob::MatchOptions = glob::MatchOptions {
    case_sensitive: true,
    require_literal_separator: false,
    require_literal_leading_dot: false,
};

impl UserIdPattern {
    /// A pattern; the error names it and says what is wrong.
    pub fn new(text: &str) -> Result<Self, UserIdPatternError> {
        if text.trim().is_empty() {
            return Err(UserIdPatternError::Empty {
                pattern: text.to_string(),
            });
        }
        if let Some(found) = text.chars().find(|c| matches!(c, '[' | ']')) {
            return Err(UserIdPatternError::Class {
                pattern: text.to_string(),
                found,
            });
        }
        // glob reads `**` as a path wildcard and refuses it inside a name; for a string it
        // means what `*` does.
        let mut single = String::with_capacity(text.len());
        for c in text.chars() {
            if !(c == '*' && single.ends_with('*')) {
                single.push(c);
            }
        }
        let glob = glob::Pattern::new(&single).map_err(|e| UserIdPatternError::Invalid {
            pattern: text.to_string(),
            reason: e.msg.to_string(),
        })?;
        Ok(Self {
            text: text.to_string(),
            glob,
        })
    }

    /// Whether `user_id` matches the whole pattern. An empty userId matches none, not even
    /// `*`: Amity mints for no empty userId.
    pub fn matches(&self, user_id: &str) -> bool {
        !user_id.is_empty() && self.glob.matches_with(user_id, STRING_MATCH)
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl<'de> Deserialize<'de> for UserIdPattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::new(&String::deserialize(d)?).map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use serde::de::value::{Error as ValueError, StrDeserializer};

    use super::*;

    fn pattern(text: &str) -> UserIdPattern {
        match UserIdPattern::new(text) {
            Ok(p) => p,
            Err(e) => panic!("{text:?} was refused: {e}"),
        }
    }

    /// The userIds among `ids` that `text` matches.
    fn matched<'a>(text: &str, ids: &[&'a str]) -> Vec<&'a str> {
        let p = pattern(text);
        ids.iter().copied().filter(|id| p.matches(id)).collect()
    }

    #[test]
    fn a_star_matches_any_run_of_characters() {
        let ids = [
            "bot-7",
            "bot-",
            "bot-eu/1.x",
            "bot-é",
            "alice",
            "xbot-7",
            "Bot-7",
            "bot",
        ];
        assert_eq!(
            matched("bot-*", &ids),
            ["bot-7", "bot-", "bot-eu/1.x", "bot-é"]
        );
        assert_eq!(matched("*-7", &ids), ["bot-7", "xbot-7", "Bot-7"]);
        assert_eq!(
            matched("b*t*", &ids),
            ["bot-7", "bot-", "bot-eu/1.x", "bot-é", "bot"]
        );
    }

    #[test]
    fn a_question_mark_matches_one_character() {
        let ids = [
            "svc-a-eu",
            "svc-é-eu",
            "svc-/-eu",
            "svc-ab-eu",
            "svc--eu",
            "svc-a-us",
        ];
        assert_eq!(
            matched("svc-?-eu", &ids),
            ["svc-a-eu", "svc-é-eu", "svc-/-eu"]
        );
    }

    #[test]
    fn a_star_alone_matches_every_user_id_but_the_empty_one() {
        let p = pattern("*");
        for id in ["a", "alice", "a/b", ".hidden", "x y", "*"] {
            assert!(p.matches(id), "{id:?}");
        }
        assert!(!p.matches(""));
        assert!(!pattern("**").matches(""));
    }

    #[test]
    fn an_exact_pattern_matches_itself_only() {
        let ids = ["alice", "Alice", "alice2", "xalice", "alic", ""];
        assert_eq!(matched("alice", &ids), ["alice"]);
        assert_eq!(matched("a.b", &["a.b", "axb"]), ["a.b"]);
        assert_eq!(
            matched(r"a\b{c,d}+(e)", &[r"a\b{c,d}+(e)", "abc"]),
            [r"a\b{c,d}+(e)"]
        );
    }

    #[test]
    fn repeated_stars_mean_one_star() {
        let p = pattern("bot-**");
        assert!(p.matches("bot-7") && p.matches("bot-a/b") && !p.matches("alice"));
        assert_eq!(p.as_str(), "bot-**");
        assert_eq!(matched("a***b", &["ab", "a/x/b", "ba"]), ["ab", "a/x/b"]);
    }

    #[test]
    fn as_str_gives_the_pattern_as_written() {
        assert_eq!(pattern("svc-?-eu").as_str(), "svc-?-eu");
    }

    #[test]
    fn a_bracket_is_refused_naming_the_pattern() {
        for (text, found) in [
            ("bot-[0-9]", '['),
            ("bot-[", '['),
            ("a]b", ']'),
            ("[!a]*", '['),
        ] {
            let e = UserIdPattern::new(text).map(|p| p.as_str().to_string());
            assert_eq!(
                e,
                Err(UserIdPatternError::Class {
                    pattern: text.into(),
                    found
                })
            );
        }
        let e = UserIdPattern::new("bot-[0-9]").map(|_| ()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the user_ids pattern \"bot-[0-9]\" holds '[': only '*' (any run of characters) \
             and '?' (one character) are wildcards, and character classes are not supported"
        );
    }

    #[test]
    fn an_empty_pattern_is_refused() {
        for text in ["", "  "] {
            let e = UserIdPattern::new(text).map(|_| ());
            assert_eq!(
                e,
                Err(UserIdPatternError::Empty {
                    pattern: text.into()
                })
            );
        }
        let e = UserIdPattern::new("").map(|_| ()).unwrap_err().to_string();
        assert!(e.contains("write \"*\" for any userId"), "{e}");
    }

    #[test]
    fn deserializing_reads_a_pattern_and_names_a_bad_one() {
        let read = |text| UserIdPattern::deserialize(StrDeserializer::<ValueError>::new(text));
        let p = read("bot-*").map_err(|e| e.to_string());
        assert_eq!(p.as_ref().map(UserIdPattern::as_str), Ok("bot-*"));
        assert!(p.is_ok_and(|p| p.matches("bot-7")));
        let e = read("bot-[").map(|_| ()).unwrap_err().to_string();
        assert!(
            e.starts_with("the user_ids pattern \"bot-[\" holds '['"),
            "{e}"
        );
        let e = read("").map(|_| ()).unwrap_err().to_string();
        assert!(e.contains("pattern \"\" is empty"), "{e}");
    }
}
