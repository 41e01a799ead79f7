//! [`Region`]: a backing, a block size and a [`SharedAllocator`] over the backing's
//! blocks, with owned allocations and pin guards that give access to the memory.
//!
//! Every block-state change and byte access of this layer goes through `span.rs`, the
//! one module here allowed `unsafe`, whose rules (one span per allocated extent, lends
//! that outlive their owner) make them safe whatever the rest of the layer does. The
//! rest holds no `unsafe` code. `space.rs` keeps the backing, its allocator and who
//! holds which blocks.

use core::time::Duration;
use std::sync::Arc;
use std::vec::Vec;

use crate::backing::{Backing, BackingError};
use crate::{BuildError, Extent, Request, SharedAllocator, SharedCounters, Stats};
use space::Space;
use span::Span;

mod allocation;
mod epochs;
mod error;
mod pinned;
mod resize;
pub(crate) mod space;
#[allow(unsafe_code)] // the one module of this layer that may: see its docs
pub(crate) mod span;

pub use allocation::Allocation;
pub use epochs::RegionReadGuard;
pub use error::{Refused, RegionError};
pub use pinned::{Pinned, PinnedMut};

/// A backing, cut into blocks and allocated by a [`SharedAllocator`], with owned
/// allocations and pin guards that keep memory valid for devices.
///
/// Blocks are `block_bytes` long; block `b` is bytes `b * block_bytes ..
/// (b + 1) * block_bytes` of the backing, and any tail shorter than a block is unused.
///
/// # The promise, in types
///
/// - [`allocate`](Self::allocate) gives an [`Allocation`]: it owns its bytes, reads and
///   writes them, and frees them when dropped (or by [`Allocation::free`]).
/// - [`Allocation::pin`] and [`pin_mut`](Allocation::pin_mut) give guards
///   ([`Pinned`], [`PinnedMut`]) that keep the bytes valid and never handed to another
///   allocation until they drop, even if the allocation is freed or truncated
///   meanwhile. A guard owns what it needs (the allocator and the backing), so it may
///   outlive the allocation and the `Region` value itself.
/// - Released space is discarded (pages dropped, holes punched, or zeroed in place for
///   a preallocated mapping) as its blocks become
///   Free: just before, by the last holder, once no one else can reach the bytes; never
///   while another pin or the owner still holds them.
///   [`RegionBuilder::discard_released`] turns that off.
///
/// `Region` is a cheap handle: clones share one region.
///
/// ```
/// use pinalloc::{HeapBacking, Region, Request};
///
/// let region = Region::new(HeapBacking::new(1 << 20)?, 4096)?;   // 256 blocks of 4 KiB
/// let mut buf = region.allocate(Request::new(2))?;
/// buf.as_mut_slice()?.fill(0xAB);
///
/// let mut dma = buf.pin_mut()?;          // hand the buffer to a "device"
/// dma.as_mut_slice()[0] = 1;             // the device writes
/// buf.free()?;                           // truncate the file: the blocks stay Deferred
/// assert_eq!(region.stats().space.deferred_blocks, 2);
/// assert_eq!(dma.as_slice()[..2], [1, 0xAB]); // still the device's memory
/// drop(dma);                             // I/O done: Free (and discarded) now
/// assert_eq!(region.stats().space.free_blocks, 256);
/// region.check_invariants()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Region<B: Backing> {
    space: Arc<Space<B>>,
}

impl<B: Backing> Clone for Region<B> {
    fn clone(&self) -> Self {
        Self {
            space: Arc::clone(&self.space),
        }
    }
}

impl<B: Backing> core::fmt::Debug for Region<B> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Region")
            .field("block_bytes", &self.space.block_bytes)
            .field("capacity_blocks", &self.space.backed())
            .field(
                "max_capacity_blocks",
                &self.space.allocator.capacity_blocks(),
            )
            .field("discard", &self.space.discard)
            .finish_non_exhaustive()
    }
}

/// Settings for a [`Region`]; from [`Region::builder`].
///
/// ```
/// use pinalloc::{HeapBacking, Region};
/// let region = Region::builder(HeapBacking::new(1 << 20)?, 4096)
///     .groups(4)
///     .discard_released(false)
///     .build()?;
/// assert_eq!(region.capacity_blocks(), 256);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct RegionBuilder<B: Backing> {
    backing: B,
    block_bytes: u64,
    groups: Option<u64>,
    discard: bool,
    max_blocks: Option<u64>,
}

