//! Backings and `Region` on real memory and real files (in temporary directories).
//!
//! - every backing round-trips data, directly and through a region;
//! - pinned buffers keep their exact bytes while their extents are freed and the rest
//!   of the region is allocated, written and freed under full pressure;
//! - discards go exactly to the blocks that become Free, never to pinned or deferred
//!   ones, and released file space reads as zeros;
//! - injected I/O faults all reach a caller (or the drop-failure counter), and the
//!   allocator stays consistent with nothing lost;
//! - a file-backed region reopened from its durable free list has the same free space
//!   and its detached data.
//!
//! The random walks are seeded; `REGION_SEEDS` runs more seeds (default 4) and
//! `REGION_STEPS` more steps per seed (default 600).
#![cfg(unix)]

use std::collections::BTreeMap;
use std::io;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use pinalloc::SharedAllocError;
use pinalloc::testing::SplitMix;
use pinalloc::{
    AllocError, Allocation, Backing, BackingError, BackingOp, BlockState, Extent, ExtentError,
    FileBacking, HeapBacking, MemoryBacking, MmapBacking, Pinned, PinnedMut, Policy, Region,
    RegionError, RegionReadGuard, Request,
};

const BLOCK: u64 = 512;

// ---------------------------------------------------------------------------------------
// Helpers: temporary directories, a seeded generator, fill patterns.

/// A fresh directory under the system temp dir, removed when dropped.
fn temp_dir(tag: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("pinalloc-test-{tag}-"))
        .tempdir()
        .expect("create a temp dir")
}

/// True `percent` times in a hundred.
fn chance(rng: &mut SplitMix, percent: u64) -> bool {
    rng.below(100) < percent
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The bytes an allocation with this id is filled with. Never zero, so a stray
/// discard (which leaves zeros) always shows.
fn pattern(id: u64, len: u64) -> Vec<u8> {
    (0..len)
        .map(|i| ((id.wrapping_mul(131) + i * 7 + i / 251) % 255 + 1) as u8)
        .collect()
}

fn fill<B: Backing>(a: &mut Allocation<B>, id: u64) {
    a.write_at(0, &pattern(id, a.len_bytes())).expect("fill");
}

fn contents<B: Backing>(a: &Allocation<B>) -> Vec<u8> {
    let mut out = vec![0; a.len_bytes() as usize];
    a.read_at(0, &mut out).expect("read back");
    out
}

#[allow(clippy::type_complexity)]
fn backings(
    dir: &tempfile::TempDir,
    len_bytes: u64,
) -> (
    HeapBacking,
    MmapBacking,
    MmapBacking,
    FileBacking,
    MmapBacking,
    FileBacking,
) {
    (
        HeapBacking::new(len_bytes).unwrap(),
        MmapBacking::anonymous(len_bytes).unwrap(),
        // SAFETY: the file is this test's own; nothing else opens it while mapped.
        unsafe { MmapBacking::open(dir.path().join("mapped"), len_bytes).unwrap() },
        FileBacking::open(dir.path().join("plain"), len_bytes).unwrap(),
        // Growable to twice the length: a region over it holds the rest until it grows.
        MmapBacking::anonymous_growable(len_bytes, 2 * len_bytes).unwrap(),
        FileBacking::open(dir.path().join("growable"), len_bytes)
            .unwrap()
            .with_max_len(2 * len_bytes)
            .unwrap(),
    )
}

/// Runs `$f` (a generic fn taking a region) once per kind of backing.
macro_rules! for_each_backing {
    ($len_bytes:expr, $f:ident $(, $arg:expr)*) => {{
        let dir = temp_dir(stringify!($f));
        let (heap, anon, mapped, plain, growable_anon, growable_file) = backings(&dir, $len_bytes);
        $f("heap", heap $(, $arg)*);
        $f("anonymous mmap", anon $(, $arg)*);
        $f("file mmap", mapped $(, $arg)*);
        $f("file", plain $(, $arg)*);
        $f("growable anonymous mmap", growable_anon $(, $arg)*);
        $f("growable file", growable_file $(, $arg)*);
    }};
}

// ---------------------------------------------------------------------------------------
// Round trips.

fn round_trip<B: Backing>(kind: &str, backing: B) {
    let len = backing.len_bytes();
    // Directly: the backing's own positional I/O, at both ends.
    let mut out = [0u8; 6];
    // SAFETY: this test is the backing's only user.
    unsafe {
        backing.write_at(0, b"front!").unwrap();
        backing.write_at(len - 6, b"back!!").unwrap();
        backing.read_at(0, &mut out).unwrap();
        assert_eq!(&out, b"front!", "{kind}");
        backing.read_at(len - 6, &mut out).unwrap();
        assert_eq!(&out, b"back!!", "{kind}");
        let err = backing.read_at(len - 5, &mut out).unwrap_err();
        assert_eq!(
            (err.op, err.range.clone()),
            (BackingOp::Read, len - 5..len + 1),
            "{kind}"
        );
        let err = backing.write_at(u64::MAX, b"x").unwrap_err();
        assert_eq!(err.op, BackingOp::Write, "{kind}");
    }
    backing.sync().unwrap();

    // Through a region: every allocation reads back what was written.
    let region = Region::new(backing, BLOCK).unwrap();
    let mut live = Vec::new();
    for id in 0..6 {
        let mut a = region.allocate(Request::new(1 + id % 4)).unwrap();
        fill(&mut a, id);
        live.push((id, a));
    }
    for (id, a) in &live {
        assert_eq!(
            contents(a),
            pattern(*id, a.len_bytes()),
            "{kind}: allocation {id}"
        );
        let pin = a.pin().unwrap();
        let mut via_pin = vec![0; pin.len_bytes() as usize];
        pin.read_at(0, &mut via_pin).unwrap();
        assert_eq!(via_pin, pattern(*id, a.len_bytes()), "{kind}: pin of {id}");
        assert_eq!(pin.extent(), a.extent());
        assert_eq!(pin.offset_bytes(), a.offset_bytes());
    }
    let (_, a) = &mut live[0];
    let e = a.extent();
    let err = a.write_at(a.len_bytes() - 1, &[1, 2]).unwrap_err();
    assert!(
        matches!(err, RegionError::AccessOutOfBounds { extent, len_bytes: 2, .. } if extent == e),
        "{kind}: {err}"
    );
    region.sync().unwrap();
    drop(live);
    assert_eq!(
        region.stats().space.free_blocks,
        region.capacity_blocks(),
        "{kind}"
    );
    region.check_invariants().unwrap();
}

#[test]
fn every_backing_round_trips_data() {
    for_each_backing!(64 * BLOCK, round_trip);
}

fn slices_and_pointers<B: MemoryBacking>(kind: &str, backing: B) {
    let region = Region::new(backing, BLOCK).unwrap();
    let mut a = region.allocate(Request::new(2)).unwrap();
    a.as_mut_slice()
        .unwrap()
        .copy_from_slice(&pattern(1, 2 * BLOCK));
    assert_eq!(contents(&a), pattern(1, 2 * BLOCK), "{kind}");
    let mut dma = a.pin_mut().unwrap();
    let base = region.backing().base_address().unwrap().as_ptr() as usize;
    assert_eq!(
        dma.as_ptr().unwrap().as_ptr() as usize,
        base + a.offset_bytes() as usize,
        "{kind}: the device pointer is the allocation's first byte"
    );
    dma.as_mut_slice()[..4].copy_from_slice(b"DMA!");
    assert!(
        matches!(a.as_slice(), Err(RegionError::Lent { .. })),
        "{kind}"
    );
    drop(dma);
    assert_eq!(&a.as_slice().unwrap()[..4], b"DMA!", "{kind}");
}

#[test]
fn memory_backings_give_slices_and_device_pointers() {
    let dir = temp_dir("slices");
    let (heap, anon, mapped, _, growable, _) = backings(&dir, 16 * BLOCK);
    slices_and_pointers("heap", heap);
    slices_and_pointers("anonymous mmap", anon);
    slices_and_pointers("file mmap", mapped);
    slices_and_pointers("growable anonymous mmap", growable);
}

#[test]
fn file_guards_have_no_address_but_read_and_write() {
    let dir = temp_dir("file-guard");
    let region = Region::new(
        FileBacking::open(dir.path().join("f"), 16 * BLOCK).unwrap(),
        BLOCK,
    )
    .unwrap();
    let mut a = region.allocate(Request::new(1)).unwrap();
    let mut dma = a.pin_mut().unwrap();
    assert!(dma.as_ptr().is_none());
    dma.write_at(3, b"io").unwrap();
    drop(dma);
    let mut out = [0; 2];
    a.read_at(3, &mut out).unwrap();
    assert_eq!(&out, b"io");
}

#[test]
fn backings_refuse_bad_sizes_and_never_truncate_a_file() {
    let dir = temp_dir("sizes");
    assert_eq!(HeapBacking::new(0).unwrap_err().op, BackingOp::Open);
    assert!(MmapBacking::anonymous(0).is_err());
    assert!(FileBacking::open(dir.path().join("z"), 0).is_err());
    let f = FileBacking::open(dir.path().join("f"), 8192).unwrap();
    drop(f);
    let err = FileBacking::open(dir.path().join("f"), 4096).unwrap_err();
    assert_eq!(err.source.kind(), io::ErrorKind::InvalidInput);
    assert_eq!(std::fs::metadata(dir.path().join("f")).unwrap().len(), 8192);
    // SAFETY: the file is this test's own.
    assert!(unsafe { MmapBacking::open(dir.path().join("f"), 4096) }.is_err());
    // Growing is fine.
    assert_eq!(
        FileBacking::open(dir.path().join("f"), 16384)
            .unwrap()
            .len_bytes(),
        16384
    );
    assert!(matches!(
        Region::new(HeapBacking::new(100).unwrap(), 512),
        Err(RegionError::BlockSize {
            block_bytes: 512,
            backing_bytes: 100
        })
    ));
}

/// A length no file offset or slice can reach, and files that cannot serve as a
/// backing, are refused when the backing is made (op `Open`, kind `InvalidInput`),
/// never taken on trust: a `FileBacking` claiming `u64::MAX` bytes used to build a
/// region that silently lacked blocks.
/// Growth is refused where it would lose data or cannot happen: a file longer than
/// its backing (a growth would cut it), a maximum below the length, lengths outside
/// `1..=max`, and a mapping or heap of fixed length; a refusal changes no length.
#[test]
fn growable_backings_refuse_what_they_cannot_do() {
    let dir = temp_dir("growable");
    let path = dir.path().join("long");
    std::fs::write(&path, vec![7u8; 8192]).unwrap();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let err = FileBacking::from_file(file, 4096)
        .unwrap()
        .with_max_len(1 << 20)
        .unwrap_err();
    assert_eq!(err.source.kind(), io::ErrorKind::InvalidInput, "{err}");
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 8192, "untouched");
    let plain = FileBacking::open(dir.path().join("plain"), 4096).unwrap();
    assert!(plain.with_max_len(2048).is_err());
    let grows = FileBacking::open(dir.path().join("grows"), 4096)
        .unwrap()
        .with_max_len(8192)
        .unwrap();
    let map = MmapBacking::anonymous_growable(4096, 8192).unwrap();
    let heap = HeapBacking::new(4096).unwrap();
    let fixed = MmapBacking::anonymous(4096).unwrap();
    for (what, b) in [
        ("file", &grows as &dyn Backing),
        ("mapping", &map),
        ("heap", &heap),
        ("fixed mapping", &fixed),
    ] {
        for len in [0, 8193, u64::MAX] {
            // SAFETY: nothing refers to these backings' bytes.
            let err = unsafe { b.set_len_bytes(len) }.unwrap_err();
            assert_eq!(err.op, BackingOp::Resize, "{what}");
            assert_eq!(b.len_bytes(), 4096, "{what}: unchanged");
        }
    }
    // SAFETY: as above.
    unsafe {
        map.write_at(4000, &[9; 96]).unwrap();
        map.set_len_bytes(4000).unwrap();
        map.set_len_bytes(8192).unwrap();
        let mut back = [1u8; 96];
        map.read_at(4000, &mut back).unwrap();
        assert_eq!(back, [0; 96], "a shrink zeroes what it cuts");
        grows.set_len_bytes(8192).unwrap();
    }
    assert_eq!(
        std::fs::metadata(dir.path().join("grows")).unwrap().len(),
        8192
    );
}

