//! One allocation group: a core under its own lock, plus summaries that other threads
//! read without the lock to decide whether the group is worth locking.

use core::ops::{Deref, DerefMut, Range};

use super::SharedAllocator;
use crate::sync::{AtomicU64, GroupGuard, GroupMutex, Ordering};
use crate::{ExtentAllocator, InvariantViolation};

/// Aligned to two cache lines so that groups' locks and summaries never share one.
#[repr(align(128))]
#[derive(Debug)]
pub(crate) struct Group {
    /// The core for blocks `range`. It is built over `0..range.end` with every block
    /// below `range.start` Allocated forever, so extents keep global addresses.
    pub(crate) core: GroupMutex<ExtentAllocator>,
    pub(crate) range: Range<u64>,
    /// Free blocks not promised to a reservation, as of the last unlock.
    summary_free_blocks: AtomicU64,
    /// The longest free extent, as of the last unlock.
    summary_largest_free: AtomicU64,
    /// Deferred blocks, as of the last unlock; its sum over the groups is
    /// `SharedAllocator::count_deferred_blocks`.
    published_deferred: AtomicU64,
}

impl Group {
    /// The published summaries, for the failure-atomicity checks.
    #[cfg(feature = "testing")]
    pub(crate) fn published(&self) -> [u64; 3] {
        [
            self.summary_free_blocks.load(Ordering::Relaxed),
            self.summary_largest_free.load(Ordering::Relaxed),
            self.published_deferred.load(Ordering::Relaxed),
        ]
    }

    pub(crate) fn new(range: Range<u64>, core: ExtentAllocator) -> Self {
        Group {
            core: GroupMutex::new(core),
            range,
            summary_free_blocks: AtomicU64::new(0),
            summary_largest_free: AtomicU64::new(0),
            published_deferred: AtomicU64::new(0),
        }
    }

    /// The longest request [`might_fit`](Self::might_fit) says yes to.
    pub(crate) fn might_fit_up_to(&self) -> u64 {
        self.summary_largest_free
            .load(Ordering::Relaxed)
            .min(self.summary_free_blocks.load(Ordering::Relaxed))
    }

    /// Whether the summaries say a request of `min_len` blocks might fit. Read without
    /// the lock, so it may be stale; a wrong guess costs one lock.
    #[inline]
    pub(crate) fn might_fit(&self, min_len: u64) -> bool {
        self.summary_largest_free.load(Ordering::Relaxed) >= min_len
            && self.summary_free_blocks.load(Ordering::Relaxed) >= min_len
    }

    /// The summaries and published Deferred count equal the core's.
    pub(crate) fn check_summary(
        &self,
        g: usize,
        core: &ExtentAllocator,
    ) -> Result<(), InvariantViolation> {
        let pairs = [
            (
                "free",
                self.summary_free_blocks.load(Ordering::SeqCst),
                core.count_unreserved_free_blocks(),
            ),
            (
                "largest free",
                self.summary_largest_free.load(Ordering::SeqCst),
                core.largest_free_len(),
            ),
            (
                "deferred",
                self.published_deferred.load(Ordering::SeqCst),
                core.count_deferred_blocks(),
            ),
        ];
        for (what, published, actual) in pairs {
            if published != actual {
                return Err(InvariantViolation {
                    number: 3,
                    detail: alloc::format!(
                        "group {g} publishes {published} {what} blocks, its core has {actual}"
                    ),
                });
            }
        }
        Ok(())
    }

    /// Publishes the core's summaries, and moves the shared Deferred total by the
    /// change. Called with the lock held, as it is released.
    #[inline]
    fn publish(&self, core: &ExtentAllocator, total_deferred: &AtomicU64) {
        self.summary_free_blocks
            .store(core.count_unreserved_free_blocks(), Ordering::Relaxed);
        self.summary_largest_free
            .store(core.largest_free_len(), Ordering::Relaxed);
        // Only lock holders write it, so a load and a store under the lock suffice,
        // and the shared total is touched only when the count moved.
        let now = core.count_deferred_blocks();
        let before = self.published_deferred.load(Ordering::Relaxed);
        if now != before {
            self.published_deferred.store(now, Ordering::Relaxed);
            // Wrapping arithmetic moves the total down as well as up.
            total_deferred.fetch_add(now.wrapping_sub(before), Ordering::SeqCst);
        }
    }

    /// Counts `blocks` as Deferred ahead of the free that will defer them, so that the
    /// free's own publish sees no change. Only with the lock held.
    pub(crate) fn prepublish_deferred(&self, blocks: u64) {
        self.published_deferred.fetch_add(blocks, Ordering::SeqCst);
    }
}

/// A locked group; republishes its summaries when dropped.
pub(crate) struct Locked<'a> {
    shared: &'a SharedAllocator,
    pub(crate) index: usize,
    core: GroupGuard<'a, ExtentAllocator>,
}

impl<'a> Locked<'a> {
    #[inline]
    pub(crate) fn new(shared: &'a SharedAllocator, index: usize) -> Self {
        Locked {
            shared,
            index,
            core: shared.groups[index].core.lock(),
        }
    }

    pub(crate) fn group(&self) -> &'a Group {
        &self.shared.groups[self.index]
    }
}

impl Deref for Locked<'_> {
    type Target = ExtentAllocator;
    #[inline]
    fn deref(&self) -> &ExtentAllocator {
        &self.core
    }
}

impl DerefMut for Locked<'_> {
    #[inline]
    fn deref_mut(&mut self) -> &mut ExtentAllocator {
        &mut self.core
    }
}

impl Drop for Locked<'_> {
    #[inline]
    fn drop(&mut self) {
        self.shared.groups[self.index].publish(&self.core, &self.shared.count_deferred_blocks);
    }
}
