//! Backing memory: the bytes behind a [`Region`](crate::Region)'s blocks.
//!
//! A [`Backing`] is a flat array of bytes with positional I/O. Three come with the
//! crate:
//!
//! | backing | memory-addressable | `discard` |
//! |---|---|---|
//! | [`HeapBacking`] | yes ([`MemoryBacking`]) | writes zeros |
//! | [`MmapBacking`] (anonymous) | yes | `madvise(MADV_DONTNEED)`: pages drop, read back as zeros |
//! | [`MmapBacking`] (over a file) | yes | `fallocate(PUNCH_HOLE)` on the file, never a write through the mapping; `pwrite` of zeros where it cannot |
//! | [`MmapBacking`] (preallocated) | yes | zeros in place (`fallocate(ZERO_RANGE)` or `pwrite`): the blocks stay allocated |
//! | [`FileBacking`] | no | `fallocate(PUNCH_HOLE)`; zeros where the filesystem cannot |
//!
//! This module knows bytes only: nothing here knows blocks, allocators or owners. It
//! holds `unsafe` code, as does `region/span.rs`. The contract that makes it sound is
//! the [`Backing`] trait's: its byte-touching methods are `unsafe fn`s whose callers
//! promise that nothing else touches those bytes during the call. The one caller
//! inside the crate is `region/span.rs`, which hands out byte access only
//! for extents the allocator gave to exactly one owner; its `// SAFETY:` comments
//! explain why no safe caller can obtain two `&mut` to the same bytes.

use core::fmt;
use core::ops::Range;
use core::ptr::NonNull;
use std::format;
use std::io;

mod file;
mod heap;
mod memory;
mod mmap;

pub use file::FileBacking;
pub use heap::HeapBacking;
pub use mmap::MmapBacking;

