//! Allocate: Free → Allocated.

use alloc::vec::Vec;

use super::{ExtentAllocator, Reservation};
use crate::{AllocError, Extent, Policy, Request};

impl ExtentAllocator {
    /// Allocates one extent as `request` describes: Free blocks become Allocated.
    ///
    /// Reserved blocks are off limits here: at most
    /// `free_blocks - reserved_blocks` blocks can be taken without a reservation (see
    /// [`allocate_reserved`](Self::allocate_reserved)).
    ///
    /// # Errors
    ///
    /// - [`AllocError::ZeroLength`], [`AllocError::InvalidRange`],
    ///   [`AllocError::BadAlignment`]: a malformed request.
    /// - [`AllocError::Misaligned`], [`AllocError::BadExtent`]: a bad exact start or
    ///   goal block.
    /// - [`AllocError::NotFree`]: an exact request whose blocks are not all Free.
    /// - [`AllocError::NoSpace`]: no placement exists. Its fields tell a full space
    ///   (`free` below `requested`) from a fragmented one (`largest_free` below
    ///   `requested`) and from one that is only reserved.
    ///
    /// The allocator is unchanged after any error.
    ///
    /// ```
    /// use pinalloc::{AllocError, ExtentAllocator, Extent, Request};
    ///
    /// let mut alloc = ExtentAllocator::new(16);
    /// assert_eq!(alloc.allocate(Request::new(10))?, Extent::new(0, 10));
    /// assert_eq!(alloc.allocate(Request::range(1..=10))?, Extent::new(10, 6));
    /// assert!(matches!(alloc.allocate(Request::new(1)), Err(AllocError::NoSpace { free: 0, .. })));
    /// assert_eq!(alloc.allocate(Request::new(0)), Err(AllocError::ZeroLength));
    /// # Ok::<(), AllocError>(())
    /// ```
    pub fn allocate(&mut self, request: Request) -> Result<Extent, AllocError> {
        let budget = self.unreserved_free();
        // The common request, which needs none of the checks below: one length, best
        // fit, no alignment. A miss takes the general path, which finds the error.
        if request.is_plain() {
            if let Some(extent) = self.allocate_plain(request.min_len) {
                return Ok(extent);
            }
        }
        let extent = self.place_checked(&request, budget)?;
        self.allocated(extent, None);
        Ok(extent)
    }

    /// A plain request ([`Request::is_plain`]) for `len` blocks: the extent, or `None`
    /// where [`allocate`](Self::allocate) would fail for lack of space. Nothing to
    /// build on the way, for the shared allocator's hot path.
    #[inline]
    pub(crate) fn allocate_plain(&mut self, len: u64) -> Option<Extent> {
        if len > self.unreserved_free() {
            return None;
        }
        let start = self.free.best_fit(len, 1)?;
        let extent = Extent::new(start, len);
        self.allocated(extent, None);
        Some(extent)
    }

    /// Allocates one extent against a reservation, drawing down what it has left.
    ///
    /// A reservation guarantees blocks, not contiguity: an unaligned range request such
    /// as `Request::range(1..=n)` against it never fails for lack of space, and neither
    /// does [`allocate_many_reserved`](Self::allocate_many_reserved). A request for one
    /// long extent, or an aligned one, can still fail on a fragmented space.
    ///
    /// # Errors
    ///
    /// As [`allocate`](Self::allocate), plus [`AllocError::UnknownReservation`] for a
    /// reservation made by another allocator, and [`AllocError::Overdrawn`] when the
    /// request's minimum exceeds what the reservation has left. A range request is
    /// capped at what the reservation has left.
    ///
    /// ```
    /// use pinalloc::{ExtentAllocator, Request};
    ///
    /// let mut alloc = ExtentAllocator::new(100);
    /// let mut res = alloc.reserve(60)?;
    /// // Others can no longer take the reserved blocks...
    /// assert!(alloc.allocate(Request::new(50)).is_err());
    /// // ...but the reservation's holder can.
    /// let e = alloc.allocate_reserved(&mut res, Request::new(50))?;
    /// assert_eq!((e.len, res.remaining_blocks()), (50, 10));
    /// assert_eq!(alloc.unreserve(res).unwrap(), 10);
    /// # Ok::<(), pinalloc::AllocError>(())
    /// ```
    pub fn allocate_reserved(
        &mut self,
        reservation: &mut Reservation,
        request: Request,
    ) -> Result<Extent, AllocError> {
        self.validate(&request)?;
        let remaining = self.reservation_budget(reservation, request.min_len)?;
        let extent = self.place_checked(&request, remaining)?;
        self.allocated(extent, Some(reservation));
        Ok(extent)
    }

