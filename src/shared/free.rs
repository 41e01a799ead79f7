//! Frees on the shared allocator, with the cap on Deferred blocks, and waiting for a
//! Deferred extent to be released.

use alloc::vec::Vec;
use std::time::Duration;

use super::SharedAllocator;
use super::group::Locked;
use super::signal::Deadline;
use crate::sync::Ordering;
use crate::{Extent, FreeError, FreeOutcome, LimitError, SharedFreeError, WaitError};

impl SharedAllocator {
    /// Frees `extent`, as [`ExtentAllocator::free`](crate::ExtentAllocator::free):
    /// block by block, unheld blocks become Free at once and held ones Deferred. The
    /// extent may span groups (one allocated at mount time, say); every group it
    /// touches is locked at once, so the free is all or nothing. Wakes waiters.
    ///
    /// # Errors
    ///
    /// [`SharedFreeError::Core`] with the core's reason (double free, partly
    /// allocated, busy, malformed), or [`LimitError::DeferredCap`] when the blocks it
    /// would defer pass the cap. Nothing changes. The reason is what one core over the
    /// whole space would give, across group boundaries too: `NotAllocated` and
    /// `PartlyAllocated` name the first run that is not Allocated, joined across
    /// groups, and `Busy` names, of the blocking pins over the first blocked block, the
    /// oldest (the pins of every group are numbered in one sequence), and all the
    /// blocks of `extent` it covers.
    ///
    /// ```
    /// use pinalloc::{Extent, Request, SharedAllocator};
    /// let alloc = SharedAllocator::new(64);
    /// let e = alloc.allocate(Request::new(10))?;
    /// let dma = alloc.pin(Extent::new(e.start, 2))?;
    /// let out = alloc.free(e)?;
    /// assert_eq!((out.freed_blocks, out.deferred_blocks), (8, 2));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn free(&self, extent: Extent) -> Result<FreeOutcome, SharedFreeError> {
        self.free_as(extent, false)
    }

    /// Frees `extent` as part of the open epoch's transaction, as
    /// [`ExtentAllocator::free_on_commit`](crate::ExtentAllocator::free_on_commit).
    ///
    /// # Errors
    ///
    /// As [`free`](Self::free).
    ///
    /// ```
    /// use pinalloc::{Request, SharedAllocator};
    /// let alloc = SharedAllocator::new(64);
    /// let e = alloc.allocate(Request::new(10))?;
    /// alloc.commit(1)?;
    /// assert_eq!(alloc.free_on_commit(e)?.deferred_blocks, 10);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn free_on_commit(&self, extent: Extent) -> Result<FreeOutcome, SharedFreeError> {
        self.free_as(extent, true)
    }

    fn free_as(&self, extent: Extent, on_commit: bool) -> Result<FreeOutcome, SharedFreeError> {
        let r = extent.within(self.capacity).map_err(FreeError::BadExtent)?;
        let gs = self.groups_of(&r);
        if gs.len() == 1 && !on_commit {
            // The common free, nothing holding its blocks: nothing to check or build.
            let plain = self.lock(gs.start).free_plain(extent);
            if let Some(out) = plain {
                self.released_in(gs);
                return Ok(out);
            }
        }
        if gs.len() == 1 && self.deferred_cap_blocks.is_none() {
            // The common case: one group, no limit to check, nothing to allocate.
            let out = {
                let mut core = self.lock(gs.start);
                if on_commit {
                    core.free_on_commit(extent)
                } else {
                    core.free(extent)
                }
            }
            .map_err(|e| self.whole_busy(e))?;
            if out.freed_blocks > 0 {
                self.released_in(gs);
            }
            return Ok(out);
        }
        let pieces: Vec<(usize, Extent)> = self.pieces(&r).collect();
        // Several pieces, or a cap to charge: every piece is previewed before any is
        // freed, so that the free either happens whole or changes nothing.
        let mut locked = self.lock_all(gs.clone());
        let previews: Vec<Result<u64, FreeError>> = pieces
            .iter()
            .zip(&locked)
            .map(|((_, piece), core)| core.deferral_preview(*piece, on_commit))
            .collect();
        let deferring = match whole_outcome(extent, &pieces, &previews) {
            Ok(deferring) => deferring,
            Err(e) => {
                drop(locked); // `whole_busy` reads the tracked pins: the lock order
                return Err(self.whole_busy(e).into());
            }
        };
        if let Some(cap) = self.deferred_cap_blocks {
            self.charge_deferred(extent, &locked, &deferring, cap)?;
        }
        let mut out = FreeOutcome::default();
        for ((_, piece), core) in pieces.iter().zip(&mut locked) {
            let done = if on_commit {
                core.free_on_commit(*piece)
            } else {
                core.free(*piece)
            }
            .expect("a previewed piece frees");
            out.freed_blocks += done.freed_blocks;
            out.deferred_blocks += done.deferred_blocks;
        }
        drop(locked);
        if out.freed_blocks > 0 {
            self.released_in(gs);
        }
        Ok(out)
    }

    /// Counts the blocks a free will defer against the cap, before the free, so that
    /// concurrent frees in other groups can never pass it together.
    fn charge_deferred(
        &self,
        extent: Extent,
        locked: &[Locked<'_>],
        deferring: &[u64],
        cap: u64,
    ) -> Result<(), LimitError> {
        let would_defer: u64 = deferring.iter().sum();
        if would_defer == 0 {
            return Ok(());
        }
        let total = &self.count_deferred_blocks;
        let mut now = total.load(Ordering::SeqCst);
        loop {
            if now.saturating_add(would_defer) > cap {
                return Err(LimitError::DeferredCap {
                    extent,
                    cap_blocks: cap,
                    deferred_blocks: now,
                    would_defer_blocks: would_defer,
                });
            }
            match total.compare_exchange(now, now + would_defer, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => break,
                Err(seen) => now = seen,
            }
        }
        for (core, &d) in locked.iter().zip(deferring) {
            core.group().prepublish_deferred(d);
        }
        Ok(())
    }

    /// Blocks until every block of `extent` that is Deferred when the call begins has
    /// been released, or until `timeout` passes: truncate waiting for the pins on it
    /// to go. Its holds going is what it waits for, whatever happens to the blocks
    /// afterwards: blocks released, allocated again and Deferred again by a later free
    /// (another file's, say) do not keep it waiting. A wake-up between a check and
    /// the wait is never lost.
    ///
    /// # Errors
    ///
    /// [`WaitError::BadExtent`] for a bad extent;
    /// [`WaitError::TimedOut`], with the blocks still Deferred, after the timeout.
    ///
    /// ```
    /// use std::time::Duration;
    /// use pinalloc::{Request, SharedAllocator};
    ///
    /// let alloc = SharedAllocator::new(64);
    /// let e = alloc.allocate(Request::new(8))?;
    /// let dma = alloc.pin(e)?;
    /// alloc.free(e)?; // truncate while the device is busy: Deferred
    /// std::thread::scope(|s| {
    ///     s.spawn(move || drop(dma)); // the device finishes
    ///     alloc.wait_released(e, Duration::from_secs(10)).unwrap();
    /// });
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn wait_released(&self, extent: Extent, timeout: Duration) -> Result<(), WaitError> {
        let deadline = Deadline::after(timeout);
        let r = extent.within(self.capacity).map_err(WaitError::BadExtent)?;
        // Each group's deferral mark as the wait begins: only blocks deferred before
        // it are waited for (see `ExtentAllocator::count_deferred_before`).
        // Taken under all the extent's group locks at once, so that a free over several
        // of them is wholly before the marks or wholly after.
        let gs = self.groups_of(&r);
        let marks: Vec<u64> = self
            .lock_all(gs.clone())
            .iter()
            .map(|g| g.deferral_mark())
            .collect();
        let deferred = || -> u64 {
            gs.clone()
                .zip(&marks)
                .map(|(g, &mark)| self.lock(g).count_deferred_before(&r, mark))
                .sum()
        };
        if deferred() == 0 {
            return Ok(());
        }
        // Counted in before the looks the wait follows (see `signal`); a wait that
        // ends at once costs the releases nothing.
        let _waiting = self.signal.enter();
        loop {
            let seen = self.signal.generation();
            let deferred = deferred();
            if deferred == 0 {
                return Ok(());
            }
            if deadline.passed() {
                self.counters.wait_timeouts.fetch_add(1, Ordering::Relaxed);
                return Err(WaitError::TimedOut {
                    extent,
                    deferred_blocks: deferred,
                });
            }
            self.counters.waits.fetch_add(1, Ordering::Relaxed);
            self.signal.wait_past(seen, deadline);
        }
    }
}

