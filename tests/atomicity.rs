//! Failure atomicity: every mutation path that can return `Err` leaves the allocator
//! equal, field by field, to its state before the call (invariant 6), and callbacks
//! that panic wherever they run leave it consistent and usable.
//!
//! Each path runs on a busy fixture (allocations from two epochs, Deferred blocks
//! under a pin and under an epoch, a blocking pin, a reader, a reservation), is
//! checked to fail with its own error, and is compared with a copy taken before the
//! call: the core with `testing::first_difference` (every field, node by node in the
//! trees), the shared allocator with `testing::SharedSnapshot` (every group's core,
//! the published summaries, epochs, readers, tracked pins, quotas). The model tests
//! and swarm walks check the same after every failed call they make; this catalogue
//! makes sure each path is reached.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use pinalloc::SharedAllocError;
use pinalloc::testing::{SharedSnapshot, Variant, err_variant, first_difference};
use pinalloc::{
    AllocError, Extent, ExtentAllocator, PinMode, PinOptions, Policy, ReaderId, Request,
    Reservation, SharedAllocator, SharedPinId,
};

/// The core fixture and the handles a caller would hold.
struct Fixture {
    a: ExtentAllocator,
    res: Reservation,
    foreign_res: Reservation,
    stale_pin: pinalloc::PinId,
    foreign_pin: pinalloc::PinId,
    stale_reader: ReaderId,
    foreign_reader: ReaderId,
}

/// 256 blocks: [0, 32) freed under a pin on [8, 12) (Deferred there), [32, 64)
/// Allocated with a blocking pin on [40, 44), [64, 80) allocated in epoch 2 with a
/// blocking pin on [72, 74), and [80, 96) freed on commit (Deferred until epoch 2 commits), a live reader, a
/// reservation of 30 blocks, and the rest Free (188 blocks, 158 unreserved).
fn fixture() -> Fixture {
    let mut a = ExtentAllocator::new(256);
    let first = a.allocate(Request::new(32)).unwrap();
    let second = a.allocate(Request::new(32)).unwrap();
    let tail = a
        .allocate(Request::new(16).policy(Policy::Exact(80)))
        .unwrap();
    a.commit(1).unwrap();
    a.allocate(Request::new(16).policy(Policy::Exact(64)))
        .unwrap();
    a.pin(Extent::new(8, 4)).unwrap();
    a.free(first).unwrap();
    a.pin_with(Extent::new(second.start + 8, 4), PinMode::Blocking)
        .unwrap();
    a.free_on_commit(tail).unwrap();
    a.pin_with(Extent::new(72, 2), PinMode::Blocking).unwrap();
    a.begin_read(); // live for the whole test
    let stale_reader = a.begin_read();
    a.end_read(stale_reader).unwrap();
    let stale_pin = a.pin(Extent::new(200, 1)).unwrap();
    a.unpin(stale_pin).unwrap();
    let res = a.reserve(30).unwrap();
    let mut other = ExtentAllocator::new(256);
    let foreign_res = other.reserve(1).unwrap();
    let foreign_pin = other.pin(Extent::new(0, 1)).unwrap();
    let foreign_reader = other.begin_read();
    a.check_invariants().unwrap();
    Fixture {
        a,
        res,
        foreign_res,
        stale_pin,
        foreign_pin,
        stale_reader,
        foreign_reader,
    }
}

/// A call's result, for the tables of failing calls: the variant its error names
/// (`None` for `Ok`), and its `Debug` text for the messages.
struct Got(Option<&'static str>, String);

fn got<T: std::fmt::Debug, E: Variant + std::fmt::Debug>(r: &Result<T, E>) -> Got {
    Got(err_variant(r), format!("{r:?}"))
}

impl std::fmt::Display for Got {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.1)
    }
}

type CoreCall = fn(&mut Fixture) -> Got;

