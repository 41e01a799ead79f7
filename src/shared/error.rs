//! Errors of the thread-safe layer: its limits, and waits that time out. The core's
//! errors pass through unchanged inside them.

use crate::{AllocError, ErrorKind, Extent, ExtentError, FreeError, Held, PinError};

/// A limit of a [`SharedAllocator`](crate::SharedAllocator) that a call would go over.
/// The call changed nothing.
///
/// ```
/// use pinalloc::{Extent, LimitError, PinOptions, SharedAllocator, SharedPinError};
///
/// let alloc = SharedAllocator::builder(64).pin_quota_blocks(8).build();
/// let _a = alloc.pin_with(Extent::new(0, 6), PinOptions::new().owner(7))?;
/// let err = alloc.pin_with(Extent::new(10, 4), PinOptions::new().owner(7)).unwrap_err();
/// assert!(matches!(
///     err,
///     SharedPinError::Limit(LimitError::PinQuota { owner: 7, quota_blocks: 8, pinned_blocks: 6, .. })
/// ));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LimitError {
    /// The owner's pins would cover more blocks than its quota.
    #[error(
        "owner {owner} pins {pinned_blocks} blocks; pinning {extent} would pass its quota of \
         {quota_blocks}"
    )]
    PinQuota {
        /// The owner named in [`PinOptions::owner`](crate::PinOptions::owner).
        owner: u64,
        /// The extent that was to be pinned.
        extent: Extent,
        /// The owner's quota, in blocks (counted per pin: overlapping pins count twice).
        quota_blocks: u64,
        /// Blocks the owner's live pins already cover.
        pinned_blocks: u64,
    },
    /// The free would leave more blocks Deferred than the cap allows.
    #[error(
        "freeing {extent} would defer {would_defer_blocks} blocks on top of {deferred_blocks}, \
         over the cap of {cap_blocks}"
    )]
    DeferredCap {
        /// The extent that was to be freed.
        extent: Extent,
        /// The cap on Deferred blocks.
        cap_blocks: u64,
        /// Blocks Deferred when the free was refused.
        deferred_blocks: u64,
        /// Blocks of `extent` that the free would have deferred.
        would_defer_blocks: u64,
    },
}

/// Why a [`SharedAllocator`](crate::SharedAllocator) allocation or reservation failed:
/// the core's reason, or one that only the groups and the waits of the shared layer
/// give.
///
/// ```
/// use pinalloc::{Extent, Policy, Request, SharedAllocError, SharedAllocator};
///
/// let alloc = SharedAllocator::builder(64).groups(2).build();
/// let err = alloc.allocate(Request::new(4).policy(Policy::Exact(30))).unwrap_err();
/// assert_eq!(err, SharedAllocError::CrossesGroup { extent: Extent::new(30, 4), boundary: 32 });
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SharedAllocError {
    /// What the core allocator refuses: see [`AllocError`]. Its
    /// [`NoSpace`](AllocError::NoSpace) totals every group.
    #[error(transparent)]
    Core(#[from] AllocError),
    /// An exact request that would span two allocation groups, where no extent may
    /// lie.
    #[error("exact extent {extent} crosses the allocation group boundary at block {boundary}")]
    CrossesGroup {
        /// The exact extent that was asked for, at its minimum length.
        extent: Extent,
        /// The first block of the next group.
        boundary: u64,
    },
    /// [`allocate_wait`](crate::SharedAllocator::allocate_wait) waited its whole
    /// timeout and the request still did not fit. The fields are those of the last
    /// [`NoSpace`](AllocError::NoSpace): what stood in the way when it gave up.
    #[error(
        "timed out waiting for {requested} blocks: {free} free (largest free extent \
         {largest_free}, {pinned_free} pinned, {reserved} reserved), {deferred}"
    )]
    TimedOut {
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
}

