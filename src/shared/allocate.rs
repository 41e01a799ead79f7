//! Allocation across groups: where to start, when to move on, waiting, and pressure.

use alloc::vec::Vec;
use core::cell::Cell;
use std::time::Duration;

use super::SharedAllocator;
use super::group::Locked;
use super::signal::Deadline;
use crate::sync::Ordering;
use crate::{AllocError, Extent, Held, Policy, Request, SharedAllocError};

crate::sync::thread_local! {
    /// The group this thread allocates from first, and the uid of the allocator that
    /// handed it out; `usize::MAX` until first use. Another allocator hands out its own.
    static ROTOR: Cell<(u64, usize)> = const { Cell::new((0, usize::MAX)) };
}

/// What the [pressure hook](SharedAllocator::set_pressure_hook) is told.
///
/// ```
/// use pinalloc::SharedAllocator;
/// let alloc = SharedAllocator::new(64);
/// alloc.set_pressure_hook(|p| println!("{} blocks wanted, {} held", p.requested, p.held.total()));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Pressure {
    /// The (minimum) number of blocks asked for.
    pub requested: u64,
    /// Free blocks available to the request now (not pinned, not reserved).
    pub available_blocks: u64,
    /// Deferred blocks, by what holds them.
    pub held: Held,
    /// Free blocks that pins keep out of reach.
    pub pinned_free_blocks: u64,
}

impl SharedAllocator {
    /// Allocates one extent, as [`ExtentAllocator::allocate`](crate::ExtentAllocator::allocate),
    /// inside one allocation group.
    ///
    /// It starts in the goal's group for [`Policy::Near`] and [`Policy::Exact`], at
    /// group 0 for [`Policy::FirstFit`] (so first fit is the lowest address overall),
    /// and at this thread's rotor for best fit; it then tries the other groups whose
    /// lock-free summaries say the request might fit (nearest first for `Near`). A
    /// best-fit or first-fit success moves the thread's rotor to that group.
    ///
    /// When it fails for lack of space while held space would satisfy it, the
    /// [pressure hook](Self::set_pressure_hook) and the revoke callbacks of leases
    /// whose release could let it fit (up to 64, see [`SharedAllocator`]'s "Under
    /// pressure") are called, with no lock held, and it retries once. It locks
    /// every group once to find them: O(G).
    ///
    /// # Errors
    ///
    /// As the core's, in [`SharedAllocError::Core`], plus
    /// [`SharedAllocError::CrossesGroup`] for an exact extent that would
    /// span two groups. [`AllocError::NoSpace`] totals the whole space. Nothing
    /// changes.
    ///
    /// ```
    /// use pinalloc::{Extent, Policy, Request, SharedAllocator};
    /// let alloc = SharedAllocator::builder(1 << 16).groups(4).build();
    /// let e = alloc.allocate(Request::new(8).policy(Policy::Near(40_000)))?;
    /// assert_eq!(e, Extent::new(40_000, 8));
    /// assert_eq!(alloc.allocate(Request::new(8).policy(Policy::FirstFit))?.start, 0);
    /// # Ok::<(), pinalloc::SharedAllocError>(())
    /// ```
    pub fn allocate(&self, request: Request) -> Result<Extent, SharedAllocError> {
        match self.place(&request, false) {
            Err(SharedAllocError::Core(err @ AllocError::NoSpace { .. })) => {
                self.under_pressure(&request, err)
            }
            done => done,
        }
    }

