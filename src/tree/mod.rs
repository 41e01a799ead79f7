//! Ordered structures in node arenas, with nothing of the free index in them: the B+
//! tree every index is built on ([`bplus`]), ranges under ids for blocking pins and
//! leases ([`intervals`]), and per-block pin counts and Deferred marks ([`coverage`]).

pub(crate) mod bplus;
pub(crate) mod coverage;
pub(crate) mod filter;
pub(crate) mod intervals;

use bplus::Summary;

/// A value a structure keeps only to go faster (a lookup made ahead, a place last
/// seen): two structures are equal whatever their caches hold.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Cache<T>(pub(crate) T);

impl<T> PartialEq for Cache<T> {
    #[inline]
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// The largest value in a subtree: in the address order, its longest free extent; in
/// [`intervals::Intervals`], the furthest end.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct MaxValue(pub(crate) u64);

impl<K: bplus::Key> Summary<K, u64> for MaxValue {
    #[inline]
    fn of(_: &K, value: &u64) -> Self {
        MaxValue(*value)
    }

    #[inline]
    fn join(self, o: Self) -> Self {
        MaxValue(self.0.max(o.0))
    }

    #[inline]
    fn replace(cur: Self, old: Self, new: Self) -> Option<Self> {
        if new.0 >= cur.0 {
            Some(new)
        } else if old.0 < cur.0 {
            Some(cur) // the largest is another entry, still there
        } else {
            None
        }
    }
}

/// Two words as one key ordered by `hi`, then `lo`.
#[inline]
pub(crate) fn pair(hi: u64, lo: u64) -> u128 {
    (u128::from(hi) << 64) | u128::from(lo)
}

/// The words of a [`pair`].
#[inline]
pub(crate) fn unpair(key: u128) -> (u64, u64) {
    ((key >> 64) as u64, key as u64)
}
