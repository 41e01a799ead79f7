//! One exact size class: the starts of the free extents of one length, in order.
//!
//! Most classes hold a few dozen extents, and every allocation and free changes one.
//! A B+ tree spends a few hundred instructions on a change (its summaries are kept up
//! to the root), where a short sorted array spends a binary search and a short move.
//! So a class is a sorted `Vec` up to [`SMALL_MAX`] starts, and a B+ tree with the
//! residues of its starts mod 64 under each child above that; it goes back to the array
//! when it shrinks to [`SMALL_MIN`], so that each change of form is paid for by at least
//! `SMALL_MAX - SMALL_MIN` changes before it. Every operation stays O(log n).

use alloc::vec::Vec;

use super::size::Residues;
use crate::tree::bplus::BPlus;

/// The most starts a class keeps in an array.
const SMALL_MAX: usize = 64;
/// A tree class that shrinks to this many starts becomes an array again.
const SMALL_MIN: usize = 16;

/// The bit of a start's residue mod 64.
#[inline]
fn residue_bit(start: u64) -> u64 {
    1 << (start % 64)
}

#[derive(Clone, Debug)]
pub(super) enum Class {
    Small(Vec<u64>),
    Big(BPlus<u64, (), Residues>),
}

impl Default for Class {
    fn default() -> Self {
        Class::Small(Vec::new())
    }
}

/// Equal starts, whatever the form.
impl PartialEq for Class {
    fn eq(&self, o: &Self) -> bool {
        self.len() == o.len() && self.iter().eq(o.iter())
    }
}

impl Class {
    pub(super) fn len(&self) -> usize {
        match self {
            Class::Small(v) => v.len(),
            Class::Big(t) => t.len(),
        }
    }

    pub(super) fn capacity_bytes(&self) -> usize {
        match self {
            Class::Small(v) => v.capacity() * core::mem::size_of::<u64>(),
            Class::Big(t) => t.capacity_bytes(),
        }
    }