#[test]
fn backings_refuse_lengths_and_files_that_cannot_work() {
    use std::fs::OpenOptions;
    let dir = temp_dir("lengths");
    let invalid = |what: &str, len: u64, result: Result<(), BackingError>| {
        let err = result.expect_err(what);
        assert_eq!(err.op, BackingOp::Open, "{what}");
        assert_eq!(
            err.source.kind(),
            io::ErrorKind::InvalidInput,
            "{what}: {err}"
        );
        assert_eq!(err.range, 0..len, "{what}");
    };
    let past_offsets = i64::MAX as u64 + 1;
    let past_slices = isize::MAX as u64 + 1;

    let path = dir.path().join("f");
    let rw = || {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .unwrap()
    };
    rw().set_len(4096).unwrap();
    let from_file = |f, len| FileBacking::from_file(f, len).map(drop);
    for len in [0, 4097, past_offsets, u64::MAX] {
        invalid(
            &format!("from_file of {len} bytes"),
            len,
            from_file(rw(), len),
        );
    }
    let read_only = std::fs::File::open(&path).unwrap();
    invalid("a read-only file", 4096, from_file(read_only, 4096));
    let write_only = OpenOptions::new().write(true).open(&path).unwrap();
    invalid("a write-only file", 4096, from_file(write_only, 4096));
    let append = OpenOptions::new()
        .read(true)
        .append(true)
        .open(&path)
        .unwrap();
    invalid("a file open for appending", 4096, from_file(append, 4096));
    let null = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .unwrap();
    invalid("a character device", 4096, from_file(null, 4096));
    // The whole file, or a prefix of it.
    assert_eq!(
        FileBacking::from_file(rw(), 4096).unwrap().len_bytes(),
        4096
    );
    assert_eq!(FileBacking::from_file(rw(), 100).unwrap().len_bytes(), 100);

    for len in [past_offsets, u64::MAX] {
        let name = format!("huge-{len}");
        invalid(
            "FileBacking::open",
            len,
            FileBacking::open(dir.path().join(&name), len).map(drop),
        );
        // SAFETY: the file is this test's own (and is refused before it is made).
        let mapped = unsafe { MmapBacking::open(dir.path().join(&name), len) };
        invalid("MmapBacking::open", len, mapped.map(drop));
        assert!(
            !dir.path().join(&name).exists(),
            "nothing created for {len} bytes"
        );
    }
    for len in [0, past_slices, u64::MAX] {
        invalid(
            "MmapBacking::anonymous",
            len,
            MmapBacking::anonymous(len).map(drop),
        );
        invalid("HeapBacking::new", len, HeapBacking::new(len).map(drop));
    }
}

// ---------------------------------------------------------------------------------------
// Fill patterns under full pressure.

/// A pinned buffer and what it must read as.
enum Guard<B: Backing> {
    Shared(Pinned<B>),
    Exclusive(PinnedMut<B>),
}

impl<B: Backing> Guard<B> {
    fn read(&self) -> Vec<u8> {
        let mut out = vec![0; (self.extent().len * BLOCK) as usize];
        match self {
            Guard::Shared(p) => p.read_at(0, &mut out),
            Guard::Exclusive(p) => p.read_at(0, &mut out),
        }
        .unwrap();
        out
    }

    fn extent(&self) -> Extent {
        match self {
            Guard::Shared(p) => p.extent(),
            Guard::Exclusive(p) => p.extent(),
        }
    }
}

fn overlaps(a: Extent, b: Extent) -> bool {
    a.start < b.start + b.len && b.start < a.start + a.len
}

/// Pins a few buffers, frees or truncates their allocations, then fills the region to
/// the last block, checks and frees, round after round. The pinned bytes never change
/// and no allocation ever lands on them.
fn pinned_survive_pressure<B: Backing>(kind: &str, backing: B, seed: u64) {
    let region = Region::new(backing, BLOCK).unwrap();
    let capacity = region.capacity_blocks();
    let mut rng = SplitMix::new(seed);
    let mut next_id = 0u64;
    let mut pinned: Vec<(Guard<B>, Vec<u8>)> = Vec::new();
    let mut keep: Vec<(Allocation<B>, u64)> = Vec::new();

    for _ in 0..3 {
        let mut a = region.allocate(Request::new(1 + rng.below(8))).unwrap();
        let id = next_id;
        next_id += 1;
        fill(&mut a, id);
        let (guard, expect) = if chance(&mut rng, 50) {
            // A device that writes: its bytes, not the allocation's, must survive.
            let mut g = a.pin_mut().unwrap();
            let mine = pattern(id + 1_000_000, g.len_bytes());
            g.write_at(0, &mine).unwrap();
            (Guard::Exclusive(g), mine)
        } else {
            (Guard::Shared(a.pin().unwrap()), pattern(id, a.len_bytes()))
        };
        if a.extent().len > 1 && chance(&mut rng, 50) {
            a.truncate(1).unwrap();
            keep.push((a, id)); // the head stays allocated, the tail is Deferred
        } else {
            drop(a); // freed: all Deferred while pinned
        }
        pinned.push((guard, expect));
    }

    for round in 0..6 {
        // Full pressure: allocate until not even one block fits.
        let mut live: Vec<(Allocation<B>, u64)> = Vec::new();
        let mut want = 1 + rng.below(16);
        loop {
            match region.allocate(Request::new(want)) {
                Ok(mut a) => {
                    for (g, _) in &pinned {
                        assert!(
                            !overlaps(a.extent(), g.extent()),
                            "{kind}: {} handed out over pinned {}",
                            a.extent(),
                            g.extent()
                        );
                    }
                    let id = next_id;
                    next_id += 1;
                    fill(&mut a, id);
                    live.push((a, id));
                    want = 1 + rng.below(16);
                }
                Err(RegionError::Alloc(SharedAllocError::Core(AllocError::NoSpace { .. })))
                    if want > 1 =>
                {
                    want /= 2
                }
                Err(RegionError::Alloc(SharedAllocError::Core(AllocError::NoSpace { .. }))) => {
                    break;
                }
                Err(e) => panic!("{kind}: {e}"),
            }
        }
        let s = region.stats().space;
        assert_eq!(s.free_blocks, 0, "{kind}: round {round} left space");
        for (g, expect) in &pinned {
            assert_eq!(
                &g.read(),
                expect,
                "{kind}: round {round}: a pinned buffer changed"
            );
        }
        // Check every allocation, then free about half of them (some by truncating).
        for (a, id) in &live {
            assert_eq!(
                contents(a),
                pattern(*id, a.len_bytes()),
                "{kind}: allocation {id}"
            );
        }
        let mut kept = Vec::new();
        for (mut a, id) in live {
            if chance(&mut rng, 50) {
                kept.push((a, id));
            } else if a.extent().len > 1 && chance(&mut rng, 30) {
                a.truncate(1 + rng.below(a.extent().len - 1)).unwrap();
                let expect = pattern(id, a.extent().len * BLOCK);
                assert_eq!(contents(&a), expect, "{kind}: truncated {id}");
                a.free().unwrap();
            } else {
                a.free().unwrap();
            }
        }
        for (a, id) in kept {
            assert_eq!(
                contents(&a),
                pattern(id, a.len_bytes()),
                "{kind}: kept {id}"
            );
        }
        region.check_invariants().unwrap();
    }
    for (g, expect) in &pinned {
        assert_eq!(
            &g.read(),
            expect,
            "{kind}: a pinned buffer changed at the end"
        );
    }
    drop(pinned);
    for (a, id) in &keep {
        // The heads kept while their tails were pinned hold the allocation's pattern,
        // unless an exclusive guard wrote them meanwhile (then the guard's).
        let got = contents(a);
        let theirs = pattern(*id, a.len_bytes());
        let devices = pattern(id + 1_000_000, a.len_bytes());
        assert!(
            got == theirs || got == devices,
            "{kind}: kept head {id} changed"
        );
    }
    drop(keep);
    assert_eq!(region.stats().space.free_blocks, capacity, "{kind}: leaked");
    region.check_invariants().unwrap();
}

