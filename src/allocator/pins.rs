//! The pin registry: reference-counted pinned ranges.
//!
//! Each pin costs one record in a slab, whatever its length, and two point updates of
//! the per-block pin count ([`Coverage`]); how many pins cover a block, and which
//! blocks an unpin left unpinned, are descents of that tree, so a pin costs O(log n)
//! however many pins overlap or nest under it.

use alloc::vec::Vec;
use core::fmt;
use core::ops::Range;

use super::ranges::{clip, to_range};
use crate::Extent;
use crate::tree::bplus::{BPlus, Pos, grow};
use crate::tree::coverage::Coverage;
use crate::tree::intervals::Intervals;

/// Names one live pin; returned by [`ExtentAllocator::pin`](crate::ExtentAllocator::pin).
///
/// It is `Copy`, so it can be stored anywhere (a device queue, an I/O descriptor).
/// Ids are never reused, and a pin of one allocator is refused by any other.
///
/// ```
/// use pinalloc::{Extent, ExtentAllocator};
/// let mut alloc = ExtentAllocator::new(8);
/// let id = alloc.pin(Extent::new(1, 2))?;
/// println!("{id}"); // "pin #1"
/// # Ok::<(), pinalloc::PinError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct PinId {
    pub(crate) allocator: u64,
    pub(crate) seq: u64,
    /// Where the pin's record lives; `seq` tells a live pin from an earlier one there.
    pub(crate) slot: u32,
}

impl fmt::Display for PinId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pin #{}", self.seq)
    }
}

/// How a pin treats a `free` of the blocks it covers.
///
/// ```
/// use pinalloc::PinMode;
/// assert_eq!(PinMode::default(), PinMode::Deferring);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub enum PinMode {
    /// The free goes ahead; the pinned blocks become Deferred until unpinned.
    #[default]
    Deferring,
    /// The free fails with [`FreeError::Busy`](crate::FreeError::Busy) and changes
    /// nothing: the EBUSY choice for truncate.
    Blocking,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PinRecord {
    pub(crate) extent: Extent,
    pub(crate) mode: PinMode,
}

/// "No slot" in the vacant-slot chain.
const NIL: u32 = u32::MAX;

/// Where a fresh pin's entry goes in the fresh map: after the entry at this place, or
/// first ([`PinTable::can_be_fresh`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct FreshPlace(Option<Pos>);

/// What [`PinTable::remove`] took away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Removed {
    /// A pin in the coverage.
    Counted,
    /// A fresh pin: its blocks are Allocated and no other pin covers them, so
    /// nothing about them changes.
    Fresh,
    /// A pin kept in its Deferred run ([`PinTable::give_to_run`]).
    InRun,
}

/// One slot of the pin slab: a live pin, or a link in the chain of vacant slots.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Slot {
    /// A live pin's first block; a vacant slot's next vacant slot.
    start: u64,
    len: u64,
    /// A live pin's `seq << 2 | in_run << 1 | blocking`; 0 when vacant.
    tag: u64,
}

/// [`Slot::tag`]'s bit for a blocking pin.
const BLOCKING: u64 = 1;
/// [`Slot::tag`]'s bit for a pin that went into its Deferred run
/// ([`PinTable::give_to_run`]); it may have left it since, for the coverage.
const IN_RUN: u64 = 2;

impl Slot {
    #[inline]
    fn seq(&self) -> u64 {
        self.tag >> 2
    }

    #[inline]
    fn record(&self) -> PinRecord {
        PinRecord {
            extent: Extent::new(self.start, self.len),
            mode: if self.tag & BLOCKING != 0 {
                PinMode::Blocking
            } else {
                PinMode::Deferring
            },
        }
    }
}

/// Live pins: a slab of records (24 bytes each), and the per-block pin count as a
/// [`Coverage`], so that "is anything here pinned", "how many pins cover this block"
/// and "which blocks did this unpin leave unpinned" are one descent each, whatever
/// overlaps.
///
/// The same coverage also marks every Deferred block but those of runs that keep a
/// pin (below), so that a free learns "nothing here is pinned or Deferred" from one
/// descent, its common case.
///
/// A pin over Allocated blocks that nothing else covers (the pin an I/O takes) is
/// *fresh*: it is kept only by its start in a plain ordered map, which is cheaper to
/// add to and take from than the coverage. Fresh pins are disjoint from each other and
/// from everything in the coverage, and cover Allocated blocks only.
///
/// A free of all of a fresh pin's blocks (the I/O buffer freed while the device still
/// uses it) makes them one Deferred run of their own, and the pin goes into that run
/// ([`give_to_run`](Self::give_to_run)): the run's flag stands for the pin, the coverage does
/// not hear of it, and the pin costs its slot and nothing more while the blocks wait.
/// Any other pin over them moves it into the coverage ([`take_from_run`](Self::take_from_run)).
/// A fresh pin reaching out of a free enters the coverage
/// ([`prepare_free`](Self::prepare_free)), as does one over another pin
/// ([`settle`](Self::settle)); each pin enters at most once.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct PinTable {
    slots: Vec<Slot>,
    /// The first vacant slot, or [`NIL`].
    vacant: u32,
    live: usize,
    /// Sequence number of the next pin; starts at 1.
    next_seq: u64,
    /// The pin count of every block, and a mark on every Deferred block.
    cover: Coverage,
    /// The blocking pins' ranges, under their slots.
    blocking: Intervals,
    /// Fresh pins: start -> slot (12 bytes an entry; the end is in the slab).
    fresh: BPlus<u64, u32, ()>,
    /// Blocks under fresh pins.
    fresh_blocks: u64,
    /// Blocks under pins kept in their Deferred runs.
    run_blocks: u64,
}

