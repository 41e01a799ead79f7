//! Allocation throughput under pin contention: two threads, one allocating and freeing,
//! one pinning and unpinning, on `SharedAllocator` and on the one-lock allocator a user
//! would otherwise build.
//!
//! The allocating thread replays DESIGN's churn trace (see `common`): a space of 2^20
//! blocks, lengths geometric with p = 1/32 truncated to 1..=256, an untimed fill to 70%,
//! then `CONTENTION_OPS` timed operations (default 200,000) that keep it near 70%. Only
//! this thread's operations are timed and counted: throughput is allocate + free calls
//! per second.
//!
//! The second thread is a DMA manager. Before the fill it allocates 256 extents of its
//! own. Each thread's first allocation picks its own starting group, so these sit in a
//! group of their own. Then it does one of three things:
//!
//! - `alone`: nothing; it exits as the timing starts.
//! - `own`: pins and unpins its own extents as fast as it can. It keeps up to
//!   `CONTENTION_PINS_HELD` pins (default 8) live at once and drops the oldest each
//!   time.
//! - `handoff`: the same, but on extents the allocating thread allocated recently. The
//!   allocating thread stores every 4th extent it allocates into a ring of 64 atomic
//!   slots, and the pinner picks a random slot. The store is one relaxed write, done in
//!   every configuration so that the cost is the same everywhere. Such an extent may
//!   have been freed since, so some frees meet live pins and are deferred, and some
//!   pins cover Free blocks. This pinner works in the allocating thread's current group,
//!   so the two threads share a lock much of the time. It is the hard case, and DESIGN
//!   sets no target for it.
//!
//! The allocating thread does not stay out of the pinner's group. During the churn it
//! allocates about three times the space, so its starting group moves round every
//! group, and its live extents, and so its frees, end up spread over all of them.
//! With the default 64 groups, about one operation in 64 therefore locks the group
//! that the pinner keeps busy.
//! `CONTENTION_GROUPS` changes the group count to show this.
//!
//! Both threads start together at a barrier, after the untimed setup. The pinner stops
//! when the allocating thread sets a flag at the end of its trace. Read the pinner's
//! rate next to the throughput: a lock that starves the pinner makes the allocating
//! thread look fast.
//!
//! The naive baseline ([`Naive`]) is one `parking_lot` mutex around:
//! - a best-fit free map (a `BTreeMap` by start plus a `BTreeSet` by length,
//!   coalescing on free);
//! - a `rangemap::RangeMap` of pin counts;
//! - a `Vec` of deferred frees, scanned on unpin for frees whose pins are gone.
//!
//! Output:
//!
//! 1. criterion group `contention/<configuration>` on a shorter trace
//!    (`CONTENTION_CRITERION_OPS`, default 50,000). Each iteration is one setup and
//!    run, timing the allocating thread only.
//! 2. an interleaved ratio pass, printed as markdown tables. It runs
//!    `CONTENTION_ROUNDS` rounds (default 5), each running every configuration once in
//!    a rotating order. It reports medians, and each ratio is the median of the
//!    per-round ratios.
//!
//! Each run ends with an untimed check. Every pin must be dropped and nothing
//! Deferred, and once everything is freed, the whole space must be Free. For
//! `SharedAllocator`, `check_invariants()` runs too.
//!
//! Environment:
//! - `CONTENTION_OPS`, `CONTENTION_CRITERION_OPS`, `CONTENTION_ROUNDS`: as above.
//! - `CONTENTION_PINS_HELD`: pins the pinner keeps live (default 8).
//! - `CONTENTION_PIN_GAP_NS`: busy time between the pinner's pins, standing for the
//!   work of driving a device (default 0: back to back).
//! - `CONTENTION_GROUPS`: allocation groups of the `SharedAllocator` (default: its own
//!   default, 64 on this space).
//! - `CONTENTION_CONFIGS`: a comma-separated subset of configurations, by criterion id
//!   (`shared_alone`, `shared_pinner_own`, `shared_pinner_handoff`, `naive_alone`,
//!   `naive_pinner_own`, `naive_pinner_handoff`).
//!
//! Under `cargo test --benches` everything runs once on a short trace.
//!
//! ```text
//! cargo bench --bench contention                  # criterion + ratio pass
//! cargo bench --bench contention -- ratio-only    # no criterion id matches: ratio pass only
//! CONTENTION_PIN_GAP_NS=1000 cargo bench --bench contention -- ratio-only
//! ```
//!
//! Timing on a shared machine is noisy; the numbers are printed, never asserted.