#[test]
fn pinned_buffers_keep_their_bytes_under_full_pressure() {
    for seed in 0..env_or("REGION_SEEDS", 4) {
        for_each_backing!(96 * BLOCK, pinned_survive_pressure, seed);
    }
}

// ---------------------------------------------------------------------------------------
// Discard.

/// A backing that records every discard and passes everything on.
struct Recording<B> {
    inner: B,
    discards: Arc<Mutex<Vec<Range<u64>>>>,
}

impl<B: Backing> Backing for Recording<B> {
    fn len_bytes(&self) -> u64 {
        self.inner.len_bytes()
    }

    unsafe fn read_at(&self, offset_bytes: u64, buf: &mut [u8]) -> Result<(), BackingError> {
        // SAFETY: the caller's promise, passed on unchanged.
        unsafe { self.inner.read_at(offset_bytes, buf) }
    }

    unsafe fn write_at(&self, offset_bytes: u64, buf: &[u8]) -> Result<(), BackingError> {
        // SAFETY: the caller's promise, passed on unchanged.
        unsafe { self.inner.write_at(offset_bytes, buf) }
    }

    fn sync(&self) -> Result<(), BackingError> {
        self.inner.sync()
    }

    unsafe fn discard(&self, range: Range<u64>) -> Result<(), BackingError> {
        self.discards.lock().unwrap().push(range.clone());
        // SAFETY: the caller's promise, passed on unchanged.
        unsafe { self.inner.discard(range) }
    }

    fn max_len_bytes(&self) -> u64 {
        self.inner.max_len_bytes()
    }

    unsafe fn set_len_bytes(&self, new_len_bytes: u64) -> Result<(), BackingError> {
        // SAFETY: the caller's promise, passed on unchanged.
        unsafe { self.inner.set_len_bytes(new_len_bytes) }
    }
}

/// Each block's state, up to the most the region may grow to (`None` past its
/// capacity now).
fn states<B: Backing>(region: &Region<B>) -> Vec<Option<BlockState>> {
    (0..region.max_capacity_blocks())
        .map(|b| region.state_of(b))
        .collect()
}

/// One step of a random walk over a region's handles; used by the discard and the
/// fault walks. Returns what it did, for failure messages.
struct Walk<B: Backing> {
    allocations: Vec<(Allocation<B>, u64)>,
    shared: Vec<Pinned<B>>,
    exclusive: Vec<PinnedMut<B>>,
    next_id: u64,
    readers: Vec<RegionReadGuard<B>>,
    /// The epoch prepared and not finished, if any.
    prepared: Option<u64>,
    /// The open epoch's frees on commit: extent, id, and the bytes when they could
    /// be read, which an abort must give back unchanged.
    txn: Vec<(Extent, u64, Option<Vec<u8>>)>,
    /// Aborted frees whose blocks a pin guard still held: attached once detached.
    aborted: Vec<(Extent, u64, Option<Vec<u8>>)>,
}

impl<B: Backing> Walk<B> {
    fn new() -> Self {
        Self {
            allocations: Vec::new(),
            shared: Vec::new(),
            exclusive: Vec::new(),
            next_id: 0,
            readers: Vec::new(),
            prepared: None,
            txn: Vec::new(),
            aborted: Vec::new(),
        }
    }

    /// Takes back the aborted frees whose blocks are detached now, checking that
    /// their bytes are as they were. Stops at the first read that fails (the rest
    /// wait for the next call), with its error; `verify` off reads nothing.
    fn attach_aborted(&mut self, region: &Region<B>, verify: bool) -> Result<(), RegionError> {
        let mut waiting = Vec::new();
        let mut failed = Ok(());
        for (e, id, bytes) in self.aborted.drain(..) {
            if failed.is_err() {
                waiting.push((e, id, bytes));
                continue;
            }
            match region.attach(e) {
                Ok(a) => {
                    if let Some(bytes) = bytes.filter(|_| verify) {
                        let mut now = vec![0; a.len_bytes() as usize];
                        match a.read_at(0, &mut now) {
                            Ok(()) => assert!(now == bytes, "aborted {e} came back changed"),
                            Err(err) => failed = Err(err),
                        }
                    }
                    self.allocations.push((a, id));
                }
                Err(RegionError::NotDetached { .. }) => {
                    assert!(
                        region.pin_count(e.start) > 0,
                        "aborted {e} neither detached nor pinned: {:?}",
                        region.runs(e.start..e.start + e.len).collect::<Vec<_>>()
                    );
                    waiting.push((e, id, bytes));
                }
                Err(other) => panic!("attach {e}: {other}"),
            }
        }
        self.aborted = waiting;
        failed
    }

    /// Ends everything: guards, readers, the epochs' frees, the handles. Afterwards
    /// every block is Free.
    fn settle(mut self, region: &Region<B>) {
        self.shared.clear();
        self.exclusive.clear();
        self.readers.clear();
        self.attach_aborted(region, false).unwrap();
        assert!(self.aborted.is_empty(), "no guard holds them now");
        self.allocations.clear();
        if let Some(p) = self.prepared.take() {
            region.finish_commit(p).unwrap();
        }
        region.commit(region.epoch()).unwrap();
    }

