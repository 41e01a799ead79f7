//! Shared pieces for pinalloc's benchmarks: the design-doc churn workload, a seeded
//! trace generator, and one small adapter trait ([`Peer`]) over pinalloc and the
//! allocators it is compared with.
//!
//! A trace is generated once, as a *logical* sequence of operations, and replayed
//! identically against every peer. Occupancy decisions come from the logical trace,
//! never from an allocator, so every peer sees exactly the same requests and frees.
//!
//! Environment:
//! - `BENCH_PEERS`: comma-separated peer names to run (default: all of them), e.g.
//!   `BENCH_PEERS=pinalloc,xalloc-tlsf`.

// Each bench uses its own subset of this module.
#![allow(dead_code)]

use std::hint::black_box;
use std::ops::Range;
use std::time::{Duration, Instant};

use pinalloc::{Extent, ExtentAllocator, Request, SharedAllocator};
pub mod sketch;

// ---------------------------------------------------------------------------------
// PRNG and distributions
// ---------------------------------------------------------------------------------

/// The fixed seed of the benchmark traces.
pub const SEED: u64 = 0x0070_1A11_0C5E_ED01;

/// The testing kit's seeded generator drives every workload: one SplitMix, the same
/// sequence on every machine.
pub use pinalloc::testing::{Source, SplitMix};

/// Geometric lengths `P(k) ∝ (1-p)^(k-1) p` for `k` in `1..=max`, truncated by
/// rejection-resampling (never clamping).
#[derive(Debug, Clone, Copy)]
pub struct TruncatedGeometric {
    ln_q: f64,
    max: u64,
}

impl TruncatedGeometric {
    pub fn new(p: f64, max: u64) -> Self {
        assert!(p > 0.0 && p < 1.0, "p must lie in (0, 1)");
        assert!(max >= 1);
        TruncatedGeometric {
            ln_q: (1.0 - p).ln(),
            max,
        }
    }

    /// Inversion: with `U` uniform in `(0, 1]`, `floor(ln U / ln(1-p)) + 1` is
    /// geometric, since `P(K > k) = P(U <= (1-p)^k) = (1-p)^k`. Draws above `max` are
    /// rejected and drawn again.
    pub fn sample(&self, rng: &mut SplitMix) -> u64 {
        loop {
            let u = 1.0 - rng.next_f64(); // (0, 1]
            let k = (u.ln() / self.ln_q).floor() as u64 + 1; // saturating cast
            if k <= self.max {
                return k;
            }
        }
    }
}

// ---------------------------------------------------------------------------------
// Workload and trace
// ---------------------------------------------------------------------------------

/// The parameters of a churn workload.
#[derive(Debug, Clone)]
pub struct Workload {
    /// Blocks in the space.
    pub capacity: u64,
    /// Geometric parameter of the extent lengths.
    pub p: f64,
    /// Lengths are truncated (by rejection) to `1..=max_len`.
    pub max_len: u64,
    /// Target occupancy, as the fraction `num / den` of `capacity`.
    pub occupancy_num: u64,
    pub occupancy_den: u64,
    /// Below the target, allocate with this probability (free otherwise); at or above
    /// it, allocate with `1 - alloc_prob_below` (free with `alloc_prob_below`).
    pub alloc_prob_below: f64,
    /// Timed operations after the fill.
    pub ops: usize,
    pub seed: u64,
}

impl Workload {
    /// The design doc's churn workload: 2^20 blocks, geometric lengths with p = 1/32
    /// truncated to 1..=256, fill to 70%, then `ops` operations allocating with
    /// probability 0.75 below 70% and 0.25 at or above it.
    pub fn design_doc(ops: usize) -> Self {
        Workload {
            capacity: 1 << 20,
            p: 1.0 / 32.0,
            max_len: 256,
            occupancy_num: 7,
            occupancy_den: 10,
            alloc_prob_below: 0.75,
            ops,
            seed: SEED,
        }
    }

    /// Whether `live_blocks` is below the target occupancy (exact integer test).
    fn below_target(&self, live_blocks: u64) -> bool {
        u128::from(live_blocks) * u128::from(self.occupancy_den)
            < u128::from(self.capacity) * u128::from(self.occupancy_num)
    }
}

/// One logical operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Allocate `len` blocks; the allocation is pushed at the end of the live list.
    Alloc { len: u32 },
    /// Free the live allocation at index `slot` of the live list, which is then
    /// `swap_remove`d.
    Free { slot: u32 },
}

