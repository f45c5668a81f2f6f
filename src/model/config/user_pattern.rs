//! `callers[].grants[].user_ids`: which userIds a caller may mint tokens for.

use serde::{de, Deserialize, Deserializer};

/// One `user_ids` pattern (glob syntax: `*` any run of characters, `?` one, `[ab]` one of).
#[derive(Debug, Clone)]
pub struct UserIdPattern(glob::Pattern);

impl UserIdPattern {
    /// A pattern; an error names it and says why it does not parse.
    pub fn new(text: &str) -> Result<Self, String> {
        if text.trim().is_empty() {
            return Err("a user_ids pattern is empty; use \"*\" for any userId".into());
        }
        glob::Pattern::new(text)
            .map(Self)
            .map_err(|e| format!("user_ids pattern {text:?}: {}", e.msg))
    }

    /// Whether `user_id` matches (`*` matches any character, '/' and '.' included).
    pub fn matches(&self, user_id: &str) -> bool {
        self.0.matches(user_id)
    }

    /// As written.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl<'de> Deserialize<'de> for UserIdPattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::new(&String::deserialize(d)?).map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_whole_user_ids() {
        let bots = UserIdPattern::new("bot-*").unwrap();
        assert!(bots.matches("bot-7") && bots.matches("bot-eu/1.x"));
        assert!(!bots.matches("alice") && !bots.matches("xbot-7") && !bots.matches("Bot-7"));
        let one = UserIdPattern::new("svc-?-eu").unwrap();
        assert!(one.matches("svc-a-eu") && !one.matches("svc-ab-eu"));
        let exact = UserIdPattern::new("alice").unwrap();
        assert!(exact.matches("alice") && !exact.matches("alice2"));
        assert_eq!(exact.as_str(), "alice");
    }

    #[test]
    fn a_bad_pattern_is_named() {
        let e = UserIdPattern::new("bot-[").unwrap_err();
        assert!(e.contains("\"bot-[\""), "{e}");
        assert!(UserIdPattern::new(" ").is_err());
    }
}