mod common;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::ops::Range;
use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput};
use parking_lot::Mutex;
use pinalloc::{Extent, PinOptions, Request, SharedAllocator, SharedPinId};
use rangemap::RangeMap;

use common::{Op, RunMode, SEED, SplitMix, Trace, TruncatedGeometric, Workload, env_u64, median};

/// Extents the pinner allocates for itself before the fill.
const OWN_EXTENTS: usize = 256;
/// Slots in the handoff ring.
const HANDOFF_SLOTS: usize = 64;
/// The allocating thread publishes every this-many-th extent it allocates.
const PUBLISH_EVERY: u64 = 4;

// ---------------------------------------------------------------------------------
// The two contenders
// ---------------------------------------------------------------------------------

/// What both allocators offer the two threads.
trait Space: Sync {
    /// What a pin returns and its unpin takes.
    type PinToken: Send;
    fn new(capacity_blocks: u64, settings: Settings) -> Self;
    /// Allocates `len_blocks` (best fit); `None` when there is no room.
    fn allocate(&self, len_blocks: u64) -> Option<Extent>;
    /// Frees a live extent; says whether any of it was deferred by a pin.
    fn free(&self, extent: Extent) -> bool;
    fn pin(&self, extent: Extent) -> Self::PinToken;
    fn unpin(&self, token: Self::PinToken);
    /// With every extent freed and every pin dropped: panics unless the whole space is
    /// Free again.
    fn check_all_free(&self);
}

impl Space for SharedAllocator {
    type PinToken = SharedPinId;

    fn new(capacity_blocks: u64, settings: Settings) -> Self {
        match settings.groups {
            Some(n) => SharedAllocator::builder(capacity_blocks).groups(n).build(),
            None => SharedAllocator::new(capacity_blocks),
        }
    }

    #[inline]
    fn allocate(&self, len_blocks: u64) -> Option<Extent> {
        SharedAllocator::allocate(self, Request::new(len_blocks)).ok()
    }

    #[inline]
    fn free(&self, extent: Extent) -> bool {
        let out = SharedAllocator::free(self, extent).expect("free of a live extent");
        out.deferred_blocks > 0
    }

    #[inline]
    fn pin(&self, extent: Extent) -> SharedPinId {
        self.pin_owned(extent, PinOptions::new())
            .expect("pin of an extent inside the space")
    }

    #[inline]
    fn unpin(&self, token: SharedPinId) {
        SharedAllocator::unpin(self, token).expect("unpin of a live pin");
    }

    fn check_all_free(&self) {
        let s = self.stats().space;
        assert_eq!(s.live_pins, 0, "pins left");
        assert_eq!(s.deferred_blocks, 0, "Deferred blocks left");
        assert_eq!(s.free_blocks, s.capacity_blocks, "blocks leaked");
        self.check_invariants().expect("SharedAllocator invariants");
    }
}

/// What a user would build instead of `SharedAllocator`: one lock around everything.
struct Naive {
    inner: Mutex<NaiveInner>,
}

struct NaiveInner {
    capacity_blocks: u64,
    /// Free extents, start to length; coalesced (no two touch).
    free_by_start: BTreeMap<u64, u64>,
    /// The same free extents as (length, start), for best fit.
    free_by_len: BTreeSet<(u64, u64)>,
    /// The pin count of each pinned block; a block missing from the map has none.
    pins: RangeMap<u64, u32>,
    /// Freed extents that some pin still covers. Each is released, whole, by the unpin
    /// that leaves it with no pin.
    deferred: Vec<Extent>,
    /// Reused by pin and unpin for the pieces whose counts change.
    scratch: Vec<(Range<u64>, u32)>,
}

fn range_of(e: Extent) -> Range<u64> {
    e.start..e.start + e.len
}

impl NaiveInner {
    /// Best fit: the shortest free extent that can hold `len` blocks at its start
    /// without touching a pinned block; the lowest start among equals.
    fn allocate(&mut self, len: u64) -> Option<Extent> {
        let (free_len, start) = self
            .free_by_len
            .range((len, 0)..)
            .find(|&&(_, start)| !self.pins.overlaps(&(start..start + len)))
            .copied()?;
        self.remove_free(start, free_len);
        if free_len > len {
            self.add_free(start + len, free_len - len);
        }
        Some(Extent::new(start, len))
    }

