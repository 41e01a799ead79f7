//! The free index's ordered form: every query in O(log n), first fit, near-goal and
//! aligned requests included. [`super::FreeIndex`] moves to it from the fast form
//! (`hot.rs`) at the first request only this form can answer. It holds every Free,
//! unpinned block as fully coalesced extents, in two orders, each in its own file:
//!
//! - `address.rs`, by address, in a B+ tree ([`crate::tree::bplus::BPlus`]) whose inner
//!   nodes keep the longest extent under each child: coalescing, first fit, near-goal
//!   and overlap checks are one descent (and a short walk up) each, O(log n);
//! - `size.rs`, by size, as segregated fits in the manner of dlmalloc: every length up
//!   to [`super::EXACT_MAX`] has an exact class (`class.rs`), the starts of the extents of
//!   that length in a sorted array up to 64 of them and a small B+ tree beyond, and a
//!   bit in one `u128` that says whether it is empty; the longer
//!   extents share one B+ tree ordered by `(len, start)`. Best fit for `need` blocks
//!   is the lowest set bit at or above `need` and that class's first start, or else
//!   the first long extent at or above `(need, 0)`: smallest length first, lowest
//!   start among equals, exactly.
//!
//! Aligned requests (alignment `a`) must also weigh extents of `need` to
//! `need + a - 2` blocks, which fit only from some starts. Every size tree keeps the
//! residues of its starts mod 64 under each child, so for `a <= 64` the first extent
//! of a given length, at or after (or before) an address, whose start has room for
//! its padding is one descent: an aligned search costs O(a) of them (first fit and
//! near-goal first try a few extents in address order; near-goal then takes three
//! per length). For larger alignments, `aligned.rs` keeps a view of the free extents
//! per alignment asked for by [`Ordered::track`]: there an aligned search is a
//! descent or three, O(log n). An alignment nobody tracked is served by a scan, O(n).
//!
//! All trees keep their nodes in arenas of 16-slot nodes, so a search touches a few
//! cache lines per level and the trees call the allocator only to grow. An exact
//! class calls it also when its array grows or it changes form, and a fifth alignment
//! above 64 replaces a view by building the new one afresh (O(n)).

use super::class::Class;
use super::size::{Residues, size_key};
use super::{EXACT_MAX, HISTOGRAM_BUCKETS, aligned};
use crate::Extent;
use crate::tree::MaxValue;
use crate::tree::bplus::{self, BPlus};

#[derive(Clone, Debug)]
pub(crate) struct Ordered {
    /// `start -> len`, with the longest extent under each inner child.
    pub(super) by_addr: BPlus<u64, u64, MaxValue>,
    /// `exact[l - 1]`: the starts of the free extents of exactly `l` blocks. Made on
    /// first use.
    pub(super) exact: alloc::vec::Vec<Class>,
    /// Bit `l - 1` is set when `exact[l - 1]` is not empty.
    pub(super) nonempty: u128,
    /// Bit `l - 1` is set once `exact[l - 1]` has held an entry (and so may hold
    /// nodes), so that counting the metadata visits only those classes.
    pub(super) used: u128,
    /// [`size_key`]`(len, start)` of the extents longer than [`EXACT_MAX`].
    /// With the residues of the starts under each child, as the exact classes.
    pub(super) by_size: BPlus<u128, (), Residues>,
    /// Views for the alignments above 64 blocks asked for recently: a cache of what
    /// the trees above hold, for aligned searches.
    pub(super) views: aligned::Views,
    /// An address lookup made ahead by [`probe`](Self::probe), `(x, floor(x))`, kept
    /// until the next change: a free first checks its blocks are not free, then
    /// inserts them, and both start with the same descent. (A plain field set through
    /// `&mut self`, so the index stays `Sync`.)
    pub(super) probe: Option<bplus::Probed>,
    pub(super) count_free_blocks: u64,
    pub(super) histogram: [u64; HISTOGRAM_BUCKETS],
}

