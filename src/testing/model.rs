//! The reference model: one record per block, placements computed by brute force from
//! each policy's definition, and holds re-evaluated for every block after every
//! operation. Obviously correct beats fast here: every operation is O(capacity) or
//! worse, so keep model spaces to a few thousand blocks.

use std::collections::BTreeMap;
use std::vec;
use std::vec::Vec;

use crate::{
    AllocError, BlockState, EpochError, Extent, ExtentError, FreeError, HISTOGRAM_BUCKETS, Held,
    PinError, PinId, Policy, ReaderId, Request, ResizeError,
};

/// One block of the [`Model`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelBlock {
    /// Free, Allocated or Deferred.
    pub state: BlockState,
    /// Pins of any mode.
    pub pins: u32,
    /// Blocking pins.
    pub blocking: u32,
    /// Deferred by `free_on_commit`, waiting for the commit of the epoch it was freed
    /// in (open, or prepared and not finished).
    pub pending: bool,
    /// The epoch of the free that made it Deferred.
    pub freed_epoch: u64,
    /// The epoch of its allocation; `None` for blocks Allocated at construction.
    pub alloc_epoch: Option<u64>,
}

const FREE: ModelBlock = ModelBlock {
    state: BlockState::Free,
    pins: 0,
    blocking: 0,
    pending: false,
    freed_epoch: 0,
    alloc_epoch: None,
};

/// The block-state contract of [`ExtentAllocator`](crate::ExtentAllocator), written
/// as plainly as possible: a `Vec` with one [`ModelBlock`] per block.
///
/// Its methods mirror the allocator's and return what the allocator must return,
/// errors included. [`Checked`](super::Checked) runs both side by side.
///
/// ```
/// use pinalloc::testing::Model;
/// use pinalloc::{Extent, Request};
///
/// let mut model = Model::new(8);
/// let e = model.allocate(&Request::new(3), None)?;
/// assert_eq!(e, Extent::new(0, 3));
/// assert_eq!(model.free_runs(), [Extent::new(3, 5)]);
/// # Ok::<(), pinalloc::AllocError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Model {
    /// Every block, by address.
    pub blocks: Vec<ModelBlock>,
    /// Reservation id → blocks left.
    pub reservations: BTreeMap<u64, u64>,
    /// Live pins → (extent, blocking).
    pub pins: BTreeMap<PinId, (Extent, bool)>,
    /// Live readers → the epoch each began in.
    pub readers: BTreeMap<ReaderId, u64>,
    /// The open epoch.
    pub open: u64,
    /// The newest epoch whose commit is finished (0 for none); epochs after it and
    /// before `open` are prepared, their frees on commit still waiting.
    pub durable: u64,
}

/// What a free did, per the model: blocks Free at once and blocks Deferred.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Freed {
    /// Blocks that became Free.
    pub now: u64,
    /// Blocks that became Deferred.
    pub deferred: u64,
}

impl Model {
    /// `capacity` Free blocks, epoch 1 open.
    ///
    /// # Panics
    ///
    /// If `capacity` does not fit in memory as one record per block.
    #[must_use]
    pub fn new(capacity: u64) -> Self {
        Model {
            blocks: vec![FREE; usize::try_from(capacity).expect("a model space fits in memory")],
            reservations: BTreeMap::new(),
            pins: BTreeMap::new(),
            readers: BTreeMap::new(),
            open: 1,
            durable: 0,
        }
    }

    /// Marks blocks Allocated at construction (durable, from before epoch 1), as
    /// [`ExtentAllocator::from_allocated_extents`](crate::ExtentAllocator::from_allocated_extents)
    /// does.
    ///
    /// # Panics
    ///
    /// If `e` leaves the space.
    pub fn mount_allocated(&mut self, e: Extent) {
        for b in e.start..e.start + e.len {
            self.blocks[b as usize].state = BlockState::Allocated;
        }
    }

    /// The number of blocks.
    #[must_use]
    pub fn capacity(&self) -> u64 {
        self.blocks.len() as u64
    }

