//! The ASN table: client address → autonomous system number, for
//! `[latency] coarse = "asn"`. The AS is the unit real-user measurement
//! systems aggregate on: networks of one AS mostly share their routes to a
//! datacenter, however scattered their address blocks are.
//!
//! It reads a MaxMind DB whose records carry `autonomous_system_number`:
//! MaxMind's GeoLite2-ASN, DB-IP's "IP to ASN Lite" (CC BY 4.0) and the
//! ip-location-db ASN databases (`dbip-asn`, `geolite2-asn`,
//! `iptoasn-asn`, `iplocate-asn`; IPv4-only, IPv6-only or both), which all
//! use that field name. The number may be stored as any unsigned or signed
//! integer type, or as a string (`"13335"` or `"AS13335"`).
//!
//! The database is walked once per address family into a [`PrefixTable`]
//! (like the geo policy's tables) and then dropped: a lookup is one binary
//! search, and returns the AS number with the widest aligned block around
//! the client that has the same AS (or the same lack of one), which is the
//! ECS scope an answer decided by the ASN level may carry.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use maxminddb::{Reader, WithinOptions};
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use crate::geo::table::{PrefixTable, TableBuilder, addr_bits, family_bits, prefix_range};

/// Table value of "no AS" (AS 0 is reserved for that, RFC 7607).
const NONE: u32 = 0;
/// Table value of the IPv4-mapped block in the IPv6 table. AS 4294967295
/// is reserved (RFC 7300) and never announced; a database giving it is
/// read as giving none.
const MAPPED: u32 = u32::MAX;

/// An ASN database that cannot be used: the file and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}: {reason}", path.display())]
pub struct AsnError {
    /// The database file.
    pub path: PathBuf,
    /// What is wrong.
    pub reason: String,
}

/// The loaded table; see the module docs.
#[derive(Clone, Debug)]
pub struct AsnTable {
    v4: PrefixTable,
    v6: PrefixTable,
    path: PathBuf,
    /// Networks of the database that carry an AS number.
    networks: usize,
    /// `database_type` from the metadata.
    database_type: String,
}

/// An AS number stored as any integer type, or as a string.
#[derive(Clone, Copy, Debug)]
struct AsNumber(u32);

impl<'de> Deserialize<'de> for AsNumber {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = AsNumber;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an AS number")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<AsNumber, E> {
                u32::try_from(v)
                    .map(AsNumber)
                    .map_err(|_| E::custom("AS number out of range"))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<AsNumber, E> {
                u32::try_from(v)
                    .map(AsNumber)
                    .map_err(|_| E::custom("AS number out of range"))
            }
            fn visit_u128<E: de::Error>(self, v: u128) -> Result<AsNumber, E> {
                u32::try_from(v)
                    .map(AsNumber)
                    .map_err(|_| E::custom("AS number out of range"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<AsNumber, E> {
                let digits = v
                    .strip_prefix("AS")
                    .or_else(|| v.strip_prefix("as"))
                    .unwrap_or(v);
                digits
                    .parse()
                    .map(AsNumber)
                    .map_err(|_| E::custom("not an AS number"))
            }
        }
        d.deserialize_any(V)
    }
}

/// The one field read; serde skips the rest (the organisation).
#[derive(Deserialize)]
struct AsnRecord {
    autonomous_system_number: Option<AsNumber>,
}

impl AsnTable {
    /// Reads the database at `path` and builds the table.
    pub fn open(path: &Path) -> Result<Self, AsnError> {
        let bytes = std::fs::read(path).map_err(|e| AsnError {
            path: path.to_path_buf(),
            reason: format!("cannot read the ASN database: {e}"),
        })?;
        Self::from_bytes(bytes, path)
    }

