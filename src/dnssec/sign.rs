//! A zone's signer and its signatures.
//!
//! The store maps an RRset, identified by owner, type, TTL and a hash of
//! its canonical RDATA set (order-free, so a rotated answer finds the
//! same entry), to the RRSIG records that go after it. It is filled when
//! the snapshot is built ([`ZoneSigner::precompute`]) and read-only after;
//! an RRset not in it is signed on demand into a bounded cache (two
//! generations of at most [`CACHE_GENERATION`] entries: when the current
//! one fills, it becomes the previous one and the older is dropped),
//! within a per-second budget.
//!
//! Precomputed signatures are renewed by re-signing the whole zone in the
//! background ([`super::resign`]) at [`ZoneSigner::refresh_at`], before
//! any has less than `refresh_margin` left. Only if that is late, and a
//! precomputed signature gets within half the margin of its expiration,
//! is it renewed on the query path (the safety net, counted by
//! [`super::safety_net_renewals_total`]); none is ever served expired.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use hickory_proto::dnssec::rdata::{DNSKEY, DNSSECRData, RRSIG, SigInput};
use hickory_proto::dnssec::{SigningKey, TBS};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType, SerialNumber};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder, NameEncoding};

use super::{
    BUDGET_EXHAUSTED, Clock, DnssecConfig, ONLINE_SIGNATURES, PRECOMPUTED_SIGNATURES,
    SAFETY_RENEWALS,
};

/// Entries per generation of the on-demand cache.
pub const CACHE_GENERATION: usize = 16_384;

/// Fewest seconds between two background re-signs of a zone.
pub const MIN_RESIGN_INTERVAL: u64 = 60;

/// One signing key and what it signs.
struct Signer {
    key: Arc<dyn SigningKey>,
    tag: u16,
    /// Signs the DNSKEY RRset (a KSK or CSK).
    dnskey: bool,
    /// Signs every other RRset (a ZSK, or a CSK).
    zone: bool,
}

/// Signatures of one RRset.
#[derive(Clone, Debug)]
struct Signed {
    sigs: Arc<[Record]>,
    /// The earliest expiration among them (seconds since the epoch).
    expires: u64,
}

/// How the store knows an RRset: owner (lower-case wire form), type, TTL,
/// hash of the sorted canonical RDATA.
type SigKey = (Box<[u8]>, u16, u32, u64);

#[derive(Default)]
struct Cache {
    current: HashMap<SigKey, Signed>,
    previous: HashMap<SigKey, Signed>,
}

/// The on-demand signing budget for this second was spent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OverBudget;

/// One key of the zone as `/status` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyInfo {
    /// RFC 4034 Appendix B key tag.
    pub tag: u16,
    /// DNSSEC algorithm number (13, 15).
    pub algorithm: u8,
    /// `"KSK"`, `"ZSK"` or `"CSK"` (a KSK that also signs the zone).
    pub role: &'static str,
    /// `"active"`, `"published"` or `"signing"`.
    pub state: &'static str,
}

/// A zone's keys, timing and signatures.
pub struct ZoneSigner {
    origin: Name,
    signers: Vec<Signer>,
    dnskeys: Vec<DNSKEY>,
    dnskey_ttl: u32,
    validity: u64,
    margin: u64,
    jitter: u64,
    offset: u64,
    rate: u32,
    store: HashMap<SigKey, Signed>,
    cache: Mutex<Cache>,
    /// `second << 32 | signatures made in it`.
    budget: AtomicU64,
    clock: Clock,
    keys: Vec<KeyInfo>,
    /// When the precomputed signatures were made (seconds since the
    /// epoch): the zone's build or its last background re-sign.
    signed_at: u64,
    /// The earliest expiration in the store.
    earliest: Option<u64>,
    /// RRsets whose signing failed while precomputing.
    failed: usize,
    /// How much earlier than `earliest − margin` this zone is re-signed:
    /// drawn at random in `0..=jitter` per build (at most half the time
    /// until then), so that zones, and servers, do not re-sign at once.
    spread: u64,
    /// Precomputed signatures this zone renewed on the query path (the
    /// safety net), carried over from the signer it replaced.
    renewals: Arc<AtomicU64>,
}

