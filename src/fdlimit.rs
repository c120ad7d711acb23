//! File descriptors: the open-files limit raised as far as the system
//! allows, and a budget that keeps DNS over TCP from taking the
//! descriptors health probes and the admin API need.
//!
//! Running out of descriptors on one listener must never turn into a
//! failover: a probe that cannot open a socket looks like a dead
//! datacenter. So the TCP connection caps are lowered, at start-up, until
//! every listener full of connections still leaves room for a full set of
//! probes, a full admin API and the server's own files.

/// Descriptors for what is neither a connection nor a probe: stdio, the
/// runtime's epoll and wake-up descriptors, zone, GeoIP and state files
/// opened on reload, and some slack.
pub(crate) const BASE_RESERVE: u64 = 64;

/// What the server keeps open besides TCP connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Needs {
    /// DNS listen addresses.
    pub(crate) listeners: u64,
    /// UDP sockets per listen address (one per serving thread).
    pub(crate) udp_sockets: u64,
    /// Probes in flight at once (`max_probes_in_flight`); each holds one
    /// socket (HTTP probes keep no pool).
    pub(crate) probes: u64,
    /// Admin API connections, plus its listener when it runs.
    pub(crate) admin: u64,
}

impl Needs {
    /// Descriptors taken before any TCP connection: per listen address
    /// its UDP sockets, its TCP listener and one accepted connection
    /// waiting for a slot; then probes, admin and the base reserve.
    fn fixed(&self) -> u64 {
        self.listeners * (self.udp_sockets + 2) + self.probes + self.admin + BASE_RESERVE
    }
}

/// The TCP connection cap per listen address that fits in `limit`
/// descriptors: `wanted` when it fits, else what is left after the fixed
/// needs, shared evenly, and at least 1 (so TCP still works, at the cost
/// of the reserve).
pub(crate) fn tcp_cap(limit: u64, wanted: u32, needs: &Needs) -> u32 {
    let listeners = needs.listeners.max(1);
    let room = limit.saturating_sub(needs.fixed()) / listeners;
    u32::try_from(room)
        .unwrap_or(u32::MAX)
        .clamp(1, wanted.max(1))
}

/// Raises the soft limit on open files to the hard limit. Returns the soft
/// limit before and after; `RLIM_INFINITY` reads as `u64::MAX`.
pub(crate) fn raise_nofile_limit() -> std::io::Result<(u64, u64)> {
    let (soft, hard) = nofile(None)?;
    if soft >= hard {
        return Ok((soft, soft));
    }
    let (now, _) = nofile(Some(hard))?;
    Ok((soft, now))
}

/// Gets RLIMIT_NOFILE as (soft, hard), after setting the soft limit to
/// `set` when given.
// rlim_t is u64 on Linux and macOS but not on every Unix.
#[allow(unsafe_code, clippy::useless_conversion)]
fn nofile(set: Option<u64>) -> std::io::Result<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read or write the one `rlimit`
    // struct passed by pointer, which lives on this stack frame for the
    // whole call; RLIMIT_NOFILE is a valid resource on every Unix.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if let Some(soft) = set {
            lim.rlim_cur = libc::rlim_t::try_from(soft).unwrap_or(libc::rlim_t::MAX);
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
    }
    Ok((u64::from(lim.rlim_cur), u64::from(lim.rlim_max)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NEEDS: Needs = Needs {
        listeners: 2,
        udp_sockets: 4,
        probes: 256,
        admin: 65,
    };

    #[test]
    fn the_configured_cap_stands_when_it_fits() {
        // 2 × (4 + 2) + 256 + 65 + 64 = 397 fixed, plus 2 × 1024.
        assert_eq!(tcp_cap(397 + 2048, 1024, &NEEDS), 1024);
        assert_eq!(tcp_cap(1 << 20, 1024, &NEEDS), 1024);
        assert_eq!(tcp_cap(u64::MAX, 1024, &NEEDS), 1024);
    }

    #[test]
    fn a_low_limit_lowers_the_cap_and_keeps_the_reserve() {
        assert_eq!(tcp_cap(397 + 2047, 1024, &NEEDS), 1023);
        assert_eq!(tcp_cap(1024, 1024, &NEEDS), (1024 - 397) / 2);
        // Nothing left: one connection per listener still.
        assert_eq!(tcp_cap(256, 1024, &NEEDS), 1);
        assert_eq!(tcp_cap(0, 1024, &NEEDS), 1);
    }

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        let (before, after) = raise_nofile_limit().unwrap();
        assert!(after >= before);
        let (soft, hard) = nofile(None).unwrap();
        assert_eq!((soft, hard), (after, hard));
        assert_eq!(soft, hard);
    }
}