/// Runs `call` on a fresh fixture: it must fail with the variant `expect` names and
/// change no field.
fn core_case(name: &str, call: fn(&mut Fixture) -> Got, expect: &str) {
    let mut f = fixture();
    let before = f.a.clone();
    let stats = f.a.stats(); // metadata bytes too, which a clone does not keep
    let got = call(&mut f);
    assert!(
        got.0 == Some(expect),
        "{name}: expected Err with {expect}, got {got}"
    );
    if let Some(field) = first_difference(&before, &f.a) {
        panic!("{name}: failed ({got}) but changed `{field}`");
    }
    assert_eq!(
        f.a.stats(),
        stats,
        "{name}: failed ({got}) but changed the stats"
    );
    f.a.check_invariants().unwrap();
}

fn exact(start: u64, len: u64) -> Request {
    Request::new(len).policy(Policy::Exact(start))
}

/// Every core mutation path that can fail, with the error it must give.
const CORE: &[(&str, &str, CoreCall)] = &[
    ("ZeroLength", "allocate: zero length", |f| {
        got(&f.a.allocate(Request::new(0)))
    }),
    ("InvalidRange", "allocate: min above max", |f| {
        got(&f
            .a
            .allocate(Request::range(std::ops::RangeInclusive::new(5, 4))))
    }),
    ("BadAlignment", "allocate: alignment 0", |f| {
        got(&f.a.allocate(Request::new(1).align(0)))
    }),
    ("BadAlignment", "allocate: alignment 3", |f| {
        got(&f.a.allocate(Request::new(1).align(3)))
    }),
    (
        "Misaligned",
        "allocate: exact start off its alignment",
        |f| got(&f.a.allocate(exact(101, 2).align(4))),
    ),
    ("Overflow", "allocate: exact extent past u64::MAX", |f| {
        got(&f.a.allocate(exact(u64::MAX, 2)))
    }),
    ("OutOfBounds", "allocate: exact extent past the end", |f| {
        got(&f.a.allocate(exact(250, 8)))
    }),
    ("OutOfBounds", "allocate: goal past the end", |f| {
        got(&f.a.allocate(Request::new(1).policy(Policy::Near(256))))
    }),
    ("NotFree", "allocate: exact on Allocated blocks", |f| {
        got(&f.a.allocate(exact(32, 4)))
    }),
    ("NotFree", "allocate: exact on Deferred blocks", |f| {
        got(&f.a.allocate(exact(8, 2)))
    }),
    ("NoSpace", "allocate: longer than any free extent", |f| {
        got(&f.a.allocate(Request::new(200)))
    }),
    // Past block 0, which starts 8 free blocks, no multiple of 256 has a free block
    // after it: alignments above 64 blocks search a view, which a failed call must
    // not keep.
    ("NoSpace", "allocate: best fit aligned to 256", |f| {
        got(&f.a.allocate(Request::new(9).align(256)))
    }),
    ("NoSpace", "allocate: first fit aligned to 256", |f| {
        let r = Request::new(9).align(256).policy(Policy::FirstFit);
        got(&f.a.allocate(r))
    }),
    ("NoSpace", "allocate: near a goal, aligned to 256", |f| {
        let r = Request::new(9).align(256).policy(Policy::Near(200));
        got(&f.a.allocate(r))
    }),
    ("NoSpace", "allocate: a range aligned to 512", |f| {
        got(&f.a.allocate(Request::range(9..=64).align(512)))
    }),
    ("NoSpace", "allocate_reserved: aligned to 256", |f| {
        let r = Request::new(9).align(256);
        got(&f.a.allocate_reserved(&mut f.res, r))
    }),
    (
        "NoSpace",
        "allocate: free only by dipping into the reservation",
        |f| got(&f.a.allocate(Request::new(159))),
    ),
    (
        "UnknownReservation",
        "allocate_reserved: another allocator's reservation",
        |f| got(&f.a.allocate_reserved(&mut f.foreign_res, Request::new(1))),
    ),
    ("Overdrawn", "allocate_reserved: more than is left", |f| {
        got(&f.a.allocate_reserved(&mut f.res, Request::new(31)))
    }),
    ("ZeroLength", "allocate_reserved: zero length", |f| {
        got(&f.a.allocate_reserved(&mut f.res, Request::new(0)))
    }),
    ("ZeroLength", "allocate_many: zero blocks", |f| {
        got(&f.a.allocate_many(0))
    }),
    (
        "NoSpace",
        "allocate_many: more than the unreserved free blocks",
        |f| got(&f.a.allocate_many(180)),
    ),
    (
        "Overdrawn",
        "allocate_many_reserved: more than is left",
        |f| got(&f.a.allocate_many_reserved(&mut f.res, 31)),
    ),
    (
        "UnknownReservation",
        "allocate_many_reserved: another allocator's reservation",
        |f| got(&f.a.allocate_many_reserved(&mut f.foreign_res, 1)),
    ),
    ("ZeroLength", "free: zero length", |f| {
        got(&f.a.free(Extent::new(40, 0)))
    }),
    ("Overflow", "free: extent past u64::MAX", |f| {
        got(&f.a.free(Extent::new(u64::MAX, 2)))
    }),
    ("OutOfBounds", "free: extent past the end", |f| {
        got(&f.a.free(Extent::new(250, 10)))
    }),
    ("NotAllocated", "free: Free blocks", |f| {
        got(&f.a.free(Extent::new(120, 4)))
    }),
    (
        "NotAllocated",
        "free: Deferred blocks (a double free under a pin)",
        |f| got(&f.a.free(Extent::new(8, 4))),
    ),
    ("PartlyAllocated", "free: Allocated and Free blocks", |f| {
        got(&f.a.free(Extent::new(76, 8)))
    }),
    ("Busy", "free: blocks under a blocking pin", |f| {
        got(&f.a.free(Extent::new(32, 32)))
    }),
    ("NotAllocated", "free_on_commit: Deferred blocks", |f| {
        got(&f.a.free_on_commit(Extent::new(80, 16)))
    }),
    ("Busy", "free_on_commit: blocks under a blocking pin", |f| {
        got(&f.a.free_on_commit(Extent::new(40, 1)))
    }),
    (
        "PartlyAllocated",
        "free_on_commit: Allocated and Free blocks",
        |f| got(&f.a.free_on_commit(Extent::new(70, 40))),
    ),
    ("ZeroLength", "pin: zero length", |f| {
        got(&f.a.pin(Extent::new(5, 0)))
    }),
    ("Overflow", "pin: extent past u64::MAX", |f| {
        got(&f.a.pin(Extent::new(u64::MAX - 1, 5)))
    }),
    ("OutOfBounds", "pin: extent past the end", |f| {
        got(&f.a.pin(Extent::new(255, 2)))
    }),
    (
        "Reserved",
        "pin: more Free blocks than are unreserved",
        |f| got(&f.a.pin(Extent::new(96, 160))),
    ),
    ("ZeroLength", "pin_with blocking: zero length", |f| {
        got(&f.a.pin_with(Extent::new(5, 0), PinMode::Blocking))
    }),
    ("Unknown", "unpin: an id already unpinned", |f| {
        got(&f.a.unpin(f.stale_pin))
    }),
    ("Unknown", "unpin: another allocator's id", |f| {
        got(&f.a.unpin(f.foreign_pin))
    }),
    ("NotOpen", "commit: an epoch already committed", |f| {
        got(&f.a.commit(1))
    }),
    ("NotOpen", "commit: a future epoch", |f| got(&f.a.commit(3))),
    ("NotOpen", "commit: u64::MAX", |f| {
        got(&f.a.commit(u64::MAX))
    }),
    (
        "NotOpen",
        "prepare_commit: an epoch already committed",
        |f| got(&f.a.prepare_commit(1)),
    ),
    ("NotOpen", "prepare_commit: u64::MAX", |f| {
        got(&f.a.prepare_commit(u64::MAX))
    }),
    ("NotPrepared", "finish_commit: the open epoch", |f| {
        got(&f.a.finish_commit(2))
    }),
    (
        "NotPrepared",
        "finish_commit: an epoch already finished",
        |f| got(&f.a.finish_commit(1)),
    ),
    ("NotPrepared", "finish_commit: u64::MAX", |f| {
        got(&f.a.finish_commit(u64::MAX))
    }),
    ("NotOpen", "abort: an epoch already committed", |f| {
        got(&f.a.abort(1))
    }),
    ("NotOpen", "abort_all: a future epoch", |f| {
        got(&f.a.abort_all(3))
    }),
    (
        "Busy",
        "abort_all: the epoch's blocks under a blocking pin",
        |f| got(&f.a.abort_all(2)),
    ),
    ("NotLarger", "grow: below the capacity", |f| {
        got(&f.a.grow(255))
    }),
    ("NotSmaller", "shrink: above the capacity", |f| {
        got(&f.a.shrink(u64::MAX))
    }),
    ("InUse", "shrink: over Allocated blocks", |f| {
        got(&f.a.shrink(40))
    }),
    ("Reserved", "shrink: past what the reservation needs", |f| {
        got(&f.a.shrink(97))
    }),
    ("UnknownReader", "end_read: a reader already ended", |f| {
        got(&f.a.end_read(f.stale_reader))
    }),
    (
        "UnknownReader",
        "end_read: another allocator's reader",
        |f| got(&f.a.end_read(f.foreign_reader)),
    ),
    ("ZeroLength", "reserve: zero blocks", |f| {
        got(&f.a.reserve(0))
    }),
    (
        "NoSpace",
        "reserve: more than the unreserved free blocks",
        |f| got(&f.a.reserve(159)),
    ),
    (
        "Unknown",
        "unreserve: another allocator's reservation",
        |f| {
            let mut other = ExtentAllocator::new(4);
            let theirs = other.reserve(1).unwrap();
            got(&f.a.unreserve(theirs))
        },
    ),
];

