//! Pins on the shared allocator: guards, owned ids, owners with quotas, and leases
//! (pins with a revoke callback).
//!
//! A plain pin inside one group is just that group core's pin: its id names the
//! group, and pinning locks only that group. A pin with an owner, a revoke callback,
//! or an extent across groups is also *tracked*: recorded in one table under its own
//! lock (taken before any group's), which keeps owners' pinned totals and the
//! callbacks.

use alloc::collections::BTreeMap;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use std::time::Duration;

use super::SharedAllocator;
use super::signal::Deadline;
use crate::sync::Ordering;
use crate::tree::intervals::Intervals;
use crate::{
    Extent, ExtentAllocator, InvariantViolation, LimitError, PinError, PinId, PinMode,
    ReleaseOutcome, SharedPinError,
};

/// Names one live pin of a [`SharedAllocator`]: what a pin that outlives a scope
/// (handed to a device, say) is kept as. From [`PinGuard::into_id`] or
/// [`SharedAllocator::pin_owned`]; given back to [`SharedAllocator::unpin`].
///
/// ```
/// use pinalloc::{Extent, SharedAllocator};
/// let alloc = SharedAllocator::new(64);
/// let id = alloc.pin_owned(Extent::new(0, 8), Default::default())?;
/// assert_eq!(alloc.pin_count(0), 1);
/// alloc.unpin(id)?;
/// assert_eq!(alloc.pin_count(0), 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct SharedPinId {
    /// The allocator that made it.
    allocator: u64,
    /// The group of the pin's first block.
    group: u32,
    /// The pin in that group's core: the id a [`FreeError::Busy`](crate::FreeError)
    /// names.
    core: PinId,
    /// The tracked-pin table's key, or 0 for a plain single-group pin.
    tracked: u64,
}

impl SharedPinId {
    /// The core pin of the group holding the pin's first block: the id that
    /// [`FreeError::Busy`](crate::FreeError::Busy) reports for this pin, whichever of
    /// its groups the refused free touched.
    ///
    /// ```
    /// use pinalloc::{Extent, FreeError, PinMode, PinOptions, Request, SharedAllocator, SharedFreeError};
    /// let alloc = SharedAllocator::new(64);
    /// let e = alloc.allocate(Request::new(4))?;
    /// let pin = alloc.pin_with(e, PinOptions::new().mode(PinMode::Blocking))?;
    /// match alloc.free(e) {
    ///     Err(SharedFreeError::Core(FreeError::Busy { pin: p, .. })) => assert_eq!(p, pin.id().core_pin()),
    ///     other => panic!("{other:?}"),
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn core_pin(&self) -> PinId {
        self.core
    }
}

impl fmt::Display for SharedPinId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} in group {}", self.core, self.group)
    }
}

/// The argument of a revoke callback: which pin is asked to let go, and why.
///
/// ```
/// use pinalloc::{Extent, PinOptions, SharedAllocator};
/// use std::time::Duration;
///
/// let alloc = SharedAllocator::new(64);
/// let opts = PinOptions::new().on_revoke(|r| println!("let go of {} ({})", r.extent, r.id));
/// let lease = alloc.pin_owned(Extent::new(0, 8), opts)?;
/// let report = alloc.revoke(Extent::new(4, 1), Duration::ZERO);
/// assert_eq!(report.asked, 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Revocation {
    /// The pin asked to let go; unpin it with [`SharedAllocator::unpin`].
    pub id: SharedPinId,
    /// Its extent.
    pub extent: Extent,
}

/// What [`SharedAllocator::revoke`] did.
///
/// ```
/// let report = pinalloc::RevokeReport::default();
/// assert!(report.all_released());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RevokeReport {
    /// Revoke callbacks called.
    pub asked: usize,
    /// Pins asked that were still live when the timeout passed, with their extents.
    pub still_pinned: Vec<(SharedPinId, Extent)>,
}

impl RevokeReport {
    /// Whether every pin asked let go in time.
    ///
    /// ```
    /// assert!(pinalloc::RevokeReport::default().all_released());
    /// ```
    #[must_use]
    pub fn all_released(&self) -> bool {
        self.still_pinned.is_empty()
    }
}

type RevokeFn = Arc<dyn Fn(&Revocation) + Send + Sync>;

/// How to pin: the mode, an owner to charge against a quota, and a revoke callback
/// that makes the pin a lease.
///
/// ```
/// use pinalloc::{PinMode, PinOptions};
/// let opts = PinOptions::new().mode(PinMode::Blocking).owner(42).on_revoke(|_| {});
/// ```
#[derive(Clone, Default)]
pub struct PinOptions {
    mode: PinMode,
    owner: Option<u64>,
    on_revoke: Option<RevokeFn>,
}

impl fmt::Debug for PinOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PinOptions")
            .field("mode", &self.mode)
            .field("owner", &self.owner)
            .field("on_revoke", &self.on_revoke.is_some())
            .finish()
    }
}

impl PinOptions {
    /// A deferring pin with no owner and no callback.
    ///
    /// ```
    /// let _ = pinalloc::PinOptions::new();
    /// ```
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The pin's [`PinMode`].
    ///
    /// ```
    /// let _ = pinalloc::PinOptions::new().mode(pinalloc::PinMode::Blocking);
    /// ```
    #[must_use]
    pub fn mode(mut self, mode: PinMode) -> Self {
        self.mode = mode;
        self
    }

