//! The name of an error's variant, for tables of failing calls whose error types
//! differ: compared exactly, where matching `Debug` text would also match a variant
//! whose name contains another's, or a field's value.

use crate::persist::PersistError;
use crate::{
    AllocError, BuildError, EpochError, ExtentError, FreeError, LimitError, PinError, RegionError,
    ReservationError, ResizeError, SharedAllocError, SharedFreeError, SharedPinError, WaitError,
};

/// An error that names its variant. A variant that wraps another error (an
/// [`ExtentError`] as `BadExtent`, a core error inside a shared one, any error inside a
/// [`RegionError`]) names the innermost: `FreeError::BadExtent(ExtentError::ZeroLength
/// { .. })` and `SharedFreeError::Core(FreeError::BadExtent(..))` both name
/// `"ZeroLength"`. [`ErrorKind`](crate::ErrorKind) is the coarser question that
/// applications ask; this one is for tests that must tell each refusal apart.
///
/// ```
/// use pinalloc::{Extent, ExtentAllocator, Request};
/// use pinalloc::testing::{Variant, err_variant};
///
/// let mut alloc = ExtentAllocator::new(8);
/// assert_eq!(err_variant(&alloc.allocate(Request::new(0))), Some("ZeroLength"));
/// assert_eq!(err_variant(&alloc.free(Extent::new(3, 0))), Some("ZeroLength"));
/// assert_eq!(err_variant(&alloc.allocate(Request::new(2))), None);
/// assert_eq!(alloc.allocate(Request::new(9)).unwrap_err().variant(), "NoSpace");
/// ```
pub trait Variant {
    /// The name of the (innermost) variant.
    fn variant(&self) -> &'static str;
}

/// The variant an `Err` names, or `None` for an `Ok`.
///
/// ```
/// use pinalloc::ExtentAllocator;
/// use pinalloc::testing::err_variant;
/// let mut alloc = ExtentAllocator::new(8);
/// assert_eq!(err_variant(&alloc.reserve(0)), Some("ZeroLength"));
/// ```
pub fn err_variant<T, E: Variant>(result: &Result<T, E>) -> Option<&'static str> {
    result.as_ref().err().map(Variant::variant)
}

impl Variant for ExtentError {
    fn variant(&self) -> &'static str {
        match self {
            ExtentError::ZeroLength { .. } => "ZeroLength",
            ExtentError::Overflow { .. } => "Overflow",
            ExtentError::OutOfBounds { .. } => "OutOfBounds",
            ExtentError::Reversed { .. } => "Reversed",
        }
    }
}

impl Variant for AllocError {
    fn variant(&self) -> &'static str {
        match self {
            AllocError::BadExtent(e) => e.variant(),
            AllocError::ZeroLength => "ZeroLength",
            AllocError::InvalidRange { .. } => "InvalidRange",
            AllocError::BadAlignment { .. } => "BadAlignment",
            AllocError::Misaligned { .. } => "Misaligned",
            AllocError::NotFree { .. } => "NotFree",
            AllocError::NoSpace { .. } => "NoSpace",
            AllocError::Overdrawn { .. } => "Overdrawn",
            AllocError::UnknownReservation { .. } => "UnknownReservation",
        }
    }
}

impl Variant for FreeError {
    fn variant(&self) -> &'static str {
        match self {
            FreeError::BadExtent(e) => e.variant(),
            FreeError::NotAllocated { .. } => "NotAllocated",
            FreeError::PartlyAllocated { .. } => "PartlyAllocated",
            FreeError::Busy { .. } => "Busy",
        }
    }
}

impl Variant for PinError {
    fn variant(&self) -> &'static str {
        match self {
            PinError::BadExtent(e) => e.variant(),
            PinError::Unknown { .. } => "Unknown",
            PinError::UnknownToken { .. } => "UnknownToken",
            PinError::Reserved { .. } => "Reserved",
        }
    }
}

impl Variant for EpochError {
    fn variant(&self) -> &'static str {
        match self {
            EpochError::NotOpen { .. } => "NotOpen",
            EpochError::UnknownReader { .. } => "UnknownReader",
            EpochError::NotPrepared { .. } => "NotPrepared",
            EpochError::Busy { .. } => "Busy",
        }
    }
}

