//! Pin counts and Deferred marks per block, as two step functions over the block
//! numbers: the pin registry's index. (Deferred blocks in a run that keeps its pin,
//! see `allocator::defer`, are neither counted nor marked here.)
//!
//! Both functions are kept as their differences. Adding 1 over `[s, e)` is `+1` at `s`
//! and `-1` at `e`, so a pin costs two point updates however many pins overlap it, and
//! nesting depth costs nothing. The count at block `x` is the sum of the differences
//! at keys up to `x`.
//!
//! The differences live in a [`BPlus`] keyed by block number, each with the blocks up
//! to the next key. Each parent knows, of each child's entries, the sums of both
//! differences, and the lowest pin count just after one of them, with the blocks that
//! count covers. So:
//!
//! - "how many pins cover `x`" and "is anything in `[s, e)` pinned or marked" are one
//!   descent;
//! - "which pieces of `[s, e)` are unpinned" passes whole subtrees where every count
//!   stays above zero: O(log n) per piece it returns;
//! - "how many blocks are pinned" is read off the root.
//!
//! Beside the counts, a second tree keeps runs of blocks that hold every pinned or
//! marked block, with a gap between any two. "Is any block of `[s, e)` held", which
//! every free asks, is then one plain descent of the runs when the answer is no (the
//! common one), and the counts decide only when a run meets the range. A run is cut
//! back when an unpin or unmark over a few keys leaves blocks unheld; an unpin over
//! many keys leaves it wider than what it holds, so that pinning and unpinning a range
//! over many small pins does not split and rejoin their runs each time.
//!
//! A key of `u64::MAX` is never stored: no block lies at or past it, so a difference
//! there changes no count.

use alloc::vec::Vec;
use core::ops::Range;

use super::Cache;
use super::bplus::{BPlus, Fold, Probed, Summary, Unfold, Value};

/// The most keys inside an unpin's range for it to cut its unheld pieces out of the
/// runs.
const CUT_KEYS: usize = 8;

/// The differences at one key, and the blocks from it to the next key (to the end of
/// the `u64` space for the last key).
///
/// Both differences share one word, 16 bytes a step with the length: the pin
/// difference shifted left by two, the mark difference (-1, 0 or 1) in the low two
/// bits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Step {
    diff: i64,
    len: u64,
}

impl Step {
    #[inline]
    fn new(pins: i64, marks: i64, len: u64) -> Self {
        debug_assert!((-1..=1).contains(&marks));
        Step {
            diff: (pins << 2) | (marks & 3),
            len,
        }
    }

    #[inline]
    fn pins(self) -> i64 {
        self.diff >> 2
    }

    #[inline]
    fn marks(self) -> i64 {
        (self.diff << 62) >> 62
    }
}

impl Value for Step {}

/// What a parent knows of a child's entries (see the module docs). Counts are
/// relative to the count just before the child's first key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CoverSum {
    pins: i64,
    marks: i64,
    /// The lowest pin count just after an entry (`i64::MAX` for no entry).
    low: i64,
    /// The blocks from the entries after which the count is `low` to their next keys.
    low_len: u64,
}

impl Default for CoverSum {
    #[inline]
    fn default() -> Self {
        CoverSum {
            pins: 0,
            marks: 0,
            low: i64::MAX,
            low_len: 0,
        }
    }
}

impl Summary<u64, Step> for CoverSum {
    #[inline]
    fn of(_: &u64, v: &Step) -> Self {
        CoverSum {
            pins: v.pins(),
            marks: v.marks(),
            low: v.pins(),
            low_len: v.len,
        }
    }

    #[inline]
    fn join(self, b: Self) -> Self {
        let b_low = self.pins.saturating_add(b.low);
        let low = self.low.min(b_low);
        let at = |l: i64, len: u64| if l == low { len } else { 0 };
        CoverSum {
            pins: self.pins + b.pins,
            marks: self.marks + b.marks,
            low,
            low_len: at(self.low, self.low_len) + at(b_low, b.low_len),
        }
    }

    #[inline]
    fn replace(_: Self, _: Self, _: Self) -> Option<Self> {
        None
    }

