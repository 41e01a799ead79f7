//! Deferred blocks: freed by their owner, still held by a pin, an epoch or a reader.
//!
//! Every Deferred block remembers the epoch it was freed in: readers that began at or
//! before that epoch hold it. Blocks freed with `free_on_commit` in the open epoch are
//! also *pending* until it commits.
//!
//! The blocks are runs in one B+ tree ([`Runs`]), 24 bytes a run with its key: the
//! end, and the free's number with flags, the epoch following from the number. The
//! tree's summary finds the runs a departing reader may release, and a run can keep
//! the one pin over it (the pin of an I/O buffer freed while the device still uses
//! it), so that such a pin costs nothing beyond its slot while its blocks wait.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::ops::Range;

use rangemap::RangeSet;

use super::ranges::{clip, set_gaps};
use super::transition::reader_holds;
use crate::tree::Cache;
use crate::tree::bplus::{BPlus, Pos, Summary, Value};
use crate::tree::filter::RegionFilter;

/// What a Deferred block remembers of the free that deferred it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Freed {
    /// The epoch of the free: readers that began at or before it hold the block.
    pub(crate) epoch: u64,
    /// The free's number: a waiter remembers [`Deferrals::next_seq`] and waits only
    /// for blocks deferred before it, so blocks released and deferred again by a later
    /// free (the ABA case) are not mistaken for the ones it waits for.
    pub(crate) seq: u64,
}

/// A run of Deferred blocks from one free, under its first block in [`Runs`]: where
/// it ends, and its free's number shifted left by four over four flags
/// ([`EPOCH_0`], [`PENDING`], [`UNLISTED`], [`KEEPS_PIN`]). 16 bytes: the free's epoch is found from
/// its number ([`Runs::eras`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Run {
    end: u64,
    tag: u64,
}

impl Value for Run {}

/// [`Run::tag`]: freed in epoch 0 (never durable), which no reader holds.
const EPOCH_0: u64 = 1;
/// [`Run::tag`]: waits for the open epoch to commit.
const PENDING: u64 = 2;
/// [`Run::tag`]: freed before every live reader's epoch and before the open one, so no
/// reader, now or later, holds it; a departing reader no longer looks at it.
const UNLISTED: u64 = 4;
/// [`Run::tag`]: one pin covers exactly this run, and no other pin covers any of it;
/// the pin is in neither the fresh map nor the coverage, and its blocks are not
/// marked ([`PinTable::give_to_run`](super::pins::PinTable::give_to_run)).
const KEEPS_PIN: u64 = 8;
const SEQ_SHIFT: u32 = 4;
/// The highest free number a run's tag holds.
const MAX_SEQ: u64 = (1 << (64 - SEQ_SHIFT)) - 1;

impl Run {
    #[inline]
    fn seq(self) -> u64 {
        self.tag >> SEQ_SHIFT
    }

    /// Whether a departing reader may have to release it.
    #[inline]
    fn listed(self) -> bool {
        self.tag & (EPOCH_0 | PENDING | UNLISTED) == 0
    }
}

/// What a parent knows of its children's runs: the lowest number of a listed run's
/// free (`u64::MAX` for none), so that a departing reader finds the listed runs freed
/// before an epoch without looking at the others; and how many keep a pin, so that
/// those are found without the others.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RunSum {
    lowest_listed: u64,
    keeping: u64,
}

impl Default for RunSum {
    fn default() -> Self {
        RunSum {
            lowest_listed: u64::MAX,
            keeping: 0,
        }
    }
}

impl Summary<u64, Run> for RunSum {
    #[inline]
    fn of(_: &u64, run: &Run) -> Self {
        RunSum {
            lowest_listed: if run.listed() { run.seq() } else { u64::MAX },
            keeping: u64::from(run.tag & KEEPS_PIN != 0),
        }
    }

    #[inline]
    fn join(self, other: Self) -> Self {
        RunSum {
            lowest_listed: self.lowest_listed.min(other.lowest_listed),
            keeping: self.keeping + other.keeping,
        }
    }

