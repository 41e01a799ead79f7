//! The free-space index: which blocks `allocate` may hand out.
//!
//! The rest of the core sees only [`FreeIndex`]; its interface is the seam behind which
//! the representation can change, and no call of it has to come before another. It
//! holds every Free, unpinned block as fully coalesced extents, in one of two forms:
//!
//! - **fast** (`hot.rs`), while every request has been unaligned best fit, an exact
//!   start or a range of lengths: extent records with intrusive lists per exact length,
//!   found by a bit scan, and a B+ tree by each extent's last block, which an
//!   allocation from an extent's start does not touch. Only the tree of the few long
//!   extents keeps a summary (the residues of their starts).
//! - **ordered** (`ordered.rs`, with `address.rs`, `size.rs`, `class.rs` and
//!   `aligned.rs`), which also answers first fit, near-goal and aligned requests in
//!   O(log n), at the price of keeping sorted classes and the longest extent under
//!   every subtree.
//!
//! An index starts fast and moves to the ordered form, once and for good, at the first
//! request that only the ordered form can place *and that will succeed*. The fast form
//! can tell: only extents shorter than the request plus its padding can fail it, and
//! for alignments up to 64 the residues of their starts decide it, O(align log n);
//! above 64 it looks at each of them, O(those extents), and remembers the failure
//! (`aligned::Fails`, inline, kept exact by every later change), so that a request
//! it rules out is refused in O(1) until an extent that could serve it appears. A
//! failed request therefore never moves the index to the ordered form, nor changes
//! the heap; the fast form that remembers failures is a form of its own
//! (`Form::Learned`), so that the plain fast form's changes pay nothing for the
//! counting. The move builds the ordered form from the extents in address order,
//! O(n log n), once.
//!
//! Best fit takes a shortest extent that holds the request in both forms. Among
//! extents of that length, the fast form takes the most recently changed one for
//! lengths up to 128 and the lowest in its long order (or its kept long extent, when
//! that is strictly shorter) above; the ordered form the lowest. The contract leaves
//! the choice open.

mod address;
pub(crate) mod aligned;
mod class;
mod hot;
mod ordered;
mod size;

use crate::Extent;
use hot::Hot;
use ordered::Ordered;

/// Lengths up to this many blocks each have an exact size class.
pub(crate) const EXACT_MAX: u64 = 128;

/// Number of buckets in the free-extent size histogram: bucket `i` counts extents of
/// `2^i ..= 2^(i+1) - 1` blocks.
///
/// ```
/// use pinalloc::{ExtentAllocator, HISTOGRAM_BUCKETS};
///
/// let s = ExtentAllocator::new(u64::MAX).stats();
/// assert_eq!(s.free_histogram.len(), HISTOGRAM_BUCKETS);
/// assert_eq!(s.free_histogram[HISTOGRAM_BUCKETS - 1], 1); // one extent of 2^64 - 1 blocks
/// ```
pub const HISTOGRAM_BUCKETS: usize = 64;

/// The lowest multiple of `align` (a power of two) that is `>= x`, if any.
#[inline]
pub(crate) fn align_up(x: u64, align: u64) -> Option<u64> {
    debug_assert!(align.is_power_of_two());
    x.checked_add(align - 1).map(|y| y & !(align - 1))
}

#[inline]
fn bucket(len: u64) -> usize {
    debug_assert!(len > 0);
    (63 - len.leading_zeros()) as usize
}

/// The lowest aligned start at which `need` blocks fit in the free extent
/// `[start, start + len)`.
#[inline]
pub(crate) fn fit(start: u64, len: u64, need: u64, align: u64) -> Option<u64> {
    let p = align_up(start, align)?;
    let pad = p - start;
    (pad <= len && len - pad >= need).then_some(p)
}

/// How many aligned blocks the extent `[start, start + len)` gives: those from its first
/// multiple of `align` to its end (a view calls this the extent's room).
#[inline]
pub(crate) fn placeable(start: u64, len: u64, align: u64) -> u64 {
    align_up(start, align).map_or(0, |p| (start + len).saturating_sub(p))
}

