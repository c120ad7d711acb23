//! A prefix table: the whole address space of one family cut into CIDR
//! blocks, each carrying a value (a ranking id).
//!
//! Built once per config/GeoIP load; looked up per query with one binary
//! search. Adjacent ranges with equal values are merged before the cut into
//! blocks, so the block that holds an address is the widest aligned prefix
//! around it whose every address has the same value. That prefix is the
//! EDNS Client Subnet scope Meridian returns (RFC 7871 §7.2.1), which lets
//! resolvers cache one answer for as many clients as possible.

use std::net::IpAddr;

/// Builds a [`PrefixTable`] from ranges fed in address order.
#[derive(Debug)]
pub struct TableBuilder {
    bits: u8,
    fill: u32,
    /// Non-overlapping, sorted, inclusive ranges.
    ranges: Vec<(u128, u128, u32)>,
}

/// Address width of a family.
pub const fn family_bits(v6: bool) -> u8 {
    if v6 { 128 } else { 32 }
}

fn space_end(bits: u8) -> u128 {
    if bits == 128 {
        u128::MAX
    } else {
        (1u128 << bits) - 1
    }
}

/// The inclusive range of `addr/prefix` in a `bits`-wide space.
pub fn prefix_range(bits: u8, addr: u128, prefix: u8) -> (u128, u128) {
    let host = u32::from(bits - prefix.min(bits));
    let size_minus_1 = if host == 128 {
        u128::MAX
    } else {
        (1u128 << host) - 1
    };
    let start = addr & !size_minus_1 & space_end(bits);
    (start, start | size_minus_1)
}

