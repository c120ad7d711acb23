//! The RUM side at run time: the aggregator behind a mutex, fed by the
//! beacon listener and the admin import, published into the served
//! snapshot every `publish_interval` together with the probe RTTs, and
//! saved to `state_file`.
//!
//! Only ingestion, publication and saving take the mutex; the query path
//! reads the published [`super::LatencyView`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::asn::AsnTable;
use super::beacon::BeaconSink;
use super::rum::{AggSettings, Aggregator};
use super::table::key_for;
use super::{Model, ProbeIncumbent, Rum, Sources, unix_now};
use crate::config::{Coarse, Config, LatencyConfig};
use crate::health::monitor::Monitor;
use crate::model::DcId;
use crate::snapshot::Snapshot;

/// The settings beacons are keyed and checked by, swapped whole on reload.
#[derive(Clone, Debug)]
struct Keys {
    /// `[latency]` as last configured.
    config: LatencyConfig,
    coarse: CoarseKey,
    /// Datacenter names of the current config, with their aggregator
    /// columns: resolved without the aggregator's lock.
    columns: HashMap<String, u16>,
}

#[derive(Clone, Debug)]
enum CoarseKey {
    Prefix(u8, u8),
    Asn(Option<Arc<AsnTable>>),
}

/// The aggregator and what publishing needs; cheap to share.
#[derive(Debug)]
pub struct Hub {
    agg: Mutex<Aggregator>,
    /// Beacons that arrived while `agg` was taken: the listener and the
    /// import never wait for a publication or a save.
    pending: Mutex<Pending>,
    keys: ArcSwap<Keys>,
    /// Each zone's probe assignment, by (origin, datacenter name): kept
    /// across publications and reloads.
    probe_assignments: Mutex<HashMap<String, (String, u32)>>,
}

fn names(config: &Config) -> Vec<String> {
    let mut names: Vec<String> = config
        .zones
        .iter()
        .flat_map(|z| z.datacenters.iter().map(|d| d.name.clone()))
        .collect();
    names.sort();
    names.dedup();
    names
}

fn keys(config: &Config, asn: Option<Arc<AsnTable>>, agg: &Aggregator) -> Keys {
    let c = &config.server.latency;
    Keys {
        config: c.clone(),
        coarse: match c.coarse {
            Coarse::Prefix(v4, v6) => CoarseKey::Prefix(v4, v6),
            Coarse::Asn(_) => CoarseKey::Asn(asn),
        },
        columns: names(config)
            .into_iter()
            .filter_map(|n| Some((n.clone(), agg.column(&n)?)))
            .collect(),
    }
}

/// One client's samples, as [`Aggregator::add`] takes them: fine key,
/// coarse key, (column, rtt ms, weight), time.
type Beacon = (u64, Option<u64>, Vec<(u16, f64, f64)>, u32);

/// Samples waiting while the aggregator is busy publishing or saving.
#[derive(Debug, Default)]
struct Pending {
    beacons: Vec<Beacon>,
    dropped: u64,
}

/// Beacons kept while the aggregator is busy (publishing 1M networks takes
/// about a second); beyond this they are dropped and counted.
const MAX_PENDING: usize = 65_536;

