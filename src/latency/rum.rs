//! The real-user measurement (RUM) aggregator: per client network and
//! datacenter, a decayed, outlier-trimmed mean RTT, published every
//! `publish_interval` into two immutable [`KeyTable`]s (the fine and the
//! coarse level) that the query path reads without a lock.
//!
//! [`Aggregator`] is pure and synchronous: no clock (time comes in as
//! `now`, unix seconds) and no I/O except [`Aggregator::save`] and
//! [`Aggregator::load`]. The caller keeps it behind a `Mutex`. It knows
//! nothing of addresses: a key is whatever `u64` the caller derives
//! ([`super::table::key_for`], or an AS number).
//!
//! # Data model
//!
//! An *entry* is one key of one level. It holds, per datacenter column,
//! a decayed sample weight `w` and a weighted mean `m` (ms), plus the
//! time of its newest sample (`last_seen`) and its hysteresis incumbent.
//! Datacenters are columns of an append-only registry of names
//! ([`Aggregator::configure`]); a name keeps its column for the life of
//! the aggregator, and the state file maps columns back to names.
//!
//! # Decay and trimming
//!
//! A sample `x` of weight `s` at time `t` first decays the row:
//! `w *= 2^(-(t - last_seen) / half_life)` for every column. Once a
//! column's `w >= min_samples`, `x` is clamped into `[m/2, 2m]`
//! (winsorising), then `m = (m*w + x*s) / (w + s)` and `w += s`. A sample
//! of weight `s` counts as `s` unit samples of the same value: while it is
//! clamped it is applied one unit at a time, so a heavy import shifts a
//! row as far as that many beacons would, and no further. One wild sample
//! moves the mean by at most `m / (w + 1)`; a sustained shift wins, by a
//! factor `(w + 2) / (w + 1)` per sample while clamped. Weights above
//! [`MAX_SAMPLE_WEIGHT`] count as that many.
//!
//! A sample is rejected (counted, not applied) unless its column is
//! registered, its RTT is finite with `0 < rtt <= max_rtt_ms` and its
//! weight is finite and positive.
//!
//! # Publication and hysteresis
//!
//! [`Aggregator::publish`] decays every row to `now` (without storing it:
//! weights are kept as of `last_seen`). A cell whose decayed weight is
//! below `min_samples` is published as `Cell::default()`; a row with no
//! cell left is not published (and loses its incumbent), but its entry is
//! kept until its total weight falls below 0.01, when it is freed.
//!
//! Each published row has an incumbent, the column that ranks first. It
//! is kept unless another column with enough samples has a mean lower by
//! more than `margin_ms` **and** by more than `margin_percent` % of the
//! incumbent's, or the incumbent lost its samples; then the best column
//! (lowest mean, ties to the lower column) takes over and `since = now`.
//!
//! # Memory cap and eviction
//!
//! At most `max_keys` entries over both levels. When a new key arrives at
//! the cap, the least recently seen `max(1, max_keys / 64)` entries are
//! evicted at once (one selection scan per 1/64 of the cap, not one per
//! key). Order: `last_seen` ascending, ties by key ascending, then fine
//! before coarse. Lowering the cap ([`Aggregator::configure`]) evicts
//! down to the new cap at once, in the same order.
//!
//! Entries live in a slot arena, not a box each: parallel vectors of keys
//! (8 bytes), per-slot metadata (12 bytes) and `width` `(mean, weight)`
//! `f32` pairs (8 bytes each), found through an open-addressing index of
//! `u32` slot numbers (linear probing, load at most 3/4, backward-shift
//! deletion, SipHash with a random key: client networks come from the
//! internet). A freed slot is filled by the last one, so the arena stays
//! dense. With 10 datacenters that is about 108 bytes per key; a published
//! row costs 20 bytes plus 4 per datacenter, and is written straight into
//! the vectors that become the table ([`KeyTable::from_parts`]).
//!
//! # State file
//!
//! Little-endian, settings-independent:
//!
//! ```text
//! "MRLAT1"  u16 version (1)  u16 name count  { u16 length, UTF-8 name }*
//! u64 entry count
//! { u8 level (0 fine, 1 coarse)  u64 key  u32 last_seen  u16 incumbent
//!   (file column, 0xffff none)  u32 since  { f32 mean, f32 weight } per name }*
//! u64 SipHash-1-3 (keys 0, 0) of every byte before it
//! ```
//!
//! Weights are stored as of `last_seen` (the decay reference). Loading
//! merges into the current state: names are mapped to the registry by
//! name (unknown names are registered), an existing entry is combined
//! with the saved one (weights decayed to the later `last_seen`, means
//! weighted), entries negligible at `now` are skipped, and the cap
//! applies. The file is checked in full (length, every field, checksum)
//! before anything is applied, so a corrupt file changes nothing.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::fs::File;
use std::hash::{BuildHasher, Hasher};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::Arc;

use siphasher::sip::SipHasher13;

use super::beats;
use super::table::{Cell, KeyTable, NO_INCUMBENT, RowMeta};

/// The largest weight one sample counts for (the admin import's limit).
pub const MAX_SAMPLE_WEIGHT: f64 = 10_000.0;

/// An entry whose total decayed weight is below this is freed.
const NEGLIGIBLE: f64 = 0.01;

/// Columns: `NO_INCUMBENT` (`u16::MAX`) is not a column.
const MAX_COLUMNS: usize = NO_INCUMBENT as usize;

//------------ AggSettings ----------------------------------------------------

/// The aggregator's part of `[latency]`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AggSettings {
    /// Half-life of a sample's weight, seconds (`half_life`).
    pub half_life_secs: f64,
    /// Decayed weight a cell needs to be published (`min_samples`).
    pub min_samples: u16,
    /// Entries kept over both levels (`max_keys`).
    pub max_keys: usize,
    /// Hysteresis: a challenger must be better by more than this (ms)...
    pub margin_ms: f64,
    /// ...and by more than this percentage of the incumbent's mean.
    pub margin_percent: f64,
    /// Samples above this RTT (ms) are rejected as impossible.
    pub max_rtt_ms: f64,
}

impl Default for AggSettings {
    /// The `[latency]` defaults.
    fn default() -> Self {
        Self::from(&crate::config::LatencyConfig::default())
    }
}

impl From<&crate::config::LatencyConfig> for AggSettings {
    fn from(c: &crate::config::LatencyConfig) -> Self {
        Self {
            half_life_secs: c.half_life.as_secs_f64(),
            min_samples: c.min_samples,
            max_keys: c.max_keys,
            margin_ms: c.margin_ms,
            margin_percent: c.margin_percent,
            max_rtt_ms: c.max_rtt_ms,
        }
    }
}

impl AggSettings {
    /// The settings with values the arithmetic below relies on; config
    /// validation keeps real values well inside these.
    fn sanitized(self) -> Self {
        let d = Self::default();
        let pick = |v: f64, ok: bool, default: f64| if ok { v } else { default };
        Self {
            half_life_secs: pick(
                self.half_life_secs,
                self.half_life_secs.is_finite() && self.half_life_secs > 0.0,
                d.half_life_secs,
            ),
            min_samples: self.min_samples.max(1),
            // Slot numbers are u32 and u32::MAX marks an empty bucket; two
            // keys (fine and coarse) may arrive at once.
            max_keys: self.max_keys.clamp(2, (u32::MAX / 2) as usize),
            margin_ms: pick(
                self.margin_ms,
                self.margin_ms.is_finite() && self.margin_ms >= 0.0,
                d.margin_ms,
            ),
            margin_percent: pick(
                self.margin_percent,
                self.margin_percent.is_finite() && self.margin_percent >= 0.0,
                d.margin_percent,
            ),
            max_rtt_ms: pick(
                self.max_rtt_ms,
                self.max_rtt_ms.is_finite() && self.max_rtt_ms > 0.0,
                d.max_rtt_ms,
            ),
        }
    }
}

