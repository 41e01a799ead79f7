//! Edge cases of `SharedAllocator` found in review: requests that must work across
//! allocation groups when reservations and revoke callbacks are about.

use std::sync::Arc;
use std::time::Duration;

use pinalloc::{Extent, PinOptions, Policy, Request, SharedAllocator};

#[test]
fn allocate_many_steps_around_another_groups_reservation() {
    let alloc = SharedAllocator::builder(200).groups(2).build();
    let res = alloc.reserve(90).unwrap(); // all of it from group 0, the first of equals
    let got = alloc.allocate_many(20).unwrap();
    assert_eq!(got.iter().map(|e| e.len).sum::<u64>(), 20);
    let s = alloc.stats().space;
    assert_eq!((s.reserved_blocks, s.allocated_blocks), (90, 20));
    alloc.check_invariants().unwrap();
    assert_eq!(alloc.release(res), 90);
}

#[test]
fn allocate_reserved_places_goals_and_exact_starts_in_their_own_group() {
    let alloc = SharedAllocator::builder(200).groups(2).build();
    let mut res = alloc.reserve(150).unwrap(); // 100 in one group, 50 in the other
    let near = alloc
        .allocate_reserved(&mut res, Request::new(4).policy(Policy::Near(150)))
        .unwrap();
    assert_eq!(
        near,
        Extent::new(150, 4),
        "the free block at the goal itself"
    );
    let exact = alloc
        .allocate_reserved(&mut res, Request::new(4).policy(Policy::Exact(120)))
        .unwrap();
    assert_eq!(exact, Extent::new(120, 4));
    assert_eq!(res.remaining_blocks(), 142);
    alloc.check_invariants().unwrap();
    assert_eq!(alloc.release(res), 142);
}

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

/// A blocking pin across a group boundary blocks a free as one pin, as one core
/// would say: all the blocks of the extent it covers, named by the pin's own id.
///
/// ```text
///   group 0 | group 1        boundary at 512
///   AAAAAAAAAAAAAAAAAAAAAAAA  [500, 524) Allocated at mount
///             ^^^^            a blocking pin on [510, 514)
/// ```
#[test]
fn busy_names_a_pin_across_groups_whole() {
    use pinalloc::{FreeError, PinMode, SharedFreeError};
    let a = SharedAllocator::builder(1024)
        .groups(2)
        .from_allocated_extents([Extent::new(500, 24)])
        .unwrap();
    let p = a
        .pin_with(
            Extent::new(510, 4),
            PinOptions::new().mode(PinMode::Blocking),
        )
        .unwrap();
    for (freed, blocked) in [
        (Extent::new(500, 24), Extent::new(510, 4)), // both groups
        (Extent::new(512, 12), Extent::new(512, 2)), // group 1 only
        (Extent::new(500, 12), Extent::new(510, 2)), // group 0 only
    ] {
        assert_eq!(
            a.free(freed),
            Err(SharedFreeError::Core(FreeError::Busy {
                extent: freed,
                pin: p.id().core_pin(),
                blocked,
            })),
            "free({freed})"
        );
    }
    // Of two blocking pins, the one over the first blocked block is named, though
    // younger.
    let younger = a
        .pin_with(
            Extent::new(505, 2),
            PinOptions::new().mode(PinMode::Blocking),
        )
        .unwrap();
    assert!(matches!(
        a.free(Extent::new(500, 24)),
        Err(SharedFreeError::Core(FreeError::Busy { pin, blocked, .. }))
            if pin == younger.id().core_pin() && blocked == Extent::new(505, 2)
    ));
    drop(younger);
    assert!(matches!(
        a.free(Extent::new(500, 24)),
        Err(SharedFreeError::Core(FreeError::Busy { pin, blocked, .. }))
            if pin == p.id().core_pin() && blocked == Extent::new(510, 4)
    ));
    drop(p);
    a.free(Extent::new(500, 24)).unwrap();
    a.check_invariants().unwrap();
}

/// Of the blocking pins over the first blocked block, the oldest is named, even when it
/// reaches that block from an earlier group; a younger pin in an earlier group that
/// blocks an earlier block is named before both.
#[test]
fn busy_names_the_oldest_pin_over_the_first_blocked_block() {
    use pinalloc::{FreeError, PinMode, SharedFreeError};
    let a = SharedAllocator::builder(1024)
        .groups(2)
        .from_allocated_extents([Extent::new(500, 24)])
        .unwrap();
    let blocking = PinOptions::new().mode(PinMode::Blocking);
    let older = a.pin_with(Extent::new(510, 10), blocking.clone()).unwrap(); // both groups
    let _younger = a.pin_with(Extent::new(512, 2), blocking.clone()).unwrap(); // group 1
    assert_eq!(
        a.free(Extent::new(512, 12)),
        Err(SharedFreeError::Core(FreeError::Busy {
            extent: Extent::new(512, 12),
            pin: older.id().core_pin(),
            blocked: Extent::new(512, 8),
        }))
    );
    let earliest = a.pin_with(Extent::new(505, 2), blocking).unwrap(); // group 0
    assert_eq!(
        a.free(Extent::new(500, 24)),
        Err(SharedFreeError::Core(FreeError::Busy {
            extent: Extent::new(500, 24),
            pin: earliest.id().core_pin(),
            blocked: Extent::new(505, 2),
        }))
    );
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
