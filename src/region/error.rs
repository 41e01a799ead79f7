//! Errors of [`Region`](crate::Region) and its handles.

use core::fmt;

use super::span::Refusal;
use crate::{
    BackingError, BuildError, EpochError, Extent, ExtentError, ResizeError, SharedAllocError,
    SharedFreeError, SharedPinError,
};

/// Why a [`Region`](crate::Region) call failed. The region and its allocator are
/// unchanged (a failed write or discard may have changed the bytes it was given).
///
/// ```
/// use pinalloc::{HeapBacking, Region, RegionError, Request};
///
/// let region = Region::new(HeapBacking::new(64 * 512)?, 512)?;
/// let mut a = region.allocate(Request::new(2))?;
/// let err = a.write_at(1000, &[0; 100]).unwrap_err();
/// assert!(matches!(err, RegionError::AccessOutOfBounds { offset_bytes: 1000, len_bytes: 100, .. }));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegionError {
    /// The block size is zero or larger than the backing.
    #[error("a block of {block_bytes} bytes does not fit a {backing_bytes}-byte backing")]
    BlockSize {
        /// The block size asked for.
        block_bytes: u64,
        /// The backing's length.
        backing_bytes: u64,
    },
    /// The allocator could not place the request.
    #[error(transparent)]
    Alloc(#[from] SharedAllocError),
    /// An extent given to [`Region::attach`](crate::Region::attach) that is not a run
    /// of blocks of the region.
    #[error(transparent)]
    BadExtent(#[from] ExtentError),
    /// A free list given at open time is not valid.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// The backing's I/O failed.
    #[error(transparent)]
    Backing(#[from] BackingError),
    /// The allocator refused a free; only a bug in this crate gets here.
    #[error(transparent)]
    Free(#[from] SharedFreeError),
    /// The allocator refused a pin.
    #[error(transparent)]
    Pin(#[from] SharedPinError),
    /// The bytes are lent to a pin guard: a [`PinnedMut`](crate::PinnedMut) shuts its
    /// allocation out of reads and writes, any pin guard out of writes, until it drops.
    #[error("the bytes of {extent} are lent to a pin guard")]
    Lent {
        /// The allocation's extent.
        extent: Extent,
    },
    /// An access does not lie inside the handle's bytes.
    #[error(
        "{len_bytes} bytes at offset {offset_bytes} do not fit the {extent_bytes} bytes of {extent}"
    )]
    AccessOutOfBounds {
        /// The handle's extent.
        extent: Extent,
        /// The offset asked for, in bytes from the start of the handle.
        offset_bytes: u64,
        /// The length asked for, in bytes.
        len_bytes: u64,
        /// The handle's length in bytes.
        extent_bytes: u64,
    },
    /// A truncate to zero blocks (use `free`) or to more blocks than the allocation has.
    #[error("cannot truncate {extent} to {len_blocks} blocks")]
    Truncate {
        /// The allocation's extent.
        extent: Extent,
        /// The length asked for.
        len_blocks: u64,
    },
    /// [`Region::attach`](crate::Region::attach) of blocks that are not all detached:
    /// free, deferred, owned by a handle, or out of range.
    #[error("{extent} is not wholly detached")]
    NotDetached {
        /// The extent asked for.
        extent: Extent,
    },
    /// An epoch call named an epoch that is not open (or not prepared), or a reader
    /// that is not live.
    #[error(transparent)]
    Epoch(#[from] EpochError),
    /// A [`grow`](crate::Region::grow) or [`shrink`](crate::Region::shrink) the region
    /// cannot make: past what the backing may grow to, or a tail that is held.
    #[error(transparent)]
    Resize(#[from] ResizeError),
    /// [`Region::reset`](crate::Region::reset) while something else shares the region:
    /// a clone, an allocation or a pin guard.
    #[error("the region is shared by {holders} other holder(s): clones, allocations or guards")]
    Shared {
        /// Clones, allocations and guards alive.
        holders: usize,
    },
}

impl RegionError {
    /// What kind of failure this is: a wrapped error's own kind, else by variant.
    ///
    /// ```
    /// use pinalloc::{ErrorKind, HeapBacking, Region, Request};
    /// let region = Region::new(HeapBacking::new(4096)?, 512)?;
    /// let err = region.allocate(Request::new(9)).unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::NoSpace);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn kind(&self) -> crate::ErrorKind {
        use crate::ErrorKind;
        match self {
            RegionError::Alloc(e) => e.kind(),
            RegionError::BadExtent(e) => e.kind(),
            RegionError::Build(e) => e.kind(),
            RegionError::Backing(e) => e.kind(),
            RegionError::Free(e) => e.kind(),
            RegionError::Pin(e) => e.kind(),
            RegionError::Epoch(e) => e.kind(),
            RegionError::Resize(e) => e.kind(),
            RegionError::Lent { .. } | RegionError::Shared { .. } => ErrorKind::Busy,
            RegionError::BlockSize { .. }
            | RegionError::AccessOutOfBounds { .. }
            | RegionError::Truncate { .. }
            | RegionError::NotDetached { .. } => ErrorKind::BadInput,
        }
    }
}

impl RegionError {
    /// A span's refusal, told about the handle's extent.
    pub(crate) fn refused(refusal: Refusal, extent: Extent) -> Self {
        match refusal {
            Refusal::OutOfBounds {
                offset_bytes,
                len,
                len_bytes,
            } => Self::AccessOutOfBounds {
                extent,
                offset_bytes,
                len_bytes: len,
                extent_bytes: len_bytes,
            },
            Refusal::Lent => Self::Lent { extent },
            Refusal::Backing(e) => Self::Backing(e),
            Refusal::Free(e) => Self::Free(e),
            Refusal::Pin(e) => Self::Pin(e),
        }
    }
}

/// A call that consumes a handle failed: the error, and the handle back, unchanged
/// (but for bytes a failed discard was given, which are then unspecified).
///
/// Dropping the handle does what the call would have done, as well as it can (a drop
/// cannot report errors); or retry the call.
///
/// As an error it is its `error`: the same message and the same
/// [`source`](core::error::Error::source), so a chain of causes reads the same with or
/// without the handle around it.
///
/// ```
/// # use pinalloc::{HeapBacking, Region, RegionError, Request};
/// let region = Region::new(HeapBacking::new(64 * 512)?, 512)?;
/// let mut a = region.allocate(Request::new(2))?;
/// let pin = a.pin_mut()?;
/// // A lent allocation cannot be detached from its handle: the handle comes back.
/// let refused = a.into_extent().unwrap_err();
/// assert!(matches!(refused.error, RegionError::Lent { .. }));
/// let a = refused.handle;
/// drop(pin);
/// assert!(a.into_extent().is_ok());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[non_exhaustive]
pub struct Refused<T> {
    /// What went wrong.
    pub error: RegionError,
    /// The handle, as it was before the call.
    pub handle: T,
}

impl<T> Refused<T> {
    pub(crate) fn new(error: RegionError, handle: T) -> Self {
        Self { error, handle }
    }

    /// What kind of failure this is: [`RegionError::kind`] of its error.
    ///
    /// ```
    /// use pinalloc::{ErrorKind, HeapBacking, Region, Request};
    /// let region = Region::new(HeapBacking::new(4096)?, 512)?;
    /// let mut a = region.allocate(Request::new(2))?;
    /// let refused = a.truncate(0).unwrap_err();
    /// assert_eq!(refused.kind(), ErrorKind::BadInput);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn kind(&self) -> crate::ErrorKind {
        self.error.kind()
    }
}

impl<T> fmt::Display for Refused<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.error, f)
    }
}

/// Transparent, as `#[error(transparent)]` would make it if the handle were not there:
/// the message and the source are the error's.
impl<T> core::error::Error for Refused<T> {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        self.error.source()
    }
}

impl<T> fmt::Debug for Refused<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Refused")
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

impl<T> From<Refused<T>> for RegionError {
    fn from(refused: Refused<T>) -> Self {
        refused.error
    }
}