impl std::fmt::Debug for ZoneSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZoneSigner")
            .field("origin", &self.origin)
            .field(
                "keys",
                &self.signers.iter().map(|s| s.tag).collect::<Vec<_>>(),
            )
            .field("precomputed", &self.store.len())
            .field("signed_at", &self.signed_at)
            .field("earliest", &self.earliest)
            .finish_non_exhaustive()
    }
}

/// Seconds since the epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl ZoneSigner {
    /// The signer of the zone at `origin` with `cfg`'s keys. A KSK (flags
    /// 257) signs the DNSKEY RRset; it also signs the rest of the zone (as
    /// a CSK) when no ZSK of its algorithm signs.
    pub fn new(origin: &Name, cfg: &DnssecConfig) -> Self {
        // A KSK is a CSK when no ZSK of its algorithm signs.
        let csk = |k: &super::ZoneKey| {
            k.pair.is_ksk()
                && !cfg.keys.iter().any(|o| {
                    o.state.signs() && !o.pair.is_ksk() && o.pair.algorithm == k.pair.algorithm
                })
        };
        let keys = cfg
            .keys
            .iter()
            .map(|k| KeyInfo {
                tag: k.pair.tag,
                algorithm: k.pair.algorithm.number(),
                role: match (k.pair.is_ksk(), csk(k)) {
                    (false, _) => "ZSK",
                    (true, false) => "KSK",
                    (true, true) => "CSK",
                },
                state: k.state.as_str(),
            })
            .collect();
        let signers = cfg
            .keys
            .iter()
            .filter(|k| k.state.signs())
            .map(|k| Signer {
                key: Arc::clone(&k.pair.signer),
                tag: k.pair.tag,
                dnskey: k.pair.is_ksk(),
                zone: !k.pair.is_ksk() || csk(k),
            })
            .collect();
        Self {
            origin: origin.to_lowercase(),
            signers,
            dnskeys: cfg
                .keys
                .iter()
                .filter(|k| k.state.published())
                .map(|k| k.pair.dnskey.clone())
                .collect(),
            dnskey_ttl: cfg.dnskey_ttl,
            validity: cfg.signature_validity.as_secs(),
            margin: cfg.refresh_margin.as_secs(),
            jitter: cfg.jitter.as_secs(),
            offset: cfg.inception_offset.as_secs(),
            rate: cfg.online_signing_rate,
            store: HashMap::new(),
            cache: Mutex::default(),
            budget: AtomicU64::new(0),
            clock: cfg.clock.clone(),
            keys,
            signed_at: 0,
            earliest: None,
            failed: 0,
            spread: 0,
            renewals: Arc::default(),
        }
    }

    /// The time now by the zone's clock (seconds since the epoch): what
    /// the query path signs and checks at.
    pub fn now(&self) -> u64 {
        self.clock.now()
    }

    /// The zone's keys, in config order.
    pub fn keys(&self) -> &[KeyInfo] {
        &self.keys
    }

    /// When the precomputed signatures were made.
    pub fn signed_at(&self) -> u64 {
        self.signed_at
    }

    /// The earliest expiration among the precomputed signatures.
    pub fn earliest_expiry(&self) -> Option<u64> {
        self.earliest
    }

    /// RRsets whose signing failed at build (logged each).
    pub fn failed(&self) -> usize {
        self.failed
    }

    /// Precomputed signatures renewed on the query path because the zone
    /// was not re-signed in time (this zone and those it replaced).
    pub fn safety_net_renewals(&self) -> u64 {
        self.renewals.load(Ordering::Relaxed)
    }

    /// When the background re-signer re-signs the zone: `refresh_margin`
    /// before its earliest expiration, less the zone's random spread, and
    /// never within [`MIN_RESIGN_INTERVAL`] of the last signing (a
    /// validity barely longer than margin + jitter would otherwise make
    /// the zone due again at once; the safety net covers the gap). `None`
    /// for a zone with nothing precomputed.
    pub fn refresh_at(&self) -> Option<u64> {
        Some(
            self.earliest?
                .saturating_sub(self.margin)
                .saturating_sub(self.spread)
                .max(self.signed_at + MIN_RESIGN_INTERVAL),
        )
    }

    /// Marks the start of precomputing at `now`: the signatures' time,
    /// and the zone's spread drawn for this build. `previous` is the
    /// signer this one replaces (a background re-sign), whose safety-net
    /// count carries over.
    pub fn begin(&mut self, now: u64, previous: Option<&Self>) {
        use std::hash::BuildHasher;
        self.signed_at = now;
        // The earliest expiration is at least validity − jitter away; the
        // spread takes at most half of what is left before the margin.
        let room = self
            .validity
            .saturating_sub(self.jitter)
            .saturating_sub(self.margin)
            / 2;
        let bound = self.jitter.min(room);
        self.spread = if bound == 0 {
            0
        } else {
            std::hash::RandomState::new().hash_one((&self.origin, now)) % (bound + 1)
        };
        if let Some(p) = previous {
            self.renewals = Arc::clone(&p.renewals);
        }
    }

    /// The published DNSKEY records, owned by the apex.
    pub fn dnskey_records(&self) -> Vec<Record> {
        self.dnskeys
            .iter()
            .map(|k| {
                Record::from_rdata(
                    self.origin.clone(),
                    self.dnskey_ttl,
                    RData::DNSSEC(DNSSECRData::DNSKEY(k.clone())),
                )
            })
            .collect()
    }

    /// Number of precomputed RRsets.
    pub fn precomputed(&self) -> usize {
        self.store.len()
    }

    /// Bytes the precomputed signatures take, roughly: their records'
    /// wire size plus each entry's key and bookkeeping.
    pub fn store_bytes(&self) -> usize {
        self.store
            .iter()
            .map(|(k, v)| {
                let sigs: usize = v
                    .sigs
                    .iter()
                    .map(|r| r.data.to_bytes().map_or(0, |b| b.len()) + r.name.len() + 64)
                    .sum();
                k.0.len() + 48 + sigs
            })
            .sum()
    }

    /// The precomputed signatures of `rrset` and their earliest
    /// expiration (seconds since the epoch), if the store has them.
    /// Read-only and never signs: the fast path's DO=1 templates copy
    /// these, and defer to the query path for anything else.
    pub fn stored(&self, rrset: &[Record]) -> Option<(Arc<[Record]>, u64)> {
        let s = self.store.get(&sig_key(rrset)?)?;
        Some((Arc::clone(&s.sigs), s.expires))
    }

    /// The refresh margin in seconds: a signature this close to its
    /// expiration is no longer served.
    pub fn refresh_margin(&self) -> u64 {
        self.margin
    }

    /// Signs `rrset` (records of one owner, type and TTL) now and keeps
    /// the signatures in the store. Build time only; [`Batch`] signs many
    /// on every core.
    pub fn precompute(&mut self, rrset: &[Record], now: u64) {
        let Some(key) = sig_key(rrset) else { return };
        if self.store.contains_key(&key) {
            return;
        }
        let signed = self.sign(rrset, key.3, now);
        self.keep(key, signed);
    }

    /// Keeps a build-time signing's result in the store (`None`: it
    /// failed, and was logged).
    fn keep(&mut self, key: SigKey, signed: Option<Signed>) {
        match signed {
            Some(signed) => {
                PRECOMPUTED_SIGNATURES.fetch_add(signed.sigs.len() as u64, Ordering::Relaxed);
                self.earliest = Some(
                    self.earliest
                        .map_or(signed.expires, |e| e.min(signed.expires)),
                );
                self.store.insert(key, signed);
            }
            None => self.failed += 1,
        }
    }

    /// The RRSIGs to send after `rrset` at time `now`: from the store, else
    /// from the cache, else made now (counted, within the budget). Never
    /// a precomputed one with less than half the refresh margin left (the
    /// background re-signer renews them at the margin: this is its safety
    /// net), nor one made on demand with less than the margin left.
    pub fn signatures(&self, rrset: &[Record], now: u64) -> Result<Arc<[Record]>, OverBudget> {
        let Some(key) = sig_key(rrset) else {
            return Ok(Arc::from([]));
        };
        let fresh = |s: &Signed| s.expires > now + self.margin;
        let stored = self.store.get(&key);
        if let Some(s) = stored.filter(|s| s.expires > now + self.margin / 2) {
            return Ok(Arc::clone(&s.sigs));
        }
        {
            let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(s) = cache.current.get(&key).filter(|s| fresh(s)) {
                return Ok(Arc::clone(&s.sigs));
            }
            if let Some(s) = cache.previous.remove(&key).filter(|s| fresh(s)) {
                let sigs = Arc::clone(&s.sigs);
                cache.insert(key, s);
                return Ok(sigs);
            }
        }
        if !self.spend(now) {
            // Past the budget, a signature inside the refresh margin but
            // still valid (a minute to spare) beats SERVFAIL: it is
            // renewed when the budget allows.
            let valid = |s: &Signed| s.expires > now + 60;
            let stale = stored.filter(|s| valid(s)).map(|s| Arc::clone(&s.sigs));
            let stale = stale.or_else(|| {
                let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
                let s = cache.current.get(&key).filter(|s| valid(s))?;
                Some(Arc::clone(&s.sigs))
            });
            if let Some(sigs) = stale {
                return Ok(sigs);
            }
            BUDGET_EXHAUSTED.fetch_add(1, Ordering::Relaxed);
            return Err(OverBudget);
        }
        let hash = key.3;
        let Some(signed) = self.sign(rrset, hash, now) else {
            return Ok(Arc::from([]));
        };
        ONLINE_SIGNATURES.fetch_add(signed.sigs.len() as u64, Ordering::Relaxed);
        if stored.is_some() {
            SAFETY_RENEWALS.fetch_add(1, Ordering::Relaxed);
            let n = self.renewals.fetch_add(1, Ordering::Relaxed) + 1;
            // Logged at 1, 2, 4, 8, ... renewals: never once per query.
            if n.is_power_of_two() {
                tracing::warn!(
                    zone = %self.origin,
                    renewals = n,
                    "precomputed signatures are being renewed on the query path: the background re-sign is late"
                );
            }
        }
        let sigs = Arc::clone(&signed.sigs);
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, signed);
        Ok(sigs)
    }

    /// Takes one signing from this second's budget.
    fn spend(&self, now: u64) -> bool {
        let second = now & 0xffff_ffff;
        let mut cur = self.budget.load(Ordering::Relaxed);
        loop {
            let (s, n) = (cur >> 32, cur & 0xffff_ffff);
            let next = if s != second {
                second << 32 | 1
            } else if n < u64::from(self.rate) {
                cur + 1
            } else {
                return false;
            };
            match self
                .budget
                .compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(v) => cur = v,
            }
        }
    }

    /// One RRSIG per key that signs this type.
    fn sign(&self, rrset: &[Record], hash: u64, now: u64) -> Option<Signed> {
        let first = rrset.first()?;
        let rtype = first.record_type();
        let dnskey = rtype == RecordType::DNSKEY;
        // Spread expirations by the RRset's hash.
        let early = if self.jitter == 0 {
            0
        } else {
            hash % (self.jitter + 1)
        };
        let expires = now + self.validity - early;
        let inception = now.saturating_sub(self.offset);
        let mut sigs = Vec::with_capacity(self.signers.len());
        for s in self
            .signers
            .iter()
            .filter(|s| if dnskey { s.dnskey } else { s.zone })
        {
            let input = SigInput {
                type_covered: rtype,
                algorithm: s.key.algorithm(),
                num_labels: first.name.num_labels(),
                original_ttl: first.ttl,
                sig_expiration: SerialNumber::new(expires as u32),
                sig_inception: SerialNumber::new(inception as u32),
                key_tag: s.tag,
                signer_name: self.origin.clone(),
            };
            let tbs = TBS::from_input(&first.name, DNSClass::IN, &input, rrset.iter()).ok()?;
            let sig = match s.key.sign(&tbs) {
                Ok(sig) => sig,
                Err(e) => {
                    tracing::error!(zone = %self.origin, key = s.tag, "signing failed: {e}");
                    return None;
                }
            };
            sigs.push(Record::from_rdata(
                first.name.clone(),
                first.ttl,
                RData::DNSSEC(DNSSECRData::RRSIG(RRSIG::from_sig(input, sig))),
            ));
        }
        Some(Signed {
            sigs: sigs.into(),
            expires,
        })
    }
}

