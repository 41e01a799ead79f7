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
pub struct Extent {
    /// The first block.
    pub start: u64,
    /// The number of blocks.
    pub len: u64,
}

/// Why a value could not be turned into an [`Extent`] or a [`Range`].
///
/// ```
/// use pinalloc::{Extent, ExtentError};
///
/// assert_eq!(Extent::try_from(9..3), Err(ExtentError::Reversed { start: 9, end: 3 }));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ExtentError {
    /// `start + len` does not fit in a `u64`.
    #[error("extent {extent} overflows u64: start + len > u64::MAX")]
    Overflow {
        /// The offending extent.
        extent: Extent,
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
            ExtentError::Overflow { .. } | ExtentError::Reversed { .. } => {
                crate::ErrorKind::BadInput
            }
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