/// Equal contents, node by node. The probe and the alignment views are caches, made by
/// lookups (a refused request may add a view), and are not compared.
impl PartialEq for Ordered {
    fn eq(&self, o: &Self) -> bool {
        self.by_addr == o.by_addr
            && self.exact == o.exact
            && self.nonempty == o.nonempty
            && self.by_size == o.by_size
            && self.count_free_blocks == o.count_free_blocks
            && self.histogram == o.histogram
    }
}

impl Ordered {
    /// An empty index.
    pub(crate) const fn new() -> Self {
        Ordered {
            by_addr: BPlus::new(),
            exact: alloc::vec::Vec::new(),
            nonempty: 0,
            used: 0,
            by_size: BPlus::new(),
            views: aligned::Views::new(),
            probe: None,
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

    /// Bytes of metadata held: every tree's node arenas.
    pub(crate) fn metadata_bytes(&self) -> usize {
        let mut classes = self.exact.capacity() * core::mem::size_of::<Class>();
        let mut used = self.used;
        while used != 0 {
            classes += self.exact[used.trailing_zeros() as usize].capacity_bytes();
            used &= used - 1;
        }
        self.by_addr.capacity_bytes()
            + self.by_size.capacity_bytes()
            + classes
            + self.views.metadata_bytes()
    }

    /// Adds the blocks `[start, start + len)` and coalesces them with their neighbours.
    ///
    /// The caller guarantees the blocks are not already in the index and lie below
    /// `u64::MAX`.
    pub(crate) fn insert(&mut self, start: u64, len: u64) {
        debug_assert!(len > 0);
        let end = start + len;
        // The extent just below `start` (none is free at `start` itself) and the next.
        let below = self.addr_floor(start);
        self.probe = None;
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
                self.by_addr.insert_after(below, start, len);
                self.add(start, len);
            }
            (Some(lp), None) => {
                let (ls, ll) = self.by_addr.get(lp);
                self.resize((ls, ll), (ls, ll + len));
                self.by_addr.set(lp, ls, ll + len);
            }
            (None, Some(rp)) => {
                let (rs, rl) = self.by_addr.get(rp);
                self.resize((rs, rl), (start, len + rl));
                self.by_addr.set(rp, start, len + rl);
            }
            (Some(lp), Some(rp)) => {
                let (ls, ll) = self.by_addr.get(lp);
                let (rs, rl) = self.by_addr.get(rp);
                self.sub(rs, rl);
                self.resize((ls, ll), (ls, ll + len + rl));
                self.by_addr.set(lp, ls, ll + len + rl);
                self.by_addr.remove(rp);
            }
        }
        self.count_free_blocks += len;
    }

    /// Removes the blocks `[start, start + len)`, which the caller guarantees lie inside
    /// a single free extent, splitting it as needed.
    pub(crate) fn take(&mut self, start: u64, len: u64) {
        debug_assert!(len > 0);
        let p = self
            .addr_floor(start)
            .expect("taking blocks that are not free");
        self.probe = None;
        let (s, l) = self.by_addr.get(p);
        let (end, e) = (start + len, s + l);
        assert!(
            end <= e,
            "taking [{start}, +{len}) beyond free extent [{s}, +{l})"
        );
        match (s == start, end == e) {
            (true, true) => {
                self.sub(s, l);
                self.by_addr.remove(p);
            }
            (true, false) => {
                self.resize((s, l), (end, e - end));
                self.by_addr.set(p, end, e - end);
            }
            (false, true) => {
                self.resize((s, l), (s, start - s));
                self.by_addr.set(p, s, start - s);
            }
            (false, false) => {
                self.resize((s, l), (s, start - s));
                self.by_addr.set(p, s, start - s);
                self.by_addr.insert_after(Some(p), end, e - end);
                self.add(end, e - end);
            }
        }
        self.count_free_blocks -= len;
    }