    fn count(&self, f: impl Fn(&ModelBlock) -> bool) -> u64 {
        self.blocks.iter().filter(|b| f(b)).count() as u64
    }

    fn allocatable(b: &ModelBlock) -> bool {
        b.state == BlockState::Free && b.pins == 0
    }

    /// Free blocks, pinned ones included.
    #[must_use]
    pub fn free_blocks(&self) -> u64 {
        self.count(|b| b.state == BlockState::Free)
    }

    /// Free blocks `allocate` may use.
    #[must_use]
    pub fn index_free(&self) -> u64 {
        self.count(Self::allocatable)
    }

    /// Allocated blocks.
    #[must_use]
    pub fn allocated_blocks(&self) -> u64 {
        self.count(|b| b.state == BlockState::Allocated)
    }

    /// Free blocks some pin covers.
    #[must_use]
    pub fn pinned_free(&self) -> u64 {
        self.count(|b| b.state == BlockState::Free && b.pins > 0)
    }

    /// Blocks some pin covers, in any state.
    #[must_use]
    pub fn pinned_blocks(&self) -> u64 {
        self.count(|b| b.pins > 0)
    }

    /// Blocks reserved and not yet spent.
    #[must_use]
    pub fn reserved(&self) -> u64 {
        self.reservations.values().sum()
    }

    /// The epoch the oldest live reader began in.
    #[must_use]
    pub fn oldest_reader(&self) -> Option<u64> {
        self.readers.values().copied().min()
    }

    /// Each live reader, in the order it began (by id), with the Deferred blocks it
    /// alone holds: by counting, for each block with no pin and no commit to wait
    /// for, the live readers that began at or before its free, and giving the block
    /// to the one reader when there is exactly one. O(blocks × log readers).
    #[must_use]
    pub fn readers_held_alone(&self) -> Vec<(ReaderId, u64)> {
        let mut by_epoch: Vec<(u64, ReaderId)> = self
            .readers
            .iter()
            .map(|(&id, &epoch)| (epoch, id))
            .collect();
        by_epoch.sort_unstable();
        let mut alone: BTreeMap<ReaderId, u64> = BTreeMap::new();
        for b in &self.blocks {
            if b.state != BlockState::Deferred || b.pins > 0 || b.pending {
                continue;
            }
            let holders = by_epoch.partition_point(|&(e, _)| e <= b.freed_epoch);
            if holders == 1 {
                *alone.entry(by_epoch[0].1).or_default() += 1;
            }
        }
        self.readers
            .keys()
            .map(|&id| (id, alone.get(&id).copied().unwrap_or(0)))
            .collect()
    }

    /// Deferred blocks by what holds them: an epoch or a reader, else only pins.
    #[must_use]
    pub fn deferred(&self) -> Held {
        let oldest = self.oldest_reader();
        let epochs = self.count(|b| {
            b.state == BlockState::Deferred
                && (b.pending || oldest.is_some_and(|o| o <= b.freed_epoch))
        });
        let all = self.count(|b| b.state == BlockState::Deferred);
        Held {
            pins: all - epochs,
            epochs,
        }
    }

    /// Maximal runs of blocks satisfying `f`, in address order.
    pub fn runs(&self, f: impl Fn(&ModelBlock) -> bool) -> Vec<Extent> {
        let mut runs = Vec::new();
        let mut b = 0;
        while b < self.blocks.len() {
            if !f(&self.blocks[b]) {
                b += 1;
                continue;
            }
            let start = b;
            while b < self.blocks.len() && f(&self.blocks[b]) {
                b += 1;
            }
            runs.push(Extent::new(start as u64, (b - start) as u64));
        }
        runs
    }