//------------ Published, AggStats -------------------------------------

const FINE: u8 = 0;
const COARSE: u8 = 1;

/// One publication: both levels, with the column names they index.
pub use super::Rum as Published;

/// Counters for `/status`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AggStats {
    /// Entries of the fine level.
    pub fine_keys: usize,
    /// Entries of the coarse level.
    pub coarse_keys: usize,
    /// Entries evicted by the cap, ever.
    pub evictions: u64,
    /// Entries freed because their weight decayed away, ever.
    pub expired: u64,
    /// Samples applied, ever (one per sample, whatever the levels).
    pub samples_accepted: u64,
    /// Samples rejected (unknown column, impossible RTT or weight), ever.
    pub samples_rejected: u64,
    /// Heap bytes in use: the arena's entries and the whole index. Vector
    /// reserve beyond that is address space the kernel backs only once
    /// touched; [`Aggregator::publish`] returns it when entries expire.
    pub bytes: usize,
}

//------------ Aggregator -----------------------------------------------------

/// One datacenter's running estimate in an entry.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[repr(C)]
struct Acc {
    mean: f32,
    weight: f32,
}

/// Per-entry data besides the key and the cells.
#[derive(Clone, Copy, Debug)]
struct SlotMeta {
    /// Newest sample, and the time the stored weights refer to.
    last_seen: u32,
    since: u32,
    incumbent: u16,
    level: u8,
}

/// An empty index bucket.
const EMPTY: u32 = u32::MAX;

/// The RUM aggregation; see the module docs.
pub struct Aggregator {
    settings: AggSettings,
    names: Vec<String>,
    published_names: Arc<[String]>,
    /// Slot arena: `keys[s]`, `meta[s]`, `cells[s * width..][..width]`
    /// with `width == names.len()`.
    keys: Vec<u64>,
    meta: Vec<SlotMeta>,
    cells: Vec<Acc>,
    /// Open addressing over slots; the length is a power of two.
    buckets: Vec<u32>,
    hasher: RandomState,
    fine_keys: usize,
    coarse_keys: usize,
    evictions: u64,
    expired: u64,
    accepted: u64,
    rejected: u64,
}

impl fmt::Debug for Aggregator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Aggregator")
            .field("settings", &self.settings)
            .field("names", &self.names)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Aggregator {
    /// An empty aggregator with no datacenter registered yet.
    pub fn new(settings: AggSettings) -> Self {
        Self {
            settings: settings.sanitized(),
            names: Vec::new(),
            published_names: Arc::from(Vec::new()),
            keys: Vec::new(),
            meta: Vec::new(),
            cells: Vec::new(),
            buckets: vec![EMPTY; 16],
            hasher: RandomState::new(),
            fine_keys: 0,
            coarse_keys: 0,
            evictions: 0,
            expired: 0,
            accepted: 0,
            rejected: 0,
        }
    }

    /// Applies new settings (a reload) and registers `names` that are not
    /// registered yet, in order, as new columns. Names are never
    /// unregistered (a datacenter removed from the config keeps its data
    /// and its column). A cap below the number of entries evicts the
    /// least recently seen at once. Beyond 65,535 names, more are ignored.
    pub fn configure(&mut self, settings: AggSettings, names: &[String]) {
        self.settings = settings.sanitized();
        self.register(names.iter().map(String::as_str));
        let cap = self.settings.max_keys;
        if self.keys.len() > cap {
            self.evict(self.keys.len() - cap);
        }
    }

    /// The column of a registered datacenter.
    pub fn column(&self, name: &str) -> Option<u16> {
        let i = self.names.iter().position(|n| n == name)?;
        u16::try_from(i).ok()
    }

    /// Registered names, by column.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Applies one client's samples, each `(column, rtt_ms, weight)`, to
    /// the entry `fine` of the fine level and, if given, to `coarse` of
    /// the coarse level, creating them as needed (at the cap, after an
    /// eviction). Invalid samples are counted and skipped; with none
    /// valid, nothing is created.
    pub fn add(&mut self, fine: u64, coarse: Option<u64>, samples: &[(u16, f64, f64)], now: u32) {
        let width = self.names.len();
        let max_rtt = self.settings.max_rtt_ms;
        let valid = |&(c, rtt, w): &(u16, f64, f64)| {
            usize::from(c) < width
                && rtt.is_finite()
                && rtt > 0.0
                && rtt <= max_rtt
                && w.is_finite()
                && w > 0.0
        };
        let good = samples.iter().filter(|s| valid(s)).count();
        self.rejected += (samples.len() - good) as u64;
        if good == 0 {
            return;
        }
        self.accepted += good as u64;
        // Probing for new keys costs two hashes: only near the cap.
        if self.keys.len() + 2 > self.settings.max_keys {
            let need = usize::from(self.probe(FINE, fine).is_err())
                + coarse.map_or(0, |c| usize::from(self.probe(COARSE, c).is_err()));
            self.make_room(need);
        }
        let min = f64::from(self.settings.min_samples);
        let levels = [(FINE, Some(fine)), (COARSE, coarse)];
        for (level, key) in levels {
            let Some(key) = key else { continue };
            let s = self.insert(level, key, now);
            self.decay_row_to(s, now);
            let row = &mut self.cells[s * width..(s + 1) * width];
            for &(c, rtt, w) in samples.iter().filter(|s| valid(s)) {
                apply(&mut row[usize::from(c)], rtt, w.min(MAX_SAMPLE_WEIGHT), min);
            }
        }
    }

    /// Publishes both levels as of `now` (see the module docs), updates
    /// the incumbents and frees negligible entries.
    pub fn publish(&mut self, now: u32) -> Published {
        let width = self.names.len();
        let min = f64::from(self.settings.min_samples);
        let mut s = 0;
        while s < self.keys.len() {
            let f = self.decay_factor(s, now);
            let total: f64 = self.row(s).iter().map(|a| f64::from(a.weight)).sum();
            if total * f < NEGLIGIBLE {
                self.remove(s);
                self.expired += 1;
            } else {
                s += 1;
            }
        }
        self.shrink();
        // Slot numbers (4 bytes each) sorted by key: the least memory
        // beside the tables. Most of a publication's time is reading the
        // rows in key order, not this sort.
        let mut order: Vec<u32> = Vec::with_capacity(self.keys.len());
        for s in 0..self.keys.len() {
            let f = self.decay_factor(s, now);
            if self.row(s).iter().any(|a| f64::from(a.weight) * f >= min) {
                order.push(s as u32);
            } else {
                self.meta[s].incumbent = NO_INCUMBENT;
            }
        }
        order.sort_unstable_by_key(|&s| (self.meta[s as usize].level, self.keys[s as usize]));
        let split = order.partition_point(|&s| self.meta[s as usize].level == FINE);
        let fine = self.build(&order[..split], now, width, min);
        let coarse = self.build(&order[split..], now, width, min);
        Published {
            fine,
            coarse,
            names: Arc::clone(&self.published_names),
        }
    }

    /// Counters and the memory estimate.
    pub fn stats(&self) -> AggStats {
        let names: usize = self.names.iter().map(|n| n.len()).sum();
        AggStats {
            fine_keys: self.fine_keys,
            coarse_keys: self.coarse_keys,
            evictions: self.evictions,
            expired: self.expired,
            samples_accepted: self.accepted,
            samples_rejected: self.rejected,
            bytes: self.keys.len() * (size_of::<u64>() + size_of::<SlotMeta>())
                + self.cells.len() * size_of::<Acc>()
                + self.buckets.len() * size_of::<u32>()
                + names
                + self.names.len() * size_of::<String>(),
        }
    }

    /// Writes the state file: a temporary file in the same directory
    /// (created with O_EXCL under a random name, mode 0600: it lists
    /// client networks), synced, then renamed over `path`. After a crash
    /// the file is the old one or the new one.
    pub fn save(&self, path: &Path) -> io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        crate::persist::save(path, std::fs::Permissions::from_mode(0o600), |file| {
            let mut w = Checksummed::new(BufWriter::with_capacity(1 << 16, file));
            self.write_state(&mut w)?;
            let sum = w.sum.finish();
            let mut inner = w.inner;
            inner.write_all(&sum.to_le_bytes())?;
            inner.flush()
        })
    }

    /// Merges the state file at `path` (see the module docs) and returns
    /// the number of entries merged. A missing file is `Ok(0)`. A file
    /// that fails any check is `Err(reason)` and changes nothing. Also
    /// removes the temporary files a save interrupted by a crash left
    /// beside `path` (`.NAME.*.tmp`; each as large as the state file).
    pub fn load(&mut self, path: &Path, now: u32) -> Result<usize, String> {
        crate::persist::remove_stale_temporaries(path, &[]);
        let mut file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(format!("cannot open: {e}")),
        };
        let len = file
            .metadata()
            .map_err(|e| format!("cannot read metadata: {e}"))?
            .len();
        // Pass 1: check everything, apply nothing.
        let header = {
            let mut r = Checksummed::new(BufReader::with_capacity(1 << 16, &mut file));
            let header = Header::read(&mut r, len)?;
            let mut entry = Entry::with_width(header.names.len());
            for i in 0..header.entries {
                entry.read(&mut r).map_err(|e| format!("entry {i}: {e}"))?;
            }
            let sum = r.sum.finish();
            let stored = read_u64(&mut r.inner).map_err(|e| format!("checksum: {e}"))?;
            if sum != stored {
                return Err("checksum mismatch".to_string());
            }
            header
        };
        let new_names = header
            .names
            .iter()
            .filter(|n| self.column(n).is_none())
            .count();
        if self.names.len() + new_names > MAX_COLUMNS {
            return Err(format!(
                "{new_names} new datacenter names would exceed {MAX_COLUMNS} columns"
            ));
        }
        // Pass 2: the same bytes again (the open file survives a rename
        // over its path), applied.
        file.seek(SeekFrom::Start(0))
            .map_err(|e| format!("cannot rewind: {e}"))?;
        let mut r = BufReader::with_capacity(1 << 16, &mut file);
        let again = Header::read(&mut r, len)?;
        if again.names != header.names || again.entries != header.entries {
            return Err("the file changed while it was read".to_string());
        }
        self.register(header.names.iter().map(String::as_str));
        let remap: Vec<u16> = header
            .names
            .iter()
            .map(|n| self.column(n).unwrap_or(NO_INCUMBENT))
            .collect();
        let mut entry = Entry::with_width(header.names.len());
        let mut merged = 0;
        for i in 0..header.entries {
            entry.read(&mut r).map_err(|e| format!("entry {i}: {e}"))?;
            if self.merge(&entry, &remap, now) {
                merged += 1;
            }
        }
        Ok(merged)
    }
}

