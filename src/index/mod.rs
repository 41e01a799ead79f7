//! The free-space index: which blocks `allocate` may hand out.
//!
//! The rest of the core sees only [`FreeIndex`]; its interface is the seam behind which
//! the representation can change. It holds every Free, unpinned block as fully coalesced
//! extents, in two orders:
//!
//! - by address, in a B+ tree ([`bplus::BPlus`]) whose inner nodes keep, for each
//!   child, the longest extent below it and a bit set of the **exact lengths** up to
//!   [`EXACT_MAX`] below it. Coalescing, first fit, near-goal and overlap checks are
//!   one descent (and a short walk up) each, O(log n). So is best fit for a length up
//!   to `EXACT_MAX`: the smallest length present at or above it is the lowest set bit
//!   of the root's classes, and the lowest extent of that length is the leftmost leaf
//!   whose path has the bit;
//! - the extents longer than `EXACT_MAX`, by `(len, start)`, in a second B+ tree: best
//!   fit among them is the first key at or above `(need, 0)`, O(log n).
//!
//! This is segregated fits in the manner of dlmalloc, exact small classes and a sorted
//! large class, with the small classes kept as subtree summaries so that "lowest
//! address among equals" stays one descent. Both trees keep their nodes in arenas of
//! 16-slot nodes, so a search touches a few cache lines per level and no allocator
//! call happens once the trees have grown.
//!
//! Aligned requests add a scan over the extents that are long enough only without
//! alignment (at most those within `align - 1` blocks of the wanted length).

pub(crate) mod bplus;

use crate::Extent;
use bplus::{BPlus, Summary};

/// Lengths up to this many blocks each have an exact size class.
pub(crate) const EXACT_MAX: u64 = 128;

/// What the address order knows of a subtree.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Below {
    /// The longest free extent.
    longest: u64,
    /// Bit `l - 1` is set when an extent of exactly `l <= EXACT_MAX` blocks is there.
    classes: u128,
}

/// The class bit of an extent of `len` blocks (none above [`EXACT_MAX`]).
#[inline]
fn class_bit(len: u64) -> u128 {
    if len <= EXACT_MAX {
        1u128 << (len - 1)
    } else {
        0
    }
}

/// The class bits of lengths `len..=EXACT_MAX`.
#[inline]
fn classes_from(len: u64) -> u128 {
    if len > EXACT_MAX { 0 } else { u128::MAX << (len - 1) }
}

impl Summary<u64> for Below {
    #[inline]
    fn of(len: &u64) -> Self {
        Below {
            longest: *len,
            classes: class_bit(*len),
        }
    }

    #[inline]
    fn join(self, o: Self) -> Self {
        Below {
            longest: self.longest.max(o.longest),
            classes: self.classes | o.classes,
        }
    }

    #[inline]
    fn replace(cur: Self, old: Self, new: Self) -> Option<Self> {
        // A class bit that `old` had and `new` lacks may live on in a sibling, and a
        // longest that shrank may be matched by one: only a rescan can tell.
        let longest = if new.longest >= cur.longest {
            new.longest
        } else if old.longest < cur.longest {
            cur.longest
        } else {
            return None;
        };
        if old.classes & !new.classes != 0 {
            return None;
        }
        Some(Below {
            longest,
            classes: cur.classes | new.classes,
        })
    }

    /// Only what `replace` could not tell is looked up: the longest, if the longest
    /// shrank, and each class bit `old` had and `new` lacks (usually one), by looking
    /// for that exact length.
    #[inline]
    fn rescan_leaf(lens: &[u64], cur: Self, old: Self, new: Self) -> Self {
        let longest = if new.longest >= cur.longest || old.longest < cur.longest {
            cur.longest.max(new.longest)
        } else {
            lens.iter().copied().fold(0, u64::max)
        };
        let mut lost = old.classes & !new.classes;
        let mut kept = 0;
        while lost != 0 {
            let bit = lost & lost.wrapping_neg();
            let len = u64::from(bit.trailing_zeros()) + 1;
            if lens.contains(&len) {
                kept |= bit;
            }
            lost &= lost - 1;
        }
        Below {
            longest,
            classes: (cur.classes & !(old.classes & !new.classes)) | new.classes | kept,
        }
    }

