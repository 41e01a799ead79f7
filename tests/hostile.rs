//! Bad input at every entry point, and the edges of the `u64` space.
//!
//! Each bad call must return its specific error and leave the allocator exactly as it
//! was: same stats, same free extents, invariants intact.

use pinalloc::{
    AllocError, BlockState, BuildError, EpochError, Extent, ExtentAllocator, ExtentError,
    FreeError, Held, PinError, PinMode, Policy, Request, ReservationError, ResizeError,
    SharedAllocator,
};

const TOP: u64 = u64::MAX;

/// Runs `call` and checks it failed with `want`, changing nothing.
#[track_caller]
fn refused<T: std::fmt::Debug, E: std::fmt::Debug + PartialEq>(
    alloc: &mut ExtentAllocator,
    want: E,
    call: impl FnOnce(&mut ExtentAllocator) -> Result<T, E>,
) {
    let stats = alloc.stats();
    let free: Vec<Extent> = alloc.free_extents().collect();
    let got = call(alloc);
    match got {
        Err(e) => assert_eq!(e, want),
        Ok(v) => panic!("expected {want:?}, got Ok({v:?})"),
    }
    assert_eq!(alloc.stats(), stats, "a failed call changed the stats");
    assert_eq!(
        alloc.free_extents().collect::<Vec<_>>(),
        free,
        "a failed call changed the free space"
    );
    alloc.check_invariants().unwrap();
}

/// `NoSpace` with its first four figures, in field order, and nothing held.
fn no_space(requested: u64, free: u64, largest_free: u64, reserved: u64) -> AllocError {
    AllocError::NoSpace {
        requested,
        free,
        largest_free,
        reserved,
        deferred: Held::default(),
        pinned_free: 0,
    }
}

/// A 100-block space: [0, 40) Allocated, [40, 100) Free.
fn fixture() -> ExtentAllocator {
    let mut a = ExtentAllocator::new(100);
    assert_eq!(a.allocate(Request::new(40)).unwrap(), Extent::new(0, 40));
    a
}

#[test]
#[allow(clippy::reversed_empty_ranges)] // reversed ranges are the point
fn malformed_requests() {
    let mut a = fixture();
    refused(&mut a, AllocError::ZeroLength, |a| {
        a.allocate(Request::new(0))
    });
    refused(&mut a, AllocError::ZeroLength, |a| {
        a.allocate(Request::range(0..=5))
    });
    refused(&mut a, AllocError::InvalidRange { min: 5, max: 4 }, |a| {
        a.allocate(Request::range(5..=4))
    });
    for align in [0, 3, 6, 12, TOP] {
        refused(&mut a, AllocError::BadAlignment { align }, |a| {
            a.allocate(Request::new(1).align(align))
        });
    }
}

#[test]
fn bad_exact_starts_and_goals() {
    let mut a = fixture();
    refused(
        &mut a,
        AllocError::Misaligned {
            start: 42,
            align: 4,
        },
        |a| a.allocate(Request::new(1).align(4).policy(Policy::Exact(42))),
    );
    refused(
        &mut a,
        AllocError::BadExtent(ExtentError::OutOfBounds {
            extent: Extent::new(99, 2),
            capacity: 100,
        }),
        |a| a.allocate(Request::new(2).policy(Policy::Exact(99))),
    );
    refused(
        &mut a,
        AllocError::BadExtent(ExtentError::Overflow {
            extent: Extent::new(TOP, 1),
        }),
        |a| a.allocate(Request::new(1).policy(Policy::Exact(TOP))),
    );
    refused(
        &mut a,
        AllocError::NotFree {
            extent: Extent::new(38, 4),
        },
        |a| a.allocate(Request::new(4).policy(Policy::Exact(38))),
    );
    refused(
        &mut a,
        AllocError::BadExtent(ExtentError::OutOfBounds {
            extent: Extent::new(100, 1),
            capacity: 100,
        }),
        |a| a.allocate(Request::new(1).policy(Policy::Near(100))),
    );
    refused(
        &mut a,
        AllocError::BadExtent(ExtentError::OutOfBounds {
            extent: Extent::new(TOP, 1),
            capacity: 100,
        }),
        |a| a.allocate(Request::new(1).policy(Policy::Near(TOP))),
    );
}

#[test]
fn no_space_tells_full_from_fragmented_from_reserved() {
    let mut a = fixture();
    let full = no_space(61, 60, 60, 0);
    refused(&mut a, full, |a| a.allocate(Request::new(61)));
    // Fragment: free [0, 10) and [20, 30) beside [40, 100).
    a.free(Extent::new(0, 10)).unwrap();
    a.free(Extent::new(20, 10)).unwrap();
    let fragmented = no_space(70, 80, 60, 0);
    refused(&mut a, fragmented, |a| a.allocate(Request::new(70)));
    let res = a.reserve(75).unwrap();
    let reserved = no_space(6, 80, 60, 75);
    refused(&mut a, reserved, |a| a.allocate(Request::new(6)));
    refused(&mut a, reserved, |a| a.allocate_many(6));
    refused(&mut a, reserved, |a| a.reserve(6));
    assert_eq!(a.unreserve(res).unwrap(), 75);
    // An unplaceable aligned request on plenty of space is also NoSpace.
    let aligned = no_space(60, 80, 60, 0);
    refused(&mut a, aligned, |a| a.allocate(Request::new(60).align(64)));
}

#[test]
fn bad_frees() {
    let mut a = fixture();
    refused(
        &mut a,
        FreeError::BadExtent(ExtentError::ZeroLength { start: 3 }),
        |a| a.free(Extent::new(3, 0)),
    );
    refused(
        &mut a,
        FreeError::BadExtent(ExtentError::Overflow {
            extent: Extent::new(TOP, 1),
        }),
        |a| a.free(Extent::new(TOP, 1)),
    );
    refused(
        &mut a,
        FreeError::BadExtent(ExtentError::Overflow {
            extent: Extent::new(2, TOP),
        }),
        |a| a.free(Extent::new(2, TOP)),
    );
    refused(
        &mut a,
        FreeError::BadExtent(ExtentError::OutOfBounds {
            extent: Extent::new(90, 11),
            capacity: 100,
        }),
        |a| a.free(Extent::new(90, 11)),
    );
    refused(
        &mut a,
        FreeError::BadExtent(ExtentError::OutOfBounds {
            extent: Extent::new(100, 1),
            capacity: 100,
        }),
        |a| a.free(Extent::new(100, 1)),
    );
    // Never allocated.
    refused(
        &mut a,
        FreeError::NotAllocated {
            extent: Extent::new(50, 5),
            offending: Extent::new(50, 5),
        },
        |a| a.free(Extent::new(50, 5)),
    );
    // Double free.
    a.free(Extent::new(10, 5)).unwrap();
    refused(
        &mut a,
        FreeError::NotAllocated {
            extent: Extent::new(10, 5),
            offending: Extent::new(10, 5),
        },
        |a| a.free(Extent::new(10, 5)),
    );
    // Partly allocated, on either side and straddling a hole:
    //   0         10   15        40                 100
    //   |#########|....|#########|..................|
    refused(
        &mut a,
        FreeError::PartlyAllocated {
            extent: Extent::new(8, 4),
            offending: Extent::new(10, 2),
        },
        |a| a.free(Extent::new(8, 4)),
    );
    refused(
        &mut a,
        FreeError::PartlyAllocated {
            extent: Extent::new(38, 4),
            offending: Extent::new(40, 2),
        },
        |a| a.free(Extent::new(38, 4)),
    );
    refused(
        &mut a,
        FreeError::PartlyAllocated {
            extent: Extent::new(0, 40),
            offending: Extent::new(10, 5),
        },
        |a| a.free(Extent::new(0, 40)),
    );
}

