//! The free index's size side: an exact class per length up to [`EXACT_MAX`] (its
//! starts, see `class.rs`), and one `(len, start)` tree for the longer extents, with
//! the residues of its starts mod 64 under each child. Best fit, and the aligned
//! searches by length the address side falls back on.

use super::aligned::View;
use super::class::Class;
use super::ordered::Ordered;
use super::{EXACT_MAX, bucket, fit, placeable};
use crate::Extent;
use crate::tree::bplus::{self, Summary};
use crate::tree::{pair, unpair};

/// What a size-order tree knows of a subtree: which residues of `start mod 64` occur
/// there, so that an aligned best fit can skip subtrees where no start has room for
/// its padding.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Residues(pub(super) u64);

/// A size-order key's start: an exact class's key is the start itself, the long
/// extents' key is [`size_key`], whose low half is the start.
pub(crate) trait StartOf: bplus::Key {
    fn start(self) -> u64;
}

impl StartOf for u64 {
    #[inline]
    fn start(self) -> u64 {
        self
    }
}

impl StartOf for u128 {
    #[inline]
    fn start(self) -> u64 {
        self as u64
    }
}

impl<K: StartOf, V: bplus::Value> Summary<K, V> for Residues {
    #[inline]
    fn of(key: &K, _: &V) -> Self {
        Residues(1 << (key.start() % 64))
    }

    #[inline]
    fn join(self, o: Self) -> Self {
        Residues(self.0 | o.0)
    }

    #[inline]
    fn replace(cur: Self, old: Self, new: Self) -> Option<Self> {
        (old.0 & !new.0 == 0).then_some(Residues(cur.0 | new.0))
    }
}

/// The residues `r` of `start mod 64` from which `start` needs at most `slack`
/// blocks of padding to reach a multiple of `align` (a power of two, at most 64).
pub(super) fn residues_with_room(align: u64, slack: u64) -> u64 {
    debug_assert!(align.is_power_of_two() && align <= 64 && slack < align);
    // In one period of `align`: residue 0, and the last `slack` residues.
    let period = if slack == 0 {
        1
    } else {
        1 | ((1u64 << slack) - 1) << (align - slack)
    };
    let period = if align == 64 {
        period
    } else {
        period & ((1u64 << align) - 1)
    };
    (0..64 / align).fold(0, |acc, i| acc | period << (i * align))
}

/// The bit of an exact class.
#[inline]
pub(super) fn class_bit(len: u64) -> u128 {
    debug_assert!((1..=EXACT_MAX).contains(&len));
    1u128 << (len - 1)
}

/// The class bits of lengths `len..=EXACT_MAX`.
#[inline]
pub(super) fn classes_from(len: u64) -> u128 {
    if len > EXACT_MAX {
        0
    } else {
        u128::MAX << (len - 1)
    }
}

/// Which way [`Ordered::of_len_with_room`] looks from its address.
#[derive(Clone, Copy)]
pub(super) enum Side {
    Before,
    After,
}

/// The size order's key: length first, then start.
#[inline]
pub(super) fn size_key(len: u64, start: u64) -> u128 {
    pair(len, start)
}

/// `(len, start)` of a size key.
#[inline]
pub(super) fn size_of_key(key: u128) -> (u64, u64) {
    unpair(key)
}

/// The least padding to a multiple of `align` (at most 64) from any start whose
/// residue mod 64 is in `residues`; `u64::MAX` for none.
pub(super) fn least_padding(residues: u64, align: u64) -> u64 {
    debug_assert!(align.is_power_of_two() && align <= 64);
    let mut folded = residues;
    let mut shift = align;
    while shift < 64 {
        folded |= folded >> shift;
        shift *= 2;
    }
    let folded = if align == 64 {
        folded
    } else {
        folded & ((1 << align) - 1)
    };
    match folded {
        0 => u64::MAX,
        _ if folded & 1 != 0 => 0,
        _ => align - (63 - u64::from(folded.leading_zeros())),
    }
}

