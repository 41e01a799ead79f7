//! Pin guards of a region: [`Pinned`] (shared, reads) and [`PinnedMut`] (exclusive,
//! reads and writes). Both keep their bytes valid and their blocks out of every other
//! allocation until they drop.

use core::fmt;
use core::ptr::NonNull;

use super::span::Lent;
use super::{Refused, RegionError};
use crate::Extent;
use crate::backing::{Backing, MemoryBacking};

/// Accessors both guards share. A guard is a `Lent`: the lent bytes and the allocator
/// pin over their blocks, which it drops (after discarding what only it held) when it
/// drops.
macro_rules! guard_common {
    ($guard:ident, $make:literal) => {
        impl<B: Backing> $guard<B> {
            /// The pinned blocks: the allocation's when the guard was made.
            ///
            #[doc = concat!("
```
# use pinalloc::{HeapBacking, Region, Request};
# let region = Region::new(HeapBacking::new(8 * 512)?, 512)?;
let mut a = region.allocate(Request::new(2))?;
let guard = a.", $make, "()?;
assert_eq!(guard.extent(), a.extent());
# Ok::<(), Box<dyn std::error::Error>>(())
```")]
            pub fn extent(&self) -> Extent {
                self.0.extent()
            }

            /// The allocator pin the guard holds, as
            /// [`Region::pins`](crate::Region::pins) lists it.
            ///
            #[doc = concat!("
```
# use pinalloc::{HeapBacking, Region, Request};
# let region = Region::new(HeapBacking::new(8 * 512)?, 512)?;
let mut a = region.allocate(Request::new(2))?;
let guard = a.", $make, "()?;
assert_eq!(region.pins()[0].id, guard.id());
# Ok::<(), Box<dyn std::error::Error>>(())
```")]
            #[must_use]
            pub fn id(&self) -> crate::SharedPinId {
                self.0.pin_id()
            }

            /// A 64-bit token for the guard's pin, for an I/O completion's `user_data`
            /// ([`SharedAllocator::pin_token`](crate::SharedAllocator::pin_token));
            /// [`Region::pin_of_token`](crate::Region::pin_of_token) turns it back
            /// into [`id`](Self::id) while the guard lives, and refuses it after.
            ///
            #[doc = concat!("
```
# use pinalloc::{HeapBacking, Region, Request};
# let region = Region::new(HeapBacking::new(8 * 512)?, 512)?;
let mut a = region.allocate(Request::new(2))?;
let guard = a.", $make, "()?;
let user_data = guard.token();
assert_eq!(region.pin_of_token(user_data)?, guard.id());
drop(guard);
assert!(region.pin_of_token(user_data).is_err());
# Ok::<(), Box<dyn std::error::Error>>(())
```")]
            #[must_use]
            pub fn token(&self) -> u64 {
                self.0.token()
            }

            /// Where the bytes start in the backing.
            ///
            #[doc = concat!("
```
# use pinalloc::{HeapBacking, Region, Request};
# let region = Region::new(HeapBacking::new(8 * 512)?, 512)?;
let mut a = region.allocate(Request::new(2))?;
let guard = a.", $make, "()?;
assert_eq!(guard.offset_bytes(), a.offset_bytes());
# Ok::<(), Box<dyn std::error::Error>>(())
```")]
            pub fn offset_bytes(&self) -> u64 {
                self.0.bytes().start
            }

            /// How many bytes the guard covers.
            ///
            #[doc = concat!("
```
# use pinalloc::{HeapBacking, Region, Request};
# let region = Region::new(HeapBacking::new(8 * 512)?, 512)?;
let mut a = region.allocate(Request::new(2))?;
let guard = a.", $make, "()?;
assert_eq!(guard.len_bytes(), 1024);
# Ok::<(), Box<dyn std::error::Error>>(())
```")]
            pub fn len_bytes(&self) -> u64 {
                let bytes = self.0.bytes();
                bytes.end - bytes.start
            }

            /// The address of the first byte, for a device (`None` for a file backing).
            /// It stays valid, and its `len_bytes` bytes are never handed to another
            /// allocation, until the guard drops. Writing through it is only for a
            /// [`PinnedMut`]'s device.
            ///
            #[doc = concat!("
```
# use pinalloc::{HeapBacking, Region, Request};
# let region = Region::new(HeapBacking::new(8 * 512)?, 512)?;
let mut a = region.allocate(Request::new(2))?;
let guard = a.", $make, "()?;
let device_address = guard.as_ptr().unwrap(); // heap memory has an address
assert_eq!(device_address.as_ptr() as usize % 512, 0);
# Ok::<(), Box<dyn std::error::Error>>(())
```")]
            pub fn as_ptr(&self) -> Option<NonNull<u8>> {
                self.0.address()
            }

            /// Reads `buf.len()` bytes at `offset_bytes` from the start of the guard.
            ///
            /// # Errors
            ///
            /// [`RegionError::AccessOutOfBounds`] past the end; [`RegionError::Backing`] when
            /// the I/O fails.
            ///
            #[doc = concat!("
```
# use pinalloc::{HeapBacking, Region, Request};
# let region = Region::new(HeapBacking::new(8 * 512)?, 512)?;
let mut a = region.allocate(Request::new(2))?;
let guard = a.", $make, "()?;
let mut out = [1; 4];
guard.read_at(1020, &mut out)?;
assert_eq!(out, [0; 4]);
assert!(guard.read_at(1021, &mut out).is_err());
# Ok::<(), Box<dyn std::error::Error>>(())
```")]
            pub fn read_at(&self, offset_bytes: u64, buf: &mut [u8]) -> Result<(), RegionError> {
                self.0
                    .read_at(offset_bytes, buf)
                    .map_err(|r| RegionError::refused(r, self.0.extent()))
            }

            /// Drops the guard, reporting a failed discard: on error, the guard comes
            /// back still pinned (the bytes only it held are then unspecified);
            /// dropping it tries the discard once more and, if that fails too, unpins
            /// without it.
            ///
            /// # Errors
            ///
            /// [`RegionError::Backing`] when discarding the bytes only this guard still
            /// held fails.
            ///
            #[doc = concat!("
```
# use pinalloc::{HeapBacking, Region, Request};
# let region = Region::new(HeapBacking::new(8 * 512)?, 512)?;
let mut a = region.allocate(Request::new(2))?;
let guard = a.", $make, "()?;
a.free()?;                        // Deferred under the guard
guard.unpin()?;                   // discarded, then Free
assert_eq!(region.stats().space.free_blocks, 8);
# Ok::<(), Box<dyn std::error::Error>>(())
```")]
            #[allow(clippy::result_large_err)] // the guard comes back by value; a cold path
            pub fn unpin(self) -> Result<(), Refused<Self>> {
                let discard = self.0.discards();
                let extent = self.0.extent();
                self.0
                    .leave(discard)
                    .map_err(|(lent, r)| Refused::new(RegionError::refused(r, extent), Self(lent)))
            }
        }

        impl<B: MemoryBacking> $guard<B> {
            /// The pinned bytes, as a slice.
            ///
            #[doc = concat!("
```
# use pinalloc::{HeapBacking, Region, Request};
# let region = Region::new(HeapBacking::new(8 * 512)?, 512)?;
let mut a = region.allocate(Request::new(2))?;
let guard = a.", $make, "()?;
assert_eq!(guard.as_slice(), [0; 1024]);
# Ok::<(), Box<dyn std::error::Error>>(())
```")]
            pub fn as_slice(&self) -> &[u8] {
                self.0.as_slice()
            }
        }

        impl<B: Backing> fmt::Debug for $guard<B> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($guard))
                    .field("extent", &self.0.extent())
                    .field("pin", &self.0.pin_id())
                    .finish()
            }
        }
    };
}

