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
//!    lock, and then calls [`Signal::bump`], which moves the generation and wakes the
//!    waiters only if the count says there are any.
//!
//! No wake-up is lost. Take a release R and a waiter W whose check missed it. W's
//! check took the lock R changed things under before R did, so W's count-in, before
//! that check, happens before R's lock, and so before `bump` reads the count: `bump`
//! sees W and moves the generation. W read the generation before its check, so
//! before the move: W's `wait_past` either sees the new generation and does not
//! sleep, or sleeps and is notified, under the signal lock, which W holds from its
//! generation check until the condvar releases it. A release with no one waiting
//! costs one atomic load; only waiters pay for the rest.

use std::time::{Duration, Instant};

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
    lock: Mutex<()>,
    condvar: Condvar,
}

impl Signal {
    pub(crate) fn new() -> Self {
        Signal {
            generation: AtomicU64::new(0),
            count_waiting: AtomicUsize::new(0),
            lock: Mutex::new(()),
            condvar: Condvar::new(),
        }
    }

    /// The generation to pass to [`wait_past`](Self::wait_past); read it *before*
    /// checking the condition.
    #[inline]
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Announces a release, made under the lock that guards it, to every waiter.
    #[inline]
    pub(crate) fn bump(&self) {
        if self.count_waiting.load(Ordering::SeqCst) > 0 {
            self.wake();
        }
    }

    #[cold]
    fn wake(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        let _guard = self.lock.lock();
        self.condvar.notify_all();
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
