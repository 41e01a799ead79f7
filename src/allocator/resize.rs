//! Growing and shrinking the space: new Free blocks at the end, or a Free, unpinned
//! tail given up.

use core::ops::Range;

use super::ExtentAllocator;
use crate::{BlockState, ResizeError};

impl ExtentAllocator {
    /// Grows the space to `new_capacity` blocks: the new blocks, at the end, are Free
    /// (joined to a free extent that ends where the space did). Pins, readers, epochs
    /// and reservations carry on. O(log n).
    ///
    /// # Errors
    ///
    /// [`ResizeError::NotLarger`] below the capacity; nothing changes. Growing to
    /// the capacity itself changes nothing and succeeds.
    ///
    /// ```
    /// use pinalloc::{Extent, ExtentAllocator, Request};
    ///
    /// let mut alloc = ExtentAllocator::new(8);
    /// alloc.allocate(Request::new(6))?;
    /// alloc.grow(16)?; // growfs
    /// assert_eq!(alloc.free_extents().collect::<Vec<_>>(), [Extent::new(6, 10)]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn grow(&mut self, new_capacity: u64) -> Result<(), ResizeError> {
        let old = self.capacity;
        if ResizeError::growing(old, new_capacity)? {
            self.free.insert(old, new_capacity - old);
            self.capacity = new_capacity;
        }
        self.debug_check();
        Ok(())
    }

    /// Shrinks the space to `new_capacity` blocks, giving up the tail. Only a tail of
    /// Free blocks that no pin covers can go, and only if the reservations still fit
    /// in the Free blocks left. O(log n).
    ///
    /// # Errors
    ///
    /// Nothing changes on any of them:
    /// - [`ResizeError::NotSmaller`] above the capacity (to the capacity itself,
    ///   nothing changes and it succeeds);
    /// - [`ResizeError::InUse`] for the first Allocated or Deferred block of the tail;
    /// - [`ResizeError::Pinned`] for the first pinned Free block of the tail, when it
    ///   comes before any block in use;
    /// - [`ResizeError::Reserved`] when reservations hold more blocks than would be
    ///   left Free.
    ///
    /// ```
    /// use pinalloc::{Extent, ExtentAllocator, ResizeError};
    ///
    /// let mut alloc = ExtentAllocator::new(16);
    /// let pin = alloc.pin(Extent::new(12, 1))?;
    /// assert_eq!(alloc.shrink(10), Err(ResizeError::Pinned { block: 12, pins: 1 }));
    /// alloc.unpin(pin)?;
    /// alloc.shrink(10)?;
    /// assert_eq!(alloc.capacity_blocks(), 10);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn shrink(&mut self, new_capacity: u64) -> Result<(), ResizeError> {
        if !ResizeError::shrinking(self.capacity, new_capacity)? {
            return Ok(());
        }
        self.check_tail_blocks(new_capacity)?;
        self.check_tail_reserved(new_capacity)?;
        self.cut_tail(new_capacity);
        Ok(())
    }

    /// Whether every block of `from..capacity` (not empty) is Free and unpinned; if
    /// not, the first that is not.
    pub(crate) fn check_tail_blocks(&self, from: u64) -> Result<(), ResizeError> {
        self.check_free_run(from..self.capacity)
    }

    /// Whether every block of `r` (not empty, inside the space) is Free and unpinned;
    /// if not, the first that is not.
    pub(crate) fn check_free_run(&self, r: Range<u64>) -> Result<(), ResizeError> {
        let (from, end) = (r.start, r.end);
        debug_assert!(from < end && end <= self.capacity, "{r:?}");
        // The run is free and unpinned when one free extent covers it; otherwise the
        // first block past that extent is not.
        let first_held = match self.free.containing(from) {
            Some(e) if e.start + e.len >= end => None,
            Some(e) => Some(e.start + e.len),
            None => Some(from),
        };
        if let Some(block) = first_held {
            return Err(match self.state_of(block) {
                Some(BlockState::Free) => ResizeError::Pinned {
                    block,
                    pins: self.pin_count(block),
                },
                state => ResizeError::InUse {
                    block,
                    state: state.expect("a block of the tail lies inside the space"),
                },
            });
        }
        Ok(())
    }

    /// Whether the reservations fit in the Free blocks left without
    /// `from..capacity`, all Free and unpinned.
    pub(crate) fn check_tail_reserved(&self, from: u64) -> Result<(), ResizeError> {
        self.check_reserved_without(self.capacity - from)
    }

    /// Takes `r`, checked by [`check_free_run`](Self::check_free_run) and
    /// [`check_reserved_without`](Self::check_reserved_without), out of the Free
    /// blocks: Allocated, as a shrink's tail is before it goes, and counted by no
    /// counter, since no user allocated it.
    #[cfg_attr(not(feature = "std"), allow(dead_code))] // the shared layer's
    pub(crate) fn take_free_run(&mut self, r: Range<u64>) {
        debug_assert!(self.check_free_run(r.clone()).is_ok(), "{r:?}");
        self.free.take(r.start, r.end - r.start);
        self.debug_check();
    }

    /// Makes `r` (Allocated, no pin over it, taken by
    /// [`SharedAllocator::take_free_run`](crate::SharedAllocator) or held past a
    /// region's backing) Free at once: no reader holds blocks that were never handed
    /// to a user, so none defers them.
    #[cfg_attr(not(feature = "std"), allow(dead_code))] // the shared layer's
    pub(crate) fn give_back_run(&mut self, r: Range<u64>) {
        debug_assert!(
            self.runs_vec(r.clone())
                .iter()
                .all(|run| run.state == BlockState::Allocated && run.pins == 0),
            "{r:?}"
        );
        self.free_unheld(&r);
        self.debug_check();
    }

    /// Whether the reservations fit in the Free blocks left without `blocks` of them.
    pub(crate) fn check_reserved_without(&self, blocks: u64) -> Result<(), ResizeError> {
        let free = self.free.free_blocks() - blocks;
        if free < self.count_reserved_blocks {
            return Err(ResizeError::Reserved {
                reserved: self.count_reserved_blocks,
                free,
            });
        }
        Ok(())
    }

    /// Cuts off blocks `new_capacity..capacity`, checked by
    /// [`check_tail_blocks`](Self::check_tail_blocks) and
    /// [`check_tail_reserved`](Self::check_tail_reserved).
    pub(crate) fn cut_tail(&mut self, new_capacity: u64) {
        let old = self.capacity;
        self.free.take(new_capacity, old - new_capacity);
        self.capacity = new_capacity;
        // Blocks past the end are asked about no more: the epochs' sets forget them.
        self.epochs.allocated_since_commit.remove(new_capacity..old);
        self.epochs.mount_durable.remove(new_capacity..old);
        self.debug_check();
    }

    /// A fresh core joins a shared allocator's epochs: it opens at `open`, with the
    /// commits through `durable` finished, and begins one reader in each epoch of
    /// `readers` (ascending), as if begun then. It has no Deferred block, so no
    /// commit or reader has anything to hold in it yet. Returns the readers.
    #[cfg(feature = "std")]
    pub(crate) fn join_epochs(
        &mut self,
        open: u64,
        durable: u64,
        readers: &[u64],
    ) -> alloc::vec::Vec<crate::ReaderId> {
        debug_assert!(self.deferrals.count_blocks == 0 && self.epochs.readers.is_empty());
        if open > 1 {
            self.epochs.mount_durable = rangemap::RangeSet::new();
            self.epochs.mount_durable_end = 0;
        }
        let mut ids = alloc::vec::Vec::with_capacity(readers.len());
        for &epoch in readers {
            self.epochs.open = epoch;
            ids.push(self.begin_read());
        }
        self.epochs.open = open;
        self.epochs.durable = durable;
        self.debug_check();
        ids
    }
}
