//! Response rate limiting (RRL) for UDP, as BIND, Knot and NSD do it.
//!
//! A spoofed query makes an authoritative server send its answer to the
//! victim whose address was forged; the answer is bigger than the query,
//! so the server amplifies the attack. RRL caps how many responses of one
//! kind a client network receives per second. Over the cap, responses are
//! dropped, and every `slip`-th dropped one is sent as a small truncated
//! response (TC=1, question only) instead, so a real client behind that
//! network retries over TCP, which cannot be spoofed.
//!
//! # What is counted
//!
//! A response is classified from the bytes the handler wrote (header
//! flags, rcode and section counts), so the handler knows nothing of RRL:
//!
//! | kind | response | keyed by |
//! |---|---|---|
//! | answer | NOERROR with answers, and NODATA (AA, no answers) | client prefix, question (name case-folded, type) |
//! | NXDOMAIN | rcode 3 | client prefix |
//! | referral | NOERROR, no answers, authority records, AA clear | client prefix |
//! | error | any other rcode, and NOERROR that is none of the above (BADVERS) | client prefix |
//!
//! Answers are keyed by question as in BIND, so a resolver farm behind one
//! prefix that asks for many different names is not limited as one
//! client; the kinds an attacker can vary freely (random names give
//! NXDOMAIN, junk gives errors) are keyed by the prefix alone.
//!
//! # Accounting (BIND's)
//!
//! Each key has a balance, credited `rate` per second up to `rate` (one
//! second's worth, so a burst of `rate` responses passes) and debited one
//! per response. A response is sent if the balance after it is not
//! negative. The debt is
//! capped at `window × rate`, so a client that flooded is answered again
//! after at most `window` seconds of quiet; during a sustained flood
//! nothing but slips gets through.
//!
//! # The table
//!
//! All UDP threads share one fixed table: the kernel spreads one client's
//! queries over the `SO_REUSEPORT` sockets, so per-thread tables would
//! multiply the limit by the number of threads. The table is an array of
//! 4-way buckets of `AtomicU64` cells. A cell packs a 10-bit fingerprint
//! of the key, the time of the last update (22 bits of 1/16 s ticks), the
//! balance (28 bits, in 1/16 responses) and a 4-bit slip counter; it is
//! updated with one compare-exchange. A response that is not limited
//! costs a hash, one cache line of loads and that compare-exchange, and
//! nothing is allocated. The clock is read once per receive batch.
//!
//! Degradation is graceful and documented:
//! * Two keys in the same bucket with the same fingerprint share one
//!   budget (about 4 in 2^10 of the keys that land in one bucket), which
//!   at worst limits them together.
//! * A new key takes the bucket's stalest cell. A cell idle for more than
//!   `window + 1` seconds holds no debt, so evicting it loses nothing;
//!   while more keys are active than the table holds, evicted keys start
//!   over with a full budget. Size `table_size` above the number of
//!   (prefix, kind, question) keys active within a window.
//! * Times wrap every 72.8 hours. An entry untouched for a multiple of
//!   that (within a second) reads as recent and keeps its old balance; any
//!   debt it had is gone after `window` seconds.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use ipnet::IpNet;

use super::envelope::skip_name;
use crate::config::RrlConfig;

/// Clock resolution: ticks per second. Balances are kept in 1/TICKS
/// responses, so a tick's credit is exactly `rate` units.
const TICKS: u32 = 16;
/// One response, in balance units.
const COST: i64 = TICKS as i64;
/// Cells per bucket (32 bytes: half a cache line).
const WAYS: usize = 4;

const FP_SHIFT: u32 = 54;
const FP_MASK: u64 = (1 << 10) - 1;
const T_SHIFT: u32 = 32;
const T_MASK: u32 = (1 << 22) - 1;
const BAL_SHIFT: u32 = 4;
const BAL_MASK: u32 = (1 << 28) - 1;
/// Largest balance magnitude a cell holds.
const BAL_MAX: i64 = (1 << 27) - 1;
const SLIP_MASK: u64 = 0xf;
/// Threads read the clock at the start of their own batch, so one may
/// write a time slightly ahead of another's "now". Up to this many ticks
/// behind counts as no time passed rather than as a wrapped clock.
const SKEW: u32 = TICKS;

