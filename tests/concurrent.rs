//! `SharedAllocator` under many threads, checked by a shadow-ownership oracle, and its
//! waiting, pressure, lease and limit behaviour.
//!
//! The oracle: one atomic owner word per block, claimed by compare-and-swap *after*
//! `allocate` returns (a second claim would be a double hand-out) and cleared *before*
//! `free`; and a shadow pin count per block, raised after `pin` returns and lowered
//! before `unpin` (an allocation returning a block whose shadow pin was up for the
//! whole call is a failure; see [`Shadow`]).
//!
//! `STRESS_OPS` sets the operations per thread (default 4,000); `STRESS_THREADS` the
//! threads (default 6).

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use pinalloc::SharedAllocError;
use pinalloc::testing::SplitMix;
use pinalloc::{
    AllocError, Extent, ExtentError, FreeError, LimitError, PinError, PinMode, PinOptions, Policy,
    ReaderId, Request, SharedAllocator, SharedFreeError, SharedPinError, SharedPinId, WaitError,
};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The oracle's shared words.
///
/// A pin taken on a block after `allocate` returned it (a pin on an Allocated block,
/// which is allowed) must not count against that allocation. So each block also
/// records when its shadow pin count last changed, on a clock read before each
/// allocation: a block handed out with shadow pins that have not changed since
/// before the call was pinned for the whole call.
struct Shadow {
    owner: Vec<AtomicU32>,
    pins: Vec<AtomicU32>,
    /// Per block: the clock at the latest change of `pins` (written before `pins`).
    changed: Vec<AtomicU64>,
    clock: AtomicU64,
}

impl Shadow {
    fn new(capacity: u64) -> Self {
        let words = |n: u64| (0..n).map(|_| AtomicU32::new(0)).collect();
        Shadow {
            owner: words(capacity),
            pins: words(capacity),
            changed: (0..capacity).map(|_| AtomicU64::new(0)).collect(),
            clock: AtomicU64::new(1),
        }
    }

    fn blocks(e: Extent) -> std::ops::Range<usize> {
        e.start as usize..(e.start + e.len) as usize
    }

    /// Read before an allocation; pass it to [`claim`](Self::claim).
    fn now(&self) -> u64 {
        self.clock.load(Ordering::SeqCst)
    }

    /// After an allocation that began at `since` returned `e` to thread `me`.
    fn claim(&self, e: Extent, me: u32, since: u64) {
        for b in Self::blocks(e) {
            let pins = self.pins[b].load(Ordering::SeqCst);
            let changed = self.changed[b].load(Ordering::SeqCst);
            assert!(
                pins == 0 || changed >= since,
                "block {b} of {e} was handed out while pinned ({pins} pins)"
            );
            let prev = self.owner[b].compare_exchange(0, me, Ordering::SeqCst, Ordering::SeqCst);
            assert!(
                prev.is_ok(),
                "block {b} of {e} handed out twice: owned by {prev:?}"
            );
        }
    }

    /// Before thread `me` frees `e`.
    fn disown(&self, e: Extent, me: u32) {
        for b in Self::blocks(e) {
            let prev = self.owner[b].compare_exchange(me, 0, Ordering::SeqCst, Ordering::SeqCst);
            assert!(
                prev.is_ok(),
                "block {b} of {e} was not owned by {me}: {prev:?}"
            );
        }
    }

    /// Moves the shadow pin counts of `e`'s blocks, stamping the change first.
    fn change_pins(&self, e: Extent, up: bool) {
        for b in Self::blocks(e) {
            let t = self.clock.fetch_add(1, Ordering::SeqCst);
            self.changed[b].fetch_max(t, Ordering::SeqCst);
            if up {
                self.pins[b].fetch_add(1, Ordering::SeqCst);
            } else {
                self.pins[b].fetch_sub(1, Ordering::SeqCst);
            }
        }
    }

    /// After `pin` of `e` returned.
    fn pinned(&self, e: Extent) {
        self.change_pins(e, true);
    }

    /// Before `unpin` of `e`.
    fn unpinning(&self, e: Extent) {
        self.change_pins(e, false);
    }
}

/// One stress thread's state.
struct Worker<'a> {
    alloc: &'a SharedAllocator,
    shadow: &'a Shadow,
    me: u32,
    rng: SplitMix,
    owned: Vec<Extent>,
    pins: Vec<(SharedPinId, Extent)>,
    readers: Vec<ReaderId>,
}

