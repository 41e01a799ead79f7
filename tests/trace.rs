//! Record and replay (the `trace` feature): a churn with pins, readers and commits
//! round-trips through the log and replays with every result equal; a torn log is
//! told from a corrupted one at every cut and every flipped byte; a log recorded on
//! one policy replays on another; a shared allocator's log replays too.
#![cfg(feature = "trace")]

use pinalloc::testing::SplitMix;
use pinalloc::trace::{self, Call, Recorder, ReplayError, SharedRecorder, Trace, TraceError};
use pinalloc::{Extent, ExtentAllocator, Policy, Request, SharedAllocator};

/// A churn of small files, some pinned while freed, with commits and readers, on a
/// core allocator through a recorder.
fn churn(seed: u64, ops: usize, policy: Policy) -> (Trace, ExtentAllocator) {
    let mut rec = Recorder::new(ExtentAllocator::new(1 << 12));
    let mut rng = SplitMix::new(seed);
    let mut live: Vec<Extent> = Vec::new();
    let mut pins = Vec::new();
    let mut readers = Vec::new();
    for _ in 0..ops {
        // A churn that hovers around 60 live files, well short of full.
        let pick = if live.len() > 60 {
            9 + rng.below(6)
        } else {
            rng.below(20)
        };
        match pick {
            0..=8 => {
                let r = Request::new(1 + rng.below(40)).policy(policy);
                if let Ok(e) = rec.allocate(r) {
                    live.push(e);
                }
            }
            9..=14 if !live.is_empty() => {
                let e = live.swap_remove(rng.below(live.len() as u64) as usize);
                if rng.below(4) == 0 {
                    pins.push(rec.pin(e).unwrap());
                }
                if rng.below(3) == 0 {
                    rec.free_on_commit(e).unwrap();
                } else {
                    rec.free(e).unwrap();
                }
            }
            15 | 16 if !pins.is_empty() => {
                let p = pins.swap_remove(rng.below(pins.len() as u64) as usize);
                rec.unpin(p).unwrap();
            }
            17 => {
                let epoch = rec.allocator().epoch();
                rec.commit(epoch).unwrap();
            }
            18 => readers.push(rec.begin_read()),
            19 if !readers.is_empty() => {
                let r = readers.swap_remove(0);
                rec.end_read(r).unwrap();
            }
            _ => {
                // A call that fails, logged with its error.
                let _ = rec.free(Extent::new(1 << 12, 1));
            }
        }
    }
    let (trace, alloc) = rec.into_parts();
    (trace, alloc)
}

#[test]
fn a_churn_round_trips_and_replays_with_every_result_equal() {
    for seed in 0..4 {
        let (trace, alloc) = churn(seed, 5_000, Policy::BestFit);
        let log = trace::encode(&trace);
        let back = trace::decode(&log).unwrap();
        assert_eq!(back, trace, "seed {seed}");
        let report = trace::replay(&back, None).unwrap();
        assert_eq!(report.equal_results, trace.calls.len());
        let s = alloc.stats();
        assert_eq!(
            (report.free_extents, report.largest_free_blocks),
            (s.free_extents, s.largest_free_blocks)
        );
        assert!(
            log.len() < trace.calls.len() * 12,
            "{} bytes for {} calls",
            log.len(),
            trace.calls.len()
        );
    }
}

/// A log whose recorded result differs from what the allocator does is caught at
/// that call, with both sides.
#[test]
fn a_result_that_differs_stops_the_replay() {
    let (mut trace, _) = churn(9, 500, Policy::BestFit);
    let at = trace
        .calls
        .iter()
        .position(|c| matches!(c, Call::Allocate { result: Ok(_), .. }))
        .unwrap();
    if let Call::Allocate { result: Ok(e), .. } = &mut trace.calls[at] {
        e.start += 1;
    }
    match trace::replay(&trace, None) {
        Err(ReplayError::Mismatch { index, .. }) => assert_eq!(index, at),
        other => panic!("{other:?}"),
    }
}

#[test]
fn every_cut_is_torn_and_every_flipped_byte_is_caught() {
    let (trace, _) = churn(1, 300, Policy::FirstFit);
    let log = trace::encode(&trace);
    for cut in 0..log.len() {
        match trace::decode(&log[..cut]) {
            Err(TraceError::Torn { calls }) => match trace::decode_prefix(&log[..cut]) {
                Ok(prefix) => {
                    assert_eq!(prefix.calls.len(), calls);
                    assert_eq!(prefix.calls[..], trace.calls[..calls], "cut {cut}");
                }
                // Cut inside the header: there is no log to read.
                Err(TraceError::Torn { calls: 0 }) => assert!(cut < 16, "cut {cut}"),
                Err(other) => panic!("cut at {cut}: {other}"),
            },
            other => panic!("cut at {cut}: {other:?}"),
        }
    }
    for at in 0..log.len() {
        let mut bad = log.clone();
        bad[at] ^= 0x41;
        // Never taken for a torn log: lengths have checksums of their own.
        match trace::decode(&bad) {
            Err(TraceError::Corrupt { .. } | TraceError::BadMagic | TraceError::Version { .. }) => {
            }
            Err(other) => panic!("byte {at} flipped: {other}"),
            Ok(t) => panic!("byte {at} flipped, read as {} calls", t.calls.len()),
        }
    }
    // Not a log at all, a log of another version, and a malformed varint.
    assert_eq!(trace::decode(b"XY"), Err(TraceError::BadMagic));
    assert_eq!(trace::decode(b"PA"), Err(TraceError::Torn { calls: 0 }));
    assert_eq!(
        trace::decode(b"PATR\x09"),
        Err(TraceError::Version { found: 9 })
    );
    let mut malformed = b"PATR\x01".to_vec();
    malformed.extend_from_slice(&[0xFF; 10]);
    malformed.extend_from_slice(&[0; 8]);
    assert_eq!(
        trace::decode(&malformed),
        Err(TraceError::Corrupt { block: 0 })
    );
}

