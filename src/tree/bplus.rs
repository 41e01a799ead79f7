//! A B+ tree in two arenas, with parent links, leaf chains and a [`Summary`] of each
//! child kept in its parent: the ordered map both free-extent orders use.
//!
//! - Leaves hold up to [`B`] sorted `(key, value)` pairs and link to their neighbours,
//!   so a position steps to the next or previous entry in O(1).
//! - Inner nodes hold up to [`B`] children, each with the smallest key below it
//!   (`keys[0]` is kept, but a search clamps past it) and the summary of its entries.
//!   "The first entry at or after `x` that matches, where summaries tell which
//!   subtrees can hold one" is then one walk up and one descent.
//! - Every node but the root holds at least [`MIN`] entries or children, so the
//!   height is O(log n); nodes are recycled through free lists, so after warm-up the
//!   tree allocates only when it grows past its old size.
//!
//! Nodes link by `u32` index; [`NIL`] is "none". Positions ([`Pos`]) stay valid across
//! [`BPlus::set`], and are invalidated by [`BPlus::insert`] and [`BPlus::remove`].

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Debug;

use super::Cache;

/// Most entries in a leaf, and most children of an inner node.
pub(crate) const B: usize = 16;
/// Fewest entries (children) a non-root leaf (inner node) keeps.
pub(crate) const MIN: usize = B / 2 - 1;
/// The "no node" link.
pub(crate) const NIL: u32 = u32::MAX;

/// A key: ordered and copyable. `MAX` fills unused slots, so that searches run over
/// all [`B`] slots without a bound check; no stored key equals it.
pub(crate) trait Key: Copy + Ord + Default + Debug {
    const MAX: Self;
    /// The key's most significant word: what [`BPlus::ceil_near`]'s directory of
    /// leaves is indexed by.
    fn word(self) -> u64;
}
impl Key for u64 {
    const MAX: Self = u64::MAX;
    #[inline(always)]
    fn word(self) -> u64 {
        self
    }
}
impl Key for u128 {
    const MAX: Self = u128::MAX;
    #[inline(always)]
    fn word(self) -> u64 {
        (self >> 64) as u64
    }
}

/// Keys per group in a node search: the search first counts the groups whose last key
/// passes (their loads are independent of each other), then counts inside one group.
const GROUP: usize = 4;

/// How many of `keys` (sorted, padded with `K::MAX`) pass `pass` (a test that holds for
/// a prefix of them), in two branch-free steps: the groups of [`GROUP`] whose last key
/// passes, then the keys of the next group. A scan stopping at the first failing key
/// mispredicts its exit once per node, and a binary search chains dependent loads;
/// this does neither (pin + unpin beside 10,000 pins, in a profiling program whose
/// loop is now the instructions bench's `pin-unpin` measure: 145 ns with the binary
/// search, 87 ns with the scan).
#[inline(always)]
fn rank<K: Key>(keys: &[K; B], pass: impl Fn(K) -> bool) -> usize {
    const { assert!(B % GROUP == 0) };
    let mut groups = 0;
    for g in 1..B / GROUP {
        groups += usize::from(pass(keys[g * GROUP - 1]));
    }
    let base = groups * GROUP;
    let mut inside = 0;
    for k in &keys[base..base + GROUP] {
        inside += usize::from(pass(*k));
    }
    base + inside
}

/// How many of `keys` (sorted, padded with `K::MAX`) are at most `x`: a scan that stops
/// at the first larger key.
#[inline(always)]
fn scan_le<K: Key>(keys: &[K; B], x: K) -> usize {
    keys.iter().position(|&k| k > x).unwrap_or(B)
}

/// How many of `keys` (sorted, padded with `K::MAX`) are at most `x`.
#[inline(always)]
fn rank_le<K: Key>(keys: &[K; B], x: K) -> usize {
    rank(keys, |k| k <= x)
}

/// How many of `keys` (sorted, padded with `K::MAX`) are below `x`.
#[inline(always)]
fn rank_lt<K: Key>(keys: &[K; B], x: K) -> usize {
    rank(keys, |k| k < x)
}

/// A value stored beside each key.
pub(crate) trait Value: Copy + Default + Debug {}
impl Value for u64 {}
impl Value for u32 {}
impl Value for () {}

/// What a parent knows of each child's entries: a monoid over entries.
pub(crate) trait Summary<K, V>: Copy + Default + Eq + Debug {
    /// One entry's summary.
    fn of(k: &K, v: &V) -> Self;
    /// Two summaries together; `Default` is the identity.
    fn join(self, other: Self) -> Self;
    /// A node summarised as `cur` had one part change from `old` to `new`: its new
    /// summary if that can be told without looking at the other parts (otherwise the
    /// node is summarised afresh).
    fn replace(cur: Self, old: Self, new: Self) -> Option<Self>;
    /// A leaf's entries, in order, summarised (a fold of [`of`](Self::of) by
    /// [`join`](Self::join), unless a summary knows a quicker way).
    #[inline]
    fn of_entries(keys: &[K], vals: &[V]) -> Self {
        keys.iter()
            .zip(vals)
            .fold(Self::default(), |acc, (k, v)| acc.join(Self::of(k, v)))
    }
}

/// No summary at all.
impl<K, V> Summary<K, V> for () {
    #[inline]
    fn of(_: &K, _: &V) -> Self {}
    #[inline]
    fn join(self, _: Self) -> Self {}
    #[inline]
    fn replace(_: Self, _: Self, _: Self) -> Option<Self> {
        Some(())
    }
}

/// A [`Fold`] that can also take a part away again, for [`BPlus::prefix`].
pub(crate) trait Unfold<K, V, S, A> {
    /// `acc` without one entry.
    fn less_entry(&self, acc: A, key: &K, val: &V) -> A;
    /// `acc` without a whole subtree, by its summary.
    fn less_subtree(&self, acc: A, sum: &S) -> A;
}

/// How [`BPlus::walk_with`] and [`BPlus::prefix`] fold entries into a running value `A`.
pub(crate) trait Fold<K, V, S, A> {
    /// `acc` and one more entry.
    fn entry(&self, acc: A, key: &K, val: &V) -> A;
    /// `acc` and a whole subtree, by its summary.
    fn subtree(&self, acc: A, sum: &S) -> A;
    /// Whether a subtree after `acc` may be folded without visiting its entries.
    fn skip(&self, _acc: A, _sum: &S) -> bool {
        false
    }
}

#[derive(Clone, Debug, PartialEq)]
struct Leaf<K, V> {
    keys: [K; B],
    vals: [V; B],
    n: u32,
    /// The inner node above, or `NIL` for a root leaf; for a vacant leaf, the next
    /// vacant one.
    parent: u32,
    next: u32,
    prev: u32,
}

#[derive(Clone, Debug, PartialEq)]
struct Inner<K, S> {
    /// `keys[i]`: the smallest key under `kids[i]` (`keys[0]` is never searched).
    keys: [K; B],
    kids: [u32; B],
    /// `sum[i]`: the summary of everything under `kids[i]`.
    sum: [S; B],
    n: u32,
    /// As `Leaf::parent`.
    parent: u32,
}

/// Makes room for one more node, growing by a quarter (at least one node) rather
/// than doubling: still amortised O(1) per node, with at most a quarter held spare.
pub(crate) fn grow<T>(arena: &mut Vec<T>) {
    if arena.len() == arena.capacity() {
        arena.reserve_exact((arena.len() / 4).max(1));
    }
}

/// `lo..hi` upwards, or downwards when not `forward`.
#[inline]
fn ordered(lo: usize, hi: usize, forward: bool) -> impl Iterator<Item = usize> {
    (lo..hi).map(move |i| if forward { i } else { hi - 1 - (i - lo) })
}

/// A lookup made ahead: the block looked up and the place found, each one word, so
/// that the read that uses it takes what the write left whole (a place written in
/// parts and read as one word stalls the read).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Probed {
    at: u64,
    found: u64,
}

impl Probed {
    #[inline(always)]
    pub(crate) fn new(at: u64, found: Option<Pos>) -> Self {
        Probed {
            at,
            found: Pos::to_word(found),
        }
    }

    /// The place found, if the lookup was of `x`.
    #[inline(always)]
    pub(crate) fn of(self, x: u64) -> Option<Option<Pos>> {
        (self.at == x).then(|| Pos::from_word(self.found))
    }
}

/// Where an entry is: a leaf and a slot in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Pos {
    leaf: u32,
    slot: u32,
}

