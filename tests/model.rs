//! The allocator against the per-block reference model, after every operation:
//! allocation (every policy, alignment, ranges, reservations), frees (plain, on commit,
//! hostile), pins (deferring and blocking, nested, hostile unpins), epochs (commits,
//! hostile commits) and snapshot readers. Every case ends by releasing everything and
//! checking that the whole space is free again.
//!
//! `PROPTEST_CASES=100000 cargo test --release --test model` searches longer.

mod common;

use common::{Model, Req};
use pinalloc::{
    BlockState, Extent, ExtentAllocator, PinId, PinMode, Policy, ReaderId, Request, Reservation,
    ReservationError,
};
use proptest::prelude::*;

/// Cases per property: 1,024 unless `PROPTEST_CASES` says otherwise.
fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    ProptestConfig {
        cases,
        max_shrink_iters: 4096,
        ..ProptestConfig::default()
    }
}

/// A block position: mostly inside the space (as a fraction of it), sometimes anywhere.
#[derive(Debug, Clone, Copy)]
enum Pos {
    Within(u16),
    Raw(u64),
}

impl Pos {
    fn resolve(self, capacity: u64) -> u64 {
        match self {
            Pos::Within(permille) => capacity * u64::from(permille) / 1000,
            Pos::Raw(raw) => raw,
        }
    }
}

fn pos() -> impl Strategy<Value = Pos> {
    prop_oneof![
        8 => (0u16..1000).prop_map(Pos::Within),
        1 => prop_oneof![Just(u64::MAX), Just(u64::MAX - 1), 0u64..600, (u64::MAX - 600)..=u64::MAX]
            .prop_map(Pos::Raw),
    ]
}

/// A length: mostly small, sometimes zero, large or extreme.
fn len() -> impl Strategy<Value = u64> {
    prop_oneof![
        12 => 1u64..=16,
        4 => 1u64..=128,
        2 => 1u64..=600,
        1 => Just(0u64),
        1 => prop_oneof![Just(u64::MAX), Just(u64::MAX / 2), Just(1u64 << 40)],
    ]
}

#[derive(Debug, Clone, Copy)]
enum PolicyOp {
    Best,
    First,
    Near(Pos),
    Exact(Pos),
}

/// How a request's maximum relates to its minimum.
#[derive(Debug, Clone, Copy)]
enum Extra {
    /// An exact length.
    None,
    /// `min..=min + n` (saturating).
    Plus(u64),
    /// `min..=min - 1`: an empty range, which must be refused.
    Below,
}

/// What a pin covers.
#[derive(Debug, Clone, Copy)]
enum PinTarget {
    /// Part of a live allocation (the in-flight I/O case).
    Live { index: usize, skip: u64 },
    /// Anything at all: Free blocks, Deferred blocks, bad extents.
    Raw { start: Pos, len: u64 },
}

