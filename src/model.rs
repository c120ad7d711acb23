//! Validated domain types: what a zone file means once every name has been
//! checked and resolved to an index.
//!
//! Nothing here does I/O or knows about TOML or the DNS wire format; the
//! query path only ever sees these types (through the snapshot).

use std::collections::HashMap;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;

use crate::dns::records::{DomainName, StaticRecord};

/// Index of a datacenter within its zone (`ZoneConfig::datacenters`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DcId(pub u16);

impl DcId {
    /// The index as a `usize`, for slices.
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

/// A point on the globe in degrees.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Coord {
    /// Latitude, -90 to 90.
    pub lat: f64,
    /// Longitude, -180 to 180.
    pub lon: f64,
}

/// ISO 3166-1 alpha-2 country code, upper case.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CountryCode(pub [u8; 2]);

impl CountryCode {
    /// Parses two ASCII letters (any case).
    ///
    /// ```
    /// use meridian::model::CountryCode;
    ///
    /// assert_eq!(CountryCode::parse("jp").unwrap().to_string(), "JP");
    /// assert!(CountryCode::parse("JPN").is_none());
    /// ```
    pub fn parse(s: &str) -> Option<Self> {
        let b = s.as_bytes();
        if b.len() == 2 && b.iter().all(u8::is_ascii_alphabetic) {
            Some(Self([b[0].to_ascii_uppercase(), b[1].to_ascii_uppercase()]))
        } else {
            None
        }
    }
}

impl fmt::Display for CountryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", char::from(self.0[0]), char::from(self.0[1]))
    }
}

/// The seven continent codes used by GeoIP databases.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Continent {
    /// Africa.
    AF,
    /// Antarctica.
    AN,
    /// Asia.
    AS,
    /// Europe.
    EU,
    /// North America.
    NA,
    /// Oceania.
    OC,
    /// South America.
    SA,
}

impl Continent {
    /// All continents, in code order.
    pub const ALL: [Self; 7] = [
        Self::AF,
        Self::AN,
        Self::AS,
        Self::EU,
        Self::NA,
        Self::OC,
        Self::SA,
    ];

    /// Parses a two-letter continent code (any case).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|c| c.code().eq_ignore_ascii_case(s))
    }

    /// The two-letter code.
    pub fn code(self) -> &'static str {
        match self {
            Self::AF => "AF",
            Self::AN => "AN",
            Self::AS => "AS",
            Self::EU => "EU",
            Self::NA => "NA",
            Self::OC => "OC",
            Self::SA => "SA",
        }
    }
}

impl fmt::Display for Continent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// A datacenter: where it is and what a client sent there receives.
#[derive(Clone, Debug)]
pub struct Datacenter {
    /// Name as written in the zone file.
    pub name: String,
    /// Position, used by distance ranking. Optional for datacenters that
    /// no geo service uses.
    pub location: Option<Coord>,
    /// IPv4 answer addresses (A records), in config order.
    pub v4: Vec<Ipv4Addr>,
    /// IPv6 answer addresses (AAAA records), in config order.
    pub v6: Vec<Ipv6Addr>,
    /// Health probe; `None` means the datacenter is always up (unless an
    /// operator drains it).
    pub probe: Option<ProbeSpec>,
    /// Country it serves from, for `same` steps.
    pub country: Option<CountryCode>,
}

/// How a datacenter's health is observed.
#[derive(Clone, Debug, PartialEq)]
pub struct ProbeSpec {
    /// What each probe does.
    pub kind: ProbeKind,
    /// Where probes go: explicit targets, or each answer address with the
    /// probe's port.
    pub targets: Vec<SocketAddr>,
    /// Time between probes of one target.
    pub interval: Duration,
    /// Time a probe may take before it counts as failed (< interval).
    pub timeout: Duration,
    /// Consecutive passes for a target to become UP.
    pub rise: u32,
    /// Consecutive failures for a target to become DOWN.
    pub fall: u32,
    /// Random spread of each interval, as a fraction (0 to 0.5).
    pub jitter: f64,
    /// Targets that must be UP for the datacenter to be up.
    pub min_up: usize,
}