    /// Every block's state and holds, in maximal runs: what
    /// [`ExtentAllocator::runs`](crate::ExtentAllocator::runs) must list, worked out
    /// block by block.
    #[must_use]
    pub fn block_runs(&self) -> Vec<crate::BlockRun> {
        let oldest = self.oldest_reader();
        let mut out: Vec<crate::BlockRun> = Vec::new();
        for (i, b) in self.blocks.iter().enumerate() {
            let deferred = b.state == BlockState::Deferred;
            let run = crate::BlockRun {
                extent: Extent::new(i as u64, 1),
                state: b.state,
                pins: u64::from(b.pins),
                freed_in: deferred.then_some(b.freed_epoch),
                awaiting_commit: deferred && b.pending,
                reader_held: deferred && oldest.is_some_and(|o| o <= b.freed_epoch),
            };
            crate::allocator::push_run(&mut out, run);
        }
        out
    }

    /// The free index: maximal runs of Free, unpinned blocks.
    #[must_use]
    pub fn free_runs(&self) -> Vec<Extent> {
        self.runs(Self::allocatable)
    }

    /// What a remount would find free: not Allocated and not waiting for the open
    /// epoch's commit (blocks of prepared epochs are free in their lists).
    #[must_use]
    pub fn durable_runs(&self) -> Vec<Extent> {
        let open = self.open;
        self.runs(|b| b.state != BlockState::Allocated && !(b.pending && b.freed_epoch == open))
    }

    /// The longest free run `allocate` may use.
    #[must_use]
    pub fn largest_free(&self) -> u64 {
        self.free_runs().iter().map(|r| r.len).max().unwrap_or(0)
    }

    /// The free runs' size histogram, as [`Stats::free_histogram`](crate::Stats).
    #[must_use]
    pub fn histogram(&self) -> [u64; HISTOGRAM_BUCKETS] {
        let mut h = [0; HISTOGRAM_BUCKETS];
        for r in self.free_runs() {
            h[r.len.ilog2() as usize] += 1;
        }
        h
    }

    /// The [`AllocError::NoSpace`] the allocator must give for `requested` blocks.
    #[must_use]
    pub fn no_space(&self, requested: u64) -> AllocError {
        AllocError::NoSpace {
            requested,
            free: self.free_blocks(),
            largest_free: self.largest_free(),
            reserved: self.reserved(),
            deferred: self.deferred(),
            pinned_free: self.pinned_free(),
        }
    }

    /// `run[p]` = allocatable blocks from `p` up to the next block that is not.
    fn run_lengths(&self) -> Vec<u64> {
        let mut run = vec![0u64; self.blocks.len() + 1];
        for p in (0..self.blocks.len()).rev() {
            run[p] = if Self::allocatable(&self.blocks[p]) {
                run[p + 1] + 1
            } else {
                0
            };
        }
        run
    }

    /// Every aligned start where `len` blocks can be allocated.
    fn candidates(&self, len: u64, align: u64) -> Vec<u64> {
        let run = self.run_lengths();
        (0..self.capacity())
            .filter(|p| p % align == 0 && run[*p as usize] >= len)
            .collect()
    }

    /// Where `policy` puts `len` aligned blocks, by brute force over every candidate.
    fn find(&self, policy: Policy, len: u64, align: u64) -> Option<u64> {
        let cands = self.candidates(len, align);
        match policy {
            Policy::FirstFit => cands.first().copied(),
            Policy::Near(goal) => cands.into_iter().min_by_key(|&p| (p.abs_diff(goal), p)),
            _ => {
                // Smallest free run holding a candidate, lowest run first; its lowest candidate.
                let runs = self.free_runs();
                let run_of = |p: u64| {
                    runs.iter()
                        .find(|r| r.contains(p))
                        .copied()
                        .expect("a candidate lies in a free run")
                };
                cands.into_iter().min_by_key(|&p| {
                    let r = run_of(p);
                    (r.len, r.start, p)
                })
            }
        }
    }

    /// The longest aligned run any single free run can give.
    fn largest_placeable(&self, align: u64) -> u64 {
        let run = self.run_lengths();
        (0..self.capacity())
            .filter(|p| p % align == 0)
            .map(|p| run[p as usize])
            .max()
            .unwrap_or(0)
    }

