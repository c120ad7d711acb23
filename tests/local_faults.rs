//! A probe that fails for a reason on this host (here: no file
//! descriptors left, EMFILE) must not count as the target failing.
//!
//! Its own test binary, with a single test: it lowers the process's
//! `RLIMIT_NOFILE` and fills the descriptor table, which would break any
//! test running beside it in the same process.

#![allow(unreachable_pub, missing_docs)]

#[allow(dead_code)]
#[path = "integration/harness.rs"]
mod harness;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use meridian::health::Observed;
use meridian::model::DcId;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};

use harness::{Setup, TestServer};

/// An HTTP/1.1 backend on 127.0.0.1 answering every request with `status`.
/// It outlives accept errors (it may itself meet EMFILE).
struct Backend {
    addr: SocketAddr,
    status: Arc<AtomicU16>,
    task: tokio::task::JoinHandle<()>,
}

impl Backend {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let status = Arc::new(AtomicU16::new(200));
        let code = Arc::clone(&status);
        let task = tokio::spawn(async move {
            loop {
                // Back off and accept again on errors (EMFILE while the
                // test holds every descriptor).
                let Ok((mut conn, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let code = code.load(Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut seen = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => seen.extend_from_slice(&buf[..n]),
                        }
                    }
                    let reply = format!(
                        "HTTP/1.1 {code} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
                    );
                    let _ = conn.write_all(reply.as_bytes()).await;
                });
            }
        });
        Self { addr, status, task }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A DNS "server" on 127.0.0.1 that answers every query NOERROR (the
/// query itself with QR set), which is all a DNS probe checks.
struct Responder {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Responder {
    async fn start() -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let addr = socket.local_addr().expect("local addr");
        let task = tokio::spawn(async move {
            let mut buf = [0u8; 512];
            loop {
                let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                    continue;
                };
                if n >= 12 {
                    buf[2] |= 0x80;
                    buf[3] &= 0xf0;
                    let _ = socket.send_to(&buf[..n], from).await;
                }
            }
        });
        Self { addr, task }
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The datacenters, in the zone's order: one per probe type.
const DCS: [&str; 3] = ["web", "tcp", "dns"];

/// Three datacenters probed every 100 ms, down after 2 failures: `web`
/// over HTTP and `tcp` by connecting, both to `backend`, and `dns` with a
/// query to `responder`.
fn zone(backend: SocketAddr, responder: SocketAddr) -> String {
    let probe = "interval = \"100ms\"\ntimeout = \"80ms\"\nrise = 2\nfall = 2\njitter = 0.0";
    format!(
        r#"
origin = "lf.test."
ns = ["ns1.lf.test."]
[soa]
rname = "hostmaster.lf.test."
serial = 1
[records]
ns1 = [{{ type = "A", value = "192.0.2.53" }}]
[datacenters.web]
location = [39.04, -77.49]
addresses = ["192.0.2.10"]
[datacenters.web.probe]
type = "http"
targets = ["{backend}"]
path = "/health"
{probe}
[datacenters.tcp]
location = [39.04, -77.49]
addresses = ["192.0.2.11"]
[datacenters.tcp.probe]
type = "tcp"
targets = ["{backend}"]
{probe}
[datacenters.dns]
location = [39.04, -77.49]
addresses = ["192.0.2.12"]
[datacenters.dns.probe]
type = "dns"
targets = ["{responder}"]
name = "probe.lf.test."
{probe}
[services.www]
policy = "failover"
datacenters = ["web", "tcp", "dns"]
"#
    )
}

/// The file descriptor table held full: the soft `RLIMIT_NOFILE` lowered
/// to just above the highest open descriptor, and `/dev/null` opened until
/// EMFILE. Dropping it closes the files and restores the limit.
struct Exhausted {
    files: Vec<std::fs::File>,
    saved: libc::rlimit,
}

impl Exhausted {
    fn new() -> Self {
        let highest = std::fs::read_dir("/proc/self/fd")
            .expect("/proc/self/fd")
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
            .max()
            .expect("some descriptor is open");
        let mut saved = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes one rlimit into the valid, exclusively
        // borrowed `saved`.
        assert_eq!(
            unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut saved) },
            0
        );
        let limit = libc::rlimit {
            rlim_cur: (highest + 16).min(saved.rlim_max),
            rlim_max: saved.rlim_max,
        };
        // SAFETY: setrlimit reads one valid rlimit; lowering the soft limit
        // needs no privilege.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0);
        let mut this = Self {
            files: Vec::new(),
            saved,
        };
        this.fill();
        this
    }

    /// Takes every descriptor that became free (a probe or connection of
    /// the server may have closed one).
    fn fill(&mut self) {
        for _ in 0..10_000 {
            match std::fs::File::open("/dev/null") {
                Ok(f) => self.files.push(f),
                Err(e) if e.raw_os_error() == Some(libc::EMFILE) => return,
                Err(e) => panic!("open /dev/null: {e}"),
            }
        }
        panic!("no EMFILE after 10000 opens: the limit was not lowered");
    }
}

