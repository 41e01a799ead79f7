//! How the time of one call grows with the size of the state: every public call of the
//! core, and the shared layer's global calls, on states holding 10^4, 10^5 and 10^6
//! free extents, pins, Deferred ranges, leases or groups, including the adversarial
//! shapes (nested pins on one block, a free or pin across many pins, alignments above
//! 64 in turn, many epochs). Prints, per call, the median time of one call (or of one
//! call and its inverse, which keeps the state steady) at each size, and the growth
//! from each size to the next. A logarithmic call grows by about 1.2x per tenfold; a
//! linear one by 10x.
//!
//! ```text
//! cargo bench --bench scaling
//! SCALING_SIZES=1000,10000 cargo bench --bench scaling      # smaller sizes
//! SCALING_ONLY=nested cargo bench --bench scaling           # rows whose name has it
//! SCALING_BUDGET_SECS=60 cargo bench --bench scaling        # allow slower setups
//! ```
//!
//! A size is skipped, and says so, when the smaller size's setup or calls predict more
//! than the budget (default 20 s per row and size): some shapes are quadratic to build
//! today.

use std::hint::black_box;
use std::time::{Duration, Instant};

use pinalloc::{
    Extent, ExtentAllocator, HeapBacking, PinMode, PinOptions, Policy, Region, Request,
    SharedAllocator,
};

/// The sizes, from `SCALING_SIZES` (comma-separated) or 10^4, 10^5, 10^6.
fn sizes() -> Vec<u64> {
    std::env::var("SCALING_SIZES")
        .ok()
        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![10_000, 100_000, 1_000_000])
}