//------------ Aggregator internals -------------------------------------------

impl Aggregator {
    fn width(&self) -> usize {
        self.names.len()
    }

    fn row(&self, s: usize) -> &[Acc] {
        let w = self.width();
        &self.cells[s * w..(s + 1) * w]
    }

    /// `2^(-(now - last_seen) / half_life)`; 1 when `now` is not later.
    fn decay_factor(&self, s: usize, now: u32) -> f64 {
        decay(
            now.saturating_sub(self.meta[s].last_seen),
            self.settings.half_life_secs,
        )
    }

    /// Decays slot `s` to `now` and makes `now` its `last_seen` (a clock
    /// that went back leaves both as they are).
    fn decay_row_to(&mut self, s: usize, now: u32) {
        let last = self.meta[s].last_seen;
        if now <= last {
            return;
        }
        let f = decay(now - last, self.settings.half_life_secs);
        let w = self.width();
        for a in &mut self.cells[s * w..(s + 1) * w] {
            a.weight = (f64::from(a.weight) * f) as f32;
        }
        self.meta[s].last_seen = now;
    }

    /// Appends new names as columns, widening every row in place.
    fn register<'a>(&mut self, names: impl Iterator<Item = &'a str>) {
        let old = self.width();
        for n in names {
            if self.names.len() < MAX_COLUMNS && !self.names.iter().any(|x| x == n) {
                self.names.push(n.to_string());
            }
        }
        let new = self.width();
        if new == old {
            return;
        }
        // Slot s moves from s*old to s*new, last slot first, so a move
        // never overwrites a row not moved yet.
        let slots = self.keys.len();
        self.cells.resize(slots * new, Acc::default());
        for s in (0..slots).rev() {
            self.cells.copy_within(s * old..(s + 1) * old, s * new);
            self.cells[s * new + old..(s + 1) * new].fill(Acc::default());
        }
        self.published_names = Arc::from(self.names.clone());
    }

    /// Returns memory when most of the arena or index is unused (after
    /// mass expiry or a lowered cap), keeping room to grow.
    fn shrink(&mut self) {
        let len = self.keys.len();
        if self.keys.capacity() > 2 * len + 1024 {
            let keep = len + len / 4;
            self.keys.shrink_to(keep);
            self.meta.shrink_to(keep);
            self.cells.shrink_to(keep * self.width());
        }
        let mut size = self.buckets.len();
        while size > 16 && len * 16 < size {
            size /= 2;
        }
        if size < self.buckets.len() {
            self.rehash(size);
        }
    }

    /// Evicts so that `need` new keys fit under the cap: at least 1/64
    /// of the cap at once.
    fn make_room(&mut self, need: usize) {
        let cap = self.settings.max_keys;
        let len = self.keys.len();
        if need == 0 || len + need <= cap {
            return;
        }
        self.evict((cap / 64).max(1).max(len + need - cap));
    }

    /// Evicts the `n` least recently seen entries (ties by key, then fine
    /// before coarse).
    fn evict(&mut self, n: usize) {
        let len = self.keys.len();
        let n = n.min(len);
        if n == 0 {
            return;
        }
        let mut order: Vec<u32> = (0..len as u32).collect();
        if n < len {
            let rank = |&s: &u32| {
                let s = s as usize;
                (self.meta[s].last_seen, self.keys[s], self.meta[s].level)
            };
            order.select_nth_unstable_by_key(n, rank);
            order.truncate(n);
        }
        // Highest slot first: the last slot, moved into each hole, is then
        // never one still to be evicted.
        order.sort_unstable_by(|a, b| b.cmp(a));
        for s in order {
            self.remove(s as usize);
        }
        self.evictions += n as u64;
    }

    /// The slot of `(level, key)`, created with `last_seen = now` if
    /// absent. The caller has made room.
    fn insert(&mut self, level: u8, key: u64, now: u32) -> usize {
        if (self.keys.len() + 1) * 4 > self.buckets.len() * 3 {
            self.rehash(self.buckets.len() * 2);
        }
        let b = match self.probe(level, key) {
            Ok(b) => return self.buckets[b] as usize,
            Err(b) => b,
        };
        let s = self.keys.len();
        self.buckets[b] = s as u32;
        self.keys.push(key);
        self.meta.push(SlotMeta {
            last_seen: now,
            since: 0,
            incumbent: NO_INCUMBENT,
            level,
        });
        let w = self.width();
        self.cells.resize(self.cells.len() + w, Acc::default());
        match level {
            FINE => self.fine_keys += 1,
            _ => self.coarse_keys += 1,
        }
        s
    }

    /// Frees slot `s`; the last slot takes its place.
    fn remove(&mut self, s: usize) {
        if let Ok(b) = self.probe(self.meta[s].level, self.keys[s]) {
            self.unlink(b);
        }
        let last = self.keys.len() - 1;
        if s != last {
            if let Ok(b) = self.probe(self.meta[last].level, self.keys[last]) {
                self.buckets[b] = s as u32;
            }
            let w = self.width();
            self.cells.copy_within(last * w..(last + 1) * w, s * w);
        }
        match self.meta[s].level {
            FINE => self.fine_keys -= 1,
            _ => self.coarse_keys -= 1,
        }
        self.keys.swap_remove(s);
        self.meta.swap_remove(s);
        self.cells.truncate(last * self.width());
    }

    fn home(&self, level: u8, key: u64) -> usize {
        (self.hasher.hash_one((key, level)) as usize) & (self.buckets.len() - 1)
    }

    /// The bucket holding `(level, key)`, or the empty bucket where it
    /// would go. The index is never full, so the probe ends.
    fn probe(&self, level: u8, key: u64) -> Result<usize, usize> {
        let mask = self.buckets.len() - 1;
        let mut b = self.home(level, key);
        loop {
            let s = self.buckets[b];
            if s == EMPTY {
                return Err(b);
            }
            let s = s as usize;
            if self.keys[s] == key && self.meta[s].level == level {
                return Ok(b);
            }
            b = (b + 1) & mask;
        }
    }

    /// Empties bucket `b`, shifting back the entries of its probe run
    /// that may move (no tombstones).
    fn unlink(&mut self, b: usize) {
        let mask = self.buckets.len() - 1;
        let mut hole = b;
        let mut j = b;
        loop {
            j = (j + 1) & mask;
            let s = self.buckets[j];
            if s == EMPTY {
                break;
            }
            let h = self.home(self.meta[s as usize].level, self.keys[s as usize]);
            // The entry at j stays when its home lies cyclically in
            // (hole, j]; otherwise the hole is on its probe path.
            let stays = if hole <= j {
                hole < h && h <= j
            } else {
                hole < h || h <= j
            };
            if !stays {
                self.buckets[hole] = s;
                hole = j;
            }
        }
        self.buckets[hole] = EMPTY;
    }

    fn rehash(&mut self, size: usize) {
        self.buckets = vec![EMPTY; size];
        let mask = size - 1;
        for s in 0..self.keys.len() {
            let mut b = self.home(self.meta[s].level, self.keys[s]);
            while self.buckets[b] != EMPTY {
                b = (b + 1) & mask;
            }
            self.buckets[b] = s as u32;
        }
    }

    /// One level's table from its slots in key order; updates incumbents.
    fn build(&mut self, slots: &[u32], now: u32, width: usize, min: f64) -> KeyTable {
        let (margin_ms, margin_pct) = (self.settings.margin_ms, self.settings.margin_percent);
        let mut keys = Vec::with_capacity(slots.len());
        let mut metas = Vec::with_capacity(slots.len());
        let mut cells = Vec::with_capacity(slots.len() * width);
        for &s in slots {
            let s = s as usize;
            let f = self.decay_factor(s, now);
            let mut best: Option<(u16, f64)> = None;
            let mut incumbent_mean = None;
            let current = self.meta[s].incumbent;
            for (c, a) in self.cells[s * width..(s + 1) * width].iter().enumerate() {
                let w = f64::from(a.weight) * f;
                if w < min {
                    cells.push(Cell::default());
                    continue;
                }
                let m = f64::from(a.mean);
                cells.push(Cell::of(m, w));
                let c = c as u16;
                if best.is_none_or(|(_, b)| m < b) {
                    best = Some((c, m));
                }
                if c == current {
                    incumbent_mean = Some(m);
                }
            }
            let meta = &mut self.meta[s];
            if let Some((b, m)) = best {
                let take = match incumbent_mean {
                    None => true,
                    Some(im) => b != current && beats(m, im, margin_ms, margin_pct),
                };
                if take {
                    meta.incumbent = b;
                    meta.since = now;
                }
            }
            keys.push(self.keys[s]);
            metas.push(RowMeta {
                incumbent: meta.incumbent,
                since: meta.since,
                last_seen: meta.last_seen,
            });
        }
        KeyTable::from_parts(width, keys, metas, cells)
    }

    fn write_state(&self, w: &mut impl Write) -> io::Result<()> {
        w.write_all(MAGIC)?;
        w.write_all(&VERSION.to_le_bytes())?;
        w.write_all(&(self.names.len() as u16).to_le_bytes())?;
        for n in &self.names {
            w.write_all(&(n.len() as u16).to_le_bytes())?;
            w.write_all(n.as_bytes())?;
        }
        w.write_all(&(self.keys.len() as u64).to_le_bytes())?;
        let mut buf = Vec::with_capacity(entry_size(self.width()));
        for s in 0..self.keys.len() {
            let m = self.meta[s];
            buf.clear();
            buf.push(m.level);
            buf.extend_from_slice(&self.keys[s].to_le_bytes());
            buf.extend_from_slice(&m.last_seen.to_le_bytes());
            buf.extend_from_slice(&m.incumbent.to_le_bytes());
            buf.extend_from_slice(&m.since.to_le_bytes());
            for a in self.row(s) {
                buf.extend_from_slice(&a.mean.to_le_bytes());
                buf.extend_from_slice(&a.weight.to_le_bytes());
            }
            w.write_all(&buf)?;
        }
        Ok(())
    }

    /// Merges one saved entry; false when it is negligible at `now`.
    fn merge(&mut self, e: &Entry, remap: &[u16], now: u32) -> bool {
        let seen = e.last_seen.min(now);
        let half_life = self.settings.half_life_secs;
        let total: f64 = e.cells.iter().map(|a| f64::from(a.weight)).sum();
        let fb = decay(now - seen, half_life);
        if total * fb < NEGLIGIBLE {
            return false;
        }
        self.make_room(usize::from(self.probe(e.level, e.key).is_err()));
        let s = self.insert(e.level, e.key, seen);
        // Both to the later time, then weighted means.
        self.decay_row_to(s, seen);
        let fb = decay(self.meta[s].last_seen - seen, half_life);
        let w = self.width();
        let row = &mut self.cells[s * w..(s + 1) * w];
        for (a, &c) in e.cells.iter().zip(remap) {
            let Some(cell) = row.get_mut(usize::from(c)) else {
                continue;
            };
            let wb = f64::from(a.weight) * fb;
            let wa = f64::from(cell.weight);
            if wb <= 0.0 {
                continue;
            }
            let m = (f64::from(cell.mean) * wa + f64::from(a.mean) * wb) / (wa + wb);
            cell.mean = m as f32;
            cell.weight = (wa + wb) as f32;
        }
        let meta = &mut self.meta[s];
        if meta.incumbent == NO_INCUMBENT && e.incumbent != NO_INCUMBENT {
            meta.incumbent = remap
                .get(usize::from(e.incumbent))
                .copied()
                .unwrap_or(NO_INCUMBENT);
            meta.since = e.since;
        }
        true
    }
}

