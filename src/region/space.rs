//! [`Space`]: a backing's blocks and who holds them. The allocator over them, the
//! blocks no handle owns, and the discard counters, kept beside the backing so that
//! `span.rs` makes every block-state change itself and its soundness depends on no
//! code outside this module.

use core::ops::Range;
use std::format;
use std::vec::Vec;

use rangemap::RangeSet;

use super::span::{Gate, Sweep};
use crate::backing::Backing;
use crate::sync::{AtomicU64, Mutex, Ordering};
use crate::{BlockState, Extent, InvariantViolation, SharedAllocator};

/// A backing cut into blocks, with the allocator that hands them out.
pub(crate) struct Space<B: Backing> {
    pub(crate) backing: B,
    /// Hands out blocks `0..backed`; block `b` is bytes `b * block_bytes..` of the
    /// backing. Its capacity is what the backing may grow to, `capacity * block_bytes
    /// <= backing.max_len_bytes()`, and blocks `backed..capacity` are held Allocated
    /// by the space itself (owned by no span, not detached) until a growth frees them.
    pub(crate) allocator: SharedAllocator,
    /// Blocks the backing has now: `backed * block_bytes <= backing.len_bytes()`.
    backed: AtomicU64,
    /// Taken by a growth or a shrink, so that one runs at a time.
    pub(super) resizing: Mutex<()>,
    pub(crate) block_bytes: u64,
    /// Whether bytes are discarded when their blocks become Free.
    pub(crate) discard: bool,
    /// Allocated blocks that no span covers: Allocated at open time, or detached from
    /// their span. Only `Span::attach` takes blocks out of it.
    detached: Mutex<RangeSet<u64>>,
    /// Blocks freed on commit through a handle, waiting for their sweep (`span.rs`).
    pub(super) gates: Mutex<Vec<Gate>>,
    discards: AtomicU64,
    discarded_bytes: AtomicU64,
    discard_failures: AtomicU64,
}

/// What [`Space::counts`] reports.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SpaceCounts {
    pub(crate) detached_blocks: u64,
    pub(crate) discards: u64,
    pub(crate) discarded_bytes: u64,
    pub(crate) discard_failures: u64,
}

impl<B: Backing> Space<B> {
    /// Blocks of `block_bytes` over `backing`, handed out by `allocator`: those the
    /// backing has now (`backed`) that are not Free are detached (owned by no span
    /// yet), and the rest, up to the allocator's capacity, the space's own.
    ///
    /// # Panics
    ///
    /// If the allocator's blocks do not fit what the backing may grow to, or its
    /// blocks past what it has now are Free: a bug in the caller, and a hard stop
    /// because byte ranges are computed from blocks.
    pub(crate) fn new(
        backing: B,
        block_bytes: u64,
        allocator: SharedAllocator,
        discard: bool,
    ) -> Self {
        let capacity = allocator.capacity_blocks();
        // What the backing may reach: at least what it has, whatever it says.
        let reach = backing.max_len_bytes().max(backing.len_bytes());
        assert!(
            block_bytes > 0
                && capacity
                    .checked_mul(block_bytes)
                    .is_some_and(|b| b <= reach),
            "{capacity} blocks of {block_bytes} bytes do not fit a {reach}-byte backing",
        );
        let backed = (backing.len_bytes() / block_bytes).min(capacity);
        let mut detached = RangeSet::new();
        let mut at = 0;
        for e in allocator
            .free_extents()
            .into_iter()
            .chain([Extent::new(backed, 0)])
        {
            assert!(
                e.start + e.len <= backed,
                "free blocks past the backing: {e}"
            );
            if at < e.start {
                detached.insert(at..e.start);
            }
            at = e.start + e.len;
        }
        Self {
            backing,
            allocator,
            block_bytes,
            discard,
            detached: Mutex::new(detached),
            backed: AtomicU64::new(backed),
            resizing: Mutex::new(()),
            gates: Mutex::new(Vec::new()),
            discards: AtomicU64::new(0),
            discarded_bytes: AtomicU64::new(0),
            discard_failures: AtomicU64::new(0),
        }
    }

    /// Blocks the backing has now.
    pub(crate) fn backed(&self) -> u64 {
        self.backed.load(Ordering::Acquire)
    }

    /// Sets the blocks the backing has; the caller holds `resizing`.
    pub(super) fn set_backed(&self, blocks: u64) {
        self.backed.store(blocks, Ordering::Release);
    }

    /// The bytes of an extent the allocator handed out (in range, so the products
    /// cannot overflow: they are at most the backing's length).
    pub(crate) fn bytes_of(&self, extent: Extent) -> Range<u64> {
        extent.start * self.block_bytes..(extent.start + extent.len) * self.block_bytes
    }

    /// The blocks of block-aligned bytes.
    pub(crate) fn blocks_of(&self, bytes: &Range<u64>) -> Extent {
        debug_assert_eq!(bytes.start % self.block_bytes, 0);
        debug_assert_eq!(bytes.end % self.block_bytes, 0);
        Extent::new(
            bytes.start / self.block_bytes,
            (bytes.end - bytes.start) / self.block_bytes,
        )
    }

