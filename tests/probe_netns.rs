//! ICMP probes over a real link that goes down: a network namespace
//! joined to this host by a veth pair, its address probed with ICMP echo
//! by the real server. The test takes the link down inside the namespace,
//! the datacenter goes DOWN and the answers move to the backup; it brings
//! the link up, and the datacenter comes back.
//!
//! Its own test binary: it needs root (namespaces, links) and changes this
//! host's network configuration while it runs. Without root, or without
//! `ip` (iproute2), it fails and says so: it never passes silently.
//!
//! Each namespace `mrdi-<pid>-<n>` is joined by the link `mrdi<pid>x<n>` (host
//! side `198.19.<n>.1/30`, namespace side `198.19.<n>.2/30`: RFC 2544
//! benchmarking space, a block `n` no address or route uses; 198.19 so as
//! not to meet `tests/netns_latency.rs`'s 198.18 blocks). [`Lab`]'s `Drop`
//! kills whatever runs in the namespace, by PID, and removes it and the
//! link, also after a panic.

#![allow(unreachable_pub, missing_docs)]

#[allow(dead_code)]
#[path = "integration/harness.rs"]
mod harness;

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::Command;
use std::time::Duration;

use hickory_proto::rr::RecordType;
use serde_json::Value;

use harness::{TestServer, a_answers, poll, zone_head};

fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "probe_netns: {line}");
}

/// Runs `program args`; `Err(stderr)` when it fails. A missing program
/// fails the test: iproute2 is a requirement.
fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let out = match Command::new(program).args(args).output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "`{program}` not found: install iproute2 (Debian: apt-get install iproute2) \
             to run this test"
        ),
        Err(e) => panic!("cannot run {program}: {e}"),
    };
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`{program} {}`: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn must(program: &str, args: &[&str]) -> String {
    run(program, args).unwrap_or_else(|e| panic!("{e}"))
}

/// A namespace and its link; removed on drop.
struct Lab {
    ns: String,
    host_if: String,
    peer: Ipv4Addr,
}

impl Lab {
    fn create() -> Self {
        // SAFETY: geteuid cannot fail and touches no memory.
        let euid = unsafe { libc::geteuid() };
        assert_eq!(
            euid, 0,
            "this test needs root: it creates a network namespace and a veth link \
             (run it as root, e.g. in CI's container)"
        );
        must("ip", &["-V"]);
        // Labs of tests running side by side: one at a time picks its
        // block and adds its addresses, each with its own number.
        static CREATING: std::sync::Mutex<u32> = std::sync::Mutex::new(0);
        let mut next = CREATING.lock().unwrap_or_else(|e| e.into_inner());
        *next += 1;
        let pid = std::process::id();
        let block = free_block();
        let lab = Self {
            ns: format!("mrdi-{pid}-{next}"),
            host_if: format!("mrdi{pid}x{next}"),
            peer: Ipv4Addr::new(198, 19, block, 2),
        };
        must("ip", &["netns", "add", &lab.ns]);
        // From here on `Drop` cleans up, whatever fails next.
        #[rustfmt::skip]
        must("ip", &["link", "add", &lab.host_if, "type", "veth", "peer", "name", "veth0", "netns", &lab.ns]);
        let host = format!("198.19.{block}.1/30");
        let peer = format!("{}/30", lab.peer);
        must("ip", &["addr", "add", &host, "dev", &lab.host_if]);
        must("ip", &["link", "set", &lab.host_if, "up"]);
        must("ip", &["-n", &lab.ns, "addr", "add", &peer, "dev", "veth0"]);
        must("ip", &["-n", &lab.ns, "link", "set", "veth0", "up"]);
        must("ip", &["-n", &lab.ns, "link", "set", "lo", "up"]);
        say(&format!(
            "namespace {} at {} via {}",
            lab.ns, lab.peer, lab.host_if
        ));
        lab
    }

