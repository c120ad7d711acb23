//! Health: what probes observe, what operators override, and the view the
//! query path reads.
//!
//! Probes report a [`Verdict`] plus RTT (`probe`); one pure state machine
//! per target turns those into UP/DOWN with rise/fall hysteresis (`state`),
//! and a probe that failed because of this host (a local fault: no file
//! descriptors, no buffers, no route from here) moves it neither way; the
//! monitor (`monitor`) runs the probes and publishes a new [`HealthView`]
//! inside a new snapshot whenever a datacenter's state changes. Operator
//! overrides (drain, force-up) are kept apart from observations and
//! persist in a state file (`overrides`). Passing probes' RTTs feed each
//! target's [`rtt::RttStats`] (smoothed, baseline, p90), from which each
//! datacenter gets a measured RTT and a congestion flag.

pub mod monitor;
pub mod overrides;
pub mod probe;
pub mod rtt;
pub mod state;

use serde::{Deserialize, Serialize};

use crate::model::{DcId, Warmup};

/// What one probe found out about its target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The target passed.
    Pass,
    /// The target failed: refused, reset, timed out, wrong status, body or
    /// rcode, TLS failure.
    Fail,
    /// The probe could not be run because of this host (see
    /// [`probe::classify`]): it says nothing about the target.
    LocalFault,
}

impl Verdict {
    /// The name `/status` shows (`last_result`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Fail => "fail",
            Self::LocalFault => "local_fault",
        }
    }
}

/// What the probes say about a datacenter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Observed {
    /// Enough targets are UP (or the datacenter has no probe).
    Up,
    /// Too few targets can be UP.
    Down,
    /// Not yet known (no result yet for enough targets).
    Unknown,
}

impl Observed {
    /// The name logs, metrics and `/status` use (as serialized).
    pub fn name(self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::Down => "down",
            Self::Unknown => "unknown",
        }
    }
}

/// An operator's decision, which beats observations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Override {
    /// Never answer with this datacenter.
    Drain,
    /// Answer with it whatever the probes say.
    ForceUp,
}

impl Override {
    /// The name the API, the config, logs and metrics use (as
    /// serialized).
    pub fn name(self) -> &'static str {
        match self {
            Self::Drain => "drain",
            Self::ForceUp => "force-up",
        }
    }
}

/// One datacenter's state as the query path sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DcHealth {
    /// From the probes.
    pub observed: Observed,
    /// From the operator.
    pub forced: Option<Override>,
    /// Spare capacity its probe targets report, in percent (100 when they
    /// report none): `weighted` and `sticky` scale its weight by it.
    pub capacity: u8,
    /// Answer addresses whose own probe targets are all down: bit `i` for
    /// the datacenter's `i`-th IPv4 address, bit `32 + j` for its `j`-th
    /// IPv6 address (the first 32 of each family).
    pub down_addresses: u64,
    /// The smoothed probe RTT in microseconds, 0 when unknown: the lowest
    /// of its UP targets' (see [`rtt::RttStats`]; what it covers depends
    /// on the probe type). Not republished on every probe: the query path
    /// sees it as of the last publication.
    pub rtt_us: u32,
    /// The target that gives [`Self::rtt_us`] has a smoothed RTT above
    /// `[latency] congestion_factor` times its own baseline (after
    /// [`rtt::CONGESTION_MIN_SAMPLES`] passing probes).
    pub congested: bool,
}

impl DcHealth {
    /// Always up: no probe, no override.
    pub const UP: Self = Self {
        observed: Observed::Up,
        forced: None,
        capacity: 100,
        down_addresses: 0,
        rtt_us: 0,
        congested: false,
    };

    /// Whether answers may use this datacenter, for a service with
    /// `warmup`.
    pub fn usable(self, warmup: Warmup) -> bool {
        match (self.forced, self.observed) {
            (Some(Override::Drain), _) => false,
            (Some(Override::ForceUp), _) | (None, Observed::Up) => true,
            (None, Observed::Down) => false,
            (None, Observed::Unknown) => warmup == Warmup::AssumeUp,
        }
    }
}

/// The bit of [`DcHealth::down_addresses`] for the `index`-th address of
/// a family; `None` past the first 32, which are not tracked.
pub fn address_bit(v6: bool, index: usize) -> Option<u32> {
    (index < 32).then(|| index as u32 + if v6 { 32 } else { 0 })
}

/// Every datacenter's health, indexed like the snapshot's zones and each
/// zone's datacenters. Immutable once published.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HealthView {
    zones: Vec<Vec<DcHealth>>,
}

impl HealthView {
    /// A view from per-zone vectors.
    pub fn new(zones: Vec<Vec<DcHealth>>) -> Self {
        Self { zones }
    }

    /// The state of datacenter `dc` of the zone at `zone`; up when unknown
    /// to the view (e.g. a zone added by a reload the monitor has not yet
    /// seen).
    pub fn dc(&self, zone: usize, dc: DcId) -> DcHealth {
        self.zones
            .get(zone)
            .and_then(|z| z.get(dc.index()))
            .copied()
            .unwrap_or(DcHealth::UP)
    }

    /// The states of the zone at `zone`, indexed by `DcId` (empty when
    /// unknown to the view: every datacenter then counts as up).
    pub fn zone(&self, zone: usize) -> &[DcHealth] {
        self.zones.get(zone).map_or(&[], Vec::as_slice)
    }

    /// Per-zone states.
    pub fn zones(&self) -> &[Vec<DcHealth>] {
        &self.zones
    }
}