impl Pos {
    /// `None` as one word, which a call returns in a register: a result returned
    /// through memory, written in parts and read whole, stalls the caller.
    const NONE_WORD: u64 = u64::MAX;

    #[inline(always)]
    pub(crate) fn to_word(p: Option<Pos>) -> u64 {
        p.map_or(Self::NONE_WORD, |p| {
            (u64::from(p.leaf) << 32) | u64::from(p.slot)
        })
    }

    #[inline(always)]
    pub(crate) fn from_word(w: u64) -> Option<Pos> {
        (w != Self::NONE_WORD).then_some(Pos {
            leaf: (w >> 32) as u32,
            slot: w as u32,
        })
    }

    /// The leaf: a hint for [`BPlus::find_near`] once the tree has changed.
    #[inline]
    pub(crate) fn leaf(self) -> u32 {
        self.leaf
    }
}

/// Where [`BPlus::ceil_near`] and [`BPlus::floor_near`] look first: the key words from
/// `base` (the smallest key's, when built) cut into `leaves.len()` (a power of two)
/// equal buckets of `1 << shift`, each with the leaf the last lookup in it ended in
/// (or, when built, the leaf its first word belongs in). Leaves split, merge and are
/// reused after it is written, so an entry is only a guess; a lookup checks it
/// against the leaf's keys and its neighbour's, steps to a neighbouring leaf at most
/// twice, and otherwise descends and rewrites the entry. A key outside the buckets
/// is answered by the first or the last leaf when it lies below every key or in the
/// last leaf, and otherwise descends.
///
/// Built at the first such lookup, with a bucket for about every eight keys; built
/// again when the tree has doubled, or shrunk fourfold, since, or when more lookups
/// have descended since than it has buckets (the keys moved away from where they
/// were, say), which pays for the rebuild.
#[derive(Clone, Debug, Default)]
struct Directory {
    leaves: Vec<u32>,
    /// The first bucket's first word.
    base: u64,
    shift: u32,
    /// Words the buckets cover from `base`, `u64::MAX` for all of them (0 until built).
    reach: u64,
    /// Lookups that descended since it was built.
    misses: usize,
}

/// The tree; `S` is what parents know of their children.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct BPlus<K, V, S> {
    leaves: Vec<Leaf<K, V>>,
    inners: Vec<Inner<K, S>>,
    vacant_leaf: u32,
    vacant_inner: u32,
    /// A leaf when `height == 0`, else an inner node.
    root: u32,
    height: u32,
    len: usize,
    first_leaf: u32,
    last_leaf: u32,
    /// Where [`ceil_near`](Self::ceil_near) looks first.
    dir: Cache<Directory>,
}

impl<K: Key, V: Value, S: Summary<K, V>> BPlus<K, V, S> {
    pub(crate) const fn new() -> Self {
        Self {
            leaves: Vec::new(),
            inners: Vec::new(),
            vacant_leaf: NIL,
            vacant_inner: NIL,
            root: NIL,
            height: 0,
            len: 0,
            first_leaf: NIL,
            last_leaf: NIL,
            dir: Cache(Directory {
                leaves: Vec::new(),
                base: 0,
                shift: 0,
                reach: 0,
                misses: 0,
            }),
        }
    }

    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Bytes held by both arenas, and by the directory at the size its entries call
    /// for. The directory is a lookup cache, rebuilt by lookups (a failing call's
    /// too) at sizes up to four times that: counted by what the tree holds, the
    /// figure changes only when the tree does.
    pub(crate) fn capacity_bytes(&self) -> usize {
        self.leaves.capacity() * core::mem::size_of::<Leaf<K, V>>()
            + self.inners.capacity() * core::mem::size_of::<Inner<K, S>>()
            + Self::directory_size(self.len) * core::mem::size_of::<u32>()
    }

    /// The directory's buckets for a tree of `len` entries: one per eight, a power of
    /// two, at least two (so that a bucket's width stays below 2^64).
    fn directory_size(len: usize) -> usize {
        (len / 8).max(2).next_power_of_two()
    }

    // ---- node plumbing ---------------------------------------------------------------

    fn new_leaf(&mut self) -> u32 {
        let blank = Leaf {
            keys: [K::MAX; B],
            vals: [V::default(); B],
            n: 0,
            parent: NIL,
            next: NIL,
            prev: NIL,
        };
        if self.vacant_leaf != NIL {
            let id = self.vacant_leaf;
            self.vacant_leaf = self.leaves[id as usize].parent;
            self.leaves[id as usize] = blank;
            id
        } else {
            grow(&mut self.leaves);
            self.leaves.push(blank);
            u32::try_from(self.leaves.len() - 1).expect("fewer than 2^32 leaves")
        }
    }

    fn new_inner(&mut self) -> u32 {
        let blank = Inner {
            keys: [K::MAX; B],
            kids: [NIL; B],
            sum: [S::default(); B],
            n: 0,
            parent: NIL,
        };
        if self.vacant_inner != NIL {
            let id = self.vacant_inner;
            self.vacant_inner = self.inners[id as usize].parent;
            self.inners[id as usize] = blank;
            id
        } else {
            grow(&mut self.inners);
            self.inners.push(blank);
            u32::try_from(self.inners.len() - 1).expect("fewer than 2^32 inner nodes")
        }
    }

    fn drop_leaf(&mut self, id: u32) {
        self.leaves[id as usize].n = 0;
        self.leaves[id as usize].parent = self.vacant_leaf;
        self.vacant_leaf = id;
    }

    fn drop_inner(&mut self, id: u32) {
        self.inners[id as usize].n = 0;
        self.inners[id as usize].parent = self.vacant_inner;
        self.vacant_inner = id;
    }

    /// The parent of node `id` at `level` (0 = leaves).
    #[inline]
    fn parent_of(&self, id: u32, level: u32) -> u32 {
        if level == 0 {
            self.leaves[id as usize].parent
        } else {
            self.inners[id as usize].parent
        }
    }

    #[inline]
    fn set_parent(&mut self, id: u32, level: u32, parent: u32) {
        if level == 0 {
            self.leaves[id as usize].parent = parent;
        } else {
            self.inners[id as usize].parent = parent;
        }
    }

    /// Which child of `parent` node `id` is.
    #[inline]
    fn slot_in(&self, parent: u32, id: u32) -> usize {
        let p = &self.inners[parent as usize];
        p.kids[..p.n as usize]
            .iter()
            .position(|&k| k == id)
            .expect("a child is listed in its parent")
    }

    /// The smallest key under node `id` at `level`.
    fn min_key(&self, id: u32, level: u32) -> K {
        if level == 0 {
            self.leaves[id as usize].keys[0]
        } else {
            self.inners[id as usize].keys[0]
        }
    }

    /// The summary of everything under node `id` at `level`.
    fn summary_of(&self, id: u32, level: u32) -> S {
        if level == 0 {
            let l = &self.leaves[id as usize];
            let n = l.n as usize;
            S::of_entries(&l.keys[..n], &l.vals[..n])
        } else {
            let n = &self.inners[id as usize];
            n.sum[..n.n as usize]
                .iter()
                .fold(S::default(), |acc, &s| acc.join(s))
        }
    }

    /// The summary of the whole tree.
    pub(crate) fn summary(&self) -> S {
        if self.len == 0 {
            S::default()
        } else {
            self.summary_of(self.root, self.height)
        }
    }

    /// After node `id` (at `level`) changed its smallest key, tells its ancestors.
    fn fix_min(&mut self, mut id: u32, mut level: u32) {
        let min = self.min_key(id, level);
        loop {
            let p = self.parent_of(id, level);
            if p == NIL {
                return;
            }
            let slot = self.slot_in(p, id);
            self.inners[p as usize].keys[slot] = min;
            if slot != 0 {
                return;
            }
            id = p;
            level += 1;
        }
    }

    /// After one part under node `id` (at `level`) went from summary `old` to `new`
    /// (`Default` for an entry added or removed), tells its ancestors. A node is
    /// rescanned only when [`Summary::replace`] cannot tell its new summary.
    #[inline]
    fn changed(&mut self, mut id: u32, mut level: u32, mut old: S, mut new: S) {
        if old == new {
            return;
        }
        loop {
            let p = self.parent_of(id, level);
            if p == NIL {
                return;
            }
            let slot = self.slot_in(p, id);
            let cur = self.inners[p as usize].sum[slot];
            let m = S::replace(cur, old, new).unwrap_or_else(|| self.summary_of(id, level));
            if m == cur {
                return;
            }
            self.inners[p as usize].sum[slot] = m;
            (old, new) = (cur, m);
            id = p;
            level += 1;
        }
    }