/// What both forms check of their extents, given in address order: each non-empty,
/// inside the space, apart from the last and not touching it; and the cached block
/// count and histogram equal a recount. Reports `(invariant number, detail)`.
fn check_extents(
    extents: impl Iterator<Item = (u64, u64)>,
    capacity: u64,
    count_free_blocks: u64,
    histogram: &[u64; HISTOGRAM_BUCKETS],
) -> Result<(), (u8, alloc::string::String)> {
    use alloc::format;
    let mut blocks = 0u64;
    let mut recount = [0u64; HISTOGRAM_BUCKETS];
    let mut prev_end: Option<u64> = None;
    for (s, l) in extents {
        if l == 0 {
            return Err((2, format!("empty free extent at {s}")));
        }
        let end = s
            .checked_add(l)
            .filter(|&e| e <= capacity)
            .ok_or_else(|| (2, format!("free extent [{s}, +{l}) leaves the space")))?;
        if let Some(p) = prev_end {
            if s < p {
                return Err((2, format!("free extents overlap at {s}")));
            }
            if s == p {
                return Err((4, format!("free extents touch at {s}: not coalesced")));
            }
        }
        prev_end = Some(end);
        blocks += l;
        recount[bucket(l)] += 1;
    }
    if blocks != count_free_blocks {
        return Err((
            3,
            format!("free blocks cached {count_free_blocks} but counted {blocks}"),
        ));
    }
    if recount != *histogram {
        return Err((3, "free-extent histogram differs from its recount".into()));
    }
    Ok(())
}

/// The free index: see the module docs.
#[derive(Clone, Debug)]
pub(crate) struct FreeIndex {
    form: Form,
}

/// One per allocator and never moved on a hot path, so the fast form stays inline
/// (no pointer to chase) although it is the larger.
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)]
enum Form {
    Hot(Hot),
    /// The fast form once a request aligned above 64 blocks has failed: what it
    /// learned is kept exact by every change (see [`aligned::Fails`]). A form of its
    /// own, so that the fast form's changes pay nothing for it until then.
    Learned(Hot),
    Ordered(Ordered),
}

/// The same form with equal contents, node by node (each form leaves out its caches:
/// probes, remembered choices, alignment views, what failures learned). The form
/// counts: a refused request must not move the index to the ordered form.
impl PartialEq for FreeIndex {
    fn eq(&self, o: &Self) -> bool {
        match (&self.form, &o.form) {
            (Form::Hot(a) | Form::Learned(a), Form::Hot(b) | Form::Learned(b)) => a == b,
            (Form::Ordered(a), Form::Ordered(b)) => a == b,
            _ => false,
        }
    }
}

/// Runs `$body` with `$ix` bound to the index's current form, whichever it is.
macro_rules! either {
    ($self:expr, $ix:ident => $body:expr) => {
        match $self {
            Form::Hot($ix) | Form::Learned($ix) => $body,
            Form::Ordered($ix) => $body,
        }
    };
}

impl FreeIndex {
    /// An empty index, in the fast form.
    pub(crate) const fn new() -> Self {
        FreeIndex {
            form: Form::Hot(Hot::new()),
        }
    }

    #[inline]
    pub(crate) fn free_blocks(&self) -> u64 {
        either!(&self.form, ix => ix.free_blocks())
    }

    #[inline]
    pub(crate) fn extent_count(&self) -> usize {
        either!(&self.form, ix => ix.extent_count())
    }

    pub(crate) fn histogram(&self) -> [u64; HISTOGRAM_BUCKETS] {
        either!(&self.form, ix => ix.histogram())
    }

    /// Bytes of metadata held by the current form.
    pub(crate) fn metadata_bytes(&self) -> usize {
        either!(&self.form, ix => ix.metadata_bytes())
    }

    /// Whether the index has moved to the ordered form.
    #[cfg(test)]
    pub(crate) fn is_ordered(&self) -> bool {
        matches!(self.form, Form::Ordered(_))
    }

