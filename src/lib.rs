#![doc = include_str!("../README.md")]
//!
//! # Implementation
//!
//! ## Map of the crate
//!
//! Each folder has one job, and imports go one way only: down this table (a row may
//! use the rows below it, never those above). The top-level files (`extent.rs`,
//! `request.rs`, `error.rs`, `stats.rs`) are the vocabulary every row shares.
//!
//! | folder | its one job | `no_std` |
//! |---|---|---|
//! | `testing/` | the reference model, lockstep checker, strategies and walks that test pinalloc and code built on it (feature `testing`) | no |
//! | `region/` | `Region`: owned allocations over a backing's bytes, pin guards that keep memory valid for a device; every block-state change and byte access in `span.rs` | no |
//! | `backing/` | the bytes: heap, mmap and file backings, which know nothing of blocks or allocators | no |
//! | `shared/` | `SharedAllocator`: a core per allocation group under its own lock, summaries read without locks, waiting, pressure, leases, quotas | no |
//! | `sync.rs` | every lock and atomic the layers above share, swapped for shuttle's in the interleaving tests | no |
//! | `persist.rs` | the checksummed encoding of a durable free list | yes |
//! | `allocator/` | `ExtentAllocator`, the core: the block-state contract, pins, Deferred runs, epochs, reservations, checks; every block-state change in `transition.rs` | yes |
//! | `index/` | the free index: the unpinned Free extents, by size and by address, and every placement policy over them | yes |
//! | `tree/` | generic structures: a B+ tree with summaries, the pin coverage, interval sets, a region filter | yes |
//!
//! The core (`allocator/` and what it uses) has no locks, no I/O and no `unsafe`;
//! `unsafe` lives in `backing/`, `region/span.rs` and `sync.rs` (the group lock's
//! `RawMutex`) alone.
//!
//! ## How it works
//!
//! The free space is a set of fully coalesced free extents, in one of two forms.
//!
//! **The fast form**, which every allocator starts in and keeps while its requests are
//! unaligned best fit, exact starts and ranges of lengths (the common case). Each free
//! extent is a record in an arena. Every length up to 256 blocks has a list of its
//! extents, linked through the records, and a bit in four words saying whether it is
//! empty (with a byte saying which words are not zero); longer extents are in a B+ tree ordered by `(len, start)`, but for one kept
//! aside (on a space being filled, its tail), so that carving it touches no tree. Best
//! fit is the
//! lowest set bit at or above the length asked for and the head of that list. By
//! address, a B+ tree of 16-slot nodes maps each extent's *last* block to its record:
//! an allocation takes blocks from an extent's start, which leaves its last block,
//! and so the tree, untouched. A free finds both neighbours and checks for overlap
//! with one descent. An allocation that splits an extent is a bit scan and two list
//! splices.
//!
//! **The ordered form**, which the index moves to, once, at the first first-fit,
//! near-goal or aligned request that can succeed (the fast form can tell which will:
//! by the residues of the candidate extents' starts for alignments up to 64, by a look
//! at each candidate above; so a refused request changes nothing). It keeps B+ trees
//! of 16-slot nodes in arenas
//! (parent links, leaf chains, a summary of each child in its parent):
//!
//! - **by address**, with the longest extent under each child. Coalescing a free with
//!   its neighbours, the overlap check of a free, first fit and near-goal placement
//!   are each one descent (and a short walk up): the summary prunes every subtree that
//!   cannot hold the request;
//! - **by size, as segregated fits**: every length up to 128 blocks has an exact class
//!   (the starts of the extents of that length, in a sorted array up to 64 of them and
//!   a small tree beyond, and a bit in one
//!   `u128` saying whether it is empty), and longer extents share one tree ordered by
//!   `(len, start)`. Best fit is the lowest set bit at or above the length asked for
//!   and that class's first start, or else the first long extent at or above
//!   `(len, 0)`. Both
//!   size orders also keep which residues of `start mod 64` occur under each child,
//!   so an aligned best fit finds the lowest start with room for its padding in one
//!   descent per candidate length. Alignments above 64 blocks get a view of their own
//!   on first use (at most four are kept): the extents that hold a multiple of the
//!   alignment, with their room from it, so every aligned policy is a descent or three.
//!
//! Both forms take a smallest fitting extent for best fit; among equally small ones the
//! fast form takes the most recently freed or split (for lengths up to 256), the
//! ordered form the lowest.
//!
//! Only unpinned Free blocks are in that index, so allocation never looks at pins.
//! Pins are records in a slab plus the per-block pin count, kept as its differences in
//! a B+ tree (a pin is +1 at its start and -1 at its end), which answers "is anything
//! here pinned", pin counts and "what did this unpin leave unpinned" by descent,
//! however many pins overlap; the same tree marks every Deferred block, so a free
//! checks for holds with one lookup. A pin over Allocated blocks that nothing else
//! covers (the pin an I/O takes) is kept aside in a plain map until a free or another
//! pin reaches its blocks. Pinned Free blocks
//! and Deferred blocks (with the epoch they were freed in) live in `rangemap` runs
//! beside it. Allocated blocks are not recorded at
//! all: they are whatever is in none of those. Metadata therefore grows with the number
//! of extents, pins and deferred ranges, never with capacity.
//!
//! `SharedAllocator` cuts the space into allocation groups, each such a core under its
//! own lock. A group's core is built over the global address space with every block
//! below the group Allocated forever (which costs one range), so extents, errors and
//! pin ids need no translation. Each group publishes its free blocks, longest free
//! extent and Deferred blocks in atomics as its lock is released; allocation reads
//! them without locking to skip groups that cannot fit. Waiters count themselves in,
//! check under the group locks (all of them, not skipping by the summaries), and sleep
//! on one generation counter and condvar, which a release moves only when someone
//! waits; every lock and atomic comes from one `sync` module, which the interleaving
//! tests swap for shuttle's.
//!
//! `Region` gives each allocated extent one `Span`: the right to its bytes, kept in
//! `region/span.rs`, the only module (with the backings and `sync.rs`'s group lock)
//! allowed `unsafe`. A pin guard
//! borrows a span's bytes like a read-write lock guard that may outlive the owner; each
//! lend covers the bytes the owner held when it was made, and bytes the owner gives up
//! while lent go to the last lend covering them, which discards them before its pin is
//! dropped. So a discard only ever runs on bytes nobody else can reach, and blocks
//! become Free only after it.
#![no_std]
#![deny(unsafe_code)]
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    clippy::undocumented_unsafe_blocks
)]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

