//! [`ExtentAllocator`]: the single-threaded core.

mod allocate;
mod build;
mod check;
mod free;
mod identity;
mod reserve;

use alloc::collections::BTreeMap;

use crate::index::FreeIndex;
use crate::{Counters, Extent, Stats};

pub use free::FreeOutcome;
pub use reserve::Reservation;

/// The core extent allocator: free space over `capacity` blocks, with reservations.
///
/// It takes no locks and does no I/O (`&mut self` everywhere), and builds as `no_std`
/// with `alloc`. Its metadata grows with the number of free extents, never with the
/// capacity: a space of 2^62 blocks costs what a space of 2^20 does.
///
/// # Block states
///
/// Every block is in exactly one state.
///
/// | state | meaning | can `allocate` return it? |
/// |---|---|---|
/// | Free | in the free index | yes |
/// | Allocated | owned by a caller | no |
///
/// | call | transition |
/// |---|---|
/// | [`allocate`](Self::allocate) | Free → Allocated |
/// | [`free`](Self::free) | Allocated → Free, coalesced with its free neighbours; fails, changing nothing, unless *every* block is Allocated |
/// | [`reserve`](Self::reserve) | no block changes state; the count of Free blocks that other callers may take drops |
///
/// Frees work at block granularity: any run of Allocated blocks may be freed, such as
/// the tail of a file on truncate, or two neighbouring allocations at once.
///
/// # Invariants
///
/// [`check_invariants`](Self::check_invariants) recomputes these from scratch:
///
/// 1. `allocate` never returns a block that is not Free, nor one outside the space
///    (checked by the model tests after every call).
/// 2. Free and Allocated are disjoint and cover the space: free extents are in bounds,
///    non-empty and disjoint.
/// 3. Every cached counter equals its recount; reservations never exceed free space.
/// 4. The free index is fully coalesced: no two free extents touch.
///
/// # Cloning
///
/// A clone is an independent snapshot with an identity of its own. It keeps the
/// original's reservations set aside, but the original's [`Reservation`] handles are
/// refused by the clone, so one handle can never be spent twice.
///
/// # Panics
///
/// Only past 2^32 - 1 free extents at once (well over 100 GiB of metadata), which the
/// index cannot number.
///
/// # Example
///
/// ```
/// use pinalloc::{Extent, ExtentAllocator, Request};
///
/// let mut alloc = ExtentAllocator::new(1 << 20);
/// let file = alloc.allocate(Request::new(64))?;
/// // Truncate the file to 16 blocks: free its tail.
/// let tail = Extent::new(file.start + 16, 48);
/// let outcome = alloc.free(tail)?;
/// assert_eq!(outcome.freed_blocks, 48);
/// assert_eq!(alloc.stats().allocated_blocks, 16);
/// alloc.check_invariants()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct ExtentAllocator {
    /// Blocks `0..capacity` are managed.
    capacity: u64,
    /// Every Free block.
    free: FreeIndex,
    /// Outstanding reservations: id → blocks left.
    reservations: BTreeMap<u64, u64>,
    /// Sum of `reservations`' values.
    count_reserved_blocks: u64,
    /// Id of the next reservation.
    next_reservation_id: u64,
    /// Tells this allocator's reservations from another's (clones get a new one).
    uid: u64,
    counters: Counters,
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
            free: FreeIndex::new(identity::priority_seed(uid)),
            reservations: BTreeMap::new(),
            count_reserved_blocks: 0,
            next_reservation_id: 1,
            uid,
            counters: Counters::default(),
        }
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

    /// Free extents in address order.
    ///
    /// ```
    /// use pinalloc::{Extent, ExtentAllocator, Request};
    ///
    /// let mut alloc = ExtentAllocator::new(10);
    /// alloc.allocate(Request::new(3))?;
    /// let free: Vec<Extent> = alloc.free_extents().collect();
    /// assert_eq!(free, [Extent::new(3, 7)]);
    /// # Ok::<(), pinalloc::AllocError>(())
    /// ```
    pub fn free_extents(&self) -> impl Iterator<Item = Extent> + '_ {
        self.free.iter()
    }

    /// A snapshot of space and activity.
    ///
    /// ```
    /// use pinalloc::ExtentAllocator;
    /// let s = ExtentAllocator::new(8).stats();
    /// assert_eq!((s.free_blocks, s.allocated_blocks, s.count_free_extents), (8, 0, 1));
    /// ```
    #[must_use]
    pub fn stats(&self) -> Stats {
        let free_blocks = self.free.free_blocks();
        Stats {
            capacity_blocks: self.capacity,
            free_blocks,
            allocated_blocks: self.capacity - free_blocks,
            reserved_blocks: self.count_reserved_blocks,
            count_reservations: self.reservations.len() as u64,
            count_free_extents: self.free.extent_count() as u64,
            largest_free_blocks: self.free.largest_len(),
            free_histogram: self.free.histogram(),
            metadata_bytes: self.free.metadata_bytes()
                + self.reservations.len() * 2 * core::mem::size_of::<(u64, u64)>(),
            counters: self.counters,
        }
    }

    /// Free blocks that a caller without a reservation may take.
    #[inline]
    fn unreserved_free(&self) -> u64 {
        self.free.free_blocks() - self.count_reserved_blocks
    }

    /// Runs [`check_invariants`](Self::check_invariants) after a mutation, in debug
    /// builds, on small states only.
    #[inline]
    fn debug_check(&self) {
        #[cfg(debug_assertions)]
        if self.free.extent_count() <= DEBUG_CHECK_MAX_EXTENTS {
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
            reservations: self.reservations.clone(),
            count_reserved_blocks: self.count_reserved_blocks,
            next_reservation_id: self.next_reservation_id,
            uid: identity::next_uid(),
            counters: self.counters,
        }
    }
}
