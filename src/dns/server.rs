//! UDP and TCP serving loops over pre-bound sockets.
//!
//! Each UDP socket has one OS thread that receives, answers and sends
//! without spawning a task or crossing a channel: answering is synchronous
//! and cheap, so an async task per packet would only add cost. There is one
//! socket per serving thread and listen address, all bound with
//! `SO_REUSEPORT`. Each TCP connection gets a tokio task that reads
//! length-prefixed queries (RFC 1035 §4.2.2), answers them in order and
//! closes after an idle timeout (RFC 7766 §6.2.3). A slot table per
//! listener ([`slots`]) caps connections per listener and per client, and
//! makes room for a newcomer by closing the connection idle the longest.

mod slots;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::io::{BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::slots::{ClientKey, Refused, Slot, Slots};
use super::handler::{Seen, Transport, handle_observed};
use super::rrl::Limiter;
use crate::metrics::dns::Shard;
use crate::querylog::{QueryLog, Tap};
use crate::snapshot::Snapshot;

/// What a serving thread counts and logs: its metrics shard, and its
/// query log tap when the log is on.
#[derive(Debug)]
pub struct Observer {
    /// This thread's counters.
    pub shard: Arc<Shard>,
    /// The query log, when on.
    pub log: Option<Tap>,
}

/// TCP limits.
#[derive(Clone, Copy, Debug)]
pub struct TcpSettings {
    /// Close a connection idle this long.
    pub idle_timeout: Duration,
    /// The idle timeout while more than 3/4 of the slots are taken.
    pub busy_idle_timeout: Duration,
    /// Concurrent connections per listener.
    pub max_connections: u32,
    /// Concurrent connections per client address (IPv6: per /64), per
    /// listener.
    pub max_connections_per_client: u32,
}

impl TcpSettings {
    /// The idle timeout in force, under pressure or not.
    fn idle(&self, pressure: bool) -> Duration {
        if pressure {
            self.busy_idle_timeout.min(self.idle_timeout)
        } else {
            self.idle_timeout
        }
    }
}

/// What the TCP listeners did, shared by all of them.
#[derive(Debug, Default)]
pub struct TcpStats {
    open: AtomicU64,
    refused_client_limit: AtomicU64,
    closed_for_room: AtomicU64,
    accept_errors: AtomicU64,
}

/// A reading of [`TcpStats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct TcpCounters {
    /// Connections open now.
    pub open: u64,
    /// Connections closed at once because their client already held
    /// `tcp_max_connections_per_client`.
    pub refused_client_limit: u64,
    /// Idle connections closed to admit a new one on a full listener.
    pub closed_for_room: u64,
    /// Failed accepts (for example EMFILE: out of file descriptors).
    pub accept_errors: u64,
}

impl TcpStats {
    /// The counters now.
    pub fn read(&self) -> TcpCounters {
        TcpCounters {
            open: self.open.load(Ordering::Relaxed),
            refused_client_limit: self.refused_client_limit.load(Ordering::Relaxed),
            closed_for_room: self.closed_for_room.load(Ordering::Relaxed),
            accept_errors: self.accept_errors.load(Ordering::Relaxed),
        }
    }
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
    mut obs: Observer,
    token: CancellationToken,
) {
    if let Err(e) = socket.set_read_timeout(Some(UDP_SHUTDOWN_POLL)) {
        tracing::error!(error = %e, "cannot set the UDP read timeout; this thread will not stop on shutdown");
    }
    #[cfg(target_os = "linux")]
    {
        super::batch::serve(&socket, &state, &rrl, &mut obs, &token);
    }
    #[cfg(not(target_os = "linux"))]
    serve_udp_simple(socket, state, rrl, obs, token);
}

/// One query per system call: the portable loop.
#[cfg(not(target_os = "linux"))]
fn serve_udp_simple(
    socket: std::net::UdpSocket,
    state: Arc<ArcSwap<Snapshot>>,
    rrl: Arc<Limiter>,
    mut obs: Observer,
    token: CancellationToken,
) {
    // Large enough for any datagram; EDNS clients may send big queries.
    let mut buf = vec![0u8; 65_535];
    let mut out = Vec::with_capacity(4096);
    let mut seen = Seen::default();
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
        let handled = {
            let snap = state.load();
            let handled = handle_observed(
                &snap,
                &buf[..len],
                src.ip(),
                Transport::Udp,
                &mut out,
                &mut seen,
            );
            if handled.send {
                obs.shard.tally(&snap).count(&seen, &out);
                if let Some(log) = &mut obs.log {
                    log.offer(&snap, &buf[..len], src.ip(), Transport::Udp, &seen, &out);
                }
            }
            handled
        };
        // One query per batch here: the clock is read per query. A valid
        // server cookie proves the source address: exempt.
        let send = handled.send
            && rrl
                .batch()
                .is_none_or(|b| b.check(src.ip(), &mut out, handled.cookie_valid));
        if send && let Err(e) = socket.send_to(&out, src) {
            tracing::debug!(error = %e, %src, "udp send error");
        }
    }
}

