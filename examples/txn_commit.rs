//! Transaction commits and snapshot readers, as a copy-on-write storage engine (or
//! ext4's journal) uses them: a freed block becomes reusable only once the transaction
//! that freed it has committed, and only once no reader that could still see it is
//! left. Then the durable commit: the free list written to a real file, crashes at
//! every step, and a remount from the file after each.
//!
//! ```text
//! cargo run --release --example txn_commit
//! ```
//!
//! Maps as in the tour: `.` Free, a letter an Allocated block of that tree node, `~`
//! Deferred. "durable" is what a crash and remount would find free.

#[path = "support/mod.rs"]
mod support;

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use pinalloc::persist::{self, FreeList};
use pinalloc::{Extent, ExtentAllocator, Request, SharedAllocator};

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
    durable_commits()
}

// ---------------------------------------------------------------------------------
// The durable commit, against a file.
//
// The file holds two slots for the committed state, written in turn (slot = epoch % 2),
// then the data blocks. A slot is `[length: u32][root: u64][the free list, encoded by
// `persist`]`: the root comes before the list, so a slot whose list decodes is whole.
// A mount takes the valid slot with the highest generation (the epoch).
//
// The tree is a root page pointing at a leaf page. Each epoch rewrites both elsewhere
// (copy-on-write) and frees the old ones on commit. While the free list is being
// written, another thread fills every free block it can get with its own data, as a
// busy system does.

const CAPACITY: u64 = 12;
const SLOT_BYTES: u64 = 512;
const PAGE_BYTES: u64 = 64;
const EPOCHS: u64 = 3;

/// Where a run stops, as if the power went out.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Step {
    /// The transaction wrote its new pages and freed the old ones on commit.
    Written,
    /// `prepare_commit` (or, the racy way, `commit`) returned.
    Committed,
    /// Another thread allocated every free block it could and wrote to it.
    OthersWrote,
    /// Half of the slot reached the disk.
    SlotTorn,
    /// The whole slot is on disk and synced.
    SlotSynced,
    /// `finish_commit` returned (the racy way: nothing more to do).
    Finished,
}

const STEPS: [Step; 6] = [
    Step::Written,
    Step::Committed,
    Step::OthersWrote,
    Step::SlotTorn,
    Step::SlotSynced,
    Step::Finished,
];

/// The two ways to order a commit and the write of its free list.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Protocol {
    /// `commit`, then write `durable_free_extents()`: the old pages are Free before
    /// the list that frees them is on disk.
    CommitThenWrite,
    /// `prepare_commit`, write the list it returns, `finish_commit`.
    PrepareWriteFinish,
}

fn page(kind: u8, epoch: u64, child: u64) -> [u8; PAGE_BYTES as usize] {
    let mut p = [0u8; PAGE_BYTES as usize];
    p[0] = kind;
    p[1..9].copy_from_slice(&epoch.to_le_bytes());
    p[9..17].copy_from_slice(&child.to_le_bytes());
    p
}

fn write_at(file: &mut File, at: u64, bytes: &[u8]) -> std::io::Result<()> {
    file.seek(SeekFrom::Start(at))?;
    file.write_all(bytes)
}

fn write_page(file: &mut File, block: u64, bytes: &[u8]) -> std::io::Result<()> {
    write_at(file, 2 * SLOT_BYTES + block * PAGE_BYTES, bytes)
}

fn slot_bytes(root: u64, list: &FreeList) -> Result<Vec<u8>, persist::PersistError> {
    let encoded = persist::encode(list)?;
    let mut out = Vec::with_capacity(12 + encoded.len());
    out.extend_from_slice(&(encoded.len() as u32).to_le_bytes());
    out.extend_from_slice(&root.to_le_bytes());
    out.extend_from_slice(&encoded);
    Ok(out)
}

/// Runs epochs 1 to `EPOCHS` with `protocol`, crashing at `crash` of the last epoch
/// (never, with `None`).
fn run(
    path: &Path,
    protocol: Protocol,
    crash: Option<Step>,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut file = OpenOptions::new().write(true).truncate(true).open(path)?;
    file.set_len(2 * SLOT_BYTES + CAPACITY * PAGE_BYTES)?;
    let alloc = SharedAllocator::new(CAPACITY);
    let mut tree: Option<(Extent, Extent)> = None; // (root, leaf) as committed
    for epoch in 1..=EPOCHS {
        let stop = |step: Step| epoch == EPOCHS && crash == Some(step);
        // The transaction: a new leaf and a new root, the old ones freed on commit.
        let leaf = alloc.allocate(Request::new(1))?;
        let root = alloc.allocate(Request::new(1))?;
        write_page(&mut file, leaf.start, &page(b'L', epoch, 0))?;
        write_page(&mut file, root.start, &page(b'R', epoch, leaf.start))?;
        if let Some((old_root, old_leaf)) = tree {
            alloc.free_on_commit(old_root)?;
            alloc.free_on_commit(old_leaf)?;
        }
        tree = Some((root, leaf));
        if stop(Step::Written) {
            return Ok(());
        }
        let list = match protocol {
            Protocol::CommitThenWrite => {
                alloc.commit(epoch)?;
                alloc.durable_free_extents()
            }
            Protocol::PrepareWriteFinish => alloc.prepare_commit(epoch)?,
        };
        if stop(Step::Committed) {
            return Ok(());
        }
        // Another thread, meanwhile: every free block it can get, overwritten.
        let free = alloc.stats().space.free_blocks;
        let theirs = if free > 0 {
            alloc.allocate_many(free)?
        } else {
            Vec::new()
        };
        for e in &theirs {
            for b in e.start..e.start + e.len {
                write_page(&mut file, b, &page(b'X', epoch, 0))?;
            }
        }
        if stop(Step::OthersWrote) {
            return Ok(());
        }
        let slot = slot_bytes(root.start, &FreeList::new(CAPACITY, epoch, list))?;
        let at = (epoch % 2) * SLOT_BYTES;
        if stop(Step::SlotTorn) {
            write_at(&mut file, at, &slot[..slot.len() / 2])?;
            return Ok(());
        }
        write_at(&mut file, at, &slot)?;
        file.sync_data()?;
        if stop(Step::SlotSynced) {
            return Ok(());
        }
        if protocol == Protocol::PrepareWriteFinish {
            alloc.finish_commit(epoch)?;
        }
        if stop(Step::Finished) {
            return Ok(());
        }
        for e in theirs {
            alloc.free(e)?; // the other thread is done with its blocks
        }
    }
    Ok(())
}