impl Ordered {
    /// The largest free extent, the lowest one among equals.
    pub(crate) fn largest(&self) -> Option<Extent> {
        let len = self.largest_len();
        if len == 0 {
            return None;
        }
        if len > EXACT_MAX {
            let p = self.by_size.ceil(size_key(len, 0), false)?;
            let (len, start) = size_of_key(self.by_size.get(p).0);
            return Some(Extent::new(start, len));
        }
        let start = self.lowest_of_len(len)?;
        Some(Extent::new(start, len))
    }

    pub(crate) fn largest_len(&self) -> u64 {
        self.by_addr.summary().0
    }

    /// The lowest start of a free extent of exactly `len <= EXACT_MAX` blocks.
    #[inline]
    pub(super) fn lowest_of_len(&self, len: u64) -> Option<u64> {
        self.exact.get(len as usize - 1)?.first()
    }

    /// The lowest aligned start of `need` blocks in an extent of exactly `len` blocks,
    /// `need <= len < need + align - 1` and `align <= 64`: the class's residue
    /// summaries lead straight to it, O(log n).
    pub(super) fn lowest_with_room(&self, len: u64, need: u64, align: u64) -> Option<u64> {
        let s = self.of_len_with_room(len, need, align, 0, Side::After)?;
        fit(s, len, need, align)
    }

    #[inline]
    pub(super) fn add(&mut self, start: u64, len: u64) {
        self.views.add(start, len);
        if len > EXACT_MAX {
            self.by_size.insert(size_key(len, start), ());
        } else {
            if self.exact.is_empty() {
                self.exact.resize_with(EXACT_MAX as usize, Class::default);
            }
            self.exact[len as usize - 1].insert(start);
            self.nonempty |= class_bit(len);
            self.used |= class_bit(len);
        }
        self.histogram[bucket(len)] += 1;
    }

    /// The size side of one free extent becoming another, `(start, len)` each: `sub`
    /// then `add`, except that a long extent that stays long and keeps its place in
    /// the `(len, start)` order is rewritten where it stands (the largest extent
    /// shrinking a little, the common case, costs one lookup).
    #[inline]
    pub(super) fn resize(&mut self, (s0, l0): (u64, u64), (s1, l1): (u64, u64)) {
        if l0 > EXACT_MAX && l1 > EXACT_MAX {
            let p = self
                .by_size
                .find(size_key(l0, s0))
                .expect("the size order lists every long free extent");
            let key = size_key(l1, s1);
            let fits_before = self
                .by_size
                .prev(p)
                .is_none_or(|q| self.by_size.get(q).0 < key);
            let fits_after = self
                .by_size
                .next(p)
                .is_none_or(|q| key < self.by_size.get(q).0);
            if fits_before && fits_after {
                self.views.sub(s0, l0);
                self.views.add(s1, l1);
                self.by_size.set(p, key, ());
                self.histogram[bucket(l0)] -= 1;
                self.histogram[bucket(l1)] += 1;
                return;
            }
        }
        self.sub(s0, l0);
        self.add(s1, l1);
    }

    #[inline]
    pub(super) fn sub(&mut self, start: u64, len: u64) {
        self.views.sub(start, len);
        if len > EXACT_MAX {
            let p = self
                .by_size
                .find(size_key(len, start))
                .expect("the size order lists every long free extent");
            self.by_size.remove(p);
        } else {
            let class = &mut self.exact[len as usize - 1];
            class.remove(start);
            if class.len() == 0 {
                self.nonempty &= !class_bit(len);
            }
        }
        self.histogram[bucket(len)] -= 1;
    }

