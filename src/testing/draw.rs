//! Drawing [`Op`]s from any source of numbers: a seeded generator for swarm walks, or
//! a fuzzer's bytes.

use core::fmt;

use super::{Extra, Op, PinTarget, PolicyOp, Pos, TxnStep};

/// A source of numbers: `below(n)` is some value in `0..n` (`n > 0`).
pub trait Source {
    /// A value in `0..n`.
    fn below(&mut self, n: u64) -> u64;

    /// True one time in `n`.
    fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }
}

pub use crate::splitmix::SplitMix;

impl Source for SplitMix {
    fn below(&mut self, n: u64) -> u64 {
        SplitMix::below(self, n)
    }
}

/// The kinds of [`Op`], in the order of [`Weights`].
pub const OP_KINDS: [&str; 16] = [
    "allocate",
    "allocate_many",
    "free_live",
    "free_raw",
    "reserve",
    "unreserve",
    "foreign",
    "pin",
    "unpin",
    "unpin_stale",
    "commit",
    "begin_read",
    "end_read",
    "end_read_stale",
    "free_all_live",
    "resize",
];

/// How often each kind of [`Op`] is drawn, in the order of [`OP_KINDS`].
///
/// Swarm testing draws the weights themselves at random per seed, and turns some
/// kinds off entirely: a walk with no commits, or with no frees, reaches states a
/// walk with everything on almost never does.
///
/// ```
/// use pinalloc::testing::{SplitMix, Weights};
/// let w = Weights::swarm(&mut SplitMix::new(1));
/// println!("{w}"); // e.g. "allocate 7, allocate_many off, ..."
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Weights(pub [u32; OP_KINDS.len()]);

impl Weights {
    /// The default mix: close to what [`strategy::op`](super::strategy::op) draws,
    /// plus the rare free of everything live, which the strategy leaves out.
    #[must_use]
    pub fn standard() -> Self {
        Weights([10, 2, 8, 2, 2, 2, 1, 5, 4, 1, 3, 2, 2, 1, 1, 1])
    }

    /// Random weights from `source`: each kind 1 to 10, except that each is off one
    /// time in four. Allocation stays on, and so does some way of freeing.
    pub fn swarm(source: &mut impl Source) -> Self {
        let mut w = [0u32; OP_KINDS.len()];
        for slot in &mut w {
            *slot = if source.one_in(4) {
                0
            } else {
                1 + source.below(10) as u32
            };
        }
        w[0] = w[0].max(1);
        if w[2] == 0 && w[14] == 0 {
            w[2] = 1;
        }
        Weights(w)
    }
}

impl fmt::Display for Weights {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (name, w)) in OP_KINDS.iter().zip(self.0).enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            if w == 0 {
                write!(f, "{sep}{name} off")?;
            } else {
                write!(f, "{sep}{name} {w}")?;
            }
        }
        Ok(())
    }
}

fn draw_pos(s: &mut impl Source) -> Pos {
    if s.below(9) < 8 {
        return Pos::Within(s.below(1000) as u16);
    }
    Pos::Raw(match s.below(4) {
        0 => u64::MAX,
        1 => u64::MAX - 1,
        2 => s.below(600),
        _ => u64::MAX - s.below(601),
    })
}

fn draw_len(s: &mut impl Source) -> u64 {
    match s.below(20) {
        0..12 => 1 + s.below(16),
        12..16 => 1 + s.below(128),
        16..18 => 1 + s.below(600),
        18 => 0,
        _ => [u64::MAX, u64::MAX / 2, 1 << 40][s.below(3) as usize],
    }
}

fn draw_align(s: &mut impl Source) -> u64 {
    match s.below(10) {
        0..6 => 1,
        6..9 => 1 << s.below(6),
        _ => [0, 3, 12, 128, 256, 1 << 63][s.below(6) as usize],
    }
}

fn draw_policy(s: &mut impl Source) -> PolicyOp {
    match s.below(9) {
        0..3 => PolicyOp::Best,
        3..5 => PolicyOp::First,
        5..7 => PolicyOp::Near(draw_pos(s)),
        _ => PolicyOp::Exact(draw_pos(s)),
    }
}

fn draw_extra(s: &mut impl Source) -> Extra {
    match s.below(56) {
        0..30 => Extra::None,
        30..50 => Extra::Plus(s.below(64)),
        50..55 => Extra::Plus(u64::MAX),
        _ => Extra::Below,
    }
}

