//! 64-bit tokens for pins: what an io_uring `user_data` or a completion queue entry
//! carries, converted back to the pin when the completion comes.
//!
//! A token is a number from the process-wide sequence that allocator ids come from
//! (`next_uid`): no two tokens, of any allocator, are ever equal (but on a target
//! without 64-bit atomics, where the sequence is 32 bits and could wrap after 2^32
//! tokens and allocators). An allocator keeps the tokens of its live pins in a map,
//! and forgets a token when its pin goes, so a stale token, or another allocator's,
//! is found in no map and refused: never taken for a live pin. Pins that never get a
//! token pay one test on unpin: the map is asked only when it is not empty.

use alloc::collections::BTreeMap;

use crate::allocator::next_uid;

/// The tokens of live pins, keyed both ways; `K` names a pin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Tokens<K: Ord + Copy> {
    by_token: BTreeMap<u64, K>,
    by_pin: BTreeMap<K, u64>,
}

impl<K: Ord + Copy> Default for Tokens<K> {
    fn default() -> Self {
        Tokens {
            by_token: BTreeMap::new(),
            by_pin: BTreeMap::new(),
        }
    }
}

impl<K: Ord + Copy> Tokens<K> {
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.by_pin.is_empty()
    }

    /// Pin `pin`'s token (the caller checked it is live): the one it has, or a new one.
    pub(crate) fn token(&mut self, pin: K) -> u64 {
        if let Some(&t) = self.by_pin.get(&pin) {
            return t;
        }
        let t = next_uid();
        self.by_pin.insert(pin, t);
        self.by_token.insert(t, pin);
        t
    }

    /// The pin a token names, if it is a live pin's.
    pub(crate) fn pin(&self, token: u64) -> Option<K> {
        self.by_token.get(&token).copied()
    }

    /// Pin `pin` went: its token, if any, is forgotten. Whether it had one.
    pub(crate) fn forget(&mut self, pin: &K) -> bool {
        match self.by_pin.remove(pin) {
            Some(t) => {
                self.by_token.remove(&t);
                true
            }
            None => false,
        }
    }

    /// Live tokens.
    pub(crate) fn len(&self) -> usize {
        self.by_pin.len()
    }

    /// Approximate heap bytes: two map entries per token.
    pub(crate) fn bytes(&self) -> usize {
        self.len() * 2 * (core::mem::size_of::<K>() + core::mem::size_of::<u64>())
    }
}
