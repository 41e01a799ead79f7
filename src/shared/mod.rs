//! [`SharedAllocator`]: the core made safe and fast for many threads.

mod allocate;
mod epochs;
mod error;
mod free;
#[cfg(feature = "async")]
mod future;
mod group;
mod pins;
mod reentry;
mod reserve;
mod resize;
mod signal;
mod stats;

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::ops::Range;
use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::sync::{AtomicU64, AtomicUsize, Mutex, Ordering};
use crate::{BuildError, Extent, ExtentAllocator};
use epochs::EpochState;
use group::{Group, Locked};
use pins::Tracked;
use signal::Signal;

pub use allocate::Pressure;
pub use epochs::ReadGuard;
pub use error::{LimitError, SharedAllocError, SharedFreeError, SharedPinError, WaitError};
#[cfg(feature = "async")]
pub use future::{AllocateWhenFits, WhenReleased};
pub use pins::{PinGuard, PinOptions, Revocation, RevokeReport, SharedPinId, SharedPinInfo};
pub use reserve::SharedReservation;
pub use stats::{GroupStats, SharedCounters, SharedStats};

/// Groups never get smaller than this by default, so small spaces stay one group.
const DEFAULT_MIN_GROUP_BLOCKS: u64 = 4096;
/// The default number of allocation groups on a large space. Many groups keep threads
/// (and a thread pinning in a loop) out of each other's locks; the price is the
/// longest extent (a group) and global calls (commit, stats) that visit every group.
const DEFAULT_GROUPS: u64 = 64;
/// See [`SharedAllocator::MAX_GROUPS`].
const MAX_GROUPS: u64 = 1 << 16;

/// The callback type of [`SharedAllocator::set_pressure_hook`].
pub(crate) type PressureHook = Arc<dyn Fn(&Pressure) + Send + Sync>;

/// A value alone on its cache lines (two, for the adjacent-line prefetcher). Every
/// free reads the wake-up signal's waiter count (and moves its generation when someone
/// waits) and every pin takes a number from the pin counter; on one line, a thread
/// pinning beside a thread freeing would take the line from it on every call.
#[repr(align(128))]
#[derive(Debug)]
struct OwnLine<T>(T);

impl<T> core::ops::Deref for OwnLine<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

