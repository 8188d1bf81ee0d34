//! Grouped head reads: the last message of many subjects for many concurrent callers, each
//! distinct subject read once.
//!
//! Every command reads the heads it depends on (its target, the facts it checks, its actor)
//! right before deciding. Commands in flight at the same moment mostly share subjects (their
//! tenant, their actor), so reads that wait while another read is in flight are merged into the
//! next one, each subject asked once ([`EventStore::last_of_subjects`]: one last-by-subject
//! direct get per distinct subject, all in flight together) instead of once per command. Every
//! caller's answer is read after the caller asked, so it is as fresh as a read of its own.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::EventStore;
use crate::read::StoredMessage;

/// The last message of each subject read (absent subjects have no entry).
pub type Heads = HashMap<String, StoredMessage>;

/// Most distinct subjects merged into one read.
const MAX_SUBJECTS: usize = 1024;

type Answer = Result<Arc<Heads>, String>;

struct Ask {
    subjects: Vec<String>,
    reply: oneshot::Sender<Answer>,
}

/// Reads heads for many callers, merging the reads that wait. Cheap to clone; its task stops
/// when every clone is dropped.
#[derive(Clone, Debug)]
pub struct HeadReader {
    tx: mpsc::Sender<Ask>,
}

impl HeadReader {
    /// Spawns the reader task on the current tokio runtime; at most `in_flight` reads are
    /// outstanding at once (the others wait and merge).
    pub fn start(store: EventStore, in_flight: usize) -> Self {
        let (tx, rx) = mpsc::channel(4096);
        tokio::spawn(run(store, rx, in_flight.max(1)));
        Self { tx }
    }

    /// The last message of each of `subjects` (duplicates allowed), read after this call began.
    /// The answer may hold other callers' subjects too.
    pub async fn read(&self, subjects: Vec<String>) -> Result<Arc<Heads>, String> {
        if subjects.is_empty() {
            return Ok(Arc::default());
        }
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Ask { subjects, reply })
            .await
            .map_err(|_| "the head reader stopped".to_owned())?;
        rx.await.map_err(|_| "the head reader stopped".to_owned())?
    }
}

async fn run(store: EventStore, mut rx: mpsc::Receiver<Ask>, in_flight: usize) {
    let permits = Arc::new(Semaphore::new(in_flight));
    let mut carried: Option<Ask> = None;
    loop {
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            return;
        };
        let first = match carried.take() {
            Some(ask) => ask,
            None => match rx.recv().await {
                Some(ask) => ask,
                None => break,
            },
        };
        let mut group = vec![first];
        let mut subjects = Vec::new();
        let mut seen = HashSet::new();
        merge(&mut subjects, &mut seen, &group[0].subjects);
        // Everything that queued up while the previous reads were in flight joins this one.
        while subjects.len() < MAX_SUBJECTS {
            match rx.try_recv() {
                Ok(ask) => {
                    if subjects.len() + ask.subjects.len() > MAX_SUBJECTS {
                        carried = Some(ask);
                        break;
                    }
                    merge(&mut subjects, &mut seen, &ask.subjects);
                    group.push(ask);
                }
                Err(_) => break,
            }
        }
        let store = store.clone();
        tokio::spawn(async move {
            let answer = store
                .last_of_subjects(&subjects)
                .await
                .map(Arc::new)
                .map_err(|e| e.to_string());
            drop(permit);
            for ask in group {
                let _ = ask.reply.send(answer.clone());
            }
        });
    }
    // Let the reads in flight answer before the task ends.
    let _ = permits.acquire_many(in_flight as u32).await;
}

/// Appends the subjects of `more` not `seen` yet (in order), and marks them seen.
fn merge(subjects: &mut Vec<String>, seen: &mut HashSet<String>, more: &[String]) {
    for subject in more {
        if seen.insert(subject.clone()) {
            subjects.push(subject.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::merge;

    #[test]
    fn merging_keeps_the_first_occurrence_of_each_subject_in_order() {
        let mut subjects = Vec::new();
        let mut seen = std::collections::HashSet::new();
        merge(&mut subjects, &mut seen, &["a".to_owned(), "b".to_owned()]);
        merge(
            &mut subjects,
            &mut seen,
            &[
                "b".to_owned(),
                "c".to_owned(),
                "a".to_owned(),
                "c".to_owned(),
            ],
        );
        assert_eq!(subjects, ["a", "b", "c"]);
    }
}