#[derive(Debug, Clone)]
enum Op {
    Allocate {
        min: u64,
        extra: Extra,
        align: u64,
        policy: PolicyOp,
        reservation: Option<usize>,
    },
    AllocateMany {
        total: u64,
        reservation: Option<usize>,
    },
    /// Free part of a live extent: skip some blocks, then take some.
    FreeLive {
        index: usize,
        skip: u64,
        take: Option<u64>,
        on_commit: bool,
    },
    /// Free anything at all: double frees, never-allocated runs, bad extents.
    FreeRaw {
        start: Pos,
        len: u64,
        on_commit: bool,
    },
    Reserve {
        len: u64,
    },
    Release {
        index: usize,
    },
    /// Spend or release a reservation made by another allocator.
    Foreign {
        release: bool,
    },
    Pin {
        target: PinTarget,
        blocking: bool,
    },
    Unpin {
        index: usize,
    },
    /// Unpin an id that is already unpinned, or another allocator's.
    UnpinStale {
        foreign: bool,
    },
    /// Commit `open + offset` (anything but 0 must be refused).
    Commit {
        offset: i64,
    },
    BeginRead,
    EndRead {
        index: usize,
    },
    /// End a reader that already ended, or another allocator's.
    EndReadStale {
        foreign: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let align = prop_oneof![
        6 => Just(1u64),
        3 => (0u32..6).prop_map(|s| 1u64 << s),
        1 => prop_oneof![Just(0u64), Just(3u64), Just(12u64), Just(1u64 << 63)],
    ];
    let policy = prop_oneof![
        3 => Just(PolicyOp::Best),
        2 => Just(PolicyOp::First),
        2 => pos().prop_map(PolicyOp::Near),
        2 => pos().prop_map(PolicyOp::Exact),
    ];
    let extra = prop_oneof![
        30 => Just(Extra::None),
        20 => (0u64..64).prop_map(Extra::Plus),
        5 => Just(Extra::Plus(u64::MAX)),
        1 => Just(Extra::Below),
    ];
    let reservation = || proptest::option::weighted(0.25, 0usize..8);
    let target = prop_oneof![
        3 => (0usize..64, 0u64..4).prop_map(|(index, skip)| PinTarget::Live { index, skip }),
        2 => (pos(), len()).prop_map(|(start, len)| PinTarget::Raw { start, len }),
    ];
    prop_oneof![
        10 => (len(), extra, align, policy, reservation()).prop_map(
            |(min, extra, align, policy, reservation)| Op::Allocate { min, extra, align, policy, reservation }
        ),
        2 => (len(), reservation())
            .prop_map(|(total, reservation)| Op::AllocateMany { total, reservation }),
        8 => (0usize..64, prop_oneof![3 => Just(0u64), 1 => 0u64..8], proptest::option::weighted(0.3, 1u64..8), proptest::bool::weighted(0.3))
            .prop_map(|(index, skip, take, on_commit)| Op::FreeLive { index, skip, take, on_commit }),
        2 => (pos(), len(), any::<bool>()).prop_map(|(start, len, on_commit)| Op::FreeRaw { start, len, on_commit }),
        2 => len().prop_map(|len| Op::Reserve { len }),
        2 => (0usize..8).prop_map(|index| Op::Release { index }),
        1 => any::<bool>().prop_map(|release| Op::Foreign { release }),
        5 => (target, proptest::bool::weighted(0.2)).prop_map(|(target, blocking)| Op::Pin { target, blocking }),
        4 => (0usize..16).prop_map(|index| Op::Unpin { index }),
        1 => any::<bool>().prop_map(|foreign| Op::UnpinStale { foreign }),
        3 => prop_oneof![6 => Just(0i64), 1 => Just(-1i64), 1 => Just(1i64), 1 => Just(i64::MAX)]
            .prop_map(|offset| Op::Commit { offset }),
        2 => Just(Op::BeginRead),
        2 => (0usize..8).prop_map(|index| Op::EndRead { index }),
        1 => any::<bool>().prop_map(|foreign| Op::EndReadStale { foreign }),
    ]
}

/// The allocator, the model, and what the test holds: live extents, reservations,
/// pins and readers.
struct Harness {
    real: ExtentAllocator,
    model: Model,
    live: Vec<Extent>,
    reservations: Vec<Reservation>,
    pins: Vec<PinId>,
    unpinned: Vec<PinId>,
    readers: Vec<ReaderId>,
    ended: Vec<ReaderId>,
    foreign: ExtentAllocator,
}

type Snapshot = (pinalloc::Stats, Vec<Extent>, Vec<Extent>);

impl Harness {
    /// A space of `capacity` blocks. `mount` lists (position, length) pairs of blocks
    /// already Allocated at mount time, as `from_allocated_extents` rebuilds them;
    /// overlapping ones are dropped.
    fn new(capacity: u64, mount: &[(Pos, u64)]) -> Self {
        let mut mounted: Vec<Extent> = Vec::new();
        for &(pos, len) in mount {
            let start = pos.resolve(capacity).min(capacity.saturating_sub(1));
            let e = Extent::new(start, len.min(capacity - start));
            if e.len > 0 && !mounted.iter().any(|m| m.overlaps(&e)) {
                mounted.push(e);
            }
        }
        let mut model = Model::new(capacity);
        for &e in &mounted {
            model.mount_allocated(e);
        }
        let real = if mounted.is_empty() {
            ExtentAllocator::new(capacity)
        } else {
            ExtentAllocator::from_allocated_extents(capacity, mounted.iter().copied())
                .expect("disjoint mount extents")
        };
        Harness {
            real,
            model,
            live: mounted,
            reservations: Vec::new(),
            pins: Vec::new(),
            unpinned: Vec::new(),
            readers: Vec::new(),
            ended: Vec::new(),
            foreign: ExtentAllocator::new(capacity.max(1)),
        }
    }

