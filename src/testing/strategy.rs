//! proptest strategies for requests and operation sequences.
//!
//! Values lean towards the well-formed and the small, with a steady share of the
//! extreme and the malformed: zero lengths, `u64::MAX`, bad alignments, positions
//! outside the space, stale and foreign handles.

use proptest::prelude::*;
use std::vec;

use super::{Extra, Op, PinTarget, PolicyOp, Pos, TxnStep};
use crate::{Policy, Request};

/// A block position: mostly inside the space, sometimes anywhere (near 0 or near
/// `u64::MAX`).
///
/// ```
/// use proptest::strategy::{Strategy, ValueTree};
/// let mut runner = proptest::test_runner::TestRunner::deterministic();
/// let _pos = pinalloc::testing::strategy::pos().new_tree(&mut runner).unwrap().current();
/// ```
pub fn pos() -> impl Strategy<Value = Pos> {
    prop_oneof![
        8 => (0u16..1000).prop_map(Pos::Within),
        1 => prop_oneof![Just(u64::MAX), Just(u64::MAX - 1), 0u64..600, (u64::MAX - 600)..=u64::MAX]
            .prop_map(Pos::Raw),
    ]
}

/// A length: mostly small, sometimes zero, large or extreme.
///
/// ```
/// use proptest::strategy::{Strategy, ValueTree};
/// let mut runner = proptest::test_runner::TestRunner::deterministic();
/// let _len = pinalloc::testing::strategy::len().new_tree(&mut runner).unwrap().current();
/// ```
pub fn len() -> impl Strategy<Value = u64> {
    prop_oneof![
        12 => 1u64..=16,
        4 => 1u64..=128,
        2 => 1u64..=600,
        1 => Just(0u64),
        1 => prop_oneof![Just(u64::MAX), Just(u64::MAX / 2), Just(1u64 << 40)],
    ]
}

/// An alignment: mostly 1, often a small power of two, sometimes one above 64 blocks
/// (which the index keeps a view for) or a malformed one.
///
/// ```
/// use proptest::strategy::{Strategy, ValueTree};
/// let mut runner = proptest::test_runner::TestRunner::deterministic();
/// let _align = pinalloc::testing::strategy::align().new_tree(&mut runner).unwrap().current();
/// ```
pub fn align() -> impl Strategy<Value = u64> {
    prop_oneof![
        6 => Just(1u64),
        3 => (0u32..6).prop_map(|s| 1u64 << s),
        1 => prop_oneof![
            Just(0u64),
            Just(3u64),
            Just(12u64),
            Just(128u64),
            Just(256u64),
            Just(1u64 << 63)
        ],
    ]
}

/// A placement policy with positions relative to the space.
///
/// ```
/// use proptest::strategy::{Strategy, ValueTree};
/// let mut runner = proptest::test_runner::TestRunner::deterministic();
/// let _p = pinalloc::testing::strategy::policy().new_tree(&mut runner).unwrap().current();
/// ```
pub fn policy() -> impl Strategy<Value = PolicyOp> {
    prop_oneof![
        3 => Just(PolicyOp::Best),
        2 => Just(PolicyOp::First),
        2 => pos().prop_map(PolicyOp::Near),
        2 => pos().prop_map(PolicyOp::Exact),
    ]
}

/// A [`Request`] for a space of `capacity` blocks: any length range, alignment and
/// policy, malformed ones included.
///
/// ```
/// use proptest::prelude::*;
/// use pinalloc::testing::strategy::request;
/// use pinalloc::ExtentAllocator;
///
/// proptest!(|(req in request(64))| {
///     let mut alloc = ExtentAllocator::new(64);
///     if let Ok(e) = alloc.allocate(req) {
///         prop_assert!(e.start + e.len <= 64);
///     }
/// });
/// ```
pub fn request(capacity: u64) -> impl Strategy<Value = Request> {
    (len(), extra(), align(), policy()).prop_map(move |(min, extra, align, policy)| {
        let max = match extra {
            Extra::None => min,
            Extra::Plus(x) => min.saturating_add(x),
            Extra::Below => min.wrapping_sub(1),
        };
        let policy = match policy {
            PolicyOp::Best => Policy::BestFit,
            PolicyOp::First => Policy::FirstFit,
            PolicyOp::Near(p) => Policy::Near(p.resolve(capacity)),
            PolicyOp::Exact(p) => Policy::Exact(p.resolve(capacity)),
        };
        Request::range(min..=max).align(align).policy(policy)
    })
}

