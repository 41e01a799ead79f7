//! What `Region` costs on top of `SharedAllocator`: owned handles, lends and pins, and
//! discards, on a 64 MiB region of 4 KiB blocks.
//!
//! ```text
//! cargo bench --bench region
//! ```
//!
//! Each case is one single-threaded cycle, timed by criterion:
//! - `shared/*`: the allocator alone (the baseline);
//! - `region/*`: the same through a region with discards off, so the difference is the
//!   handle, the span and the lend bookkeeping;
//! - `discard/*`: allocate + free of 4 blocks (16 KiB) with discards on, per backing:
//!   the heap writes zeros, an anonymous mapping drops pages with `madvise`, a file
//!   punches a hole.

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use pinalloc::{
    Backing, Extent, FileBacking, HeapBacking, MmapBacking, Region, Request, SharedAllocator,
};

const BLOCK_BYTES: u64 = 4096;
const REGION_BYTES: u64 = 64 << 20;

fn region<B: Backing>(backing: B, discard: bool) -> Region<B> {
    Region::builder(backing, BLOCK_BYTES)
        .discard_released(discard)
        .build()
        .expect("a region")
}

fn baseline(c: &mut Criterion) {
    let alloc = SharedAllocator::new(REGION_BYTES / BLOCK_BYTES);
    c.bench_function("shared/allocate+free 4 blocks", |b| {
        b.iter(|| {
            let e = alloc.allocate(Request::new(4)).unwrap();
            alloc.free(e).unwrap();
        })
    });
    let held: Extent = alloc.allocate(Request::new(4)).unwrap();
    c.bench_function("shared/pin+unpin", |b| {
        b.iter(|| drop(alloc.pin(held).unwrap()))
    });
}

fn handles(c: &mut Criterion) {
    let r = region(HeapBacking::new(REGION_BYTES).unwrap(), false);
    c.bench_function("region/allocate+free 4 blocks", |b| {
        b.iter(|| r.allocate(Request::new(4)).unwrap().free().unwrap())
    });
    let mut a = r.allocate(Request::new(4)).unwrap();
    c.bench_function("region/pin+unpin (shared)", |b| {
        b.iter(|| drop(a.pin().unwrap()))
    });
    c.bench_function("region/pin_mut+unpin", |b| {
        b.iter(|| drop(a.pin_mut().unwrap()))
    });
    c.bench_function("region/allocate, pin_mut, free, unpin", |b| {
        b.iter(|| {
            let mut a = r.allocate(Request::new(4)).unwrap();
            let dma = a.pin_mut().unwrap();
            a.free().unwrap(); // Deferred under the pin
            drop(dma); // now Free
        })
    });
    let mut out = [0u8; 4096];
    c.bench_function("region/write+read 4 KiB", |b| {
        b.iter(|| {
            a.write_at(0, &out).unwrap();
            a.read_at(0, &mut out).unwrap();
        })
    });
}

fn discards(c: &mut Criterion) {
    fn cycle<B: Backing>(c: &mut Criterion, name: &str, r: Region<B>) {
        c.bench_function(&format!("discard/allocate+free 4 blocks, {name}"), |b| {
            b.iter(|| {
                let mut a = r.allocate(Request::new(4)).unwrap();
                a.write_at(0, &[1; 64]).unwrap(); // touch the page, as a user would
                a.free().unwrap();
            })
        });
    }
    let dir = std::env::temp_dir().join(format!("pinalloc-bench-region-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    cycle(
        c,
        "heap (zeros)",
        region(HeapBacking::new(REGION_BYTES).unwrap(), true),
    );
    cycle(
        c,
        "anonymous mmap (madvise)",
        region(MmapBacking::anonymous(REGION_BYTES).unwrap(), true),
    );
    cycle(
        c,
        "file (punch hole)",
        region(
            FileBacking::open(dir.join("f"), REGION_BYTES).unwrap(),
            true,
        ),
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = baseline, handles, discards
}
criterion_main!(benches);
