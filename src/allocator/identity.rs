//! Per-allocator identity: a unique id, so handles from one allocator are refused by
//! another.

#[cfg(target_has_atomic = "64")]
use core::sync::atomic::AtomicU64 as Counter;
#[cfg(not(target_has_atomic = "64"))]
use core::sync::atomic::AtomicUsize as Counter;
use core::sync::atomic::Ordering;

/// A process-wide unique allocator id (never 0).
#[allow(clippy::unnecessary_cast)] // a no-op where the counter is already 64 bits
pub(crate) fn next_uid() -> u64 {
    static NEXT: Counter = Counter::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed) as u64
}
