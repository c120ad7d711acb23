//! The static latency map: client networks (CIDR) → measured round-trip
//! time to each datacenter, for operators who measure with their own tools
//! (RIPE Atlas exports, a CDN's logs). It is the third estimate level,
//! after the two RUM levels and before the distance model.
//!
//! # Format
//!
//! A versioned TOML file (`latency/latency-map.example.toml` is a
//! commented example):
//!
//! ```toml
//! version = 1
//!
//! [[networks]]
//! network = "198.51.100.0/24"
//! rtt_ms = { "us-east" = 20.5, "eu-west" = 95 }
//! ```
//!
//! * `network`: a CIDR block with no host bits; IPv4-mapped IPv6 blocks
//!   are refused (such clients are routed as IPv4: write the IPv4 block).
//!   Each block is listed once.
//! * `rtt_ms`: datacenter name → RTT in milliseconds, more than 0 and at
//!   most [`MAX_RTT_MS`]. Datacenters a block does not list have no
//!   estimate there; an empty table carves the block out of a wider one.
//! * Blocks may nest: the longest prefix holding the client wins, as with
//!   the geo policy's `networks`.
//!
//! # Lookup
//!
//! Loading flattens the nested blocks into two [`PrefixTable`]s (IPv4 and
//! IPv6) whose value is a row id: rows are the distinct RTT sets, one
//! [`Cell`] per datacenter ([`LatencyMap::names`], sorted). A lookup is one
//! binary search and returns the row and the widest aligned block around
//! the client where every address has the same row: the ECS scope of an
//! answer the map decided. Blocks with equal RTTs merge, so a map of many
//! small networks with the same figures answers with a wide scope.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::net::IpAddr;
use std::path::Path;

use ipnet::IpNet;
use serde::Deserialize;

use super::table::Cell;
use crate::config::{ConfigError, key_part, parse_network, parse_toml};
use crate::geo::table::{PrefixTable, TableBuilder, addr_bits, family_bits, prefix_range};

/// The only format version this build reads.
pub const MAP_VERSION: i64 = 1;
/// Largest RTT a map may give, in milliseconds (the largest `max_rtt_ms`).
pub use crate::config::latency::MAX_RTT_MS;
/// Most distinct datacenter names a map may use (as many as a zone may
/// have datacenters).
pub const MAX_DATACENTERS: usize = 1024;
/// [`Cell::samples`] of every estimate from the map: it is not a sample
/// count but a static figure, always "enough".
pub const STATIC_SAMPLES: u16 = u16::MAX;

/// Table value of the IPv4-mapped block in the IPv6 table (no row).
const MAPPED: u32 = u32::MAX;

/// A map file that cannot be used: the file, the key (such as
/// `networks[3].rtt_ms.us-east`; empty for whole-file problems) and why.
pub type MapError = ConfigError;

/// The loaded map; see the module docs.
#[derive(Clone, Debug)]
pub struct LatencyMap {
    /// Datacenter names, sorted and unique: the columns of every row.
    names: Box<[String]>,
    /// Rows of `names.len()` cells each, one row per distinct RTT set.
    cells: Box<[Cell]>,
    v4: PrefixTable,
    v6: PrefixTable,
    /// Networks the file listed.
    networks: usize,
}

impl Default for LatencyMap {
    /// A map without networks: every lookup finds nothing.
    fn default() -> Self {
        Self {
            names: Box::default(),
            cells: Box::default(),
            v4: TableBuilder::new(32, 0).finish(&[]),
            v6: mapped_carved(TableBuilder::new(128, 0)),
            networks: 0,
        }
    }
}

impl LatencyMap {
    /// The row for `addr` (one [`Cell`] per name in [`Self::names`]; `None`
    /// when no network of the map holds it) and the prefix length of the
    /// widest block around `addr` with the same result.
    ///
    /// Pass the address the client is routed on: an IPv4-mapped IPv6
    /// address converted to IPv4. (Looked up as IPv6, the mapped block has
    /// no row.)
    pub fn lookup(&self, addr: IpAddr) -> (Option<&[Cell]>, u8) {
        let table = if addr.is_ipv6() { &self.v6 } else { &self.v4 };
        let (id, scope) = table.lookup(addr_bits(addr));
        (self.row(id), scope)
    }

    fn row(&self, id: u32) -> Option<&[Cell]> {
        if id == 0 || id == MAPPED {
            return None;
        }
        let w = self.names.len();
        let i = (id - 1) as usize;
        self.cells.get(i * w..(i + 1) * w)
    }

    /// The datacenter names, sorted: column `i` of a row is `names()[i]`.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The column of datacenter `name`.
    pub fn column(&self, name: &str) -> Option<usize> {
        self.names.binary_search_by(|n| n.as_str().cmp(name)).ok()
    }

    /// Networks the file listed.
    pub fn len(&self) -> usize {
        self.networks
    }

    /// Whether the file listed no network.
    pub fn is_empty(&self) -> bool {
        self.networks == 0
    }

    /// Distinct RTT sets (rows).
    pub fn rows(&self) -> usize {
        self.cells.len().checked_div(self.names.len()).unwrap_or(0)
    }

    /// Blocks in the IPv4 and IPv6 tables.
    pub fn blocks(&self) -> (usize, usize) {
        (self.v4.len(), self.v6.len())
    }

    /// Heap bytes the map holds (the tables store 4 + 4 + 1 bytes per IPv4
    /// block and 16 + 4 + 1 per IPv6 block).
    pub fn memory_bytes(&self) -> usize {
        self.names
            .iter()
            .map(|n| n.capacity() + size_of::<String>())
            .sum::<usize>()
            + self.cells.len() * size_of::<Cell>()
            + self.v4.len() * (4 + 4 + 1)
            + self.v6.len() * (16 + 4 + 1)
    }
}