impl Hub {
    /// A hub for `config`, with the aggregates saved in its state file
    /// loaded (a corrupt file is logged and ignored).
    pub fn new(config: &Config, asn: Option<Arc<AsnTable>>) -> Self {
        let c = &config.server.latency;
        let mut agg = Aggregator::new(AggSettings::from(c));
        agg.configure(AggSettings::from(c), &names(config));
        if let Some(path) = &c.state_file {
            match agg.load(path, unix_now()) {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(path = %path.display(), entries = n, "latency aggregates loaded")
                }
                Err(e) => tracing::error!(
                    path = %path.display(),
                    "latency aggregates not loaded, starting empty: {e}"
                ),
            }
        }
        let keys = keys(config, asn, &agg);
        Self {
            agg: Mutex::new(agg),
            pending: Mutex::default(),
            keys: ArcSwap::from_pointee(keys),
            probe_assignments: Mutex::new(HashMap::new()),
        }
    }

    /// The aggregator, with the beacons that waited for it applied.
    fn agg(&self) -> std::sync::MutexGuard<'_, Aggregator> {
        let mut agg = self.agg.lock().unwrap_or_else(|e| e.into_inner());
        self.drain(&mut agg);
        agg
    }

    fn drain(&self, agg: &mut Aggregator) {
        let waiting = std::mem::take(
            &mut self
                .pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .beacons,
        );
        for (fine, coarse, samples, at) in waiting {
            agg.add(fine, coarse, &samples, at);
        }
    }

    fn latency_settings(&self) -> LatencyConfig {
        self.keys.load().config.clone()
    }

    /// Applies a reloaded config. A changed key layout (prefix lengths,
    /// coarse kind) keeps the data under the old keys until it decays.
    pub fn configure(&self, config: &Config, asn: Option<Arc<AsnTable>>) {
        let c = &config.server.latency;
        let mut agg = self.agg();
        agg.configure(AggSettings::from(c), &names(config));
        self.keys.store(Arc::new(keys(config, asn, &agg)));
        drop(agg);
    }

    /// Publishes the aggregates as of `now`.
    pub fn publish_rum(&self, now: u32) -> Arc<Rum> {
        Arc::new(self.agg().publish(now))
    }

    /// `snap` with fresh health (probe RTTs) and `rum`, each zone's probe
    /// assignment updated with hysteresis.
    pub fn refresh(&self, snap: &Snapshot, monitor: &Monitor, rum: Arc<Rum>, now: u32) -> Snapshot {
        let snap = snap.with_health(monitor.view_for(snap));
        let sources = Sources {
            rum,
            ..snap.latency.sources()
        };
        let probes = self.assign_probes(&snap, sources.model.clone(), now);
        snap.with_latency(sources, probes)
    }

    /// Each zone's fastest datacenter by probe RTT, kept unless another
    /// beats it by both margins.
    fn assign_probes(&self, snap: &Snapshot, model: Model, now: u32) -> Box<[ProbeIncumbent]> {
        let mut kept = self
            .probe_assignments
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        snap.zones()
            .iter()
            .enumerate()
            .map(|(zi, z)| {
                let origin = z.origin().to_ascii();
                let health = snap.health.zone(zi);
                let rtt = |i: usize| {
                    health
                        .get(i)
                        .filter(|h| h.rtt_us != 0 && h.usable(crate::model::Warmup::AssumeDown))
                        .map(|h| h.rtt_us as f32 / 1000.0)
                };
                let dcs = &z.config.datacenters;
                let best = (0..dcs.len())
                    .filter_map(|i| rtt(i).map(|r| (i, r)))
                    .min_by(|a, b| a.1.total_cmp(&b.1));
                let previous = kept.get(&origin).and_then(|(name, since)| {
                    Some((dcs.iter().position(|d| &d.name == name)?, *since))
                });
                let chosen = match (previous, best) {
                    (_, None) => None,
                    (Some((p, since)), Some((b, best_rtt)))
                        if p == b || rtt(p).is_some_and(|pr| !model.beats(best_rtt, pr)) =>
                    {
                        Some((p, since))
                    }
                    (_, Some((b, _))) => Some((b, now)),
                };
                match chosen {
                    Some((i, since)) => {
                        kept.insert(origin, (dcs[i].name.clone(), since));
                        u16::try_from(i).ok().map(|i| (DcId(i), since))
                    }
                    None => {
                        kept.remove(&origin);
                        None
                    }
                }
            })
            .collect()
    }

    /// Saves the aggregates to the state file, if one is configured.
    pub fn save(&self) {
        let Some(path) = self.latency_settings().state_file else {
            return;
        };
        if let Err(e) = self.agg().save(&path) {
            tracing::error!(path = %path.display(), "latency aggregates not saved: {e}");
        }
    }

    /// `/status` figures.
    pub fn status(&self) -> Value {
        let s = self.agg().stats();
        json!({
            "fine_keys": s.fine_keys,
            "coarse_keys": s.coarse_keys,
            "evictions": s.evictions,
            "expired": s.expired,
            "samples_accepted": s.samples_accepted,
            "samples_rejected": s.samples_rejected,
            "memory_bytes": s.bytes,
            "beacons_dropped_busy": self.pending.lock().unwrap_or_else(|e| e.into_inner()).dropped,
        })
    }
}

impl BeaconSink for Hub {
    fn limits(&self) -> super::beacon::BeaconLimits {
        let keys = self.keys.load();
        super::beacon::BeaconLimits {
            max_rtt_ms: keys.config.max_rtt_ms,
            ipv4_prefix_length: keys.config.fine.0,
            ipv6_prefix_length: keys.config.fine.1,
        }
    }

