//! Operation sequences and [`Runner`], which plays them on a [`Checked`] allocator.

use std::vec::Vec;

use super::Checked;
use crate::{
    AllocError, EpochError, Extent, ExtentAllocator, PinError, PinId, PinMode, Policy, ReaderId,
    Request, Reservation, ReservationError,
};

/// A block position: a fraction of the space, or a raw address (possibly outside it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pos {
    /// `capacity * permille / 1000`.
    Within(u16),
    /// This address, whatever the capacity.
    Raw(u64),
}

impl Pos {
    /// The address in a space of `capacity` blocks.
    ///
    /// ```
    /// use pinalloc::testing::Pos;
    /// assert_eq!(Pos::Within(500).resolve(64), 32);
    /// assert_eq!(Pos::Raw(7).resolve(4), 7);
    /// ```
    #[must_use]
    pub fn resolve(self, capacity: u64) -> u64 {
        match self {
            Pos::Within(permille) => (u128::from(capacity) * u128::from(permille) / 1000)
                .min(u128::from(u64::MAX)) as u64,
            Pos::Raw(raw) => raw,
        }
    }
}

/// A placement policy, with positions relative to the space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyOp {
    /// [`Policy::BestFit`].
    Best,
    /// [`Policy::FirstFit`].
    First,
    /// [`Policy::Near`].
    Near(Pos),
    /// [`Policy::Exact`]; a position inside the space is rounded down to the
    /// alignment, so that most exact requests are well formed.
    Exact(Pos),
}

/// How a request's maximum relates to its minimum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extra {
    /// An exact length.
    None,
    /// `min..=min + n` (saturating).
    Plus(u64),
    /// `min..=min - 1`: an empty range, which must be refused.
    Below,
}

/// What a pin covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinTarget {
    /// Part of a live allocation (the in-flight I/O case): the `index`th one (modulo
    /// how many there are), less its first `skip` blocks.
    Live {
        /// Which live allocation.
        index: usize,
        /// Blocks skipped at its start.
        skip: u64,
    },
    /// Anything at all: Free blocks, Deferred blocks, bad extents.
    Raw {
        /// Where.
        start: Pos,
        /// How long.
        len: u64,
    },
}

/// One operation of a sequence. Indexes pick among what the runner holds (live
/// allocations, reservations, pins, readers) modulo how many there are; with none,
/// the operation is skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `allocate`, or `allocate_reserved` from the `reservation`th reservation.
    Allocate {
        /// The least blocks wanted.
        min: u64,
        /// The most, relative to `min`.
        extra: Extra,
        /// The alignment (anything: bad ones must be refused).
        align: u64,
        /// Where.
        policy: PolicyOp,
        /// From which reservation, if any.
        reservation: Option<usize>,
    },
    /// `allocate_many`, or `allocate_many_reserved`.
    AllocateMany {
        /// Blocks wanted in all.
        total: u64,
        /// From which reservation, if any.
        reservation: Option<usize>,
    },
    /// Free part of a live extent: skip some blocks, then take some (all the rest
    /// when `None`).
    FreeLive {
        /// Which live allocation.
        index: usize,
        /// Blocks skipped at its start.
        skip: u64,
        /// Blocks freed.
        take: Option<u64>,
        /// `free_on_commit` rather than `free`.
        on_commit: bool,
    },
    /// Free anything at all: double frees, never-allocated runs, bad extents.
    FreeRaw {
        /// Where.
        start: Pos,
        /// How long.
        len: u64,
        /// `free_on_commit` rather than `free`.
        on_commit: bool,
    },
    /// `reserve`.
    Reserve {
        /// Blocks.
        len: u64,
    },
    /// `unreserve` the `index`th reservation.
    Unreserve {
        /// Which reservation.
        index: usize,
    },
    /// Spend (`unreserve` false) or unreserve a reservation made by another allocator:
    /// both must be refused.
    Foreign {
        /// Unreserve rather than spend.
        unreserve: bool,
    },
    /// `pin_with`.
    Pin {
        /// What it covers.
        target: PinTarget,
        /// [`PinMode::Blocking`] rather than deferring.
        blocking: bool,
    },
    /// `unpin` the `index`th live pin.
    Unpin {
        /// Which pin.
        index: usize,
    },
    /// Unpin an id that is already unpinned, or another allocator's: refused.
    UnpinStale {
        /// Another allocator's rather than an old one.
        foreign: bool,
    },
    /// Commit the open epoch plus `offset` (anything but 0 must be refused).
    Commit {
        /// Added to the open epoch.
        offset: i64,
    },
    /// A step of a transaction other than a plain commit: prepare, finish or abort.
    Txn {
        /// Which step.
        step: TxnStep,
        /// Added to the open epoch (prepare, abort) or to the newest prepared one, the
        /// open less one (finish): 0 is the right epoch, anything else may be refused.
        offset: i64,
    },
    /// `grow` (or `shrink`) to the capacity plus `delta`: the model holds a record
    /// per block, so growth stops at twice the first capacity (at least 64 blocks);
    /// the wrong direction must be refused.
    Resize {
        /// `shrink` rather than `grow`.
        shrink: bool,
        /// Added to the capacity (saturating at 0 and `u64::MAX`).
        delta: i64,
    },
    /// `reset`: every handle the caller held goes stale.
    Reset,
    /// `begin_read`.
    BeginRead,
    /// `end_read` the `index`th live reader.
    EndRead {
        /// Which reader.
        index: usize,
    },
    /// End a reader that already ended, or another allocator's: refused.
    EndReadStale {
        /// Another allocator's rather than an old one.
        foreign: bool,
    },
}

