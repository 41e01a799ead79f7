//! The free index's fast form: what a space needs while every request is unaligned best
//! fit, an exact start or a range of lengths (the common case, and the only one of the
//! design doc's churn).
//!
//! Every free extent is a record in an arena, its `start` and two list links (16
//! bytes; its length is its last block, the key below, less its start), with two
//! orders:
//!
//! - **By address**, a B+ tree maps each extent's *last* block to its record. Taking
//!   blocks from an extent's start, as best fit does, leaves its last block where it
//!   was, so the tree is not touched at all; only an extent that is used up, cut in the
//!   middle or taken from its end changes it. A free finds both neighbours and checks
//!   for overlap with one
//!   descent (the first extent whose last block is at or after its start, and the one
//!   before).
//! - **By size**, every length up to [`LISTED`] has a list of its extents, linked
//!   through the records, most recently changed first, and a bit in four words that says
//!   whether it is empty: best fit is the lowest set bit at or above the length asked
//!   for, and that list's head. Longer extents are in one B+ tree ordered by
//!   `(len, start)`, except one kept aside (the first to become long while none is
//!   kept: on a space being filled, its tail), which best fit weighs against that
//!   tree's shortest fit.
//!
//! So an allocation that splits an extent is a bit scan and two list splices, and one
//! that uses an extent up also removes its entry from the address tree, found from the
//! leaf it was last seen in. Among extents of the same length up to 256, best fit takes
//! the most recently freed or split, not the lowest; for the churn's lengths that
//! leaves no more free extents behind (the churn figures in BENCHMARKS.md).
//!
//! What this form cannot answer in O(log n), first fit, near-goal placement and aligned
//! requests, the ordered form ([`super::Ordered`]) does; [`super::FreeIndex`] moves to
//! it, for good, at the first such request that can succeed.

use alloc::vec::Vec;

use super::aligned::Fails;
use super::size::{Residues, residues_with_room, size_key, size_of_key};
use super::{HISTOGRAM_BUCKETS, bucket, fit};
use crate::Extent;
use crate::tree::Cache;
use crate::tree::bplus::{BPlus, NIL, Pos, Probed};

/// The row of `residues` that lists which are not counted write to (see
/// [`Hot::residues`]): made with the first record.
const SCRATCH: u32 = 0;

/// The slot of row `row` of [`Hot::residues`] that a start counts in: its residue mod
/// 64, but slot 0 for every start in row [`SCRATCH`], so that the counts no one reads
/// stay in one cache line (a shared allocator's groups are seldom all in the cache).
/// Branch-free, as the row's kind changes from one length to the next.
#[inline(always)]
fn residue_slot(start: u64, row: u32) -> usize {
    let counted = u64::from(row != SCRATCH).wrapping_neg();
    ((start % 64) & counted) as usize
}

/// A list longer than this counts its starts' residues mod 64, so that an aligned
/// request can tell in O(1) whether it holds a start with room; a shorter one is
/// scanned. It stops counting when it falls to a quarter of this.
const COUNT_FROM: u32 = 32;

/// The longest length with a list of its own (twice the ordered form's
/// [`EXACT_MAX`](super::EXACT_MAX): the churn's free extents run to about 150 blocks,
/// and a list's splice costs a tenth of a reshape in the long order).
const LISTED: u64 = 256;

/// The words of [`Hot::nonempty`].
const WORDS: usize = LISTED as usize / 64;
const _: () = assert!(WORDS <= 8, "Hot::words has a bit per word");

/// One free extent, linked into the list of its length (if at most [`LISTED`]).
/// A vacant record links the vacant ones through `next`. The length is not kept: the
/// address order's key (the last block) gives it, and so do a list and the long order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Rec {
    start: u64,
    prev: u32,
    next: u32,
}

/// The list of one length up to [`LISTED`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct List {
    /// Its first record, or `NIL`.
    head: u32,
    /// How many records it holds.
    len: u32,
    /// Its row of `residues` when it counts them (it grew past [`COUNT_FROM`] and has
    /// not fallen below a quarter of it since), else [`SCRATCH`].
    row: u32,
}

/// Equal contents, node by node and link by link: list order and the kept long
/// extent decide later placements, so they count. The caches (`chosen`, `probe`,
/// `long_hint`) are made by lookups and do not.
///
/// `repr(C)`, so that the fields come in the order written: what every operation
/// reads (counts, the kept long extent, the words of lengths, the caches, the
/// arenas' and the address tree's headers) lies in the first few cache lines, and
/// the large arrays (the lists, 3 KB) after it. A shared allocator's groups are
/// seldom all in the cache: under callgrind's cache simulation this order took a
/// single-thread `SharedAllocator` churn from 16.2 to 13.3 L1 misses an operation.
#[derive(Clone, Debug, PartialEq)]
#[repr(C)]
pub(crate) struct Hot {
    count_free_blocks: u64,
    /// The kept long extent's length.
    top_len: u64,
    /// The longest length in the long order, or 0: read on every shared unlock (the
    /// group's published summary), where the long order's last leaf is seldom in
    /// the cache.
    long_max: u64,
    /// One long extent kept out of the long order, or `NIL`: the first to become long
    /// while none is kept, which on a space being filled is the free space's tail.
    /// Carving it, or freeing blocks onto it, rewrites only its record; best fit weighs
    /// it against the long order's shortest fit.
    top: u32,
    vacant: u32,
    /// Bit `w` is set when `nonempty[w]` is not 0: a request whose own word holds no
    /// fit finds the next word with one in a step, not a scan.
    words: u8,
    /// Bit `(l - 1) % 64` of word `(l - 1) / 64` is set when `lists[l - 1].head`
    /// is not `NIL`.
    nonempty: [u64; WORDS],
    /// The extent the last best fit chose, `(start, record, length)`, until the index
    /// changes: the allocation that follows takes from it without a lookup.
    chosen: Cache<Option<(u64, u32, u64)>>,
    /// `(x, ceil(x))` in `by_last`, from the last overlap check, until the index
    /// changes: a free checks and then inserts at the same place.
    probe: Cache<Option<Probed>>,
    recs: Vec<Rec>,
    /// `leaf_of[id]`: the leaf of `by_last` where record `id`'s entry was last seen,
    /// so that using an extent up removes it with no descent (see
    /// [`BPlus::find_near`]; a stale hint costs the descent).
    leaf_of: Vec<u32>,
    /// Per counted list, how many of its starts have each residue mod 64; a vacant
    /// row holds the next vacant row's number in slot 0. Row [`SCRATCH`] takes the
    /// counts of every list that is not counted, all in its slot 0 ([`residue_slot`]),
    /// and is never read: a list's link and unlink then count without asking whether
    /// the list is counted, a question whose answer changes from one length to the
    /// next and so would be mispredicted about once an operation.
    residues: Vec<[u32; 64]>,
    /// Last block of each free extent → its record.
    by_last: BPlus<u64, u32, ()>,
    histogram: [u64; HISTOGRAM_BUCKETS],
    /// A long extent's key and place in the long order, as the last best fit or
    /// reshape left it: good until the long order gains or loses an entry. An
    /// allocation from the longest extent and the free that gives it back then find
    /// it without a descent.
    long_hint: Cache<Option<(u128, Pos)>>,
    /// `size_key(len, start)` → record, for the extents longer than [`LISTED`], with
    /// the residues of their starts mod 64 under each child.
    long: BPlus<u128, u32, Residues>,
    vacant_row: u32,
    /// `lists[l - 1]`: the list of length `l` (its head, length and row of
    /// residues side by side, so that a link or unlink reads one cache line for them;
    /// a shared allocator's groups each have their own, seldom all in the cache).
    lists: [List; LISTED as usize],
    /// What failed requests aligned above 64 blocks learned (see [`Fails`]): a cache
    /// in that it only answers faster, but kept exact by every change.
    fails: Cache<Fails>,
}

