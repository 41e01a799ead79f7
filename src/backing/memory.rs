//! Byte copies for backings that are memory: the shared body of [`HeapBacking`] and
//! [`MmapBacking`](super::MmapBacking)'s positional I/O.
//!
//! [`HeapBacking`]: super::HeapBacking

use core::ops::Range;
use core::ptr::NonNull;

use super::{BackingError, BackingOp, checked_bytes, checked_discard};

/// `len_bytes` bytes of memory from `base`, valid for reads and writes while the
/// backing that made it lives.
#[derive(Debug, Clone, Copy)]
pub(super) struct Memory {
    pub(super) base: NonNull<u8>,
    pub(super) len_bytes: u64,
}

impl Memory {
    /// Copies `offset..offset + buf.len()` into `buf`.
    ///
    /// # Safety
    ///
    /// `self` describes live memory, nothing writes those bytes during the call, and
    /// `buf` does not overlap them.
    pub(super) unsafe fn read(
        &self,
        offset_bytes: u64,
        buf: &mut [u8],
    ) -> Result<(), BackingError> {
        let range = checked_bytes(BackingOp::Read, offset_bytes, buf.len(), self.len_bytes)?;
        // SAFETY: `range` is inside the `len_bytes` valid bytes (checked above), the
        // caller promised `buf` does not overlap them and that no writer of these bytes
        // runs meanwhile, so this copy neither overlaps nor races.
        unsafe {
            core::ptr::copy_nonoverlapping(self.at(range.start), buf.as_mut_ptr(), buf.len());
        }
        Ok(())
    }

    /// Copies `buf` to `offset..offset + buf.len()`.
    ///
    /// # Safety
    ///
    /// `self` describes live memory, and nothing else touches or refers to those bytes
    /// during the call.
    pub(super) unsafe fn write(&self, offset_bytes: u64, buf: &[u8]) -> Result<(), BackingError> {
        let range = checked_bytes(BackingOp::Write, offset_bytes, buf.len(), self.len_bytes)?;
        // SAFETY: in bounds (checked above); `buf` is a distinct allocation, or if it
        // were a slice of these very bytes the caller would be holding a reference to
        // them, which its promise rules out; no one else touches them meanwhile.
        unsafe {
            core::ptr::copy_nonoverlapping(buf.as_ptr(), self.at(range.start), buf.len());
        }
        Ok(())
    }

    /// Writes zeros over `range`.
    ///
    /// # Safety
    ///
    /// As [`write`](Self::write).
    pub(super) unsafe fn zero(&self, range: Range<u64>) -> Result<(), BackingError> {
        checked_discard(&range, self.len_bytes)?;
        // In bounds, so it fits in memory, and so in a `usize`.
        let len = (range.end - range.start) as usize;
        // SAFETY: in bounds (checked above), and the caller promised exclusive access.
        unsafe { core::ptr::write_bytes(self.at(range.start), 0, len) };
        Ok(())
    }

    /// The address of byte `offset_bytes`, which must be at most `len_bytes`.
    fn at(&self, offset_bytes: u64) -> *mut u8 {
        debug_assert!(offset_bytes <= self.len_bytes);
        // `wrapping_add` keeps this safe code; callers only pass checked offsets, for
        // which it is the plain in-bounds address.
        self.base.as_ptr().wrapping_add(offset_bytes as usize)
    }
}