    /// Allocates `total_blocks` as the fewest extents that make it up: the largest free
    /// extents whole, then the best fit for the remainder. Either all of it is
    /// allocated, or nothing is.
    ///
    /// # Errors
    ///
    /// [`AllocError::ZeroLength`] for zero blocks; [`AllocError::NoSpace`] when fewer
    /// than `total_blocks` unreserved blocks are free.
    ///
    /// ```
    /// use pinalloc::{ExtentAllocator, Extent, Request};
    ///
    /// let mut alloc = ExtentAllocator::new(30);
    /// alloc.allocate(Request::new(30))?;
    /// alloc.free(Extent::new(0, 4))?;
    /// alloc.free(Extent::new(10, 10))?;
    /// alloc.free(Extent::new(25, 3))?;
    /// let got = alloc.allocate_many(12)?;
    /// assert_eq!(got, [Extent::new(10, 10), Extent::new(25, 2)]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn allocate_many(&mut self, total_blocks: u64) -> Result<Vec<Extent>, AllocError> {
        self.check_many(total_blocks, self.unreserved_free())?;
        Ok(self.carve_many(total_blocks, None))
    }

    /// [`allocate_many`](Self::allocate_many) against a reservation. This never fails
    /// for lack of space while `total_blocks` is within what the reservation has left.
    ///
    /// # Errors
    ///
    /// [`AllocError::ZeroLength`], [`AllocError::UnknownReservation`], or
    /// [`AllocError::Overdrawn`] when `total_blocks` exceeds what is left.
    ///
    /// ```
    /// use pinalloc::ExtentAllocator;
    ///
    /// let mut alloc = ExtentAllocator::new(100);
    /// let mut res = alloc.reserve(40)?;
    /// let got = alloc.allocate_many_reserved(&mut res, 40)?;
    /// assert_eq!(got.iter().map(|e| e.len).sum::<u64>(), 40);
    /// assert_eq!(res.remaining_blocks(), 0);
    /// # Ok::<(), pinalloc::AllocError>(())
    /// ```
    pub fn allocate_many_reserved(
        &mut self,
        reservation: &mut Reservation,
        total_blocks: u64,
    ) -> Result<Vec<Extent>, AllocError> {
        if total_blocks == 0 {
            return Err(AllocError::ZeroLength);
        }
        let remaining = self.reservation_budget(reservation, total_blocks)?;
        self.check_many(total_blocks, remaining)?;
        Ok(self.carve_many(total_blocks, Some(reservation)))
    }

    fn check_many(&self, total_blocks: u64, budget: u64) -> Result<(), AllocError> {
        if total_blocks == 0 {
            return Err(AllocError::ZeroLength);
        }
        if total_blocks > budget {
            return Err(self.no_space(total_blocks));
        }
        Ok(())
    }

    /// Takes `total_blocks`, which the caller has checked are within the budget.
    fn carve_many(&mut self, total_blocks: u64, mut res: Option<&mut Reservation>) -> Vec<Extent> {
        debug_assert!(total_blocks <= self.free.free_blocks());
        let mut out = Vec::new();
        let mut left = total_blocks;
        while left > 0 {
            let largest = self
                .free
                .largest()
                .expect("free blocks cover the checked total");
            let extent = if largest.len >= left {
                let start = self
                    .free
                    .best_fit(left, 1)
                    .expect("the largest extent fits");
                Extent::new(start, left)
            } else {
                largest
            };
            self.allocated(extent, res.as_deref_mut());
            left -= extent.len;
            out.push(extent);
        }
        debug_assert_eq!(out.iter().map(|e| e.len).sum::<u64>(), total_blocks);
        out
    }

    /// Checks a request and finds its placement within `budget` blocks. A success
    /// may keep a view for a large alignment in the free index (a cache); a failure
    /// leaves the index, heap included, as it was.
    fn place_checked(&mut self, request: &Request, budget: u64) -> Result<Extent, AllocError> {
        self.validate(request)?;
        let (min, align) = (request.min_len, request.align);
        let exact = matches!(request.policy, Policy::Exact(_));
        if budget < min || (!exact && self.free.known_short(align, min)) {
            return Err(self.no_space(min));
        }
        // An exact start needs no search, so no view.
        let tracked = if exact { None } else { self.free.track(align) };
        let max_len = request.max_len.min(budget);
        match self.place(request, max_len) {
            Ok(extent) => {
                debug_assert!(extent.len >= min, "placed shorter than asked");
                debug_assert!(extent.len <= max_len, "placed longer than allowed");
                debug_assert_eq!(extent.start & (align - 1), 0);
                Ok(extent)
            }
            Err(err) => {
                self.free.untrack(tracked);
                Err(err)
            }
        }
    }

    fn validate(&self, request: &Request) -> Result<(), AllocError> {
        request.check(self.capacity)
    }

    /// Places a valid request of at most `max_len` blocks: `max_len` if anywhere
    /// possible, otherwise the largest placeable length not below the minimum.
    fn place(&mut self, request: &Request, max_len: u64) -> Result<Extent, AllocError> {
        let (min, align) = (request.min_len, request.align);
        if let Policy::Exact(start) = request.policy {
            let len = max_len.min(self.free.run_from(start));
            if len < min {
                return Err(AllocError::NotFree {
                    extent: Extent::new(start, min),
                });
            }
            return Ok(Extent::new(start, len));
        }
        if let Some(start) = self.find(request.policy, max_len, align) {
            return Ok(Extent::new(start, max_len));
        }
        if min < max_len {
            let len = max_len.min(self.free.largest_placeable(align));
            if len >= min {
                if let Some(start) = self.find(request.policy, len, align) {
                    return Ok(Extent::new(start, len));
                }
                debug_assert!(false, "largest placeable length {len} did not place");
            }
        }
        Err(self.no_space(min))
    }

    #[inline]
    fn find(&mut self, policy: Policy, len: u64, align: u64) -> Option<u64> {
        match policy {
            Policy::FirstFit => self.free.first_fit(len, align),
            Policy::Near(goal) => self.free.near(len, align, goal),
            Policy::BestFit | Policy::Exact(_) => self.free.best_fit(len, align),
        }
    }

    /// Free → Allocated for a placed extent ([`claim`](Self::claim)), counted.
    fn allocated(&mut self, extent: Extent, reservation: Option<&mut Reservation>) {
        self.claim(extent, reservation);
        self.counters.allocations = self.counters.allocations.saturating_add(1);
        self.counters.blocks_allocated = self.counters.blocks_allocated.saturating_add(extent.len);
        self.debug_check();
    }

    /// The [`AllocError::NoSpace`] for `requested` blocks, with what holds the space:
    /// the failing path only, so kept out of the callers' code.
    #[cold]
    pub(super) fn no_space(&self, requested: u64) -> AllocError {
        AllocError::NoSpace {
            requested,
            free: self.free.free_blocks() + self.count_pinned_free_blocks,
            largest_free: self.free.largest_len(),
            reserved: self.count_reserved_blocks,
            deferred: self.deferred_held(),
            pinned_free: self.count_pinned_free_blocks,
        }
    }
}
