//! Mount-time constructors: rebuild an allocator from a list of extents.

use alloc::vec::Vec;
use core::ops::Range;

use super::ExtentAllocator;
use super::ranges::to_range;
use crate::{BuildError, Extent};

impl ExtentAllocator {
    /// Rebuilds an allocator whose Free blocks are exactly `free`; every other block is
    /// Allocated, and counts as durable (allocated before epoch 1), so
    /// [`free_on_commit`](Self::free_on_commit) defers it until the first commit. Feed
    /// it [`durable_free_extents`](Self::durable_free_extents) at mount. The extents
    /// may come in any order, and touching ones are coalesced.
    ///
    /// # Errors
    ///
    /// [`BuildError::BadExtent`] for a malformed extent, and [`BuildError::Overlap`]
    /// when two extents share a block.
    ///
    /// ```
    /// use pinalloc::{Extent, ExtentAllocator};
    ///
    /// let alloc = ExtentAllocator::from_free_extents(
    ///     100,
    ///     [Extent::new(50, 10), Extent::new(0, 5), Extent::new(5, 5)],
    /// )?;
    /// let free: Vec<_> = alloc.free_extents().collect();
    /// assert_eq!(free, [Extent::new(0, 10), Extent::new(50, 10)]);
    /// assert_eq!(alloc.stats().allocated_blocks, 80);
    /// # Ok::<(), pinalloc::BuildError>(())
    /// ```
    pub fn from_free_extents(
        capacity_blocks: u64,
        free: impl IntoIterator<Item = Extent>,
    ) -> Result<Self, BuildError> {
        let sorted = sorted_disjoint(capacity_blocks, free)?;
        let mut alloc = Self::empty(capacity_blocks);
        for gap in complement(capacity_blocks, &sorted) {
            alloc.epochs.note_mounted(gap);
        }
        for e in sorted {
            alloc.free.insert(e.start, e.len);
        }
        alloc.debug_check();
        Ok(alloc)
    }

    /// Rebuilds an allocator in which exactly the blocks of `allocated` are Allocated
    /// (and durable, as for [`from_free_extents`](Self::from_free_extents)), as a
    /// filesystem does at mount from its block maps. The extents may come in any
    /// order and may touch.
    ///
    /// # Errors
    ///
    /// [`BuildError::BadExtent`] for a malformed extent, and [`BuildError::Overlap`]
    /// when two extents claim the same block.
    ///
    /// ```
    /// use pinalloc::{Extent, ExtentAllocator};
    ///
    /// let alloc = ExtentAllocator::from_allocated_extents(
    ///     100,
    ///     [Extent::new(10, 10), Extent::new(20, 5), Extent::new(90, 10)],
    /// )?;
    /// let free: Vec<_> = alloc.free_extents().collect();
    /// assert_eq!(free, [Extent::new(0, 10), Extent::new(25, 65)]);
    /// # Ok::<(), pinalloc::BuildError>(())
    /// ```
    pub fn from_allocated_extents(
        capacity_blocks: u64,
        allocated: impl IntoIterator<Item = Extent>,
    ) -> Result<Self, BuildError> {
        let sorted = sorted_disjoint(capacity_blocks, allocated)?;
        let mut alloc = Self::empty(capacity_blocks);
        for gap in complement(capacity_blocks, &sorted) {
            alloc.free.insert(gap.start, gap.end - gap.start);
        }
        for e in sorted {
            alloc.epochs.note_mounted(to_range(e));
        }
        alloc.debug_check();
        Ok(alloc)
    }
}

/// The runs of `0..capacity` that sorted, disjoint `extents` leave uncovered.
fn complement(capacity: u64, extents: &[Extent]) -> Vec<Range<u64>> {
    let mut gaps = Vec::new();
    let mut cursor = 0;
    for e in extents {
        if e.start > cursor {
            gaps.push(cursor..e.start);
        }
        cursor = e.start + e.len;
    }
    if capacity > cursor {
        gaps.push(cursor..capacity);
    }
    gaps
}

/// Validates each extent against the space and sorts them, rejecting overlaps.
fn sorted_disjoint(
    capacity: u64,
    extents: impl IntoIterator<Item = Extent>,
) -> Result<Vec<Extent>, BuildError> {
    let mut sorted: Vec<Extent> = extents.into_iter().collect();
    for &extent in &sorted {
        extent.within(capacity).map_err(BuildError::BadExtent)?;
    }
    sorted.sort_unstable();
    // The extent reaching furthest so far: anything starting before its end overlaps it.
    let mut furthest: Option<Extent> = None;
    for &extent in &sorted {
        if let Some(f) = furthest {
            if extent.start < f.start + f.len {
                return Err(BuildError::Overlap {
                    first: f,
                    second: extent,
                });
            }
        }
        furthest = Some(extent);
    }
    Ok(sorted)
}