/// A shared pin of an [`Allocation`](crate::Allocation)'s blocks, from
/// [`Allocation::pin`](crate::Allocation::pin): reads the bytes (slices for memory
/// backings, a pointer for a device that reads), and keeps them valid and the blocks
/// out of every other allocation until it drops, even if the allocation is freed or
/// truncated meanwhile. It owns what it needs, so it may outlive the allocation and
/// the [`Region`](crate::Region) value.
///
/// ```
/// use pinalloc::{HeapBacking, Region, Request};
///
/// let region = Region::new(HeapBacking::new(64 * 4096)?, 4096)?;
/// let mut a = region.allocate(Request::new(1))?;
/// a.as_mut_slice()?.fill(42);
/// let pin = a.pin()?;
/// drop(a);                                   // freed: Deferred while pinned
/// let device = std::thread::spawn(move || {  // the guard moves to the device thread
///     assert!(pin.as_slice().iter().all(|&b| b == 42));
///     assert_eq!(pin.len_bytes(), 4096);
///     assert!(pin.as_ptr().is_some());
/// });
/// device.join().unwrap();                    // guard dropped: the block is Free
/// assert_eq!(region.stats().space.free_blocks, 64);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Pinned<B: Backing>(Lent<B>);

guard_common!(Pinned, "pin");

