//! Probes: one check of one target, reported as pass/fail plus RTT. A
//! probe never decides UP or DOWN; the state machine does.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::dns::records::DomainName;
use crate::model::{DnsProbe, HttpMethod, HttpProbe, ProbeKind};

/// Most body bytes an HTTP probe reads looking for `expect_body`.
pub const BODY_LIMIT: usize = 64 * 1024;

/// The result of one probe.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    /// Passed.
    pub ok: bool,
    /// Time from start to result.
    pub rtt: Duration,
    /// Why it failed.
    pub error: Option<String>,
    /// Spare capacity the target reported (HTTP probes, header
    /// [`CAPACITY_HEADER`]), in percent.
    pub capacity: Option<u8>,
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
    /// Nothing to run: state comes from the admin API.
    External,
}

/// Installs the process-wide TLS crypto provider (ring) once.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl Prober {
    /// Prepares a probe of `kind` for `target`.
    pub fn new(kind: &ProbeKind, target: SocketAddr, timeout: Duration) -> Result<Self, String> {
        Ok(match kind {
            ProbeKind::Tcp => Self::Tcp,
            ProbeKind::External => Self::External,
            ProbeKind::Dns(d) => Self::Dns(d.clone()),
            ProbeKind::Http(spec) => {
                install_crypto_provider();
                let scheme = if spec.tls { "https" } else { "http" };
                let mut builder = reqwest::Client::builder()
                    .timeout(timeout)
                    .connect_timeout(timeout)
                    .redirect(reqwest::redirect::Policy::none())
                    .no_proxy()
                    // A fresh connection per probe: a dead server is seen
                    // at once, not when a pooled connection times out.
                    .pool_max_idle_per_host(0)
                    .user_agent(concat!("meridian-probe/", env!("CARGO_PKG_VERSION")));
                if spec.tls && !spec.tls_verify {
                    builder = builder.tls_danger_accept_invalid_certs(true);
                }
                let url = match &spec.host {
                    Some(host) => {
                        builder = builder.resolve(host, target);
                        format!("{scheme}://{host}:{}{}", target.port(), spec.path)
                    }
                    None => format!("{scheme}://{target}{}", spec.path),
                };
                let client = builder.build().map_err(|e| format!("HTTP client: {e}"))?;
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
        let result = match tokio::time::timeout(timeout, self.check(target)).await {
            Ok(r) => r,
            Err(_) => Err(format!("timed out after {timeout:?}")),
        };
        let rtt = start.elapsed();
        match result {
            Ok(capacity) => Outcome {
                ok: true,
                rtt,
                error: None,
                capacity,
            },
            Err(e) => Outcome {
                ok: false,
                rtt,
                error: Some(e),
                capacity: None,
            },
        }
    }

    async fn check(&self, target: SocketAddr) -> Result<Option<u8>, String> {
        match self {
            Self::External => Err("external targets are not probed".into()),
            Self::Tcp => tokio::net::TcpStream::connect(target)
                .await
                .map(|_| None)
                .map_err(|e| format!("connect: {e}")),
            Self::Http { client, url, spec } => http(client, url, spec).await,
            Self::Dns(d) => dns(target, &d.name, d.qtype, d.rcode).await.map(|()| None),
        }
    }
}

async fn http(client: &reqwest::Client, url: &str, spec: &HttpProbe) -> Result<Option<u8>, String> {
    let request = match spec.method {
        HttpMethod::Get => client.get(url),
        HttpMethod::Head => client.head(url),
    };
    let mut response = request.send().await.map_err(|e| describe(&e))?;
    let status = response.status().as_u16();
    if !spec
        .expect_status
        .iter()
        .any(|&(lo, hi)| (lo..=hi).contains(&status))
    {
        return Err(format!("status {status}"));
    }
    let capacity = match response.headers().get(CAPACITY_HEADER) {
        Some(v) => parse_capacity(v.to_str().unwrap_or(""))?,
        None => None,
    };
    let Some(needle) = &spec.expect_body else {
        return Ok(capacity);
    };
    let mut body = Vec::new();
    while body.len() < BODY_LIMIT {
        match response.chunk().await.map_err(|e| describe(&e))? {
            Some(chunk) => body.extend_from_slice(&chunk),
            None => break,
        }
    }
    body.truncate(BODY_LIMIT);
    let found = body
        .windows(needle.len().max(1))
        .any(|w| w == needle.as_bytes());
    if found {
        Ok(capacity)
    } else {
        Err(format!(
            "body does not contain {needle:?} (first {} bytes read)",
            body.len()
        ))
    }
}

/// reqwest's error chain in one line.
fn describe(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

async fn dns(target: SocketAddr, name: &DomainName, qtype: u16, want: u8) -> Result<(), String> {
    let bind: SocketAddr = if target.is_ipv4() {
        "0.0.0.0:0".parse().expect("valid")
    } else {
        "[::]:0".parse().expect("valid")
    };
    let socket = tokio::net::UdpSocket::bind(bind)
        .await
        .map_err(|e| format!("bind: {e}"))?;
    socket
        .connect(target)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let id = probe_id();
    let query = crate::dns::probe_query(name, qtype, id)?;
    socket
        .send(&query)
        .await
        .map_err(|e| format!("send: {e}"))?;
    let mut buf = vec![0u8; 4096];
    loop {
        let n = socket
            .recv(&mut buf)
            .await
            .map_err(|e| format!("receive: {e}"))?;
        // Ignore stray datagrams; the timeout bounds the wait.
        if let Some(rcode) = crate::dns::response_rcode(&buf[..n], id) {
            return if rcode == want {
                Ok(())
            } else {
                Err(format!("rcode {rcode}, expected {want}"))
            };
        }
    }
}

/// A query ID that differs between probes.
fn probe_id() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    ((n.wrapping_mul(0x9e37_79b9) ^ t) >> 8) as u16
}
