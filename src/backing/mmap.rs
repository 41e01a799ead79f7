//! [`MmapBacking`]: a memory mapping through `memmap2`, anonymous or over a file.

use core::ops::Range;
use core::ptr::NonNull;
use std::format;
use std::fs::File;
use std::io;
use std::path::Path;
use std::string::String;

#[cfg(target_os = "linux")]
use memmap2::UncheckedAdvice;
use memmap2::{MmapMut, MmapOptions, MmapRaw};

use super::file::{self, open_sized, unsupported};
use super::memory::Memory;
use super::{
    Backing, BackingError, BackingOp, MAX_FILE_BYTES, MemoryBacking, checked_discard, checked_len,
    page_bytes, page_interior,
};
use crate::sync::{AtomicBool, Ordering};

/// A memory mapping, anonymous or shared over a file: memory a device can DMA into,
/// whose released pages go back to the kernel.
///
/// `discard` makes the range read as zeros:
/// - an anonymous mapping drops the whole pages inside the range
///   (`madvise(MADV_DONTNEED)`; they refault zeroed) and writes zeros over the partial
///   pages at its ends;
/// - a file mapping punches a hole in the file through its descriptor
///   (`fallocate(PUNCH_HOLE | KEEP_SIZE)`), partial pages included, which gives the
///   blocks back to the filesystem. Where the filesystem cannot (see
///   [`punches_holes`](Self::punches_holes)), it writes zeros with `pwrite`;
/// - a [preallocated](Self::open_preallocated) file mapping keeps its blocks: it
///   zeroes the range in place (`fallocate(ZERO_RANGE | KEEP_SIZE)`, or `pwrite` of
///   zeros where the filesystem has no `ZERO_RANGE`, as on tmpfs).
///
/// A discard never writes through a file mapping, so it cannot fault; a failure
/// (`ENOSPC` from `pwrite`, an I/O error) is returned as an error, and from a drop
/// counted in [`RegionStats::discard_failures`](crate::RegionStats). On Unix
/// systems other than Linux, every discard writes zeros.
///
/// # A full filesystem
///
/// **A full disk is a signal, not an error, for an access through a file mapping.**
/// [`open`](Self::open) grows the file sparse and discards punch holes, so touching a
/// page that is a hole may need a new page or disk block at page-fault time; if the
/// filesystem has none (`ENOSPC`, a quota), the kernel sends `SIGBUS`, which kills the
/// process. Without preallocation these can raise it, on a full filesystem, when the
/// bytes are in a hole (never written since the file was created, or discarded since):
/// - writes through the mapping: [`Backing::write_at`], and a region's `write_at`,
///   `as_mut_slice` and pin guards' slices and device pointers;
/// - on tmpfs (and other memory filesystems), reads through the mapping too
///   ([`Backing::read_at`], `read_at`, `as_slice`), since a read fault allocates a page
///   there; disk filesystems map a hole's reads to a shared zero page.
///
/// Frees, truncates, discards and the drops of handles and pin guards never raise it.
/// To rule the signal out for the accesses too, map the file with
/// [`open_preallocated`](Self::open_preallocated), which allocates every block up front
/// (and fails with an error if the filesystem cannot), and whose discards keep the
/// blocks allocated; or use [`FileBacking`], whose writes return the error.
/// Copy-on-write filesystems (btrfs, ZFS) may need new space for any write, even over
/// preallocated blocks, so there only [`FileBacking`] is safe from it. As
/// [`open`](Self::open) says, a file truncated under the mapping raises it too.
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
    /// Whether every block of the file was allocated at open; then discards zero in
    /// place and keep the blocks. Always `false` for an anonymous mapping.
    preallocated: bool,
    /// Whether its length may change: an [`anonymous_growable`](Self::anonymous_growable)
    /// mapping.
    growable: bool,
    /// Whether discards still work in place (`MADV_DONTNEED`, `PUNCH_HOLE`, or for a
    /// preallocated file `ZERO_RANGE`): `false` off Linux, and cleared after the first
    /// time the system answers that it cannot; then `discard` writes zeros.
    in_place: AtomicBool,
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
        Self::from_map(MmapRaw::from(map), len_bytes, len_bytes, None, false)
    }

    /// A private anonymous mapping of `len_bytes` zeroed bytes that
    /// [`set_len_bytes`](Backing::set_len_bytes) grows and shrinks in place, up to
    /// `max_len_bytes`: the whole of it is mapped now (address space only: pages are
    /// taken as they are first touched), so its address never changes and pointers
    /// into it stay valid across growth. A shrink drops the pages cut off.
    ///
    /// # Errors
    ///
    /// A [`BackingError`] with op [`BackingOp::Open`] when `len_bytes` is zero, larger
    /// than `max_len_bytes`, or `max_len_bytes` does not fit the address space, or
    /// `mmap` fails.
    ///
    /// ```
    /// use pinalloc::{Backing, MmapBacking};
    /// let map = MmapBacking::anonymous_growable(1 << 20, 1 << 24)?;
    /// assert_eq!((map.len_bytes(), map.max_len_bytes()), (1 << 20, 1 << 24));
    /// assert!(MmapBacking::anonymous_growable(8192, 4096).is_err());
    /// # Ok::<(), pinalloc::BackingError>(())
    /// ```
    pub fn anonymous_growable(len_bytes: u64, max_len_bytes: u64) -> Result<Self, BackingError> {
        map_len(len_bytes)?;
        if len_bytes > max_len_bytes {
            return Err(opening(
                max_len_bytes,
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{len_bytes} bytes do not fit a maximum of {max_len_bytes}"),
                ),
            ));
        }
        let max = map_len(max_len_bytes)?;
        // No swap reserved for the whole maximum (`MAP_NORESERVE`): pages are charged
        // as they are touched, so a large maximum costs address space only.
        let map = MmapOptions::new()
            .len(max)
            .no_reserve_swap()
            .map_anon()
            .map_err(|e| opening(max_len_bytes, e))?;
        let mut growable =
            Self::from_map(MmapRaw::from(map), len_bytes, max_len_bytes, None, false)?;
        growable.growable = true;
        Ok(growable)
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
        Self::map_file(path.as_ref(), len_bytes, false)
    }

    /// As [`open`](Self::open), and then allocates every block of the file's first
    /// `len_bytes` (`fallocate`, mode 0), so that no access through the mapping can
    /// fault for lack of space (see [A full filesystem](Self#a-full-filesystem)).
    /// Discards then zero in place and keep the blocks allocated
    /// (`fallocate(ZERO_RANGE)`, or `pwrite` of zeros where the filesystem has no
    /// `ZERO_RANGE`), so the file never gives space back while it is mapped.
    ///
    /// The file's contents are kept; only its holes are allocated (reading as zeros).
    ///
    /// # Errors
    ///
    /// As [`open`](Self::open); and a [`BackingError`] with op [`BackingOp::Open`] when
    /// the filesystem has no room for the blocks (kind `StorageFull`, `ENOSPC`) or
    /// cannot preallocate at all (kind `Unsupported`: off Linux, or a filesystem
    /// without `fallocate`). The file is then left created and sized, but sparse.
    ///
    /// # Safety
    ///
    /// As [`open`](Self::open).
    ///
    /// ```
    /// use pinalloc::{MmapBacking, Region, Request};
    ///
    /// let dir = std::env::temp_dir().join(format!("pinalloc-doc-prealloc-{}", std::process::id()));
    /// std::fs::create_dir_all(&dir).unwrap();
    /// // SAFETY: no other process or mapping touches this file while it is mapped.
    /// let backing = unsafe { MmapBacking::open_preallocated(dir.join("region"), 1 << 20)? };
    /// assert!(backing.is_preallocated());
    /// assert!(!backing.punches_holes());      // discards zero in place
    /// let region = Region::new(backing, 512)?;
    /// let mut a = region.allocate(Request::new(1))?;
    /// a.as_mut_slice()?.fill(7);              // its block exists: no fault, even on a full disk
    /// drop(a);                                // zeroed, and the block stays allocated
    /// # drop(region);
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub unsafe fn open_preallocated(
        path: impl AsRef<Path>,
        len_bytes: u64,
    ) -> Result<Self, BackingError> {
        Self::map_file(path.as_ref(), len_bytes, true)
    }

    /// The mapping of [`open`](Self::open) and
    /// [`open_preallocated`](Self::open_preallocated); the caller keeps their promise.
    fn map_file(path: &Path, len_bytes: u64, preallocate: bool) -> Result<Self, BackingError> {
        let len = map_len(len_bytes)?;
        let file = open_sized(path, len_bytes)?;
        if preallocate {
            file::preallocate(&file, &(0..len_bytes)).map_err(|e| opening(len_bytes, e))?;
        }
        let map = MmapOptions::new()
            .len(len)
            .map_raw(&file)
            .map_err(|e| opening(len_bytes, e))?;
        Self::from_map(map, len_bytes, len_bytes, Some(file), preallocate)
    }

    fn from_map(
        map: MmapRaw,
        len_bytes: u64,
        max_len_bytes: u64,
        file: Option<File>,
        preallocated: bool,
    ) -> Result<Self, BackingError> {
        let base = NonNull::new(map.as_mut_ptr())
            .ok_or_else(|| opening(len_bytes, io::ErrorKind::Other.into()))?;
        debug_assert_eq!(map.len() as u64, max_len_bytes);
        Ok(Self {
            map,
            memory: Memory::new(base, len_bytes, max_len_bytes),
            growable: false,
            file,
            preallocated,
            in_place: AtomicBool::new(cfg!(target_os = "linux")),
        })
    }

    /// Whether `discard` gives storage back (drops pages, punches holes): `false` for
    /// a [preallocated](Self::open_preallocated) mapping, which keeps its blocks,
    /// off Linux, and once the system answered that it cannot (`EOPNOTSUPP`,
    /// `ENOSYS`); discards then write zeros.
    ///
    /// ```
    /// use pinalloc::MmapBacking;
    /// assert!(MmapBacking::anonymous(4096)?.punches_holes());
    /// # Ok::<(), pinalloc::BackingError>(())
    /// ```
    pub fn punches_holes(&self) -> bool {
        !self.preallocated && self.in_place.load(Ordering::Relaxed)
    }

    /// Whether this maps a file whose blocks were allocated up front
    /// ([`open_preallocated`](Self::open_preallocated)).
    ///
    /// ```
    /// use pinalloc::MmapBacking;
    /// assert!(!MmapBacking::anonymous(4096)?.is_preallocated());
    /// # Ok::<(), pinalloc::BackingError>(())
    /// ```
    pub fn is_preallocated(&self) -> bool {
        self.preallocated
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
    /// Discards `range` (non-empty, in bounds) of an anonymous mapping: zeros over the
    /// partial pages at its ends, `MADV_DONTNEED` for the whole pages between (zeros
    /// where the advice is refused).
    ///
    /// # Safety
    ///
    /// As [`Backing::discard`].
    unsafe fn discard_anonymous(&self, range: Range<u64>) -> Result<(), BackingError> {
        debug_assert!(self.file.is_none());
        let pages = page_interior(&range, page_bytes());
        // SAFETY: the partial pages at the ends lie inside `range`, which the caller
        // gave us exclusively. The memory is private and anonymous: a write fault
        // there needs a page of memory, never a file block, so it cannot raise SIGBUS.
        unsafe {
            self.memory.zero(range.start..pages.start)?;
            self.memory.zero(pages.end.max(range.start)..range.end)?;
        }
        if pages.is_empty() {
            return Ok(());
        }
        #[cfg(target_os = "linux")]
        if self.in_place.load(Ordering::Relaxed) {
            // SAFETY: `pages` is page-aligned (so memmap2 does not widen it) and inside
            // `range`, which no one else touches or refers to during this call.
            // `MADV_DONTNEED` keeps the pages of a private anonymous mapping mapped;
            // it only drops their contents, and they refault zeroed.
            let advised = unsafe {
                self.map.unchecked_advise_range(
                    UncheckedAdvice::DontNeed,
                    pages.start as usize,
                    (pages.end - pages.start) as usize,
                )
            };
            match advised {
                Ok(()) => return Ok(()),
                Err(e) if unsupported(&e) => self.in_place.store(false, Ordering::Relaxed),
                // Refused for this range only (an mlocked range, say): zeros will do.
                Err(_) => {}
            }
        }
        // SAFETY: `pages` is inside `range`, given to us exclusively.
        unsafe { self.memory.zero(pages) }
    }

    /// Discards `range` (non-empty, in bounds) of the mapped `file` through the file
    /// descriptor, never through the mapping, so that a page that is a hole is never
    /// faulted in (on a full filesystem that fault is a `SIGBUS`): a punched hole, or
    /// for a preallocated file zeros in place; `pwrite` of zeros where the filesystem
    /// can do neither, whose `ENOSPC` is an error.
    ///
    /// # Safety
    ///
    /// As [`Backing::discard`]: the mapping shows the file's bytes, so changing them
    /// through the descriptor changes memory that nothing else may touch or refer to
    /// during the call.
    unsafe fn discard_file(&self, file: &File, range: Range<u64>) -> Result<(), BackingError> {
        let fail = |e: io::Error| BackingError::new(BackingOp::Discard, range.clone(), e);
        if self.in_place.load(Ordering::Relaxed) {
            let done = if self.preallocated {
                file::zero_range(file, &range)
            } else {
                file::punch_hole(file, &range)
            };
            match done {
                Ok(()) => return Ok(()),
                Err(e) if unsupported(&e) => self.in_place.store(false, Ordering::Relaxed),
                Err(e) if !self.preallocated => return Err(fail(e)),
                // `ZERO_RANGE` may fail where zeros written over allocated blocks do
                // not. It may also have freed the blocks before failing to allocate
                // them again (xfs does both steps): allocate them again first, so
                // that the file never keeps a hole a mapping could fault on.
                Err(_) => file::preallocate(file, &range).map_err(fail)?,
            }
        }
        file::write_zeros_at(file, &range).map_err(fail)
    }
}

