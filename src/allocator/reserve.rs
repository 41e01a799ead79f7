//! Reservations: blocks promised to a caller but not yet placed.

use super::ExtentAllocator;
use crate::{AllocError, ReservationError};

/// Blocks set aside by [`ExtentAllocator::reserve`]: allocations drawn against it
/// cannot fail for lack of space.
///
/// The core has no locks and no back-references, so a reservation does not unreserve
/// itself on drop: hand it back with [`ExtentAllocator::unreserve`]. A dropped
/// reservation keeps its blocks set aside, and shows in
/// [`Stats::reserved_blocks`](crate::Stats::reserved_blocks).
///
/// ```
/// use pinalloc::ExtentAllocator;
///
/// let mut alloc = ExtentAllocator::new(10);
/// let res = alloc.reserve(4)?;
/// assert_eq!(res.remaining_blocks(), 4);
/// assert_eq!(alloc.stats().reserved_blocks, 4);
/// assert_eq!(alloc.unreserve(res).unwrap(), 4);
/// assert_eq!(alloc.stats().reserved_blocks, 0);
/// # Ok::<(), pinalloc::AllocError>(())
/// ```
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a reservation holds its blocks until it is unreserved"]
pub struct Reservation {
    /// The allocator that made it.
    allocator: u64,
    /// Its id within that allocator; never 0.
    id: u64,
    /// A copy of what the allocator records as left.
    remaining_blocks: u64,
}

impl Reservation {
    /// Its id, unique within its allocator.
    ///
    /// ```
    /// use pinalloc::ExtentAllocator;
    /// let mut alloc = ExtentAllocator::new(10);
    /// let (a, b) = (alloc.reserve(1)?, alloc.reserve(1)?);
    /// assert_ne!(a.id(), b.id());
    /// # alloc.unreserve(a).unwrap(); alloc.unreserve(b).unwrap();
    /// # Ok::<(), pinalloc::AllocError>(())
    /// ```
    #[must_use]
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Blocks it still guarantees.
    ///
    /// ```
    /// use pinalloc::{ExtentAllocator, Request};
    /// let mut alloc = ExtentAllocator::new(10);
    /// let mut res = alloc.reserve(5)?;
    /// alloc.allocate_reserved(&mut res, Request::new(2))?;
    /// assert_eq!(res.remaining_blocks(), 3);
    /// # alloc.unreserve(res).unwrap();
    /// # Ok::<(), pinalloc::AllocError>(())
    /// ```
    #[must_use]
    pub fn remaining_blocks(&self) -> u64 {
        self.remaining_blocks
    }
}

impl ExtentAllocator {
    /// Sets `len_blocks` Free blocks aside. Nothing is placed yet; other callers simply
    /// see that many fewer blocks.
    ///
    /// # Errors
    ///
    /// [`AllocError::ZeroLength`] for zero blocks; [`AllocError::NoSpace`] when fewer
    /// than `len_blocks` unreserved blocks are free.
    ///
    /// ```
    /// use pinalloc::{AllocError, ExtentAllocator};
    ///
    /// let mut alloc = ExtentAllocator::new(10);
    /// let res = alloc.reserve(8)?;
    /// assert!(matches!(alloc.reserve(3), Err(AllocError::NoSpace { requested: 3, reserved: 8, .. })));
    /// # alloc.unreserve(res).unwrap();
    /// # Ok::<(), AllocError>(())
    /// ```
    pub fn reserve(&mut self, len_blocks: u64) -> Result<Reservation, AllocError> {
        if len_blocks == 0 {
            return Err(AllocError::ZeroLength);
        }
        if len_blocks > self.unreserved_free() {
            return Err(self.no_space(len_blocks));
        }
        let id = self.next_reservation_id;
        self.next_reservation_id += 1;
        self.reservations.insert(id, len_blocks);
        self.count_reserved_blocks += len_blocks;
        self.counters.reservations = self.counters.reservations.saturating_add(1);
        self.debug_check();
        Ok(Reservation {
            allocator: self.uid,
            id,
            remaining_blocks: len_blocks,
        })
    }

    /// Unreserves a reservation, returning the blocks it had left to everyone.
    ///
    /// # Errors
    ///
    /// [`ReservationError::Unknown`] for a reservation made by another allocator; the
    /// reservation comes back inside the error, so it is not lost.
    ///
    /// ```
    /// use pinalloc::{ExtentAllocator, Request};
    ///
    /// let mut alloc = ExtentAllocator::new(10);
    /// let mut res = alloc.reserve(6)?;
    /// alloc.allocate_reserved(&mut res, Request::new(4))?;
    /// assert_eq!(alloc.unreserve(res).unwrap(), 2);
    /// # Ok::<(), pinalloc::AllocError>(())
    /// ```
    pub fn unreserve(&mut self, reservation: Reservation) -> Result<u64, ReservationError> {
        if !self.owns(&reservation) {
            return Err(ReservationError::Unknown { reservation });
        }
        let left = self
            .reservations
            .remove(&reservation.id)
            .expect("owned reservations are recorded");
        self.count_reserved_blocks -= left;
        self.counters.unreserves = self.counters.unreserves.saturating_add(1);
        self.debug_check();
        Ok(left)
    }

    /// Whether `reservation` was made by this allocator (live or not).
    #[cfg(feature = "testing")]
    pub(crate) fn made(&self, reservation: &Reservation) -> bool {
        reservation.allocator == self.uid
    }

    fn owns(&self, reservation: &Reservation) -> bool {
        reservation.allocator == self.uid && self.reservations.contains_key(&reservation.id)
    }

    /// What `reservation` has left, if it belongs here and covers `min_len`.
    pub(super) fn reservation_budget(
        &self,
        reservation: &Reservation,
        min_len: u64,
    ) -> Result<u64, AllocError> {
        if !self.owns(reservation) {
            return Err(AllocError::UnknownReservation { id: reservation.id });
        }
        let remaining = self.reservations[&reservation.id];
        if min_len > remaining {
            return Err(AllocError::Overdrawn {
                id: reservation.id,
                requested: min_len,
                remaining,
            });
        }
        debug_assert!(remaining <= self.free.free_blocks());
        Ok(remaining)
    }

    /// Draws `len_blocks` from a reservation that [`reservation_budget`] accepted.
    pub(super) fn charge_reservation(&mut self, reservation: &mut Reservation, len_blocks: u64) {
        let remaining = self
            .reservations
            .get_mut(&reservation.id)
            .expect("charged reservations are recorded");
        *remaining -= len_blocks;
        reservation.remaining_blocks = *remaining;
        self.count_reserved_blocks -= len_blocks;
    }
}