/// A thread-safe extent allocator: the core's verbs on `&self`, split into allocation
/// groups so that threads working in different groups never wait for each other.
///
/// # How it is built
///
/// - The space is cut into allocation groups of equal size (the last may be shorter).
///   Each is an independent [`ExtentAllocator`] under its own lock, and an allocated
///   extent never spans two groups, as with XFS allocation groups. So no single
///   allocation can be longer than a group.
/// - A group's lock is taken with one compare-and-swap and let go with a plain store,
///   since every allocate and free takes one and almost always finds it free. Nothing
///   sleeps on it to be woken: a thread that finds it held spins briefly, then yields,
///   then naps for 1 µs, doubling up to 64 µs, between tries, and while one naps no
///   thread arriving takes the lock ahead of it. It is held for one core operation,
///   or, by the calls that take every group (a commit, a reader's first begin,
///   `stats`, a full check), for as long as those take.
/// - An allocation starts in the group of its goal ([`Policy::Near`](crate::Policy),
///   [`Policy::Exact`](crate::Policy)), at group 0 for first fit, or else at a
///   per-thread rotor, and moves on to other groups using per-group summaries (free
///   blocks, longest free extent) read without taking a lock. Best fit is therefore
///   best fit within a group.
/// - Pinning, freeing and waiting lock only the groups the extent touches, so pinning an
///   allocated extent never waits for an allocation in another group.
/// - Epochs are global: [`commit`](Self::commit) and the first reader of an epoch take
///   every group's lock at once, so each free lands wholly before or wholly after a
///   commit.
/// - The lock order is written down in one place, the crate's `sync` module; no user
///   callback ever runs under an internal lock, and a callback that panics is caught,
///   counted in [`SharedCounters::callback_panics`], and leaves the allocator consistent
///   and usable.
///
/// # Under pressure
///
/// - [`allocate_wait`](Self::allocate_wait) and [`wait_released`](Self::wait_released)
///   block until releases satisfy them, or until a timeout.
/// - A [pressure hook](Self::set_pressure_hook) runs when an allocation fails but held
///   space would satisfy it, together with the revoke callbacks of the
///   [leases](PinOptions::on_revoke) whose release could let it fit; then the
///   allocation is retried once. A round asks at most 64 leases, found among at
///   most 1,024 held ranges (Deferred runs and pinned Free ranges), and the next
///   round goes on where it stopped: its cost does not grow with the leases
///   elsewhere, and over rounds every lease that could help is asked.
/// - Limits: a quota of pinned blocks per owner and a cap on Deferred blocks, set on the
///   [builder](SharedBuilder).
///
/// # Example
///
/// ```
/// use std::thread;
/// use pinalloc::{Request, SharedAllocator};
///
/// let alloc = SharedAllocator::new(1 << 20);
/// thread::scope(|s| {
///     for _ in 0..4 {
///         s.spawn(|| {
///             for _ in 0..100 {
///                 let e = alloc.allocate(Request::new(8)).unwrap();
///                 let dma = alloc.pin(e).unwrap(); // unpins when dropped
///                 alloc.free(e).unwrap();          // deferred while pinned
///                 drop(dma);                       // now Free
///             }
///         });
///     }
/// });
/// assert_eq!(alloc.stats().space.free_blocks, 1 << 20);
/// alloc.check_invariants()?;
/// # Ok::<(), pinalloc::InvariantViolation>(())
/// ```
pub struct SharedAllocator {
    /// Blocks `0..capacity` are managed.
    capacity: u64,
    /// Blocks per group; the last group may have fewer.
    group_blocks: u64,
    /// Built with one group: `grow` grows it rather than adding groups.
    one_group: bool,
    groups: Box<[Group]>,
    /// Wakes `allocate_wait`, `wait_released` and `revoke` after releases.
    signal: OwnLine<Signal>,
    /// The open epoch and the live readers.
    epochs: Mutex<EpochState>,
    /// Pins with an owner, a revoke callback, or more than one group.
    tracked: Mutex<Tracked>,
    /// Pins made so far, in every group: numbers them in one sequence.
    count_pins_made: OwnLine<AtomicU64>,
    pressure_hook: Mutex<Option<PressureHook>>,
    /// Pressure rounds running now, over all threads (see `reentry`).
    pressure_rounds: AtomicUsize,
    /// Hands each thread that allocates here first its first group, spreading threads
    /// over groups (see `allocate.rs`).
    next_rotor: AtomicUsize,
    /// Where the last pressure round stopped: the next one goes on from there, so
    /// that bounded rounds reach every held range, and every lease on it, in turn.
    pressure_cursor: Mutex<pins::PressureCursor>,
    /// Cap on Deferred blocks, if any.
    deferred_cap_blocks: Option<u64>,
    /// Sum of every group's published Deferred blocks.
    count_deferred_blocks: AtomicU64,
    /// The 64-bit tokens of live pins that were given one.
    tokens: Mutex<crate::tokens::Tokens<SharedPinId>>,
    /// Pins with a token: unpins ask `tokens` only when some have.
    live_tokens: AtomicU64,
    /// Live readers, kept beside the reader table (changed under `epochs`) so that a
    /// region can tell without a lock whether a free may be held back by one.
    live_readers: AtomicU64,
    counters: stats::AtomicCounters,
    /// Tells this allocator's handles from another's.
    uid: u64,
}

/// A copy of a [`SharedAllocator`]'s whole state, for the failure-atomicity checks
/// (`testing::SharedSnapshot`): every group's core, field by field, the published
/// summaries, the epochs and readers, the tracked pins, quotas and owners' totals,
/// and the Deferred total. Not the activity counters (waits, pressure calls, caught
/// panics), which count attempts, failed ones included.
#[cfg(feature = "testing")]
#[derive(Debug)]
pub(crate) struct Snapshot {
    cores: Vec<ExtentAllocator>,
    rest: Vec<(&'static str, alloc::string::String)>,
}

#[cfg(feature = "testing")]
impl Snapshot {
    pub(crate) fn of(a: &SharedAllocator) -> Self {
        use alloc::format;
        // One lock at a time, never two together: each group, then the shared records.
        let cores = a.groups.iter().map(|g| g.core.lock().clone()).collect();
        let published: Vec<[u64; 3]> = a.groups.iter().map(Group::published).collect();
        let rest = alloc::vec![
            ("group summaries", format!("{published:?}")),
            ("epochs", a.epochs.lock().describe()),
            ("tracked pins", a.tracked.lock().describe()),
            ("tokens", format!("{:?}", a.tokens.lock())),
            (
                "deferred blocks",
                format!("{}", a.count_deferred_blocks.load(Ordering::Relaxed)),
            ),
        ];
        Snapshot { cores, rest }
    }