    #[inline]
    fn rescan_inner(sums: &[Self], cur: Self, old: Self, new: Self) -> Self {
        let longest = if new.longest >= cur.longest || old.longest < cur.longest {
            cur.longest.max(new.longest)
        } else {
            sums.iter().map(|s| s.longest).fold(0, u64::max)
        };
        let lost = old.classes & !new.classes;
        let kept = if lost == 0 {
            0
        } else {
            sums.iter().fold(0, |acc, s| acc | (s.classes & lost))
        };
        Below {
            longest,
            classes: (cur.classes & !lost) | new.classes | kept,
        }
    }
}

/// Number of buckets in the free-extent size histogram: bucket `i` counts extents of
/// `2^i ..= 2^(i+1) - 1` blocks.
///
/// ```
/// use pinalloc::{ExtentAllocator, HISTOGRAM_BUCKETS};
///
/// let s = ExtentAllocator::new(u64::MAX).stats();
/// assert_eq!(s.free_histogram.len(), HISTOGRAM_BUCKETS);
/// assert_eq!(s.free_histogram[HISTOGRAM_BUCKETS - 1], 1); // one extent of 2^64 - 1 blocks
/// ```
pub const HISTOGRAM_BUCKETS: usize = 64;

#[derive(Clone, Debug)]
pub(crate) struct FreeIndex {
    /// `start -> len`, with a [`Below`] for each inner child.
    by_addr: BPlus<u64, u64, Below>,
    /// [`size_key`]`(len, start)` of the extents longer than [`EXACT_MAX`].
    by_size: BPlus<u128, (), ()>,
    count_free_blocks: u64,
    histogram: [u64; HISTOGRAM_BUCKETS],
}

/// The lowest multiple of `align` (a power of two) that is `>= x`, if any.
#[inline]
pub(crate) fn align_up(x: u64, align: u64) -> Option<u64> {
    debug_assert!(align.is_power_of_two());
    x.checked_add(align - 1).map(|y| y & !(align - 1))
}

/// The size order's key: length first, then start.
#[inline]
fn size_key(len: u64, start: u64) -> u128 {
    (u128::from(len) << 64) | u128::from(start)
}

/// `(len, start)` of a size key.
#[inline]
fn size_of_key(key: u128) -> (u64, u64) {
    ((key >> 64) as u64, key as u64)
}

#[inline]
fn bucket(len: u64) -> usize {
    debug_assert!(len > 0);
    (63 - len.leading_zeros()) as usize
}

/// The lowest aligned start at which `need` blocks fit in the free extent
/// `[start, start + len)`.
#[inline]
pub(crate) fn fit(start: u64, len: u64, need: u64, align: u64) -> Option<u64> {
    let p = align_up(start, align)?;
    let pad = p - start;
    (pad <= len && len - pad >= need).then_some(p)
}

/// The aligned start of `need` blocks inside `[start, start + len)` closest to `goal`,
/// the lower one on a tie.
fn fit_near(start: u64, len: u64, need: u64, align: u64, goal: u64) -> Option<u64> {
    let lo = fit(start, len, need, align)?;
    let hi = (start + len - need) & !(align - 1);
    debug_assert!(hi >= lo);
    Some(if goal <= lo {
        lo
    } else if goal >= hi {
        hi
    } else {
        let down = goal & !(align - 1);
        let up = down + align;
        if goal - down <= up - goal { down } else { up }
    })
}

impl FreeIndex {
    /// An empty index.
    pub(crate) const fn new() -> Self {
        FreeIndex {
            by_addr: BPlus::new(),
            by_size: BPlus::new(),
            count_free_blocks: 0,
            histogram: [0; HISTOGRAM_BUCKETS],
        }
    }

    #[inline]
    pub(crate) fn free_blocks(&self) -> u64 {
        self.count_free_blocks
    }

    #[inline]
    pub(crate) fn extent_count(&self) -> usize {
        self.by_addr.len()
    }

