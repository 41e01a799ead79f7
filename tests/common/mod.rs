//! The reference model: one record per block, placements computed by brute force from
//! each policy's definition, and holds re-evaluated for every block after every
//! operation. Obviously correct beats fast here.

#![allow(dead_code)]

use std::collections::BTreeMap;

use pinalloc::{
    AllocError, EpochError, Extent, FreeError, HISTOGRAM_BUCKETS, Held, PinError, PinId, Policy,
    ReaderId, Request,
};

/// What a request looks like to the model (the real `Request`'s fields are private).
#[derive(Debug, Clone, Copy)]
pub struct Req {
    pub min: u64,
    pub max: u64,
    pub align: u64,
    pub policy: Policy,
}

impl Req {
    pub fn to_request(self) -> Request {
        Request::range(self.min..=self.max)
            .align(self.align)
            .policy(self.policy)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Free,
    Allocated,
    Deferred,
}

#[derive(Debug, Clone, Copy)]
pub struct Block {
    pub state: State,
    /// Pins of any mode.
    pub pins: u32,
    /// Blocking pins.
    pub blocking: u32,
    /// Deferred by `free_on_commit`, waiting for the open epoch to commit.
    pub pending: bool,
    /// The epoch of the free that made it Deferred.
    pub freed_epoch: u64,
    /// The epoch of its allocation; `None` for blocks Allocated at construction.
    pub alloc_epoch: Option<u64>,
}

const FREE: Block = Block {
    state: State::Free,
    pins: 0,
    blocking: 0,
    pending: false,
    freed_epoch: 0,
    alloc_epoch: None,
};

#[derive(Debug, Clone)]
pub struct Model {
    pub blocks: Vec<Block>,
    /// Reservation id -> blocks left.
    pub reservations: BTreeMap<u64, u64>,
    /// Live pins -> (extent, blocking).
    pub pins: BTreeMap<PinId, (Extent, bool)>,
    /// Live readers -> epoch begun in.
    pub readers: BTreeMap<ReaderId, u64>,
    pub open: u64,
}

/// What a free did, per the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Freed {
    pub now: u64,
    pub deferred: u64,
}

impl Model {
    pub fn new(capacity: u64) -> Self {
        Model {
            blocks: vec![FREE; capacity as usize],
            reservations: BTreeMap::new(),
            pins: BTreeMap::new(),
            readers: BTreeMap::new(),
            open: 1,
        }
    }

    /// Marks blocks Allocated at construction (durable, from before epoch 1).
    pub fn mount_allocated(&mut self, e: Extent) {
        for b in e.start..e.start + e.len {
            self.blocks[b as usize].state = State::Allocated;
        }
    }

    pub fn capacity(&self) -> u64 {
        self.blocks.len() as u64
    }

    fn count(&self, f: impl Fn(&Block) -> bool) -> u64 {
        self.blocks.iter().filter(|b| f(b)).count() as u64
    }

    fn allocatable(b: &Block) -> bool {
        b.state == State::Free && b.pins == 0
    }

    /// Free blocks, pinned ones included.
    pub fn free_blocks(&self) -> u64 {
        self.count(|b| b.state == State::Free)
    }

    /// Free blocks `allocate` may use.
    pub fn index_free(&self) -> u64 {
        self.count(Self::allocatable)
    }

    pub fn allocated_blocks(&self) -> u64 {
        self.count(|b| b.state == State::Allocated)
    }

    pub fn pinned_free(&self) -> u64 {
        self.count(|b| b.state == State::Free && b.pins > 0)
    }

    pub fn pinned_blocks(&self) -> u64 {
        self.count(|b| b.pins > 0)
    }

    pub fn reserved(&self) -> u64 {
        self.reservations.values().sum()
    }

    pub fn oldest_reader(&self) -> Option<u64> {
        self.readers.values().copied().min()
    }

    fn reader_holds(&self, freed_epoch: u64) -> bool {
        self.oldest_reader().is_some_and(|o| o <= freed_epoch)
    }

    pub fn deferred(&self) -> Held {
        let epochs = self.count(|b| {
            b.state == State::Deferred && (b.pending || self.reader_holds(b.freed_epoch))
        });
        let all = self.count(|b| b.state == State::Deferred);
        Held {
            pins: all - epochs,
            epochs,
        }
    }

