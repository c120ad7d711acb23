//! UDP and TCP serving loops over pre-bound sockets.
//!
//! Each UDP socket has one OS thread that receives, answers and sends
//! without spawning a task or crossing a channel: answering is synchronous
//! and cheap, so an async task per packet would only add cost. There is one
//! socket per serving thread and listen address, all bound with
//! `SO_REUSEPORT`. Each TCP connection gets a tokio task (bounded by a
//! semaphore) that reads length-prefixed queries (RFC 1035 §4.2.2),
//! answers them in order and closes after an idle timeout (RFC 7766
//! §6.2.3).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::io::{BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::handler::{Transport, handle_into};
use super::rrl::Limiter;
use crate::snapshot::Snapshot;

/// TCP limits.
#[derive(Clone, Copy, Debug)]
pub struct TcpSettings {
    /// Close a connection idle this long.
    pub idle_timeout: Duration,
    /// Concurrent connections per listener.
    pub max_connections: u32,
}

/// How often a blocked UDP thread wakes to check for shutdown.
const UDP_SHUTDOWN_POLL: Duration = Duration::from_millis(200);

/// Serves UDP on `socket` on the calling thread until `token` is
/// cancelled: receive, answer, send, with one receive buffer and one
/// response buffer reused for every query. Run one per core, each on its
/// own `SO_REUSEPORT` socket, so the kernel spreads clients over them.
pub fn serve_udp(
    socket: std::net::UdpSocket,
    state: Arc<ArcSwap<Snapshot>>,
    rrl: Arc<Limiter>,
    token: CancellationToken,
) {
    if let Err(e) = socket.set_read_timeout(Some(UDP_SHUTDOWN_POLL)) {
        tracing::error!(error = %e, "cannot set the UDP read timeout; this thread will not stop on shutdown");
    }
    #[cfg(target_os = "linux")]
    {
        super::batch::serve(&socket, &state, &rrl, &token);
    }
    #[cfg(not(target_os = "linux"))]
    serve_udp_simple(socket, state, rrl, token);
}

/// One query per system call: the portable loop.
#[cfg(not(target_os = "linux"))]
fn serve_udp_simple(
    socket: std::net::UdpSocket,
    state: Arc<ArcSwap<Snapshot>>,
    rrl: Arc<Limiter>,
    token: CancellationToken,
) {
    // Large enough for any datagram; EDNS clients may send big queries.
    let mut buf = vec![0u8; 65_535];
    let mut out = Vec::with_capacity(4096);
    while !token.is_cancelled() {
        let (len, src) = match socket.recv_from(&mut buf) {
            Ok(x) => x,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(e) => {
                // E.g. ICMP port unreachable reported on the socket; never
                // fatal for a server.
                tracing::debug!(error = %e, "udp receive error");
                continue;
            }
        };
        if src.port() == 0 {
            continue; // cannot be answered; often spoofed
        }
        let answered = {
            let snap = state.load();
            handle_into(&snap, &buf[..len], src.ip(), Transport::Udp, &mut out)
        };
        // One query per batch here: the clock is read per query.
        // TODO(cookies): exempt clients with a valid server cookie.
        let send = answered
            && rrl
                .batch()
                .is_none_or(|b| b.check(src.ip(), &mut out, false));
        if send && let Err(e) = socket.send_to(&out, src) {
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
    let (reader, writer) = stream.split();
    // Buffered both ways: pipelined queries arrive in one read, and their
    // answers leave in one write once no further query is waiting.
    let mut reader = BufReader::with_capacity(16 * 1024, reader);
    let mut writer = BufWriter::with_capacity(16 * 1024, writer);
    let mut query = Vec::with_capacity(512);
    let mut out = Vec::with_capacity(4096);
    loop {
        let mut len = [0u8; 2];
        match tokio::time::timeout(idle, reader.read_exact(&mut len)).await {
            Ok(Ok(_)) => {}
            _ => return, // EOF, error or idle timeout
        }
        let len = usize::from(u16::from_be_bytes(len));
        query.resize(len, 0);
        // A client that sends a length and then stalls is idle too.
        match tokio::time::timeout(idle, reader.read_exact(&mut query)).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        if len < 12 {
            return; // not DNS; nothing sensible to answer
        }
        let answered = {
            let snap = state.load();
            handle_into(&snap, &query, peer.ip(), Transport::Tcp, &mut out)
        };
        // Writes are bounded by the idle timeout too: a client that sends
        // queries but never reads the answers must not hold its slot (and
        // so, with enough of them, all of TCP) forever.
        if answered {
            let Ok(n) = u16::try_from(out.len()) else {
                return;
            };
            let write = async {
                writer.write_all(&n.to_be_bytes()).await?;
                writer.write_all(&out).await
            };
            if !matches!(tokio::time::timeout(idle, write).await, Ok(Ok(()))) {
                return;
            }
        }
        if reader.buffer().is_empty()
            && !matches!(tokio::time::timeout(idle, writer.flush()).await, Ok(Ok(())))
        {
            return;
        }
    }
}
