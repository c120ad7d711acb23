//! Real latency on one machine: three backends in their own network
//! namespaces, each behind a link with its own delay, probed by the real
//! server. The probe RTTs in `/status` must rank the datacenters by those
//! delays, and follow when one changes.
//!
//! Its own test binary: it needs root (network namespaces, links), and it
//! changes this host's network configuration while it runs. Without the
//! privilege it prints `skipped: ...` and passes; without `ip` or `tc` it
//! fails, saying to install iproute2.
//!
//! Each namespace `mrd8-<pid>-<i>` is joined to this host by a link whose
//! host side is `198.18.<n>.1/30` and namespace side `198.18.<n>.2/30`
//! (RFC 2544 benchmarking space; `n` is a free block). The delay, on the
//! host-to-namespace direction, is `tc netem` on a veth pair where the
//! kernel has `sch_netem`; where it does not (as in some VMs), a TUN pair
//! with a userspace delay line in this process stands in for the veth
//! pair, so the test still measures real TCP over a real delayed path.
//! [`Lab`]'s `Drop` removes everything, also after a panic.
//!
//! For later tests (DNS answers with `policy = "latency"`): [`LatencyLab`]
//! gives the running server's DNS address and changes delays.

#![allow(unreachable_pub, missing_docs)]

#[allow(dead_code)]
#[path = "integration/harness.rs"]
mod harness;

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use harness::{Setup, TestServer};

/// The port of the HTTP backend in each namespace.
const BACKEND_PORT: u16 = 8080;

/// A line on stderr that `cargo test` shows even when the test passes
/// (it captures only the `print!` family).
fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "netns_latency: {line}");
}

//------------ Commands ----------------------------------------------------