/// What to do with one response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Within the limit: send it.
    Send,
    /// Over the limit: send nothing.
    Drop,
    /// Over the limit, but this one is sent truncated.
    Slip,
}

/// Response kinds, each with its own limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// NOERROR with answers, and NODATA.
    Answer = 0,
    /// NXDOMAIN.
    Nxdomain = 1,
    /// A referral to a delegated child.
    Referral = 2,
    /// FORMERR, SERVFAIL, REFUSED, NOTIMP, BADVERS, ...
    Error = 3,
}

/// Responses the limiter withheld since start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct RrlStats {
    /// Responses dropped.
    pub dropped: u64,
    /// Responses sent truncated instead of dropped.
    pub slipped: u64,
}

/// One kind's limit in balance units. `per_tick == 0`: no limit.
#[derive(Clone, Copy, Debug, Default)]
struct Rate {
    per_tick: i64,
    max: i64,
    floor: i64,
}

impl Rate {
    fn new(per_second: u32, window: u32) -> Self {
        let per_tick = i64::from(per_second);
        let max = (per_tick * COST).min(BAL_MAX);
        Self {
            per_tick,
            max,
            floor: -(i64::from(window) * max).min(BAL_MAX),
        }
    }
}

/// The reloadable part of the settings, read once per batch.
#[derive(Debug)]
struct Policy {
    enabled: bool,
    rates: [Rate; 4],
    slip: u8,
    v4_mask: u32,
    v6_mask: u128,
    exempt: Vec<IpNet>,
}

impl Policy {
    fn new(c: &RrlConfig) -> Self {
        let rate = |r| Rate::new(r, c.window);
        Self {
            enabled: c.enabled,
            rates: [
                rate(c.responses_per_second),
                rate(c.nxdomains_per_second),
                rate(c.referrals_per_second),
                rate(c.errors_per_second),
            ],
            slip: c.slip,
            v4_mask: u32::MAX
                .checked_shl(32 - u32::from(c.ipv4_prefix_length.min(32)))
                .unwrap_or(0),
            v6_mask: u128::MAX
                .checked_shl(128 - u32::from(c.ipv6_prefix_length.min(128)))
                .unwrap_or(0),
            exempt: c.exempt.clone(),
        }
    }
}

#[derive(Debug, Default)]
#[repr(align(32))]
struct Bucket([AtomicU64; WAYS]);

/// The shared rate limiter: one per server, used by every UDP thread.
#[derive(Debug)]
pub struct Limiter {
    buckets: Box<[Bucket]>,
    mask: usize,
    seed: u64,
    start: Instant,
    policy: ArcSwap<Policy>,
    dropped: AtomicU64,
    slipped: AtomicU64,
}

impl Limiter {
    /// A limiter with `config`'s settings and a table of
    /// `config.table_size` entries (rounded up to a power of two, at least
    /// one bucket).
    pub fn new(config: &RrlConfig) -> Self {
        let buckets = (config.table_size as usize / WAYS).next_power_of_two();
        Self {
            buckets: (0..buckets).map(|_| Bucket::default()).collect(),
            mask: buckets - 1,
            // Keys are hashed with a secret, so nobody can aim collisions.
            seed: {
                use std::hash::{BuildHasher, RandomState};
                RandomState::new().hash_one(0x5252_4c00u64)
            },
            start: Instant::now(),
            policy: ArcSwap::from_pointee(Policy::new(config)),
            dropped: AtomicU64::new(0),
            slipped: AtomicU64::new(0),
        }
    }