impl PinTable {
    pub(crate) fn new() -> Self {
        PinTable {
            slots: Vec::new(),
            vacant: NIL,
            live: 0,
            next_seq: 1,
            cover: Coverage::new(),
            blocking: Intervals::new(),
            fresh: BPlus::new(),
            fresh_blocks: 0,
            run_blocks: 0,
        }
    }

    /// Live pins.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.live
    }

    /// Blocks with a pin count above zero.
    #[inline]
    pub(crate) fn blocks(&self) -> u64 {
        self.cover.pinned_blocks() + self.fresh_blocks + self.run_blocks
    }

    /// Bytes held by the slab, the coverage, the fresh pins' map and the blocking pins'
    /// index.
    pub(crate) fn metadata_bytes(&self) -> usize {
        self.slots.capacity() * core::mem::size_of::<Slot>()
            + self.cover.capacity_bytes()
            + self.fresh.capacity_bytes()
            + self.blocking.capacity_bytes()
    }

    /// Records a pin over a valid extent and returns its sequence number and slot.
    /// `fresh`: its blocks are all Allocated and nothing covers them, with the place
    /// [`can_be_fresh`](Self::can_be_fresh) gave (nothing has changed since).
    ///
    /// # Panics
    ///
    /// Past 2^32 - 1 live pins.
    #[inline(always)]
    pub(crate) fn add(
        &mut self,
        extent: Extent,
        mode: PinMode,
        seq: Option<u64>,
        fresh: Option<FreshPlace>,
    ) -> (u64, u32) {
        // Numbered first, so that past 2^32 - 1 live pins the panic changes nothing.
        let at = if self.vacant == NIL {
            u32::try_from(self.slots.len())
                .ok()
                .filter(|&i| i != NIL)
                .expect("pinalloc numbers at most 2^32 - 1 live pins")
        } else {
            self.vacant
        };
        let r = to_range(extent);
        // A number given by the layer above (one sequence over several cores) keeps
        // this core's own numbering ahead of it, so numbers stay unique here.
        let seq = seq.unwrap_or(self.next_seq);
        // A slot's tag holds numbers below 2^62: 2^62 pins, one a nanosecond, take
        // 146 years. Checked before anything changes.
        assert!(seq > 0 && seq < 1 << 62, "pin number {seq} out of range");
        self.next_seq = self.next_seq.max(seq + 1);
        let blocking = mode == PinMode::Blocking;
        let slot = Slot {
            start: extent.start,
            len: extent.len,
            tag: seq << 2 | u64::from(blocking),
        };
        if at == self.vacant {
            self.vacant = self.slots[at as usize].start as u32;
            self.slots[at as usize] = slot;
        } else {
            grow(&mut self.slots);
            self.slots.push(slot);
        }
        if let Some(FreshPlace(below)) = fresh {
            self.fresh.insert_after(below, r.start, at);
            self.fresh_blocks += extent.len;
        } else {
            self.settle(&r);
            self.cover.pin(&r, 1);
        }
        if blocking {
            self.blocking.insert(&r, at);
        }
        self.live += 1;
        (seq, at)
    }

    /// The record of live pin `seq` in `slot`.
    #[inline]
    pub(crate) fn get(&self, seq: u64, slot: u32) -> Option<PinRecord> {
        self.slots
            .get(slot as usize)
            .filter(|s| s.tag != 0 && s.seq() == seq)
            .map(Slot::record)
    }

    /// Whether live pin `seq` in `slot` went into its Deferred run (it may have left
    /// it since).
    #[inline]
    pub(crate) fn went_to_run(&self, seq: u64, slot: u32) -> bool {
        self.get(seq, slot).is_some() && self.slots[slot as usize].tag & IN_RUN != 0
    }

    /// Drops live pin `seq` in `slot`; returns its record and what it was. `in_run`:
    /// it is still kept in its Deferred run (which the caller has just let go of).
    #[inline(always)]
    pub(crate) fn remove(
        &mut self,
        seq: u64,
        slot: u32,
        in_run: bool,
    ) -> Option<(PinRecord, Removed)> {
        let record = self.get(seq, slot)?;
        let r = to_range(record.extent);
        let removed = if in_run {
            self.run_blocks -= record.extent.len;
            Removed::InRun
        } else {
            let fresh = self
                .fresh
                .ceil_near(r.start)
                .filter(|&pos| self.fresh.get(pos) == (r.start, slot));
            match fresh {
                Some(pos) => {
                    self.fresh.remove(pos);
                    self.fresh_blocks -= record.extent.len;
                    Removed::Fresh
                }
                None => {
                    self.cover.pin(&r, -1);
                    Removed::Counted
                }
            }
        };
        if record.mode == PinMode::Blocking {
            self.blocking.remove(r.start, slot);
        }
        self.slots[slot as usize] = Slot {
            start: u64::from(self.vacant),
            len: 0,
            tag: 0,
        };
        self.vacant = slot;
        self.live -= 1;
        Some((record, removed))
    }

    /// Whether a pin of `r` could be fresh, given that no block of it is in the free
    /// index: nothing in the coverage (no pin, no Deferred block, so no pinned Free
    /// block either) and no fresh pin touches it, so every block is Allocated.
    ///
    /// When it could, returns where its entry goes in the fresh map: after the entry
    /// at the place given, or first.
    #[inline]
    pub(crate) fn can_be_fresh(&self, r: &Range<u64>) -> Option<FreshPlace> {
        if self.cover.any(r) {
            return None;
        }
        match self.fresh.floor(r.end - 1) {
            None => Some(FreshPlace(None)),
            Some(pos) => (self.fresh_at(pos).end <= r.start).then_some(FreshPlace(Some(pos))),
        }
    }

    /// The fresh pin overlapping `r` with the greatest start: its place in the fresh
    /// map and its range.
    #[inline]
    fn first_fresh(&self, r: &Range<u64>) -> Option<(Pos, Range<u64>)> {
        let pos = self.fresh.floor(r.end - 1)?;
        let pinned = self.fresh_at(pos);
        (pinned.end > r.start).then_some((pos, pinned))
    }

    /// The range of the fresh pin at `pos` of the fresh map.
    #[inline]
    fn fresh_at(&self, pos: Pos) -> Range<u64> {
        let (start, slot) = self.fresh.get(pos);
        let s = &self.slots[slot as usize];
        start..s.start + s.len
    }

    /// Moves every fresh pin overlapping `r` into the coverage, before another pin
    /// over its blocks.
    pub(crate) fn settle(&mut self, r: &Range<u64>) {
        while let Some((pos, pinned)) = self.first_fresh(r) {
            self.fresh.remove(pos);
            self.fresh_blocks -= pinned.end - pinned.start;
            self.cover.pin(&pinned, 1);
        }
    }

    /// Before a free of `r` that a pin covers: moves the fresh pins that reach out of
    /// `r` into the coverage, and returns the fresh pins inside it, as `(range,
    /// slot)` in order. Their blocks are about to become Deferred; each then goes into
    /// its Deferred run ([`give_to_run`](Self::give_to_run)) or into the coverage
    /// ([`settle`](Self::settle)).
    pub(crate) fn prepare_free(&mut self, r: &Range<u64>) -> Vec<(Range<u64>, u32)> {
        let mut inside = Vec::new();
        let mut at = self.fresh.floor(r.end - 1);
        while let Some(pos) = at {
            let pinned = self.fresh_at(pos);
            if pinned.end <= r.start {
                break;
            }
            at = self.fresh.prev(pos);
            if r.start <= pinned.start && pinned.end <= r.end {
                inside.push((pinned, self.fresh.get(pos).1));
            } else {
                self.fresh.remove(pos);
                self.fresh_blocks -= pinned.end - pinned.start;
                self.cover.pin(&pinned, 1);
                // The removal may move the entries before `pos`: find them afresh.
                at = self.fresh.floor(pinned.start);
            }
        }
        inside.reverse();
        inside
    }

    /// Fresh pin `slot` over `r`, all of whose blocks have become Deferred in one
    /// run, leaves the fresh map: the run stands for it, and it costs nothing more
    /// than its slot. No other pin covers the run while it is there.
    pub(crate) fn give_to_run(&mut self, r: &Range<u64>, slot: u32) {
        self.unfresh(r, slot);
        self.run_blocks += r.end - r.start;
        self.slots[slot as usize].tag |= IN_RUN;
    }

    /// Fresh pin `slot` over `r` leaves the fresh map.
    fn unfresh(&mut self, r: &Range<u64>, slot: u32) {
        let pos = self
            .fresh
            .find(r.start)
            .expect("a fresh pin is in the fresh map");
        debug_assert_eq!(self.fresh.get(pos).1, slot);
        self.fresh.remove(pos);
        self.fresh_blocks -= r.end - r.start;
    }

    /// A pin kept in Deferred run `r` moves into the coverage (another pin reaches
    /// its blocks), which also marks them Deferred.
    pub(crate) fn take_from_run(&mut self, r: &Range<u64>) {
        self.run_blocks -= r.end - r.start;
        self.cover.pin(r, 1);
        self.cover.mark(r, 1);
    }

    /// Fresh pin `slot` over `r` moves into the coverage, and the Deferred blocks
    /// under it, `deferred`, are marked.
    pub(crate) fn settle_one(&mut self, r: &Range<u64>, slot: u32, deferred: &[Range<u64>]) {
        self.unfresh(r, slot);
        self.cover.pin(r, 1);
        for d in deferred {
            self.cover.mark(d, 1);
        }
    }

    /// The fresh pins overlapping `within`, unclipped and in order.
    fn fresh_over(&self, within: &Range<u64>) -> Vec<Range<u64>> {
        let mut fresh: Vec<Range<u64>> = Vec::new();
        let mut at = self.fresh.floor(within.end - 1);
        while let Some(pos) = at {
            let pinned = self.fresh_at(pos);
            if pinned.end <= within.start {
                break;
            }
            fresh.push(pinned);
            at = self.fresh.prev(pos);
        }
        fresh.reverse();
        fresh
    }

    /// The fresh pins' ranges, in order.
    pub(crate) fn fresh_pins(&self) -> impl Iterator<Item = Range<u64>> + '_ {
        self.fresh.iter().map(|(start, slot)| {
            let s = &self.slots[slot as usize];
            start..s.start + s.len
        })
    }

    /// Live pins as `(seq, slot, record)`, in slot order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u64, u32, PinRecord)> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.tag != 0)
            .map(|(i, s)| (s.seq(), i as u32, s.record()))
    }

    /// Whether any pin covers a block of `r`.
    #[inline]
    pub(crate) fn overlaps(&self, r: &Range<u64>) -> bool {
        self.first_fresh(r).is_some() || self.cover.any_pinned(r)
    }

    /// Looks up the blocks `r` (non-empty) ahead, for the next
    /// [`holds_any`](Self::holds_any) and [`can_be_fresh`](Self::can_be_fresh) of `r` to
    /// use until the next change.
    #[inline]
    pub(crate) fn probe(&mut self, r: &Range<u64>) {
        if !self.cover.is_empty() {
            self.cover.probe(r);
        }
    }

    /// Whether any block of `r` is pinned or Deferred.
    #[inline(always)]
    pub(crate) fn holds_any(&self, r: &Range<u64>) -> bool {
        if self.cover.is_empty() && self.fresh.len() == 0 {
            return false;
        }
        self.cover.any(r) || self.first_fresh(r).is_some()
    }

    /// Marks the blocks of `r`, which have just become Deferred, except those under a
    /// fresh pin: in a free, those are the fresh pins inside it, which go into their
    /// runs, or are marked as they settle ([`prepare_free`](Self::prepare_free)).
    pub(crate) fn mark_deferred(&mut self, r: &Range<u64>) {
        if self.first_fresh(r).is_none() {
            self.cover.mark(r, 1);
            return;
        }
        let mut from = r.start;
        for f in self.fresh_over(r) {
            if f.start > from {
                self.cover.mark(&(from..f.start), 1);
            }
            from = from.max(f.end);
        }
        if from < r.end {
            self.cover.mark(&(from..r.end), 1);
        }
    }

    /// Unmarks the blocks of `r`, all Deferred until now and under no pin.
    pub(crate) fn unmark_deferred(&mut self, r: &Range<u64>) {
        debug_assert!(self.first_fresh(r).is_none(), "unmarking under a fresh pin");
        self.cover.mark(r, -1);
    }

    /// The ranges marked Deferred, maximal and in order.
    pub(crate) fn deferred_marks(&self) -> Vec<Range<u64>> {
        self.cover.marked()
    }

    /// The pin count over `r` (non-empty) as a step function: the count at
    /// `r.start`, then each change inside `r` (block, difference), in order; fresh
    /// pins counted, pins kept by Deferred runs not (the runs know them). O(log n +
    /// the changes).
    pub(crate) fn count_steps(&self, r: &Range<u64>) -> (u64, Vec<(u64, i64)>) {
        let (mut at, mut steps) = self.cover.pin_steps_in(r);
        if self.first_fresh(r).is_some() {
            for f in self.fresh_over(r) {
                if f.start <= r.start {
                    at += 1;
                } else {
                    steps.push((f.start, 1));
                }
                if f.end < r.end {
                    steps.push((f.end, -1));
                }
            }
            steps.sort_by_key(|&(k, _)| k);
        }
        (at, steps)
    }

    /// How many pins cover `block`.
    pub(crate) fn count_at(&self, block: u64) -> u64 {
        let fresh = block
            .checked_add(1)
            .is_some_and(|end| self.first_fresh(&(block..end)).is_some());
        self.cover.pins_at(block) + u64::from(fresh)
    }

    /// The pieces of `within` that no pin covers, maximal and in order: the
    /// coverage's, less the fresh pins inside `within` (one merge of two ordered lists).
    pub(crate) fn zero_pieces(&self, within: &Range<u64>) -> Vec<Range<u64>> {
        let pieces = self.cover.unpinned(within);
        if pieces.is_empty() || self.first_fresh(within).is_none() {
            return pieces;
        }
        let fresh = self.fresh_over(within);
        let mut out = Vec::with_capacity(pieces.len());
        let mut j = 0;
        for p in pieces {
            while j < fresh.len() && fresh[j].end <= p.start {
                j += 1;
            }
            let mut from = p.start;
            let mut k = j;
            while k < fresh.len() && fresh[k].start < p.end {
                if fresh[k].start > from {
                    out.push(from..fresh[k].start);
                }
                from = from.max(fresh[k].end);
                k += 1;
            }
            if from < p.end {
                out.push(from..p.end);
            }
        }
        out
    }

    /// The blocking pin that refuses a free of `r`, as `(seq, slot)`, and the part of
    /// `r` it covers: of the blocking pins over the first blocked block of `r`, the
    /// oldest. O(log n) to find that block, and one step per pin over it.
    pub(crate) fn first_blocking(&self, r: &Range<u64>) -> Option<(u64, u32, Range<u64>)> {
        let x = self.blocking.first_covered(r)?;
        let mut oldest: Option<(u64, u32, Range<u64>)> = None;
        self.blocking.for_each_overlapping(
            &(x..x + 1),
            |_| true,
            |pr, slot| {
                let seq = self.slots[slot as usize].seq();
                if oldest.as_ref().is_none_or(|o| seq < o.0) {
                    oldest = Some((seq, slot, clip(&pr, r)));
                }
            },
        );
        oldest
    }

    /// The interval indexes agree with the slab, and their trees are sound.
    /// `in_run(r)`: whether a Deferred run over exactly `r` keeps a pin.
    pub(crate) fn check_index(
        &self,
        in_run: impl Fn(&Range<u64>) -> bool,
    ) -> Result<(), alloc::string::String> {
        use alloc::format;
        self.cover
            .check()
            .map_err(|d| format!("pin coverage: {d}"))?;
        self.blocking
            .check()
            .map_err(|d| format!("blocking pin index: {d}"))?;
        let from_slab = |blocking_only: bool| {
            let mut v: Vec<(Range<u64>, u32)> = self
                .iter()
                .filter(|(_, _, rec)| !blocking_only || rec.mode == PinMode::Blocking)
                .map(|(_, slot, rec)| (to_range(rec.extent), slot))
                .collect();
            v.sort_by_key(|(r, slot)| (r.start, *slot));
            v
        };
        let fresh: Vec<(Range<u64>, u32)> = self
            .fresh
            .iter()
            .map(|(start, slot)| {
                // A slot out of the slab shows as an empty range, refused below.
                let end = self
                    .slots
                    .get(slot as usize)
                    .map_or(start, |s| s.start.wrapping_add(s.len));
                (start..end, slot)
            })
            .collect();
        self.fresh.check().map_err(|d| format!("fresh pins: {d}"))?;
        for (i, (r, slot)) in fresh.iter().enumerate() {
            let ok = self
                .slots
                .get(*slot as usize)
                .is_some_and(|s| s.tag != 0 && s.start == r.start && s.start + s.len == r.end);
            if !ok || fresh.get(i + 1).is_some_and(|(next, _)| next.start < r.end) {
                return Err(format!(
                    "fresh pin {r:?} in slot {slot} is not a live pin of its own"
                ));
            }
            if self.cover.any(r) {
                return Err(format!("fresh pin {r:?} overlaps the coverage"));
            }
        }
        let fresh_blocks: u64 = fresh.iter().map(|(r, _)| r.end - r.start).sum();
        if fresh_blocks != self.fresh_blocks {
            return Err(format!(
                "fresh pins cover {fresh_blocks} blocks, cached {}",
                self.fresh_blocks
            ));
        }
        let mut steps: alloc::collections::BTreeMap<u64, i64> = Default::default();
        let mut run_blocks = 0;
        let mut kept = alloc::collections::BTreeSet::new();
        for (r, slot) in from_slab(false) {
            if fresh.iter().any(|(_, f)| *f == slot) {
                continue;
            }
            // The first live pin with its bit over a run that keeps a pin is the one
            // the run keeps (no other pin covers such a run).
            if self.slots[slot as usize].tag & IN_RUN != 0 && in_run(&r) && kept.insert(r.start) {
                run_blocks += r.end - r.start;
                continue;
            }
            *steps.entry(r.start).or_default() += 1;
            *steps.entry(r.end).or_default() -= 1;
        }
        steps.retain(|&k, d| *d != 0 && k != u64::MAX);
        if run_blocks != self.run_blocks {
            return Err(format!(
                "pins kept in Deferred runs cover {run_blocks} blocks, cached {}",
                self.run_blocks
            ));
        }
        if !self.cover.pin_steps().eq(steps) {
            return Err("the pin coverage differs from the live pins".into());
        }
        if !self.blocking.iter().eq(from_slab(true)) {
            return Err("the blocking pin index differs from the blocking pins".into());
        }
        let mut vacant = 0;
        let mut at = self.vacant;
        while at != NIL {
            let s = self
                .slots
                .get(at as usize)
                .filter(|s| s.tag == 0 && vacant < self.slots.len())
                .ok_or_else(|| {
                    format!("the vacant chain reaches slot {at}, which is not vacant")
                })?;
            vacant += 1;
            at = s.start as u32;
        }
        if vacant + self.live != self.slots.len() || self.iter().count() != self.live {
            return Err(format!(
                "{} slots, {} live pins and {vacant} vacant slots do not add up",
                self.slots.len(),
                self.live
            ));
        }
        if self
            .iter()
            .any(|(seq, _, _)| seq == 0 || seq >= self.next_seq)
        {
            return Err("a pin is numbered 0 or beyond the next pin".into());
        }
        Ok(())
    }
}