#[test]
fn bad_reservations() {
    let mut a = fixture();
    refused(&mut a, AllocError::ZeroLength, |a| a.reserve(0));
    refused(&mut a, no_space(TOP, 60, 60, 0), |a| a.reserve(TOP));
    let mut res = a.reserve(10).unwrap();
    let id = res.id();
    let overdrawn = AllocError::Overdrawn {
        id,
        requested: 11,
        remaining: 10,
    };
    refused(&mut a, overdrawn, |a| {
        a.allocate_reserved(&mut res, Request::new(11))
    });
    refused(&mut a, overdrawn, |a| {
        a.allocate_many_reserved(&mut res, 11)
    });
    refused(&mut a, AllocError::ZeroLength, |a| {
        a.allocate_many_reserved(&mut res, 0)
    });
    // A range request is capped at what the reservation has left.
    assert_eq!(
        a.allocate_reserved(&mut res, Request::range(4..=50))
            .unwrap()
            .len,
        10
    );

    let mut other = ExtentAllocator::new(100);
    let mut foreign = other.reserve(1).unwrap();
    let fid = foreign.id();
    refused(&mut a, AllocError::UnknownReservation { id: fid }, |a| {
        a.allocate_reserved(&mut foreign, Request::new(1))
    });
    let stats = a.stats();
    let Err(ReservationError::Unknown { reservation }) = a.unreserve(foreign) else {
        panic!("foreign unreserve accepted")
    };
    assert_eq!(a.stats(), stats);
    assert_eq!(other.unreserve(reservation).unwrap(), 1);
    assert_eq!(a.unreserve(res).unwrap(), 0);
}

#[test]
fn a_clone_refuses_the_originals_reservations() {
    let mut a = fixture();
    let mut res = a.reserve(10).unwrap();
    let mut b = a.clone();
    // A snapshot: everything but spare arena capacity is equal.
    let without_metadata = |mut s: pinalloc::Stats| {
        s.metadata_bytes = 0;
        s
    };
    assert_eq!(without_metadata(b.stats()), without_metadata(a.stats()));
    let id = res.id();
    refused(&mut b, AllocError::UnknownReservation { id }, |b| {
        b.allocate_reserved(&mut res, Request::new(1))
    });
    let Err(ReservationError::Unknown { reservation }) = b.unreserve(res) else {
        panic!("a clone accepted the original's reservation")
    };
    assert_eq!(a.unreserve(reservation).unwrap(), 10);
    assert_eq!(
        b.stats().reserved_blocks,
        10,
        "the clone keeps its copy set aside"
    );
}

#[test]
fn no_space_tells_held_space_from_a_leak() {
    // 100 blocks: [0, 40) Allocated. Pin [50, 60) while Free, and [0, 10) of the
    // allocation; free the allocation while a reader is alive.
    let mut a = fixture();
    let excluded = a.pin(Extent::new(50, 10)).unwrap();
    let dma = a.pin(Extent::new(0, 10)).unwrap();
    let reader = a.begin_read();
    a.free(Extent::new(0, 40)).unwrap();
    let err = AllocError::NoSpace {
        requested: 51,
        free: 60,
        largest_free: 40,
        reserved: 0,
        deferred: Held::new(0, 40),
        pinned_free: 10,
    };
    refused(&mut a, err, |a| a.allocate(Request::new(51)));
    assert_eq!(a.end_read(reader).unwrap().released_blocks, 30);
    let err = AllocError::NoSpace {
        requested: 81,
        free: 90,
        largest_free: 40,
        reserved: 0,
        deferred: Held::new(10, 0),
        pinned_free: 10,
    };
    refused(&mut a, err, |a| a.allocate(Request::new(81)));
    assert!(
        err.to_string()
            .contains("10 deferred (10 by pins only, 0 by epochs)")
    );
    a.unpin(dma).unwrap();
    a.unpin(excluded).unwrap();
    assert_eq!(a.free_extents().collect::<Vec<_>>(), [Extent::new(0, 100)]);
}

#[test]
fn bad_pins_and_unpins() {
    let mut a = fixture();
    refused(
        &mut a,
        PinError::BadExtent(ExtentError::ZeroLength { start: 5 }),
        |a| a.pin(Extent::new(5, 0)),
    );
    refused(
        &mut a,
        PinError::BadExtent(ExtentError::Overflow {
            extent: Extent::new(TOP, 2),
        }),
        |a| a.pin(Extent::new(TOP, 2)),
    );
    refused(
        &mut a,
        PinError::BadExtent(ExtentError::OutOfBounds {
            extent: Extent::new(99, 2),
            capacity: 100,
        }),
        |a| a.pin_with(Extent::new(99, 2), PinMode::Blocking),
    );
    // Pinning Free blocks that reservations promised is refused.
    let res = a.reserve(55).unwrap();
    refused(
        &mut a,
        PinError::Reserved {
            extent: Extent::new(30, 20),
            free_blocks: 10,
            unreserved: 5,
        },
        |a| a.pin(Extent::new(30, 20)),
    );
    // Pinning Allocated blocks takes nothing from reservations.
    let ok = a.pin(Extent::new(0, 40)).unwrap();
    assert_eq!(a.unreserve(res).unwrap(), 55);
    a.unpin(ok).unwrap();
    refused(&mut a, PinError::Unknown { id: ok }, |a| a.unpin(ok));
    // A stale id stays refused once a newer pin has taken its place.
    let newer = a.pin(Extent::new(0, 40)).unwrap();
    refused(&mut a, PinError::Unknown { id: ok }, |a| a.unpin(ok));
    assert_eq!(a.pin_count(0), 1, "the newer pin is untouched");
    a.unpin(newer).unwrap();
    let mut other = ExtentAllocator::new(100);
    let foreign = other.pin(Extent::new(0, 1)).unwrap();
    refused(&mut a, PinError::Unknown { id: foreign }, |a| {
        a.unpin(foreign)
    });
}

#[test]
fn blocking_pins_make_frees_busy() {
    //  0    10 12   20    30          40
    //  |AAAA|BB|AAAA|AAAAA|AAAAAAAAAAA|.....   B = blocking pin [10, 12)
    let mut a = fixture();
    let busy = a.pin_with(Extent::new(10, 2), PinMode::Blocking).unwrap();
    let deferring = a.pin(Extent::new(11, 9)).unwrap();
    refused(
        &mut a,
        FreeError::Busy {
            extent: Extent::new(0, 40),
            pin: busy,
            blocked: Extent::new(10, 2),
        },
        |a| a.free(Extent::new(0, 40)),
    );
    refused(
        &mut a,
        FreeError::Busy {
            extent: Extent::new(11, 1),
            pin: busy,
            blocked: Extent::new(11, 1),
        },
        |a| a.free_on_commit(Extent::new(11, 1)),
    );
    // Beside the blocking pin, the deferring one only defers.
    assert_eq!(a.free(Extent::new(12, 8)).unwrap().deferred_blocks, 8);
    a.unpin(busy).unwrap();
    assert_eq!(a.free(Extent::new(0, 12)).unwrap().deferred_blocks, 1);
    a.unpin(deferring).unwrap();
    assert_eq!(a.stats().deferred_blocks, 0);
}

#[test]
fn bad_commits_and_readers() {
    let mut a = fixture();
    for epoch in [0, 2, TOP] {
        refused(&mut a, EpochError::NotOpen { epoch, open: 1 }, |a| {
            a.commit(epoch)
        });
    }
    for epoch in [0, 2, TOP] {
        refused(&mut a, EpochError::NotOpen { epoch, open: 1 }, |a| {
            a.prepare_commit(epoch).map(|_| ())
        });
        refused(&mut a, EpochError::NotOpen { epoch, open: 1 }, |a| {
            a.abort(epoch).map(|_| ())
        });
        refused(&mut a, EpochError::NotOpen { epoch, open: 1 }, |a| {
            a.abort_all(epoch).map(|_| ())
        });
    }
    for epoch in [0, 1, TOP] {
        let want = EpochError::NotPrepared {
            epoch,
            durable: 0,
            open: 1,
        };
        refused(&mut a, want, |a| a.finish_commit(epoch).map(|_| ()));
    }
    a.commit(1).unwrap();
    refused(&mut a, EpochError::NotOpen { epoch: 1, open: 2 }, |a| {
        a.commit(1)
    });
    a.prepare_commit(2).unwrap();
    for epoch in [1, 3, TOP] {
        let want = EpochError::NotPrepared {
            epoch,
            durable: 1,
            open: 3,
        };
        refused(&mut a, want, |a| a.finish_commit(epoch).map(|_| ()));
    }
    a.finish_commit(2).unwrap();
    let r = a.begin_read();
    a.end_read(r).unwrap();
    let stats = a.stats();
    assert_eq!(a.end_read(r), Err(EpochError::UnknownReader { id: r }));
    let mut other = ExtentAllocator::new(100);
    let foreign = other.begin_read();
    assert_eq!(
        a.end_read(foreign),
        Err(EpochError::UnknownReader { id: foreign })
    );
    assert_eq!(a.stats(), stats);
}

