//! Churn benchmark: pinalloc against other extent/offset allocators on the design
//! doc's workload.
//!
//! - space of 2^20 blocks; extent lengths geometric with p = 1/32, truncated (by
//!   rejection) to 1..=256;
//! - untimed fill to 70% occupancy;
//! - `CHURN_OPS` (default 2,000,000) timed operations: below 70% occupancy allocate
//!   with probability 0.75, else free a uniformly random live extent; at or above 70%,
//!   allocate with probability 0.25.
//!
//! The trace is generated once from a fixed seed and replayed identically on every
//! peer (see `common`). Output:
//!
//! 1. criterion groups `churn/<peer>` (one replay of the timed operations per
//!    iteration; the fill is setup) and `pair_1block/<peer>` (one 1-block allocate +
//!    free on an empty space);
//! 2. an interleaved ratio pass, printed as markdown tables: `CHURN_ROUNDS` rounds
//!    (default 5), each replaying the trace once on every peer, peer order rotating
//!    between rounds, then `CHURN_PAIRS` (default 1,000,000) 1-block pairs per peer.
//!
//! 3. pinalloc alone under each placement policy on the same trace (first fit, near a
//!    goal, exact start, aligned to 8 and to 512, `min..=max`, `allocate_many`), with
//!    its metadata per free extent after the churn. `CHURN_POLICIES=0` skips this
//!    part; `CHURN_POLICY=text` keeps only the policies whose name contains `text`.
//!
//! Environment: `CHURN_OPS`, `CHURN_ROUNDS`, `CHURN_PAIRS`, `CHURN_POLICIES`,
//! `CHURN_POLICY`, and `BENCH_PEERS` (a comma-separated subset of peers). Under `cargo test --benches` everything runs once
//! on a small trace unless those variables say otherwise.
//!
//! ```text
//! cargo bench --bench churn                       # everything (a few minutes)
//! cargo bench --bench churn -- pair_1block        # criterion pair group + ratio pass
//! cargo bench --bench churn -- ratio-only         # no criterion id matches: ratio pass only
//! CHURN_OPS=200000 CHURN_ROUNDS=2 cargo bench --bench churn -- --warm-up-time 1 --measurement-time 2
//! ```

mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, SamplingMode, Throughput};

use pinalloc::{Extent, ExtentAllocator, Policy, Request};

use common::{
    ChurnRun, Op, Peer, PeerVisitor, RunMode, Trace, Workload, churn, env_u64, fill, median,
    pair_1block, peer_entries, visit_peers,
};

struct ChurnGroup<'a, 'c> {
    group: criterion::BenchmarkGroup<'c, criterion::measurement::WallTime>,
    trace: &'a Trace,
}

impl PeerVisitor for ChurnGroup<'_, '_> {
    fn visit<P: Peer>(&mut self) {
        let trace = self.trace;
        self.group.bench_function(P::NAME, |b| {
            b.iter_batched(
                || {
                    let mut peer = P::new(trace.capacity);
                    let live = fill(&mut peer, trace);
                    (peer, live)
                },
                |(mut peer, mut live)| {
                    churn(&mut peer, &mut live, &trace.churn);
                    (peer, live) // dropped outside the timing
                },
                BatchSize::PerIteration,
            );
        });
    }
}

struct PairGroup<'c> {
    group: criterion::BenchmarkGroup<'c, criterion::measurement::WallTime>,
    capacity: u64,
}

impl PeerVisitor for PairGroup<'_> {
    fn visit<P: Peer>(&mut self) {
        let mut peer = P::new(self.capacity);
        self.group
            .bench_function(P::NAME, |b| b.iter(|| pair_1block(&mut peer)));
    }
}

fn criterion_benches(c: &mut Criterion, trace: &Trace) {
    {
        let mut group = c.benchmark_group("churn");
        group.sampling_mode(SamplingMode::Flat);
        group.throughput(Throughput::Elements(trace.churn.len() as u64));
        let mut v = ChurnGroup { group, trace };
        visit_peers(&mut v);
        v.group.finish();
    }
    {
        let mut group = c.benchmark_group("pair_1block");
        group.throughput(Throughput::Elements(1));
        let mut v = PairGroup {
            group,
            capacity: trace.capacity,
        };
        visit_peers(&mut v);
        v.group.finish();
    }
}