fn txn_step() -> impl Strategy<Value = TxnStep> {
    prop_oneof![
        3 => Just(TxnStep::Prepare),
        3 => Just(TxnStep::Finish),
        2 => Just(TxnStep::Abort),
        2 => Just(TxnStep::AbortAll),
    ]
}

fn extra() -> impl Strategy<Value = Extra> {
    prop_oneof![
        30 => Just(Extra::None),
        20 => (0u64..64).prop_map(Extra::Plus),
        5 => Just(Extra::Plus(u64::MAX)),
        1 => Just(Extra::Below),
    ]
}

/// Any [`Op`], with weights that keep a space busy: mostly allocations, frees and
/// pins, with every kind of bad input mixed in.
///
/// ```
/// use proptest::prelude::*;
/// use pinalloc::testing::{run_ops, strategy::op};
///
/// proptest!(ProptestConfig::with_cases(8), |(ops in proptest::collection::vec(op(), 1..40))| {
///     run_ops(64, &[], &ops);
/// });
/// ```
pub fn op() -> impl Strategy<Value = Op> {
    let reservation = || proptest::option::weighted(0.25, 0usize..8);
    let target = prop_oneof![
        3 => (0usize..64, 0u64..4).prop_map(|(index, skip)| PinTarget::Live { index, skip }),
        2 => (pos(), len()).prop_map(|(start, len)| PinTarget::Raw { start, len }),
    ];
    prop_oneof![
        10 => (len(), extra(), align(), policy(), reservation()).prop_map(
            |(min, extra, align, policy, reservation)| Op::Allocate { min, extra, align, policy, reservation }
        ),
        2 => (len(), reservation())
            .prop_map(|(total, reservation)| Op::AllocateMany { total, reservation }),
        8 => (0usize..64, prop_oneof![3 => Just(0u64), 1 => 0u64..8], proptest::option::weighted(0.3, 1u64..8), proptest::bool::weighted(0.3))
            .prop_map(|(index, skip, take, on_commit)| Op::FreeLive { index, skip, take, on_commit }),
        2 => (pos(), len(), any::<bool>()).prop_map(|(start, len, on_commit)| Op::FreeRaw { start, len, on_commit }),
        2 => len().prop_map(|len| Op::Reserve { len }),
        2 => (0usize..8).prop_map(|index| Op::Unreserve { index }),
        1 => any::<bool>().prop_map(|unreserve| Op::Foreign { unreserve }),
        5 => (target, proptest::bool::weighted(0.2)).prop_map(|(target, blocking)| Op::Pin { target, blocking }),
        4 => (0usize..16).prop_map(|index| Op::Unpin { index }),
        1 => any::<bool>().prop_map(|foreign| Op::UnpinStale { foreign }),
        3 => prop_oneof![6 => Just(0i64), 1 => Just(-1i64), 1 => Just(1i64), 1 => Just(i64::MAX)]
            .prop_map(|offset| Op::Commit { offset }),
        2 => (txn_step(), prop_oneof![6 => Just(0i64), 1 => Just(-1i64), 1 => Just(1i64), 1 => Just(i64::MIN)])
            .prop_map(|(step, offset)| Op::Txn { step, offset }),
        1 => prop_oneof![
            5 => (any::<bool>(), prop_oneof![4 => -64i64..64, 1 => Just(i64::MIN), 1 => Just(i64::MAX)])
                .prop_map(|(shrink, delta)| Op::Resize { shrink, delta }),
            1 => Just(Op::Reset),
        ],
        2 => Just(Op::BeginRead),
        2 => (0usize..8).prop_map(|index| Op::EndRead { index }),
        1 => any::<bool>().prop_map(|foreign| Op::EndReadStale { foreign }),
    ]
}

/// Mostly small allocations and whole frees, so that a big space fills with many
/// small extents and the trees grow deep; any [`op`] one time in nine.
///
/// ```
/// use proptest::strategy::{Strategy, ValueTree};
/// let mut runner = proptest::test_runner::TestRunner::deterministic();
/// let _op = pinalloc::testing::strategy::small_op().new_tree(&mut runner).unwrap().current();
/// ```
pub fn small_op() -> impl Strategy<Value = Op> {
    let policy = prop_oneof![
        Just(PolicyOp::Best),
        Just(PolicyOp::First),
        pos().prop_map(PolicyOp::Near)
    ];
    prop_oneof![
        5 => (1u64..=8, policy)
            .prop_map(|(min, policy)| Op::Allocate { min, extra: Extra::None, align: 1, policy, reservation: None }),
        3 => (0usize..4096, any::<bool>()).prop_map(|(index, on_commit)| Op::FreeLive { index, skip: 0, take: None, on_commit }),
        1 => op(),
    ]
}
