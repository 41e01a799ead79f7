//! Who may touch which bytes of a backing, and when: the one place that turns a
//! backing's `unsafe` byte methods into safe access for region handles. Every block
//! state change a handle makes (allocate, attach, free, pin, unpin) happens here too,
//! so the rules below rest only on this module and on the allocator's promise.
//!
//! # The rules
//!
//! A [`Span`] is the right to the bytes of an extent. It is made only from blocks the
//! allocator has just handed out ([`Span::allocate`]) or from detached blocks, which no
//! span covers ([`Span::attach`]). The allocator never hands a block out again until
//! it is Free, so **no two spans cover the same byte**. A span is not `Clone`; it
//! frees its blocks when dropped, after its bytes are out of every reach.
//!
//! A span lends its bytes to pin guards like a read-write lock whose guards may
//! outlive the owner. Each [`Lent`] holds an allocator pin over the bytes it covers,
//! taken before it exists and dropped after it has gone:
//!
//! | holder | reads when | writes when |
//! |---|---|---|
//! | the owner ([`Span`]) | no exclusive lend is alive | no lend at all is alive |
//! | a shared [`Lent`] | always | never |
//! | an exclusive [`Lent`] | always | always (it is the only lend, and the owner is shut out) |
//!
//! Every lend covers a prefix of the span's first bytes, at least as long as what the
//! owner holds. When the owner gives bytes up while they are lent, its free only makes
//! their blocks Deferred (the lends' pins hold them), and the last lend covering them
//! discards them before it unpins. Bytes are therefore discarded only by a holder
//! nobody else shares them with, and blocks become Free only after that.
//!
//! Owner writes need `&mut Span`, an exclusive lend needs `&mut Span` to make and
//! `&mut Lent` to write, so a `&mut [u8]` never coexists with another reference to its
//! bytes. The lend lock (`Lends::state`) is taken before any allocator lock, never
//! after; see `sync.rs`.

use core::ops::Range;
use core::ptr::NonNull;
use core::time::Duration;
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use super::space::Space;
use crate::backing::{Backing, BackingError, MemoryBacking};
use crate::sync::{AtomicBool, Mutex, Ordering};
use crate::{
    Extent, PinOptions, Request, SharedAllocError, SharedFreeError, SharedPinError, SharedPinId,
};

/// Why a span or lend refused a call. Nothing changed (a failed write or discard may
/// have changed the bytes given to it).
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
    /// The allocator refused a free (a bug: a span's blocks are Allocated).
    Free(SharedFreeError),
    /// The allocator refused a pin.
    Pin(SharedPinError),
}

/// The right to an extent's bytes; see the module docs.
pub(crate) struct Span<B: Backing> {
    space: Arc<Space<B>>,
    /// The bytes this owner still holds; empty once it freed or detached them all.
    bytes: Range<u64>,
    /// Shared with this span's lends; made on the first lend.
    lends: OnceLock<Arc<Lends>>,
}

/// What a span's lends share.
#[derive(Debug)]
pub(crate) struct Lends {
    /// The span's first byte (every lend starts there).
    start: u64,
    state: Mutex<LendState>,
    /// Set (before it is registered) when a gate is made of this span's bytes: a
    /// lend that reads it after its unpin and finds it set sweeps the span's gates,
    /// so the gate's own first sweep and the last lend's cannot both miss the moment
    /// the blocks became the gate's alone.
    gated: AtomicBool,
}

#[derive(Debug)]
struct LendState {
    /// An exclusive lend is alive (then `ends` has exactly its entry).
    exclusive: bool,
    /// The end of each live lend's bytes, which all start at `Lends::start`.
    ends: Ends,
    /// The end of the bytes the owner still holds (`start` once it gave them all up).
    owner_end: u64,
    /// The end of the bytes a [`Gate`] holds (`start` when none does): the owner
    /// freed them on commit, and the gate's sweep, not a lend, discards them.
    gate_end: u64,
}

impl LendState {
    /// The furthest end held by the owner and the live lends other than one lend
    /// ending at `mine`: bytes at or past it are held by that lend alone.
    fn held_end_besides(&self, mine: u64) -> u64 {
        self.ends
            .furthest_besides(mine)
            .map_or(self.owner_end, |e| e.max(self.owner_end))
    }
}

/// The ends of the live lends' bytes, as a multiset: a lend ends where the owner's
/// bytes ended when it was made, so lends differ only across truncates, and most
/// share one entry. Adding, removing and the furthest end besides one lend
/// are O(log k) in the k live lends, however many there are.
#[derive(Debug, Default)]
struct Ends {
    /// End -> how many live lends end there.
    count: BTreeMap<u64, usize>,
    len: usize,
}

impl Ends {
    fn push(&mut self, end: u64) {
        *self.count.entry(end).or_insert(0) += 1;
        self.len += 1;
    }