    #[inline]
    fn replace(cur: Self, old: Self, new: Self) -> Option<Self> {
        let keeping = cur.keeping - old.keeping + new.keeping;
        if new.lowest_listed <= cur.lowest_listed {
            Some(RunSum {
                lowest_listed: new.lowest_listed,
                keeping,
            })
        } else if old.lowest_listed > cur.lowest_listed {
            Some(RunSum {
                lowest_listed: cur.lowest_listed,
                keeping,
            })
        } else {
            None
        }
    }
}

/// Every Deferred block, in runs by first block: disjoint, each from one free (a
/// run's blocks share its epoch and number). Runs that touch are kept apart, even of
/// one free; nothing needs them joined.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Runs {
    tree: BPlus<u64, Run, RunSum>,
    /// Frees are numbered in the order they happen and epochs only move forward, so
    /// the frees of one epoch (but epoch 0, marked in each run) have consecutive
    /// numbers: the number of the first free of each era → its epoch and how many
    /// runs it has. An era goes with its last run.
    eras: BTreeMap<u64, (u64, u64)>,
    /// The same eras by epoch (one era per epoch at most): epoch → first number.
    era_starts: BTreeMap<u64, u64>,
    /// Runs that keep a pin.
    keeping: u64,
    /// The regions the runs that keep a pin may meet: their blocks are not marked in
    /// the pin coverage, so a free or a pin asks here, and a descent only when this
    /// cannot tell.
    kept_filter: Cache<RegionFilter>,
}

impl Runs {
    fn new() -> Self {
        Runs {
            tree: BPlus::new(),
            eras: BTreeMap::new(),
            era_starts: BTreeMap::new(),
            keeping: 0,
            kept_filter: Cache(RegionFilter::new()),
        }
    }