impl<B: Backing> Pinned<B> {
    pub(super) fn new(lent: Lent<B>) -> Self {
        Self(lent)
    }

    /// Another shared guard over the same bytes, with its own pin.
    ///
    /// # Errors
    ///
    /// [`RegionError::Pin`] if the allocator refuses the pin.
    ///
    /// ```
    /// # use pinalloc::{HeapBacking, Region, Request};
    /// # let region = Region::new(HeapBacking::new(4096)?, 512)?;
    /// let a = region.allocate(Request::new(2))?;
    /// let p = a.pin()?;
    /// let q = p.try_clone()?;
    /// drop((a, p));
    /// assert_eq!(region.stats().space.deferred_blocks, 2); // q still holds them
    /// drop(q);
    /// assert_eq!(region.stats().space.free_blocks, 8);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_clone(&self) -> Result<Self, RegionError> {
        let lent = self
            .0
            .share()
            .map_err(|r| RegionError::refused(r, self.0.extent()))?;
        Ok(Self(lent))
    }
}

/// An exclusive pin of an [`Allocation`](crate::Allocation)'s blocks, from
/// [`Allocation::pin_mut`](crate::Allocation::pin_mut), for a device that writes: as
/// [`Pinned`], and it also writes the bytes, while the allocation can neither read
/// nor write them until it drops.
///
/// ```
/// use pinalloc::{HeapBacking, Region, Request};
///
/// let region = Region::new(HeapBacking::new(64 * 4096)?, 4096)?;
/// let mut a = region.allocate(Request::new(2))?;
/// let mut dma = a.pin_mut()?;
/// a.truncate(1)?;                           // the file shrinks under the I/O
/// dma.as_mut_slice()[4096..].fill(9);       // the device still owns both blocks
/// let mut out = [0; 2];
/// dma.read_at(8190, &mut out)?;
/// assert_eq!(out, [9, 9]);
/// drop(dma);
/// assert_eq!(region.stats().space.free_blocks, 63);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct PinnedMut<B: Backing>(Lent<B>);

guard_common!(PinnedMut, "pin_mut");

impl<B: Backing> PinnedMut<B> {
    pub(super) fn new(lent: Lent<B>) -> Self {
        Self(lent)
    }

    /// Writes `buf` at `offset_bytes` from the start of the guard.
    ///
    /// # Errors
    ///
    /// [`RegionError::AccessOutOfBounds`] past the end; [`RegionError::Backing`] when the
    /// I/O fails (the bytes may then be partly written).
    ///
    /// ```
    /// # use pinalloc::{HeapBacking, Region, Request};
    /// # let region = Region::new(HeapBacking::new(4096)?, 512)?;
    /// let mut a = region.allocate(Request::new(1))?;
    /// let mut dma = a.pin_mut()?;
    /// dma.write_at(0, b"payload")?;
    /// assert!(dma.write_at(510, b"payload").is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn write_at(&mut self, offset_bytes: u64, buf: &[u8]) -> Result<(), RegionError> {
        let extent = self.0.extent();
        self.0
            .write_at(offset_bytes, buf)
            .map_err(|r| RegionError::refused(r, extent))
    }
}

impl<B: MemoryBacking> PinnedMut<B> {
    /// The pinned bytes, as a mutable slice.
    ///
    /// ```
    /// # use pinalloc::{HeapBacking, Region, Request};
    /// # let region = Region::new(HeapBacking::new(4096)?, 512)?;
    /// let mut a = region.allocate(Request::new(1))?;
    /// let mut dma = a.pin_mut()?;
    /// dma.as_mut_slice().fill(3);
    /// assert_eq!(dma.as_slice()[0], 3);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        self.0.as_mut_slice().expect("an exclusive lend writes")
    }
}
