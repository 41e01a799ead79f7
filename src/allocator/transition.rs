//! Every block state change of the core, and nothing else. A newcomer looking for
//! where a block changes state looks here:
//!
//! | change | function | asked by |
//! |---|---|---|
//! | Free → Allocated | [`claim`](ExtentAllocator::claim) | `allocate` and its kin |
//! | Free → pinned Free | [`pin_free`](ExtentAllocator::pin_free) | `pin` |
//! | pinned Free → Free, Deferred → Free | [`unpin_zeroed`](ExtentAllocator::unpin_zeroed) | `unpin` |
//! | Allocated → Free | [`free_unheld`](ExtentAllocator::free_unheld) | the plain `free` |
//! | Allocated → Free or Deferred | [`plan_free`](ExtentAllocator::plan_free), then [`apply_free`](ExtentAllocator::apply_free) | `free`, `free_on_commit` |
//! | Deferred → Allocated | [`unfree_pending`](ExtentAllocator::unfree_pending) | `abort`, `abort_all` |
//! | Deferred → Free | [`plan_release`](ExtentAllocator::plan_release), then [`apply_release`](ExtentAllocator::apply_release) (both in [`release_unheld`](ExtentAllocator::release_unheld)) | `unpin_zeroed`, `apply_free`, `commit`, `end_read` |
//!
//! The callers (`allocate.rs`, `free.rs`, `pins.rs`, `epochs.rs`) keep the API and the
//! checks. A change with decisions to make (which blocks become Free, which stay
//! Deferred) is a pure plan, which changes nothing, and an apply step: a caller that
//! only wants to know what a call would do (the shared layer's Deferred cap) asks for
//! the plan. `claim`, `pin_free` and `unpin_zeroed` decide nothing: they are told the
//! exact blocks. The one rule for when a reader holds a Deferred block,
//! [`reader_holds`], serves the plans, the Deferred runs' count of reader-held blocks
//! (`defer.rs`) and the invariant check.
//!
//! A sealed epoch's blocks (`prepare_commit`) change no state: they stay Deferred,
//! waiting as pending blocks do, until `finish_commit` lets the release plans see them.
//!
//! The constructors (`build.rs`) set the first state of every block; they change none.
//! `grow` and `shrink` (`resize.rs`) add or cut off Free, unpinned blocks only.

use alloc::vec::Vec;
use core::ops::Range;

use super::epochs::ReleaseOutcome;
use super::free::FreeOutcome;
use super::ranges::set_pieces;
use super::{ExtentAllocator, Reservation};
use crate::Extent;

/// Whether a live reader holds a Deferred block freed in epoch `freed_in`, when the
/// oldest live reader began in `oldest_reader`: one began at or before that epoch.
/// With its pins and a commit still to come, the only holds on a Deferred block.
#[inline]
pub(super) fn reader_holds(oldest_reader: Option<u64>, freed_in: u64) -> bool {
    oldest_reader.is_some_and(|oldest| oldest <= freed_in)
}

/// What a free of checked Allocated blocks will do, decided by
/// [`plan_free`](ExtentAllocator::plan_free) without changing anything.
pub(super) struct FreePlan {
    /// The blocks freed, all Allocated and under no blocking pin.
    range: Range<u64>,
    fate: Fate,
}

/// Where the blocks of a [`FreePlan`] go.
enum Fate {
    /// Every block is Free at once: nothing can hold them.
    Free,
    /// The whole range enters Deferred, freed in `epoch`; then its unheld blocks
    /// leave it.
    Deferred { epoch: u64 },
    /// A free on commit: `pending` (allocated before the open epoch) enters Deferred,
    /// waiting for the open epoch's commit; `never_durable` (allocated in it) enters
    /// Deferred freed in epoch 0, which no reader began at or before, so only pins
    /// hold it. Then the unheld blocks leave Deferred.
    OnCommit {
        pending: Vec<Range<u64>>,
        never_durable: Vec<Range<u64>>,
    },
}

