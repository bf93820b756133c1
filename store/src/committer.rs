//! Group commit: one thread drains a bounded queue and commits each batch with one fsync.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, sync_channel};

use crate::backend::Backend;
use crate::error::CommitError;
use crate::mutation::{self, Cache, Committed, Context, Failure, Mutation};
use crate::sync;

/// A mutation was queued; [`Ticket::wait`] blocks until it is durable (or failed).
#[derive(Debug)]
#[must_use = "a ticket must be waited on to learn whether the mutation is durable"]
pub struct Ticket {
    rx: Receiver<Result<Receipt, CommitError>>,
}

/// A mutation that is durable: on disk, surviving `kill -9` and power loss.
#[derive(Debug, Clone, PartialEq)]
pub struct Receipt {
    /// The number of the durable commit that carried it (counting from 1 since open). Mutations
    /// with the same number shared one transaction and one fsync.
    pub commit: u64,
    /// What it did.
    pub committed: Committed,
}

impl Ticket {
    /// Waits until the mutation is durable — the point at which a replication ack may be sent.
    ///
    /// # Errors
    /// [`CommitError`]: the mutation was refused (it wrote nothing), or its batch failed in
    /// storage and was rolled back, or the store closed.
    pub fn wait(self) -> Result<Receipt, CommitError> {
        self.rx.recv().unwrap_or(Err(CommitError::Closed))
    }

    /// A ticket that reports `error` at once.
    pub(crate) fn failed(error: CommitError) -> Ticket {
        let (tx, rx) = sync_channel(1);
        // The receiver is alive: sending into a channel of capacity 1 cannot block or fail.
        let _ = tx.send(Err(error));
        Ticket { rx }
    }
}

/// A queued mutation and where its result goes.
pub(crate) struct Job {
    mutation: Mutation,
    reply: SyncSender<Result<Receipt, CommitError>>,
}

impl Job {
    pub(crate) fn new(mutation: Mutation) -> (Job, Ticket) {
        let (reply, rx) = sync_channel(1);
        (Job { mutation, reply }, Ticket { rx })
    }
}

/// Counters shared with the store's readers.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) commits: AtomicU64,
    pub(crate) mutations: AtomicU64,
    pub(crate) refused: AtomicU64,
    pub(crate) failed_batches: AtomicU64,
}

/// The committer thread's body: runs until every sender is dropped and the queue is drained.
pub(crate) fn run(
    backend: Arc<Backend>,
    mut cx: Context,
    queue: Receiver<Job>,
    max_batch: usize,
    counters: Arc<Counters>,
    index: Arc<sync::Shared>,
) {
    let mut batch: Vec<Job> = Vec::with_capacity(max_batch);
    let mut stale = false;
    while let Ok(first) = queue.recv() {
        batch.push(first);
        while batch.len() < max_batch {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        if stale {
            match backend.read(|tx| Cache::load(tx)) {
                Ok(cache) => cx.cache = cache,
                Err(e) => {
                    fail_all(&mut batch, &CommitError::Storage(e), &counters);
                    continue;
                }
            }
        }
        stale = !commit_batch(&backend, &mut cx, &mut batch, &counters, &index);
    }
}

/// Runs and commits one batch; answers every job. Returns false if the batch rolled back (the
/// cache may then hold uncommitted changes and must be reloaded).
///
/// The in-memory sync index takes the batch's changes once the commit is durable and before
/// any job is answered: a writer that waited for its ticket reads its own change there.
fn commit_batch(
    backend: &Backend,
    cx: &mut Context,
    batch: &mut Vec<Job>,
    counters: &Counters,
    index: &sync::Shared,
) -> bool {
    let mut results: Vec<Result<Committed, CommitError>> = Vec::with_capacity(batch.len());
    let outcome = std::thread::scope(|scope| {
        let ahead = cx.sync.start(scope, batch.len());
        let run = std::panic::catch_unwind(AssertUnwindSafe(|| {
            backend.write(|tx| {
                for job in batch.iter() {
                    match mutation::run(tx, cx, &job.mutation) {
                        Ok(c) => results.push(Ok(c)),
                        Err(Failure::Refused(e)) => results.push(Err(e)),
                        Err(Failure::Abort(e)) => return Err(e),
                    }
                }
                sync::finish(tx, &mut cx.sync, ahead)
            })
        }));
        // The threads computing points ahead end when their channels close, and the scope
        // waits for them: close the channels whatever happened, a panic included.
        cx.sync.stop_ahead();
        match run {
            Ok(outcome) => outcome,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    });
    match outcome {
        Ok(prepared) => {
            index.apply(prepared);
            let commit = counters.commits.fetch_add(1, Ordering::SeqCst) + 1;
            for (job, result) in batch.drain(..).zip(results) {
                match &result {
                    Ok(_) => counters.mutations.fetch_add(1, Ordering::Relaxed),
                    Err(_) => counters.refused.fetch_add(1, Ordering::Relaxed),
                };
                let receipt = result.map(|committed| Receipt { commit, committed });
                // A waiter that gave up (dropped its ticket) needs no answer.
                let _ = job.reply.send(receipt);
            }
            true
        }
        Err(e) => {
            cx.sync.reset();
            fail_all(batch, &CommitError::Storage(e), counters);
            false
        }
    }
}

fn fail_all(batch: &mut Vec<Job>, error: &CommitError, counters: &Counters) {
    counters.failed_batches.fetch_add(1, Ordering::Relaxed);
    for job in batch.drain(..) {
        let _ = job.reply.send(Err(error.clone()));
    }
}
