//! A filter of the regions of the block space that a set of ranges may meet, so that
//! a lookup far from every range learns so from one or two words, without a descent.
//!
//! The space the ranges reach at the last rebuild, from the lowest start to the
//! highest end with room on either side, is cut into a power of two of equal
//! regions, about four per range.
//! Each region has a bit (some range meets it) and a byte: the hull of the sixteenths
//! of the region that ranges meet there, the lowest in one half and the highest in
//! the other. A range sets the bit of every region it meets and widens the hulls of
//! its two end regions; the regions it covers whole get a full hull too, or, past
//! [`LONG`] of them, a bit of their own that lookups read only once such a long range
//! has come. So adding a range writes O(1) bytes and a word per 64 regions it
//! spans however long it is, and the common lookup reads one byte.
//!
//! A lookup asks the hulls at its own two ends, so that one beside a range (a free
//! next to a Deferred run, the common case) is told "clear" at once when the region
//! it shares with that range holds nothing on its side: at one block's precision
//! while regions are at most 16 blocks long, which they are when the ranges are
//! dense. The regions between its ends it asks by their first bits.
//!
//! Bits and hulls are set as ranges come and left as they are when ranges go; the
//! filter is rebuilt from the ranges, and sized afresh, once more have gone than are
//! left, when the ranges outgrow it, or when one reaches out of its span. The span
//! is a power of two of regions' worth of blocks, and half of what it holds beyond
//! the ranges lies below the lowest: so ranges that come in falling order, as in
//! rising, rebuild it a few times each time their reach doubles, not every time. It
//! costs about five bytes per range (ten, where the region count rounds up most),
//! nothing while there is none, and a rebuild's O(n) is paid for by the changes
//! before it.

use alloc::vec::Vec;
use core::ops::Range;

/// Regions per range the filter is sized for, at a rebuild.
const PER_RANGE: usize = 4;
/// The fewest regions a filter has (one cache line of bits).
const MIN_REGIONS: usize = 512;
/// A hull that holds no sixteenth: lowest 15, highest 0.
const EMPTY: u8 = 0x0f;
/// A hull that holds every sixteenth.
const FULL: u8 = 0xf0;
/// The most regions a range covers whole that get a full hull each; a longer range
/// sets their bits in [`RegionFilter::full`] instead.
const LONG: usize = 64;

#[derive(Clone, Debug, Default)]
pub(crate) struct RegionFilter {
    /// One bit per region: some range met it. Empty while the filter knows of no
    /// range.
    bits: Vec<u64>,
    /// One bit per region: a range longer than [`LONG`] regions covered it whole.
    full: Vec<u64>,
    /// Whether any bit of `full` is set.
    any_full: bool,
    /// One byte per region: the lowest (low half) and highest (high half) sixteenth
    /// of it that a range met, or [`EMPTY`].
    hull: Vec<u8>,
    /// The first block of region 0.
    base: u64,
    /// Each sixteenth of a region spans `1 << cell` blocks (a region, 16 times as
    /// many: never fewer than 16, so that sixteenths are whole blocks).
    cell: u32,
    /// The sixteenths of all regions: `bits.len() * 64 * 16`, 0 while the filter is
    /// empty.
    sixteenths: u64,
    /// The regions the last rebuild was sized for (more than `bits` holds when the
    /// ranges' span needs fewer).
    room: usize,
    /// Ranges gone (or narrowed) since the last rebuild.
    stale: usize,
    /// Rebuilds so far, for the tests.
    #[cfg(test)]
    rebuilds: usize,
}

/// Where a range lies in the filter: its first and last regions, and the sixteenth
/// of each that holds its first and its last block.
#[derive(Clone, Copy)]
struct Span {
    a: usize,
    b: usize,
    first: u8,
    last: u8,
}

impl Span {
    /// From the numbers of the first and the last sixteenth, counted from the base.
    #[inline(always)]
    fn of(s: u64, e: u64) -> Self {
        Span {
            a: (s >> 4) as usize,
            b: (e >> 4) as usize,
            first: (s & 15) as u8,
            last: (e & 15) as u8,
        }
    }
}