impl<B: Backing> RegionBuilder<B> {
    /// Allocation groups, as [`SharedBuilder::groups`](crate::SharedBuilder::groups).
    ///
    /// ```
    /// # use pinalloc::{HeapBacking, Region};
    /// let r = Region::builder(HeapBacking::new(1 << 20)?, 4096).groups(2).build()?;
    /// assert_eq!(r.stats().space.capacity_blocks, 256);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn groups(mut self, count: u64) -> Self {
        self.groups = Some(count);
        self
    }

    /// Whether released space is discarded (default `true`): when blocks become Free,
    /// the backing drops their pages or punches a hole (a
    /// [preallocated](crate::MmapBacking::open_preallocated) mapping zeroes them and
    /// keeps its blocks), and they read as zeros. Off, freed blocks keep their old
    /// bytes, which saves a syscall (or, for the heap, a memset) per free.
    ///
    /// ```
    /// # use pinalloc::{HeapBacking, Region, Request};
    /// let r = Region::builder(HeapBacking::new(4096)?, 512).discard_released(false).build()?;
    /// r.allocate(Request::new(1))?.free()?;
    /// assert_eq!(r.stats().discards, 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn discard_released(mut self, discard: bool) -> Self {
        self.discard = discard;
        self
    }

    /// A region whose blocks are all Free.
    ///
    /// # Errors
    ///
    /// [`RegionError::BlockSize`] when the block size is zero or larger than the
    /// backing.
    ///
    /// ```
    /// # use pinalloc::{HeapBacking, Region, RegionError};
    /// let err = Region::builder(HeapBacking::new(4096)?, 8192).build().unwrap_err();
    /// assert!(matches!(err, RegionError::BlockSize { block_bytes: 8192, backing_bytes: 4096 }));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn build(self) -> Result<Region<B>, RegionError> {
        let capacity = self.capacity_blocks()?;
        self.open([Extent::new(0, capacity)])
    }

    /// Lets the region [grow](Region::grow) up to `max_blocks` blocks, as far as the
    /// backing can ([`Backing::max_len_bytes`]): without it, a region grows to what
    /// the backing may grow to. Blocks past the backing's length cost nothing but one
    /// extent in the allocator.
    ///
    /// ```
    /// # use pinalloc::{MmapBacking, Region};
    /// let r = Region::builder(MmapBacking::anonymous_growable(4096, 1 << 20)?, 512)
    ///     .max_blocks(64)
    ///     .build()?;
    /// assert_eq!((r.capacity_blocks(), r.max_capacity_blocks()), (8, 64));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn max_blocks(mut self, max_blocks: u64) -> Self {
        self.max_blocks = Some(max_blocks);
        self
    }

    /// A region whose Free blocks are exactly `free` (reopening: pass the
    /// [`durable_free_extents`](Region::durable_free_extents) saved before). Every other
    /// block is Allocated and detached: [`Region::attach`] takes it back into a handle.
    ///
    /// # Errors
    ///
    /// [`RegionError::BlockSize`] as [`build`](Self::build); [`RegionError::Build`]
    /// when `free` overlaps itself or leaves the space.
    ///
    /// ```
    /// use pinalloc::{Extent, HeapBacking, Region};
    /// let r = Region::builder(HeapBacking::new(16 * 512)?, 512)
    ///     .from_free_extents([Extent::new(4, 12)])?;
    /// assert_eq!(r.free_extents(), [Extent::new(4, 12)]);
    /// assert_eq!(r.detached_extents(), [Extent::new(0, 4)]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_free_extents(
        self,
        free: impl IntoIterator<Item = Extent>,
    ) -> Result<Region<B>, RegionError> {
        self.open(free)
    }

    fn capacity_blocks(&self) -> Result<u64, RegionError> {
        let backing_bytes = self.backing.len_bytes();
        match backing_bytes.checked_div(self.block_bytes) {
            Some(blocks) if blocks > 0 => Ok(blocks),
            _ => Err(RegionError::BlockSize {
                block_bytes: self.block_bytes,
                backing_bytes,
            }),
        }
    }

    fn open(self, free: impl IntoIterator<Item = Extent>) -> Result<Region<B>, RegionError> {
        let capacity = self.capacity_blocks()?;
        // The allocator spans what the backing may grow to; the blocks past its
        // length now are held Allocated until a growth frees them.
        // (A backing that says it may grow to less than it has cannot grow.)
        let max = (self.backing.max_len_bytes() / self.block_bytes)
            .min(self.max_blocks.unwrap_or(u64::MAX))
            .max(capacity);
        let free: Vec<Extent> = free.into_iter().collect();
        for e in &free {
            e.within(capacity).map_err(BuildError::from)?;
        }
        let mut builder = SharedAllocator::builder(max);
        if let Some(groups) = self.groups {
            builder = builder.groups(groups);
        }
        let allocator = builder.from_free_extents(free)?;
        let space = Space::new(self.backing, self.block_bytes, allocator, self.discard);
        Ok(Region {
            space: Arc::new(space),
        })
    }
}

