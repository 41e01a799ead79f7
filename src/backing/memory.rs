//! Byte copies for backings that are memory: the shared body of [`HeapBacking`] and
//! [`MmapBacking`](super::MmapBacking)'s positional I/O.
//!
//! [`HeapBacking`]: super::HeapBacking

use core::ops::Range;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU64, Ordering};

use super::{BackingError, BackingOp, checked_bytes, checked_discard};

/// `len_bytes` bytes of memory from `base`, valid for reads and writes while the
/// backing that made it lives (and up to `max_len_bytes` of them, past the length,
/// valid too, for a backing whose length changes).
#[derive(Debug)]
pub(super) struct Memory {
    pub(super) base: NonNull<u8>,
    len_bytes: AtomicU64,
    pub(super) max_len_bytes: u64,
}

impl Memory {
    /// `len_bytes` bytes from `base`, of `max_len_bytes` valid ones.
    pub(super) fn new(base: NonNull<u8>, len_bytes: u64, max_len_bytes: u64) -> Self {
        debug_assert!(len_bytes <= max_len_bytes);
        Self {
            base,
            len_bytes: AtomicU64::new(len_bytes),
            max_len_bytes,
        }
    }

    /// The length.
    pub(super) fn len_bytes(&self) -> u64 {
        self.len_bytes.load(Ordering::Acquire)
    }

    /// Sets the length (at most `max_len_bytes`); the caller keeps the bytes past
    /// it zero.
    pub(super) fn set_len_bytes(&self, len_bytes: u64) {
        debug_assert!(len_bytes <= self.max_len_bytes);
        self.len_bytes.store(len_bytes, Ordering::Release);
    }

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
        let range = checked_bytes(BackingOp::Read, offset_bytes, buf.len(), self.len_bytes())?;
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
        let range = checked_bytes(BackingOp::Write, offset_bytes, buf.len(), self.len_bytes())?;
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
        checked_discard(&range, self.len_bytes())?;
        // In bounds, so it fits in memory, and so in a `usize`.
        let len = (range.end - range.start) as usize;
        // SAFETY: in bounds (checked above), and the caller promised exclusive access.
        unsafe { core::ptr::write_bytes(self.at(range.start), 0, len) };
        Ok(())
    }

    /// The address of byte `offset_bytes`, which must be at most `max_len_bytes`.
    fn at(&self, offset_bytes: u64) -> *mut u8 {
        debug_assert!(offset_bytes <= self.max_len_bytes);
        // `wrapping_add` keeps this safe code; callers only pass checked offsets, for
        // which it is the plain in-bounds address.
        self.base.as_ptr().wrapping_add(offset_bytes as usize)
    }
}