    /// As [`allocate`](Self::allocate), but when it fails for lack of space, waits for
    /// releases (frees, unpins, commits, reader ends) and tries again, until `timeout`
    /// passes. A wake-up between a failed try and the wait is never lost.
    ///
    /// Only its first try may run the pressure hook and revoke callbacks (see
    /// [`allocate`](Self::allocate)); the tries after a wake-up do not. Called from
    /// inside a pressure hook or a revoke callback of this allocator (on the
    /// callback's thread), it tries once and does not wait: the call that ran the
    /// callback is waiting for it to return.
    ///
    /// # Errors
    ///
    /// As [`allocate`](Self::allocate). [`SharedAllocError::TimedOut`], with the figures of
    /// the last `NoSpace`, when the timeout passes. [`AllocError::NoSpace`] at once,
    /// without waiting, for a request longer than a group (no release can make it
    /// fit) and from inside a callback.
    ///
    /// ```
    /// use std::time::Duration;
    /// use pinalloc::{Request, SharedAllocator};
    ///
    /// let alloc = SharedAllocator::new(16);
    /// let e = alloc.allocate(Request::new(16))?;
    /// std::thread::scope(|s| {
    ///     s.spawn(|| {
    ///         std::thread::sleep(Duration::from_millis(10));
    ///         alloc.free(e).unwrap();
    ///     });
    ///     let again = alloc.allocate_wait(Request::new(16), Duration::from_secs(10));
    ///     assert_eq!(again, Ok(e));
    /// });
    /// # Ok::<(), pinalloc::SharedAllocError>(())
    /// ```
    pub fn allocate_wait(
        &self,
        request: Request,
        timeout: Duration,
    ) -> Result<Extent, SharedAllocError> {
        let deadline = Deadline::after(timeout);
        // One pressure round per call, on the first try: later tries follow releases,
        // and the callbacks run a bounded number of times per call.
        let err = match self.allocate(request) {
            Err(SharedAllocError::Core(err @ AllocError::NoSpace { .. })) => err,
            done => return done,
        };
        if request.min_len > self.group_blocks || super::reentry::inside(self.uid) {
            return Err(err.into());
        }
        if deadline.passed() {
            self.counters.wait_timeouts.fetch_add(1, Ordering::Relaxed);
            return Err(timed_out(err));
        }
        // Counted in before the tries that the wait follows, which look at every
        // group under its lock (see `signal`).
        let _waiting = self.signal.enter();
        loop {
            let seen = self.signal.generation();
            let err = match self.place(&request, true) {
                Err(SharedAllocError::Core(err @ AllocError::NoSpace { .. })) => err,
                done => return done,
            };
            if deadline.passed() {
                self.counters.wait_timeouts.fetch_add(1, Ordering::Relaxed);
                return Err(timed_out(err));
            }
            self.counters.waits.fetch_add(1, Ordering::Relaxed);
            self.signal.wait_past(seen, deadline);
        }
    }

    /// Allocates `total_blocks` as few extents, taking every group's lock at once so
    /// that it either takes them all or changes nothing. Each step takes, in the group
    /// that can give the longest run, that run (capped by the group's unreserved
    /// blocks), or the best fit there for what is left.
    ///
    /// # Errors
    ///
    /// [`AllocError::ZeroLength`], or [`AllocError::NoSpace`] when fewer than
    /// `total_blocks` unreserved Free blocks exist. Nothing changes.
    ///
    /// ```
    /// use pinalloc::{Request, SharedAllocator};
    /// let alloc = SharedAllocator::builder(100).groups(4).build();
    /// let got = alloc.allocate_many(60)?;
    /// assert_eq!(got.len(), 3); // groups are 25 blocks long
    /// assert_eq!(got.iter().map(|e| e.len).sum::<u64>(), 60);
    /// # Ok::<(), pinalloc::SharedAllocError>(())
    /// ```
    pub fn allocate_many(&self, total_blocks: u64) -> Result<Vec<Extent>, SharedAllocError> {
        let mut locked = self.lock_all_with_room(total_blocks)?;
        let mut out = Vec::new();
        let mut left = total_blocks;
        // The longest run a group can give without touching its reservations.
        let run = |c: &Locked<'_>| c.largest_free_len().min(c.count_unreserved_free_blocks());
        while left > 0 {
            let core = locked
                .iter_mut()
                .max_by_key(|c| (run(c), core::cmp::Reverse(c.index)))
                .expect("at least one group");
            // Positive: the unreserved blocks of all groups cover what is left.
            let len = run(core).min(left);
            let e = core
                .allocate(Request::new(len))
                .expect("a run within the longest extent and the unreserved blocks fits");
            left -= e.len;
            out.push(e);
        }
        Ok(out)
    }

