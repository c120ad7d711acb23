//! The immutable snapshot every query reads: zones in wire form, their
//! policies, the server settings the query path needs, and the health of
//! every datacenter.
//!
//! Built from a validated [`Config`] and an open [`GeoDb`]; published
//! through an `ArcSwap` so a reload or a health change replaces it
//! atomically while queries in flight finish on the old one. A health
//! change reuses every other part (they are behind `Arc`s), so publishing
//! one costs a few allocations, not a rebuild.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use crate::config::ServerConfig;
use crate::dns::cookie::Cookies;
use crate::dns::fast::FastIndex;
use crate::dns::records::DomainName;
use crate::dns::zone::Zone;
use crate::geo::GeoDb;
use crate::geo::locations::LocationTable;
use crate::health::{DcHealth, HealthView, Observed};
use crate::latency::{LatencyView, Model, ProbeIncumbent, Sources};
use crate::model::{Attribute, DcId, GeoSpec, LatencySource, Step, ZoneConfig};
use crate::policy::Plan;
use crate::policy::geo::{GeoPolicy, GeoRequest, Keep};

/// Building walks the GeoIP database with large temporary vectors; give
/// the freed memory back to the system so it does not stay resident.
#[allow(unsafe_code)]
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free heap memory.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Services with the same datacenters, kept attributes and (compared
/// apart) geo settings share one geo policy.
type GeoKey<'a> = (&'a [DcId], Keep);

/// Everything a query needs, frozen.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// Zones, most specific origin first (longest match wins).
    zones: Arc<[Arc<Zone>]>,
    /// Pre-encoded responses for the fast path.
    pub(crate) fast: Arc<FastIndex>,
    /// Largest UDP response we send.
    pub max_udp_payload: u16,
    /// The GeoIP database the tables were built from.
    pub geo: Arc<GeoDb>,
    /// Identifies `geo` and the country table in it: a hash of both
    /// files. Zones may be kept across snapshots with the same one.
    pub geo_fingerprint: u64,
    /// Health of every datacenter, indexed like `zones`.
    pub health: Arc<HealthView>,
    /// Seed of the per-query randomness (`weighted`, address rotation),
    /// drawn anew by every build (start-up and each reload).
    pub(crate) seed: u64,
    /// The NSID option's payload, when configured (RFC 5001).
    pub(crate) nsid: Option<Arc<[u8]>>,
    /// DNS cookies, when enabled (RFC 7873).
    pub(crate) cookies: Option<Arc<Cookies>>,
    /// Latency estimates for `latency` steps.
    pub latency: Arc<LatencyView>,
}

