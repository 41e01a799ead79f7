//! A compact, versioned, checksummed encoding of an extent list: the durable free
//! list a filesystem writes with each commit and reads back at mount.
//!
//! # Format (version 1)
//!
//! | bytes | field |
//! |---|---|
//! | 4 | magic `PAFL` |
//! | 1 | version, 1 |
//! | 8 | total length of the encoding in bytes, little-endian |
//! | varint | capacity of the space in blocks |
//! | varint | generation: the caller's sequence number (say, the committed epoch) |
//! | varint | number of extents |
//! | varint, varint | per extent, in address order: its start minus the previous extent's start (the first: its start), then its length |
//! | 4 | CRC-32C of everything before, little-endian |
//!
//! Varints are LEB128: seven bits a byte, low first. Starts are stored as deltas from
//! the previous start, so small gaps and lengths take a byte each.
//! The total length comes first so that a torn write (a truncated buffer) is told from
//! a corrupted one; the checksum catches the rest before any field is believed.
//!
//! ```
//! use pinalloc::{Extent, ExtentAllocator, Request};
//! use pinalloc::persist::{self, FreeList};
//!
//! let mut alloc = ExtentAllocator::new(1 << 20);
//! alloc.allocate(Request::new(100))?;
//! alloc.commit(1)?;
//! let bytes = persist::encode(&FreeList::new(alloc.capacity_blocks(), 1, alloc.durable_free_extents()))?;
//! // ... write `bytes`, crash, read them back ...
//! let list = persist::decode(&bytes)?;
//! let remounted = ExtentAllocator::from_free_extents(list.capacity, list.extents)?;
//! assert_eq!(remounted.free_extents().collect::<Vec<_>>(), [Extent::new(100, (1 << 20) - 100)]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use alloc::vec::Vec;

use crate::{Extent, ExtentError};

/// The encoding's first four bytes.
pub const MAGIC: [u8; 4] = *b"PAFL";

/// The version this build writes and reads.
pub const VERSION: u8 = 1;

/// Magic, version and total length.
const HEADER: usize = 4 + 1 + 8;
const CHECKSUM: usize = 4;

/// An extent list with the space it belongs to.
///
/// ```
/// use pinalloc::{Extent, persist::FreeList};
/// let list = FreeList::new(64, 3, vec![Extent::new(8, 8)]);
/// assert_eq!(list.blocks(), 8);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct FreeList {
    /// Blocks in the space.
    pub capacity: u64,
    /// The caller's sequence number, stored as given: with two copies written in
    /// turn, a mount takes the valid one with the higher generation.
    pub generation: u64,
    /// Disjoint, non-empty extents inside the space, in address order.
    pub extents: Vec<Extent>,
}

impl FreeList {
    /// A list of `extents` in a space of `capacity` blocks, stamped `generation`.
    ///
    /// ```
    /// use pinalloc::{Extent, persist::FreeList};
    /// let list = FreeList::new(64, 3, vec![Extent::new(8, 8)]);
    /// assert_eq!((list.capacity, list.generation, list.extents.len()), (64, 3, 1));
    /// ```
    #[must_use]
    pub fn new(capacity: u64, generation: u64, extents: Vec<Extent>) -> Self {
        FreeList {
            capacity,
            generation,
            extents,
        }
    }

    /// Blocks the extents cover, saturating at `u64::MAX` for a list built by hand
    /// whose lengths overflow (a decoded list never does).
    ///
    /// ```
    /// use pinalloc::{Extent, persist::FreeList};
    /// assert_eq!(FreeList::new(9, 0, vec![Extent::new(0, 2), Extent::new(5, 3)]).blocks(), 5);
    /// let huge = vec![Extent::new(0, u64::MAX), Extent::new(0, u64::MAX)];
    /// assert_eq!(FreeList::new(0, 0, huge).blocks(), u64::MAX);
    /// ```
    #[must_use]
    pub fn blocks(&self) -> u64 {
        self.extents
            .iter()
            .fold(0, |sum, e| sum.saturating_add(e.len))
    }
}