impl Worker<'_> {
    fn random_extent(&mut self, max_len: u64) -> Extent {
        let cap = self.alloc.capacity_blocks();
        let len = 1 + self.rng.below(max_len);
        let start = self.rng.below(cap - len + 1);
        Extent::new(start, len)
    }

    fn step(&mut self) {
        match self.rng.below(100) {
            0..=34 => self.allocate(),
            35..=64 => self.free(),
            65..=79 => self.pin(),
            80..=91 => self.unpin(),
            92..=94 => self.pin_guard_then_allocate(),
            95 => self.allocate_wait(),
            96 => self.read(),
            97 => {
                let epoch = self.alloc.epoch();
                // Another thread may commit first.
                let _ = self.alloc.commit(epoch);
            }
            _ => self.wait_released(),
        }
    }

    fn request(&mut self) -> Request {
        let len = 1 + self.rng.below(48);
        let policy = match self.rng.below(4) {
            0 => Policy::FirstFit,
            1 => Policy::Near(self.rng.below(self.alloc.capacity_blocks())),
            _ => Policy::BestFit,
        };
        Request::new(len).policy(policy)
    }

    fn allocate(&mut self) {
        let request = self.request();
        let since = self.shadow.now();
        let got = self.alloc.allocate(request);
        self.claim(got, since, "allocate", request);
    }

    /// Claims what an allocation returned; running out of space is fine.
    fn claim(
        &mut self,
        got: Result<Extent, SharedAllocError>,
        since: u64,
        call: &str,
        request: Request,
    ) {
        match got {
            Ok(e) => {
                self.shadow.claim(e, self.me, since);
                self.owned.push(e);
            }
            Err(
                SharedAllocError::Core(AllocError::NoSpace { .. })
                | SharedAllocError::TimedOut { .. },
            ) => {}
            Err(other) => panic!("{call}({request:?}): {other}"),
        }
    }

    fn free(&mut self) {
        if self.owned.is_empty() {
            return;
        }
        let i = self.rng.below(self.owned.len() as u64) as usize;
        let e = self.owned.swap_remove(i);
        // Sometimes truncate: free the tail, keep the head.
        let (keep, gone) = if e.len > 1 && self.rng.below(4) == 0 {
            let cut = 1 + self.rng.below(e.len - 1);
            (
                Some(Extent::new(e.start, cut)),
                Extent::new(e.start + cut, e.len - cut),
            )
        } else {
            (None, e)
        };
        self.shadow.disown(gone, self.me);
        let on_commit = self.rng.below(3) == 0;
        let out = if on_commit {
            self.alloc.free_on_commit(gone)
        } else {
            self.alloc.free(gone)
        };
        let out = out.unwrap_or_else(|err| panic!("free({gone}): {err}"));
        assert_eq!(out.freed_blocks + out.deferred_blocks, gone.len);
        self.owned.extend(keep);
    }

    fn pin(&mut self) {
        // Pins land anywhere: on Free, Allocated or Deferred blocks, across groups.
        let e = self.random_extent(24);
        let opts = if self.rng.below(4) == 0 {
            PinOptions::new().owner(u64::from(self.me))
        } else {
            PinOptions::new()
        };
        let id = self
            .alloc
            .pin_owned(e, opts)
            .unwrap_or_else(|err| panic!("pin({e}): {err}"));
        self.shadow.pinned(e);
        self.pins.push((id, e));
    }

    fn unpin(&mut self) {
        if self.pins.is_empty() {
            return;
        }
        let i = self.rng.below(self.pins.len() as u64) as usize;
        let (id, e) = self.pins.swap_remove(i);
        self.shadow.unpinning(e);
        self.alloc
            .unpin(id)
            .unwrap_or_else(|err| panic!("unpin({id}): {err}"));
    }

    fn pin_guard_then_allocate(&mut self) {
        let e = self.random_extent(16);
        let guard = self.alloc.pin(e).expect("pin");
        self.shadow.pinned(e);
        self.allocate();
        self.shadow.unpinning(e);
        drop(guard);
    }

    fn allocate_wait(&mut self) {
        let request = self.request();
        let since = self.shadow.now();
        let got = self
            .alloc
            .allocate_wait(request, Duration::from_micros(200));
        self.claim(got, since, "allocate_wait", request);
    }

    fn read(&mut self) {
        if self.readers.is_empty() || self.rng.below(2) == 0 {
            self.readers.push(self.alloc.begin_read());
        } else {
            let r = self.readers.swap_remove(0);
            self.alloc.end_read(r).expect("a live reader");
        }
    }

    fn wait_released(&mut self) {
        let e = self.random_extent(16);
        match self.alloc.wait_released(e, Duration::from_micros(100)) {
            Ok(()) | Err(WaitError::TimedOut { .. }) => {}
            Err(other) => panic!("wait_released({e}): {other}"),
        }
    }

    /// Gives back everything this thread holds.
    fn finish(mut self) {
        for (id, e) in std::mem::take(&mut self.pins) {
            self.shadow.unpinning(e);
            self.alloc.unpin(id).expect("unpin at the end");
        }
        for e in std::mem::take(&mut self.owned) {
            self.shadow.disown(e, self.me);
            self.alloc.free(e).expect("free at the end");
        }
        for r in std::mem::take(&mut self.readers) {
            self.alloc.end_read(r).expect("end_read at the end");
        }
    }
}

