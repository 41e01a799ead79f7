//! The wake-up for waiters: a waiter count, a generation counter and a condvar.
//!
//! 1. A waiter counts itself in ([`Signal::enter`]) before anything else, and out when
//!    it is done.
//! 2. Then, each round, it reads the generation and checks its condition under the
//!    lock that guards what it waits for: the group locks (every group's, for an
//!    allocation: it does not skip a group by its summary) or the tracked pins' lock.
//! 3. If the condition fails, it waits only while the generation is still the one it
//!    read: [`Signal::wait_past`].
//! 4. Every release (blocks becoming Free, a tracked pin gone) is made under such a
//!    lock, and then calls [`Signal::bump_with`], which moves the generation and
//!    wakes the waiters only if the count says there are any.
//!
//! No wake-up is lost. Take a release R and a waiter W whose check missed it. W's
//! check took the lock R changed things under before R did, so W's count-in, before
//! that check, happens before R's lock, and so before `bump_with` reads the count: it
//! sees W and moves the generation. W read the generation before its check, so
//! before the move: W's `wait_past` either sees the new generation and does not
//! sleep, or sleeps and is notified, under the signal lock, which W holds from its
//! generation check until the condvar releases it. A release with no one waiting
//! costs one atomic load; only waiters pay for the rest.
//!
//! An async waiter (the `async` feature) follows the same steps, with a waker in
//! place of the sleep: it registers its waker under the signal lock only if the
//! generation is still the one it read before its check
//! ([`Signal::register`]), and every wake takes that lock after moving the
//! generation. So either the registration sees the move and the future checks
//! again, or the wake finds the waker. A wake passes over a waiter that needs a
//! longer free run than any group might now have (the groups' summaries, published
//! before the release's `bump_with`), and over one waiting for an extent in groups the
//! release did not touch: nothing it waits for changed, and the release that
//! changes it wakes it then. A dropped future forgets its waker and counts out;
//! the others' registrations are untouched, so no wake-up is lost for them.

use core::ops::Range;
use std::collections::BTreeMap;
use std::task::Waker;
use std::time::{Duration, Instant};
use std::vec::Vec;

use crate::sync::{AtomicU64, AtomicUsize, Condvar, Mutex, Ordering};

/// When a wait gives up: `None` for a timeout too long to represent, which never
/// passes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadline(Option<Instant>);

impl Deadline {
    pub(crate) fn after(timeout: Duration) -> Self {
        Deadline(Instant::now().checked_add(timeout))
    }

    pub(crate) fn passed(&self) -> bool {
        self.0.is_some_and(|d| Instant::now() >= d)
    }

    /// The instant to sleep until: the deadline, or an hour from now for none.
    fn sleep_until(&self) -> Instant {
        self.0
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600))
    }
}

#[derive(Debug)]
pub(crate) struct Signal {
    /// Moved by every release that finds a waiter counted in; waiters sleep only
    /// while it is unchanged.
    generation: AtomicU64,
    /// Waiters counted in ([`Signal::enter`]) and not yet out.
    count_waiting: AtomicUsize,
    /// The condvar's lock, which also keeps the async waiters' wakers.
    lock: Mutex<Wakers>,
    condvar: Condvar,
}

/// The wakers of async waiters (the `async` feature's futures), by registration
/// number, each with what could satisfy it. A release wakes, and forgets, the ones
/// it could satisfy; a future registers again each time it is polled and does not
/// finish.
#[derive(Debug, Default)]
#[cfg_attr(not(feature = "async"), allow(dead_code))] // filled by the futures only
pub(crate) struct Wakers {
    next: u64,
    by_id: BTreeMap<u64, (Waker, Need)>,
}

/// What an async waiter waits for.
#[derive(Debug, Clone)]
#[cfg_attr(not(feature = "async"), allow(dead_code))]
pub(crate) enum Need {
    /// A free run of this many blocks.
    Run(u64),
    /// A release in one of these groups (its extent's).
    ReleaseIn(Range<usize>),
}

impl Signal {
    pub(crate) fn new() -> Self {
        Signal {
            generation: AtomicU64::new(0),
            count_waiting: AtomicUsize::new(0),
            lock: Mutex::new(Wakers::default()),
            condvar: Condvar::new(),
        }
    }

