//! What holds the space, run by run: [`ExtentAllocator::runs`].

use alloc::vec::Vec;
use core::ops::Range;

use super::ExtentAllocator;
use super::ranges::{clip, set_pieces, to_extent, to_range};
use super::transition::reader_holds;
use crate::{BlockState, Extent};

/// A maximal run of blocks in one state with the same holds, as
/// [`ExtentAllocator::runs`] and [`SharedAllocator::runs`](crate::SharedAllocator::runs)
/// list them: what a picture of the space, or an operator's dump, is drawn from.
///
/// ```
/// use pinalloc::{BlockState, Extent, ExtentAllocator, Request};
///
/// let mut alloc = ExtentAllocator::new(16);
/// let e = alloc.allocate(Request::new(8))?;
/// let pin = alloc.pin(Extent::new(0, 2))?;
/// alloc.free(e)?;
/// let runs: Vec<_> = alloc.runs(0..16).collect();
/// assert_eq!((runs[0].extent, runs[0].state, runs[0].pins), (Extent::new(0, 2), BlockState::Deferred, 1));
/// assert_eq!((runs[1].extent, runs[1].state), (Extent::new(2, 14), BlockState::Free));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct BlockRun {
    /// The blocks.
    pub extent: Extent,
    /// Their state.
    pub state: BlockState,
    /// Pins over each block ([`pins`](crate::ExtentAllocator::pins) lists them).
    pub pins: u64,
    /// Deferred blocks only: the epoch of the free that deferred them; 0 for blocks
    /// allocated and freed on commit in one epoch, which no reader saw.
    pub freed_in: Option<u64>,
    /// Deferred blocks only: they wait for the commit of `freed_in` (open, or
    /// prepared and not finished).
    pub awaiting_commit: bool,
    /// Deferred blocks only: a live reader that began at or before `freed_in` holds
    /// them ([`readers`](crate::ExtentAllocator::readers) says which).
    pub reader_held: bool,
}

impl BlockRun {
    /// Whether `next`, just after `self`, continues it.
    pub(crate) fn joins(&self, next: &BlockRun) -> bool {
        self.extent.start + self.extent.len == next.extent.start
            && (
                self.state,
                self.pins,
                self.freed_in,
                self.awaiting_commit,
                self.reader_held,
            ) == (
                next.state,
                next.pins,
                next.freed_in,
                next.awaiting_commit,
                next.reader_held,
            )
    }
}

/// Appends `run` to `out`, joining it to the last when it continues it.
pub(crate) fn push_run(out: &mut Vec<BlockRun>, run: BlockRun) {
    match out.last_mut() {
        Some(last) if last.joins(&run) => last.extent.len += run.extent.len,
        _ => out.push(run),
    }
}

impl ExtentAllocator {
    /// The maximal runs of `range` (clipped to the space), in address order: each
    /// with its state, its pin count, and what holds it (see [`BlockRun`]). O(runs
    /// and pin boundaries in `range`, times log n), never O(blocks): a space of 2^60
    /// blocks lists as fast as its holds.
    ///
    /// ```
    /// use pinalloc::{BlockState, ExtentAllocator, Request};
    ///
    /// let mut alloc = ExtentAllocator::new(1 << 60);
    /// let e = alloc.allocate(Request::new(1 << 40))?;
    /// alloc.commit(1)?;
    /// alloc.free_on_commit(e)?; // Deferred until epoch 2 commits
    /// let runs: Vec<_> = alloc.runs(0..u64::MAX).collect();
    /// assert_eq!(runs.len(), 2);
    /// assert_eq!((runs[0].state, runs[0].freed_in, runs[0].awaiting_commit), (BlockState::Deferred, Some(2), true));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn runs(&self, range: Range<u64>) -> impl Iterator<Item = BlockRun> + use<> {
        self.runs_vec(range).into_iter()
    }

    /// [`runs`](Self::runs), collected.
    pub(crate) fn runs_vec(&self, range: Range<u64>) -> Vec<BlockRun> {
        let r = range.start..range.end.min(self.capacity);
        if r.start >= r.end {
            return Vec::new();
        }
        // The pieces by state, in order, each with its run's details; `pins` counts
        // only the pin a Deferred run keeps (the pin table knows the others).
        let oldest = self.epochs.oldest_reader();
        let d = &self.deferrals;
        let plain = |state| BlockRun {
            extent: Extent::new(0, 0),
            state,
            pins: 0,
            freed_in: None,
            awaiting_commit: false,
            reader_held: false,
        };
        let mut pieces: Vec<(Range<u64>, BlockRun)> = Vec::new();
        for e in self.free.overlapping(r.start, r.end) {
            pieces.push((clip(&to_range(e), &r), plain(BlockState::Free)));
        }
        for p in set_pieces(&self.pinned_free, &r) {
            pieces.push((p, plain(BlockState::Free)));
        }
        for (k, freed) in d.epoch_of.overlapping(&r) {
            let run = BlockRun {
                pins: u64::from(d.epoch_of.keeps_pin(&k)),
                freed_in: Some(freed.epoch),
                awaiting_commit: d.pending.overlaps(&k) || d.sealed.overlaps(&k),
                reader_held: freed.epoch != 0 && reader_holds(oldest, freed.epoch),
                ..plain(BlockState::Deferred)
            };
            pieces.push((clip(&k, &r), run));
        }
        pieces.sort_unstable_by_key(|p| p.0.start);
        // Allocated between them.
        let mut all = Vec::with_capacity(pieces.len() * 2 + 1);
        let mut at = r.start;
        for p in pieces {
            if p.0.start > at {
                all.push((at..p.0.start, plain(BlockState::Allocated)));
            }
            at = p.0.end;
            all.push(p);
        }
        if at < r.end {
            all.push((at..r.end, plain(BlockState::Allocated)));
        }
        // Cut at the pin count's changes.
        let (mut count, steps) = self.pins.count_steps(&r);
        let mut steps = steps.into_iter().peekable();
        let mut out: Vec<BlockRun> = Vec::new();
        for (piece, run) in all {
            let mut from = piece.start;
            loop {
                while let Some(&(k, diff)) = steps.peek() {
                    if k > from {
                        break;
                    }
                    count = count.wrapping_add_signed(diff);
                    steps.next();
                }
                let to = steps.peek().map_or(piece.end, |&(k, _)| k.min(piece.end));
                push_run(
                    &mut out,
                    BlockRun {
                        extent: to_extent(&(from..to)),
                        pins: count + run.pins,
                        ..run
                    },
                );
                if to == piece.end {
                    break;
                }
                from = to;
            }
        }
        out
    }
}

#[cfg(feature = "svg")]
impl ExtentAllocator {
    /// A picture of the whole space as SVG (the `svg` feature): see
    /// [`Picture`](crate::picture::Picture). O(runs), never O(blocks).
    ///
    /// ```
    /// use pinalloc::picture::Picture;
    /// let alloc = pinalloc::ExtentAllocator::new(1 << 60);
    /// assert!(alloc.picture(&Picture::new()).contains("</svg>"));
    /// ```
    #[must_use]
    pub fn picture(&self, picture: &crate::picture::Picture) -> alloc::string::String {
        let capacity = self.capacity_blocks();
        picture.render(capacity, self.runs(0..capacity), &self.stats())
    }
}
