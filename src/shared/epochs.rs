//! Epochs across groups: one open epoch for the whole space, and readers that hold
//! every group.
//!
//! Each group's core keeps its own epoch counter and readers; this layer keeps them in
//! step. `commit` takes every group's lock at once, so each free (which locks its
//! groups) lands wholly before or wholly after the commit. Readers that begin in the
//! same epoch share one reader per core: the first takes every group's lock to begin
//! it, the rest only count, and the last one's end ends it.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use super::{SharedAllocator, join_onto};
use crate::allocator::reader_table;
use crate::sync::Ordering;
use crate::{AbortOutcome, EpochError, Extent, FreeError, ReaderId, ReaderInfo, ReleaseOutcome};

#[derive(Debug)]
pub(crate) struct EpochState {
    /// The open epoch, the same in every group's core; starts at 1.
    open: u64,
    /// The newest epoch whose commit is finished (0 for none), the same in every
    /// group's core.
    durable: u64,
    /// Live readers: sequence number → epoch begun in.
    readers: BTreeMap<u64, u64>,
    /// Per epoch with live readers: how many, and the core readers (one per group)
    /// standing for them.
    proxies: BTreeMap<u64, (u64, Vec<ReaderId>)>,
    /// Sequence number of the next reader; starts at 1.
    next_reader: u64,
}

impl EpochState {
    /// Every field, spelled out, for the failure-atomicity checks.
    #[cfg(feature = "testing")]
    pub(crate) fn describe(&self) -> alloc::string::String {
        alloc::format!(
            "open {}, durable {}, readers {:?}, proxies {:?}, next {}",
            self.open,
            self.durable,
            self.readers,
            self.proxies,
            self.next_reader
        )
    }

    pub(crate) fn new() -> Self {
        EpochState {
            open: 1,
            durable: 0,
            readers: BTreeMap::new(),
            proxies: BTreeMap::new(),
            next_reader: 1,
        }
    }

    pub(crate) fn open(&self) -> u64 {
        self.open
    }

    pub(crate) fn live_readers(&self) -> u64 {
        self.readers.len() as u64
    }

    /// The open epoch, the newest finished one, and the epochs that have proxy
    /// readers (ascending): what a new group's core joins.
    pub(crate) fn for_new_group(&self) -> (u64, u64, Vec<u64>) {
        (
            self.open,
            self.durable,
            self.proxies.keys().copied().collect(),
        )
    }

    /// A new group's proxy readers, one per proxied epoch, ascending.
    pub(crate) fn add_group(&mut self, ids: Vec<ReaderId>) {
        debug_assert_eq!(ids.len(), self.proxies.len());
        for ((_, group_ids), id) in self.proxies.values_mut().zip(ids) {
            group_ids.push(id);
        }
    }

    /// Groups from `groups` on are gone: their proxy readers with them.
    pub(crate) fn drop_groups(&mut self, groups: usize) {
        for (_, ids) in self.proxies.values_mut() {
            ids.truncate(groups);
        }
    }
}

fn check_open(state: &EpochState, epoch: u64) -> Result<(), EpochError> {
    EpochError::check_open(epoch, state.open)
}

impl SharedAllocator {
    /// The open epoch.
    ///
    /// ```
    /// let alloc = pinalloc::SharedAllocator::new(8);
    /// assert_eq!(alloc.epoch(), 1);
    /// ```
    #[must_use]
    pub fn epoch(&self) -> u64 {
        self.epochs.lock().open
    }