    /// The first difference, by name.
    pub(crate) fn first_difference(&self, other: &Self) -> Option<alloc::string::String> {
        for (g, (a, b)) in self.cores.iter().zip(&other.cores).enumerate() {
            if let Some(field) = a.first_difference(b) {
                return Some(alloc::format!("group {g}: `{field}`"));
            }
        }
        self.rest
            .iter()
            .zip(&other.rest)
            .find(|(a, b)| a != b)
            .map(|((name, a), (_, b))| alloc::format!("{name}: {a} became {b}"))
    }
}

impl fmt::Debug for SharedAllocator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedAllocator")
            .field("capacity", &self.capacity)
            .field("group_blocks", &self.group_blocks)
            .field("groups", &self.groups.len())
            .field("deferred_cap_blocks", &self.deferred_cap_blocks)
            .finish_non_exhaustive()
    }
}

/// Settings for a [`SharedAllocator`]; from [`SharedAllocator::builder`].
///
/// ```
/// use pinalloc::SharedAllocator;
///
/// let alloc = SharedAllocator::builder(1 << 20)
///     .groups(8)
///     .deferred_cap_blocks(1 << 16)
///     .pin_quota_blocks(4096)
///     .build();
/// assert_eq!(alloc.group_count(), 8);
/// assert_eq!(alloc.group_blocks(), 1 << 17);
/// ```
#[derive(Debug, Clone)]
pub struct SharedBuilder {
    capacity: u64,
    groups: Option<u64>,
    deferred_cap_blocks: Option<u64>,
    pin_quota_blocks: Option<u64>,
}

impl SharedBuilder {
    /// The number of allocation groups. The default is 64, but never groups smaller
    /// than 4096 blocks, so spaces under 8192 blocks are one group. A count of 0 is
    /// taken as 1, and the count never exceeds the capacity nor [`SharedAllocator::MAX_GROUPS`]
    /// (65,536): a larger count is taken as the largest allowed, so that no number
    /// passed here can exhaust memory. [`SharedAllocator::group_count`] says what was
    /// built. Groups are of equal size but the last, which may be shorter, so the
    /// count built can be below the one asked for (100 blocks in 7 groups of 15 is 7
    /// groups; in 60 groups of 2 it is 50).
    ///
    /// ```
    /// let alloc = pinalloc::SharedAllocator::builder(100).groups(3).build();
    /// assert_eq!((alloc.group_count(), alloc.group_blocks()), (3, 34));
    /// ```
    #[must_use]
    pub fn groups(mut self, count: u64) -> Self {
        self.groups = Some(count);
        self
    }

