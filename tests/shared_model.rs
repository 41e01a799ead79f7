//! `SharedAllocator`, one thread at a time, against the per-block reference model after
//! every operation, on spaces cut into 1 to 5 groups with extents freed and pinned
//! across group boundaries, and on spaces that end at or near the top of the `u64`
//! space (cut into up to 1,000 groups), where the model covers a window of blocks at
//! the top and everything below it is Allocated at mount.
//!
//! Placement differs from the model's (groups, rotors), so an allocation is checked
//! by what it returned: blocks the model says are Free and unpinned, inside one group;
//! and a `NoSpace` only when no group has a long enough free run. Everything else is
//! compared exactly, errors field by field (a `Busy` names the oldest blocking pin and
//! all the blocks of the freed extent it covers, across groups; a `NoSpace` gives the
//! longest run one group can hand out): results, each block's state and pin count,
//! free and durable extents, stats and invariants. `PROPTEST_CASES` scales the case
//! count (default 256).
//!
//! After it, case by case: requests that must work across groups while another group
//! holds a reservation, and the `Busy` a free across groups reports.

use pinalloc::SharedAllocError;
use pinalloc::testing::Model;
use pinalloc::{
    AllocError, BlockState, Extent, ExtentError, FreeError, PinError, PinOptions, Policy, ReaderId,
    Request, ResizeError, SharedAllocator, SharedFreeError, SharedPinError, SharedPinId,
};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Allocate {
        len: u64,
        policy: u8,
        goal: u64,
    },
    Free {
        pick: usize,
        whole: bool,
        start: u64,
        len: u64,
        on_commit: bool,
    },
    Pin {
        start: u64,
        len: u64,
        blocking: bool,
    },
    Unpin {
        pick: usize,
    },
    Commit,
    /// 0 prepare, 1 finish, 2 abort, 3 abort_all; `wrong` names a wrong epoch.
    Txn {
        step: u8,
        wrong: bool,
    },
    /// `shrink` or `grow` by `delta` blocks (the wrong way is refused).
    Resize {
        shrink: bool,
        delta: i8,
    },
    BeginRead,
    EndRead {
        pick: usize,
    },
}

fn op(capacity: u64) -> impl Strategy<Value = Op> {
    let cap = capacity.max(1);
    prop_oneof![
        4 => (1..=cap.min(40), 0..3u8, 0..cap)
            .prop_map(|(len, policy, goal)| Op::Allocate { len, policy, goal }),
        3 => (any::<usize>(), any::<bool>(), 0..cap + 2, 0..cap.min(48) + 1, any::<bool>())
            .prop_map(|(pick, whole, start, len, on_commit)| Op::Free { pick, whole, start, len, on_commit }),
        2 => (0..cap + 1, 0..cap.min(32) + 1, prop::bool::weighted(0.2))
            .prop_map(|(start, len, blocking)| Op::Pin { start, len, blocking }),
        2 => any::<usize>().prop_map(|pick| Op::Unpin { pick }),
        1 => Just(Op::Commit),
        2 => (0..4u8, prop::bool::weighted(0.15)).prop_map(|(step, wrong)| Op::Txn { step, wrong }),
        1 => (any::<bool>(), any::<i8>()).prop_map(|(shrink, delta)| Op::Resize { shrink, delta }),
        1 => Just(Op::BeginRead),
        1 => any::<usize>().prop_map(|pick| Op::EndRead { pick }),
    ]
}

struct Harness {
    alloc: SharedAllocator,
    model: Model,
    /// The model's block 0 is the allocator's block `base`: blocks below it, and
    /// above the model's last block, are Allocated at mount and stay so until `finish`.
    base: u64,
    /// Extents, pins and readers in the model's terms (shifted by `base`).
    owned: Vec<Extent>,
    pins: Vec<SharedPinId>,
    readers: Vec<ReaderId>,
}

/// `e` moved by `by` blocks (wrapping: an extent past the end stays past it).
fn shift(e: Extent, by: u64) -> Extent {
    Extent::new(e.start.wrapping_add(by), e.len)
}

impl Harness {
    /// A model extent as the allocator sees it.
    fn global(&self, e: Extent) -> Extent {
        shift(e, self.base)
    }

    /// An allocator extent in the model's terms.
    fn local(&self, e: Extent) -> Extent {
        shift(e, self.base.wrapping_neg())
    }