    fn validate(&self, r: &Request) -> Result<(), AllocError> {
        if r.min_len == 0 {
            return Err(AllocError::ZeroLength);
        }
        if r.min_len > r.max_len {
            return Err(AllocError::InvalidRange {
                min: r.min_len,
                max: r.max_len,
            });
        }
        if r.align == 0 || !r.align.is_power_of_two() {
            return Err(AllocError::BadAlignment { align: r.align });
        }
        match r.policy {
            Policy::Exact(start) => {
                if start % r.align != 0 {
                    return Err(AllocError::Misaligned {
                        start,
                        align: r.align,
                    });
                }
                let extent = Extent::new(start, r.min_len);
                match start.checked_add(r.min_len) {
                    None => {
                        return Err(AllocError::BadExtent(ExtentError::Overflow { extent }));
                    }
                    Some(end) if end > self.capacity() => {
                        return Err(AllocError::BadExtent(ExtentError::OutOfBounds {
                            extent,
                            capacity: self.capacity(),
                        }));
                    }
                    _ => {}
                }
            }
            Policy::Near(goal) if goal >= self.capacity() => {
                return Err(AllocError::BadExtent(ExtentError::OutOfBounds {
                    extent: Extent::new(goal, 1),
                    capacity: self.capacity(),
                }));
            }
            _ => {}
        }
        Ok(())
    }

    /// Records `e` as allocated in the open epoch, for allocators whose placement the
    /// model does not predict (such as a `SharedAllocator`'s groups).
    ///
    /// # Panics
    ///
    /// If a block of `e` is not Free and unpinned: it was handed out twice.
    pub fn take(&mut self, e: Extent) {
        for b in e.start..e.start + e.len {
            let block = &mut self.blocks[b as usize];
            assert!(
                Self::allocatable(block),
                "model: block {b} handed out twice"
            );
            block.state = BlockState::Allocated;
            block.alloc_epoch = Some(self.open);
        }
    }

    /// `theirs` if it is as good a placement as `mine` under best fit: as long, at the
    /// lowest fitting start of a free run as short as `mine`'s. The contract leaves the
    /// choice among equally short runs open, so the model follows the allocator's.
    fn prefer(&self, mine: Extent, theirs: Option<Extent>, align: u64) -> Extent {
        let Some(theirs) = theirs.filter(|t| t.len == mine.len && t.start != mine.start) else {
            return mine;
        };
        let runs = self.free_runs();
        let run_of = |p: u64| runs.iter().find(|r| r.contains(p)).copied();
        let (Some(ours), Some(run)) = (run_of(mine.start), run_of(theirs.start)) else {
            return mine;
        };
        let lowest = run.start.checked_next_multiple_of(align).filter(|&p| {
            p.checked_add(theirs.len)
                .is_some_and(|e| e <= run.start + run.len)
        });
        if run.len == ours.len && lowest == Some(theirs.start) {
            theirs
        } else {
            mine
        }
    }

    fn place(&self, r: &Request, budget: u64) -> Result<Extent, AllocError> {
        if budget < r.min_len {
            return Err(self.no_space(r.min_len));
        }
        let max = r.max_len.min(budget);
        if let Policy::Exact(start) = r.policy {
            let len = max.min(self.run_lengths()[start as usize]);
            if len < r.min_len {
                return Err(AllocError::NotFree {
                    extent: Extent::new(start, r.min_len),
                });
            }
            return Ok(Extent::new(start, len));
        }
        if let Some(p) = self.find(r.policy, max, r.align) {
            return Ok(Extent::new(p, max));
        }
        let len = max.min(self.largest_placeable(r.align));
        if len >= r.min_len {
            let p = self
                .find(r.policy, len, r.align)
                .expect("largest placeable places");
            return Ok(Extent::new(p, len));
        }
        Err(self.no_space(r.min_len))
    }

    fn reservation(&self, id: Option<u64>, min: u64) -> Result<Option<u64>, AllocError> {
        let Some(id) = id else { return Ok(None) };
        let Some(&remaining) = self.reservations.get(&id) else {
            return Err(AllocError::UnknownReservation { id });
        };
        if min > remaining {
            return Err(AllocError::Overdrawn {
                id,
                requested: min,
                remaining,
            });
        }
        Ok(Some(remaining))
    }