    /// A cap on Deferred blocks: a free that would pass it fails with
    /// [`LimitError::DeferredCap`] and changes nothing. No cap by default.
    ///
    /// ```
    /// use pinalloc::{LimitError, Request, SharedAllocator, SharedFreeError};
    ///
    /// let alloc = SharedAllocator::builder(64).deferred_cap_blocks(4).build();
    /// let e = alloc.allocate(Request::new(8))?;
    /// let _dma = alloc.pin(e)?;
    /// let err = alloc.free(e).unwrap_err();
    /// assert!(matches!(err, SharedFreeError::Limit(LimitError::DeferredCap { would_defer_blocks: 8, .. })));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn deferred_cap_blocks(mut self, cap_blocks: u64) -> Self {
        self.deferred_cap_blocks = Some(cap_blocks);
        self
    }

    /// The quota of pinned blocks for every owner that has no quota of its own (see
    /// [`SharedAllocator::set_pin_quota`]). Only pins that name an
    /// [owner](PinOptions::owner) count. No quota by default.
    ///
    /// ```
    /// use pinalloc::{Extent, PinOptions, SharedAllocator};
    ///
    /// let alloc = SharedAllocator::builder(64).pin_quota_blocks(4).build();
    /// assert!(alloc.pin_with(Extent::new(0, 4), PinOptions::new().owner(1)).is_ok());
    /// assert!(alloc.pin_with(Extent::new(0, 5), PinOptions::new().owner(2)).is_err());
    /// assert!(alloc.pin(Extent::new(0, 64)).is_ok()); // no owner, no quota
    /// ```
    #[must_use]
    pub fn pin_quota_blocks(mut self, quota_blocks: u64) -> Self {
        self.pin_quota_blocks = Some(quota_blocks);
        self
    }

    /// An allocator with every block Free.
    ///
    /// ```
    /// let alloc = pinalloc::SharedAllocator::builder(1 << 20).build();
    /// assert_eq!(alloc.group_count(), 64);
    /// ```
    #[must_use]
    pub fn build(self) -> SharedAllocator {
        let all = [Extent::new(0, self.capacity)];
        let free: &[Extent] = if self.capacity == 0 { &[] } else { &all };
        self.assemble(free)
    }

    /// An allocator whose Free blocks are exactly `free` (mount time), as
    /// [`ExtentAllocator::from_free_extents`]. Free extents may span groups.
    ///
    /// # Errors
    ///
    /// As [`ExtentAllocator::from_free_extents`].
    ///
    /// ```
    /// use pinalloc::{Extent, SharedAllocator};
    ///
    /// let alloc = SharedAllocator::builder(100).groups(2)
    ///     .from_free_extents([Extent::new(40, 20)])?;
    /// assert_eq!(alloc.free_extents(), [Extent::new(40, 20)]);
    /// # Ok::<(), pinalloc::BuildError>(())
    /// ```
    pub fn from_free_extents(
        self,
        free: impl IntoIterator<Item = Extent>,
    ) -> Result<SharedAllocator, BuildError> {
        let whole = ExtentAllocator::from_free_extents(self.capacity, free)?;
        let list: Vec<Extent> = whole.free_extents().collect();
        Ok(self.assemble(&list))
    }

    /// An allocator whose Allocated blocks are exactly `allocated` (mount time), as
    /// [`ExtentAllocator::from_allocated_extents`].
    ///
    /// # Errors
    ///
    /// As [`ExtentAllocator::from_allocated_extents`].
    ///
    /// ```
    /// use pinalloc::{Extent, SharedAllocator};
    ///
    /// let alloc = SharedAllocator::builder(100).groups(2)
    ///     .from_allocated_extents([Extent::new(45, 10)])?;
    /// alloc.free(Extent::new(45, 10))?; // an extent across the group boundary
    /// assert_eq!(alloc.free_extents(), [Extent::new(0, 100)]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_allocated_extents(
        self,
        allocated: impl IntoIterator<Item = Extent>,
    ) -> Result<SharedAllocator, BuildError> {
        let whole = ExtentAllocator::from_allocated_extents(self.capacity, allocated)?;
        let list: Vec<Extent> = whole.free_extents().collect();
        Ok(self.assemble(&list))
    }

    /// Cuts the space into groups; `free` is sorted, disjoint and in bounds.
    fn assemble(self, free: &[Extent]) -> SharedAllocator {
        let capacity = self.capacity;
        let wanted = self
            .groups
            .unwrap_or_else(|| (capacity / DEFAULT_MIN_GROUP_BLOCKS).clamp(1, DEFAULT_GROUPS))
            .clamp(1, capacity.clamp(1, MAX_GROUPS));
        let group_blocks = capacity.div_ceil(wanted).max(1);
        let count = capacity.div_ceil(group_blocks).max(1);
        debug_assert!(count <= MAX_GROUPS);
        let groups: Box<[Group]> = (0..count)
            .map(|g| {
                // `g < count`, so `start < capacity` (or both are 0): no overflow, and
                // the group's end is computed from what is left, never past 2^64.
                let start = g
                    .checked_mul(group_blocks)
                    .expect("a group's start lies inside the space");
                let end = start + (capacity - start).min(group_blocks);
                let pieces = free.iter().filter_map(|e| {
                    let s = e.start.max(start);
                    let t = (e.start + e.len).min(end);
                    (s < t).then(|| Extent::new(s, t - s))
                });
                // Blocks below `start` are outside this group: the core sees them as
                // Allocated forever, so extents keep their global addresses.
                let core = ExtentAllocator::from_free_extents(end, pieces)
                    .expect("pieces of a checked free list are valid");
                Group::new(start..end, core)
            })
            .collect();
        let shared = SharedAllocator {
            capacity,
            group_blocks,
            one_group: count == 1,
            groups,
            signal: OwnLine(Signal::new()),
            epochs: Mutex::new(EpochState::new()),
            tracked: Mutex::new(Tracked::new(self.pin_quota_blocks)),
            count_pins_made: OwnLine(AtomicU64::new(0)),
            pressure_hook: Mutex::new(None),
            pressure_rounds: AtomicUsize::new(0),
            next_rotor: AtomicUsize::new(0),
            pressure_cursor: Mutex::new(pins::PressureCursor::default()),
            deferred_cap_blocks: self.deferred_cap_blocks,
            count_deferred_blocks: AtomicU64::new(0),
            tokens: Mutex::new(Default::default()),
            live_tokens: AtomicU64::new(0),
            live_readers: AtomicU64::new(0),
            counters: stats::AtomicCounters::default(),
            uid: crate::allocator::next_uid(),
        };
        for g in 0..shared.groups.len() {
            drop(shared.lock(g)); // publishes the first summaries
        }
        shared
    }
}

