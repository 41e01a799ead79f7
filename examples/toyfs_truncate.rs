//! A small "filesystem" property-testing its own truncate path with pinalloc's
//! testing kit (feature `testing`).
//!
//! ToyFs keeps files as lists of extents. Appends allocate near the file's end,
//! reads pin the blocks they cover while their I/O is in flight, and truncate frees
//! a file's tail: with `free_on_commit` (the old tail stays reachable from the last
//! committed metadata until the next commit), or with a plain `free`. In tests its
//! allocator is a `testing::Checked`, so every allocator call is checked against the
//! reference model. On top of that the test checks ToyFs's own promises after every
//! step:
//!
//! - no block belongs to two files;
//! - every block of a file is Allocated;
//! - a block an in-flight read covers is never given to another file, even after a
//!   truncate freed it;
//! - once every read is done and the epoch committed, the free blocks are exactly
//!   the capacity less the files' blocks.
//!
//! Run it with `cargo run --release --features testing --example toyfs_truncate`
//! (`-- 2000` for more cases). A failure prints the shrunk operation sequence.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use pinalloc::testing::Checked;
use pinalloc::{BlockState, Extent, PinId, Policy, Request};

const CAPACITY: u64 = 512;
const FILES: usize = 4;

/// What a user of ToyFs does.
#[derive(Debug, Clone)]
enum FsOp {
    Append {
        file: usize,
        blocks: u64,
    },
    Truncate {
        file: usize,
        keep: u64,
        on_commit: bool,
    },
    StartRead {
        file: usize,
    },
    FinishRead {
        which: usize,
    },
    Commit,
}

fn fs_op() -> impl Strategy<Value = FsOp> {
    prop_oneof![
        4 => (0..FILES, 1u64..40).prop_map(|(file, blocks)| FsOp::Append { file, blocks }),
        3 => (0..FILES, 0u64..80, any::<bool>())
            .prop_map(|(file, keep, on_commit)| FsOp::Truncate { file, keep, on_commit }),
        2 => (0..FILES).prop_map(|file| FsOp::StartRead { file }),
        2 => (0usize..8).prop_map(|which| FsOp::FinishRead { which }),
        1 => Just(FsOp::Commit),
    ]
}

/// The filesystem under test.
struct ToyFs {
    alloc: Checked,
    files: Vec<Vec<Extent>>,
    /// In-flight reads: the pin and what it covers.
    reads: Vec<(PinId, Extent)>,
}

impl ToyFs {
    fn new() -> Self {
        ToyFs {
            alloc: Checked::new(CAPACITY),
            files: vec![Vec::new(); FILES],
            reads: Vec::new(),
        }
    }

    fn len(&self, file: usize) -> u64 {
        self.files[file].iter().map(|e| e.len).sum()
    }

    /// Appends up to `blocks` blocks near the file's end, in as few extents as the
    /// free space allows; stops early when the disk is full. Returns what it got.
    fn append(&mut self, file: usize, mut blocks: u64) -> Vec<Extent> {
        let mut got = Vec::new();
        while blocks > 0 {
            let goal = self.files[file].last().map_or(0, |e| e.start + e.len);
            let goal = goal.min(CAPACITY - 1);
            let request = Request::range(1..=blocks).policy(Policy::Near(goal));
            let Ok(e) = self.alloc.allocate(request) else {
                break; // disk full
            };
            got.push(e);
            blocks -= e.len;
            match self.files[file].last_mut() {
                Some(last) if last.start + last.len == e.start => last.len += e.len,
                _ => self.files[file].push(e),
            }
        }
        got
    }

