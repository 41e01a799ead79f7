//! [`FileBacking`]: positional I/O on a file, with hole punching for discards.

use core::ops::Range;
use std::format;
use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::path::Path;
use std::string::String;

use rustix::fs::OFlags;

use super::{
    Backing, BackingError, BackingOp, MAX_FILE_BYTES, checked_bytes, checked_discard, checked_len,
};
use crate::sync::{AtomicBool, Ordering};

/// A file used through positional reads and writes (`pread`/`pwrite`): a data file, a
/// block device image, anything too large or too remote to map.
///
/// It is not memory-addressable: a [`Region`](crate::Region) over it hands out
/// `read_at`/`write_at` access, never slices.
///
/// `discard` punches a hole (`fallocate(PUNCH_HOLE | KEEP_SIZE)`), which frees the
/// file's blocks and makes the range read as zeros. Where the filesystem cannot punch
/// holes (it answers `EOPNOTSUPP`), and on systems other than Linux, it **writes zeros
/// instead**: the range still reads as zeros, but no space is freed.
/// [`punches_holes`](Self::punches_holes) tells which.
///
/// ```
/// use pinalloc::{Backing, FileBacking};
///
/// let dir = std::env::temp_dir().join(format!("pinalloc-doc-file-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let file = FileBacking::open(dir.join("data"), 1 << 20)?;    // created, 1 MiB
/// let mut out = [0u8; 4];
/// // SAFETY: `file` is not shared, and nothing else writes the file.
/// unsafe {
///     file.write_at(8192, b"blob")?;
///     file.read_at(8192, &mut out)?;
///     file.discard(0..1 << 20)?;
///     file.read_at(8192, &mut out)?;
/// }
/// assert_eq!(out, [0; 4]);
/// # std::fs::remove_dir_all(&dir).unwrap();
/// # Ok::<(), pinalloc::BackingError>(())
/// ```
#[derive(Debug)]
pub struct FileBacking {
    file: File,
    /// The length; changed only by `set_len_bytes`, under the caller's promise.
    len_bytes: core::sync::atomic::AtomicU64,
    /// What `set_len_bytes` may grow it to.
    max_len_bytes: u64,
    /// Cleared after the first punch the filesystem refuses; then `discard` writes zeros.
    punch: AtomicBool,
}

impl FileBacking {
    /// The file at `path`, created if missing and grown with zeros (a hole) to
    /// `len_bytes` if shorter.
    ///
    /// # Errors
    ///
    /// A [`BackingError`] with op [`BackingOp::Open`] when `len_bytes` is zero or
    /// larger than file offsets reach (`i64::MAX`), the file is longer than
    /// `len_bytes` (it is never truncated), or opening or sizing fails.
    ///
    /// ```
    /// use pinalloc::{Backing, FileBacking};
    /// # let dir = std::env::temp_dir().join(format!("pinalloc-doc-fo-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir).unwrap();
    /// let file = FileBacking::open(dir.join("data"), 1 << 20)?;
    /// assert_eq!(file.len_bytes(), 1 << 20);
    /// assert!(FileBacking::open(dir.join("huge"), u64::MAX).is_err());
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// # Ok::<(), pinalloc::BackingError>(())
    /// ```
    pub fn open(path: impl AsRef<Path>, len_bytes: u64) -> Result<Self, BackingError> {
        Self::from_file(open_sized(path.as_ref(), len_bytes)?, len_bytes)
    }

