//! Small helpers over `Range<u64>` and `rangemap` sets and maps.

use alloc::vec::Vec;
use core::ops::Range;

use rangemap::{RangeMap, RangeSet};

use crate::Extent;

#[inline]
pub(crate) fn to_range(e: Extent) -> Range<u64> {
    e.start..e.start + e.len
}

#[inline]
pub(crate) fn to_extent(r: &Range<u64>) -> Extent {
    Extent::new(r.start, r.end - r.start)
}

#[inline]
pub(crate) fn clip(r: &Range<u64>, to: &Range<u64>) -> Range<u64> {
    r.start.max(to.start)..r.end.min(to.end)
}

/// Blocks in a set.
pub(crate) fn set_blocks(set: &RangeSet<u64>) -> u64 {
    set.iter().map(|r| r.end - r.start).sum()
}

/// The pieces of `set` inside `within`, clipped.
pub(crate) fn set_pieces(set: &RangeSet<u64>, within: &Range<u64>) -> Vec<Range<u64>> {
    set.overlapping(within).map(|r| clip(r, within)).collect()
}

/// The pieces of `within` not covered by `set`.
pub(crate) fn set_gaps(set: &RangeSet<u64>, within: &Range<u64>) -> Vec<Range<u64>> {
    set.gaps(within).collect()
}

/// Per-block counts over ranges, with zero-count blocks absent.
#[derive(Clone, Debug, Default)]
pub(crate) struct Counts {
    map: RangeMap<u64, u64>,
    /// Blocks with a count above zero.
    count_blocks: u64,
}

impl Counts {
    pub(crate) fn blocks(&self) -> u64 {
        self.count_blocks
    }

    pub(crate) fn overlaps(&self, r: &Range<u64>) -> bool {
        self.map.overlaps(r)
    }

    pub(crate) fn get(&self, block: u64) -> u64 {
        self.map.get(&block).copied().unwrap_or(0)
    }

    /// The pieces of `within` whose count is zero.
    pub(crate) fn zero_pieces(&self, within: &Range<u64>) -> Vec<Range<u64>> {
        self.map.gaps(within).collect()
    }

    /// Adds one to every block of `r`.
    pub(crate) fn add(&mut self, r: &Range<u64>) {
        if !self.map.overlaps(r) {
            // The common case (a pin of blocks no other pin covers): one insert, which
            // merges with a touching run of count 1 by itself.
            self.count_blocks += r.end - r.start;
            self.map.insert(r.clone(), 1);
            return;
        }
        let covered: Vec<(Range<u64>, u64)> = self
            .map
            .overlapping(r)
            .map(|(k, &v)| (clip(k, r), v))
            .collect();
        let gaps: Vec<Range<u64>> = self.map.gaps(r).collect();
        for (k, v) in covered {
            self.map.insert(k, v + 1);
        }
        for g in gaps {
            self.count_blocks += g.end - g.start;
            self.map.insert(g, 1);
        }
    }

    /// Subtracts one from every block of `r`, each of which must be above zero, and
    /// returns the pieces that reach zero.
    pub(crate) fn sub(&mut self, r: &Range<u64>) -> Vec<Range<u64>> {
        if let Some((run, &1)) = self.map.get_key_value(&r.start) {
            if run == r {
                // The common case: the run is exactly these blocks, counted once.
                self.count_blocks -= r.end - r.start;
                self.map.remove(r.clone());
                return alloc::vec![r.clone()];
            }
        }
        let covered: Vec<(Range<u64>, u64)> = self
            .map
            .overlapping(r)
            .map(|(k, &v)| (clip(k, r), v))
            .collect();
        debug_assert_eq!(
            covered.iter().map(|(k, _)| k.end - k.start).sum::<u64>(),
            r.end - r.start,
            "subtracting from blocks whose count is already zero"
        );
        let mut zeroed: Vec<Range<u64>> = Vec::new();
        for (k, v) in covered {
            if v == 1 {
                self.count_blocks -= k.end - k.start;
                self.map.remove(k.clone());
                match zeroed.last_mut() {
                    Some(last) if last.end == k.start => last.end = k.end,
                    _ => zeroed.push(k),
                }
            } else {
                self.map.insert(k, v - 1);
            }
        }
        zeroed
    }
}

impl PartialEq for Counts {
    fn eq(&self, other: &Self) -> bool {
        self.count_blocks == other.count_blocks && self.map.iter().eq(other.map.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A per-block count array, the obvious oracle.
    fn dense(c: &Counts, n: u64) -> Vec<u64> {
        (0..n).map(|b| c.get(b)).collect()
    }

    #[test]
    fn counts_match_a_dense_array_and_stay_maximal() {
        let n = 48u64;
        let mut seed = 7u64;
        let mut next = move |m: u64| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) % m
        };
        let mut c = Counts::default();
        let mut oracle = alloc::vec![0u64; n as usize];
        let mut added: Vec<Range<u64>> = Vec::new();
        for step in 0..4000 {
            if added.is_empty() || next(100) < 55 {
                let s = next(n);
                let e = s + 1 + next(n - s);
                c.add(&(s..e));
                (s..e).for_each(|b| oracle[b as usize] += 1);
                added.push(s..e);
            } else {
                let r = added.swap_remove(next(added.len() as u64) as usize);
                let zeroed = c.sub(&r);
                (r.clone()).for_each(|b| oracle[b as usize] -= 1);
                let expect: Vec<u64> = r.clone().filter(|&b| oracle[b as usize] == 0).collect();
                let got: Vec<u64> = zeroed.iter().flat_map(|z| z.clone()).collect();
                assert_eq!(got, expect, "step {step}: zeroed pieces of {r:?}");
            }
            assert_eq!(dense(&c, n), oracle, "step {step}");
            assert_eq!(c.blocks(), oracle.iter().filter(|&&x| x > 0).count() as u64);
            let runs: Vec<(Range<u64>, u64)> = c.map.iter().map(|(r, &v)| (r.clone(), v)).collect();
            assert!(
                runs.windows(2)
                    .all(|w| w[0].0.end < w[1].0.start || w[0].1 != w[1].1),
                "step {step}: runs are not maximal: {runs:?}"
            );
            let probe = next(n)..n.min(next(n) + 3);
            if !probe.is_empty() {
                assert_eq!(
                    c.overlaps(&probe),
                    probe.clone().any(|b| oracle[b as usize] > 0)
                );
                let zero: Vec<u64> = c.zero_pieces(&probe).into_iter().flatten().collect();
                let expect: Vec<u64> = probe.filter(|&b| oracle[b as usize] == 0).collect();
                assert_eq!(zero, expect);
            }
        }
    }
}
