//! [`MmapBacking`]: a memory mapping through `memmap2`, anonymous or over a file.

use core::ops::Range;
use core::ptr::NonNull;
use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use memmap2::{MmapMut, MmapOptions, MmapRaw, UncheckedAdvice};

use super::file::open_sized;
use super::memory::Memory;
use super::{
    Backing, BackingError, BackingOp, MemoryBacking, checked_discard, page_bytes, page_interior,
};

/// A memory mapping, anonymous or shared over a file: memory a device can DMA into,
/// whose released pages go back to the kernel.
///
/// `discard` drops whole pages inside the range and writes zeros over the partial pages
/// at its ends:
/// - an anonymous mapping uses `madvise(MADV_DONTNEED)`: the pages read back as zeros;
/// - a file mapping uses `madvise(MADV_REMOVE)`, which punches a hole in the file. Where
///   the filesystem cannot, it writes zeros instead (see
///   [`punches_holes`](Self::punches_holes)); either way the range reads as zeros.
///
/// Where `madvise` refuses a range for another reason (an `mlock`ed range answers
/// `EINVAL`), that discard writes zeros instead. Both advices are Linux's; on other
/// Unix systems every discard writes zeros.
///
/// **A full disk is a signal, not an error, for a file mapping.** The file is grown
/// sparse and discards punch holes, so a write through the mapping may need a new disk
/// block at page-fault time; if the filesystem has none (`ENOSPC`, a quota), the kernel
/// sends `SIGBUS`, which kills the process. Where that matters, use [`FileBacking`]
/// (whose writes return the error), keep the filesystem from filling, or turn discards
/// off and preallocate the file.
///
/// [`FileBacking`]: super::FileBacking
///
/// ```
/// use pinalloc::{Backing, MmapBacking};
///
/// let anon = MmapBacking::anonymous(1 << 20)?;
/// assert_eq!(anon.len_bytes(), 1 << 20);
///
/// let dir = std::env::temp_dir().join(format!("pinalloc-doc-mmap-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// // SAFETY: no other process or mapping touches this file while it is mapped.
/// let mapped = unsafe { MmapBacking::open(dir.join("region"), 1 << 16)? };  // created, 64 KiB
/// // SAFETY: `mapped` is not shared.
/// unsafe { mapped.write_at(0, b"persistent")? };
/// mapped.sync()?;
/// drop(mapped);
/// // SAFETY: as above.
/// let again = unsafe { MmapBacking::open(dir.join("region"), 1 << 16)? };   // opened
/// let mut out = [0u8; 10];
/// // SAFETY: as above.
/// unsafe { again.read_at(0, &mut out)? };
/// assert_eq!(&out, b"persistent");
/// # std::fs::remove_dir_all(&dir).unwrap();
/// # Ok::<(), pinalloc::BackingError>(())
/// ```
pub struct MmapBacking {
    map: MmapRaw,
    memory: Memory,
    /// The mapped file, or `None` for an anonymous mapping.
    file: Option<File>,
    /// Cleared after the first `MADV_REMOVE` the filesystem refuses; then `discard`
    /// writes zeros.
    punch: AtomicBool,
}

// SAFETY: the mapping is owned by this value (`MmapRaw` is itself `Send + Sync`); the
// `NonNull` inside `memory` is a copy of its address. As with `HeapBacking`, shared
// access only reaches the `unsafe` byte methods, whose callers rule out data races.
unsafe impl Send for MmapBacking {}
// SAFETY: see `Send` above.
unsafe impl Sync for MmapBacking {}