/// An address as an integer in its family's space.
pub fn addr_bits(addr: IpAddr) -> u128 {
    match addr {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

impl TableBuilder {
    /// A builder for a space of `bits` (32 or 128); gaps get `fill`.
    pub fn new(bits: u8, fill: u32) -> Self {
        Self {
            bits,
            fill,
            ranges: Vec::new(),
        }
    }

    /// Appends a range; ranges must come in increasing, non-overlapping
    /// order (as a MaxMind DB walk yields them). Out-of-order ranges are
    /// ignored. Gaps are filled as they appear and equal neighbours merge,
    /// so the builder holds about one range per change of value.
    pub fn push(&mut self, start: u128, end: u128, value: u32) {
        let next = match self.ranges.last() {
            Some(last) => match last.1.checked_add(1) {
                Some(n) => n,
                None => return, // already at the end of the space
            },
            None => 0,
        };
        if start < next || end < start {
            debug_assert!(false, "ranges out of order");
            return;
        }
        if start > next {
            self.extend(next, start - 1, self.fill);
        }
        self.extend(start, end, value);
    }

    fn extend(&mut self, start: u128, end: u128, value: u32) {
        match self.ranges.last_mut() {
            Some(last) if last.2 == value => last.1 = end,
            _ => self.ranges.push((start, end, value)),
        }
    }

    /// Fills the space after the last pushed range.
    fn complete(&mut self) {
        let next = match self.ranges.last() {
            Some(last) => last.1.checked_add(1),
            None => Some(0),
        };
        if let Some(next) = next.filter(|&n| n <= space_end(self.bits)) {
            self.extend(next, space_end(self.bits), self.fill);
        }
    }

    /// Overwrites `[start, end]` with `value`. Call after all pushes, from
    /// the least to the most specific override.
    fn paint(&mut self, start: u128, end: u128, value: u32) {
        let first = self.ranges.partition_point(|r| r.1 < start);
        let last = self.ranges.partition_point(|r| r.0 <= end);
        let mut middle = Vec::with_capacity(3);
        if let Some(&(s, _, v)) = self.ranges.get(first)
            && s < start
        {
            middle.push((s, start - 1, v));
        }
        middle.push((start, end, value));
        if last > 0
            && let Some(&(_, e, v)) = self.ranges.get(last - 1)
            && e > end
        {
            middle.push((end + 1, e, v));
        }
        self.ranges.splice(first..last, middle);
    }

    /// Finishes the table: fills gaps, applies `overrides` (`(addr, prefix,
    /// value)`, any order; longer prefixes win), merges equal neighbours and
    /// cuts the result into CIDR blocks.
    pub fn finish(mut self, overrides: &[(u128, u8, u32)]) -> PrefixTable {
        self.complete();
        let mut ov = overrides.to_vec();
        ov.sort_by_key(|o| o.1);
        for (addr, prefix, value) in ov {
            let (s, e) = prefix_range(self.bits, addr, prefix);
            self.paint(s, e, value);
        }
        // Overrides may have made neighbours equal: merge in place.
        self.ranges.dedup_by(|cur, prev| {
            let same = cur.2 == prev.2;
            if same {
                prev.1 = cur.1;
            }
            same
        });
        let merged = std::mem::take(&mut self.ranges);
        let mut starts = if self.bits == 32 {
            Starts::V4(Vec::with_capacity(merged.len()))
        } else {
            Starts::V6(Vec::with_capacity(merged.len()))
        };
        let mut values = Vec::with_capacity(merged.len());
        let mut prefixes = Vec::with_capacity(merged.len());
        for (s, e, v) in merged {
            let mut s = s;
            loop {
                // Largest aligned block starting at s that ends at or before e.
                let align = if s == 0 {
                    u32::from(self.bits)
                } else {
                    s.trailing_zeros().min(u32::from(self.bits))
                };
                let mut host = align;
                while host > 0 {
                    let end = if host == 128 {
                        u128::MAX
                    } else {
                        s + ((1u128 << host) - 1)
                    };
                    if end <= e {
                        break;
                    }
                    host -= 1;
                }
                match &mut starts {
                    Starts::V4(v4) => v4.push(s as u32),
                    Starts::V6(v6) => v6.push(s),
                }
                values.push(v);
                prefixes.push(self.bits - host as u8);
                let block_end = if host == 128 {
                    u128::MAX
                } else {
                    s + ((1u128 << host) - 1)
                };
                if block_end >= e {
                    break;
                }
                s = block_end + 1;
            }
        }
        match &mut starts {
            Starts::V4(v) => v.shrink_to_fit(),
            Starts::V6(v) => v.shrink_to_fit(),
        }
        values.shrink_to_fit();
        prefixes.shrink_to_fit();
        PrefixTable {
            bits: self.bits,
            starts,
            values,
            prefixes,
        }
    }
}

/// Block starts, stored at the family's width (IPv4 tables are a quarter
/// of the size they would be as `u128`).
#[derive(Clone, Debug)]
enum Starts {
    V4(Vec<u32>),
    V6(Vec<u128>),
}

/// The finished table; see the module docs. About 9 bytes per block for
/// IPv4 and 21 for IPv6.
#[derive(Clone, Debug)]
pub struct PrefixTable {
    bits: u8,
    starts: Starts,
    values: Vec<u32>,
    prefixes: Vec<u8>,
}

impl PrefixTable {
    /// The value for `addr` and the prefix length of its block.
    pub fn lookup(&self, addr: u128) -> (u32, u8) {
        let i = match &self.starts {
            Starts::V4(v) => {
                let a = u32::try_from(addr).unwrap_or(u32::MAX);
                v.partition_point(|&s| s <= a)
            }
            Starts::V6(v) => v.partition_point(|&s| s <= addr),
        }
        .saturating_sub(1);
        (self.values[i], self.prefixes[i])
    }

    /// Number of blocks (for logs and memory estimates).
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether the table is empty (never, once finished).
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Address width.
    pub fn bits(&self) -> u8 {
        self.bits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> u128 {
        u128::from(u32::from(s.parse::<std::net::Ipv4Addr>().unwrap()))
    }

    #[test]
    fn gaps_get_fill_and_blocks_are_widest_aligned() {
        let mut b = TableBuilder::new(32, 0);
        let (s, e) = prefix_range(32, v4("10.0.0.0"), 8);
        b.push(s, e, 1);
        let t = b.finish(&[]);
        assert_eq!(t.lookup(v4("10.1.2.3")), (1, 8));
        assert_eq!(t.lookup(v4("0.0.0.1")), (0, 5)); // 0.0.0.0/5
        assert_eq!(t.lookup(v4("9.255.255.255")), (0, 7)); // 8.0.0.0/7
        assert_eq!(t.lookup(v4("11.0.0.0")), (0, 8));
        assert_eq!(t.lookup(v4("128.0.0.0")), (0, 1));
        assert_eq!(t.lookup(v4("255.255.255.255")), (0, 1));
    }

    #[test]
    fn adjacent_equal_ranges_merge_into_supernets() {
        let mut b = TableBuilder::new(32, 9);
        for (net, v) in [
            ("10.0.0.0", 1),
            ("10.0.1.0", 1),
            ("10.0.2.0", 2),
            ("10.0.3.0", 1),
        ] {
            let (s, e) = prefix_range(32, v4(net), 24);
            b.push(s, e, v);
        }
        let t = b.finish(&[]);
        assert_eq!(t.lookup(v4("10.0.0.7")), (1, 23));
        assert_eq!(t.lookup(v4("10.0.1.7")), (1, 23));
        assert_eq!(t.lookup(v4("10.0.2.7")), (2, 24));
        assert_eq!(t.lookup(v4("10.0.3.7")), (1, 24));
    }

    #[test]
    fn overrides_win_and_narrow_the_surrounding_blocks() {
        let mut b = TableBuilder::new(32, 0);
        let (s, e) = prefix_range(32, v4("10.0.0.0"), 8);
        b.push(s, e, 1);
        let t = b.finish(&[
            (v4("10.1.0.0"), 16, 2),
            (v4("10.1.2.0"), 24, 3),
            (v4("0.0.0.0"), 0, 4),
        ]);
        assert_eq!(t.lookup(v4("10.1.2.3")), (3, 24));
        assert_eq!(t.lookup(v4("10.1.3.3")), (2, 24)); // 10.1.2/24 splits the /16
        assert_eq!(t.lookup(v4("10.1.0.1")), (2, 23));
        // The /0 override beats the database everywhere else.
        assert_eq!(t.lookup(v4("10.0.0.1")), (4, 16));
        assert_eq!(t.lookup(v4("10.128.0.1")), (4, 9));
        assert_eq!(t.lookup(v4("192.0.2.1")), (4, 1));
    }

    #[test]
    fn ipv6_full_space() {
        let b = TableBuilder::new(128, 7);
        let t = b.finish(&[]);
        assert_eq!(t.len(), 1);
        assert_eq!(t.lookup(u128::MAX), (7, 0));
        let mut b = TableBuilder::new(128, 7);
        b.push(0, u128::MAX, 3);
        assert_eq!(b.finish(&[]).lookup(5), (3, 0));
        let mut b = TableBuilder::new(128, 7);
        let (s, e) = prefix_range(128, 0x2001_0db8u128 << 96, 32);
        b.push(s, e, 1);
        let t = b.finish(&[]);
        assert_eq!(t.lookup(s + 99), (1, 32));
        assert_eq!(t.lookup(e + 1).0, 7);
    }
}
