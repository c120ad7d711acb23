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

use crate::config::Config;
use crate::dns::fast::FastIndex;
use crate::dns::records::DomainName;
use crate::dns::zone::Zone;
use crate::geo::GeoDb;
use crate::health::{DcHealth, HealthView, Observed};
use crate::model::{DcId, GeoSpec, PolicySpec};
use crate::policy::Policy;
use crate::policy::failover::FailoverPolicy;
use crate::policy::geo::GeoPolicy;

/// Building walks the GeoIP database with large temporary vectors; give
/// the freed memory back to the system so it does not stay resident.
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free heap memory.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// What makes two services' geo tables identical.
type TableKey = (Vec<DcId>, GeoSpec);

/// Everything a query needs, frozen.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// Zones, most specific origin first (longest match wins).
    zones: Arc<[Zone]>,
    /// Geo policies by zone and service (for `explain`), aligned with
    /// each zone's `config.services`; `None` for other policies.
    geo_policies: Arc<[Vec<Option<Arc<GeoPolicy>>>]>,
    /// Pre-encoded responses for the fast path.
    pub(crate) fast: Arc<FastIndex>,
    /// Largest UDP response we send.
    pub max_udp_payload: u16,
    /// The GeoIP database the tables were built from.
    pub geo: Arc<GeoDb>,
    /// Health of every datacenter, indexed like `zones`.
    pub health: Arc<HealthView>,
}

impl Snapshot {
    /// Builds every zone and policy table. Datacenters with probes start
    /// Unknown, the others Up.
    pub fn build(config: &Config, geo: Arc<GeoDb>) -> Self {
        let started = Instant::now();
        let mut zones = Vec::with_capacity(config.zones.len());
        let mut geo_policies = Vec::with_capacity(config.zones.len());
        for zc in &config.zones {
            // Services with the same datacenters and overrides share one
            // table: building one walks the whole GeoIP database.
            let mut cache: Vec<(TableKey, Arc<GeoPolicy>)> = Vec::new();
            let mut policies: Vec<Arc<dyn Policy>> = Vec::with_capacity(zc.services.len());
            let mut geos = Vec::with_capacity(zc.services.len());
            for s in &zc.services {
                let spec = match &s.policy {
                    PolicySpec::Geo(spec) => spec,
                    PolicySpec::Failover => {
                        policies.push(Arc::new(FailoverPolicy::new(&s.datacenters)));
                        geos.push(None);
                        continue;
                    }
                };
                let key = (s.datacenters.clone(), spec.clone());
                let policy = match cache.iter().find(|(k, _)| *k == key) {
                    Some((_, p)) => Arc::clone(p),
                    None => {
                        let p = Arc::new(GeoPolicy::build(
                            spec,
                            &s.datacenters,
                            &zc.datacenters,
                            &geo,
                        ));
                        let (v4, v6) = p.table_sizes();
                        tracing::debug!(
                            zone = %zc.origin, service = %s.name, rankings = p.ranking_count(),
                            v4_blocks = v4, v6_blocks = v6, "built geo table"
                        );
                        cache.push((key, Arc::clone(&p)));
                        p
                    }
                };
                geos.push(Some(Arc::clone(&policy)));
                policies.push(policy);
            }
            zones.push(Zone::build(Arc::new(zc.clone()), policies));
            geo_policies.push(geos);
        }
        // Most labels first, so a child zone served here wins over its parent.
        let mut order: Vec<usize> = (0..zones.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(zones[i].origin_labels()));
        let mut zones: Vec<Option<Zone>> = zones.into_iter().map(Some).collect();
        let mut geo_policies: Vec<Option<_>> = geo_policies.into_iter().map(Some).collect();
        let (zones, geo_policies): (Vec<Zone>, Vec<_>) = order
            .into_iter()
            .map(|i| {
                (
                    zones[i].take().expect("once"),
                    geo_policies[i].take().expect("once"),
                )
            })
            .unzip();
        let fast = FastIndex::build(&zones);
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
                            forced: None,
                        })
                        .collect()
                })
                .collect(),
        );
        tracing::info!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "snapshot built"
        );
        release_free_memory();
        Self {
            zones: zones.into(),
            geo_policies: geo_policies.into(),
            fast: Arc::new(fast),
            max_udp_payload: config.server.max_udp_payload,
            geo,
            health: Arc::new(health),
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
    }

    /// Zones, most specific first.
    pub fn zones(&self) -> &[Zone] {
        &self.zones
    }

    /// The geo policy of a service, by zone position in [`Self::zones`] and
    /// service position in that zone's config.
    pub fn geo_policy(&self, zone: usize, service: usize) -> Option<&GeoPolicy> {
        self.geo_policies.get(zone)?.get(service)?.as_deref()
    }
}
