//! Who may touch which bytes of a backing, and when: the one place that turns a
//! backing's `unsafe` byte methods into safe access for region handles.
//!
//! # The rules
//!
//! A [`Span`] is the right to a byte range. The region makes one for each extent the
//! allocator hands out, and the allocator never hands a block out again until it is
//! Free, so **no two spans cover the same byte**. A span is not `Clone`; splitting one
//! (a truncate) gives up its tail for good.
//!
//! A span can lend its bytes to pin guards, like a read-write lock whose guards may
//! outlive the owner:
//!
//! | holder | reads when | writes when |
//! |---|---|---|
//! | the owner ([`Span`]) | no exclusive lend is alive | no lend at all is alive |
//! | a shared [`Lent`] | always | never |
//! | an exclusive [`Lent`] | always | always (it is the only lend, and the owner is shut out) |
//!
//! Each lend covers the bytes the owner held when it was made. When the owner gives
//! bytes up while they are lent, they stay covered by those lends; when the last lend
//! covering them leaves, it gets them as a fresh span to discard (and the region then
//! unpins, which makes the blocks Free). Bytes are therefore discarded only by a holder
//! nobody else shares them with.
//!
//! Every `unsafe` block below relies on this table plus Rust's borrow rules: owner
//! writes need `&mut Span`, an exclusive lend needs `&mut Span` to make and `&mut Lent`
//! to write, so a `&mut [u8]` never coexists with any other reference to its bytes.

use core::ops::Range;
use core::ptr::NonNull;
use std::sync::{Arc, OnceLock};
use std::vec::Vec;

use super::{Backing, BackingError, MemoryBacking};
use crate::sync::Mutex;

/// Why a span or lend refused an access.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// `offset..offset + len` is not inside the holder's bytes of length `len_bytes`.
    OutOfBounds {
        offset_bytes: u64,
        len: u64,
        len_bytes: u64,
    },
    /// The owner's access is shut out by a live lend.
    Lent,
    /// The backing failed.
    Backing(BackingError),
}

/// The right to a range of a backing's bytes; see the module docs.
pub(crate) struct Span<B: Backing> {
    backing: Arc<B>,
    /// The bytes this owner still holds.
    bytes: Range<u64>,
    /// Shared with this span's lends; made on the first lend.
    lends: OnceLock<Arc<Lends>>,
}

/// What a span's lends share.
#[derive(Debug)]
struct Lends {
    /// The span's first byte (every lend starts there).
    start: u64,
    state: Mutex<LendState>,
}

#[derive(Debug)]
struct LendState {
    /// An exclusive lend is alive (then `ends` has exactly its entry).
    exclusive: bool,
    /// The end of each live lend's bytes, which all start at `Lends::start`.
    ends: Vec<u64>,
    /// The end of the bytes the owner still holds (`start` once it gave them all up).
    owner_end: u64,
}

impl LendState {
    /// The furthest end among the owner and the live lends: bytes at or past it are
    /// held by no one.
    fn held_end(&self) -> u64 {
        self.ends.iter().copied().fold(self.owner_end, u64::max)
    }
}

/// What became of bytes an owner gave up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GaveUp {
    /// No lend covers them: they were discarded (if asked) and may be freed now.
    Unheld,
    /// Live lends still cover them: the last to leave discards them.
    StillLent,
}

impl<B: Backing> Span<B> {
    /// The right to `bytes` of `backing`.
    ///
    /// The caller (the region) promises that the allocator just handed these bytes'
    /// blocks to it, so that no other span or lend covers any of them; everything else
    /// here depends on that. It is made once per extent, in `Region::allocate` and
    /// `Region::attach`.
    ///
    /// # Panics
    ///
    /// If `bytes` is not inside the backing: a bug in the region, and a hard stop
    /// because slices are built from it.
    pub(crate) fn new(backing: Arc<B>, bytes: Range<u64>) -> Self {
        assert!(
            bytes.start <= bytes.end && bytes.end <= backing.len_bytes(),
            "span {bytes:?} outside a {}-byte backing",
            backing.len_bytes()
        );
        Self {
            backing,
            bytes,
            lends: OnceLock::new(),
        }
    }

