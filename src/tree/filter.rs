//! A filter of the regions of the block space that a set of ranges may meet, so that
//! a lookup far from every range learns so from one or two words, without a descent.
//!
//! The space the ranges reach, from the lowest start to the highest end seen at the
//! last rebuild, is cut into a power of two of equal regions, about eight per range,
//! one bit each. Bits are set as ranges come and left set when they go; the filter is
//! rebuilt from the ranges, and sized afresh, once more have gone than are left,
//! when the ranges outgrow it, or when one reaches out of its span.
//! So it costs about one byte per range, nothing while there is none, and a
//! rebuild's O(n) is paid for by the n changes before it.

use alloc::vec::Vec;
use core::ops::Range;

/// Regions per range the filter is sized for, at a rebuild.
const PER_RANGE: usize = 8;
/// The fewest regions a filter has (one cache line).
const MIN_REGIONS: usize = 512;

#[derive(Clone, Debug, Default)]
pub(crate) struct RegionFilter {
    /// One bit per region; empty while the filter knows of no range.
    bits: Vec<u64>,
    /// The first block of region 0.
    base: u64,
    /// Each region spans `1 << shift` blocks.
    shift: u32,
    /// Ranges gone (or narrowed) since the last rebuild.
    stale: usize,
}

impl RegionFilter {
    pub(crate) const fn new() -> Self {
        RegionFilter {
            bits: Vec::new(),
            base: 0,
            shift: 0,
            stale: 0,
        }
    }

    fn regions(&self) -> u64 {
        (self.bits.len() * 64) as u64
    }

    /// The regions `[a, b]` that blocks `r` (non-empty) meet, clipped to the span;
    /// `None` when `r` lies outside it.
    #[inline]
    fn span_of(&self, r: &Range<u64>) -> Option<(usize, usize)> {
        if self.bits.is_empty() || r.end <= self.base {
            return None;
        }
        let a = r.start.saturating_sub(self.base) >> self.shift;
        if a >= self.regions() {
            return None;
        }
        let b = ((r.end - 1 - self.base) >> self.shift).min(self.regions() - 1);
        Some((a as usize, b as usize))
    }

    /// Whether no range the filter was told of can meet `r` (non-empty).
    #[inline]
    pub(crate) fn clear(&self, r: &Range<u64>) -> bool {
        let Some((a, b)) = self.span_of(r) else {
            return true;
        };
        if a / 64 == b / 64 {
            // The common case, a range within one word's regions: one mask, no loop.
            let mask = (u64::MAX >> (63 - b % 64)) & (u64::MAX << (a % 64));
            return self.bits[a / 64] & mask == 0;
        }
        (a / 64..=b / 64).all(|w| {
            let lo = if w == a / 64 { a % 64 } else { 0 };
            let hi = if w == b / 64 { b % 64 } else { 63 };
            let mask = (u64::MAX >> (63 - hi)) & (u64::MAX << lo);
            self.bits[w] & mask == 0
        })
    }

    fn set(&mut self, r: &Range<u64>) {
        let (a, b) = self.span_of(r).expect("a range inside the span");
        for w in a / 64..=b / 64 {
            let lo = if w == a / 64 { a % 64 } else { 0 };
            let hi = if w == b / 64 { b % 64 } else { 63 };
            self.bits[w] |= (u64::MAX >> (63 - hi)) & (u64::MAX << lo);
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
        let inside = !self.bits.is_empty()
            && r.start >= self.base
            && (r.end - 1 - self.base) >> self.shift < self.regions();
        if !inside || (live * PER_RANGE) as u64 > 2 * self.regions() {
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

    /// Sizes the filter for `live` ranges and sets exactly the bits of the regions
    /// they meet.
    fn rebuild<I: Iterator<Item = Range<u64>>>(&mut self, live: usize, all: impl Fn() -> I) {
        self.stale = 0;
        self.bits.clear();
        if live == 0 {
            self.bits.shrink_to_fit();
            return;
        }
        let (mut lo, mut hi) = (u64::MAX, 0);
        for r in all() {
            lo = lo.min(r.start);
            hi = hi.max(r.end - 1);
        }
        let regions = (live * PER_RANGE).next_power_of_two().max(MIN_REGIONS);
        self.bits.resize(regions / 64, 0);
        self.bits.shrink_to(regions / 64);
        self.base = lo;
        self.shift = 0;
        while (hi - lo) >> self.shift >= regions as u64 {
            self.shift += 1;
        }
        for r in all() {
            self.set(&r);
        }
    }

    /// Heap bytes held.
    pub(crate) fn capacity_bytes(&self) -> usize {
        self.bits.capacity() * 8
    }

    /// Whether every range in `all` has its regions' bits set.
    pub(crate) fn check(
        &self,
        all: impl Iterator<Item = Range<u64>>,
    ) -> Result<(), alloc::string::String> {
        for r in all {
            let inside = !self.bits.is_empty()
                && r.start >= self.base
                && (r.end - 1 - self.base) >> self.shift < self.regions();
            if !inside || self.clear(&r) {
                return Err(alloc::format!("the region filter misses {r:?}"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::bplus::tests::Rng;

    /// Against a plain list of ranges: never "clear" where a range lies, and mostly
    /// "clear" elsewhere once sized.
    #[test]
    fn the_filter_never_misses_a_range() {
        let mut rng = Rng(11);
        let mut f = RegionFilter::new();
        let mut ranges: Vec<Range<u64>> = Vec::new();
        assert!(f.clear(&(0..u64::MAX)));
        for step in 0..4000 {
            if ranges.is_empty() || rng.below(3) > 0 {
                let s = (1 << 40) + rng.below(1 << 20);
                let r = s..s + 1 + rng.below(4);
                ranges.push(r.clone());
                f.add(&r, ranges.len(), || ranges.iter().cloned());
            } else {
                let i = rng.below(ranges.len() as u64) as usize;
                ranges.swap_remove(i);
                f.gone(ranges.len(), || ranges.iter().cloned());
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
        assert!(f.capacity_bytes() <= ranges.len().next_power_of_two() * 4 + 64);
    }
}