/// Whether hull `h` holds a sixteenth from `x` to `y`: three comparisons, no branch.
#[inline(always)]
fn meets(h: u8, x: u8, y: u8) -> bool {
    let (lo, hi) = (h & 15, h >> 4);
    (lo <= hi) & (lo <= y) & (hi >= x)
}

/// Hull `h` widened to hold the sixteenths from `x` to `y`.
fn widen(h: u8, x: u8, y: u8) -> u8 {
    let (lo, hi) = (h & 15, h >> 4);
    hi.max(y) << 4 | lo.min(x)
}

/// Whether any bit of `words` from `a` to `b` is set.
#[inline]
fn any_in(words: &[u64], a: usize, b: usize) -> bool {
    if a / 64 == b / 64 {
        // The common case, regions within one word: one mask, no loop.
        let mask = (u64::MAX >> (63 - b % 64)) & (u64::MAX << (a % 64));
        return words[a / 64] & mask != 0;
    }
    (a / 64..=b / 64).any(|w| {
        let lo = if w == a / 64 { a % 64 } else { 0 };
        let hi = if w == b / 64 { b % 64 } else { 63 };
        words[w] & (u64::MAX >> (63 - hi)) & (u64::MAX << lo) != 0
    })
}

/// Sets the bits of `words` from `a` to `b`.
fn set_in(words: &mut [u64], a: usize, b: usize) {
    for (w, word) in words.iter_mut().enumerate().take(b / 64 + 1).skip(a / 64) {
        let lo = if w == a / 64 { a % 64 } else { 0 };
        let hi = if w == b / 64 { b % 64 } else { 63 };
        *word |= (u64::MAX >> (63 - hi)) & (u64::MAX << lo);
    }
}

impl RegionFilter {
    pub(crate) const fn new() -> Self {
        RegionFilter {
            bits: Vec::new(),
            full: Vec::new(),
            any_full: false,
            hull: Vec::new(),
            base: 0,
            cell: 0,
            sixteenths: 0,
            room: 0,
            stale: 0,
            #[cfg(test)]
            rebuilds: 0,
        }
    }

    /// Where blocks `r` (non-empty) lie, clipped to the span; `None` when `r` lies
    /// outside it.
    #[inline]
    fn span_of(&self, r: &Range<u64>) -> Option<Span> {
        if r.end <= self.base {
            return None;
        }
        let s = r.start.saturating_sub(self.base) >> self.cell;
        if s >= self.sixteenths {
            return None;
        }
        let e = ((r.end - 1 - self.base) >> self.cell).min(self.sixteenths - 1);
        Some(Span::of(s, e))
    }

    /// Whether a range longer than [`LONG`] regions covered `region` whole.
    #[inline(always)]
    fn is_full(&self, region: usize) -> bool {
        self.any_full && self.full[region / 64] & (1 << (region % 64)) != 0
    }

    /// Whether no range the filter was told of can meet `r` (non-empty).
    #[inline]
    pub(crate) fn clear(&self, r: &Range<u64>) -> bool {
        // `r.end - 1 >= r.start`, so `e` does not wrap once `r.start >= base`.
        let e = (r.end - 1).wrapping_sub(self.base) >> self.cell;
        if r.start >= self.base && e < self.sixteenths {
            // Inside the span (an empty filter has none): the common lookup.
            return self.clear_at(Span::of((r.start - self.base) >> self.cell, e));
        }
        self.span_of(r).is_none_or(|span| self.clear_at(span))
    }

    #[inline(always)]
    fn clear_at(&self, Span { a, b, first, last }: Span) -> bool {
        if a == b {
            return !meets(self.hull[a], first, last) && !self.is_full(a);
        }
        !(meets(self.hull[a], first, 15)
            || meets(self.hull[b], 0, last)
            || self.is_full(a)
            || self.is_full(b)
            || (b > a + 1 && any_in(&self.bits, a + 1, b - 1)))
    }