    /// Removes one lend ending at `end`; false if none does.
    fn remove(&mut self, end: u64) -> bool {
        let Some(c) = self.count.get_mut(&end) else {
            return false;
        };
        *c -= 1;
        if *c == 0 {
            self.count.remove(&end);
        }
        self.len -= 1;
        true
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The nearest end, if any lend is live.
    fn nearest(&self) -> Option<u64> {
        self.count.keys().next().copied()
    }

    /// The furthest end of the live lends other than one ending at `mine`.
    fn furthest_besides(&self, mine: u64) -> Option<u64> {
        let mut from_last = self.count.iter().rev();
        let (&end, &count) = from_last.next()?;
        if end != mine || count > 1 {
            return Some(end);
        }
        from_last.next().map(|(&e, _)| e)
    }
}

impl<B: Backing> Span<B> {
    /// Allocates blocks and takes the right to their bytes.
    pub(crate) fn allocate(
        space: &Arc<Space<B>>,
        request: Request,
    ) -> Result<Self, SharedAllocError> {
        let extent = space.allocator.allocate(request)?;
        Ok(Self::handed_out(space, extent))
    }

    /// As [`allocate`](Self::allocate), waiting for releases up to `timeout`.
    pub(crate) fn allocate_wait(
        space: &Arc<Space<B>>,
        request: Request,
        timeout: Duration,
    ) -> Result<Self, SharedAllocError> {
        let extent = space.allocator.allocate_wait(request, timeout)?;
        Ok(Self::handed_out(space, extent))
    }

    /// Takes the right to detached blocks; `None` unless every block is detached.
    pub(crate) fn attach(space: &Arc<Space<B>>, extent: Extent) -> Option<Self> {
        space
            .take_detached(extent)
            .then(|| Self::handed_out(space, extent))
    }

    /// The span of blocks that were just handed to us: by the allocator, which hands
    /// a block out only when no span covers it, or from the detached set, whose blocks
    /// no span covers.
    fn handed_out(space: &Arc<Space<B>>, extent: Extent) -> Self {
        Self {
            space: Arc::clone(space),
            bytes: space.bytes_of(extent),
            lends: OnceLock::new(),
        }
    }

    /// The bytes this owner still holds.
    pub(crate) fn bytes(&self) -> Range<u64> {
        self.bytes.clone()
    }

    /// The blocks this owner still holds.
    pub(crate) fn extent(&self) -> Extent {
        self.space.blocks_of(&self.bytes)
    }

    /// Whether the region discards released bytes.
    pub(crate) fn discards(&self) -> bool {
        self.space.discard
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
        unsafe { self.space.backing.read_at(at, buf) }.map_err(Refusal::Backing)
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
        unsafe { self.space.backing.write_at(at, buf) }.map_err(Refusal::Backing)
    }

    /// Lends the bytes to a shared (read-only) holder.
    pub(crate) fn lend(&self) -> Result<Lent<B>, Refusal> {
        let lends = self.lends();
        let mut state = lends.state.lock();
        if state.exclusive {
            return Err(Refusal::Lent);
        }
        let pin = self.pin()?;
        state.ends.push(self.bytes.end);
        drop(state);
        Ok(self.lent(lends, pin, false))
    }

    /// Lends the bytes to an exclusive holder, shutting the owner out until it leaves.
    pub(crate) fn lend_exclusive(&mut self) -> Result<Lent<B>, Refusal> {
        let lends = self.lends();
        let mut state = lends.state.lock();
        if !state.ends.is_empty() {
            return Err(Refusal::Lent);
        }
        let pin = self.pin()?;
        state.ends.push(self.bytes.end);
        state.exclusive = true;
        drop(state);
        Ok(self.lent(lends, pin, true))
    }

    /// Pins the owner's blocks for a new lend.
    fn pin(&self) -> Result<SharedPinId, Refusal> {
        self.space
            .allocator
            .pin_owned(self.extent(), PinOptions::new())
            .map_err(Refusal::Pin)
    }

    fn lends(&self) -> Arc<Lends> {
        Arc::clone(self.lends.get_or_init(|| {
            Arc::new(Lends {
                start: self.bytes.start,
                state: Mutex::new(LendState {
                    exclusive: false,
                    ends: Ends::default(),
                    owner_end: self.bytes.end,
                    gate_end: self.bytes.start,
                }),
                gated: AtomicBool::new(false),
            })
        }))
    }

    fn lent(&self, lends: Arc<Lends>, pin: SharedPinId, exclusive: bool) -> Lent<B> {
        Lent {
            space: Arc::clone(&self.space),
            bytes: self.bytes.clone(),
            lends: Some(lends),
            exclusive,
            pin,
        }
    }