/// Why an extent list cannot be encoded, or an encoding cannot be decoded. Each kind
/// of damage has its own variant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PersistError {
    /// The buffer ends before the encoding does: a torn or cut-short write.
    #[error("truncated: the encoding needs {needed} bytes, the buffer has {got}")]
    Truncated {
        /// Bytes the encoding needs (at least).
        needed: u64,
        /// Bytes the buffer has.
        got: usize,
    },
    /// The buffer goes on past the encoding's stated length.
    #[error("trailing bytes: the encoding is {expected} bytes, the buffer has {got}")]
    TrailingBytes {
        /// The encoding's stated length.
        expected: u64,
        /// Bytes the buffer has.
        got: usize,
    },
    /// The first four bytes are not [`MAGIC`]: not a pinalloc extent list.
    #[error("not a pinalloc extent list (magic {found:02x?})")]
    BadMagic {
        /// What was there.
        found: [u8; 4],
    },
    /// Written by a version this build does not read.
    #[error("extent list version {version} is not supported (this build reads {VERSION})")]
    UnsupportedVersion {
        /// The version found.
        version: u8,
    },
    /// The checksum does not match the bytes: corrupted.
    #[error("corrupted: checksum {stored:#010x} stored, {computed:#010x} computed")]
    Corrupted {
        /// The checksum in the buffer.
        stored: u32,
        /// The checksum of the bytes.
        computed: u32,
    },
    /// A field is malformed although the checksum matches (a writer's bug): a varint
    /// longer than 64 bits or longer than its value needs (an encoding is
    /// canonical), or a body that ends early or goes on after the last extent.
    #[error("malformed field at byte {offset}: {what}")]
    Malformed {
        /// Where in the buffer.
        offset: usize,
        /// What is wrong.
        what: &'static str,
    },
    /// An extent of no blocks, or one that ends past the space or past `u64::MAX`.
    #[error("extent #{index}: {error}")]
    BadExtent {
        /// Its position in the list.
        index: usize,
        /// What is wrong with it.
        error: ExtentError,
    },
    /// An extent that starts before the previous one ends.
    #[error("extent #{index} {extent} overlaps the one before it, {previous}")]
    Overlap {
        /// Its position in the list.
        index: usize,
        /// The extent before it.
        previous: Extent,
        /// The extent.
        extent: Extent,
    },
    /// An extent that starts where the previous one ends. A free list is coalesced,
    /// as the allocators' free and durable lists are, so that one free space has
    /// exactly one encoding.
    #[error("extent #{index} {extent} touches the one before it, {previous}: join them")]
    Touching {
        /// Its position in the list.
        index: usize,
        /// The extent before it.
        previous: Extent,
        /// The extent.
        extent: Extent,
    },
    /// An extent that starts before the previous one (encoding only: the format
    /// cannot express it).
    #[error("extent #{index} {extent} comes before the one before it, {previous}")]
    Unsorted {
        /// Its position in the list.
        index: usize,
        /// The extent before it.
        previous: Extent,
        /// The extent.
        extent: Extent,
    },
}

impl PersistError {
    /// What kind of failure this is, by variant: [`ErrorKind::Corrupt`](crate::ErrorKind::Corrupt)
    /// for bytes that do not decode as the format (torn, trailing, of another version,
    /// failing the checksum, or a malformed field),
    /// [`ErrorKind::BadInput`](crate::ErrorKind::BadInput) for a list that is not a
    /// free list: given to [`encode`], or read by [`decode`] from a writer that broke
    /// the format behind a matching checksum. Whatever the kind, a copy that
    /// [`decode`] refuses cannot be mounted: read the other copy.
    ///
    /// ```
    /// use pinalloc::ErrorKind;
    /// use pinalloc::persist::decode;
    /// assert_eq!(decode(b"nope").unwrap_err().kind(), ErrorKind::Corrupt);
    /// ```
    #[must_use]
    pub const fn kind(&self) -> crate::ErrorKind {
        use crate::ErrorKind;
        match self {
            PersistError::Truncated { .. }
            | PersistError::TrailingBytes { .. }
            | PersistError::BadMagic { .. }
            | PersistError::UnsupportedVersion { .. }
            | PersistError::Corrupted { .. }
            | PersistError::Malformed { .. } => ErrorKind::Corrupt,
            PersistError::BadExtent { .. }
            | PersistError::Overlap { .. }
            | PersistError::Touching { .. }
            | PersistError::Unsorted { .. } => ErrorKind::BadInput,
        }
    }
}