/// The kinds of probe.
#[derive(Clone, Debug, PartialEq)]
pub enum ProbeKind {
    /// TCP connect succeeds.
    Tcp,
    /// HTTP or HTTPS request gets an expected status (and body).
    Http(HttpProbe),
    /// A DNS query gets an expected response code.
    Dns(DnsProbe),
    /// An ICMP echo request gets a reply.
    Icmp(IcmpProbe),
    /// The gRPC health service (`grpc.health.v1.Health/Check`) answers
    /// `SERVING`.
    Grpc(GrpcProbe),
    /// An operator's command exits with status 0.
    Exec(ExecProbe),
    /// No active checks: state comes from the admin API.
    External,
}

impl ProbeKind {
    /// The probe type's name, as the zone file and `/status` spell it.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Http(h) if h.tls.is_some() => "https",
            Self::Http(_) => "http",
            Self::Dns(_) => "dns",
            Self::Icmp(_) => "icmp",
            Self::Grpc(_) => "grpc",
            Self::Exec(_) => "exec",
            Self::External => "external",
        }
    }
}

/// The kind of ICMP socket a probe opens, decided once when the config is
/// loaded from what this process may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IcmpSocket {
    /// An unprivileged ICMP datagram socket (`SOCK_DGRAM`,
    /// `IPPROTO_ICMP`): allowed when a group of the process is inside
    /// `net.ipv4.ping_group_range`. The kernel picks the identifier and
    /// hands each socket only its own replies.
    Datagram,
    /// A raw ICMP socket: needs `CAP_NET_RAW`. Every raw socket sees every
    /// echo reply; replies are matched by identifier and sequence.
    Raw,
}

/// ICMP echo probe settings.
#[derive(Clone, Debug, PartialEq)]
pub struct IcmpProbe {
    /// The socket kind this process can use.
    pub socket: IcmpSocket,
}

/// TLS settings of a probe (https, grpc with `tls = true`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeTls {
    /// Verify the server certificate.
    pub verify: bool,
    /// Fail when the server certificate expires in fewer days.
    pub min_cert_days: Option<u32>,
}

/// gRPC health probe settings.
#[derive(Clone, Debug, PartialEq)]
pub struct GrpcProbe {
    /// The service name asked about; empty for the whole server.
    pub service: String,
    /// `:authority` (and TLS server name); default: the target address.
    pub host: Option<String>,
    /// TLS settings; `None` for plaintext HTTP/2.
    pub tls: Option<ProbeTls>,
}

/// Command probe settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecProbe {
    /// Program and arguments (never run by a shell).
    pub command: Vec<String>,
}

/// HTTP(S) probe settings.
#[derive(Clone, Debug, PartialEq)]
pub struct HttpProbe {
    /// HTTPS (and its certificate checks) instead of HTTP.
    pub tls: Option<ProbeTls>,
    /// `GET` or `HEAD`.
    pub method: HttpMethod,
    /// Request path, starting with `/`.
    pub path: String,
    /// Host header (and TLS server name); default: the target address.
    pub host: Option<String>,
    /// Accepted status codes as inclusive ranges.
    pub expect_status: Vec<(u16, u16)>,
    /// Substring required in the first 64 KiB of the body.
    pub expect_body: Option<String>,
    /// How long a capacity reported in the `Meridian-Capacity` response
    /// header holds without a new report.
    pub capacity_hold: Duration,
}

/// HTTP request methods a probe may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HttpMethod {
    /// GET.
    Get,
    /// HEAD.
    Head,
}

/// DNS probe settings.
#[derive(Clone, Debug, PartialEq)]
pub struct DnsProbe {
    /// Name to ask for.
    pub name: DomainName,
    /// Record type code to ask for.
    pub qtype: u16,
    /// Expected response code (low 4 bits).
    pub rcode: u8,
}

/// What a service answers when none of its datacenters is up.
#[derive(Clone, Debug, PartialEq)]
pub enum AllDown {
    /// Answer as if every datacenter were up (fail open).
    All,
    /// NODATA: no addresses (fail closed).
    None,
    /// SERVFAIL.
    Servfail,
    /// Static fallback records.
    Fallback(Fallback),
}

