//! Several Meridian instances, one view, through etcd (`[cluster]`;
//! README, "Cluster").
//!
//! ```text
//!  monitor (own probes, rise/fall per target) ──own view──► cluster task ──► etcd
//!       ▲                                                      │   <prefix>instances/<name>  (lease)
//!       └──── SharedInput (peers' votes, rule) + overrides ◄───┘   <prefix>overrides/<zone>/<dc>
//! ```
//!
//! * Each instance writes one key under a lease, `<prefix>instances/<name>`,
//!   with what it sees ([`Instance`]), on every change of its own state and
//!   every `lease_ttl / 3` (the heartbeat, which also keeps the lease).
//!   A dead instance's key goes with its lease, and its votes with it.
//! * Overrides set through any instance's API are written to
//!   `<prefix>overrides/<zone>/<datacenter>` ([`SharedOverride`]); every
//!   instance applies them through its watch, and the writer at once.
//! * One task per instance talks to etcd: connect, lease, write, get the
//!   whole prefix (a resync), then watch from the revision after that get,
//!   so no change falls between the two. Any error ends the session; the
//!   next starts after an exponential backoff (capped at
//!   [`MAX_BACKOFF`]).
//! * Fail static: while etcd is unreachable nothing is cleared. The last
//!   shared state (the peers' votes and the overrides) keeps counting, the
//!   own probes keep running, and the query path never waits on any of
//!   this: it reads the published snapshot. Only operator overrides stop:
//!   they answer 503, because an override that held on one instance only
//!   would make name servers disagree.
//! * Errors name the endpoint, what is wrong and the `[cluster]` setting
//!   that fixes it (a wrong CA, a missing client certificate, a wrong
//!   password, a missing permission), in `/cluster`'s `last_error`, the
//!   WARN and a refused override's 503; a TLS failure is diagnosed on a
//!   connection of its own (`tls.rs`). The password is never shown.
//! * Every etcd call is bounded by `dial_timeout`, except the watch and
//!   keep-alive streams, which HTTP/2 keep-alives (and the heartbeat's
//!   bounded writes) end when etcd goes silent. Shutdown never waits for
//!   a session's start.
//!
//! The vote rule itself is [`quorum`], pure.

pub mod quorum;
mod tls;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use etcd_client::{
    Client, ConnectOptions, EventType, GetOptions, KeyValue, PutOptions, WatchOptions,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::{ClusterConfig, Config, Quorum};
use crate::health::monitor::{ClusterHooks, Monitor, OverrideChange, OverrideSource, SharedInput};
use crate::health::overrides::{DcKey, Stored};
use crate::health::{Observed, Override};

/// Longest pause between two connection attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// First pause after a failed session.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// How an etcd call that timed out is reported.
const NO_ANSWER: &str = "no answer within";
/// At most one WARN per this long while etcd stays unreachable.
const LOG_EVERY: Duration = Duration::from_secs(60);

//------------ Keys and values ----------------------------------------------

/// One instance's record, `<prefix>instances/<name>` (JSON).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    /// The instance's `[cluster] name`.
    pub name: String,
    /// When it wrote this, RFC 3339 UTC.
    pub heartbeat_at: String,
    /// Its config generation ([`generation`]), hex.
    pub generation: String,
    /// Its Meridian version.
    pub version: String,
    /// What it sees, by zone and datacenter.
    pub datacenters: BTreeMap<String, BTreeMap<String, DcView>>,
}

/// What one instance's own probes say of a datacenter.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DcView {
    /// Its own state (after its own rise/fall), before any vote.
    pub state: Observed,
    /// Smoothed RTT of its fastest UP target, microseconds; 0 unknown.
    pub rtt_us: u32,
    /// Each target's state.
    pub targets: Vec<TargetView>,
}

/// One probe target's state as an instance sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetView {
    /// ADDRESS:PORT.
    pub target: String,
    /// up, down or unknown.
    pub state: String,
}

/// A shared override, `<prefix>overrides/<zone>/<datacenter>` (JSON).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedOverride {
    /// drain or force-up (undrain deletes the key).
    #[serde(rename = "override")]
    pub value: Override,
    /// Who set it, when and through which instance (`by`, `at` and
    /// `instance` beside `override` in the JSON).
    #[serde(flatten)]
    pub source: OverrideSource,
}