/// The transaction steps of [`Op::Txn`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnStep {
    /// `prepare_commit`.
    Prepare,
    /// `finish_commit`.
    Finish,
    /// `abort`.
    Abort,
    /// `abort_all`.
    AbortAll,
}

/// Plays [`Op`]s on a [`Checked`] allocator, keeping track of what the caller holds:
/// live extents, reservations, pins and readers. Every call is checked against the
/// model (see [`Checked`]); the runner adds its own checks on top: a fresh extent
/// overlaps nothing live, `allocate_many` uses the fewest extents, and the blocks the
/// caller believes live are exactly the Allocated ones.
///
/// ```
/// use pinalloc::testing::{Op, Runner};
///
/// let mut run = Runner::new(64, &[]);
/// run.apply(&Op::Reserve { len: 8 });
/// run.apply(&Op::BeginRead);
/// run.apply(&Op::Commit { offset: 0 });
/// run.finish(); // rebuilds from the durable view, then lets go of everything
/// ```
///
/// # Panics
///
/// When pinalloc and the model disagree, with what differed.
#[derive(Debug)]
pub struct Runner {
    alloc: Checked,
    live: Vec<Extent>,
    reservations: Vec<Reservation>,
    pins: Vec<PinId>,
    unpinned: Vec<PinId>,
    readers: Vec<ReaderId>,
    ended: Vec<ReaderId>,
    foreign: ExtentAllocator,
    /// Where `Op::Resize` stops growing the space.
    max_capacity: u64,
    /// Tokens of pins since unpinned.
    stale_tokens: Vec<u64>,
}

/// Plays `ops` on a space of `capacity` blocks, with `mount` (positions and lengths;
/// overlapping ones dropped) Allocated at mount time, then [`Runner::finish`]es.
///
/// ```
/// use pinalloc::testing::{Op, PinTarget, PolicyOp, Extra, run_ops};
///
/// run_ops(32, &[], &[
///     Op::Allocate { min: 8, extra: Extra::None, align: 1, policy: PolicyOp::Best, reservation: None },
///     Op::Pin { target: PinTarget::Live { index: 0, skip: 2 }, blocking: false },
///     Op::FreeLive { index: 0, skip: 0, take: None, on_commit: false },
///     Op::Unpin { index: 0 },
/// ]);
/// ```
///
/// # Panics
///
/// When pinalloc and the model disagree, with what differed.
pub fn run_ops(capacity: u64, mount: &[(Pos, u64)], ops: &[Op]) {
    let mut run = Runner::new(capacity, mount);
    for op in ops {
        run.apply(op);
    }
    run.finish();
}