    /// Charges the pin's length to `owner`'s quota of pinned blocks (see
    /// [`SharedAllocator::set_pin_quota`]) until it is unpinned.
    ///
    /// ```
    /// let _ = pinalloc::PinOptions::new().owner(7);
    /// ```
    #[must_use]
    pub fn owner(mut self, owner: u64) -> Self {
        self.owner = Some(owner);
        self
    }

    /// Makes the pin a lease: `revoke` is called, with no lock held, when
    /// [`SharedAllocator::revoke`] covers the pin or when an allocation is under
    /// pressure and the pin holds back space whose release could let the allocation
    /// fit (a round asks at most 64 leases; see [`SharedAllocator`]). The holder is
    /// expected to unpin soon. It may be called more than once, and from any thread.
    ///
    /// The callback runs with no lock held and may call back into the allocator: take
    /// a bounce buffer, free, pin, commit, revoke, then unpin. What it calls never
    /// starts another round: on the callback's thread, an allocation that does not fit
    /// fails plainly with `NoSpace` (no pressure hook, no revokes), `allocate_wait`
    /// does not wait, and a `revoke` asks only leases not yet asked by the call that
    /// ran this callback. So within one outer `allocate` or `revoke`, each lease's
    /// callback runs at most once.
    ///
    /// ```
    /// let _ = pinalloc::PinOptions::new().on_revoke(|r| eprintln!("{} revoked", r.id));
    /// ```
    #[must_use]
    pub fn on_revoke(mut self, revoke: impl Fn(&Revocation) + Send + Sync + 'static) -> Self {
        self.on_revoke = Some(Arc::new(revoke));
        self
    }

    /// Whether the pin needs a tracked record.
    fn is_tracked(&self) -> bool {
        self.owner.is_some() || self.on_revoke.is_some()
    }
}

/// A live pin that unpins when dropped. From [`SharedAllocator::pin`].
///
/// It borrows its allocator, where a `Region`'s guards ([`Pinned`](crate::Pinned))
/// are `'static`: a `Region` guard keeps memory valid for a device and so holds its
/// region alive, while this guard only names blocks, and a borrow costs no reference
/// count on the pin path. For a pin that must outlive the scope, or cross threads
/// without the allocator, use [`SharedAllocator::pin_owned`] and its id.
///
/// ```
/// use pinalloc::{Extent, SharedAllocator};
/// let alloc = SharedAllocator::new(64);
/// {
///     let _dma = alloc.pin(Extent::new(0, 8))?;
///     assert_eq!(alloc.pin_count(3), 1);
/// }
/// assert_eq!(alloc.pin_count(3), 0);
/// # Ok::<(), pinalloc::SharedPinError>(())
/// ```
#[must_use = "dropping the guard unpins at once"]
#[derive(Debug)]
pub struct PinGuard<'a> {
    alloc: &'a SharedAllocator,
    id: SharedPinId,
    extent: Extent,
}

impl PinGuard<'_> {
    /// The pin's id.
    ///
    /// ```
    /// let alloc = pinalloc::SharedAllocator::new(8);
    /// let g = alloc.pin(pinalloc::Extent::new(0, 1))?;
    /// println!("{}", g.id());
    /// # Ok::<(), pinalloc::SharedPinError>(())
    /// ```
    #[must_use]
    pub fn id(&self) -> SharedPinId {
        self.id
    }

    /// The pinned extent.
    ///
    /// ```
    /// use pinalloc::Extent;
    /// let alloc = pinalloc::SharedAllocator::new(8);
    /// assert_eq!(alloc.pin(Extent::new(2, 3))?.extent(), Extent::new(2, 3));
    /// # Ok::<(), pinalloc::SharedPinError>(())
    /// ```
    #[must_use]
    pub fn extent(&self) -> Extent {
        self.extent
    }

    /// Keeps the pin past the guard's scope; unpin it later with
    /// [`SharedAllocator::unpin`].
    ///
    /// ```
    /// use pinalloc::Extent;
    /// let alloc = pinalloc::SharedAllocator::new(8);
    /// let id = alloc.pin(Extent::new(0, 4))?.into_id();
    /// assert_eq!(alloc.pin_count(0), 1);
    /// alloc.unpin(id)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use = "the pin stays until this id is unpinned"]
    pub fn into_id(self) -> SharedPinId {
        let id = self.id;
        core::mem::forget(self);
        id
    }

    /// Unpins now and says what it released (dropping the guard does the same and
    /// discards the outcome). A pin a revoke callback already unpinned releases
    /// nothing more here.
    ///
    /// ```
    /// use pinalloc::{Request, SharedAllocator};
    /// let alloc = SharedAllocator::new(8);
    /// let e = alloc.allocate(Request::new(8))?;
    /// let pin = alloc.pin(e)?;
    /// alloc.free(e)?;
    /// assert_eq!(pin.unpin().released_blocks, 8);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn unpin(self) -> ReleaseOutcome {
        let (alloc, id) = (self.alloc, self.id);
        core::mem::forget(self);
        // Only a revoke callback can have unpinned it already (`Unknown`).
        alloc.unpin(id).unwrap_or_default()
    }
}

impl Drop for PinGuard<'_> {
    fn drop(&mut self) {
        // Fails only when a revoke callback already unpinned it: nothing left to do.
        let _ = self.alloc.unpin(self.id);
    }
}

/// A live pin of a [`SharedAllocator`], as [`SharedAllocator::pins`] lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct SharedPinInfo {
    /// The pin.
    pub id: SharedPinId,
    /// The blocks it covers, across groups.
    pub extent: Extent,
    /// Whether it defers frees or refuses them.
    pub mode: PinMode,
    /// The owner it names ([`PinOptions::owner`]), if any.
    pub owner: Option<u64>,
    /// Whether it is a lease, with a revoke callback.
    pub lease: bool,
}