    /// Gives up and frees every block past the first `keep_blocks`: a truncate, or
    /// with zero the whole span. Blocks no lend covers are discarded first (with
    /// `discard`) and become Free; lent ones become Deferred, for the last lend
    /// covering them to discard.
    ///
    /// # Errors
    ///
    /// The discard's or the allocator's refusal; then nothing changed (the discarded
    /// bytes' contents are unspecified).
    pub(crate) fn give_up(&mut self, keep_blocks: u64, discard: bool) -> Result<(), Refusal> {
        let len_bytes = self.bytes.end - self.bytes.start;
        let at = keep_blocks
            .checked_mul(self.space.block_bytes)
            .filter(|&k| k <= len_bytes)
            .map(|k| self.bytes.start + k)
            .ok_or(Refusal::OutOfBounds {
                offset_bytes: keep_blocks.saturating_mul(self.space.block_bytes),
                len: 0,
                len_bytes,
            })?;
        let freed = at..self.bytes.end;
        if freed.is_empty() {
            return Ok(());
        }
        let Some(lends) = self.lends.get() else {
            // Never lent, and `&mut self` keeps it so.
            self.release(&freed, discard)?;
            self.bytes.end = at;
            return Ok(());
        };
        // The lend lock is held through the discard and the free, so no lend leaves
        // meanwhile thinking the owner still holds these bytes.
        let mut state = lends.state.lock();
        if state.ends.is_empty() {
            self.release(&freed, discard)?;
        } else {
            debug_assert!(state.ends.nearest().is_some_and(|e| e >= self.bytes.end));
            // Every live lend covers `freed` and pins its blocks: they become Deferred.
            self.space
                .allocator
                .free(self.space.blocks_of(&freed))
                .map_err(Refusal::Free)?;
        }
        state.owner_end = at;
        drop(state);
        self.bytes.end = at;
        Ok(())
    }

    /// Discards (if asked) and frees bytes no lend covers; the caller holds `&mut self`
    /// and checked that no lend is alive. While a reader is live the free may leave
    /// them Deferred for it, so they go behind a gate instead, undiscarded until the
    /// sweep finds them released.
    fn release(&self, freed: &Range<u64>, discard: bool) -> Result<(), Refusal> {
        if discard && self.space.allocator.has_readers() {
            let extent = self.space.blocks_of(freed);
            let pin = self
                .space
                .allocator
                .pin_owned(extent, PinOptions::new())
                .map_err(Refusal::Pin)?;
            if let Err(e) = self.space.allocator.free(extent) {
                let unpinned = self.space.allocator.unpin(pin);
                debug_assert!(unpinned.is_ok(), "{unpinned:?}");
                return Err(Refusal::Free(e));
            }
            // A lend that has just left may still pin these blocks: it sweeps them.
            self.space
                .add_gate(Gate::new(extent, pin, self.lends.get()));
            return Ok(());
        }
        if discard {
            // SAFETY: no lend is alive (checked by the caller, under the lend lock when
            // lends exist, and none can be made while the caller holds `&mut self`);
            // the owner's references were borrowed from `self`, so none is live; no
            // other span covers these bytes. Their blocks are Allocated until the free
            // below, so nobody else can be handed them meanwhile.
            unsafe { self.space.backing.discard(freed.clone()) }.map_err(Refusal::Backing)?;
            self.space.count_discard(freed);
        }
        self.space
            .allocator
            .free(self.space.blocks_of(freed))
            .map(drop)
            .map_err(Refusal::Free)
    }

    /// Gives every byte up and frees the blocks on commit of the open epoch, behind a
    /// [`Gate`]: a pin of its own that keeps them Deferred, undiscarded, after the
    /// commit and the readers let them go, until [`sweep`] discards them and unpins.
    /// The lends' leaves skip the gated bytes. Returns the blocks that became Free at
    /// once (allocated in the open epoch, and held by nothing else).
    ///
    /// # Errors
    ///
    /// The allocator's refusal of the gate's pin or of the free; then nothing changed.
    pub(crate) fn free_on_commit(&mut self) -> Result<u64, Refusal> {
        let extent = self.extent();
        let pin = self.pin()?;
        let lends = self.lends.get().cloned();
        let freed = match &lends {
            None => self.space.allocator.free_on_commit(extent),
            Some(lends) => {
                // Under the lend lock, so that no lend leaves meanwhile and discards
                // bytes it thinks only it holds.
                let mut state = lends.state.lock();
                let freed = self.space.allocator.free_on_commit(extent);
                if freed.is_ok() {
                    state.gate_end = state.owner_end;
                    state.owner_end = lends.start;
                }
                freed
            }
        };
        if let Err(e) = freed {
            let unpinned = self.space.allocator.unpin(pin);
            debug_assert!(unpinned.is_ok(), "{unpinned:?}");
            return Err(Refusal::Free(e));
        }
        self.bytes.end = self.bytes.start;
        Ok(self.space.add_gate(Gate::new(extent, pin, lends.as_ref())))
    }