    /// After node `id` (at `level`) changed in several ways, tells its ancestors.
    fn fix_sum(&mut self, mut id: u32, mut level: u32) {
        let mut m = self.summary_of(id, level);
        loop {
            let p = self.parent_of(id, level);
            if p == NIL {
                return;
            }
            let slot = self.slot_in(p, id);
            if self.inners[p as usize].sum[slot] == m {
                return;
            }
            self.inners[p as usize].sum[slot] = m;
            m = self.summary_of(p, level + 1);
            id = p;
            level += 1;
        }
    }

    // ---- search ----------------------------------------------------------------------

    /// The leaf whose key range holds `x`: at every inner node, the last child whose
    /// smallest key is at most `x` (the first child if none is).
    #[inline]
    fn leaf_for(&self, x: K) -> u32 {
        let mut id = self.root;
        for _ in 0..self.height {
            let n = &self.inners[id as usize];
            // Slot 0's key does not matter: its child takes everything below slot 1.
            let c = rank_le(&n.keys, x).clamp(1, n.n as usize) - 1;
            id = n.kids[c];
        }
        id
    }

    #[inline]
    pub(crate) fn get(&self, pos: Pos) -> (K, V) {
        let l = &self.leaves[pos.leaf as usize];
        (l.keys[pos.slot as usize], l.vals[pos.slot as usize])
    }

    pub(crate) fn first(&self) -> Option<Pos> {
        (self.len > 0).then_some(Pos {
            leaf: self.first_leaf,
            slot: 0,
        })
    }

    pub(crate) fn last(&self) -> Option<Pos> {
        (self.len > 0).then(|| Pos {
            leaf: self.last_leaf,
            slot: self.leaves[self.last_leaf as usize].n - 1,
        })
    }

    #[inline]
    pub(crate) fn next(&self, pos: Pos) -> Option<Pos> {
        let l = &self.leaves[pos.leaf as usize];
        if pos.slot + 1 < l.n {
            return Some(Pos {
                leaf: pos.leaf,
                slot: pos.slot + 1,
            });
        }
        (l.next != NIL).then_some(Pos {
            leaf: l.next,
            slot: 0,
        })
    }

    #[inline]
    pub(crate) fn prev(&self, pos: Pos) -> Option<Pos> {
        if pos.slot > 0 {
            return Some(Pos {
                leaf: pos.leaf,
                slot: pos.slot - 1,
            });
        }
        let p = self.leaves[pos.leaf as usize].prev;
        (p != NIL).then(|| Pos {
            leaf: p,
            slot: self.leaves[p as usize].n - 1,
        })
    }

    /// The entry with the greatest key at most `x`.
    #[inline(always)]
    pub(crate) fn floor(&self, x: K) -> Option<Pos> {
        Pos::from_word(self.floor_word(x))
    }

    /// [`floor`](Self::floor), its result as one word (see [`Pos::to_word`]).
    #[inline(never)]
    fn floor_word(&self, x: K) -> u64 {
        Pos::to_word(self.floor_in(x))
    }

    #[inline(always)]
    fn floor_in(&self, x: K) -> Option<Pos> {
        if self.len == 0 {
            return None;
        }
        let leaf = self.leaf_for(x);
        let l = &self.leaves[leaf as usize];
        let c = rank_le(&l.keys, x).min(l.n as usize) as u32;
        if c > 0 {
            Some(Pos { leaf, slot: c - 1 })
        } else {
            self.prev(Pos { leaf, slot: 0 })
        }
    }

    /// The entry with the smallest key at least `x` (`strict`: greater than `x`).
    #[inline]
    pub(crate) fn ceil(&self, x: K, strict: bool) -> Option<Pos> {
        if self.len == 0 {
            return None;
        }
        let leaf = self.leaf_for(x);
        let l = &self.leaves[leaf as usize];
        let c = if strict {
            rank_le(&l.keys, x).min(l.n as usize)
        } else {
            rank_lt(&l.keys, x)
        };
        self.at_or_next(leaf, c as u32)
    }

    /// Slot `c` of `leaf`, or, when `c` is past its last entry, the next leaf's first.
    #[inline(always)]
    fn at_or_next(&self, leaf: u32, c: u32) -> Option<Pos> {
        let l = &self.leaves[leaf as usize];
        if c < l.n {
            Some(Pos { leaf, slot: c })
        } else {
            (l.next != NIL).then_some(Pos {
                leaf: l.next,
                slot: 0,
            })
        }
    }

    /// [`ceil`](Self::ceil) (not strict), looked for first where the directory says
    /// (see [`Directory`]): scattered lookups then cost one guess and its leaf, not
    /// a descent.
    #[inline(always)]
    pub(crate) fn ceil_near(&mut self, x: K) -> Option<Pos> {
        Pos::from_word(self.ceil_near_word(x))
    }

    /// [`ceil_near`](Self::ceil_near), its result as one word.
    #[inline(never)]
    fn ceil_near_word(&mut self, x: K) -> u64 {
        if self.len == 0 {
            return Pos::to_word(None);
        }
        let leaf = self.leaf_near(x);
        let c = rank_lt(&self.leaves[leaf as usize].keys, x);
        Pos::to_word(self.at_or_next(leaf, c as u32))
    }

    /// [`floor`](Self::floor), looked for first where the directory says, as
    /// [`ceil_near`](Self::ceil_near) is.
    #[inline(always)]
    pub(crate) fn floor_near(&mut self, x: K) -> Option<Pos> {
        Pos::from_word(self.floor_near_word(x))
    }

    /// [`floor_near`](Self::floor_near), its result as one word.
    #[inline(never)]
    fn floor_near_word(&mut self, x: K) -> u64 {
        if self.len == 0 {
            return Pos::to_word(None);
        }
        let leaf = self.leaf_near(x);
        let l = &self.leaves[leaf as usize];
        let c = rank_le(&l.keys, x).min(l.n as usize) as u32;
        Pos::to_word(if c > 0 {
            Some(Pos { leaf, slot: c - 1 })
        } else {
            self.prev(Pos { leaf, slot: 0 })
        })
    }

    /// The leaf [`leaf_for`](Self::leaf_for) finds (the last whose smallest key is at
    /// most `x`, or the first), by the directory's guess when the tree has two levels
    /// or more above its leaves. A guess is taken when it is a live leaf whose
    /// smallest key is at most `x` and the next leaf's is above it; otherwise it
    /// steps to a neighbour, at most twice, and then descends.
    #[inline(always)]
    fn leaf_near(&mut self, x: K) -> u32 {
        if self.height < 2 {
            // A descent is one or two nodes, no longer than a guess.
            return self.leaf_for(x);
        }
        let d = &self.dir.0;
        let off = x.word().wrapping_sub(d.base);
        if off < d.reach {
            let mut id = d.leaves[(off >> d.shift) as usize];
            for _ in 0..3 {
                let Some(l) = self.leaves.get(id as usize) else {
                    break;
                };
                let n = l.n as usize;
                if n == 0 {
                    break; // vacant
                }
                if x < l.keys[0] {
                    if l.prev == NIL {
                        return id;
                    }
                    id = l.prev;
                } else if x > l.keys[n - 1]
                    && l.next != NIL
                    && self.leaves[l.next as usize].keys[0] <= x
                {
                    id = l.next;
                } else {
                    return id;
                }
            }
        } else if x < self.leaves[self.first_leaf as usize].keys[0] {
            // Below every key (a pin of Allocated blocks below the free space, say).
            return self.first_leaf;
        } else if x >= self.leaves[self.last_leaf as usize].keys[0] {
            return self.last_leaf;
        }
        self.leaf_descending(x)
    }

    /// [`leaf_near`](Self::leaf_near) when the directory's guess failed: a descent,
    /// whose leaf the directory keeps for `x`'s bucket.
    #[cold]
    fn leaf_descending(&mut self, x: K) -> u32 {
        let want = Self::directory_size(self.len);
        let d = &mut self.dir.0;
        d.misses += 1;
        let have = d.leaves.len();
        if want > have || want * 4 < have || d.misses > have {
            self.direct(want);
        }
        let leaf = self.leaf_for(x);
        let d = &mut self.dir.0;
        let off = x.word().wrapping_sub(d.base);
        if off < d.reach {
            d.leaves[(off >> d.shift) as usize] = leaf;
        }
        leaf
    }