    fn charge(&mut self, id: Option<u64>, len: u64) {
        if let Some(left) = id.and_then(|id| self.reservations.get_mut(&id)) {
            *left -= len;
        }
    }

    fn budget(&self, remaining: Option<u64>) -> u64 {
        remaining.unwrap_or_else(|| self.index_free() - self.reserved())
    }

    /// `allocate` (reservation `None`) or `allocate_reserved` (reservation
    /// `Some(id)`).
    ///
    /// # Errors
    ///
    /// Those the allocator must give.
    pub fn allocate(
        &mut self,
        r: &Request,
        reservation: Option<u64>,
    ) -> Result<Extent, AllocError> {
        self.allocate_as(r, reservation, None)
    }

    /// [`allocate`](Self::allocate), taking `chosen` (what the allocator placed) instead
    /// of the model's own pick when the request is best fit and `chosen` is as good.
    ///
    /// # Errors
    ///
    /// Those the allocator must give.
    pub fn allocate_as(
        &mut self,
        r: &Request,
        reservation: Option<u64>,
        chosen: Option<Extent>,
    ) -> Result<Extent, AllocError> {
        self.validate(r)?;
        let budget = self.budget(self.reservation(reservation, r.min_len)?);
        let mut e = self.place(r, budget)?;
        if r.policy == Policy::BestFit {
            e = self.prefer(e, chosen, r.align);
        }
        self.take(e);
        self.charge(reservation, e.len);
        Ok(e)
    }

    /// `allocate_many` (reservation `None`) or `allocate_many_reserved`.
    ///
    /// # Errors
    ///
    /// Those the allocator must give.
    pub fn allocate_many(
        &mut self,
        total: u64,
        reservation: Option<u64>,
    ) -> Result<Vec<Extent>, AllocError> {
        self.allocate_many_as(total, reservation, &[])
    }

    /// [`allocate_many`](Self::allocate_many), taking each of `chosen` (what the
    /// allocator placed) instead of the model's own pick where it is as good: a best
    /// fit among equally short runs, or one of the longest runs.
    ///
    /// # Errors
    ///
    /// Those the allocator must give.
    pub fn allocate_many_as(
        &mut self,
        total: u64,
        reservation: Option<u64>,
        chosen: &[Extent],
    ) -> Result<Vec<Extent>, AllocError> {
        if total == 0 {
            return Err(AllocError::ZeroLength);
        }
        let budget = self.budget(self.reservation(reservation, total)?);
        if total > budget {
            return Err(self.no_space(total));
        }
        let mut out = Vec::new();
        let mut left = total;
        while left > 0 {
            let runs = self.free_runs();
            let Some(&largest) = runs
                .iter()
                .min_by_key(|r| (core::cmp::Reverse(r.len), r.start))
            else {
                break; // unreachable: the budget counted free blocks
            };
            let theirs = chosen.get(out.len()).copied();
            let e = match runs
                .iter()
                .filter(|r| r.len >= left)
                .min_by_key(|r| (r.len, r.start))
            {
                Some(best) => self.prefer(Extent::new(best.start, left), theirs, 1),
                None => theirs
                    .filter(|t| t.len == largest.len && runs.contains(t))
                    .unwrap_or(largest),
            };
            self.take(e);
            self.charge(reservation, e.len);
            left -= e.len;
            out.push(e);
        }
        Ok(out)
    }

    /// Makes Free every Deferred block that nothing holds; returns how many.
    fn settle(&mut self) -> u64 {
        let oldest = self.oldest_reader();
        let mut released = 0;
        for b in &mut self.blocks {
            let reader = oldest.is_some_and(|o| o <= b.freed_epoch);
            if b.state == BlockState::Deferred && b.pins == 0 && !b.pending && !reader {
                b.state = BlockState::Free;
                released += 1;
            }
        }
        released
    }

