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
//! | 0 | `Space::resizing` (a region's, `region/space.rs`) | a region's grow or shrink (then the groups, and the backing's length); its `stats` and `is_empty` (then `tracked` and each group in turn) |
//! | 0 | `Lends::state` (one allocation's lends, `region/span.rs`) | a lend's check and pin; an owner's discard and free of lent bytes; a lend's discard |
//! | 1 | `SharedAllocator::epochs` | commit and its halves, abort, begin/end read (then takes every group, ascending); `readers` (then each group in turn) |
//! | 1 | `Space::gates` (a region's blocks freed on commit, `region/span.rs`) | registering a gate; a sweep's look at each gate's runs (then each group in turn); the discard and unpin come after it |
//! | 1 | `SharedAllocator::tracked` | pins with an owner, a revoke callback or several groups; `stats` and `pins` (then each group in turn) |
//! | 2 | `Group::core`, ascending index | one core operation |
//! | 3 | `Signal::lock` | the condvar handshake only; nothing is taken under it |
//! | 3 | `SharedAllocator::pressure_hook` | cloning the callback out; nothing is taken under it |
//! | 3 | `SharedAllocator::pressure_cursor` | reading or setting where pressure rounds go on; nothing is taken under it |
//! | 3 | `Space::detached` | the detached set only; nothing is taken under it |
//! | 3 | `SharedAllocator::tokens` | making, finding or forgetting a pin's token (made under the pin's group or `tracked`); nothing is taken under it |
//!
//! `SharedAllocator::tracked` is also taken, with nothing under it, to mark a lease
//! as being asked before its revoke callback runs and to clear the mark after.
//!
//! No user callback ever runs while any of these is held: callbacks are cloned out
//! under the lock and called after it is dropped. The exceptions are a `Backing`'s
//! `discard`, which runs under its allocation's `Lends::state` so that no lend leaves
//! halfway through it (that lock is the allocation's own, so it stalls only that
//! allocation's handles), and its `set_len_bytes`, which runs under the region's
//! `Space::resizing` so that one resize runs at a time (it stalls only other resizes
//! and the region's `stats` and `is_empty`).

#[cfg(not(shuttle))]
pub(crate) use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
#[cfg(not(shuttle))]
pub(crate) use parking_lot::{Mutex, MutexGuard};

/// Thread-local storage: shuttle runs its threads on one OS thread, so its own.
#[cfg(not(shuttle))]
pub(crate) use std::thread_local;

#[cfg(shuttle)]
pub(crate) use shuttle::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
#[cfg(shuttle)]
pub(crate) use shuttle::thread_local;
#[cfg(shuttle)]
pub(crate) use shuttle_lock::{Mutex, MutexGuard};

/// The lock of one allocation group: [`GroupLock`] in a normal build, shuttle's mutex
/// under shuttle.
#[cfg(not(shuttle))]
pub(crate) type GroupMutex<T> = lock_api::Mutex<GroupLock, T>;
/// A held [`GroupMutex`].
#[cfg(not(shuttle))]
pub(crate) type GroupGuard<'a, T> = lock_api::MutexGuard<'a, GroupLock, T>;
#[cfg(shuttle)]
pub(crate) use shuttle_lock::{Mutex as GroupMutex, MutexGuard as GroupGuard};

/// The raw lock of an allocation group. Every allocate and free takes one, for a
/// hundred nanoseconds or so, and almost always finds it free.
///
/// It is released by a plain store. `parking_lot`'s mutex releases with a
/// compare-and-swap, to see whether a thread sleeps on it, which costs about as much
/// as the taking: a second atomic read-modify-write on every shared allocate and
/// free. The price is that nothing sleeps on this lock to be woken: a thread that
/// finds it held spins briefly, then yields, then naps for 1 µs, doubling up to 64 µs,
/// between tries.
///
/// A napping waiter counts itself in `waiting_long`, and while any does, a thread
/// arriving does not take the lock even when it is free: it waits its turn like the
/// others. So a thread that takes a group again and again (one allocating from its
/// group, say) cannot keep a napping waiter out, such as a commit that has taken the
/// groups below and waits for this one.
///
/// Group locks are held for one core operation, or, by the calls that take every
/// group (a commit, a reader's first begin, `stats`, a full check), for as long as
/// those take.
#[cfg(not(shuttle))]
#[derive(Debug)]
pub(crate) struct GroupLock {
    held: core::sync::atomic::AtomicBool,
    /// Waiters past their spins and yields. Only a hint for who goes first: the lock
    /// itself is `held`.
    waiting_long: core::sync::atomic::AtomicU32,
}

/// Tries spent spinning, then yielding, before a waiter starts to nap.
#[cfg(not(shuttle))]
const SPINS: u32 = 128;
#[cfg(not(shuttle))]
const YIELDS: u32 = 32;
/// The longest nap between tries is `1 << MAX_DOUBLINGS` µs.
#[cfg(not(shuttle))]
const MAX_DOUBLINGS: u32 = 6;