/// Mounts from the file: the valid slot with the highest generation. Returns its
/// epoch and what is wrong with the tree it names, if anything.
fn mount(path: &Path) -> Result<(u64, Option<String>), Box<dyn std::error::Error>> {
    let mut bytes = Vec::new();
    File::open(path)?.read_to_end(&mut bytes)?;
    let mut best: Option<(FreeList, u64)> = None;
    for slot in 0..2 {
        let s = &bytes[(slot * SLOT_BYTES) as usize..((slot + 1) * SLOT_BYTES) as usize];
        let len = u32::from_le_bytes(s[..4].try_into()?) as usize;
        let root = u64::from_le_bytes(s[4..12].try_into()?);
        let Some(encoded) = s.get(12..12 + len) else {
            continue; // a torn length: no list
        };
        if let Ok(list) = persist::decode(encoded) {
            if best
                .as_ref()
                .is_none_or(|(b, _)| list.generation > b.generation)
            {
                best = Some((list, root));
            }
        }
    }
    let Some((list, root)) = best else {
        return Ok((0, None)); // nothing committed yet: an empty space
    };
    let epoch = list.generation;
    let remounted = ExtentAllocator::from_free_extents(list.capacity, list.extents)?;
    let read_page = |block: u64| {
        let at = (2 * SLOT_BYTES + block * PAGE_BYTES) as usize;
        let p = &bytes[at..at + PAGE_BYTES as usize];
        let stamp = u64::from_le_bytes(p[1..9].try_into().expect("8 bytes"));
        let child = u64::from_le_bytes(p[9..17].try_into().expect("8 bytes"));
        (p[0], stamp, child)
    };
    let (kind, stamp, leaf) = read_page(root);
    if (kind, stamp) != (b'R', epoch) {
        return Ok((
            epoch,
            Some(format!("root {root} was overwritten ({})", kind as char)),
        ));
    }
    let (kind, stamp, _) = read_page(leaf);
    if (kind, stamp) != (b'L', epoch) {
        return Ok((
            epoch,
            Some(format!("leaf {leaf} was overwritten ({})", kind as char)),
        ));
    }
    for block in [root, leaf] {
        if remounted.state_of(block) != Some(pinalloc::BlockState::Allocated) {
            return Ok((epoch, Some(format!("block {block} of the tree is free"))));
        }
    }
    Ok((epoch, None))
}

fn durable_commits() -> Result<(), Box<dyn std::error::Error>> {
    println!(
        "\nThe durable commit, against a real file: {EPOCHS} copy-on-write epochs, a crash at \
         each step of the last, and a remount from the file after each."
    );
    let file = tempfile::NamedTempFile::new()?;
    let path = file.path();
    let (step, racy, durable) = (
        "crash in epoch 3 after",
        "commit, then write",
        "prepare, write, finish",
    );
    println!("\n{step:<46} {racy:<36} {durable}");
    let mut corrupt = [0; 2];
    for step in STEPS.iter().map(|&s| Some(s)).chain([None]) {
        let mut cells = Vec::new();
        for (i, protocol) in [Protocol::CommitThenWrite, Protocol::PrepareWriteFinish]
            .into_iter()
            .enumerate()
        {
            run(path, protocol, step)?;
            let (epoch, wrong) = mount(path)?;
            cells.push(match wrong {
                None => format!("epoch {epoch}, intact"),
                Some(why) => {
                    corrupt[i] += 1;
                    format!("epoch {epoch}: {why}")
                }
            });
        }
        let label = match step {
            Some(Step::Written) => "the transaction wrote its pages",
            Some(Step::Committed) => "commit / prepare_commit returned",
            Some(Step::OthersWrote) => "another thread wrote all it could allocate",
            Some(Step::SlotTorn) => "half the free list reached the disk",
            Some(Step::SlotSynced) => "the free list is on disk",
            Some(Step::Finished) => "finish_commit",
            None => "no crash",
        };
        println!("{label:<46} {:<36} {}", cells[0], cells[1]);
    }
    println!(
        "\nCommit, then write: {} corrupt mounts. Prepare, write, finish: {}.",
        corrupt[0], corrupt[1]
    );
    assert_eq!(
        corrupt[1], 0,
        "the durable commit protocol never loses the tree"
    );
    assert!(corrupt[0] > 0, "the racy order shows its race");
    Ok(())
}
