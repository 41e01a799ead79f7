//! Epochs: a commit barrier and snapshot readers.
//!
//! 1. The allocator starts in epoch 1, open.
//! 2. `free_on_commit` in the open epoch E defers blocks until E commits, except blocks
//!    that were allocated in E itself: never durable, and never visible to a reader
//!    (readers see committed state), they are Free at once unless pinned.
//! 3. `commit(E)` closes E and opens E + 1.
//! 4. `begin_read` starts a reader in the open epoch. A block freed in epoch F stays
//!    Deferred while any reader that began at or before F is alive. A plain `free` in
//!    epoch F counts as freed in F whatever the block's age: with no transaction to say
//!    otherwise, a live reader may have seen it.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::fmt;
use core::ops::Range;

use rangemap::RangeSet;

use super::ExtentAllocator;
use super::ranges::{set_gaps, set_pieces, to_extent, to_range};
use crate::{EpochError, Extent};

/// Names one live snapshot reader; returned by
/// [`ExtentAllocator::begin_read`](crate::ExtentAllocator::begin_read).
///
/// ```
/// use pinalloc::ExtentAllocator;
/// let mut alloc = ExtentAllocator::new(8);
/// let reader = alloc.begin_read();
/// assert_eq!(reader.epoch(), 1);
/// alloc.end_read(reader)?;
/// # Ok::<(), pinalloc::EpochError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct ReaderId {
    pub(crate) allocator: u64,
    pub(crate) seq: u64,
    pub(crate) epoch: u64,
}

impl ReaderId {
    /// The epoch the reader began in.
    ///
    /// ```
    /// let mut alloc = pinalloc::ExtentAllocator::new(8);
    /// alloc.commit(1)?;
    /// assert_eq!(alloc.begin_read().epoch(), 2);
    /// # Ok::<(), pinalloc::EpochError>(())
    /// ```
    #[must_use]
    pub fn epoch(&self) -> u64 {
        self.epoch
    }
}

/// A live snapshot reader and what it holds, as
/// [`ExtentAllocator::readers`](crate::ExtentAllocator::readers) and
/// [`SharedAllocator::readers`](crate::SharedAllocator::readers) list them: LMDB's
/// reader table, so that a forgotten reader can be found.
///
/// ```
/// use pinalloc::{ExtentAllocator, Request};
///
/// let mut alloc = ExtentAllocator::new(8);
/// let e = alloc.allocate(Request::new(4))?;
/// let reader = alloc.begin_read();
/// alloc.free(e)?; // the reader may still see `e`
/// let listed = alloc.readers();
/// assert_eq!(listed.len(), 1);
/// assert_eq!((listed[0].id, listed[0].epoch, listed[0].held_alone_blocks), (reader, 1, 4));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct ReaderInfo {
    /// The reader.
    pub id: ReaderId,
    /// The epoch it began in: it holds every block freed in this epoch or later
    /// (but for blocks allocated and freed on commit in one epoch, which no reader
    /// saw).
    pub epoch: u64,
    /// Deferred blocks that it alone holds back: those that its end would make Free.
    /// Only a reader alone in the oldest readers' epoch has any. A younger reader
    /// holds only what an older one holds too, and readers that began in the same
    /// epoch share their holds.
    pub held_alone_blocks: u64,
}

/// The reader table of allocator `allocator`'s `readers` (sequence number → epoch
/// begun in), where the readers of epoch `alone` hold `held` blocks alone: what
/// `readers()` gives on the core and on the shared allocator.
pub(crate) fn reader_table(
    allocator: u64,
    readers: &BTreeMap<u64, u64>,
    alone: Option<u64>,
    held: u64,
) -> Vec<ReaderInfo> {
    readers
        .iter()
        .map(|(&seq, &epoch)| ReaderInfo {
            id: ReaderId {
                allocator,
                seq,
                epoch,
            },
            epoch,
            held_alone_blocks: if Some(epoch) == alone { held } else { 0 },
        })
        .collect()
}

impl fmt::Display for ReaderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "reader #{} (epoch {})", self.seq, self.epoch)
    }
}

