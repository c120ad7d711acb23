//! `type = "icmp"`: one echo request, one echo reply (IPv4 and IPv6).
//!
//! Which socket a probe opens is decided once, when the config is loaded
//! ([`choose_socket`] over [`Facts`] this process reads about itself):
//! an unprivileged datagram socket when `net.ipv4.ping_group_range`
//! admits one of the process's groups (the same setting covers ICMPv6),
//! a raw socket with `CAP_NET_RAW` otherwise, and a config error naming
//! both when neither is possible.
//!
//! Each probe opens its own socket. A datagram socket gets only its own
//! replies (the kernel sets the identifier and demultiplexes); a raw
//! socket sees every echo reply on the host, so each probe takes a fresh
//! identifier and a random sequence number, and the reply must match
//! address, identifier and sequence.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use surge_ping::{Client, Config, ICMP, IcmpPacket, PingIdentifier, PingSequence, SurgeError};

use super::{Failure, Step};
use crate::model::IcmpSocket;

/// The echo payload: it names the sender, for anyone capturing packets.
const PAYLOAD: &[u8] = b"meridian health probe....";

/// `CAP_NET_RAW`'s bit in the capability sets (linux/capability.h).
const CAP_NET_RAW: u32 = 13;

/// What decides which ICMP socket this process may open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Facts {
    /// `net.ipv4.ping_group_range` (inclusive; `lo > hi` admits no group,
    /// the kernel's default `1 0`); `None` when it cannot be read.
    pub ping_group_range: Option<(u32, u32)>,
    /// The effective group ID and the supplementary groups.
    pub groups: Vec<u32>,
    /// `CAP_NET_RAW` is in the effective capability set.
    pub cap_net_raw: bool,
}

impl Facts {
    /// Reads the facts about this process from `/proc`.
    pub fn read() -> Self {
        let range = std::fs::read_to_string("/proc/sys/net/ipv4/ping_group_range");
        let status = std::fs::read_to_string("/proc/self/status");
        Self::parse(range.as_deref().ok(), status.as_deref().unwrap_or_default())
    }

    /// The facts from the text of `ping_group_range` and of
    /// `/proc/self/status`. The kernel admits a ping socket when the
    /// effective group or a supplementary group is in the range
    /// (`ping_init_sock` in net/ipv4/ping.c).
    fn parse(range: Option<&str>, status: &str) -> Self {
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .unwrap_or_default()
        };
        let mut groups: Vec<u32> = field("Gid:")
            .split_whitespace()
            .nth(1)
            .and_then(|g| g.parse().ok())
            .into_iter()
            .collect();
        groups.extend(
            field("Groups:")
                .split_whitespace()
                .filter_map(|g| g.parse::<u32>().ok()),
        );
        let cap_net_raw = u64::from_str_radix(field("CapEff:").trim(), 16)
            .is_ok_and(|caps| caps & (1 << CAP_NET_RAW) != 0);
        Self {
            ping_group_range: range.and_then(parse_range),
            groups,
            cap_net_raw,
        }
    }
}

/// Parses `ping_group_range`'s "LOW\tHIGH".
fn parse_range(text: &str) -> Option<(u32, u32)> {
    let mut parts = text.split_whitespace();
    let lo = parts.next()?.parse().ok()?;
    let hi = parts.next()?.parse().ok()?;
    Some((lo, hi))
}

/// The socket an ICMP probe opens, or why none can be: a datagram socket
/// when a group is admitted (no privilege needed, and the kernel keeps
/// probes' replies apart), a raw one with `CAP_NET_RAW`.
pub fn choose_socket(facts: &Facts) -> Result<IcmpSocket, String> {
    if let Some((lo, hi)) = facts.ping_group_range
        && facts.groups.iter().any(|g| (lo..=hi).contains(g))
    {
        return Ok(IcmpSocket::Datagram);
    }
    if facts.cap_net_raw {
        return Ok(IcmpSocket::Raw);
    }
    let range = facts
        .ping_group_range
        .map_or("unreadable".to_string(), |(lo, hi)| {
            format!("\"{lo} {hi}\"")
        });
    let groups: Vec<String> = facts.groups.iter().map(u32::to_string).collect();
    Err(format!(
        "this process can open no ICMP socket: its groups ({}) are outside \
         `sysctl net.ipv4.ping_group_range` ({range}) and it lacks CAP_NET_RAW; \
         admit a group (e.g. `sysctl -w net.ipv4.ping_group_range=\"{} {}\"`) or \
         grant CAP_NET_RAW (e.g. AmbientCapabilities=CAP_NET_RAW in the systemd unit)",
        groups.join(", "),
        facts.groups.first().copied().unwrap_or(0),
        facts.groups.first().copied().unwrap_or(0),
    ))
}

/// A fresh identifier per probe, so that concurrent probes over raw
/// sockets (which all see every reply) never take each other's replies.
fn next_ident() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    // Start somewhere per process, so that two instances on one host
    // rarely share identifiers.
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    n.wrapping_add(std::process::id() as u16)
}

