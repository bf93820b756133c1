//! The one pseudo-random generator the cores and the harness draw from: SplitMix64, seeded by
//! the caller, so every choice replays from the seed. Small and well mixed; it picks jitter,
//! keys and losses, never anything an adversary must not predict beyond a session.

/// SplitMix64 (Steele, Lea, Flood 2014): each call advances the state by the golden-ratio
/// increment and mixes it.
///
/// Re-exported as `testing::SplitMix64` (feature `test-util`), so the simulator draws from the
/// same generator.
#[derive(Debug, Clone)]
#[cfg_attr(not(feature = "test-util"), allow(unreachable_pub))]
pub struct SplitMix64(u64);

#[cfg_attr(not(feature = "test-util"), allow(unreachable_pub))]
impl SplitMix64 {
    /// A generator whose first output is derived from `seed`.
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}