#[test]
fn stress_with_a_shadow_ownership_oracle() {
    let threads = env_usize("STRESS_THREADS", 6).clamp(1, 64);
    let ops = env_usize("STRESS_OPS", 4_000);
    let capacity = 1 << 13;
    let alloc = SharedAllocator::builder(capacity).groups(8).build();
    let shadow = Shadow::new(capacity);
    thread::scope(|s| {
        for t in 0..threads {
            let (alloc, shadow) = (&alloc, &shadow);
            s.spawn(move || {
                let mut w = Worker {
                    alloc,
                    shadow,
                    me: t as u32 + 1,
                    rng: SplitMix::new(0x5eed + t as u64),
                    owned: Vec::new(),
                    pins: Vec::new(),
                    readers: Vec::new(),
                };
                for _ in 0..ops {
                    w.step();
                }
                w.finish();
            });
        }
    });
    alloc.check_invariants().unwrap();
    // Frees still waiting for the open epoch to commit come back with one commit.
    alloc.commit(alloc.epoch()).unwrap();
    let s = alloc.stats();
    assert_eq!(s.space.free_blocks, capacity, "nothing leaked: {s:?}");
    assert_eq!(s.space.live_pins, 0);
    assert_eq!(s.space.deferred_blocks, 0);
    assert_eq!(alloc.free_extents(), [Extent::new(0, capacity)]);
    assert!(s.space.counters.allocations > 0 && s.space.counters.pins > 0);
    alloc.check_invariants().unwrap();
}

#[test]
fn allocate_wait_times_out_with_the_last_no_space() {
    let alloc = SharedAllocator::new(16);
    let _all = alloc.allocate(Request::new(16)).unwrap();
    let err = alloc
        .allocate_wait(Request::new(1), Duration::from_millis(20))
        .unwrap_err();
    // Its own error, not the immediate failure's, with the same figures.
    assert!(
        matches!(
            err,
            SharedAllocError::TimedOut {
                requested: 1,
                free: 0,
                ..
            }
        ),
        "{err}"
    );
    let c = alloc.stats().counters;
    assert_eq!(c.wait_timeouts, 1);
    assert!(c.waits >= 1);
}

#[test]
fn allocate_wait_wakes_when_a_pin_goes() {
    let alloc = SharedAllocator::new(16);
    let e = alloc.allocate(Request::new(16)).unwrap();
    let pin = alloc.pin(e).unwrap();
    alloc.free(e).unwrap(); // Deferred: nothing allocatable
    thread::scope(|s| {
        s.spawn(move || {
            thread::sleep(Duration::from_millis(20));
            drop(pin);
        });
        let got = alloc.allocate_wait(Request::new(16), Duration::from_secs(30));
        assert_eq!(got, Ok(e));
    });
}

#[test]
fn a_request_longer_than_a_group_does_not_wait() {
    let alloc = SharedAllocator::builder(64).groups(4).build();
    let err = alloc
        .allocate_wait(Request::new(17), Duration::from_secs(30))
        .unwrap_err();
    assert!(
        matches!(
            err,
            SharedAllocError::Core(AllocError::NoSpace {
                largest_free: 16,
                ..
            })
        ),
        "{err}"
    );
}

#[test]
fn wait_released_waits_for_the_last_pin_and_times_out_without_it() {
    let alloc = SharedAllocator::new(64);
    let e = alloc.allocate(Request::new(8)).unwrap();
    let a = alloc.pin(Extent::new(e.start, 4)).unwrap();
    let b = alloc.pin(Extent::new(e.start + 2, 4)).unwrap();
    alloc.free(e).unwrap();
    drop(a);
    assert_eq!(
        alloc.wait_released(e, Duration::from_millis(5)),
        Err(WaitError::TimedOut {
            extent: e,
            deferred_blocks: 4
        })
    );
    thread::scope(|s| {
        s.spawn(move || {
            thread::sleep(Duration::from_millis(20));
            drop(b);
        });
        alloc.wait_released(e, Duration::from_secs(30)).unwrap();
    });
    assert_eq!(alloc.stats().space.free_blocks, 64);
    assert_eq!(
        alloc.wait_released(Extent::new(60, 8), Duration::ZERO),
        Err(WaitError::BadExtent(ExtentError::OutOfBounds {
            extent: Extent::new(60, 8),
            capacity: 64
        }))
    );
    assert_eq!(
        alloc.wait_released(Extent::new(3, 0), Duration::ZERO),
        Err(WaitError::BadExtent(ExtentError::ZeroLength { start: 3 }))
    );
}