/// Hostile logs (any call, any extent, any request, pins and readers numbered at
/// random) replay without a panic, on the recorded policies and on another.
#[test]
fn hostile_logs_replay_without_a_panic() {
    let mut rng = SplitMix::new(77);
    let big = |rng: &mut SplitMix| match rng.below(4) {
        0 => u64::MAX - rng.below(4),
        1 => rng.below(1 << 20),
        _ => rng.below(80),
    };
    for _ in 0..200 {
        let calls = (0..50)
            .map(|_| {
                let e = Extent::new(big(&mut rng), big(&mut rng));
                let code = rng.below(1 << 32) as u32;
                match rng.below(7) {
                    0 => Call::Allocate {
                        request: Request::new(big(&mut rng).max(1))
                            .policy(Policy::Exact(big(&mut rng))),
                        result: if rng.below(2) == 0 { Ok(e) } else { Err(code) },
                    },
                    1 => Call::Free {
                        extent: e,
                        on_commit: rng.below(2) == 0,
                        result: Ok(()),
                    },
                    2 => Call::Pin {
                        extent: e,
                        result: Ok(big(&mut rng)),
                    },
                    3 => Call::Unpin {
                        pin: big(&mut rng),
                        result: Ok(()),
                    },
                    4 => Call::Commit {
                        epoch: big(&mut rng),
                        result: Ok(()),
                    },
                    5 => Call::BeginRead {
                        reader: big(&mut rng),
                    },
                    _ => Call::EndRead {
                        reader: big(&mut rng),
                        result: Err(code),
                    },
                }
            })
            .collect();
        let t = Trace {
            capacity: 64,
            groups: rng.below(3),
            calls,
        };
        let _ = trace::replay(&t, None);
        let _ = trace::replay(&t, Some(Policy::FirstFit));
        let _ = trace::decode(&trace::encode(&t)).unwrap();
    }
}

/// A log recorded on best fit replays on first fit and on best fit with every
/// allocation's policy replaced: frees and pins follow the allocations they were
/// made in, nothing fails that did not fail, and the reports tell the policies apart.
#[test]
fn a_log_of_one_policy_replays_on_another() {
    let (trace, _) = churn(5, 5_000, Policy::BestFit);
    let recorded_failures = trace
        .calls
        .iter()
        .filter(|c| matches!(c, Call::Allocate { result: Err(_), .. }))
        .count() as u64;
    let first = trace::replay(&trace, Some(Policy::FirstFit)).unwrap();
    let best = trace::replay(&trace, Some(Policy::BestFit)).unwrap();
    assert_eq!(
        best.equal_results,
        trace.calls.len(),
        "the same policy: the same results"
    );
    assert_eq!(best.failures, recorded_failures);
    assert_eq!(first.calls, trace.calls.len());
    // Frees follow their allocations: a free never fails in the replay unless it
    // failed in the log.
    assert!(
        first.equal_results * 10 >= trace.calls.len() * 9,
        "{first:?}"
    );
    println!("{}", trace::ReplayReport::table_header());
    println!("{}\n{}", best.table_row(), first.table_row());
}

/// A shared allocator's log, recorded from one thread, replays on a shared
/// allocator of the same groups with every result equal.
#[test]
fn a_shared_log_replays() {
    let alloc = SharedAllocator::builder(1 << 12).groups(4).build();
    let rec = SharedRecorder::new(&alloc);
    let mut rng = SplitMix::new(3);
    let mut live = Vec::new();
    for _ in 0..2_000 {
        if live.len() > 40 || (!live.is_empty() && rng.below(2) == 0) {
            let e = live.swap_remove(rng.below(live.len() as u64) as usize);
            let pin = (rng.below(4) == 0).then(|| rec.pin(e).unwrap());
            rec.free(e, false).unwrap();
            if let Some(p) = pin {
                rec.unpin(p).unwrap();
            }
        } else if let Ok(e) = rec.allocate(Request::new(1 + rng.below(30))) {
            live.push(e);
        }
    }
    let epoch = alloc.epoch();
    rec.commit(epoch).unwrap();
    let trace = rec.into_trace();
    assert_eq!(trace.groups, 4);
    let back = trace::decode(&trace::encode(&trace)).unwrap();
    let report = trace::replay(&back, None).unwrap();
    assert_eq!(report.equal_results, trace.calls.len());
}