    /// Applies reloaded settings (all but `table_size`, which needs a
    /// restart). Balances are kept.
    pub fn configure(&self, config: &RrlConfig) {
        self.policy.store(Arc::new(Policy::new(config)));
    }

    /// Entries in the table.
    pub fn table_entries(&self) -> usize {
        self.buckets.len() * WAYS
    }

    /// Responses withheld since start.
    pub fn stats(&self) -> RrlStats {
        RrlStats {
            dropped: self.dropped.load(Ordering::Relaxed),
            slipped: self.slipped.load(Ordering::Relaxed),
        }
    }

    /// Starts a batch of responses at the current time: one clock read
    /// and one settings load for all of them. `None` when RRL is off.
    pub fn batch(&self) -> Option<Batch<'_>> {
        self.batch_at(self.start.elapsed())
    }

    /// [`Self::batch`] at `since_start` after the limiter was created:
    /// time injected, for tests.
    pub fn batch_at(&self, since_start: Duration) -> Option<Batch<'_>> {
        let policy = self.policy.load();
        if !policy.enabled {
            return None;
        }
        let ticks = since_start.as_secs() * u64::from(TICKS)
            + u64::from(since_start.subsec_nanos() / (1_000_000_000 / TICKS));
        Some(Batch {
            limiter: self,
            policy,
            now: (ticks & u64::from(T_MASK)) as u32,
        })
    }

    /// The table key of a response: client prefix, kind and, for
    /// answers, the question.
    fn key(&self, policy: &Policy, client: IpAddr, kind: Kind, question: u64) -> u64 {
        let (lo, hi, family) = match client {
            IpAddr::V4(a) => (u64::from(u32::from(a) & policy.v4_mask), 0, 4),
            IpAddr::V6(a) => {
                let x = u128::from(a) & policy.v6_mask;
                (x as u64, (x >> 64) as u64, 6)
            }
        };
        let h = mix(lo ^ self.seed, hi ^ 0x243f_6a88_85a3_08d3);
        mix(
            h ^ (family << 8 | kind as u64),
            question ^ 0x1319_8a2e_0370_7344,
        )
    }

    /// Charges one response to `key`.
    fn account(&self, key: u64, now: u32, rate: &Rate, slip: u8) -> Verdict {
        let bucket = &self.buckets[(key as usize) & self.mask];
        let fp = match (key >> FP_SHIFT) & FP_MASK {
            0 => 1, // 0 marks an empty cell
            f => f,
        };
        // A lost race means another thread updated the cell in between
        // (and so made progress): recompute from its value.
        loop {
            let mut slot = 0;
            let mut current = bucket.0[0].load(Ordering::Relaxed);
            let mut stalest = 0;
            for (i, cell) in bucket.0.iter().enumerate() {
                let c = if i == 0 {
                    current
                } else {
                    cell.load(Ordering::Relaxed)
                };
                if (c >> FP_SHIFT) & FP_MASK == fp {
                    slot = i;
                    current = c;
                    break;
                }
                let age = if c == 0 { u32::MAX } else { age(c, now) };
                if i == 0 || age > stalest {
                    slot = i;
                    current = c;
                    stalest = age;
                }
            }
            let (new, verdict) = step(current, fp, now, rate, slip);
            if bucket.0[slot]
                .compare_exchange_weak(current, new, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
            {
                return verdict;
            }
        }
    }
}

/// The responses of one receive batch, at one instant.
pub struct Batch<'a> {
    limiter: &'a Limiter,
    policy: arc_swap::Guard<Arc<Policy>>,
    now: u32,
}