#[test]
fn a_pressure_hook_that_commits_lets_the_allocation_through() {
    let alloc = Arc::new(SharedAllocator::new(32));
    let e = alloc.allocate(Request::new(32)).unwrap();
    alloc.commit(1).unwrap();
    assert_eq!(alloc.free_on_commit(e).unwrap().deferred_blocks, 32);
    // No hook: the failure says the space is only held.
    let err = alloc.allocate(Request::new(8)).unwrap_err();
    assert!(
        matches!(err, SharedAllocError::Core(AllocError::NoSpace { deferred, .. }) if deferred.epochs == 32),
        "{err}"
    );
    assert_eq!(alloc.stats().counters.pressure_calls, 0);

    let calls = Arc::new(AtomicU32::new(0));
    let (a, c) = (Arc::clone(&alloc), Arc::clone(&calls));
    alloc.set_pressure_hook(move |p| {
        assert_eq!((p.requested, p.held.epochs), (8, 32));
        c.fetch_add(1, Ordering::SeqCst);
        a.commit(a.epoch()).unwrap();
    });
    assert_eq!(alloc.allocate(Request::new(8)).unwrap().len, 8);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(alloc.stats().counters.pressure_calls, 1);

    // Truly full: nothing held, so the hook is not called.
    let _rest = alloc.allocate(Request::new(24)).unwrap();
    assert!(alloc.allocate(Request::new(1)).is_err());
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    alloc.clear_pressure_hook(); // the hook holds an Arc of the allocator
    alloc.check_invariants().unwrap();
}

/// A lease whose callback unpins it, through a slot the callback can reach.
fn self_releasing_lease(
    alloc: &Arc<SharedAllocator>,
    e: Extent,
    calls: &Arc<AtomicU32>,
) -> SharedPinId {
    let slot: Arc<Mutex<Option<SharedPinId>>> = Arc::default();
    let (a, s, c) = (Arc::clone(alloc), Arc::clone(&slot), Arc::clone(calls));
    let opts = PinOptions::new().on_revoke(move |r| {
        c.fetch_add(1, Ordering::SeqCst);
        if let Some(id) = s.lock().unwrap().take() {
            assert_eq!(id, r.id);
            a.unpin(id).unwrap();
        }
    });
    let id = alloc.pin_owned(e, opts).unwrap();
    *slot.lock().unwrap() = Some(id);
    id
}

#[test]
fn revoke_calls_the_overlapping_leases_and_reports_who_held_on() {
    let alloc = Arc::new(SharedAllocator::builder(256).groups(4).build());
    let calls = Arc::new(AtomicU32::new(0));
    let polite = self_releasing_lease(&alloc, Extent::new(10, 8), &calls);
    // A lease across a group boundary whose holder never lets go.
    let stubborn_calls = Arc::new(AtomicU32::new(0));
    let sc = Arc::clone(&stubborn_calls);
    let stubborn = alloc
        .pin_owned(
            Extent::new(60, 8),
            PinOptions::new().on_revoke(move |_| {
                sc.fetch_add(1, Ordering::SeqCst);
            }),
        )
        .unwrap();
    let plain = alloc.pin(Extent::new(12, 2)).unwrap(); // no callback: not asked
    let elsewhere = self_releasing_lease(&alloc, Extent::new(200, 8), &calls);

    let report = alloc.revoke(Extent::new(0, 100), Duration::from_millis(30));
    assert_eq!(report.asked, 2);
    assert_eq!(report.still_pinned, [(stubborn, Extent::new(60, 8))]);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(stubborn_calls.load(Ordering::SeqCst), 1);
    assert!(alloc.unpin(polite).is_err(), "the callback unpinned it");
    assert_eq!(alloc.stats().counters.revocations, 2);
    drop(plain);
    alloc.unpin(stubborn).unwrap();
    alloc.unpin(elsewhere).unwrap();
    assert_eq!(alloc.stats().space.live_pins, 0);
    alloc.check_invariants().unwrap();
}

