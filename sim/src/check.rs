//! The checkers, and the independent model of who follows what that they judge against.
//!
//! The [`Model`] is built from the actions a run takes (who wrote, followed, synced, set a
//! replicator, connected) — never from the coordinators' own state — so a coordinator that
//! follows too much or forgets what it owes is caught.
//!
//! | checker | when | rule |
//! |---|---|---|
//! | [`Checker::AckedWriteLost`] | after every crash, stop, wait and scenario step | every local write acknowledged durable is in its host's store; a replicator ack is only sent for a document the target holds durably when the source hears of it |
//! | [`Checker::OutboxForgotten`] | same | for a replicator S→T, a document in scope whose heads T lacks is still owed durably: in S's outbox, or S's catch-up marker is set (checked while S is idle and T is not connected to it: while connected, the catch-up push of every anti-entropy round owes T its whole scope; and not after S cleared its catch-up marker for T until T is seen caught up: the coordinator then relies on the catch-up push of every reconnection, not on the outbox) |
//! | [`Checker::Scope`] | same | a host holds only documents it wrote, follows (collection or document), synced on demand, or is a replicator target for |
//! | [`Checker::QueueBound`] | same | every outbox within the store's bound, every disk queue within the coordinator's |
//! | [`Checker::Convergence`] | after a wait with no partition in force | a follower holds every head its linked peers hold for what it follows; a replicator target every head of its scope; equal heads mean equal documents |

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use hypha_crdt::{Cid, DocId};
use hypha_protocols::node::Peer;

use crate::World;

/// Which rule a violation breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Checker {
    /// Followers and replicator targets did not converge after healing.
    Convergence,
    /// A write acknowledged as durable is gone.
    AckedWriteLost,
    /// A replicator source no longer owes a document its target lacks.
    OutboxForgotten,
    /// A host holds a document nothing entitles it to.
    Scope,
    /// A queue is past its bound.
    QueueBound,
}

/// One broken rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The rule.
    pub checker: Checker,
    /// What broke it.
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.checker, self.detail)
    }
}

/// Who follows what, wrote what, and replicates to whom, as the actions say.
#[derive(Debug, Clone, Default)]
pub(crate) struct Model {
    follows_c: Vec<BTreeSet<String>>,
    follows_d: Vec<BTreeSet<DocId>>,
    local: Vec<BTreeSet<DocId>>,
    acked: Vec<BTreeSet<Cid>>,
    synced: Vec<BTreeSet<DocId>>,
    allowed: Vec<BTreeSet<DocId>>,
    replicators: BTreeMap<(u16, u16), (BTreeSet<String>, BTreeSet<DocId>)>,
    links: BTreeSet<(u16, u16)>,
    /// Replicator acks already judged.
    acks_seen: usize,
}

impl Model {
    pub(crate) fn new(n: usize) -> Model {
        Model {
            follows_c: vec![BTreeSet::new(); n],
            follows_d: vec![BTreeSet::new(); n],
            local: vec![BTreeSet::new(); n],
            acked: vec![BTreeSet::new(); n],
            synced: vec![BTreeSet::new(); n],
            allowed: vec![BTreeSet::new(); n],
            ..Model::default()
        }
    }

    pub(crate) fn local_write(&mut self, i: u16, doc: DocId, cid: Cid) {
        self.local[usize::from(i)].insert(doc);
        self.acked[usize::from(i)].insert(cid);
    }

    pub(crate) fn follow_collection(&mut self, i: u16, name: &str) {
        self.follows_c[usize::from(i)].insert(name.to_owned());
    }

    pub(crate) fn follow_document(&mut self, i: u16, doc: DocId) {
        self.follows_d[usize::from(i)].insert(doc);
    }

    pub(crate) fn synced_document(&mut self, i: u16, doc: DocId) {
        self.synced[usize::from(i)].insert(doc);
    }

    pub(crate) fn set_replicator(&mut self, from: u16, to: u16, colls: &[&str], docs: &[DocId]) {
        self.replicators.insert(
            (from, to),
            (
                colls.iter().map(|c| (*c).to_owned()).collect(),
                docs.iter().copied().collect(),
            ),
        );
        self.links.insert((from.min(to), from.max(to)));
    }