    /// The generation to pass to [`wait_past`](Self::wait_past); read it *before*
    /// checking the condition.
    #[inline]
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Announces a release, made under the lock that guards it, to every waiting
    /// thread, and to each async waiter whose need the predicate `could` (made only
    /// when someone waits) says the release might satisfy. Threads recheck.
    #[inline]
    pub(crate) fn bump_with<P: Fn(&Need) -> bool>(&self, could: impl FnOnce() -> P) {
        if self.count_waiting.load(Ordering::SeqCst) > 0 {
            self.wake(&could());
        }
    }

    #[cold]
    fn wake(&self, could: &dyn Fn(&Need) -> bool) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        let ready: Vec<(Waker, Need)>;
        {
            let mut wakers = self.lock.lock();
            self.condvar.notify_all();
            let all = core::mem::take(&mut wakers.by_id);
            let (wake, keep): (BTreeMap<_, _>, BTreeMap<_, _>) =
                all.into_iter().partition(|(_, (_, need))| could(need));
            wakers.by_id = keep;
            ready = wake.into_values().collect();
        }
        // Outside the lock: a waker may run its task at once, and dropping the last
        // reference to a task may drop a future of this allocator, which takes it.
        for (waker, _) in ready {
            waker.wake();
        }
    }

    /// Counts an async waiter in (as [`enter`](Self::enter), for a future that
    /// cannot hold a guard); [`count_out`](Self::count_out) when it is done.
    #[cfg_attr(not(feature = "async"), allow(dead_code))]
    pub(crate) fn count_in(&self) {
        self.count_waiting.fetch_add(1, Ordering::SeqCst);
    }

    /// Counts an async waiter out.
    #[cfg_attr(not(feature = "async"), allow(dead_code))]
    pub(crate) fn count_out(&self) {
        self.count_waiting.fetch_sub(1, Ordering::SeqCst);
    }

    /// Registers `waker` for the next release that could satisfy `needs`, replacing
    /// the registration `id` names; or, if the generation moved past `seen` since the
    /// waiter's check, registers nothing and returns `false`: check again. The waiter
    /// is counted in.
    #[cfg_attr(not(feature = "async"), allow(dead_code))]
    pub(crate) fn register(
        &self,
        id: &mut Option<u64>,
        seen: u64,
        waker: &Waker,
        needs: Need,
    ) -> bool {
        let mut wakers = self.lock.lock();
        if self.generation.load(Ordering::SeqCst) != seen {
            return false;
        }
        // The replaced waker is dropped after the lock (see `wake`).
        let _old = id.take().and_then(|old| wakers.by_id.remove(&old));
        let new = wakers.next;
        wakers.next += 1;
        wakers.by_id.insert(new, (waker.clone(), needs));
        *id = Some(new);
        drop(wakers);
        true
    }

    /// Forgets a registration, if it is still there (a release may have woken and
    /// forgotten it already).
    #[cfg_attr(not(feature = "async"), allow(dead_code))]
    pub(crate) fn unregister(&self, id: Option<u64>) {
        if let Some(id) = id {
            // Dropped after the lock (see `wake`).
            let gone = self.lock.lock().by_id.remove(&id);
            drop(gone);
        }
    }

    /// Counts a waiter in until the guard drops: before its first check of what it
    /// waits for (see the module docs).
    pub(crate) fn enter(&self) -> Waiting<'_> {
        self.count_waiting.fetch_add(1, Ordering::SeqCst);
        Waiting(self)
    }

    /// Sleeps until the generation moves past `seen` or `deadline` passes; callers
    /// recheck their condition and the deadline either way. The caller is counted in
    /// ([`enter`](Self::enter)).
    pub(crate) fn wait_past(&self, seen: u64, deadline: Deadline) {
        debug_assert!(self.count_waiting.load(Ordering::SeqCst) > 0);
        let mut guard = self.lock.lock();
        while self.generation.load(Ordering::SeqCst) == seen {
            if deadline.passed() {
                break;
            }
            guard = self.condvar.wait_until(guard, deadline.sleep_until());
        }
        drop(guard);
    }
}

/// A waiter counted in; counted out when dropped.
#[must_use = "a waiter is counted out when this guard drops"]
pub(crate) struct Waiting<'a>(&'a Signal);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.count_waiting.fetch_sub(1, Ordering::SeqCst);
    }
}
