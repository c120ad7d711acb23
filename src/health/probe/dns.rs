//! `type = "dns"`: a query and an expected response code.

use std::net::SocketAddr;

use super::{Failure, Step, unspecified};
use crate::dns::records::DomainName;

pub(super) async fn dns(
    target: SocketAddr,
    name: &DomainName,
    qtype: u16,
    want: u8,
) -> Result<(), Failure> {
    let socket = tokio::net::UdpSocket::bind(unspecified(target))
        .await
        .map_err(|e| Failure::io("bind", Step::Setup, &e, target))?;
    // A UDP connect only looks up the route: its errors are this host's.
    socket
        .connect(target)
        .await
        .map_err(|e| Failure::io("connect", Step::Setup, &e, target))?;
    let id = probe_id();
    // A query that cannot be built is not the target's fault.
    let query = crate::dns::probe_query(name, qtype, id).map_err(Failure::local)?;
    socket
        .send(&query)
        .await
        .map_err(|e| Failure::io("send", Step::Exchange, &e, target))?;
    let mut buf = vec![0u8; 4096];
    loop {
        let n = socket
            .recv(&mut buf)
            .await
            .map_err(|e| Failure::io("receive", Step::Exchange, &e, target))?;
        // Ignore stray datagrams; the timeout bounds the wait.
        if let Some(rcode) = crate::dns::response_rcode(&buf[..n], id) {
            return if rcode == want {
                Ok(())
            } else {
                Err(Failure::target(format!("rcode {rcode}, expected {want}")))
            };
        }
    }
}

/// A query ID that differs between probes.
pub(super) fn probe_id() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    ((n.wrapping_mul(0x9e37_79b9) ^ t) >> 8) as u16
}