    /// Takes the namespace's side of the link down or up.
    fn link(&self, up: bool) {
        let state = if up { "up" } else { "down" };
        must("ip", &["-n", &self.ns, "link", "set", "veth0", state]);
        say(&format!("link in {} is {state}", self.ns));
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for pid in run("ip", &["netns", "pids", &self.ns])
            .unwrap_or_default()
            .split_whitespace()
        {
            if let Ok(pid) = pid.parse::<i32>() {
                // SAFETY: kill(2) with a PID listed as running in our
                // namespace; no memory is involved.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        let _ = run("ip", &["netns", "del", &self.ns]);
        // The host side goes with its peer's namespace; make sure.
        let _ = run("ip", &["link", "del", &self.host_if]);
    }
}

/// A third octet of 198.19.0.0/16 whose /30 at `.0` no address or route
/// on this host uses, starting at one derived from the PID.
fn free_block() -> u8 {
    let used = must("ip", &["-4", "-o", "addr", "show"]) + &must("ip", &["-4", "route", "show"]);
    let start = std::process::id() as usize % 256;
    (0..256)
        .map(|k| ((start + k) % 256) as u8)
        .find(|&b| !used.contains(&format!("198.19.{b}.")))
        .expect("a free block in 198.19.0.0/16")
}

const ORIGIN: &str = "icmp.test.";

fn zone(target: Ipv4Addr) -> String {
    // The head's TTL 3600 and SOA minimum 60 are the defaults.
    format!(
        r#"{head}
[datacenters.far]
addresses = ["192.0.2.1"]
probe = {{ type = "icmp", targets = ["{target}"], interval = "200ms", timeout = "150ms", rise = 2, fall = 2 }}
[datacenters.backup]
addresses = ["192.0.2.99"]
[services.www]
policy = "failover"
datacenters = ["far", "backup"]
"#,
        head = zone_head(ORIGIN),
    )
}

fn far(s: &TestServer) -> Value {
    let status = s.server.monitor().status();
    status["zones"][0]["datacenters"]
        .as_array()
        .and_then(|all| all.iter().find(|d| d["name"] == "far").cloned())
        .unwrap_or_else(|| panic!("no datacenter far in {status}"))
}

/// Polls until `far`'s target is in `state` and `www` answers `answer`,
/// for at most 15 s.
async fn until(s: &TestServer, state: &str, answer: &str) {
    let what = format!("far {state} and answer {answer}");
    let d = poll(Duration::from_secs(15), &what, async || {
        let d = far(s);
        let got = a_answers(&s.ask(&format!("www.{ORIGIN}"), RecordType::A, None).await);
        if d["targets"][0]["state"] == state && got == [answer] {
            Ok(d)
        } else {
            Err(format!("got {got:?}; {d:#}"))
        }
    })
    .await;
    say(&format!(
        "far is {state} ({}), www answers {answer}",
        d["targets"][0]["last_error"]
    ));
}

#[tokio::test]
async fn icmp_follows_a_link_going_down_and_up() {
    let lab = Lab::create();
    let s = TestServer::start(&[("icmp.test.toml", &zone(lab.peer))]).await;
    until(&s, "up", "192.0.2.1").await;

    lab.link(false);
    until(&s, "down", "192.0.2.99").await;
    let d = far(&s);
    let error = d["targets"][0]["last_error"].as_str().unwrap_or_default();
    assert!(!error.is_empty(), "{d:#}");
    // The target's fault, not this host's: it counted.
    assert_eq!(d["targets"][0]["last_result"], "fail", "{d:#}");

    lab.link(true);
    until(&s, "up", "192.0.2.1").await;
    drop(s);
    drop(lab);
}

/// Runs `f` on a thread that has joined network namespace `ns`, on a
/// runtime of its own there: the sockets it opens live in `ns`.
fn in_namespace<T: Send>(ns: &str, f: impl AsyncFnOnce() -> T + Send) -> T {
    let path = format!("/var/run/netns/{ns}");
    std::thread::scope(|s| {
        s.spawn(|| {
            let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            // SAFETY: setns(2) with a valid namespace descriptor; it moves
            // only this thread, which ends after `f`.
            let rc =
                unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&file), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(f())
        })
        .join()
        .expect("namespace thread")
    })
}

/// Unprivileged datagram ICMP sockets, where `ping_group_range` admits
/// this process's group: in a namespace of its own (the setting is per
/// namespace), so this host's setting stays as it is. Several probes of
/// one address at once each get their own reply.
#[test]
fn datagram_icmp_sockets_where_ping_group_range_allows_them() {
    use meridian::health::Verdict;
    use meridian::health::probe::icmp::{Facts, choose_socket};
    use meridian::health::probe::{Context, Prober};
    use meridian::model::{IcmpProbe, IcmpSocket, ProbeKind};

    let lab = Lab::create();
    must(
        "ip",
        &[
            "netns",
            "exec",
            &lab.ns,
            "sysctl",
            "-q",
            "-w",
            "net.ipv4.ping_group_range=0 4294967294",
        ],
    );
    // The decision, from facts as the namespace shows them.
    let facts = in_namespace(&lab.ns, async || Facts::read());
    assert_eq!(
        facts.ping_group_range,
        Some((0, 4_294_967_294)),
        "{facts:?}"
    );
    assert_eq!(choose_socket(&facts), Ok(IcmpSocket::Datagram));
    // And the kernel agrees: a datagram ICMP socket opens there.
    in_namespace(&lab.ns, async || {
        for (domain, protocol) in [
            (socket2::Domain::IPV4, socket2::Protocol::ICMPV4),
            (socket2::Domain::IPV6, socket2::Protocol::ICMPV6),
        ] {
            socket2::Socket::new(domain, socket2::Type::DGRAM, Some(protocol))
                .unwrap_or_else(|e| panic!("datagram ICMP socket ({domain:?}): {e}"));
        }
    });

    let kind = ProbeKind::Icmp(IcmpProbe {
        socket: IcmpSocket::Datagram,
    });
    let ctx = Context {
        zone: "icmp.test.",
        datacenter: "far",
    };
    let outcomes = in_namespace(&lab.ns, async || {
        let mut set = tokio::task::JoinSet::new();
        for target in ["127.0.0.1:0", "[::1]:0", "127.0.0.1:0", "[::1]:0"]
            .into_iter()
            .cycle()
            .take(16)
        {
            let target: std::net::SocketAddr = target.parse().expect("addr");
            let prober = Prober::new(&kind, target, Duration::from_secs(2), ctx).expect("prober");
            set.spawn(async move { prober.run(target, Duration::from_secs(2)).await });
        }
        set.join_all().await
    });
    for o in &outcomes {
        assert_eq!(o.verdict, Verdict::Pass, "{outcomes:?}");
    }
    say(&format!("{} datagram ICMP probes passed", outcomes.len()));
    drop(lab);
}
