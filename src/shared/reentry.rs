//! User callbacks that call back in: the rule that keeps them bounded.
//!
//! A pressure hook or a revoke callback runs with no lock held, so it may call any
//! method of the allocator that called it: allocate a commit record, free, pin, commit,
//! revoke. Left alone, such a call could start the very thing that called it (an
//! allocation that fails under pressure runs the hook again, which allocates again, and
//! so on until the stack overflows). The rule:
//!
//! 1. While a thread runs callbacks for an allocator, it holds a *scope* for that
//!    allocator (a thread-local record, one per allocator on the thread's stack).
//! 2. Inside a scope, an allocation never starts a pressure round: it fails plainly
//!    with its `NoSpace`, and `allocate_wait` tries once and does not sleep.
//! 3. A scope remembers the leases it has asked to let go. A `revoke` inside it asks
//!    only leases not asked yet, so each revoke callback runs at most once per
//!    outermost call, and nesting is at most one level per lease.
//! 4. Across threads (a callback that hands work to another thread and waits for it),
//!    at most [`MAX_PRESSURE_ROUNDS`] pressure rounds run at once per allocator; an
//!    allocation that fails while that many run fails plainly. And a lease whose
//!    callback is running, on any thread, is marked in the tracked table
//!    (`SharedAllocator::call_revokes`): another revoke or round waits for it rather
//!    than calling it again.
//!
//! So a callback runs a bounded number of times per outer call, and no chain of
//! callbacks recurses without bound.

use alloc::collections::BTreeSet;
use alloc::vec::Vec;
use core::cell::RefCell;

use crate::sync::{AtomicUsize, Ordering};

/// The most pressure rounds that run at once on one allocator, over all threads.
pub(crate) const MAX_PRESSURE_ROUNDS: usize = 32;

/// One allocator's callbacks running on this thread.
struct Scope {
    /// The allocator's uid.
    uid: u64,
    /// Tracked-pin keys of the leases asked to let go within this scope.
    asked: BTreeSet<u64>,
}

crate::sync::thread_local! {
    /// The scopes this thread is inside, outermost first.
    static SCOPES: RefCell<Vec<Scope>> = const { RefCell::new(Vec::new()) };
}

/// Whether this thread is running a callback of allocator `uid`. While the thread's
/// locals are being torn down (a call from another local's destructor) the answer is
/// yes: no callback round starts then.
pub(crate) fn inside(uid: u64) -> bool {
    SCOPES
        .try_with(|s| s.borrow().iter().any(|scope| scope.uid == uid))
        .unwrap_or(true)
}

/// Holds allocator `uid`'s scope on this thread while callbacks run; the scope ends
/// with the outermost guard (a nested guard for the same allocator shares it).
pub(crate) struct ScopeGuard {
    uid: u64,
    /// Whether this guard opened the scope, and so closes it.
    opened: bool,
}

impl ScopeGuard {
    pub(crate) fn enter(uid: u64) -> Self {
        let opened = SCOPES
            .try_with(|s| {
                let mut scopes = s.borrow_mut();
                if scopes.iter().any(|scope| scope.uid == uid) {
                    return false;
                }
                scopes.push(Scope {
                    uid,
                    asked: BTreeSet::new(),
                });
                true
            })
            .unwrap_or(false);
        ScopeGuard { uid, opened }
    }

    /// Marks the leases keyed `keys` as asked in this scope, and says which of them
    /// were not asked before (in the order given). With the thread's locals torn
    /// down, every lease counts as asked before: none is called.
    pub(crate) fn first_asks(&self, keys: impl Iterator<Item = u64>) -> Vec<bool> {
        let keys: Vec<u64> = keys.collect();
        SCOPES
            .try_with(|s| {
                let mut scopes = s.borrow_mut();
                match scopes.iter_mut().find(|scope| scope.uid == self.uid) {
                    Some(scope) => keys.iter().map(|&k| scope.asked.insert(k)).collect(),
                    None => alloc::vec![false; keys.len()],
                }
            })
            .unwrap_or_else(|_| alloc::vec![false; keys.len()])
    }
}

impl Drop for ScopeGuard {
    fn drop(&mut self) {
        if self.opened {
            let _ = SCOPES.try_with(|s| {
                let mut scopes = s.borrow_mut();
                let at = scopes.iter().rposition(|scope| scope.uid == self.uid);
                debug_assert!(at.is_some(), "the scope this guard opened is gone");
                if let Some(at) = at {
                    scopes.remove(at);
                }
            });
        }
    }
}

/// A pressure round in progress on some thread; counted so that at most
/// [`MAX_PRESSURE_ROUNDS`] run at once.
pub(crate) struct Round<'a> {
    rounds: &'a AtomicUsize,
}

impl<'a> Round<'a> {
    /// Starts a round, unless this thread is inside one of the allocator's callbacks
    /// or the allocator already runs as many rounds as allowed.
    pub(crate) fn start(uid: u64, rounds: &'a AtomicUsize) -> Option<Self> {
        if inside(uid) {
            return None;
        }
        let before = rounds.fetch_add(1, Ordering::SeqCst);
        if before >= MAX_PRESSURE_ROUNDS {
            rounds.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        Some(Round { rounds })
    }
}

impl Drop for Round<'_> {
    fn drop(&mut self) {
        self.rounds.fetch_sub(1, Ordering::SeqCst);
    }
}