    /// The bytes this owner still holds.
    pub(crate) fn bytes(&self) -> Range<u64> {
        self.bytes.clone()
    }

    /// Whether the owner may read now: no exclusive lend is alive.
    fn may_read(&self) -> bool {
        self.lends.get().is_none_or(|l| !l.state.lock().exclusive)
    }

    /// Whether the owner may write now: no lend is alive.
    fn may_write(&self) -> bool {
        self.lends
            .get()
            .is_none_or(|l| l.state.lock().ends.is_empty())
    }

    /// Reads `buf.len()` bytes at `offset_bytes` (relative to the span's start).
    pub(crate) fn read_at(&self, offset_bytes: u64, buf: &mut [u8]) -> Result<(), Refusal> {
        let at = inside(offset_bytes, buf.len(), &self.bytes)?;
        if !self.may_read() {
            return Err(Refusal::Lent);
        }
        // SAFETY: writers of these bytes would be this owner (it needs `&mut self`, and
        // we hold `&self`) or an exclusive lend (none is alive, checked above, and a new
        // one needs `&mut self`). No other span covers them (module rules).
        unsafe { self.backing.read_at(at, buf) }.map_err(Refusal::Backing)
    }

    /// Writes `buf` at `offset_bytes` (relative to the span's start).
    pub(crate) fn write_at(&mut self, offset_bytes: u64, buf: &[u8]) -> Result<(), Refusal> {
        let at = inside(offset_bytes, buf.len(), &self.bytes)?;
        if !self.may_write() {
            return Err(Refusal::Lent);
        }
        // SAFETY: no lend is alive (checked) and none can be made while we hold
        // `&mut self`; every owner reference was borrowed from `self`, so none is live
        // either; no other span covers these bytes.
        unsafe { self.backing.write_at(at, buf) }.map_err(Refusal::Backing)
    }

    /// Lends the bytes to a shared (read-only) holder.
    pub(crate) fn lend(&self) -> Result<Lent<B>, Refusal> {
        let lends = self.lends();
        let mut state = lends.state.lock();
        if state.exclusive {
            return Err(Refusal::Lent);
        }
        state.ends.push(self.bytes.end);
        drop(state);
        Ok(self.lent(lends, false))
    }

    /// Lends the bytes to an exclusive holder, shutting the owner out until it leaves.
    pub(crate) fn lend_exclusive(&mut self) -> Result<Lent<B>, Refusal> {
        let lends = self.lends();
        let mut state = lends.state.lock();
        if !state.ends.is_empty() {
            return Err(Refusal::Lent);
        }
        state.ends.push(self.bytes.end);
        state.exclusive = true;
        drop(state);
        Ok(self.lent(lends, true))
    }

    fn lends(&self) -> Arc<Lends> {
        Arc::clone(self.lends.get_or_init(|| {
            Arc::new(Lends {
                start: self.bytes.start,
                state: Mutex::new(LendState {
                    exclusive: false,
                    ends: Vec::new(),
                    owner_end: self.bytes.end,
                }),
            })
        }))
    }

    fn lent(&self, lends: Arc<Lends>, exclusive: bool) -> Lent<B> {
        Lent {
            backing: Arc::clone(&self.backing),
            bytes: self.bytes.clone(),
            lends: Some(lends),
            exclusive,
        }
    }