impl Hot {
    pub(crate) const fn new() -> Self {
        Hot {
            recs: Vec::new(),
            leaf_of: Vec::new(),
            vacant: NIL,
            by_last: BPlus::new(),
            lists: [List {
                head: NIL,
                len: 0,
                row: SCRATCH,
            }; LISTED as usize],
            nonempty: [0; WORDS],
            words: 0,
            long: BPlus::new(),
            top: NIL,
            top_len: 0,
            long_max: 0,
            residues: Vec::new(),
            vacant_row: NIL,
            count_free_blocks: 0,
            histogram: [0; HISTOGRAM_BUCKETS],
            chosen: Cache(None),
            probe: Cache(None),
            long_hint: Cache(None),
            fails: Cache(Fails::new()),
        }
    }

    #[inline]
    pub(crate) fn free_blocks(&self) -> u64 {
        self.count_free_blocks
    }

    #[inline]
    pub(crate) fn extent_count(&self) -> usize {
        self.by_last.len()
    }

    pub(crate) fn histogram(&self) -> [u64; HISTOGRAM_BUCKETS] {
        self.histogram
    }

    pub(crate) fn metadata_bytes(&self) -> usize {
        self.residues.capacity() * core::mem::size_of::<[u32; 64]>()
            + self.recs.capacity() * core::mem::size_of::<Rec>()
            + self.leaf_of.capacity() * core::mem::size_of::<u32>()
            + self.by_last.capacity_bytes()
            + self.long.capacity_bytes()
    }

    // ---- records and lists -----------------------------------------------------------

    fn new_rec(&mut self, start: u64) -> u32 {
        let rec = Rec {
            start,
            prev: NIL,
            next: NIL,
        };
        if self.vacant != NIL {
            let id = self.vacant;
            self.vacant = self.recs[id as usize].next;
            self.recs[id as usize] = rec;
            id
        } else {
            if self.residues.is_empty() {
                self.residues.push([0; 64]);
            }
            crate::tree::bplus::grow(&mut self.recs);
            self.recs.push(rec);
            crate::tree::bplus::grow(&mut self.leaf_of);
            self.leaf_of.push(NIL);
            u32::try_from(self.recs.len() - 1).expect("fewer than 2^32 free extents")
        }
    }

    fn drop_rec(&mut self, id: u32) {
        self.recs[id as usize].next = self.vacant;
        self.vacant = id;
    }

    /// Puts record `id`, `len` blocks long, in the size order, and counts it.
    #[inline]
    fn link(&mut self, id: u32, len: u64) {
        let start = self.recs[id as usize].start;
        self.histogram[bucket(len)] += 1;
        if len <= LISTED {
            let c = len as usize - 1;
            let head = self.lists[c].head;
            let r = &mut self.recs[id as usize];
            r.prev = NIL;
            r.next = head;
            if head != NIL {
                self.recs[head as usize].prev = id;
            }
            self.lists[c].head = id;
            self.nonempty[c / 64] |= 1 << (c % 64);
            self.words |= 1 << (c / 64);
            self.lists[c].len += 1;
            let row = self.lists[c].row;
            let count = &mut self.residues[row as usize][residue_slot(start, row)];
            *count = count.wrapping_add(1);
            // Lengths move by one, so a list starts counting as it reaches this
            // length: a test that is almost never true, and so well predicted.
            if self.lists[c].len == COUNT_FROM + 1 && row == SCRATCH {
                self.count_residues(c);
            }
        } else if self.top == NIL {
            self.top = id;
            self.top_len = len;
        } else {
            self.long.insert(size_key(len, start), id);
            self.note_long_max();
            self.long_hint = Cache(None);
        }
    }

    /// Takes record `id`, `len` blocks long, out of the size order.
    #[inline]
    fn unlink(&mut self, id: u32, len: u64) {
        let Rec { start, prev, next } = self.recs[id as usize];
        self.histogram[bucket(len)] -= 1;
        if len <= LISTED {
            let c = len as usize - 1;
            if prev == NIL {
                self.lists[c].head = next;
                if next == NIL {
                    self.nonempty[c / 64] &= !(1 << (c % 64));
                    if self.nonempty[c / 64] == 0 {
                        self.words &= !(1 << (c / 64));
                    }
                }
            } else {
                self.recs[prev as usize].next = next;
            }
            if next != NIL {
                self.recs[next as usize].prev = prev;
            }
            self.lists[c].len -= 1;
            let row = self.lists[c].row;
            let count = &mut self.residues[row as usize][residue_slot(start, row)];
            *count = count.wrapping_sub(1);
            if self.lists[c].len == COUNT_FROM / 4 - 1 && row != SCRATCH {
                self.uncount_residues(c, row);
            }
        } else if id == self.top {
            self.top = NIL;
        } else {
            let p = self
                .long
                .find(size_key(len, start))
                .expect("the long order lists every long extent");
            self.long.remove(p);
            self.note_long_max();
            self.long_hint = Cache(None);
        }
    }

    /// Whether the list of length `c + 1` is not empty.
    #[inline]
    fn is_listed(&self, c: usize) -> bool {
        self.nonempty[c / 64] & (1 << (c % 64)) != 0
    }