mod allocator;
#[cfg(all(feature = "std", unix))]
#[allow(unsafe_code)] // the bytes: see the module docs (and region/span.rs, its one caller)
pub mod backing;
mod error;
mod extent;
mod index;
pub mod persist;
#[cfg(feature = "svg")]
pub mod picture;
#[cfg(all(feature = "std", unix))]
mod region;
mod request;
#[cfg(feature = "std")]
mod shared;
#[cfg(any(test, feature = "testing"))]
mod splitmix;
mod stats;
#[cfg(feature = "std")]
mod sync;
#[cfg(feature = "testing")]
pub mod testing;
mod tokens;
#[cfg(feature = "trace")]
pub mod trace;
mod tree;

pub use allocator::{
    AbortOutcome, BlockRun, BlockState, ExtentAllocator, FreeOutcome, PinId, PinInfo, PinMode,
    ReaderId, ReaderInfo, ReleaseOutcome, Reservation,
};
#[cfg(all(feature = "std", unix))]
pub use backing::{
    Backing, BackingError, BackingOp, FileBacking, HeapBacking, MemoryBacking, MmapBacking,
};
pub use error::{
    AllocError, BuildError, EpochError, ErrorKind, FreeError, Held, InvariantViolation, PinError,
    ReservationError, ResizeError,
};
pub use extent::{Extent, ExtentError};
pub use index::HISTOGRAM_BUCKETS;
#[cfg(all(feature = "std", unix))]
pub use region::{
    Allocation, Pinned, PinnedMut, Refused, Region, RegionBuilder, RegionError, RegionReadGuard,
    RegionStats,
};
pub use request::{Policy, Request};
#[cfg(feature = "async")]
pub use shared::{AllocateWhenFits, WhenReleased};
#[cfg(feature = "std")]
pub use shared::{
    GroupStats, LimitError, PinGuard, PinOptions, Pressure, ReadGuard, Revocation, RevokeReport,
    SharedAllocError, SharedAllocator, SharedBuilder, SharedCounters, SharedFreeError,
    SharedPinError, SharedPinId, SharedPinInfo, SharedReservation, SharedStats, WaitError,
};
pub use stats::{Counters, Stats};
