//! Group commit: one thread drains a bounded queue and commits each batch with one fsync.
//!
//! A batch that holds a received block ([`Mutation::Ingest`]) and is all the queue held (off
//! peak) is committed in two steps: visibly first ([`Stage::Visible`]: every read sees it;
//! about 0.1 ms), then durably by an empty durable commit ([`Stage::Durable`]: one fsync).
//! Any other batch is committed durably at once, as one transaction: one of local writes and
//! metadata only (their callers wait for durability anyway, and a second transaction would
//! cost them), or one that fills [`Config::with_max_batch`](crate::Config::with_max_batch)
//! (load: visibility waits for the fsync as before, and throughput does not pay for a second
//! transaction). Either way at most one batch is visible and not durable, and the next
//! durable commit carries it.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, sync_channel};

use crate::backend::{Backend, WriteTx};
use crate::error::CommitError;
use crate::mutation::{self, Cache, Committed, Context, Failure, Mutation};
use crate::sync;

/// How far a committed mutation has got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stage {
    /// Committed and seen by every read (the document API, head exchange, backfill), not yet
    /// durable: a crash now loses it whole, never a part of it. Enough to act on a block
    /// received from a peer that is owed no acknowledgement — it is fetched again if lost.
    Visible,
    /// Durable: on disk, surviving `kill -9` and power loss. The ack point of replication
    /// and of the API.
    Durable,
}

/// A mutation was queued; [`Ticket::wait`] blocks until it is durable (or failed),
/// [`Ticket::wait_until`] until it reaches a chosen [`Stage`].
#[derive(Debug)]
#[must_use = "a ticket must be waited on to learn whether the mutation is durable"]
pub struct Ticket {
    rx: Receiver<(Stage, Result<Receipt, CommitError>)>,
    /// The last answer taken from `rx`.
    reached: Option<(Stage, Result<Receipt, CommitError>)>,
}

/// A mutation that is committed: durable, or (from [`Ticket::wait_until`] with
/// [`Stage::Visible`]) visible and about to be.
#[derive(Debug, Clone, PartialEq)]
pub struct Receipt {
    /// The number of the durable commit that carried it, or will carry it (counting from 1
    /// since open). Mutations with the same number shared one fsync.
    pub commit: u64,
    /// What it did.
    pub committed: Committed,
}

impl Ticket {
    /// Waits until the mutation is durable — the point at which a replication ack may be sent.
    ///
    /// # Errors
    /// [`CommitError`]: the mutation was refused (it wrote nothing), or its batch failed in
    /// storage and was rolled back (or was visible and its durable commit failed: a crash may
    /// then lose it), or the store closed.
    pub fn wait(mut self) -> Result<Receipt, CommitError> {
        self.wait_until(Stage::Durable)
    }

    /// Waits until the mutation reaches `stage` (or fails on the way); may be called again
    /// for a later stage.
    ///
    /// # Errors
    /// As [`Ticket::wait`]; with [`Stage::Visible`], only the failures before it is visible.
    pub fn wait_until(&mut self, stage: Stage) -> Result<Receipt, CommitError> {
        loop {
            if let Some((reached, result)) = &self.reached
                && (result.is_err() || *reached >= stage)
            {
                return result.clone();
            }
            match self.rx.recv() {
                Ok(answer) => self.reached = Some(answer),
                Err(_) => return Err(CommitError::Closed),
            }
        }
    }

    /// A ticket that reports `error` at once.
    pub(crate) fn failed(error: CommitError) -> Ticket {
        let (tx, rx) = sync_channel(1);
        // The receiver is alive: sending into a channel of capacity 1 cannot block or fail.
        let _ = tx.send((Stage::Visible, Err(error)));
        Ticket { rx, reached: None }
    }
}

/// A queued mutation and where its result goes.
pub(crate) struct Job {
    mutation: Mutation,
    reply: Reply,
}

/// Where a job's answers go.
enum Reply {
    /// A [`Ticket`]'s channel, with room for both stages: the committer never blocks on a slow
    /// waiter.
    Ticket(SyncSender<(Stage, Result<Receipt, CommitError>)>),
    /// A callback of [`Store::submit_notify`](crate::Store::submit_notify).
    Notify(Notify),
}

/// The callback of [`Store::submit_notify`](crate::Store::submit_notify): called exactly once —
/// at its stage, on failure, or (dropped unanswered: the committer stopped) with
/// [`CommitError::Closed`].
struct Notify {
    until: Stage,
    callback: Option<Callback>,
}

/// What [`Store::submit_notify`](crate::Store::submit_notify) calls.
pub(crate) type Callback = Box<dyn FnOnce(Result<Receipt, CommitError>) + Send>;

impl Drop for Notify {
    fn drop(&mut self) {
        if let Some(callback) = self.callback.take() {
            callback(Err(CommitError::Closed));
        }
    }
}

impl Job {
    pub(crate) fn new(mutation: Mutation) -> (Job, Ticket) {
        let (reply, rx) = sync_channel(2);
        let job = Job {
            mutation,
            reply: Reply::Ticket(reply),
        };
        (job, Ticket { rx, reached: None })
    }

    pub(crate) fn notify(mutation: Mutation, until: Stage, callback: Callback) -> Job {
        let notify = Notify {
            until,
            callback: Some(callback),
        };
        Job {
            mutation,
            reply: Reply::Notify(notify),
        }
    }

