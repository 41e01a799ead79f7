//! [`Allocation`]: an owned extent of a region, with its bytes.

use core::fmt;

use super::span::Span;
use super::{Pinned, PinnedMut, Refused, RegionError};
use crate::Extent;
use crate::backing::{Backing, MemoryBacking};

/// Blocks of a [`Region`](crate::Region), owned: reads and writes their bytes, pins
/// them for devices, truncates, and frees.
///
/// **Dropping an allocation frees it** (discarding its bytes if the region discards).
/// A handle that forgot to free would otherwise leak its blocks for as long as the
/// region lives, and a leak is the harder bug to find; a use after free cannot happen,
/// since the handle is gone. Keep blocks allocated past the handle with
/// [`into_extent`](Self::into_extent) (a filesystem records the extent in an inode) and
/// take them back with [`Region::attach`](crate::Region::attach). Call
/// [`free`](Self::free) to see a discard's error, which a drop can only count.
///
/// Byte access follows Rust's borrow rules across threads and pin guards: reads need
/// `&self` and no live [`PinnedMut`]; writes need `&mut self` and no live pin guard of
/// this allocation. Otherwise the call returns [`RegionError::Lent`].
///
/// ```
/// use pinalloc::{FileBacking, Region, Request};
///
/// # let dir = std::env::temp_dir().join(format!("pinalloc-doc-alloc-{}", std::process::id()));
/// # std::fs::create_dir_all(&dir).unwrap();
/// let region = Region::new(FileBacking::open(dir.join("data"), 1 << 20)?, 4096)?;
/// let mut a = region.allocate(Request::new(4))?;
/// a.write_at(10, b"hello")?;
/// let mut out = [0; 5];
/// a.read_at(10, &mut out)?;
/// assert_eq!(&out, b"hello");
/// a.truncate(1)?;                      // blocks 1..4 go back (a hole is punched)
/// assert_eq!(a.len_bytes(), 4096);
/// drop(a);                             // frees the rest
/// assert_eq!(region.stats().space.free_blocks, 256);
/// # std::fs::remove_dir_all(&dir).unwrap();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Allocation<B: Backing> {
    /// The right to the bytes; dropping it frees what is left.
    span: Span<B>,
}

impl<B: Backing> Allocation<B> {
    pub(super) fn new(span: Span<B>) -> Self {
        Self { span }
    }