    /// Builds the directory afresh with `size` buckets over the tree's keys (the
    /// tree is not empty).
    fn direct(&mut self, size: usize) {
        let base = self.leaves[self.first_leaf as usize].keys[0].word();
        let last = &self.leaves[self.last_leaf as usize];
        let width = last.keys[last.n as usize - 1].word() - base;
        let span = 64 - width.leading_zeros();
        let shift = span.saturating_sub(size.trailing_zeros());
        let mut leaves = core::mem::take(&mut self.dir.0.leaves);
        leaves.clear();
        // Bucket b gets the last leaf whose smallest key's word is at most its first
        // word: `leaf_for`'s leaf for that word, so that a lookup in the bucket steps
        // forwards, if at all (for a two-word key it may step back within a word).
        let mut id = self.first_leaf;
        for b in 0..size as u64 {
            let first = base.saturating_add(b << shift);
            loop {
                let next = self.leaves[id as usize].next;
                if next != NIL && self.leaves[next as usize].keys[0].word() <= first {
                    id = next;
                } else {
                    break;
                }
            }
            leaves.push(id);
        }
        self.dir = Cache(Directory {
            leaves,
            base,
            shift,
            reach: u64::try_from((size as u128) << shift).unwrap_or(u64::MAX),
            misses: 0,
        });
    }

    /// The entry with key exactly `x`.
    #[inline]
    pub(crate) fn find(&self, x: K) -> Option<Pos> {
        self.floor(x).filter(|&p| self.get(p).0 == x)
    }

    /// The first entry at or after `x` that matches `entry`, where `sub` tells which
    /// summaries may hold a matching entry (it must hold for every summary that does).
    pub(crate) fn first_matching(
        &self,
        x: K,
        sub: impl Fn(&S) -> bool,
        entry: impl Fn(&K, &V) -> bool,
    ) -> Option<Pos> {
        self.matching(self.ceil(x, false)?, &sub, &entry, true)
    }

    /// The last entry at or before `x` that matches `entry`; `sub` as in
    /// [`first_matching`](Self::first_matching).
    ///
    /// One descent from the root answers most calls: it checks, on the way down, the
    /// summaries of the subtrees left of its path. Only when one of those may hold a
    /// match and the path's own leaf has none does it walk back up to find it.
    pub(crate) fn last_matching(
        &self,
        x: K,
        sub: impl Fn(&S) -> bool,
        entry: impl Fn(&K, &V) -> bool,
    ) -> Option<Pos> {
        if self.len == 0 {
            return None;
        }
        let mut id = self.root;
        let mut left_may_match = false;
        for _ in 0..self.height {
            let n = &self.inners[id as usize];
            let c = rank_le(&n.keys, x).clamp(1, n.n as usize) - 1;
            left_may_match |= n.sum[..c].iter().any(&sub);
            id = n.kids[c];
        }
        let l = &self.leaves[id as usize];
        let c = rank_le(&l.keys, x).min(l.n as usize);
        if let Some(slot) = (0..c).rev().find(|&i| entry(&l.keys[i], &l.vals[i])) {
            return Some(Pos {
                leaf: id,
                slot: slot as u32,
            });
        }
        if !left_may_match {
            return None;
        }
        self.matching(self.floor(x)?, &sub, &entry, false)
    }

    /// The nearest matching entry from `start` on, `forward` or backward: the rest of
    /// its leaf, then up until a sibling on that side may hold one, then down into it.
    fn matching(
        &self,
        start: Pos,
        sub: &impl Fn(&S) -> bool,
        entry: &impl Fn(&K, &V) -> bool,
        forward: bool,
    ) -> Option<Pos> {
        let l = &self.leaves[start.leaf as usize];
        let s = start.slot as usize;
        let (lo, hi) = if forward {
            (s, l.n as usize)
        } else {
            (0, s + 1)
        };
        if let Some(slot) = ordered(lo, hi, forward).find(|&i| entry(&l.keys[i], &l.vals[i])) {
            return Some(Pos {
                leaf: start.leaf,
                slot: slot as u32,
            });
        }
        let (mut id, mut level) = (start.leaf, 0);
        loop {
            let p = self.parent_of(id, level);
            if p == NIL {
                return None;
            }
            let slot = self.slot_in(p, id);
            let pn = &self.inners[p as usize];
            let (lo, hi) = if forward {
                (slot + 1, pn.n as usize)
            } else {
                (0, slot)
            };
            let found = ordered(lo, hi, forward)
                .filter(|&j| sub(&pn.sum[j]))
                .find_map(|j| self.descend_matching(pn.kids[j], level, sub, entry, forward));
            if found.is_some() {
                return found;
            }
            id = p;
            level += 1;
        }
    }

    /// The first (`leftmost`) or last matching entry under node `id` (at `level`).
    /// Exact summaries never backtrack; a `sub` that can say yes wrongly costs a
    /// detour, never a wrong answer.
    fn descend_matching(
        &self,
        id: u32,
        level: u32,
        sub: &impl Fn(&S) -> bool,
        entry: &impl Fn(&K, &V) -> bool,
        leftmost: bool,
    ) -> Option<Pos> {
        if level == 0 {
            let l = &self.leaves[id as usize];
            return ordered(0, l.n as usize, leftmost)
                .find(|&i| entry(&l.keys[i], &l.vals[i]))
                .map(|slot| Pos {
                    leaf: id,
                    slot: slot as u32,
                });
        }
        let n = &self.inners[id as usize];
        ordered(0, n.n as usize, leftmost)
            .filter(|&j| sub(&n.sum[j]))
            .find_map(|j| self.descend_matching(n.kids[j], level - 1, sub, entry, leftmost))
    }

    // ---- ordered folds ---------------------------------------------------------------

    /// The fold of every entry with a key at most `x`, and the first key above `x`:
    /// one descent (what [`walk_with`](Self::walk_with)`(x, x, ..)` folds, without visits).
    ///
    /// Below the root, each node's whole fold is known from its parent, so at each level
    /// the descent folds the shorter side of its path: the children (or entries) left of
    /// it added, or those from it on taken away.
    #[inline]
    pub(crate) fn prefix<A: Copy, F: Fold<K, V, S, A> + Unfold<K, V, S, A>>(
        &self,
        x: K,
        init: A,
        fold: &F,
    ) -> (A, Option<K>) {
        if self.len == 0 {
            return (init, None);
        }
        let mut acc = init;
        // The fold of everything under `id`, once known (it is not for the root).
        let mut whole: Option<S> = None;
        let mut id = self.root;
        for _ in 0..self.height {
            let n = &self.inners[id as usize];
            let len = n.n as usize;
            let c = scan_le(&n.keys, x).clamp(1, len) - 1;
            match whole {
                Some(w) if 2 * c > len => {
                    acc = fold.subtree(acc, &w);
                    for s in &n.sum[c..len] {
                        acc = fold.less_subtree(acc, s);
                    }
                }
                _ => {
                    for s in &n.sum[..c] {
                        acc = fold.subtree(acc, s);
                    }
                }
            }
            whole = Some(n.sum[c]);
            id = n.kids[c];
        }
        let l = &self.leaves[id as usize];
        let n = l.n as usize;
        let r = scan_le(&l.keys, x).min(n);
        match whole {
            Some(w) if 2 * r > n => {
                acc = fold.subtree(acc, &w);
                for i in r..n {
                    acc = fold.less_entry(acc, &l.keys[i], &l.vals[i]);
                }
            }
            _ => {
                for i in 0..r {
                    acc = fold.entry(acc, &l.keys[i], &l.vals[i]);
                }
            }
        }
        let above = if r < n {
            Some(l.keys[r])
        } else if l.next != NIL {
            Some(self.leaves[l.next as usize].keys[0])
        } else {
            None
        };
        (acc, above)
    }