    /// Takes `extent` out of the detached set if every block of it is there.
    pub(super) fn take_detached(&self, extent: Extent) -> bool {
        let Some(end) = extent.checked_end().filter(|_| !extent.is_empty()) else {
            return false;
        };
        let range = extent.start..end;
        let mut detached = self.detached.lock();
        let covered = detached
            .overlapping(&range)
            .any(|r| r.start <= range.start && range.end <= r.end);
        if covered {
            detached.remove(range);
        }
        covered
    }

    /// Puts blocks no span covers any more, still Allocated, in the detached set.
    pub(super) fn put_detached(&self, extent: Extent) {
        if !extent.is_empty() {
            self.detached
                .lock()
                .insert(extent.start..extent.start + extent.len);
        }
    }

    /// The detached extents, in address order.
    pub(crate) fn detached_extents(&self) -> Vec<Extent> {
        let detached = self.detached.lock();
        detached
            .iter()
            .map(|r| Extent::new(r.start, r.end - r.start))
            .collect()
    }

    pub(super) fn count_discard(&self, bytes: &Range<u64>) {
        if !bytes.is_empty() {
            self.discards.fetch_add(1, Ordering::Relaxed);
            self.discarded_bytes
                .fetch_add(bytes.end - bytes.start, Ordering::Relaxed);
        }
    }

    pub(super) fn count_discard_failure(&self) {
        self.discard_failures.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn counts(&self) -> SpaceCounts {
        let detached_blocks = self.detached.lock().iter().map(|r| r.end - r.start).sum();
        SpaceCounts {
            detached_blocks,
            discards: self.discards.load(Ordering::Relaxed),
            discarded_bytes: self.discarded_bytes.load(Ordering::Relaxed),
            discard_failures: self.discard_failures.load(Ordering::Relaxed),
        }
    }

    /// Every block Free again, as a new space: discarded first (when discards are on),
    /// then the allocator reset and the detached set emptied. `&mut` is the proof
    /// that no handle is alive.
    ///
    /// # Errors
    ///
    /// The discard's; then nothing else changed.
    pub(crate) fn reset(&mut self) -> Result<(), crate::backing::BackingError> {
        if self.discard {
            super::span::discard_all(self)?;
        }
        self.allocator.reset();
        *self.detached.get_mut() = RangeSet::new();
        self.gates.get_mut().clear();
        self.hold_unbacked();
        Ok(())
    }

    /// Takes the blocks past the backing (all Free) as the space's own, after a
    /// reset.
    fn hold_unbacked(&self) {
        let (backed, capacity) = (self.backed(), self.allocator.capacity_blocks());
        if backed < capacity {
            let held = self
                .allocator
                .take_free_run(Extent::new(backed, capacity - backed));
            debug_assert!(held.is_ok(), "{held:?}");
        }
    }

    /// Registers blocks freed on commit behind a gate, and releases them at once if
    /// nothing else holds them (blocks allocated in the open epoch, never committed).
    /// Returns the blocks that became Free.
    pub(super) fn add_gate(&self, gate: Gate) -> u64 {
        let pin = gate.pin();
        self.gates.lock().push(gate);
        super::span::sweep(self, Sweep::Pin(pin))
    }

    /// The allocator's invariants, no detached block Free, and no gated block Free
    /// or detached.
    pub(crate) fn check_invariants(&self) -> Result<(), InvariantViolation> {
        self.allocator.check_invariants()?;
        let free = self.allocator.free_extents();
        let (backed, capacity) = (self.backed(), self.allocator.capacity_blocks());
        if backed < capacity {
            let tail: Vec<_> = self.allocator.runs(backed..capacity).collect();
            if tail.len() != 1 || tail[0].state != BlockState::Allocated || tail[0].pins != 0 {
                return Err(InvariantViolation {
                    number: 2,
                    detail: format!(
                        "the blocks past the backing are not the space's own: {tail:?}"
                    ),
                });
            }
        }
        let gated: Vec<Extent> = self.gates.lock().iter().map(Gate::extent).collect();
        for &e in &gated {
            let loose = self
                .allocator
                .runs(e.start..e.start + e.len)
                .find(|r| r.pins == 0 || r.state == BlockState::Free);
            if let Some(r) = loose {
                return Err(InvariantViolation {
                    number: 2,
                    detail: format!(
                        "gated blocks {} are {:?} with {} pins",
                        r.extent, r.state, r.pins
                    ),
                });
            }
        }
        let detached = self.detached.lock();
        for e in free {
            if let Some(d) = detached.overlapping(&(e.start..e.start + e.len)).next() {
                return Err(InvariantViolation {
                    number: 2,
                    detail: format!("detached blocks {d:?} are Free, in {e}"),
                });
            }
        }
        for e in gated {
            if let Some(d) = detached.overlapping(&(e.start..e.start + e.len)).next() {
                return Err(InvariantViolation {
                    number: 2,
                    detail: format!("gated blocks {e} are detached, in {d:?}"),
                });
            }
        }
        Ok(())
    }
}