/// A generated trace: the untimed fill, the timed churn, and what the logical live list
/// looks like at the end.
#[derive(Debug, Clone)]
pub struct Trace {
    pub capacity: u64,
    /// Lengths allocated, in order, by the untimed fill.
    pub fill: Vec<u32>,
    /// The timed operations.
    pub churn: Vec<Op>,
    /// The logical live list after the churn: `final_lens[i]` is the length of the
    /// allocation in slot `i`.
    pub final_lens: Vec<u32>,
    /// The most allocations ever live at once (to size the slot vector up front).
    pub max_live: usize,
    pub churn_allocs: usize,
    pub churn_frees: usize,
    pub fill_blocks: u64,
    pub final_live_blocks: u64,
}

impl Trace {
    pub fn generate(w: &Workload) -> Self {
        assert!(w.max_len <= u64::from(u32::MAX) && w.max_len <= w.capacity);
        let mut rng = SplitMix::new(w.seed);
        let lens = TruncatedGeometric::new(w.p, w.max_len);

        let mut live: Vec<u32> = Vec::new();
        let mut live_blocks = 0u64;
        let mut fill = Vec::new();
        while w.below_target(live_blocks) {
            let len = lens.sample(&mut rng) as u32;
            fill.push(len);
            live.push(len);
            live_blocks += u64::from(len);
        }
        let fill_blocks = live_blocks;
        let mut max_live = live.len();

        let mut churn = Vec::with_capacity(w.ops);
        let (mut churn_allocs, mut churn_frees) = (0, 0);
        for _ in 0..w.ops {
            let alloc_prob = if w.below_target(live_blocks) {
                w.alloc_prob_below
            } else {
                1.0 - w.alloc_prob_below
            };
            // The draw is made even when the list is empty, so the stream never shifts.
            let want_alloc = rng.next_f64() < alloc_prob;
            if want_alloc || live.is_empty() {
                let len = lens.sample(&mut rng) as u32;
                churn.push(Op::Alloc { len });
                live.push(len);
                live_blocks += u64::from(len);
                max_live = max_live.max(live.len());
                churn_allocs += 1;
            } else {
                let slot = rng.below(live.len() as u64) as usize;
                live_blocks -= u64::from(live.swap_remove(slot));
                churn.push(Op::Free { slot: slot as u32 });
                churn_frees += 1;
            }
            debug_assert!(live_blocks <= w.capacity);
        }

        Trace {
            capacity: w.capacity,
            fill,
            churn,
            final_lens: live,
            max_live,
            churn_allocs,
            churn_frees,
            fill_blocks,
            final_live_blocks: live_blocks,
        }
    }
}

// ---------------------------------------------------------------------------------
// Peers
// ---------------------------------------------------------------------------------

/// One allocator under comparison, in units of blocks.
pub trait Peer {
    /// The name in benchmark ids and tables.
    const NAME: &'static str;
    /// What `alloc` hands back and `free` takes.
    type Handle;
    /// An allocator managing `0..capacity`.
    fn new(capacity: u64) -> Self;
    /// Allocates exactly `len` blocks (the allocator's default placement policy).
    fn alloc(&mut self, len: u64) -> Option<Self::Handle>;
    /// Frees an allocation from `alloc`.
    fn free(&mut self, handle: Self::Handle);
    /// The first block of an allocation.
    fn offset(handle: &Self::Handle) -> u64;
    /// The free-extent count as the allocator itself reports it, when it has one; used
    /// only as a cross-check of the count derived from the live allocations.
    fn reported_free_extents(&self) -> Option<u64> {
        None
    }
    /// Heap bytes of its metadata, when it can tell (by its containers' capacities).
    fn metadata_bytes(&self) -> Option<u64> {
        None
    }
}

/// The [`Peer`] impl of a pinalloc allocator. The core and the shared allocator take
/// the same calls (`allocate(Request::new(len))`, `free(extent)`), so one body serves
/// both; `{ ... }` adds the reports a peer can give.
macro_rules! pinalloc_peer {
    ($peer:ident, $alloc:ty, $name:literal $(, { $($reports:tt)* })?) => {
        impl Peer for $peer {
            const NAME: &'static str = $name;
            type Handle = Extent;

            fn new(capacity: u64) -> Self {
                $peer(<$alloc>::new(capacity))
            }

            #[inline]
            fn alloc(&mut self, len: u64) -> Option<Extent> {
                self.0.allocate(Request::new(len)).ok()
            }

            #[inline]
            fn free(&mut self, handle: Extent) {
                self.0
                    .free(handle)
                    .expect(concat!($name, ": free of a live allocation"));
            }

            #[inline]
            fn offset(handle: &Extent) -> u64 {
                handle.start
            }

            $($($reports)*)?
        }
    };
}

