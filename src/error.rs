//! Error families. Each enum covers one kind of call; every variant names what was
//! wrong and where. An `Err` always means the allocator was left exactly as it was.

use crate::Extent;

/// Why an allocation or a reservation failed.
///
/// ```
/// use pinalloc::{AllocError, ExtentAllocator, Request};
///
/// let mut alloc = ExtentAllocator::new(8);
/// let err = alloc.allocate(Request::new(9)).unwrap_err();
/// assert!(matches!(err, AllocError::NoSpace { requested: 9, free: 8, largest_free: 8, .. }));
/// println!("{err}"); // "no space for 9 blocks: 8 free (largest free extent 8), 0 reserved"
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AllocError {
    /// The request asked for zero blocks.
    #[error("zero-length request")]
    ZeroLength,
    /// A range request whose minimum exceeds its maximum.
    #[error("request range {min}..={max} is empty")]
    InvalidRange {
        /// The minimum length asked for.
        min: u64,
        /// The maximum length asked for.
        max: u64,
    },
    /// The alignment is zero or not a power of two.
    #[error("alignment {align} is not a power of two")]
    BadAlignment {
        /// The alignment given.
        align: u64,
    },
    /// An exact start that is not a multiple of the requested alignment.
    #[error("exact start {start} is not aligned to {align}")]
    Misaligned {
        /// The start block given.
        start: u64,
        /// The alignment asked for.
        align: u64,
    },
    /// `start + len` of an exact request overflows `u64`.
    #[error("extent {extent} overflows u64")]
    Overflow {
        /// The extent that would wrap.
        extent: Extent,
    },
    /// An exact start or goal block outside the managed space.
    #[error("extent {extent} lies outside the managed space of {capacity} blocks")]
    OutOfBounds {
        /// The offending extent (a goal block is reported as a one-block extent).
        extent: Extent,
        /// The managed space, in blocks.
        capacity: u64,
    },
    /// An exact request whose blocks are not all Free.
    #[error("exact extent {extent} is not free")]
    NotFree {
        /// The exact extent that was asked for, at its minimum length.
        extent: Extent,
    },
    /// Not enough space. `free` and `largest_free` say whether the space is full or
    /// only fragmented; `reserved` says how much of the free space is set aside by
    /// reservations.
    #[error(
        "no space for {requested} blocks: {free} free (largest free extent {largest_free}), \
         {reserved} reserved"
    )]
    NoSpace {
        /// The (minimum) number of blocks asked for.
        requested: u64,
        /// Free blocks, including the reserved ones.
        free: u64,
        /// The largest free extent, in blocks.
        largest_free: u64,
        /// Free blocks set aside by reservations.
        reserved: u64,
    },
    /// An allocation against a reservation that asked for more than it has left.
    #[error("reservation {id} has {remaining} blocks left but {requested} were asked for")]
    Overdrawn {
        /// The reservation's id.
        id: u64,
        /// The (minimum) number of blocks asked for.
        requested: u64,
        /// Blocks left in the reservation.
        remaining: u64,
    },
    /// A reservation that this allocator did not make, or that was already released.
    #[error("reservation {id} is not known to this allocator")]
    UnknownReservation {
        /// The reservation's id.
        id: u64,
    },
}

/// Why a free failed.
///
/// ```
/// use pinalloc::{Extent, ExtentAllocator, FreeError, Request};
///
/// let mut alloc = ExtentAllocator::new(8);
/// let e = alloc.allocate(Request::new(4))?;
/// alloc.free(e)?;
/// assert_eq!(alloc.free(e), Err(FreeError::NotAllocated { extent: e, offending: e }));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FreeError {
    /// The extent has no blocks.
    #[error("zero-length free at block {start}")]
    ZeroLength {
        /// The start block given.
        start: u64,
    },
    /// `start + len` overflows `u64`.
    #[error("extent {extent} overflows u64")]
    Overflow {
        /// The extent that would wrap.
        extent: Extent,
    },
    /// The extent reaches past the managed space.
    #[error("extent {extent} lies outside the managed space of {capacity} blocks")]
    OutOfBounds {
        /// The offending extent.
        extent: Extent,
        /// The managed space, in blocks.
        capacity: u64,
    },
    /// None of the blocks are Allocated: a double free, or blocks never allocated.
    #[error("extent {extent} is not allocated (double free?): {offending} is already free")]
    NotAllocated {
        /// The extent given.
        extent: Extent,
        /// The first run of blocks inside `extent` that is not Allocated.
        offending: Extent,
    },
    /// Some blocks are Allocated and some are not; nothing was freed.
    #[error("extent {extent} is only partly allocated: {offending} is already free")]
    PartlyAllocated {
        /// The extent given.
        extent: Extent,
        /// The first run of blocks inside `extent` that is not Allocated.
        offending: Extent,
    },
}

/// Why an allocator could not be built from a list of extents.
///
/// ```
/// use pinalloc::{BuildError, Extent, ExtentAllocator};
///
/// let err = ExtentAllocator::from_allocated_extents(10, [Extent::new(0, 4), Extent::new(3, 2)]);
/// assert_eq!(
///     err.unwrap_err(),
///     BuildError::Overlap { first: Extent::new(0, 4), second: Extent::new(3, 2) }
/// );
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// An extent with no blocks.
    #[error("zero-length extent at block {start}")]
    ZeroLength {
        /// The start block given.
        start: u64,
    },
    /// `start + len` overflows `u64`.
    #[error("extent {extent} overflows u64")]
    Overflow {
        /// The extent that would wrap.
        extent: Extent,
    },
    /// An extent reaching past the managed space.
    #[error("extent {extent} lies outside the managed space of {capacity} blocks")]
    OutOfBounds {
        /// The offending extent.
        extent: Extent,
        /// The managed space, in blocks.
        capacity: u64,
    },
    /// Two extents share blocks (for allocated extents, a cross-linked block).
    #[error("extents {first} and {second} overlap")]
    Overlap {
        /// The lower of the two extents.
        first: Extent,
        /// The other extent.
        second: Extent,
    },
}

/// Why a reservation could not be released.
///
/// ```
/// use pinalloc::{ExtentAllocator, ReservationError};
///
/// let mut a = ExtentAllocator::new(8);
/// let mut b = ExtentAllocator::new(8);
/// let r = a.reserve(2)?;
/// // `b` did not make `r`: the error hands it back, so `a` can still release it.
/// let Err(ReservationError::Unknown { reservation }) = b.release(r) else { panic!() };
/// assert_eq!(a.release(reservation).unwrap(), 2);
/// # Ok::<(), pinalloc::AllocError>(())
/// ```
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReservationError {
    /// A reservation this allocator did not make.
    #[error("reservation {} is not known to this allocator", .reservation.id())]
    Unknown {
        /// The reservation, handed back unchanged.
        reservation: crate::Reservation,
    },
}

/// A violated invariant, found by
/// [`check_invariants`](crate::ExtentAllocator::check_invariants). This is always a bug
/// in pinalloc, never in the caller.
///
/// ```
/// use pinalloc::ExtentAllocator;
/// assert!(ExtentAllocator::new(10).check_invariants().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invariant {number} violated: {detail}")]
pub struct InvariantViolation {
    /// The invariant's number in the crate's list (see
    /// [`ExtentAllocator`](crate::ExtentAllocator)).
    pub number: u8,
    /// What was found, in words.
    pub detail: alloc::string::String,
}