    /// The shortest length of `need` blocks or more whose list is not empty.
    #[inline]
    fn shortest_listed(&self, need: u64) -> Option<u64> {
        let c = need.wrapping_sub(1);
        if c >= LISTED {
            return None;
        }
        let w = (c / 64) as usize;
        let fits = self.nonempty[w] >> (c % 64);
        if fits != 0 {
            return Some(need + u64::from(fits.trailing_zeros()));
        }
        // `w + 1` is at most `WORDS`, within the summary's width.
        let later = u32::from(self.words) >> (w + 1);
        if later == 0 {
            return None;
        }
        let i = w + 1 + later.trailing_zeros() as usize;
        Some(64 * i as u64 + u64::from(self.nonempty[i].trailing_zeros()) + 1)
    }

    /// The longest length whose list is not empty, or 0.
    fn longest_listed(&self) -> u64 {
        match self.words {
            0 => 0,
            w => {
                let i = 7 - w.leading_zeros() as usize;
                64 * (i as u64 + 1) - u64::from(self.nonempty[i].leading_zeros())
            }
        }
    }

    /// Takes the long order's longest length afresh, after a change to it.
    #[inline]
    fn note_long_max(&mut self) {
        self.long_max = self
            .long
            .last()
            .map_or(0, |p| size_of_key(self.long.get(p).0).0);
    }

    /// Starts counting the residues of list `c`'s starts.
    #[cold]
    fn count_residues(&mut self, c: usize) {
        let mut row = [0u32; 64];
        let mut id = self.lists[c].head;
        while id != NIL {
            let r = &self.recs[id as usize];
            row[(r.start % 64) as usize] += 1;
            id = r.next;
        }
        let at = if self.vacant_row != NIL {
            let at = self.vacant_row;
            self.vacant_row = self.residues[at as usize][0];
            self.residues[at as usize] = row;
            at
        } else {
            crate::tree::bplus::grow(&mut self.residues);
            self.residues.push(row);
            u32::try_from(self.residues.len() - 1).expect("at most 256 rows")
        };
        self.lists[c].row = at;
    }

    /// Stops counting list `c` (in `row`), which has become short.
    #[cold]
    fn uncount_residues(&mut self, c: usize, row: u32) {
        self.residues[row as usize][0] = self.vacant_row;
        self.vacant_row = row;
        self.lists[c].row = SCRATCH;
    }

    /// Whether list `c` (length `c + 1`) holds a start whose residue mod 64 is in
    /// `room`: O(1) for a counted list, else a scan of at most [`COUNT_FROM`] records.
    fn list_has(&self, c: usize, room: u64) -> bool {
        match self.lists[c].row {
            SCRATCH => {
                let mut id = self.lists[c].head;
                while id != NIL {
                    let r = &self.recs[id as usize];
                    if room & (1 << (r.start % 64)) != 0 {
                        return true;
                    }
                    id = r.next;
                }
                false
            }
            row => {
                let counts = &self.residues[row as usize];
                (0..64).any(|i| room & (1 << i) != 0 && counts[i] > 0)
            }
        }
    }

    /// Record `id` (in the size order), `l0` blocks long, becomes `[start, start +
    /// len)`. A long extent that stays long keeps its place in the long order when its
    /// new key still lies between its neighbours' (always so for the only long
    /// extent): one rewrite, not a removal and an insertion.
    #[inline(always)]
    fn reshape(&mut self, id: u32, l0: u64, start: u64, len: u64) {
        if id == self.top && len > LISTED {
            self.recs[id as usize].start = start;
            self.top_len = len;
            self.histogram[bucket(l0)] -= 1;
            self.histogram[bucket(len)] += 1;
            return;
        }
        self.reshape_listed(id, l0, start, len);
    }

    /// [`reshape`](Self::reshape) for an extent in a list or the long order.
    fn reshape_listed(&mut self, id: u32, l0: u64, start: u64, len: u64) {
        let s0 = self.recs[id as usize].start;
        if l0 <= LISTED || len <= LISTED {
            self.unlink(id, l0);
            self.recs[id as usize].start = start;
            self.link(id, len);
            return;
        }
        let (old, new) = (size_key(l0, s0), size_key(len, start));
        let p = match self.long_hint.0 {
            Some((k, p)) if k == old => p,
            _ => self
                .long
                .find(old)
                .expect("the long order lists every long extent"),
        };
        let after_prev = self.long.prev(p).is_none_or(|q| self.long.get(q).0 < new);
        let before_next = self.long.next(p).is_none_or(|q| new < self.long.get(q).0);
        if after_prev && before_next {
            self.long.set(p, new, id);
            self.note_long_max();
            self.long_hint = Cache(Some((new, p)));
        } else {
            self.long.remove(p);
            self.long.insert(new, id);
            self.note_long_max();
            self.long_hint = Cache(None);
        }
        self.histogram[bucket(l0)] -= 1;
        self.histogram[bucket(len)] += 1;
        self.recs[id as usize].start = start;
    }

    #[inline]
    fn changed(&mut self) {
        self.chosen = Cache(None);
        self.probe = Cache(None);
    }

    // ---- address order ---------------------------------------------------------------

    /// The first extent whose last block is at or after `x`, from the probe if it holds
    /// `x`.
    #[inline]
    fn ceil(&self, x: u64) -> Option<Pos> {
        match self.probe.0.and_then(|p| p.of(x)) {
            Some(found) => found,
            None => self.by_last.ceil(x, false),
        }
    }

    /// The extent at `pos` in the address order: `(start, len, record)`.
    #[inline]
    fn extent_at(&self, pos: Pos) -> (u64, u64, u32) {
        let (last, id) = self.by_last.get(pos);
        let start = self.recs[id as usize].start;
        (start, last - start + 1, id)
    }

    /// The free extent containing `block`, if it is free.
    pub(crate) fn containing(&self, block: u64) -> Option<Extent> {
        let (s, l, _) = self.extent_at(self.by_last.ceil(block, false)?);
        (s <= block).then(|| Extent::new(s, l))
    }

    /// Looks up address `x` ahead, for the overlap check and the insert of a free at `x`
    /// to share until the index changes.
    #[inline]
    pub(crate) fn probe(&mut self, x: u64) {
        self.probe = Cache(Some(Probed::new(x, self.by_last.ceil_near(x))));
    }

