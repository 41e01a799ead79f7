//! Free: Allocated → Free.

use super::ExtentAllocator;
use crate::{Extent, FreeError};

/// What a successful [`free`](ExtentAllocator::free) did.
///
/// ```
/// use pinalloc::{ExtentAllocator, Request};
///
/// let mut alloc = ExtentAllocator::new(8);
/// let e = alloc.allocate(Request::new(8))?;
/// let out = alloc.free(e)?;
/// assert_eq!((out.freed_blocks, out.deferred_blocks), (8, 0));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct FreeOutcome {
    /// Blocks that became Free at once.
    pub freed_blocks: u64,
    /// Blocks that became Deferred because something still holds them.
    pub deferred_blocks: u64,
}

impl ExtentAllocator {
    /// Frees `extent`: its blocks become Free and coalesce with their free neighbours.
    ///
    /// Any run of Allocated blocks may be freed: part of an allocation (truncate), or
    /// several neighbouring allocations at once.
    ///
    /// # Errors
    ///
    /// - [`FreeError::ZeroLength`], [`FreeError::Overflow`], [`FreeError::OutOfBounds`]:
    ///   a malformed extent.
    /// - [`FreeError::NotAllocated`]: no block of `extent` is Allocated (a double free).
    /// - [`FreeError::PartlyAllocated`]: some blocks are Allocated and some are not.
    ///
    /// Either every block is freed or, on error, none is.
    ///
    /// ```
    /// use pinalloc::{Extent, ExtentAllocator, FreeError, Request};
    ///
    /// let mut alloc = ExtentAllocator::new(10);
    /// let e = alloc.allocate(Request::new(6))?;   // [0, 6)
    /// alloc.free(Extent::new(4, 2))?;             // truncate to 4 blocks
    /// // [2, 6) is half Allocated, half Free: refused, nothing changes.
    /// assert_eq!(
    ///     alloc.free(Extent::new(2, 4)),
    ///     Err(FreeError::PartlyAllocated { extent: Extent::new(2, 4), offending: Extent::new(4, 2) })
    /// );
    /// alloc.free(Extent::new(0, 4))?;
    /// assert_eq!(alloc.stats().free_blocks, 10);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn free(&mut self, extent: Extent) -> Result<FreeOutcome, FreeError> {
        let end = self.check_free(extent)?;
        debug_assert!(end > extent.start && end <= self.capacity);
        self.free.insert(extent.start, extent.len);
        self.counters.frees = self.counters.frees.saturating_add(1);
        self.counters.blocks_freed = self.counters.blocks_freed.saturating_add(extent.len);
        self.debug_check();
        Ok(FreeOutcome {
            freed_blocks: extent.len,
            deferred_blocks: 0,
        })
    }

    /// Checks that every block of `extent` is Allocated; returns its end.
    fn check_free(&self, extent: Extent) -> Result<u64, FreeError> {
        if extent.len == 0 {
            return Err(FreeError::ZeroLength {
                start: extent.start,
            });
        }
        let end = extent.checked_end().ok_or(FreeError::Overflow { extent })?;
        if end > self.capacity {
            return Err(FreeError::OutOfBounds {
                extent,
                capacity: self.capacity,
            });
        }
        if let Some(run) = self.free.first_overlap(extent.start, end) {
            // Free extents are coalesced, so the clipped run is a maximal non-Allocated run.
            let start = run.start.max(extent.start);
            let offending = Extent::new(start, (run.start + run.len).min(end) - start);
            return Err(if offending == extent {
                FreeError::NotAllocated { extent, offending }
            } else {
                FreeError::PartlyAllocated { extent, offending }
            });
        }
        Ok(end)
    }
}