/// The config generation: a hash of what decides answers, the same on
/// every instance that serves the same zones. SipHash-1-3 (128 bits,
/// fixed keys, so stable across processes and builds) over each zone
/// file's name and contents and its records file's, in origin order, and
/// the GeoIP database and country table when set. `meridian.toml` itself
/// is left out: it holds what differs per instance by design (listen
/// addresses, `[cluster] name`, the admin API).
pub fn generation(config: &Config) -> String {
    use siphasher::sip128::{Hasher128, SipHasher13};
    use std::hash::Hasher;
    let mut h = SipHasher13::new_with_keys(0x6d65_7269_6469_616e, 0x636c_7573_7465_7221);
    let mut file = |label: &str, path: &std::path::Path| {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let bytes = std::fs::read(path).unwrap_or_default();
        for part in [label.as_bytes(), name.unwrap_or_default().as_bytes()] {
            h.write_u64(part.len() as u64);
            h.write(part);
        }
        h.write_u64(bytes.len() as u64);
        h.write(&bytes);
    };
    for zone in &config.zones {
        file("zone", std::path::Path::new(&zone.source));
        if let Some((path, _)) = &zone.records_file {
            file("records", path);
        }
    }
    if let Some(p) = &config.server.geoip {
        file("geoip", p);
    }
    if let Some(p) = &config.server.countries {
        file("countries", p);
    }
    format!("{:032x}", h.finish128().as_u128())
}

//------------ Cluster ------------------------------------------------------

/// A started session's client, lease and streams.
struct Live {
    client: Client,
    lease: i64,
    keeper: etcd_client::LeaseKeeper,
    alive: etcd_client::LeaseKeepAliveStream,
    watch: etcd_client::WatchStream,
}

/// The cluster membership of this instance; cheap to clone.
#[derive(Clone, Debug)]
pub struct Cluster {
    inner: Arc<Inner>,
}

struct Inner {
    config: ClusterConfig,
    monitor: Monitor,
    state: Mutex<State>,
    /// The connected client (for override writes); `None` while
    /// disconnected.
    client: watch::Sender<Option<Client>>,
    /// This instance's config generation (a reload changes it).
    generation: watch::Sender<String>,
    /// Set when a session has read the whole prefix once.
    synced: watch::Sender<bool>,
    errors: AtomicU64,
    reconnects: AtomicU64,
    /// The endpoint the next session uses (an index into `endpoints`).
    endpoint: AtomicUsize,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("name", &self.config.name)
            .finish_non_exhaustive()
    }
}

/// What this instance knows of the cluster. Only the cluster task and
/// the override hook write it, briefly and never across an await.
#[derive(Debug)]
struct State {
    rule: Quorum,
    connected: bool,
    /// Since when `connected` has its value.
    since: SystemTime,
    last_error: Option<String>,
    /// When the last WARN about being disconnected was logged.
    warned_at: Option<tokio::time::Instant>,
    /// The live peers (their lease keys exist), by name; this instance
    /// is not among them.
    peers: BTreeMap<String, Instance>,
    /// The record this instance last wrote.
    own: Option<Instance>,
    overrides: BTreeMap<DcKey, SharedOverride>,
}

