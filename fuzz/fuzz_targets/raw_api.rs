//! Raw arguments straight into the public API, extreme values included: none of it
//! may panic, every refusal must be an error, and the invariants must hold at the
//! end. Covers the core allocator, its constructors, the shared allocator and the
//! durable free-list decoder.
#![no_main]

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use pinalloc::{
    Extent, ExtentAllocator, PinMode, Policy, Request, SharedAllocator, persist,
};

#[derive(Arbitrary, Debug)]
enum RawPolicy {
    Best,
    First,
    Near(u64),
    Exact(u64),
}

#[derive(Arbitrary, Debug)]
enum Call {
    Allocate { min: u64, max: u64, align: u64, policy: RawPolicy },
    AllocateMany(u64),
    Free { start: u64, len: u64, on_commit: bool },
    Pin { start: u64, len: u64, blocking: bool },
    Unpin(u8),
    Commit(u64),
    BeginRead,
    EndRead(u8),
    Reserve(u64),
    AllocateReserved { which: u8, min: u64, max: u64 },
    Unreserve(u8),
    Query(u64),
    Shared { call: u8, a: u64, b: u64 },
}

#[derive(Arbitrary, Debug)]
struct Input {
    capacity: u64,
    built_from: Option<(bool, Vec<(u64, u64)>)>,
    calls: Vec<Call>,
    encoded: Vec<u8>,
}

fn policy(p: &RawPolicy) -> Policy {
    match *p {
        RawPolicy::Best => Policy::BestFit,
        RawPolicy::First => Policy::FirstFit,
        RawPolicy::Near(g) => Policy::Near(g),
        RawPolicy::Exact(s) => Policy::Exact(s),
    }
}

fuzz_target!(|input: Input| {
    let mut a = match &input.built_from {
        None => ExtentAllocator::new(input.capacity),
        Some((free, extents)) => {
            let extents = extents.iter().map(|&(s, l)| Extent::new(s, l));
            let built = if *free {
                ExtentAllocator::from_free_extents(input.capacity, extents)
            } else {
                ExtentAllocator::from_allocated_extents(input.capacity, extents)
            };
            match built {
                Ok(a) => a,
                Err(_) => ExtentAllocator::new(input.capacity),
            }
        }
    };
    // The shared allocator over a space small enough to build quickly.
    let shared = SharedAllocator::builder(input.capacity % (1 << 16))
        .groups(input.capacity % 7)
        .build();
    let (mut pins, mut readers, mut reservations) = (Vec::new(), Vec::new(), Vec::new());
    let pick = |n: usize, i: u8| (n > 0).then(|| usize::from(i) % n);
    for call in &input.calls {
        match call {
            Call::Allocate { min, max, align, policy: p } => {
                let _ = a.allocate(Request::range(*min..=*max).align(*align).policy(policy(p)));
            }
            Call::AllocateMany(n) => {
                let _ = a.allocate_many(*n);
            }
            Call::Free { start, len, on_commit } => {
                let e = Extent::new(*start, *len);
                let _ = if *on_commit { a.free_on_commit(e) } else { a.free(e) };
            }
            Call::Pin { start, len, blocking } => {
                let mode = if *blocking { PinMode::Blocking } else { PinMode::Deferring };
                if let Ok(id) = a.pin_with(Extent::new(*start, *len), mode) {
                    pins.push(id);
                }
            }
            Call::Unpin(i) => {
                if let Some(i) = pick(pins.len(), *i) {
                    // Unpinned ids stay in the list: a second unpin must be refused.
                    let _ = a.unpin(pins[i]);
                }
            }
            Call::Commit(epoch) => {
                let _ = a.commit(*epoch);
            }
            Call::BeginRead => readers.push(a.begin_read()),
            Call::EndRead(i) => {
                if let Some(i) = pick(readers.len(), *i) {
                    let _ = a.end_read(readers[i]);
                }
            }
            Call::Reserve(n) => {
                if let Ok(r) = a.reserve(*n) {
                    reservations.push(r);
                }
            }
            Call::AllocateReserved { which, min, max } => {
                if let Some(i) = pick(reservations.len(), *which) {
                    let _ = a.allocate_reserved(&mut reservations[i], Request::range(*min..=*max));
                }
            }
            Call::Unreserve(i) => {
                if let Some(i) = pick(reservations.len(), *i) {
                    let _ = a.unreserve(reservations.swap_remove(i));
                }
            }
            Call::Query(block) => {
                let _ = (a.state_of(*block), a.pin_count(*block), a.stats());
            }
            Call::Shared { call, a: x, b: y } => {
                let e = Extent::new(*x, *y);
                match call % 6 {
                    0 => drop(shared.allocate(Request::range(*x..=*y))),
                    1 => drop(shared.free(e)),
                    2 => drop(shared.pin(e)),
                    3 => drop(shared.commit(*x)),
                    4 => drop(shared.allocate_many(*x)),
                    _ => drop((shared.state_of(*x), shared.pin_count(*y))),
                }
            }
        }
    }
    a.check_invariants().expect("the invariants hold after any calls");
    shared.check_invariants().expect("the shared invariants hold after any calls");
    for r in reservations {
        let _ = a.unreserve(r);
    }
    if let Ok(list) = persist::decode(&input.encoded) {
        let _ = ExtentAllocator::from_free_extents(list.capacity, list.extents);
    }
});