/// Sends one echo request to `target`'s address and waits (at most
/// `timeout`) for its reply.
pub(super) async fn icmp(
    target: SocketAddr,
    socket: IcmpSocket,
    timeout: Duration,
) -> Result<(), Failure> {
    let config = Config::builder()
        .kind(if target.is_ipv4() { ICMP::V4 } else { ICMP::V6 })
        .sock_type_hint(match socket {
            IcmpSocket::Datagram => socket2::Type::DGRAM,
            IcmpSocket::Raw => socket2::Type::RAW,
        })
        .build();
    let client =
        Client::new(&config).map_err(|e| Failure::io("socket", Step::Setup, &e, target))?;
    let mut pinger = client
        .pinger(target.ip(), PingIdentifier(next_ident()))
        .await;
    pinger.timeout(timeout);
    let seq = PingSequence(super::dns::probe_id());
    match pinger.ping(seq, PAYLOAD).await {
        Ok((packet, _)) => {
            // An error message quoting our request (unreachable, time
            // exceeded) is matched to it too: only an echo reply passes.
            let (kind, code, reply) = match &packet {
                IcmpPacket::V4(p) => (p.get_icmp_type().0, p.get_icmp_code().0, 0),
                IcmpPacket::V6(p) => (p.get_icmpv6_type().0, p.get_icmpv6_code().0, 129),
            };
            if kind == reply {
                Ok(())
            } else {
                Err(Failure::target(describe(target.is_ipv4(), kind, code)))
            }
        }
        Err(SurgeError::Timeout { .. }) => {
            Err(Failure::target(format!("no echo reply within {timeout:?}")))
        }
        Err(SurgeError::IOError(e)) => Err(Failure::io("send", Step::Exchange, &e, target)),
        Err(e) => Err(Failure::target(format!("icmp: {e}"))),
    }
}

/// Names an ICMP error message.
fn describe(v4: bool, kind: u8, code: u8) -> String {
    let what = match (v4, kind) {
        (true, 3) | (false, 1) => "destination unreachable",
        (true, 11) | (false, 3) => "time exceeded",
        (true, 12) | (false, 4) => "parameter problem",
        (false, 2) => "packet too big",
        _ => "unexpected ICMP message",
    };
    format!("{what} (type {kind}, code {code})")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(range: Option<(u32, u32)>, groups: &[u32], cap: bool) -> Facts {
        Facts {
            ping_group_range: range,
            groups: groups.to_vec(),
            cap_net_raw: cap,
        }
    }

    #[test]
    fn a_datagram_socket_when_a_group_is_admitted() {
        let wide = Some((0, 2_147_483_647));
        assert_eq!(
            choose_socket(&facts(wide, &[1000], false)),
            Ok(IcmpSocket::Datagram)
        );
        assert_eq!(
            choose_socket(&facts(wide, &[0], true)),
            Ok(IcmpSocket::Datagram)
        );
        // A supplementary group is enough.
        let narrow = Some((100, 100));
        assert_eq!(
            choose_socket(&facts(narrow, &[1000, 100], false)),
            Ok(IcmpSocket::Datagram)
        );
    }

    #[test]
    fn a_raw_socket_with_cap_net_raw_otherwise() {
        // The kernel's default "1 0" admits nobody.
        assert_eq!(
            choose_socket(&facts(Some((1, 0)), &[0], true)),
            Ok(IcmpSocket::Raw)
        );
        assert_eq!(choose_socket(&facts(None, &[0], true)), Ok(IcmpSocket::Raw));
        assert_eq!(
            choose_socket(&facts(Some((100, 200)), &[1000], true)),
            Ok(IcmpSocket::Raw)
        );
    }

    #[test]
    fn neither_names_the_setting_and_the_capability() {
        let e = choose_socket(&facts(Some((1, 0)), &[1000, 27], false)).expect_err("no way");
        assert!(e.contains("net.ipv4.ping_group_range"), "{e}");
        assert!(e.contains("\"1 0\""), "{e}");
        assert!(e.contains("CAP_NET_RAW"), "{e}");
        assert!(e.contains("(1000, 27)"), "{e}");
        let e = choose_socket(&facts(None, &[1000], false)).expect_err("no way");
        assert!(e.contains("unreadable"), "{e}");
    }

    #[test]
    fn proc_files_parse() {
        assert_eq!(parse_range("1\t0\n"), Some((1, 0)));
        assert_eq!(parse_range("0 2147483647"), Some((0, 2_147_483_647)));
        assert_eq!(parse_range("x"), None);
        let status = "Name:\tx\nGid:\t100\t1000\t1000\t1000\nGroups:\t27 44 \n\
                      CapInh:\t0000000000000000\nCapEff:\t0000000000002000\n";
        assert_eq!(
            Facts::parse(Some("1\t0\n"), status),
            facts(Some((1, 0)), &[1000, 27, 44], true)
        );
        let status = "Gid:\t5\t5\t5\t5\nGroups:\t\nCapEff:\t0000000000001000\n";
        assert_eq!(Facts::parse(None, status), facts(None, &[5], false));
        assert_eq!(Facts::parse(None, ""), facts(None, &[], false));
    }

    #[test]
    fn this_process_facts_are_read() {
        let f = Facts::read();
        assert!(!f.groups.is_empty());
    }

    #[test]
    fn error_messages_are_named() {
        assert_eq!(
            describe(true, 3, 1),
            "destination unreachable (type 3, code 1)"
        );
        assert_eq!(describe(false, 3, 0), "time exceeded (type 3, code 0)");
    }
}