    fn set(&mut self, r: &Range<u64>) {
        let Span { a, b, first, last } = self.span_of(r).expect("a range inside the span");
        set_in(&mut self.bits, a, b);
        if a == b {
            self.hull[a] = widen(self.hull[a], first, last);
            return;
        }
        self.hull[a] = widen(self.hull[a], first, 15);
        self.hull[b] = widen(self.hull[b], 0, last);
        if b - a - 1 <= LONG {
            self.hull[a + 1..b].fill(FULL);
        } else {
            set_in(&mut self.full, a + 1, b - 1);
            self.any_full = true;
        }
    }

    /// Range `r` (non-empty) joined the set, which now holds `live` ranges; `all`
    /// gives every one of them (`r` too), for a rebuild.
    pub(crate) fn add<I: Iterator<Item = Range<u64>>>(
        &mut self,
        r: &Range<u64>,
        live: usize,
        all: impl Fn() -> I,
    ) {
        let inside = r.start >= self.base && (r.end - 1 - self.base) >> self.cell < self.sixteenths;
        if !inside || live * PER_RANGE > 2 * self.room {
            self.rebuild(live, all);
        } else {
            self.set(r);
        }
    }

    /// A range left the set (or narrowed), which now holds `live` ranges; `all` as in
    /// [`add`](Self::add).
    pub(crate) fn gone<I: Iterator<Item = Range<u64>>>(
        &mut self,
        live: usize,
        all: impl Fn() -> I,
    ) {
        self.stale += 1;
        if self.stale > live + self.bits.len() {
            self.rebuild(live, all);
        }
    }

    /// Sizes the filter for `live` ranges and sets exactly the bits and hulls of the
    /// regions they meet.
    fn rebuild<I: Iterator<Item = Range<u64>>>(&mut self, live: usize, all: impl Fn() -> I) {
        #[cfg(test)]
        {
            self.rebuilds += 1;
        }
        self.stale = 0;
        self.bits.clear();
        self.full.clear();
        self.any_full = false;
        self.hull.clear();
        self.sixteenths = 0;
        self.room = 0;
        if live == 0 {
            self.bits.shrink_to_fit();
            self.full.shrink_to_fit();
            self.hull.shrink_to_fit();
            return;
        }
        let (mut lo, mut hi) = (u64::MAX, 0);
        for r in all() {
            lo = lo.min(r.start);
            hi = hi.max(r.end - 1);
        }
        self.room = (live * PER_RANGE).next_power_of_two().max(MIN_REGIONS);
        // No more regions than 16-block ones to cover the span.
        let mut regions = self.room;
        while regions > MIN_REGIONS && (hi - lo) >> 4 < (regions / 2) as u64 {
            regions /= 2;
        }
        self.bits.resize(regions / 64, 0);
        self.bits.shrink_to(regions / 64);
        self.full.resize(regions / 64, 0);
        self.full.shrink_to(regions / 64);
        self.hull.resize(regions, EMPTY);
        self.hull.shrink_to(regions);
        self.cell = 0;
        while (hi - lo) >> self.cell >= (regions * 16) as u64 {
            self.cell += 1;
        }
        self.sixteenths = (regions * 16) as u64;
        // Half the span's room beyond the ranges goes below them (u128: the span may
        // be all of the u64 space). The last block stays inside: `hi - base` is below
        // the span.
        let span = u128::from(self.sixteenths) << self.cell;
        let spare = span - u128::from(hi - lo) - 1;
        self.base = lo - u64::try_from(spare / 2).map_or(lo, |below| below.min(lo));
        for r in all() {
            self.set(&r);
        }
    }

    /// Heap bytes held.
    pub(crate) fn capacity_bytes(&self) -> usize {
        (self.bits.capacity() + self.full.capacity()) * 8 + self.hull.capacity()
    }

