//! Views of the free extents for alignments above 64 blocks.
//!
//! The size order's residue summaries know starts only mod 64, so they cannot tell
//! which extents a larger alignment `a` (2 MiB on 4 KiB blocks is 512 blocks) can use.
//! A [`View`] answers that directly: it lists each free extent that holds at least one
//! multiple of `a`, with its *room*, the blocks from that first multiple to the
//! extent's end. `need` aligned blocks fit in an extent exactly when its room is at
//! least `need`, so with the most room under each inner child:
//!
//! - first fit is the first entry by start with room `>= need`, one descent;
//! - best fit is the first entry by `(len, start)` at or after `(need, 0)` with room
//!   `>= need`, one descent;
//! - near-goal is the last two such entries at or before the goal and the first after
//!   it, a few descents;
//! - the longest aligned run is the root's summary.
//!
//! A view is made the first time its alignment is asked for ([`Views::track`], O(n))
//! and kept in step with every later change, two tree updates per changed extent. At
//! most [`MAX_VIEWS`] are kept; asking for another drops the one asked for least
//! recently, which is rebuilt if it is asked for again.

use alloc::string::String;
use alloc::vec::Vec;

use super::bplus::BPlus;
use super::{MaxValue, align_up, pair, placeable as room, unpair};

/// How many alignments above 64 blocks keep a view at once.
pub(crate) const MAX_VIEWS: usize = 4;

/// The free extents as one alignment sees them; see the module docs.
#[derive(Clone, Debug)]
pub(crate) struct View {
    align: u64,
    /// `start -> room`, with the most room under each inner child.
    by_start: BPlus<u64, u64, MaxValue>,
    /// `(len, start) -> room`, with the most room under each inner child.
    by_len: BPlus<u128, u64, MaxValue>,
    /// When [`Views::track`] last asked for it, on the views' clock.
    last_used: u64,
}

impl View {
    fn new(align: u64, extents: impl Iterator<Item = (u64, u64)>) -> Self {
        let mut v = View {
            align,
            by_start: BPlus::new(),
            by_len: BPlus::new(),
            last_used: 0,
        };
        for (s, l) in extents {
            v.add(s, l);
        }
        v
    }

    #[inline]
    fn add(&mut self, start: u64, len: u64) {
        let r = room(start, len, self.align);
        if r > 0 {
            self.by_start.insert(start, r);
            self.by_len.insert(pair(len, start), r);
        }
    }

    #[inline]
    fn sub(&mut self, start: u64, len: u64) {
        if room(start, len, self.align) > 0 {
            let p = self.by_start.find(start).expect("a view lists its extent");
            self.by_start.remove(p);
            let p = self
                .by_len
                .find(pair(len, start))
                .expect("a view lists its extent");
            self.by_len.remove(p);
        }
    }

    /// The entries `start -> room`, for the near-goal search.
    pub(crate) fn by_start(&self) -> &BPlus<u64, u64, MaxValue> {
        &self.by_start
    }

    /// The length of the extent at `start` with `room`.
    #[inline]
    pub(crate) fn len_of(&self, start: u64, room: u64) -> u64 {
        let first = align_up(start, self.align).expect("a listed extent holds a multiple");
        first - start + room
    }

    /// The lowest aligned start of `need` blocks.
    pub(crate) fn first_fit(&self, need: u64) -> Option<u64> {
        let p = self
            .by_start
            .first_matching(0, |m| m.0 >= need, |_, &r| r >= need)?;
        align_up(self.by_start.get(p).0, self.align)
    }

    /// The lowest aligned start of `need` blocks in the shortest extent that holds
    /// them, the lowest such extent among equals.
    pub(crate) fn best_fit(&self, need: u64) -> Option<u64> {
        let p = self
            .by_len
            .first_matching(pair(need, 0), |m| m.0 >= need, |_, &r| r >= need)?;
        align_up(unpair(self.by_len.get(p).0).1, self.align)
    }

    /// The longest aligned run any single free extent gives.
    pub(crate) fn largest_placeable(&self) -> u64 {
        self.by_start.summary().0
    }
}