impl ExtentAllocator {
    /// Free → Allocated for a placed extent, charging the reservation if any.
    pub(super) fn claim(&mut self, extent: Extent, reservation: Option<&mut Reservation>) {
        self.free.take(extent.start, extent.len);
        self.epochs
            .note_allocated(extent.start..extent.start + extent.len);
        if let Some(res) = reservation {
            self.charge_reservation(res, extent.len);
        } else {
            debug_assert!(self.free.free_blocks() >= self.count_reserved_blocks);
        }
    }

    /// Free → pinned Free for the free pieces a new pin covers.
    pub(super) fn pin_free(&mut self, pieces: Vec<Extent>) {
        for p in pieces {
            self.free.take(p.start, p.len);
            self.pinned_free.insert(p.start..p.start + p.len);
            self.count_pinned_free_blocks += p.len;
        }
    }

    /// For the pieces whose last pin an unpin removed: pinned Free → Free, and
    /// Deferred → Free where nothing else holds the blocks.
    pub(super) fn unpin_zeroed(&mut self, zeroed: &[Range<u64>]) -> ReleaseOutcome {
        let mut out = ReleaseOutcome::default();
        for z in zeroed {
            for p in set_pieces(&self.pinned_free, z) {
                let len = p.end - p.start;
                self.pinned_free.remove(p.clone());
                self.count_pinned_free_blocks -= len;
                self.free.insert(p.start, len);
                out.unpinned_free_blocks += len;
            }
            out.released_blocks += self.release_unheld(z);
        }
        out
    }

    /// Allocated → Free for a range checked to be Allocated and held by nothing: the
    /// plain free.
    #[inline]
    pub(super) fn free_unheld(&mut self, r: &Range<u64>) {
        self.epochs.note_freed(r);
        self.free.insert(r.start, r.end - r.start);
    }

    /// Plans a free of `r`, checked to be Allocated and under no blocking pin
    /// (`pinned` if any pin covers part of it). Blocks with no hold will become Free;
    /// the rest Deferred, remembering the epoch that readers are measured against:
    ///
    /// - a plain free: the open epoch;
    /// - `free_on_commit` of durable blocks: the open epoch, and pending its commit;
    /// - `free_on_commit` of blocks allocated in the open epoch: epoch 0, which no
    ///   reader began at or before. Readers see committed state only, so they never saw
    ///   these blocks; only pins can hold them.
    pub(super) fn plan_free(&self, r: Range<u64>, on_commit: bool, pinned: bool) -> FreePlan {
        let fate = if !on_commit {
            if pinned || self.epochs.oldest_reader().is_some() {
                Fate::Deferred {
                    epoch: self.epochs.open,
                }
            } else {
                Fate::Free
            }
        } else {
            let (pending, never_durable) = self.epochs.split_durable(&r);
            if pending.is_empty() && !pinned {
                Fate::Free
            } else {
                Fate::OnCommit {
                    pending,
                    never_durable,
                }
            }
        };
        FreePlan { range: r, fate }
    }

    /// The blocks that `plan` leaves Deferred: what the free would report as
    /// deferred, without making it.
    #[cfg(feature = "std")]
    pub(super) fn deferred_by_plan(&self, plan: &FreePlan) -> u64 {
        let blocks = |r: &Range<u64>| r.end - r.start;
        let held = |r: &Range<u64>, epoch: u64| -> u64 {
            let unheld: u64 = self
                .unheld_pieces(r, epoch, self.epochs.oldest_reader())
                .iter()
                .map(blocks)
                .sum();
            blocks(r) - unheld
        };
        match &plan.fate {
            Fate::Free => 0,
            Fate::Deferred { epoch } => held(&plan.range, *epoch),
            Fate::OnCommit {
                pending,
                never_durable,
            } => {
                let waiting: u64 = pending.iter().map(blocks).sum();
                waiting + never_durable.iter().map(|r| held(r, 0)).sum::<u64>()
            }
        }
    }

