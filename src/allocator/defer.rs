//! Deferred blocks: freed by their owner, still held by a pin, an epoch or a reader.
//!
//! Every Deferred block remembers the epoch it was freed in: readers that began at or
//! before that epoch hold it. Blocks freed with `free_on_commit` in the open epoch are
//! also *pending* until it commits.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::ops::Range;

use rangemap::{RangeMap, RangeSet};

use super::ranges::clip;

/// What a Deferred block remembers of the free that deferred it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Freed {
    /// The epoch of the free: readers that began at or before it hold the block.
    pub(crate) epoch: u64,
    /// The free's number: a waiter remembers [`Deferrals::next_seq`] and waits only
    /// for blocks deferred before it, so blocks released and deferred again by a later
    /// free (the ABA case) are not mistaken for the ones it waits for.
    pub(crate) seq: u64,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Deferrals {
    /// Every Deferred block → the epoch and number of its free.
    pub(crate) epoch_of: RangeMap<u64, Freed>,
    /// The same blocks by epoch, with block counts: what a departing reader may release.
    /// Pending blocks join only when their epoch commits, so that a reader's end never
    /// looks at the open epoch's pending frees, which it cannot release.
    pub(crate) by_epoch: BTreeMap<u64, (RangeSet<u64>, u64)>,
    /// Deferred blocks.
    pub(crate) count_blocks: u64,
    /// Deferred blocks waiting for the open epoch to commit.
    pub(crate) pending: RangeSet<u64>,
    /// Blocks in `pending`.
    pub(crate) count_pending: u64,
    /// The number the next deferring free gets ([`Freed::seq`]); starts at 0.
    pub(crate) next_seq: u64,
    /// The oldest live reader's epoch, as last told by
    /// [`set_oldest_reader`](Self::set_oldest_reader).
    pub(crate) oldest_reader: Option<u64>,
    /// Blocks in `by_epoch` freed at or after `oldest_reader`: what readers hold.
    pub(crate) reader_held: u64,
}

impl Deferrals {
    /// Allocated → Deferred for `r`, freed in `epoch`; with `pending`, all of it also
    /// waits for the open epoch (`epoch`) to commit.
    pub(crate) fn add(&mut self, r: Range<u64>, epoch: u64, pending: bool) {
        debug_assert!(!self.epoch_of.overlaps(&r), "deferring Deferred blocks");
        let len = r.end - r.start;
        let freed = Freed {
            epoch,
            seq: self.next_seq,
        };
        self.epoch_of.insert(r.clone(), freed);
        self.count_blocks += len;
        if pending {
            self.count_pending += len;
            self.pending.insert(r);
        } else {
            self.index_by_epoch(r, epoch);
        }
    }

    fn index_by_epoch(&mut self, r: Range<u64>, epoch: u64) {
        let len = r.end - r.start;
        let slot = self.by_epoch.entry(epoch).or_default();
        slot.1 += len;
        slot.0.insert(r);
        if self.oldest_reader.is_some_and(|o| o <= epoch) {
            self.reader_held += len;
        }
    }

    /// Blocks in `by_epoch` freed in epochs `range`.
    fn count_freed_in(&self, range: impl core::ops::RangeBounds<u64>) -> u64 {
        self.by_epoch.range(range).map(|(_, s)| s.1).sum()
    }

    /// The oldest live reader's epoch changed to `oldest` (readers began, or the
    /// oldest ended). Costs one step per epoch between the old and the new, which a
    /// departing reader walks anyway to release their blocks.
    pub(crate) fn set_oldest_reader(&mut self, oldest: Option<u64>) {
        self.reader_held = match (self.oldest_reader, oldest) {
            (_, None) => 0,
            (None, Some(new)) => self.count_freed_in(new..),
            (Some(old), Some(new)) if new >= old => {
                self.reader_held - self.count_freed_in(old..new)
            }
            (Some(old), Some(new)) => self.reader_held + self.count_freed_in(new..old),
        };
        self.oldest_reader = oldest;
    }

    /// Deferred → (about to be) Free for `r`, which holds no pending block.
    pub(crate) fn remove(&mut self, r: Range<u64>) {
        debug_assert!(!self.pending.overlaps(&r), "releasing pending blocks");
        let pieces: Vec<(Range<u64>, u64)> = self
            .epoch_of
            .overlapping(&r)
            .map(|(k, f)| (clip(k, &r), f.epoch))
            .collect();
        for (p, epoch) in pieces {
            let len = p.end - p.start;
            let slot = self
                .by_epoch
                .get_mut(&epoch)
                .expect("deferred epochs are indexed");
            slot.0.remove(p.clone());
            slot.1 -= len;
            if self.oldest_reader.is_some_and(|o| o <= epoch) {
                self.reader_held -= len;
            }
            if slot.1 == 0 {
                self.by_epoch.remove(&epoch);
            }
            self.count_blocks -= len;
        }
        self.epoch_of.remove(r);
    }

    /// Ends a deferring free: the next one gets a new number.
    pub(crate) fn next_free(&mut self) {
        self.next_seq = self.next_seq.saturating_add(1);
    }

    /// Blocks of `within` still Deferred by a free numbered below `mark`.
    pub(crate) fn count_deferred_before(&self, within: &Range<u64>, mark: u64) -> u64 {
        self.epoch_of
            .overlapping(within)
            .filter(|&(_, f)| f.seq < mark)
            .map(|(k, _)| {
                let c = clip(k, within);
                c.end - c.start
            })
            .sum()
    }

    /// Pieces of `within` that are Deferred, with their epochs.
    pub(crate) fn pieces(&self, within: &Range<u64>) -> Vec<(Range<u64>, u64)> {
        self.epoch_of
            .overlapping(within)
            .map(|(k, f)| (clip(k, within), f.epoch))
            .collect()
    }

    /// Takes every pending block off the commit wait of epoch `open`, in which they
    /// were all freed, returning them.
    pub(crate) fn take_pending(&mut self, open: u64) -> Vec<Range<u64>> {
        let all: Vec<Range<u64>> = self.pending.iter().cloned().collect();
        self.pending = RangeSet::new();
        self.count_pending = 0;
        for r in &all {
            self.index_by_epoch(r.clone(), open);
        }
        all
    }

    /// Deferred blocks held by an epoch: pending, or freed at or after the oldest
    /// reader's epoch. O(1).
    pub(crate) fn epoch_held_blocks(&self) -> u64 {
        // Pending blocks were freed in the open epoch, at or after any reader's.
        self.reader_held + self.count_pending
    }

    /// Ranges freed in epochs `from..to` (what readers leaving may release).
    pub(crate) fn freed_in(&self, from: u64, to: u64) -> Vec<Range<u64>> {
        self.by_epoch
            .range(from..to)
            .flat_map(|(_, s)| s.0.iter().cloned())
            .collect()
    }
}