    fn known(&self, datacenter: &str) -> bool {
        self.keys.load().columns.contains_key(datacenter)
    }

    fn accept(&self, client: IpAddr, samples: &[(String, f64, f64)]) {
        let keys = self.keys.load();
        let (v4, v6) = keys.config.fine;
        let fine = key_for(client, v4, v6);
        let coarse = match &keys.coarse {
            CoarseKey::Prefix(v4, v6) => Some(key_for(client, *v4, *v6)),
            CoarseKey::Asn(table) => table
                .as_ref()
                .and_then(|t| t.lookup(client).0)
                .map(u64::from),
        };
        let columns: Vec<(u16, f64, f64)> = samples
            .iter()
            .filter_map(|(name, rtt, weight)| Some((*keys.columns.get(name)?, *rtt, *weight)))
            .collect();
        let now = unix_now();
        match self.agg.try_lock() {
            Ok(mut agg) => {
                self.drain(&mut agg);
                agg.add(fine, coarse, &columns, now);
            }
            Err(std::sync::TryLockError::Poisoned(e)) => {
                let mut agg = e.into_inner();
                self.drain(&mut agg);
                agg.add(fine, coarse, &columns, now);
            }
            // Publishing or saving: keep it for then.
            Err(std::sync::TryLockError::WouldBlock) => {
                let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
                if pending.beacons.len() < MAX_PENDING {
                    pending.beacons.push((fine, coarse, columns, now));
                } else {
                    pending.dropped += 1;
                }
            }
        }
    }
}

/// Publishes every `publish_interval` and saves every `save_interval`
/// until `token` is cancelled; then saves once more.
pub async fn run(
    hub: Arc<Hub>,
    monitor: Monitor,
    swap: Arc<ArcSwap<Snapshot>>,
    token: CancellationToken,
) {
    let mut last_save = tokio::time::Instant::now();
    loop {
        let settings = hub.latency_settings();
        tokio::select! {
            () = token.cancelled() => break,
            () = tokio::time::sleep(settings.publish_interval) => {}
        }
        let now = unix_now();
        let hub2 = Arc::clone(&hub);
        // Building the tables walks every entry: off the runtime threads.
        let Ok(rum) = tokio::task::spawn_blocking(move || hub2.publish_rum(now)).await else {
            continue;
        };
        swap.rcu(|cur| Arc::new(hub.refresh(cur, &monitor, Arc::clone(&rum), now)));
        if last_save.elapsed() >= settings.save_interval {
            last_save = tokio::time::Instant::now();
            let hub2 = Arc::clone(&hub);
            let _ = tokio::task::spawn_blocking(move || hub2.save()).await;
        }
    }
    let _ = tokio::task::spawn_blocking(move || hub.save()).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn hub() -> Hub {
        let zone = crate::config::parse_zone(
            Path::new("z.toml"),
            "origin = \"t.test.\"\nns = [\"ns.example.\"]\n[soa]\nrname = \"h.t.test.\"\nserial = 1\n\
             [datacenters.a]\naddresses = [\"192.0.2.1\"]\n[datacenters.b]\naddresses = [\"192.0.2.2\"]\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let server = crate::config::parse_server(
            Path::new("m.toml"),
            "[latency]\nstate_file = \"\"\nmin_samples = 1\nmax_rtt_ms = 100.5\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        Hub::new(
            &Config {
                server,
                zones: vec![zone],
            },
            None,
        )
    }

    /// A beacon that arrives while a publication or a save holds the
    /// aggregator waits in the queue instead of blocking its thread, and
    /// counts at the next publication.
    #[test]
    fn beacons_never_wait_for_a_publication() {
        let hub = hub();
        assert_eq!(hub.limits().max_rtt_ms, 100.5, "not cut to whole ms");
        let samples = [("a".to_string(), 20.0, 1.0), ("b".to_string(), 30.0, 1.0)];
        let client: IpAddr = "198.51.100.7".parse().unwrap_or(IpAddr::from([0; 4]));
        let busy = hub.agg.lock().unwrap_or_else(|e| e.into_inner());
        hub.accept(client, &samples);
        assert_eq!(hub.pending.lock().map(|p| p.beacons.len()).unwrap_or(0), 1);
        drop(busy);
        let rum = hub.publish_rum(unix_now());
        assert_eq!(rum.fine.len(), 1, "the queued beacon was applied");
        assert_eq!(hub.status()["samples_accepted"], 2);
        assert!(hub.known("a") && !hub.known("c"));
    }
}