#[test]
fn bad_build_input() {
    let build_free =
        |list: &[Extent]| ExtentAllocator::from_free_extents(100, list.iter().copied()).map(|_| ());
    let build_alloc = |list: &[Extent]| {
        ExtentAllocator::from_allocated_extents(100, list.iter().copied()).map(|_| ())
    };
    for build in [build_free, build_alloc] {
        assert_eq!(
            build(&[Extent::new(5, 0)]),
            Err(BuildError::BadExtent(ExtentError::ZeroLength { start: 5 }))
        );
        assert_eq!(
            build(&[Extent::new(TOP, 2)]),
            Err(BuildError::BadExtent(ExtentError::Overflow {
                extent: Extent::new(TOP, 2)
            }))
        );
        assert_eq!(
            build(&[Extent::new(95, 6)]),
            Err(BuildError::BadExtent(ExtentError::OutOfBounds {
                extent: Extent::new(95, 6),
                capacity: 100
            }))
        );
        // A long extent swallowing two later ones reports the long one.
        assert_eq!(
            build(&[Extent::new(30, 2), Extent::new(0, 50), Extent::new(40, 1)]),
            Err(BuildError::Overlap {
                first: Extent::new(0, 50),
                second: Extent::new(30, 2)
            })
        );
        assert_eq!(build(&[]), Ok(()));
    }
}

#[test]
#[allow(clippy::reversed_empty_ranges)] // reversed ranges are the point
fn extent_conversions_reject_wrapping() {
    assert_eq!(
        Extent::try_from(7..3),
        Err(ExtentError::Reversed { start: 7, end: 3 })
    );
    let wraps = Extent::new(TOP - 1, 2);
    assert_eq!(
        std::ops::Range::try_from(wraps),
        Err(ExtentError::Overflow { extent: wraps })
    );
    assert_eq!(
        std::ops::Range::try_from(Extent::new(TOP - 1, 1)),
        Ok(TOP - 1..TOP)
    );
}

#[test]
fn the_whole_u64_space() {
    // Blocks 0..u64::MAX: the last block is u64::MAX - 1, ending exactly at u64::MAX.
    let mut a = ExtentAllocator::new(TOP);
    let last = a
        .allocate(Request::new(1).policy(Policy::Exact(TOP - 1)))
        .unwrap();
    assert_eq!(last, Extent::new(TOP - 1, 1));
    assert_eq!(last.checked_end(), Some(TOP));
    let near_top = a
        .allocate(Request::new(3).policy(Policy::Near(TOP - 1)))
        .unwrap();
    assert_eq!(near_top, Extent::new(TOP - 4, 3));
    let half = a
        .allocate(Request::new(5).align(1 << 63).policy(Policy::FirstFit))
        .unwrap();
    assert_eq!(half, Extent::new(0, 5));
    let upper = a.allocate(Request::new(5).align(1 << 63)).unwrap();
    assert_eq!(upper, Extent::new(1 << 63, 5));
    // Nothing else fits at a 2^63 boundary.
    assert!(matches!(
        a.allocate(Request::new(1).align(1 << 63)),
        Err(AllocError::NoSpace { .. })
    ));
    // Free now: [5, 2^63) and [2^63 + 5, TOP - 4); the widest range request takes
    // the larger, lower one.
    let big = a.allocate(Request::range(1..=TOP)).unwrap();
    assert_eq!(big, Extent::new(5, (1 << 63) - 5));
    assert_eq!(a.stats().largest_free_blocks, TOP - 4 - ((1 << 63) + 5));
    for e in [last, near_top, half, upper, big] {
        a.free(e).unwrap();
    }
    assert_eq!(a.free_extents().collect::<Vec<_>>(), [Extent::new(0, TOP)]);
    let all = a.allocate(Request::new(TOP)).unwrap();
    assert_eq!(all, Extent::new(0, TOP));
    a.check_invariants().unwrap();
    a.free(all).unwrap();
    assert_eq!(a.stats().free_blocks, TOP);
}

#[test]
fn capacity_near_two_to_the_63() {
    for capacity in [(1u64 << 63) - 1, 1 << 63, (1 << 63) + 1] {
        let mut a = ExtentAllocator::new(capacity);
        let e = a
            .allocate(Request::new(2).policy(Policy::Near(capacity - 1)))
            .unwrap();
        assert_eq!(e.checked_end(), Some(capacity));
        refused(
            &mut a,
            FreeError::BadExtent(ExtentError::OutOfBounds {
                extent: Extent::new(capacity - 1, 2),
                capacity,
            }),
            |a| a.free(Extent::new(capacity - 1, 2)),
        );
        refused(
            &mut a,
            AllocError::BadExtent(ExtentError::OutOfBounds {
                extent: Extent::new(capacity - 1, 2),
                capacity,
            }),
            |a| a.allocate(Request::new(2).policy(Policy::Exact(capacity - 1))),
        );
        let many = a.allocate_many(capacity - 2).unwrap();
        assert_eq!(many, [Extent::new(0, capacity - 2)]);
        assert!(matches!(
            a.allocate(Request::new(1)),
            Err(AllocError::NoSpace { free: 0, .. })
        ));
        a.free(Extent::new(0, capacity)).unwrap();
        a.check_invariants().unwrap();
    }
}

#[test]
fn metadata_does_not_grow_with_capacity() {
    // The same 2,000 scattered allocations on a small and an enormous space.
    let run = |capacity: u64| {
        let mut a = ExtentAllocator::new(capacity);
        let stride = capacity / 2048;
        for i in 0..2000u64 {
            a.allocate(Request::new(3).policy(Policy::Exact(i * stride)))
                .unwrap();
        }
        let s = a.stats();
        a.check_invariants().unwrap();
        (s.free_extents, s.metadata_bytes)
    };
    let small = run(1 << 20);
    let huge = run(1 << 62);
    assert_eq!(small.0, 2000); // one gap after each allocation
    assert_eq!(small, huge);
}

#[test]
fn an_empty_space_refuses_everything_cleanly() {
    let mut a = ExtentAllocator::new(0);
    refused(&mut a, no_space(1, 0, 0, 0), |a| {
        a.allocate(Request::new(1))
    });
    refused(
        &mut a,
        AllocError::BadExtent(ExtentError::OutOfBounds {
            extent: Extent::new(0, 1),
            capacity: 0,
        }),
        |a| a.allocate(Request::new(1).policy(Policy::Near(0))),
    );
    refused(
        &mut a,
        FreeError::BadExtent(ExtentError::OutOfBounds {
            extent: Extent::new(0, 1),
            capacity: 0,
        }),
        |a| a.free(Extent::new(0, 1)),
    );
    assert_eq!(a.free_extents().count(), 0);
}

/// The core is shared read-only across threads (stats, queries under a caller's lock):
/// it must stay `Send + Sync`, whatever caches it keeps.
#[test]
fn the_core_and_its_handles_cross_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<pinalloc::ExtentAllocator>();
    send_sync::<pinalloc::PinId>();
    send_sync::<pinalloc::Stats>();
}

/// A call's result, for the tables of failing calls: the variant its error names
/// (`None` for `Ok`), and its `Debug` text for the messages.
struct Got(Option<&'static str>, String);

use pinalloc::testing::{Variant, err_variant};

fn got<T: std::fmt::Debug, E: Variant + std::fmt::Debug>(r: &Result<T, E>) -> Got {
    Got(err_variant(r), format!("{r:?}"))
}

impl std::fmt::Display for Got {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.1)
    }
}