    /// The lowest free extent overlapping `[start, end)`.
    #[inline]
    pub(crate) fn first_overlap(&self, start: u64, end: u64) -> Option<Extent> {
        let (s, l, _) = self.extent_at(self.ceil(start)?);
        (s < end).then(|| Extent::new(s, l))
    }

    /// The free extents overlapping `[start, end)`, clipped to it, in address order.
    #[inline]
    pub(crate) fn overlapping(&self, start: u64, end: u64) -> Vec<Extent> {
        let mut out = Vec::new();
        let mut at = self.ceil(start);
        while let Some(p) = at {
            let (s, l, _) = self.extent_at(p);
            if s >= end {
                break;
            }
            let (from, to) = (s.max(start), (s + l).min(end));
            out.push(Extent::new(from, to - from));
            at = self.by_last.next(p);
        }
        out
    }

    /// Free extents in address order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = Extent> + '_ {
        self.by_last.iter().map(|(last, id)| {
            let start = self.recs[id as usize].start;
            Extent::new(start, last - start + 1)
        })
    }

    // ---- changes ---------------------------------------------------------------------

    /// Adds the blocks `[start, start + len)` and coalesces them with their neighbours.
    /// The caller guarantees they are not in the index and lie below `u64::MAX`.
    /// Failures kept by [`note_failed`](Self::note_failed) are not counted: use
    /// [`insert_keeping_fails`](Self::insert_keeping_fails) once there are any.
    pub(crate) fn insert(&mut self, start: u64, len: u64) {
        debug_assert!(len > 0);
        let end = start + len;
        let above = self.ceil(start);
        self.changed();
        let below = match above {
            Some(p) => self.by_last.prev(p),
            None => self.by_last.last(),
        };
        let right = above
            .map(|p| self.extent_at(p))
            .filter(|&(s, ..)| {
                debug_assert!(s >= end, "inserting [{start}, +{len}) over a free extent");
                s == end
            })
            .map(|(_, l, id)| (id, l));
        let left = below.map(|p| self.extent_at(p)).filter(|&(s, l, _)| {
            debug_assert!(
                s + l <= start,
                "inserting [{start}, +{len}) over a free extent"
            );
            s + l == start
        });
        match (left, right) {
            (None, None) => {
                let id = self.new_rec(start);
                let p = self.by_last.insert_after(below, end - 1, id);
                self.leaf_of[id as usize] = p.leaf();
                self.link(id, len);
            }
            (Some((ls, ll, l)), None) => {
                self.reshape(l, ll, ls, ll + len);
                let lp = below.expect("a left neighbour has a place");
                self.by_last.set(lp, end - 1, l);
                self.leaf_of[l as usize] = lp.leaf();
            }
            (None, Some((r, rl))) => {
                self.reshape(r, rl, start, len + rl);
            }
            (Some((ls, ll, l)), Some((r, rl))) => {
                self.unlink(l, ll);
                self.reshape(r, rl, ls, ll + len + rl);
                self.by_last
                    .remove(below.expect("a left neighbour has a place"));
                self.drop_rec(l);
            }
        }
        self.count_free_blocks += len;
    }

    /// [`insert`](Self::insert), with the kept failures' counts following.
    pub(crate) fn insert_keeping_fails(&mut self, start: u64, len: u64) {
        self.insert(start, len);
        self.fails_follow(start, len, true);
    }

    /// [`take`](Self::take), with the kept failures' counts following.
    pub(crate) fn take_keeping_fails(&mut self, start: u64, len: u64) {
        self.take(start, len);
        self.fails_follow(start, len, false);
    }

    /// Keeps the failures' counts exact after `[start, start + len)` was inserted
    /// (`inserted`) or taken: the extents it joined or split are found again.
    fn fails_follow(&mut self, start: u64, len: u64, inserted: bool) {
        let end = start + len;
        // The free extents that now end at `start` and begin at `end` (when taken),
        // or the one that now holds the blocks (when inserted).
        let (joined, left, right) = if inserted {
            let e = self.containing(start).expect("inserted blocks are free");
            let right = (e.start + e.len) - end;
            ((e.start, e.len), (e.start, start - e.start), (end, right))
        } else {
            let left = start
                .checked_sub(1)
                .and_then(|b| self.containing(b))
                .map_or((start, 0), |e| (e.start, e.len));
            let right = self
                .containing(end)
                .filter(|e| e.start == end)
                .map_or(0, |e| e.len);
            ((left.0, left.1 + len + right), left, (end, right))
        };
        let pieces = [left, right].into_iter().filter(|e| e.1 > 0);
        if inserted {
            pieces.for_each(|(s, l)| self.fails.0.sub(s, l));
            self.fails.0.add(joined.0, joined.1);
        } else {
            self.fails.0.sub(joined.0, joined.1);
            pieces.for_each(|(s, l)| self.fails.0.add(s, l));
        }
    }

    /// Removes the blocks `[start, start + len)`, which the caller guarantees lie inside
    /// a single free extent, splitting it as needed.
    /// Like [`insert`](Self::insert), failures are not counted: use
    /// [`take_keeping_fails`](Self::take_keeping_fails) once there are any.
    pub(crate) fn take(&mut self, start: u64, len: u64) {
        debug_assert!(len > 0);
        let end = start + len;
        let chosen = self
            .chosen
            .0
            .filter(|&(s, ..)| s == start)
            .map(|(s, id, l)| (s, l, id));
        self.changed();
        let ((s, l, id), pos) = match chosen {
            Some(found) => (found, None),
            None => {
                let p = self
                    .by_last
                    .ceil(start, false)
                    .expect("taking blocks that are not free");
                (self.extent_at(p), Some(p))
            }
        };
        let e = s + l;
        assert!(
            s <= start && end <= e,
            "taking [{start}, +{len}) beyond free extent [{s}, +{l})"
        );
        let pos = |me: &Self| {
            pos.unwrap_or_else(|| {
                me.by_last
                    .find_near(me.leaf_of[id as usize], e - 1)
                    .expect("the address order lists every extent")
            })
        };
        match (s == start, end == e) {
            (true, true) => {
                self.unlink(id, l);
                let p = pos(self);
                self.by_last.remove(p);
                self.drop_rec(id);
            }
            (true, false) => self.reshape(id, l, end, e - end),
            (false, true) => {
                let p = pos(self);
                self.reshape(id, l, s, start - s);
                self.by_last.set(p, start - 1, id);
                self.leaf_of[id as usize] = p.leaf();
            }
            (false, false) => {
                let p = pos(self);
                let below = self.by_last.prev(p);
                self.reshape(id, l, end, e - end);
                let left = self.new_rec(s);
                let lp = self.by_last.insert_after(below, start - 1, left);
                self.leaf_of[left as usize] = lp.leaf();
                self.link(left, start - s);
            }
        }
        self.count_free_blocks -= len;
    }

    // ---- searches --------------------------------------------------------------------

    /// Best fit for `need` blocks, unaligned: the start of a shortest free extent that
    /// holds them. Remembers the extent for the [`take`](Self::take) that follows.
    #[inline]
    pub(crate) fn best_fit(&mut self, need: u64) -> Option<u64> {
        debug_assert!(need > 0);
        if let Some(len) = self.shortest_listed(need) {
            let id = self.lists[len as usize - 1].head;
            let start = self.recs[id as usize].start;
            self.chosen = Cache(Some((start, id, len)));
            return Some(start);
        }
        let top = (self.top != NIL && self.top_len >= need)
            .then(|| (self.top, self.recs[self.top as usize].start, self.top_len));
        // The long order holds nothing this long when its longest falls short: no
        // descent then, as on an empty space where only the top extent is free.
        let found = (self.long_max >= need)
            .then(|| self.long.ceil(size_key(need, 0), false))
            .flatten()
            .map(|p| {
                let (k, id) = self.long.get(p);
                (p, k, id)
            });
        match (found, top) {
            (Some((p, k, id)), top) if top.is_none_or(|(.., tl)| size_of_key(k).0 <= tl) => {
                let (len, start) = size_of_key(k);
                self.chosen = Cache(Some((start, id, len)));
                self.long_hint = Cache(Some((k, p)));
                Some(start)
            }
            (_, Some((id, ts, tl))) => {
                self.chosen = Cache(Some((ts, id, tl)));
                Some(ts)
            }
            (_, None) => None,
        }
    }

    /// A longest free extent: the lowest of them if they are long, else the head of
    /// their list.
    pub(crate) fn largest(&self) -> Option<Extent> {
        let top = (self.top != NIL)
            .then(|| Extent::new(self.recs[self.top as usize].start, self.top_len));
        let tree = self.long.last().and_then(|p| {
            let len = size_of_key(self.long.get(p).0).0;
            let p = self.long.ceil(size_key(len, 0), false)?;
            let (len, start) = size_of_key(self.long.get(p).0);
            Some(Extent::new(start, len))
        });
        if let Some(e) = [tree, top]
            .into_iter()
            .flatten()
            .min_by_key(|e| (core::cmp::Reverse(e.len), e.start))
        {
            return Some(e);
        }
        let len = self.longest_listed();
        let r = &self.recs[self.lists.get(len.checked_sub(1)? as usize)?.head as usize];
        Some(Extent::new(r.start, len))
    }

    /// The longest free extent's length: O(1), which a shared group's publish on every
    /// unlock relies on.
    pub(crate) fn largest_len(&self) -> u64 {
        let top = if self.top == NIL { 0 } else { self.top_len };
        let long = if self.long_max > 0 {
            self.long_max
        } else {
            self.longest_listed()
        };
        top.max(long)
    }

    /// Whether `need` blocks aligned to `align` fit anywhere. Only extents shorter than
    /// `need + align - 1` blocks can fail to hold them for their start, so it looks only
    /// when the longest is among those, at each length from `need` to the longest:
    /// for `align <= 64` by the residues of their starts (a counted list or a short
    /// one, and a descent of the long order), O(align log n); above 64, by a look at
    /// each such extent. The caller moves to the ordered form when it says yes.
    pub(crate) fn any_fit(&self, need: u64, align: u64) -> bool {
        let largest = self.largest_len();
        if largest < need {
            return false;
        }
        if largest - need >= align - 1 {
            return true;
        }
        if align > 64 {
            return self
                .lengths(need, largest)
                .any(|(s, l)| fit(s, l, need, align).is_some());
        }
        (need..=largest).any(|len| {
            let room = residues_with_room(align, len - need);
            if len <= LISTED {
                let c = len as usize - 1;
                return self.is_listed(c) && self.list_has(c, room);
            }
            let sub = |r: &Residues| r.0 & room != 0;
            let entry = |k: &u128, _: &u32| room & (1 << (*k as u64 % 64)) != 0;
            self.long
                .first_matching(size_key(len, 0), sub, entry)
                .is_some_and(|p| size_of_key(self.long.get(p).0).0 == len)
        }) || self.top_fits(need, align)
    }

    /// Whether `need` blocks aligned to `align` (above 64) are known not to fit, from
    /// what an earlier failure learned.
    #[inline]
    pub(crate) fn known_short(&self, align: u64, need: u64) -> bool {
        align > 64 && self.fails.0.known_short(align, need)
    }

    /// Remembers that [`any_fit`](Self::any_fit) said no to `need` blocks aligned to
    /// `align` (above 64, where saying it again would look at each extent again).
    /// Inline: the heap does not change.
    pub(crate) fn note_failed(&mut self, need: u64, align: u64) {
        self.fails.0.note(align, need);
    }

    /// What failed requests learned, for the ordered form to start from.
    pub(crate) fn fails(&self) -> Fails {
        self.fails.0
    }

    /// Whether the kept long extent holds `need` blocks aligned to `align`.
    fn top_fits(&self, need: u64, align: u64) -> bool {
        self.top != NIL && {
            let r = &self.recs[self.top as usize];
            fit(r.start, self.top_len, need, align).is_some()
        }
    }

    /// The most blocks aligned to `align` that one free extent gives. Only extents
    /// within `align - 2` blocks of the longest can beat the longest, so it looks at
    /// those: O(1 + those extents).
    pub(crate) fn largest_placeable(&self, align: u64) -> u64 {
        let largest = self.largest_len();
        if largest == 0 || align == 1 {
            return largest;
        }
        let shortest = largest.saturating_sub(align - 2).max(1);
        self.lengths(shortest, largest)
            .map(|(s, l)| super::placeable(s, l, align))
            .max()
            .unwrap_or(0)
    }

    /// The free extents `(start, len)` with `lo <= len <= hi`, by length.
    fn lengths(&self, lo: u64, hi: u64) -> impl Iterator<Item = (u64, u64)> + '_ {
        let short = (lo..=hi.min(LISTED)).flat_map(move |len| {
            let mut id = self.lists[len as usize - 1].head;
            core::iter::from_fn(move || {
                (id != NIL).then(|| {
                    let r = &self.recs[id as usize];
                    id = r.next;
                    (r.start, len)
                })
            })
        });
        let mut at = if hi > LISTED {
            self.long.ceil(size_key(lo.max(LISTED + 1), 0), false)
        } else {
            None
        };
        let long = core::iter::from_fn(move || {
            let p = at?;
            let (l, s) = size_of_key(self.long.get(p).0);
            if l > hi {
                return None;
            }
            at = self.long.next(p);
            Some((s, l))
        });
        let top = (self.top != NIL && (lo..=hi).contains(&self.top_len))
            .then(|| (self.recs[self.top as usize].start, self.top_len));
        short.chain(long).chain(top)
    }

    // ---- checks ----------------------------------------------------------------------

    /// Every link, list, order and count, recomputed. `(invariant number, detail)`.
    pub(crate) fn check(&self, capacity: u64) -> Result<(), (u8, alloc::string::String)> {
        use alloc::format;
        self.by_last
            .check()
            .map_err(|d| (3, format!("address order: {d}")))?;
        self.long
            .check()
            .map_err(|d| (3, format!("size order: {d}")))?;
        let mut seen = alloc::vec![false; self.recs.len()];
        for (_, id) in self.by_last.iter() {
            let fresh = seen
                .get_mut(id as usize)
                .is_some_and(|s| !core::mem::replace(s, true));
            if !fresh {
                return Err((
                    3,
                    format!("address order names record {id} twice or past the arena"),
                ));
            }
        }
        super::check_extents(
            self.iter().map(|e| (e.start, e.len)),
            capacity,
            self.count_free_blocks,
            &self.histogram,
        )?;
        let mut short = 0usize;
        // Each record's length, from its key.
        let mut len_of = alloc::vec![0u64; self.recs.len()];
        for (last, id) in self.by_last.iter() {
            let s = self.recs[id as usize].start;
            if last < s {
                return Err((3, format!("free extent at {s} is keyed by {last}")));
            }
            let l = last - s + 1;
            len_of[id as usize] = l;
            if l > LISTED && id != self.top && self.long_pos(l, s, id).is_none() {
                return Err((3, format!("size order misses [{s}, +{l})")));
            }
            short += usize::from(l <= LISTED);
        }
        if self.top != NIL {
            let r = self
                .recs
                .get(self.top as usize)
                .filter(|_| seen[self.top as usize]);
            let l = len_of.get(self.top as usize).copied().unwrap_or(0);
            if r.is_none_or(|r| {
                l != self.top_len || l <= LISTED || self.long_pos(l, r.start, self.top).is_some()
            }) {
                return Err((
                    3,
                    "the kept long extent is stray, short or also in the long order".into(),
                ));
            }
        }
        if self.long.len() + usize::from(self.top != NIL) + short != self.by_last.len() {
            return Err((
                3,
                "the size order lists extents the address order does not".into(),
            ));
        }
        let words = (0..WORDS).fold(0u8, |m, i| m | u8::from(self.nonempty[i] != 0) << i);
        if words != self.words {
            return Err((3, "the summary of non-empty words is wrong".into()));
        }
        let mut listed = 0usize;
        for c in 0..LISTED as usize {
            let head = self.lists[c].head;
            if (head != NIL) != self.is_listed(c) {
                return Err((3, format!("length {}: its non-empty bit is wrong", c + 1)));
            }
            let mut prev = NIL;
            let mut id = head;
            while id != NIL {
                let r = self
                    .recs
                    .get(id as usize)
                    .filter(|_| seen[id as usize])
                    .ok_or_else(|| (3, format!("length {} lists a stray record {id}", c + 1)))?;
                if len_of[id as usize] != c as u64 + 1 || r.prev != prev {
                    return Err((3, format!("length {} lists record {id} wrongly", c + 1)));
                }
                listed += 1;
                if listed > short {
                    return Err((3, "the length lists loop or repeat".into()));
                }
                prev = id;
                id = r.next;
            }
        }
        if listed != short {
            return Err((3, "the length lists miss an extent".into()));
        }
        // The scratch row, made with the first record, is neither a list's nor vacant.
        let scratch = !self.residues.is_empty();
        if scratch == self.recs.is_empty() {
            return Err((3, "the scratch residue row is missing or stray".into()));
        }
        let mut rows = usize::from(scratch);
        let mut row_used = alloc::vec![false; self.residues.len()];
        if let Some(used) = row_used.first_mut() {
            *used = true;
        }
        for c in 0..LISTED as usize {
            let mut n = 0u32;
            let mut counts = [0u32; 64];
            let mut id = self.lists[c].head;
            while id != NIL {
                let r = &self.recs[id as usize];
                counts[(r.start % 64) as usize] += 1;
                n += 1;
                id = r.next;
            }
            if n != self.lists[c].len {
                return Err((
                    3,
                    format!(
                        "length {}: {n} listed, {} counted",
                        c + 1,
                        self.lists[c].len
                    ),
                ));
            }
            let row = self.lists[c].row;
            let wrong = if row == SCRATCH {
                n > COUNT_FROM
            } else {
                rows += 1;
                let shared = row_used
                    .get_mut(row as usize)
                    .is_none_or(|u| core::mem::replace(u, true));
                shared || n < COUNT_FROM / 4 || self.residues.get(row as usize) != Some(&counts)
            };
            if wrong {
                return Err((3, format!("length {}: its residue counts are wrong", c + 1)));
            }
        }
        let mut row = self.vacant_row;
        while row != NIL {
            rows += 1;
            let reused = row_used
                .get_mut(row as usize)
                .is_none_or(|u| core::mem::replace(u, true));
            if reused || rows > self.residues.len() {
                return Err((3, "a vacant residue row is stray, in use or repeats".into()));
            }
            row = self.residues[row as usize][0];
        }
        if rows != self.residues.len() {
            return Err((3, "residue rows are lost".into()));
        }
        let long_max = self
            .long
            .last()
            .map_or(0, |p| size_of_key(self.long.get(p).0).0);
        if long_max != self.long_max {
            return Err((
                3,
                format!(
                    "the longest length kept is {}, not {long_max}",
                    self.long_max
                ),
            ));
        }
        if let Some((k, p)) = self.long_hint.0 {
            if !self.long.holds(p, k) {
                return Err((3, "the remembered place in the long order is stale".into()));
            }
        }
        let mut vacant = 0usize;
        let mut id = self.vacant;
        while id != NIL {
            if seen.get(id as usize).is_none_or(|&s| s) || vacant > self.recs.len() {
                return Err((3, format!("vacant record {id} is in use or repeats")));
            }
            vacant += 1;
            id = self.recs[id as usize].next;
        }
        if self.leaf_of.len() != self.recs.len() {
            return Err((3, "a record has no leaf hint".into()));
        }
        if vacant + self.by_last.len() != self.recs.len() {
            return Err((3, "records are lost: neither in use nor vacant".into()));
        }
        self.fails
            .0
            .check(|| self.iter().map(|e| (e.start, e.len)))
            .map_err(|d| (3, d))
    }

    /// Where the long order lists record `id` as `(l, s)`, if it does.
    fn long_pos(&self, l: u64, s: u64, id: u32) -> Option<Pos> {
        self.long
            .find(size_key(l, s))
            .filter(|&p| self.long.get(p).1 == id)
    }
}

