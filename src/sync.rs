//! The locks and the atomics that threads share, from one place, so that the
//! interleaving checks can swap them: a normal build uses `parking_lot` and `core` atomics;
//! a build with `--cfg shuttle` uses shuttle's, which explores thread schedules
//! (`RUSTFLAGS="--cfg shuttle" cargo test --test interleave`).
//!
//! # Lock order
//!
//! This is the one place the order is written down. A thread may take locks only
//! downwards in this list, and never two of the same level except groups, which it
//! takes in ascending group index:
//!
//! | level | lock | held for |
//! |---|---|---|
//! | 0 | `Lends::state` (one allocation's lends, `backing/span.rs`) | a lend's check and pin; an owner's discard and free of lent bytes; a lend's discard |
//! | 1 | `SharedAllocator::epochs` | commit, begin/end read (then takes every group, ascending) |
//! | 1 | `SharedAllocator::tracked` | pins with an owner, a revoke callback or several groups; `stats` (then takes every group, ascending) |
//! | 2 | `Group::core`, ascending index | one core operation |
//! | 3 | `Signal::lock` | the condvar handshake only; nothing is taken under it |
//! | 3 | `SharedAllocator::pressure_hook` | cloning the callback out; nothing is taken under it |
//! | 3 | `Space::detached` | the detached set only; nothing is taken under it |
//!
//! `SharedAllocator::tracked` is also taken, with nothing under it, to mark a lease
//! as being asked before its revoke callback runs and to clear the mark after.
//!
//! No user callback ever runs while any of these is held: callbacks are cloned out
//! under the lock and called after it is dropped. The one exception is a `Backing`'s
//! `discard`, which runs under its allocation's `Lends::state` so that no lend leaves
//! halfway through it; that lock is the allocation's own, so it stalls only that
//! allocation's handles.

#[cfg(not(shuttle))]
pub(crate) use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
#[cfg(not(shuttle))]
pub(crate) use parking_lot::{Mutex, MutexGuard};

/// Thread-local storage: shuttle runs its threads on one OS thread, so its own.
#[cfg(not(shuttle))]
pub(crate) use std::thread_local;

#[cfg(shuttle)]
pub(crate) use shuttle::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
#[cfg(shuttle)]
pub(crate) use shuttle::thread_local;
#[cfg(shuttle)]
pub(crate) use shuttle_lock::{Mutex, MutexGuard};

use std::time::Instant;

/// A condition variable over [`Mutex`], with the one wait this crate needs.
#[derive(Debug, Default)]
pub(crate) struct Condvar {
    #[cfg(not(shuttle))]
    inner: parking_lot::Condvar,
    #[cfg(shuttle)]
    inner: shuttle::sync::Condvar,
}

impl Condvar {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Waits for a notification or until `deadline`, releasing `guard` meanwhile.
    /// Spurious wake-ups are possible; callers recheck their condition.
    #[cfg(not(shuttle))]
    pub(crate) fn wait_until<'a, T>(
        &self,
        mut guard: MutexGuard<'a, T>,
        deadline: Instant,
    ) -> MutexGuard<'a, T> {
        let _ = self.inner.wait_until(&mut guard, deadline);
        guard
    }

    /// Under shuttle, time does not pass: the wait ends only on a notification, so a
    /// lost wake-up shows up as a deadlock, which shuttle reports.
    #[cfg(shuttle)]
    pub(crate) fn wait_until<'a, T>(
        &self,
        guard: MutexGuard<'a, T>,
        deadline: Instant,
    ) -> MutexGuard<'a, T> {
        let dur = deadline.saturating_duration_since(Instant::now());
        match self.inner.wait_timeout(guard, dur) {
            Ok((g, _)) => g,
            Err(poisoned) => poisoned.into_inner().0,
        }
    }

    pub(crate) fn notify_all(&self) {
        self.inner.notify_all();
    }
}

#[cfg(shuttle)]
mod shuttle_lock {
    //! shuttle's mutex with `parking_lot`'s face: `lock()` returns the guard, and a
    //! panic while holding it does not poison it.

    pub(crate) type MutexGuard<'a, T> = shuttle::sync::MutexGuard<'a, T>;

    #[derive(Debug, Default)]
    pub(crate) struct Mutex<T>(shuttle::sync::Mutex<T>);

    impl<T> Mutex<T> {
        pub(crate) fn new(value: T) -> Self {
            Mutex(shuttle::sync::Mutex::new(value))
        }

        pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
            self.0
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
        }
    }
}
