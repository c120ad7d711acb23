//! DNSSEC: keys, the signatures of a zone, and compact denial.
//!
//! ```text
//!  zone TOML [dnssec] ──► config::dnssec ──► DnssecConfig (keys loaded)
//!                                                  │
//!  Snapshot::build ─► Zone::build ─► ZoneSigner::new + precompute
//!                                        │  (every RRset an answer can hold,
//!                                        │   signed off the query path)
//!  slow path, DO=1 ─► Zone::sign_answer ─┴► store hit: copy the RRSIGs
//!                                          miss: sign now (bounded cache,
//!                                          per-second budget)
//!
//!  resign::run (background) ── at refresh_at ─► Zone::resigned
//!     (spawn_blocking) ─► Snapshot::with_zone, published by rcu
//! ```
//!
//! - [`keys`]: BIND-format key files, `meridian dnssec keygen` and `ds`.
//! - [`sign`]: the per-zone signer and its signature store.
//! - [`denial`]: RFC 9824 compact denial NSEC records.
//! - [`resign`]: the background task that re-signs zones before their
//!   signatures expire.

pub mod cli;
pub mod denial;
pub mod keys;
pub mod resign;
pub mod sign;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub use sign::ZoneSigner;

/// Where a key is in its life, set per key in the zone's `[dnssec] keys`.
/// Removing a key's entry retires it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyState {
    /// Published in the DNSKEY RRset, and signs.
    Active,
    /// Published only: a ZSK before it signs (pre-publish rollover) or
    /// after it stopped (kept until its signatures expire from caches).
    Published,
    /// Signs, but is not published: the first step of a conservative
    /// algorithm rollover (RFC 6781 §4.1.4), so that every RRset carries
    /// the new algorithm's signatures before its DNSKEY appears.
    Signing,
}

impl KeyState {
    /// Whether the key is in the DNSKEY RRset.
    pub fn published(self) -> bool {
        matches!(self, Self::Active | Self::Published)
    }

    /// Whether the key makes signatures.
    pub fn signs(self) -> bool {
        matches!(self, Self::Active | Self::Signing)
    }

    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Published => "published",
            Self::Signing => "signing",
        }
    }
}

/// One key of a zone, loaded.
#[derive(Clone, Debug)]
pub struct ZoneKey {
    /// The key pair and its DNSKEY.
    pub pair: keys::KeyPairFiles,
    /// Its state.
    pub state: KeyState,
}

/// A zone's validated `[dnssec]` table.
#[derive(Clone, Debug)]
pub struct DnssecConfig {
    /// The keys, in config order.
    pub keys: Vec<ZoneKey>,
    /// How long a signature is valid from its inception (expiration −
    /// inception − offset).
    pub signature_validity: Duration,
    /// The zone is re-signed in the background when its earliest
    /// signature has this much left ([`resign`]); a precomputed signature
    /// with less than half of it left is renewed on the query path (the
    /// safety net, when the re-sign is late).
    pub refresh_margin: Duration,
    /// Expirations are spread over this much (each RRset's signature
    /// expires up to `jitter` earlier, by a hash of the RRset), and each
    /// zone's re-sign by up to this much (at random per build), so that
    /// zones and servers do not all fall due at once.
    pub jitter: Duration,
    /// Inception is backdated by this much, for validators whose clocks
    /// run behind.
    pub inception_offset: Duration,
    /// TTL of the DNSKEY RRset.
    pub dnskey_ttl: u32,
    /// Most signatures made on demand per second (per zone); beyond it a
    /// query that needs a new one gets SERVFAIL.
    pub online_signing_rate: u32,
    /// Where signature times come from: the system clock, except in tests
    /// on tokio's paused clock. Not from the TOML.
    pub clock: Clock,
}

//------------ Clock ----------------------------------------------------------