/// Each piece's deferral, or the error for the whole extent, as one core would give
/// it: first the first run of blocks that are not Allocated (joined across group
/// boundaries), else the first blocking pin.
fn whole_outcome(
    extent: Extent,
    pieces: &[(usize, Extent)],
    previews: &[Result<u64, FreeError>],
) -> Result<Vec<u64>, FreeError> {
    if previews.iter().all(Result::is_ok) {
        return Ok(previews
            .iter()
            .map(|p| *p.as_ref().expect("no error"))
            .collect());
    }
    if previews.len() == 1 {
        return Err(previews[0].expect_err("one piece, in error"));
    }
    let unallocated = |i: usize| match previews[i] {
        Err(
            FreeError::NotAllocated { offending, .. }
            | FreeError::PartlyAllocated { offending, .. },
        ) => Some(offending),
        _ => None,
    };
    if let Some(first) = (0..previews.len()).find(|&i| unallocated(i).is_some()) {
        let mut offending = unallocated(first).expect("found");
        for (next, &(_, piece)) in pieces.iter().enumerate().skip(first + 1) {
            match unallocated(next) {
                Some(o)
                    if offending.start + offending.len == piece.start && o.start == piece.start =>
                {
                    offending.len += o.len;
                }
                _ => break,
            }
        }
        return Err(if offending == extent {
            FreeError::NotAllocated { extent, offending }
        } else {
            FreeError::PartlyAllocated { extent, offending }
        });
    }
    // The first piece in error (pieces are in address order) holds the first blocked
    // block, and its core names the oldest blocking pin over that block. Pins of every
    // group are numbered in one sequence, and a pin over several groups has a piece
    // in this one, so this is what one core would name. (Its blocks beyond this piece,
    // and its id as one pin, are filled in by `whole_busy`.)
    let busy = previews
        .iter()
        .find_map(|p| p.as_ref().err())
        .expect("some piece is in error");
    Err(match *busy {
        FreeError::Busy { pin, blocked, .. } => FreeError::Busy {
            extent,
            pin,
            blocked,
        },
        other => other,
    })
}