/// A tracked pin's record.
struct TrackedPin {
    extent: Extent,
    /// One core pin per group the extent touches, in group order.
    pieces: Vec<(usize, PinId)>,
    owner: Option<u64>,
    on_revoke: Option<RevokeFn>,
    /// For a lease, its slot in `Tracked::leases`.
    lease_slot: Option<u32>,
    /// Whether its revoke callback is running now, on some thread: another revoke or
    /// pressure round then waits for it instead of calling it again, so no chain of
    /// callbacks across threads asks one lease without end.
    asking: bool,
}

/// The leases one call asked to let go (see `call_revokes`).
pub(crate) struct Asked {
    /// Their callbacks were called by this call.
    pub(crate) called: Vec<(SharedPinId, Extent)>,
    /// Their callbacks were running on another thread: waited for, not called again.
    pub(crate) elsewhere: Vec<(SharedPinId, Extent)>,
    /// Asked further up this thread's stack, whose callback is waiting for this call
    /// to return: reported if still pinned, never waited for.
    pub(crate) here: Vec<(SharedPinId, Extent)>,
}

/// Where pressure rounds go on: the block the next round starts from, and, when the
/// last one stopped among the leases of the held range starting there, the interval
/// key to go on below.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct PressureCursor {
    at: u64,
    upto: Option<u128>,
}

/// The most leases one pressure round asks to let go.
pub(crate) const PRESSURE_ASKS: usize = 64;

/// The most held ranges one pressure round looks at to find them.
pub(crate) const PRESSURE_LOOKS: usize = 1024;

/// Tracked pins and owners' pinned totals.
pub(crate) struct Tracked {
    /// By the pin's number (see `next_pin_seq`), never 0 (0 means untracked).
    pins: BTreeMap<u64, TrackedPin>,
    /// Pieces beyond the first of every tracked pin: the cores count each piece as a
    /// pin, so `stats` takes these off in O(1).
    count_extra_pieces: u64,
    /// The leases' extents, each under its slot: `revoke` finds the leases over a
    /// range in O(log n) per lease found, whatever the leases elsewhere.
    leases: Intervals,
    /// Slot → the lease's key in `pins`; 0 for a vacant slot.
    lease_keys: Vec<u64>,
    /// The vacant slots.
    vacant_leases: Vec<u32>,
    /// Per owner: blocks its live pins cover, counted per pin.
    pinned_by_owner: BTreeMap<u64, u64>,
    /// Per-owner quotas that differ from the default.
    quotas: BTreeMap<u64, u64>,
    default_quota: Option<u64>,
}

impl fmt::Debug for Tracked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tracked")
            .field("pins", &self.pins.len())
            .field("pinned_by_owner", &self.pinned_by_owner)
            .finish_non_exhaustive()
    }
}

impl Tracked {
    /// Every field, spelled out, for the failure-atomicity checks (a callback by
    /// whether it is there).
    #[cfg(feature = "testing")]
    pub(crate) fn describe(&self) -> alloc::string::String {
        let pins: Vec<_> = self
            .pins
            .iter()
            .map(|(seq, p)| (seq, p.extent, &p.pieces, p.owner, p.on_revoke.is_some()))
            .collect();
        alloc::format!(
            "pins {pins:?}, extra pieces {}, pinned by owner {:?}, quotas {:?}, default quota {:?}",
            self.count_extra_pieces,
            self.pinned_by_owner,
            self.quotas,
            self.default_quota
        )
    }

    /// Drops every pin and lease, keeping the quotas.
    pub(crate) fn reset(&mut self) {
        let quotas = core::mem::take(&mut self.quotas);
        *self = Tracked::new(self.default_quota);
        self.quotas = quotas;
    }

    pub(crate) fn new(default_quota: Option<u64>) -> Self {
        Tracked {
            pins: BTreeMap::new(),
            count_extra_pieces: 0,
            leases: Intervals::new(),
            lease_keys: Vec::new(),
            vacant_leases: Vec::new(),
            pinned_by_owner: BTreeMap::new(),
            quotas: BTreeMap::new(),
            default_quota,
        }
    }

    /// Pins beyond the first piece of each tracked pin: the core counts these as
    /// separate pins.
    pub(crate) fn count_extra_pieces(&self) -> u64 {
        self.count_extra_pieces
    }

    /// Indexes the lease keyed `key` over `extent`; returns its slot.
    fn add_lease(&mut self, extent: Extent, key: u64) -> u32 {
        let slot = match self.vacant_leases.pop() {
            Some(slot) => slot,
            None => {
                let slot = u32::try_from(self.lease_keys.len())
                    .ok()
                    .filter(|&s| s != u32::MAX)
                    .expect("pinalloc indexes at most 2^32 - 1 leases");
                self.lease_keys.push(0);
                slot
            }
        };
        self.lease_keys[slot as usize] = key;
        self.leases
            .insert(&extent.range_in(u64::MAX).expect("a pinned extent"), slot);
        slot
    }

    /// Drops the lease in `slot` over `extent` from the index.
    fn remove_lease(&mut self, extent: Extent, slot: u32) {
        let found = self.leases.remove(extent.start, slot);
        debug_assert!(found, "a lease is indexed under its slot");
        self.lease_keys[slot as usize] = 0;
        self.vacant_leases.push(slot);
    }