#[cfg(test)]
mod tests {
    use alloc::vec::Vec;

    use super::*;
    use crate::splitmix::SplitMix;

    fn extents(ix: &Hot) -> Vec<(u64, u64)> {
        ix.iter().map(|e| (e.start, e.len)).collect()
    }

    #[test]
    fn taking_from_the_start_leaves_the_address_order_alone() {
        // ##########  take [0..3) as best fit does  ->  ...#######
        let mut ix = Hot::new();
        ix.insert(0, 10);
        let nodes = ix.by_last.clone();
        assert_eq!(ix.best_fit(3), Some(0));
        ix.take(0, 3);
        assert_eq!(extents(&ix), [(3, 7)]);
        assert_eq!(ix.by_last, nodes, "the last block did not move");
        ix.check(10).unwrap();
    }

    #[test]
    fn insert_coalesces_and_take_splits() {
        let mut ix = Hot::new();
        ix.insert(0, 4);
        ix.insert(6, 4);
        ix.insert(12, 200);
        assert_eq!(extents(&ix), [(0, 4), (6, 4), (12, 200)]);
        ix.insert(4, 2);
        assert_eq!(extents(&ix), [(0, 10), (12, 200)]);
        ix.insert(10, 2);
        assert_eq!(extents(&ix), [(0, 212)]);
        ix.take(100, 5);
        assert_eq!(extents(&ix), [(0, 100), (105, 107)]);
        ix.take(0, 100);
        ix.take(200, 12);
        assert_eq!(extents(&ix), [(105, 95)]);
        assert_eq!(ix.free_blocks(), 95);
        ix.check(212).unwrap();
    }

