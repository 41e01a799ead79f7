//! The pin registry: reference-counted pinned ranges.
//!
//! Each pin costs one record, whatever its length. Per-block counts are kept as runs
//! of equal counts, so overlapping and nested pins cost a few runs each.

use alloc::collections::BTreeMap;
use core::fmt;
use core::ops::Range;

use super::ranges::{Counts, clip, to_range};
use crate::Extent;

/// Names one live pin; returned by [`ExtentAllocator::pin`](crate::ExtentAllocator::pin).
///
/// It is `Copy`, so it can be stored anywhere (a device queue, an I/O descriptor).
/// Ids are never reused, and a pin of one allocator is refused by any other.
///
/// ```
/// use pinalloc::{Extent, ExtentAllocator};
/// let mut alloc = ExtentAllocator::new(8);
/// let id = alloc.pin(Extent::new(1, 2))?;
/// println!("{id}"); // "pin #1"
/// # Ok::<(), pinalloc::PinError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PinId {
    pub(crate) owner: u64,
    pub(crate) seq: u64,
}

impl fmt::Display for PinId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pin #{}", self.seq)
    }
}

/// How a pin treats a `free` of the blocks it covers.
///
/// ```
/// use pinalloc::PinMode;
/// assert_eq!(PinMode::default(), PinMode::Deferring);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum PinMode {
    /// The free goes ahead; the pinned blocks become Deferred until unpinned.
    #[default]
    Deferring,
    /// The free fails with [`FreeError::Busy`](crate::FreeError::Busy) and changes
    /// nothing: the EBUSY choice for truncate.
    Blocking,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PinRecord {
    pub(crate) extent: Extent,
    pub(crate) mode: PinMode,
}

/// Live pins and their per-block counts.
#[derive(Clone, Debug, Default)]
pub(crate) struct PinTable {
    /// Live pins by sequence number.
    pub(crate) records: BTreeMap<u64, PinRecord>,
    /// Sequence number of the next pin; starts at 1.
    pub(crate) next_seq: u64,
    /// Pins of every mode, per block.
    pub(crate) counts: Counts,
    /// Blocking pins only, per block.
    pub(crate) blocking: Counts,
}

impl PinTable {
    pub(crate) fn new() -> Self {
        PinTable {
            next_seq: 1,
            ..PinTable::default()
        }
    }

    /// Records a pin over a valid extent and returns its sequence number.
    pub(crate) fn add(&mut self, extent: Extent, mode: PinMode) -> u64 {
        let r = to_range(extent);
        self.counts.add(&r);
        if mode == PinMode::Blocking {
            self.blocking.add(&r);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.records.insert(seq, PinRecord { extent, mode });
        seq
    }

    /// Drops a live pin; returns its record and the pieces whose count reached zero.
    pub(crate) fn remove(&mut self, seq: u64) -> Option<(PinRecord, alloc::vec::Vec<Range<u64>>)> {
        let record = self.records.remove(&seq)?;
        let r = to_range(record.extent);
        if record.mode == PinMode::Blocking {
            self.blocking.sub(&r);
        }
        Some((record, self.counts.sub(&r)))
    }

    /// The oldest blocking pin overlapping `r`, and the part of `r` it covers.
    pub(crate) fn first_blocking(&self, r: &Range<u64>) -> Option<(u64, Range<u64>)> {
        if !self.blocking.overlaps(r) {
            return None;
        }
        self.records.iter().find_map(|(&seq, rec)| {
            let pr = to_range(rec.extent);
            (rec.mode == PinMode::Blocking && pr.start < r.end && r.start < pr.end)
                .then(|| (seq, clip(&pr, r)))
        })
    }
}

use super::ExtentAllocator;
use super::epochs::ReleaseOutcome;
use super::ranges::set_pieces;
use crate::PinError;

impl ExtentAllocator {
    /// Pins `extent` (a deferring pin): until [`unpin`](Self::unpin), none of its
    /// blocks can be allocated. Any managed block may be pinned, whatever its state:
    ///
    /// - an Allocated block can still be freed, and becomes Deferred;
    /// - a Free block leaves the free index and comes back when its last pin goes (an
    ///   excluded extent: a superblock copy, a range under discard).
    ///
    /// Pins nest and overlap: counts are per block. One pin costs O(1) memory,
    /// whatever its length.
    ///
    /// # Errors
    ///
    /// [`PinError::ZeroLength`], [`PinError::Overflow`] or [`PinError::OutOfBounds`] for
    /// a malformed extent; [`PinError::Reserved`] when pinning Free blocks would take
    /// blocks that reservations promised.
    ///
    /// ```
    /// use pinalloc::{Extent, ExtentAllocator, Request};
    ///
    /// let mut alloc = ExtentAllocator::new(16);
    /// let file = alloc.allocate(Request::new(8))?;
    /// let dma = alloc.pin(Extent::new(2, 4))?;       // a device is writing here
    /// let out = alloc.free(file)?;                   // truncate anyway
    /// assert_eq!((out.freed_blocks, out.deferred_blocks), (4, 4));
    /// // The pinned blocks are skipped: 12 blocks free, but not [2, 6).
    /// let e = alloc.allocate(Request::range(1..=16))?;
    /// assert_eq!(e, Extent::new(6, 10));
    /// assert_eq!(alloc.unpin(dma)?.released_blocks, 4);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn pin(&mut self, extent: Extent) -> Result<PinId, PinError> {
        self.pin_with(extent, PinMode::Deferring)
    }

