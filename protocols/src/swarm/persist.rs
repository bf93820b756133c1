//! Persistence off the event loop: the store commits and calls back, the behaviour polls the
//! results.
//!
//! ```text
//!  event loop                 store committer
//!  store.submit_notify(m) ──▶ queue, group commit; at the persist's stage (or on failure):
//!  poll_result(cx) ◀──────── futures channel ◀── callback: (token, result)
//! ```
//!
//! Nothing on the event loop waits for an fsync, and no thread sits between the committer and
//! the loop: the committer's callback sends the result into the channel, which wakes the
//! loop (one wake-up per result; a waiter thread in between was a second one on every local
//! write's and every received block's path). Results come in the order the store reaches
//! their stages: a received block that is visible is answered before a local write submitted
//! earlier is durable. Every persist is answered on its own token, so the coordinator takes
//! them in any order.
//!
//! The event loop blocks only as back-pressure: while the store's own queue is full, or while
//! `max_in_flight` persists are unanswered (it then waits for the oldest answer, which the
//! committer gives without the loop's help, so that cannot deadlock). The result channel
//! holds at most the persists in flight.

use std::collections::VecDeque;
use std::task::{Context, Poll};

use futures::StreamExt as _;
use futures::channel::mpsc::{UnboundedReceiver, UnboundedSender, unbounded};
use hypha_store::{CommitError, Committed, Mutation, Stage, Store};

use crate::node::PersistToken;

/// The result of one persist, as [`Node::handle_persisted`](crate::node::Node::handle_persisted)
/// takes it.
pub(super) type Persisted = (PersistToken, Result<Committed, CommitError>);

/// Submits mutations to the store and hands their results back.
pub(super) struct Persister {
    answers: UnboundedSender<Persisted>,
    results: UnboundedReceiver<Persisted>,
    /// Results taken off the channel while waiting for room (back-pressure), handed out
    /// first.
    ready: VecDeque<Persisted>,
    /// Persists submitted and not yet handed out.
    in_flight: usize,
    max_in_flight: usize,
}

impl Persister {
    /// A persister with at most `max_in_flight` persists unanswered.
    pub(super) fn new(max_in_flight: usize) -> Persister {
        let (answers, results) = unbounded();
        Persister {
            answers,
            results,
            ready: VecDeque::new(),
            in_flight: 0,
            max_in_flight: max_in_flight.max(1),
        }
    }

    /// Submits `mutation`; its result comes out of [`poll_result`](Persister::poll_result)
    /// once it reaches `until` (or failed). Blocks only while the store's queue is full or
    /// `max_in_flight` persists are unanswered (back-pressure).
    pub(super) fn submit(
        &mut self,
        store: &Store,
        token: PersistToken,
        mutation: Mutation,
        until: Stage,
    ) {
        while self.in_flight - self.ready.len() >= self.max_in_flight {
            // invariant: this persister holds a sender, so the channel never ends.
            let result = futures::executor::block_on(self.results.next())
                .expect("the persister holds a sender");
            self.ready.push_back(result);
        }
        self.in_flight += 1;
        let answers = self.answers.clone();
        store.submit_notify(mutation, until, move |result| {
            // The behaviour is gone when this fails: nobody waits for the result.
            let _ = answers.unbounded_send((token, result.map(|receipt| receipt.committed)));
        });
    }

    /// The next result, once at its stage (or failed). Registers the waker when there is none.
    pub(super) fn poll_result(&mut self, cx: &mut Context<'_>) -> Poll<Persisted> {
        let next = match self.ready.pop_front() {
            Some(result) => result,
            None => match self.results.poll_next_unpin(cx) {
                Poll::Ready(Some(result)) => result,
                // The channel never ends while this persister holds a sender.
                Poll::Ready(None) | Poll::Pending => return Poll::Pending,
            },
        };
        self.in_flight -= 1;
        Poll::Ready(next)
    }
}
