//! Reservations across groups: a guard that gives back what is left when dropped.

use alloc::vec::Vec;

use super::SharedAllocator;
use crate::{AllocError, Extent, Policy, Request, Reservation, SharedAllocError};

/// Blocks set aside for one caller, spread over one or more groups; from
/// [`SharedAllocator::reserve`]. Dropping it unreserves what is left.
///
/// ```
/// use pinalloc::{Request, SharedAllocator};
/// let alloc = SharedAllocator::new(100);
/// {
///     let mut res = alloc.reserve(60)?;
///     assert!(alloc.allocate(Request::new(50)).is_err());
///     alloc.allocate_reserved(&mut res, Request::new(50))?;
///     assert_eq!(res.remaining_blocks(), 10);
/// } // the 10 left go back
/// assert_eq!(alloc.stats().space.reserved_blocks, 0);
/// # Ok::<(), pinalloc::SharedAllocError>(())
/// ```
#[derive(Debug)]
#[must_use = "dropping a reservation unreserves it at once"]
pub struct SharedReservation<'a> {
    alloc: &'a SharedAllocator,
    /// One core reservation per group it draws on, in ascending group order.
    parts: Vec<(usize, Reservation)>,
}

impl SharedReservation<'_> {
    /// Blocks it still holds.
    ///
    /// ```
    /// let alloc = pinalloc::SharedAllocator::new(8);
    /// assert_eq!(alloc.reserve(3)?.remaining_blocks(), 3);
    /// # Ok::<(), pinalloc::SharedAllocError>(())
    /// ```
    #[must_use]
    pub fn remaining_blocks(&self) -> u64 {
        self.parts.iter().map(|(_, r)| r.remaining_blocks()).sum()
    }

    /// The id reported in [`AllocError::Overdrawn`]: its first part's.
    fn id(&self) -> u64 {
        self.parts.first().map_or(0, |(_, r)| r.id())
    }
}

impl Drop for SharedReservation<'_> {
    fn drop(&mut self) {
        for (g, part) in self.parts.drain(..) {
            let unreserved = self.alloc.lock(g).unreserve(part);
            debug_assert!(unreserved.is_ok(), "a guard's reservation is live");
        }
        self.alloc.released();
    }
}

