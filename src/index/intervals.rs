//! A multiset of block ranges, each named by a `u32` id, for "does anything cover
//! these blocks" and "which ranges do" in one descent each: the pin registry's index.
//!
//! Entries live in a [`BPlus`] keyed by `start << 64 | id` (so equal ranges under
//! different ids are distinct entries), with each range's end as its value and the
//! furthest end under each child as the summary. The ranges that overlap `r` are then
//! exactly the entries below `(r.end, 0)` whose end passes `r.start`, and the summaries
//! lead straight to the last of them; each further one costs one more descent.

use alloc::vec::Vec;
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

    /// Whether any entry whose id `keep` accepts shares a block with `r` (non-empty).
    #[inline]
    pub(crate) fn overlaps(&self, r: &Range<u64>, keep: impl Fn(u32) -> bool) -> bool {
        self.last_overlapping(key(r.end - 1, u32::MAX), r, keep)
            .is_some()
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

    /// The blocks of `r` that some entry `keep` accepts covers, as maximal ranges in
    /// order.
    pub(crate) fn covered(
        &self,
        r: &Range<u64>,
        keep: impl Fn(u32) -> bool + Copy,
    ) -> Vec<Range<u64>> {
        let mut pieces: Vec<Range<u64>> = Vec::new();
        self.for_each_overlapping(r, keep, |found, _| {
            pieces.push(found.start.max(r.start)..found.end.min(r.end));
        });
        if pieces.len() > 1 {
            pieces.sort_unstable_by_key(|p| p.start);
            let mut merged: Vec<Range<u64>> = Vec::with_capacity(pieces.len());
            for p in pieces {
                match merged.last_mut() {
                    Some(last) if last.end >= p.start => last.end = last.end.max(p.end),
                    _ => merged.push(p),
                }
            }
            pieces = merged;
        }
        pieces
    }

    /// The blocks of `r` that no entry `keep` accepts covers, as maximal ranges in
    /// order.
    pub(crate) fn uncovered(
        &self,
        r: &Range<u64>,
        keep: impl Fn(u32) -> bool + Copy,
    ) -> Vec<Range<u64>> {
        let covered = self.covered(r, keep);
        if covered.is_empty() {
            return alloc::vec![r.clone()];
        }
        let mut gaps = Vec::new();
        let mut at = r.start;
        for c in covered {
            if c.start > at {
                gaps.push(at..c.start);
            }
            at = c.end;
        }
        if at < r.end {
            gaps.push(at..r.end);
        }
        gaps
    }

    /// How many entries `keep` accepts cover `block`.
    pub(crate) fn count_at(&self, block: u64, keep: impl Fn(u32) -> bool + Copy) -> u64 {
        let mut n = 0;
        if let Some(end) = block.checked_add(1) {
            self.for_each_overlapping(&(block..end), keep, |_, _| n += 1);
        }
        n
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
    use crate::index::bplus::tests::Rng;

    const ANY: fn(u32) -> bool = |_| true;

    /// Per-block counts from a plain list of ranges.
    fn dense(list: &[(Range<u64>, u32)], n: u64) -> Vec<u64> {
        (0..n)
            .map(|b| list.iter().filter(|(r, _)| r.contains(&b)).count() as u64)
            .collect()
    }

    #[test]
    fn matches_a_plain_list() {
        let n = 300u64;
        let mut rng = Rng(11);
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
                let counts = dense(&list, n);
                for b in 0..n {
                    assert_eq!(
                        ix.count_at(b, ANY),
                        counts[b as usize],
                        "step {step}: block {b}"
                    );
                }
            }
            let s = rng.below(n);
            let q = s..s + 1 + rng.below(n - s);
            let counts = dense(&list, n);
            let expect_covered: Vec<u64> = q.clone().filter(|&b| counts[b as usize] > 0).collect();
            let got: Vec<u64> = ix.covered(&q, ANY).into_iter().flatten().collect();
            assert_eq!(got, expect_covered, "step {step}: covered {q:?}");
            let expect_gaps: Vec<u64> = q.clone().filter(|&b| counts[b as usize] == 0).collect();
            let got: Vec<u64> = ix.uncovered(&q, ANY).into_iter().flatten().collect();
            assert_eq!(got, expect_gaps, "step {step}: uncovered {q:?}");
            assert_eq!(ix.overlaps(&q, ANY), !expect_covered.is_empty());
            // Only even ids: what a filtered query must see.
            let even: Vec<(Range<u64>, u32)> =
                list.iter().filter(|(_, id)| id % 2 == 0).cloned().collect();
            let counts = dense(&even, n);
            let expect: Vec<u64> = q.clone().filter(|&b| counts[b as usize] > 0).collect();
            let got: Vec<u64> = ix
                .covered(&q, |id| id % 2 == 0)
                .into_iter()
                .flatten()
                .collect();
            assert_eq!(got, expect, "step {step}: covered by even ids {q:?}");
            assert_eq!(ix.overlaps(&q, |id| id % 2 == 0), !expect.is_empty());
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
        }
    }

    #[test]
    fn ranges_at_the_top_of_the_space() {
        let mut ix = Intervals::new();
        ix.insert(&(u64::MAX - 3..u64::MAX), 0);
        ix.insert(&(0..1), u32::MAX);
        assert!(ix.overlaps(&(u64::MAX - 1..u64::MAX), ANY));
        assert!(!ix.overlaps(&(u64::MAX - 1..u64::MAX), |id| id != 0));
        assert_eq!(ix.count_at(u64::MAX - 1, ANY), 1);
        assert_eq!(ix.count_at(0, ANY), 1);
        assert_eq!(
            ix.uncovered(&(0..4), ANY),
            alloc::vec![Range { start: 1, end: 4 }]
        );
        assert!(ix.remove(0, u32::MAX));
        assert!(!ix.overlaps(&(0..u64::MAX - 3), ANY));
    }
}
