//! Growing and shrinking a shared space: groups added at the end, or a Free tail cut
//! off. Both take `&mut self`, so no guard (pin, reader, reservation) is borrowed
//! meanwhile and no other thread is inside.

use alloc::vec::Vec;

use super::SharedAllocator;
use super::group::Group;
use crate::{Extent, ExtentAllocator, ResizeError};

impl SharedAllocator {
    /// Grows the space to `new_capacity` blocks, Free (see
    /// [`ExtentAllocator::grow`]): the last group grows to the group size, and groups
    /// of that size are added after it. A space built with one group keeps one group,
    /// which grows. Pins, readers, epochs and reservations carry on; new groups join the
    /// open epoch, and the live readers hold in them what they hold elsewhere.
    ///
    /// # Errors
    ///
    /// [`ResizeError::NotLarger`] below the capacity, and [`ResizeError::TooLarge`]
    /// past [`MAX_GROUPS`](Self::MAX_GROUPS) groups of the group size; nothing
    /// changes.
    ///
    /// ```
    /// use pinalloc::{Request, SharedAllocator};
    /// let mut alloc = SharedAllocator::builder(64).groups(4).build();
    /// alloc.allocate(Request::new(16))?;
    /// alloc.grow(128)?;
    /// assert_eq!((alloc.capacity_blocks(), alloc.group_count()), (128, 8));
    /// assert_eq!(alloc.stats().space.free_blocks, 112);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn grow(&mut self, new_capacity: u64) -> Result<(), ResizeError> {
        if !ResizeError::growing(self.capacity, new_capacity)? {
            return Ok(());
        }
        if self.one_group {
            // Built with one group: it grows, and it is as large as the space.
            self.lock(0).grow(new_capacity)?;
            self.groups[0].range.end = new_capacity;
            self.group_blocks = new_capacity;
            self.capacity = new_capacity;
            return Ok(());
        }
        let size = self.group_blocks;
        let count = new_capacity.div_ceil(size);
        if count > Self::MAX_GROUPS {
            return Err(ResizeError::TooLarge {
                requested: new_capacity,
                max: Self::MAX_GROUPS.saturating_mul(size),
            });
        }
        let last = self.groups.len() - 1;
        let last_end = self.groups[last]
            .range
            .start
            .saturating_add(size)
            .min(new_capacity);
        self.lock(last).grow(last_end)?;
        self.groups[last].range.end = last_end;
        let (open, durable, proxied) = self.epochs.lock().for_new_group();
        let mut groups: Vec<Group> = core::mem::take(&mut self.groups).into_vec();
        let mut start = last_end;
        while start < new_capacity {
            let end = start + (new_capacity - start).min(size);
            let mut core =
                ExtentAllocator::from_free_extents(end, [Extent::new(start, end - start)])
                    .expect("a new group's own blocks are a valid free list");
            let ids = core.join_epochs(open, durable, &proxied);
            self.epochs.get_mut().add_group(ids);
            groups.push(Group::new(start..end, core));
            start = end;
        }
        let first_new = last + 1;
        self.groups = groups.into_boxed_slice();
        self.capacity = new_capacity;
        for g in first_new..self.groups.len() {
            drop(self.lock(g)); // publishes the new group's summaries
        }
        Ok(())
    }

    /// Shrinks the space to `new_capacity` blocks (see [`ExtentAllocator::shrink`]):
    /// groups wholly past it go, and the group it falls in is cut. Only a tail of
    /// Free, unpinned blocks can go.
    ///
    /// # Errors
    ///
    /// [`ResizeError::NotSmaller`] above the capacity; [`ResizeError::InUse`] and
    /// [`ResizeError::Pinned`] for the first block of the tail that cannot go; and
    /// [`ResizeError::Reserved`], with the figures of the group whose reservations
    /// would not fit. Nothing changes.
    ///
    /// ```
    /// use pinalloc::{Extent, Request, SharedAllocator};
    /// let mut alloc = SharedAllocator::builder(128).groups(8).build();
    /// let pin = alloc.pin(Extent::new(100, 1))?.into_id();
    /// assert!(alloc.shrink(64).is_err());
    /// alloc.unpin(pin)?;
    /// alloc.shrink(64)?;
    /// assert_eq!((alloc.capacity_blocks(), alloc.group_count()), (64, 4));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn shrink(&mut self, new_capacity: u64) -> Result<(), ResizeError> {
        if !ResizeError::shrinking(self.capacity, new_capacity)? {
            return Ok(());
        }
        // The groups the tail touches, in address order: the one it starts in, and
        // every one after. Each is checked before any is cut: the blocks first, as
        // one core checks them, then the reservations.
        let first = self.group_of(new_capacity);
        let from = |g: usize| new_capacity.max(self.groups[g].range.start);
        for g in first..self.groups.len() {
            self.lock(g).check_tail_blocks(from(g))?;
        }
        for g in first..self.groups.len() {
            self.lock(g).check_tail_reserved(from(g))?;
        }
        // The groups with blocks below the new end stay (group 0 always), and the
        // last of them is cut at it.
        let keep = if new_capacity == 0 {
            1
        } else {
            self.group_of(new_capacity - 1) + 1
        };
        let cut = keep - 1;
        if self.groups[cut].range.end > new_capacity {
            self.lock(cut).cut_tail(new_capacity);
            self.groups[cut].range.end = new_capacity;
        }
        let mut groups: Vec<Group> = core::mem::take(&mut self.groups).into_vec();
        groups.truncate(keep);
        self.groups = groups.into_boxed_slice();
        self.epochs.get_mut().drop_groups(keep);
        *self.pressure_cursor.get_mut() = super::pins::PressureCursor::default();
        self.capacity = new_capacity;
        Ok(())
    }
}

impl SharedAllocator {
    /// Allocates exactly `extent` (inside the space, not empty) if every block of it
    /// is Free and unpinned and each group's reservations still fit without it, in
    /// every group at once; otherwise the first block that cannot be taken, as a
    /// shrink names it, and nothing changes. A region holds its tail this way while
    /// its backing shrinks, and gives it back with a free.
    pub(crate) fn take_free_run(&self, extent: Extent) -> Result<(), ResizeError> {
        let r = extent.start..extent.start + extent.len;
        let gs = self.groups_of(&r);
        let pieces: Vec<(usize, Extent)> = self.pieces(&r).collect();
        let mut locked = self.lock_all(gs);
        for ((_, piece), core) in pieces.iter().zip(&locked) {
            core.check_free_run(piece.start..piece.start + piece.len)?;
        }
        for ((_, piece), core) in pieces.iter().zip(&locked) {
            core.check_reserved_without(piece.len)?;
        }
        for ((_, piece), core) in pieces.iter().zip(&mut locked) {
            core.take_free_run(piece.start..piece.start + piece.len);
        }
        Ok(())
    }

    /// Makes `extent` (inside the space, not empty), which a region holds itself
    /// (taken by [`take_free_run`](Self::take_free_run), or past its backing), Free
    /// at once, in every group at once, whatever readers are live: they never saw
    /// these blocks. Wakes waiters.
    pub(crate) fn give_back_run(&self, extent: Extent) {
        let r = extent.start..extent.start + extent.len;
        let gs = self.groups_of(&r);
        let pieces: Vec<(usize, Extent)> = self.pieces(&r).collect();
        let mut locked = self.lock_all(gs);
        for ((_, piece), core) in pieces.iter().zip(&mut locked) {
            core.give_back_run(piece.start..piece.start + piece.len);
        }
        drop(locked);
        self.released();
    }
}
