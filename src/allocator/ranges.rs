//! Small helpers over `Range<u64>` and `rangemap` sets and maps.

use alloc::vec::Vec;
use core::ops::Range;

use rangemap::RangeSet;

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
