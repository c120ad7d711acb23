//! The `weighted` step: a random order in which each position is drawn in
//! proportion to weight among the datacenters not yet placed (weighted
//! sampling without replacement). Weight-0 datacenters are standbys: they
//! go last, in their current order, so health filtering reaches them only
//! when every weighted one is unusable.
//!
//! Sampling without replacement keeps shares right under failure: when
//! some datacenters are down, the first usable one in the order is still
//! drawn in proportion to weight among the usable ones.

/// SplitMix64's finaliser: a bijective 64-bit mix, for per-query
/// randomness derived from a seed.
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Moves the weight-0 members of `tier` behind the others, each group
/// keeping its order; returns how many have a weight.
pub(crate) fn standbys_last(tier: &mut [u8], weights: &[u32]) -> usize {
    let mut out = [0u8; super::MAX_CANDIDATES];
    let mut n = 0;
    let mut weighted = 0;
    for pass in [true, false] {
        for &c in tier.iter() {
            if (weights[usize::from(c)] > 0) == pass {
                out[n] = c;
                n += 1;
            }
        }
        if pass {
            weighted = n;
        }
    }
    tier.copy_from_slice(&out[..tier.len()]);
    weighted
}

/// Orders `tier` (positions into `weights`) at random by weight, with
/// `entropy` as the randomness.
pub(crate) fn order(tier: &mut [u8], weights: &[u32], entropy: u64) {
    let weighted = standbys_last(tier, weights);
    let mut total: u64 = tier[..weighted]
        .iter()
        .map(|&c| u64::from(weights[usize::from(c)]))
        .sum();
    let mut rng = entropy;
    for pos in 0..weighted {
        rng = mix(rng);
        // The modulo bias is below 2^-37 for any total up to 64 × 10^6.
        let mut r = rng % total;
        let mut j = pos;
        while j + 1 < weighted && r >= u64::from(weights[usize::from(tier[j])]) {
            r -= u64::from(weights[usize::from(tier[j])]);
            j += 1;
        }
        tier.swap(pos, j);
        total -= u64::from(weights[usize::from(tier[pos])]);
    }
}
