//! Read-only questions the thread-safe layer asks a core, each cheap enough to ask under
//! its lock on every call. Nothing here changes state.
// Only `SharedAllocator` (feature `std`) asks these.
#![cfg_attr(not(feature = "std"), allow(dead_code))]

use alloc::vec::Vec;
use core::ops::Range;

use super::ExtentAllocator;
use super::ranges::to_range;
use crate::{Extent, FreeError, PinError, PinId};

impl ExtentAllocator {
    /// Blocks currently Deferred. O(1).
    #[inline]
    pub(crate) fn count_deferred_blocks(&self) -> u64 {
        self.deferrals.count_blocks
    }

    /// Free, unpinned blocks not promised to a reservation. O(1).
    #[inline]
    pub(crate) fn count_unreserved_free_blocks(&self) -> u64 {
        self.unreserved_free()
    }

    /// The longest extent in the free index. O(1).
    #[inline]
    pub(crate) fn largest_free_len(&self) -> u64 {
        self.free.largest_len()
    }

    /// A mark for [`count_deferred_before`](Self::count_deferred_before): blocks
    /// deferred from now on are not counted against it.
    pub(crate) fn deferral_mark(&self) -> u64 {
        self.deferrals.next_seq
    }

    /// How many blocks of `r` are still Deferred by a free made before `mark` was
    /// taken: what a wait that began at `mark` waits for. Blocks released since and
    /// deferred again by a later free do not count.
    pub(crate) fn count_deferred_before(&self, r: &Range<u64>, mark: u64) -> u64 {
        self.deferrals.count_deferred_before(r, mark)
    }

    /// Whether any block of `extent` is out of the allocator's reach because of a hold:
    /// Deferred, or Free but pinned. Letting go of such a pin would give space back.
    pub(crate) fn holds_back_space(&self, extent: Extent) -> bool {
        let r = to_range(extent);
        self.deferrals.epoch_of.overlaps(&r) || self.pinned_free.overlaps(&r)
    }

    /// How many blocks [`free`](Self::free) (or
    /// [`free_on_commit`](Self::free_on_commit) when `on_commit`) of `extent` would
    /// leave Deferred, or the error it would return. Mirrors `release_allocated`.
    pub(crate) fn deferral_preview(
        &self,
        extent: Extent,
        on_commit: bool,
    ) -> Result<u64, FreeError> {
        let (r, any_pinned) = self.check_free(extent)?;
        let pinned = |piece: &Range<u64>| -> u64 {
            let unpinned: u64 = self
                .pins
                .zero_pieces(piece)
                .iter()
                .map(|p| p.end - p.start)
                .sum();
            piece.end - piece.start - unpinned
        };
        if !on_commit {
            if self.epochs.oldest_reader().is_some() {
                return Ok(extent.len);
            }
            return Ok(if any_pinned { pinned(&r) } else { 0 });
        }
        let (pending, never_durable) = self.epochs.split_durable(&r);
        let waiting: u64 = pending.iter().map(|p| p.end - p.start).sum();
        let pinned_new: u64 = never_durable.iter().map(pinned).sum();
        Ok(waiting + pinned_new)
    }

    /// The error [`pin_with`](Self::pin_with) of `extent` would return, if any.
    pub(crate) fn pin_preview(&self, extent: Extent) -> Result<(), PinError> {
        self.check_pin(extent).map(|_| ())
    }

    /// Checks a pin of `extent`: a valid range, and no more Free blocks in it than
    /// reservations leave unpromised. Returns the range and the free extents in it.
    #[inline]
    pub(crate) fn check_pin(&self, extent: Extent) -> Result<(Range<u64>, Vec<Extent>), PinError> {
        let r = self
            .checked_range(extent)
            .map_err(|bad| bad.into_pin_error(extent, self.capacity))?;
        let free_pieces = self.free.overlapping(r.start, r.end);
        let free_blocks: u64 = free_pieces.iter().map(|p| p.len).sum();
        let unreserved = self.unreserved_free();
        if free_blocks > unreserved {
            return Err(PinError::Reserved {
                extent,
                free_blocks,
                unreserved,
            });
        }
        Ok((r, free_pieces))
    }

    /// The extent of a live pin of this allocator.
    pub(crate) fn pin_extent(&self, id: PinId) -> Option<Extent> {
        if id.owner != self.uid {
            return None;
        }
        self.pins.get(id.seq, id.slot).map(|rec| rec.extent)
    }
}