    /// Gives the bytes up without freeing their blocks: they stay Allocated, detached,
    /// for [`attach`](Self::attach). Refused (the span comes back) while lent.
    pub(crate) fn detach(mut self) -> Result<Extent, Self> {
        if !self.may_write() {
            return Err(self);
        }
        let extent = self.extent();
        self.bytes.end = self.bytes.start;
        self.space.put_detached(extent);
        Ok(extent)
    }
}

/// Released blocks that something besides their holders may still hold, kept
/// Deferred, undiscarded, by a pin of the gate's own until [`sweep`] finds that
/// nothing else does: no lend (every lend of the span pins them too), no open or
/// unfinished commit, no reader. Then it discards their bytes (nobody else can reach
/// them) and unpins, and they become Free. Made by an owner's free on commit
/// ([`Span::free_on_commit`]), and by a free or a lend's leave while a reader is
/// live. If their epoch is aborted (a free on commit) they are Allocated again, and
/// once no lend holds them the sweep unpins them undiscarded and detaches them, for
/// [`Span::attach`].
pub(crate) struct Gate {
    extent: Extent,
    pin: SharedPinId,
    /// The lends of the span that freed the blocks, if it had any.
    lends: Option<Arc<Lends>>,
}

impl Gate {
    /// A gate over `extent` held by `pin`, from a span with `lends`, if it has any:
    /// they learn that they must sweep when they leave, before the gate is
    /// registered.
    fn new(extent: Extent, pin: SharedPinId, lends: Option<&Arc<Lends>>) -> Self {
        if let Some(lends) = lends {
            lends.gated.store(true, Ordering::SeqCst);
        }
        Self {
            extent,
            pin,
            lends: lends.cloned(),
        }
    }

    /// The gated blocks.
    pub(crate) fn extent(&self) -> Extent {
        self.extent
    }

    /// The gate's own pin.
    pub(crate) fn pin(&self) -> SharedPinId {
        self.pin
    }

    fn is(&self, which: &Sweep<'_>) -> bool {
        match which {
            Sweep::All => true,
            Sweep::Pin(pin) => self.pin == *pin,
            Sweep::Lends(lends) => self.lends.as_ref().is_some_and(|g| Arc::ptr_eq(g, lends)),
        }
    }
}

/// Which gates a [`sweep`] looks at.
pub(crate) enum Sweep<'a> {
    /// Every one: after a commit, an abort or the end of a read.
    All,
    /// The one with this pin: just made.
    Pin(SharedPinId),
    /// Those of one span's lends: one of them just left.
    Lends(&'a Arc<Lends>),
}

impl core::fmt::Debug for Gate {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Gate")
            .field("extent", &self.extent)
            .field("pin", &self.pin)
            .finish_non_exhaustive()
    }
}

/// What a sweep does with a gate whose pin is the only hold left on its blocks:
/// the runs that are Deferred (their commit through, no reader on them) to discard
/// and release, and those Allocated again (their free on commit aborted) to detach.
/// A span attached from detached blocks of two epochs gives both kinds at once.
struct Ready {
    released: std::vec::Vec<Extent>,
    restored: std::vec::Vec<Extent>,
}

/// The gate's plan, or `None` while anything besides it holds a block.
fn ready<B: Backing>(space: &Space<B>, gate: &Gate) -> Option<Ready> {
    let end = gate.extent.start + gate.extent.len;
    let mut plan = Ready {
        released: std::vec::Vec::new(),
        restored: std::vec::Vec::new(),
    };
    for r in space.allocator.runs(gate.extent.start..end) {
        if r.pins != 1 {
            return None;
        }
        match r.state {
            crate::BlockState::Deferred if !r.awaiting_commit && !r.reader_held => {
                plan.released.push(r.extent);
            }
            crate::BlockState::Allocated => plan.restored.push(r.extent),
            _ => return None,
        }
    }
    Some(plan)
}

/// Releases the gates (of `which`) that nothing else holds any more: discards the
/// bytes of their Deferred blocks (with the region's discard on) and unpins, then
/// detaches their blocks an abort made Allocated again. A failed discard is counted,
/// as a drop's is, and the blocks released without it. Returns the blocks that
/// became Free.
pub(crate) fn sweep<B: Backing>(space: &Space<B>, which: Sweep<'_>) -> u64 {
    let mut ready_gates = std::vec::Vec::new();
    {
        let mut gates = space.gates.lock();
        let mut i = 0;
        while i < gates.len() {
            match gates[i]
                .is(&which)
                .then(|| ready(space, &gates[i]))
                .flatten()
            {
                Some(plan) => ready_gates.push((gates.swap_remove(i), plan)),
                None => i += 1,
            }
        }
    }
    let mut freed = 0;
    for (gate, plan) in ready_gates {
        for e in plan.released.iter().filter(|_| space.discard) {
            let bytes = space.bytes_of(*e);
            // SAFETY: nobody else can reach these bytes. Their owner gave them up (a
            // free on commit empties its span; a free or truncate shortens it); no
            // lend covers them (a lend covering any gated byte pins its block, and
            // the gate's pin is the only one left); a new lend comes from a span or a
            // lend and ends where one of them does, so none covers them; no new span
            // does either, since the gate's pin keeps the blocks Deferred until the
            // unpin below. The gate left the list under its lock, so no other sweep
            // has it. The bytes lie inside the backing: blocks the allocator handed
            // out.
            match unsafe { space.backing.discard(bytes.clone()) } {
                Ok(()) => space.count_discard(&bytes),
                Err(_) => space.count_discard_failure(),
            }
        }
        match space.allocator.unpin(gate.pin) {
            Ok(out) => freed += out.released_blocks,
            Err(e) => debug_assert!(false, "a gate's pin is live: {e:?}"),
        }
        // Detached after the unpin: a span attached while the gate still pinned the
        // blocks could free them to a Deferred that the unpin then made Free without
        // a discard.
        for e in plan.restored {
            space.put_detached(e);
        }
    }
    freed
}