fn ratio(pinalloc: Option<f64>, peer: f64) -> String {
    match pinalloc {
        Some(p) => format!("{:.2}", p / peer),
        None => "n/a".to_string(),
    }
}

fn ratio_pass(trace: &Trace, rounds: usize, pairs: u64) {
    let peers = peer_entries();
    let n = peers.len();
    if n == 0 || rounds == 0 {
        return;
    }
    let ops = trace.churn.len().max(1) as f64;
    let mut churn_ns: Vec<Vec<f64>> = vec![Vec::new(); n];
    let mut pair_ns: Vec<Vec<f64>> = vec![Vec::new(); n];
    let mut runs: Vec<Option<ChurnRun>> = vec![None; n];
    let mut failures = vec![0u64; n];

    eprintln!(
        "ratio pass: {rounds} round(s) x {n} peer(s), {} timed ops, {pairs} pairs",
        trace.churn.len()
    );
    for round in 0..rounds {
        let started = Instant::now();
        for k in 0..n {
            let i = (k + round) % n;
            let run = (peers[i].churn)(black_box(trace));
            churn_ns[i].push(run.elapsed.as_nanos() as f64 / ops);
            failures[i] = failures[i].max(run.failures);
            if let Some(prev) = runs[i] {
                if prev.free_extents != run.free_extents {
                    eprintln!(
                        "warning: {} left {} free extents this round, {} before",
                        peers[i].name, run.free_extents, prev.free_extents
                    );
                }
            }
            runs[i] = Some(run);
        }
        if pairs > 0 {
            for k in 0..n {
                let i = (k + round) % n;
                let d = (peers[i].pairs)(trace.capacity, pairs);
                pair_ns[i].push(d.as_nanos() as f64 / pairs as f64);
            }
        }
        eprintln!(
            "  round {}/{rounds} ({:.1} s)",
            round + 1,
            started.elapsed().as_secs_f64()
        );
    }

    let pin = peers
        .iter()
        .position(|p| p.name == common::PinallocPeer::NAME);
    let churn_med: Vec<f64> = churn_ns.iter().map(|v| median(v)).collect();
    let pair_med: Vec<f64> = pair_ns.iter().map(|v| median(v)).collect();

    println!();
    println!(
        "Churn: 2^{} blocks, fill to 70% ({} extents, {} blocks), {} timed ops ({} allocs, {} frees); \
         {} live extents ({} blocks) at the end. Median of {rounds} interleaved round(s).",
        trace.capacity.trailing_zeros(),
        trace.fill.len(),
        trace.fill_blocks,
        trace.churn.len(),
        trace.churn_allocs,
        trace.churn_frees,
        trace.final_lens.len(),
        trace.final_live_blocks,
    );
    println!();
    println!(
        "| peer | churn ns/op | free extents after churn | metadata bytes per free extent | alloc failures | pinalloc / peer |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for (i, p) in peers.iter().enumerate() {
        let free = runs[i].map_or(0, |r| r.free_extents);
        let per_extent = runs[i]
            .and_then(|r| r.metadata_bytes)
            .map_or("n/a".to_string(), |b| {
                format!("{:.1}", b as f64 / free.max(1) as f64)
            });
        println!(
            "| {} | {:.1} | {} | {} | {} | {} |",
            p.name,
            churn_med[i],
            free,
            per_extent,
            failures[i],
            ratio(pin.map(|j| churn_med[j]), churn_med[i]),
        );
    }
    if pairs > 0 {
        println!();
        println!(
            "1-block allocate + free pair on an empty space: {pairs} pairs per round, \
             median of {rounds} interleaved round(s)."
        );
        println!();
        println!("| peer | ns/pair | pinalloc / peer |");
        println!("|---|---:|---:|");
        for (i, p) in peers.iter().enumerate() {
            println!(
                "| {} | {:.1} | {} |",
                p.name,
                pair_med[i],
                ratio(pin.map(|j| pair_med[j]), pair_med[i]),
            );
        }
    }
    println!();
    println!("pinalloc / peer < 1 means pinalloc is faster.");
    let total_failures: u64 = failures.iter().sum();
    if total_failures > 0 {
        println!("WARNING: {total_failures} allocation failure(s); expected none.");
    }
}