/// The views kept, one per alignment above 64 blocks asked for recently.
#[derive(Clone, Debug, Default)]
pub(crate) struct Views {
    views: Vec<View>,
    /// Counts [`track`](Self::track) calls, for dropping the least recently used view.
    clock: u64,
}

impl Views {
    pub(crate) const fn new() -> Self {
        Views {
            views: Vec::new(),
            clock: 0,
        }
    }

    /// The view of `align`, if one is kept.
    #[inline]
    pub(crate) fn get(&self, align: u64) -> Option<&View> {
        self.views.iter().find(|v| v.align == align)
    }

    /// Makes sure a view of `align` (above 64) is kept, building it from `extents`
    /// (the free extents, in address order) if not, and dropping the least recently
    /// used one to make room.
    pub(crate) fn track<I: Iterator<Item = (u64, u64)>>(
        &mut self,
        align: u64,
        extents: impl FnOnce() -> I,
    ) {
        debug_assert!(align > 64 && align.is_power_of_two());
        self.clock += 1;
        let at = match self.views.iter().position(|v| v.align == align) {
            Some(at) => at,
            None => {
                if self.views.len() == MAX_VIEWS {
                    let oldest = (0..MAX_VIEWS)
                        .min_by_key(|&i| self.views[i].last_used)
                        .expect("MAX_VIEWS is not zero");
                    self.views.swap_remove(oldest);
                }
                self.views.push(View::new(align, extents()));
                self.views.len() - 1
            }
        };
        self.views[at].last_used = self.clock;
    }

    /// The free extent `[start, start + len)` appeared.
    #[inline]
    pub(crate) fn add(&mut self, start: u64, len: u64) {
        for v in &mut self.views {
            v.add(start, len);
        }
    }

    /// The free extent `[start, start + len)` went away.
    #[inline]
    pub(crate) fn sub(&mut self, start: u64, len: u64) {
        for v in &mut self.views {
            v.sub(start, len);
        }
    }

    pub(crate) fn metadata_bytes(&self) -> usize {
        self.views
            .iter()
            .map(|v| v.by_start.capacity_bytes() + v.by_len.capacity_bytes())
            .sum::<usize>()
            + self.views.capacity() * core::mem::size_of::<View>()
    }

    /// Checks every view against a fresh one built from `extents`.
    pub(crate) fn check<I: Iterator<Item = (u64, u64)>>(
        &self,
        extents: impl Fn() -> I,
    ) -> Result<(), String> {
        if self.views.len() > MAX_VIEWS {
            return Err(alloc::format!("{} views kept", self.views.len()));
        }
        for v in &self.views {
            let fresh = View::new(v.align, extents());
            let name = |what: &str| alloc::format!("view of alignment {}: {what}", v.align);
            v.by_start.check().map_err(|d| name(&d))?;
            v.by_len.check().map_err(|d| name(&d))?;
            if !v.by_start.iter().eq(fresh.by_start.iter()) {
                return Err(name("by start differs from the free extents"));
            }
            if !v.by_len.iter().eq(fresh.by_len.iter()) {
                return Err(name("by length differs from the free extents"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_counts_from_the_first_multiple() {
        assert_eq!(room(0, 10, 128), 10);
        assert_eq!(room(1, 127, 128), 0); // ends just at 128
        assert_eq!(room(1, 128, 128), 1);
        assert_eq!(room(130, 300, 128), 430 - 256);
        assert_eq!(room(u64::MAX - 5, 5, 128), 0); // no multiple before the end
    }

    #[test]
    fn the_least_recently_used_view_goes() {
        let extents = || [(0u64, 1000u64), (2000, 5000)].into_iter();
        let mut views = Views::new();
        for a in [128, 256, 512, 1024] {
            views.track(a, extents);
        }
        views.track(128, extents); // 256 is now the least recently used
        views.track(2048, extents);
        let kept: Vec<u64> = views.views.iter().map(|v| v.align).collect();
        assert_eq!(kept.len(), MAX_VIEWS);
        assert!(!kept.contains(&256) && kept.contains(&128) && kept.contains(&2048));
        views.check(extents).unwrap();
        assert_eq!(views.get(2048).unwrap().largest_placeable(), 7000 - 2048);
    }
}
