//! The monitor: runs every probe on its own schedule, feeds the state
//! machines, and publishes a new snapshot when a datacenter's state
//! changes.
//!
//! One task per target sleeps `interval` (spread by `jitter`), waits for a
//! slot (`max_probes_in_flight`), probes with `timeout`, and records the
//! result under a mutex that only the monitor and the admin API take. The
//! query path never touches it: it reads the published snapshot. A target
//! that hangs costs its own task a timeout and nothing else.
//!
//! A probe that could not run because of this host (a local fault, see
//! [`super::probe::classify`]) leaves the target's state as it was. It is
//! counted and shown per target in `/status`, logged at most once a minute
//! per target, and after [`STALE_AFTER_FALLS`] × `fall` intervals of
//! nothing else, `/status` marks the kept state as stale. The datacenter
//! is never failed over for it: this host's trouble would move clients
//! away from a datacenter that is fine.
//!
//! Each passing probe's RTT feeds its target's [`RttStats`]; failures and
//! local faults do not. A datacenter's [`DcHealth::rtt_us`] and
//! [`DcHealth::congested`] come from its fastest UP target when a view is
//! built. They are not part of what makes the monitor republish (that
//! would republish on every probe): the latency publisher republishes
//! every `publish_interval`, and any state change republishes too.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::overrides::{DcKey, Overrides, Stored};
use super::probe::{Outcome, Prober};
use super::rtt::{DEFAULT_CONGESTION_FACTOR, RttStats};
use super::state::{Machine, TargetState};
use super::{DcHealth, HealthView, Observed, Override, Verdict};
use crate::config::{Config, Quorum};
use crate::metrics::Histogram;
use crate::model::{ProbeKind, ProbeSpec};
use crate::snapshot::Snapshot;

#[derive(Debug)]
struct Target {
    addr: SocketAddr,
    machine: Machine,
    last: Option<Outcome>,
    last_at: Option<SystemTime>,
    changed_at: Option<SystemTime>,
    probes: u64,
    /// The last capacity the target reported, and when.
    capacity: Option<(u8, tokio::time::Instant)>,
    /// Counted in the first round's `pending`, and not yet probed since.
    awaited: bool,
    /// Probes that failed because of this host.
    local: LocalFaults,
    /// RTTs of passing probes.
    rtt: RttStats,
    /// The probe type ([`ProbeKind::type_name`]) the RTTs were measured with.
    kind: &'static str,
    /// When the target's server certificate expires, as last seen (TLS
    /// probes); kept through failures that never reach the handshake.
    cert_not_after: Option<SystemTime>,
    /// Probe results, RTTs and state changes, for the metrics.
    counts: ProbeCounts,
}

impl Target {
    /// Whole days until the server certificate expires (negative once
    /// expired); `None` when not TLS or not yet seen.
    fn cert_days_left(&self, now: SystemTime) -> Option<i64> {
        self.cert_not_after
            .map(|t| super::probe::tls::days_left(t, now))
    }
}

/// Upper bounds of the probe RTT histogram, in seconds.
const RTT_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// The verdicts counted per target, in `meridian_probe_results` order.
const VERDICTS: [Verdict; 3] = [Verdict::Pass, Verdict::Fail, Verdict::LocalFault];

/// A target's probe counts since it was first configured (reloads that
/// keep the target keep them).
#[derive(Debug, Clone)]
struct ProbeCounts {
    /// By verdict, in [`VERDICTS`] order.
    results: [u64; VERDICTS.len()],
    /// RTT of every probe that ran (pass or fail), in seconds.
    rtt: Histogram<{ RTT_BUCKETS.len() }>,
    /// State changes (UP, DOWN).
    changes: u64,
}

impl Default for ProbeCounts {
    fn default() -> Self {
        Self {
            results: [0; VERDICTS.len()],
            rtt: Histogram::new(&RTT_BUCKETS),
            changes: 0,
        }
    }
}

impl ProbeCounts {
    fn observe(&mut self, outcome: &Outcome, changed: bool) {
        if let Some(i) = VERDICTS.iter().position(|&v| v == outcome.verdict) {
            self.results[i] += 1;
        }
        if outcome.verdict != Verdict::LocalFault {
            self.rtt.observe(outcome.rtt.as_secs_f64());
        }
        self.changes += u64::from(changed);
    }
}

//------------ LocalFaults --------------------------------------------------

/// A local fault lasting longer than this many times `fall` intervals
/// marks the target's kept state as stale in `/status`.
pub const STALE_AFTER_FALLS: u32 = 10;

/// At most one WARN per target per this long about local faults.
pub const LOCAL_FAULT_LOG_EVERY: Duration = Duration::from_secs(60);

/// One target's local faults: a count since start and the current run of
/// them. Time is passed in, so the rules are tested without a clock.
#[derive(Debug, Default)]
struct LocalFaults {
    /// Since the target was first configured (reloads keep it).
    count: u64,
    /// Wall-clock time of the last one.
    last_at: Option<SystemTime>,
    /// Probes have failed locally since then, and nothing else happened.
    run: Option<Run>,
    /// When the last WARN about this target was logged.
    warned_at: Option<tokio::time::Instant>,
}

/// A run of consecutive local faults.
#[derive(Debug)]
struct Run {
    since: tokio::time::Instant,
    since_wall: SystemTime,
    /// The latest reason.
    reason: String,
    /// Local faults in this run.
    count: u64,
}

impl LocalFaults {
    /// Records a local fault; returns whether to log a WARN (at most once
    /// per [`LOCAL_FAULT_LOG_EVERY`], however often faults come and go).
    fn fault(&mut self, reason: String, now: tokio::time::Instant, wall: SystemTime) -> bool {
        self.count += 1;
        self.last_at = Some(wall);
        match &mut self.run {
            Some(run) => {
                run.reason = reason;
                run.count += 1;
            }
            None => {
                self.run = Some(Run {
                    since: now,
                    since_wall: wall,
                    reason,
                    count: 1,
                });
            }
        }
        let warn = self
            .warned_at
            .is_none_or(|at| now.saturating_duration_since(at) >= LOCAL_FAULT_LOG_EVERY);
        if warn {
            self.warned_at = Some(now);
        }
        warn
    }

    /// A probe reached the target: ends the run, if any, and returns it.
    fn clear(&mut self) -> Option<Run> {
        self.run.take()
    }

    /// Whether the current run has lasted longer than `after`.
    fn stale(&self, now: tokio::time::Instant, after: Duration) -> bool {
        self.run
            .as_ref()
            .is_some_and(|r| now.saturating_duration_since(r.since) > after)
    }
}

#[derive(Debug)]
struct Dc {
    /// Targets that must be UP; `None` for a datacenter without probes.
    min_up: Option<usize>,
    targets: Vec<Target>,
    /// How long a reported capacity holds.
    capacity_hold: Duration,
    /// How long local faults may last before `/status` calls the kept
    /// state stale: [`STALE_AFTER_FALLS`] × `fall` × `interval`.
    stale_after: Duration,
    /// What the query path last saw of it (observed state, capacity,
    /// down addresses): a change to any part republishes, whichever path
    /// caused it (a probe, external input, or a report that expired).
    published: Summary,
    /// The answer addresses, IPv4 then IPv6 (per-address health).
    v4: Vec<std::net::Ipv4Addr>,
    v6: Vec<std::net::Ipv6Addr>,
}

