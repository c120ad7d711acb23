//! The `sticky` step: weighted rendezvous hashing of the client's network
//! (its /24 or /56 by default). Every datacenter gets a score from a hash
//! of the network and of the datacenter's *name*; the order is by score.
//! The same network always gets the same order, on every instance and
//! across restarts (the hash has a fixed key). When a datacenter fails,
//! health filtering skips it, so only the networks that ranked it first
//! move, each to its own second choice; when it recovers they move back.
//!
//! Weights scale the scores (`weight / -ln(u)`, u uniform in (0, 1)), so
//! a datacenter's share of networks is proportional to its weight;
//! weight-0 datacenters are standbys, ranked last.

use std::net::IpAddr;

use super::weighted::{mix, standbys_last};

/// FNV-1a of a datacenter name, mixed: stable across builds and hosts.
pub fn name_hash(name: &str) -> u64 {
    let h = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    mix(h)
}

/// `addr` with every bit past `prefix` cleared.
pub fn masked(addr: IpAddr, prefix: u8) -> IpAddr {
    ipnet::IpNet::new(addr, prefix).map_or(addr, |n| n.network())
}

/// The hash key of the client's network.
pub fn client_key(addr: IpAddr, prefix: u8) -> u64 {
    match masked(addr, prefix) {
        IpAddr::V4(a) => mix(u64::from(u32::from(a)) | 4 << 56 | u64::from(prefix) << 48),
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            mix(mix(bits as u64) ^ (bits >> 64) as u64 ^ u64::from(prefix) << 56)
        }
    }
}

/// The rendezvous score of the datacenter with `name_hash` for `key`:
/// higher ranks first.
fn score(key: u64, name_hash: u64, weight: u32) -> f64 {
    let h = mix(key ^ name_hash);
    // Uniform in (0, 1): 53 random bits, never 0 or 1.
    let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    f64::from(weight) / -u.ln()
}

/// Orders `tier` (positions into `weights` and `names`) by score for the
/// network `key`.
pub(crate) fn order(tier: &mut [u8], weights: &[u32], names: &[u64], key: u64) {
    let weighted = standbys_last(tier, weights);
    let mut scores = [0f64; super::MAX_CANDIDATES];
    for (s, &c) in scores.iter_mut().zip(&tier[..weighted]) {
        *s = score(key, names[usize::from(c)], weights[usize::from(c)]);
    }
    // Insertion sort, highest first: a handful of elements, no allocation.
    for i in 1..weighted {
        let mut j = i;
        while j > 0 && scores[j - 1] < scores[j] {
            scores.swap(j - 1, j);
            tier.swap(j - 1, j);
            j -= 1;
        }
    }
}