fn main() {
    let mode = RunMode::from_args();
    let small = mode == RunMode::Test;
    let ops = env_u64("CHURN_OPS", if small { 20_000 } else { 2_000_000 });
    let rounds = env_u64("CHURN_ROUNDS", if small { 1 } else { 5 });
    let pairs = env_u64("CHURN_PAIRS", if small { 10_000 } else { 1_000_000 });

    let started = Instant::now();
    let trace = Trace::generate(&Workload::design_doc(
        usize::try_from(ops).expect("CHURN_OPS fits in usize"),
    ));
    eprintln!(
        "trace: {} fill allocations, {} timed ops, generated in {:.2} s",
        trace.fill.len(),
        trace.churn.len(),
        started.elapsed().as_secs_f64()
    );

    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .configure_from_args();
    criterion_benches(&mut c, &trace);
    c.final_summary();

    if mode != RunMode::CriterionOnly {
        let rounds = usize::try_from(rounds).expect("CHURN_ROUNDS fits in usize");
        ratio_pass(&trace, rounds, pairs);
        if env_u64("CHURN_POLICIES", 1) > 0 {
            policy_pass(&trace, rounds);
        }
    }
}

/// How the policy pass asks for blocks.
#[derive(Clone, Copy)]
enum Asking {
    BestFit,
    FirstFit,
    /// Near a goal that sweeps the space, as a file's next block would.
    Near,
    /// Exactly where the last free was (best fit when that cannot be placed).
    Exact,
    /// `Aligned(place, align, every)`: every `every`th allocation aligned to `align`
    /// blocks, placed as `place` says (best fit, first fit, near the sweeping goal),
    /// the others the same way unaligned.
    Aligned(Place, u64, u64),
    /// Anything from half the length to all of it.
    Range,
    /// `allocate_many`: the length in as many pieces as it takes.
    Many,
}

/// Where [`Asking::Aligned`] places.
#[derive(Clone, Copy)]
enum Place {
    Best,
    First,
    Near,
}

impl Asking {
    /// Every policy measured. 512 blocks is 2 MiB on 4 KiB blocks; this space has only
    /// 2,048 such starts, so one request in 16 asks for it (and most of those fail on
    /// the fragmented space, which is the search's worst case).
    const ALL: [(Asking, &'static str); 12] = [
        (Asking::BestFit, "best fit (default)"),
        (Asking::FirstFit, "first fit"),
        (Asking::Near, "near a goal"),
        (Asking::Exact, "exact start (last freed)"),
        (Asking::Aligned(Place::Best, 8, 1), "best fit, aligned to 8"),
        (
            Asking::Aligned(Place::First, 8, 1),
            "first fit, aligned to 8",
        ),
        (
            Asking::Aligned(Place::Near, 8, 1),
            "near a goal, aligned to 8",
        ),
        (
            Asking::Aligned(Place::Best, 512, 16),
            "best fit, 1 in 16 aligned to 512",
        ),
        (
            Asking::Aligned(Place::First, 512, 16),
            "first fit, 1 in 16 aligned to 512",
        ),
        (
            Asking::Aligned(Place::Near, 512, 16),
            "near a goal, 1 in 16 aligned to 512",
        ),
        (Asking::Range, "min..=max (len/2..=len)"),
        (Asking::Many, "allocate_many"),
    ];

    /// Allocates `len` blocks; `op` numbers the allocation and `last_freed` is the
    /// start of the extent most recently freed.
    fn allocate(
        self,
        a: &mut ExtentAllocator,
        len: u64,
        op: u64,
        last_freed: u64,
        capacity: u64,
    ) -> Got {
        let request = match self {
            Asking::BestFit => Request::new(len),
            Asking::FirstFit => Request::new(len).policy(Policy::FirstFit),
            Asking::Near => Request::new(len).policy(Policy::Near(sweep(op, capacity))),
            Asking::Exact => Request::new(len).policy(Policy::Exact(last_freed)),
            Asking::Aligned(place, align, every) => {
                let request = Request::new(len).align(if op % every == 0 { align } else { 1 });
                match place {
                    Place::Best => request,
                    Place::First => request.policy(Policy::FirstFit),
                    Place::Near => request.policy(Policy::Near(sweep(op, capacity))),
                }
            }
            Asking::Range => Request::range(len.div_ceil(2)..=len),
            Asking::Many => return a.allocate_many(len).map_or(Got::Nothing, Got::Many),
        };
        match a.allocate(request) {
            Ok(e) => Got::One(e),
            Err(_) if matches!(self, Asking::Exact) => {
                a.allocate(Request::new(len)).map_or(Got::Nothing, Got::One)
            }
            Err(_) => Got::Nothing,
        }
    }
}

/// The goal of the `op`th near-goal allocation: a sweep across the space.
fn sweep(op: u64, capacity: u64) -> u64 {
    op.wrapping_mul(4099) % capacity
}

/// What one allocation of the policy pass got (only `allocate_many` needs a `Vec`).
enum Got {
    Nothing,
    One(Extent),
    Many(Vec<Extent>),
}

impl Got {
    fn is_empty(&self) -> bool {
        matches!(self, Got::Nothing)
    }