/// A datacenter's state as the query path sees it.
type Summary = (Observed, u8, u64);

impl Dc {
    fn summary(&self, now: tokio::time::Instant) -> Summary {
        (self.observed(), self.capacity(now), self.down_addresses())
    }

    /// The answer addresses with their [`DcHealth::down_addresses`] bits.
    fn address_bits(&self) -> impl Iterator<Item = (u32, std::net::IpAddr)> + '_ {
        let v4 = self
            .v4
            .iter()
            .enumerate()
            .map(|(i, &a)| (super::address_bit(false, i), a.into()));
        let v6 = self
            .v6
            .iter()
            .enumerate()
            .map(|(j, &a)| (super::address_bit(true, j), a.into()));
        v4.chain(v6).filter_map(|(bit, ip)| Some((bit?, ip)))
    }

    /// Answer addresses whose probe targets (those on the same IP) are all
    /// DOWN; see [`DcHealth::down_addresses`].
    fn down_addresses(&self) -> u64 {
        let down = |ip: std::net::IpAddr| {
            let mut own = self.targets.iter().filter(|t| t.addr.ip() == ip).peekable();
            own.peek().is_some() && own.all(|t| t.machine.state() == TargetState::Down)
        };
        self.address_bits()
            .filter(|&(_, ip)| down(ip))
            .fold(0, |m, (bit, _)| m | 1 << bit)
    }

    /// The mean capacity reported by the UP targets within the hold time;
    /// 100 when none has a fresh report.
    fn capacity(&self, now: tokio::time::Instant) -> u8 {
        let fresh = self.targets.iter().filter_map(|t| match t.capacity {
            Some((c, at))
                if t.machine.state() == TargetState::Up && now - at <= self.capacity_hold =>
            {
                Some(u32::from(c))
            }
            _ => None,
        });
        let (sum, n) = fresh.fold((0, 0), |(s, n), c| (s + c, n + 1));
        sum.checked_div(n).map_or(100, |c| c as u8)
    }

    /// The datacenter's measured RTT and congestion (see
    /// [`DcHealth::rtt_us`]): from the UP target with the lowest smoothed
    /// RTT; `(0, false)` when no UP target has passed a probe.
    fn rtt(&self, congestion_factor: f64) -> (u32, bool) {
        self.targets
            .iter()
            .filter(|t| t.machine.state() == TargetState::Up && t.rtt.samples() > 0)
            .min_by_key(|t| t.rtt.rtt_us())
            .map_or((0, false), |t| {
                (t.rtt.rtt_us(), t.rtt.congested(congestion_factor))
            })
    }

    fn observed(&self) -> Observed {
        let Some(min_up) = self.min_up else {
            return Observed::Up;
        };
        let count = |s| {
            self.targets
                .iter()
                .filter(|t| t.machine.state() == s)
                .count()
        };
        let (up, down) = (count(TargetState::Up), count(TargetState::Down));
        if up >= min_up {
            Observed::Up
        } else if self.targets.len() - down < min_up {
            Observed::Down
        } else {
            Observed::Unknown
        }
    }
}

#[derive(Debug)]
struct State {
    generation: u64,
    dcs: BTreeMap<DcKey, Dc>,
    overrides: Overrides,
    /// See [`Monitor::set_congestion_factor`].
    congestion_factor: f64,
    /// What the peers of a cluster contribute (`[cluster]`); `None` when
    /// running alone.
    shared: Option<SharedInput>,
}

//------------ SharedInput --------------------------------------------------

/// The shared state from a cluster's peers (`[cluster]`, see
/// [`crate::cluster`]): an input to how the view is built. The monitor's
/// own rise/fall machines stay per target; the vote rule combines this
/// instance's datacenter states with the peers' (see
/// [`crate::cluster::quorum`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharedInput {
    /// This instance's name in the cluster.
    pub name: String,
    /// The vote rule.
    pub rule: Quorum,
    /// Per datacenter, the live peers' views of it (this instance's own
    /// is not in the list), by instance name.
    pub votes: BTreeMap<DcKey, Vec<(String, Observed)>>,
}

/// One datacenter as this instance's own probes see it: its state
/// (before any vote), RTT in microseconds, and each target's address and
/// state.
pub type OwnObservation = (DcKey, Observed, u32, Vec<(String, &'static str)>);

pub use super::overrides::OverrideSource;

/// A change of an override through the admin API, in cluster mode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OverrideChange {
    /// Zone origin, canonical (lower case, trailing dot).
    pub zone: String,
    /// Datacenter name.
    pub datacenter: String,
    /// The new override; `None` clears it.
    pub value: Option<Override>,
    /// Who asked.
    pub by: String,
}

/// Stores an override change cluster-wide; `Err` says why it was not
/// stored (nothing changed then).
pub type SetShared = Box<
    dyn Fn(
            OverrideChange,
        )
            -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send>>
        + Send
        + Sync,
>;

/// What the cluster attaches to the monitor (see
/// [`Monitor::attach_cluster`]).
pub struct ClusterHooks {
    /// `GET /cluster` and `/status`'s `cluster`: the instances.
    pub view: Box<dyn Fn() -> Value + Send + Sync>,
    /// Drain, undrain and force-up go to etcd through this.
    pub set_override: SetShared,
}

/// The first probes of new targets are spread over at most this long.
pub const FIRST_ROUND_SPREAD: Duration = Duration::from_secs(1);

/// Errors from operator actions, with the HTTP status the API returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionError {
    /// No such zone, datacenter or target.
    NotFound(String),
    /// The request makes no sense for this target.
    Invalid(String),
    /// The state file could not be written.
    Storage(String),
    /// The change could not be stored cluster-wide (etcd unreachable);
    /// nothing changed.
    Unavailable(String),
}

impl std::fmt::Display for ActionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotFound(m) | Self::Invalid(m) | Self::Storage(m) | Self::Unavailable(m) => {
                f.write_str(m)
            }
        }
    }
}

/// The probe scheduler and health state; cheap to clone.
#[derive(Clone, Debug)]
pub struct Monitor {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    swap: Arc<ArcSwap<Snapshot>>,
    slots: Arc<Semaphore>,
    pending: watch::Sender<usize>,
    published: watch::Sender<u64>,
    tasks: TaskTracker,
    token: CancellationToken,
    generation_token: Mutex<CancellationToken>,
    /// The server's own counters (TCP, rate limiting), for `/status`.
    server_stats: std::sync::OnceLock<ServerStats>,
    /// Answers per service and datacenter, for `/status`.
    answers: std::sync::OnceLock<AnswerCounts>,
    /// `GET /metrics` and `POST /reload`.
    ops: std::sync::OnceLock<Ops>,
    /// `[cluster]`: `GET /cluster` and shared overrides.
    cluster: std::sync::OnceLock<ClusterHooks>,
    /// Bumped whenever a target's or a datacenter's own state changes
    /// (the cluster rewrites its record).
    observations: watch::Sender<u64>,
    /// Services with no usable datacenter at the last publication, by
    /// (zone, service): logged once when one enters and once when it
    /// leaves.
    all_down: Mutex<std::collections::BTreeSet<(String, String)>>,
}

