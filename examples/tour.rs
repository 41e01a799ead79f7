//! A tour of pinalloc on a 64-block space, with a map after each step: first the
//! placement policies, then the story that motivates the crate, a file truncated while
//! a DMA transfer still targets some of its blocks.
//!
//! ```text
//! cargo run --release --example tour
//! ```
//!
//! In the maps, `.` is a Free block, a letter is an Allocated block of that file, `~`
//! is a Deferred block (freed, still held) and `^` a Free block kept out of reach by a
//! pin. The line under a map shows pin counts.

use pinalloc::{AllocError, Extent, ExtentAllocator, Policy, Request};

#[path = "support/mod.rs"]
mod support;

use support::show;

const CAPACITY: u64 = 64;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut alloc = ExtentAllocator::new(CAPACITY);
    let mut live: Vec<(char, Extent)> = Vec::new();
    show("An empty space of 64 blocks:", &alloc, &live);

    for (name, len) in [('A', 8), ('B', 4), ('C', 12), ('D', 6), ('E', 10)] {
        live.push((name, alloc.allocate(Request::new(len))?));
    }
    show(
        "\nFive files, best fit (each at the lowest address of the tightest hole):",
        &alloc,
        &live,
    );

    for name in ['B', 'D'] {
        let i = live.iter().position(|&(n, _)| n == name).unwrap();
        let (_, e) = live.remove(i);
        let out = alloc.free(e)?;
        println!(
            "\nfree {name} {e}: {} blocks Free at once",
            out.freed_blocks
        );
    }
    show("Two holes now sit between the files:", &alloc, &live);

    let f = alloc.allocate(Request::new(3))?;
    live.push(('F', f));
    show(
        &format!("\nBest fit puts 3 blocks in the tightest hole (the 4-block one): {f}"),
        &alloc,
        &live,
    );

    let g = alloc.allocate(Request::new(2).policy(Policy::FirstFit))?;
    live.push(('G', g));
    show(
        &format!("\nFirst fit takes the lowest address: {g}"),
        &alloc,
        &live,
    );

    let h = alloc.allocate(Request::new(4).policy(Policy::Near(60)))?;
    live.push(('H', h));
    show(
        &format!("\nNear block 60, for locality: {h}"),
        &alloc,
        &live,
    );

    let i = alloc.allocate(Request::new(4).align(8).policy(Policy::FirstFit))?;
    live.push(('I', i));
    show(&format!("\nAligned to 8 blocks: {i}"), &alloc, &live);

    let j = alloc.allocate(Request::new(2).policy(Policy::Exact(48)))?;
    live.push(('J', j));
    show(
        &format!("\nExactly at block 48, as a log replay would claim it: {j}"),
        &alloc,
        &live,
    );

    // Truncate C from 12 blocks to 5: free its tail only.
    let c = live.iter().position(|&(n, _)| n == 'C').unwrap();
    let whole = live[c].1;
    let tail = Extent::new(whole.start + 5, whole.len - 5);
    alloc.free(tail)?;
    live[c].1 = Extent::new(whole.start, 5);
    show(
        &format!("\nTruncate C to 5 blocks: free its tail {tail}"),
        &alloc,
        &live,
    );

    match alloc.free(tail) {
        Err(err) => println!("\nFreeing that tail again is refused, and nothing changes:\n  {err}"),
        Ok(_) => unreachable!("a double free must fail"),
    }

    let mut res = alloc.reserve(10)?;
    println!(
        "\nReserve 10 blocks: others now see {} of {} free blocks",
        alloc.stats().free_blocks - alloc.stats().reserved_blocks,
        alloc.stats().free_blocks
    );
    let big = alloc.allocate(Request::new(20));
    println!(
        "  so 20 blocks without the reservation: {}",
        big.unwrap_err()
    );
    let k = alloc.allocate_reserved(&mut res, Request::new(6))?;
    live.push(('K', k));
    println!(
        "  with it, 6 blocks: {k}; {} left in the reservation",
        res.remaining_blocks()
    );
    println!("  unreserving it returns {} blocks", alloc.unreserve(res)?);

    let spread = alloc.allocate_many(14)?;
    println!("\nallocate_many(14) takes the fewest extents: {spread:?}");
    for (n, e) in ('L'..).zip(spread) {
        live.push((n, e));
    }
    show("", &alloc, &live);

    for (_, e) in live.drain(..) {
        alloc.free(e)?;
    }
    show(
        "\nEverything freed: the free space coalesces back into one extent.",
        &alloc,
        &live,
    );
    alloc.check_invariants()?;

    let s = alloc.stats();
    println!(
        "\nCounters: {} allocations ({} blocks), {} frees ({} blocks)",
        s.counters.allocations,
        s.counters.blocks_allocated,
        s.counters.frees,
        s.counters.blocks_freed
    );

    truncate_under_dma()
}

/// The DAX story: pinned blocks are skipped until they are unpinned.
fn truncate_under_dma() -> Result<(), Box<dyn std::error::Error>> {
    println!("\n=== Truncate under DMA ===");
    let mut alloc = ExtentAllocator::new(CAPACITY);
    let mut live: Vec<(char, Extent)> = Vec::new();

    let file = alloc.allocate(Request::new(24))?;
    live.push(('F', file));
    let other = alloc.allocate(Request::new(36))?;
    live.push(('G', other));
    show(
        "\n1. File F gets 24 blocks; file G takes most of the rest:",
        &alloc,
        &live,
    );

    let dma = alloc.pin(Extent::new(file.start + 8, 8))?;
    show(
        "\n2. A device starts DMA into F's blocks [8, 16): they are pinned.",
        &alloc,
        &live,
    );

    live.retain(|&(n, _)| n != 'F');
    let out = alloc.free(file)?;
    show(
        &format!(
            "\n3. F is truncated to nothing: {} blocks are Free at once, {} stay Deferred \
             under the pin.",
            out.freed_blocks, out.deferred_blocks
        ),
        &alloc,
        &live,
    );

    let want = 24;
    match alloc.allocate(Request::new(want)) {
        Err(err @ AllocError::NoSpace { deferred, .. }) => {
            println!("\n4. Under pressure, {want} blocks cannot be had without the pinned ones:");
            println!("   {err}");
            println!(
                "   ({} blocks are only held, not lost: they come back when the DMA ends.)",
                deferred.total()
            );
        }
        other => unreachable!("expected NoSpace, got {other:?}"),
    }
    let h = alloc.allocate(Request::range(1..=want))?;
    live.push(('H', h));
    show(
        &format!("   A range request takes what it can, skipping the pinned blocks: {h}"),
        &alloc,
        &live,
    );

    let released = alloc.unpin(dma)?;
    show(
        &format!(
            "\n5. The DMA completes: unpin releases its {} Deferred blocks.",
            released.released_blocks
        ),
        &alloc,
        &live,
    );

    let i = alloc.allocate(Request::new(8))?;
    live.push(('I', i));
    show(&format!("\n6. The blocks are reused: {i}"), &alloc, &live);
    alloc.check_invariants()?;
    Ok(())
}