    /// Gives up the bytes from `at_bytes` (relative) to the end: a truncate, or with
    /// `at_bytes == 0` the whole span. With `discard`, unheld bytes are discarded first.
    ///
    /// # Errors
    ///
    /// The discard's error; then nothing changed (the bytes' contents are unspecified).
    pub(crate) fn give_up(&mut self, at_bytes: u64, discard: bool) -> Result<GaveUp, Refusal> {
        let at = inside(at_bytes, 0, &self.bytes)?;
        let Some(lends) = self.lends.get() else {
            self.discard_tail(at, discard)?;
            self.bytes.end = at;
            return Ok(GaveUp::Unheld);
        };
        // The lock is held through the discard so that no lend leaves meanwhile
        // thinking the owner still holds these bytes.
        let mut state = lends.state.lock();
        if state.ends.is_empty() {
            self.discard_tail(at, discard)?;
            state.owner_end = at;
            drop(state);
            self.bytes.end = at;
            return Ok(GaveUp::Unheld);
        }
        debug_assert!(state.ends.iter().all(|&e| e >= self.bytes.end));
        state.owner_end = at;
        drop(state);
        self.bytes.end = at;
        Ok(GaveUp::StillLent)
    }

    /// Discards `at..end` if asked. The caller holds `&mut self` and checked that no
    /// lend is alive.
    fn discard_tail(&self, at: u64, discard: bool) -> Result<(), Refusal> {
        if !discard || at == self.bytes.end {
            return Ok(());
        }
        // SAFETY: no lend is alive (checked by the caller, under the lend lock when
        // lends exist, and none can be made while the caller holds `&mut self`); the
        // owner's references were borrowed from `self`, so none is live; no other span
        // covers these bytes.
        unsafe { self.backing.discard(at..self.bytes.end) }.map_err(Refusal::Backing)
    }

    /// Whether no lend is alive, so the owner may hand its bytes back without
    /// giving them up (detaching them from their handle).
    pub(crate) fn unlent(&self) -> bool {
        self.may_write()
    }
}

impl<B: MemoryBacking> Span<B> {
    /// The owner's bytes as a slice.
    pub(crate) fn as_slice(&self) -> Result<&[u8], Refusal> {
        if !self.may_read() {
            return Err(Refusal::Lent);
        }
        // SAFETY: as `read_at`: while this `&self` borrow lives, neither the owner
        // (needs `&mut self`) nor any lend (none exclusive now; a new exclusive one
        // needs `&mut self`) can write these bytes, and no other span covers them.
        // `MemoryBacking` makes `base..base + len_bytes` valid memory for the backing's
        // life, which the `Arc` in `self` extends past this borrow; `new` checked that
        // the bytes lie inside it.
        Ok(unsafe { slice(&*self.backing, &self.bytes) })
    }

    /// The owner's bytes as a mutable slice.
    pub(crate) fn as_mut_slice(&mut self) -> Result<&mut [u8], Refusal> {
        if !self.may_write() {
            return Err(Refusal::Lent);
        }
        // SAFETY: as `write_at`: no lend is alive nor can one be made while this
        // `&mut self` borrow lives, and no other span covers these bytes, so this is
        // the only reference to them. Validity as in `as_slice`.
        Ok(unsafe { slice_mut(&*self.backing, &self.bytes) })
    }
}

impl<B: Backing> core::fmt::Debug for Span<B> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Span")
            .field("bytes", &self.bytes)
            .field("lent", &!self.may_write())
            .finish()
    }
}

/// A span's bytes, lent to a pin guard: shared (read-only) or exclusive.
pub(crate) struct Lent<B: Backing> {
    backing: Arc<B>,
    /// The bytes this lend covers: the owner's when it was made.
    bytes: Range<u64>,
    /// `None` once it has left.
    lends: Option<Arc<Lends>>,
    exclusive: bool,
}

impl<B: Backing> Lent<B> {
    /// The bytes this lend covers.
    pub(crate) fn bytes(&self) -> Range<u64> {
        self.bytes.clone()
    }