fn decay(dt: u32, half_life: f64) -> f64 {
    if dt == 0 {
        1.0
    } else {
        (-f64::from(dt) / half_life).exp2()
    }
}

/// Applies sample `x` of weight `weight` to `acc` (see the module docs):
/// untrimmed while the weight is below `min`, then clamped into
/// `[m/2, 2m]` one unit of weight at a time until `x` lies inside, when
/// the rest goes at once (the mean then moves towards `x` and `x` stays
/// inside).
fn apply(acc: &mut Acc, x: f64, weight: f64, min: f64) {
    // Bounds the loop for any weight: MAX_SAMPLE_WEIGHT unit steps plus
    // the steps up to `min`.
    const MAX_STEPS: u32 = MAX_SAMPLE_WEIGHT as u32 + 8;
    let mut m = f64::from(acc.mean);
    let mut w = f64::from(acc.weight);
    let mut rest = weight;
    let mut steps = 0;
    while rest > 0.0 {
        steps += 1;
        let (y, step) = if w < min && steps < MAX_STEPS {
            (x, rest.min(min - w))
        } else {
            // max/min, not clamp: no panic whatever the values.
            let y = x.max(m / 2.0).min(m * 2.0);
            let inside = y == x;
            (
                y,
                if inside || steps >= MAX_STEPS {
                    rest
                } else {
                    rest.min(1.0)
                },
            )
        };
        m = (m * w + y * step) / (w + step);
        w += step;
        rest -= step;
    }
    acc.mean = m as f32;
    acc.weight = w as f32;
}