    /// Best fit takes a shortest extent that holds the request, and the most recently
    /// changed among equals.
    #[test]
    fn best_fit_is_exact_and_newest_first() {
        let mut ix = Hot::new();
        for i in 0..5 {
            ix.insert(i * 10, 3);
        }
        ix.insert(100, 7);
        ix.insert(200, 300);
        assert_eq!(ix.best_fit(3), Some(40), "the last extent of 3 made");
        assert_eq!(ix.best_fit(4), Some(100));
        assert_eq!(ix.best_fit(8), Some(200));
        assert_eq!(ix.best_fit(301), None);
        ix.take(40, 3);
        assert_eq!(ix.best_fit(3), Some(30));
        ix.check(500).unwrap();
    }

    /// The lists' non-empty bits span four words: best fit, the longest extent and the
    /// check agree with a brute force for every request length, whichever words hold
    /// the lengths (each boundary of a word, in and out of the lists, among them).
    #[test]
    fn best_fit_across_the_words_of_lengths() {
        let edges = [
            1, 2, 63, 64, 65, 127, 128, 129, 191, 192, 193, 255, 256, 257, 300,
        ];
        for mask in [
            0u32, 1, 0x7fff, 0x5555, 0x2aaa, 0x4210, 0x0888, 0x1000, 0x6000,
        ] {
            let lens: Vec<u64> = (0..edges.len())
                .filter(|i| mask & (1 << i) != 0)
                .map(|i| edges[i])
                .collect();
            let mut ix = Hot::new();
            for (i, &l) in lens.iter().enumerate() {
                ix.insert(1000 * i as u64, l);
            }
            ix.check(1000 * 16).unwrap();
            for need in 1..=301 {
                let want = lens.iter().copied().filter(|&l| l >= need).min();
                let got = ix.best_fit(need).map(|s| ix.containing(s).unwrap().len);
                assert_eq!(got, want, "need {need} among {lens:?}");
            }
            let longest = lens.iter().copied().max();
            assert_eq!(ix.largest_len(), longest.unwrap_or(0), "{lens:?}");
            assert_eq!(ix.largest().map(|e| e.len), longest, "{lens:?}");
        }
    }

