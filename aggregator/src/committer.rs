//! Group commit. Every batch must be durable before it is acknowledged, and
//! a durable commit (an fsync in SQLite, a WAL flush in PostgreSQL) costs
//! more than storing a batch does. One thread writes: the batches that
//! arrive while it commits are stored together in its next transaction, so
//! many interceptors shipping at once share commits instead of queueing for
//! one each. A lone sender waits for no one.

use crate::store::packed::{self, Lines};
use crate::store::{Batch, IngestItem, IngestOutcome, Store, StoreError};
use apiwitness_record::DropReport;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// At most this many records go into one transaction, so that one commit
/// never holds the store for long.
const MAX_GROUP_RECORDS: usize = 20_000;

struct Job {
    work: Work,
    done: oneshot::Sender<(Result<IngestOutcome, String>, Work)>,
}

/// What a sender hands the writer, and gets back with its answer: freed on
/// the sender's thread, since the writer's is the one all senders wait on
/// (the records' strings and versions were a twelfth of its time).
struct Work {
    items: Vec<IngestItem>,
    drops: Vec<DropReport>,
    packed: Option<(Vec<u8>, Lines)>,
}

#[derive(Clone)]
pub struct Committer {
    jobs: mpsc::Sender<Job>,
}

impl Committer {
    /// Starts the writing thread; it ends when the last handle is dropped.
    pub fn start(store: Arc<dyn Store>) -> std::io::Result<Committer> {
        let (jobs, queue) = mpsc::channel(1024);
        std::thread::Builder::new()
            .name("committer".into())
            .spawn(move || write_groups(store.as_ref(), queue))?;
        Ok(Committer { jobs })
    }

    /// Stores a batch durably, with whatever other batches are waiting.
    /// `received` is the batch as its sender compressed it with zstd, kept
    /// as the records' lines ([`Lines::Received`]) when every line of it
    /// is stored; without it the items' lines are packed.
    pub async fn ingest(
        &self,
        items: Vec<IngestItem>,
        drops: Vec<DropReport>,
        received: Option<Vec<u8>>,
    ) -> Result<IngestOutcome, StoreError> {
        let (done, outcome) = oneshot::channel();
        let stopped = || StoreError::Invalid("the store's writer has stopped".into());
        // Compressed here, on the sender's thread: the writer only writes.
        let packed = match received {
            _ if items.is_empty() => None,
            Some(blob) => Some((blob, Lines::Received)),
            None => Some((packed::pack(&items)?, Lines::Items)),
        };
        self.jobs
            .send(Job {
                work: Work {
                    items,
                    drops,
                    packed,
                },
                done,
            })
            .await
            .map_err(|_| stopped())?;
        let (outcome, work) = outcome.await.map_err(|_| stopped())?;
        drop(work);
        outcome.map_err(StoreError::Invalid)
    }
}

fn write_groups(store: &dyn Store, mut queue: mpsc::Receiver<Job>) {
    while let Some(first) = queue.blocking_recv() {
        let mut records = first.work.items.len();
        let mut group = vec![first];
        while records < MAX_GROUP_RECORDS {
            match queue.try_recv() {
                Ok(job) => {
                    records += job.work.items.len();
                    group.push(job);
                }
                Err(_) => break,
            }
        }
        let batches: Vec<Batch<'_>> = group
            .iter()
            .map(|Job { work, .. }| Batch {
                items: &work.items,
                drops: &work.drops,
                packed: work
                    .packed
                    .as_ref()
                    .map(|(blob, lines)| (blob.as_slice(), *lines)),
            })
            .collect();
        let outcomes: Vec<Result<IngestOutcome, String>> = match store.ingest_group(&batches) {
            Ok(outcomes) => outcomes.into_iter().map(Ok).collect(),
            // None of the group was stored: each sender answers with the
            // error, and its interceptor retries.
            Err(e) => vec![Err(e.to_string()); group.len()],
        };
        drop(batches);
        for (Job { work, done }, outcome) in group.into_iter().zip(outcomes) {
            // A sender that gave up (its request was dropped) is still
            // stored: it will retry, and count as duplicate.
            let _ = done.send((outcome, work));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::SqliteStore;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_batches_are_each_stored_once_with_their_own_outcome() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("c.db")).unwrap());
        let committer = Committer::start(store.clone()).unwrap();
        let batch = |b: usize| -> Vec<IngestItem> {
            (0..50)
                .map(|i| crate::store::test_item(&format!("r{b}-{i}"), "/t", 200))
                .collect()
        };
        let sends = (0..40).map(|b| {
            let committer = committer.clone();
            // Every batch twice: the second counts as duplicates.
            async move { committer.ingest(batch(b % 20), Vec::new(), None).await }
        });
        let outcomes: Vec<IngestOutcome> = futures_util::future::join_all(sends)
            .await
            .into_iter()
            .collect::<Result<_, _>>()
            .unwrap();
        let accepted: usize = outcomes.iter().map(|o| o.accepted).sum();
        let duplicates: usize = outcomes.iter().map(|o| o.duplicates).sum();
        assert_eq!((accepted, duplicates), (1000, 1000));
        assert!(outcomes.iter().all(|o| o.accepted + o.duplicates == 50));
        assert_eq!(store.record_count().unwrap(), 1000);
        assert_eq!(
            store.record("r19-49").unwrap().unwrap().line,
            r#"{"id":"r19-49"}"#
        );
    }
}