/// Fallback answer for `AllDown::Fallback`.
#[derive(Clone, Debug, PartialEq)]
pub struct Fallback {
    /// A records.
    pub v4: Vec<Ipv4Addr>,
    /// AAAA records.
    pub v6: Vec<Ipv6Addr>,
    /// A CNAME instead of addresses.
    pub cname: Option<DomainName>,
}

/// How a service treats datacenters whose state is not yet known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Warmup {
    /// Unknown counts as up.
    AssumeUp,
    /// Unknown counts as down.
    AssumeDown,
}

/// How a service orders its datacenters for a client: a chain of steps,
/// each working on the *first tier* of the candidates (at the start, all
/// of the service's datacenters in config order). Ordering steps reorder
/// the first tier; narrowing steps keep part of it as the first tier and
/// move the rest behind it, in their current order. `policy = "geo"` is
/// the chain of the one step `geo`.
#[derive(Clone, Debug, PartialEq)]
pub struct PolicySpec {
    /// The steps, in order (at least one).
    pub steps: Vec<Step>,
    /// Geo settings, for `geo` steps.
    pub geo: GeoSpec,
    /// Weight per datacenter, aligned with `Service::datacenters` (1 when
    /// not configured; 0 is a standby).
    pub weights: Vec<u32>,
    /// Client prefix lengths that `sticky` hashes: (IPv4, IPv6).
    pub sticky_prefix: (u8, u8),
    /// Where `latency` steps take their estimates from.
    pub latency_source: LatencySource,
}

/// Where a `latency` step's estimates come from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum LatencySource {
    /// The client network's RTT to each datacenter: real-user
    /// measurements (fine, then coarse level), the static map, then the
    /// distance model (`source = "clients"`).
    #[default]
    Clients,
    /// This instance's smoothed probe RTT to each datacenter, the same for
    /// every client: in an anycast deployment the instance that answers is
    /// near the client (`source = "probes"`).
    Probes,
}

impl PolicySpec {
    /// The name of the chain as written in config (`geo`, or
    /// `geo > within_km 800 > weighted`).
    pub fn name(&self) -> String {
        self.steps
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" > ")
    }

    /// Whether a step uses `weights` (`weighted`, `sticky`).
    pub fn uses_weights(&self) -> bool {
        self.steps
            .iter()
            .any(|s| matches!(s, Step::Weighted | Step::Sticky))
    }

    /// Whether a step needs the client's GeoIP location.
    pub fn needs_location(&self) -> bool {
        self.steps.iter().any(|s| match s {
            Step::Geo | Step::Same(_) => true,
            Step::Latency => self.latency_source == LatencySource::Clients,
            _ => false,
        })
    }
}

/// One step of a policy chain.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// Orders by the geo rules: network, country and continent overrides,
    /// then distance. Drops datacenters an override leaves out.
    Geo,
    /// Config order (`datacenters`).
    Failover,
    /// A random order, each position drawn in proportion to weight;
    /// weight-0 datacenters last, in their current order.
    Weighted,
    /// Weighted rendezvous hashing of the client's network: the same
    /// network gets the same order.
    Sticky,
    /// Keeps the first N.
    Nearest(usize),
    /// Keeps those within this many km of the first one.
    WithinKm(f64),
    /// Keeps those in the client's continent or country.
    Same(Attribute),
    /// Keeps the listed datacenters.
    Prefer(Vec<DcId>),
    /// Orders by estimated round-trip time from the client (or from this
    /// instance), lowest first; see `crate::latency`.
    Latency,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Geo => f.write_str("geo"),
            Self::Failover => f.write_str("failover"),
            Self::Weighted => f.write_str("weighted"),
            Self::Sticky => f.write_str("sticky"),
            Self::Nearest(n) => write!(f, "nearest {n}"),
            Self::WithinKm(km) => write!(f, "within_km {km}"),
            Self::Same(Attribute::Continent) => f.write_str("same continent"),
            Self::Same(Attribute::Country) => f.write_str("same country"),
            Self::Prefer(ids) => write!(f, "prefer {} datacenters", ids.len()),
            Self::Latency => f.write_str("latency"),
        }
    }
}

/// A location attribute shared by a client and a datacenter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attribute {
    /// The continent.
    Continent,
    /// The country.
    Country,
}

