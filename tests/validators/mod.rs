//! Third-party DNSSEC validators pointed at any authoritative server on
//! loopback: Unbound (a validating resolver with an ECS cache), BIND's
//! `delv` and DNSViz (`dnsviz probe` + `dnsviz grok`).
//!
//! ```text
//!   test ──UDP (RD, AD, ECS)──▶ Unbound ──stub-zone, ECS──▶ authoritative
//!   test ──▶ delv  @127.0.0.1 -p PORT ─────────────────────▶ (127.0.0.1:PORT)
//!   test ──▶ dnsviz probe -A -x ZONE+:ns=127.0.0.1:PORT ───▶
//! ```
//!
//! [`Validators::new`] takes the server's address, the zone and its trust
//! anchor (the zone's SEP DNSKEYs, [`TrustAnchor`]); nothing here knows
//! which server it talks to. [`Nsd`] and [`sign_zone`] give a reference
//! server: a zone signed by BIND's `dnssec-signzone`, served by NSD.
//!
//! Every process is started by this module, runs as the current user in a
//! temporary directory, is bounded by a timeout and is ended by its PID.
//! A missing tool fails the test with the Debian package that provides it
//! (`scripts/test.sh` installs them).
//!
//! Nothing leaves the machine: Unbound's only upstreams are stub zones on
//! loopback (its root included), and it sends from 127.0.0.1
//! (`outgoing-interface`), so a query that escaped would have nowhere to
//! go; `delv` and `dnsviz` are given the server explicitly and no
//! ancestor to follow.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket as StdUdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use hickory_proto::dnssec::rdata::DNSSECRData;
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
use hickory_proto::rr::{Name, RData, RecordType};
use ipnet::IpNet;
use serde_json::Value;
use tempfile::TempDir;
use tokio::net::UdpSocket;

/// Bound on one run of a tool (`delv`, `dnsviz probe`, `dnssec-*`).
pub const TOOL_TIMEOUT: Duration = Duration::from_secs(20);
/// Bound on one query to Unbound (it may itself wait for the server).
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on a daemon's start-up (first answer on its port).
pub const START_TIMEOUT: Duration = Duration::from_secs(10);

//------------ Tools ---------------------------------------------------------

/// The path of `program`, searched in `PATH` and the sbin directories
/// (`unbound` and `nsd` live in /usr/sbin, which a non-root `PATH` may
/// lack). Panics, naming the Debian package, when it is not installed.
pub fn tool(program: &str, package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/sbin", "/usr/local/sbin"].map(PathBuf::from));
    for dir in dirs {
        let p = dir.join(program);
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "'{program}' not found: install the Debian package '{package}' \
         (scripts/test.sh installs it: apt-get install --no-install-recommends {package})"
    );
}

/// The output of one tool run.
#[derive(Debug)]
pub struct Output {
    /// Exit code (`None`: killed by a signal).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `cmd` to completion within [`TOOL_TIMEOUT`]; on timeout the child
/// is killed by its PID (`kill_on_drop`) and the test fails.
pub async fn run(mut cmd: tokio::process::Command) -> Output {
    let shown = format!("{:?}", cmd.as_std());
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {shown}: {e}"));
    let out = tokio::time::timeout(TOOL_TIMEOUT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{shown} did not finish within {TOOL_TIMEOUT:?} (killed)"))
        .unwrap_or_else(|e| panic!("{shown}: {e}"));
    Output {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// [`run`], and the test fails unless the tool exits 0.
pub async fn run_ok(cmd: tokio::process::Command) -> Output {
    let shown = format!("{:?}", cmd.as_std());
    let out = run(cmd).await;
    assert_eq!(
        out.code,
        Some(0),
        "{shown} failed\nstdout:\n{}\nstderr:\n{}",
        out.stdout,
        out.stderr
    );
    out
}

/// A loopback port free for both UDP and TCP (Unbound and NSD listen on
/// both). Another process may take it before the daemon binds; the daemon
/// then fails to start and says so in its log.
pub fn free_port() -> u16 {
    for _ in 0..50 {
        let udp = StdUdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind UDP 127.0.0.1:0");
        let port = udp.local_addr().expect("local addr").port();
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return port;
        }
    }
    panic!("no loopback port free for both UDP and TCP after 50 tries");
}

//------------ Daemon --------------------------------------------------------

/// A daemon this module started. `Drop` sends SIGTERM to its PID, waits up
/// to 5 s, then SIGKILL; descendants it forked (NSD's server and xfrd
/// processes), recorded at start by PID and name, get the same treatment
/// if they outlive it.
pub struct Daemon {
    name: &'static str,
    child: Child,
    log: PathBuf,
    descendants: Vec<(i32, String)>,
}

impl Daemon {
    /// Starts `cmd`, a daemon that writes its own log file `log`.
    pub fn spawn(name: &'static str, cmd: Command, log: PathBuf) -> Self {
        Self::start(name, cmd, log, false)
    }

    /// Starts `cmd`, a daemon that logs to stdout and stderr: both go to
    /// the file `log`.
    pub fn spawn_logging_to(name: &'static str, cmd: Command, log: PathBuf) -> Self {
        Self::start(name, cmd, log, true)
    }

    fn start(name: &'static str, mut cmd: Command, log: PathBuf, capture: bool) -> Self {
        let shown = format!("{cmd:?}");
        let (out, err) = if capture {
            let file = std::fs::File::create(&log)
                .unwrap_or_else(|e| panic!("cannot create {}: {e}", log.display()));
            let dup = file
                .try_clone()
                .unwrap_or_else(|e| panic!("cannot duplicate {}: {e}", log.display()));
            (Stdio::from(file), Stdio::from(dup))
        } else {
            (Stdio::null(), Stdio::null())
        };
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {shown}: {e}"));
        Self {
            name,
            child,
            log,
            descendants: Vec::new(),
        }
    }

    /// The daemon's PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its log file, for failure messages.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_else(|e| format!("(no log: {e})"))
    }

    /// Waits until a DNS query to `addr` gets any reply; fails the test with
    /// the log if the daemon exits or the deadline passes.
    pub async fn await_ready(&mut self, addr: SocketAddr) {
        let deadline = Instant::now() + START_TIMEOUT;
        let probe = build_query(".", RecordType::SOA, false, None);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{} exited during start-up ({status}); log:\n{}",
                    self.name,
                    self.log_text()
                );
            }
            if exchange(addr, &probe, Duration::from_millis(200))
                .await
                .is_some()
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{} not answering on {addr} after {START_TIMEOUT:?}; log:\n{}",
                self.name,
                self.log_text()
            );
        }
        self.descendants = descendants(self.pid());
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let pid = self.pid() as i32;
        // SAFETY: kill(2) on the PID of our own child, which has not been
        // reaped yet (so the PID cannot have been reused).
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for (kid, comm) in &self.descendants {
            while still(*kid, comm) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if still(*kid, comm) {
                // SAFETY: kill(2) on a PID recorded as our daemon's child,
                // checked again just above to still run the same program.
                unsafe { libc::kill(*kid, libc::SIGKILL) };
            }
        }
    }
}