    /// The lease index lists exactly the tracked pins with a revoke callback.
    pub(crate) fn check_leases(&self) -> Result<(), InvariantViolation> {
        let violation = |detail| InvariantViolation { number: 3, detail };
        self.leases
            .check()
            .map_err(|d| violation(alloc::format!("lease index: {d}")))?;
        let mut indexed: Vec<(u64, Extent)> = self
            .leases
            .iter()
            .map(|(r, slot)| {
                (
                    self.lease_keys[slot as usize],
                    Extent::new(r.start, r.end - r.start),
                )
            })
            .collect();
        indexed.sort_unstable();
        let leases: Vec<(u64, Extent)> = self
            .pins
            .iter()
            .filter(|(_, p)| p.on_revoke.is_some())
            .map(|(&key, p)| (key, p.extent))
            .collect();
        if indexed != leases {
            return Err(violation(alloc::format!(
                "the lease index lists {} leases, the tracked pins have {}",
                indexed.len(),
                leases.len()
            )));
        }
        Ok(())
    }

    fn check_quota(&self, owner: u64, extent: Extent) -> Result<(), LimitError> {
        let quota = self.quotas.get(&owner).copied().or(self.default_quota);
        let pinned = self.pinned_by_owner.get(&owner).copied().unwrap_or(0);
        match quota {
            Some(q) if pinned.saturating_add(extent.len) > q => Err(LimitError::PinQuota {
                owner,
                extent,
                quota_blocks: q,
                pinned_blocks: pinned,
            }),
            _ => Ok(()),
        }
    }

    /// Every tracked piece in group `g` is a live pin of its core, over the right
    /// blocks.
    pub(crate) fn check_group(
        &self,
        g: usize,
        core: &ExtentAllocator,
    ) -> Result<(), InvariantViolation> {
        for (seq, pin) in &self.pins {
            for &(pg, id) in &pin.pieces {
                if pg == g && core.pin_extent(id).is_none() {
                    return Err(InvariantViolation {
                        number: 3,
                        detail: alloc::format!(
                            "tracked pin {seq} ({}) names {id} in group {g}, which is not live",
                            pin.extent
                        ),
                    });
                }
            }
        }
        Ok(())
    }

    /// Each owner's pinned total equals its tracked pins' lengths, and the count of
    /// extra pieces equals its recount.
    pub(crate) fn check_quotas(&self) -> Result<(), InvariantViolation> {
        let extra: u64 = self.pins.values().map(|p| p.pieces.len() as u64 - 1).sum();
        if extra != self.count_extra_pieces {
            return Err(InvariantViolation {
                number: 3,
                detail: alloc::format!(
                    "{} extra pin pieces counted, {extra} recounted",
                    self.count_extra_pieces
                ),
            });
        }
        let mut recount: BTreeMap<u64, u64> = BTreeMap::new();
        for pin in self.pins.values() {
            if let Some(owner) = pin.owner {
                *recount.entry(owner).or_default() += pin.extent.len;
            }
        }
        if recount != self.pinned_by_owner {
            return Err(InvariantViolation {
                number: 3,
                detail: alloc::format!(
                    "owners' pinned totals {:?} differ from their pins' {recount:?}",
                    self.pinned_by_owner
                ),
            });
        }
        Ok(())
    }
}