    pub(crate) fn histogram(&self) -> [u64; HISTOGRAM_BUCKETS] {
        self.histogram
    }

    /// Bytes of metadata held: both trees' node arenas.
    pub(crate) fn metadata_bytes(&self) -> usize {
        self.by_addr.capacity_bytes() + self.by_size.capacity_bytes()
    }

    /// The largest free extent, the lowest one among equals.
    pub(crate) fn largest(&self) -> Option<Extent> {
        let len = self.largest_len();
        if len > EXACT_MAX {
            let p = self.by_size.ceil(size_key(len, 0), false)?;
            let (len, start) = size_of_key(self.by_size.get(p).0);
            return Some(Extent::new(start, len));
        }
        let start = self.lowest_of_len(len)?;
        Some(Extent::new(start, len))
    }

    pub(crate) fn largest_len(&self) -> u64 {
        self.by_addr.summary().longest
    }

    /// The lowest start of a free extent of exactly `len <= EXACT_MAX` blocks.
    #[inline]
    fn lowest_of_len(&self, len: u64) -> Option<u64> {
        let bit = class_bit(len);
        let p = self
            .by_addr
            .first_matching_anywhere(|b| b.classes & bit != 0, |&l| l == len)?;
        Some(self.by_addr.get(p).0)
    }