#[cfg(not(shuttle))]
impl GroupLock {
    /// Takes the lock if it is free, whoever waits.
    #[inline]
    fn grab(&self) -> bool {
        self.held
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    /// Takes the lock if it is free and no napping waiter is ahead.
    #[inline]
    fn try_take(&self) -> bool {
        self.waiting_long.load(Ordering::Relaxed) == 0 && self.grab()
    }

    #[cold]
    fn take_contended(&self) {
        for tries in 0..SPINS + YIELDS {
            if !self.held.load(Ordering::Relaxed) && self.try_take() {
                return;
            }
            if tries < SPINS {
                core::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        self.waiting_long.fetch_add(1, Ordering::Relaxed);
        let mut doublings = 0;
        while self.held.load(Ordering::Relaxed) || !self.grab() {
            std::thread::sleep(std::time::Duration::from_micros(1 << doublings));
            doublings = (doublings + 1).min(MAX_DOUBLINGS);
        }
        self.waiting_long.fetch_sub(1, Ordering::Relaxed);
    }
}

// SAFETY: mutual exclusion, which is what the trait asks for. `lock` and `try_lock`
// return having taken the lock only by swapping `false` for `true` in `held` with
// Acquire, and `unlock` stores `false` with Release, so at most one holder exists at a
// time and each holder sees every write of the holders before it. `waiting_long`
// only decides who tries.
#[cfg(not(shuttle))]
#[allow(unsafe_code)]
unsafe impl lock_api::RawMutex for GroupLock {
    #[allow(clippy::declare_interior_mutable_const)]
    const INIT: Self = GroupLock {
        held: core::sync::atomic::AtomicBool::new(false),
        waiting_long: core::sync::atomic::AtomicU32::new(0),
    };
    type GuardMarker = lock_api::GuardSend;

    #[inline]
    fn lock(&self) {
        if !self.try_take() {
            self.take_contended();
        }
    }

    /// Fails while a napping waiter is ahead, even when the lock is free.
    #[inline]
    fn try_lock(&self) -> bool {
        self.try_take()
    }

    /// # Safety
    ///
    /// Only the holder may call it, once, as `lock_api`'s guard does on drop.
    #[inline]
    unsafe fn unlock(&self) {
        self.held.store(false, Ordering::Release);
    }
}

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

        pub(crate) fn get_mut(&mut self) -> &mut T {
            self.0
                .get_mut()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
        }
    }
}

#[cfg(all(test, not(shuttle)))]
mod tests {
    use super::GroupMutex;
    use alloc::vec::Vec;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    /// Threads adding to a counter that is read and written back in two steps: any
    /// overlap of two holders loses an addition.
    #[test]
    fn a_group_lock_lets_one_holder_in_at_a_time() {
        let lock = Arc::new(GroupMutex::new(0u64));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let lock = Arc::clone(&lock);
                std::thread::spawn(move || {
                    for _ in 0..20_000 {
                        let mut held = lock.lock();
                        let seen = *held;
                        std::hint::black_box(&seen);
                        *held = seen + 1;
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(*lock.lock(), 80_000);
    }

    /// A waiter that naps is ahead of a thread arriving at the free lock: the lock
    /// is let go while the waiter naps, and a `try_lock` right after fails (the
    /// waiter either holds it by then or is still counted as waiting). Without the
    /// count, the arriving thread would take it, as often as it came.
    #[test]
    fn a_napping_waiter_goes_before_a_thread_arriving() {
        let lock = Arc::new(GroupMutex::new(()));
        let held = lock.lock();
        let (asking, done) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        );
        let waiter = {
            let (lock, asking, done) = (Arc::clone(&lock), Arc::clone(&asking), Arc::clone(&done));
            std::thread::spawn(move || {
                asking.store(true, Ordering::SeqCst);
                let got = lock.lock();
                while !done.load(Ordering::SeqCst) {
                    std::thread::yield_now();
                }
                drop(got);
            })
        };
        while !asking.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
        // Long enough to spend its spins and yields and start napping.
        std::thread::sleep(Duration::from_millis(100));
        drop(held);
        let barged = lock.try_lock().is_some();
        done.store(true, Ordering::SeqCst);
        waiter.join().unwrap();
        assert!(
            !barged,
            "a thread arriving took the lock ahead of a napping waiter"
        );
        assert!(lock.try_lock().is_some(), "free once the waiter is done");
    }

    /// A waiter outlasts its spins and yields and goes to sleep, and still takes the
    /// lock once it is let go, seeing what the holder wrote.
    #[test]
    fn a_group_lock_waiter_that_sleeps_still_gets_in() {
        let lock = Arc::new(GroupMutex::new(0u64));
        let held = lock.lock();
        let waiting = Arc::new(AtomicBool::new(false));
        let waiter = {
            let (lock, waiting) = (Arc::clone(&lock), Arc::clone(&waiting));
            std::thread::spawn(move || {
                waiting.store(true, Ordering::SeqCst);
                *lock.lock()
            })
        };
        while !waiting.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
        std::thread::sleep(Duration::from_millis(20));
        let mut held = held;
        *held = 7;
        drop(held);
        assert_eq!(waiter.join().unwrap(), 7);
        assert!(lock.try_lock().is_some(), "free again");
    }
}
