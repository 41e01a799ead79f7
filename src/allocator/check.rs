//! `check_invariants`: an fsck for the allocator's own state.

use alloc::format;

use super::ExtentAllocator;
use crate::InvariantViolation;

impl ExtentAllocator {
    /// Recomputes every invariant from scratch, like an fsck, and reports the first
    /// violation in words. The invariants are listed on [`ExtentAllocator`].
    ///
    /// Costs O(n log n) in the number of free extents, plus O(r) in reservations. Debug builds run it
    /// after every mutation of a small allocator; call it from your own tests freely.
    ///
    /// # Errors
    ///
    /// An [`InvariantViolation`], which always means a bug in pinalloc.
    ///
    /// ```
    /// use pinalloc::{ExtentAllocator, Request};
    ///
    /// let mut alloc = ExtentAllocator::new(64);
    /// let e = alloc.allocate(Request::new(9).align(4))?;
    /// alloc.free(e)?;
    /// alloc.check_invariants()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn check_invariants(&self) -> Result<(), InvariantViolation> {
        let violation = |number: u8, detail| Err(InvariantViolation { number, detail });
        if let Err((number, detail)) = self.free.check(self.capacity) {
            return violation(number, detail);
        }
        let reserved: u64 = self.reservations.values().sum();
        if reserved != self.count_reserved_blocks {
            return violation(
                3,
                format!(
                    "reserved blocks cached {} but the reservations add up to {reserved}",
                    self.count_reserved_blocks
                ),
            );
        }
        if reserved > self.free.free_blocks() {
            return violation(
                3,
                format!(
                    "{reserved} blocks are reserved but only {} are free",
                    self.free.free_blocks()
                ),
            );
        }
        if let Some((&id, _)) = self.reservations.range(self.next_reservation_id..).next() {
            return violation(3, format!("reservation {id} is beyond the next id"));
        }
        Ok(())
    }
}