    /// Makes the free that `plan` planned: Allocated → Free or Deferred.
    pub(super) fn apply_free(&mut self, plan: FreePlan) -> FreeOutcome {
        let r = plan.range;
        let len = r.end - r.start;
        self.epochs.note_freed(&r);
        match plan.fate {
            Fate::Free => {
                self.free.insert(r.start, len);
                return FreeOutcome {
                    freed_blocks: len,
                    deferred_blocks: 0,
                };
            }
            Fate::Deferred { epoch } => self.defer(r.clone(), epoch, false),
            Fate::OnCommit {
                pending,
                never_durable,
            } => {
                let open = self.epochs.open;
                for p in pending {
                    self.defer(p, open, true);
                }
                for p in never_durable {
                    self.defer(p, 0, false);
                }
            }
        }
        self.deferrals.next_free();
        let freed = self.release_unheld(&r);
        let deferred = len - freed;
        self.counters.blocks_deferred = self.counters.blocks_deferred.saturating_add(deferred);
        FreeOutcome {
            freed_blocks: freed,
            deferred_blocks: deferred,
        }
    }

    /// The pieces of `piece`, freed in `epoch`, that neither a reader (the oldest
    /// began in `oldest_reader`) nor a pin holds (a commit still to come aside), in
    /// order.
    fn unheld_pieces(
        &self,
        piece: &Range<u64>,
        epoch: u64,
        oldest_reader: Option<u64>,
    ) -> Vec<Range<u64>> {
        if reader_holds(oldest_reader, epoch) {
            return Vec::new();
        }
        self.pins.zero_pieces(piece)
    }

    /// Deferred → Free for every block of `within` that nothing holds any more.
    /// Returns the blocks released.
    pub(super) fn release_unheld(&mut self, within: &Range<u64>) -> u64 {
        let plan = self.plan_release(within, self.epochs.oldest_reader());
        self.apply_release(plan)
    }

    /// The Deferred blocks that the readers of the oldest readers' epoch alone hold
    /// back: those that their end would make Free, planned as if the oldest reader
    /// were the next epoch's. Changes nothing.
    pub(crate) fn held_by_oldest_readers(&self) -> u64 {
        let Some(oldest) = self.epochs.oldest_reader() else {
            return 0;
        };
        let next = self
            .epochs
            .begins
            .range(oldest + 1..)
            .next()
            .map(|(&e, _)| e);
        self.plan_release(&(0..self.capacity), next)
            .iter()
            .map(|r| r.end - r.start)
            .sum()
    }

    /// The Deferred blocks of `within` that nothing holds, as ranges in order, when
    /// the oldest live reader began in `oldest_reader`: no pin, not waiting for a
    /// commit, and no live reader that began at or before the epoch they were freed
    /// in. Changes nothing.
    fn plan_release(&self, within: &Range<u64>, oldest_reader: Option<u64>) -> Vec<Range<u64>> {
        let mut unheld = Vec::new();
        for (piece, epoch) in self.deferrals.pieces(within) {
            for unpinned in self.unheld_pieces(&piece, epoch, oldest_reader) {
                unheld.extend(self.deferrals.not_waiting(&unpinned));
            }
        }
        unheld
    }

    /// Deferred → Free for the ranges [`plan_release`](Self::plan_release) found.
    /// Returns the blocks released.
    fn apply_release(&mut self, plan: Vec<Range<u64>>) -> u64 {
        let mut released = 0;
        for free in plan {
            let len = free.end - free.start;
            self.deferrals.remove(free.clone());
            self.pins.unmark_deferred(&free);
            self.free.insert(free.start, len);
            released += len;
        }
        released
    }

    /// Deferred → Allocated for every block waiting for the open epoch's commit.
    /// Returns how many.
    pub(super) fn unfree_pending(&mut self) -> u64 {
        let pending: Vec<Range<u64>> = self.deferrals.pending.iter().cloned().collect();
        let mut restored = 0;
        for r in &pending {
            // A pin its run kept is one pin among others in the coverage, which then
            // marks every block of `r` Deferred (no fresh pin covers Deferred blocks).
            for kept in self.deferrals.epoch_of.let_go_over(r) {
                self.pins.take_from_run(&kept);
            }
            self.pins.unmark_deferred(r);
            if self.epochs.open == 1 {
                self.epochs.note_mounted(r.clone());
            }
            restored += r.end - r.start;
        }
        self.deferrals.unpend();
        restored
    }

    /// Allocated → Deferred for `r`, marking its blocks.
    fn defer(&mut self, r: Range<u64>, epoch: u64, pending: bool) {
        self.pins.mark_deferred(&r);
        self.deferrals.add(r, epoch, pending);
    }