    /// Does one random thing. `Err` is a backing failure the caller was told of.
    fn step(
        &mut self,
        region: &Region<B>,
        rng: &mut SplitMix,
    ) -> (&'static str, Result<(), RegionError>) {
        let pick = |rng: &mut SplitMix, n: usize| rng.below(n as u64) as usize;
        match rng.below(15) {
            0 | 1 => {
                let req = Request::new(1 + rng.below(6)).policy(Policy::FirstFit);
                match region.allocate(req) {
                    Ok(a) => {
                        self.allocations.push((a, self.next_id));
                        self.next_id += 1;
                        ("allocate", Ok(()))
                    }
                    Err(RegionError::Alloc(SharedAllocError::Core(AllocError::NoSpace {
                        ..
                    }))) => ("allocate (full)", Ok(())),
                    Err(e) => ("allocate", Err(e)),
                }
            }
            2 if !self.allocations.is_empty() => {
                let i = pick(rng, self.allocations.len());
                let (a, id) = &mut self.allocations[i];
                let bytes = pattern(*id, a.len_bytes());
                ("write", refusal_is_fine(a.write_at(0, &bytes)))
            }
            3 if !self.allocations.is_empty() => {
                let i = pick(rng, self.allocations.len());
                let (a, _) = &self.allocations[i];
                let mut out = vec![0; a.len_bytes() as usize];
                ("read", refusal_is_fine(a.read_at(0, &mut out)))
            }
            4 if !self.allocations.is_empty() => {
                let i = pick(rng, self.allocations.len());
                let (a, _) = &mut self.allocations[i];
                if chance(rng, 50) {
                    match a.pin() {
                        Ok(p) => self.shared.push(p),
                        Err(RegionError::Lent { .. }) => {}
                        Err(e) => return ("pin", Err(e)),
                    }
                } else {
                    match a.pin_mut() {
                        Ok(p) => self.exclusive.push(p),
                        Err(RegionError::Lent { .. }) => {}
                        Err(e) => return ("pin_mut", Err(e)),
                    }
                }
                ("pin", Ok(()))
            }
            5 if !self.allocations.is_empty() => {
                let i = pick(rng, self.allocations.len());
                let (a, _) = &mut self.allocations[i];
                let len = a.extent().len;
                if len < 2 {
                    return ("truncate (too short)", Ok(()));
                }
                ("truncate", a.truncate(1 + rng.below(len - 1)))
            }
            6 if !self.allocations.is_empty() => {
                let i = pick(rng, self.allocations.len());
                let (a, id) = self.allocations.swap_remove(i);
                if chance(rng, 20) {
                    drop(a); // frees, discarding as well as it can
                    return ("drop allocation", Ok(()));
                }
                let before = a.extent();
                match a.free() {
                    Ok(()) => ("free", Ok(())),
                    Err(refused) => {
                        let e = refused.error;
                        assert_eq!(
                            refused.handle.extent(),
                            before,
                            "the handle comes back whole"
                        );
                        self.allocations.push((refused.handle, id));
                        ("free", Err(e))
                    }
                }
            }
            7 if !self.shared.is_empty() => {
                let p = self.shared.swap_remove(pick(rng, self.shared.len()));
                if chance(rng, 50) {
                    drop(p);
                    return ("drop pin", Ok(()));
                }
                match p.unpin() {
                    Ok(()) => ("unpin", Ok(())),
                    Err(refused) => {
                        self.shared.push(refused.handle);
                        ("unpin", Err(refused.error))
                    }
                }
            }
            8 if !self.exclusive.is_empty() => {
                let i = pick(rng, self.exclusive.len());
                if chance(rng, 50) {
                    let p = &mut self.exclusive[i];
                    let bytes = pattern(rng.next_u64(), p.len_bytes());
                    return ("device write", p.write_at(0, &bytes));
                }
                let p = self.exclusive.swap_remove(i);
                match p.unpin() {
                    Ok(()) => ("unpin_mut", Ok(())),
                    Err(refused) => {
                        self.exclusive.push(refused.handle);
                        ("unpin_mut", Err(refused.error))
                    }
                }
            }
            9 => ("sync", region.sync().map_err(RegionError::from)),
            10 if !self.allocations.is_empty() => {
                let i = pick(rng, self.allocations.len());
                let (a, _) = &self.allocations[i];
                let mut bytes = vec![0; a.len_bytes() as usize];
                let bytes = match a.read_at(0, &mut bytes) {
                    Ok(()) => Some(bytes),
                    Err(RegionError::Lent { .. }) => None,
                    Err(e) => return ("read to free on commit", Err(e)),
                };
                let (a, id) = self.allocations.swap_remove(i);
                let e = a.extent();
                match a.free_on_commit() {
                    Ok(()) => {
                        // Allocated in the open epoch, the free is a plain one (gone
                        // at once, or when its guards go): an abort does not undo it.
                        let range = e.start..e.start + e.len;
                        if region.runs(range).all(|r| r.awaiting_commit) {
                            self.txn.push((e, id, bytes));
                        }
                        ("free_on_commit", Ok(()))
                    }
                    Err(refused) => {
                        self.allocations.push((refused.handle, id));
                        ("free_on_commit", Err(refused.error))
                    }
                }
            }
            11 => {
                let epoch = region.epoch();
                if let Some(p) = self.prepared.take() {
                    return ("finish_commit", region.finish_commit(p).map(drop));
                }
                self.txn.clear();
                if chance(rng, 50) {
                    self.prepared = Some(epoch);
                    ("prepare_commit", region.prepare_commit(epoch).map(drop))
                } else {
                    ("commit", region.commit(epoch).map(drop))
                }
            }
            12 => {
                let restored = region.abort(region.epoch()).map(|o| o.restored_blocks);
                let txn_blocks: u64 = self.txn.iter().map(|(e, _, _)| e.len).sum();
                if let Ok(n) = restored {
                    // Blocks allocated in the epoch and freed in it went at once.
                    assert!(n <= txn_blocks, "restored {n} of {txn_blocks}");
                }
                self.aborted.append(&mut self.txn);
                match restored {
                    Ok(_) => ("abort", self.attach_aborted(region, true)),
                    Err(e) => ("abort", Err(e)),
                }
            }
            13 => {
                if !self.readers.is_empty() && chance(rng, 50) {
                    let r = self.readers.swap_remove(pick(rng, self.readers.len()));
                    if chance(rng, 50) {
                        drop(r);
                        return ("drop reader", Ok(()));
                    }
                    return ("end reader", r.end().map(drop));
                }
                self.readers.push(region.read());
                ("read", Ok(()))
            }
            14 => {
                let (now, max) = (region.capacity_blocks(), region.max_capacity_blocks());
                if now < max && chance(rng, 50) {
                    let to = now + 1 + rng.below(max - now);
                    let done = region.grow(to);
                    let want = if done.is_ok() { to } else { now };
                    assert_eq!(region.capacity_blocks(), want, "grow to {to}");
                    ("grow", done)
                } else {
                    let to = now / 2 + rng.below(now - now / 2);
                    match region.shrink(to) {
                        Ok(()) => {
                            assert_eq!(region.capacity_blocks(), to);
                            ("shrink", Ok(()))
                        }
                        // Held, or a backing that cannot change its length: nothing
                        // changed.
                        Err(RegionError::Resize(_)) => {
                            assert_eq!(region.capacity_blocks(), now);
                            ("shrink (held)", Ok(()))
                        }
                        Err(RegionError::Backing(e))
                            if e.source.kind() == io::ErrorKind::Unsupported =>
                        {
                            assert_eq!(region.capacity_blocks(), now);
                            ("shrink (fixed length)", Ok(()))
                        }
                        Err(e) => {
                            assert_eq!(region.capacity_blocks(), now);
                            ("shrink", Err(e))
                        }
                    }
                }
            }
            _ => ("nothing", Ok(())),
        }
    }
}

/// A handle shut out by a pin guard is the walk's expected outcome, not a failure.
fn refusal_is_fine(result: Result<(), RegionError>) -> Result<(), RegionError> {
    match result {
        Err(RegionError::Lent { .. }) => Ok(()),
        other => other,
    }
}

/// After every step, the discards it issued cover exactly the blocks that became Free
/// in it: never a block that stayed Allocated or Deferred (pinned or not).
fn discards_match_releases<B: Backing>(kind: &str, backing: B, seed: u64) {
    let discards = Arc::new(Mutex::new(Vec::new()));
    let recording = Recording {
        inner: backing,
        discards: Arc::clone(&discards),
    };
    let region = Region::builder(recording, BLOCK).groups(2).build().unwrap();
    let mut rng = SplitMix::new(seed);
    let mut walk = Walk::new();
    let mut before = states(&region);
    for step in 0..env_or("REGION_STEPS", 600) {
        let (what, result) = walk.step(&region, &mut rng);
        result.unwrap_or_else(|e| panic!("{kind} seed {seed} step {step}: {what}: {e}"));
        let after = states(&region);
        let mut discarded = vec![false; after.len()];
        for r in discards.lock().unwrap().drain(..) {
            assert_eq!(r.start % BLOCK, 0, "{kind}: a discard inside a block");
            assert_eq!(r.end % BLOCK, 0, "{kind}: a discard inside a block");
            for b in r.start / BLOCK..r.end / BLOCK {
                assert!(!discarded[b as usize], "{kind}: block {b} discarded twice");
                discarded[b as usize] = true;
            }
        }
        for b in 0..after.len() {
            // Blocks a growth brings in come Free, with nothing to discard.
            let freed = after[b] == Some(BlockState::Free)
                && matches!(before[b], Some(s) if s != BlockState::Free);
            assert_eq!(
                discarded[b], freed,
                "{kind} seed {seed} step {step} ({what}): block {b} went {:?} -> {:?}, discarded: {}",
                before[b], after[b], discarded[b]
            );
        }
        before = after;
    }
    walk.settle(&region);
    region.check_invariants().unwrap();
    assert_eq!(region.stats().space.free_blocks, region.capacity_blocks());
}

#[test]
fn discards_go_exactly_to_blocks_that_become_free() {
    for seed in 0..env_or("REGION_SEEDS", 4) {
        for_each_backing!(48 * BLOCK, discards_match_releases, seed);
    }
}

/// Writes a pattern, releases the blocks, takes them again: zeros, through each route
/// to Free (a free, a truncate, a pin guard that outlived its allocation).
fn released_space_reads_zeros<B: Backing>(kind: &str, backing: B) {
    let region = Region::new(backing, BLOCK).unwrap();
    let again = |e: Extent| region.allocate(Request::new(e.len).policy(Policy::Exact(e.start)));

    let mut a = region.allocate(Request::new(4)).unwrap();
    fill(&mut a, 7);
    let e = a.extent();
    a.free().unwrap();
    assert_eq!(
        contents(&again(e).unwrap()),
        vec![0; (4 * BLOCK) as usize],
        "{kind}: free"
    );

    let mut a = region.allocate(Request::new(4)).unwrap();
    fill(&mut a, 8);
    a.truncate(1).unwrap();
    let tail = Extent::new(a.extent().start + 1, 3);
    assert_eq!(
        contents(&again(tail).unwrap()),
        vec![0; (3 * BLOCK) as usize],
        "{kind}: truncate"
    );
    assert_eq!(contents(&a), pattern(8, BLOCK), "{kind}: the head is kept");
    drop(a);

    let mut a = region.allocate(Request::new(4)).unwrap();
    fill(&mut a, 9);
    let e = a.extent();
    let pin = a.pin().unwrap();
    a.free().unwrap();
    assert!(
        again(e).is_err(),
        "{kind}: Deferred blocks are not handed out"
    );
    let mut kept = vec![0; (4 * BLOCK) as usize];
    pin.read_at(0, &mut kept).unwrap();
    assert_eq!(
        kept,
        pattern(9, 4 * BLOCK),
        "{kind}: the pinned bytes were not discarded"
    );
    drop(pin);
    assert_eq!(
        contents(&again(e).unwrap()),
        vec![0; (4 * BLOCK) as usize],
        "{kind}: unpinned"
    );
}

#[test]
fn released_space_reads_as_zeros() {
    for_each_backing!(32 * BLOCK, released_space_reads_zeros);
}