#[test]
fn every_failing_core_call_changes_no_field() {
    for &(expect, name, call) in CORE {
        core_case(name, call, expect);
    }
    eprintln!("{} core failure paths", CORE.len());
}

/// A planted bug: a call that changes a field and then fails must be caught, field
/// named, by the same comparison.
#[test]
fn the_comparison_names_a_changed_field() {
    let mut f = fixture();
    let before = f.a.clone();
    let _ = f.a.begin_read();
    assert_eq!(first_difference(&before, &f.a), Some("epochs"));
    let mut f = fixture();
    let before = f.a.clone();
    let _ = f.a.allocate(Request::new(1)).unwrap();
    assert_eq!(first_difference(&before, &f.a), Some("free"));
}

/// The same for the shared layer's snapshot: each of its parts, changed, is named.
#[test]
fn the_shared_comparison_names_a_changed_part() {
    let changed = |change: fn(&SharedAllocator)| {
        let s = shared_fixture();
        let before = SharedSnapshot::of(&s);
        change(&s);
        before.first_difference(&SharedSnapshot::of(&s))
    };
    let names = |got: Option<String>, part: &str| {
        assert!(
            got.as_deref().is_some_and(|d| d.starts_with(part)),
            "expected {part}, got {got:?}"
        );
    };
    // The fixture has a reader already: another one in its epoch is the shared
    // record's alone.
    names(
        changed(|s| {
            let _ = s.begin_read();
        }),
        "epochs",
    );
    names(
        changed(|s| {
            s.allocate(Request::new(1).policy(Policy::Exact(100)))
                .unwrap();
        }),
        "group 1: `free`",
    );
    names(
        changed(|s| {
            s.pin_owned(Extent::new(140, 2), PinOptions::new().owner(7))
                .unwrap();
        }),
        "group 2: `pins`",
    );
    assert_eq!(changed(|_| {}), None);
}

