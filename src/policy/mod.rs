//! Routing policies: given a client, rank a service's datacenters.
//!
//! Answering is three stages (see the crate docs): **rank** (a policy, pure
//! and synchronous: no I/O, no locks, no `.await`), **filter** (health, once
//! probes exist), **pick** (the first N). Policies are built once per config
//! or GeoIP load into whatever precomputed form makes `rank` cheap, and are
//! shared by every query through the snapshot.

pub mod failover;
pub mod geo;

use std::fmt;
use std::net::IpAddr;

use crate::model::DcId;

/// Who is asking: the address a policy routes on (the ECS address when the
/// query carried one, else the packet's source), already truncated to the
/// ECS source prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Client {
    /// Address to route on. IPv4-mapped IPv6 is converted to IPv4.
    pub addr: IpAddr,
}

/// A policy's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ranked<'a> {
    /// Datacenters in preference order; may be a subset of the service's.
    pub order: &'a [DcId],
    /// Prefix length (in `Client::addr`'s family) over which this ranking
    /// holds: the ECS scope to return.
    pub scope: u8,
}

/// A routing policy, built for one service.
pub trait Policy: Send + Sync + fmt::Debug {
    /// Ranks the datacenters for `client`.
    fn rank(&self, client: &Client) -> Ranked<'_>;
}

/// Most datacenters in one answer (`max_answers` is 1 to 8).
pub const MAX_ANSWERS: usize = 8;

/// The datacenters whose records form an answer: the result of filtering a
/// ranking by health and taking the first `max_answers`. Fixed capacity,
/// so choosing never allocates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Choice {
    dcs: [DcId; MAX_ANSWERS],
    len: u8,
    /// The answer differs from the one every datacenter being up would
    /// give (a failover happened, or nothing is up): answers carry the
    /// service's `degraded_ttl`.
    pub degraded: bool,
    /// No candidate is up; `dcs` then holds the healthy-state choice, for
    /// services that fail open.
    pub all_down: bool,
}

impl Choice {
    /// The chosen datacenters, best first.
    pub fn dcs(&self) -> &[DcId] {
        &self.dcs[..usize::from(self.len)]
    }

    /// A choice of exactly `dcs` (at most [`MAX_ANSWERS`]).
    pub fn of(dcs: &[DcId], degraded: bool, all_down: bool) -> Self {
        let mut c = Self {
            dcs: [DcId(0); MAX_ANSWERS],
            len: 0,
            degraded,
            all_down,
        };
        for &d in dcs.iter().take(MAX_ANSWERS) {
            c.dcs[usize::from(c.len)] = d;
            c.len += 1;
        }
        c
    }
}

/// Filters `order` by `up` and takes the first `max` (stage two and three
/// of answering). Pure: the same inputs always give the same choice.
pub fn choose(order: &[DcId], max: usize, up: impl Fn(DcId) -> bool) -> Choice {
    let max = max.clamp(1, MAX_ANSWERS);
    let mut chosen = Choice::of(&[], false, false);
    for &dc in order {
        if usize::from(chosen.len) == max {
            break;
        }
        if up(dc) {
            chosen.dcs[usize::from(chosen.len)] = dc;
            chosen.len += 1;
        }
    }
    let healthy = &order[..order.len().min(max)];
    if chosen.len == 0 {
        return Choice::of(healthy, true, true);
    }
    chosen.degraded = chosen.dcs() != healthy;
    chosen
}

/// Distinct rankings, interned so tables store small ids.
#[derive(Clone, Debug, Default)]
pub struct Rankings {
    lists: Vec<Box<[DcId]>>,
    index: std::collections::HashMap<Box<[DcId]>, u32>,
}

impl Rankings {
    /// The id of `order`, adding it if new.
    pub fn intern(&mut self, order: &[DcId]) -> u32 {
        if let Some(&id) = self.index.get(order) {
            return id;
        }
        let id = u32::try_from(self.lists.len()).expect("fewer than 2^32 rankings");
        self.lists.push(order.into());
        self.index.insert(order.into(), id);
        id
    }

    /// A new id for `order` even if an equal ranking exists: table blocks
    /// with different ids never merge.
    pub fn distinct(&mut self, order: &[DcId]) -> u32 {
        let id = u32::try_from(self.lists.len()).expect("fewer than 2^32 rankings");
        self.lists.push(order.into());
        id
    }

    /// The ranking with this id.
    pub fn get(&self, id: u32) -> &[DcId] {
        &self.lists[id as usize]
    }

    /// How many distinct rankings exist.
    pub fn len(&self) -> usize {
        self.lists.len()
    }

    /// Whether none exist.
    pub fn is_empty(&self) -> bool {
        self.lists.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[u16]) -> Vec<DcId> {
        v.iter().map(|&i| DcId(i)).collect()
    }

    #[test]
    fn choose_filters_by_health_and_caps() {
        let order = ids(&[2, 0, 1]);
        let all = choose(&order, 1, |_| true);
        assert_eq!(all.dcs(), &ids(&[2])[..]);
        assert!(!all.degraded && !all.all_down);
        let failover = choose(&order, 1, |d| d != DcId(2));
        assert_eq!(failover.dcs(), &ids(&[0])[..]);
        assert!(failover.degraded);
        let two = choose(&order, 2, |d| d != DcId(0));
        assert_eq!(two.dcs(), &ids(&[2, 1])[..]);
        assert!(two.degraded, "differs from the healthy answer [2, 0]");
        let none = choose(&order, 2, |_| false);
        assert!(none.all_down && none.degraded);
        assert_eq!(
            none.dcs(),
            &ids(&[2, 0])[..],
            "the healthy choice, for fail-open"
        );
        let short = choose(&ids(&[1]), 3, |_| true);
        assert_eq!(short.dcs(), &ids(&[1])[..]);
        assert!(!short.degraded);
    }
}