#[test]
fn a_file_region_gives_released_space_back_to_the_filesystem() {
    // ext4, xfs, btrfs and tmpfs punch holes; elsewhere the fallback writes zeros and
    // `punches_holes` says so.
    let dir = temp_dir("holes");
    let path = dir.path().join("data");
    let len = 4 << 20;
    let region = Region::new(FileBacking::open(&path, len).unwrap(), 64 * 1024).unwrap();
    let mut all = region.allocate(Request::new(64)).unwrap();
    all.write_at(0, &vec![1; len as usize]).unwrap();
    region.sync().unwrap();
    let used = || {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(&path).unwrap().blocks() * 512
    };
    assert!(used() >= len, "the file is written out");
    all.free().unwrap();
    region.sync().unwrap();
    if region.backing().punches_holes() {
        assert!(
            used() < len / 4,
            "holes free the space: {} bytes still used",
            used()
        );
    } else {
        eprintln!("this filesystem cannot punch holes: the discard wrote zeros");
    }
    assert_eq!(region.stats().discarded_bytes, len);
}

/// Blocks freed on commit through a handle keep their bytes while the epoch is open,
/// while a reader that saw them lives and while a pin guard holds them, whichever
/// ends last; only then are they discarded, exactly once, and Free. A tail a guard
/// held after a plain truncate goes when the guard does, as before.
#[test]
fn a_free_on_commit_is_discarded_only_when_its_blocks_become_free() {
    let discards = Arc::new(Mutex::new(Vec::new()));
    let recording = Recording {
        inner: HeapBacking::new(16 * BLOCK).unwrap(),
        discards: Arc::clone(&discards),
    };
    let region = Region::new(recording, BLOCK).unwrap();
    let taken = || std::mem::take(&mut *discards.lock().unwrap());
    let mut page = region.allocate(Request::new(8)).unwrap();
    page.write_at(0, &[7; 8 * BLOCK as usize]).unwrap();
    region.commit(1).unwrap();
    let dma = page.pin().unwrap();
    page.truncate(6).unwrap(); // blocks 6..8: Deferred by the guard alone
    let reader = region.read();
    page.free_on_commit().unwrap();
    assert!(taken().is_empty());
    assert_eq!(region.commit(2).unwrap().released_blocks, 0);
    assert!(taken().is_empty(), "the reader and the guard still hold it");
    // The reader began in the epoch of the truncate, so it holds the guard's tail too.
    drop(dma);
    assert!(taken().is_empty(), "the reader still holds all of it");
    assert_eq!(region.state_of(7), Some(BlockState::Deferred));
    let mut out = vec![0; 8 * BLOCK as usize];
    // SAFETY: no handle can write these blocks: they are Deferred.
    unsafe { region.backing().read_at(0, &mut out).unwrap() };
    assert!(out.iter().all(|&b| b == 7), "bytes kept for the reader");
    assert_eq!(reader.end().unwrap().released_blocks, 8);
    let mut ends = taken();
    ends.sort_by_key(|r| r.start);
    assert_eq!(ends, vec![0..6 * BLOCK, 6 * BLOCK..8 * BLOCK]);
    assert_eq!(region.stats().space.free_blocks, 16);
    region.check_invariants().unwrap();

    // A plain free while a reader lives: discarded when the reader ends.
    let page = region.allocate(Request::new(3)).unwrap();
    region.commit(3).unwrap();
    let reader = region.read();
    page.free().unwrap();
    assert!(taken().is_empty());
    drop(reader);
    assert_eq!(taken().len(), 1);
    assert_eq!(region.stats().space.free_blocks, 16);

    // Allocated and freed on commit in one epoch: gone at once, as a plain free.
    let fresh = region.allocate(Request::new(2)).unwrap();
    fresh.free_on_commit().unwrap();
    assert_eq!(taken().len(), 1);
    assert_eq!(region.stats().space.free_blocks, 16);
}

/// An abort gives blocks freed on commit back undiscarded; while a guard holds them
/// they are not yet detached, and once it drops they are.
#[test]
fn an_abort_gives_the_bytes_back_once_the_guards_let_go() {
    let region = Region::new(HeapBacking::new(16 * BLOCK).unwrap(), BLOCK).unwrap();
    let mut page = region.allocate(Request::new(4)).unwrap();
    page.write_at(0, b"committed").unwrap();
    region.commit(1).unwrap();
    let e = page.extent();
    let dma = page.pin().unwrap();
    page.free_on_commit().unwrap();
    assert_eq!(region.abort(2).unwrap().restored_blocks, 4);
    assert_eq!(region.state_of(e.start), Some(BlockState::Allocated));
    assert!(matches!(
        region.attach(e),
        Err(RegionError::NotDetached { .. })
    ));
    assert_eq!(&dma.as_slice()[..9], b"committed");
    drop(dma);
    assert_eq!(region.detached_extents(), [e]);
    let back = region.attach(e).unwrap();
    assert_eq!(&back.as_slice().unwrap()[..9], b"committed");
    assert_eq!(region.stats().discards, 0);
    region.check_invariants().unwrap();
    drop(back);
    assert_eq!(region.stats().space.free_blocks, 16);
}

/// A span attached from detached blocks of two epochs, freed on commit and aborted:
/// the committed part comes back Allocated and detached with its bytes, the part
/// allocated in the aborted epoch goes Free (discarded), and nothing is stuck.
#[test]
fn an_abort_of_a_span_from_two_epochs_restores_one_part_and_frees_the_other() {
    let region = Region::new(HeapBacking::new(16 * BLOCK).unwrap(), BLOCK).unwrap();
    let exact = |start| Request::new(2).policy(Policy::Exact(start));
    let mut old = region.allocate(exact(0)).unwrap();
    old.write_at(0, b"committed").unwrap();
    region.commit(1).unwrap();
    let new = region.allocate(exact(2)).unwrap();
    old.into_extent().unwrap();
    new.into_extent().unwrap();
    let both = region.attach(Extent::new(0, 4)).unwrap();
    both.free_on_commit().unwrap();
    assert_eq!(region.abort(2).unwrap().restored_blocks, 2);
    assert_eq!(region.detached_extents(), [Extent::new(0, 2)]);
    assert_eq!(region.state_of(2), Some(BlockState::Free));
    assert_eq!(region.pin_count(0), 0, "the gate is gone");
    let back = region.attach(Extent::new(0, 2)).unwrap();
    assert_eq!(&back.as_slice().unwrap()[..9], b"committed");
    region.check_invariants().unwrap();
    drop(back);
    assert!(region.is_empty());
}

#[test]
fn discard_can_be_turned_off() {
    let region = Region::builder(HeapBacking::new(8 * BLOCK).unwrap(), BLOCK)
        .discard_released(false)
        .build()
        .unwrap();
    let mut a = region.allocate(Request::new(8)).unwrap();
    fill(&mut a, 3);
    a.free().unwrap();
    let b = region.allocate(Request::new(8)).unwrap();
    assert_eq!(
        contents(&b),
        pattern(3, 8 * BLOCK),
        "old bytes stay when not discarding"
    );
    assert_eq!(region.stats().discards, 0);
}

// ---------------------------------------------------------------------------------------
// Injected faults.

/// A backing whose I/O fails when a countdown reaches zero, then restarts it at a
/// random value. It counts what it injected.
struct Faulty<B> {
    inner: B,
    countdown: AtomicU64,
    seed: AtomicU64,
    injected: Arc<AtomicU64>,
}

impl<B: Backing> Faulty<B> {
    fn new(inner: B, seed: u64, injected: Arc<AtomicU64>) -> Self {
        Self {
            inner,
            countdown: AtomicU64::new(1 + seed % 7),
            seed: AtomicU64::new(seed),
            injected,
        }
    }

    fn tick(&self, op: BackingOp, range: Range<u64>) -> Result<(), BackingError> {
        if self.countdown.fetch_sub(1, Ordering::Relaxed) > 1 {
            return Ok(());
        }
        let mut rng = SplitMix::new(self.seed.fetch_add(1, Ordering::Relaxed));
        self.countdown.store(1 + rng.below(12), Ordering::Relaxed);
        self.injected.fetch_add(1, Ordering::Relaxed);
        Err(BackingError::new(
            op,
            range,
            io::Error::other("injected fault"),
        ))
    }
}

impl<B: Backing> Backing for Faulty<B> {
    fn len_bytes(&self) -> u64 {
        self.inner.len_bytes()
    }

    unsafe fn read_at(&self, offset_bytes: u64, buf: &mut [u8]) -> Result<(), BackingError> {
        self.tick(
            BackingOp::Read,
            offset_bytes..offset_bytes + buf.len() as u64,
        )?;
        // SAFETY: the caller's promise, passed on unchanged.
        unsafe { self.inner.read_at(offset_bytes, buf) }
    }

    unsafe fn write_at(&self, offset_bytes: u64, buf: &[u8]) -> Result<(), BackingError> {
        self.tick(
            BackingOp::Write,
            offset_bytes..offset_bytes + buf.len() as u64,
        )?;
        // SAFETY: the caller's promise, passed on unchanged.
        unsafe { self.inner.write_at(offset_bytes, buf) }
    }

    fn sync(&self) -> Result<(), BackingError> {
        self.tick(BackingOp::Sync, 0..self.len_bytes())?;
        self.inner.sync()
    }

    unsafe fn discard(&self, range: Range<u64>) -> Result<(), BackingError> {
        self.tick(BackingOp::Discard, range.clone())?;
        // SAFETY: the caller's promise, passed on unchanged.
        unsafe { self.inner.discard(range) }
    }

    fn max_len_bytes(&self) -> u64 {
        self.inner.max_len_bytes()
    }

