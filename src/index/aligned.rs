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
//! and kept in step with every later change, two tree updates per changed extent,
//! for as long as requests use it often enough to be worth keeping (see [`Views`]).
//! A request that fails builds no lasting view; [`Fails`] keeps what it learned.

use alloc::string::String;
use alloc::vec::Vec;

use super::{align_up, placeable as room};
use crate::tree::bplus::{BPlus, Iter};
use crate::tree::{MaxValue, pair, unpair};

/// The fewest changes a view follows unused before it may go, however few extents it
/// was built from.
const MIN_RENT: u64 = 64;

/// The free extents as one alignment sees them; see the module docs.
#[derive(Clone, Debug)]
pub(crate) struct View {
    align: u64,
    /// `start -> room`, with the most room under each inner child.
    by_start: BPlus<u64, u64, MaxValue>,
    /// `(len, start) -> room`, with the most room under each inner child.
    by_len: BPlus<u128, u64, MaxValue>,
    /// How many free extents it was built from: what building it again would cost.
    built_from: u64,
    /// Changes it has followed since a request last used it.
    spent: u64,
}

impl View {
    fn new(align: u64, extents: impl Iterator<Item = (u64, u64)>) -> Self {
        let mut v = View {
            align,
            by_start: BPlus::new(),
            by_len: BPlus::new(),
            built_from: 0,
            spent: 0,
        };
        for (s, l) in extents {
            v.add(s, l);
            v.built_from += 1;
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

/// How many alignments above 64 blocks there are: `2^7 ..= 2^63`.
const FAIL_SLOTS: usize = 57;

/// What failed requests learned, one slot per alignment above 64 blocks, kept exact
/// by every change of the free extents: slot `k - 7` (for alignment `2^k`) holds a
/// `need` that no free extent gave when a request failed, and how many free extents
/// have given at least `need` aligned blocks since.
///
/// An extent's room only shrinks as the alignment grows, so a failure at `2^k`
/// also rules out every larger alignment: a request for `need` blocks aligned to
/// `2^k` is known to fail when some slot `j <= k` counts nothing and asks no more
/// than `need`. Any mix of alignments and lengths that keeps failing is then
/// answered in O(1) from the second request on, until an extent that could serve it
/// appears. Inline, so that learning allocates nothing: a failed request leaves the
/// heap as it found it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Fails {
    need: [u64; FAIL_SLOTS],
    count_fitting: [u64; FAIL_SLOTS],
    /// Bit `k - 7` is set when slot `k - 7` holds a failure.
    kept: u64,
}

impl Fails {
    pub(crate) const fn new() -> Self {
        Fails {
            need: [0; FAIL_SLOTS],
            count_fitting: [0; FAIL_SLOTS],
            kept: 0,
        }
    }

    #[inline]
    fn slot(align: u64) -> usize {
        debug_assert!(align > 64 && align.is_power_of_two());
        align.trailing_zeros() as usize - 7
    }

    #[inline]
    fn align_of(slot: usize) -> u64 {
        1 << (slot + 7)
    }

    /// Whether `need` blocks aligned to `align` (above 64) are known not to fit.
    #[inline]
    pub(crate) fn known_short(&self, align: u64, need: u64) -> bool {
        if self.kept == 0 {
            return false;
        }
        let mut m = self.kept & ((2u64 << Self::slot(align)) - 1);
        while m != 0 {
            let j = m.trailing_zeros() as usize;
            if self.count_fitting[j] == 0 && self.need[j] <= need {
                return true;
            }
            m &= m - 1;
        }
        false
    }

    /// Records that no free extent gives `need` blocks aligned to `align` (above 64).
    #[inline]
    pub(crate) fn note(&mut self, align: u64, need: u64) {
        let j = Self::slot(align);
        self.need[j] = need;
        self.count_fitting[j] = 0;
        self.kept |= 1 << j;
    }

    /// Counts a free extent that appeared (`up`) or went away.
    #[inline]
    fn count(&mut self, start: u64, len: u64, up: bool) {
        let mut m = self.kept;
        while m != 0 {
            let j = m.trailing_zeros() as usize;
            if room(start, len, Self::align_of(j)) >= self.need[j] {
                if up {
                    self.count_fitting[j] += 1;
                } else {
                    self.count_fitting[j] -= 1;
                }
            }
            m &= m - 1;
        }
    }

    /// The free extent `[start, start + len)` appeared.
    #[inline]
    pub(crate) fn add(&mut self, start: u64, len: u64) {
        if self.kept != 0 {
            self.count(start, len, true);
        }
    }

    /// The free extent `[start, start + len)` went away.
    #[inline]
    pub(crate) fn sub(&mut self, start: u64, len: u64) {
        if self.kept != 0 {
            self.count(start, len, false);
        }
    }

    /// Checks every kept count against a recount over `extents`.
    pub(crate) fn check<I: Iterator<Item = (u64, u64)>>(
        &self,
        extents: impl Fn() -> I,
    ) -> Result<(), String> {
        let mut m = self.kept;
        while m != 0 {
            let j = m.trailing_zeros() as usize;
            m &= m - 1;
            let (align, need) = (Self::align_of(j), self.need[j]);
            let fitting = extents()
                .filter(|&(start, len)| room(start, len, align) >= need)
                .count() as u64;
            if fitting != self.count_fitting[j] {
                return Err(alloc::format!(
                    "alignment {align}: {fitting} extents give {need} aligned blocks, {} counted",
                    self.count_fitting[j]
                ));
            }
        }
        Ok(())
    }
}

/// The views kept, at most one per alignment above 64 blocks, and what failed
/// requests learned.
///
/// A view is kept as long as keeping it costs less than building it again: each
/// counts the changes it has followed since a request last used it, and goes once
/// they outnumber the extents it was built from. Keeping a view costs at most what
/// rebuilding it would (the rent-or-buy rule), so requests cycling through any
/// number of alignments cost O(log n) amortized per change and per request, and a
/// view nobody asks for any more costs its memory only until its rent runs out.
#[derive(Clone, Debug, Default)]
pub(crate) struct Views {
    views: Vec<View>,
    /// What failed requests learned, for every alignment above 64; see [`Fails`].
    fails: Fails,
}

impl Default for Fails {
    fn default() -> Self {
        Fails::new()
    }
}

/// What [`Views::track`] changed, for [`Views::untrack`] to put back.
#[derive(Debug)]
#[must_use = "a failed request puts the views back with `untrack`"]
pub(crate) struct Tracked {
    align: u64,
    /// Whether the view was built by this `track`.
    built: bool,
    /// The changes the view had followed unused before.
    spent: u64,
    /// The list's capacity before, which a new view may grow.
    capacity: usize,
}

impl Views {
    pub(crate) const fn new() -> Self {
        Views {
            views: Vec::new(),
            fails: Fails::new(),
        }
    }

    /// Takes over what the fast form learned of failed requests, its counts taken
    /// over the same free extents.
    pub(crate) fn keep_fails(&mut self, fails: Fails) {
        self.fails = fails;
    }

    /// Whether a request for `need` blocks aligned to `align` is known to fail (see
    /// [`Fails::known_short`]).
    #[inline]
    pub(crate) fn known_short(&self, align: u64, need: u64) -> bool {
        self.fails.known_short(align, need)
    }

    /// The view of `align`, if one is kept.
    #[inline]
    pub(crate) fn get(&self, align: u64) -> Option<&View> {
        self.views.iter().find(|v| v.align == align)
    }

    /// Makes sure a view of `align` (above 64) is kept, building it from `extents`
    /// (the free extents, in address order) if not, and marks it used.
    pub(crate) fn track<I: Iterator<Item = (u64, u64)>>(
        &mut self,
        align: u64,
        extents: impl FnOnce() -> I,
    ) -> Tracked {
        debug_assert!(align > 64 && align.is_power_of_two());
        let capacity = self.views.capacity();
        let (at, built) = match self.views.iter().position(|v| v.align == align) {
            Some(at) => (at, false),
            None => {
                self.views.push(View::new(align, extents()));
                (self.views.len() - 1, true)
            }
        };
        let spent = core::mem::replace(&mut self.views[at].spent, 0);
        Tracked {
            align,
            built,
            spent,
            capacity,
        }
    }

    /// Puts the views back as they were before `tracked`, for a request that failed:
    /// a view it built is dropped (what it showed is kept in [`Fails`], so a request
    /// as long or longer costs O(1) next time, not a rebuild, until an extent that
    /// could serve it appears), and a kept one's count of changes is restored. The
    /// heap is as before.
    pub(crate) fn untrack(&mut self, tracked: Tracked) {
        let at = self
            .views
            .iter()
            .position(|v| v.align == tracked.align)
            .expect("a tracked view is kept until untracked");
        if !tracked.built {
            self.views[at].spent = tracked.spent;
            return;
        }
        let view = self.views.swap_remove(at);
        self.fails.note(tracked.align, view.largest_placeable() + 1);
        // The list's own memory counts in the metadata too.
        self.views.shrink_to(tracked.capacity);
        debug_assert_eq!(self.views.capacity(), tracked.capacity);
    }

    /// The free extent `[start, start + len)` appeared.
    #[inline]
    pub(crate) fn add(&mut self, start: u64, len: u64) {
        if self.idle() {
            return;
        }
        self.each_view(|v| v.add(start, len));
        self.fails.add(start, len);
    }

    /// The free extent `[start, start + len)` went away.
    #[inline]
    pub(crate) fn sub(&mut self, start: u64, len: u64) {
        if self.idle() {
            return;
        }
        self.each_view(|v| v.sub(start, len));
        self.fails.sub(start, len);
    }

    /// Applies a change to every view, and drops those whose rent has run out.
    #[inline]
    fn each_view(&mut self, mut change: impl FnMut(&mut View)) {
        let mut i = 0;
        while i < self.views.len() {
            let v = &mut self.views[i];
            change(v);
            v.spent += 1;
            if v.spent > v.built_from.max(MIN_RENT) {
                self.views.swap_remove(i);
            } else {
                i += 1;
            }
        }
    }

    /// No view and no failure kept: nothing to keep in step.
    #[inline]
    fn idle(&self) -> bool {
        self.views.is_empty() && self.fails.kept == 0
    }

    pub(crate) fn metadata_bytes(&self) -> usize {
        self.views
            .iter()
            .map(|v| v.by_start.capacity_bytes() + v.by_len.capacity_bytes())
            .sum::<usize>()
            + self.views.capacity() * core::mem::size_of::<View>()
    }

    /// Checks every view against a fresh one built from `extents`, and the failures'
    /// counts against a recount.
    pub(crate) fn check<I: Iterator<Item = (u64, u64)>>(
        &self,
        extents: impl Fn() -> I,
    ) -> Result<(), String> {
        self.fails.check(&extents)?;
        for (i, v) in self.views.iter().enumerate() {
            let name = |what: &str| alloc::format!("view of alignment {}: {what}", v.align);
            if self.views[..i].iter().any(|w| w.align == v.align) {
                return Err(name("kept twice"));
            }
            if v.spent > v.built_from.max(MIN_RENT) {
                return Err(name("kept past its rent"));
            }
            let fresh = View::new(v.align, extents());
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
    fn a_view_goes_once_its_rent_runs_out() {
        let extents = || [(0u64, 1000u64), (2000, 5000)].into_iter();
        let mut views = Views::new();
        // Any number of alignments keep their views while they are used.
        for a in [128, 256, 512, 1024, 2048, 4096] {
            let _kept = views.track(a, extents);
        }
        assert_eq!(views.views.len(), 6);
        views.check(extents).unwrap();
        assert_eq!(views.get(2048).unwrap().largest_placeable(), 7000 - 2048);
        // Changes come and go; 128 is used now and then, the others never again.
        for round in 0..MIN_RENT {
            views.add(10_000, 7);
            views.sub(10_000, 7);
            if round % 16 == 0 {
                let _kept = views.track(128, extents);
            }
        }
        // Two changes a round: the unused views followed 2 * MIN_RENT > MIN_RENT.
        let kept: Vec<u64> = views.views.iter().map(|v| v.align).collect();
        assert_eq!(kept, [128]);
        views.check(extents).unwrap();
        // Built from two extents, a view may follow MIN_RENT changes unused, not one more.
        let _kept = views.track(256, extents);
        for _ in 0..MIN_RENT / 2 {
            views.add(10_000, 7);
            views.sub(10_000, 7);
        }
        assert!(views.get(256).is_some());
        views.add(10_000, 7);
        assert!(views.get(256).is_none());
        assert!(views.get(128).is_none(), "128 too went unused that long");
    }

    #[test]
    fn fails_rule_out_larger_alignments_and_count_exactly() {
        let mut f = Fails::new();
        assert!(!f.known_short(128, u64::MAX));
        f.note(256, 1000);
        assert!(f.known_short(256, 1000) && f.known_short(1 << 63, 1000));
        assert!(!f.known_short(256, 999), "a shorter request is not known");
        assert!(
            !f.known_short(128, 5000),
            "a smaller alignment is not known"
        );
        // [256, +1000) gives 1000 blocks aligned to 256 (and to 128).
        f.add(256, 1000);
        assert!(!f.known_short(256, 1000) && !f.known_short(512, 1000));
        f.note(128, 2000);
        assert!(f.known_short(128, 2000) && f.known_short(1024, 5000));
        assert!(!f.known_short(1024, 1000));
        f.sub(256, 1000);
        assert!(f.known_short(1024, 1000));
        f.check(core::iter::empty).unwrap();
        f.add(0, 1);
        f.check(|| [(0u64, 1u64)].into_iter()).unwrap();
        assert!(f.check(|| [(256u64, 4000u64)].into_iter()).is_err());
    }

    #[test]
    fn untrack_puts_the_views_back() {
        let extents = || [(0u64, 1000u64), (2000, 5000)].into_iter();
        let mut views = Views::new();
        for a in [128, 256, 512, 1024] {
            let _kept = views.track(a, extents);
        }
        views.add(10_000, 3);
        let before = views.metadata_bytes();
        let spent = |v: &Views| {
            let mut s: Vec<(u64, u64)> = v.views.iter().map(|v| (v.align, v.spent)).collect();
            s.sort_unstable();
            s
        };
        let spent_before = spent(&views);
        // A new alignment builds a view; undone, it is not kept.
        let t = views.track(4096, extents);
        assert!(views.get(4096).is_some());
        views.untrack(t);
        assert!(views.get(4096).is_none());
        assert_eq!(views.metadata_bytes(), before);
        assert_eq!(spent(&views), spent_before);
        // 4096 fits 7000 - 4096 blocks: a longer request is known short, a shorter is not.
        assert!(views.known_short(4096, 7000 - 4096 + 1));
        assert!(!views.known_short(4096, 7000 - 4096));
        // A kept view tracked again and undone keeps its count of changes.
        let t = views.track(256, extents);
        views.untrack(t);
        assert_eq!(spent(&views), spent_before);
        // An extent that could serve it appears: no longer known short.
        let with = || [(0u64, 1000u64), (2000, 5000), (10_000, 3), (20_000, 10_000)];
        views.add(20_000, 10_000);
        assert!(!views.known_short(4096, 7000 - 4096 + 1));
        views.check(|| with().into_iter()).unwrap();
        // It goes again: known short again, exactly, with no rebuild.
        views.sub(20_000, 10_000);
        assert!(views.known_short(4096, 7000 - 4096 + 1));
        views.check(|| with().into_iter().take(3)).unwrap();
    }
}