impl Runner {
    /// A space of `capacity` blocks. `mount` lists (position, length) pairs of blocks
    /// already Allocated at mount time, as `from_allocated_extents` rebuilds them;
    /// overlapping ones are dropped.
    ///
    /// ```
    /// use pinalloc::testing::{Pos, Runner};
    /// let run = Runner::new(100, &[(Pos::Within(500), 10)]);
    /// assert_eq!(run.checked().model().allocated_blocks(), 10);
    /// ```
    #[must_use]
    pub fn new(capacity: u64, mount: &[(Pos, u64)]) -> Self {
        let mut mounted: Vec<Extent> = Vec::new();
        for &(pos, len) in mount {
            let start = pos.resolve(capacity).min(capacity.saturating_sub(1));
            let e = Extent::new(start, len.min(capacity - start));
            if e.len > 0 && !mounted.iter().any(|m| m.overlaps(&e)) {
                mounted.push(e);
            }
        }
        let alloc = Checked::from_allocated_extents(capacity, mounted.iter().copied())
            .expect("disjoint mount extents inside the space");
        Runner {
            alloc,
            live: mounted,
            reservations: Vec::new(),
            pins: Vec::new(),
            unpinned: Vec::new(),
            readers: Vec::new(),
            ended: Vec::new(),
            foreign: ExtentAllocator::new(capacity.max(1)),
            max_capacity: capacity.saturating_mul(2).max(64),
            stale_tokens: Vec::new(),
        }
    }

    /// The checked allocator.
    ///
    /// ```
    /// let run = pinalloc::testing::Runner::new(8, &[]);
    /// assert_eq!(run.checked().allocator().capacity_blocks(), 8);
    /// ```
    #[must_use]
    pub fn checked(&self) -> &Checked {
        &self.alloc
    }

    /// The extents the caller holds Allocated.
    ///
    /// ```
    /// let run = pinalloc::testing::Runner::new(8, &[]);
    /// assert!(run.live().is_empty());
    /// ```
    #[must_use]
    pub fn live(&self) -> &[Extent] {
        &self.live
    }

    fn capacity(&self) -> u64 {
        self.alloc.model().capacity()
    }