    /// Free extents in address order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = Extent> + '_ {
        self.by_addr.iter().map(|(s, l)| Extent::new(s, l))
    }

    /// Recomputes everything from scratch: tree shape, coalescing, the size index, the
    /// block count and the histogram. Reports `(invariant number, detail)`.
    pub(crate) fn check(&self, capacity: u64) -> Result<(), (u8, alloc::string::String)> {
        use alloc::format;
        self.by_addr
            .check()
            .map_err(|d| (3, format!("address order: {d}")))?;
        self.by_size
            .check()
            .map_err(|d| (3, format!("size order: {d}")))?;
        super::check_extents(
            self.by_addr.iter(),
            capacity,
            self.count_free_blocks,
            &self.histogram,
        )?;
        let mut long = 0;
        for (s, l) in self.by_addr.iter() {
            if l > EXACT_MAX && self.by_size.find(size_key(l, s)).is_none() {
                return Err((3, format!("size index misses [{s}, +{l})")));
            }
            long += usize::from(l > EXACT_MAX);
            if l <= EXACT_MAX && !self.exact[l as usize - 1].contains(s) {
                return Err((3, format!("exact class {l} misses [{s}, +{l})")));
            }
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
        let short = self.by_addr.len() - long;
        let listed: usize = self.exact.iter().map(Class::len).sum();
        if listed != short {
            return Err((
                3,
                format!("exact classes list {listed} extents, but {short} are that short"),
            ));
        }
        for (i, class) in self.exact.iter().enumerate() {
            class
                .check()
                .map_err(|d| (3, format!("exact class {}: {d}", i + 1)))?;
            if (class.len() > 0) != (self.nonempty & (1u128 << i) != 0) {
                return Err((
                    3,
                    format!("exact class {}: its non-empty bit is wrong", i + 1),
                ));
            }
            if class.capacity_bytes() > 0 && self.used & (1u128 << i) == 0 {
                return Err((
                    3,
                    format!(
                        "exact class {} holds nodes, but its used bit is clear",
                        i + 1
                    ),
                ));
            }
        }
        self.views.check(|| self.by_addr.iter()).map_err(|d| (3, d))
    }
}

#[cfg(test)]
mod tests {
    use super::super::address::fit_near;
    use super::super::{align_up, fit};
    use super::*;
    use alloc::format;
    use alloc::vec::Vec;

    fn extents(ix: &Ordered) -> Vec<(u64, u64)> {
        ix.iter().map(|e| (e.start, e.len)).collect()
    }

    #[test]
    fn insert_coalesces_both_sides() {
        // before: [0..4) free, [4..6) not, [6..10) free
        //         ####..####
        // insert [4..6): ##########
        let mut ix = Ordered::new();
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
        let mut ix = Ordered::new();
        ix.insert(0, 10);
        ix.take(3, 2);
        assert_eq!(extents(&ix), [(0, 3), (5, 5)]);
        assert_eq!(ix.free_blocks(), 8);
        ix.check(10).unwrap();
    }

    /// Extents of close lengths, all short (the exact classes decide) or all a little
    /// longer (the long order decides), so that padding picks the winner.
    #[test]
    fn largest_placeable_among_close_lengths() {
        let mut rng = SplitMix::new(11);
        for round in 0..400 {
            let mut ix = Ordered::new();
            let mut at = rng.below(64);
            let shortest = if round % 2 == 0 { 1 } else { EXACT_MAX + 1 };
            for _ in 0..1 + rng.below(12) {
                let len = shortest + rng.below(EXACT_MAX);
                ix.insert(at, len);
                at += len + 1 + rng.below(300);
            }
            let plain = Plain(ix.iter().map(|e| (e.start, e.len)).collect());
            for align in (0..9).map(|s| 1u64 << s) {
                ix.track(align);
                assert_eq!(
                    ix.largest_placeable(align),
                    plain.largest_placeable(align),
                    "round {round} align {align}"
                );
            }
        }
    }

    /// The free extents as a plain sorted list, and every query by brute force.
    struct Plain(Vec<(u64, u64)>);

    impl Plain {
        fn best_fit(&self, need: u64, align: u64) -> Option<u64> {
            let mut by_size = self.0.clone();
            by_size.sort_by_key(|&(s, l)| (l, s));
            by_size.iter().find_map(|&(s, l)| fit(s, l, need, align))
        }
        fn first_fit(&self, need: u64, align: u64) -> Option<u64> {
            self.0.iter().find_map(|&(s, l)| fit(s, l, need, align))
        }
        fn near(&self, need: u64, align: u64, goal: u64) -> Option<u64> {
            self.0
                .iter()
                .filter_map(|&(s, l)| fit_near(s, l, need, align, goal))
                .min_by_key(|&p| (p.abs_diff(goal), p))
        }
        fn largest(&self) -> Option<Extent> {
            let len = self.0.iter().map(|&(_, l)| l).max()?;
            let &(s, l) = self.0.iter().find(|&&(_, l)| l == len)?;
            Some(Extent::new(s, l))
        }
        fn largest_placeable(&self, align: u64) -> u64 {
            self.0
                .iter()
                .map(|&(s, l)| {
                    let p = align_up(s, align).unwrap();
                    l.saturating_sub(p - s)
                })
                .max()
                .unwrap_or(0)
        }
    }

