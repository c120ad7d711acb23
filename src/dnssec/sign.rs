//! A zone's signer and its signatures.
//!
//! The store maps an RRset, identified by owner, type, TTL and a hash of
//! its canonical RDATA set (order-free, so a rotated answer finds the
//! same entry), to the RRSIG records that go after it. It is filled when
//! the snapshot is built ([`ZoneSigner::precompute`]) and read-only after;
//! an RRset not in it, or whose signatures near expiry, is signed on
//! demand into a bounded cache (two generations of at most
//! [`CACHE_GENERATION`] entries: when the current one fills, it becomes
//! the previous one and the older is dropped), within a per-second budget.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use hickory_proto::dnssec::rdata::{DNSKEY, DNSSECRData, RRSIG, SigInput};
use hickory_proto::dnssec::{SigningKey, TBS};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType, SerialNumber};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder, NameEncoding};

use super::{BUDGET_EXHAUSTED, DnssecConfig, ONLINE_SIGNATURES, PRECOMPUTED_SIGNATURES};

/// Entries per generation of the on-demand cache.
pub const CACHE_GENERATION: usize = 16_384;

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
        let signing = |k: &super::ZoneKey| k.state.signs();
        let signers = cfg
            .keys
            .iter()
            .filter(|k| signing(k))
            .map(|k| {
                let alg = k.pair.algorithm;
                let zsk_of_alg = cfg
                    .keys
                    .iter()
                    .any(|o| signing(o) && !o.pair.is_ksk() && o.pair.algorithm == alg);
                Signer {
                    key: Arc::clone(&k.pair.signer),
                    tag: k.pair.tag,
                    dnskey: k.pair.is_ksk(),
                    zone: !k.pair.is_ksk() || !zsk_of_alg,
                }
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
    /// the signatures in the store. Build time only.
    pub fn precompute(&mut self, rrset: &[Record], now: u64) {
        let Some(key) = sig_key(rrset) else { return };
        if self.store.contains_key(&key) {
            return;
        }
        if let Some(signed) = self.sign(rrset, key.3, now) {
            PRECOMPUTED_SIGNATURES.fetch_add(signed.sigs.len() as u64, Ordering::Relaxed);
            self.store.insert(key, signed);
        }
    }

    /// The RRSIGs to send after `rrset` at time `now`: from the store, else
    /// from the cache, else made now (counted, within the budget). Never
    /// one that expires within the refresh margin.
    pub fn signatures(&self, rrset: &[Record], now: u64) -> Result<Arc<[Record]>, OverBudget> {
        let Some(key) = sig_key(rrset) else {
            return Ok(Arc::from([]));
        };
        let fresh = |s: &Signed| s.expires > now + self.margin;
        if let Some(s) = self.store.get(&key).filter(|s| fresh(s)) {
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
            let stale = self
                .store
                .get(&key)
                .filter(|s| valid(s))
                .cloned()
                .or_else(|| {
                    let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
                    cache.current.get(&key).filter(|s| valid(s)).cloned()
                });
            if let Some(s) = stale {
                return Ok(s.sigs);
            }
            BUDGET_EXHAUSTED.fetch_add(1, Ordering::Relaxed);
            return Err(OverBudget);
        }
        let hash = key.3;
        let Some(signed) = self.sign(rrset, hash, now) else {
            return Ok(Arc::from([]));
        };
        ONLINE_SIGNATURES.fetch_add(signed.sigs.len() as u64, Ordering::Relaxed);
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
        };
        ZoneSigner::new(&zone, &cfg)
    }

    fn expiration(sigs: &[Record]) -> u64 {
        match &sigs[0].data {
            RData::DNSSEC(DNSSECRData::RRSIG(s)) => u64::from(s.input().sig_expiration.get()),
            other => panic!("not an RRSIG: {other:?}"),
        }
    }

    /// Injected time: the precomputed signature is served until less than
    /// the refresh margin is left, then a new one is made; at no time is
    /// one served that expires within the margin, or has expired.
    #[test]
    fn signatures_are_refreshed_before_they_expire() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = signer(dir.path());
        let name = Name::from_ascii("www.example.com.").unwrap();
        let rrset = [Record::from_rdata(name, 60, RData::A(A::new(192, 0, 2, 1)))];
        let t0: u64 = 1_800_000_000;
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
                exp > now + 5 * 86_400,
                "hour {h}: expires within the margin"
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
        // A precomputed signature inside the refresh margin is served
        // while the budget is spent, as long as it is valid.
        s.precompute(&set(9), now);
        let late = now + 10 * 86_400;
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
}
