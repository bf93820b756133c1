//! Walking a document's history from its heads back, iteratively and bounded.

use std::collections::{BTreeSet, BinaryHeap};

use crate::block::VerifiedBlock;
use crate::cid::Cid;

/// Read access to applied blocks by CID.
pub trait BlockSource {
    /// A storage failure.
    type Error: std::error::Error + Send + Sync + 'static;

    /// The applied block `cid`, if present.
    fn block(&self, cid: &Cid) -> Result<Option<VerifiedBlock>, Self::Error>;
}

/// A history walk that stopped early.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError<E: std::error::Error + 'static> {
    /// A block the walk reached is not stored.
    #[error("block {0} is not stored")]
    Missing(Cid),
    /// Storage failed.
    #[error("storage failed during history walk")]
    Store(#[source] E),
}

/// Walks from `heads` back to the genesis blocks, newest first (by priority, then CID), and
/// returns at most `limit` blocks. Each block appears once; the walk keeps an explicit heap
/// and visited set, never recursing, so any depth is safe.
///
/// The second value is `true` when the walk stopped at `limit` with blocks left.
///
/// # Errors
/// [`HistoryError`] when a reachable block is missing or storage fails.
pub fn history<S: BlockSource>(
    source: &S,
    heads: &[Cid],
    limit: usize,
) -> Result<(Vec<VerifiedBlock>, bool), HistoryError<S::Error>> {
    let mut out = Vec::new();
    let mut seen: BTreeSet<Cid> = BTreeSet::new();
    let mut frontier: BinaryHeap<(u64, Cid)> = BinaryHeap::new();
    let load = |cid: &Cid| -> Result<VerifiedBlock, HistoryError<S::Error>> {
        source
            .block(cid)
            .map_err(HistoryError::Store)?
            .ok_or(HistoryError::Missing(*cid))
    };
    let mut loaded = std::collections::BTreeMap::new();
    for head in heads {
        if seen.insert(*head) {
            let block = load(head)?;
            frontier.push((block.block().delta.priority, *head));
            loaded.insert(*head, block);
        }
    }
    while let Some((_, cid)) = frontier.pop() {
        if out.len() == limit {
            return Ok((out, true));
        }
        // invariant: every CID pushed on the frontier was loaded first.
        let block = loaded.remove(&cid).expect("frontier blocks are loaded");
        for parent in &block.block().heads {
            if seen.insert(*parent) {
                let parent_block = load(parent)?;
                frontier.push((parent_block.block().delta.priority, *parent));
                loaded.insert(*parent, parent_block);
            }
        }
        out.push(block);
    }
    Ok((out, false))
}