    use crate::splitmix::SplitMix;

    /// Every search of `ix` answers as the plain list does.
    fn agrees(ix: &Ordered, plain: &Plain, need: u64, align: u64, goal: u64, what: &str) {
        assert_eq!(
            ix.best_fit(need, align),
            plain.best_fit(need, align),
            "best {what}"
        );
        assert_eq!(
            ix.first_fit(need, align),
            plain.first_fit(need, align),
            "first {what}"
        );
        assert_eq!(
            ix.first_fit_scanning(need, align, 0),
            plain.first_fit(need, align),
            "first, no scan, {what}"
        );
        assert_eq!(
            ix.near(need, align, goal),
            plain.near(need, align, goal),
            "near {what}"
        );
        assert_eq!(
            ix.near_scanning(need, align, goal, 0),
            plain.near(need, align, goal),
            "near, no scan, {what}"
        );
        assert_eq!(
            ix.largest_placeable(align),
            plain.largest_placeable(align),
            "placeable {what}"
        );
    }

    /// Thousands of extents, short and long (so both the exact classes and the long
    /// order are busy), against the plain list after every change.
    #[test]
    fn matches_a_plain_list_with_many_extents() {
        for seed in 0..3 {
            let cap = 200_000u64;
            let mut rng = SplitMix::new(seed);
            let mut ix = Ordered::new();
            ix.insert(0, cap);
            let mut taken: Vec<(u64, u64)> = Vec::new();
            for step in 0..4_000 {
                if taken.is_empty() || rng.below(100) < 65 {
                    // Take a random piece of a random free extent.
                    let free: Vec<Extent> = ix.iter().collect();
                    if free.is_empty() {
                        continue;
                    }
                    let e = free[rng.below(free.len() as u64) as usize];
                    let most = if rng.below(4) == 0 { 400 } else { 40 };
                    let len = 1 + rng.below(e.len.min(most));
                    let start = e.start + rng.below(e.len - len + 1);
                    ix.take(start, len);
                    taken.push((start, len));
                } else {
                    let (s, l) = taken.swap_remove(rng.below(taken.len() as u64) as usize);
                    // Give back all of it, or a random piece.
                    if rng.below(3) == 0 && l > 1 {
                        let cut = 1 + rng.below(l - 1);
                        ix.insert(s, cut);
                        taken.push((s + cut, l - cut));
                    } else {
                        ix.insert(s, l);
                    }
                }
                let plain = Plain(ix.iter().map(|e| (e.start, e.len)).collect());
                if step % 25 == 0 {
                    ix.check(cap)
                        .unwrap_or_else(|e| panic!("seed {seed} step {step}: {e:?}"));
                }
                for _ in 0..4 {
                    let need = 1 + if rng.below(3) == 0 {
                        rng.below(600)
                    } else {
                        rng.below(140)
                    };
                    // Up to 4096: six alignments above 64, each with its view.
                    let align = 1 << rng.below(13);
                    let goal = rng.below(cap);
                    let what =
                        format!("seed {seed} step {step}: need {need} align {align} goal {goal}");
                    // One search in four skips `track`: an alignment above 64 with no
                    // view is then served by a scan, with the same answers.
                    if rng.below(4) != 0 {
                        ix.track(align);
                    }
                    agrees(&ix, &plain, need, align, goal, &what);
                }
                assert_eq!(ix.largest(), plain.largest());
                assert_eq!(ix.largest_len(), plain.largest().map_or(0, |e| e.len));
                assert_eq!(ix.extent_count(), plain.0.len());
            }
        }
    }
}