/// The catalogue: each kind of bad input, at every public entry point that takes
/// it, in the core, the shared allocator, a region, the constructors and the
/// durable-list decoder. Each call must fail with an error of that kind (its
/// innermost variant, as `testing::Variant` names it) and change nothing: the core is compared field by
/// field, the shared allocator by `SharedSnapshot`, the region by its stats and free
/// extents.
#[test]
fn the_catalogue_of_bad_input() {
    use pinalloc::testing::{SharedSnapshot, first_difference};
    use pinalloc::{FileBacking, HeapBacking, MmapBacking, Region, SharedAllocator, persist};

    let mut core = fixture(); // [0, 40) Allocated
    let shared = SharedAllocator::builder(100).groups(2).build();
    shared
        .allocate(Request::new(40).policy(Policy::Exact(0)))
        .unwrap();
    let region = Region::new(HeapBacking::new(100 * 64).unwrap(), 64).unwrap();
    let kept = region.allocate(Request::new(40)).unwrap();

    let mut kinds = 0;
    let mut checks = 0;
    let mut kind = |name: &str, calls: Vec<(&str, Got, &str)>| {
        kinds += 1;
        for (entry, got, want) in calls {
            checks += 1;
            assert!(
                got.0 == Some(want),
                "{name} at {entry}: expected an error naming {want}, got {got}"
            );
        }
    };
    // A pin already unpinned, made before the copy so that every call is compared.
    let stale = {
        let id = core.pin(Extent::new(0, 1)).unwrap();
        core.unpin(id).unwrap();
        id
    };
    let core_before = core.clone();
    let shared_before = SharedSnapshot::of(&shared);
    let region_before = (region.stats(), region.free_extents());

    kind(
        "zero length",
        vec![
            (
                "allocate",
                got(&core.allocate(Request::new(0))),
                "ZeroLength",
            ),
            ("allocate_many", got(&core.allocate_many(0)), "ZeroLength"),
            ("free", got(&core.free(Extent::new(50, 0))), "ZeroLength"),
            ("pin", got(&core.pin(Extent::new(50, 0))), "ZeroLength"),
            ("reserve", got(&core.reserve(0)), "ZeroLength"),
            (
                "shared allocate",
                got(&shared.allocate(Request::new(0))),
                "ZeroLength",
            ),
            (
                "shared free",
                got(&shared.free(Extent::new(50, 0))),
                "ZeroLength",
            ),
            (
                "region allocate",
                got(&region.allocate(Request::new(0)).map(|a| a.extent())),
                "ZeroLength",
            ),
            (
                "region attach",
                got(&region.attach(Extent::new(50, 0)).map(|a| a.extent())),
                "ZeroLength",
            ),
        ],
    );
    kind(
        "inverted length range",
        vec![
            (
                "allocate",
                got(&core.allocate(Request::range(std::ops::RangeInclusive::new(9, 3)))),
                "InvalidRange",
            ),
            (
                "shared allocate",
                got(&shared.allocate(Request::range(std::ops::RangeInclusive::new(9, 3)))),
                "InvalidRange",
            ),
        ],
    );
    kind(
        "zero alignment",
        vec![
            (
                "allocate",
                got(&core.allocate(Request::new(1).align(0))),
                "BadAlignment",
            ),
            (
                "shared allocate",
                got(&shared.allocate(Request::new(1).align(0))),
                "BadAlignment",
            ),
        ],
    );
    kind(
        "alignment not a power of two",
        vec![
            (
                "allocate",
                got(&core.allocate(Request::new(1).align(6))),
                "BadAlignment",
            ),
            (
                "region allocate",
                got(&region
                    .allocate(Request::new(1).align(6))
                    .map(|a| a.extent())),
                "BadAlignment",
            ),
        ],
    );
    kind(
        "exact start off its alignment",
        vec![
            (
                "allocate",
                got(&core.allocate(Request::new(2).align(8).policy(Policy::Exact(43)))),
                "Misaligned",
            ),
            (
                "shared allocate",
                got(&shared.allocate(Request::new(2).align(8).policy(Policy::Exact(43)))),
                "Misaligned",
            ),
        ],
    );
    kind(
        "extent wrapping past u64::MAX",
        vec![
            ("free", got(&core.free(Extent::new(TOP, 2))), "Overflow"),
            ("pin", got(&core.pin(Extent::new(TOP - 1, 3))), "Overflow"),
            (
                "allocate exact",
                got(&core.allocate(Request::new(2).policy(Policy::Exact(TOP)))),
                "Overflow",
            ),
            (
                "shared free",
                got(&shared.free(Extent::new(TOP, 2))),
                "Overflow",
            ),
            (
                "Extent::within",
                got(&Extent::new(TOP, 2).within(u64::MAX)),
                "Overflow",
            ),
        ],
    );
    kind(
        "extent past the end of the space",
        vec![
            ("free", got(&core.free(Extent::new(95, 10))), "OutOfBounds"),
            ("pin", got(&core.pin(Extent::new(99, 2))), "OutOfBounds"),
            (
                "allocate exact",
                got(&core.allocate(Request::new(10).policy(Policy::Exact(95)))),
                "OutOfBounds",
            ),
            (
                "shared pin",
                got(&shared.pin(Extent::new(99, 2)).map(|g| g.into_id())),
                "OutOfBounds",
            ),
            (
                "region attach",
                got(&region.attach(Extent::new(99, 2)).map(|a| a.extent())),
                "OutOfBounds",
            ),
            (
                "from_free_extents",
                got(&ExtentAllocator::from_free_extents(10, [Extent::new(8, 4)])
                    .map(|a| a.capacity_blocks())),
                "OutOfBounds",
            ),
        ],
    );
    kind(
        "goal outside the space",
        vec![
            (
                "allocate near",
                got(&core.allocate(Request::new(1).policy(Policy::Near(100)))),
                "OutOfBounds",
            ),
            (
                "shared allocate near",
                got(&shared.allocate(Request::new(1).policy(Policy::Near(TOP)))),
                "OutOfBounds",
            ),
        ],
    );
    kind(
        "freeing blocks that are not Allocated (double free)",
        vec![
            ("free", got(&core.free(Extent::new(60, 5))), "NotAllocated"),
            (
                "free_on_commit",
                got(&core.free_on_commit(Extent::new(60, 5))),
                "NotAllocated",
            ),
            (
                "shared free",
                got(&shared.free(Extent::new(60, 5))),
                "NotAllocated",
            ),
        ],
    );
    kind(
        "extent partly Allocated",
        vec![
            (
                "free",
                got(&core.free(Extent::new(35, 10))),
                "PartlyAllocated",
            ),
            (
                "shared free",
                got(&shared.free(Extent::new(35, 10))),
                "PartlyAllocated",
            ),
        ],
    );
    kind(
        "more blocks than there are",
        vec![
            (
                "allocate",
                got(&core.allocate(Request::new(TOP))),
                "NoSpace",
            ),
            ("allocate_many", got(&core.allocate_many(TOP)), "NoSpace"),
            ("reserve", got(&core.reserve(TOP)), "NoSpace"),
            (
                "shared allocate",
                got(&shared.allocate(Request::new(TOP))),
                "NoSpace",
            ),
            (
                "shared reserve",
                got(&shared.reserve(TOP).map(|r| r.remaining_blocks())),
                "NoSpace",
            ),
            (
                "region allocate",
                got(&region.allocate(Request::new(TOP)).map(|a| a.extent())),
                "NoSpace",
            ),
        ],
    );
    let mut other = ExtentAllocator::new(100);
    kind(
        "stale handle",
        vec![
            ("unpin", got(&core.unpin(stale)), "Unknown"),
            (
                "end_read",
                got(&{
                    let r = other.begin_read();
                    other.end_read(r).unwrap();
                    core.end_read(r)
                }),
                "UnknownReader",
            ),
        ],
    );
    kind(
        "another allocator's handle",
        vec![
            (
                "unpin",
                got(&core.unpin(other.pin(Extent::new(0, 1)).unwrap())),
                "Unknown",
            ),
            (
                "end_read",
                got(&core.end_read(other.begin_read())),
                "UnknownReader",
            ),
            (
                "allocate_reserved",
                got(&core.allocate_reserved(&mut other.reserve(1).unwrap(), Request::new(1))),
                "UnknownReservation",
            ),
            (
                "unreserve",
                got(&core.unreserve(other.reserve(1).unwrap())),
                "Unknown",
            ),
            (
                "shared end_read",
                got(&shared.end_read(other.begin_read())),
                "UnknownReader",
            ),
            (
                "region end_read",
                got(&region.end_read(other.begin_read())),
                "UnknownReader",
            ),
            (
                "region pin_of_token",
                got(&{
                    let foreign = SharedAllocator::new(8);
                    let pin = foreign.pin(Extent::new(0, 1)).unwrap();
                    region.pin_of_token(foreign.pin_token(pin.id()).unwrap())
                }),
                "UnknownToken",
            ),
        ],
    );
    kind(
        "an epoch that is not open",
        vec![
            ("commit past", got(&core.commit(0)), "NotOpen"),
            ("commit future", got(&core.commit(2)), "NotOpen"),
            ("commit u64::MAX", got(&core.commit(TOP)), "NotOpen"),
            ("shared commit", got(&shared.commit(TOP)), "NotOpen"),
            ("region commit", got(&region.commit(TOP)), "NotOpen"),
            ("region abort", got(&region.abort(0)), "NotOpen"),
            (
                "region prepare_commit",
                got(&region.prepare_commit(2)),
                "NotOpen",
            ),
            (
                "region finish_commit",
                got(&region.finish_commit(1)),
                "NotPrepared",
            ),
        ],
    );
    kind(
        "overlapping extents at mount",
        vec![
            (
                "from_free_extents",
                got(&ExtentAllocator::from_free_extents(
                    10,
                    [Extent::new(0, 4), Extent::new(3, 2)],
                )
                .map(|a| a.capacity_blocks())),
                "Overlap",
            ),
            (
                "from_allocated_extents",
                got(&ExtentAllocator::from_allocated_extents(
                    10,
                    [Extent::new(0, 4), Extent::new(2, 2)],
                )
                .map(|a| a.capacity_blocks())),
                "Overlap",
            ),
        ],
    );
    let list = persist::encode(&persist::FreeList::new(10, 1, vec![Extent::new(2, 3)])).unwrap();
    let mut flipped = list.clone();
    flipped[14] ^= 4;
    kind(
        "damaged durable free list",
        vec![
            (
                "decode torn",
                got(&persist::decode(&list[..list.len() - 1])),
                "Truncated",
            ),
            (
                "decode corrupted",
                got(&persist::decode(&flipped)),
                "Corrupted",
            ),
            (
                "decode foreign bytes",
                got(&persist::decode(b"not a free list at all")),
                "BadMagic",
            ),
        ],
    );
    kind(
        "a block size that fits no backing",
        vec![
            (
                "Region::new block 0",
                got(&Region::new(HeapBacking::new(4096).unwrap(), 0).map(|r| r.capacity_blocks())),
                "BlockSize",
            ),
            (
                "Region::new block past the backing",
                got(&Region::new(HeapBacking::new(4096).unwrap(), 8192)
                    .map(|r| r.capacity_blocks())),
                "BlockSize",
            ),
        ],
    );
    let tmp = tempfile::Builder::new()
        .prefix("pinalloc-hostile-")
        .tempdir()
        .unwrap();
    let dir = tmp.path();
    let file = || {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join("f"))
            .unwrap();
        f.set_len(4096).unwrap();
        f
    };
    let past_offsets = i64::MAX as u64 + 1;
    kind(
        "a backing length no file or memory can have",
        vec![
            (
                "HeapBacking::new 0",
                got(&HeapBacking::new(0)),
                "InvalidInput",
            ),
            (
                "HeapBacking::new u64::MAX",
                got(&HeapBacking::new(u64::MAX)),
                "InvalidInput",
            ),
            (
                "MmapBacking::anonymous u64::MAX",
                got(&MmapBacking::anonymous(u64::MAX)),
                "InvalidInput",
            ),
            (
                "MmapBacking::open past i64::MAX",
                // SAFETY: the file is this test's own (and is refused before it is made).
                got(&unsafe { MmapBacking::open(dir.join("m"), past_offsets) }),
                "InvalidInput",
            ),
            (
                "FileBacking::open past i64::MAX",
                got(&FileBacking::open(dir.join("g"), past_offsets)),
                "InvalidInput",
            ),
            (
                "FileBacking::from_file 0",
                got(&FileBacking::from_file(file(), 0)),
                "InvalidInput",
            ),
            (
                "FileBacking::from_file u64::MAX",
                got(&FileBacking::from_file(file(), u64::MAX)),
                "InvalidInput",
            ),
            (
                "FileBacking::from_file past the file's end",
                got(&FileBacking::from_file(file(), 4097)),
                "InvalidInput",
            ),
        ],
    );
    assert_eq!(
        first_difference(&core_before, &core),
        None,
        "the core changed"
    );
    assert_eq!(
        shared_before.first_difference(&SharedSnapshot::of(&shared)),
        None,
        "the shared allocator changed"
    );
    assert_eq!(
        (region.stats(), region.free_extents()),
        region_before,
        "the region changed"
    );
    core.check_invariants().unwrap();
    shared.check_invariants().unwrap();
    region.check_invariants().unwrap();
    drop(kept);
    eprintln!("{kinds} kinds of bad input, {checks} entry-point checks");
}