    /// Checks an extent's shape, written apart from the allocator's own check: the
    /// error every call taking `e` must give, if any.
    fn shape(&self, e: Extent) -> Result<(), ExtentError> {
        if e.len == 0 {
            return Err(ExtentError::ZeroLength { start: e.start });
        }
        match e.start.checked_add(e.len) {
            None => Err(ExtentError::Overflow { extent: e }),
            Some(end) if end > self.capacity() => Err(ExtentError::OutOfBounds {
                extent: e,
                capacity: self.capacity(),
            }),
            Some(_) => Ok(()),
        }
    }

    /// `free` (`on_commit` false) or `free_on_commit`.
    ///
    /// # Errors
    ///
    /// Those the allocator must give.
    pub fn free(&mut self, e: Extent, on_commit: bool) -> Result<Freed, FreeError> {
        self.shape(e).map_err(FreeError::BadExtent)?;
        let range = e.start as usize..(e.start + e.len) as usize;
        let blocks = &self.blocks[range.clone()];
        let allocated = |b: &ModelBlock| b.state == BlockState::Allocated;
        if let Some(first) = blocks.iter().position(|b| !allocated(b)) {
            let run = blocks[first..].iter().take_while(|b| !allocated(b)).count();
            let offending = Extent::new(e.start + first as u64, run as u64);
            return Err(if blocks.iter().any(allocated) {
                FreeError::PartlyAllocated {
                    extent: e,
                    offending,
                }
            } else {
                FreeError::NotAllocated {
                    extent: e,
                    offending,
                }
            });
        }
        if let Some((pin, blocked)) = self.busy(e) {
            return Err(FreeError::Busy {
                extent: e,
                pin,
                blocked,
            });
        }
        let open = self.open;
        for b in &mut self.blocks[range.clone()] {
            let never_durable = b.alloc_epoch == Some(open);
            b.state = BlockState::Deferred;
            // Readers see committed state only: a block allocated in the open epoch
            // and freed on commit was never visible to any of them (epoch 0).
            b.freed_epoch = if on_commit && never_durable { 0 } else { open };
            b.pending = on_commit && !never_durable;
            b.alloc_epoch = None;
        }
        self.settle();
        let now = self.blocks[range]
            .iter()
            .filter(|b| b.state == BlockState::Free)
            .count() as u64;
        Ok(Freed {
            now,
            deferred: e.len - now,
        })
    }

    /// Of the blocking pins over the first block of `e` that one covers, the oldest,
    /// and the blocks of `e` it covers: what refuses a free of `e`.
    fn busy(&self, e: Extent) -> Option<(PinId, Extent)> {
        // Pins are numbered in the order they were made (in one sequence across a
        // shared allocator's groups too).
        let blocking = || self.pins.iter().filter(|(_, (_, blocking))| *blocking);
        let covers = |p: &Extent, b: u64| p.start <= b && b - p.start < p.len;
        let first =
            (e.start..e.start + e.len).find(|&b| blocking().any(|(_, (p, _))| covers(p, b)))?;
        let (&pin, &(p, _)) = blocking()
            .filter(|(_, (p, _))| covers(p, first))
            .min_by_key(|(id, _)| id.seq)?;
        let start = p.start.max(e.start);
        let end = (p.start + p.len).min(e.start + e.len);
        Some((pin, Extent::new(start, end - start)))
    }

    /// Checks a pin of `e` as the allocator does: the error it must give, if any.
    ///
    /// # Errors
    ///
    /// Those the allocator must give.
    pub fn check_pin(&self, e: Extent) -> Result<(), PinError> {
        self.shape(e).map_err(PinError::BadExtent)?;
        let range = e.start as usize..(e.start + e.len) as usize;
        let free_blocks = self.blocks[range]
            .iter()
            .filter(|b| Self::allocatable(b))
            .count() as u64;
        let unreserved = self.index_free() - self.reserved();
        if free_blocks > unreserved {
            return Err(PinError::Reserved {
                extent: e,
                free_blocks,
                unreserved,
            });
        }
        Ok(())
    }

