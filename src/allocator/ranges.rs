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
