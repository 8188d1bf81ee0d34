//! Event versions and upcasting, in one place.
//!
//! Every event type has its own version, written in the body (`"version"`) and in the
//! `Talkwai-Event-Version` header. A type starts at version 1; changing the shape of its data
//! adds one [`Upcaster`] to [`UPCASTERS`]: a pure function, next to the event types, that
//! turns the data of version `from` into the data of version `from + 1`. The current version
//! of a type is one more than its number of upcasters, so it cannot be bumped without one.
//!
//! [`Event::decode`](crate::Event::decode) runs [`upcast`] on every body it reads, so every
//! reader of the log (command decisions, projections, the notifier, the CLI) sees the current
//! shape whatever version was stored; [`Event::encode`](crate::Event::encode) always writes
//! the current version. A version newer than this code knows (or 0) is
//! [`DecodeError::UnknownVersion`], never read as another shape.

use std::borrow::Cow;

use serde_json::Value;

use crate::aggregate::{DecodeError, EventBody};
use crate::{task, tenant};

/// One step of an event type's history: turns the data of version `from` into the data of
/// version `from + 1`. Pure; refuses data that is not a valid `from` shape.
#[derive(Debug, Clone, Copy)]
pub struct Upcaster {
    /// The event type (`task.completed`).
    pub event_type: &'static str,
    /// The version it reads.
    pub from: u32,
    /// The conversion.
    pub step: fn(Value) -> Result<Value, serde_json::Error>,
}

/// Every upcaster, per type in version order. Append only: a stored event of any version
/// ever written must stay readable.
pub const UPCASTERS: &[Upcaster] = &[
    // 2: `task.complete` / `task.fail` report an optional outcome.
    Upcaster {
        event_type: "task.completed",
        from: 1,
        step: task::upcast_completed_v1,
    },
    Upcaster {
        event_type: "task.failed",
        from: 1,
        step: task::upcast_failed_v1,
    },
    // 2: a suspension issues the erasure token `tenant.erase` needs.
    Upcaster {
        event_type: "tenant.statusChanged",
        from: 1,
        step: tenant::upcast_status_changed_v1,
    },
];

/// The version writers write for `event_type`: 1 plus its number of upcasters.
pub fn current_version(event_type: &str) -> u32 {
    let steps = UPCASTERS
        .iter()
        .filter(|u| u.event_type == event_type)
        .count();
    1 + u32::try_from(steps).unwrap_or(u32::MAX - 1)
}

/// The data of `body` in its type's current version: borrowed when it already is, else run
/// through the type's upcasters from the stored version on.
pub fn upcast(body: &EventBody) -> Result<Cow<'_, Value>, DecodeError> {
    let ty = body.event_type.as_str();
    let current = current_version(ty);
    let unknown = || DecodeError::UnknownVersion {
        event_type: ty.into(),
        version: body.version,
    };
    if body.version == 0 || body.version > current {
        return Err(unknown());
    }
    let mut data = Cow::Borrowed(&body.data);
    for version in body.version..current {
        let upcaster = UPCASTERS
            .iter()
            .find(|u| u.event_type == ty && u.from == version)
            .ok_or_else(unknown)?;
        data = Cow::Owned((upcaster.step)(data.into_owned()).map_err(|e| {
            DecodeError::InvalidData {
                event_type: ty.into(),
                message: format!("as version {version}: {e}"),
            }
        })?);
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_upcasts_in_unbroken_steps_from_version_one() {
        for upcaster in UPCASTERS {
            let earlier = UPCASTERS
                .iter()
                .filter(|u| u.event_type == upcaster.event_type && u.from < upcaster.from)
                .count();
            assert_eq!(
                u32::try_from(earlier).expect("few") + 1,
                upcaster.from,
                "{} upcasters must go 1, 2, 3... in order",
                upcaster.event_type
            );
        }
    }
}