/// True while process `pid` exists and runs the program `comm`.
fn still(pid: i32, comm: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim_end() == comm)
}

/// All descendants of `pid` as (PID, comm), from /proc.
fn descendants(pid: u32) -> Vec<(i32, String)> {
    let mut parent = BTreeMap::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(p) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        let Some((head, tail)) = stat.rsplit_once(") ") else {
            continue;
        };
        let comm = head.split_once(" (").map_or("", |(_, c)| c).to_owned();
        if let Some(ppid) = tail.split(' ').nth(1).and_then(|s| s.parse::<i32>().ok()) {
            parent.insert(p, (ppid, comm));
        }
    }
    let mut out = Vec::new();
    let mut todo = vec![pid as i32];
    while let Some(p) = todo.pop() {
        for (kid, (ppid, comm)) in &parent {
            if *ppid == p {
                out.push((*kid, comm.clone()));
                todo.push(*kid);
            }
        }
    }
    out
}

//------------ DNS client ----------------------------------------------------

/// A query for `name`/`qtype` with EDNS (payload 1232). `stub` makes it a
/// stub resolver's query: RD=1 and AD=1 (RFC 6840 5.7, 5.8: a validating
/// resolver sets AD in its answer only when the query had AD or DO).
pub fn build_query(name: &str, qtype: RecordType, stub: bool, ecs: Option<&str>) -> Vec<u8> {
    build_query_do(name, qtype, stub, ecs, false)
}

/// [`build_query`], with the DO bit set when `dnssec_ok` (the reply then
/// carries RRSIGs and, for a denial, the NSEC records in its authority
/// section).
pub fn build_query_do(
    name: &str,
    qtype: RecordType,
    stub: bool,
    ecs: Option<&str>,
    dnssec_ok: bool,
) -> Vec<u8> {
    static NEXT_ID: AtomicU16 = AtomicU16::new(0x2b1d);
    let id = NEXT_ID.fetch_add(7919, Ordering::Relaxed);
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = stub;
    m.metadata.authentic_data = stub;
    m.queries.push(Query::query(
        Name::from_ascii(name).unwrap_or_else(|e| panic!("query name {name}: {e}")),
        qtype,
    ));
    let mut edns = Edns::new();
    edns.set_max_payload(1232);
    edns.set_dnssec_ok(dnssec_ok);
    if let Some(subnet) = ecs {
        let net: IpNet = subnet
            .parse()
            .unwrap_or_else(|e| panic!("ECS subnet {subnet}: {e}"));
        edns.options_mut()
            .insert(EdnsOption::Subnet(ClientSubnet::new(
                net.addr(),
                net.prefix_len(),
                0,
            )));
    }
    m.edns = Some(edns);
    m.to_vec().expect("query encodes")
}

/// One UDP exchange with `addr`; `None` when nothing comes back in time.
pub async fn exchange(addr: SocketAddr, packet: &[u8], wait: Duration) -> Option<Message> {
    let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.ok()?;
    sock.send_to(packet, addr).await.ok()?;
    let mut buf = vec![0u8; 65_535];
    let (n, _) = tokio::time::timeout(wait, sock.recv_from(&mut buf))
        .await
        .ok()?
        .ok()?;
    Message::from_vec(&buf[..n]).ok()
}