    unsafe fn set_len_bytes(&self, new_len_bytes: u64) -> Result<(), BackingError> {
        let len = self.len_bytes();
        self.tick(
            BackingOp::Resize,
            len.min(new_len_bytes)..len.max(new_len_bytes),
        )?;
        // SAFETY: the caller's promise, passed on unchanged.
        unsafe { self.inner.set_len_bytes(new_len_bytes) }
    }
}

/// Every injected fault reaches a caller as `RegionError::Backing`, or (in a drop,
/// which cannot report) the drop-failure counter. A refused free or unpin hands its
/// handle back unchanged. At the end the allocator is consistent and nothing leaked.
fn faults_reach_callers<B: Backing>(kind: &str, backing: B, seed: u64) {
    let injected = Arc::new(AtomicU64::new(0));
    let faulty = Faulty::new(backing, seed, Arc::clone(&injected));
    let region = Region::builder(faulty, BLOCK).groups(2).build().unwrap();
    let mut rng = SplitMix::new(seed ^ 0xFA17);
    let mut walk = Walk::new();
    let mut reported = 0u64;
    let mut kinds = BTreeMap::new();
    for step in 0..env_or("REGION_STEPS", 600) {
        let owned_before: Vec<Extent> = walk.allocations.iter().map(|(a, _)| a.extent()).collect();
        let (what, result) = walk.step(&region, &mut rng);
        // A truncate that went through shortened its handle; any other call kept them.
        // An abort attached the blocks it gave back.
        let changed_handles =
            what == "allocate" || what == "abort" || (what == "truncate" && result.is_ok());
        match result {
            Ok(()) => {}
            Err(RegionError::Backing(e)) => {
                assert_eq!(e.source.to_string(), "injected fault", "{kind}: {what}");
                reported += 1;
                *kinds.entry(format!("{what}: {}", e.op)).or_insert(0) += 1;
            }
            Err(e) => panic!("{kind} seed {seed} step {step}: {what} failed without a fault: {e}"),
        }
        // A refused free or truncate changed nothing: every handle still owns its blocks.
        for (a, _) in &walk.allocations {
            let e = a.extent();
            assert!(
                owned_before.contains(&e) || changed_handles,
                "{kind}: {what}"
            );
            for b in e.start..e.start + e.len {
                assert_eq!(
                    region.state_of(b),
                    Some(BlockState::Allocated),
                    "{kind}: {what}"
                );
            }
        }
        let swallowed = region.stats().discard_failures;
        assert_eq!(
            injected.load(Ordering::Relaxed),
            reported + swallowed,
            "{kind} seed {seed} step {step} ({what}): a fault went unreported"
        );
        if step % 50 == 0 {
            region.check_invariants().unwrap();
        }
    }
    walk.settle(&region);
    let swallowed = region.stats().discard_failures;
    assert_eq!(
        injected.load(Ordering::Relaxed),
        reported + swallowed,
        "{kind}"
    );
    assert!(
        reported > 10,
        "{kind}: the walk saw only {reported} faults: {kinds:?}"
    );
    region.check_invariants().unwrap();
    assert_eq!(
        region.stats().space.free_blocks,
        region.capacity_blocks(),
        "{kind}: blocks were lost"
    );
}

#[test]
fn injected_faults_all_reach_a_caller_and_lose_nothing() {
    for seed in 0..env_or("REGION_SEEDS", 4) {
        for_each_backing!(48 * BLOCK, faults_reach_callers, seed);
    }
}

// ---------------------------------------------------------------------------------------
// Reopening.

/// Allocates, writes, detaches some extents (recorded elsewhere, as an inode would),
/// frees others, leaves one freed under a live pin; saves the durable free list; drops
/// everything; reopens from the list. The free space is the same, and the detached
/// extents attach again with their bytes.
fn reopen_restores_free_space<B: Backing>(kind: &str, open: impl Fn() -> B) {
    let mut rng = SplitMix::new(11);
    let (saved, recorded) = {
        let region = Region::builder(open(), BLOCK).groups(3).build().unwrap();
        let mut recorded = Vec::new();
        let mut pins = Vec::new();
        for id in 0..24u64 {
            let mut a = region.allocate(Request::new(1 + rng.below(5))).unwrap();
            fill(&mut a, id);
            match id % 4 {
                0 => drop(a),
                1 => {
                    pins.push(a.pin().unwrap()); // freed under a pin: Deferred, durably free
                    drop(a);
                }
                2 if a.extent().len > 1 => {
                    a.truncate(1).unwrap();
                    recorded.push((a.into_extent().unwrap(), id));
                }
                _ => recorded.push((a.into_extent().unwrap(), id)),
            }
        }
        region.sync().unwrap();
        let saved = region.durable_free_extents();
        assert_ne!(
            saved,
            region.free_extents(),
            "{kind}: the pins hold some blocks"
        );
        drop(pins);
        assert_eq!(saved, region.free_extents(), "{kind}");
        (saved, recorded)
    };
    let region = Region::builder(open(), BLOCK)
        .from_free_extents(saved.clone())
        .unwrap();
    assert_eq!(region.free_extents(), saved, "{kind}: the same free space");
    let mut detached: Vec<Extent> = recorded.iter().map(|(e, _)| *e).collect();
    detached.sort_by_key(|e| e.start);
    let joined = region.detached_extents();
    let blocks = |v: &[Extent]| v.iter().map(|e| e.len).sum::<u64>();
    assert_eq!(
        blocks(&joined),
        blocks(&detached),
        "{kind}: detached = not free"
    );
    for (e, id) in recorded {
        let a = region.attach(e).unwrap();
        assert_eq!(
            contents(&a),
            pattern(id, a.len_bytes()),
            "{kind}: {e} after reopen"
        );
    }
    assert!(region.detached_extents().is_empty());
    region.check_invariants().unwrap();
}

#[test]
fn reopening_from_the_durable_free_list_restores_free_space() {
    let dir = temp_dir("reopen");
    let len = 128 * BLOCK;
    reopen_restores_free_space("file", || {
        FileBacking::open(dir.path().join("plain"), len).unwrap()
    });
    reopen_restores_free_space("file mmap", || {
        // SAFETY: the file is this test's own; one mapping at a time.
        unsafe { MmapBacking::open(dir.path().join("mapped"), len).unwrap() }
    });
}

#[test]
fn attach_refuses_blocks_that_are_not_detached() {
    let region = Region::new(HeapBacking::new(16 * BLOCK).unwrap(), BLOCK).unwrap();
    let a = region.allocate(Request::new(4)).unwrap();
    let e = a.extent();
    for bad in [e, Extent::new(8, 2)] {
        assert!(
            matches!(region.attach(bad), Err(RegionError::NotDetached { extent }) if extent == bad),
            "{bad}"
        );
    }
    // Malformed extents say so, as an allocation would.
    let cap = region.capacity_blocks();
    for (bad, want) in [
        (
            Extent::new(cap - 1, 2),
            ExtentError::OutOfBounds {
                extent: Extent::new(cap - 1, 2),
                capacity: cap,
            },
        ),
        (Extent::new(7, 0), ExtentError::ZeroLength { start: 7 }),
        (
            Extent::new(u64::MAX, 2),
            ExtentError::Overflow {
                extent: Extent::new(u64::MAX, 2),
            },
        ),
    ] {
        assert!(
            matches!(region.attach(bad), Err(RegionError::BadExtent(got)) if got == want),
            "{bad}"
        );
    }
    let e = a.into_extent().unwrap();
    let b = region.attach(Extent::new(e.start + 1, 2)).unwrap(); // part of it is fine
    assert!(
        region.attach(Extent::new(e.start, 2)).is_err(),
        "block 1 is owned again"
    );
    assert_eq!(
        region.detached_extents(),
        [Extent::new(e.start, 1), Extent::new(e.start + 3, 1)]
    );
    drop(b);
    region.check_invariants().unwrap();
}

// ---------------------------------------------------------------------------------------
// Threads.

/// Threads allocate, fill, pin, free and check at once on one region; the pins are
/// dropped on other threads. Two owners of the same byte would show as a broken
/// pattern.
#[test]
fn threads_never_share_bytes() {
    let region = Region::new(HeapBacking::new(256 * BLOCK).unwrap(), BLOCK).unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<(Pinned<HeapBacking>, Vec<u8>)>();
    std::thread::scope(|s| {
        let device = s.spawn(move || device_checks(rx));
        for t in 0..3u64 {
            let region = region.clone();
            let tx = tx.clone();
            s.spawn(move || {
                let mut rng = SplitMix::new(t);
                byte_worker(&region, &mut rng, t, &tx);
            });
        }
        drop(tx);
        assert!(device.join().unwrap() > 0);
    });
    assert_eq!(region.stats().space.free_blocks, 256);
    region.check_invariants().unwrap();
}

/// The "device" of the byte-ownership tests: checks that each pinned buffer it is
/// sent still holds the bytes it had when sent; returns how many it checked.
fn device_checks<B: MemoryBacking>(rx: std::sync::mpsc::Receiver<(Pinned<B>, Vec<u8>)>) -> usize {
    let mut checked = 0;
    for (pin, expect) in rx {
        assert_eq!(pin.as_slice(), &expect[..], "a pinned buffer changed");
        checked += 1;
    }
    checked
}