/// RRsets queued for the store at build time, signed [`BATCH_PER_THREAD`]
/// per thread at a time on up to [`MAX_SIGNING_THREADS`] threads. The
/// threads run at a lower priority (nice 10 on Linux), so that signing a
/// large zone at a reload yields the CPU to the threads answering queries.
pub struct Batch<'a> {
    signer: &'a mut ZoneSigner,
    threads: usize,
    queued: HashMap<SigKey, Vec<Record>>,
}

/// RRsets each signing thread takes per batch.
const BATCH_PER_THREAD: usize = 2048;
/// At most this many signing threads.
const MAX_SIGNING_THREADS: usize = 16;
/// A batch this small is signed on the calling thread.
const MIN_PARALLEL_BATCH: usize = 128;

impl<'a> Batch<'a> {
    /// A batch signing into `signer`'s store at the time
    /// [`ZoneSigner::begin`] set, on as many threads as the process may
    /// use (at most [`MAX_SIGNING_THREADS`]).
    pub fn new(signer: &'a mut ZoneSigner) -> Self {
        let threads = std::thread::available_parallelism()
            .map_or(1, std::num::NonZeroUsize::get)
            .min(MAX_SIGNING_THREADS);
        Self::with_threads(signer, threads)
    }

    /// [`Self::new`] with `threads` threads (1: on the calling thread).
    pub fn with_threads(signer: &'a mut ZoneSigner, threads: usize) -> Self {
        Self {
            signer,
            threads: threads.max(1),
            queued: HashMap::new(),
        }
    }

