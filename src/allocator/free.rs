//! Free: Allocated → Free.

use alloc::vec::Vec;
use core::ops::Range;

use super::ExtentAllocator;
use super::pins::PinId;
use super::ranges::to_extent;
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
    /// Frees `extent`. Each block with no hold becomes Free at once and coalesces with
    /// its free neighbours; each block still held (pinned, or freed while a snapshot
    /// reader is alive) becomes Deferred until its holds let go.
    ///
    /// Any run of Allocated blocks may be freed: part of an allocation (truncate), or
    /// several neighbouring allocations at once.
    ///
    /// # Errors
    ///
    /// - [`FreeError::BadExtent`]: a malformed extent.
    /// - [`FreeError::NotAllocated`]: no block of `extent` is Allocated (a double free).
    /// - [`FreeError::PartlyAllocated`]: some blocks are Allocated and some are not.
    /// - [`FreeError::Busy`]: a [blocking pin](crate::PinMode::Blocking) covers part of
    ///   it.
    ///
    /// Either every block is freed or deferred, or, on error, none is.
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
        match self.free_plain(extent) {
            Some(out) => Ok(out),
            // It made the lookups ahead, and changed nothing.
            None => self.free_held(extent),
        }
    }

    /// [`free`](Self::free) once [`free_plain`](Self::free_plain) said no: out of
    /// line, so that the common free does not pay for this path's registers.
    #[cold]
    #[inline(never)]
    fn free_held(&mut self, extent: Extent) -> Result<FreeOutcome, FreeError> {
        self.free_checked(extent, false)
    }

    /// Frees `extent` as part of the open epoch's transaction: as [`free`](Self::free),
    /// and blocks allocated before the open epoch also stay Deferred until it commits
    /// (ext4's and XFS's "not reusable before the commit is on disk"). Blocks allocated
    /// in the open epoch itself were never durable, and no reader could see them
    /// (readers see committed state), so only a pin can hold them: LMDB's loose pages,
    /// redb's `allocated_since_commit`.
    ///
    /// # Errors
    ///
    /// As [`free`](Self::free).
    ///
    /// ```
    /// use pinalloc::{ExtentAllocator, Request};
    ///
    /// let mut alloc = ExtentAllocator::new(16);
    /// let old = alloc.allocate(Request::new(8))?;
    /// alloc.commit(1)?;                                     // `old` is durable
    /// let new = alloc.allocate(Request::new(4))?;           // allocated in epoch 2
    /// assert_eq!(alloc.free_on_commit(old)?.deferred_blocks, 8);
    /// assert_eq!(alloc.free_on_commit(new)?.freed_blocks, 4); // never durable
    /// assert_eq!(alloc.commit(2)?.released_blocks, 8);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn free_on_commit(&mut self, extent: Extent) -> Result<FreeOutcome, FreeError> {
        // The lookups ahead that `free_plain` makes for a plain free.
        self.free.probe(extent.start);
        if let Ok(r) = self.checked_range(extent) {
            self.pins.probe(&r);
        }
        self.free_checked(extent, true)
    }

    /// The common free: of Allocated blocks that nothing holds (no pin, no Deferred
    /// block, no reader), not on commit. Its outcome, or `None`, changing nothing,
    /// when it is not that (a bad extent included): then [`free`](Self::free) says
    /// what happens. Nothing to build on the way, for the shared allocator's hot path.
    #[inline]
    pub(crate) fn free_plain(&mut self, extent: Extent) -> Option<FreeOutcome> {
        let r = self.checked_range(extent).ok()?;
        // One descent for both the check that no block is free and the insert, and one
        // for the check that no block is held.
        self.free.probe(r.start);
        self.pins.probe(&r);
        if self.pins.holds_any(&r)
            || self.deferrals.epoch_of.may_keep_pin_near(&r)
            || self.free.first_overlap(r.start, r.end).is_some()
            || self.epochs.oldest_reader().is_some()
        {
            return None;
        }
        self.free_unheld(&r);
        self.counters.frees = self.counters.frees.saturating_add(1);
        self.counters.blocks_freed = self.counters.blocks_freed.saturating_add(extent.len);
        self.debug_check();
        Some(FreeOutcome {
            freed_blocks: extent.len,
            deferred_blocks: 0,
        })
    }

    /// A free that is not plain (held blocks, a free on commit, or bad input), once
    /// the lookups ahead are made.
    pub(super) fn free_checked(
        &mut self,
        extent: Extent,
        on_commit: bool,
    ) -> Result<FreeOutcome, FreeError> {
        let (r, pinned) = self.check_free(extent)?;
        debug_assert!(r.start < r.end, "a checked free is not empty");
        debug_assert!(
            r.end <= self.capacity,
            "a checked free lies inside the space"
        );
        // The fresh pins inside `r` (their blocks become Deferred, unmarked) go into
        // their runs below; those reaching out of it enter the coverage now.
        let inside = if pinned {
            self.pins.prepare_free(&r)
        } else {
            Vec::new()
        };
        let plan = self.plan_free(r, on_commit, pinned);
        let out = self.apply_free(plan);
        for (p, slot) in inside {
            if self.deferrals.epoch_of.keep_pin(&p) {
                self.pins.give_to_run(&p, slot);
            } else {
                let deferred = self.deferrals.blocks_in(&p);
                self.pins.settle_one(&p, slot, &deferred);
            }
        }
        debug_assert_eq!(out.freed_blocks + out.deferred_blocks, extent.len);
        self.counters.frees = self.counters.frees.saturating_add(1);
        self.counters.blocks_freed = self.counters.blocks_freed.saturating_add(extent.len);
        self.debug_check();
        Ok(out)
    }

    /// Checks that every block of `extent` is Allocated and not under a blocking pin.
    /// Also says whether any pin covers part of it.
    pub(super) fn check_free(&self, extent: Extent) -> Result<(Range<u64>, bool), FreeError> {
        let r = self
            .checked_range(extent)
            .map_err(|fault| FreeError::BadExtent(fault.error(extent, self.capacity)))?;
        // The common case, in one lookup: nothing pinned or Deferred here (pinned Free
        // blocks are pinned), so only a free extent could make the range invalid.
        if !self.pins.holds_any(&r)
            && !self.deferrals.epoch_of.may_keep_pin(&r)
            && self.free.first_overlap(r.start, r.end).is_none()
        {
            return Ok((r, false));
        }
        if let Some(offending) = self.first_unallocated(&r) {
            return Err(if offending == extent {
                FreeError::NotAllocated { extent, offending }
            } else {
                FreeError::PartlyAllocated { extent, offending }
            });
        }
        // Every block is Allocated, so no Deferred mark lies inside: one descent.
        let pinned = self.pins.overlaps(&r);
        if let Some((seq, slot, blocked)) = self.pins.first_blocking(&r) {
            return Err(FreeError::Busy {
                extent,
                pin: PinId {
                    allocator: self.uid,
                    seq,
                    slot,
                },
                blocked: to_extent(&blocked),
            });
        }
        Ok((r, pinned))
    }

    /// The first maximal run of blocks inside `r` that is not Allocated (Free in the
    /// index, pinned Free, or Deferred), clipped to `r`.
    fn first_unallocated(&self, r: &Range<u64>) -> Option<Extent> {
        let first = [
            self.free
                .first_overlap(r.start, r.end)
                .map(|e| e.start..e.start + e.len),
            self.pinned_free.overlapping(r).next().cloned(),
            self.deferrals
                .epoch_of
                .overlapping(r)
                .next()
                .map(|(k, _)| k.clone()),
        ]
        .into_iter()
        .flatten()
        .min_by_key(|p| p.start)?;
        let start = first.start.max(r.start);
        let mut end = first.end.min(r.end);
        // Extend through touching non-Allocated pieces of any kind.
        while end < r.end {
            let next = self
                .free
                .containing(end)
                .map(|e| e.start + e.len)
                .or_else(|| self.pinned_free.get(&end).map(|p| p.end))
                .or_else(|| self.deferrals.epoch_of.containing(end).map(|(k, _)| k.end));
            match next {
                Some(e) => end = e.min(r.end),
                None => break,
            }
        }
        Some(Extent::new(start, end - start))
    }
}