    /// The runs that keep a pin, in order: O(log n) each.
    fn kept(&self) -> impl Iterator<Item = Range<u64>> + '_ {
        let t = &self.tree;
        let first = t.first_matching(0, |s| s.keeping > 0, |_, run| run.tag & KEEPS_PIN != 0);
        core::iter::successors(first, move |&p| {
            let next = t.get(p).0.checked_add(1)?;
            t.first_matching(next, |s| s.keeping > 0, |_, run| run.tag & KEEPS_PIN != 0)
        })
        .map(move |p| {
            let (s, run) = t.get(p);
            s..run.end
        })
    }

    fn kept_gone(&mut self) {
        let mut f = core::mem::take(&mut self.kept_filter.0);
        f.gone(self.keeping as usize, || self.kept());
        self.kept_filter.0 = f;
    }

    /// When some run keeps a pin: whether any block of `r` (non-empty) is Deferred.
    /// Such blocks are not marked in the pin coverage, so a free or a pin over them
    /// asks here; with no such run, it answers at once.
    #[inline]
    pub(crate) fn may_keep_pin(&self, r: &Range<u64>) -> bool {
        self.keeping > 0 && !self.kept_filter.0.clear(r) && self.overlaps(r)
    }

    /// [`may_keep_pin`](Self::may_keep_pin), for the hot paths that may update the
    /// tree's directory.
    #[inline]
    pub(crate) fn may_keep_pin_near(&mut self, r: &Range<u64>) -> bool {
        self.keeping > 0 && !self.kept_filter.0.clear(r) && self.overlaps_near(r)
    }

    /// [`overlaps`](Self::overlaps), its lookup made through the tree's directory
    /// (the runs near a free are seldom in the cache).
    fn overlaps_near(&mut self, r: &Range<u64>) -> bool {
        // Runs do not overlap, so the last to start inside or before `r` is the one
        // that reaches furthest into it: one lookup, no step to a neighbour.
        let t = &mut self.tree;
        t.floor_near(r.end - 1)
            .is_some_and(|p| t.get(p).1.end > r.start)
    }

    /// Whether a run over exactly `r` keeps a pin.
    pub(crate) fn keeps_pin(&self, r: &Range<u64>) -> bool {
        self.tree.find(r.start).is_some_and(|p| {
            let run = self.tree.get(p).1;
            run.end == r.end && run.tag & KEEPS_PIN != 0
        })
    }

    /// Whether `block` lies in a run that keeps a pin.
    pub(crate) fn keeps_pin_at(&self, block: u64) -> bool {
        self.keeping > 0
            && self.tree.floor(block).is_some_and(|p| {
                let run = self.tree.get(p).1;
                block < run.end && run.tag & KEEPS_PIN != 0
            })
    }

    /// The blocks `p`, all Deferred by one free, become a run of their own that keeps
    /// the one pin over them, if one run holds them all (a free on commit may have
    /// split them by epoch); otherwise nothing changes. Whether it did.
    pub(crate) fn keep_pin(&mut self, p: &Range<u64>) -> bool {
        let Some(at) = self.tree.floor(p.start) else {
            return false;
        };
        let (s, run) = self.tree.get(at);
        if run.end < p.end || run.tag & KEEPS_PIN != 0 {
            return false;
        }
        let freed = self.freed(run);
        if s < p.start {
            self.tree.set(
                at,
                s,
                Run {
                    end: p.start,
                    ..run
                },
            );
            self.count(freed, 1);
            self.tree.insert(
                p.start,
                Run {
                    end: p.end,
                    tag: run.tag | KEEPS_PIN,
                },
            );
        } else {
            self.tree.set(
                at,
                s,
                Run {
                    end: p.end,
                    tag: run.tag | KEEPS_PIN,
                },
            );
        }
        if p.end < run.end {
            self.count(freed, 1);
            self.tree.insert(
                p.end,
                Run {
                    end: run.end,
                    ..run
                },
            );
        }
        self.keeping += 1;
        let mut f = core::mem::take(&mut self.kept_filter.0);
        f.add(p, self.keeping as usize, || self.kept());
        self.kept_filter.0 = f;
        true
    }

    /// Run `p`, if it keeps a pin, keeps it no more. Whether it did.
    pub(crate) fn let_go(&mut self, p: &Range<u64>) -> bool {
        if self.keeping == 0 {
            return false;
        }
        let Some(at) = self.tree.find(p.start) else {
            return false;
        };
        let (s, run) = self.tree.get(at);
        if run.end != p.end || run.tag & KEEPS_PIN == 0 {
            return false;
        }
        self.tree.set(
            at,
            s,
            Run {
                tag: run.tag & !KEEPS_PIN,
                ..run
            },
        );
        self.keeping -= 1;
        self.kept_gone();
        true
    }

    /// The runs overlapping `r` that keep a pin keep it no more: returns them.
    pub(crate) fn let_go_over(&mut self, r: &Range<u64>) -> Vec<Range<u64>> {
        if self.keeping == 0 {
            return Vec::new();
        }
        let at: Vec<Pos> = self
            .places(r)
            .filter(|&p| self.tree.get(p).1.tag & KEEPS_PIN != 0)
            .collect();
        at.into_iter()
            .map(|p| {
                let (s, run) = self.tree.get(p);
                self.tree.set(
                    p,
                    s,
                    Run {
                        tag: run.tag & !KEEPS_PIN,
                        ..run
                    },
                );
                self.keeping -= 1;
                self.kept_gone();
                s..run.end
            })
            .collect()
    }

    /// The free behind `run`.
    #[inline]
    fn freed(&self, run: Run) -> Freed {
        let epoch = if run.tag & EPOCH_0 != 0 {
            0
        } else {
            self.era_of(run.seq()).1.0
        };
        Freed {
            epoch,
            seq: run.seq(),
        }
    }

    /// The era of free `seq`, with its first number.
    fn era_of(&self, seq: u64) -> (u64, (u64, u64)) {
        let (&first, &era) = self
            .eras
            .range(..=seq)
            .next_back()
            .expect("every numbered run's free has an era");
        (first, era)
    }

    /// The lowest number of a free in epoch `epoch` or later, or `u64::MAX`.
    fn first_seq_from(&self, epoch: u64) -> u64 {
        self.era_starts
            .range(epoch..)
            .next()
            .map_or(u64::MAX, |(_, &first)| first)
    }

    /// One run more (`by` 1) or fewer (-1) for free `freed`'s era, starting or
    /// ending the era.
    fn count(&mut self, freed: Freed, by: i64) {
        if freed.epoch == 0 {
            return;
        }
        let found = self
            .eras
            .range(..=freed.seq)
            .next_back()
            .filter(|&(_, &(epoch, _))| epoch == freed.epoch)
            .map(|(&first, _)| first);
        let first = found.unwrap_or_else(|| {
            debug_assert!(
                by > 0
                    && self
                        .eras
                        .last_key_value()
                        .is_none_or(|(&first, &(e, _))| e < freed.epoch && first < freed.seq),
                "frees out of order: {freed:?} after {:?}",
                self.eras
            );
            self.eras.insert(freed.seq, (freed.epoch, 0));
            self.era_starts.insert(freed.epoch, freed.seq);
            freed.seq
        });
        let era = self.eras.get_mut(&first).expect("found or made above");
        era.1 = era.1.checked_add_signed(by).expect("run counts stay whole");
        if era.1 == 0 {
            let (epoch, _) = self.eras.remove(&first).expect("found above");
            self.era_starts.remove(&epoch);
        }
    }

    #[inline]
    fn entry(&self, p: Pos) -> (Range<u64>, Freed) {
        let (s, run) = self.tree.get(p);
        (s..run.end, self.freed(run))
    }

    /// The places of the runs overlapping `r` (non-empty), in order.
    fn places(&self, r: &Range<u64>) -> impl Iterator<Item = Pos> + '_ {
        let t = &self.tree;
        let first = match t.floor(r.start) {
            Some(p) if t.get(p).1.end > r.start => Some(p),
            Some(p) => t.next(p),
            None => t.first(),
        };
        let end = r.end;
        core::iter::successors(first, move |&p| t.next(p)).take_while(move |&p| t.get(p).0 < end)
    }

    /// The runs overlapping `r` (non-empty), unclipped and in order.
    pub(crate) fn overlapping(
        &self,
        r: &Range<u64>,
    ) -> impl Iterator<Item = (Range<u64>, Freed)> + '_ {
        self.places(r).map(move |p| self.entry(p))
    }

    /// Whether a block of `r` (non-empty) is Deferred.
    #[inline]
    pub(crate) fn overlaps(&self, r: &Range<u64>) -> bool {
        self.tree.len() > 0 && self.places(r).next().is_some()
    }

    /// The run holding `block`, if it is Deferred.
    pub(crate) fn containing(&self, block: u64) -> Option<(Range<u64>, Freed)> {
        let p = self.tree.floor(block)?;
        (block < self.tree.get(p).1.end).then(|| self.entry(p))
    }

    /// Every run, in order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (Range<u64>, Freed)> + '_ {
        self.tree
            .iter()
            .map(|(s, run)| (s..run.end, self.freed(run)))
    }

    /// Heap bytes held by the runs and their filter (not the eras, one per epoch with
    /// Deferred blocks).
    pub(crate) fn capacity_bytes(&self) -> usize {
        self.tree.capacity_bytes() + self.kept_filter.0.capacity_bytes()
    }

    /// The tree is sound, the runs are disjoint and non-empty, and the eras count
    /// them. Returns each run's range, free and tag flags.
    fn check(&self) -> Result<Vec<(Range<u64>, Freed, u64)>, alloc::string::String> {
        let keeping = self
            .tree
            .iter()
            .filter(|(_, run)| run.tag & KEEPS_PIN != 0)
            .count() as u64;
        if keeping != self.keeping || self.kept().count() as u64 != keeping {
            return Err(alloc::format!(
                "{keeping} runs keep a pin, cached {}",
                self.keeping
            ));
        }
        self.kept_filter.0.check(self.kept())?;
        use alloc::format;
        self.tree.check()?;
        let mut out: Vec<(Range<u64>, Freed, u64)> = Vec::new();
        let mut eras: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
        for (start, run) in self.tree.iter() {
            let r = start..run.end;
            if r.start >= r.end || out.last().is_some_and(|(l, ..)| l.end > r.start) {
                return Err(format!(
                    "deferred run {r:?} is empty or overlaps the one before"
                ));
            }
            if run.tag & EPOCH_0 == 0 {
                let (first, (epoch, _)) = self
                    .eras
                    .range(..=run.seq())
                    .next_back()
                    .map(|(&f, &e)| (f, e))
                    .ok_or_else(|| format!("deferred run {r:?} has no era"))?;
                eras.entry(first).or_insert((epoch, 0)).1 += 1;
            }
            out.push((r, self.freed(run), run.tag & !(u64::MAX << SEQ_SHIFT)));
        }
        if eras != self.eras {
            return Err(format!(
                "the eras {:?} do not count the runs: {eras:?}",
                self.eras
            ));
        }
        if self
            .eras
            .values()
            .zip(self.eras.values().skip(1))
            .any(|(a, b)| a.0 >= b.0)
            || self.eras.values().any(|e| e.0 == 0)
        {
            return Err(format!("the eras' epochs {:?} do not rise", self.eras));
        }
        if !self
            .era_starts
            .iter()
            .map(|(&e, &f)| (f, e))
            .eq(self.eras.iter().map(|(&f, &(e, _))| (f, e)))
        {
            return Err(format!(
                "the eras by epoch {:?} are not the eras {:?}",
                self.era_starts, self.eras
            ));
        }
        Ok(out)
    }

    fn insert(&mut self, r: Range<u64>, freed: Freed, pending: bool) {
        self.count(freed, 1);
        let tag = freed.seq << SEQ_SHIFT
            | if freed.epoch == 0 { EPOCH_0 } else { 0 }
            | if pending { PENDING } else { 0 };
        self.tree.insert(r.start, Run { end: r.end, tag });
    }

    /// Clears the pending flag of every run overlapping `r` (all of them pending).
    fn commit(&mut self, r: &Range<u64>) {
        let at: Vec<Pos> = self.places(r).collect();
        for p in at {
            let (s, run) = self.tree.get(p);
            debug_assert!(run.tag & PENDING != 0, "a run in the range is pending");
            debug_assert!(r.start <= s, "a pending run starts inside the range");
            debug_assert!(run.end <= r.end, "a pending run ends inside the range");
            self.tree.set(
                p,
                s,
                Run {
                    tag: run.tag & !PENDING,
                    ..run
                },
            );
        }
    }

    /// The listed runs freed before epoch `before`, in address order, with their
    /// epochs. Those freed before `unlist` too are unlisted on the way: no reader will
    /// look for them again. O(log n) per run found.
    fn listed_before(&mut self, before: u64, unlist: u64) -> Vec<(Range<u64>, u64)> {
        let bound = self.first_seq_from(before);
        let mut out = Vec::new();
        let mut from = 0;
        while let Some(p) = self.tree.first_matching(
            from,
            |sum| sum.lowest_listed < bound,
            |_, run| run.listed() && run.seq() < bound,
        ) {
            let (s, run) = self.tree.get(p);
            let epoch = self.freed(run).epoch;
            if epoch < unlist {
                self.tree.set(
                    p,
                    s,
                    Run {
                        tag: run.tag | UNLISTED,
                        ..run
                    },
                );
            }
            out.push((s..run.end, epoch));
            match s.checked_add(1) {
                Some(next) => from = next,
                None => break,
            }
        }
        out
    }

    /// Takes `r` (all Deferred) out of the runs, cutting those it ends inside.
    fn cut(&mut self, r: &Range<u64>) {
        let hit: Vec<(Range<u64>, Freed)> = self.overlapping(r).collect();
        for (k, freed) in hit {
            let p = self
                .tree
                .find(k.start)
                .expect("a run is under its first block");
            let run = self.tree.get(p).1;
            let right = (r.end < k.end).then_some(Run { end: k.end, ..run });
            if k.start < r.start {
                self.tree.set(
                    p,
                    k.start,
                    Run {
                        end: r.start,
                        ..run
                    },
                );
                if right.is_some() {
                    self.count(freed, 1);
                }
            } else {
                self.tree.remove(p);
                if right.is_none() {
                    self.count(freed, -1);
                }
            }
            if let Some(right) = right {
                self.tree.insert(r.end, right);
            }
        }
    }
}