    /// Best fit: the smallest extent that holds `need` aligned blocks, lowest first.
    pub(crate) fn best_fit(&self, need: u64, align: u64) -> Option<u64> {
        let found = self.above_64(
            align,
            |view| view.best_fit(need),
            |all| {
                all.filter_map(|(s, l)| fit(s, l, need, align).map(|p| (l, s, p)))
                    .min()
                    .map(|(_, _, p)| p)
            },
        );
        if let Some(found) = found {
            return found;
        }
        // Exact classes first, smallest length up: with no alignment the first present
        // length wins outright; with one, a length of `need + align - 1` or more always
        // fits, and shorter ones are tried extent by extent.
        let always_fits = need.saturating_add(align - 1);
        let mut classes = self.nonempty & classes_from(need);
        while classes != 0 {
            let len = u64::from(classes.trailing_zeros()) + 1;
            if align == 1 || len >= always_fits {
                let s = self
                    .lowest_of_len(len)
                    .expect("the summary lists the length");
                return fit(s, len, need, align);
            }
            if let Some(p) = self.lowest_with_room(len, need, align) {
                return Some(p);
            }
            classes &= classes - 1;
        }
        let shortest = need.max(EXACT_MAX + 1);
        let from = self.by_size.ceil(size_key(shortest, 0), false);
        if align == 1 {
            return from.map(|p| size_of_key(self.by_size.get(p).0).1);
        }
        self.long_best_fit(shortest, need, align)
    }

    /// Aligned best fit (align at most 64) among the extents longer than
    /// [`EXACT_MAX`], of `shortest` blocks or more: one descent per length below
    /// `need + align - 1`, the length from which every extent fits.
    ///
    /// For a length `l`, the first extent at or after `(l, 0)` whose start has room
    /// for its padding with `l - need` blocks to spare fits, and the residue summaries
    /// lead straight to it. Any fitting extent of length `l` or more is at or after
    /// it, so the smallest of these candidates is the best fit.
    pub(super) fn long_best_fit(&self, shortest: u64, need: u64, align: u64) -> Option<u64> {
        let always_fits = need.saturating_add(align - 1).max(shortest);
        let mut best = self
            .by_size
            .ceil(size_key(always_fits, 0), false)
            .map(|p| self.by_size.get(p).0);
        for len in shortest..always_fits {
            let from = size_key(len, 0);
            if best.is_some_and(|b| b <= from) {
                break;
            }
            let room = residues_with_room(align, len - need);
            let found = self.by_size.first_matching(
                from,
                |r| r.0 & room != 0,
                |k, ()| room & (1 << (k.start() % 64)) != 0,
            );
            if let Some(p) = found {
                let k = self.by_size.get(p).0;
                if best.is_none_or(|b| k < b) {
                    best = Some(k);
                }
            }
        }
        best.and_then(|k| {
            let (l, s) = size_of_key(k);
            fit(s, l, need, align)
        })
    }

    /// The start of the first free extent of exactly `len` blocks at or after `at`
    /// ([`Side::After`]), or of the last at or before it ([`Side::Before`]), whose
    /// start leaves room for `align`-padding with `len - need` blocks to spare.
    /// `need <= len < need + align - 1` and `align <= 64`: the residue summaries lead
    /// straight to it, one descent.
    pub(super) fn of_len_with_room(
        &self,
        len: u64,
        need: u64,
        align: u64,
        at: u64,
        side: Side,
    ) -> Option<u64> {
        debug_assert!(align <= 64 && need <= len && len - need < align);
        let room = residues_with_room(align, len - need);
        let sub = |r: &Residues| r.0 & room != 0;
        if len <= EXACT_MAX {
            if self.nonempty & class_bit(len) == 0 {
                return None;
            }
            let class = self.exact.get(len as usize - 1)?;
            match side {
                Side::After => class.first_with(at, room),
                Side::Before => class.last_with(at, room),
            }
        } else {
            let entry = |k: &u128, (): &()| room & (1 << (k.start() % 64)) != 0;
            let p = match side {
                Side::After => self.by_size.first_matching(size_key(len, at), sub, entry),
                Side::Before => self.by_size.last_matching(size_key(len, at), sub, entry),
            }?;
            let (l, s) = size_of_key(self.by_size.get(p).0);
            (l == len).then_some(s)
        }
    }

