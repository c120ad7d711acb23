//! Meridian: an authoritative DNS server that answers each client with the
//! records of the datacenter that suits it best.
//!
//! # Layout
//!
//! ```text
//!  meridian.toml + zones/*.toml ──► config ──► model (validated, indexed)
//!                                                 │
//!  geoip/*.mmdb ──► geo (GeoDb, distance, tables) │
//!                         │                       ▼
//!                         └──────────► policy (rank: pure, precomputed)
//!                                                 │
//!                                                 ▼
//!                          snapshot (zones + policies, behind ArcSwap)
//!                                                 │ one load per query
//!  UDP/TCP sockets ──► dns::server loops ──► dns::handler ──► bytes out
//! ```
//!
//! * `config` reads TOML into `model` types; errors name file, key, reason.
//! * `geo` wraps the GeoIP database; `policy::geo` walks it once per
//!   service to build a prefix table of rankings, so a query does a binary
//!   search instead of a database lookup, and the block found is the
//!   widest correct EDNS Client Subnet scope.
//! * `snapshot` freezes zones and policies; `dns` is the only module that
//!   speaks the wire format (hickory-proto).
//! * [`Server`] binds sockets, runs the loops, and reloads on request: a
//!   bad config is reported and the old snapshot stays in service.
//! * Operator commands beside `run`: `diff` compares two loaded configs
//!   over the GeoIP database with the real policy code, `init` writes a
//!   starter config, `geo::update` verifies and installs a new database.
//!   Without `geoip` set, the database compiled into the binary is used
//!   ([`geo::EMBEDDED_DB`]).

// Unsafe code only where a system call needs it (`dns::batch`'s
// recvmmsg/sendmmsg, `fdlimit`'s setrlimit, `snapshot`'s malloc_trim),
// each allowed there by name. No unwrap or expect outside tests: a panic
// on input from the network would take the server down.
#![deny(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod admin;
pub mod cluster;
pub mod config;
pub mod diff;
pub mod dns;
pub mod dnssec;
pub mod explain;
mod fdlimit;
pub mod geo;
pub mod health;
pub mod init;
pub mod latency;
pub mod metrics;
pub mod model;
mod persist;
pub mod policy;
pub mod querylog;
pub mod snapshot;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, ConfigError};
use crate::dns::rrl::Limiter;