//------------ Loading ---------------------------------------------------------

/// Reads and parses the map file at `path`.
pub fn load(path: &Path) -> Result<LatencyMap, MapError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| MapError::new(path, "", format!("cannot read the latency map: {e}")))?;
    parse(&text, path)
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct RawMap {
    version: i64,
    #[serde(default)]
    networks: Vec<RawNetwork>,
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct RawNetwork {
    network: String,
    #[serde(deserialize_with = "in_file_order")]
    rtt_ms: Vec<(String, f64)>,
}

/// A TOML table of RTTs as a list of its entries (no map to build: the
/// names are interned once for the whole file).
fn in_file_order<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<(String, f64)>, D::Error> {
    struct Entries;
    impl<'de> serde::de::Visitor<'de> for Entries {
        type Value = Vec<(String, f64)>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a table of datacenter name = RTT in milliseconds")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = Vec::with_capacity(map.size_hint().unwrap_or(0).min(64));
            while let Some(entry) = map.next_entry::<String, f64>()? {
                out.push(entry);
            }
            Ok(out)
        }
    }
    d.deserialize_map(Entries)
}

/// Just the version, to name it as the problem when a file of another
/// version fails to parse as this one.
#[derive(Deserialize)]
struct RawVersion {
    version: Option<toml::Value>,
}

/// Parses map text; `file` names the source in errors.
pub fn parse(text: &str, file: &Path) -> Result<LatencyMap, MapError> {
    let raw = match fast::parse(text) {
        Some(raw) => raw,
        None => parse_raw(text, file)?,
    };
    if raw.version != MAP_VERSION {
        return Err(unknown_version(file, raw.version));
    }
    build(file, &raw.networks)
}

fn unknown_version(file: &Path, v: impl fmt::Display) -> MapError {
    MapError::new(
        file,
        "version",
        format!("unknown version {v}; this Meridian reads version {MAP_VERSION}"),
    )
}

fn parse_raw(text: &str, file: &Path) -> Result<RawMap, MapError> {
    parse_toml(file, text).map_err(|e| {
        // A file of another version need not fit this one's schema: name
        // the version as the problem.
        match toml::from_str::<RawVersion>(text) {
            Ok(RawVersion { version: Some(v) }) if v.as_integer() != Some(MAP_VERSION) => {
                unknown_version(file, v)
            }
            _ => e,
        }
    })
}

/// The common shape of a map file, read without the TOML parser.
///
/// A generated map of 100,000 networks is some 10 to 20 MB of TOML, and
/// the `toml` crate reads about 20 MB/s: most of a second. Such files use
/// one narrow shape, which this reads line by line at several times that
/// speed. It accepts only text whose every line is blank, a comment,
/// `version = 1`, `[[networks]]`, `network = "..."` or `rtt_ms = { k = v,
/// ... }` with bare or plainly quoted keys and plain decimal numbers, and
/// gives the same [`RawMap`] the TOML parser would. Anything else (another
/// spelling, a trailing comment, an escape, a duplicate key, a control
/// character, a missing key) returns `None`, and the file goes to the
/// TOML parser, which also words every error. The fuzz target
/// `latency_map` checks the two agree.
mod fast {
    use super::{MAP_VERSION, RawMap, RawNetwork};

    /// The entry being read: its network and its RTTs, each set once.
    type Open = Option<(Option<String>, Option<Vec<(String, f64)>>)>;

    pub(super) fn parse(text: &str) -> Option<RawMap> {
        // TOML forbids control characters but tab in comments and strings;
        // a lone CR is not a line ending.
        if text
            .bytes()
            .any(|b| (b < 0x20 && b != b'\t' && b != b'\n' && b != b'\r') || b == 0x7f)
        {
            return None;
        }
        let mut version = None;
        let mut networks: Vec<RawNetwork> = Vec::new();
        let mut open: Open = None;
        let close = |open: Open, networks: &mut Vec<RawNetwork>| {
            match open {
                None => Some(()),
                Some((Some(network), Some(rtt_ms))) => {
                    networks.push(RawNetwork { network, rtt_ms });
                    Some(())
                }
                Some(_) => None, // missing a key: the TOML parser words it
            }
        };
        for line in text.split_inclusive('\n') {
            // CR only as part of CRLF: TOML refuses it anywhere else, even
            // at the end of the file.
            let line = line
                .strip_suffix("\r\n")
                .or_else(|| line.strip_suffix('\n'))
                .unwrap_or(line);
            if line.contains('\r') {
                return None;
            }
            let line = line.trim_matches([' ', '\t']);
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if line == "[[networks]]" {
                close(open.take(), &mut networks)?;
                open = Some((None, None));
                continue;
            }
            let (key, value) = line.split_once('=')?;
            let (key, value) = (
                key.trim_end_matches([' ', '\t']),
                value.trim_start_matches([' ', '\t']),
            );
            match (key, &mut open) {
                ("version", None) if version.is_none() && value == "1" => {
                    version = Some(MAP_VERSION);
                }
                ("network", Some((n @ None, _))) => *n = Some(string(value)?.to_string()),
                ("rtt_ms", Some((_, r @ None))) => *r = Some(table(value)?),
                _ => return None,
            }
        }
        close(open, &mut networks)?;
        Some(RawMap {
            version: version?,
            networks,
        })
    }

    /// `"..."` with no escape or quote inside.
    fn string(v: &str) -> Option<&str> {
        let inner = v.strip_prefix('"')?.strip_suffix('"')?;
        (!inner.contains(['"', '\\'])).then_some(inner)
    }

