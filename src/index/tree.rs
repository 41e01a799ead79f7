//! An address-ordered treap of free extents, augmented with the longest extent in each
//! subtree, so that "the lowest (or highest) extent of at least `n` blocks at or after
//! (before) address `x`" is a single O(log n) descent.
//!
//! Nodes live in one arena (`Vec<Node>`) and link by `u32` index; vacated slots are
//! chained through `left` and reused, so the tree allocates only when it grows.
//!
//! Treap priorities come from a splitmix64 sequence whose seed the owner supplies
//! (random per allocator with `std`): the shape is independent of the keys and of the
//! order they arrive in, so the expected depth is O(log n) whatever the caller does.
//! Placements never depend on the shape, only on the set of extents.

use alloc::vec::Vec;

/// The "no node" link.
pub(crate) const NIL: u32 = u32::MAX;

#[derive(Clone, Copy, Debug)]
struct Node {
    start: u64,
    len: u64,
    /// The largest `len` in this node's subtree (this node included).
    max_len: u64,
    left: u32,
    right: u32,
    /// Max-heap priority.
    prio: u32,
}

#[derive(Clone, Debug)]
pub(crate) struct AddrTree {
    nodes: Vec<Node>,
    root: u32,
    /// Head of the vacant-slot chain (linked through `left`), or `NIL`.
    vacant: u32,
    /// Live nodes.
    count: usize,
    /// splitmix64 state for priorities.
    seed: u64,
}