    /// Frees `e` at once, or defers all of it if any of its blocks is pinned.
    fn free(&mut self, e: Extent) -> bool {
        if self.pins.overlaps(&range_of(e)) {
            self.deferred.push(e);
            true
        } else {
            self.insert_free(e.start, e.len);
            false
        }
    }

    /// Adds 1 to the pin count of every block of `r`.
    fn pin(&mut self, r: Range<u64>) {
        let mut pieces = std::mem::take(&mut self.scratch);
        let mut cursor = r.start;
        for (have, &count) in self.pins.overlapping(&r) {
            let (s, e) = (have.start.max(r.start), have.end.min(r.end));
            if cursor < s {
                pieces.push((cursor..s, 1));
            }
            pieces.push((s..e, count + 1));
            cursor = e;
        }
        if cursor < r.end {
            pieces.push((cursor..r.end, 1));
        }
        for (piece, count) in pieces.drain(..) {
            self.pins.insert(piece, count);
        }
        self.scratch = pieces;
    }

    /// Subtracts 1 from the pin count of every block of `r`, then releases the
    /// deferred frees it overlapped that no pin covers any more.
    fn unpin(&mut self, r: Range<u64>) {
        let mut pieces = std::mem::take(&mut self.scratch);
        let mut covered = 0;
        for (have, &count) in self.pins.overlapping(&r) {
            let (s, e) = (have.start.max(r.start), have.end.min(r.end));
            covered += e - s;
            pieces.push((s..e, count));
        }
        assert_eq!(
            covered,
            r.end - r.start,
            "unpin of a range that is not pinned"
        );
        for (piece, count) in pieces.drain(..) {
            if count == 1 {
                self.pins.remove(piece);
            } else {
                self.pins.insert(piece, count - 1);
            }
        }
        self.scratch = pieces;

        let mut i = 0;
        while i < self.deferred.len() {
            let d = range_of(self.deferred[i]);
            if d.start < r.end && r.start < d.end && !self.pins.overlaps(&d) {
                let e = self.deferred.swap_remove(i);
                self.insert_free(e.start, e.len);
            } else {
                i += 1;
            }
        }
    }

    /// Adds a free extent, merged with the free extents it touches.
    fn insert_free(&mut self, mut start: u64, mut len: u64) {
        if let Some((&before, &before_len)) = self.free_by_start.range(..start).next_back() {
            assert!(before + before_len <= start, "double free at {start}");
            if before + before_len == start {
                self.remove_free(before, before_len);
                start = before;
                len += before_len;
            }
        }
        let end = start + len;
        if let Some((&after, &after_len)) = self.free_by_start.range(start..).next() {
            assert!(after >= end, "double free at {after}");
            if after == end {
                self.remove_free(after, after_len);
                len += after_len;
            }
        }
        self.add_free(start, len);
    }

    fn add_free(&mut self, start: u64, len: u64) {
        self.free_by_start.insert(start, len);
        self.free_by_len.insert((len, start));
    }

    fn remove_free(&mut self, start: u64, len: u64) {
        self.free_by_start.remove(&start);
        self.free_by_len.remove(&(len, start));
    }
}

impl Space for Naive {
    /// A pin is its range: unpin subtracts the counts again.
    type PinToken = Extent;

    fn new(capacity_blocks: u64, _: Settings) -> Self {
        let mut inner = NaiveInner {
            capacity_blocks,
            free_by_start: BTreeMap::new(),
            free_by_len: BTreeSet::new(),
            pins: RangeMap::new(),
            deferred: Vec::new(),
            scratch: Vec::new(),
        };
        inner.add_free(0, capacity_blocks);
        Naive {
            inner: Mutex::new(inner),
        }
    }

    #[inline]
    fn allocate(&self, len_blocks: u64) -> Option<Extent> {
        self.inner.lock().allocate(len_blocks)
    }

    #[inline]
    fn free(&self, extent: Extent) -> bool {
        self.inner.lock().free(extent)
    }

    #[inline]
    fn pin(&self, extent: Extent) -> Extent {
        self.inner.lock().pin(range_of(extent));
        extent
    }

