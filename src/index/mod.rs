//! The free-space index: which blocks `allocate` may hand out.
//!
//! The rest of the core sees only [`FreeIndex`]; its interface is the seam behind which
//! the representation can change. It holds every Free, unpinned block as fully coalesced
//! extents, in two orders:
//!
//! - by address, in a B+ tree ([`bplus::BPlus`]) whose inner nodes keep the longest
//!   extent under each child: coalescing, first fit, near-goal and overlap checks are
//!   one descent (and a short walk up) each, O(log n);
//! - by size, as segregated fits in the manner of dlmalloc: every length up to
//!   [`EXACT_MAX`] has an exact class, a small B+ tree of the starts of the extents of
//!   that length, and a bit in one `u128` that says whether it is empty; the longer
//!   extents share one B+ tree ordered by `(len, start)`. Best fit for `need` blocks is
//!   the lowest set bit at or above `need` and that class's first start, or else the
//!   first long extent at or above `(need, 0)`: smallest length first, lowest start
//!   among equals, exactly.
//!
//! Aligned requests (alignment `a`) must also weigh extents of `need` to
//! `need + a - 2` blocks, which fit only from some starts. Every size tree keeps the
//! residues of its starts mod 64 under each child, so for `a <= 64` the first extent
//! of a given length, at or after (or before) an address, whose start has room for
//! its padding is one descent: an aligned search costs O(a) of them (first fit and
//! near-goal first try a few extents in address order; near-goal then takes three
//! per length). Larger alignments must be asked for by [`FreeIndex::track`] first,
//! which keeps an [`aligned::View`] of the free extents for each: there an aligned
//! search is a descent or three, O(log n).
//!
//! All trees keep their nodes in arenas of 16-slot nodes, so a search touches a few
//! cache lines per level and no allocator call happens once the trees have grown,
//! except when a fifth alignment above 64 replaces a view, which builds the new one
//! afresh (O(n)).

pub(crate) mod aligned;
pub(crate) mod bplus;
pub(crate) mod coverage;
pub(crate) mod intervals;

use crate::Extent;
use bplus::{BPlus, Summary};

/// Lengths up to this many blocks each have an exact size class.
pub(crate) const EXACT_MAX: u64 = 128;

/// The largest value in a subtree: in the address order, its longest free extent; in
/// [`intervals::Intervals`], the furthest end.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct MaxValue(pub(crate) u64);

/// What a size-order tree knows of a subtree: which residues of `start mod 64` occur
/// there, so that an aligned best fit can skip subtrees where no start has room for
/// its padding.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Residues(u64);

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