    /// Commits the open epoch in every group at once: blocks waiting for it stop
    /// waiting, and unheld ones become Free (see
    /// [`ExtentAllocator::commit`](crate::ExtentAllocator::commit)). Wakes waiters.
    ///
    /// # Errors
    ///
    /// [`EpochError::NotOpen`] unless `epoch` is the open one; nothing changes.
    ///
    /// ```
    /// use pinalloc::{Request, SharedAllocator};
    /// let alloc = SharedAllocator::new(64);
    /// let e = alloc.allocate(Request::new(8))?;
    /// alloc.commit(1)?;
    /// assert_eq!(alloc.free_on_commit(e)?.deferred_blocks, 8);
    /// assert_eq!(alloc.commit(2)?.released_blocks, 8);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn commit(&self, epoch: u64) -> Result<ReleaseOutcome, EpochError> {
        let mut state = self.epochs.lock();
        check_open(&state, epoch)?;
        let mut out = ReleaseOutcome::default();
        for mut core in self.lock_all(0..self.groups.len()) {
            let done = core
                .commit(epoch)
                .expect("every group has the same open epoch");
            out.released_blocks += done.released_blocks;
        }
        state.open += 1;
        state.durable = epoch;
        drop(state);
        self.released();
        Ok(out)
    }

    /// The first half of a durable commit, in every group at once (see
    /// [`ExtentAllocator::prepare_commit`](crate::ExtentAllocator::prepare_commit)):
    /// closes the open epoch and returns the free list as of its commit, while the
    /// blocks freed on commit in it stay Deferred until
    /// [`finish_commit`](Self::finish_commit). Other threads allocate meanwhile, in
    /// the next epoch, and none can be given a block that the list frees before the
    /// list is durable.
    ///
    /// # Errors
    ///
    /// [`EpochError::NotOpen`] unless `epoch` is the open one; nothing changes.
    ///
    /// ```
    /// use pinalloc::{Extent, Request, SharedAllocator};
    /// let alloc = SharedAllocator::new(64);
    /// let e = alloc.allocate(Request::new(64))?;
    /// alloc.commit(1)?;
    /// alloc.free_on_commit(e)?;
    /// let list = alloc.prepare_commit(2)?;
    /// assert_eq!(list, [Extent::new(0, 64)]);
    /// assert!(alloc.allocate(Request::new(1)).is_err()); // not before the list is durable
    /// alloc.finish_commit(2)?;
    /// assert!(alloc.allocate(Request::new(1)).is_ok());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn prepare_commit(&self, epoch: u64) -> Result<Vec<Extent>, EpochError> {
        let mut state = self.epochs.lock();
        check_open(&state, epoch)?;
        let mut list = Vec::new();
        for mut core in self.lock_all(0..self.groups.len()) {
            let part = core
                .prepare_commit(epoch)
                .expect("every group has the same open epoch");
            join_onto(&mut list, part);
        }
        state.open += 1;
        Ok(list)
    }

    /// The second half of a durable commit: the list
    /// [`prepare_commit`](Self::prepare_commit) returned for `epoch` is on disk (see
    /// [`ExtentAllocator::finish_commit`](crate::ExtentAllocator::finish_commit)).
    /// Wakes waiters.
    ///
    /// # Errors
    ///
    /// [`EpochError::NotPrepared`] unless `epoch` is prepared and unfinished; nothing
    /// changes.
    ///
    /// ```
    /// let alloc = pinalloc::SharedAllocator::new(8);
    /// alloc.prepare_commit(1)?;
    /// alloc.finish_commit(1)?;
    /// assert!(alloc.finish_commit(1).is_err());
    /// # Ok::<(), pinalloc::EpochError>(())
    /// ```
    pub fn finish_commit(&self, epoch: u64) -> Result<ReleaseOutcome, EpochError> {
        let mut state = self.epochs.lock();
        EpochError::check_prepared(epoch, state.durable, state.open)?;
        let mut out = ReleaseOutcome::default();
        for mut core in self.lock_all(0..self.groups.len()) {
            let done = core
                .finish_commit(epoch)
                .expect("every group has the same prepared epochs");
            out.released_blocks += done.released_blocks;
        }
        state.durable = epoch;
        drop(state);
        self.released();
        Ok(out)
    }

    /// Undoes the open epoch's frees on commit in every group (see
    /// [`ExtentAllocator::abort`](crate::ExtentAllocator::abort)). The epoch is one
    /// transaction for every thread: every thread's frees on commit are undone. Wakes
    /// waiters (a `wait_released` of a restored extent returns).
    ///
    /// # Errors
    ///
    /// [`EpochError::NotOpen`] unless `epoch` is the open one; nothing changes.
    ///
    /// ```
    /// use pinalloc::{Request, SharedAllocator};
    /// let alloc = SharedAllocator::new(64);
    /// let e = alloc.allocate(Request::new(8))?;
    /// alloc.commit(1)?;
    /// alloc.free_on_commit(e)?;
    /// assert_eq!(alloc.abort(2)?.restored_blocks, 8);
    /// alloc.free(e)?; // Allocated again: a plain free takes it
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn abort(&self, epoch: u64) -> Result<AbortOutcome, EpochError> {
        let state = self.epochs.lock();
        check_open(&state, epoch)?;
        let mut out = AbortOutcome::default();
        for mut core in self.lock_all(0..self.groups.len()) {
            let done = core
                .abort(epoch)
                .expect("every group has the same open epoch");
            out.restored_blocks += done.restored_blocks;
        }
        drop(state);
        if out.restored_blocks > 0 {
            // Blocks left Deferred: `wait_released` waits for exactly that.
            self.released();
        }
        Ok(out)
    }

    /// Aborts the open epoch whole in every group at once: its frees on commit are
    /// undone and every block allocated in it is freed (see
    /// [`ExtentAllocator::abort_all`](crate::ExtentAllocator::abort_all)), whichever
    /// thread allocated it. The cap on Deferred blocks does not refuse it: blocks
    /// that pins keep Deferred are counted, but an undo is never refused for them.
    /// Wakes waiters.
    ///
    /// # Errors
    ///
    /// [`EpochError::NotOpen`] unless `epoch` is the open one, and
    /// [`EpochError::Busy`] when a blocking pin covers a block to be freed; nothing
    /// changes.
    ///
    /// ```
    /// use pinalloc::{Request, SharedAllocator};
    /// let alloc = SharedAllocator::new(64);
    /// alloc.allocate(Request::new(8))?;
    /// alloc.commit(1)?;
    /// alloc.allocate(Request::new(4))?;
    /// assert_eq!(alloc.abort_all(2)?.freed_blocks, 4);
    /// assert_eq!(alloc.stats().space.allocated_blocks, 8);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn abort_all(&self, epoch: u64) -> Result<AbortOutcome, EpochError> {
        let state = self.epochs.lock();
        check_open(&state, epoch)?;
        let mut locked = self.lock_all(0..self.groups.len());
        let mut planned = Vec::with_capacity(locked.len());
        for core in &locked {
            match core.check_abort_all() {
                Ok(pieces) => planned.push(pieces),
                // Groups are checked in address order: this is the first blocked
                // block of the whole space.
                Err(EpochError::Busy { pin, block }) => {
                    // No lock held: `tracked` is not taken under `epochs`.
                    drop(locked);
                    drop(state);
                    // A pin over several groups is named as a free names it.
                    let one = Extent::new(block, 1);
                    let whole = self.whole_busy(FreeError::Busy {
                        extent: one,
                        pin,
                        blocked: one,
                    });
                    let FreeError::Busy { pin, .. } = whole else {
                        unreachable!("a busy error stays busy");
                    };
                    return Err(EpochError::Busy { pin, block });
                }
                Err(e) => return Err(e),
            }
        }
        let mut out = AbortOutcome::default();
        for (core, pieces) in locked.iter_mut().zip(planned) {
            let done = core.apply_abort_all(pieces);
            out.restored_blocks += done.restored_blocks;
            out.freed_blocks += done.freed_blocks;
            out.deferred_blocks += done.deferred_blocks;
        }
        drop(locked);
        drop(state);
        if out.restored_blocks + out.freed_blocks + out.deferred_blocks > 0 {
            self.released();
        }
        Ok(out)
    }

    /// Starts a snapshot reader in the open epoch: blocks freed in this epoch or later
    /// stay Deferred until it ends (see
    /// [`ExtentAllocator::begin_read`](crate::ExtentAllocator::begin_read)).
    ///
    /// ```
    /// use pinalloc::{Request, SharedAllocator};
    /// let alloc = SharedAllocator::new(64);
    /// let e = alloc.allocate(Request::new(8))?;
    /// let reader = alloc.begin_read();
    /// assert_eq!(alloc.free(e)?.deferred_blocks, 8);
    /// assert_eq!(alloc.end_read(reader)?.released_blocks, 8);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use = "a reader holds blocks until `end_read`"]
    pub fn begin_read(&self) -> ReaderId {
        let mut state = self.epochs.lock();
        let epoch = state.open;
        let seq = state.next_reader;
        state.next_reader += 1;
        state.readers.insert(seq, epoch);
        self.live_readers.fetch_add(1, Ordering::AcqRel);
        if let Some((count, _)) = state.proxies.get_mut(&epoch) {
            *count += 1;
        } else {
            let ids = self
                .lock_all(0..self.groups.len())
                .iter_mut()
                .map(|core| core.begin_read())
                .collect();
            state.proxies.insert(epoch, (1, ids));
        }
        ReaderId {
            allocator: self.uid,
            seq,
            epoch,
        }
    }

    /// Starts a snapshot reader, as [`begin_read`](Self::begin_read), that ends when
    /// its guard drops: a reader that cannot be forgotten. [`ReadGuard::into_id`]
    /// keeps it live past the guard, for [`end_read`](Self::end_read) by hand.
    ///
    /// ```
    /// use pinalloc::{Request, SharedAllocator};
    /// let alloc = SharedAllocator::new(64);
    /// let e = alloc.allocate(Request::new(8))?;
    /// {
    ///     let _snapshot = alloc.read();
    ///     assert_eq!(alloc.free(e)?.deferred_blocks, 8); // the reader may still see e
    /// } // the guard drops: the read ends
    /// assert_eq!(alloc.stats().space.free_blocks, 64);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn read(&self) -> ReadGuard<'_> {
        ReadGuard {
            alloc: self,
            id: Some(self.begin_read()),
        }
    }

    /// The live readers, in the order they began, each with its epoch and the blocks
    /// it alone holds back (see [`ReaderInfo`]): which reader to end when Deferred
    /// space does not come back. Reads every group under its lock when a reader is
    /// alone in the oldest epoch, one at a time: exact at a quiet point.
    ///
    /// ```
    /// use pinalloc::{Request, SharedAllocator};
    /// let alloc = SharedAllocator::new(64);
    /// let e = alloc.allocate(Request::new(8))?;
    /// let forgotten = alloc.begin_read();
    /// alloc.free(e)?;
    /// let listed = alloc.readers();
    /// assert_eq!((listed[0].id, listed[0].held_alone_blocks), (forgotten, 8));
    /// # alloc.end_read(forgotten)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn readers(&self) -> Vec<ReaderInfo> {
        let state = self.epochs.lock();
        // The proxies are keyed by epoch: the first is the oldest readers'.
        let oldest = state.proxies.keys().next().copied();
        // Readers that began in the same epoch hold the same blocks: none alone.
        let alone = oldest.filter(|o| state.proxies.get(o).is_some_and(|p| p.0 == 1));
        let held: u64 = if alone.is_some() {
            // Each group's oldest reader is this epoch's proxy. One group at a time,
            // as `stats`: exact at a quiet point.
            (0..self.groups.len())
                .map(|g| self.lock(g).held_by_oldest_readers())
                .sum()
        } else {
            0
        };
        reader_table(self.uid, &state.readers, alone, held)
    }

    /// Whether a reader is live (a lock-free look: one that begins or ends meanwhile
    /// may or may not be seen).
    pub(crate) fn has_readers(&self) -> bool {
        self.live_readers.load(Ordering::Acquire) > 0
    }

    /// Ends a reader; blocks only it held become Free. Wakes waiters.
    ///
    /// # Errors
    ///
    /// [`EpochError::UnknownReader`] for a reader of another allocator or one already
    /// ended; nothing changes.
    ///
    /// ```
    /// let alloc = pinalloc::SharedAllocator::new(8);
    /// let r = alloc.begin_read();
    /// alloc.end_read(r)?;
    /// assert!(alloc.end_read(r).is_err());
    /// # Ok::<(), pinalloc::EpochError>(())
    /// ```
    pub fn end_read(&self, reader: ReaderId) -> Result<ReleaseOutcome, EpochError> {
        let mut state = self.epochs.lock();
        if reader.allocator != self.uid || state.readers.remove(&reader.seq).is_none() {
            return Err(EpochError::UnknownReader { id: reader });
        }
        self.live_readers.fetch_sub(1, Ordering::AcqRel);
        let proxy = state
            .proxies
            .get_mut(&reader.epoch)
            .expect("a live reader's epoch has a proxy");
        proxy.0 -= 1;
        if proxy.0 > 0 {
            return Ok(ReleaseOutcome::default());
        }
        let (_, ids) = state.proxies.remove(&reader.epoch).expect("just found");
        // Every group at once, as `begin_read`: a free over several groups sees the
        // reader either live in all of them or ended in all of them.
        let mut out = ReleaseOutcome::default();
        let mut locked = self.lock_all(0..self.groups.len());
        for (core, id) in locked.iter_mut().zip(ids) {
            let done = core.end_read(id).expect("proxy readers are live");
            out.released_blocks += done.released_blocks;
        }
        drop(locked);
        drop(state);
        if out.released_blocks > 0 {
            self.released();
        }
        Ok(out)
    }
}