/// A snapshot of a [`Region`]: its allocator's space and the region's own counters.
///
/// ```
/// # use pinalloc::{HeapBacking, Region, Request};
/// let r = Region::new(HeapBacking::new(8 * 512)?, 512)?;
/// r.allocate(Request::new(3))?.free()?;
/// let s = r.stats();
/// assert_eq!((s.discards, s.discarded_bytes), (1, 3 * 512));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct RegionStats {
    /// The whole space, as [`SharedStats::space`](crate::SharedStats::space) gives
    /// it: the same field, one level deep, as on the other layers.
    pub space: Stats,
    /// The number of allocation groups.
    pub groups: u64,
    /// The allocator's own counters
    /// ([`SharedStats::counters`](crate::SharedStats::counters)).
    pub counters: SharedCounters,
    /// Allocated blocks no handle owns (see [`Region::attach`]).
    pub detached_blocks: u64,
    /// Discards issued to the backing.
    pub discards: u64,
    /// Bytes those discards covered.
    pub discarded_bytes: u64,
    /// Discards that failed where no caller could be told (in a `Drop`); their blocks
    /// were released anyway, with unspecified contents.
    pub discard_failures: u64,
}

impl<B: Backing> Region<B> {
    /// A region over `backing` with blocks of `block_bytes`, all Free, discarding
    /// released space.
    ///
    /// # Errors
    ///
    /// [`RegionError::BlockSize`] when `block_bytes` is zero or larger than the backing.
    ///
    /// ```
    /// use pinalloc::{HeapBacking, Region};
    /// let region = Region::new(HeapBacking::new(1 << 20)?, 4096)?;
    /// assert_eq!(region.capacity_blocks(), 256);
    /// assert!(Region::new(HeapBacking::new(4096)?, 0).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new(backing: B, block_bytes: u64) -> Result<Self, RegionError> {
        Self::builder(backing, block_bytes).build()
    }

    /// Settings beyond [`new`](Self::new)'s.
    ///
    /// ```
    /// # use pinalloc::{HeapBacking, Region};
    /// let region = Region::builder(HeapBacking::new(4096)?, 512).groups(1).build()?;
    /// assert_eq!(region.block_bytes(), 512);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn builder(backing: B, block_bytes: u64) -> RegionBuilder<B> {
        RegionBuilder {
            backing,
            block_bytes,
            groups: None,
            discard: true,
            max_blocks: None,
        }
    }

    /// Allocates blocks as the request says and hands back their owner.
    ///
    /// # Errors
    ///
    /// [`RegionError::Alloc`] with the allocator's reason.
    ///
    /// ```
    /// # use pinalloc::{Extent, HeapBacking, Policy, Region, Request};
    /// let region = Region::new(HeapBacking::new(64 * 512)?, 512)?;
    /// let a = region.allocate(Request::new(4).policy(Policy::Exact(8)))?;
    /// assert_eq!(a.extent(), Extent::new(8, 4));
    /// assert_eq!(a.offset_bytes(), 8 * 512);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn allocate(&self, request: Request) -> Result<Allocation<B>, RegionError> {
        let span = Span::allocate(&self.space, request)?;
        Ok(Allocation::new(span))
    }

    /// As [`allocate`](Self::allocate), waiting up to `timeout` for pinned or deferred
    /// blocks to be released when the request cannot be placed now.
    ///
    /// # Errors
    ///
    /// As [`SharedAllocator::allocate_wait`].
    ///
    /// ```
    /// # use pinalloc::{HeapBacking, Region, Request};
    /// # use std::time::Duration;
    /// let region = Region::new(HeapBacking::new(4 * 512)?, 512)?;
    /// let mut a = region.allocate(Request::new(4))?;
    /// let pin = a.pin()?;
    /// a.free()?;                                   // Deferred while pinned
    /// std::thread::scope(|s| {
    ///     s.spawn(move || drop(pin));              // the device finishes
    ///     let b = region.allocate_wait(Request::new(4), Duration::from_secs(10));
    ///     assert!(b.is_ok());
    /// });
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn allocate_wait(
        &self,
        request: Request,
        timeout: Duration,
    ) -> Result<Allocation<B>, RegionError> {
        let span = Span::allocate_wait(&self.space, request, timeout)?;
        Ok(Allocation::new(span))
    }

    /// Takes detached blocks (Allocated, but owned by no handle: found at open time, or
    /// given up by [`Allocation::into_extent`]) back into a handle.
    ///
    /// # Errors
    ///
    /// [`RegionError::BadExtent`] for a malformed extent, and
    /// [`RegionError::NotDetached`] when any block of `extent` is not detached;
    /// nothing changes.
    ///
    /// ```
    /// # use pinalloc::{Extent, HeapBacking, Region, RegionError, Request};
    /// let region = Region::new(HeapBacking::new(8 * 512)?, 512)?;
    /// let mut a = region.allocate(Request::new(3))?;
    /// a.write_at(0, b"kept")?;
    /// let e = a.into_extent().map_err(RegionError::from)?; // e.g. recorded in an inode
    /// assert!(matches!(region.attach(Extent::new(e.start, 4)), Err(RegionError::NotDetached { .. })));
    /// let a = region.attach(e)?;
    /// let mut out = [0; 4];
    /// a.read_at(0, &mut out)?;
    /// assert_eq!(&out, b"kept");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn attach(&self, extent: Extent) -> Result<Allocation<B>, RegionError> {
        extent.within(self.capacity_blocks())?;
        let span = Span::attach(&self.space, extent).ok_or(RegionError::NotDetached { extent })?;
        Ok(Allocation::new(span))
    }

    /// The detached extents (Allocated, owned by no handle), in address order.
    ///
    /// ```
    /// # use pinalloc::{HeapBacking, Region};
    /// let region = Region::new(HeapBacking::new(4096)?, 512)?;
    /// assert!(region.detached_extents().is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn detached_extents(&self) -> Vec<Extent> {
        self.space.detached_extents()
    }

    /// Bytes per block.
    ///
    /// ```
    /// # use pinalloc::{HeapBacking, Region};
    /// assert_eq!(Region::new(HeapBacking::new(4096)?, 512)?.block_bytes(), 512);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn block_bytes(&self) -> u64 {
        self.space.block_bytes
    }

    /// Makes every block Free again, as a new region over the same backing: the
    /// allocator reset (see [`SharedAllocator::reset`]), the detached blocks
    /// forgotten, and, with discards on, every block's bytes discarded. Only a
    /// region that nothing else shares can be reset: no clone, allocation or pin
    /// guard alive, as each holds the blocks it may touch. The discard counters go on
    /// counting.
    ///
    /// # Errors
    ///
    /// [`RegionError::Shared`] while anything shares the region, and
    /// [`RegionError::Backing`] when the discard fails; the allocator is unchanged
    /// on either (a failed discard may have changed the bytes).
    ///
    /// ```
    /// use pinalloc::{HeapBacking, Region, RegionError, Request};
    ///
    /// let mut region = Region::new(HeapBacking::new(4096)?, 512)?;
    /// let a = region.allocate(Request::new(2))?;
    /// assert!(matches!(region.reset(), Err(RegionError::Shared { holders: 1 })));
    /// a.into_extent()?; // blocks stay Allocated, owned by no handle
    /// region.reset()?;
    /// assert!(region.is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn reset(&mut self) -> Result<(), RegionError> {
        let holders = Arc::strong_count(&self.space) - 1;
        let space = Arc::get_mut(&mut self.space).ok_or(RegionError::Shared { holders })?;
        space.reset().map_err(RegionError::Backing)
    }

    /// Whether every block is Free: nothing Allocated (by a handle or detached),
    /// nothing Deferred. See [`SharedAllocator::is_empty`].
    ///
    /// ```
    /// # use pinalloc::{HeapBacking, Region, Request};
    /// let region = Region::new(HeapBacking::new(4096)?, 512)?;
    /// let a = region.allocate(Request::new(2))?;
    /// assert!(!region.is_empty());
    /// a.free()?;
    /// assert!(region.is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn is_empty(&self) -> bool {
        // Under `resizing`, so that a shrink's tail is counted on one side only.
        let _no_resize = self.space.resizing.lock();
        self.space.allocator.stats().space.free_blocks == self.space.backed()
    }

    /// Blocks in the region: the backing's length over the block size, rounded down.
    ///
    /// ```
    /// # use pinalloc::{HeapBacking, Region};
    /// assert_eq!(Region::new(HeapBacking::new(5000)?, 512)?.capacity_blocks(), 9);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn capacity_blocks(&self) -> u64 {
        self.space.backed()
    }

    /// The backing, for its own queries and [`Backing::sync`]. Its byte methods are
    /// `unsafe`, so this cannot reach the bytes that handles own.
    ///
    /// ```
    /// # use pinalloc::{Backing, HeapBacking, Region};
    /// let region = Region::new(HeapBacking::new(4096)?, 512)?;
    /// assert_eq!(region.backing().len_bytes(), 4096);
    /// region.backing().sync()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn backing(&self) -> &B {
        &self.space.backing
    }

    /// Makes the backing's writes durable: [`Backing::sync`].
    ///
    /// # Errors
    ///
    /// The backing's [`BackingError`].
    ///
    /// ```
    /// # use pinalloc::{HeapBacking, Region};
    /// Region::new(HeapBacking::new(4096)?, 512)?.sync()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn sync(&self) -> Result<(), BackingError> {
        self.space.backing.sync()
    }

    /// The Free extents, in address order: [`SharedAllocator::free_extents`].
    ///
    /// ```
    /// # use pinalloc::{Extent, HeapBacking, Region};
    /// let region = Region::new(HeapBacking::new(4096)?, 512)?;
    /// assert_eq!(region.free_extents(), [Extent::new(0, 8)]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn free_extents(&self) -> Vec<Extent> {
        self.space.allocator.free_extents()
    }

    /// What would be free after a crash and reopen (pins vanish):
    /// [`SharedAllocator::durable_free_extents`]. Save it, and pass it to
    /// [`RegionBuilder::from_free_extents`] when reopening.
    ///
    /// ```
    /// # use pinalloc::{Extent, HeapBacking, Region, Request};
    /// let region = Region::new(HeapBacking::new(4096)?, 512)?;
    /// let mut a = region.allocate(Request::new(8))?;
    /// let _dma = a.pin()?;
    /// a.truncate(2)?;                       // 6 blocks Deferred by the pin
    /// assert_eq!(region.durable_free_extents(), [Extent::new(2, 6)]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn durable_free_extents(&self) -> Vec<Extent> {
        self.space.allocator.durable_free_extents()
    }

    /// The maximal runs of `range` with their states and holds:
    /// [`SharedAllocator::runs`]. O(runs), never O(blocks).
    ///
    /// ```
    /// # use pinalloc::{BlockState, HeapBacking, Region, Request};
    /// let region = Region::new(HeapBacking::new(4096)?, 512)?;
    /// let buf = region.allocate(Request::new(2))?;
    /// let _dma = buf.pin()?;
    /// let runs: Vec<_> = region.runs(0..8).collect();
    /// assert_eq!((runs[0].state, runs[0].pins, runs[1].state), (BlockState::Allocated, 1, BlockState::Free));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn runs(
        &self,
        range: core::ops::Range<u64>,
    ) -> impl Iterator<Item = crate::BlockRun> + use<B> {
        self.space
            .allocator
            .runs(range.start..range.end.min(self.space.backed()))
    }

    /// A picture of the region's blocks as SVG (the `svg` feature): see
    /// [`Picture`](crate::picture::Picture).
    ///
    /// ```
    /// # use pinalloc::{HeapBacking, Region};
    /// use pinalloc::picture::Picture;
    /// let region = Region::new(HeapBacking::new(4096)?, 512)?;
    /// assert!(region.picture(&Picture::new()).contains("</svg>"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[cfg(feature = "svg")]
    #[must_use]
    pub fn picture(&self, picture: &crate::picture::Picture) -> std::string::String {
        let stats = self.stats();
        let capacity = stats.space.capacity_blocks;
        picture.render(capacity, self.runs(0..capacity), &stats.space)
    }

    /// The live pins (the pin guards' and the lends'), whole:
    /// [`SharedAllocator::pins`].
    ///
    /// ```
    /// # use pinalloc::{Extent, HeapBacking, Region, Request};
    /// let region = Region::new(HeapBacking::new(4096)?, 512)?;
    /// let buf = region.allocate(Request::new(2))?;
    /// let _dma = buf.pin()?;
    /// assert_eq!(region.pins()[0].extent, Extent::new(0, 2));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn pins(&self) -> Vec<crate::SharedPinInfo> {
        self.space.allocator.pins()
    }

    /// The pin of a live guard whose [`token`](crate::Pinned::token) is `token`:
    /// [`SharedAllocator::pin_of_token`].
    ///
    /// # Errors
    ///
    /// [`RegionError::Pin`] with [`PinError::UnknownToken`](crate::PinError::UnknownToken)
    /// once the guard has dropped, for another region's token, or one never given.
    ///
    /// ```
    /// # use pinalloc::{HeapBacking, Region, Request};
    /// let region = Region::new(HeapBacking::new(4096)?, 512)?;
    /// assert!(region.pin_of_token(7).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn pin_of_token(&self, token: u64) -> Result<crate::SharedPinId, RegionError> {
        self.space
            .allocator
            .pin_of_token(token)
            .map_err(|e| RegionError::Pin(e.into()))
    }

    /// A block's state: [`SharedAllocator::state_of`].
    ///
    /// ```
    /// # use pinalloc::{BlockState, HeapBacking, Region};
    /// let region = Region::new(HeapBacking::new(4096)?, 512)?;
    /// assert_eq!(region.state_of(0), Some(BlockState::Free));
    /// assert_eq!(region.state_of(8), None);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn state_of(&self, block: u64) -> Option<crate::BlockState> {
        (block < self.space.backed())
            .then(|| self.space.allocator.state_of(block))
            .flatten()
    }

    /// How many pins cover a block: [`SharedAllocator::pin_count`].
    ///
    /// ```
    /// # use pinalloc::{HeapBacking, Region, Request};
    /// let region = Region::new(HeapBacking::new(4096)?, 512)?;
    /// let a = region.allocate(Request::new(2))?;
    /// let (_p, _q) = (a.pin()?, a.pin()?);
    /// assert_eq!(region.pin_count(a.extent().start), 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn pin_count(&self, block: u64) -> u64 {
        if block < self.space.backed() {
            self.space.allocator.pin_count(block)
        } else {
            0
        }
    }

    /// A snapshot of space and the region's counters.
    ///
    /// ```
    /// # use pinalloc::{HeapBacking, Region};
    /// let s = Region::new(HeapBacking::new(4096)?, 512)?.stats();
    /// assert_eq!((s.space.free_blocks, s.detached_blocks), (8, 0));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn stats(&self) -> RegionStats {
        let c = self.space.counts();
        // Under `resizing`: the blocks past the backing are then exactly those the
        // allocator counts as the region's own.
        let no_resize = self.space.resizing.lock();
        let shared = self.space.allocator.stats();
        let backed = self.space.backed();
        drop(no_resize);
        let mut space = shared.space;
        // The blocks past the backing are the region's own, not the user's.
        let unbacked = space.capacity_blocks - backed;
        space.capacity_blocks -= unbacked;
        space.allocated_blocks -= unbacked;
        RegionStats {
            space,
            groups: shared.groups,
            counters: shared.counters,
            detached_blocks: c.detached_blocks,
            discards: c.discards,
            discarded_bytes: c.discarded_bytes,
            discard_failures: c.discard_failures,
        }
    }

    /// Checks the allocator's invariants ([`SharedAllocator::check_invariants`]) and
    /// that no detached block is Free.
    ///
    /// # Errors
    ///
    /// The first violation found.
    ///
    /// ```
    /// # use pinalloc::{HeapBacking, Region};
    /// Region::new(HeapBacking::new(4096)?, 512)?.check_invariants()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn check_invariants(&self) -> Result<(), crate::InvariantViolation> {
        self.space.check_invariants()
    }
}
