//! The immutable snapshot every query reads: zones in wire form, their
//! policies, the server settings the query path needs, and the health of
//! every datacenter.
//!
//! Built from a validated [`Config`] and an open [`GeoDb`]; published
//! through an `ArcSwap` so a reload or a health change replaces it
//! atomically while queries in flight finish on the old one. A health
//! change reuses every other part (they are behind `Arc`s), so publishing
//! one costs a few allocations, not a rebuild.

use std::sync::Arc;
use std::time::Instant;

use crate::config::ServerConfig;
use crate::dns::cookie::Cookies;
use crate::dns::fast::FastIndex;
use crate::dns::records::DomainName;
use crate::dns::zone::Zone;
use crate::geo::GeoDb;
use crate::health::{DcHealth, HealthView, Observed};
use crate::latency::{LatencyView, Model, ProbeIncumbent, Sources};
use crate::model::{Attribute, DcId, GeoSpec, LatencySource, Step, ZoneConfig};
use crate::policy::Plan;
use crate::policy::geo::{GeoPolicy, Keep};

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

/// What makes two services' geo tables identical.
type TableKey = (Vec<DcId>, GeoSpec, Keep);

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
        let (mut built, mut kept) = (0usize, 0usize);
        let mut zones: Vec<Arc<Zone>> = sources
            .into_iter()
            .map(|source| match source {
                ZoneSource::Kept(zone) => {
                    kept += 1;
                    zone
                }
                ZoneSource::Fresh(zc, fingerprint) => {
                    built += 1;
                    Arc::new(build_zone(*zc, &geo, fingerprint))
                }
            })
            .collect();
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

/// Builds one zone with its policy tables.
fn build_zone(mut zc: ZoneConfig, geo: &GeoDb, fingerprint: u64) -> Zone {
    let records = std::mem::take(&mut zc.records);
    let zc = &zc;
    // Services with the same datacenters and geo settings share
    // one table: building one walks the whole GeoIP database.
    let mut cache: Vec<(TableKey, Arc<GeoPolicy>)> = Vec::new();
    let mut plans = Vec::with_capacity(zc.services.len());
    for s in &zc.services {
        let spec = &s.policy;
        let table = spec.needs_location().then(|| {
            let keep = Keep {
                country: spec.steps.contains(&Step::Same(Attribute::Country)),
                continent: spec.steps.contains(&Step::Same(Attribute::Continent)),
                distance: spec.steps.contains(&Step::Latency)
                    && spec.latency_source == LatencySource::Clients,
            };
            let key = (s.datacenters.clone(), spec.geo.clone(), keep);
            if let Some((_, p)) = cache.iter().find(|(k, _)| *k == key) {
                return Arc::clone(p);
            }
            let p = Arc::new(GeoPolicy::build(
                &spec.geo,
                &s.datacenters,
                &zc.datacenters,
                geo,
                keep,
            ));
            let (v4, v6) = p.table_sizes();
            tracing::debug!(
                zone = %zc.origin, service = %s.name, classes = p.ranking_count(),
                v4_blocks = v4, v6_blocks = v6, "built geo table"
            );
            cache.push((key, Arc::clone(&p)));
            p
        });
        plans.push(Arc::new(Plan::build(zc, s, table, geo.countries())));
    }
    Zone::build(
        ZoneConfig {
            records,
            ..zc.clone()
        },
        plans,
        fingerprint,
    )
}