/// Settings of the `geo` policy. Two services with equal `GeoSpec`s and
/// datacenter lists share one routing table.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GeoSpec {
    /// Country overrides: clients located in the country get exactly this
    /// ordered list. Beats continents and distance.
    pub countries: Vec<(CountryCode, Vec<DcId>)>,
    /// Continent overrides: beat distance.
    pub continents: Vec<(Continent, Vec<DcId>)>,
    /// Client-network overrides; the longest matching prefix wins and beats
    /// every GeoIP-based rule.
    pub networks: Vec<(IpNet, Vec<DcId>)>,
    /// Ranking for clients whose location is unknown. Defaults to the
    /// service's datacenters in config order.
    pub default: Vec<DcId>,
}

/// A name answered by a policy over datacenters.
#[derive(Clone, Debug)]
pub struct Service {
    /// The key under `[services]`, e.g. `www` or `@`.
    pub name: String,
    /// The fully qualified owner name.
    pub fqdn: DomainName,
    /// Candidate datacenters in config order.
    pub datacenters: Vec<DcId>,
    /// TTL of the answers.
    pub ttl: u32,
    /// Ranking policy.
    pub policy: PolicySpec,
    /// Rotate the addresses of an answer from query to query.
    pub rotate: bool,
    /// Most datacenters whose records go into one answer.
    pub max_answers: usize,
    /// TTL of answers given in a degraded state (failover or all down).
    pub degraded_ttl: u32,
    /// What to answer when no datacenter is up.
    pub when_all_down: AllDown,
    /// How datacenters of unknown state count.
    pub warmup: Warmup,
}

/// The SOA fields of a zone.
#[derive(Clone, Debug)]
pub struct Soa {
    /// Primary name server.
    pub mname: DomainName,
    /// Responsible mailbox, as a domain name.
    pub rname: DomainName,
    /// Serial number.
    pub serial: u32,
    /// Refresh interval, seconds.
    pub refresh: u32,
    /// Retry interval, seconds.
    pub retry: u32,
    /// Expiry, seconds.
    pub expire: u32,
    /// Negative-caching TTL cap, seconds.
    pub minimum: u32,
    /// TTL of the SOA record itself.
    pub ttl: u32,
}

/// One validated zone.
#[derive(Clone, Debug)]
pub struct ZoneConfig {
    /// The file it came from, for messages.
    pub source: String,
    /// Zone apex.
    pub origin: DomainName,
    /// Start of authority.
    pub soa: Soa,
    /// Apex name servers.
    pub ns: Vec<DomainName>,
    /// TTL of the apex NS records.
    pub ns_ttl: u32,
    /// Static records, apex NS/SOA excluded. Empty once a snapshot has
    /// been built from this zone: they move into its zone store.
    pub records: Vec<StaticRecord>,
    /// The `records_file` the static records were read from, with a hash
    /// of the text read (a reload rebuilds the zone when it changes).
    pub records_file: Option<(std::path::PathBuf, u64)>,
    /// Datacenters, indexed by `DcId`.
    pub datacenters: Vec<Datacenter>,
    /// Services.
    pub services: Vec<Service>,
    /// `[dnssec]`: keys and signature timing, when the zone is signed.
    pub dnssec: Option<std::sync::Arc<crate::dnssec::DnssecConfig>>,
}

impl ZoneConfig {
    /// Looks a datacenter up by name.
    pub fn dc_by_name(&self, name: &str) -> Option<DcId> {
        self.datacenters
            .iter()
            .position(|d| d.name == name)
            .and_then(|i| u16::try_from(i).ok())
            .map(DcId)
    }

    /// The datacenter with this id.
    pub fn dc(&self, id: DcId) -> &Datacenter {
        &self.datacenters[id.index()]
    }
}

/// Names of datacenters, for messages.
pub fn dc_names(zone: &ZoneConfig, ids: &[DcId]) -> String {
    ids.iter()
        .map(|&id| zone.dc(id).name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Country table entry: where a country's users are, on average.
#[derive(Clone, Copy, Debug)]
pub struct CountryInfo {
    /// Continent of the country.
    pub continent: Option<Continent>,
    /// IP-weighted centroid.
    pub coord: Option<Coord>,
}

/// Per-country data: continent and coordinates.
pub type CountryTable = HashMap<CountryCode, CountryInfo>;