/// pinalloc, best fit (its default policy).
pub struct PinallocPeer(pub ExtentAllocator);

pinalloc_peer!(PinallocPeer, ExtentAllocator, "pinalloc", {
    fn reported_free_extents(&self) -> Option<u64> {
        Some(self.0.stats().free_extents)
    }

    fn metadata_bytes(&self) -> Option<u64> {
        Some(self.0.stats().metadata_bytes as u64)
    }
});

/// A `SharedAllocator` (its default groups) as a churn peer, from one thread. It
/// reports no free-extent count: its groups count an extent across a boundary twice.
pub struct SharedPeer(pub SharedAllocator);

pinalloc_peer!(SharedPeer, SharedAllocator, "pinalloc-shared");

/// [`sketch::Sketch`] freeing by the extent's start, as pinalloc is asked to. Run only
/// when `BENCH_PEERS` names it.
pub struct SketchStartPeer(pub sketch::Sketch);

impl Peer for SketchStartPeer {
    const NAME: &'static str = "sketch-by-start";
    type Handle = Extent;

    fn new(capacity: u64) -> Self {
        SketchStartPeer(sketch::Sketch::new(capacity, true))
    }

    #[inline]
    fn alloc(&mut self, len: u64) -> Option<Extent> {
        self.0.alloc(len).map(|(start, _)| Extent::new(start, len))
    }

    #[inline]
    fn free(&mut self, handle: Extent) {
        self.0.free_by_start(handle.start, handle.len);
    }

    #[inline]
    fn offset(handle: &Extent) -> u64 {
        handle.start
    }

    fn reported_free_extents(&self) -> Option<u64> {
        Some(self.0.free_extents())
    }

    fn metadata_bytes(&self) -> Option<u64> {
        Some(self.0.heap_bytes())
    }
}

/// [`sketch::Sketch`] freeing by node, as TLSF frees by handle. Run only when
/// `BENCH_PEERS` names it.
pub struct SketchNodePeer(pub sketch::Sketch);

impl Peer for SketchNodePeer {
    const NAME: &'static str = "sketch-by-node";
    type Handle = (Extent, u32);

    fn new(capacity: u64) -> Self {
        SketchNodePeer(sketch::Sketch::new(capacity, false))
    }

    #[inline]
    fn alloc(&mut self, len: u64) -> Option<(Extent, u32)> {
        self.0
            .alloc(len)
            .map(|(start, id)| (Extent::new(start, len), id))
    }

    #[inline]
    fn free(&mut self, (extent, id): (Extent, u32)) {
        self.0.free_node(id, extent.len);
    }

    #[inline]
    fn offset(handle: &(Extent, u32)) -> u64 {
        handle.0.start
    }

    fn reported_free_extents(&self) -> Option<u64> {
        Some(self.0.free_extents())
    }

    fn metadata_bytes(&self) -> Option<u64> {
        Some(self.0.heap_bytes())
    }
}

fn capacity_u32(capacity: u64) -> u32 {
    u32::try_from(capacity).expect("this peer manages at most u32::MAX units")
}

fn len_u32(len: u64) -> u32 {
    u32::try_from(len).expect("this peer allocates at most u32::MAX units")
}

/// `offset-allocator` (two-level bins, Sebastian Aaltonen's OffsetAllocator port).
///
/// Its node pool is sized so it can never run out of nodes: every node covers at least
/// one unit, so `capacity + 1` nodes always suffice. (The default, 128 Ki nodes, would
/// also be enough for the churn workload.)
pub struct OffsetAllocatorPeer(pub offset_allocator::Allocator<u32>);

impl Peer for OffsetAllocatorPeer {
    const NAME: &'static str = "offset-allocator";
    type Handle = offset_allocator::Allocation<u32>;

    fn new(capacity: u64) -> Self {
        let size = capacity_u32(capacity);
        let max_allocs = size.saturating_add(1).min(u32::MAX - 2);
        OffsetAllocatorPeer(offset_allocator::Allocator::with_max_allocs(
            size, max_allocs,
        ))
    }

    #[inline]
    fn alloc(&mut self, len: u64) -> Option<Self::Handle> {
        self.0.allocate(len_u32(len))
    }