impl Snapshot {
    /// Builds every zone and policy table, or keeps zones built before.
    /// Datacenters with probes start Unknown, the others Up. Each new
    /// zone's static records move into its zone store, which keeps them
    /// compactly in wire form. `geo_fingerprint` identifies `geo` (see
    /// [`Snapshot::geo_fingerprint`]).
    pub fn build(
        sources: Vec<ZoneSource>,
        server: &ServerConfig,
        geo: Arc<GeoDb>,
        geo_fingerprint: u64,
    ) -> Self {
        let started = Instant::now();
        let mut zones: Vec<Arc<Zone>> = Vec::with_capacity(sources.len());
        let mut fresh: Vec<(ZoneConfig, u64)> = Vec::new();
        for source in sources {
            match source {
                ZoneSource::Kept(zone) => zones.push(zone),
                ZoneSource::Fresh(zc, fingerprint) => fresh.push((*zc, fingerprint)),
            }
        }
        let (built, kept) = (fresh.len(), zones.len());
        // Geo policies first: services with the same datacenters and geo
        // settings share one (its class map or, with `networks`
        // overrides, its own tables), and all are built together on one
        // location table (one walk of the GeoIP database for every zone
        // built, done only if a service needs it).
        let mut requests: Vec<GeoRequest<'_>> = Vec::new();
        let mut policy_of: Vec<Vec<Option<usize>>> = Vec::with_capacity(fresh.len());
        for (zc, _) in &fresh {
            let mut cache: HashMap<GeoKey<'_>, Vec<(&GeoSpec, usize)>> = HashMap::new();
            let ids = zc
                .services
                .iter()
                .map(|s| {
                    let spec = &s.policy;
                    spec.needs_location().then(|| {
                        let keep = Keep {
                            country: spec.steps.contains(&Step::Same(Attribute::Country)),
                            continent: spec.steps.contains(&Step::Same(Attribute::Continent)),
                            distance: spec.steps.contains(&Step::Latency)
                                && spec.latency_source == LatencySource::Clients,
                        };
                        let same = cache.entry((&s.datacenters[..], keep)).or_default();
                        if let Some(&(_, id)) = same.iter().find(|(g, _)| **g == spec.geo) {
                            return id;
                        }
                        requests.push(GeoRequest {
                            spec: &spec.geo,
                            candidates: &s.datacenters,
                            dcs: &zc.datacenters,
                            keep,
                        });
                        same.push((&spec.geo, requests.len() - 1));
                        requests.len() - 1
                    })
                })
                .collect();
            policy_of.push(ids);
        }
        let policies: Vec<Arc<GeoPolicy>> = if requests.is_empty() {
            Vec::new()
        } else {
            let t = Instant::now();
            let locations = Arc::new(LocationTable::build(&geo));
            let ((b4, b6), (n4, n6), sets) = locations.sizes();
            tracing::debug!(
                v4_blocks = b4,
                v6_blocks = b6,
                v4_nodes = n4,
                v6_nodes = n6,
                sets,
                locations = locations.locations().len(),
                elapsed_ms = t.elapsed().as_millis() as u64,
                "built the GeoIP location table"
            );
            let t = Instant::now();
            let built = GeoPolicy::build_all(&locations, &requests);
            tracing::debug!(
                policies = built.len(),
                elapsed_ms = t.elapsed().as_millis() as u64,
                "built geo policies"
            );
            built.into_iter().map(Arc::new).collect()
        };
        drop(requests);
        for ((zc, fingerprint), ids) in fresh.into_iter().zip(policy_of) {
            let plans = zc
                .services
                .iter()
                .zip(&ids)
                .map(|(s, id)| {
                    let table = id.and_then(|i| policies.get(i)).map(Arc::clone);
                    Arc::new(Plan::build(&zc, s, table, geo.countries()))
                })
                .collect();
            zones.push(Arc::new(Zone::build(zc, plans, fingerprint)));
        }
        // Most labels first, so a child zone served here wins over its parent.
        zones.sort_by_key(|z| std::cmp::Reverse(z.origin_labels()));
        let fast = FastIndex::new(&zones);
        let health = HealthView::new(
            zones
                .iter()
                .map(|z| {
                    z.config
                        .datacenters
                        .iter()
                        .map(|dc| DcHealth {
                            observed: if dc.probe.is_some() {
                                Observed::Unknown
                            } else {
                                Observed::Up
                            },
                            ..DcHealth::UP
                        })
                        .collect()
                })
                .collect(),
        );
        tracing::info!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            zones_built = built,
            zones_kept = kept,
            "snapshot built"
        );
        release_free_memory();
        Self {
            zones: zones.into(),
            fast: Arc::new(fast),
            max_udp_payload: server.max_udp_payload,
            geo,
            geo_fingerprint,
            health: Arc::new(health),
            seed: {
                use std::hash::{BuildHasher, RandomState};
                RandomState::new().hash_one(started)
            },
            nsid: server.nsid.as_deref().map(Arc::from),
            cookies: server.cookies.clone().map(Arc::new),
            latency: Arc::new(LatencyView::default()),
        }
        .with_latency(
            Sources {
                model: Model::new(&server.latency),
                ..Sources::default()
            },
            Box::default(),
        )
    }

    /// The same snapshot with latency data from `sources`, and each
    /// zone's probe assignment (snapshot order; missing zones have none).
    pub fn with_latency(&self, sources: Sources, probes: Box<[ProbeIncumbent]>) -> Self {
        let view = LatencyView::new(
            sources,
            self.zones.iter().map(|z| &z.config.datacenters[..]),
            probes,
        );
        Self {
            latency: Arc::new(view),
            ..self.clone()
        }
    }

    /// The same snapshot with another health view.
    pub fn with_health(&self, health: HealthView) -> Self {
        Self {
            health: Arc::new(health),
            ..self.clone()
        }
    }

    /// The same snapshot with `new` in place of `old` (found by
    /// pointer), everything else kept: health, latency, the other zones.
    /// `None` when `old` is no longer served (a reload replaced it). A
    /// background re-sign publishes through this, inside `rcu`, so it
    /// applies to whatever snapshot is current, like a health change.
    pub fn with_zone(&self, old: &Arc<Zone>, new: &Arc<Zone>) -> Option<Self> {
        let at = self.zones.iter().position(|z| Arc::ptr_eq(z, old))?;
        let mut zones: Vec<Arc<Zone>> = self.zones.to_vec();
        zones[at] = Arc::clone(new);
        let fast = FastIndex::new(&zones);
        Some(Self {
            zones: zones.into(),
            fast: Arc::new(fast),
            ..self.clone()
        })
    }

    /// The most specific zone containing `name`, with its position.
    pub fn find_zone(&self, name: &DomainName) -> Option<(usize, &Zone)> {
        self.zones
            .iter()
            .enumerate()
            .find(|(_, z)| z.origin().zone_of(name))
            .map(|(i, z)| (i, &**z))
    }

    /// Zones, most specific first.
    pub fn zones(&self) -> &[Arc<Zone>] {
        &self.zones
    }

    /// The zone list itself, shared by every snapshot a health or
    /// latency change derives from it: a new one means a reload or a
    /// background re-sign (the metrics re-index their counters then).
    pub fn zones_shared(&self) -> &Arc<[Arc<Zone>]> {
        &self.zones
    }

    /// The routing plan of a service, by zone position in [`Self::zones`]
    /// and service position in that zone's config.
    pub fn plan(&self, zone: usize, service: usize) -> Option<&Plan> {
        let zone = self.zones.get(zone)?;
        (service < zone.config.services.len()).then(|| &*zone.service(service).plan)
    }
}

/// A zone for [`Snapshot::build`].
#[derive(Debug)]
pub enum ZoneSource {
    /// Build from this config; the number identifies the files it came
    /// from (see [`Zone::fingerprint`]).
    Fresh(Box<ZoneConfig>, u64),
    /// Keep a zone built before, as it is.
    Kept(Arc<Zone>),
}