/// Every capacity the core accepts, up to `u64::MAX`, works in `SharedAllocator` with
/// any group count: every block is there, the very top can be allocated exactly, and
/// the groups cover the space (checked by `check_invariants`).
#[test]
fn shared_allocators_at_the_top_of_the_space() {
    use pinalloc::{BlockState, SharedAllocator};
    let capacities = [TOP, TOP - 1, (1 << 63) + 1, 1 << 63, 3 << 62];
    let groups = [
        None,
        Some(0),
        Some(1),
        Some(2),
        Some(7),
        Some(64),
        Some(1000),
    ];
    for capacity in capacities {
        for count in groups {
            let mut b = SharedAllocator::builder(capacity);
            if let Some(n) = count {
                b = b.groups(n);
            }
            let a = b.build();
            let at = format!("capacity {capacity}, groups {count:?}");
            a.check_invariants().unwrap_or_else(|v| panic!("{at}: {v}"));
            assert_eq!(a.stats().space.free_blocks, capacity, "{at}");
            assert_eq!(a.free_extents(), [Extent::new(0, capacity)], "{at}");
            assert_eq!(a.state_of(capacity - 1), Some(BlockState::Free), "{at}");
            assert_eq!(a.state_of(capacity), None, "{at}");
            let top = a
                .allocate(Request::new(1).policy(Policy::Exact(capacity - 1)))
                .unwrap_or_else(|e| panic!("{at}: {e}"));
            assert_eq!(top, Extent::new(capacity - 1, 1), "{at}");
            // The whole last group, exactly, from its first block.
            let last_start = (a.group_count() as u64 - 1) * a.group_blocks();
            let last_len = capacity - last_start;
            a.free(top).unwrap();
            let whole = a
                .allocate(Request::new(last_len).policy(Policy::Exact(last_start)))
                .unwrap_or_else(|e| panic!("{at}: {e}"));
            assert_eq!(whole.checked_end(), Some(capacity), "{at}");
            let near = a.allocate(Request::new(3).policy(Policy::Near(capacity - 1)));
            if a.group_count() > 1 {
                let near = near.unwrap_or_else(|e| panic!("{at}: {e}"));
                assert_eq!(near.checked_end(), Some(last_start), "{at}");
                a.free(near).unwrap();
            }
            a.free(whole).unwrap();
            assert_eq!(a.stats().space.free_blocks, capacity, "{at}");
            a.check_invariants().unwrap_or_else(|v| panic!("{at}: {v}"));
        }
    }
}

/// A group count too large to build is taken as the most allowed, never an abort for
/// want of memory.
#[test]
fn a_group_count_past_the_limit_is_capped() {
    use pinalloc::SharedAllocator;
    for count in [SharedAllocator::MAX_GROUPS + 1, 1 << 40, TOP] {
        let a = SharedAllocator::builder(TOP).groups(count).build();
        assert_eq!(a.group_count() as u64, SharedAllocator::MAX_GROUPS);
        assert_eq!(a.stats().space.free_blocks, TOP);
        a.check_invariants().unwrap();
    }
    // A small space still gets one group per block at most.
    let a = SharedAllocator::builder(5).groups(TOP).build();
    assert_eq!(a.group_count(), 5);
}

/// A `Region` over a backing that claims the whole `u64` byte space, in 1-byte blocks:
/// the allocator gets every block, the top one included.
#[test]
fn a_region_over_the_whole_byte_space() {
    use pinalloc::{Backing, BackingError, Region};
    #[derive(Debug)]
    struct Claims; // never touched: discards are off, nothing is read or written
    impl Backing for Claims {
        fn len_bytes(&self) -> u64 {
            TOP
        }
        unsafe fn read_at(&self, _: u64, _: &mut [u8]) -> Result<(), BackingError> {
            unreachable!("the test reads nothing")
        }
        unsafe fn write_at(&self, _: u64, _: &[u8]) -> Result<(), BackingError> {
            unreachable!("the test writes nothing")
        }
        fn sync(&self) -> Result<(), BackingError> {
            Ok(())
        }
    }
    for groups in [1, 2, 7, 64, 1000] {
        let r = Region::builder(Claims, 1)
            .groups(groups)
            .discard_released(false)
            .build()
            .unwrap();
        assert_eq!(r.capacity_blocks(), TOP);
        assert_eq!(r.stats().space.free_blocks, TOP, "groups {groups}");
        let top = r
            .allocate(Request::new(1).policy(Policy::Exact(TOP - 1)))
            .unwrap();
        assert_eq!(top.extent(), Extent::new(TOP - 1, 1));
        r.check_invariants().unwrap();
    }
}

