//! Probes: one check of one target, reported as a [`Verdict`] plus RTT. A
//! probe never decides UP or DOWN; the state machine does.
//!
//! A probe that fails tells apart the target failing from this host
//! failing to probe it ([`classify`]). Only the first may count against
//! the target: when this host runs out of file descriptors or has no route,
//! every probe fails at once, and counting those would fail every healthy
//! datacenter over in `fall` intervals.
//!
//! One module per probe type: `tcp`, `http` (http and
//! https), `dns`, [`icmp`], `grpc`, [`exec`]; [`tls`] holds what the TLS
//! probes share (the certificate's expiry, the grpc client configuration).

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

use super::Verdict;
use crate::model::{DnsProbe, HttpProbe, IcmpSocket, ProbeKind};

mod dns;
pub mod exec;
mod grpc;
mod http;
pub mod icmp;
mod tcp;
pub mod tls;

/// Most body bytes an HTTP probe reads looking for `expect_body`.
pub const BODY_LIMIT: usize = 64 * 1024;

/// The result of one probe.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    /// Passed, failed, or could not run because of this host.
    pub verdict: Verdict,
    /// Time from start to result (not counting the wait for a probe
    /// slot). For a pass: `tcp` the connect, one round trip; `dns` one
    /// query and response; `icmp` one echo request and reply; `http` a
    /// fresh connection plus the request up to the response headers (and
    /// the body with `expect_body`), two round trips or more, and `https`
    /// the TLS handshake on top; `grpc` a fresh HTTP/2 connection (and
    /// TLS handshake) plus one call; `exec` the command's run time. See
    /// [`super::rtt`].
    pub rtt: Duration,
    /// Why it did not pass.
    pub error: Option<String>,
    /// Spare capacity the target reported (HTTP probes, header
    /// [`CAPACITY_HEADER`]), in percent.
    pub capacity: Option<u8>,
    /// When the server certificate expires (https, and grpc with TLS),
    /// whether or not the probe passed; `None` when no handshake got
    /// that far.
    pub cert_not_after: Option<SystemTime>,
}

/// The response header in which an HTTP probe target reports its spare
/// capacity: a percentage (`75` or `75%`), and optionally the agent-check
/// words `up`, `down` (the probe fails) and `drain` (capacity 0).
pub const CAPACITY_HEADER: &str = "meridian-capacity";

/// Parses a [`CAPACITY_HEADER`] value: `Ok(None)` when it says nothing
/// usable, `Err` for `down`.
pub fn parse_capacity(value: &str) -> Result<Option<u8>, String> {
    let mut capacity = None;
    for word in value
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|w| !w.is_empty())
    {
        match word.to_ascii_lowercase().as_str() {
            "down" | "fail" | "stopped" => return Err(format!("target reports {word:?}")),
            "drain" | "maint" => capacity = Some(0),
            "up" | "ready" => capacity = capacity.or(Some(100)),
            w => {
                if let Ok(p) = w.trim_end_matches('%').parse::<u8>()
                    && p <= 100
                {
                    capacity = Some(p);
                }
            }
        }
    }
    Ok(capacity)
}

//------------ Local faults ------------------------------------------------

/// Whose fault a probe error is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The target's (or the network's beyond this host): it counts.
    Target,
    /// This host's: it says nothing about the target.
    Local,
}

/// Where in a probe an I/O error arose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Creating or binding a socket, or connecting a UDP socket (a route
    /// lookup): nothing has been sent, so any error is this host's.
    Setup,
    /// Connecting, sending or receiving (or somewhere inside the HTTP
    /// client): the error may come from the target.
    Exchange,
}