    /// Cuts the file to `keep` blocks, freeing its tail.
    fn truncate(&mut self, file: usize, keep: u64, on_commit: bool) {
        let mut kept = Vec::new();
        let mut left = keep;
        for e in std::mem::take(&mut self.files[file]) {
            let stay = e.len.min(left);
            left -= stay;
            if stay > 0 {
                kept.push(Extent::new(e.start, stay));
            }
            if stay < e.len {
                let tail = Extent::new(e.start + stay, e.len - stay);
                let freed = if on_commit {
                    self.alloc.free_on_commit(tail)
                } else {
                    self.alloc.free(tail)
                };
                freed.expect("a file's own blocks are Allocated");
            }
        }
        self.files[file] = kept;
    }

    /// Starts a read of the file's first extent: its blocks are pinned until the
    /// read finishes.
    fn start_read(&mut self, file: usize) {
        if let Some(&e) = self.files[file].first() {
            let id = self.alloc.pin(e).expect("a pin of a file's blocks");
            self.reads.push((id, e));
        }
    }

    fn finish_read(&mut self, which: usize) {
        if !self.reads.is_empty() {
            let (id, _) = self.reads.swap_remove(which % self.reads.len());
            self.alloc.unpin(id).expect("a live pin");
        }
    }

    fn commit(&mut self) {
        let open = self.alloc.allocator().epoch();
        self.alloc.commit(open).expect("the open epoch");
    }

    fn apply(&mut self, op: &FsOp) {
        match *op {
            FsOp::Append { file, blocks } => {
                // New blocks must not be under an in-flight read, even one of blocks
                // a truncate has freed since.
                for e in self.append(file, blocks) {
                    for (_, r) in &self.reads {
                        assert!(
                            !e.overlaps(r),
                            "{e} was handed out under the in-flight read of {r}"
                        );
                    }
                }
            }
            FsOp::Truncate {
                file,
                keep,
                on_commit,
            } => {
                let keep = keep.min(self.len(file));
                self.truncate(file, keep, on_commit);
                assert_eq!(self.len(file), keep);
            }
            FsOp::StartRead { file } => self.start_read(file),
            FsOp::FinishRead { which } => self.finish_read(which),
            FsOp::Commit => self.commit(),
        }
    }

    /// ToyFs's own promises.
    fn check(&self) {
        let mut owned: Vec<Extent> = self.files.iter().flatten().copied().collect();
        owned.sort_by_key(|e| e.start);
        for pair in owned.windows(2) {
            assert!(
                !pair[0].overlaps(&pair[1]),
                "{} and {} are in two files",
                pair[0],
                pair[1]
            );
        }
        let a = self.alloc.allocator();
        for e in &owned {
            for b in e.start..e.start + e.len {
                assert_eq!(
                    a.state_of(b),
                    Some(BlockState::Allocated),
                    "block {b} of a file"
                );
            }
        }
        // A block under an in-flight read is Allocated to a file, or Deferred: never
        // Free, so never handed out again.
        for (_, r) in &self.reads {
            for b in r.start..r.start + r.len {
                assert_ne!(
                    a.state_of(b),
                    Some(BlockState::Free),
                    "block {b} under a read is Free"
                );
            }
        }
    }

    /// Finishes every read and commits: only the files' blocks stay Allocated.
    fn settle(mut self) {
        while !self.reads.is_empty() {
            self.finish_read(0);
        }
        self.commit();
        let used: u64 = (0..FILES).map(|f| self.len(f)).sum();
        let s = self.alloc.allocator().stats();
        assert_eq!(s.free_blocks, CAPACITY - used, "blocks leaked");
        assert_eq!(s.deferred_blocks, 0);
    }
}

fn main() {
    let cases = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(300);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&proptest::collection::vec(fs_op(), 1..120), |ops| {
        let mut fs = ToyFs::new();
        for op in &ops {
            fs.apply(op);
            fs.check();
        }
        fs.settle();
        Ok(())
    });
    match result {
        Ok(()) => println!(
            "ToyFs truncate: {cases} random sequences of appends, truncates, reads and commits; \
             every allocator call matched the model and every ToyFs promise held"
        ),
        Err(e) => {
            eprintln!("ToyFs truncate failed: {e}");
            std::process::exit(1);
        }
    }
}