/// `head` followed by each cause in `cause`'s chain (`head: cause: ...`),
/// skipping a cause whose text `head` or an earlier cause already holds:
/// an error in one line an operator can read.
pub(crate) fn error_chain(
    head: String,
    mut cause: Option<&(dyn std::error::Error + 'static)>,
) -> String {
    let mut out = head;
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}
use crate::dns::server::{TcpCounters, TcpSettings, TcpStats, serve_tcp, serve_udp};
use crate::geo::{GeoDb, GeoError};
use crate::snapshot::Snapshot;

/// Attribution required by the shipped GeoIP data's licence (CC BY 4.0).
pub const GEOIP_ATTRIBUTION: &str = "IP Geolocation by DB-IP (https://db-ip.com), CC BY 4.0";

/// Why the server could not start or reload.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Bad configuration.
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// The GeoIP database could not be opened.
    #[error("{0}")]
    Geo(#[from] GeoError),
    /// The country table could not be loaded.
    #[error("{0}")]
    Countries(String),
    /// The state file (operator overrides) could not be read.
    #[error("{0}")]
    State(String),
    /// The query log file could not be opened.
    #[error("{0}")]
    QueryLog(String),
    /// The ASN database could not be opened.
    #[error("{0}")]
    Asn(#[from] latency::asn::AsnError),
    /// A listen address could not be bound.
    #[error("cannot listen on {addr} ({proto}): {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// "udp" or "tcp".
        proto: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Loads config, country table and GeoIP database, and builds a snapshot.
/// This is all of `meridian check`. The static records move into the
/// snapshot: the returned config's zones have empty `records`.
pub fn load(config_path: &Path) -> Result<(Config, Snapshot), Error> {
    load_with_clock(config_path, None, &dnssec::Clock::System)
}

/// [`load`], keeping from `previous` (the snapshot in service) every zone
/// whose file is unchanged, when the GeoIP database and the country table
/// are unchanged too: a reload parses and builds only the zones it
/// changes, and needs memory for those alone. Signed zones sign at
/// `clock`'s time (tests on tokio's paused clock; see [`dnssec::Clock`]).
pub fn load_with_clock(
    config_path: &Path,
    previous: Option<&Snapshot>,
    clock: &dnssec::Clock,
) -> Result<(Config, Snapshot), Error> {
    let server = config::load_server(config_path)?;
    // The GeoIP database is read once: hashed to tell whether it changed,
    // and opened from the same bytes when it did. Without `geoip`, the
    // database compiled into the binary.
    let geo_file = match &server.geoip {
        Some(path) => Some((
            path,
            std::fs::read(path).map_err(|e| geo::GeoError::Open {
                path: path.clone(),
                reason: e.to_string(),
            })?,
        )),
        None => None,
    };
    let countries_text = match &server.countries {
        Some(path) => Some((
            path,
            std::fs::read(path)
                .map_err(|e| Error::Countries(format!("{}: cannot read: {e}", path.display())))?,
        )),
        None => None,
    };
    let geo_fingerprint = {
        use std::hash::{DefaultHasher, Hash, Hasher};
        let mut h = DefaultHasher::new();
        let countries = countries_text.as_ref().map(|(_, b)| config::fingerprint(b));
        let db = geo_file.as_ref().map_or(geo::EMBEDDED_DB, |(_, b)| &b[..]);
        (config::fingerprint(db), countries).hash(&mut h);
        h.finish()
    };
    let keep = previous.filter(|p| geo_fingerprint == p.geo_fingerprint);
    let geo = match keep {
        Some(p) => Arc::clone(&p.geo),
        None => {
            let countries = match &countries_text {
                Some((path, bytes)) => {
                    geo::countries::from_file_bytes(path, bytes).map_err(Error::Countries)?
                }
                None => geo::countries::builtin(),
            };
            Arc::new(match geo_file {
                Some((path, bytes)) => GeoDb::from_file_bytes(path, bytes, countries)?,
                None => GeoDb::embedded(countries)?,
            })
        }
    };
    let mut sources = Vec::new();
    let mut zones: Vec<model::ZoneConfig> = Vec::new();
    for file in config::zone_files(&server.zones_dir)? {
        let text = config::read_file(&file)?;
        let toml = config::fingerprint(text.as_bytes());
        let source = file.display().to_string();
        // Kept when its TOML is the same and so is the records file it
        // names (read again to tell).
        let kept = keep.and_then(|p| {
            p.zones().iter().find(|z| {
                // A signed zone is rebuilt: its keys are read again.
                z.config.source == source
                    && z.config.dnssec.is_none()
                    && z.fingerprint
                        == zone_fingerprint(
                            toml,
                            z.config.records_file.as_ref().map(|(path, _)| {
                                std::fs::read(path).map_or(0, |b| config::fingerprint(&b))
                            }),
                        )
            })
        });
        let zone = match kept {
            Some(z) => {
                sources.push(snapshot::ZoneSource::Kept(Arc::clone(z)));
                (*z.config).clone()
            }
            None => {
                let mut zc = config::parse_zone(&file, &text)?;
                drop(text);
                if let Some(d) = zc.dnssec.as_mut() {
                    Arc::make_mut(d).clock = clock.clone();
                }
                let fingerprint = zone_fingerprint(toml, zc.records_file.as_ref().map(|f| f.1));
                let records = std::mem::take(&mut zc.records);
                let without = zc.clone();
                zc.records = records;
                sources.push(snapshot::ZoneSource::Fresh(Box::new(zc), fingerprint));
                without
            }
        };
        config::check_unique_origin(&file, &zone, &zones)?;
        zones.push(zone);
    }
    zones.sort_by(|a, b| a.origin.cmp(&b.origin));
    let config = Config { server, zones };
    check_country_codes(&config, geo.countries())?;
    let latency = &config.server.latency;
    let map = match &latency.map {
        Some(path) => Some(Arc::new(latency::map::load(path)?)),
        None => None,
    };
    let asn = match &latency.coarse {
        config::Coarse::Asn(path) => Some(Arc::new(latency::asn::AsnTable::open(path)?)),
        config::Coarse::Prefix(..) => None,
    };
    let snapshot = Snapshot::build(sources, &config.server, geo, geo_fingerprint);
    let sources = latency::Sources {
        map,
        asn,
        ..snapshot.latency.sources()
    };
    let snapshot = snapshot.with_latency(sources, Box::default());
    Ok((config, snapshot))
}

/// Registers the metrics read from the server's parts at scrape time:
/// health and probes (the monitor), TCP, response rate limiting and the
/// envelope's error counts.
fn server_metrics(
    metrics: &metrics::Metrics,
    monitor: &health::monitor::Monitor,
    tcp: &Arc<TcpStats>,
    rrl: &Arc<Limiter>,
) {
    use metrics::{Family, Kind};
    metrics.add_source(monitor.metric_source());
    let (tcp, rrl) = (Arc::clone(tcp), Arc::clone(rrl));
    metrics.add_source(Box::new(move |out| {
        let t = tcp.read();
        let mut f = Family::new(
            "meridian_tcp_connections_open",
            "DNS-over-TCP connections open now.",
            Kind::Gauge,
        );
        f.int(vec![], t.open);
        out.push(f);
        let mut f = Family::new(
            "meridian_tcp_refused",
            "DNS-over-TCP connections refused or closed by the limits, by reason.",
            Kind::Counter,
        );
        f.int(
            vec![("reason", "client_limit".into())],
            t.refused_client_limit,
        );
        f.int(
            vec![("reason", "closed_for_room".into())],
            t.closed_for_room,
        );
        f.int(vec![("reason", "accept_error".into())], t.accept_errors);
        out.push(f);
        let r = rrl.stats();
        let mut f = Family::new(
            "meridian_rrl_dropped",
            "UDP responses withheld by response rate limiting.",
            Kind::Counter,
        );
        f.int(vec![], r.dropped);
        out.push(f);
        let mut f = Family::new(
            "meridian_rrl_slipped",
            "UDP responses sent truncated (slip) instead of withheld by response rate limiting.",
            Kind::Counter,
        );
        f.int(vec![], r.slipped);
        out.push(f);
        let c = dns::counters::counts();
        let mut f = Family::new(
            "meridian_dns_malformed",
            "Malformed queries, answered FORMERR.",
            Kind::Counter,
        );
        f.int(vec![], c.formerr);
        out.push(f);
    }));
}

/// A bound address for a log line (`Option`'s `Some(..)` kept out).
fn display_addr(addr: Option<SocketAddr>) -> String {
    addr.map_or_else(|| "unknown".to_string(), |a| a.to_string())
}

/// A zone's fingerprint: its TOML's and its records file's.
fn zone_fingerprint(toml: u64, records_file: Option<u64>) -> u64 {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut h = DefaultHasher::new();
    (toml, records_file).hash(&mut h);
    h.finish()
}

/// Socket buffer size asked for on UDP sockets (the kernel caps it at
/// `net.core.rmem_max` / `wmem_max`): room for bursts while a thread is busy.
const UDP_BUFFER_BYTES: usize = 4 << 20;

/// Country overrides must name countries the country table knows (`UK`
/// is not a code; `GB` is), or they silently never match.
fn check_country_codes(config: &Config, countries: &model::CountryTable) -> Result<(), Error> {
    for zone in &config.zones {
        for s in &zone.services {
            for (code, _) in &s.policy.geo.countries {
                if !countries.contains_key(code) {
                    return Err(Error::Config(ConfigError::new(
                        Path::new(&zone.source),
                        format!("services.{}.countries.{code}", s.name),
                        "not a country in the country table (ISO 3166-1 alpha-2, e.g. GB, not UK)",
                    )));
                }
            }
        }
    }
    Ok(())
}

fn bind_udp(addr: SocketAddr, reuse_port: bool) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        // Keep [::]:53 from also claiming IPv4, so 0.0.0.0:53 can coexist.
        socket.set_only_v6(true)?;
    }
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    // Best effort: a smaller buffer only means earlier drops under bursts.
    let _ = socket.set_recv_buffer_size(UDP_BUFFER_BYTES);
    let _ = socket.set_send_buffer_size(UDP_BUFFER_BYTES);
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

fn bind_tcp(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

/// Binds `threads` UDP sockets (sharing the port with `SO_REUSEPORT`) and
/// one TCP listener on `addr`. With port 0, all get the same free port.
fn bind_set(
    addr: SocketAddr,
    threads: usize,
) -> Result<(Vec<std::net::UdpSocket>, TcpListener), Error> {
    let udp_err = |source| Error::Bind {
        addr,
        proto: "udp",
        source,
    };
    let mut attempts = 0;
    loop {
        // Probe without SO_REUSEPORT first: it fails if anything holds the
        // port, so a second Meridian (or anything else) on the same port is
        // an error rather than a silent traffic split. Linux would also
        // happily hand a port-0 SO_REUSEPORT bind a port that another
        // SO_REUSEPORT socket of the same user already has.
        let probe = bind_udp(addr, false).map_err(udp_err)?;
        let bound = probe.local_addr().map_err(udp_err)?;
        let udp = if threads == 1 {
            vec![probe]
        } else {
            drop(probe);
            match (0..threads)
                .map(|_| bind_udp(bound, true))
                .collect::<std::io::Result<Vec<_>>>()
            {
                Ok(v) => v,
                // Taken in the instant between probe and group: retry.
                Err(e) if addr.port() == 0 && attempts < 20 => {
                    tracing::debug!(error = %e, "udp port taken; trying another");
                    attempts += 1;
                    continue;
                }
                Err(e) => return Err(udp_err(e)),
            }
        };
        match bind_tcp(bound) {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) if addr.port() == 0 && attempts < 20 => {
                tracing::debug!(error = %e, "tcp port taken; trying another");
                attempts += 1;
            }
            Err(source) => {
                return Err(Error::Bind {
                    addr,
                    proto: "tcp",
                    source,
                });
            }
        }
    }
}

/// Start-up options beyond the config file.
#[derive(Clone, Debug, Default)]
pub struct StartOptions {
    /// DNS listen addresses instead of the configured ones.
    pub listen: Option<Vec<SocketAddr>>,
    /// Admin API address instead of the configured one (starts the API
    /// even where the config disables it).
    pub admin_listen: Option<SocketAddr>,
}

/// How long start-up waits for the first round of probes: the longest
/// initial spread plus timeout, and a second to spare.
fn first_round_limit(config: &Config) -> std::time::Duration {
    config
        .zones
        .iter()
        .flat_map(|z| &z.datacenters)
        .filter_map(|d| d.probe.as_ref())
        .map(|p| {
            p.interval
                .mul_f64(p.jitter)
                .min(health::monitor::FIRST_ROUND_SPREAD)
                + p.timeout
        })
        .max()
        .unwrap_or_default()
        + std::time::Duration::from_secs(1)
}

/// Raises the open-files limit to the hard limit and returns it
/// (`u64::MAX` when it cannot be read).
fn raise_fd_limit() -> u64 {
    match fdlimit::raise_nofile_limit() {
        Ok((before, after)) => {
            if after > before {
                tracing::info!(
                    from = before,
                    to = after,
                    "raised the open-files limit (RLIMIT_NOFILE) to its hard limit"
                );
            }
            after
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read or raise the open-files limit; TCP caps are not checked against it");
            u64::MAX
        }
    }
}

/// Fits the TCP connection caps under the open-files `limit`, keeping
/// descriptors for probes, the admin API and the server's own files, so
/// that listeners full of connections can never starve a probe into a
/// false failover.
///
/// `admin_connections` is the admin API's connection cap, 0 when it does
/// not run.
fn tcp_settings(
    config: &Config,
    limit: u64,
    listeners: usize,
    admin_connections: u64,
) -> TcpSettings {
    let server = &config.server;
    let needs = fdlimit::Needs {
        listeners: listeners as u64,
        udp_sockets: server.threads as u64,
        probes: u64::from(server.max_probes_in_flight),
        // Its connections and its listener.
        admin: if admin_connections > 0 {
            admin_connections + 1
        } else {
            0
        },
    };
    let cap = fdlimit::tcp_cap(limit, server.tcp_max_connections, &needs);
    if cap < server.tcp_max_connections {
        tracing::warn!(
            "tcp_max_connections lowered from {} to {cap} per listen address: {listeners} \
             listen address(es) at {} connections each, max_probes_in_flight ({}), the admin \
             API ({}) and a reserve of {} would exceed the open-files limit ({limit}); raise \
             the limit (ulimit -n, systemd LimitNOFILE=) or lower tcp_max_connections or \
             max_probes_in_flight",
            server.tcp_max_connections,
            server.tcp_max_connections,
            server.max_probes_in_flight,
            needs.admin,
            fdlimit::BASE_RESERVE,
        );
    }
    TcpSettings {
        idle_timeout: server.tcp_idle_timeout,
        busy_idle_timeout: server.tcp_busy_idle_timeout,
        max_connections: cap,
        max_connections_per_client: server.tcp_max_connections_per_client,
    }
}

/// What a successful reload did.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Reloaded {
    /// The configuration generation now in service.
    pub generation: u64,
    /// Zones in service.
    pub zones: usize,
    /// Time to load and build, in milliseconds.
    pub elapsed_ms: u64,
    /// Settings that changed but take effect only at restart (config
    /// keys), empty when none.
    pub needs_restart: Vec<&'static str>,
}

/// The last reload's result, for `/status`.
#[derive(Clone, Debug)]
struct LastReload {
    ok: bool,
    error: Option<String>,
    at: std::time::SystemTime,
}

/// The configuration in service: its generation and load time, and the
/// last reload's result.
#[derive(Debug)]
struct ConfigState {
    generation: u64,
    loaded_at: std::time::SystemTime,
    last_reload: Option<LastReload>,
}

impl ConfigState {
    fn status(&self) -> serde_json::Value {
        serde_json::json!({
            "generation": self.generation,
            "loaded_at": rfc3339(self.loaded_at),
            "last_reload": self.last_reload.as_ref().map(|r| serde_json::json!({
                "result": if r.ok { "ok" } else { "error" },
                "error": r.error,
                "at": rfc3339(r.at),
            })),
        })
    }
}

/// `t` as RFC 3339 UTC with milliseconds, e.g. `2026-11-25T20:19:27.123Z`.
pub fn rfc3339(t: std::time::SystemTime) -> String {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let rem = d.as_secs() % 86_400;
    format!(
        "{}T{:02}:{:02}:{:02}.{:03}Z",
        geo::iso_date(d.as_secs()),
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// The settings that differ between `running` and `new` and take effect
/// only at restart, by config key.
fn restart_only_changes(
    running: &config::ServerConfig,
    new: &config::ServerConfig,
) -> Vec<&'static str> {
    let mut keys = Vec::new();
    let mut check = |changed: bool, key: &'static str| {
        if changed {
            keys.push(key);
        }
    };
    check(new.listen != running.listen, "listen");
    check(new.threads != running.threads, "threads");
    check(
        new.tcp_idle_timeout != running.tcp_idle_timeout,
        "tcp_idle_timeout",
    );
    check(
        new.tcp_busy_idle_timeout != running.tcp_busy_idle_timeout,
        "tcp_busy_idle_timeout",
    );
    check(
        new.tcp_max_connections != running.tcp_max_connections,
        "tcp_max_connections",
    );
    check(
        new.tcp_max_connections_per_client != running.tcp_max_connections_per_client,
        "tcp_max_connections_per_client",
    );
    check(new.admin != running.admin, "[admin]");
    check(new.state_file != running.state_file, "state_file");
    check(
        new.max_probes_in_flight != running.max_probes_in_flight,
        "max_probes_in_flight",
    );
    check(
        new.rrl.table_size != running.rrl.table_size,
        "rrl.table_size",
    );
    check(new.rum != running.rum, "[rum]");
    check(new.log_format != running.log_format, "log_format");
    check(new.query_log != running.query_log, "[query_log]");
    // Only `quorum` applies live: the connection, the name and the lease
    // are the session's.
    check(
        match (&running.cluster, &new.cluster) {
            (Some(a), Some(b)) => a.needs_restart_for(b),
            (None, None) => false,
            _ => true,
        },
        "[cluster]",
    );
    keys
}

/// Everything a reload touches, shared by [`Server::reload`] (SIGHUP) and
/// `POST /reload`.
#[derive(Debug)]
struct Reloader {
    state: Arc<ArcSwap<Snapshot>>,
    config_path: PathBuf,
    /// The server settings the process started with: what restart-only
    /// settings are compared against (not the last reload's, so a
    /// change that is reverted stops being reported).
    running: config::ServerConfig,
    /// Held for the whole of a reload: SIGHUP and `POST /reload` are
    /// served one at a time.
    reloading: std::sync::Mutex<()>,
    config_state: Arc<std::sync::Mutex<ConfigState>>,
    metrics: metrics::Metrics,
    monitor: health::monitor::Monitor,
    rrl: Arc<Limiter>,
    latency: Arc<latency::hub::Hub>,
    /// Reopened after every reload (log rotation).
    query_log: Option<Arc<querylog::QueryLog>>,
    /// `[cluster]`: a reload changes its vote rule and generation.
    cluster: Option<cluster::Cluster>,
    /// Signature time of the zones a reload builds.
    dnssec_clock: dnssec::Clock,
    /// Told after each reload: the background re-signer looks at the new
    /// zones' deadlines.
    resign_wake: Arc<tokio::sync::Notify>,
}

/// A running server.
#[derive(Debug)]
pub struct Server {
    state: Arc<ArcSwap<Snapshot>>,
    reloader: Arc<Reloader>,
    metrics: metrics::Metrics,
    addrs: Vec<SocketAddr>,
    admin_addr: Option<SocketAddr>,
    monitor: health::monitor::Monitor,
    tcp_stats: Arc<TcpStats>,
    rrl: Arc<Limiter>,
    latency: Arc<latency::hub::Hub>,
    rum_addr: Option<SocketAddr>,
    token: CancellationToken,
    tasks: TaskTracker,
    threads: std::sync::Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl Drop for Server {
    /// Stops the serving threads and tasks (without waiting for them).
    fn drop(&mut self) {
        self.token.cancel();
    }
}

impl Server {
    /// Loads `config_path`, binds every listen address (or `listen`, when
    /// given, instead) for UDP and TCP, and starts serving.
    pub async fn start(config_path: &Path, listen: Option<Vec<SocketAddr>>) -> Result<Self, Error> {
        Self::start_with(
            config_path,
            StartOptions {
                listen,
                ..StartOptions::default()
            },
        )
        .await
    }

    /// Like [`Self::start`], with every start-up option.
    pub async fn start_with(config_path: &Path, options: StartOptions) -> Result<Self, Error> {
        Self::start_with_clock(config_path, options, dnssec::Clock::System).await
    }

    /// Like [`Self::start_with`], with signatures made and checked at
    /// `clock`'s time: tests drive DNSSEC expiry and the background
    /// re-signer on tokio's paused clock with [`dnssec::Clock::tokio`].
    pub async fn start_with_clock(
        config_path: &Path,
        options: StartOptions,
        dnssec_clock: dnssec::Clock,
    ) -> Result<Self, Error> {
        // First, before sockets, probes and files take descriptors.
        let fd_limit = raise_fd_limit();
        let path = config_path.to_path_buf();
        let started = std::time::Instant::now();
        let clock = dnssec_clock.clone();
        let (config, snapshot) =
            tokio::task::spawn_blocking(move || load_with_clock(&path, None, &clock))
                .await
                .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))?;
        let metrics = metrics::Metrics::new();
        metrics.reloads.built(started.elapsed().as_secs_f64());
        metrics.reloads.set_generation(1);
        let config_state = Arc::new(std::sync::Mutex::new(ConfigState {
            generation: 1,
            loaded_at: std::time::SystemTime::now(),
            last_reload: None,
        }));
        let overrides =
            health::overrides::Overrides::load(&config.server.state_file).map_err(Error::State)?;
        let listen = options
            .listen
            .unwrap_or_else(|| config.server.listen.clone());
        let mut sockets = Vec::with_capacity(listen.len());
        for addr in &listen {
            sockets.push(bind_set(*addr, config.server.threads)?);
        }
        let admin_at = options
            .admin_listen
            .or(config.server.admin.as_ref().map(|a| a.listen));
        let admin_listener = match admin_at {
            Some(addr) => {
                let l = TcpListener::bind(addr)
                    .await
                    .map_err(|source| Error::Bind {
                        addr,
                        proto: "admin http",
                        source,
                    })?;
                Some(l)
            }
            None => None,
        };
        let state = Arc::new(ArcSwap::from_pointee(snapshot));
        let token = CancellationToken::new();
        let tasks = TaskTracker::new();

        // Health: probe before answering, so the first answers never name a
        // dead datacenter by accident.
        let monitor = health::monitor::Monitor::new(
            Arc::clone(&state),
            overrides,
            config.server.max_probes_in_flight,
            token.child_token(),
        );
        monitor.set_congestion_factor(config.server.latency.congestion_factor);
        monitor.configure(&config);
        if config.server.wait_for_probes {
            let limit = first_round_limit(&config);
            if !monitor.first_round(limit).await {
                tracing::warn!(
                    "not every probe answered within {limit:?}; unknown datacenters follow each service's warmup"
                );
            }
        }
        // [cluster]: the peers' votes and the shared overrides, read once
        // before answering when etcd answers within dial_timeout; else
        // the state file's overrides (the local cache) and own probes.
        let cluster = match &config.server.cluster {
            Some(c) => {
                let generation = {
                    let config = config.clone();
                    tokio::task::spawn_blocking(move || cluster::generation(&config))
                        .await
                        .unwrap_or_default()
                };
                let cl = cluster::Cluster::start(
                    c.clone(),
                    monitor.clone(),
                    generation,
                    token.child_token(),
                    &tasks,
                );
                if cl.wait_synced(c.dial_timeout).await {
                    tracing::info!(name = %c.name, "cluster: shared overrides and votes read from etcd");
                } else {
                    tracing::warn!(
                        name = %c.name,
                        state_file = %config.server.state_file.display(),
                        "cluster: etcd not reachable within dial_timeout ({:?}); starting with the overrides of the state file (the local cache) and this instance's own probes",
                        c.dial_timeout
                    );
                }
                metrics.add_source(cl.metric_source());
                Some(cl)
            }
            None => None,
        };
        monitor.publish();
        // Latency: the aggregates saved last time, published at once; then
        // every publish_interval.
        let asn = state.load().latency.sources().asn;
        let hub = Arc::new(latency::hub::Hub::new(&config, asn));
        {
            let now = latency::unix_now();
            let rum = hub.publish_rum(now);
            state.rcu(|cur| Arc::new(hub.refresh(cur, &monitor, Arc::clone(&rum), now)));
        }
        tasks.spawn(latency::hub::run(
            Arc::clone(&hub),
            monitor.clone(),
            Arc::clone(&state),
            token.clone(),
        ));
        let import = latency::beacon::Import {
            sink: Arc::clone(&hub) as Arc<dyn latency::beacon::BeaconSink>,
        };
        // The beacon listener, when enabled: browsers on the internet call
        // it, so it is apart from the admin API.
        let rum = &config.server.rum;
        let (rum_addr, beacons) = if rum.enabled {
            let listener = TcpListener::bind(rum.listen)
                .await
                .map_err(|source| Error::Bind {
                    addr: rum.listen,
                    proto: "rum http",
                    source,
                })?;
            let addr = listener.local_addr().ok();
            let beacons = latency::beacon::Beacons::new(
                Arc::new(rum.clone()),
                Arc::clone(&hub) as Arc<dyn latency::beacon::BeaconSink>,
            );
            tracing::info!(addr = %display_addr(addr), "RUM beacon listener");
            tasks.spawn(latency::beacon::serve(
                listener,
                Arc::clone(&beacons),
                token.clone(),
            ));
            (addr, Some(beacons))
        } else {
            (None, None)
        };
        // The admin API's connections count against the descriptor budget
        // (`[admin] max_connections`, default 64), and so do the beacon
        // listener's.
        let rum_connections = if rum.enabled {
            u64::from(rum.max_connections) + 1
        } else {
            0
        };
        let (admin_addr, admin_connections) = match admin_listener {
            Some(listener) => {
                let addr = listener.local_addr().ok();
                let mut settings = admin::Settings::from_config(config.server.admin.as_ref());
                settings.import = Some(import);
                let connections = settings.max_connections as u64;
                tracing::info!(
                    addr = %display_addr(addr),
                    max_connections = settings.max_connections,
                    "admin API listening"
                );
                tasks.spawn(admin::serve(
                    listener,
                    monitor.clone(),
                    settings,
                    token.clone(),
                ));
                (addr, connections)
            }
            None => (None, 0),
        };
        let tcp = tcp_settings(
            &config,
            fd_limit,
            sockets.len(),
            admin_connections + rum_connections,
        );
        let tcp_stats = Arc::new(TcpStats::default());
        // Signatures are renewed by re-signing zones in the background
        // (idle while no zone is signed; a reload wakes it).
        let resign_wake = Arc::new(tokio::sync::Notify::new());
        let resign_stats = Arc::new(dnssec::resign::Stats::default());
        tasks.spawn(dnssec::resign::run(
            Arc::clone(&state),
            Arc::clone(&resign_stats),
            Arc::clone(&resign_wake),
            token.clone(),
        ));
        metrics.add_source(dnssec::resign::metric_source(
            Arc::clone(&state),
            Arc::clone(&resign_stats),
        ));
        // One limiter for every UDP thread of every address: a client's
        // queries reach several threads, and its budget must be one.
        let rrl = Arc::new(Limiter::new(&config.server.rrl));
        {
            let (tcp_stats, rrl, hub) =
                (Arc::clone(&tcp_stats), Arc::clone(&rrl), Arc::clone(&hub));
            let config_state = Arc::clone(&config_state);
            let (state, resign_stats) = (Arc::clone(&state), Arc::clone(&resign_stats));
            monitor.attach_stats(Box::new(move || {
                let config = config_state
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .status();
                serde_json::json!({
                    "tcp": tcp_stats.read(),
                    "rrl": rrl.stats(),
                    "latency": hub.status(),
                    "rum": beacons.as_ref().map(|b| b.stats()),
                    "config": config,
                    "dnssec": dnssec::resign::status(&state.load(), &resign_stats),
                })
            }));
            let dns = Arc::clone(&metrics.dns);
            monitor.attach_answers(Box::new(move || dns.answers()));
        }
        server_metrics(&metrics, &monitor, &tcp_stats, &rrl);
        let query_log = match &config.server.query_log {
            Some(q) => {
                let log = querylog::QueryLog::start(q).map_err(Error::QueryLog)?;
                tracing::info!(
                    path = %q.path.display(),
                    sample = q.sample,
                    queue = q.queue,
                    "query log on"
                );
                let l = Arc::clone(&log);
                metrics.add_source(Box::new(move |out| {
                    let mut f = metrics::Family::new(
                        "meridian_query_log_dropped",
                        "Query log records dropped because the writer's queue was full.",
                        metrics::Kind::Counter,
                    );
                    f.int(vec![], l.dropped());
                    out.push(f);
                    let mut f = metrics::Family::new(
                        "meridian_query_log_written",
                        "Query log records written.",
                        metrics::Kind::Counter,
                    );
                    f.int(vec![], l.written());
                    out.push(f);
                }));
                Some(log)
            }
            None => None,
        };
        let mut addrs = Vec::with_capacity(sockets.len());
        let mut threads = Vec::new();
        for (udp, listener) in sockets {
            let local = listener.local_addr().map_err(|source| Error::Bind {
                addr: listen[addrs.len()],
                proto: "tcp",
                source,
            })?;
            tracing::info!(%local, udp_threads = udp.len(), "listening on UDP and TCP");
            addrs.push(local);
            for socket in udp {
                let (state, rrl, token) = (Arc::clone(&state), Arc::clone(&rrl), token.clone());
                let obs = dns::server::Observer {
                    shard: metrics.dns.shard(dns::Transport::Udp),
                    log: query_log.as_ref().map(querylog::QueryLog::tap),
                };
                let handle = std::thread::Builder::new()
                    .name(format!("udp {local}"))
                    .spawn(move || serve_udp(socket, state, rrl, obs, token))
                    .map_err(|source| Error::Bind {
                        addr: local,
                        proto: "udp",
                        source,
                    })?;
                threads.push(handle);
            }
            tasks.spawn(serve_tcp(
                listener,
                Arc::clone(&state),
                tcp,
                Arc::clone(&tcp_stats),
                metrics.dns.shard(dns::Transport::Tcp),
                query_log.clone(),
                token.clone(),
            ));
        }
        tasks.close();
        let reloader = Arc::new(Reloader {
            state: Arc::clone(&state),
            config_path: config_path.to_path_buf(),
            running: config.server,
            reloading: std::sync::Mutex::new(()),
            config_state,
            metrics: metrics.clone(),
            monitor: monitor.clone(),
            rrl: Arc::clone(&rrl),
            latency: Arc::clone(&hub),
            query_log: query_log.clone(),
            cluster,
            dnssec_clock,
            resign_wake,
        });
        // The admin API's POST /reload; weak, so the monitor (which the
        // reloader holds) does not keep the reloader alive.
        let weak = Arc::downgrade(&reloader);
        monitor.attach_ops(health::monitor::Ops {
            metrics: {
                let metrics = metrics.clone();
                Box::new(move || metrics.encode())
            },
            reload: Box::new(move || match weak.upgrade() {
                Some(r) => r
                    .reload()
                    .map(|r| serde_json::to_value(r).unwrap_or_default())
                    .map_err(|e| e.to_string()),
                None => Err("the server is shutting down".to_string()),
            }),
        });
        Ok(Self {
            state,
            reloader,
            metrics,
            addrs,
            admin_addr,
            monitor,
            tcp_stats,
            rrl,
            latency: hub,
            rum_addr,
            token,
            tasks,
            threads: std::sync::Mutex::new(threads),
        })
    }

    /// The admin API's address, when it runs.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// The RUM beacon listener's address, when it runs.
    pub fn rum_addr(&self) -> Option<SocketAddr> {
        self.rum_addr
    }

    /// The latency aggregates (RUM) and their publisher.
    pub fn latency(&self) -> &latency::hub::Hub {
        &self.latency
    }

    /// The health monitor (probes, overrides, status).
    pub fn monitor(&self) -> &health::monitor::Monitor {
        &self.monitor
    }

    /// DNS-over-TCP counters, over every listener: connections open,
    /// refused by the per-client limit, closed to make room, failed
    /// accepts.
    pub fn tcp_stats(&self) -> TcpCounters {
        self.tcp_stats.read()
    }

    /// The response rate limiter (its counters: [`Limiter::stats`]).
    pub fn rrl(&self) -> &Limiter {
        &self.rrl
    }

    /// The bound addresses (UDP and TCP share each one).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The snapshot queries are answered from right now.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.state.load_full()
    }

    /// The metrics `GET /metrics` serves.
    pub fn metrics(&self) -> &metrics::Metrics {
        &self.metrics
    }

    /// Re-reads the config, zones and GeoIP database and swaps in a new
    /// snapshot. On any error the running snapshot stays in service and
    /// the error is returned. Listen addresses and TCP limits take effect
    /// only at restart. Reloads are serialized (SIGHUP and `POST
    /// /reload` share this), and each one's result is logged, counted in
    /// the metrics and shown in `/status`. Blocking (walks the GeoIP
    /// database): call it from `spawn_blocking`.
    pub fn reload(&self) -> Result<Reloaded, Error> {
        self.reloader.reload()
    }

    /// Stops serving and waits for every loop and connection to end.
    pub async fn shutdown(self) {
        self.token.cancel();
        self.tasks.wait().await;
        self.monitor.shutdown().await;
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
    }
}