    #[inline]
    fn free(&mut self, handle: Self::Handle) {
        self.0.free(handle);
    }

    #[inline]
    fn offset(handle: &Self::Handle) -> u64 {
        u64::from(handle.offset)
    }
}

/// `xalloc`'s TLSF with system-allocated block records (`SysTlsf<u32>`).
///
/// Note: `SysTlsf` has no `Drop` that returns its block records, so each dropped
/// instance leaks them (a few MB per churn replay); harmless for a benchmark.
pub struct TlsfPeer(pub xalloc::SysTlsf<u32>);

/// A TLSF region with the offset `alloc` returned alongside it.
pub struct TlsfHandle {
    region: xalloc::SysTlsfRegion,
    offset: u32,
}

impl Peer for TlsfPeer {
    const NAME: &'static str = "xalloc-tlsf";
    type Handle = TlsfHandle;

    fn new(capacity: u64) -> Self {
        TlsfPeer(xalloc::SysTlsf::new(capacity_u32(capacity)))
    }

    #[inline]
    fn alloc(&mut self, len: u64) -> Option<TlsfHandle> {
        self.0
            .alloc(len_u32(len))
            .map(|(region, offset)| TlsfHandle { region, offset })
    }

    #[inline]
    fn free(&mut self, handle: TlsfHandle) {
        self.0
            .dealloc(handle.region)
            .expect("xalloc-tlsf: region from this allocator");
    }

    #[inline]
    fn offset(handle: &TlsfHandle) -> u64 {
        u64::from(handle.offset)
    }
}

/// `orderly-allocator` (best fit over a size-ordered `BTreeSet`).
pub struct OrderlyPeer(pub orderly_allocator::Allocator);

impl Peer for OrderlyPeer {
    const NAME: &'static str = "orderly-allocator";
    type Handle = orderly_allocator::Allocation;

    fn new(capacity: u64) -> Self {
        OrderlyPeer(orderly_allocator::Allocator::new(capacity_u32(capacity)))
    }

    #[inline]
    fn alloc(&mut self, len: u64) -> Option<Self::Handle> {
        self.0.alloc(len_u32(len))
    }

    #[inline]
    fn free(&mut self, handle: Self::Handle) {
        self.0.free(handle);
    }

    #[inline]
    fn offset(handle: &Self::Handle) -> u64 {
        u64::from(handle.offset())
    }
}

/// `range-alloc` (best fit over a sorted `Vec` of free ranges: linear scans).
pub struct RangeAllocPeer(pub range_alloc::RangeAllocator<u32>);

impl Peer for RangeAllocPeer {
    const NAME: &'static str = "range-alloc";
    type Handle = Range<u32>;

    fn new(capacity: u64) -> Self {
        RangeAllocPeer(range_alloc::RangeAllocator::new(0..capacity_u32(capacity)))
    }

    #[inline]
    fn alloc(&mut self, len: u64) -> Option<Range<u32>> {
        self.0.allocate_range(len_u32(len)).ok()
    }

    #[inline]
    fn free(&mut self, handle: Range<u32>) {
        self.0.free_range(handle);
    }

    #[inline]
    fn offset(handle: &Range<u32>) -> u64 {
        u64::from(handle.start)
    }
}

/// Something to do with each peer type, for [`visit_peers`].
pub trait PeerVisitor {
    fn visit<P: Peer>(&mut self);
}

/// All peer names, pinalloc first.
pub const PEER_NAMES: [&str; 7] = [
    PinallocPeer::NAME,
    SketchStartPeer::NAME,
    SketchNodePeer::NAME,
    OffsetAllocatorPeer::NAME,
    TlsfPeer::NAME,
    OrderlyPeer::NAME,
    RangeAllocPeer::NAME,
];

/// Whether `BENCH_PEERS` (comma-separated names; unset or empty = all) selects `name`.
pub fn peer_selected(name: &str) -> bool {
    match std::env::var("BENCH_PEERS") {
        Ok(list) if !list.trim().is_empty() => list.split(',').any(|n| n.trim() == name),
        _ => true,
    }
}