//------------ State file -----------------------------------------------------

const MAGIC: &[u8; 6] = b"MRLAT1";
const VERSION: u16 = 1;
/// Level, key, last_seen, incumbent, since.
const ENTRY_FIXED: usize = 1 + 8 + 4 + 2 + 4;

fn entry_size(width: usize) -> usize {
    ENTRY_FIXED + width * 8
}

/// Hashes what passes through, for the trailing checksum.
struct Checksummed<T> {
    inner: T,
    sum: SipHasher13,
}

impl<T> Checksummed<T> {
    fn new(inner: T) -> Self {
        Self {
            inner,
            sum: SipHasher13::new_with_keys(0, 0),
        }
    }
}

impl<W: Write> Write for Checksummed<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sum.write(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<R: Read> Read for Checksummed<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.sum.write(&buf[..n]);
        Ok(n)
    }
}

fn read_array<const N: usize>(r: &mut impl Read) -> io::Result<[u8; N]> {
    let mut b = [0; N];
    r.read_exact(&mut b)?;
    Ok(b)
}

fn read_u16(r: &mut impl Read) -> io::Result<u16> {
    read_array(r).map(u16::from_le_bytes)
}

fn read_u64(r: &mut impl Read) -> io::Result<u64> {
    read_array(r).map(u64::from_le_bytes)
}

struct Header {
    names: Vec<String>,
    entries: u64,
}

impl Header {
    /// Reads and checks the header, and that the file is exactly as long
    /// as its entry count says (so nothing is allocated from a count).
    fn read(r: &mut impl Read, file_len: u64) -> Result<Self, String> {
        let io = |what: &str| {
            let what = what.to_string();
            move |e: io::Error| format!("{what}: {e}")
        };
        let magic: [u8; 6] = read_array(r).map_err(io("magic"))?;
        if &magic != MAGIC {
            return Err("not a Meridian latency state file (bad magic)".to_string());
        }
        let version = read_u16(r).map_err(io("version"))?;
        if version != VERSION {
            return Err(format!("unsupported version {version}"));
        }
        let count = read_u16(r).map_err(io("name count"))?;
        let mut used = 6 + 2 + 2 + 8 + 8;
        let mut names: Vec<String> = Vec::new();
        for i in 0..count {
            let len = read_u16(r).map_err(io("name length"))?;
            used += 2 + u64::from(len);
            if len == 0 || used > file_len {
                return Err(format!("name {i}: bad length {len}"));
            }
            let mut b = vec![0; usize::from(len)];
            r.read_exact(&mut b).map_err(io("name"))?;
            let name = String::from_utf8(b).map_err(|_| format!("name {i}: not UTF-8"))?;
            if names.contains(&name) {
                return Err(format!("name {i}: {name:?} repeated"));
            }
            names.push(name);
        }
        let entries = read_u64(r).map_err(io("entry count"))?;
        let expected = (entry_size(names.len()) as u64)
            .checked_mul(entries)
            .and_then(|n| n.checked_add(used));
        if expected != Some(file_len) {
            return Err(format!(
                "{entries} entries of {} names do not fit the file's {file_len} bytes",
                names.len()
            ));
        }
        Ok(Self { names, entries })
    }
}

/// A little-endian integer of up to 8 bytes.
fn le(b: &[u8]) -> u64 {
    b.iter().rev().fold(0, |acc, &x| (acc << 8) | u64::from(x))
}

/// One saved entry, in the file's columns.
struct Entry {
    level: u8,
    key: u64,
    last_seen: u32,
    incumbent: u16,
    since: u32,
    cells: Vec<Acc>,
}

impl Entry {
    fn with_width(width: usize) -> Self {
        Self {
            level: FINE,
            key: 0,
            last_seen: 0,
            incumbent: NO_INCUMBENT,
            since: 0,
            cells: vec![Acc::default(); width],
        }
    }