/// A flat array of bytes behind a [`Region`](crate::Region): memory or a file.
///
/// Offsets and lengths are in bytes. Every method documents its contract.
///
/// # Who may touch which bytes
///
/// [`read_at`](Self::read_at), [`write_at`](Self::write_at) and
/// [`discard`](Self::discard) are `unsafe` to call: the caller promises that no other
/// call, thread or reference touches the same bytes while a `write_at` or `discard`
/// runs, and that none writes them while a `read_at` runs. A `Region` keeps that
/// promise for you (it calls them only for bytes one handle owns), so an implementation
/// may use plain loads and stores. Implementing the trait is safe; only
/// [`MemoryBacking`] asks more of an implementation.
///
/// ```
/// use pinalloc::{Backing, HeapBacking};
///
/// let heap = HeapBacking::new(4096)?;
/// let mut out = [0u8; 4];
/// // SAFETY: `heap` is not shared: nothing else touches its bytes.
/// unsafe {
///     heap.write_at(100, b"data")?;
///     heap.read_at(100, &mut out)?;
/// }
/// assert_eq!(&out, b"data");
/// # Ok::<(), pinalloc::BackingError>(())
/// ```
pub trait Backing: Send + Sync + 'static {
    /// The length in bytes. It changes only through
    /// [`set_len_bytes`](Self::set_len_bytes).
    fn len_bytes(&self) -> u64;

    /// The most bytes [`set_len_bytes`](Self::set_len_bytes) may grow the backing to:
    /// by default its length, for a backing that cannot change it.
    ///
    /// ```
    /// use pinalloc::{Backing, HeapBacking, MmapBacking};
    /// assert_eq!(HeapBacking::new(4096)?.max_len_bytes(), 4096);
    /// assert_eq!(MmapBacking::anonymous_growable(4096, 1 << 20)?.max_len_bytes(), 1 << 20);
    /// # Ok::<(), pinalloc::BackingError>(())
    /// ```
    fn max_len_bytes(&self) -> u64 {
        self.len_bytes()
    }

    /// Changes the length to `new_len_bytes`, from 1 to
    /// [`max_len_bytes`](Self::max_len_bytes): bytes below both lengths keep their
    /// contents (and, for memory, their addresses), and bytes added read as zeros. A
    /// [`Region`](crate::Region) calls it to [grow](crate::Region::grow) and
    /// [shrink](crate::Region::shrink).
    ///
    /// # Errors
    ///
    /// A [`BackingError`] with op [`BackingOp::Resize`]: `Unsupported` by default,
    /// `InvalidInput` outside `1..=max_len_bytes`, or the system's error; the length
    /// is then unchanged.
    ///
    /// # Safety
    ///
    /// Nothing reads, writes or refers to the bytes past the smaller of the two
    /// lengths during the call.
    ///
    /// ```
    /// use pinalloc::{Backing, MmapBacking};
    /// let map = MmapBacking::anonymous_growable(4096, 1 << 20)?;
    /// // SAFETY: nothing refers to the bytes past 4096.
    /// unsafe { map.set_len_bytes(8192)? };
    /// assert_eq!(map.len_bytes(), 8192);
    /// # Ok::<(), pinalloc::BackingError>(())
    /// ```
    unsafe fn set_len_bytes(&self, new_len_bytes: u64) -> Result<(), BackingError> {
        let len = self.len_bytes();
        Err(BackingError::new(
            BackingOp::Resize,
            len.min(new_len_bytes)..len.max(new_len_bytes),
            io::Error::new(
                io::ErrorKind::Unsupported,
                "this backing has a fixed length",
            ),
        ))
    }

    /// Reads `buf.len()` bytes at `offset_bytes` into `buf`.
    ///
    /// # Errors
    ///
    /// A [`BackingError`] with op [`BackingOp::Read`] and the requested range when the
    /// range is out of bounds or the I/O fails. `buf` may then be partly written.
    ///
    /// # Safety
    ///
    /// While the call runs, nothing else writes or discards any of these bytes, and
    /// `buf` does not overlap them (nothing holds a mutable reference to them).
    unsafe fn read_at(&self, offset_bytes: u64, buf: &mut [u8]) -> Result<(), BackingError>;

    /// Writes `buf` at `offset_bytes`.
    ///
    /// # Errors
    ///
    /// A [`BackingError`] with op [`BackingOp::Write`] and the requested range when the
    /// range is out of bounds or the I/O fails. The bytes may then be partly written.
    ///
    /// # Safety
    ///
    /// While the call runs, nothing else reads, writes, discards or holds a reference
    /// to any of these bytes.
    unsafe fn write_at(&self, offset_bytes: u64, buf: &[u8]) -> Result<(), BackingError>;

    /// Makes earlier writes durable (fsync, msync); a no-op for memory that is not
    /// persistent.
    ///
    /// # Errors
    ///
    /// A [`BackingError`] with op [`BackingOp::Sync`] over the whole backing.
    fn sync(&self) -> Result<(), BackingError>;

    /// The address of byte 0, for backings that are memory; `None` for others.
    ///
    /// The pointer is only information (a [`Region`](crate::Region) hands it to
    /// devices through pin guards). Slices over it need the stronger promise of
    /// [`MemoryBacking`].
    fn base_address(&self) -> Option<NonNull<u8>> {
        None
    }

    /// Gives the storage of a released byte range back (drop pages, punch a hole), or
    /// zeroes it. Afterwards the range reads as zeros; the default writes zeros, in
    /// chunks. A region calls it from drops too, so it should report trouble as an
    /// error rather than a signal (a file mapping must not write into holes).
    ///
    /// # Errors
    ///
    /// A [`BackingError`] with op [`BackingOp::Discard`] and the range. The contents of
    /// the range are then unspecified.
    ///
    /// # Safety
    ///
    /// As [`write_at`](Self::write_at): nothing else touches these bytes during the call.
    unsafe fn discard(&self, range: Range<u64>) -> Result<(), BackingError> {
        write_zeros(range.clone(), |at, zeros| {
            // SAFETY: the caller promised nothing else touches `range`, and
            // `write_zeros` only writes inside it.
            unsafe { self.write_at(at, zeros) }
        })
        .map_err(|e| e.during(BackingOp::Discard, range))
    }
}

/// A [`Backing`] that is plain memory, so a [`Region`](crate::Region) may hand out
/// slices of it.
///
/// # Safety
///
/// An implementation promises that:
/// - [`base_address`](Backing::base_address) returns `Some`, the same pointer every
///   time, and [`max_len_bytes`](Backing::max_len_bytes) (which never changes) bytes
///   from it are valid, initialized memory for reads and writes for as long as the
///   backing lives, whatever its length;
/// - its `read_at`, `write_at` and `discard` touch exactly the bytes they are given
///   (never rounded out to pages), and nothing else of the backing's own touches that
///   memory, so a region may hand out slices of the rest;
/// - `discard` leaves the range valid memory (reading zeros), never unmapped.
pub unsafe trait MemoryBacking: Backing {}