impl Batch<'_> {
    /// Decides whether `response`, about to go to `client` over UDP, is
    /// sent. `true`: send `response`, which a slip has cut down to a
    /// truncated one. `false`: drop it. `exempt`: the client proved its
    /// address (a valid server cookie), so it is never limited.
    pub fn check(&self, client: IpAddr, response: &mut Vec<u8>, exempt: bool) -> bool {
        if exempt {
            return true;
        }
        let Some((kind, question)) = classify(response) else {
            return true;
        };
        let rate = &self.policy.rates[kind as usize];
        if rate.per_tick == 0 {
            return true;
        }
        // An IPv4-mapped address is an IPv4 client: a /56 of the mapped
        // range would otherwise put every IPv4 client in one budget.
        let client = client.to_canonical();
        let key = self.limiter.key(&self.policy, client, kind, question);
        let verdict = self.limiter.account(key, self.now, rate, self.policy.slip);
        // Exempt networks are looked up only when a limit is hit, so the
        // list costs nothing on the common path.
        if verdict == Verdict::Send || self.policy.exempt.iter().any(|n| n.contains(&client)) {
            return true;
        }
        if verdict == Verdict::Slip {
            // An error is as small as a truncated response and a TCP
            // retry would only repeat it, so it is sent (stripped) as is,
            // as BIND does.
            truncate(response, kind != Kind::Error);
            self.limiter.slipped.fetch_add(1, Ordering::Relaxed);
            true
        } else {
            self.limiter.dropped.fetch_add(1, Ordering::Relaxed);
            false
        }
    }
}

/// Folded multiply: a fast, well-mixing step (as in foldhash).
fn mix(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ ((p >> 64) as u64)
}

fn decode(cell: u64) -> (u32, i64, u8) {
    let t = (cell >> T_SHIFT) as u32 & T_MASK;
    let raw = (cell >> BAL_SHIFT) as u32 & BAL_MASK;
    // Sign-extend the 28-bit balance.
    let balance = i64::from(((raw << 4) as i32) >> 4);
    (t, balance, (cell & SLIP_MASK) as u8)
}

fn encode(fp: u64, t: u32, balance: i64, slips: u8) -> u64 {
    (fp << FP_SHIFT)
        | (u64::from(t & T_MASK) << T_SHIFT)
        | (u64::from(balance as i32 as u32 & BAL_MASK) << BAL_SHIFT)
        | (u64::from(slips) & SLIP_MASK)
}

/// Ticks since `cell` was last updated (0 if it is slightly ahead).
fn age(cell: u64, now: u32) -> u32 {
    let elapsed = now.wrapping_sub(decode(cell).0) & T_MASK;
    if elapsed > T_MASK - SKEW { 0 } else { elapsed }
}

/// One response charged to a cell: the new cell and the verdict. `cell`
/// belongs to the key when its fingerprint is `fp`; otherwise the key
/// starts afresh in it with a full balance. Pure, for tests.
fn step(cell: u64, fp: u64, now: u32, rate: &Rate, slip: u8) -> (u64, Verdict) {
    let (mut t, mut balance, mut slips) = if (cell >> FP_SHIFT) & FP_MASK == fp {
        decode(cell)
    } else {
        (now, rate.max, 0)
    };
    let elapsed = now.wrapping_sub(t) & T_MASK;
    if elapsed <= T_MASK - SKEW {
        balance = (balance + i64::from(elapsed) * rate.per_tick).min(rate.max);
        t = now;
    }
    balance -= COST;
    let verdict = if balance >= 0 {
        Verdict::Send
    } else {
        balance = balance.max(rate.floor);
        slips += 1;
        if slip != 0 && slips >= slip {
            slips = 0;
            Verdict::Slip
        } else {
            if slip == 0 {
                slips = 0;
            }
            Verdict::Drop
        }
    };
    (encode(fp, t, balance, slips), verdict)
}

const FLAG_AA: u8 = 0x04;
const FLAG_TC: u8 = 0x02;

fn count(r: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([r[at], r[at + 1]])
}