    /// Plays one operation.
    ///
    /// ```
    /// use pinalloc::testing::{Op, Runner};
    /// let mut run = Runner::new(8, &[]);
    /// run.apply(&Op::Commit { offset: 1 }); // refused, as the model says
    /// ```
    ///
    /// # Panics
    ///
    /// When pinalloc and the model disagree.
    pub fn apply(&mut self, op: &Op) {
        let capacity = self.capacity();
        match *op {
            Op::Allocate {
                min,
                extra,
                align,
                policy,
                reservation,
            } => {
                let policy = match policy {
                    PolicyOp::Best => Policy::BestFit,
                    PolicyOp::First => Policy::FirstFit,
                    PolicyOp::Near(p) => Policy::Near(p.resolve(capacity)),
                    PolicyOp::Exact(Pos::Within(pm)) if align.is_power_of_two() => {
                        Policy::Exact(Pos::Within(pm).resolve(capacity) & !(align - 1))
                    }
                    PolicyOp::Exact(p) => Policy::Exact(p.resolve(capacity)),
                };
                let max = match extra {
                    Extra::None => min,
                    Extra::Plus(x) => min.saturating_add(x),
                    Extra::Below => min.wrapping_sub(1),
                };
                let request = Request::range(min..=max).align(align).policy(policy);
                let got = match reservation.and_then(|i| pick(&self.reservations, i)) {
                    Some(i) => self
                        .alloc
                        .allocate_reserved(&mut self.reservations[i], request),
                    None => self.alloc.allocate(request),
                };
                if let Ok(e) = got {
                    self.take_new(e);
                }
            }
            Op::AllocateMany { total, reservation } => {
                let runs_before = self.alloc.model().free_runs();
                let got = match reservation.and_then(|i| pick(&self.reservations, i)) {
                    Some(i) => self
                        .alloc
                        .allocate_many_reserved(&mut self.reservations[i], total),
                    None => self.alloc.allocate_many(total),
                };
                if let Ok(extents) = got {
                    assert_eq!(extents.iter().map(|e| e.len).sum::<u64>(), total);
                    // Independently of how the model picks them: the fewest extents
                    // that can make up `total` is the shortest prefix of the runs,
                    // longest first.
                    let mut lens: Vec<u64> = runs_before.iter().map(|r| r.len).collect();
                    lens.sort_unstable_by(|a, b| b.cmp(a));
                    let mut sum = 0;
                    let fewest = lens
                        .iter()
                        .take_while(|&&l| {
                            let short = sum < total;
                            sum += l;
                            short
                        })
                        .count();
                    assert_eq!(
                        extents.len(),
                        fewest,
                        "allocate_many({total}) used more extents than needed"
                    );
                    for e in extents {
                        self.take_new(e);
                    }
                }
            }
            Op::FreeLive {
                index,
                skip,
                take,
                on_commit,
            } => {
                let Some(i) = pick(&self.live, index) else {
                    return;
                };
                let e = self.live[i];
                let skip = skip.min(e.len - 1);
                let take = take.map_or(e.len - skip, |t| t.min(e.len - skip));
                self.free(Extent::new(e.start + skip, take), on_commit);
            }
            Op::FreeRaw {
                start,
                len,
                on_commit,
            } => self.free(Extent::new(start.resolve(capacity), len), on_commit),
            Op::Reserve { len } => {
                if let Ok(res) = self.alloc.reserve(len) {
                    self.reservations.push(res);
                }
            }
            Op::Unreserve { index } => {
                if let Some(i) = pick(&self.reservations, index) {
                    let res = self.reservations.swap_remove(i);
                    assert!(self.alloc.unreserve(res).is_ok());
                }
            }
            Op::Foreign { unreserve } => {
                let Ok(mut res) = self.foreign.reserve(1) else {
                    return;
                };
                // Ids are per allocator, so a foreign id may equal a local one: only
                // the owner check can tell them apart.
                let id = res.id();
                if unreserve {
                    match self.alloc.unreserve(res) {
                        Err(ReservationError::Unknown { reservation }) => {
                            assert_eq!(reservation.id(), id);
                            assert_eq!(self.foreign.unreserve(reservation).ok(), Some(1));
                        }
                        other => panic!("a foreign unreserve gave {other:?}"),
                    }
                } else {
                    let got = self.alloc.allocate_reserved(&mut res, Request::new(1));
                    assert_eq!(got, Err(AllocError::UnknownReservation { id }));
                    assert!(self.foreign.unreserve(res).is_ok());
                }
            }
            Op::Pin { target, blocking } => {
                let e = match target {
                    PinTarget::Live { index, skip } => {
                        let Some(i) = pick(&self.live, index) else {
                            return;
                        };
                        let l = self.live[i];
                        let skip = skip.min(l.len - 1);
                        Extent::new(l.start + skip, l.len - skip)
                    }
                    PinTarget::Raw { start, len } => Extent::new(start.resolve(capacity), len),
                };
                let mode = if blocking {
                    PinMode::Blocking
                } else {
                    PinMode::Deferring
                };
                if let Ok(id) = self.alloc.pin_with(e, mode) {
                    self.pins.push(id);
                }
            }
            Op::Unpin { index } => {
                if let Some(i) = pick(&self.pins, index) {
                    let mut id = self.pins.swap_remove(i);
                    if index % 2 == 1 {
                        // Through a token, as an I/O completion would: the same pin.
                        let token = self.alloc.pin_token(id).expect("a live pin");
                        assert_eq!(self.alloc.pin_token(id), Ok(token), "one token per pin");
                        id = self.alloc.pin_of_token(token).expect("a live pin's token");
                        self.stale_tokens.push(token);
                    }
                    assert!(self.alloc.unpin(id).is_ok());
                    self.unpinned.push(id);
                }
            }
            Op::UnpinStale { foreign } => {
                let id = if foreign {
                    // A throwaway allocator, so the shared foreign one stays unpinned.
                    let mut other = ExtentAllocator::new(1);
                    other.pin(Extent::new(0, 1)).expect("a pin of a free block")
                } else if let Some(&id) = self.unpinned.last() {
                    id
                } else {
                    return;
                };
                assert_eq!(self.alloc.unpin(id).err(), Some(PinError::Unknown { id }));
                assert_eq!(self.alloc.pin_token(id), Err(PinError::Unknown { id }));
                // A gone pin's token, or another allocator's: refused.
                let token = if foreign {
                    let mut other = ExtentAllocator::new(1);
                    let theirs = other.pin(Extent::new(0, 1)).expect("a pin of a free block");
                    other.pin_token(theirs).expect("a live pin")
                } else if let Some(&t) = self.stale_tokens.last() {
                    t
                } else {
                    return;
                };
                assert_eq!(
                    self.alloc.pin_of_token(token),
                    Err(PinError::UnknownToken { token })
                );
            }
            Op::Commit { offset } => {
                let epoch = self.alloc.model().open.wrapping_add_signed(offset);
                let _ = self.alloc.commit(epoch);
            }
            Op::Txn { step, offset } => {
                let open = self.alloc.model().open;
                let epoch = match step {
                    TxnStep::Finish => open - 1,
                    _ => open,
                }
                .wrapping_add_signed(offset);
                let undone = match step {
                    TxnStep::Prepare => self.alloc.prepare_commit(epoch).map(|_| false),
                    TxnStep::Finish => self.alloc.finish_commit(epoch).map(|_| false),
                    TxnStep::Abort => self.alloc.abort(epoch).map(|o| o.restored_blocks > 0),
                    TxnStep::AbortAll => self.alloc.abort_all(epoch).map(|_| true),
                };
                if undone == Ok(true) {
                    // Blocks came back or went: the caller holds what is Allocated,
                    // in maximal runs (any Allocated run frees whole).
                    self.live = self
                        .alloc
                        .model()
                        .runs(|b| b.state == crate::BlockState::Allocated);
                }
            }
            Op::Resize { shrink, delta } => {
                let capacity = self.capacity();
                let mut to = capacity.saturating_add_signed(delta);
                if to > capacity {
                    to = to.min(self.max_capacity.max(capacity));
                }
                if shrink {
                    let _ = self.alloc.shrink(to);
                } else {
                    let _ = self.alloc.grow(to);
                }
            }
            Op::Reset => {
                self.alloc.reset();
                self.live.clear();
                self.reservations.clear();
                self.unpinned.append(&mut self.pins);
                self.ended.append(&mut self.readers);
            }
            Op::BeginRead => {
                let id = self.alloc.begin_read();
                self.readers.push(id);
            }
            Op::EndRead { index } => {
                if let Some(i) = pick(&self.readers, index) {
                    let id = self.readers.swap_remove(i);
                    assert!(self.alloc.end_read(id).is_ok());
                    self.ended.push(id);
                }
            }
            Op::EndReadStale { foreign } => {
                let id = if foreign {
                    self.foreign.begin_read()
                } else if let Some(&id) = self.ended.last() {
                    id
                } else {
                    return;
                };
                assert_eq!(
                    self.alloc.end_read(id).err(),
                    Some(EpochError::UnknownReader { id })
                );
            }
        }
        let live_blocks: u64 = self.live.iter().map(|e| e.len).sum();
        assert_eq!(
            live_blocks,
            self.alloc.allocator().stats().allocated_blocks,
            "after {op:?}: the runner lost track of live blocks"
        );
    }

