//! The durable free-list encoding (`pinalloc::persist`): round trips, every kind of
//! damage with its own error, and a crash simulation.
//!
//! The crash simulation plays random operations on a model-checked allocator and,
//! now and then, writes the durable view into one of two slots in turn (as a
//! superblock keeps two copies). At a random point it "crashes": the write in
//! progress may be torn (cut short) or land with a flipped bit. The remount decodes
//! both slots, keeps the valid one with the higher generation, rebuilds from it, and
//! must find exactly the free space the model had at that write. The rebuilt
//! allocator then goes on under the model, with every other block Allocated.
//!
//! `PROPTEST_CASES` scales every property (default 256).

use pinalloc::persist::{self, FreeList, MAGIC, PersistError, VERSION};
use pinalloc::testing::{Checked, Op, Runner, Source, SplitMix, Weights};
use pinalloc::{Extent, ExtentAllocator, ExtentError};
use proptest::prelude::*;

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    ProptestConfig::with_cases(cases)
}

/// A valid list: sorted, disjoint, non-touching, non-empty extents inside the space,
/// with gaps and lengths from tiny to huge.
fn free_list() -> impl Strategy<Value = FreeList> {
    let step = (
        prop_oneof![4 => 0u64..4, 2 => 0u64..1000, 1 => 0u64..(1 << 40)],
        prop_oneof![4 => 1u64..8, 2 => 1u64..5000, 1 => 1u64..(1 << 40)],
    );
    (
        proptest::collection::vec(step, 0..200),
        any::<u64>(),
        0u64..1000,
    )
        .prop_map(|(steps, generation, spare)| {
            let mut extents = Vec::new();
            let mut at = 0u64;
            for (gap, len) in steps {
                // A free list is coalesced: after the first, a gap of a block at least.
                let start = at + gap + u64::from(!extents.is_empty());
                extents.push(Extent::new(start, len));
                at = start + len;
            }
            FreeList::new(at + spare, generation, extents)
        })
}

/// Builds an encoding from raw fields (varints after the header), with a correct
/// length and checksum: how a buggy writer's output looks.
fn sealed(fields: &[u64]) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    out.push(VERSION);
    out.extend_from_slice(&[0; 8]);
    for &f in fields {
        let mut v = f;
        while v >= 0x80 {
            out.push(v as u8 | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    reseal(&mut out);
    out
}

/// CRC-32C (Castagnoli), bit by bit: the encoding's checksum, computed here
/// independently of the crate's table-driven one.
fn crc32c(bytes: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in bytes {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 == 1 {
                (c >> 1) ^ 0x82f6_3b78
            } else {
                c >> 1
            };
        }
    }
    !c
}

#[test]
fn the_checksum_is_crc32c() {
    assert_eq!(crc32c(b"123456789"), 0xe306_9283); // the standard check value
}

/// Rewrites the length and checksum of an encoding whose body was edited.
fn reseal(out: &mut Vec<u8>) {
    let total = (out.len() + 4) as u64;
    out[5..13].copy_from_slice(&total.to_le_bytes());
    let crc = crc32c(out);
    out.extend_from_slice(&crc.to_le_bytes());
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn round_trips(list in free_list()) {
        let bytes = persist::encode(&list).unwrap();
        prop_assert_eq!(persist::decode(&bytes), Ok(list.clone()));
        // Compact: header, three varints and a checksum, then at most two varints
        // of 10 bytes per extent (and far fewer for small gaps and lengths).
        prop_assert!(bytes.len() <= 13 + 30 + 4 + 20 * list.extents.len());
        // And the allocator rebuilt from it has exactly those free extents (merged
        // where they touch).
        let rebuilt = ExtentAllocator::from_free_extents(list.capacity, list.extents.iter().copied()).unwrap();
        prop_assert_eq!(rebuilt.stats().free_blocks, list.blocks());
    }

    #[test]
    fn every_truncation_is_told_apart(list in free_list()) {
        let bytes = persist::encode(&list).unwrap();
        for cut in 0..bytes.len() {
            let got = persist::decode(&bytes[..cut]);
            prop_assert!(matches!(got, Err(PersistError::Truncated { .. })), "cut at {}: {:?}", cut, got);
        }
        let mut longer = bytes.clone();
        longer.push(0);
        prop_assert!(matches!(persist::decode(&longer), Err(PersistError::TrailingBytes { .. })), "trailing byte accepted");
    }

    #[test]
    fn every_changed_byte_is_caught(list in free_list(), at in any::<prop::sample::Index>(), flip in 1u8..=255) {
        let mut bytes = persist::encode(&list).unwrap();
        let i = at.index(bytes.len());
        bytes[i] ^= flip;
        let got = persist::decode(&bytes);
        let ok = match i {
            0..4 => matches!(got, Err(PersistError::BadMagic { .. })),
            4 => matches!(got, Err(PersistError::UnsupportedVersion { .. })),
            5..13 => matches!(got, Err(PersistError::Truncated { .. } | PersistError::TrailingBytes { .. })),
            _ => matches!(got, Err(PersistError::Corrupted { .. })),
        };
        prop_assert!(ok, "byte {} ^ {:#x}: {:?}", i, flip, got);
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64), keep_header in any::<bool>()) {
        let mut bytes = bytes;
        if keep_header && bytes.len() >= 17 {
            bytes[..4].copy_from_slice(&MAGIC);
            bytes[4] = VERSION;
            bytes.truncate(bytes.len() - 4);
            reseal(&mut bytes);
        }
        // Whatever it says, it returns.
        if let Ok(list) = persist::decode(&bytes) {
            prop_assert!(persist::encode(&list).is_ok(), "decoded an invalid list");
        }
    }
}

