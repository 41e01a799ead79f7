//! SplitMix64, the one seeded generator of the crate's tests, its benches and its
//! testing kit (where it is [`testing::SplitMix`](crate::testing::SplitMix)).

/// A small seeded generator (SplitMix64): the same seed gives the same walk on every
/// machine.
///
/// ```
/// use pinalloc::testing::{SplitMix, Source};
/// let (mut a, mut b) = (SplitMix::new(7), SplitMix::new(7));
/// assert_eq!(a.below(1000), b.below(1000));
/// ```
#[derive(Debug, Clone)]
pub struct SplitMix(u64);

impl SplitMix {
    /// A generator from `seed`.
    #[must_use]
    pub fn new(seed: u64) -> Self {
        SplitMix(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`, from 53 random bits.
    ///
    /// ```
    /// use pinalloc::testing::SplitMix;
    /// let u = SplitMix::new(7).next_f64();
    /// assert!((0.0..1.0).contains(&u));
    /// ```
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A value in `0..n` (`n > 0`), by multiply-shift: unbiased enough for tests, and
    /// no division.
    ///
    /// ```
    /// use pinalloc::testing::SplitMix;
    /// assert!(SplitMix::new(7).below(10) < 10);
    /// ```
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}