    /// An open file, used as its first `len_bytes` bytes.
    ///
    /// # Errors
    ///
    /// A [`BackingError`] with op [`BackingOp::Open`] and kind `InvalidInput` when the
    /// file cannot serve as `len_bytes` bytes:
    /// - `len_bytes` is zero, or larger than file offsets reach (`i64::MAX`);
    /// - the file is not open for both reading and writing, or is open for appending
    ///   (where Linux's positional writes append instead);
    /// - it is neither a regular file nor a block device, or is shorter than
    ///   `len_bytes` (it is never grown here: [`open`](Self::open) grows a file).
    ///
    /// Any other kind when its flags, metadata or size cannot be read.
    ///
    /// ```
    /// use pinalloc::{Backing, FileBacking};
    /// # let dir = std::env::temp_dir().join(format!("pinalloc-doc-ff-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir).unwrap();
    /// let f = std::fs::OpenOptions::new().read(true).write(true).create(true)
    ///     .truncate(true).open(dir.join("f")).unwrap();
    /// f.set_len(4096).unwrap();
    /// let file = FileBacking::from_file(f.try_clone().unwrap(), 4096)?;
    /// assert_eq!(file.len_bytes(), 4096);
    /// // Longer than the file, or than any file can be: refused.
    /// assert!(FileBacking::from_file(f.try_clone().unwrap(), 8192).is_err());
    /// assert!(FileBacking::from_file(f, u64::MAX).is_err());
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// # Ok::<(), pinalloc::BackingError>(())
    /// ```
    pub fn from_file(file: File, len_bytes: u64) -> Result<Self, BackingError> {
        checked_len(BackingOp::Open, len_bytes, MAX_FILE_BYTES, "a file backing")?;
        let fail = |e: io::Error| BackingError::new(BackingOp::Open, 0..len_bytes, e);
        let refuse = |why: String| fail(io::Error::new(io::ErrorKind::InvalidInput, why));
        let flags = rustix::fs::fcntl_getfl(&file).map_err(|e| fail(e.into()))?;
        if flags & OFlags::RWMODE != OFlags::RDWR {
            return Err(refuse(
                "the file is not open for reading and writing".into(),
            ));
        }
        if flags.contains(OFlags::APPEND) {
            return Err(refuse(
                "the file is open for appending: positional writes would append".into(),
            ));
        }
        let metadata = file.metadata().map_err(fail)?;
        let kind = metadata.file_type();
        let now = if kind.is_file() {
            metadata.len()
        } else if kind.is_block_device() {
            device_len(&file).map_err(fail)?
        } else {
            return Err(refuse(format!(
                "a {kind:?} is neither a regular file nor a block device"
            )));
        };
        if now < len_bytes {
            return Err(refuse(format!(
                "the file is {now} bytes, shorter than the {len_bytes} asked for"
            )));
        }
        Ok(Self {
            file,
            len_bytes: core::sync::atomic::AtomicU64::new(len_bytes),
            max_len_bytes: len_bytes,
            punch: AtomicBool::new(true),
        })
    }

    /// Lets [`set_len_bytes`](Backing::set_len_bytes) grow the file up to
    /// `max_len_bytes` (and shrink it back): a [`Region`](crate::Region) over it can
    /// then [grow](crate::Region::grow). A block device cannot change its length.
    ///
    /// # Errors
    ///
    /// A [`BackingError`] with op [`BackingOp::Open`] when `max_len_bytes` is below
    /// the length or past what file offsets reach (`i64::MAX`), or the backing is a
    /// block device or a file longer than its length (a growth would cut it, and
    /// hand out its old bytes as new).
    ///
    /// ```
    /// use pinalloc::{Backing, FileBacking};
    /// # let dir = std::env::temp_dir().join(format!("pinalloc-doc-fmax-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir).unwrap();
    /// let file = FileBacking::open(dir.join("f"), 4096)?.with_max_len(1 << 30)?;
    /// // SAFETY: nothing refers to the bytes past 4096.
    /// unsafe { file.set_len_bytes(8192)? };
    /// assert_eq!(std::fs::metadata(dir.join("f")).unwrap().len(), 8192);
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// # Ok::<(), pinalloc::BackingError>(())
    /// ```
    pub fn with_max_len(mut self, max_len_bytes: u64) -> Result<Self, BackingError> {
        let len = self.len_bytes();
        checked_len(
            BackingOp::Open,
            max_len_bytes,
            MAX_FILE_BYTES,
            "a file backing",
        )?;
        if max_len_bytes < len {
            return Err(BackingError::new(
                BackingOp::Open,
                0..max_len_bytes,
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("a maximum of {max_len_bytes} bytes is below the length, {len}"),
                ),
            ));
        }
        let fail = |e: io::Error| BackingError::new(BackingOp::Open, 0..max_len_bytes, e);
        let metadata = self.file.metadata().map_err(fail)?;
        if !metadata.file_type().is_file() || metadata.len() != len {
            return Err(fail(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "only a regular file exactly as long as the backing ({len} bytes) can grow"
                ),
            )));
        }
        self.max_len_bytes = max_len_bytes;
        Ok(self)
    }

    /// Whether `discard` still punches holes: `false` once the filesystem refused,
    /// after which discards write zeros.
    ///
    /// ```
    /// # let dir = std::env::temp_dir().join(format!("pinalloc-doc-ph-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir).unwrap();
    /// let file = pinalloc::FileBacking::open(dir.join("f"), 4096)?;
    /// assert!(file.punches_holes()); // until a punch is refused
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// # Ok::<(), pinalloc::BackingError>(())
    /// ```
    pub fn punches_holes(&self) -> bool {
        self.punch.load(Ordering::Relaxed)
    }
}

