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