impl SharedAllocator {
    /// Sets `len_blocks` Free blocks aside, from the groups with the most unreserved
    /// space first; see [`ExtentAllocator::reserve`](crate::ExtentAllocator::reserve).
    /// Takes every group's lock at once.
    ///
    /// # Errors
    ///
    /// [`AllocError::ZeroLength`], or [`AllocError::NoSpace`] when fewer unreserved
    /// Free blocks exist, in [`SharedAllocError::Core`]. Nothing changes.
    ///
    /// ```
    /// let alloc = pinalloc::SharedAllocator::builder(100).groups(4).build();
    /// let res = alloc.reserve(60)?; // spans three groups
    /// assert_eq!(alloc.stats().space.reserved_blocks, 60);
    /// drop(res);
    /// assert_eq!(alloc.stats().space.reserved_blocks, 0);
    /// # Ok::<(), pinalloc::SharedAllocError>(())
    /// ```
    pub fn reserve(&self, len_blocks: u64) -> Result<SharedReservation<'_>, SharedAllocError> {
        let mut locked = self.lock_all_with_room(len_blocks)?;
        let mut order: Vec<usize> = (0..locked.len()).collect();
        order.sort_by_key(|&g| core::cmp::Reverse(locked[g].count_unreserved_free_blocks()));
        let mut parts = Vec::new();
        let mut left = len_blocks;
        for g in order {
            let take = locked[g].count_unreserved_free_blocks().min(left);
            if take == 0 {
                break;
            }
            parts.push((
                g,
                locked[g]
                    .reserve(take)
                    .expect("within the group's unreserved space"),
            ));
            left -= take;
        }
        debug_assert_eq!(left, 0);
        parts.sort_by_key(|(g, _)| *g);
        Ok(SharedReservation { alloc: self, parts })
    }

    /// Allocates one extent against a reservation, from the first of its groups that
    /// can place it (an exact start only from its own group's part; a near goal from
    /// the parts nearest its group first, each taking the nearest block to it); see
    /// [`ExtentAllocator::allocate_reserved`](crate::ExtentAllocator::allocate_reserved).
    ///
    /// # Errors
    ///
    /// [`AllocError::Overdrawn`] when no part of the reservation has the request's
    /// minimum left, else as [`allocate`](Self::allocate). Nothing changes.
    ///
    /// ```
    /// use pinalloc::{Request, SharedAllocator};
    /// let alloc = SharedAllocator::new(64);
    /// let mut res = alloc.reserve(8)?;
    /// assert_eq!(alloc.allocate_reserved(&mut res, Request::new(8))?.len, 8);
    /// assert!(alloc.allocate_reserved(&mut res, Request::new(1)).is_err());
    /// # Ok::<(), pinalloc::SharedAllocError>(())
    /// ```
    pub fn allocate_reserved(
        &self,
        reservation: &mut SharedReservation<'_>,
        request: Request,
    ) -> Result<Extent, SharedAllocError> {
        self.owns(reservation)?;
        request.check(self.capacity)?;
        // An exact request can only be placed in its own group's part.
        let only = match request.policy {
            Policy::Exact(start) => Some(self.exact_group(start, request.min_len)?),
            _ => None,
        };
        // A near-goal request tries the parts nearest the goal's group first.
        let mut order: Vec<usize> = (0..reservation.parts.len()).collect();
        if let Policy::Near(goal) = request.policy {
            let home = self.group_of(goal);
            order.sort_by_key(|&i| reservation.parts[i].0.abs_diff(home));
        }
        let mut tried = false;
        for i in order {
            let (g, part) = &mut reservation.parts[i];
            if part.remaining_blocks() < request.min_len {
                continue;
            }
            tried = true;
            if only.is_some_and(|o| o != *g) {
                continue;
            }
            match self
                .lock(*g)
                .allocate_reserved(part, self.local_request(*g, &request))
            {
                Err(AllocError::NoSpace { .. }) => {}
                done => return Ok(done?),
            }
        }
        Err(if tried {
            self.no_space(request.min_len).into()
        } else {
            AllocError::Overdrawn {
                id: reservation.id(),
                requested: request.min_len,
                remaining: reservation.remaining_blocks(),
            }
            .into()
        })
    }

    /// Allocates `total_blocks` against a reservation as few extents; never fails for
    /// lack of space.
    ///
    /// # Errors
    ///
    /// [`AllocError::ZeroLength`], or [`AllocError::Overdrawn`] when the reservation
    /// has less left. Nothing changes.
    ///
    /// ```
    /// let alloc = pinalloc::SharedAllocator::builder(100).groups(4).build();
    /// let mut res = alloc.reserve(60)?;
    /// let got = alloc.allocate_many_reserved(&mut res, 60)?;
    /// assert_eq!(got.iter().map(|e| e.len).sum::<u64>(), 60);
    /// # Ok::<(), pinalloc::SharedAllocError>(())
    /// ```
    pub fn allocate_many_reserved(
        &self,
        reservation: &mut SharedReservation<'_>,
        total_blocks: u64,
    ) -> Result<Vec<Extent>, SharedAllocError> {
        self.owns(reservation)?;
        if total_blocks == 0 {
            return Err(AllocError::ZeroLength.into());
        }
        let remaining = reservation.remaining_blocks();
        if total_blocks > remaining {
            return Err(AllocError::Overdrawn {
                id: reservation.id(),
                requested: total_blocks,
                remaining,
            }
            .into());
        }
        let mut out = Vec::new();
        let mut left = total_blocks;
        for (g, part) in &mut reservation.parts {
            let take = part.remaining_blocks().min(left);
            if take == 0 {
                continue;
            }
            let got = self
                .lock(*g)
                .allocate_many_reserved(part, take)
                .expect("a reservation's blocks are there");
            out.extend(got);
            left -= take;
            if left == 0 {
                break;
            }
        }
        Ok(out)
    }

    /// Refuses another allocator's reservation.
    fn owns(&self, reservation: &SharedReservation<'_>) -> Result<(), AllocError> {
        if core::ptr::eq(reservation.alloc, self) {
            Ok(())
        } else {
            Err(AllocError::UnknownReservation {
                id: reservation.id(),
            })
        }
    }

    /// Unreserves a reservation now and returns the blocks it still held (dropping it
    /// does the same).
    ///
    /// ```
    /// let alloc = pinalloc::SharedAllocator::new(64);
    /// let res = alloc.reserve(8)?;
    /// assert_eq!(alloc.unreserve(res), 8);
    /// # Ok::<(), pinalloc::SharedAllocError>(())
    /// ```
    pub fn unreserve(&self, reservation: SharedReservation<'_>) -> u64 {
        let left = reservation.remaining_blocks();
        drop(reservation);
        left
    }
}
