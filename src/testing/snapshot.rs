//! Field-by-field comparisons, for failure-atomicity checks.

use std::string::String;

use crate::{ExtentAllocator, SharedAllocator};

/// The first field in which two allocators differ, by name: every field of the core,
/// node by node in its trees, except its identity (a clone has its own) and the free
/// index's lookup cache. `None` when they are equal.
///
/// Clone before a call that must fail, then compare:
///
/// ```
/// use pinalloc::testing::first_difference;
/// use pinalloc::{Extent, ExtentAllocator};
///
/// let mut alloc = ExtentAllocator::new(64);
/// let before = alloc.clone();
/// assert!(alloc.free(Extent::new(0, 4)).is_err()); // nothing is allocated
/// assert_eq!(first_difference(&before, &alloc), None);
/// ```
#[must_use]
pub fn first_difference(a: &ExtentAllocator, b: &ExtentAllocator) -> Option<&'static str> {
    a.first_difference(b)
}

/// A copy of a [`SharedAllocator`]'s whole state: every group's core field by field,
/// the summaries each group published, the epochs and readers, the tracked pins with
/// their owners and quotas, and the Deferred total. It leaves out only the activity
/// counters (waits, pressure calls, revocations, caught panics), which count failed
/// attempts too.
///
/// ```
/// use pinalloc::testing::SharedSnapshot;
/// use pinalloc::{Extent, SharedAllocator};
///
/// let alloc = SharedAllocator::new(64);
/// let before = SharedSnapshot::of(&alloc);
/// assert!(alloc.free(Extent::new(0, 4)).is_err());
/// assert_eq!(before.first_difference(&SharedSnapshot::of(&alloc)), None);
/// ```
#[derive(Debug)]
pub struct SharedSnapshot(crate::shared::Snapshot);

impl SharedSnapshot {
    /// Copies `alloc`'s state, locking one part at a time. Take it when no
    /// other thread is using the allocator.
    #[must_use]
    pub fn of(alloc: &SharedAllocator) -> Self {
        SharedSnapshot(crate::shared::Snapshot::of(alloc))
    }

    /// What differs, by name, or `None`.
    #[must_use]
    pub fn first_difference(&self, other: &Self) -> Option<String> {
        self.0.first_difference(&other.0)
    }
}
