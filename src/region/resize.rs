//! Growing and shrinking a region with its backing, while handles and pin guards
//! live: the allocator spans what the backing may grow to from the start, and the
//! blocks past the backing's length are held Allocated by the region until a growth
//! frees them, so nothing that holds a block or a pointer ever moves.

use super::{Region, RegionError, span};
use crate::backing::Backing;
use crate::{Extent, ResizeError};

impl<B: Backing> Region<B> {
    /// The most blocks [`grow`](Self::grow) can reach: what the backing may grow to
    /// ([`Backing::max_len_bytes`]), or less with
    /// [`RegionBuilder::max_blocks`](crate::RegionBuilder::max_blocks).
    ///
    /// ```
    /// # use pinalloc::{HeapBacking, MmapBacking, Region};
    /// assert_eq!(Region::new(HeapBacking::new(4096)?, 512)?.max_capacity_blocks(), 8);
    /// let r = Region::new(MmapBacking::anonymous_growable(4096, 1 << 16)?, 512)?;
    /// assert_eq!(r.max_capacity_blocks(), 128);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn max_capacity_blocks(&self) -> u64 {
        self.space.allocator.capacity_blocks()
    }

    /// Grows the region to `new_capacity` blocks: the backing grows first (a file is
    /// extended with a hole, a [growable mapping](crate::MmapBacking::anonymous_growable)
    /// takes more of the address space it reserved), then the new blocks become Free.
    /// Nothing moves: allocations, pin guards and the pointers they gave devices stay
    /// valid, and other threads go on allocating meanwhile. To the capacity itself it
    /// succeeds and changes nothing.
    ///
    /// # Errors
    ///
    /// Nothing changes on any of them:
    /// - [`RegionError::Resize`] with [`ResizeError::NotLarger`] below the capacity, or
    ///   [`ResizeError::TooLarge`] past [`max_capacity_blocks`](Self::max_capacity_blocks)
    ///   (which is the capacity for a backing of fixed length: a `HeapBacking`, a file
    ///   mapping, a `FileBacking` not made [`with_max_len`](crate::FileBacking::with_max_len));
    /// - [`RegionError::Backing`] when the system refuses the growth.
    ///
    /// ```
    /// use pinalloc::{MmapBacking, Region, Request};
    ///
    /// let region = Region::new(MmapBacking::anonymous_growable(8 * 4096, 1 << 24)?, 4096)?;
    /// let mut buf = region.allocate(Request::new(8))?;     // the region is full
    /// let dma = buf.pin()?;
    /// let device = dma.as_ptr().unwrap();
    /// region.grow(64)?;                                    // while the device holds it
    /// assert_eq!(dma.as_ptr().unwrap(), device);           // nothing moved
    /// let more = region.allocate(Request::new(56))?;
    /// assert_eq!(more.extent().start, 8);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn grow(&self, new_capacity: u64) -> Result<(), RegionError> {
        let _one_at_a_time = self.space.resizing.lock();
        let capacity = self.space.backed();
        if !ResizeError::growing(capacity, new_capacity)? {
            return Ok(());
        }
        let max = self.max_capacity_blocks();
        if new_capacity > max {
            return Err(ResizeError::TooLarge {
                requested: new_capacity,
                max,
            }
            .into());
        }
        span::grow_backing(&self.space, new_capacity)?;
        self.space.set_backed(new_capacity);
        self.space
            .allocator
            .give_back_run(Extent::new(capacity, new_capacity - capacity));
        Ok(())
    }

    /// Shrinks the region to `new_capacity` blocks: only a tail of Free blocks that
    /// no pin covers can go (it is taken first, so no one is handed it meanwhile),
    /// then the backing shrinks (a file is truncated, a growable mapping drops the
    /// pages). The region may grow back later. To the capacity itself it succeeds
    /// and changes nothing. Save the [durable free list](Self::durable_free_extents)
    /// after a shrink: one saved before names blocks the shrunk backing no longer
    /// has, and a reopen refuses it.
    ///
    /// # Errors
    ///
    /// Nothing changes on any of them:
    /// - [`RegionError::Resize`] with [`ResizeError::NotSmaller`] above the capacity,
    ///   [`ResizeError::InUse`] for the first Allocated or Deferred block of the tail,
    ///   [`ResizeError::Pinned`] for the first pinned Free block before any in use,
    ///   or [`ResizeError::Reserved`] when reservations would not fit in what is left;
    /// - [`RegionError::Backing`] when the backing cannot shrink (zero blocks, a
    ///   `HeapBacking`, a file mapping) or the system refuses.
    ///
    /// ```
    /// use pinalloc::{BlockState, MmapBacking, Region, RegionError, Request, ResizeError};
    ///
    /// let region = Region::new(MmapBacking::anonymous_growable(64 * 512, 1 << 20)?, 512)?;
    /// let late = region.allocate(Request::new(4).policy(pinalloc::Policy::Exact(40)))?;
    /// let err = region.shrink(16).unwrap_err();
    /// assert!(matches!(
    ///     err,
    ///     RegionError::Resize(ResizeError::InUse { block: 40, state: BlockState::Allocated })
    /// ));
    /// drop(late);
    /// region.shrink(16)?;
    /// assert_eq!(region.capacity_blocks(), 16);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn shrink(&self, new_capacity: u64) -> Result<(), RegionError> {
        let _one_at_a_time = self.space.resizing.lock();
        let capacity = self.space.backed();
        if !ResizeError::shrinking(capacity, new_capacity)? {
            return Ok(());
        }
        let tail = Extent::new(new_capacity, capacity - new_capacity);
        self.space.allocator.take_free_run(tail)?;
        self.space.set_backed(new_capacity);
        if let Err(e) = span::shrink_backing(&self.space, tail) {
            self.space.set_backed(capacity);
            self.space.allocator.give_back_run(tail);
            return Err(e.into());
        }
        Ok(())
    }
}