/// A run as [`Deferrals::check_runs`] sees it: range, free, pending, listed, keeps a
/// pin.
pub(crate) type CheckedRun = (Range<u64>, Freed, bool, bool, bool);

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Deferrals {
    /// Every Deferred block, with the epoch and number of its free.
    pub(crate) epoch_of: Runs,
    /// Deferred blocks by the epoch of their free, but the pending ones, which join
    /// when their epoch commits: what readers hold is counted from them.
    pub(crate) blocks_by_epoch: BTreeMap<u64, u64>,
    /// Deferred blocks.
    pub(crate) count_blocks: u64,
    /// Deferred blocks waiting for the open epoch to commit.
    pub(crate) pending: RangeSet<u64>,
    /// Blocks in `pending`.
    pub(crate) count_pending: u64,
    /// Deferred blocks of sealed epochs: closed by `prepare_commit`, whose free list
    /// is not yet said to be durable. They wait as pending blocks do.
    pub(crate) sealed: RangeSet<u64>,
    /// Blocks in `sealed`.
    pub(crate) count_sealed: u64,
    /// The sealed epochs, oldest first, each with its blocks.
    pub(crate) sealed_epochs: BTreeMap<u64, Vec<Range<u64>>>,
    /// The number the next deferring free gets ([`Freed::seq`]); starts at 0.
    pub(crate) next_seq: u64,
    /// The oldest live reader's epoch, as last told by
    /// [`set_oldest_reader`](Self::set_oldest_reader).
    pub(crate) oldest_reader: Option<u64>,
    /// Blocks in `blocks_by_epoch` freed at or after `oldest_reader`: what readers
    /// hold.
    pub(crate) reader_held: u64,
}