    /// Records a pin of `e` under `id`, the allocator's id for it, after
    /// [`check_pin`](Self::check_pin) passed.
    ///
    /// # Panics
    ///
    /// If `e` leaves the space.
    pub fn pin(&mut self, id: PinId, e: Extent, blocking: bool) {
        for b in &mut self.blocks[e.start as usize..(e.start + e.len) as usize] {
            b.pins += 1;
            b.blocking += u32::from(blocking);
        }
        self.pins.insert(id, (e, blocking));
    }

    /// Returns (released Deferred blocks, unpinned Free blocks).
    ///
    /// # Errors
    ///
    /// [`PinError::Unknown`] for an id that is not live.
    pub fn unpin(&mut self, id: PinId) -> Result<(u64, u64), PinError> {
        let (e, blocking) = self.pins.remove(&id).ok_or(PinError::Unknown { id })?;
        let mut unpinned_free = 0;
        for b in &mut self.blocks[e.start as usize..(e.start + e.len) as usize] {
            b.pins -= 1;
            b.blocking -= u32::from(blocking);
            if b.pins == 0 && b.state == BlockState::Free {
                unpinned_free += 1;
            }
        }
        Ok((self.settle(), unpinned_free))
    }

    /// Commits `epoch`; returns the blocks released.
    ///
    /// # Errors
    ///
    /// [`EpochError::NotOpen`] unless `epoch` is the open one.
    pub fn commit(&mut self, epoch: u64) -> Result<u64, EpochError> {
        self.prepare_commit(epoch)?;
        self.finish_commit(epoch)
    }

    /// Closes the open epoch `epoch`; returns its free list, as
    /// [`durable_runs`](Self::durable_runs) gives it then.
    ///
    /// # Errors
    ///
    /// [`EpochError::NotOpen`] unless `epoch` is the open one.
    pub fn prepare_commit(&mut self, epoch: u64) -> Result<Vec<Extent>, EpochError> {
        self.check_open(epoch)?;
        self.open += 1;
        Ok(self.durable_runs())
    }

    /// Finishes every prepared epoch through `epoch`; returns the blocks released.
    ///
    /// # Errors
    ///
    /// [`EpochError::NotPrepared`] unless `epoch` is prepared and unfinished.
    pub fn finish_commit(&mut self, epoch: u64) -> Result<u64, EpochError> {
        if epoch <= self.durable || epoch >= self.open {
            return Err(EpochError::NotPrepared {
                epoch,
                durable: self.durable,
                open: self.open,
            });
        }
        for b in &mut self.blocks {
            if b.pending && b.freed_epoch <= epoch {
                b.pending = false;
            }
        }
        self.durable = epoch;
        Ok(self.settle())
    }

    fn check_open(&self, epoch: u64) -> Result<(), EpochError> {
        if epoch == self.open {
            Ok(())
        } else {
            Err(EpochError::NotOpen {
                epoch,
                open: self.open,
            })
        }
    }

    /// Aborts the open epoch's frees on commit; returns the blocks Allocated again.
    ///
    /// # Errors
    ///
    /// [`EpochError::NotOpen`] unless `epoch` is the open one.
    pub fn abort(&mut self, epoch: u64) -> Result<u64, EpochError> {
        self.check_open(epoch)?;
        let mut restored = 0;
        for b in &mut self.blocks {
            if b.pending && b.freed_epoch == epoch {
                *b = ModelBlock {
                    state: BlockState::Allocated,
                    pending: false,
                    freed_epoch: 0,
                    alloc_epoch: None,
                    ..*b
                };
                restored += 1;
            }
        }
        Ok(restored)
    }