    /// Registers the pressure hook: called, with no lock held, when an allocation
    /// fails for lack of space but Deferred or pinned Free blocks would satisfy it.
    /// It typically commits an epoch or asks pin holders to let go; the allocation is
    /// then retried once. Calls are counted in
    /// [`SharedCounters::pressure_calls`](crate::SharedCounters). A hook that panics is
    /// caught and counted, and the retry still happens. Replaces any earlier hook.
    ///
    /// # Calling back in
    ///
    /// The hook runs with no lock held and may call any method of this allocator
    /// (allocate its commit record, commit, free, pin, revoke). Such a call never
    /// starts another pressure round: on this thread, while the hook runs, an
    /// allocation that does not fit fails plainly with `NoSpace`, `allocate_wait`
    /// does not wait, and a `revoke` does not ask the leases this round asks. So the
    /// hook runs once per failing allocation, and nothing it does recurses. A hook that
    /// hands an allocation to another thread and waits for it is bounded too: at most
    /// 32 pressure rounds run at once on one allocator, and an allocation that fails
    /// while that many run fails plainly.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use pinalloc::{Request, SharedAllocator};
    ///
    /// let alloc = Arc::new(SharedAllocator::new(16));
    /// let e = alloc.allocate(Request::new(16))?;
    /// alloc.commit(1)?;
    /// alloc.free_on_commit(e)?; // Deferred until epoch 2 commits
    /// let a = Arc::clone(&alloc);
    /// alloc.set_pressure_hook(move |_| { a.commit(a.epoch()).unwrap(); });
    /// assert_eq!(alloc.allocate(Request::new(16))?, e); // the hook committed
    /// assert_eq!(alloc.stats().counters.pressure_calls, 1);
    /// # alloc.clear_pressure_hook();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_pressure_hook(&self, hook: impl Fn(&Pressure) + Send + Sync + 'static) {
        *self.pressure_hook.lock() = Some(alloc::sync::Arc::new(hook));
    }

    /// Removes the pressure hook. A hook that holds an `Arc` of its own allocator
    /// keeps it alive until removed.
    ///
    /// ```
    /// let alloc = pinalloc::SharedAllocator::new(8);
    /// alloc.set_pressure_hook(|_| {});
    /// alloc.clear_pressure_hook();
    /// ```
    pub fn clear_pressure_hook(&self) {
        *self.pressure_hook.lock() = None;
    }

    /// One pass over the groups in this request's order: places `request` in the first
    /// group that can, from the rotor's (or the goal's). `every`: tries every group
    /// under its lock, not skipping one by its summary, as a waiter must (see
    /// `signal`).
    pub(super) fn place(&self, request: &Request, every: bool) -> Result<Extent, SharedAllocError> {
        let n = self.groups.len();
        let min = request.min_len;
        if request.is_plain() && min <= self.capacity {
            // The common request, with nothing to check and nothing to build: each
            // group either places it or has no room for it.
            let first = self.rotor();
            for g in (first..n).chain(0..first) {
                if !every && !self.groups[g].might_fit(min) {
                    continue;
                }
                if let Some(extent) = self.lock(g).allocate_plain(min) {
                    if g != first {
                        ROTOR.with(|r| r.set((self.uid, g)));
                    }
                    return Ok(extent);
                }
            }
            return Err(self.no_space(min).into());
        }
        request.check(self.capacity)?;
        let (first, near) = match request.policy {
            Policy::Exact(start) => {
                let g = self.exact_group(start, min)?;
                return Ok(self.lock(g).allocate(*request)?);
            }
            Policy::Near(goal) => (self.group_of(goal), true),
            Policy::FirstFit => (0, false),
            _ => (self.rotor(), false),
        };
        // `None`: no room there, go on.
        let try_group = |g: usize| -> Option<Result<Extent, SharedAllocError>> {
            if !every && !self.groups[g].might_fit(min) {
                return None;
            }
            match self.lock(g).allocate(self.local_request(g, request)) {
                Err(AllocError::NoSpace { .. }) => None,
                done => Some(done.map_err(SharedAllocError::Core)),
            }
        };
        if near {
            for g in near_order(first, n) {
                if let Some(done) = try_group(g) {
                    return done;
                }
            }
        } else {
            for g in (first..n).chain(0..first) {
                if let Some(done) = try_group(g) {
                    if done.is_ok() {
                        ROTOR.with(|r| r.set((self.uid, g)));
                    }
                    return done;
                }
            }
        }
        Err(self.no_space(min).into())
    }

    /// The group an exact request at `start` for `min` blocks goes to, or
    /// [`SharedAllocError::CrossesGroup`] when those blocks do not lie in one group.
    pub(crate) fn exact_group(&self, start: u64, min: u64) -> Result<usize, SharedAllocError> {
        let g = self.group_of(start);
        let boundary = self.groups[g].range.end;
        if start + min > boundary {
            return Err(SharedAllocError::CrossesGroup {
                extent: Extent::new(start, min),
                boundary,
            });
        }
        Ok(g)
    }

    /// `request` as group `g`'s core should see it: a near-goal request's goal clamped
    /// into the group (another group's core only knows blocks below its end, and the
    /// nearest placement to the goal there is the nearest to the goal clamped in).
    pub(crate) fn local_request(&self, g: usize, request: &Request) -> Request {
        let mut local = *request;
        if let Policy::Near(goal) = request.policy {
            let range = &self.groups[g].range;
            local.policy = Policy::Near(goal.clamp(range.start, range.end - 1));
        }
        local
    }

    /// A [`AllocError::NoSpace`] for `requested` blocks, totalled over every group
    /// (each read under its own lock).
    #[cold]
    pub(crate) fn no_space(&self, requested: u64) -> AllocError {
        let (mut free, mut largest_free, mut reserved, mut pinned_free) = (0, 0, 0, 0);
        let mut deferred = Held::default();
        for g in 0..self.groups.len() {
            let (f, largest, r, p, d) = self.lock(g).space_totals();
            debug_assert!(f <= self.groups[g].range.end - self.groups[g].range.start);
            free += f;
            largest_free = largest_free.max(largest);
            reserved += r;
            pinned_free += p;
            deferred.pins += d.pins;
            deferred.epochs += d.epochs;
        }
        AllocError::NoSpace {
            requested,
            free,
            largest_free,
            reserved,
            deferred,
            pinned_free,
        }
    }

    /// Runs the pressure hook and the revoke callbacks of leases whose release could
    /// let the request fit, if held space would satisfy it, then retries once.
    #[cold]
    fn under_pressure(
        &self,
        request: &Request,
        err: AllocError,
    ) -> Result<Extent, SharedAllocError> {
        let AllocError::NoSpace {
            requested,
            free,
            reserved,
            deferred,
            pinned_free,
            ..
        } = err
        else {
            return Err(err.into());
        };
        let available = free.saturating_sub(reserved).saturating_sub(pinned_free);
        let held = deferred.total() + pinned_free;
        if held == 0 || available.saturating_add(held) < requested || requested > self.group_blocks
        {
            return Err(err.into());
        }
        // Not from inside one of this allocator's callbacks, and not past the
        // allowed number of rounds at once (see `reentry`): then it fails plainly.
        let Some(_round) = super::reentry::Round::start(self.uid, &self.pressure_rounds) else {
            return Err(err.into());
        };
        let hook = self.pressure_hook.lock().clone();
        let leases = self.leases_that_could_help(requested, request.align);
        if hook.is_none() && leases.is_empty() {
            return Err(err.into());
        }
        self.counters.pressure_calls.fetch_add(1, Ordering::Relaxed);
        // One scope for the hook and the revokes: a revoke the hook makes does not ask
        // these leases a second time.
        let scope = super::reentry::ScopeGuard::enter(self.uid);
        if let Some(hook) = hook {
            let pressure = Pressure {
                requested,
                available_blocks: available,
                held: deferred,
                pinned_free_blocks: pinned_free,
            };
            self.call_back(|| hook(&pressure));
        }
        let _asked = self.call_revokes(leases);
        drop(scope);
        match self.place(request, false) {
            Err(SharedAllocError::Core(AllocError::NoSpace { .. })) => {
                Err(self.no_space(requested).into())
            }
            done => done,
        }
    }
}