/// Checks the `index`th extent against the one before it and the space.
fn check_extent(
    index: usize,
    previous: Option<Extent>,
    e: Extent,
    capacity: u64,
) -> Result<(), PersistError> {
    if e.len == 0 {
        return Err(PersistError::BadExtent {
            index,
            error: ExtentError::ZeroLength { start: e.start },
        });
    }
    if let Some(p) = previous {
        if e.start < p.start {
            return Err(PersistError::Unsorted {
                index,
                previous: p,
                extent: e,
            });
        }
        if e.start < p.start + p.len {
            return Err(PersistError::Overlap {
                index,
                previous: p,
                extent: e,
            });
        }
        if e.start == p.start + p.len {
            return Err(PersistError::Touching {
                index,
                previous: p,
                extent: e,
            });
        }
    }
    e.within(capacity)
        .map_err(|error| PersistError::BadExtent { index, error })?;
    Ok(())
}

/// Encodes `list`.
///
/// # Errors
///
/// [`PersistError::BadExtent`], [`Unsorted`](PersistError::Unsorted),
/// [`Overlap`](PersistError::Overlap) or [`Touching`](PersistError::Touching)
/// for an extent list that could not be decoded again. Nothing is written.
///
/// ```
/// use pinalloc::{Extent, persist::{self, FreeList, PersistError}};
/// let bad = FreeList::new(8, 0, vec![Extent::new(4, 8)]);
/// assert!(matches!(persist::encode(&bad), Err(PersistError::BadExtent { index: 0, .. })));
/// ```
pub fn encode(list: &FreeList) -> Result<Vec<u8>, PersistError> {
    let mut previous = None;
    for (index, &e) in list.extents.iter().enumerate() {
        check_extent(index, previous, e, list.capacity)?;
        previous = Some(e);
    }
    let mut out = Vec::with_capacity(HEADER + 3 * 10 + list.extents.len() * 4 + CHECKSUM);
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&[0; 8]); // the length, once known
    put_varint(&mut out, list.capacity);
    put_varint(&mut out, list.generation);
    put_varint(&mut out, list.extents.len() as u64);
    let mut last_start = 0;
    for e in &list.extents {
        put_varint(&mut out, e.start - last_start);
        put_varint(&mut out, e.len);
        last_start = e.start;
    }
    let total = (out.len() + CHECKSUM) as u64;
    out[5..HEADER].copy_from_slice(&total.to_le_bytes());
    let crc = crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    Ok(out)
}

/// Decodes an encoding made by [`encode`]. The checks run in this order: room for a
/// header and checksum ([`Truncated`](PersistError::Truncated)),
/// [`BadMagic`](PersistError::BadMagic), [`UnsupportedVersion`](PersistError::UnsupportedVersion),
/// the stated length ([`Truncated`](PersistError::Truncated),
/// [`TrailingBytes`](PersistError::TrailingBytes)), the checksum
/// ([`Corrupted`](PersistError::Corrupted)), then every field and extent.
///
/// # Errors
///
/// Every kind of damage has its own [`PersistError`]; see above.
///
/// ```
/// use pinalloc::{Extent, persist::{self, FreeList, PersistError}};
/// let list = FreeList::new(64, 9, vec![Extent::new(3, 5), Extent::new(20, 1)]);
/// let bytes = persist::encode(&list)?;
/// assert_eq!(persist::decode(&bytes)?, list);
/// assert!(matches!(persist::decode(&bytes[..bytes.len() - 1]), Err(PersistError::Truncated { .. })));
/// let mut flipped = bytes.clone();
/// flipped[15] ^= 0x10;
/// assert!(matches!(persist::decode(&flipped), Err(PersistError::Corrupted { .. })));
/// # Ok::<(), PersistError>(())
/// ```
pub fn decode(bytes: &[u8]) -> Result<FreeList, PersistError> {
    let got = bytes.len();
    if got < HEADER + CHECKSUM {
        return Err(PersistError::Truncated {
            needed: (HEADER + CHECKSUM) as u64,
            got,
        });
    }
    let mut length = [0; 8];
    length.copy_from_slice(&bytes[5..HEADER]);
    let total = u64::from_le_bytes(length);
    let found: [u8; 4] = [bytes[0], bytes[1], bytes[2], bytes[3]];
    if found != MAGIC {
        return Err(PersistError::BadMagic { found });
    }
    if bytes[4] != VERSION {
        return Err(PersistError::UnsupportedVersion { version: bytes[4] });
    }
    if (got as u64) < total {
        return Err(PersistError::Truncated { needed: total, got });
    }
    if (got as u64) > total {
        return Err(PersistError::TrailingBytes {
            expected: total,
            got,
        });
    }
    let (body, tail) = bytes.split_at(got - CHECKSUM);
    let stored = u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]);
    let computed = crc32c(body);
    if stored != computed {
        return Err(PersistError::Corrupted { stored, computed });
    }
    let mut r = Reader {
        bytes: body,
        at: HEADER,
    };
    let capacity = r.varint()?;
    let generation = r.varint()?;
    let count = r.varint()?;
    // Each extent takes at least two bytes: a count beyond that is a lie, and must not
    // size an allocation.
    if count > (body.len() - r.at) as u64 / 2 {
        return Err(PersistError::Malformed {
            offset: r.at,
            what: "more extents than the body can hold",
        });
    }
    let mut extents = Vec::with_capacity(count as usize);
    let mut previous: Option<Extent> = None;
    for index in 0..count as usize {
        let delta = r.varint()?;
        let len = r.varint()?;
        let base = previous.map_or(0, |p| p.start);
        let Some(start) = base.checked_add(delta) else {
            // A start past u64::MAX lies past any space.
            return Err(PersistError::BadExtent {
                index,
                error: ExtentError::OutOfBounds {
                    extent: Extent::new(u64::MAX, len),
                    capacity,
                },
            });
        };
        let e = Extent::new(start, len);
        check_extent(index, previous, e, capacity)?;
        extents.push(e);
        previous = Some(e);
    }
    if r.at != body.len() {
        return Err(PersistError::Malformed {
            offset: r.at,
            what: "bytes after the last extent",
        });
    }
    Ok(FreeList {
        capacity,
        generation,
        extents,
    })
}

pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn varint(&mut self) -> Result<u64, PersistError> {
        let start = self.at;
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let Some(&b) = self.bytes.get(self.at) else {
                return Err(PersistError::Malformed {
                    offset: start,
                    what: "the body ends inside a field",
                });
            };
            self.at += 1;
            let bits = u64::from(b & 0x7f);
            if shift == 63 && bits > 1 {
                break;
            }
            v |= bits << shift;
            if b & 0x80 == 0 {
                // A last byte of zero after the first adds nothing: the same value
                // has a shorter encoding. Refused, so that one list has one encoding.
                if b == 0 && self.at - start > 1 {
                    return Err(PersistError::Malformed {
                        offset: start,
                        what: "an overlong varint (a shorter encoding exists)",
                    });
                }
                return Ok(v);
            }
        }
        Err(PersistError::Malformed {
            offset: start,
            what: "a varint longer than 64 bits",
        })
    }
}

/// The CRC-32C (Castagnoli) table, built at compile time.
const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 == 1 {
                (c >> 1) ^ 0x82f6_3b78
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

/// CRC-32C of `bytes`, as iSCSI, ext4 and btrfs compute it: the encoding's checksum.
pub(crate) fn crc32c(bytes: &[u8]) -> u32 {
    !bytes.iter().fold(!0u32, |c, &b| {
        CRC_TABLE[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn crc32c_check_value() {
        // The standard check value: CRC-32C of the ASCII digits 1 to 9.
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
    }

    #[test]
    fn varints_round_trip_at_the_edges() {
        for v in [
            0,
            1,
            127,
            128,
            16_383,
            16_384,
            u64::MAX / 2,
            u64::MAX - 1,
            u64::MAX,
        ] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert!(out.len() <= 10);
            let mut r = Reader { bytes: &out, at: 0 };
            assert_eq!(r.varint(), Ok(v));
            assert_eq!(r.at, out.len());
        }
        // Eleven continuation bytes, a tenth byte with more than the 64th bit, and
        // overlong (non-canonical) encodings of 0, 1, 127 and 0 again.
        for bad in [
            vec![0xff; 11],
            [vec![0xff; 9], vec![0x02]].concat(),
            vec![0x80, 0x00],
            vec![0x81, 0x80, 0x00],
            vec![0xff, 0x00],
            [vec![0x80; 9], vec![0x00]].concat(),
        ] {
            let mut r = Reader { bytes: &bad, at: 0 };
            assert!(matches!(r.varint(), Err(PersistError::Malformed { .. })));
        }
    }
}