/// What a validating resolver told its client.
#[derive(Debug, Clone)]
pub struct Reply {
    pub rcode: ResponseCode,
    /// The AD bit: the resolver validated the answer as secure.
    pub ad: bool,
    /// The answer section without RRSIGs, as "name TYPE rdata".
    pub answers: Vec<String>,
    /// The authority section without RRSIGs, the same way (SOA and NSEC
    /// of a denial; NSEC only when the query had DO).
    pub authority: Vec<String>,
    /// The NSEC records of the authority section: (owner, next name, the
    /// type numbers of the bitmap).
    pub nsecs: Vec<(String, String, Vec<u16>)>,
    /// ECS in the reply: (address, source prefix, scope prefix).
    pub ecs: Option<(IpAddr, u8, u8)>,
}

impl Reply {
    pub fn from_message(m: &Message) -> Self {
        let shown = |records: &[hickory_proto::rr::Record]| {
            records
                .iter()
                .filter(|r| r.record_type() != RecordType::RRSIG)
                .map(|r| format!("{} {} {}", r.name, r.record_type(), r.data))
                .collect::<Vec<_>>()
        };
        let answers = shown(&m.answers);
        let authority = shown(&m.authorities);
        let nsecs = m
            .authorities
            .iter()
            .filter_map(|r| match &r.data {
                RData::DNSSEC(DNSSECRData::NSEC(nsec)) => Some((
                    r.name.to_ascii(),
                    nsec.next_domain_name().to_ascii(),
                    nsec.type_bit_maps().map(u16::from).collect(),
                )),
                _ => None,
            })
            .collect();
        let ecs = m.edns.as_ref().and_then(|e| {
            e.options().options.iter().find_map(|(_, o)| match o {
                EdnsOption::Subnet(cs) => Some((cs.addr(), cs.source_prefix(), cs.scope_prefix())),
                _ => None,
            })
        });
        Self {
            rcode: m.metadata.response_code,
            ad: m.metadata.authentic_data,
            answers,
            authority,
            nsecs,
            ecs,
        }
    }

    /// The rdata of the answers of type `t` (e.g. the addresses).
    pub fn rdata(&self, t: RecordType) -> Vec<String> {
        let tag = format!(" {t} ");
        self.answers
            .iter()
            .filter_map(|a| a.split_once(&tag).map(|(_, d)| d.to_owned()))
            .collect()
    }
}

//------------ Trust anchor --------------------------------------------------

/// A zone's trust anchor: its SEP DNSKEY records ("zone. IN DNSKEY 257 3
/// 13 base64"), as `dnssec-keygen` writes them in `K*.key` or `dig DNSKEY`
/// prints them. DS records are derived from them ([`TrustAnchor::ds`]):
/// Unbound and `delv` are given the DS (what the parent would publish);
/// `dnsviz grok` needs the DNSKEY itself.
#[derive(Debug, Clone)]
pub struct TrustAnchor {
    zone: String,
    dnskeys: Vec<String>,
}

impl TrustAnchor {
    /// The DNSKEY lines of `text` (comments and other records skipped) for
    /// `zone`. Fails the test when there is none.
    pub fn from_dnskeys(zone: &str, text: &str) -> Self {
        let zone = fqdn(zone);
        let dnskeys: Vec<String> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.starts_with(';'))
            .filter(|l| l.split_whitespace().any(|w| w == "DNSKEY"))
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        assert!(
            !dnskeys.is_empty(),
            "no DNSKEY record for {zone} in:\n{text}"
        );
        Self { zone, dnskeys }
    }

    /// The SEP keys (flags 257) of the DNSKEY RRset `server` serves for
    /// `zone`, read with `dig`: an anchor that does not depend on how the
    /// server stores its keys. Trusting the server under test for its own
    /// anchor is circular; compare [`TrustAnchor::ds`] with the DS given to
    /// the parent (e.g. `meridian dnssec ds ZONE`) to close the loop.
    pub async fn fetch_sep(server: SocketAddr, zone: &str) -> Self {
        let mut cmd = tokio::process::Command::new(tool("dig", "bind9-dnsutils"));
        cmd.arg(format!("@{}", server.ip()))
            .arg("-p")
            .arg(server.port().to_string())
            .args(["+norec", "+noall", "+answer", "+time=2", "+tries=2"])
            .arg(fqdn(zone))
            .arg("DNSKEY");
        let out = run_ok(cmd).await;
        let sep: Vec<&str> = out
            .stdout
            .lines()
            .filter(|l| l.split_whitespace().skip_while(|w| *w != "DNSKEY").nth(1) == Some("257"))
            .collect();
        Self::from_dnskeys(zone, &sep.join("\n"))
    }

    /// The zone, with its final dot.
    pub fn zone(&self) -> &str {
        &self.zone
    }

    /// The DNSKEY lines.
    pub fn dnskeys(&self) -> &[String] {
        &self.dnskeys
    }

    /// SHA-256 DS records of the keys ("zone. IN DS tag alg 2 hex"), from
    /// BIND's `dnssec-dsfromkey`.
    pub async fn ds(&self) -> Vec<String> {
        let dir = TempDir::new().expect("temp dir");
        let file = dir.path().join("dnskeys");
        // A zone file: dnssec-dsfromkey rejects records without a TTL.
        let text = format!("$TTL 3600\n{}\n", self.dnskeys.join("\n"));
        std::fs::write(&file, text).expect("write DNSKEYs");
        let mut cmd = tokio::process::Command::new(tool("dnssec-dsfromkey", "bind9-utils"));
        cmd.arg("-2").arg("-f").arg(&file).arg(&self.zone);
        let out = run_ok(cmd).await;
        let ds: Vec<String> = out
            .stdout
            .lines()
            .filter(|l| l.contains(" DS "))
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        assert!(
            !ds.is_empty(),
            "dnssec-dsfromkey gave no DS: {}",
            out.stdout
        );
        ds
    }
}