/// Grows the backing to hold `new_capacity` blocks, for a region's growth: the caller
/// holds `Space::resizing`, and the blocks from the space's current `backed` to
/// `new_capacity` (inside the allocator) are the space's own, Allocated and held by
/// no span, until it frees them after this.
///
/// # Errors
///
/// The backing's; then its length is unchanged.
pub(crate) fn grow_backing<B: Backing>(
    space: &Space<B>,
    new_capacity: u64,
) -> Result<(), BackingError> {
    debug_assert!(new_capacity <= space.allocator.capacity_blocks());
    // At most the allocator's capacity, whose bytes fit what the backing may reach.
    let new_len = new_capacity * space.block_bytes;
    if new_len <= space.backing.len_bytes() {
        return Ok(());
    }
    // SAFETY: spans cover only blocks below `backed`, whose bytes lie below the
    // current length (`backed` blocks fit in it); every byte past the length is in a
    // block at or past `backed`, which the space holds itself, or in no block. So no
    // span, lend, slice or call reaches them.
    unsafe { space.backing.set_len_bytes(new_len) }
}

/// Shrinks the backing to the blocks before `tail`, for a region's shrink: the
/// caller holds `Space::resizing` and took `tail` (every block from its start to the
/// old `backed`) as the space's own, Free before, so no span covers it.
///
/// # Errors
///
/// The backing's; then its length is unchanged.
pub(crate) fn shrink_backing<B: Backing>(
    space: &Space<B>,
    tail: Extent,
) -> Result<(), BackingError> {
    // SAFETY: the bytes past the new length are those of `tail` (and any partial
    // block after it, which no block covers): the space holds `tail` itself, so no
    // span, lend or reference reaches them.
    unsafe { space.backing.set_len_bytes(tail.start * space.block_bytes) }
}

/// Discards every byte of the space's blocks, for a reset. The `&mut Space` proves
/// that nothing else can reach them: every span and lend holds an `Arc` of it.
///
/// # Errors
///
/// The backing's; then the bytes' contents are unspecified.
pub(crate) fn discard_all<B: Backing>(space: &mut Space<B>) -> Result<(), BackingError> {
    let bytes = 0..space.backed() * space.block_bytes;
    if bytes.is_empty() {
        return Ok(());
    }
    // SAFETY: the caller holds the only reference to the space (it came from
    // `Arc::get_mut`), so no span, lend or reference made from one exists: nobody
    // else can read or write these bytes during the call. They lie inside the
    // backing: `backed` blocks of it.
    unsafe { space.backing.discard(bytes.clone()) }?;
    space.count_discard(&bytes);
    Ok(())
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
        // The `Arc` in `self` keeps the backing alive past the borrow.
        Ok(unsafe { slice(&self.space.backing, &self.bytes) })
    }

    /// The owner's bytes as a mutable slice.
    pub(crate) fn as_mut_slice(&mut self) -> Result<&mut [u8], Refusal> {
        if !self.may_write() {
            return Err(Refusal::Lent);
        }
        // SAFETY: as `write_at`: no lend is alive nor can one be made while this
        // `&mut self` borrow lives, and no other span covers these bytes, so this is
        // the only reference to them. Validity as in `as_slice`.
        Ok(unsafe { slice_mut(&self.space.backing, &self.bytes) })
    }
}