/// Runs `program args`; `Err(stderr)` when it fails. A missing program
/// fails the test: iproute2 is a requirement, not an option.
fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let out = match Command::new(program).args(args).output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "`{program}` not found: install iproute2 (Debian: apt-get install iproute2) \
             to run this test"
        ),
        Err(e) => panic!("cannot run {program}: {e}"),
    };
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{program} {}`: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Like [`run`], and the test fails on error.
fn must(program: &str, args: &[&str]) {
    if let Err(e) = run(program, args) {
        panic!("{e}");
    }
}

/// `program args`' standard output ("" when it fails).
fn output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

//------------ Lab ---------------------------------------------------------

/// How a link is delayed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delayer {
    /// A veth pair, `tc qdisc ... netem delay` on the host side.
    Netem,
    /// A TUN device on each side; this process carries the packets across,
    /// holding those towards the namespace for the delay.
    DelayLine,
}

/// One namespace and its link.
struct Link {
    ns: String,
    /// The host side's interface.
    host_if: String,
    host: Ipv4Addr,
    peer: Ipv4Addr,
    /// The delay towards the namespace (the delay line reads it per
    /// packet).
    delay_ms: Arc<AtomicU32>,
    line: Option<DelayLine>,
}

/// Network namespaces with delayed links; removed on drop.
pub struct Lab {
    links: Vec<Link>,
    delayer: Delayer,
}

impl Lab {
    /// One namespace per entry of `delays_ms`, its link delayed by it.
    /// `None` (after saying `skipped: ...`) without the privilege.
    pub fn create(delays_ms: &[u32]) -> Option<Self> {
        // Both are needed whatever the kernel has; say so up front.
        run("ip", &["-V"]).unwrap_or_else(|e| panic!("{e}"));
        run("tc", &["-V"]).unwrap_or_else(|e| panic!("{e}"));
        // Labs of tests running side by side: one at a time picks its block
        // and adds its addresses, and each numbers its namespaces on.
        static CREATING: std::sync::Mutex<()> = std::sync::Mutex::new(());
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let _creating = CREATING.lock().unwrap_or_else(|e| e.into_inner());
        let first = NEXT.fetch_add(delays_ms.len(), Ordering::SeqCst);
        let pid = std::process::id();
        let block = free_block(delays_ms.len());
        let mut lab = Self {
            links: Vec::new(),
            delayer: Delayer::Netem,
        };
        for (i, &delay) in delays_ms.iter().enumerate() {
            let ns = format!("mrd8-{pid}-{}", first + i);
            if let Err(e) = run("ip", &["netns", "add", &ns]) {
                if e.contains("Operation not permitted") || e.contains("Permission denied") {
                    say(&format!(
                        "skipped: creating network namespaces needs root or CAP_NET_ADMIN ({e})"
                    ));
                    return None;
                }
                panic!("{e}");
            }
            let octet = block + i as u8;
            lab.links.push(Link {
                host_if: ns.clone(),
                host: Ipv4Addr::new(198, 18, octet, 1),
                peer: Ipv4Addr::new(198, 18, octet, 2),
                delay_ms: Arc::new(AtomicU32::new(delay)),
                line: None,
                ns,
            });
            lab.connect(i);
        }
        say(&format!(
            "{} namespaces on 198.18.{block}.0/30 and up, delayed by {:?}",
            lab.links.len(),
            lab.delayer
        ));
        Some(lab)
    }

    /// Joins namespace `i` to this host, delayed.
    fn connect(&mut self, i: usize) {
        if self.delayer == Delayer::Netem && !self.veth(i) {
            // No netem in this kernel: the delay line for every link.
            self.delayer = Delayer::DelayLine;
        }
        if self.delayer == Delayer::DelayLine {
            self.tun(i);
        }
        let l = &self.links[i];
        must("ip", &["-n", &l.ns, "link", "set", "lo", "up"]);
    }

    /// A veth pair delayed by netem; `false` when the kernel has no
    /// netem (the pair is removed again).
    fn veth(&self, i: usize) -> bool {
        let l = &self.links[i];
        #[rustfmt::skip]
        must("ip", &["link", "add", &l.host_if, "type", "veth", "peer", "name", "veth0", "netns", &l.ns]);
        configure(l, "veth0");
        let delay = format!("{}ms", l.delay_ms.load(Ordering::SeqCst));
        match run(
            "tc",
            &[
                "qdisc", "add", "dev", &l.host_if, "root", "netem", "delay", &delay,
            ],
        ) {
            Ok(()) => true,
            Err(e) if e.contains("qdisc kind is unknown") && i == 0 => {
                say(&format!(
                    "this kernel has no sch_netem ({e}); using a userspace delay line"
                ));
                must("ip", &["link", "del", &l.host_if]);
                false
            }
            Err(e) => panic!("{e}"),
        }
    }

    /// A TUN device on each side and the delay line between them.
    fn tun(&mut self, i: usize) {
        let l = &self.links[i];
        let host = tun_device(&l.host_if).unwrap_or_else(|e| panic!("TUN {}: {e}", l.host_if));
        let ns_path = format!("/run/netns/{}", l.ns);
        let inner = in_namespace(&ns_path, || tun_device("tun0"))
            .unwrap_or_else(|e| panic!("TUN in {}: {e}", l.ns));
        let line = DelayLine::start(host, inner, Arc::clone(&l.delay_ms));
        configure(l, "tun0");
        self.links[i].line = Some(line);
    }

    /// The address a backend in namespace `i` listens on.
    pub fn backend(&self, i: usize) -> SocketAddr {
        (self.links[i].peer, BACKEND_PORT).into()
    }

    /// How the links are delayed here.
    pub fn delayer(&self) -> Delayer {
        self.delayer
    }

    /// Changes the delay towards namespace `i` (new packets get it).
    pub fn set_delay(&self, i: usize, ms: u32) {
        let l = &self.links[i];
        l.delay_ms.store(ms, Ordering::SeqCst);
        if self.delayer == Delayer::Netem {
            let delay = format!("{ms}ms");
            #[rustfmt::skip]
            must("tc", &["qdisc", "change", "dev", &l.host_if, "root", "netem", "delay", &delay]);
        }
    }

    /// A TCP listener bound to [`Self::backend`] inside namespace `i`.
    pub fn listen(&self, i: usize) -> std::net::TcpListener {
        let path = format!("/run/netns/{}", self.links[i].ns);
        let addr = self.backend(i);
        in_namespace(&path, || std::net::TcpListener::bind(addr))
            .unwrap_or_else(|e| panic!("listen on {addr} in {}: {e}", self.links[i].ns))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for l in &mut self.links {
            // The delay line first: its TUN devices go with their files.
            drop(l.line.take());
            // Anything a later test started inside the namespace, by PID.
            for pid in output("ip", &["netns", "pids", &l.ns]).split_whitespace() {
                if let Ok(pid) = pid.parse::<i32>() {
                    // SAFETY: kill(2) with a PID listed as running in our
                    // namespace; no memory is involved.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
            let _ = run("ip", &["netns", "del", &l.ns]);
            // A veth's host side goes with its peer's namespace; make sure.
            let _ = run("ip", &["link", "del", &l.host_if]);
        }
    }
}

/// Addresses both sides of `l`'s link (`inner` is the namespace side's
/// interface) and brings them up.
fn configure(l: &Link, inner: &str) {
    let host = format!("{}/30", l.host);
    let peer = format!("{}/30", l.peer);
    must("ip", &["addr", "add", &host, "dev", &l.host_if]);
    must("ip", &["link", "set", &l.host_if, "up"]);
    must("ip", &["-n", &l.ns, "addr", "add", &peer, "dev", inner]);
    must("ip", &["-n", &l.ns, "link", "set", inner, "up"]);
}

/// The first of `n` consecutive third octets of 198.18.0.0/16 that no
/// address or route on this host uses, starting at one derived from the
/// PID (so parallel runs are unlikely to try the same first).
fn free_block(n: usize) -> u8 {
    let used =
        output("ip", &["-4", "-o", "addr", "show"]) + &output("ip", &["-4", "route", "show"]);
    let start = std::process::id() as usize % 64;
    (0..64)
        .map(|k| ((start + k) % 64 * 4) as u8)
        .find(|&b| (0..n).all(|i| !used.contains(&format!("198.18.{}.", usize::from(b) + i))))
        .expect("a free block in 198.18.0.0/16")
}

/// Runs `f` on a thread that has joined the network namespace at `path`:
/// sockets and devices it creates live there, and stay there when the
/// thread ends.
fn in_namespace<T: Send>(
    path: &str,
    f: impl FnOnce() -> std::io::Result<T> + Send,
) -> std::io::Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            let ns = File::open(path)?;
            // SAFETY: setns(2) with a valid namespace descriptor; it moves
            // only this thread, which ends after `f`.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            f()
        })
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("namespace thread panicked")))
    })
}

/// A layer-3 TUN device named `name` in the calling thread's namespace;
/// it exists while the file is open.
fn tun_device(name: &str) -> std::io::Result<File> {
    let file = File::options()
        .read(true)
        .write(true)
        .open("/dev/net/tun")?;
    // struct ifreq: the name, then the flags (a short) in a union of 24
    // bytes.
    let mut ifr = [0u8; 40];
    ifr[..name.len()].copy_from_slice(name.as_bytes());
    let flags = (libc::IFF_TUN | libc::IFF_NO_PI) as i16;
    ifr[16..18].copy_from_slice(&flags.to_ne_bytes());
    // SAFETY: TUNSETIFF reads and writes one struct ifreq, which `ifr`
    // (40 bytes, the kernel's size on 64-bit Linux) holds.
    if unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, ifr.as_mut_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(file)
}

//------------ DelayLine ---------------------------------------------------

/// Carries IP packets between two TUN devices: from the host's to the
/// namespace's after the delay, back at once. Three threads, each of which
/// checks `stop` at least every [`DelayLine::TICK`].
struct DelayLine {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl DelayLine {
    const TICK: Duration = Duration::from_millis(20);

    fn start(host: File, inner: File, delay_ms: Arc<AtomicU32>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (host, inner) = (Arc::new(host), Arc::new(inner));
        let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
        let mut threads = Vec::new();
        // Host to namespace: stamp each packet with its release time...
        threads.push(std::thread::spawn({
            let (stop, host) = (Arc::clone(&stop), Arc::clone(&host));
            move || {
                let mut buf = vec![0u8; 65_536];
                while !stop.load(Ordering::Relaxed) {
                    if let Some(n) = read_ready(&host, &mut buf) {
                        let delay = Duration::from_millis(delay_ms.load(Ordering::Relaxed).into());
                        if tx
                            .send((Instant::now() + delay, buf[..n].to_vec()))
                            .is_err()
                        {
                            return;
                        }
                    }
                }
            }
        }));
        // ...and release it then, in order.
        threads.push(std::thread::spawn({
            let (stop, inner) = (Arc::clone(&stop), Arc::clone(&inner));
            move || {
                while !stop.load(Ordering::Relaxed) {
                    let Ok((due, packet)) = rx.recv_timeout(Self::TICK) else {
                        continue;
                    };
                    loop {
                        let now = Instant::now();
                        if now >= due || stop.load(Ordering::Relaxed) {
                            break;
                        }
                        std::thread::sleep((due - now).min(Self::TICK));
                    }
                    let _ = (&*inner).write(&packet);
                }
            }
        }));
        // Namespace to host, undelayed.
        threads.push(std::thread::spawn({
            let stop = Arc::clone(&stop);
            move || {
                let mut buf = vec![0u8; 65_536];
                while !stop.load(Ordering::Relaxed) {
                    if let Some(n) = read_ready(&inner, &mut buf) {
                        let _ = (&*host).write(&buf[..n]);
                    }
                }
            }
        }));
        Self { stop, threads }
    }
}

/// Reads one packet from `file` if one arrives within [`DelayLine::TICK`].
fn read_ready(file: &File, buf: &mut [u8]) -> Option<usize> {
    let mut pfd = libc::pollfd {
        fd: file.as_fd().as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll(2) on one valid pollfd.
    let ready = unsafe { libc::poll(&mut pfd, 1, DelayLine::TICK.as_millis() as i32) };
    if ready <= 0 {
        return None;
    }
    (&*file).read(buf).ok().filter(|&n| n > 0)
}

impl Drop for DelayLine {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

//------------ Backends ----------------------------------------------------

/// An HTTP/1.1 server on `listener` answering every request 200 "ok".
fn serve_http(listener: std::net::TcpListener) -> tokio::task::JoinHandle<()> {
    listener.set_nonblocking(true).expect("non-blocking");
    let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buf = [0u8; 1024];
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let reply = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";
                let _ = conn.write_all(reply.as_bytes()).await;
            });
        }
    })
}

//------------ LatencyLab --------------------------------------------------

/// The zone the lab serves.
pub const ORIGIN: &str = "lab.test.";

/// A [`Lab`] with an HTTP backend in each namespace, and a real server
/// whose datacenter `dc<i>` probes namespace `i`.
pub struct LatencyLab {
    pub server: TestServer,
    backends: Vec<tokio::task::JoinHandle<()>>,
    // Last: the server and backends stop before the namespaces go.
    pub lab: Lab,
}

impl LatencyLab {
    /// Starts the lab with one datacenter per delay. `probe` is the body
    /// of each `[datacenters.dc<i>.probe]` table after its `targets`;
    /// `services` the zone's `[services...]` tables. `None` when skipped.
    pub async fn start(delays_ms: &[u32], probe: &str, services: &str) -> Option<Self> {
        let lab = Lab::create(delays_ms)?;
        let backends = (0..delays_ms.len())
            .map(|i| serve_http(lab.listen(i)))
            .collect();
        let mut zone = format!(
            "origin = \"{ORIGIN}\"\nns = [\"ns1.{ORIGIN}\"]\n[soa]\nrname = \"hostmaster.{ORIGIN}\"\n\
             serial = 1\n[records]\nns1 = [{{ type = \"A\", value = \"192.0.2.53\" }}]\n"
        );
        for i in 0..delays_ms.len() {
            zone += &format!(
                "[datacenters.dc{i}]\nlocation = [39.04, -77.49]\naddresses = [\"192.0.2.{}\"]\n\
                 [datacenters.dc{i}.probe]\ntargets = [\"{}\"]\n{probe}\n",
                10 + i,
                lab.backend(i)
            );
        }
        zone += services;
        // Probe RTTs reach the query path at each publication.
        let server = TestServer::start_with(Setup {
            zones: &[("lab.test.toml", &zone)],
            server_toml: "[latency]\npublish_interval = \"200ms\"\n",
            ..Setup::default()
        })
        .await;
        Some(Self {
            server,
            backends,
            lab,
        })
    }

    /// Where the server answers DNS (UDP and TCP).
    pub fn dns_addr(&self) -> SocketAddr {
        self.server.addr
    }

    /// Changes the delay towards datacenter `i`'s namespace.
    pub fn set_delay(&self, i: usize, ms: u32) {
        self.lab.set_delay(i, ms);
    }

    /// The datacenters in `/status`, in zone order.
    pub fn datacenters(&self) -> Vec<Value> {
        let status = self.server.server.monitor().status();
        status["zones"]
            .as_array()
            .and_then(|zones| zones.iter().find(|z| z["zone"] == ORIGIN))
            .and_then(|z| z["datacenters"].as_array().cloned())
            .expect("the lab zone in /status")
    }

    /// Polls `/status` (every 50 ms, at most `limit`) until `check`
    /// accepts the datacenters; returns them and how long it took.
    pub async fn until(
        &self,
        what: &str,
        limit: Duration,
        check: impl Fn(&[Value]) -> bool,
    ) -> (Vec<Value>, Duration) {
        let start = Instant::now();
        loop {
            let dcs = self.datacenters();
            if check(&dcs) {
                return (dcs, start.elapsed());
            }
            assert!(
                start.elapsed() < limit,
                "timed out after {limit:?} waiting for: {what}; datacenters: {}",
                summary(&dcs)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for LatencyLab {
    fn drop(&mut self) {
        for b in &self.backends {
            b.abort();
        }
    }
}

/// Each datacenter's RTT and its target's statistics, for messages.
fn summary(dcs: &[Value]) -> String {
    dcs.iter()
        .map(|d| {
            format!(
                "{}: rtt_ms {} congested {} target {}",
                d["name"], d["rtt_ms"], d["congested"], d["targets"][0]["rtt"]
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn rtt_ms(dc: &Value) -> Option<f64> {
    dc["rtt_ms"].as_f64()
}

fn samples(dc: &Value) -> u64 {
    dc["targets"][0]["rtt"]["samples"].as_u64().unwrap_or(0)
}

/// Whether the datacenters' RTTs are known and ascend in the order of
/// `order` (indices).
fn ranked(dcs: &[Value], order: &[usize]) -> bool {
    let rtts: Option<Vec<f64>> = order.iter().map(|&i| rtt_ms(&dcs[i])).collect();
    rtts.is_some_and(|r| r.windows(2).all(|w| w[0] < w[1]))
}

//------------ The test ----------------------------------------------------

const DELAYS_MS: [u32; 3] = [20, 60, 120];

/// TCP probes: the RTT is the connect, one round trip, so it is the
/// configured delay plus little. The timeout leaves room for 200 ms.
const TCP_PROBE: &str = "type = \"tcp\"\ninterval = \"400ms\"\ntimeout = \"350ms\"\n\
                         rise = 1\nfall = 3\njitter = 0.1";

const FAILOVER: &str = "[services.www]\npolicy = \"failover\"\n\
                        datacenters = [\"dc0\", \"dc1\", \"dc2\"]\n\
                        [services.fast]\npolicy = \"latency\"\nsource = \"probes\"\n\
                        datacenters = [\"dc0\", \"dc1\", \"dc2\"]\n";

/// The address `fast.lab.test` answers with (`dc<i>` has 192.0.2.1<i>).
async fn fastest(lab: &LatencyLab) -> String {
    let m = lab
        .server
        .ask("fast.lab.test", hickory_proto::rr::RecordType::A, None)
        .await;
    harness::a_answers(&m).first().cloned().unwrap_or_default()
}

/// Polls the DNS answer of the latency service until it is `want`.
async fn until_fastest(lab: &LatencyLab, want: &str, limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let got = fastest(lab).await;
        if got == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "fast.lab.test still answers {got}, not {want}, after {limit:?}: {}",
            summary(&lab.datacenters())
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_rtts_rank_datacenters_by_real_path_delay_and_follow_a_change() {
    let Some(lab) = LatencyLab::start(&DELAYS_MS, TCP_PROBE, FAILOVER).await else {
        return;
    };
    let started = Instant::now();

    // Enough samples for a baseline, and the ranking by delay.
    let (dcs, took) = lab
        .until(
            "8 samples per datacenter, ranked 20 < 60 < 120 ms",
            Duration::from_secs(30),
            |dcs| dcs.iter().all(|d| samples(d) >= 8) && ranked(dcs, &[0, 1, 2]),
        )
        .await;
    say(&format!(
        "ranked by delay after {took:.2?}: {}",
        summary(&dcs)
    ));
    for (dc, &delay) in dcs.iter().zip(&DELAYS_MS) {
        let delay = f64::from(delay);
        let rtt = rtt_ms(dc).expect("known");
        // One round trip through the delay (less is impossible), plus
        // this host's scheduling (generous: the host may be busy).
        assert!(
            rtt >= delay * 0.95 && rtt <= delay + 40.0,
            "{}: rtt {rtt} ms for a {delay} ms path",
            dc["name"]
        );
        // The baseline keeps much of the first sample, and p90 of eight
        // is their maximum: a slow start on a busy host shows there.
        let stats = &dc["targets"][0]["rtt"];
        for key in ["smoothed_ms", "baseline_ms", "p90_ms"] {
            let v = stats[key].as_f64().unwrap_or(f64::NAN);
            assert!(v >= delay * 0.95 && v <= delay + 80.0, "{key} {v}: {stats}");
        }
        assert_eq!(dc["congested"], false, "{dc}");
    }
    // What the next publication hands the query path is the same.
    let view = lab
        .server
        .server
        .monitor()
        .view_for(&lab.server.server.snapshot());
    let published: Vec<u32> = view.zone(0).iter().map(|h| h.rtt_us).collect();
    assert!(
        published.windows(2).all(|w| 0 < w[0] && w[0] < w[1]),
        "{published:?}"
    );

    // The latency policy (source = "probes") answers with the fastest.
    until_fastest(&lab, "192.0.2.10", Duration::from_secs(5)).await;

    // The fast path slows from 20 to 200 ms: it must fall to last.
    lab.set_delay(0, 200);
    let moved = until_fastest(&lab, "192.0.2.11", Duration::from_secs(20)).await;
    say(&format!(
        "20 -> 200 ms: the latency policy's answer moved to dc1 after {moved:.2?}"
    ));
    let (dcs, followed) = lab
        .until(
            "dc0 ranked last after its path slowed to 200 ms",
            Duration::from_secs(20),
            |dcs| ranked(dcs, &[1, 2, 0]),
        )
        .await;
    say(&format!(
        "20 -> 200 ms: ranking followed after {followed:.2?}: {}",
        summary(&dcs)
    ));
    // Against its baseline of about 20 ms, dc0 is congested now.
    let (dcs, _) = lab
        .until(
            "dc0 congested, the others not",
            Duration::from_secs(10),
            |dcs| {
                dcs[0]["congested"] == true
                    && dcs[1]["congested"] == false
                    && dcs[2]["congested"] == false
            },
        )
        .await;
    let view = lab
        .server
        .server
        .monitor()
        .view_for(&lab.server.server.snapshot());
    assert!(view.zone(0)[0].congested, "{:?}", view.zone(0));
    // The smoothed RTT settles at the new delay.
    let (dcs2, settled) = lab
        .until(
            "dc0's RTT settles near 200 ms",
            Duration::from_secs(20),
            |dcs| rtt_ms(&dcs[0]).is_some_and(|r| (190.0..=250.0).contains(&r)),
        )
        .await;
    say(&format!(
        "20 -> 200 ms: dc0 within 190..250 ms after {:.2?} more; total run {:.2?}; {}",
        settled,
        started.elapsed(),
        summary(&dcs2)
    ));
    assert!(
        dcs.iter()
            .all(|d| d["observed"] == "up" && d["usable"] == true),
        "no datacenter went down: {}",
        summary(&dcs)
    );
}

/// HTTP probes: a fresh connection, then the request and the response
/// headers: two round trips.
const HTTP_PROBE: &str = "type = \"http\"\npath = \"/health\"\ninterval = \"500ms\"\n\
                          timeout = \"400ms\"\nrise = 1\nfall = 3\njitter = 0.1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_probes_rtt_spans_two_round_trips() {
    let delays = [20, 60];
    let services = "[services.www]\npolicy = \"failover\"\ndatacenters = [\"dc0\", \"dc1\"]\n";
    let Some(lab) = LatencyLab::start(&delays, HTTP_PROBE, services).await else {
        return;
    };
    let (dcs, took) = lab
        .until(
            "10 samples per datacenter",
            Duration::from_secs(30),
            |dcs| {
                // The first probe also sets the HTTP client up: ten samples
                // leave under a tenth of its excess in the smoothed RTT.
                dcs.iter().all(|d| samples(d) >= 10)
            },
        )
        .await;
    say(&format!("HTTP probes after {took:.2?}: {}", summary(&dcs)));
    for (dc, &delay) in dcs.iter().zip(&delays) {
        // The SYN and the request each wait out the delay; the answers
        // come straight back. Not under two delays, then; the upper
        // bound is generous for a busy host.
        let two = 2.0 * f64::from(delay);
        let rtt = rtt_ms(dc).expect("known");
        assert!(
            rtt >= two * 0.95 && rtt <= two + 60.0,
            "{}: HTTP rtt {rtt} ms over a {delay} ms path",
            dc["name"]
        );
    }
}