fn draw_reservation(s: &mut impl Source) -> Option<usize> {
    s.one_in(4).then(|| s.below(8) as usize)
}

impl Op {
    /// One operation drawn from `source` with `weights`: the same mix of well-formed,
    /// extreme and malformed arguments as [`strategy::op`](super::strategy::op).
    /// `free_all_live` draws a [`Op::FreeLive`] of a whole live extent.
    ///
    /// ```
    /// use pinalloc::testing::{Op, Runner, SplitMix, Weights};
    ///
    /// let mut rng = SplitMix::new(42);
    /// let weights = Weights::swarm(&mut rng);
    /// let mut run = Runner::new(256, &[]);
    /// for _ in 0..200 {
    ///     run.apply(&Op::draw(&weights, &mut rng));
    /// }
    /// run.finish();
    /// ```
    ///
    /// # Panics
    ///
    /// If every weight is 0.
    pub fn draw(weights: &Weights, s: &mut impl Source) -> Op {
        let total: u64 = weights.0.iter().map(|&w| u64::from(w)).sum();
        assert!(total > 0, "every kind of operation is off");
        let mut pick = s.below(total);
        let kind = weights
            .0
            .iter()
            .position(|&w| {
                let hit = pick < u64::from(w);
                pick = pick.saturating_sub(u64::from(w));
                hit
            })
            .unwrap_or(0);
        match kind {
            0 => Op::Allocate {
                min: draw_len(s),
                extra: draw_extra(s),
                align: draw_align(s),
                policy: draw_policy(s),
                reservation: draw_reservation(s),
            },
            1 => Op::AllocateMany {
                total: draw_len(s),
                reservation: draw_reservation(s),
            },
            2 => Op::FreeLive {
                index: s.below(64) as usize,
                skip: if s.below(4) < 3 { 0 } else { s.below(8) },
                take: (s.below(10) < 3).then(|| 1 + s.below(7)),
                on_commit: s.below(10) < 3,
            },
            3 => Op::FreeRaw {
                start: draw_pos(s),
                len: draw_len(s),
                on_commit: s.one_in(2),
            },
            4 => Op::Reserve { len: draw_len(s) },
            5 => Op::Unreserve {
                index: s.below(8) as usize,
            },
            6 => Op::Foreign {
                unreserve: s.one_in(2),
            },
            7 => Op::Pin {
                target: if s.below(5) < 3 {
                    PinTarget::Live {
                        index: s.below(64) as usize,
                        skip: s.below(4),
                    }
                } else {
                    PinTarget::Raw {
                        start: draw_pos(s),
                        len: draw_len(s),
                    }
                },
                blocking: s.one_in(5),
            },
            8 => Op::Unpin {
                index: s.below(16) as usize,
            },
            9 => Op::UnpinStale {
                foreign: s.one_in(2),
            },
            10 => {
                let offset = match s.below(9) {
                    0..6 => 0,
                    6 => -1,
                    7 => 1,
                    _ => i64::MAX,
                };
                // Half plain commits, half the other steps of a transaction.
                match s.below(8) {
                    0..4 => Op::Commit { offset },
                    4 => Op::Txn {
                        step: TxnStep::Prepare,
                        offset,
                    },
                    5 => Op::Txn {
                        step: TxnStep::Finish,
                        offset,
                    },
                    6 => Op::Txn {
                        step: TxnStep::Abort,
                        offset,
                    },
                    _ => Op::Txn {
                        step: TxnStep::AbortAll,
                        offset,
                    },
                }
            }
            11 => Op::BeginRead,
            12 => Op::EndRead {
                index: s.below(8) as usize,
            },
            13 => Op::EndReadStale {
                foreign: s.one_in(2),
            },
            15 if s.one_in(16) => Op::Reset,
            15 => Op::Resize {
                shrink: s.one_in(2),
                delta: match s.below(10) {
                    0..8 => s.below(129) as i64 - 64,
                    8 => i64::MIN,
                    _ => i64::MAX,
                },
            },
            _ => Op::FreeLive {
                index: s.below(4096) as usize,
                skip: 0,
                take: None,
                on_commit: s.one_in(2),
            },
        }
    }
}