    #[inline]
    fn of_entries(_: &[u64], vals: &[Step]) -> Self {
        let mut s = CoverSum::default();
        let (mut pins, mut marks) = (0i64, 0i64);
        for v in vals {
            pins += v.pins();
            marks += v.marks();
            if pins < s.low {
                s.low = pins;
                s.low_len = v.len;
            } else if pins == s.low {
                s.low_len += v.len;
            }
        }
        s.pins = pins;
        s.marks = marks;
        s
    }
}

/// The counts just before a key: pins and marks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Counts {
    pins: i64,
    marks: i64,
}

/// Folds counts, passing over subtrees that `pass` allows.
struct CountFold<P: Fn(Counts, &CoverSum) -> bool>(P);

impl<P: Fn(Counts, &CoverSum) -> bool> Fold<u64, Step, CoverSum, Counts> for CountFold<P> {
    #[inline]
    fn entry(&self, acc: Counts, _: &u64, v: &Step) -> Counts {
        Counts {
            pins: acc.pins + v.pins(),
            marks: acc.marks + v.marks(),
        }
    }

    #[inline]
    fn subtree(&self, acc: Counts, s: &CoverSum) -> Counts {
        Counts {
            pins: acc.pins + s.pins,
            marks: acc.marks + s.marks,
        }
    }

    #[inline]
    fn skip(&self, acc: Counts, s: &CoverSum) -> bool {
        (self.0)(acc, s)
    }
}

impl<P: Fn(Counts, &CoverSum) -> bool> Unfold<u64, Step, CoverSum, Counts> for CountFold<P> {
    #[inline]
    fn less_entry(&self, acc: Counts, _: &u64, v: &Step) -> Counts {
        Counts {
            pins: acc.pins - v.pins(),
            marks: acc.marks - v.marks(),
        }
    }

    #[inline]
    fn less_subtree(&self, acc: Counts, s: &CoverSum) -> Counts {
        Counts {
            pins: acc.pins - s.pins,
            marks: acc.marks - s.marks,
        }
    }
}

/// Pin counts and Deferred marks; see the module docs.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Coverage {
    tree: BPlus<u64, Step, CoverSum>,
    /// Runs of blocks, by last block → first block, that hold every pinned or marked
    /// block, with a gap between any two: what [`any`](Self::any), the question every
    /// free asks, reads first in one plain descent, where the count at a block is a
    /// fold over each level. A run is exact but where an unpin over many keys left it
    /// wider (see [`unhold`](Self::unhold)).
    runs: BPlus<u64, u64, ()>,
    /// `(x, the first run ending at or after x)` from [`probe`](Self::probe), until the
    /// next change.
    probe: Cache<Option<Probed>>,
    /// A range [`probe`](Self::probe) found clear by the filter, until the next change.
    clear: Cache<Option<(u64, u64)>>,
    /// Which regions of the space may hold a run: see [`Filter`].
    filter: Cache<Filter>,
}

/// Regions in the [`Filter`].
const REGIONS: usize = 4096;

/// A bit per region of the blocks `[0, REGIONS << shift)`, set when a run may meet the
/// region: a free far from every hold learns so without a descent. Fixed in size, so
/// it costs nothing per hold and nothing per block. Bits are set as runs are made and
/// left set when they go; the filter is rebuilt from the runs once more runs have
/// gone than are left, or when a run reaches past its span.
#[derive(Clone, Copy, Debug)]
struct Filter {
    bits: [u64; REGIONS / 64],
    shift: u32,
    /// Runs removed or cut since the last rebuild.
    stale: usize,
}

impl Filter {
    const fn new() -> Self {
        Filter {
            bits: [0; REGIONS / 64],
            shift: 0,
            stale: 0,
        }
    }

    /// The regions `[a, b]` that blocks `r` (non-empty) meet, clipped to the span; `None`
    /// when `r` lies past it.
    #[inline]
    fn regions(&self, r: &Range<u64>) -> Option<(usize, usize)> {
        let a = r.start >> self.shift;
        if a >= REGIONS as u64 {
            return None;
        }
        let b = ((r.end - 1) >> self.shift).min(REGIONS as u64 - 1);
        Some((a as usize, b as usize))
    }