/// What a commit, an unpin or the end of a reader gave back.
///
/// ```
/// use pinalloc::{ExtentAllocator, Request};
///
/// let mut alloc = ExtentAllocator::new(8);
/// let e = alloc.allocate(Request::new(4))?;
/// alloc.commit(1)?;                 // e is durable now
/// alloc.free_on_commit(e)?;         // Deferred until epoch 2 commits
/// let out = alloc.commit(2)?;
/// assert_eq!(out.released_blocks, 4);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ReleaseOutcome {
    /// Deferred blocks that became Free.
    pub released_blocks: u64,
    /// Pinned Free blocks that went back to the free index (unpin only).
    pub unpinned_free_blocks: u64,
}

/// What [`abort`](crate::ExtentAllocator::abort) or
/// [`abort_all`](crate::ExtentAllocator::abort_all) undid.
///
/// ```
/// use pinalloc::{ExtentAllocator, Request};
///
/// let mut alloc = ExtentAllocator::new(8);
/// alloc.allocate(Request::new(4))?; // allocated in epoch 1, never committed
/// assert_eq!(alloc.abort_all(1)?.freed_blocks, 4);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct AbortOutcome {
    /// Blocks freed on commit in the epoch that are Allocated again.
    pub restored_blocks: u64,
    /// Blocks allocated in the epoch that are Free now (`abort_all` only).
    pub freed_blocks: u64,
    /// Blocks allocated in the epoch that pins keep Deferred (`abort_all` only).
    pub deferred_blocks: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Epochs {
    /// The open epoch; starts at 1.
    pub(crate) open: u64,
    /// The newest epoch whose commit is finished (0 for none): epochs after it and
    /// before the open one are prepared, their frees sealed.
    pub(crate) durable: u64,
    /// Live readers: sequence number → epoch begun in.
    pub(crate) readers: BTreeMap<u64, u64>,
    /// Live readers per epoch begun in (a multiset, for the oldest).
    pub(crate) begins: BTreeMap<u64, u64>,
    pub(crate) next_reader: u64,
    /// Until the first commit: blocks Allocated at construction and not freed since,
    /// the only Allocated blocks that predate the open epoch.
    pub(crate) mount_durable: RangeSet<u64>,
    /// At least the end of every range in `mount_durable`: a free above it needs no
    /// look at the set (such as a free in a shared group whose core holds, this way,
    /// only the blocks below the group).
    pub(crate) mount_durable_end: u64,
    /// After the first commit: blocks allocated in the open epoch. It may also name
    /// blocks freed since; only its Allocated blocks are ever asked about.
    pub(crate) allocated_since_commit: RangeSet<u64>,
}

impl Epochs {
    pub(crate) fn new() -> Self {
        Epochs {
            open: 1,
            durable: 0,
            readers: BTreeMap::new(),
            begins: BTreeMap::new(),
            next_reader: 1,
            mount_durable: RangeSet::new(),
            mount_durable_end: 0,
            allocated_since_commit: RangeSet::new(),
        }
    }

    /// The epoch the oldest live reader began in.
    #[inline]
    pub(crate) fn oldest_reader(&self) -> Option<u64> {
        self.begins.keys().next().copied()
    }

    /// Splits Allocated range `r` into the pieces allocated before the open epoch
    /// (durable) and those allocated in it (never durable).
    pub(crate) fn split_durable(&self, r: &Range<u64>) -> (Vec<Range<u64>>, Vec<Range<u64>>) {
        if self.open == 1 {
            (
                set_pieces(&self.mount_durable, r),
                set_gaps(&self.mount_durable, r),
            )
        } else {
            (
                set_gaps(&self.allocated_since_commit, r),
                set_pieces(&self.allocated_since_commit, r),
            )
        }
    }

    #[inline]
    pub(crate) fn note_allocated(&mut self, r: Range<u64>) {
        if self.open > 1 {
            self.allocated_since_commit.insert(r);
        }
    }

    #[inline]
    pub(crate) fn note_freed(&mut self, r: &Range<u64>) {
        if self.open == 1 && r.start < self.mount_durable_end {
            self.mount_durable.remove(r.clone());
        }
    }

    /// Records `r` as Allocated at construction and durable.
    pub(crate) fn note_mounted(&mut self, r: Range<u64>) {
        self.mount_durable_end = self.mount_durable_end.max(r.end);
        self.mount_durable.insert(r);
    }
}