/// The part of `extent` inside `range`, which it overlaps.
fn clip(extent: Extent, range: &Range<u64>) -> Extent {
    let start = extent.start.max(range.start);
    let end = (extent.start + extent.len).min(range.end);
    debug_assert!(start < end, "{extent} does not overlap {range:?}");
    Extent::new(start, end - start)
}

impl SharedAllocator {
    /// The most allocation groups a space is cut into: 65,536. Each group is a core
    /// under its own lock, so a count passed to [`SharedBuilder::groups`] by mistake
    /// cannot take the machine's memory.
    ///
    /// ```
    /// use pinalloc::SharedAllocator;
    /// let alloc = SharedAllocator::builder(u64::MAX).groups(u64::MAX).build();
    /// assert_eq!(alloc.group_count() as u64, SharedAllocator::MAX_GROUPS);
    /// ```
    pub const MAX_GROUPS: u64 = MAX_GROUPS;

    /// An allocator over blocks `0..capacity_blocks`, all Free, with default settings.
    ///
    /// ```
    /// let alloc = pinalloc::SharedAllocator::new(1 << 20);
    /// assert_eq!(alloc.capacity_blocks(), 1 << 20);
    /// ```
    #[must_use]
    pub fn new(capacity_blocks: u64) -> Self {
        Self::builder(capacity_blocks).build()
    }

    /// Settings for an allocator over `capacity_blocks`: see [`SharedBuilder`].
    ///
    /// ```
    /// let alloc = pinalloc::SharedAllocator::builder(1024).groups(4).build();
    /// assert_eq!(alloc.group_blocks(), 256);
    /// ```
    #[must_use]
    pub fn builder(capacity_blocks: u64) -> SharedBuilder {
        SharedBuilder {
            capacity: capacity_blocks,
            groups: None,
            deferred_cap_blocks: None,
            pin_quota_blocks: None,
        }
    }

    /// The number of managed blocks.
    ///
    /// ```
    /// assert_eq!(pinalloc::SharedAllocator::new(77).capacity_blocks(), 77);
    /// ```
    #[must_use]
    pub fn capacity_blocks(&self) -> u64 {
        self.capacity
    }

