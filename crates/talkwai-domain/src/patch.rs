//! Partial updates with three states for nullable fields: absent (keep), `null` (clear), value
//! (set) — the semantics of InstantDB's `update`, expressed as `Option<Option<T>>`.

use serde::{Deserialize, Deserializer};

/// Deserializes a present field (even `null`) as `Some(..)`, so `#[serde(default)]` leaves an
/// absent field as `None`. Use with `#[serde(default, deserialize_with = "patch::nullable")]`.
pub fn nullable<'de, T, D>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    T: Deserialize<'de>,
    D: Deserializer<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// Applies a nullable patch to a field.
pub fn apply<T: Clone>(field: &mut Option<T>, patch: &Option<Option<T>>) {
    if let Some(value) = patch {
        field.clone_from(value);
    }
}

/// Applies a non-nullable patch to a field.
pub fn set<T: Clone>(field: &mut T, patch: &Option<T>) {
    if let Some(value) = patch {
        field.clone_from(value);
    }
}

/// A nullable patch that changes nothing is dropped: `Some(x)` equal to the current value
/// becomes `None`, so events record only real changes.
pub fn diff_nullable<T: PartialEq + Clone>(
    current: &Option<T>,
    patch: Option<Option<T>>,
) -> Option<Option<T>> {
    patch.filter(|value| value != current)
}

/// A non-nullable patch that changes nothing is dropped.
pub fn diff<T: PartialEq>(current: &T, patch: Option<T>) -> Option<T> {
    patch.filter(|value| value != current)
}