    /// Builds the table from a database's bytes; `path` names it in
    /// errors and messages.
    pub fn from_bytes(bytes: Vec<u8>, path: &Path) -> Result<Self, AsnError> {
        let fail = |reason: String| AsnError {
            path: path.to_path_buf(),
            reason,
        };
        let reader = Reader::from_source(bytes)
            .map_err(|e| fail(format!("not a MaxMind DB (.mmdb) file: {e}")))?;
        let mut networks = 0;
        let v4 = walk(&reader, false, &mut networks).map_err(&fail)?;
        // An IPv4-only database (ip-location-db's `*-ipv4.mmdb`) has no
        // IPv6 tree: every IPv6 client then has no AS.
        let v6 = if reader.metadata().ip_version == 6 {
            walk(&reader, true, &mut networks).map_err(&fail)?
        } else {
            TableBuilder::new(128, NONE)
        };
        let database_type = reader.metadata().database_type.clone();
        if networks == 0 {
            return Err(fail(format!(
                "no network has an autonomous_system_number (database type \
                 {database_type:?}): not an ASN database such as GeoLite2-ASN \
                 or DB-IP's IP to ASN Lite"
            )));
        }
        Ok(Self {
            v4: v4.finish(&[]),
            // IPv4-mapped clients are routed by the IPv4 table: no IPv6
            // block (and so no ECS scope) may span them.
            v6: v6.finish(&[(0xffff_u128 << 32, 96, MAPPED)]),
            path: path.to_path_buf(),
            networks,
            database_type,
        })
    }

    /// The AS number of `addr` (`None` when the database has none) and the
    /// prefix length of the widest block around it with the same result.
    ///
    /// Pass the address the client is routed on: an IPv4-mapped IPv6
    /// address converted to IPv4. (Looked up as IPv6, the mapped block has
    /// no AS.)
    pub fn lookup(&self, addr: IpAddr) -> (Option<u32>, u8) {
        let table = if addr.is_ipv6() { &self.v6 } else { &self.v4 };
        let (asn, scope) = table.lookup(addr_bits(addr));
        ((asn != NONE && asn != MAPPED).then_some(asn), scope)
    }

    /// The database path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path and `database_type`, for messages.
    pub fn describe(&self) -> String {
        format!(
            "{} (type {}, {} networks with an AS number)",
            self.path.display(),
            self.database_type,
            self.networks
        )
    }

    /// Networks of the database that carry an AS number.
    pub fn len(&self) -> usize {
        self.networks
    }

    /// Whether there are none (never, once built).
    pub fn is_empty(&self) -> bool {
        self.networks == 0
    }

    /// Blocks in the IPv4 and IPv6 tables.
    pub fn blocks(&self) -> (usize, usize) {
        (self.v4.len(), self.v6.len())
    }