    /// Walks the entries in key order, carrying `acc`, the fold of every entry before.
    ///
    /// - Entries with keys up to `lo` are folded without a visit.
    /// - Each entry with a key in `(lo, hi)` is then visited as `visit(acc, key, value)`,
    ///   unless it lies in a subtree wholly inside `(lo, hi)` that `skip(acc, summary)`
    ///   lets pass: that subtree is folded by its summary alone.
    /// - The walk ends at the first key at or past `hi`, or when `visit` says `false`.
    ///
    /// Returns the fold of every entry before where it ended. The cost is one descent
    /// plus O(log n) per visited entry: `skip` decides how much is passed over.
    pub(crate) fn walk_with<A: Copy>(
        &self,
        lo: K,
        hi: K,
        init: A,
        fold: &impl Fold<K, V, S, A>,
        visit: &mut impl FnMut(A, K, V) -> bool,
    ) -> A {
        let mut acc = init;
        if self.len > 0 {
            self.walk_node(self.root, self.height, None, lo, hi, &mut acc, fold, visit);
        }
        acc
    }

    /// [`walk_with`](Self::walk_with) under node `id` (at `level`), whose keys are all
    /// below `upper` when it is known; `false` once the walk has ended.
    #[allow(clippy::too_many_arguments)]
    fn walk_node<A: Copy>(
        &self,
        id: u32,
        level: u32,
        upper: Option<K>,
        lo: K,
        hi: K,
        acc: &mut A,
        fold: &impl Fold<K, V, S, A>,
        visit: &mut impl FnMut(A, K, V) -> bool,
    ) -> bool {
        if level == 0 {
            let l = &self.leaves[id as usize];
            for i in 0..l.n as usize {
                let (k, v) = (l.keys[i], l.vals[i]);
                if k > lo && (k >= hi || !visit(*acc, k, v)) {
                    return false;
                }
                *acc = fold.entry(*acc, &k, &v);
            }
            return true;
        }
        let n = &self.inners[id as usize];
        for j in 0..n.n as usize {
            if n.keys[j] > lo && n.keys[j] >= hi {
                return false;
            }
            let up = if j + 1 < n.n as usize {
                Some(n.keys[j + 1])
            } else {
                upper
            };
            // Every key under child j is below `up`.
            let before = up.is_some_and(|u| u <= lo);
            let inside = n.keys[j] > lo && up.is_some_and(|u| u <= hi);
            if before || (inside && fold.skip(*acc, &n.sum[j])) {
                *acc = fold.subtree(*acc, &n.sum[j]);
            } else if !self.walk_node(n.kids[j], level - 1, up, lo, hi, acc, fold, visit) {
                return false;
            }
        }
        true
    }

    // ---- changes ---------------------------------------------------------------------

    /// Rewrites the entry at `pos`. The new key must keep the order (lie strictly
    /// between its neighbours' keys).
    pub(crate) fn set(&mut self, pos: Pos, key: K, val: V) {
        debug_assert!(self.prev(pos).is_none_or(|p| self.get(p).0 < key));
        debug_assert!(self.next(pos).is_none_or(|p| key < self.get(p).0));
        let l = &mut self.leaves[pos.leaf as usize];
        let old_key = l.keys[pos.slot as usize];
        let old = S::of(&old_key, &l.vals[pos.slot as usize]);
        l.keys[pos.slot as usize] = key;
        l.vals[pos.slot as usize] = val;
        if pos.slot == 0 && old_key != key {
            self.fix_min(pos.leaf, 0);
        }
        self.changed(pos.leaf, 0, old, S::of(&key, &val));
    }

    /// Adds an entry whose key is not in the tree.
    pub(crate) fn insert(&mut self, key: K, val: V) -> Pos {
        if self.len == 0 {
            if self.root == NIL {
                let leaf = self.new_leaf();
                self.root = leaf;
                self.first_leaf = leaf;
                self.last_leaf = leaf;
                self.height = 0;
            }
            let l = &mut self.leaves[self.root as usize];
            l.keys[0] = key;
            l.vals[0] = val;
            l.n = 1;
            self.len = 1;
            return Pos {
                leaf: self.root,
                slot: 0,
            };
        }
        let leaf = self.leaf_for(key);
        let at = rank_lt(&self.leaves[leaf as usize].keys, key);
        self.insert_in(leaf, at, key, val)
    }

    /// [`insert`](Self::insert), given `below`: the position of the entry with the
    /// greatest key below `key` (from a lookup just made), or `None` when no key is
    /// below it. It saves the descent.
    pub(crate) fn insert_after(&mut self, below: Option<Pos>, key: K, val: V) -> Pos {
        match below {
            Some(p) => {
                debug_assert!(self.get(p).0 < key);
                debug_assert!(self.next(p).is_none_or(|q| key < self.get(q).0));
                self.insert_in(p.leaf, p.slot as usize + 1, key, val)
            }
            None => self.insert(key, val),
        }
    }

    /// Whether `pos` is a live entry with key `x` (for checking a remembered place).
    pub(crate) fn holds(&self, pos: Pos, x: K) -> bool {
        self.leaves
            .get(pos.leaf as usize)
            .is_some_and(|l| pos.slot < l.n && l.keys[pos.slot as usize] == x)
    }

    /// The entry with key exactly `x`, looked for first in leaf `hint` and its two
    /// neighbours (where a split, a merge or a borrow moves an entry), then by a
    /// descent. A stale hint costs a few compares; any hint is safe, since a vacant
    /// leaf holds no entries and a key is in one leaf only.
    #[inline]
    pub(crate) fn find_near(&self, hint: u32, x: K) -> Option<Pos> {
        let look = |leaf: u32| -> Option<Pos> {
            let l = self.leaves.get(leaf as usize)?;
            let slot = rank_lt(&l.keys, x);
            (slot < l.n as usize && l.keys[slot] == x).then_some(Pos {
                leaf,
                slot: slot as u32,
            })
        };
        look(hint)
            .or_else(|| {
                let l = self.leaves.get(hint as usize)?;
                look(l.next).or_else(|| look(l.prev))
            })
            .or_else(|| self.find(x))
    }

    /// Puts `key` at slot `at` of `leaf`, where it keeps the order.
    fn insert_in(&mut self, leaf: u32, at: usize, key: K, val: V) -> Pos {
        let l = &mut self.leaves[leaf as usize];
        let n = l.n as usize;
        debug_assert!(at == n || l.keys[at] != key, "inserting a key twice");
        if n < B {
            if at < n {
                l.keys.copy_within(at..n, at + 1);
                l.vals.copy_within(at..n, at + 1);
            }
            l.keys[at] = key;
            l.vals[at] = val;
            l.n += 1;
            self.len += 1;
            if at == 0 {
                self.fix_min(leaf, 0);
            }
            self.changed(leaf, 0, S::default(), S::of(&key, &val));
            return Pos {
                leaf,
                slot: at as u32,
            };
        }
        // Full: split, then insert into the part it belongs to. In halves, but for an
        // entry past the leaf's last (or before its first): then the leaf keeps (or
        // gives away) all it can while both parts hold `MIN`, so that entries coming
        // in order (a space freed or pinned from low to high addresses) fill leaves
        // to 10 of 16, not 8.
        let right = self.new_leaf();
        let half = match at {
            B => B + 1 - MIN,
            0 => MIN - 1,
            _ => B / 2,
        };
        let (keys, vals, next) = {
            let l = &self.leaves[leaf as usize];
            (l.keys, l.vals, l.next)
        };
        {
            let r = &mut self.leaves[right as usize];
            r.keys[..B - half].copy_from_slice(&keys[half..]);
            r.vals[..B - half].copy_from_slice(&vals[half..]);
            r.n = (B - half) as u32;
            r.prev = leaf;
            r.next = next;
        }
        self.leaves[leaf as usize].n = half as u32;
        self.leaves[leaf as usize].keys[half..].fill(K::MAX);
        self.leaves[leaf as usize].next = right;
        if next != NIL {
            self.leaves[next as usize].prev = right;
        } else {
            self.last_leaf = right;
        }
        let (target, at) = if at <= half {
            (leaf, at)
        } else {
            (right, at - half)
        };
        {
            let t = &mut self.leaves[target as usize];
            let n = t.n as usize;
            t.keys.copy_within(at..n, at + 1);
            t.vals.copy_within(at..n, at + 1);
            t.keys[at] = key;
            t.vals[at] = val;
            t.n += 1;
        }
        self.len += 1;
        if target == leaf && at == 0 {
            self.fix_min(leaf, 0);
        }
        self.attach_sibling(leaf, right, 0);
        // A split sets its parents' summaries directly, so the early stop of
        // `fix_sum` would leave their ancestors stale: recompute the whole way up,
        // once per half.
        self.fix_sum_all(leaf, 0);
        self.fix_sum_all(right, 0);
        Pos {
            leaf: target,
            slot: at as u32,
        }
    }

