//! [`Request`] and [`Policy`]: what to allocate and where to put it.

use core::ops::RangeInclusive;

use crate::{AllocError, Extent, ExtentError};

/// Where an allocation is placed among the free extents that can hold it.
///
/// Every policy is deterministic: the same free space and the same request always give
/// the same extent, which is what lets tests compare against a reference model.
///
/// ```
/// use pinalloc::{ExtentAllocator, Extent, Policy, Request};
///
/// let mut alloc = ExtentAllocator::new(100);
/// // Carve the space into free runs of 10 (at 0), 5 (at 20) and 60 (at 40).
/// alloc.allocate(Request::new(100))?;
/// alloc.free(Extent::new(0, 10))?;
/// alloc.free(Extent::new(20, 5))?;
/// alloc.free(Extent::new(40, 60))?;
///
/// let best = alloc.allocate(Request::new(4))?; // smallest run that fits
/// assert_eq!(best, Extent::new(20, 4));
/// let first = alloc.allocate(Request::new(4).policy(Policy::FirstFit))?;
/// assert_eq!(first, Extent::new(0, 4));
/// let near = alloc.allocate(Request::new(4).policy(Policy::Near(70)))?;
/// assert_eq!(near, Extent::new(70, 4));
/// let exact = alloc.allocate(Request::new(2).policy(Policy::Exact(8)))?;
/// assert_eq!(exact, Extent::new(8, 2));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Policy {
    /// The smallest free extent that can hold the request. Which of several equally
    /// small extents is not fixed: the engine takes the one it reaches first (see the
    /// crate's implementation notes). The allocation sits at the lowest suitably
    /// aligned block of that extent. This keeps large runs whole, and is the default.
    #[default]
    BestFit,
    /// The lowest address at which the request fits.
    FirstFit,
    /// The placement whose start is closest to the goal block; the lower address on a
    /// tie. The goal must lie inside the managed space.
    Near(u64),
    /// Exactly this start block, for log replay and mount-time claims. The start must be
    /// aligned. With a range request, the longest run from the start that is free, up to
    /// the maximum.
    Exact(u64),
}

/// What to allocate: a length (or a range of acceptable lengths), an alignment and a
/// [`Policy`].
///
/// A range request `min..=max` returns the largest length it can place, up to `max`;
/// it fails only when not even `min` blocks can be placed.
///
/// ```
/// use pinalloc::{ExtentAllocator, Policy, Request};
///
/// let mut alloc = ExtentAllocator::new(64);
/// let a = alloc.allocate(Request::new(3).align(8).policy(Policy::FirstFit))?;
/// assert_eq!((a.start, a.len), (0, 3));
/// let b = alloc.allocate(Request::new(3).align(8).policy(Policy::FirstFit))?;
/// assert_eq!((b.start, b.len), (8, 3));
///
/// // Ask for up to 100 blocks, accept 10 or more: gets the largest placeable run.
/// let c = alloc.allocate(Request::range(10..=100))?;
/// assert_eq!((c.start, c.len), (11, 53));
/// # Ok::<(), pinalloc::AllocError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Request {
    pub(crate) min_len: u64,
    pub(crate) max_len: u64,
    pub(crate) align: u64,
    pub(crate) policy: Policy,
}

impl Request {
    /// A request for exactly `len_blocks` blocks, best fit, no alignment.
    ///
    /// ```
    /// use pinalloc::Request;
    /// assert_eq!(Request::new(8).len_range(), 8..=8);
    /// ```
    #[inline]
    #[must_use]
    pub const fn new(len_blocks: u64) -> Self {
        Request {
            min_len: len_blocks,
            max_len: len_blocks,
            align: 1,
            policy: Policy::BestFit,
        }
    }