    /// Counts blocks released by an unpin, a commit or a reader's end.
    pub(super) fn count_released(&mut self, blocks: u64) {
        self.counters.blocks_released = self.counters.blocks_released.saturating_add(blocks);
    }
}

#[cfg(test)]
mod tests {
    //! In the diagrams: `.` Free, `A` Allocated, `D` Deferred, `^` a pinned block.

    use alloc::vec::Vec;

    use crate::{Extent, ExtentAllocator, Policy, Request};

    fn free_list(a: &ExtentAllocator) -> Vec<(u64, u64)> {
        a.free_extents().map(|e| (e.start, e.len)).collect()
    }

    /// The plan a failing shared free previews with is the free's own: over random
    /// states of pins, readers, epochs and frees on commit, the blocks the plan says
    /// stay Deferred are those the free then reports.
    #[cfg(feature = "std")]
    #[test]
    fn the_plan_counts_what_the_free_defers() {
        use crate::splitmix::SplitMix;
        let mut compared = [0u64; 2];
        for seed in 0..40 {
            let mut rng = SplitMix::new(seed);
            let mut a = ExtentAllocator::new(64);
            let (mut live, mut pins, mut readers) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..200 {
                match rng.below(8) {
                    0 | 1 => {
                        if let Ok(e) = a.allocate(Request::new(1 + rng.below(6))) {
                            live.push(e);
                        }
                    }
                    2 => {
                        let (start, len) = (rng.below(60), 1 + rng.below(4));
                        if let Ok(id) = a.pin(Extent::new(start, len)) {
                            pins.push(id);
                        }
                    }
                    3 if !pins.is_empty() => {
                        let id = pins.swap_remove(rng.below(pins.len() as u64) as usize);
                        a.unpin(id).unwrap();
                    }
                    4 => readers.push(a.begin_read()),
                    5 if !readers.is_empty() => {
                        let r = readers.swap_remove(rng.below(readers.len() as u64) as usize);
                        a.end_read(r).unwrap();
                    }
                    6 => {
                        let open = a.epoch();
                        a.commit(open).unwrap();
                    }
                    _ if !live.is_empty() => {
                        let e: Extent = live.swap_remove(rng.below(live.len() as u64) as usize);
                        let on_commit = rng.below(2) == 0;
                        let planned = a.deferral_preview(e, on_commit);
                        let done = if on_commit {
                            a.free_on_commit(e)
                        } else {
                            a.free(e)
                        };
                        match (planned, done) {
                            (Ok(deferred), Ok(out)) => {
                                assert_eq!(deferred, out.deferred_blocks, "seed {seed}: {e}");
                                compared[usize::from(deferred > 0)] += 1;
                            }
                            (Err(p), Err(d)) => assert_eq!(p, d),
                            (p, d) => panic!("seed {seed}: plan {p:?}, free {d:?}"),
                        }
                    }
                    _ => {}
                }
            }
        }
        assert!(
            compared[0] > 100 && compared[1] > 100,
            "both kinds seen: {compared:?}"
        );
    }

    #[test]
    fn a_pin_inside_a_free_run() {
        // ................   pin [6, 9)
        // ......^^^.......   the free run splits; the pinned blocks are out of reach
        let mut a = ExtentAllocator::new(16);
        let pin = a.pin(Extent::new(6, 3)).unwrap();
        assert_eq!(free_list(&a), [(0, 6), (9, 7)]);
        assert_eq!(a.stats().pinned_free_blocks, 3);
        assert_eq!(a.stats().free_blocks, 16, "pinned blocks are still Free");
        let e = a.allocate(Request::new(3).policy(Policy::Exact(6)));
        assert!(e.is_err(), "an exact claim of pinned blocks fails");
        let out = a.unpin(pin).unwrap();
        assert_eq!((out.unpinned_free_blocks, out.released_blocks), (3, 0));
        assert_eq!(free_list(&a), [(0, 16)], "the run coalesces again");
        a.check_invariants().unwrap();
    }