    #[inline]
    fn unpin(&self, extent: Extent) {
        self.inner.lock().unpin(range_of(extent));
    }

    fn check_all_free(&self) {
        let inner = self.inner.lock();
        assert!(inner.pins.is_empty(), "pins left");
        assert!(inner.deferred.is_empty(), "deferred frees left");
        let whole = (0, inner.capacity_blocks);
        assert_eq!(
            inner
                .free_by_start
                .iter()
                .map(|(&s, &l)| (s, l))
                .collect::<Vec<_>>(),
            [whole],
            "blocks leaked"
        );
        assert_eq!(
            inner.free_by_len.iter().copied().collect::<Vec<_>>(),
            [(inner.capacity_blocks, 0)],
            "the length index disagrees"
        );
    }
}

// ---------------------------------------------------------------------------------
// The two threads
// ---------------------------------------------------------------------------------

/// What the second thread does once the timing starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pinner {
    /// Nothing: it exits.
    Idle,
    /// Pins and unpins the extents it allocated for itself.
    Own,
    /// Pins and unpins extents the allocating thread recently allocated.
    Handoff,
}

/// Recently allocated extents, shown by the allocating thread to the pinner without a
/// lock. A slot holds `start << 32 | len`, or 0 while empty.
struct Handoff {
    slots: [AtomicU64; HANDOFF_SLOTS],
}