/// First pause after a failed accept; it doubles while accepts keep
/// failing, up to `ACCEPT_BACKOFF_MAX`.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
/// Longest pause after a failed accept: the listener stays responsive once
/// file descriptors free up, and a failing accept costs nothing meanwhile.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_millis(250);

/// Allows one log line per second for an event that can repeat per
/// connection, and counts the occurrences it stood for.
#[derive(Debug, Default)]
struct LogEvery {
    last: Option<Instant>,
    since: u64,
}

impl LogEvery {
    /// Records one occurrence; `Some(n)` when it is time to log `n`.
    fn hit(&mut self) -> Option<u64> {
        self.since += 1;
        let now = Instant::now();
        if self
            .last
            .is_some_and(|l| now.duration_since(l) < Duration::from_secs(1))
        {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.since))
    }
}

/// Accepts TCP connections on `listener` until `token` is cancelled.
///
/// A connection is accepted before it gets a slot, so its address can be
/// checked: a client at its limit is reset at once, and when the listener
/// is full the connection idle the longest is asked to close. The accept
/// loop holds at most one connection waiting for a slot.
pub async fn serve_tcp(
    listener: TcpListener,
    state: Arc<ArcSwap<Snapshot>>,
    settings: TcpSettings,
    stats: Arc<TcpStats>,
    shard: Arc<Shard>,
    log: Option<Arc<QueryLog>>,
    token: CancellationToken,
) {
    let slots = Slots::new(
        settings.max_connections,
        settings.max_connections_per_client,
    );
    let tracker = TaskTracker::new();
    // Slots close (to make room) only while idle; shutdown is not their
    // parent: it closes each connection at its next idle point instead,
    // so a query already arriving is answered (graceful shutdown).
    let room = CancellationToken::new();
    let mut backoff = ACCEPT_BACKOFF_MIN;
    let (mut accept_log, mut refused_log, mut room_log) = (
        LogEvery::default(),
        LogEvery::default(),
        LogEvery::default(),
    );
    'accept: loop {
        let (stream, peer) = tokio::select! {
            () = token.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => {
                    backoff = ACCEPT_BACKOFF_MIN;
                    x
                }
                Err(e) => {
                    // E.g. EMFILE: the connection stays in the backlog and
                    // the listener stays readable. Back off instead of
                    // spinning, and log once a second, not per attempt.
                    stats.accept_errors.fetch_add(1, Ordering::Relaxed);
                    if let Some(n) = accept_log.hit() {
                        tracing::warn!(error = %e, failures = n, "tcp accept failing; backing off");
                    }
                    tokio::select! {
                        () = token.cancelled() => break,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                    continue;
                }
            },
        };
        let client = ClientKey::of(peer.ip());
        let slot = loop {
            let changed = slots.changed().notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            match slots.admit(client, &room) {
                Ok(slot) => break slot,
                Err(Refused::ClientLimit) => {
                    stats.refused_client_limit.fetch_add(1, Ordering::Relaxed);
                    if let Some(n) = refused_log.hit() {
                        tracing::warn!(
                            latest = %peer.ip(),
                            refused = n,
                            limit = settings.max_connections_per_client,
                            "tcp connections refused: client at tcp_max_connections_per_client"
                        );
                    }
                    // Reset rather than close: no TIME_WAIT state kept here
                    // for a client that is already over its share.
                    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
                    continue 'accept;
                }
                Err(Refused::Full) => {
                    if slots.make_room() {
                        stats.closed_for_room.fetch_add(1, Ordering::Relaxed);
                        if let Some(n) = room_log.hit() {
                            tracing::info!(
                                closed = n,
                                limit = settings.max_connections,
                                "tcp listener full: closing the connection idle the longest"
                            );
                        }
                    }
                    tokio::select! {
                        () = token.cancelled() => break 'accept,
                        () = changed => {}
                    }
                }
            }
        };
        let state = Arc::clone(&state);
        let stats = Arc::clone(&stats);
        let obs = Observer {
            shard: Arc::clone(&shard),
            log: log.as_ref().map(QueryLog::tcp_tap),
        };
        let close = slot.close_token().clone();
        let shutdown = token.clone();
        stats.open.fetch_add(1, Ordering::Relaxed);
        tracker.spawn(async move {
            tokio::select! {
                () = close.cancelled() => {}
                () = connection(stream, peer, state, settings, slot, shutdown, obs) => {}
            }
            stats.open.fetch_sub(1, Ordering::Relaxed);
        });
    }
    tracker.close();
    // Shutdown: connections close at their next idle point. A client that
    // keeps pipelining never reaches one, so after the idle timeout the
    // rest are closed wherever they are.
    if tokio::time::timeout(settings.idle_timeout, tracker.wait())
        .await
        .is_err()
    {
        room.cancel();
        tracker.wait().await;
    }
}