    /// A deleted replicator's target may keep what it was owed when it was deleted.
    pub(crate) fn delete_replicator(&mut self, from: u16, to: u16, held: &BTreeMap<DocId, String>) {
        if let Some((colls, docs)) = self.replicators.remove(&(from, to)) {
            for (d, c) in held {
                if colls.contains(c) || docs.contains(d) {
                    self.allowed[usize::from(to)].insert(*d);
                }
            }
        }
    }

    pub(crate) fn link(&mut self, a: u16, b: u16) {
        self.links.insert((a.min(b), a.max(b)));
    }

    fn entitled(&self, i: u16, doc: &DocId, collection: &str) -> bool {
        let x = usize::from(i);
        self.local[x].contains(doc)
            || self.follows_c[x].contains(collection)
            || self.follows_d[x].contains(doc)
            || self.synced[x].contains(doc)
            || self.allowed[x].contains(doc)
            || self
                .replicators
                .iter()
                .any(|((_, to), (c, d))| *to == i && (c.contains(collection) || d.contains(doc)))
    }

    fn peers(&self, i: u16) -> BTreeSet<u16> {
        self.links
            .iter()
            .filter_map(|&(a, b)| (a == i).then_some(b).or((b == i).then_some(a)))
            .collect()
    }
}

fn v(checker: Checker, detail: String) -> Violation {
    Violation { checker, detail }
}

/// The checkers valid at any moment: durability, owed documents, scope, bounds.
pub(crate) fn safety(w: &mut World) -> Vec<Violation> {
    let mut out = Vec::new();
    let ids: Vec<u16> = w.ids().collect();
    // Acknowledged local writes.
    for &i in &ids {
        let acked = w.model.acked[usize::from(i)].clone();
        w.with_store(i, |s| {
            for cid in &acked {
                if !s.contains(cid).unwrap_or(false) {
                    out.push(v(
                        Checker::AckedWriteLost,
                        format!("n{i} lost its acknowledged write {cid}"),
                    ));
                }
            }
        });
    }
    // Replicator acks, judged when the source heard them (recorded by the network).
    {
        let net = w.net();
        for bad in &net.bad_acks[w.model.acks_seen..] {
            out.push(v(Checker::AckedWriteLost, bad.clone()));
        }
        let seen = net.bad_acks.len();
        drop(net);
        w.model.acks_seen = seen;
    }
    // Scope.
    for &i in &ids {
        for (doc, collection) in w.docs_held(i) {
            if !w.model.entitled(i, &doc, &collection) {
                out.push(v(
                    Checker::Scope,
                    format!(
                        "n{i} holds {collection} document {doc}, which it neither wrote, follows, synced nor is a replicator target for"
                    ),
                ));
            }
        }
    }
    // Owed documents and bounds.
    let max_outbox = w.options().max_outbox_per_peer;
    let replicators = w.model.replicators.clone();
    for ((from, to), (colls, docs)) in replicators {
        let key = to.to_key();
        let (idle, outbox, disk) = {
            let net = w.net();
            let host = &net.hosts[usize::from(from)];
            let idle = host.node.as_ref().is_some_and(|n| n.is_idle()) && host.disk_len() == 0;
            let outbox = host.store.outbox(&key, usize::MAX).ok();
            (idle, outbox, host.disk_len())
        };
        if disk > 65_536 {
            out.push(v(
                Checker::QueueBound,
                format!("n{from} has {disk} persists queued"),
            ));
        }
        let Some(outbox) = outbox else { continue };
        if outbox.len > max_outbox {
            out.push(v(
                Checker::QueueBound,
                format!(
                    "n{from}'s outbox for n{to} holds {} > {max_outbox}",
                    outbox.len
                ),
            ));
        }
        // While the target is connected, the catch-up push session of every anti-entropy
        // round owes it everything in scope; the outbox is the only record while it is not.
        let connected =
            w.connections(from).contains_key(&to) || w.connections(to).contains_key(&from);
        if !idle || outbox.catch_up || connected {
            continue;
        }
        let owed: BTreeSet<DocId> = outbox.documents.iter().copied().collect();
        let held = w.docs_held(from);
        let mut lacking = Vec::new();
        for (doc, collection) in held {
            if !(colls.contains(&collection) || docs.contains(&doc)) || owed.contains(&doc) {
                continue;
            }
            let heads = w.with_store(from, |s| s.state(&doc).ok().flatten().map(|s| s.heads));
            let Some(heads) = heads else { continue };
            let target_knows =
                w.with_store(to, |s| s.collection(&collection).ok().flatten().is_some());
            if !target_knows {
                continue;
            }
            let lacks = w.with_store(to, |s| {
                heads.iter().any(|h| !s.is_applied(h).unwrap_or(false))
            });
            if lacks {
                lacking.push(v(
                    Checker::OutboxForgotten,
                    format!(
                        "n{to} lacks {collection} document {doc} of n{from}'s replicator scope, and n{from} no longer owes it"
                    ),
                ));
            }
        }
        // Once the source cleared its catch-up marker, the obligation moved to the catch-up
        // push that every (re)connection runs, until the target is seen caught up again.
        if w.net().catching_up.contains(&(from, to)) {
            if lacking.is_empty() {
                w.net_mut().catching_up.remove(&(from, to));
            }
            continue;
        }
        out.extend(lacking);
    }
    out
}