impl Reloader {
    /// See [`Server::reload`].
    fn reload(&self) -> Result<Reloaded, Error> {
        let _one_at_a_time = self.reloading.lock().unwrap_or_else(|e| e.into_inner());
        // The counters the last reload set aside are named here, not on
        // the query path.
        self.metrics.dns.fold_stale();
        let started = std::time::Instant::now();
        let result = self.reload_inner(started);
        self.metrics.reloads.built(started.elapsed().as_secs_f64());
        self.metrics.reloads.reloaded(result.is_ok());
        if let Some(log) = &self.query_log {
            log.reopen();
        }
        let mut cs = self.config_state.lock().unwrap_or_else(|e| e.into_inner());
        let at = std::time::SystemTime::now();
        match &result {
            Ok(r) => {
                cs.generation = r.generation;
                cs.loaded_at = at;
                self.metrics.reloads.set_generation(r.generation);
                tracing::info!(
                    generation = r.generation,
                    zones = r.zones,
                    elapsed_ms = r.elapsed_ms,
                    "configuration reloaded"
                );
            }
            Err(e) => {
                tracing::error!(
                    generation = cs.generation,
                    "reload failed, keeping the running configuration: {e}"
                );
            }
        }
        cs.last_reload = Some(LastReload {
            ok: result.is_ok(),
            error: result.as_ref().err().map(ToString::to_string),
            at,
        });
        result
    }