    /// Random takes and inserts against a plain sorted list, with every search and the
    /// whole check after each change.
    #[test]
    fn matches_a_plain_list() {
        for seed in 0..4 {
            let cap = 50_000u64;
            let mut rng = SplitMix::new(seed);
            let mut ix = Hot::new();
            ix.insert(0, cap);
            let mut taken: Vec<(u64, u64)> = Vec::new();
            for step in 0..3_000 {
                if taken.is_empty() || rng.below(100) < 60 {
                    let need = 1 + if rng.below(4) == 0 {
                        rng.below(400)
                    } else {
                        rng.below(40)
                    };
                    if rng.below(2) == 0 {
                        // As an allocation: best fit, then take from its start.
                        if let Some(s) = ix.best_fit(need) {
                            ix.take(s, need);
                            taken.push((s, need));
                        }
                    } else {
                        // As a pin over free blocks: anywhere inside an extent.
                        let free = extents(&ix);
                        if free.is_empty() {
                            continue;
                        }
                        let (s, l) = free[rng.below(free.len() as u64) as usize];
                        let len = need.min(l);
                        let start = s + rng.below(l - len + 1);
                        ix.take(start, len);
                        taken.push((start, len));
                    }
                } else {
                    let (s, l) = taken.swap_remove(rng.below(taken.len() as u64) as usize);
                    ix.probe(s);
                    assert_eq!(ix.first_overlap(s, s + l), None);
                    ix.insert(s, l);
                }
                ix.check(cap)
                    .unwrap_or_else(|e| panic!("seed {seed} step {step}: {e:?}"));
                let plain = extents(&ix);
                let need = 1 + rng.below(300);
                let shortest = plain.iter().map(|&(_, l)| l).filter(|&l| l >= need).min();
                let found = ix.best_fit(need);
                assert_eq!(
                    found.map(|s| plain.iter().find(|e| e.0 == s).unwrap().1),
                    shortest,
                    "seed {seed} step {step}: best fit for {need}"
                );
                let largest = plain.iter().map(|&(_, l)| l).max().unwrap_or(0);
                assert_eq!(ix.largest_len(), largest);
                for align in [2, 8, 64, 512] {
                    let placeable = |&(s, l): &(u64, u64)| super::super::placeable(s, l, align);
                    let best = plain.iter().map(placeable).max().unwrap_or(0);
                    assert_eq!(ix.largest_placeable(align), best, "align {align}");
                    assert_eq!(ix.any_fit(need, align), best >= need, "align {align}");
                }
                let b = rng.below(cap);
                let holding = plain.iter().find(|&&(s, l)| s <= b && b < s + l);
                assert_eq!(ix.containing(b), holding.map(|&(s, l)| Extent::new(s, l)));
                let (q, ql) = (rng.below(cap), 1 + rng.below(500));
                let clipped: Vec<Extent> = plain
                    .iter()
                    .filter(|&&(s, l)| s < q + ql && q < s + l)
                    .map(|&(s, l)| {
                        let (a, z) = (s.max(q), (s + l).min(q + ql));
                        Extent::new(a, z - a)
                    })
                    .collect();
                assert_eq!(ix.overlapping(q, q + ql), clipped);
                assert_eq!(
                    ix.first_overlap(q, q + ql),
                    clipped.first().map(|e| {
                        let &(s, l) = plain
                            .iter()
                            .find(|p| p.0 <= e.start && e.start < p.0 + p.1)
                            .unwrap();
                        Extent::new(s, l)
                    })
                );
            }
        }
    }

