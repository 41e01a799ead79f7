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

use super::{align_up, placeable as room};
use crate::tree::bplus::{BPlus, Iter};
use crate::tree::{MaxValue, pair, unpair};

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

/// How many alignments keep what a failed request learned (see [`Views::short`]).
const MAX_SHORT: usize = 4;

/// What a failed request learned about one alignment, kept exact by every change:
/// how many free extents give at least `need` aligned blocks. While none does, any
/// request for `need` or more blocks at that alignment fails, and says so in O(1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Short {
    /// The alignment; 0 marks an empty slot.
    align: u64,
    /// One more than the longest aligned run when the request failed.
    need: u64,
    /// Free extents whose room for `align` is at least `need`.
    count_fitting: u64,
}

impl Short {
    /// Counts a free extent that appeared (`up`) or went away.
    #[inline]
    fn count(&mut self, start: u64, len: u64, up: bool) {
        if self.align != 0 && room(start, len, self.align) >= self.need {
            if up {
                self.count_fitting += 1;
            } else {
                self.count_fitting -= 1;
            }
        }
    }
}

/// The views kept, one per alignment above 64 blocks asked for recently.
#[derive(Clone, Debug, Default)]
pub(crate) struct Views {
    views: Vec<View>,
    /// Counts [`track`](Self::track) calls, for dropping the least recently used view.
    clock: u64,
    /// For alignments whose request failed without a view being kept: what it learned,
    /// kept exact by [`add`](Self::add) and [`sub`](Self::sub). Inline, so a failed
    /// request that records it allocates nothing.
    short: [Short; MAX_SHORT],
    /// The slot the next failure replaces when all are full.
    next_short: usize,
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
            short: [Short {
                align: 0,
                need: 0,
                count_fitting: 0,
            }; MAX_SHORT],
            next_short: 0,
        }
    }

    /// Whether a request for `need` blocks aligned to `align` is known to fail: a
    /// failed request learned that no free extent gives some `n <= need` aligned
    /// blocks, and no extent that does has appeared since.
    #[inline]
    pub(crate) fn known_short(&self, align: u64, need: u64) -> bool {
        self.short
            .iter()
            .any(|s| s.align == align && s.count_fitting == 0 && s.need <= need)
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
    /// a view it built is dropped (what it showed is kept as a [`Short`], so a request
    /// as long or longer costs O(1) next time, not a rebuild, until an extent that
    /// could serve it appears), the view it evicted returns, and the use stamps are
    /// restored. The heap is as before.
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
        self.note_short(tracked.align, view.largest_placeable() + 1);
        if let Some(old) = tracked.evicted {
            // `swap_remove` moved the last view into the evicted one's place; the
            // order of the views means nothing, only their stamps.
            self.views.push(old);
        }
        // The list's own memory counts in the metadata too.
        self.views.shrink_to(tracked.capacity);
        debug_assert_eq!(self.views.capacity(), tracked.capacity);
    }

    /// Records that no free extent gives `need` blocks aligned to `align`, in the
    /// slot of the same alignment, else an empty one, else the slots in turn.
    fn note_short(&mut self, align: u64, need: u64) {
        let slot = self
            .short
            .iter()
            .position(|s| s.align == align)
            .or_else(|| self.short.iter().position(|s| s.align == 0))
            .unwrap_or_else(|| {
                let at = self.next_short;
                self.next_short = (at + 1) % MAX_SHORT;
                at
            });
        self.short[slot] = Short {
            align,
            need,
            count_fitting: 0,
        };
    }

    /// The free extent `[start, start + len)` appeared.
    #[inline]
    pub(crate) fn add(&mut self, start: u64, len: u64) {
        if self.idle() {
            return;
        }
        for v in &mut self.views {
            v.add(start, len);
        }
        for s in &mut self.short {
            s.count(start, len, true);
        }
    }

    /// The free extent `[start, start + len)` went away.
    #[inline]
    pub(crate) fn sub(&mut self, start: u64, len: u64) {
        if self.idle() {
            return;
        }
        for v in &mut self.views {
            v.sub(start, len);
        }
        for s in &mut self.short {
            s.count(start, len, false);
        }
    }

    /// No view and no failure kept: nothing to keep in step (slots of `short` fill
    /// from the first).
    #[inline]
    fn idle(&self) -> bool {
        self.views.is_empty() && self.short[0].align == 0
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
        for s in self.short.iter().filter(|s| s.align != 0) {
            let fitting = extents()
                .filter(|&(start, len)| room(start, len, s.align) >= s.need)
                .count() as u64;
            if fitting != s.count_fitting {
                return Err(alloc::format!(
                    "alignment {}: {fitting} extents give {} aligned blocks, {} counted",
                    s.align,
                    s.need,
                    s.count_fitting
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

impl super::ordered::Ordered {
    /// Readies the index for requests aligned to `align`: above 64 blocks, this keeps a
    /// view of the free extents for that alignment (built in O(n) the first time, kept
    /// in step after), so that aligned searches are O(log n). Below, it does nothing.
    /// Hand what it returns to [`untrack`](Self::untrack) if the request then fails.
    #[inline]
    pub(crate) fn track(&mut self, align: u64) -> Option<Tracked> {
        (align > 64).then(|| {
            let by_addr = &self.by_addr;
            self.views.track(align, || by_addr.iter())
        })
    }

    /// Undoes a [`track`](Self::track) for a request that failed, so that a failed
    /// request leaves the heap as it found it (see [`Views::untrack`]).
    pub(crate) fn untrack(&mut self, tracked: Option<Tracked>) {
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

    /// How a search for `align` is served when `align` is above 64 blocks (`None`
    /// below): from the alignment's view when it is [`track`](Self::track)ed, else
    /// from `scan` over every free extent as `(start, len)`, in address order. The
    /// allocator tracks every alignment before it searches (and the request that moves
    /// the index to this form tracks its own), so only a caller that skipped `track`
    /// pays the O(n) scan; no call has to come before another.
    #[inline]
    pub(super) fn above_64<T>(
        &self,
        align: u64,
        with_view: impl FnOnce(&View) -> T,
        scan: impl FnOnce(Iter<'_, u64, u64, MaxValue>) -> T,
    ) -> Option<T> {
        if align <= 64 {
            return None;
        }
        Some(match self.views.get(align) {
            Some(view) => with_view(view),
            None => scan(self.by_addr.iter()),
        })
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
        // An extent that could serve it appears: no longer known short.
        views.add(8192, 10_000);
        assert!(!views.known_short(4096, 7000 - 4096 + 1));
        views
            .check(|| [(0u64, 1000u64), (2000, 5000), (8192, 10_000)].into_iter())
            .unwrap();
        // It goes again: known short again, exactly, with no rebuild.
        views.sub(8192, 10_000);
        assert!(views.known_short(4096, 7000 - 4096 + 1));
        views.check(extents).unwrap();
    }
}