impl AddrTree {
    pub(crate) const fn new(seed: u64) -> Self {
        AddrTree {
            nodes: Vec::new(),
            root: NIL,
            vacant: NIL,
            count: 0,
            seed,
        }
    }

    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.count
    }

    /// Bytes held by the arena, for metadata accounting.
    pub(crate) fn capacity_bytes(&self) -> usize {
        self.nodes.capacity() * core::mem::size_of::<Node>()
    }

    #[inline]
    fn max_of(&self, t: u32) -> u64 {
        if t == NIL {
            0
        } else {
            self.nodes[t as usize].max_len
        }
    }

    #[inline]
    fn pull(&mut self, t: u32) {
        let n = self.nodes[t as usize];
        let m = n.len.max(self.max_of(n.left)).max(self.max_of(n.right));
        self.nodes[t as usize].max_len = m;
    }

    fn next_prio(&mut self) -> u32 {
        self.seed = self.seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) as u32
    }

    fn new_node(&mut self, start: u64, len: u64) -> u32 {
        let node = Node {
            start,
            len,
            max_len: len,
            left: NIL,
            right: NIL,
            prio: self.next_prio(),
        };
        self.count += 1;
        if self.vacant != NIL {
            let t = self.vacant;
            self.vacant = self.nodes[t as usize].left;
            self.nodes[t as usize] = node;
            t
        } else {
            let t = u32::try_from(self.nodes.len()).expect("more than 2^32 free extents");
            assert!(t != NIL, "more than 2^32 - 1 free extents");
            self.nodes.push(node);
            t
        }
    }

    fn vacate(&mut self, t: u32) {
        self.count -= 1;
        self.nodes[t as usize].left = self.vacant;
        self.nodes[t as usize].len = 0;
        self.vacant = t;
    }

    fn rotate_right(&mut self, t: u32) -> u32 {
        let l = self.nodes[t as usize].left;
        self.nodes[t as usize].left = self.nodes[l as usize].right;
        self.nodes[l as usize].right = t;
        self.pull(t);
        self.pull(l);
        l
    }

    fn rotate_left(&mut self, t: u32) -> u32 {
        let r = self.nodes[t as usize].right;
        self.nodes[t as usize].right = self.nodes[r as usize].left;
        self.nodes[r as usize].left = t;
        self.pull(t);
        self.pull(r);
        r
    }

    /// Inserts a node for `[start, start + len)`. The caller guarantees no node has
    /// this start.
    pub(crate) fn insert(&mut self, start: u64, len: u64) {
        let n = self.new_node(start, len);
        self.root = self.insert_at(self.root, n);
    }

    fn insert_at(&mut self, t: u32, n: u32) -> u32 {
        if t == NIL {
            return n;
        }
        let key = self.nodes[n as usize].start;
        debug_assert_ne!(key, self.nodes[t as usize].start, "duplicate start {key}");
        if key < self.nodes[t as usize].start {
            let l = self.insert_at(self.nodes[t as usize].left, n);
            self.nodes[t as usize].left = l;
            if self.nodes[l as usize].prio > self.nodes[t as usize].prio {
                return self.rotate_right(t);
            }
        } else {
            let r = self.insert_at(self.nodes[t as usize].right, n);
            self.nodes[t as usize].right = r;
            if self.nodes[r as usize].prio > self.nodes[t as usize].prio {
                return self.rotate_left(t);
            }
        }
        self.pull(t);
        t
    }

    /// Removes the node whose start is `start`. The caller guarantees it exists.
    pub(crate) fn remove(&mut self, start: u64) {
        self.root = self.remove_at(self.root, start);
    }

    fn remove_at(&mut self, t: u32, key: u64) -> u32 {
        assert!(t != NIL, "removing absent free extent at {key}");
        let n = self.nodes[t as usize];
        if key < n.start {
            let l = self.remove_at(n.left, key);
            self.nodes[t as usize].left = l;
        } else if key > n.start {
            let r = self.remove_at(n.right, key);
            self.nodes[t as usize].right = r;
        } else {
            let m = self.merge(n.left, n.right);
            self.vacate(t);
            return m;
        }
        self.pull(t);
        t
    }

    fn merge(&mut self, a: u32, b: u32) -> u32 {
        if a == NIL {
            return b;
        }
        if b == NIL {
            return a;
        }
        if self.nodes[a as usize].prio > self.nodes[b as usize].prio {
            let r = self.merge(self.nodes[a as usize].right, b);
            self.nodes[a as usize].right = r;
            self.pull(a);
            a
        } else {
            let l = self.merge(a, self.nodes[b as usize].left);
            self.nodes[b as usize].left = l;
            self.pull(b);
            b
        }
    }

    /// Replaces the node at `old_start` by `[new_start, new_start + new_len)` in place.
    /// The caller guarantees the new key keeps the node's order among its neighbours
    /// (free extents never overlap, so growing or shrinking one keeps its place).
    pub(crate) fn reshape(&mut self, old_start: u64, new_start: u64, new_len: u64) {
        self.reshape_at(self.root, old_start, new_start, new_len);
    }

    fn reshape_at(&mut self, t: u32, key: u64, new_start: u64, new_len: u64) {
        assert!(t != NIL, "reshaping absent free extent at {key}");
        let n = self.nodes[t as usize];
        if key < n.start {
            self.reshape_at(n.left, key, new_start, new_len);
        } else if key > n.start {
            self.reshape_at(n.right, key, new_start, new_len);
        } else {
            let node = &mut self.nodes[t as usize];
            node.start = new_start;
            node.len = new_len;
        }
        self.pull(t);
    }

    #[inline]
    fn get(&self, t: u32) -> Option<(u64, u64)> {
        (t != NIL).then(|| {
            let n = &self.nodes[t as usize];
            (n.start, n.len)
        })
    }

    /// The extent with the greatest start `<= x`.
    pub(crate) fn floor(&self, x: u64) -> Option<(u64, u64)> {
        let mut t = self.root;
        let mut best = NIL;
        while t != NIL {
            let n = &self.nodes[t as usize];
            if n.start <= x {
                best = t;
                t = n.right;
            } else {
                t = n.left;
            }
        }
        self.get(best)
    }

    /// The extent with the smallest start `> x`.
    pub(crate) fn above(&self, x: u64) -> Option<(u64, u64)> {
        let mut t = self.root;
        let mut best = NIL;
        while t != NIL {
            let n = &self.nodes[t as usize];
            if n.start > x {
                best = t;
                t = n.left;
            } else {
                t = n.right;
            }
        }
        self.get(best)
    }

    /// The lowest extent with start `>= from` and at least `need` blocks.
    pub(crate) fn first_at_least(&self, from: u64, need: u64) -> Option<(u64, u64)> {
        self.get(self.first_at(self.root, from, need))
    }

    fn first_at(&self, t: u32, from: u64, need: u64) -> u32 {
        if t == NIL || self.nodes[t as usize].max_len < need {
            return NIL;
        }
        let n = &self.nodes[t as usize];
        if n.start >= from {
            let r = self.first_at(n.left, from, need);
            if r != NIL {
                return r;
            }
            if n.len >= need {
                return t;
            }
        }
        self.first_at(n.right, from, need)
    }

    /// The highest extent with start `<= upto` and at least `need` blocks.
    pub(crate) fn last_at_least(&self, upto: u64, need: u64) -> Option<(u64, u64)> {
        self.get(self.last_at(self.root, upto, need))
    }

    fn last_at(&self, t: u32, upto: u64, need: u64) -> u32 {
        if t == NIL || self.nodes[t as usize].max_len < need {
            return NIL;
        }
        let n = &self.nodes[t as usize];
        if n.start <= upto {
            let r = self.last_at(n.right, upto, need);
            if r != NIL {
                return r;
            }
            if n.len >= need {
                return t;
            }
        }
        self.last_at(n.left, upto, need)
    }

    /// Every extent in address order.
    pub(crate) fn iter(&self) -> Iter<'_> {
        let mut it = Iter {
            tree: self,
            stack: Vec::new(),
        };
        it.push_left(self.root);
        it
    }

    /// Checks ordering, the heap property and the `max_len` augmentation of every node,
    /// and that the arena's live count is right.
    pub(crate) fn check(&self) -> Result<(), alloc::string::String> {
        let mut seen = 0usize;
        self.check_at(self.root, None, None, &mut seen)?;
        if seen != self.count {
            return Err(alloc::format!(
                "tree holds {seen} nodes but counts {}",
                self.count
            ));
        }
        Ok(())
    }

    fn check_at(
        &self,
        t: u32,
        lo: Option<u64>,
        hi: Option<u64>,
        seen: &mut usize,
    ) -> Result<(), alloc::string::String> {
        if t == NIL {
            return Ok(());
        }
        *seen += 1;
        let n = &self.nodes[t as usize];
        if lo.is_some_and(|lo| n.start <= lo) || hi.is_some_and(|hi| n.start >= hi) {
            return Err(alloc::format!(
                "node at {} is out of address order",
                n.start
            ));
        }
        for child in [n.left, n.right] {
            if child != NIL && self.nodes[child as usize].prio > n.prio {
                return Err(alloc::format!("heap order broken below {}", n.start));
            }
        }
        let want = n.len.max(self.max_of(n.left)).max(self.max_of(n.right));
        if want != n.max_len {
            return Err(alloc::format!(
                "node at {} caches max_len {} but its subtree's is {want}",
                n.start,
                n.max_len
            ));
        }
        self.check_at(n.left, lo, Some(n.start), seen)?;
        self.check_at(n.right, Some(n.start), hi, seen)
    }
}