impl Default for Deferrals {
    fn default() -> Self {
        Deferrals {
            epoch_of: Runs::new(),
            blocks_by_epoch: BTreeMap::new(),
            count_blocks: 0,
            pending: RangeSet::new(),
            count_pending: 0,
            sealed: RangeSet::new(),
            count_sealed: 0,
            sealed_epochs: BTreeMap::new(),
            next_seq: 0,
            oldest_reader: None,
            reader_held: 0,
        }
    }
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
        self.epoch_of.insert(r.clone(), freed, pending);
        self.count_blocks += len;
        if pending {
            self.count_pending += len;
            self.pending.insert(r);
        } else {
            self.count_by_epoch(epoch, len);
        }
    }

    fn count_by_epoch(&mut self, epoch: u64, len: u64) {
        *self.blocks_by_epoch.entry(epoch).or_default() += len;
        if reader_holds(self.oldest_reader, epoch) {
            self.reader_held += len;
        }
    }

    /// Blocks in `blocks_by_epoch` freed in epochs `range`.
    fn count_freed_in(&self, range: impl core::ops::RangeBounds<u64>) -> u64 {
        self.blocks_by_epoch.range(range).map(|(_, n)| n).sum()
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
        debug_assert!(
            !self.pending.overlaps(&r) && !self.sealed.overlaps(&r),
            "releasing blocks that wait for a commit"
        );
        let pieces: Vec<(Range<u64>, u64)> = self
            .epoch_of
            .overlapping(&r)
            .map(|(k, f)| (clip(&k, &r), f.epoch))
            .collect();
        for (p, epoch) in pieces {
            let len = p.end - p.start;
            let n = self
                .blocks_by_epoch
                .get_mut(&epoch)
                .expect("deferred epochs are counted");
            *n -= len;
            if *n == 0 {
                self.blocks_by_epoch.remove(&epoch);
            }
            if reader_holds(self.oldest_reader, epoch) {
                self.reader_held -= len;
            }
            self.count_blocks -= len;
        }
        self.epoch_of.cut(&r);
    }

    /// Ends a deferring free: the next one gets a new number.
    /// Numbers stop at 2^60 - 1, which a run's tag holds (a free a nanosecond would
    /// take 36 years to get there); frees past it share the last number.
    pub(crate) fn next_free(&mut self) {
        self.next_seq = (self.next_seq + 1).min(MAX_SEQ);
    }

    /// Blocks of `within` still Deferred by a free numbered below `mark` (asked by the
    /// shared layer only).
    #[cfg(feature = "std")]
    pub(crate) fn count_deferred_before(&self, within: &Range<u64>, mark: u64) -> u64 {
        self.epoch_of
            .overlapping(within)
            .filter(|&(_, f)| f.seq < mark)
            .map(|(k, _)| {
                let c = clip(&k, within);
                c.end - c.start
            })
            .sum()
    }

    /// The Deferred blocks of `within`, as maximal ranges in order.
    pub(crate) fn blocks_in(&self, within: &Range<u64>) -> Vec<Range<u64>> {
        let mut out: Vec<Range<u64>> = Vec::new();
        for (k, _) in self.epoch_of.overlapping(within) {
            let c = clip(&k, within);
            match out.last_mut() {
                Some(last) if last.end == c.start => last.end = c.end,
                _ => out.push(c),
            }
        }
        out
    }

    /// Pieces of `within` that are Deferred, with their epochs, but runs that keep a
    /// pin (nothing can release them).
    pub(crate) fn pieces(&self, within: &Range<u64>) -> Vec<(Range<u64>, u64)> {
        let runs = &self.epoch_of;
        runs.places(within)
            .filter(|&p| runs.tree.get(p).1.tag & KEEPS_PIN == 0)
            .map(|p| {
                let (k, f) = runs.entry(p);
                (clip(&k, within), f.epoch)
            })
            .collect()
    }

    /// Epoch `open` closes with its free list not yet durable: its pending blocks go
    /// on waiting, sealed, until [`finish`](Self::finish).
    pub(crate) fn seal(&mut self, open: u64) {
        if self.count_pending == 0 {
            return;
        }
        let all: Vec<Range<u64>> = self.pending.iter().cloned().collect();
        for r in &all {
            self.sealed.insert(r.clone());
        }
        self.count_sealed += self.count_pending;
        self.pending = RangeSet::new();
        self.count_pending = 0;
        self.sealed_epochs.insert(open, all);
    }

    /// The free lists of every sealed epoch up to `through` are durable: their blocks
    /// stop waiting. Returns them.
    pub(crate) fn finish(&mut self, through: u64) -> Vec<Range<u64>> {
        let later = match through.checked_add(1) {
            Some(next) => self.sealed_epochs.split_off(&next),
            None => BTreeMap::new(),
        };
        let done = core::mem::replace(&mut self.sealed_epochs, later);
        let mut out = Vec::new();
        for (epoch, ranges) in done {
            for r in ranges {
                let len = r.end - r.start;
                self.sealed.remove(r.clone());
                self.count_sealed -= len;
                self.epoch_of.commit(&r);
                self.count_by_epoch(epoch, len);
                out.push(r);
            }
        }
        out
    }

    /// An abort: every pending block leaves Deferred (the caller makes it Allocated
    /// again, having let go of the pins its runs keep). Returns them.
    pub(crate) fn unpend(&mut self) -> Vec<Range<u64>> {
        let all: Vec<Range<u64>> = self.pending.iter().cloned().collect();
        self.pending = RangeSet::new();
        self.count_blocks -= self.count_pending;
        self.count_pending = 0;
        for r in &all {
            self.epoch_of.cut(r);
        }
        all
    }

    /// The pieces of `r` that wait for no commit (open or sealed), in order.
    pub(crate) fn not_waiting(&self, r: &Range<u64>) -> Vec<Range<u64>> {
        let open = set_gaps(&self.pending, r);
        if self.count_sealed == 0 {
            return open;
        }
        open.iter()
            .flat_map(|p| set_gaps(&self.sealed, p))
            .collect()
    }

    /// Deferred blocks held by an epoch: pending, or freed at or after the oldest
    /// reader's epoch. O(1).
    pub(crate) fn epoch_held_blocks(&self) -> u64 {
        // Pending and sealed blocks wait for a commit whatever the readers.
        self.reader_held + self.count_pending + self.count_sealed
    }

    /// Ranges freed in epochs `from..to` (what readers leaving may release), once the
    /// oldest reader is at `to` (`u64::MAX`: none) and `open` is the open epoch. Runs
    /// met on the way that no reader can hold any more (freed before `to` and before
    /// the open epoch) are left out of later walks. A run of the open epoch that a
    /// pin holds is met by every departing reader until its epoch commits, as with
    /// per-epoch sets.
    pub(crate) fn freed_in(&mut self, from: u64, to: u64, open: u64) -> Vec<Range<u64>> {
        self.epoch_of
            .listed_before(to, to.min(open))
            .into_iter()
            .filter(|&(_, epoch)| epoch >= from)
            .map(|(r, _)| r)
            .collect()
    }

    /// The Deferred runs, each with its free and whether it is pending, listed for
    /// departing readers and keeps a pin, after checking the runs' own structure.
    pub(crate) fn check_runs(&self) -> Result<Vec<CheckedRun>, alloc::string::String> {
        Ok(self
            .epoch_of
            .check()?
            .into_iter()
            .map(|(r, f, flags)| {
                let listed = flags & (EPOCH_0 | PENDING | UNLISTED) == 0;
                (r, f, flags & PENDING != 0, listed, flags & KEEPS_PIN != 0)
            })
            .collect())
    }
}