/// The [`SharedAllocError::TimedOut`] for a wait whose last try failed with
/// `no_space`.
fn timed_out(no_space: AllocError) -> SharedAllocError {
    match no_space {
        AllocError::NoSpace {
            requested,
            free,
            largest_free,
            reserved,
            deferred,
            pinned_free,
        } => SharedAllocError::TimedOut {
            requested,
            free,
            largest_free,
            reserved,
            deferred,
            pinned_free,
        },
        other => other.into(),
    }
}

impl SharedAllocator {
    /// This thread's rotor: the group it allocates from first, handed out by this
    /// allocator's counter when the thread first allocates.
    fn rotor(&self) -> usize {
        let n = self.groups.len();
        ROTOR.with(|r| {
            let (uid, mut g) = r.get();
            if g == usize::MAX || uid != self.uid {
                g = self.next_rotor.fetch_add(1, Ordering::Relaxed);
                r.set((self.uid, g));
            }
            // Usually a group index already: no division.
            if g < n { g } else { g % n }
        })
    }
}

/// Every group once, nearest to `first` first: `first`, one above, one below, two
/// above, and so on, without wrapping around.
fn near_order(first: usize, n: usize) -> impl Iterator<Item = usize> {
    (0..n)
        .flat_map(move |d| {
            let up = first + d;
            let down = first.checked_sub(d).filter(|_| d > 0);
            [(up < n).then_some(up), down]
        })
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::near_order;
    use std::vec::Vec;

    #[test]
    fn near_order_visits_every_group_once_nearest_first() {
        assert_eq!(near_order(1, 4).collect::<Vec<_>>(), [1, 2, 0, 3]);
        assert_eq!(near_order(3, 4).collect::<Vec<_>>(), [3, 2, 1, 0]);
        for n in 1..9 {
            for first in 0..n {
                let order: Vec<usize> = near_order(first, n).collect();
                assert_eq!(order[0], first);
                let mut seen = order.clone();
                seen.sort_unstable();
                seen.dedup();
                assert_eq!(seen.len(), n, "n {n} first {first}");
                let dist: Vec<usize> = order.iter().map(|&g| g.abs_diff(first)).collect();
                assert!(dist.windows(2).all(|w| w[0] <= w[1]), "{order:?}");
            }
        }
    }
}
