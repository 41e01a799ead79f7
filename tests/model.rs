//! The allocator against the per-block reference model, after every operation:
//! allocation (every policy, alignment, ranges, reservations), frees (plain, on commit,
//! hostile), pins (deferring and blocking, nested, hostile unpins), epochs (commits,
//! hostile commits) and snapshot readers. Every case ends by rebuilding from the
//! durable view, releasing everything and checking that the whole space is free again.
//!
//! The model, the operations and the lockstep checks are the `testing` kit's
//! (`pinalloc::testing`), which users get too.
//!
//! `PROPTEST_CASES=100000 cargo test --release --test model` searches longer.

use pinalloc::testing::strategy::{op, pos, small_op};
use pinalloc::testing::{Model, run_ops};
use pinalloc::{Extent, ExtentAllocator, Policy, Request};
use proptest::prelude::*;

/// Cases per property: 1,024 unless `PROPTEST_CASES` says otherwise.
fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    ProptestConfig {
        cases,
        max_shrink_iters: 4096,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn allocator_matches_the_model(
        capacity in 1u64..=512,
        mount in proptest::collection::vec((pos(), 1u64..32), 0..6),
        ops in proptest::collection::vec(op(), 1..80),
    ) {
        run_ops(capacity, &mount, &ops);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: config().cases / 16 + 1, ..config() })]

    /// Bigger spaces with many small extents, so the trees grow deep.
    #[test]
    fn large_spaces_match_the_model(capacity in 1024u64..=4096, ops in proptest::collection::vec(small_op(), 100..600)) {
        run_ops(capacity, &[], &ops);
    }
}

/// Every `(start, len)` on a 16-block space, for `free` and for an exact allocate,
/// from many starting patterns of Allocated blocks.
#[test]
fn exhaustive_small_universe() {
    const N: u64 = 16;
    let mut lens: Vec<u64> = (0..=N + 1).collect();
    lens.extend([u64::MAX, u64::MAX - 3]);
    let mut starts: Vec<u64> = (0..=N + 1).collect();
    starts.extend([u64::MAX, u64::MAX - 2]);
    let mut checked = 0u64;
    // Patterns: bit b set = block b Allocated. A stride keeps it to a few hundred.
    for pattern in (0u32..1 << N).step_by(97).chain([0, (1 << N) - 1]) {
        let mut model = Model::new(N);
        let allocated: Vec<Extent> = (0..N)
            .filter(|b| pattern >> b & 1 == 1)
            .map(|b| Extent::new(b, 1))
            .collect();
        let base = ExtentAllocator::from_allocated_extents(N, allocated.iter().copied()).unwrap();
        for &e in &allocated {
            model.mount_allocated(e);
        }
        assert_eq!(base.free_extents().collect::<Vec<_>>(), model.free_runs());
        for &start in &starts {
            for &len in &lens {
                let e = Extent::new(start, len);
                let (mut real, mut m) = (base.clone(), model.clone());
                assert_eq!(
                    real.free(e).map(|o| o.freed_blocks),
                    m.free(e, false).map(|f| f.now),
                    "free {e} on {pattern:#06x}"
                );
                assert_eq!(real.free_extents().collect::<Vec<_>>(), m.free_runs());
                real.check_invariants().unwrap();

                let req = Request::new(len).policy(Policy::Exact(start));
                let (mut real, mut m) = (base.clone(), model.clone());
                assert_eq!(
                    real.allocate(req),
                    m.allocate(&req, None),
                    "exact {e} on {pattern:#06x}"
                );
                assert_eq!(real.free_extents().collect::<Vec<_>>(), m.free_runs());
                real.check_invariants().unwrap();
                checked += 2;
            }
        }
    }
    assert!(checked > 200_000, "only {checked} cases ran");
}