/// Calls `v.visit::<P>()` for every selected peer, pinalloc first.
pub fn visit_peers(v: &mut impl PeerVisitor) {
    if let Ok(list) = std::env::var("BENCH_PEERS") {
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            assert!(
                PEER_NAMES.contains(&name),
                "BENCH_PEERS: unknown peer {name:?}; known: {PEER_NAMES:?}"
            );
        }
    }
    fn go<P: Peer>(v: &mut impl PeerVisitor) {
        if peer_selected(P::NAME) {
            v.visit::<P>();
        }
    }
    go::<PinallocPeer>(v);
    go::<OffsetAllocatorPeer>(v);
    go::<TlsfPeer>(v);
    go::<OrderlyPeer>(v);
    go::<RangeAllocPeer>(v);
    // The sketches are not peers a user can pick (see `sketch`): only when named.
    fn named<P: Peer>(v: &mut impl PeerVisitor) {
        let listed = std::env::var("BENCH_PEERS")
            .is_ok_and(|list| list.split(',').any(|n| n.trim() == P::NAME));
        if listed {
            v.visit::<P>();
        }
    }
    named::<SketchStartPeer>(v);
    named::<SketchNodePeer>(v);
}

// ---------------------------------------------------------------------------------
// Replay
// ---------------------------------------------------------------------------------

/// The live allocations of one replay, in the logical trace's slot order. A failed
/// allocation keeps a `None` placeholder so that slots stay aligned with the trace.
pub struct Live<H> {
    pub slots: Vec<Option<H>>,
    pub failures: u64,
}

/// The untimed fill: a fresh slot list (sized for the whole trace) holding the fill's
/// allocations.
pub fn fill<P: Peer>(peer: &mut P, trace: &Trace) -> Live<P::Handle> {
    let mut live = Live {
        slots: Vec::with_capacity(trace.max_live),
        failures: 0,
    };
    for &len in &trace.fill {
        let h = peer.alloc(u64::from(len));
        live.failures += u64::from(h.is_none());
        live.slots.push(h);
    }
    live
}

/// A filled pinalloc, with `held` small extents (1 to 4 blocks) allocated at random
/// free starts, and with `with_pins` each pinned and then freed, so that it is Deferred
/// under a live pin: the pins bench's setup. Both setups leave the same free space,
/// block for block.
pub struct HeldSetup {
    pub peer: PinallocPeer,
    pub live: Live<Extent>,
    pub pins: Vec<pinalloc::PinId>,
}

pub fn held_setup(trace: &Trace, held: usize, with_pins: bool) -> HeldSetup {
    let mut peer = PinallocPeer::new(trace.capacity);
    let live = fill(&mut peer, trace);
    let mut rng = SplitMix::new(SEED ^ 0x9196_0C4E);
    let mut pins = Vec::with_capacity(held);
    for _ in 0..held {
        let len = 1 + rng.below(4);
        // At a random free start: an exact request, so that the space stays in the
        // index's fast form as a best-fit workload's does (a near-goal request would
        // move it to the ordered form for both setups).
        let e = loop {
            let at = rng.below(trace.capacity - len);
            if let Ok(e) = peer
                .0
                .allocate(pinalloc::Request::new(len).policy(pinalloc::Policy::Exact(at)))
            {
                break e;
            }
        };
        if with_pins {
            pins.push(peer.0.pin(e).expect("pin an allocated extent"));
            let out = peer.0.free(e).expect("free a pinned extent");
            assert_eq!(out.deferred_blocks, len, "a pinned free defers every block");
        }
    }
    if with_pins {
        let s = peer.0.stats();
        assert_eq!(s.live_pins, held as u64);
        assert!(s.deferred_blocks > 0);
    }
    HeldSetup { peer, live, pins }
}

/// Replays `ops` on `peer`: the timed part.
#[inline(never)]
pub fn churn<P: Peer>(peer: &mut P, live: &mut Live<P::Handle>, ops: &[Op]) {
    for &op in ops {
        match op {
            Op::Alloc { len } => {
                let h = peer.alloc(u64::from(len));
                live.failures += u64::from(h.is_none());
                live.slots.push(h);
            }
            Op::Free { slot } => {
                if let Some(h) = live.slots.swap_remove(slot as usize) {
                    peer.free(h);
                }
            }
        }
    }
}