    /// A request for anything from `min` to `max` blocks: the largest placeable length
    /// wins.
    ///
    /// ```
    /// use pinalloc::Request;
    /// assert_eq!(Request::range(1..=16).len_range(), 1..=16);
    /// ```
    #[inline]
    #[must_use]
    pub fn range(len_blocks: RangeInclusive<u64>) -> Self {
        let (min_len, max_len) = len_blocks.into_inner();
        Request {
            min_len,
            max_len,
            align: 1,
            policy: Policy::BestFit,
        }
    }

    /// Requires the start block to be a multiple of `align_blocks`, a power of two.
    /// A value that is not a power of two is rejected when the request is used.
    ///
    /// Every alignment is O(log n) to place. The first request for an alignment above
    /// 64 blocks builds the free index a view for it (O(n)); the four used most
    /// recently are kept, and each costs a little on every later allocate and free.
    ///
    /// ```
    /// use pinalloc::Request;
    /// assert_eq!(Request::new(4).align(16).alignment(), 16);
    /// ```
    #[inline]
    #[must_use]
    pub const fn align(mut self, align_blocks: u64) -> Self {
        self.align = align_blocks;
        self
    }

    /// Sets the placement policy.
    ///
    /// ```
    /// use pinalloc::{Policy, Request};
    /// assert_eq!(Request::new(4).policy(Policy::FirstFit).placement(), Policy::FirstFit);
    /// ```
    #[inline]
    #[must_use]
    pub const fn policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// The acceptable lengths, `min..=max`.
    ///
    /// ```
    /// use pinalloc::Request;
    /// assert_eq!(Request::range(2..=5).len_range(), 2..=5);
    /// ```
    #[inline]
    #[must_use]
    pub const fn len_range(&self) -> RangeInclusive<u64> {
        self.min_len..=self.max_len
    }

    /// The alignment, in blocks: what [`align`](Self::align) set. Rust has no
    /// overloading, so the builder's setter keeps the short name and the reader is
    /// named apart.
    ///
    /// ```
    /// use pinalloc::Request;
    /// assert_eq!(Request::new(1).alignment(), 1);
    /// ```
    #[inline]
    #[must_use]
    pub const fn alignment(&self) -> u64 {
        self.align
    }

    /// The placement policy: what [`policy`](Self::policy) set (named apart from it,
    /// as [`alignment`](Self::alignment) is from `align`).
    ///
    /// ```
    /// use pinalloc::{Policy, Request};
    /// assert_eq!(Request::new(1).placement(), Policy::BestFit);
    /// ```
    #[inline]
    #[must_use]
    pub const fn placement(&self) -> Policy {
        self.policy
    }

    /// The common request: one length (not zero), best fit, no alignment. It needs
    /// none of the checks but the space, and its only failure is lack of space.
    #[inline]
    pub(crate) fn is_plain(&self) -> bool {
        self.align == 1
            && self.policy == Policy::BestFit
            && self.max_len == self.min_len
            && self.min_len != 0
    }

    /// Checks the request on its own against a space of `capacity` blocks: lengths,
    /// alignment, and an exact start or goal inside the space.
    pub(crate) fn check(&self, capacity: u64) -> Result<(), AllocError> {
        let (min, max, align) = (self.min_len, self.max_len, self.align);
        if min == 0 {
            return Err(AllocError::ZeroLength);
        }
        if min > max {
            return Err(AllocError::InvalidRange { min, max });
        }
        if !align.is_power_of_two() {
            return Err(AllocError::BadAlignment { align });
        }
        match self.policy {
            Policy::Exact(start) => {
                if start & (align - 1) != 0 {
                    return Err(AllocError::Misaligned { start, align });
                }
                Extent::new(start, min)
                    .within(capacity)
                    .map_err(AllocError::BadExtent)?;
            }
            Policy::Near(goal) if goal >= capacity => {
                return Err(AllocError::BadExtent(ExtentError::OutOfBounds {
                    extent: Extent::new(goal, 1),
                    capacity,
                }));
            }
            _ => {}
        }
        Ok(())
    }
}