    /// As [`fix_sum`](Self::fix_sum), without stopping early.
    fn fix_sum_all(&mut self, mut id: u32, mut level: u32) {
        loop {
            let p = self.parent_of(id, level);
            if p == NIL {
                return;
            }
            let slot = self.slot_in(p, id);
            self.inners[p as usize].sum[slot] = self.summary_of(id, level);
            id = p;
            level += 1;
        }
    }

    /// Puts `right`, just split off `left` (both at `level`), into `left`'s parent,
    /// splitting upwards as needed.
    fn attach_sibling(&mut self, left: u32, right: u32, level: u32) {
        let right_min = self.min_key(right, level);
        let right_max = self.summary_of(right, level);
        let left_max = self.summary_of(left, level);
        let p = self.parent_of(left, level);
        if p == NIL {
            let root = self.new_inner();
            let left_min = self.min_key(left, level);
            let r = &mut self.inners[root as usize];
            r.keys[0] = left_min;
            r.keys[1] = right_min;
            r.kids[0] = left;
            r.kids[1] = right;
            r.sum[0] = left_max;
            r.sum[1] = right_max;
            r.n = 2;
            self.set_parent(left, level, root);
            self.set_parent(right, level, root);
            self.root = root;
            self.height += 1;
            return;
        }
        let slot = self.slot_in(p, left);
        let pn = &mut self.inners[p as usize];
        pn.sum[slot] = left_max;
        let n = pn.n as usize;
        let at = slot + 1;
        if n < B {
            pn.keys.copy_within(at..n, at + 1);
            pn.kids.copy_within(at..n, at + 1);
            pn.sum.copy_within(at..n, at + 1);
            pn.keys[at] = right_min;
            pn.kids[at] = right;
            pn.sum[at] = right_max;
            pn.n += 1;
            self.set_parent(right, level, p);
            return;
        }
        // The parent is full: split it, then place `right` in the half it belongs to.
        let sib = self.new_inner();
        let half = B / 2;
        let (keys, kids, sum) = {
            let pn = &self.inners[p as usize];
            (pn.keys, pn.kids, pn.sum)
        };
        {
            let s = &mut self.inners[sib as usize];
            s.keys[..B - half].copy_from_slice(&keys[half..]);
            s.kids[..B - half].copy_from_slice(&kids[half..]);
            s.sum[..B - half].copy_from_slice(&sum[half..]);
            s.n = (B - half) as u32;
        }
        self.inners[p as usize].n = half as u32;
        self.inners[p as usize].keys[half..].fill(K::MAX);
        for j in 0..B - half {
            let kid = self.inners[sib as usize].kids[j];
            self.set_parent(kid, level, sib);
        }
        let (target, at) = if at <= half {
            (p, at)
        } else {
            (sib, at - half)
        };
        {
            let t = &mut self.inners[target as usize];
            let n = t.n as usize;
            t.keys.copy_within(at..n, at + 1);
            t.kids.copy_within(at..n, at + 1);
            t.sum.copy_within(at..n, at + 1);
            t.keys[at] = right_min;
            t.kids[at] = right;
            t.sum[at] = right_max;
            t.n += 1;
        }
        self.set_parent(right, level, target);
        self.attach_sibling(p, sib, level + 1);
    }

    /// Removes the entry at `pos`.
    pub(crate) fn remove(&mut self, pos: Pos) {
        let leaf = pos.leaf;
        let at = pos.slot as usize;
        let l = &mut self.leaves[leaf as usize];
        let n = l.n as usize;
        debug_assert!(at < n);
        let removed = S::of(&l.keys[at], &l.vals[at]);
        if at + 1 < n {
            l.keys.copy_within(at + 1..n, at);
            l.vals.copy_within(at + 1..n, at);
        }
        l.keys[n - 1] = K::MAX;
        l.n -= 1;
        self.len -= 1;
        let left_n = l.n as usize;
        if self.len == 0 {
            // The tree is now one empty root leaf.
            debug_assert_eq!(self.height, 0);
            return;
        }
        if at == 0 {
            self.fix_min(leaf, 0);
        }
        self.changed(leaf, 0, removed, S::default());
        if left_n < MIN && self.height > 0 {
            self.rebalance(leaf, 0);
        }
    }

    /// Node `id` at `level` (not the root) fell below `MIN`: borrow from a sibling or
    /// merge with one, and carry on upwards.
    fn rebalance(&mut self, id: u32, level: u32) {
        let p = self.parent_of(id, level);
        debug_assert_ne!(p, NIL);
        let slot = self.slot_in(p, id);
        let pn = self.inners[p as usize].n as usize;
        let count = |t: &Self, x: u32| {
            if level == 0 {
                t.leaves[x as usize].n as usize
            } else {
                t.inners[x as usize].n as usize
            }
        };
        // Nodes shrink one entry at a time, so this one holds exactly `MIN - 1` (never
        // none, so it keeps a smallest key throughout).
        debug_assert_eq!(count(self, id), MIN - 1);
        let left = (slot > 0).then(|| self.inners[p as usize].kids[slot - 1]);
        let right = (slot + 1 < pn).then(|| self.inners[p as usize].kids[slot + 1]);
        if let Some(l) = left.filter(|&l| count(self, l) > MIN) {
            self.shift_right(l, id, level);
            self.refresh_slot(p, slot - 1, level);
            self.refresh_slot(p, slot, level);
            return;
        }
        if let Some(r) = right.filter(|&r| count(self, r) > MIN) {
            self.shift_left(id, r, level);
            self.refresh_slot(p, slot, level);
            self.refresh_slot(p, slot + 1, level);
            return;
        }
        // Merge with a sibling: the right one of the pair goes.
        let (keep, gone, gone_slot) = match (left, right) {
            (Some(l), _) => (l, id, slot),
            (None, Some(r)) => (id, r, slot + 1),
            (None, None) => unreachable!("a non-root node has a sibling"),
        };
        self.merge_into(keep, gone, level);
        let pn = &mut self.inners[p as usize];
        let n = pn.n as usize;
        pn.keys.copy_within(gone_slot + 1..n, gone_slot);
        pn.kids.copy_within(gone_slot + 1..n, gone_slot);
        pn.sum.copy_within(gone_slot + 1..n, gone_slot);
        pn.keys[n - 1] = K::MAX;
        pn.n -= 1;
        let keep_slot = gone_slot - 1;
        self.refresh_slot(p, keep_slot, level);
        self.fix_sum(p, level + 1);
        let p_n = self.inners[p as usize].n as usize;
        if p == self.root {
            if p_n == 1 {
                // A root with one child is no root: the child is.
                let only = self.inners[p as usize].kids[0];
                self.set_parent(only, level, NIL);
                self.drop_inner(p);
                self.root = only;
                self.height -= 1;
            }
        } else if p_n < MIN {
            self.rebalance(p, level + 1);
        }
    }

    /// Recomputes `p`'s key and summary for its child in `slot` (at `level`).
    fn refresh_slot(&mut self, p: u32, slot: usize, level: u32) {
        let kid = self.inners[p as usize].kids[slot];
        let min = self.min_key(kid, level);
        let sum = self.summary_of(kid, level);
        let pn = &mut self.inners[p as usize];
        pn.keys[slot] = min;
        pn.sum[slot] = sum;
    }

    /// Moves the last entry (child) of `from` to the front of `to`, its right sibling.
    fn shift_right(&mut self, from: u32, to: u32, level: u32) {
        if level == 0 {
            let f = &mut self.leaves[from as usize];
            f.n -= 1;
            let (k, v) = (f.keys[f.n as usize], f.vals[f.n as usize]);
            f.keys[f.n as usize] = K::MAX;
            let t = &mut self.leaves[to as usize];
            let n = t.n as usize;
            t.keys.copy_within(0..n, 1);
            t.vals.copy_within(0..n, 1);
            t.keys[0] = k;
            t.vals[0] = v;
            t.n += 1;
        } else {
            let f = &mut self.inners[from as usize];
            f.n -= 1;
            let j = f.n as usize;
            let (k, kid, m) = (f.keys[j], f.kids[j], f.sum[j]);
            f.keys[j] = K::MAX;
            let t = &mut self.inners[to as usize];
            let n = t.n as usize;
            t.keys.copy_within(0..n, 1);
            t.kids.copy_within(0..n, 1);
            t.sum.copy_within(0..n, 1);
            t.keys[0] = k;
            t.kids[0] = kid;
            t.sum[0] = m;
            t.n += 1;
            self.set_parent(kid, level - 1, to);
        }
    }