/// Classifies an I/O error `errno` at `step`. `has_route` is asked only
/// for "unreachable" errors, which both this host's routing table and an
/// ICMP message from a router near the target (or a failed ARP lookup on
/// the target's own link) produce; only the first is this host's fault.
///
/// Local at [`Step::Exchange`]:
/// * out of resources: `EMFILE`, `ENFILE` (descriptors), `ENOBUFS`,
///   `ENOMEM`;
/// * no local address or port to connect from: `EADDRNOTAVAIL`,
///   `EADDRINUSE`;
/// * a local firewall: `EPERM`, `EACCES` (remote rejections arrive as ICMP
///   and map to refused or unreachable, never to these);
/// * `ENETUNREACH`, `EHOSTUNREACH`, `ENETDOWN` when `has_route()` says
///   this host has no route to the target.
///
/// Everything else (refused, reset, timed out, ...) is the target's.
pub fn classify(errno: i32, step: Step, has_route: impl FnOnce() -> bool) -> Fault {
    if step == Step::Setup {
        return Fault::Local;
    }
    match errno {
        libc::EMFILE
        | libc::ENFILE
        | libc::ENOBUFS
        | libc::ENOMEM
        | libc::EADDRNOTAVAIL
        | libc::EADDRINUSE
        | libc::EPERM
        | libc::EACCES => Fault::Local,
        libc::ENETUNREACH | libc::EHOSTUNREACH | libc::ENETDOWN => {
            if has_route() {
                Fault::Target
            } else {
                Fault::Local
            }
        }
        _ => Fault::Target,
    }
}

/// Whether this host has a route to `target`: a UDP socket's connect
/// looks the route up without sending anything. `false` too when no
/// socket can be had.
pub fn has_route(target: SocketAddr) -> bool {
    std::net::UdpSocket::bind(unspecified(target))
        .and_then(|s| s.connect(target))
        .is_ok()
}

/// The wildcard address of `target`'s family, port 0.
pub(super) fn unspecified(target: SocketAddr) -> SocketAddr {
    if target.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    }
}

/// The OS error number somewhere in `e`'s chain of sources, including
/// inside `io::Error`s that wrap another error (as the HTTP client's
/// connect errors do).
pub fn os_error(e: &(dyn std::error::Error + 'static)) -> Option<i32> {
    let mut next = Some(e);
    while let Some(err) = next {
        if let Some(io) = err.downcast_ref::<io::Error>() {
            if let Some(code) = io.raw_os_error() {
                return Some(code);
            }
            if let Some(inner) = io.get_ref() {
                next = Some(inner);
                continue;
            }
        }
        next = err.source();
    }
    None
}

/// Why a probe did not pass.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Failure {
    fault: Fault,
    reason: String,
}

impl Failure {
    /// The target's failure.
    fn target(reason: impl Into<String>) -> Self {
        Self {
            fault: Fault::Target,
            reason: reason.into(),
        }
    }

    /// This host's failure.
    fn local(reason: impl Into<String>) -> Self {
        Self {
            fault: Fault::Local,
            reason: reason.into(),
        }
    }

    /// An I/O error of `what` (a socket call) at `step` of a probe of
    /// `target`.
    fn io(what: &str, step: Step, e: &io::Error, target: SocketAddr) -> Self {
        let fault = match e.raw_os_error() {
            Some(errno) => classify(errno, step, || has_route(target)),
            None if step == Step::Setup => Fault::Local,
            None => Fault::Target,
        };
        Self {
            fault,
            reason: format!("{what}: {e}"),
        }
    }
}

/// What a probe saw of its target besides pass or fail.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Seen {
    /// The end of the server certificate's validity (TLS probes).
    pub cert_not_after: Option<SystemTime>,
}

impl Seen {
    /// Notes the server's end-entity certificate (DER), when there is one
    /// and its validity can be read.
    fn certificate(&mut self, der: Option<&[u8]>) {
        if let Some(t) = der.and_then(tls::not_after) {
            self.cert_not_after = Some(t);
        }
    }

    /// Fails when the certificate seen expires in fewer than `min` days.
    fn check_cert_days(&self, min: Option<u32>) -> Result<(), Failure> {
        let (Some(min), Some(not_after)) = (min, self.cert_not_after) else {
            return Ok(());
        };
        let days = tls::days_left(not_after, SystemTime::now());
        if days >= i64::from(min) {
            return Ok(());
        }
        Err(Failure::target(tls::expiry_error(days, min)))
    }
}