impl Handoff {
    fn new() -> Self {
        Handoff {
            slots: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    /// Called by the allocating thread, its only writer, after its `n`-th allocation.
    #[inline]
    fn publish(&self, n: u64, e: Extent) {
        if n % PUBLISH_EVERY == 0 {
            let slot = (n / PUBLISH_EVERY) as usize % HANDOFF_SLOTS;
            self.slots[slot].store(e.start << 32 | e.len, Ordering::Relaxed);
        }
    }

    /// A random published extent, if that slot has one yet.
    #[inline]
    fn pick(&self, rng: &mut SplitMix) -> Option<Extent> {
        let v = self.slots[rng.below(HANDOFF_SLOTS as u64) as usize].load(Ordering::Relaxed);
        (v != 0).then(|| Extent::new(v >> 32, v & 0xFFFF_FFFF))
    }
}

/// What the allocating thread hands back.
struct Churned {
    elapsed: Duration,
    live: Vec<Option<Extent>>,
    /// Successful allocations, fill included: the handoff's publish counter.
    allocations: u64,
    failures: u64,
    deferred_frees: u64,
}

impl Churned {
    /// Keeps the outcome of an allocation, and shows some of them to the pinner.
    #[inline]
    fn record(&mut self, e: Option<Extent>, handoff: &Handoff) {
        match e {
            Some(e) => {
                handoff.publish(self.allocations, e);
                self.allocations += 1;
            }
            None => self.failures += 1,
        }
        self.live.push(e);
    }
}

/// The allocating thread: waits for the pinner's setup, fills, starts the pinner,
/// replays the timed trace, then stops the pinner.
fn allocating_thread<S: Space>(
    space: &S,
    trace: &Trace,
    handoff: &Handoff,
    barrier: &Barrier,
    stop: &AtomicBool,
) -> Churned {
    barrier.wait(); // the pinner has its own extents
    let mut out = Churned {
        elapsed: Duration::ZERO,
        live: Vec::with_capacity(trace.max_live),
        allocations: 0,
        failures: 0,
        deferred_frees: 0,
    };
    for &len in &trace.fill {
        out.record(space.allocate(u64::from(len)), handoff);
    }
    barrier.wait(); // go
    let started = Instant::now();
    churn(space, &mut out, &trace.churn, handoff);
    out.elapsed = started.elapsed();
    stop.store(true, Ordering::Release);
    out
}

/// The timed part.
#[inline(never)]
fn churn<S: Space>(space: &S, out: &mut Churned, ops: &[Op], handoff: &Handoff) {
    for &op in ops {
        match op {
            Op::Alloc { len } => out.record(space.allocate(u64::from(len)), handoff),
            Op::Free { slot } => {
                if let Some(e) = out.live.swap_remove(slot as usize) {
                    out.deferred_frees += u64::from(space.free(e));
                }
            }
        }
    }
}

/// The knobs of a run, from the environment.
#[derive(Debug, Clone, Copy)]
struct Settings {
    /// Allocation groups of the `SharedAllocator`; `None` for its default.
    groups: Option<u64>,
    /// Pins live at once; each new pin beyond this drops the oldest.
    pins_held: usize,
    /// Busy time between pins, standing for the work of driving a device; zero for
    /// back-to-back pins.
    gap: Duration,
}

impl Settings {
    #[inline]
    fn pause(&self) {
        if self.gap.is_zero() {
            return;
        }
        let until = Instant::now() + self.gap;
        while Instant::now() < until {
            std::hint::spin_loop();
        }
    }
}

/// The pinner thread: allocates its own extents, then pins and unpins until `stop`.
/// Returns its extents and the number of pin + unpin pairs it completed.
fn pinner_thread<S: Space>(
    space: &S,
    mode: Pinner,
    settings: Settings,
    handoff: &Handoff,
    barrier: &Barrier,
    stop: &AtomicBool,
) -> (Vec<Extent>, u64) {
    let mut rng = SplitMix::new(SEED ^ 0xD3A_F00D);
    let lens = TruncatedGeometric::new(1.0 / 32.0, 256);
    let own: Vec<Extent> = (0..OWN_EXTENTS)
        .map(|_| {
            space
                .allocate(lens.sample(&mut rng))
                .expect("room for the pinner's extents")
        })
        .collect();
    barrier.wait(); // own extents allocated
    barrier.wait(); // go
    if mode == Pinner::Idle {
        return (own, 0);
    }
    let mut held: VecDeque<S::PinToken> = VecDeque::with_capacity(settings.pins_held + 1);
    let mut pairs = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let target = match mode {
            Pinner::Own => own[rng.below(own.len() as u64) as usize],
            _ => match handoff.pick(&mut rng) {
                Some(e) => e,
                None => continue,
            },
        };
        held.push_back(space.pin(target));
        if held.len() > settings.pins_held {
            space.unpin(held.pop_front().expect("not empty"));
            pairs += 1;
        }
        settings.pause();
    }
    for token in held {
        space.unpin(token);
    }
    (own, pairs)
}

/// The outcome of one run.
#[derive(Debug, Clone, Copy)]
struct RunResult {
    /// The allocating thread's timed trace.
    elapsed: Duration,
    /// Pin + unpin pairs the pinner completed meanwhile.
    pin_pairs: u64,
    /// Frees that deferred at least one block.
    deferred_frees: u64,
    failures: u64,
}

/// One run on a fresh `S`: setup, the timed two-thread mix, then an untimed check
/// that freeing everything gives the whole space back.
fn run<S: Space>(trace: &Trace, mode: Pinner, settings: Settings) -> RunResult {
    assert!(
        trace.capacity <= u64::from(u32::MAX),
        "handoff packs starts in 32 bits"
    );
    let space = S::new(trace.capacity, settings);
    let handoff = Handoff::new();
    let barrier = Barrier::new(2);
    let stop = AtomicBool::new(false);
    let (churned, (own, pin_pairs)) = thread::scope(|s| {
        let pinner = s.spawn(|| pinner_thread(&space, mode, settings, &handoff, &barrier, &stop));
        let allocating = s.spawn(|| allocating_thread(&space, trace, &handoff, &barrier, &stop));
        let churned = allocating.join().expect("allocating thread");
        (churned, pinner.join().expect("pinner thread"))
    });
    for e in own
        .into_iter()
        .chain(churned.live.iter().flatten().copied())
    {
        assert!(!space.free(e), "a free deferred with every pin dropped");
    }
    space.check_all_free();
    RunResult {
        elapsed: churned.elapsed,
        pin_pairs,
        deferred_frees: churned.deferred_frees,
        failures: churned.failures,
    }
}

// ---------------------------------------------------------------------------------
// Configurations
// ---------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Contender {
    Shared,
    Naive,
}

#[derive(Debug, Clone, Copy)]
struct Config {
    contender: Contender,
    pinner: Pinner,
}

const CONFIGS: [Config; 6] = [
    Config {
        contender: Contender::Shared,
        pinner: Pinner::Idle,
    },
    Config {
        contender: Contender::Shared,
        pinner: Pinner::Own,
    },
    Config {
        contender: Contender::Shared,
        pinner: Pinner::Handoff,
    },
    Config {
        contender: Contender::Naive,
        pinner: Pinner::Idle,
    },
    Config {
        contender: Contender::Naive,
        pinner: Pinner::Own,
    },
    Config {
        contender: Contender::Naive,
        pinner: Pinner::Handoff,
    },
];