/// 3 groups of 64 blocks, a cap of 40 Deferred blocks and a quota of 8 pinned blocks
/// per owner: [0, 30) Deferred under a pin, [64, 96) allocated with a blocking pin,
/// a reservation of 20 blocks and a reader.
fn shared_fixture() -> SharedAllocator {
    let s = SharedAllocator::builder(192)
        .groups(3)
        .deferred_cap_blocks(40)
        .pin_quota_blocks(8)
        .build();
    let first = s
        .allocate(Request::new(30).policy(Policy::Exact(0)))
        .unwrap();
    s.allocate(Request::new(32).policy(Policy::Exact(64)))
        .unwrap();
    s.allocate(Request::new(20).policy(Policy::Exact(130)))
        .unwrap();
    let _kept = s.pin(first).unwrap().into_id(); // [0, 30) stays Deferred
    s.free(first).unwrap();
    let _blocking = s
        .pin_with(
            Extent::new(70, 2),
            PinOptions::new().mode(PinMode::Blocking),
        )
        .unwrap()
        .into_id();
    std::mem::forget(s.reserve(20).unwrap());
    let _reader = s.begin_read();
    s.check_invariants().unwrap();
    s
}

type SharedCall = fn(&SharedAllocator) -> Got;

/// Every shared-layer mutation path that can fail, with its error.
const SHARED: &[(&str, &str, SharedCall)] = &[
    ("allocate: bad request", "ZeroLength", |s| {
        got(&s.allocate(Request::new(0)))
    }),
    (
        "allocate: exact across a group boundary",
        "CrossesGroup",
        |s| got(&s.allocate(Request::new(8).policy(Policy::Exact(60)))),
    ),
    ("allocate: exact on Allocated blocks", "NotFree", |s| {
        got(&s.allocate(Request::new(2).policy(Policy::Exact(64))))
    }),
    ("allocate: no group has room", "NoSpace", |s| {
        got(&s.allocate(Request::new(65)))
    }),
    (
        "allocate: aligned to 256, no group has room",
        "NoSpace",
        |s| got(&s.allocate(Request::new(1).align(256))),
    ),
    ("allocate_wait: longer than a group", "NoSpace", |s| {
        got(&s.allocate_wait(Request::new(65), Duration::from_millis(5)))
    }),
    (
        "allocate_wait: no room before the timeout",
        "TimedOut",
        |s| got(&s.allocate_wait(Request::new(64), Duration::from_millis(5))),
    ),
    (
        "allocate_many: more than the unreserved free blocks",
        "NoSpace",
        |s| got(&s.allocate_many(150)),
    ),
    ("free: Free blocks", "NotAllocated", |s| {
        got(&s.free(Extent::new(100, 4)))
    }),
    (
        "free: across groups, partly Allocated",
        "PartlyAllocated",
        |s| got(&s.free(Extent::new(90, 10))),
    ),
    ("free: under a blocking pin", "Busy", |s| {
        got(&s.free(Extent::new(64, 32)))
    }),
    ("free: past the Deferred cap", "DeferredCap", |s| {
        let _p = s.pin(Extent::new(130, 20)).unwrap();
        let before = SharedSnapshot::of(s);
        let got = got(&s.free(Extent::new(130, 20)));
        if let Some(d) = before.first_difference(&SharedSnapshot::of(s)) {
            panic!("free past the cap changed {d}");
        }
        got
    }),
    ("free_on_commit: Free blocks", "NotAllocated", |s| {
        got(&s.free_on_commit(Extent::new(100, 4)))
    }),
    ("pin: past the end", "OutOfBounds", |s| {
        got(&s.pin(Extent::new(190, 4)).map(|g| g.into_id()))
    }),
    (
        "pin: more Free blocks than are unreserved",
        "Reserved",
        |s| got(&s.pin(Extent::new(96, 96)).map(|g| g.into_id())),
    ),
    ("pin_owned: past the owner's quota", "PinQuota", |s| {
        got(&s.pin_owned(Extent::new(130, 9), PinOptions::new().owner(7)))
    }),
    ("unpin: an id not live", "Unknown", |s| {
        let id: SharedPinId = s.pin(Extent::new(150, 1)).unwrap().into_id();
        s.unpin(id).unwrap();
        let before = SharedSnapshot::of(s);
        let got = got(&s.unpin(id));
        assert_eq!(before.first_difference(&SharedSnapshot::of(s)), None);
        got
    }),
    ("commit: not the open epoch", "NotOpen", |s| {
        got(&s.commit(5))
    }),
    ("prepare_commit: not the open epoch", "NotOpen", |s| {
        got(&s.prepare_commit(5))
    }),
    ("finish_commit: not prepared", "NotPrepared", |s| {
        got(&s.finish_commit(1))
    }),
    ("abort: not the open epoch", "NotOpen", |s| got(&s.abort(0))),
    (
        "abort_all: the epoch's blocks under a blocking pin",
        "Busy",
        |s| got(&s.abort_all(1)),
    ),
    (
        "end_read: another allocator's reader",
        "UnknownReader",
        |s| got(&s.end_read(SharedAllocator::new(8).begin_read())),
    ),
    (
        "reserve: more than the unreserved free blocks",
        "NoSpace",
        |s| got(&s.reserve(150).map(|r| r.remaining_blocks())),
    ),
    ("allocate_reserved: more than is left", "Overdrawn", |s| {
        let mut r = s.reserve(4).unwrap();
        let before = SharedSnapshot::of(s);
        let got = got(&s.allocate_reserved(&mut r, Request::new(5)));
        assert_eq!(before.first_difference(&SharedSnapshot::of(s)), None);
        std::mem::forget(r);
        got
    }),
];