impl Drop for Exhausted {
    fn drop(&mut self) {
        self.files.clear();
        // SAFETY: as in `new`; restores the limit the process had.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &self.saved) };
    }
}

/// Each datacenter's only target (in [`DCS`] order) with the datacenter's
/// observed state as the query path sees it.
fn targets(s: &TestServer) -> Vec<(Value, Observed)> {
    let status = s.server.monitor().status();
    let health = s.server.snapshot().health.clone();
    let dcs = status["zones"][0]["datacenters"]
        .as_array()
        .expect("datacenters");
    DCS.iter()
        .map(|&name| {
            let i = dcs
                .iter()
                .position(|d| d["name"] == name)
                .expect("configured");
            let observed = health.dc(0, DcId(i as u16)).observed;
            (dcs[i]["targets"][0].clone(), observed)
        })
        .collect()
}

/// Polls `check` on every datacenter's target (every 20 ms, for at most
/// 10 s) and returns the states that satisfied it; `fill` runs before each
/// check.
async fn until(
    s: &TestServer,
    what: &str,
    mut fill: impl FnMut(),
    check: impl Fn(&str, &Value, Observed) -> bool,
) -> Vec<(Value, Observed)> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        fill();
        let all = targets(s);
        if all
            .iter()
            .zip(DCS)
            .all(|((t, observed), dc)| check(dc, t, *observed))
        {
            return all;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}; targets: {all:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn probes(t: &Value) -> u64 {
    t["probes"].as_u64().expect("probes")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_out_of_file_descriptors_is_not_a_target_failure() {
    let backend = Backend::start().await;
    let responder = Responder::start().await;
    let zone = zone(backend.addr, responder.addr);
    let s = TestServer::start_with(Setup {
        zones: &[("lf.test.toml", &zone)],
        ..Setup::default()
    })
    .await;
    until(
        &s,
        "every datacenter is up",
        || {},
        |_, t, o| t["state"] == "up" && o == Observed::Up,
    )
    .await;

    // This host runs out of descriptors: every probe fails to open a
    // socket. Wait for six probes of each target, three times `fall`.
    let mut exhausted = Exhausted::new();
    let before: Vec<u64> = targets(&s).iter().map(|(t, _)| probes(t)).collect();
    let during = until(
        &s,
        "six probes of each target while out of descriptors",
        || exhausted.fill(),
        |dc, t, _| {
            let i = DCS.iter().position(|&d| d == dc).expect("known");
            probes(t) >= before[i] + 6
        },
    )
    .await;
    drop(exhausted);
    for (dc, (t, observed)) in DCS.iter().zip(&during) {
        assert_eq!(
            *observed,
            Observed::Up,
            "{dc} went down though only this host was out of descriptors: {t}"
        );
        assert_eq!(t["state"], "up", "{dc}: {t}");
        assert_eq!(t["last_result"], "local_fault", "{dc}: {t}");
        let fault = t["local_fault"].as_str().unwrap_or_default();
        assert!(fault.contains("(os error 24)"), "{dc}: {t}");
        assert!(t["local_faults"].as_u64() >= Some(6), "{dc}: {t}");
        assert!(t["last_local_fault_unix"].as_f64().is_some(), "{dc}: {t}");
        assert!(t["local_fault_since_unix"].as_f64().is_some(), "{dc}: {t}");
        assert_eq!(t["local_fault_stale"], false, "{dc}: {t}");
    }

    // Descriptors are back: the next probe passes and clears the fault.
    let after = until(
        &s,
        "the local faults clear",
        || {},
        |_, t, _| t["local_fault"].is_null() && t["last_result"] == "pass",
    )
    .await;
    for (dc, (t, observed)) in DCS.iter().zip(&after) {
        assert_eq!(*observed, Observed::Up, "{dc}: {t}");
        assert_eq!(t["state"], "up", "{dc}: {t}");
        assert!(
            t["local_faults"].as_u64() >= Some(6),
            "the count stays: {t}"
        );
        assert!(t["local_fault_since_unix"].is_null(), "{dc}: {t}");
    }

    // A real failure of the target still takes its datacenter down.
    backend.status.store(500, Ordering::SeqCst);
    let failed = until(
        &s,
        "web is down after HTTP 500s, the others up",
        || {},
        |dc, t, o| match dc {
            "web" => t["state"] == "down" && o == Observed::Down,
            _ => t["state"] == "up" && o == Observed::Up,
        },
    )
    .await;
    let (t, _) = &failed[0];
    assert_eq!(t["last_result"], "fail", "{t}");
    assert_eq!(t["last_error"], "status 500", "{t}");
    assert!(t["local_fault"].is_null(), "{t}");
}
