//! Where blocks leave Allocated and leave Deferred. Every Allocated → Free/Deferred
//! and every Deferred → Free transition goes through the two functions here.

use alloc::vec::Vec;
use core::ops::Range;

use super::ExtentAllocator;
use super::free::FreeOutcome;
use super::ranges::set_gaps;

impl ExtentAllocator {
    /// Allocated → Free or Deferred, for a range already checked to be Allocated and
    /// not under a blocking pin. Blocks with no hold become Free at once; the rest
    /// become Deferred, remembering the epoch that readers are measured against:
    ///
    /// - a plain free: the open epoch;
    /// - `free_on_commit` of durable blocks: the open epoch, and pending its commit;
    /// - `free_on_commit` of blocks allocated in the open epoch: epoch 0, which no
    ///   reader began at or before. Readers see committed state only, so they never saw
    ///   these blocks; only pins can hold them.
    pub(super) fn release_allocated(
        &mut self,
        r: Range<u64>,
        on_commit: bool,
        pinned: bool,
    ) -> FreeOutcome {
        let len = r.end - r.start;
        // The common case: a plain free with no pin and no reader to hold the blocks.
        if !on_commit && !pinned && self.epochs.oldest_reader().is_none() {
            self.epochs.note_freed(&r);
            self.free.insert(r.start, len);
            return FreeOutcome {
                freed_blocks: len,
                deferred_blocks: 0,
            };
        }
        let open = self.epochs.open;
        let (pending, never_durable) = if on_commit {
            self.epochs.split_durable(&r)
        } else {
            (Vec::new(), Vec::new())
        };
        self.epochs.note_freed(&r);
        let readers_hold = !on_commit && self.epochs.oldest_reader().is_some();
        if pending.is_empty() && !readers_hold && !pinned {
            self.free.insert(r.start, len);
            return FreeOutcome {
                freed_blocks: len,
                deferred_blocks: 0,
            };
        }
        if on_commit {
            for p in pending {
                self.defer(p, open, true);
            }
            for p in never_durable {
                self.defer(p, 0, false);
            }
        } else {
            self.defer(r.clone(), open, false);
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

    /// Deferred → Free for every block of `within` that nothing holds any more: no pin,
    /// not waiting for a commit, and no live reader that began at or before the epoch
    /// it was freed in. Returns the blocks released.
    pub(super) fn release_unheld(&mut self, within: &Range<u64>) -> u64 {
        let oldest_reader = self.epochs.oldest_reader();
        let mut released = 0;
        for (piece, epoch) in self.deferrals.pieces(within) {
            if oldest_reader.is_some_and(|oldest| oldest <= epoch) {
                continue;
            }
            for unpinned in self.pins.zero_pieces(&piece) {
                for free in set_gaps(&self.deferrals.pending, &unpinned) {
                    let len = free.end - free.start;
                    self.deferrals.remove(free.clone());
                    self.pins.unmark_deferred(&free);
                    self.free.insert(free.start, len);
                    released += len;
                }
            }
        }
        released
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
