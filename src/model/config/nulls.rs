//! `key:` with no value, read as the field's default.

use serde::Deserialize;

/// Lets `key:` with no value mean the default, as users expect of an empty list.
pub(super) fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}