    /// Queues `rrset` (records of one owner, type and TTL) unless the
    /// store or the queue has it already.
    pub fn add(&mut self, rrset: Vec<Record>) {
        let Some(key) = sig_key(&rrset) else { return };
        if self.signer.store.contains_key(&key) {
            return;
        }
        self.queued.entry(key).or_insert(rrset);
        if self.queued.len() >= BATCH_PER_THREAD * self.threads {
            self.flush();
        }
    }

    /// Signs what is still queued.
    pub fn finish(mut self) {
        self.flush();
    }

    fn flush(&mut self) {
        let work: Vec<(SigKey, Vec<Record>)> = self.queued.drain().collect();
        let signer: &ZoneSigner = self.signer;
        let now = signer.signed_at;
        let sign = |chunk: &[(SigKey, Vec<Record>)]| -> Vec<Option<Signed>> {
            chunk
                .iter()
                .map(|(key, rrset)| signer.sign(rrset, key.3, now))
                .collect()
        };
        let results: Vec<Option<Signed>> = if self.threads == 1 || work.len() < MIN_PARALLEL_BATCH {
            sign(&work)
        } else {
            let per = work.len().div_ceil(self.threads);
            std::thread::scope(|scope| {
                let running: Vec<_> = work
                    .chunks(per)
                    .map(|chunk| {
                        let spawned = std::thread::Builder::new()
                            .name("dnssec-sign".into())
                            .spawn_scoped(scope, move || {
                                lower_priority();
                                sign(chunk)
                            });
                        (chunk, spawned)
                    })
                    .collect();
                running
                    .into_iter()
                    .flat_map(|(chunk, spawned)| match spawned.map(|h| h.join()) {
                        Ok(Ok(signed)) => signed,
                        // No thread (or one that panicked): sign here.
                        _ => sign(chunk),
                    })
                    .collect()
            })
        };
        for ((key, _), signed) in work.into_iter().zip(results) {
            self.signer.keep(key, signed);
        }
    }
}