    /// The blocks owned.
    ///
    /// ```
    /// # use pinalloc::{Extent, HeapBacking, Region, Request};
    /// # let region = Region::new(HeapBacking::new(4096)?, 512)?;
    /// let a = region.allocate(Request::new(3))?;
    /// assert_eq!(a.extent(), Extent::new(0, 3));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn extent(&self) -> Extent {
        self.span.extent()
    }

    /// Where the bytes start in the backing.
    ///
    /// ```
    /// # use pinalloc::{HeapBacking, Policy, Region, Request};
    /// # let region = Region::new(HeapBacking::new(4096)?, 512)?;
    /// let a = region.allocate(Request::new(1).policy(Policy::Exact(2)))?;
    /// assert_eq!(a.offset_bytes(), 1024);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn offset_bytes(&self) -> u64 {
        self.span.bytes().start
    }

    /// How many bytes are owned: the blocks times the block size.
    ///
    /// ```
    /// # use pinalloc::{HeapBacking, Region, Request};
    /// # let region = Region::new(HeapBacking::new(4096)?, 512)?;
    /// assert_eq!(region.allocate(Request::new(3))?.len_bytes(), 1536);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn len_bytes(&self) -> u64 {
        let bytes = self.span.bytes();
        bytes.end - bytes.start
    }

    /// Reads `buf.len()` bytes at `offset_bytes` from the start of the allocation.
    ///
    /// # Errors
    ///
    /// [`RegionError::AccessOutOfBounds`] past the end; [`RegionError::Lent`] while a
    /// [`PinnedMut`] of this allocation lives; [`RegionError::Backing`] when the I/O
    /// fails.
    ///
    /// ```
    /// # use pinalloc::{HeapBacking, Region, Request};
    /// # let region = Region::new(HeapBacking::new(4096)?, 512)?;
    /// let a = region.allocate(Request::new(1))?;
    /// let mut out = [1; 4];
    /// a.read_at(508, &mut out)?;
    /// assert_eq!(out, [0; 4]);               // fresh memory is zeroed
    /// assert!(a.read_at(510, &mut out).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn read_at(&self, offset_bytes: u64, buf: &mut [u8]) -> Result<(), RegionError> {
        self.span
            .read_at(offset_bytes, buf)
            .map_err(|r| RegionError::refused(r, self.span.extent()))
    }

    /// Writes `buf` at `offset_bytes` from the start of the allocation.
    ///
    /// # Errors
    ///
    /// [`RegionError::AccessOutOfBounds`] past the end; [`RegionError::Lent`] while any pin
    /// guard of this allocation lives; [`RegionError::Backing`] when the I/O fails
    /// (the bytes may then be partly written).
    ///
    /// ```
    /// # use pinalloc::{HeapBacking, Region, RegionError, Request};
    /// # let region = Region::new(HeapBacking::new(4096)?, 512)?;
    /// let mut a = region.allocate(Request::new(1))?;
    /// a.write_at(0, b"abc")?;
    /// let pin = a.pin()?;
    /// assert!(matches!(a.write_at(0, b"x"), Err(RegionError::Lent { .. })));
    /// drop(pin);
    /// a.write_at(0, b"x")?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn write_at(&mut self, offset_bytes: u64, buf: &[u8]) -> Result<(), RegionError> {
        self.span
            .write_at(offset_bytes, buf)
            .map_err(|r| RegionError::refused(r, self.span.extent()))
    }

    /// A shared pin: the blocks stay Allocated or Deferred, never handed out again,
    /// until the guard drops, even if this allocation is freed meanwhile. The guard
    /// reads the bytes; this allocation may still read them but not write them.
    ///
    /// # Errors
    ///
    /// [`RegionError::Lent`] while a [`PinnedMut`] of this allocation lives;
    /// [`RegionError::Pin`] if the allocator refuses the pin.
    ///
    /// ```
    /// # use pinalloc::{HeapBacking, Region, Request};
    /// # let region = Region::new(HeapBacking::new(4096)?, 512)?;
    /// let mut a = region.allocate(Request::new(2))?;
    /// a.write_at(0, b"to disk")?;
    /// let (w1, w2) = (a.pin()?, a.pin()?);     // two writes to mirrors in flight
    /// let mut out = [0; 7];
    /// w2.read_at(0, &mut out)?;
    /// assert_eq!(&out, b"to disk");
    /// # drop(w1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn pin(&self) -> Result<Pinned<B>, RegionError> {
        let lent = self
            .span
            .lend()
            .map_err(|r| RegionError::refused(r, self.span.extent()))?;
        Ok(Pinned::new(lent))
    }

    /// An exclusive pin, for a device that writes: as [`pin`](Self::pin), and the
    /// guard may also write, while this allocation may neither read nor write until it
    /// drops.
    ///
    /// # Errors
    ///
    /// [`RegionError::Lent`] while any pin guard of this allocation lives;
    /// [`RegionError::Pin`] if the allocator refuses the pin.
    ///
    /// ```
    /// # use pinalloc::{HeapBacking, Region, RegionError, Request};
    /// # let region = Region::new(HeapBacking::new(4096)?, 512)?;
    /// let mut a = region.allocate(Request::new(1))?;
    /// let mut dma = a.pin_mut()?;
    /// dma.write_at(0, b"from the device")?;
    /// assert!(matches!(a.read_at(0, &mut [0; 4]), Err(RegionError::Lent { .. })));
    /// drop(dma);
    /// let mut out = [0; 4];
    /// a.read_at(0, &mut out)?;
    /// assert_eq!(&out, b"from");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn pin_mut(&mut self) -> Result<PinnedMut<B>, RegionError> {
        let lent = self
            .span
            .lend_exclusive()
            .map_err(|r| RegionError::refused(r, self.span.extent()))?;
        Ok(PinnedMut::new(lent))
    }

    /// Keeps the first `len_blocks` blocks and frees the rest. Freed blocks that a pin
    /// guard still covers stay Deferred (and readable through the guard) until it
    /// drops; the others become Free at once, discarded first if the region discards.
    ///
    /// # Errors
    ///
    /// [`RegionError::Truncate`] for zero blocks or more than the allocation has;
    /// [`RegionError::Backing`] when the discard fails. Either way nothing changed
    /// (after a failed discard the tail's bytes are unspecified).
    ///
    /// ```
    /// # use pinalloc::{Extent, HeapBacking, Region, Request};
    /// # let region = Region::new(HeapBacking::new(4096)?, 512)?;
    /// let mut a = region.allocate(Request::new(8))?;
    /// a.truncate(3)?;
    /// assert_eq!(a.extent(), Extent::new(0, 3));
    /// assert!(a.truncate(0).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn truncate(&mut self, len_blocks: u64) -> Result<(), RegionError> {
        let extent = self.span.extent();
        if len_blocks == 0 || len_blocks > extent.len {
            return Err(RegionError::Truncate { extent, len_blocks });
        }
        self.give_up(len_blocks)
    }

    /// Frees every block: those a pin guard covers become Deferred until it drops,
    /// the others Free at once (discarded first if the region discards).
    ///
    /// # Errors
    ///
    /// When the discard fails ([`RegionError::Backing`]): the error and this handle,
    /// unchanged but for its bytes, which are then unspecified. Retry; or drop it, which
    /// tries the discard once more and, if that fails too, frees without it.
    ///
    /// ```
    /// # use pinalloc::{HeapBacking, Region, Request};
    /// # let region = Region::new(HeapBacking::new(4096)?, 512)?;
    /// let a = region.allocate(Request::new(8))?;
    /// a.free()?;
    /// assert_eq!(region.stats().space.free_blocks, 8);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[allow(clippy::result_large_err)] // the handle must come back by value; a cold path
    pub fn free(mut self) -> Result<(), Refused<Self>> {
        match self.give_up(0) {
            Ok(()) => Ok(()),
            Err(error) => Err(Refused::new(error, self)),
        }
    }

    /// Frees every block as part of the open epoch's transaction, as
    /// [`SharedAllocator::free_on_commit`](crate::SharedAllocator::free_on_commit):
    /// they stay Deferred, bytes intact, until [`Region::commit`](crate::Region::commit)
    /// (or [`finish_commit`](crate::Region::finish_commit)) of the epoch, the end of
    /// every reader that began by then, and the drop of every pin guard over them.
    /// Then they are discarded (if the region discards) and become Free, whichever of
    /// those came last. Blocks allocated in the open epoch, which no commit or reader
    /// saw, go at once, as a plain free's. [`Region::abort`](crate::Region::abort) of
    /// the epoch makes the others Allocated again, undiscarded, and detached:
    /// [`Region::attach`](crate::Region::attach) takes them back.
    ///
    /// # Errors
    ///
    /// [`RegionError::Pin`] or [`RegionError::Free`] if the allocator refuses: the
    /// error and this handle, unchanged.
    ///
    /// ```
    /// use pinalloc::{BlockState, HeapBacking, Region, Request};
    ///
    /// let region = Region::new(HeapBacking::new(8 * 512)?, 512)?;
    /// let mut page = region.allocate(Request::new(2))?;
    /// page.write_at(0, b"old root")?;
    /// region.commit(region.epoch())?;            // the page is on disk
    /// let e = page.extent();
    /// page.free_on_commit()?;                    // the new tree no longer needs it
    /// assert_eq!(region.state_of(e.start), Some(BlockState::Deferred));
    /// region.commit(region.epoch())?;            // now it may go
    /// assert_eq!(region.state_of(e.start), Some(BlockState::Free));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[allow(clippy::result_large_err)] // the handle must come back by value; a cold path
    pub fn free_on_commit(mut self) -> Result<(), Refused<Self>> {
        let extent = self.span.extent();
        match self.span.free_on_commit() {
            Ok(_) => Ok(()),
            Err(r) => Err(Refused::new(RegionError::refused(r, extent), self)),
        }
    }

    /// Gives up the handle but keeps the blocks Allocated ("detached"), for a caller
    /// that records the extent elsewhere; [`Region::attach`](crate::Region::attach)
    /// takes them back.
    ///
    /// # Errors
    ///
    /// [`RegionError::Lent`] while a pin guard of this allocation lives (its bytes
    /// would have two users): the error and this handle, unchanged.
    ///
    /// ```
    /// # use pinalloc::{BlockState, HeapBacking, Region, Request};
    /// # let region = Region::new(HeapBacking::new(4096)?, 512)?;
    /// let e = region.allocate(Request::new(2))?.into_extent().unwrap();
    /// assert_eq!(region.state_of(e.start), Some(BlockState::Allocated));
    /// assert_eq!(region.detached_extents(), [e]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[allow(clippy::result_large_err)] // the handle must come back by value; a cold path
    pub fn into_extent(self) -> Result<Extent, Refused<Self>> {
        match self.span.detach() {
            Ok(extent) => Ok(extent),
            Err(span) => {
                let extent = span.extent();
                Err(Refused::new(RegionError::Lent { extent }, Self { span }))
            }
        }
    }

    /// Gives up and frees the blocks past the first `keep_blocks`, discarding them
    /// first if the region discards.
    fn give_up(&mut self, keep_blocks: u64) -> Result<(), RegionError> {
        let extent = self.span.extent();
        let discard = self.span.discards();
        self.span
            .give_up(keep_blocks, discard)
            .map_err(|r| RegionError::refused(r, extent))
    }
}

