//! [`ExtentAllocator`]: the single-threaded core.

mod allocate;
mod build;
mod check;
mod defer;
mod epochs;
mod free;
mod identity;
#[cfg(feature = "std")]
mod peek;
mod pins;
mod ranges;
mod reserve;
mod resize;
mod runs;
mod transition;

use alloc::collections::BTreeMap;
use core::ops::Range;

use rangemap::RangeSet;

use crate::extent::Fault;
use crate::index::FreeIndex;
use crate::{Counters, Extent, Held, Stats};
use defer::Deferrals;
use epochs::Epochs;
use pins::PinTable;

#[cfg(feature = "std")]
pub(crate) use epochs::reader_table;
pub use epochs::{AbortOutcome, ReaderId, ReaderInfo, ReleaseOutcome};
pub use free::FreeOutcome;
pub(crate) use identity::next_uid;
pub use pins::{PinId, PinInfo, PinMode};
pub use reserve::Reservation;
pub use runs::BlockRun;
#[cfg(feature = "std")]
pub(crate) use runs::push_run;

/// The state of one block: see the table on [`ExtentAllocator`].
///
/// ```
/// use pinalloc::{BlockState, ExtentAllocator, Request};
///
/// let mut alloc = ExtentAllocator::new(4);
/// alloc.allocate(Request::new(1))?;
/// assert_eq!(alloc.state_of(0), Some(BlockState::Allocated));
/// assert_eq!(alloc.state_of(1), Some(BlockState::Free));
/// assert_eq!(alloc.state_of(4), None);
/// # Ok::<(), pinalloc::AllocError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub enum BlockState {
    /// Not owned by anyone; allocatable unless pinned.
    Free,
    /// Owned by a caller.
    Allocated,
    /// Freed by its owner, still held by a pin, an epoch or a reader.
    Deferred,
}