#[test]
fn each_kind_of_damage_has_its_own_error() {
    // A well-formed encoding, for reference: capacity 100, generation 7, extents
    // [10, 15) and [20, 21).
    let good = sealed(&[100, 7, 2, 10, 5, 10, 1]);
    let list = persist::decode(&good).unwrap();
    assert_eq!(list.extents, [Extent::new(10, 5), Extent::new(20, 1)]);
    assert_eq!(list.generation, 7);

    let mut bad_magic = good.clone();
    bad_magic[0] = b'X';
    let mut bad_version = good.clone();
    bad_version[4] = VERSION + 1;
    let mut flipped = good.clone();
    flipped[14] ^= 1;
    type Expect = fn(&PersistError) -> bool;
    let cases: Vec<(&str, Vec<u8>, Expect)> = vec![
        ("empty", vec![], |e| {
            matches!(e, PersistError::Truncated { needed: 17, got: 0 })
        }),
        ("torn", good[..good.len() - 2].to_vec(), |e| {
            matches!(e, PersistError::Truncated { .. })
        }),
        ("trailing", [good.clone(), vec![0]].concat(), |e| {
            matches!(e, PersistError::TrailingBytes { .. })
        }),
        ("magic", bad_magic, |e| {
            matches!(
                e,
                PersistError::BadMagic {
                    found: [b'X', b'A', b'F', b'L']
                }
            )
        }),
        ("version", bad_version, |e| {
            matches!(e, PersistError::UnsupportedVersion { version: 2 })
        }),
        ("corrupted", flipped, |e| {
            matches!(e, PersistError::Corrupted { .. })
        }),
        (
            "overlap",
            sealed(&[100, 7, 2, 10, 5, 4, 1]),
            |e| matches!(e, PersistError::Overlap { index: 1, previous, extent } if *previous == Extent::new(10, 5) && *extent == Extent::new(14, 1)),
        ),
        (
            "touching",
            sealed(&[100, 7, 2, 10, 5, 5, 1]),
            |e| matches!(e, PersistError::Touching { index: 1, previous, extent } if *previous == Extent::new(10, 5) && *extent == Extent::new(15, 1)),
        ),
        ("out of range", sealed(&[100, 7, 2, 10, 5, 85, 6]), |e| {
            matches!(
                e,
                PersistError::BadExtent {
                    index: 1,
                    error: ExtentError::OutOfBounds { capacity: 100, .. },
                }
            )
        }),
        (
            "past u64::MAX",
            sealed(&[u64::MAX, 0, 2, u64::MAX - 1, 1, 5, 1]),
            |e| {
                matches!(
                    e,
                    PersistError::BadExtent {
                        index: 1,
                        error: ExtentError::OutOfBounds {
                            capacity: u64::MAX,
                            ..
                        }
                    }
                )
            },
        ),
        ("zero length", sealed(&[100, 7, 2, 10, 0, 10, 1]), |e| {
            matches!(
                e,
                PersistError::BadExtent {
                    index: 0,
                    error: ExtentError::ZeroLength { start: 10 }
                }
            )
        }),
        ("count too big", sealed(&[100, 7, u64::MAX, 10, 5]), |e| {
            matches!(e, PersistError::Malformed { .. })
        }),
        ("body ends early", sealed(&[100, 7, 2, 10, 5, 10]), |e| {
            matches!(e, PersistError::Malformed { .. })
        }),
        (
            "bytes after the last extent",
            sealed(&[100, 7, 1, 10, 5, 10]),
            |e| matches!(e, PersistError::Malformed { .. }),
        ),
    ];
    for (what, bytes, is) in cases {
        match persist::decode(&bytes) {
            Err(e) => {
                assert!(is(&e), "{what}: wrong error {e:?}");
                assert!(!e.to_string().is_empty());
            }
            Ok(list) => panic!("{what}: accepted as {list:?}"),
        }
    }
    // Encoding refuses what it could not decode again.
    let refused = |extents: Vec<Extent>| persist::encode(&FreeList::new(100, 0, extents));
    assert!(matches!(
        refused(vec![Extent::new(5, 0)]),
        Err(PersistError::BadExtent {
            error: ExtentError::ZeroLength { start: 5 },
            ..
        })
    ));
    assert!(matches!(
        refused(vec![Extent::new(5, 5), Extent::new(0, 1)]),
        Err(PersistError::Unsorted { .. })
    ));
    assert!(matches!(
        refused(vec![Extent::new(5, 5), Extent::new(9, 1)]),
        Err(PersistError::Overlap { .. })
    ));
    assert!(matches!(
        refused(vec![Extent::new(5, 5), Extent::new(10, 1)]),
        Err(PersistError::Touching { .. })
    ));
    assert!(matches!(
        refused(vec![Extent::new(99, 2)]),
        Err(PersistError::BadExtent {
            error: ExtentError::OutOfBounds { .. },
            ..
        })
    ));
    assert!(matches!(
        refused(vec![Extent::new(u64::MAX, 2)]),
        Err(PersistError::BadExtent {
            error: ExtentError::Overflow { .. },
            ..
        })
    ));
}