    /// Whether any bit of regions `[a, b]` is set.
    #[inline]
    fn any(&self, a: usize, b: usize) -> bool {
        (a / 64..=b / 64).any(|w| {
            let lo = if w == a / 64 { a % 64 } else { 0 };
            let hi = if w == b / 64 { b % 64 } else { 63 };
            let mask = (u64::MAX >> (63 - hi)) & (u64::MAX << lo);
            self.bits[w] & mask != 0
        })
    }

    /// Sets the bits of regions `[a, b]`.
    fn set(&mut self, a: usize, b: usize) {
        for w in a / 64..=b / 64 {
            let lo = if w == a / 64 { a % 64 } else { 0 };
            let hi = if w == b / 64 { b % 64 } else { 63 };
            self.bits[w] |= (u64::MAX >> (63 - hi)) & (u64::MAX << lo);
        }
    }

    /// Whether no block of `r` can be in a run.
    #[inline]
    fn clear(&self, r: &Range<u64>) -> bool {
        self.regions(r).is_none_or(|(a, b)| !self.any(a, b))
    }
}

impl Coverage {
    pub(crate) const fn new() -> Self {
        Coverage {
            tree: BPlus::new(),
            runs: BPlus::new(),
            probe: Cache(None),
            clear: Cache(None),
            filter: Cache(Filter::new()),
        }
    }

    /// Bytes held by the trees' arenas.
    pub(crate) fn capacity_bytes(&self) -> usize {
        self.tree.capacity_bytes() + self.runs.capacity_bytes()
    }

    /// Looks up the blocks `r` (non-empty) ahead, in the filter and, when it cannot tell,
    /// in the runs, for [`any`](Self::any) of `r` to use until the next change.
    #[inline]
    pub(crate) fn probe(&mut self, r: &Range<u64>) {
        if self.filter.0.clear(r) {
            self.clear = Cache(Some((r.start, r.end)));
            return;
        }
        self.probe = Cache(Some(Probed::new(r.start, self.runs.ceil_near(r.start))));
    }

    /// The run `[from, to)` was just made: its regions may hold a run.
    fn mark_run(&mut self, from: u64, to: u64) {
        let f = &mut self.filter.0;
        if (to - 1) >> f.shift >= REGIONS as u64 {
            while (to - 1) >> f.shift >= REGIONS as u64 {
                f.shift += 1;
            }
            self.rebuild_filter();
        }
        let f = &mut self.filter.0;
        if let Some((a, b)) = f.regions(&(from..to)) {
            f.set(a, b);
        }
    }

    /// A run went or shrank: its regions' bits may now be set for nothing. Rebuilds the
    /// filter once more runs have gone than are left (amortised O(1) a change).
    fn run_gone(&mut self) {
        self.filter.0.stale += 1;
        if self.filter.0.stale > self.runs.len() + REGIONS / 64 {
            self.rebuild_filter();
        }
    }

    /// Sets exactly the bits of the regions the runs meet.
    fn rebuild_filter(&mut self) {
        let f = &mut self.filter.0;
        f.bits = [0; REGIONS / 64];
        f.stale = 0;
        for (last, start) in self.runs.iter() {
            if let Some((a, b)) = f.regions(&(start..last + 1)) {
                f.set(a, b);
            }
        }
    }

    /// Every block of `r` (non-empty) has just become pinned or marked: joins it to the
    /// runs, with the runs it overlaps or touches. O(log n) when a run already holds
    /// it (a nested pin), plus O(log n) per run it joins.
    fn hold(&mut self, r: &Range<u64>) {
        let touch = r.start.saturating_sub(1);
        let (mut from, mut to) = (r.start, r.end);
        while let Some(p) = self.runs.ceil(touch, false) {
            let (last, start) = self.runs.get(p);
            if start > r.end {
                break;
            }
            if start <= r.start && last >= r.end - 1 {
                debug_assert_eq!((from, to), (r.start, r.end));
                return;
            }
            from = from.min(start);
            to = to.max(last + 1);
            self.runs.remove(p);
        }
        self.runs.insert(to - 1, from);
        self.mark_run(from, to);
    }