    /// `{ key = number, ... }` or `{}`, keys unique.
    fn table(v: &str) -> Option<Vec<(String, f64)>> {
        let inner = v.strip_prefix('{')?.strip_suffix('}')?;
        let inner = inner.trim_matches([' ', '\t']);
        let mut out: Vec<(String, f64)> = Vec::new();
        if inner.is_empty() {
            return Some(out);
        }
        for item in inner.split(',') {
            let (k, n) = item.split_once('=')?;
            let k = k.trim_matches([' ', '\t']);
            let k = if k.starts_with('"') {
                string(k)?
            } else if !k.is_empty()
                && k.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                k
            } else {
                return None;
            };
            let n = number(n.trim_matches([' ', '\t']))?;
            if out.iter().any(|(d, _)| d == k) {
                return None;
            }
            out.push((k.to_string(), n));
        }
        // The TOML parser yields a table's keys sorted.
        out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        Some(out)
    }

    /// A plain decimal: digits, no leading zero, optionally `.digits`;
    /// at most 18 digits before the point, so TOML's 64-bit integers
    /// hold every integer this accepts.
    fn number(v: &str) -> Option<f64> {
        let (int, frac) = match v.split_once('.') {
            Some((i, f)) => (i, Some(f)),
            None => (v, None),
        };
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(int) || int.len() > 18 || (int.len() > 1 && int.starts_with('0')) {
            return None;
        }
        if let Some(f) = frac
            && !digits(f)
        {
            return None;
        }
        v.parse().ok()
    }
}

/// For the fuzz target: `None` when the line reader declines `text`,
/// else whether the TOML parser reads it the same.
#[doc(hidden)]
pub fn fast_path_agrees(text: &str) -> Option<bool> {
    let fast = fast::parse(text)?;
    let slow = toml::from_str::<RawMap>(text).ok();
    Some(slow.as_ref() == Some(&fast))
}

/// A network's block and row id (0: no row).
struct Entry {
    start: u128,
    end: u128,
    row: u32,
}

fn build(file: &Path, raw: &[RawNetwork]) -> Result<LatencyMap, MapError> {
    // Pass 1: check every entry; collect the datacenter names.
    let mut nets = Vec::with_capacity(raw.len());
    let mut seen: HashMap<IpNet, usize> = HashMap::with_capacity(raw.len());
    let mut names: BTreeSet<&str> = BTreeSet::new();
    for (i, n) in raw.iter().enumerate() {
        // Keys are only formatted for an error.
        let net = parse_network(file, || format!("networks[{i}].network"), &n.network)?;
        if let Some(first) = seen.insert(net, i) {
            return Err(MapError::new(
                file,
                format!("networks[{i}].network"),
                format!("{net} is listed twice (first at networks[{first}])"),
            ));
        }
        for (dc, rtt) in &n.rtt_ms {
            let dkey = || format!("networks[{i}].rtt_ms.{}", key_part(dc));
            if dc.is_empty() {
                return Err(MapError::new(file, dkey(), "empty datacenter name"));
            }
            if !(rtt.is_finite() && *rtt > 0.0 && *rtt <= MAX_RTT_MS) {
                return Err(MapError::new(
                    file,
                    dkey(),
                    format!(
                        "{rtt} is not a round-trip time in milliseconds \
                         (more than 0, at most {MAX_RTT_MS})"
                    ),
                ));
            }
            if names.insert(dc.as_str()) && names.len() > MAX_DATACENTERS {
                return Err(MapError::new(
                    file,
                    dkey(),
                    format!("more than {MAX_DATACENTERS} distinct datacenters"),
                ));
            }
        }
        nets.push(net);
    }

    // Pass 2: rows, deduplicated by their RTTs in tenths.
    let names: Box<[String]> = names.into_iter().map(str::to_string).collect();
    let column: HashMap<&str, usize> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i))
        .collect();
    let width = names.len();
    let mut cells: Vec<Cell> = Vec::new();
    let mut row_ids: HashMap<Box<[u16]>, u32> = HashMap::new();
    let mut scratch = vec![0u16; width];
    let mut entries: [Vec<Entry>; 2] = [Vec::new(), Vec::new()];
    for (n, net) in raw.iter().zip(&nets) {
        let row = if n.rtt_ms.is_empty() {
            0
        } else {
            scratch.fill(0);
            for (dc, rtt) in &n.rtt_ms {
                if let Some(&c) = column.get(dc.as_str()) {
                    scratch[c] = Cell::of(*rtt, f64::from(STATIC_SAMPLES)).rtt_tenths;
                }
            }
            match row_ids.get(scratch.as_slice()) {
                Some(&id) => id,
                None => {
                    let id = row_ids.len() as u32 + 1;
                    row_ids.insert(scratch.clone().into_boxed_slice(), id);
                    cells.extend(scratch.iter().map(|&t| {
                        if t == 0 {
                            Cell::default()
                        } else {
                            Cell {
                                rtt_tenths: t,
                                samples: STATIC_SAMPLES,
                            }
                        }
                    }));
                    id
                }
            }
        };
        let v6 = net.addr().is_ipv6();
        let (start, end) = prefix_range(family_bits(v6), addr_bits(net.addr()), net.prefix_len());
        entries[usize::from(v6)].push(Entry { start, end, row });
    }

    let [e4, e6] = entries;
    Ok(LatencyMap {
        names,
        cells: cells.into_boxed_slice(),
        v4: flatten(TableBuilder::new(32, 0), e4).finish(&[]),
        v6: mapped_carved(flatten(TableBuilder::new(128, 0), e6)),
        networks: raw.len(),
    })
}

/// Finishes an IPv6 table with the IPv4-mapped block (`::ffff:0:0/96`)
/// as a value of its own: those clients are routed by the IPv4 table, so
/// no IPv6 block (and no ECS scope) may span them. (No entry lies inside
/// it: [`parse_network`] refuses mapped networks.)
fn mapped_carved(b: TableBuilder) -> PrefixTable {
    b.finish(&[(0xffff_u128 << 32, 96, MAPPED)])
}