    /// Reads and checks the next entry into `self`.
    fn read(&mut self, r: &mut impl Read) -> Result<(), String> {
        let fixed: [u8; ENTRY_FIXED] = read_array(r).map_err(|e| e.to_string())?;
        let (level, rest) = fixed.split_at(1);
        let (key, rest) = rest.split_at(8);
        let (last_seen, rest) = rest.split_at(4);
        let (incumbent, since) = rest.split_at(2);
        self.level = level[0];
        self.key = le(key);
        self.last_seen = le(last_seen) as u32;
        self.incumbent = le(incumbent) as u16;
        self.since = le(since) as u32;
        if self.level > COARSE {
            return Err(format!("bad level {}", self.level));
        }
        if self.incumbent != NO_INCUMBENT && usize::from(self.incumbent) >= self.cells.len() {
            return Err(format!("bad incumbent {}", self.incumbent));
        }
        for a in &mut self.cells {
            let pair: [u8; 8] = read_array(r).map_err(|e| e.to_string())?;
            let (m, w) = pair.split_at(4);
            a.mean = f32::from_bits(le(m) as u32);
            a.weight = f32::from_bits(le(w) as u32);
            // Means are RTTs (ms), positive where there is weight; weights
            // are decayed sample counts.
            let mean_ok = (0.0..=65_535.0).contains(&a.mean) && (a.mean > 0.0 || a.weight == 0.0);
            let weight_ok = (0.0..=1e12).contains(&a.weight);
            if !mean_ok || !weight_ok {
                return Err(format!("bad cell (mean {}, weight {})", a.mean, a.weight));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u32 = 1_700_000_000;

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    fn settings() -> AggSettings {
        AggSettings {
            half_life_secs: 100.0,
            min_samples: 5,
            max_keys: 1000,
            margin_ms: 10.0,
            margin_percent: 10.0,
            max_rtt_ms: 5000.0,
        }
    }

    fn agg(s: AggSettings, n: &[&str]) -> Aggregator {
        let mut a = Aggregator::new(s);
        a.configure(s, &names(n));
        a
    }

    /// `n` unit samples of `rtt` to column `c` of fine key `key`.
    fn feed(a: &mut Aggregator, key: u64, c: u16, rtt: f64, n: usize, now: u32) {
        for _ in 0..n {
            a.add(key, None, &[(c, rtt, 1.0)], now);
        }
    }

    fn cell(p: &Published, key: u64, c: usize) -> Option<Cell> {
        p.fine.get(key).map(|(cells, _)| cells[c])
    }

    #[test]
    fn decay_drops_a_row_once_its_weight_halves_below_min_samples() {
        let mut a = agg(settings(), &["a"]);
        a.add(7, None, &[(0, 30.0, 8.0)], T0);
        assert_eq!(cell(&a.publish(T0), 7, 0), Some(Cell::of(30.0, 8.0)));
        // Half a half-life: 8 / sqrt(2) = 5.66.
        assert_eq!(cell(&a.publish(T0 + 50), 7, 0).map(|c| c.samples), Some(5));
        // One half-life: 4 < 5, so the row is not published...
        let p = a.publish(T0 + 100);
        assert!(p.fine.get(7).is_none());
        assert!(p.fine.is_empty());
        // ...but kept: a sample at T0 + 100 (weight 4 + 1) brings it back.
        assert_eq!(a.stats().fine_keys, 1);
        feed(&mut a, 7, 0, 30.0, 1, T0 + 100);
        assert_eq!(cell(&a.publish(T0 + 100), 7, 0).map(|c| c.samples), Some(5));
        // Freed once below 0.01: 5 * 2^-10 = 0.0049.
        a.publish(T0 + 1100);
        assert_eq!(a.stats().fine_keys, 0);
        assert_eq!(a.stats().expired, 1);
    }

    #[test]
    fn the_mean_is_weighted_by_sample_weight_and_age() {
        let mut s = settings();
        s.min_samples = 4;
        let mut a = agg(s, &["a"]);
        a.add(
            1,
            None,
            &[(0, 10.0, 1.0), (0, 20.0, 1.0), (0, 30.0, 2.0)],
            T0,
        );
        // (10 + 20 + 2 * 30) / 4.
        assert_eq!(cell(&a.publish(T0), 1, 0), Some(Cell::of(22.5, 4.0)));
        // Age: 4 samples of 10 at T0 weigh 2 one half-life later, against
        // 2 fresh samples of 40: (2 * 10 + 2 * 40) / 4 = 25 (not 20).
        a.add(2, None, &[(0, 10.0, 4.0)], T0);
        a.add(2, None, &[(0, 40.0, 2.0)], T0 + 100);
        let c = cell(&a.publish(T0 + 100), 2, 0).expect("row");
        assert_eq!(c.rtt_tenths, 250);
        assert_eq!(c.samples, 4);
    }

    #[test]
    fn one_wild_sample_moves_the_mean_little_and_a_sustained_shift_wins() {
        let mut s = settings();
        s.half_life_secs = 1e9;
        let mut a = agg(s, &["a"]);
        feed(&mut a, 1, 0, 20.0, 20, T0);
        feed(&mut a, 1, 0, 200.0, 1, T0);
        // Clamped to 40: (20 * 20 + 40) / 21 = 20.95 (unclamped: 28.6).
        assert_eq!(cell(&a.publish(T0), 1, 0).expect("row").rtt_tenths, 210);
        feed(&mut a, 1, 0, 1.0, 1, T0);
        // Clamped to m/2 = 10.48: (20.95 * 21 + 10.48) / 22 = 20.48.
        assert_eq!(cell(&a.publish(T0), 1, 0).expect("row").rtt_tenths, 205);
        // A sustained shift wins: clamped to 2m, the mean grows by
        // (w + 2) / (w + 1) a sample, 20.48 * (23 + k) / 23, until 2m
        // reaches 200 after k = 89; then the other 311 samples are a plain
        // weighted mean: (100 * 111 + 200 * 311) / 422 = 174.
        feed(&mut a, 1, 0, 200.0, 400, T0);
        let t = cell(&a.publish(T0), 1, 0).expect("row").rtt_tenths;
        assert!((1735..=1745).contains(&t), "{t}");
        // A heavy import counts as that many unit samples: one sample of
        // weight 400 does what 400 beacons would (at once, unclamped, it
        // would give (20 * 20 + 200 * 400) / 420 = 191.4).
        let mut b = agg(s, &["a"]);
        let mut units = agg(s, &["a"]);
        for x in [&mut b, &mut units] {
            feed(x, 1, 0, 20.0, 20, T0);
        }
        b.add(1, None, &[(0, 200.0, 400.0)], T0);
        feed(&mut units, 1, 0, 200.0, 400, T0);
        let u = cell(&b.publish(T0), 1, 0).expect("row");
        assert_eq!(Some(u), cell(&units.publish(T0), 1, 0));
        // 20 * (21 + k) / 21 reaches 100 at k = 84, then
        // (100 * 104 + 200 * 316) / 420 = 175.2.
        assert!((1745..=1760).contains(&u.rtt_tenths), "{u:?}");
        let mut c = agg(s, &["a"]);
        feed(&mut c, 1, 0, 20.0, 20, T0);
        c.add(1, None, &[(0, 200.0, 2.0)], T0);
        // Two units: 20 -> 20.95 -> 21.86; unclamped would be 36.4.
        assert_eq!(cell(&c.publish(T0), 1, 0).expect("row").rtt_tenths, 219);
    }

    #[test]
    fn hysteresis_needs_both_margins_and_since_records_the_takeover() {
        let mut a = agg(settings(), &["a", "b"]);
        let row = |p: &Published, k: u64| p.fine.get(k).expect("row").1;
        // Each row first has only column a, which becomes incumbent.
        for (k, inc) in [(1, 100.0), (2, 200.0), (3, 50.0), (4, 100.0)] {
            a.add(k, None, &[(0, inc, 10.0)], T0);
        }
        let p = a.publish(T0);
        for k in 1..=4 {
            assert_eq!((row(&p, k).incumbent, row(&p, k).since), (0, T0));
        }
        // Challengers: 1 within both margins, 2 beyond 10 ms but not 10 %,
        // 3 beyond 10 % but not 10 ms, 4 beyond both.
        for (k, b) in [(1, 95.0), (2, 185.0), (3, 44.0), (4, 80.0)] {
            a.add(k, None, &[(1, b, 10.0)], T0 + 10);
        }
        let p = a.publish(T0 + 20);
        for k in 1..=3 {
            assert_eq!((row(&p, k).incumbent, row(&p, k).since), (0, T0), "row {k}");
        }
        assert_eq!((row(&p, 4).incumbent, row(&p, 4).since), (1, T0 + 20));
        assert_eq!(row(&p, 4).last_seen, T0 + 10);
        // Kept at the next publication, `since` unchanged.
        let p = a.publish(T0 + 30);
        assert_eq!((row(&p, 4).incumbent, row(&p, 4).since), (1, T0 + 20));
        // An incumbent that loses its samples is replaced whatever the
        // margins: row 1's column a decays below 5 while b is refreshed.
        a.add(1, None, &[(1, 95.0, 40.0)], T0 + 150);
        let p = a.publish(T0 + 150);
        assert_eq!(cell(&p, 1, 0), Some(Cell::default()));
        assert_eq!((row(&p, 1).incumbent, row(&p, 1).since), (1, T0 + 150));
    }

    #[test]
    fn the_cap_evicts_the_least_recently_seen_64th_ties_by_key() {
        let mut s = settings();
        s.max_keys = 128;
        s.min_samples = 1;
        s.half_life_secs = 1e9;
        let mut a = agg(s, &["a"]);
        // Keys 0..128 seen at T0 + (k % 10), but key 100 is refreshed.
        for k in 0..128u64 {
            a.add(k, None, &[(0, 10.0, 2.0)], T0 + (k % 10) as u32);
        }
        a.add(100, None, &[(0, 10.0, 2.0)], T0 + 50);
        assert_eq!(a.stats().fine_keys, 128);
        // A known key at the cap evicts nothing.
        a.add(5, None, &[(0, 10.0, 2.0)], T0 + 60);
        assert_eq!(a.stats().evictions, 0);
        // A new one evicts 128 / 64 = 2: the oldest (T0: keys 0, 10, 20,
        // ...), ties by key: 0 and 10.
        a.add(1000, None, &[(0, 10.0, 2.0)], T0 + 60);
        let st = a.stats();
        assert_eq!((st.fine_keys, st.evictions), (127, 2));
        let p = a.publish(T0 + 60);
        let gone: Vec<u64> = (0..128).filter(|&k| p.fine.get(k).is_none()).collect();
        assert_eq!(gone, [0, 10]);
        assert!(p.fine.get(1000).is_some());
        // Coarse keys count too: a new fine and a new coarse key need 2
        // slots (one free): the 64th again, 20 and 30.
        a.add(1001, Some(1), &[(0, 10.0, 2.0)], T0 + 61);
        let st = a.stats();
        assert_eq!((st.fine_keys, st.coarse_keys, st.evictions), (126, 1, 4));
        let p = a.publish(T0 + 61);
        assert!(p.fine.get(20).is_none() && p.fine.get(30).is_none());
        assert!(p.fine.get(40).is_some() && p.coarse.get(1).is_some());
        // Lowering the cap (127 keys) evicts down to it at once, oldest
        // first: of the keys left from T0 (40, 50, ..., 120), 40, 50, 60.
        s.max_keys = 124;
        a.configure(s, &[]);
        let p = a.publish(T0 + 61);
        assert_eq!(p.fine.len() + p.coarse.len(), 124);
        let gone: Vec<u64> = [40, 50, 60, 70, 80, 90]
            .into_iter()
            .filter(|&k| p.fine.get(k).is_none())
            .collect();
        assert_eq!(gone, [40, 50, 60]);
        assert_eq!(a.stats().evictions, 7);
    }

    #[test]
    fn the_index_matches_a_model_through_inserts_evictions_and_expiry() {
        // Differential: a simple ordered model of the LRU rule against the
        // arena and its open-addressing index, over many evictions.
        use std::collections::BTreeMap;
        let mut s = settings();
        s.max_keys = 192;
        s.min_samples = 1;
        // A key gets at most 8 unit samples a second (weight <= 8.01):
        // with a half-life of 0.1 s, one second without a sample takes it
        // below 8.01 / 1024 < 0.01, so expiry is exact in whole seconds.
        s.half_life_secs = 0.1;
        let mut a = agg(s, &["a", "b"]);
        let mut model: BTreeMap<(u8, u64), u32> = BTreeMap::new();
        let mut x: u64 = 12345;
        for step in 0..20_000u32 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let key = (x >> 33) % 400;
            let coarse = (x >> 20) & 1 == 1;
            let now = T0 + step / 8;
            let need = usize::from(!model.contains_key(&(FINE, key)))
                + usize::from(coarse && !model.contains_key(&(COARSE, key / 4)));
            if need > 0 && model.len() + need > 192 {
                let mut all: Vec<_> = model.iter().map(|(&(l, k), &t)| (t, k, l)).collect();
                all.sort_unstable();
                let n = 3usize.max(model.len() + need - 192);
                for &(_, k, l) in &all[..n] {
                    model.remove(&(l, k));
                }
            }
            model.insert((FINE, key), now);
            if coarse {
                model.insert((COARSE, key / 4), now);
            }
            a.add(key, coarse.then_some(key / 4), &[(1, 10.0, 1.0)], now);
            assert_eq!(a.stats().fine_keys + a.stats().coarse_keys, model.len());
            if step % 1000 == 999 {
                let p = a.publish(now);
                model.retain(|_, t| *t == now);
                let mut got: Vec<(u8, u64)> = p.fine.rows().map(|r| (FINE, r.0)).collect();
                got.extend(p.coarse.rows().map(|r| (COARSE, r.0)));
                let published: Vec<_> = model.keys().copied().collect();
                assert_eq!(got, published, "step {step}");
                assert_eq!(a.stats().fine_keys + a.stats().coarse_keys, model.len());
            }
            for (&(l, k), _) in model.iter().take(5) {
                assert!(a.probe(l, k).is_ok());
            }
        }
        for &(l, k) in model.keys() {
            assert!(a.probe(l, k).is_ok(), "({l}, {k})");
        }
        assert!(a.stats().evictions > 1000);
    }

    #[test]
    fn registering_a_name_keeps_the_existing_columns() {
        let mut a = agg(settings(), &["a", "b"]);
        a.add(1, Some(9), &[(0, 10.0, 5.0), (1, 20.0, 6.0)], T0);
        a.add(2, None, &[(1, 30.0, 7.0)], T0);
        a.configure(settings(), &names(&["c", "a"]));
        assert_eq!(a.names(), names(&["a", "b", "c"]));
        assert_eq!(a.column("c"), Some(2));
        a.add(2, None, &[(2, 40.0, 8.0)], T0);
        let p = a.publish(T0);
        assert_eq!(&*p.names, ["a", "b", "c"]);
        let c = |x, n| Cell::of(x, n);
        let d = Cell::default();
        assert_eq!(
            p.fine.get(1).expect("row").0,
            [c(10.0, 5.0), c(20.0, 6.0), d]
        );
        assert_eq!(
            p.fine.get(2).expect("row").0,
            [d, c(30.0, 7.0), c(40.0, 8.0)]
        );
        assert_eq!(
            p.coarse.get(9).expect("row").0,
            [c(10.0, 5.0), c(20.0, 6.0), d]
        );
    }

    #[test]
    fn invalid_samples_are_counted_and_create_nothing() {
        let mut a = agg(settings(), &["a"]);
        let bad = [
            (1, 10.0, 1.0),
            (0, f64::NAN, 1.0),
            (0, 0.0, 1.0),
            (0, -3.0, 1.0),
            (0, 5000.1, 1.0),
            (0, 10.0, 0.0),
            (0, 10.0, f64::INFINITY),
        ];
        a.add(1, Some(2), &bad, T0);
        let st = a.stats();
        assert_eq!((st.fine_keys, st.coarse_keys), (0, 0));
        assert_eq!((st.samples_accepted, st.samples_rejected), (0, 7));
        a.add(1, None, &[(0, 5000.0, 5.0), (0, -1.0, 1.0)], T0);
        assert_eq!(cell(&a.publish(T0), 1, 0), Some(Cell::of(5000.0, 5.0)));
        assert_eq!(a.stats().samples_accepted, 1);
    }

    /// Every published row of both levels, by datacenter name.
    /// A published row with columns as names: level, key, named cells,
    /// incumbent, since, last_seen.
    type NamedRow = (u8, u64, Vec<(String, Cell)>, Option<String>, u32, u32);

    fn by_name(p: &Published) -> Vec<NamedRow> {
        let mut out = Vec::new();
        for (level, t) in [(FINE, &p.fine), (COARSE, &p.coarse)] {
            for (k, cells, m) in t.rows() {
                let mut named: Vec<(String, Cell)> = p
                    .names
                    .iter()
                    .cloned()
                    .zip(cells.iter().copied())
                    .filter(|(_, c)| c.is_some())
                    .collect();
                named.sort_by(|a, b| a.0.cmp(&b.0));
                let inc = p.names.get(usize::from(m.incumbent)).cloned();
                out.push((level, k, named, inc, m.since, m.last_seen));
            }
        }
        out
    }

    fn sample_state() -> Aggregator {
        let mut a = agg(settings(), &["x", "y", "z"]);
        a.add(
            1,
            Some(100),
            &[(0, 10.0, 6.0), (1, 20.0, 7.0), (2, 30.0, 8.0)],
            T0,
        );
        a.add(2, Some(100), &[(2, 15.0, 9.0)], T0 + 5);
        a.add(3, None, &[(1, 50.0, 3.0)], T0 + 7);
        a.publish(T0 + 10);
        a.add(2, None, &[(1, 5.0, 20.0)], T0 + 12);
        a
    }

    #[test]
    fn save_and_load_round_trip_remapping_names_by_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut a = sample_state();
        // Saving creates the directory; loading removes what a crashed
        // save left, and only that.
        let path = dir.path().join("sub").join("state.bin");
        a.save(&path).expect("save");
        let stale = dir.path().join("sub").join(".state.bin.x1y2.tmp");
        let other = dir.path().join("sub").join(".other.bin.x1y2.tmp");
        std::fs::write(&stale, b"partial").expect("write");
        std::fs::write(&other, b"partial").expect("write");
        let now = T0 + 20;
        // Another process: names registered in another order, y unknown.
        let mut b = agg(settings(), &["z", "w", "x"]);
        // Fine 1, 2, 3 and coarse 100.
        assert_eq!(b.load(&path, now), Ok(4));
        assert!(!stale.exists() && other.exists());
        let saved: Vec<_> = std::fs::read_dir(dir.path().join("sub"))
            .expect("dir")
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        assert_eq!(saved.len(), 2, "{saved:?}");
        assert_eq!(b.names(), names(&["z", "w", "x", "y"]));
        let (pa, pb) = (a.publish(now), b.publish(now));
        assert_eq!(by_name(&pa), by_name(&pb));
        assert_eq!((pa.fine.len(), pa.coarse.len()), (2, 1));
        // Row 3 (weight 3 * 2^-0.13 = 2.74) is kept, not published.
        assert_eq!(b.stats().fine_keys, 3);
        // Loading again merges: weights add up, means stay.
        assert_eq!(b.load(&path, now), Ok(4));
        let pb = b.publish(now);
        // x of row 1: 6 * 2^-0.2 = 5.22, twice 10.45.
        assert_eq!(pb.fine.get(1).expect("row 1").0[2], Cell::of(10.0, 10.45));
        // Row 3: twice 2.74 is published.
        assert_eq!(pb.fine.get(3).expect("row 3").0[3], Cell::of(50.0, 5.49));
        // Entries negligible by `now` are skipped; a missing file is Ok(0).
        let mut c = agg(settings(), &[]);
        assert_eq!(c.load(&path, T0 + 2000), Ok(0));
        assert_eq!(c.load(&dir.path().join("none.bin"), now), Ok(0));
        // The cap applies to loaded entries.
        let mut s = settings();
        s.max_keys = 3;
        let mut d = agg(s, &[]);
        assert_eq!(d.load(&path, now), Ok(4));
        assert_eq!(d.stats().fine_keys + d.stats().coarse_keys, 3);
    }

    #[test]
    fn corrupt_files_are_rejected_and_change_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.bin");
        sample_state().save(&path).expect("save");
        let good = std::fs::read(&path).expect("read");
        let now = T0 + 20;
        let mut b = agg(settings(), &["x"]);
        b.add(1, None, &[(0, 70.0, 9.0)], T0);
        let before = by_name(&b.publish(now));
        let check = |b: &mut Aggregator, bytes: &[u8], what: &str| {
            std::fs::write(&path, bytes).expect("write");
            assert!(b.load(&path, now).is_err(), "{what} accepted");
            assert_eq!(b.names(), names(&["x"]), "{what}");
            assert_eq!(by_name(&b.publish(now)), before, "{what}");
        };
        for n in 0..good.len() {
            check(&mut b, &good[..n], &format!("truncated to {n}"));
        }
        for i in 0..good.len() {
            for bit in [0x01, 0x80] {
                let mut bad = good.clone();
                bad[i] ^= bit;
                check(&mut b, &bad, &format!("bit {bit:#x} of byte {i}"));
            }
        }
        let mut long = good.clone();
        long.push(0);
        check(&mut b, &long, "one byte more");
        let mut x: u64 = 7;
        for len in [1, 17, 64, 300, 4096] {
            let mut junk = Vec::new();
            for _ in 0..len {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                junk.push((x >> 56) as u8);
            }
            check(&mut b, &junk, "garbage");
            if len >= 6 {
                junk[..6].copy_from_slice(MAGIC);
                check(&mut b, &junk, "garbage after the magic");
            }
        }
        // A huge entry count allocates nothing and is refused.
        let mut huge = good[..good.len() - 8].to_vec();
        let at = good.len() - 8 - 4 * entry_size(3) - 8;
        huge[at..at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        check(&mut b, &huge, "huge count");
        // The good file still loads.
        std::fs::write(&path, &good).expect("write");
        assert_eq!(b.load(&path, now), Ok(4));
    }
}