    /// Moves the first entry (child) of `from` to the end of `to`, its left sibling.
    fn shift_left(&mut self, to: u32, from: u32, level: u32) {
        if level == 0 {
            let f = &mut self.leaves[from as usize];
            let (k, v) = (f.keys[0], f.vals[0]);
            let n = f.n as usize;
            f.keys.copy_within(1..n, 0);
            f.vals.copy_within(1..n, 0);
            f.keys[n - 1] = K::MAX;
            f.n -= 1;
            let t = &mut self.leaves[to as usize];
            t.keys[t.n as usize] = k;
            t.vals[t.n as usize] = v;
            t.n += 1;
        } else {
            let f = &mut self.inners[from as usize];
            let (k, kid, m) = (f.keys[0], f.kids[0], f.sum[0]);
            let n = f.n as usize;
            f.keys.copy_within(1..n, 0);
            f.kids.copy_within(1..n, 0);
            f.sum.copy_within(1..n, 0);
            f.keys[n - 1] = K::MAX;
            f.n -= 1;
            let t = &mut self.inners[to as usize];
            let j = t.n as usize;
            t.keys[j] = k;
            t.kids[j] = kid;
            t.sum[j] = m;
            t.n += 1;
            self.set_parent(kid, level - 1, to);
        }
    }

    /// Appends everything of `gone` to `keep` (its left sibling) and frees `gone`.
    fn merge_into(&mut self, keep: u32, gone: u32, level: u32) {
        if level == 0 {
            let g = self.leaves[gone as usize].clone();
            let k = &mut self.leaves[keep as usize];
            let (kn, gn) = (k.n as usize, g.n as usize);
            debug_assert!(kn + gn <= B);
            k.keys[kn..kn + gn].copy_from_slice(&g.keys[..gn]);
            k.vals[kn..kn + gn].copy_from_slice(&g.vals[..gn]);
            k.n += g.n;
            k.next = g.next;
            if g.next != NIL {
                self.leaves[g.next as usize].prev = keep;
            } else {
                self.last_leaf = keep;
            }
            self.drop_leaf(gone);
        } else {
            let g = self.inners[gone as usize].clone();
            let (kn, gn) = (self.inners[keep as usize].n as usize, g.n as usize);
            debug_assert!(kn + gn <= B);
            {
                let k = &mut self.inners[keep as usize];
                k.keys[kn..kn + gn].copy_from_slice(&g.keys[..gn]);
                k.kids[kn..kn + gn].copy_from_slice(&g.kids[..gn]);
                k.sum[kn..kn + gn].copy_from_slice(&g.sum[..gn]);
                k.n += g.n;
            }
            for &kid in &g.kids[..gn] {
                self.set_parent(kid, level - 1, keep);
            }
            self.drop_inner(gone);
        }
    }

    // ---- iteration and checks ----------------------------------------------------------

    /// Entries in key order.
    pub(crate) fn iter(&self) -> Iter<'_, K, V, S> {
        Iter {
            tree: self,
            pos: self.first(),
        }
    }

    /// Entries in reverse key order.
    #[cfg(test)]
    pub(crate) fn iter_rev(&self) -> impl Iterator<Item = (K, V)> + '_ {
        let mut pos = self.last();
        core::iter::from_fn(move || {
            let p = pos?;
            pos = self.prev(p);
            Some(self.get(p))
        })
    }

    /// Recomputes the shape: sorted keys, child minimum keys, summaries, parent and leaf links,
    /// fill, height and count.
    pub(crate) fn check(&self) -> Result<(), String> {
        if self.len == 0 {
            return Ok(());
        }
        let mut leaves = Vec::new();
        let (count, _, _) = self.check_node(self.root, self.height, NIL, &mut leaves)?;
        if count != self.len {
            return Err(format!(
                "tree counts {} entries, caches {}",
                count, self.len
            ));
        }
        if leaves.first() != Some(&self.first_leaf) || leaves.last() != Some(&self.last_leaf) {
            return Err("first or last leaf link is stale".into());
        }
        for w in leaves.windows(2) {
            let (a, b) = (w[0], w[1]);
            if self.leaves[a as usize].next != b || self.leaves[b as usize].prev != a {
                return Err(format!("leaf chain broken between {a} and {b}"));
            }
            let la = &self.leaves[a as usize];
            if la.keys[la.n as usize - 1] >= self.leaves[b as usize].keys[0] {
                return Err(format!("keys out of order across leaves {a} and {b}"));
            }
        }
        Ok(())
    }

    /// `(entries, smallest key, summary)` under `id`.
    fn check_node(
        &self,
        id: u32,
        level: u32,
        parent: u32,
        leaves: &mut Vec<u32>,
    ) -> Result<(usize, K, S), String> {
        let is_root = parent == NIL;
        if level == 0 {
            let l = &self.leaves[id as usize];
            let n = l.n as usize;
            if l.parent != parent {
                return Err(format!("leaf {id} has parent {} not {parent}", l.parent));
            }
            if n == 0 || n > B || (!is_root && n < MIN) {
                return Err(format!("leaf {id} holds {n} entries"));
            }
            if l.keys[..n].windows(2).any(|w| w[0] >= w[1]) {
                return Err(format!("leaf {id} is not sorted"));
            }
            if l.keys[n..].iter().any(|&k| k != K::MAX) {
                return Err(format!("leaf {id} has a stale key past its {n} entries"));
            }
            leaves.push(id);
            return Ok((n, l.keys[0], self.summary_of(id, 0)));
        }
        let nd = &self.inners[id as usize];
        let n = nd.n as usize;
        if nd.parent != parent {
            return Err(format!("inner {id} has parent {} not {parent}", nd.parent));
        }
        if n > B || n < if is_root { 2 } else { MIN } {
            return Err(format!("inner {id} has {n} children"));
        }
        if nd.keys[n..].iter().any(|&k| k != K::MAX) {
            return Err(format!("inner {id} has a stale key past its {n} children"));
        }
        let (mut total, mut first, mut all) = (0, K::default(), S::default());
        let mut prev_max: Option<K> = None;
        for j in 0..n {
            let (c, min, w) = self.check_node(nd.kids[j], level - 1, id, leaves)?;
            if nd.keys[j] != min {
                return Err(format!(
                    "inner {id} slot {j}: key {:?}, child min {min:?}",
                    nd.keys[j]
                ));
            }
            if nd.sum[j] != w {
                return Err(format!(
                    "inner {id} slot {j}: summary {:?}, child's {w:?}",
                    nd.sum[j]
                ));
            }
            if prev_max.is_some_and(|p| p >= min) {
                return Err(format!("inner {id}: children out of order at slot {j}"));
            }
            prev_max = Some(min);
            if j == 0 {
                first = min;
            }
            total += c;
            all = all.join(w);
        }
        Ok((total, first, all))
    }
}

/// Entries in key order, from a position.
#[derive(Debug)]
pub(crate) struct Iter<'a, K, V, S> {
    tree: &'a BPlus<K, V, S>,
    pos: Option<Pos>,
}

