//! Persistence off the event loop: the store commits, one waiter thread waits, the behaviour
//! polls the results.
//!
//! ```text
//!  event loop                 store committer            waiter thread
//!  store.submit(m) ─────────▶ queue, group commit
//!  (token, ticket, until) ── bounded std channel ──────▶ ticket.wait_until(until)
//!                                                        (in submission order)
//!  poll_result(cx) ◀──────── futures channel ─────────── (token, result)
//! ```
//!
//! Nothing on the event loop waits for an fsync. It blocks only as back-pressure, when the
//! store's own queue or the ticket channel is full — and neither waits on the event loop, so
//! that cannot deadlock. The result channel has no bound of its own: it holds at most the
//! persists submitted and not yet answered, which the coordinator bounds (`max_persists` for
//! received blocks; the rest follow local writes and acknowledgements).

use std::collections::VecDeque;
use std::io;
use std::sync::mpsc::{self, SyncSender};
use std::task::{Context, Poll};
use std::thread::JoinHandle;

use futures::StreamExt as _;
use futures::channel::mpsc::{UnboundedReceiver, unbounded};
use hypha_store::{CommitError, Committed, Mutation, Stage, Store, Ticket};

use crate::node::PersistToken;

/// The result of one persist, as [`Node::handle_persisted`](crate::node::Node::handle_persisted)
/// takes it.
pub(super) type Persisted = (PersistToken, Result<Committed, CommitError>);

/// A ticket to wait for, and until when.
type Waiting = (PersistToken, Ticket, Stage);

/// Submits mutations to the store and hands their results back, in submission order.
pub(super) struct Persister {
    /// `None` once dropping: closing it stops the waiter.
    tickets: Option<SyncSender<Waiting>>,
    results: UnboundedReceiver<Persisted>,
    /// Results waited for on the event loop (only if the waiter were gone).
    ready: VecDeque<Persisted>,
    waiter: Option<JoinHandle<()>>,
}

impl Persister {
    /// Starts the waiter thread; at most `max_tickets` tickets wait for it.
    pub(super) fn start(max_tickets: usize) -> io::Result<Persister> {
        let (tickets, queue) = mpsc::sync_channel::<Waiting>(max_tickets.max(1));
        let (answers, results) = unbounded();
        let waiter = std::thread::Builder::new()
            .name("hypha-persist-waiter".into())
            .spawn(move || {
                while let Ok((token, mut ticket, until)) = queue.recv() {
                    let result = ticket.wait_until(until).map(|receipt| receipt.committed);
                    if answers.unbounded_send((token, result)).is_err() {
                        break; // The behaviour is gone.
                    }
                }
            })?;
        Ok(Persister {
            tickets: Some(tickets),
            results,
            ready: VecDeque::new(),
            waiter: Some(waiter),
        })
    }

    /// Submits `mutation`; its result comes out of [`poll_result`](Persister::poll_result)
    /// once it reaches `until`. Blocks only while the store's queue or the ticket channel is
    /// full (back-pressure).
    pub(super) fn submit(
        &mut self,
        store: &Store,
        token: PersistToken,
        mutation: Mutation,
        until: Stage,
    ) {
        let ticket = store.submit(mutation);
        let unsent = match &self.tickets {
            Some(tickets) => tickets.send((token, ticket, until)).err().map(|e| e.0),
            None => Some((token, ticket, until)),
        };
        if let Some((token, mut ticket, until)) = unsent {
            // The waiter is gone, which it never is while the persister lives: wait here
            // rather than lose the result.
            let result = ticket.wait_until(until).map(|receipt| receipt.committed);
            self.ready.push_back((token, result));
        }
    }

    /// The next result, once at its stage (or failed). Registers the waker when there is none.
    pub(super) fn poll_result(&mut self, cx: &mut Context<'_>) -> Poll<Persisted> {
        if let Some(result) = self.ready.pop_front() {
            return Poll::Ready(result);
        }
        match self.results.poll_next_unpin(cx) {
            Poll::Ready(Some(result)) => Poll::Ready(result),
            // The waiter stopped (it only does when its channel closes): nothing more comes.
            Poll::Ready(None) | Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for Persister {
    /// Stops the waiter once it has waited for every ticket already submitted.
    fn drop(&mut self) {
        self.tickets = None;
        if let Some(waiter) = self.waiter.take() {
            // The waiter cannot panic; if it did, there is nothing left to stop.
            let _ = waiter.join();
        }
    }
}