/// `name` with a final dot.
pub fn fqdn(name: &str) -> String {
    if name.ends_with('.') {
        name.to_owned()
    } else {
        format!("{name}.")
    }
}

//------------ Unbound -------------------------------------------------------

/// One zone Unbound sends to an authoritative server on loopback.
#[derive(Debug, Clone)]
pub struct StubZone {
    pub zone: String,
    pub server: SocketAddr,
    /// `Some`: validated against these DS records (`trust-anchor:`);
    /// `None`: `domain-insecure:` (answers are never AD).
    pub ds: Option<Vec<String>>,
}

/// Debian's `unbound` as a validating resolver with the ECS module, on a
/// free loopback port, for the given stub zones only.
pub struct Unbound {
    addr: SocketAddr,
    dir: TempDir,
    daemon: Daemon,
}

impl Unbound {
    /// The configuration [`Unbound::start`] writes (unbound.conf(5),
    /// Unbound 1.17), for a resolver on `port` with its files in `dir`.
    pub fn config(port: u16, dir: &Path, zones: &[StubZone]) -> String {
        let d = dir.display();
        let mut c = String::new();
        let _ = write!(
            c,
            r#"server:
  interface: 127.0.0.1
  port: {port}
  do-ip6: no
  do-tcp: yes
  # Run as the current user in the test's directory, in the foreground.
  username: ""
  chroot: ""
  directory: "{d}"
  pidfile: "{d}/unbound.pid"
  use-syslog: no
  logfile: "{d}/unbound.log"
  verbosity: 1
  log-servfail: yes
  val-log-level: 2
  num-threads: 1
  outgoing-range: 64
  so-reuseport: no
  access-control: 127.0.0.0/8 allow
  # Loopback only: the authoritative servers are on 127.0.0.1, and every
  # query leaves from 127.0.0.1, so nothing can reach another host.
  do-not-query-localhost: no
  outgoing-interface: 127.0.0.1
  # The authoritative server sees the query names as asked.
  qname-minimisation: no
  # No RFC 8145 key-tag queries and no root key sentinel: the only
  # anchors are the zones' own.
  trust-anchor-signaling: no
  root-key-sentinel: no
  # EDNS Client Subnet (the subnetcache module): a client's ECS option is
  # forwarded to the servers listed in send-client-subnet, and the answers
  # are cached per subnet at the scope the server returns.
  module-config: "subnetcache validator iterator"
  client-subnet-always-forward: yes
  max-client-subnet-ipv4: 24
  max-client-subnet-ipv6: 56
"#
        );
        let mut ecs_servers: Vec<IpAddr> = zones.iter().map(|z| z.server.ip()).collect();
        ecs_servers.sort();
        ecs_servers.dedup();
        for ip in ecs_servers {
            let _ = writeln!(c, "  send-client-subnet: {ip}");
        }
        for z in zones {
            match &z.ds {
                Some(ds) => {
                    for d in ds {
                        let _ = writeln!(c, "  trust-anchor: \"{d}\"");
                    }
                }
                None => {
                    let _ = writeln!(c, "  domain-insecure: \"{}\"", fqdn(&z.zone));
                }
            }
        }
        // The root is a stub to the first server too, so that a name
        // outside the zones is answered (REFUSED, then SERVFAIL) on
        // loopback instead of going to the built-in root hints.
        let root = zones.first().map(|z| z.server);
        for (name, server) in zones
            .iter()
            .map(|z| (fqdn(&z.zone), z.server))
            .chain(root.map(|s| (".".to_owned(), s)))
        {
            let _ = write!(
                c,
                "stub-zone:\n  name: \"{name}\"\n  stub-addr: {}@{}\n",
                server.ip(),
                server.port()
            );
        }
        c.push_str("remote-control:\n  control-enable: no\n");
        c
    }

    /// Starts Unbound for `zones` and waits until it answers.
    pub async fn start(zones: &[StubZone]) -> Self {
        Self::start_with(zones, "").await
    }