/// What the admin API's operations endpoints call: the server attaches
/// them (see [`Monitor::attach_ops`]).
pub struct Ops {
    /// The metrics in the Prometheus text format.
    pub metrics: Box<dyn Fn() -> String + Send + Sync>,
    /// Reloads the configuration (blocking; serialized with SIGHUP):
    /// what it did as JSON, or the error naming file, key and reason.
    pub reload: Box<dyn Fn() -> Result<Value, String> + Send + Sync>,
}

/// Reads the answer counts since start, per (zone, service), by
/// datacenter name; see [`Monitor::attach_answers`].
pub type AnswerCounts = Box<
    dyn Fn() -> std::collections::HashMap<(String, String), BTreeMap<String, u64>> + Send + Sync,
>;

/// Reads the server's counters as JSON; see [`Monitor::attach_stats`].
pub type ServerStats = Box<dyn Fn() -> Value + Send + Sync>;

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("state", &self.state)
            .field("pending", &self.pending)
            .finish_non_exhaustive()
    }
}

fn now() -> SystemTime {
    SystemTime::now()
}

/// What a service answers with no usable datacenter, for the log line.
fn all_down_behaviour(a: &crate::model::AllDown) -> &'static str {
    use crate::model::AllDown;
    match a {
        AllDown::All => "answering with every datacenter (when_all_down = \"all\")",
        AllDown::None => "answering NODATA (when_all_down = \"none\")",
        AllDown::Servfail => "answering SERVFAIL (when_all_down = \"servfail\")",
        AllDown::Fallback(_) => "answering with the fallback records",
    }
}

/// A small PRNG for jitter (xorshift64*): no dependency, seeded per target.
struct Jitter(u64);

impl Jitter {
    fn new(addr: SocketAddr) -> Self {
        use std::hash::BuildHasher;
        Self(std::collections::hash_map::RandomState::new().hash_one(addr) | 1)
    }