    /// Heap bytes the table holds (4 + 4 + 1 bytes per IPv4 block, 16 + 4
    /// + 1 per IPv6 block).
    pub fn memory_bytes(&self) -> usize {
        self.v4.len() * (4 + 4 + 1) + self.v6.len() * (16 + 4 + 1) + self.path.capacity()
    }
}

/// Walks one family's networks in address order into a builder, counting
/// the networks with an AS number. Records are decoded once each (many
/// networks share one).
fn walk(reader: &Reader<Vec<u8>>, v6: bool, networks: &mut usize) -> Result<TableBuilder, String> {
    let bits = family_bits(v6);
    let mut builder = TableBuilder::new(bits, NONE);
    let root = if v6 { "::/0" } else { "0.0.0.0/0" };
    let root: ipnetwork::IpNetwork = root
        .parse()
        .map_err(|e| format!("internal: bad root network: {e}"))?;
    let iter = reader
        .within(root, WithinOptions::default())
        .map_err(|e| format!("cannot walk the database: {e}"))?;
    let corrupt = |e: maxminddb::MaxMindDbError| format!("corrupt database: {e}");
    let mut per_record: HashMap<usize, u32> = HashMap::new();
    for item in iter {
        let res = item.map_err(corrupt)?;
        let net = res.network().map_err(corrupt)?;
        // The IPv4 subtree of an IPv6 database is walked as IPv4.
        if net.is_ipv6() != v6 {
            continue;
        }
        let Some(offset) = res.offset() else { continue };
        let asn = match per_record.get(&offset) {
            Some(&asn) => asn,
            None => {
                // A record whose number does not decode counts as none.
                let asn = match res.decode::<AsnRecord>() {
                    Ok(Some(AsnRecord {
                        autonomous_system_number: Some(AsNumber(n)),
                    })) if n != MAPPED => n,
                    _ => NONE,
                };
                per_record.insert(offset, asn);
                asn
            }
        };
        if asn == NONE {
            continue;
        }
        *networks += 1;
        let (s, e) = prefix_range(bits, addr_bits(net.network()), net.prefix());
        builder.push(s, e, asn);
    }
    Ok(builder)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipnet::IpNet;
    use mmdb_writer::{IpVersion, Writer};
    use serde::Serialize;

    /// GeoLite2-ASN's record (`uint32` number) and DB-IP's ASN Lite,
    /// which uses the same schema.
    #[derive(Serialize)]
    struct GeoLite2Asn {
        autonomous_system_number: u32,
        autonomous_system_organization: &'static str,
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    fn net(s: &str) -> IpNet {
        s.parse().expect("network")
    }

    fn table(w: &Writer) -> AsnTable {
        let bytes = w.to_bytes().expect("mmdb");
        AsnTable::from_bytes(bytes, Path::new("asn.mmdb")).unwrap_or_else(|e| panic!("{e}"))
    }

    fn geolite2(nets: &[(&str, u32)]) -> Writer {
        let mut w = Writer::new("GeoLite2-ASN");
        for &(n, asn) in nets {
            let rec = GeoLite2Asn {
                autonomous_system_number: asn,
                autonomous_system_organization: "Example",
            };
            w.insert(net(n), &rec).expect("insert");
        }
        w
    }

    #[test]
    fn the_longest_prefix_wins_and_the_scope_is_the_block() {
        // Later inserts win in the writer: the /24 and /48 are carved out
        // of the wider networks, as in real databases.
        let t = table(&geolite2(&[
            ("8.0.0.0/8", 3356),
            ("8.8.8.0/24", 15169),
            ("1.1.1.0/24", 13335),
            ("2001:db8::/32", 64496),
            ("2001:db8:1::/48", 64497),
        ]));
        assert_eq!(t.lookup(ip("8.8.8.8")), (Some(15169), 24));
        assert_eq!(t.lookup(ip("8.8.9.1")), (Some(3356), 24));
        assert_eq!(t.lookup(ip("8.9.0.1")), (Some(3356), 16));
        assert_eq!(t.lookup(ip("8.200.0.1")), (Some(3356), 9));
        assert_eq!(t.lookup(ip("9.0.0.1")), (None, 8));
        assert_eq!(t.lookup(ip("1.1.1.1")), (Some(13335), 24));
        assert_eq!(t.lookup(ip("2001:db8:1::1")), (Some(64497), 48));
        assert_eq!(t.lookup(ip("2001:db8:2::1")), (Some(64496), 47));
        assert_eq!(t.lookup(ip("2001:db9::1")), (None, 32));
        // The database stores the /8 minus the /24 as 16 networks, one per
        // bit in between, and so the /32 minus the /48.
        assert_eq!(t.len(), 16 + 1 + 1 + 16 + 1);
        assert!(t.describe().contains("GeoLite2-ASN"), "{}", t.describe());
        assert!(t.memory_bytes() > 0);
        // The IPv4-mapped block is the IPv4 table's: never spanned, no AS.
        assert_eq!(t.lookup(ip("::ffff:8.8.8.8")), (None, 96));
        let (_, scope) = t.lookup(ip("::1:0:0:1"));
        let (lo, hi) = prefix_range(128, addr_bits(ip("::1:0:0:1")), scope);
        assert!(hi < 0xffff_u128 << 32 || lo > 0xffff_ffff_ffff, "/{scope}");
    }

    /// ip-location-db's `*-ipv4.mmdb`: an IPv4-only tree. The number
    /// type varies between builders: a 16-bit integer, a string.
    #[test]
    fn ipv4_only_databases_and_other_number_types_are_read() {
        #[derive(Serialize)]
        struct Small {
            autonomous_system_number: u16,
        }
        #[derive(Serialize)]
        struct Text {
            autonomous_system_number: &'static str,
        }
        #[derive(Serialize)]
        struct OrgOnly {
            autonomous_system_organization: &'static str,
        }
        let mut w = Writer::builder("dbip-asn-lite")
            .ip_version(IpVersion::V4)
            .build();
        w.insert(
            net("192.0.2.0/24"),
            &Small {
                autonomous_system_number: 64500,
            },
        )
        .expect("insert");
        w.insert(
            net("198.51.100.0/24"),
            &Text {
                autonomous_system_number: "AS64501",
            },
        )
        .expect("insert");
        w.insert(
            net("198.51.101.0/24"),
            &Text {
                autonomous_system_number: "64502",
            },
        )
        .expect("insert");
        w.insert(
            net("198.51.102.0/24"),
            &Text {
                autonomous_system_number: "n/a",
            },
        )
        .expect("insert");
        w.insert(
            net("203.0.113.0/24"),
            &OrgOnly {
                autonomous_system_organization: "x",
            },
        )
        .expect("insert");
        let t = table(&w);
        assert_eq!(t.lookup(ip("192.0.2.1")), (Some(64500), 24));
        assert_eq!(t.lookup(ip("198.51.100.1")), (Some(64501), 24));
        assert_eq!(t.lookup(ip("198.51.101.1")), (Some(64502), 24));
        // A number that does not read, or none, is no AS: merged with the
        // unlisted space around it.
        assert_eq!(t.lookup(ip("198.51.102.1")), (None, 23));
        assert_eq!(t.lookup(ip("203.0.113.1")), (None, 5)); // 200.0.0.0/5
        assert_eq!(t.len(), 3);
        // No IPv6 tree: every IPv6 client has no AS.
        assert_eq!(t.lookup(ip("2001:db8::1")), (None, 3));
        assert_eq!(t.blocks().1, 97, "the mapped /96 cuts the empty space");
    }

    #[test]
    fn errors_name_the_file_and_the_reason() {
        let e = AsnTable::open(Path::new("/nonexistent/asn.mmdb")).expect_err("no file");
        assert_eq!(e.path, Path::new("/nonexistent/asn.mmdb"));
        assert!(
            e.to_string()
                .starts_with("/nonexistent/asn.mmdb: cannot read the ASN database:"),
            "{e}"
        );

        let e = AsnTable::from_bytes(b"not a database".to_vec(), Path::new("x.mmdb"))
            .expect_err("junk");
        assert!(
            e.to_string()
                .starts_with("x.mmdb: not a MaxMind DB (.mmdb) file:"),
            "{e}"
        );

        // A country database by mistake: no record has the field.
        #[derive(Serialize)]
        struct Country {
            country_code: &'static str,
        }
        let mut w = Writer::new("DBIP-Country-Lite");
        w.insert(net("192.0.2.0/24"), &Country { country_code: "NL" })
            .expect("insert");
        let e = AsnTable::from_bytes(w.to_bytes().expect("mmdb"), Path::new("country.mmdb"))
            .expect_err("not ASN");
        assert_eq!(e.path, Path::new("country.mmdb"));
        assert!(
            e.reason.starts_with(
                "no network has an autonomous_system_number (database type \"DBIP-Country-Lite\")"
            ),
            "{e}"
        );
        let e = AsnTable::from_bytes(
            Writer::new("empty").to_bytes().expect("mmdb"),
            Path::new("e.mmdb"),
        )
        .expect_err("empty");
        assert!(e.reason.starts_with("no network has"), "{e}");
    }

    /// xorshift64*: deterministic test data without a dependency.
    struct Rng(u64);
    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
        }
    }

