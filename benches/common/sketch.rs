//! A sketch, not a peer anyone can use: what exact best fit costs when it keeps a
//! record per allocation, as TLSF and offset-allocator do. It exists to measure the
//! bound that the issue-16 churn target runs into (BENCHMARKS.md, "Churn against
//! TLSF"), and is run only when `BENCH_PEERS` names it.
//!
//! Every extent, free or allocated, is a 32-byte node in one array, linked to its
//! neighbours in address order, so a free finds what it merges with through two
//! links and no search. Free nodes of each length up to [`EXACT`] are in a list, with
//! a bit per length that says whether the list is empty (the same best fit, and the
//! same list order, as pinalloc's fast form: both leave the same free extents behind);
//! longer ones are in a `BTreeSet` by `(length, start)`.
//!
//! Two ways to free:
//! - [`Sketch::free_by_start`] finds the node from the extent's first block through an
//!   open-addressing table of allocated starts (8-byte slots: node, home slot and a
//!   7-bit fingerprint; the key is checked against the node). This is the call
//!   pinalloc answers: a free names blocks, not a handle.
//! - [`Sketch::free_node`] takes the node, as TLSF's `dealloc` takes its region.
//!
//! What it leaves out is what the contract needs: it frees only whole allocations
//! (no truncate, no free spanning two allocations, nothing after a restore from a
//! free list), has no ordered index of free extents (no first fit, near-goal or exact
//! start), no pins, no Deferred blocks and no checks, and its metadata grows with the
//! allocations, not the free extents ([`Sketch::heap_bytes`]).

use std::collections::BTreeSet;

/// "No node".
const NIL: u32 = u32::MAX;
/// Lengths with a list of their own.
const EXACT: usize = 128;
/// An empty table slot.
const VACANT: u64 = u64::MAX;

/// One extent; `lprev`/`lnext` link a free node into the list of its length.
#[derive(Clone, Copy, Default)]
struct Node {
    start: u64,
    len: u64,
    prev: u32,
    next: u32,
    lprev: u32,
    lnext: u32,
}

/// The sketch allocator (see the module doc).
pub struct Sketch {
    nodes: Vec<Node>,
    /// Bit `id`: node `id` is free.
    free_bits: Vec<u64>,
    vacant: Vec<u32>,
    heads: [u32; EXACT],
    nonempty: u128,
    long: BTreeSet<(u64, u64, u32)>,
    /// Allocated starts: `fingerprint << 56 | home << 32 | node`, or [`VACANT`].
    slots: Vec<u64>,
    mask: usize,
    used: usize,
    /// Whether allocations are entered in `slots` (off for [`Sketch::free_node`]).
    by_start: bool,
}

/// Home slot and fingerprint of `k` in a table of `mask + 1` slots.
#[inline]
fn hash(k: u64, mask: usize) -> (usize, u64) {
    let p = k.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let bits = (mask + 1).trailing_zeros();
    ((p >> (64 - bits)) as usize, (p >> 8) & 0x7F)
}

impl Sketch {
    /// An allocator over `0..capacity`; `by_start` enters allocations in the table of
    /// starts, for [`free_by_start`](Self::free_by_start).
    pub fn new(capacity: u64, by_start: bool) -> Self {
        let mut s = Sketch {
            nodes: Vec::new(),
            free_bits: Vec::new(),
            vacant: Vec::new(),
            heads: [NIL; EXACT],
            nonempty: 0,
            long: BTreeSet::new(),
            slots: vec![VACANT; 1024],
            mask: 1023,
            used: 0,
            by_start,
        };
        let id = s.new_node(Node {
            start: 0,
            len: capacity,
            prev: NIL,
            next: NIL,
            lprev: NIL,
            lnext: NIL,
        });
        s.list_in(id);
        s
    }

    /// Heap bytes held, by capacity (the `BTreeSet` counted at 32 bytes an entry).
    pub fn heap_bytes(&self) -> u64 {
        (self.nodes.capacity() * size_of::<Node>()
            + self.free_bits.capacity() * 8
            + self.vacant.capacity() * 4
            + self.slots.capacity() * 8
            + self.long.len() * 32) as u64
    }

    /// Free nodes.
    pub fn free_extents(&self) -> u64 {
        self.free_bits
            .iter()
            .map(|w| u64::from(w.count_ones()))
            .sum()
    }

    fn new_node(&mut self, n: Node) -> u32 {
        if let Some(id) = self.vacant.pop() {
            self.nodes[id as usize] = n;
            id
        } else {
            self.nodes.push(n);
            if self.nodes.len() > self.free_bits.len() * 64 {
                self.free_bits.push(0);
            }
            u32::try_from(self.nodes.len() - 1).expect("fewer than 2^32 nodes")
        }
    }

    #[inline]
    fn is_free(&self, id: u32) -> bool {
        self.free_bits[id as usize / 64] >> (id % 64) & 1 != 0
    }

    #[inline]
    fn list_in(&mut self, id: u32) {
        self.free_bits[id as usize / 64] |= 1 << (id % 64);
        let n = self.nodes[id as usize];
        if n.len as usize <= EXACT {
            let i = n.len as usize - 1;
            let h = self.heads[i];
            let node = &mut self.nodes[id as usize];
            node.lprev = NIL;
            node.lnext = h;
            if h != NIL {
                self.nodes[h as usize].lprev = id;
            }
            self.heads[i] = id;
            self.nonempty |= 1 << i;
        } else {
            self.long.insert((n.len, n.start, id));
        }
    }