use super::ExtentAllocator;
use super::epochs::ReleaseOutcome;
use crate::PinError;

/// A live pin, as [`ExtentAllocator::pins`] lists it.
///
/// ```
/// use pinalloc::{Extent, ExtentAllocator, PinMode};
/// let mut alloc = ExtentAllocator::new(16);
/// let id = alloc.pin(Extent::new(4, 2))?;
/// let listed = alloc.pins();
/// assert_eq!((listed[0].id, listed[0].extent, listed[0].mode), (id, Extent::new(4, 2), PinMode::Deferring));
/// # Ok::<(), pinalloc::PinError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct PinInfo {
    /// The pin.
    pub id: PinId,
    /// The blocks it covers.
    pub extent: Extent,
    /// Whether it defers frees or refuses them.
    pub mode: PinMode,
}

impl ExtentAllocator {
    /// The live pins, oldest first, with their extents and modes: what holds pinned
    /// space. O(pins).
    ///
    /// ```
    /// use pinalloc::{Extent, ExtentAllocator};
    /// let mut alloc = ExtentAllocator::new(16);
    /// let old = alloc.pin(Extent::new(0, 4))?;
    /// let young = alloc.pin(Extent::new(2, 4))?;
    /// let ids: Vec<_> = alloc.pins().iter().map(|p| p.id).collect();
    /// assert_eq!(ids, [old, young]);
    /// # Ok::<(), pinalloc::PinError>(())
    /// ```
    #[must_use]
    pub fn pins(&self) -> Vec<PinInfo> {
        let mut pins: Vec<PinInfo> = self
            .pins
            .iter()
            .map(|(seq, slot, rec)| PinInfo {
                id: PinId {
                    allocator: self.uid,
                    seq,
                    slot,
                },
                extent: rec.extent,
                mode: rec.mode,
            })
            .collect();
        pins.sort_by_key(|p| p.id.seq);
        pins
    }