/// A failed aligned request leaves the stats as they were, the free index's memory
/// included: a view for an alignment above 64 blocks is kept only by a success.
#[test]
fn a_failed_aligned_request_changes_no_stats() {
    let mut a = ExtentAllocator::new(1000);
    a.allocate(Request::new(100)).unwrap();
    let before = a.stats();
    // More blocks than are free.
    assert!(a.allocate(Request::new(950).align(128)).is_err());
    assert_eq!(a.stats(), before);

    // Enough free blocks, but no aligned run long enough: 400 free runs of 130
    // blocks, each starting at a multiple of 512, between Allocated runs of 382.
    let mut a = ExtentAllocator::new(400 * 512);
    for i in 0..400u64 {
        a.allocate(Request::new(382).policy(Policy::Exact(i * 512 + 130)))
            .unwrap();
    }
    // Views kept by successes, for four alignments, so a new one must evict.
    for align in [128, 512, 1024, 2048] {
        let e = a.allocate(Request::new(1).align(align)).unwrap();
        a.free(e).unwrap();
    }
    let before = a.stats();
    let refusals = [
        Request::new(131).align(256),
        Request::new(131).align(256).policy(Policy::FirstFit),
        Request::new(131).align(256).policy(Policy::Near(5_000)),
        Request::range(131..=1000).align(256),
        Request::new(131).align(128),
        Request::new(10_000).align(4096),
    ];
    for round in 0..3 {
        for r in refusals {
            let err = a.allocate(r).unwrap_err();
            assert!(matches!(err, AllocError::NoSpace { .. }), "{r:?}: {err}");
            assert_eq!(a.stats(), before, "round {round}: {r:?} changed the stats");
        }
    }
    a.check_invariants().unwrap();
    // A success with the same alignment still works and may keep its view.
    let e = a.allocate(Request::new(130).align(256)).unwrap();
    assert_eq!(e.start % 256, 0);
    a.check_invariants().unwrap();
}

/// Every family's `kind()`, on errors the calls really return: the question a caller
/// asks ("retry later, or fix the input?") without matching variants.
#[test]
fn every_error_tells_its_kind() {
    use pinalloc::persist::{FreeList, decode, encode};
    use pinalloc::{
        ErrorKind as K, HeapBacking, PinOptions, Region, SharedAllocator, SharedPinError,
    };
    use std::time::Duration;

    let mut core = ExtentAllocator::new(16);
    let a = core.allocate(Request::new(8)).unwrap();
    let blocking = core.pin_with(Extent::new(0, 1), PinMode::Blocking).unwrap();
    let stale = {
        let id = core.pin(Extent::new(1, 1)).unwrap();
        core.unpin(id).unwrap();
        id
    };
    let mut other = ExtentAllocator::new(16);
    let theirs = other.reserve(1).unwrap();
    let reader = core.begin_read();
    core.end_read(reader).unwrap();
    let mut res = core.reserve(2).unwrap();
    let core_kinds = [
        (
            "zero length",
            core.allocate(Request::new(0)).unwrap_err().kind(),
            K::BadInput,
        ),
        (
            "bad alignment",
            core.allocate(Request::new(1).align(3)).unwrap_err().kind(),
            K::BadInput,
        ),
        (
            "no space",
            core.allocate(Request::new(9)).unwrap_err().kind(),
            K::NoSpace,
        ),
        (
            "exact start not free",
            core.allocate(Request::new(1).policy(Policy::Exact(0)))
                .unwrap_err()
                .kind(),
            K::NoSpace,
        ),
        (
            "overdrawn",
            core.allocate_reserved(&mut res, Request::new(3))
                .unwrap_err()
                .kind(),
            K::Limit,
        ),
        (
            "double free",
            core.free(Extent::new(12, 1)).unwrap_err().kind(),
            K::BadInput,
        ),
        ("busy", core.free(a).unwrap_err().kind(), K::Busy),
        (
            "pin past the end",
            core.pin(Extent::new(15, 2)).unwrap_err().kind(),
            K::BadInput,
        ),
        (
            "unpin twice",
            core.unpin(stale).unwrap_err().kind(),
            K::Stale,
        ),
        (
            "ended reader",
            core.end_read(reader).unwrap_err().kind(),
            K::Stale,
        ),
        (
            "committed epoch",
            core.commit(0).unwrap_err().kind(),
            K::Stale,
        ),
        (
            "foreign reservation",
            core.unreserve(theirs).unwrap_err().kind(),
            K::Stale,
        ),
        (
            "overlapping build",
            ExtentAllocator::from_free_extents(8, [Extent::new(0, 4), Extent::new(2, 4)])
                .unwrap_err()
                .kind(),
            K::BadInput,
        ),
        (
            "reversed range",
            Extent::try_from(core::ops::Range { start: 9, end: 3 })
                .unwrap_err()
                .kind(),
            K::BadInput,
        ),
    ];
    core.unpin(blocking).unwrap();

    let shared = SharedAllocator::builder(64)
        .groups(2)
        .pin_quota_blocks(4)
        .build();
    let shared_kinds = [
        (
            "shared double free",
            shared.free(Extent::new(0, 4)).unwrap_err().kind(),
            K::BadInput,
        ),
        (
            "quota",
            shared
                .pin_owned(Extent::new(0, 8), PinOptions::new().owner(1))
                .map_err(|e: SharedPinError| e.kind())
                .unwrap_err(),
            K::Limit,
        ),
        (
            "exact across groups",
            shared
                .allocate(Request::new(4).policy(Policy::Exact(30)))
                .unwrap_err()
                .kind(),
            K::BadInput,
        ),
        (
            "wait for more than a group holds",
            shared
                .allocate_wait(Request::new(65), Duration::from_millis(1))
                .unwrap_err()
                .kind(),
            K::NoSpace,
        ),
    ];
    let full = [
        shared.allocate(Request::new(32)).unwrap(),
        shared.allocate(Request::new(32)).unwrap(),
    ];
    let timeout = shared
        .allocate_wait(Request::new(1), Duration::from_millis(1))
        .map(|_| ())
        .unwrap_err()
        .kind();
    for e in full {
        shared.free(e).unwrap();
    }

    let region = Region::new(HeapBacking::new(8 * 64).unwrap(), 64).unwrap();
    let region_kinds = [
        (
            "region no space",
            region.allocate(Request::new(9)).unwrap_err().kind(),
            K::NoSpace,
        ),
        (
            "truncate to zero",
            region
                .allocate(Request::new(2))
                .unwrap()
                .truncate(0)
                .unwrap_err()
                .kind(),
            K::BadInput,
        ),
    ];

    let bad_list = FreeList::new(8, 0, vec![Extent::new(4, 2), Extent::new(0, 2)]);
    let persist_kinds = [
        ("torn bytes", decode(b"pin").unwrap_err().kind(), K::Corrupt),
        (
            "unsorted list",
            encode(&bad_list).unwrap_err().kind(),
            K::BadInput,
        ),
    ];

    for (what, got, want) in core_kinds
        .into_iter()
        .chain(shared_kinds)
        .chain(region_kinds)
        .chain(persist_kinds)
        .chain([("allocate_wait", timeout, K::Timeout)])
    {
        assert_eq!(got, want, "{what}");
    }
}

/// A read guard whose reader was ended by hand: its `end` is refused as stale and
/// changes nothing, and its drop after that changes nothing either.
#[test]
fn a_read_guard_ended_twice_is_refused_and_changes_nothing() {
    use pinalloc::testing::SharedSnapshot;
    use pinalloc::{EpochError, ErrorKind, SharedAllocator};

    let alloc = SharedAllocator::builder(64).groups(2).build();
    let e = alloc.allocate(Request::new(20)).unwrap();
    let keeper = alloc.begin_read(); // an older reader that holds e throughout
    let guard = alloc.read();
    alloc.free(e).unwrap();
    alloc.end_read(guard.id()).unwrap();
    let before = SharedSnapshot::of(&alloc);
    let id = guard.id();
    let err = guard.end().unwrap_err();
    assert_eq!(err, EpochError::UnknownReader { id });
    assert_eq!(err.kind(), ErrorKind::Stale);
    assert_eq!(before.first_difference(&SharedSnapshot::of(&alloc)), None);
    drop(alloc.read()); // a fresh guard's drop still ends its own read only
    assert_eq!(alloc.readers().len(), 1);
    assert_eq!(alloc.readers()[0].held_alone_blocks, 20);
    alloc.end_read(keeper).unwrap();
    assert_eq!(alloc.stats().space.free_blocks, 64);
}