    /// Random nested networks (inserted in random order, so later ones
    /// override parts of earlier ones, as the writer resolves them) inside
    /// a space of 1024 addresses plus a covering network; every address
    /// of the space is checked against the database itself.
    fn check_random_db(rng: &mut Rng, v6: bool, base: u128, cover: (u128, u8)) {
        let bits = family_bits(v6);
        let sp = bits - 10;
        let (s0, s1) = prefix_range(bits, base, sp);
        let addr = |a: u128| -> IpAddr {
            if v6 {
                IpAddr::V6(a.into())
            } else {
                IpAddr::V4((a as u32).into())
            }
        };
        let mut w = Writer::new("GeoLite2-ASN");
        let mut listed = Vec::new();
        let mut insert = |w: &mut Writer, start: u128, p: u8, asn: u32| {
            let n = IpNet::new(addr(start), p).expect("prefix").trunc();
            let rec = GeoLite2Asn {
                autonomous_system_number: asn,
                autonomous_system_organization: "x",
            };
            w.insert(n, &rec).expect("insert");
            listed.push(format!("{n} AS{asn}"));
        };
        if rng.below(2) == 0 {
            insert(&mut w, cover.0, cover.1, 1 + rng.below(3) as u32);
        }
        for _ in 0..rng.below(20) {
            let p = sp + rng.below(11) as u8;
            let asn = rng.below(4) as u32; // 0: a record whose AS is none
            insert(&mut w, s0 + u128::from(rng.below(1024)), p, asn);
        }
        let bytes = w.to_bytes().expect("mmdb");
        let reader = Reader::from_source(bytes.clone()).expect("reader");
        let t = AsnTable::from_bytes(bytes, Path::new("r.mmdb")).ok();
        let truth = |a: u128| -> Option<u32> {
            let res = reader.lookup(addr(a)).ok()?;
            let rec: AsnRecord = res.decode().ok()??;
            rec.autonomous_system_number
                .map(|n| n.0)
                .filter(|&n| n != 0)
        };
        let Some(t) = t else {
            // Only a database without any AS is refused.
            assert!((s0..=s1).all(|a| truth(a).is_none()), "{listed:?}");
            return;
        };
        let inside: Vec<Option<u32>> = (s0..=s1).map(truth).collect();
        let (c0, c1) = prefix_range(bits, cover.0, cover.1);
        let edges = [s0 - 1, s0, s1, s1 + 1, c0 - 1, c0, c1, c1 + 1];
        let expect = |a: u128| {
            if (s0..=s1).contains(&a) {
                inside[(a - s0) as usize]
            } else {
                truth(a)
            }
        };
        let points_in = |lo: u128, hi: u128| {
            let mut v: Vec<u128> = (s0.max(lo)..=s1.min(hi)).collect();
            v.extend(edges.iter().copied().filter(|&x| x >= lo && x <= hi));
            v.extend([lo, hi]);
            v
        };
        let mut checked = None;
        for a in s0..=s1 {
            let want = inside[(a - s0) as usize];
            let (got, scope) = t.lookup(addr(a));
            assert_eq!(got, want, "{} in {listed:?}", addr(a));
            let block = prefix_range(bits, a, scope);
            if checked == Some(block) {
                continue;
            }
            checked = Some(block);
            for x in points_in(block.0, block.1) {
                assert_eq!(
                    expect(x),
                    want,
                    "{}/{scope} holds {} in {listed:?}",
                    addr(a),
                    addr(x)
                );
            }
            if scope > 0 {
                let (lo, hi) = prefix_range(bits, a, scope - 1);
                assert!(
                    points_in(lo, hi).into_iter().any(|x| expect(x) != want),
                    "{} could have /{} in {listed:?}",
                    addr(a),
                    scope - 1
                );
            }
        }
    }