    /// Blocks of `within`, all held until now, may have lost their last pin or mark:
    /// cuts the pieces left with neither out of their run. It cuts only when at most
    /// [`CUT_KEYS`] keys lie inside `within`; past that, the run stays as it was, wider
    /// than what it holds, so that an unpin over many small pins does not split their
    /// run into as many pieces (and the next pin over them join them again). Either
    /// way, a run around `within` left holding no block at all goes, so that every run
    /// holds a block and the runs never outnumber the held pieces.
    fn unhold(&mut self, within: &Range<u64>) {
        let mut at = self.tree.ceil(within.start, true);
        for _ in 0..CUT_KEYS {
            match at {
                Some(p) if self.tree.get(p).0 < within.end => at = self.tree.next(p),
                _ => break,
            }
        }
        let few = at.is_none_or(|p| self.tree.get(p).0 >= within.end);
        if few {
            for piece in self.pieces_where(within, |c| c.pins == 0 && c.marks == 0) {
                let p = self
                    .runs
                    .ceil(piece.start, false)
                    .expect("a block that was held lies in a run");
                let (last, start) = self.runs.get(p);
                debug_assert!(start <= piece.start && last >= piece.end - 1);
                match (start < piece.start, last >= piece.end) {
                    (false, false) => self.runs.remove(p),
                    (false, true) => self.runs.set(p, last, piece.end),
                    (true, false) => self.runs.set(p, piece.start - 1, start),
                    (true, true) => {
                        self.runs.set(p, last, piece.end);
                        self.runs.insert(piece.start - 1, start);
                    }
                }
                self.run_gone();
            }
        }
        // The runs that meet or touch `within`: what is left of the one that held it.
        let mut from = within.start.saturating_sub(1);
        while let Some(p) = self.runs.ceil(from, false) {
            let (last, start) = self.runs.get(p);
            if start > within.end {
                break;
            }
            if !self.any_counted(&(start..last + 1)) {
                self.runs.remove(p);
                self.run_gone();
            }
            if last >= within.end {
                break;
            }
            from = last + 1;
        }
    }

    /// Adds `pins` and `marks` to the differences at `at`, keeping every entry's
    /// length to the next key.
    fn add_at(&mut self, at: u64, pins: i64, marks: i64) {
        if at == u64::MAX {
            return;
        }
        let Some(pos) = self.tree.floor(at) else {
            // Before every key: the new entry reaches the first one.
            let len = match self.tree.first() {
                Some(first) => self.tree.get(first).0 - at,
                None => u64::MAX - at,
            };
            self.tree.insert(at, Step::new(pins, marks, len));
            return;
        };
        let (k, v) = self.tree.get(pos);
        if k < at {
            // Splits the entry before it.
            let cut = at - k;
            self.tree.set(pos, k, Step { len: cut, ..v });
            let len = v.len - cut;
            self.tree.insert(at, Step::new(pins, marks, len));
            return;
        }
        let v = Step::new(v.pins() + pins, v.marks() + marks, v.len);
        if v.diff != 0 {
            self.tree.set(pos, at, v);
            return;
        }
        // The entry goes, then the one before it reaches as far (in this order, so
        // that no summary ever counts a block twice).
        let had_before = self.tree.prev(pos).is_some();
        self.tree.remove(pos);
        if had_before {
            let before = self.tree.floor(at).expect("the entry before stays");
            let (bk, bv) = self.tree.get(before);
            self.tree.set(
                before,
                bk,
                Step {
                    len: bv.len + v.len,
                    ..bv
                },
            );
        }
    }

    /// Adds `by` to the pin count of every block of `r` (non-empty).
    pub(crate) fn pin(&mut self, r: &Range<u64>, by: i64) {
        debug_assert!(r.start < r.end);
        self.probe = Cache(None);
        self.clear = Cache(None);
        self.add_at(r.start, by, 0);
        self.add_at(r.end, -by, 0);
        if by > 0 {
            self.hold(r);
        } else {
            self.unhold(r);
        }
    }

