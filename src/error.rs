//! Error families. Each enum covers one kind of call; every variant names what was
//! wrong and where. An `Err` always means the allocator was left exactly as it was.

use core::fmt;

use crate::{BlockState, Extent, ExtentError, PinId, ReaderId};

/// Deferred blocks split by what holds them, as carried by [`AllocError::NoSpace`].
///
/// ```
/// use pinalloc::Held;
/// let h = Held::new(3, 5);
/// assert_eq!(h.total(), 8);
/// assert_eq!(h.to_string(), "8 deferred (3 by pins only, 5 by epochs)");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
#[non_exhaustive]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Held {
    /// Deferred blocks held only by range pins.
    pub pins: u64,
    /// Deferred blocks held by an uncommitted epoch or a live reader (and maybe also
    /// by pins).
    pub epochs: u64,
}

impl Held {
    /// Deferred blocks held only by pins, and by epochs or readers.
    ///
    /// ```
    /// let h = pinalloc::Held::new(1, 2);
    /// assert_eq!((h.pins, h.epochs), (1, 2));
    /// ```
    #[must_use]
    pub const fn new(pins: u64, epochs: u64) -> Self {
        Held { pins, epochs }
    }

    /// All deferred blocks.
    ///
    /// ```
    /// assert_eq!(pinalloc::Held::new(1, 2).total(), 3);
    /// ```
    #[must_use]
    pub const fn total(&self) -> u64 {
        self.pins + self.epochs
    }
}

impl fmt::Display for Held {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} deferred ({} by pins only, {} by epochs)",
            self.total(),
            self.pins,
            self.epochs
        )
    }
}

/// What kind of failure an error is, whatever its family: ask any error a call of this
/// crate returns with its `kind()` method, instead of matching its variants (or its
/// `Debug` text). ([`InvariantViolation`] has none: it reports a broken state, a bug,
/// not a call's failure.)
///
/// ```
/// use pinalloc::{ErrorKind, Extent, ExtentAllocator, Request};
///
/// let mut alloc = ExtentAllocator::new(8);
/// assert_eq!(alloc.allocate(Request::new(9)).unwrap_err().kind(), ErrorKind::NoSpace);
/// assert_eq!(alloc.free(Extent::new(0, 0)).unwrap_err().kind(), ErrorKind::BadInput);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The call's input is malformed or does not fit the space's state: a zero length,
    /// an overflow, a range out of bounds, a bad alignment, an exact extent across
    /// groups, a free of blocks that are not Allocated, an extent list that is not a
    /// free list. Retrying the same call fails again.
    BadInput,
    /// The space is held: too few Free blocks for the request, or the blocks asked for
    /// are not Free, or reservations have promised them. Frees, unpins, commits and
    /// ended readers may make room, unless the request is longer than the whole space
    /// (or than a group of a [`SharedAllocator`](crate::SharedAllocator)), which no
    /// release can make room for.
    NoSpace,
    /// A blocking pin, or a pin guard lending an allocation's bytes, refuses the call
    /// until it lets go.
    Busy,
    /// A limit set on the allocator: a pin quota, the cap on Deferred blocks, what a
    /// reservation has left.
    Limit,
    /// A wait ran its whole timeout.
    Timeout,
    /// A handle or epoch that is not live: a pin already unpinned, a reader already
    /// ended, a reservation already unreserved, an epoch that is not the open one
    /// (committed, or not yet opened), or a handle of another allocator.
    Stale,
    /// Bytes that do not decode: a persisted free list that is torn, corrupted or of
    /// another version.
    Corrupt,
    /// The backing's I/O failed.
    Io,
}

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
    /// The request asked for zero blocks. (A request is a length, not yet an extent:
    /// it has no start to report, so it is not [`ExtentError::ZeroLength`].)
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
    /// An exact request's extent (its start, at its minimum length) or a goal block
    /// (a one-block extent) that is not inside the managed space.
    #[error(transparent)]
    BadExtent(#[from] ExtentError),
    /// An exact request whose blocks are not all Free.
    #[error("exact extent {extent} is not free")]
    NotFree {
        /// The exact extent that was asked for, at its minimum length.
        extent: Extent,
    },
    /// Not enough space. The fields tell a full space from one that is fragmented
    /// (`largest_free` below `requested`), reserved, or only held: `deferred` blocks
    /// come back when their pins, epochs or readers let go, and `pinned_free` blocks
    /// when their pins do. Users otherwise take pending space for a leak.
    #[error(
        "no space for {requested} blocks: {free} free (largest free extent {largest_free}, \
         {pinned_free} pinned, {reserved} reserved), {deferred}"
    )]
    NoSpace {
        /// The (minimum) number of blocks asked for.
        requested: u64,
        /// Free blocks, including the reserved and the pinned ones.
        free: u64,
        /// The largest free extent that can be allocated, in blocks.
        largest_free: u64,
        /// Free blocks set aside by reservations.
        reserved: u64,
        /// Deferred blocks, by what holds them.
        deferred: Held,
        /// Free blocks that pins keep out of reach.
        pinned_free: u64,
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
    /// A reservation that this allocator did not make, or that was already unreserved.
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
    /// The extent has no blocks, overflows `u64` or reaches past the managed space.
    #[error(transparent)]
    BadExtent(#[from] ExtentError),
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
    /// A blocking pin covers part of the extent; nothing was freed.
    #[error("extent {extent} is busy: {pin} blocks {blocked} from being freed")]
    Busy {
        /// The extent given.
        extent: Extent,
        /// Of the blocking pins over the first blocked block of `extent`, the oldest.
        pin: PinId,
        /// The blocks of `extent` that this pin covers.
        blocked: Extent,
    },
}

/// Why a pin or an unpin failed.
///
/// ```
/// use pinalloc::{Extent, ExtentAllocator, PinError};
///
/// let mut alloc = ExtentAllocator::new(8);
/// let id = alloc.pin(Extent::new(0, 2))?;
/// alloc.unpin(id)?;
/// assert_eq!(alloc.unpin(id), Err(PinError::Unknown { id }));
/// # Ok::<(), PinError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PinError {
    /// The extent has no blocks, overflows `u64` or reaches past the managed space.
    #[error(transparent)]
    BadExtent(#[from] ExtentError),
    /// A pin this allocator did not make, or one already unpinned.
    #[error("{id} is not a live pin of this allocator")]
    Unknown {
        /// The id given.
        id: PinId,
    },
    /// A token that names no live pin of this allocator: its pin has gone, it is
    /// another allocator's, or it was never given.
    #[error("token {token} names no live pin of this allocator")]
    UnknownToken {
        /// The token given.
        token: u64,
    },
    /// Pinning would take Free blocks that reservations have promised.
    #[error(
        "pinning {extent} would take {free_blocks} free blocks, but only {unreserved} are \
         not reserved"
    )]
    Reserved {
        /// The extent given.
        extent: Extent,
        /// Free, unpinned blocks inside it, which the pin would take out of reach.
        free_blocks: u64,
        /// Free blocks not promised to reservations.
        unreserved: u64,
    },
}