impl<K: Key, V: Value, S: Summary<K, V>> Iterator for Iter<'_, K, V, S> {
    type Item = (K, V);

    #[inline]
    fn next(&mut self) -> Option<(K, V)> {
        let p = self.pos?;
        self.pos = self.tree.next(p);
        Some(self.tree.get(p))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use alloc::collections::BTreeMap;

    /// The largest value below, as the address order keeps it.
    use crate::tree::MaxValue as Longest;

    use crate::splitmix::SplitMix;

    /// Random inserts, removes and in-place updates against a `BTreeMap`, checking
    /// every query and the whole shape as it goes.
    fn against_btreemap(seed: u64, keys: u64, steps: usize) {
        let mut rng = SplitMix::new(seed);
        let mut t: BPlus<u64, u64, Longest> = BPlus::new();
        let mut m: BTreeMap<u64, u64> = BTreeMap::new();
        for step in 0..steps {
            let k = rng.below(keys);
            match rng.below(4) {
                0 | 1 => {
                    if let alloc::collections::btree_map::Entry::Vacant(e) = m.entry(k) {
                        let v = rng.below(100);
                        e.insert(v);
                        t.insert(k, v);
                    }
                }
                2 => {
                    if m.remove(&k).is_some() {
                        t.remove(t.find(k).unwrap());
                    }
                }
                _ => {
                    if let Some(v) = m.get_mut(&k) {
                        *v = rng.below(100);
                        t.set(t.find(k).unwrap(), k, *v);
                    }
                }
            }
            if step % 7 == 0 || steps < 500 {
                t.check()
                    .unwrap_or_else(|e| panic!("seed {seed} step {step}: {e}"));
            }
            let x = rng.below(keys + 2);
            let w = rng.below(110);
            let near = t.ceil_near(x);
            let below = t.floor_near(x);
            let get = |p: Option<Pos>| p.map(|p| t.get(p));
            assert_eq!(
                get(near),
                m.range(x..).next().map(|(&k, &v)| (k, v)),
                "ceil_near({x})"
            );
            assert_eq!(
                get(below),
                m.range(..=x).next_back().map(|(&k, &v)| (k, v)),
                "floor_near({x})"
            );
            assert_eq!(
                get(t.floor(x)),
                m.range(..=x).next_back().map(|(&k, &v)| (k, v))
            );
            assert_eq!(
                get(t.ceil(x, false)),
                m.range(x..).next().map(|(&k, &v)| (k, v))
            );
            assert_eq!(
                get(t.ceil(x, true)),
                m.range(x + 1..).next().map(|(&k, &v)| (k, v))
            );
            let heavy = |s: &Longest| s.0 >= w;
            let entry = |_: &u64, v: &u64| *v >= w;
            assert_eq!(
                get(t.first_matching(x, heavy, entry)),
                m.range(x..).find(|&(_, &v)| v >= w).map(|(&k, &v)| (k, v)),
                "first_matching({x}, {w})"
            );
            assert_eq!(
                get(t.last_matching(x, heavy, entry)),
                m.range(..=x)
                    .rev()
                    .find(|&(_, &v)| v >= w)
                    .map(|(&k, &v)| (k, v)),
                "last_matching({x}, {w})"
            );
            // A summary that says yes too often (it allows every even value) costs a
            // detour, never a wrong answer.
            let even = |_: &u64, v: &u64| *v % 2 == 0 && *v >= w;
            assert_eq!(
                get(t.first_matching(x, heavy, even)),
                m.range(x..)
                    .find(|&(k, v)| even(k, v))
                    .map(|(&k, &v)| (k, v)),
                "first_matching({x}, even >= {w})"
            );
            assert_eq!(t.summary(), Longest(m.values().copied().max().unwrap_or(0)));
            assert_eq!(t.len(), m.len());
        }
        assert!(t.iter().eq(m.iter().map(|(&k, &v)| (k, v))));
        assert!(t.iter_rev().eq(m.iter().rev().map(|(&k, &v)| (k, v))));
        // Empty it completely, then refill: nodes are recycled.
        let keys_now: Vec<u64> = m.keys().copied().collect();
        for k in keys_now {
            t.remove(t.find(k).unwrap());
            t.check().unwrap();
        }
        assert_eq!(t.len(), 0);
        assert!(t.first().is_none());
        t.insert(5, 5);
        t.check().unwrap();
        assert_eq!(t.iter().collect::<Vec<_>>(), [(5, 5)]);
    }

    #[test]
    fn matches_a_btreemap_small() {
        for seed in 0..40 {
            against_btreemap(seed, 40, 400);
        }
    }

    /// `ceil_near` and `floor_near` against a `BTreeMap` for keys anywhere in `u64` (the directory's
    /// buckets then reach its end), for keys crowded into a few buckets, and for a
    /// tree that grows and shrinks many times over (the directory is rebuilt).
    #[test]
    fn ceil_near_matches_a_btreemap_at_every_scale() {
        let mut rng = SplitMix::new(7);
        let cases = [
            (u64::MAX, 0),
            (1 << 12, u64::MAX - (1 << 12)),
            (1 << 40, 0),
            // A shared allocator's group: keys far from 0, in a narrow band.
            (1 << 20, 1 << 50),
        ];
        for (spread, base) in cases {
            let mut t: BPlus<u64, u64, ()> = BPlus::new();
            let mut m: BTreeMap<u64, u64> = BTreeMap::new();
            for round in 0..8u64 {
                let target = if round % 2 == 0 { 3_000 } else { 20 };
                // The band drifts upwards round by round where it has room (the
                // directory is built over where the keys were).
                let room = spread.checked_mul(3).and_then(|r| base.checked_add(r));
                let drift = if room.is_some() { spread / 4 } else { 0 };
                let base = base + round * drift;
                while m.len() != target {
                    let k = base.saturating_add(rng.below(spread));
                    if m.len() < target {
                        if m.insert(k, k).is_none() {
                            t.insert(k, k);
                        }
                    } else if let Some((&k, _)) = m.range(k..).next().or(m.iter().next()) {
                        m.remove(&k);
                        t.remove(t.find(k).unwrap());
                    }
                    let mut x = base.saturating_add(rng.below(spread));
                    if rng.below(8) == 0 {
                        // A key itself, or one either side of it.
                        let (&k, _) = m.range(x..).next().or(m.iter().next_back()).unwrap();
                        x = k.saturating_add(rng.below(3)).saturating_sub(1);
                    } else if rng.below(16) == 0 {
                        x = u64::MAX - rng.below(2);
                    }
                    let got = t.ceil_near(x).map(|p| t.get(p));
                    assert_eq!(got, m.range(x..).next().map(|(&k, &v)| (k, v)), "{x}");
                    let got = t.floor_near(x).map(|p| t.get(p));
                    let want = m.range(..=x).next_back().map(|(&k, &v)| (k, v));
                    assert_eq!(got, want, "floor {x}");
                }
                t.check().unwrap();
            }
        }
    }

    /// Lookups rebuild the directory (a cache) when it misses; the bytes the tree
    /// reports must not move with them, or a failing call that only looked would
    /// change `Stats::metadata_bytes`. The old count, of the directory's capacity,
    /// fails this.
    #[test]
    fn lookups_alone_leave_the_byte_count_alone() {
        let mut t: BPlus<u64, u64, ()> = BPlus::new();
        let mut rng = SplitMix::new(11);
        for k in 0..100u64 {
            t.insert(k * 1_000, k);
        }
        for _ in 0..1_000 {
            t.floor_near(rng.below(100_000)); // a directory for 100 entries
        }
        for k in 100..4_000u64 {
            t.insert(k * 1_000, k); // inserts leave the directory as it is
        }
        let bytes = t.capacity_bytes();
        for _ in 0..20_000 {
            let x = rng.below(4_000_000);
            t.floor_near(x);
            t.ceil_near(x);
            assert_eq!(t.capacity_bytes(), bytes, "a lookup changed the byte count");
        }
    }

    #[test]
    fn matches_a_btreemap_deep() {
        for seed in 0..4 {
            against_btreemap(seed, 5_000, 20_000);
        }
    }

    #[test]
    fn find_near_finds_each_key_whatever_the_hint() {
        let mut rng = SplitMix::new(5);
        let mut t: BPlus<u64, u64, ()> = BPlus::new();
        let mut hint = std::collections::BTreeMap::new();
        for round in 0..6_000 {
            let k = rng.below(3_000);
            if let Some(p) = t.find(k) {
                // Remove by the hint taken when the key went in, however stale.
                let h = hint.remove(&k).unwrap();
                let q = t.find_near(h, k).unwrap();
                assert_eq!(p, q, "round {round}: key {k}");
                t.remove(q);
            } else {
                let p = t.insert(k, k);
                assert_eq!(t.get(p), (k, k));
                hint.insert(k, p.leaf());
            }
        }
        t.check().unwrap();
        for (&k, &h) in &hint {
            assert_eq!(t.find_near(h, k), t.find(k));
            for wild in [0, 1, 7, 1_000_000, NIL] {
                assert_eq!(t.find_near(wild, k), t.find(k), "hint {wild}");
            }
            assert_eq!(t.find_near(h, k + 3_000), None);
        }
    }

    #[test]
    fn sequential_inserts_and_removes_keep_the_shape() {
        let mut t: BPlus<u128, (), ()> = BPlus::new();
        for k in 0..2_000u128 {
            t.insert(k, ());
        }
        t.check().unwrap();
        for k in (0..2_000u128).step_by(3) {
            t.remove(t.find(k).unwrap());
        }
        t.check().unwrap();
        for k in (0..2_000u128).rev() {
            if let Some(p) = t.find(k) {
                t.remove(p);
            }
        }
        t.check().unwrap();
        assert_eq!(t.len(), 0);
    }
}