/// Counts the free extents left after a full replay of `trace`, from the offsets and
/// lengths of the live allocations: the maximal gaps in `0..capacity`. Panics if two
/// live allocations overlap or one leaves the space.
pub fn free_extents_after<P: Peer>(trace: &Trace, live: &Live<P::Handle>) -> u64 {
    assert_eq!(
        live.slots.len(),
        trace.final_lens.len(),
        "{}: slots out of step with the trace",
        P::NAME
    );
    let mut spans: Vec<(u64, u64)> = live
        .slots
        .iter()
        .zip(&trace.final_lens)
        .filter_map(|(h, &len)| h.as_ref().map(|h| (P::offset(h), u64::from(len))))
        .collect();
    spans.sort_unstable();
    let mut cursor = 0u64;
    let mut gaps = 0u64;
    for (start, len) in spans {
        assert!(
            start >= cursor,
            "{}: live allocation at {start} overlaps one ending at {cursor}",
            P::NAME
        );
        gaps += u64::from(start > cursor);
        cursor = start + len;
    }
    assert!(
        cursor <= trace.capacity,
        "{}: allocation ends past the space",
        P::NAME
    );
    gaps + u64::from(cursor < trace.capacity)
}

/// The outcome of one replay.
#[derive(Debug, Clone, Copy)]
pub struct ChurnRun {
    /// Time of the churn alone (the fill is excluded).
    pub elapsed: Duration,
    /// Failed allocations, fill included.
    pub failures: u64,
    /// Free extents after the churn, from [`free_extents_after`].
    pub free_extents: u64,
    /// [`Peer::metadata_bytes`] after the churn.
    pub metadata_bytes: Option<u64>,
}

/// A full replay on a fresh `P`: untimed fill, timed churn, then checks.
pub fn run_churn<P: Peer>(trace: &Trace) -> ChurnRun {
    let mut peer = P::new(trace.capacity);
    let mut live = fill(&mut peer, trace);
    let start = Instant::now();
    churn(&mut peer, &mut live, &trace.churn);
    let elapsed = start.elapsed();
    let free_extents = free_extents_after::<P>(trace, &live);
    if let Some(reported) = peer.reported_free_extents() {
        assert_eq!(
            reported,
            free_extents,
            "{}: reported free extents differ from the live allocations' gaps",
            P::NAME
        );
    }
    ChurnRun {
        elapsed,
        failures: live.failures,
        free_extents,
        metadata_bytes: peer.metadata_bytes(),
    }
}

/// One 1-block allocate + free pair.
#[inline]
pub fn pair_1block<P: Peer>(peer: &mut P) {
    let h = peer
        .alloc(black_box(1))
        .expect("a 1-block allocation on an empty space");
    peer.free(black_box(h));
}

/// Time of `pairs` 1-block allocate + free pairs on an otherwise empty `P`.
pub fn run_pairs<P: Peer>(capacity: u64, pairs: u64) -> Duration {
    let mut peer = P::new(capacity);
    pair_1block(&mut peer); // touch the allocator once before timing
    let start = Instant::now();
    for _ in 0..pairs {
        pair_1block(&mut peer);
    }
    start.elapsed()
}

/// Type-erased entry points for one peer, for loops that interleave peers.
#[derive(Clone, Copy)]
pub struct PeerEntry {
    pub name: &'static str,
    pub churn: fn(&Trace) -> ChurnRun,
    pub pairs: fn(u64, u64) -> Duration,
}

/// The selected peers, pinalloc first.
pub fn peer_entries() -> Vec<PeerEntry> {
    struct Collect(Vec<PeerEntry>);
    impl PeerVisitor for Collect {
        fn visit<P: Peer>(&mut self) {
            self.0.push(PeerEntry {
                name: P::NAME,
                churn: run_churn::<P>,
                pairs: run_pairs::<P>,
            });
        }
    }
    let mut c = Collect(Vec::new());
    visit_peers(&mut c);
    c.0
}

// ---------------------------------------------------------------------------------
// Small utilities
// ---------------------------------------------------------------------------------

/// A non-negative integer from the environment (underscores allowed), or `default`.
pub fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .replace('_', "")
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a non-negative integer")),
        _ => default,
    }
}

/// The median (mean of the middle two for an even count); NaN when empty.
pub fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

/// How the bench binary was invoked, mirroring criterion's own argument handling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunMode {
    /// `cargo bench`: measure.
    Bench,
    /// `cargo test --benches` (or `-- --test`): run everything once, small.
    Test,
    /// `--list` or `--profile-time`: criterion only.
    CriterionOnly,
}

impl RunMode {
    pub fn from_args() -> Self {
        let args: Vec<String> = std::env::args().collect();
        let has = |flag: &str| args.iter().any(|a| a == flag);
        if has("--list") || args.iter().any(|a| a.starts_with("--profile-time")) {
            RunMode::CriterionOnly
        } else if !has("--bench") || has("--test") {
            RunMode::Test
        } else {
            RunMode::Bench
        }
    }
}
