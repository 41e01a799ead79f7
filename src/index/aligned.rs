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

/// How many alignments keep a bound from a failed request (see [`Views::bounds`]).
const MAX_BOUNDS: usize = 4;

/// The views kept, one per alignment above 64 blocks asked for recently.
#[derive(Clone, Debug, Default)]
pub(crate) struct Views {
    views: Vec<View>,
    /// Counts [`track`](Self::track) calls, for dropping the least recently used view.
    clock: u64,
    /// `(align, bound)`: for alignments whose request failed without a view being
    /// kept, an upper bound on the longest aligned run; `align` 0 marks an empty slot.
    /// Every [`add`](Self::add) raises it by the new extent's room, so it never falls
    /// below the truth, and a request longer than it fails in O(1) without a view.
    /// Inline, so a failed request that records one allocates nothing.
    bounds: [(u64, u64); MAX_BOUNDS],
    /// The slot the next new bound replaces when all are full.
    next_bound: usize,
}

/// What [`Views::track`] changed, for [`Views::untrack`] to put back.
#[derive(Debug)]
#[must_use = "a failed request puts the views back with `untrack`"]
pub(crate) struct Tracked {
    align: u64,
    /// Whether the view was built by this `track`.
    built: bool,
    /// The view dropped to make room for it.
    evicted: Option<View>,
    /// The clock and the view's stamp before.
    clock: u64,
    last_used: u64,
    /// The list's capacity before, which a first view grows.
    capacity: usize,
}

impl Views {
    pub(crate) const fn new() -> Self {
        Views {
            views: Vec::new(),
            clock: 0,
            bounds: [(0, 0); MAX_BOUNDS],
            next_bound: 0,
        }
    }

    /// Whether a request for `need` blocks aligned to `align` is known to fail: a
    /// failed request left a bound on the longest aligned run below `need`.
    #[inline]
    pub(crate) fn known_short(&self, align: u64, need: u64) -> bool {
        self.bounds.iter().any(|&(a, b)| a == align && b < need)
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
    ) -> Tracked {
        debug_assert!(align > 64 && align.is_power_of_two());
        let (clock, capacity) = (self.clock, self.views.capacity());
        self.clock += 1;
        let mut evicted = None;
        let (at, built) = match self.views.iter().position(|v| v.align == align) {
            Some(at) => (at, false),
            None => {
                if self.views.len() == MAX_VIEWS {
                    let oldest = (0..MAX_VIEWS)
                        .min_by_key(|&i| self.views[i].last_used)
                        .expect("MAX_VIEWS is not zero");
                    evicted = Some(self.views.swap_remove(oldest));
                }
                self.views.push(View::new(align, extents()));
                (self.views.len() - 1, true)
            }
        };
        let last_used = self.views[at].last_used;
        self.views[at].last_used = self.clock;
        Tracked {
            align,
            built,
            evicted,
            clock,
            last_used,
            capacity,
        }
    }

    /// Puts the views back as they were before `tracked`, for a request that failed:
    /// a view it built is dropped (its longest aligned run is kept as a bound, so the
    /// same failing request next time costs O(1), not a rebuild), the view it evicted
    /// returns, and the use stamps are restored. The heap is as before.
    pub(crate) fn untrack(&mut self, tracked: Tracked) {
        let at = self
            .views
            .iter()
            .position(|v| v.align == tracked.align)
            .expect("a tracked view is kept until untracked");
        self.clock = tracked.clock;
        if !tracked.built {
            self.views[at].last_used = tracked.last_used;
            return;
        }
        let view = self.views.swap_remove(at);
        self.note_bound(tracked.align, view.largest_placeable());
        if let Some(old) = tracked.evicted {
            // `swap_remove` moved the last view into the evicted one's place; the
            // order of the views means nothing, only their stamps.
            self.views.push(old);
        }
        // The list's own memory counts in the metadata too.
        self.views.shrink_to(tracked.capacity);
        debug_assert_eq!(self.views.capacity(), tracked.capacity);
    }

    /// Records `longest` as `align`'s bound, replacing an older bound of the same
    /// alignment, else an empty slot, else the slots in turn.
    fn note_bound(&mut self, align: u64, longest: u64) {
        let slot = self
            .bounds
            .iter()
            .position(|&(a, _)| a == align)
            .or_else(|| self.bounds.iter().position(|&(a, _)| a == 0))
            .unwrap_or_else(|| {
                let at = self.next_bound;
                self.next_bound = (at + 1) % MAX_BOUNDS;
                at
            });
        self.bounds[slot] = (align, longest);
    }

    /// The free extent `[start, start + len)` appeared.
    #[inline]
    pub(crate) fn add(&mut self, start: u64, len: u64) {
        for v in &mut self.views {
            v.add(start, len);
        }
        for b in &mut self.bounds {
            if b.0 != 0 {
                b.1 = b.1.max(room(start, len, b.0));
            }
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
        for &(align, bound) in self.bounds.iter().filter(|b| b.0 != 0) {
            let longest = View::new(align, extents()).largest_placeable();
            if longest > bound {
                return Err(alloc::format!(
                    "alignment {align} has a run of {longest} blocks, above its bound {bound}"
                ));
            }
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
            let _kept = views.track(a, extents);
        }
        let _kept = views.track(128, extents); // 256 is now the least recently used
        let _kept = views.track(2048, extents);
        let kept: Vec<u64> = views.views.iter().map(|v| v.align).collect();
        assert_eq!(kept.len(), MAX_VIEWS);
        assert!(!kept.contains(&256) && kept.contains(&128) && kept.contains(&2048));
        views.check(extents).unwrap();
        assert_eq!(views.get(2048).unwrap().largest_placeable(), 7000 - 2048);
    }

    #[test]
    fn untrack_puts_the_views_back() {
        let extents = || [(0u64, 1000u64), (2000, 5000)].into_iter();
        let mut views = Views::new();
        for a in [128, 256, 512, 1024] {
            let _kept = views.track(a, extents);
        }
        let before = (views.clock, views.metadata_bytes());
        let stamps = |v: &Views| {
            let mut s: Vec<(u64, u64)> = v.views.iter().map(|v| (v.align, v.last_used)).collect();
            s.sort_unstable();
            s
        };
        let stamps_before = stamps(&views);
        // A new alignment evicts 128; undone, 128 is back and 4096 is not kept.
        let t = views.track(4096, extents);
        assert!(views.get(128).is_none());
        views.untrack(t);
        assert_eq!((views.clock, views.metadata_bytes()), before);
        assert_eq!(stamps(&views), stamps_before);
        // 4096 fits 7000 - 4096 blocks: a longer request is known short, a shorter is not.
        assert!(views.known_short(4096, 7000 - 4096 + 1));
        assert!(!views.known_short(4096, 7000 - 4096));
        // A kept view tracked again and undone keeps its old stamp.
        let t = views.track(256, extents);
        views.untrack(t);
        assert_eq!(stamps(&views), stamps_before);
        // A new extent raises the bound: no longer known short.
        views.add(8192, 10_000);
        assert!(!views.known_short(4096, 7000 - 4096 + 1));
        views
            .check(|| [(0u64, 1000u64), (2000, 5000), (8192, 10_000)].into_iter())
            .unwrap();
    }
}