/// Every checker: [`safety`], and convergence when `healed`.
pub(crate) fn all(w: &mut World, healed: bool) -> Vec<Violation> {
    let mut out = safety(w);
    if healed {
        out.extend(convergence(w));
    }
    out
}

fn heads_of(w: &World, i: u16, doc: &DocId) -> Option<Vec<Cid>> {
    w.with_store(i, |s| s.state(doc).ok().flatten().map(|s| s.heads))
}

/// Does `i` hold `m`'s heads of `doc` (or newer)?
fn covers(w: &World, i: u16, m: u16, doc: &DocId) -> bool {
    let Some(theirs) = heads_of(w, m, doc) else {
        return true;
    };
    w.with_store(i, |s| {
        theirs.iter().all(|h| s.is_applied(h).unwrap_or(false))
    })
}

fn convergence(w: &World) -> Vec<Violation> {
    let mut out = Vec::new();
    let ids: Vec<u16> = w.ids().filter(|&i| w.is_running(i)).collect();
    let held: BTreeMap<u16, BTreeMap<DocId, String>> =
        ids.iter().map(|&i| (i, w.docs_held(i))).collect();
    for &n in &ids {
        for m in w.model.peers(n) {
            if !held.contains_key(&m) {
                continue;
            }
            for (doc, collection) in &held[&m] {
                let follows = w.model.follows_c[usize::from(n)].contains(collection)
                    || w.model.follows_d[usize::from(n)].contains(doc);
                if follows && !covers(w, n, m, doc) {
                    out.push(v(
                        Checker::Convergence,
                        format!(
                            "n{n} follows {collection} document {doc} but lacks heads n{m} holds"
                        ),
                    ));
                }
            }
        }
    }
    for ((from, to), (colls, docs)) in &w.model.replicators {
        if !held.contains_key(from) || !held.contains_key(to) {
            continue;
        }
        for (doc, collection) in &held[from] {
            let target_knows =
                w.with_store(*to, |s| s.collection(collection).ok().flatten().is_some());
            if (colls.contains(collection) || docs.contains(doc))
                && target_knows
                && !covers(w, *to, *from, doc)
            {
                out.push(v(
                    Checker::Convergence,
                    format!("replicator target n{to} lacks heads of n{from}'s {collection} document {doc}"),
                ));
            }
        }
    }
    // Equal heads, equal documents.
    let mut seen: BTreeMap<(DocId, Vec<Cid>), (u16, String)> = BTreeMap::new();
    for &i in &ids {
        for (doc, collection) in &held[&i] {
            let Some(heads) = heads_of(w, i, doc) else {
                continue;
            };
            let json = w.with_store(i, |s| {
                let d = s.document(doc).ok().flatten();
                let deleted = s.state(doc).ok().flatten().is_some_and(|s| s.deleted);
                format!("{d:?} deleted={deleted}")
            });
            match seen.get(&(*doc, heads.clone())) {
                Some((j, other)) if *other != json => out.push(v(
                    Checker::Convergence,
                    format!("n{i} and n{j} hold {collection} document {doc} at the same heads with different states"),
                )),
                Some(_) => {}
                None => {
                    seen.insert((*doc, heads), (i, json));
                }
            }
        }
    }
    out
}