impl MmapBacking {
    /// A private anonymous mapping of `len_bytes` zeroed bytes.
    ///
    /// # Errors
    ///
    /// A [`BackingError`] with op [`BackingOp::Open`] when `len_bytes` is zero or does
    /// not fit the address space, or `mmap` fails.
    ///
    /// ```
    /// use pinalloc::MmapBacking;
    /// assert!(MmapBacking::anonymous(0).is_err());
    /// ```
    pub fn anonymous(len_bytes: u64) -> Result<Self, BackingError> {
        let len = map_len(len_bytes)?;
        let map = MmapMut::map_anon(len).map_err(|e| opening(len_bytes, e))?;
        Self::from_map(MmapRaw::from(map), len_bytes, None)
    }

    /// A shared mapping of the file at `path`, created if missing and grown with zeros
    /// to `len_bytes` if shorter. Writes reach the file; [`Backing::sync`] makes them
    /// durable.
    ///
    /// # Errors
    ///
    /// A [`BackingError`] with op [`BackingOp::Open`] when `len_bytes` is zero, the
    /// file is longer than `len_bytes` (it is never truncated), or opening, sizing or
    /// mapping fails.
    ///
    /// # Safety
    ///
    /// While the mapping lives, nothing outside it (another process, another mapping,
    /// a `File` handle) writes or truncates the file. The mapping's bytes are handed out
    /// as Rust slices, which assume no one else changes them; a truncation would also
    /// turn reads into `SIGBUS`. This is the promise `memmap2::MmapMut::map_mut` asks
    /// for, and the reason that function is `unsafe` too.
    pub unsafe fn open(path: impl AsRef<Path>, len_bytes: u64) -> Result<Self, BackingError> {
        let len = map_len(len_bytes)?;
        let file = open_sized(path.as_ref(), len_bytes)?;
        let map = MmapOptions::new()
            .len(len)
            .map_raw(&file)
            .map_err(|e| opening(len_bytes, e))?;
        Self::from_map(map, len_bytes, Some(file))
    }

    fn from_map(map: MmapRaw, len_bytes: u64, file: Option<File>) -> Result<Self, BackingError> {
        let base = NonNull::new(map.as_mut_ptr())
            .ok_or_else(|| opening(len_bytes, io::ErrorKind::Other.into()))?;
        debug_assert_eq!(map.len() as u64, len_bytes);
        Ok(Self {
            map,
            memory: Memory { base, len_bytes },
            file,
            punch: AtomicBool::new(true),
        })
    }

    /// Whether `discard` gives storage back: `false` where the system has no advice
    /// for it (off Linux), or once it answered that it cannot (`EOPNOTSUPP`,
    /// `ENOSYS`); discards then write zeros.
    ///
    /// ```
    /// use pinalloc::MmapBacking;
    /// assert!(MmapBacking::anonymous(4096)?.punches_holes());
    /// # Ok::<(), pinalloc::BackingError>(())
    /// ```
    pub fn punches_holes(&self) -> bool {
        self.advice().is_some() && self.punch.load(Ordering::Relaxed)
    }

    /// Whether this maps a file (rather than anonymous memory).
    ///
    /// ```
    /// use pinalloc::MmapBacking;
    /// assert!(!MmapBacking::anonymous(4096)?.is_file());
    /// # Ok::<(), pinalloc::BackingError>(())
    /// ```
    pub fn is_file(&self) -> bool {
        self.file.is_some()
    }
}

impl MmapBacking {
    /// The advice that drops a range's contents so it reads as zeros: Linux's
    /// `MADV_REMOVE` for a shared file mapping, `MADV_DONTNEED` for a private anonymous
    /// one. Other systems' `MADV_DONTNEED` may keep the contents, so they write zeros.
    #[cfg(target_os = "linux")]
    fn advice(&self) -> Option<UncheckedAdvice> {
        Some(if self.file.is_some() {
            UncheckedAdvice::Remove
        } else {
            UncheckedAdvice::DontNeed
        })
    }

    #[cfg(not(target_os = "linux"))]
    fn advice(&self) -> Option<UncheckedAdvice> {
        None
    }
}

