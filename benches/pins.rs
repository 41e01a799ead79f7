//! The pin check costs nothing at allocation: DESIGN's churn workload with 10,000 live
//! pins holding 10,000 Deferred extents, against the same churn with none, and the
//! cost of one pin + unpin of an allocated extent. Also, with a counting allocator, the
//! heap bytes per free extent, per pin and per Deferred extent.
//!
//! Both setups are identical but for the holds: after the untimed fill, 10,000 small
//! extents (1 to 4 blocks) are allocated at random free starts. In the baseline they stay
//! Allocated; in the held setup each is pinned and then freed, so it is Deferred under
//! a live pin. The free space the churn sees is the same block for block.
//!
//! ```text
//! cargo bench --bench pins                      # criterion + interleaved ratio pass
//! cargo bench --bench pins -- ratio-only        # the ratio pass only
//! ```
//!
//! Environment: `CHURN_OPS` (default 2,000,000), `CHURN_ROUNDS` (default 5),
//! `PIN_PAIRS` (default 1,000,000), `HELD` (default 10,000).

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, SamplingMode, Throughput};
use pinalloc::Extent;

use common::{RunMode, Trace, Workload, churn, env_u64, held_setup, median};

/// The system allocator, counting the bytes held: metadata per pin and per Deferred
/// extent is what the heap holds more after adding them, whatever structure holds it.
struct Counting;

static HELD_BYTES: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed straight to `System`, which upholds the contract; the
// counter only observes sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        HELD_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: as for the impl.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        HELD_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: as for the impl.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        HELD_BYTES.fetch_add(new_size, Ordering::Relaxed);
        HELD_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: as for the impl.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Heap bytes per pin and per Deferred extent, on the churn's fill: `held` live
/// extents, every other one in address order so that no two touch (touching Deferred
/// ranges would share a record), are pinned (the pins' cost), then freed, so that each
/// is Deferred under its pin (the Deferred extents' cost). Sizes only; no timing.
fn metadata_per_hold(trace: &Trace, held: usize) -> (f64, f64) {
    let mut s = held_setup(trace, 0, false);
    let mut extents: Vec<Extent> = s.live.slots.iter().flatten().copied().collect();
    extents.sort_unstable_by_key(|e| e.start);
    let extents: Vec<Extent> = extents.into_iter().step_by(2).take(held).collect();
    assert_eq!(extents.len(), held, "enough live extents to hold");
    s.pins.reserve(held);
    let before = HELD_BYTES.load(Ordering::Relaxed);
    for &e in &extents {
        s.pins
            .push(s.peer.0.pin(e).expect("pin an allocated extent"));
    }
    let pinned = HELD_BYTES.load(Ordering::Relaxed);
    for &e in &extents {
        let out = s.peer.0.free(e).expect("free a pinned extent");
        assert_eq!(out.deferred_blocks, e.len);
    }
    let deferred = HELD_BYTES.load(Ordering::Relaxed);
    s.peer
        .0
        .check_invariants()
        .expect("invariants after the holds");
    let per = |a: usize, b: usize| (b as f64 - a as f64) / held as f64;
    (per(before, pinned), per(pinned, deferred))
}