/// After `reset`, the allocator is as new and every handle of the old one is refused
/// as unknown, on the core and on the shared allocator: none is mistaken for a new
/// pin, reader or reservation, even once new ones with the same numbers exist.
#[test]
fn reset_leaves_every_old_handle_stale() {
    use pinalloc::{EpochError, PinError, ReservationError, SharedAllocator};

    let mut core = ExtentAllocator::new(64);
    let e = core.allocate(Request::new(16)).unwrap();
    let pin = core.pin(Extent::new(0, 4)).unwrap();
    let reader = core.begin_read();
    let res = core.reserve(8).unwrap();
    core.free(e).unwrap(); // Deferred under the pin and the reader
    assert!(!core.is_empty());
    core.reset();
    assert!(core.is_empty());
    assert_eq!(core.stats(), ExtentAllocator::new(64).stats());
    // New handles with the same numbers as the old ones.
    let (pin2, reader2) = (core.pin(Extent::new(0, 4)).unwrap(), core.begin_read());
    assert_eq!(core.unpin(pin), Err(PinError::Unknown { id: pin }));
    assert_eq!(
        core.end_read(reader),
        Err(EpochError::UnknownReader { id: reader })
    );
    assert!(matches!(
        core.unreserve(res),
        Err(ReservationError::Unknown { .. })
    ));
    assert!(core.free(e).is_err(), "the old extent is Free now");
    core.unpin(pin2).unwrap();
    core.end_read(reader2).unwrap();
    core.check_invariants().unwrap();

    let mut shared = SharedAllocator::builder(64).groups(4).build();
    let e = shared.allocate(Request::new(16)).unwrap();
    let pin = shared.pin(Extent::new(10, 30)).unwrap().into_id();
    let reader = shared.begin_read();
    shared.free(e).unwrap();
    shared.reset();
    assert!(shared.is_empty());
    let s = shared.stats();
    assert_eq!(
        (s.space.free_blocks, s.space.live_pins, s.space.live_readers),
        (64, 0, 0)
    );
    let pin2 = shared.pin(Extent::new(10, 30)).unwrap().into_id();
    assert!(matches!(shared.unpin(pin), Err(PinError::Unknown { .. })));
    let reader2 = shared.begin_read();
    assert!(shared.end_read(reader).is_err());
    assert_eq!(
        shared.readers()[0].id,
        reader2,
        "the new reader is still live"
    );
    assert_eq!(shared.pins().len(), 1);
    shared.unpin(pin2).unwrap();
    shared.end_read(reader2).unwrap();
    shared.check_invariants().unwrap();
}

/// A space of no blocks resets too, and is empty before and after.
#[test]
fn reset_of_a_space_of_no_blocks() {
    use pinalloc::SharedAllocator;

    let mut core = ExtentAllocator::new(0);
    assert!(core.is_empty());
    core.reset();
    assert!(core.is_empty());
    let mut shared = SharedAllocator::new(0);
    assert!(shared.is_empty());
    shared.reset();
    assert!(shared.is_empty());
    assert_eq!(shared.stats().space.capacity_blocks, 0);
    shared.check_invariants().unwrap();
}

/// Growing to the top of the `u64` space and back, shrinking under every kind of
/// hold, and a space of no blocks.
#[test]
fn resizes_at_the_edges() {
    let mut a = fixture(); // [0, 40) Allocated of 100
    a.grow(TOP).unwrap();
    assert_eq!(
        a.free_extents().collect::<Vec<_>>(),
        [Extent::new(40, TOP - 40)]
    );
    assert_eq!(
        a.allocate(Request::new(5).policy(Policy::Exact(TOP - 5)))
            .unwrap()
            .start,
        TOP - 5
    );
    refused(
        &mut a,
        ResizeError::NotLarger {
            capacity: TOP,
            requested: 100,
        },
        |a| a.grow(100),
    );
    refused(
        &mut a,
        ResizeError::InUse {
            block: TOP - 5,
            state: BlockState::Allocated,
        },
        |a| a.shrink(100),
    );
    a.free(Extent::new(TOP - 5, 5)).unwrap();
    a.shrink(100).unwrap();
    // Under a pin of Free blocks, a Deferred block and a reservation.
    let pin = a.pin(Extent::new(90, 2)).unwrap();
    refused(&mut a, ResizeError::Pinned { block: 90, pins: 1 }, |a| {
        a.shrink(50)
    });
    a.unpin(pin).unwrap();
    let e = a
        .allocate(Request::new(1).policy(Policy::Exact(70)))
        .unwrap();
    let reader = a.begin_read();
    a.free(e).unwrap(); // Deferred: the reader may see it
    refused(
        &mut a,
        ResizeError::InUse {
            block: 70,
            state: BlockState::Deferred,
        },
        |a| a.shrink(50),
    );
    a.end_read(reader).unwrap();
    let r = a.reserve(50).unwrap();
    refused(
        &mut a,
        ResizeError::Reserved {
            reserved: 50,
            free: 10,
        },
        |a| a.shrink(50),
    );
    a.unreserve(r).unwrap();
    a.shrink(40).unwrap();
    refused(
        &mut a,
        ResizeError::NotSmaller {
            capacity: 40,
            requested: TOP,
        },
        |a| a.shrink(TOP),
    );
    a.free(Extent::new(0, 40)).unwrap();
    a.shrink(0).unwrap();
    assert!(a.is_empty());
    a.grow(3).unwrap();
    assert_eq!(a.allocate(Request::new(3)).unwrap(), Extent::new(0, 3));
    a.check_invariants().unwrap();

    // Shared: past the most groups it can have, then the same edges.
    let mut s = SharedAllocator::builder(1 << 16).groups(1 << 16).build();
    assert_eq!(
        s.grow(TOP),
        Err(ResizeError::TooLarge {
            requested: TOP,
            max: 1 << 16
        })
    );
    assert_eq!(s.capacity_blocks(), 1 << 16);
    let mut s = SharedAllocator::builder(0).build();
    s.grow(TOP).unwrap(); // one group: it grows
    assert_eq!(s.free_extents(), [Extent::new(0, TOP)]);
    s.shrink(0).unwrap();
    assert!(s.free_extents().is_empty());
    s.check_invariants().unwrap();
}

/// A region's growth and shrink at the edges: past what the backing may reach, to
/// `u64::MAX`, below and above the capacity, under a handle, a guard and a reader,
/// to zero blocks, and over a backing that cannot change its length. Each refusal
/// changes nothing a caller can see, the rollback of a refused shrink included (a
/// live reader must not keep its tail Deferred).
#[test]
fn region_resizes_at_the_edges() {
    use pinalloc::{Backing, BackingOp, HeapBacking, MmapBacking, Region, RegionError};
    fn seen<B: pinalloc::Backing>(r: &Region<B>) -> impl PartialEq + std::fmt::Debug {
        (
            r.capacity_blocks(),
            r.stats(),
            r.free_extents(),
            r.runs(0..u64::MAX).collect::<Vec<_>>(),
        )
    }
    fn refused<B: pinalloc::Backing>(
        r: &Region<B>,
        want: &str,
        call: impl FnOnce(&Region<B>) -> Result<(), RegionError>,
    ) {
        let before = seen(r);
        let err = call(r).unwrap_err();
        assert!(format!("{err:?}").contains(want), "{err:?}, not {want}");
        assert_eq!(seen(r), before, "{want}");
        r.check_invariants().unwrap();
    }
    let region = Region::new(
        MmapBacking::anonymous_growable(16 * 64, 64 * 64).unwrap(),
        64,
    )
    .unwrap();
    assert_eq!(
        (region.capacity_blocks(), region.max_capacity_blocks()),
        (16, 64)
    );
    refused(
        &region,
        "TooLarge { requested: 18446744073709551615, max: 64 }",
        |r| r.grow(TOP),
    );
    refused(&region, "TooLarge { requested: 65, max: 64 }", |r| {
        r.grow(65)
    });
    refused(&region, "NotLarger", |r| r.grow(8));
    refused(&region, "NotSmaller", |r| r.shrink(TOP));
    refused(&region, "InvalidInput", |r| r.shrink(0));
    let reader = region.read();
    let a = region
        .allocate(Request::new(2).policy(Policy::Exact(12)))
        .unwrap();
    let guard = a.pin().unwrap();
    refused(&region, "InUse { block: 12, state: Allocated }", |r| {
        r.shrink(10)
    });
    a.free().unwrap(); // Deferred: the guard and the reader hold it
    refused(&region, "InUse { block: 12, state: Deferred }", |r| {
        r.shrink(10)
    });
    // Growth under all of that: the new blocks are Free at once, reader or not.
    region.grow(64).unwrap();
    assert_eq!(region.stats().space.free_blocks, 62);
    drop(guard);
    drop(reader);
    region.shrink(1).unwrap();
    assert_eq!(region.backing().len_bytes(), 64);
    assert!(region.is_empty());
    region.grow(64).unwrap();
    assert_eq!(region.free_extents(), [Extent::new(0, 64)]);
    region.check_invariants().unwrap();

    // A backing of fixed length: a shrink is refused by it and rolled back, and the
    // blocks it had taken are Free again though a reader is live.
    let heap = Region::new(HeapBacking::new(8 * 64).unwrap(), 64).unwrap();
    let _reader = heap.read();
    refused(&heap, "TooLarge { requested: 9, max: 8 }", |r| r.grow(9));
    refused(&heap, "Unsupported", |r| r.shrink(4));
    assert_eq!(heap.state_of(6), Some(BlockState::Free));
    let err = heap.shrink(4).unwrap_err();
    assert!(
        matches!(err, RegionError::Backing(ref e) if e.op == BackingOp::Resize),
        "{err:?}"
    );

    // A free list past the backing's length is refused at open; a reset keeps the
    // length and the blocks past it held.
    let grows = || MmapBacking::anonymous_growable(16 * 64, 64 * 64).unwrap();
    let err = Region::builder(grows(), 64)
        .from_free_extents([Extent::new(10, 10)])
        .unwrap_err();
    assert!(format!("{err:?}").contains("BadExtent"), "{err:?}");
    let mut region = Region::builder(grows(), 64).max_blocks(32).build().unwrap();
    assert_eq!(region.max_capacity_blocks(), 32);
    region.grow(20).unwrap();
    drop(region.allocate(Request::new(20)).unwrap().into_extent());
    region.reset().unwrap();
    assert_eq!(region.capacity_blocks(), 20);
    assert_eq!(region.free_extents(), [Extent::new(0, 20)]);
    region.check_invariants().unwrap();
    region.grow(32).unwrap();
    assert_eq!(region.free_extents(), [Extent::new(0, 32)]);
}