    /// Reads `buf.len()` bytes at `offset_bytes` (relative).
    pub(crate) fn read_at(&self, offset_bytes: u64, buf: &mut [u8]) -> Result<(), Refusal> {
        let at = inside(offset_bytes, buf.len(), &self.bytes)?;
        // SAFETY: while this lend lives, only an exclusive lend writes these bytes, and
        // if one is alive it is `self` (it excludes every other lend and the owner), of
        // which we hold `&self`. Bytes the owner gave up stay ours until we leave.
        unsafe { self.backing.read_at(at, buf) }.map_err(Refusal::Backing)
    }

    /// Writes `buf` at `offset_bytes` (relative); only an exclusive lend may.
    pub(crate) fn write_at(&mut self, offset_bytes: u64, buf: &[u8]) -> Result<(), Refusal> {
        let at = inside(offset_bytes, buf.len(), &self.bytes)?;
        if !self.exclusive {
            return Err(Refusal::Lent);
        }
        // SAFETY: an exclusive lend is the only lend alive and shuts the owner out of
        // reads and writes; we hold `&mut self`, so no reference from it is live; no
        // other span covers these bytes.
        unsafe { self.backing.write_at(at, buf) }.map_err(Refusal::Backing)
    }

    /// The address of the first byte, for memory backings.
    pub(crate) fn address(&self) -> Option<NonNull<u8>> {
        address(&*self.backing, self.bytes.start)
    }

    /// Another shared lend of the same bytes; `None` from an exclusive lend.
    pub(crate) fn share(&self) -> Option<Self> {
        if self.exclusive {
            return None;
        }
        let lends = Arc::clone(self.lends.as_ref()?);
        lends.state.lock().ends.push(self.bytes.end);
        Some(Self {
            backing: Arc::clone(&self.backing),
            bytes: self.bytes.clone(),
            lends: Some(lends),
            exclusive: false,
        })
    }

    /// Leaves. Bytes that only this lend still held (the owner gave them up and no
    /// other lend covers them) are discarded first if `discard`; they are returned, so
    /// the caller can unpin the blocks and let them become Free.
    ///
    /// # Errors
    ///
    /// The discard's error, with the lend given back still in place.
    pub(crate) fn leave(mut self, discard: bool) -> Result<Range<u64>, (Self, Refusal)> {
        match self.leave_now(discard) {
            Ok(only_mine) => Ok(only_mine),
            Err(refusal) => Err((self, refusal)),
        }
    }

    fn leave_now(&mut self, discard: bool) -> Result<Range<u64>, Refusal> {
        let Some(lends) = self.lends.as_ref() else {
            return Ok(self.bytes.end..self.bytes.end);
        };
        let mut state = lends.state.lock();
        let me = state
            .ends
            .iter()
            .position(|&e| e == self.bytes.end)
            .expect("a live lend is listed");
        state.ends.swap_remove(me);
        let from = state.held_end().max(lends.start).min(self.bytes.end);
        let only_mine = from..self.bytes.end;
        if discard && !only_mine.is_empty() {
            // SAFETY: nobody else holds `only_mine`: the owner gave it up (its end is at
            // or before the start), every other live lend ends at or before the start,
            // and new lends end where the owner does. We hold the lend lock, so none of
            // that changes during the call. The bytes are not yet Free (our pin holds
            // their blocks until the caller unpins), so no new span covers them.
            if let Err(e) = unsafe { self.backing.discard(only_mine.clone()) } {
                state.ends.push(self.bytes.end);
                return Err(Refusal::Backing(e));
            }
        }
        if self.exclusive {
            state.exclusive = false;
        }
        drop(state);
        self.lends = None;
        Ok(only_mine)
    }
}

impl<B: MemoryBacking> Lent<B> {
    /// The lent bytes as a slice.
    pub(crate) fn as_slice(&self) -> &[u8] {
        // SAFETY: as `read_at`: no one but `self` may write these bytes while this lend
        // lives, and a write through `self` needs `&mut self`. The `Arc` keeps the
        // memory alive; the span checked the bytes are inside it.
        unsafe { slice(&*self.backing, &self.bytes) }
    }