/// In-order iterator over `(start, len)`.
#[derive(Debug)]
pub(crate) struct Iter<'a> {
    tree: &'a AddrTree,
    stack: Vec<u32>,
}

impl Iter<'_> {
    fn push_left(&mut self, mut t: u32) {
        while t != NIL {
            self.stack.push(t);
            t = self.tree.nodes[t as usize].left;
        }
    }
}

impl Iterator for Iter<'_> {
    type Item = (u64, u64);

    fn next(&mut self) -> Option<(u64, u64)> {
        let t = self.stack.pop()?;
        let n = self.tree.nodes[t as usize];
        self.push_left(n.right);
        Some((n.start, n.len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn sample() -> AddrTree {
        let mut t = AddrTree::new(7);
        // Extents: [0,+2) [10,+8) [30,+1) [40,+5) [60,+20)
        for (s, l) in [(40, 5), (0, 2), (60, 20), (10, 8), (30, 1)] {
            t.insert(s, l);
        }
        t.check().unwrap();
        t
    }

    #[test]
    fn iterates_in_address_order() {
        let t = sample();
        let got: Vec<_> = t.iter().collect();
        assert_eq!(got, vec![(0, 2), (10, 8), (30, 1), (40, 5), (60, 20)]);
    }

    #[test]
    fn floor_and_above() {
        let t = sample();
        assert_eq!(t.floor(9), Some((0, 2)));
        assert_eq!(t.floor(10), Some((10, 8)));
        assert_eq!(t.above(10), Some((30, 1)));
        assert_eq!(t.above(60), None);
    }

    #[test]
    fn augmented_searches() {
        let t = sample();
        assert_eq!(t.first_at_least(0, 5), Some((10, 8)));
        assert_eq!(t.first_at_least(11, 5), Some((40, 5)));
        assert_eq!(t.first_at_least(41, 5), Some((60, 20)));
        assert_eq!(t.first_at_least(0, 21), None);
        assert_eq!(t.last_at_least(59, 5), Some((40, 5)));
        assert_eq!(t.last_at_least(39, 3), Some((10, 8)));
        assert_eq!(t.last_at_least(9, 3), None);
    }

    #[test]
    fn remove_reshape_and_reuse_keep_the_tree_sound() {
        let mut t = sample();
        t.remove(30);
        t.reshape(10, 12, 6);
        t.check().unwrap();
        t.insert(30, 3);
        t.check().unwrap();
        assert_eq!(t.len(), 5);
        assert_eq!(t.nodes.len(), 5, "the vacated slot was reused");
        let got: Vec<_> = t.iter().collect();
        assert_eq!(got, vec![(0, 2), (12, 6), (30, 3), (40, 5), (60, 20)]);
        assert_eq!(t.first_at_least(0, 6), Some((12, 6)));
    }

    #[test]
    fn sorted_inserts_stay_shallow() {
        let mut t = AddrTree::new(7);
        for i in 0..10_000u64 {
            t.insert(i * 2, 1);
        }
        t.check().unwrap();
        fn depth(t: &AddrTree, n: u32) -> usize {
            if n == NIL {
                0
            } else {
                let node = &t.nodes[n as usize];
                1 + depth(t, node.left).max(depth(t, node.right))
            }
        }
        assert!(depth(&t, t.root) < 60, "depth {}", depth(&t, t.root));
    }
}