#[test]
fn pressure_revokes_the_leases_holding_space() {
    let alloc = Arc::new(SharedAllocator::new(32));
    alloc.allocate(Request::new(32)).unwrap(); // the whole space
    let calls = Arc::new(AtomicU32::new(0));
    let _lease = self_releasing_lease(&alloc, Extent::new(0, 16), &calls);
    // A lease on space that is not held back is not asked.
    let idle_calls = Arc::new(AtomicU32::new(0));
    alloc.free(Extent::new(0, 16)).unwrap(); // Deferred under the lease
    let rest = Extent::new(16, 16);
    let idle = self_releasing_lease(&alloc, rest, &idle_calls);
    assert_eq!(
        alloc.allocate(Request::new(16)).unwrap(),
        Extent::new(0, 16)
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(idle_calls.load(Ordering::SeqCst), 0);
    assert_eq!(alloc.stats().counters.pressure_calls, 1);
    alloc.unpin(idle).unwrap();
    alloc.check_invariants().unwrap();
}

#[test]
fn panicking_callbacks_leave_the_allocator_consistent_and_usable() {
    let alloc = Arc::new(SharedAllocator::new(32));
    let e = alloc.allocate(Request::new(32)).unwrap();
    alloc.commit(1).unwrap();
    alloc.free_on_commit(e).unwrap();
    alloc.set_pressure_hook(|_| panic!("the hook fails"));
    let err = alloc.allocate(Request::new(4)).unwrap_err();
    assert!(matches!(
        err,
        SharedAllocError::Core(AllocError::NoSpace { .. })
    ));
    assert_eq!(alloc.stats().counters.callback_panics, 1);
    alloc.check_invariants().unwrap();

    // A revoke callback that panics after unpinning its own pin, and one that
    // panics without: both are counted; the rest still run.
    let calls = Arc::new(AtomicU32::new(0));
    let slot: Arc<Mutex<Option<SharedPinId>>> = Arc::default();
    let (a, s) = (Arc::clone(&alloc), Arc::clone(&slot));
    let first = alloc
        .pin_owned(
            Extent::new(0, 4),
            PinOptions::new().on_revoke(move |_| {
                if let Some(id) = s.lock().unwrap().take() {
                    a.unpin(id).unwrap();
                }
                panic!("after unpinning");
            }),
        )
        .unwrap();
    *slot.lock().unwrap() = Some(first);
    let second = alloc
        .pin_owned(
            Extent::new(4, 4),
            PinOptions::new().on_revoke(|_| panic!("at once")),
        )
        .unwrap();
    let third = self_releasing_lease(&alloc, Extent::new(8, 4), &calls);
    let report = alloc.revoke(Extent::new(0, 32), Duration::from_millis(10));
    assert_eq!(report.asked, 3);
    assert_eq!(report.still_pinned, [(second, Extent::new(4, 4))]);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(alloc.stats().counters.callback_panics, 3);
    assert!(alloc.unpin(third).is_err(), "its callback unpinned it");
    alloc.unpin(second).unwrap();
    alloc.check_invariants().unwrap();

    // Still usable: the next commit frees the space.
    alloc.clear_pressure_hook();
    alloc.commit(2).unwrap();
    assert_eq!(alloc.allocate(Request::new(32)).unwrap(), e);
}

#[test]
fn pin_quotas_refuse_and_change_nothing() {
    let alloc = SharedAllocator::builder(1024)
        .groups(4)
        .pin_quota_blocks(16)
        .build();
    let a = alloc
        .pin_owned(Extent::new(250, 10), PinOptions::new().owner(1))
        .unwrap(); // across groups 0 and 1
    let before = alloc.stats();
    let err = alloc
        .pin_with(Extent::new(0, 7), PinOptions::new().owner(1))
        .unwrap_err();
    assert_eq!(
        err,
        SharedPinError::Limit(LimitError::PinQuota {
            owner: 1,
            extent: Extent::new(0, 7),
            quota_blocks: 16,
            pinned_blocks: 10,
        })
    );
    assert_eq!(alloc.stats(), before);
    assert_eq!(alloc.pinned_by(1), 10);
    // Another owner has its own quota; an override raises it.
    let b = alloc
        .pin_with(Extent::new(0, 16), PinOptions::new().owner(2))
        .unwrap();
    alloc.set_pin_quota(1, 100);
    let c = alloc
        .pin_with(Extent::new(0, 90), PinOptions::new().owner(1))
        .unwrap();
    assert_eq!(alloc.pinned_by(1), 100);
    drop(c);
    alloc.unpin(a).unwrap();
    assert_eq!(alloc.pinned_by(1), 0);
    drop(b);
    assert_eq!(alloc.pinned_by(2), 0);
    alloc.check_invariants().unwrap();
}

#[test]
fn the_deferred_cap_refuses_and_changes_nothing() {
    let alloc = SharedAllocator::builder(1024)
        .groups(4)
        .deferred_cap_blocks(10)
        .build();
    let a = alloc
        .allocate(Request::new(8).policy(Policy::Exact(0)))
        .unwrap();
    let b = alloc
        .allocate(Request::new(8).policy(Policy::Exact(300)))
        .unwrap();
    let pa = alloc.pin(a).unwrap();
    let pb = alloc.pin(b).unwrap();
    assert_eq!(alloc.free(a).unwrap().deferred_blocks, 8);
    let before = alloc.stats();
    let err = alloc.free(b).unwrap_err();
    assert_eq!(
        err,
        SharedFreeError::Limit(LimitError::DeferredCap {
            extent: b,
            cap_blocks: 10,
            deferred_blocks: 8,
            would_defer_blocks: 8,
        })
    );
    assert_eq!(alloc.stats(), before);
    // A free that defers nothing is never refused.
    let c = alloc.allocate(Request::new(50)).unwrap();
    alloc.free(c).unwrap();
    // Once the first pin goes, there is room.
    drop(pa);
    assert_eq!(alloc.free(b).unwrap().deferred_blocks, 8);
    drop(pb);
    assert_eq!(alloc.stats().space.free_blocks, 1024);
    alloc.check_invariants().unwrap();
}

#[test]
fn the_deferred_cap_holds_under_concurrent_frees() {
    let cap = 16;
    let alloc = SharedAllocator::builder(1 << 12)
        .groups(4)
        .deferred_cap_blocks(cap)
        .build();
    // Blocks this test knows are Deferred: raised after a free returns, lowered
    // before the pin that holds them goes, so it never exceeds the true count, and
    // going over the cap here means the allocator went over it.
    let known = AtomicU64::new(0);
    let over = AtomicBool::new(false);
    let refused = AtomicU64::new(0);
    thread::scope(|s| {
        for t in 0..4u64 {
            let (alloc, known, over, refused) = (&alloc, &known, &over, &refused);
            s.spawn(move || {
                // Each thread holds its last three Deferred extents (up to 24 blocks,
                // past the cap on its own), so some frees must be refused.
                let mut held = std::collections::VecDeque::new();
                for i in 0..300 {
                    let e = alloc.allocate(Request::new(1 + (i + t) % 8)).unwrap();
                    let pin = alloc.pin(e).unwrap();
                    match alloc.free(e) {
                        Ok(out) => {
                            assert_eq!(out.deferred_blocks, e.len);
                            let now = known.fetch_add(e.len, Ordering::SeqCst) + e.len;
                            if now > cap {
                                over.store(true, Ordering::SeqCst);
                            }
                            held.push_back((e.len, pin));
                        }
                        Err(SharedFreeError::Limit(LimitError::DeferredCap { .. })) => {
                            refused.fetch_add(1, Ordering::Relaxed);
                            drop(pin);
                            alloc.free(e).unwrap();
                        }
                        Err(other) => panic!("{other}"),
                    }
                    if held.len() == 3 {
                        let (len, pin) = held.pop_front().expect("three held");
                        known.fetch_sub(len, Ordering::SeqCst);
                        drop(pin);
                    }
                    thread::yield_now(); // hold them while others free
                }
                for (len, pin) in held {
                    known.fetch_sub(len, Ordering::SeqCst);
                    drop(pin);
                }
            });
        }
    });
    assert!(!over.load(Ordering::SeqCst), "the cap was passed");
    assert!(
        refused.load(Ordering::Relaxed) > 0,
        "the cap never refused a free"
    );
    assert_eq!(alloc.stats().space.free_blocks, 1 << 12);
    alloc.check_invariants().unwrap();
}

#[test]
fn extents_across_groups_free_and_pin_as_one() {
    let alloc = SharedAllocator::builder(100)
        .groups(4)
        .from_allocated_extents([Extent::new(20, 10), Extent::new(45, 10)])
        .unwrap();
    // A free half over Free blocks, across the boundary at 50.
    assert_eq!(
        alloc.free(Extent::new(40, 15)),
        Err(SharedFreeError::Core(FreeError::PartlyAllocated {
            extent: Extent::new(40, 15),
            offending: Extent::new(40, 5),
        }))
    );
    assert_eq!(
        alloc.free(Extent::new(30, 40)),
        Err(SharedFreeError::Core(FreeError::PartlyAllocated {
            extent: Extent::new(30, 40),
            offending: Extent::new(30, 15),
        }))
    );
    assert_eq!(
        alloc.free(Extent::new(60, 20)),
        Err(SharedFreeError::Core(FreeError::NotAllocated {
            extent: Extent::new(60, 20),
            offending: Extent::new(60, 20),
        }))
    );
    // A blocking pin across groups makes the free Busy, naming the pin.
    let pin = alloc
        .pin_with(
            Extent::new(48, 4),
            PinOptions::new().mode(PinMode::Blocking),
        )
        .unwrap();
    assert_eq!(alloc.stats().space.live_pins, 1);
    match alloc.free(Extent::new(45, 10)) {
        Err(SharedFreeError::Core(FreeError::Busy { extent, pin: p, .. })) => {
            assert_eq!(extent, Extent::new(45, 10));
            assert_eq!(p, pin.id().core_pin());
        }
        other => panic!("{other:?}"),
    }
    drop(pin);
    let deferring = alloc.pin(Extent::new(49, 2)).unwrap();
    let out = alloc.free(Extent::new(45, 10)).unwrap();
    assert_eq!((out.freed_blocks, out.deferred_blocks), (8, 2));
    drop(deferring);
    assert_eq!(
        alloc.allocate(Request::new(10).policy(Policy::Exact(45))),
        Err(SharedAllocError::CrossesGroup {
            extent: Extent::new(45, 10),
            boundary: 50
        })
    );
    alloc.free(Extent::new(20, 10)).unwrap();
    assert_eq!(alloc.free_extents(), [Extent::new(0, 100)]);
    alloc.check_invariants().unwrap();
}

#[test]
fn handles_of_another_allocator_are_refused() {
    let a = SharedAllocator::new(64);
    let b = SharedAllocator::new(64);
    let id = a.pin(Extent::new(0, 4)).unwrap().into_id();
    assert!(matches!(b.unpin(id), Err(PinError::Unknown { .. })));
    let reader = a.begin_read();
    assert!(b.end_read(reader).is_err());
    let mut res = a.reserve(8).unwrap();
    assert!(matches!(
        b.allocate_reserved(&mut res, Request::new(1)),
        Err(SharedAllocError::Core(
            AllocError::UnknownReservation { .. }
        ))
    ));
    a.unpin(id).unwrap();
    a.end_read(reader).unwrap();
    assert_eq!(a.unreserve(res), 8);
    a.check_invariants().unwrap();
    b.check_invariants().unwrap();
}

#[test]
fn readers_hold_every_group_and_commit_is_global() {
    let alloc = SharedAllocator::builder(1024).groups(4).build();
    let x = alloc
        .allocate(Request::new(8).policy(Policy::Exact(0)))
        .unwrap();
    let y = alloc
        .allocate(Request::new(8).policy(Policy::Exact(600)))
        .unwrap();
    let r1 = alloc.begin_read();
    let r2 = alloc.begin_read(); // same epoch: shares the first one's core readers
    assert_eq!(alloc.free(x).unwrap().deferred_blocks, 8);
    assert_eq!(alloc.free(y).unwrap().deferred_blocks, 8);
    assert_eq!(alloc.end_read(r1).unwrap().released_blocks, 0);
    assert_eq!(alloc.end_read(r2).unwrap().released_blocks, 16);
    assert_eq!(alloc.stats().space.live_readers, 0);
    assert_eq!(alloc.commit(1).unwrap().released_blocks, 0);
    assert!(alloc.commit(1).is_err());
    assert_eq!(alloc.epoch(), 2);
    assert_eq!(alloc.stats().space.counters.commits, 1);
    alloc.check_invariants().unwrap();
}

#[test]
fn timeouts_too_long_to_represent_do_not_panic() {
    let alloc = SharedAllocator::new(16);
    let e = alloc.allocate(Request::new(16)).unwrap();
    let pin = alloc.pin(e).unwrap();
    alloc.free(e).unwrap();
    thread::scope(|s| {
        s.spawn(move || {
            thread::sleep(Duration::from_millis(10));
            drop(pin);
        });
        assert_eq!(alloc.wait_released(e, Duration::MAX), Ok(()));
    });
    assert_eq!(alloc.allocate_wait(Request::new(16), Duration::MAX), Ok(e));
    let report = alloc.revoke(e, Duration::MAX); // no leases: returns at once
    assert_eq!(report.asked, 0);
}

/// A truncate waits for its DMA; the DMA finishes, and another file gets the same
/// blocks and frees them under a pin of its own. The wait ends with the DMA's hold,
/// not with the other file's.
#[test]
fn wait_released_waits_for_the_holds_it_saw_not_for_later_ones() {
    let alloc = SharedAllocator::new(64);
    let e = alloc
        .allocate(Request::new(8).policy(Policy::Exact(0)))
        .unwrap();
    let dma = alloc.pin(e).unwrap().into_id();
    alloc.free(e).unwrap(); // truncate under DMA: Deferred
    thread::scope(|s| {
        let waiter = s.spawn(|| alloc.wait_released(e, Duration::from_secs(60)));
        while alloc.stats().counters.waits == 0 {
            thread::yield_now(); // the waiter has looked
        }
        thread::sleep(Duration::from_millis(50)); // and is asleep
        // From here the steps outrun the waiter's wake-up: by the time it looks
        // again, the blocks are Deferred again.
        alloc.unpin(dma).unwrap(); // DMA done: Free
        let e2 = alloc
            .allocate(Request::new(8).policy(Policy::Exact(0)))
            .unwrap(); // another file
        let other = alloc.pin(e2).unwrap().into_id();
        alloc.free(e2).unwrap(); // Deferred again, by an unrelated pin
        let started = std::time::Instant::now();
        assert_eq!(waiter.join().unwrap(), Ok(()));
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "it waited for the other file's pin"
        );
        // A wait that begins now sees the other file's hold, and waits for it.
        assert!(matches!(
            alloc.wait_released(e, Duration::ZERO),
            Err(WaitError::TimedOut {
                deferred_blocks: 8,
                ..
            })
        ));
        alloc.unpin(other).unwrap();
    });
    alloc.check_invariants().unwrap();
}