fn budget() -> Duration {
    let secs = std::env::var("SCALING_BUDGET_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    Duration::from_secs(secs)
}

/// One measured call on a state of size `n`: `setup(n)` builds the state, `call`
/// runs one call (and its inverse) on it.
struct Row<S> {
    name: &'static str,
    setup: fn(u64) -> S,
    call: fn(&mut S, u64),
}

/// What one size gave: the median time of a call, or why it was skipped.
enum Cell {
    Time(Duration),
    Skipped(&'static str),
}

/// Times `row` at every size; skips a size the previous one predicts to be too slow
/// (setup assumed at worst quadratic, calls linear, in the size).
fn run<S>(row: &Row<S>) -> Vec<Cell> {
    let budget = budget();
    let mut out = Vec::new();
    let mut prev: Option<(u64, Duration, Duration)> = None; // size, setup, call
    for n in sizes() {
        if let Some((m, setup, call)) = prev {
            let r = n as f64 / m as f64;
            if setup.as_secs_f64() * r * r > budget.as_secs_f64() {
                out.push(Cell::Skipped("setup over budget"));
                continue;
            }
            if call.as_secs_f64() * r * 50.0 > budget.as_secs_f64() {
                out.push(Cell::Skipped("calls over budget"));
                continue;
            }
        }
        let t = Instant::now();
        let mut state = (row.setup)(n);
        let setup = t.elapsed();
        // A warm-up call (it may build a cache), then up to 201 timed calls or 2 s.
        (row.call)(&mut state, 0);
        let mut times = Vec::new();
        let started = Instant::now();
        for i in 1..=201 {
            let t = Instant::now();
            (row.call)(&mut state, i);
            times.push(t.elapsed());
            if started.elapsed() > Duration::from_secs(2) && times.len() >= 5 {
                break;
            }
        }
        times.sort_unstable();
        let median = times[times.len() / 2];
        drop(black_box(state));
        prev = Some((n, setup, median));
        out.push(Cell::Time(median));
    }
    out
}

fn show(d: Duration) -> String {
    let ns = d.as_secs_f64() * 1e9;
    if ns < 1e3 {
        format!("{ns:.0} ns")
    } else if ns < 1e6 {
        format!("{:.1} us", ns / 1e3)
    } else {
        format!("{:.1} ms", ns / 1e6)
    }
}

/// Runs and prints one row, if `SCALING_ONLY` selects it.
fn report<S>(row: Row<S>) {
    if let Ok(only) = std::env::var("SCALING_ONLY") {
        if !row.name.contains(only.as_str()) {
            return;
        }
    }
    let cells = run(&row);
    let mut line = format!("| {} |", row.name);
    for c in &cells {
        match c {
            Cell::Time(d) => line += &format!(" {} |", show(*d)),
            Cell::Skipped(why) => line += &format!(" skipped: {why} |"),
        }
    }
    for w in cells.windows(2) {
        match (&w[0], &w[1]) {
            (Cell::Time(a), Cell::Time(b)) => {
                line += &format!(" {:.1}x |", b.as_secs_f64() / a.as_secs_f64().max(1e-9));
            }
            _ => line += " - |",
        }
    }
    println!("{line}");
}

/// `n` free extents of 1 to 4 blocks (and one of 2048 at the end), each between
/// Allocated blocks: capacity about 3.5n.
fn fragmented(n: u64) -> ExtentAllocator {
    let mut free = Vec::with_capacity(n as usize + 1);
    let mut at = 0;
    for i in 0..n {
        let len = 1 + i % 4;
        free.push(Extent::new(at, len));
        at += len + 1;
    }
    free.push(Extent::new(at, 2048));
    ExtentAllocator::from_free_extents(at + 2048 + 8, free).unwrap()
}

/// `n` free extents of `a` blocks, each starting one block past a multiple of `a`.
fn misaligned(n: u64, a: u64) -> ExtentAllocator {
    let free = (0..n).map(|i| Extent::new(2 * a * i + 1, a));
    ExtentAllocator::from_free_extents(2 * a * n + 2 * a, free).unwrap()
}

/// A space with `n` one-block Allocated extents, each under its own pin, between
/// Free blocks; block `spare()` is Allocated and unpinned.
fn pinned(n: u64, mode: PinMode) -> ExtentAllocator {
    let mut a = ExtentAllocator::from_allocated_extents(
        2 * n + 16,
        (0..n)
            .map(|i| Extent::new(2 * i, 1))
            .chain([Extent::new(2 * n + 8, 1)]),
    )
    .unwrap();
    for i in 0..n {
        a.pin_with(Extent::new(2 * i, 1), mode).unwrap();
    }
    a
}

/// A 64-block space with `n` pins on block 5.
fn nested(n: u64) -> ExtentAllocator {
    let mut a = ExtentAllocator::new(64);
    for _ in 0..n {
        a.pin(Extent::new(5, 1)).unwrap();
    }
    a
}

fn spare(a: &ExtentAllocator) -> Extent {
    Extent::new(a.capacity_blocks() - 8, 1)
}

/// Allocates with `request` and frees what it got.
fn allocate_free(a: &mut ExtentAllocator, request: Request) {
    let e = a.allocate(request).unwrap();
    a.free(black_box(e)).unwrap();
}

fn core_rows() {
    // Free extents: placement under every policy and alignment.
    type Call = fn(&mut ExtentAllocator, u64);
    let rows: [(&'static str, Call); 11] = [
        ("allocate+free, best fit, n free extents", |a, _| {
            allocate_free(a, Request::new(3))
        }),
        ("allocate+free, first fit", |a, _| {
            allocate_free(a, Request::new(3).policy(Policy::FirstFit))
        }),
        ("allocate+free, near a goal", |a, i| {
            let goal = (i * 7919) % a.capacity_blocks();
            allocate_free(a, Request::new(3).policy(Policy::Near(goal)))
        }),
        ("allocate+free, exact", |a, _| {
            allocate_free(a, Request::new(1).policy(Policy::Exact(0)))
        }),
        ("allocate+free, best fit aligned to 8", |a, _| {
            allocate_free(a, Request::new(2).align(8))
        }),
        ("allocate+free, first fit aligned to 512", |a, _| {
            allocate_free(a, Request::new(8).align(512).policy(Policy::FirstFit))
        }),
        ("allocate+free, min..=max", |a, _| {
            allocate_free(a, Request::range(5..=100))
        }),
        ("allocate_many(70)+free", |a, _| {
            let got = a.allocate_many(70).unwrap();
            for e in got {
                a.free(e).unwrap();
            }
        }),
        ("free+allocate exact (coalescing three)", |a, _| {
            // Block 1 lies between the free extents [0, 1) and [2, 4).
            a.free(Extent::new(1, 1)).unwrap();
            a.allocate(Request::new(1).policy(Policy::Exact(1)))
                .unwrap();
        }),
        ("reserve(1)+unreserve", |a, _| {
            let r = a.reserve(1).unwrap();
            a.unreserve(r).unwrap();
        }),
        (
            "alignments 128..2048 in turn, failing, n free extents",
            |a, i| {
                // As long as the longest free extent, which starts unaligned: only a
                // search for the alignment tells that it fails.
                let align = 128 << (i % 5);
                if let Ok(e) = a.allocate(Request::new(2048).align(align)) {
                    a.free(e).unwrap();
                }
            },
        ),
    ];
    for (name, call) in rows {
        report(Row {
            name,
            setup: fragmented,
            call,
        });
    }
    // `runs`: a small window costs its own runs and a descent; the whole space costs
    // its runs, however many blocks they span.
    report(Row {
        name: "runs(a window of 64 blocks), n free extents",
        setup: fragmented,
        call: |a, i| {
            let s = (i * 997) % (a.capacity_blocks() - 64);
            black_box(a.runs(s..s + 64).count());
        },
    });
    report(Row {
        name: "runs(the whole space), n one-block allocations 2^20 apart in 2^60 blocks",
        setup: |n| {
            let allocated = (0..n).map(|i| Extent::new(i << 20, 1));
            ExtentAllocator::from_allocated_extents(1 << 60, allocated).unwrap()
        },
        call: |a, _| {
            black_box(a.runs(0..u64::MAX).count());
        },
    });
    // A refused aligned request in the fast form: n extents of `a` blocks, each one
    // block past a multiple of `a`, so none holds `a` blocks aligned to `a`. Up to 64
    // the residues of the starts decide it; above, each such extent is looked at.
    report(Row {
        name: "aligned request that cannot fit, n misaligned extents as long as it, fast form",
        setup: |n| misaligned(n, 64),
        call: |a, _| {
            assert!(a.allocate(Request::new(64).align(64)).is_err());
        },
    });
    report(Row {
        name: "aligned to 128, cannot fit, n misaligned extents as long as it, fast form",
        setup: |n| misaligned(n, 128),
        call: |a, _| {
            assert!(a.allocate(Request::new(128).align(128)).is_err());
        },
    });
    // Failing requests that rule out none of the others: at alignment 2^k, one block
    // more than the 4096-block extents give (4096 - (2^k - 1)). Each is learned once
    // (in the fast form, by looking at every extent) and known from then on.
    report(Row {
        name: "alignments 128..4096 in turn, each failing by one block, fast form",
        setup: |n| misaligned(n, 4096),
        call: |a, i| {
            let align = 128u64 << (i % 6);
            let need = 4096 - (align - 1) + 1;
            assert!(a.allocate(Request::new(need).align(align)).is_err());
        },
    });
    // Requests that succeed, cycling through more alignments than any fixed number of
    // kept views: each alignment's view stays while it is used.
    report(Row {
        name: "alignments 128..4096 in turn, each placed, ordered form",
        setup: |n| {
            let mut a = misaligned(n, 4096);
            let e = a
                .allocate(Request::new(1).policy(Policy::FirstFit))
                .unwrap();
            a.free(e).unwrap();
            a
        },
        call: |a, i| {
            let align = 128u64 << (i % 6);
            let e = a.allocate(Request::new(1).align(align)).unwrap();
            a.free(e).unwrap();
        },
    });
    // The same, once the free index is in its ordered form (which the first first-fit,
    // near-goal or aligned request that can succeed moves it to).
    report(Row {
        name: "alignments 128..2048 in turn, failing, n free extents, ordered form",
        setup: |n| {
            let mut a = fragmented(n);
            let e = a
                .allocate(Request::new(1).policy(Policy::FirstFit))
                .unwrap();
            a.free(e).unwrap();
            a
        },
        call: |a, i| {
            let align = 128 << (i % 5);
            if let Ok(e) = a.allocate(Request::new(2048).align(align)) {
                a.free(e).unwrap();
            }
        },
    });

    // Pins.
    report(Row {
        name: "pin+unpin of an Allocated block, n other pins",
        setup: |n| pinned(n, PinMode::Deferring),
        call: |a, _| {
            let id = a.pin(spare(a)).unwrap();
            a.unpin(black_box(id)).unwrap();
        },
    });
    report(Row {
        name: "free+allocate exact of an unpinned block, n pins",
        setup: |n| pinned(n, PinMode::Deferring),
        call: |a, _| {
            let e = spare(a);
            a.free(e).unwrap();
            a.allocate(Request::new(1).policy(Policy::Exact(e.start)))
                .unwrap();
        },
    });
    report(Row {
        name: "pin+unpin over an Allocated range holding n small pins",
        setup: |n| {
            let cap = 2 * n + 16;
            let mut a =
                ExtentAllocator::from_allocated_extents(cap, [Extent::new(0, cap)]).unwrap();
            for i in 0..n {
                a.pin(Extent::new(2 * i, 1)).unwrap();
            }
            a
        },
        call: |a, _| {
            let id = a.pin(Extent::new(0, a.capacity_blocks() - 16)).unwrap();
            a.unpin(black_box(id)).unwrap();
        },
    });
    // Pinning Free blocks takes each free extent out of the free index, and the unpin
    // puts each back: O(n) by what the call changes, not by the pins.
    report(Row {
        name: "pin+unpin over a range holding n small pins and n free extents",
        setup: |n| pinned(n, PinMode::Deferring),
        call: |a, _| {
            let id = a.pin(Extent::new(0, a.capacity_blocks() - 16)).unwrap();
            a.unpin(black_box(id)).unwrap();
        },
    });
    report(Row {
        name: "free refused as Busy over n blocking pins",
        setup: |n| {
            let mut a = ExtentAllocator::from_allocated_extents(2 * n + 8, [Extent::new(0, 2 * n)])
                .unwrap();
            for i in 0..n {
                a.pin_with(Extent::new(2 * i, 1), PinMode::Blocking)
                    .unwrap();
            }
            a
        },
        call: |a, _| {
            let all = Extent::new(0, a.capacity_blocks() - 8);
            black_box(a.free(all)).unwrap_err();
        },
    });
    report(Row {
        name: "nested: pin+unpin of a block n pins cover",
        setup: nested,
        call: |a, _| {
            let id = a.pin(Extent::new(5, 1)).unwrap();
            a.unpin(black_box(id)).unwrap();
        },
    });
    report(Row {
        name: "Region: pin guard + drop on an allocation n guards hold",
        setup: |n| {
            let region = Region::new(HeapBacking::new(1 << 16).unwrap(), 4096).unwrap();
            let a = region.allocate(Request::new(1)).unwrap();
            let guards: Vec<_> = (0..n).map(|_| a.pin().unwrap()).collect();
            (region, a, guards)
        },
        call: |(_, a, _), _| {
            drop(black_box(a.pin().unwrap()));
        },
    });
    report(Row {
        name: "nested: pin_count of a block n pins cover",
        setup: nested,
        call: |a, _| {
            black_box(a.pin_count(5));
        },
    });

    // Epochs and readers.
    report(Row {
        name: "begin_read+end_read, n frees pending in the open epoch",
        setup: |n| {
            let mut a = ExtentAllocator::new(2 * n + 8);
            let all: Vec<Extent> = (0..n)
                .map(|_| a.allocate(Request::new(1)).unwrap())
                .collect();
            a.allocate(Request::new(1)).unwrap();
            a.commit(1).unwrap();
            for e in all.into_iter().step_by(2) {
                a.free_on_commit(e).unwrap();
            }
            a
        },
        call: |a, _| {
            let r = a.begin_read();
            a.end_read(black_box(r)).unwrap();
        },
    });
    report(Row {
        name: "failing allocate, n epochs holding Deferred blocks",
        setup: |n| {
            let mut a = ExtentAllocator::new(2 * n);
            let all: Vec<Extent> = (0..2 * n)
                .map(|_| a.allocate(Request::new(1)).unwrap())
                .collect();
            a.begin_read(); // holds every later free
            for e in all.into_iter().step_by(2) {
                a.free(e).unwrap();
                let open = a.epoch();
                a.commit(open).unwrap();
            }
            a
        },
        call: |a, _| {
            black_box(a.allocate(Request::new(2))).unwrap_err();
        },
    });
    report(Row {
        name: "commit, n Deferred ranges held by a reader",
        setup: |n| {
            let mut a = ExtentAllocator::new(2 * n + 8);
            let all: Vec<Extent> = (0..2 * n)
                .map(|_| a.allocate(Request::new(1)).unwrap())
                .collect();
            a.begin_read();
            for e in all.into_iter().step_by(2) {
                a.free(e).unwrap();
            }
            a
        },
        call: |a, _| {
            let open = a.epoch();
            a.commit(black_box(open)).unwrap();
        },
    });
}

/// A 64-group shared allocator with `n` one-block pins made with `options`, on every
/// other block from 0.
fn tracked(n: u64, options: PinOptions) -> SharedAllocator {
    let a = SharedAllocator::builder(2 * n + 64).groups(64).build();
    for i in 0..n {
        let _ = a.pin_owned(Extent::new(2 * i, 1), options.clone()).unwrap();
    }
    a
}

/// The shared layer's calls that visit every lease, group or pending free.
fn shared_rows() {
    report(Row {
        name: "shared stats(), n tracked pins",
        setup: |n| tracked(n, PinOptions::new().owner(1)),
        call: |a, _| {
            black_box(a.stats());
        },
    });
    report(Row {
        name: "shared revoke of one block, n leases elsewhere",
        setup: |n| tracked(n, PinOptions::new().on_revoke(|_| {})),
        call: |a, _| {
            let last = a.capacity_blocks() - 1;
            black_box(a.revoke(Extent::new(last, 1), Duration::ZERO));
        },
    });
    report(Row {
        name: "shared failing allocate under pressure, n leases holding space",
        setup: |n| {
            let a = SharedAllocator::builder(2 * n).groups(1).build();
            let all = a.allocate_many(2 * n).unwrap();
            for e in &all {
                for b in (e.start..e.start + e.len).step_by(2) {
                    let _ = a
                        .pin_owned(Extent::new(b, 1), PinOptions::new().on_revoke(|_| {}))
                        .unwrap();
                }
                a.free(*e).unwrap();
            }
            a
        },
        call: |a, _| {
            black_box(a.allocate(Request::new(2))).unwrap_err();
        },
    });
    report(Row {
        name: "shared failing allocate, n/16 groups",
        setup: |n| {
            let a = SharedAllocator::builder(u64::MAX).groups(n / 16).build();
            // A block taken from the middle of every group: a request for more than
            // half a group fits nowhere.
            let size = a.group_blocks();
            for g in 0..n / 16 {
                let middle = g * size + size / 2;
                a.allocate(Request::new(1).policy(Policy::Exact(middle)))
                    .unwrap();
            }
            a
        },
        call: |a, _| {
            let half = a.group_blocks() / 2;
            black_box(a.allocate(Request::new(half + 1))).unwrap_err();
        },
    });
    report(Row {
        name: "shared stats(), n/16 groups",
        setup: |n| SharedAllocator::builder(u64::MAX).groups(n / 16).build(),
        call: |a, _| {
            black_box(a.stats());
        },
    });
    report(Row {
        name: "shared begin_read+end_read, n frees pending",
        setup: |n| {
            let a = SharedAllocator::builder(2 * n + 64).groups(64).build();
            let all = a.allocate_many(2 * n).unwrap();
            a.commit(1).unwrap();
            for e in all {
                for b in (e.start..e.start + e.len).step_by(2) {
                    a.free_on_commit(Extent::new(b, 1)).unwrap();
                }
            }
            a
        },
        call: |a, _| {
            let r = a.begin_read();
            a.end_read(black_box(r)).unwrap();
        },
    });
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is read from the command line.
    let sizes = sizes();
    let mut head = String::from("| call |");
    for n in &sizes {
        head += &format!(" n = {n} |");
    }
    for w in sizes.windows(2) {
        head += &format!(" {} -> {} |", w[0], w[1]);
    }
    println!("{head}");
    println!("|{}", "---|".repeat(2 * sizes.len()));
    core_rows();
    shared_rows();
}
