//! User callbacks that call back into their allocator: pressure hooks and revoke
//! callbacks (leases), each calling every verb. The outer call must complete, and
//! succeed once the callback has let go; each callback runs a bounded number of times
//! (once, here); nothing recurses or deadlocks.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use pinalloc::SharedAllocError;
use pinalloc::{AllocError, Extent, PinOptions, Policy, Request, SharedAllocator};

/// What a callback does with its allocator before it lets go.
#[derive(Debug, Clone, Copy)]
enum Reentry {
    Allocate,
    AllocateWait,
    Free,
    Pin,
    Revoke,
    Commit,
}

const ALL: [Reentry; 6] = [
    Reentry::Allocate,
    Reentry::AllocateWait,
    Reentry::Free,
    Reentry::Pin,
    Reentry::Revoke,
    Reentry::Commit,
];

/// Blocks 0..8, allocated up front for a callback to free.
const SPARE: Extent = Extent::new(0, 8);
/// Blocks 8..64: the space the outer call needs, held until the callback lets go.
const HELD: Extent = Extent::new(8, 56);

/// A wait long enough that a call which waited for it is plain to see.
const LONG: Duration = Duration::from_secs(60);

/// Makes the call `what` from inside a callback. Everything is held here, so an
/// allocation must fail plainly, at once, without another pressure round.
fn reenter(a: &SharedAllocator, what: Reentry) {
    match what {
        Reentry::Allocate => {
            let got = a.allocate(Request::new(1).policy(Policy::Exact(HELD.start)));
            assert!(
                matches!(got, Err(SharedAllocError::Core(AllocError::NoSpace { .. }))),
                "{got:?}"
            );
        }
        Reentry::AllocateWait => {
            let t = Instant::now();
            let got = a.allocate_wait(Request::new(1).policy(Policy::Exact(HELD.start)), LONG);
            assert!(
                matches!(got, Err(SharedAllocError::Core(AllocError::NoSpace { .. }))),
                "{got:?}"
            );
            assert!(t.elapsed() < LONG / 2, "it waited inside a callback");
        }
        Reentry::Free => {
            a.free(SPARE).unwrap();
        }
        Reentry::Pin => {
            let before = a.pin_count(HELD.start);
            let pin = a.pin(HELD).unwrap();
            assert_eq!(a.pin_count(HELD.start), before + 1);
            drop(pin);
            assert_eq!(a.pin_count(HELD.start), before);
        }
        Reentry::Revoke => {
            // Every lease here has been asked already in this call: none again.
            let report = a.revoke(Extent::new(0, 64), Duration::ZERO);
            assert_eq!(report.asked, 0);
        }
        Reentry::Commit => {
            a.commit(a.epoch()).unwrap();
        }
    }
}

/// An allocator with `SPARE` Allocated and `HELD` Allocated.
fn fixture() -> Arc<SharedAllocator> {
    let a = Arc::new(SharedAllocator::builder(64).groups(1).build());
    assert_eq!(
        a.allocate(Request::new(8).policy(Policy::Exact(0)))
            .unwrap(),
        SPARE
    );
    assert_eq!(a.allocate(Request::new(56)).unwrap(), HELD);
    a
}

/// An outer call that can run callbacks under pressure.
type Outer = fn(&SharedAllocator) -> Result<Extent, SharedAllocError>;