    /// The longest run of `align`-aligned blocks any single free extent can give.
    ///
    /// O(1) with no alignment or one above 64 (the view's root); O(a log n) for
    /// alignments `1 < a <= 64`.
    pub(crate) fn largest_placeable(&self, align: u64) -> u64 {
        if align == 1 {
            return self.largest_len();
        }
        let found = self.above_64(align, View::largest_placeable, |all| {
            all.map(|(s, l)| placeable(s, l, align)).max().unwrap_or(0)
        });
        if let Some(found) = found {
            return found;
        }
        let mut best = self.long_placeable(align);
        // Then the exact classes, longest first, while one could still beat `best`:
        // the residues under a class's root give its least padding.
        let mut classes = self.nonempty;
        while classes != 0 {
            let len = 128 - u64::from(classes.leading_zeros());
            if len <= best {
                break;
            }
            let pad = least_padding(self.exact[len as usize - 1].residues(), align);
            best = best.max(len.saturating_sub(pad));
            classes &= !class_bit(len);
        }
        best
    }

    /// [`largest_placeable`](Self::largest_placeable) among the extents longer than
    /// [`EXACT_MAX`], for `1 < align <= 64`: one descent per amount of padding.
    ///
    /// For each padding `pad`, the longest extent whose start needs at most `pad`
    /// blocks of it gives at least `len - pad` aligned blocks, and at the best extent's
    /// own padding that bound is at least the best. So the largest bound is the answer.
    pub(super) fn long_placeable(&self, align: u64) -> u64 {
        let Some(top) = self.by_size.last() else {
            return 0;
        };
        let (longest, s) = size_of_key(self.by_size.get(top).0);
        let mut best = placeable(s, longest, align);
        for pad in 0..align {
            if longest - pad <= best {
                break;
            }
            let room = residues_with_room(align, pad);
            let found = self.by_size.last_matching(
                u128::MAX,
                |r| r.0 & room != 0,
                |k, ()| room & (1 << (k.start() % 64)) != 0,
            );
            if let Some(p) = found {
                best = best.max(size_of_key(self.by_size.get(p).0).0 - pad);
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn residues_with_room_match_fit() {
        for align in [2u64, 4, 8, 16, 32, 64] {
            for slack in 0..align {
                let mask = residues_with_room(align, slack);
                for r in 0..64 {
                    let expected = fit(r, slack + 1, 1, align).is_some();
                    assert_eq!(
                        mask & (1 << r) != 0,
                        expected,
                        "align {align} slack {slack} r {r}"
                    );
                }
            }
        }
    }

    #[test]
    fn largest_placeable_accounts_for_alignment() {
        let mut ix = Ordered::new();
        ix.insert(1, 10); // aligned to 8: [8..11) -> 3
        ix.insert(32, 5); // aligned to 8: [32..37) -> 5
        assert_eq!(ix.largest_placeable(1), 10);
        assert_eq!(ix.largest_placeable(8), 5);
    }

    #[test]
    fn least_padding_matches_a_brute_force() {
        let mut rng = crate::splitmix::SplitMix::new(7);
        for _ in 0..2_000 {
            let residues = rng.below(u64::MAX) & rng.below(u64::MAX);
            for align in [2u64, 4, 8, 16, 32, 64] {
                let brute = (0..64)
                    .filter(|r| residues & (1 << r) != 0)
                    .map(|r| (align - r % align) % align)
                    .min()
                    .unwrap_or(u64::MAX);
                assert_eq!(
                    least_padding(residues, align),
                    brute,
                    "{residues:#x} {align}"
                );
            }
        }
    }
}
