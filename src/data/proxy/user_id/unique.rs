//! A JSON reader that keeps only the top-level `userId` and refuses a key repeated at any
//! depth (`serde_json::Value` would keep the last one silently).

use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// The top-level object: its `userId` (which must be a string), every key unique.
pub(super) struct TopLevel;

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