/// Bytes per chunk when a backing writes zeros instead of discarding.
pub(crate) const ZERO_CHUNK_BYTES: usize = 64 * 1024;

/// What a backing was doing when it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BackingOp {
    /// Creating, opening, sizing or mapping the backing.
    Open,
    /// [`Backing::read_at`].
    Read,
    /// [`Backing::write_at`].
    Write,
    /// [`Backing::sync`].
    Sync,
    /// [`Backing::discard`].
    Discard,
    /// [`Backing::set_len_bytes`].
    Resize,
}

impl fmt::Display for BackingOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Open => "open",
            Self::Read => "read",
            Self::Write => "write",
            Self::Sync => "sync",
            Self::Discard => "discard",
            Self::Resize => "resize",
        })
    }
}

/// A backing's I/O failed, or was asked for bytes it does not have.
///
/// Its message says what failed and where; the cause is its
/// [`source`](core::error::Error::source), never repeated in the message, so a
/// reporter that walks the chain of sources prints each cause once.
///
/// ```
/// use std::error::Error;
/// use pinalloc::{Backing, BackingOp, HeapBacking};
///
/// let heap = HeapBacking::new(64)?;
/// // SAFETY: `heap` is not shared.
/// let err = unsafe { heap.write_at(60, b"too long") }.unwrap_err();
/// assert_eq!(err.op, BackingOp::Write);
/// assert_eq!(err.range, 60..68);
/// assert_eq!(err.source.kind(), std::io::ErrorKind::InvalidInput);
/// assert_eq!(err.to_string(), "backing write of bytes 60..68 failed");
/// assert_eq!(err.source().unwrap().to_string(), "past the end of a 64-byte backing");
/// # Ok::<(), pinalloc::BackingError>(())
/// ```
#[derive(Debug, thiserror::Error)]
#[error("backing {op} of bytes {}..{} failed", range.start, range.end)]
#[non_exhaustive]
pub struct BackingError {
    /// What was being done.
    pub op: BackingOp,
    /// The offending byte range.
    pub range: Range<u64>,
    /// The underlying error.
    #[source]
    pub source: io::Error,
}

impl BackingError {
    /// What kind of failure this is: [`ErrorKind::BadInput`](crate::ErrorKind::BadInput)
    /// when the backing was asked for bytes it does not have (its source's kind is
    /// `InvalidInput`), else [`ErrorKind::Io`](crate::ErrorKind::Io).
    ///
    /// ```
    /// use pinalloc::{BackingError, BackingOp, ErrorKind};
    /// let e = BackingError::new(BackingOp::Read, 0..8, std::io::ErrorKind::Other.into());
    /// assert_eq!(e.kind(), ErrorKind::Io);
    /// let e = BackingError::new(BackingOp::Read, 0..8, std::io::ErrorKind::InvalidInput.into());
    /// assert_eq!(e.kind(), ErrorKind::BadInput);
    /// ```
    #[must_use]
    pub fn kind(&self) -> crate::ErrorKind {
        if self.source.kind() == io::ErrorKind::InvalidInput {
            crate::ErrorKind::BadInput
        } else {
            crate::ErrorKind::Io
        }
    }

    /// An error of `op` over `range`.
    ///
    /// ```
    /// use pinalloc::{BackingError, BackingOp};
    /// let e = BackingError::new(BackingOp::Read, 0..8, std::io::ErrorKind::Other.into());
    /// assert_eq!(e.range, 0..8);
    /// ```
    pub fn new(op: BackingOp, range: Range<u64>, source: io::Error) -> Self {
        Self { op, range, source }
    }

    /// The same cause, reported for a larger operation.
    pub(crate) fn during(self, op: BackingOp, range: Range<u64>) -> Self {
        Self::new(op, range, self.source)
    }
}

/// Writes zeros over `range` through `write(offset, zeros)`, one chunk at a time: the
/// discard of backings that cannot give storage back.
pub(crate) fn write_zeros<E>(
    range: Range<u64>,
    mut write: impl FnMut(u64, &[u8]) -> Result<(), E>,
) -> Result<(), E> {
    let zeros = [0u8; ZERO_CHUNK_BYTES];
    let mut at = range.start;
    while at < range.end {
        let n = (range.end - at).min(ZERO_CHUNK_BYTES as u64) as usize;
        write(at, &zeros[..n])?;
        at += n as u64;
    }
    Ok(())
}