    /// [`Unbound::start`] with `extra` appended to the `server:` clause
    /// (indented lines such as `  cache-max-ttl: 5`).
    pub async fn start_with(zones: &[StubZone], extra: &str) -> Self {
        assert!(!zones.is_empty(), "Unbound needs at least one stub zone");
        let unbound = tool("unbound", "unbound");
        let checkconf = tool("unbound-checkconf", "unbound");
        let dir = TempDir::new().expect("temp dir");
        let port = free_port();
        let conf = dir.path().join("unbound.conf");
        let mut text = Self::config(port, dir.path(), zones);
        if !extra.is_empty() {
            let at = text.find("stub-zone:").unwrap_or(text.len());
            text.insert_str(at, &format!("{}\n", extra.trim_end()));
        }
        std::fs::write(&conf, text).expect("write unbound.conf");
        let mut check = tokio::process::Command::new(checkconf);
        check.arg(&conf);
        run_ok(check).await;
        let mut cmd = Command::new(unbound);
        cmd.arg("-d").arg("-c").arg(&conf);
        let mut daemon = Daemon::spawn("unbound", cmd, dir.path().join("unbound.log"));
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        daemon.await_ready(addr).await;
        Self { addr, dir, daemon }
    }

    /// Unbound's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its log (verbosity 1, SERVFAIL reasons and validation failures).
    pub fn log(&self) -> String {
        self.daemon.log_text()
    }

    /// The config file it runs with.
    pub fn config_text(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("unbound.conf")).unwrap_or_default()
    }

    /// A stub resolver's query (RD, AD, EDNS, optional ECS "a.b.c.d/n")
    /// over UDP; fails the test with Unbound's log if no reply comes.
    pub async fn query(&self, name: &str, qtype: RecordType, ecs: Option<&str>) -> Reply {
        self.query_do(name, qtype, ecs, false).await
    }

    /// [`Unbound::query`], with DO set when `dnssec_ok`: the reply then
    /// carries the RRSIGs and a denial's NSEC records.
    pub async fn query_do(
        &self,
        name: &str,
        qtype: RecordType,
        ecs: Option<&str>,
        dnssec_ok: bool,
    ) -> Reply {
        let q = build_query_do(name, qtype, true, ecs, dnssec_ok);
        match exchange(self.addr, &q, QUERY_TIMEOUT).await {
            Some(m) => Reply::from_message(&m),
            None => panic!(
                "no reply from Unbound for {name} {qtype} within {QUERY_TIMEOUT:?}; log:\n{}",
                self.log()
            ),
        }
    }
}

//------------ delv ----------------------------------------------------------

/// What `delv` concluded.
#[derive(Debug, Clone)]
pub struct Delv {
    /// "; fully validated" (positive answer) or "; negative response,
    /// fully validated" (NXDOMAIN, NODATA).
    pub validated: bool,
    /// A validated negative answer; `nxdomain` tells which kind.
    pub negative: bool,
    pub nxdomain: bool,
    /// The records printed (RRSIGs dropped), as "name TYPE rdata".
    pub records: Vec<String>,
    /// delv's whole output, for messages.
    pub output: String,
}

/// `delv @ADDR -p PORT -a ANCHORS +root=ZONE NAME TYPE` (BIND 9.18):
/// `delv` resolves through `server` as if it were a recursive server and
/// validates itself from the trust anchor for `anchor.zone()` (`+root=`
/// names the anchor's zone; the `trust-anchors { ZONE static-ds ...; }`
/// file holds its DS). BIND 9.18's `delv` has no `+subnet`: ECS cannot be
/// sent, so "several clients" for delv means several source addresses
/// (`-b`) at most.
pub async fn delv(
    server: SocketAddr,
    anchor: &TrustAnchor,
    ds: &[String],
    name: &str,
    qtype: RecordType,
) -> Delv {
    delv_from(server, anchor, ds, name, qtype, None).await
}

/// [`delv`] with its queries sent from `source` (`delv -b`; any
/// 127.0.0.0/8 address on loopback): a server that tailors answers by
/// client address sees another client.
pub async fn delv_from(
    server: SocketAddr,
    anchor: &TrustAnchor,
    ds: &[String],
    name: &str,
    qtype: RecordType,
    source: Option<IpAddr>,
) -> Delv {
    let dir = TempDir::new().expect("temp dir");
    let anchors = dir.path().join("anchors.conf");
    std::fs::write(&anchors, delv_anchors(ds)).expect("write delv anchors");
    let mut cmd = tokio::process::Command::new(tool("delv", "bind9-dnsutils"));
    cmd.arg(format!("@{}", server.ip()))
        .arg("-p")
        .arg(server.port().to_string())
        .arg("-a")
        .arg(&anchors);
    if let Some(source) = source {
        cmd.arg("-b").arg(source.to_string());
    }
    cmd.arg(format!("+root={}", anchor.zone()))
        .arg("+nocrypto")
        .arg(name)
        .arg(qtype.to_string());
    let out = run(cmd).await;
    let output = format!("{}{}", out.stdout, out.stderr);
    let validated = output
        .lines()
        .any(|l| l == "; fully validated" || l == "; negative response, fully validated");
    let negative = output.contains("; negative response, fully validated");
    let nxdomain = negative && output.contains(";-$NXDOMAIN");
    let records = out
        .stdout
        .lines()
        .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            // name ttl class type rdata...
            (w.len() >= 5 && w[3] != "RRSIG")
                .then(|| format!("{} {} {}", w[0], w[3], w[4..].join(" ")))
        })
        .collect();
    Delv {
        validated,
        negative,
        nxdomain,
        records,
        output,
    }
}

