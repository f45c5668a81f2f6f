//! How one struct of app settings is read in both shapes of the file: at the top of it beside
//! the gateway's own fields (the single-app shape), and in each `apps[]` entry beside its name
//! and listener. serde's `flatten` would lose unknown-key errors and every error's line, so
//! instead each struct reads the map it shares while the other's keys are passed over, and a
//! key that neither has is refused where it stands, with its line.

use std::cell::Cell;
use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
use serde::de::{
    self, DeserializeOwned, DeserializeSeed, Deserializer, IgnoredAny, IntoDeserializer, MapAccess,
    Visitor,
};

/// The field names of a derived struct, as its `Deserialize` declares them.
pub(super) fn fields_of<T: DeserializeOwned>() -> &'static [&'static str] {
    let names = Cell::new(&[][..]);
    let _ = T::deserialize(FieldNames(&names));
    names.get()
}

/// A deserializer that only learns the field names a struct asks for.
struct FieldNames<'a>(&'a Cell<&'static [&'static str]>);

impl<'de> Deserializer<'de> for FieldNames<'_> {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("field names only"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.set(fields);
        Err(de::Error::custom("field names only"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

/// `T` read from a map it shares with `O`: `O`'s keys are passed over (and named in `seen`), a
/// key of neither is refused.
pub(super) struct Beside<T, O> {
    pub(super) value: T,
    /// `O`'s keys the map held, in order.
    pub(super) seen: Vec<String>,
    other: PhantomData<O>,
}

impl<'de, T: DeserializeOwned, O: DeserializeOwned> de::Deserialize<'de> for Beside<T, O> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(BesideVisitor::<T, O>(PhantomData))
    }
}

struct BesideVisitor<T, O>(PhantomData<(T, O)>);

impl<'de, T: DeserializeOwned, O: DeserializeOwned> Visitor<'de> for BesideVisitor<T, O> {
    type Value = Beside<T, O>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a map of settings")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        let mut seen = Vec::new();
        let shared = Shared {
            inner: map,
            own: fields_of::<T>(),
            other: fields_of::<O>(),
            take: |key: &str, map: &mut A| -> Result<(), A::Error> {
                let _: IgnoredAny = map.next_value()?;
                seen.push(key.to_string());
                Ok(())
            },
        };
        let value = T::deserialize(MapAccessDeserializer::new(shared))?;
        Ok(Beside {
            value,
            seen,
            other: PhantomData,
        })
    }
}

/// A map read by one struct's `Deserialize` while `take` handles the keys in `other`; a key in
/// neither list is refused at its value.
pub(super) struct Shared<'s, A, F> {
    pub(super) inner: A,
    pub(super) own: &'s [&'s str],
    pub(super) other: &'s [&'s str],
    pub(super) take: F,
}

impl<'de, A, F> MapAccess<'de> for Shared<'_, A, F>
where
    A: MapAccess<'de>,
    F: FnMut(&str, &mut A) -> Result<(), A::Error>,
{
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        loop {
            let Some(key) = self.inner.next_key::<String>()? else {
                return Ok(None);
            };
            if self.other.contains(&key.as_str()) {
                (self.take)(&key, &mut self.inner)?;
                continue;
            }
            if !self.own.contains(&key.as_str()) {
                let expected: Vec<&str> = self.own.iter().chain(self.other).copied().collect();
                return Err(self
                    .inner
                    .next_value_seed(Refuse {
                        key: &key,
                        expected: &expected,
                    })
                    .err()
                    .unwrap_or_else(|| de::Error::unknown_field(&key, &[])));
            }
            return seed.deserialize(key.into_deserializer()).map(Some);
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, A::Error> {
        self.inner.next_value_seed(seed)
    }
}

/// Fails at a value whose key no struct has, so that the error carries the value's place.
struct Refuse<'k> {
    key: &'k str,
    expected: &'k [&'k str],
}

impl<'de> DeserializeSeed<'de> for Refuse<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, _: D) -> Result<(), D::Error> {
        Err(de::Error::custom(format!(
            "unknown field `{}`, expected one of {}",
            self.key,
            self.expected
                .iter()
                .map(|f| format!("`{f}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )))
    }
}