/// The core extent allocator: free space, pins, deferred frees, epochs and
/// reservations over `capacity` blocks.
///
/// It takes no locks and does no I/O (`&mut self` everywhere), and builds as `no_std`
/// with `alloc`. Its metadata grows with the number of extents, pins and deferred
/// ranges, never with the capacity: a space of 2^62 blocks costs what 2^20 does.
///
/// # Block states
///
/// Every block is in exactly one state. Pins are a separate count on any block,
/// whatever its state.
///
/// | state | meaning | can `allocate` return it? |
/// |---|---|---|
/// | Free | not owned by anyone | yes, unless pinned |
/// | Allocated | owned by a caller | no |
/// | Deferred | freed by its owner, still held by a pin, an epoch or a reader | no |
///
/// | call | transition |
/// |---|---|
/// | [`allocate`](Self::allocate) | a Free block with pin count 0 becomes Allocated |
/// | [`free`](Self::free) | every block must be Allocated, or the call fails and changes nothing. Blocks with no hold become Free at once and coalesce; held blocks become Deferred. Block by block: freeing 100 blocks of which 10 are pinned frees 90 and defers 10 |
/// | [`free_on_commit`](Self::free_on_commit) | as `free`, and the blocks also wait for the open epoch to commit, unless they were allocated in it: those were never durable nor visible to readers, so only pins hold them |
/// | [`pin`](Self::pin) | adds 1 to each block's pin count; a pinned Free block leaves the free index |
/// | [`unpin`](Self::unpin) | subtracts 1; a Deferred block whose last hold this was becomes Free, a Free one returns to the index |
/// | [`commit`](Self::commit) | blocks waiting for this epoch stop waiting; unheld ones become Free |
/// | [`begin_read`](Self::begin_read) / [`end_read`](Self::end_read) | a block freed in epoch F stays Deferred while a reader that began at or before F is alive |
/// | [`reserve`](Self::reserve) | no block changes state; other callers may take that many fewer Free blocks |
///
/// With a [`PinMode::Blocking`] pin, a free that overlaps it fails with
/// [`FreeError::Busy`](crate::FreeError::Busy) instead of deferring.
///
/// # Invariants
///
/// [`check_invariants`](Self::check_invariants) recomputes these from scratch:
///
/// 1. `allocate` never returns a block that is Allocated, Deferred, pinned or outside
///    the space: no pinned block is in the free index (and the model tests check every
///    returned extent).
/// 2. Free, Allocated and Deferred are disjoint and cover the space.
/// 3. Every cached counter equals its recount: free, pinned and deferred blocks, pin
///    counts per block, readers, reservations (which never exceed the free index).
/// 4. The free index is fully coalesced: no two free extents touch.
/// 5. Every Deferred block has at least one live hold.
/// 6. A call that returns `Err` leaves the state exactly as it was.
/// 7. Once every pin, reader and reservation is let go of, every epoch committed and
///    every allocation freed, the free space is the whole space: nothing leaked (the
///    model tests end every case this way).
///
/// # Cloning
///
/// A clone is an independent snapshot with an identity of its own. It keeps the
/// original's reservations, pins and readers, but the original's handles
/// ([`Reservation`], [`PinId`], [`ReaderId`]) are refused by the clone, so one handle
/// can never act on both.
///
/// # Panics
///
/// Only past 2^32 - 1 free extents, or 2^32 - 1 live pins, at once (well over 100 GiB
/// of metadata), which the indexes cannot number.
///
/// # Example
///
/// ```
/// use pinalloc::{Extent, ExtentAllocator, Request};
///
/// let mut alloc = ExtentAllocator::new(1 << 20);
/// let file = alloc.allocate(Request::new(64))?;
/// // Truncate the file to 16 blocks while a device still reads blocks 20..24.
/// let dma = alloc.pin(Extent::new(file.start + 20, 4))?;
/// let outcome = alloc.free(Extent::new(file.start + 16, 48))?;
/// assert_eq!((outcome.freed_blocks, outcome.deferred_blocks), (44, 4));
/// alloc.unpin(dma)?;
/// assert_eq!(alloc.stats().allocated_blocks, 16);
/// alloc.check_invariants()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
// `repr(C)`: the fields come in the order written, the counts every call reads
// first and the holds a free checks (epochs, Deferred runs, pins) before the free
// index, so that a shared allocator's group, seldom in the cache, costs fewer lines.
#[derive(Debug)]
#[repr(C)]
pub struct ExtentAllocator {
    /// Blocks `0..capacity` are managed.
    capacity: u64,
    /// Tells this allocator's handles from another's (clones get a new one).
    uid: u64,
    /// Sum of `reservations`' values.
    count_reserved_blocks: u64,
    /// Blocks in `pinned_free`.
    count_pinned_free_blocks: u64,
    /// Id of the next reservation.
    next_reservation_id: u64,
    counters: Counters,
    /// The open epoch and the live readers.
    epochs: Epochs,
    /// Deferred blocks and what they wait for.
    deferrals: Deferrals,
    /// Live pins and per-block pin counts.
    pins: PinTable,
    /// Every Free block whose pin count is 0: what `allocate` may hand out.
    free: FreeIndex,
    /// Free blocks whose pin count is above 0, kept out of the free index.
    pinned_free: RangeSet<u64>,
    /// Outstanding reservations: id → blocks left.
    reservations: BTreeMap<u64, u64>,
    /// The 64-bit tokens of live pins that were given one.
    tokens: crate::tokens::Tokens<PinId>,
}

/// Only states this small are self-checked after every mutation in debug builds, so
/// that tests on large spaces stay fast.
#[cfg(debug_assertions)]
const DEBUG_CHECK_MAX_EXTENTS: usize = 64;

impl ExtentAllocator {
    /// An allocator over blocks `0..capacity_blocks`, all Free.
    ///
    /// ```
    /// use pinalloc::ExtentAllocator;
    ///
    /// let alloc = ExtentAllocator::new(1 << 62); // costs what a small one does
    /// assert_eq!(alloc.stats().free_blocks, 1 << 62);
    /// ```
    #[must_use]
    pub fn new(capacity_blocks: u64) -> Self {
        let mut alloc = Self::empty(capacity_blocks);
        if capacity_blocks > 0 {
            alloc.free.insert(0, capacity_blocks);
        }
        alloc
    }

    /// An allocator over `capacity_blocks` with every block Allocated.
    fn empty(capacity_blocks: u64) -> Self {
        let uid = identity::next_uid();
        ExtentAllocator {
            capacity: capacity_blocks,
            free: FreeIndex::new(),
            pinned_free: RangeSet::new(),
            count_pinned_free_blocks: 0,
            pins: PinTable::new(),
            deferrals: Deferrals::default(),
            epochs: Epochs::new(),
            reservations: BTreeMap::new(),
            count_reserved_blocks: 0,
            next_reservation_id: 1,
            uid,
            counters: Counters::default(),
            tokens: Default::default(),
        }
    }