/// One thread of the byte-ownership tests: keeps up to 8 allocations, each filled
/// with its own pattern and checked before it goes; some go while pinned, their
/// guard sent to the "device" with the bytes it must keep seeing.
fn byte_worker<B: MemoryBacking>(
    region: &Region<B>,
    rng: &mut SplitMix,
    t: u64,
    tx: &std::sync::mpsc::Sender<(Pinned<B>, Vec<u8>)>,
) {
    let mut live: Vec<(Allocation<B>, u64)> = Vec::new();
    for i in 0..env_or("REGION_STEPS", 600) * 2 {
        let id = t << 32 | i;
        if live.len() < 8 {
            if let Ok(mut a) = region.allocate(Request::new(1 + rng.below(4))) {
                assert!(a.extent().start + a.extent().len <= region.max_capacity_blocks());
                fill(&mut a, id);
                live.push((a, id));
            }
            continue;
        }
        let (a, id) = live.swap_remove(rng.below(live.len() as u64) as usize);
        assert_eq!(a.as_slice().unwrap(), &pattern(id, a.len_bytes())[..]);
        if chance(rng, 30) {
            let pin = a.pin().unwrap();
            let expect = pin.as_slice().to_vec();
            drop(a); // freed while the "device" still reads it
            tx.send((pin, expect)).unwrap();
        }
    }
}

/// As above, over a growable mapping that another thread grows and shrinks all the
/// while: a growth never moves a byte anyone holds, and a shrink only ever takes a
/// Free tail, so every allocation and every pinned buffer keeps exactly its bytes.
#[test]
fn threads_never_share_bytes_while_the_region_grows_and_shrinks() {
    let backing = MmapBacking::anonymous_growable(32 * BLOCK, 256 * BLOCK).unwrap();
    let region = Region::builder(backing, BLOCK).groups(4).build().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<(Pinned<MmapBacking>, Vec<u8>)>();
    let done = Arc::new(AtomicU64::new(0));
    std::thread::scope(|s| {
        let device = s.spawn(move || device_checks(rx));
        let resizer = {
            let (region, done) = (region.clone(), Arc::clone(&done));
            s.spawn(move || {
                let mut rng = SplitMix::new(99);
                let (mut grown, mut shrunk) = (0, 0);
                while done.load(Ordering::Relaxed) < 3 {
                    let now = region.capacity_blocks();
                    if chance(&mut rng, 50) && now < 256 {
                        region.grow(now + 1 + rng.below(256 - now)).unwrap();
                        grown += 1;
                    } else if now > 1 {
                        match region.shrink(1 + rng.below(now - 1)) {
                            Ok(()) => shrunk += 1,
                            Err(RegionError::Resize(_)) => {}
                            Err(e) => panic!("shrink: {e}"),
                        }
                    }
                    std::thread::yield_now();
                }
                (grown, shrunk)
            })
        };
        for t in 0..3u64 {
            let (region, tx, done) = (region.clone(), tx.clone(), Arc::clone(&done));
            s.spawn(move || {
                let mut rng = SplitMix::new(t);
                byte_worker(&region, &mut rng, t, &tx);
                done.fetch_add(1, Ordering::Relaxed);
            });
        }
        drop(tx);
        assert!(device.join().unwrap() > 0);
        let (grown, shrunk) = resizer.join().unwrap();
        assert!(grown > 0 && shrunk > 0, "grown {grown}, shrunk {shrunk}");
    });
    let s = region.stats();
    assert_eq!(s.space.free_blocks, region.capacity_blocks(), "{s:?}");
    assert_eq!(
        region.backing().len_bytes(),
        region.capacity_blocks() * BLOCK
    );
    region.check_invariants().unwrap();
}

// ---------------------------------------------------------------------------------------
// Bad input and types.

/// Every refused call returns its error and leaves the region as it was: the same free
/// extents, the same handle, the same bytes.
#[test]
fn bad_input_is_an_error_that_changes_nothing() {
    let region = Region::new(HeapBacking::new(16 * BLOCK).unwrap(), BLOCK).unwrap();
    let mut a = region.allocate(Request::new(4)).unwrap();
    fill(&mut a, 5);
    let e = a.extent();
    let snapshot = |a: &Allocation<HeapBacking>| (region.free_extents(), a.extent(), contents(a));
    let before = snapshot(&a);
    let oob = |r: Result<(), RegionError>| matches!(r, Err(RegionError::AccessOutOfBounds { .. }));
    let mut buf = [0u8; 8];
    assert!(oob(a.read_at(4 * BLOCK - 7, &mut buf)));
    assert!(oob(a.read_at(u64::MAX, &mut buf)));
    assert!(oob(a.write_at(4 * BLOCK, &[1])));
    assert!(oob(a.write_at(u64::MAX - 3, &buf)));
    for len in [0, 5, u64::MAX] {
        assert!(
            matches!(a.truncate(len), Err(RegionError::Truncate { extent, len_blocks }) if extent == e && len_blocks == len),
            "truncate to {len}"
        );
    }
    assert!(matches!(
        region.allocate(Request::new(0)),
        Err(RegionError::Alloc(SharedAllocError::Core(
            AllocError::ZeroLength
        )))
    ));
    assert!(matches!(
        region.allocate(Request::new(17)),
        Err(RegionError::Alloc(SharedAllocError::Core(
            AllocError::NoSpace { .. }
        )))
    ));
    assert!(region.attach(Extent::new(u64::MAX, u64::MAX)).is_err());
    let pin = a.pin().unwrap();
    let before_pinned = region.free_extents();
    let refused = a.into_extent().unwrap_err();
    assert!(matches!(refused.error, RegionError::Lent { extent } if extent == e));
    let a = refused.handle;
    assert_eq!(region.free_extents(), before_pinned);
    drop(pin);
    assert_eq!(snapshot(&a), before);
    region.check_invariants().unwrap();
    for bad in [0, 16 * BLOCK + 1, u64::MAX] {
        let err = Region::new(HeapBacking::new(16 * BLOCK).unwrap(), bad).unwrap_err();
        assert!(matches!(err, RegionError::BlockSize { block_bytes, .. } if block_bytes == bad));
    }
}

/// Each cause in a backing error's chain is printed once, as a reporter that walks
/// `source()` prints it: `BackingError` says what failed and leaves its cause to
/// `source()`, and the wrappers (`RegionError::Backing`, `Refused`) forward both.
#[test]
fn error_chains_name_each_cause_once() {
    fn chain(e: &dyn std::error::Error) -> Vec<String> {
        let mut out = vec![e.to_string()];
        let mut next = e.source();
        while let Some(cause) = next {
            out.push(cause.to_string());
            next = cause.source();
        }
        out
    }
    // The countdown starts at 1: the first I/O, the free's discard, fails.
    let faulty = Faulty::new(HeapBacking::new(8 * BLOCK).unwrap(), 0, Arc::default());
    let region = Region::new(faulty, BLOCK).unwrap();
    let refused = region
        .allocate(Request::new(1))
        .unwrap()
        .free()
        .unwrap_err();
    let want = ["backing discard of bytes 0..512 failed", "injected fault"];
    let RegionError::Backing(backing) = &refused.error else {
        panic!("{:?}", refused.error)
    };
    assert_eq!(chain(backing), want);
    assert_eq!(chain(&refused.error), want);
    assert_eq!(chain(&refused), want);
    let boxed: Box<dyn std::error::Error> = Box::new(refused);
    assert_eq!(chain(boxed.as_ref()), want);
}

#[test]
fn handles_and_guards_cross_threads() {
    fn send_sync<T: Send + Sync>() {}
    fn all<B: Backing>() {
        send_sync::<Region<B>>();
        send_sync::<Allocation<B>>();
        send_sync::<Pinned<B>>();
        send_sync::<PinnedMut<B>>();
    }
    all::<HeapBacking>();
    all::<MmapBacking>();
    all::<FileBacking>();
}

// ---------------------------------------------------------------------------------------
// A full filesystem.
//
// A write through a file mapping into a hole needs a new page or disk block at fault
// time; on a full filesystem the kernel answers with SIGBUS, which kills the process.
// These tests mount a small tmpfs (as root; otherwise they are skipped and say so), fill
// it, and run the dangerous part in a child process (this test binary again, running
// just that test), so that a signal fails the test instead of killing the harness.

/// Set in the child: the directory of the tmpfs the parent mounted for it.
const FULL_FS_DIR: &str = "PINALLOC_TEST_FULL_FS_DIR";

/// A tmpfs mounted for one test; unmounted, and its directory removed, on drop (so on
/// a failure too).
struct Tmpfs(Option<tempfile::TempDir>);

impl Tmpfs {
    /// A tmpfs of `size` (as `mount -o size=` takes it), or why there cannot be one.
    fn mount(tag: &str, size: &str) -> Result<Self, String> {
        let euid = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                let uid = s.lines().find(|l| l.starts_with("Uid:"))?.to_owned();
                uid.split_whitespace().nth(2).map(str::to_owned)
            });
        if euid.as_deref() != Some("0") {
            return Err("mounting a tmpfs needs root".into());
        }
        let dir = temp_dir(tag); // removed by `Tmpfs::drop`, after the unmount
        let path = dir.path().to_owned();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .status();
        match status {
            Ok(s) if s.success() => Ok(Self(Some(dir))),
            other => Err(format!("mount -t tmpfs failed: {other:?}")),
        }
    }

    fn path(&self) -> &std::path::Path {
        self.0.as_ref().expect("mounted until dropped").path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let dir = self.0.take().expect("mounted until dropped");
        let unmounted = std::process::Command::new("umount")
            .arg(dir.path())
            .status();
        if !unmounted.as_ref().is_ok_and(|s| s.success()) {
            eprintln!("could not unmount {}: {unmounted:?}", dir.path().display());
            // Still mounted: leave the directory, rather than empty the mount.
            std::mem::forget(dir);
        }
    }
}