/// Lowers the calling thread's scheduling priority to nice 10.
#[allow(unsafe_code)] // setpriority, which std does not offer
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: setpriority changes the calling thread's nice value (Linux
    // keeps one per thread: `who` is its thread id); no memory is touched.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 10);
    }
}

impl Cache {
    fn insert(&mut self, key: SigKey, s: Signed) {
        if self.current.len() >= CACHE_GENERATION {
            self.previous = std::mem::take(&mut self.current);
        }
        self.current.insert(key, s);
    }
}

/// The store's key for `rrset`.
fn sig_key(rrset: &[Record]) -> Option<SigKey> {
    let first = rrset.first()?;
    let owner = first
        .name
        .to_lowercase()
        .to_bytes()
        .ok()?
        .into_boxed_slice();
    let mut wires: Vec<Vec<u8>> = rrset
        .iter()
        .filter_map(|r| {
            let mut buf = Vec::new();
            let mut enc = BinEncoder::new(&mut buf);
            enc.set_canonical_form(true);
            enc.set_name_encoding(NameEncoding::UncompressedLowercase);
            r.data.emit(&mut enc).ok()?;
            Some(buf)
        })
        .collect();
    wires.sort_unstable();
    let mut h = DefaultHasher::new();
    wires.hash(&mut h);
    Some((owner, u16::from(first.record_type()), first.ttl, h.finish()))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use hickory_proto::rr::rdata::A;

    use super::*;
    use crate::dnssec::keys::{self, FLAGS_KSK, KeyAlgorithm};
    use crate::dnssec::{KeyState, ZoneKey};

    fn signer(dir: &std::path::Path) -> ZoneSigner {
        let zone = Name::from_ascii("example.com.").unwrap();
        let alg = KeyAlgorithm::EcdsaP256Sha256;
        let (dnskey, private) = keys::generate(alg, FLAGS_KSK).unwrap();
        let base = dir.join("Kexample.com.+013+00001");
        keys::write_new(
            &keys::key_path(&base),
            &keys::dnskey_text(&zone, &dnskey),
            0o644,
        )
        .unwrap();
        keys::write_new(
            &keys::private_path(&base),
            &keys::private_text(alg, &private, "x"),
            0o600,
        )
        .unwrap();
        let cfg = DnssecConfig {
            keys: vec![ZoneKey {
                pair: keys::load(&base).unwrap(),
                state: KeyState::Active,
            }],
            signature_validity: Duration::from_secs(14 * 86_400),
            refresh_margin: Duration::from_secs(5 * 86_400),
            jitter: Duration::from_secs(12 * 3600),
            inception_offset: Duration::from_secs(3600),
            dnskey_ttl: 3600,
            online_signing_rate: 1000,
            clock: Clock::System,
        };
        ZoneSigner::new(&zone, &cfg)
    }

    fn expiration(sigs: &[Record]) -> u64 {
        match &sigs[0].data {
            RData::DNSSEC(DNSSECRData::RRSIG(s)) => u64::from(s.input().sig_expiration.get()),
            other => panic!("not an RRSIG: {other:?}"),
        }
    }

    /// Injected time, and no background re-sign (the safety net alone):
    /// the precomputed signature is served until less than half the
    /// refresh margin is left, then a new one is made on demand, and
    /// renewed when less than the margin is left; at no time is one
    /// served that expires within half the margin, or has expired.
    #[test]
    fn signatures_are_refreshed_before_they_expire() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = signer(dir.path());
        let name = Name::from_ascii("www.example.com.").unwrap();
        let rrset = [Record::from_rdata(name, 60, RData::A(A::new(192, 0, 2, 1)))];
        let t0: u64 = 1_800_000_000;
        s.begin(t0, None);
        s.precompute(&rrset, t0);
        let first = s.signatures(&rrset, t0).unwrap();
        let exp0 = expiration(&first);
        assert!(exp0 <= t0 + 14 * 86_400 && exp0 >= t0 + 14 * 86_400 - 12 * 3600);
        let online = ONLINE_SIGNATURES.load(Ordering::Relaxed);
        // Each hour for 60 days.
        let mut renewals = 0;
        let mut last = exp0;
        for h in 0..60 * 24 {
            let now = t0 + h * 3600;
            let sigs = s.signatures(&rrset, now).unwrap();
            let exp = expiration(&sigs);
            assert!(
                exp > now + 5 * 86_400 / 2,
                "hour {h}: expires within half the margin"
            );
            if exp != last {
                renewals += 1;
                last = exp;
            }
        }
        assert!(
            (6..=8).contains(&renewals),
            "{renewals} renewals in 60 days"
        );
        assert!(ONLINE_SIGNATURES.load(Ordering::Relaxed) >= online + renewals);
        assert_eq!(s.safety_net_renewals(), renewals, "each one counted");
    }

    /// The background re-sign is due `refresh_margin` before the earliest
    /// expiration, less a spread within `jitter` (and within half the
    /// time left), never before the signatures were made; a signer that
    /// replaces another keeps its safety-net count.
    #[test]
    fn the_refresh_time_is_the_margin_before_the_earliest_expiration() {
        let fresh = || signer(tempfile::tempdir().unwrap().path());
        let t0: u64 = 1_800_000_000;
        let sets: Vec<[Record; 1]> = (0..50u8)
            .map(|i| {
                [Record::from_rdata(
                    Name::from_ascii(format!("n{i}.example.com.")).unwrap(),
                    60,
                    RData::A(A::new(192, 0, 2, i)),
                )]
            })
            .collect();
        let mut seen_spread = false;
        for _ in 0..8 {
            let mut s = fresh();
            assert_eq!(s.refresh_at(), None, "nothing signed yet");
            s.begin(t0, None);
            for set in &sets {
                s.precompute(set, t0);
            }
            let earliest = s.earliest_expiry().unwrap();
            let expirations: Vec<u64> = sets
                .iter()
                .map(|set| expiration(&s.signatures(set, t0).unwrap()))
                .collect();
            assert_eq!(earliest, *expirations.iter().min().unwrap());
            assert!(earliest >= t0 + 14 * 86_400 - 12 * 3600);
            let at = s.refresh_at().unwrap();
            assert!(at <= earliest - 5 * 86_400, "at the margin or before");
            assert!(at >= earliest - 5 * 86_400 - 12 * 3600, "within the jitter");
            seen_spread |= at != earliest - 5 * 86_400;
            assert_eq!(s.failed(), 0);
            assert_eq!(s.signed_at(), t0);
        }
        assert!(seen_spread, "the spread is drawn at random");
        // No jitter: exactly the margin before the (only) expiration.
        let mut s = fresh();
        s.jitter = 0;
        s.begin(t0, None);
        s.precompute(&sets[0], t0);
        assert_eq!(s.refresh_at(), Some(t0 + 14 * 86_400 - 5 * 86_400));
        s.renewals.fetch_add(3, Ordering::Relaxed);
        let mut next = fresh();
        next.begin(t0 + 86_400, Some(&s));
        assert_eq!(next.safety_net_renewals(), 3);
        // A validity barely above margin + jitter: not due again at once.
        let mut tight = fresh();
        tight.jitter = 0;
        tight.validity = tight.margin + 1;
        tight.begin(t0, None);
        tight.precompute(&sets[0], t0);
        assert_eq!(tight.refresh_at(), Some(t0 + MIN_RESIGN_INTERVAL));
    }

    /// Beyond `online_signing_rate` in one second, new signatures are
    /// refused; the next second they are made again; cached ones are
    /// always served.
    #[test]
    fn the_online_budget_is_per_second() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = signer(dir.path());
        s.rate = 2;
        let now = 1_800_000_000;
        let set = |i: u8| {
            [Record::from_rdata(
                Name::from_ascii(format!("n{i}.example.com.")).unwrap(),
                60,
                RData::A(A::new(192, 0, 2, i)),
            )]
        };
        assert!(s.signatures(&set(1), now).is_ok());
        assert!(s.signatures(&set(2), now).is_ok());
        assert_eq!(s.signatures(&set(3), now).unwrap_err(), OverBudget);
        assert!(s.signatures(&set(1), now).is_ok(), "cached");
        assert!(s.signatures(&set(3), now + 1).is_ok(), "a new second");
        // A precomputed signature inside the safety margin is served
        // while the budget is spent, as long as it is valid.
        s.precompute(&set(9), now);
        let late = now + 12 * 86_400;
        assert!(s.signatures(&set(4), late).is_ok());
        assert!(s.signatures(&set(5), late).is_ok());
        let old = s.signatures(&set(9), now).unwrap();
        assert_eq!(s.signatures(&set(9), late).unwrap(), old, "stale but valid");
        let expired = now + 15 * 86_400;
        assert!(s.signatures(&set(6), expired).is_ok());
        assert!(s.signatures(&set(7), expired).is_ok());
        assert!(
            s.signatures(&set(9), expired).is_err(),
            "never an expired one"
        );
    }

    /// A batch signs on several threads what one thread would: every
    /// RRset once (duplicates and RRsets already stored are skipped),
    /// each signature valid for its RRset under the zone's key.
    #[test]
    fn batch_signs_on_threads_what_precompute_would() {
        use hickory_proto::dnssec::Verifier;
        let dir = tempfile::tempdir().unwrap();
        let mut s = signer(dir.path());
        let t0: u64 = 1_800_000_000;
        s.begin(t0, None);
        let set = |i: u32| {
            let name = Name::from_ascii(format!("n{}.example.com.", i % 7)).unwrap();
            vec![Record::from_rdata(
                name,
                60,
                RData::A(A::from(std::net::Ipv4Addr::from(0xc000_0200 + i))),
            )]
        };
        s.precompute(&set(0), t0);
        let mut batch = Batch::with_threads(&mut s, 3);
        for i in 0..600 {
            batch.add(set(i));
            batch.add(set(i % 50)); // seen before: skipped
        }
        batch.finish();
        assert_eq!(s.precomputed(), 600);
        assert_eq!(s.failed(), 0);
        let dnskey = s.dnskeys[0].clone();
        for i in (0..600).step_by(7) {
            let rrset = set(i);
            let (sigs, expires) = s.stored(&rrset).expect("stored");
            assert!(expires > t0 + 13 * 86_400, "{i}");
            let RData::DNSSEC(DNSSECRData::RRSIG(sig)) = &sigs[0].data else {
                panic!("not an RRSIG")
            };
            dnskey
                .verify_rrsig(&rrset[0].name, DNSClass::IN, sig, rrset.iter())
                .unwrap_or_else(|e| panic!("{i}: {e}"));
        }
    }
}
