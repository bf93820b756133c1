//! [`Recent`]: a bounded map of what the committer touched lately, kept across batches.
//!
//! Two generations: entries go into the younger one; when it reaches its bound (in entries or
//! in weight) it becomes the older one and the older one is dropped. A lookup sees both, so
//! between one and two generations' worth of the most recently written entries are held: a
//! working set that fits in one generation is always found, also when it is visited in a
//! cycle (where a plain LRU of the same size would find nothing). Putting, taking and getting
//! are O(1); no iteration order is ever observed.
//!
//! The committer's caches ([`Cache`](crate::mutation::Cache)) are write-through: an entry is
//! put only together with the write of the same data in the transaction, so every entry is
//! what the store holds — as long as the transaction commits. A batch that rolls back
//! throws every such cache away (the committer reloads its [`Cache`] whole).

use std::collections::HashMap;
use std::hash::Hash;

/// A fast hasher, seeded per process: keys are CIDs and docIDs a peer chooses, so a fixed
/// seed would let it aim collisions.
pub(crate) type RandomState = foldhash::fast::RandomState;

/// A bounded two-generation map (see the [module docs](self)).
#[derive(Debug, Clone)]
pub(crate) struct Recent<K, V> {
    young: HashMap<K, (V, usize), RandomState>,
    old: HashMap<K, (V, usize), RandomState>,
    /// The summed weight of `young`.
    young_weight: usize,
    /// The most entries in one generation.
    max_entries: usize,
    /// The most summed weight in one generation.
    max_weight: usize,
}

impl<K: Eq + Hash, V> Recent<K, V> {
    /// A map holding at most `max_entries` and `max_weight` per generation.
    pub(crate) fn new(max_entries: usize, max_weight: usize) -> Recent<K, V> {
        Recent {
            young: HashMap::default(),
            old: HashMap::default(),
            young_weight: 0,
            max_entries,
            max_weight,
        }
    }

    /// The entry of `key`, if held.
    pub(crate) fn get(&self, key: &K) -> Option<&V> {
        self.young
            .get(key)
            .or_else(|| self.old.get(key))
            .map(|(v, _)| v)
    }

    /// Removes and returns the entry of `key`, if held.
    pub(crate) fn take(&mut self, key: &K) -> Option<V> {
        if let Some((v, weight)) = self.young.remove(key) {
            self.young_weight -= weight;
            return Some(v);
        }
        self.old.remove(key).map(|(v, _)| v)
    }

    /// Holds `value` for `key` (replacing what was held), weighing `weight`. An entry heavier
    /// than a whole generation is not held.
    pub(crate) fn put(&mut self, key: K, value: V, weight: usize) {
        self.take(&key);
        if weight > self.max_weight {
            return;
        }
        if self.young.len() >= self.max_entries || self.young_weight + weight > self.max_weight {
            // The dropped generation's table is reused: no rehashing as the new one grows.
            std::mem::swap(&mut self.young, &mut self.old);
            self.young.clear();
            self.young_weight = 0;
        }
        self.young.insert(key, (value, weight));
        self.young_weight += weight;
    }

    /// How many entries are held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.young.len() + self.old.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cycle_that_fits_one_generation_is_always_found() {
        let mut recent = Recent::new(4, usize::MAX);
        for round in 0..5 {
            for key in 0..4 {
                if round > 0 {
                    assert_eq!(recent.get(&key), Some(&(round - 1)), "key {key}");
                }
                recent.put(key, round, 1);
            }
        }
        assert!(recent.len() <= 8);
    }

    #[test]
    fn generations_bound_entries_and_weight() {
        let mut recent = Recent::new(3, 10);
        for key in 0..100 {
            recent.put(key, key, 1);
            assert!(recent.len() <= 6);
        }
        // The newest are held, the oldest gone.
        assert_eq!(recent.get(&99), Some(&99));
        assert_eq!(recent.get(&90), None);

        let mut heavy = Recent::new(100, 10);
        heavy.put(1, 1, 6);
        heavy.put(2, 2, 6); // does not fit beside 1: a new generation starts
        heavy.put(3, 3, 6); // 1 is dropped
        assert_eq!(heavy.get(&1), None);
        assert_eq!((heavy.get(&2), heavy.get(&3)), (Some(&2), Some(&3)));
        heavy.put(4, 4, 11); // heavier than a generation: not held
        assert_eq!(heavy.get(&4), None);
    }

    #[test]
    fn take_removes_from_either_generation_and_keeps_the_weight_right() {
        let mut recent = Recent::new(2, 10);
        recent.put("a", 1, 5);
        recent.put("b", 2, 5);
        recent.put("c", 3, 5); // a and b are now the older generation
        assert_eq!(recent.take(&"a"), Some(1));
        assert_eq!(recent.take(&"a"), None);
        assert_eq!(recent.take(&"c"), Some(3));
        // c's weight was given back: two entries of 5 fit in the young generation again.
        recent.put("d", 4, 5);
        recent.put("e", 5, 5);
        assert_eq!(recent.get(&"b"), Some(&2));
        // Replacing an entry does not count it twice.
        recent.put("e", 6, 5);
        assert_eq!(recent.get(&"e"), Some(&6));
        assert_eq!(recent.get(&"d"), Some(&4));
    }
}