    /// One whole case: the operations, a rebuild check, then draining everything.
    fn run(capacity: u64, mount: &[(Pos, u64)], ops: &[Op]) -> Result<(), TestCaseError> {
        let mut h = Harness::new(capacity, mount);
        h.compare()?;
        for op in ops {
            h.apply(op)?;
        }
        h.rebuild()?;
        h.drain()
    }

    fn snapshot(&self) -> Snapshot {
        (
            self.real.stats(),
            self.real.free_extents().collect(),
            self.real.durable_free_extents(),
        )
    }

    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let capacity = self.model.capacity();
        let before = self.snapshot();
        let failed = match *op {
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
                let req = Req {
                    min,
                    max,
                    align,
                    policy,
                };
                let (got, want) = match reservation.and_then(|i| pick(&self.reservations, i)) {
                    Some(i) => {
                        let id = self.reservations[i].id();
                        let got = self
                            .real
                            .allocate_reserved(&mut self.reservations[i], req.to_request());
                        let want = self.model.allocate(req, Some(id));
                        if got.is_ok() {
                            prop_assert_eq!(
                                self.reservations[i].remaining_blocks(),
                                self.model.reservations[&id]
                            );
                        }
                        (got, want)
                    }
                    None => (
                        self.real.allocate(req.to_request()),
                        self.model.allocate(req, None),
                    ),
                };
                prop_assert_eq!(got, want, "allocate {:?}", req);
                if let Ok(e) = got {
                    self.check_new(e)?;
                    self.live.push(e);
                }
                got.is_err()
            }
            Op::AllocateMany { total, reservation } => {
                let runs_before = self.model.free_runs();
                let (got, want) = match reservation.and_then(|i| pick(&self.reservations, i)) {
                    Some(i) => {
                        let id = self.reservations[i].id();
                        (
                            self.real
                                .allocate_many_reserved(&mut self.reservations[i], total),
                            self.model.allocate_many(total, Some(id)),
                        )
                    }
                    None => (
                        self.real.allocate_many(total),
                        self.model.allocate_many(total, None),
                    ),
                };
                prop_assert_eq!(&got, &want, "allocate_many {}", total);
                if let Ok(extents) = &got {
                    prop_assert!(extents.iter().map(|e| e.len).sum::<u64>() == total);
                    // Independently of how the model picks them: the fewest extents that
                    // can make up `total` is the shortest prefix of the runs, longest first.
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
                    prop_assert_eq!(
                        extents.len(),
                        fewest,
                        "allocate_many({}) used more extents than needed",
                        total
                    );
                    for &e in extents {
                        self.check_new(e)?;
                        self.live.push(e);
                    }
                }
                got.is_err()
            }
            Op::FreeLive {
                index,
                skip,
                take,
                on_commit,
            } => {
                if self.live.is_empty() {
                    return Ok(());
                }
                let i = index % self.live.len();
                let e = self.live[i];
                let skip = skip.min(e.len - 1);
                let take = take.map_or(e.len - skip, |t| t.min(e.len - skip));
                let part = Extent::new(e.start + skip, take);
                // On success, `free` trims the live list to what remains of `e`.
                self.free(part, on_commit)?
            }
            Op::FreeRaw {
                start,
                len,
                on_commit,
            } => self.free(Extent::new(start.resolve(capacity), len), on_commit)?,
            Op::Reserve { len } => match self.real.reserve(len) {
                Ok(res) => {
                    prop_assert_eq!(self.model.reserve(res.id(), len), Ok(()));
                    prop_assert_eq!(res.remaining_blocks(), len);
                    self.reservations.push(res);
                    false
                }
                Err(e) => {
                    prop_assert_eq!(Err(e), self.model.reserve(u64::MAX, len));
                    true
                }
            },
            Op::Release { index } => {
                let Some(i) = pick(&self.reservations, index) else {
                    return Ok(());
                };
                let res = self.reservations.swap_remove(i);
                let id = res.id();
                let got = self.real.release(res);
                prop_assert_eq!(got.ok(), self.model.release(id));
                false
            }
            Op::Foreign { release } => {
                let Ok(mut res) = self.foreign.reserve(1) else {
                    return Ok(());
                };
                // Ids are per allocator, so a foreign id may equal a local one: only the
                // owner check can tell them apart.
                let id = res.id();
                if release {
                    match self.real.release(res) {
                        Err(ReservationError::Unknown { reservation }) => {
                            prop_assert_eq!(reservation.id(), id);
                            prop_assert_eq!(self.foreign.release(reservation).ok(), Some(1));
                        }
                        other => prop_assert!(false, "foreign release gave {:?}", other),
                    }
                } else {
                    let got = self.real.allocate_reserved(&mut res, Request::new(1));
                    prop_assert_eq!(got, Err(pinalloc::AllocError::UnknownReservation { id }));
                    prop_assert!(self.foreign.release(res).is_ok());
                }
                true
            }
            Op::Pin { target, blocking } => {
                let e = match target {
                    PinTarget::Live { index, skip } => {
                        let Some(i) = pick(&self.live, index) else {
                            return Ok(());
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
                match self.real.pin_with(e, mode) {
                    Ok(id) => {
                        prop_assert_eq!(self.model.pin(Some(id), e, blocking), Ok(()));
                        self.pins.push(id);
                        false
                    }
                    Err(err) => {
                        prop_assert_eq!(Err(err), self.model.pin(None, e, blocking));
                        true
                    }
                }
            }
            Op::Unpin { index } => {
                let Some(i) = pick(&self.pins, index) else {
                    return Ok(());
                };
                let id = self.pins.swap_remove(i);
                let got = self
                    .real
                    .unpin(id)
                    .map(|o| (o.released_blocks, o.unpinned_free_blocks));
                prop_assert_eq!(got, self.model.unpin(id), "unpin {}", id);
                self.unpinned.push(id);
                false
            }
            Op::UnpinStale { foreign } => {
                let id = if foreign {
                    // A throwaway allocator, so the shared foreign one stays unpinned.
                    ExtentAllocator::new(1).pin(Extent::new(0, 1)).unwrap()
                } else if let Some(&id) = self.unpinned.last() {
                    id
                } else {
                    return Ok(());
                };
                prop_assert_eq!(self.real.unpin(id), Err(pinalloc::PinError::Unknown { id }));
                true
            }
            Op::Commit { offset } => {
                let epoch = self.model.open.wrapping_add_signed(offset);
                let got = self.real.commit(epoch).map(|o| o.released_blocks);
                prop_assert_eq!(got, self.model.commit(epoch), "commit {}", epoch);
                got.is_err()
            }
            Op::BeginRead => {
                let id = self.real.begin_read();
                self.model.begin_read(id);
                self.readers.push(id);
                false
            }
            Op::EndRead { index } => {
                let Some(i) = pick(&self.readers, index) else {
                    return Ok(());
                };
                let id = self.readers.swap_remove(i);
                let got = self.real.end_read(id).map(|o| o.released_blocks);
                prop_assert_eq!(got, self.model.end_read(id), "end_read {}", id);
                self.ended.push(id);
                false
            }
            Op::EndReadStale { foreign } => {
                let id = if foreign {
                    self.foreign.begin_read()
                } else if let Some(&id) = self.ended.last() {
                    id
                } else {
                    return Ok(());
                };
                prop_assert_eq!(
                    self.real.end_read(id),
                    Err(pinalloc::EpochError::UnknownReader { id })
                );
                true
            }
        };
        if failed {
            prop_assert_eq!(
                &self.snapshot(),
                &before,
                "a failed {:?} changed the allocator",
                op
            );
        }
        self.compare()
    }

    /// Frees `e` in both; returns whether it failed.
    fn free(&mut self, e: Extent, on_commit: bool) -> Result<bool, TestCaseError> {
        let got = if on_commit {
            self.real.free_on_commit(e)
        } else {
            self.real.free(e)
        };
        let want = self.model.free(e, on_commit);
        prop_assert_eq!(
            got.map(|o| (o.freed_blocks, o.deferred_blocks)),
            want.map(|f| (f.now, f.deferred)),
            "free {} (on commit: {})",
            e,
            on_commit
        );
        if got.is_ok() {
            self.forget_live(e);
        }
        Ok(got.is_err())
    }

    /// A fresh allocation: in bounds, and overlapping nothing the test holds.
    fn check_new(&self, e: Extent) -> Result<(), TestCaseError> {
        prop_assert!(e.len > 0);
        prop_assert!(
            e.checked_end()
                .is_some_and(|end| end <= self.model.capacity()),
            "{} leaves the space",
            e
        );
        for l in &self.live {
            prop_assert!(!l.overlaps(&e), "{} overlaps live {}", e, l);
        }
        Ok(())
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

    /// The allocator against the model: free extents, counts, histogram, invariants.
    fn compare(&self) -> Result<(), TestCaseError> {
        let m = &self.model;
        let runs = m.free_runs();
        prop_assert_eq!(self.real.free_extents().collect::<Vec<_>>(), runs.clone());
        prop_assert_eq!(self.real.durable_free_extents(), m.durable_runs());
        let s = self.real.stats();
        prop_assert_eq!(s.free_blocks, m.free_blocks());
        prop_assert_eq!(s.allocated_blocks, m.allocated_blocks());
        prop_assert_eq!(s.deferred_by, m.deferred());
        prop_assert_eq!(s.deferred_blocks, m.deferred().total());
        prop_assert_eq!(s.pinned_free_blocks, m.pinned_free());
        prop_assert_eq!(s.pinned_blocks, m.pinned_blocks());
        prop_assert_eq!(s.count_pins, m.pins.len() as u64);
        prop_assert_eq!(s.count_readers, m.readers.len() as u64);
        prop_assert_eq!(s.open_epoch, m.open);
        prop_assert_eq!(s.reserved_blocks, m.reserved());
        prop_assert_eq!(s.count_reservations, m.reservations.len() as u64);
        prop_assert_eq!(s.count_free_extents, runs.len() as u64);
        prop_assert_eq!(s.largest_free_blocks, m.largest_free());
        prop_assert_eq!(s.free_histogram, m.histogram());
        if m.capacity() <= 512 {
            for (b, block) in m.blocks.iter().enumerate() {
                let want = match block.state {
                    common::State::Free => BlockState::Free,
                    common::State::Allocated => BlockState::Allocated,
                    common::State::Deferred => BlockState::Deferred,
                };
                prop_assert_eq!(self.real.state_of(b as u64), Some(want), "block {}", b);
                prop_assert_eq!(self.real.pin_count(b as u64), u64::from(block.pins));
            }
            prop_assert_eq!(self.real.state_of(m.capacity()), None);
        }
        let live_blocks: u64 = self.live.iter().map(|e| e.len).sum();
        prop_assert_eq!(
            live_blocks,
            s.allocated_blocks,
            "the test lost track of live blocks"
        );
        if let Err(v) = self.real.check_invariants() {
            prop_assert!(false, "{}", v);
        }
        Ok(())
    }

    /// Mount-time rebuilds: from the durable view (what a crash would leave), and from
    /// the live allocations.
    fn rebuild(&self) -> Result<(), TestCaseError> {
        let cap = self.model.capacity();
        let durable = self.real.durable_free_extents();
        let from_durable = ExtentAllocator::from_free_extents(cap, durable.iter().rev().copied())
            .map_err(|e| TestCaseError::fail(format!("rebuild refused: {e}")))?;
        prop_assert_eq!(
            from_durable.free_extents().collect::<Vec<_>>(),
            self.model.durable_runs()
        );
        let from_live = ExtentAllocator::from_allocated_extents(cap, self.live.iter().copied())
            .map_err(|e| TestCaseError::fail(format!("rebuild refused: {e}")))?;
        let not_live = self.model.runs(|b| b.state != common::State::Allocated);
        prop_assert_eq!(from_live.free_extents().collect::<Vec<_>>(), not_live);
        for rebuilt in [from_durable, from_live] {
            if let Err(v) = rebuilt.check_invariants() {
                prop_assert!(false, "{}", v);
            }
        }
        Ok(())
    }

    /// Releases every pin, reader, epoch and reservation and frees everything: the
    /// whole space must be free (invariant 7: nothing leaked).
    fn drain(&mut self) -> Result<(), TestCaseError> {
        for id in std::mem::take(&mut self.pins) {
            prop_assert_eq!(
                self.real
                    .unpin(id)
                    .map(|o| (o.released_blocks, o.unpinned_free_blocks)),
                self.model.unpin(id)
            );
        }
        for id in std::mem::take(&mut self.readers) {
            prop_assert_eq!(
                self.real.end_read(id).map(|o| o.released_blocks),
                self.model.end_read(id)
            );
        }
        let open = self.model.open;
        prop_assert_eq!(
            self.real.commit(open).map(|o| o.released_blocks),
            self.model.commit(open)
        );
        for res in std::mem::take(&mut self.reservations) {
            let id = res.id();
            prop_assert_eq!(self.real.release(res).ok(), self.model.release(id));
        }
        for e in std::mem::take(&mut self.live) {
            prop_assert_eq!(
                self.real.free(e).map(|o| o.freed_blocks),
                Ok(e.len),
                "nothing holds {}",
                e
            );
            prop_assert!(self.model.free(e, false).is_ok());
        }
        self.compare()?;
        let cap = self.model.capacity();
        let all: Vec<Extent> = if cap == 0 {
            vec![]
        } else {
            vec![Extent::new(0, cap)]
        };
        prop_assert_eq!(self.real.free_extents().collect::<Vec<_>>(), all, "leak");
        prop_assert_eq!(self.real.stats().deferred_blocks, 0);
        Ok(())
    }
}

fn pick<T>(items: &[T], index: usize) -> Option<usize> {
    (!items.is_empty()).then(|| index % items.len())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn allocator_matches_the_model(
        capacity in 1u64..=512,
        mount in proptest::collection::vec((pos(), 1u64..32), 0..6),
        ops in proptest::collection::vec(op(), 1..80),
    ) {
        Harness::run(capacity, &mount, &ops)?;
    }
}

fn small_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (1u64..=8, prop_oneof![Just(PolicyOp::Best), Just(PolicyOp::First), pos().prop_map(PolicyOp::Near)])
            .prop_map(|(min, policy)| Op::Allocate { min, extra: Extra::None, align: 1, policy, reservation: None }),
        3 => (0usize..4096, any::<bool>()).prop_map(|(index, on_commit)| Op::FreeLive { index, skip: 0, take: None, on_commit }),
        1 => op(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: config().cases / 16 + 1, ..config() })]

