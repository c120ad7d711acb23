//! Routing by measured latency: the estimates the `latency` policy step
//! ranks datacenters by, where they come from, and how they reach the
//! query path.
//!
//! Work in progress (issue 8); see the module docs as they land.

pub mod asn;
pub mod beacon;
pub mod map;
pub mod rum;
pub mod table;
