//! Interleaving checks of the races that matter, under shuttle, which runs each test
//! body many times with a different thread schedule each time (random, and PCT, which
//! finds bugs that need a few specific preemptions).
//!
//! Run with: `RUSTFLAGS="--cfg shuttle" cargo test --test interleave`. That build
//! swaps every lock and atomic of the crate's `sync` module for shuttle's. Under
//! shuttle, time never passes, so a wait ends only when it is woken: a lost wake-up
//! is a deadlock, which shuttle reports with the schedule that caused it.
//! `SHUTTLE_ITERATIONS` sets the schedules per test and scheduler (default 2,000).
#![cfg(shuttle)]

use std::sync::Arc;
use std::time::Duration;

use pinalloc::{
    AllocError, BlockState, Extent, FreeError, PinOptions, Policy, Request, SharedAllocError,
    SharedAllocator, SharedFreeError,
};
use shuttle::thread;

/// Far enough that no wait times out: under shuttle only a wake-up ends it.
const FOREVER: Duration = Duration::from_secs(3600);

fn explore(body: impl Fn() + Send + Sync + 'static) {
    let iterations = std::env::var("SHUTTLE_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    let body = Arc::new(body);
    let b = Arc::clone(&body);
    // Debug builds keep every by-value move of an allocator (a few KiB, with the free
    // index's per-length lists) in its own stack slot: shuttle's default of 60 KiB
    // per thread overflowed; 128 KiB sufficed when this was set.
    let mut config = shuttle::Config::new();
    config.stack_size = 1 << 18;
    shuttle::Runner::new(
        shuttle::scheduler::RandomScheduler::new(iterations),
        config.clone(),
    )
    .run(move || b());
    shuttle::Runner::new(shuttle::scheduler::PctScheduler::new(3, iterations), config)
        .run(move || body());
}

/// Two groups of 8 blocks, so some extents span a boundary.
fn small() -> Arc<SharedAllocator> {
    Arc::new(SharedAllocator::builder(16).groups(2).build())
}

/// As [`small`], with `e` Allocated at mount: the way an extent comes to span groups.
fn mounted(e: Extent) -> Arc<SharedAllocator> {
    Arc::new(
        SharedAllocator::builder(16)
            .groups(2)
            .from_allocated_extents([e])
            .unwrap(),
    )
}

fn settled(alloc: &SharedAllocator) {
    alloc.check_invariants().unwrap();
    let s = alloc.stats();
    assert_eq!(s.space.deferred_blocks, 0, "{s:?}");
    assert_eq!(s.space.live_pins, 0, "{s:?}");
}

#[test]
fn free_racing_unpin() {
    explore(|| {
        let e = Extent::new(5, 6);
        let alloc = mounted(e);
        let pin = alloc.pin(e).unwrap().into_id();
        let a = Arc::clone(&alloc);
        let freer = thread::spawn(move || a.free(e).unwrap());
        let b = Arc::clone(&alloc);
        let unpinner = thread::spawn(move || b.unpin(pin).unwrap());
        let freed = freer.join().unwrap();
        let released = unpinner.join().unwrap();
        // Either the free came first (all deferred, then released by the unpin) or
        // the unpin did (all freed at once, nothing released).
        assert_eq!(freed.freed_blocks + freed.deferred_blocks, 6);
        assert_eq!(released.released_blocks, freed.deferred_blocks);
        assert!(freed.deferred_blocks == 0 || freed.deferred_blocks == 6);
        assert_eq!(alloc.free_extents(), [Extent::new(0, 16)]);
        settled(&alloc);
    });
}

#[test]
fn pin_racing_free_never_hands_out_a_pinned_block() {
    explore(|| {
        let e = Extent::new(6, 4);
        let alloc = mounted(e);
        let a = Arc::clone(&alloc);
        let pinner = thread::spawn(move || a.pin(e).unwrap().into_id());
        let b = Arc::clone(&alloc);
        let freer = thread::spawn(move || b.free(e).unwrap());
        let c = Arc::clone(&alloc);
        let taker = thread::spawn(move || c.allocate(Request::new(4)).ok());
        let id = pinner.join().unwrap();
        let freed = freer.join().unwrap();
        let taken = taker.join().unwrap();
        if let Some(t) = taken {
            let overlaps = t.start < e.start + e.len && e.start < t.start + t.len;
            // Taking the blocks is only fine if the free and the take both came
            // before the pin, and then the pin covers the taken blocks Allocated.
            // (The take may overlap only the part of `e` in the other group, and
            // the rest be Free under the pin.)
            if overlaps {
                assert_eq!(freed.deferred_blocks, 0);
                let both = t.start.max(e.start)..(t.start + t.len).min(e.start + e.len);
                for b in both {
                    assert_eq!(alloc.state_of(b), Some(BlockState::Allocated));
                }
            }
            alloc.unpin(id).unwrap();
            alloc.free(t).unwrap();
        } else {
            alloc.unpin(id).unwrap();
        }
        assert_eq!(alloc.free_extents(), [Extent::new(0, 16)]);
        settled(&alloc);
    });
}

/// A revoke waits for its lease to be unpinned; the holder unpins from another thread
/// (its callback only asks). The wait ends in every schedule.
#[test]
fn revoke_racing_the_unpin_it_waits_for_is_never_lost() {
    explore(|| {
        let alloc = small();
        let e = alloc.allocate(Request::new(8)).unwrap();
        let lease = alloc
            .pin_owned(e, PinOptions::new().on_revoke(|_| {}))
            .unwrap();
        let a = Arc::clone(&alloc);
        let waiter = thread::spawn(move || a.revoke(e, FOREVER));
        let b = Arc::clone(&alloc);
        let releaser = thread::spawn(move || b.unpin(lease).unwrap());
        releaser.join().unwrap();
        let report = waiter.join().unwrap();
        // Asked, unless the unpin came first.
        assert!(report.asked <= 1);
        assert!(report.all_released());
        alloc.free(e).unwrap();
        settled(&alloc);
    });
}

/// A full space whose only way out is an unpin that another thread makes:
/// `allocate_wait` finds the space in every schedule, by the plain path or, `near` a
/// goal, trying the groups one by one.
fn allocate_wait_racing_the_release(near: bool) {
    explore(move || {
        let alloc = small();
        let e = alloc.allocate(Request::new(8)).unwrap();
        let other = alloc.allocate(Request::new(8)).unwrap();
        let pin = alloc.pin(e).unwrap().into_id();
        alloc.free(e).unwrap(); // Deferred under the pin; the space is full
        let a = Arc::clone(&alloc);
        let mut request = Request::new(8);
        if near {
            request = request.policy(Policy::Near(other.start));
        }
        let waiter = thread::spawn(move || a.allocate_wait(request, FOREVER));
        let b = Arc::clone(&alloc);
        let releaser = thread::spawn(move || b.unpin(pin).unwrap());
        releaser.join().unwrap();
        assert_eq!(waiter.join().unwrap(), Ok(e));
        alloc.free(e).unwrap();
        alloc.free(other).unwrap();
        settled(&alloc);
    });
}

#[test]
fn allocate_wait_racing_a_release_is_never_lost() {
    allocate_wait_racing_the_release(false);
}

#[test]
fn allocate_wait_near_a_goal_racing_a_release_is_never_lost() {
    allocate_wait_racing_the_release(true);
}

#[test]
fn wait_released_racing_an_unpin_is_never_lost() {
    explore(|| {
        let e = Extent::new(3, 10); // spans both groups
        let alloc = mounted(e);
        let pin = alloc.pin(e).unwrap().into_id();
        alloc.free(e).unwrap();
        let a = Arc::clone(&alloc);
        let waiter = thread::spawn(move || a.wait_released(e, FOREVER));
        let b = Arc::clone(&alloc);
        let releaser = thread::spawn(move || b.unpin(pin).unwrap());
        releaser.join().unwrap();
        assert_eq!(waiter.join().unwrap(), Ok(()));
        settled(&alloc);
    });
}

/// A truncate waits for its DMA pin; the pin goes, and another file gets the same
/// blocks, pins them and frees them: Deferred again, by a hold the wait never saw.
/// The wait must end once the DMA's hold is gone, in every schedule. (A wait that
/// only looked at whether the blocks are Deferred sleeps forever in the schedules
/// where it wakes after the second free: shuttle reports that as a deadlock.)
#[test]
fn wait_released_ends_when_its_holds_go_not_when_the_blocks_are_free() {
    explore(|| {
        let e = Extent::new(3, 10); // spans both groups
        let alloc = mounted(e);
        let dma = alloc.pin(e).unwrap().into_id();
        alloc.free(e).unwrap(); // the truncate: Deferred under the DMA
        let a = Arc::clone(&alloc);
        let waiter = thread::spawn(move || a.wait_released(e, FOREVER));
        // Only once the waiter is asleep (it took its mark before that).
        while alloc.stats().counters.waits == 0 {
            thread::yield_now();
        }
        alloc.unpin(dma).unwrap(); // the DMA is done
        let b = Arc::clone(&alloc);
        let other_file = thread::spawn(move || {
            let pieces = [Extent::new(3, 5), Extent::new(8, 5)]; // one per group
            let mut pins = Vec::new();
            for p in pieces {
                let got = b.allocate(Request::new(p.len).policy(pinalloc::Policy::Exact(p.start)));
                assert_eq!(got, Ok(p));
                pins.push(b.pin(p).unwrap().into_id());
                b.free(p).unwrap(); // Deferred again, by the other file's pin
            }
            pins
        });
        let pins = other_file.join().unwrap();
        assert_eq!(waiter.join().unwrap(), Ok(()));
        for id in pins {
            alloc.unpin(id).unwrap();
        }
        settled(&alloc);
    });
}

#[test]
fn two_frees_of_the_same_extent_one_wins() {
    explore(|| {
        let e = Extent::new(3, 10);
        let alloc = mounted(e);
        let frees: Vec<_> = (0..2)
            .map(|_| {
                let a = Arc::clone(&alloc);
                thread::spawn(move || a.free(e))
            })
            .collect();
        let results: Vec<_> = frees.into_iter().map(|t| t.join().unwrap()).collect();
        let wins = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(wins, 1, "{results:?}");
        for r in results.iter().filter(|r| r.is_err()) {
            assert_eq!(
                r,
                &Err(SharedFreeError::Core(FreeError::NotAllocated {
                    extent: e,
                    offending: e
                }))
            );
        }
        settled(&alloc);
        assert_eq!(alloc.free_extents(), [Extent::new(0, 16)]);
    });
}

#[test]
fn commit_racing_frees_on_commit_lands_each_wholly_on_one_side() {
    explore(|| {
        let e = Extent::new(3, 10); // spans both groups
        let alloc = mounted(e);
        alloc.commit(1).unwrap();
        let a = Arc::clone(&alloc);
        let freer = thread::spawn(move || a.free_on_commit(e).unwrap());
        let b = Arc::clone(&alloc);
        let committer = thread::spawn(move || b.commit(2).unwrap());
        let freed = freer.join().unwrap();
        let committed = committer.join().unwrap();
        assert_eq!(
            freed.deferred_blocks, 10,
            "durable blocks wait for a commit"
        );
        // The commit released all ten (the free came first) or none (it came after).
        assert!(committed.released_blocks == 0 || committed.released_blocks == 10);
        let left = alloc.stats().space.deferred_blocks;
        assert_eq!(left, 10 - committed.released_blocks);
        alloc.commit(3).unwrap();
        settled(&alloc);
    });
}

#[test]
fn allocations_racing_never_share_a_block() {
    explore(|| {
        let alloc = small();
        let takers: Vec<_> = (0..3)
            .map(|_| {
                let a = Arc::clone(&alloc);
                thread::spawn(move || a.allocate(Request::new(5)))
            })
            .collect();
        let got: Vec<Extent> = takers
            .into_iter()
            .map(|t| t.join().unwrap())
            .filter_map(|r| match r {
                Ok(e) => Some(e),
                Err(SharedAllocError::Core(AllocError::NoSpace { .. })) => None,
                Err(other) => panic!("{other}"),
            })
            .collect();
        for (i, x) in got.iter().enumerate() {
            for y in &got[i + 1..] {
                assert!(
                    x.start + x.len <= y.start || y.start + y.len <= x.start,
                    "{x} and {y}"
                );
            }
        }
        for e in got {
            alloc.free(e).unwrap();
        }
        settled(&alloc);
    });
}

/// An async waiter racing the free that makes room, and a second waiter dropped
/// meanwhile: under shuttle a lost wake-up leaves `block_on` parked forever, a
/// deadlock shuttle reports.
#[test]
fn async_allocate_racing_a_free_and_a_cancelled_waiter_loses_no_wake_up() {
    explore(|| {
        let alloc = Arc::new(SharedAllocator::builder(8).groups(1).build());
        let all = alloc.allocate(Request::new(8)).unwrap();
        let releaser = {
            let alloc = Arc::clone(&alloc);
            thread::spawn(move || alloc.free(all).unwrap())
        };
        let canceller = {
            let alloc = Arc::clone(&alloc);
            thread::spawn(move || {
                let mut gone = Box::pin(alloc.allocate_when_fits(Request::new(8)));
                let waker = std::task::Waker::noop();
                let polled = gone
                    .as_mut()
                    .poll(&mut std::task::Context::from_waker(waker));
                drop(gone); // cancelled, registered or not
                if let std::task::Poll::Ready(got) = polled {
                    alloc.free(got.unwrap()).unwrap(); // it came first: give it back
                }
            })
        };
        let got = shuttle::future::block_on(alloc.allocate_when_fits(Request::new(4)));
        let e = got.unwrap();
        releaser.join().unwrap();
        canceller.join().unwrap();
        alloc.free(e).unwrap();
        settled(&alloc);
    });
}

/// A region of 8 blocks of 8 bytes, every byte non-zero, in one allocation.
fn region_filled() -> (
    pinalloc::Region<pinalloc::HeapBacking>,
    pinalloc::Allocation<pinalloc::HeapBacking>,
) {
    let heap = pinalloc::HeapBacking::new(64).unwrap();
    let region = pinalloc::Region::builder(heap, 8)
        .groups(1)
        .build()
        .unwrap();
    let mut a = region.allocate(Request::new(8)).unwrap();
    a.as_mut_slice().unwrap().fill(0xEE);
    (region, a)
}

/// Every byte Free and discarded exactly once, and the invariants hold.
fn region_settled(region: &pinalloc::Region<pinalloc::HeapBacking>) {
    region.check_invariants().unwrap();
    let s = region.stats();
    assert_eq!(s.space.free_blocks, 8, "{s:?}");
    assert_eq!(
        s.discarded_bytes, 64,
        "each byte discarded exactly once: {s:?}"
    );
    let all = region.allocate(Request::new(8)).unwrap();
    assert_eq!(all.as_slice().unwrap(), [0; 64]);
}

#[test]
fn region_truncate_and_free_racing_two_lends_leaving() {
    explore(|| {
        let (region, mut a) = region_filled();
        let p = a.pin().unwrap();
        let q = p.try_clone().unwrap();
        let owner = thread::spawn(move || {
            a.truncate(3).unwrap();
            drop(a); // frees the rest
        });
        let readers: Vec<_> = [p, q]
            .into_iter()
            .map(|pin| {
                thread::spawn(move || {
                    // Whatever the owner did, the pinned bytes are untouched until we go.
                    assert!(pin.as_slice().iter().all(|&b| b == 0xEE));
                    drop(pin);
                })
            })
            .collect();
        owner.join().unwrap();
        for r in readers {
            r.join().unwrap();
        }
        region_settled(&region);
    });
}

/// A free on commit, a commit and two lends leaving, in every order: the lends read
/// their bytes untouched, and the bytes are discarded once, by whoever lets the
/// blocks go last (the commit's sweep or the last lend), never before the commit.
#[test]
fn region_free_on_commit_racing_a_commit_and_two_lends_leaving() {
    explore(|| {
        let (region, a) = region_filled();
        region.commit(1).unwrap(); // `a` is on disk: its free on commit waits
        let p = a.pin().unwrap();
        let q = p.try_clone().unwrap();
        let committer = region.clone();
        let owner = thread::spawn(move || a.free_on_commit().unwrap());
        let commit = thread::spawn(move || {
            committer.commit(2).unwrap();
        });
        let readers: Vec<_> = [p, q]
            .into_iter()
            .map(|pin| {
                thread::spawn(move || {
                    assert!(pin.as_slice().iter().all(|&b| b == 0xEE));
                    drop(pin);
                })
            })
            .collect();
        owner.join().unwrap();
        commit.join().unwrap();
        for r in readers {
            r.join().unwrap();
        }
        // A free after the commit is in epoch 3.
        region.commit(region.epoch()).unwrap();
        region_settled(&region);
    });
}

/// An abort racing a free on commit and a lend leaving: either the abort came first
/// (the free waits for the next commit) or it gave the blocks back, detached once
/// the lend has gone, with their bytes; nothing is discarded meanwhile.
#[test]
fn region_abort_racing_a_free_on_commit_and_a_lend_leaving() {
    explore(|| {
        let (region, a) = region_filled();
        region.commit(1).unwrap();
        let p = a.pin().unwrap();
        let aborter = region.clone();
        let owner = thread::spawn(move || a.free_on_commit().unwrap());
        let abort = thread::spawn(move || aborter.abort(2).unwrap().restored_blocks);
        let reader = thread::spawn(move || {
            assert!(p.as_slice().iter().all(|&b| b == 0xEE));
            drop(p);
        });
        owner.join().unwrap();
        let restored = abort.join().unwrap();
        reader.join().unwrap();
        assert_eq!(region.stats().discards, 0);
        if restored == 8 {
            let back = region.attach(pinalloc::Extent::new(0, 8)).unwrap();
            assert!(back.as_slice().unwrap().iter().all(|&b| b == 0xEE));
            drop(back);
        } else {
            assert_eq!(restored, 0);
            region.commit(2).unwrap();
        }
        region_settled(&region);
    });
}

/// A free and a lend leaving while a reader lives, racing the reader's end: the
/// blocks go behind a gate, and whichever comes last lets them go, discarded once.
#[test]
fn region_free_and_a_lend_leaving_racing_a_reader_ending() {
    explore(|| {
        let (region, mut a) = region_filled();
        region.commit(1).unwrap();
        let p = a.pin().unwrap();
        let reader = region.read();
        let owner = thread::spawn(move || {
            a.truncate(4).unwrap(); // the tail is the lend's alone
            drop(a);
        });
        let device = thread::spawn(move || {
            assert!(p.as_slice().iter().all(|&b| b == 0xEE));
            drop(p);
        });
        let ending = thread::spawn(move || drop(reader));
        owner.join().unwrap();
        device.join().unwrap();
        ending.join().unwrap();
        region_settled(&region);
    });
}

#[test]
fn region_device_write_racing_free_and_reallocation() {
    explore(|| {
        let (region, mut a) = region_filled();
        let mut dma = a.pin_mut().unwrap();
        let device = thread::spawn(move || {
            dma.as_mut_slice().fill(0xD0);
            thread::yield_now();
            assert!(
                dma.as_slice().iter().all(|&b| b == 0xD0),
                "the device's bytes changed"
            );
        });
        a.free().unwrap();
        // Allocations succeed only once the device is done; each owns its bytes.
        if let Ok(mut b) = region.allocate(Request::new(2)) {
            b.as_mut_slice().unwrap().fill(0xB0);
            thread::yield_now(); // a discard of b's bytes would land here
            assert!(b.as_slice().unwrap().iter().all(|&x| x == 0xB0));
        }
        device.join().unwrap();
        let s = region.stats();
        assert_eq!(s.space.free_blocks, 8, "{s:?}");
        region.check_invariants().unwrap();
    });
}