/// `len_bytes` as a mapping's length: 1 to `isize::MAX` bytes (the most a Rust slice
/// may span, and within file offsets' reach), or the error.
fn map_len(len_bytes: u64) -> Result<usize, BackingError> {
    let max_bytes = (isize::MAX as u64).min(MAX_FILE_BYTES);
    checked_len(BackingOp::Open, len_bytes, max_bytes, "a mapping")?;
    // At most `isize::MAX`, so it fits.
    Ok(len_bytes as usize)
}

fn opening(len_bytes: u64, source: io::Error) -> BackingError {
    BackingError::new(BackingOp::Open, 0..len_bytes, source)
}

impl core::fmt::Debug for MmapBacking {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("MmapBacking")
            .field("len_bytes", &self.memory.len_bytes())
            .field("file", &self.file.is_some())
            .field("preallocated", &self.preallocated)
            .field("punches_holes", &self.punches_holes())
            .finish()
    }
}

impl Backing for MmapBacking {
    fn len_bytes(&self) -> u64 {
        self.memory.len_bytes()
    }

    fn max_len_bytes(&self) -> u64 {
        self.memory.max_len_bytes
    }

    unsafe fn set_len_bytes(&self, new_len_bytes: u64) -> Result<(), BackingError> {
        let len = self.memory.len_bytes();
        let range = len.min(new_len_bytes)..len.max(new_len_bytes);
        let refuse = |kind: io::ErrorKind, why: String| {
            Err(BackingError::new(
                BackingOp::Resize,
                range.clone(),
                io::Error::new(kind, why),
            ))
        };
        if new_len_bytes == len {
            return Ok(());
        }
        if !self.growable {
            return refuse(
                io::ErrorKind::Unsupported,
                "only a growable anonymous mapping changes its length".into(),
            );
        }
        if new_len_bytes == 0 || new_len_bytes > self.memory.max_len_bytes {
            return refuse(
                io::ErrorKind::InvalidInput,
                format!(
                    "a length must be 1..={} bytes, not {new_len_bytes}",
                    self.memory.max_len_bytes
                ),
            );
        }
        if new_len_bytes < len {
            // Zero what is cut off, so that bytes past the length always read as
            // zeros when a later growth takes them back.
            // SAFETY: the caller promised nothing touches or refers to the bytes past
            // the new length; they are inside the current length.
            unsafe { self.discard_anonymous(range.clone()) }
                .map_err(|e| BackingError::new(BackingOp::Resize, range.clone(), e.source))?;
        }
        self.memory.set_len_bytes(new_len_bytes);
        Ok(())
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
            .map_err(|e| BackingError::new(BackingOp::Sync, 0..self.memory.len_bytes(), e))
    }

    fn base_address(&self) -> Option<NonNull<u8>> {
        Some(self.memory.base)
    }

    unsafe fn discard(&self, range: Range<u64>) -> Result<(), BackingError> {
        checked_discard(&range, self.memory.len_bytes())?;
        if range.is_empty() {
            return Ok(());
        }
        match &self.file {
            // SAFETY: the caller's promise (no one else touches `range`) passed on.
            None => unsafe { self.discard_anonymous(range) },
            // SAFETY: as above.
            Some(file) => unsafe { self.discard_file(file, range) },
        }
    }
}

// SAFETY: `base_address` is always `Some(base)`: the start of a `max_len_bytes` mapping
// that this value owns, never remaps and unmaps only on drop (a change of length only
// moves the bound the byte methods check). Only the byte methods touch it,
// and `discard` keeps every page mapped and readable (as zeros): `MADV_DONTNEED` on a
// private anonymous mapping drops contents only, and a file's punched or zeroed range
// stays mapped.
unsafe impl MemoryBacking for MmapBacking {}
