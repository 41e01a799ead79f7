//! Transaction commits and snapshot readers, as a copy-on-write storage engine (or
//! ext4's journal) uses them: a freed block becomes reusable only once the transaction
//! that freed it has committed, and only once no reader that could still see it is
//! left.
//!
//! ```text
//! cargo run --release --example txn_commit
//! ```
//!
//! Maps as in the tour: `.` Free, a letter an Allocated block of that tree node, `~`
//! Deferred. "durable" is what a crash and remount would find free.

#[path = "support/mod.rs"]
mod support;

use pinalloc::{Extent, ExtentAllocator, Request};

fn show(step: &str, alloc: &ExtentAllocator, live: &[(char, Extent)]) {
    support::show(step, alloc, live);
    let s = alloc.stats();
    println!(
        "  open epoch {}, readers {}, deferred by epochs {}; durable free: {:?}",
        s.open_epoch,
        s.live_readers,
        s.deferred_by.epochs,
        alloc.durable_free_extents()
    );
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut alloc = ExtentAllocator::new(32);
    let mut live: Vec<(char, Extent)> = Vec::new();

    // Epoch 1: build a small tree, then commit it.
    let root = alloc.allocate(Request::new(8))?;
    let leaf = alloc.allocate(Request::new(8))?;
    live.extend([('R', root), ('L', leaf)]);
    alloc.commit(1)?;
    show(
        "Epoch 1 built a root R and a leaf L, and committed:",
        &alloc,
        &live,
    );

    // A backup starts reading the committed tree, and keeps reading for a while.
    let backup = alloc.begin_read();
    println!("\nA backup begins reading in epoch {}.", backup.epoch());

    // Epoch 2: copy-on-write update of the leaf. The new copy goes elsewhere; the old
    // leaf is freed as part of the transaction.
    let new_leaf = alloc.allocate(Request::new(8))?;
    live.push(('M', new_leaf));
    live.retain(|&(n, _)| n != 'L');
    let out = alloc.free_on_commit(leaf)?;
    show(
        &format!(
            "\nEpoch 2 writes the leaf anew as M and frees L on commit: {} blocks Deferred.\n\
             L is still what the committed tree points to, so it must not be reused yet.",
            out.deferred_blocks
        ),
        &alloc,
        &live,
    );

    // A scratch buffer allocated and freed within the same transaction was never
    // durable: it is Free at once.
    let scratch = alloc.allocate(Request::new(4))?;
    let out = alloc.free_on_commit(scratch)?;
    println!(
        "\nA scratch extent {scratch} allocated and freed inside epoch 2 was never durable: \
         {} blocks Free at once.",
        out.freed_blocks
    );

    let err = alloc.allocate(Request::new(10)).unwrap_err();
    println!("\nAsking for 10 blocks now: {err}");

    let committed = alloc.commit(2)?;
    show(
        &format!(
            "\nEpoch 2 commits: L no longer waits for the commit, but the backup (begun in \
             epoch 2) may still read it. Released: {} blocks.",
            committed.released_blocks
        ),
        &alloc,
        &live,
    );

    // A reader that begins after the commit cannot see L, so it does not hold it.
    let late = alloc.begin_read();
    let ended = alloc.end_read(backup)?;
    show(
        &format!(
            "\nThe backup finishes; a newer reader (epoch {}) does not hold L. Released: {} \
             blocks.",
            late.epoch(),
            ended.released_blocks
        ),
        &alloc,
        &live,
    );
    alloc.end_read(late)?;

    let reuse = alloc.allocate(Request::new(8))?;
    live.push(('N', reuse));
    show(
        &format!("\nEpoch 3 can now use L's blocks: {reuse}"),
        &alloc,
        &live,
    );

    alloc.check_invariants()?;
    Ok(())
}
