//! The wake-up for waiters: a generation counter plus a condvar.
//!
//! 1. A waiter reads the generation, then checks its condition under the group locks.
//! 2. If the condition fails, it waits only while the generation is still the one it
//!    read: [`Signal::wait_past`].
//! 3. Every release (blocks becoming Free) calls [`Signal::bump`] after its group lock
//!    is dropped.
//!
//! No wake-up is lost. `bump` increments the generation and then looks at the waiter
//! count; `wait_past` raises the waiter count and then looks at the generation, both
//! sequentially consistent, so at least one of them sees the other. If `bump` sees no
//! waiter, the waiter sees the new generation and does not sleep. If `bump` sees a
//! waiter, it notifies under the signal lock, which the waiter holds from its
//! generation check until the condvar releases it, so the notification cannot fall
//! between the check and the sleep. A release with no one waiting costs one atomic
//! increment and one load.

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
    /// Incremented by every release; waiters sleep only while it is unchanged.
    generation: AtomicU64,
    /// Threads between raising it in `wait_past` and lowering it after waking.
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

    /// Announces a release and wakes every waiter.
    #[inline]
    pub(crate) fn bump(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        if self.count_waiting.load(Ordering::SeqCst) > 0 {
            self.wake();
        }
    }

    #[cold]
    fn wake(&self) {
        let _guard = self.lock.lock();
        self.condvar.notify_all();
    }

    /// Sleeps until the generation moves past `seen` or `deadline` passes; callers
    /// recheck their condition and the deadline either way.
    pub(crate) fn wait_past(&self, seen: u64, deadline: Deadline) {
        let mut guard = self.lock.lock();
        self.count_waiting.fetch_add(1, Ordering::SeqCst);
        while self.generation.load(Ordering::SeqCst) == seen {
            if deadline.passed() {
                break;
            }
            guard = self.condvar.wait_until(guard, deadline.sleep_until());
        }
        self.count_waiting.fetch_sub(1, Ordering::SeqCst);
        drop(guard);
    }
}
