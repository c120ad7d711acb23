//! The published table of one RUM level: client-network key → a row of
//! per-datacenter estimates. Compact and immutable: sorted keys for a
//! binary search, and one flat array of [`Cell`]s, `width` per row.
//! Rebuilt at every publication; the query path only reads it.
//!
//! Keys are `u64`. For a prefix level a key is the client address masked
//! to the level's prefix ([`v4_key`], [`v6_key`]): IPv4 keys are below
//! 2^32, IPv6 keys have the top bit set, so each family sorts apart. For
//! the ASN level a key is the AS number.

use std::net::IpAddr;

/// One datacenter's estimate in a published row.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Cell {
    /// Round-trip time in units of 0.1 ms; 0 means no estimate.
    pub rtt_tenths: u16,
    /// Decayed sample weight, rounded down, saturating; 0 means none.
    pub samples: u16,
}

impl Cell {
    /// Whether the cell holds an estimate.
    pub fn is_some(self) -> bool {
        self.rtt_tenths != 0 && self.samples != 0
    }

    /// The RTT in milliseconds.
    pub fn rtt_ms(self) -> f32 {
        f32::from(self.rtt_tenths) / 10.0
    }

    /// A cell for `rtt_ms` (clamped to 0.1 to 6553.5 ms) with `samples`.
    pub fn of(rtt_ms: f64, samples: f64) -> Self {
        Self {
            rtt_tenths: (rtt_ms * 10.0).round().clamp(1.0, f64::from(u16::MAX)) as u16,
            samples: samples.clamp(0.0, f64::from(u16::MAX)) as u16,
        }
    }
}

/// Per-row data besides the cells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RowMeta {
    /// The column assigned first at the last publication (hysteresis);
    /// [`NO_INCUMBENT`] for none.
    pub incumbent: u16,
    /// Unix seconds when the incumbent was assigned.
    pub since: u32,
    /// Unix seconds of the newest sample in the row.
    pub last_seen: u32,
}

/// [`RowMeta::incumbent`] when no column is assigned.
pub const NO_INCUMBENT: u16 = u16::MAX;

impl Default for RowMeta {
    fn default() -> Self {
        Self {
            incumbent: NO_INCUMBENT,
            since: 0,
            last_seen: 0,
        }
    }
}

/// The top bit of every IPv6 key.
const V6_TAG: u64 = 1 << 63;

/// The key of `addr` masked to `prefix` bits (0 to 32).
pub fn v4_key(addr: std::net::Ipv4Addr, prefix: u8) -> u64 {
    let p = u32::from(prefix.min(32));
    u64::from(u32::from(addr)).checked_shr(32 - p).unwrap_or(0)
}

/// The key of `addr` masked to `prefix` bits (0 to 64).
pub fn v6_key(addr: std::net::Ipv6Addr, prefix: u8) -> u64 {
    let p = u32::from(prefix.min(64));
    let top = (u128::from(addr) >> 64) as u64;
    V6_TAG | top.checked_shr(64 - p).unwrap_or(0)
}

/// The key of `ip` at prefix `v4` or `v6`, by its family.
pub fn key_for(ip: IpAddr, v4: u8, v6: u8) -> u64 {
    match ip {
        IpAddr::V4(a) => v4_key(a, v4),
        IpAddr::V6(a) => v6_key(a, v6),
    }
}

/// Collects rows, in any order; [`Self::finish`] sorts them.
#[derive(Debug)]
pub struct KeyTableBuilder {
    width: usize,
    rows: Vec<(u64, RowMeta)>,
    cells: Vec<Cell>,
}

impl KeyTableBuilder {
    /// A builder for rows of `width` cells.
    pub fn new(width: usize) -> Self {
        Self {
            width,
            rows: Vec::new(),
            cells: Vec::new(),
        }
    }

    /// Room for `n` rows.
    pub fn reserve(&mut self, n: usize) {
        self.rows.reserve_exact(n);
        self.cells.reserve_exact(n * self.width);
    }

    /// Adds a row. `cells` is cut or padded to the table's width. A key
    /// pushed twice keeps its first row.
    pub fn push(&mut self, key: u64, cells: &[Cell], meta: RowMeta) {
        let n = cells.len().min(self.width);
        self.cells.extend_from_slice(&cells[..n]);
        self.cells
            .extend(std::iter::repeat_n(Cell::default(), self.width - n));
        self.rows.push((key, meta));
    }