    /// Frees it all, noting where the last piece started.
    fn free(self, a: &mut ExtentAllocator, last_freed: &mut u64) {
        let mut free = |e: Extent| {
            *last_freed = e.start;
            a.free(e).expect("free of a live allocation");
        };
        match self {
            Got::Nothing => {}
            Got::One(e) => free(e),
            Got::Many(pieces) => pieces.into_iter().for_each(free),
        }
    }
}

/// pinalloc alone, once per policy and round, on the same trace: ns per timed op, the
/// free extents left, and the metadata per free extent.
fn policy_pass(trace: &Trace, rounds: usize) {
    let ops = trace.churn.len().max(1) as f64;
    println!();
    println!(
        "pinalloc by placement policy: the same trace, median of {rounds} round(s); failed \
         allocations are skipped (the exact policy falls back to best fit)."
    );
    println!();
    println!(
        "| policy | churn ns/op | free extents after | failures | metadata bytes per free extent |"
    );
    println!("|---|---:|---:|---:|---:|");
    // `CHURN_POLICY=text`: only the policies whose name contains it.
    let only = std::env::var("CHURN_POLICY").unwrap_or_default();
    for (asking, name) in Asking::ALL.into_iter().filter(|(_, n)| n.contains(&only)) {
        let mut ns = Vec::new();
        let mut last = (0, 0, 0.0);
        for _ in 0..rounds.max(1) {
            let mut a = ExtentAllocator::new(trace.capacity);
            let mut live: Vec<Got> = Vec::with_capacity(trace.max_live);
            let mut failures = 0u64;
            let mut last_freed = 0;
            let mut op = 0u64;
            for &len in &trace.fill {
                let got = asking.allocate(&mut a, u64::from(len), op, last_freed, trace.capacity);
                failures += u64::from(got.is_empty());
                live.push(got);
                op += 1;
            }
            let started = Instant::now();
            for &o in &trace.churn {
                match o {
                    Op::Alloc { len } => {
                        let got =
                            asking.allocate(&mut a, u64::from(len), op, last_freed, trace.capacity);
                        failures += u64::from(got.is_empty());
                        live.push(got);
                        op += 1;
                    }
                    Op::Free { slot } => live
                        .swap_remove(slot as usize)
                        .free(&mut a, &mut last_freed),
                }
            }
            ns.push(started.elapsed().as_nanos() as f64 / ops);
            let s = a.stats();
            let per_extent = s.metadata_bytes as f64 / s.free_extents.max(1) as f64;
            last = (s.free_extents, failures, per_extent);
            black_box(live.len());
        }
        println!(
            "| {name} | {:.1} | {} | {} | {:.1} |",
            median(&ns),
            last.0,
            last.1,
            last.2
        );
    }
}
