//! Placeholder until the pattern module lands.
use serde::{Deserialize, Deserializer};

/// One `user_ids` pattern.
#[derive(Debug, Clone)]
pub struct UserIdPattern(String);

impl UserIdPattern {
    /// Whether `user_id` matches.
    pub fn matches(&self, user_id: &str) -> bool {
        match self.0.strip_suffix('*') {
            Some(p) => user_id.starts_with(p) && !user_id.is_empty(),
            None => self.0 == user_id,
        }
    }
    /// As written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for UserIdPattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Self(String::deserialize(d)?))
    }
}