/// One durable write: the encoding, and the free space the model had then.
struct Written {
    generation: u64,
    bytes: Vec<u8>,
    free: Vec<Extent>,
}

/// What a mount finds: the valid slot with the higher generation.
fn mount(slots: &[Option<Vec<u8>>; 2]) -> Option<FreeList> {
    slots
        .iter()
        .flatten()
        .filter_map(|b| persist::decode(b).ok())
        .max_by_key(|l| l.generation)
}

/// One simulated life: operations, writes, a crash, a remount, and more operations.
fn crash_and_remount(seed: u64) {
    let mut rng = SplitMix::new(seed);
    let capacity = [32, 128, 512][rng.below(3) as usize];
    let weights = Weights::swarm(&mut rng);
    let mut run = Runner::new(capacity, &[]);
    let mut slots: [Option<Vec<u8>>; 2] = [None, None];
    let mut last: Option<Written> = None;
    let mut generation = 0;
    let crash_at = 1 + rng.below(400);
    for _ in 0..crash_at {
        run.apply(&Op::draw(&weights, &mut rng));
        if rng.one_in(8) {
            generation += 1;
            let alloc = run.checked().allocator();
            // The space as it is now: the walk grows and shrinks it.
            let list = FreeList::new(
                alloc.capacity_blocks(),
                generation,
                alloc.durable_free_extents(),
            );
            let bytes = persist::encode(&list).expect("the durable view encodes");
            slots[(generation % 2) as usize] = Some(bytes.clone());
            last = Some(Written {
                generation,
                bytes,
                free: run.checked().model().durable_runs(),
            });
        }
    }
    // The crash: the write in progress (of the state at the crash) is torn, lands
    // with a flipped bit, or lands whole.
    let at_crash = FreeList::new(
        run.checked().allocator().capacity_blocks(),
        generation + 1,
        run.checked().allocator().durable_free_extents(),
    );
    let mut bytes = persist::encode(&at_crash).unwrap();
    let landed_whole = match rng.below(3) {
        0 => {
            bytes.truncate(rng.below(bytes.len() as u64) as usize);
            false
        }
        1 => {
            let i = rng.below(bytes.len() as u64) as usize;
            bytes[i] ^= 1 << rng.below(8);
            false
        }
        _ => true,
    };
    slots[((generation + 1) % 2) as usize] = Some(bytes.clone());
    if landed_whole {
        last = Some(Written {
            generation: generation + 1,
            bytes,
            free: run.checked().model().durable_runs(),
        });
    }
    drop(run);

    let found = mount(&slots);
    let Some(want) = last else {
        // Nothing was ever written whole: the mount finds nothing valid (or only
        // what a torn first write left, which must not decode).
        assert!(found.is_none(), "seed {seed}: a torn first write decoded");
        return;
    };
    let list = found.unwrap_or_else(|| panic!("seed {seed}: no valid slot"));
    assert_eq!(
        list.generation, want.generation,
        "seed {seed}: the mount took the wrong slot"
    );
    assert_eq!(persist::encode(&list).unwrap(), want.bytes);
    let capacity = list.capacity;
    let remounted = ExtentAllocator::from_free_extents(capacity, list.extents.iter().copied())
        .unwrap_or_else(|e| panic!("seed {seed}: rebuild refused: {e}"));
    assert_eq!(
        remounted.free_extents().collect::<Vec<_>>(),
        want.free,
        "seed {seed}: the remount's free space is not the model's at the last write"
    );

    // Life goes on: every block not free at the write is Allocated now.
    let mut allocated = Vec::new();
    let mut at = 0;
    for e in &want.free {
        if e.start > at {
            allocated.push(Extent::new(at, e.start - at));
        }
        at = e.start + e.len;
    }
    if at < capacity {
        allocated.push(Extent::new(at, capacity - at));
    }
    let mut after = Checked::from_allocated_extents(capacity, allocated.iter().copied())
        .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    assert_eq!(
        after.allocator().free_extents().collect::<Vec<_>>(),
        remounted.free_extents().collect::<Vec<_>>()
    );
    for e in allocated {
        after
            .free(e)
            .unwrap_or_else(|err| panic!("seed {seed}: freeing {e} after the remount: {err}"));
    }
    assert_eq!(after.allocator().stats().free_blocks, capacity);
}