    /// The lent bytes as a mutable slice; `None` for a shared lend.
    pub(crate) fn as_mut_slice(&mut self) -> Option<&mut [u8]> {
        if !self.exclusive {
            return None;
        }
        // SAFETY: as `write_at`: the only lend alive, the owner shut out, and this
        // `&mut self` borrow rules out other references from `self`.
        Some(unsafe { slice_mut(&*self.backing, &self.bytes) })
    }
}

impl<B: Backing> Drop for Lent<B> {
    fn drop(&mut self) {
        // Leaving without a discard cannot fail.
        let _ = self.leave_now(false);
    }
}

impl<B: Backing> core::fmt::Debug for Lent<B> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Lent")
            .field("bytes", &self.bytes)
            .field("exclusive", &self.exclusive)
            .finish()
    }
}

/// `offset..offset + len` relative to `bytes`, as an absolute offset, if inside.
fn inside(offset_bytes: u64, len: usize, bytes: &Range<u64>) -> Result<u64, Refusal> {
    let len_bytes = bytes.end - bytes.start;
    match offset_bytes.checked_add(len as u64) {
        Some(end) if end <= len_bytes => Ok(bytes.start + offset_bytes),
        _ => Err(Refusal::OutOfBounds {
            offset_bytes,
            len: len as u64,
            len_bytes,
        }),
    }
}

fn address<B: Backing>(backing: &B, offset_bytes: u64) -> Option<NonNull<u8>> {
    let base = backing.base_address()?;
    // `wrapping_add` keeps this safe; the offset is inside the backing, so this is
    // the plain address of that byte.
    NonNull::new(base.as_ptr().wrapping_add(offset_bytes as usize))
}

/// `bytes` of a memory backing as a slice.
///
/// # Safety
///
/// `bytes` is inside the backing, the backing outlives `'a`, and nothing writes the
/// bytes during `'a`.
unsafe fn slice<'a, B: MemoryBacking>(backing: &'a B, bytes: &Range<u64>) -> &'a [u8] {
    let base = backing
        .base_address()
        .expect("a MemoryBacking has an address");
    let len = (bytes.end - bytes.start) as usize;
    // SAFETY: `MemoryBacking` makes `base..base + len_bytes` valid, initialized memory
    // for the backing's life; the caller keeps `bytes` inside it, the backing alive for
    // `'a`, and writers away.
    unsafe { core::slice::from_raw_parts(base.as_ptr().add(bytes.start as usize), len) }
}

/// `bytes` of a memory backing as a mutable slice.
///
/// # Safety
///
/// As [`slice`], and nothing else reads, writes or refers to the bytes during `'a`.
#[allow(clippy::mut_from_ref)]
unsafe fn slice_mut<'a, B: MemoryBacking>(backing: &'a B, bytes: &Range<u64>) -> &'a mut [u8] {
    let base = backing
        .base_address()
        .expect("a MemoryBacking has an address");
    let len = (bytes.end - bytes.start) as usize;
    // SAFETY: as `slice`, and the caller guarantees this is the only access.
    unsafe { core::slice::from_raw_parts_mut(base.as_ptr().add(bytes.start as usize), len) }
}