    /// Marks every block of `r` (non-empty, none marked yet) Deferred, or with `by` of
    /// -1 unmarks it (all marked).
    pub(crate) fn mark(&mut self, r: &Range<u64>, by: i64) {
        debug_assert!(r.start < r.end);
        self.probe = Cache(None);
        self.clear = Cache(None);
        self.add_at(r.start, 0, by);
        self.add_at(r.end, 0, -by);
        if by > 0 {
            self.hold(r);
        } else {
            self.unhold(r);
        }
    }

    /// The counts at block `x`.
    fn counts_at(&self, x: u64) -> Counts {
        self.tree
            .prefix(x, Counts::default(), &CountFold(|_, _| false))
            .0
    }

    /// Whether no block is pinned or marked.
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.tree.len() == 0
    }

    /// How many pins cover block `x`.
    pub(crate) fn pins_at(&self, x: u64) -> u64 {
        self.counts_at(x).pins as u64
    }

    /// Whether a block of `r` is pinned or marked. One descent of the runs when no run
    /// meets `r` (the common answer), else the counts decide.
    #[inline]
    pub(crate) fn any(&self, r: &Range<u64>) -> bool {
        !self.is_empty() && self.any_held(r)
    }

    /// [`any`](Self::any) once some run is held: out of line, so that a pin while
    /// no run is (the common case) pays one test.
    #[inline(never)]
    fn any_held(&self, r: &Range<u64>) -> bool {
        if self.clear.0 == Some((r.start, r.end)) {
            return false;
        }
        let found = match self.probe.0.and_then(|p| p.of(r.start)) {
            Some(found) => found,
            None if self.filter.0.clear(r) => return false,
            None => self.runs.ceil(r.start, false),
        };
        found.is_some_and(|p| self.runs.get(p).1 < r.end) && self.any_counted(r)
    }

    /// [`any`](Self::any) by the counts: the count at `r.start`, or any key inside `r`,
    /// which must raise a count from zero. One descent, folding each level.
    fn any_counted(&self, r: &Range<u64>) -> bool {
        let (at, above) = self
            .tree
            .prefix(r.start, Counts::default(), &CountFold(|_, _| false));
        at.pins > 0 || at.marks > 0 || above.is_some_and(|k| k < r.end)
    }

    /// Whether a block of `r` is pinned: O(log n + the keys inside `r` before the first
    /// pinned block), so one descent when `r` holds no Deferred block, where every key
    /// inside `r` is a pin's.
    pub(crate) fn any_pinned(&self, r: &Range<u64>) -> bool {
        let mut found = false;
        let at = self.tree.walk_with(
            r.start,
            r.end,
            Counts::default(),
            &CountFold(|_, _| false),
            &mut |acc, _, v| {
                found = acc.pins > 0 || acc.pins + v.pins() > 0;
                !found
            },
        );
        found || at.pins > 0
    }

    /// The maximal pieces of `within` whose pin count is zero, in order. It passes every
    /// subtree where the count stays above zero, so it costs O(log n) for each piece,
    /// plus one step for each key inside a piece (the Deferred marks' keys there).
    pub(crate) fn unpinned(&self, within: &Range<u64>) -> Vec<Range<u64>> {
        self.pieces_where(within, |c| c.pins == 0)
    }

    /// The maximal pieces of `within` whose counts pass `want`, which must fail
    /// wherever the pin count is above zero; costs as [`unpinned`](Self::unpinned).
    fn pieces_where(&self, within: &Range<u64>, want: impl Fn(Counts) -> bool) -> Vec<Range<u64>> {
        let mut out: Vec<Range<u64>> = Vec::new();
        let mut from = within.start;
        let mut emit = |piece: Range<u64>| {
            if piece.start == piece.end {
                return;
            }
            match out.last_mut() {
                Some(last) if last.end == piece.start => last.end = piece.end,
                _ => out.push(piece),
            }
        };
        let end = self.tree.walk_with(
            within.start,
            within.end,
            Counts::default(),
            // A subtree can be passed when the count is above zero before it and
            // after each of its keys.
            &CountFold(|acc, s| acc.pins > 0 && acc.pins + s.low > 0),
            &mut |acc, k, _| {
                if want(acc) {
                    emit(from..k);
                }
                from = k;
                true
            },
        );
        if want(end) {
            emit(from..within.end);
        }
        out
    }

    /// Blocks with a pin count above zero, from the root's summary.
    pub(crate) fn pinned_blocks(&self) -> u64 {
        let Some(first) = self.tree.first() else {
            return 0;
        };
        // From the first key on, every block lies in exactly one entry's length.
        let s = self.tree.summary();
        let zero = if s.low == 0 { s.low_len } else { 0 };
        u64::MAX - self.tree.get(first).0 - zero
    }

    /// The maximal marked ranges, in order.
    pub(crate) fn marked(&self) -> Vec<Range<u64>> {
        let mut out = Vec::new();
        let (mut marks, mut from) = (0, 0);
        for (k, v) in self.tree.iter() {
            let next = marks + v.marks();
            if marks == 0 && next > 0 {
                from = k;
            } else if marks > 0 && next == 0 {
                out.push(from..k);
            }
            marks = next;
        }
        if marks > 0 {
            out.push(from..u64::MAX);
        }
        out
    }

    /// The pin count at `r.start`, then each change of it inside `r` (key and
    /// difference), in order: O(log n + the keys in `r`).
    pub(crate) fn pin_steps_in(&self, r: &Range<u64>) -> (u64, Vec<(u64, i64)>) {
        let at = self.pins_at(r.start);
        let mut steps = Vec::new();
        let mut p = self.tree.ceil(r.start, true);
        while let Some(pos) = p {
            let (k, v) = self.tree.get(pos);
            if k >= r.end {
                break;
            }
            if v.pins() != 0 {
                steps.push((k, v.pins()));
            }
            p = self.tree.next(pos);
        }
        (at, steps)
    }

    /// The pin differences, by key, in order.
    pub(crate) fn pin_steps(&self) -> impl Iterator<Item = (u64, i64)> + '_ {
        self.tree
            .iter()
            .filter(|(_, v)| v.pins() != 0)
            .map(|(k, v)| (k, v.pins()))
    }

    /// The tree is sound, no entry is empty, and no count goes below zero.
    pub(crate) fn check(&self) -> Result<(), alloc::string::String> {
        use alloc::format;
        self.tree.check()?;
        let mut c = Counts::default();
        let mut runs: Vec<Range<u64>> = Vec::new();
        let keys: Vec<u64> = self.tree.iter().map(|(k, _)| k).collect();
        for (i, (k, v)) in self.tree.iter().enumerate() {
            let reach = keys.get(i + 1).copied().unwrap_or(u64::MAX);
            if v.len != reach - k {
                return Err(format!(
                    "the step at {k} reaches {} blocks, not {} to the next key",
                    v.len,
                    reach - k
                ));
            }
            if v.diff == 0 || k == u64::MAX {
                return Err(format!(
                    "coverage keeps an empty or unreachable step at {k}"
                ));
            }
            let was = c.pins > 0 || c.marks > 0;
            c.pins += v.pins();
            c.marks += v.marks();
            if c.pins < 0 || !(0..=1).contains(&c.marks) {
                return Err(format!(
                    "after block {k} the coverage counts {} pins and {} marks",
                    c.pins, c.marks
                ));
            }
            match (was, c.pins > 0 || c.marks > 0) {
                (false, true) => runs.push(k..u64::MAX),
                (true, false) => runs.last_mut().expect("a run was open").end = k,
                _ => {}
            }
        }
        self.runs.check()?;
        let kept: Vec<Range<u64>> = self.runs.iter().map(|(last, s)| s..last + 1).collect();
        if let Some(w) = kept.windows(2).find(|w| w[0].end >= w[1].start) {
            return Err(format!("coverage keeps the runs {w:?} with no gap between"));
        }
        // Both lists are in order: a run holds a block if the first held piece ending
        // after its start begins before its end.
        let mut h = runs.iter().peekable();
        for k in &kept {
            while h.next_if(|h| h.end <= k.start).is_some() {}
            if h.peek().is_none_or(|h| h.start >= k.end) {
                return Err(format!(
                    "the coverage keeps the run {k:?}, which holds nothing"
                ));
            }
        }
        let f = &self.filter.0;
        if let Some(k) = kept.iter().find(|k| {
            f.regions(k)
                .is_none_or(|(a, b)| (a..=b).any(|i| !f.any(i, i)))
        }) {
            return Err(format!("the filter misses the run {k:?}"));
        }
        let mut k = kept.iter().peekable();
        for held in &runs {
            while k.next_if(|r| r.end <= held.start).is_some() {}
            if !k
                .peek()
                .is_some_and(|r| r.start <= held.start && held.end <= r.end)
            {
                return Err(format!(
                    "no run of the coverage holds the held blocks {held:?}"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use alloc::vec;
    use alloc::vec::Vec;
    use core::ops::Range;

    use proptest::prelude::*;

    use super::{Coverage, REGIONS};

    /// Per-block counts over a window wide enough for trees three levels deep.
    const N: u64 = 1200;

    fn pieces(counts: &[i64], within: &Range<u64>, want: impl Fn(i64) -> bool) -> Vec<Range<u64>> {
        let mut out: Vec<Range<u64>> = Vec::new();
        for b in within.clone() {
            if want(counts[b as usize]) {
                match out.last_mut() {
                    Some(l) if l.end == b => l.end = b + 1,
                    _ => out.push(b..b + 1),
                }
            }
        }
        out
    }

    proptest! {

        /// Every query agrees with per-block counts after every change
        /// (`PROPTEST_CASES` sets the number of cases, 256 by default).
        #[test]
        fn agrees_with_per_block_counts(
            ops in proptest::collection::vec((0u64..N, 1u64..40, 0u8..4), 1..400),
            queries in proptest::collection::vec((0u64..N, 1u64..200), 4),
        ) {
            let mut c = Coverage::new();
            let mut pins = vec![0i64; N as usize];
            let mut marks = vec![0i64; N as usize];
            let mut live: Vec<Range<u64>> = Vec::new();
            for (s, len, op) in ops {
                let r = s..(s + len).min(N);
                match op {
                    0 | 1 => {
                        c.pin(&r, 1);
                        live.push(r.clone());
                        for b in r { pins[b as usize] += 1; }
                    }
                    2 if !live.is_empty() => {
                        let r = live.swap_remove(s as usize % live.len());
                        c.pin(&r, -1);
                        for b in r { pins[b as usize] -= 1; }
                    }
                    _ => {
                        // Mark the unmarked blocks of r, or unmark a marked run.
                        let unmarked = pieces(&marks, &r, |m| m == 0);
                        if unmarked.len() == 1 && unmarked[0] == r {
                            c.mark(&r, 1);
                            for b in r { marks[b as usize] = 1; }
                        } else if let Some(m) = pieces(&marks, &r, |m| m == 1).first() {
                            c.mark(m, -1);
                            for b in m.clone() { marks[b as usize] = 0; }
                        }
                    }
                }
                c.check().unwrap();
                prop_assert_eq!(c.pinned_blocks(), pins.iter().filter(|&&p| p > 0).count() as u64);
                prop_assert_eq!(c.marked(), pieces(&marks, &(0..N), |m| m == 1));
                for &(qs, ql) in &queries {
                    prop_assert_eq!(c.pins_at(qs), pins[qs as usize] as u64);
                    let q = qs..(qs + ql).min(N);
                    prop_assert_eq!(c.unpinned(&q), pieces(&pins, &q, |p| p == 0));
                    let pinned = q.clone().any(|b| pins[b as usize] > 0);
                    prop_assert_eq!(c.any_pinned(&q), pinned);
                    let marked = q.clone().any(|b| marks[b as usize] > 0);
                    prop_assert_eq!(c.any(&q), pinned || marked);
                }
            }
            for b in 0..N {
                prop_assert_eq!(c.pins_at(b), pins[b as usize] as u64);
            }
        }
    }

    #[test]
    fn pins_reaching_the_end_of_the_space() {
        let mut c = Coverage::new();
        let top = u64::MAX - 3..u64::MAX;
        c.pin(&top, 1);
        c.pin(&(0..2), 1);
        assert_eq!(c.pinned_blocks(), 5);
        assert_eq!(c.pins_at(u64::MAX - 1), 1);
        assert!(c.any_pinned(&(u64::MAX - 1..u64::MAX)));
        assert_eq!(
            c.unpinned(&(u64::MAX - 5..u64::MAX)),
            vec![u64::MAX - 5..u64::MAX - 3]
        );
        c.pin(&top, -1);
        assert_eq!(c.pinned_blocks(), 2);
        c.check().unwrap();
    }

    /// An unpin over more than `CUT_KEYS` keys leaves one wide run: the gaps in it
    /// still answer "not held", and the next pin over them joins nothing.
    #[test]
    fn an_unpin_over_many_pins_leaves_one_wide_run() {
        let mut c = Coverage::new();
        for i in 0..20 {
            c.pin(&(i * 10..i * 10 + 2), 1);
        }
        assert_eq!(c.runs.len(), 20);
        let all = 0..200;
        for _ in 0..3 {
            c.pin(&all, 1);
            assert_eq!(c.runs.len(), 1);
            c.pin(&all, -1);
            assert_eq!(c.runs.len(), 1, "the run stays wide");
            c.check().unwrap();
            assert!(!c.any(&(5..8)), "a gap inside the wide run is not held");
            assert!(c.any(&(5..11)));
        }
        for i in 0..20 {
            c.pin(&(i * 10..i * 10 + 2), -1);
            c.check().unwrap();
        }
        assert!(!c.any(&all));
        assert_eq!(c.runs.len(), 0, "no run is left holding nothing");
    }

    /// The filter widens its regions as runs reach higher, stays a superset of the
    /// runs through cuts and rebuilds, and answers "clear" only where no run is.
    #[test]
    fn the_filter_follows_the_runs() {
        let mut c = Coverage::new();
        c.pin(&(0..2), 1);
        assert_eq!(c.filter.0.shift, 0);
        let mid = 1u64 << 35;
        c.pin(&(mid..mid + 2), 1);
        let before = c.filter.0.shift;
        let high = 1u64 << 40;
        c.pin(&(high..high + 3), 1);
        assert!(
            c.filter.0.shift > before,
            "the regions widen to reach the new run"
        );
        c.check().unwrap();
        assert!(c.any(&(0..1)));
        assert!(
            c.any(&(mid + 1..mid + 5)),
            "a run below, in another region before"
        );
        assert!(c.any(&(high + 2..high + 9)));
        assert!(!c.any(&(high + 3..high + 9)));
        assert!(!c.any(&(u64::MAX - 1..u64::MAX)), "past the filter's span");
        for round in 0..200u64 {
            let r = high + 100 + round * 7..high + 102 + round * 7;
            c.pin(&r, 1);
            c.probe(&r);
            assert!(c.any(&r));
            c.pin(&r, -1);
            c.probe(&r);
            assert!(!c.any(&r), "round {round}");
        }
        c.check().unwrap();
        assert!(
            c.filter.0.stale <= c.runs.len() + REGIONS / 64,
            "rebuilt as runs go"
        );
        c.pin(&(0..2), -1);
        c.pin(&(mid..mid + 2), -1);
        c.pin(&(high..high + 3), -1);
        c.check().unwrap();
        assert!(!c.any(&(0..u64::MAX)));
    }

    #[test]
    fn nested_pins_on_one_block_keep_two_keys() {
        let mut c = Coverage::new();
        for _ in 0..10_000 {
            c.pin(&(7..8), 1);
        }
        assert_eq!(c.pin_steps().count(), 2);
        assert_eq!(c.pins_at(7), 10_000);
        assert!(c.unpinned(&(7..8)).is_empty());
        for _ in 0..10_000 {
            c.pin(&(7..8), -1);
        }
        assert_eq!(c.pin_steps().count(), 0);
        assert_eq!(c.unpinned(&(0..9)), vec![0..9]);
    }
}