/// New groups join the epochs: a reader that began before the growth holds blocks
/// freed in the new groups after it, and a prepared commit still waits there.
#[test]
fn grown_groups_join_readers_and_commits() {
    let mut s = SharedAllocator::builder(64).groups(4).build();
    let reader = s.begin_read();
    s.commit(1).unwrap();
    s.grow(128).unwrap();
    assert_eq!(s.group_count(), 8);
    let e = s
        .allocate(Request::new(8).policy(Policy::Exact(100)))
        .unwrap();
    assert_eq!(
        s.free(e).unwrap().deferred_blocks,
        8,
        "the old reader holds it"
    );
    assert_eq!(s.readers()[0].held_alone_blocks, 8);
    assert_eq!(s.end_read(reader).unwrap().released_blocks, 8);
    let e = s
        .allocate(Request::new(8).policy(Policy::Exact(100)))
        .unwrap();
    s.commit(2).unwrap();
    s.free_on_commit(e).unwrap();
    s.prepare_commit(3).unwrap();
    s.grow(200).unwrap();
    assert_eq!(s.finish_commit(3).unwrap().released_blocks, 8);
    s.check_invariants().unwrap();
}

/// Tokens of another allocator, of a clone, and of gone pins are refused, on both
/// layers; a token made twice is the same.
#[test]
fn foreign_and_stale_tokens_are_refused() {
    let mut a = fixture();
    let mut b = fixture();
    let pa = a.pin(Extent::new(0, 4)).unwrap();
    let pb = b.pin(Extent::new(0, 4)).unwrap();
    let (ta, tb) = (a.pin_token(pa).unwrap(), b.pin_token(pb).unwrap());
    assert_ne!(ta, tb);
    assert_eq!(a.pin_token(pa), Ok(ta));
    refused(&mut a, PinError::UnknownToken { token: tb }, |a| {
        a.pin_of_token(tb)
    });
    refused(&mut a, PinError::Unknown { id: pb }, |a| a.pin_token(pb));
    let clone = a.clone();
    assert_eq!(
        clone.pin_of_token(ta),
        Err(PinError::UnknownToken { token: ta })
    );
    a.unpin(a.pin_of_token(ta).unwrap()).unwrap();
    refused(&mut a, PinError::UnknownToken { token: ta }, |a| {
        a.pin_of_token(ta)
    });
    refused(&mut a, PinError::UnknownToken { token: 0 }, |a| {
        a.pin_of_token(0)
    });
    refused(&mut a, PinError::UnknownToken { token: TOP }, |a| {
        a.pin_of_token(TOP)
    });

    let (s, t) = (SharedAllocator::new(64), SharedAllocator::new(64));
    let ps = s.pin(Extent::new(0, 4)).unwrap().into_id();
    let pt = t.pin(Extent::new(0, 4)).unwrap().into_id();
    let (ts, tt) = (s.pin_token(ps).unwrap(), t.pin_token(pt).unwrap());
    assert!(s.pin_of_token(tt).is_err() && t.pin_of_token(ts).is_err());
    assert!(s.pin_token(pt).is_err());
    s.unpin(ps).unwrap();
    assert_eq!(
        s.pin_of_token(ts),
        Err(PinError::UnknownToken { token: ts })
    );
    assert!(s.pin_token(ps).is_err());
    assert_eq!(t.pin_of_token(tt), Ok(pt));
}

/// A shrink names a block in use before a reservation that would not fit, on the
/// shared layer as on the core; and a space shrunk to one group grows its groups back.
#[test]
fn shared_shrink_names_blocks_first_and_grows_groups_back() {
    let mut s = SharedAllocator::builder(64).groups(4).build();
    s.allocate(Request::new(16).policy(Policy::Exact(0)))
        .unwrap();
    s.allocate(Request::new(16).policy(Policy::Exact(16)))
        .unwrap();
    s.allocate(Request::new(1).policy(Policy::Exact(50)))
        .unwrap();
    // A reservation leaked, all of it in group 2 (the first of the freest): only
    // `&mut` methods see it now. Cutting [40, 48) off group 2 would leave it 8 Free
    // blocks for 10 reserved, but block 50 comes first.
    std::mem::forget(s.reserve(10).unwrap());
    assert_eq!(s.group_stats()[2].stats.reserved_blocks, 10);
    assert_eq!(
        s.shrink(40),
        Err(ResizeError::InUse {
            block: 50,
            state: BlockState::Allocated
        })
    );
    s.free(Extent::new(50, 1)).unwrap();
    let mut t = SharedAllocator::builder(64).groups(4).build();
    t.shrink(16).unwrap();
    assert_eq!(t.group_count(), 1);
    t.grow(64).unwrap();
    assert_eq!(t.group_count(), 4, "the groups come back");
    t.check_invariants().unwrap();
}

/// A region resets only when nothing shares it: a clone, an allocation or a pin
/// guard refuses it and changes nothing; alone, every block is Free and discarded.
#[cfg(unix)]
#[test]
fn a_region_resets_only_alone() {
    use pinalloc::{HeapBacking, Region, RegionError};
    let mut region = Region::new(HeapBacking::new(8192).unwrap(), 512).unwrap();
    let mut a = region.allocate(Request::new(4)).unwrap();
    a.as_mut_slice().unwrap().fill(7);
    let guard = a.pin().unwrap();
    let before = region.stats();
    assert!(matches!(
        region.reset(),
        Err(RegionError::Shared { holders: 2 })
    ));
    let clone = region.clone();
    assert!(matches!(
        region.reset(),
        Err(RegionError::Shared { holders: 3 })
    ));
    assert_eq!(
        region.stats().space,
        before.space,
        "a refused reset changes nothing"
    );
    drop((clone, guard));
    let e = a.into_extent().unwrap(); // detached: Allocated, no handle
    region.reset().unwrap();
    assert!(region.is_empty());
    assert!(region.detached_extents().is_empty());
    assert!(
        region.stats().discarded_bytes >= 8192,
        "every block discarded"
    );
    assert!(
        matches!(region.attach(e), Err(RegionError::NotDetached { .. })),
        "the detached blocks went with the reset"
    );
    let b = region.allocate(Request::new(16)).unwrap();
    assert!(
        b.as_slice().unwrap().iter().all(|&x| x == 0),
        "discarded bytes read zero"
    );
    region.check_invariants().unwrap();
}
