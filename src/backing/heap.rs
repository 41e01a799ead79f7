//! [`HeapBacking`]: aligned, zeroed memory from the global allocator.

use core::ops::Range;
use core::ptr::NonNull;
use std::alloc::{self, Layout};
use std::io;

use super::memory::Memory;
use super::{Backing, BackingError, BackingOp, MemoryBacking};

/// Aligned, zeroed memory from the global allocator: the simplest [`Backing`], for
/// buffer pools, tests and GPU-style sub-allocation in host memory.
///
/// `discard` writes zeros (the heap has no pages to give back), so a region that
/// discards released space reads zeros there, as file and mmap backings do.
///
/// ```
/// use pinalloc::{Backing, HeapBacking};
///
/// let heap = HeapBacking::new(1 << 20)?;            // 1 MiB, page-aligned, zeroed
/// assert_eq!(heap.len_bytes(), 1 << 20);
/// assert_eq!(heap.base_address().unwrap().as_ptr() as usize % 4096, 0);
/// # Ok::<(), pinalloc::BackingError>(())
/// ```
pub struct HeapBacking {
    memory: Memory,
    layout: Layout,
}

// SAFETY: `HeapBacking` owns its allocation outright (like a `Box<[u8]>`); the raw
// pointer is what keeps it from being `Send`/`Sync` automatically. Moving it to another
// thread moves that ownership. Sharing `&HeapBacking` between threads only allows the
// `unsafe` byte methods, whose callers promise that no two touch the same bytes at once,
// so no data race can come from safe code.
unsafe impl Send for HeapBacking {}
// SAFETY: see `Send` above.
unsafe impl Sync for HeapBacking {}

impl HeapBacking {
    /// Alignment of [`new`](Self::new): one 4 KiB page, which most DMA engines accept.
    pub const DEFAULT_ALIGN_BYTES: usize = 4096;

    /// `len_bytes` zeroed bytes, aligned to [`DEFAULT_ALIGN_BYTES`](Self::DEFAULT_ALIGN_BYTES).
    ///
    /// # Errors
    ///
    /// As [`with_align`](Self::with_align).
    ///
    /// ```
    /// use pinalloc::HeapBacking;
    /// assert!(HeapBacking::new(0).is_err());
    /// ```
    pub fn new(len_bytes: u64) -> Result<Self, BackingError> {
        Self::with_align(len_bytes, Self::DEFAULT_ALIGN_BYTES)
    }

    /// `len_bytes` zeroed bytes aligned to `align_bytes`.
    ///
    /// # Errors
    ///
    /// A [`BackingError`] with op [`BackingOp::Open`] and kind `InvalidInput` when
    /// `len_bytes` is zero or too large, or `align_bytes` is not a power of two;
    /// kind `OutOfMemory` when the allocation fails.
    ///
    /// ```
    /// use pinalloc::{Backing, HeapBacking};
    /// let heap = HeapBacking::with_align(4096, 1 << 16)?;
    /// assert_eq!(heap.base_address().unwrap().as_ptr() as usize % (1 << 16), 0);
    /// assert!(HeapBacking::with_align(4096, 3).is_err());
    /// # Ok::<(), pinalloc::BackingError>(())
    /// ```
    pub fn with_align(len_bytes: u64, align_bytes: usize) -> Result<Self, BackingError> {
        let bad = |why: &str| {
            BackingError::new(
                BackingOp::Open,
                0..len_bytes,
                io::Error::new(io::ErrorKind::InvalidInput, why),
            )
        };
        if len_bytes == 0 {
            return Err(bad("a heap backing needs at least one byte"));
        }
        let size = usize::try_from(len_bytes).map_err(|_| bad("larger than the address space"))?;
        let layout = Layout::from_size_align(size, align_bytes)
            .map_err(|_| bad("alignment is not a power of two, or the size overflows"))?;
        // SAFETY: `layout` has a non-zero size (checked above).
        let raw = unsafe { alloc::alloc_zeroed(layout) };
        let base = NonNull::new(raw).ok_or_else(|| {
            BackingError::new(
                BackingOp::Open,
                0..len_bytes,
                io::ErrorKind::OutOfMemory.into(),
            )
        })?;
        Ok(Self {
            memory: Memory::new(base, len_bytes, len_bytes),
            layout,
        })
    }
}

impl Drop for HeapBacking {
    fn drop(&mut self) {
        // SAFETY: `base` came from `alloc_zeroed(self.layout)` and is freed only here,
        // once. Dropping needs `&mut self`, so no borrow of the backing (and therefore
        // no region handle, which holds an `Arc` to it) is alive.
        unsafe { alloc::dealloc(self.memory.base.as_ptr(), self.layout) };
    }
}

impl core::fmt::Debug for HeapBacking {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("HeapBacking")
            .field("len_bytes", &self.memory.len_bytes())
            .field("align_bytes", &self.layout.align())
            .finish()
    }
}

impl Backing for HeapBacking {
    fn len_bytes(&self) -> u64 {
        self.memory.len_bytes()
    }

    unsafe fn read_at(&self, offset_bytes: u64, buf: &mut [u8]) -> Result<(), BackingError> {
        // SAFETY: the memory lives as long as `self`; the caller's promise (no writer of
        // these bytes meanwhile) is passed on unchanged.
        unsafe { self.memory.read(offset_bytes, buf) }
    }

    unsafe fn write_at(&self, offset_bytes: u64, buf: &[u8]) -> Result<(), BackingError> {
        // SAFETY: as `read_at`; the caller promised exclusive access to these bytes.
        unsafe { self.memory.write(offset_bytes, buf) }
    }

    fn sync(&self) -> Result<(), BackingError> {
        Ok(())
    }

    fn base_address(&self) -> Option<NonNull<u8>> {
        Some(self.memory.base)
    }

    unsafe fn discard(&self, range: Range<u64>) -> Result<(), BackingError> {
        // SAFETY: as `write_at`.
        unsafe { self.memory.zero(range) }
    }
}

// SAFETY: `base_address` is always `Some(base)`, and `base` is valid for `len_bytes`
// bytes (its fixed length, and so its `max_len_bytes`) until `drop`; the memory is private to this value and touched only by the three
// byte methods, and `discard` only writes zeros, so the memory stays valid.
unsafe impl MemoryBacking for HeapBacking {}