/// A snapshot reader of a [`SharedAllocator`] that ends when dropped; from
/// [`SharedAllocator::read`]. It borrows the allocator, as a
/// [`PinGuard`](crate::PinGuard) does.
///
/// ```
/// let alloc = pinalloc::SharedAllocator::new(8);
/// let guard = alloc.read();
/// assert_eq!(alloc.readers()[0].id, guard.id());
/// drop(guard);
/// assert!(alloc.readers().is_empty());
/// ```
#[must_use = "dropping the guard ends the read at once"]
#[derive(Debug)]
pub struct ReadGuard<'a> {
    alloc: &'a SharedAllocator,
    /// `None` once ended or handed out.
    id: Option<ReaderId>,
}

impl ReadGuard<'_> {
    /// The reader.
    ///
    /// ```
    /// let alloc = pinalloc::SharedAllocator::new(8);
    /// assert_eq!(alloc.read().id().epoch(), 1);
    /// ```
    #[must_use]
    pub fn id(&self) -> ReaderId {
        self.id
            .expect("a guard holds its reader until it is consumed")
    }

    /// Ends the read now, with what it released.
    ///
    /// # Errors
    ///
    /// [`EpochError::UnknownReader`] when the reader was already ended by hand (with
    /// [`end_read`](SharedAllocator::end_read) of [`id`](Self::id)).
    ///
    /// ```
    /// use pinalloc::{Request, SharedAllocator};
    /// let alloc = SharedAllocator::new(8);
    /// let e = alloc.allocate(Request::new(8))?;
    /// let guard = alloc.read();
    /// alloc.free(e)?;
    /// assert_eq!(guard.end()?.released_blocks, 8);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn end(mut self) -> Result<ReleaseOutcome, EpochError> {
        let id = self
            .id
            .take()
            .expect("a guard holds its reader until it is consumed");
        self.alloc.end_read(id)
    }

    /// Keeps the reader live past the guard: end it with
    /// [`end_read`](SharedAllocator::end_read).
    ///
    /// ```
    /// let alloc = pinalloc::SharedAllocator::new(8);
    /// let id = alloc.read().into_id();
    /// assert_eq!(alloc.readers().len(), 1);
    /// alloc.end_read(id)?;
    /// # Ok::<(), pinalloc::EpochError>(())
    /// ```
    #[must_use = "the reader stays live until `end_read`"]
    pub fn into_id(mut self) -> ReaderId {
        self.id
            .take()
            .expect("a guard holds its reader until it is consumed")
    }
}

impl Drop for ReadGuard<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            // Ended by hand already: nothing left to end.
            let _ = self.alloc.end_read(id);
        }
    }
}
