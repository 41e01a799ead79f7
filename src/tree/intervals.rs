//! A multiset of block ranges, each named by a `u32` id, for "which ranges cover these
//! blocks", one descent per range found: the index of blocking pins and of leases.
//!
//! Entries live in a [`BPlus`] keyed by `start << 64 | id` (so equal ranges under
//! different ids are distinct entries), with each range's end as its value and the
//! furthest end under each child as the summary. The ranges that overlap `r` are then
//! exactly the entries below `(r.end, 0)` whose end passes `r.start`, and the summaries
//! lead straight to the last of them; each further one costs one more descent.

use core::ops::Range;

use super::bplus::BPlus;
use super::{MaxValue, pair, unpair};

#[inline]
fn key(start: u64, id: u32) -> u128 {
    pair(start, u64::from(id))
}

#[inline]
fn unkey(k: u128) -> (u64, u32) {
    let (start, id) = unpair(k);
    (start, id as u32)
}

/// Ranges with ids; see the module docs.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Intervals {
    tree: BPlus<u128, u64, MaxValue>,
}

impl Intervals {
    pub(crate) const fn new() -> Self {
        Intervals { tree: BPlus::new() }
    }

    /// Bytes held by the tree's arenas.
    pub(crate) fn capacity_bytes(&self) -> usize {
        self.tree.capacity_bytes()
    }

    /// Adds `r` (non-empty) under `id`, which no entry starting at `r.start` has yet.
    #[inline]
    pub(crate) fn insert(&mut self, r: &Range<u64>, id: u32) {
        debug_assert!(r.start < r.end);
        self.tree.insert(key(r.start, id), r.end);
    }

    /// Removes the entry starting at `start` under `id`; whether there was one.
    #[inline]
    pub(crate) fn remove(&mut self, start: u64, id: u32) -> bool {
        match self.tree.find(key(start, id)) {
            Some(pos) => {
                self.tree.remove(pos);
                true
            }
            None => false,
        }
    }

    /// The overlapping entry whose id `keep` accepts with the greatest key at most
    /// `upto`.
    #[inline]
    fn last_overlapping(
        &self,
        upto: u128,
        r: &Range<u64>,
        keep: impl Fn(u32) -> bool,
    ) -> Option<(Range<u64>, u32)> {
        let after = r.start;
        let pos = self.tree.last_matching(
            upto,
            |s| s.0 > after,
            |&k, &end| end > after && keep(unkey(k).1),
        )?;
        let (k, end) = self.tree.get(pos);
        let (start, id) = unkey(k);
        Some((start..end, id))
    }

    /// The first block of `r` (non-empty) that some entry covers: one descent for an
    /// entry over `r.start`, else one for the first entry starting inside `r`.
    pub(crate) fn first_covered(&self, r: &Range<u64>) -> Option<u64> {
        let at = r.start..r.start + 1;
        if self
            .last_overlapping(key(r.start, u32::MAX), &at, |_| true)
            .is_some()
        {
            return Some(r.start);
        }
        let pos = self.tree.ceil(key(r.start + 1, 0), false)?;
        let (start, _) = unkey(self.tree.get(pos).0);
        (start < r.end).then_some(start)
    }

    /// Calls `f` with every entry whose id `keep` accepts that shares a block with `r`
    /// (non-empty), unclipped, from the greatest start down.
    pub(crate) fn for_each_overlapping(
        &self,
        r: &Range<u64>,
        keep: impl Fn(u32) -> bool + Copy,
        mut f: impl FnMut(Range<u64>, u32),
    ) {
        let mut upto = key(r.end - 1, u32::MAX);
        while let Some((found, id)) = self.last_overlapping(upto, r, keep) {
            let k = key(found.start, id);
            f(found, id);
            match k.checked_sub(1) {
                Some(below) => upto = below,
                None => break,
            }
        }
    }

    /// The entries that share a block with `r` (non-empty) and start at or after
    /// `from`, from the greatest key at most `upto` (the greatest of all when `None`)
    /// down, each given to `f` until it refuses one. Returns the refused entry's key,
    /// the `upto` to go on from, or `None` when `f` took them all. One descent per
    /// entry given. (Only the shared layer's pressure rounds ask.)
    #[cfg_attr(not(feature = "std"), allow(dead_code))]
    pub(crate) fn visit_overlapping(
        &self,
        r: &Range<u64>,
        from: u64,
        upto: Option<u128>,
        mut f: impl FnMut(Range<u64>, u32) -> bool,
    ) -> Option<u128> {
        let mut upto = upto.unwrap_or(key(r.end - 1, u32::MAX));
        while let Some((found, id)) = self.last_overlapping(upto, r, |_| true) {
            if found.start < from {
                return None;
            }
            let k = key(found.start, id);
            if !f(found, id) {
                return Some(k);
            }
            upto = k.checked_sub(1)?;
        }
        None
    }