/// The length of a block device: where a seek to its end lands. The file position is
/// put back after (positional I/O does not use it, but other handles may).
fn device_len(file: &File) -> io::Result<u64> {
    let mut file = file;
    let at = file.stream_position()?;
    let end = file.seek(SeekFrom::End(0))?;
    file.seek(SeekFrom::Start(at))?;
    Ok(end)
}

/// Opens (creating if missing) a read-write file at least `len_bytes` long, growing it
/// if shorter; a longer file is refused rather than truncated, and so is a length
/// that is zero or past what file offsets reach.
pub(super) fn open_sized(path: &Path, len_bytes: u64) -> Result<File, BackingError> {
    let fail = |e: io::Error| BackingError::new(BackingOp::Open, 0..len_bytes, e);
    checked_len(BackingOp::Open, len_bytes, MAX_FILE_BYTES, "a file")?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(fail)?;
    let now = file.metadata().map_err(fail)?.len();
    if now > len_bytes {
        return Err(fail(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} is {now} bytes, longer than the {len_bytes} asked for",
                path.display()
            ),
        )));
    }
    if now < len_bytes {
        file.set_len(len_bytes).map_err(fail)?;
    }
    Ok(file)
}

/// Frees the file's blocks under `range`, which then reads as zeros (Linux's
/// `fallocate(PUNCH_HOLE | KEEP_SIZE)`). Partial pages and blocks at the ends are
/// zeroed in place, through the page cache, without allocating anything.
pub(super) fn punch_hole(file: &File, range: &Range<u64>) -> io::Result<()> {
    falloc(file, Falloc::PunchHole, range)
}

/// Zeros `range` and keeps its blocks allocated (Linux's
/// `fallocate(ZERO_RANGE | KEEP_SIZE)`).
pub(super) fn zero_range(file: &File, range: &Range<u64>) -> io::Result<()> {
    falloc(file, Falloc::ZeroRange, range)
}

/// Allocates the file's blocks under `range` (Linux's `fallocate` with mode 0), so that
/// writing there needs no new space.
pub(super) fn preallocate(file: &File, range: &Range<u64>) -> io::Result<()> {
    falloc(file, Falloc::Allocate, range)
}

/// Writes zeros over `range` with `pwrite`: where a file cannot punch or zero in
/// place, and where a failure (`ENOSPC`) must be an error rather than a signal.
pub(super) fn write_zeros_at(file: &File, range: &Range<u64>) -> io::Result<()> {
    super::write_zeros(range.clone(), |at, zeros| file.write_all_at(zeros, at))
}

/// The `fallocate` modes this crate uses.
#[derive(Debug, Clone, Copy)]
enum Falloc {
    Allocate,
    PunchHole,
    ZeroRange,
}