/// A `delv -a` file: `trust-anchors { zone static-ds tag alg digest-type
/// "hex"; };` from DS lines ("zone. IN DS tag alg type hex").
pub fn delv_anchors(ds: &[String]) -> String {
    let mut s = String::from("trust-anchors {\n");
    for line in ds {
        let w: Vec<&str> = line.split_whitespace().collect();
        let at = w.iter().position(|x| *x == "DS").expect("a DS line");
        let (tag, alg, dt) = (w[at + 1], w[at + 2], w[at + 3]);
        let digest = w[at + 4..].concat();
        let _ = writeln!(s, "  {} static-ds {tag} {alg} {dt} \"{digest}\";", w[0]);
    }
    s.push_str("};\n");
    s
}

//------------ DNSViz --------------------------------------------------------

/// What `dnsviz grok` found.
#[derive(Debug, Clone, Default)]
pub struct DnsvizReport {
    /// Every entry of an "errors" list: "path: CODE: description".
    pub errors: Vec<String>,
    /// Every entry of a "warnings" list.
    pub warnings: Vec<String>,
    /// Every "status" that is not a good one (SECURE, VALID, NOERROR,
    /// NXDOMAIN): e.g. "www.zone./answer: BOGUS".
    pub bad_status: Vec<String>,
    /// How many statuses were SECURE (so an empty analysis cannot pass).
    pub secure: usize,
    /// grok's JSON, for messages.
    pub json: String,
}

impl DnsvizReport {
    /// Errors, warnings and bad statuses together (empty = clean).
    pub fn problems(&self) -> Vec<String> {
        let mut p = self.errors.clone();
        p.extend(self.warnings.iter().cloned());
        p.extend(self.bad_status.iter().cloned());
        p
    }

    /// Parses `dnsviz grok` JSON output.
    pub fn parse(json: &str) -> Self {
        let v: Value = serde_json::from_str(json)
            .unwrap_or_else(|e| panic!("dnsviz grok output is not JSON ({e}):\n{json}"));
        let mut r = Self {
            json: json.to_owned(),
            ..Self::default()
        };
        r.walk(&v, "");
        r
    }

    fn walk(&mut self, v: &Value, path: &str) {
        match v {
            Value::Object(map) => {
                for (k, v) in map {
                    match (k.as_str(), v) {
                        ("errors" | "warnings", Value::Array(items)) => {
                            for e in items {
                                let code = e.get("code").and_then(Value::as_str).unwrap_or("?");
                                let desc =
                                    e.get("description").and_then(Value::as_str).unwrap_or("");
                                let line = format!("{path}: {code}: {desc}");
                                if k == "errors" {
                                    self.errors.push(line);
                                } else {
                                    self.warnings.push(line);
                                }
                            }
                        }
                        ("status", Value::String(s)) => match s.as_str() {
                            "SECURE" => self.secure += 1,
                            "VALID" | "NOERROR" | "NXDOMAIN" => {}
                            _ => self.bad_status.push(format!("{path}: {s}")),
                        },
                        _ => self.walk(v, &format!("{path}/{k}")),
                    }
                }
            }
            Value::Array(items) => {
                for v in items {
                    self.walk(v, path);
                }
            }
            _ => {}
        }
    }
}

/// Runs dnsviz's command `args` through Debian's python3 with a shim for
/// dnsviz/dnsviz#98: dnsviz 0.9.4 checks pygraphviz's version through
/// `pygraphviz.release`, a module pygraphviz 1.7 (Debian 12) no longer has,
/// so `dnsviz grok` exits "pygraphviz is required, but not installed".
fn dnsviz_cmd(dnsviz: &Path) -> tokio::process::Command {
    const SHIM: &str = "import runpy, sys, types\n\
        import pygraphviz\n\
        if not hasattr(pygraphviz, 'release'):\n\
        \x20   m = types.ModuleType('pygraphviz.release')\n\
        \x20   m.version = pygraphviz.__version__\n\
        \x20   sys.modules['pygraphviz.release'] = m\n\
        \x20   pygraphviz.release = m\n\
        sys.argv = sys.argv[1:]\n\
        runpy.run_path(sys.argv[0], run_name='__main__')\n";
    let python = first_line(dnsviz)
        .and_then(|l| l.strip_prefix("#!").map(|p| p.trim().to_owned()))
        .filter(|p| !p.contains(' '))
        .unwrap_or_else(|| "/usr/bin/python3".to_owned());
    let mut cmd = tokio::process::Command::new(python);
    cmd.arg("-c").arg(SHIM).arg(dnsviz);
    cmd
}

fn first_line(p: &Path) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()?
        .lines()
        .next()
        .map(str::to_owned)
}