    /// Pins `extent` with the given [`PinMode`]. A [`PinMode::Blocking`] pin makes a
    /// `free` that overlaps it fail with [`FreeError::Busy`](crate::FreeError::Busy).
    ///
    /// # Errors
    ///
    /// As [`pin`](Self::pin).
    ///
    /// ```
    /// use pinalloc::{Extent, ExtentAllocator, FreeError, PinMode, Request};
    ///
    /// let mut alloc = ExtentAllocator::new(16);
    /// let file = alloc.allocate(Request::new(8))?;
    /// let pin = alloc.pin_with(Extent::new(2, 1), PinMode::Blocking)?;
    /// assert!(matches!(alloc.free(file), Err(FreeError::Busy { .. })));
    /// alloc.unpin(pin)?;
    /// alloc.free(file)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn pin_with(&mut self, extent: Extent, mode: PinMode) -> Result<PinId, PinError> {
        let (r, free_pieces) = self.check_pin(extent)?;
        for p in free_pieces {
            self.free.take(p.start, p.len);
            self.pinned_free.insert(p.start..p.start + p.len);
            self.count_pinned_free_blocks += p.len;
        }
        let seq = self.pins.add(extent, mode);
        self.marks.add(&r);
        self.counters.pins = self.counters.pins.saturating_add(1);
        self.debug_check();
        Ok(PinId {
            owner: self.uid,
            seq,
        })
    }

    /// Drops a pin. Blocks whose last pin it was: Deferred ones with no other hold
    /// become Free, and pinned Free ones return to the free index.
    ///
    /// # Errors
    ///
    /// [`PinError::Unknown`] for a pin of another allocator or one already unpinned.
    ///
    /// ```
    /// use pinalloc::{Extent, ExtentAllocator};
    ///
    /// let mut alloc = ExtentAllocator::new(16);
    /// let a = alloc.pin(Extent::new(0, 8))?;   // two nested pins on Free blocks
    /// let b = alloc.pin(Extent::new(2, 2))?;
    /// assert_eq!(alloc.unpin(a)?.unpinned_free_blocks, 6);
    /// assert_eq!(alloc.unpin(b)?.unpinned_free_blocks, 2);
    /// assert_eq!(alloc.stats().pinned_blocks, 0);
    /// # Ok::<(), pinalloc::PinError>(())
    /// ```
    pub fn unpin(&mut self, id: PinId) -> Result<ReleaseOutcome, PinError> {
        if id.owner != self.uid {
            return Err(PinError::Unknown { id });
        }
        let Some((record, zeroed)) = self.pins.remove(id.seq) else {
            return Err(PinError::Unknown { id });
        };
        self.marks.sub(&to_range(record.extent));
        let mut out = ReleaseOutcome::default();
        for z in &zeroed {
            for p in set_pieces(&self.pinned_free, z) {
                let len = p.end - p.start;
                self.pinned_free.remove(p.clone());
                self.count_pinned_free_blocks -= len;
                self.free.insert(p.start, len);
                out.unpinned_free_blocks += len;
            }
            out.released_blocks += self.release_unheld(z);
        }
        self.count_released(out.released_blocks);
        self.counters.unpins = self.counters.unpins.saturating_add(1);
        self.debug_check();
        Ok(out)
    }
}
