//! [`Stats`]: a snapshot of the allocator's accounting.

use crate::Held;
use crate::index::HISTOGRAM_BUCKETS;

/// A snapshot of an allocator's space and activity, from
/// [`ExtentAllocator::stats`](crate::ExtentAllocator::stats).
///
/// Block counts always add up:
/// `free_blocks + allocated_blocks + deferred_blocks == capacity_blocks`.
///
/// ```
/// use pinalloc::{ExtentAllocator, Request};
///
/// let mut alloc = ExtentAllocator::new(1000);
/// alloc.allocate(Request::new(10))?;
/// let s = alloc.stats();
/// assert_eq!(s.capacity_blocks, 1000);
/// assert_eq!(s.free_blocks + s.allocated_blocks + s.deferred_blocks, 1000);
/// assert_eq!(s.free_extents, 1);
/// assert_eq!(s.largest_free_blocks, 990);
/// assert_eq!(s.free_histogram[9], 1); // 990 lies in 512..=1023
/// assert_eq!(s.counters.allocations, 1);
/// # Ok::<(), pinalloc::AllocError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Stats {
    /// Blocks under management.
    pub capacity_blocks: u64,
    /// Free blocks, reserved and pinned ones included.
    pub free_blocks: u64,
    /// Blocks owned by callers.
    pub allocated_blocks: u64,
    /// Blocks freed by their owner but still held.
    pub deferred_blocks: u64,
    /// Deferred blocks by what holds them: pins only, or an epoch or reader.
    pub deferred_by: Held,
    /// Free blocks kept out of reach by pins (excluded extents).
    pub pinned_free_blocks: u64,
    /// Blocks with a pin count above zero, in any state.
    pub pinned_blocks: u64,
    /// Live pins.
    pub live_pins: u64,
    /// Live snapshot readers.
    pub live_readers: u64,
    /// The open epoch.
    pub open_epoch: u64,
    /// Free blocks set aside by outstanding reservations.
    pub reserved_blocks: u64,
    /// Outstanding reservations.
    pub live_reservations: u64,
    /// Free extents that can be allocated (maximal runs of unpinned free blocks).
    pub free_extents: u64,
    /// The length of the largest free extent that can be allocated; 0 if none.
    pub largest_free_blocks: u64,
    /// `free_histogram[i]` counts free extents of `2^i ..= 2^(i+1) - 1` blocks.
    #[cfg_attr(feature = "serde", serde(serialize_with = "histogram"))]
    pub free_histogram: [u64; HISTOGRAM_BUCKETS],
    /// Approximate heap bytes held by the free-space index (with its alignment views),
    /// the pin registry (including the marks of Deferred blocks no pin covers), the
    /// runs of Deferred blocks and the reservation table. Grows with the number of
    /// free extents, pins and Deferred runs, never with capacity. The Deferred ranges
    /// by epoch and the pinned Free ranges are not counted: they live in
    /// standard-library maps whose node sizes are not visible (`benches/pins.rs`
    /// measures them with a counting allocator).
    pub metadata_bytes: usize,
    /// Monotonic activity counters.
    pub counters: Counters,
}

/// Monotonic counters of successful calls. Failed calls change nothing, these included.
/// They saturate at `u64::MAX` rather than wrap.
///
/// ```
/// use pinalloc::{ExtentAllocator, Request};
///
/// let mut alloc = ExtentAllocator::new(10);
/// let e = alloc.allocate(Request::new(4))?;
/// alloc.free(e)?;
/// let c = alloc.stats().counters;
/// assert_eq!((c.allocations, c.blocks_allocated, c.frees, c.blocks_freed), (1, 4, 1, 4));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Counters {
    /// Extents handed out (each extent of an `allocate_many` counts).
    pub allocations: u64,
    /// Blocks handed out.
    pub blocks_allocated: u64,
    /// Successful `free` and `free_on_commit` calls.
    pub frees: u64,
    /// Blocks returned by `free` and `free_on_commit` (Free at once or Deferred).
    pub blocks_freed: u64,
    /// Reservations made.
    pub reservations: u64,
    /// Reservations handed back (`unreserve`, or a dropped `SharedReservation`).
    pub unreserves: u64,
    /// Blocks that became Deferred when freed.
    pub blocks_deferred: u64,
    /// Deferred blocks that later became Free (on unpin, commit or a reader's end).
    pub blocks_released: u64,
    /// Pins taken.
    pub pins: u64,
    /// Pins dropped.
    pub unpins: u64,
    /// Epochs committed.
    pub commits: u64,
}

impl Stats {
    /// All zeros over `capacity_blocks`: the start of a total over parts.
    #[cfg(feature = "std")]
    pub(crate) fn zeroed(capacity_blocks: u64) -> Self {
        Stats {
            capacity_blocks,
            free_blocks: 0,
            allocated_blocks: 0,
            deferred_blocks: 0,
            deferred_by: Held::default(),
            pinned_free_blocks: 0,
            pinned_blocks: 0,
            live_pins: 0,
            live_readers: 0,
            open_epoch: 0,
            reserved_blocks: 0,
            live_reservations: 0,
            free_extents: 0,
            largest_free_blocks: 0,
            free_histogram: [0; HISTOGRAM_BUCKETS],
            metadata_bytes: 0,
            counters: Counters::default(),
        }
    }
}

impl Counters {
    /// Adds `other` into `self`, saturating.
    #[cfg(feature = "std")]
    pub(crate) fn add(&mut self, other: &Counters) {
        let pairs = [
            (&mut self.allocations, other.allocations),
            (&mut self.blocks_allocated, other.blocks_allocated),
            (&mut self.frees, other.frees),
            (&mut self.blocks_freed, other.blocks_freed),
            (&mut self.reservations, other.reservations),
            (&mut self.unreserves, other.unreserves),
            (&mut self.blocks_deferred, other.blocks_deferred),
            (&mut self.blocks_released, other.blocks_released),
            (&mut self.pins, other.pins),
            (&mut self.unpins, other.unpins),
            (&mut self.commits, other.commits),
        ];
        for (sum, n) in pairs {
            *sum = sum.saturating_add(n);
        }
    }
}

/// The histogram as a sequence: serde derives arrays up to 32 long only.
#[cfg(feature = "serde")]
fn histogram<S: serde::Serializer>(
    h: &[u64; crate::HISTOGRAM_BUCKETS],
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_seq(h.iter())
}