    /// Whether every range in `all` has its regions' bits and hulls set.
    pub(crate) fn check(
        &self,
        all: impl Iterator<Item = Range<u64>>,
    ) -> Result<(), alloc::string::String> {
        for r in all {
            let inside =
                r.start >= self.base && (r.end - 1 - self.base) >> self.cell < self.sixteenths;
            let Some(span) = self.span_of(&r).filter(|_| inside) else {
                return Err(alloc::format!("the region filter's span misses {r:?}"));
            };
            // The whole range, its first and last block, and a block of the first and
            // last two regions it covers whole (each read by another path of `clear`).
            let whole = (span.a + 1..span.b)
                .take(2)
                .chain((span.a + 1..span.b).rev().take(2));
            let block = |k: usize| {
                let x = self.base + (((k as u64) * 16) << self.cell);
                x..x + 1
            };
            let missed = !any_in(&self.bits, span.a, span.b)
                || self.clear(&r)
                || self.clear(&(r.start..r.start + 1))
                || self.clear(&(r.end - 1..r.end))
                || whole.map(block).any(|b| self.clear(&b));
            if missed {
                return Err(alloc::format!("the region filter misses {r:?}"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::splitmix::SplitMix;

    /// Adds `r` to `ranges` and tells `f`.
    fn add(f: &mut RegionFilter, ranges: &mut Vec<Range<u64>>, r: Range<u64>) {
        ranges.push(r.clone());
        f.add(&r, ranges.len(), || ranges.iter().cloned());
    }

    /// Drops a random one of `ranges` and tells `f`.
    fn drop_one(f: &mut RegionFilter, ranges: &mut Vec<Range<u64>>, rng: &mut SplitMix) {
        ranges.swap_remove(rng.below(ranges.len() as u64) as usize);
        f.gone(ranges.len(), || ranges.iter().cloned());
    }

    /// Against a plain list of ranges: never "clear" where a range lies, and mostly
    /// "clear" elsewhere once sized.
    #[test]
    fn the_filter_never_misses_a_range() {
        let mut rng = SplitMix::new(11);
        let mut f = RegionFilter::new();
        let mut ranges: Vec<Range<u64>> = Vec::new();
        assert!(f.clear(&(0..u64::MAX)));
        for step in 0..4000 {
            if ranges.is_empty() || rng.below(3) > 0 {
                let s = (1 << 40) + rng.below(1 << 20);
                let len = 1 + rng.below(4);
                add(&mut f, &mut ranges, s..s + len);
            } else {
                drop_one(&mut f, &mut ranges, &mut rng);
            }
            f.check(ranges.iter().cloned()).unwrap();
            if step % 97 == 0 {
                for r in &ranges {
                    assert!(!f.clear(r), "step {step}: {r:?}");
                }
            }
        }
        // Far from every range: clear.
        assert!(f.clear(&(0..1 << 39)));
        assert!(f.clear(&((1 << 41)..u64::MAX)));
        // Sized for the ranges: most single blocks between them are clear.
        let clear = (0..1000)
            .filter(|&i| f.clear(&((1 << 40) + i * 1024..(1 << 40) + i * 1024 + 1)))
            .count();
        assert!(clear > 500, "{clear} of 1000 probes clear");
        assert!(f.capacity_bytes() <= ranges.len().next_power_of_two() * 16 + 640);
    }

    /// Against a brute force, with ranges of every reach (inside one region, across
    /// a few, across more than [`LONG`]) coming and going: never "clear" over a
    /// block a live range holds, whatever stale bits and hulls the gone ones left.
    #[test]
    fn the_filter_never_misses_a_long_or_a_replaced_range() {
        let mut rng = SplitMix::new(23);
        let mut f = RegionFilter::new();
        let mut ranges: Vec<Range<u64>> = Vec::new();
        let mut long_seen = false;
        for step in 0..3000 {
            if ranges.len() < 8 || rng.below(5) > 1 {
                let s = 1 << 30 | rng.below(1 << 16);
                let len = match rng.below(6) {
                    0 => 300 + rng.below(30_000),
                    1 | 2 => 5 + rng.below(60),
                    _ => 1 + rng.below(4),
                };
                let r = s..s + len;
                // Ranges do not overlap, as the runs the filter serves do not.
                if ranges.iter().any(|q| q.start < r.end && r.start < q.end) {
                    continue;
                }
                add(&mut f, &mut ranges, r);
            } else {
                drop_one(&mut f, &mut ranges, &mut rng);
            }
            long_seen |= f.any_full;
            f.check(ranges.iter().cloned()).unwrap();
            for _ in 0..20 {
                let s = (1 << 30) - 100 + rng.below((1 << 16) + 31_000);
                let reach = if rng.below(2) == 0 { 6 } else { 400 };
                let probe = s..s + 1 + rng.below(reach);
                let over = ranges
                    .iter()
                    .any(|q| q.start < probe.end && probe.start < q.end);
                assert!(
                    !over || !f.clear(&probe),
                    "step {step}: {probe:?} meets a range"
                );
            }
        }
        assert!(long_seen, "no range ever covered more than LONG regions");
    }

    /// Ranges that come in falling order (runs kept at ever lower addresses) rebuild
    /// the filter a few times per doubling of their reach, as rising ones do, not on
    /// every add: with the span starting at the lowest range, each rebuilt it.
    #[test]
    fn falling_ranges_rebuild_it_seldom() {
        for step in [1u64, 7, 100] {
            let (mut f, mut ranges) = (RegionFilter::new(), Vec::new());
            for i in 0..4000u64 {
                let s = (1 << 40) - i * (step + 1);
                add(&mut f, &mut ranges, s..s + step);
            }
            f.check(ranges.iter().cloned()).unwrap();
            assert!(f.rebuilds < 200, "step {step}: {} rebuilds", f.rebuilds);
        }
    }

    /// Block by block against a brute force, on ranges as dense as Deferred runs
    /// among allocations: never "clear" over a block a range holds, and "clear" for
    /// most probes that only touch a range's side, the common free beside a run,
    /// which a bit per region could not tell apart from one over it.
    #[test]
    fn the_filter_is_exact_beside_dense_ranges() {
        let mut rng = SplitMix::new(5);
        for round in 0..20 {
            let mut f = RegionFilter::new();
            let mut ranges: Vec<Range<u64>> = Vec::new();
            let mut at = 1000 + rng.below(64);
            while ranges.len() < 300 + round * 40 {
                // Ranges of 1 to 4 blocks, gaps of 1 to 60: an Allocated extent between.
                let r = at..at + 1 + rng.below(4);
                at = r.end + 1 + rng.below(60);
                add(&mut f, &mut ranges, r);
            }
            f.check(ranges.iter().cloned()).unwrap();
            // The ranges are in order: the last to start at or before `x` holds it or none.
            let held = |x: u64| {
                let i = ranges.partition_point(|r| r.start <= x);
                i > 0 && ranges[i - 1].end > x
            };
            let (mut beside, mut told) = (0, 0);
            for i in 0..2000 {
                let len = 1 + rng.below(if i % 2 == 0 { 8 } else { 80 });
                // Half at random, half starting or ending right at a range's side.
                let near = &ranges[rng.below(ranges.len() as u64) as usize];
                let s = match i % 4 {
                    0 | 1 => 900 + rng.below(at - 800),
                    2 => near.end,
                    _ => near.start - len,
                };
                let probe = s..s + len;
                let over = probe.clone().any(held);
                if over {
                    assert!(
                        !f.clear(&probe),
                        "round {round}: {probe:?} holds a range's block"
                    );
                } else if held(s - 1) || held(probe.end) {
                    beside += 1;
                    told += usize::from(f.clear(&probe));
                }
            }
            assert!(
                beside > 100,
                "round {round}: {beside} probes beside a range"
            );
            assert!(
                told * 10 >= beside * 9,
                "round {round}: {told} of {beside} probes beside a range told clear"
            );
        }
    }
}