#[test]
fn every_failing_shared_call_changes_nothing() {
    for &(name, expect, call) in SHARED {
        let s = shared_fixture();
        let before = SharedSnapshot::of(&s);
        let stats = s.stats().space;
        let got = call(&s);
        assert!(
            got.0 == Some(expect),
            "{name}: expected Err with {expect}, got {got}"
        );
        // Cases that set up more state compare around their own call.
        let setup = [
            "free: past the Deferred cap",
            "unpin: an id not live",
            "allocate_reserved: more than is left",
        ];
        if !setup.contains(&name) {
            if let Some(d) = before.first_difference(&SharedSnapshot::of(&s)) {
                panic!("{name}: failed ({got}) but changed {d}");
            }
            assert_eq!(
                s.stats().space,
                stats,
                "{name}: failed ({got}) but changed the stats"
            );
        }
        s.check_invariants().unwrap();
    }
    eprintln!("{} shared failure paths", SHARED.len());
}

/// A space whose only free room is held back: 32 blocks, all freed on commit after
/// epoch 1 (so Deferred until epoch 2 commits). Callers add their own leases.
fn held_back() -> Arc<SharedAllocator> {
    let alloc = Arc::new(SharedAllocator::new(32));
    let e = alloc.allocate(Request::new(32)).unwrap();
    alloc.commit(1).unwrap();
    alloc.free_on_commit(e).unwrap();
    alloc
}

