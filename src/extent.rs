//! [`Extent`]: a half-open run of blocks, with checked arithmetic.

use core::fmt;
use core::ops::Range;

/// A half-open run of blocks: `start .. start + len`.
///
/// The fields are public so that an extent can be written as a literal, just like a
/// [`Range`]. That also means an `Extent` can describe a run that wraps past `u64::MAX`
/// or has zero length; every allocator entry point rejects such an extent with an error
/// instead of panicking, and every method here uses checked arithmetic.
///
/// ```
/// use pinalloc::Extent;
///
/// let e = Extent { start: 10, len: 4 };
/// assert_eq!(e.checked_end(), Some(14));
/// assert!(e.contains(13));
/// assert!(!e.contains(14));
/// assert_eq!(std::ops::Range::try_from(e), Ok(10..14));
/// assert_eq!(Extent::try_from(10..14), Ok(e));
///
/// // An extent that would wrap is representable, but never silently used.
/// let wraps = Extent { start: u64::MAX, len: 2 };
/// assert_eq!(wraps.checked_end(), None);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Extent {
    /// The first block.
    pub start: u64,
    /// The number of blocks.
    pub len: u64,
}

/// An extent that names no run of blocks of the space: the one reason shared by every
/// call that takes an extent. Each error family nests it as its `BadExtent` variant
/// ([`FreeError::BadExtent`](crate::FreeError::BadExtent),
/// [`PinError::BadExtent`](crate::PinError::BadExtent), and so on), and
/// [`Extent::within`] and the conversions to and from [`Range`] return it on its own.
///
/// ```
/// use pinalloc::{Extent, ExtentAllocator, ExtentError, FreeError};
///
/// assert_eq!(Extent::try_from(9..3), Err(ExtentError::Reversed { start: 9, end: 3 }));
/// let mut alloc = ExtentAllocator::new(8);
/// assert_eq!(
///     alloc.free(Extent::new(6, 4)),
///     Err(FreeError::BadExtent(ExtentError::OutOfBounds { extent: Extent::new(6, 4), capacity: 8 }))
/// );
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum ExtentError {
    /// An extent of no blocks.
    #[error("zero-length extent at block {start}")]
    ZeroLength {
        /// Its start block.
        start: u64,
    },
    /// `start + len` does not fit in a `u64`.
    #[error("extent {extent} overflows u64: start + len > u64::MAX")]
    Overflow {
        /// The offending extent.
        extent: Extent,
    },
    /// An extent that reaches past the managed space (a goal block outside it is
    /// reported as a one-block extent).
    #[error("extent {extent} lies outside the managed space of {capacity} blocks")]
    OutOfBounds {
        /// The offending extent.
        extent: Extent,
        /// The managed space, in blocks.
        capacity: u64,
    },
    /// A range whose end lies before its start.
    #[error("range {start}..{end} ends before it starts")]
    Reversed {
        /// The range's start.
        start: u64,
        /// The range's end.
        end: u64,
    },
}

impl ExtentError {
    /// What kind of failure this is: always [`ErrorKind::BadInput`](crate::ErrorKind::BadInput).
    ///
    /// ```
    /// use pinalloc::{ErrorKind, Extent};
    /// assert_eq!(Extent::try_from(9..3).unwrap_err().kind(), ErrorKind::BadInput);
    /// ```
    #[must_use]
    pub const fn kind(&self) -> crate::ErrorKind {
        match self {
            ExtentError::ZeroLength { .. }
            | ExtentError::Overflow { .. }
            | ExtentError::OutOfBounds { .. }
            | ExtentError::Reversed { .. } => crate::ErrorKind::BadInput,
        }
    }
}

/// Why an extent is not a run of blocks of a space, without its payload: what the hot
/// paths carry, turned into an [`ExtentError`] on the way out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fault {
    ZeroLength,
    Overflow,
    OutOfBounds,
}

impl Fault {
    /// The error for `extent` in a space of `capacity` blocks.
    #[cold]
    pub(crate) fn error(self, extent: Extent, capacity: u64) -> ExtentError {
        match self {
            Fault::ZeroLength => ExtentError::ZeroLength {
                start: extent.start,
            },
            Fault::Overflow => ExtentError::Overflow { extent },
            Fault::OutOfBounds => ExtentError::OutOfBounds { extent, capacity },
        }
    }
}

impl Extent {
    /// An extent of `len` blocks starting at `start`. Nothing is checked here; the
    /// allocator checks every extent it is given.
    ///
    /// ```
    /// use pinalloc::Extent;
    /// assert_eq!(Extent::new(3, 2), Extent { start: 3, len: 2 });
    /// ```
    #[inline]
    #[must_use]
    pub const fn new(start: u64, len: u64) -> Self {
        Extent { start, len }
    }

    /// The first block past the extent, or `None` if `start + len` overflows.
    ///
    /// ```
    /// use pinalloc::Extent;
    /// assert_eq!(Extent::new(u64::MAX - 1, 1).checked_end(), Some(u64::MAX));
    /// assert_eq!(Extent::new(u64::MAX, 1).checked_end(), None);
    /// ```
    #[inline]
    #[must_use]
    pub const fn checked_end(&self) -> Option<u64> {
        self.start.checked_add(self.len)
    }