/// The kind of `response` and, for answers, a hash of its question.
/// `None` for anything shorter than a header.
pub fn classify(response: &[u8]) -> Option<(Kind, u64)> {
    if response.len() < 12 {
        return None;
    }
    let aa = response[2] & FLAG_AA != 0;
    let (answers, authority) = (count(response, 6), count(response, 8));
    let kind = match response[3] & 0x0f {
        0 if answers > 0 || aa => Kind::Answer,
        0 if authority > 0 => Kind::Referral,
        3 => Kind::Nxdomain,
        // Other rcodes, and a NOERROR without records or AA (BADVERS,
        // whose upper rcode bits are in OPT).
        _ => Kind::Error,
    };
    let question = if kind == Kind::Answer {
        question_hash(response)
    } else {
        0
    };
    Some((kind, question))
}

/// ASCII-lowercases eight bytes at once (leaving every other byte alone).
fn lower8(x: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let low7 = x & !HIGH;
    // Per byte, no carries (0x7f + 0x3f < 0x100): the high bit is set
    // where the byte is >= 'A', and where it is > 'Z'.
    let ge_a = low7 + ONES * (0x80 - u64::from(b'A'));
    let gt_z = low7 + ONES * (0x80 - u64::from(b'Z') - 1);
    let upper = ge_a & !gt_z & !x & HIGH;
    x | (upper >> 2)
}

/// Hash of the question name (case-folded: resolvers randomise case, RFC
/// draft "0x20") and type. 0 when there is no readable question.
fn question_hash(r: &[u8]) -> u64 {
    if count(r, 4) == 0 {
        return 0;
    }
    let Some(end) = skip_name(r, 12) else {
        return 0;
    };
    // The name and the type, eight bytes at a time. Case-folding the type
    // too only merges type 65 with 97 (and so on): harmless.
    let end = (end + 2).min(r.len());
    let mut h: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut at = 12;
    while at < end {
        let word = match r.get(at..at + 8) {
            Some(w) => u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]),
            None => {
                let mut w = [0u8; 8];
                w[..r.len() - at].copy_from_slice(&r[at..]);
                u64::from_le_bytes(w)
            }
        };
        // Bytes past `end` (the class, the next section) are masked off.
        let take = end - at;
        let word = if take < 8 {
            word & ((1u64 << (8 * take)) - 1)
        } else {
            word
        };
        h = mix(h ^ lower8(word), 0xa076_1d64_78bd_642f);
        at += 8;
    }
    mix(h, 0xe703_7ed1_a0b4_28db)
}

/// Cuts `response` down to its header, question and OPT record, with no
/// answer or authority records, and sets TC if `tc`. In place, without
/// allocating.
pub fn truncate(response: &mut Vec<u8>, tc: bool) {
    if response.len() < 12 {
        return;
    }
    let counts = [
        count(response, 4),
        count(response, 6),
        count(response, 8),
        count(response, 10),
    ];
    let mut end = 12;
    let mut questions = 0u16;
    if counts[0] > 0
        && let Some(e) = skip_name(response, 12).filter(|e| e + 4 <= response.len())
    {
        end = e + 4;
        questions = 1;
    }
    // The OPT record, if any, is among the additional records.
    let mut opt = None;
    let mut at = end;
    let records = usize::from(counts[1]) + usize::from(counts[2]) + usize::from(counts[3]);
    for i in 0..records {
        let Some(fixed) = skip_name(response, at) else {
            break;
        };
        let Some(header) = response.get(fixed..fixed + 10) else {
            break;
        };
        let rtype = u16::from_be_bytes([header[0], header[1]]);
        let next = fixed + 10 + usize::from(u16::from_be_bytes([header[8], header[9]]));
        if next > response.len() {
            break;
        }
        if rtype == 41 && i >= usize::from(counts[1]) + usize::from(counts[2]) {
            opt = Some(at..next);
            break;
        }
        at = next;
    }
    if tc {
        response[2] |= FLAG_TC;
    }
    response[4..12].fill(0);
    response[5] = questions as u8;
    if let Some(range) = opt {
        let len = range.len();
        response.copy_within(range, end);
        end += len;
        response[11] = 1;
    }
    response.truncate(end);
}

#[cfg(test)]
mod tests;