/// Threads spread over a shared allocator's groups even when each first allocated
/// from another allocator: a thread's first group comes from the allocator it is
/// allocating from, not from whichever it used first.
#[test]
fn threads_spread_over_groups_whatever_they_used_first() {
    let shared = Arc::new(SharedAllocator::builder(64 * 1024).groups(8).build());
    let group_blocks = shared.group_blocks();
    let groups: Vec<u64> = (0..4)
        .map(|_| {
            let shared = Arc::clone(&shared);
            thread::spawn(move || {
                let own = SharedAllocator::new(4096);
                own.allocate(Request::new(1)).unwrap();
                shared.allocate(Request::new(1)).unwrap().start / group_blocks
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    let mut distinct = groups.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        4,
        "the four threads started in groups {groups:?}"
    );
}

/// The durable commit under threads: between `prepare_commit` and `finish_commit`,
/// no thread is handed a block that the prepared epoch freed on commit, however
/// hard they allocate; after `finish_commit` the blocks come back. The space is
/// tight (the trees take 64 of its 80 blocks) and the other threads hold what they
/// get for a while, so a plain `commit` in place of `prepare_commit` fails this.
#[test]
fn no_thread_gets_a_sealed_block_before_finish_commit() {
    // 200 epochs at the default size; fewer under memcheck, which runs threads one at a time.
    let epochs = (env_usize("STRESS_OPS", 4_000) / 20).clamp(20, 2_000);
    let alloc = Arc::new(SharedAllocator::builder(80).groups(2).build());
    // The epoch whose commit is prepared and not finished (0: none), and its blocks.
    let window = Arc::new(AtomicU64::new(0));
    let sealed: Arc<Mutex<Vec<Extent>>> = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let checked = Arc::new(AtomicU64::new(0));
    let others: Vec<_> = (0..3)
        .map(|t| {
            let (alloc, window, sealed, stop, checked) = (
                alloc.clone(),
                window.clone(),
                sealed.clone(),
                stop.clone(),
                checked.clone(),
            );
            thread::spawn(move || {
                let mut rng = SplitMix::new(t);
                let mut held: Vec<Extent> = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    let before = window.load(Ordering::SeqCst);
                    let got = alloc.allocate(Request::new(1 + rng.below(2)));
                    let after = window.load(Ordering::SeqCst);
                    if let Ok(e) = got {
                        if before != 0 && before == after {
                            // Made wholly inside epoch `before`'s window.
                            let hit = sealed.lock().unwrap().iter().any(|s| s.overlaps(&e));
                            assert!(!hit, "{e} was handed out before its list was durable");
                            checked.fetch_add(1, Ordering::Relaxed);
                        }
                        held.push(e);
                    }
                    if held.len() > 8 || rng.below(64) == 0 {
                        for e in held.drain(..) {
                            alloc.free(e).unwrap();
                        }
                    }
                    // Lets the committing thread in where threads take turns (memcheck).
                    thread::yield_now();
                }
                for e in held {
                    alloc.free(e).unwrap();
                }
            })
        })
        .collect();
    let mut tree: Vec<Extent> = Vec::new();
    for _ in 0..epochs {
        let epoch = alloc.epoch();
        let new: Vec<Extent> = (0..4)
            .filter_map(|_| alloc.allocate(Request::new(8)).ok())
            .collect();
        // (Whatever the others hold, the tree gets what is left.)
        for &old in &tree {
            alloc.free_on_commit(old).unwrap();
        }
        alloc.prepare_commit(epoch).unwrap();
        *sealed.lock().unwrap() = std::mem::replace(&mut tree, new);
        window.store(epoch, Ordering::SeqCst);
        // The list is being written: long enough for the others to allocate inside the
        // window (bounded, in case every block is taken meanwhile).
        let seen = checked.load(Ordering::Relaxed);
        for _ in 0..500 {
            thread::sleep(Duration::from_micros(200));
            if checked.load(Ordering::Relaxed) > seen + 1 {
                break;
            }
        }
        window.store(0, Ordering::SeqCst);
        alloc.finish_commit(epoch).unwrap();
    }
    stop.store(true, Ordering::SeqCst);
    for t in others {
        t.join().unwrap();
    }
    assert!(
        checked.load(Ordering::Relaxed) > epochs as u64 / 2,
        "allocations inside the windows were checked: {} in {epochs} epochs",
        checked.load(Ordering::Relaxed)
    );
    for e in tree {
        alloc.free(e).unwrap();
    }
    let open = alloc.epoch();
    alloc.commit(open).unwrap();
    assert_eq!(alloc.stats().space.free_blocks, 80);
}

/// An abort takes blocks out of Deferred: a `wait_released` of them returns then,
/// not at its timeout (two minutes, against which a minute is a wide margin).
#[test]
fn an_abort_wakes_wait_released() {
    let alloc = SharedAllocator::new(16);
    let e = alloc.allocate(Request::new(8)).unwrap();
    alloc.commit(1).unwrap();
    alloc.free_on_commit(e).unwrap();
    thread::scope(|s| {
        s.spawn(|| {
            thread::sleep(Duration::from_millis(20));
            assert_eq!(alloc.abort(2).unwrap().restored_blocks, 8);
        });
        let began = std::time::Instant::now();
        assert_eq!(alloc.wait_released(e, Duration::from_secs(120)), Ok(()));
        assert!(
            began.elapsed() < Duration::from_secs(60),
            "woken by the abort, not by the timeout"
        );
    });
}
