//! UDP and TCP serving loops over pre-bound sockets.
//!
//! Each UDP socket has one loop that receives, answers and sends without
//! spawning a task or crossing a channel: answering is synchronous and
//! cheap, so a task per packet would only add cost. Each TCP connection
//! gets a task (bounded by a semaphore) that reads length-prefixed queries
//! (RFC 1035 §4.2.2), answers them in order and closes after an idle
//! timeout (RFC 7766 §6.2.3).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::handler::{Transport, handle};
use crate::snapshot::Snapshot;

/// TCP limits.
#[derive(Clone, Copy, Debug)]
pub struct TcpSettings {
    /// Close a connection idle this long.
    pub idle_timeout: Duration,
    /// Concurrent connections per listener.
    pub max_connections: u32,
}

/// Serves UDP on `socket` until `token` is cancelled.
pub async fn serve_udp(socket: UdpSocket, state: Arc<ArcSwap<Snapshot>>, token: CancellationToken) {
    // Large enough for any datagram; EDNS clients may send big queries.
    let mut buf = vec![0u8; 65_535];
    loop {
        let (len, src) = tokio::select! {
            () = token.cancelled() => return,
            r = socket.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(e) => {
                    // E.g. ICMP port unreachable reported on the socket;
                    // never fatal for a server.
                    tracing::debug!(error = %e, "udp receive error");
                    continue;
                }
            },
        };
        if src.port() == 0 {
            continue; // cannot be answered; often spoofed
        }
        let response = {
            let snap = state.load();
            handle(&snap, &buf[..len], src.ip(), Transport::Udp)
        };
        if let Some(bytes) = response
            && let Err(e) = socket.send_to(&bytes, src).await
        {
            tracing::debug!(error = %e, %src, "udp send error");
        }
    }
}

/// Accepts TCP connections on `listener` until `token` is cancelled.
pub async fn serve_tcp(
    listener: TcpListener,
    state: Arc<ArcSwap<Snapshot>>,
    settings: TcpSettings,
    token: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(settings.max_connections as usize));
    let tracker = TaskTracker::new();
    loop {
        // Wait for a free slot before accepting, so excess clients queue in
        // the kernel backlog instead of being accepted and starved.
        let permit = tokio::select! {
            () = token.cancelled() => break,
            p = Arc::clone(&permits).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            () = token.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::debug!(error = %e, "tcp accept error");
                    // E.g. EMFILE: back off briefly instead of spinning.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let state = Arc::clone(&state);
        let token = token.clone();
        tracker.spawn(async move {
            tokio::select! {
                () = token.cancelled() => {}
                () = connection(stream, peer, state, settings.idle_timeout) => {}
            }
            drop(permit);
        });
    }
    tracker.close();
    tracker.wait().await;
}

async fn connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    state: Arc<ArcSwap<Snapshot>>,
    idle: Duration,
) {
    let _ = stream.set_nodelay(true);
    let mut buf = Vec::with_capacity(512);
    loop {
        let mut len = [0u8; 2];
        match tokio::time::timeout(idle, stream.read_exact(&mut len)).await {
            Ok(Ok(_)) => {}
            _ => return, // EOF, error or idle timeout
        }
        let len = usize::from(u16::from_be_bytes(len));
        buf.resize(len, 0);
        // A client that sends a length and then stalls is idle too.
        match tokio::time::timeout(idle, stream.read_exact(&mut buf)).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        if len < 12 {
            return; // not DNS; nothing sensible to answer
        }
        let response = {
            let snap = state.load();
            handle(&snap, &buf, peer.ip(), Transport::Tcp)
        };
        let Some(bytes) = response else { continue };
        let Ok(n) = u16::try_from(bytes.len()) else {
            return;
        };
        let mut out = Vec::with_capacity(bytes.len() + 2);
        out.extend_from_slice(&n.to_be_bytes());
        out.extend_from_slice(&bytes);
        if stream.write_all(&out).await.is_err() {
            return;
        }
    }
}
