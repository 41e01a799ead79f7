//! Per-allocator identity: a unique id (so handles from one allocator are refused by
//! another) and a seed for the free index's treap priorities.

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

/// A seed for treap priorities. With `std`, it is drawn from the standard library's
/// per-process random keys, so no caller can predict priorities and feed keys in an
/// order that degenerates the tree. Without `std`, it is a mix of the allocator id.
pub(super) fn priority_seed(uid: u64) -> u64 {
    #[cfg(feature = "std")]
    {
        use std::hash::{BuildHasher, RandomState};
        RandomState::new().hash_one(uid)
    }
    #[cfg(not(feature = "std"))]
    {
        let mut z = uid.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD6E8_FEB8_6659_FD93;
        z = (z ^ (z >> 32)).wrapping_mul(0xD6E8_FEB8_6659_FD93);
        z ^ (z >> 32)
    }
}