fn map_len(len_bytes: u64) -> Result<usize, BackingError> {
    match usize::try_from(len_bytes) {
        Ok(len) if len > 0 => Ok(len),
        _ => Err(opening(
            len_bytes,
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "a mapping needs 1..=usize::MAX bytes",
            ),
        )),
    }
}

fn opening(len_bytes: u64, source: io::Error) -> BackingError {
    BackingError::new(BackingOp::Open, 0..len_bytes, source)
}

impl core::fmt::Debug for MmapBacking {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("MmapBacking")
            .field("len_bytes", &self.memory.len_bytes)
            .field("file", &self.file.is_some())
            .field("punches_holes", &self.punches_holes())
            .finish()
    }
}

impl Backing for MmapBacking {
    fn len_bytes(&self) -> u64 {
        self.memory.len_bytes
    }

    unsafe fn read_at(&self, offset_bytes: u64, buf: &mut [u8]) -> Result<(), BackingError> {
        // SAFETY: the mapping lives as long as `self` and is never remapped; the caller's
        // promise (no writer of these bytes meanwhile) is passed on unchanged.
        unsafe { self.memory.read(offset_bytes, buf) }
    }

    unsafe fn write_at(&self, offset_bytes: u64, buf: &[u8]) -> Result<(), BackingError> {
        // SAFETY: as `read_at`; the caller promised exclusive access to these bytes.
        unsafe { self.memory.write(offset_bytes, buf) }
    }

    fn sync(&self) -> Result<(), BackingError> {
        if self.file.is_none() {
            return Ok(());
        }
        self.map
            .flush()
            .map_err(|e| BackingError::new(BackingOp::Sync, 0..self.memory.len_bytes, e))
    }

    fn base_address(&self) -> Option<NonNull<u8>> {
        Some(self.memory.base)
    }

    unsafe fn discard(&self, range: Range<u64>) -> Result<(), BackingError> {
        checked_discard(&range, self.memory.len_bytes)?;
        let pages = page_interior(&range, page_bytes());
        // SAFETY: the partial pages at the ends lie inside `range`, which the caller
        // gave us exclusively.
        unsafe {
            self.memory.zero(range.start..pages.start)?;
            self.memory.zero(pages.end.max(range.start)..range.end)?;
        }
        if pages.is_empty() {
            return Ok(());
        }
        let advice = self.advice();
        if let Some(advice) = advice.filter(|_| self.punch.load(Ordering::Relaxed)) {
            // SAFETY: `pages` is page-aligned (so memmap2 does not widen it) and inside
            // `range`, which no one else touches or refers to during this call. Both
            // advices keep the pages mapped; they only drop their contents, which then
            // read as zeros (a private anonymous page refaults zeroed; `MADV_REMOVE`
            // frees the file's blocks, which read back as a hole).
            let advised = unsafe {
                self.map.unchecked_advise_range(
                    advice,
                    pages.start as usize,
                    (pages.end - pages.start) as usize,
                )
            };
            match advised {
                Ok(()) => return Ok(()),
                Err(e) if unsupported(&e) => self.punch.store(false, Ordering::Relaxed),
                // Refused for this range only (an mlocked range, say): zeros will do.
                Err(_) => {}
            }
        }
        // SAFETY: `pages` is inside `range`, given to us exclusively.
        unsafe { self.memory.zero(pages) }
    }
}

/// Whether an error means "this system or filesystem cannot do that at all", so zeros
/// must do from now on.
pub(super) fn unsupported(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::Unsupported
        || e.raw_os_error() == Some(rustix::io::Errno::OPNOTSUPP.raw_os_error())
        || e.raw_os_error() == Some(rustix::io::Errno::NOSYS.raw_os_error())
}

// SAFETY: `base_address` is always `Some(base)`: the start of a `len_bytes` mapping that
// this value owns, never remaps and unmaps only on drop. Only the byte methods touch it,
// and `discard`'s advices keep every page mapped and readable (as zeros).
unsafe impl MemoryBacking for MmapBacking {}