/// `dnsviz probe` of `zone` and `names` at the one authoritative server
/// `server` (its port included), then `dnsviz grok` with the zone's DNSKEY
/// as the trust anchor:
///
/// ```text
/// dnsviz probe -A -4 -b 127.0.0.1 -a ZONE -x ZONE+:ns.ZONE=127.0.0.1:PORT \
///     -o probe.json ZONE NAME...
/// dnsviz grok -r probe.json -t anchor.keys -P -o grok.json
/// ```
///
/// `-x ZONE+:` makes the server authoritative for the zone and stops
/// dnsviz from querying any ancestor (the root, the parent's DS); `-b`
/// pins the source to loopback; grok's `-P` accepts the private
/// (loopback) server address.
pub async fn dnsviz(server: SocketAddr, anchor: &TrustAnchor, names: &[&str]) -> DnsvizReport {
    let dnsviz = tool("dnsviz", "dnsviz");
    let dir = TempDir::new().expect("temp dir");
    let zone = anchor.zone();
    let probe = dir.path().join("probe.json");
    let keys = dir.path().join("anchor.keys");
    let grok = dir.path().join("grok.json");
    std::fs::write(&keys, anchor.dnskeys().join("\n") + "\n").expect("write anchor keys");
    let ns_names = loopback_ns_names(server, zone).await;
    let servers: Vec<String> = ns_names
        .iter()
        .map(|ns| format!("{ns}={}:{}", server.ip(), server.port()))
        .collect();
    let mut cmd = dnsviz_cmd(&dnsviz);
    cmd.args(["probe", "-A", "-4", "-b", "127.0.0.1", "-a", zone, "-x"])
        .arg(format!("{zone}+:{}", servers.join(",")))
        .arg("-o")
        .arg(&probe)
        .arg(zone)
        .args(names);
    run_ok(cmd).await;
    let mut cmd = dnsviz_cmd(&dnsviz);
    cmd.args(["grok", "-P", "-r"])
        .arg(&probe)
        .arg("-t")
        .arg(&keys)
        .arg("-o")
        .arg(&grok);
    run_ok(cmd).await;
    let json = std::fs::read_to_string(&grok).expect("grok output");
    DnsvizReport::parse(&json)
}

/// The names of the zone's NS RRset, after checking that each is in the
/// zone with `server`'s address as its A record. dnsviz queries every NS
/// host it learns at the address the zone gives it, on port 53, whatever
/// `-x` says (it resolves NS names itself; explicit servers are not used
/// as their addresses): a zone whose NS hosts are elsewhere would make it
/// wait for servers it cannot reach from 127.0.0.1. So the zone under test
/// must have in-zone NS names with glue 127.0.0.1 (the port then comes
/// from `-x`, which dnsviz keys by zone and address).
async fn loopback_ns_names(server: SocketAddr, zone: &str) -> Vec<String> {
    let answers = |m: Message| m.answers;
    let ask = |name: String, t: RecordType| async move {
        let q = build_query(&name, t, false, None);
        match exchange(server, &q, QUERY_TIMEOUT).await {
            Some(m) => answers(m),
            None => panic!("no answer from {server} for {name} {t}"),
        }
    };
    let names: Vec<String> = ask(zone.to_owned(), RecordType::NS)
        .await
        .iter()
        .filter_map(|r| match &r.data {
            RData::NS(ns) => Some(ns.0.to_ascii()),
            _ => None,
        })
        .collect();
    assert!(!names.is_empty(), "{server} gives no NS RRset for {zone}");
    for ns in &names {
        let addrs: Vec<IpAddr> = ask(ns.clone(), RecordType::A)
            .await
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(IpAddr::V4(a.0)),
                _ => None,
            })
            .collect();
        assert!(
            ns.to_ascii_lowercase()
                .ends_with(&zone.to_ascii_lowercase())
                && !addrs.is_empty()
                && addrs.iter().all(|a| *a == server.ip()),
            "dnsviz would query the NS host {ns} at {addrs:?} port 53, not {server}: \
             give the zone under test in-zone NS names whose only A record is {}",
            server.ip()
        );
    }
    names
}

//------------ Validators ----------------------------------------------------

/// The three validators pointed at one authoritative server for one zone.
pub struct Validators {
    pub server: SocketAddr,
    pub anchor: TrustAnchor,
    ds: Vec<String>,
}

impl Validators {
    /// For the authoritative `server` (127.0.0.1:PORT) of `anchor.zone()`.
    pub async fn new(server: SocketAddr, anchor: TrustAnchor) -> Self {
        let ds = anchor.ds().await;
        Self { server, anchor, ds }
    }

    /// For `server`, with the DS records `ds` as the parent would publish
    /// them (e.g. from `meridian dnssec ds`) instead of ones derived from
    /// the anchor; `anchor` (the DNSKEYs) is still what `dnsviz grok` is
    /// given.
    pub fn with_ds(server: SocketAddr, anchor: TrustAnchor, ds: Vec<String>) -> Self {
        assert!(!ds.is_empty(), "no DS records for {}", anchor.zone());
        Self { server, anchor, ds }
    }

    /// The DS records given to Unbound and delv.
    pub fn ds(&self) -> &[String] {
        &self.ds
    }

    /// An Unbound validating the zone against the anchor's DS.
    pub async fn unbound(&self) -> Unbound {
        Unbound::start(&[StubZone {
            zone: self.anchor.zone().to_owned(),
            server: self.server,
            ds: Some(self.ds.clone()),
        }])
        .await
    }