impl<K: StartOf> Summary<K, ()> for Residues {
    #[inline]
    fn of(key: &K, (): &()) -> Self {
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
fn residues_with_room(align: u64, slack: u64) -> u64 {
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
fn class_bit(len: u64) -> u128 {
    debug_assert!((1..=EXACT_MAX).contains(&len));
    1u128 << (len - 1)
}

/// The class bits of lengths `len..=EXACT_MAX`.
#[inline]
fn classes_from(len: u64) -> u128 {
    if len > EXACT_MAX {
        0
    } else {
        u128::MAX << (len - 1)
    }
}

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

/// How many long-enough but misaligned extents an aligned first fit or near-goal search
/// tries one by one before it switches to the exact search by length. Usually the
/// first or second extent fits; the switch bounds the worst case at one descent per
/// length that can need padding.
const SCAN_BUDGET: usize = 4;

/// Which way [`FreeIndex::of_len_with_room`] looks from its address.
#[derive(Clone, Copy)]
enum Side {
    Before,
    After,
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
    /// `start -> len`, with the longest extent under each inner child.
    by_addr: BPlus<u64, u64, MaxValue>,
    /// `exact[l - 1]`: the starts of the free extents of exactly `l` blocks. Made on
    /// first use.
    exact: alloc::vec::Vec<BPlus<u64, (), Residues>>,
    /// Bit `l - 1` is set when `exact[l - 1]` is not empty.
    nonempty: u128,
    /// Bit `l - 1` is set once `exact[l - 1]` has held an entry (and so may hold
    /// nodes), so that counting the metadata visits only those classes.
    used: u128,
    /// [`size_key`]`(len, start)` of the extents longer than [`EXACT_MAX`].
    /// With the residues of the starts under each child, as the exact classes.
    by_size: BPlus<u128, (), Residues>,
    /// Views for the alignments above 64 blocks asked for recently: a cache of what
    /// the trees above hold, for aligned searches.
    views: aligned::Views,
    /// An address lookup made ahead by [`probe`](Self::probe), `(x, floor(x))`, kept
    /// until the next change: a free first checks its blocks are not free, then
    /// inserts them, and both start with the same descent. (A plain field set through
    /// `&mut self`, so the index stays `Sync`.)
    probe: Option<(u64, Option<bplus::Pos>)>,
    count_free_blocks: u64,
    histogram: [u64; HISTOGRAM_BUCKETS],
}

/// Equal contents, node by node. The probe and the alignment views are caches, made by
/// lookups (a refused request may add a view), and are not compared.
impl PartialEq for FreeIndex {
    fn eq(&self, o: &Self) -> bool {
        self.by_addr == o.by_addr
            && self.exact == o.exact
            && self.nonempty == o.nonempty
            && self.by_size == o.by_size
            && self.count_free_blocks == o.count_free_blocks
            && self.histogram == o.histogram
    }
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
    pair(len, start)
}

/// `(len, start)` of a size key.
#[inline]
fn size_of_key(key: u128) -> (u64, u64) {
    unpair(key)
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

/// How many aligned blocks the extent `[start, start + len)` gives: those from its first
/// multiple of `align` to its end (a view calls this the extent's room).
#[inline]
pub(crate) fn placeable(start: u64, len: u64, align: u64) -> u64 {
    align_up(start, align).map_or(0, |p| (start + len).saturating_sub(p))
}

/// The least padding to a multiple of `align` (at most 64) from any start whose
/// residue mod 64 is in `residues`; `u64::MAX` for none.
fn least_padding(residues: u64, align: u64) -> u64 {
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

impl FreeIndex {
    /// An empty index.
    pub(crate) const fn new() -> Self {
        FreeIndex {
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
        let mut classes = self.exact.capacity() * core::mem::size_of::<BPlus<u64, (), Residues>>();
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

    /// Readies the index for requests aligned to `align`: above 64 blocks, this keeps a
    /// view of the free extents for that alignment (built in O(n) the first time, kept
    /// in step after), so that aligned searches are O(log n). Below, it does nothing.
    /// Hand what it returns to [`untrack`](Self::untrack) if the request then fails.
    #[inline]
    pub(crate) fn track(&mut self, align: u64) -> Option<aligned::Tracked> {
        (align > 64).then(|| {
            let by_addr = &self.by_addr;
            self.views.track(align, || by_addr.iter())
        })
    }

    /// Undoes a [`track`](Self::track) for a request that failed, so that a failed
    /// request leaves the heap as it found it (see [`aligned::Views::untrack`]).
    pub(crate) fn untrack(&mut self, tracked: Option<aligned::Tracked>) {
        if let Some(t) = tracked {
            self.views.untrack(t);
        }
    }

    /// Whether `need` blocks aligned to `align` (above 64) are known not to fit,
    /// from what an earlier failed request learned, without a view.
    #[inline]
    pub(crate) fn known_short(&self, align: u64, need: u64) -> bool {
        align > 64 && self.views.known_short(align, need)
    }

    /// The view of `align`, when it is above 64 blocks: the searches for such an
    /// alignment read it alone.
    ///
    /// # Panics
    ///
    /// If `align` is above 64 and was not [`track`](Self::track)ed since the views
    /// last changed: the allocator tracks every alignment before it places it.
    #[inline]
    fn view(&self, align: u64) -> Option<&aligned::View> {
        (align > 64).then(|| {
            self.views
                .get(align)
                .expect("an alignment above 64 is tracked before it is searched")
        })
    }

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
    fn lowest_of_len(&self, len: u64) -> Option<u64> {
        let class = self.exact.get(len as usize - 1)?;
        class.first().map(|p| class.get(p).0)
    }

    /// The lowest aligned start of `need` blocks in an extent of exactly `len` blocks,
    /// `need <= len < need + align - 1` and `align <= 64`: the class's residue
    /// summaries lead straight to it, O(log n).
    fn lowest_with_room(&self, len: u64, need: u64, align: u64) -> Option<u64> {
        let s = self.of_len_with_room(len, need, align, 0, Side::After)?;
        fit(s, len, need, align)
    }

    /// Looks up address `x` ahead, for the next queries and changes at `x` to share
    /// until the index changes.
    #[inline]
    pub(crate) fn probe(&mut self, x: u64) {
        self.probe = Some((x, self.by_addr.floor(x)));
    }

    /// `by_addr.floor(x)`, from the probe when it holds `x`.
    #[inline]
    fn addr_floor(&self, x: u64) -> Option<bplus::Pos> {
        match self.probe {
            Some((at, found)) if at == x => found,
            _ => self.by_addr.floor(x),
        }
    }

    #[inline]
    fn add(&mut self, start: u64, len: u64) {
        self.views.add(start, len);
        if len > EXACT_MAX {
            self.by_size.insert(size_key(len, start), ());
        } else {
            if self.exact.is_empty() {
                self.exact.resize_with(EXACT_MAX as usize, BPlus::new);
            }
            self.exact[len as usize - 1].insert(start, ());
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
    fn resize(&mut self, (s0, l0): (u64, u64), (s1, l1): (u64, u64)) {
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
    fn sub(&mut self, start: u64, len: u64) {
        self.views.sub(start, len);
        if len > EXACT_MAX {
            let p = self
                .by_size
                .find(size_key(len, start))
                .expect("the size order lists every long free extent");
            self.by_size.remove(p);
        } else {
            let class = &mut self.exact[len as usize - 1];
            let p = class.find(start).expect("an exact class lists its extents");
            class.remove(p);
            if class.len() == 0 {
                self.nonempty &= !class_bit(len);
            }
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
                self.by_addr.insert(start, len);
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

    /// Best fit: the smallest extent that holds `need` aligned blocks, lowest first.
    pub(crate) fn best_fit(&self, need: u64, align: u64) -> Option<u64> {
        if let Some(view) = self.view(align) {
            return view.best_fit(need);
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
    fn long_best_fit(&self, shortest: u64, need: u64, align: u64) -> Option<u64> {
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

    /// First fit: the lowest aligned start where `need` blocks fit.
    pub(crate) fn first_fit(&self, need: u64, align: u64) -> Option<u64> {
        self.first_fit_scanning(need, align, SCAN_BUDGET)
    }

    /// [`first_fit`](Self::first_fit), trying up to `budget` long-enough extents that
    /// turn out misaligned before it switches to the exact search by length.
    fn first_fit_scanning(&self, need: u64, align: u64, budget: usize) -> Option<u64> {
        if let Some(view) = self.view(align) {
            return view.first_fit(need);
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
    fn near_scanning(&self, need: u64, align: u64, goal: u64, budget: usize) -> Option<u64> {
        if let Some(view) = self.view(align) {
            // Every extent the view lists with room for `need` fits: no misses.
            let len_of = |s, room| view.len_of(s, room);
            let found = near_in(view.by_start(), need, len_of, need, align, goal, 0);
            return closest(goal, found.ok()?.into_iter().flatten());
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

    /// The start of the first free extent of exactly `len` blocks at or after `at`
    /// ([`Side::After`]), or of the last at or before it ([`Side::Before`]), whose
    /// start leaves room for `align`-padding with `len - need` blocks to spare.
    /// `need <= len < need + align - 1` and `align <= 64`: the residue summaries lead
    /// straight to it, one descent.
    fn of_len_with_room(
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
            let entry = |&s: &u64, (): &()| room & (1 << (s % 64)) != 0;
            let p = match side {
                Side::After => class.first_matching(at, sub, entry),
                Side::Before => class.last_matching(at, sub, entry),
            }?;
            Some(class.get(p).0)
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

    /// The number of free blocks from `start` to the end of its free extent (0 if
    /// `start` is not free).
    pub(crate) fn run_from(&self, start: u64) -> u64 {
        self.containing(start)
            .map_or(0, |e| e.start + e.len - start)
    }

    /// The longest run of `align`-aligned blocks any single free extent can give.
    ///
    /// O(1) with no alignment or one above 64 (the view's root); O(a log n) for
    /// alignments `1 < a <= 64`.
    pub(crate) fn largest_placeable(&self, align: u64) -> u64 {
        if align == 1 {
            return self.largest_len();
        }
        if let Some(view) = self.view(align) {
            return view.largest_placeable();
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
            let pad = least_padding(self.exact[len as usize - 1].summary().0, align);
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
    fn long_placeable(&self, align: u64) -> u64 {
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
            if l <= EXACT_MAX && self.exact[l as usize - 1].find(s).is_none() {
                return Err((3, format!("exact class {l} misses [{s}, +{l})")));
            }
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
        let short = self.by_addr.len() - long;
        let listed: usize = self.exact.iter().map(BPlus::len).sum();
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
        self.views.check(|| self.by_addr.iter()).map_err(|d| (3, d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;
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
    fn near_by_length_looks_past_an_alignment_overshoot() {
        // free: [10..17)  [18..25)  [33..35); need 1 aligned to 8, goal 18
        // [18..25) places at 24 (6 away), the extent of the same length before it at
        // 16 (2 away); [33..35) has no aligned block, so a search that tries no
        // misaligned extent goes straight to the search by length.
        let mut ix = FreeIndex::new();
        ix.insert(10, 7);
        ix.insert(18, 7);
        ix.insert(33, 2);
        assert_eq!(ix.near_scanning(1, 8, 18, 0), Some(16));
        assert_eq!(ix.near(1, 8, 18), Some(16));
    }

    #[test]
    fn largest_placeable_accounts_for_alignment() {
        let mut ix = FreeIndex::new();
        ix.insert(1, 10); // aligned to 8: [8..11) -> 3
        ix.insert(32, 5); // aligned to 8: [32..37) -> 5
        assert_eq!(ix.largest_placeable(1), 10);
        assert_eq!(ix.largest_placeable(8), 5);
    }

    #[test]
    fn least_padding_matches_a_brute_force() {
        let mut rng = super::bplus::tests::Rng(7);
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

    /// Extents of close lengths, all short (the exact classes decide) or all a little
    /// longer (the long order decides), so that padding picks the winner.
    #[test]
    fn largest_placeable_among_close_lengths() {
        let mut rng = super::bplus::tests::Rng(11);
        for round in 0..400 {
            let mut ix = FreeIndex::new();
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

    use super::bplus::tests::Rng;

    /// Every search of `ix` answers as the plain list does.
    fn agrees(ix: &FreeIndex, plain: &Plain, need: u64, align: u64, goal: u64, what: &str) {
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
            let mut rng = Rng(seed);
            let mut ix = FreeIndex::new();
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
                    // Up to 4096: six alignments above 64 compete for the views.
                    let align = 1 << rng.below(13);
                    let goal = rng.below(cap);
                    let what =
                        format!("seed {seed} step {step}: need {need} align {align} goal {goal}");
                    ix.track(align);
                    agrees(&ix, &plain, need, align, goal, &what);
                }
                assert_eq!(ix.largest(), plain.largest());
                assert_eq!(ix.largest_len(), plain.largest().map_or(0, |e| e.len));
                assert_eq!(ix.extent_count(), plain.0.len());
            }
        }
    }
}