/// Where the callbacks run under pressure: the pressure hook and revoke callbacks,
/// from `allocate` and `allocate_wait` (revoke callbacks from `revoke` are tested in
/// `tests/concurrent.rs`). Each panics there, before or after doing its job
/// (committing, unpinning); the call returns, the panic is counted, and the allocator
/// stays consistent and usable.
#[test]
fn panicking_callbacks_anywhere_leave_the_allocator_consistent_and_usable() {
    type Entry = fn(&SharedAllocator) -> Result<Extent, SharedAllocError>;
    let entries: [(&str, Entry); 2] = [
        ("allocate", |a| a.allocate(Request::new(8))),
        ("allocate_wait", |a| {
            a.allocate_wait(Request::new(8), Duration::from_millis(5))
        }),
    ];
    let mut points = 0;
    for (entry, call) in entries {
        for effect_first in [false, true] {
            // The pressure hook panics, before or after committing.
            let alloc = held_back();
            let a = Arc::downgrade(&alloc);
            alloc.set_pressure_hook(move |_| {
                if effect_first {
                    if let Some(a) = a.upgrade() {
                        a.commit(a.epoch()).unwrap();
                    }
                }
                panic!("the hook fails");
            });
            let before = SharedSnapshot::of(&alloc);
            let got = call(&alloc);
            assert!(alloc.stats().counters.callback_panics >= 1, "{entry}");
            if effect_first {
                assert!(
                    got.is_ok(),
                    "{entry}: the hook committed, the retry should fit: {got:?}"
                );
            } else {
                // allocate_wait waited out its timeout: its own error, same figures.
                assert!(
                    matches!(
                        (entry, got),
                        (
                            "allocate",
                            Err(SharedAllocError::Core(AllocError::NoSpace { .. }))
                        ) | ("allocate_wait", Err(SharedAllocError::TimedOut { .. }))
                    ),
                    "{entry}: {got:?}"
                );
                assert_eq!(
                    before.first_difference(&SharedSnapshot::of(&alloc)),
                    None,
                    "{entry}"
                );
            }
            alloc.clear_pressure_hook();
            still_usable(&alloc, entry);
            points += 1;

            // A lease's revoke callback panics under pressure, before or after
            // unpinning its pin.
            let alloc = held_back();
            alloc.commit(2).unwrap(); // the space is Free again: only the lease holds
            let e = alloc.allocate(Request::new(32)).unwrap();
            let slot: Arc<Mutex<Option<SharedPinId>>> = Arc::default();
            let (a, s) = (Arc::downgrade(&alloc), Arc::clone(&slot));
            let id = alloc
                .pin_owned(
                    Extent::new(0, 32),
                    PinOptions::new().on_revoke(move |_| {
                        if effect_first {
                            if let (Some(a), Some(id)) = (a.upgrade(), s.lock().unwrap().take()) {
                                a.unpin(id).unwrap();
                            }
                        }
                        panic!("the revoke callback fails");
                    }),
                )
                .unwrap();
            *slot.lock().unwrap() = Some(id);
            alloc.free(e).unwrap(); // Deferred under the lease
            let got = call(&alloc);
            assert!(alloc.stats().counters.callback_panics >= 1, "{entry}");
            assert_eq!(got.is_ok(), effect_first, "{entry}: {got:?}");
            if let Some(id) = slot.lock().unwrap().take() {
                alloc.unpin(id).unwrap();
            }
            if let Ok(e) = got {
                alloc.free(e).unwrap();
            }
            still_usable(&alloc, entry);
            points += 1;
        }
    }
    // `revoke` itself, with callbacks panicking before and after unpinning beside a
    // well-behaved one, is `tests/concurrent.rs`'s
    // `panicking_callbacks_leave_the_allocator_consistent_and_usable`.
    eprintln!("{points} callback panic points");
}