/// Heap bytes per free extent: on a fresh space, `2 * n` extents of the fill's lengths
/// are allocated side by side, then every other one is freed, in a seeded random
/// order, so that each free adds one free extent that touches no other. What the heap
/// holds more afterwards, per free extent added. Sizes only; no timing.
fn metadata_per_free_extent(trace: &Trace, n: usize) -> f64 {
    let mut a = pinalloc::ExtentAllocator::new(trace.capacity);
    let mut extents: Vec<Extent> = trace
        .fill
        .iter()
        .cycle()
        .take(2 * n)
        .map(|&len| {
            a.allocate(pinalloc::Request::new(u64::from(len)))
                .expect("the fill's lengths fit twice over")
        })
        .collect();
    let mut odd: Vec<Extent> = extents.drain(..).skip(1).step_by(2).collect();
    let mut rng = common::SplitMix::new(0x51A7_E5ED);
    for i in (1..odd.len()).rev() {
        odd.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let count = |a: &pinalloc::ExtentAllocator| a.stats().free_extents;
    let (before, extents_before) = (HELD_BYTES.load(Ordering::Relaxed), count(&a));
    for &e in &odd {
        a.free(e).expect("free an allocated extent");
    }
    let (after, extents_after) = (HELD_BYTES.load(Ordering::Relaxed), count(&a));
    a.check_invariants().expect("invariants after the frees");
    (after as f64 - before as f64) / (extents_after - extents_before) as f64
}

/// Times one replay of the churn on a fresh setup; returns ns per operation.
fn time_churn(trace: &Trace, held: usize, with_pins: bool) -> f64 {
    let mut s = held_setup(trace, held, with_pins);
    let started = Instant::now();
    churn(&mut s.peer, &mut s.live, &trace.churn);
    let ns = started.elapsed().as_nanos() as f64 / trace.churn.len() as f64;
    assert_eq!(s.live.failures, 0, "allocation failures in the pins bench");
    s.peer.0.check_invariants().expect("invariants after churn");
    black_box(&s.pins);
    ns
}

/// Times `pairs` pin + unpin pairs over live allocated extents; returns ns per pair.
fn time_pin_unpin(trace: &Trace, held: usize, pairs: u64) -> f64 {
    let mut s = held_setup(trace, held, true);
    let targets: Vec<Extent> = s.live.slots.iter().flatten().copied().collect();
    let started = Instant::now();
    // Cycling without a division, which would cost a third of a pair.
    let mut at = 0;
    for _ in 0..pairs {
        let e = targets[at];
        at = if at + 1 == targets.len() { 0 } else { at + 1 };
        let id = s.peer.0.pin(black_box(e)).expect("pin");
        s.peer.0.unpin(id).expect("unpin");
    }
    started.elapsed().as_nanos() as f64 / pairs as f64
}

fn criterion_benches(c: &mut Criterion, trace: &Trace, held: usize) {
    let mut g = c.benchmark_group("pins_churn");
    g.sampling_mode(SamplingMode::Flat);
    g.throughput(Throughput::Elements(trace.churn.len() as u64));
    for (name, with_pins) in [("none", false), ("10k_pins_10k_deferred", true)] {
        g.bench_function(name, |b| {
            b.iter_batched(
                || held_setup(trace, held, with_pins),
                |mut s| {
                    churn(&mut s.peer, &mut s.live, &trace.churn);
                    s
                },
                BatchSize::PerIteration,
            );
        });
    }
    g.finish();

    let mut g = c.benchmark_group("pin_unpin");
    let mut s = held_setup(trace, held, true);
    let targets: Vec<Extent> = s.live.slots.iter().flatten().copied().collect();
    let mut i = 0usize;
    g.bench_function("allocated_extent", |b| {
        b.iter(|| {
            let e = targets[i];
            i = if i + 1 == targets.len() { 0 } else { i + 1 };
            let id = s.peer.0.pin(black_box(e)).expect("pin");
            s.peer.0.unpin(id).expect("unpin")
        });
    });
    g.finish();
}

fn ratio_pass(trace: &Trace, held: usize, rounds: usize, pairs: u64) {
    println!(
        "\nratio pass: {rounds} round(s), {} timed ops, {held} pins holding {held} Deferred extents",
        trace.churn.len()
    );
    let (mut none, mut pinned, mut pin_unpin) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let started = Instant::now();
        // Alternate which setup goes first, so drift on a shared machine cancels out.
        if round % 2 == 0 {
            none.push(time_churn(trace, held, false));
            pinned.push(time_churn(trace, held, true));
        } else {
            pinned.push(time_churn(trace, held, true));
            none.push(time_churn(trace, held, false));
        }
        pin_unpin.push(time_pin_unpin(trace, held, pairs));
        eprintln!(
            "  round {}/{rounds} ({:.1} s)",
            round + 1,
            started.elapsed().as_secs_f64()
        );
    }
    let (none, pinned, pin_unpin) = (median(&none), median(&pinned), median(&pin_unpin));
    let (per_pin, per_deferred) = metadata_per_hold(trace, held);
    let per_free = metadata_per_free_extent(trace, held);
    println!("\n| measure | median | target |");
    println!("|---|---:|---|");
    println!("| churn ns/op, no pins | {none:.1} | |");
    println!("| churn ns/op, {held} pins + {held} Deferred extents | {pinned:.1} | |");
    println!(
        "| with pins / without | {:.3} | at most 1.1 |",
        pinned / none
    );
    println!("| pin + unpin of an allocated extent, ns | {pin_unpin:.1} | at most 40 |");
    println!("| heap bytes per free extent | {per_free:.1} | at most 48 |");
    println!("| heap bytes per pin | {per_pin:.1} | at most 64 |");
    println!("| heap bytes per Deferred extent (under its pin) | {per_deferred:.1} | at most 64 |");
}

fn main() {
    let mode = RunMode::from_args();
    let small = mode == RunMode::Test;
    let ops = env_u64("CHURN_OPS", if small { 20_000 } else { 2_000_000 });
    let rounds = env_u64("CHURN_ROUNDS", if small { 1 } else { 5 });
    let pairs = env_u64("PIN_PAIRS", if small { 10_000 } else { 1_000_000 });
    let held = usize::try_from(env_u64("HELD", if small { 1_000 } else { 10_000 }))
        .expect("HELD fits in usize");
    let trace = Trace::generate(&Workload::design_doc(
        usize::try_from(ops).expect("CHURN_OPS fits in usize"),
    ));
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .configure_from_args();
    criterion_benches(&mut c, &trace, held);
    c.final_summary();
    if mode != RunMode::CriterionOnly {
        ratio_pass(
            &trace,
            held,
            usize::try_from(rounds).expect("CHURN_ROUNDS fits in usize"),
            pairs,
        );
    }
}