/// A ready-to-run probe for one target.
#[derive(Debug)]
pub enum Prober {
    /// TCP connect.
    Tcp,
    /// HTTP(S) request.
    Http {
        /// Client bound to the target (connects to it whatever the URL's
        /// host is).
        client: reqwest::Client,
        /// Request URL.
        url: String,
        /// Settings.
        spec: HttpProbe,
    },
    /// DNS query.
    Dns(DnsProbe),
    /// ICMP echo.
    Icmp(IcmpSocket),
    /// gRPC health check.
    Grpc(grpc::Grpc),
    /// An operator's command.
    Exec(exec::Exec),
    /// Nothing to run: state comes from the admin API.
    External,
}

/// Installs the process-wide TLS crypto provider (ring) once.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Where a probe runs: its zone and datacenter, for the environment of
/// `exec` probes.
#[derive(Clone, Copy, Debug)]
pub struct Context<'a> {
    /// The zone's origin.
    pub zone: &'a str,
    /// The datacenter's name.
    pub datacenter: &'a str,
}

impl Prober {
    /// Prepares a probe of `kind` for `target` in `ctx`.
    pub fn new(
        kind: &ProbeKind,
        target: SocketAddr,
        timeout: Duration,
        ctx: Context<'_>,
    ) -> Result<Self, String> {
        Ok(match kind {
            ProbeKind::Tcp => Self::Tcp,
            ProbeKind::External => Self::External,
            ProbeKind::Dns(d) => Self::Dns(d.clone()),
            ProbeKind::Icmp(i) => Self::Icmp(i.socket),
            ProbeKind::Grpc(g) => Self::Grpc(grpc::Grpc::new(g, target)?),
            ProbeKind::Exec(e) => Self::Exec(exec::Exec::new(e, target, timeout, ctx)),
            ProbeKind::Http(spec) => {
                let (client, url) = http::client(spec, target, timeout)?;
                Self::Http {
                    client,
                    url,
                    spec: spec.clone(),
                }
            }
        })
    }

    /// Runs the probe once, bounded by `timeout`.
    pub async fn run(&self, target: SocketAddr, timeout: Duration) -> Outcome {
        let start = Instant::now();
        let mut seen = Seen::default();
        let result =
            match tokio::time::timeout(timeout, self.check(target, timeout, &mut seen)).await {
                Ok(r) => r,
                Err(_) => Err(Failure::target(format!("timed out after {timeout:?}"))),
            };
        let rtt = start.elapsed();
        let (verdict, error, capacity) = match result {
            Ok(capacity) => (Verdict::Pass, None, capacity),
            Err(f) => (
                match f.fault {
                    Fault::Target => Verdict::Fail,
                    Fault::Local => Verdict::LocalFault,
                },
                Some(f.reason),
                None,
            ),
        };
        Outcome {
            verdict,
            rtt,
            error,
            capacity,
            cert_not_after: seen.cert_not_after,
        }
    }