impl<B: Backing> Span<B> {
    /// Bytes of this span's lends (for tests and `Debug`): `(owner_end, lend ends)`.
    #[cfg(test)]
    fn lend_view(&self) -> Option<(u64, Vec<u64>)> {
        let l = self.lends.get()?;
        let s = l.state.lock();
        Some((s.owner_end, s.ends.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HeapBacking;
    use std::vec;

    fn span(len: u64) -> Span<HeapBacking> {
        Span::new(Arc::new(HeapBacking::new(len).unwrap()), 0..len)
    }

    #[test]
    fn owner_is_shut_out_by_an_exclusive_lend_only_while_it_lives() {
        let mut s = span(64);
        s.as_mut_slice().unwrap().fill(7);
        let mut lent = s.lend_exclusive().unwrap();
        assert!(matches!(s.as_slice(), Err(Refusal::Lent)));
        assert!(matches!(s.write_at(0, &[1]), Err(Refusal::Lent)));
        assert!(matches!(s.lend(), Err(Refusal::Lent)));
        lent.as_mut_slice().unwrap()[0] = 9;
        assert_eq!(lent.leave(true).unwrap(), 64..64); // the owner still holds it all
        assert_eq!(s.as_slice().unwrap()[..2], [9, 7]);
        s.write_at(1, &[3]).unwrap();
    }

    #[test]
    fn shared_lends_let_the_owner_read_but_not_write() {
        let mut s = span(16);
        let a = s.lend().unwrap();
        let b = a.share().unwrap();
        assert!(s.as_slice().is_ok());
        assert!(matches!(s.as_mut_slice(), Err(Refusal::Lent)));
        assert!(matches!(s.lend_exclusive(), Err(Refusal::Lent)));
        drop(a);
        assert!(matches!(s.as_mut_slice(), Err(Refusal::Lent)));
        drop(b);
        assert!(s.as_mut_slice().is_ok());
    }

    #[test]
    fn given_up_bytes_go_to_the_last_lend_that_covers_them() {
        // bytes:   0        8        12       16
        // lend a:  [=========================)       made at len 16
        // owner:   [========)                       truncated to 8
        // lend b:  [========)                       made after the truncate
        // a leaves: 8..16 are held by no one else -> a discards them.
        let mut s = span(16);
        s.as_mut_slice().unwrap().fill(5);
        let a = s.lend().unwrap();
        assert_eq!(s.give_up(8, true).unwrap(), GaveUp::StillLent);
        assert_eq!(a.as_slice(), [5; 16]); // still readable: nobody discarded it
        let b = s.lend().unwrap();
        assert_eq!(s.lend_view(), Some((8, vec![16, 8])));
        assert_eq!(a.leave(true).unwrap(), 8..16);
        assert_eq!(b.as_slice(), [5; 8]);
        // The owner gives up the rest while b lives: b is the last holder.
        assert_eq!(s.give_up(0, true).unwrap(), GaveUp::StillLent);
        assert_eq!(b.leave(true).unwrap(), 0..8);
        let mut all = [1u8; 16];
        // SAFETY: every holder has left; this test owns the backing.
        unsafe { s.backing.read_at(0, &mut all).unwrap() };
        assert_eq!(all, [0; 16]);
    }

    #[test]
    fn an_unlent_truncate_discards_at_once_and_bounds_are_checked() {
        let mut s = span(16);
        s.as_mut_slice().unwrap().fill(5);
        assert_eq!(s.give_up(4, true).unwrap(), GaveUp::Unheld);
        assert_eq!(s.bytes(), 0..4);
        assert!(matches!(
            s.give_up(5, true),
            Err(Refusal::OutOfBounds { .. })
        ));
        assert!(matches!(
            s.read_at(3, &mut [0; 2]),
            Err(Refusal::OutOfBounds { .. })
        ));
        assert!(matches!(
            s.write_at(u64::MAX, &[0]),
            Err(Refusal::OutOfBounds { .. })
        ));
        let mut rest = [1u8; 12];
        // SAFETY: the span gave these bytes up; nothing else holds them.
        unsafe { s.backing.read_at(4, &mut rest).unwrap() };
        assert_eq!(rest, [0; 12]);
    }

    #[test]
    #[should_panic(expected = "outside")]
    fn a_span_past_the_backing_is_a_bug() {
        let _ = Span::new(Arc::new(HeapBacking::new(8).unwrap()), 0..9);
    }
}