async fn connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    state: Arc<ArcSwap<Snapshot>>,
    settings: TcpSettings,
    mut slot: Slot,
    shutdown: CancellationToken,
    mut obs: Observer,
) {
    let _ = stream.set_nodelay(true);
    let (reader, writer) = stream.split();
    // Buffered both ways: pipelined queries arrive in one read, and their
    // answers leave in one write once no further query is waiting.
    let mut reader = BufReader::with_capacity(16 * 1024, reader);
    let mut writer = BufWriter::with_capacity(16 * 1024, writer);
    let mut query = Vec::with_capacity(512);
    let mut out = Vec::with_capacity(4096);
    let mut seen = Seen::default();
    loop {
        // Idle until the first byte of the next query: the only state in
        // which the slot table may close this connection to make room.
        if reader.buffer().is_empty() {
            let since = slot.idle();
            if !next_query_starts(&mut reader, &mut slot, &settings, since, &shutdown).await
                || !slot.busy()
            {
                return;
            }
        }
        // The rest of the query, the answer and the write are bounded by
        // the idle timeout in force, so a client that sends a length and
        // stalls, or never reads its answers, cannot hold its slot.
        let limit = settings.idle(*slot.pressure().borrow());
        let mut len = [0u8; 2];
        match tokio::time::timeout(limit, reader.read_exact(&mut len)).await {
            Ok(Ok(_)) => {}
            _ => return, // EOF, error or timeout
        }
        let len = usize::from(u16::from_be_bytes(len));
        query.resize(len, 0);
        match tokio::time::timeout(limit, reader.read_exact(&mut query)).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        if len < 12 {
            return; // not DNS; nothing sensible to answer
        }
        let answered = {
            let snap = state.load();
            let handled = handle_observed(
                &snap,
                &query,
                peer.ip(),
                Transport::Tcp,
                &mut out,
                &mut seen,
            );
            if handled.send {
                obs.shard.tally(&snap).count(&seen, &out);
                if let Some(log) = &mut obs.log {
                    log.offer(&snap, &query, peer.ip(), Transport::Tcp, &seen, &out);
                }
            }
            handled.send
        };
        if answered {
            let Ok(n) = u16::try_from(out.len()) else {
                return;
            };
            let write = async {
                writer.write_all(&n.to_be_bytes()).await?;
                writer.write_all(&out).await
            };
            if !matches!(tokio::time::timeout(limit, write).await, Ok(Ok(()))) {
                return;
            }
        }
        // RFC 7766 §6.2.1: answer every complete message as soon as it is
        // read. Hold the answer back only while the next query is already
        // here in full, so a pipelined batch still leaves in one write; the
        // first bytes of a query alone must not delay it, since the rest
        // may never come.
        if !holds_complete_message(reader.buffer())
            && !matches!(
                tokio::time::timeout(limit, writer.flush()).await,
                Ok(Ok(()))
            )
        {
            return;
        }
    }
}

/// Waits, idle, for the first byte of the next query: true when it came,
/// false on EOF, error or idle timeout. The timeout is counted from the
/// start of the wait and shrinks to the busy one as soon as the listener
/// comes under pressure (RFC 7766 §6.2.3: "servers MAY use a shorter
/// idle timeout" when resources are short). False at once on shutdown,
/// unless the next query's first bytes are already here.
async fn next_query_starts<R: tokio::io::AsyncRead + Unpin>(
    reader: &mut BufReader<R>,
    slot: &mut Slot,
    settings: &TcpSettings,
    since: Instant,
    shutdown: &CancellationToken,
) -> bool {
    loop {
        let pressure = *slot.pressure().borrow_and_update();
        let deadline = since + settings.idle(pressure);
        tokio::select! {
            biased;
            r = reader.fill_buf() => return matches!(r, Ok(b) if !b.is_empty()),
            () = shutdown.cancelled() => return false,
            () = tokio::time::sleep_until(deadline) => return false,
            r = slot.pressure().changed() => {
                if r.is_err() {
                    return false;
                }
            }
        }
    }
}

/// Whether `buf` starts with a whole length-prefixed message (RFC 1035
/// §4.2.2): two length octets and that many more.
fn holds_complete_message(buf: &[u8]) -> bool {
    match buf {
        [hi, lo, rest @ ..] => rest.len() >= usize::from(u16::from_be_bytes([*hi, *lo])),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_is_complete_only_with_its_length_and_all_its_octets() {
        assert!(!holds_complete_message(&[]));
        assert!(!holds_complete_message(&[0]));
        assert!(holds_complete_message(&[0, 0]));
        assert!(!holds_complete_message(&[0, 3, 1, 2]));
        assert!(holds_complete_message(&[0, 3, 1, 2, 3]));
        assert!(holds_complete_message(&[0, 3, 1, 2, 3, 0]));
        assert!(!holds_complete_message(&[1, 0, 0]));
    }

    #[tokio::test(start_paused = true)]
    async fn repeated_events_are_logged_once_a_second_with_their_count() {
        let mut every = LogEvery::default();
        assert_eq!(every.hit(), Some(1), "the first is logged");
        for _ in 0..1000 {
            assert_eq!(every.hit(), None);
            tokio::time::advance(Duration::from_micros(500)).await;
        }
        tokio::time::advance(Duration::from_millis(500)).await;
        assert_eq!(every.hit(), Some(1001), "then one line for the rest");
        assert_eq!(every.hit(), None);
    }
}