/// Runs `body` in a child process, on a fresh 1 MiB tmpfs. `test` is the name of the
/// calling test: the child is this binary, running only that test, which calls `body`.
/// A signal in the child (SIGBUS) fails the test with a message.
fn on_a_small_tmpfs(test: &str, body: impl FnOnce(&std::path::Path)) {
    use std::os::unix::process::ExitStatusExt;
    if let Some(dir) = std::env::var_os(FULL_FS_DIR) {
        body(std::path::Path::new(&dir));
        return;
    }
    let fs = match Tmpfs::mount(test, "1M") {
        Ok(fs) => fs,
        Err(why) => {
            println!("skipped {test}: {why}");
            return;
        }
    };
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(FULL_FS_DIR, fs.path())
        .output()
        .expect("run the test binary again");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if let Some(signal) = out.status.signal() {
        let name = if signal == 7 { " (SIGBUS)" } else { "" };
        panic!("{test}: the child died of signal {signal}{name}\n{stdout}\n{stderr}");
    }
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{test}: the child failed ({})\n{stdout}\n{stderr}",
        out.status
    );
}

/// Fills the filesystem at `dir` to the last page with a ballast file.
fn fill_filesystem(dir: &std::path::Path) {
    use std::io::Write;
    let mut ballast = std::fs::File::create(dir.join("ballast")).unwrap();
    let page = [0xEEu8; 4096];
    for _ in 0..1 << 20 {
        if let Err(e) = ballast.write_all(&page) {
            assert_eq!(e.kind(), io::ErrorKind::StorageFull, "{e}");
            return;
        }
    }
    panic!("{} never filled", dir.display());
}

/// The bytes of `path` at `range`, read through the file (a read of a tmpfs hole through
/// `read(2)` allocates nothing, where a read through a mapping would).
fn file_bytes(path: &std::path::Path, range: Range<u64>) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let mut out = vec![0; (range.end - range.start) as usize];
    std::fs::File::open(path)
        .unwrap()
        .read_exact_at(&mut out, range.start)
        .unwrap();
    out
}

/// Every way blocks of a file mapping are released, with blocks smaller than a page,
/// over holes and over written pages, on a filesystem with no space left: none may
/// write through the mapping into a hole (a SIGBUS), and each leaves zeros.
#[test]
fn releasing_file_mapped_blocks_on_a_full_filesystem_raises_no_signal() {
    on_a_small_tmpfs(
        "releasing_file_mapped_blocks_on_a_full_filesystem_raises_no_signal",
        |dir| {
            let path = dir.join("mapped");
            let len = 64 * 1024;
            // SAFETY: the file is this test's own; nothing else opens it while mapped.
            let backing = unsafe { MmapBacking::open(&path, len).unwrap() };
            let region = Region::new(backing, BLOCK).unwrap();
            let at = |block| Request::new(1).policy(Policy::Exact(block));
            // Blocks 0..8 are page 0, 8..16 page 1, and so on.
            let hole = region.allocate(at(0)).unwrap();
            let freed = region.allocate(at(9)).unwrap();
            let mut truncated = region
                .allocate(Request::new(4).policy(Policy::Exact(17)))
                .unwrap();
            let pinned_owner = region.allocate(at(25)).unwrap();
            let mut lent = region.allocate(at(33)).unwrap();
            // Blocks 47..57: a partial page, a whole page, a partial page, all holes.
            let across = region
                .allocate(Request::new(10).policy(Policy::Exact(47)))
                .unwrap();
            let mut written = region.allocate(at(60)).unwrap();
            written.write_at(0, &pattern(1, BLOCK)).unwrap(); // page 7 is in memory
            let pin = pinned_owner.pin().unwrap();
            let dma = lent.pin_mut().unwrap();
            fill_filesystem(dir);

            // tmpfs punches holes, partial pages included, without allocating: every
            // release succeeds, where zeros written through the mapping were a SIGBUS.
            drop(hole); // a drop: a failed discard could only be counted
            freed.free().unwrap_or_else(|r| panic!("free: {}", r.error));
            truncated.truncate(1).unwrap();
            drop(truncated);
            pinned_owner
                .free()
                .unwrap_or_else(|r| panic!("{}", r.error)); // Deferred
            drop(pin); // the guard discards
            drop(lent); // Deferred under the exclusive lend
            drop(dma);
            drop(across);
            drop(written);
            // SAFETY: the region has no handle left on these bytes.
            unsafe { region.backing().discard(40 * BLOCK..41 * BLOCK) }.unwrap();

            let s = region.stats();
            assert_eq!(s.space.free_blocks, region.capacity_blocks());
            assert_eq!((s.discards, s.discard_failures), (8, 0));
            // What was discarded reads as zeros (through the file, never the mapping).
            for block in [0, 9, 17, 18, 25, 33, 47, 50, 56, 60] {
                assert_eq!(
                    file_bytes(&path, block * BLOCK..(block + 1) * BLOCK),
                    vec![0; BLOCK as usize],
                    "block {block}"
                );
            }
            region.check_invariants().unwrap();
        },
    );
}

/// A preallocated file mapping on a full filesystem: never-written blocks read and
/// write through slices, discards zero them in place and keep them, and they write
/// again; no access faults. A second preallocation finds no room: an error.
#[test]
fn a_preallocated_file_mapping_raises_no_signal_on_a_full_filesystem() {
    on_a_small_tmpfs(
        "a_preallocated_file_mapping_raises_no_signal_on_a_full_filesystem",
        |dir| {
            let path = dir.join("mapped");
            let len = 256 * 1024;
            // SAFETY: the file is this test's own; nothing else opens it while mapped.
            let backing = unsafe { MmapBacking::open_preallocated(&path, len).unwrap() };
            assert!(backing.is_preallocated());
            assert!(!backing.punches_holes());
            fill_filesystem(dir);
            // SAFETY: as above.
            let err =
                unsafe { MmapBacking::open_preallocated(dir.join("more"), 64 * 1024) }.unwrap_err();
            assert_eq!(err.op, BackingOp::Open);
            assert_eq!(err.source.kind(), io::ErrorKind::StorageFull, "{err}");

            let region = Region::new(backing, BLOCK).unwrap();
            // Blocks 7..10 cross from page 0 into page 1; both never written.
            let mut a = region
                .allocate(Request::new(3).policy(Policy::Exact(7)))
                .unwrap();
            assert_eq!(a.as_slice().unwrap(), vec![0; 3 * BLOCK as usize]);
            a.as_mut_slice()
                .unwrap()
                .copy_from_slice(&pattern(1, 3 * BLOCK));
            let mut b = region
                .allocate(Request::new(40).policy(Policy::Exact(12)))
                .unwrap();
            fill(&mut b, 2);
            let dma = b.pin_mut().unwrap();
            drop(a);
            b.truncate(3).unwrap(); // lent: Deferred until the guard drops
            drop(b);
            drop(dma);
            // Every block again, discarded ones included: still allocated, so nothing
            // faults, and what was discarded reads as zeros.
            let mut all = region
                .allocate(Request::new(region.capacity_blocks()))
                .unwrap();
            assert!(all.as_slice().unwrap().iter().all(|&byte| byte == 0));
            all.as_mut_slice().unwrap().fill(0xA5);
            drop(all);
            let s = region.stats();
            assert_eq!((s.discards, s.discard_failures), (3, 0));
            assert_eq!(s.discarded_bytes, (3 + 40 + 512) * BLOCK);
            use std::os::unix::fs::MetadataExt;
            let used = std::fs::metadata(&path).unwrap().blocks() * 512;
            assert!(used >= len, "the file keeps its blocks: {used} bytes");
            region.check_invariants().unwrap();
        },
    );
}

/// On the machine's own filesystem: preallocation keeps a file's contents, allocates
/// its holes, and discards zero the bytes without giving the blocks back.
#[test]
fn a_preallocated_file_mapping_keeps_its_contents_and_its_blocks() {
    use std::os::unix::fs::MetadataExt;
    let dir = temp_dir("prealloc");
    let path = dir.path().join("mapped");
    let len = 1 << 20;
    {
        let plain = FileBacking::open(&path, len).unwrap();
        // SAFETY: this test is the backing's only user.
        unsafe { plain.write_at(5000, b"kept").unwrap() };
    }
    // SAFETY: the file is this test's own; nothing else opens it while mapped.
    let backing = match unsafe { MmapBacking::open_preallocated(&path, len) } {
        Ok(b) => b,
        Err(e) if e.source.kind() == io::ErrorKind::Unsupported => {
            println!("skipped: this filesystem cannot preallocate ({e})");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    let used = || std::fs::metadata(&path).unwrap().blocks() * 512;
    assert!(used() >= len, "every block allocated: {} bytes", used());
    let region = Region::new(backing, 4096).unwrap();
    let mut all = region.allocate(Request::new(256)).unwrap();
    assert_eq!(&all.as_slice().unwrap()[5000..5004], b"kept");
    all.as_mut_slice().unwrap().fill(1);
    region.sync().unwrap();
    all.truncate(1).unwrap();
    drop(all);
    region.sync().unwrap();
    assert!(used() >= len, "discards keep the blocks: {} bytes", used());
    assert_eq!(file_bytes(&path, 0..len), vec![0; len as usize]);
    let s = region.stats();
    assert_eq!((s.discarded_bytes, s.discard_failures), (len, 0));
}