    /// Answers the job at `stage`; a waiter that gave up (dropped its ticket) needs no answer,
    /// and a callback is called once, at its stage or on failure.
    fn answer(&mut self, stage: Stage, result: Result<Receipt, CommitError>) {
        match &mut self.reply {
            Reply::Ticket(reply) => {
                let _ = reply.send((stage, result));
            }
            Reply::Notify(notify) => {
                if (result.is_err() || stage >= notify.until)
                    && let Some(callback) = notify.callback.take()
                {
                    callback(result);
                }
            }
        }
    }
}

/// Counters shared with the store's readers.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) commits: AtomicU64,
    pub(crate) mutations: AtomicU64,
    pub(crate) barriers: AtomicU64,
    pub(crate) refused: AtomicU64,
    pub(crate) failed_batches: AtomicU64,
}

impl Counters {
    /// Counts one committed mutation.
    fn count(&self, mutation: &Mutation) {
        let counter = match mutation {
            Mutation::Barrier => &self.barriers,
            _ => &self.mutations,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
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
    // Whether the last batch failed: the cache may hold its changes, and a redb whose I/O
    // failed refuses every write until reopened — which a barrier must not skip.
    let mut stale = false;
    while let Ok(first) = queue.recv() {
        batch.push(first);
        while batch.len() < max_batch {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        if !stale
            && batch
                .iter()
                .all(|job| matches!(job.mutation, Mutation::Barrier))
        {
            // Nothing is visible and not durable between batches: the barriers are passed.
            let commit = counters.commits.load(Ordering::SeqCst);
            for mut job in batch.drain(..) {
                counters.count(&job.mutation);
                let committed = Committed::Meta { changed: false };
                job.answer(Stage::Durable, Ok(Receipt { commit, committed }));
            }
            continue;
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
        // Visible first only where someone acts on it: a received block, off peak. Local
        // writes and metadata are waited for until durable, and load (a full batch) wants one
        // transaction per fsync.
        let at_once = !backend.defers_durability()
            || batch.len() == max_batch
            || !batch
                .iter()
                .any(|job| matches!(job.mutation, Mutation::Ingest { .. }));
        stale = !commit_batch(&backend, &mut cx, &mut batch, &counters, &index, at_once);
    }
}

/// Runs and commits one batch — durably `at_once`, or visibly and then durably — and answers
/// every job at each stage. Returns false if the batch rolled back or its durable commit
/// failed (the cache may then hold changes that are not durable and must be reloaded).
///
/// The in-memory sync index takes the batch's changes once it is visible and before any job
/// is answered: a writer that waited for its ticket reads its own change there.
fn commit_batch(
    backend: &Backend,
    cx: &mut Context,
    batch: &mut Vec<Job>,
    counters: &Counters,
    index: &sync::Shared,
    at_once: bool,
) -> bool {
    let mut results: Vec<Result<Committed, CommitError>> = Vec::with_capacity(batch.len());
    let outcome = std::thread::scope(|scope| {
        let ahead = cx.sync.start(scope, batch.len());
        let run = std::panic::catch_unwind(AssertUnwindSafe(|| {
            let body = |tx: &mut dyn WriteTx| {
                for job in batch.iter() {
                    match mutation::run(tx, cx, &job.mutation) {
                        Ok(c) => results.push(Ok(c)),
                        Err(Failure::Refused(e)) => results.push(Err(e)),
                        Err(Failure::Abort(e)) => return Err(e),
                    }
                }
                sync::finish(tx, &mut cx.sync, ahead)
            };
            if at_once {
                backend.write(body)
            } else {
                backend.write_visible(body)
            }
        }));
        // The threads computing points ahead end when their channels close, and the scope
        // waits for them: close the channels whatever happened, a panic included.
        cx.sync.stop_ahead();
        match run {
            Ok(outcome) => outcome,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    });
    let prepared = match outcome {
        Ok(prepared) => prepared,
        Err(e) => {
            cx.sync.reset();
            fail_all(batch, &CommitError::Storage(e), counters);
            return false;
        }
    };
    index.apply(prepared);
    // The durable commit that carries the batch: this one, or the persist just below.
    let commit = counters.commits.load(Ordering::SeqCst) + 1;
    let stage = if at_once {
        Stage::Durable
    } else {
        Stage::Visible
    };
    if at_once {
        counters.commits.fetch_add(1, Ordering::SeqCst);
    }
    let mut visible = Vec::with_capacity(if at_once { 0 } else { batch.len() });
    for (mut job, result) in batch.drain(..).zip(results) {
        match result {
            Ok(committed) => {
                let receipt = Receipt { commit, committed };
                if at_once {
                    counters.count(&job.mutation);
                    job.answer(stage, Ok(receipt));
                } else {
                    job.answer(stage, Ok(receipt.clone()));
                    visible.push((job, receipt));
                }
            }
            Err(e) => {
                counters.refused.fetch_add(1, Ordering::Relaxed);
                job.answer(stage, Err(e));
            }
        }
    }
    if at_once {
        return true;
    }
    if let Err(e) = backend.persist() {
        counters.failed_batches.fetch_add(1, Ordering::Relaxed);
        let error = CommitError::Storage(e);
        for (mut job, _) in visible {
            job.answer(Stage::Durable, Err(error.clone()));
        }
        return false;
    }
    counters.commits.fetch_add(1, Ordering::SeqCst);
    for (mut job, receipt) in visible {
        counters.count(&job.mutation);
        job.answer(Stage::Durable, Ok(receipt));
    }
    true
}

fn fail_all(batch: &mut Vec<Job>, error: &CommitError, counters: &Counters) {
    counters.failed_batches.fetch_add(1, Ordering::Relaxed);
    for mut job in batch.drain(..) {
        job.answer(Stage::Visible, Err(error.clone()));
    }
}