#[test]
fn crash_simulation_remounts_the_last_durable_view() {
    let seeds = std::env::var("CRASH_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300u64);
    for seed in 0..seeds {
        crash_and_remount(seed);
    }
}

/// One list, one encoding: a varint with a redundant zero group (the same value in
/// more bytes) is refused, so equal bytes mean equal lists and back.
#[test]
fn overlong_varints_are_refused() {
    let with_body = |body: &[u8]| {
        let mut out = MAGIC.to_vec();
        out.push(VERSION);
        out.extend_from_slice(&[0; 8]);
        out.extend_from_slice(body);
        reseal(&mut out);
        out
    };
    // Capacity 10, generation 0, no extents.
    let canonical = with_body(&[0x0a, 0x00, 0x00]);
    assert_eq!(
        canonical,
        persist::encode(&FreeList::new(10, 0, vec![])).unwrap()
    );
    assert_eq!(
        persist::decode(&canonical),
        Ok(FreeList::new(10, 0, vec![]))
    );
    for body in [
        &[0x8a, 0x00, 0x00, 0x00][..], // capacity 10 in two bytes
        &[0x0a, 0x80, 0x00, 0x00],     // generation 0 in two bytes
        &[0x0a, 0x00, 0x80, 0x80, 0x00],
    ] {
        let got = persist::decode(&with_body(body));
        assert!(
            matches!(got, Err(PersistError::Malformed { .. })),
            "{body:02x?}: {got:?}"
        );
    }
}