/// The time signatures are made and checked at, in seconds since the
/// epoch.
///
/// Production reads the system clock: inception and expiration are
/// absolute times that validators compare with their own clocks, so they
/// must follow the wall clock (NTP corrections included), not a monotonic
/// one. Tests that drive the background re-signer on tokio's paused
/// clock use [`Clock::tokio`], so that signature times move with the
/// virtual time the re-signer sleeps on.
#[derive(Clone, Debug, Default)]
pub enum Clock {
    /// The system clock, read coarsely (see [`coarse_now`]).
    #[default]
    System,
    /// The unix time when made, plus the time elapsed since on the
    /// runtime's clock (virtual when the runtime is paused).
    Tokio(TokioClock),
}

/// See [`Clock::Tokio`].
#[derive(Clone, Debug)]
pub struct TokioClock {
    handle: tokio::runtime::Handle,
    origin_unix: u64,
    origin: tokio::time::Instant,
}

impl Clock {
    /// A clock that follows the current tokio runtime's clock from now on
    /// (its virtual time when paused); `None` outside a runtime.
    pub fn tokio() -> Option<Self> {
        let handle = tokio::runtime::Handle::try_current().ok()?;
        Some(Self::Tokio(TokioClock {
            handle,
            origin_unix: sign::unix_now(),
            origin: tokio::time::Instant::now(),
        }))
    }

    /// Seconds since the epoch. Callable from any thread: the UDP
    /// threads are not the runtime's, so the tokio clock is read through
    /// its handle.
    pub fn now(&self) -> u64 {
        match self {
            Self::System => coarse_now(),
            Self::Tokio(c) => {
                let _in_runtime = c.handle.enter();
                c.origin_unix + c.origin.elapsed().as_secs()
            }
        }
    }
}

/// Seconds since the epoch, from the kernel's coarse clock where there is
/// one: read from the vDSO without a system call, a few nanoseconds,
/// behind real time by at most a tick, which the refresh margin (days)
/// dwarfs.
fn coarse_now() -> u64 {
    #[cfg(target_os = "linux")]
    {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid timespec for the call to write.
        #[allow(unsafe_code)] // the coarse clock, which std does not offer
        if unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts) } == 0 {
            // Before the epoch: nothing signed is served.
            return u64::try_from(ts.tv_sec).unwrap_or(u64::MAX);
        }
    }
    sign::unix_now()
}

/// Signatures made on demand (an RRset that was not precomputed, or whose
/// precomputed signature neared expiry), across zones.
static ONLINE_SIGNATURES: AtomicU64 = AtomicU64::new(0);
/// Queries answered SERVFAIL because the on-demand signing budget was spent.
static BUDGET_EXHAUSTED: AtomicU64 = AtomicU64::new(0);
/// Signatures made while building snapshots.
static PRECOMPUTED_SIGNATURES: AtomicU64 = AtomicU64::new(0);
/// Precomputed signatures renewed on demand because they were inside the
/// safety margin: the background re-signer was late.
static SAFETY_RENEWALS: AtomicU64 = AtomicU64::new(0);

/// `meridian_dnssec_signatures_online_total`: signatures made on the
/// query path (on demand) since start.
pub fn signatures_online_total() -> u64 {
    ONLINE_SIGNATURES.load(Ordering::Relaxed)
}

/// `meridian_dnssec_budget_exhausted_total`: queries that needed a
/// new signature beyond `online_signing_rate` (answered SERVFAIL).
pub fn budget_exhausted_total() -> u64 {
    BUDGET_EXHAUSTED.load(Ordering::Relaxed)
}

/// `meridian_dnssec_signatures_precomputed_total`: signatures made while
/// building snapshots since start.
pub fn signatures_precomputed_total() -> u64 {
    PRECOMPUTED_SIGNATURES.load(Ordering::Relaxed)
}

/// `meridian_dnssec_safety_net_renewals_total`: precomputed signatures
/// renewed on the query path because the background re-signer was late
/// (see [`sign::ZoneSigner::signatures`]). Zero in normal operation.
pub fn safety_net_renewals_total() -> u64 {
    SAFETY_RENEWALS.load(Ordering::Relaxed)
}