    /// `delv` for `name`/`qtype`.
    pub async fn delv(&self, name: &str, qtype: RecordType) -> Delv {
        delv(self.server, &self.anchor, &self.ds, name, qtype).await
    }

    /// `delv -b SOURCE` for `name`/`qtype`.
    pub async fn delv_from(&self, name: &str, qtype: RecordType, source: IpAddr) -> Delv {
        delv_from(
            self.server,
            &self.anchor,
            &self.ds,
            name,
            qtype,
            Some(source),
        )
        .await
    }

    /// `dnsviz probe` + `grok` of the zone and `names`.
    pub async fn dnsviz(&self, names: &[&str]) -> DnsvizReport {
        dnsviz(self.server, &self.anchor, names).await
    }
}

//------------ Reference server: NSD with a zone signed by BIND ---------------

/// A zone signed by `dnssec-signzone` with a fresh ECDSA P-256 CSK
/// (`dnssec-keygen -a ECDSAP256SHA256 -f KSK`, signed with `-z`), NSEC.
pub struct SignedZone {
    pub zone: String,
    /// The signed zone file.
    pub file: PathBuf,
    pub anchor: TrustAnchor,
}

/// A fresh CSK for `zone` in `dir`: its DNSKEY as a trust anchor, and the
/// key file's base name.
pub async fn keygen(dir: &Path, zone: &str) -> (TrustAnchor, String) {
    let mut cmd = tokio::process::Command::new(tool("dnssec-keygen", "bind9-utils"));
    cmd.args(["-q", "-a", "ECDSAP256SHA256", "-f", "KSK", "-K"])
        .arg(dir)
        .arg(fqdn(zone));
    let base = run_ok(cmd).await.stdout.trim().to_owned();
    let key = std::fs::read_to_string(dir.join(format!("{base}.key"))).expect("key file");
    (TrustAnchor::from_dnskeys(zone, &key), base)
}

/// Signs `zone_text` (zone file text for `zone`, without DNSKEY) in `dir`
/// with a fresh CSK.
pub async fn sign_zone(dir: &Path, zone: &str, zone_text: &str) -> SignedZone {
    let (anchor, base) = keygen(dir, zone).await;
    let file = sign_with_key(dir, zone, zone_text, &base, "zone").await;
    SignedZone {
        zone: fqdn(zone),
        file,
        anchor,
    }
}

/// Signs `zone_text` in `dir` with the key `base` (from [`keygen`] in the
/// same directory) into `dir/NAME.signed`: several versions of a zone
/// under one key, as a server that tailors answers serves them.
pub async fn sign_with_key(
    dir: &Path,
    zone: &str,
    zone_text: &str,
    base: &str,
    name: &str,
) -> PathBuf {
    let unsigned = dir.join(format!("{name}.db"));
    let key = std::fs::read_to_string(dir.join(format!("{base}.key"))).expect("key file");
    std::fs::write(&unsigned, format!("{zone_text}\n{key}")).expect("write zone");
    let signed = dir.join(format!("{name}.signed"));
    let mut cmd = tokio::process::Command::new(tool("dnssec-signzone", "bind9-utils"));
    // -d: the dsset- file goes to `dir`, not to the working directory.
    cmd.current_dir(dir)
        .args(["-q", "-z", "-e", "+2592000", "-d"])
        .arg(dir)
        .arg("-K")
        .arg(dir)
        .arg("-o")
        .arg(fqdn(zone))
        .arg("-f")
        .arg(&signed)
        .arg(&unsigned)
        .arg(dir.join(format!("{base}.key")));
    run_ok(cmd).await;
    signed
}

/// NSD (Debian `nsd`) serving one zone file on a free loopback port.
pub struct Nsd {
    addr: SocketAddr,
    dir: TempDir,
    daemon: Daemon,
}

impl Nsd {
    /// Starts NSD for `zone` from `file` and waits until it answers.
    pub async fn start(zone: &str, file: &Path) -> Self {
        let nsd = tool("nsd", "nsd");
        let dir = TempDir::new().expect("temp dir");
        let port = free_port();
        let d = dir.path().display();
        let conf = dir.path().join("nsd.conf");
        std::fs::write(
            &conf,
            format!(
                r#"server:
  ip-address: 127.0.0.1
  port: {port}
  do-ip6: no
  username: ""
  chroot: ""
  zonesdir: "{d}"
  database: ""
  zonelistfile: "{d}/zone.list"
  xfrdfile: "{d}/xfrd.state"
  xfrdir: "{d}"
  pidfile: "{d}/nsd.pid"
  logfile: "{d}/nsd.log"
  server-count: 1
  verbosity: 1
  hide-version: yes
remote-control:
  control-enable: no
zone:
  name: "{}"
  zonefile: "{}"
"#,
                fqdn(zone),
                file.display()
            ),
        )
        .expect("write nsd.conf");
        let mut cmd = Command::new(nsd);
        cmd.arg("-d").arg("-c").arg(&conf);
        let mut daemon = Daemon::spawn("nsd", cmd, dir.path().join("nsd.log"));
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        daemon.await_ready(addr).await;
        Self { addr, dir, daemon }
    }

    /// NSD's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}