    /// Frees `e` in both; on success, trims the live list.
    fn free(&mut self, e: Extent, on_commit: bool) {
        let got = if on_commit {
            self.alloc.free_on_commit(e)
        } else {
            self.alloc.free(e)
        };
        if got.is_ok() {
            self.forget_live(e);
        }
    }

    /// A fresh allocation: in bounds, and overlapping nothing the caller holds.
    fn take_new(&mut self, e: Extent) {
        assert!(e.len > 0, "an empty extent");
        assert!(
            e.checked_end().is_some_and(|end| end <= self.capacity()),
            "{e} leaves the space"
        );
        for l in &self.live {
            assert!(!l.overlaps(&e), "{e} overlaps live {l}");
        }
        self.live.push(e);
    }

    /// Drops live extents covered by a successful free (it freed only Allocated
    /// blocks, so it lies inside the union of live extents).
    fn forget_live(&mut self, freed: Extent) {
        let mut kept = Vec::new();
        for l in self.live.drain(..) {
            if !l.overlaps(&freed) {
                kept.push(l);
                continue;
            }
            let (ls, le) = (l.start, l.start + l.len);
            let (fs, fe) = (freed.start, freed.start + freed.len);
            if ls < fs {
                kept.push(Extent::new(ls, fs - ls));
            }
            if fe < le {
                kept.push(Extent::new(fe, le - fe));
            }
        }
        self.live = kept;
    }

