//! The free index's address side: the free extents by start, with the longest under
//! each child. Coalescing, overlap checks, first fit and near-goal placement.

use super::fit;
use super::ordered::Ordered;
use super::size::Side;
use crate::Extent;
use crate::tree::MaxValue;
use crate::tree::bplus::{self, BPlus};

/// How many long-enough but misaligned extents an aligned first fit or near-goal search
/// tries one by one before it switches to the exact search by length. Usually the
/// first or second extent fits; the switch bounds the worst case at one descent per
/// length that can need padding.
const SCAN_BUDGET: usize = 4;

/// The aligned start of `need` blocks inside `[start, start + len)` closest to `goal`,
/// the lower one on a tie.
pub(super) fn fit_near(start: u64, len: u64, need: u64, align: u64, goal: u64) -> Option<u64> {
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

/// The placement closest to `goal`, the lower on a tie.
fn closest(goal: u64, found: impl Iterator<Item = u64>) -> Option<u64> {
    found.min_by_key(|&p| (p.abs_diff(goal), p))
}

/// The near-goal search among the entries `start -> value` of `tree` (the address
/// order, or a view) whose value is `longer` or more, `len_of(start, value)` being
/// their extents' lengths: the placements in the last two fitting extents starting at
/// or before `goal` and in the first after it. `Err` when more than `budget` of them on
/// one side turn out misaligned.
fn near_in(
    tree: &BPlus<u64, u64, MaxValue>,
    longer: u64,
    len_of: impl Fn(u64, u64) -> u64,
    need: u64,
    align: u64,
    goal: u64,
    budget: usize,
) -> Result<[Option<u64>; 3], ()> {
    let sub = |b: &MaxValue| b.0 >= longer;
    let entry = |_: &u64, &v: &u64| v >= longer;
    let at = |p| {
        let (s, v) = tree.get(p);
        (s, len_of(s, v))
    };
    // Left side: the last fitting extent starting at or before the goal. If alignment
    // pushes its placement above the goal, the fitting extent before it may be closer.
    let mut left = [None, None];
    let mut upto = Some(goal);
    let mut misses = 0;
    for slot in &mut left {
        while let Some(u) = upto {
            let Some((s, l)) = tree.last_matching(u, sub, entry).map(at) else {
                upto = None;
                break;
            };
            upto = s.checked_sub(1);
            if let Some(p) = fit_near(s, l, need, align, goal) {
                *slot = Some(p);
                break;
            }
            misses += 1;
            if misses > budget {
                return Err(());
            }
        }
        if slot.is_none_or(|p| p <= goal) {
            break;
        }
    }
    // Right side: the first fitting extent starting after the goal.
    let mut right = None;
    let mut from = goal.checked_add(1);
    let mut misses = 0;
    while let Some(f) = from {
        let Some((s, l)) = tree.first_matching(f, sub, entry).map(at) else {
            break;
        };
        if let Some(p) = fit(s, l, need, align) {
            right = Some(p);
            break;
        }
        from = s.checked_add(1);
        misses += 1;
        if misses > budget {
            return Err(());
        }
    }
    Ok([left[0], left[1], right])
}

impl Ordered {
    /// Looks up address `x` ahead, for the next queries and changes at `x` to share
    /// until the index changes.
    #[inline]
    pub(crate) fn probe(&mut self, x: u64) {
        self.probe = Some(bplus::Probed::new(x, self.by_addr.floor(x)));
    }

    /// `by_addr.floor(x)`, from the probe when it holds `x`.
    #[inline]
    pub(super) fn addr_floor(&self, x: u64) -> Option<bplus::Pos> {
        match self.probe.and_then(|p| p.of(x)) {
            Some(found) => found,
            None => self.by_addr.floor(x),
        }
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
        let below = self.addr_floor(start);
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

    /// First fit: the lowest aligned start where `need` blocks fit.
    pub(crate) fn first_fit(&self, need: u64, align: u64) -> Option<u64> {
        self.first_fit_scanning(need, align, SCAN_BUDGET)
    }

    /// [`first_fit`](Self::first_fit), trying up to `budget` long-enough extents that
    /// turn out misaligned before it switches to the exact search by length.
    pub(super) fn first_fit_scanning(&self, need: u64, align: u64, budget: usize) -> Option<u64> {
        let found = self.above_64(
            align,
            |view| view.first_fit(need),
            |mut all| all.find_map(|(s, l)| fit(s, l, need, align)),
        );
        if let Some(found) = found {
            return found;
        }
        let long_enough = |need: u64| move |b: &MaxValue| b.0 >= need;
        let mut from = 0;
        let mut misses = 0;
        while misses <= budget {
            let p = self
                .by_addr
                .first_matching(from, long_enough(need), |_, &l| l >= need)?;
            let (s, l) = self.by_addr.get(p);
            if let Some(p) = fit(s, l, need, align) {
                return Some(p);
            }
            from = s + 1;
            misses += 1;
        }
        // No extent below `from` fits. One of `need + align - 1` blocks or more always
        // fits; a shorter one only from a start with room for its padding, and the
        // residue summaries find the first such start of each length.
        let always = need.saturating_add(align - 1);
        let mut best = self
            .by_addr
            .first_matching(from, long_enough(always), |_, &l| l >= always)
            .map(|p| self.by_addr.get(p));
        for len in need..always {
            let upto = best.map_or(u64::MAX, |(s, _)| s);
            if let Some(s) = self.of_len_with_room(len, need, align, from, Side::After) {
                if s < upto {
                    best = Some((s, len));
                }
            }
        }
        best.and_then(|(s, l)| fit(s, l, need, align))
    }

    /// The aligned placement of `need` blocks whose start is closest to `goal`; the
    /// lower on a tie.
    pub(crate) fn near(&self, need: u64, align: u64, goal: u64) -> Option<u64> {
        self.near_scanning(need, align, goal, SCAN_BUDGET)
    }

    /// [`near`](Self::near), trying up to `budget` misaligned extents on each side
    /// before it switches to the exact search by length.
    pub(super) fn near_scanning(
        &self,
        need: u64,
        align: u64,
        goal: u64,
        budget: usize,
    ) -> Option<u64> {
        let found = self.above_64(
            align,
            |view| {
                // Every extent the view lists with room for `need` fits: no misses.
                let len_of = |s, room| view.len_of(s, room);
                let found = near_in(view.by_start(), need, len_of, need, align, goal, 0);
                closest(goal, found.ok()?.into_iter().flatten())
            },
            |all| {
                closest(
                    goal,
                    all.filter_map(|(s, l)| fit_near(s, l, need, align, goal)),
                )
            },
        );
        if let Some(found) = found {
            return found;
        }
        let len_of = |_, l| l;
        if let Ok(found) = near_in(&self.by_addr, need, len_of, need, align, goal, budget) {
            return closest(goal, found.into_iter().flatten());
        }
        // Every extent of `need + align - 1` blocks or more fits; a shorter one only
        // from a start with room for its padding. Placements rise with starts, so the
        // closest is the last fitting placement at or below the goal or the first
        // above it: among each kind's last two extents starting at or before the goal
        // and its first after it.
        let always = need.saturating_add(align - 1);
        let long = near_in(&self.by_addr, always, len_of, need, align, goal, usize::MAX)
            .unwrap_or_default();
        let mut found = alloc::vec::Vec::from(long);
        for len in need..always {
            let fits = |s: Option<u64>| s.and_then(|s| fit(s, len, need, align));
            let last = self.of_len_with_room(len, need, align, goal, Side::Before);
            let before = last
                .and_then(|s| s.checked_sub(1))
                .and_then(|u| self.of_len_with_room(len, need, align, u, Side::Before));
            let after = goal
                .checked_add(1)
                .and_then(|f| self.of_len_with_room(len, need, align, f, Side::After));
            found.extend([fits(last), fits(before), fits(after)]);
        }
        closest(goal, found.into_iter().flatten())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let mut ix = Ordered::new();
        ix.insert(0, 9);
        ix.insert(10, 10);
        assert_eq!(ix.near(1, 8, 10), Some(8));
    }

    #[test]
    fn near_by_length_looks_past_an_alignment_overshoot() {
        // free: [10..17)  [18..25)  [33..35); need 1 aligned to 8, goal 18
        // [18..25) places at 24 (6 away), the extent of the same length before it at
        // 16 (2 away); [33..35) has no aligned block, so a search that tries no
        // misaligned extent goes straight to the search by length.
        let mut ix = Ordered::new();
        ix.insert(10, 7);
        ix.insert(18, 7);
        ix.insert(33, 2);
        assert_eq!(ix.near_scanning(1, 8, 18, 0), Some(16));
        assert_eq!(ix.near(1, 8, 18), Some(16));
    }
}