impl Variant for BuildError {
    fn variant(&self) -> &'static str {
        match self {
            BuildError::BadExtent(e) => e.variant(),
            BuildError::Overlap { .. } => "Overlap",
        }
    }
}

impl Variant for ResizeError {
    fn variant(&self) -> &'static str {
        match self {
            ResizeError::NotLarger { .. } => "NotLarger",
            ResizeError::NotSmaller { .. } => "NotSmaller",
            ResizeError::TooLarge { .. } => "TooLarge",
            ResizeError::InUse { .. } => "InUse",
            ResizeError::Pinned { .. } => "Pinned",
            ResizeError::Reserved { .. } => "Reserved",
        }
    }
}

impl Variant for ReservationError {
    fn variant(&self) -> &'static str {
        match self {
            ReservationError::Unknown { .. } => "Unknown",
        }
    }
}

impl Variant for PersistError {
    fn variant(&self) -> &'static str {
        match self {
            PersistError::BadExtent { error, .. } => error.variant(),
            PersistError::Truncated { .. } => "Truncated",
            PersistError::TrailingBytes { .. } => "TrailingBytes",
            PersistError::BadMagic { .. } => "BadMagic",
            PersistError::UnsupportedVersion { .. } => "UnsupportedVersion",
            PersistError::Corrupted { .. } => "Corrupted",
            PersistError::Malformed { .. } => "Malformed",
            PersistError::Overlap { .. } => "Overlap",
            PersistError::Touching { .. } => "Touching",
            PersistError::Unsorted { .. } => "Unsorted",
        }
    }
}

impl Variant for LimitError {
    fn variant(&self) -> &'static str {
        match self {
            LimitError::PinQuota { .. } => "PinQuota",
            LimitError::DeferredCap { .. } => "DeferredCap",
        }
    }
}

impl Variant for SharedAllocError {
    fn variant(&self) -> &'static str {
        match self {
            SharedAllocError::Core(e) => e.variant(),
            SharedAllocError::CrossesGroup { .. } => "CrossesGroup",
            SharedAllocError::TimedOut { .. } => "TimedOut",
        }
    }
}

impl Variant for SharedFreeError {
    fn variant(&self) -> &'static str {
        match self {
            SharedFreeError::Core(e) => e.variant(),
            SharedFreeError::Limit(e) => e.variant(),
        }
    }
}

impl Variant for SharedPinError {
    fn variant(&self) -> &'static str {
        match self {
            SharedPinError::Core(e) => e.variant(),
            SharedPinError::Limit(e) => e.variant(),
        }
    }
}

impl Variant for WaitError {
    fn variant(&self) -> &'static str {
        match self {
            WaitError::BadExtent(e) => e.variant(),
            WaitError::TimedOut { .. } => "TimedOut",
        }
    }
}

#[cfg(unix)]
impl Variant for RegionError {
    fn variant(&self) -> &'static str {
        match self {
            RegionError::Alloc(e) => e.variant(),
            RegionError::BadExtent(e) => e.variant(),
            RegionError::Build(e) => e.variant(),
            RegionError::Free(e) => e.variant(),
            RegionError::Pin(e) => e.variant(),
            RegionError::Backing(e) => e.variant(),
            RegionError::Epoch(e) => e.variant(),
            RegionError::Resize(e) => e.variant(),
            RegionError::BlockSize { .. } => "BlockSize",
            RegionError::Lent { .. } => "Lent",
            RegionError::AccessOutOfBounds { .. } => "AccessOutOfBounds",
            RegionError::Truncate { .. } => "Truncate",
            RegionError::NotDetached { .. } => "NotDetached",
            RegionError::Shared { .. } => "Shared",
        }
    }
}

/// A backing's failure names its I/O error's kind: `InvalidInput` for a length or
/// range the backing cannot have, `Unsupported` for an operation it lacks, `Io` for
/// any other.
#[cfg(unix)]
impl Variant for crate::BackingError {
    fn variant(&self) -> &'static str {
        match self.source.kind() {
            std::io::ErrorKind::InvalidInput => "InvalidInput",
            std::io::ErrorKind::Unsupported => "Unsupported",
            _ => "Io",
        }
    }
}

#[cfg(unix)]
impl<T> Variant for crate::Refused<T> {
    fn variant(&self) -> &'static str {
        self.error.variant()
    }
}