impl ExtentAllocator {
    /// The open epoch: frees tagged now wait for it to commit.
    ///
    /// ```
    /// let mut alloc = pinalloc::ExtentAllocator::new(8);
    /// assert_eq!(alloc.epoch(), 1);
    /// alloc.commit(1)?;
    /// assert_eq!(alloc.epoch(), 2);
    /// # Ok::<(), pinalloc::EpochError>(())
    /// ```
    #[must_use]
    pub fn epoch(&self) -> u64 {
        self.epochs.open
    }

    /// Commits the open epoch `epoch` and opens the next. Blocks freed with
    /// [`free_on_commit`](Self::free_on_commit) in it stop waiting for the commit; those
    /// with no other hold (a pin, or a reader that began at or before `epoch`) become
    /// Free.
    ///
    /// # Errors
    ///
    /// [`EpochError::NotOpen`] unless `epoch` is the open epoch.
    ///
    /// ```
    /// use pinalloc::{EpochError, ExtentAllocator, Request};
    ///
    /// let mut alloc = ExtentAllocator::new(8);
    /// let e = alloc.allocate(Request::new(8))?;
    /// alloc.commit(1)?;
    /// alloc.free_on_commit(e)?;
    /// assert_eq!(alloc.stats().deferred_blocks, 8);
    /// assert_eq!(alloc.commit(1), Err(EpochError::NotOpen { epoch: 1, open: 2 }));
    /// assert_eq!(alloc.commit(2)?.released_blocks, 8);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn commit(&mut self, epoch: u64) -> Result<ReleaseOutcome, EpochError> {
        self.seal(epoch)?;
        Ok(self.finish(epoch))
    }

    /// The first half of a durable commit: closes the open epoch `epoch`, opens the
    /// next, and returns the free list as of `epoch`'s commit (what
    /// [`durable_free_extents`](Self::durable_free_extents) returns now), to be
    /// written to disk. The blocks freed on commit in `epoch` stay Deferred, so that
    /// nothing reuses them before that list is durable; once it is,
    /// [`finish_commit`](Self::finish_commit) releases them. Allocations and frees go
    /// on meanwhile, in the next epoch.
    ///
    /// [`commit`](Self::commit) is both halves at once: right when the free list is
    /// written before the commit, or never.
    ///
    /// # Errors
    ///
    /// [`EpochError::NotOpen`] unless `epoch` is the open epoch; nothing changes.
    ///
    /// ```
    /// use pinalloc::{Extent, ExtentAllocator, Request};
    ///
    /// let mut alloc = ExtentAllocator::new(8);
    /// let e = alloc.allocate(Request::new(8))?;
    /// alloc.commit(1)?;
    /// alloc.free_on_commit(e)?;
    /// let list = alloc.prepare_commit(2)?; // epoch 3 opens
    /// assert_eq!(list, [Extent::new(0, 8)]); // e is free as of epoch 2...
    /// assert!(alloc.allocate(Request::new(1)).is_err()); // ...but not reused yet
    /// // write `list` to disk and sync it, then:
    /// assert_eq!(alloc.finish_commit(2)?.released_blocks, 8);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn prepare_commit(&mut self, epoch: u64) -> Result<Vec<Extent>, EpochError> {
        self.seal(epoch)?;
        self.debug_check();
        Ok(self.durable_free_extents())
    }

    /// The second half of a durable commit: the free list that
    /// [`prepare_commit`](Self::prepare_commit) returned for `epoch` is on disk. The
    /// blocks freed on commit in `epoch`, and in every prepared epoch before it (a
    /// later list holds an earlier one's frees), stop waiting; those with no other
    /// hold become Free.
    ///
    /// # Errors
    ///
    /// [`EpochError::NotPrepared`] unless `epoch` was prepared and not yet finished;
    /// nothing changes.
    ///
    /// ```
    /// use pinalloc::{EpochError, ExtentAllocator};
    ///
    /// let mut alloc = ExtentAllocator::new(8);
    /// alloc.prepare_commit(1)?;
    /// alloc.prepare_commit(2)?;
    /// alloc.finish_commit(2)?; // finishes epoch 1 too
    /// assert_eq!(
    ///     alloc.finish_commit(1),
    ///     Err(EpochError::NotPrepared { epoch: 1, durable: 2, open: 3 })
    /// );
    /// # Ok::<(), EpochError>(())
    /// ```
    pub fn finish_commit(&mut self, epoch: u64) -> Result<ReleaseOutcome, EpochError> {
        EpochError::check_prepared(epoch, self.epochs.durable, self.epochs.open)?;
        Ok(self.finish(epoch))
    }

    /// Closes open epoch `epoch`: its pending blocks are sealed, and the next opens.
    fn seal(&mut self, epoch: u64) -> Result<(), EpochError> {
        self.check_open(epoch)?;
        let open = self.epochs.open;
        self.epochs.open += 1;
        self.epochs.mount_durable = RangeSet::new();
        self.epochs.mount_durable_end = 0;
        self.epochs.allocated_since_commit = RangeSet::new();
        self.deferrals.seal(open);
        self.counters.commits = self.counters.commits.saturating_add(1);
        Ok(())
    }

    /// Every sealed epoch through `epoch` is durable: its blocks stop waiting.
    fn finish(&mut self, epoch: u64) -> ReleaseOutcome {
        self.epochs.durable = epoch;
        let mut released = 0;
        for r in self.deferrals.finish(epoch) {
            released += self.release_unheld(&r);
        }
        self.count_released(released);
        self.debug_check();
        ReleaseOutcome {
            released_blocks: released,
            unpinned_free_blocks: 0,
        }
    }

    /// Aborts the open epoch `epoch`'s frees: every block freed on commit in it and
    /// still waiting for the commit is Allocated again, as before the free. The epoch
    /// stays open. Blocks allocated in it stay Allocated (see
    /// [`abort_all`](Self::abort_all)); plain frees are not undone (they never waited
    /// for a commit). Pins over restored blocks stay, over Allocated blocks now;
    /// readers lose nothing, as no block they may read is reused.
    ///
    /// # Errors
    ///
    /// [`EpochError::NotOpen`] unless `epoch` is the open epoch; nothing changes.
    ///
    /// ```
    /// use pinalloc::{ExtentAllocator, Request};
    ///
    /// let mut alloc = ExtentAllocator::new(8);
    /// let e = alloc.allocate(Request::new(8))?;
    /// alloc.commit(1)?;
    /// alloc.free_on_commit(e)?; // the transaction frees e...
    /// assert_eq!(alloc.abort(2)?.restored_blocks, 8); // ...and changes its mind
    /// assert_eq!(alloc.stats().allocated_blocks, 8);
    /// alloc.free_on_commit(e)?; // e is e again
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn abort(&mut self, epoch: u64) -> Result<AbortOutcome, EpochError> {
        self.check_open(epoch)?;
        let restored = self.unfree_pending();
        self.debug_check();
        Ok(AbortOutcome {
            restored_blocks: restored,
            ..AbortOutcome::default()
        })
    }

    /// Aborts the open epoch `epoch` whole: as [`abort`](Self::abort), and every
    /// block allocated in it and still Allocated is freed on commit, which, as the
    /// blocks were never durable, makes them Free at once, or Deferred while a pin
    /// covers them. The allocator is then as the epoch found it, but for plain frees
    /// and the pins and readers made since. Every allocation of the epoch is given
    /// back, whoever made it: on a shared allocator the epoch is one transaction
    /// for every thread.
    ///
    /// # Errors
    ///
    /// [`EpochError::NotOpen`] unless `epoch` is the open epoch, and
    /// [`EpochError::Busy`] when a blocking pin covers a block to be freed; nothing
    /// changes.
    ///
    /// ```
    /// use pinalloc::{ExtentAllocator, Request};
    ///
    /// let mut alloc = ExtentAllocator::new(16);
    /// let old = alloc.allocate(Request::new(8))?;
    /// alloc.commit(1)?;
    /// let new = alloc.allocate(Request::new(4))?; // epoch 2's pages
    /// alloc.free_on_commit(old)?;
    /// let out = alloc.abort_all(2)?;
    /// assert_eq!((out.restored_blocks, out.freed_blocks), (8, 4));
    /// assert_eq!(alloc.stats().allocated_blocks, 8); // `old` only, as at epoch 2's start
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn abort_all(&mut self, epoch: u64) -> Result<AbortOutcome, EpochError> {
        self.check_open(epoch)?;
        let pieces = self.check_abort_all()?;
        let out = self.apply_abort_all(pieces);
        self.debug_check();
        Ok(out)
    }

    fn check_open(&self, epoch: u64) -> Result<(), EpochError> {
        EpochError::check_open(epoch, self.epochs.open)
    }

    /// The blocks `abort_all` would free (Allocated, allocated in the open epoch), as
    /// maximal extents in order, once no blocking pin is found over them.
    pub(crate) fn check_abort_all(&self) -> Result<Vec<Extent>, EpochError> {
        let candidates: Vec<Range<u64>> = if self.epochs.open == 1 {
            set_gaps(&self.epochs.mount_durable, &(0..self.capacity))
        } else {
            self.epochs.allocated_since_commit.iter().cloned().collect()
        };
        let pieces: Vec<Extent> = candidates
            .iter()
            .flat_map(|c| self.allocated_pieces(c))
            .map(|r| to_extent(&r))
            .collect();
        for &p in &pieces {
            match self.check_free(p) {
                Ok(_) => {}
                // The pin's blocks in `p` start at the first blocked block: one
                // before them would be blocked by the pin too.
                Err(crate::FreeError::Busy { pin, blocked, .. }) => {
                    return Err(EpochError::Busy {
                        pin,
                        block: blocked.start,
                    });
                }
                Err(e) => unreachable!("an Allocated piece frees: {e}"),
            }
        }
        Ok(pieces)
    }

    /// Makes the abort that [`check_abort_all`](Self::check_abort_all) checked.
    pub(crate) fn apply_abort_all(&mut self, pieces: Vec<Extent>) -> AbortOutcome {
        let mut out = AbortOutcome {
            restored_blocks: self.unfree_pending(),
            ..AbortOutcome::default()
        };
        for p in pieces {
            let freed = self
                .free_checked(p, true)
                .expect("checked: Allocated and under no blocking pin");
            out.freed_blocks += freed.freed_blocks;
            out.deferred_blocks += freed.deferred_blocks;
        }
        out
    }

    /// The Allocated blocks of `r`, as maximal ranges in order.
    fn allocated_pieces(&self, r: &Range<u64>) -> Vec<Range<u64>> {
        if r.start >= r.end {
            return Vec::new();
        }
        let mut other: RangeSet<u64> = RangeSet::new();
        for e in self.free.overlapping(r.start, r.end) {
            other.insert(to_range(e));
        }
        for p in set_pieces(&self.pinned_free, r) {
            other.insert(p);
        }
        for d in self.deferrals.blocks_in(r) {
            other.insert(d);
        }
        set_gaps(&other, r)
    }

    /// Begins a snapshot reader in the open epoch. Until it ends, every block freed in
    /// this epoch or a later one stays Deferred, except blocks both allocated and
    /// freed on commit in the open epoch, which no snapshot can have seen.
    ///
    /// ```
    /// use pinalloc::{ExtentAllocator, Request};
    ///
    /// let mut alloc = ExtentAllocator::new(8);
    /// let e = alloc.allocate(Request::new(8))?;
    /// let reader = alloc.begin_read();
    /// assert_eq!(alloc.free(e)?.deferred_blocks, 8); // the reader may still see e
    /// assert_eq!(alloc.end_read(reader)?.released_blocks, 8);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn begin_read(&mut self) -> ReaderId {
        let (seq, epoch) = (self.epochs.next_reader, self.epochs.open);
        self.epochs.next_reader += 1;
        self.epochs.readers.insert(seq, epoch);
        *self.epochs.begins.entry(epoch).or_default() += 1;
        self.deferrals
            .set_oldest_reader(self.epochs.oldest_reader());
        self.debug_check();
        ReaderId {
            allocator: self.uid,
            seq,
            epoch,
        }
    }

    /// The live readers, in the order they began, each with its epoch and the blocks
    /// it alone holds back. O(Deferred runs) to count those blocks, when a reader is
    /// alone in the oldest epoch.
    ///
    /// ```
    /// use pinalloc::{ExtentAllocator, Request};
    ///
    /// let mut alloc = ExtentAllocator::new(16);
    /// let (a, b) = (alloc.allocate(Request::new(4))?, alloc.allocate(Request::new(4))?);
    /// let old = alloc.begin_read();
    /// alloc.free(a)?;
    /// alloc.commit(1)?;
    /// let young = alloc.begin_read();
    /// alloc.free(b)?;
    /// // `old` alone holds `a`; both hold `b`, so neither alone.
    /// let held: Vec<u64> = alloc.readers().iter().map(|r| r.held_alone_blocks).collect();
    /// assert_eq!(held, [4, 0]);
    /// alloc.end_read(old)?;
    /// assert_eq!(alloc.readers()[0].held_alone_blocks, 4); // `young` alone holds `b` now
    /// # alloc.end_read(young)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn readers(&self) -> Vec<ReaderInfo> {
        let oldest = self.epochs.oldest_reader();
        // Readers that began in the same epoch hold the same blocks: none alone.
        let alone = oldest.filter(|o| self.epochs.begins.get(o) == Some(&1));
        let held = if alone.is_some() {
            self.held_by_oldest_readers()
        } else {
            0
        };
        reader_table(self.uid, &self.epochs.readers, alone, held)
    }

    /// Ends a reader. Deferred blocks that only it (and readers already gone) held
    /// become Free.
    ///
    /// # Errors
    ///
    /// [`EpochError::UnknownReader`] for a reader of another allocator or one already
    /// ended.
    ///
    /// ```
    /// use pinalloc::{EpochError, ExtentAllocator};
    ///
    /// let mut alloc = ExtentAllocator::new(8);
    /// let r = alloc.begin_read();
    /// alloc.end_read(r)?;
    /// assert_eq!(alloc.end_read(r), Err(EpochError::UnknownReader { id: r }));
    /// # Ok::<(), EpochError>(())
    /// ```
    pub fn end_read(&mut self, reader: ReaderId) -> Result<ReleaseOutcome, EpochError> {
        let known = reader.allocator == self.uid
            && self.epochs.readers.get(&reader.seq) == Some(&reader.epoch);
        if !known {
            return Err(EpochError::UnknownReader { id: reader });
        }
        let before = self.epochs.oldest_reader();
        self.epochs.readers.remove(&reader.seq);
        let n = self
            .epochs
            .begins
            .get_mut(&reader.epoch)
            .expect("live readers are counted");
        *n -= 1;
        if *n == 0 {
            self.epochs.begins.remove(&reader.epoch);
        }
        self.deferrals
            .set_oldest_reader(self.epochs.oldest_reader());
        let after = self.epochs.oldest_reader().unwrap_or(u64::MAX);
        let mut released = 0;
        if let Some(before) = before {
            if after > before {
                let open = self.epochs.open;
                for r in self.deferrals.freed_in(before, after, open) {
                    released += self.release_unheld(&r);
                }
            }
        }
        self.count_released(released);
        self.debug_check();
        Ok(ReleaseOutcome {
            released_blocks: released,
            unpinned_free_blocks: 0,
        })
    }

    /// What would be free after a crash and remount, in address order: every block that
    /// is not Allocated and not waiting for the open epoch to commit. Pins and readers
    /// vanish on reboot, and committed frees are on disk (the frees of an epoch
    /// prepared by [`prepare_commit`](Self::prepare_commit) count as committed: they
    /// are in the list it returned). Feed it back to
    /// [`from_free_extents`](Self::from_free_extents) at mount.
    ///
    /// ```
    /// use pinalloc::{Extent, ExtentAllocator, Request};
    ///
    /// let mut alloc = ExtentAllocator::new(10);
    /// let e = alloc.allocate(Request::new(10))?;
    /// alloc.commit(1)?;
    /// let pin = alloc.pin(Extent::new(0, 2))?;
    /// alloc.free(Extent::new(0, 5))?;            // [0, 2) Deferred by the pin
    /// alloc.free_on_commit(Extent::new(5, 5))?;  // waits for epoch 2
    /// assert_eq!(alloc.durable_free_extents(), [Extent::new(0, 5)]);
    /// let remounted = ExtentAllocator::from_free_extents(10, alloc.durable_free_extents())?;
    /// assert_eq!(remounted.stats().free_blocks, 5);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn durable_free_extents(&self) -> Vec<Extent> {
        let mut pieces: Vec<Range<u64>> = self.free.iter().map(to_range).collect();
        pieces.extend(self.pinned_free.iter().cloned());
        for (r, _) in self.deferrals.epoch_of.iter() {
            pieces.extend(set_gaps(&self.deferrals.pending, &r));
        }
        pieces.sort_unstable_by_key(|r| r.start);
        let mut out: Vec<Extent> = Vec::new();
        for p in pieces {
            match out.last_mut() {
                Some(last) if last.start + last.len == p.start => last.len += p.end - p.start,
                _ => out.push(to_extent(&p)),
            }
        }
        out
    }
}
