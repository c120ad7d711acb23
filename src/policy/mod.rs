//! Routing policies: given a client, rank a service's datacenters.
//!
//! Answering is three stages (see the crate docs): **rank** (a policy, pure
//! and synchronous: no I/O, no locks, no `.await`), **filter** (health, once
//! probes exist), **pick** (the first N). Policies are built once per config
//! or GeoIP load into whatever precomputed form makes `rank` cheap, and are
//! shared by every query through the snapshot.

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
