//! A prefix table: the whole address space of one family cut into CIDR
//! blocks, each carrying a value (a ranking id).
//!
//! Built once per config/GeoIP load; looked up per query with one binary
//! search. Adjacent ranges with equal values are merged before the cut into
//! blocks, so the block that holds an address is the widest aligned prefix
//! around it whose every address has the same value. That prefix is the
//! EDNS Client Subnet scope Meridian returns (RFC 7871 §7.2.1), which lets
//! resolvers cache one answer for as many clients as possible.

use std::collections::HashMap;
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

/// The IPv6 /96s that hold IPv4 clients: IPv4-mapped (`::ffff:0:0/96`)
/// and IPv4-compatible (`::/96`). The IPv4 table routes those clients;
/// IPv6 tables keep them apart so that no IPv6 block (and so no ECS
/// scope) spans them.
pub const IPV4_IN_IPV6: [(u128, u8); 2] = [(0xffff_u128 << 32, 96), (0, 96)];

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
        self.block(self.find(addr))
    }

    /// The index of the block holding `addr`.
    pub fn find(&self, addr: u128) -> usize {
        match &self.starts {
            Starts::V4(v) => {
                let a = u32::try_from(addr).unwrap_or(u32::MAX);
                v.partition_point(|&s| s <= a)
            }
            Starts::V6(v) => v.partition_point(|&s| s <= addr),
        }
        .saturating_sub(1)
    }

    /// The value and prefix length of block `i` (an index from
    /// [`Self::find`]).
    pub fn block(&self, i: usize) -> (u32, u8) {
        (self.values[i], self.prefixes[i])
    }

    /// The first address of block `i`.
    fn start(&self, i: usize) -> u128 {
        match &self.starts {
            Starts::V4(v) => u128::from(v[i]),
            Starts::V6(v) => v[i],
        }
    }

    /// The values of the blocks overlapping `[start, end]`, in order.
    pub fn values_within(&self, start: u128, end: u128) -> impl Iterator<Item = u32> + '_ {
        let (first, last) = (self.find(start), self.find(end));
        (first..=last).map(|i| self.values[i])
    }

    /// Every block in address order: `(first address, prefix length,
    /// value)`.
    pub fn blocks(&self) -> impl Iterator<Item = (u128, u8, u32)> + '_ {
        (0..self.len()).map(|i| {
            let (value, prefix) = self.block(i);
            (self.start(i), prefix, value)
        })
    }

    /// The prefix length of the trie node that splits block `i - 1` from
    /// block `i` (`i >= 1`): the longest prefix holding both. Block `i`
    /// starts on that node's midpoint, so the length follows from the
    /// start's alignment alone.
    fn split_level(&self, i: usize) -> u8 {
        let zeros = self.start(i).trailing_zeros().min(u32::from(self.bits) - 1);
        self.bits - 1 - zeros as u8
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

//------------ Splits -----------------------------------------------------------

/// No node: the parent of the root.
const NO_NODE: u32 = u32::MAX;

/// The binary trie of a [`PrefixTable`]: its blocks are the leaves, and
/// every aligned prefix holding two or more blocks is an inner node
/// (a node that is not inside one block holds blocks of at least two
/// values, or [`TableBuilder::finish`] would have merged them). Each
/// inner node splits exactly one pair of neighbouring blocks, so node
/// `i` is the one whose midpoint is the start of block `i` (`i >= 1`).
///
/// Each node records the set of values below it (an id into the shared
/// [`SetBuilder`]). A table whose values are mapped to coarser classes
/// can then find, for any block, the widest prefix around it whose
/// values all fall in one class ([`Self::widen`]) without a table of its
/// own: the ECS scope of a per-service view of a shared location table.
#[derive(Debug)]
pub struct Splits {
    /// By node (index 0 unused): the parent node and the value set.
    nodes: Box<[(u32, u32)]>,
}

impl Splits {
    /// Builds the trie of `table`, whose values must be singleton set ids
    /// of `sets` (below [`SetBuilder::new`]'s `singles`).
    pub fn build(table: &PrefixTable, sets: &mut SetBuilder) -> Self {
        let n = table.len();
        let mut nodes = vec![(NO_NODE, NO_NODE); n];
        // A left-to-right scan of the Cartesian tree of split levels:
        // `stack` holds the nodes whose left subtree is complete (its set
        // and node), deepest on top; `done` is the last completed subtree.
        // Children are finished before their parents, so set ids grow
        // towards the root (what `SetDag::uniform` relies on).
        let mut stack: Vec<(usize, u8, u32, u32)> = Vec::new();
        let mut done = (table.block(0).0, NO_NODE);
        let mut finish =
            |nodes: &mut Vec<(u32, u32)>, top: (usize, u8, u32, u32), done: (u32, u32)| {
                let (node, _, left_set, left_node) = top;
                let set = sets.union(left_set, done.0);
                nodes[node].1 = set;
                for child in [left_node, done.1] {
                    if let Some(c) = nodes.get_mut(child as usize) {
                        c.0 = node as u32;
                    }
                }
                (set, node as u32)
            };
        for i in 1..n {
            let level = table.split_level(i);
            while let Some(&top) = stack.last() {
                // Equal levels never meet here: between two nodes of one
                // level lies the split of a shorter prefix.
                if top.1 <= level {
                    break;
                }
                stack.pop();
                done = finish(&mut nodes, top, done);
            }
            stack.push((i, level, done.0, done.1));
            done = (table.block(i).0, NO_NODE);
        }
        while let Some(top) = stack.pop() {
            done = finish(&mut nodes, top, done);
        }
        Self {
            nodes: nodes.into(),
        }
    }

    /// The widest prefix around block `leaf` of `table` (the table this
    /// was built from) whose every node's value set satisfies `uniform`:
    /// walks up from the block while the parent does. Each step is one
    /// node, and the walk ends at the first mixed one, so a query pays
    /// one step more than the prefix bits it gains.
    pub fn widen(&self, table: &PrefixTable, leaf: usize, uniform: impl Fn(u32) -> bool) -> u8 {
        let mut scope = table.block(leaf).1;
        // The parent of a block is the deeper of the nodes on its sides.
        let before = (leaf >= 1).then(|| (table.split_level(leaf), leaf));
        let after = (leaf + 1 < table.len()).then(|| (table.split_level(leaf + 1), leaf + 1));
        let mut node = match (before, after) {
            (Some(b), Some(a)) => {
                if a.0 > b.0 {
                    a.1
                } else {
                    b.1
                }
            }
            (Some(x), None) | (None, Some(x)) => x.1,
            (None, None) => return scope,
        };
        while let Some(&(parent, set)) = self.nodes.get(node) {
            if !uniform(set) {
                break;
            }
            scope = table.split_level(node);
            node = parent as usize;
        }
        scope
    }

    /// Number of inner nodes (for logs and memory estimates).
    pub fn len(&self) -> usize {
        self.nodes.len().saturating_sub(1)
    }

    /// Whether the trie is a single block.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

//------------ Value sets -------------------------------------------------------

/// A multiply-rotate hasher for the build-time indexes over small
/// integers (SipHash's flood resistance buys nothing for keys the
/// database, not a client, chose, and was a third of the build time).
#[derive(Clone, Copy, Debug, Default)]
struct Fx;

impl std::hash::BuildHasher for Fx {
    type Hasher = FxHasher;
    fn build_hasher(&self) -> FxHasher {
        FxHasher(0)
    }
}

#[derive(Debug)]
struct FxHasher(u64);

impl std::hash::Hasher for FxHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(b));
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

/// Interns the value sets of trie nodes. Ids below `singles` are the
/// one-value sets `{id}`; every larger id is the union of two smaller
/// ids, so one pass in id order classifies them all ([`SetDag`]).
///
/// Sets are deduplicated by content through a hash of it (a collision
/// only costs a duplicate set: equal sets under two ids classify alike).
/// Contents live in one arena, so building allocates per distinct set,
/// not per node.
#[derive(Debug)]
pub struct SetBuilder {
    singles: u32,
    pairs: Vec<(u32, u32)>,
    /// By content hash: the first set with it.
    by_hash: HashMap<u64, u32, Fx>,
    /// Contents of the sets above the singles, back to back, sorted
    /// within each; set `singles + i` is `arena[starts[i]..starts[i + 1]]`.
    arena: Vec<u32>,
    starts: Vec<usize>,
    scratch: Vec<u32>,
}

impl SetBuilder {
    /// A builder for values `0..singles`.
    pub fn new(singles: u32) -> Self {
        Self {
            singles,
            pairs: Vec::new(),
            by_hash: HashMap::default(),
            arena: Vec::new(),
            starts: vec![0],
            scratch: Vec::new(),
        }
    }

    /// The id of the union of sets `a` and `b`.
    pub fn union(&mut self, a: u32, b: u32) -> u32 {
        let (a, b) = (a.min(b), a.max(b));
        if a == b {
            return a;
        }
        let mut m = std::mem::take(&mut self.scratch);
        m.clear();
        {
            let (ca, cb) = (self.content(&a), self.content(&b));
            let (mut i, mut j) = (0, 0);
            while let (Some(&x), Some(&y)) = (ca.get(i), cb.get(j)) {
                m.push(x.min(y));
                i += usize::from(x <= y);
                j += usize::from(y <= x);
            }
            m.extend_from_slice(&ca[i..]);
            m.extend_from_slice(&cb[j..]);
        }
        let hash = {
            use std::hash::{BuildHasher, Hasher};
            let mut h = Fx.build_hasher();
            for &x in &m {
                h.write_u32(x);
            }
            h.finish()
        };
        let existing = self
            .by_hash
            .get(&hash)
            .copied()
            .filter(|&id| self.content(&id) == m);
        let id = match existing {
            Some(id) => id,
            None => {
                let id = self.singles + self.pairs.len() as u32;
                self.pairs.push((a, b));
                self.arena.extend_from_slice(&m);
                self.starts.push(self.arena.len());
                self.by_hash.entry(hash).or_insert(id);
                id
            }
        };
        self.scratch = m;
        id
    }

    fn content<'a>(&'a self, id: &'a u32) -> &'a [u32] {
        match id.checked_sub(self.singles) {
            Some(i) => {
                let i = i as usize;
                &self.arena[self.starts[i]..self.starts[i + 1]]
            }
            None => std::slice::from_ref(id),
        }
    }

    /// Drops the build-time indexes.
    pub fn finish(self) -> SetDag {
        // A member of each set: the one of its first part, recursively.
        let mut reps: Vec<u32> = Vec::with_capacity(self.pairs.len());
        for &(a, _) in &self.pairs {
            let rep = match a.checked_sub(self.singles) {
                Some(i) => reps[i as usize],
                None => a,
            };
            reps.push(rep);
        }
        SetDag {
            singles: self.singles,
            pairs: self
                .pairs
                .iter()
                .zip(&reps)
                .map(|(&(a, b), &ra)| {
                    let rb = match b.checked_sub(self.singles) {
                        Some(i) => reps[i as usize],
                        None => b,
                    };
                    [a, b, ra, rb]
                })
                .collect(),
        }
    }
}

/// The interned value sets: each id above the singles as the union of
/// two smaller ids, with a member of each.
#[derive(Debug)]
pub struct SetDag {
    singles: u32,
    /// By set id above the singles: the two parts and a member of each.
    pairs: Box<[[u32; 4]]>,
}

/// How many class maps [`SetDag::uniform_batch`] classifies at once: one
/// bit of a word each.
pub const BATCH: usize = 64;

impl SetDag {
    /// Which sets hold values of one class only, when value `v` has
    /// class `class_of[v]`, for up to [`BATCH`] class maps (more are
    /// ignored), bit-parallel: a set is of one class when both its parts
    /// are and their members' classes are equal, so one pass over the
    /// sets with a word per set answers for every map at once. Class ids
    /// are compared through bit planes (bit `k` of map `j`'s class of
    /// value `v` is bit `j` of `planes[v][k]`). Values past the end of a
    /// map count as classes of their own.
    pub fn uniform_batch(&self, class_of: &[&[u32]]) -> Vec<Uniform> {
        let maps = &class_of[..class_of.len().min(BATCH)];
        let singles = self.singles as usize;
        let class = |m: &[u32], v: usize| m.get(v).copied().unwrap_or(u32::MAX - v as u32);
        let widest = maps
            .iter()
            .flat_map(|m| (0..singles).map(move |v| class(m, v)))
            .max()
            .unwrap_or(0);
        let planes_per = (32 - widest.leading_zeros()).max(1) as usize;
        let mut planes = vec![0u64; singles * planes_per];
        for (j, m) in maps.iter().enumerate() {
            for v in 0..singles {
                let c = class(m, v);
                for (k, p) in planes[v * planes_per..(v + 1) * planes_per]
                    .iter_mut()
                    .enumerate()
                {
                    *p |= u64::from((c >> k) & 1) << j;
                }
            }
        }
        let all = if maps.len() == BATCH {
            u64::MAX
        } else {
            (1u64 << maps.len()) - 1
        };
        let mut word: Vec<u64> = Vec::with_capacity(singles + self.pairs.len());
        word.resize(singles, all);
        let mut found: Vec<Vec<u32>> = vec![Vec::new(); maps.len()];
        for (i, &[a, b, ra, rb]) in self.pairs.iter().enumerate() {
            let mut w = word[a as usize] & word[b as usize];
            if w != 0 {
                let pa = &planes[ra as usize * planes_per..][..planes_per];
                let pb = &planes[rb as usize * planes_per..][..planes_per];
                let differ = pa.iter().zip(pb).fold(0, |d, (x, y)| d | (x ^ y));
                w &= !differ;
                let mut bits = w;
                while bits != 0 {
                    let j = bits.trailing_zeros() as usize;
                    found[j].push(i as u32);
                    bits &= bits - 1;
                }
            }
            word.push(w);
        }
        found
            .iter()
            .map(|ids| Uniform::from_sorted(self.singles, ids))
            .collect()
    }

    /// Number of sets of two or more values.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }
}

/// The sets of one class under some value → class map. Few sets are (a
/// class is a handful of locations), so the bitmap over sets keeps only
/// its non-zero words, found through a summary bitmap with a rank per
/// summary word: a lookup is O(1), and the memory is about 1 bit per
/// 64 sets plus 8 bytes per word with a uniform set.
#[derive(Debug)]
pub struct Uniform {
    singles: u32,
    /// Bit `w`: word `w` of the full bitmap has a set bit.
    summary: Box<[u64]>,
    /// By summary word: how many non-zero words precede it.
    ranks: Box<[u32]>,
    /// The non-zero words, in order.
    words: Box<[u64]>,
}

impl Uniform {
    /// From the set ids (minus `singles`) that are uniform, ascending.
    fn from_sorted(singles: u32, ids: &[u32]) -> Self {
        let mut summary: Vec<u64> = Vec::new();
        let mut words: Vec<u64> = Vec::new();
        let mut last_word = usize::MAX;
        for &i in ids {
            let w = i as usize / 64;
            if w != last_word {
                if summary.len() <= w / 64 {
                    summary.resize(w / 64 + 1, 0);
                }
                summary[w / 64] |= 1 << (w % 64);
                words.push(0);
                last_word = w;
            }
            if let Some(x) = words.last_mut() {
                *x |= 1 << (i % 64);
            }
        }
        let mut ranks = Vec::with_capacity(summary.len());
        let mut before = 0u32;
        for s in &summary {
            ranks.push(before);
            before += s.count_ones();
        }
        Self {
            singles,
            summary: summary.into(),
            ranks: ranks.into(),
            words: words.into(),
        }
    }

    /// Whether every value of `set` has the same class.
    pub fn contains(&self, set: u32) -> bool {
        let Some(i) = set.checked_sub(self.singles) else {
            return true;
        };
        let w = i as usize / 64;
        let (Some(&s), Some(&rank)) = (self.summary.get(w / 64), self.ranks.get(w / 64)) else {
            return false;
        };
        let bit = 1u64 << (w % 64);
        if s & bit == 0 {
            return false;
        }
        let at = rank as usize + (s & (bit - 1)).count_ones() as usize;
        self.words.get(at).is_some_and(|x| x & (1 << (i % 64)) != 0)
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
