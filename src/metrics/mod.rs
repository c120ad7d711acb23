//! Prometheus metrics: `GET /metrics` on the admin listener.
//!
//! Nothing here runs per query except [`dns::Tally::count`]: each UDP
//! thread owns a [`dns::Shard`] of plain counters, indexed by the
//! snapshot's numeric ids (zone, service, datacenter positions), that it
//! locks once per `recvmmsg` batch. A scrape locks each shard in turn,
//! resolves the ids to names and adds the shards up. Everything else
//! (probes, health, reloads, RRL, TCP) is read from where it is already
//! kept, at scrape time, through [`Sources`].
//!
//! Names follow the Prometheus conventions (`meridian_` prefix, `_total`
//! for counters, base units such as `_seconds`) and, where they fit,
//! CoreDNS's labels (`zone`, `type`, `rcode`, `proto`).

pub mod dns;

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

/// The `Content-Type` of `GET /metrics`: the Prometheus text format
/// 0.0.4, which every Prometheus version scrapes.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

//------------ Families -------------------------------------------------------

/// A metric's type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Monotonic; the name is given without `_total`, which the encoder
    /// appends.
    Counter,
    /// Goes up and down.
    Gauge,
    /// Cumulative buckets, sum and count.
    Histogram,
}

/// One sample's value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// A count (counters, integer gauges).
    Int(u64),
    /// A measurement (gauges).
    Float(f64),
    /// A histogram: upper bounds with cumulative counts (without `+Inf`,
    /// which is `count`), the sum and the count.
    Histogram {
        /// `(upper bound, observations at or below it)`, ascending.
        buckets: Vec<(f64, u64)>,
        /// Sum of the observations.
        sum: f64,
        /// Number of observations.
        count: u64,
    },
}

/// Labels of one sample, in order.
pub type Labels = Vec<(&'static str, String)>;

/// A metric family with its samples.
#[derive(Clone, Debug)]
pub struct Family {
    /// Full name (`meridian_...`), without `_total` for counters.
    pub name: &'static str,
    /// One line of help.
    pub help: &'static str,
    /// The type.
    pub kind: Kind,
    /// The samples.
    pub samples: Vec<(Labels, Value)>,
}

impl Family {
    /// An empty family.
    pub fn new(name: &'static str, help: &'static str, kind: Kind) -> Self {
        Self {
            name,
            help,
            kind,
            samples: Vec::new(),
        }
    }

    /// Adds a sample.
    pub fn push(&mut self, labels: Labels, value: Value) {
        self.samples.push((labels, value));
    }

    /// Adds an integer sample.
    pub fn int(&mut self, labels: Labels, value: u64) {
        self.push(labels, Value::Int(value));
    }
}

/// Observations counted over fixed upper bounds, read as a
/// [`Value::Histogram`].
#[derive(Clone, Debug)]
pub struct Histogram<const N: usize> {
    bounds: &'static [f64; N],
    /// Observations at or below each bound (cumulative).
    buckets: [u64; N],
    sum: f64,
    count: u64,
}

impl<const N: usize> Histogram<N> {
    /// An empty histogram over `bounds` (ascending, without `+Inf`).
    pub const fn new(bounds: &'static [f64; N]) -> Self {
        Self {
            bounds,
            buckets: [0; N],
            sum: 0.0,
            count: 0,
        }
    }

    /// Counts one observation.
    pub fn observe(&mut self, value: f64) {
        for (bucket, &le) in self.buckets.iter_mut().zip(self.bounds) {
            if value <= le {
                *bucket += 1;
            }
        }
        self.sum += value;
        self.count += 1;
    }

    /// The sample.
    pub fn value(&self) -> Value {
        Value::Histogram {
            buckets: self.bounds.iter().copied().zip(self.buckets).collect(),
            sum: self.sum,
            count: self.count,
        }
    }
}

/// Writes its families into the list at scrape time.
pub type Source = Box<dyn Fn(&mut Vec<Family>) + Send + Sync>;

/// The prometheus-client collector over every [`Source`].
struct Sources(Arc<Mutex<Vec<Source>>>);

impl std::fmt::Debug for Sources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sources").finish_non_exhaustive()
    }
}