impl Config {
    /// The criterion id.
    fn id(&self) -> String {
        let c = match self.contender {
            Contender::Shared => "shared",
            Contender::Naive => "naive",
        };
        let p = match self.pinner {
            Pinner::Idle => "alone",
            Pinner::Own => "pinner_own",
            Pinner::Handoff => "pinner_handoff",
        };
        format!("{c}_{p}")
    }

    /// The row name in the table.
    fn label(&self) -> String {
        let c = match self.contender {
            Contender::Shared => "SharedAllocator",
            Contender::Naive => "naive (Mutex + BTree + rangemap + Vec)",
        };
        let p = match self.pinner {
            Pinner::Idle => "alone",
            Pinner::Own => "+ pinner, own extents",
            Pinner::Handoff => "+ pinner, handed-off extents",
        };
        format!("{c}, {p}")
    }

    fn run(&self, trace: &Trace, settings: Settings) -> RunResult {
        match self.contender {
            Contender::Shared => run::<SharedAllocator>(trace, self.pinner, settings),
            Contender::Naive => run::<Naive>(trace, self.pinner, settings),
        }
    }
}

// ---------------------------------------------------------------------------------
// Criterion and the ratio pass
// ---------------------------------------------------------------------------------

fn criterion_benches(c: &mut Criterion, trace: &Trace, settings: Settings) {
    let mut group = c.benchmark_group("contention");
    group.sampling_mode(SamplingMode::Flat);
    group.throughput(Throughput::Elements(trace.churn.len() as u64));
    for config in CONFIGS {
        group.bench_function(config.id(), |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| config.run(trace, settings).elapsed)
                    .sum()
            });
        });
    }
    group.finish();
}

/// Throughput of the allocating thread, in millions of operations per second.
fn mops(ops: usize, elapsed: Duration) -> f64 {
    ops as f64 / elapsed.as_secs_f64() / 1e6
}

/// The configurations `CONTENTION_CONFIGS` selects (comma-separated criterion ids;
/// unset or empty = all).
fn selected_configs() -> Vec<Config> {
    let list = std::env::var("CONTENTION_CONFIGS").unwrap_or_default();
    let wanted: Vec<&str> = list
        .split(',')
        .map(str::trim)
        .filter(|w| !w.is_empty())
        .collect();
    let ids: Vec<String> = CONFIGS.iter().map(Config::id).collect();
    for w in &wanted {
        assert!(
            ids.iter().any(|id| id == w),
            "CONTENTION_CONFIGS: unknown configuration {w:?}; known: {ids:?}"
        );
    }
    CONFIGS
        .into_iter()
        .filter(|c| wanted.is_empty() || wanted.contains(&c.id().as_str()))
        .collect()
}