    /// Adds the blocks `[start, start + len)` and coalesces them with their neighbours.
    /// The caller guarantees the blocks are not already in the index and lie below
    /// `u64::MAX`.
    #[inline]
    pub(crate) fn insert(&mut self, start: u64, len: u64) {
        match &mut self.form {
            Form::Hot(ix) => ix.insert(start, len),
            Form::Learned(ix) => ix.insert_keeping_fails(start, len),
            Form::Ordered(ix) => ix.insert(start, len),
        }
    }

    /// Removes the blocks `[start, start + len)`, which the caller guarantees lie inside
    /// a single free extent, splitting it as needed.
    #[inline]
    pub(crate) fn take(&mut self, start: u64, len: u64) {
        match &mut self.form {
            Form::Hot(ix) => ix.take(start, len),
            Form::Learned(ix) => ix.take_keeping_fails(start, len),
            Form::Ordered(ix) => ix.take(start, len),
        }
    }

    /// Looks up address `x` ahead, for the next queries and changes at `x` to share
    /// until the index changes.
    #[inline]
    pub(crate) fn probe(&mut self, x: u64) {
        either!(&mut self.form, ix => ix.probe(x))
    }

    /// The lowest free extent overlapping `[start, end)`.
    #[inline]
    pub(crate) fn first_overlap(&self, start: u64, end: u64) -> Option<Extent> {
        either!(&self.form, ix => ix.first_overlap(start, end))
    }

    /// The free extents overlapping `[start, end)`, clipped to it, in address order.
    #[inline]
    pub(crate) fn overlapping(&self, start: u64, end: u64) -> alloc::vec::Vec<Extent> {
        either!(&self.form, ix => ix.overlapping(start, end))
    }

    /// The free extent containing `block`, if it is free.
    pub(crate) fn containing(&self, block: u64) -> Option<Extent> {
        either!(&self.form, ix => ix.containing(block))
    }

    /// The number of free blocks from `start` to the end of its free extent (0 if
    /// `start` is not free).
    pub(crate) fn run_from(&self, start: u64) -> u64 {
        self.containing(start)
            .map_or(0, |e| e.start + e.len - start)
    }