    /// The table.
    pub fn finish(self) -> KeyTable {
        let Self { width, rows, cells } = self;
        let mut order: Vec<u32> = (0..rows.len() as u32).collect();
        order.sort_by_key(|&i| rows[i as usize].0);
        order.dedup_by_key(|i| rows[*i as usize].0);
        let mut keys = Vec::with_capacity(order.len());
        let mut meta = Vec::with_capacity(order.len());
        let mut sorted = Vec::with_capacity(order.len() * width);
        for &i in &order {
            let i = i as usize;
            keys.push(rows[i].0);
            meta.push(rows[i].1);
            sorted.extend_from_slice(&cells[i * width..(i + 1) * width]);
        }
        KeyTable {
            width,
            keys: keys.into(),
            meta: meta.into(),
            cells: sorted.into(),
        }
    }
}

/// A published level; see the module docs.
#[derive(Debug, Default)]
pub struct KeyTable {
    width: usize,
    keys: Box<[u64]>,
    meta: Box<[RowMeta]>,
    cells: Box<[Cell]>,
}

impl KeyTable {
    /// A table from parallel vectors: `keys[i]` has `meta[i]` and cells
    /// `cells[i * width..(i + 1) * width]`. When the keys are strictly
    /// ascending and the lengths agree (the aggregator builds them so),
    /// the vectors become the table as they are, without the sorting
    /// copy of [`KeyTableBuilder::finish`]: a publication then needs no
    /// memory beyond the table itself. Otherwise the rows go through the
    /// builder (sorted, cut or padded, a repeated key keeps its first row).
    pub fn from_parts(width: usize, keys: Vec<u64>, meta: Vec<RowMeta>, cells: Vec<Cell>) -> Self {
        let sorted = keys.windows(2).all(|w| w[0] < w[1]);
        if sorted && meta.len() == keys.len() && Some(cells.len()) == keys.len().checked_mul(width)
        {
            return Self {
                width,
                keys: keys.into(),
                meta: meta.into(),
                cells: cells.into(),
            };
        }
        let mut b = KeyTableBuilder::new(width);
        for (i, (&k, &m)) in keys.iter().zip(meta.iter()).enumerate() {
            let start = (i * width).min(cells.len());
            let end = ((i + 1) * width).min(cells.len());
            b.push(k, &cells[start..end], m);
        }
        b.finish()
    }

    /// The row of `key`.
    pub fn get(&self, key: u64) -> Option<(&[Cell], RowMeta)> {
        let i = self.keys.binary_search(&key).ok()?;
        Some((
            &self.cells[i * self.width..(i + 1) * self.width],
            self.meta[i],
        ))
    }

    /// For a prefix level of `prefix` bits: the row of `key`, and the
    /// widest prefix around the client over which that result holds (the
    /// ECS scope it allows). Present: `prefix`. Absent: one bit more than
    /// the client's key shares with its nearest neighbour of the same
    /// family, so no key of the table lies inside the block; 0 when the
    /// family has none.
    pub fn lookup_prefix(&self, key: u64, prefix: u8) -> (Option<(&[Cell], RowMeta)>, u8) {
        match self.keys.binary_search(&key) {
            Ok(i) => (
                Some((
                    &self.cells[i * self.width..(i + 1) * self.width],
                    self.meta[i],
                )),
                prefix,
            ),
            Err(i) => {
                let family = key & V6_TAG;
                let shared = |other: u64| {
                    if other & V6_TAG != family {
                        return None;
                    }
                    // Bits of the `prefix`-bit key the two share.
                    let differ = (other ^ key) & !V6_TAG;
                    let width = u32::from(prefix);
                    Some(width.saturating_sub(64 - differ.leading_zeros()) as u8)
                };
                let before = i.checked_sub(1).and_then(|j| shared(self.keys[j]));
                let after = self.keys.get(i).and_then(|&k| shared(k));
                let scope = match before.max(after) {
                    Some(s) => (s + 1).min(prefix),
                    None => 0,
                };
                (None, scope)
            }
        }
    }

    /// Rows.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Cells per row.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Heap bytes the table holds.
    pub fn memory_bytes(&self) -> usize {
        self.keys.len() * size_of::<u64>()
            + self.meta.len() * size_of::<RowMeta>()
            + self.cells.len() * size_of::<Cell>()
    }

    /// Every row, in key order (for persistence and `/status`).
    pub fn rows(&self) -> impl Iterator<Item = (u64, &[Cell], RowMeta)> + '_ {
        self.keys
            .iter()
            .zip(self.meta.iter())
            .enumerate()
            .map(|(i, (&k, &m))| (k, &self.cells[i * self.width..(i + 1) * self.width], m))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn v4(s: &str) -> Ipv4Addr {
        s.parse().expect("address")
    }

    fn table(keys: &[u64]) -> KeyTable {
        let mut b = KeyTableBuilder::new(2);
        for &k in keys.iter().rev() {
            b.push(k, &[Cell::of(k as f64, 5.0)], RowMeta::default());
        }
        b.finish()
    }