    #[test]
    fn a_free_that_straddles_two_pins() {
        // AAAAAAAAAAAAAAAA   allocate all 16
        //   ^^^     ^^       pins [2, 5) and [9, 11)
        // ..DDD....DD.....   free all: 11 Free now, 5 Deferred
        let mut a = ExtentAllocator::new(16);
        let all = a.allocate(Request::new(16)).unwrap();
        let p1 = a.pin(Extent::new(2, 3)).unwrap();
        let p2 = a.pin(Extent::new(9, 2)).unwrap();
        let out = a.free(all).unwrap();
        assert_eq!((out.freed_blocks, out.deferred_blocks), (11, 5));
        assert_eq!(free_list(&a), [(0, 2), (5, 4), (11, 5)]);
        // Unpinning the second pin releases only its blocks.
        assert_eq!(a.unpin(p2).unwrap().released_blocks, 2);
        assert_eq!(free_list(&a), [(0, 2), (5, 11)]);
        assert_eq!(a.unpin(p1).unwrap().released_blocks, 3);
        assert_eq!(free_list(&a), [(0, 16)]);
        a.check_invariants().unwrap();
    }

    #[test]
    fn a_nested_pin_released_in_a_different_order() {
        // AAAAAAAA           allocate [0, 8)
        // ^^^^^^^^           outer pin [0, 8)
        //   ^^^^             inner pin [2, 6): counts 1 1 2 2 2 2 1 1
        // DDDDDDDD           free all: all Deferred
        // ..DDDD..           unpin outer first: [0,2) and [6,8) released
        // ........           unpin inner: the rest released
        let mut a = ExtentAllocator::new(8);
        let all = a.allocate(Request::new(8)).unwrap();
        let outer = a.pin(all).unwrap();
        let inner = a.pin(Extent::new(2, 4)).unwrap();
        assert_eq!(a.free(all).unwrap().deferred_blocks, 8);
        assert_eq!(a.unpin(outer).unwrap().released_blocks, 4);
        assert_eq!(free_list(&a), [(0, 2), (6, 2)]);
        assert_eq!(a.stats().pinned_blocks, 4);
        assert_eq!(a.unpin(inner).unwrap().released_blocks, 4);
        assert_eq!(free_list(&a), [(0, 8)]);
        a.check_invariants().unwrap();
    }

    #[test]
    fn a_same_epoch_allocate_and_free() {
        // epoch 1: AAAA....   allocate [0, 4), commit: durable
        // epoch 2: AAAAAA..   allocate [4, 6) in the open epoch
        //          DDDD....   free_on_commit both: [0, 4) waits for the commit,
        //                     [4, 6) was never durable and is Free at once
        let mut a = ExtentAllocator::new(8);
        let old = a.allocate(Request::new(4)).unwrap();
        a.commit(1).unwrap();
        let new = a.allocate(Request::new(2)).unwrap();
        assert_eq!(new, Extent::new(4, 2));
        assert_eq!(a.free_on_commit(old).unwrap().deferred_blocks, 4);
        assert_eq!(a.free_on_commit(new).unwrap().freed_blocks, 2);
        assert_eq!(free_list(&a), [(4, 4)]);
        assert_eq!(a.durable_free_extents(), [Extent::new(4, 4)]);
        assert_eq!(a.commit(2).unwrap().released_blocks, 4);
        assert_eq!(free_list(&a), [(0, 8)]);
        a.check_invariants().unwrap();
    }

    #[test]
    fn a_reader_outlives_the_commit() {
        // AAAA....   allocate, commit 1; a reader begins in epoch 2
        // DDDD....   free_on_commit in epoch 2, commit 2: the reader still holds it
        // ........   the reader ends
        let mut a = ExtentAllocator::new(8);
        let e = a.allocate(Request::new(4)).unwrap();
        a.commit(1).unwrap();
        let reader = a.begin_read();
        a.free_on_commit(e).unwrap();
        assert_eq!(a.commit(2).unwrap().released_blocks, 0);
        assert_eq!(a.stats().deferred_by.epochs, 4);
        // A reader that begins after the commit does not hold epoch 2's frees.
        let late = a.begin_read();
        assert_eq!(a.end_read(reader).unwrap().released_blocks, 4);
        a.end_read(late).unwrap();
        assert_eq!(free_list(&a), [(0, 8)]);
        a.check_invariants().unwrap();
    }
}