    /// Whether every block is Free: nothing Allocated, nothing Deferred (pins on Free
    /// blocks, readers and reservations may still be live). Reads each group under
    /// its own lock, one at a time: exact at a quiet point. O(groups).
    ///
    /// ```
    /// use pinalloc::{Request, SharedAllocator};
    /// let alloc = SharedAllocator::builder(64).groups(4).build();
    /// assert!(alloc.is_empty());
    /// let e = alloc.allocate(Request::new(2))?;
    /// assert!(!alloc.is_empty());
    /// alloc.free(e)?;
    /// assert!(alloc.is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn is_empty(&self) -> bool {
        (0..self.groups.len()).all(|g| {
            let range = &self.groups[g].range;
            self.lock(g).space_totals().0 == range.end - range.start
        })
    }

    /// Starts again, as the allocator was built, with its groups, quotas, Deferred
    /// cap and pressure hook: every block Free, every pin, lease, reader and
    /// reservation dropped, epoch 1 open, the counters at zero. It takes `&mut self`,
    /// so no guard or reservation borrows it; the ids kept past their guards
    /// ([`SharedPinId`], [`ReaderId`](crate::ReaderId)) belong to the allocator as it
    /// was: every call refuses them as unknown.
    ///
    /// ```
    /// use pinalloc::{Extent, Request, SharedAllocator};
    /// let mut alloc = SharedAllocator::builder(64).groups(4).build();
    /// alloc.allocate(Request::new(16))?;
    /// let pin = alloc.pin(Extent::new(0, 2))?.into_id();
    /// alloc.reset();
    /// assert!(alloc.is_empty());
    /// assert!(alloc.unpin(pin).is_err());
    /// assert_eq!(alloc.stats().space.live_pins, 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn reset(&mut self) {
        for g in 0..self.groups.len() {
            let range = self.groups[g].range.clone();
            let len = range.end - range.start;
            // As `assemble` builds it: blocks below the group Allocated forever.
            let own = (len > 0).then(|| Extent::new(range.start, len));
            let fresh = ExtentAllocator::from_free_extents(range.end, own)
                .expect("a group's own blocks are a valid free list");
            *self.lock(g) = fresh; // the guard's drop publishes the new summaries
        }
        *self.epochs.lock() = EpochState::new();
        self.tracked.lock().reset();
        *self.pressure_cursor.lock() = pins::PressureCursor::default();
        self.count_deferred_blocks.store(0, Ordering::Relaxed);
        *self.tokens.get_mut() = Default::default();
        self.live_tokens.store(0, Ordering::Relaxed);
        self.live_readers.store(0, Ordering::Relaxed);
        self.counters = stats::AtomicCounters::default();
        self.uid = crate::allocator::next_uid();
    }

    /// The number of allocation groups.
    ///
    /// ```
    /// assert_eq!(pinalloc::SharedAllocator::new(64).group_count(), 1);
    /// ```
    #[must_use]
    pub fn group_count(&self) -> usize {
        self.groups.len()
    }

    /// Blocks per allocation group (the last may have fewer): the longest extent
    /// this allocator can hand out.
    ///
    /// ```
    /// assert_eq!(pinalloc::SharedAllocator::new(1 << 20).group_blocks(), 1 << 14);
    /// ```
    #[must_use]
    pub fn group_blocks(&self) -> u64 {
        self.group_blocks
    }

    /// The free extents that allocation can use, in address order, with neighbours in
    /// different groups joined. A snapshot: each group is read under its own lock.
    ///
    /// A `Vec`, where [`ExtentAllocator::free_extents`] is an iterator: an iterator
    /// here would hold a group's lock between calls to `next`, and the joins across
    /// groups need the next group's first extent.
    ///
    /// ```
    /// use pinalloc::{Request, SharedAllocator, Extent};
    /// let alloc = SharedAllocator::new(16);
    /// alloc.allocate(Request::new(4))?;
    /// assert_eq!(alloc.free_extents(), [Extent::new(4, 12)]);
    /// # Ok::<(), pinalloc::SharedAllocError>(())
    /// ```
    #[must_use]
    pub fn free_extents(&self) -> Vec<Extent> {
        self.joined(|core, out| out.extend(core.free_extents()))
    }

    /// What a remount would find free: see
    /// [`ExtentAllocator::durable_free_extents`]. Each group is read under its own
    /// lock; call it at a quiet point (after [`commit`](Self::commit)) for a consistent
    /// view.
    ///
    /// ```
    /// use pinalloc::{Extent, Request, SharedAllocator};
    /// let alloc = SharedAllocator::new(16);
    /// let e = alloc.allocate(Request::new(4))?;
    /// alloc.commit(1)?;
    /// alloc.free_on_commit(e)?;
    /// assert_eq!(alloc.durable_free_extents(), [Extent::new(4, 12)]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn durable_free_extents(&self) -> Vec<Extent> {
        self.joined(|core, out| out.extend(core.durable_free_extents()))
    }

    /// The maximal runs of `range` (clipped to the space), in address order, with
    /// their states and holds (see [`ExtentAllocator::runs`]); runs that continue
    /// across a group boundary are one. Each group is read under its own lock, one
    /// at a time: exact at a quiet point.
    ///
    /// ```
    /// use pinalloc::{BlockState, Request, SharedAllocator};
    /// let alloc = SharedAllocator::builder(64).groups(4).build();
    /// alloc.allocate(Request::new(16))?;
    /// let runs: Vec<_> = alloc.runs(0..64).collect();
    /// assert_eq!(runs.len(), 2);
    /// assert_eq!((runs[1].extent.start, runs[1].extent.len, runs[1].state), (16, 48, BlockState::Free));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn runs(&self, range: Range<u64>) -> impl Iterator<Item = crate::BlockRun> + use<> {
        let mut out = Vec::new();
        let r = range.start..range.end.min(self.capacity);
        if r.start < r.end {
            for g in self.groups_of(&r) {
                let own = &self.groups[g].range;
                let part = r.start.max(own.start)..r.end.min(own.end);
                for run in self.lock(g).runs_vec(part) {
                    crate::allocator::push_run(&mut out, run);
                }
            }
        }
        out.into_iter()
    }

    /// A picture of the whole space as SVG (the `svg` feature): see
    /// [`Picture`](crate::picture::Picture). Its runs and its stats are each read
    /// group by group, as [`runs`](Self::runs) and [`stats`](Self::stats) read them:
    /// exact at a quiet point.
    ///
    /// ```
    /// use pinalloc::picture::Picture;
    /// let alloc = pinalloc::SharedAllocator::new(1 << 20);
    /// assert!(alloc.picture(&Picture::new()).contains("</svg>"));
    /// ```
    #[cfg(feature = "svg")]
    #[must_use]
    pub fn picture(&self, picture: &crate::picture::Picture) -> alloc::string::String {
        let capacity = self.capacity;
        picture.render(capacity, self.runs(0..capacity), &self.stats().space)
    }

    /// Announces a release in any group to the waiters (see `signal`).
    #[inline]
    pub(crate) fn released(&self) {
        self.released_in(0..self.groups.len());
    }

    /// Announces a release in groups `gs` to the waiters: every thread, and the
    /// async waiters it could satisfy: those waiting for a run that a group's
    /// published summary says might now fit, and those waiting for an extent in
    /// one of `gs`.
    #[inline]
    pub(crate) fn released_in(&self, gs: Range<usize>) {
        self.signal.bump_with(|| {
            // The longest run any group might now give, once per wake.
            let best = self.groups.iter().map(Group::might_fit_up_to).max();
            move |need: &signal::Need| match need {
                signal::Need::Run(n) => best.is_some_and(|b| b >= *n),
                signal::Need::ReleaseIn(r) => r.start < gs.end && gs.start < r.end,
            }
        });
    }

    /// Collects extents group by group and joins the ones that touch.
    fn joined(&self, collect: impl Fn(&ExtentAllocator, &mut Vec<Extent>)) -> Vec<Extent> {
        let mut out: Vec<Extent> = Vec::new();
        for g in 0..self.groups.len() {
            let mut part = Vec::new();
            collect(&self.lock(g), &mut part);
            join_onto(&mut out, part);
        }
        out
    }

    /// The state of `block`, or `None` outside the space.
    ///
    /// ```
    /// use pinalloc::{BlockState, Request, SharedAllocator};
    /// let alloc = SharedAllocator::new(8);
    /// alloc.allocate(Request::new(2))?;
    /// assert_eq!(alloc.state_of(1), Some(BlockState::Allocated));
    /// assert_eq!(alloc.state_of(8), None);
    /// # Ok::<(), pinalloc::SharedAllocError>(())
    /// ```
    #[must_use]
    pub fn state_of(&self, block: u64) -> Option<crate::BlockState> {
        (block < self.capacity)
            .then(|| self.lock(self.group_of(block)).state_of(block))
            .flatten()
    }

    /// How many live pins cover `block` (0 outside the space).
    ///
    /// ```
    /// use pinalloc::{Extent, SharedAllocator};
    /// let alloc = SharedAllocator::new(8);
    /// let _p = alloc.pin(Extent::new(0, 2))?;
    /// assert_eq!(alloc.pin_count(1), 1);
    /// # Ok::<(), pinalloc::SharedPinError>(())
    /// ```
    #[must_use]
    pub fn pin_count(&self, block: u64) -> u64 {
        if block >= self.capacity {
            return 0;
        }
        self.lock(self.group_of(block)).pin_count(block)
    }

    /// The group holding `block`, which is inside the space.
    #[inline]
    fn group_of(&self, block: u64) -> usize {
        debug_assert!(block < self.capacity);
        // A shift when the group size is a power of two (the default's are), which a
        // free does twice: a 64-bit division takes tens of cycles.
        if self.group_blocks.is_power_of_two() {
            (block >> self.group_blocks.trailing_zeros()) as usize
        } else {
            (block / self.group_blocks) as usize
        }
    }

    /// The groups a range inside the space touches.
    #[inline]
    fn groups_of(&self, r: &Range<u64>) -> Range<usize> {
        debug_assert!(r.start < r.end, "an empty range touches no group");
        debug_assert!(r.end <= self.capacity, "a range past the space");
        self.group_of(r.start)..self.group_of(r.end - 1) + 1
    }

    /// A range inside the space cut at group boundaries, with each piece's group.
    fn pieces(&self, r: &Range<u64>) -> impl Iterator<Item = (usize, Extent)> + '_ {
        let whole = Extent::new(r.start, r.end - r.start);
        self.groups_of(r)
            .map(move |g| (g, clip(whole, &self.groups[g].range)))
    }

    /// Locks group `g`; its summaries are republished when the guard drops.
    #[inline]
    fn lock(&self, g: usize) -> Locked<'_> {
        Locked::new(self, g)
    }

    /// Locks groups `gs` in ascending order (the lock order).
    fn lock_all(&self, gs: Range<usize>) -> Vec<Locked<'_>> {
        gs.map(|g| self.lock(g)).collect()
    }

    /// Locks every group, if together they have `blocks` unreserved Free blocks (and
    /// `blocks` is not 0); otherwise says why, holding no lock.
    fn lock_all_with_room(&self, blocks: u64) -> Result<Vec<Locked<'_>>, crate::AllocError> {
        if blocks == 0 {
            return Err(crate::AllocError::ZeroLength);
        }
        let locked = self.lock_all(0..self.groups.len());
        let available: u64 = locked
            .iter()
            .map(|c| c.count_unreserved_free_blocks())
            .sum();
        if available < blocks {
            drop(locked);
            return Err(self.no_space(blocks));
        }
        Ok(locked)
    }

    /// Runs a user callback with no lock held, inside this allocator's callback scope
    /// on this thread (see `reentry`: what the callback calls back into cannot start
    /// another round). A panic is caught and counted; the return says whether it
    /// completed.
    fn call_back(&self, f: impl FnOnce()) -> bool {
        let _scope = reentry::ScopeGuard::enter(self.uid);
        let ok = catch_unwind(AssertUnwindSafe(f)).is_ok();
        if !ok {
            self.counters
                .callback_panics
                .fetch_add(1, Ordering::Relaxed);
        }
        ok
    }

    /// Recomputes every invariant of every group from scratch, plus the shared
    /// layer's own: each group's published summaries and Deferred count match its
    /// core, the Deferred total is their sum, and every tracked pin is live. Call it at
    /// a quiet point: it takes the locks one group at a time.
    ///
    /// # Errors
    ///
    /// The first [`InvariantViolation`](crate::InvariantViolation) found.
    ///
    /// ```
    /// let alloc = pinalloc::SharedAllocator::new(1 << 20);
    /// alloc.check_invariants()?;
    /// # Ok::<(), pinalloc::InvariantViolation>(())
    /// ```
    pub fn check_invariants(&self) -> Result<(), crate::InvariantViolation> {
        self.check_groups_cover()?;
        let tracked = self.tracked.lock();
        let mut deferred = 0u64;
        for g in 0..self.groups.len() {
            let core = self.groups[g].core.lock();
            core.check_invariants()?;
            self.check_group_bounds(g, &core)?;
            self.groups[g].check_summary(g, &core)?;
            deferred = deferred.saturating_add(core.count_deferred_blocks());
            tracked.check_group(g, &core)?;
        }
        let published = self.count_deferred_blocks.load(Ordering::SeqCst);
        if published != deferred {
            return Err(crate::InvariantViolation {
                number: 3,
                detail: alloc::format!(
                    "the published Deferred total is {published}, the groups hold {deferred}"
                ),
            });
        }
        tracked.check_leases()?;
        tracked.check_quotas()
    }

    /// The groups cut `0..capacity` into consecutive ranges of `group_blocks` blocks
    /// (the last may be shorter), in order, with nothing left over: a lost or
    /// misplaced group is a violation, so `group_of` finds every block's group.
    fn check_groups_cover(&self) -> Result<(), crate::InvariantViolation> {
        let violation = |detail| crate::InvariantViolation { number: 2, detail };
        let expected = if self.capacity == 0 {
            1
        } else {
            self.capacity.div_ceil(self.group_blocks)
        };
        if self.groups.len() as u64 != expected {
            return Err(violation(alloc::format!(
                "{} groups of {} blocks for a space of {}: want {expected}",
                self.groups.len(),
                self.group_blocks,
                self.capacity
            )));
        }
        let mut next = 0u64;
        for (g, group) in self.groups.iter().enumerate() {
            let want_end = next + (self.capacity - next).min(self.group_blocks);
            if group.range != (next..want_end) {
                return Err(violation(alloc::format!(
                    "group {g} covers {:?}, want {next}..{want_end}",
                    group.range
                )));
            }
            next = want_end;
        }
        if next != self.capacity {
            return Err(violation(alloc::format!(
                "the groups end at {next}, the space at {}",
                self.capacity
            )));
        }
        Ok(())
    }

    /// Group `g`'s core spans `0..range.end`, and everything it manages besides the
    /// blocks below `range.start` (Allocated forever) lies inside the range.
    fn check_group_bounds(
        &self,
        g: usize,
        core: &ExtentAllocator,
    ) -> Result<(), crate::InvariantViolation> {
        let range = &self.groups[g].range;
        let violation = |detail| crate::InvariantViolation { number: 2, detail };
        if core.capacity_blocks() != range.end {
            return Err(violation(alloc::format!(
                "group {g} covers {range:?}, its core {} blocks",
                core.capacity_blocks()
            )));
        }
        let s = core.stats();
        if s.allocated_blocks < range.start {
            return Err(violation(alloc::format!(
                "group {g} starts at {}, but its core has only {} Allocated blocks",
                range.start,
                s.allocated_blocks
            )));
        }
        if let Some(first) = core.free_extents().next().filter(|f| f.start < range.start) {
            return Err(violation(alloc::format!(
                "group {g} covers {range:?}, its core has {first} Free"
            )));
        }
        Ok(())
    }
}

/// Appends `part`, in address order after `out`, joining extents that touch.
pub(crate) fn join_onto(out: &mut Vec<Extent>, part: Vec<Extent>) {
    for e in part {
        match out.last_mut() {
            Some(last) if last.start + last.len == e.start => last.len += e.len,
            _ => out.push(e),
        }
    }
}