    /// Every entry, in key order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (Range<u64>, u32)> + '_ {
        self.tree.iter().map(|(k, end)| {
            let (start, id) = unkey(k);
            (start..end, id)
        })
    }

    /// The tree's shape and summaries, recomputed.
    pub(crate) fn check(&self) -> Result<(), alloc::string::String> {
        self.tree.check()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::splitmix::SplitMix;
    use alloc::vec::Vec;

    const ANY: fn(u32) -> bool = |_| true;

    #[test]
    fn matches_a_plain_list() {
        let n = 300u64;
        let mut rng = SplitMix::new(11);
        let mut ix = Intervals::new();
        let mut list: Vec<(Range<u64>, u32)> = Vec::new();
        let mut next_id = 0u32;
        for step in 0..6000 {
            if list.is_empty() || rng.below(100) < 55 {
                let s = rng.below(n);
                // Mostly short ranges, a few long ones, and repeats of the same start.
                let len = if rng.below(10) == 0 {
                    1 + rng.below(n - s)
                } else {
                    1 + rng.below(4.min(n - s))
                };
                ix.insert(&(s..s + len), next_id);
                list.push((s..s + len, next_id));
                next_id += 1;
            } else {
                let (r, id) = list.swap_remove(rng.below(list.len() as u64) as usize);
                assert!(ix.remove(r.start, id), "step {step}: remove {r:?} #{id}");
                assert!(!ix.remove(r.start, id), "step {step}: removed twice");
            }
            assert_eq!(ix.iter().count(), list.len());
            if step % 50 == 0 {
                ix.check().unwrap();
            }
            let s = rng.below(n);
            let q = s..s + 1 + rng.below(n - s);
            // Only even ids: what a filtered query must see.
            let mut seen = Vec::new();
            ix.for_each_overlapping(&q, |id| id % 2 == 0, |r, id| seen.push((r, id)));
            let mut expect: Vec<(Range<u64>, u32)> = list
                .iter()
                .filter(|(r, id)| id % 2 == 0 && r.start < q.end && q.start < r.end)
                .cloned()
                .collect();
            seen.sort_by_key(|(r, id)| (r.start, *id));
            expect.sort_by_key(|(r, id)| (r.start, *id));
            assert_eq!(seen, expect, "step {step}: overlapping {q:?} with even ids");
            let first = q
                .clone()
                .find(|&b| list.iter().any(|(r, _)| r.contains(&b)));
            assert_eq!(
                ix.first_covered(&q),
                first,
                "step {step}: first covered in {q:?}"
            );
            let mut seen = Vec::new();
            ix.for_each_overlapping(&q, ANY, |r, id| seen.push((r, id)));
            let mut expect: Vec<(Range<u64>, u32)> = list
                .iter()
                .filter(|(r, _)| r.start < q.end && q.start < r.end)
                .cloned()
                .collect();
            seen.sort_by_key(|(r, id)| (r.start, *id));
            expect.sort_by_key(|(r, id)| (r.start, *id));
            assert_eq!(seen, expect, "step {step}: overlapping {q:?}");
            // A visit from a start, taking `take` entries and then refusing one, goes
            // on from the refused key, and together the two visits see what a whole
            // visit from that start sees, in descending key order.
            let from = rng.below(n);
            let mut want: Vec<(Range<u64>, u32)> = expect
                .iter()
                .filter(|(r, _)| r.start >= from)
                .cloned()
                .collect();
            want.reverse();
            let take = rng.below(4) as usize;
            let mut got = Vec::new();
            let rest = ix.visit_overlapping(&q, from, None, |r, id| {
                if got.len() == take {
                    return false;
                }
                got.push((r, id));
                true
            });
            assert_eq!(
                rest.is_some(),
                want.len() > take,
                "step {step}: visit {q:?}"
            );
            if let Some(upto) = rest {
                let more = ix.visit_overlapping(&q, from, Some(upto), |r, id| {
                    got.push((r, id));
                    true
                });
                assert_eq!(more, None);
            }
            assert_eq!(got, want, "step {step}: visit {q:?} from {from}");
        }
    }

    #[test]
    fn ranges_at_the_top_of_the_space() {
        let mut ix = Intervals::new();
        ix.insert(&(u64::MAX - 3..u64::MAX), 0);
        ix.insert(&(0..1), u32::MAX);
        let found = |ix: &Intervals, q: Range<u64>, keep: fn(u32) -> bool| {
            let mut seen = Vec::new();
            ix.for_each_overlapping(&q, keep, |r, id| seen.push((r, id)));
            seen
        };
        let top = u64::MAX - 1..u64::MAX;
        assert_eq!(found(&ix, top.clone(), ANY), [(u64::MAX - 3..u64::MAX, 0)]);
        assert!(found(&ix, top, |id| id != 0).is_empty());
        assert_eq!(found(&ix, 0..4, ANY), [(0..1, u32::MAX)]);
        assert!(ix.remove(0, u32::MAX));
        assert!(found(&ix, 0..u64::MAX - 3, ANY).is_empty());
    }
}