    /// The first block past the extent: `start + len`.
    ///
    /// An extent that any space holds ends at or below `u64::MAX`, so for those this is
    /// exact. For one that would run past it (which every call refuses as
    /// `Overflow`), the sum saturates at `u64::MAX`; [`checked_end`](Self::checked_end)
    /// tells that case apart.
    ///
    /// ```
    /// use pinalloc::Extent;
    /// assert_eq!(Extent::new(3, 2).end(), 5);
    /// assert_eq!(Extent::new(u64::MAX, 1).end(), u64::MAX);
    /// ```
    #[inline]
    #[must_use]
    pub const fn end(&self) -> u64 {
        self.start.saturating_add(self.len)
    }

    /// Whether the extent has no blocks.
    ///
    /// ```
    /// use pinalloc::Extent;
    /// assert!(Extent::new(7, 0).is_empty());
    /// ```
    #[inline]
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The extent as a range of a space of `capacity` blocks: `start..start + len`,
    /// or why it is not one (no blocks, past `u64::MAX`, or past the space). Every
    /// call that takes an extent checks it so.
    ///
    /// ```
    /// use pinalloc::{Extent, ExtentError};
    /// assert_eq!(Extent::new(2, 3).within(8), Ok(2..5));
    /// assert_eq!(Extent::new(2, 0).within(8), Err(ExtentError::ZeroLength { start: 2 }));
    /// assert!(matches!(Extent::new(6, 4).within(8), Err(ExtentError::OutOfBounds { .. })));
    /// assert!(matches!(Extent::new(u64::MAX, 2).within(u64::MAX), Err(ExtentError::Overflow { .. })));
    /// ```
    #[inline]
    pub fn within(&self, capacity: u64) -> Result<Range<u64>, ExtentError> {
        self.range_in(capacity)
            .map_err(|fault| fault.error(*self, capacity))
    }

    /// [`within`](Self::within), with the reason only.
    #[inline]
    pub(crate) fn range_in(&self, capacity: u64) -> Result<Range<u64>, Fault> {
        if self.len == 0 {
            return Err(Fault::ZeroLength);
        }
        let end = self.checked_end().ok_or(Fault::Overflow)?;
        if end > capacity {
            return Err(Fault::OutOfBounds);
        }
        Ok(self.start..end)
    }

    /// Whether `block` lies inside the extent. Correct even for extents that would wrap.
    ///
    /// ```
    /// use pinalloc::Extent;
    /// let e = Extent::new(4, 2);
    /// assert!(e.contains(4) && e.contains(5) && !e.contains(6) && !e.contains(3));
    /// ```
    #[inline]
    #[must_use]
    pub const fn contains(&self, block: u64) -> bool {
        block >= self.start && block - self.start < self.len
    }

    /// Whether the two extents share at least one block. Empty extents share nothing.
    ///
    /// ```
    /// use pinalloc::Extent;
    /// assert!(Extent::new(0, 4).overlaps(&Extent::new(3, 4)));
    /// assert!(!Extent::new(0, 4).overlaps(&Extent::new(4, 4)));
    /// ```
    #[inline]
    #[must_use]
    pub const fn overlaps(&self, other: &Extent) -> bool {
        if self.len == 0 || other.len == 0 {
            return false;
        }
        if self.start <= other.start {
            other.start - self.start < self.len
        } else {
            self.start - other.start < other.len
        }
    }
}

impl fmt::Debug for Extent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Extent {
    /// Formats as `[start, +len)`, which stays meaningful even when the end would wrap.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}, +{})", self.start, self.len)
    }
}

impl TryFrom<Range<u64>> for Extent {
    type Error = ExtentError;

    /// Converts `start..end`; fails if `end < start`.
    fn try_from(range: Range<u64>) -> Result<Self, Self::Error> {
        match range.end.checked_sub(range.start) {
            Some(len) => Ok(Extent::new(range.start, len)),
            None => Err(ExtentError::Reversed {
                start: range.start,
                end: range.end,
            }),
        }
    }
}

impl TryFrom<Extent> for Range<u64> {
    type Error = ExtentError;

    /// Converts to `start..start + len`; fails if that end overflows.
    fn try_from(extent: Extent) -> Result<Self, Self::Error> {
        match extent.checked_end() {
            Some(end) => Ok(extent.start..end),
            None => Err(ExtentError::Overflow { extent }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlaps_is_symmetric_and_exact_near_the_top() {
        let top = Extent::new(u64::MAX - 4, 4);
        let wraps = Extent::new(u64::MAX - 1, 10);
        assert!(top.overlaps(&wraps));
        assert!(wraps.overlaps(&top));
        assert!(!top.overlaps(&Extent::new(0, u64::MAX - 4)));
        assert!(top.overlaps(&Extent::new(0, u64::MAX - 3)));
        assert!(!Extent::new(5, 0).overlaps(&Extent::new(0, 10)));
    }

    #[test]
    fn contains_never_wraps() {
        let wraps = Extent::new(u64::MAX, 5);
        assert!(wraps.contains(u64::MAX));
        assert!(!wraps.contains(0));
        assert!(!Extent::new(3, 0).contains(3));
    }

    #[test]
    fn range_round_trip_and_errors() {
        assert_eq!(Range::try_from(Extent::new(0, u64::MAX)), Ok(0..u64::MAX));
        assert_eq!(
            Range::try_from(Extent::new(1, u64::MAX)),
            Err(ExtentError::Overflow {
                extent: Extent::new(1, u64::MAX)
            })
        );
        assert_eq!(Extent::try_from(5..5), Ok(Extent::new(5, 0)));
    }
}