    /// Aborts the open epoch whole: its frees on commit, and its allocations freed;
    /// returns (blocks Allocated again, blocks freed: Free now, Deferred now).
    ///
    /// # Errors
    ///
    /// [`EpochError::NotOpen`] unless `epoch` is the open one;
    /// [`EpochError::Busy`] for the first blocked run of the epoch's allocations.
    pub fn abort_all(&mut self, epoch: u64) -> Result<(u64, Freed), EpochError> {
        self.check_open(epoch)?;
        let runs = self.runs(|b| b.state == BlockState::Allocated && b.alloc_epoch == Some(epoch));
        if let Some((pin, blocked)) = runs.iter().find_map(|&r| self.busy(r)) {
            return Err(EpochError::Busy {
                pin,
                block: blocked.start,
            });
        }
        let restored = self.abort(epoch)?;
        let mut freed = Freed {
            now: 0,
            deferred: 0,
        };
        for r in runs {
            let f = self.free(r, true).expect("checked: Allocated, not blocked");
            freed.now += f.now;
            freed.deferred += f.deferred;
        }
        Ok((restored, freed))
    }

    /// Records a reader the allocator began, in the open epoch.
    pub fn begin_read(&mut self, id: ReaderId) {
        self.readers.insert(id, self.open);
    }

    /// Ends a reader; returns the blocks released.
    ///
    /// # Errors
    ///
    /// [`EpochError::UnknownReader`] for a reader that is not live.
    pub fn end_read(&mut self, id: ReaderId) -> Result<u64, EpochError> {
        self.readers
            .remove(&id)
            .ok_or(EpochError::UnknownReader { id })?;
        Ok(self.settle())
    }

    /// `reset`: every block Free, no pin, reader or reservation, epoch 1 open.
    pub fn reset(&mut self) {
        *self = Model::new(self.capacity());
    }

    /// `grow`: Free blocks added at the end.
    ///
    /// # Errors
    ///
    /// [`ResizeError::NotLarger`] below the capacity.
    ///
    /// # Panics
    ///
    /// If the new capacity does not fit in memory as one record per block.
    pub fn grow(&mut self, new_capacity: u64) -> Result<(), ResizeError> {
        let capacity = self.capacity();
        if new_capacity < capacity {
            return Err(ResizeError::NotLarger {
                capacity,
                requested: new_capacity,
            });
        }
        let n = usize::try_from(new_capacity).expect("a model space fits in memory");
        self.blocks.resize(n, FREE);
        Ok(())
    }

    /// `shrink`: the tail cut off, if every block of it is Free and unpinned and the
    /// reservations fit in what is left.
    ///
    /// # Errors
    ///
    /// Those the allocator must give.
    pub fn shrink(&mut self, new_capacity: u64) -> Result<(), ResizeError> {
        let capacity = self.capacity();
        if new_capacity > capacity {
            return Err(ResizeError::NotSmaller {
                capacity,
                requested: new_capacity,
            });
        }
        let cut = new_capacity as usize;
        if let Some(i) = self.blocks[cut..]
            .iter()
            .position(|b| !Self::allocatable(b))
        {
            let block = (cut + i) as u64;
            let b = self.blocks[cut + i];
            return Err(if b.state == BlockState::Free {
                ResizeError::Pinned {
                    block,
                    pins: u64::from(b.pins),
                }
            } else {
                ResizeError::InUse {
                    block,
                    state: b.state,
                }
            });
        }
        let free = self.index_free() - (capacity - new_capacity);
        if free < self.reserved() {
            return Err(ResizeError::Reserved {
                reserved: self.reserved(),
                free,
            });
        }
        self.blocks.truncate(cut);
        Ok(())
    }

    /// Checks a reservation of `n` blocks as the allocator does.
    ///
    /// # Errors
    ///
    /// Those the allocator must give.
    pub fn check_reserve(&self, n: u64) -> Result<(), AllocError> {
        if n == 0 {
            return Err(AllocError::ZeroLength);
        }
        if n > self.index_free() - self.reserved() {
            return Err(self.no_space(n));
        }
        Ok(())
    }

    /// Records a reservation of `n` blocks under the allocator's `id`, after
    /// [`check_reserve`](Self::check_reserve) passed.
    pub fn reserve(&mut self, id: u64, n: u64) {
        self.reservations.insert(id, n);
    }

    /// Unreserves a reservation; returns the blocks it had left.
    pub fn unreserve(&mut self, id: u64) -> Option<u64> {
        self.reservations.remove(&id)
    }
}