    fn reload_inner(&self, started: std::time::Instant) -> Result<Reloaded, Error> {
        let previous = self.state.load_full();
        let (config, snapshot) =
            load_with_clock(&self.config_path, Some(&previous), &self.dnssec_clock)?;
        drop(previous);
        let needs_restart = restart_only_changes(&self.running, &config.server);
        if !needs_restart.is_empty() {
            tracing::warn!(
                "{} changed but take(s) effect only on restart; the running values stay in force",
                needs_restart.join(", ")
            );
        }
        self.rrl.configure(&config.server.rrl);
        self.latency
            .configure(&config, snapshot.latency.sources().asn);
        self.monitor
            .set_congestion_factor(config.server.latency.congestion_factor);
        if let (Some(cl), Some(c)) = (&self.cluster, &config.server.cluster) {
            cl.reconfigure(c.quorum, cluster::generation(&config));
        }
        // Targets that stay keep their state; the new snapshot starts with
        // the health the monitor already knows and the latency aggregates
        // published last.
        self.monitor.configure(&config);
        let rum = self.state.load().latency.sources().rum;
        let snapshot = self
            .latency
            .refresh(&snapshot, &self.monitor, rum, latency::unix_now());
        self.state.store(Arc::new(snapshot));
        // A probe result that landed between the view and the store was
        // published onto the old snapshot: publish again onto the new one.
        self.monitor.publish();
        // The signed zones were built anew: new re-sign deadlines.
        self.resign_wake.notify_one();
        let generation = self
            .config_state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .generation
            + 1;
        Ok(Reloaded {
            generation,
            zones: config.zones.len(),
            elapsed_ms: started.elapsed().as_millis() as u64,
            needs_restart,
        })
    }
}