    /// The free extents of exactly `len <= EXACT_MAX` blocks, in address order.
    fn all_of_len(&self, len: u64) -> impl Iterator<Item = u64> + '_ {
        let bit = class_bit(len);
        let mut from = Some(0);
        core::iter::from_fn(move || {
            let p = self.by_addr.first_matching(
                from?,
                |b| b.classes & bit != 0,
                |&l| l == len,
            )?;
            let s = self.by_addr.get(p).0;
            from = s.checked_add(1);
            Some(s)
        })
    }

    #[inline]
    fn add(&mut self, start: u64, len: u64) {
        if len > EXACT_MAX {
            self.by_size.insert(size_key(len, start), ());
        }
        self.histogram[bucket(len)] += 1;
    }

    #[inline]
    fn sub(&mut self, start: u64, len: u64) {
        if len > EXACT_MAX {
            let p = self
                .by_size
                .find(size_key(len, start))
                .expect("the size order lists every long free extent");
            self.by_size.remove(p);
        }
        self.histogram[bucket(len)] -= 1;
    }

    /// Adds the blocks `[start, start + len)` and coalesces them with their neighbours.
    ///
    /// The caller guarantees the blocks are not already in the index and lie below
    /// `u64::MAX`.
    pub(crate) fn insert(&mut self, start: u64, len: u64) {
        debug_assert!(len > 0);
        let end = start + len;
        // The extent just below `start` (none is free at `start` itself) and the next.
        let below = self.by_addr.floor(start);
        let above = match below {
            Some(p) => self.by_addr.next(p),
            None => self.by_addr.first(),
        };
        debug_assert!(
            below.is_none_or(|p| {
                let (s, l) = self.by_addr.get(p);
                s + l <= start
            }) && above.is_none_or(|p| self.by_addr.get(p).0 >= end),
            "inserting [{start}, +{len}) over a free extent"
        );
        let left = below.filter(|&p| {
            let (s, l) = self.by_addr.get(p);
            s + l == start
        });
        let right = above.filter(|&p| self.by_addr.get(p).0 == end);
        match (left, right) {
            (None, None) => {
                self.by_addr.insert(start, len);
                self.add(start, len);
            }
            (Some(lp), None) => {
                let (ls, ll) = self.by_addr.get(lp);
                self.sub(ls, ll);
                self.by_addr.set(lp, ls, ll + len);
                self.add(ls, ll + len);
            }
            (None, Some(rp)) => {
                let (rs, rl) = self.by_addr.get(rp);
                self.sub(rs, rl);
                self.by_addr.set(rp, start, len + rl);
                self.add(start, len + rl);
            }
            (Some(lp), Some(rp)) => {
                let (ls, ll) = self.by_addr.get(lp);
                let (rs, rl) = self.by_addr.get(rp);
                self.sub(ls, ll);
                self.sub(rs, rl);
                self.by_addr.set(lp, ls, ll + len + rl);
                self.by_addr.remove(rp);
                self.add(ls, ll + len + rl);
            }
        }
        self.count_free_blocks += len;
    }

    /// Removes the blocks `[start, start + len)`, which the caller guarantees lie inside
    /// a single free extent, splitting it as needed.
    pub(crate) fn take(&mut self, start: u64, len: u64) {
        debug_assert!(len > 0);
        let p = self
            .by_addr
            .floor(start)
            .expect("taking blocks that are not free");
        let (s, l) = self.by_addr.get(p);
        let (end, e) = (start + len, s + l);
        assert!(
            end <= e,
            "taking [{start}, +{len}) beyond free extent [{s}, +{l})"
        );
        self.sub(s, l);
        match (s == start, end == e) {
            (true, true) => self.by_addr.remove(p),
            (true, false) => {
                self.by_addr.set(p, end, e - end);
                self.add(end, e - end);
            }
            (false, true) => {
                self.by_addr.set(p, s, start - s);
                self.add(s, start - s);
            }
            (false, false) => {
                self.by_addr.set(p, s, start - s);
                self.add(s, start - s);
                self.by_addr.insert(end, e - end);
                self.add(end, e - end);
            }
        }
        self.count_free_blocks -= len;
    }

    /// The free extent containing `block`, if it is free.
    pub(crate) fn containing(&self, block: u64) -> Option<Extent> {
        self.by_addr
            .floor(block)
            .map(|p| self.by_addr.get(p))
            .filter(|&(s, l)| block - s < l)
            .map(|(s, l)| Extent::new(s, l))
    }

    /// The lowest free extent overlapping `[start, end)`.
    #[inline]
    pub(crate) fn first_overlap(&self, start: u64, end: u64) -> Option<Extent> {
        // The extent at or below `start`, else the one after it: one descent.
        let below = self.by_addr.floor(start);
        if let Some(p) = below {
            let (s, l) = self.by_addr.get(p);
            if start - s < l {
                return Some(Extent::new(s, l));
            }
        }
        let above = match below {
            Some(p) => self.by_addr.next(p),
            None => self.by_addr.first(),
        };
        above
            .map(|p| self.by_addr.get(p))
            .filter(|&(s, _)| s < end)
            .map(|(s, l)| Extent::new(s, l))
    }

    /// The free extents overlapping `[start, end)`, clipped to it, in address order.
    pub(crate) fn overlapping(&self, start: u64, end: u64) -> alloc::vec::Vec<Extent> {
        let mut out = alloc::vec::Vec::new();
        let mut next = self.first_overlap(start, end);
        while let Some(e) = next {
            let s = e.start.max(start);
            let e_end = (e.start + e.len).min(end);
            out.push(Extent::new(s, e_end - s));
            next = self
                .by_addr
                .ceil(e.start, true)
                .map(|p| self.by_addr.get(p))
                .filter(|&(s, _)| s < end)
                .map(|(s, l)| Extent::new(s, l));
        }
        out
    }

    /// Best fit: the smallest extent that holds `need` aligned blocks, lowest first.
    pub(crate) fn best_fit(&self, need: u64, align: u64) -> Option<u64> {
        // Exact classes first, smallest length up: with no alignment the first present
        // length wins outright; with one, a length of `need + align - 1` or more always
        // fits, and shorter ones are tried extent by extent.
        let always_fits = need.saturating_add(align - 1);
        let mut classes = self.by_addr.summary().classes & classes_from(need);
        while classes != 0 {
            let len = u64::from(classes.trailing_zeros()) + 1;
            if align == 1 || len >= always_fits {
                let s = self.lowest_of_len(len).expect("the summary lists the length");
                return fit(s, len, need, align);
            }
            if let Some(p) = self.all_of_len(len).find_map(|s| fit(s, len, need, align)) {
                return Some(p);
            }
            classes &= classes - 1;
        }
        let from = self.by_size.ceil(size_key(need.max(EXACT_MAX + 1), 0), false);
        if align == 1 {
            return from.map(|p| size_of_key(self.by_size.get(p).0).1);
        }
        self.by_size.iter_from(from).find_map(|(k, ())| {
            let (l, s) = size_of_key(k);
            fit(s, l, need, align)
        })
    }

    /// First fit: the lowest aligned start where `need` blocks fit.
    pub(crate) fn first_fit(&self, need: u64, align: u64) -> Option<u64> {
        let mut from = 0;
        loop {
            let p = self
                .by_addr
                .first_matching(from, |b| b.longest >= need, |&l| l >= need)?;
            let (s, l) = self.by_addr.get(p);
            if let Some(p) = fit(s, l, need, align) {
                return Some(p);
            }
            from = s + 1;
        }
    }

    /// The aligned placement of `need` blocks whose start is closest to `goal`; the
    /// lower on a tie.
    pub(crate) fn near(&self, need: u64, align: u64, goal: u64) -> Option<u64> {
        // Left side: the last fitting extent starting at or before the goal. If alignment
        // pushes its placement above the goal, the fitting extent before it may be closer.
        let mut left = [None, None];
        let mut upto = Some(goal);
        for slot in &mut left {
            while let Some(u) = upto {
                let Some((s, l)) = self
                    .by_addr
                    .last_matching(u, |b| b.longest >= need, |&l| l >= need)
                    .map(|p| self.by_addr.get(p))
                else {
                    upto = None;
                    break;
                };
                upto = s.checked_sub(1);
                if let Some(p) = fit_near(s, l, need, align, goal) {
                    *slot = Some(p);
                    break;
                }
            }
            if slot.is_none_or(|p| p <= goal) {
                break;
            }
        }
        // Right side: the first fitting extent starting after the goal.
        let mut right = None;
        let mut from = goal.checked_add(1);
        while let Some(f) = from {
            let Some((s, l)) = self
                .by_addr
                .first_matching(f, |b| b.longest >= need, |&l| l >= need)
                .map(|p| self.by_addr.get(p))
            else {
                break;
            };
            if let Some(p) = fit(s, l, need, align) {
                right = Some(p);
                break;
            }
            from = s.checked_add(1);
        }
        left.into_iter()
            .chain([right])
            .flatten()
            .min_by_key(|&p| (p.abs_diff(goal), p))
    }

    /// The number of free blocks from `start` to the end of its free extent (0 if
    /// `start` is not free).
    pub(crate) fn run_from(&self, start: u64) -> u64 {
        self.containing(start)
            .map_or(0, |e| e.start + e.len - start)
    }

    /// The longest run of `align`-aligned blocks any single free extent can give.
    pub(crate) fn largest_placeable(&self, align: u64) -> u64 {
        let placeable = |s: u64, l: u64| {
            align_up(s, align)
                .map(|p| p - s)
                .filter(|&pad| pad < l)
                .map_or(0, |pad| l - pad)
        };
        let mut best = 0;
        for (l, s) in self.by_size.iter_rev().map(|(k, ())| size_of_key(k)) {
            if l <= best {
                return best;
            }
            best = best.max(placeable(s, l));
            if align == 1 {
                return best;
            }
        }
        // Then the exact classes, longest first, while one could still beat `best`.
        let mut classes = self.by_addr.summary().classes;
        while classes != 0 {
            let len = 128 - u64::from(classes.leading_zeros());
            if len <= best {
                break;
            }
            for s in self.all_of_len(len) {
                best = best.max(placeable(s, len));
                if best == len {
                    break;
                }
            }
            classes &= !class_bit(len);
        }
        best
    }

    /// Free extents in address order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = Extent> + '_ {
        self.by_addr.iter().map(|(s, l)| Extent::new(s, l))
    }

    /// Recomputes everything from scratch: tree shape, coalescing, the size index, the
    /// block count and the histogram. Reports `(invariant number, detail)`.
    pub(crate) fn check(&self, capacity: u64) -> Result<(), (u8, alloc::string::String)> {
        use alloc::format;
        self.by_addr.check().map_err(|d| (3, format!("address order: {d}")))?;
        self.by_size.check().map_err(|d| (3, format!("size order: {d}")))?;
        let mut blocks = 0u64;
        let mut histogram = [0u64; HISTOGRAM_BUCKETS];
        let mut prev_end: Option<u64> = None;
        let mut long = 0;
        for (s, l) in self.by_addr.iter() {
            if l == 0 {
                return Err((2, format!("empty free extent at {s}")));
            }
            let end = s
                .checked_add(l)
                .filter(|&e| e <= capacity)
                .ok_or_else(|| (2, format!("free extent [{s}, +{l}) leaves the space")))?;
            if let Some(p) = prev_end {
                if s < p {
                    return Err((2, format!("free extents overlap at {s}")));
                }
                if s == p {
                    return Err((4, format!("free extents touch at {s}: not coalesced")));
                }
            }
            if l > EXACT_MAX && self.by_size.find(size_key(l, s)).is_none() {
                return Err((3, format!("size index misses [{s}, +{l})")));
            }
            long += usize::from(l > EXACT_MAX);
            prev_end = Some(end);
            blocks += l;
            histogram[bucket(l)] += 1;
        }
        if self.by_size.len() != long {
            return Err((
                3,
                format!(
                    "size index holds {} extents, but {long} are longer than {EXACT_MAX}",
                    self.by_size.len(),
                ),
            ));
        }
        if blocks != self.count_free_blocks {
            return Err((
                3,
                format!(
                    "free blocks cached {} but counted {blocks}",
                    self.count_free_blocks
                ),
            ));
        }
        if histogram != self.histogram {
            return Err((3, "free-extent histogram differs from its recount".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    fn extents(ix: &FreeIndex) -> Vec<(u64, u64)> {
        ix.iter().map(|e| (e.start, e.len)).collect()
    }

    #[test]
    fn insert_coalesces_both_sides() {
        // before: [0..4) free, [4..6) not, [6..10) free
        //         ####..####
        // insert [4..6): ##########
        let mut ix = FreeIndex::new();
        ix.insert(0, 4);
        ix.insert(6, 4);
        assert_eq!(extents(&ix), [(0, 4), (6, 4)]);
        ix.insert(4, 2);
        assert_eq!(extents(&ix), [(0, 10)]);
        ix.check(10).unwrap();
    }

    #[test]
    fn take_splits_a_middle() {
        // ##########  take [3..5)  ->  ###..#####
        let mut ix = FreeIndex::new();
        ix.insert(0, 10);
        ix.take(3, 2);
        assert_eq!(extents(&ix), [(0, 3), (5, 5)]);
        assert_eq!(ix.free_blocks(), 8);
        ix.check(10).unwrap();
    }

    #[test]
    fn fit_near_prefers_the_lower_on_a_tie() {
        // extent [0..32), need 2 aligned to 4, goal 6: 4 and 8 are both 2 away
        assert_eq!(fit_near(0, 32, 2, 4, 6), Some(4));
        assert_eq!(fit_near(0, 32, 2, 4, 7), Some(8));
        assert_eq!(fit_near(0, 32, 2, 4, 31), Some(28));
        assert_eq!(fit_near(3, 5, 2, 4, 0), Some(4));
        assert_eq!(fit_near(3, 2, 2, 4, 0), None);
    }

    #[test]
    fn near_looks_past_an_alignment_overshoot() {
        // free: [0..9)  [10..20); need 1 aligned to 8, goal 10
        // [10..20) places at 16 (6 away); [0..9) places at 8 (2 away)
        let mut ix = FreeIndex::new();
        ix.insert(0, 9);
        ix.insert(10, 10);
        assert_eq!(ix.near(1, 8, 10), Some(8));
    }

    #[test]
    fn largest_placeable_accounts_for_alignment() {
        let mut ix = FreeIndex::new();
        ix.insert(1, 10); // aligned to 8: [8..11) -> 3
        ix.insert(32, 5); // aligned to 8: [32..37) -> 5
        assert_eq!(ix.largest_placeable(1), 10);
        assert_eq!(ix.largest_placeable(8), 5);
    }
}