fn ratio_pass(trace: &Trace, rounds: usize, settings: Settings) {
    let configs = selected_configs();
    let n = configs.len();
    if rounds == 0 || n == 0 {
        return;
    }
    let ops = trace.churn.len();
    let mut throughput: Vec<Vec<f64>> = vec![Vec::new(); n];
    let mut pin_rate: Vec<Vec<f64>> = vec![Vec::new(); n];
    let mut deferred: Vec<Vec<f64>> = vec![Vec::new(); n];
    let mut failures = vec![0u64; n];
    eprintln!("ratio pass: {rounds} round(s) x {n} configurations, {ops} timed ops each");
    for round in 0..rounds {
        let started = Instant::now();
        for k in 0..n {
            let i = (k + round) % n;
            let r = configs[i].run(trace, settings);
            throughput[i].push(mops(ops, r.elapsed));
            pin_rate[i].push(r.pin_pairs as f64 / r.elapsed.as_secs_f64() / 1e3);
            deferred[i].push(r.deferred_frees as f64);
            failures[i] = failures[i].max(r.failures);
        }
        eprintln!(
            "  round {}/{rounds} ({:.1} s)",
            round + 1,
            started.elapsed().as_secs_f64()
        );
    }

    println!();
    println!(
        "Contention: 2^{} blocks, fill to 70% ({} extents), {} timed allocate/free ops on the \
         allocating thread ({} allocs, {} frees); the pinner holds up to {} pins and pauses \
         {} ns between pins. Median of {rounds} interleaved round(s), 2 threads.",
        trace.capacity.trailing_zeros(),
        trace.fill.len(),
        ops,
        trace.churn_allocs,
        trace.churn_frees,
        settings.pins_held,
        settings.gap.as_nanos(),
    );
    println!();
    println!(
        "| configuration | allocate+free M ops/s | pinner k pin+unpin/s | frees deferred | \
         alloc failures |"
    );
    println!("|---|---:|---:|---:|---:|");
    for (i, config) in configs.iter().enumerate() {
        println!(
            "| {} | {:.3} | {:.0} | {:.0} | {} |",
            config.label(),
            median(&throughput[i]),
            median(&pin_rate[i]),
            median(&deferred[i]),
            failures[i],
        );
    }

    // Each ratio is taken round by round, so that drift on a shared machine cancels.
    let position = |contender, pinner| {
        configs
            .iter()
            .position(|c| c.contender == contender && c.pinner == pinner)
    };
    let ratio = |num: (Contender, Pinner), den: (Contender, Pinner)| -> Option<String> {
        let (a, b) = (position(num.0, num.1)?, position(den.0, den.1)?);
        let per_round: Vec<f64> = throughput[a]
            .iter()
            .zip(&throughput[b])
            .map(|(x, y)| x / y)
            .collect();
        let lo = per_round.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = per_round.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        Some(format!("{:.2} | {lo:.2}..{hi:.2}", median(&per_round)))
    };
    use Contender::{Naive as N, Shared as S};
    use Pinner::{Handoff as H, Idle as I, Own as O};
    let rows = [
        (
            "(b)/(a): SharedAllocator with a pinner on its own extents / alone",
            ratio((S, O), (S, I)),
            "at least 0.8",
        ),
        (
            "(b)/(c): SharedAllocator / naive, both with a pinner on its own extents",
            ratio((S, O), (N, O)),
            "at least 5",
        ),
        (
            "SharedAllocator with a pinner on handed-off extents / alone",
            ratio((S, H), (S, I)),
            "none (the pinner works in the allocating thread's group)",
        ),
        (
            "SharedAllocator / naive, both with a pinner on handed-off extents",
            ratio((S, H), (N, H)),
            "none",
        ),
        (
            "SharedAllocator / naive, alone",
            ratio((S, I), (N, I)),
            "at least 3 (issue 16)",
        ),
    ];
    println!();
    println!("| throughput ratio | median | min..max over rounds | target |");
    println!("|---|---:|---:|---|");
    for (name, cells, target) in rows {
        if let Some(cells) = cells {
            println!("| {name} | {cells} | {target} |");
        }
    }
    let total_failures: u64 = failures.iter().sum();
    if total_failures > 0 {
        println!();
        println!("WARNING: {total_failures} allocation failure(s); expected none.");
    }
}

fn main() {
    let mode = RunMode::from_args();
    let small = mode == RunMode::Test;
    let ops = env_u64("CONTENTION_OPS", if small { 20_000 } else { 200_000 });
    let criterion_ops = env_u64(
        "CONTENTION_CRITERION_OPS",
        if small { 5_000 } else { 50_000 },
    );
    let rounds = env_u64("CONTENTION_ROUNDS", if small { 1 } else { 5 });
    let settings = Settings {
        groups: std::env::var("CONTENTION_GROUPS")
            .is_ok()
            .then(|| env_u64("CONTENTION_GROUPS", 0)),
        pins_held: usize::try_from(env_u64("CONTENTION_PINS_HELD", 8).max(1))
            .expect("CONTENTION_PINS_HELD fits in usize"),
        gap: Duration::from_nanos(env_u64("CONTENTION_PIN_GAP_NS", 0)),
    };
    let to_usize = |v: u64| usize::try_from(v).expect("op count fits in usize");

    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    let short = Trace::generate(&Workload::design_doc(to_usize(criterion_ops)));
    criterion_benches(&mut c, &short, settings);
    c.final_summary();

    if mode != RunMode::CriterionOnly {
        let trace = Trace::generate(&Workload::design_doc(to_usize(ops)));
        ratio_pass(
            &trace,
            usize::try_from(rounds).expect("CONTENTION_ROUNDS fits in usize"),
            settings,
        );
    }
}