impl SharedAllocator {
    /// Pins `extent` (a deferring pin, see
    /// [`ExtentAllocator::pin`](crate::ExtentAllocator::pin)) and returns a guard that
    /// unpins when dropped. Locks only the groups the extent touches.
    ///
    /// # Errors
    ///
    /// [`SharedPinError::Core`] with the core's reason: a malformed or out-of-bounds
    /// extent, or Free blocks promised to reservations. Nothing changes.
    /// Reservations are kept per group, so for an extent over several groups,
    /// [`PinError::Reserved`] names the whole extent with the figures of the first
    /// group that refuses: the Free blocks of its piece there, and that group's
    /// unreserved blocks.
    ///
    /// ```
    /// use pinalloc::{Request, SharedAllocator};
    /// let alloc = SharedAllocator::new(64);
    /// let e = alloc.allocate(Request::new(16))?;
    /// let dma = alloc.pin(e)?;
    /// assert_eq!(alloc.free(e)?.deferred_blocks, 16);
    /// drop(dma);
    /// assert_eq!(alloc.stats().space.free_blocks, 64);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn pin(&self, extent: Extent) -> Result<PinGuard<'_>, SharedPinError> {
        self.pin_with(extent, PinOptions::new())
    }

    /// Pins `extent` with [`PinOptions`] (mode, owner, revoke callback) and returns a
    /// guard that unpins when dropped.
    ///
    /// # Errors
    ///
    /// As [`pin`](Self::pin), plus [`LimitError::PinQuota`] when the owner would pass
    /// its quota. Nothing changes.
    ///
    /// ```
    /// use pinalloc::{FreeError, PinMode, PinOptions, Request, SharedAllocator, SharedFreeError};
    /// let alloc = SharedAllocator::new(64);
    /// let e = alloc.allocate(Request::new(16))?;
    /// let pin = alloc.pin_with(e, PinOptions::new().mode(PinMode::Blocking))?;
    /// assert!(matches!(alloc.free(e), Err(SharedFreeError::Core(FreeError::Busy { .. }))));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn pin_with(
        &self,
        extent: Extent,
        options: PinOptions,
    ) -> Result<PinGuard<'_>, SharedPinError> {
        let id = self.pin_owned(extent, options)?;
        Ok(PinGuard {
            alloc: self,
            id,
            extent,
        })
    }

    /// Pins `extent` and returns its id, for a pin that outlives any scope; it stays
    /// until [`unpin`](Self::unpin).
    ///
    /// # Errors
    ///
    /// As [`pin_with`](Self::pin_with).
    ///
    /// ```
    /// use pinalloc::{Extent, PinOptions, SharedAllocator};
    /// let alloc = SharedAllocator::new(64);
    /// let id = alloc.pin_owned(Extent::new(0, 4), PinOptions::new().owner(3))?;
    /// assert_eq!(alloc.stats().space.live_pins, 1);
    /// alloc.unpin(id)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn pin_owned(
        &self,
        extent: Extent,
        options: PinOptions,
    ) -> Result<SharedPinId, SharedPinError> {
        let r = extent.within(self.capacity).map_err(PinError::BadExtent)?;
        let gs = self.groups_of(&r);
        if gs.len() == 1 && !options.is_tracked() {
            let core = self
                .lock(gs.start)
                .pin_numbered(extent, options.mode, || Some(self.next_pin_seq()))?;
            return Ok(self.pin_id(gs.start, core, 0));
        }
        let mut tracked = self.tracked.lock();
        if let Some(owner) = options.owner {
            tracked.check_quota(owner, extent)?;
        }
        let mut locked = self.lock_all(gs);
        let pieces: Vec<(usize, Extent)> = self.pieces(&r).collect();
        for ((_, piece), core) in pieces.iter().zip(&locked) {
            core.pin_preview(*piece)
                .map_err(|e| self.whole_pin_error(e, extent))?;
        }
        // One number for every piece: the pin's age, and its key in the table.
        let seq = self.next_pin_seq();
        let cores: Vec<(usize, PinId)> = pieces
            .iter()
            .zip(&mut locked)
            .map(|((g, piece), core)| {
                let id = core.pin_numbered(*piece, options.mode, || Some(seq));
                (*g, id.expect("previewed"))
            })
            .collect();
        drop(locked);
        if let Some(owner) = options.owner {
            *tracked.pinned_by_owner.entry(owner).or_default() += extent.len;
        }
        let id = self.pin_id(cores[0].0, cores[0].1, seq);
        tracked.count_extra_pieces += cores.len() as u64 - 1;
        let lease_slot = options
            .on_revoke
            .is_some()
            .then(|| tracked.add_lease(extent, seq));
        tracked.pins.insert(
            seq,
            TrackedPin {
                extent,
                pieces: cores,
                owner: options.owner,
                on_revoke: options.on_revoke,
                lease_slot,
                asking: false,
            },
        );
        Ok(id)
    }

    /// The next number in the one sequence that numbers the pins of every group, so
    /// that the oldest pin is the one with the lowest number, across groups as in one
    /// core. A tracked pin's number is also its key in the tracked table.
    fn next_pin_seq(&self) -> u64 {
        self.count_pins_made.fetch_add(1, Ordering::Relaxed) + 1
    }

    fn pin_id(&self, group: usize, core: PinId, tracked: u64) -> SharedPinId {
        SharedPinId {
            allocator: self.uid,
            group: group as u32,
            core,
            tracked,
        }
    }

    /// A piece's pin error, told about the whole extent.
    fn whole_pin_error(&self, e: PinError, extent: Extent) -> PinError {
        match e {
            PinError::Reserved {
                free_blocks,
                unreserved,
                ..
            } => PinError::Reserved {
                extent,
                free_blocks,
                unreserved,
            },
            other => other,
        }
    }

    /// Drops a pin given as an id (a guard's drop does this itself). Blocks whose last
    /// hold it was become Free; waiters wake.
    ///
    /// # Errors
    ///
    /// [`PinError::Unknown`] for a pin of another allocator or one already unpinned;
    /// nothing changes.
    ///
    /// ```
    /// use pinalloc::{Extent, SharedAllocator};
    /// let alloc = SharedAllocator::new(8);
    /// let id = alloc.pin(Extent::new(0, 4))?.into_id();
    /// alloc.unpin(id)?;
    /// assert!(alloc.unpin(id).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn unpin(&self, id: SharedPinId) -> Result<ReleaseOutcome, PinError> {
        let unknown = PinError::Unknown { id: id.core };
        if id.allocator != self.uid || id.group as usize >= self.groups.len() {
            return Err(unknown);
        }
        let out = if id.tracked == 0 {
            self.lock(id.group as usize).unpin(id.core)?
        } else {
            let mut tracked = self.tracked.lock();
            let pin = tracked.pins.remove(&id.tracked).ok_or(unknown)?;
            tracked.count_extra_pieces -= pin.pieces.len() as u64 - 1;
            if let Some(slot) = pin.lease_slot {
                tracked.remove_lease(pin.extent, slot);
            }
            if let Some(owner) = pin.owner {
                let left = tracked
                    .pinned_by_owner
                    .get_mut(&owner)
                    .expect("a tracked owner has a total");
                *left -= pin.extent.len;
                if *left == 0 {
                    tracked.pinned_by_owner.remove(&owner);
                }
            }
            let mut out = ReleaseOutcome::default();
            // All of its groups at once, so that no free sees it half unpinned.
            let groups = pin.pieces[0].0..pin.pieces[pin.pieces.len() - 1].0 + 1;
            let mut locked = self.lock_all(groups);
            for ((_, core), group) in pin.pieces.into_iter().zip(&mut locked) {
                let done = group.unpin(core).expect("tracked pieces are live");
                out.released_blocks += done.released_blocks;
                out.unpinned_free_blocks += done.unpinned_free_blocks;
            }
            drop(locked);
            drop(tracked);
            self.forget_token(&id);
            // `revoke` waits for tracked pins to go, released blocks or not.
            self.released();
            return Ok(out);
        };
        self.forget_token(&id);
        if out.released_blocks + out.unpinned_free_blocks > 0 {
            let g = id.group as usize;
            self.released_in(g..g + 1);
        }
        Ok(out)
    }

    /// Pin `id` has gone: its token, if it had one, too. Asks the token table only
    /// while some pin has a token.
    #[inline]
    fn forget_token(&self, id: &SharedPinId) {
        if self.live_tokens.load(Ordering::Relaxed) > 0 && self.tokens.lock().forget(id) {
            self.live_tokens.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// A 64-bit token for live pin `id`, for an I/O descriptor's user data (see
    /// [`ExtentAllocator::pin_token`](crate::ExtentAllocator::pin_token)):
    /// [`pin_of_token`](Self::pin_of_token) gives the pin back. While any pin has a
    /// token, every unpin also takes the token table's lock.
    ///
    /// # Errors
    ///
    /// [`PinError::Unknown`] for a pin that is not live here; nothing changes.
    ///
    /// ```
    /// use pinalloc::{Extent, PinError, SharedAllocator};
    /// let alloc = SharedAllocator::new(64);
    /// let pin = alloc.pin(Extent::new(0, 8))?.into_id();
    /// let user_data = alloc.pin_token(pin)?;
    /// assert_eq!(alloc.pin_of_token(user_data)?, pin);
    /// alloc.unpin(pin)?;
    /// assert_eq!(alloc.pin_of_token(user_data), Err(PinError::UnknownToken { token: user_data }));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn pin_token(&self, id: SharedPinId) -> Result<u64, PinError> {
        let unknown = PinError::Unknown { id: id.core };
        if id.allocator != self.uid || id.group as usize >= self.groups.len() {
            return Err(unknown);
        }
        // The pin's own lock is held while its token is made, so that an unpin (which
        // forgets tokens after that lock) cannot slip between.
        let token = if id.tracked == 0 {
            let core = self.lock(id.group as usize);
            if !core.is_live_pin(id.core) {
                return Err(unknown);
            }
            self.make_token(id)
        } else {
            let tracked = self.tracked.lock();
            if !tracked.pins.contains_key(&id.tracked) {
                return Err(unknown);
            }
            self.make_token(id)
        };
        Ok(token)
    }

    fn make_token(&self, id: SharedPinId) -> u64 {
        let mut tokens = self.tokens.lock();
        let before = tokens.len();
        let t = tokens.token(id);
        if tokens.len() > before {
            self.live_tokens.fetch_add(1, Ordering::Relaxed);
        }
        t
    }

    /// The live pin that [`pin_token`](Self::pin_token) gave `token`.
    ///
    /// # Errors
    ///
    /// [`PinError::UnknownToken`] for a token of a pin that has gone, of another
    /// allocator, or never given.
    ///
    /// ```
    /// let alloc = pinalloc::SharedAllocator::new(8);
    /// assert!(alloc.pin_of_token(7).is_err());
    /// ```
    pub fn pin_of_token(&self, token: u64) -> Result<SharedPinId, PinError> {
        self.tokens
            .lock()
            .pin(token)
            .ok_or(PinError::UnknownToken { token })
    }

    /// Sets `owner`'s quota of pinned blocks, overriding the builder's default. Pins
    /// already live stay; only new pins are checked.
    ///
    /// ```
    /// use pinalloc::{Extent, PinOptions, SharedAllocator};
    /// let alloc = SharedAllocator::new(64);
    /// alloc.set_pin_quota(9, 2);
    /// assert!(alloc.pin_with(Extent::new(0, 3), PinOptions::new().owner(9)).is_err());
    /// ```
    pub fn set_pin_quota(&self, owner: u64, quota_blocks: u64) {
        self.tracked.lock().quotas.insert(owner, quota_blocks);
    }

    /// The live pins, oldest first, each whole (a pin across groups once), with its
    /// extent, its mode, the owner it names and whether it is a lease: what holds
    /// pinned space, and who. Takes the tracked table's lock, then each group's in
    /// turn: exact at a quiet point.
    /// O(pins).
    ///
    /// ```
    /// use pinalloc::{Extent, PinOptions, SharedAllocator};
    /// let alloc = SharedAllocator::builder(64).groups(2).build();
    /// let across = alloc.pin_with(Extent::new(30, 4), PinOptions::new().owner(7))?;
    /// let listed = alloc.pins();
    /// assert_eq!(listed.len(), 1);
    /// assert_eq!((listed[0].id, listed[0].extent, listed[0].owner), (across.id(), Extent::new(30, 4), Some(7)));
    /// # Ok::<(), pinalloc::SharedPinError>(())
    /// ```
    #[must_use]
    pub fn pins(&self) -> Vec<SharedPinInfo> {
        let tracked = self.tracked.lock();
        let mut pins = Vec::new();
        // One group at a time, as `stats`: the tracked lock keeps every tracked pin
        // whole meanwhile.
        for g in 0..self.groups.len() {
            for p in self.lock(g).pins() {
                let seq = p.id.seq;
                match tracked.pins.get(&seq) {
                    // A tracked pin, listed once, by its first piece.
                    Some(t) if t.pieces[0].0 == g => pins.push(SharedPinInfo {
                        id: self.pin_id(g, p.id, seq),
                        extent: t.extent,
                        mode: p.mode,
                        owner: t.owner,
                        lease: t.on_revoke.is_some(),
                    }),
                    Some(_) => {}
                    None => pins.push(SharedPinInfo {
                        id: self.pin_id(g, p.id, 0),
                        extent: p.extent,
                        mode: p.mode,
                        owner: None,
                        lease: false,
                    }),
                }
            }
        }
        pins.sort_by_key(|p| p.id.core.seq);
        pins
    }

    /// Blocks the live pins naming `owner` cover, counted per pin.
    ///
    /// ```
    /// use pinalloc::{Extent, PinOptions, SharedAllocator};
    /// let alloc = SharedAllocator::new(64);
    /// let _p = alloc.pin_with(Extent::new(0, 3), PinOptions::new().owner(9))?;
    /// assert_eq!(alloc.pinned_by(9), 3);
    /// # Ok::<(), pinalloc::SharedPinError>(())
    /// ```
    #[must_use]
    pub fn pinned_by(&self, owner: u64) -> u64 {
        self.tracked
            .lock()
            .pinned_by_owner
            .get(&owner)
            .copied()
            .unwrap_or(0)
    }

    /// Asks the holders of every lease overlapping `extent` to let go: calls their
    /// revoke callbacks (with no lock held), then waits up to `timeout` for those pins
    /// to be unpinned, and reports the ones that were not. A lease whose callback is
    /// running already is not called again: if it runs on another thread, this call
    /// waits for it as for the others; if it is further up this thread's stack (this
    /// call comes from inside a callback), it cannot let go before this call returns,
    /// so it is not waited for, and is reported in `still_pinned` if still live. A
    /// callback that panics is caught and counted in
    /// [`SharedCounters::callback_panics`](crate::SharedCounters).
    /// Pins without a callback are not asked. A malformed or out-of-range extent
    /// overlaps nothing.
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use std::time::Duration;
    /// use pinalloc::{Extent, PinOptions, SharedAllocator, SharedPinId};
    ///
    /// let alloc = Arc::new(SharedAllocator::new(64));
    /// let slot: Arc<Mutex<Option<SharedPinId>>> = Arc::default();
    /// let (a, s) = (Arc::clone(&alloc), Arc::clone(&slot));
    /// let opts = PinOptions::new().on_revoke(move |_| {
    ///     if let Some(id) = s.lock().unwrap().take() { a.unpin(id).unwrap(); }
    /// });
    /// *slot.lock().unwrap() = Some(alloc.pin_owned(Extent::new(0, 8), opts)?);
    /// let report = alloc.revoke(Extent::new(0, 64), Duration::from_secs(1));
    /// assert_eq!(report.asked, 1);
    /// assert!(report.all_released());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn revoke(&self, extent: Extent, timeout: Duration) -> RevokeReport {
        let deadline = Deadline::after(timeout);
        let Ok(r) = extent.range_in(self.capacity) else {
            return RevokeReport::default();
        };
        let asked = self.leases_over(&r);
        let asked = self.call_revokes(asked);
        let waited: Vec<(SharedPinId, Extent)> = asked
            .called
            .iter()
            .chain(&asked.elsewhere)
            .copied()
            .collect();
        let live = |list: &[(SharedPinId, Extent)]| -> Vec<(SharedPinId, Extent)> {
            let tracked = self.tracked.lock();
            list.iter()
                .filter(|(id, _)| tracked.pins.contains_key(&id.tracked))
                .copied()
                .collect()
        };
        let mut still = live(&waited);
        if !still.is_empty() && !deadline.passed() {
            // Counted in before the looks the wait follows, which take the tracked
            // pins' lock, the lock an unpin removes a tracked pin under (see `signal`).
            let _waiting = self.signal.enter();
            loop {
                let seen = self.signal.generation();
                still = live(&waited);
                if still.is_empty() || deadline.passed() {
                    break;
                }
                self.signal.wait_past(seen, deadline);
            }
        }
        // Leases whose callback, up this thread's stack, is waiting for this call: not
        // waited for (they cannot let go before it returns), but not released either.
        still.extend(live(&asked.here));
        RevokeReport {
            asked: asked.called.len(),
            still_pinned: still,
        }
    }

    /// The leases that share a block with `r`, oldest first, with their callbacks
    /// cloned out: one descent per lease found.
    fn leases_over(&self, r: &core::ops::Range<u64>) -> Vec<(SharedPinId, Extent, RevokeFn)> {
        let tracked = self.tracked.lock();
        let mut keys = Vec::new();
        tracked.leases.for_each_overlapping(
            r,
            |_| true,
            |_, slot| {
                keys.push(tracked.lease_keys[slot as usize]);
            },
        );
        keys.sort_unstable();
        keys.into_iter()
            .map(|key| {
                let pin = &tracked.pins[&key];
                let revoke = pin
                    .on_revoke
                    .as_ref()
                    .expect("an indexed lease has a callback");
                let (g, core) = pin.pieces[0];
                (self.pin_id(g, core, key), pin.extent, Arc::clone(revoke))
            })
            .collect()
    }

    /// The leases a pressure round asks for a request of `need` blocks aligned to
    /// `align`: those over held ranges whose release could let it fit (see
    /// `held_that_could_fit`), at most [`PRESSURE_ASKS`], found by looking at no
    /// more than [`PRESSURE_LOOKS`] held ranges, from where the last round stopped
    /// and on around the space. Where this round stops, in the middle of a range's
    /// leases too, the next goes on. Each lease is met once a round, however many of
    /// the ranges it covers. Locks each group in turn, and the tracked pins after each
    /// (never both at once): O((G + PRESSURE_LOOKS + PRESSURE_ASKS) log n), whatever
    /// the leases elsewhere. Returned oldest first.
    pub(crate) fn leases_that_could_help(
        &self,
        need: u64,
        align: u64,
    ) -> Vec<(SharedPinId, Extent, RevokeFn)> {
        let cursor = *self.pressure_cursor.lock();
        let from = cursor.at.min(self.capacity - 1);
        let g0 = self.group_of(from);
        let count = self.groups.len();
        let mut budget = PRESSURE_LOOKS;
        let mut keys: Vec<u64> = Vec::new();
        // Unless a limit stops it, this round sees every held range: the next
        // starts where this one did, with every lease of its first range.
        let mut next = PressureCursor {
            at: from,
            upto: None,
        };
        // The leases of the range at `from` that the last round did not reach.
        let mut resume = cursor.upto;
        // The end of the last range whose leases were all met.
        let mut seen_to = 0;
        // The groups from the cursor's on, then its own again below the cursor.
        'groups: for i in 0..=count {
            let g = (g0 + i) % count;
            let range = &self.groups[g].range;
            let within = match i {
                0 => from..range.end,
                _ if i == count => range.start..from,
                _ => range.clone(),
            };
            let mut ranges = Vec::new();
            let stopped = self
                .lock(g)
                .held_that_could_fit(within, need, align, &mut budget, |r| ranges.push(r));
            let tracked = self.tracked.lock();
            for r in &ranges {
                let upto = if r.start == from { resume.take() } else { None };
                // A lease starting before the last range seen also covers it (it
                // reaches this one): it was met there.
                // (Only when that range lies below: the wrap-around pass starts low.)
                let lo = if seen_to <= r.start { seen_to } else { 0 };
                let rest = tracked.leases.visit_overlapping(r, lo, upto, |_, slot| {
                    let key = tracked.lease_keys[slot as usize];
                    if keys.contains(&key) {
                        return true;
                    }
                    if keys.len() == PRESSURE_ASKS {
                        return false;
                    }
                    keys.push(key);
                    true
                });
                seen_to = r.end;
                if let Some(upto) = rest {
                    // Full, with leases of `r` left: the next round asks them first.
                    next = PressureCursor {
                        at: r.start,
                        upto: Some(upto),
                    };
                    break 'groups;
                }
            }
            if budget == 0 {
                next = PressureCursor {
                    at: stopped % self.capacity,
                    upto: None,
                };
                break;
            }
        }
        *self.pressure_cursor.lock() = next;
        keys.sort_unstable();
        let tracked = self.tracked.lock();
        keys.into_iter()
            .filter_map(|key| {
                // A lease unpinned since it was found is not asked.
                let pin = tracked.pins.get(&key)?;
                let revoke = pin
                    .on_revoke
                    .as_ref()
                    .expect("an indexed lease has a callback");
                let (g, core) = pin.pieces[0];
                Some((self.pin_id(g, core, key), pin.extent, Arc::clone(revoke)))
            })
            .collect()
    }

    /// Calls revoke callbacks with no lock held, and counts them. A lease is not asked
    /// again while it is being asked: leases already asked within this thread's
    /// callback scope (a revoke or pressure round further up the stack) go to
    /// `here`, and leases whose callback runs on another thread now go to
    /// `elsewhere`. Leases unpinned meanwhile are dropped.
    pub(crate) fn call_revokes(&self, leases: Vec<(SharedPinId, Extent, RevokeFn)>) -> Asked {
        let scope = super::reentry::ScopeGuard::enter(self.uid);
        let first = scope.first_asks(leases.iter().map(|(id, _, _)| id.tracked));
        let mut asked = Asked {
            called: Vec::new(),
            elsewhere: Vec::new(),
            here: Vec::new(),
        };
        let mut calls = Vec::new();
        {
            let mut tracked = self.tracked.lock();
            for ((id, extent, revoke), first) in leases.into_iter().zip(first) {
                match tracked.pins.get_mut(&id.tracked) {
                    None => {}
                    Some(_) if !first => asked.here.push((id, extent)),
                    Some(pin) if pin.asking => asked.elsewhere.push((id, extent)),
                    Some(pin) => {
                        pin.asking = true;
                        asked.called.push((id, extent));
                        calls.push(revoke);
                    }
                }
            }
        }
        self.counters
            .revocations
            .fetch_add(asked.called.len() as u64, Ordering::Relaxed);
        for (&(id, extent), revoke) in asked.called.iter().zip(&calls) {
            let revocation = Revocation { id, extent };
            self.call_back(|| revoke(&revocation));
            if let Some(pin) = self.tracked.lock().pins.get_mut(&id.tracked) {
                pin.asking = false;
            }
        }
        asked
    }
}

impl SharedAllocator {
    /// A [`FreeError::Busy`](crate::FreeError::Busy) assembled from group cores, as one
    /// core would give it: a pin over several groups is named by its first piece's id
    /// (what [`SharedPinId::core_pin`] returns) and blocks all of the extent it covers,
    /// not just one group's piece. Takes the tracked table's lock, so call it with no
    /// group locked.
    pub(crate) fn whole_busy(&self, err: crate::FreeError) -> crate::FreeError {
        let crate::FreeError::Busy { extent, pin, .. } = err else {
            return err;
        };
        let tracked = self.tracked.lock();
        let Some(whole) = tracked.pins.get(&pin.seq) else {
            return err; // one group's pin: the core's answer is the whole answer
        };
        let (s, e) = (
            whole.extent.start.max(extent.start),
            (whole.extent.start + whole.extent.len).min(extent.start + extent.len),
        );
        debug_assert!(s < e, "a blocking pin overlaps what it blocks");
        crate::FreeError::Busy {
            extent,
            pin: whole.pieces[0].1,
            blocked: Extent::new(s, e - s),
        }
    }
}