    /// Ends the run: rebuilds allocators from the durable view (what a crash would
    /// leave) and from the live allocations and checks them against the model, then
    /// unpins every pin, ends every reader, commits, unreserves every reservation and
    /// frees everything. The whole space must then be free (invariant 7: nothing
    /// leaked).
    ///
    /// # Panics
    ///
    /// When anything disagrees or leaked.
    pub fn finish(mut self) {
        self.rebuild();
        for id in core::mem::take(&mut self.pins) {
            assert!(self.alloc.unpin(id).is_ok());
        }
        for id in core::mem::take(&mut self.readers) {
            assert!(self.alloc.end_read(id).is_ok());
        }
        let open = self.alloc.model().open;
        assert!(self.alloc.commit(open).is_ok());
        for res in core::mem::take(&mut self.reservations) {
            assert!(self.alloc.unreserve(res).is_ok());
        }
        for e in core::mem::take(&mut self.live) {
            let freed = self.alloc.free(e).map(|o| o.freed_blocks);
            assert_eq!(freed, Ok(e.len), "nothing holds {e}");
        }
        let cap = self.capacity();
        let all: Vec<Extent> = if cap == 0 {
            Vec::new()
        } else {
            std::vec![Extent::new(0, cap)]
        };
        let a = self.alloc.allocator();
        assert_eq!(a.free_extents().collect::<Vec<_>>(), all, "leak");
        assert_eq!(a.stats().deferred_blocks, 0, "leak");
    }

    /// Mount-time rebuilds: from the durable view and from the live allocations.
    fn rebuild(&self) {
        let cap = self.capacity();
        let model = self.alloc.model();
        let durable = self.alloc.allocator().durable_free_extents();
        let from_durable = ExtentAllocator::from_free_extents(cap, durable.iter().rev().copied())
            .unwrap_or_else(|e| panic!("a rebuild from the durable view was refused: {e}"));
        assert_eq!(
            from_durable.free_extents().collect::<Vec<_>>(),
            model.durable_runs(),
            "rebuilt from the durable view"
        );
        let from_live = ExtentAllocator::from_allocated_extents(cap, self.live.iter().copied())
            .unwrap_or_else(|e| panic!("a rebuild from the live extents was refused: {e}"));
        let not_live = model.runs(|b| b.state != crate::BlockState::Allocated);
        assert_eq!(
            from_live.free_extents().collect::<Vec<_>>(),
            not_live,
            "rebuilt from the live extents"
        );
        for rebuilt in [from_durable, from_live] {
            if let Err(v) = rebuilt.check_invariants() {
                panic!("a rebuilt allocator: {v}");
            }
        }
    }
}

fn pick<T>(items: &[T], index: usize) -> Option<usize> {
    (!items.is_empty()).then(|| index % items.len())
}