#[cfg(test)]
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use super::*;

    fn runs(d: &Deferrals) -> Vec<(Range<u64>, u64, u64)> {
        d.epoch_of
            .iter()
            .map(|(r, f)| (r, f.epoch, f.seq))
            .collect()
    }

    /// Cutting the start of the only run of an older era, while a newer era exists,
    /// keeps its era: the right piece is the same free's (a shared-allocator stress
    /// test found the era dropped and remade out of order).
    #[test]
    fn a_cut_keeps_the_era_of_the_piece_left() {
        let mut d = Deferrals::default();
        d.add(0..10, 5, false);
        d.next_free();
        d.add(20..30, 6, false);
        d.next_free();
        d.remove(0..4);
        assert_eq!(runs(&d), [(4..10, 5, 0), (20..30, 6, 1)]);
        d.remove(4..10);
        assert_eq!(runs(&d), [(20..30, 6, 1)]);
        assert_eq!(
            d.epoch_of.eras.len(),
            1,
            "the era of epoch 5 went with its run"
        );
        d.check_runs().unwrap();
        assert_eq!(d.blocks_by_epoch.get(&6), Some(&10));
        assert_eq!(d.count_blocks, 10);
    }

    /// A run a departing reader finds but cannot release (a pin holds it) is left out
    /// of later walks once no reader can hold it; the open epoch's are not.
    #[test]
    fn departing_readers_meet_each_old_run_once() {
        let mut d = Deferrals::default();
        d.add(0..4, 2, false);
        d.next_free();
        d.add(10..14, 3, false);
        d.next_free();
        // A reader from epoch 2 ends with none left; epoch 3 is open.
        assert_eq!(d.freed_in(2, u64::MAX, 3), [0..4, 10..14]);
        let listed: Vec<bool> = d.check_runs().unwrap().iter().map(|r| r.3).collect();
        assert_eq!(
            listed,
            [false, true],
            "epoch 2's run is left out, epoch 3's is not"
        );
        // The next departing reader, from epoch 3, finds only epoch 3's run.
        assert_eq!(d.freed_in(3, u64::MAX, 3), [10..14]);
        // A reader still alive from epoch 3 keeps epoch 3's runs out of reach.
        assert_eq!(d.freed_in(2, 3, 4), Vec::<Range<u64>>::new());
        // Pending runs join the walks when their epoch commits.
        d.add(20..24, 4, true);
        assert_eq!(d.freed_in(3, u64::MAX, 4), [10..14]);
        d.seal(4);
        assert_eq!(d.freed_in(3, u64::MAX, 5), [], "sealed runs wait on");
        assert_eq!(d.finish(4), [20..24]);
        assert_eq!(d.freed_in(4, u64::MAX, 5), [20..24]);
        assert_eq!(d.blocks_by_epoch.get(&4), Some(&4));
    }
}