/// The most bytes a file backing can have: file offsets are `i64` (`off_t`).
pub(crate) const MAX_FILE_BYTES: u64 = i64::MAX as u64;

/// Refuses a backing length of zero or above `max_bytes`, with the `InvalidInput` error
/// every backing gives for it; `what` names the backing in the message.
pub(crate) fn checked_len(
    op: BackingOp,
    len_bytes: u64,
    max_bytes: u64,
    what: &str,
) -> Result<(), BackingError> {
    if (1..=max_bytes).contains(&len_bytes) {
        return Ok(());
    }
    Err(BackingError::new(
        op,
        0..len_bytes,
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{what} needs 1..={max_bytes} bytes, not {len_bytes}"),
        ),
    ))
}

/// The byte range `offset..offset + len` if it fits in `len_bytes`; otherwise the
/// `InvalidInput` error every backing gives for it.
pub(crate) fn checked_bytes(
    op: BackingOp,
    offset_bytes: u64,
    len: usize,
    len_bytes: u64,
) -> Result<Range<u64>, BackingError> {
    let end = offset_bytes.checked_add(len as u64);
    match end {
        Some(end) if end <= len_bytes => Ok(offset_bytes..end),
        _ => Err(BackingError::new(
            op,
            offset_bytes..end.unwrap_or(u64::MAX),
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("past the end of a {len_bytes}-byte backing"),
            ),
        )),
    }
}

/// Refuses a discard `range` that is reversed or runs past `len_bytes`, the same way
/// for every backing.
pub(crate) fn checked_discard(range: &Range<u64>, len_bytes: u64) -> Result<(), BackingError> {
    if range.start > range.end || range.end > len_bytes {
        return Err(BackingError::new(
            BackingOp::Discard,
            range.clone(),
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("not a byte range of a {len_bytes}-byte backing"),
            ),
        ));
    }
    Ok(())
}

/// The largest page-aligned part of `range` (empty if there is none), for discards
/// that work on whole pages.
pub(crate) fn page_interior(range: &Range<u64>, page_bytes: u64) -> Range<u64> {
    debug_assert!(page_bytes.is_power_of_two());
    let start = range.start.div_ceil(page_bytes) * page_bytes;
    let end = range.end / page_bytes * page_bytes;
    if start < end {
        start..end
    } else {
        range.start..range.start
    }
}

/// The system page size.
pub(crate) fn page_bytes() -> u64 {
    rustix::param::page_size() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_interior_rounds_inwards() {
        // pages:  |0      |4096   |8192   |12288
        // range:      [100 ............ 9000)
        // interior:       [4096 ...8192)
        assert_eq!(page_interior(&(100..9000), 4096), 4096..8192);
        assert_eq!(page_interior(&(0..8192), 4096), 0..8192);
        assert!(page_interior(&(100..4000), 4096).is_empty());
        assert!(page_interior(&(4000..4200), 4096).is_empty());
    }

    #[test]
    fn checked_discard_refuses_reversed_and_overrunning_ranges() {
        assert!(checked_discard(&(10..15), 15).is_ok());
        assert!(checked_discard(&(15..15), 15).is_ok());
        let reversed = Range { start: 10, end: 5 };
        assert_eq!(checked_discard(&reversed, 15).unwrap_err().range, reversed);
        assert_eq!(
            checked_discard(&(10..16), 15).unwrap_err().op,
            BackingOp::Discard
        );
    }

    #[test]
    fn the_memory_backings_refuse_a_reversed_discard() {
        let reversed = Range { start: 10, end: 5 };
        let heap = HeapBacking::new(4096).unwrap();
        let mmap = MmapBacking::anonymous(4096).unwrap();
        // SAFETY: nothing else touches either backing, and a refused discard writes
        // nothing.
        unsafe {
            assert!(heap.discard(reversed.clone()).is_err());
            assert!(mmap.discard(reversed).is_err());
        }
    }

    #[test]
    fn checked_bytes_refuses_overflow_and_overrun() {
        assert_eq!(checked_bytes(BackingOp::Read, 10, 5, 15).unwrap(), 10..15);
        let e = checked_bytes(BackingOp::Read, 10, 6, 15).unwrap_err();
        assert_eq!(e.range, 10..16);
        let e = checked_bytes(BackingOp::Write, u64::MAX, 2, 15).unwrap_err();
        assert_eq!(e.range, u64::MAX..u64::MAX);
        assert_eq!(e.op, BackingOp::Write);
    }
}