    async fn check(
        &self,
        target: SocketAddr,
        timeout: Duration,
        seen: &mut Seen,
    ) -> Result<Option<u8>, Failure> {
        match self {
            Self::External => Err(Failure::local("external targets are not probed")),
            Self::Tcp => tcp::tcp(target).await.map(|()| None),
            Self::Http { client, url, spec } => http::http(client, url, spec, target, seen).await,
            Self::Dns(d) => dns::dns(target, &d.name, d.qtype, d.rcode)
                .await
                .map(|()| None),
            Self::Icmp(socket) => icmp::icmp(target, *socket, timeout).await.map(|()| None),
            Self::Grpc(g) => g.check(target, seen).await.map(|()| None),
            Self::Exec(e) => e.run().await.map(|()| None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A route check that must not be asked.
    fn unasked() -> bool {
        panic!("the route check is only for unreachable errors")
    }

    #[test]
    fn resource_address_and_firewall_errors_are_local() {
        for errno in [
            libc::EMFILE,
            libc::ENFILE,
            libc::ENOBUFS,
            libc::ENOMEM,
            libc::EADDRNOTAVAIL,
            libc::EADDRINUSE,
            libc::EPERM,
            libc::EACCES,
        ] {
            assert_eq!(
                classify(errno, Step::Exchange, unasked),
                Fault::Local,
                "{}",
                io::Error::from_raw_os_error(errno)
            );
        }
    }

    #[test]
    fn what_the_target_or_its_network_does_is_the_targets_fault() {
        for errno in [
            libc::ECONNREFUSED,
            libc::ECONNRESET,
            libc::ETIMEDOUT,
            libc::EPIPE,
            libc::ECONNABORTED,
            libc::EPROTO,
        ] {
            assert_eq!(
                classify(errno, Step::Exchange, unasked),
                Fault::Target,
                "{}",
                io::Error::from_raw_os_error(errno)
            );
        }
    }

    #[test]
    fn unreachable_is_local_only_without_a_route_from_here() {
        for errno in [libc::ENETUNREACH, libc::EHOSTUNREACH, libc::ENETDOWN] {
            // No route in this host's table: our fault.
            assert_eq!(classify(errno, Step::Exchange, || false), Fault::Local);
            // A route, and still unreachable: an ICMP error from near the
            // target, or no ARP answer on its link. The target is gone.
            assert_eq!(classify(errno, Step::Exchange, || true), Fault::Target);
        }
    }

    #[test]
    fn any_error_before_sending_is_local() {
        for errno in [libc::EMFILE, libc::EAFNOSUPPORT, libc::ECONNREFUSED, 0] {
            assert_eq!(classify(errno, Step::Setup, unasked), Fault::Local);
        }
        let e = io::Error::other("no errno");
        let target: SocketAddr = (Ipv4Addr::LOCALHOST, 1).into();
        assert_eq!(
            Failure::io("bind", Step::Setup, &e, target).fault,
            Fault::Local
        );
        assert_eq!(
            Failure::io("recv", Step::Exchange, &e, target).fault,
            Fault::Target
        );
        let emfile = io::Error::from_raw_os_error(libc::EMFILE);
        let f = Failure::io("socket", Step::Setup, &emfile, target);
        assert_eq!(f.fault, Fault::Local);
        assert!(f.reason.starts_with("socket: "), "{}", f.reason);
        assert!(f.reason.ends_with("(os error 24)"), "{}", f.reason);
    }

    /// An error with a source, like the HTTP client's layers.
    #[derive(Debug)]
    struct Layer(Box<dyn std::error::Error + Send + Sync>);

    impl std::fmt::Display for Layer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("layer")
        }
    }

    impl std::error::Error for Layer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&*self.0)
        }
    }

    #[test]
    fn the_os_error_is_found_under_layers_and_inside_io_errors() {
        let emfile = || io::Error::from_raw_os_error(libc::EMFILE);
        assert_eq!(os_error(&emfile()), Some(libc::EMFILE));
        let layered = Layer(Box::new(Layer(Box::new(emfile()))));
        assert_eq!(os_error(&layered), Some(libc::EMFILE));
        // An io::Error that wraps an error that holds the OS error.
        let wrapped = io::Error::other(Layer(Box::new(emfile())));
        assert_eq!(os_error(&Layer(Box::new(wrapped))), Some(libc::EMFILE));
        assert_eq!(os_error(&io::Error::other("none")), None);
        assert_eq!(os_error(&Layer(Box::new(io::Error::other("none")))), None);
    }

    /// A loopback port nothing listens on (bound, then closed).
    pub(super) fn closed_port() -> SocketAddr {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    }

    #[tokio::test]
    async fn a_refused_tcp_probe_fails_the_target() {
        let target = closed_port();
        let o = Prober::Tcp.run(target, Duration::from_secs(2)).await;
        assert_eq!(o.verdict, Verdict::Fail, "{o:?}");
        assert!(
            o.error
                .as_deref()
                .is_some_and(|e| e.starts_with("connect: ")),
            "{o:?}"
        );
    }

    #[test]
    fn loopback_has_a_route() {
        assert!(has_route((Ipv4Addr::LOCALHOST, 53).into()));
    }
}