    /// The starts, in order.
    pub(super) fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        let (small, big) = match self {
            Class::Small(v) => (Some(v.iter().copied()), None),
            Class::Big(t) => (None, Some(t.iter().map(|(s, ())| s))),
        };
        small.into_iter().flatten().chain(big.into_iter().flatten())
    }

    /// The lowest start.
    #[inline]
    pub(super) fn first(&self) -> Option<u64> {
        match self {
            Class::Small(v) => v.first().copied(),
            Class::Big(t) => t.first().map(|p| t.get(p).0),
        }
    }

    /// Whether `start` is listed.
    pub(super) fn contains(&self, start: u64) -> bool {
        match self {
            Class::Small(v) => v.binary_search(&start).is_ok(),
            Class::Big(t) => t.find(start).is_some(),
        }
    }

    /// Adds `start`, which is not listed.
    #[inline]
    pub(super) fn insert(&mut self, start: u64) {
        match self {
            Class::Small(v) => {
                let at = v.partition_point(|&s| s < start);
                debug_assert!(v.get(at) != Some(&start), "listing a start twice");
                if v.len() < SMALL_MAX {
                    v.insert(at, start);
                    return;
                }
                let mut t = BPlus::new();
                for &s in v.iter() {
                    t.insert(s, ());
                }
                t.insert(start, ());
                *self = Class::Big(t);
            }
            Class::Big(t) => {
                t.insert(start, ());
            }
        }
    }

    /// Removes `start`, which is listed: at once when it is the lowest, as for best
    /// fit.
    #[inline]
    pub(super) fn remove(&mut self, start: u64) {
        match self {
            Class::Small(v) => {
                let at = if v.first() == Some(&start) {
                    0
                } else {
                    v.binary_search(&start)
                        .expect("an exact class lists its extents")
                };
                v.remove(at);
            }
            Class::Big(t) => {
                let p = t
                    .first()
                    .filter(|&p| t.get(p).0 == start)
                    .or_else(|| t.find(start))
                    .expect("an exact class lists its extents");
                t.remove(p);
                if t.len() <= SMALL_MIN {
                    let v: Vec<u64> = t.iter().map(|(s, ())| s).collect();
                    *self = Class::Small(v);
                }
            }
        }
    }

    /// The residues mod 64 of every start, as bits.
    pub(super) fn residues(&self) -> u64 {
        match self {
            Class::Small(v) => v.iter().fold(0, |acc, &s| acc | residue_bit(s)),
            Class::Big(t) => t.summary().0,
        }
    }

    /// The first start at or after `at` whose residue is in `room`.
    pub(super) fn first_with(&self, at: u64, room: u64) -> Option<u64> {
        match self {
            Class::Small(v) => {
                let from = v.partition_point(|&s| s < at);
                v[from..]
                    .iter()
                    .copied()
                    .find(|&s| room & residue_bit(s) != 0)
            }
            Class::Big(t) => {
                let p =
                    t.first_matching(at, |r| r.0 & room != 0, |&s, ()| room & residue_bit(s) != 0)?;
                Some(t.get(p).0)
            }
        }
    }

    /// The last start at or before `at` whose residue is in `room`.
    pub(super) fn last_with(&self, at: u64, room: u64) -> Option<u64> {
        match self {
            Class::Small(v) => {
                let upto = v.partition_point(|&s| s <= at);
                v[..upto]
                    .iter()
                    .rev()
                    .copied()
                    .find(|&s| room & residue_bit(s) != 0)
            }
            Class::Big(t) => {
                let p =
                    t.last_matching(at, |r| r.0 & room != 0, |&s, ()| room & residue_bit(s) != 0)?;
                Some(t.get(p).0)
            }
        }
    }

    /// Sorted starts, each once; a tree class is sound and above [`SMALL_MIN`].
    pub(super) fn check(&self) -> Result<(), alloc::string::String> {
        match self {
            Class::Small(v) => {
                if v.windows(2).any(|w| w[0] >= w[1]) {
                    return Err("an array class is not strictly sorted".into());
                }
                if v.len() > SMALL_MAX {
                    return Err(alloc::format!("an array class holds {} starts", v.len()));
                }
                Ok(())
            }
            Class::Big(t) => {
                t.check()?;
                if t.len() <= SMALL_MIN {
                    return Err(alloc::format!("a tree class holds only {} starts", t.len()));
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use alloc::vec::Vec;

    use super::*;
    use crate::splitmix::SplitMix;

    /// Every operation against a plain sorted list, through both forms and back.
    #[test]
    fn matches_a_sorted_list_in_both_forms() {
        let mut rng = SplitMix::new(5);
        let mut c = Class::default();
        let mut plain: Vec<u64> = Vec::new();
        let (mut grew, mut shrank) = (false, false);
        for step in 0..20_000 {
            // Drift between a few and a few hundred starts.
            let phase = (step / 2_000) % 2 == 0;
            let add = plain.is_empty() || rng.below(100) < if phase { 70 } else { 30 };
            if add {
                let s = rng.below(100_000);
                if plain.binary_search(&s).is_err() {
                    c.insert(s);
                    let at = plain.partition_point(|&x| x < s);
                    plain.insert(at, s);
                }
            } else {
                let s = if rng.below(2) == 0 {
                    plain[0]
                } else {
                    plain[rng.below(plain.len() as u64) as usize]
                };
                c.remove(s);
                plain.retain(|&x| x != s);
            }
            grew |= matches!(c, Class::Big(_));
            shrank |= grew && matches!(c, Class::Small(_));
            c.check().unwrap();
            assert_eq!(c.len(), plain.len());
            assert_eq!(c.first(), plain.first().copied());
            if step % 97 == 0 {
                assert!(c.iter().eq(plain.iter().copied()), "step {step}");
            }
            let room = rng.below(u64::MAX);
            let at = rng.below(100_000);
            let want = |s: &&u64| room & residue_bit(**s) != 0;
            assert_eq!(
                c.first_with(at, room),
                plain.iter().filter(|&&s| s >= at).find(want).copied()
            );
            assert_eq!(
                c.last_with(at, room),
                plain.iter().rev().filter(|&&s| s <= at).find(want).copied()
            );
            let all = plain.iter().fold(0, |acc, &s| acc | residue_bit(s));
            assert_eq!(c.residues(), all);
            assert_eq!(c.contains(at), plain.binary_search(&at).is_ok());
        }
        assert!(
            grew && shrank,
            "both forms and both changes of form were visited"
        );
    }
}
