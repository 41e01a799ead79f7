//! The reference model: one `bool` per block, and placements computed by brute force
//! from each policy's definition. Obviously correct beats fast here.

#![allow(dead_code)]

use std::collections::BTreeMap;

use pinalloc::{AllocError, Extent, FreeError, HISTOGRAM_BUCKETS, Policy, Request};

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

#[derive(Debug, Clone)]
pub struct Model {
    /// `true` = Allocated.
    pub allocated: Vec<bool>,
    /// Reservation id -> blocks left.
    pub reservations: BTreeMap<u64, u64>,
}

impl Model {
    pub fn new(capacity: u64) -> Self {
        Model {
            allocated: vec![false; capacity as usize],
            reservations: BTreeMap::new(),
        }
    }

    pub fn capacity(&self) -> u64 {
        self.allocated.len() as u64
    }

    pub fn free_blocks(&self) -> u64 {
        self.allocated.iter().filter(|&&a| !a).count() as u64
    }

    pub fn reserved(&self) -> u64 {
        self.reservations.values().sum()
    }

    /// Maximal runs of free blocks, in address order.
    pub fn free_runs(&self) -> Vec<Extent> {
        let mut runs = Vec::new();
        let mut b = 0;
        while b < self.allocated.len() {
            if self.allocated[b] {
                b += 1;
                continue;
            }
            let start = b;
            while b < self.allocated.len() && !self.allocated[b] {
                b += 1;
            }
            runs.push(Extent::new(start as u64, (b - start) as u64));
        }
        runs
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
        }
    }

    /// `run[p]` = free blocks from `p` up to the next Allocated block.
    fn run_lengths(&self) -> Vec<u64> {
        let mut run = vec![0u64; self.allocated.len() + 1];
        for p in (0..self.allocated.len()).rev() {
            run[p] = if self.allocated[p] { 0 } else { run[p + 1] + 1 };
        }
        run
    }

    /// Every aligned start where `len` blocks are free.
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

    fn mark(&mut self, e: Extent, allocated: bool) {
        for b in e.start..e.start + e.len {
            assert_ne!(
                self.allocated[b as usize], allocated,
                "model: block {b} already in that state"
            );
            self.allocated[b as usize] = allocated;
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

    /// `allocate` (reservation `None`) or `allocate_reserved` (reservation `Some(id)`;
    /// an id the model does not know stands for a foreign reservation).
    pub fn allocate(&mut self, r: Req, reservation: Option<u64>) -> Result<Extent, AllocError> {
        self.validate(&r)?;
        let budget = match self.reservation(reservation, r.min)? {
            Some(remaining) => remaining,
            None => self.free_blocks() - self.reserved(),
        };
        let e = self.place(&r, budget)?;
        self.mark(e, true);
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
        let budget = match self.reservation(reservation, total)? {
            Some(remaining) => remaining,
            None => self.free_blocks() - self.reserved(),
        };
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
            self.mark(e, true);
            self.charge(reservation, e.len);
            left -= e.len;
            out.push(e);
        }
        Ok(out)
    }

    pub fn free(&mut self, e: Extent) -> Result<(), FreeError> {
        if e.len == 0 {
            return Err(FreeError::ZeroLength { start: e.start });
        }
        let Some(end) = e.start.checked_add(e.len) else {
            return Err(FreeError::Overflow { extent: e });
        };
        if end > self.capacity() {
            return Err(FreeError::OutOfBounds {
                extent: e,
                capacity: self.capacity(),
            });
        }
        let blocks = &self.allocated[e.start as usize..end as usize];
        if let Some(first) = blocks.iter().position(|&a| !a) {
            let run = blocks[first..].iter().take_while(|&&a| !a).count();
            let offending = Extent::new(e.start + first as u64, run as u64);
            return Err(if blocks.iter().any(|&a| a) {
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
        self.mark(e, false);
        Ok(())
    }

    pub fn reserve(&mut self, id: u64, n: u64) -> Result<(), AllocError> {
        if n == 0 {
            return Err(AllocError::ZeroLength);
        }
        if n > self.free_blocks() - self.reserved() {
            return Err(self.no_space(n));
        }
        self.reservations.insert(id, n);
        Ok(())
    }

    pub fn release(&mut self, id: u64) -> Option<u64> {
        self.reservations.remove(&id)
    }
}