impl Collector for Sources {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let mut families = Vec::new();
        for source in self.0.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            source(&mut families);
        }
        for family in &families {
            let kind = match family.kind {
                Kind::Counter => MetricType::Counter,
                Kind::Gauge => MetricType::Gauge,
                Kind::Histogram => MetricType::Histogram,
            };
            let mut metric = encoder.encode_descriptor(family.name, family.help, None, kind)?;
            for (labels, value) in &family.samples {
                let labels: Vec<(&str, &str)> =
                    labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
                let mut sample = metric.encode_family(&labels)?;
                match (family.kind, value) {
                    (Kind::Counter, Value::Int(v)) => {
                        sample.encode_counter::<NoLabelSet, _, u64>(v, None)?;
                    }
                    (Kind::Counter, Value::Float(v)) => {
                        sample.encode_counter::<NoLabelSet, _, f64>(v, None)?;
                    }
                    (_, Value::Int(v)) => sample.encode_gauge(v)?,
                    (_, Value::Float(v)) => sample.encode_gauge(v)?,
                    (
                        _,
                        Value::Histogram {
                            buckets,
                            sum,
                            count,
                        },
                    ) => {
                        let mut all = buckets.clone();
                        all.push((f64::INFINITY, *count));
                        // prometheus-client wants per-bucket counts and
                        // accumulates them itself.
                        let mut prev = 0;
                        for b in &mut all {
                            let cumulative = b.1;
                            b.1 = cumulative.saturating_sub(prev);
                            prev = cumulative;
                        }
                        sample.encode_histogram::<NoLabelSet>(*sum, *count, &all, None)?;
                    }
                }
            }
        }
        Ok(())
    }
}

//------------ Metrics --------------------------------------------------------

/// The process's metrics: the DNS shards and the other sources, and the
/// few counters that live nowhere else (reloads, the query log's drops).
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    sources: Arc<Mutex<Vec<Source>>>,
    /// The DNS counters.
    pub dns: Arc<dns::DnsMetrics>,
    /// Reloads by result, the generation and the snapshot build times.
    pub reloads: Arc<Reloads>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Empty metrics with the DNS and reload families registered.
    pub fn new() -> Self {
        let sources: Arc<Mutex<Vec<Source>>> = Arc::default();
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Sources(Arc::clone(&sources))));
        let metrics = Self {
            registry: Arc::new(registry),
            sources,
            dns: Arc::new(dns::DnsMetrics::default()),
            reloads: Arc::new(Reloads::default()),
        };
        let dns = Arc::clone(&metrics.dns);
        metrics.add_source(Box::new(move |out| dns.families(out)));
        let reloads = Arc::clone(&metrics.reloads);
        metrics.add_source(Box::new(move |out| reloads.families(out)));
        metrics
    }

    /// Adds a source of families, read at every scrape.
    pub fn add_source(&self, source: Source) {
        self.sources
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(source);
    }

    /// The text exposition (see [`CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        if prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry).is_err() {
            // Writing to a String does not fail; an encoder error would
            // be a bad name, which the tests would catch.
            out.clear();
        }
        out
    }
}

//------------ Reloads --------------------------------------------------------

/// Upper bounds of the snapshot build time histogram, in seconds.
const BUILD_BUCKETS: [f64; 10] = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Reload counts, the configuration generation and build times.
#[derive(Debug, Default)]
pub struct Reloads {
    ok: AtomicU64,
    error: AtomicU64,
    generation: AtomicU64,
    builds: Mutex<Builds>,
}

#[derive(Debug)]
struct Builds {
    times: Histogram<{ BUILD_BUCKETS.len() }>,
    last: f64,
}

impl Default for Builds {
    fn default() -> Self {
        Self {
            times: Histogram::new(&BUILD_BUCKETS),
            last: 0.0,
        }
    }
}

impl Reloads {
    /// Records a reload's result.
    pub fn reloaded(&self, ok: bool) {
        let c = if ok { &self.ok } else { &self.error };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Sets the configuration generation in service.
    pub fn set_generation(&self, generation: u64) {
        self.generation.store(generation, Ordering::Relaxed);
    }

    /// Records how long loading the config and building a snapshot took
    /// (start-up and every reload, successful or not).
    pub fn built(&self, seconds: f64) {
        let mut b = self.builds.lock().unwrap_or_else(|e| e.into_inner());
        b.times.observe(seconds);
        b.last = seconds;
    }

    fn families(&self, out: &mut Vec<Family>) {
        let mut f = Family::new(
            "meridian_reloads",
            "Configuration reloads (SIGHUP or POST /reload) by result.",
            Kind::Counter,
        );
        f.int(
            vec![("result", "ok".into())],
            self.ok.load(Ordering::Relaxed),
        );
        f.int(
            vec![("result", "error".into())],
            self.error.load(Ordering::Relaxed),
        );
        out.push(f);
        let mut f = Family::new(
            "meridian_config_generation",
            "Generation of the configuration in service: 1 at start-up, +1 per successful reload.",
            Kind::Gauge,
        );
        f.int(vec![], self.generation.load(Ordering::Relaxed));
        out.push(f);
        let b = self.builds.lock().unwrap_or_else(|e| e.into_inner());
        let mut f = Family::new(
            "meridian_snapshot_build_seconds",
            "Time to load the configuration and build a snapshot (start-up and reloads).",
            Kind::Histogram,
        );
        f.push(vec![], b.times.value());
        out.push(f);
        let mut f = Family::new(
            "meridian_snapshot_last_build_seconds",
            "Time the last snapshot build took.",
            Kind::Gauge,
        );
        f.push(vec![], Value::Float(b.last));
        out.push(f);
    }
}