/// `fallocate(file, mode, range)`, retried when a signal interrupts it.
#[cfg(target_os = "linux")]
fn falloc(file: &File, mode: Falloc, range: &Range<u64>) -> io::Result<()> {
    use rustix::fs::{FallocateFlags, fallocate};
    let flags = match mode {
        Falloc::Allocate => FallocateFlags::empty(),
        Falloc::PunchHole => FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
        Falloc::ZeroRange => FallocateFlags::ZERO_RANGE | FallocateFlags::KEEP_SIZE,
    };
    if range.is_empty() {
        return Ok(());
    }
    loop {
        match fallocate(file, flags, range.start, range.end - range.start) {
            Err(rustix::io::Errno::INTR) => continue,
            done => return done.map_err(io::Error::from),
        }
    }
}

/// `fallocate` is Linux's here; elsewhere discards write zeros and preallocation is
/// refused.
#[cfg(not(target_os = "linux"))]
fn falloc(_file: &File, _mode: Falloc, _range: &Range<u64>) -> io::Result<()> {
    Err(io::ErrorKind::Unsupported.into())
}

/// Whether an error means "this system or filesystem cannot do that at all", so zeros
/// must do from now on.
pub(super) fn unsupported(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::Unsupported
        || e.raw_os_error() == Some(rustix::io::Errno::OPNOTSUPP.raw_os_error())
        || e.raw_os_error() == Some(rustix::io::Errno::NOSYS.raw_os_error())
}

impl Backing for FileBacking {
    fn len_bytes(&self) -> u64 {
        self.len_bytes.load(core::sync::atomic::Ordering::Acquire)
    }

    fn max_len_bytes(&self) -> u64 {
        self.max_len_bytes
    }

    unsafe fn set_len_bytes(&self, new_len_bytes: u64) -> Result<(), BackingError> {
        let len = self.len_bytes();
        let range = len.min(new_len_bytes)..len.max(new_len_bytes);
        if new_len_bytes == len {
            return Ok(());
        }
        if new_len_bytes == 0 || new_len_bytes > self.max_len_bytes {
            return Err(BackingError::new(
                BackingOp::Resize,
                range,
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "a length must be 1..={} bytes, not {new_len_bytes}",
                        self.max_len_bytes
                    ),
                ),
            ));
        }
        // Growing writes a hole (zeros); shrinking drops the bytes cut off, which the
        // caller promised nothing refers to.
        self.file
            .set_len(new_len_bytes)
            .map_err(|e| BackingError::new(BackingOp::Resize, range, e))?;
        self.len_bytes
            .store(new_len_bytes, core::sync::atomic::Ordering::Release);
        Ok(())
    }

    unsafe fn read_at(&self, offset_bytes: u64, buf: &mut [u8]) -> Result<(), BackingError> {
        let range = checked_bytes(BackingOp::Read, offset_bytes, buf.len(), self.len_bytes())?;
        self.file
            .read_exact_at(buf, offset_bytes)
            .map_err(|e| BackingError::new(BackingOp::Read, range, e))
    }

    unsafe fn write_at(&self, offset_bytes: u64, buf: &[u8]) -> Result<(), BackingError> {
        let range = checked_bytes(BackingOp::Write, offset_bytes, buf.len(), self.len_bytes())?;
        self.file
            .write_all_at(buf, offset_bytes)
            .map_err(|e| BackingError::new(BackingOp::Write, range, e))
    }

    fn sync(&self) -> Result<(), BackingError> {
        self.file
            .sync_data()
            .map_err(|e| BackingError::new(BackingOp::Sync, 0..self.len_bytes(), e))
    }

    unsafe fn discard(&self, range: Range<u64>) -> Result<(), BackingError> {
        checked_discard(&range, self.len_bytes())?;
        let fail = |e: io::Error| BackingError::new(BackingOp::Discard, range.clone(), e);
        if range.is_empty() {
            return Ok(());
        }
        if self.punch.load(Ordering::Relaxed) {
            match punch_hole(&self.file, &range) {
                Ok(()) => return Ok(()),
                Err(e) if unsupported(&e) => self.punch.store(false, Ordering::Relaxed),
                Err(e) => return Err(fail(e)),
            }
        }
        write_zeros_at(&self.file, &range).map_err(fail)
    }
}