    #[test]
    fn rows_are_found_by_key_whatever_the_push_order() {
        let t = table(&[5, 1, 9]);
        assert_eq!(t.len(), 3);
        let (cells, meta) = t.get(9).expect("row");
        assert_eq!(cells, [Cell::of(9.0, 5.0), Cell::default()]);
        assert_eq!(meta.incumbent, NO_INCUMBENT);
        assert!(t.get(4).is_none());
        assert_eq!(t.rows().map(|r| r.0).collect::<Vec<_>>(), [1, 5, 9]);
    }

    #[test]
    fn from_parts_takes_sorted_rows_as_they_are_and_sorts_the_others() {
        let m = |since| RowMeta {
            since,
            ..RowMeta::default()
        };
        let c = |x: f64| Cell::of(x, 5.0);
        let t = KeyTable::from_parts(
            2,
            vec![1, 5],
            vec![m(1), m(5)],
            vec![c(1.0), c(2.0), c(3.0), c(4.0)],
        );
        assert_eq!(t.get(5), Some((&[c(3.0), c(4.0)][..], m(5))));
        assert_eq!(t.memory_bytes(), 2 * 8 + 2 * size_of::<RowMeta>() + 4 * 4);
        // Unsorted, with a repeated key and short cells: the builder's rules.
        let t = KeyTable::from_parts(
            2,
            vec![9, 1, 9],
            vec![m(9), m(1), m(0)],
            vec![c(9.0), c(8.0), c(1.0)],
        );
        assert_eq!(t.rows().map(|r| r.0).collect::<Vec<_>>(), [1, 9]);
        assert_eq!(t.get(1), Some((&[c(1.0), Cell::default()][..], m(1))));
        assert_eq!(t.get(9), Some((&[c(9.0), c(8.0)][..], m(9))));
    }

    #[test]
    fn keys_mask_the_address_and_keep_families_apart() {
        assert_eq!(v4_key(v4("11.1.2.3"), 24), 0x0b0102);
        assert_eq!(v4_key(v4("11.1.2.3"), 16), 0x0b01);
        assert_eq!(v4_key(v4("11.1.2.3"), 0), 0);
        let a: Ipv6Addr = "2001:db8:1:2::1".parse().expect("address");
        assert_eq!(v6_key(a, 48), V6_TAG | 0x2001_0db8_0001);
        assert_eq!(v6_key(a, 64), V6_TAG | 0x2001_0db8_0001_0002);
        assert!(v6_key(a, 0) > v4_key(Ipv4Addr::BROADCAST, 32));
    }

    #[test]
    fn an_absent_key_gets_the_widest_block_without_a_neighbour() {
        let p = 24;
        let k = |s| v4_key(v4(s), p);
        let t = table(&[k("11.1.2.0"), k("11.200.0.0")]);
        // Present: the level's prefix.
        assert_eq!(t.lookup_prefix(k("11.1.2.9"), p).1, 24);
        // 11.1.3.0 shares 23 bits with 11.1.2.0: only its /24 is free.
        let (row, scope) = t.lookup_prefix(k("11.1.3.0"), p);
        assert!(row.is_none());
        assert_eq!(scope, 24);
        // 11.1.128.0 shares 16 bits with 11.1.2.0: its /17 holds no key.
        assert_eq!(t.lookup_prefix(k("11.1.128.0"), p).1, 17);
        // 12.0.0.0 shares 5 bits with 11.200.0.0 (00001100 / 00001011).
        assert_eq!(t.lookup_prefix(k("12.0.0.0"), p).1, 6);
        // The IPv6 family has no key at all.
        let a: Ipv6Addr = "2001:db8::".parse().expect("address");
        assert_eq!(t.lookup_prefix(v6_key(a, 48), 48), (None, 0));
        assert_eq!(
            KeyTable::default().lookup_prefix(k("1.2.3.0"), p),
            (None, 0)
        );
    }

    #[test]
    fn the_absent_scope_never_covers_a_key() {
        // Exhaustive over a small key space: for every absent key, no key
        // of the table shares the returned number of leading bits.
        let p = 8;
        let keys = [3u64, 17, 18, 64, 200, 255];
        let t = table(&keys);
        for k in 0..256u64 {
            let (row, scope) = t.lookup_prefix(k, p);
            if row.is_some() {
                continue;
            }
            let block = |x: u64| x >> (p - scope);
            assert!(
                keys.iter().all(|&o| block(o) != block(k)),
                "key {k} scope {scope}"
            );
            // And it is the widest: one bit less would cover a key.
            if scope > 0 {
                let wider = |x: u64| x >> (p - scope + 1);
                assert!(keys.iter().any(|&o| wider(o) == wider(k)), "key {k}");
            }
        }
    }
}