/// Feeds nested CIDR blocks to `b` as the non-overlapping ranges they
/// paint, longest prefix winning, in address order.
///
/// `TableBuilder::finish` can apply nested overrides too, but each one
/// splices its range vector: quadratic for a map of 100,000 networks.
/// Here one sort and a sweep do it: CIDR blocks either nest or are
/// disjoint, so sorted by start (and the wider first at equal starts),
/// the blocks open around a point form a stack, innermost on top.
fn flatten(mut b: TableBuilder, mut entries: Vec<Entry>) -> TableBuilder {
    entries.sort_unstable_by(|x, y| x.start.cmp(&y.start).then(y.end.cmp(&x.end)));
    let mut stack: Vec<&Entry> = Vec::new();
    // The next address not yet pushed; `None` past the end of the space.
    let mut next: Option<u128> = Some(0);
    // Pushes the rest of the top block, up to `until` (inclusive).
    let emit = |b: &mut TableBuilder, next: &mut Option<u128>, until: u128, row: u32| {
        if let Some(n) = *next
            && n <= until
        {
            b.push(n, until, row);
            *next = until.checked_add(1);
        }
    };
    for e in &entries {
        while let Some(top) = stack.last()
            && top.end < e.start
        {
            emit(&mut b, &mut next, top.end, top.row);
            stack.pop();
        }
        if let Some(top) = stack.last()
            && e.start > 0
        {
            emit(&mut b, &mut next, e.start - 1, top.row);
        }
        // Nothing open: the gap before `e` is the builder's fill.
        next = Some(e.start);
        stack.push(e);
    }
    while let Some(top) = stack.pop() {
        emit(&mut b, &mut next, top.end, top.row);
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt::Write as _;
    use std::time::Instant;

    fn file() -> &'static Path {
        Path::new("map.toml")
    }

    fn map(text: &str) -> LatencyMap {
        parse(text, file()).unwrap_or_else(|e| panic!("{e}"))
    }

    fn err(text: &str) -> MapError {
        match parse(text, file()) {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(e) => e,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    /// The estimates for `addr` as (name, ms) and the scope.
    fn rtts<'a>(m: &'a LatencyMap, addr: &str) -> (Option<Vec<(&'a str, f32)>>, u8) {
        let (row, scope) = m.lookup(ip(addr));
        let row = row.map(|cells| {
            assert_eq!(cells.len(), m.names().len());
            cells
                .iter()
                .zip(m.names())
                .filter(|(c, _)| c.is_some())
                .map(|(c, n)| {
                    assert_eq!(c.samples, STATIC_SAMPLES);
                    (n.as_str(), c.rtt_ms())
                })
                .collect()
        });
        (row, scope)
    }

    #[test]
    fn the_shipped_example_loads_and_answers_as_its_comments_say() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("latency/latency-map.example.toml");
        let m = load(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(m.len(), 5);
        assert_eq!(m.names(), ["ap-southeast", "eu-west", "us-east"]);
        assert_eq!(m.column("eu-west"), Some(1));
        assert_eq!(m.column("nowhere"), None);
        // The /24 (its first /26 is a block of its own: .64/26 differs).
        assert_eq!(
            rtts(&m, "198.51.100.9"),
            (
                Some(vec![
                    ("ap-southeast", 190.0),
                    ("eu-west", 18.2),
                    ("us-east", 85.5)
                ]),
                26
            )
        );
        // The nested /26 wins over the /24, and lists two datacenters.
        assert_eq!(
            rtts(&m, "198.51.100.70"),
            (Some(vec![("eu-west", 95.0), ("us-east", 40.0)]), 26)
        );
        // The carved-out /27 has no estimate.
        assert_eq!(rtts(&m, "198.51.100.200"), (None, 27));
        assert_eq!(
            rtts(&m, "198.51.100.230").0,
            rtts(&m, "198.51.100.9").0,
            "the rest of the /24"
        );
        // Elsewhere in IPv4, the /0 fallback; 8.8.8.8 shares no half of
        // the space with 198.51.100.0/24.
        assert_eq!(
            rtts(&m, "8.8.8.8"),
            (
                Some(vec![
                    ("ap-southeast", 250.0),
                    ("eu-west", 150.0),
                    ("us-east", 120.0)
                ]),
                1
            )
        );
        assert_eq!(
            rtts(&m, "2001:db8:100:5::1"),
            (Some(vec![("ap-southeast", 32.5), ("us-east", 140.0)]), 48)
        );
        assert_eq!(rtts(&m, "2001:db8:101::1").0, None);
        assert!(m.memory_bytes() > 0);
    }

    #[test]
    fn the_longest_prefix_wins_whatever_the_order_in_the_file() {
        let nets = [
            ("10.0.0.0/8", 100),
            ("10.1.0.0/16", 50),
            ("10.1.2.0/24", 10),
            ("10.1.2.128/25", 5),
            ("2001:db8::/32", 100),
            ("2001:db8:1::/48", 50),
            ("2001:db8:1:2::/64", 10),
        ];
        let text = |order: &mut dyn Iterator<Item = &(&str, i32)>| {
            let mut t = String::from("version = 1\n");
            for (net, rtt) in order {
                write!(
                    t,
                    "[[networks]]\nnetwork = \"{net}\"\nrtt_ms = {{ a = {rtt} }}\n"
                )
                .expect("write");
            }
            t
        };
        for m in [
            map(&text(&mut nets.iter())),
            map(&text(&mut nets.iter().rev())),
        ] {
            let ms = |a: &str| rtts(&m, a);
            assert_eq!(ms("10.1.2.200"), (Some(vec![("a", 5.0)]), 25));
            assert_eq!(ms("10.1.2.1"), (Some(vec![("a", 10.0)]), 25));
            assert_eq!(ms("10.1.3.1"), (Some(vec![("a", 50.0)]), 24));
            assert_eq!(ms("10.1.128.1"), (Some(vec![("a", 50.0)]), 17));
            assert_eq!(ms("10.2.0.1"), (Some(vec![("a", 100.0)]), 15));
            assert_eq!(ms("10.255.0.1"), (Some(vec![("a", 100.0)]), 9));
            assert_eq!(ms("11.0.0.1"), (None, 8));
            assert_eq!(ms("2001:db8:1:2::1"), (Some(vec![("a", 10.0)]), 64));
            assert_eq!(ms("2001:db8:1:3::1"), (Some(vec![("a", 50.0)]), 64));
            assert_eq!(ms("2001:db8:2::1"), (Some(vec![("a", 100.0)]), 47));
            assert_eq!(ms("2001:db9::1"), (None, 32));
            assert_eq!(m.len(), 7);
            assert_eq!(m.rows(), 4);
        }
    }

    #[test]
    fn equal_figures_share_a_row_and_merge_into_a_wider_scope() {
        let m = map(r#"
            version = 1
            [[networks]]
            network = "192.0.2.0/25"
            rtt_ms = { b = 20.04, a = 10 }
            [[networks]]
            network = "192.0.2.128/25"
            rtt_ms = { a = 10.0, b = 20.0 }
            [[networks]]
            network = "192.0.3.0/24"
            rtt_ms = { a = 10.0 }
        "#);
        assert_eq!(m.rows(), 2, "20.04 ms is 20.0 at 0.1 ms");
        assert_eq!(
            rtts(&m, "192.0.2.1"),
            (Some(vec![("a", 10.0), ("b", 20.0)]), 24)
        );
        assert_eq!(rtts(&m, "192.0.2.200").1, 24);
        assert_eq!(rtts(&m, "192.0.3.1"), (Some(vec![("a", 10.0)]), 24));
        let cells = m.lookup(ip("192.0.3.1")).0.expect("row");
        assert_eq!(cells[1], Cell::default(), "b has no estimate there");
    }

    #[test]
    fn no_ipv6_block_spans_the_ipv4_mapped_range() {
        let m = map(r#"
            version = 1
            [[networks]]
            network = "::/0"
            rtt_ms = { a = 10 }
        "#);
        // ::ffff:0:0/96 lies in ::/1, so its half cannot be one block.
        let (row, scope) = m.lookup(ip("2001:db8::1"));
        assert!(row.is_some());
        assert_eq!(scope, 3, "2000::/3 is the widest block without it");
        assert_eq!(m.lookup(ip("8000::1")).1, 1);
        assert_eq!(m.lookup(ip("::ffff:192.0.2.1")), (None, 96));
        assert_eq!(m.lookup(ip("::1")).1, 81);
        // The empty map too.
        let m = LatencyMap::default();
        assert_eq!(m.lookup(ip("2001:db8::1")), (None, 3));
        assert_eq!(m.lookup(ip("192.0.2.1")), (None, 0));
        assert!(m.is_empty());
    }

    //-------- every address of a small space, against a naive reading

    /// xorshift64*: deterministic test data without a dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// What a client at an address should get: (in the mapped block, the
    /// RTTs in tenths per name), by the longest listed prefix.
    type Naive = (bool, Option<Vec<u16>>);

    fn naive(bits: u8, nets: &[(u128, u8, Vec<u16>)], a: u128) -> Naive {
        if bits == 128 && prefix_range(128, 0xffff_u128 << 32, 96).0 == a & !0xffff_ffff {
            return (true, None);
        }
        let best = nets
            .iter()
            .filter(|(s, p, _)| {
                let (s, e) = prefix_range(bits, *s, *p);
                (s..=e).contains(&a)
            })
            .max_by_key(|n| n.1);
        let row = best
            .map(|n| n.2.clone())
            .filter(|r| r.iter().any(|&t| t != 0));
        (false, row)
    }

    /// Checks one random map over the space `base/(bits - 10)` (1024
    /// addresses), with two covering networks outside it.
    fn check_random_map(rng: &mut Rng, bits: u8, base: u128, covers: [(u128, u8); 2]) {
        let v6 = bits == 128;
        let sp = bits - 10;
        let (s0, s1) = prefix_range(bits, base, sp);
        let fmt = |a: u128| -> String {
            if v6 {
                std::net::Ipv6Addr::from(a).to_string()
            } else {
                std::net::Ipv4Addr::from(a as u32).to_string()
            }
        };
        // A few RTT sets over three names, so rows repeat and merge; the
        // empty set carves.
        let sets: [&[(&str, u16)]; 4] =
            [&[("a", 100)], &[("a", 100), ("b", 205)], &[("b", 5)], &[]];
        let mut nets: Vec<(u128, u8, Vec<u16>)> = Vec::new();
        let mut text = String::from("version = 1\n");
        let mut add = |text: &mut String, start: u128, p: u8, set: &[(&str, u16)]| {
            let (start, _) = prefix_range(bits, start, p);
            if nets.iter().any(|n| n.0 == start && n.1 == p) {
                return;
            }
            let mut tenths = vec![0u16; 2];
            let mut table = Vec::new();
            for &(n, t) in set {
                tenths[usize::from(n == "b")] = t;
                table.push(format!("{n} = {}", f64::from(t) / 10.0));
            }
            nets.push((start, p, tenths));
            write!(
                text,
                "[[networks]]\nnetwork = \"{}/{p}\"\nrtt_ms = {{ {} }}\n",
                fmt(start),
                table.join(", ")
            )
            .expect("write");
        };
        for &(c, p) in &covers {
            if rng.below(2) == 0 {
                let set = sets[rng.below(3) as usize];
                add(&mut text, c, p, set);
            }
        }
        for _ in 0..rng.below(24) {
            let p = sp + rng.below(11) as u8;
            let set = sets[rng.below(4) as usize];
            add(&mut text, s0 + u128::from(rng.below(1024)), p, set);
        }
        let m = map(&text);
        let inside: Vec<Naive> = (s0..=s1).map(|a| naive(bits, &nets, a)).collect();
        let expect = |a: u128| {
            if (s0..=s1).contains(&a) {
                inside[(a - s0) as usize].clone()
            } else {
                naive(bits, &nets, a)
            }
        };
        // The addresses where the naive answer may change outside the
        // space: the bounds of every listed block and of the mapped one.
        let mut edges: Vec<u128> = Vec::new();
        let mut bounds = covers.to_vec();
        bounds.push((base, sp));
        if v6 {
            bounds.push((0xffff_u128 << 32, 96));
        }
        for (b, p) in bounds {
            let (s, e) = prefix_range(bits, b, p);
            edges.extend([s.saturating_sub(1), s, e, e.saturating_add(1)]);
        }
        let end = if v6 { u128::MAX } else { u128::from(u32::MAX) };
        let points_in = |lo: u128, hi: u128| {
            let mut v: Vec<u128> = (s0.max(lo)..=s1.min(hi)).collect();
            v.extend(
                edges
                    .iter()
                    .copied()
                    .filter(|&x| x >= lo && x <= hi && x <= end),
            );
            v.extend([lo, hi]);
            v
        };
        let mut checked: Option<(u128, u128)> = None;
        for a in s0..=s1 {
            let want = &inside[(a - s0) as usize];
            let (row, scope) = m.lookup(if v6 {
                IpAddr::V6(a.into())
            } else {
                IpAddr::V4((a as u32).into())
            });
            let got: Option<Vec<u16>> = row.map(|cells| {
                let mut t = vec![0u16; 2];
                for (c, n) in cells.iter().zip(m.names()) {
                    t[usize::from(n == "b")] = c.rtt_tenths;
                }
                t
            });
            assert_eq!(got, want.1, "{} in\n{text}", fmt(a));
            let block = prefix_range(bits, a, scope);
            if checked == Some(block) {
                continue; // the addresses before it checked this block
            }
            let (lo, hi) = block;
            assert!(
                checked.is_none_or(|c| c.1 < lo),
                "{} /{scope} overlaps the previous block in\n{text}",
                fmt(a)
            );
            checked = Some(block);
            // Sound: every address of the block gets the same answer.
            for x in points_in(lo, hi) {
                assert_eq!(
                    &expect(x),
                    want,
                    "{} /{scope} holds {} in\n{text}",
                    fmt(a),
                    fmt(x)
                );
            }
            // Widest: the block one bit wider holds a different answer.
            if scope > 0 {
                let (lo, hi) = prefix_range(bits, a, scope - 1);
                assert!(
                    points_in(lo, hi).into_iter().any(|x| &expect(x) != want),
                    "{} could have /{} in\n{text}",
                    fmt(a),
                    scope - 1
                );
            }
        }
    }

    #[test]
    fn every_ipv4_address_gets_its_longest_prefix_and_a_sound_widest_scope() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let base = u128::from(u32::from(std::net::Ipv4Addr::new(10, 1, 4, 0)));
        let wide = u128::from(u32::from(std::net::Ipv4Addr::new(10, 0, 0, 0)));
        for _ in 0..150 {
            check_random_map(&mut rng, 32, base, [(0, 0), (wide, 8)]);
        }
    }

    #[test]
    fn every_ipv6_address_gets_its_longest_prefix_and_a_sound_widest_scope() {
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        let doc = 0x2001_0db8_u128 << 96;
        for _ in 0..150 {
            check_random_map(&mut rng, 128, doc | 0x4_0000, [(0, 0), (doc, 32)]);
        }
    }

    //-------- errors

    #[track_caller]
    fn refused(body: &str, key: &str, reason: &str) {
        let e = err(&format!("version = 1\n{body}"));
        assert_eq!(e.file, file());
        assert_eq!(e.key, key, "{e}");
        assert!(e.reason.contains(reason), "{e}");
        assert_eq!(e.to_string(), format!("map.toml: {key}: {}", e.reason));
    }

    const GOOD: &str = "[[networks]]\nnetwork = \"192.0.2.0/24\"\nrtt_ms = { a = 1 }\n";

    #[test]
    fn bad_networks_are_refused_naming_the_entry() {
        let one =
            |net: &str| format!("{GOOD}[[networks]]\nnetwork = \"{net}\"\nrtt_ms = {{ a = 1 }}\n");
        let cidr = "is not a network in CIDR notation";
        refused(&one("192.0.2.0/33"), "networks[1].network", cidr);
        refused(&one("192.0.2.0"), "networks[1].network", cidr);
        refused(&one("example.com/24"), "networks[1].network", cidr);
        refused(
            &one("198.51.100.1/24"),
            "networks[1].network",
            "host bits set; did you mean \"198.51.100.0/24\"?",
        );
        refused(
            &one("2001:db8::1/32"),
            "networks[1].network",
            "\"2001:db8::/32\"",
        );
        refused(
            &one("::ffff:198.51.100.0/120"),
            "networks[1].network",
            "IPv4-mapped clients are routed as IPv4: write \"198.51.100.0/24\" instead",
        );
        refused(
            &one("192.0.2.0/24"),
            "networks[1].network",
            "192.0.2.0/24 is listed twice (first at networks[0])",
        );
        let v6 = "[[networks]]\nnetwork = \"2001:db8::/32\"\nrtt_ms = { a = 1 }\n";
        refused(
            &format!("{v6}{GOOD}[[networks]]\nnetwork = \"2001:0db8:0::/32\"\nrtt_ms = {{}}\n"),
            "networks[2].network",
            "(first at networks[0])",
        );
    }

    #[test]
    fn bad_rtts_are_refused_naming_the_datacenter() {
        let rtt = |v: &str| {
            format!(
                "{GOOD}[[networks]]\nnetwork = \"10.0.0.0/8\"\nrtt_ms = {{ a = 5, us-east = {v} }}\n"
            )
        };
        let reason = "is not a round-trip time in milliseconds (more than 0, at most 6000)";
        for v in ["0", "0.0", "-3", "6000.01", "1e9", "nan", "inf", "-inf"] {
            refused(&rtt(v), "networks[1].rtt_ms.us-east", reason);
        }
        // The bounds themselves are fine.
        map(&format!("version = 1\n{}", rtt("6000")));
        map(&format!("version = 1\n{}", rtt("0.001")));
        refused(
            &rtt("\"20\""),
            "networks[1].rtt_ms.us-east",
            "invalid type: string",
        );
        refused(
            &format!("{GOOD}[[networks]]\nnetwork = \"10.0.0.0/8\"\nrtt_ms = {{ \"\" = 5 }}\n"),
            "networks[1].rtt_ms.\"\"",
            "empty datacenter name",
        );
        refused(
            &format!("{GOOD}[[networks]]\nnetwork = \"10.0.0.0/8\"\nrtt_ms = {{ \"a.b\" = -1 }}\n"),
            "networks[1].rtt_ms.\"a.b\"",
            reason,
        );
        let mut many = String::from("[[networks]]\nnetwork = \"10.0.0.0/8\"\nrtt_ms = { ");
        for i in 0..=MAX_DATACENTERS {
            write!(many, "dc{i} = 1, ").expect("write");
        }
        many.truncate(many.len() - 2);
        many.push_str(" }\n");
        // The parser yields a table's keys sorted: dc999 comes last.
        refused(
            &many,
            "networks[0].rtt_ms.dc999",
            "more than 1024 distinct datacenters",
        );
    }

    #[test]
    fn the_version_and_the_schema_are_checked() {
        let e = err(GOOD);
        assert_eq!(
            (e.key.as_str(), e.reason.contains("missing field `version`")),
            ("", true),
            "{e}"
        );
        let e = err(&format!("version = 2\n{GOOD}"));
        assert_eq!(e.key, "version");
        assert_eq!(e.reason, "unknown version 2; this Meridian reads version 1");
        // A later version may change the schema: the version is named.
        let e = err("version = 2\nnetworks = \"elsewhere\"\n");
        assert_eq!(
            (e.key.as_str(), e.reason.contains("unknown version 2")),
            ("version", true),
            "{e}"
        );
        let e = err("version = \"1\"\n");
        assert_eq!(e.key, "version", "{e}");
        refused(
            "[[networks]]\nnetwork = \"192.0.2.0/24\"\nrtt = { a = 1 }\n",
            "networks[0].rtt",
            "unknown field `rtt`",
        );
        refused(
            "[[networks]]\nrtt_ms = { a = 1 }\n",
            "networks[0]",
            "missing field `network`",
        );
        refused("colour = \"blue\"\n", "colour", "unknown field `colour`");
        let e = err("version = 1\n[[networks]\n");
        assert_eq!(e.key, "");
        assert!(e.reason.contains("(line 2)"), "{e}");
        // No networks at all is a valid, empty map.
        let m = map("version = 1\n");
        assert!(m.is_empty());
        assert_eq!(m.lookup(ip("192.0.2.1")), (None, 0));
        let e = load(Path::new("/nonexistent/map.toml")).expect_err("no file");
        assert_eq!(e.file, Path::new("/nonexistent/map.toml"));
        assert!(e.reason.starts_with("cannot read the latency map"), "{e}");
    }

    //-------- the line reader

    #[test]
    fn the_line_reader_takes_the_common_shape_as_toml_reads_it() {
        let example = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("latency/latency-map.example.toml"),
        )
        .expect("example");
        let texts = [
            example.clone(),
            example.replace('\n', "\r\n"),
            generated(300, 4),
            // Keys out of order, quoted, odd; tabs; numbers at the edges.
            "version=1\n\t[[networks]]\nnetwork\t=\t\"10.0.0.0/8\"\n\
             rtt_ms = {b=1,\"a.b\" = 2.5 , \"\" = 0, \"z}\" = 0.0001, _ = 123456789012345678}\n\
             [[networks]]\nrtt_ms={}\nnetwork=\"é\"\n"
                .to_string(),
            "# only a comment\n\nversion = 1\n".to_string(),
        ];
        for t in &texts {
            assert!(fast::parse(t).is_some(), "declined:\n{t}");
            assert_eq!(fast_path_agrees(t), Some(true), "differs from TOML:\n{t}");
        }
        // The same map, and the same errors, either way.
        let raw = fast::parse(&texts[3]).expect("read");
        assert_eq!(raw.networks[0].rtt_ms[0].0, "", "sorted as TOML gives them");
        let e = err(&texts[3]);
        assert_eq!(e.key, "networks[0].rtt_ms.\"\"");
        let e = parse(&example, file()).expect("example");
        assert_eq!(e.len(), 5);
    }

    #[test]
    fn anything_else_goes_to_the_toml_parser() {
        let net = |rtt: &str| {
            format!("version = 1\n[[networks]]\nnetwork = \"10.0.0.0/8\"\nrtt_ms = {rtt}\n")
        };
        let declined = [
            net("{ a = 1 } # trailing comment"),
            net("{ a = +5 }"),
            net("{ a = 1e3 }"),
            net("{ a = 1_000 }"),
            net("{ a = 05 }"),
            net("{ a = 5. }"),
            net("{ a = inf }"),
            net("{ a = 1234567890123456789 }"),
            net("{ a = 1, a = 2 }"),
            net("{ a = 1, \"a\" = 2 }"),
            net("{ a = 1, }"),
            net("{ 'a' = 1 }"),
            net("{ \"a\\u0041\" = 1 }"),
            net("{ a.b = 1 }"),
            net("{\n a = 1 }"),
            net("{ a = 1 }").replace("\"10.0.0.0/8\"", "'10.0.0.0/8'"),
            net("{ a = 1 }").replace("/8", "/8\r"),
            // Found by the fuzz target: a CR ending the file is no line end.
            "version = 1\r".to_string(),
            net("{ a = 1 }").replace("[[networks]]", "[[ networks ]]"),
            net("{ a = 1 }").replace("rtt_ms", "\"rtt_ms\""),
            net("{ a = 1 }").replace("version = 1", "version = 2"),
            net("{ a = 1 }") + "version = 1\n",
            net("{ a = 1 }") + "[[networks]]\nnetwork = \"10.0.0.0/9\"\n",
            net("{ a = 1 }") + "colour = 1\n",
            "[[networks]]\nnetwork = \"10.0.0.0/8\"\nrtt_ms = {}\nversion = 1\n".to_string(),
            "".to_string(),
        ];
        for t in &declined {
            assert!(fast::parse(t).is_none(), "taken:\n{t}");
        }
        // Those TOML reads are still read (here, to the same map).
        let m = map(&declined[0]);
        assert_eq!(rtts(&m, "10.1.1.1").0, Some(vec![("a", 1.0)]));
        assert_eq!(
            rtts(&map(&declined[2]), "10.1.1.1").0,
            Some(vec![("a", 1000.0)])
        );
        assert_eq!(
            err(&declined[8]).key,
            "",
            "a duplicate key is a TOML syntax error"
        );
    }

    //-------- size

    /// `n` distinct networks: /24s from 10.0.0.0 on, every tenth with a
    /// nested /26, over `dcs` datacenters and 50 RTT sets.
    fn generated(n: usize, dcs: u32) -> String {
        let mut t = String::with_capacity(n * 120);
        t.push_str("version = 1\n");
        let mut i = 0;
        let mut block = 0u32;
        while i < n {
            let a = std::net::Ipv4Addr::from((10 << 24) + (block << 8));
            let set = block % 50;
            let mut entry = |net: String, set: u32| {
                write!(t, "[[networks]]\nnetwork = \"{net}\"\nrtt_ms = {{ ").expect("write");
                for dc in 0..dcs {
                    write!(t, "dc{dc} = {}.5, ", 10 + (set * 7 + dc * 13) % 300).expect("write");
                }
                t.truncate(t.len() - 2);
                t.push_str(" }\n");
            };
            entry(format!("{a}/24"), set);
            i += 1;
            if block.is_multiple_of(10) && i < n {
                entry(format!("{a}/26"), (set + 1) % 50);
                i += 1;
            }
            block += 1;
        }
        t
    }

    /// Loads `generated(n, dcs)` (through the TOML parser if `toml`);
    /// returns the map and the load time.
    fn load_generated(n: usize, dcs: u32, toml: bool) -> (LatencyMap, std::time::Duration) {
        let mut text = generated(n, dcs);
        if toml {
            // A trailing comment: the line reader declines the file.
            text = text.replacen("version = 1\n", "version = 1 # toml\n", 1);
        }
        assert_eq!(fast::parse(&text).is_some(), !toml);
        let start = Instant::now();
        let m = map(&text);
        let took = start.elapsed();
        eprintln!(
            "{n} networks x {dcs} datacenters ({} bytes, {}): loaded in {took:?}; \
             {} rows, {:?} blocks, {} bytes",
            text.len(),
            if toml { "toml parser" } else { "line reader" },
            m.rows(),
            m.blocks(),
            m.memory_bytes()
        );
        (m, took)
    }

    #[test]
    fn a_hundred_thousand_networks_load_quickly() {
        // Three datacenters, the line reader: the unoptimised TOML parser
        // of a debug build takes seconds on its own (`measure_map_load`
        // below times both ways, for release builds).
        let (m, took) = load_generated(100_000, 3, false);
        // A quadratic build (one splice per nested network) takes minutes.
        assert!(took.as_secs() < 20, "{took:?}");
        assert_eq!(m.len(), 100_000);
        assert_eq!(m.rows(), 50);
        assert_eq!(m.names().len(), 3);
        let dc0 = |a: &str| m.lookup(ip(a)).0.map(|c| c[0].rtt_ms());
        // Block 0: /24 of set 0 with a nested /26 of set 1.
        assert_eq!(dc0("10.0.0.1"), Some(10.5 + 7.0));
        assert_eq!(dc0("10.0.0.65"), Some(10.5));
        assert_eq!(m.lookup(ip("10.0.0.65")).1, 26);
        // Block 1000 is 10.3.232.0/24 (1000 = 3 * 256 + 232): set 0,
        // with its nested /26 first.
        assert_eq!(dc0("10.3.232.200"), Some(10.5));
        assert_eq!(m.lookup(ip("10.3.232.200")).1, 25);
        assert_eq!(dc0("192.0.2.1"), None);
        assert!(m.memory_bytes() < 2 << 20, "{}", m.memory_bytes());
    }

    /// The figure the README quotes; run in release:
    /// `cargo test --release --lib latency::map::tests::measure_map_load
    /// -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement: run it in release"]
    fn measure_map_load() {
        for toml in [false, true] {
            for dcs in [3, 10] {
                let (m, _) = load_generated(100_000, dcs, toml);
                assert_eq!(m.len(), 100_000);
            }
        }
    }
}