    /// A uniform fraction in [0, 1).
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl Monitor {
    /// A monitor publishing into `swap`, with no targets yet; `token` stops
    /// every probe.
    pub fn new(
        swap: Arc<ArcSwap<Snapshot>>,
        overrides: Overrides,
        max_in_flight: u32,
        token: CancellationToken,
    ) -> Self {
        let (pending, _) = watch::channel(0);
        let (published, _) = watch::channel(0);
        Self {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    generation: 0,
                    dcs: BTreeMap::new(),
                    overrides,
                    congestion_factor: DEFAULT_CONGESTION_FACTOR,
                    shared: None,
                }),
                swap,
                slots: Arc::new(Semaphore::new(max_in_flight.max(1) as usize)),
                pending,
                published,
                tasks: TaskTracker::new(),
                generation_token: Mutex::new(token.child_token()),
                server_stats: std::sync::OnceLock::new(),
                answers: std::sync::OnceLock::new(),
                ops: std::sync::OnceLock::new(),
                cluster: std::sync::OnceLock::new(),
                observations: watch::channel(0).0,
                all_down: Mutex::default(),
                token,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts probing what `config` describes. Targets that were already
    /// probed with the same settings keep their state; probes of removed
    /// targets stop. Does not publish; call [`Self::publish`].
    pub fn configure(&self, config: &Config) {
        let new_token = self.inner.token.child_token();
        let old_token = std::mem::replace(
            &mut *self
                .inner
                .generation_token
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
            new_token.clone(),
        );
        old_token.cancel();
        let mut state = self.lock();
        state.generation += 1;
        let generation = state.generation;
        let mut old = std::mem::take(&mut state.dcs);
        let mut pending = 0;
        let mut spawn = Vec::new();
        for zone in &config.zones {
            let origin = zone.origin.to_ascii();
            for dc in &zone.datacenters {
                let key = (origin.clone(), dc.name.clone());
                // Targets keep their state across reloads, matched by
                // address, even when probe settings change: a dead
                // datacenter must not come back because its interval did.
                let mut previous = old.remove(&key).map(|p| p.targets).unwrap_or_default();
                let mut targets = match &dc.probe {
                    None => Vec::new(),
                    Some(spec) => spec
                        .targets
                        .iter()
                        .map(|&addr| match previous.iter().position(|t| t.addr == addr) {
                            Some(i) => {
                                let mut t = previous.swap_remove(i);
                                t.machine = t.machine.with_thresholds(spec.rise, spec.fall);
                                // An HTTP probe's RTT spans more round
                                // trips than a TCP one's: the old figures
                                // would compare the new ones with a wrong
                                // baseline.
                                let kind = spec.kind.type_name();
                                if t.kind != kind {
                                    t.rtt = RttStats::new();
                                    t.kind = kind;
                                    t.cert_not_after = None;
                                }
                                t
                            }
                            None => Target {
                                addr,
                                machine: Machine::new(spec.rise, spec.fall),
                                last: None,
                                last_at: None,
                                changed_at: None,
                                probes: 0,
                                capacity: None,
                                awaited: false,
                                local: LocalFaults::default(),
                                rtt: RttStats::new(),
                                kind: spec.kind.type_name(),
                                cert_not_after: None,
                                counts: ProbeCounts::default(),
                            },
                        })
                        .collect(),
                };
                if let Some(spec) = &dc.probe {
                    for (i, t) in targets.iter_mut().enumerate() {
                        t.awaited = false;
                        if spec.kind == ProbeKind::External {
                            continue;
                        }
                        if t.machine.state() == TargetState::Unknown {
                            pending += 1;
                            t.awaited = true;
                        }
                        spawn.push((key.clone(), i, t.addr, spec.clone(), t.machine.state()));
                    }
                }
                let mut entry = Dc {
                    min_up: dc.probe.as_ref().map(|p| p.min_up),
                    targets,
                    capacity_hold: match dc.probe.as_ref().map(|p| &p.kind) {
                        Some(ProbeKind::Http(h)) => h.capacity_hold,
                        _ => Duration::ZERO,
                    },
                    stale_after: dc.probe.as_ref().map_or(Duration::ZERO, |p| {
                        p.interval
                            .saturating_mul(STALE_AFTER_FALLS.saturating_mul(p.fall))
                    }),
                    published: (Observed::Unknown, 100, 0),
                    v4: dc.v4.clone(),
                    v6: dc.v6.clone(),
                };
                // What the snapshot built from this config shows.
                entry.published = entry.summary(tokio::time::Instant::now());
                state.dcs.insert(key, entry);
            }
        }
        drop(state);
        self.inner.pending.send_replace(pending);
        for (key, index, addr, spec, initial) in spawn {
            let ctx = super::probe::Context {
                zone: &key.0,
                datacenter: &key.1,
            };
            let prober = match Prober::new(&spec.kind, addr, spec.timeout, ctx) {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(zone = %key.0, datacenter = %key.1, %addr, "cannot set up probe: {e}");
                    continue;
                }
            };
            let monitor = self.clone();
            let token = new_token.clone();
            self.inner.tasks.spawn(async move {
                tokio::select! {
                    () = token.cancelled() => {}
                    () = monitor.run_target(generation, key, index, addr, spec, prober, initial) => {}
                }
            });
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_target(
        &self,
        generation: u64,
        key: DcKey,
        index: usize,
        addr: SocketAddr,
        spec: ProbeSpec,
        prober: Prober,
        initial: TargetState,
    ) {
        let mut jitter = Jitter::new(addr);
        // New targets are probed at once (spread over at most a second),
        // so the first round, which start-up waits for, is quick; targets
        // carried over a reload resume somewhere in their interval.
        let first = if initial == TargetState::Unknown {
            spec.interval
                .mul_f64(spec.jitter)
                .min(FIRST_ROUND_SPREAD)
                .mul_f64(jitter.next())
        } else {
            spec.interval.mul_f64(jitter.next())
        };
        tokio::time::sleep(first).await;
        loop {
            // Probes start every interval (± jitter) whatever each one
            // takes, so a hung target fails `fall` times in `fall`
            // intervals.
            let started = tokio::time::Instant::now();
            let outcome = {
                let Ok(_slot) = self.inner.slots.acquire().await else {
                    return;
                };
                prober.run(addr, spec.timeout).await
            };
            self.record(generation, &key, index, outcome);
            let spread = 1.0 + spec.jitter * (2.0 * jitter.next() - 1.0);
            tokio::time::sleep_until(started + spec.interval.mul_f64(spread)).await;
        }
    }

    fn record(&self, generation: u64, key: &DcKey, index: usize, outcome: Outcome) {
        let mut state = self.lock();
        if state.generation != generation {
            return;
        }
        let Some(dc) = state.dcs.get_mut(key) else {
            return;
        };
        let clock = tokio::time::Instant::now();
        let Some(t) = dc.targets.get_mut(index) else {
            return;
        };
        if let Some(c) = outcome.capacity {
            t.capacity = Some((c, clock));
        }
        if outcome.cert_not_after.is_some() {
            t.cert_not_after = outcome.cert_not_after;
        }
        // Only a pass measures the target: a failure's time is a timeout
        // or a refusal, a local fault's is this host's.
        if outcome.verdict == Verdict::Pass {
            t.rtt.observe(outcome.rtt);
        }
        // The first result ends the start-up wait for this target, a local
        // fault too: waiting longer would not tell more, and the target's
        // state stays Unknown for `warmup` to decide.
        let first = std::mem::take(&mut t.awaited);
        let changed = t.machine.observe(outcome.verdict);
        t.counts.observe(&outcome, changed.is_some());
        let at = now();
        Self::note_local_fault(key, t, &outcome, clock, at, dc.stale_after);
        if let Some(s) = changed {
            t.changed_at = Some(at);
            match &outcome.error {
                Some(e) => {
                    tracing::info!(zone = %key.0, datacenter = %key.1, target = %t.addr, "target is {}: {e}", s.name())
                }
                None => {
                    tracing::info!(zone = %key.0, datacenter = %key.1, target = %t.addr, "target is {}", s.name())
                }
            }
        }
        t.last = Some(outcome);
        t.last_at = Some(at);
        t.probes += 1;
        let target_changed = t.changed_at == Some(at);
        let changed = Self::settle(key, dc, clock);
        drop(state);
        if target_changed || changed {
            self.inner.observations.send_modify(|n| *n += 1);
        }
        if first {
            self.inner.pending.send_modify(|p| *p = p.saturating_sub(1));
        }
        if changed {
            self.publish();
        }
    }

    /// Keeps `t`'s local-fault record up to date with `outcome`, logging
    /// a WARN at most once per [`LOCAL_FAULT_LOG_EVERY`] while they last
    /// and an INFO when they end.
    fn note_local_fault(
        key: &DcKey,
        t: &mut Target,
        outcome: &Outcome,
        clock: tokio::time::Instant,
        at: SystemTime,
        stale_after: Duration,
    ) {
        if outcome.verdict != Verdict::LocalFault {
            if let Some(run) = t.local.clear() {
                tracing::info!(
                    zone = %key.0, datacenter = %key.1, target = %t.addr,
                    "probes reach the target again after {} local faults in {:.1?}",
                    run.count,
                    clock.saturating_duration_since(run.since),
                );
            }
            return;
        }
        let reason = outcome.error.clone().unwrap_or_default();
        if t.local.fault(reason.clone(), clock, at) {
            let lasted = t
                .local
                .run
                .as_ref()
                .map_or(Duration::ZERO, |r| clock.saturating_duration_since(r.since));
            let stale = if t.local.stale(clock, stale_after) {
                " and may be stale"
            } else {
                ""
            };
            tracing::warn!(
                zone = %key.0, datacenter = %key.1, target = %t.addr,
                "probe failed on this host, not at the target: {reason}; \
                 state {} is kept{stale} (local faults for {:.0?}, {} since start)",
                t.machine.state().name(),
                lasted,
                t.local.count,
            );
        }
    }

    /// Records what the query path should now see of `dc`; `true` (and a
    /// log line per changed part) if that differs from what it last saw.
    fn settle(key: &DcKey, dc: &mut Dc, clock: tokio::time::Instant) -> bool {
        let (before, after) = (dc.published, dc.summary(clock));
        if after.0 != before.0 {
            tracing::warn!(zone = %key.0, datacenter = %key.1, "datacenter is now {} (was {})", after.0.name(), before.0.name());
        }
        if after.1 != before.1 {
            tracing::info!(zone = %key.0, datacenter = %key.1, "capacity is now {}% (was {}%)", after.1, before.1);
        }
        dc.published = after;
        after != before
    }

    /// Waits until every probed target has its first result, or `limit`.
    /// Returns whether the round completed.
    pub async fn first_round(&self, limit: Duration) -> bool {
        let mut rx = self.inner.pending.subscribe();
        tokio::time::timeout(limit, rx.wait_for(|p| *p == 0))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// The health view for `snap`'s zones and datacenters.
    pub fn view_for(&self, snap: &Snapshot) -> HealthView {
        let state = self.lock();
        let clock = tokio::time::Instant::now();
        HealthView::new(
            snap.zones()
                .iter()
                .map(|z| {
                    let origin = z.origin().to_ascii();
                    z.config
                        .datacenters
                        .iter()
                        .map(|dc| {
                            let key = (origin.clone(), dc.name.clone());
                            let (own, capacity, down_addresses) = match state.dcs.get(&key) {
                                Some(d) => (d.observed(), d.capacity(clock), d.down_addresses()),
                                None if dc.probe.is_some() => (Observed::Unknown, 100, 0),
                                None => (Observed::Up, 100, 0),
                            };
                            let observed = match Self::decision(&state, &key, own) {
                                Some(d) if dc.probe.is_some() => d.verdict,
                                _ => own,
                            };
                            let (rtt_us, congested) = state
                                .dcs
                                .get(&key)
                                .map_or((0, false), |d| d.rtt(state.congestion_factor));
                            DcHealth {
                                observed,
                                forced: state.overrides.get(&key.0, &key.1),
                                capacity,
                                down_addresses,
                                rtt_us,
                                congested,
                            }
                        })
                        .collect()
                })
                .collect(),
        )
    }

    /// Sets `[latency] congestion_factor`: a datacenter is congested when
    /// its RTT-giving target's smoothed RTT exceeds `factor` times that
    /// target's baseline (default [`DEFAULT_CONGESTION_FACTOR`]; the
    /// config allows 1.1..=100). Takes effect at the next publication.
    pub fn set_congestion_factor(&self, factor: f64) {
        self.lock().congestion_factor = factor;
    }

    /// The snapshot being served.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.inner.swap.load_full()
    }

    /// Publishes the current health into the served snapshot.
    pub fn publish(&self) {
        self.inner
            .swap
            .rcu(|cur| Arc::new(cur.with_health(self.view_for(cur))));
        self.note_all_down();
        self.inner.published.send_modify(|n| *n += 1);
    }

    /// Logs each service that has just lost its last usable datacenter
    /// (once, at ERROR) and each that has one again (once, at WARN),
    /// never per query.
    fn note_all_down(&self) {
        let snap = self.inner.swap.load();
        let mut now = std::collections::BTreeSet::new();
        for (zi, z) in snap.zones().iter().enumerate() {
            for s in &z.config.services {
                if !s
                    .datacenters
                    .iter()
                    .any(|&d| snap.health.dc(zi, d).usable(s.warmup))
                {
                    now.insert((z.origin().to_ascii(), s.name.clone()));
                }
            }
        }
        let mut before = self
            .inner
            .all_down
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for (zone, service) in now.difference(&before) {
            let fallback = snap
                .zones()
                .iter()
                .find(|z| z.origin().to_ascii() == *zone)
                .and_then(|z| z.config.services.iter().find(|s| s.name == *service))
                .map_or("", |s| all_down_behaviour(&s.when_all_down));
            tracing::error!(
                zone = %zone,
                service = %service,
                "service has no usable datacenter left; {fallback}"
            );
        }
        for (zone, service) in before.difference(&now) {
            tracing::warn!(zone = %zone, service = %service, "service has a usable datacenter again");
        }
        *before = now;
    }

    /// A receiver that changes whenever health is published (for tests and
    /// status pages that wait for a change instead of polling).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.published.subscribe()
    }

    fn find_dc(state: &State, zone: &str, dc: &str) -> Result<DcKey, ActionError> {
        let zone = if zone.ends_with('.') {
            zone.to_ascii_lowercase()
        } else {
            format!("{}.", zone.to_ascii_lowercase())
        };
        let key = (zone, dc.to_string());
        if state.dcs.contains_key(&key) {
            Ok(key)
        } else {
            Err(ActionError::NotFound(format!(
                "no datacenter {dc:?} in zone {:?}",
                key.0
            )))
        }
    }

    /// Sets (or with `None` clears) an operator override. It takes effect
    /// even if the state file cannot be written (an emergency drain must
    /// work on a full disk); then the returned warning says so.
    pub fn set_override(
        &self,
        zone: &str,
        dc: &str,
        value: Option<Override>,
    ) -> Result<Option<String>, ActionError> {
        let mut state = self.lock();
        let key = Self::find_dc(&state, zone, dc)?;
        let saved = state.overrides.set(&key.0, &key.1, value);
        drop(state);
        tracing::warn!(
            zone = %key.0,
            datacenter = %key.1,
            "operator override: {}",
            value.map_or("cleared (probes decide)", Override::name)
        );
        self.publish();
        match saved {
            Ok(()) => Ok(None),
            Err(e) => {
                tracing::error!("{e}; the override is in force but will not survive a restart");
                Ok(Some(format!("{e}; in force until restart")))
            }
        }
    }

    //------------ Cluster (`[cluster]`) ------------------------------------

    /// The vote rule's decision for `key`, whose own view is `own`; `None`
    /// when running alone.
    fn decision(
        state: &State,
        key: &DcKey,
        own: Observed,
    ) -> Option<crate::cluster::quorum::Decision> {
        let shared = state.shared.as_ref()?;
        let peers: Vec<Observed> = shared
            .votes
            .get(key)
            .map(|v| v.iter().map(|(_, o)| *o).collect())
            .unwrap_or_default();
        Some(crate::cluster::quorum::decide(shared.rule, own, &peers))
    }

    /// Every probed datacenter's own view and the vote rule's decision, in
    /// cluster mode (empty alone).
    pub fn decisions(&self) -> Vec<(DcKey, Observed, crate::cluster::quorum::Decision)> {
        let state = self.lock();
        state
            .dcs
            .iter()
            .filter(|(_, d)| d.min_up.is_some())
            .filter_map(|(k, d)| {
                let own = d.observed();
                Self::decision(&state, k, own).map(|dec| (k.clone(), own, dec))
            })
            .collect()
    }

    /// Sets the peers' shared state; republishes (and logs each
    /// datacenter whose shared state or fallback changes) when it changed.
    pub fn set_shared(&self, input: SharedInput) {
        let mut state = self.lock();
        if state.shared.as_ref() == Some(&input) {
            return;
        }
        let before: BTreeMap<DcKey, crate::cluster::quorum::Decision> = state
            .dcs
            .iter()
            .filter(|(_, d)| d.min_up.is_some())
            .filter_map(|(k, d)| Self::decision(&state, k, d.observed()).map(|x| (k.clone(), x)))
            .collect();
        state.shared = Some(input);
        for (k, d) in state.dcs.iter().filter(|(_, d)| d.min_up.is_some()) {
            let own = d.observed();
            let (Some(after), Some(was)) = (Self::decision(&state, k, own), before.get(k)) else {
                continue;
            };
            if after.verdict != was.verdict {
                tracing::warn!(
                    zone = %k.0, datacenter = %k.1,
                    "datacenter is now {} by the cluster's votes (was {}; own view {}, {} of {} live observers see it down)",
                    after.verdict.name(), was.verdict.name(), own.name(), after.down, after.live
                );
            }
            if after.fallback != was.fallback {
                if after.fallback {
                    tracing::warn!(
                        zone = %k.0, datacenter = %k.1,
                        "too few live observers for the quorum ({} live): using this instance's own view",
                        after.live
                    );
                } else {
                    tracing::info!(zone = %k.0, datacenter = %k.1, "enough live observers again ({}): the quorum decides", after.live);
                }
            }
        }
        drop(state);
        self.publish();
    }

    /// Replaces the overrides with the cluster's shared ones and their
    /// sources, and saves the state file (the local cache); republishes
    /// when an override changed.
    pub fn set_shared_overrides(&self, stored: Stored) {
        let mut state = self.lock();
        let (changed, saved) = state.overrides.replace(stored);
        drop(state);
        if let Err(e) = saved {
            tracing::error!("{e}; the shared overrides are in force but the local cache is stale");
        }
        if changed {
            self.publish();
        }
    }

    /// The overrides in force and their sources: at start-up, what the
    /// state file held.
    pub fn stored_overrides(&self) -> Stored {
        self.lock().overrides.stored().clone()
    }

    /// This instance's own view of every datacenter: its state (before
    /// any vote), RTT in microseconds and each target's state.
    pub fn own_observations(&self) -> Vec<OwnObservation> {
        let state = self.lock();
        state
            .dcs
            .iter()
            .map(|(k, d)| {
                let targets = d
                    .targets
                    .iter()
                    .map(|t| (t.addr.to_string(), t.machine.state().name()))
                    .collect();
                (
                    k.clone(),
                    d.observed(),
                    d.rtt(state.congestion_factor).0,
                    targets,
                )
            })
            .collect()
    }

    /// A receiver that changes whenever a target's or datacenter's own
    /// state changes.
    pub fn subscribe_observations(&self) -> watch::Receiver<u64> {
        self.inner.observations.subscribe()
    }

    /// Attaches the cluster (`[cluster]`): overrides then go to etcd, and
    /// `GET /cluster` answers. Set once, at start-up.
    pub fn attach_cluster(&self, hooks: ClusterHooks) {
        let _ = self.inner.cluster.set(hooks);
    }

    /// `GET /cluster`; `None` when running alone.
    pub fn cluster_view(&self) -> Option<Value> {
        self.inner.cluster.get().map(|h| (h.view)())
    }

    /// Sets or clears an override on behalf of `by`. Alone, as
    /// [`Self::set_override`]. In cluster mode the change is stored in
    /// etcd, and every instance applies it; when etcd cannot store it,
    /// [`ActionError::Unavailable`] and nothing changes (an override that
    /// silently held on one instance only would split the answers).
    pub async fn set_override_by(
        &self,
        zone: &str,
        dc: &str,
        value: Option<Override>,
        by: &str,
    ) -> Result<Option<String>, ActionError> {
        let Some(hooks) = self.inner.cluster.get() else {
            return self.set_override(zone, dc, value);
        };
        let key = Self::find_dc(&self.lock(), zone, dc)?;
        let change = OverrideChange {
            zone: key.0.clone(),
            datacenter: key.1.clone(),
            value,
            by: by.to_string(),
        };
        (hooks.set_override)(change)
            .await
            .map_err(ActionError::Unavailable)?;
        tracing::warn!(
            zone = %key.0,
            datacenter = %key.1,
            %by,
            "operator override (cluster-wide): {}",
            value.map_or("cleared (probes decide)", Override::name)
        );
        Ok(None)
    }

    /// External health input: sets a target's observed state.
    pub fn set_target(
        &self,
        zone: &str,
        dc: &str,
        target: &str,
        up: bool,
    ) -> Result<(), ActionError> {
        let mut state = self.lock();
        let key = Self::find_dc(&state, zone, dc)?;
        let d = state.dcs.get_mut(&key).ok_or_else(|| {
            ActionError::NotFound(format!("no datacenter {dc:?} in zone {:?}", key.0))
        })?;
        let t = d
            .targets
            .iter_mut()
            .find(|t| {
                t.addr.to_string() == target
                    || (t.addr.ip().to_string() == target)
                    || format!("[{}]", t.addr.ip()) == target
            })
            .ok_or_else(|| {
                ActionError::NotFound(format!(
                    "no target {target:?} in datacenter {:?} (it has no probe, or use ADDRESS or ADDRESS:PORT as /status shows)",
                    key.1
                ))
            })?;
        let s = if up {
            TargetState::Up
        } else {
            TargetState::Down
        };
        if t.machine.set(s).is_some() {
            t.changed_at = Some(now());
            t.counts.changes += 1;
        }
        t.last_at = Some(now());
        let changed = Self::settle(&key, d, tokio::time::Instant::now());
        drop(state);
        self.inner.observations.send_modify(|n| *n += 1);
        tracing::warn!(zone = %key.0, datacenter = %key.1, %target, "external input: {}", s.name());
        if changed {
            self.publish();
        }
        Ok(())
    }

    /// Adds the server's own counters to [`Self::status`]: `read` returns
    /// a JSON object whose keys join the top level. Set once, at start-up.
    pub fn attach_stats(&self, read: ServerStats) {
        let _ = self.inner.server_stats.set(read);
    }

    /// Attaches `GET /metrics` and `POST /reload`.
    pub fn attach_ops(&self, ops: Ops) {
        let _ = self.inner.ops.set(ops);
    }

    /// The metrics text, when the server attached it.
    pub fn metrics_text(&self) -> Option<String> {
        self.inner.ops.get().map(|o| (o.metrics)())
    }

    /// Reloads the configuration (blocking), when the server attached a
    /// reloader; `None` otherwise.
    pub fn reload(&self) -> Option<Result<Value, String>> {
        self.inner.ops.get().map(|o| (o.reload)())
    }

    /// Adds per-datacenter answer counts to each service in
    /// [`Self::status`] (`"answers"`).
    pub fn attach_answers(&self, read: AnswerCounts) {
        let _ = self.inner.answers.set(read);
    }

    /// [`Self::metric_families`] as a metrics source that does not keep
    /// the monitor alive (the monitor holds the metrics for `GET
    /// /metrics`: a strong reference back would be a cycle).
    pub fn metric_source(&self) -> crate::metrics::Source {
        let weak = Arc::downgrade(&self.inner);
        Box::new(move |out| {
            if let Some(inner) = weak.upgrade() {
                Self { inner }.metric_families(out);
            }
        })
    }

    /// The metric families of health and probes: per target, probe
    /// results, RTT histogram and state changes; per datacenter, whether
    /// it is usable, its observed state and its override.
    pub fn metric_families(&self, out: &mut Vec<crate::metrics::Family>) {
        use crate::metrics::{Family, Kind, Value};
        let snap = self.inner.swap.load_full();
        let state = self.lock();
        let mut results = Family::new(
            "meridian_probe_results",
            "Health probe results per target: pass, fail, or local_fault (could not run on this host).",
            Kind::Counter,
        );
        let mut rtt = Family::new(
            "meridian_probe_rtt_seconds",
            "Health probe round-trip time per target (probes that ran, passing or failing).",
            Kind::Histogram,
        );
        let mut changes = Family::new(
            "meridian_probe_state_changes",
            "Target state changes (up, down) per target, from probes or external input.",
            Kind::Counter,
        );
        let mut up = Family::new(
            "meridian_target_up",
            "Target state: 1 up, 0 down, -1 unknown.",
            Kind::Gauge,
        );
        let mut cert_days = Family::new(
            "meridian_probe_certificate_days_left",
            "Whole days until the target's TLS certificate expires (https and TLS grpc probes; negative once expired).",
            Kind::Gauge,
        );
        let mut cert_expiry = Family::new(
            "meridian_probe_certificate_expiry_timestamp_seconds",
            "When the target's TLS certificate expires, as a Unix time (https and TLS grpc probes).",
            Kind::Gauge,
        );
        let now = SystemTime::now();
        for ((zone, dc), d) in &state.dcs {
            for t in &d.targets {
                let labels = || {
                    vec![
                        ("zone", zone.clone()),
                        ("datacenter", dc.clone()),
                        ("target", t.addr.to_string()),
                    ]
                };
                for (i, result) in VERDICTS.iter().enumerate() {
                    let mut l = labels();
                    l.push(("result", result.name().to_string()));
                    results.int(l, t.counts.results[i]);
                }
                rtt.push(labels(), t.counts.rtt.value());
                changes.int(labels(), t.counts.changes);
                let v = match t.machine.state() {
                    TargetState::Up => 1.0,
                    TargetState::Down => 0.0,
                    TargetState::Unknown => -1.0,
                };
                up.push(labels(), Value::Float(v));
                if let (Some(days), Some(at)) = (t.cert_days_left(now), t.cert_not_after) {
                    cert_days.push(labels(), Value::Float(days as f64));
                    let unix = at
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .map_or(0.0, |d| d.as_secs_f64());
                    cert_expiry.push(labels(), Value::Float(unix));
                }
            }
        }
        drop(state);
        let mut usable = Family::new(
            "meridian_datacenter_usable",
            "1 when answers may name the datacenter (observed up, or forced up), else 0.",
            Kind::Gauge,
        );
        let mut observed_f = Family::new(
            "meridian_datacenter_observed",
            "The datacenter's probed state: 1 for the current one of up, down, unknown.",
            Kind::Gauge,
        );
        let mut forced = Family::new(
            "meridian_datacenter_override",
            "Operator override: 1 for the current one of none, drain, force-up.",
            Kind::Gauge,
        );
        for (zi, z) in snap.zones().iter().enumerate() {
            let origin = z.origin().to_ascii();
            for (di, dc) in z.config.datacenters.iter().enumerate() {
                let h = snap.health.dc(zi, crate::model::DcId(di as u16));
                let labels = || vec![("zone", origin.clone()), ("datacenter", dc.name.clone())];
                usable.int(
                    labels(),
                    u64::from(h.usable(crate::model::Warmup::AssumeUp)),
                );
                for o in [Observed::Up, Observed::Down, Observed::Unknown] {
                    let mut l = labels();
                    l.push(("state", o.name().to_string()));
                    observed_f.int(l, u64::from(h.observed == o));
                }
                for o in [None, Some(Override::Drain), Some(Override::ForceUp)] {
                    let mut l = labels();
                    l.push(("override", o.map_or("none", Override::name).to_string()));
                    forced.int(l, u64::from(h.forced == o));
                }
            }
        }
        out.extend([
            results,
            rtt,
            changes,
            up,
            cert_days,
            cert_expiry,
            usable,
            observed_f,
            forced,
        ]);
    }

    /// Everything `/status` shows.
    pub fn status(&self) -> Value {
        let snap = self.inner.swap.load_full();
        // Read before the state lock: the counters have locks of their own.
        let answers = self
            .inner
            .answers
            .get()
            .map(|read| read())
            .unwrap_or_default();
        let state = self.lock();
        let clock = tokio::time::Instant::now();
        let unix = |t: Option<SystemTime>| {
            t.and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                .map(|d| d.as_secs_f64())
        };
        let zones: Vec<Value> = snap
            .zones()
            .iter()
            .enumerate()
            .map(|(zi, z)| {
                let origin = z.origin().to_ascii();
                let dcs: Vec<Value> = z
                    .config
                    .datacenters
                    .iter()
                    .enumerate()
                    .map(|(di, dc)| {
                        let key = (origin.clone(), dc.name.clone());
                        let h = snap.health.dc(zi, crate::model::DcId(di as u16));
                        // The monitor's current figures, which the query
                        // path gets at the next publication.
                        let (rtt_us, congested) = state
                            .dcs
                            .get(&key)
                            .map_or((0, false), |d| d.rtt(state.congestion_factor));
                        let targets: Vec<Value> = state
                            .dcs
                            .get(&key)
                            .map(|d| {
                                d.targets
                                    .iter()
                                    .map(|t| {
                                        json!({
                                            "target": t.addr.to_string(),
                                            "state": t.machine.state(),
                                            "last_result": t.last.as_ref().map(|o| o.verdict.name()),
                                            "last_error": t.last.as_ref().and_then(|o| o.error.clone()),
                                            "rtt_ms": t.last.as_ref().map(|o| o.rtt.as_secs_f64() * 1000.0),
                                            "rtt": json!({
                                                "smoothed_ms": t.rtt.smoothed_us().map(|us| us / 1000.0),
                                                "baseline_ms": t.rtt.baseline_us().map(|us| us / 1000.0),
                                                "p90_ms": t.rtt.p90_us().map(|us| f64::from(us) / 1000.0),
                                                "samples": t.rtt.samples(),
                                            }),
                                            "reported_capacity": t.capacity.map(|c| c.0),
                                            "cert_days_left": t.cert_days_left(SystemTime::now()),
                                            "cert_not_after_unix": unix(t.cert_not_after),
                                            "consecutive_passes": t.machine.passes(),
                                            "consecutive_failures": t.machine.failures(),
                                            "probes": t.probes,
                                            "last_probe_unix": unix(t.last_at),
                                            "last_change_unix": unix(t.changed_at),
                                            "local_fault": t.local.run.as_ref().map(|r| r.reason.as_str()),
                                            "local_fault_since_unix": unix(t.local.run.as_ref().map(|r| r.since_wall)),
                                            "local_fault_stale": t.local.stale(clock, d.stale_after),
                                            "local_faults": t.local.count,
                                            "last_local_fault_unix": unix(t.local.last_at),
                                        })
                                    })
                                    .collect()
                            })
                            .unwrap_or_default();
                        let cluster = state.shared.as_ref().map(|shared| {
                            let own = state.dcs.get(&key).map_or(Observed::Up, Dc::observed);
                            let decision = dc
                                .probe
                                .as_ref()
                                .and_then(|_| Self::decision(&state, &key, own));
                            let mut votes = serde_json::Map::new();
                            votes.insert(shared.name.clone(), json!(own));
                            for (name, o) in shared.votes.get(&key).into_iter().flatten() {
                                votes.insert(name.clone(), json!(o));
                            }
                            json!({
                                "own": own,
                                "shared": decision.map_or(own, |d| d.verdict),
                                "fallback": decision.is_some_and(|d| d.fallback),
                                "live_observers": decision.map_or(1, |d| d.live),
                                "down_votes": decision.map_or(0, |d| d.down),
                                "votes": votes,
                                "override_source": state.overrides.source(&key.0, &key.1),
                            })
                        });
                        let mut entry = json!({
                            "name": dc.name,
                            "usable": h.usable(crate::model::Warmup::AssumeUp),
                            "observed": h.observed,
                            "override": h.forced,
                            "capacity": h.capacity,
                            "rtt_ms": (rtt_us > 0).then(|| f64::from(rtt_us) / 1000.0),
                            "congested": congested,
                            "down_addresses": state.dcs.get(&key).map(|d| d.address_bits()
                                .filter(|(bit, _)| h.down_addresses & (1 << bit) != 0)
                                .map(|(_, ip)| ip.to_string())
                                .collect::<Vec<_>>()).unwrap_or_default(),
                            "probe": dc.probe.as_ref().map(|p| json!({
                                "type": p.kind.type_name(),
                                "interval_ms": p.interval.as_millis() as u64,
                                "timeout_ms": p.timeout.as_millis() as u64,
                                "rise": p.rise,
                                "fall": p.fall,
                                "min_up": p.min_up,
                            })),
                            "targets": targets,
                        });
                        // Only in cluster mode: alone, /status is as before.
                        if let (Some(c), Some(map)) = (cluster, entry.as_object_mut()) {
                            map.insert("cluster".into(), c);
                        }
                        entry
                    })
                    .collect();
                let services: Vec<Value> = z
                    .config
                    .services
                    .iter()
                    .map(|s| {
                        let usable: Vec<&str> = s
                            .datacenters
                            .iter()
                            .filter(|&&d| snap.health.dc(zi, d).usable(s.warmup))
                            .map(|&d| z.config.dc(d).name.as_str())
                            .collect();
                        let answers: serde_json::Map<String, Value> = s
                            .datacenters
                            .iter()
                            .map(|&d| {
                                let name = &z.config.dc(d).name;
                                let n = answers
                                    .get(&(origin.clone(), s.name.clone()))
                                    .and_then(|m| m.get(name))
                                    .copied()
                                    .unwrap_or(0);
                                (name.clone(), json!(n))
                            })
                            .collect();
                        json!({
                            "name": s.name,
                            "fqdn": s.fqdn.to_ascii(),
                            "answers": answers,
                            "policy": s.policy.name(),
                            "datacenters": s.datacenters.iter().map(|&d| z.config.dc(d).name.as_str()).collect::<Vec<_>>(),
                            "usable": usable,
                            "all_down": usable.is_empty(),
                            "weights": s.policy.uses_weights().then(|| s.datacenters.iter().zip(&s.policy.weights).map(|(&d, &w)| {
                                let capacity = snap.health.dc(zi, d).capacity;
                                (z.config.dc(d).name.clone(), json!({
                                    "configured": w,
                                    "capacity": capacity,
                                    "effective": f64::from(w) * f64::from(capacity) / 100.0,
                                }))
                            }).collect::<serde_json::Map<_, _>>()),
                        })
                    })
                    .collect();
                json!({ "zone": origin, "datacenters": dcs, "services": services })
            })
            .collect();
        drop(state);
        let mut status = json!({ "zones": zones, "dns": crate::dns::counters::counts() });
        if let (Some(view), Some(map)) = (self.cluster_view(), status.as_object_mut()) {
            map.insert("cluster".into(), view);
        }
        if let (Some(read), Some(map)) = (self.inner.server_stats.get(), status.as_object_mut())
            && let serde_json::Value::Object(extra) = read()
        {
            map.extend(extra);
        }
        status
    }

    /// Stops every probe and waits for the tasks to end.
    pub async fn shutdown(&self) {
        self.inner.token.cancel();
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn local_faults_are_counted_and_warned_about_once_a_minute() {
        let t0 = tokio::time::Instant::now();
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut l = LocalFaults::default();
        // Probes every second for three minutes: a WARN at 0, 60, 120 s.
        let warned: Vec<u64> = (0..180u64)
            .filter(|&i| l.fault(format!("fault {i}"), t0 + SECOND * i as u32, wall))
            .collect();
        assert_eq!(warned, [0, 60, 120]);
        assert_eq!(l.count, 180);
        let run = l.run.as_ref().expect("a run");
        assert_eq!((run.count, run.reason.as_str()), (180, "fault 179"));
        assert_eq!(run.since, t0);
        // Faults that come and go do not warn more often.
        let run = l.clear().expect("ended");
        assert_eq!(run.count, 180);
        assert!(l.clear().is_none());
        assert!(!l.fault("again".into(), t0 + SECOND * 130, wall));
        assert!(l.fault("again".into(), t0 + SECOND * 180, wall));
        assert_eq!(l.count, 182);
        assert_eq!(l.run.as_ref().map(|r| r.since), Some(t0 + SECOND * 130));
    }

    /// A target in `state` whose passing probes took `rtts_ms`.
    fn target(port: u16, state: TargetState, rtts_ms: &[u64]) -> Target {
        let mut machine = Machine::new(1, 1);
        machine.set(state);
        let mut rtt = RttStats::new();
        for &ms in rtts_ms {
            rtt.observe(Duration::from_millis(ms));
        }
        Target {
            addr: SocketAddr::from(([192, 0, 2, 1], port)),
            machine,
            last: None,
            last_at: None,
            changed_at: None,
            probes: 0,
            capacity: None,
            awaited: false,
            local: LocalFaults::default(),
            rtt,
            kind: "tcp",
            cert_not_after: None,
            counts: ProbeCounts::default(),
        }
    }

    fn dc(targets: Vec<Target>) -> Dc {
        Dc {
            min_up: Some(1),
            targets,
            capacity_hold: Duration::ZERO,
            stale_after: Duration::ZERO,
            published: (Observed::Unknown, 100, 0),
            v4: Vec::new(),
            v6: Vec::new(),
        }
    }

    #[test]
    fn a_datacenters_rtt_is_its_fastest_up_targets() {
        use TargetState::{Down, Unknown, Up};
        // No probe passed yet, or no target UP: unknown.
        assert_eq!(dc(vec![]).rtt(2.0), (0, false));
        assert_eq!(dc(vec![target(1, Up, &[])]).rtt(2.0), (0, false));
        let fast_but_down = target(1, Down, &[5]);
        let fast_but_unknown = target(2, Unknown, &[6]);
        assert_eq!(
            dc(vec![fast_but_down, fast_but_unknown]).rtt(2.0),
            (0, false)
        );
        // The lowest smoothed RTT over the UP targets; DOWN ones do not
        // count, however fast they were.
        let d = dc(vec![
            target(1, Up, &[40, 40]),
            target(2, Down, &[5]),
            target(3, Up, &[30, 34]),
            target(4, Up, &[]),
        ]);
        assert_eq!(d.rtt(2.0), (31_000, false));
    }

    #[test]
    fn a_datacenter_is_congested_when_its_rtt_giving_target_is() {
        use TargetState::Up;
        let steady = [20; 10];
        let mut slowed = steady.to_vec();
        slowed.extend([200, 200]);
        // The slowed target still gives the lowest RTT: congested.
        let d = dc(vec![target(1, Up, &slowed), target(2, Up, &[500; 10])]);
        let (rtt, congested) = d.rtt(2.0);
        assert!(congested);
        // 20 -> 65 -> 98.75 ms.
        assert_eq!(rtt, 98_750);
        // A factor it does not exceed.
        assert_eq!(d.rtt(10.0), (rtt, false));
        // Another UP target is faster and steady: not congested (clients
        // are answered by way of the fast one's figures).
        let d = dc(vec![target(1, Up, &slowed), target(2, Up, &steady)]);
        assert_eq!(d.rtt(2.0), (20_000, false));
        // Too few samples to judge.
        let d = dc(vec![target(1, Up, &[20, 200, 200])]);
        assert!(!d.rtt(2.0).1);
    }

    #[test]
    fn a_long_run_of_local_faults_makes_the_state_stale() {
        let t0 = tokio::time::Instant::now();
        let after = SECOND * 30;
        let mut l = LocalFaults::default();
        assert!(!l.stale(t0, after));
        l.fault("EMFILE".into(), t0, SystemTime::UNIX_EPOCH);
        assert!(!l.stale(t0 + after, after));
        assert!(l.stale(t0 + after + SECOND, after));
        l.clear();
        assert!(!l.stale(t0 + after * 2, after));
    }
}
