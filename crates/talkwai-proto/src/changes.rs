//! What one committed projector batch changed in the read models, for live queries.
//!
//! The projector sends a [`Changed`] with PostgreSQL's `pg_notify` on [`CHANNEL`] inside the
//! transaction of each batch, so it is delivered exactly when the batch commits (never for a
//! batch that rolls back) to every query instance that `LISTEN`s. A query instance then
//! evaluates again only the live queries of the tenants named that read one of the tables
//! named, instead of every live query it holds.
//!
//! Compatible both ways: a payload without `tables` (an older projector) means "any table";
//! an older query instance ignores `tables` and evaluates by tenant alone.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use talkwai_domain::EntityKind;

use crate::subject::EventSubject;

/// The PostgreSQL notification channel.
pub const CHANNEL: &str = "talkwai_changes";

/// Most tenants named in one notification (PostgreSQL caps a payload at 8,000 bytes); a batch
/// touching more says [`Changed::everything`] instead.
pub const MAX_TENANTS: usize = 150;

/// The tenants and tables a committed batch touched, up to the checkpoint `seq`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Changed {
    /// The checkpoint the batch committed.
    pub seq: u64,
    /// The tenants whose rows may have changed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tenants: Vec<Uuid>,
    /// Rows every tenant may read changed (users, admins, or more tenants than
    /// [`MAX_TENANTS`]): every live query is evaluated again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub everything: bool,
    /// The read-model tables the batch wrote (`tasks`, `members`...), whichever tenant it
    /// wrote them for; empty: not said (an older projector), any table may have changed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tables: Vec<String>,
}

/// The read-model table that holds the rows of aggregates of `kind` (an event writes only
/// its own aggregate's row).
pub const fn table(kind: EntityKind) -> &'static str {
    match kind {
        EntityKind::Tenant => "tenants",
        EntityKind::Member => "members",
        EntityKind::Admin => "admins",
        EntityKind::Agent => "agents",
        EntityKind::Task => "tasks",
        EntityKind::User => "users",
    }
}

impl Changed {
    /// What a batch of events on `subjects`, committed at checkpoint `seq`, may have changed:
    /// the tenant of every tenant-scoped aggregate (everything for a platform aggregate) and
    /// the table of every aggregate. Guard subjects and subjects that do not parse change no
    /// read model.
    pub fn of_batch<'a>(seq: u64, subjects: impl IntoIterator<Item = &'a str>) -> Self {
        let mut tenants = BTreeSet::new();
        let mut tables = BTreeSet::new();
        let mut everything = false;
        for subject in subjects {
            if let Ok(EventSubject::Aggregate(target)) = EventSubject::parse(subject) {
                tables.insert(table(target.kind));
                match target.tenant {
                    Some(tenant) => {
                        tenants.insert(*tenant.as_uuid());
                    }
                    None => everything = true,
                }
            }
        }
        let tables = tables.into_iter().map(str::to_owned).collect();
        if everything || tenants.len() > MAX_TENANTS {
            return Self {
                seq,
                tenants: Vec::new(),
                everything: true,
                tables,
            };
        }
        Self {
            seq,
            tenants: tenants.into_iter().collect(),
            everything: false,
            tables,
        }
    }

    /// Whether nothing a query reads changed.
    pub fn is_empty(&self) -> bool {
        !self.everything && self.tenants.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_names_its_tenants_and_a_platform_event_names_everything() {
        let a = Uuid::new_v4();
        let b = Uuid::new_v4();
        let task = Uuid::new_v4();
        let subjects = [
            format!("talkwai.evt.{a}.task.{task}"),
            format!("talkwai.evt.{b}.member.{task}"),
            format!("talkwai.evt.{a}.task.{}", Uuid::new_v4()),
            format!("talkwai.evt.{a}.guard.command.{}", task.simple()),
        ];
        let changed = Changed::of_batch(9, subjects.iter().map(String::as_str));
        let mut want = vec![a, b];
        want.sort();
        assert_eq!(changed.tenants, want);
        assert!(!changed.everything);
        assert_eq!(changed.tables, ["members", "tasks"]);
        let json = serde_json::to_string(&changed).expect("json");
        assert_eq!(
            serde_json::from_str::<Changed>(&json).expect("back"),
            changed
        );

        let platform = [format!("talkwai.evt.platform.user.{task}")];
        let changed = Changed::of_batch(10, platform.iter().map(String::as_str));
        assert!(changed.everything && changed.tenants.is_empty());
        assert_eq!(changed.tables, ["users"]);

        let guards = [format!("talkwai.evt.{a}.guard.command.{}", task.simple())];
        assert!(Changed::of_batch(11, guards.iter().map(String::as_str)).is_empty());
    }

    #[test]
    fn too_many_tenants_is_everything_and_fits_a_notification() {
        let subjects: Vec<String> = (0..=MAX_TENANTS)
            .map(|_| format!("talkwai.evt.{}.task.{}", Uuid::new_v4(), Uuid::new_v4()))
            .collect();
        let changed = Changed::of_batch(1, subjects.iter().map(String::as_str));
        assert!(changed.everything);
        let most: Vec<String> = subjects[..MAX_TENANTS].to_vec();
        let changed = Changed::of_batch(u64::MAX, most.iter().map(String::as_str));
        assert_eq!(changed.tenants.len(), MAX_TENANTS);
        assert!(serde_json::to_string(&changed).expect("json").len() < 8_000);
    }

    #[test]
    fn an_older_payload_parses_as_any_table_and_an_older_reader_ignores_tables() {
        let tenant = Uuid::new_v4();
        let old = format!(r#"{{"seq":4,"tenants":["{tenant}"]}}"#);
        let changed: Changed = serde_json::from_str(&old).expect("an older payload parses");
        assert_eq!(changed.tenants, [tenant]);
        assert!(changed.tables.is_empty(), "no tables said: any table");

        /// The payload as the previous version read it.
        #[derive(Deserialize)]
        struct Before {
            seq: u64,
            tenants: Vec<Uuid>,
        }
        let subjects = [format!("talkwai.evt.{tenant}.agent.{}", Uuid::new_v4())];
        let new = serde_json::to_string(&Changed::of_batch(5, subjects.iter().map(String::as_str)))
            .expect("json");
        assert!(new.contains(r#""tables":["agents"]"#), "{new}");
        let before: Before = serde_json::from_str(&new).expect("an older reader parses it");
        assert_eq!((before.seq, before.tenants), (5, vec![tenant]));
    }
}