    /// Blocks of the allocator past the model's last one (a window inside the space).
    fn above(&self) -> u64 {
        self.alloc.capacity_blocks() - self.base - self.model.capacity()
    }

    /// `e` as an operation may name it: if its start lies past the top of the `u64`
    /// space as the allocator sees it, the same length at the model's end (still
    /// outside the space); `None` if it reaches past the model's window into blocks
    /// the allocator has above it, where the two cannot agree.
    fn in_reach(&self, e: Extent) -> Option<Extent> {
        let cap = self.model.capacity();
        if self.above() > 0 && e.checked_end().is_none_or(|end| end > cap) {
            return None;
        }
        match e.start.checked_add(self.base) {
            Some(_) => Some(e),
            None => Some(Extent::new(cap, e.len)),
        }
    }

    /// The group of a model block.
    fn group_of(&self, block: u64) -> u64 {
        (block + self.base) / self.alloc.group_blocks()
    }

    /// An extent error in the model's terms. Past the top of the `u64` space, the
    /// allocator says `Overflow` where the model, whose window ends there, says
    /// `OutOfBounds`: the same refusal.
    fn local_extent_error(&self, e: ExtentError) -> ExtentError {
        match e {
            ExtentError::ZeroLength { start } => ExtentError::ZeroLength {
                start: start.wrapping_sub(self.base),
            },
            ExtentError::Overflow { extent } | ExtentError::OutOfBounds { extent, .. } => {
                ExtentError::OutOfBounds {
                    extent: self.local(extent),
                    capacity: self.model.capacity(),
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    /// A free error in the model's terms (see `local_extent_error`).
    fn local_free_error(&self, e: FreeError) -> FreeError {
        match e {
            FreeError::BadExtent(e) => FreeError::BadExtent(self.local_extent_error(e)),
            FreeError::NotAllocated { extent, offending } => FreeError::NotAllocated {
                extent: self.local(extent),
                offending: self.local(offending),
            },
            FreeError::PartlyAllocated { extent, offending } => FreeError::PartlyAllocated {
                extent: self.local(extent),
                offending: self.local(offending),
            },
            FreeError::Busy {
                extent,
                pin,
                blocked,
            } => FreeError::Busy {
                extent: self.local(extent),
                pin,
                blocked: self.local(blocked),
            },
            other => panic!("unexpected {other:?}"),
        }
    }

    /// A pin error in the model's terms (see `local_free_error`).
    fn local_pin_error(&self, e: PinError) -> PinError {
        match e {
            PinError::BadExtent(e) => PinError::BadExtent(self.local_extent_error(e)),
            other => other,
        }
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Allocate { len, policy, goal } => self.allocate(len, policy, goal),
            Op::Free {
                pick,
                whole,
                start,
                len,
                on_commit,
            } => {
                let e = match (whole, self.owned.is_empty()) {
                    (true, false) => self.owned.swap_remove(pick % self.owned.len()),
                    _ => match self.in_reach(Extent::new(start, len)) {
                        Some(e) => e,
                        None => return,
                    },
                };
                self.free(e, on_commit);
            }
            Op::Pin {
                start,
                len,
                blocking,
            } => {
                if let Some(e) = self.in_reach(Extent::new(start, len)) {
                    self.pin(e, blocking);
                }
            }
            Op::Unpin { pick } => {
                if !self.pins.is_empty() {
                    let mut id = self.pins.swap_remove(pick % self.pins.len());
                    let token = (pick % 2 == 1).then(|| {
                        // Through a token, as an I/O completion would: the same pin.
                        let token = self.alloc.pin_token(id).expect("a live pin");
                        id = self.alloc.pin_of_token(token).expect("a live pin's token");
                        token
                    });
                    let got = self.alloc.unpin(id).expect("a live pin");
                    if let Some(token) = token {
                        assert!(self.alloc.pin_of_token(token).is_err(), "a stale token");
                        assert!(self.alloc.pin_token(id).is_err(), "a gone pin");
                    }
                    let want = self.model.unpin(id.core_pin()).expect("model pin");
                    assert_eq!((got.released_blocks, got.unpinned_free_blocks), want);
                    assert!(self.alloc.unpin(id).is_err(), "a second unpin is refused");
                }
            }
            Op::Commit => {
                let epoch = self.alloc.epoch();
                assert_eq!(
                    self.alloc.commit(epoch + 1),
                    self.model.commit(epoch + 1).map(|_| unreachable!())
                );
                let got = self.alloc.commit(epoch).expect("open epoch");
                assert_eq!(Ok(got.released_blocks), self.model.commit(epoch));
            }
            Op::Txn { step, wrong } => self.txn(step, wrong),
            Op::Resize { shrink, delta } => self.resize(shrink, delta),
            Op::BeginRead => {
                let r = self.alloc.begin_read();
                self.model.begin_read(r);
                self.readers.push(r);
            }
            Op::EndRead { pick } => {
                if !self.readers.is_empty() {
                    let r = self.readers.swap_remove(pick % self.readers.len());
                    let got = self.alloc.end_read(r).expect("a live reader");
                    assert_eq!(Ok(got.released_blocks), self.model.end_read(r));
                }
            }
        }
    }

    /// A transaction step, compared with the model; errors field by field.
    fn txn(&mut self, step: u8, wrong: bool) {
        let open = self.alloc.epoch();
        let shift = u64::from(wrong);
        match step {
            0 => {
                let got = self.alloc.prepare_commit(open + shift);
                let want = self.model.prepare_commit(open + shift);
                assert_eq!(
                    got.map(|list| self.local_list(list)),
                    want,
                    "prepare_commit"
                );
            }
            1 => {
                // The newest prepared epoch, or (wrong) the open one.
                let epoch = open - 1 + shift;
                let got = self.alloc.finish_commit(epoch).map(|o| o.released_blocks);
                assert_eq!(
                    got,
                    self.model.finish_commit(epoch),
                    "finish_commit({epoch})"
                );
            }
            2 => {
                let got = self.alloc.abort(open + shift).map(|o| o.restored_blocks);
                assert_eq!(got, self.model.abort(open + shift), "abort");
            }
            _ => {
                let got = self
                    .alloc
                    .abort_all(open + shift)
                    .map(|o| (o.restored_blocks, o.freed_blocks, o.deferred_blocks));
                let want = self
                    .model
                    .abort_all(open + shift)
                    .map(|(restored, f)| (restored, f.now, f.deferred));
                let got = got.map_err(|e| match e {
                    pinalloc::EpochError::Busy { pin, block } => pinalloc::EpochError::Busy {
                        pin,
                        block: block - self.base,
                    },
                    other => other,
                });
                assert_eq!(got, want, "abort_all");
            }
        }
        // Blocks came back or went: what is owned is what is Allocated.
        self.owned = self.model.runs(|b| b.state == BlockState::Allocated);
    }

    /// `grow` or `shrink` in both, when the model's window reaches the end of the
    /// space (blocks above it would stand between).
    fn resize(&mut self, shrink: bool, delta: i8) {
        if self.above() > 0 {
            return;
        }
        let cap = self.model.capacity();
        // Within the `u64` space as the allocator sees it.
        let to = cap
            .saturating_add_signed(i64::from(delta))
            .min(u64::MAX - self.base);
        let (got, want) = if shrink {
            (self.alloc.shrink(self.base + to), self.model.shrink(to))
        } else {
            (self.alloc.grow(self.base + to), self.model.grow(to))
        };
        let local = |e: ResizeError| match e {
            ResizeError::NotLarger {
                capacity,
                requested,
            } => ResizeError::NotLarger {
                capacity: capacity - self.base,
                requested: requested - self.base,
            },
            ResizeError::NotSmaller {
                capacity,
                requested,
            } => ResizeError::NotSmaller {
                capacity: capacity - self.base,
                requested: requested - self.base,
            },
            ResizeError::InUse { block, state } => ResizeError::InUse {
                block: block - self.base,
                state,
            },
            ResizeError::Pinned { block, pins } => ResizeError::Pinned {
                block: block - self.base,
                pins,
            },
            other => other,
        };
        assert_eq!(
            got.map_err(local),
            want,
            "resize to {to} (shrink: {shrink})"
        );
        assert_eq!(
            self.alloc.capacity_blocks(),
            self.base + self.model.capacity()
        );
        self.alloc.check_invariants().unwrap();
    }

    /// A free list of the allocator in the model's terms: the blocks outside the
    /// model's window are Allocated, so none are listed.
    fn local_list(&self, list: Vec<Extent>) -> Vec<Extent> {
        list.into_iter().map(|e| self.local(e)).collect()
    }

    fn allocate(&mut self, len: u64, policy: u8, goal: u64) {
        let cap = self.model.capacity();
        let policy = match policy {
            0 => Policy::BestFit,
            1 => Policy::FirstFit,
            // A goal needs a block to name (a space shrunk to nothing has none).
            _ if cap == 0 => Policy::FirstFit,
            _ => Policy::Near(goal.min(cap - 1) + self.base),
        };
        let request = Request::new(len).policy(policy);
        match self.alloc.allocate(request) {
            Ok(e) => {
                let e = self.local(e);
                assert!(e.start < cap, "{e} lies below the model's window");
                assert_eq!(e.len, len);
                assert_eq!(
                    self.group_of(e.start),
                    self.group_of(e.start + e.len - 1),
                    "{e} spans groups"
                );
                if policy == Policy::FirstFit {
                    let first = self
                        .fitting_runs(len)
                        .into_iter()
                        .next()
                        .expect("it fit somewhere");
                    assert_eq!(e.start, first.start, "first fit is the lowest address");
                }
                self.model.take(e); // asserts each block is Free and unpinned
                self.owned.push(e);
            }
            Err(SharedAllocError::Core(AllocError::NoSpace { requested, .. })) => {
                assert_eq!(requested, len);
                assert_eq!(
                    self.fitting_runs(len),
                    [],
                    "NoSpace though a group has room"
                );
                if cap > 0 {
                    // As one core would say, but the largest free extent is the
                    // longest run one group can hand out: no extent spans groups.
                    let want = match self.model.no_space(len) {
                        AllocError::NoSpace {
                            requested,
                            free,
                            reserved,
                            deferred,
                            pinned_free,
                            ..
                        } => AllocError::NoSpace {
                            requested,
                            free,
                            largest_free: self
                                .fitting_runs(1)
                                .iter()
                                .map(|r| r.len)
                                .max()
                                .unwrap_or(0),
                            reserved,
                            deferred,
                            pinned_free,
                        },
                        other => panic!("{other:?}"),
                    };
                    assert_eq!(self.alloc.allocate(request), Err(want.into()));
                }
            }
            Err(other) => panic!("allocate({request:?}): {other}"),
        }
    }

    /// The model's unpinned free runs, cut at group boundaries, at least `len` long.
    fn fitting_runs(&self, len: u64) -> Vec<Extent> {
        let gb = self.alloc.group_blocks();
        let mut out = Vec::new();
        for run in self.model.free_runs() {
            let run = self.global(run);
            let mut s = run.start;
            let end = run.start + run.len;
            while s < end {
                // The next boundary, or the end of the `u64` space.
                let t = (s / gb + 1).checked_mul(gb).map_or(end, |b| end.min(b));
                if t - s >= len {
                    out.push(self.local(Extent::new(s, t - s)));
                }
                s = t;
            }
        }
        out
    }

    fn free(&mut self, e: Extent, on_commit: bool) {
        let g = self.global(e);
        let got = if on_commit {
            self.alloc.free_on_commit(g)
        } else {
            self.alloc.free(g)
        };
        let want = self.model.free(e, on_commit);
        match (got, want) {
            (Ok(out), Ok(w)) => {
                assert_eq!((out.freed_blocks, out.deferred_blocks), (w.now, w.deferred));
                // Whatever part of an owned extent was freed is no longer owned.
                self.owned.retain(|o| !o.overlaps(&e));
            }
            // Field by field: the same oldest blocking pin, the same blocks.
            (Err(SharedFreeError::Core(got)), Err(w)) => {
                assert_eq!(self.local_free_error(got), w, "free({e})");
            }
            (got, want) => panic!("free({e}): got {got:?}, model {want:?}"),
        }
    }

    fn pin(&mut self, e: Extent, blocking: bool) {
        let mode = if blocking {
            pinalloc::PinMode::Blocking
        } else {
            pinalloc::PinMode::Deferring
        };
        match self
            .alloc
            .pin_owned(self.global(e), pinalloc::PinOptions::new().mode(mode))
        {
            Ok(id) => {
                self.model.check_pin(e).expect("the model agrees");
                self.model.pin(id.core_pin(), e, blocking);
                self.pins.push(id);
            }
            Err(SharedPinError::Core(err)) => {
                assert_eq!(Err(self.local_pin_error(err)), self.model.check_pin(e));
            }
            Err(other) => panic!("pin({e}): {other}"),
        }
    }

    /// Everything observable equals the model.
    fn check(&self) {
        let cap = self.model.capacity();
        // The runs of the window, joined across groups, in the model's terms.
        let runs: Vec<_> = self
            .alloc
            .runs(self.base..self.base.saturating_add(cap))
            .map(|mut r| {
                r.extent = self.local(r.extent);
                r
            })
            .collect();
        assert_eq!(runs, self.model.block_runs(), "runs");
        for b in 0..cap {
            let want = self.model.blocks[b as usize].state;
            assert_eq!(self.alloc.state_of(b + self.base), Some(want), "block {b}");
            assert_eq!(
                self.alloc.pin_count(b + self.base),
                u64::from(self.model.blocks[b as usize].pins),
                "pins of block {b}"
            );
        }
        let local = |v: Vec<Extent>| -> Vec<Extent> {
            v.into_iter()
                .filter(|e| e.start >= self.base && e.start - self.base < cap)
                .map(|e| self.local(e))
                .collect()
        };
        assert_eq!(local(self.alloc.free_extents()), self.model.free_runs());
        assert_eq!(
            local(self.alloc.durable_free_extents()),
            self.model.durable_runs()
        );
        let s = self.alloc.stats().space;
        assert_eq!(s.free_blocks, self.model.free_blocks());
        assert_eq!(
            s.allocated_blocks,
            self.model.allocated_blocks() + self.base + self.above()
        );
        assert_eq!(s.deferred_by, self.model.deferred());
        assert_eq!(s.pinned_free_blocks, self.model.pinned_free());
        assert_eq!(s.pinned_blocks, self.model.pinned_blocks());
        assert_eq!(s.live_pins, self.model.pins.len() as u64);
        let mut listed: Vec<(pinalloc::PinId, Extent, bool)> = self
            .alloc
            .pins()
            .iter()
            .map(|p| {
                let blocking = p.mode == pinalloc::PinMode::Blocking;
                (p.id.core_pin(), self.local(p.extent), blocking)
            })
            .collect();
        listed.sort_by_key(|p| p.0);
        let want: Vec<(pinalloc::PinId, Extent, bool)> = self
            .model
            .pins
            .iter()
            .map(|(&id, &(e, b))| (id, e, b))
            .collect();
        assert_eq!(listed, want, "pins");
        assert_eq!(s.live_readers, self.model.readers.len() as u64);
        let listed: Vec<(ReaderId, u64)> = self
            .alloc
            .readers()
            .iter()
            .map(|r| (r.id, r.held_alone_blocks))
            .collect();
        assert_eq!(listed, self.model.readers_held_alone(), "readers");
        assert_eq!(s.open_epoch, self.model.open);
        // Group by group, the blocks in each state are the model's in that range.
        for g in self.alloc.group_stats() {
            let range = g.first_block..g.first_block + g.stats.capacity_blocks;
            let in_state = |state: BlockState| -> u64 {
                let blocks = self.model.blocks.iter().enumerate();
                blocks
                    .filter(|(b, m)| range.contains(&(*b as u64 + self.base)) && m.state == state)
                    .count() as u64
            };
            assert_eq!(
                g.stats.free_blocks,
                in_state(BlockState::Free),
                "group at {range:?}"
            );
            assert_eq!(
                g.stats.deferred_blocks,
                in_state(BlockState::Deferred),
                "group at {range:?}"
            );
            // Blocks outside the model's window are Allocated from mount.
            let (ws, we) = (
                u128::from(self.base),
                u128::from(self.base) + u128::from(cap),
            );
            let (gs, ge) = (u128::from(range.start), u128::from(range.end));
            let inside = ge.min(we).saturating_sub(gs.max(ws)) as u64;
            let outside = g.stats.capacity_blocks - inside;
            assert_eq!(
                g.stats.allocated_blocks,
                in_state(BlockState::Allocated) + outside,
                "group at {range:?}"
            );
        }
        self.alloc.check_invariants().unwrap();
    }

    /// Releases everything; nothing may be left over.
    fn finish(mut self) {
        for id in std::mem::take(&mut self.pins) {
            self.alloc.unpin(id).unwrap();
        }
        for r in std::mem::take(&mut self.readers) {
            self.alloc.end_read(r).unwrap();
        }
        self.alloc.commit(self.alloc.epoch()).unwrap();
        for e in std::mem::take(&mut self.owned) {
            self.alloc.free(self.global(e)).unwrap();
        }
        let cap = self.model.capacity();
        // Blocks Allocated at mount and never freed stay so; free what is left.
        let left: Vec<Extent> = {
            let allocated =
                |b: u64| self.alloc.state_of(b + self.base) == Some(BlockState::Allocated);
            let mut runs = Vec::new();
            let mut b = 0;
            while b < cap {
                if allocated(b) {
                    let s = b;
                    while b < cap && allocated(b) {
                        b += 1;
                    }
                    runs.push(Extent::new(s, b - s));
                } else {
                    b += 1;
                }
            }
            runs
        };
        for e in left {
            self.alloc.free(self.global(e)).unwrap();
        }
        if self.base > 0 {
            self.alloc.free(Extent::new(0, self.base)).unwrap();
        }
        if self.above() > 0 {
            self.alloc
                .free(Extent::new(self.base + cap, self.above()))
                .unwrap();
        }
        let whole: Vec<Extent> = if self.alloc.capacity_blocks() == 0 {
            vec![]
        } else {
            vec![Extent::new(0, self.alloc.capacity_blocks())]
        };
        assert_eq!(self.alloc.free_extents(), whole, "nothing leaked");
        self.alloc.check_invariants().unwrap();
    }
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

/// A space: `(capacity, groups, base)`. Mostly small spaces, where the model covers
/// every block (`base` 0); one in four ends at or near the top of the `u64` space,
/// where the model covers its last `window` blocks and `base` is where they start;
/// one in eight is the whole `u64` space, where the model covers `window` blocks
/// around the last group boundary (everything around it Allocated at mount).
fn space(window: u64) -> impl Strategy<Value = (u64, u64, u64)> {
    let tops = vec![u64::MAX, u64::MAX - 1, (1 << 63) + 5];
    let counts = vec![1u64, 2, 7, 64, 1000];
    prop_oneof![
        5 => (1..=5u64).prop_map(move |g| (window, g, 0)),
        2 => (prop::sample::select(tops), prop::sample::select(counts))
            .prop_map(move |(c, g)| (c, g, c - window)),
        1 => (prop::sample::select(vec![2u64, 7, 64, 1000]), 0..=window)
            .prop_map(move |(g, below)| {
                let built = SharedAllocator::builder(u64::MAX).groups(g).build();
                let last = (built.group_count() as u64 - 1) * built.group_blocks();
                (u64::MAX, g, last - below)
            }),
    ]
}

type Scenario = (u64, (u64, u64, u64), Vec<(u64, u64)>, Vec<Op>);

fn scenario() -> impl Strategy<Value = Scenario> {
    (1..=160u64).prop_flat_map(|cap| {
        let mounts = prop::collection::vec((0..cap, 1..=cap.min(24)), 0..4);
        (
            Just(cap),
            space(cap),
            mounts,
            prop::collection::vec(op(cap), 1..60),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn shared_allocator_matches_the_model((cap, (capacity, groups, base), mounts, ops) in scenario()) {
        // Mount-time allocations, kept disjoint and in bounds; some span groups.
        let mut model = Model::new(cap);
        let mut allocated: Vec<Extent> = Vec::new();
        for (start, len) in mounts {
            let e = Extent::new(start, len.min(cap - start));
            if !allocated.iter().any(|a| a.overlaps(&e)) {
                allocated.push(e);
                model.mount_allocated(e);
            }
        }
        // Around the window, everything is Allocated at mount.
        let below = (base > 0).then(|| Extent::new(0, base));
        let above = (capacity - base > cap).then(|| Extent::new(base + cap, capacity - base - cap));
        let alloc = SharedAllocator::builder(capacity)
            .groups(groups)
            .from_allocated_extents(
                below.into_iter().chain(allocated.iter().map(|e| shift(*e, base))).chain(above),
            )
            .unwrap();
        let mut h = Harness { alloc, model, base, owned: allocated, pins: Vec::new(), readers: Vec::new() };
        h.check();
        for op in &ops {
            h.apply(op);
            h.check();
        }
        h.finish();
    }
}

// ---- placement and Busy errors across groups, case by case --------------------

#[test]
fn allocate_many_steps_around_another_groups_reservation() {
    let alloc = SharedAllocator::builder(200).groups(2).build();
    let res = alloc.reserve(90).unwrap(); // all of it from group 0, the first of equals
    let got = alloc.allocate_many(20).unwrap();
    assert_eq!(got.iter().map(|e| e.len).sum::<u64>(), 20);
    let s = alloc.stats().space;
    assert_eq!((s.reserved_blocks, s.allocated_blocks), (90, 20));
    alloc.check_invariants().unwrap();
    assert_eq!(alloc.unreserve(res), 90);
}

#[test]
fn allocate_reserved_places_goals_and_exact_starts_in_their_own_group() {
    let alloc = SharedAllocator::builder(200).groups(2).build();
    let mut res = alloc.reserve(150).unwrap(); // 100 in one group, 50 in the other
    let near = alloc
        .allocate_reserved(&mut res, Request::new(4).policy(Policy::Near(150)))
        .unwrap();
    assert_eq!(
        near,
        Extent::new(150, 4),
        "the free block at the goal itself"
    );
    let exact = alloc
        .allocate_reserved(&mut res, Request::new(4).policy(Policy::Exact(120)))
        .unwrap();
    assert_eq!(exact, Extent::new(120, 4));
    assert_eq!(res.remaining_blocks(), 142);
    alloc.check_invariants().unwrap();
    assert_eq!(alloc.unreserve(res), 142);
}

/// A blocking pin across a group boundary blocks a free as one pin, as one core
/// would say: all the blocks of the extent it covers, named by the pin's own id.
///
/// ```text
///   group 0 | group 1        boundary at 512
///   AAAAAAAAAAAAAAAAAAAAAAAA  [500, 524) Allocated at mount
///             ^^^^            a blocking pin on [510, 514)
/// ```
#[test]
fn busy_names_a_pin_across_groups_whole() {
    use pinalloc::{FreeError, PinMode, SharedFreeError};
    let a = SharedAllocator::builder(1024)
        .groups(2)
        .from_allocated_extents([Extent::new(500, 24)])
        .unwrap();
    let p = a
        .pin_with(
            Extent::new(510, 4),
            PinOptions::new().mode(PinMode::Blocking),
        )
        .unwrap();
    for (freed, blocked) in [
        (Extent::new(500, 24), Extent::new(510, 4)), // both groups
        (Extent::new(512, 12), Extent::new(512, 2)), // group 1 only
        (Extent::new(500, 12), Extent::new(510, 2)), // group 0 only
    ] {
        assert_eq!(
            a.free(freed),
            Err(SharedFreeError::Core(FreeError::Busy {
                extent: freed,
                pin: p.id().core_pin(),
                blocked,
            })),
            "free({freed})"
        );
    }
    // Of two blocking pins, the one over the first blocked block is named, though
    // younger.
    let younger = a
        .pin_with(
            Extent::new(505, 2),
            PinOptions::new().mode(PinMode::Blocking),
        )
        .unwrap();
    assert!(matches!(
        a.free(Extent::new(500, 24)),
        Err(SharedFreeError::Core(FreeError::Busy { pin, blocked, .. }))
            if pin == younger.id().core_pin() && blocked == Extent::new(505, 2)
    ));
    drop(younger);
    assert!(matches!(
        a.free(Extent::new(500, 24)),
        Err(SharedFreeError::Core(FreeError::Busy { pin, blocked, .. }))
            if pin == p.id().core_pin() && blocked == Extent::new(510, 4)
    ));
    drop(p);
    a.free(Extent::new(500, 24)).unwrap();
    a.check_invariants().unwrap();
}

/// Of the blocking pins over the first blocked block, the oldest is named, even when it
/// reaches that block from an earlier group; a younger pin in an earlier group that
/// blocks an earlier block is named before both.
#[test]
fn busy_names_the_oldest_pin_over_the_first_blocked_block() {
    use pinalloc::{FreeError, PinMode, SharedFreeError};
    let a = SharedAllocator::builder(1024)
        .groups(2)
        .from_allocated_extents([Extent::new(500, 24)])
        .unwrap();
    let blocking = PinOptions::new().mode(PinMode::Blocking);
    let older = a.pin_with(Extent::new(510, 10), blocking.clone()).unwrap(); // both groups
    let _younger = a.pin_with(Extent::new(512, 2), blocking.clone()).unwrap(); // group 1
    assert_eq!(
        a.free(Extent::new(512, 12)),
        Err(SharedFreeError::Core(FreeError::Busy {
            extent: Extent::new(512, 12),
            pin: older.id().core_pin(),
            blocked: Extent::new(512, 8),
        }))
    );
    let earliest = a.pin_with(Extent::new(505, 2), blocking).unwrap(); // group 0
    assert_eq!(
        a.free(Extent::new(500, 24)),
        Err(SharedFreeError::Core(FreeError::Busy {
            extent: Extent::new(500, 24),
            pin: earliest.id().core_pin(),
            blocked: Extent::new(505, 2),
        }))
    );
}

/// A read guard ends its read when dropped, once: after `end`, after `into_id` (the
/// id is then ended by hand) and after a read ended by hand through its id, the drop
/// does nothing; the reader table says which reader holds what meanwhile.
#[test]
fn a_read_guard_ends_its_read_once() {
    let alloc = SharedAllocator::builder(64).groups(4).build();
    let a = alloc.allocate(Request::new(8)).unwrap();
    let b = alloc.allocate(Request::new(8)).unwrap();
    let c = alloc.allocate(Request::new(8)).unwrap();

    // Dropped: the read ends and its blocks come back.
    let guard = alloc.read();
    alloc.free(a).unwrap();
    assert_eq!(alloc.readers().len(), 1);
    assert_eq!(alloc.readers()[0].held_alone_blocks, 8);
    drop(guard);
    assert!(alloc.readers().is_empty());
    assert_eq!(alloc.stats().space.deferred_blocks, 0);

    // Two readers in one epoch share their holds: neither holds anything alone.
    let (g1, g2) = (alloc.read(), alloc.read());
    alloc.free(b).unwrap();
    let held: Vec<u64> = alloc
        .readers()
        .iter()
        .map(|r| r.held_alone_blocks)
        .collect();
    assert_eq!(held, [0, 0]);
    assert_eq!(g1.end().unwrap().released_blocks, 0);
    assert_eq!(
        alloc.readers()[0].held_alone_blocks,
        8,
        "g2 alone holds b now"
    );

    // Ended by hand through its id: the guard's drop finds nothing to end.
    alloc.end_read(g2.id()).unwrap();
    assert_eq!(alloc.stats().space.deferred_blocks, 0);
    drop(g2);

    // Kept past the guard: live until ended by hand.
    let id = alloc.read().into_id();
    alloc.free(c).unwrap();
    assert_eq!(alloc.readers()[0].id, id);
    assert_eq!(alloc.end_read(id).unwrap().released_blocks, 8);
    assert!(alloc.readers().is_empty());
    assert_eq!(alloc.stats().space.free_blocks, 64);
    alloc.check_invariants().unwrap();
}

/// The pin table lists each pin once, oldest first, whole across groups, with the
/// owner it names and whether it is a lease; an unpinned pin leaves it.
#[test]
fn the_pin_table_names_each_pin_once_with_its_owner() {
    let alloc = SharedAllocator::builder(64).groups(4).build();
    let plain = alloc
        .pin_owned(Extent::new(1, 2), PinOptions::new())
        .unwrap();
    let across = alloc
        .pin_owned(Extent::new(10, 30), PinOptions::new().owner(7))
        .unwrap();
    let lease = alloc
        .pin_owned(Extent::new(50, 4), PinOptions::new().on_revoke(|_| {}))
        .unwrap();
    let listed: Vec<_> = alloc
        .pins()
        .iter()
        .map(|p| (p.id, p.extent, p.owner, p.lease))
        .collect();
    assert_eq!(
        listed,
        [
            (plain, Extent::new(1, 2), None, false),
            (across, Extent::new(10, 30), Some(7), false),
            (lease, Extent::new(50, 4), None, true),
        ]
    );
    alloc.unpin(across).unwrap();
    let ids: Vec<_> = alloc.pins().iter().map(|p| p.id).collect();
    assert_eq!(ids, [plain, lease]);
    alloc.unpin(plain).unwrap();
    alloc.unpin(lease).unwrap();
    assert!(alloc.pins().is_empty());
}