impl<B: MemoryBacking> Allocation<B> {
    /// The bytes, as a slice.
    ///
    /// # Errors
    ///
    /// [`RegionError::Lent`] while a [`PinnedMut`] of this allocation lives.
    ///
    /// ```
    /// # use pinalloc::{HeapBacking, Region, Request};
    /// # let region = Region::new(HeapBacking::new(4096)?, 512)?;
    /// let a = region.allocate(Request::new(2))?;
    /// assert_eq!(a.as_slice()?.len(), 1024);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn as_slice(&self) -> Result<&[u8], RegionError> {
        self.span
            .as_slice()
            .map_err(|r| RegionError::refused(r, self.span.extent()))
    }

    /// The bytes, as a mutable slice.
    ///
    /// # Errors
    ///
    /// [`RegionError::Lent`] while any pin guard of this allocation lives.
    ///
    /// ```
    /// # use pinalloc::{HeapBacking, Region, Request};
    /// # let region = Region::new(HeapBacking::new(4096)?, 512)?;
    /// let mut a = region.allocate(Request::new(1))?;
    /// a.as_mut_slice()?.copy_from_slice(&[7; 512]);
    /// assert_eq!(a.as_slice()?[511], 7);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn as_mut_slice(&mut self) -> Result<&mut [u8], RegionError> {
        let extent = self.span.extent();
        self.span
            .as_mut_slice()
            .map_err(|r| RegionError::refused(r, extent))
    }
}

impl<B: Backing> fmt::Debug for Allocation<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Allocation")
            .field("span", &self.span)
            .finish()
    }
}
