//! Batched UDP serving on Linux: `recvmmsg` takes up to [`BATCH`] queries
//! in one system call (waiting only for the first), the handler answers
//! each into its own buffer, and `sendmmsg` sends all the answers in one
//! call. Under load this halves the system calls per query, which is most
//! of what a DNS server costs; at low rates a batch is one query and it
//! behaves like the simple loop.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;

use arc_swap::ArcSwap;
use socket2::{SockAddr, SockAddrStorage};
use tokio_util::sync::CancellationToken;

use super::handler::{Seen, Transport, handle_observed};
use super::rrl::Limiter;
use super::server::Observer;
use crate::snapshot::Snapshot;

/// Queries taken per `recvmmsg`.
pub const BATCH: usize = 32;
/// Receive buffer per query. Queries are small; a longer datagram is
/// marked truncated by the kernel and dropped.
const QUERY_BUFFER: usize = 4096;

/// Serves `socket` until `token` is cancelled (the socket has a read
/// timeout, so a blocked receive returns to check).
pub fn serve(
    socket: &UdpSocket,
    state: &Arc<ArcSwap<Snapshot>>,
    rrl: &Limiter,
    obs: &mut Observer,
    token: &CancellationToken,
) {
    let fd = socket.as_raw_fd();
    let mut bufs = vec![[0u8; QUERY_BUFFER]; BATCH];
    let mut outs: Vec<Vec<u8>> = (0..BATCH).map(|_| Vec::with_capacity(4096)).collect();
    // Peer addresses as the kernel writes them.
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut names: Vec<libc::sockaddr_storage> = vec![unsafe { std::mem::zeroed() }; BATCH];
    let blank = SockAddr::from(SocketAddr::from(([0, 0, 0, 0], 0)));
    let mut iovs: Vec<libc::iovec> = vec![
        libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        BATCH
    ];
    // SAFETY: all-zero is a valid mmsghdr (null pointers, zero lengths).
    let mut msgs: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; BATCH];
    let mut send_iovs = iovs.clone();
    let mut send_msgs = msgs.clone();
    let mut send_names: Vec<SockAddr> = vec![blank; BATCH];
    let mut seen = Seen::default();

    while !token.is_cancelled() {
        for i in 0..BATCH {
            iovs[i].iov_base = bufs[i].as_mut_ptr().cast();
            iovs[i].iov_len = QUERY_BUFFER;
            let h = &mut msgs[i].msg_hdr;
            h.msg_name = std::ptr::from_mut(&mut names[i]).cast();
            h.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_iov = &mut iovs[i];
            h.msg_iovlen = 1;
            h.msg_flags = 0;
            msgs[i].msg_len = 0;
        }
        // SAFETY: msgs points at BATCH initialised headers whose buffers
        // (bufs, names, iovs) outlive the call and are not otherwise used
        // during it.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                msgs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock
                    | std::io::ErrorKind::TimedOut
                    | std::io::ErrorKind::Interrupted
            ) {
                tracing::debug!(error = %e, "udp receive error");
                // Never spin on an error that does not go away.
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            continue;
        }
        let received = n as usize;
        let snap = state.load();
        // One clock read and one settings load for the whole batch.
        let limits = rrl.batch();
        // One lock of this thread's own counters per batch.
        let mut tally = obs.shard.tally(&snap);
        let mut ready = 0;
        for i in 0..received {
            let h = &msgs[i].msg_hdr;
            if h.msg_flags & libc::MSG_TRUNC != 0 {
                continue; // longer than any sane query
            }
            let mut storage = SockAddrStorage::zeroed();
            // SAFETY: sockaddr_storage is one of the platform's sockaddr
            // types, and the kernel wrote msg_namelen valid bytes of it.
            let peer = unsafe {
                *storage.view_as::<libc::sockaddr_storage>() = names[i];
                SockAddr::new(storage, h.msg_namelen)
            };
            let Some(src) = peer.as_socket() else {
                continue;
            };
            if src.port() == 0 {
                continue;
            }
            let len = (msgs[i].msg_len as usize).min(QUERY_BUFFER);
            let handled = handle_observed(
                &snap,
                &bufs[i][..len],
                src.ip(),
                Transport::Udp,
                &mut outs[ready],
                &mut seen,
            );
            if handled.send {
                tally.count(&seen, &outs[ready]);
                if let Some(log) = &mut obs.log {
                    log.offer(
                        &snap,
                        &bufs[i][..len],
                        src.ip(),
                        Transport::Udp,
                        &seen,
                        &outs[ready],
                    );
                }
            }
            // A valid server cookie proves the source address: exempt.
            if handled.send
                && limits
                    .as_ref()
                    .is_none_or(|l| l.check(src.ip(), &mut outs[ready], handled.cookie_valid))
            {
                send_names[ready] = peer;
                ready += 1;
            }
        }
        drop(tally);
        drop(limits);
        drop(snap);
        let mut sent = 0;
        while sent < ready {
            for i in sent..ready {
                send_iovs[i].iov_base = outs[i].as_mut_ptr().cast();
                send_iovs[i].iov_len = outs[i].len();
                let h = &mut send_msgs[i].msg_hdr;
                h.msg_name = send_names[i].as_ptr().cast_mut().cast();
                h.msg_namelen = send_names[i].len();
                h.msg_iov = &mut send_iovs[i];
                h.msg_iovlen = 1;
                h.msg_flags = 0;
            }
            // SAFETY: as for recvmmsg; the entries sent..ready are
            // initialised and their buffers live across the call.
            let n = unsafe {
                libc::sendmmsg(
                    fd,
                    send_msgs[sent..].as_mut_ptr(),
                    (ready - sent) as libc::c_uint,
                    0,
                )
            };
            if n <= 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                // Skip the datagram that failed (e.g. an unreachable peer)
                // and go on with the rest.
                tracing::debug!(error = %e, "udp send error");
                sent += 1;
            } else {
                sent += n as usize;
            }
        }
    }
}