    #[inline]
    fn list_out(&mut self, id: u32) {
        self.free_bits[id as usize / 64] &= !(1 << (id % 64));
        let n = self.nodes[id as usize];
        if n.len as usize <= EXACT {
            if n.lprev != NIL {
                self.nodes[n.lprev as usize].lnext = n.lnext;
            } else {
                self.heads[n.len as usize - 1] = n.lnext;
                if n.lnext == NIL {
                    self.nonempty &= !(1 << (n.len - 1));
                }
            }
            if n.lnext != NIL {
                self.nodes[n.lnext as usize].lprev = n.lprev;
            }
        } else {
            self.long.remove(&(n.len, n.start, id));
        }
    }

    fn place(&mut self, k: u64, id: u32) {
        let (home, fp) = hash(k, self.mask);
        let mut i = home;
        while self.slots[i] != VACANT {
            i = (i + 1) & self.mask;
        }
        self.slots[i] = fp << 56 | (home as u64) << 32 | u64::from(id);
    }

    fn grow(&mut self) {
        let old = std::mem::take(&mut self.slots);
        self.slots = vec![VACANT; old.len() * 2];
        self.mask = self.slots.len() - 1;
        for w in old.into_iter().filter(|&w| w != VACANT) {
            let id = w as u32;
            self.place(self.nodes[id as usize].start, id);
        }
    }

    /// Removes start `k` from the table (backward-shift deletion): its node.
    #[inline]
    fn unplace(&mut self, k: u64) -> Option<u32> {
        let (home, fp) = hash(k, self.mask);
        let mut i = home;
        let id = loop {
            let w = self.slots[i];
            if w == VACANT {
                return None;
            }
            if w >> 56 == fp && self.nodes[w as u32 as usize].start == k {
                break w as u32;
            }
            i = (i + 1) & self.mask;
        };
        let mut hole = i;
        let mut j = (i + 1) & self.mask;
        while self.slots[j] != VACANT {
            let w = self.slots[j];
            let h = (w >> 32 & 0xFF_FFFF) as usize;
            if j.wrapping_sub(h) & self.mask >= j.wrapping_sub(hole) & self.mask {
                self.slots[hole] = w;
                hole = j;
            }
            j = (j + 1) & self.mask;
        }
        self.slots[hole] = VACANT;
        self.used -= 1;
        Some(id)
    }

    /// Best fit for `len` blocks: `(start, node)`.
    #[inline]
    pub fn alloc(&mut self, len: u64) -> Option<(u64, u32)> {
        let small = len as usize <= EXACT && self.nonempty >> (len - 1) != 0;
        let id = if small {
            let i = len as usize - 1 + (self.nonempty >> (len - 1)).trailing_zeros() as usize;
            self.heads[i]
        } else {
            self.long.range((len, 0, 0)..).next()?.2
        };
        let n = self.nodes[id as usize];
        self.list_out(id);
        let got = if n.len == len {
            id
        } else {
            // The allocated part becomes a new node before the rest.
            let a = self.new_node(Node {
                start: n.start,
                len,
                prev: n.prev,
                next: id,
                lprev: NIL,
                lnext: NIL,
            });
            if n.prev != NIL {
                self.nodes[n.prev as usize].next = a;
            }
            let rest = &mut self.nodes[id as usize];
            rest.prev = a;
            rest.start += len;
            rest.len -= len;
            self.list_in(id);
            a
        };
        if self.by_start {
            if (self.used + 1) * 2 > self.slots.len() {
                self.grow();
            }
            self.place(n.start, got);
            self.used += 1;
        }
        Some((n.start, got))
    }

    /// Frees the whole allocation that starts at `start` and is `len` long.
    ///
    /// # Panics
    ///
    /// If no allocation starts there, or it is not `len` long.
    #[inline]
    pub fn free_by_start(&mut self, start: u64, len: u64) {
        let id = self
            .unplace(start)
            .expect("sketch: no allocation starts there");
        self.free_node(id, len);
    }

    /// Frees node `id`, an allocation `len` long.
    ///
    /// # Panics
    ///
    /// If the node is not `len` long.
    #[inline]
    pub fn free_node(&mut self, id: u32, len: u64) {
        let n = self.nodes[id as usize];
        assert_eq!(n.len, len, "sketch: a whole allocation");
        let (mut start, mut len, mut prev, mut next) = (n.start, n.len, n.prev, n.next);
        if prev != NIL && self.is_free(prev) {
            self.list_out(prev);
            let p = self.nodes[prev as usize];
            start = p.start;
            len += p.len;
            self.vacant.push(prev);
            prev = p.prev;
            if prev != NIL {
                self.nodes[prev as usize].next = id;
            }
        }
        if next != NIL && self.is_free(next) {
            self.list_out(next);
            let q = self.nodes[next as usize];
            len += q.len;
            self.vacant.push(next);
            next = q.next;
            if next != NIL {
                self.nodes[next as usize].prev = id;
            }
        }
        self.nodes[id as usize] = Node {
            start,
            len,
            prev,
            next,
            lprev: NIL,
            lnext: NIL,
        };
        self.list_in(id);
    }
}
