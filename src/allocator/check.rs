//! `check_invariants`: an fsck for the allocator's own state.

use alloc::format;
use core::ops::Range;

use rangemap::RangeSet;

use super::ExtentAllocator;
use super::ranges::{set_blocks, to_range};
use super::transition::reader_holds;
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
        let runs = &self.deferrals.epoch_of;
        if let Err(detail) = self.pins.check_index(|r| runs.keeps_pin(r)) {
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
                self.pinned_free.overlaps(&r),
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
        let runs = d.check_runs().map_err(|detail| InvariantViolation {
            number: 3,
            detail: format!("deferred runs: {detail}"),
        })?;
        let oldest = self.epochs.oldest_reader();
        let mut by_epoch: alloc::collections::BTreeMap<u64, u64> = Default::default();
        let mut pending: RangeSet<u64> = RangeSet::new();
        for (r, f, is_pending, listed, _) in &runs {
            // Every deferral number was given out already.
            ensure!(
                f.seq >= d.next_seq,
                3,
                "deferred {r:?} has number {}, not below the next, {}",
                f.seq,
                d.next_seq
            );
            // Pending blocks are counted by epoch only when their epoch commits.
            if *is_pending {
                pending.insert(r.clone());
            } else {
                *by_epoch.entry(f.epoch).or_default() += r.end - r.start;
            }
            // A run is left out of departing readers' walks only once no reader,
            // now or later, can hold it.
            let unheld = f.epoch < self.epochs.open && oldest.is_none_or(|o| f.epoch < o);
            ensure!(
                !listed && !is_pending && f.epoch != 0 && !unheld,
                3,
                "deferred {r:?} (epoch {}) is left out of readers' walks, but a reader may hold it",
                f.epoch
            );
        }
        ensure!(
            by_epoch != d.blocks_by_epoch,
            3,
            "deferred blocks by epoch {:?}, counted {by_epoch:?}",
            d.blocks_by_epoch
        );
        ensure!(
            d.sealed.iter().any(|r| d.pending.overlaps(r)),
            3,
            "blocks both pending and sealed: {:?}, {:?}",
            d.pending,
            d.sealed
        );
        let mut waiting = d.pending.clone();
        waiting.extend(d.sealed.iter().cloned());
        ensure!(
            pending != waiting,
            3,
            "the pending runs {:?} are not the pending and sealed blocks {:?}",
            pending,
            waiting
        );
        let counted = by_epoch.values().sum::<u64>() + d.count_pending + d.count_sealed;
        // The pin coverage marks exactly the Deferred blocks but the runs that keep
        // a pin; fresh pins cover Allocated blocks only; every run that keeps a pin
        // keeps a live one.
        let mut deferred: RangeSet<u64> = runs.iter().map(|(r, ..)| r.clone()).collect();
        for f in self.pins.fresh_pins() {
            ensure!(
                deferred.overlaps(&f),
                2,
                "fresh pin {f:?} covers Deferred blocks"
            );
        }
        let live: RangeSet<u64> = self
            .pins
            .iter()
            .map(|(_, _, rec)| to_range(rec.extent))
            .collect();
        for (r, .., keeps) in &runs {
            if *keeps {
                ensure!(
                    live.gaps(r).next().is_some(),
                    5,
                    "deferred run {r:?} keeps a pin, but no live pin covers it"
                );
                ensure!(
                    self.pins.overlaps(r),
                    3,
                    "deferred run {r:?} keeps a pin, and another pin covers it too"
                );
                deferred.remove(r.clone());
            }
        }
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
        let reader_held: u64 = match oldest {
            Some(o) => by_epoch.range(o..).map(|(_, n)| n).sum(),
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
        let mut sealed: RangeSet<u64> = RangeSet::new();
        for (&epoch, ranges) in &d.sealed_epochs {
            ensure!(
                epoch <= self.epochs.durable || epoch >= self.epochs.open,
                3,
                "epoch {epoch} is sealed, but only those after {} and before {} can be",
                self.epochs.durable,
                self.epochs.open
            );
            for r in ranges {
                ensure!(
                    sealed.overlaps(r),
                    3,
                    "sealed blocks {r:?} are listed twice"
                );
                sealed.insert(r.clone());
            }
        }
        ensure!(
            sealed != d.sealed || set_blocks(&sealed) != d.count_sealed,
            3,
            "the sealed epochs' blocks {:?} are not the sealed blocks {:?} ({} cached)",
            sealed,
            d.sealed,
            d.count_sealed
        );
        // The pending runs are the pending and sealed blocks (above): the pending ones
        // freed in the open epoch, the sealed ones in the epoch that sealed them.
        for (r, f, is_pending, ..) in &runs {
            let sealed_in = d
                .sealed_epochs
                .iter()
                .find(|(_, rs)| rs.iter().any(|s| s.start <= r.start && r.end <= s.end))
                .map(|(&e, _)| e);
            let want = if d.pending.overlaps(r) {
                self.epochs.open
            } else {
                sealed_in.unwrap_or(u64::MAX)
            };
            ensure!(
                *is_pending && f.epoch != want,
                3,
                "waiting {r:?} was freed in epoch {}, not the epoch it waits for, {want}",
                f.epoch
            );
        }
        let oldest_reader = self.epochs.oldest_reader();
        for (r, f, _, _, keeps_pin) in runs {
            let epoch = f.epoch;
            if keeps_pin || reader_holds(oldest_reader, epoch) {
                continue;
            }
            let unheld: Option<Range<u64>> = self
                .pins
                .zero_pieces(&r)
                .iter()
                .flat_map(|u| d.not_waiting(u))
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
            e.durable >= e.open,
            3,
            "epoch {} is finished, but {} is open",
            e.durable,
            e.open
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