impl<B: Backing> Drop for Span<B> {
    /// Frees what is left, discarding as well as it can: a failed discard is counted
    /// and the blocks are freed without it.
    fn drop(&mut self) {
        let discard = self.space.discard;
        match self.give_up(0, discard) {
            Ok(()) => {}
            Err(Refusal::Backing(_)) => {
                self.space.count_discard_failure();
                let undiscarded = self.give_up(0, false);
                debug_assert!(undiscarded.is_ok(), "{undiscarded:?}");
            }
            Err(other) => debug_assert!(false, "freeing a span failed: {other:?}"),
        }
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

/// A span's bytes, lent to a pin guard: shared (read-only) or exclusive. It holds an
/// allocator pin over its blocks until it leaves.
pub(crate) struct Lent<B: Backing> {
    space: Arc<Space<B>>,
    /// The bytes this lend covers: the owner's when it was made.
    bytes: Range<u64>,
    /// `None` once it has left.
    lends: Option<Arc<Lends>>,
    exclusive: bool,
    pin: SharedPinId,
}

impl<B: Backing> Lent<B> {
    /// The bytes this lend covers.
    pub(crate) fn bytes(&self) -> Range<u64> {
        self.bytes.clone()
    }

    /// The blocks this lend pins.
    pub(crate) fn extent(&self) -> Extent {
        self.space.blocks_of(&self.bytes)
    }

    /// The allocator pin this lend holds.
    pub(crate) fn pin_id(&self) -> SharedPinId {
        self.pin
    }

    /// Whether the region discards released bytes.
    pub(crate) fn discards(&self) -> bool {
        self.space.discard
    }

    /// The 64-bit token of this lend's pin.
    pub(crate) fn token(&self) -> u64 {
        self.space
            .allocator
            .pin_token(self.pin)
            .expect("a live lend's pin is live")
    }

    /// Reads `buf.len()` bytes at `offset_bytes` (relative).
    pub(crate) fn read_at(&self, offset_bytes: u64, buf: &mut [u8]) -> Result<(), Refusal> {
        let at = inside(offset_bytes, buf.len(), &self.bytes)?;
        // SAFETY: while this lend lives, only an exclusive lend writes these bytes, and
        // if one is alive it is `self` (it excludes every other lend and the owner), of
        // which we hold `&self`. Bytes the owner gave up stay ours until we leave.
        unsafe { self.space.backing.read_at(at, buf) }.map_err(Refusal::Backing)
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
        unsafe { self.space.backing.write_at(at, buf) }.map_err(Refusal::Backing)
    }

    /// The address of the first byte, for memory backings.
    pub(crate) fn address(&self) -> Option<NonNull<u8>> {
        let base = self.space.backing.base_address()?;
        // `wrapping_add` keeps this safe; the offset is inside the backing, so this is
        // the plain address of that byte.
        NonNull::new(base.as_ptr().wrapping_add(self.bytes.start as usize))
    }

    /// Another shared lend of the same bytes, with its own pin; refused for an
    /// exclusive lend.
    pub(crate) fn share(&self) -> Result<Self, Refusal> {
        let lends = self.lends.as_ref().ok_or(Refusal::Lent)?;
        if self.exclusive {
            return Err(Refusal::Lent);
        }
        let mut state = lends.state.lock();
        let pin = self
            .space
            .allocator
            .pin_owned(self.extent(), PinOptions::new())
            .map_err(Refusal::Pin)?;
        state.ends.push(self.bytes.end);
        drop(state);
        Ok(Self {
            space: Arc::clone(&self.space),
            bytes: self.bytes.clone(),
            lends: Some(Arc::clone(lends)),
            exclusive: false,
            pin,
        })
    }

    /// Leaves: bytes that only this lend still held (the owner gave them up and no
    /// other lend covers them) are discarded first if `discard`, then the pin goes, and
    /// their blocks become Free.
    ///
    /// # Errors
    ///
    /// The discard's error, with the lend given back still in place (the bytes it
    /// alone held then have unspecified contents).
    #[allow(clippy::result_large_err)] // the lend comes back by value; a cold path
    pub(crate) fn leave(mut self, discard: bool) -> Result<(), (Self, Refusal)> {
        match self.leave_now(discard) {
            Ok(()) => Ok(()),
            Err(refusal) => Err((self, refusal)),
        }
    }

    fn leave_now(&mut self, discard: bool) -> Result<(), Refusal> {
        let Some(lends) = self.lends.as_ref() else {
            return Ok(());
        };
        let mut state = lends.state.lock();
        let from = state.held_end_besides(self.bytes.end);
        // Bytes a gate holds are its sweep's to discard, once their commit is through.
        let from = from.max(state.gate_end);
        let only_mine = from.clamp(lends.start, self.bytes.end)..self.bytes.end;
        let mut reader_gate = None;
        if discard && !only_mine.is_empty() && self.space.allocator.has_readers() {
            // A reader may hold these blocks past our pin: a gate of their own keeps
            // them, undiscarded, until the sweep finds them released.
            let extent = self.space.blocks_of(&only_mine);
            let pin = self
                .space
                .allocator
                .pin_owned(extent, PinOptions::new())
                .map_err(Refusal::Pin)?;
            // A lend that has just left may still pin some of these blocks: it
            // sweeps them.
            reader_gate = Some(Gate::new(extent, pin, Some(lends)));
        } else if discard && !only_mine.is_empty() {
            // SAFETY: nobody else holds `only_mine`: the owner gave it up (its end is at
            // or before the start), and every other live lend ends at or before the
            // start. We hold the lend lock, so none of that changes during the call: a
            // new lend ends where the owner does or where a listed lend does. Our pin
            // keeps the blocks Deferred, so no new span covers them. We are still
            // listed, so a panic in `discard` leaves everything as it was.
            unsafe { self.space.backing.discard(only_mine.clone()) }.map_err(Refusal::Backing)?;
            self.space.count_discard(&only_mine);
        }
        let listed = state.ends.remove(self.bytes.end);
        debug_assert!(listed, "a live lend is listed");
        if self.exclusive {
            state.exclusive = false;
        }
        drop(state);
        let lends = self.lends.take();
        // After the bytes are out of every reach: their blocks may become Free now.
        let unpinned = self.space.allocator.unpin(self.pin);
        debug_assert!(unpinned.is_ok(), "{unpinned:?}");
        if let Some(gate) = reader_gate {
            self.space.add_gate(gate);
        }
        // Read after the unpin: a gate registered before it saw our pin, and then
        // the flag was already set.
        if let Some(lends) = lends.filter(|l| l.gated.load(Ordering::SeqCst)) {
            // Perhaps the last holder but the gate: its blocks may go now.
            sweep(&self.space, Sweep::Lends(&lends));
        }
        Ok(())
    }
}

impl<B: MemoryBacking> Lent<B> {
    /// The lent bytes as a slice.
    pub(crate) fn as_slice(&self) -> &[u8] {
        // SAFETY: as `read_at`: no one but `self` may write these bytes while this lend
        // lives, and a write through `self` needs `&mut self`. The `Arc` keeps the
        // memory alive.
        unsafe { slice(&self.space.backing, &self.bytes) }
    }

    /// The lent bytes as a mutable slice; `None` for a shared lend.
    pub(crate) fn as_mut_slice(&mut self) -> Option<&mut [u8]> {
        if !self.exclusive {
            return None;
        }
        // SAFETY: as `write_at`: the only lend alive, the owner shut out, and this
        // `&mut self` borrow rules out other references from `self`.
        Some(unsafe { slice_mut(&self.space.backing, &self.bytes) })
    }
}

impl<B: Backing> Drop for Lent<B> {
    /// Leaves, discarding as well as it can: a failed discard is counted and the lend
    /// leaves without it.
    fn drop(&mut self) {
        if self.leave_now(self.space.discard).is_err() {
            self.space.count_discard_failure();
            let undiscarded = self.leave_now(false);
            debug_assert!(undiscarded.is_ok(), "{undiscarded:?}");
        }
    }
}

impl<B: Backing> core::fmt::Debug for Lent<B> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Lent")
            .field("bytes", &self.bytes)
            .field("exclusive", &self.exclusive)
            .field("pin", &self.pin)
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

/// `bytes` of a memory backing as a slice.
///
/// # Safety
///
/// `bytes` is inside the backing (true of every span's and lend's bytes: `Space::new`
/// checks the blocks fit), the backing outlives `'a`, and nothing writes the bytes
/// during `'a`.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BlockState, HeapBacking, SharedAllocator};
    use std::vec;

    const BLOCK: u64 = 4;

    /// The multiset of lend ends against a plain list, over random pushes and
    /// removes: every answer the lends ask of it.
    #[test]
    fn ends_match_a_plain_list() {
        let mut ends = Ends::default();
        let mut plain: std::vec::Vec<u64> = std::vec::Vec::new();
        let mut x = 7u64;
        for _ in 0..5000 {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let end = (x >> 33) % 6;
            if (x >> 20) % 3 == 0 {
                let at = plain.iter().position(|&e| e == end);
                assert_eq!(ends.remove(end), at.is_some());
                if let Some(at) = at {
                    plain.swap_remove(at);
                }
            } else {
                ends.push(end);
                plain.push(end);
            }
            assert_eq!(ends.is_empty(), plain.is_empty());
            assert_eq!(ends.nearest(), plain.iter().copied().min());
            for mine in 0..6 {
                let besides = plain.iter().position(|&e| e == mine).map(|at| {
                    let mut rest = plain.clone();
                    rest.swap_remove(at);
                    rest.into_iter().max()
                });
                if let Some(want) = besides {
                    assert_eq!(
                        ends.furthest_besides(mine),
                        want,
                        "{plain:?} besides {mine}"
                    );
                }
            }
        }
    }

    fn space(blocks: u64) -> Arc<Space<HeapBacking>> {
        let heap = HeapBacking::new(blocks * BLOCK).unwrap();
        Arc::new(Space::new(heap, BLOCK, SharedAllocator::new(blocks), true))
    }

    fn all_bytes(space: &Space<HeapBacking>) -> std::vec::Vec<u8> {
        let mut all = vec![1u8; space.backing.len_bytes() as usize];
        // SAFETY: the test reads only when no span or lend is writing.
        unsafe { space.backing.read_at(0, &mut all).unwrap() };
        all
    }

    fn lend_view(s: &Span<HeapBacking>) -> Option<(u64, std::vec::Vec<u64>)> {
        let l = s.lends.get()?;
        let st = l.state.lock();
        // Each lend's end, in order.
        let ends = st
            .ends
            .count
            .iter()
            .flat_map(|(&e, &c)| core::iter::repeat_n(e, c));
        Some((st.owner_end, ends.collect()))
    }

    #[test]
    fn owner_is_shut_out_by_an_exclusive_lend_only_while_it_lives() {
        let sp = space(16);
        let mut s = Span::allocate(&sp, Request::new(16)).unwrap();
        s.as_mut_slice().unwrap().fill(7);
        let mut lent = s.lend_exclusive().unwrap();
        assert!(matches!(s.as_slice(), Err(Refusal::Lent)));
        assert!(matches!(s.write_at(0, &[1]), Err(Refusal::Lent)));
        assert!(matches!(s.lend(), Err(Refusal::Lent)));
        assert!(matches!(lent.share(), Err(Refusal::Lent)));
        lent.as_mut_slice().unwrap()[0] = 9;
        assert_eq!(sp.allocator.pin_count(0), 1);
        lent.leave(true).unwrap();
        assert_eq!(sp.allocator.pin_count(0), 0);
        assert_eq!(s.as_slice().unwrap()[..2], [9, 7]); // the owner held it all: no discard
        s.write_at(1, &[3]).unwrap();
    }

    #[test]
    fn shared_lends_let_the_owner_read_but_not_write() {
        let sp = space(4);
        let mut s = Span::allocate(&sp, Request::new(4)).unwrap();
        let a = s.lend().unwrap();
        let b = a.share().unwrap();
        assert_eq!(sp.allocator.pin_count(0), 2);
        assert!(s.as_slice().is_ok());
        assert!(matches!(s.as_mut_slice(), Err(Refusal::Lent)));
        assert!(matches!(s.lend_exclusive(), Err(Refusal::Lent)));
        drop(a);
        assert!(matches!(s.as_mut_slice(), Err(Refusal::Lent)));
        drop(b);
        assert!(s.as_mut_slice().is_ok());
        assert_eq!(sp.allocator.pin_count(0), 0);
    }

    #[test]
    fn given_up_bytes_go_to_the_last_lend_that_covers_them() {
        // blocks:  0        2        3        4
        // lend a:  [=========================)       made at 4 blocks
        // owner:   [========)                       truncated to 2
        // lend b:  [========)                       made after the truncate
        // a leaves: blocks 2..4 are held by no one else -> a discards them, and they
        // become Free when its pin goes.
        let sp = space(4);
        let mut s = Span::allocate(&sp, Request::new(4)).unwrap();
        s.as_mut_slice().unwrap().fill(5);
        let a = s.lend().unwrap();
        s.give_up(2, true).unwrap();
        assert_eq!(sp.allocator.state_of(3), Some(BlockState::Deferred));
        assert_eq!(a.as_slice(), [5; 16]); // still readable: nobody discarded it
        let b = s.lend().unwrap();
        assert_eq!(lend_view(&s), Some((8, vec![8, 16])));
        a.leave(true).unwrap();
        assert_eq!(sp.allocator.state_of(3), Some(BlockState::Free));
        assert_eq!(all_bytes(&sp)[8..], [0; 8]);
        assert_eq!(b.as_slice(), [5; 8]);
        // The owner gives up the rest while b lives: b is the last holder.
        s.give_up(0, true).unwrap();
        assert_eq!(sp.allocator.state_of(0), Some(BlockState::Deferred));
        b.leave(true).unwrap();
        assert_eq!(all_bytes(&sp), [0; 16]);
        assert_eq!(sp.allocator.stats().space.free_blocks, 4);
        drop(s); // nothing left to free
        sp.check_invariants().unwrap();
    }

    #[test]
    fn an_unlent_truncate_discards_and_frees_at_once_and_bounds_are_checked() {
        let sp = space(4);
        let mut s = Span::allocate(&sp, Request::new(4)).unwrap();
        s.as_mut_slice().unwrap().fill(5);
        s.give_up(1, true).unwrap();
        assert_eq!(s.bytes(), 0..4);
        assert_eq!(sp.allocator.stats().space.free_blocks, 3);
        assert!(matches!(
            s.give_up(2, true),
            Err(Refusal::OutOfBounds { .. })
        ));
        assert!(matches!(
            s.give_up(u64::MAX, true),
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
        assert_eq!(all_bytes(&sp)[4..], [0; 12]);
        let e = s.detach().unwrap();
        assert_eq!(e, Extent::new(0, 1));
        assert!(Span::attach(&sp, Extent::new(0, 2)).is_none());
        let again = Span::attach(&sp, e).unwrap();
        assert_eq!(again.as_slice().unwrap(), [5; 4]);
    }

    #[test]
    #[should_panic(expected = "do not fit")]
    fn a_space_past_the_backing_is_a_bug() {
        let heap = HeapBacking::new(8).unwrap();
        let _ = Space::new(heap, 4, SharedAllocator::new(3), true);
    }
}