/// Why an epoch or reader call failed.
///
/// ```
/// use pinalloc::{EpochError, ExtentAllocator};
///
/// let mut alloc = ExtentAllocator::new(8);
/// assert_eq!(alloc.commit(7), Err(EpochError::NotOpen { epoch: 7, open: 1 }));
/// # Ok::<(), EpochError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EpochError {
    /// Only the open epoch can be committed.
    #[error("epoch {epoch} is not open (the open epoch is {open})")]
    NotOpen {
        /// The epoch given.
        epoch: u64,
        /// The open epoch.
        open: u64,
    },
    /// A reader this allocator did not begin, or one already ended.
    #[error("{id} is not a live reader of this allocator")]
    UnknownReader {
        /// The id given.
        id: ReaderId,
    },
    /// `finish_commit` of an epoch that is not prepared: only epochs after `durable`
    /// and before `open` are.
    #[error(
        "epoch {epoch} is not prepared and unfinished (finished through {durable}, open {open})"
    )]
    NotPrepared {
        /// The epoch given.
        epoch: u64,
        /// The newest epoch whose commit is finished (0 for none).
        durable: u64,
        /// The open epoch.
        open: u64,
    },
    /// `abort_all` would free blocks that a blocking pin covers.
    #[error("{pin} covers block {block}, which the abort would free")]
    Busy {
        /// Of the blocking pins over `block`, the oldest.
        pin: PinId,
        /// The first block, in address order, that the abort would free and a
        /// blocking pin covers.
        block: u64,
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
    /// The extent has no blocks, overflows `u64` or reaches past the managed space.
    #[error(transparent)]
    BadExtent(#[from] ExtentError),
    /// Two extents share blocks (for allocated extents, a cross-linked block).
    #[error("extents {first} and {second} overlap")]
    Overlap {
        /// The lower of the two extents.
        first: Extent,
        /// The other extent.
        second: Extent,
    },
}

/// Why a reservation could not be unreserved.
///
/// ```
/// use pinalloc::{ExtentAllocator, ReservationError};
///
/// let mut a = ExtentAllocator::new(8);
/// let mut b = ExtentAllocator::new(8);
/// let r = a.reserve(2)?;
/// // `b` did not make `r`: the error hands it back, so `a` can still unreserve it.
/// let Err(ReservationError::Unknown { reservation }) = b.unreserve(r) else { panic!() };
/// assert_eq!(a.unreserve(reservation).unwrap(), 2);
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

/// Why a `grow` or `shrink` was refused; nothing changed.
///
/// ```
/// use pinalloc::{BlockState, ExtentAllocator, Request, ResizeError};
///
/// let mut alloc = ExtentAllocator::new(16);
/// alloc.allocate(pinalloc::Request::new(4).policy(pinalloc::Policy::Exact(12)))?;
/// assert_eq!(
///     alloc.shrink(8),
///     Err(ResizeError::InUse { block: 12, state: BlockState::Allocated })
/// );
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResizeError {
    /// `grow` to fewer blocks than the space has.
    #[error("cannot grow a space of {capacity} blocks to {requested}")]
    NotLarger {
        /// The blocks the space has.
        capacity: u64,
        /// The capacity asked for.
        requested: u64,
    },
    /// `shrink` to more blocks than the space has.
    #[error("cannot shrink a space of {capacity} blocks to {requested}")]
    NotSmaller {
        /// The blocks the space has.
        capacity: u64,
        /// The capacity asked for.
        requested: u64,
    },
    /// More blocks than this allocator can manage: a `SharedAllocator` past its
    /// largest group count times its group size.
    #[error("cannot grow to {requested} blocks: at most {max}")]
    TooLarge {
        /// The capacity asked for.
        requested: u64,
        /// The most this allocator can have.
        max: u64,
    },
    /// A block of the tail that `shrink` would cut off is Allocated or Deferred: the
    /// first such block, and its state. [`state_of`](crate::ExtentAllocator::state_of),
    /// [`pins`](crate::ExtentAllocator::pins) and
    /// [`readers`](crate::ExtentAllocator::readers) say what holds it.
    #[error("block {block} of the tail is {state:?}")]
    InUse {
        /// The first such block.
        block: u64,
        /// Its state: Allocated or Deferred.
        state: BlockState,
    },
    /// A Free block of the tail is pinned: the first such block, and its pin count.
    #[error("block {block} of the tail is Free but {pins} pin(s) cover it")]
    Pinned {
        /// The first such block.
        block: u64,
        /// Pins over it ([`pins`](crate::ExtentAllocator::pins) lists them).
        pins: u64,
    },
    /// Reservations hold more Free blocks than the smaller space would have.
    #[error("reservations hold {reserved} blocks, but only {free} would be free")]
    Reserved {
        /// Blocks the reservations hold.
        reserved: u64,
        /// Free, unpinned blocks the smaller space would have.
        free: u64,
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
#[non_exhaustive]
pub struct InvariantViolation {
    /// The invariant's number in the crate's list (see
    /// [`ExtentAllocator`](crate::ExtentAllocator)).
    pub number: u8,
    /// What was found, in words.
    pub detail: alloc::string::String,
}

impl AllocError {
    /// What kind of failure this is.
    ///
    /// ```
    /// use pinalloc::{AllocError, ErrorKind};
    /// assert_eq!(AllocError::ZeroLength.kind(), ErrorKind::BadInput);
    /// ```
    #[must_use]
    pub const fn kind(&self) -> ErrorKind {
        match self {
            AllocError::BadExtent(e) => e.kind(),
            AllocError::ZeroLength
            | AllocError::InvalidRange { .. }
            | AllocError::BadAlignment { .. }
            | AllocError::Misaligned { .. } => ErrorKind::BadInput,
            AllocError::NotFree { .. } | AllocError::NoSpace { .. } => ErrorKind::NoSpace,
            AllocError::Overdrawn { .. } => ErrorKind::Limit,
            AllocError::UnknownReservation { .. } => ErrorKind::Stale,
        }
    }
}

impl FreeError {
    /// What kind of failure this is.
    ///
    /// ```
    /// use pinalloc::{ErrorKind, Extent, FreeError};
    /// let e = Extent::new(0, 1);
    /// assert_eq!(FreeError::NotAllocated { extent: e, offending: e }.kind(), ErrorKind::BadInput);
    /// ```
    #[must_use]
    pub const fn kind(&self) -> ErrorKind {
        match self {
            FreeError::BadExtent(e) => e.kind(),
            FreeError::NotAllocated { .. } | FreeError::PartlyAllocated { .. } => {
                ErrorKind::BadInput
            }
            FreeError::Busy { .. } => ErrorKind::Busy,
        }
    }
}

impl PinError {
    /// What kind of failure this is.
    ///
    /// ```
    /// use pinalloc::{ErrorKind, Extent, ExtentAllocator};
    /// let mut alloc = ExtentAllocator::new(8);
    /// let id = alloc.pin(Extent::new(0, 1))?;
    /// alloc.unpin(id)?;
    /// assert_eq!(alloc.unpin(id).unwrap_err().kind(), ErrorKind::Stale);
    /// # Ok::<(), pinalloc::PinError>(())
    /// ```
    #[must_use]
    pub const fn kind(&self) -> ErrorKind {
        match self {
            PinError::BadExtent(e) => e.kind(),
            PinError::Unknown { .. } | PinError::UnknownToken { .. } => ErrorKind::Stale,
            PinError::Reserved { .. } => ErrorKind::NoSpace,
        }
    }
}

impl EpochError {
    /// `epoch` is the open epoch `open`, or [`NotOpen`](Self::NotOpen).
    pub(crate) fn check_open(epoch: u64, open: u64) -> Result<(), Self> {
        if epoch == open {
            Ok(())
        } else {
            Err(EpochError::NotOpen { epoch, open })
        }
    }

    /// `epoch` is prepared and unfinished (after `durable`, before `open`), or
    /// [`NotPrepared`](Self::NotPrepared).
    pub(crate) fn check_prepared(epoch: u64, durable: u64, open: u64) -> Result<(), Self> {
        if durable < epoch && epoch < open {
            Ok(())
        } else {
            Err(EpochError::NotPrepared {
                epoch,
                durable,
                open,
            })
        }
    }

    /// What kind of failure this is: always [`ErrorKind::Stale`].
    ///
    /// ```
    /// use pinalloc::{ErrorKind, ExtentAllocator};
    /// let mut alloc = ExtentAllocator::new(8);
    /// assert_eq!(alloc.commit(7).unwrap_err().kind(), ErrorKind::Stale);
    /// ```
    #[must_use]
    pub const fn kind(&self) -> ErrorKind {
        match self {
            EpochError::NotOpen { .. }
            | EpochError::UnknownReader { .. }
            | EpochError::NotPrepared { .. } => ErrorKind::Stale,
            EpochError::Busy { .. } => ErrorKind::Busy,
        }
    }
}

impl BuildError {
    /// What kind of failure this is: always [`ErrorKind::BadInput`].
    ///
    /// ```
    /// use pinalloc::{ErrorKind, Extent, ExtentAllocator};
    /// let err = ExtentAllocator::from_free_extents(8, [Extent::new(0, 9)]).unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::BadInput);
    /// ```
    #[must_use]
    pub const fn kind(&self) -> ErrorKind {
        match self {
            BuildError::BadExtent(e) => e.kind(),
            BuildError::Overlap { .. } => ErrorKind::BadInput,
        }
    }
}

impl ResizeError {
    /// For `grow` from `capacity` blocks to `requested`: whether it adds any, or
    /// [`NotLarger`](Self::NotLarger).
    pub(crate) fn growing(capacity: u64, requested: u64) -> Result<bool, Self> {
        if requested < capacity {
            return Err(ResizeError::NotLarger {
                capacity,
                requested,
            });
        }
        Ok(requested > capacity)
    }

    /// For `shrink` from `capacity` blocks to `requested`: whether it cuts any, or
    /// [`NotSmaller`](Self::NotSmaller).
    pub(crate) fn shrinking(capacity: u64, requested: u64) -> Result<bool, Self> {
        if requested > capacity {
            return Err(ResizeError::NotSmaller {
                capacity,
                requested,
            });
        }
        Ok(requested < capacity)
    }

    /// What kind of failure this is.
    ///
    /// ```
    /// use pinalloc::{ErrorKind, ExtentAllocator};
    /// let mut alloc = ExtentAllocator::new(8);
    /// assert_eq!(alloc.grow(4).unwrap_err().kind(), ErrorKind::BadInput);
    /// ```
    #[must_use]
    pub const fn kind(&self) -> ErrorKind {
        match self {
            ResizeError::NotLarger { .. }
            | ResizeError::NotSmaller { .. }
            | ResizeError::TooLarge { .. } => ErrorKind::BadInput,
            ResizeError::InUse { .. } | ResizeError::Pinned { .. } => ErrorKind::Busy,
            ResizeError::Reserved { .. } => ErrorKind::Limit,
        }
    }
}

impl ReservationError {
    /// What kind of failure this is: always [`ErrorKind::Stale`].
    ///
    /// ```
    /// use pinalloc::{ErrorKind, ExtentAllocator};
    /// let (mut alloc, mut other) = (ExtentAllocator::new(8), ExtentAllocator::new(8));
    /// let theirs = other.reserve(2)?;
    /// assert_eq!(alloc.unreserve(theirs).unwrap_err().kind(), ErrorKind::Stale);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub const fn kind(&self) -> ErrorKind {
        match self {
            ReservationError::Unknown { .. } => ErrorKind::Stale,
        }
    }
}
