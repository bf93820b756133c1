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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::{Author, Replica, parse_sdl};

    #[test]
    fn walks_newest_first_each_block_once_and_stops_at_the_limit() {
        let schema = parse_sdl("hypha", "type U { a: Int }").unwrap();
        let mut x = Replica::new(schema.clone(), Author::unsigned([1; 32]));
        let mut y = Replica::new(schema, Author::unsigned([2; 32]));
        let (doc, genesis) = x.create("U", &json!({"a": 0})).unwrap();
        y.ingest(&genesis).unwrap();
        // Two branches of depth 3 that merge: a diamond-shaped history of 8 blocks.
        let mut made = vec![genesis];
        for i in 1..=3 {
            made.push(x.update(doc, &json!({"a": i})).unwrap());
            made.push(y.update(doc, &json!({"a": -i})).unwrap());
        }
        for block in &made {
            x.ingest(block).unwrap();
        }
        made.push(x.update(doc, &json!({"a": 100})).unwrap());
        let heads = x.state(doc).unwrap().heads.clone();
        let (walk, truncated) = history(x.dag(), &heads, 100).unwrap();
        assert!(!truncated);
        assert_eq!(walk.len(), made.len());
        let priorities: Vec<u64> = walk.iter().map(|b| b.block().delta.priority).collect();
        assert!(
            priorities.windows(2).all(|w| w[0] >= w[1]),
            "newest first: {priorities:?}"
        );
        assert_eq!(walk.last().unwrap().cid(), made[0].cid());
        let (walk, truncated) = history(x.dag(), &heads, 3).unwrap();
        assert!(truncated);
        assert_eq!(walk.len(), 3);
    }

    #[test]
    fn a_missing_block_is_an_error() {
        let schema = parse_sdl("hypha", "type U { a: Int }").unwrap();
        let mut x = Replica::new(schema.clone(), Author::unsigned([1; 32]));
        let (doc, _) = x.create("U", &json!({"a": 0})).unwrap();
        let update = x.update(doc, &json!({"a": 1})).unwrap();
        let empty = crate::MemoryDag::new();
        let err = history(&empty, &[update.cid()], 10).unwrap_err();
        assert!(matches!(err, HistoryError::Missing(cid) if cid == update.cid()));
    }
}
