//! `check_invariants`: an fsck for the allocator's own state.

use alloc::format;
use core::ops::Range;

use rangemap::{RangeMap, RangeSet};

use super::ExtentAllocator;
use super::ranges::{set_blocks, set_gaps, to_range};
use crate::InvariantViolation;

/// Returns early with a violation of invariant `$n` if `$cond` holds.
macro_rules! ensure {
    ($cond:expr, $n:expr, $($detail:tt)+) => {
        if $cond {
            return Err(InvariantViolation { number: $n, detail: format!($($detail)+) });
        }
    };
}

impl ExtentAllocator {
    /// Recomputes every invariant from scratch, like an fsck, and reports the first
    /// violation in words. The invariants are listed on [`ExtentAllocator`].
    ///
    /// Costs O(n log n) in the number of free extents, pins, deferred ranges, readers
    /// and reservations. Debug builds run it after every mutation of a small allocator;
    /// call it from your own tests freely.
    ///
    /// # Errors
    ///
    /// An [`InvariantViolation`], which always means a bug in pinalloc.
    ///
    /// ```
    /// use pinalloc::{Extent, ExtentAllocator, Request};
    ///
    /// let mut alloc = ExtentAllocator::new(64);
    /// let e = alloc.allocate(Request::new(9).align(4))?;
    /// let pin = alloc.pin(Extent::new(e.start, 2))?;
    /// alloc.free(e)?;
    /// alloc.check_invariants()?;
    /// alloc.unpin(pin)?;
    /// alloc.check_invariants()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn check_invariants(&self) -> Result<(), InvariantViolation> {
        if let Err((number, detail)) = self.free.check(self.capacity) {
            return Err(InvariantViolation { number, detail });
        }
        self.check_pins()?;
        self.check_states()?;
        self.check_deferred()?;
        self.check_epochs()?;
        self.check_reservations()
    }

    /// Invariants 1 and 3 for pins: counts equal a recount from the live pins, and no
    /// pinned block is in the free index.
    fn check_pins(&self) -> Result<(), InvariantViolation> {
        if let Err(detail) = self.pins.check_index() {
            return Err(InvariantViolation { number: 3, detail });
        }
        let mut all: RangeSet<u64> = RangeSet::new();
        for (_, _, rec) in self.pins.iter() {
            let r = to_range(rec.extent);
            ensure!(
                r.end > self.capacity,
                2,
                "pin {} leaves the space",
                rec.extent
            );
            all.insert(r);
        }
        ensure!(
            set_blocks(&all) != self.pins.blocks(),
            3,
            "pinned blocks cached {} but counted {}",
            self.pins.blocks(),
            set_blocks(&all)
        );
        for e in self.free.iter() {
            ensure!(
                self.pins.overlaps(&to_range(e)),
                1,
                "free extent {e} holds pinned blocks that allocate could return"
            );
        }
        Ok(())
    }

    /// Invariant 2: the free index, pinned Free blocks and Deferred blocks are disjoint
    /// and inside the space (Allocated is the rest). Invariant 3 for their counts.
    fn check_states(&self) -> Result<(), InvariantViolation> {
        for r in self.pinned_free.iter() {
            ensure!(
                r.end > self.capacity,
                2,
                "pinned free {r:?} leaves the space"
            );
            ensure!(
                self.free.first_overlap(r.start, r.end).is_some(),
                2,
                "pinned free {r:?} is also in the free index"
            );
            ensure!(
                !self.pins.zero_pieces(r).is_empty(),
                3,
                "pinned free {r:?} has blocks with no pin"
            );
        }
        ensure!(
            set_blocks(&self.pinned_free) != self.count_pinned_free_blocks,
            3,
            "pinned free blocks cached {} but counted {}",
            self.count_pinned_free_blocks,
            set_blocks(&self.pinned_free)
        );
        for (r, _) in self.deferrals.epoch_of.iter() {
            ensure!(r.end > self.capacity, 2, "deferred {r:?} leaves the space");
            ensure!(
                self.free.first_overlap(r.start, r.end).is_some(),
                2,
                "deferred {r:?} is also in the free index"
            );
            ensure!(
                self.pinned_free.overlaps(r),
                2,
                "deferred {r:?} is also pinned free"
            );
        }
        Ok(())
    }

    /// Invariants 3 and 5 for Deferred blocks: the epoch index matches, pending blocks
    /// belong to the open epoch, and every Deferred block has a live hold.
    fn check_deferred(&self) -> Result<(), InvariantViolation> {
        let d = &self.deferrals;
        let mut from_index: RangeMap<u64, u64> = RangeMap::new();
        let mut counted = 0;
        for (&epoch, (set, count)) in &d.by_epoch {
            ensure!(
                set_blocks(set) != *count || *count == 0,
                3,
                "epoch {epoch} caches {count} deferred blocks but holds {}",
                set_blocks(set)
            );
            for r in set.iter() {
                from_index.insert(r.clone(), epoch);
            }
            counted += count;
        }
        // By epoch alone (ranges of one epoch from different frees joined).
        let mut by_epoch: RangeMap<u64, u64> = RangeMap::new();
        for (r, f) in d.epoch_of.iter() {
            // Every deferral number was given out already.
            ensure!(
                f.seq >= d.next_seq,
                3,
                "deferred {r:?} has number {}, not below the next, {}",
                f.seq,
                d.next_seq
            );
            // Pending blocks join the per-epoch index only when their epoch commits.
            for p in set_gaps(&d.pending, r) {
                by_epoch.insert(p, f.epoch);
            }
        }
        counted += d.count_pending;
        ensure!(
            !from_index.iter().eq(by_epoch.iter()),
            3,
            "the per-epoch index of deferred blocks differs from the deferred map"
        );
        // The pin coverage marks exactly the Deferred blocks.
        let deferred: RangeSet<u64> = d.epoch_of.iter().map(|(r, _)| r.clone()).collect();
        let marks = self.pins.deferred_marks();
        if let Some(m) = marks.iter().find(|m| deferred.gaps(m).next().is_some()) {
            return Err(InvariantViolation {
                number: 3,
                detail: format!("the pin coverage marks {m:?} Deferred, but not all of it is"),
            });
        }
        ensure!(
            !marks.iter().cloned().eq(deferred.iter().cloned()),
            3,
            "the pin coverage's Deferred marks {:?} are not the Deferred blocks {:?}",
            marks,
            deferred
        );
        let oldest = self.epochs.oldest_reader();
        let reader_held: u64 = match oldest {
            Some(o) => d.by_epoch.range(o..).map(|(_, s)| s.1).sum(),
            None => 0,
        };
        ensure!(
            d.oldest_reader != oldest || d.reader_held != reader_held,
            3,
            "readers hold {reader_held} indexed blocks from epoch {oldest:?}, cached {} from {:?}",
            d.reader_held,
            d.oldest_reader
        );
        ensure!(
            counted != d.count_blocks,
            3,
            "deferred blocks cached {} but counted {counted}",
            d.count_blocks
        );
        ensure!(
            set_blocks(&d.pending) != d.count_pending,
            3,
            "pending blocks cached {} but counted {}",
            d.count_pending,
            set_blocks(&d.pending)
        );
        for p in d.pending.iter() {
            let in_open = d
                .pieces(p)
                .iter()
                .map(|(r, e)| {
                    if *e == self.epochs.open {
                        r.end - r.start
                    } else {
                        0
                    }
                })
                .sum::<u64>();
            ensure!(
                in_open != p.end - p.start,
                3,
                "pending {p:?} is not all Deferred in the open epoch {}",
                self.epochs.open
            );
        }
        let oldest_reader = self.epochs.oldest_reader();
        for (r, f) in d.epoch_of.iter() {
            let epoch = f.epoch;
            if oldest_reader.is_some_and(|oldest| oldest <= epoch) {
                continue;
            }
            let unheld: Option<Range<u64>> = self
                .pins
                .zero_pieces(r)
                .iter()
                .flat_map(|u| set_gaps(&d.pending, u))
                .next();
            ensure!(
                unheld.is_some(),
                5,
                "deferred {:?} (freed in epoch {epoch}) has no pin, commit or reader holding it",
                unheld.unwrap_or_default()
            );
        }
        Ok(())
    }

    fn check_epochs(&self) -> Result<(), InvariantViolation> {
        let e = &self.epochs;
        let mut begins = alloc::collections::BTreeMap::<u64, u64>::new();
        for (&seq, &epoch) in &e.readers {
            ensure!(
                epoch > e.open || seq >= e.next_reader,
                3,
                "reader #{seq} began in epoch {epoch}, beyond the open epoch or numbering"
            );
            *begins.entry(epoch).or_default() += 1;
        }
        ensure!(
            begins != e.begins,
            3,
            "the reader count per epoch differs from a recount"
        );
        ensure!(
            e.mount_durable
                .iter()
                .next_back()
                .is_some_and(|r| r.end > e.mount_durable_end),
            3,
            "mount-time durable blocks reach past their cached end"
        );
        ensure!(
            e.open > 1 && !e.mount_durable.is_empty(),
            3,
            "mount-time durable blocks are still tracked after the first commit"
        );
        ensure!(
            e.open == 1 && !e.allocated_since_commit.is_empty(),
            3,
            "blocks allocated since commit are tracked before the first commit"
        );
        Ok(())
    }

    fn check_reservations(&self) -> Result<(), InvariantViolation> {
        let reserved: u64 = self.reservations.values().sum();
        ensure!(
            reserved != self.count_reserved_blocks,
            3,
            "reserved blocks cached {} but the reservations add up to {reserved}",
            self.count_reserved_blocks
        );
        ensure!(
            reserved > self.free.free_blocks(),
            3,
            "{reserved} blocks are reserved but only {} can be allocated",
            self.free.free_blocks()
        );
        ensure!(
            self.reservations
                .range(self.next_reservation_id..)
                .next()
                .is_some(),
            3,
            "a reservation is numbered beyond the next id"
        );
        Ok(())
    }
}