/// Why a [`SharedAllocator`](crate::SharedAllocator) free failed: the core's reason,
/// or a limit.
///
/// ```
/// use pinalloc::{Extent, FreeError, SharedAllocator, SharedFreeError};
///
/// let alloc = SharedAllocator::new(64);
/// let err = alloc.free(Extent::new(0, 4)).unwrap_err();
/// assert!(matches!(err, SharedFreeError::Core(FreeError::NotAllocated { .. })));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SharedFreeError {
    /// What the core allocator refuses: see [`FreeError`].
    #[error(transparent)]
    Core(#[from] FreeError),
    /// A limit of the shared allocator: see [`LimitError`].
    #[error(transparent)]
    Limit(#[from] LimitError),
}

/// Why a [`SharedAllocator`](crate::SharedAllocator) pin failed: the core's reason, or
/// a limit.
///
/// ```
/// use pinalloc::{Extent, ExtentError, PinError, SharedAllocator, SharedPinError};
///
/// let alloc = SharedAllocator::new(64);
/// let err = alloc.pin(Extent::new(60, 8)).unwrap_err();
/// assert!(matches!(err, SharedPinError::Core(PinError::BadExtent(ExtentError::OutOfBounds { .. }))));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SharedPinError {
    /// What the core allocator refuses: see [`PinError`].
    #[error(transparent)]
    Core(#[from] PinError),
    /// A limit of the shared allocator: see [`LimitError`].
    #[error(transparent)]
    Limit(#[from] LimitError),
}

/// Why [`wait_released`](crate::SharedAllocator::wait_released) returned without the
/// extent being released.
///
/// ```
/// use std::time::Duration;
/// use pinalloc::{Extent, Request, SharedAllocator, WaitError};
///
/// let alloc = SharedAllocator::new(64);
/// let e = alloc.allocate(Request::new(4))?;
/// let pin = alloc.pin(e)?;
/// alloc.free(e)?;
/// let err = alloc.wait_released(e, Duration::from_millis(1)).unwrap_err();
/// assert_eq!(err, WaitError::TimedOut { extent: e, deferred_blocks: 4 });
/// drop(pin);
/// alloc.wait_released(e, Duration::from_millis(1))?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WaitError {
    /// The extent has no blocks, overflows `u64` or reaches past the managed space.
    #[error(transparent)]
    BadExtent(#[from] ExtentError),
    /// The timeout passed with blocks of the extent still Deferred by the holds the
    /// wait began with.
    #[error("timed out with {deferred_blocks} blocks of {extent} still deferred")]
    TimedOut {
        /// The extent waited for.
        extent: Extent,
        /// Its blocks still Deferred, when the wait gave up, by frees made before it
        /// began: the ones it waited for (not blocks Deferred again since).
        deferred_blocks: u64,
    },
}

impl LimitError {
    /// What kind of failure this is: always [`ErrorKind::Limit`].
    ///
    /// ```
    /// use pinalloc::{ErrorKind, Extent, PinOptions, SharedAllocator, SharedPinError};
    /// let alloc = SharedAllocator::builder(64).pin_quota_blocks(4).build();
    /// let err = alloc.pin_owned(Extent::new(0, 8), PinOptions::new().owner(1)).unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::Limit);
    /// ```
    #[must_use]
    pub const fn kind(&self) -> ErrorKind {
        match self {
            LimitError::PinQuota { .. } | LimitError::DeferredCap { .. } => ErrorKind::Limit,
        }
    }
}

impl SharedAllocError {
    /// What kind of failure this is: the core error's, [`ErrorKind::BadInput`] for an
    /// extent across groups, or [`ErrorKind::Timeout`].
    ///
    /// ```
    /// use pinalloc::{ErrorKind, Request, SharedAllocator};
    /// let alloc = SharedAllocator::new(64);
    /// assert_eq!(alloc.allocate(Request::new(65)).unwrap_err().kind(), ErrorKind::NoSpace);
    /// ```
    #[must_use]
    pub const fn kind(&self) -> ErrorKind {
        match self {
            SharedAllocError::Core(e) => e.kind(),
            SharedAllocError::CrossesGroup { .. } => ErrorKind::BadInput,
            SharedAllocError::TimedOut { .. } => ErrorKind::Timeout,
        }
    }
}

impl SharedFreeError {
    /// What kind of failure this is: the core error's, or [`ErrorKind::Limit`].
    ///
    /// ```
    /// use pinalloc::{ErrorKind, Extent, SharedAllocator};
    /// let alloc = SharedAllocator::new(64);
    /// assert_eq!(alloc.free(Extent::new(0, 4)).unwrap_err().kind(), ErrorKind::BadInput);
    /// ```
    #[must_use]
    pub const fn kind(&self) -> ErrorKind {
        match self {
            SharedFreeError::Core(e) => e.kind(),
            SharedFreeError::Limit(e) => e.kind(),
        }
    }
}

impl SharedPinError {
    /// What kind of failure this is: the core error's, or [`ErrorKind::Limit`].
    ///
    /// ```
    /// use pinalloc::{ErrorKind, Extent, SharedAllocator};
    /// let alloc = SharedAllocator::new(64);
    /// assert_eq!(alloc.pin(Extent::new(60, 8)).unwrap_err().kind(), ErrorKind::BadInput);
    /// ```
    #[must_use]
    pub const fn kind(&self) -> ErrorKind {
        match self {
            SharedPinError::Core(e) => e.kind(),
            SharedPinError::Limit(e) => e.kind(),
        }
    }
}

impl WaitError {
    /// What kind of failure this is.
    ///
    /// ```
    /// use pinalloc::{ErrorKind, Extent, SharedAllocator};
    /// use std::time::Duration;
    /// let alloc = SharedAllocator::new(64);
    /// let err = alloc.wait_released(Extent::new(0, 0), Duration::ZERO).unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::BadInput);
    /// ```
    #[must_use]
    pub const fn kind(&self) -> ErrorKind {
        match self {
            WaitError::BadExtent(e) => e.kind(),
            WaitError::TimedOut { .. } => ErrorKind::Timeout,
        }
    }
}