/// Consistent, and every kind of call still works.
fn still_usable(alloc: &SharedAllocator, after: &str) {
    alloc
        .check_invariants()
        .unwrap_or_else(|v| panic!("after a panicking callback in {after}: {v}"));
    let open = alloc.epoch();
    alloc.commit(open).unwrap();
    let e = alloc
        .allocate(Request::new(1))
        .unwrap_or_else(|err| panic!("after {after}: {err}"));
    let pin = alloc.pin(e).unwrap();
    alloc.free(e).unwrap();
    drop(pin);
    alloc.check_invariants().unwrap();
    assert_eq!(alloc.stats().space.deferred_blocks, 0, "after {after}");
}

/// `grow` and `shrink` take `&mut`, so they are not in the table above: each
/// refusal, on the shared fixture, changes nothing.
#[test]
fn failing_shared_resizes_change_nothing() {
    type Resize = fn(&mut SharedAllocator) -> Got;
    let cases: [(&str, &str, Resize); 4] = [
        (
            "NotLarger",
            "grow: below the capacity",
            |s| got(&s.grow(10)),
        ),
        ("NotSmaller", "shrink: above the capacity", |s| {
            got(&s.shrink(u64::MAX))
        }),
        ("InUse", "shrink: over Allocated blocks", |s| {
            got(&s.shrink(140))
        }),
        ("Pinned", "shrink: over a pinned Free block", |s| {
            let id = s.pin(Extent::new(180, 1)).unwrap().into_id();
            let before = SharedSnapshot::of(s);
            let got = got(&s.shrink(170));
            assert_eq!(before.first_difference(&SharedSnapshot::of(s)), None);
            s.unpin(id).unwrap();
            got
        }),
    ];
    for (expect, name, call) in cases {
        let mut s = shared_fixture();
        let before = SharedSnapshot::of(&s);
        let got = call(&mut s);
        assert!(
            got.0 == Some(expect),
            "{name}: expected {expect}, got {got}"
        );
        if expect != "Pinned" {
            assert_eq!(
                before.first_difference(&SharedSnapshot::of(&s)),
                None,
                "{name}"
            );
        }
    }
}