    /// The first field in which `self` and `other` differ, by name: every field,
    /// node by node in the trees, except the identity (a clone has its own) and the
    /// free index's lookup cache. What the failure-atomicity checks compare.
    #[cfg(feature = "testing")]
    pub(crate) fn first_difference(&self, other: &Self) -> Option<&'static str> {
        // Named in full, so that a new field cannot be left out unnoticed.
        let ExtentAllocator {
            capacity,
            free,
            pinned_free,
            count_pinned_free_blocks,
            pins,
            deferrals,
            epochs,
            reservations,
            count_reserved_blocks,
            next_reservation_id,
            uid: _,
            counters,
            tokens,
        } = self;
        [
            ("capacity", *capacity == other.capacity),
            ("free", *free == other.free),
            ("pinned_free", *pinned_free == other.pinned_free),
            (
                "count_pinned_free_blocks",
                *count_pinned_free_blocks == other.count_pinned_free_blocks,
            ),
            ("pins", *pins == other.pins),
            ("deferrals", *deferrals == other.deferrals),
            ("epochs", *epochs == other.epochs),
            ("reservations", *reservations == other.reservations),
            (
                "count_reserved_blocks",
                *count_reserved_blocks == other.count_reserved_blocks,
            ),
            (
                "next_reservation_id",
                *next_reservation_id == other.next_reservation_id,
            ),
            ("counters", *counters == other.counters),
            ("tokens", *tokens == other.tokens),
        ]
        .into_iter()
        .find(|&(_, same)| !same)
        .map(|(name, _)| name)
    }

    /// The number of managed blocks.
    ///
    /// ```
    /// use pinalloc::ExtentAllocator;
    /// assert_eq!(ExtentAllocator::new(77).capacity_blocks(), 77);
    /// ```
    #[inline]
    #[must_use]
    pub fn capacity_blocks(&self) -> u64 {
        self.capacity
    }

    /// Whether every block is Free: nothing Allocated, nothing Deferred. Pins on Free
    /// blocks, readers and reservations may still be live. O(1).
    ///
    /// ```
    /// use pinalloc::{ExtentAllocator, Request};
    /// let mut alloc = ExtentAllocator::new(8);
    /// assert!(alloc.is_empty());
    /// let e = alloc.allocate(Request::new(2))?;
    /// assert!(!alloc.is_empty());
    /// alloc.free(e)?;
    /// assert!(alloc.is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.free.free_blocks() + self.count_pinned_free_blocks == self.capacity
    }

    /// Starts again, as [`new`](Self::new) of the same capacity: every block Free,
    /// every pin, reader and reservation dropped, epoch 1 open, the counters at zero.
    /// The old handles ([`PinId`], [`ReaderId`], [`Reservation`]) belong to the
    /// allocator as it was: every call refuses them as unknown, and none can be
    /// mistaken for a new one.
    ///
    /// ```
    /// use pinalloc::{Extent, ExtentAllocator, PinError, Request};
    /// let mut alloc = ExtentAllocator::new(8);
    /// alloc.allocate(Request::new(8))?;
    /// let pin = alloc.pin(Extent::new(0, 2))?;
    /// alloc.reset();
    /// assert!(alloc.is_empty());
    /// assert_eq!(alloc.unpin(pin), Err(PinError::Unknown { id: pin }));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn reset(&mut self) {
        *self = ExtentAllocator::new(self.capacity);
    }

    /// The free extents that `allocate` can use (Free and unpinned), in address order.
    ///
    /// ```
    /// use pinalloc::{Extent, ExtentAllocator, Request};
    ///
    /// let mut alloc = ExtentAllocator::new(10);
    /// alloc.allocate(Request::new(3))?;
    /// alloc.pin(Extent::new(8, 2))?; // an excluded extent
    /// let free: Vec<Extent> = alloc.free_extents().collect();
    /// assert_eq!(free, [Extent::new(3, 5)]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn free_extents(&self) -> impl Iterator<Item = Extent> + '_ {
        self.free.iter()
    }

    /// The state of `block`, or `None` outside the space. O(log n).
    ///
    /// ```
    /// use pinalloc::{BlockState, Extent, ExtentAllocator, Request};
    ///
    /// let mut alloc = ExtentAllocator::new(8);
    /// let e = alloc.allocate(Request::new(4))?;
    /// let pin = alloc.pin(Extent::new(0, 2))?;
    /// alloc.free(e)?;
    /// assert_eq!(alloc.state_of(0), Some(BlockState::Deferred));
    /// assert_eq!(alloc.state_of(3), Some(BlockState::Free));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn state_of(&self, block: u64) -> Option<BlockState> {
        if block >= self.capacity {
            return None;
        }
        Some(
            if self.free.containing(block).is_some() || self.pinned_free.contains(&block) {
                BlockState::Free
            } else if self.deferrals.epoch_of.containing(block).is_some() {
                BlockState::Deferred
            } else {
                BlockState::Allocated
            },
        )
    }

    /// How many live pins cover `block` (0 outside the space). O(log n).
    ///
    /// ```
    /// use pinalloc::{Extent, ExtentAllocator};
    ///
    /// let mut alloc = ExtentAllocator::new(8);
    /// alloc.pin(Extent::new(0, 4))?;
    /// alloc.pin(Extent::new(2, 4))?;
    /// assert_eq!([0, 2, 4, 6].map(|b| alloc.pin_count(b)), [1, 2, 1, 0]);
    /// # Ok::<(), pinalloc::PinError>(())
    /// ```
    #[must_use]
    pub fn pin_count(&self, block: u64) -> u64 {
        self.pins.count_at(block) + u64::from(self.deferrals.epoch_of.keeps_pin_at(block))
    }

    /// A snapshot of space and activity. O(1) but for the metadata count, which visits
    /// the exact size classes that have ever held an extent (at most 128).
    ///
    /// ```
    /// use pinalloc::ExtentAllocator;
    /// let s = ExtentAllocator::new(8).stats();
    /// assert_eq!((s.free_blocks, s.allocated_blocks, s.free_extents), (8, 0, 1));
    /// ```
    #[must_use]
    pub fn stats(&self) -> Stats {
        let free_blocks = self.free.free_blocks() + self.count_pinned_free_blocks;
        let deferred = self.deferred_held();
        Stats {
            capacity_blocks: self.capacity,
            free_blocks,
            allocated_blocks: self.capacity - free_blocks - deferred.total(),
            deferred_blocks: deferred.total(),
            deferred_by: deferred,
            pinned_free_blocks: self.count_pinned_free_blocks,
            pinned_blocks: self.pins.blocks(),
            live_pins: self.pins.len() as u64,
            live_readers: self.epochs.readers.len() as u64,
            open_epoch: self.epochs.open,
            reserved_blocks: self.count_reserved_blocks,
            live_reservations: self.reservations.len() as u64,
            free_extents: self.free.extent_count() as u64,
            largest_free_blocks: self.free.largest_len(),
            free_histogram: self.free.histogram(),
            metadata_bytes: self.free.metadata_bytes()
                + self.pins.metadata_bytes()
                + self.deferrals.epoch_of.capacity_bytes()
                + self.reservations.len() * 2 * core::mem::size_of::<(u64, u64)>()
                + self.tokens.bytes(),
            counters: self.counters,
        }
    }

    /// Deferred blocks split by what holds them.
    fn deferred_held(&self) -> Held {
        let epochs = self.deferrals.epoch_held_blocks();
        Held {
            pins: self.deferrals.count_blocks - epochs,
            epochs,
        }
    }

    /// Free blocks that a caller without a reservation may take.
    #[inline]
    fn unreserved_free(&self) -> u64 {
        self.free.free_blocks() - self.count_reserved_blocks
    }

    /// The extent as a range inside the space.
    #[inline]
    fn checked_range(&self, extent: Extent) -> Result<Range<u64>, Fault> {
        extent.range_in(self.capacity)
    }

    /// Runs [`check_invariants`](Self::check_invariants) after a mutation, in debug
    /// builds, on small states only.
    #[inline]
    fn debug_check(&self) {
        #[cfg(debug_assertions)]
        if self.free.extent_count() <= DEBUG_CHECK_MAX_EXTENTS
            && self.pins.len() <= DEBUG_CHECK_MAX_EXTENTS
        {
            if let Err(v) = self.check_invariants() {
                panic!("pinalloc bug: {v}");
            }
        }
    }
}

impl Clone for ExtentAllocator {
    /// A snapshot with a new identity: see "Cloning" above.
    fn clone(&self) -> Self {
        ExtentAllocator {
            capacity: self.capacity,
            free: self.free.clone(),
            pinned_free: self.pinned_free.clone(),
            count_pinned_free_blocks: self.count_pinned_free_blocks,
            pins: self.pins.clone(),
            deferrals: self.deferrals.clone(),
            epochs: self.epochs.clone(),
            reservations: self.reservations.clone(),
            count_reserved_blocks: self.count_reserved_blocks,
            next_reservation_id: self.next_reservation_id,
            uid: identity::next_uid(),
            counters: self.counters,
            // Copied, so that a snapshot compares equal; the clone refuses them, as
            // its other handles (`pin_of_token` checks the identity).
            tokens: self.tokens.clone(),
        }
    }
}
