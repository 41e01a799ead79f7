//! Read-only questions the thread-safe layer asks a core, each cheap enough to ask under
//! its lock on every call. Nothing here changes state.
// Only `SharedAllocator` (feature `std`) asks these, so the module is built with it.

use alloc::vec::Vec;
use core::ops::Range;

use super::ExtentAllocator;
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

    /// For a pressure round: the held ranges (Deferred runs and pinned Free ranges)
    /// of `within`, in address order from its start, grouped into spans of blocks each
    /// Free or held (widened by the free extents at their ends). The ranges of a span
    /// where `need` blocks aligned to `align` would fit once every hold on it let go
    /// are given to `found`, clipped to `within`; so are those of a span this walk
    /// sees only part of (it goes on below `within.start`, or past the last range the
    /// budget lets it look at), which might fit.
    ///
    /// It looks at `*budget` held ranges at most, counting it down, and returns the
    /// block after the last range it looked at when ranges were left unseen, else
    /// `within.end`: O((1 + budget) log n).
    pub(crate) fn held_that_could_fit(
        &self,
        within: Range<u64>,
        need: u64,
        align: u64,
        budget: &mut usize,
        mut found: impl FnMut(Range<u64>),
    ) -> u64 {
        if within.is_empty() {
            return within.end;
        }
        let clip = |r: Range<u64>| r.start.max(within.start)..r.end.min(within.end);
        let mut deferred = self
            .deferrals
            .epoch_of
            .overlapping(&within)
            .map(|(r, _)| clip(r))
            .peekable();
        let mut pinned = self
            .pinned_free
            .overlapping(&within)
            .map(|r| clip(r.clone()))
            .peekable();
        // Whether block `b` is held (Deferred, or Free and pinned).
        let held_at = |b: u64| {
            self.deferrals.epoch_of.containing(b).is_some() || self.pinned_free.contains(&b)
        };
        // The held ranges of the span being built, the span so far, and whether it
        // reaches out of what this walk sees (then it is not judged, only given).
        let mut members: Vec<Range<u64>> = Vec::new();
        let mut span = 0..0;
        let mut open = false;
        // Where a span ending at `end` ends once widened by the free extent there.
        let widened = |end: u64| match self.free.containing(end) {
            Some(e) if e.start == end => e.start + e.len,
            _ => end,
        };
        let mut close = |span: &Range<u64>, members: &mut Vec<Range<u64>>, open: bool| {
            if members.is_empty() {
                return;
            }
            let end = widened(span.end);
            if open || crate::index::fit(span.start, end - span.start, need, align).is_some() {
                members.drain(..).for_each(&mut found);
            } else {
                members.clear();
            }
        };
        let mut stopped = within.start;
        let mut first = true;
        while *budget > 0 {
            // The next held range by start: the two sets never share a block.
            let next = match (deferred.peek(), pinned.peek()) {
                (Some(d), Some(p)) if p.start < d.start => pinned.next(),
                (Some(_), _) => deferred.next(),
                (None, _) => pinned.next(),
            };
            let Some(h) = next else { break };
            *budget -= 1;
            stopped = h.end;
            let joins = !members.is_empty()
                && (span.end == h.start
                    || self
                        .free
                        .containing(span.end)
                        .is_some_and(|e| e.start + e.len == h.start));
            if joins {
                span.end = h.end;
            } else {
                close(&span, &mut members, open);
                let start = match h.start.checked_sub(1).and_then(|b| self.free.containing(b)) {
                    Some(e) => e.start,
                    None => h.start,
                };
                // Only the first span can reach below `within` (the others follow
                // a range this walk saw, which they did not join).
                open = first && start.checked_sub(1).is_some_and(held_at);
                first = false;
                span = start..h.end;
            }
            members.push(h);
        }
        let unseen = deferred.peek().is_some() || pinned.peek().is_some();
        // The last span may go on past `within.end` (the wrap-around pass of a
        // pressure round stops where it began): held blocks at its end, or just past
        // the free extent there, lie beyond what this walk sees.
        let beyond = !members.is_empty() && {
            let end = widened(span.end);
            end >= within.end && held_at(end)
        };
        close(&span, &mut members, open || unseen || beyond);
        if unseen { stopped } else { within.end }
    }

    /// What a [`NoSpace`](crate::AllocError::NoSpace) totals over a shared
    /// allocator's groups, without the rest of [`stats`](Self::stats) (its histogram
    /// and metadata read many more cache lines, and a failing shared allocation asks
    /// every group): `(free, largest free, reserved, pinned free, Deferred by)`. O(1).
    pub(crate) fn space_totals(&self) -> (u64, u64, u64, u64, crate::Held) {
        (
            self.free.free_blocks() + self.count_pinned_free_blocks,
            self.free.largest_len(),
            self.count_reserved_blocks,
            self.count_pinned_free_blocks,
            self.deferred_held(),
        )
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

    /// How many blocks [`free`](Self::free) (or
    /// [`free_on_commit`](Self::free_on_commit) when `on_commit`) of `extent` would
    /// leave Deferred, or the error it would return: the free's own checks and plan,
    /// not applied.
    pub(crate) fn deferral_preview(
        &self,
        extent: Extent,
        on_commit: bool,
    ) -> Result<u64, FreeError> {
        let (r, pinned) = self.check_free(extent)?;
        Ok(self.deferred_by_plan(&self.plan_free(r, on_commit, pinned)))
    }

    /// The error [`pin_with`](Self::pin_with) of `extent` would return, if any.
    pub(crate) fn pin_preview(&self, extent: Extent) -> Result<(), PinError> {
        self.check_pin(extent).map(|_| ())
    }

    /// The extent of a live pin of this allocator.
    pub(crate) fn pin_extent(&self, id: PinId) -> Option<Extent> {
        if id.allocator != self.uid {
            return None;
        }
        self.pins.get(id.seq, id.slot).map(|rec| rec.extent)
    }
}
