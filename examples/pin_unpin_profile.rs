//! A pin + unpin loop to profile: 20,000 extents of 16 blocks, every other one pinned
//! and freed (so 10,000 pins hold 10,000 Deferred extents), then `N` pins and unpins
//! of the others, back to back. It prints the wall time per pair, but it is meant for
//! an instruction count, which a shared machine does not disturb:
//!
//! ```text
//! cargo build --release --example pin_unpin_profile
//! valgrind --tool=callgrind target/release/examples/pin_unpin_profile 0
//! valgrind --tool=callgrind target/release/examples/pin_unpin_profile 100000
//! ```
//!
//! The difference between the two totals, over 100,000, is the instructions per pair.

use std::hint::black_box;
use std::time::Instant;

use pinalloc::{ExtentAllocator, Request};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let pairs: usize = match std::env::args().nth(1) {
        Some(n) => n.parse()?,
        None => 200_000,
    };
    let mut alloc = ExtentAllocator::new(1 << 20);
    let mut live = Vec::new();
    for _ in 0..20_000 {
        live.push(alloc.allocate(Request::new(16))?);
    }
    for &e in live.iter().skip(1).step_by(2) {
        alloc.pin(e)?;
        alloc.free(e)?;
    }
    let targets: Vec<_> = live.iter().step_by(2).copied().collect();
    let started = Instant::now();
    for i in 0..pairs {
        let id = alloc.pin(black_box(targets[i % targets.len()]))?;
        alloc.unpin(id)?;
    }
    let ns = started.elapsed().as_nanos() as f64 / pairs.max(1) as f64;
    println!("{pairs} pin + unpin pairs: {ns:.1} ns per pair");
    let s = alloc.stats();
    assert_eq!((s.count_pins, s.deferred_blocks), (10_000, 160_000));
    Ok(())
}
