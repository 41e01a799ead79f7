//! A testing kit for code built on pinalloc (feature `testing`).
//!
//! - [`Model`]: the block-state contract as plainly as it can be written, one record
//!   per block, every placement by brute force. pinalloc's own tests compare against
//!   it after every operation.
//! - [`Checked`]: an [`ExtentAllocator`](crate::ExtentAllocator) and the model in
//!   lockstep. Put it where your code keeps its allocator in tests: every call is
//!   checked against the model, a failed call must change nothing, and the whole
//!   state is compared after each one.
//! - [`Op`], [`Runner`] and [`run_ops`]: operation sequences (allocate under every
//!   policy, free, pin, unpin, epochs, readers, reservations, and bad input of every
//!   kind) played on a [`Checked`] allocator.
//! - [`strategy`]: proptest strategies for requests and operation sequences.
//! - [`Op::draw`], [`Weights`] and [`SplitMix`]: operations drawn from a seeded
//!   generator (or a fuzzer's bytes, through [`Source`]), for long swarm walks whose
//!   operation mix is itself random per seed.
//!
//! `examples/toyfs_truncate.rs` shows a small "filesystem" property-testing its own
//! truncate path with it.
//!
//! ```
//! use proptest::prelude::*;
//! use pinalloc::testing::{run_ops, strategy};
//!
//! proptest!(ProptestConfig::with_cases(16), |(ops in proptest::collection::vec(strategy::op(), 1..60))| {
//!     run_ops(128, &[], &ops);
//! });
//! ```

mod checked;
mod draw;
mod model;
mod ops;
mod snapshot;
pub mod strategy;
mod variant;

pub use checked::Checked;
pub use draw::{OP_KINDS, Source, SplitMix, Weights};
pub use model::{Freed, Model, ModelBlock};
pub use ops::{Extra, Op, PinTarget, PolicyOp, Pos, Runner, TxnStep, run_ops};
pub use snapshot::{SharedSnapshot, first_difference};
pub use variant::{Variant, err_variant};