    #[test]
    fn every_ipv4_address_gets_the_databases_as_and_a_sound_widest_scope() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let base = addr_bits(ip("10.1.4.0"));
        for _ in 0..60 {
            check_random_db(&mut rng, false, base, (addr_bits(ip("10.0.0.0")), 8));
        }
    }

    #[test]
    fn every_ipv6_address_gets_the_databases_as_and_a_sound_widest_scope() {
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        let base = addr_bits(ip("2001:db8::4:0"));
        for _ in 0..60 {
            check_random_db(&mut rng, true, base, (addr_bits(ip("2001:db8::")), 32));
        }
    }

    /// The figure the README quotes; run in release:
    /// `cargo test --release --lib latency::asn::tests::measure_asn_load
    /// -- --ignored --nocapture`. GeoLite2-ASN has some 500,000 IPv4 and
    /// 150,000 IPv6 networks.
    #[test]
    #[ignore = "a measurement: run it in release"]
    fn measure_asn_load() {
        let mut w = Writer::new("GeoLite2-ASN");
        let mut rng = Rng(7);
        for i in 0..500_000u32 {
            // Every other /24 of 1.0.0.0 on, one of 70,000 ASes.
            let n = IpNet::new(IpAddr::V4((0x0100_0000 + (i << 9)).into()), 24).expect("net");
            let rec = GeoLite2Asn {
                autonomous_system_number: 1 + rng.below(70_000) as u32,
                autonomous_system_organization: "x",
            };
            w.insert(n, &rec).expect("insert");
        }
        for i in 0..150_000u128 {
            let a = (0x2a00_u128 << 112) | (i << 81); // 2001::/32 is aliased
            let n = IpNet::new(IpAddr::V6(a.into()), 48).expect("net");
            let rec = GeoLite2Asn {
                autonomous_system_number: 1 + rng.below(70_000) as u32,
                autonomous_system_organization: "x",
            };
            w.insert(n, &rec).expect("insert");
        }
        let bytes = w.to_bytes().expect("mmdb");
        let size = bytes.len();
        let start = std::time::Instant::now();
        let t = AsnTable::from_bytes(bytes, Path::new("big.mmdb")).expect("table");
        eprintln!(
            "ASN database of {size} bytes, {} networks: table built in {:?}; \
             {:?} blocks, {} bytes",
            t.len(),
            start.elapsed(),
            t.blocks(),
            t.memory_bytes()
        );
        assert_eq!(t.len(), 650_000);
    }
}