/// The outer calls that can run callbacks under pressure.
fn outer_allocations() -> [(&'static str, Outer); 2] {
    [
        ("allocate", |a| a.allocate(Request::new(56))),
        ("allocate_wait", |a| a.allocate_wait(Request::new(56), LONG)),
    ]
}

/// Pins `HELD` as a lease whose callback makes the call `what`, then unpins; returns
/// how many times the callback has run.
fn lease_that_calls(a: &Arc<SharedAllocator>, what: Reentry) -> Arc<AtomicUsize> {
    let calls = Arc::new(AtomicUsize::new(0));
    let (weak, c): (Weak<SharedAllocator>, _) = (Arc::downgrade(a), Arc::clone(&calls));
    a.pin_owned(
        HELD,
        PinOptions::new().on_revoke(move |r| {
            c.fetch_add(1, Ordering::SeqCst);
            let a = weak.upgrade().unwrap();
            reenter(&a, what);
            a.unpin(r.id).unwrap();
        }),
    )
    .unwrap();
    calls
}

#[test]
fn a_lease_revoked_under_pressure_may_call_every_verb() {
    for what in ALL {
        for (outer, call) in outer_allocations() {
            let a = fixture();
            let calls = lease_that_calls(&a, what);
            assert_eq!(a.free(HELD).unwrap().deferred_blocks, 56);
            let got = call(&a).map(|e| e.len);
            assert_eq!(got, Ok(56), "{outer} with a lease that calls {what:?}");
            assert_eq!(calls.load(Ordering::SeqCst), 1, "{outer}, {what:?}");
            assert_eq!(a.stats().counters.pressure_calls, 1);
            a.check_invariants().unwrap();
        }
    }
}

#[test]
fn a_pressure_hook_may_call_every_verb() {
    for what in ALL {
        for (outer, call) in outer_allocations() {
            let a = fixture();
            a.commit(1).unwrap();
            a.free_on_commit(HELD).unwrap(); // Deferred until epoch 2 commits
            let calls = Arc::new(AtomicUsize::new(0));
            let (weak, c) = (Arc::downgrade(&a), Arc::clone(&calls));
            a.set_pressure_hook(move |_| {
                c.fetch_add(1, Ordering::SeqCst);
                let a = weak.upgrade().unwrap();
                reenter(&a, what);
                if a.epoch() == 2 {
                    a.commit(2).unwrap();
                }
            });
            let got = call(&a).map(|e| e.len);
            assert_eq!(got, Ok(56), "{outer} with a hook that calls {what:?}");
            assert_eq!(calls.load(Ordering::SeqCst), 1, "{outer}, {what:?}");
            a.clear_pressure_hook();
            a.check_invariants().unwrap();
        }
    }
}

#[test]
fn a_revoke_callback_may_call_every_verb_from_revoke() {
    for what in ALL {
        let a = fixture();
        let calls = lease_that_calls(&a, what);
        a.free(HELD).unwrap();
        let report = a.revoke(HELD, LONG);
        assert_eq!(report.asked, 1, "{what:?}");
        assert!(report.all_released(), "{what:?}");
        assert_eq!(calls.load(Ordering::SeqCst), 1, "{what:?}");
        assert_eq!(a.allocate(Request::new(56)).map(|e| e.len), Ok(56));
        a.check_invariants().unwrap();
    }
}

/// Two leases whose callbacks each revoke the other's range: each is asked once.
#[test]
fn leases_that_revoke_each_other_are_each_asked_once() {
    let a = Arc::new(SharedAllocator::builder(64).groups(1).build());
    let first = a.allocate(Request::new(32)).unwrap();
    let second = a.allocate(Request::new(32)).unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    for (mine, theirs) in [(first, second), (second, first)] {
        let (weak, c) = (Arc::downgrade(&a), Arc::clone(&calls));
        a.pin_owned(
            mine,
            PinOptions::new().on_revoke(move |r| {
                c.fetch_add(1, Ordering::SeqCst);
                let a = weak.upgrade().unwrap();
                a.revoke(theirs, Duration::ZERO);
                a.unpin(r.id).unwrap();
            }),
        )
        .unwrap();
    }
    a.free(first).unwrap();
    a.free(second).unwrap();
    assert_eq!(a.allocate(Request::new(64)), Ok(Extent::new(0, 64)));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    a.check_invariants().unwrap();
}

/// A hook that hands the allocation to another thread and waits for it: the other
/// thread's pressure round is bounded by the rounds allowed at once, so the chain ends.
#[test]
fn a_hook_that_allocates_from_another_thread_ends() {
    let a = fixture();
    a.free(SPARE).unwrap();
    let _held = a.pin(SPARE).unwrap().into_id(); // pinned Free: held, never released
    let calls = Arc::new(AtomicUsize::new(0));
    let (weak, c) = (Arc::downgrade(&a), Arc::clone(&calls));
    a.set_pressure_hook(move |_| {
        c.fetch_add(1, Ordering::SeqCst);
        let a = weak.upgrade().unwrap();
        std::thread::spawn(move || a.allocate(Request::new(8)))
            .join()
            .unwrap()
            .unwrap_err();
    });
    assert!(matches!(
        a.allocate(Request::new(8)),
        Err(SharedAllocError::Core(AllocError::NoSpace { .. }))
    ));
    let n = calls.load(Ordering::SeqCst);
    assert!((1..=64).contains(&n), "the hook ran {n} times");
    a.clear_pressure_hook();
    a.check_invariants().unwrap();
}

/// A pressure round runs the hook, then asks the leases. A hook that revokes the
/// lease itself shares the round's scope: the lease is asked once, not twice.
#[test]
fn a_hook_that_revokes_shares_the_round_with_it() {
    let a = fixture();
    let (hook_calls, lease_calls) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (weak, c) = (Arc::downgrade(&a), Arc::clone(&lease_calls));
    a.pin_owned(
        HELD,
        PinOptions::new().on_revoke(move |r| {
            c.fetch_add(1, Ordering::SeqCst);
            weak.upgrade().unwrap().unpin(r.id).unwrap();
        }),
    )
    .unwrap();
    a.free(HELD).unwrap();
    let (weak, c) = (Arc::downgrade(&a), Arc::clone(&hook_calls));
    a.set_pressure_hook(move |_| {
        c.fetch_add(1, Ordering::SeqCst);
        let report = weak.upgrade().unwrap().revoke(HELD, LONG);
        assert_eq!(report.asked, 1);
        assert!(report.all_released());
    });
    assert_eq!(a.allocate(Request::new(56)).map(|e| e.len), Ok(56));
    assert_eq!(hook_calls.load(Ordering::SeqCst), 1);
    assert_eq!(
        lease_calls.load(Ordering::SeqCst),
        1,
        "the round asked it again"
    );
    assert_eq!(a.stats().counters.revocations, 1);
    a.clear_pressure_hook();
    a.check_invariants().unwrap();
}

/// A lease's callback that hands a revoke of its own range to another thread and
/// waits for it: the other thread finds the lease being asked, does not call it
/// again, waits its timeout for it and reports it still pinned. The chain ends.
#[test]
fn a_revoke_handed_to_another_thread_does_not_ask_again() {
    let a = fixture();
    let calls = Arc::new(AtomicUsize::new(0));
    let (weak, c) = (Arc::downgrade(&a), Arc::clone(&calls));
    a.pin_owned(
        HELD,
        PinOptions::new().on_revoke(move |r| {
            c.fetch_add(1, Ordering::SeqCst);
            let a = weak.upgrade().unwrap();
            let b = Arc::clone(&a);
            let report = std::thread::spawn(move || b.revoke(HELD, Duration::from_millis(20)))
                .join()
                .unwrap();
            assert_eq!(
                report.asked, 0,
                "the lease was asked again from another thread"
            );
            assert_eq!(report.still_pinned, [(r.id, HELD)]);
            a.unpin(r.id).unwrap();
        }),
    )
    .unwrap();
    let report = a.revoke(HELD, LONG);
    assert_eq!((report.asked, report.all_released()), (1, true));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    a.check_invariants().unwrap();
}

/// A revoke from inside a lease's own callback does not ask it again, and does not
/// call it released: it is still pinned until its callback returns and unpins.
#[test]
fn a_nested_revoke_reports_its_caller_still_pinned() {
    let a = fixture();
    let (weak, seen) = (Arc::downgrade(&a), Arc::new(std::sync::Mutex::new(None)));
    let s = Arc::clone(&seen);
    a.pin_owned(
        HELD,
        PinOptions::new().on_revoke(move |r| {
            let a = weak.upgrade().unwrap();
            let t = Instant::now();
            let report = a.revoke(HELD, LONG);
            assert!(t.elapsed() < LONG / 2, "it waited for its own caller");
            *s.lock().unwrap() = Some((report, r.id));
            a.unpin(r.id).unwrap();
        }),
    )
    .unwrap();
    assert!(a.revoke(HELD, LONG).all_released());
    let (report, id) = seen.lock().unwrap().take().unwrap();
    assert_eq!(report.asked, 0);
    assert_eq!(report.still_pinned, [(id, HELD)]);
}

/// `allocate_wait` runs one pressure round per call: wake-ups that still leave the
/// request short retry without calling the hook again.
#[test]
fn allocate_wait_runs_one_pressure_round_per_call() {
    let a = fixture();
    let dma = a.pin(HELD).unwrap().into_id();
    a.free(HELD).unwrap(); // held by the pin: pressure applies
    let calls = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&calls);
    a.set_pressure_hook(move |_| {
        c.fetch_add(1, Ordering::SeqCst);
    });
    std::thread::scope(|s| {
        let waiter = s.spawn(|| a.allocate_wait(Request::new(56), LONG));
        while a.stats().counters.waits == 0 {
            std::thread::yield_now();
        }
        // Releases that wake the waiter but leave it short: 8 blocks at a time.
        for _ in 0..5 {
            let p = a.pin(Extent::new(0, 8)).unwrap();
            a.free(SPARE).unwrap();
            drop(p); // SPARE is Free now: a release
            assert_eq!(
                a.allocate(Request::new(8).policy(Policy::Exact(0))),
                Ok(SPARE)
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        a.free(SPARE).unwrap();
        a.unpin(dma).unwrap();
        assert_eq!(waiter.join().unwrap().map(|e| e.len), Ok(56));
    });
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    a.clear_pressure_hook();
    a.check_invariants().unwrap();
}

/// A lease on `block` whose callback only counts its calls (it never lets go).
fn counting_lease(a: &SharedAllocator, block: u64) -> Arc<AtomicUsize> {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&calls);
    let _ = a
        .pin_owned(
            Extent::new(block, 1),
            PinOptions::new().on_revoke(move |_| {
                c.fetch_add(1, Ordering::SeqCst);
            }),
        )
        .unwrap();
    calls
}

/// Runs `rounds` allocations of `request` that fail, and returns how many leases
/// each one's pressure round asked.
fn asks_per_round(a: &SharedAllocator, request: Request, rounds: usize) -> Vec<u64> {
    let mut before = a.stats().counters.revocations;
    (0..rounds)
        .map(|_| {
            assert!(a.allocate(request).is_err(), "nobody lets go");
            let now = a.stats().counters.revocations;
            let asked = now - before;
            before = now;
            asked
        })
        .collect()
}

/// A space of `n` blocks in one group, every block Allocated.
fn all_allocated(n: u64) -> SharedAllocator {
    let a = SharedAllocator::builder(n).groups(1).build();
    assert_eq!(a.allocate(Request::new(n)).unwrap(), Extent::new(0, n));
    a
}

#[test]
fn a_pressure_round_asks_only_leases_whose_release_could_let_it_fit() {
    let a = all_allocated(64);
    // Lease `walled` holds block 10 between Allocated blocks: its release gives 1 block.
    let walled = counting_lease(&a, 10);
    a.free(Extent::new(10, 1)).unwrap();
    // Lease `edge` holds block 30 beside Free blocks 31..34: its release gives 4.
    let edge = counting_lease(&a, 30);
    a.free(Extent::new(30, 4)).unwrap();
    // Leases `left` and `right` hold blocks 40 and 41 beside Free blocks 42..44: only
    // both releases together give 4.
    let left = counting_lease(&a, 40);
    let right = counting_lease(&a, 41);
    a.free(Extent::new(40, 4)).unwrap();
    assert!(a.allocate(Request::new(4)).is_err(), "nobody lets go");
    let asked = |c: &Arc<AtomicUsize>| c.load(Ordering::SeqCst);
    assert_eq!(asked(&walled), 0, "its release could not let 4 blocks fit");
    assert_eq!((asked(&edge), asked(&left), asked(&right)), (1, 1, 1));
    assert_eq!(a.stats().counters.revocations, 3);
    // No release gives 5 blocks: nobody is asked.
    assert!(a.allocate(Request::new(5)).is_err());
    assert_eq!(a.stats().counters.revocations, 3);
    a.check_invariants().unwrap();
}

#[test]
fn pressure_rounds_ask_a_bounded_number_and_take_turns() {
    // 200 leases, each on an even block whose odd neighbours are Free: any one
    // release lets 2 blocks fit. In one group, and across four (where the rounds go
    // on from group to group and around).
    for groups in [1, 4] {
        let n = 200;
        let a = SharedAllocator::builder(2 * n).groups(groups).build();
        let all = a.allocate_many(2 * n).unwrap();
        let leases: Vec<_> = (0..n).map(|i| counting_lease(&a, 2 * i)).collect();
        for e in all {
            a.free(e).unwrap();
        }
        let asked = asks_per_round(&a, Request::new(2), 4);
        assert_eq!(
            asked, [64; 4],
            "{groups} groups: each round asks at most 64"
        );
        // Four rounds of 64 reach all 200, none more than twice.
        let calls: Vec<usize> = leases.iter().map(|c| c.load(Ordering::SeqCst)).collect();
        assert!(
            calls.iter().all(|&c| (1..=2).contains(&c)),
            "{groups} groups: {calls:?}"
        );
        a.check_invariants().unwrap();
    }
}

#[test]
fn pressure_rounds_go_on_inside_a_span_and_among_one_range_s_leases() {
    let asked = |c: &[Arc<AtomicUsize>]| -> Vec<usize> {
        c.iter().map(|c| c.load(Ordering::SeqCst)).collect()
    };
    // 64 leases on block 10 fill a round; lease `b` on block 13 lies in the same
    // span (10..16, with Free blocks 11, 12, 14 and 15), which fits 6 blocks only
    // whole. The next round goes on inside the span and asks `b`.
    let a = all_allocated(64);
    let on_10: Vec<_> = (0..64).map(|_| counting_lease(&a, 10)).collect();
    let b = counting_lease(&a, 13);
    a.free(Extent::new(10, 6)).unwrap();
    assert!(a.allocate(Request::new(6)).is_err());
    assert!(asked(&on_10).iter().all(|&c| c == 1));
    assert_eq!(
        b.load(Ordering::SeqCst),
        0,
        "the round's 64 went to block 10"
    );
    assert!(a.allocate(Request::new(6)).is_err());
    assert_eq!(b.load(Ordering::SeqCst), 1, "the next round asks it");
    a.check_invariants().unwrap();

    // 200 leases on one block beside a Free block: each round asks the next 64 of
    // them, the fourth the last 8, and the fifth starts over.
    let a = all_allocated(64);
    let on_20: Vec<_> = (0..200).map(|_| counting_lease(&a, 20)).collect();
    a.free(Extent::new(20, 2)).unwrap();
    assert_eq!(asks_per_round(&a, Request::new(2), 4), [64, 64, 64, 8]);
    assert!(asked(&on_20).iter().all(|&c| c == 1), "each asked once");
    assert_eq!(
        asks_per_round(&a, Request::new(2), 1),
        [64],
        "and from the start"
    );
    a.check_invariants().unwrap();
}

#[test]
fn pressure_rounds_keep_asking_across_the_wrap_and_at_a_full_range() {
    let count = |c: &Arc<AtomicUsize>| c.load(Ordering::SeqCst);
    // Lease `a` on block 4 and 64 leases on block 6, in one span (4..10, with Free
    // blocks 5, 7, 8 and 9) that fits 6 blocks only whole. The rounds' cursor moves
    // into the span and the wrap-around pass cuts it; `a` is still asked every other
    // round or so, and no round asks more than 64.
    let a_ = all_allocated(64);
    let a = counting_lease(&a_, 4);
    let on_6: Vec<_> = (0..64).map(|_| counting_lease(&a_, 6)).collect();
    a_.free(Extent::new(4, 6)).unwrap();
    let asked = asks_per_round(&a_, Request::new(6), 6);
    assert!(asked.iter().all(|n| (1..=64).contains(n)), "{asked:?}");
    assert!(count(&a) >= 3, "a asked {} times in 6 rounds", count(&a));
    assert!(on_6.iter().all(|c| count(c) >= 3));
    a_.check_invariants().unwrap();

    // Exactly 64 leases on one block: every round asks all of them.
    let s = all_allocated(64);
    let _on_20: Vec<_> = (0..64).map(|_| counting_lease(&s, 20)).collect();
    s.free(Extent::new(20, 2)).unwrap();
    assert_eq!(asks_per_round(&s, Request::new(2), 3), [64; 3]);
}

// ---- revoke callbacks across groups --------------------------------------------

#[test]
fn a_guard_whose_pin_a_revoke_callback_released_drops_quietly() {
    let alloc = Arc::new(SharedAllocator::new(64));
    let a = Arc::clone(&alloc);
    let opts = PinOptions::new().on_revoke(move |r| {
        a.unpin(r.id).unwrap();
    });
    let e = Extent::new(0, 8);
    let guard = alloc.pin_with(e, opts.clone()).unwrap();
    assert!(alloc.revoke(e, Duration::from_secs(5)).all_released());
    assert_eq!(guard.unpin().released_blocks, 0);
    let guard = alloc.pin_with(e, opts).unwrap();
    assert!(alloc.revoke(e, Duration::from_secs(5)).all_released());
    drop(guard);
    assert_eq!(alloc.pin_count(0), 0);
    alloc.check_invariants().unwrap();
}

/// `revoke` asks exactly the leases that share a block with its range, oldest first,
/// as leases come and go: against a plain list of the live leases.
#[test]
fn revoke_asks_exactly_the_leases_over_its_range() {
    use std::sync::Mutex;
    let a = SharedAllocator::builder(4096).groups(4).build();
    let asked: Arc<Mutex<Vec<Extent>>> = Arc::default();
    // (made, id, extent): `made` counts pins in the order they were made.
    let mut live: Vec<(u32, pinalloc::SharedPinId, Extent)> = Vec::new();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    for round in 0..400 {
        if live.len() > 20 && next(3) == 0 {
            let (_, id, _) = live.swap_remove(next(live.len() as u64) as usize);
            a.unpin(id).unwrap();
        } else {
            let e = Extent::new(next(4000), 1 + next(90));
            let log = Arc::clone(&asked);
            let opts = PinOptions::new().on_revoke(move |r| log.lock().unwrap().push(r.extent));
            live.push((round, a.pin_owned(e, opts).unwrap(), e));
        }
        let r = Extent::new(next(4000), 1 + next(96)); // inside the space
        let mut want: Vec<(u32, pinalloc::SharedPinId, Extent)> = live
            .iter()
            .copied()
            .filter(|(_, _, e)| e.overlaps(&r))
            .collect();
        want.sort_by_key(|(made, _, _)| *made); // oldest first
        asked.lock().unwrap().clear();
        let report = a.revoke(r, Duration::ZERO);
        assert_eq!(report.asked, want.len(), "round {round}, {r}");
        let got = std::mem::take(&mut *asked.lock().unwrap());
        let want_extents: Vec<Extent> = want.iter().map(|(_, _, e)| *e).collect();
        assert_eq!(got, want_extents, "round {round}, {r}: asked, oldest first");
        let want_pinned: Vec<(pinalloc::SharedPinId, Extent)> =
            want.iter().map(|(_, id, e)| (*id, *e)).collect();
        assert_eq!(report.still_pinned, want_pinned, "round {round}, {r}");
    }
    a.check_invariants().unwrap();
}