impl Cluster {
    /// Starts the cluster task for `config` (`[cluster]`), feeding
    /// `monitor`; it runs until `token` is cancelled (then revokes its
    /// lease, so peers stop counting it at once). `generation` is
    /// [`generation`] of the loaded config.
    pub fn start(
        config: ClusterConfig,
        monitor: Monitor,
        generation: String,
        token: CancellationToken,
        tasks: &tokio_util::task::TaskTracker,
    ) -> Self {
        // Instances start on different members (by name), so one
        // member's loss does not move them all at once.
        let first_endpoint = config.name.bytes().fold(0usize, |h, b| {
            h.wrapping_mul(31).wrapping_add(usize::from(b))
        });
        let overrides = Self::cached_overrides(&monitor.stored_overrides());
        let cluster = Self {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    rule: config.quorum,
                    connected: false,
                    since: SystemTime::now(),
                    last_error: None,
                    warned_at: None,
                    peers: BTreeMap::new(),
                    own: None,
                    overrides,
                }),
                config,
                monitor: monitor.clone(),
                client: watch::channel(None).0,
                generation: watch::channel(generation).0,
                synced: watch::channel(false).0,
                errors: AtomicU64::new(0),
                reconnects: AtomicU64::new(0),
                endpoint: AtomicUsize::new(first_endpoint),
            }),
        };
        // Votes count from the start (none yet): the fallback is visible.
        cluster.push_votes();
        let (view, set) = (cluster.weak(), cluster.weak());
        monitor.attach_cluster(ClusterHooks {
            view: Box::new(move || {
                view.upgrade()
                    .map_or(Value::Null, |inner| Self { inner }.view())
            }),
            set_override: Box::new(move |change| {
                let set = set.clone();
                Box::pin(async move {
                    match set.upgrade() {
                        Some(inner) => Self { inner }.set_override(change).await,
                        None => Err("the server is shutting down".into()),
                    }
                })
            }),
        });
        tasks.spawn(cluster.clone().run(token));
        cluster
    }

    /// The shared overrides the state file (the local cache) held at
    /// start-up: what this instance knows until etcd answers, so
    /// `/cluster` lists them with their sources and the first resync logs
    /// only what changed meanwhile. An override without a source was set
    /// without `[cluster]`: etcd's overrides replace it once connected,
    /// which is logged now, while the operator can still act on it.
    fn cached_overrides(stored: &Stored) -> BTreeMap<DcKey, SharedOverride> {
        let mut out = BTreeMap::new();
        for (key, value) in &stored.overrides {
            match stored.sources.get(key) {
                Some(source) => {
                    let shared = SharedOverride {
                        value: *value,
                        source: source.clone(),
                    };
                    out.insert(key.clone(), shared);
                }
                None => tracing::warn!(
                    zone = %key.0, datacenter = %key.1,
                    "the state file holds an override set without [cluster]; it holds until etcd \
                     answers, then etcd's shared overrides replace it: set it again through the API \
                     to share it"
                ),
            }
        }
        out
    }

    fn weak(&self) -> std::sync::Weak<Inner> {
        Arc::downgrade(&self.inner)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until the shared state has been read from etcd once, or
    /// `limit`; returns whether it was.
    pub async fn wait_synced(&self, limit: Duration) -> bool {
        let mut rx = self.inner.synced.subscribe();
        tokio::time::timeout(limit, rx.wait_for(|s| *s))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// A reload: the new vote rule and config generation.
    pub fn reconfigure(&self, rule: Quorum, generation: String) {
        self.lock().rule = rule;
        self.inner.generation.send_if_modified(|g| {
            let changed = *g != generation;
            *g = generation;
            changed
        });
        self.push_votes();
    }

    fn key(&self, tail: &str) -> String {
        format!("{}{tail}", self.inner.config.prefix)
    }

    //--- The task

    async fn run(self, token: CancellationToken) {
        let mut backoff = MIN_BACKOFF;
        loop {
            let started = tokio::time::Instant::now();
            // One member per session, the next one after a failure: a
            // balanced channel over every member keeps sending some calls
            // to a dead one (connection refused), which would end sessions
            // on the live ones too.
            let endpoints = &self.inner.config.endpoints;
            let n = self.inner.endpoint.load(Ordering::Relaxed) % endpoints.len();
            let endpoint = &endpoints[n];
            let result = self.session(endpoint, &token).await;
            let _ = self.inner.client.send_replace(None);
            match result {
                Ok(()) => return,
                Err(e) => {
                    self.inner.errors.fetch_add(1, Ordering::Relaxed);
                    // The next session tries the next member.
                    self.inner.endpoint.fetch_add(1, Ordering::Relaxed);
                    self.disconnected(&format!("{endpoint}: {}", self.hint(e)));
                }
            }
            // A session that lasted is a new outage: start the backoff
            // over.
            if started.elapsed() > MAX_BACKOFF * 2 {
                backoff = MIN_BACKOFF;
            }
            tokio::select! {
                () = token.cancelled() => return,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
            self.inner.reconnects.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records a lost (or failed) session; logs the first and then at
    /// most one WARN per [`LOG_EVERY`].
    fn disconnected(&self, error: &str) {
        let mut s = self.lock();
        let now = tokio::time::Instant::now();
        let was = s.connected;
        s.connected = false;
        s.last_error = Some(error.to_string());
        if was {
            s.since = SystemTime::now();
        }
        let warn = was || s.warned_at.is_none_or(|t| now - t >= LOG_EVERY);
        if warn {
            s.warned_at = Some(now);
            let peers = s.peers.len();
            drop(s);
            tracing::warn!(
                endpoints = ?self.inner.config.endpoints,
                "no etcd session: {error}; keeping the last shared state ({peers} peer(s), shared overrides) and this instance's own probes; retrying"
            );
        }
    }

    /// Adds to an etcd error what to check in `[cluster]`, when the
    /// error says which setting is wrong.
    fn hint(&self, error: String) -> String {
        let c = &self.inner.config;
        let user = c.auth.as_ref().map(|a| a.username.as_str());
        if error.contains("authentication failed") {
            format!(
                "{error}: check username ({}) and the password in password_file",
                user.unwrap_or("(none)")
            )
        } else if error.contains("user name is empty")
            || error.contains("user name not found")
            || (error.contains("permission denied") && user.is_none())
        {
            format!(
                "{error}: etcd has authentication enabled: set username and password_file in \
                 [cluster]"
            )
        } else if error.contains("permission denied") {
            format!(
                "{error}: etcd user {} needs readwrite on the key prefix {:?} (etcdctl role \
                 grant-permission ROLE --prefix=true readwrite {})",
                user.unwrap_or("(none)"),
                c.prefix,
                c.prefix
            )
        } else {
            error
        }
    }

    /// Connects to `endpoint` and grants the session's lease: the first
    /// calls, where a wrong CA, client certificate or password shows. A
    /// TLS failure is explained by [`tls::diagnose`]; plain HTTP to a TLS
    /// port by [`tls::speaks_tls`].
    async fn open(&self, endpoint: &str) -> Result<(Client, i64), String> {
        let c = &self.inner.config;
        let limit = c.dial_timeout;
        let mut options = ConnectOptions::new()
            .with_connect_timeout(limit)
            .with_timeout(limit)
            .with_keep_alive(limit.max(Duration::from_secs(1)), limit);
        if let Some(auth) = &c.auth {
            options = options.with_user(auth.username.clone(), auth.password.clone());
        }
        if let Some(tls) = &c.tls {
            let mut t = etcd_client::TlsOptions::new()
                .ca_certificate(etcd_client::Certificate::from_pem(&tls.ca_pem));
            if let Some((cert, key)) = &tls.identity {
                t = t.identity(etcd_client::Identity::from_pem(cert, key));
            }
            options = options.with_tls(t);
        }
        let first = async {
            let mut client =
                bounded(limit, "connect", Client::connect([endpoint], Some(options))).await?;
            let ttl = c.lease_ttl.as_secs() as i64;
            let lease = bounded(limit, "lease grant", client.lease_grant(ttl, None))
                .await?
                .id();
            Ok::<_, String>((client, lease))
        };
        match first.await {
            Ok(opened) => Ok(opened),
            // A silent endpoint would keep a diagnosis silent too.
            Err(e) if e.contains(NO_ANSWER) => Err(e),
            Err(e) => match &c.tls {
                Some(tls) => Err(tls::diagnose(endpoint, tls, limit).await.unwrap_or(e)),
                None if tls::speaks_tls(endpoint, limit).await => Err(format!(
                    "{e}: etcd serves TLS on this port: set ca_file (the CA of etcd's \
                     certificate)"
                )),
                None => Err(e),
            },
        }
    }

    /// A session's start: connect, lease, write this instance's record,
    /// read the whole prefix (a resync), and watch from the revision
    /// after that read, so no change falls between the two.
    async fn start_session(&self, endpoint: &str) -> Result<Live, String> {
        let c = &self.inner.config;
        let limit = c.dial_timeout;
        let (mut client, lease) = self.open(endpoint).await?;
        let (keeper, alive) =
            bounded(limit, "lease keep-alive", client.lease_keep_alive(lease)).await?;
        self.write_own(&mut client, lease, true).await?;
        let prefix = c.prefix.clone();
        let all = bounded(
            limit,
            "get",
            client.get(prefix.clone(), Some(GetOptions::new().with_prefix())),
        )
        .await?;
        let revision = all.header().map_or(0, |h| h.revision());
        self.resync(all.kvs());
        let watch = bounded(
            limit,
            "watch",
            client.watch(
                prefix,
                Some(
                    WatchOptions::new()
                        .with_prefix()
                        .with_start_revision(revision + 1),
                ),
            ),
        )
        .await?;
        Ok(Live {
            client,
            lease,
            keeper,
            alive,
            watch,
        })
    }

    /// One connection to etcd, until an error (returned) or `token`.
    async fn session(&self, endpoint: &str, token: &CancellationToken) -> Result<(), String> {
        let c = &self.inner.config;
        let limit = c.dial_timeout;
        // Shutdown does not wait out a slow or unreachable etcd (each
        // call of the start may take dial_timeout). A lease granted by
        // then is not revoked: peers stop counting it after lease_ttl.
        let Live {
            mut client,
            lease,
            mut keeper,
            mut alive,
            mut watch,
        } = tokio::select! {
            live = self.start_session(endpoint) => live?,
            () = token.cancelled() => return Ok(()),
        };
        self.connected();
        let _ = self.inner.client.send_replace(Some(client.clone()));
        let _ = self.inner.synced.send_replace(true);
        let mut heartbeat =
            tokio::time::interval((c.lease_ttl / 3).max(Duration::from_millis(500)));
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        heartbeat.tick().await;
        let mut observations = self.inner.monitor.subscribe_observations();
        let mut generation = self.inner.generation.subscribe();
        loop {
            tokio::select! {
                () = token.cancelled() => {
                    // Peers stop counting this instance at once, rather
                    // than after lease_ttl.
                    let _ = tokio::time::timeout(limit, client.lease_revoke(lease)).await;
                    return Ok(());
                }
                message = watch.message() => match message {
                    Ok(Some(r)) if r.canceled() => {
                        return Err(format!("watch cancelled: {}", r.cancel_reason()));
                    }
                    Ok(Some(r)) => self.apply(r.events()),
                    Ok(None) => return Err("the watch ended".into()),
                    Err(e) => return Err(format!("watch: {}", describe(&e))),
                },
                reply = alive.message() => match reply {
                    Ok(Some(r)) if r.ttl() <= 0 => return Err("the lease expired".into()),
                    Ok(Some(_)) => {}
                    Ok(None) => return Err("the lease keep-alive stream ended".into()),
                    Err(e) => return Err(format!("lease keep-alive: {}", describe(&e))),
                },
                _ = heartbeat.tick() => {
                    bounded(limit, "lease keep-alive", keeper.keep_alive()).await?;
                    self.write_own(&mut client, lease, true).await?;
                }
                _ = observations.changed() => self.write_own(&mut client, lease, false).await?,
                _ = generation.changed() => self.write_own(&mut client, lease, false).await?,
            }
        }
    }

    fn connected(&self) {
        let mut s = self.lock();
        let was = s.connected;
        s.connected = true;
        s.since = SystemTime::now();
        s.warned_at = None;
        let peers = s.peers.len();
        drop(s);
        if !was {
            tracing::info!(
                name = %self.inner.config.name,
                "connected to etcd; shared state resynchronised ({peers} live peer(s))"
            );
        }
    }

    /// Builds this instance's record; `None` when it equals the last one
    /// written (heartbeat time aside) and `force` is false.
    fn own_record(&self, force: bool) -> Option<Instance> {
        let mut datacenters: BTreeMap<String, BTreeMap<String, DcView>> = BTreeMap::new();
        for ((zone, dc), state, rtt_us, targets) in self.inner.monitor.own_observations() {
            let targets = targets
                .into_iter()
                .map(|(target, state)| TargetView {
                    target,
                    state: state.to_string(),
                })
                .collect();
            datacenters.entry(zone).or_default().insert(
                dc,
                DcView {
                    state,
                    rtt_us,
                    targets,
                },
            );
        }
        let record = Instance {
            name: self.inner.config.name.clone(),
            heartbeat_at: crate::rfc3339(SystemTime::now()),
            generation: self.inner.generation.borrow().clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            datacenters,
        };
        let s = self.lock();
        let same = s.own.as_ref().is_some_and(|o| {
            // RTTs move with every probe: only states make a rewrite.
            fn states(i: &Instance) -> impl Iterator<Item = (&str, &str, Observed, &[TargetView])> {
                let dcs = i.datacenters.iter();
                dcs.flat_map(|(z, d)| {
                    d.iter()
                        .map(move |(n, v)| (z.as_str(), n.as_str(), v.state, &v.targets[..]))
                })
            }
            o.generation == record.generation && states(o).eq(states(&record))
        });
        (force || !same).then_some(record)
    }

    async fn write_own(&self, client: &mut Client, lease: i64, force: bool) -> Result<(), String> {
        let Some(record) = self.own_record(force) else {
            return Ok(());
        };
        let value = serde_json::to_vec(&record).map_err(|e| e.to_string())?;
        let key = self.key(&format!("instances/{}", self.inner.config.name));
        bounded(
            self.inner.config.dial_timeout,
            "put",
            client.put(key, value, Some(PutOptions::new().with_lease(lease))),
        )
        .await?;
        self.lock().own = Some(record);
        Ok(())
    }

    /// Replaces everything known with the prefix's contents.
    fn resync(&self, kvs: &[KeyValue]) {
        {
            let mut s = self.lock();
            // Applied over what is known (so only changes are logged),
            // then whatever etcd no longer has is removed.
            for kv in kvs {
                self.apply_one(&mut s, kv.key(), Some(kv.value()));
            }
            let present: std::collections::BTreeSet<&[u8]> =
                kvs.iter().map(KeyValue::key).collect();
            let gone: Vec<String> = s
                .peers
                .keys()
                .map(|name| self.key(&format!("instances/{name}")))
                .chain(
                    s.overrides
                        .keys()
                        .map(|(z, d)| self.key(&format!("overrides/{z}/{d}"))),
                )
                .filter(|k| !present.contains(k.as_bytes()))
                .collect();
            for key in gone {
                self.apply_one(&mut s, key.as_bytes(), None);
            }
        }
        self.push_votes();
        self.push_overrides();
    }

    /// Applies watch events.
    fn apply(&self, events: &[etcd_client::Event]) {
        {
            let mut s = self.lock();
            for e in events {
                let Some(kv) = e.kv() else { continue };
                let value = match e.event_type() {
                    EventType::Put => Some(kv.value()),
                    EventType::Delete => None,
                };
                self.apply_one(&mut s, kv.key(), value);
            }
        }
        self.push_votes();
        self.push_overrides();
    }

    /// One key, set to `value` or deleted (`None`). Keys Meridian does not
    /// write, and values it cannot read, are skipped (and logged).
    fn apply_one(&self, s: &mut State, key: &[u8], value: Option<&[u8]>) {
        let Some(tail) = std::str::from_utf8(key)
            .ok()
            .and_then(|k| k.strip_prefix(&self.inner.config.prefix))
        else {
            return;
        };
        if let Some(name) = tail.strip_prefix("instances/") {
            if name == self.inner.config.name {
                return;
            }
            match value.map(serde_json::from_slice::<Instance>) {
                None => {
                    if s.peers.remove(name).is_some() {
                        tracing::info!(peer = %name, "cluster peer gone (its lease ended); its votes no longer count");
                    }
                }
                Some(Ok(record)) => {
                    if !s.peers.contains_key(name) {
                        tracing::info!(peer = %name, generation = %record.generation, "cluster peer joined");
                    }
                    s.peers.insert(name.to_string(), record);
                }
                Some(Err(e)) => {
                    tracing::warn!(key = %tail, "unreadable instance record in etcd, ignored: {e}");
                }
            }
        } else if let Some(rest) = tail.strip_prefix("overrides/") {
            let Some((zone, dc)) = rest.split_once('/') else {
                return;
            };
            let k = (zone.to_string(), dc.to_string());
            match value.map(serde_json::from_slice::<SharedOverride>) {
                None => {
                    if s.overrides.remove(&k).is_some() {
                        tracing::warn!(zone = %zone, datacenter = %dc, "shared override cleared (probes decide)");
                    }
                }
                Some(Ok(o)) => {
                    if s.overrides.get(&k) != Some(&o) {
                        tracing::warn!(
                            zone = %zone, datacenter = %dc, by = %o.source.by, instance = %o.source.instance,
                            "shared override: {}",
                            o.value.name()
                        );
                    }
                    s.overrides.insert(k, o);
                }
                Some(Err(e)) => {
                    tracing::warn!(key = %tail, "unreadable override in etcd, ignored: {e}");
                }
            }
        }
    }

    /// Hands the peers' votes to the monitor (which republishes if they
    /// changed).
    fn push_votes(&self) {
        let s = self.lock();
        let mut votes: BTreeMap<DcKey, Vec<(String, Observed)>> = BTreeMap::new();
        for (name, peer) in &s.peers {
            for (zone, dcs) in &peer.datacenters {
                for (dc, view) in dcs {
                    votes
                        .entry((zone.clone(), dc.clone()))
                        .or_default()
                        .push((name.clone(), view.state));
                }
            }
        }
        let input = SharedInput {
            name: self.inner.config.name.clone(),
            rule: s.rule,
            votes,
        };
        drop(s);
        self.inner.monitor.set_shared(input);
    }

    /// Hands the shared overrides and their sources to the monitor
    /// (which saves them in the state file, the local cache).
    fn push_overrides(&self) {
        let mut stored = Stored::default();
        for (k, o) in &self.lock().overrides {
            stored.overrides.insert(k.clone(), o.value);
            stored.sources.insert(k.clone(), o.source.clone());
        }
        self.inner.monitor.set_shared_overrides(stored);
    }

    //--- Operators

    /// Stores an override change in etcd, then applies it here at once
    /// (the watch confirms it, and brings it to every other instance).
    async fn set_override(&self, change: OverrideChange) -> Result<(), String> {
        let not_stored = "the override was not stored cluster-wide and nothing changed";
        // A session that just ended (an etcd member went away) is usually
        // back within moments: wait for it up to dial_timeout.
        let mut rx = self.inner.client.subscribe();
        let connected =
            tokio::time::timeout(self.inner.config.dial_timeout, rx.wait_for(Option::is_some))
                .await
                .ok()
                .and_then(|r| r.ok().and_then(|c| c.clone()));
        let Some(mut client) = connected else {
            let why = self.lock().last_error.clone().unwrap_or_default();
            return Err(format!(
                "etcd is unreachable ({why}): {not_stored}; retry when GET /cluster shows \"connected\": true"
            ));
        };
        let key = self.key(&format!("overrides/{}/{}", change.zone, change.datacenter));
        let limit = self.inner.config.dial_timeout;
        let dc_key = (change.zone.clone(), change.datacenter.clone());
        match change.value {
            Some(value) => {
                let record = SharedOverride {
                    value,
                    source: OverrideSource {
                        by: change.by,
                        at: crate::rfc3339(SystemTime::now()),
                        instance: self.inner.config.name.clone(),
                    },
                };
                let json = serde_json::to_vec(&record).map_err(|e| e.to_string())?;
                bounded(limit, "put", client.put(key, json, None))
                    .await
                    .map_err(|e| format!("etcd: {}: {not_stored}", self.hint(e)))?;
                self.lock().overrides.insert(dc_key, record);
            }
            None => {
                bounded(limit, "delete", client.delete(key, None))
                    .await
                    .map_err(|e| format!("etcd: {}: {not_stored}", self.hint(e)))?;
                self.lock().overrides.remove(&dc_key);
            }
        }
        self.push_overrides();
        Ok(())
    }

    //--- Views

    /// `GET /cluster`: this instance and its live peers.
    pub fn view(&self) -> Value {
        let s = self.lock();
        let own_generation = self.inner.generation.borrow().clone();
        let mut instances = Vec::with_capacity(s.peers.len() + 1);
        let entry = |i: &Instance, me: bool| {
            json!({
                "name": i.name,
                "self": me,
                "heartbeat_at": i.heartbeat_at,
                "generation": i.generation,
                "version": i.version,
                "datacenters": i.datacenters,
            })
        };
        if let Some(own) = &s.own {
            instances.push(entry(own, true));
        }
        for peer in s.peers.values() {
            instances.push(entry(peer, false));
        }
        let differing: Vec<&str> = s
            .peers
            .values()
            .filter(|p| p.generation != own_generation)
            .map(|p| p.name.as_str())
            .collect();
        let overrides: Vec<Value> = s
            .overrides
            .iter()
            .map(|((zone, dc), o)| {
                json!({
                    "zone": zone, "datacenter": dc, "override": o.value,
                    "by": o.source.by, "at": o.source.at, "instance": o.source.instance,
                })
            })
            .collect();
        json!({
            "name": self.inner.config.name,
            "connected": s.connected,
            "since": crate::rfc3339(s.since),
            "last_error": s.last_error,
            "endpoints": self.inner.config.endpoints,
            "prefix": self.inner.config.prefix,
            "quorum": s.rule.name(),
            "lease_ttl_s": self.inner.config.lease_ttl.as_secs(),
            "generation": own_generation,
            "generations_differ": !differing.is_empty(),
            "differing_instances": differing,
            "instances_live": s.peers.len() + 1,
            "instances": instances,
            "overrides": overrides,
            "errors": self.inner.errors.load(Ordering::Relaxed),
            "reconnects": self.inner.reconnects.load(Ordering::Relaxed),
        })
    }

    /// The cluster's metric families, as a source that does not keep the
    /// cluster alive.
    pub fn metric_source(&self) -> crate::metrics::Source {
        let weak = self.weak();
        Box::new(move |out| {
            if let Some(inner) = weak.upgrade() {
                Self { inner }.metric_families(out);
            }
        })
    }

    fn metric_families(&self, out: &mut Vec<crate::metrics::Family>) {
        use crate::metrics::{Family, Kind};
        let (connected, live, mismatch) = {
            let s = self.lock();
            let own = self.inner.generation.borrow().clone();
            let mismatch = s.peers.values().any(|p| p.generation != own);
            (s.connected, s.peers.len() + 1, mismatch)
        };
        let gauge = |name: &'static str, help: &'static str, v: u64| {
            let mut f = Family::new(name, help, Kind::Gauge);
            f.int(vec![], v);
            f
        };
        out.push(gauge(
            "meridian_cluster_connected",
            "1 while this instance is connected to etcd ([cluster]), else 0.",
            u64::from(connected),
        ));
        out.push(gauge(
            "meridian_cluster_instances_live",
            "Live instances (this one and the peers whose lease keys exist), as last known.",
            live as u64,
        ));
        out.push(gauge(
            "meridian_cluster_generation_mismatch",
            "1 when a live peer serves another config generation (answers may differ between name servers).",
            u64::from(mismatch),
        ));
        let mut fallback = Family::new(
            "meridian_cluster_quorum_fallback",
            "1 when too few live observers see a datacenter for the quorum rule, so this instance's own view decides.",
            Kind::Gauge,
        );
        for ((zone, dc), _, d) in self.inner.monitor.decisions() {
            fallback.int(
                vec![("zone", zone), ("datacenter", dc)],
                u64::from(d.fallback),
            );
        }
        out.push(fallback);
        let mut f = Family::new(
            "meridian_cluster_etcd_errors",
            "etcd sessions that ended in an error (unreachable, timeout, lost watch or lease).",
            Kind::Counter,
        );
        f.int(vec![], self.inner.errors.load(Ordering::Relaxed));
        out.push(f);
        let mut f = Family::new(
            "meridian_cluster_reconnects",
            "Attempts to reconnect to etcd after an error.",
            Kind::Counter,
        );
        f.int(vec![], self.inner.reconnects.load(Ordering::Relaxed));
        out.push(f);
    }
}

/// `call` within `limit`, its error or the timeout as text naming `what`.
async fn bounded<T>(
    limit: Duration,
    what: &str,
    call: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, String> {
    match tokio::time::timeout(limit, call).await {
        Ok(Ok(v)) => Ok(v),
        // tonic's own request timeout (the same limit), as ours.
        Ok(Err(etcd_client::Error::GRpcStatus(s))) if s.message() == "Timeout expired" => {
            Err(format!("{what}: {NO_ANSWER} {limit:?}"))
        }
        Ok(Err(e)) => Err(format!("{what}: {}", describe(&e))),
        Err(_) => Err(format!("{what}: {NO_ANSWER} {limit:?}")),
    }
}

/// An etcd error as one line an operator can act on: a gRPC status's
/// message (and its cause, when one lies behind it) rather than the
/// status's debug form, and a transport error with its causes.
fn describe(e: &etcd_client::Error) -> String {
    use std::error::Error as _;
    let (head, cause) = match e {
        etcd_client::Error::GRpcStatus(s) => {
            let message = match s.message() {
                "" => format!("{:?}", s.code()),
                m => m.to_string(),
            };
            (message, s.source())
        }
        etcd_client::Error::TransportError(t) => (t.to_string(), t.source()),
        other => (other.to_string(), None),
    };
    crate::error_chain(head, cause)
}