    /// Pins `extent` (a deferring pin): until [`unpin`](Self::unpin), none of its
    /// blocks can be allocated. Any managed block may be pinned, whatever its state:
    ///
    /// - an Allocated block can still be freed, and becomes Deferred;
    /// - a Free block leaves the free index and comes back when its last pin goes (an
    ///   excluded extent: a superblock copy, a range under discard).
    ///
    /// Pins nest and overlap: counts are per block. One pin costs O(1) memory,
    /// whatever its length.
    ///
    /// # Errors
    ///
    /// [`PinError::BadExtent`] for a malformed extent; [`PinError::Reserved`] when pinning Free blocks would take
    /// blocks that reservations promised.
    ///
    /// ```
    /// use pinalloc::{Extent, ExtentAllocator, Request};
    ///
    /// let mut alloc = ExtentAllocator::new(16);
    /// let file = alloc.allocate(Request::new(8))?;
    /// let dma = alloc.pin(Extent::new(2, 4))?;       // a device is writing here
    /// let out = alloc.free(file)?;                   // truncate anyway
    /// assert_eq!((out.freed_blocks, out.deferred_blocks), (4, 4));
    /// // The pinned blocks are skipped: 12 blocks free, but not [2, 6).
    /// let e = alloc.allocate(Request::range(1..=16))?;
    /// assert_eq!(e, Extent::new(6, 10));
    /// assert_eq!(alloc.unpin(dma)?.released_blocks, 4);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn pin(&mut self, extent: Extent) -> Result<PinId, PinError> {
        self.pin_with(extent, PinMode::Deferring)
    }

    /// Pins `extent` with the given [`PinMode`]. A [`PinMode::Blocking`] pin makes a
    /// `free` that overlaps it fail with [`FreeError::Busy`](crate::FreeError::Busy).
    ///
    /// # Errors
    ///
    /// As [`pin`](Self::pin).
    ///
    /// ```
    /// use pinalloc::{Extent, ExtentAllocator, FreeError, PinMode, Request};
    ///
    /// let mut alloc = ExtentAllocator::new(16);
    /// let file = alloc.allocate(Request::new(8))?;
    /// let pin = alloc.pin_with(Extent::new(2, 1), PinMode::Blocking)?;
    /// assert!(matches!(alloc.free(file), Err(FreeError::Busy { .. })));
    /// alloc.unpin(pin)?;
    /// alloc.free(file)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn pin_with(&mut self, extent: Extent, mode: PinMode) -> Result<PinId, PinError> {
        self.pin_numbered(extent, mode, || None)
    }

    /// Checks a pin of `extent`: a valid range, and no more Free blocks in it than
    /// reservations leave unpromised. Returns the range and the free extents in it.
    #[inline]
    pub(crate) fn check_pin(&self, extent: Extent) -> Result<(Range<u64>, Vec<Extent>), PinError> {
        let r = self
            .checked_range(extent)
            .map_err(|fault| PinError::BadExtent(fault.error(extent, self.capacity)))?;
        let free_pieces = self.free.overlapping(r.start, r.end);
        let free_blocks: u64 = free_pieces.iter().map(|p| p.len).sum();
        let unreserved = self.unreserved_free();
        if free_blocks > unreserved {
            return Err(PinError::Reserved {
                extent,
                free_blocks,
                unreserved,
            });
        }
        Ok((r, free_pieces))
    }

    /// [`pin_with`](Self::pin_with), with the pin's sequence number from `seq` (called
    /// once the pin is known to succeed), or this core's next if it gives `None`. The
    /// shared allocator numbers the pins of all its groups in one sequence, so that
    /// "the oldest pin" means the same across groups as in one core. A number must be
    /// unique among this core's pins and below 2^62.
    pub(crate) fn pin_numbered(
        &mut self,
        extent: Extent,
        mode: PinMode,
        seq: impl FnOnce() -> Option<u64>,
    ) -> Result<PinId, PinError> {
        // The lookups the checks and the insert share, made ahead.
        self.free.probe(extent.start);
        if let Ok(r) = self.checked_range(extent) {
            self.pins.probe(&r);
        }
        // The common pin, of blocks none of which is Free, needs none of the checks
        // that free blocks bring (a reservation's claim on them, their removal).
        let plain = self
            .checked_range(extent)
            .is_ok_and(|r| self.free.first_overlap(r.start, r.end).is_none());
        let free_pieces = if plain {
            Vec::new()
        } else {
            self.check_pin(extent)?.1
        };
        // The record first: it is the one step that can panic (past 2^32 - 1 live
        // pins), and then nothing else has changed yet.
        let r = to_range(extent);
        let fresh = if free_pieces.is_empty() && !self.deferrals.epoch_of.may_keep_pin_near(&r) {
            self.pins.can_be_fresh(&r)
        } else {
            None
        };
        let (seq, slot) = self.pins.add(extent, mode, seq(), fresh);
        if fresh.is_none() {
            // A pin kept by a run over these blocks is one pin among others now.
            for kept in self.deferrals.epoch_of.let_go_over(&r) {
                self.pins.take_from_run(&kept);
            }
        }
        if !free_pieces.is_empty() {
            self.pin_free(free_pieces);
        }
        self.counters.pins = self.counters.pins.saturating_add(1);
        self.debug_check();
        Ok(PinId {
            allocator: self.uid,
            seq,
            slot,
        })
    }

    /// A 64-bit token for live pin `id`, for an I/O descriptor's user data (an
    /// io_uring `user_data`, a completion queue entry): [`pin_of_token`] gives the pin
    /// back. The same pin always gets the same token. Tokens come from one
    /// process-wide sequence, and a token is forgotten when its pin goes, so a stale
    /// token, or another allocator's, is refused, never taken for a live pin.
    ///
    /// [`pin_of_token`]: Self::pin_of_token
    ///
    /// # Errors
    ///
    /// [`PinError::Unknown`] for a pin that is not live here; nothing changes.
    ///
    /// ```
    /// use pinalloc::{Extent, ExtentAllocator, PinError};
    ///
    /// let mut alloc = ExtentAllocator::new(16);
    /// let pin = alloc.pin(Extent::new(0, 4))?;
    /// let user_data: u64 = alloc.pin_token(pin)?; // travels with the I/O
    /// // ... the completion comes back with `user_data` ...
    /// let done = alloc.pin_of_token(user_data)?;
    /// alloc.unpin(done)?;
    /// assert_eq!(alloc.pin_of_token(user_data), Err(PinError::UnknownToken { token: user_data }));
    /// # Ok::<(), PinError>(())
    /// ```
    pub fn pin_token(&mut self, id: PinId) -> Result<u64, PinError> {
        if id.allocator != self.uid || self.pins.get(id.seq, id.slot).is_none() {
            return Err(PinError::Unknown { id });
        }
        Ok(self.tokens.token(id))
    }

    /// Pin `id` went: its token too. Out of line: most unpins have no token to forget.
    #[cold]
    #[inline(never)]
    fn forget_token(&mut self, id: PinId) {
        self.tokens.forget(&id);
    }

    /// Whether `id` is a live pin of this allocator.
    #[cfg(feature = "std")]
    pub(crate) fn is_live_pin(&self, id: PinId) -> bool {
        id.allocator == self.uid && self.pins.get(id.seq, id.slot).is_some()
    }

    /// The live pin that [`pin_token`](Self::pin_token) gave `token`. O(log n) in the
    /// pins that have tokens.
    ///
    /// # Errors
    ///
    /// [`PinError::UnknownToken`] for a token of a pin that has gone, of another
    /// allocator (a clone's included), or never given.
    ///
    /// ```
    /// use pinalloc::{ExtentAllocator, PinError};
    /// let alloc = ExtentAllocator::new(8);
    /// assert_eq!(alloc.pin_of_token(42), Err(PinError::UnknownToken { token: 42 }));
    /// ```
    pub fn pin_of_token(&self, token: u64) -> Result<PinId, PinError> {
        self.tokens
            .pin(token)
            .filter(|id| id.allocator == self.uid)
            .ok_or(PinError::UnknownToken { token })
    }

    /// Drops a pin. Blocks whose last pin it was: Deferred ones with no other hold
    /// become Free, and pinned Free ones return to the free index.
    ///
    /// # Errors
    ///
    /// [`PinError::Unknown`] for a pin of another allocator or one already unpinned.
    ///
    /// ```
    /// use pinalloc::{Extent, ExtentAllocator};
    ///
    /// let mut alloc = ExtentAllocator::new(16);
    /// let a = alloc.pin(Extent::new(0, 8))?;   // two nested pins on Free blocks
    /// let b = alloc.pin(Extent::new(2, 2))?;
    /// assert_eq!(alloc.unpin(a)?.unpinned_free_blocks, 6);
    /// assert_eq!(alloc.unpin(b)?.unpinned_free_blocks, 2);
    /// assert_eq!(alloc.stats().pinned_blocks, 0);
    /// # Ok::<(), pinalloc::PinError>(())
    /// ```
    pub fn unpin(&mut self, id: PinId) -> Result<ReleaseOutcome, PinError> {
        if id.allocator != self.uid {
            return Err(PinError::Unknown { id });
        }
        let in_run = self.pins.went_to_run(id.seq, id.slot) && {
            let e = self.pins.get(id.seq, id.slot).expect("a live pin").extent;
            self.deferrals.epoch_of.let_go(&to_range(e))
        };
        let Some((record, removed)) = self.pins.remove(id.seq, id.slot, in_run) else {
            return Err(PinError::Unknown { id });
        };
        if !self.tokens.is_empty() {
            self.forget_token(id);
        }
        let r = to_range(record.extent);
        // Only pinned Free and Deferred blocks change when their count reaches zero; a
        // pin of Allocated blocks is done here, however many pins it overlapped.
        let zeroed = match removed {
            Removed::Fresh => Vec::new(),
            Removed::InRun => {
                // The run loses the pin it kept: its blocks are marked now, as every
                // Deferred block under a pin in the coverage or under none is.
                self.pins.mark_deferred(&r);
                alloc::vec![r.clone()]
            }
            Removed::Counted
                if self.pinned_free.overlaps(&r) || self.deferrals.epoch_of.overlaps(&r) =>
            {
                self.pins.zero_pieces(&r)
            }
            Removed::Counted => Vec::new(),
        };
        let out = if zeroed.is_empty() {
            ReleaseOutcome::default()
        } else {
            self.unpin_zeroed(&zeroed)
        };
        self.count_released(out.released_blocks);
        self.counters.unpins = self.counters.unpins.saturating_add(1);
        self.debug_check();
        Ok(out)
    }
}