    /// Maximal runs of blocks satisfying `f`, in address order.
    pub fn runs(&self, f: impl Fn(&Block) -> bool) -> Vec<Extent> {
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

    /// The free index: maximal runs of Free, unpinned blocks.
    pub fn free_runs(&self) -> Vec<Extent> {
        self.runs(Self::allocatable)
    }

    /// What a remount would find free: not Allocated and not waiting for a commit.
    pub fn durable_runs(&self) -> Vec<Extent> {
        self.runs(|b| b.state != State::Allocated && !b.pending)
    }

    pub fn largest_free(&self) -> u64 {
        self.free_runs().iter().map(|r| r.len).max().unwrap_or(0)
    }

    pub fn histogram(&self) -> [u64; HISTOGRAM_BUCKETS] {
        let mut h = [0; HISTOGRAM_BUCKETS];
        for r in self.free_runs() {
            h[r.len.ilog2() as usize] += 1;
        }
        h
    }

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
            Policy::BestFit | Policy::Exact(_) => {
                // Smallest free run holding a candidate, lowest run first; its lowest candidate.
                let runs = self.free_runs();
                let run_of = |p: u64| *runs.iter().find(|r| r.contains(p)).unwrap();
                cands.into_iter().min_by_key(|&p| {
                    let r = run_of(p);
                    (r.len, r.start, p)
                })
            }
            _ => unreachable!(),
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

    fn validate(&self, r: &Req) -> Result<(), AllocError> {
        if r.min == 0 {
            return Err(AllocError::ZeroLength);
        }
        if r.min > r.max {
            return Err(AllocError::InvalidRange {
                min: r.min,
                max: r.max,
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
                let extent = Extent::new(start, r.min);
                match start.checked_add(r.min) {
                    None => return Err(AllocError::Overflow { extent }),
                    Some(end) if end > self.capacity() => {
                        return Err(AllocError::OutOfBounds {
                            extent,
                            capacity: self.capacity(),
                        });
                    }
                    _ => {}
                }
            }
            Policy::Near(goal) if goal >= self.capacity() => {
                return Err(AllocError::OutOfBounds {
                    extent: Extent::new(goal, 1),
                    capacity: self.capacity(),
                });
            }
            _ => {}
        }
        Ok(())
    }

    pub fn take(&mut self, e: Extent) {
        for b in e.start..e.start + e.len {
            let block = &mut self.blocks[b as usize];
            assert!(
                Self::allocatable(block),
                "model: block {b} handed out twice"
            );
            block.state = State::Allocated;
            block.alloc_epoch = Some(self.open);
        }
    }

    fn place(&self, r: &Req, budget: u64) -> Result<Extent, AllocError> {
        if budget < r.min {
            return Err(self.no_space(r.min));
        }
        let max = r.max.min(budget);
        if let Policy::Exact(start) = r.policy {
            let len = max.min(self.run_lengths()[start as usize]);
            if len < r.min {
                return Err(AllocError::NotFree {
                    extent: Extent::new(start, r.min),
                });
            }
            return Ok(Extent::new(start, len));
        }
        if let Some(p) = self.find(r.policy, max, r.align) {
            return Ok(Extent::new(p, max));
        }
        let len = max.min(self.largest_placeable(r.align));
        if len >= r.min {
            let p = self
                .find(r.policy, len, r.align)
                .expect("largest placeable places");
            return Ok(Extent::new(p, len));
        }
        Err(self.no_space(r.min))
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
        if let Some(id) = id {
            *self.reservations.get_mut(&id).unwrap() -= len;
        }
    }

    fn budget(&self, remaining: Option<u64>) -> u64 {
        remaining.unwrap_or_else(|| self.index_free() - self.reserved())
    }

    /// `allocate` (reservation `None`) or `allocate_reserved` (reservation `Some(id)`).
    pub fn allocate(&mut self, r: Req, reservation: Option<u64>) -> Result<Extent, AllocError> {
        self.validate(&r)?;
        let budget = self.budget(self.reservation(reservation, r.min)?);
        let e = self.place(&r, budget)?;
        self.take(e);
        self.charge(reservation, e.len);
        Ok(e)
    }

    pub fn allocate_many(
        &mut self,
        total: u64,
        reservation: Option<u64>,
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
            let largest = *runs
                .iter()
                .min_by_key(|r| (std::cmp::Reverse(r.len), r.start))
                .unwrap();
            let e = if largest.len >= left {
                let best = runs
                    .iter()
                    .filter(|r| r.len >= left)
                    .min_by_key(|r| (r.len, r.start))
                    .unwrap();
                Extent::new(best.start, left)
            } else {
                largest
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
            if b.state == State::Deferred && b.pins == 0 && !b.pending && !reader {
                b.state = State::Free;
                released += 1;
            }
        }
        released
    }

    /// Checks an extent's shape: `Err(kind)` is 0 zero length, 1 overflow, 2 out of
    /// bounds.
    fn shape(&self, e: Extent) -> Result<(), u8> {
        if e.len == 0 {
            return Err(0);
        }
        match e.start.checked_add(e.len) {
            None => Err(1),
            Some(end) if end > self.capacity() => Err(2),
            Some(_) => Ok(()),
        }
    }

    /// `free` (`on_commit` false) or `free_on_commit`.
    pub fn free(&mut self, e: Extent, on_commit: bool) -> Result<Freed, FreeError> {
        let cap = self.capacity();
        self.shape(e).map_err(|k| match k {
            0 => FreeError::ZeroLength { start: e.start },
            1 => FreeError::Overflow { extent: e },
            _ => FreeError::OutOfBounds {
                extent: e,
                capacity: cap,
            },
        })?;
        let range = e.start as usize..(e.start + e.len) as usize;
        let blocks = &self.blocks[range.clone()];
        let allocated = |b: &Block| b.state == State::Allocated;
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
        let busy = self
            .pins
            .iter()
            .find(|(_, (p, blocking))| *blocking && p.overlaps(&e));
        if let Some((&pin, &(p, _))) = busy {
            let start = p.start.max(e.start);
            let end = (p.start + p.len).min(e.start + e.len);
            return Err(FreeError::Busy {
                extent: e,
                pin,
                blocked: Extent::new(start, end - start),
            });
        }
        let open = self.open;
        for b in &mut self.blocks[range.clone()] {
            let never_durable = b.alloc_epoch == Some(open);
            b.state = State::Deferred;
            // Readers see committed state only: a block allocated in the open epoch
            // and freed on commit was never visible to any of them (epoch 0).
            b.freed_epoch = if on_commit && never_durable { 0 } else { open };
            b.pending = on_commit && !never_durable;
            b.alloc_epoch = None;
        }
        self.settle();
        let now = self.blocks[range]
            .iter()
            .filter(|b| b.state == State::Free)
            .count() as u64;
        Ok(Freed {
            now,
            deferred: e.len - now,
        })
    }

    /// Pins `e` under `id`; `id` is only used when the pin succeeds.
    pub fn pin(&mut self, id: Option<PinId>, e: Extent, blocking: bool) -> Result<(), PinError> {
        let cap = self.capacity();
        self.shape(e).map_err(|k| match k {
            0 => PinError::ZeroLength { start: e.start },
            1 => PinError::Overflow { extent: e },
            _ => PinError::OutOfBounds {
                extent: e,
                capacity: cap,
            },
        })?;
        let range = e.start as usize..(e.start + e.len) as usize;
        let free_blocks = self.blocks[range.clone()]
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
        for b in &mut self.blocks[range] {
            b.pins += 1;
            b.blocking += u32::from(blocking);
        }
        self.pins
            .insert(id.expect("a successful pin has an id"), (e, blocking));
        Ok(())
    }

    /// Returns (released Deferred blocks, unpinned Free blocks).
    pub fn unpin(&mut self, id: PinId) -> Result<(u64, u64), PinError> {
        let (e, blocking) = self.pins.remove(&id).ok_or(PinError::Unknown { id })?;
        let mut unpinned_free = 0;
        for b in &mut self.blocks[e.start as usize..(e.start + e.len) as usize] {
            b.pins -= 1;
            b.blocking -= u32::from(blocking);
            if b.pins == 0 && b.state == State::Free {
                unpinned_free += 1;
            }
        }
        Ok((self.settle(), unpinned_free))
    }

    pub fn commit(&mut self, epoch: u64) -> Result<u64, EpochError> {
        if epoch != self.open {
            return Err(EpochError::NotOpen {
                epoch,
                open: self.open,
            });
        }
        for b in &mut self.blocks {
            b.pending = false;
        }
        self.open += 1;
        Ok(self.settle())
    }

    pub fn begin_read(&mut self, id: ReaderId) {
        assert_eq!(id.epoch(), self.open, "a reader begins in the open epoch");
        self.readers.insert(id, self.open);
    }

    pub fn end_read(&mut self, id: ReaderId) -> Result<u64, EpochError> {
        self.readers
            .remove(&id)
            .ok_or(EpochError::UnknownReader { id })?;
        Ok(self.settle())
    }

    pub fn reserve(&mut self, id: u64, n: u64) -> Result<(), AllocError> {
        if n == 0 {
            return Err(AllocError::ZeroLength);
        }
        if n > self.index_free() - self.reserved() {
            return Err(self.no_space(n));
        }
        self.reservations.insert(id, n);
        Ok(())
    }

    pub fn release(&mut self, id: u64) -> Option<u64> {
        self.reservations.remove(&id)
    }
}