    /// Bigger spaces with many small extents, so the trees grow deep.
    #[test]
    fn large_spaces_match_the_model(capacity in 1024u64..=4096, ops in proptest::collection::vec(small_op(), 100..600)) {
        Harness::run(capacity, &[], &ops)?;
    }
}

/// Every `(start, len)` on a 16-block space, for `free` and for an exact allocate,
/// from many starting patterns of Allocated blocks.
#[test]
fn exhaustive_small_universe() {
    const N: u64 = 16;
    let mut lens: Vec<u64> = (0..=N + 1).collect();
    lens.extend([u64::MAX, u64::MAX - 3]);
    let mut starts: Vec<u64> = (0..=N + 1).collect();
    starts.extend([u64::MAX, u64::MAX - 2]);
    let mut checked = 0u64;
    // Patterns: bit b set = block b Allocated. A stride keeps it to a few hundred.
    for pattern in (0u32..1 << N).step_by(97).chain([0, (1 << N) - 1]) {
        let mut model = Model::new(N);
        let allocated: Vec<Extent> = (0..N)
            .filter(|b| pattern >> b & 1 == 1)
            .map(|b| Extent::new(b, 1))
            .collect();
        let base = ExtentAllocator::from_allocated_extents(N, allocated.iter().copied()).unwrap();
        for &e in &allocated {
            model.mount_allocated(e);
        }
        assert_eq!(base.free_extents().collect::<Vec<_>>(), model.free_runs());
        for &start in &starts {
            for &len in &lens {
                let e = Extent::new(start, len);
                let (mut real, mut m) = (base.clone(), model.clone());
                assert_eq!(
                    real.free(e).map(|o| o.freed_blocks),
                    m.free(e, false).map(|f| f.now),
                    "free {e} on {pattern:#06x}"
                );
                assert_eq!(real.free_extents().collect::<Vec<_>>(), m.free_runs());
                real.check_invariants().unwrap();

                let req = Req {
                    min: len,
                    max: len,
                    align: 1,
                    policy: Policy::Exact(start),
                };
                let (mut real, mut m) = (base.clone(), model.clone());
                assert_eq!(
                    real.allocate(req.to_request()),
                    m.allocate(req, None),
                    "exact {e} on {pattern:#06x}"
                );
                assert_eq!(real.free_extents().collect::<Vec<_>>(), m.free_runs());
                real.check_invariants().unwrap();
                checked += 2;
            }
        }
    }
    assert!(checked > 200_000, "only {checked} cases ran");
}