#[cfg(test)]
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use alloc::vec::Vec;
    use core::ops::Range;

    use crate::splitmix::SplitMix;
    use crate::{Extent, ExtentAllocator, Request};

    /// The blocks the pin coverage marks Deferred, one by one.
    fn marked(a: &ExtentAllocator) -> Vec<u64> {
        a.pins.deferred_marks().into_iter().flatten().collect()
    }

    /// A pin, then a free, of an I/O buffer: the pin goes into the Deferred run of
    /// its blocks, which neither the fresh map nor the coverage then hold, and is the
    /// one thing to let them go.
    #[test]
    fn a_pin_goes_into_the_run_it_defers() {
        let mut a = ExtentAllocator::new(64);
        let e = a.allocate(Request::new(16)).unwrap();
        let pin = a.pin(e).unwrap();
        assert!(a.free(Extent::new(0, 24)).is_err(), "blocks 16.. are Free");
        assert_eq!(a.free(e).unwrap().deferred_blocks, 16);
        assert_eq!(a.pins.fresh.len(), 0, "the pin left the fresh map");
        assert!(a.pins.cover.is_empty(), "nothing entered the coverage");
        assert!(a.deferrals.epoch_of.keeps_pin(&(0..16)));
        assert_eq!(
            (a.pin_count(0), a.pin_count(15), a.pin_count(16)),
            (1, 1, 0)
        );
        assert_eq!(a.stats().pinned_blocks, 16);
        a.check_invariants().unwrap();
        // Its blocks are Deferred: a second free of them is refused, as a double free.
        assert!(a.free(Extent::new(4, 2)).is_err());
        assert_eq!(a.unpin(pin).unwrap().released_blocks, 16);
        assert_eq!(a.stats().free_blocks, 64);
        assert_eq!(a.stats().pinned_blocks, 0);
        a.check_invariants().unwrap();
    }

    /// A second pin over a run that keeps a pin moves the kept pin into the coverage
    /// and marks the run; a reader holds the blocks past both unpins.
    #[test]
    fn a_second_pin_takes_the_kept_pin_into_the_coverage() {
        let mut a = ExtentAllocator::new(64);
        let e = a.allocate(Request::new(16)).unwrap();
        let first = a.pin(Extent::new(2, 8)).unwrap();
        let reader = a.begin_read();
        assert_eq!(a.free(e).unwrap().deferred_blocks, 16);
        // The reader holds all 16 blocks, in one free's run, cut around the pin.
        assert!(a.deferrals.epoch_of.keeps_pin(&(2..10)));
        assert_eq!(a.pins.deferred_marks(), [0..2, 10..16]);
        a.check_invariants().unwrap();
        let second = a.pin(Extent::new(6, 8)).unwrap();
        assert!(!a.deferrals.epoch_of.keeps_pin(&(2..10)));
        assert_eq!(a.pins.fresh.len(), 0, "both pins are counted");
        assert_eq!(marked(&a), (0..16).collect::<Vec<_>>());
        assert_eq!((a.pin_count(2), a.pin_count(7), a.pin_count(12)), (1, 2, 1));
        a.check_invariants().unwrap();
        assert_eq!(a.unpin(first).unwrap().released_blocks, 0);
        assert_eq!(a.unpin(second).unwrap().released_blocks, 0);
        a.check_invariants().unwrap();
        assert_eq!(a.end_read(reader).unwrap().released_blocks, 16);
        a.check_invariants().unwrap();

        // A reader outliving a pin kept by its run.
        let e = a.allocate(Request::new(16)).unwrap();
        let pin = a.pin(Extent::new(e.start + 4, 4)).unwrap();
        let reader = a.begin_read();
        assert_eq!(a.free(e).unwrap().deferred_blocks, 16);
        assert_eq!(a.unpin(pin).unwrap().released_blocks, 0);
        assert_eq!(marked(&a), (e.start..e.start + 16).collect::<Vec<_>>());
        a.check_invariants().unwrap();
        assert_eq!(a.end_read(reader).unwrap().released_blocks, 16);
        assert_eq!(a.stats().free_blocks, 64);
        a.check_invariants().unwrap();
    }

    /// A pin reaching out of a free enters the coverage; a pin whose blocks a free on
    /// commit splits by epoch is settled with its blocks marked.
    #[test]
    fn pins_that_no_single_run_can_keep() {
        let mut a = ExtentAllocator::new(64);
        a.allocate(Request::new(16)).unwrap();
        let wide = a.pin(Extent::new(0, 10)).unwrap();
        assert_eq!(a.free(Extent::new(0, 5)).unwrap().deferred_blocks, 5);
        assert_eq!(a.pins.fresh.len(), 0);
        assert_eq!(a.pins.deferred_marks(), [0..5]);
        a.check_invariants().unwrap();
        assert_eq!(a.free(Extent::new(5, 11)).unwrap().deferred_blocks, 5);
        assert_eq!(a.unpin(wide).unwrap().released_blocks, 10);
        a.check_invariants().unwrap();
        assert_eq!(a.stats().free_blocks, 64);

        // Durable blocks [0, 8) and blocks allocated in the open epoch [8, 16): a free
        // on commit defers them as two runs, one waiting for the commit.
        let old = a
            .allocate(Request::new(8).policy(crate::Policy::Exact(0)))
            .unwrap();
        a.commit(1).unwrap();
        let new = a
            .allocate(Request::new(8).policy(crate::Policy::Exact(8)))
            .unwrap();
        let pin = a.pin(Extent::new(4, 8)).unwrap();
        let out = a.free_on_commit(Extent::new(0, 16)).unwrap();
        assert_eq!((out.freed_blocks, out.deferred_blocks), (4, 12));
        assert_eq!((old.start, new.start), (0, 8));
        assert!(!a.deferrals.epoch_of.keeps_pin(&(4..12)));
        assert_eq!(a.pins.fresh.len(), 0, "the pin was settled");
        a.check_invariants().unwrap();
        assert_eq!(a.unpin(pin).unwrap().released_blocks, 4);
        assert_eq!(a.commit(2).unwrap().released_blocks, 8);
        assert_eq!(a.stats().free_blocks, 64);
        a.check_invariants().unwrap();
    }

    /// Unpinned pieces with fresh pins and counted pins mixed, against pin counts
    /// block by block.
    #[test]
    fn zero_pieces_cut_out_fresh_pins() {
        let mut rng = SplitMix::new(3);
        for round in 0..40 {
            let mut a = ExtentAllocator::new(400);
            a.allocate(Request::new(400)).unwrap();
            for _ in 0..30 {
                let s = rng.below(390);
                let len = 1 + rng.below(8);
                // Disjoint from other pins: fresh; overlapping: counted.
                a.pin(Extent::new(s, len)).unwrap();
            }
            assert!(
                a.pins.fresh.len() > 0,
                "round {round}: some pins stay fresh"
            );
            for _ in 0..20 {
                let s = rng.below(399);
                let within = s..s + 1 + rng.below(400 - s - 1);
                let mut want: Vec<Range<u64>> = Vec::new();
                for b in within.clone().filter(|&b| a.pin_count(b) == 0) {
                    match want.last_mut() {
                        Some(w) if w.end == b => w.end = b + 1,
                        _ => want.push(b..b + 1),
                    }
                }
                assert_eq!(
                    a.pins.zero_pieces(&within),
                    want,
                    "round {round} {within:?}"
                );
            }
        }
    }
}