    /// A list long enough to count its residues answers an aligned request in O(1),
    /// and keeps its counts through changes; so does the long order.
    #[test]
    fn aligned_feasibility_by_residues() {
        let mut ix = Hot::new();
        // 100 extents of 64 blocks, each one block past a multiple of 64.
        for i in 0..100 {
            ix.insert(128 * i + 1, 64);
        }
        assert_ne!(
            ix.lists[63].row, SCRATCH,
            "a list of 100 counts its residues"
        );
        ix.check(1 << 20).unwrap();
        assert!(!ix.any_fit(64, 64));
        assert!(ix.any_fit(1, 64), "one block fits after 63 of padding");
        assert!(ix.any_fit(64, 1));
        // One more, aligned, makes it fit; taking it away again does not.
        ix.insert(128 * 200, 64);
        assert!(ix.any_fit(64, 64));
        ix.take(128 * 200, 64);
        assert!(!ix.any_fit(64, 64));
        // Long extents: 300 blocks one past a multiple of 64 hold 256 aligned to 256?
        // No (the first multiple leaves 45); 299 aligned to 64, yes.
        ix.insert(1 << 19 | 1, 300);
        assert!(!ix.any_fit(300, 64));
        assert!(ix.any_fit(299, 1));
        assert!(!ix.any_fit(257, 256));
        assert!(ix.any_fit(236, 64));
        ix.take(1 << 19 | 1, 300);
        // Back to a short list: it stops counting, and the check agrees.
        for i in 0..95 {
            ix.take(128 * i + 1, 64);
        }
        assert_eq!(ix.lists[63].row, SCRATCH);
        assert!(!ix.any_fit(64, 64));
        ix.check(1 << 20).unwrap();
    }

    /// The first long extent is kept out of the long order: carving it touches no
    /// tree, and best fit still takes a shorter long extent that fits.
    #[test]
    fn the_kept_long_extent() {
        let mut ix = Hot::new();
        ix.insert(0, 1000);
        assert_eq!(ix.top, 0);
        let (by_last, long) = (ix.by_last.clone(), ix.long.clone());
        assert_eq!(ix.best_fit(10), Some(0));
        ix.take(0, 10);
        assert_eq!(
            (&ix.by_last, &ix.long),
            (&by_last, &long),
            "no tree changed"
        );
        ix.insert(2000, 400);
        ix.insert(3000, 300);
        assert_eq!(ix.long.len(), 2, "later long extents go to the long order");
        assert_eq!(
            ix.best_fit(350),
            Some(2000),
            "the shorter fit, not the kept one"
        );
        assert_eq!(ix.best_fit(401), Some(10));
        assert_eq!(ix.largest(), Some(Extent::new(10, 990)));
        ix.take(10, 990);
        assert_eq!(ix.top, NIL);
        assert_eq!(ix.largest_len(), 400);
        ix.insert(10, 990);
        assert_ne!(ix.top, NIL);
        ix.check(4000).unwrap();
    }

    #[test]
    fn the_check_catches_a_broken_list() {
        let mut ix = Hot::new();
        ix.insert(0, 3);
        ix.insert(10, 3);
        ix.check(20).unwrap();
        let mut bad = ix.clone();
        bad.recs[0].start = 1;
        assert!(
            bad.check(20).is_err(),
            "a record in the wrong length's list"
        );
        let mut long = Hot::new();
        long.insert(0, 500);
        long.check(500).unwrap();
        assert_ne!(long.top, NIL);
        long.top_len -= 1;
        assert!(
            long.check(500).is_err(),
            "the kept long extent's length is wrong"
        );
        let mut bad = ix.clone();
        bad.nonempty = [0; WORDS];
        assert!(bad.check(20).is_err(), "a wrong non-empty bit");
        let mut bad = ix.clone();
        bad.words ^= 0b10;
        assert!(bad.check(20).is_err(), "a wrong summary word");
        let mut bad = ix.clone();
        bad.lists[2].head = NIL;
        assert!(bad.check(20).is_err(), "an extent missing from its list");

        // Two counted lists with equal counts must not share a row.
        let mut ix = Hot::new();
        for i in 0..40 {
            ix.insert(128 * i, 5);
            ix.insert(128 * i + 64, 6);
        }
        ix.insert(1 << 20, 500);
        ix.insert(1 << 21, 600);
        assert_eq!(ix.best_fit(550), Some(1 << 21));
        ix.check(1 << 22).unwrap();
        let mut bad = ix.clone();
        bad.lists[5].row = bad.lists[4].row;
        assert!(bad.check(1 << 22).is_err(), "a shared residue row");
        let mut bad = ix.clone();
        bad.vacant_row = 1000;
        assert!(bad.check(1 << 22).is_err(), "a stray vacant row");
        let mut bad = ix.clone();
        let (k, p) = bad
            .long_hint
            .0
            .expect("the long best fit remembers its place");
        bad.long_hint = Cache(Some((k + 1, p)));
        assert!(bad.check(1 << 22).is_err(), "a stale remembered place");
    }
}