    /// Free extents in address order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = Extent> + '_ {
        let (hot, ordered) = match &self.form {
            Form::Hot(ix) | Form::Learned(ix) => (Some(ix.iter()), None),
            Form::Ordered(ix) => (None, Some(ix.iter())),
        };
        hot.into_iter()
            .flatten()
            .chain(ordered.into_iter().flatten())
    }

    /// A longest free extent.
    pub(crate) fn largest(&self) -> Option<Extent> {
        either!(&self.form, ix => ix.largest())
    }

    pub(crate) fn largest_len(&self) -> u64 {
        either!(&self.form, ix => ix.largest_len())
    }

    /// The most blocks aligned to `align` that one free extent gives.
    pub(crate) fn largest_placeable(&self, align: u64) -> u64 {
        either!(&self.form, ix => ix.largest_placeable(align))
    }

    /// The ordered form, moving to it first if the index is fast and `need` blocks
    /// aligned to `align` fit somewhere; `None` (and no move) if they do not.
    fn ordered_if_fits(&mut self, need: u64, align: u64) -> Option<&mut Ordered> {
        if let Form::Hot(hot) | Form::Learned(hot) = &mut self.form {
            if hot.known_short(align, need) {
                return None;
            }
            if !hot.any_fit(need, align) {
                if align > 64 {
                    hot.note_failed(need, align);
                    if let Form::Hot(_) = self.form {
                        // A move of the index's inline part only (no heap change).
                        let Form::Hot(hot) =
                            core::mem::replace(&mut self.form, Form::Ordered(Ordered::new()))
                        else {
                            unreachable!()
                        };
                        self.form = Form::Learned(hot);
                    }
                }
                return None;
            }
            let mut ordered = Ordered::new();
            for e in hot.iter() {
                ordered.insert(e.start, e.len);
            }
            // Its counts already cover these extents.
            ordered.views.keep_fails(hot.fails());
            // The request that moves the index will succeed: its view, if it needs
            // one, is kept from the start rather than scanned for once.
            let _kept = ordered.track(align);
            self.form = Form::Ordered(ordered);
        }
        match &mut self.form {
            Form::Ordered(ix) => Some(ix),
            _ => unreachable!("the index just moved to the ordered form"),
        }
    }

    /// Best fit: the start of a shortest free extent where `need` blocks aligned to
    /// `align` fit, at its lowest aligned start.
    #[inline]
    pub(crate) fn best_fit(&mut self, need: u64, align: u64) -> Option<u64> {
        match &mut self.form {
            Form::Hot(ix) | Form::Learned(ix) if align == 1 => ix.best_fit(need),
            Form::Ordered(ix) => ix.best_fit(need, align),
            Form::Hot(_) | Form::Learned(_) => {
                self.ordered_if_fits(need, align)?.best_fit(need, align)
            }
        }
    }

    /// First fit: the lowest aligned start where `need` blocks fit.
    pub(crate) fn first_fit(&mut self, need: u64, align: u64) -> Option<u64> {
        self.ordered_if_fits(need, align)?.first_fit(need, align)
    }

    /// The aligned start of `need` blocks closest to `goal`, the lower on a tie.
    pub(crate) fn near(&mut self, need: u64, align: u64, goal: u64) -> Option<u64> {
        self.ordered_if_fits(need, align)?.near(need, align, goal)
    }

    /// Whether `need` blocks aligned to `align` are known not to fit (both forms'
    /// memory of failed requests for alignments above 64 blocks).
    #[inline]
    pub(crate) fn known_short(&self, align: u64, need: u64) -> bool {
        match &self.form {
            Form::Ordered(ix) => ix.known_short(align, need),
            Form::Learned(ix) => ix.known_short(align, need),
            Form::Hot(_) => false,
        }
    }

    /// Keeps a view for `align` in the ordered form (see [`Ordered::track`]); the fast
    /// form keeps none.
    #[inline]
    pub(crate) fn track(&mut self, align: u64) -> Option<aligned::Tracked> {
        match &mut self.form {
            Form::Ordered(ix) => ix.track(align),
            Form::Hot(_) | Form::Learned(_) => None,
        }
    }

    /// Undoes a [`track`](Self::track) for a request that failed.
    #[inline]
    pub(crate) fn untrack(&mut self, tracked: Option<aligned::Tracked>) {
        if let Form::Ordered(ix) = &mut self.form {
            ix.untrack(tracked);
        }
    }

    /// Recomputes everything from scratch. Reports `(invariant number, detail)`.
    pub(crate) fn check(&self, capacity: u64) -> Result<(), (u8, alloc::string::String)> {
        either!(&self.form, ix => ix.check(capacity))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    fn index(extents: &[(u64, u64)]) -> FreeIndex {
        let mut ix = FreeIndex::new();
        for &(s, l) in extents {
            ix.insert(s, l);
        }
        ix
    }

    /// Plain best fit, exact starts and ranges stay in the fast form; a request only
    /// the ordered form can place moves the index only when it will succeed.
    #[test]
    fn moves_to_the_ordered_form_only_for_a_request_that_fits() {
        // Free: [1, +4) and [20, +9); nothing aligned to 8 holds 4 blocks but the
        // second (at 24).
        let mut ix = index(&[(1, 4), (20, 9)]);
        assert_eq!(ix.best_fit(4, 1), Some(1));
        assert_eq!(ix.largest_placeable(8), 5);
        assert!(!ix.is_ordered());
        let bytes = ix.metadata_bytes();
        assert_eq!(ix.first_fit(10, 1), None, "too long for any extent");
        assert_eq!(ix.best_fit(6, 8), None, "no aligned room for 6");
        assert_eq!(ix.near(6, 8, 0), None);
        assert!(!ix.is_ordered(), "a refused request keeps the fast form");
        assert_eq!(ix.metadata_bytes(), bytes, "and the heap");
        let before: Vec<Extent> = ix.iter().collect();
        assert_eq!(ix.best_fit(4, 8), Some(24));
        assert!(ix.is_ordered());
        assert_eq!(ix.iter().collect::<Vec<_>>(), before);
        assert_eq!(ix.first_fit(4, 1), Some(1));
        ix.check(64).unwrap();
    }

    /// Both forms hold the same extents and give the same answers where the contract
    /// fixes them.
    #[test]
    fn both_forms_agree() {
        let mut hot = FreeIndex::new();
        let mut at = 0;
        for len in [3, 7, 3, 200, 1, 129, 7] {
            hot.insert(at, len);
            at += len + 2;
        }
        let mut ordered = hot.clone();
        assert_eq!(ordered.first_fit(1, 1), Some(0));
        assert!(ordered.is_ordered() && !hot.is_ordered());
        assert_ne!(hot, ordered, "the form counts");
        let extents = |ix: &FreeIndex| ix.iter().collect::<Vec<_>>();
        assert_eq!(extents(&hot), extents(&ordered));
        for need in [1, 3, 4, 8, 129, 130, 201] {
            let len_at = |ix: &FreeIndex, s: u64| ix.containing(s).map(|e| e.len);
            let (h, o) = (hot.best_fit(need, 1), ordered.best_fit(need, 1));
            assert_eq!(
                h.and_then(|s| len_at(&hot, s)),
                o.and_then(|s| len_at(&ordered, s))
            );
            assert_eq!(hot.largest_placeable(4), ordered.largest_placeable(4));
        }
        assert_eq!(hot.largest(), ordered.largest());
        hot.take(0, 3);
        ordered.take(0, 3);
        assert_eq!(extents(&hot), extents(&ordered));
        assert_eq!(hot.histogram(), ordered.histogram());
    }

    /// Failed requests above 64 blocks of alignment are remembered in both forms and
    /// across the move, and the memory never calls a request short that would fit: a
    /// random walk of frees, takes and aligned requests, each answer against a brute
    /// force over the extents, the counts checked at every step.
    #[test]
    fn remembered_failures_stay_exact() {
        use crate::splitmix::SplitMix;
        for seed in 0..8 {
            let mut rng = SplitMix::new(seed);
            let cap = 1 << 16;
            let mut ix = FreeIndex::new();
            let mut taken: Vec<(u64, u64)> = Vec::new();
            let mut at = 0;
            while at + 600 < cap {
                let len = 1 + rng.below(500);
                ix.insert(at, len);
                at += len + 1 + rng.below(300);
            }
            let mut known = 0;
            for step in 0..1500 {
                let extents: Vec<(u64, u64)> = ix.iter().map(|e| (e.start, e.len)).collect();
                let align = 128u64 << rng.below(6);
                // Half the requests sit at a random extent's edge: as many aligned blocks as
                // it gives, one more or one fewer.
                // The rest at the most any extent gives, or one more.
                let most = || extents.iter().map(|&(s, l)| placeable(s, l, align)).max();
                let need = match extents.get(rng.below(2 * extents.len() as u64) as usize) {
                    Some(&(s, l)) => (placeable(s, l, align) + rng.below(3)).max(2) - 1,
                    None => most().unwrap_or(0) + rng.below(2),
                }
                .max(1);
                let fits = extents
                    .iter()
                    .any(|&(s, l)| fit(s, l, need, align).is_some());
                if ix.known_short(align, need) {
                    known += 1;
                    assert!(
                        !fits,
                        "seed {seed} step {step}: {need} at {align} is known short but fits"
                    );
                }
                // The search itself, in the form the index is in. A success moves the
                // fast form: half the seeds search only when nothing fits, and stay.
                if !fits || (seed % 2 == 1 && rng.below(300) == 0) {
                    let got = ix.best_fit(need, align);
                    assert_eq!(
                        got.is_some(),
                        fits,
                        "seed {seed} step {step}: {need} at {align}"
                    );
                }
                if rng.below(2) == 0 && !extents.is_empty() {
                    let (s, l) = extents[rng.below(extents.len() as u64) as usize];
                    let len = 1 + rng.below(l);
                    let start = s + rng.below(l - len + 1);
                    ix.take(start, len);
                    taken.push((start, len));
                } else if !taken.is_empty() {
                    let (s, l) = taken.swap_remove(rng.below(taken.len() as u64) as usize);
                    ix.insert(s, l);
                }
                ix.check(cap)
                    .unwrap_or_else(|e| panic!("seed {seed} step {step}: {e:?}"));
            }
            assert!(known > 0, "seed {seed}: no request was known short");
        }
    }
}
